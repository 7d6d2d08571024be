"""Nodules in the radiologist's read: what the reading service returns and the small rules around it.

:class:`services.reading.ReadingService` owns the transactions (detect-or-reuse, decisions, added
nodules, Lung-RADS); this module holds the plain frozen dataclasses it returns (never ORM rows,
so nothing escapes a closed session) and the geometry every consumer needs the same way:

* :class:`NoduleDetector`: what the service needs of a detector (registry id, weights sha256,
  operating point, a ``detect(series, progress)`` function). :func:`registry_detector` builds it
  from the model registry (``core.nodules.detector``); tests hand in a tiny fake.
* :class:`AiFinding`, :class:`NoduleFindings`: one detector run on the series of an analysis
  (``db`` tables ``nodule_detections`` and ``nodules``), or its refusal.
* :class:`ReaderNodules`: one reader's current read of that run (``db.repository.NoduleState``
  per nodule), their Lung-RADS category and the suggestion (``core.lungrads``).
* :func:`side_of`, :func:`midline_x_mm`: left or right lung from the patient x coordinate.
* :func:`patient_mm`, :func:`outside_lung`: where a clicked voxel lies (patient mm, lung mask).
* :func:`axial_crop`: the small picture of a finding for the findings table.

No Streamlit, no TensorFlow (the detector's network is loaded by the function handed in).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from core.domain import WINDOW_PRESETS, WindowPreset
from core.lungrads import LungRadsSuggestion

__all__ = [
    "MIDLINE_FROM_LUNGS",
    "MIDLINE_ORIGIN",
    "AddedNodule",
    "AiFinding",
    "NoduleDetector",
    "NoduleFindings",
    "ReaderNodules",
    "axial_crop",
    "midline_x_mm",
    "outside_lung",
    "patient_mm",
    "registry_detector",
    "side_of",
    "slice_step_mm",
]

#: Where :func:`midline_x_mm` took the midline from.
MIDLINE_FROM_LUNGS = "lung mask"
MIDLINE_ORIGIN = "patient coordinate origin"


# ------------------------------------------------------------------------------ the detector
@dataclass(frozen=True)
class NoduleDetector:
    """A nodule detector as the reading service uses it.

    Attributes:
        model_id: registry id (``core.registry.ModelCard.id``, kind ``nodule_detector``).
        model_sha256: sha256 hex of its weights file (64 characters).
        detect: ``detect(series, progress) -> list[core.nodules.Nodule]``; ``progress`` is None or
            a callable taking the name of each stage. Raises ``core.nodules.NotAVolumeError`` for
            a series it cannot scan.
        operating_point: the p(nodule) the findings are cut at, in [0, 1], or None when unknown.
    """

    model_id: str
    model_sha256: str
    detect: Callable[[Any, Callable[[str], None] | None], Sequence[Any]] = field(repr=False)
    operating_point: float | None = None


def registry_detector(load: Callable[[str], Any], registry_dir: Any = None) -> NoduleDetector | None:
    """The registry's nodule detector, its network loaded by ``load`` on the first detection.

    Reading the card costs nothing; the network (``core.nodules.detector.load_detector``, about
    1.5 MB, TensorFlow) is loaded only when a series really has to be scanned, so a JPG that is
    refused never loads it.

    Args:
        load: ``load(model_id) -> core.nodules.detector.LoadedDetector`` (the dashboard passes
            its cached loader).
        registry_dir: registry folder; None = settings.

    Returns:
        :class:`NoduleDetector` of the first entry of kind ``nodule_detector`` (by id), with the
        operating point of ``core.nodules.detector.DetectorConfig.min_score``; None when no
        nodule detector is registered.

    Raises:
        core.registry.RegistryError: the registry cannot be read.
    """
    from core.nodules.detector import DetectorConfig, detect_nodules
    from core.registry import list_cards

    cards = list_cards(registry_dir, kind="nodule_detector")
    if not cards:
        return None
    card = cards[0]

    def detect(series: Any, progress: Callable[[str], None] | None = None) -> list[Any]:
        return detect_nodules(series, model=load(card.id), progress=progress)

    return NoduleDetector(model_id=card.id, model_sha256=card.sha256, detect=detect,
                          operating_point=float(DetectorConfig().min_score))


# ------------------------------------------------------------------------------ stored results
@dataclass(frozen=True)
class AiFinding:
    """One AI finding as stored (``db.schema.AiNodule``), plain values.

    Attributes:
        nodule_id: ``nodules.id``. rank: 1 = highest p(nodule).
        slice_index: 0-based slice through the centre (== ``centre_voxel[0]``).
        centre_voxel: (z, y, x) indices into the series' HU volume (slice, row, column).
        centre_mm: (x, y, z) DICOM patient coordinates (LPS, mm).
        diameter_mm: the detector's diameter (mm). p_nodule: probability in [0, 1].
        malignancy, lobulation, spiculation: LIDC-style ratings 1-5. is_mass: over 30 mm.
    """

    nodule_id: int
    rank: int
    slice_index: int
    centre_voxel: tuple[int, int, int]
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    p_nodule: float
    malignancy: float
    lobulation: float
    spiculation: float
    is_mass: bool

    @classmethod
    def of(cls, row: Any) -> AiFinding:
        """From a ``db.schema.AiNodule`` row (read inside its session)."""
        return cls(nodule_id=int(row.id), rank=int(row.rank), slice_index=int(row.slice_index),
                   centre_voxel=tuple(int(v) for v in row.centre_voxel),
                   centre_mm=tuple(float(v) for v in row.centre_mm), diameter_mm=float(row.diameter_mm),
                   p_nodule=float(row.p_nodule), malignancy=float(row.malignancy),
                   lobulation=float(row.lobulation), spiculation=float(row.spiculation), is_mass=bool(row.is_mass))


@dataclass(frozen=True)
class NoduleFindings:
    """One run of the nodule detector on the series of an analysis (or its refusal).

    Attributes:
        detection_id: ``nodule_detections.id``. inference_id, series_id, study_id: the analysis
            it ran beside.
        model_id, model_sha256: the detector's registry entry.
        refusal: "" when the detector ran; else its one-line reason (``NotAVolumeError``).
        operating_point: p(nodule) the findings were cut at, or None.
        latency_ms: wall time of the detection (ms).
        findings: the AI findings in rank order (empty: nothing above the operating point).
        reused: True when the stored run was returned and the detector did not run.
        created_at: when it was recorded (UTC).
        warnings: what is doubtful about the series (``core.nodules.volume.check_volume``:
            thick slices), one sentence each; not stored, computed from the series.
    """

    detection_id: int
    inference_id: int
    series_id: int
    study_id: int
    model_id: str
    model_sha256: str
    refusal: str
    operating_point: float | None
    latency_ms: float
    findings: tuple[AiFinding, ...]
    reused: bool
    created_at: datetime | None = None
    warnings: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        """True when the detector refused the series (no findings, a reason in :attr:`refusal`)."""
        return bool(self.refusal)

    def finding(self, nodule_id: int) -> AiFinding:
        """The finding with this id. Raises KeyError when it is not of this run."""
        for f in self.findings:
            if f.nodule_id == int(nodule_id):
                return f
        raise KeyError(f"nodule {nodule_id} is not a finding of detection {self.detection_id}")


@dataclass(frozen=True)
class ReaderNodules:
    """One reader's current read of a detection.

    Attributes:
        detection_id, reader_id: whose read of which run.
        states: ``db.repository.NoduleState`` per nodule: every AI finding in rank order
            (undecided ones too), then the reader's added nodules in the order added.
        suggestion: ``core.lungrads.suggest_lungrads`` of the states (accepted and added
            solid nodules; untyped ones count as solid).
        lungrads: the reader's current Lung-RADS category ("1", "4A" ...), or None.
        lungrads_suggested: the suggestion shown when that category was saved, or None.
    """

    detection_id: int
    reader_id: int
    states: tuple[Any, ...]
    suggestion: LungRadsSuggestion
    lungrads: str | None = None
    lungrads_suggested: str | None = None

    def state_of(self, nodule_id: int) -> Any | None:
        """The state of the AI finding ``nodule_id``, or None."""
        return next((s for s in self.states if s.nodule_id == int(nodule_id)), None)

    @property
    def added(self) -> tuple[Any, ...]:
        """The reader's own nodules (source "reader")."""
        return tuple(s for s in self.states if s.source == "reader")

    @property
    def counts(self) -> dict[str, int]:
        """Nodules per status: accepted, corrected, rejected, undecided, added."""
        out = {k: 0 for k in ("accepted", "corrected", "rejected", "undecided", "added")}
        for s in self.states:
            out[s.status] = out.get(s.status, 0) + 1
        return out

    @property
    def version(self) -> tuple:
        """What identifies this read's content (current row ids and the category): equal versions
        mean an equal read, so a prepared DICOM export of it is still valid."""
        return (self.detection_id, tuple((s.tracking_key, s.read_id) for s in self.states), self.lungrads)


