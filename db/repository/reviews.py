"""Reviews: a radiologist's read next to the AI result they were shown. Append-only.

A reader who changes their mind adds a row that supersedes their current review of the same
inference (``supersedes_id``); earlier rows stay unchanged. Only radiologists and admins review.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from core.domain import Agreement, Finding
from db.repository.common import (
    REVIEWER_ROLES,
    NotFoundError,
    ValidationError,
    _choice,
    _real,
    _require_role,
    _user,
    _whole,
    log_event,
)
from db.schema import AuditAction, Inference, Review, User


def _current_filter():
    """SQL condition: the review is not superseded by another row."""
    newer = aliased(Review)
    return ~select(newer.id).where(newer.supersedes_id == Review.id).exists()


def current_review(s: Session, inference_id: int, reader_id: int) -> Review | None:
    """The reader's current (non-superseded) review of what this inference showed, or None."""
    return s.scalar(
        select(Review)
        .where(Review.inference_id == int(inference_id), Review.reader_id == int(reader_id), _current_filter())
        .order_by(Review.id.desc())
        .limit(1)
    )


def add_review(s: Session, *, inference_id: int, reader: User | int, finding: Finding | str,
               agreement: Agreement | str, confidence: int, heatmap_helpful: int | None = None,
               comment: str = "", seconds_to_decision: float, study_id: int | None = None) -> Review:
    """Record a radiologist's read of a series next to the AI result (inference) they were shown.

    If the reader already reviewed this inference, the new row supersedes their current review
    of it (``supersedes_id``); the earlier row stays, unchanged, and no longer counts in
    analytics. Reads of other series, or of other models' results, are separate reads.

    Args:
        inference_id: the inference shown (its series and study are the read's).
        reader: an active radiologist or admin.
        finding: "normal", "benign" or "malignant". agreement: "agree", "disagree" or "partly".
        confidence: whole number 1-5. heatmap_helpful: whole number 1-5 or None (not shown/rated).
        comment: free text, at most 5000 characters; no patient identifiers.
        seconds_to_decision: seconds from opening the case to the decision, >= 0.
        study_id: optional check: the study the caller believes the inference belongs to.

    Returns:
        The new Review (flushed). A "review" audit event is recorded.

    Raises:
        ValidationError: a value is unknown or out of range, or the inference belongs to another
            study than ``study_id``. NotFoundError: no such inference or user. PermissionDenied:
            the reader is not an active radiologist or admin.
    """
    finding = _choice(finding, Finding, "finding")
    agreement = _choice(agreement, Agreement, "agreement")
    confidence = _whole(confidence, "Confidence", 1, 5)
    helpful = None if heatmap_helpful is None else _whole(heatmap_helpful, "Heatmap helpfulness", 1, 5)
    seconds = _real(seconds_to_decision, "Seconds to decision", 0.0)
    comment = str(comment or "")
    if len(comment) > 5000:
        raise ValidationError("The comment is too long (at most 5000 characters).")
    user = _user(s, reader, "reader")
    _require_role(user, REVIEWER_ROLES, "add reviews")
    if study_id is not None:
        from db.repository.studies import get_study

        get_study(s, study_id)
    inference = s.get(Inference, int(inference_id))
    if inference is None:
        raise NotFoundError(f"There is no inference with id {inference_id}; run the model first.")
    if study_id is not None and inference.study_id != int(study_id):
        raise ValidationError(f"Inference {inference.id} belongs to study {inference.study_id}, not {study_id}.")
    previous = current_review(s, inference.id, user.id)
    row = Review(study_id=inference.study_id, inference_id=inference.id, reader_id=user.id, finding=finding,
                 agreement=agreement, confidence=confidence, heatmap_helpful=helpful, comment=comment,
                 seconds_to_decision=seconds, supersedes_id=previous.id if previous else None)
    s.add(row)
    s.flush()
    log_event(s, user_id=user.id, action=AuditAction.REVIEW, object_type="review", object_id=row.id,
              detail=f"study {inference.study_id}, series {inference.series_id}, finding {finding}, {agreement}"
              + (f", supersedes review {previous.id}" if previous else ""))
    return row


def current_reviews(s: Session, *, study_id: int | None = None, reader_id: int | None = None,
                    model_id: str | None = None, series_id: int | None = None) -> list[Review]:
    """Current (non-superseded) reviews, oldest first, optionally for one study/reader/model/series.

    ``model_id`` and ``series_id`` filter on the inference the reader was shown.
    """
    q = select(Review).where(_current_filter())
    if study_id is not None:
        q = q.where(Review.study_id == int(study_id))
    if reader_id is not None:
        q = q.where(Review.reader_id == int(reader_id))
    if model_id is not None or series_id is not None:
        q = q.join(Inference, Inference.id == Review.inference_id)
        if model_id is not None:
            q = q.where(Inference.model_id == model_id)
        if series_id is not None:
            q = q.where(Inference.series_id == int(series_id))
    return list(s.scalars(q.order_by(Review.id)))


def review_history(s: Session, study_id: int, reader_id: int | None = None) -> list[Review]:
    """Every review of a study (superseded ones included), oldest first."""
    q = select(Review).where(Review.study_id == int(study_id))
    if reader_id is not None:
        q = q.where(Review.reader_id == int(reader_id))
    return list(s.scalars(q.order_by(Review.id)))
