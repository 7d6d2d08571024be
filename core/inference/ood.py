"""Out-of-distribution guard: flag inputs that are plainly not axial chest CT.

The shipped models were trained on axial chest CT slices (IQ-OTH/NCCD JPG exports). Given an MR,
an X-ray, a photo, a blank image or random noise they still output three probabilities that sum
to one, often confidently. This module flags such slices so that the result says "not chest CT,
and why" instead of a cancer score. It is a set of transparent rules, not a learned detector:

Series rules (DICOM metadata, PS3.3 C.7.3.1 General Series module, C.7.6.2 Image Plane module):

- ``Modality`` must be ``CT``. DICOM files of any other modality (MR, CR, DX, US, PT, RTDOSE, ...)
  are flagged. Pictures (JPG/PNG, modality ``OT``) and colour captures go to the picture rules.
- when the series metadata carries ``image_orientation_patient`` (six direction cosines), the
  slice normal must lie within :data:`MAX_TILT_DEG` degrees of the patient's foot-head axis
  (an axial slice); sagittal or coronal reformats are flagged. ``core.imaging`` puts the
  orientation of the first instance (or of the shared functional groups) in the metadata.

Slice rules on real HU (DICOM CT, after the modality LUT), computed on every second row and
column of slices larger than 256 pixels:

- near-constant: the 1st-99th percentile spread of HU is below :data:`MIN_HU_SPREAD` (blank,
  padding-only or saturated frames); the percentiles are not computed when the counts of air and
  of pixels of -200 HU or more already prove the spread wide (:func:`_spread_surely_wide`: the
  same verdict, at a fraction of the cost);
- no air or lung: less than :data:`MIN_AIR_FRACTION` of the pixels below -500 HU. An axial chest CT
  slice always shows air around the body and in the lungs (about 46-63 % on the TCIA study
  here); MR, PET or mis-scaled data in "HU" have none;
- no soft tissue: less than :data:`MIN_SOFT_FRACTION` of the pixels in [-200, 300] HU (the TCIA
  slices hold 33-51 %);
- no body: :func:`core.preprocessing.body_box` finds no body in the mediastinal-window view.

Slice rules on pictures (estimated HU; the 8-bit grey levels are recovered exactly with the
IQ-OTH/NCCD export window, ``core.windowing.window_to_uint8``):

- near-constant: grey-level standard deviation below :data:`MIN_GREY_STD` (blank pictures);
- not a CT export like the training data: the IQ-OTH/NCCD exports map everything below the
  window to black and the window to grey 128-255, so grey levels 16-112 are absent (0.000 % of
  pixels in all 903 slices here) and at least 86 % of the pixels are black. The estimated HU keep
  only three kinds of value (black below grey 64, the window floor for grey 64-128, linear above;
  ``core.windowing.hu_from_uint8``), so the rule reads: less than :data:`MIN_BLACK_FRACTION`
  black pixels, or more than :data:`MAX_FLOOR_FRACTION` of the other pixels at the floor, is
  flagged (photos, X-rays, noise, screenshots, and CT exported with another window, whose
  estimated HU would be wrong anyway);
- no body (as above, in the export window).

``python -m core.inference.ood`` measures the rules: false-positive rate on every IQ-OTH/NCCD slice and TCIA
slice, detection rate on pydicom's non-CT test files and synthetic blank/noise/gradient images.

An OOD slice still gets probabilities; :mod:`core.inference` marks it, leaves it out of the
series score and labels the series "out-of-distribution" when most slices are OOD.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.domain import WINDOW_PRESETS, WindowPreset
from core.preprocessing import body_box
from core.windowing import apply_window, window_to_uint8

#: Largest angle (degrees) between the slice normal and the patient's z axis for "axial".
MAX_TILT_DEG = 30.0
#: Smallest 1st-99th percentile HU spread of a real CT slice (HU).
MIN_HU_SPREAD = 50.0
#: Smallest fraction of pixels below -500 HU (air outside the body and in the lungs).
MIN_AIR_FRACTION = 0.05
#: Smallest fraction of pixels in [-200, 300] HU (soft tissue, blood, fat's upper end).
MIN_SOFT_FRACTION = 0.03
#: Smallest standard deviation of a picture's grey levels (0-255).
MIN_GREY_STD = 2.0
#: Smallest fraction of black picture pixels (below half the export floor, i.e. grey < 64):
#: 86.5-95.6 % in the 903 IQ-OTH/NCCD exports.
MIN_BLACK_FRACTION = 0.7
#: Largest fraction of the non-black picture pixels at the export floor (grey 64-130): at most
#: 2.2 % in the IQ-OTH/NCCD exports, about a third for noise or a continuous-grey image.
MAX_FLOOR_FRACTION = 0.10

_PICTURE_WINDOW = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]
_BODY_WINDOW = WINDOW_PRESETS[WindowPreset.MEDIASTINUM]
_DICOM_CT = "CT"


@dataclass
class OODCheck:
    """The guard's verdict on a series.

    Attributes:
        ood: bool (n,) array, True for slices that are not axial chest CT.
        reasons: n lists of short reasons (empty for in-distribution slices).
    """

    ood: np.ndarray
    reasons: list[list[str]] = field(default_factory=list)

    @property
    def series_reasons(self) -> list[str]:
        """All distinct reasons over the slices, in order of first appearance."""
        seen: dict[str, None] = {}
        for rs in self.reasons:
            for r in rs:
                seen.setdefault(r, None)
        return list(seen)


def _half(a: np.ndarray) -> np.ndarray:
    """Every second row and column of images over 256 pixels a side (the statistics barely move,
    the rules read a quarter of the pixels)."""
    return a[::2, ::2] if min(a.shape) > 256 else a


def tilt_degrees(orientation: Sequence[float]) -> float:
    """Angle between a slice's normal and the patient's foot-head (z) axis, in degrees.

    Args:
        orientation: ImageOrientationPatient, six direction cosines (row x, y, z, column x, y, z),
            PS3.3 C.7.6.2.1.1.

    Returns:
        angle in [0, 90] degrees; 0 for a purely axial slice, 90 for sagittal or coronal.

    Raises:
        ValueError: not six finite numbers, or the row and column directions are parallel.
    """
    v = np.asarray([float(x) for x in orientation], dtype=np.float64)
    if v.shape != (6,) or not np.isfinite(v).all():
        raise ValueError(f"ImageOrientationPatient must be six numbers, got {list(orientation)}")
    normal = np.cross(v[:3], v[3:])
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient row and column directions are parallel")
    return math.degrees(math.acos(min(1.0, abs(normal[2]) / norm)))


def _spread_surely_wide(n: int, n_below: int, n_above: int) -> bool:
    """True when counts alone prove that the 1st-99th percentile spread of ``n`` values is at least
    :data:`MIN_HU_SPREAD`, so that :func:`hu_slice_reasons` can skip ``np.percentile`` (about half
    of its time) with the same verdict.

    ``np.percentile`` (linear method) interpolates the 1st percentile between the sorted values
    k and k + 1, ``k = floor(0.01 (n - 1))``, and the 99th between k' and k' + 1,
    ``k' = floor(0.99 (n - 1))`` (0-based). If at least k + 2 values lie below -500 HU (``n_below``)
    both of the first lie below -500, so the 1st percentile does; if at least n - k' values are
    -200 HU or more (``n_above``) both of the second are, so the 99th percentile is >= -200 HU.
    The spread is then over 300 HU, above :data:`MIN_HU_SPREAD`, which this bound needs. One more
    value is asked on each side, in case NumPy's float index rounds to the next integer.
    """
    k_lo = math.floor(0.01 * (n - 1))
    k_hi = math.floor(0.99 * (n - 1))
    return MIN_HU_SPREAD <= 300.0 and n_below >= k_lo + 3 and n_above >= n - k_hi + 1


def hu_slice_reasons(hu: np.ndarray) -> list[str]:
    """Reasons why a slice in real HU (DICOM CT) is not a chest CT slice; empty if it looks like one.

    Args:
        hu: float (y, x) slice in Hounsfield units.

    Returns:
        list of short, readable reasons (see the module docstring for the rules and thresholds).
    """
    a = np.asarray(hu, dtype=np.float32)
    if a.ndim != 2 or a.size == 0 or not np.isfinite(a).all():
        return ["not a finite 2-D image"]
    a = _half(a)
    n = a.size
    n_air = int(np.count_nonzero(a < -500))
    above = a >= -200
    n_above = int(np.count_nonzero(above))
    if not _spread_surely_wide(n, n_air, n_above):
        lo, hi = np.percentile(a, [1, 99])
        if hi - lo < MIN_HU_SPREAD:
            return [f"blank or near-constant image (HU spread {hi - lo:.0f} < {MIN_HU_SPREAD:.0f})"]
    reasons = []
    air = n_air / n
    if air < MIN_AIR_FRACTION:
        reasons.append(f"no air or lung in the image ({air:.1%} of pixels below -500 HU)")
    soft = int(np.count_nonzero(above & (a <= 300))) / n
    if soft < MIN_SOFT_FRACTION:
        reasons.append(f"no soft tissue in the image ({soft:.1%} of pixels in -200..300 HU)")
    if body_box(apply_window(a, _BODY_WINDOW)) is None:
        reasons.append("no body found in the image")
    return reasons


def picture_slice_reasons(hu: np.ndarray) -> list[str]:
    """Reasons why a picture (estimated HU) is not a CT export like the training data.

    Args:
        hu: float (y, x) estimated HU of a JPG/PNG, as made by ``core.imaging`` with the
            IQ-OTH/NCCD window; the grey levels are recovered with ``window_to_uint8``.

    Returns:
        list of short reasons (empty when the picture looks like a CT slice export).
    """
    a = np.asarray(hu, dtype=np.float32)
    if a.ndim != 2 or a.size == 0 or not np.isfinite(a).all():
        return ["not a finite 2-D image"]
    a = _half(a)
    grey = window_to_uint8(a, _PICTURE_WINDOW)
    std = float(grey.std())
    if std < MIN_GREY_STD:
        return [f"blank or near-constant picture (grey-level spread {std:.1f})"]
    reasons = []
    black = float((grey == 0).mean())
    bright = grey[grey > 0]
    at_floor = float((bright <= 130).mean()) if bright.size else 0.0
    if black < MIN_BLACK_FRACTION or at_floor > MAX_FLOOR_FRACTION:
        reasons.append(
            f"grey levels unlike a CT slice export ({black:.0%} black, {at_floor:.0%} of the rest at the "
            "window floor; the training exports have over 85 % and under 3 %): a photo, X-ray, other "
            "image, or CT exported with another window"
        )
    if body_box(apply_window(a, _PICTURE_WINDOW)) is None:
        reasons.append("no body found in the image")
    return reasons


def _series_reasons(series: Any) -> tuple[list[str], bool]:
    """Series-level reasons from metadata, and whether the slices hold real HU."""
    meta = getattr(series, "metadata", None) or {}
    modality = str(getattr(series, "modality", "") or meta.get("modality") or "").upper()
    kind = getattr(series, "source_kind", "dicom")
    estimated = bool(getattr(series, "hu_is_estimated", False))
    reasons: list[str] = []
    if kind == "dicom" and modality != _DICOM_CT and not (estimated and modality in ("", "OT", "SC")):
        reasons.append(f"modality {modality or 'unknown'} is not CT")
    orientation = meta.get("image_orientation_patient")
    if orientation:
        try:
            tilt = tilt_degrees(orientation)
        except ValueError:
            tilt = None
        if tilt is not None and tilt > MAX_TILT_DEG:
            reasons.append(f"not an axial slice (tilted {tilt:.0f} degrees from axial)")
    return reasons, not estimated


def check_series(series: Any, indices: Sequence[int] | None = None) -> OODCheck:
    """Run every rule of the module docstring over a :class:`core.imaging.Series`.

    Args:
        series: a ``core.imaging.Series`` (uses ``modality``, ``source_kind``, ``hu_is_estimated``,
            ``metadata`` and each slice's ``hu``, float32 (y, x) HU).
        indices: check only these slices (0-based, in this order), e.g. one chunk of a long
            series; None = every slice.

    Returns:
        :class:`OODCheck` with one flag and one reason list per checked slice (series-level
        reasons, such as a non-CT modality, are given to every slice).

    Raises:
        IndexError: an index is outside the series.
    """
    head, real_hu = _series_reasons(series)
    rule = hu_slice_reasons if real_hu else picture_slice_reasons
    slices = series.slices if indices is None else [series.slices[i] for i in indices]
    reasons = [head + rule(s.hu) for s in slices]
    return OODCheck(ood=np.array([bool(r) for r in reasons], dtype=bool), reasons=reasons)


# ------------------------------------------------------------------------------- measurement
def _synthetic_pictures(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Synthetic non-CT pictures (uint8 grey or RGB) for the detection-rate measurement."""
    yy, xx = np.mgrid[0:512, 0:512]
    disc = ((yy - 256) ** 2 + (xx - 256) ** 2 < 200**2).astype(np.uint8) * 200
    return {
        "blank_black.png": np.zeros((512, 512), np.uint8),
        "blank_white.png": np.full((512, 512), 255, np.uint8),
        "blank_grey.png": np.full((512, 512), 128, np.uint8),
        "noise_uniform.png": rng.integers(0, 256, (512, 512), dtype=np.uint8),
        "noise_rgb.png": rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        "gradient.png": (xx * 255 // 511).astype(np.uint8),
        "grey_disc_on_black.png": disc,
        "checkerboard.png": (((yy // 32 + xx // 32) % 2) * 255).astype(np.uint8),
        "photo_like_rgb.png": np.stack(
            [(xx * 255 // 511), (yy * 255 // 511), ((xx + yy) * 255 // 1022)], axis=-1
        ).astype(np.uint8),
    }


def measure(data_dir: Any = None) -> dict[str, Any]:
    """Measure the guard: false-positive rate on real CT, detection rate on non-CT inputs.

    Real CT: every IQ-OTH/NCCD JPG and every slice of the TCIA study under ``data_dir``.
    Non-CT: every pydicom bundled test file that reads as an image and whose modality is not CT
    (MR, RTDOSE, US, OT/SC colour captures...), and the synthetic pictures of
    :func:`_synthetic_pictures` (blank, noise, gradients, a bright disc, a checkerboard, colour).

    Args:
        data_dir: datasets folder; None = ``get_settings().data_dir``.

    Returns:
        JSON-able dict with counts, rates and the per-input verdicts of the non-CT inputs.
    """
    import io
    from pathlib import Path

    import pydicom.data
    from PIL import Image

    from core.imaging import ImagingError, read_paths, read_uploads
    from core.settings import get_settings

    root = Path(data_dir) if data_dir is not None else get_settings().data_dir
    out: dict[str, Any] = {}
    iq = read_paths([root / "iq-othnccd"])
    flags = [check_series(s).ood for s in iq.series]
    n_iq = int(sum(len(f) for f in flags))
    fp_iq = int(sum(int(f.sum()) for f in flags))
    out["iq_othnccd"] = {"slices": n_iq, "flagged": fp_iq, "false_positive_rate": fp_iq / max(n_iq, 1)}
    tcia = read_paths([root / "lung-pet-ct-dx"])
    flags = [check_series(s).ood for s in tcia.series]
    n_t = int(sum(len(f) for f in flags))
    fp_t = int(sum(int(f.sum()) for f in flags))
    out["tcia_ct"] = {"slices": n_t, "flagged": fp_t, "false_positive_rate": fp_t / max(n_t, 1)}

    verdicts: dict[str, Any] = {}
    test_dir = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    for path in sorted(test_dir.glob("*.dcm")):
        try:
            res = read_paths([path])
        except ImagingError:
            continue  # no pixel data, undecodable: never reaches the model
        for s in res.series:
            if s.modality.upper() == "CT" and not s.hu_is_estimated:
                continue  # real CT: not a non-CT input
            chk = check_series(s)
            rule = picture_slice_reasons if s.hu_is_estimated else hu_slice_reasons
            verdicts[f"{path.name} ({s.modality})"] = {
                "flagged_fraction": float(chk.ood.mean()),
                "flagged_by_pixels_alone": float(np.mean([bool(rule(sl.hu)) for sl in s.slices])),
                "reasons": chk.series_reasons,
            }
    rng = np.random.default_rng(0)
    for name, arr in _synthetic_pictures(rng).items():
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        res = read_uploads([(name, buf.getvalue())])
        for s in res.series:
            chk = check_series(s)
            verdicts[name] = {"flagged_fraction": float(chk.ood.mean()), "reasons": chk.series_reasons}
    detected = sum(1 for v in verdicts.values() if v["flagged_fraction"] == 1.0)
    pixel_rates = [v["flagged_by_pixels_alone"] for v in verdicts.values() if "flagged_by_pixels_alone" in v]
    out["non_ct"] = {
        "dicom_detected_by_pixels_alone": int(sum(r == 1.0 for r in pixel_rates)),
        "dicom_inputs": len(pixel_rates),
        "inputs": len(verdicts),
        "detected": detected,
        "detection_rate": detected / max(len(verdicts), 1),
        "verdicts": verdicts,
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.inference.ood [--data DIR]``: print :func:`measure` as JSON.

    Returns:
        0 on success, 2 when the datasets folder does not exist.
    """
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m core.inference.ood",
        description="Measure the out-of-distribution guard: false positives on real CT, detections on non-CT.",
    )
    parser.add_argument("--data", type=Path, default=None, help="datasets folder (default: LUNGREVIEW_DATA_DIR)")
    args = parser.parse_args(argv)
    if args.data is not None and not args.data.is_dir():
        print(f"error: datasets folder {args.data} not found; pass --data DIR or set LUNGREVIEW_DATA_DIR",
              file=sys.stderr)
        return 2
    print(json.dumps(measure(args.data), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
