"""Find the nodules of a CT series: ``detect_nodules(series) -> list[Nodule]``.

The network (``models/registry/nodule3d_luna16_v1``, LUNA16-trained; card ``kind =
"nodule_detector"``) answers one question about a 64 mm cube: does a nodule lie *somewhere in it*
(Hammack's training cubes held the nodule anywhere up to 32 x (1 - d / 64) mm from their centre),
and if so how large and how suspicious is it. A cube centred 30 mm beside a 30 mm nodule scores
as high as one centred on it (a plateau about 60 mm wide), so the network alone says *near
where* a nodule is, not where; run fully convolutionally over a whole lung (its trunk ends in
global max pooling) it does not reproduce its cube answers (figures in docs/nodules.md). The
detector therefore lets the network find the plateaus and the image place the nodule in them:

1. **Volume** (:mod:`core.nodules.volume`): :func:`check_volume` (typed refusal of what is not a
   CT volume), resampling to ``VolumeSpec.voxel_mm`` (1 mm, trilinear, z along the real slice
   positions) and a 2 mm copy (2 x 2 x 2 block mean) for the mask and the blobs.
2. **Lung mask**: :func:`core.lungs.lung_mask_series` on the 2 mm copy (its 20 mm closing already
   puts juxta-pleural nodules inside), dilated by :attr:`DetectorConfig.lung_dilation_mm` = 15 mm
   (Euclidean): a nodule up to 30 mm (:data:`NODULE_MAX_MM`) that touches the lung field has its
   centre within its radius, 15 mm, of the field, and a hilar mass bulging out of the lung keeps
   its centre inside. Every candidate centre lies inside.
3. **Grid**: cubes centred on a 32 mm grid over the dilated mask (every point of the lung lies
   within 16 mm of a grid centre along each axis, well inside that cube), scored in batches
   (:func:`score_cubes`): ``p_cube`` = P(nodule in the cube), diameter, ratings.
4. **Blobs** near the positive grid cubes (``p_cube >= 0.5``, within 24 mm along each axis of one):
   3-D scale-space maxima of the difference of Gaussians (Lindeberg 1998, as scikit-image
   ``blob_dog``) of the 2 mm copy scaled as the network's input, sigma 1.5-16 mm (sphere
   diameters ``2 sqrt(3) sigma``, about 5-55 mm), response at least
   :attr:`DetectorConfig.blob_threshold`, just under what a synthetic 6 mm sphere of 200 HU
   contrast in -850 HU lung reaches (calibrated on that sphere, not on patient data); the
   strongest :attr:`DetectorConfig.max_blobs`, each scored by its own centred cube, and, when
   positive, again with the blob erased (a sphere of ``1.2 d / 2 + 2`` mm, d the network's
   diameter, set to -850 HU lung): ``evidence = p_cube - p_erased`` is high when this blob
   carries the network's nodule evidence, low for a vessel beside a nodule.
5. **False-positive rule** (:attr:`DetectorConfig.fp_rule`, docs/nodules.md: written before it
   was measured, and the one change made after): a candidate is dropped when the network's own
   CAD-false-positive class outweighs its nodule class, when its diameter is under
   :data:`NODULE_MIN_MM`; and an entry (step 6) is not reported when its centre lies farther from
   the lung mask than its own radius (network diameter / 2, plus 2 mm for the distance map's
   grid): the reason for the 15 mm dilation (a nodule touching the lung field has its centre
   within its radius of it), applied to each entry's own size, so that a 4 mm "nodule" in the
   chest wall goes while a mass bulging out of the lung stays. Over :data:`NODULE_MAX_MM` an
   entry is reported as a mass (``is_mass``).
6. **One plateau, one entry**: positive candidates (grid and blobs) closer than
   :attr:`DetectorConfig.link_mm` = 24 mm are linked (single linkage); each group gives one
   entry with ``p_nodule`` = its highest ``p_cube``, placed at the blob of highest evidence within
   16 mm of the group's ``p_cube``-weighted centroid (the plateau's centre), else at the member
   nearest that centroid; its diameter and ratings come from the cube centred there. The other
   candidates go through 3-D non-maximum suppression (a candidate within ``max(d / 2, 6 mm)`` of
   a kept one, or within ``link_mm`` of a group, is merged into it). Entries under
   :attr:`DetectorConfig.min_score` are not reported.

Everything is NumPy / SciPy; TensorFlow only runs the network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from core.lungs import lung_mask_series
from core.nodules.types import NODULE_MAX_MM, NODULE_MIN_MM, Nodule, NotAVolumeError
from core.nodules.volume import (
    Geometry,
    VolumeSpec,
    check_volume,
    cube_batch,
    geometry_of,
    lung_distance_mm,
    resample,
)

__all__ = [
    "DetectorConfig",
    "Detection",
    "LoadedDetector",
    "Scan",
    "detect_nodules",
    "load_detector",
    "scan_series",
    "score_cubes",
    "select_nodules",
]

#: HU that erases a blob: typical lung parenchyma (-900 to -500 HU, Hu et al., IEEE TMI 2001).
LUNG_HU = -850.0


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's rules (module docstring; history of the values in docs/nodules.md).

    Attributes:
        lung_dilation_mm: candidate centres must lie within this distance of the lung mask.
        coarse_mm: grid of the mask and blob stage (mm; 2 x the network's 1 mm).
        grid_mm: spacing of the grid of cube centres (mm).
        positive_p: ``p_cube`` from which a cube counts as positive (plateau, blob search, erasure).
        blob_reach_mm: blobs are searched within this distance (per axis) of a positive grid centre.
        sigma_min_mm, sigma_max_mm, sigma_ratio: scale range of the blob search (DoG).
        blob_threshold: DoG response (``blob_dog`` units on the network's [0, 1] input scale) a
            blob must reach: a 6 mm sphere of 200 HU contrast in -850 HU lung gives 0.065 on the
            2 mm grid (synthetic calibration, docs/nodules.md).
        dedupe_mm: a weaker blob within this distance of a stronger one is dropped.
        max_blobs: strongest blobs scored per series (bounds the network time).
        erase_factor, erase_margin_mm: erased sphere radius ``erase_factor * d / 2 + erase_margin_mm``.
        link_mm: positive candidates closer than this form one group (one plateau).
        snap_mm: the entry of a group sits at a blob within this distance of its centroid.
        nms_min_radius_mm: smallest merging radius of the non-maximum suppression.
        fp_rule: apply the false-positive rule (step 5); False keeps every candidate.
        min_score: entries with ``p_nodule`` under this are not returned.
        batch_size: cubes per network call.
    """

    lung_dilation_mm: float = 15.0
    coarse_mm: float = 2.0
    grid_mm: float = 32.0
    positive_p: float = 0.5
    blob_reach_mm: float = 24.0
    sigma_min_mm: float = 1.5
    sigma_max_mm: float = 16.0
    sigma_ratio: float = 1.6
    blob_threshold: float = 0.06
    dedupe_mm: float = 3.0
    max_blobs: int = 120
    erase_factor: float = 1.2
    erase_margin_mm: float = 2.0
    link_mm: float = 24.0
    snap_mm: float = 16.0
    nms_min_radius_mm: float = 6.0
    fp_rule: bool = True
    min_score: float = 0.5
    batch_size: int = 32


