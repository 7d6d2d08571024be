"""The services run on a fresh migrated database per test, on SQLite and on PostgreSQL: the same
fixtures as the database tests (``tests/db/conftest.py``)."""

from tests.db.conftest import *  # noqa: F403 - pytest finds fixtures by name in a conftest module
