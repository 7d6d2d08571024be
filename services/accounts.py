"""Small services of the dashboard pages other than reading: accounts and sign-in, pilot feedback,
the worklist, reader agreement. Each function is one transaction (``with factory.begin():``)
around ``db.repository`` / ``services.analytics`` calls and returns plain values: frozen dataclasses,
pandas DataFrames, strings; never ORM rows, so nothing escapes a closed session.

Why one module: every function here is a few lines of transaction around the repository; the
reading workflow, which has its own rules (analyse-or-reuse, superseding reads), is
``services.reading``. Pages call one of these and render. Streamlit is never imported here.

``factory`` is a ``sessionmaker`` (``db.session.make_session_factory``); functions that only read
may be given a read-only one. Errors are those of ``db.repository`` (``ValidationError``,
``NotFoundError``, ``PermissionDenied``), raised before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from core.domain import APP_VERSION, CLASS_NAMES, Role, suspicious_index
from db import repository as repo
from db.schema import AuditAction
from services import analytics

Factory = sessionmaker[Session]


# ------------------------------------------------------------------------------- accounts
@dataclass(frozen=True)
class Account:
    """A user as pages see them (no password material)."""

    id: int
    username: str
    display_name: str
    role: str
    active: bool

    @classmethod
    def _of(cls, row) -> Account:
        return cls(id=int(row.id), username=row.username, display_name=row.display_name, role=str(row.role),
                   active=bool(row.active))


def first_run(factory: Factory) -> bool:
    """True when no user exists yet (the app shows the first-admin form)."""
    with factory.begin() as s:
        return not repo.has_users(s)


def create_first_admin(factory: Factory, username: str, display_name: str, password: str) -> Account:
    """Create the first user, an admin (``repo.create_user`` without actor).

    Raises:
        ValidationError: bad values, or users exist already (then only an admin may add users).
        PermissionDenied: users exist already.
    """
    with factory.begin() as s:
        return Account._of(repo.create_user(s, username, display_name, Role.ADMIN, password))


def authenticate(factory: Factory, username: str, password: str) -> Account | None:
    """The active account with this name and password, else None; records (failed) sign-in."""
    with factory.begin() as s:
        user = repo.authenticate(s, username, password)
        return Account._of(user) if user is not None else None


def record_sign_out(factory: Factory, user_id: int) -> None:
    """Record a sign-out audit event."""
    with factory.begin() as s:
        repo.log_event(s, user_id=user_id, action=AuditAction.SIGN_OUT, object_type="user", object_id=user_id)


def list_accounts(factory: Factory) -> list[Account]:
    """Every account, ordered by username."""
    with factory.begin() as s:
        return [Account._of(u) for u in repo.list_users(s)]


def create_account(factory: Factory, actor_id: int, username: str, display_name: str, role: str,
                   password: str) -> Account:
    """An admin creates an account (``repo.create_user``). Raises ValidationError / PermissionDenied."""
    with factory.begin() as s:
        return Account._of(repo.create_user(s, username, display_name, role, password, actor=actor_id))


def change_account(factory: Factory, actor_id: int, user_id: int, *, role: str, active: bool) -> Account:
    """An admin sets an account's role and active flag, in one transaction (both or neither).

    Raises:
        PermissionDenied: ``actor_id`` is not an active admin. NotFoundError: no such user.
        ValidationError: unknown role, or this would leave no active admin.
    """
    with factory.begin() as s:
        repo.set_user_role(s, actor_id, user_id, role)
        return Account._of(repo.set_user_active(s, actor_id, user_id, active))


# ------------------------------------------------------------------------------- feedback
@dataclass(frozen=True)
class FeedbackResults:
    """What the feedback results page shows (``services.analytics``).

    Attributes:
        summary: ``analytics.sus_summary`` (SUS per role: n, mean, 95 % interval).
        texts: ``analytics.feedback_texts`` (free-text answers).
        scores: one row per answer, columns ``role``, ``sus_score`` (0-100).
    """

    summary: pd.DataFrame
    texts: pd.DataFrame
    scores: pd.DataFrame


def submit_feedback(factory: Factory, user_id: int, answers: Sequence[int], *, helped: str = "",
                    hindered: str = "", app_version: str = APP_VERSION) -> float:
    """Store one SUS questionnaire; returns its SUS score (0-100, Brooke 1996).

    Raises:
        ValidationError: answers missing or out of range, text too long.
    """
    with factory.begin() as s:
        return float(repo.add_feedback(s, user=user_id, answers=answers, helped=helped, hindered=hindered,
                                       app_version=app_version).sus_score)


def feedback_results(factory: Factory, viewer_id: int) -> FeedbackResults:
    """SUS summary, free text and scores for a lead, coordinator or admin.

    Raises:
        PermissionDenied: the viewer may not read feedback results.
    """
    with factory.begin() as s:
        return FeedbackResults(summary=analytics.sus_summary(s, viewer=viewer_id),
                               texts=analytics.feedback_texts(s, viewer=viewer_id),
                               scores=analytics.export_frame(s, "feedback")[["role", "sus_score"]])


def export_csv(factory: Factory, what: str, viewer_id: int) -> str:
    """CSV text of one export (``analytics.export_csv``; records an "export" audit event).

    Raises:
        PermissionDenied: the viewer's role may not export ``what``. ValidationError: unknown ``what``.
    """
    with factory.begin() as s:
        return analytics.export_csv(s, what, viewer=viewer_id)


# ------------------------------------------------------------------------------- worklist
@dataclass(frozen=True)
class WorklistChoices:
    """Values the worklist filters offer: reader names by id, and model ids with a stored result."""

    readers: dict[int, str]
    models: list[str]


@dataclass(frozen=True, eq=False)
class StoredResult:
    """The newest stored AI result of one model on one series.

    Attributes:
        probabilities: float (n, k), slice order; ``class_names`` the k names.
        suspicious_index: column of the suspicious class (``core.inference.decision.suspicious_index``).
        ai_label: the model's Finding value; ood: the guard flagged the series (any slice).
    """

    series_id: int
    series_description: str
    model_id: str
    ai_label: str
    ood: bool
    series_score: float
    threshold: float
    latency_ms: float
    created_at: datetime
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    suspicious_index: int


@dataclass(frozen=True)
class StudyResults:
    """One study's stored AI results (one per series and model) and its current reads (DataFrame
    with the columns of ``repo.WORKLIST_COLUMNS``, reviewed rows only)."""

    study_id: int
    results: list[StoredResult] = field(default_factory=list)
    reads: pd.DataFrame = field(default_factory=pd.DataFrame)


def stored_class_names(series_result: dict, k: int) -> tuple[str, ...]:
    """Class names of a stored inference (kept in its series result; k = 3 defaults to CLASS_NAMES)."""
    names = series_result.get("class_names")
    if isinstance(names, list) and len(names) == k:
        return tuple(str(n) for n in names)
    return tuple(CLASS_NAMES) if k == len(CLASS_NAMES) else tuple(f"class {i}" for i in range(k))


def worklist_choices(factory: Factory) -> WorklistChoices:
    """Reader names (every account) and the model ids that have a stored result."""
    with factory.begin() as s:
        everything = repo.worklist(s)
        return WorklistChoices(readers={u.id: u.display_name for u in repo.list_users(s)},
                               models=sorted(everything["model_id"].dropna().unique().tolist()))


#: Nodule columns :func:`worklist` adds to ``repo.WORKLIST_COLUMNS``.
NODULE_WORKLIST_COLUMNS: tuple[str, ...] = (
    "detection_id", "nodule_model_id", "nodule_refusal", "ai_nodules", "nodules_accepted", "nodules_rejected",
    "nodules_added", "lungrads",
)


def with_nodules(table: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The worklist with the nodule read of each row (pure; ``summary`` = ``repo.nodule_series_summary``).

    Per row (a series, a model's inference, a reader's current read): the newest detection that
    ran beside the row's inference (``detection_id``, ``nodule_model_id``, ``nodule_refusal``,
    ``ai_nodules`` = its findings), and the row reader's current counts on it
    (``nodules_accepted`` including corrected, ``nodules_rejected``, ``nodules_added``) and
    Lung-RADS category. Rows without a detection get NA; a reader without nodule reads gets 0
    counts and NA Lung-RADS.

    Returns:
        ``table`` with :data:`NODULE_WORKLIST_COLUMNS` added (same rows, same order).
    """
    out = table.copy()
    if summary.empty or out.empty:
        for col in NODULE_WORKLIST_COLUMNS:
            out[col] = pd.NA
        return out
    newest = (summary.sort_values("detection_id").drop_duplicates("inference_id", keep="last")
              [["inference_id", "detection_id", "model_id", "refusal", "ai_findings"]]
              .rename(columns={"model_id": "nodule_model_id", "refusal": "nodule_refusal", "ai_findings": "ai_nodules"}))
    reads = (summary.dropna(subset=["reader_id"])
             [["detection_id", "reader_id", "accepted", "rejected", "added", "lungrads"]]
             .rename(columns={"accepted": "nodules_accepted", "rejected": "nodules_rejected",
                              "added": "nodules_added"}))
    out["_order"] = range(len(out))
    out["inference_id"] = out["inference_id"].astype("Int64")
    newest["inference_id"] = newest["inference_id"].astype("Int64")
    out = out.merge(newest, on="inference_id", how="left")
    out["reader_id"] = out["reader_id"].astype("Int64")
    reads["reader_id"] = reads["reader_id"].astype("Int64")
    out = out.merge(reads, on=["detection_id", "reader_id"], how="left")
    read = out["detection_id"].notna() & out["reader_id"].notna()
    for col in ("nodules_accepted", "nodules_rejected", "nodules_added"):
        out[col] = out[col].astype("Int64")
        out.loc[read & out[col].isna(), col] = 0
    return out.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def worklist(factory: Factory, *, reader_id: int | None = None, model_id: str | None = None,
             finding: str | None = None, agreement: str | None = None) -> pd.DataFrame:
    """``repo.worklist`` (one row per series, model and current read) with the given filters, and each
    row's nodule read (:func:`with_nodules`: AI findings, accepted, rejected, added, Lung-RADS).

    Raises:
        ValidationError: unknown finding or agreement.
    """
    with factory.begin() as s:
        table = repo.worklist(s, reader_id=reader_id, model_id=model_id, finding=finding, agreement=agreement)
        return with_nodules(table, repo.nodule_series_summary(s, reader_id=reader_id))


