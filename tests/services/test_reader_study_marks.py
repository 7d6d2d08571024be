"""Tests of the lesion marks and reference lesions of services.reader_study (SQLite and PostgreSQL),
and of migration 0007_lesion_marks."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import inspect, text

from db import repository as repo
from db.repository import NotFoundError, PermissionDenied, ValidationError
from db.schema import AppendOnlyError, LesionMark, ReferenceLesion
from services import reader_study as rs
from tests.db.factories import new_inference, sha
from tests.db.pilot_factory import MODEL, Clock, make_cases

LIDC_0001 = "lidc-idri/LIDC-IDRI-0001"


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def svc(factory, clock):
    return rs.ReaderStudyService(factory, clock=clock)


def make_list(svc, factory, people, mode="ai_after_unaided", n=3, name="Marks"):
    """A list of ``n`` 2-slice cases for rad1 and rad2 in the coordinator's order; returns (summary, case ids).
    The studies are made on the first call and reused by later lists of the same test."""
    cands = svc.candidate_cases(people["coord"], MODEL)
    studies = (dict(enumerate(sorted(cands["study_id"].astype(int).tolist())[:n], start=1)) if len(cands) >= n
               else make_cases(factory, people["coord"], n=n))
    summary = svc.create_list(people["coord"], name=name, cases=list(studies.values()),
                              readers=[people["rad1"], people["rad2"]], model_id=MODEL, mode=mode, randomise=False,
                              seed=3)
    table = svc.reference_table(people["coord"], summary.list_id)
    return summary, table.sort_values("position")["case_id"].astype(int).tolist()


def mark_rows(factory) -> list[LesionMark]:
    with factory() as s:
        return list(s.scalars(sa.select(LesionMark).order_by(LesionMark.id)))


def add(svc, reader, case_id, step="unaided", z=1, x=10.0, y=20.0, rating=3):
    return svc.add_mark(reader, case_id, step=step, slice_index=z, x=x, y=y, rating=rating)


class TestOwnMarks:
    def test_add_rerate_delete_are_rows_that_supersede(self, svc, factory, people):
        _, cases = make_list(svc, factory, people)
        rad = people["rad1"]
        svc.open_case(rad, cases[0])
        case = add(svc, rad, cases[0])
        (mark,) = case.step_marks("unaided")
        assert (mark.slice_index, mark.x, mark.y, mark.rating, mark.nodule_id) == (1, 10.0, 20.0, 3, None)
        case = svc.rerate_mark(rad, mark.mark_id, rating=5)
        (rerated,) = case.marks
        assert rerated.rating == 5 and rerated.mark_id != mark.mark_id
        case = svc.delete_mark(rad, rerated.mark_id)
        assert case.marks == ()
        rows = mark_rows(factory)
        assert [(r.rating, r.supersedes_id, r.deleted) for r in rows] == [
            (3, None, False), (5, rows[0].id, False), (5, rows[1].id, True)]
        with pytest.raises(ValidationError, match="already changed or deleted"):
            svc.delete_mark(rad, rerated.mark_id)
        with pytest.raises(ValidationError, match="already changed or deleted"):
            svc.rerate_mark(rad, mark.mark_id, rating=2)
        assert svc.reader_case(rad, cases[0]).marks == ()

    def test_bad_values_and_unopened_cases_and_other_readers(self, svc, factory, people):
        _, cases = make_list(svc, factory, people)
        rad1, rad2 = people["rad1"], people["rad2"]
        with pytest.raises(rs.CaseNotOpenError, match="Open the case"):
            add(svc, rad1, cases[0])
        svc.open_case(rad1, cases[0])
        for kwargs, message in (({"rating": 6}, "Rating must be a whole number from 1 to 5"),
                                ({"z": 2}, r"Slice index \(0-based\) must be a whole number from 0 to 1"),
                                ({"x": -1.0}, r"x \(pixel column\) must be from 0.0"),
                                ({"step": "later"}, "Unknown step 'later'")):
            with pytest.raises(ValidationError, match=message):
                add(svc, rad1, cases[0], **kwargs)
        mark = add(svc, rad1, cases[0]).marks[0]
        svc.open_case(rad2, cases[0])
        with pytest.raises(rs.NotYourMarkError, match="another reader's"):
            svc.delete_mark(rad2, mark.mark_id)
        assert add(svc, rad2, cases[0], x=30.0).marks[0].x == 30.0  # rad2 sees only their own mark
        with pytest.raises(NotFoundError):
            svc.delete_mark(rad1, 99999)
        with pytest.raises(rs.NotAssignedError):
            add(svc, people["rad3"], cases[0])
        assert len(mark_rows(factory)) == 2  # nothing written by the refusals


class TestBlindingOfMarks:
    def test_unaided_marks_lock_at_the_ai_reveal_and_the_aided_step_starts_from_a_copy(self, svc, factory, people):
        _, cases = make_list(svc, factory, people)
        rad, c = people["rad1"], cases[0]
        svc.open_case(rad, c)
        first = add(svc, rad, c, z=0, x=5.0, y=6.0, rating=2).marks[0]
        second = add(svc, rad, c, z=1, x=50.0, y=60.0, rating=4).step_marks("unaided")[1]
        with pytest.raises(rs.AidedBeforeUnaidedError, match="unaided read first"):
            add(svc, rad, c, step="aided")
        svc.record_unaided(rad, c, finding="benign", confidence=3)
        with pytest.raises(rs.AiNotShownError, match="has not been shown"):
            add(svc, rad, c, step="aided")
        add(svc, rad, c, z=1, x=70.0, y=70.0, rating=1)  # still unaided: not locked before the reveal
        case = svc.show_ai(rad, c)
        unaided, aided = case.step_marks("unaided"), case.step_marks("aided")
        assert len(unaided) == len(aided) == 3
        assert [(m.slice_index, m.x, m.y, m.rating) for m in aided] == [
            (m.slice_index, m.x, m.y, m.rating) for m in unaided]
        assert [m.copied_from_id for m in aided] == [m.mark_id for m in unaided]
        for call in (lambda: add(svc, rad, c), lambda: svc.delete_mark(rad, first.mark_id),
                     lambda: svc.rerate_mark(rad, second.mark_id, rating=5)):
            with pytest.raises(rs.UnaidedLockedError, match="unaided marks are locked"):
                call()
        # changes in the aided step: re-rate one copy, delete another, add a new mark
        svc.rerate_mark(rad, aided[0].mark_id, rating=5)
        svc.delete_mark(rad, aided[1].mark_id)
        case = add(svc, rad, c, step="aided", z=0, x=9.0, y=9.0, rating=3)
        assert [(m.rating, m.copied_from_id) for m in case.step_marks("aided")] == [
            (1, unaided[2].mark_id), (5, unaided[0].mark_id), (3, None)]
        assert case.step_marks("unaided") == unaided  # the unaided marks are unchanged
        svc.show_ai(rad, c)  # showing again copies nothing more
        assert len(svc.reader_case(rad, c).step_marks("aided")) == 3

    def test_no_ai_list_has_no_aided_marks_and_ai_at_once_no_unaided_marks(self, svc, factory, people):
        _, cases = make_list(svc, factory, people, mode="no_ai", name="No AI")
        rad = people["rad1"]
        svc.open_case(rad, cases[0])
        add(svc, rad, cases[0])
        svc.record_unaided(rad, cases[0], finding="normal", confidence=4)
        assert len(add(svc, rad, cases[0], x=1.0).marks) == 2  # no AI ever: never locked
        with pytest.raises(rs.NoAiModeError, match="no aided step"):
            add(svc, rad, cases[0], step="aided")
        _, at_once = make_list(svc, factory, people, mode="ai_at_once", name="At once")
        svc.open_case(rad, at_once[0])
        with pytest.raises(rs.UnaidedLockedError, match="no unaided step"):
            add(svc, rad, at_once[0])
        assert add(svc, rad, at_once[0], step="aided").marks[0].step == "aided"

    def test_blinding_errors_of_marks_are_permission_errors(self):
        assert issubclass(rs.NotYourMarkError, PermissionDenied)


def record_detection(factory, case_id: int, n: int = 2, tag: str = "a"):
    """Two AI findings on the case's inference (rank 1 at slice 1, (30, 40); rank 2 at slice 0, (100, 120))."""
    from db.schema import ReadingListCase

    with factory.begin() as s:
        case = s.get(ReadingListCase, case_id)
        det = repo.record_ai_nodules(
            s, inference_id=case.inference_id, model_id="nodule3d", model_sha256=sha(tag), latency_ms=3.0,
            nodules=[{"rank": r, "centre_voxel": z_y_x, "centre_mm": [1.0, 2.0, 3.0], "diameter_mm": d,
                      "p_nodule": 0.9, "malignancy": 3.0, "lobulation": 1.0, "spiculation": 1.0,
                      "slice_index": z_y_x[0], "is_mass": False}
                     for r, z_y_x, d in ((1, [1, 40, 30], 8.0), (2, [0, 120, 100], 5.0))][:n])
        return [x.id for x in det.nodules]


