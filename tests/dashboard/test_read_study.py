"""Tests for dashboard/views/read_study.py: the page as a user sees it (upload, AI result, review,
re-upload, roles, windows). The workflow's rules (limits, analyse-or-reuse, superseding reads)
are tested on the service itself in tests/db/test_reading.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from db.repository import count_rows, worklist
from db.repository.analytics import current_reads
from services.reading import read_upload
from tests.dashboard.conftest import make_app, open_page, texts


@pytest.fixture(scope="module")
def jpgs(iq_dir: Path) -> dict[str, bytes]:
    """Two real IQ-OTH/NCCD JPGs (one malignant, one normal) by file name."""
    out = {}
    for folder in ("Malignant cases", "Normal cases"):
        f = sorted((iq_dir / folder).glob("*.jpg"))[0]
        out[f.name] = f.read_bytes()
    return out


def _upload(at, files: dict[str, bytes]):
    at.file_uploader(key="upload").set_value([(n, d, "image/jpeg") for n, d in files.items()])
    return at.run()


class TestPage:
    def test_coordinator_is_refused_and_sees_no_uploader(self, registry_env, users):
        at = open_page(make_app(users["coordinator"]), "read_study.py")
        assert "may not read studies" in texts(at)
        assert len(at.file_uploader) == 0

    def test_upload_analyse_review_then_reupload_reuses_inference(self, registry_env, users, jpgs, factory):
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        assert not at.exception
        at = _upload(at, jpgs)
        assert at.selectbox(key="model_id").value == "tiny_a"
        at.button(key="analyse").click().run()
        assert not at.exception, at.exception
        with factory.begin() as s:
            stored = worklist(s).iloc[0]
        ai = [m.value for m in at.metric if m.label == "AI result"]
        assert ai == ["not applicable (outside the training data)" if stored["ood"] else stored["ai_label"]]
        assert stored["ai_label"] in ("normal", "benign", "malignant")
        probs = next(d.value for d in at.dataframe if "probability" in d.value.columns)
        assert list(probs["class"]) == ["normal", "benign", "malignant"]
        np.testing.assert_allclose(probs["probability"].sum(), 1.0, atol=0.01)
        assert at.slider(key="slice_no").max == 2
        with factory.begin() as s:
            assert count_rows(s)["inferences"] == 1

        # incomplete read is refused
        at.button(key="review_submit").click().run()
        assert "Please choose your finding, agreement, confidence" in texts(at)
        at.radio(key="review_finding").set_value("benign")
        at.radio(key="review_agreement").set_value("partly")
        at.radio(key="review_confidence").set_value(4)
        at.radio(key="review_heatmap").set_value(2)
        at.text_area(key="review_comment").input("small nodule, right upper lobe")
        at.button(key="review_submit").click().run()
        assert "Read saved" in texts(at)
        with factory.begin() as s:
            reads = current_reads(s)
        assert len(reads) == 1
        row = reads.iloc[0]
        assert (row["finding"], row["agreement"], row["confidence"], row["heatmap_helpful"]) == ("benign", "partly",
                                                                                                 4, 2)
        assert row["model_id"] == "tiny_a"

        again = open_page(make_app(users["admin"]), "read_study.py")
        again = _upload(again, jpgs)
        assert "Recognised upload" in texts(again)
        assert "analyse" not in [b.key for b in again.button]
        with factory.begin() as s:
            rows = count_rows(s)
        assert rows["inferences"] == 1 and rows["studies"] == 1

    def test_bad_file_is_listed_and_the_good_ones_are_read(self, registry_env, users, jpgs):
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        at.file_uploader(key="upload").set_value(
            [*((n, d, "image/jpeg") for n, d in jpgs.items()), ("notes.txt", b"not an image", "text/plain")])
        at.run()
        assert not at.exception
        warnings = " ".join(w.value for w in at.warning)
        assert "notes.txt" in warnings
        assert "2 slice(s)" in texts(at)
        assert at.button(key="analyse").label == "Analyse with AI"

    def test_only_bad_files_show_a_message_not_a_traceback(self, registry_env, users):
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        at.file_uploader(key="upload").set_value([("notes.txt", b"not an image", "text/plain")])
        at.run()
        assert not at.exception
        assert any("could not be read" in e.value for e in at.error)

    def test_out_of_distribution_series_is_flagged_and_label_not_applicable(self, registry_env, users, factory):
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        mr = Path(get_testdata_file("MR_small.dcm")).read_bytes()
        at.file_uploader(key="upload").set_value([("MR_small.dcm", mr, "application/dicom")])
        at.run()
        at.button(key="analyse").click().run()
        assert not at.exception
        assert any("Out-of-distribution warning" in e.value for e in at.error)
        ai = next(m for m in at.metric if m.label == "AI result")
        assert ai.value.startswith("not applicable")
        with factory.begin() as s:
            wl = worklist(s)
        assert bool(wl.loc[0, "ood"]) and wl.loc[0, "ai_label"] in ("normal", "benign", "malignant")

    def test_go_to_most_suspicious_slice_moves_the_slider(self, registry_env, users, jpgs):
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        at = _upload(at, jpgs)
        at.button(key="analyse").click().run()
        shown = next(m.value for m in at.metric if m.label == "Most suspicious slice")
        target = int(shown.split(" of ")[0])
        assert shown == f"{target} of 2"
        other = 2 if target == 1 else 1
        at.slider(key="slice_no").set_value(other).run()
        assert at.slider(key="slice_no").value == other
        at.button(key="goto_suspicious").click().run()
        assert at.slider(key="slice_no").value == target

    def test_lung_outline_is_drawn_over_the_slice_when_asked(self, registry_env, users, jpgs):
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        at = _upload(at, jpgs)
        at.button(key="analyse").click().run()
        from dashboard.resources import shared_cache
        from dashboard.views.read_study import SHARED_PICTURES

        masks = shared_cache("lung_masks", SHARED_PICTURES)
        assert at.checkbox(key="lung_outline_on").value is False
        assert len(masks) == 0
        at.checkbox(key="lung_outline_on").check().run()
        assert not at.exception
        (mask,) = masks.values()
        assert mask.dtype == bool and mask.ndim == 2 and mask.any()  # lungs found on a real slice


def _pixel_bytes(value, seen=None) -> int:
    """Bytes of numpy arrays reachable from a session-state value (containers and dataclasses)."""
    import dataclasses
    from collections.abc import Mapping

    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, Mapping):  # dicts and the pages' cachetools caches
        return sum(_pixel_bytes(k, seen) + _pixel_bytes(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(_pixel_bytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_pixel_bytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    return 0


class TestStudyStore:
    def test_session_keeps_references_and_a_reload_opens_the_case_from_the_store(self, registry_env, users, jpgs,
                                                                                 factory):
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        at = _upload(at, jpgs)
        at.button(key="analyse").click().run()
        assert not at.exception
        case = at.query_params.get("case")
        with factory.begin() as s:
            assert case == str(worklist(s).iloc[0]["series_id"])
        # the session holds references and the small AI result, not the decoded slices
        state = {k: at.session_state[k] for k in ("_staged", "_analyses")}
        n_probs = sum(a.probabilities.nbytes + a.ood.nbytes for a in state["_analyses"].values())
        assert _pixel_bytes(state) == n_probs < 1024
        (staged,) = state["_staged"].values()
        (ref,) = staged.studies[0].series
        assert ref.n_slices == 2

        # a reload is a new session: no upload, only the address
        again = make_app(users["radiologist"])
        again.query_params["case"] = case
        again = open_page(again, "read_study.py")
        assert not again.exception
        assert "opened from the study store" in texts(again)
        assert "Recognised upload" in texts(again)
        assert [m.value for m in again.metric if m.label == "AI result"] == [m.value for m in at.metric
                                                                             if m.label == "AI result"]
        assert again.slider(key="slice_no").max == 2
        assert "analyse" not in [b.key for b in again.button]

    def test_a_case_evicted_from_memory_and_disk_asks_for_the_files(self, registry_env, users, jpgs):
        from core import store

        at = open_page(make_app(users["radiologist"]), "read_study.py")
        at = _upload(at, jpgs)
        at.button(key="analyse").click().run()
        case = at.query_params.get("case")
        for key in store.list_keys():
            store.SeriesStore.from_settings().delete(key)
        store.memory_cache().clear()
        again = make_app(users["radiologist"])
        again.query_params["case"] = case
        again = open_page(again, "read_study.py")
        assert not again.exception
        assert "no longer in the study store" in texts(again)

    def test_a_bad_case_number_in_the_address_is_explained(self, registry_env, users):
        at = make_app(users["radiologist"])
        at.query_params["case"] = "abc"
        at = open_page(at, "read_study.py")
        assert not at.exception
        assert "not a case number" in texts(at)


class TestWindows:
    def test_dicom_with_own_window_offers_it(self, isolated_settings):
        from dashboard.views.read_study import window_for, window_options

        series = read_upload([("CT_small.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes())], 5).series[0]
        opts = window_options(series)
        assert opts[:3] == ["lung", "mediastinum", "bone"]
        if series.windows:
            assert "dicom" in opts and window_for("dicom", series) == series.windows[0]
        assert window_for("lung", series).center == -600

    def test_pictures_do_not_offer_a_file_window(self, isolated_settings, jpgs):
        from dashboard.views.read_study import window_options

        series = read_upload(list(jpgs.items()), 5).series[0]
        assert "dicom" not in window_options(series) and "iq-othnccd" in window_options(series)


class TestSeveralStudies:
    def test_user_picks_the_study_and_the_model_runs_on_it(self, registry_env, users):
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        files = [(name, Path(get_testdata_file(name)).read_bytes(), "application/dicom")
                 for name in ("CT_small.dcm", "MR_small.dcm")]
        at.file_uploader(key="upload").set_value(files)
        at.run()
        assert not at.exception
        pick = at.selectbox(key="study_pick")
        assert len(pick.options) == 2
        at.selectbox(key="study_pick").set_value(1).run()
        modality_line = next(c.value for c in at.caption if "slice(s)" in c.value)
        other = "MR" if modality_line.startswith("CT") else "CT"
        at.selectbox(key="study_pick").set_value(0).run()
        assert next(c.value for c in at.caption if "slice(s)" in c.value).startswith(other)
