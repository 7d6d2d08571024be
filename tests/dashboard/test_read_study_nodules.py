"""Tests for the nodule read on dashboard/views/read_study.py (AppTest): one script run per analysis,
the findings table, choosing a finding moves the viewer, accept / reject / add by typing, the
Lung-RADS suggestion and the reader's category, no candidates, a JPG's refusal in one line, and a
slice move that reruns only the viewer's fragment and reads nothing from the database.

The nodule detector is tests/factories/ct.py's fake on its phantom series (24 DICOM slices of
128 x 128 pixels with a nodule in each lung); the slice classifier is the tiny untrained
registry model of tests/dashboard/conftest.py.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.dashboard.conftest import make_app, open_page, texts
from tests.factories.ct import FakeDetector, phantom_files


class Counter:
    """Counts calls of a wrapped function."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, *args, **kwargs):
        self.n += 1
        return self.fn(*args, **kwargs)


@pytest.fixture()
def detector(monkeypatch):
    """The fake detector behind dashboard.resources.get_nodule_detector (the page's source)."""
    import dashboard.resources

    fake = FakeDetector()
    monkeypatch.setattr(dashboard.resources, "get_nodule_detector", lambda: fake.as_detector())
    return fake


@pytest.fixture(scope="module")
def phantom() -> list[tuple[str, bytes, str]]:
    return [(name, data, "application/dicom") for name, data in phantom_files()]


@pytest.fixture()
def page_runs(monkeypatch) -> Counter:
    """Counts full runs of a page: each calls dashboard.components.run_page once."""
    import dashboard.components

    counter = Counter(dashboard.components.run_page)
    monkeypatch.setattr(dashboard.components, "run_page", counter)
    return counter


def analysed(user, files, page_runs: Counter | None = None):
    at = open_page(make_app(user), "read_study.py")
    at.file_uploader(key="upload").set_value(files)
    at.run()
    assert not at.exception, at.exception
    before = page_runs.n if page_runs is not None else 0
    at.button(key="analyse").click().run()
    assert not at.exception, at.exception
    return at, (page_runs.n - before if page_runs is not None else None)


def findings_frame(at):
    return next(d.value for d in at.dataframe if "p(nodule)" in d.value.columns)


