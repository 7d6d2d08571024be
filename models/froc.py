"""FROC scoring of the nodule detector on annotated CT series (LIDC-IDRI XML, Lung-PET-CT-Dx boxes).

Reference lesions (:func:`lidc_reference`, :func:`voc_reference`):

* LIDC-IDRI: every reader's outlined mark (a nodule of 3 mm or more, ``unblindedReadNodule`` with
  contours) is placed in the series: its centre is the mean (slice, row, column) of its included
  outline pixels, its diameter the longest in-plane distance between two outline points over its
  slices (pylidc's ``Annotation.diameter`` convention), in mm. Marks of different readers belong
  to one nodule when their centres lie closer than the sum of their radii (LUNA16's merging rule,
  Setio et al., Med. Image Anal. 42:1-13, 2017), at most one mark per reader. A nodule counts
  when at least ``min_readers`` readers marked it (LUNA16: 3 of 4); marks on slices outside the
  series are ignored. The reference centre and diameter are the readers' means; the reference
  malignancy the mean of their ratings. Nodules marked by fewer readers are *irrelevant
  findings*: a detection on one is neither a hit nor a false positive (LUNA16's
  ``annotations_excluded``).
* Lung-PET-CT-Dx: one lesion per stack of boxes (boxes on consecutive slices that overlap in
  the plane); centre: the mean of the box centres, on the middle slice of the stack.

Hit rule: a detection hits a LIDC nodule when its centre lies within the nodule's radius
(reference diameter / 2; LUNA16), in patient mm; it hits a box stack when its slice to show is one
of the boxed slices and its centre (row, column) lies inside that slice's box.

FROC (:func:`froc`): all detections of all scans sorted by score; each threshold gives the
sensitivity (lesions hit at least once / lesions) against the false positives per scan
(detections hitting nothing, over the number of scans); a second hit on the same lesion and a hit
on an irrelevant finding count as neither. CPM (Niemeijer et al., IEEE TMI 30:215-228, 2011;
LUNA16's score): the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan,
each read at the largest threshold whose FP rate does not exceed the point (a curve that stops
short of a point keeps its last sensitivity there).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.annotations import Box, read_lidc_xml, read_voc_folder
from core.annotations import Nodule as ReaderMark
from core.nodules.types import Nodule
from core.nodules.volume import Geometry, geometry_of

#: False-positive rates of the CPM (LUNA16).
CPM_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: LUNA16's reader rule: a nodule counts when at least this many of the 4 readers marked it.
LUNA16_MIN_READERS = 3


@dataclass(frozen=True)
class Lesion:
    """One reference lesion of a series.

    Attributes:
        id: ``"<series name>#<n>"``.
        centre_voxel: (slice, row, column), fractional, in the series' index space.
        centre_mm: (x, y, z) patient mm, or None without Image Position / Orientation.
        diameter_mm: readers' mean diameter (LIDC) or the mean longest box side in mm (boxes).
        readers: how many readers marked it (LIDC); 0 for boxes.
        malignancy: readers' mean malignancy rating 1-5 (LIDC), or None.
        relevant: False for an irrelevant finding (fewer than ``min_readers`` readers).
        boxes: for box stacks, ``{slice index: (row0, col0, row1, col1)}`` inclusive; else empty.
    """

    id: str
    centre_voxel: tuple[float, float, float]
    centre_mm: tuple[float, float, float] | None
    diameter_mm: float
    readers: int = 0
    malignancy: float | None = None
    relevant: bool = True
    boxes: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)


# ------------------------------------------------------------------------------ reference
@dataclass
class _Mark:
    reader: int
    centre: np.ndarray  # (z, y, x) fractional index
    centre_mm: np.ndarray  # (z, y, x) in mm on the series grid (for distances)
    diameter: float
    malignancy: int | None


def _mark_geometry(mark: ReaderMark, index: dict[str, int], shape: tuple[int, int], g: Geometry) -> _Mark | None:
    """Centre and longest in-plane diameter of one reader's mark; None when none of its slices is in the series."""
    zs, ys, xs, weights, longest = [], [], [], [], 0.0
    dy, dx = g.pixel_mm
    for roi in mark.rois:
        if roi.sop_instance_uid not in index or not roi.inclusion:
            continue
        m = roi.mask(shape)
        rr, cc = np.nonzero(m)
        if rr.size == 0:
            continue
        zs.append(index[roi.sop_instance_uid])
        ys.append(rr.mean())
        xs.append(cc.mean())
        weights.append(rr.size)
        pts = roi.points.astype(np.float64) * np.array([dx, dy])
        if len(pts) > 1:
            diff = pts[:, None, :] - pts[None, :, :]
            longest = max(longest, float(np.sqrt((diff**2).sum(-1)).max()))
    if not zs:
        return None
    w = np.asarray(weights, dtype=np.float64)
    centre = np.array([np.average(zs, weights=w), np.average(ys, weights=w), np.average(xs, weights=w)])
    centre_mm = np.array([float(g.z_mm(centre[0])), centre[1] * dy, centre[2] * dx])
    return _Mark(mark.reader, centre, centre_mm, longest, mark.malignancy)


