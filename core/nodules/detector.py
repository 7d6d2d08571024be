"""Find the nodules of a CT series: ``detect_nodules(series) -> list[Nodule]``.

The network (``models/registry/nodule3d_luna16_v1``, LUNA16-trained; card ``kind =
"nodule_detector"``) answers one question about a 64 mm cube: does a nodule lie *somewhere in it*
(Hammack's training cubes held the nodule anywhere up to 32 x (1 - d / 64) mm from their centre),
and if so how large and how suspicious is it. A cube centred 20 mm beside a 25 mm nodule scores
as high as one centred on it, so the network alone cannot say where the nodule is, and run
fully convolutionally over a whole lung (its trunk ends in global max pooling) it does not
reproduce its cube answers (figures in docs/nodules.md). The detector therefore proposes blob
centres and asks the network about each, twice:

1. **Volume** (:mod:`core.nodules.volume`): :func:`check_volume` (typed refusal of what is not a
   CT volume), resampling to ``VolumeSpec.voxel_mm`` (1 mm, trilinear, z along the real slice
   positions) and a 2 mm copy (2 x 2 x 2 block mean) for the mask and the candidates.
2. **Lung mask**: :func:`core.lungs.lung_mask_series` on the 2 mm copy (its 20 mm closing already
   puts juxta-pleural nodules inside), dilated by :attr:`DetectorConfig.lung_dilation_mm` = 15 mm
   (Euclidean): a nodule up to 30 mm (:data:`NODULE_MAX_MM`) that touches the lung field has its
   centre within its radius, 15 mm, of the field, and a hilar mass bulging out of the lung keeps
   its centre inside. A candidate centre must lie inside.
3. **Candidates**: 3-D blobs, scale-space maxima of the difference of Gaussians (Lindeberg 1998;
   scikit-image ``blob_dog``) of the 2 mm copy scaled as the network's input, for sigmas of 1.5 to
   12 mm (sphere diameters ``2 sqrt(3) sigma``, about 5 to 42 mm), above
   :attr:`DetectorConfig.blob_threshold`, just under what a synthetic 6 mm sphere of 200 HU
   contrast in -850 HU lung reaches (calibrated on that sphere, not on patient data); duplicates
   within 3 mm merged; at most :attr:`DetectorConfig.max_candidates` per series (the strongest by
   contrast of the blob against its surrounding shell).
4. **Network**, in batches (:func:`score_cubes`): the cube centred on each candidate gives
   ``p_cube`` = P(nodule in the cube) and the attributes. For candidates with ``p_cube`` of at
   least :attr:`DetectorConfig.erase_min_p` the same cube is scored again with the blob erased
   (a sphere of ``1.5 r + 2`` mm, r = sqrt(3) sigma, set to -850 HU lung), giving ``p_erased``.
   A blob that is the nodule takes the network's evidence with it; a vessel beside a nodule does
   not. ``p_nodule = p_cube x (1 - p_erased)``: a nodule in the cube, and it is this blob.
5. **False-positive rule** (:attr:`DetectorConfig.fp_rule`, written in docs/nodules.md before it
   was measured): a candidate is dropped when the network's own CAD-false-positive class
   outweighs its nodule class in the centred cube, or when its diameter is under
   :data:`NODULE_MIN_MM`; over :data:`NODULE_MAX_MM` it is kept as a mass (``is_mass``).
6. **Suppression** (3-D non-maximum suppression): by decreasing ``p_nodule``, a candidate whose
   centre lies within ``max(d / 2, 6 mm)`` of a kept one (d its diameter) is merged into it, so
   one nodule gives one entry. Entries under :attr:`DetectorConfig.min_score` are not reported.

Everything is NumPy / SciPy / scikit-image; TensorFlow only runs the network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.lungs import lung_mask_series
from core.nodules.types import NODULE_MAX_MM, NODULE_MIN_MM, Nodule, NotAVolumeError
from core.nodules.volume import (
    Geometry,
    VolumeSpec,
    check_volume,
    cube_batch,
    dilate_mm,
    geometry_of,
    resample,
)

__all__ = [
    "DetectorConfig",
    "Detection",
    "LoadedDetector",
    "detect_nodules",
    "load_detector",
    "score_cubes",
]

#: HU that erases a blob: typical lung parenchyma (-900 to -500 HU, Hu et al., IEEE TMI 2001).
LUNG_HU = -850.0


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's rules (module docstring); every value was set before measuring on the shared studies.

    Attributes:
        lung_dilation_mm: candidate centres must lie within this distance of the lung mask.
        coarse_mm: grid of the mask and candidate stage (mm; 2 x the network's 1 mm).
        sigma_min_mm, sigma_max_mm, sigma_ratio: scale range of the blob search (DoG).
        blob_threshold: DoG response (scikit-image ``blob_dog`` units on the network's [0, 1]
            input scale) a candidate must reach: a 6 mm sphere of 200 HU contrast in -850 HU lung
            gives 0.065 on the 2 mm grid (synthetic calibration, docs/nodules.md).
        dedupe_mm: a weaker candidate within this distance of a stronger one is dropped before
            the network (blob_dog returns plateaus of equal maxima one voxel apart).
        max_candidates: strongest candidates kept per series (bounds the network time).
        erase_min_p: ``p_cube`` from which the blob-erased cube is scored (below, ``p_erased`` = 0).
        erase_factor, erase_margin_mm: erased sphere radius ``erase_factor * r + erase_margin_mm``.
        nms_min_radius_mm: smallest merging radius of the non-maximum suppression.
        fp_rule: apply the false-positive rule (step 5); False reports every candidate.
        min_score: entries with ``p_nodule`` under this are not returned.
        batch_size: cubes per network call.
    """

    lung_dilation_mm: float = 15.0
    coarse_mm: float = 2.0
    sigma_min_mm: float = 1.5
    sigma_max_mm: float = 12.0
    sigma_ratio: float = 1.6
    blob_threshold: float = 0.06
    dedupe_mm: float = 3.0
    max_candidates: int = 300
    erase_min_p: float = 0.05
    erase_factor: float = 1.5
    erase_margin_mm: float = 2.0
    nms_min_radius_mm: float = 6.0
    fp_rule: bool = True
    min_score: float = 0.5
    batch_size: int = 32


