"""Server-side sign-in sessions: the rows behind the dashboard's session cookie.

A successful password sign-in starts a session: :func:`start_session` draws a token with
``secrets.token_urlsafe(32)`` (256 random bits; Python docs, ``secrets``: "32 bytes is
sufficient for the typical use case"), gives it to the caller (which hands it to the browser
only) and stores only its SHA-256 hex digest (:func:`hash_token`) in ``auth_sessions``. A copy
of the database therefore holds no usable token: a token cannot be recovered from its digest.

A session is valid while all of these hold (checked by :func:`check_session` on every use):

* it was not ended (``revoked_at`` is NULL): sign-out, an admin, or an earlier check ends it;
* ``now < expires_at``: the absolute lifetime, ``created_at`` + ``session_max_hours``;
* ``now - last_seen_at <= session_idle_min``: the idle timeout. ``last_seen_at`` is moved
  forward at most once per :data:`TOUCH_INTERVAL` (so a page that reruns often does not write
  on every rerun); the idle timeout is therefore exact to within that interval;
* the user's account is active.

A check that finds a session expired or idle ends it in the same transaction (``ended_reason``
idle / expired / user-inactive), so a stale token is refused for good. Both limits come from
``core.settings.Settings`` (``LUNGREVIEW_SESSION_IDLE_MIN``, ``LUNGREVIEW_SESSION_MAX_HOURS``);
OWASP's Session Management Cheat Sheet ("Session Expiration") asks for both an idle and an
absolute timeout (idle: 2-5 minutes for high-value applications, 15-30 for low-risk ones), and
OWASP ASVS 4.0 requirement 3.3.2 for re-authentication at intervals even while a session is in
use. The defaults, 30 minutes idle and 12 hours in all (one long reading shift), are this
project's choice; shorten them where local policy asks for it.

Every function here takes a ``Session`` and never commits (:func:`create_session`,
:func:`check_session`, :func:`peek_session`, :func:`end_session_row`, :func:`end_user_session_rows`,
:func:`active_sessions`); the services that own the transactions are ``services.sessions``
(``start_session``, ``resume_session``, ``end_session``, ``end_user_sessions``,
``count_active_sessions``), and pages call only those. Every function takes ``now`` for tests
(timezone-aware UTC; default: the current time).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.domain import Role
from core.settings import get_settings
from db.repository.common import NotFoundError, PermissionDenied, ValidationError, log_event
from db.schema import AuditAction, AuthSession, SessionEndReason, User, utc_now

#: ``last_seen_at`` is written at most this often per session.
TOUCH_INTERVAL = timedelta(seconds=60)

#: Longest token accepted from a browser (``token_urlsafe(32)`` gives 43 characters).
MAX_TOKEN_CHARS = 128


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session may live: ``idle`` without use, ``lifetime`` in all (both > 0)."""

    idle: timedelta
    lifetime: timedelta

    @classmethod
    def from_settings(cls) -> SessionPolicy:
        """From ``get_settings()``: ``session_idle_min`` minutes and ``session_max_hours`` hours."""
        settings = get_settings()
        return cls(idle=timedelta(minutes=settings.session_idle_min),
                   lifetime=timedelta(hours=settings.session_max_hours))


@dataclass(frozen=True)
class IssuedSession:
    """A new session: ``token`` (give it to the browser only), its row id and absolute expiry (UTC)."""

    token: str = ""
    session_id: int = 0
    expires_at: datetime | None = None

    def __repr__(self) -> str:  # never print the token
        return f"IssuedSession(session_id={self.session_id!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True)
class SessionCheck:
    """The outcome of :func:`check_session`.

    ``user`` is the signed-in ``User`` row when the token is valid, else None; then ``ended``
    says why (None for a token that was never issued or is malformed).
    """

    user: User | None
    ended: SessionEndReason | None = None
    session_id: int | None = None
    expires_at: datetime | None = None

    @property
    def valid(self) -> bool:
        """True when the token belongs to a live session of an active user."""
        return self.user is not None


