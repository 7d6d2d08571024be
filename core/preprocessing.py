"""The one preprocessing function: HU slices to model input, shared by training, evaluation,
the CLI and the dashboard.

Steps, in order (all parameters live in :class:`PreprocessSpec`, which a model card stores):

1. window the HU values with the spec's window into [0, 1] (:func:`core.windowing.apply_window`);
2. crop: to the body (``crop_to_body``): the bounding box of the largest connected region
   brighter than the body threshold, without the scanner table, plus a margin (:func:`body_box`);
   or to the lung field (``crop_to_lungs``): the bounding box of :func:`core.lungs.lung_mask`
   plus ``lung_margin``, falling back to the body box when no lungs are found. Either removes the
   canvas around the patient, so image size, aspect ratio and the table do not reach the model;
3. optionally (``mask_outside_lungs``) set every pixel farther than ``lung_dilation_mm`` from
   the lung mask to 0 (the window floor); a slice without lungs is left as it is;
4. pad to square, centred, with 0 (the window floor), never stretching;
5. resize to ``size x size`` (bilinear, PIL);
6. scale: ``"unit"`` keeps [0, 1]; ``"resnet50"`` applies ``keras.applications.resnet50``'s
   ``preprocess_input`` convention (caffe: 0-255 values, BGR channel means subtracted);
   ``"mobilenet_v2"`` maps [0, 1] to [-1, 1] as ``keras.applications.mobilenet_v2``'s
   ``preprocess_input`` (``x / 127.5 - 1`` on 0-255); computed here in NumPy so this module does
   not import TensorFlow;
7. repeat to the spec's channel count (1 or 3).

A spec without the lung fields (every card written before them) gives the same output as
before, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from core.config import WINDOW_PRESETS, Window, WindowPreset
from core.lungs import lung_mask, pixel_size_mm
from core.windowing import apply_window

#: ImageNet BGR channel means on the 0-255 scale used by keras.applications.resnet50
#: ``preprocess_input`` ("caffe" mode; He et al. 2016 / Keras source).
_CAFFE_BGR_MEANS = np.array([103.939, 116.779, 123.68], dtype=np.float32)
SCALINGS = ("unit", "resnet50", "mobilenet_v2")
#: 4-connectivity, ``ndimage.label``'s default structure, made once.
_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its input; stored in the model card as a dict (``to_dict``).

    Attributes:
        size: output height and width in pixels.
        channels: 1 (grey) or 3 (grey repeated, for ImageNet-style backbones).
        window_center: window centre in HU applied before anything else.
        window_width: window width in HU.
        window_floor: output level of the window's lower edge (see :class:`core.config.Window`).
        scaling: ``"unit"`` ([0, 1]), ``"resnet50"`` (caffe-style) or ``"mobilenet_v2"``
            ([-1, 1]); see the module docstring.
        crop_to_body: crop to the largest bright region before padding (see module docstring).
        body_threshold: windowed value in [0, 1] above which a pixel counts as body.
        margin: fraction of the body box added on each side before padding.
        crop_to_lungs: crop to the lung field's bounding box instead of the body (takes
            precedence over ``crop_to_body``; the body box is the fallback).
        lung_margin: fraction of the lung box's longer side added on each side.
        mask_outside_lungs: set pixels farther than ``lung_dilation_mm`` from the lungs to 0.
        lung_dilation_mm: dilation of the lung mask (mm) before masking.
    """

    size: int = 224
    channels: int = 1
    window_center: float = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD].center
    window_width: float = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD].width
    window_floor: float = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD].floor
    scaling: str = "unit"
    crop_to_body: bool = True
    body_threshold: float = 0.06
    margin: float = 0.03
    crop_to_lungs: bool = False
    lung_margin: float = 0.08
    mask_outside_lungs: bool = False
    lung_dilation_mm: float = 10.0

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.window_width < 1:
            raise ValueError(f"window width must be at least 1 HU, got {self.window_width}")
        if self.lung_margin < 0 or self.lung_dilation_mm < 0:
            raise ValueError("lung_margin and lung_dilation_mm must not be negative")

    @property
    def window(self) -> Window:
        """The spec's window as a :class:`core.config.Window`."""
        return Window(center=self.window_center, width=self.window_width, floor=self.window_floor)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Model input shape ``(size, size, channels)``."""
        return (self.size, self.size, self.channels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict for the model card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        """Build a spec from a model card's dict; unknown keys are refused.

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys in model card: {sorted(unknown)}")
        return cls(**dict(data))