@dataclass
class LoadedDetector:
    """The nodule network with its card, ready to score cubes.

    Attributes:
        card: its ``core.registry.ModelCard`` (``kind == "nodule_detector"``).
        model: the Keras model: float32 (b, 64, 64, 64, 1) -> ``o_d``, ``o_lob``, ``o_spic``,
            ``o_mal`` (b, 1) and ``o_fp`` (b, 3).
        spec: the card's :class:`VolumeSpec`.
        run: float32 (b, 64, 64, 64, 1) -> float32 (b, 7) (the five outputs side by side), on
            OpenVINO or TensorFlow (``runtime``).
        runtime: ``"openvino"`` or ``"tensorflow"``; runtime_note: a sentence for the user.
    """

    card: Any
    model: Any
    spec: VolumeSpec
    run: Callable[[np.ndarray], np.ndarray]
    runtime: str = "tensorflow"
    runtime_note: str = ""


def _probe(spec: VolumeSpec) -> np.ndarray:
    """Four fixed cubes for the runtime agreement check: air, soft tissue, and two random."""
    rng = np.random.default_rng(22)
    c = spec.cube
    cubes = np.stack([np.zeros((c, c, c)), np.full((c, c, c), 0.7), rng.random((c, c, c)), rng.random((c, c, c)) * 0.4])
    return cubes[..., np.newaxis].astype(np.float32)