def study_results(factory: Factory, study_id: int) -> StudyResults:
    """The newest result of each model on each series of a study, and the study's current reads."""
    with factory.begin() as s:
        rows = repo.worklist(s)
        rows = rows[rows["study_id"] == int(study_id)]
        results = []
        pairs = rows.dropna(subset=["inference_id"])[["series_id", "model_id"]].drop_duplicates()
        for series_id, model_id in pairs.itertuples(index=False):
            inf = repo.latest_inference(s, int(series_id), str(model_id))
            if inf is None:
                continue
            probs = np.asarray(inf.slice_probabilities, dtype=float)
            names = stored_class_names(inf.series_result or {}, probs.shape[1])
            results.append(StoredResult(
                series_id=inf.series_id, series_description=inf.series.description, model_id=inf.model_id,
                ai_label=inf.ai_label, ood=bool(inf.ood), series_score=float(inf.series_score),
                threshold=float(inf.threshold), latency_ms=float(inf.latency_ms), created_at=inf.created_at,
                class_names=names, probabilities=probs, suspicious_index=suspicious_index(names)))
        return StudyResults(study_id=int(study_id), results=results, reads=rows.dropna(subset=["review_id"]))


# ------------------------------------------------------------------------------ agreement
@dataclass(frozen=True)
class ReaderAgreement:
    """Radiologists vs AI (``services.analytics``): kappa per model and per reader, Fleiss' kappa,
    and the reader-vs-AI confusion table of each model id asked for."""

    per_model: pd.DataFrame
    per_reader: pd.DataFrame
    fleiss: pd.DataFrame
    confusions: dict[str, pd.DataFrame]


def nodule_model_summary(factory: Factory) -> pd.DataFrame:
    """Per nodule-detector model and reader: fraction of AI findings accepted, nodules readers added.

    ``repo.nodule_model_summary`` (columns ``repo.MODEL_SUMMARY_COLUMNS``; per model a pooled
    "all readers" row): current reads only; ``fraction_accepted`` = accepted / (accepted +
    rejected), NaN when nothing is decided; ``added`` = nodules the readers found that the model
    did not list.
    """
    with factory.begin() as s:
        return repo.nodule_model_summary(s)


def reader_agreement(factory: Factory, model_ids: Iterable[str]) -> ReaderAgreement:
    """Agreement of current reads with the AI results they were shown (current reads only)."""
    with factory.begin() as s:
        return ReaderAgreement(per_model=analytics.agreement_table(s, "model"),
                               per_reader=analytics.agreement_table(s, "reader"),
                               fleiss=analytics.fleiss_kappa_table(s),
                               confusions={m: analytics.reader_ai_confusion(s, m) for m in model_ids})