def body_box(unit: np.ndarray, threshold: float = 0.06) -> tuple[int, int, int, int] | None:
    """Bounding box of the patient's body in a windowed slice, without the scanner table.

    Method (at half resolution, for speed): a 7x7 mean filter merges the speckle of soft tissue
    in narrow-window exports; pixels above ``threshold`` are foreground; an opening with a 7x1
    vertical line removes thin horizontal structures (table edges, lines); connected regions of
    at least 3 % of the largest are kept, except flat regions (height < 0.35 x width) lying
    entirely in the lower part of the image below the median foreground row: the table. The box
    is the union of what is kept; a table touching the body is kept with it.

    Args:
        unit: float32 (y, x) windowed slice in [0, 1].
        threshold: mean-filtered value above which a pixel counts as foreground.

    Returns:
        ``(y0, y1, x0, x1)`` (half-open, pixels of ``unit``) or None when nothing is foreground.
    """
    small = np.asarray(unit, dtype=np.float32)[::2, ::2]
    return _body_box_half(small, unit.shape, threshold)


def _open_vertical_line(fg: np.ndarray, length: int = 7) -> np.ndarray:
    """Binary opening of ``fg`` (bool (y, x)) with a vertical line of ``length`` (odd) pixels, outside
    the image counting as background: the same mask as ``ndimage.binary_opening(fg,
    structure=np.ones((length, 1)))`` (tested). The erosion is the AND, the dilation the OR, of the
    ``length`` copies of the mask shifted along the rows: exact, and cheaper on booleans than
    ``ndimage.minimum_filter1d`` then ``maximum_filter1d`` (figures in docs/ingest.md).

    Returns:
        bool (y, x).
    """
    r = length // 2
    rows = fg.shape[0]
    pad = np.zeros((rows + 2 * r, *fg.shape[1:]), dtype=bool)
    pad[r : r + rows] = fg
    eroded = pad[0:rows].copy()
    for k in range(1, length):
        np.logical_and(eroded, pad[k : k + rows], out=eroded)
    pad[r : r + rows] = eroded
    opened = pad[0:rows].copy()
    for k in range(1, length):
        np.logical_or(opened, pad[k : k + rows], out=opened)
    return opened


