"""Tests of services.analytics against hand-computed examples, on a real migrated SQLite file."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from sqlalchemy import select

from db import repository as repo
from db.repository import analytics as repo_analytics
from db.schema import AuditEvent
from services import analytics
from tests.core.stats.test_agreement import CASES, KAPPA, KAPPA_LINEAR
from tests.db.factories import new_inference, new_study, sha

CONFUSION = [[3, 1, 0], [1, 2, 1], [0, 0, 2]]


def add_review(s, study, inf, reader, finding, agreement="agree"):
    return repo.add_review(s, study_id=study.id, inference_id=inf.id, reader=reader, finding=finding,
                           agreement=agreement, confidence=3, seconds_to_decision=10.0)


@pytest.fixture()
def ten_cases(factory, people):
    """rad1 reads the 10 CASES; on case 0 they first said 'malignant' and then changed to 'normal'."""
    with factory.begin() as s:
        for i, (finding, ai) in enumerate(CASES):
            study, inf = new_study(s, people["admin"], f"case{i}", ai_label=ai)
            if i == 0:
                add_review(s, study, inf, people["rad1"], "malignant", "disagree")
            add_review(s, study, inf, people["rad1"], finding)
    return people


class TestAgreementTable:
    def test_per_model_matches_the_hand_computed_example(self, factory, ten_cases):
        with factory() as s:
            table = analytics.agreement_table(s, by="model")
        row = table.set_index("model_id").loc["basic-cnn-v1"]
        assert row["n_cases"] == 10  # the superseded review of case 0 does not count
        assert row["percent_agreement"] == pytest.approx(70.0)
        assert row["kappa"] == pytest.approx(KAPPA)
        assert row["kappa_linear"] == pytest.approx(KAPPA_LINEAR)

    def test_superseded_review_stays_in_the_table_but_only_the_newest_counts(self, factory, ten_cases):
        with factory() as s:
            every = repo_analytics.current_reads(s, include_superseded=True)
            current = repo_analytics.current_reads(s)
        assert len(every) == 11 and len(current) == 10
        old = every[every["finding"] == "malignant"].iloc[0]
        assert old["review_id"] not in set(current["review_id"])
        # had the superseded 'malignant' counted instead, case 0 would be a disagreement:
        assert (current["finding"] == current["ai_label"]).sum() == 7

    def test_per_reader_rows_and_bad_grouping(self, factory, ten_cases):
        with factory.begin() as s:
            study, inf = new_study(s, ten_cases["admin"], "extra", ai_label="benign")
            add_review(s, study, inf, ten_cases["rad2"], "benign")
        with factory() as s:
            table = analytics.agreement_table(s, by="reader")
            assert list(table["reader_id"]) == [ten_cases["rad1"], ten_cases["rad2"]]
            assert list(table["n_cases"]) == [10, 1]
            assert table.loc[1, "percent_agreement"] == 100.0 and math.isnan(table.loc[1, "kappa"])
            with pytest.raises(repo.ValidationError, match="'model' or 'reader'"):
                analytics.agreement_table(s, by="hospital")

    def test_empty_database_gives_an_empty_table(self, factory, people):
        with factory() as s:
            assert analytics.agreement_table(s).empty


class TestReaderAiConfusion:
    def test_matches_the_hand_computed_matrix(self, factory, ten_cases):
        with factory() as s:
            m = analytics.reader_ai_confusion(s, "basic-cnn-v1")
            none = analytics.reader_ai_confusion(s, "basic-cnn-v1", reader_id=ten_cases["rad2"])
        assert m.to_numpy().tolist() == CONFUSION
        assert list(m.index) == ["reader: normal", "reader: benign", "reader: malignant"]
        assert list(m.columns) == ["AI: normal", "AI: benign", "AI: malignant"]
        assert none.to_numpy().sum() == 0


class TestFleissKappaTable:
    def test_three_readers_on_four_studies_match_hand_computation(self, factory, people):
        # counts (normal, benign, malignant) per study: (3,0,0) (0,3,0) (1,2,0) (0,1,2)
        # p_j = 4/12, 6/12, 2/12 -> P_e = 7/18; P_i = 1, 1, 1/3, 1/3 -> P_bar = 2/3;
        # kappa = (2/3 - 7/18) / (1 - 7/18) = 5/11.
        reads = [("normal",) * 3, ("benign",) * 3, ("normal", "benign", "benign"),
                 ("benign", "malignant", "malignant")]
        readers = [people["rad1"], people["rad2"], people["rad3"]]
        with factory.begin() as s:
            made = [new_study(s, people["admin"], f"f{i}") for i in range(len(reads))]
            for (study, inf), findings in zip(made, reads, strict=True):
                for reader, finding in zip(readers, findings, strict=True):
                    add_review(s, study, inf, reader, finding)
            # rad1 changes their mind on study 0 and back: still one current review each
            study0, inf0 = made[0]
            add_review(s, study0, inf0, people["rad1"], "malignant")
            add_review(s, study0, inf0, people["rad1"], "normal")
            single, single_inf = new_study(s, people["admin"], "single")
            add_review(s, single, single_inf, people["rad1"], "normal")
        with factory() as s:
            table = analytics.fleiss_kappa_table(s)
        assert table.to_dict("records") == [
            {"n_readers_per_study": 3, "n_studies": 4, "kappa": pytest.approx(5 / 11)}
        ]

    def test_a_reader_counts_once_per_series_and_each_series_is_a_subject(self, factory, people):
        with factory.begin() as s:
            study, inf = new_study(s, people["admin"], "two")
            other = repo.add_series(s, study_id=study.id, series_key=sha("second")[:32], modality="CT", n_slices=2)
            inf_other = new_inference(s, other.id)
            inf_model2 = new_inference(s, inf.series_id, model_id="resnet")
            for reader in (people["rad1"], people["rad2"]):
                add_review(s, study, inf, reader, "malignant")
                add_review(s, study, inf_other, reader, "normal")
            add_review(s, study, inf_model2, people["rad1"], "malignant")  # same series, another model
        with factory() as s:
            table = analytics.fleiss_kappa_table(s)
        assert table[["n_readers_per_study", "n_studies"]].to_dict("records") == [
            {"n_readers_per_study": 2, "n_studies": 2}]
        assert table["kappa"].item() == pytest.approx(1.0)


def give_feedback(factory, people):
    with factory.begin() as s:
        for who, answers, helped in [("rad1", [3] * 10, "heatmap"), ("rad2", [5, 1] * 5, ""),
                                     ("rad3", [4, 2, 4, 2, 4, 2, 4, 2, 4, 2], ""), ("lead", [1, 5] * 5, "")]:
            repo.add_feedback(s, user=people[who], answers=answers, helped=helped,
                              hindered="slow" if who == "lead" else "", app_version="0.1.0")


class TestSusSummary:
    def test_mean_median_and_t_interval_per_role(self, factory, people):
        give_feedback(factory, people)
        with factory() as s:
            table = analytics.sus_summary(s, viewer=people["lead"]).set_index("role")
        rad = table.loc["radiologist"]
        # scores 50, 100, 75: mean 75, median 75, sd 25; t(0.975, 2) = 4.3027
        assert (rad["n"], rad["mean"], rad["median"], rad["sd"]) == (3, 75.0, 75.0, 25.0)
        half = 4.302653 * 25 / math.sqrt(3)
        assert rad["ci_low"] == pytest.approx(75 - half, abs=1e-3)
        assert rad["ci_high"] == pytest.approx(75 + half, abs=1e-3)
        assert table.loc["lead", "n"] == 1 and math.isnan(table.loc["lead", "ci_low"])
        assert table.loc["all", "n"] == 4 and table.loc["all", "mean"] == pytest.approx(56.25)
        assert "coordinator" not in table.index

    def test_radiologists_may_not_read_feedback_results(self, factory, people):
        with factory() as s, pytest.raises(repo.PermissionDenied, match="read feedback results"):
            analytics.sus_summary(s, viewer=people["rad1"])


class TestFeedbackTexts:
    def test_free_text_with_role_and_no_names(self, factory, people):
        give_feedback(factory, people)
        with factory() as s:
            texts = analytics.feedback_texts(s, viewer=people["coord"])
        assert list(texts.columns) == ["created_at", "role", "sus_score", "helped", "hindered"]
        assert texts[["role", "helped", "hindered"]].values.tolist() == [
            ["lead", "", "slow"], ["radiologist", "heatmap", ""]]


class TestExportCsv:
    def test_reviews_export_is_pseudonymous_and_flags_superseded_rows(self, factory, ten_cases):
        with factory.begin() as s:
            csv_text = analytics.export_csv(s, "reviews", viewer=ten_cases["rad1"])
        df = pd.read_csv(io.StringIO(csv_text))
        assert len(df) == 11 and df["current"].sum() == 10
        assert "Dr rad1" not in csv_text and "reader" not in df.columns
        assert df["study_key"].str.fullmatch(r"[0-9a-f]{32}").all()

    def test_agreement_feedback_and_audit_exports(self, factory, ten_cases):
        give_feedback(factory, ten_cases)
        with factory.begin() as s:
            agreement = pd.read_csv(io.StringIO(analytics.export_csv(s, "agreement")))
            feedback = pd.read_csv(io.StringIO(analytics.export_csv(s, "feedback")))
            audit = pd.read_csv(io.StringIO(analytics.export_csv(s, "audit", viewer=ten_cases["admin"])))
            exports = s.scalars(select(AuditEvent).where(AuditEvent.action == "export")).all()
        assert agreement.loc[agreement["level"] == "model", "kappa"].item() == pytest.approx(KAPPA)
        assert len(feedback) == 4 and set(feedback["sus_score"]) == {50.0, 100.0, 75.0, 0.0}
        assert {"upload", "inference", "review", "feedback", "admin-change"} <= set(audit["action"])
        assert [(e.object_id, e.user_id) for e in exports] == [("audit", ten_cases["admin"])]

    def test_unknown_export_and_forbidden_viewer_are_refused(self, factory, people):
        with factory() as s:
            with pytest.raises(repo.ValidationError, match="Unknown export"):
                analytics.export_csv(s, "patients")
            with pytest.raises(repo.PermissionDenied):
                analytics.export_csv(s, "audit", viewer=people["rad1"])
