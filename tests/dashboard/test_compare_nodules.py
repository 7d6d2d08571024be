"""The Compare page's nodule detector section: FROC plot, warning, triage table."""

from __future__ import annotations

import json
import shutil

from core.nodules.volume import LUNA16_SPEC
from core.registry import DETECTION_TASK, ModelCard
from dashboard.views.compare import froc_figure, triage_table
from tests.dashboard.conftest import make_app, open_page, texts

REPORT = {
    "series": [{"series": "LIDC-IDRI-0001", "top_on_lesion": True}, {"series": "Lung_Dx-A0002 B70f",
                                                                      "top_on_lesion": False}],
    "results": {
        "N=3": {"with_rule": {"cpm": 0.5, "n_lesions": 2, "curve": {"fp_per_scan": [0, 0.5, 3.0],
                                                                     "sensitivity": [0, 0.5, 1.0]}}},
        "N=1": {"with_rule": {"cpm": None, "n_lesions": 0, "curve": {"fp_per_scan": [0], "sensitivity": [None]}}},
    },
}


def test_froc_figure_has_one_curve_per_reader_rule_with_lesions():
    fig = froc_figure(REPORT)
    assert len(fig.data) == 1 and "CPM 0.50" in fig.data[0].name
    assert list(fig.data[0].y) == [0, 0.5, 1.0] and fig.layout.xaxis.type == "log"


def test_triage_table_sets_the_kinds_side_by_side():
    checks = {"basic_cnn_v1": {"series": [{"series": "LIDC-IDRI-0001", "most_suspicious_in_lesion": False}]}}
    table = triage_table(REPORT, checks)
    assert table.loc["LIDC-IDRI-0001", "nodule detector: top nodule on lesion"] == "yes"
    assert table.loc["LIDC-IDRI-0001", "basic_cnn_v1: top slice on lesion"] == "no"
    assert table.loc["Lung_Dx-A0002 B70f", "basic_cnn_v1: top slice on lesion"] == ""


def test_page_plots_the_froc_with_the_warning(app_env, tiny_registry, users, tmp_path, monkeypatch):
    from core import config

    reg = tmp_path / "reg_with_detector"
    shutil.copytree(tiny_registry, reg)
    card = ModelCard(id="det_v1", kind="nodule_detector", architecture="nodule3d", task=DETECTION_TASK,
                     class_names=("nodule", "cad_false_positive", "tissue"), preprocessing=None,
                     volume_preprocessing=LUNA16_SPEC.to_dict(), gradcam_layer="conv5_act")
    (reg / "det_v1").mkdir()
    (reg / "det_v1" / "card.json").write_text(json.dumps(card.to_dict()))
    (reg / "det_v1" / "froc.json").write_text(json.dumps(REPORT))
    monkeypatch.setenv("LUNGREVIEW_REGISTRY_DIR", str(reg))
    config.get_settings.cache_clear()
    at = open_page(make_app(users["lead"]), "compare.py")
    assert not at.exception
    page = texts(at)
    assert "Nodule detector (FROC)" in page and "a check, not a validation" in page
    assert "det_v1" not in page.split("Registered models:")[1].splitlines()[0]  # not among the slice models
    assert any("nodule detector: top nodule on lesion" in d.value.columns for d in at.dataframe)
