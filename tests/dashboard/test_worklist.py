"""Tests for dashboard/views/worklist.py."""

from __future__ import annotations

from core.domain import suspicious_index
from dashboard.views.worklist import ai_label_text
from services.accounts import stored_class_names
from tests.dashboard.conftest import make_app, open_page, seed_nodule_read, seed_read, texts


class TestHelpers:
    def test_ood_label_is_not_applicable(self):
        assert ai_label_text("malignant", False) == "malignant"
        assert ai_label_text("malignant", True).startswith("not applicable")

    def test_suspicious_column_prefers_malignant_then_cancer_then_the_last(self):
        assert suspicious_index(["normal", "benign", "malignant"]) == 2
        assert suspicious_index(["cancer", "other"]) == 0
        assert suspicious_index(["negative", "positive"]) == 1

    def test_stored_class_names_fall_back_to_three_classes(self):
        assert stored_class_names({}, 3) == ("normal", "benign", "malignant")
        assert stored_class_names({"class_names": ["a", "b"]}, 2) == ("a", "b")


class TestPage:
    def test_rows_show_ai_result_reader_and_finding(self, app_env, users, factory):
        seed_read(factory, users, finding="benign", agreement="disagree")
        at = open_page(make_app(users["coordinator"]), "worklist.py")
        assert not at.exception
        table = next(d.value for d in at.dataframe if "ai_result" in d.value.columns)
        assert len(table) == 1
        row = table.iloc[0]
        assert (row["ai_result"], row["reader"], row["finding"], row["agreement"]) == (
            "malignant", "Rita Radiologist", "benign", "disagree")

    def test_filter_by_finding_hides_other_reads(self, app_env, users, factory):
        seed_read(factory, users, finding="benign")
        seed_read(factory, users, finding="normal", content=b"study-2")
        at = open_page(make_app(users["lead"]), "worklist.py")
        at.selectbox(key="wl_finding").set_value("normal").run()
        table = next(d.value for d in at.dataframe if "ai_result" in d.value.columns)
        assert list(table["finding"]) == ["normal"]
        at.selectbox(key="wl_finding").set_value("malignant").run()
        assert "No studies match" in texts(at)

    def test_open_study_uses_stored_inference_and_offers_open_case(self, app_env, users, factory):
        study_id = seed_read(factory, users)
        at = open_page(make_app(users["radiologist"]), "worklist.py")
        at.selectbox(key="wl_open").set_value(study_id).run()
        assert not at.exception
        page = texts(at)
        assert f"Study {study_id}" in page and "Open case shows the slices" in page
        assert "AI result: **malignant**" in page
        (button,) = [b for b in at.button if b.key.startswith("wl_open_case_")]
        assert button.label == "Open case"

    def test_open_case_of_a_series_the_store_lacks_says_so_on_read_a_study(self, app_env, users, factory):
        study_id = seed_read(factory, users)  # recorded without images: nothing in the study store
        at = open_page(make_app(users["radiologist"]), "worklist.py")
        at.selectbox(key="wl_open").set_value(study_id).run()
        next(b for b in at.button if b.key.startswith("wl_open_case_")).click().run()
        assert not at.exception
        assert at.query_params.get("case")
        assert "no longer in the study store" in texts(at)

    def test_a_lead_sees_results_but_no_open_case(self, app_env, users, factory):
        study_id = seed_read(factory, users)
        at = open_page(make_app(users["lead"]), "worklist.py")
        at.selectbox(key="wl_open").set_value(study_id).run()
        assert not at.exception
        assert not [b for b in at.button if b.key.startswith("wl_open_case_")]

    def test_a_study_with_two_series_has_one_row_per_series_read(self, app_env, users, factory):
        study_id = seed_read(factory, users, finding="benign", description="CT chest 8 mm")
        seed_read(factory, users, finding="normal", ai_label="normal", series="series-2", description="CT soft")
        at = open_page(make_app(users["lead"]), "worklist.py")
        assert not at.exception
        table = next(d.value for d in at.dataframe if "ai_result" in d.value.columns)
        assert sorted(zip(table["series"], table["finding"], table["ai_result"], strict=True)) == [
            ("CT chest 8 mm", "benign", "malignant"), ("CT soft", "normal", "normal")]
        assert "1 studies, 2 series, 2 current reads" in texts(at)
        at.selectbox(key="wl_open").set_value(study_id).run()
        page = texts(at)
        assert "CT chest 8 mm · **tiny_a** · AI result: **malignant**" in page
        assert "CT soft · **tiny_a** · AI result: **normal**" in page

    def test_empty_database_says_how_studies_appear(self, app_env, users):
        at = open_page(make_app(users["radiologist"]), "worklist.py")
        assert "No studies match" in texts(at)


class TestNodules:
    def test_rows_show_ai_nodules_accepted_rejected_added_and_lungrads(self, app_env, users, factory):
        seed_nodule_read(factory, users)
        seed_read(factory, users, content=b"study-2")  # no nodule detection: empty nodule cells
        at = open_page(make_app(users["lead"]), "worklist.py")
        assert not at.exception
        table = next(d.value for d in at.dataframe if "ai_result" in d.value.columns)
        cols = ["AI nodules", "accepted", "rejected", "added", "Lung-RADS"]
        assert sorted(tuple(r) for r in table[cols].itertuples(index=False)) == [
            ("", "", "", "", ""), ("2", "1", "1", "1", "4A")]
