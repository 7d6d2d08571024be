"""Archive runs and their results (``services.archive``): rows of ``archive_runs`` and ``archive_results``.

Every function takes a ``Session`` and never commits; the caller owns the transaction. Only
pseudonymous keys are stored (``core.imaging.study_key_for``); a raw UID is refused like
everywhere else (:func:`db.repository.studies._pseudonymous_key`).

One row per (run, series key, model) (``uq_archive_results_item``): :func:`record_done` and
:func:`record_failure` add it or bring it up to date, and leave a ``done`` row as it is, so a
series is never scored twice in a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.domain import Finding, Role
from db.repository.common import (
    NotFoundError,
    ValidationError,
    _choice,
    _hexdigest,
    _jsonable,
    _real,
    _require_role,
    _user,
    _whole,
)
from db.repository.studies import MAX_DESCRIPTION, _pseudonymous_key
from db.schema import (
    ArchiveFailure,
    ArchiveResult,
    ArchiveResultStatus,
    ArchiveRun,
    ArchiveRunStatus,
    Series,
    User,
    utc_now,
)

__all__ = [
    "ARCHIVE_ROLES",
    "create_run",
    "get_run",
    "list_runs",
    "record_done",
    "record_failure",
    "result_for",
    "results_of",
    "series_ids_by_key",
    "set_run_status",
    "touch_run",
]

#: Roles that may start an archive run (the Compare page's roles).
ARCHIVE_ROLES = frozenset({Role.LEAD, Role.ADMIN})
#: Longest failure message stored (characters).
MAX_MESSAGE = 2000
_MODEL_KINDS = ("slice_classifier", "nodule_detector")


def create_run(s: Session, *, query: dict[str, Any], models: Sequence[dict[str, Any]], max_attempts: int,
               created_by: User | int | None = None) -> ArchiveRun:
    """Add a run in status ``running``.

    Args:
        query: the search as JSON (``services.archive.ArchiveQuery.to_dict()``); must hold no
            identifier (the service passes dates, a description filter and limits only).
        models: ``[{"id": str, "sha256": 64 hex or "", "kind": "slice_classifier" |
            "nodule_detector"}, ...]``, at least one, ids distinct.
        max_attempts: attempts per series and model, 1-100.
        created_by: the lead or admin who started it, or None (the command line without ``--user``).

    Returns:
        The new ArchiveRun (flushed, so it has an id).

    Raises:
        ValidationError: no model, a repeated or malformed model entry, attempts out of range.
        NotFoundError / PermissionDenied: unknown or deactivated user, or a role other than lead/admin.
    """
    attempts = _whole(max_attempts, "Attempts per series", 1, 100)
    clean: list[dict[str, str]] = []
    for m in models:
        mid = str((m or {}).get("id", "")).strip()
        if not 1 <= len(mid) <= 128:
            raise ValidationError(f"A model id must have 1-128 characters, got {mid!r}.")
        sha = str(m.get("sha256") or "")
        if sha:
            sha = _hexdigest(sha, f"The sha256 of model {mid}", (64,))
        kind = str(m.get("kind") or "slice_classifier")
        if kind not in _MODEL_KINDS:
            raise ValidationError(f"Model {mid} has the unknown kind {kind!r}; expected one of {_MODEL_KINDS}.")
        clean.append({"id": mid, "sha256": sha, "kind": kind})
    if not clean:
        raise ValidationError("Choose at least one model to score the archive with.")
    if len({m["id"] for m in clean}) != len(clean):
        raise ValidationError("A model is listed twice; list each model once.")
    user_id = None
    if created_by is not None:
        user = _user(s, created_by, "created_by")
        _require_role(user, ARCHIVE_ROLES, "start archive runs")
        user_id = user.id
    run = ArchiveRun(query=_jsonable(dict(query)), models=clean, status=ArchiveRunStatus.RUNNING.value,
                     message="", max_attempts=attempts, n_series=0, created_by=user_id)
    s.add(run)
    s.flush()
    return run


def get_run(s: Session, run_id: int) -> ArchiveRun:
    """The run with this id. Raises NotFoundError."""
    run = s.get(ArchiveRun, _whole(run_id, "Run id", 1, 2**62))
    if run is None:
        raise NotFoundError(f"There is no archive run {run_id}; list the runs with `lungreview-archive list`.")
    return run


def list_runs(s: Session, limit: int = 100) -> list[ArchiveRun]:
    """The newest ``limit`` runs, newest first."""
    return list(s.scalars(select(ArchiveRun).order_by(ArchiveRun.id.desc()).limit(int(limit))))


def set_run_status(s: Session, run_id: int, status: ArchiveRunStatus | str, message: str = "",
                   n_series: int | None = None) -> ArchiveRun:
    """Set a run's status and message (and its series count), and its heartbeat to now.

    ``finished_at`` is set when the status becomes ``finished`` and cleared otherwise.

    Raises:
        ValidationError: unknown status, negative series count. NotFoundError: no such run.
    """
    run = get_run(s, run_id)
    run.status = _choice(status, ArchiveRunStatus, "run status")
    run.message = str(message or "")[:MAX_MESSAGE]
    if n_series is not None:
        run.n_series = _whole(n_series, "Number of series", 0, 100_000_000)
    now = utc_now()
    run.heartbeat_at = now
    run.finished_at = now if run.status == ArchiveRunStatus.FINISHED else None
    s.flush()
    return run


def touch_run(s: Session, run_id: int) -> None:
    """Set the run's heartbeat to now (the driver is alive). Raises NotFoundError."""
    get_run(s, run_id).heartbeat_at = utc_now()
    s.flush()


