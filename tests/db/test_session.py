"""Tests of db.session: engine set-up on real SQLite files and PostgreSQL databases, migration on start."""

from __future__ import annotations

import os

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from db.session import DatabaseError, alembic_config, make_engine, make_session_factory


class TestMakeEngine:
    def test_default_url_from_settings_creates_the_folder_and_migrates(self, isolated_settings):
        db_file = isolated_settings.var_dir / "test.db"
        assert not db_file.parent.exists()
        engine = make_engine()
        try:
            assert db_file.exists()
            assert {"users", "studies", "inferences", "reviews", "feedback", "audit_events"} <= set(
                inspect(engine).get_table_names()
            )
        finally:
            engine.dispose()

    def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(self, engine):
        if engine.dialect.name != "sqlite":
            pytest.skip("SQLite PRAGMAs")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL

    def test_postgresql_connections_wait_for_locks_up_to_busy_timeout(self, engine):
        if engine.dialect.name != "postgresql":
            pytest.skip("PostgreSQL settings")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "30s"

    def test_foreign_keys_are_enforced(self, engine):
        with pytest.raises(Exception, match="FOREIGN KEY|foreign key constraint"), engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO reviews (study_id, inference_id, reader_id, finding, agreement, confidence, comment,"
                " seconds_to_decision, created_at) VALUES (77, 77, 77, 'normal', 'agree', 3, '', 1, '2026-01-01')"
            ))

    def test_transactions_take_the_write_lock_up_front(self, engine, tmp_path):
        # BEGIN IMMEDIATE (PostgreSQL: the advisory write lock): while one transaction is open, a
        # second writer cannot even begin.
        other = make_engine(engine.url.render_as_string(hide_password=False), migrate=False, busy_timeout_s=0.2)
        try:
            with engine.begin(), pytest.raises(Exception, match="locked|lock timeout"), other.begin() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            other.dispose()

    def test_works_from_another_working_directory(self, isolated_settings, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        engine = make_engine(f"sqlite:///{tmp_path / 'elsewhere' / 'x.db'}")
        try:
            assert "reviews" in inspect(engine).get_table_names()
        finally:
            engine.dispose()

    def test_second_start_is_a_no_op(self, engine):
        again = make_engine(engine.url.render_as_string(hide_password=False))
        try:
            with again.connect() as conn:
                head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        finally:
            again.dispose()

    def test_malformed_url_raises_a_clear_error(self):
        with pytest.raises(DatabaseError, match="LUNGREVIEW_DB_URL"):
            make_engine("not a url at all")

    def test_folder_that_cannot_be_created_raises_a_clear_error(self, tmp_path):
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        with pytest.raises(DatabaseError, match="Cannot create the database folder"):
            make_engine(f"sqlite:///{blocker / 'sub' / 'x.db'}")

    def test_database_that_is_not_sqlite_raises_a_clear_error(self, tmp_path):
        junk = tmp_path / "junk.db"
        junk.write_bytes(b"this is not a database file" * 100)
        with pytest.raises(DatabaseError, match="Could not open and migrate"):
            make_engine(f"sqlite:///{junk}")


class TestAlembicConfig:
    def test_points_at_the_migrations_folder(self):
        cfg = alembic_config("sqlite:///x.db")
        assert cfg.get_main_option("script_location").endswith(os.path.join("db", "migrations"))
        assert cfg.get_main_option("sqlalchemy.url") == "sqlite:///x.db"


class TestMakeSessionFactory:
    def test_rows_stay_readable_after_commit(self, factory):
        from db import repository as repo

        with factory.begin() as s:
            user = repo.create_user(s, "solo", "Solo Admin", "admin", "long-password")
        assert user.username == "solo"  # expire_on_commit=False

    def test_read_only_sessions_read_while_a_writer_holds_the_lock(self, engine, factory, people):
        from db import repository as repo

        reader_factory = make_session_factory(engine, read_only=True)
        with factory.begin() as writer:
            writer.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock is held from here
            with reader_factory() as s:
                assert [u.username for u in repo.list_users(s)][:1] == ["admin"]