class TestAiFindings:
    def test_findings_show_only_after_the_reveal_and_one_becomes_a_mark(self, svc, factory, people):
        _, cases = make_list(svc, factory, people)
        rad, c = people["rad1"], cases[0]
        ids = record_detection(factory, c)
        opened = svc.open_case(rad, c)
        assert opened.ai is None  # unaided: no AI output at all, no findings
        with pytest.raises(rs.AidedBeforeUnaidedError):
            svc.take_ai_finding(rad, c, ids[1], rating=4)
        svc.record_unaided(rad, c, finding="malignant", confidence=4)
        with pytest.raises(rs.AiNotShownError):
            svc.take_ai_finding(rad, c, ids[1], rating=4)
        shown = svc.show_ai(rad, c)
        assert [(f.rank, f.slice_index, f.x, f.y, f.diameter_mm) for f in shown.ai.findings] == [
            (1, 1, 30, 40, 8.0), (2, 0, 100, 120, 5.0)]
        case = svc.take_ai_finding(rad, c, ids[1], rating=4)
        (mark,) = case.step_marks("aided")
        assert (mark.nodule_id, mark.slice_index, mark.x, mark.y, mark.rating) == (ids[1], 0, 100.0, 120.0, 4)
        with pytest.raises(ValidationError, match="already took AI finding 2"):
            svc.take_ai_finding(rad, c, ids[1], rating=5)
        other = record_detection(factory, cases[1], tag="b")
        with pytest.raises(ValidationError, match="not one of the AI findings shown on this case"):
            svc.take_ai_finding(rad, c, other[0], rating=3)
        svc.delete_mark(rad, mark.mark_id)  # once deleted it may be taken again
        assert svc.take_ai_finding(rad, c, ids[1], rating=2).step_marks("aided")[0].rating == 2

    def test_a_case_without_a_detection_has_no_findings(self, svc, factory, people):
        _, cases = make_list(svc, factory, people, mode="ai_at_once", name="At once")
        case = svc.open_case(people["rad1"], cases[0])
        assert case.ai is not None and case.ai.findings == ()


