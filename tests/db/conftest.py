"""Fixtures for database tests: a migrated SQLite file per test, users, a study with an inference."""

from __future__ import annotations

import pytest

from db import repository as repo
from db.session import make_engine, make_session_factory


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
    """ids of: admin, two radiologists, a lead, a coordinator."""
    with factory.begin() as s:
        admin = repo.create_user(s, "admin", "Ada Admin", "admin", "admin-pass-1")
        ids = {"admin": admin.id}
        for name, role in [("rad1", "radiologist"), ("rad2", "radiologist"), ("rad3", "radiologist"),
                           ("lead", "lead"), ("coord", "coordinator")]:
            ids[name] = repo.create_user(s, name, f"Dr {name}", role, f"{name}-pass-1", actor=admin).id
    return ids