def slice_caption(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Slice "))


class TestAnalysis:
    def test_an_analysis_takes_one_run_and_shows_the_findings_table(self, registry_env, users, detector, phantom,
                                                                   page_runs, factory):
        at, runs = analysed(users["radiologist"], phantom, page_runs)
        assert runs == 1  # no st.rerun after analysing: the result is shown by the run that made it
        assert detector.calls == 1
        assert [m.value for m in at.metric if m.label == "AI result"]
        assert "analyse" not in [b.key for b in at.button]
        table = findings_frame(at)
        assert list(table.columns) == ["rank", "crop", "slice", "side", "diameter (mm)", "p(nodule)",
                                       "malignancy (1-5)", "your read", "centre (mm)"]
        assert list(table["rank"]) == [1, 2] and list(table["slice"]) == [13, 9]
        assert list(table["side"]) == ["right", "left"]  # LPS: +x is the patient's left
        assert list(table["diameter (mm)"]) == [10.0, 6.0] and list(table["your read"]) == ["undecided"] * 2
        assert all(str(c).startswith("data:image/png;base64,") for c in table["crop"])
        assert "Suggested Lung-RADS 1" in texts(at) and "ignores growth" in texts(at)
        assert "5.0 mm apart" in texts(at)  # the detector's thick-slice warning, as a caption
        # a reload of the case reuses the stored detection: the detector is not run again
        again = make_app(users["radiologist"])
        again.query_params["case"] = at.query_params["case"]
        again = open_page(again, "read_study.py")
        assert not again.exception and detector.calls == 1
        assert list(findings_frame(again)["rank"]) == [1, 2]

    def test_a_jpg_is_refused_in_one_line_and_the_classifier_result_stays(self, registry_env, users, detector,
                                                                         iq_dir: Path):
        jpg = sorted((iq_dir / "Malignant cases").glob("*.jpg"))[0]
        at, _ = analysed(users["radiologist"], [(jpg.name, jpg.read_bytes(), "image/jpeg")])
        refusal = [i.value for i in at.info if i.value.startswith("Nodule detector:")]
        assert len(refusal) == 1 and "\n" not in refusal[0] and "JPG" in refusal[0]
        assert [m.value for m in at.metric if m.label == "AI result"]
        assert not [d for d in at.dataframe if "p(nodule)" in d.value.columns]
        assert detector.calls == 0

    def test_no_candidates_says_so_and_suggests_category_1(self, registry_env, users, phantom, monkeypatch):
        import dashboard.resources

        monkeypatch.setattr(dashboard.resources, "get_nodule_detector",
                            lambda: FakeDetector(spheres=()).as_detector())
        at, _ = analysed(users["radiologist"], phantom)
        assert "No nodule candidates above the operating point" in texts(at)
        assert "Suggested Lung-RADS 1" in texts(at)

    def test_fifty_candidates_are_all_kept_and_the_table_paginates(self, registry_env, users, phantom, monkeypatch,
                                                                   factory):
        import dashboard.resources
        from db.repository import nodule_series_summary

        spheres = [(z, 50 + (i % 5) * 6, 30 + (i // 5) * 7, 4.0) for i, z in enumerate(list(range(2, 22)) * 3)][:50]
        fake = FakeDetector(spheres=spheres, p=[0.99 - i * 0.005 for i in range(50)])
        monkeypatch.setattr(dashboard.resources, "get_nodule_detector", lambda: fake.as_detector())
        at, _ = analysed(users["radiologist"], phantom)
        assert not at.error, [e.value for e in at.error]
        assert list(findings_frame(at)["rank"]) == list(range(1, 11))
        assert at.number_input(key="findings_page").max == 5
        assert len(at.selectbox(key="nodule_pick").options) == 50  # the selector names every finding
        at.number_input(key="findings_page").set_value(5).run()
        assert list(findings_frame(at)["rank"]) == list(range(41, 51))
        # a row of page 5 is finding 41 + row
        at.session_state["findings_table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
        at.run()
        assert at.selectbox(key="nodule_pick").index == 42  # finding 43
        assert at.slider(key="slice_no").value == spheres[42][0] + 1
        with factory.begin() as s:
            assert nodule_series_summary(s).iloc[0]["ai_findings"] == 50

    def test_without_a_detector_only_the_classifier_runs(self, registry_env, users, phantom):
        at, _ = analysed(users["radiologist"], phantom)
        assert "No nodule detector is registered" in texts(at)
        assert [m.value for m in at.metric if m.label == "AI result"]


class TestReading:
    def test_choose_accept_reject_add_and_lungrads(self, registry_env, users, detector, phantom, factory):
        from db.repository import nodule_series_summary

        at, _ = analysed(users["radiologist"], phantom)
        ids = at.selectbox(key="nodule_pick").options
        assert len(ids) == 2 and ids[0].startswith("1 · slice 13 · right · 10.0 mm")
        # choosing finding 1 moves the viewer to its slice
        at.selectbox(key="nodule_pick").set_value(at.selectbox(key="nodule_pick").options[0]).run()
        assert at.slider(key="slice_no").value == 13 and slice_caption(at).startswith("Slice 13 of 24")
        at.radio(key="nodule_decision").set_value("accept")
        at.selectbox(key="nodule_type").set_value("solid")
        at.button(key="nodule_save").click().run()
        assert not at.exception, at.exception
        assert "Finding 1: accepted" in texts(at)
        assert list(findings_frame(at)["your read"]) == ["accepted (solid)", "undecided"]
        assert "Suggested Lung-RADS 4A" in texts(at)  # 10 mm solid: 8 to under 15 mm
        # the table's row choice: finding 2 (a selection is session state in AppTest)
        at.session_state["findings_table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
        at.run()
        assert at.slider(key="slice_no").value == 9
        at.radio(key="nodule_decision").set_value("reject")
        at.button(key="nodule_save").click().run()
        assert list(findings_frame(at)["your read"]) == ["accepted (solid)", "rejected"]
        # add one by typing (a click on the image fills the same fields)
        at.number_input(key="add_slice").set_value(17)
        at.number_input(key="add_x").set_value(85)
        at.number_input(key="add_y").set_value(70)
        at.number_input(key="add_diameter").set_value(16.0)
        at.button(key="add_nodule").click().run()
        assert not at.exception, at.exception
        assert "Nodule added on slice 17" in texts(at) and "R1: slice 17, x 85, y 70, 16.0 mm" in texts(at)
        assert "Suggested Lung-RADS 4B" in texts(at)  # the added 16 mm nodule counts as solid
        at.selectbox(key="lungrads_category").set_value("4B")
        at.button(key="lungrads_save").click().run()
        assert "Lung-RADS 4B saved" in texts(at)
        with factory.begin() as s:
            row = nodule_series_summary(s).iloc[0]
        assert (row["ai_findings"], row["accepted"], row["rejected"], row["added"], row["lungrads"],
                row["lungrads_suggested"]) == (2, 1, 1, 1, "4B", "4B")

    def test_an_added_nodule_outside_the_lungs_is_flagged_and_can_be_removed(self, registry_env, users, detector,
                                                                             phantom):
        at, _ = analysed(users["radiologist"], phantom)
        at.number_input(key="add_x").set_value(3)
        at.number_input(key="add_y").set_value(3)
        at.number_input(key="add_diameter").set_value(5.0)
        at.button(key="add_nodule").click().run()
        assert "outside the lung mask (kept, flagged)" in texts(at)
        remove = next(b for b in at.button if b.key.startswith("remove_added_"))
        remove.click().run()
        assert "withdrawn" in texts(at) and "R1: slice" not in texts(at)

    def test_a_missing_diameter_is_asked_for(self, registry_env, users, detector, phantom):
        at, _ = analysed(users["radiologist"], phantom)
        at.button(key="add_nodule").click().run()
        assert any("diameter" in e.value for e in at.error)


class TestFragment:
    def test_a_slice_move_reruns_only_the_viewer_fragment_and_reads_no_database(self, registry_env, users,
                                                                                detector, phantom, page_runs,
                                                                                monkeypatch):
        """A fragment-scoped rerun as the browser sends it for a widget inside the fragment (AppTest itself
        always reruns the whole script, so the rerun request gets the fragment's id)."""
        import streamlit.testing.v1.local_script_runner as runner_module

        import services.reading
        from services.reading import ReadingService

        at, _ = analysed(users["radiologist"], phantom, page_runs)
        fragments = list(at._fragment_storage._fragments)
        assert len(fragments) == 1
        reads = {}
        for name in ("stored_analysis", "stored_nodules", "reader_nodules", "nodule_detector", "analyse"):
            reads[name] = Counter(getattr(ReadingService, name))
            monkeypatch.setattr(services.reading.ReadingService, name, reads[name])
        full_runs = page_runs.n
        monkeypatch.setattr(runner_module, "RerunData",
                            functools.partial(runner_module.RerunData, fragment_id_queue=fragments))
        at.slider(key="slice_no").set_value(5).run()
        assert not at.exception, at.exception
        assert page_runs.n == full_runs  # the page body did not run
        assert slice_caption(at).startswith("Slice 5 of 24")
        assert {name: c.n for name, c in reads.items()} == dict.fromkeys(reads, 0)
        # a window change too
        at.radio(key="window_preset").set_value("mediastinum").run()
        assert page_runs.n == full_runs and "C 50 / W 350 HU" in slice_caption(at)
