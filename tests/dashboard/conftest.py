"""Fixtures for the dashboard page tests: a temporary database and an empty registry per test,
fresh Streamlit resource caches, users of every role, and an AppTest factory."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import Role

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PASSWORD = "correct-horse-9"


@pytest.fixture()
def app_env(isolated_settings, tmp_path, monkeypatch):
    """Isolated settings with an empty model registry in tmp_path; Streamlit caches cleared."""
    from core import config

    registry = tmp_path / "registry"
    registry.mkdir()
    monkeypatch.setenv("LUNGREVIEW_REGISTRY_DIR", str(registry))
    config.get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    yield config.get_settings()
    st.cache_resource.clear()
    config.get_settings.cache_clear()


@pytest.fixture()
def factory(app_env):
    """A session factory on the test database (the same database the app opens)."""
    from db.session import make_engine, make_session_factory

    engine = make_engine(app_env.db_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture()
def users(factory):
    """One active user per role; returns {role value: SessionUser}."""
    from dashboard.components import SessionUser
    from db.repository import create_user

    out = {}
    with factory.begin() as s:
        admin = create_user(s, "admin", "Ada Admin", Role.ADMIN, PASSWORD)
        out["admin"] = SessionUser.from_row(admin)
        for role, name in ((Role.RADIOLOGIST, "Rita Radiologist"), (Role.LEAD, "Lee Lead"),
                           (Role.COORDINATOR, "Cora Coordinator")):
            u = create_user(s, role.value, name, role, PASSWORD, actor=admin)
            out[role.value] = SessionUser.from_row(u)
    return out


def make_app(user=None, timeout: float = 30) -> AppTest:
    """AppTest of dashboard/app.py, optionally signed in as ``user`` (a SessionUser)."""
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    if user is not None:
        at.session_state["user"] = user
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    """Run the app once, switch to ``dashboard/pages/<page>`` and run it."""
    at.run()
    at.switch_page(f"pages/{page}")
    return at.run()


def texts(at: AppTest) -> str:
    """All markdown, caption, title, header, info, warning, error and success text of a run, joined."""
    parts = []
    for coll in (at.title, at.header, at.subheader, at.markdown, at.caption, at.info, at.warning, at.error,
                 at.success):
        parts.extend(str(e.value) for e in coll)
    return "\n".join(parts)
