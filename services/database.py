"""Opening the LungReview database for the services: the engine (migrated to head) and session
factories, and the errors a caller may show. A thin door to ``db.session`` so that callers above
the services (the dashboard) never import ``db`` or SQLAlchemy themselves."""

from __future__ import annotations

from typing import Any

from db.repository import NotFoundError, PermissionDenied, RepositoryError, ValidationError
from db.session import DatabaseError, make_engine, make_session_factory

__all__ = [
    "DatabaseError", "NotFoundError", "PermissionDenied", "RepositoryError", "ValidationError", "open_engine",
    "session_factory",
]


def open_engine(url: str | None = None) -> Any:
    """The SQLAlchemy ``Engine`` of ``url`` (default ``get_settings().db_url``), migrated to head.

    Raises:
        db.session.DatabaseError: the database cannot be opened or migrated.
    """
    return make_engine(url)


def session_factory(engine: Any, *, read_only: bool = False) -> Any:
    """A ``sessionmaker`` on ``engine`` (``db.session.make_session_factory``); the services take it.

    Args:
        read_only: True for callers that only read (deferred BEGIN on SQLite; never write with it).
    """
    return make_session_factory(engine, read_only=read_only)