def _body_box_half(
    small: np.ndarray, shape: tuple[int, ...], threshold: float
) -> tuple[int, int, int, int] | None:
    """:func:`body_box` on ``small``, the slice's every second row and column; box in full-size pixels."""
    height = small.shape[0]
    mask = _open_vertical_line(ndimage.uniform_filter(small, size=7) > threshold)
    labels, n = ndimage.label(mask, structure=_CROSS)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= 0.03 * sizes.max()
    keep[0] = False
    # keep[labels] is the mask itself when every region is kept (the usual case): no gather
    rows = np.count_nonzero(mask if keep[1:].all() else keep[labels], axis=1)
    # median row of the kept pixels (as np.median: the mean of the two middle ones when even)
    cum = np.cumsum(rows)
    total = int(cum[-1])
    median_row = (
        int(np.searchsorted(cum, (total - 1) // 2, side="right"))
        + int(np.searchsorted(cum, total // 2, side="right"))
    ) / 2.0
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or not keep[i]:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if sl[0].start > max(0.55 * height, median_row) and h < 0.35 * w:
            keep[i] = False
        else:
            boxes.append(sl)
    if not boxes:
        return None
    # the union of the kept regions' bounding boxes (find_objects: tight, half-open) is the
    # bounding box of the kept pixels, without another pass over the label image
    ys0, ys1 = min(b[0].start for b in boxes), max(b[0].stop for b in boxes)
    xs0, xs1 = min(b[1].start for b in boxes), max(b[1].stop for b in boxes)
    y1 = min(shape[0], (ys1 - 1) * 2 + 2)
    x1 = min(shape[1], (xs1 - 1) * 2 + 2)
    return ys0 * 2, y1, xs0 * 2, x1


@dataclass(frozen=True)
class Geometry:
    """Where a model input came from in its slice: a square window onto the slice.

    The square may reach past the slice's edges (that part is zero padding), so that a margin
    around a body touching the edge does not change the scale: the same body on a larger canvas
    gives the same input.

    Attributes:
        slice_shape: ``(rows, columns)`` of the original slice, pixels.
        top, left: slice coordinates of the square's upper-left corner (may be negative).
        side: side of the square, slice pixels.
        size: side of the model input, pixels.
    """

    slice_shape: tuple[int, int]
    top: int
    left: int
    side: int
    size: int

    def _overlap(self) -> tuple[slice, slice, slice, slice]:
        rows, cols = self.slice_shape
        y0, x0 = max(0, self.top), max(0, self.left)
        y1, x1 = min(rows, self.top + self.side), min(cols, self.left + self.side)
        return (
            slice(y0, y1),
            slice(x0, x1),
            slice(y0 - self.top, y1 - self.top),
            slice(x0 - self.left, x1 - self.left),
        )

    def crop(self, unit: np.ndarray) -> np.ndarray:
        """Cut the square out of a slice, zero outside it: float32 (side, side)."""
        out = np.zeros((self.side, self.side), dtype=np.float32)
        sy, sx, oy, ox = self._overlap()
        out[oy, ox] = unit[sy, sx]
        return out

    def to_slice(self, image: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Map an image on the model-input grid (e.g. a Grad-CAM heatmap) back onto the slice.

        Args:
            image: float (h, w) map covering the model input (any resolution).
            fill: value where the square does not cover the slice.

        Returns:
            float32 (rows, columns) map at the slice's resolution (bilinear).
        """
        img = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F")
        square = np.asarray(img.resize((self.side, self.side), Image.Resampling.BILINEAR), dtype=np.float32)
        out = np.full(self.slice_shape, fill, dtype=np.float32)
        sy, sx, oy, ox = self._overlap()
        out[sy, sx] = square[oy, ox]
        return out


def _window_into(hu: np.ndarray, window: Window, out: np.ndarray) -> None:
    """``out[...] = apply_window(hu, window)``, bit for bit, computed in ``out`` (float32, the
    shape of ``hu``, may be a view) without the temporaries of :func:`core.windowing.apply_window`:
    the same float32 operations in the same order (PS3.3 C.11.2.1.2.1; tested for equality)."""
    c, w, f = float(window.center), float(window.width), float(window.floor)
    x = np.asarray(hu, dtype=np.float32)
    if w <= 1:  # a step (or an invalid width, which apply_window refuses)
        out[...] = apply_window(x, window)
        return
    np.subtract(x, np.float32(c - 0.5), out=out)
    np.divide(out, np.float32(w - 1), out=out)
    np.add(out, np.float32(0.5), out=out)
    np.clip(out, 0.0, 1.0, out=out)
    if f > 0.0:
        np.multiply(out, np.float32(1.0 - f), out=out)
        np.add(out, np.float32(f), out=out)
        out[x <= np.float32(c - 0.5 - (w - 1) / 2)] = 0.0


def _geometry(
    hu: np.ndarray,
    window: Window,
    spec: PreprocessSpec,
    lungs: np.ndarray | None = None,
    windowed: np.ndarray | None = None,
) -> Geometry:
    """The square a slice (HU) is cut to: around the lungs or the body (plus margin) if asked,
    else the slice. ``lungs`` is the slice's lung mask when ``spec.crop_to_lungs``; ``windowed`` is
    ``apply_window(hu, window)`` when the caller has it.

    Windowing is pointwise, so the half-resolution grid :func:`body_box` looks at is the windowed
    slice's every second row and column, or (without ``windowed``) only that grid is windowed.
    """
    rows, cols = hu.shape
    y0, y1, x0, x1 = 0, rows, 0, cols
    if spec.crop_to_lungs and lungs is not None and lungs.any():
        ys = np.flatnonzero(lungs.any(axis=1))
        xs = np.flatnonzero(lungs.any(axis=0))
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        m = int(round(spec.lung_margin * max(y1 - y0, x1 - x0)))
        y0, x0, y1, x1 = y0 - m, x0 - m, y1 + m, x1 + m
    elif spec.crop_to_body or spec.crop_to_lungs:
        half = windowed[::2, ::2] if windowed is not None else apply_window(hu[::2, ::2], window)
        box = _body_box_half(half, hu.shape, spec.body_threshold)
        if box is not None:
            y0, y1, x0, x1 = box
            m = int(round(spec.margin * max(y1 - y0, x1 - x0)))
            y0, x0, y1, x1 = y0 - m, x0 - m, y1 + m, x1 + m
    h, w = y1 - y0, x1 - x0
    side = max(h, w)
    return Geometry((rows, cols), y0 - (side - h) // 2, x0 - (side - w) // 2, side, spec.size)


def preprocess_with_geometry(
    hu: np.ndarray,
    spec: PreprocessSpec,
    window: Window | None = None,
    spacing_mm: float | tuple[float | None, ...] | None = None,
) -> tuple[np.ndarray, list[Geometry]]:
    """Like :func:`preprocess`, and also return each slice's :class:`Geometry`.

    Args:
        hu: float (y, x) or (n, y, x) array in HU, or a list of (y, x) arrays of any sizes.
        spec: the model's preprocessing spec (from its model card).
        window: override of the spec's window; None uses the spec's (what the model was trained on).
        spacing_mm: pixel size for the lung mask (see :func:`core.lungs.lung_mask`); only used by
            specs with ``crop_to_lungs`` or ``mask_outside_lungs``.

    Returns:
        ``(x, geometries)``: float32 (n, size, size, channels) model input, and n geometries that
        map model-grid maps (Grad-CAM) back onto each slice.

    Raises:
        ValueError: a slice is not 2-D, is empty, or holds non-finite values.
    """
    slices = [hu] if isinstance(hu, np.ndarray) and hu.ndim == 2 else list(hu)
    if not slices:
        raise ValueError("no slices to preprocess")
    win = window or spec.window
    out = np.empty((len(slices), spec.size, spec.size, spec.channels), dtype=np.float32)
    geometries: list[Geometry] = []
    for i, sl in enumerate(slices):
        arr = np.asarray(sl)
        if arr.ndim != 2 or arr.size == 0:
            raise ValueError(f"expected each slice shaped (y, x), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("slice holds non-finite values (NaN or infinity); check the pixel data")
        lungs = lung_mask(arr, spacing_mm) if (spec.crop_to_lungs or spec.mask_outside_lungs) else None
        windowed = None
        if lungs is None and (spec.crop_to_body or spec.crop_to_lungs):
            # the body box looks at every second pixel and the square holds most of the slice:
            # windowing the whole slice once serves both (pointwise, so the same values)
            windowed = np.empty(arr.shape, dtype=np.float32)
            _window_into(arr, win, windowed)
        geo = _geometry(arr, win, spec, lungs, windowed)
        # the part of the slice inside the square, windowed; the rest of the square is 0
        sq = np.zeros((geo.side, geo.side), dtype=np.float32)
        sy, sx, oy, ox = geo._overlap()
        if windowed is not None:
            sq[oy, ox] = windowed[sy, sx]
        else:
            _window_into(arr[sy, sx], win, sq[oy, ox])
        if spec.mask_outside_lungs and lungs is not None and lungs.any():
            keep = _dilate_mm(lungs, spec.lung_dilation_mm, spacing_mm)
            sq[oy, ox] *= keep[sy, sx]
        img = Image.fromarray(sq, mode="F").resize((spec.size, spec.size), Image.Resampling.BILINEAR)
        res = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        if spec.scaling == "resnet50":
            # caffe mode: RGB->BGR is a no-op for grey; subtract the per-channel means.
            np.subtract((res * np.float32(255.0))[..., None], _CAFFE_BGR_MEANS[: spec.channels], out=out[i])
        elif spec.scaling == "mobilenet_v2":
            out[i, :, :, :] = (res * np.float32(2.0) - np.float32(1.0))[..., None]
        else:
            out[i, :, :, :] = res[..., None]
        geometries.append(geo)
    return out, geometries


def _dilate_mm(
    mask: np.ndarray, mm: float, spacing_mm: float | tuple[float | None, ...] | None
) -> np.ndarray:
    """``mask`` (bool (y, x)) grown by ``mm`` (Euclidean distance transform, pixel size from
    ``spacing_mm`` or :data:`core.lungs.DEFAULT_PIXEL_MM`): float32 (y, x) of 0 and 1."""
    if mm <= 0:
        return mask.astype(np.float32)
    dist = ndimage.distance_transform_edt(~mask, sampling=pixel_size_mm(spacing_mm))
    return (dist <= mm).astype(np.float32)


def preprocess(
    hu: np.ndarray,
    spec: PreprocessSpec,
    window: Window | None = None,
    spacing_mm: float | tuple[float | None, ...] | None = None,
) -> np.ndarray:
    """Turn slices in HU into model input (the steps in the module docstring).

    Args:
        hu: float (y, x) or (n, y, x) array in Hounsfield units (any size, any aspect ratio), or a
            list of (y, x) arrays of different sizes.
        spec: the model's preprocessing spec (from its model card).
        window: override of the spec's window (e.g. the radiologist's choice for DICOM);
            None uses the spec's window, which is what the model was trained on.
        spacing_mm: pixel size in mm for the lung mask (scalar, (y, x) or (z, y, x)); None
            assumes :data:`core.lungs.DEFAULT_PIXEL_MM`. Ignored by specs without lung fields.

    Returns:
        float32 array (n, size, size, channels): [0, 1] for ``scaling="unit"``, caffe-scaled
        (about -124 to 152) for ``scaling="resnet50"``, [-1, 1] for ``scaling="mobilenet_v2"``.

    Raises:
        ValueError: a slice is not 2-D, is empty, or holds non-finite values.
    """
    return preprocess_with_geometry(hu, spec, window, spacing_mm)[0]