@dataclass(frozen=True)
class AddedNodule:
    """A nodule the reader added: the new ``nodule_reads`` row and where it lies.

    Attributes:
        read_id: the new row. supersedes_id: the row it replaces (a moved nodule) or None.
        centre_voxel: (z, y, x). centre_mm: (x, y, z) patient LPS mm.
        outside_lung: the centre lies outside the slice's lung mask (kept, flagged).
        seconds_to_decision: seconds since the AI result was first shown.
    """

    read_id: int
    supersedes_id: int | None
    centre_voxel: tuple[int, int, int]
    centre_mm: tuple[float, float, float]
    outside_lung: bool
    seconds_to_decision: float


# ------------------------------------------------------------------------------ geometry
def side_of(x_mm: float, midline_x_mm: float = 0.0) -> str:
    """"left", "right" or "midline" from a patient x coordinate.

    DICOM patient coordinates are LPS (PS3.3 C.7.6.2.1.1): +x points to the patient's left, so a
    centre with x above the midline lies in the left lung. The same rule as the SR's
    ``core.pacs.export.nodule_laterality`` (not imported here: it would load highdicom).

    Args:
        x_mm: the centre's patient x in mm. midline_x_mm: the midline's patient x in mm.

    Returns:
        "left", "right", or "midline" (equal, or a coordinate that is not finite).
    """
    x, mid = float(x_mm), float(midline_x_mm)
    if not (math.isfinite(x) and math.isfinite(mid)) or x == mid:
        return "midline"
    return "left" if x > mid else "right"


