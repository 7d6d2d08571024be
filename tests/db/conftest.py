"""Fixtures for database tests: a migrated SQLite file per test, users, a study with an inference."""

from __future__ import annotations

import pytest

from db import repository as repo
from db.session import make_engine, make_session_factory
from tests.factories.users import create_cast


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch):
    """bcrypt cost 4 instead of 12 in tests (same algorithm, ~100x faster)."""
    monkeypatch.setattr(repo, "_BCRYPT_ROUNDS", 4)


@pytest.fixture()
def engine(isolated_settings):
    """Engine on a fresh SQLite file in the test's temporary var/ folder, migrated to head."""
    eng = make_engine()
    yield eng
    eng.dispose()


@pytest.fixture()
def factory(engine):
    return make_session_factory(engine)


@pytest.fixture()
def people(factory):
    """ids of: admin, three radiologists, a lead, a coordinator (``tests.factories.users.CAST``)."""
    return create_cast(factory)
