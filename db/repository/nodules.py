"""Nodules: the nodule detector's findings on a series and the radiologist's per-nodule read.

Every function takes a ``Session`` and never commits or closes it: the caller (the reading
service) owns the transaction. Everything written is append-only (ORM events and database
triggers); a change is a new row.

How a reading service uses this module (one transaction per user action)::

    det = record_ai_nodules(s, inference_id=inf.id, model_id=card.id, model_sha256=card.sha256,
                            nodules=[n.to_dict() for n in found], latency_ms=ms, user=me)
    # or, when core.nodules refused the series (NotAVolumeError):
    det = record_ai_nodules(s, ..., nodules=[], refusal=str(exc), latency_ms=ms)
    rows = list_nodules(s, inf.id)                                  # findings table, rank order
    record_nodule_decision(s, nodule_id=rows[0].id, reader=me, decision="accept",
                           nodule_type="solid", corrected_diameter_mm=7.5, seconds_to_decision=t)
    added = record_added_nodule(s, detection_id=det.id, reader=me, centre_voxel=(z, y, x),
                                centre_mm=(x_mm, y_mm, z_mm), diameter_mm=6.0, outside_lung=False,
                                seconds_to_decision=t)
    withdraw_nodule_read(s, read_id=added.id, reader=me, seconds_to_decision=t2)   # undo
    states = nodule_states(s, det.id, me.id)      # what the reader's read says now, per nodule
    record_lungrads(s, detection_id=det.id, reader=me, category="3", suggested="3", seconds_to_decision=t)

Chains, as in ``reviews``: a reader's rows on one AI finding form one chain; each nodule they
add starts a chain of its own; their Lung-RADS categories on one detection form one chain.
Each later row names the row it replaces (``supersedes_id``, unique); the current row of a chain
is the one no row supersedes. :func:`record_nodule_decision` and :func:`record_lungrads` find
the current row themselves; an added nodule is changed by passing its current row to
:func:`record_added_nodule` (``supersedes_id``) and taken back by :func:`withdraw_nodule_read`.
Two readers never share a chain, so they may disagree on the same finding; both reads are kept.

A re-analysis with a new detector version is a new detection (and usually a new inference): the
old findings and every read of them stay, against the old detection.

Errors: :class:`~db.repository.common.ValidationError` (bad value; nothing written),
:class:`~db.repository.common.NotFoundError` (no such row), :class:`~db.repository.common.PermissionDenied`
(only active radiologists and admins read nodules). Each write records its audit event
("inference" for a detection, "review" for reads).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from core.domain import LungRads, NoduleDecision, NoduleType
from db.repository.common import (
    REVIEWER_ROLES,
    NotFoundError,
    ValidationError,
    _choice,
    _hexdigest,
    _real,
    _require_role,
    _user,
    _whole,
    log_event,
)
from db.repository.studies import get_series
from db.schema import AiNodule, AuditAction, Inference, LungRadsRead, NoduleDetection, NoduleRead, User

__all__ = [
    "MAX_NODULES_PER_DETECTION", "MODEL_SUMMARY_COLUMNS", "SERIES_SUMMARY_COLUMNS", "NoduleState",
    "current_lungrads", "current_nodule_reads", "current_nodule_reads_by_reader", "find_detection",
    "get_detection", "latest_detection", "list_nodules", "nodule_model_summary", "nodule_read_history",
    "nodule_series_summary", "nodule_states", "record_added_nodule", "record_ai_nodules", "record_lungrads",
    "record_nodule_decision", "withdraw_nodule_read",
]

#: Most findings one detection may hold (a sanity bound far above a detector's top-k output).
MAX_NODULES_PER_DETECTION = 1000

#: Columns of :func:`nodule_series_summary`.
SERIES_SUMMARY_COLUMNS: tuple[str, ...] = (
    "study_id", "series_id", "inference_id", "detection_id", "model_id", "refusal", "ai_findings", "reader_id",
    "reader", "accepted", "corrected", "rejected", "undecided", "added", "added_outside_lung", "lungrads",
    "lungrads_suggested",
)
#: Columns of :func:`nodule_model_summary`.
MODEL_SUMMARY_COLUMNS: tuple[str, ...] = (
    "model_id", "reader_id", "reader", "series_read", "ai_findings_shown", "decided", "accepted", "corrected",
    "rejected", "fraction_accepted", "added", "added_per_series",
)
ALL_READERS = "all readers"


# ------------------------------------------------------------------------------------ checks
def _nodule_fields(item: Any, position: int) -> dict[str, Any]:
    """A ``core.nodules.Nodule`` (or its ``to_dict()``) as checked plain values for an AiNodule row."""
    if hasattr(item, "to_dict"):
        item = item.to_dict()
    if not isinstance(item, Mapping):
        raise ValidationError(f"Nodule {position} must be a core.nodules.Nodule or its to_dict(), got {item!r}.")
    missing = [k for k in ("rank", "centre_voxel", "centre_mm", "diameter_mm", "p_nodule", "malignancy",
                           "lobulation", "spiculation", "slice_index") if k not in item]
    if missing:
        raise ValidationError(f"Nodule {position} lacks {', '.join(missing)} (see core.nodules.Nodule).")
    what = f"Nodule {position}"
    voxel = _triple(item["centre_voxel"], f"{what} centre_voxel (z, y, x)", whole=True)
    mm = _triple(item["centre_mm"], f"{what} centre_mm (x, y, z)", whole=False)
    slice_index = _whole(item["slice_index"], f"{what} slice_index", 0, 100_000_000)
    if slice_index != voxel[0]:
        raise ValidationError(f"{what}: slice_index {slice_index} is not centre_voxel z {voxel[0]} "
                              "(the slice shown is the one through the centre).")
    is_mass = item.get("is_mass", False)
    if not isinstance(is_mass, bool | np.bool_):
        raise ValidationError(f"{what}: is_mass must be True or False, got {is_mass!r}.")
    return dict(
        rank=_whole(item["rank"], f"{what} rank", 1, MAX_NODULES_PER_DETECTION),
        voxel_z=voxel[0], voxel_y=voxel[1], voxel_x=voxel[2], x_mm=mm[0], y_mm=mm[1], z_mm=mm[2],
        diameter_mm=_positive_mm(item["diameter_mm"], f"{what} diameter_mm"),
        p_nodule=_real(item["p_nodule"], f"{what} p_nodule", 0.0, 1.0),
        malignancy=_real(item["malignancy"], f"{what} malignancy", 1.0, 5.0),
        lobulation=_real(item["lobulation"], f"{what} lobulation", 1.0, 5.0),
        spiculation=_real(item["spiculation"], f"{what} spiculation", 1.0, 5.0),
        slice_index=slice_index, is_mass=bool(is_mass),
    )


def _triple(value: Any, what: str, *, whole: bool) -> tuple:
    try:
        items = list(value)
    except TypeError:
        raise ValidationError(f"{what} must be three numbers, got {value!r}.") from None
    if len(items) != 3:
        raise ValidationError(f"{what} must be three numbers, got {value!r}.")
    if whole:
        return tuple(_whole(v, what, 0, 100_000_000) for v in items)
    return tuple(_real(v, what) for v in items)


def _positive_mm(value: Any, what: str) -> float:
    mm = _real(value, what)
    if not mm > 0:
        raise ValidationError(f"{what} must be a number of mm above 0, got {value!r}.")
    return mm


def _reader(s: Session, reader: User | int) -> User:
    user = _user(s, reader, "reader")
    _require_role(user, REVIEWER_ROLES, "read nodules")
    return user


def _optional_type(value: Any) -> str | None:
    return None if value in (None, "") else _choice(value, NoduleType, "nodule type")


def _lungrads(value: Any, what: str) -> str:
    text = str(value or "").strip().upper()
    try:
        return LungRads(text).value
    except ValueError:
        allowed = ", ".join(c.value for c in LungRads)
        raise ValidationError(f"Unknown {what} {value!r}: choose one of {allowed}.") from None


def _not_superseded(model):
    """SQL condition: the row of ``model`` (NoduleRead or LungRadsRead) is not superseded."""
    newer = aliased(model)
    return ~select(newer.id).where(newer.supersedes_id == model.id).exists()


# ------------------------------------------------------------------------------- detections
def get_detection(s: Session, detection_id: int) -> NoduleDetection:
    """The detection with this id. Raises NotFoundError."""
    row = s.get(NoduleDetection, int(detection_id))
    if row is None:
        raise NotFoundError(f"There is no nodule detection with id {detection_id}; run the nodule detector first.")
    return row


def find_detection(s: Session, inference_id: int, model_id: str,
                   model_sha256: str | None = None) -> NoduleDetection | None:
    """The run of detector ``model_id`` (of that sha256, or the newest of any) on this inference, or None."""
    q = select(NoduleDetection).where(NoduleDetection.inference_id == int(inference_id),
                                      NoduleDetection.model_id == str(model_id))
    if model_sha256 is not None:
        q = q.where(NoduleDetection.model_sha256 == str(model_sha256).strip().lower())
    return s.scalar(q.order_by(NoduleDetection.id.desc()).limit(1))


def latest_detection(s: Session, series_id: int, model_id: str | None = None) -> NoduleDetection | None:
    """The newest detection on a series (of detector ``model_id``, or of any when None), or None."""
    q = select(NoduleDetection).where(NoduleDetection.series_id == int(series_id))
    if model_id is not None:
        q = q.where(NoduleDetection.model_id == str(model_id))
    return s.scalar(q.order_by(NoduleDetection.id.desc()).limit(1))


def record_ai_nodules(s: Session, *, inference_id: int, model_id: str, model_sha256: str,
                      nodules: Sequence[Any], latency_ms: float, operating_point: float | None = None,
                      refusal: str = "", user: User | int | None = None) -> NoduleDetection:
    """Record one nodule-detector run on the series of an inference, with its findings. Idempotent.

    Recording the same run again (same inference, ``model_id`` and ``model_sha256``) returns the
    stored detection and writes nothing, provided the findings are the same (same ranks, centre
    voxels and diameters within 1e-6 mm, same refusal); the findings of a run are written once.
    A new detector version (another sha256) is a new detection; earlier ones stay with their reads.

    Args:
        inference_id: the analysis (slice-classifier inference) of the series the detector ran
            on; the detection belongs to its series and study.
        model_id: the detector's registry id (1-128 characters). model_sha256: sha256 hex (64
            characters) of its weights file.
        nodules: the findings, each a ``core.nodules.Nodule`` or its ``to_dict()``: rank 1..n
            (each once), centre_voxel (z, y, x) whole numbers >= 0 with z below the series'
            n_slices, centre_mm (x, y, z) patient LPS mm, diameter_mm > 0, p_nodule in [0, 1],
            malignancy, lobulation, spiculation in [1, 5], slice_index == centre_voxel z, is_mass.
            Empty when the detector found nothing above its operating point (or refused).
            At most :data:`MAX_NODULES_PER_DETECTION`.
        latency_ms: wall time of the detection, >= 0.
        operating_point: the p(nodule) threshold the findings were cut at, in [0, 1], or None.
        refusal: the detector's one-line reason for refusing the series
            (``str(core.nodules.NotAVolumeError)``), "" when it ran; a refusal has no findings.
        user: who ran it (optional; recorded as creator and in the audit event).

    Returns:
        The NoduleDetection (flushed); its findings are ``list_nodules(s, inference_id)`` /
        ``detection.nodules`` (rank order). An "inference" audit event is recorded for a new one.

    Raises:
        NotFoundError: no such inference or user. ValidationError: a value is malformed, ranks
            are not 1..n, a centre lies beyond the series' slices, a refusal comes with findings,
            or this run was recorded before with other findings.
    """
    inference = s.get(Inference, int(inference_id))
    if inference is None:
        raise NotFoundError(f"There is no inference with id {inference_id}; analyse the series first.")
    model_id = str(model_id or "").strip()
    if not 1 <= len(model_id) <= 128:
        raise ValidationError("The detector's model id must have 1-128 characters (see the model registry).")
    sha = _hexdigest(model_sha256, "Detector sha256", (64,))
    refusal = str(refusal or "").strip()
    items = list(nodules)
    if refusal and items:
        raise ValidationError("A refused series has no findings: pass either nodules or a refusal, not both.")
    if len(items) > MAX_NODULES_PER_DETECTION:
        raise ValidationError(f"{len(items)} findings is more than one detection may hold "
                              f"({MAX_NODULES_PER_DETECTION}); keep the detector's top candidates.")
    rows = [_nodule_fields(item, i) for i, item in enumerate(items, start=1)]
    ranks = sorted(r["rank"] for r in rows)
    if ranks != list(range(1, len(rows) + 1)):
        raise ValidationError(f"Ranks must be 1..{len(rows)}, each once; got {ranks}.")
    series = get_series(s, inference.series_id)
    beyond = [r["rank"] for r in rows if r["slice_index"] >= series.n_slices]
    if beyond:
        raise ValidationError(f"Findings of rank {beyond} lie beyond the series' {series.n_slices} slices; "
                              "the detector ran on another series.")
    latency = _real(latency_ms, "Latency (ms)", 0.0)
    point = None if operating_point is None else _real(operating_point, "Operating point", 0.0, 1.0)
    actor = _user(s, user, "user") if user is not None else None

    existing = find_detection(s, inference.id, model_id, sha)
    if existing is not None:
        stored = {n.rank: n for n in list_nodules(s, inference.id, detection_id=existing.id)}
        same = existing.refusal == refusal and len(stored) == len(rows) and all(
            r["rank"] in stored and stored[r["rank"]].centre_voxel == (r["voxel_z"], r["voxel_y"], r["voxel_x"])
            and math.isclose(stored[r["rank"]].diameter_mm, r["diameter_mm"], abs_tol=1e-6) for r in rows)
        if not same:
            raise ValidationError(
                f"Detector {model_id} ({sha[:12]}) on inference {inference.id} was recorded before with other "
                f"findings (detection {existing.id}); a run's findings are written once.")
        return existing

    detection = NoduleDetection(study_id=inference.study_id, series_id=inference.series_id, inference_id=inference.id,
                                model_id=model_id, model_sha256=sha, operating_point=point, n_nodules=len(rows),
                                refusal=refusal, latency_ms=latency, created_by=actor.id if actor else None)
    s.add(detection)
    s.flush()
    # Rows are linked by id, not through detection.nodules: appending to that collection would
    # mark the (append-only) detection dirty.
    s.add_all(AiNodule(detection_id=detection.id, inference_id=inference.id, series_id=inference.series_id,
                       model_id=model_id, model_sha256=sha, **r) for r in sorted(rows, key=lambda r: r["rank"]))
    s.flush()
    s.expire(detection, ["nodules"])
    outcome = f"refused: {refusal[:80]}" if refusal else f"{len(rows)} findings"
    log_event(s, user_id=actor.id if actor else None, action=AuditAction.INFERENCE, object_type="nodule_detection",
              object_id=detection.id, detail=f"study {inference.study_id}, series {inference.series_id}, "
              f"inference {inference.id}, detector {model_id}, {outcome}")
    return detection


def list_nodules(s: Session, inference_id: int, *, model_id: str | None = None,
                 detection_id: int | None = None) -> list[AiNodule]:
    """The AI findings of one detection on an inference, rank order (1 first).

    Which detection: ``detection_id`` when given (it must belong to the inference); else the
    newest detection on the inference of detector ``model_id`` (of any detector when None).

    Returns:
        AiNodule rows (empty when the detector found nothing, refused, or has not run: tell these
        apart with :func:`find_detection` and ``NoduleDetection.refusal``).

    Raises:
        ValidationError: ``detection_id`` belongs to another inference.
    """
    if detection_id is not None:
        detection = get_detection(s, detection_id)
        if detection.inference_id != int(inference_id):
            raise ValidationError(f"Detection {detection.id} belongs to inference {detection.inference_id}, "
                                  f"not {inference_id}.")
    else:
        q = select(NoduleDetection).where(NoduleDetection.inference_id == int(inference_id))
        if model_id is not None:
            q = q.where(NoduleDetection.model_id == str(model_id))
        detection = s.scalar(q.order_by(NoduleDetection.id.desc()).limit(1))
        if detection is None:
            return []
    return list(s.scalars(select(AiNodule).where(AiNodule.detection_id == detection.id).order_by(AiNodule.rank)))


# ------------------------------------------------------------------------------------ reads
def _current_read_of_nodule(s: Session, nodule_id: int, reader_id: int) -> NoduleRead | None:
    return s.scalar(select(NoduleRead).where(NoduleRead.nodule_id == int(nodule_id),
                                             NoduleRead.reader_id == int(reader_id), _not_superseded(NoduleRead))
                    .order_by(NoduleRead.id.desc()).limit(1))


def _is_current(s: Session, read: NoduleRead) -> bool:
    return s.scalar(select(NoduleRead.id).where(NoduleRead.supersedes_id == read.id)) is None


def record_nodule_decision(s: Session, *, nodule_id: int, reader: User | int, decision: NoduleDecision | str,
                           seconds_to_decision: float, nodule_type: NoduleType | str | None = None,
                           corrected_diameter_mm: float | None = None) -> NoduleRead:
    """Record a reader's accept or reject of one AI finding; supersedes their current row on it.

    Accept, reject, correct and re-decide are all this call: the reader's current row on the
    finding (if any, a withdrawal included) is superseded by the new one and stays unchanged.
    Another reader's rows on the same finding are their own chain and are not touched.

    Args:
        nodule_id: the AI finding (``AiNodule.id``).
        reader: an active radiologist or admin.
        decision: "accept" or "reject".
        seconds_to_decision: seconds from the opening of the case to this decision, >= 0.
        nodule_type: with "accept" only: "solid", "part-solid", "ground-glass", "calcified" or None.
        corrected_diameter_mm: with "accept" only: the reader's diameter in mm (> 0), or None when
            the AI's ``diameter_mm`` stands.

    Returns:
        The new NoduleRead (flushed). A "review" audit event is recorded.

    Raises:
        ValidationError: unknown decision or type; a type or diameter with "reject"; a bad
            number. NotFoundError: no such finding or user. PermissionDenied: not an active
            radiologist or admin.
    """
    decision = _choice(decision, NoduleDecision, "nodule decision")
    if decision not in (NoduleDecision.ACCEPT, NoduleDecision.REJECT):
        raise ValidationError(f"A decision on an AI finding is accept or reject, got {decision!r}; "
                              "use record_added_nodule or withdraw_nodule_read for the others.")
    kind = _optional_type(nodule_type)
    diameter = None if corrected_diameter_mm is None else _positive_mm(corrected_diameter_mm,
                                                                       "Corrected diameter (mm)")
    if decision == NoduleDecision.REJECT and (kind is not None or diameter is not None):
        raise ValidationError("A rejected finding has no type and no diameter; accept it to give them.")
    seconds = _real(seconds_to_decision, "Seconds to decision", 0.0)
    user = _reader(s, reader)
    nodule = s.get(AiNodule, int(nodule_id))
    if nodule is None:
        raise NotFoundError(f"There is no AI nodule finding with id {nodule_id}; reload the findings.")
    previous = _current_read_of_nodule(s, nodule.id, user.id)
    row = NoduleRead(detection_id=nodule.detection_id, series_id=nodule.series_id, nodule_id=nodule.id,
                     reader_id=user.id, decision=decision, nodule_type=kind, diameter_mm=diameter,
                     seconds_to_decision=seconds, supersedes_id=previous.id if previous else None)
    s.add(row)
    s.flush()
    log_event(s, user_id=user.id, action=AuditAction.REVIEW, object_type="nodule_read", object_id=row.id,
              detail=f"series {nodule.series_id}, detection {nodule.detection_id}, finding rank {nodule.rank}: "
              f"{decision}" + (f", supersedes nodule read {previous.id}" if previous else ""))
    return row


def record_added_nodule(s: Session, *, detection_id: int, reader: User | int, centre_voxel: Sequence[int],
                        centre_mm: Sequence[float], diameter_mm: float, outside_lung: bool,
                        seconds_to_decision: float, nodule_type: NoduleType | str | None = None,
                        slice_index: int | None = None, supersedes_id: int | None = None) -> NoduleRead:
    """Record a nodule the reader found that the AI did not list (or change one they added).

    Args:
        detection_id: the detection (AI result) the reader was shown when adding it; its series
            is the nodule's.
        reader: an active radiologist or admin.
        centre_voxel: (z, y, x) whole voxel indices >= 0 into the series' HU volume; z below the
            series' n_slices.
        centre_mm: (x, y, z) DICOM patient coordinates (LPS, mm) of the same point.
        diameter_mm: the reader's diameter in mm, > 0.
        outside_lung: True when the centre lies outside the lung-field mask (``core.lungs``): the
            nodule is kept and flagged, not refused.
        seconds_to_decision: seconds from the opening of the case, >= 0.
        nodule_type: "solid", "part-solid", "ground-glass", "calcified" or None.
        slice_index: optional check; must equal centre_voxel z (the slice through the centre).
        supersedes_id: to change a nodule the reader added before: its CURRENT row (an "add" of
            the same reader on the same detection); the new row replaces it.

    Returns:
        The new NoduleRead (decision "add", flushed). A "review" audit event is recorded.

    Raises:
        ValidationError: a value is malformed, the centre lies beyond the series' slices, or
            ``supersedes_id`` is not the reader's current "add" row on this detection.
        NotFoundError: no such detection, row or user. PermissionDenied: not a reader.
    """
    voxel = _triple(centre_voxel, "Centre voxel (z, y, x)", whole=True)
    mm = _triple(centre_mm, "Centre (x, y, z) in mm", whole=False)
    if slice_index is not None and _whole(slice_index, "Slice index", 0, 100_000_000) != voxel[0]:
        raise ValidationError(f"Slice index {slice_index} is not the centre's z {voxel[0]}.")
    diameter = _positive_mm(diameter_mm, "Diameter (mm)")
    if not isinstance(outside_lung, bool | np.bool_):
        raise ValidationError(f"outside_lung must be True or False, got {outside_lung!r}.")
    kind = _optional_type(nodule_type)
    seconds = _real(seconds_to_decision, "Seconds to decision", 0.0)
    user = _reader(s, reader)
    detection = get_detection(s, detection_id)
    series = get_series(s, detection.series_id)
    if voxel[0] >= series.n_slices:
        raise ValidationError(f"Slice {voxel[0]} lies beyond the series' {series.n_slices} slices (0-based).")
    previous = None
    if supersedes_id is not None:
        previous = s.get(NoduleRead, int(supersedes_id))
        if previous is None:
            raise NotFoundError(f"There is no nodule read with id {supersedes_id}.")
        if (previous.decision != NoduleDecision.ADD or previous.reader_id != user.id
                or previous.detection_id != detection.id or not _is_current(s, previous)):
            raise ValidationError(f"Nodule read {previous.id} is not {user.username}'s current added nodule on "
                                  f"detection {detection.id}; reload the read and change its current row.")
    row = NoduleRead(detection_id=detection.id, series_id=detection.series_id, nodule_id=None, reader_id=user.id,
                     decision=NoduleDecision.ADD.value, nodule_type=kind, diameter_mm=diameter, slice_index=voxel[0],
                     voxel_z=voxel[0], voxel_y=voxel[1], voxel_x=voxel[2], x_mm=mm[0], y_mm=mm[1], z_mm=mm[2],
                     outside_lung=bool(outside_lung), seconds_to_decision=seconds,
                     supersedes_id=previous.id if previous else None)
    s.add(row)
    s.flush()
    log_event(s, user_id=user.id, action=AuditAction.REVIEW, object_type="nodule_read", object_id=row.id,
              detail=f"series {detection.series_id}, detection {detection.id}: added nodule at slice {voxel[0]}"
              + (" outside the lung mask" if outside_lung else "")
              + (f", supersedes nodule read {previous.id}" if previous else ""))
    return row


def withdraw_nodule_read(s: Session, *, read_id: int, reader: User | int, seconds_to_decision: float) -> NoduleRead:
    """Take back a reader's current row: an AI finding becomes undecided, an added nodule is removed.

    Args:
        read_id: the reader's CURRENT row (accept, reject or add) to take back.
        reader: the same reader (active radiologist or admin).
        seconds_to_decision: seconds from the opening of the case, >= 0.

    Returns:
        The new NoduleRead (decision "withdraw", superseding ``read_id``; flushed).

    Raises:
        NotFoundError: no such row or user. ValidationError: the row is another reader's, is
            superseded already, or is itself a withdrawal. PermissionDenied: not a reader.
    """
    seconds = _real(seconds_to_decision, "Seconds to decision", 0.0)
    user = _reader(s, reader)
    target = s.get(NoduleRead, int(read_id))
    if target is None:
        raise NotFoundError(f"There is no nodule read with id {read_id}.")
    if target.reader_id != user.id:
        raise ValidationError(f"Nodule read {target.id} is another reader's; readers withdraw only their own.")
    if target.decision == NoduleDecision.WITHDRAW or not _is_current(s, target):
        raise ValidationError(f"Nodule read {target.id} is not a current decision; reload the read.")
    row = NoduleRead(detection_id=target.detection_id, series_id=target.series_id, nodule_id=target.nodule_id,
                     reader_id=user.id, decision=NoduleDecision.WITHDRAW.value, seconds_to_decision=seconds,
                     supersedes_id=target.id)
    s.add(row)
    s.flush()
    log_event(s, user_id=user.id, action=AuditAction.REVIEW, object_type="nodule_read", object_id=row.id,
              detail=f"series {target.series_id}, detection {target.detection_id}: withdraws nodule read {target.id}")
    return row


def current_nodule_reads(s: Session, series_id: int, *, reader_id: int | None = None,
                         detection_id: int | None = None, include_withdrawn: bool = False) -> list[NoduleRead]:
    """The current (not superseded) rows of every chain on a series, by reader, then finding rank, then id.

    Args:
        series_id: the series. reader_id: only this reader's. detection_id: only this detection's.
        include_withdrawn: also the current "withdraw" rows (findings made undecided again,
            added nodules removed); default False: only accept, reject and add rows.

    Returns:
        NoduleRead rows: at most one per (reader, AI finding) and one per added nodule.
    """
    q = (select(NoduleRead).outerjoin(AiNodule, AiNodule.id == NoduleRead.nodule_id)
         .where(NoduleRead.series_id == int(series_id), _not_superseded(NoduleRead)))
    if reader_id is not None:
        q = q.where(NoduleRead.reader_id == int(reader_id))
    if detection_id is not None:
        q = q.where(NoduleRead.detection_id == int(detection_id))
    if not include_withdrawn:
        q = q.where(NoduleRead.decision != NoduleDecision.WITHDRAW.value)
    q = q.order_by(NoduleRead.reader_id, NoduleRead.detection_id, AiNodule.rank.is_(None), AiNodule.rank,
                   NoduleRead.id)
    return list(s.scalars(q))


def current_nodule_reads_by_reader(s: Session, series_id: int, *,
                                   detection_id: int | None = None) -> dict[int, list[NoduleRead]]:
    """:func:`current_nodule_reads` of a series grouped by reader id (readers in id order)."""
    out: dict[int, list[NoduleRead]] = {}
    for row in current_nodule_reads(s, series_id, detection_id=detection_id):
        out.setdefault(row.reader_id, []).append(row)
    return out


def nodule_read_history(s: Session, series_id: int, reader_id: int | None = None) -> list[NoduleRead]:
    """Every nodule read of a series, superseded and withdrawn rows included, oldest first."""
    q = select(NoduleRead).where(NoduleRead.series_id == int(series_id))
    if reader_id is not None:
        q = q.where(NoduleRead.reader_id == int(reader_id))
    return list(s.scalars(q.order_by(NoduleRead.id)))


@dataclass(frozen=True)
class NoduleState:
    """One nodule as a reader's current read has it: an AI finding (decided or not) or an added one.

    Attributes:
        source: "ai" (a finding of the detection) or "reader" (added by the reader).
        nodule_id: the AI finding's id; None for an added nodule.
        read_id: the reader's current row on it; None for an undecided AI finding.
        rank: the AI rank; None for an added nodule.
        decision: "accept", "reject" or "add"; None for an undecided AI finding.
        status: "accepted", "corrected" (accepted with the reader's diameter), "rejected",
            "undecided" or "added" (``core.export.ReportedNodule.status``).
        slice_index: the slice through the centre. centre_voxel: (z, y, x). centre_mm: (x, y, z)
            patient LPS mm.
        diameter_mm: the diameter that stands: the reader's when they gave one, else the AI's.
        ai_diameter_mm: the AI's diameter (None for an added nodule).
        nodule_type: the reader's type or None. outside_lung: added nodules' flag (None for AI).
        p_nodule, malignancy: the AI's estimates (None for an added nodule).
        tracking_key: stable across changes of the read: "nodule <AiNodule id>" for an AI
            finding, "added <id of the first row of its chain>" for an added nodule (for
            ``core.export.ReportedNodule.tracking_key``, from which the SR's tracking UID comes).
    """

    source: str
    nodule_id: int | None
    read_id: int | None
    rank: int | None
    decision: str | None
    status: str
    slice_index: int
    centre_voxel: tuple[int, int, int]
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    ai_diameter_mm: float | None
    nodule_type: str | None
    outside_lung: bool | None
    p_nodule: float | None
    malignancy: float | None
    tracking_key: str


def _chain_root(s: Session, read: NoduleRead) -> int:
    """The id of the first row of the chain ``read`` ends."""
    root = read
    while root.supersedes_id is not None:
        root = s.get(NoduleRead, root.supersedes_id)
    return root.id


def nodule_states(s: Session, detection_id: int, reader_id: int) -> list[NoduleState]:
    """What one reader's current read says about every nodule of one detection.

    For the findings table, the Lung-RADS suggestion (``core.lungrads.ReadNodule(decision,
    diameter_mm, nodule_type)`` of each state) and the SR (``core.export.ReportedNodule``; the
    builder leaves out "rejected" and "undecided").

    Returns:
        Every AI finding in rank order (undecided ones too), then the reader's current added
        nodules in the order added.

    Raises:
        NotFoundError: no such detection.
    """
    detection = get_detection(s, detection_id)
    reads = current_nodule_reads(s, detection.series_id, reader_id=int(reader_id), detection_id=detection.id)
    by_nodule = {r.nodule_id: r for r in reads if r.nodule_id is not None}
    out: list[NoduleState] = []
    for n in s.scalars(select(AiNodule).where(AiNodule.detection_id == detection.id).order_by(AiNodule.rank)):
        read = by_nodule.get(n.id)
        if read is None:
            status, diameter = "undecided", n.diameter_mm
        elif read.decision == NoduleDecision.REJECT:
            status, diameter = "rejected", n.diameter_mm
        else:
            status = "corrected" if read.diameter_mm is not None else "accepted"
            diameter = read.diameter_mm if read.diameter_mm is not None else n.diameter_mm
        out.append(NoduleState(
            source="ai", nodule_id=n.id, read_id=read.id if read else None, rank=n.rank,
            decision=read.decision if read else None, status=status, slice_index=n.slice_index,
            centre_voxel=n.centre_voxel, centre_mm=n.centre_mm, diameter_mm=diameter, ai_diameter_mm=n.diameter_mm,
            nodule_type=read.nodule_type if read else None, outside_lung=None, p_nodule=n.p_nodule,
            malignancy=n.malignancy, tracking_key=f"nodule {n.id}"))
    for r in reads:
        if r.nodule_id is None:
            out.append(NoduleState(
                source="reader", nodule_id=None, read_id=r.id, rank=None, decision=r.decision, status="added",
                slice_index=r.slice_index, centre_voxel=r.centre_voxel, centre_mm=r.centre_mm,
                diameter_mm=r.diameter_mm, ai_diameter_mm=None, nodule_type=r.nodule_type,
                outside_lung=r.outside_lung, p_nodule=None, malignancy=None,
                tracking_key=f"added {_chain_root(s, r)}"))
    return out


# --------------------------------------------------------------------------------- Lung-RADS
def current_lungrads(s: Session, detection_id: int, reader_id: int) -> LungRadsRead | None:
    """The reader's current Lung-RADS category on a detection, or None."""
    return s.scalar(select(LungRadsRead).where(LungRadsRead.detection_id == int(detection_id),
                                               LungRadsRead.reader_id == int(reader_id),
                                               _not_superseded(LungRadsRead))
                    .order_by(LungRadsRead.id.desc()).limit(1))


def record_lungrads(s: Session, *, detection_id: int, reader: User | int, category: LungRads | str,
                    seconds_to_decision: float, suggested: LungRads | str | None = None) -> LungRadsRead:
    """Record the reader's own Lung-RADS category for a detection's series; supersedes their current one.

    Args:
        detection_id: the detection whose nodules the category rests on.
        reader: an active radiologist or admin.
        category: a ``core.config.LungRads`` value: "0", "1", "2", "3", "4A", "4B", "4X" (case-insensitive).
        seconds_to_decision: seconds from the opening of the case, >= 0.
        suggested: the category ``core.lungrads.suggest_lungrads`` showed, or None.

    Returns:
        The new LungRadsRead (flushed). A "review" audit event is recorded.

    Raises:
        ValidationError: unknown category or bad number. NotFoundError: no such detection or
            user. PermissionDenied: not an active radiologist or admin.
    """
    category = _lungrads(category, "Lung-RADS category")
    suggested = None if suggested in (None, "") else _lungrads(suggested, "suggested Lung-RADS category")
    seconds = _real(seconds_to_decision, "Seconds to decision", 0.0)
    user = _reader(s, reader)
    detection = get_detection(s, detection_id)
    previous = current_lungrads(s, detection.id, user.id)
    row = LungRadsRead(detection_id=detection.id, series_id=detection.series_id, reader_id=user.id,
                       category=category, suggested=suggested, seconds_to_decision=seconds,
                       supersedes_id=previous.id if previous else None)
    s.add(row)
    s.flush()
    log_event(s, user_id=user.id, action=AuditAction.REVIEW, object_type="lungrads_read", object_id=row.id,
              detail=f"series {detection.series_id}, detection {detection.id}: Lung-RADS {category}"
              + (f" (suggested {suggested})" if suggested else "")
              + (f", supersedes {previous.id}" if previous else ""))
    return row


# --------------------------------------------------------------------------------- summaries
def _current_frames(s: Session, *, series_id: int | None, reader_id: int | None):
    """(detections, current nodule reads, current Lung-RADS reads) as DataFrames."""
    dq = select(NoduleDetection.id.label("detection_id"), NoduleDetection.study_id, NoduleDetection.series_id,
                NoduleDetection.inference_id, NoduleDetection.model_id, NoduleDetection.refusal,
                NoduleDetection.n_nodules.label("ai_findings"))
    rq = (select(NoduleRead.detection_id, NoduleRead.reader_id, NoduleRead.nodule_id, NoduleRead.decision,
                 NoduleRead.diameter_mm, NoduleRead.outside_lung)
          .where(_not_superseded(NoduleRead), NoduleRead.decision != NoduleDecision.WITHDRAW.value))
    lq = (select(LungRadsRead.detection_id, LungRadsRead.reader_id, LungRadsRead.category.label("lungrads"),
                 LungRadsRead.suggested.label("lungrads_suggested"))
          .where(_not_superseded(LungRadsRead)))
    if series_id is not None:
        dq = dq.where(NoduleDetection.series_id == int(series_id))
        rq = rq.where(NoduleRead.series_id == int(series_id))
        lq = lq.where(LungRadsRead.series_id == int(series_id))
    if reader_id is not None:
        rq = rq.where(NoduleRead.reader_id == int(reader_id))
        lq = lq.where(LungRadsRead.reader_id == int(reader_id))
    detections = pd.DataFrame(s.execute(dq).mappings().all(),
                              columns=["detection_id", "study_id", "series_id", "inference_id", "model_id", "refusal",
                                       "ai_findings"])
    reads = pd.DataFrame(s.execute(rq).mappings().all(),
                         columns=["detection_id", "reader_id", "nodule_id", "decision", "diameter_mm", "outside_lung"])
    lungrads = pd.DataFrame(s.execute(lq).mappings().all(),
                            columns=["detection_id", "reader_id", "lungrads", "lungrads_suggested"])
    return detections, reads, lungrads


def _read_counts(reads: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """accepted / corrected / rejected / added / added_outside_lung per ``keys`` of current reads."""
    r = reads.assign(
        accepted=reads["decision"] == NoduleDecision.ACCEPT.value,
        corrected=(reads["decision"] == NoduleDecision.ACCEPT.value) & reads["diameter_mm"].notna(),
        rejected=reads["decision"] == NoduleDecision.REJECT.value,
        added=reads["decision"] == NoduleDecision.ADD.value,
        added_outside_lung=(reads["decision"] == NoduleDecision.ADD.value) & (reads["outside_lung"] == True),  # noqa: E712
    )
    cols = ["accepted", "corrected", "rejected", "added", "added_outside_lung"]
    return r.groupby(keys, as_index=False)[cols].sum() if len(r) else pd.DataFrame(columns=[*keys, *cols])


def _reader_names(s: Session, ids: Iterable[Any]) -> dict[int, str]:
    wanted = sorted({int(i) for i in ids if pd.notna(i)})
    if not wanted:
        return {}
    return dict(s.execute(select(User.id, User.display_name).where(User.id.in_(wanted))).all())


def nodule_series_summary(s: Session, *, series_id: int | None = None, reader_id: int | None = None) -> pd.DataFrame:
    """Per series, detection and reader: AI findings, accepted, rejected, added, Lung-RADS (for the worklist).

    One row per (detection, reader) for every reader with a current nodule read or Lung-RADS
    category on the detection; a detection nobody (or, with ``reader_id``, that reader has not)
    read appears once with reader_id NA and zero counts. Join to ``db.repository.worklist`` on
    (``inference_id``, ``reader_id``): a detection belongs to the inference it ran beside.
    Older detections (earlier detector versions, earlier inferences) keep their own rows.

    Columns (:data:`SERIES_SUMMARY_COLUMNS`): ``ai_findings`` the detection's findings;
    ``accepted`` (``corrected`` of them with the reader's diameter), ``rejected``, ``undecided``
    (= ai_findings - accepted - rejected), ``added`` (reader's own nodules; ``added_outside_lung``
    of them flagged), ``lungrads`` the reader's current category and ``lungrads_suggested`` the
    suggestion shown then (NA when none); ``refusal`` "" or the detector's reason.

    Returns:
        DataFrame, ordered by series, detection, reader (NA last). Counts are ints.
    """
    detections, reads, lungrads = _current_frames(s, series_id=series_id, reader_id=reader_id)
    keys = ["detection_id", "reader_id"]
    counts = _read_counts(reads, keys)
    per_reader = counts.merge(lungrads, on=keys, how="outer")
    out = detections.merge(per_reader, on="detection_id", how="left")
    count_cols = ["accepted", "corrected", "rejected", "added", "added_outside_lung"]
    out[count_cols] = out[count_cols].fillna(0).astype(int)
    out["undecided"] = (out["ai_findings"] - out["accepted"] - out["rejected"]).astype(int)
    out["reader_id"] = out["reader_id"].astype("Int64")
    names = _reader_names(s, out["reader_id"])
    out["reader"] = out["reader_id"].map(lambda i: names.get(int(i)) if pd.notna(i) else None)
    out = out.sort_values(["series_id", "detection_id", "reader_id"], na_position="last")
    return out.reset_index(drop=True)[list(SERIES_SUMMARY_COLUMNS)]


def nodule_model_summary(s: Session, *, reader_id: int | None = None) -> pd.DataFrame:
    """Per detector model and reader: the fraction of AI findings accepted and the nodules readers added.

    Counts the readers' current reads over every detection of the model (earlier inferences
    included). Per (model, reader): ``series_read`` detections the reader has any current nodule
    read on; ``ai_findings_shown`` the findings of those detections; ``decided`` = ``accepted``
    + ``rejected``; ``fraction_accepted`` = accepted / decided (NaN when nothing is decided):
    the share of the AI's findings a reader confirmed; ``added`` the nodules readers added (what
    the model missed) and ``added_per_series`` = added / series_read. Each model also gets a row
    with reader_id NA and reader "all readers" that pools its readers (sums, then the ratios).

    Returns:
        DataFrame with :data:`MODEL_SUMMARY_COLUMNS`, by model, then reader id (the pooled row last).
    """
    detections, reads, _ = _current_frames(s, series_id=None, reader_id=reader_id)
    if reads.empty:
        return pd.DataFrame(columns=list(MODEL_SUMMARY_COLUMNS))
    reads = reads.merge(detections[["detection_id", "model_id", "ai_findings"]], on="detection_id")
    counts = _read_counts(reads, ["model_id", "reader_id"])
    shown = (reads.drop_duplicates(["model_id", "reader_id", "detection_id"])
             .groupby(["model_id", "reader_id"], as_index=False)
             .agg(series_read=("detection_id", "size"), ai_findings_shown=("ai_findings", "sum")))
    per_reader = shown.merge(counts, on=["model_id", "reader_id"], how="left")
    pooled = per_reader.drop(columns="reader_id").groupby("model_id", as_index=False).sum(numeric_only=True)
    pooled["reader_id"] = pd.NA
    out = pd.concat([per_reader, pooled], ignore_index=True)
    ints = ["series_read", "ai_findings_shown", "accepted", "corrected", "rejected", "added"]
    out[ints] = out[ints].fillna(0).astype(int)
    out["decided"] = out["accepted"] + out["rejected"]
    out["fraction_accepted"] = np.where(out["decided"] > 0, out["accepted"] / out["decided"].where(out["decided"] > 0),
                                        np.nan)
    out["added_per_series"] = out["added"] / out["series_read"]
    out["reader_id"] = out["reader_id"].astype("Int64")
    names = _reader_names(s, out["reader_id"])
    out["reader"] = out["reader_id"].map(lambda i: names.get(int(i)) if pd.notna(i) else ALL_READERS)
    out = out.sort_values(["model_id", "reader_id"], na_position="last")
    return out.reset_index(drop=True)[list(MODEL_SUMMARY_COLUMNS)]
