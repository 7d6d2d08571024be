"""Studies, their series and the model runs (inferences) on a series.

A study is recorded once per upload (unique ``content_hash``); each series of it once per study
(unique ``(study_id, series_key)``); each model run on a series as one inference. Only
pseudonymous keys are stored (``core.imaging.study_key_for``), never UIDs or patient data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.domain import Finding, Role, any_flagged
from db.repository.common import (
    _HEX,
    NotFoundError,
    ValidationError,
    _choice,
    _hexdigest,
    _jsonable,
    _real,
    _require_role,
    _user,
    _whole,
    log_event,
)
from db.schema import AuditAction, Inference, Series, SourceKind, Study, User

#: Longest series description stored (characters).
MAX_DESCRIPTION = 256


def find_study_by_hash(s: Session, content_hash: str) -> Study | None:
    """The study uploaded with these bytes before (``core.imaging.Study.content_hash``), or None."""
    return s.scalar(select(Study).where(Study.content_hash == str(content_hash).strip().lower()))


def get_study(s: Session, study_id: int) -> Study:
    """The study with this id. Raises NotFoundError."""
    study = s.get(Study, int(study_id))
    if study is None:
        raise NotFoundError(f"There is no study with id {study_id}; upload it first.")
    return study


def add_study(s: Session, *, study_key: str, modality: str, n_series: int, n_slices: int, source_kind: str,
              content_hash: str, uploaded_by: User | int) -> Study:
    """Record an uploaded study by its pseudonymous key (never names, patient IDs or raw UIDs).

    Args:
        study_key: ``core.imaging.Study.study_key`` (hex HMAC-SHA256, 16-128 hex characters);
            anything else (e.g. a raw StudyInstanceUID "1.2.840...") is refused.
        modality: DICOM Modality (e.g. "CT"; "OT" for pictures), 1-16 characters.
        n_series, n_slices: counts, at least 1.
        source_kind: "dicom", "jpg" or "png".
        content_hash: sha256 hex (64 characters) of the uploaded bytes; unique.
        uploaded_by: the uploading user (active, any role).

    Returns:
        The new Study (flushed). An "upload" audit event is recorded.

    Raises:
        ValidationError: a value is malformed, or a study with this content hash exists already
            (use :func:`find_study_by_hash` first to reuse it).
        NotFoundError / PermissionDenied: unknown or deactivated uploader.
    """
    key = _pseudonymous_key(study_key, "study key")
    modality = str(modality or "").strip().upper()
    if not 1 <= len(modality) <= 16:
        raise ValidationError(f"Modality must have 1-16 characters, got {modality!r}.")
    n_series = _whole(n_series, "Number of series", 1, 1_000_000)
    n_slices = _whole(n_slices, "Number of slices", 1, 100_000_000)
    source_kind = _choice(source_kind, SourceKind, "source kind")
    content_hash = _hexdigest(content_hash, "Content hash", (64,))
    user = _user(s, uploaded_by, "uploaded_by")
    _require_role(user, set(Role), "upload studies")
    existing = find_study_by_hash(s, content_hash)
    if existing is not None:
        raise ValidationError(
            f"These files were uploaded before (study {existing.id}); open that study instead."
        )
    study = Study(study_key=key, modality=modality, n_series=n_series, n_slices=n_slices,
                  source_kind=source_kind, content_hash=content_hash, uploaded_by=user.id)
    s.add(study)
    s.flush()
    log_event(s, user_id=user.id, action=AuditAction.UPLOAD, object_type="study", object_id=study.id,
              detail=f"{source_kind}, {n_series} series, {n_slices} slices")
    return study




def _pseudonymous_key(value: object, what: str) -> str:
    key = str(value or "").strip().lower()
    if not (16 <= len(key) <= 128 and _HEX.match(key)):
        raise ValidationError(
            f"The {what} must be the pseudonymous hex key from core.imaging (16-128 hex characters); "
            "raw UIDs and patient identifiers are never stored."
        )
    return key


def find_series(s: Session, study_id: int, series_key: str) -> Series | None:
    """The series of study ``study_id`` with this pseudonymous key, or None."""
    return s.scalar(select(Series).where(Series.study_id == int(study_id),
                                         Series.series_key == str(series_key).strip().lower()))


def get_series(s: Session, series_id: int) -> Series:
    """The series with this id. Raises NotFoundError."""
    row = s.get(Series, int(series_id))
    if row is None:
        raise NotFoundError(f"There is no series with id {series_id}; analyse the series first.")
    return row


def add_series(s: Session, *, study_id: int, series_key: str, modality: str, n_slices: int,
               spacing_mm: Sequence[float | None] = (None, None, None), description: str = "") -> Series:
    """Record one series of a study by its pseudonymous key.

    Args:
        study_id: an existing study.
        series_key: ``core.imaging.Series.series_key`` (16-128 hex characters); unique per study.
        modality: DICOM Modality (e.g. "CT"; "OT" for pictures), 1-16 characters.
        n_slices: number of slices, at least 1.
        spacing_mm: ``core.imaging.Series.spacing_mm``: (z, y, x) in mm, each > 0 or None (unknown).
        description: ``core.imaging.Series.description`` (de-identified), at most
            :data:`MAX_DESCRIPTION` characters.

    Returns:
        The new Series (flushed).

    Raises:
        NotFoundError: no such study. ValidationError: a value is malformed, or the study
            already has a series with this key (use :func:`find_series` first).
    """
    study = get_study(s, study_id)
    key = _pseudonymous_key(series_key, "series key")
    modality = str(modality or "").strip().upper()
    if not 1 <= len(modality) <= 16:
        raise ValidationError(f"Modality must have 1-16 characters, got {modality!r}.")
    n_slices = _whole(n_slices, "Number of slices", 1, 100_000_000)
    spacing = list(spacing_mm) if spacing_mm is not None else [None, None, None]
    if len(spacing) != 3:
        raise ValidationError(f"Spacing must be (z, y, x) in mm, got {spacing_mm!r}.")
    checked: list[float | None] = []
    for axis, value in zip("zyx", spacing, strict=True):
        if value is None:
            checked.append(None)
            continue
        mm = _real(value, f"Spacing {axis} (mm)")
        if not (mm > 0 and math.isfinite(mm)):
            raise ValidationError(f"Spacing {axis} must be a positive number of mm or unknown, got {value!r}.")
        checked.append(mm)
    description = str(description or "").strip()
    if len(description) > MAX_DESCRIPTION:
        raise ValidationError(f"The series description is too long (at most {MAX_DESCRIPTION} characters).")
    if find_series(s, study.id, key) is not None:
        raise ValidationError(f"Study {study.id} already has this series; reuse it instead of adding it again.")
    row = Series(study_id=study.id, series_key=key, modality=modality, n_slices=n_slices,
                 spacing_z_mm=checked[0], spacing_y_mm=checked[1], spacing_x_mm=checked[2],
                 description=description)
    s.add(row)
    s.flush()
    return row


def add_inference(s: Session, *, series_id: int, model_id: str, model_sha256: str,
                  slice_probabilities: Sequence[Sequence[float]] | np.ndarray, series_result: dict,
                  threshold: float, ood: bool | Sequence[bool] | np.ndarray, latency_ms: float,
                  user: User | int | None = None) -> Inference:
    """Record one model run on a series.

    Args:
        series_id: an existing series (its study is the inference's study).
        model_id: registry model id (1-128 characters).
        model_sha256: sha256 hex of the model file (64 characters).
        slice_probabilities: float (n, k), each value in [0, 1], n >= 1, k >= 2.
        series_result: ``SeriesResult.to_dict()``; must hold ``finding`` (a Finding value; for
            results stored before it existed, ``series_label`` holding a Finding value) and
            ``series_score`` in [0, 1]; stored as JSON.
        threshold: the decision threshold used, in [0, 1].
        ood: the out-of-distribution flag stored in ``Inference.ood``; an array of per-slice
            flags counts as True if any is (the dashboard shows "not applicable" then).
        latency_ms: wall time of the analysis, >= 0.
        user: who ran it (optional; recorded in the audit event).

    Returns:
        The new Inference (flushed). An "inference" audit event is recorded.

    Raises:
        NotFoundError: no such series. ValidationError: any value malformed or out of range.
    """
    series = get_series(s, series_id)
    model_id = str(model_id or "").strip()
    if not 1 <= len(model_id) <= 128:
        raise ValidationError("The model id must have 1-128 characters (see the model registry).")
    sha = _hexdigest(model_sha256, "Model sha256", (64,))
    try:
        probs = np.asarray(slice_probabilities, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError("Slice probabilities must be a table of numbers (slices x classes).") from None
    if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 2:
        raise ValidationError(f"Slice probabilities must have shape (slices, classes), got {probs.shape}.")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValidationError("Slice probabilities must be finite numbers from 0 to 1.")
    if not isinstance(series_result, dict):
        raise ValidationError("The series result must be a dict (SeriesResult.to_dict()).")
    result = _jsonable(series_result)
    if "finding" in result:
        label = _choice(result.get("finding"), Finding, "series finding")
    else:
        label = _choice(result.get("series_label"), Finding, "series label")
    score = _real(result.get("series_score"), "Series score", 0.0, 1.0)
    threshold = _real(threshold, "Decision threshold", 0.0, 1.0)
    latency = _real(latency_ms, "Latency (ms)", 0.0)
    ood_flag = any_flagged(ood)
    actor = _user(s, user, "user") if user is not None else None
    row = Inference(study_id=series.study_id, series_id=series.id, model_id=model_id, model_sha256=sha,
                    slice_probabilities=probs.tolist(), series_result=result, ai_label=label, series_score=score,
                    threshold=threshold, ood=ood_flag, latency_ms=latency, created_by=actor.id if actor else None)
    s.add(row)
    s.flush()
    log_event(s, user_id=actor.id if actor else None, action=AuditAction.INFERENCE, object_type="inference",
              object_id=row.id, detail=f"study {series.study_id}, series {series.id}, model {model_id}, label {label}")
    return row


def latest_inference(s: Session, series_id: int, model_id: str | None = None) -> Inference | None:
    """The newest inference on a series (of ``model_id``, or of any model when None), or None."""
    q = select(Inference).where(Inference.series_id == int(series_id))
    if model_id is not None:
        q = q.where(Inference.model_id == model_id)
    return s.scalar(q.order_by(Inference.id.desc()).limit(1))


def find_inference(s: Session, *, content_hash: str, series_key: str, model_id: str,
                   model_sha256: str) -> Inference | None:
    """The newest stored run of this model file on this series of these uploaded bytes, or None.

    The match is exact: the study's ``content_hash`` (sha256 of the uploaded bytes), the
    pseudonymous ``series_key``, the registry ``model_id`` and the sha256 of the model file.
    """
    q = (
        select(Inference)
        .join(Series, Series.id == Inference.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(Study.content_hash == str(content_hash).strip().lower(),
               Series.series_key == str(series_key).strip().lower(),
               Inference.model_id == str(model_id), Inference.model_sha256 == str(model_sha256).strip().lower())
        .order_by(Inference.id.desc())
        .limit(1)
    )
    return s.scalar(q)