@dataclass
class LoadedDetector:
    """The nodule network with its card: ``model`` maps float32 (b, 64, 64, 64, 1) to the five
    outputs (``o_d``, ``o_lob``, ``o_spic``, ``o_mal``, ``o_fp``); ``spec`` from the card."""

    card: Any
    model: Any
    spec: VolumeSpec


def load_detector(model_id: str | None = None, registry_dir: Any = None) -> LoadedDetector:
    """Load the nodule detector from the registry (sha256 checked by ``core.registry.load_model``).

    Args:
        model_id: a registry id; None = the only (or first by id) entry of kind ``nodule_detector``.
        registry_dir: registry folder; None = settings.

    Raises:
        core.registry.ModelNotFoundError: no nodule detector registered (run
            ``python -m models.port_nodule3d``).
        core.registry.RegistryError: the entry is not a nodule detector, or cannot be loaded.
    """
    from core.registry import ModelNotFoundError, RegistryError, list_cards, load_model

    if model_id is None:
        cards = list_cards(registry_dir, kind="nodule_detector")
        if not cards:
            raise ModelNotFoundError(
                "no nodule detector in the model registry; create it with python -m models.port_nodule3d"
            )
        model_id = cards[0].id
    loaded = load_model(model_id, registry_dir)
    if loaded.card.kind != "nodule_detector":
        raise RegistryError(f"{model_id!r} is a {loaded.card.kind}, not a nodule detector")
    return LoadedDetector(loaded.card, loaded.model, VolumeSpec.from_dict(loaded.card.volume_preprocessing))


@dataclass(frozen=True)
class Detection:
    """One scored candidate before it becomes a :class:`Nodule` (internal; also for evaluation).

    Attributes:
        centre_iso: (z, y, x) integer voxel of the 1 mm volume.
        sigma_mm: blob scale.
        p_cube, p_erased, p_fp, p_tissue: network outputs (see module docstring).
        diameter_mm, malignancy, lobulation, spiculation: network outputs (ratings 1-5).
    """

    centre_iso: tuple[int, int, int]
    sigma_mm: float
    p_cube: float
    p_erased: float
    p_fp: float
    p_tissue: float
    diameter_mm: float
    malignancy: float
    lobulation: float
    spiculation: float

    @property
    def p_nodule(self) -> float:
        """``p_cube * (1 - p_erased)``."""
        return self.p_cube * (1.0 - self.p_erased)


