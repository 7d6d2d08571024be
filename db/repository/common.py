"""Errors, role sets, value checks and the audit log shared by the repository modules.

Everything here takes plain values or a ``Session`` and never commits (see ``db.repository``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from core.domain import Role
from db.schema import AuditAction, AuditEvent, User


class RepositoryError(Exception):
    """Base of the errors raised by ``db.repository`` and ``services.analytics``."""


class ValidationError(RepositoryError):
    """A value is missing, of the wrong kind or out of range; nothing was written."""


class NotFoundError(RepositoryError):
    """A referenced row (user, study, inference) does not exist."""


class PermissionDenied(RepositoryError):
    """The acting user's role (or an inactive account) does not allow this action."""


#: Roles that may add reviews.
REVIEWER_ROLES = frozenset({Role.RADIOLOGIST, Role.ADMIN})
#: Roles that may read feedback (SUS) results and free text.
FEEDBACK_READER_ROLES = frozenset({Role.LEAD, Role.COORDINATOR, Role.ADMIN})

_HEX = re.compile(r"^[0-9a-f]+$")


def _choice(value: Any, choices: type, what: str) -> str:
    try:
        return choices(str(value).strip().lower()).value
    except ValueError:
        allowed = ", ".join(c.value for c in choices)
        raise ValidationError(f"Unknown {what} {value!r}: choose one of {allowed}.") from None


def _whole(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or value is None:
        raise ValidationError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}.")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}.") from None
    if not as_float.is_integer() or not lo <= as_float <= hi:
        raise ValidationError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}.")
    return int(as_float)


def _real(value: Any, what: str, lo: float | None = None, hi: float | None = None) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} must be a number, got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(x):
        raise ValidationError(f"{what} must be a finite number, got {value!r}.")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        rng = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise ValidationError(f"{what} must be {rng}, got {x}.")
    return x


def _hexdigest(value: Any, what: str, lengths: Iterable[int]) -> str:
    text = str(value or "").strip().lower()
    lengths = tuple(lengths)
    if len(text) not in lengths or not _HEX.match(text):
        raise ValidationError(
            f"{what} must be a lower-case hex digest of {' or '.join(map(str, lengths))} characters, "
            f"got {value!r}. Pass the value computed by core.imaging / the model registry."
        )
    return text


def _user(s: Session, user: User | int, what: str = "user") -> User:
    if isinstance(user, User):
        return user
    if isinstance(user, bool) or not isinstance(user, int | np.integer):
        raise ValidationError(f"{what} must be a user or a user id, got {user!r}.")
    found = s.get(User, int(user))
    if found is None:
        raise NotFoundError(f"There is no user with id {user}; sign in again or ask an admin.")
    return found


def _require_role(user: User, roles: Iterable[Role], action: str) -> None:
    if not user.active:
        raise PermissionDenied(f"The account {user.username!r} is deactivated and may not {action}.")
    if user.role not in {r.value for r in roles}:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise PermissionDenied(f"{user.username!r} has the role {user.role!r}; only {allowed} may {action}.")


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars/arrays become plain Python (and fail early)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    try:
        return json.loads(json.dumps(value, default=default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"Value cannot be stored as JSON ({exc}); pass plain numbers and strings.") from exc


def log_event(s: Session, *, user_id: int | None, action: AuditAction | str, object_type: str = "",
              object_id: str | int | None = "", detail: str = "") -> AuditEvent:
    """Append one audit event (who, action, object type + id, when, detail).

    Args:
        user_id: acting user's id, or None (e.g. failed sign-in with an unknown name).
        action: an :class:`~db.schema.AuditAction` value, e.g. "sign-out", "export".
        object_type, object_id: what was acted on (e.g. "study", 12); strings up to 32/64 chars.
        detail: free text without patient identifiers.

    Returns:
        The new AuditEvent (flushed, so it has an id).

    Raises:
        ValidationError: unknown action or over-long object type/id.
    """
    action = _choice(action, AuditAction, "audit action")
    object_type = str(object_type or "")
    object_id = "" if object_id is None else str(object_id)
    if len(object_type) > 32 or len(object_id) > 64:
        raise ValidationError("Audit object type (max 32) or object id (max 64 characters) is too long.")
    row = AuditEvent(user_id=user_id, action=action, object_type=object_type, object_id=object_id,
                     detail=str(detail or ""))
    s.add(row)
    s.flush()
    return row
