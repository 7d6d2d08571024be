"""Page tests (AppTest) of the aided step of My reading list: the shared viewer with the AI (Grad-CAM,
"Go to most suspicious slice", the AI findings' circles), a mark placed where the image was clicked,
and the unaided step without any of it (every rendered element checked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.reader_study import ReaderStudyService
from tests.dashboard.conftest import texts
from tests.dashboard.test_reader_study_marks_pages import AI_OUTPUT, page, record_finding, rendered

#: Text that only the viewer puts on the page (its Grad-CAM caption, its button, its chart's widgets).
VIEWER_OUTPUT = ("Grad-CAM for", "Go to most suspicious slice", "Heatmap opacity", "AI label of this slice")
PROBS = [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]  # slice 2 is the most suspicious (malignant column)


def stored_case(factory, users, iq_dir: Path) -> tuple[int, str]:
    """Two real IQ-OTH/NCCD slices kept in the study store, and a tiny_a inference on them; (study id, series key)."""
    from db.repository import add_inference, add_series, add_study
    from services.reading import keep_series, read_upload

    files = [(f.name, f.read_bytes()) for f in sorted((iq_dir / "Malignant cases").glob("*.jpg"))[:2]]
    study = read_upload(files).studies[0]
    series = study.series[0]
    assert len(series.slices) == 2 and keep_series(study, series)
    with factory.begin() as s:
        row = add_study(s, study_key=study.study_key, modality="CT", n_series=1, n_slices=2,
                        source_kind=study.source_kind, content_hash=study.content_hash,
                        uploaded_by=users["coordinator"].id)
        se = add_series(s, study_id=row.id, series_key=series.series_key, modality="CT", n_slices=2)
        add_inference(s, series_id=se.id, model_id="tiny_a", model_sha256="a" * 64, slice_probabilities=PROBS,
                      series_result={"series_label": "malignant", "series_score": 0.7,
                                     "class_names": ["normal", "benign", "malignant"]},
                      threshold=0.5, ood=False, latency_ms=1.0)
        return row.id, series.series_key


def make_list(factory, users, iq_dir, mode: str) -> tuple[ReaderStudyService, int]:
    svc = ReaderStudyService(factory)
    summary = svc.create_list(users["coordinator"].id, name=f"Viewer {mode}", cases=[stored_case(factory, users, iq_dir)],
                              readers=[users["radiologist"].id], model_id="tiny_a", mode=mode, randomise=False, seed=1)
    table = svc.reference_table(users["coordinator"].id, summary.list_id)
    return svc, int(table["case_id"].iloc[0])


def shown(at, words) -> list[str]:
    body = rendered(at)
    return [w for w in words if w in body]


class TestAidedViewer:
    def test_unaided_plain_slices_then_the_viewer_with_gradcam_findings_and_a_clicked_mark(
            self, registry_env, users, factory, iq_dir):
        rad = users["radiologist"]
        svc, c = make_list(factory, users, iq_dir, "ai_after_unaided")
        record_finding(factory, c)  # rank 1 at slice 1, x 150, y 140
        at = page("my_reading_list.py", rad)
        assert not at.exception, at.exception
        # unaided: the plain slice, no viewer, no AI output in any rendered element
        assert not shown(at, VIEWER_OUTPUT + AI_OUTPUT), shown(at, VIEWER_OUTPUT + AI_OUTPUT)
        assert "Slice 1 of 2" in rendered(at) or "Slice 2 of 2" in rendered(at)
        with pytest.raises(KeyError):
            at.button(key=f"mrl_v_{c}_goto_suspicious")
        at.radio[0].set_value("malignant")
        at.button(key="mrl_unaided_save").click().run()
        assert not shown(at, VIEWER_OUTPUT + AI_OUTPUT)
        at.button(key="mrl_show_ai").click().run()
        assert not at.exception, at.exception
        # aided: the shared viewer (same check, so it can fail) opening at the most suspicious slice
        assert set(VIEWER_OUTPUT) <= set(shown(at, VIEWER_OUTPUT)), shown(at, VIEWER_OUTPUT)
        slider = at.slider(key=f"mrl_v_{c}_slice_no")
        assert slider.value == int(np.argmax(np.asarray(PROBS)[:, 2])) + 1 == 2
        slider.set_value(1).run()
        at.button(key=f"mrl_v_{c}_goto_suspicious").click().run()
        assert at.slider(key=f"mrl_v_{c}_slice_no").value == 2
        assert at.button(key=f"mrl_v_{c}_goto_suspicious").label == "Go to most suspicious slice"
        # the findings table; the finding's circle is drawn on its slice (1)
        assert {"AI nodule findings", "p(nodule)"} <= set(shown(at, AI_OUTPUT))
        at.slider(key=f"mrl_v_{c}_slice_no").set_value(1).run()
        assert "1 nodule circle(s)" in texts(at)
        # a click on the image (the viewer's Click, kept by the page) gives the mark's centre
        assert "Add mark here" not in rendered(at)
        at.session_state[f"mrl_click_{c}"] = (0, 150, 140)
        at.run()
        assert "Add a mark at the clicked point**: slice 1, x 150, y 140" in texts(at)
        at.select_slider(key=f"mrl_click_rating_{c}").set_value(5)
        at.button(key="mrl_click_add").click().run()
        assert not at.exception, at.exception
        assert "Mark added." in texts(at) and "Mark 1: slice 1, x 150, y 140, rating 5" in texts(at)
        (mark,) = svc.reader_case(rad.id, c).step_marks("aided")
        assert (mark.slice_index, mark.x, mark.y, mark.rating, mark.nodule_id) == (0, 150.0, 140.0, 5, None)
        assert "2 nodule circle(s)" in texts(at)  # the finding and the reader's own mark
        assert "Add mark here" not in rendered(at)  # the click was used

    def test_ai_at_once_shows_the_viewer_from_the_opening(self, registry_env, users, factory, iq_dir):
        _, c = make_list(factory, users, iq_dir, "ai_at_once")
        at = page("my_reading_list.py", users["radiologist"])
        assert not at.exception, at.exception
        assert set(VIEWER_OUTPUT) <= set(shown(at, VIEWER_OUTPUT))
        assert at.slider(key=f"mrl_v_{c}_slice_no").value == 2

    def test_no_ai_list_shows_no_viewer(self, registry_env, users, factory, iq_dir):
        make_list(factory, users, iq_dir, "no_ai")
        at = page("my_reading_list.py", users["radiologist"])
        assert not at.exception, at.exception
        assert not shown(at, VIEWER_OUTPUT + AI_OUTPUT)