class TestReferenceLesionsForm:
    def test_add_list_refuse_duplicates_and_delete(self, svc, factory, people):
        summary, cases = make_list(svc, factory, people)
        coord = people["coord"]
        first = svc.add_reference_lesion(coord, cases[0], slice_index=1, x=30.0, y=40.0, diameter_mm=8.0, note="a")
        svc.add_reference_lesion(coord, cases[2], slice_index=0, x=5.5, y=6.5, diameter_mm=4.0)
        with pytest.raises(ValidationError, match="already entered"):
            svc.add_reference_lesion(coord, cases[0], slice_index=1, x=30.4, y=39.6, diameter_mm=8.0)
        with pytest.raises(ValidationError, match=r"Slice index \(0-based; the series has 2 slices\)"):
            svc.add_reference_lesion(coord, cases[0], slice_index=2, x=1.0, y=1.0, diameter_mm=3.0)
        with pytest.raises(ValidationError, match="Diameter"):
            svc.add_reference_lesion(coord, cases[0], slice_index=1, x=1.0, y=1.0, diameter_mm=0.0)
        table = svc.reference_lesions(people["lead"], summary.list_id)
        assert table[["case_id", "slice_index", "x", "y", "diameter_mm", "source", "note"]].values.tolist() == [
            [cases[0], 1, 30.0, 40.0, 8.0, "form", "a"], [cases[2], 0, 5.5, 6.5, 4.0, "form", ""]]
        assert list(table.columns) == list(rs.LESION_COLUMNS)
        svc.delete_reference_lesion(coord, first)
        with pytest.raises(ValidationError, match="already deleted"):
            svc.delete_reference_lesion(coord, first)
        assert svc.reference_lesions(coord, summary.list_id)["case_id"].tolist() == [cases[2]]
        with factory() as s:
            rows = list(s.scalars(sa.select(ReferenceLesion).order_by(ReferenceLesion.id)))
        assert [(r.supersedes_id, r.deleted) for r in rows] == [(None, False), (None, False), (first, True)]

    def test_readers_and_radiologists_are_refused(self, svc, factory, people):
        studies = make_cases(factory, people["coord"], n=2)
        summary = svc.create_list(people["coord"], name="Admin reads", cases=list(studies.values()),
                                  readers=[people["admin"]], model_id=MODEL, mode="ai_after_unaided", seed=2)
        case_id = int(svc.reference_table(people["coord"], summary.list_id)["case_id"].iloc[0])
        for call in (lambda: svc.add_reference_lesion(people["admin"], case_id, slice_index=0, x=1, y=1, diameter_mm=5),
                     lambda: svc.reference_lesions(people["admin"], summary.list_id),
                     lambda: svc.import_reference_lesions_csv(people["admin"], summary.list_id,
                                                              "study_key,slice,x,y,diameter_mm\n")):
            with pytest.raises(rs.BlindingError, match="reader of the reading list 'Admin reads'"):
                call()
        with pytest.raises(PermissionDenied, match="may enter reference lesions"):
            svc.add_reference_lesion(people["rad1"], case_id, slice_index=0, x=1, y=1, diameter_mm=5)


