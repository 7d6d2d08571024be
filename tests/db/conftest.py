"""Fixtures for database tests: a fresh migrated database per test, users, a study with an inference.

Every test that uses ``engine`` (or ``factory``/``people``/``empty_db_url``) runs twice: on a fresh
SQLite file and on a fresh PostgreSQL database. The PostgreSQL server comes from
``LUNGREVIEW_TEST_PG_URL`` (a ``postgresql+psycopg://`` URL whose role may ``CREATE DATABASE``;
``.ci/run`` starts the machine's server and sets it). Without it, or when no server answers, the
PostgreSQL runs are skipped; with ``LUNGREVIEW_REQUIRE_POSTGRES=1`` (CI) they fail instead.
Each PostgreSQL test gets its own database, dropped after the test: for ``empty_db_url`` an empty
one (from ``template0``); for ``engine`` a copy of a template database that ``make_engine``
migrated to head once per session (copying takes a fraction of migrating), opened with
``make_engine`` exactly as on SQLite.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from db import repository as repo
from db.session import make_engine, make_session_factory
from tests.factories.users import create_cast

PG_URL_ENV = "LUNGREVIEW_TEST_PG_URL"
REQUIRE_PG_ENV = "LUNGREVIEW_REQUIRE_POSTGRES"
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch):
    """bcrypt cost 4 instead of 12 in tests (same algorithm, ~100x faster)."""
    monkeypatch.setattr(repo, "_BCRYPT_ROUNDS", 4)


class _PostgresServer:
    """Creates and drops uniquely named databases on the server of ``LUNGREVIEW_TEST_PG_URL``."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        self.prefix = f"lrt_{os.getpid()}_{secrets.token_hex(3)}_"
        self.counter = itertools.count()
        self.migrated_template: str | None = None

    def create(self, template: str = "template0") -> str:
        """A new database copied from ``template`` (default: empty); returns its URL (password included)."""
        name = f"{self.prefix}{next(self.counter)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}" ENCODING \'UTF8\''))
        return self.url.set(database=name).render_as_string(hide_password=False)

    def create_migrated(self) -> str:
        """A new database at the head revision, copied from a template migrated on first use."""
        if self.migrated_template is None:
            url = self.create()
            make_engine(url).dispose()  # no connection may stay open on a template
            self.migrated_template = make_url(url).database
        return self.create(self.migrated_template)

    def drop(self, url: str) -> None:
        """Drop a test database, ending its connections (``WITH (FORCE)``).

        FORCE also has to end an autovacuum worker that happens to be working on the database,
        which PostgreSQL 15 allows only to members of ``pg_signal_backend`` (.ci/run grants it;
        seen once in CI without the grant: "must be a member of the role whose process is being
        terminated or member of pg_signal_backend"). Without the grant the drop is tried again
        while that error says an autovacuum worker is still there, up to 50 times.
        """
        name = make_url(url).database
        for attempt in range(50):
            try:
                with self.admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                return
            except sa_exc.ProgrammingError as exc:
                if "pg_signal_backend" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)  # the worker's vacuum of a tiny database ends within milliseconds

    def close(self) -> None:
        if self.migrated_template is not None:
            self.drop(self.url.set(database=self.migrated_template).render_as_string(hide_password=False))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_server():
    """The PostgreSQL server for the ``postgresql`` runs; skips (or fails in CI) when there is none."""
    required = os.environ.get(REQUIRE_PG_ENV) == "1"
    url = os.environ.get(PG_URL_ENV)
    if not url:
        message = f"{PG_URL_ENV} is not set (a postgresql+psycopg:// URL of a role that may CREATE DATABASE)"
        if required:
            pytest.fail(f"{REQUIRE_PG_ENV}=1 but {message}")
        pytest.skip(message)
    server = _PostgresServer(url)
    try:
        with server.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
        server.close()
        message = (f"no PostgreSQL answers at {server.url.render_as_string(hide_password=True)}: "
                   f"{type(exc).__name__}: {exc}")
        if required:
            pytest.fail(f"{REQUIRE_PG_ENV}=1 but {message}")
        pytest.skip(message)
    yield server
    server.close()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """The database a test runs on: "sqlite" or "postgresql"."""
    return request.param


@contextlib.contextmanager
def _postgres_database(request, monkeypatch, *, migrated: bool):
    """A fresh PostgreSQL database's URL, also set as LUNGREVIEW_DB_URL; dropped after the test."""
    server = request.getfixturevalue("postgres_server")
    url = server.create_migrated() if migrated else server.create()
    monkeypatch.setenv("LUNGREVIEW_DB_URL", url)
    from core import settings as config

    config.get_settings.cache_clear()
    try:
        yield url
    finally:
        config.get_settings.cache_clear()
        server.drop(url)


@pytest.fixture()
def empty_db_url(request, backend, isolated_settings, monkeypatch):
    """URL of a fresh, empty (unmigrated) database on the backend; also set as LUNGREVIEW_DB_URL."""
    if backend == "sqlite":
        yield isolated_settings.db_url
    else:
        with _postgres_database(request, monkeypatch, migrated=False) as url:
            yield url


@pytest.fixture()
def engine(request, backend, isolated_settings, monkeypatch):
    """Engine on a fresh database (SQLite file in the test's var/, or a PostgreSQL database), migrated to head."""
    if backend == "sqlite":
        eng = make_engine(isolated_settings.db_url)
        yield eng
        eng.dispose()
        return
    with _postgres_database(request, monkeypatch, migrated=True) as url:
        eng = make_engine(url)
        yield eng
        eng.dispose()


@pytest.fixture()
def factory(engine):
    return make_session_factory(engine)


@pytest.fixture()
def people(factory):
    """ids of: admin, three radiologists, a lead, a coordinator (``tests.factories.users.CAST``)."""
    return create_cast(factory)
