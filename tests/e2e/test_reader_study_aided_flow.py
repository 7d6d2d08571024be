"""The aided step of a CT-series reading list in a real browser, against `streamlit run`.

Seeded: the phantom CT series (tests/factories/ct.py, 24 slices) in the server's study store with a
``basic_cnn_v1`` inference whose most suspicious slice is the one through the right-lung nodule, one
AI nodule finding there, a reading list of that case for one radiologist, its reference standard and
one reference lesion at the nodule. The radiologist reads unaided (no Grad-CAM, no findings), has the
AI shown, sees the Grad-CAM caption and the findings table, places a mark by clicking the nodule on
the image and saves the aided read; the coordinator's pilot report (HTML download) counts the mark as
a lesion localisation (LL) of the aided step.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from tests.e2e.helpers import mark, nav, radio, sign_in, sign_out, wait_idle
from tests.e2e.test_reader_study_flow import _registered

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "study-pass-123"
NODULE = (12, 64, 40, 10.0)  # slice, row, column, diameter mm: the phantom's right-lung nodule


def _store_series(var, study, series) -> None:
    """Keep the series in the study store of the server's var/ folder (settings read from the environment)."""
    from core import settings as config
    from services.reading import keep_series

    old = os.environ.get("LUNGREVIEW_VAR_DIR")
    os.environ["LUNGREVIEW_VAR_DIR"] = str(var)
    config.get_settings.cache_clear()
    try:
        assert keep_series(study, series)
    finally:
        if old is None:
            os.environ.pop("LUNGREVIEW_VAR_DIR", None)
        else:
            os.environ["LUNGREVIEW_VAR_DIR"] = old
        config.get_settings.cache_clear()


def _seed(var) -> None:
    from db import repository as repo
    from db.session import make_engine, make_session_factory
    from services.reader_study import ReaderStudyService
    from services.reading import read_upload
    from tests.factories.ct import phantom_files

    study = read_upload(phantom_files(), limit_mb=50).studies[0]
    series = study.series[0]
    _store_series(var, study, series)
    n = len(series.slices)
    probs = np.tile([0.8, 0.15, 0.05], (n, 1))
    probs[NODULE[0]] = [0.1, 0.2, 0.7]
    engine = make_engine(f"sqlite:///{var / 'e2e.db'}")
    factory = make_session_factory(engine)
    with factory.begin() as s:
        admin = repo.create_user(s, "admin", "Ada Admin", "admin", PASSWORD)
        coord = repo.create_user(s, "coord", "Cora Coordinator", "coordinator", PASSWORD, actor=admin)
        rita = repo.create_user(s, "rita", "Rita Reader", "radiologist", PASSWORD, actor=admin)
        row = repo.add_study(s, study_key=study.study_key, modality="CT", n_series=1, n_slices=n,
                             source_kind=study.source_kind, content_hash=study.content_hash, uploaded_by=coord)
        se = repo.add_series(s, study_id=row.id, series_key=series.series_key, modality="CT", n_slices=n)
        inf = repo.add_inference(s, series_id=se.id, model_id="basic_cnn_v1", model_sha256="a" * 64,
                                 slice_probabilities=probs.tolist(), threshold=0.5, ood=False, latency_ms=1.0,
                                 series_result={"series_label": "malignant", "series_score": 0.7,
                                                "class_names": ["normal", "benign", "malignant"]})
        z, r, c, d = NODULE
        repo.record_ai_nodules(s, inference_id=inf.id, model_id="nodule3d", model_sha256="e" * 64, latency_ms=1.0,
                               nodules=[{"rank": 1, "centre_voxel": [z, r, c], "centre_mm": [0.0, 0.0, 0.0],
                                         "diameter_mm": d, "p_nodule": 0.93, "malignancy": 3.5, "lobulation": 1.0,
                                         "spiculation": 1.0, "slice_index": z, "is_mass": False}])
        ids = (row.id, series.series_key, coord.id, rita.id)
    svc = ReaderStudyService(factory)
    study_id, series_key, coord_id, rita_id = ids
    summary = svc.create_list(coord_id, name="CT pilot", cases=[(study_id, series_key)], readers=[rita_id],
                              model_id="basic_cnn_v1", mode="ai_after_unaided", randomise=False, seed=1)
    case_id = int(svc.reference_table(coord_id, summary.list_id)["case_id"].iloc[0])
    svc.set_reference(coord_id, study_id=study_id, finding="malignant", source="pathology")
    svc.add_reference_lesion(coord_id, case_id, slice_index=z, x=float(c), y=float(r), diameter_mm=d)
    engine.dispose()