class TestReferenceLesionsCsv:
    def test_rows_save_or_are_reported_with_their_line(self, svc, factory, people):
        summary, cases = make_list(svc, factory, people)
        keys = svc.reference_table(people["coord"], summary.list_id).set_index("case_id")["study_key"]
        csv_text = ("Study_Key,Slice,X,Y,Diameter_mm,note\n"
                    f"{keys[cases[0]]},1,30,40,8,first slice\n"     # full key, slice 1 = index 0
                    f"{keys[cases[1]][:12]},2,10.5,11.5,6.25,\n"    # 12-character prefix, slice 2 = index 1
                    "ffffffffffffffff,1,1,1,5,\n"                    # no such case
                    f"{keys[cases[2]]},3,1,1,5,\n"                   # slice 3 of a 2-slice series
                    f"{keys[cases[2]]},1,1,1,-5,\n"                  # negative diameter
                    f"{keys[cases[2]]},0,1,1,5,\n"                   # slice is 1-based
                    f"{keys[cases[0]]},1,30.2,40,8,again\n")         # the same lesion again
        result = svc.import_reference_lesions_csv(people["coord"], summary.list_id, csv_text.encode())
        assert result.saved == 2
        assert [(u.line, u.reason.split(" must")[0].split(";")[0]) for u in result.unmatched] == [
            (4, "no case of this list has this study key"), (5, "Slice index (0-based"),
            (6, "Diameter (mm)"), (7, "slice (1-based)"), (8, "the same lesion is already entered for this case")]
        table = svc.reference_lesions(people["coord"], summary.list_id)
        assert table[["case_id", "slice_index", "x", "y", "diameter_mm", "source"]].values.tolist() == [
            [cases[0], 0, 30.0, 40.0, 8.0, "csv"], [cases[1], 1, 10.5, 11.5, 6.25, "csv"]]

    def test_a_missing_column_saves_nothing(self, svc, factory, people):
        summary, _ = make_list(svc, factory, people)
        with pytest.raises(ValidationError, match="missing: diameter_mm"):
            svc.import_reference_lesions_csv(people["coord"], summary.list_id, "study_key,slice,x,y\n")


@pytest.fixture(scope="module")
def lidc_series(datasets_dir):
    """The shared LIDC-IDRI-0001 series (133 slices) and its XML, read once."""
    from core.imaging import read_series

    folder = next((datasets_dir / LIDC_0001).glob("*/*"))
    return read_series(folder), next(folder.glob("*.xml"))


