"""Tests of the Alembic migrations in db/migrations on real SQLite files and PostgreSQL databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from db.schema import APPEND_ONLY_TABLES, Base
from db.session import alembic_config, downgrade, make_engine, upgrade

TABLES = {"users", "studies", "inferences", "reviews", "feedback", "audit_events"}


def append_only_triggers(dialect: str) -> set[str]:
    """The append-only triggers the migrations create for every table of APPEND_ONLY_TABLES.

    SQLite: one trigger per refused verb (UPDATE, DELETE). PostgreSQL: one row trigger for both
    and a statement trigger refusing TRUNCATE.
    """
    if dialect == "sqlite":
        return {f"trg_{t}_no_{v}" for t in APPEND_ONLY_TABLES for v in ("update", "delete")}
    return {f"trg_{t}_{v}" for t in APPEND_ONLY_TABLES for v in ("append_only", "no_truncate")}


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
            assert triggers(engine) == append_only_triggers(engine.dialect.name)
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


class TestSeriesMigration:
    """A database written by the schema of 0001 (no series) keeps every read through 0002_series."""

    @staticmethod
    def _old_database(tmp_path):
        """Schema 0001 holding: 2 users, study A (2 series, 3 inferences: one has no series key)
        and study B (an inference stored without a series key), 4 reviews (one supersedes)."""
        import json

        engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
        upgrade(engine, "0001")
        now = "2026-11-30 10:00:00.000000"
        key1, key2 = "a" * 32, "b" * 32
        probs2 = json.dumps([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
        probs3 = json.dumps([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.3, 0.3, 0.4]])
        with engine.begin() as conn:
            for uid, name, role in ((1, "admin", "admin"), (2, "rad1", "radiologist")):
                conn.execute(text("INSERT INTO users (id, username, display_name, role, password_hash, created_at, "
                                  "active) VALUES (:i, :n, :n, :r, 'x', :t, 1)"), {"i": uid, "n": name, "r": role,
                                                                                  "t": now})
            for sid, content in ((1, "c" * 64), (2, "d" * 64)):
                conn.execute(text("INSERT INTO studies (id, study_key, modality, n_series, n_slices, source_kind, "
                                  "uploaded_by, uploaded_at, content_hash) VALUES (:i, :k, 'CT', 2, 5, 'dicom', 2, "
                                  ":t, :h)"), {"i": sid, "k": f"{sid}" * 32, "t": now, "h": content})
            inferences = [  # id, study, series_result JSON, probabilities, label
                (1, 1, {"series_label": "malignant", "series_score": 0.7, "series_key": key1,
                        "series_description": "CT chest 8 mm"}, probs2, "malignant"),
                (2, 1, {"series_label": "normal", "series_score": 0.4, "series_key": key2,
                        "series_description": "CT chest soft"}, probs3, "normal"),
                (3, 1, {"series_label": "benign", "series_score": 0.5, "series_key": key1,
                        "inference_series_label": "out-of-distribution"}, probs2, "benign"),
                (4, 2, {"series_label": "malignant", "series_score": 0.7}, probs2, "malignant"),
            ]
            for iid, sid, result, probs, label in inferences:
                conn.execute(text("INSERT INTO inferences (id, study_id, model_id, model_sha256, slice_probabilities, "
                                  "series_result, ai_label, series_score, threshold, ood, latency_ms, created_by, "
                                  "created_at) VALUES (:i, :s, 'm1', :sha, :p, :r, :l, 0.5, 0.5, 0, 10.0, 2, :t)"),
                             {"i": iid, "s": sid, "sha": "e" * 64, "p": probs, "r": json.dumps(result), "l": label,
                              "t": now})
            reviews = [  # id, study, inference, finding, agreement, supersedes
                (1, 1, 1, "benign", "partly", None), (2, 1, 1, "malignant", "agree", 1),
                (3, 1, 2, "normal", "agree", None), (4, 2, 4, "malignant", "agree", None),
            ]
            for rid, sid, iid, finding, agreement, sup in reviews:
                conn.execute(text("INSERT INTO reviews (id, study_id, inference_id, reader_id, finding, agreement, "
                                  "confidence, heatmap_helpful, comment, seconds_to_decision, supersedes_id, "
                                  "created_at) VALUES (:i, :s, :inf, 2, :f, :a, 4, NULL, '', 12.5, :sup, :t)"),
                             {"i": rid, "s": sid, "inf": iid, "f": finding, "a": agreement, "sup": sup, "t": now})
        return engine

    @staticmethod
    def _reads(conn) -> list[tuple]:
        return [tuple(r) for r in conn.execute(text(
            "SELECT id, study_id, inference_id, reader_id, finding, agreement, confidence, supersedes_id "
            "FROM reviews ORDER BY id"))]

    def test_upgrade_keeps_every_read_and_links_it_to_its_series(self, tmp_path):
        engine = self._old_database(tmp_path)
        try:
            with engine.connect() as conn:
                before = self._reads(conn)
            upgrade(engine)
            with engine.connect() as conn:
                assert self._reads(conn) == before
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
                series = {r.id: r for r in conn.execute(text(
                    "SELECT id, study_id, series_key, modality, n_slices, description, spacing_z_mm FROM series"))}
                linked = dict(conn.execute(text("SELECT id, series_id FROM inferences")).all())
                read_series = dict(conn.execute(text(
                    "SELECT r.id, i.series_id FROM reviews r JOIN inferences i ON i.id = r.inference_id")).all())
            assert len(series) == 3  # study 1: two keys; study 2: one legacy series
            by_key = {(r.study_id, r.series_key): r for r in series.values()}
            s1, s2 = by_key[(1, "a" * 32)], by_key[(1, "b" * 32)]
            assert (s1.modality, s1.n_slices, s1.description, s1.spacing_z_mm) == ("CT", 2, "CT chest 8 mm", None)
            assert (s2.n_slices, s2.description) == (3, "CT chest soft")
            legacy = next(r for r in series.values() if r.study_id == 2)
            assert len(legacy.series_key) == 32 and legacy.series_key not in ("a" * 32, "b" * 32)
            assert linked == {1: s1.id, 2: s2.id, 3: s1.id, 4: legacy.id}
            assert read_series == {1: s1.id, 2: s1.id, 3: s2.id, 4: legacy.id}
        finally:
            engine.dispose()

    def test_migrated_reads_are_current_where_they_were_and_new_reads_supersede(self, tmp_path):
        from db import repository as repo
        from db.session import make_session_factory

        engine = self._old_database(tmp_path)
        try:
            upgrade(engine)
            factory = make_session_factory(engine)
            with factory.begin() as s:
                assert [r.id for r in repo.current_reviews(s)] == [2, 3, 4]
                assert repo.latest_inference(s, 1, "m1").id == 3  # series 1 holds inferences 1 and 3
                new = repo.add_review(s, inference_id=1, reader=2, finding="benign", agreement="disagree",
                                      confidence=2, seconds_to_decision=3.0)
                assert new.supersedes_id == 2
        finally:
            engine.dispose()

    def test_downgrade_to_0001_keeps_the_reads_and_upgrades_again(self, tmp_path):
        engine = self._old_database(tmp_path)
        try:
            with engine.connect() as conn:
                before = self._reads(conn)
            upgrade(engine)
            downgrade(engine, "0001")
            with engine.connect() as conn:
                assert "series" not in inspect(engine).get_table_names()
                assert "series_id" not in {c["name"] for c in inspect(engine).get_columns("inferences")}
                assert self._reads(conn) == before
                assert conn.execute(text("SELECT count(*) FROM inferences")).scalar() == 4
            assert triggers(engine) >= {"trg_reviews_no_update", "trg_reviews_no_delete"}
            upgrade(engine)
            with engine.connect() as conn:
                assert self._reads(conn) == before
                assert conn.execute(text("SELECT count(*) FROM series")).scalar() == 3
        finally:
            engine.dispose()


class TestNodulesMigration:
    """A database at 0004 holding users, studies, series, inferences, series reads (one superseded),
    a reading list with an aided read and audit events keeps every row through 0005_nodules, gains
    the four nodule tables (empty, append-only), takes nodule reads, and goes back to 0004 again."""

    NODULE_TABLES = {"nodule_detections", "nodules", "nodule_reads", "lungrads_reads"}

    @staticmethod
    def _fill_at_0004(engine) -> dict[str, int]:
        from db import repository as repo
        from db.schema import ReaderRead, ReadingList, ReadingListCase
        from db.session import make_session_factory
        from tests.db.factories import new_study
        from tests.factories.users import create_cast

        upgrade(engine, "0004_reader_study")
        factory = make_session_factory(engine)
        people = create_cast(factory)
        with factory.begin() as s:
            study, inf = new_study(s, people["rad1"], "old")
            first = repo.add_review(s, inference_id=inf.id, reader=people["rad1"], finding="benign",
                                    agreement="partly", confidence=3, seconds_to_decision=10.0)
            repo.add_review(s, inference_id=inf.id, reader=people["rad1"], finding="malignant", agreement="agree",
                            confidence=4, seconds_to_decision=12.0)
            repo.add_review(s, inference_id=inf.id, reader=people["rad2"], finding="normal", agreement="disagree",
                            confidence=2, seconds_to_decision=8.0)
            lst = ReadingList(name="pilot", model_id="basic-cnn-v1", mode="ai_at_once", randomise=False, seed=1,
                              created_by=people["admin"])
            s.add(lst)
            s.flush()
            case = ReadingListCase(list_id=lst.id, study_id=study.id, series_key="", inference_id=inf.id, position=1)
            s.add(case)
            s.flush()
            s.add(ReaderRead(case_id=case.id, reader_id=people["rad3"], phase="aided", finding="malignant",
                             confidence=5, seconds=30.0))
            return {"inference": inf.id, "series": inf.series_id, "rad1": people["rad1"], "first": first.id}

    @staticmethod
    def _snapshot(engine) -> dict[str, list[tuple]]:
        tables = sorted(set(inspect(engine).get_table_names()) - {"alembic_version"})
        with engine.connect() as conn:
            return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY id"))] for t in tables}

    def test_upgrade_keeps_every_row_and_the_new_tables_take_nodule_reads(self, empty_db_url):
        from db import repository as repo
        from db.session import make_session_factory

        engine = make_engine(empty_db_url, migrate=False)
        try:
            ids = self._fill_at_0004(engine)
            before = self._snapshot(engine)
            assert len(before["reviews"]) == 3 and len(before["reader_reads"]) == 1
            assert not self.NODULE_TABLES & set(before)
            upgrade(engine)
            after = self._snapshot(engine)
            assert {t: after[t] for t in before} == before
            assert {t: after[t] for t in self.NODULE_TABLES} == {t: [] for t in self.NODULE_TABLES}
            assert triggers(engine) == append_only_triggers(engine.dialect.name)
            with engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            factory = make_session_factory(engine)
            with factory.begin() as s:
                assert [r.supersedes_id for r in repo.current_reviews(s, reader_id=ids["rad1"])] == [ids["first"]]
                det = repo.record_ai_nodules(
                    s, inference_id=ids["inference"], model_id="nodule-det", model_sha256="f" * 64, latency_ms=5.0,
                    nodules=[{"rank": 1, "centre_voxel": [1, 2, 3], "centre_mm": [4.0, 5.0, 6.0], "diameter_mm": 6.0,
                              "p_nodule": 0.8, "malignancy": 2.0, "lobulation": 1.0, "spiculation": 1.0,
                              "slice_index": 1, "is_mass": False}])
                repo.record_nodule_decision(s, nodule_id=det.nodules[0].id, reader=ids["rad1"], decision="accept",
                                            seconds_to_decision=3.0)
                assert len(repo.current_nodule_reads(s, ids["series"])) == 1
            with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
                conn.execute(text("DELETE FROM nodule_reads"))
        finally:
            engine.dispose()

    def test_downgrade_to_0004_drops_only_the_nodule_tables(self, empty_db_url):
        engine = make_engine(empty_db_url, migrate=False)
        try:
            self._fill_at_0004(engine)
            before = self._snapshot(engine)
            triggers_0004 = triggers(engine)
            upgrade(engine)
            downgrade(engine, "0004_reader_study")
            assert self._snapshot(engine) == before
            assert triggers(engine) == triggers_0004
            upgrade(engine)
            assert set(inspect(engine).get_table_names()) >= self.NODULE_TABLES
        finally:
            engine.dispose()
