"""Tests of the Alembic migrations in db/migrations on real SQLite files and PostgreSQL databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from db.schema import Base
from db.session import alembic_config, downgrade, make_engine, upgrade

TABLES = {"users", "studies", "inferences", "reviews", "feedback", "audit_events"}


#: The append-only triggers 0001 creates, per dialect.
APPEND_ONLY_TRIGGERS = {
    "sqlite": {"trg_reviews_no_update", "trg_reviews_no_delete",
               "trg_audit_events_no_update", "trg_audit_events_no_delete"},
    "postgresql": {"trg_reviews_append_only", "trg_audit_events_append_only",
                   "trg_reviews_no_truncate", "trg_audit_events_no_truncate"},
}


def triggers(engine) -> set[str]:
    """Names of the user-defined triggers in the database behind ``engine``."""
    query = {"sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
             "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"}[engine.dialect.name]
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text(query))}


class TestUpgrade:
    def test_empty_database_to_head_has_every_table_and_trigger(self, empty_db_url):
        engine = make_engine(empty_db_url, migrate=False)
        try:
            assert inspect(engine).get_table_names() == []
            upgrade(engine)
            assert set(inspect(engine).get_table_names()) >= TABLES
            assert triggers(engine) == APPEND_ONLY_TRIGGERS[engine.dialect.name]
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
