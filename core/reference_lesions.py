"""Reference lesions of a CT series from the LIDC-IDRI readers' marks (the LUNA16 rule).

Pure functions: the readers' marks come from :func:`core.annotations.read_lidc_xml`, the series'
geometry from the caller (the study store keeps slice positions and spacing but drops the
SOPInstanceUIDs, so marks are placed on slices by their z position).

The rule (LUNA16: Setio et al., Med Image Anal 42:1-13, 2017; the same steps as
``models.evaluation.froc.lidc_reference``, which scores the nodule detector):

1. Only nodules of 3 mm or more count: the marks a reader outlined (``Nodule.at_least_3mm``;
   LIDC's protocol gives smaller nodules a single point and no outline). Non-nodules are not read.
2. Each outline (``roi``) is placed on the slice of the series with its SOPInstanceUID when the
   series' UIDs are given, else on the slice whose z position (ImagePositionPatient z, mm) is
   within ``z_tolerance_mm`` of the roi's ``imageZposition`` (default: a quarter of the median
   slice step). Outlines on no slice of the series are ignored (an XML may name slices that a
   partial copy lacks); a mark with no outline left is counted in ``marks_outside``.
3. A reader's mark: centre = the mean (slice, row, column) of its included outline pixels (the
   filled polygons, excluded holes ignored), weighted by pixel count; diameter = the longest
   in-plane distance between two outline points on one slice, in mm (pylidc's
   ``Annotation.diameter`` convention).
4. Marks of different readers are one nodule when their centres lie closer (3-D, mm) than the sum
   of their radii, at most one mark per reader (LUNA16's merging); marks are taken largest first
   and join the nearest nodule that qualifies.
5. A nodule is a reference lesion when at least ``min_readers`` readers marked it (LUNA16: 3 of
   the 4); its centre is the readers' mean centre and its diameter the readers' mean diameter.
   Nodules marked by fewer readers are returned apart (``fewer_readers``), not as lesions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.annotations import Nodule

#: LUNA16's reader rule: a nodule counts when at least this many of the 4 LIDC readers marked it.
LUNA16_MIN_READERS = 3


class LesionGeometryError(ValueError):
    """The series' geometry cannot place LIDC marks (no slice positions or no pixel spacing)."""


@dataclass(frozen=True)
class ConsensusLesion:
    """One nodule of the LIDC readers' marks placed on a series.

    Attributes:
        slice_position: fractional 0-based slice index of the centre (``slice_index`` rounds it).
        x, y: centre pixel column and row (0-based, fractional).
        diameter_mm: the readers' mean diameter (mm).
        readers: 0-based reading sessions (readers) of the XML that marked it, sorted.
        malignancy: the readers' mean malignancy rating 1-5 (None when none was given).
    """

    slice_position: float
    x: float
    y: float
    diameter_mm: float
    readers: tuple[int, ...]
    malignancy: float | None

    @property
    def slice_index(self) -> int:
        """The slice of the centre: ``slice_position`` rounded to the nearest slice."""
        return int(round(self.slice_position))


@dataclass(frozen=True)
class LidcConsensus:
    """The outcome of :func:`lidc_consensus`.

    Attributes:
        lesions: nodules marked by at least ``min_readers`` readers, by decreasing diameter.
        fewer_readers: nodules marked by fewer readers (not lesions), by decreasing diameter.
        marks_outside: readers' 3 mm+ marks with no outline on a slice of the series.
        small_marks: readers' marks of nodules under 3 mm (not used).
    """

    lesions: tuple[ConsensusLesion, ...]
    fewer_readers: tuple[ConsensusLesion, ...]
    marks_outside: int
    small_marks: int


@dataclass
class _Mark:
    reader: int
    centre: np.ndarray  # (slice, row, column), fractional
    centre_mm: np.ndarray  # (z, y, x) mm on the series grid
    diameter: float
    malignancy: int | None


def _slice_of(roi_uid: str, roi_z: float | None, uids: dict[str, int], z: np.ndarray, tol: float) -> int | None:
    if uids:
        return uids.get(roi_uid)
    if roi_z is None:
        return None
    i = int(np.argmin(np.abs(z - roi_z)))
    return i if abs(float(z[i]) - roi_z) <= tol else None


