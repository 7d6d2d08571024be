"""Tests of the Alembic migrations in db/migrations on real SQLite files."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from db.schema import APPEND_ONLY_TABLES, Base
from db.session import alembic_config, downgrade, make_engine, upgrade

TABLES = {"users", "studies", "inferences", "reviews", "feedback", "audit_events"}


def triggers(engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))}


class TestUpgrade:
    def test_empty_database_to_head_has_every_table_and_trigger(self, tmp_path):
        engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}", migrate=False)
        try:
            assert inspect(engine).get_table_names() == []
            upgrade(engine)
            assert set(inspect(engine).get_table_names()) >= TABLES
            assert triggers(engine) == {f"trg_{t}_no_{v}" for t in APPEND_ONLY_TABLES for v in ("update", "delete")}
            head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
            with engine.connect() as conn:
                assert MigrationContext.configure(conn).get_current_revision() == head
        finally:
            engine.dispose()

    def test_schema_at_head_equals_the_orm_metadata(self, engine):
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []


class TestDowngrade:
    def test_head_to_base_and_back_again(self, engine):
        downgrade(engine, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        assert triggers(engine) == set()
        upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


class TestPostgresqlSql:
    def test_offline_upgrade_for_postgresql_has_no_sqlite_only_sql(self):
        import io

        from alembic import command

        cfg = alembic_config("postgresql://user:pw@localhost/lungreview")
        buffer = io.StringIO()
        cfg.output_buffer = buffer
        cfg.attributes.clear()
        command.upgrade(cfg, "head", sql=True)
        sql = buffer.getvalue()
        assert "CREATE TABLE reviews" in sql
        assert "FOR EACH ROW EXECUTE FUNCTION lungreview_refuse_change()" in sql
        assert "RAISE(ABORT" not in sql and "PRAGMA" not in sql
