"""Page tests of the reader-study pages: reading_lists, my_reading_list and pilot_report (AppTest)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from streamlit.testing.v1 import AppTest

from dashboard.views.reading_lists import parse_seed
from services.reader_study import ReaderStudyService
from tests.dashboard.conftest import texts

VIEWS = Path(__file__).resolve().parents[2] / "dashboard" / "views"


def page(name: str, user) -> AppTest:
    at = AppTest.from_file(str(VIEWS / name), default_timeout=60)
    at.session_state["user"] = user
    return at.run()


def seed_studies(factory, users, n: int = 3) -> list[tuple[int, str]]:
    from core.imaging import study_key_for
    from db.repository import add_inference, add_series, add_study

    ids = []
    with factory.begin() as s:
        for i in range(n):
            label = ("malignant", "normal", "benign")[i % 3]
            study = add_study(s, study_key=study_key_for(f"page-study-{i}"), modality="CT", n_series=1, n_slices=1,
                              source_kind="dicom", content_hash=hashlib.sha256(f"p{i}".encode()).hexdigest(),
                              uploaded_by=users["coordinator"].id)
            series = add_series(s, study_id=study.id, series_key=hashlib.sha256(f"series{i}".encode()).hexdigest()[:32],
                                modality="CT", n_slices=1)
            add_inference(s, series_id=series.id, model_id="tiny_a", model_sha256="a" * 64,
                          slice_probabilities=[[0.2, 0.3, 0.5]],
                          series_result={"series_label": label, "series_score": 0.5}, threshold=0.5, ood=False,
                          latency_ms=1.0)
            ids.append((study.id, series.series_key))
    return ids


class TestParseSeed:
    def test_blank_digits_and_bad(self):
        assert parse_seed(" ") is None and parse_seed("42") == 42
        for bad in ("-1", "1.5", "x", str(2**31)):
            try:
                parse_seed(bad)
            except ValueError as exc:
                assert "whole number" in str(exc)
            else:
                raise AssertionError(bad)


class TestReaderStudyPages:
    def test_coordinator_makes_a_list_reader_reads_unaided_then_aided_report_shows_six_reads(
            self, app_env, users, factory):
        ids = seed_studies(factory, users)
        rad = users["radiologist"]
        at = page("reading_lists.py", users["coordinator"])
        assert not at.exception
        at.text_input(key="rl_name").input("Pages")
        at.multiselect(key="rl_cases").set_value(ids)
        at.multiselect(key="rl_readers").set_value([rad.id])
        at.text_input(key="rl_seed").input("7")
        at.button(key="rl_create").click().run()
        assert not at.exception
        assert "Reading list 'Pages' created: 3 cases, 1 readers, seed 7." in texts(at)

        at = page("my_reading_list.py", rad)
        for n in range(3):
            assert f"{n} of 3 read" in at.get("progress")[0].proto.text
            assert not any(h.value == "AI result" for h in at.subheader)
            at.radio[0].set_value("benign")
            at.button(key="mrl_unaided_save").click().run()
            assert "Unaided read saved." in texts(at), texts(at)
            at.button(key="mrl_show_ai").click().run()
            assert any(h.value == "AI result" for h in at.subheader)
            assert "(locked)" in texts(at)
            at.radio[0].set_value("malignant")
            at.button(key="mrl_aided_save").click().run()
            assert not at.exception
        assert "You have read all 3 cases of this list" in texts(at)

        svc = ReaderStudyService(factory)
        summary = svc.find_list(users["coordinator"].id, "Pages")
        data = svc.study_data(users["coordinator"].id, summary.list_id)
        assert len(data.reads) == 6
        assert sorted(data.reads["phase"]) == ["aided"] * 3 + ["unaided"] * 3

        at = page("pilot_report.py", users["lead"])
        assert not at.exception
        body = texts(at)
        for heading in ("Participants", "Results", "Figures", "Limitations"):
            assert heading in body
        assert at.dataframe[0].value["cases read"].tolist() == ["3 of 3", "3 of 3"]
        assert len(at.get("plotly_chart")) == 4
        assert [b.proto.label for b in at.get("download_button")] == ["Download report (HTML)",
                                                                      "Download reads (CSV)"]

    def test_reader_without_a_list_and_radiologist_refused_on_coordinator_page(self, app_env, users):
        at = page("my_reading_list.py", users["radiologist"])
        assert "No reading list is assigned to you" in texts(at)
        at = page("reading_lists.py", users["radiologist"])
        assert not at.exception and not at.get("multiselect")
