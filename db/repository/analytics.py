"""The queries behind the analytics (``services.analytics``): reads with the AI result shown,
feedback answers, audit events, as pandas DataFrames. Every function takes a ``Session`` and
only reads."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.repository.reviews import _current_filter
from db.schema import AuditEvent, Feedback, Inference, Review, Study, User

READS_COLUMNS = [
    "review_id", "study_id", "study_key", "reader_id", "reader", "reader_role", "inference_id", "model_id",
    "ai_label", "series_score", "finding", "agreement", "confidence", "heatmap_helpful", "seconds_to_decision",
    "supersedes_id", "reviewed_at", "series_id",
]
FEEDBACK_COLUMNS = ["feedback_id", "user_id", "role", "sus_score", "helped", "hindered", "app_version", "created_at",
                    *(f"q{i}" for i in range(1, 11))]
AUDIT_COLUMNS = ["event_id", "at", "user_id", "action", "object_type", "object_id", "detail"]


def current_reads(s: Session, *, include_superseded: bool = False) -> pd.DataFrame:
    """One row per review (default: only current ones) with the AI read the reader was shown.

    Returns:
        DataFrame with columns ``review_id, study_id, study_key, reader_id, reader, reader_role,
        inference_id, model_id, ai_label, series_score, finding, agreement, confidence,
        heatmap_helpful, seconds_to_decision, supersedes_id, reviewed_at, series_id``, ordered by
        review id (``series_id``: the series of the inference shown).
    """
    q = (
        select(Review.id.label("review_id"), Review.study_id, Study.study_key, Review.reader_id,
               User.display_name.label("reader"), User.role.label("reader_role"), Review.inference_id,
               Inference.model_id, Inference.ai_label, Inference.series_score, Review.finding, Review.agreement,
               Review.confidence, Review.heatmap_helpful, Review.seconds_to_decision, Review.supersedes_id,
               Review.created_at.label("reviewed_at"), Inference.series_id)
        .join(Study, Study.id == Review.study_id)
        .join(User, User.id == Review.reader_id)
        .join(Inference, Inference.id == Review.inference_id)
        .order_by(Review.id)
    )
    if not include_superseded:
        q = q.where(_current_filter())
    return pd.DataFrame(s.execute(q).mappings().all(), columns=READS_COLUMNS)


def feedback_frame(s: Session) -> pd.DataFrame:
    """Every SUS questionnaire, oldest first: :data:`FEEDBACK_COLUMNS` (answers ``q1`` .. ``q10``)."""
    q = select(Feedback.id, Feedback.user_id, Feedback.role, Feedback.sus_score, Feedback.helped, Feedback.hindered,
               Feedback.app_version, Feedback.created_at,
               *(getattr(Feedback, f"q{i}") for i in range(1, 11))).order_by(Feedback.id)
    return pd.DataFrame(s.execute(q).all(), columns=FEEDBACK_COLUMNS)


def audit_frame(s: Session) -> pd.DataFrame:
    """Every audit event, oldest first: :data:`AUDIT_COLUMNS`."""
    q = select(AuditEvent.id, AuditEvent.at, AuditEvent.user_id, AuditEvent.action, AuditEvent.object_type,
               AuditEvent.object_id, AuditEvent.detail).order_by(AuditEvent.id)
    return pd.DataFrame(s.execute(q).all(), columns=AUDIT_COLUMNS)
