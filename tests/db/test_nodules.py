"""db.repository.nodules: detector findings, per-nodule reads, Lung-RADS and their summaries (SQLite and PostgreSQL)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from core.nodules.types import Nodule
from db import repository as repo
from db.schema import AiNodule, AppendOnlyError, LungRadsRead, NoduleDetection, NoduleRead
from tests.db.factories import new_inference, sha

DETECTOR = "nodule-det-v1"
N_SLICES = 60


def nodule(rank: int, *, z: int = 10, diameter: float = 7.0, p: float = 0.9, malignancy: float = 3.0,
           x_mm: float = -80.0) -> Nodule:
    """A core.nodules.Nodule at slice z (voxel y 200, x 100 + rank)."""
    return Nodule(rank=rank, centre_voxel=(z, 200, 100 + rank), centre_mm=(x_mm, 20.5, -150.0 + z),
                  diameter_mm=diameter, p_nodule=p, malignancy=malignancy, lobulation=2.0, spiculation=1.5,
                  slice_index=z, is_mass=diameter > 30)


def ct_case(s, uploader: int, tag: str, model_id: str = "basic-cnn-v1"):
    """(series, inference) of a new study with one 60-slice CT series analysed by ``model_id``."""
    study = repo.add_study(s, study_key=sha("key" + tag)[:32], modality="CT", n_series=1, n_slices=N_SLICES,
                           source_kind="dicom", content_hash=sha("content" + tag), uploaded_by=uploader)
    series = repo.add_series(s, study_id=study.id, series_key=sha("series" + tag)[:32], modality="CT",
                             n_slices=N_SLICES, spacing_mm=(1.25, 0.7, 0.7), description="CT chest")
    return series, new_inference(s, series.id, model_id=model_id)


def detect(s, inf, nodules, *, model_id=DETECTOR, version="v1", **kw):
    return repo.record_ai_nodules(s, inference_id=inf.id, model_id=model_id, model_sha256=sha(model_id + version),
                                  nodules=nodules, latency_ms=1234.0, **kw)


@pytest.fixture()
def case(factory, people):
    """ids: series, inference, detection (2 findings: rank 1 at slice 10 right lung 9 mm, rank 2 at
    slice 30 left lung 5 mm), nodules by rank."""
    with factory.begin() as s:
        series, inf = ct_case(s, people["rad1"], "a")
        det = detect(s, inf, [nodule(1, z=10, diameter=9.0, x_mm=-80.0),
                              nodule(2, z=30, diameter=5.0, x_mm=75.0, malignancy=1.5)],
                     operating_point=0.5, user=people["rad1"])
        rows = repo.list_nodules(s, inf.id)
        return {"series": series.id, "inference": inf.id, "detection": det.id, "n1": rows[0].id, "n2": rows[1].id}


def count(s, cls) -> int:
    return s.scalar(select(func.count()).select_from(cls))


class TestRecordAiNodules:
    def test_every_field_is_stored_and_read_back_in_rank_order(self, factory, people):
        with factory.begin() as s:
            series, inf = ct_case(s, people["rad1"], "a")
            found = [nodule(2, z=30, diameter=5.0, x_mm=75.0), nodule(1, z=10, diameter=9.0)]
            det = detect(s, inf, [n.to_dict() for n in found], operating_point=0.4, user=people["rad1"])
            det_id = det.id
        with factory() as s:
            det = s.get(NoduleDetection, det_id)
            assert (det.series_id, det.inference_id, det.model_id, det.n_nodules, det.refusal, det.operating_point) == (
                series.id, inf.id, DETECTOR, 2, "", 0.4)
            rows = repo.list_nodules(s, inf.id)
            assert [r.rank for r in rows] == [1, 2] and [r.rank for r in det.nodules] == [1, 2]
            back = rows[1]
            want = found[0]
            assert (back.centre_voxel, back.centre_mm, back.slice_index) == (want.centre_voxel, want.centre_mm, 30)
            assert (back.diameter_mm, back.p_nodule, back.malignancy, back.lobulation, back.spiculation, back.is_mass) \
                == (5.0, 0.9, 3.0, 2.0, 1.5, False)
            assert {(r.inference_id, r.series_id, r.model_id, r.model_sha256) for r in rows} == {
                (inf.id, series.id, DETECTOR, sha(DETECTOR + "v1"))}

    def test_recording_the_same_run_again_writes_nothing(self, factory, people, case):
        with factory.begin() as s:
            before = (count(s, NoduleDetection), count(s, AiNodule))
            again = detect(s, s.get(NoduleDetection, case["detection"]).inference,
                           [nodule(1, z=10, diameter=9.0, x_mm=-80.0),
                            nodule(2, z=30, diameter=5.0, x_mm=75.0, malignancy=1.5)])
            assert again.id == case["detection"]
            assert (count(s, NoduleDetection), count(s, AiNodule)) == before

    def test_the_same_run_with_other_findings_is_refused(self, factory, people, case):
        with factory.begin() as s:
            inf = s.get(NoduleDetection, case["detection"]).inference
            with pytest.raises(repo.ValidationError, match="recorded before with other findings"):
                detect(s, inf, [nodule(1, z=10, diameter=9.5)])

    def test_fifty_candidates_are_all_kept(self, factory, people):
        with factory.begin() as s:
            _, inf = ct_case(s, people["rad1"], "b")
            det = detect(s, inf, [nodule(r, z=r, diameter=3.0 + r / 10) for r in range(50, 0, -1)])
            assert det.n_nodules == 50
            rows = repo.list_nodules(s, inf.id)
            assert [r.rank for r in rows] == list(range(1, 51))
            assert [r.slice_index for r in rows] == list(range(1, 51))

    def test_no_candidates_and_a_refusal_are_recorded_as_runs(self, factory, people):
        with factory.begin() as s:
            _, inf = ct_case(s, people["rad1"], "b")
            empty = detect(s, inf, [])
            assert empty.n_nodules == 0 and repo.list_nodules(s, inf.id) == []
            assert repo.find_detection(s, inf.id, DETECTOR).id == empty.id
            refused = detect(s, inf, [], model_id="other-det", refusal="slices 5 mm apart: too thick")
            assert refused.refusal == "slices 5 mm apart: too thick" and refused.n_nodules == 0
            with pytest.raises(repo.ValidationError, match="either nodules or a refusal"):
                detect(s, inf, [nodule(1)], model_id="third-det", refusal="too thick")

    @pytest.mark.parametrize(
        ("findings", "match"),
        [([nodule(1), nodule(3)], "Ranks must be 1..2"),
         ([nodule(1), nodule(1)], "Ranks must be 1..2"),
         ([{**nodule(1).to_dict(), "slice_index": 11}], "is not centre_voxel z"),
         ([nodule(1, z=N_SLICES)], "beyond the series"),
         ([nodule(1, p=1.2)], "p_nodule must be from 0.0 to 1.0"),
         ([nodule(1, malignancy=0.0)], "malignancy must be from 1.0 to 5.0"),
         ([nodule(1, diameter=0.0)], "diameter_mm must be a number of mm above 0"),
         ([nodule(1, diameter=math.nan)], "finite"),
         ([{k: v for k, v in nodule(1).to_dict().items() if k != "centre_mm"}], "lacks centre_mm"),
         ([{**nodule(1).to_dict(), "centre_voxel": [10, 200]}], "three numbers"),
         (["a nodule"], "must be a core.nodules.Nodule")],
    )
    def test_bad_findings_are_refused_and_nothing_is_written(self, factory, people, findings, match):
        with factory() as s:
            _, inf = ct_case(s, people["rad1"], "c")
            before = (count(s, NoduleDetection), count(s, AiNodule))
            with pytest.raises(repo.ValidationError, match=match):
                detect(s, inf, findings)
            assert (count(s, NoduleDetection), count(s, AiNodule)) == before

    def test_bad_run_values_and_missing_rows(self, factory, people, case):
        with factory() as s:
            inf = s.get(NoduleDetection, case["detection"]).inference
            with pytest.raises(repo.ValidationError, match="sha256"):
                repo.record_ai_nodules(s, inference_id=inf.id, model_id=DETECTOR, model_sha256="abc", nodules=[],
                                       latency_ms=1.0)
            with pytest.raises(repo.ValidationError, match="Operating point"):
                detect(s, inf, [], model_id="x", operating_point=2.0)
            with pytest.raises(repo.NotFoundError, match="no inference"):
                repo.record_ai_nodules(s, inference_id=9999, model_id=DETECTOR, model_sha256=sha("x"), nodules=[],
                                       latency_ms=1.0)

    def test_a_new_detector_version_is_a_new_run_and_the_old_one_keeps_its_reads(self, factory, people, case):
        with factory.begin() as s:
            repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="accept",
                                        seconds_to_decision=4.0)
            series = s.get(NoduleDetection, case["detection"]).series_id
            new_inf = new_inference(s, series, model_id="basic-cnn-v2")
            v2 = detect(s, new_inf, [nodule(1, z=12, diameter=6.0)], version="v2")
            assert v2.id != case["detection"]
            assert repo.latest_detection(s, series).id == v2.id
            assert [n.id for n in repo.list_nodules(s, case["inference"])] == [case["n1"], case["n2"]]
            old = repo.current_nodule_reads(s, series, detection_id=case["detection"])
            assert [(r.nodule_id, r.decision) for r in old] == [(case["n1"], "accept")]
            assert repo.current_nodule_reads(s, series, detection_id=v2.id) == []
            # the same analysis re-scanned by a new detector version keeps both too
            v1b = detect(s, s.get(NoduleDetection, case["detection"]).inference, [nodule(1, z=11)], version="v1b")
            assert repo.list_nodules(s, case["inference"], detection_id=case["detection"])[0].id == case["n1"]
            assert repo.list_nodules(s, case["inference"])[0].detection_id == v1b.id
            with pytest.raises(repo.ValidationError, match="belongs to inference"):
                repo.list_nodules(s, new_inf.id, detection_id=case["detection"])


class TestDecisions:
    def test_accept_reject_and_correct(self, factory, people, case):
        with factory.begin() as s:
            a = repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="accept",
                                            nodule_type="solid", corrected_diameter_mm=8.4, seconds_to_decision=12.5)
            r = repo.record_nodule_decision(s, nodule_id=case["n2"], reader=people["rad1"], decision="reject",
                                            seconds_to_decision=20.0)
            assert (a.decision, a.nodule_type, a.diameter_mm, a.seconds_to_decision, a.supersedes_id) == (
                "accept", "solid", 8.4, 12.5, None)
            assert (r.decision, r.nodule_type, r.diameter_mm, r.series_id, r.detection_id) == (
                "reject", None, None, case["series"], case["detection"])
            states = {st.rank: st for st in repo.nodule_states(s, case["detection"], people["rad1"])}
            assert (states[1].status, states[1].diameter_mm, states[1].ai_diameter_mm) == ("corrected", 8.4, 9.0)
            assert (states[2].status, states[2].diameter_mm) == ("rejected", 5.0)
            assert (states[1].tracking_key, states[1].malignancy, states[1].centre_voxel) == (
                f"nodule {case['n1']}", 3.0, (10, 200, 101))

    def test_a_changed_decision_supersedes_and_the_old_row_stays(self, factory, people, case):
        with factory.begin() as s:
            first = repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="accept",
                                                seconds_to_decision=3.0)
            second = repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="reject",
                                                 seconds_to_decision=9.0)
            third = repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="accept",
                                                corrected_diameter_mm=10.0, seconds_to_decision=15.0)
            assert (second.supersedes_id, third.supersedes_id) == (first.id, second.id)
            current = repo.current_nodule_reads(s, case["series"], reader_id=people["rad1"])
            assert [r.id for r in current] == [third.id]
            history = repo.nodule_read_history(s, case["series"], people["rad1"])
            assert [(r.id, r.decision) for r in history] == [(first.id, "accept"), (second.id, "reject"),
                                                             (third.id, "accept")]

    def test_two_readers_disagreeing_on_one_finding_are_both_kept(self, factory, people, case):
        with factory.begin() as s:
            a = repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="accept",
                                            seconds_to_decision=3.0)
            b = repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad2"], decision="reject",
                                            seconds_to_decision=5.0)
            assert b.supersedes_id is None
            by_reader = repo.current_nodule_reads_by_reader(s, case["series"])
            assert {k: [(r.id, r.decision) for r in v] for k, v in by_reader.items()} == {
                people["rad1"]: [(a.id, "accept")], people["rad2"]: [(b.id, "reject")]}
            assert repo.nodule_states(s, case["detection"], people["rad2"])[0].status == "rejected"
            assert repo.nodule_states(s, case["detection"], people["rad3"])[0].status == "undecided"

    def test_withdraw_makes_a_finding_undecided_and_a_new_decision_supersedes_it(self, factory, people, case):
        with factory.begin() as s:
            a = repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="accept",
                                            seconds_to_decision=3.0)
            w = repo.withdraw_nodule_read(s, read_id=a.id, reader=people["rad1"], seconds_to_decision=4.0)
            assert (w.decision, w.supersedes_id, w.nodule_id) == ("withdraw", a.id, case["n1"])
            assert repo.current_nodule_reads(s, case["series"]) == []
            assert [r.id for r in repo.current_nodule_reads(s, case["series"], include_withdrawn=True)] == [w.id]
            assert repo.nodule_states(s, case["detection"], people["rad1"])[0].status == "undecided"
            with pytest.raises(repo.ValidationError, match="not a current decision"):
                repo.withdraw_nodule_read(s, read_id=a.id, reader=people["rad1"], seconds_to_decision=5.0)
            r = repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="reject",
                                            seconds_to_decision=6.0)
            assert r.supersedes_id == w.id

    @pytest.mark.parametrize(
        ("change", "error", "match"),
        [({"decision": "maybe"}, repo.ValidationError, "Unknown nodule decision"),
         ({"decision": "add"}, repo.ValidationError, "accept or reject"),
         ({"decision": "reject", "nodule_type": "solid"}, repo.ValidationError, "rejected finding has no type"),
         ({"decision": "reject", "corrected_diameter_mm": 4.0}, repo.ValidationError, "no type and no diameter"),
         ({"nodule_type": "fluffy"}, repo.ValidationError, "Unknown nodule type"),
         ({"corrected_diameter_mm": -1.0}, repo.ValidationError, "above 0"),
         ({"seconds_to_decision": -1.0}, repo.ValidationError, "Seconds to decision"),
         ({"nodule_id": 99999}, repo.NotFoundError, "no AI nodule finding"),
         ({"reader": "lead"}, repo.PermissionDenied, "may read nodules")],
    )
    def test_bad_decisions_are_refused_and_nothing_is_written(self, factory, people, case, change, error, match):
        args = {"nodule_id": case["n1"], "reader": people["rad1"], "decision": "accept", "seconds_to_decision": 1.0,
                **change}
        if args["reader"] == "lead":
            args["reader"] = people["lead"]
        with factory() as s:
            with pytest.raises(error, match=match):
                repo.record_nodule_decision(s, **args)
            assert count(s, NoduleRead) == 0


class TestAddedNodules:
    def add(self, s, people, case, **kw):
        args = dict(detection_id=case["detection"], reader=people["rad1"], centre_voxel=(20, 150, 300),
                    centre_mm=(60.0, -10.0, -130.0), diameter_mm=6.5, outside_lung=False, seconds_to_decision=30.0)
        return repo.record_added_nodule(s, **{**args, **kw})

    def test_add_inside_and_outside_the_lungs(self, factory, people, case):
        with factory.begin() as s:
            inside = self.add(s, people, case, nodule_type="part-solid")
            outside = self.add(s, people, case, centre_voxel=(40, 10, 10), centre_mm=(-200.0, -150.0, -110.0),
                               outside_lung=True, diameter_mm=4.0)
            assert (inside.decision, inside.nodule_id, inside.slice_index, inside.centre_voxel, inside.centre_mm,
                    inside.diameter_mm, inside.nodule_type, inside.outside_lung) == (
                "add", None, 20, (20, 150, 300), (60.0, -10.0, -130.0), 6.5, "part-solid", False)
            assert outside.outside_lung is True and outside.is_added
            added = [st for st in repo.nodule_states(s, case["detection"], people["rad1"]) if st.source == "reader"]
            assert [(st.status, st.read_id, st.outside_lung) for st in added] == [
                ("added", inside.id, False), ("added", outside.id, True)]

    def test_an_added_nodule_is_changed_by_superseding_its_current_row_and_removed_by_withdrawing(
            self, factory, people, case):
        with factory.begin() as s:
            first = self.add(s, people, case)
            moved = self.add(s, people, case, centre_voxel=(21, 151, 301), centre_mm=(60.7, -9.3, -128.75),
                             diameter_mm=7.0, supersedes_id=first.id)
            assert moved.supersedes_id == first.id
            (state,) = [st for st in repo.nodule_states(s, case["detection"], people["rad1"]) if st.source == "reader"]
            assert (state.read_id, state.tracking_key, state.centre_voxel) == (moved.id, f"added {first.id}",
                                                                               (21, 151, 301))
            current = repo.current_nodule_reads(s, case["series"], reader_id=people["rad1"])
            assert [(r.id, r.diameter_mm) for r in current] == [(moved.id, 7.0)]
            with pytest.raises(repo.ValidationError, match="not rad1's current added nodule"):
                self.add(s, people, case, supersedes_id=first.id)
            gone = repo.withdraw_nodule_read(s, read_id=moved.id, reader=people["rad1"], seconds_to_decision=40.0)
            assert gone.nodule_id is None and repo.current_nodule_reads(s, case["series"]) == []
            assert [st.source for st in repo.nodule_states(s, case["detection"], people["rad1"])] == ["ai", "ai"]

    def test_another_readers_added_nodule_is_theirs(self, factory, people, case):
        with factory.begin() as s:
            mine = self.add(s, people, case)
            with pytest.raises(repo.ValidationError, match="current added nodule"):
                self.add(s, people, case, reader=people["rad2"], supersedes_id=mine.id)
            with pytest.raises(repo.ValidationError, match="another reader's"):
                repo.withdraw_nodule_read(s, read_id=mine.id, reader=people["rad2"], seconds_to_decision=1.0)

    @pytest.mark.parametrize(
        ("change", "error", "match"),
        [({"centre_voxel": (N_SLICES, 1, 1)}, repo.ValidationError, "beyond the series"),
         ({"centre_voxel": (-1, 1, 1)}, repo.ValidationError, "Centre voxel"),
         ({"centre_mm": (1.0, 2.0)}, repo.ValidationError, "three numbers"),
         ({"slice_index": 3}, repo.ValidationError, "is not the centre's z"),
         ({"diameter_mm": 0}, repo.ValidationError, "above 0"),
         ({"outside_lung": "no"}, repo.ValidationError, "outside_lung"),
         ({"nodule_type": "round"}, repo.ValidationError, "Unknown nodule type"),
         ({"detection_id": 9999}, repo.NotFoundError, "no nodule detection"),
         ({"supersedes_id": 9999}, repo.NotFoundError, "no nodule read")],
    )
    def test_bad_added_nodules_are_refused(self, factory, people, case, change, error, match):
        with factory() as s:
            with pytest.raises(error, match=match):
                self.add(s, people, case, **change)
            assert count(s, NoduleRead) == 0


class TestLungRads:
    def test_record_and_supersede(self, factory, people, case):
        with factory.begin() as s:
            first = repo.record_lungrads(s, detection_id=case["detection"], reader=people["rad1"], category="4a",
                                         suggested="4A", seconds_to_decision=50.0)
            second = repo.record_lungrads(s, detection_id=case["detection"], reader=people["rad1"], category="3",
                                          suggested="4A", seconds_to_decision=60.0)
            other = repo.record_lungrads(s, detection_id=case["detection"], reader=people["rad2"], category="2",
                                         seconds_to_decision=20.0)
            assert (first.category, first.suggested, second.supersedes_id, other.supersedes_id) == (
                "4A", "4A", first.id, None)
            assert repo.current_lungrads(s, case["detection"], people["rad1"]).id == second.id
            assert repo.current_lungrads(s, case["detection"], people["rad3"]) is None

    @pytest.mark.parametrize(("change", "match"), [({"category": "5"}, "Unknown Lung-RADS category"),
                                                   ({"suggested": "4C"}, "Unknown suggested"),
                                                   ({"seconds_to_decision": math.inf}, "finite")])
    def test_bad_categories_are_refused(self, factory, people, case, change, match):
        with factory() as s:
            with pytest.raises(repo.ValidationError, match=match):
                repo.record_lungrads(s, **{"detection_id": case["detection"], "reader": people["rad1"],
                                           "category": "2", "seconds_to_decision": 1.0, **change})
            assert count(s, LungRadsRead) == 0


class TestSummaries:
    @pytest.fixture()
    def read(self, factory, people, case):
        """rad1 accepts 1 (corrected) and rejects 2, adds one outside the lungs, says 4A; rad2 accepts 2
        and adds two, then withdraws one; rad3 only gives Lung-RADS 2."""
        with factory.begin() as s:
            r1, r2, r3 = people["rad1"], people["rad2"], people["rad3"]
            repo.record_nodule_decision(s, nodule_id=case["n1"], reader=r1, decision="accept",
                                        corrected_diameter_mm=9.5, seconds_to_decision=1.0)
            repo.record_nodule_decision(s, nodule_id=case["n2"], reader=r1, decision="accept", seconds_to_decision=2.0)
            repo.record_nodule_decision(s, nodule_id=case["n2"], reader=r1, decision="reject", seconds_to_decision=3.0)
            repo.record_added_nodule(s, detection_id=case["detection"], reader=r1, centre_voxel=(5, 5, 5),
                                     centre_mm=(1.0, 2.0, 3.0), diameter_mm=5.0, outside_lung=True,
                                     seconds_to_decision=4.0)
            repo.record_lungrads(s, detection_id=case["detection"], reader=r1, category="4A", suggested="4A",
                                 seconds_to_decision=5.0)
            repo.record_nodule_decision(s, nodule_id=case["n2"], reader=r2, decision="accept", seconds_to_decision=1.0)
            for z in (7, 8):
                last = repo.record_added_nodule(s, detection_id=case["detection"], reader=r2, centre_voxel=(z, 5, 5),
                                                centre_mm=(1.0, 2.0, 3.0), diameter_mm=5.0, outside_lung=False,
                                                seconds_to_decision=2.0)
            repo.withdraw_nodule_read(s, read_id=last.id, reader=r2, seconds_to_decision=3.0)
            repo.record_lungrads(s, detection_id=case["detection"], reader=r3, category="2", seconds_to_decision=5.0)
            # an unread second series
            _, inf_b = ct_case(s, r1, "unread")
            unread = detect(s, inf_b, [nodule(1), nodule(2), nodule(3)])
        return {**case, "unread": unread.id}

    def test_series_summary_per_reader(self, factory, people, read):
        with factory() as s:
            out = repo.nodule_series_summary(s)
        assert list(out.columns) == list(repo.SERIES_SUMMARY_COLUMNS)
        mine = out[out["detection_id"] == read["detection"]].set_index("reader_id")
        cols = ["ai_findings", "accepted", "corrected", "rejected", "undecided", "added", "added_outside_lung",
                "lungrads", "lungrads_suggested"]
        assert list(mine.loc[people["rad1"], cols]) == [2, 1, 1, 1, 0, 1, 1, "4A", "4A"]
        assert list(mine.loc[people["rad2"], cols[:7]]) == [2, 1, 0, 0, 1, 1, 0]
        assert pd.isna(mine.loc[people["rad2"], "lungrads"])
        assert list(mine.loc[people["rad3"], cols[:8]]) == [2, 0, 0, 0, 2, 0, 0, "2"]
        assert mine.loc[people["rad1"], "reader"] == "Dr rad1"
        unread = out[out["detection_id"] == read["unread"]]
        assert len(unread) == 1 and pd.isna(unread["reader_id"].iloc[0])
        assert list(unread[["ai_findings", "accepted", "undecided", "added"]].iloc[0]) == [3, 0, 3, 0]

    def test_series_summary_of_one_reader_and_one_series(self, factory, people, read):
        with factory() as s:
            out = repo.nodule_series_summary(s, reader_id=people["rad2"])
            one = repo.nodule_series_summary(s, series_id=read["series"])
        assert set(out["reader_id"].dropna()) == {people["rad2"]}
        assert pd.isna(out[out["detection_id"] == read["unread"]]["reader_id"].iloc[0])
        assert set(one["series_id"]) == {read["series"]} and len(one) == 3

    def test_model_summary_per_reader_and_pooled(self, factory, people, read):
        with factory() as s:
            out = repo.nodule_model_summary(s)
        assert list(out.columns) == list(repo.MODEL_SUMMARY_COLUMNS)
        assert set(out["model_id"]) == {DETECTOR}
        rows = out.set_index("reader")
        cols = ["series_read", "ai_findings_shown", "decided", "accepted", "corrected", "rejected", "added"]
        assert list(rows.loc["Dr rad1", cols]) == [1, 2, 2, 1, 1, 1, 1]
        assert list(rows.loc["Dr rad2", cols]) == [1, 2, 1, 1, 0, 0, 1]
        assert rows.loc["Dr rad1", "fraction_accepted"] == 0.5 and rows.loc["Dr rad2", "fraction_accepted"] == 1.0
        pooled = rows.loc[repo.nodules.ALL_READERS]
        assert list(pooled[cols]) == [2, 4, 3, 2, 1, 1, 2]
        assert pooled["fraction_accepted"] == pytest.approx(2 / 3) and pooled["added_per_series"] == 1.0
        assert out["reader"].iloc[-1] == repo.nodules.ALL_READERS
        assert "Dr rad3" not in rows.index  # a Lung-RADS category alone decides no finding

    def test_model_summary_of_nothing_read_is_empty(self, factory, people, case):
        with factory() as s:
            out = repo.nodule_model_summary(s)
        assert out.empty and list(out.columns) == list(repo.MODEL_SUMMARY_COLUMNS)

    def test_model_summary_keeps_models_apart(self, factory, people, case):
        with factory.begin() as s:
            repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="reject",
                                        seconds_to_decision=1.0)
            series = s.get(NoduleDetection, case["detection"]).series_id
            inf2 = new_inference(s, series, model_id="basic-cnn-v2")
            det2 = detect(s, inf2, [nodule(1)], model_id="nodule-det-v2")
            repo.record_nodule_decision(s, nodule_id=repo.list_nodules(s, inf2.id)[0].id, reader=people["rad1"],
                                        decision="accept", seconds_to_decision=1.0)
            out = repo.nodule_model_summary(s, reader_id=people["rad1"])
            assert det2.model_id == "nodule-det-v2"
        per = out[out["reader_id"].notna()].set_index("model_id")["fraction_accepted"]
        assert per.to_dict() == {DETECTOR: 0.0, "nodule-det-v2": 1.0}


class TestAppendOnly:
    TABLES = ("nodule_detections", "nodules", "nodule_reads", "lungrads_reads")

    @pytest.fixture()
    def filled(self, factory, people, case):
        with factory.begin() as s:
            repo.record_nodule_decision(s, nodule_id=case["n1"], reader=people["rad1"], decision="accept",
                                        seconds_to_decision=1.0)
            repo.record_lungrads(s, detection_id=case["detection"], reader=people["rad1"], category="3",
                                 seconds_to_decision=1.0)
        return case

    @pytest.mark.parametrize("table", TABLES)
    @pytest.mark.parametrize("verb", ["UPDATE", "DELETE"])
    def test_database_triggers_refuse_update_and_delete(self, engine, filled, table, verb):
        sql = f"UPDATE {table} SET id = id" if verb == "UPDATE" else f"DELETE FROM {table}"
        with pytest.raises(IntegrityError, match=f"append-only: {verb} refused"), engine.begin() as conn:
            conn.execute(text(sql))
        with engine.connect() as conn:
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() >= 1

    @pytest.mark.parametrize("table", TABLES)
    def test_postgresql_refuses_truncate(self, engine, filled, table):
        if engine.dialect.name != "postgresql":
            pytest.skip("TRUNCATE is PostgreSQL's (SQLite has none)")
        with pytest.raises(IntegrityError, match="append-only: TRUNCATE refused"), engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
        with engine.connect() as conn:
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() >= 1

    @pytest.mark.parametrize("cls", [NoduleDetection, AiNodule, NoduleRead, LungRadsRead])
    def test_orm_refuses_to_change_or_delete_a_row(self, factory, filled, cls):
        with factory() as s:
            row = s.scalars(select(cls)).first()
            s.delete(row)  # a detection's delete first nulls its findings' detection_id: UPDATE refused
            with pytest.raises(AppendOnlyError, match="append-only: (DELETE|UPDATE) is not allowed"):
                s.flush()
        with factory() as s:
            row = s.scalars(select(cls)).first()
            row.series_id = row.series_id + 1
            with pytest.raises(AppendOnlyError, match="UPDATE is not allowed"):
                s.flush()

    @pytest.mark.parametrize(
        "sql",
        ["INSERT INTO nodule_reads (detection_id, series_id, nodule_id, reader_id, decision, seconds_to_decision,"
         " created_at) VALUES (:d, :s, NULL, :r, 'accept', 1, '2026-01-01')",  # accept without a finding
         "INSERT INTO nodule_reads (detection_id, series_id, nodule_id, reader_id, decision, seconds_to_decision,"
         " created_at) VALUES (:d, :s, NULL, :r, 'add', 1, '2026-01-01')",  # add without a centre
         "INSERT INTO nodule_reads (detection_id, series_id, nodule_id, reader_id, decision, nodule_type,"
         " seconds_to_decision, created_at) VALUES (:d, :s, :n, :r, 'reject', 'solid', 1, '2026-01-01')",
         "INSERT INTO nodule_reads (detection_id, series_id, nodule_id, reader_id, decision, seconds_to_decision,"
         " created_at) VALUES (:d, :s, :n, :r, 'withdraw', 1, '2026-01-01')",  # withdraw of nothing
         "INSERT INTO lungrads_reads (detection_id, series_id, reader_id, category, seconds_to_decision, created_at)"
         " VALUES (:d, :s, :r, '5', 1, '2026-01-01')"],
    )
    def test_check_constraints_refuse_rows_the_repository_would_refuse(self, engine, people, case, sql):
        with pytest.raises(IntegrityError, match="CHECK constraint failed|violates check constraint"), \
                engine.begin() as conn:
            conn.execute(text(sql), {"d": case["detection"], "s": case["series"], "r": people["rad1"],
                                     "n": case["n1"]})


class TestNoduleStatesFeedLungRads:
    def test_a_readers_states_give_the_lung_rads_suggestion(self, factory, people, case):
        from core.lungrads import ReadNodule, suggest_lungrads

        with factory.begin() as s:
            r1 = people["rad1"]
            repo.record_nodule_decision(s, nodule_id=case["n1"], reader=r1, decision="accept", nodule_type="solid",
                                        corrected_diameter_mm=7.94, seconds_to_decision=1.0)
            repo.record_added_nodule(s, detection_id=case["detection"], reader=r1, centre_voxel=(5, 5, 5),
                                     centre_mm=(1.0, 2.0, 3.0), diameter_mm=20.0, nodule_type="ground-glass",
                                     outside_lung=False, seconds_to_decision=2.0)
            states = repo.nodule_states(s, case["detection"], r1)
        assert [st.status for st in states] == ["corrected", "undecided", "added"]
        out = suggest_lungrads(ReadNodule(st.decision, st.diameter_mm, st.nodule_type) for st in states)
        assert out.category == "3" and out.diameter_mm == 7.9  # the corrected 7.94 mm; GGN and undecided ignored