def _geometry(series: Any) -> Any | None:
    from core.nodules.types import NotAVolumeError
    from core.nodules.volume import geometry_of

    try:
        return geometry_of(series)
    except NotAVolumeError:
        return None


def patient_mm(series: Any, slice_index: int, row: float, col: float) -> tuple[float, float, float] | None:
    """DICOM patient coordinates (LPS, mm) of a voxel of a series.

    ``P = IPP(z) + col * dx * row_cosines + row * dy * column_cosines`` (PS3.3 C.7.6.2.1.1), via
    ``core.nodules.volume.Geometry.voxel_to_patient``.

    Args:
        series: ``core.imaging.Series`` (slices with Image Position (Patient), Image Orientation
            (Patient) in its metadata, pixel spacing).
        slice_index: 0-based slice. row, col: pixel indices (fractions allowed).

    Returns:
        (x, y, z) in mm, or None when the series lacks positions, orientation or spacing
        (pictures).
    """
    g = _geometry(series)
    if g is None:
        return None
    return g.voxel_to_patient((float(slice_index), float(row), float(col)))


def slice_step_mm(series: Any) -> float | None:
    """Distance between neighbouring slices in mm (``Series.spacing_mm[0]``), or None when unknown."""
    dz = series.spacing_mm[0] if series.spacing_mm else None
    return float(dz) if dz is not None and float(dz) > 0 else None


def _lung_mask(series: Any, index: int) -> np.ndarray:
    from core.lungs import lung_mask

    return lung_mask(series.slices[int(index)].hu, series.spacing_mm)


def outside_lung(series: Any, slice_index: int, row: int, col: int,
                 mask: np.ndarray | None = None) -> bool:
    """True when the pixel lies outside the lung-field mask of its slice (``core.lungs.lung_mask``).

    Args:
        series: ``core.imaging.Series``. slice_index, row, col: the pixel (0-based).
        mask: the slice's bool (y, x) mask when the caller has it (else computed).

    Returns:
        True outside the mask (also when the slice shows no lungs).

    Raises:
        IndexError: the pixel lies outside the slice.
    """
    m = _lung_mask(series, slice_index) if mask is None else np.asarray(mask, dtype=bool)
    r, c = int(row), int(col)
    if not (0 <= r < m.shape[0] and 0 <= c < m.shape[1]):
        raise IndexError(f"pixel ({r}, {c}) lies outside the {m.shape[0]} x {m.shape[1]} slice")
    return not bool(m[r, c])