def _predict(model: Any, cubes: np.ndarray, batch_size: int) -> np.ndarray:
    """Outputs of the network as float32 (n, 7): d, lob, spic, mal, p_nodule, p_fp, p_tissue.

    The last batch is padded to ``batch_size`` so the traced function is reused.
    """
    n = len(cubes)
    out = np.zeros((n, 7), dtype=np.float32)
    for start in range(0, n, batch_size):
        chunk = cubes[start : start + batch_size]
        k = len(chunk)
        if k < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - k, *chunk.shape[1:]), dtype=chunk.dtype)])
        res = model.predict_on_batch(chunk)
        d, lob, spic, mal, fp = (np.asarray(r) for r in res)
        out[start : start + k] = np.concatenate([d, lob, spic, mal, fp], axis=1)[:k]
    return out


def score_cubes(
    detector: LoadedDetector, hu_iso: np.ndarray, centres: np.ndarray, batch_size: int = 32,
    erase_radii_vox: np.ndarray | None = None,
) -> np.ndarray:
    """Network outputs for cubes centred on voxels of a 1 mm volume.

    Args:
        detector: from :func:`load_detector`.
        hu_iso: float32 (Z, Y, X) HU at ``detector.spec.voxel_mm``.
        centres: int (n, 3) voxel indices (z, y, x).
        batch_size: cubes per network call.
        erase_radii_vox: optional float (n,): before scoring, set the voxels within this radius
            of each cube's centre to :data:`LUNG_HU`.

    Returns:
        float32 (n, 7): diameter mm, lobulation, spiculation, malignancy (each sigmoid = rating / 5),
        then P(nodule), P(CAD false positive), P(tissue).
    """
    spec = detector.spec
    centres = np.asarray(centres, dtype=np.intp).reshape(-1, 3)
    out = np.zeros((len(centres), 7), dtype=np.float32)
    if len(centres) == 0:
        return out
    c = spec.cube
    grid = np.indices((c, c, c), dtype=np.float32) - c // 2
    dist = np.sqrt((grid**2).sum(axis=0))
    erase_value = np.float32(np.clip((LUNG_HU - spec.hu_low) / (spec.hu_high - spec.hu_low), 0, 1))
    step = max(batch_size * 8, batch_size)
    for start in range(0, len(centres), step):
        cubes = cube_batch(hu_iso, centres[start : start + step], spec)
        if erase_radii_vox is not None:
            for i, r in enumerate(erase_radii_vox[start : start + step]):
                cubes[i, ..., 0][dist <= r] = erase_value  # the sphere is symmetric: axis order does not matter
        out[start : start + len(cubes)] = _predict(detector.model, cubes, batch_size)
    return out


