"""Agreement, usability and export analytics over the review database, as pandas DataFrames.

The functions take a ``Session`` so that a service (``services.accounts``) can call several in
one transaction; the queries themselves are ``db.repository.analytics``.

Only the CURRENT review of each reader on each study counts (a review superseded by the same
reader's later review is ignored). The AI's read of a review is the label (``ai_label``) of the
inference the reader was shown; agreement "per model" groups by that inference's model.

Statistics and their sources:

* Cohen's kappa, unweighted and linearly weighted with the order normal < benign < malignant,
  and Fleiss' kappa for several readers on the same studies: ``core.stats.agreement``.
* SUS summary: mean, median and the Student-t interval of the mean (``core.stats.sus``); SUS
  scores from ``core.domain``.

Functions that show feedback results take an optional ``viewer``; when given, only leads,
coordinators and admins may read them (``PermissionDenied`` otherwise). Exports contain
pseudonymous study keys and user ids only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix
from sqlalchemy.orm import Session

from core.domain import CLASS_NAMES, Role
from core.stats.agreement import cohen_kappa, fleiss_kappa
from core.stats.sus import sus_interval
from db.repository import FEEDBACK_READER_ROLES, ValidationError, _require_role, _user, log_event
from db.repository.analytics import audit_frame, current_reads, feedback_frame
from db.schema import AuditAction

EXPORT_KINDS: tuple[str, ...] = ("reviews", "agreement", "feedback", "audit")

def _agreement_rows(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    rows = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        same = (g["finding"] == g["ai_label"]).to_numpy()
        rows.append({
            **dict(zip(keys, key, strict=True)),
            "n_cases": len(g),
            "percent_agreement": float(100.0 * same.mean()),
            "kappa": cohen_kappa(g["finding"].tolist(), g["ai_label"].tolist()),
            "kappa_linear": cohen_kappa(g["finding"].tolist(), g["ai_label"].tolist(), weights="linear"),
            "reader_said_agree": int((g["agreement"] == "agree").sum()),
        })
    cols = keys + ["n_cases", "percent_agreement", "kappa", "kappa_linear", "reader_said_agree"]
    return pd.DataFrame(rows, columns=cols)


def agreement_table(s: Session, by: str = "model") -> pd.DataFrame:
    """Reader-vs-AI agreement per model, or per reader and model.

    Args:
        by: "model" (all readers pooled, one row per model) or "reader" (one row per reader and
            model: a reader compared with different models is not pooled).

    Returns:
        DataFrame: ``model_id`` (and ``reader_id``, ``reader`` for by="reader"), ``n_cases``
        (current reviews), ``percent_agreement`` (finding == AI label, 0-100), ``kappa``
        (Cohen, unweighted), ``kappa_linear`` (linear weights, normal < benign < malignant),
        ``reader_said_agree`` (reviews where the reader ticked "agree"). Empty when no reviews.

    Raises:
        ValidationError: ``by`` is neither "model" nor "reader".
    """
    if by not in ("model", "reader"):
        raise ValidationError(f"Agreement can be grouped by 'model' or 'reader', not {by!r}.")
    df = current_reads(s)
    keys = ["model_id"] if by == "model" else ["reader_id", "reader", "model_id"]
    return _agreement_rows(df, keys)


def reader_ai_confusion(s: Session, model_id: str, reader_id: int | None = None) -> pd.DataFrame:
    """Confusion matrix of reader finding (rows) against the AI label (columns) for one model.

    Returns:
        int DataFrame 3 x 3, index ``reader: normal`` .. ``reader: malignant``, columns
        ``AI: normal`` .. ``AI: malignant`` (class order ``core.domain.CLASS_NAMES``); counts of
        current reviews (of ``reader_id`` only, when given). All zeros when there are none.
    """
    df = current_reads(s)
    df = df[df["model_id"] == model_id]
    if reader_id is not None:
        df = df[df["reader_id"] == int(reader_id)]
    labels = list(CLASS_NAMES)
    if df.empty:
        m = np.zeros((len(labels), len(labels)), dtype=int)
    else:
        m = confusion_matrix(df["finding"], df["ai_label"], labels=labels)
    return pd.DataFrame(m, index=[f"reader: {c}" for c in labels], columns=[f"AI: {c}" for c in labels])


def fleiss_kappa_table(s: Session) -> pd.DataFrame:
    """Fleiss' kappa among readers who read the same studies (current reviews only).

    The subject is a series (one per study for most uploads): a reader counts once per series,
    with their newest current read of it (they may have read it next to several models).
    Fleiss 1971 needs the same number of raters per subject, so series are grouped by how many
    readers read them (2, 3, ...); one row per group. Series read by a single reader are left out.

    Returns:
        DataFrame with columns ``n_readers_per_study``, ``n_studies``, ``kappa`` (NaN when all
        reads fall in one class); empty when no study has two or more current reviews.
    """
    df = current_reads(s)
    rows = []
    if not df.empty:
        df = df.sort_values("review_id").drop_duplicates(["series_id", "reader_id"], keep="last")
        table = pd.crosstab(df["series_id"], df["finding"]).reindex(columns=list(CLASS_NAMES), fill_value=0)
        sizes = table.sum(axis=1)
        for m in sorted(set(sizes[sizes >= 2])):
            sub = table[sizes == m].to_numpy()
            rows.append({"n_readers_per_study": int(m), "n_studies": int(sub.shape[0]), "kappa": fleiss_kappa(sub)})
    return pd.DataFrame(rows, columns=["n_readers_per_study", "n_studies", "kappa"])


def _check_viewer(s: Session, viewer, what: str) -> None:
    if viewer is not None:
        _require_role(_user(s, viewer, "viewer"), FEEDBACK_READER_ROLES, what)


def sus_summary(s: Session, *, viewer=None) -> pd.DataFrame:
    """SUS scores per role and overall: n, mean, median, sd, 95 % t-interval of the mean.

    Each user's every questionnaire counts (no de-duplication by user).

    Returns:
        DataFrame with columns ``role`` (a Role value or "all"), ``n``, ``mean``, ``median``, ``sd``,
        ``ci_low``, ``ci_high``; roles without answers are left out; empty when none.

    Raises:
        PermissionDenied: ``viewer`` given and not a lead, coordinator or admin.
    """
    _check_viewer(s, viewer, "read feedback results")
    df = feedback_frame(s)
    rows = []
    groups = [(r.value, df[df["role"] == r.value]) for r in Role] + [("all", df)]
    for role, g in groups:
        if g.empty:
            continue
        x = g["sus_score"].to_numpy(dtype=float)
        lo, hi = sus_interval(x)
        rows.append({"role": role, "n": int(x.size), "mean": float(x.mean()), "median": float(np.median(x)),
                     "sd": float(x.std(ddof=1)) if x.size > 1 else float("nan"), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["role", "n", "mean", "median", "sd", "ci_low", "ci_high"])


def feedback_texts(s: Session, *, viewer=None) -> pd.DataFrame:
    """Free-text feedback with the answerer's role (no names), newest first; blank answers dropped.

    Returns:
        DataFrame with columns ``created_at``, ``role``, ``sus_score``, ``helped``, ``hindered``.

    Raises:
        PermissionDenied: ``viewer`` given and not a lead, coordinator or admin.
    """
    _check_viewer(s, viewer, "read feedback results")
    df = feedback_frame(s)
    df = df[(df["helped"].str.strip() != "") | (df["hindered"].str.strip() != "")]
    cols = ["created_at", "role", "sus_score", "helped", "hindered"]
    return df.sort_values("feedback_id", ascending=False)[cols].reset_index(drop=True)


def export_frame(s: Session, what: str) -> pd.DataFrame:
    """The table behind :func:`export_csv` (see there)."""
    if what == "reviews":
        df = current_reads(s, include_superseded=True)
        current = set(current_reads(s)["review_id"])
        df["current"] = df["review_id"].isin(current)
        return df.drop(columns=["reader"])
    if what == "agreement":
        per_model = agreement_table(s, "model").assign(reader_id=pd.NA)
        per_reader = agreement_table(s, "reader").drop(columns=["reader"])
        both = pd.concat([per_model.assign(level="model"), per_reader.assign(level="reader")], ignore_index=True)
        return both[["level", "model_id", "reader_id", "n_cases", "percent_agreement", "kappa", "kappa_linear",
                     "reader_said_agree"]]
    if what == "feedback":
        return feedback_frame(s)
    if what == "audit":
        return audit_frame(s)
    raise ValidationError(f"Unknown export {what!r}: choose one of {', '.join(EXPORT_KINDS)}.")


def export_csv(s: Session, what: str, *, viewer=None) -> str:
    """Export one table as CSV text (UTF-8, header row, comma-separated, ISO times in UTC).

    Args:
        what: "reviews" (every review, superseded ones flagged ``current=False``, with the AI read
            shown), "agreement" (per model and per reader), "feedback" (SUS answers, scores, free
            text, role), "audit" (audit events).
        viewer: the user exporting; when given, "feedback" and "audit" need a lead, coordinator or
            admin, and an "export" audit event is recorded.

    Returns:
        str CSV. Identifiers are pseudonymous study keys and numeric user ids only.

    Raises:
        ValidationError: unknown ``what``. PermissionDenied: see ``viewer``.
    """
    if what not in EXPORT_KINDS:
        raise ValidationError(f"Unknown export {what!r}: choose one of {', '.join(EXPORT_KINDS)}.")
    if viewer is not None:
        user = _user(s, viewer, "viewer")
        roles = FEEDBACK_READER_ROLES if what in ("feedback", "audit") else set(Role)
        _require_role(user, roles, f"export {what}")
        df = export_frame(s, what)
        log_event(s, user_id=user.id, action=AuditAction.EXPORT, object_type="export", object_id=what,
                  detail=f"{len(df)} rows")
    else:
        df = export_frame(s, what)
    return df.to_csv(index=False)
