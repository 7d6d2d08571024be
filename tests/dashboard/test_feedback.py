"""Tests for dashboard/views/feedback.py (SUS form) and dashboard/views/feedback_results.py."""

from __future__ import annotations

import pytest

from core.domain import sus_score
from dashboard.views.feedback import missing_answers
from db.repository import PermissionDenied, add_feedback
from services.analytics import export_frame
from tests.dashboard.conftest import make_app, open_page, texts


class TestMissingAnswers:
    def test_lists_unanswered_statements_one_based(self):
        assert missing_answers([1, None, 3, 4, 5, None, 1, 2, 3, 4]) == [2, 6]
        assert missing_answers([3] * 10) == []


class TestSusForm:
    def test_no_answer_is_preselected(self, app_env, users):
        at = open_page(make_app(users["coordinator"]), "feedback.py")
        assert [at.radio(key=f"sus_q{i}").value for i in range(1, 11)] == [None] * 10

    def test_incomplete_answers_are_refused_and_nothing_is_stored(self, app_env, users, factory):
        at = open_page(make_app(users["radiologist"]), "feedback.py")
        for i in range(1, 10):  # statement 10 left open
            at.radio(key=f"sus_q{i}").set_value(4)
        at.button(key="fb_submit").click().run()
        assert "still open: 10." in texts(at)
        with factory.begin() as s:
            assert export_frame(s, "feedback").empty

    def test_complete_answers_are_stored_with_role_and_score(self, app_env, users, factory):
        answers = [5, 1, 4, 2, 5, 1, 4, 2, 5, 3]
        at = open_page(make_app(users["lead"]), "feedback.py")
        for i, a in enumerate(answers, start=1):
            at.radio(key=f"sus_q{i}").set_value(a)
        at.text_area(key="fb_helped").input("the slice chart")
        at.text_area(key="fb_hindered").input("slow first analysis")
        at.button(key="fb_submit").click().run()
        assert not at.exception
        with factory.begin() as s:
            df = export_frame(s, "feedback")
        assert len(df) == 1
        row = df.iloc[0]
        assert [int(row[f"q{i}"]) for i in range(1, 11)] == answers
        assert row["role"] == "lead" and row["helped"] == "the slice chart"
        assert row["sus_score"] == pytest.approx(sus_score(answers))
        assert f"{sus_score(answers):.1f}" in texts(at)


def _feedback(factory, users):
    with factory.begin() as s:
        add_feedback(s, user=users["radiologist"].id, answers=[4, 2, 4, 2, 4, 2, 4, 2, 4, 2], helped="heatmap",
                     app_version="test")
        add_feedback(s, user=users["lead"].id, answers=[3] * 10, hindered="upload limit", app_version="test")


class TestResults:
    def test_coordinator_sees_summary_texts_and_exports_but_no_audit(self, app_env, users, factory):
        _feedback(factory, users)
        at = open_page(make_app(users["coordinator"]), "feedback_results.py")
        assert not at.exception
        summary = next(d.value for d in at.dataframe if "ci_low" in d.value.columns)
        assert set(summary["role"]) == {"radiologist", "lead", "all"}
        assert summary.loc[summary["role"] == "all", "n"].iloc[0] == 2
        texts_df = next(d.value for d in at.dataframe if "hindered" in d.value.columns)
        assert set(texts_df["helped"]) | set(texts_df["hindered"]) >= {"heatmap", "upload limit"}
        labels = [b.label for b in at.get("download_button")]
        assert "Download reviews (CSV)" in labels and "Download audit log (CSV)" not in labels

    def test_admin_gets_the_audit_export(self, app_env, users):
        at = open_page(make_app(users["admin"]), "feedback_results.py")
        assert "Download audit log (CSV)" in [b.label for b in at.get("download_button")]
        assert "No feedback yet" in texts(at)

    def test_radiologist_is_refused(self, app_env, users):
        at = open_page(make_app(users["radiologist"]), "feedback_results.py")
        assert "may not read feedback results" in texts(at)

    def test_export_returns_csv_and_is_audited(self, app_env, users, factory):
        from dashboard.views.feedback_results import export_data

        _feedback(factory, users)
        csv = export_data("feedback", users["coordinator"].id)
        assert csv.splitlines()[0].startswith("feedback_id,user_id,role,sus_score")
        assert len(csv.strip().splitlines()) == 3
        with factory.begin() as s:
            audit = export_frame(s, "audit")
        assert ((audit["action"] == "export") & (audit["object_id"] == "feedback")).sum() == 1

    def test_export_of_feedback_is_refused_to_a_radiologist(self, app_env, users):
        from dashboard.views.feedback_results import export_data

        with pytest.raises(PermissionDenied):
            export_data("feedback", users["radiologist"].id)
