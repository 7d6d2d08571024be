"""Page tests (AppTest) of the lesion parts of the reader-study pages: reference lesions on Reading
lists, lesion marks and AI findings on My reading list (with the unaided step's blinding checked on
every rendered element), and the MRMC section of Pilot report."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.reader_study import ReaderStudyService
from tests.dashboard.conftest import texts
from tests.dashboard.test_reader_study_pages import seed_studies

VIEWS = Path(__file__).resolve().parents[2] / "dashboard" / "views"
#: Text that only AI output puts on the reader's page (the result line, the findings, taken marks).
AI_OUTPUT = ("(score ", "model tiny_a", "tiny_a", "AI nodule findings", "Take AI finding", "taken from the AI",
             "p(nodule)", "malignancy (1-5)", "out-of-distribution")


def page(name: str, user) -> AppTest:
    at = AppTest.from_file(str(VIEWS / name), default_timeout=60)
    at.session_state["user"] = user
    return at.run()


def rendered(at: AppTest) -> str:
    """Every rendered element of the run as text: protos (labels, bodies, options) and table cells."""
    out: list[str] = []

    def walk(node) -> None:
        children = getattr(node, "children", None)
        if children:
            for child in children.values():
                walk(child)
            return
        if type(node).__name__ == "Dataframe":
            out.append(node.value.to_csv())
        else:
            out.append(str(getattr(node, "proto", "")))

    walk(at._tree)
    return "\n".join(out)


def frames_with(at: AppTest, *columns: str) -> list:
    """The tables of the run that have all of ``columns`` (st.dataframe keys do not reach AppTest)."""
    return [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]


def make_list(factory, users, *, readers, mode="ai_after_unaided", name="Marks list"):
    ids = seed_studies(factory, users)
    svc = ReaderStudyService(factory)
    summary = svc.create_list(users["coordinator"].id, name=name, cases=ids, readers=[u.id for u in readers],
                              model_id="tiny_a", mode=mode, randomise=False, seed=1)
    table = svc.reference_table(users["coordinator"].id, summary.list_id).sort_values("position")
    return svc, summary, table["case_id"].astype(int).tolist(), table


def record_finding(factory, case_id: int) -> int:
    from db import repository as repo
    from db.schema import ReadingListCase

    with factory.begin() as s:
        case = s.get(ReadingListCase, case_id)
        det = repo.record_ai_nodules(
            s, inference_id=case.inference_id, model_id="nodule3d", model_sha256="e" * 64, latency_ms=1.0,
            nodules=[{"rank": 1, "centre_voxel": [0, 140, 150], "centre_mm": [0.0, 0.0, 0.0], "diameter_mm": 7.5,
                      "p_nodule": 0.93, "malignancy": 3.5, "lobulation": 1.0, "spiculation": 1.0,
                      "slice_index": 0, "is_mass": False}])
        return det.nodules[0].id


class TestReaderMarks:
    def test_unaided_shows_no_ai_output_marks_lock_at_the_reveal_and_an_ai_finding_becomes_a_mark(
            self, app_env, users, factory):
        rad = users["radiologist"]
        svc, _, cases, _ = make_list(factory, users, readers=[rad])
        record_finding(factory, cases[0])
        at = page("my_reading_list.py", rad)
        assert not at.exception
        # unaided step: no AI output in any rendered element, no findings table
        assert not [s for s in AI_OUTPUT if s in rendered(at)], [s for s in AI_OUTPUT if s in rendered(at)]
        assert not at.dataframe and "Lesion marks" in texts(at)
        k = f"unaided_{cases[0]}"
        at.number_input(key=f"mrl_mark_x_{k}").set_value(10.0)
        at.number_input(key=f"mrl_mark_y_{k}").set_value(20.0)
        at.select_slider(key=f"mrl_mark_rating_{k}").set_value(4)
        at.button(key="mrl_mark_add_unaided").click().run()
        assert not at.exception
        assert "Mark added." in texts(at) and "Mark 1: slice 1, x 10, y 20, rating 4" in texts(at)
        mark_id = svc.reader_case(rad.id, cases[0]).marks[0].mark_id
        assert at.button(key=f"mrl_del_{mark_id}").label == "Delete"
        at.radio[0].set_value("malignant")
        at.button(key="mrl_unaided_save").click().run()
        assert not [s for s in AI_OUTPUT if s in rendered(at)]  # still unaided: the AI is not shown
        at.button(key="mrl_show_ai").click().run()
        # aided step: the unaided marks are locked, the aided step starts from their copy, findings shown;
        # the same check finds the AI output now (so it can fail)
        assert {"model tiny_a", "AI nodule findings", "Take AI finding", "p(nodule)"} <= {
            s for s in AI_OUTPUT if s in rendered(at)}
        body = texts(at)
        assert "**Your unaided marks** (locked)" in body
        assert "copied from your unaided marks" in body
        aided = svc.reader_case(rad.id, cases[0]).step_marks("aided")
        assert len(aided) == 1 and at.button(key=f"mrl_del_{aided[0].mark_id}")
        with pytest.raises(KeyError):
            at.button(key=f"mrl_del_{mark_id}")  # the locked unaided mark has no Delete button
        findings = at.dataframe[0].value
        assert findings[["finding", "slice", "x", "y"]].values.tolist() == [[1, 1, 150, 140]]
        nodule_id = svc.reader_case(rad.id, cases[0]).ai.findings[0].nodule_id
        at.select_slider(key=f"mrl_take_rating_{cases[0]}").set_value(5)
        at.button(key=f"mrl_take_{nodule_id}").click().run()
        assert not at.exception and "AI finding 1 taken as a mark." in texts(at)
        assert "Mark 2: slice 1, x 150, y 140, rating 5 · taken from the AI" in texts(at)
        assert at.button(key=f"mrl_take_{nodule_id}").disabled
        at.radio[0].set_value("malignant")
        at.button(key="mrl_aided_save").click().run()
        assert not at.exception and "Case 1 saved." in texts(at)
        # the next case is unaided again: no AI output
        assert not [s for s in AI_OUTPUT if s in rendered(at)]

    def test_a_refused_mark_shows_the_reason(self, app_env, users, factory):
        rad = users["radiologist"]
        _, _, cases, _ = make_list(factory, users, readers=[rad])
        at = page("my_reading_list.py", rad)
        k = f"unaided_{cases[0]}"
        at.number_input(key=f"mrl_mark_slice_{k}").set_value(5)  # the series has 1 slice
        at.button(key="mrl_mark_add_unaided").click().run()
        assert not at.exception
        assert any("Slice index (0-based) must be a whole number from 0 to 0" in e.value for e in at.error)


class TestReadingListsLesions:
    def test_form_delete_and_csv(self, app_env, users, factory):
        coord = users["coordinator"]
        svc, summary, cases, table = make_list(factory, users, readers=[users["radiologist"]])
        at = page("reading_lists.py", coord)
        assert not at.exception and "Reference lesions" in texts(at)
        assert "No reference lesion yet for this list." in texts(at)
        at.selectbox(key="rl_lesion_case").set_value(cases[1])
        at.number_input(key="rl_lesion_x").set_value(12.0)
        at.number_input(key="rl_lesion_y").set_value(34.0)
        at.number_input(key="rl_lesion_d").set_value(6.0)
        at.button(key="rl_lesion_save").click().run()
        assert not at.exception and "Reference lesion saved." in texts(at)
        lesions = svc.reference_lesions(coord.id, summary.list_id)
        assert lesions[["case_id", "slice_index", "x", "y", "diameter_mm", "source"]].values.tolist() == [
            [cases[1], 0, 12.0, 34.0, 6.0, "form"]]
        (shown,) = frames_with(at, "lesion_id", "slice")
        assert shown["slice"].tolist() == [1]  # shown 1-based
        at.button(key="rl_lesion_delete").click().run()
        assert not at.exception and "Reference lesion" in texts(at)
        assert svc.reference_lesions(coord.id, summary.list_id).empty
        key = table.set_index("case_id").loc[cases[2], "study_key"]
        csv_text = f"study_key,slice,x,y,diameter_mm\n{key},1,5,6,4\nffffffffffffffff,1,1,1,1\n".encode()
        at.file_uploader(key="rl_lesion_csv").upload("lesions.csv", csv_text, "text/csv")
        at.run()
        at.button(key="rl_lesion_import").click().run()
        assert not at.exception
        assert "1 reference standard(s) saved." in texts(at) and "1 row(s) were not saved:" in texts(at)
        assert svc.reference_lesions(coord.id, summary.list_id)["case_id"].tolist() == [cases[2]]

    def test_lidc_xml_from_the_data_folder(self, app_env, users, factory, datasets_dir):
        from core import store
        from core.imaging import read_series
        from db import repository as repo

        folder = next((datasets_dir / "lidc-idri" / "LIDC-IDRI-0001").glob("*/*"))
        series = read_series(folder)
        content_hash = hashlib.sha256(b"lidc-page").hexdigest()
        with factory.begin() as s:
            study = repo.add_study(s, study_key=hashlib.sha256(b"lidc-key").hexdigest()[:32], modality="CT",
                                   n_series=1, n_slices=len(series.slices), source_kind="dicom",
                                   content_hash=content_hash, uploaded_by=users["coordinator"].id)
            row = repo.add_series(s, study_id=study.id, series_key=series.series_key, modality="CT",
                                  n_slices=len(series.slices), spacing_mm=series.spacing_mm)
            repo.add_inference(s, series_id=row.id, model_id="tiny_a", model_sha256="a" * 64,
                               slice_probabilities=[[0.2, 0.3, 0.5]] * len(series.slices),
                               series_result={"series_label": "malignant", "series_score": 0.5}, threshold=0.5,
                               ood=False, latency_ms=1.0)
            study_id = study.id
        store.put_series(series, content_hash)
        svc = ReaderStudyService(factory)
        summary = svc.create_list(users["coordinator"].id, name="LIDC page", cases=[study_id],
                                  readers=[users["radiologist"].id], model_id="tiny_a", mode="ai_after_unaided", seed=1)
        at = page("reading_lists.py", users["coordinator"])
        at.selectbox(key="rl_ref_list").set_value(summary.list_id).run()
        xml = next(folder.glob("*.xml")).relative_to(datasets_dir).as_posix()
        at.selectbox(key="rl_lidc_file").set_value(xml)
        at.button(key="rl_lidc_import").click().run()
        assert not at.exception
        assert "1 reference lesion(s) saved from the LIDC XML." in texts(at)
        (result,) = frames_with(at, "slice", "readers")
        assert result[["slice", "readers"]].values.tolist() == [[91, 4]]  # 0-based 90 shown 1-based


def read_small_pilot(svc, users, cases, table):
    """2 readers (radiologist, admin) read 4 cases unaided then aided; 2 malignant cases with a lesion."""
    coord = users["coordinator"].id
    refs = ["malignant", "malignant", "normal", "benign"]
    for sid, ref in zip(table["study_id"], refs, strict=True):
        svc.set_reference(coord, study_id=int(sid), finding=ref, source="pathology")
    for c in cases[:2]:
        svc.add_reference_lesion(coord, c, slice_index=0, x=50.0, y=50.0, diameter_mm=10.0)
    plan = {"radiologist": ("malignant", "malignant", "normal", "malignant"),
            "admin": ("malignant", "benign", "benign", "normal")}
    for role, findings in plan.items():
        uid = users[role].id
        for c, f in zip(cases, findings, strict=True):
            svc.open_case(uid, c)
            if f == "malignant":
                svc.add_mark(uid, c, step="unaided", slice_index=0, x=51.0, y=50.0, rating=4)
            svc.record_unaided(uid, c, finding=f, confidence=4)
            svc.show_ai(uid, c)
            svc.record_aided(uid, c, finding=f, confidence=5)


class TestPilotReportPage:
    def test_what_is_missing_with_one_reader(self, app_env, users, factory):
        rad = users["radiologist"]
        svc, _, cases, _ = make_list(factory, users, readers=[rad])
        for c in cases:
            svc.open_case(rad.id, c)
            svc.record_unaided(rad.id, c, finding="normal", confidence=3)
            svc.show_ai(rad.id, c)
            svc.record_aided(rad.id, c, finding="normal", confidence=3)
        at = page("pilot_report.py", users["lead"])
        assert not at.exception
        assert "Multi-reader multi-case analysis" in texts(at)
        warnings = [w.value for w in at.warning]
        assert any("No case has a reference standard" in w for w in warnings)
        assert any("No reference lesions" in w for w in warnings)
        assert at.number_input(key="pr_effect").value == pytest.approx(0.05)

    def test_the_analysis_tables_sentence_and_downloads(self, app_env, users, factory):
        svc, _, cases, table = make_small(factory, users)
        read_small_pilot(svc, users, cases, table)
        at = page("pilot_report.py", users["lead"])
        assert not at.exception
        body = texts(at)
        assert "With 2 readers and 4 cases" in body
        assert len(frames_with(at, "reader", "aided", "unaided")) == 2  # FOMs: ROC AUC and wAFROC
        assert len(frames_with(at, "analysis", "statistic", "df", "p")) == 2  # random- and fixed-reader tests
        assert len(frames_with(at, "analysis", "aided - unaided", "95 % CI")) == 2
        assert len(frames_with(at, "copies kept", "AI findings taken")) == 1
        # marks on the cases each reader called malignant: the radiologist's on cases 1, 2 (lesions) and 4
        # (benign, no lesion: NL), the admin's on case 1; the aided step keeps the copies
        (counts,) = frames_with(at, "LL", "NL", "dropped")
        assert (counts["LL"].sum(), counts["NL"].sum()) == (2 * (2 + 1), 2 * 1)
        labels = [b.proto.label for b in at.get("download_button")]
        assert labels[:2] == ["Download report (HTML)", "Download reads (CSV)"]
        assert set(labels[2:]) == {"ROC reads (CSV)", "RJafroc workbook, ROC (Excel)", "FROC truth (CSV)",
                                   "FROC marks (CSV)", "RJafroc workbook, FROC (Excel)"}
        at.number_input(key="pr_effect").set_value(0.2).run()
        assert "at the effect you typed (0.200)" in texts(at)


def make_small(factory, users):
    """Four cases (the three of seed_studies and one more) for the radiologist and the admin."""
    from core.imaging import study_key_for
    from db.repository import add_inference, add_series, add_study

    ids = seed_studies(factory, users)
    with factory.begin() as s:
        study = add_study(s, study_key=study_key_for("page-study-4"), modality="CT", n_series=1, n_slices=1,
                          source_kind="dicom", content_hash=hashlib.sha256(b"p4").hexdigest(),
                          uploaded_by=users["coordinator"].id)
        series = add_series(s, study_id=study.id, series_key=hashlib.sha256(b"series4").hexdigest()[:32],
                            modality="CT", n_slices=1)
        add_inference(s, series_id=series.id, model_id="tiny_a", model_sha256="a" * 64,
                      slice_probabilities=[[0.2, 0.3, 0.5]], series_result={"series_label": "normal",
                                                                              "series_score": 0.5},
                      threshold=0.5, ood=False, latency_ms=1.0)
        ids.append((study.id, series.series_key))
    svc = ReaderStudyService(factory)
    summary = svc.create_list(users["coordinator"].id, name="Small pilot", cases=ids,
                              readers=[users["radiologist"].id, users["admin"].id], model_id="tiny_a",
                              mode="ai_after_unaided", randomise=False, seed=1)
    table = svc.reference_table(users["coordinator"].id, summary.list_id).sort_values("position")
    return svc, summary, table["case_id"].astype(int).tolist(), table
