"""Tests of services.reader_study: reading lists, reference standard, blinded reads, migration 0004."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import inspect, text

from db.repository import NotFoundError, PermissionDenied, ValidationError
from db.schema import (
    APPEND_ONLY_TABLES,
    LESION_APPEND_ONLY_TABLES,
    NODULE_APPEND_ONLY_TABLES,
    READER_STUDY_APPEND_ONLY_TABLES,
    AppendOnlyError,
    ReaderRead,
    ReadingListCase,
    ReferenceStandard,
)
from db.session import downgrade, upgrade
from services import reader_study as rs
from tests.core.stats import reader_study_pilot as pilot
from tests.db.pilot_factory import MODEL, Clock, make_cases, run_pilot

READER_STUDY_TABLES = {"reading_lists", "reading_list_cases", "reading_list_readers", "reference_standards",
                       "reader_case_events", "reader_reads"}


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def svc(factory, clock):
    return rs.ReaderStudyService(factory, clock=clock)


@pytest.fixture()
def small(svc, factory, people):
    """A 3-case list in ai_after_unaided mode for rad1 and rad2; returns (summary, [study ids])."""
    studies = make_cases(factory, people["coord"], n=3)
    ids = [studies[c] for c in (1, 2, 3)]
    summary = svc.create_list(people["coord"], name="Small", cases=ids, readers=[people["rad1"], people["rad2"]],
                              model_id=MODEL, mode="ai_after_unaided", seed=5)
    return summary, ids


def make_list(svc, people, ids, mode, name):
    return svc.create_list(people["coord"], name=name, cases=ids, readers=[people["rad1"]], model_id=MODEL,
                           mode=mode, randomise=False, seed=1)


class TestCreateList:
    def test_each_reader_gets_the_recorded_seeds_permutation(self, svc, factory, people):
        studies = make_cases(factory, people["coord"], n=8)
        summary = svc.create_list(people["coord"], name="Eight", cases=list(studies.values()),
                                  readers=[people["rad1"], people["rad2"]], model_id=MODEL, mode="ai_after_unaided",
                                  seed=1234)
        assert (summary.seed, summary.n_cases, summary.reader_ids) == (1234, 8, (people["rad1"], people["rad2"]))
        table = svc.reference_table(people["coord"], summary.list_id)
        case_ids = table.sort_values("position")["case_id"].tolist()
        from db.schema import ReadingListReader
        with factory.begin() as s:
            orders = {r.reader_id: r.case_order for r in s.scalars(sa.select(ReadingListReader))}
        for reader in (people["rad1"], people["rad2"]):
            assert orders[reader] == rs.reader_order(case_ids, seed=1234, reader_id=reader, randomise=True)
            assert sorted(orders[reader]) == sorted(case_ids)
        assert orders[people["rad1"]] != orders[people["rad2"]]
        first = svc.next_case(people["rad1"], summary.list_id)
        assert first.case_id == orders[people["rad1"]][0] and (first.position, first.total) == (1, 8)

    def test_a_seed_is_drawn_and_recorded_when_none_is_given(self, svc, factory, people):
        studies = make_cases(factory, people["coord"], n=2)
        summary = svc.create_list(people["coord"], name="No seed", cases=list(studies.values()),
                                  readers=[people["rad1"]], model_id=MODEL, mode="no_ai")
        assert 0 <= summary.seed < 2**31 and svc.find_list(people["lead"], "no SEED").seed == summary.seed

    def test_a_radiologist_may_not_make_lists(self, svc, small, people):
        _, ids = small
        with pytest.raises(PermissionDenied, match="only admin, coordinator may make reading lists"):
            svc.create_list(people["rad1"], name="Mine", cases=ids, readers=[people["rad1"]], model_id=MODEL,
                            mode="no_ai")

    def test_refusals(self, svc, small, people):
        _, ids = small
        with pytest.raises(ValidationError, match="exists already"):
            make_list(svc, people, ids, "no_ai", "small")
        with pytest.raises(ValidationError, match="no result of the model 'other-model'"):
            svc.create_list(people["coord"], name="X", cases=ids, readers=[people["rad1"]], model_id="other-model",
                            mode="no_ai")
        with pytest.raises(ValidationError, match="cannot be a reader"):
            svc.create_list(people["coord"], name="X", cases=ids, readers=[people["lead"]], model_id=MODEL,
                            mode="no_ai")
        with pytest.raises(ValidationError, match="appears twice"):
            make_list(svc, people, [ids[0], ids[0]], "no_ai", "X")
        with pytest.raises(ValidationError, match="Unknown reading mode"):
            make_list(svc, people, ids, "sometimes", "X")
        with pytest.raises(NotFoundError, match="no study with id 999"):
            make_list(svc, people, [999], "no_ai", "X")
        assert [x.name for x in svc.lists(people["coord"])] == ["Small"]


class TestCasesAreSeries:
    def test_a_two_series_study_needs_its_series_named_and_each_series_keeps_its_own_result(
            self, svc, factory, people):
        from db import repository as repo
        from tests.db.factories import new_inference, new_study, sha

        with factory.begin() as s:
            study, first_inf = new_study(s, people["coord"], "two-series", ai_label="normal")
            second = repo.add_series(s, study_id=study.id, series_key=sha("second")[:32], modality="CT", n_slices=2)
            second_inf = new_inference(s, second.id, ai_label="malignant")
            study_id, second_key, first_id, second_id = study.id, second.series_key, first_inf.id, second_inf.id
        cands = svc.candidate_cases(people["coord"], "basic-cnn-v1")
        mine = cands[cands.study_id == study_id]
        assert sorted(mine.inference_id) == sorted([first_id, second_id])
        assert set(mine.series_key) == {second_key, mine[mine.inference_id == first_id].series_key.iloc[0]}
        with pytest.raises(ValidationError, match="has 2 series; choose the series"):
            svc.create_list(people["coord"], name="bare", cases=[study_id], readers=[people["rad1"]],
                            model_id="basic-cnn-v1", mode="ai_at_once", seed=1)
        summary = svc.create_list(people["coord"], name="named", cases=[(study_id, second_key)],
                                  readers=[people["rad1"]], model_id="basic-cnn-v1", mode="ai_at_once", seed=1)
        with factory() as s:
            rows = s.execute(sa.select(ReadingListCase.series_key, ReadingListCase.inference_id)
                             .where(ReadingListCase.list_id == summary.list_id)).all()
        assert [tuple(r) for r in rows] == [(second_key, second_id)]


class TestReferenceStandard:
    def test_form_and_a_newer_row_replaces_the_earlier(self, svc, small, people, factory):
        summary, ids = small
        svc.set_reference(people["coord"], study_id=ids[0], finding="benign", source="consensus")
        svc.set_reference(people["coord"], study_id=ids[0], finding="malignant", source="pathology", note="biopsy")
        table = svc.reference_table(people["coord"], summary.list_id)
        row = table[table["study_id"] == ids[0]].iloc[0]
        assert (row["reference"], row["reference_source"]) == ("malignant", "pathology")
        assert table["reference"].isna().sum() == 2
        with factory.begin() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(ReferenceStandard)) == 2  # both kept
        with pytest.raises(ValidationError, match="Unknown reference source"):
            svc.set_reference(people["coord"], study_id=ids[1], finding="benign", source="guess")
        with pytest.raises(PermissionDenied):
            svc.set_reference(people["rad1"], study_id=ids[1], finding="benign", source="consensus")

    def test_csv_import_reports_rows_that_did_not_match(self, svc, small, people):
        summary, ids = small
        keys = svc.reference_table(people["coord"], summary.list_id).set_index("study_id")["study_key"]
        csv_text = ("Study_Key,Finding,Source,note\n"
                    f"{keys[ids[0]]},malignant,pathology,\n"      # full key
                    f"{keys[ids[1]][:12]},Benign,follow-up,ok\n"  # 12-character prefix, any case of finding
                    "ffffffffffffffff,normal,consensus,\n"        # no such case
                    f"{keys[ids[2]]},cancer,pathology,\n"          # bad finding
                    f"{keys[ids[2]][:6]},normal,consensus,\n")     # prefix too short
        result = svc.import_reference_csv(people["coord"], summary.list_id, csv_text)
        assert result.saved == 2
        assert [(u.line, u.reason.split(":")[0]) for u in result.unmatched] == [
            (4, "no case of this list has this study key"), (5, "Unknown reference finding 'cancer'"),
            (6, "no case of this list has this study key")]
        table = svc.reference_table(people["coord"], summary.list_id).set_index("study_id")
        assert table.loc[ids[0], "reference"] == "malignant" and table.loc[ids[1], "reference"] == "benign"
        assert table["reference"].isna().sum() == 1

    def test_csv_without_a_required_column_saves_nothing(self, svc, small, people):
        summary, _ = small
        with pytest.raises(ValidationError, match="missing: source"):
            svc.import_reference_csv(people["coord"], summary.list_id, "study_key,finding\nabc,normal\n")


class TestReading:
    def test_progress_and_resume(self, svc, small, people, clock):
        summary, _ = small
        rad = people["rad1"]
        case = svc.next_case(rad, summary.list_id)
        assert (case.position, case.total, case.n_done, case.step) == (1, 3, 0, rs.CaseStep.UNAIDED_READ)
        svc.open_case(rad, case.case_id)
        clock.advance(42)
        after = svc.record_unaided(rad, case.case_id, finding="benign", confidence=3)
        assert after.step == rs.CaseStep.SHOW_AI and after.unaided.seconds == 42.0 and after.ai is None
        # The reader leaves and comes back: the same case, where they left it.
        again = svc.next_case(rad, summary.list_id)
        assert (again.case_id, again.step) == (case.case_id, rs.CaseStep.SHOW_AI)
        shown = svc.show_ai(rad, case.case_id)
        assert shown.ai is not None and shown.ai.model_id == MODEL and shown.ai.label == pilot.AI[1]
        clock.advance(8)
        done = svc.record_aided(rad, case.case_id, finding="malignant", confidence=4)
        assert (done.step, done.n_done, done.aided.seconds) == (rs.CaseStep.DONE, 1, 8.0)
        nxt = svc.next_case(rad, summary.list_id)
        assert nxt.case_id != case.case_id and (nxt.position, nxt.n_done) == (2, 1)
        assert [(x.name, x.n_done, x.total) for x in svc.my_lists(rad)] == [("Small", 1, 3)]
        assert svc.my_lists(people["rad2"])[0].n_done == 0

    def test_reader_facing_results_hold_no_reference_nor_other_reads(self, svc, small, people):
        summary, ids = small
        for sid in ids:
            svc.set_reference(people["coord"], study_id=sid, finding="malignant", source="pathology")
        other = svc.next_case(people["rad2"], summary.list_id)
        svc.open_case(people["rad2"], other.case_id)
        svc.record_unaided(people["rad2"], other.case_id, finding="normal", confidence=5)
        mine = svc.open_case(people["rad1"], other.case_id)
        fields = set(rs.ReaderCase.__dataclass_fields__)
        assert not {f for f in fields if "reference" in f or "other" in f}
        assert mine.unaided is None and mine.ai is None  # rad2's read is not rad1's
        for call in (lambda: svc.reference_table(people["rad1"], summary.list_id),
                     lambda: svc.study_data(people["rad1"], summary.list_id),
                     lambda: svc.lists(people["rad1"])):
            with pytest.raises(PermissionDenied):
                call()


class TestBlinding:
    def test_aided_read_before_the_unaided_one_is_refused(self, svc, small, people):
        summary, _ = small
        case = svc.open_case(people["rad1"], svc.next_case(people["rad1"], summary.list_id).case_id)
        with pytest.raises(rs.AidedBeforeUnaidedError, match="Record your unaided read first"):
            svc.record_aided(people["rad1"], case.case_id, finding="normal", confidence=3)
        with pytest.raises(rs.AidedBeforeUnaidedError, match="shown only after it"):
            svc.show_ai(people["rad1"], case.case_id)

    def test_unaided_read_cannot_change_after_the_ai_was_shown(self, svc, small, people, factory):
        summary, _ = small
        rad = people["rad1"]
        case = svc.open_case(rad, svc.next_case(rad, summary.list_id).case_id)
        svc.record_unaided(rad, case.case_id, finding="normal", confidence=2)
        changed = svc.record_unaided(rad, case.case_id, finding="benign", confidence=3)  # allowed: AI not shown
        assert changed.unaided.finding == "benign"
        svc.show_ai(rad, case.case_id)
        with pytest.raises(rs.UnaidedLockedError, match="locked: the AI result was already shown"):
            svc.record_unaided(rad, case.case_id, finding="malignant", confidence=5)
        with factory.begin() as s:
            rows = list(s.scalars(sa.select(ReaderRead).order_by(ReaderRead.id)))
        assert [(r.finding, r.supersedes_id) for r in rows] == [("normal", None), ("benign", rows[0].id)]

    def test_aided_read_before_the_ai_was_shown_is_refused(self, svc, small, people):
        summary, _ = small
        rad = people["rad1"]
        case = svc.open_case(rad, svc.next_case(rad, summary.list_id).case_id)
        svc.record_unaided(rad, case.case_id, finding="normal", confidence=2)
        with pytest.raises(rs.AiNotShownError, match="has not been shown"):
            svc.record_aided(rad, case.case_id, finding="normal", confidence=2)

    def test_reading_an_unopened_case_is_refused(self, svc, small, people):
        summary, _ = small
        case = svc.next_case(people["rad1"], summary.list_id)
        with pytest.raises(rs.CaseNotOpenError, match="Open the case"):
            svc.record_unaided(people["rad1"], case.case_id, finding="normal", confidence=2)

    def test_a_reader_not_assigned_is_refused(self, svc, small, people, factory):
        summary, _ = small
        case = svc.next_case(people["rad1"], summary.list_id)
        with pytest.raises(rs.NotAssignedError, match="not a reader of the reading list 'Small'"):
            svc.open_case(people["rad3"], case.case_id)
        with pytest.raises(rs.NotAssignedError):
            svc.next_case(people["rad3"], summary.list_id)

    def test_no_ai_mode(self, svc, small, people):
        _, ids = small
        summary = make_list(svc, people, ids, "no_ai", "Without AI")
        case = svc.open_case(people["rad1"], svc.next_case(people["rad1"], summary.list_id).case_id)
        with pytest.raises(rs.NoAiModeError, match="read without AI"):
            svc.show_ai(people["rad1"], case.case_id)
        done = svc.record_unaided(people["rad1"], case.case_id, finding="normal", confidence=4)
        assert (done.step, done.ai, done.n_done) == (rs.CaseStep.DONE, None, 1)
        with pytest.raises(rs.NoAiModeError, match="no aided read"):
            svc.record_aided(people["rad1"], case.case_id, finding="normal", confidence=4)

    def test_ai_at_once_mode(self, svc, small, people, clock):
        _, ids = small
        summary = make_list(svc, people, ids, "ai_at_once", "At once")
        case = svc.next_case(people["rad1"], summary.list_id)
        assert case.step == rs.CaseStep.SHOW_AI and case.ai is None
        opened = svc.open_case(people["rad1"], case.case_id)
        assert opened.ai is not None and opened.step == rs.CaseStep.AIDED_READ
        with pytest.raises(rs.UnaidedLockedError, match="no unaided read"):
            svc.record_unaided(people["rad1"], case.case_id, finding="normal", confidence=4)
        clock.advance(12)
        done = svc.record_aided(people["rad1"], case.case_id, finding="normal", confidence=4)
        assert (done.step, done.aided.seconds) == (rs.CaseStep.DONE, 12.0)

    def test_an_admin_who_reads_the_list_cannot_see_its_reference_or_reads(self, svc, small, people):
        _, ids = small
        summary = svc.create_list(people["coord"], name="Admin reads", cases=ids, readers=[people["admin"]],
                                  model_id=MODEL, mode="ai_after_unaided", seed=2)
        for call in (lambda: svc.reference_table(people["admin"], summary.list_id),
                     lambda: svc.study_data(people["admin"], summary.list_id),
                     lambda: svc.import_reference_csv(people["admin"], summary.list_id,
                                                      "study_key,finding,source\n")):
            with pytest.raises(rs.BlindingError, match="reader of the reading list 'Admin reads'"):
                call()
        assert len(svc.reference_table(people["admin"], small[0].list_id)) == 3  # not a reader of "Small"

    def test_blinding_errors_are_permission_errors_with_a_message(self):
        for cls in (rs.AidedBeforeUnaidedError, rs.UnaidedLockedError, rs.AiNotShownError, rs.NoAiModeError,
                    rs.NotAssignedError):
            assert issubclass(cls, PermissionDenied)


class TestAppendOnly:
    def test_reads_cannot_be_updated_or_deleted(self, svc, small, people, factory, engine):
        summary, _ = small
        case = svc.open_case(people["rad1"], svc.next_case(people["rad1"], summary.list_id).case_id)
        svc.record_unaided(people["rad1"], case.case_id, finding="normal", confidence=2)
        with pytest.raises(AppendOnlyError), factory.begin() as s:
            s.scalars(sa.select(ReaderRead)).first().finding = "malignant"
        for table in ("reader_reads", "reader_case_events"):
            for sql in (f"UPDATE {table} SET reader_id = reader_id", f"DELETE FROM {table}"):
                with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
                    conn.execute(text(sql))


class TestPilotThroughTheService:
    def test_every_read_is_kept_with_its_phase_time(self, factory, people):
        svc, summary, case_of, readers, _ = run_pilot(factory, people)
        data = svc.study_data(people["lead"], summary.list_id)
        assert len(data.reads) == 3 * 20 * 2 + 1 and data.reads["current"].sum() == 120
        assert data.readers["n_done"].tolist() == [20, 20, 20]
        number_of = {v: k for k, v in case_of.items()}
        name_of = {v: k for k, v in readers.items()}
        current = data.reads[data.reads["current"]]
        for _, r in current.iterrows():
            name, c = name_of[r["reader_id"]], number_of[r["case_id"]]
            assert (r["finding"], r["confidence"]) == pilot.READS[name][r["phase"]][c]
            want = (pilot.unaided_seconds if r["phase"] == "unaided" else pilot.aided_seconds)(name, c)
            assert r["seconds"] == pytest.approx(want)
        old = data.reads[~data.reads["current"]].iloc[0]
        assert (old["finding"], name_of[old["reader_id"]], number_of[old["case_id"]]) == ("normal", "r1", 5)
        assert data.cases["reference"].tolist() == [pilot.REFERENCE[c] for c in pilot.CASES]
        assert svc.next_case(readers["r1"], summary.list_id) is None


class TestMigration:
    def test_0004_upgrades_and_downgrades(self, engine):
        assert set(inspect(engine).get_table_names()) >= READER_STUDY_TABLES
        downgrade(engine, "0003_auth_sessions")  # 0004_reader_study and what came after it
        names = set(inspect(engine).get_table_names())
        assert not names & READER_STUDY_TABLES and "reviews" in names
        from tests.db.test_migrations import triggers

        earlier = (set(APPEND_ONLY_TABLES) - set(READER_STUDY_APPEND_ONLY_TABLES) - set(NODULE_APPEND_ONLY_TABLES)
                   - set(LESION_APPEND_ONLY_TABLES))
        verbs = ("no_update", "no_delete") if engine.dialect.name == "sqlite" else ("append_only", "no_truncate")
        assert triggers(engine) == {f"trg_{t}_{v}" for t in earlier for v in verbs}
        assert "reviews" in earlier
        upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= READER_STUDY_TABLES

    def test_offline_postgresql_sql_has_the_append_only_triggers(self):
        import io

        from alembic import command

        from db.session import alembic_config

        cfg = alembic_config("postgresql://user:pw@localhost/lungreview")
        buffer = io.StringIO()
        cfg.output_buffer = buffer
        cfg.attributes.clear()
        command.upgrade(cfg, "0001:0004_reader_study", sql=True)
        sql = buffer.getvalue()
        assert "CREATE TABLE reader_reads" in sql
        for table in ("reference_standards", "reader_case_events", "reader_reads"):
            assert f"CREATE TRIGGER trg_{table}_append_only BEFORE UPDATE OR DELETE ON {table}" in sql
        assert "RAISE(ABORT" not in sql
