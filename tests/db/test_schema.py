"""Tests of db.schema: the database itself refuses bad values and changes to append-only rows."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from db import repository as repo
from db.schema import AppendOnlyError, AuditEvent, Review
from tests.db.factories import new_study

NOW = "2026-01-01 00:00:00"
#: How SQLite and PostgreSQL word a failed CHECK constraint.
CHECK_FAILED = "CHECK constraint failed|violates check constraint"


@pytest.fixture()
def reviewed(factory, people):
    """(study id, inference id, review id) of one review by rad1."""
    with factory.begin() as s:
        study, inf = new_study(s, people["rad1"], "a")
        review = repo.add_review(s, study_id=study.id, inference_id=inf.id, reader=people["rad1"], finding="normal",
                                 agreement="disagree", confidence=2, seconds_to_decision=5.0)
        return study.id, inf.id, review.id


def insert_review(conn, study_id, inference_id, reader_id, *, finding="normal", agreement="agree", confidence=3,
                  heatmap=None, seconds=1.0):
    conn.execute(
        text("INSERT INTO reviews (study_id, inference_id, reader_id, finding, agreement, confidence, heatmap_helpful,"
             " comment, seconds_to_decision, created_at) VALUES (:s, :i, :r, :f, :a, :c, :h, '', :sec, :t)"),
        dict(s=study_id, i=inference_id, r=reader_id, f=finding, a=agreement, c=confidence, h=heatmap, sec=seconds,
             t=NOW),
    )


class TestCheckConstraints:
    @pytest.mark.parametrize(
        "change",
        [{"finding": "cancer"}, {"agreement": "sure"}, {"confidence": 0}, {"confidence": 6}, {"heatmap": 7},
         {"seconds": -3.0}],
    )
    def test_raw_sql_with_bad_review_values_is_refused(self, engine, people, reviewed, change):
        study_id, inf_id, _ = reviewed
        with pytest.raises(IntegrityError, match=CHECK_FAILED), engine.begin() as conn:
            insert_review(conn, study_id, inf_id, people["rad2"], **change)

    def test_raw_sql_with_good_review_values_is_accepted(self, engine, people, reviewed):
        study_id, inf_id, _ = reviewed
        with engine.begin() as conn:
            insert_review(conn, study_id, inf_id, people["rad2"], heatmap=5)
            assert conn.execute(text("SELECT count(*) FROM reviews")).scalar() == 2

    @pytest.mark.parametrize(
        "sql",
        [
            "INSERT INTO users (username, display_name, role, password_hash, created_at, active)"
            " VALUES ('zed', 'Zed', 'surgeon', 'x', '2026-01-01', TRUE)",
            "INSERT INTO studies (study_key, modality, n_series, n_slices, source_kind, uploaded_by, uploaded_at,"
            " content_hash) VALUES ('k', 'CT', 1, 0, 'dicom', 1, '2026-01-01', 'h')",
            "INSERT INTO studies (study_key, modality, n_series, n_slices, source_kind, uploaded_by, uploaded_at,"
            " content_hash) VALUES ('k', 'CT', 1, 1, 'gif', 1, '2026-01-01', 'h')",
            "INSERT INTO audit_events (user_id, action, object_type, object_id, at, detail)"
            " VALUES (1, 'delete', '', '', '2026-01-01', '')",
            "INSERT INTO feedback (user_id, role, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10, sus_score, helped, hindered,"
            " app_version, created_at) VALUES (1, 'lead', 3, 3, 3, 3, 3, 3, 3, 3, 3, 9, 50, '', '', '0', '2026-01-01')",
            "INSERT INTO feedback (user_id, role, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10, sus_score, helped, hindered,"
            " app_version, created_at) VALUES (1, 'lead', 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 120, '', '', '0', '2026-01-01')",
        ],
    )
    def test_other_tables_check_their_closed_choices_and_ranges(self, engine, people, sql):
        with pytest.raises(IntegrityError, match=CHECK_FAILED), engine.begin() as conn:
            conn.execute(text(sql))


class TestAppendOnly:
    @pytest.mark.parametrize("sql", ["UPDATE reviews SET finding = 'malignant'", "DELETE FROM reviews",
                                     "UPDATE audit_events SET detail = 'edited'", "DELETE FROM audit_events"])
    def test_database_triggers_refuse_update_and_delete(self, engine, reviewed, sql):
        with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT finding FROM reviews")).scalar() == "normal"

    @pytest.mark.parametrize("table", ["reviews", "audit_events"])
    def test_postgresql_refuses_truncate(self, engine, reviewed, table):
        if engine.dialect.name != "postgresql":
            pytest.skip("TRUNCATE is PostgreSQL's (SQLite has none)")
        with pytest.raises(IntegrityError, match="append-only: TRUNCATE refused"), engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table}"))
        with engine.connect() as conn:
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() >= 1

    def test_orm_refuses_to_update_a_review(self, factory, reviewed):
        with factory() as s:
            review = s.get(Review, reviewed[2])
            review.finding = "malignant"
            with pytest.raises(AppendOnlyError, match="append-only"):
                s.flush()

    def test_orm_refuses_to_delete_an_audit_event(self, factory, reviewed):
        with factory() as s:
            event = s.query(AuditEvent).first()
            s.delete(event)
            with pytest.raises(AppendOnlyError, match="DELETE is not allowed"):
                s.flush()