def lidc_case(svc, factory, people, series, *, stored=True):
    """A one-case list whose series is the LIDC-IDRI-0001 CT (in the study store when ``stored``)."""
    from core import store

    content_hash = sha("lidc-0001-upload")
    with factory.begin() as s:
        study = repo.add_study(s, study_key=sha("lidc-0001")[:32], modality="CT", n_series=1,
                               n_slices=len(series.slices), source_kind="dicom", content_hash=content_hash,
                               uploaded_by=people["coord"])
        row = repo.add_series(s, study_id=study.id, series_key=series.series_key, modality="CT",
                              n_slices=len(series.slices), spacing_mm=series.spacing_mm)
        new_inference(s, row.id, model_id=MODEL)
        study_id = study.id
    if stored:
        store.put_series(series, content_hash)
    summary = svc.create_list(people["coord"], name="LIDC", cases=[study_id], readers=[people["rad1"]],
                              model_id=MODEL, mode="ai_after_unaided", seed=1)
    return summary, int(svc.reference_table(people["coord"], summary.list_id)["case_id"].iloc[0])


class TestReferenceLesionsLidc:
    def test_the_shared_xml_gives_one_lesion_marked_by_all_four_readers(self, svc, factory, people, lidc_series,
                                                                        datasets_dir):
        series, xml = lidc_series
        summary, case_id = lidc_case(svc, factory, people, series)
        files = svc.lidc_xml_files(people["coord"])
        rel = xml.relative_to(datasets_dir).as_posix()
        assert rel in files and all(f.startswith("lidc-idri/") for f in files)
        result = svc.import_reference_lesions_lidc(people["coord"], case_id, path=rel)
        assert (result.saved, result.already_there, result.fewer_readers, result.marks_outside) == (1, 0, 0, 0)
        assert result.small_marks == 9  # the readers' marks of nodules under 3 mm
        ((z, x, y, d, readers),) = result.lesions
        # README: one nodule marked by all 4 readers on slices 86-94 (0-based); centre on slice 90
        assert (z, readers) == (90, 4) and 86 <= z <= 94
        assert d == pytest.approx(32.76, abs=0.01) and (x, y) == pytest.approx((316.26, 367.02), abs=0.01)
        table = svc.reference_lesions(people["coord"], summary.list_id)
        assert table[["slice_index", "source"]].values.tolist() == [[90, "lidc-xml"]]
        assert "marked by 4 of the readers" in table["note"].iloc[0] and "4.75" in table["note"].iloc[0]
        again = svc.import_reference_lesions_lidc(people["coord"], case_id, xml=xml.read_bytes())
        assert (again.saved, again.already_there) == (0, 1)  # an upload of the same XML adds nothing

    def test_refusals(self, svc, factory, people, lidc_series, tmp_path):
        series, xml = lidc_series
        _, case_id = lidc_case(svc, factory, people, series, stored=False)
        coord = people["coord"]
        with pytest.raises(ValidationError, match="not in the study store"):
            svc.import_reference_lesions_lidc(coord, case_id, xml=xml.read_bytes())
        with pytest.raises(ValidationError, match="outside the data folder"):
            svc.import_reference_lesions_lidc(coord, case_id, path="../../etc/passwd")
        with pytest.raises(ValidationError, match="either as a file of the data folder or as an upload"):
            svc.import_reference_lesions_lidc(coord, case_id)
        with pytest.raises(ValidationError, match="cannot be read"):
            svc.import_reference_lesions_lidc(coord, case_id, xml=b"<notxml", open_series=lambda *_: series)
        with pytest.raises(PermissionDenied):
            svc.import_reference_lesions_lidc(people["rad1"], case_id, xml=xml.read_bytes())


class TestStudyData:
    def test_lesions_and_every_mark_row_with_current_and_chain(self, svc, factory, people):
        summary, cases = make_list(svc, factory, people)
        rad = people["rad1"]
        svc.add_reference_lesion(people["coord"], cases[0], slice_index=1, x=10.0, y=20.0, diameter_mm=6.0)
        svc.open_case(rad, cases[0])
        m = add(svc, rad, cases[0]).marks[0]
        svc.rerate_mark(rad, m.mark_id, rating=4)
        data = svc.study_data(people["lead"], summary.list_id)
        assert data.lesions[["case_id", "slice_index", "diameter_mm"]].values.tolist() == [[cases[0], 1, 6.0]]
        assert list(data.marks.columns) == list(rs.MARK_COLUMNS)
        assert data.marks[["rating", "current", "chain_id"]].values.tolist() == [[3, False, m.mark_id],
                                                                                 [4, True, m.mark_id]]
        assert data.cases[["n_slices", "spacing_z_mm", "spacing_y_mm", "spacing_x_mm"]].iloc[0].tolist() == [
            2, 8.0, 0.7, 0.7]