def load_detector(model_id: str | None = None, registry_dir: Any = None, runtime: str | None = None) -> LoadedDetector:
    """Load the nodule detector from the registry (sha256 checked by ``core.registry.load_model``).

    The five outputs are joined into one (b, 7) output on a copy with a fixed 64 mm input, which
    runs on OpenVINO when ``runtime`` allows it and its outputs agree with Keras within
    ``core.inference.runtime.AGREEMENT_ATOL`` on a probe batch (as the slice classifiers,
    ``core/runtime.py``; about 1.5 times faster on 2 cores, docs/nodules.md), else on TensorFlow.

    Args:
        model_id: a registry id; None = the first (by id) entry of kind ``nodule_detector``.
        registry_dir: registry folder; None = settings.
        runtime: ``"auto"``, ``"openvino"`` or ``"tensorflow"``; None = ``LUNGREVIEW_RUNTIME``.

    Raises:
        core.registry.ModelNotFoundError: no nodule detector registered (run
            ``python -m models.port_nodule3d``).
        core.registry.RegistryError: the entry is not a nodule detector, cannot be loaded, or
            ``runtime="openvino"`` was required and is unavailable.
    """
    import keras

    from core.registry import ModelNotFoundError, RegistryError, list_cards, load_model
    from core.settings import RUNTIMES, get_settings

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
    spec = VolumeSpec.from_dict(loaded.card.volume_preprocessing)
    c = spec.cube
    inp = keras.Input((c, c, c, 1), name="cube")
    joined = keras.Model(inp, keras.layers.Concatenate(name="outputs")(list(loaded.model(inp))))
    detector = LoadedDetector(loaded.card, loaded.model, spec, run=lambda x: np.asarray(joined.predict_on_batch(x)),
                              runtime="tensorflow", runtime_note="TensorFlow")
    wanted = (runtime or get_settings().runtime).lower()
    if wanted not in RUNTIMES:
        raise RegistryError(f"unknown runtime {wanted!r}; choose one of {', '.join(RUNTIMES)}")
    if wanted == "tensorflow":
        return detector
    from core.inference.runtime import RuntimeUnavailable, openvino_runner

    sha = loaded.card.sha256
    try:
        runner = openvino_runner(
            joined, detector.run, _probe(spec),
            cache_dir=(get_settings().var_dir / "openvino") if sha else None,
            key=f"{loaded.card.id}-{sha[:16]}", stale=f"{loaded.card.id}-*-openvino-*",
        )
    except RuntimeUnavailable as exc:
        if wanted == "openvino":
            raise RegistryError(f"{exc}; set LUNGREVIEW_RUNTIME=tensorflow to use TensorFlow") from exc
        detector.runtime_note = f"TensorFlow ({exc})"
        return detector
    detector.run = runner
    detector.runtime = "openvino"
    detector.runtime_note = f"OpenVINO {runner.version} float32 (max |dp| vs Keras {runner.max_abs_diff:.1e})"
    return detector