def lidc_reference(series: Any, xml_path: str | Path, name: str, min_readers: int = LUNA16_MIN_READERS) -> list[Lesion]:
    """Reference nodules of one LIDC-IDRI series (rule in the module docstring).

    Args:
        series: the ``core.imaging.Series`` the XML belongs to (with SOPInstanceUIDs).
        xml_path: its LIDC XML.
        name: label of the series (lesion ids ``"<name>#<n>"``).
        min_readers: readers needed for a nodule to count (LUNA16: 3).

    Returns:
        relevant and irrelevant lesions, relevant first, each group by decreasing diameter.

    Raises:
        core.annotations.AnnotationError: the XML cannot be read.
        NotAVolumeError: the series has no positions or spacing.
    """
    g = geometry_of(series)
    index = {s.sop_instance_uid: i for i, s in enumerate(series.slices) if s.sop_instance_uid}
    shape = series.slices[0].shape
    marks = [m for m in (_mark_geometry(n, index, shape, g) for n in read_lidc_xml(xml_path) if n.at_least_3mm) if m]
    # LUNA16 merging: closer than the sum of radii; one mark per reader in a cluster
    clusters: list[list[_Mark]] = []
    for mark in sorted(marks, key=lambda m: -m.diameter):
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
    lesions = []
    for cl in clusters:
        centre = np.mean([m.centre for m in cl], axis=0)
        ratings = [m.malignancy for m in cl if m.malignancy is not None]
        lesions.append(
            dict(
                centre=centre,
                diameter=float(np.mean([m.diameter for m in cl])),
                readers=len(cl),
                malignancy=float(np.mean(ratings)) if ratings else None,
            )
        )
    lesions.sort(key=lambda d: (d["readers"] < min_readers, -d["diameter"]))
    out = []
    for i, d in enumerate(lesions, start=1):
        c = d["centre"]
        mm = g.voxel_to_patient(c)
        out.append(
            Lesion(
                id=f"{name}#{i}",
                centre_voxel=(float(c[0]), float(c[1]), float(c[2])),
                centre_mm=mm,
                diameter_mm=round(d["diameter"], 2),
                readers=d["readers"],
                malignancy=d["malignancy"],
                relevant=d["readers"] >= min_readers,
            )
        )
    return out