def result_for(s: Session, run_id: int, series_key: str, model_id: str) -> ArchiveResult | None:
    """The row of (run, series, model), or None."""
    return s.scalar(select(ArchiveResult).where(
        ArchiveResult.run_id == int(run_id), ArchiveResult.series_key == str(series_key).strip().lower(),
        ArchiveResult.model_id == str(model_id)))


def results_of(s: Session, run_id: int, model_ids: Iterable[str] | None = None) -> list[ArchiveResult]:
    """Every row of a run (optionally of some models), in insertion order."""
    query = select(ArchiveResult).where(ArchiveResult.run_id == int(run_id))
    if model_ids is not None:
        query = query.where(ArchiveResult.model_id.in_(list(model_ids)))
    return list(s.scalars(query.order_by(ArchiveResult.id)))


def _item(s: Session, run_id: int, study_key: str, series_key: str, model_id: str) -> tuple[ArchiveResult | None,
                                                                                            str, str, str]:
    get_run(s, run_id)
    study = _pseudonymous_key(study_key, "study key")
    series = _pseudonymous_key(series_key, "series key")
    model = str(model_id or "").strip()
    if not 1 <= len(model) <= 128:
        raise ValidationError(f"A model id must have 1-128 characters, got {model!r}.")
    return result_for(s, run_id, series, model), study, series, model


def _timings(retrieve_ms: float | None, decode_ms: float | None, score_ms: float | None) -> list[float | None]:
    return [None if v is None else _real(v, what, 0.0) for v, what in
            ((retrieve_ms, "Retrieval time"), (decode_ms, "Decoding time"), (score_ms, "Scoring time"))]