@dataclass(frozen=True)
class Detection:
    """One scored candidate before it becomes a :class:`Nodule` (internal; also for evaluation).

    Attributes:
        centre_iso: (z, y, x) integer voxel of the 1 mm volume.
        source: ``"grid"`` or ``"blob"``.
        sigma_mm: blob scale (0 for grid centres).
        p_cube, p_fp, p_tissue: the network's classes for the cube centred here.
        p_erased: P(nodule) with the blob erased (blobs with a positive cube only, else None).
        lung_distance_mm: distance of the centre to the lung mask (0 inside; 2 mm grid).
        diameter_mm, malignancy, lobulation, spiculation: network outputs (ratings 1-5).
    """

    centre_iso: tuple[int, int, int]
    source: str
    sigma_mm: float
    p_cube: float
    p_fp: float
    p_tissue: float
    diameter_mm: float
    malignancy: float
    lobulation: float
    spiculation: float
    p_erased: float | None = None
    lung_distance_mm: float = 0.0

    @property
    def evidence(self) -> float:
        """``p_cube - p_erased`` (0 when the blob was not erased)."""
        return 0.0 if self.p_erased is None else self.p_cube - self.p_erased


def _predict(detector: LoadedDetector, cubes: np.ndarray, batch_size: int) -> np.ndarray:
    """Outputs of the network as float32 (n, 7): d, lob, spic, mal, p_nodule, p_fp, p_tissue.

    The last batch is padded to ``batch_size`` so that compiled shapes are reused.
    """
    n = len(cubes)
    out = np.zeros((n, 7), dtype=np.float32)
    for start in range(0, n, batch_size):
        chunk = cubes[start : start + batch_size]
        k = len(chunk)
        if k < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - k, *chunk.shape[1:]), dtype=chunk.dtype)])
        out[start : start + k] = np.asarray(detector.run(chunk), dtype=np.float32)[:k]
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
    step = batch_size * 2  # cubes built at a time (64 cubes of 64^3 float32: 64 MiB, plus the axis transpose)
    for start in range(0, len(centres), step):
        cubes = cube_batch(hu_iso, centres[start : start + step], spec)
        if erase_radii_vox is not None:
            for i, r in enumerate(erase_radii_vox[start : start + step]):
                cubes[i, ..., 0][dist <= r] = erase_value  # the sphere is symmetric: axis order does not matter
        out[start : start + len(cubes)] = _predict(detector, cubes, batch_size)
    return out