def voc_reference(series: Any, boxes: dict[str, list[Box]], name: str) -> list[Lesion]:
    """Reference lesions of one series from Lung-PET-CT-Dx boxes: one per stack of boxes.

    Args:
        series: the ``core.imaging.Series`` (with SOPInstanceUIDs).
        boxes: ``core.annotations.read_voc_folder`` output (boxes of other series are ignored).
        name: label of the series.

    Returns:
        one :class:`Lesion` per stack (boxes on consecutive slices overlapping in the plane).
    """
    g = geometry_of(series)
    items = []
    for i, sl in enumerate(series.slices):
        for b in boxes.get(sl.sop_instance_uid or "", []):
            items.append((i, (b.y0, b.x0, b.y1, b.x1)))
    items.sort()
    stacks: list[list[tuple[int, tuple[int, int, int, int]]]] = []
    for z, box in items:
        for st in stacks:
            lz, lb = st[-1]
            if z - lz == 1 and not (box[2] < lb[0] or lb[2] < box[0] or box[3] < lb[1] or lb[3] < box[1]):
                st.append((z, box))
                break
        else:
            stacks.append([(z, box)])
    out = []
    dy, dx = g.pixel_mm
    for n, st in enumerate(stacks, start=1):
        zs = [z for z, _ in st]
        cy = float(np.mean([(b[0] + b[2]) / 2 for _, b in st]))
        cx = float(np.mean([(b[1] + b[3]) / 2 for _, b in st]))
        cz = float(zs[len(zs) // 2])
        side = float(np.mean([max((b[2] - b[0] + 1) * dy, (b[3] - b[1] + 1) * dx) for _, b in st]))
        out.append(
            Lesion(
                id=f"{name}#{n}",
                centre_voxel=(cz, cy, cx),
                centre_mm=g.voxel_to_patient((cz, cy, cx)),
                diameter_mm=round(side, 2),
                boxes={z: b for z, b in st},
            )
        )
    return out


# ---------------------------------------------------------------------------------- hits
def hits(nodule: Nodule, lesion: Lesion, geometry: Geometry) -> bool:
    """Does a detection hit a reference lesion (rule in the module docstring)?

    Args:
        nodule: the detection.
        lesion: the reference lesion of the same series.
        geometry: the series' :class:`Geometry` (distances in mm on its grid).
    """
    if lesion.boxes:
        box = lesion.boxes.get(int(nodule.slice_index))
        if box is None:
            return False
        _, y, x = nodule.centre_voxel
        return box[0] <= y <= box[2] and box[1] <= x <= box[3]
    dy, dx = geometry.pixel_mm
    a = np.array([float(geometry.z_mm(nodule.centre_voxel[0])), nodule.centre_voxel[1] * dy, nodule.centre_voxel[2] * dx])
    c = lesion.centre_voxel
    b = np.array([float(geometry.z_mm(c[0])), c[1] * dy, c[2] * dx])
    return float(np.linalg.norm(a - b)) <= lesion.diameter_mm / 2


@dataclass
class ScanResult:
    """Detections of one scan matched to its lesions.

    Attributes:
        name: series label.
        detections: the detector's output (rank order).
        lesions: reference lesions (relevant and irrelevant).
        matches: per detection, the id of the relevant lesion it hits, ``"irrelevant"`` when it
            hits only an irrelevant finding, or None (a false positive).
    """

    name: str
    detections: list[Nodule]
    lesions: list[Lesion]
    matches: list[str | None]


def match(name: str, detections: Sequence[Nodule], lesions: Sequence[Lesion], geometry: Geometry) -> ScanResult:
    """Match each detection to the first relevant lesion it hits (else an irrelevant one, else None)."""
    matches: list[str | None] = []
    for det in detections:
        found: str | None = None
        for les in lesions:
            if hits(det, les, geometry):
                if les.relevant:
                    found = les.id
                    break
                found = found or "irrelevant"
        matches.append(found)
    return ScanResult(name, list(detections), list(lesions), matches)


# ---------------------------------------------------------------------------------- FROC
def froc(scans: Sequence[ScanResult]) -> dict[str, Any]:
    """FROC curve and CPM over scans (rules in the module docstring).

    Args:
        scans: one :class:`ScanResult` per scan (a scan without lesions still counts in the FP rate).

    Returns:
        ``{"n_scans", "n_lesions", "curve": {"fp_per_scan": [...], "sensitivity": [...],
        "threshold": [...]}, "sensitivity_at": {rate: s}, "cpm"}``; curve points at every distinct
        score, in increasing FP rate. With no relevant lesion the sensitivities are None.
    """
    n_scans = len(scans)
    relevant = {les.id for s in scans for les in s.lesions if les.relevant}
    events = sorted(
        ((d.p_nodule, m) for s in scans for d, m in zip(s.detections, s.matches, strict=True)),
        key=lambda e: -e[0],
    )
    found: set[str] = set()
    fp = 0
    fps, sens, thr = [0.0], [0.0], [1.0]
    for score, group in itertools.groupby(events, key=lambda e: e[0]):
        for _, m in group:
            if m is None:
                fp += 1
            elif m != "irrelevant":
                found.add(m)
        fps.append(fp / max(n_scans, 1))
        sens.append(len(found) / len(relevant) if relevant else 0.0)
        thr.append(float(score))
    at = {}
    for rate in CPM_FP_RATES:
        ok = [s for f, s in zip(fps, sens, strict=True) if f <= rate + 1e-12]
        at[str(rate)] = ok[-1] if relevant else None
    cpm = float(np.mean([at[str(r)] for r in CPM_FP_RATES])) if relevant else None
    return {
        "n_scans": n_scans,
        "n_lesions": len(relevant),
        "curve": {"fp_per_scan": fps, "sensitivity": sens if relevant else [None] * len(sens), "threshold": thr},
        "sensitivity_at": at,
        "cpm": cpm,
    }


def lesion_table(scans: Sequence[ScanResult]) -> list[dict[str, Any]]:
    """Per relevant lesion: rank of its first hit in its scan (None when missed), the hit's score,
    diameter and malignancy against the readers'.

    Returns:
        list of dicts: ``lesion``, ``scan``, ``readers``, ``reference_diameter_mm``,
        ``reference_malignancy``, ``first_hit_rank``, ``p_nodule``, ``diameter_mm``,
        ``diameter_error_mm`` (detection - reference), ``malignancy``, ``top_ranked_on_lesion``.
    """
    rows = []
    for s in scans:
        for les in s.lesions:
            if not les.relevant:
                continue
            idx = next((i for i, m in enumerate(s.matches) if m == les.id), None)
            det = s.detections[idx] if idx is not None else None
            rows.append(
                {
                    "lesion": les.id,
                    "scan": s.name,
                    "readers": les.readers,
                    "reference_diameter_mm": les.diameter_mm,
                    "reference_malignancy": les.malignancy,
                    "first_hit_rank": det.rank if det else None,
                    "p_nodule": round(det.p_nodule, 4) if det else None,
                    "diameter_mm": round(det.diameter_mm, 2) if det else None,
                    "diameter_error_mm": round(det.diameter_mm - les.diameter_mm, 2) if det else None,
                    "malignancy": round(det.malignancy, 2) if det else None,
                    "top_ranked_on_lesion": bool(s.matches and s.matches[0] == les.id),
                }
            )
    return rows
