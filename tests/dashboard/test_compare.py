"""Tests for dashboard/views/compare.py on the tiny two-model registry."""

from __future__ import annotations

from dashboard.views.compare import fmt_ci, metrics_table
from tests.dashboard.conftest import make_app, open_page, seed_nodule_read, seed_read, texts


class TestFmtCi:
    def test_value_with_interval(self):
        assert fmt_ci(0.8123, [0.75, 0.86]) == "0.812 [0.750, 0.860]"

    def test_missing_value_and_interval(self):
        assert fmt_ci(None, None) == "n/a"
        assert fmt_ci(0.5, [None, None]) == "0.500"


class TestMetricsTable:
    def test_one_column_per_model_and_every_headline_metric(self):
        e = {"accuracy": 0.5, "ci95": {"accuracy": [0.4, 0.6]}, "n": 6, "per_class": {
            "malignant": {"precision": 1.0, "recall": 0.5, "f1": 0.67, "support": 2}}}
        table = metrics_table({"m1": e, "m2": dict(e, accuracy=0.25)})
        assert list(table.columns) == ["m1", "m2"]
        assert table.loc["Accuracy", "m1"] == "0.500 [0.400, 0.600]"
        assert table.loc["Accuracy", "m2"].startswith("0.250")
        assert table.loc["Recall malignant", "m1"] == "0.500 (n=2)"
        assert "ROC AUC (malignant)" in table.index


class TestPage:
    def test_lead_sees_every_registered_model(self, registry_env, users):
        at = open_page(make_app(users["lead"]), "compare.py")
        assert not at.exception
        page = texts(at)
        assert "tiny_b: not evaluated yet" in page
        assert "tiny_a" in page and "tiny_b" in page
        table = at.dataframe[0].value
        assert list(table.columns) == ["tiny_a"]
        assert table.loc["Test slices (n)", "tiny_a"] == "6"
        assert "No reads recorded yet" in page

    def test_agreement_of_readers_appears_once_reads_exist(self, registry_env, users, factory):
        seed_read(factory, users, finding="malignant", ai_label="malignant")
        seed_read(factory, users, finding="normal", ai_label="malignant", content=b"study-2", agreement="disagree")
        at = open_page(make_app(users["admin"]), "compare.py")
        assert not at.exception
        agreement = next(d.value for d in at.dataframe if "kappa_linear" in d.value.columns)
        row = agreement[agreement["model_id"] == "tiny_a"].iloc[0]
        assert row["n_cases"] == 2 and row["percent_agreement"] == 50.0

    def test_nodule_readers_vs_ai_per_detector_model(self, registry_env, users, factory):
        at = open_page(make_app(users["lead"]), "compare.py")
        assert "No nodule reads recorded yet" in texts(at)
        seed_nodule_read(factory, users)
        at = open_page(make_app(users["lead"]), "compare.py")
        assert not at.exception
        table = next(d.value for d in at.dataframe if "fraction accepted" in d.value.columns)
        assert list(table["reader"]) == ["Rita Radiologist", "all readers"]
        assert list(table["detector"]) == ["fake_nodules_v1"] * 2
        assert list(table["fraction accepted"]) == [0.5, 0.5] and list(table["added"]) == [1, 1]

    def test_radiologist_is_refused(self, registry_env, users):
        at = open_page(make_app(users["radiologist"]), "compare.py")
        assert "may not compare models" in texts(at)
        assert len(at.dataframe) == 0
