"""Assembly: decoded DICOM instances and pictures -> studies and series, slices in order.

DICOM instances are grouped by StudyInstanceUID and SeriesInstanceUID; the slices of a series are
ordered along the slice normal (``core.imaging.slice_position``), else by InstanceNumber, else by the
natural order of file names. All pictures of one upload form one study with one series per kind
(jpg, png). Assembly reads only plain values the decoders extracted, so it cannot fail on a damaged
element. In a series that mixes slice sizes, the files of the size most slices have form the series
and each other file is a :class:`FileProblem` of its own; with no such size the series is one problem.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.imaging.deid import base_name, study_key_for
from core.imaging.dicom import DicomInstance
from core.imaging.errors import MixedSeriesError
from core.imaging.types import METADATA_KEYS, FileProblem, Series, Slice, Study

__all__ = ["Picture", "assemble_dicom", "assemble_pictures", "content_hash", "natural_key", "order_slices"]


@dataclass
class Picture:
    """One decoded JPG/PNG of an upload (internal): label, sha256 hex, "jpg"/"png", slice, notes."""

    name: str
    digest: str
    kind: str
    slice: Slice
    notes: list[str]


def natural_key(name: str) -> list[Any]:
    """Sort key so that ``case (2)`` < ``case (10)``: digit runs compare as numbers, text case-insensitively
    (``re.split`` with a group alternates text and digits, so items at one position are of one type)."""
    return [int(t) if t.isdecimal() else t.lower() for t in re.split(r"(\d+)", name)]


def content_hash(digests: Iterable[str]) -> str:
    """sha256 hex of the sorted, concatenated per-file sha256 hex digests (independent of order)."""
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def order_slices(slices: list[Slice]) -> list[Slice]:
    """Order by position along the normal, else InstanceNumber, else natural file name order
    (ties broken by file name, then frame)."""

    def tail(s: Slice) -> tuple[Any, ...]:
        return (natural_key(s.source), s.frame or 0)

    if all(s.position_mm is not None for s in slices):
        return sorted(slices, key=lambda s: (s.position_mm, *tail(s)))
    if all(s.instance_number is not None for s in slices):
        return sorted(slices, key=lambda s: (s.instance_number, *tail(s)))
    return sorted(slices, key=tail)


def _z_spacing(slices: list[Slice], between: float | None) -> float | None:
    """Median step of slice positions in mm (steps under 1e-6 mm ignored), else SpacingBetweenSlices."""
    pos = [s.position_mm for s in slices]
    if len(pos) >= 2 and all(p is not None for p in pos):
        steps = np.abs(np.diff(np.asarray(pos, dtype=np.float64)))
        steps = steps[steps > 1e-6]
        if steps.size:
            return round(float(np.median(steps)), 6)
    return between


def _series_label(fields: dict[str, Any]) -> str:
    number = fields.get("series_number")
    return f"#{number}" if number is not None else "(no number)"


def _one_size(members: list[DicomInstance], problems: list[FileProblem]) -> list[DicomInstance]:
    """The files of one series that have its size: all of them when they agree; else those of the size
    most slices have, each other file becoming a problem of its own (a localizer or a damaged file
    must not cost the series); [] and one problem for the series when no size has the most slices."""
    counts = Counter(s.shape for m in members for s in m.slices)
    if len(counts) <= 1:
        return members
    label = _series_label(members[0].fields)
    (keep, n_keep), (_, n_next) = counts.most_common(2)
    if n_keep == n_next:
        problems.append(
            FileProblem(
                label,
                MixedSeriesError(
                    f"series {label} mixes slice sizes {sorted(counts)} with no size shared by most slices; a "
                    "series must have one size. Upload each size as its own series."
                ),
            )
        )
        return []
    kept = []
    for m in members:
        odd = next((s.shape for s in m.slices if s.shape != keep), None)
        if odd is None:
            kept.append(m)
            continue
        problems.append(
            FileProblem(
                m.name,
                MixedSeriesError(
                    f"‘{m.name}’ is {odd[1]} x {odd[0]} pixels while {n_keep} slices of series {label} are "
                    f"{keep[1]} x {keep[0]}: it was left out of the series, which was read without it. If it "
                    "belongs to another series (e.g. a localizer), export it with its own Series Instance UID."
                ),
            )
        )
    return kept


def assemble_dicom(instances: list[DicomInstance], problems: list[FileProblem]) -> list[Study]:
    """Group instances into studies and series.

    Args:
        instances: decoded files, in upload order.
        problems: list the series that cannot be assembled, and files left out of a series for their
            size, are appended to (MixedSeriesError).

    Returns:
        Studies in order of first appearance; series within a study ordered by SeriesNumber (series
        without a number last). Instances without a Study/Series Instance UID each form their own.
    """
    by_study: dict[str, dict[str, list[DicomInstance]]] = {}
    for inst in instances:
        study_uid = inst.study_uid or f"no-study:{inst.digest}"
        series_uid = inst.series_uid or f"no-series:{inst.digest}"
        by_study.setdefault(study_uid, {}).setdefault(series_uid, []).append(inst)
    studies = []
    for study_uid, series_map in by_study.items():
        study_key = study_key_for(study_uid)
        series_list: list[Series] = []
        digests: list[str] = []
        for series_uid, all_members in series_map.items():
            members = _one_size(all_members, problems)
            if not members:
                continue
            slices = [s for m in members for s in m.slices]
            shapes = sorted({s.shape for s in slices})
            fields = members[0].fields
            ordered = order_slices(slices)
            rows, cols = shapes[0]
            spacing = fields.get("pixel_spacing_mm")
            y_mm, x_mm = (spacing[0], spacing[1]) if spacing and len(spacing) >= 2 else (None, None)
            meta = {k: None for k in METADATA_KEYS}
            meta.update({k: v for k, v in fields.items() if k in METADATA_KEYS})
            meta.update(
                rows=rows,
                columns=cols,
                number_of_slices=len(ordered),
                notes=sorted({n for m in members for n in m.notes}),
            )
            modality = meta["modality"] or "OT"
            desc = meta["series_description"] or f"{modality} series {meta['series_number'] or ''}".strip()
            series_list.append(
                Series(
                    study_key=study_key,
                    series_key=study_key_for(series_uid),
                    modality=modality,
                    source_kind="dicom",
                    slices=ordered,
                    spacing_mm=(_z_spacing(ordered, meta["spacing_between_slices_mm"]), y_mm, x_mm),
                    metadata=meta,
                    hu_is_estimated=any(m.estimated for m in members),
                    description=desc,
                )
            )
            digests.extend(m.digest for m in members)
        if series_list:
            series_list.sort(
                key=lambda s: (s.metadata.get("series_number") is None, s.metadata.get("series_number") or 0)
            )
            studies.append(Study(study_key, series_list, content_hash(digests), "dicom"))
    return studies


def assemble_pictures(pictures: list[Picture]) -> list[Study]:
    """All pictures of one upload form one study; one series per kind (jpg, png), in natural name order.

    Returns:
        [] without pictures, else one Study keyed by the content hash of all pictures.
    """
    if not pictures:
        return []
    content = content_hash(p.digest for p in pictures)
    study_key = study_key_for(f"pictures:{content}")
    series_list = []
    for kind in ("jpg", "png"):
        members = sorted((p for p in pictures if p.kind == kind), key=lambda p: natural_key(base_name(p.name)))
        if not members:
            continue
        shapes = sorted({p.slice.shape for p in members})
        notes = sorted({n for p in members for n in p.notes} | {"HU estimated from 8-bit grey values"})
        rows, cols = shapes[0]
        meta = {k: None for k in METADATA_KEYS}
        meta.update(
            modality="OT",
            rows=rows if len(shapes) == 1 else None,
            columns=cols if len(shapes) == 1 else None,
            number_of_slices=len(members),
            notes=notes,
        )
        series_list.append(
            Series(
                study_key=study_key,
                series_key=study_key_for(f"pictures:{kind}:{content}"),
                modality="OT",
                source_kind=kind,
                slices=[p.slice for p in members],
                spacing_mm=(None, None, None),
                metadata=meta,
                hu_is_estimated=True,
                description=f"{len(members)} {kind.upper()} picture{'s' if len(members) != 1 else ''}",
            )
        )
    kind = series_list[0].source_kind if len(series_list) == 1 else "jpg"
    return [Study(study_key, series_list, content, kind)]