def hash_token(token: str) -> str:
    """SHA-256 hex digest (64 lowercase hex characters) of ``token`` encoded as UTF-8 (FIPS 180-4).

    Raises:
        ValidationError: ``token`` is not a non-empty string of at most :data:`MAX_TOKEN_CHARS`.
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise ValidationError("A session token must be a non-empty string of at most "
                              f"{MAX_TOKEN_CHARS} characters; sign in again.")
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _utc(value: datetime | None) -> datetime:
    """``value`` as aware UTC (SQLite returns stored UTC times naive); None -> now."""
    if value is None:
        return utc_now()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)



def create_session(s: Session, user_id: int, *, now: datetime | None = None,
                   policy: SessionPolicy | None = None) -> IssuedSession:
    """Insert a session row for an active user and return the new token (only its hash is stored).

    Raises:
        NotFoundError: no user ``user_id``.
        PermissionDenied: the account is deactivated.
    """
    policy = policy or SessionPolicy.from_settings()
    now = _utc(now)
    user = s.get(User, int(user_id))
    if user is None:
        raise NotFoundError(f"There is no user with id {user_id}; sign in again or ask an admin.")
    if not user.active:
        raise PermissionDenied(f"The account {user.username!r} is deactivated and may not sign in.")
    token = secrets.token_urlsafe(32)
    row = AuthSession(user_id=user.id, token_hash=hash_token(token), created_at=now, last_seen_at=now,
                      expires_at=now + policy.lifetime)
    s.add(row)
    s.flush()
    return IssuedSession(token=token, session_id=row.id, expires_at=row.expires_at)


def _end(row: AuthSession, reason: SessionEndReason, now: datetime) -> None:
    row.revoked_at = now
    row.ended_reason = reason.value


def _verdict(s: Session, token: str, now: datetime,
             policy: SessionPolicy) -> tuple[SessionCheck, AuthSession | None, SessionEndReason | None, bool]:
    """The outcome of checking ``token`` at ``now`` and what the check must write.

    Returns:
        ``(check, row, end, touch)``: the :class:`SessionCheck` to return; the session's row
        (None for a malformed or unknown token); ``end``: the reason to end a live session that
        has lapsed (expired, idle, user inactive), else None; ``touch``: True when a valid
        session's ``last_seen_at`` is :data:`TOUCH_INTERVAL` old or older.
    """
    try:
        digest = hash_token(token)
    except ValidationError:
        return SessionCheck(user=None), None, None, False
    row = s.scalar(select(AuthSession).where(AuthSession.token_hash == digest))
    if row is None:
        return SessionCheck(user=None), None, None, False
    if row.revoked_at is not None:
        return SessionCheck(user=None, ended=SessionEndReason(row.ended_reason), session_id=row.id), row, None, False
    reason = None
    if now >= _utc(row.expires_at):
        reason = SessionEndReason.EXPIRED
    elif now - _utc(row.last_seen_at) > policy.idle:
        reason = SessionEndReason.IDLE
    elif not row.user.active:
        reason = SessionEndReason.USER_INACTIVE
    if reason is not None:
        return SessionCheck(user=None, ended=reason, session_id=row.id), row, reason, False
    touch = now - _utc(row.last_seen_at) >= TOUCH_INTERVAL
    return SessionCheck(user=row.user, session_id=row.id, expires_at=_utc(row.expires_at)), row, None, touch


def check_session(s: Session, token: str, *, now: datetime | None = None,
                  policy: SessionPolicy | None = None) -> SessionCheck:
    """Look up ``token`` and say whether it is valid now; end the session if it has lapsed.

    On a valid token ``last_seen_at`` is set to ``now`` when it is older than
    :data:`TOUCH_INTERVAL`. Never raises for a bad token: a malformed or unknown token gives
    ``SessionCheck(user=None, ended=None)``.

    Returns:
        :class:`SessionCheck`; ``ended`` is the stored reason for a session that had already
        ended, or the reason this call ended it (idle, expired, user-inactive).
    """
    policy = policy or SessionPolicy.from_settings()
    now = _utc(now)
    check, row, end, touch = _verdict(s, token, now, policy)
    if end is not None:
        _end(row, end, now)
        s.flush()
    elif touch:
        row.last_seen_at = now
        s.flush()
    return check


def peek_session(s: Session, token: str, *, now: datetime | None = None,
                 policy: SessionPolicy | None = None) -> SessionCheck | None:
    """:func:`check_session` without writing: its outcome when it would write nothing, else None.

    None means the check must write (a lapsed live session to end, or ``last_seen_at`` to move
    forward): call :func:`check_session` in a write transaction then. Works in a read-only
    session (``db.session.make_session_factory(read_only=True)``).
    """
    policy = policy or SessionPolicy.from_settings()
    check, _, end, touch = _verdict(s, token, _utc(now), policy)
    return None if end is not None or touch else check


def end_session_row(s: Session, token: str, reason: SessionEndReason = SessionEndReason.SIGN_OUT, *,
                    now: datetime | None = None) -> bool:
    """End the session of ``token`` (sign-out). Returns True when a live session was ended.

    An unknown, malformed or already ended token is not an error (returns False).
    """
    try:
        digest = hash_token(token)
    except ValidationError:
        return False
    row = s.scalar(select(AuthSession).where(AuthSession.token_hash == digest))
    if row is None or row.revoked_at is not None:
        return False
    _end(row, SessionEndReason(reason), _utc(now))
    s.flush()
    return True


def end_user_session_rows(s: Session, actor_id: int, user_id: int, *, now: datetime | None = None) -> int:
    """End every live session of ``user_id`` (admins only; also the admin's own). Audited.

    Returns:
        How many sessions were ended (0 when there were none).

    Raises:
        NotFoundError: no user ``actor_id`` or ``user_id``.
        PermissionDenied: ``actor_id`` is not an active admin.
    """
    actor = s.get(User, int(actor_id))
    target = s.get(User, int(user_id))
    if actor is None or target is None:
        raise NotFoundError(f"There is no user with id {user_id if actor else actor_id}; reload the page.")
    if not actor.active or actor.role != Role.ADMIN.value:
        raise PermissionDenied(f"{actor.username!r} has the role {actor.role!r}; only an active admin may "
                               "end another user's sessions.")
    now = _utc(now)
    result = s.execute(
        update(AuthSession)
        .where(AuthSession.user_id == target.id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, ended_reason=SessionEndReason.ENDED_BY_ADMIN.value)
        .execution_options(synchronize_session="fetch")
    )
    ended = int(result.rowcount or 0)
    log_event(s, user_id=actor.id, action=AuditAction.ADMIN_CHANGE, object_type="user", object_id=target.id,
              detail=f"ended {ended} session(s) of {target.username!r}")
    return ended


def active_sessions(s: Session, user_id: int, *, now: datetime | None = None,
                    policy: SessionPolicy | None = None) -> list[AuthSession]:
    """The sessions of ``user_id`` that are not ended, not expired and not idle at ``now``."""
    policy = policy or SessionPolicy.from_settings()
    now = _utc(now)
    rows = s.scalars(select(AuthSession).where(AuthSession.user_id == int(user_id),
                                               AuthSession.revoked_at.is_(None)))
    return [r for r in rows if now < _utc(r.expires_at) and now - _utc(r.last_seen_at) <= policy.idle]