def _block_mean(vol: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f x f blocks (edges cut to a multiple of f)."""
    z, y, x = (s // f * f for s in vol.shape)
    v = vol[:z, :y, :x]
    return v.reshape(z // f, f, y // f, f, x // f, f).mean(axis=(1, 3, 5), dtype=np.float32)


def _candidates(coarse_hu: np.ndarray, near_lungs: np.ndarray, spec: VolumeSpec, cfg: DetectorConfig,
                coarse_mm: float) -> np.ndarray:
    """Blob candidates on the coarse grid: float (n, 4) = (z, y, x, sigma in voxels), strongest first."""
    from skimage.feature import blob_dog

    unit = np.clip((coarse_hu - spec.hu_low) / (spec.hu_high - spec.hu_low), 0, 1).astype(np.float32)
    box = np.argwhere(near_lungs)
    if box.size == 0:
        return np.zeros((0, 4))
    lo = np.maximum(box.min(axis=0) - 4, 0)
    hi = np.minimum(box.max(axis=0) + 5, unit.shape)
    sub = unit[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    blobs = blob_dog(
        sub, min_sigma=cfg.sigma_min_mm / coarse_mm, max_sigma=cfg.sigma_max_mm / coarse_mm,
        sigma_ratio=cfg.sigma_ratio, threshold=cfg.blob_threshold, overlap=0.5,
    )
    if len(blobs) == 0:
        return np.zeros((0, 4))
    blobs[:, :3] += lo
    idx = np.clip(np.rint(blobs[:, :3]).astype(int), 0, np.array(unit.shape) - 1)
    blobs = blobs[near_lungs[idx[:, 0], idx[:, 1], idx[:, 2]]]
    if len(blobs) == 0:
        return np.zeros((0, 4))
    # strength: the smoothed value at the blob centre over its scale (cheap and monotone in contrast)
    strength = np.array([_dog_strength(unit, b) for b in blobs])
    blobs = blobs[np.argsort(-strength)]
    keep: list[int] = []
    limit = (cfg.dedupe_mm / coarse_mm) ** 2
    for i, b in enumerate(blobs):
        if all(((b[:3] - blobs[k, :3]) ** 2).sum() > limit for k in keep):
            keep.append(i)
            if len(keep) == cfg.max_candidates:
                break
    return blobs[keep]


def _dog_strength(unit: np.ndarray, blob: np.ndarray) -> float:
    """Mean input value within the blob's radius minus the mean in the shell out to twice it."""
    z, y, x, s = blob
    r = max(np.sqrt(3) * s, 1.0)
    R = int(np.ceil(2 * r))
    zs, ys, xs = (slice(max(int(c) - R, 0), int(c) + R + 1) for c in (z, y, x))
    patch = unit[zs, ys, xs]
    g = np.indices(patch.shape, dtype=np.float32)
    d = np.sqrt((g[0] + zs.start - z) ** 2 + (g[1] + ys.start - y) ** 2 + (g[2] + xs.start - x) ** 2)
    inner, shell = patch[d <= r], patch[(d > r) & (d <= 2 * r)]
    if inner.size == 0 or shell.size == 0:
        return 0.0
    return float(inner.mean() - shell.mean())


def _suppress(dets: list[Detection], min_radius: float, voxel_mm: float) -> list[Detection]:
    """3-D non-maximum suppression by decreasing p_nodule (radius max(d / 2, min_radius) of the kept one)."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda e: -e.p_nodule):
        c = np.asarray(d.centre_iso, dtype=np.float64) * voxel_mm
        if any(
            np.linalg.norm(c - np.asarray(k.centre_iso, dtype=np.float64) * voxel_mm)
            <= max(k.diameter_mm / 2, min_radius)
            for k in kept
        ):
            continue
        kept.append(d)
    return kept


def _rating(v: float) -> float:
    """A sigmoid output (rating / 5) as an LIDC rating clipped to 1-5."""
    return float(np.clip(5.0 * v, 1.0, 5.0))


def detect_nodules(
    series: Any,
    model: LoadedDetector | None = None,
    config: DetectorConfig | None = None,
    stats: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Nodule]:
    """Find the nodules of a CT series (method in the module docstring).

    Args:
        series: a ``core.imaging.Series``: ``hu`` float32 (z, y, x) in HU, ``spacing_mm``, slice
            positions and Image Position / Orientation (Patient) (older stored series without the
            latter give ``centre_mm`` = (nan, nan, nan)).
        model: from :func:`load_detector`; None loads the registry's nodule detector.
        config: the rules; None = :class:`DetectorConfig` defaults.
        stats: optional dict filled with seconds per stage (``resample_s``, ``mask_s``,
            ``candidates_s``, ``network_s``, ``suppression_s``), counts (``candidates``,
            ``cubes``, ``before_rule``, ``after_rule``), ``warnings`` (see :func:`check_volume`)
            and ``detections`` (every scored :class:`Detection`, for evaluation).
        progress: optional callback receiving the name of each stage as it starts.

    Returns:
        Nodules sorted by ``p_nodule`` (highest first), ``rank`` 1, 2, ...; ``centre_voxel``
        (slice, row, column) indices into ``series.hu``, ``centre_mm`` (x, y, z) patient mm,
        ``slice_index`` = ``centre_voxel[0]``. Empty when nothing reaches ``config.min_score``.

    Raises:
        NotAVolumeError: the series is not a CT volume (see :func:`check_volume`).
        core.registry.RegistryError: no nodule detector could be loaded.
    """
    cfg = config or DetectorConfig()
    st = stats if stats is not None else {}
    say = progress or (lambda _s: None)
    st["warnings"] = check_volume(series)
    if model is None:
        model = load_detector()
    spec = model.spec
    g = geometry_of(series)

    say("resample")
    t = time.perf_counter()
    iso, origin = resample(series.hu, g, voxel_mm=spec.voxel_mm, order=1)
    f = max(1, int(round(cfg.coarse_mm / spec.voxel_mm)))
    coarse = _block_mean(iso, f)
    coarse_mm = f * spec.voxel_mm
    st["resample_s"] = time.perf_counter() - t

    say("mask")
    t = time.perf_counter()
    lungs = lung_mask_series(coarse, (coarse_mm, coarse_mm, coarse_mm))
    if not lungs.any():
        raise NotAVolumeError(
            "No lung field was found in this series (is it a chest CT?); the nodule detector needs one, "
            "so only the slice classifiers run on it."
        )
    near = dilate_mm(lungs, cfg.lung_dilation_mm, voxel_mm=coarse_mm, coarse=1)
    st["mask_s"] = time.perf_counter() - t

    say("candidates")
    t = time.perf_counter()
    blobs = _candidates(coarse, near, spec, cfg, coarse_mm)
    centres = np.clip(np.rint(blobs[:, :3] * f + (f - 1) / 2.0).astype(np.intp), 0, np.array(iso.shape) - 1)
    sigmas_mm = blobs[:, 3] * coarse_mm
    st["candidates"] = len(centres)
    st["candidates_s"] = time.perf_counter() - t

    say("network")
    t = time.perf_counter()
    out = score_cubes(model, iso, centres, cfg.batch_size)
    p_erased = np.zeros(len(centres), dtype=np.float32)
    todo = np.flatnonzero(out[:, 4] >= cfg.erase_min_p)
    if todo.size:
        radii = (cfg.erase_factor * np.sqrt(3) * sigmas_mm[todo] + cfg.erase_margin_mm) / spec.voxel_mm
        p_erased[todo] = score_cubes(model, iso, centres[todo], cfg.batch_size, erase_radii_vox=radii)[:, 4]
    st["cubes"] = int(len(centres) + todo.size)
    st["network_s"] = time.perf_counter() - t

    say("suppression")
    t = time.perf_counter()
    dets = [
        Detection(
            centre_iso=(int(c[0]), int(c[1]), int(c[2])), sigma_mm=float(s),
            p_cube=float(o[4]), p_erased=float(pe), p_fp=float(o[5]), p_tissue=float(o[6]),
            diameter_mm=float(o[0]), malignancy=_rating(o[3]), lobulation=_rating(o[1]),
            spiculation=_rating(o[2]),
        )
        for c, s, o, pe in zip(centres, sigmas_mm, out, p_erased, strict=True)
    ]
    st["detections"] = dets
    st["before_rule"] = len(dets)
    if cfg.fp_rule:
        dets = [d for d in dets if d.p_fp <= d.p_cube and d.diameter_mm >= NODULE_MIN_MM]
    st["after_rule"] = len(dets)
    kept = [d for d in _suppress(dets, cfg.nms_min_radius_mm, spec.voxel_mm) if d.p_nodule >= cfg.min_score]
    nodules = [_to_nodule(i, d, g, origin, spec) for i, d in enumerate(kept, start=1)]
    st["suppression_s"] = time.perf_counter() - t
    return nodules


def _to_nodule(rank: int, d: Detection, g: Geometry, origin: np.ndarray, spec: VolumeSpec) -> Nodule:
    """A :class:`Detection` in the series' index space and patient coordinates."""
    z_mm = float(g.z_mm(origin[0])) + d.centre_iso[0] * spec.voxel_mm
    zi = float(g.z_index(z_mm))
    yi = origin[1] + d.centre_iso[1] * spec.voxel_mm / g.pixel_mm[0]
    xi = origin[2] + d.centre_iso[2] * spec.voxel_mm / g.pixel_mm[1]
    n = g.positions_mm.size
    voxel = (int(np.clip(round(zi), 0, n - 1)), int(round(yi)), int(round(xi)))
    mm = g.voxel_to_patient((zi, yi, xi))
    return Nodule(
        rank=rank,
        centre_voxel=voxel,
        centre_mm=mm if mm is not None else (float("nan"),) * 3,
        diameter_mm=round(d.diameter_mm, 2),
        p_nodule=round(d.p_nodule, 4),
        malignancy=round(d.malignancy, 2),
        lobulation=round(d.lobulation, 2),
        spiculation=round(d.spiculation, 2),
        slice_index=voxel[0],
        is_mass=d.diameter_mm > NODULE_MAX_MM,
    )