def _place(mark: Nodule, uids: dict[str, int], z: np.ndarray, tol: float, shape: tuple[int, int],
           pixel_mm: tuple[float, float]) -> _Mark | None:
    zs, ys, xs, weights, longest = [], [], [], [], 0.0
    dy, dx = pixel_mm
    for roi in mark.rois:
        index = _slice_of(roi.sop_instance_uid, roi.z_mm, uids, z, tol)
        if index is None or not roi.inclusion:
            continue
        rr, cc = np.nonzero(roi.mask(shape))
        if rr.size == 0:
            continue
        zs.append(index)
        ys.append(rr.mean())
        xs.append(cc.mean())
        weights.append(rr.size)
        pts = roi.points.astype(np.float64) * np.array([dx, dy])
        if len(pts) > 1:
            diff = pts[:, None, :] - pts[None, :, :]
            longest = max(longest, float(np.sqrt((diff ** 2).sum(-1)).max()))
    if not zs:
        return None
    w = np.asarray(weights, dtype=np.float64)
    centre = np.array([np.average(zs, weights=w), np.average(ys, weights=w), np.average(xs, weights=w)])
    z_mm = float(np.interp(centre[0], np.arange(len(z)), z))
    return _Mark(mark.reader, centre, np.array([z_mm, centre[1] * dy, centre[2] * dx]), longest, mark.malignancy)


def lidc_consensus(marks: Sequence[Nodule], *, slice_z_mm: Sequence[float], shape: tuple[int, int],
                   pixel_mm: tuple[float, float], slice_uids: Sequence[str | None] | None = None,
                   min_readers: int = LUNA16_MIN_READERS, z_tolerance_mm: float | None = None) -> LidcConsensus:
    """The reference lesions of one series from its LIDC readers' marks (rule in the module docstring).

    Args:
        marks: ``core.annotations.read_lidc_xml`` output for the series.
        slice_z_mm: float (n,) z position of each slice in mm (ImagePositionPatient z, or the
            position along the slice normal for axial series), in the series' slice order; all
            finite (the clustering measures distances in mm).
        shape: (rows, columns) of a slice.
        pixel_mm: (row spacing, column spacing) in mm, both > 0.
        slice_uids: the slices' SOPInstanceUIDs (n,) when known (series read from disk): then
            outlines are placed by UID, not by z.
        min_readers: readers needed for a lesion (LUNA16: 3).
        z_tolerance_mm: largest |roi z - slice z| for placing by z (default: a quarter of the
            median slice step, at least 0.01 mm).

    Returns:
        :class:`LidcConsensus`.

    Raises:
        LesionGeometryError: no slices, a z position that is not finite, or
            a pixel spacing that is not positive.
    """
    z = np.asarray(slice_z_mm, dtype=float)
    if z.ndim != 1 or len(z) == 0:
        raise LesionGeometryError("The series has no slices with a position; LIDC marks cannot be placed on it.")
    dy, dx = (float(v) for v in pixel_mm)
    if not (np.isfinite(dy) and np.isfinite(dx) and dy > 0 and dx > 0):
        raise LesionGeometryError(f"The pixel spacing must be two positive numbers in mm, got {pixel_mm!r}.")
    uids = {u: i for i, u in enumerate(slice_uids or []) if u}
    if not np.isfinite(z).all():
        raise LesionGeometryError("Some slices have no z position (ImagePositionPatient); the marks' distances "
                                  "(and, without UIDs, their slices) need it, so they cannot be placed on this series.")
    if z_tolerance_mm is None:
        steps = np.abs(np.diff(np.sort(z)))
        z_tolerance_mm = max(0.01, float(np.median(steps)) / 4) if len(steps) else 0.01
    placed: list[_Mark] = []
    outside = small = 0
    for m in marks:
        if not m.at_least_3mm:
            small += 1
            continue
        p = _place(m, uids, z, float(z_tolerance_mm), shape, (dy, dx))
        if p is None:
            outside += 1
        else:
            placed.append(p)
    clusters: list[list[_Mark]] = []
    for mark in sorted(placed, key=lambda m: -m.diameter):
        best, best_d = None, np.inf
        for cl in clusters:
            if any(o.reader == mark.reader for o in cl):
                continue
            d = min(float(np.linalg.norm(mark.centre_mm - o.centre_mm)) for o in cl)
            limit = min(mark.diameter / 2 + o.diameter / 2 for o in cl)
            if d < max(limit, 1e-6) and d < best_d:
                best, best_d = cl, d
        if best is None:
            clusters.append([mark])
        else:
            best.append(mark)
    nodules = []
    for cl in clusters:
        c = np.mean([m.centre for m in cl], axis=0)
        ratings = [m.malignancy for m in cl if m.malignancy is not None]
        nodules.append(ConsensusLesion(slice_position=float(c[0]), x=float(c[2]), y=float(c[1]),
                                       diameter_mm=float(np.mean([m.diameter for m in cl])),
                                       readers=tuple(sorted(m.reader for m in cl)),
                                       malignancy=float(np.mean(ratings)) if ratings else None))
    nodules.sort(key=lambda n: -n.diameter_mm)
    return LidcConsensus(lesions=tuple(n for n in nodules if len(n.readers) >= min_readers),
                         fewer_readers=tuple(n for n in nodules if len(n.readers) < min_readers),
                         marks_outside=outside, small_marks=small)
