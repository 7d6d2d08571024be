"""Server-side sign-in sessions, the use cases: start, resume, end one, end a user's, count.

Each function owns its transaction (``with factory.begin() as s:``) around the repository's
session functions (``db.repository.auth_sessions``: the rules, the token and its SHA-256, the
idle and absolute timeouts and their sources). The dashboard's cookie (``dashboard.auth``) calls
these only. Every function takes ``now`` for tests (timezone-aware UTC; default: the current
time).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from db.repository.auth_sessions import (
    MAX_TOKEN_CHARS,
    TOUCH_INTERVAL,
    IssuedSession,
    SessionCheck,
    SessionPolicy,
    active_sessions,
    check_session,
    create_session,
    end_session_row,
    end_user_session_rows,
    hash_token,
    peek_session,
)
from db.schema import SessionEndReason

__all__ = [
    "MAX_TOKEN_CHARS", "TOUCH_INTERVAL", "IssuedSession", "SessionCheck", "SessionEndReason", "SessionPolicy",
    "active_sessions", "check_session", "count_active_sessions", "create_session", "end_session", "end_session_row",
    "end_user_session_rows", "end_user_sessions", "hash_token", "peek_session", "resume_session", "start_session",
]


def start_session(factory: sessionmaker[Session], user_id: int, *, now: datetime | None = None,
                  policy: SessionPolicy | None = None) -> IssuedSession:
    """Start a session for a user who has just signed in (see :func:`create_session`)."""
    with factory.begin() as s:
        return create_session(s, user_id, now=now, policy=policy)


def resume_session(factory: sessionmaker[Session], token: str, *, now: datetime | None = None,
                   policy: SessionPolicy | None = None,
                   read_factory: sessionmaker[Session] | None = None) -> SessionCheck:
    """Check a token from the browser (see :func:`check_session`); pass a writing factory.

    With ``read_factory`` (a read-only factory on the same database) the token is first checked
    there (:func:`peek_session`), which takes no write lock; only a check that must write (at
    most once per ``TOUCH_INTERVAL`` per session, or to end a lapsed one) opens a write
    transaction. The dashboard checks the token on every script run of every browser session;
    on SQLite each write transaction takes the database's one write lock (``BEGIN IMMEDIATE``),
    so without ``read_factory`` every run of every session queues behind every other and behind
    every save.

    The returned ``user`` row stays readable after the transaction (``expire_on_commit=False``).
    """
    if read_factory is not None:
        with read_factory.begin() as s:
            check = peek_session(s, token, now=now, policy=policy)
        if check is not None:
            return check
    with factory.begin() as s:
        return check_session(s, token, now=now, policy=policy)


def end_session(factory: sessionmaker[Session], token: str,
                reason: SessionEndReason = SessionEndReason.SIGN_OUT, *, now: datetime | None = None) -> bool:
    """End one session (sign-out); see :func:`end_session_row`."""
    with factory.begin() as s:
        return end_session_row(s, token, reason, now=now)


def end_user_sessions(factory: sessionmaker[Session], actor_id: int, user_id: int, *,
                      now: datetime | None = None) -> int:
    """End all sessions of a user (Admin page); see :func:`end_user_session_rows`."""
    with factory.begin() as s:
        return end_user_session_rows(s, actor_id, user_id, now=now)


def count_active_sessions(factory: sessionmaker[Session], user_id: int, *, now: datetime | None = None,
                          policy: SessionPolicy | None = None) -> int:
    """How many live sessions ``user_id`` has (browsers signed in); see :func:`active_sessions`."""
    with factory.begin() as s:
        return len(active_sessions(s, user_id, now=now, policy=policy))