def midline_x_mm(series: Any, indices: Sequence[int] | None = None) -> tuple[float, str]:
    """The body's midline as a patient x coordinate, from the lung-field masks.

    On each of the given slices (default: five evenly spaced slices of the middle half of the
    series) whose mask (``core.lungs.lung_mask``) holds two lungs (``core.lungs.count_lungs``),
    the midline is the middle of the mask's column extent (between the outer walls of the right
    and the left lung), at the mask's mean row, in patient x (:func:`patient_mm`); the median
    over those slices is returned. Used for the laterality of nodules (:func:`side_of`, the SR's
    ``NoduleReport.midline_x_mm``).

    Args:
        series: ``core.imaging.Series`` with positions and orientation.
        indices: 0-based slices to look at (e.g. the nodules' slices).

    Returns:
        (x in mm, source): source :data:`MIDLINE_FROM_LUNGS`, or (0.0,
        :data:`MIDLINE_ORIGIN`) when no slice shows two lungs or the geometry is unknown (the
        patient coordinate origin, which scanners place near the table's centre line).
    """
    from core.lungs import count_lungs

    n = len(series.slices)
    g = _geometry(series)
    if g is None or n == 0:
        return 0.0, MIDLINE_ORIGIN
    if indices is None:
        lo, hi = n // 4, max(n // 4 + 1, (3 * n) // 4)
        indices = sorted({int(round(v)) for v in np.linspace(lo, hi - 1, num=min(5, hi - lo))})
    xs = []
    for z in sorted({int(i) for i in indices if 0 <= int(i) < n}):
        mask = _lung_mask(series, z)
        if count_lungs(mask) < 2:
            continue
        rows, cols = np.nonzero(mask)
        p = g.voxel_to_patient((float(z), float(rows.mean()), (cols.min() + cols.max()) / 2.0))
        if p is not None and math.isfinite(p[0]):
            xs.append(p[0])
    if not xs:
        return 0.0, MIDLINE_ORIGIN
    return float(np.median(xs)), MIDLINE_FROM_LUNGS


def axial_crop(series: Any, slice_index: int, row: float, col: float, diameter_mm: float, *,
               out_px: int = 64, min_fov_mm: float = 30.0) -> np.ndarray:
    """A small axial picture centred on a nodule, in the lung window, for the findings table.

    The field of view is the larger of ``min_fov_mm`` and three diameters (so the nodule and some
    lung around it show); pixels beyond the slice are black. Resized to ``out_px`` square with
    bilinear interpolation (Pillow).

    Args:
        series: ``core.imaging.Series``. slice_index: 0-based slice. row, col: the centre (pixels).
        diameter_mm: the nodule's diameter (mm), > 0.
        out_px: side of the picture (pixels). min_fov_mm: smallest field of view (mm).

    Returns:
        uint8 (out_px, out_px) grey picture (lung window C -600 / W 1500 HU).

    Raises:
        IndexError: no such slice.
    """
    from PIL import Image

    from core.imaging import view

    hu = series.slices[int(slice_index)].hu
    dy = float(series.spacing_mm[1] or 0.7)
    dx = float(series.spacing_mm[2] or 0.7)
    fov = max(float(min_fov_mm), 3.0 * float(diameter_mm))
    half_r, half_c = max(2, int(round(fov / 2 / dy))), max(2, int(round(fov / 2 / dx)))
    r0, c0 = int(round(row)), int(round(col))
    pad = np.full((2 * half_r + 1, 2 * half_c + 1), -1024.0, dtype=np.float32)
    rs, re_ = max(0, r0 - half_r), min(hu.shape[0], r0 + half_r + 1)
    cs, ce = max(0, c0 - half_c), min(hu.shape[1], c0 + half_c + 1)
    if rs < re_ and cs < ce:
        pad[rs - (r0 - half_r):re_ - (r0 - half_r), cs - (c0 - half_c):ce - (c0 - half_c)] = hu[rs:re_, cs:ce]
    grey = view(pad, WINDOW_PRESETS[WindowPreset.LUNG])
    return np.asarray(Image.fromarray(grey).resize((out_px, out_px), Image.BILINEAR), dtype=np.uint8)
