"""Reading and writing LungReview rows. Every function takes a ``Session`` and never commits.

The caller owns the transaction (SQLAlchemy 2 "sessions outside the functions"); in the app the
services (``services.reading``, ``services.accounts``) do::

    with factory.begin() as s:
        study = add_study(s, study_key=..., ..., uploaded_by=user)
        series = add_series(s, study_id=study.id, series_key=..., modality="CT", n_slices=30)
        inf = add_inference(s, series_id=series.id, ...)

Validation happens BEFORE anything is written: a bad value raises :class:`ValidationError`, a
missing row :class:`NotFoundError`, a role that may not do this :class:`PermissionDenied`; the
message says what is wrong and what to do, and the session holds no new rows from the call.

Audit: the writing functions record their own :class:`~db.schema.AuditEvent` (upload, inference,
review, feedback, admin change; :func:`authenticate` records sign-in and failed sign-in), so
callers must NOT log those again. Use :func:`log_event` for everything else (sign-out, export).

Role rules (also enforced here, not only in the dashboard): only radiologists and admins add
reviews; only admins create (after the first user), activate/deactivate or re-role users; leads,
coordinators and admins read feedback results (``services.analytics``). Users are passed as a
:class:`~db.schema.User` or its integer id.

Modules: ``common`` (errors, value checks, audit log), ``users`` (password hashing, users,
sign-in), ``studies`` (studies, series, inferences), ``reviews``, ``feedback``, ``reports``
(worklist, row counts), ``nodules`` (nodule-detector findings, per-nodule reads, Lung-RADS
categories and their summaries). Everything public is re-exported here, so ``from db import repository
as repo; repo.create_user(...)`` and ``from db.repository import add_review`` work.
"""

from __future__ import annotations

import sys
import types

from db.repository import users as _users
from db.repository.common import (
    FEEDBACK_READER_ROLES,
    REVIEWER_ROLES,
    NotFoundError,
    PermissionDenied,
    RepositoryError,
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
from db.repository.feedback import add_feedback
from db.repository.nodules import (
    MAX_NODULES_PER_DETECTION,
    MODEL_SUMMARY_COLUMNS,
    SERIES_SUMMARY_COLUMNS,
    NoduleState,
    current_lungrads,
    current_nodule_reads,
    current_nodule_reads_by_reader,
    find_detection,
    get_detection,
    latest_detection,
    list_nodules,
    nodule_model_summary,
    nodule_read_history,
    nodule_series_summary,
    nodule_states,
    record_added_nodule,
    record_ai_nodules,
    record_lungrads,
    record_nodule_decision,
    withdraw_nodule_read,
)
from db.repository.reports import WORKLIST_COLUMNS, count_rows, worklist
from db.repository.reviews import (
    _current_filter,
    add_review,
    current_review,
    current_reviews,
    review_history,
)
from db.repository.studies import (
    MAX_DESCRIPTION,
    add_inference,
    add_series,
    add_study,
    find_inference,
    find_series,
    find_study_by_hash,
    get_series,
    get_study,
    latest_inference,
)
from db.repository.users import (
    _dummy_hash,
    _hash_password,
    authenticate,
    create_user,
    has_users,
    list_users,
    set_user_active,
    set_user_role,
)


class _Package(types.ModuleType):
    """This package's module type: ``_BCRYPT_ROUNDS`` reads and writes ``users._BCRYPT_ROUNDS``,
    so ``monkeypatch.setattr(repo, "_BCRYPT_ROUNDS", 4)`` lowers the cost where it is used."""

    @property
    def _BCRYPT_ROUNDS(self) -> int:  # noqa: N802 - the historic name of the setting
        return _users._BCRYPT_ROUNDS

    @_BCRYPT_ROUNDS.setter
    def _BCRYPT_ROUNDS(self, value: int) -> None:  # noqa: N802
        _users._BCRYPT_ROUNDS = int(value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "FEEDBACK_READER_ROLES", "MAX_DESCRIPTION", "REVIEWER_ROLES", "WORKLIST_COLUMNS", "NotFoundError",
    "PermissionDenied", "RepositoryError", "ValidationError", "add_feedback", "add_inference", "add_review",
    "add_series", "add_study", "authenticate", "count_rows", "create_user", "current_review", "current_reviews",
    "find_inference", "find_series", "find_study_by_hash", "get_series", "get_study", "has_users",
    "latest_inference", "list_users", "log_event", "review_history", "set_user_active", "set_user_role",
    "worklist", "_choice", "_current_filter", "_dummy_hash", "_hash_password", "_hexdigest", "_jsonable", "_real",
    "_require_role", "_user", "_whole",
    # nodules
    "MAX_NODULES_PER_DETECTION", "MODEL_SUMMARY_COLUMNS", "SERIES_SUMMARY_COLUMNS", "NoduleState",
    "current_lungrads", "current_nodule_reads", "current_nodule_reads_by_reader", "find_detection", "get_detection",
    "latest_detection", "list_nodules", "nodule_model_summary", "nodule_read_history", "nodule_series_summary",
    "nodule_states", "record_added_nodule", "record_ai_nodules", "record_lungrads", "record_nodule_decision",
    "withdraw_nodule_read",
]