def record_done(s: Session, *, run_id: int, study_key: str, series_key: str, model_id: str, model_sha256: str,
                result: dict[str, Any], finding: str | None = None, series_score: float | None = None,
                is_ood: bool | None = None, n_nodules: int | None = None, description: str = "",
                n_slices: int | None = None, retrieve_ms: float | None = None, decode_ms: float | None = None,
                score_ms: float | None = None, worker: str = "") -> tuple[ArchiveResult, bool]:
    """Record that ``model_id`` scored the series: add the row, or turn a failed row into ``done``.

    Args:
        run_id: the run. study_key, series_key: pseudonymous keys (16-128 hex characters).
        model_id, model_sha256: the registry entry that scored (sha256: 64 hex, or "" when the
            model has no file hash, e.g. a detector without a card).
        result: the JSON result (see ``db.schema.ArchiveResult``).
        finding: a Finding value or None; series_score in [0, 1] or None; is_ood; n_nodules >= 0
            or None (typed copies of ``result`` for queries).
        description: de-identified series description (cut to 256 characters).
        n_slices: slices of the series. retrieve_ms, decode_ms, score_ms: times in ms (>= 0) or None.
        worker: which worker scored it (``host:pid``; cut to 64 characters).

    Returns:
        ``(row, added)``: ``added`` is False when the row was ``done`` already; it is then left
        exactly as it was (nothing is scored twice).

    Raises:
        ValidationError: a malformed key or value (nothing is written). NotFoundError: no such run.
    """
    row, study, series, model = _item(s, run_id, study_key, series_key, model_id)
    if row is not None and row.status == ArchiveResultStatus.DONE:
        return row, False
    sha = _hexdigest(model_sha256, "Model sha256", (64,)) if model_sha256 else ""
    if finding is not None:
        finding = _choice(finding, Finding, "finding")
    score = None if series_score is None else _real(series_score, "Series score", 0.0, 1.0)
    nodules = None if n_nodules is None else _whole(n_nodules, "Number of nodules", 0, 100_000)
    slices = None if n_slices is None else _whole(n_slices, "Number of slices", 1, 100_000_000)
    times = _timings(retrieve_ms, decode_ms, score_ms)
    payload = _jsonable(dict(result))
    if row is None:
        row = ArchiveResult(run_id=int(run_id), study_key=study, series_key=series, model_id=model, attempts=1,
                            history=[])
        s.add(row)
    else:
        row.history = [*list(row.history or []), {"failure": row.failure, "message": row.message}]
        row.attempts = int(row.attempts) + 1
    row.model_sha256 = sha
    row.status = ArchiveResultStatus.DONE.value
    row.failure = None
    row.message = ""
    row.result = payload
    row.finding, row.series_score = finding, score
    row.is_ood = None if is_ood is None else bool(is_ood)
    row.n_nodules, row.n_slices = nodules, slices
    row.description = str(description or "")[:MAX_DESCRIPTION]
    row.retrieve_ms, row.decode_ms, row.score_ms = times
    row.worker = str(worker or "")[:64]
    row.updated_at = utc_now()
    s.flush()
    return row, True


def record_failure(s: Session, *, run_id: int, study_key: str, series_key: str, model_id: str,
                   failure: ArchiveFailure | str, message: str, model_sha256: str = "", description: str = "",
                   retrieve_ms: float | None = None, decode_ms: float | None = None, worker: str = "",
                   ) -> tuple[ArchiveResult, bool]:
    """Record a failed attempt of ``model_id`` on the series: add a ``failed`` row, or count one
    more attempt on it (the earlier failure moves to ``history``).

    Args:
        failure: an :class:`~db.schema.ArchiveFailure` value. message: what went wrong and what
            to do (the typed error's message; cut to 2000 characters; no identifier: the errors of
            ``core.pacs.dicomweb`` and ``core.imaging`` name none).
        other arguments: as in :func:`record_done`.

    Returns:
        ``(row, added)``: ``added`` is False when the row was ``done`` already (left as it was).

    Raises:
        ValidationError: unknown failure, malformed key. NotFoundError: no such run.
    """
    row, study, series, model = _item(s, run_id, study_key, series_key, model_id)
    if row is not None and row.status == ArchiveResultStatus.DONE:
        return row, False
    reason = _choice(failure, ArchiveFailure, "failure")
    text = str(message or "").strip()[:MAX_MESSAGE]
    times = _timings(retrieve_ms, decode_ms, None)
    if row is None:
        row = ArchiveResult(run_id=int(run_id), study_key=study, series_key=series, model_id=model, attempts=1,
                            history=[])
        s.add(row)
    else:
        row.history = [*list(row.history or []), {"failure": row.failure, "message": row.message}]
        row.attempts = int(row.attempts) + 1
    row.status = ArchiveResultStatus.FAILED.value
    row.failure, row.message = reason, text
    row.model_sha256 = _hexdigest(model_sha256, "Model sha256", (64,)) if model_sha256 else row.model_sha256 or ""
    if description:
        row.description = str(description)[:MAX_DESCRIPTION]
    row.retrieve_ms, row.decode_ms = times[0], times[1]
    row.worker = str(worker or row.worker or "")[:64]
    row.updated_at = utc_now()
    s.flush()
    return row, True


def series_ids_by_key(s: Session, series_keys: Iterable[str]) -> dict[str, int]:
    """``series.id`` (the reading tables: uploaded or PACS-opened series) of each key that has one.

    The Compare page links an archive series to Read a study (``?case=<series id>``) only when it
    was opened there before; a key recorded in several studies gives its newest row.
    """
    keys = sorted({str(k).strip().lower() for k in series_keys})
    if not keys:
        return {}
    rows = s.execute(select(Series.series_key, Series.id).where(Series.series_key.in_(keys)).order_by(Series.id))
    return {k: int(i) for k, i in rows}