def _lesion_counts(html: str) -> list[list[str]]:
    """The rows (cell texts) of the report's lesion-counts table."""
    table = re.search(r'<table[^>]*id="lesion-counts".*?</table>', html, re.S)
    assert table, "the report has no lesion-counts table"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(0), re.S)
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in rows if "<td>" in row]


def test_aided_step_shows_the_viewer_and_a_clicked_mark_is_a_lesion_localisation(
        start_server, new_page, tmp_path, shot):
    if not _registered():
        pytest.skip("the reader-study pages are not registered in dashboard/app.py yet")
    base, _ = start_server(seed=_seed)
    page = new_page(1500, 1200)
    page.set_default_timeout(120_000)

    sign_in(page, base, "rita", PASSWORD)
    nav(page, "My reading list")
    page.get_by_text("0 of 1 read").first.wait_for()
    page.get_by_text("Lesion marks").first.wait_for()
    assert page.get_by_text("Grad-CAM for").count() == 0 and page.get_by_text("AI nodule findings").count() == 0
    radio(page, "Your finding", "benign")
    page.get_by_role("button", name="Save unaided read").click()
    page.get_by_text("Unaided read saved.").first.wait_for()
    page.get_by_role("button", name="Show the AI result").click()
    page.get_by_text("Grad-CAM for").first.wait_for(timeout=180_000)
    page.get_by_text("AI nodule findings").first.wait_for()
    page.get_by_role("button", name="Go to most suspicious slice").first.wait_for()
    wait_idle(page)
    shot(page, "reader_study_aided_viewer")
    # the viewer opens at the most suspicious slice (13, through the nodule); click the nodule's centre
    area = page.locator("[class*=st-key-mrl_v_][class*=_viewer_image] .nsewdrag").first
    area.wait_for()
    area.scroll_into_view_if_needed()  # mouse.click takes viewport coordinates: the image must be on screen
    box = area.bounding_box()
    _, r, c, _ = NODULE
    mark(page, "click the nodule on the image")
    page.mouse.click(box["x"] + (c + 0.5) / 128 * box["width"], box["y"] + (r + 0.5) / 128 * box["height"])
    page.get_by_text("Add a mark at the clicked point").first.wait_for()
    page.get_by_role("button", name="Add mark here").click()
    page.get_by_text("Mark added.").first.wait_for()
    page.get_by_text(re.compile(r"Mark 1: slice 13, x \d+, y \d+, rating 3")).first.wait_for()
    radio(page, "Final finding", "malignant")
    page.get_by_role("button", name="Save final read").click()
    page.get_by_text("You have read all 1 cases of this list").first.wait_for()
    sign_out(page)

    sign_in(page, base, "coord", PASSWORD)
    nav(page, "Pilot report")
    page.get_by_text("Limitations").first.wait_for()
    with page.expect_download() as info:
        page.get_by_role("button", name="Download report (HTML)").click()
    path = tmp_path / "report.html"
    info.value.save_as(path)
    rows = _lesion_counts(path.read_text(encoding="utf-8"))
    aided = [row for row in rows if row[1:2] == ["aided"]]
    assert aided and aided[0][2:7] == ["1", "1", "0", "0", "1 of 1"], rows
