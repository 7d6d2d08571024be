"""Tests of the nodule part of services.reading: detect-or-reuse, refusals, every write of the
per-nodule read (accept, reject, correct, add, move, withdraw, Lung-RADS) with its supersede
chain and time to decision, on SQLite and PostgreSQL (tests/db/conftest.py fixtures).

The detector is a fake that reports the spheres of a synthetic phantom series
(tests/factories/ct.py); one test runs the real registry detector on the shared Lung-PET-CT-Dx
series (slow, SQLite only).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.lungrads import CAVEAT
from db import repository as repo
from db.schema import LungRadsRead, NoduleDetection, NoduleRead
from services.nodules import MIDLINE_FROM_LUNGS, axial_crop, midline_x_mm, patient_mm, side_of
from services.reading import ReadingService, read_upload
from tests.factories.ct import FakeDetector, phantom_files
from tests.services.test_reading import CARD, CountingPredictor

T0 = 1_000_000.0  # time.time() when the AI result was shown, in these tests


@pytest.fixture()
def ct(isolated_settings):
    """(study, series) of the 24-slice phantom, read as an upload is."""
    result = read_upload(phantom_files(), limit_mb=50)
    study = result.studies[0]
    return study, study.series[0]


@pytest.fixture()
def fake() -> FakeDetector:
    return FakeDetector()


@pytest.fixture()
def service(factory, fake) -> ReadingService:
    return ReadingService(factory, CountingPredictor(), nodule_detector=fake.as_detector())


@pytest.fixture()
def found(service, ct, people):
    """The phantom analysed and scanned by rad1: (analysis, findings)."""
    study, series = ct
    analysis = service.analyse(study, series, CARD, user_id=people["rad1"])
    return analysis, service.find_nodules(analysis, series, user_id=people["rad1"])


def n_rows(factory, cls) -> int:
    with factory.begin() as s:
        return s.scalar(select(func.count()).select_from(cls))


class TestDetectOrReuse:
    def test_runs_once_per_analysis_and_detector_file(self, service, fake, ct, people, factory):
        study, series = ct
        analysis = service.analyse(study, series, CARD, user_id=people["rad1"])
        stages = []
        first = service.find_nodules(analysis, series, user_id=people["rad1"], progress=stages.append)
        assert not first.reused and not first.refused and fake.calls == 1 and stages == ["network"]
        assert [f.rank for f in first.findings] == [1, 2]
        assert [f.slice_index for f in first.findings] == [12, 8]
        assert first.findings[0].diameter_mm == 10.0 and first.findings[0].p_nodule == pytest.approx(0.92)
        assert first.warnings and "5.0 mm apart" in first.warnings[0]  # thick slices: said, not refused
        assert first.operating_point == 0.5 and first.latency_ms >= 0
        again = service.find_nodules(analysis, series, user_id=people["rad2"])
        assert again.reused and fake.calls == 1 and again.detection_id == first.detection_id
        assert again.findings == first.findings and again.warnings == first.warnings
        assert service.stored_nodules(analysis).detection_id == first.detection_id
        # a new detector file is a new run; the old one and its findings stay
        other = ReadingService(factory, CountingPredictor(), nodule_detector=fake.as_detector(sha256="e" * 64))
        newer = other.find_nodules(analysis, series, user_id=people["rad1"])
        assert not newer.reused and newer.detection_id != first.detection_id and fake.calls == 2
        assert n_rows(factory, NoduleDetection) == 2

    def test_a_jpg_is_refused_in_one_line_once_and_the_analysis_stays(self, service, fake, iq_dir, people,
                                                                      isolated_settings):
        jpg = sorted((iq_dir / "Malignant cases").glob("*.jpg"))[0]
        study = read_upload([(jpg.name, jpg.read_bytes())], limit_mb=50).studies[0]
        series = study.series[0]
        analysis = service.analyse(study, series, CARD, user_id=people["rad1"])
        got = service.find_nodules(analysis, series, user_id=people["rad1"])
        assert got.refused and got.findings == () and fake.calls == 0
        assert "\n" not in got.refusal and "JPG" in got.refusal and "slice classifiers still run" in got.refusal
        assert service.find_nodules(analysis, series, user_id=people["rad1"]).reused
        assert service.stored_analysis(study, series, CARD).inference_id == analysis.inference_id
        with pytest.raises(repo.ValidationError, match="refused this series"):
            service.add_nodule(got, series, reader_id=people["rad1"], slice_index=0, row=10, col=10,
                               diameter_mm=5, opened_at=T0)

    def test_a_detector_that_refuses_mid_way_is_recorded_as_a_refusal(self, factory, ct, people):
        from core.nodules import NotAVolumeError

        def refuse(series, progress=None):
            raise NotAVolumeError("No lung field was found in this series (is it a chest CT?).")

        det = FakeDetector().as_detector()
        svc = ReadingService(factory, CountingPredictor(), nodule_detector=type(det)(
            model_id=det.model_id, model_sha256=det.model_sha256, detect=refuse))
        study, series = ct
        analysis = svc.analyse(study, series, CARD, user_id=people["rad1"])
        got = svc.find_nodules(analysis, series, user_id=people["rad1"])
        assert got.refusal.startswith("No lung field") and got.warnings == ()

    def test_no_detector_registered_means_no_scan(self, factory, ct, people):
        svc = ReadingService(factory, CountingPredictor())
        study, series = ct
        analysis = svc.analyse(study, series, CARD, user_id=people["rad1"])
        assert svc.find_nodules(analysis, series, user_id=people["rad1"]) is None
        assert svc.stored_nodules(analysis) is None
        svc2 = ReadingService(factory, CountingPredictor(), nodule_detector=lambda: None)
        assert svc2.find_nodules(analysis, series, user_id=people["rad1"]) is None


class TestDecisions:
    def test_accept_reject_correct_and_supersede(self, service, found, people, factory):
        _, findings = found
        n1, n2 = (f.nodule_id for f in findings.findings)
        rad1 = people["rad1"]
        first = service.decide_nodule(findings, n1, reader_id=rad1, decision="accept", nodule_type="solid",
                                      opened_at=T0, now=T0 + 12.5)
        service.decide_nodule(findings, n2, reader_id=rad1, decision="reject", opened_at=T0, now=T0 + 20)
        read = service.reader_nodules(findings, rad1)
        assert [s.status for s in read.states] == ["accepted", "rejected"]
        assert read.state_of(n1).nodule_type == "solid" and read.state_of(n1).diameter_mm == 10.0
        corrected = service.decide_nodule(findings, n1, reader_id=rad1, decision="accept", nodule_type="solid",
                                          corrected_diameter_mm=12.0, opened_at=T0, now=T0 + 30)
        read = service.reader_nodules(findings, rad1)
        st = read.state_of(n1)
        assert (st.status, st.diameter_mm, st.ai_diameter_mm, st.read_id) == ("corrected", 12.0, 10.0, corrected)
        assert read.counts == {"accepted": 0, "corrected": 1, "rejected": 1, "undecided": 0, "added": 0}
        with factory.begin() as s:
            chain = repo.nodule_read_history(s, findings.series_id, rad1)
            assert [(r.decision, r.seconds_to_decision) for r in chain] == [
                ("accept", 12.5), ("reject", 20.0), ("accept", 30.0)]
            assert chain[2].supersedes_id == first and chain[0].supersedes_id is None
        # re-deciding: reject what was accepted; withdraw makes it undecided again
        rejected = service.decide_nodule(findings, n1, reader_id=rad1, decision="reject", opened_at=T0, now=T0 + 40)
        service.withdraw_nodule(rejected, reader_id=rad1, opened_at=T0, now=T0 + 50)
        assert service.reader_nodules(findings, rad1).state_of(n1).status == "undecided"
        assert n_rows(factory, NoduleRead) == 5  # nothing deleted or updated

    def test_time_to_decision_is_never_negative(self, service, found, people, factory):
        _, findings = found
        service.decide_nodule(findings, findings.findings[0].nodule_id, reader_id=people["rad1"],
                              decision="accept", opened_at=T0 + 100, now=T0)
        with factory.begin() as s:
            (row,) = repo.nodule_read_history(s, findings.series_id, people["rad1"])
            assert (row.decision, row.seconds_to_decision) == ("accept", 0.0)

    def test_two_readers_disagree_and_both_reads_are_kept(self, service, found, people):
        _, findings = found
        n1 = findings.findings[0].nodule_id
        service.decide_nodule(findings, n1, reader_id=people["rad1"], decision="accept", opened_at=T0)
        service.decide_nodule(findings, n1, reader_id=people["rad2"], decision="reject", opened_at=T0)
        assert service.reader_nodules(findings, people["rad1"]).state_of(n1).status == "accepted"
        assert service.reader_nodules(findings, people["rad2"]).state_of(n1).status == "rejected"

    def test_bad_decisions_are_refused_with_a_reason(self, service, found, people):
        _, findings = found
        n1 = findings.findings[0].nodule_id
        with pytest.raises(repo.ValidationError, match="not one of this detection"):
            service.decide_nodule(findings, 10_000, reader_id=people["rad1"], decision="accept", opened_at=T0)
        with pytest.raises(repo.ValidationError, match="no type and no diameter"):
            service.decide_nodule(findings, n1, reader_id=people["rad1"], decision="reject", nodule_type="solid",
                                  opened_at=T0)
        with pytest.raises(repo.ValidationError, match="nodule type"):
            service.decide_nodule(findings, n1, reader_id=people["rad1"], decision="accept", nodule_type="round",
                                  opened_at=T0)
        with pytest.raises(repo.PermissionDenied):
            service.decide_nodule(findings, n1, reader_id=people["coord"], decision="accept", opened_at=T0)


class TestAddedNodules:
    def test_add_inside_the_lung_then_move_then_withdraw(self, service, found, ct, people, factory):
        _, series = ct
        _, findings = found
        rad1 = people["rad1"]
        added = service.add_nodule(findings, series, reader_id=rad1, slice_index=16, row=70, col=85,
                                   diameter_mm=7.0, nodule_type="part-solid", opened_at=T0, now=T0 + 9)
        assert not added.outside_lung and added.centre_voxel == (16, 70, 85)
        assert added.centre_mm == pytest.approx(patient_mm(series, 16, 70, 85))
        assert added.centre_mm == pytest.approx((-160 + 85 * 2.5, -160 + 70 * 2.5, -300 + 16 * 5.0))
        assert added.seconds_to_decision == 9.0
        moved = service.add_nodule(findings, series, reader_id=rad1, slice_index=17, row=71, col=84,
                                   diameter_mm=8.0, opened_at=T0, supersedes_id=added.read_id)
        assert moved.supersedes_id == added.read_id
        (state,) = service.reader_nodules(findings, rad1).added
        assert (state.slice_index, state.diameter_mm, state.status) == (17, 8.0, "added")
        assert state.tracking_key == f"added {added.read_id}"  # the chain's first row: the SR's UID stays
        service.withdraw_nodule(moved.read_id, reader_id=rad1, opened_at=T0)
        assert service.reader_nodules(findings, rad1).added == ()

    def test_a_click_outside_the_lungs_is_kept_and_flagged(self, service, found, ct, people):
        _, series = ct
        _, findings = found
        added = service.add_nodule(findings, series, reader_id=people["rad1"], slice_index=12, row=5, col=5,
                                   diameter_mm=4.0, opened_at=T0)
        assert added.outside_lung
        (state,) = service.reader_nodules(findings, people["rad1"]).added
        assert state.outside_lung is True

    @pytest.mark.parametrize(("z", "r", "c", "match"), [(24, 5, 5, "Slice 25 does not exist"),
                                                        (0, 128, 5, "outside the 128 x 128 slice"),
                                                        (0, 5, -1, "outside the 128 x 128 slice")])
    def test_a_pixel_outside_the_series_is_refused(self, service, found, ct, people, z, r, c, match):
        _, series = ct
        _, findings = found
        with pytest.raises(repo.ValidationError, match=match):
            service.add_nodule(findings, series, reader_id=people["rad1"], slice_index=z, row=r, col=c,
                               diameter_mm=4.0, opened_at=T0)

    def test_a_bad_diameter_is_refused(self, service, found, ct, people):
        _, series = ct
        _, findings = found
        with pytest.raises(repo.ValidationError, match="Diameter"):
            service.add_nodule(findings, series, reader_id=people["rad1"], slice_index=1, row=60, col=40,
                               diameter_mm=0, opened_at=T0)


class TestLungRads:
    def test_suggestion_follows_the_accepted_solid_nodules_and_the_category_is_saved(self, service, found,
                                                                                     people, factory):
        _, findings = found
        rad1 = people["rad1"]
        n1, n2 = (f.nodule_id for f in findings.findings)
        read = service.reader_nodules(findings, rad1)
        assert read.suggestion.category.value == "1" and read.suggestion.caveat == CAVEAT and read.lungrads is None
        service.decide_nodule(findings, n2, reader_id=rad1, decision="accept", opened_at=T0)  # 6 mm
        assert service.reader_nodules(findings, rad1).suggestion.category.value == "3"
        service.decide_nodule(findings, n1, reader_id=rad1, decision="accept", nodule_type="solid",
                              opened_at=T0)  # 10 mm
        read = service.reader_nodules(findings, rad1)
        assert read.suggestion.category.value == "4A" and "10.0 mm" in read.suggestion.explanation
        service.decide_nodule(findings, n1, reader_id=rad1, decision="accept", nodule_type="ground-glass",
                              opened_at=T0)  # not solid: ignored by the suggestion
        assert service.reader_nodules(findings, rad1).suggestion.category.value == "3"
        first = service.save_lungrads(findings, reader_id=rad1, category="3", suggested="3", opened_at=T0,
                                      now=T0 + 60)
        second = service.save_lungrads(findings, reader_id=rad1, category="4a", suggested="3", opened_at=T0,
                                       now=T0 + 70)
        read = service.reader_nodules(findings, rad1)
        assert (read.lungrads, read.lungrads_suggested) == ("4A", "3")
        with factory.begin() as s:
            rows = s.scalars(select(LungRadsRead).order_by(LungRadsRead.id)).all()
            assert [(r.id, r.supersedes_id, r.seconds_to_decision) for r in rows] == [
                (first, None, 60.0), (second, first, 70.0)]
        with pytest.raises(repo.ValidationError, match="Lung-RADS"):
            service.save_lungrads(findings, reader_id=rad1, category="5", suggested=None, opened_at=T0)

    def test_no_findings_suggest_category_1(self, factory, ct, people):
        svc = ReadingService(factory, CountingPredictor(), nodule_detector=FakeDetector(spheres=()).as_detector())
        study, series = ct
        analysis = svc.analyse(study, series, CARD, user_id=people["rad1"])
        findings = svc.find_nodules(analysis, series, user_id=people["rad1"])
        assert findings.findings == () and not findings.refused
        assert svc.reader_nodules(findings, people["rad1"]).suggestion.category.value == "1"


class TestGeometry:
    def test_side_uses_lps_x_against_the_midline_like_the_sr(self, isolated_settings):
        from core.pacs.export import nodule_laterality

        for x, mid in ((-60.0, 0.0), (65.0, 0.0), (10.0, 20.0), (30.0, 20.0)):
            assert side_of(x, mid) == nodule_laterality(x, mid)
        assert side_of(5.0, 5.0) == "midline" and side_of(float("nan")) == "midline"

    def test_midline_comes_from_the_two_lungs(self, isolated_settings):
        series = read_upload(phantom_files(origin=(-100.0, -160.0, -300.0)), limit_mb=50).series[0]
        x, source = midline_x_mm(series)
        assert source == MIDLINE_FROM_LUNGS and math.isclose(x, -100 + 63.5 * 2.5, abs_tol=2.5)
        # the phantom's right-lung nodule (column 40) is right of it, the other (column 90) left
        assert side_of(patient_mm(series, 12, 64, 40)[0], x) == "right"
        assert side_of(patient_mm(series, 8, 60, 90)[0], x) == "left"

    def test_crop_is_centred_and_survives_the_edge(self, isolated_settings):
        series = read_upload(phantom_files(), limit_mb=50).series[0]
        crop = axial_crop(series, 12, 64, 40, 10.0, out_px=64)
        assert crop.shape == (64, 64) and crop.dtype.name == "uint8"
        assert crop[32, 32] > crop[32, 4]  # the 30 HU nodule is brighter than the lung beside it
        assert axial_crop(series, 0, 0, 0, 10.0).shape == (64, 64)


@pytest.mark.slow
def test_the_real_detector_on_the_shared_lung_pet_ct_dx_series(isolated_settings, tcia_dir: Path):
    """The registry's detector (nodule3d_luna16_v1) on Lung_Dx-A0002's B70f series (30 slices of 8 mm):
    it runs, says the slices are thick, and is recorded once (SQLite)."""
    from core.nodules.detector import load_detector
    from db.session import make_engine, make_session_factory
    from services.nodules import registry_detector
    from tests.factories.users import create_cast

    factory = make_session_factory(make_engine(isolated_settings.db_url))
    people = create_cast(factory)
    files = sorted(tcia_dir.glob("Lung_Dx-A0002/*/*B70f*/*.dcm"))
    study = read_upload([(p.name, p.read_bytes()) for p in files], limit_mb=50).studies[0]
    series = study.series[0]
    detector = registry_detector(load_detector)
    assert detector is not None and detector.model_id == "nodule3d_luna16_v1"
    svc = ReadingService(factory, CountingPredictor(), nodule_detector=detector)
    analysis = svc.analyse(study, series, CARD, user_id=people["rad1"])
    found = svc.find_nodules(analysis, series, user_id=people["rad1"])
    assert not found.refused and not found.reused
    assert any("8.0 mm apart" in w for w in found.warnings)
    assert all(0 <= f.slice_index < 30 and f.p_nodule >= 0.5 for f in found.findings)
    assert svc.find_nodules(analysis, series, user_id=people["rad1"]).reused