class TestAppendOnly:
    def test_marks_and_lesions_cannot_be_updated_or_deleted(self, svc, factory, people, engine):
        _, cases = make_list(svc, factory, people)
        svc.add_reference_lesion(people["coord"], cases[0], slice_index=0, x=1.0, y=1.0, diameter_mm=5.0)
        svc.open_case(people["rad1"], cases[0])
        add(svc, people["rad1"], cases[0])
        with pytest.raises(AppendOnlyError), factory.begin() as s:
            s.scalars(sa.select(LesionMark)).first().rating = 1
        for table in ("lesion_marks", "reference_lesions"):
            for sql in (f"UPDATE {table} SET x = 0", f"DELETE FROM {table}"):
                with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
                    conn.execute(text(sql))


class TestMigration0007:
    """A database at 0005 with users, studies, reads, a reading list, nodules and nodule reads keeps
    every row through 0007_lesion_marks, gains the two lesion tables (empty, append-only), and goes
    back to 0005 with nothing else touched."""

    LESION_TABLES = {"reference_lesions", "lesion_marks"}

    @staticmethod
    def _fill_at_0005(engine) -> dict:
        from db.session import make_session_factory, upgrade
        from tests.db.test_migrations import TestNodulesMigration

        ids = TestNodulesMigration._fill_at_0004(engine)
        upgrade(engine, "0005_nodules")
        factory = make_session_factory(engine)
        with factory.begin() as s:
            det = repo.record_ai_nodules(
                s, inference_id=ids["inference"], model_id="nodule-det", model_sha256="f" * 64, latency_ms=5.0,
                nodules=[{"rank": 1, "centre_voxel": [1, 2, 3], "centre_mm": [4.0, 5.0, 6.0], "diameter_mm": 6.0,
                          "p_nodule": 0.8, "malignancy": 2.0, "lobulation": 1.0, "spiculation": 1.0,
                          "slice_index": 1, "is_mass": False}])
            repo.record_nodule_decision(s, nodule_id=det.nodules[0].id, reader=ids["rad1"], decision="accept",
                                        seconds_to_decision=3.0)
            ids["nodule"] = det.nodules[0].id
        return ids

    def test_upgrade_keeps_every_row_and_downgrade_drops_only_the_lesion_tables(self, empty_db_url):
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        from db.schema import Base
        from db.session import downgrade, make_engine, make_session_factory, upgrade
        from tests.db.test_migrations import TestNodulesMigration, append_only_triggers, triggers

        engine = make_engine(empty_db_url, migrate=False)
        try:
            ids = self._fill_at_0005(engine)
            before = TestNodulesMigration._snapshot(engine)
            triggers_0005 = triggers(engine)
            assert len(before["nodule_reads"]) == 1 and len(before["reader_reads"]) == 1
            upgrade(engine, "0007_lesion_marks")
            after = TestNodulesMigration._snapshot(engine)
            assert {t: after[t] for t in before} == before
            assert {t: after[t] for t in self.LESION_TABLES} == {t: [] for t in self.LESION_TABLES}
            assert triggers(engine) == append_only_triggers(engine.dialect.name)
            with engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            factory = make_session_factory(engine)
            with factory.begin() as s:  # the new tables take rows that point at the old ones
                case_id = s.scalar(sa.text("SELECT id FROM reading_list_cases"))
                repo_mark = LesionMark(case_id=case_id, reader_id=ids["rad1"], step="aided", slice_index=1, x=3.0,
                                       y=2.0, rating=4, nodule_id=ids["nodule"])
                s.add(repo_mark)
            with pytest.raises(sa.exc.IntegrityError, match="append-only"), engine.begin() as conn:
                conn.execute(text("DELETE FROM lesion_marks"))
            downgrade(engine, "0005_nodules")
            assert not self.LESION_TABLES & set(inspect(engine).get_table_names())
            assert TestNodulesMigration._snapshot(engine) == before
            assert triggers(engine) == triggers_0005
            upgrade(engine)
            assert set(inspect(engine).get_table_names()) >= self.LESION_TABLES
        finally:
            engine.dispose()
