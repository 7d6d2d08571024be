"""Reports over the rows: the worklist (one row per series read) and row counts."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.domain import Agreement, Finding
from db.repository.common import _choice
from db.repository.reviews import _current_filter
from db.schema import AuditEvent, Feedback, Inference, Review, Series, Study, User

WORKLIST_COLUMNS: tuple[str, ...] = (
    "study_id", "study_key", "uploaded_at", "source_kind", "series_id", "series_key", "series_description",
    "n_slices", "model_id", "inference_id", "ai_label", "series_score", "ood", "reader_id", "reader", "finding",
    "agreement", "confidence", "review_id", "reviewed_at",
)

_ROW_COLUMNS = ["study_id", "study_key", "uploaded_at", "source_kind", "series_id", "series_key",
                "series_description", "n_slices", "model_id", "inference_id", "ai_label", "series_score", "ood"]
_REVIEW_COLUMNS = ["series_id", "model_id", "reader_id", "reader", "finding", "agreement", "confidence",
                   "review_id", "reviewed_at"]


def worklist(s: Session, *, reader_id: int | None = None, model_id: str | None = None,
             finding: Finding | str | None = None, agreement: Agreement | str | None = None,
             key_chars: int = 12) -> pd.DataFrame:
    """The worklist: one row per series and model (its newest inference) and current review.

    A current review is joined to the row of the series and model of the inference the reader
    was shown. Studies without a series appear once with empty series and AI columns; series
    without a (matching) review appear with empty review columns. With ``reader_id`` only that
    reader's reviews are joined, so their unread series show with an empty finding.
    ``finding``/``agreement`` keep only reviewed rows with that value.

    Returns:
        DataFrame with columns :data:`WORKLIST_COLUMNS`, newest upload first, then series and
        model order. ``study_key`` and ``series_key`` are the first ``key_chars`` characters of
        the pseudonymous keys; ``n_slices`` is the series' (the study's when it has no series);
        times are UTC.

    Raises:
        ValidationError: unknown finding or agreement.
    """
    finding = None if finding in (None, "") else _choice(finding, Finding, "finding")
    agreement = None if agreement in (None, "") else _choice(agreement, Agreement, "agreement")
    newest = (
        select(Inference.series_id, Inference.model_id, func.max(Inference.id).label("inference_id"))
        .group_by(Inference.series_id, Inference.model_id)
    )
    if model_id is not None:
        newest = newest.where(Inference.model_id == model_id)
    newest = newest.subquery()
    q = (
        select(Study.id.label("study_id"), Study.study_key, Study.uploaded_at, Study.source_kind,
               Series.id.label("series_id"), Series.series_key, Series.description.label("series_description"),
               func.coalesce(Series.n_slices, Study.n_slices).label("n_slices"), newest.c.model_id,
               newest.c.inference_id, Inference.ai_label, Inference.series_score, Inference.ood)
        .outerjoin(Series, Series.study_id == Study.id)
        .outerjoin(newest, newest.c.series_id == Series.id)
        .outerjoin(Inference, Inference.id == newest.c.inference_id)
    )
    if model_id is not None:
        q = q.where(newest.c.inference_id.is_not(None))
    rows = pd.DataFrame(s.execute(q).mappings().all(), columns=_ROW_COLUMNS)
    rq = (
        select(Inference.series_id, Inference.model_id, Review.reader_id, User.display_name.label("reader"),
               Review.finding, Review.agreement, Review.confidence, Review.id.label("review_id"),
               Review.created_at.label("reviewed_at"))
        .join(User, User.id == Review.reader_id)
        .join(Inference, Inference.id == Review.inference_id)
        .where(_current_filter())
    )
    if reader_id is not None:
        rq = rq.where(Review.reader_id == int(reader_id))
    if model_id is not None:
        rq = rq.where(Inference.model_id == model_id)
    reviews = pd.DataFrame(s.execute(rq).mappings().all(), columns=_REVIEW_COLUMNS)
    out = rows.merge(reviews, on=["series_id", "model_id"], how="left")
    if finding is not None:
        out = out[out["finding"] == finding]
    if agreement is not None:
        out = out[out["agreement"] == agreement]
    out["study_key"] = out["study_key"].str[:key_chars]
    out["series_key"] = out["series_key"].str[:key_chars]
    out = out.sort_values(["uploaded_at", "study_id", "series_id", "model_id", "reader_id"],
                          ascending=[False, False, True, True, True], na_position="last")
    return out.reset_index(drop=True)[list(WORKLIST_COLUMNS)]


def count_rows(s: Session) -> dict[str, int]:
    """Row counts per table (users, studies, series, inferences, reviews, feedback, audit_events)."""
    return {cls.__tablename__: s.scalar(select(func.count()).select_from(cls)) or 0
            for cls in (User, Study, Series, Inference, Review, Feedback, AuditEvent)}