def _block_mean(vol: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f x f blocks (edges cut to a multiple of f)."""
    z, y, x = (s // f * f for s in vol.shape)
    v = vol[:z, :y, :x]
    return v.reshape(z // f, f, y // f, f, x // f, f).mean(axis=(1, 3, 5), dtype=np.float32)


def _candidates(coarse_hu: np.ndarray, region: np.ndarray, spec: VolumeSpec, cfg: DetectorConfig,
                coarse_mm: float) -> np.ndarray:
    """Blob candidates on the coarse grid, strongest first.

    Scale-space maxima of the difference of Gaussians (Lindeberg 1998, as scikit-image
    ``blob_dog``: ``(G(s_i) - G(s_i+1)) / (ratio - 1)``, a scale-normalised Laplacian of Gaussian)
    over 3 x 3 x 3 voxels and neighbouring scales, at least ``cfg.blob_threshold``, centre inside
    ``region``; ranked by response (a 20 mm solid sphere outranks a 4 mm one), duplicates
    within ``cfg.dedupe_mm`` merged into the stronger, at most ``cfg.max_blobs``.

    Args:
        coarse_hu: float32 (Z, Y, X) HU on the coarse grid.
        region: bool (Z, Y, X): where blob centres may lie.

    Returns:
        float (n, 5): (z, y, x) coarse voxel, sigma in coarse voxels, DoG response.
    """
    from scipy import ndimage

    empty = np.zeros((0, 5))
    box = np.argwhere(region)
    if box.size == 0:
        return empty
    s0, s1 = cfg.sigma_min_mm / coarse_mm, cfg.sigma_max_mm / coarse_mm
    k = int(np.ceil(np.log(s1 / s0) / np.log(cfg.sigma_ratio)))
    sigmas = s0 * cfg.sigma_ratio ** np.arange(k + 2)
    reach = int(np.ceil(2 * sigmas[-1]))  # context of the widest Gaussian around the region
    lo = np.maximum(box.min(axis=0) - reach, 0)
    hi = np.minimum(box.max(axis=0) + reach + 1, coarse_hu.shape)
    sub = coarse_hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    unit = np.clip((sub - spec.hu_low) / (spec.hu_high - spec.hu_low), 0, 1).astype(np.float32)
    blurred = [ndimage.gaussian_filter(unit, s, mode="nearest") for s in sigmas]
    dog = np.stack([(blurred[i] - blurred[i + 1]) / (cfg.sigma_ratio - 1) for i in range(k + 1)])
    del blurred
    peaks = (dog == ndimage.maximum_filter(dog, size=3, mode="nearest")) & (dog >= cfg.blob_threshold)
    peaks &= region[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][np.newaxis]
    idx = np.argwhere(peaks)
    if idx.size == 0:
        return empty
    response = dog[tuple(idx.T)]
    order = np.argsort(-response)
    idx, response = idx[order], response[order]
    limit = (cfg.dedupe_mm / coarse_mm) ** 2
    kept: list[int] = []
    pts = idx[:, 1:].astype(np.float64)
    for i in range(len(idx)):
        if not kept or (((pts[kept] - pts[i]) ** 2).sum(axis=1) > limit).all():
            kept.append(i)
            if len(kept) == cfg.max_blobs:
                break
    idx, response = idx[kept], response[kept]
    out = np.zeros((len(idx), 5))
    out[:, :3] = idx[:, 1:] + lo
    out[:, 3] = sigmas[idx[:, 0]]
    out[:, 4] = response
    return out


def _grid(near: np.ndarray, f: int, step: int) -> np.ndarray:
    """Grid centres (1 mm voxels, int (n, 3)) every ``step`` voxels over the coarse mask's box,
    kept where the coarse mask ``near`` (voxels of ``f`` mm) holds."""
    box = np.argwhere(near)
    lo, hi = box.min(axis=0) * f, (box.max(axis=0) + 1) * f
    axes = []
    for a, b in zip(lo, hi, strict=True):
        n = max(1, int(np.ceil((b - a) / step)))
        start = a + ((b - a) - (n - 1) * step) / 2.0  # centred in the box
        axes.append(np.rint(start + step * np.arange(n)).astype(np.intp))
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    c = np.minimum(pts // f, np.array(near.shape) - 1)
    return pts[near[c[:, 0], c[:, 1], c[:, 2]]]


def _groups(points: np.ndarray, link: float) -> list[list[int]]:
    """Single-linkage groups of points (float (n, 3) mm) closer than ``link`` (SciPy cKDTree)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(points)
    if n == 0:
        return []
    pairs = np.array(sorted(cKDTree(points).query_pairs(link)), dtype=np.intp).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return [list(np.flatnonzero(labels == k)) for k in range(labels.max() + 1)]


def _suppress(dets: list[Detection], min_radius: float, voxel_mm: float,
              kept: list[Detection] | None = None, avoid_mm: float = 0.0) -> list[Detection]:
    """3-D non-maximum suppression by decreasing p_cube: a candidate within max(d / 2, min_radius)
    of a kept one (d the kept one's diameter), or within ``avoid_mm`` of one of ``kept``
    (the group entries), is merged into it. Returns the new entries only."""
    fixed = [np.asarray(k.centre_iso, dtype=np.float64) * voxel_mm for k in kept or []]
    out: list[Detection] = []
    for d in sorted(dets, key=lambda e: -e.p_cube):
        c = np.asarray(d.centre_iso, dtype=np.float64) * voxel_mm
        if any(np.linalg.norm(c - f) < avoid_mm for f in fixed):
            continue
        if any(
            np.linalg.norm(c - np.asarray(k.centre_iso, dtype=np.float64) * voxel_mm)
            <= max(k.diameter_mm / 2, min_radius)
            for k in out
        ):
            continue
        out.append(d)
    return out


def _rating(v: float) -> float:
    """A sigmoid output (rating / 5) as an LIDC rating clipped to 1-5."""
    return float(np.clip(5.0 * v, 1.0, 5.0))


def _detections(centres: np.ndarray, out: np.ndarray, source: str, to_lungs: np.ndarray, f: int,
                sigmas_mm: np.ndarray | None = None, p_erased: np.ndarray | None = None) -> list[Detection]:
    """Detections from :func:`score_cubes` rows; ``to_lungs`` the coarse distance map (voxels of f mm)."""
    dets = []
    for i, (c, o) in enumerate(zip(centres, out, strict=True)):
        pe = None if p_erased is None or np.isnan(p_erased[i]) else float(p_erased[i])
        k = np.minimum(np.asarray(c) // f, np.array(to_lungs.shape) - 1)
        dets.append(
            Detection(
                centre_iso=(int(c[0]), int(c[1]), int(c[2])), source=source,
                sigma_mm=float(sigmas_mm[i]) if sigmas_mm is not None else 0.0,
                p_cube=float(o[4]), p_fp=float(o[5]), p_tissue=float(o[6]), diameter_mm=float(o[0]),
                malignancy=_rating(o[3]), lobulation=_rating(o[1]), spiculation=_rating(o[2]), p_erased=pe,
                lung_distance_mm=float(to_lungs[k[0], k[1], k[2]]),
            )
        )
    return dets


def _centroid(group: list[Detection], voxel_mm: float) -> np.ndarray:
    """``p_cube``-weighted centroid of a group's centres (1 mm voxel, float (3,))."""
    pts = np.array([d.centre_iso for d in group], dtype=np.float64)
    w = np.array([d.p_cube for d in group])
    return (pts * w[:, None]).sum(axis=0) / w.sum()


def _entry(group: list[Detection], centre: Detection, cfg: DetectorConfig, voxel_mm: float) -> Detection:
    """One entry for a group of positive candidates (module docstring, step 6).

    ``centre`` is the detection of the cube centred on the group's centroid. The entry sits at the
    blob of highest evidence within ``cfg.snap_mm`` of the centroid when erasing that blob takes
    at least half of its cube's nodule probability (the blob carries the evidence), else at the
    centroid. Its ``p_cube`` is the group's highest.
    """
    c = np.asarray(centre.centre_iso, dtype=np.float64) * voxel_mm
    blobs = [
        d for d in group
        if d.source == "blob" and d.p_erased is not None
        and np.linalg.norm(np.asarray(d.centre_iso, dtype=np.float64) * voxel_mm - c) <= cfg.snap_mm
        and d.evidence >= 0.5 * d.p_cube
    ]
    chosen = max(blobs, key=lambda d: (d.evidence, d.p_cube)) if blobs else centre
    return replace(chosen, p_cube=max([d.p_cube for d in group] + [centre.p_cube]))


@dataclass
class Scan:
    """A scored series (internal stage between :func:`scan_series` and :func:`select_nodules`).

    Attributes:
        detections: every scored candidate (grid centres and blobs) before the rule.
        geometry, origin: the series' grid and the input index of 1 mm voxel (0, 0, 0).
        iso: float32 (Z, Y, X) HU at 1 mm (to score group centroids).
        detector: the network used.
        stats: seconds per stage and counts (see :func:`detect_nodules`).
        to_lungs: float (Z', Y', X') distance (mm) to the lung mask on the coarse grid.
        coarse: coarse voxel size in 1 mm voxels (2).
    """

    detections: list[Detection]
    geometry: Geometry
    origin: np.ndarray
    iso: np.ndarray
    detector: LoadedDetector
    stats: dict[str, Any]
    to_lungs: np.ndarray
    coarse: int


def scan_series(
    series: Any,
    model: LoadedDetector | None = None,
    config: DetectorConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> Scan:
    """Steps 1-4 of the module docstring: check, resample, mask, grid and blobs, all scored.

    Args, Raises: as :func:`detect_nodules`.
    """
    cfg = config or DetectorConfig()
    st: dict[str, Any] = {}
    say = progress or (lambda _s: None)
    st["warnings"] = check_volume(series)
    if model is None:
        model = load_detector()
    spec = model.spec
    g = geometry_of(series)

    say("resample")
    t = time.perf_counter()
    iso, origin = resample([sl.hu for sl in series.slices], g, voxel_mm=spec.voxel_mm, order=1)
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
    to_lungs = lung_distance_mm(lungs, coarse_mm)
    near = to_lungs <= cfg.lung_dilation_mm
    st["mask_s"] = time.perf_counter() - t

    say("network")
    t_net = time.perf_counter()
    grid = _grid(near, f, max(1, int(round(cfg.grid_mm / spec.voxel_mm))))
    grid_out = score_cubes(model, iso, grid, cfg.batch_size)
    st["grid"] = len(grid)
    net_s = time.perf_counter() - t_net

    say("candidates")
    t = time.perf_counter()
    positive = grid[grid_out[:, 4] >= cfg.positive_p]
    region = np.zeros_like(near)
    r = int(np.ceil(cfg.blob_reach_mm / coarse_mm))
    for c in positive // f:
        region[max(c[0] - r, 0) : c[0] + r + 1, max(c[1] - r, 0) : c[1] + r + 1, max(c[2] - r, 0) : c[2] + r + 1] = True
    region &= near
    blobs = _candidates(coarse, region, spec, cfg, coarse_mm) if positive.size else np.zeros((0, 5))
    centres = np.clip(np.rint(blobs[:, :3] * f + (f - 1) / 2.0).astype(np.intp), 0, np.array(iso.shape) - 1)
    st["blobs"] = len(centres)
    st["candidates_s"] = time.perf_counter() - t

    say("network")
    t = time.perf_counter()
    blob_out = score_cubes(model, iso, centres, cfg.batch_size)
    p_erased = np.full(len(centres), np.nan, dtype=np.float32)
    todo = np.flatnonzero(blob_out[:, 4] >= cfg.positive_p)
    if todo.size:
        radii = (cfg.erase_factor * np.maximum(blob_out[todo, 0], NODULE_MIN_MM) / 2 + cfg.erase_margin_mm)
        p_erased[todo] = score_cubes(model, iso, centres[todo], cfg.batch_size, erase_radii_vox=radii / spec.voxel_mm)[:, 4]
    st["cubes"] = int(len(grid) + len(centres) + todo.size)
    st["network_s"] = net_s + time.perf_counter() - t
    dets = _detections(grid, grid_out, "grid", to_lungs, f) + _detections(
        centres, blob_out, "blob", to_lungs, f, blobs[:, 3] * coarse_mm, p_erased)
    return Scan(dets, g, origin, iso, model, st, to_lungs, f)


def select_nodules(scan: Scan, config: DetectorConfig | None = None) -> list[Nodule]:
    """Steps 5-6 of the module docstring on a :class:`Scan`: the rule, one entry per plateau,
    suppression, ranking. Scores one cube per group (its centroid); ``scan.stats`` gains
    ``before_rule``, ``after_rule``, ``groups`` and ``suppression_s`` (the centroid cubes' time
    is added to ``network_s``).

    Returns:
        as :func:`detect_nodules`.
    """
    cfg = config or DetectorConfig()
    st, spec = scan.stats, scan.detector.spec
    t = time.perf_counter()
    dets = scan.detections
    st["before_rule"] = len(dets)
    tolerance = scan.coarse * spec.voxel_mm  # the distance map's grid

    def touches_lungs(d: Detection) -> bool:
        return d.lung_distance_mm <= d.diameter_mm / 2 + tolerance

    if cfg.fp_rule:
        dets = [d for d in dets if d.p_fp <= d.p_cube and d.diameter_mm >= NODULE_MIN_MM]
    st["after_rule"] = len(dets)
    pos = [d for d in dets if d.p_cube >= cfg.positive_p]
    groups = _groups(np.array([d.centre_iso for d in pos], dtype=np.float64) * spec.voxel_mm, cfg.link_mm)
    st["groups"] = len(groups)
    centroids = np.array([np.rint(_centroid([pos[i] for i in grp], spec.voxel_mm)) for grp in groups],
                         dtype=np.intp).reshape(-1, 3)
    t_net = time.perf_counter()
    centroid_dets = _detections(centroids, score_cubes(scan.detector, scan.iso, centroids, cfg.batch_size),
                                "centroid", scan.to_lungs, scan.coarse)
    net_s = time.perf_counter() - t_net
    st["network_s"] = st.get("network_s", 0.0) + net_s
    st["cubes"] = st.get("cubes", 0) + len(centroids)
    entries = [_entry([pos[i] for i in grp], c, cfg, spec.voxel_mm) for grp, c in zip(groups, centroid_dets, strict=True)]
    rest = _suppress([d for d in dets if d.p_cube < cfg.positive_p], cfg.nms_min_radius_mm, spec.voxel_mm,
                     kept=[pos[i] for grp in groups for i in grp], avoid_mm=cfg.link_mm)
    if cfg.fp_rule:  # on what would be reported: the plateau groups are formed from all the evidence
        entries = [e for e in entries if touches_lungs(e)]
        rest = [d for d in rest if touches_lungs(d)]
    kept = sorted(entries + rest, key=lambda d: -d.p_cube)
    kept = [d for d in kept if d.p_cube >= cfg.min_score]
    nodules = [_to_nodule(i, d, scan.geometry, scan.origin, spec) for i, d in enumerate(kept, start=1)]
    st["suppression_s"] = time.perf_counter() - t - net_s
    return nodules


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
            positions and Image Position / Orientation (Patient) (series stored by an older
            version without Image Position give ``centre_mm`` = (nan, nan, nan)).
        model: from :func:`load_detector`; None loads the registry's nodule detector.
        config: the rules; None = :class:`DetectorConfig` defaults.
        stats: optional dict filled with seconds per stage (``resample_s``, ``mask_s``,
            ``candidates_s``, ``network_s``, ``suppression_s``), counts (``grid``, ``blobs``,
            ``cubes``, ``before_rule``, ``after_rule``, ``groups``), ``warnings`` (see
            :func:`check_volume`) and ``detections`` (every scored :class:`Detection`).
        progress: optional callback receiving the name of each stage as it starts.

    Returns:
        Nodules sorted by ``p_nodule`` (highest first), ``rank`` 1, 2, ...; ``centre_voxel``
        (slice, row, column) indices into ``series.hu``, ``centre_mm`` (x, y, z) patient mm,
        ``slice_index`` = ``centre_voxel[0]``. Empty when nothing reaches ``config.min_score``.

    Raises:
        NotAVolumeError: the series is not a CT volume (see :func:`check_volume`), or no lung
            field is found in it.
        core.registry.RegistryError: no nodule detector could be loaded.
    """
    scan = scan_series(series, model, config, progress)
    if progress is not None:
        progress("suppression")
    nodules = select_nodules(scan, config)
    if stats is not None:
        stats.update(scan.stats)
        stats["detections"] = scan.detections
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
        p_nodule=round(d.p_cube, 4),
        malignancy=round(d.malignancy, 2),
        lobulation=round(d.lobulation, 2),
        spiculation=round(d.spiculation, 2),
        slice_index=voxel[0],
        is_mass=d.diameter_mm > NODULE_MAX_MM,
    )

