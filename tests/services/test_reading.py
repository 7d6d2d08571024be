"""Tests of services.reading, the reading service: limits, analyse-or-reuse, recording, reads, a reader's work.

No Streamlit: the service is called directly, with a predictor that counts its calls (it builds a
real ``core.inference.SeriesResult``) or fails like a model that cannot run.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select

from core.domain import CLASS_NAMES, Finding
from core.imaging import ImageTooLargeError, ImagingError, NotAnImageError, Series, Slice, Study
from core.inference import InferenceError, SeriesResult
from core.preprocessing import PreprocessSpec
from core.registry import ModelCard
from db import repository as repo
from db.schema import AuditEvent, Inference
from services.reading import Analysis, ReadingService, read_upload
from tests.db.factories import sha

CARD = ModelCard(id="tiny", architecture="basic_cnn", task="3class", class_names=CLASS_NAMES,
                 preprocessing=PreprocessSpec(size=32), gradcam_layer="last_conv",
                 thresholds={"malignant": 0.4}, sha256=sha("tiny-model"))


class CountingPredictor:
    """Stands in for ``core.inference.Predictor``: counts ``analyse_series`` calls.

    Slice i gets probabilities (normal, benign, malignant) = (0.6, 0.3, 0.1) for even i and
    (0.1, 0.2, 0.7) for odd i; slices listed in ``ood`` are flagged out of distribution.
    """

    def __init__(self, ood: tuple[int, ...] = (), error: Exception | None = None) -> None:
        self.calls = 0
        self.ood = ood
        self.error = error

    def analyse_series(self, series: Series, progress=None) -> SeriesResult:
        self.calls += 1
        if self.error is not None:
            raise self.error
        n = len(series.slices)
        p = np.array([[0.6, 0.3, 0.1] if i % 2 == 0 else [0.1, 0.2, 0.7] for i in range(n)], np.float32)
        ood = np.array([i in self.ood for i in range(n)])
        top = int(np.argmax(p[:, 2]))
        return SeriesResult(
            model_id=CARD.id, model_sha256=CARD.sha256, class_names=CLASS_NAMES, probabilities=p,
            labels=["normal" if i % 2 == 0 else "malignant" for i in range(n)], most_suspicious_index=top,
            series_score=float(p[top, 2]), finding=Finding.MALIGNANT, is_ood=bool(ood.sum() * 2 > n), ood=ood,
            ood_reasons=["modality MR is not CT" if f else "" for f in ood], latency_ms=12.5, top_indices=[top],
            runtime="tensorflow",
        )


def make_series(study_key: str, tag: str, n: int, description: str = "CT chest") -> Series:
    slices = [Slice(hu=np.full((8, 8), -600.0 + i, np.float32), source=f"{tag}_{i}.dcm", instance_number=i + 1)
              for i in range(n)]
    return Series(study_key=study_key, series_key=sha("series" + tag)[:32], modality="CT", source_kind="dicom",
                  slices=slices, spacing_mm=(8.0, 0.7, 0.7), description=description)


def make_study(tag: str, sizes: tuple[int, ...] = (3,)) -> Study:
    key = sha("study" + tag)[:32]
    series = [make_series(key, f"{tag}{i}", n, f"CT series {i + 1}") for i, n in enumerate(sizes)]
    return Study(study_key=key, series=series, content_hash=sha("content" + tag), source_kind="dicom")


@pytest.fixture()
def predictor() -> CountingPredictor:
    return CountingPredictor()


@pytest.fixture()
def service(factory, predictor) -> ReadingService:
    return ReadingService(factory, predictor)


def counts(factory) -> dict[str, int]:
    with factory() as s:
        return repo.count_rows(s)


@pytest.fixture(scope="module")
def jpgs(iq_dir: Path) -> dict[str, bytes]:
    """Two real IQ-OTH/NCCD JPGs (one malignant, one normal) by file name."""
    out = {}
    for folder in ("Malignant cases", "Normal cases"):
        f = sorted((iq_dir / folder).glob("*.jpg"))[0]
        out[f.name] = f.read_bytes()
    return out


class TestReadUpload:
    def test_jpgs_become_one_picture_series(self, isolated_settings, jpgs):
        result = read_upload(list(jpgs.items()), limit_mb=50)
        assert result.problems == []
        assert [len(se.slices) for se in result.series] == [2]
        assert result.series[0].source_kind == "jpg" and result.series[0].hu_is_estimated

    def test_bad_file_is_a_problem_and_good_files_are_read(self, isolated_settings, jpgs):
        result = read_upload([*jpgs.items(), ("notes.txt", b"this is not an image")], limit_mb=50)
        assert [p.name for p in result.problems] == ["notes.txt"]
        assert isinstance(result.problems[0].error, NotAnImageError)
        assert len(result.series[0].slices) == 2

    def test_zip_of_dicom_is_read(self, isolated_settings):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.write(get_testdata_file("CT_small.dcm"), "series/CT_small.dcm")
        result = read_upload([("study.zip", buf.getvalue())], limit_mb=5)
        assert result.series[0].source_kind == "dicom" and result.series[0].modality == "CT"

    def test_dicom_within_the_limit_is_read(self, isolated_settings):
        data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
        result = read_upload([("CT_small.dcm", data)], limit_mb=5)
        assert result.problems == [] and result.series[0].modality == "CT"

    def test_a_file_over_the_limit_is_a_problem_and_the_others_are_read(self, isolated_settings):
        data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
        result = read_upload([("CT_small.dcm", data), ("huge.zip", b"\0" * (1024 * 1024 + 1))], limit_mb=1)
        assert [p.name for p in result.problems] == ["huge.zip"]
        assert isinstance(result.problems[0].error, ImageTooLargeError)
        assert "over the 1 MB upload limit" in result.problems[0].message
        assert len(result.series) == 1

    def test_only_files_over_the_limit_raise_the_typed_error(self, isolated_settings):
        with pytest.raises(ImageTooLargeError, match=r"big\.zip is 2 MB, over the 1 MB upload limit"):
            read_upload([("big.zip", b"\0" * (2 * 1024 * 1024))], limit_mb=1)

    def test_nothing_uploaded_says_so(self, isolated_settings):
        with pytest.raises(ImagingError, match="no file was uploaded"):
            read_upload([], limit_mb=1)

    def test_nothing_readable_raises_the_reader_s_error(self, isolated_settings):
        with pytest.raises(NotAnImageError, match=r"a\.txt. is not a DICOM file or a JPG/PNG picture"):
            read_upload([("a.txt", b"hello")], limit_mb=1)


class TestAnalyse:
    def test_first_call_runs_the_model_and_records_study_series_inference(self, service, predictor, factory,
                                                                          people):
        study = make_study("a")
        analysis = service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        assert predictor.calls == 1 and not analysis.reused
        assert isinstance(analysis, Analysis) and analysis.finding is Finding.MALIGNANT
        assert analysis.labels == ("normal", "malignant", "normal") and analysis.most_suspicious_index == 1
        assert analysis.threshold == 0.4 and analysis.suspicious_index == 2 and analysis.label_text == "malignant"
        rows = counts(factory)
        assert (rows["studies"], rows["series"], rows["inferences"]) == (1, 1, 1)
        with factory() as s:
            series = repo.get_series(s, analysis.series_id)
            assert (series.series_key, series.n_slices, series.spacing_mm, series.description) == (
                study.series[0].series_key, 3, (8.0, 0.7, 0.7), "CT series 1")
            inf = s.get(Inference, analysis.inference_id)
            assert inf.series_result["finding"] == "malignant" and inf.series_result["is_ood"] is False
            actions = list(s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
        assert actions[-2:] == ["upload", "inference"]

    def test_second_call_returns_the_stored_inference_without_running_the_model(self, service, predictor,
                                                                               factory, people):
        study = make_study("a")
        first = service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        again = service.analyse(study, study.series[0], CARD, user_id=people["rad2"])
        assert predictor.calls == 1
        assert again.reused and again.inference_id == first.inference_id and again.key == first.key
        np.testing.assert_array_equal(again.probabilities, first.probabilities)
        assert (again.labels, again.finding, again.most_suspicious_index) == (first.labels, first.finding, 1)
        assert counts(factory)["inferences"] == 1

    def test_a_changed_model_file_is_run_again(self, service, predictor, factory, people):
        from dataclasses import replace

        study = make_study("a")
        service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        retrained = replace(CARD, sha256=sha("retrained"))
        fresh = service.analyse(study, study.series[0], retrained, user_id=people["rad1"])
        assert predictor.calls == 2 and not fresh.reused
        rows = counts(factory)
        assert (rows["studies"], rows["series"], rows["inferences"]) == (1, 1, 2)

    def test_two_series_of_one_study_get_two_series_rows_and_two_inferences(self, service, predictor, factory,
                                                                           people):
        study = make_study("two", sizes=(3, 5))
        a = service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        b = service.analyse(study, study.series[1], CARD, user_id=people["rad1"])
        assert predictor.calls == 2
        assert a.study_id == b.study_id and a.series_id != b.series_id and a.inference_id != b.inference_id
        assert (len(a.probabilities), len(b.probabilities)) == (3, 5)
        rows = counts(factory)
        assert (rows["studies"], rows["series"], rows["inferences"]) == (1, 2, 2)
        with factory() as s:
            assert repo.get_study(s, a.study_id).n_series == 2
            assert repo.latest_inference(s, b.series_id, CARD.id).id == b.inference_id
        assert service.stored_analysis(study, study.series[1], CARD).inference_id == b.inference_id

    def test_ood_slices_make_the_label_not_applicable_and_the_finding_is_kept(self, factory, people):
        service = ReadingService(factory, CountingPredictor(ood=(0, 1)))
        study = make_study("mr")
        analysis = service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        assert analysis.is_ood and analysis.any_ood and analysis.label_text == "not applicable (outside the training data)"
        assert analysis.finding is Finding.MALIGNANT
        with factory() as s:
            wl = repo.worklist(s)
        assert bool(wl.loc[0, "ood"]) and wl.loc[0, "ai_label"] == "malignant"

    @pytest.mark.parametrize("error", [InferenceError("the series has no slices"), RuntimeError("boom")])
    def test_a_predictor_failure_records_nothing(self, factory, people, error):
        service = ReadingService(factory, CountingPredictor(error=error))
        before = counts(factory)
        study = make_study("fail")
        with pytest.raises(type(error), match=str(error)):
            service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        assert counts(factory) == before

    def test_a_refused_row_records_nothing(self, factory, people):
        service = ReadingService(factory, CountingPredictor())
        before = counts(factory)
        study = make_study("lead")
        with pytest.raises(repo.NotFoundError, match="no user"):
            service.analyse(study, study.series[0], CARD, user_id=424242)
        assert counts(factory) == before

    def test_a_callable_gives_the_predictor_for_the_model_id(self, factory, people):
        asked: list[str] = []
        predictor = CountingPredictor()

        def load(model_id: str) -> CountingPredictor:
            asked.append(model_id)
            return predictor

        service = ReadingService(factory, load)
        study = make_study("c")
        service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        assert asked == ["tiny"] and predictor.calls == 1

    def test_a_stored_result_of_another_slice_count_is_not_reused(self, service, predictor, people):
        study = make_study("n")
        service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        shorter = Series(**{**study.series[0].__dict__, "slices": study.series[0].slices[:2]})
        assert service.stored_analysis(study, shorter, CARD) is None


class TestSaveRead:
    def test_a_read_is_stored_with_its_seconds_and_a_second_one_supersedes_it(self, service, factory, people):
        study = make_study("r")
        analysis = service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        first = service.save_read(analysis.inference_id, reader_id=people["rad1"], finding="benign",
                                  agreement="partly", confidence=3, heatmap_helpful=None, comment="",
                                  opened_at=100.0, now=130.5)
        assert first.supersedes_id is None and first.seconds_to_decision == 30.5
        second = service.save_read(analysis.inference_id, reader_id=people["rad1"], finding="malignant",
                                   agreement="agree", confidence=5, heatmap_helpful=4, comment="changed my mind",
                                   opened_at=100.0, now=160.0)
        assert second.supersedes_id == first.review_id
        with factory() as s:
            history = repo.review_history(s, analysis.study_id, people["rad1"])
            assert [(r.id, r.finding) for r in history] == [(first.review_id, "benign"),
                                                             (second.review_id, "malignant")]
            assert [r.id for r in repo.current_reviews(s)] == [second.review_id]

    def test_a_clock_that_went_back_gives_zero_seconds_not_a_negative_time(self, service, people):
        study = make_study("rc")
        analysis = service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        saved = service.save_read(analysis.inference_id, reader_id=people["rad1"], finding="normal",
                                  agreement="agree", confidence=2, heatmap_helpful=None, comment="",
                                  opened_at=200.0, now=150.0)
        assert saved.seconds_to_decision == 0.0

    def test_reads_of_two_series_do_not_supersede_each_other(self, service, people):
        study = make_study("rr", sizes=(2, 2))
        a = service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        b = service.analyse(study, study.series[1], CARD, user_id=people["rad1"])
        kw = dict(reader_id=people["rad1"], agreement="agree", confidence=4, heatmap_helpful=None, comment="",
                  opened_at=0.0, now=1.0)
        ra = service.save_read(a.inference_id, finding="malignant", **kw)
        rb = service.save_read(b.inference_id, finding="normal", **kw)
        assert rb.supersedes_id is None
        work = service.reader_work(people["rad1"])
        assert [(w.review_id, w.series_id, w.finding) for w in work] == [(rb.review_id, b.series_id, "normal"),
                                                                         (ra.review_id, a.series_id, "malignant")]
        assert work[0].series_description == "CT series 2" and work[0].ai_finding == "malignant"

    def test_a_bad_read_is_refused_and_nothing_is_stored(self, service, factory, people):
        study = make_study("bad")
        analysis = service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        before = counts(factory)
        with pytest.raises(repo.PermissionDenied, match="may add reviews"):
            service.save_read(analysis.inference_id, reader_id=people["lead"], finding="benign", agreement="agree",
                              confidence=3, heatmap_helpful=None, comment="", opened_at=0.0)
        with pytest.raises(repo.ValidationError, match="Unknown finding 'tumour'"):
            service.save_read(analysis.inference_id, reader_id=people["rad1"], finding="tumour", agreement="agree",
                              confidence=3, heatmap_helpful=None, comment="", opened_at=0.0)
        assert counts(factory) == before

    def test_a_reader_without_reads_has_no_work(self, service, people):
        assert service.reader_work(people["rad2"]) == []


class TestStudyStore:
    """An analysed series is kept in the study store and opens again without the files."""

    def test_analysed_series_opens_again_from_the_store(self, service, factory, people):
        study = make_study("store", sizes=(3, 2))
        first, second = study.series
        analysis = service.analyse(study, second, CARD, user_id=people["rad1"])
        from services.reading import open_stored_series

        again = open_stored_series(factory, analysis.study_id, second.series_key)
        assert again is not None and len(again.slices) == 2
        for a, b in zip(again.slices, second.slices, strict=True):
            np.testing.assert_array_equal(a.hu, b.hu)
        # the other series was never analysed, so it was not kept
        assert open_stored_series(factory, analysis.study_id, first.series_key) is None

    def test_an_unwritable_store_loses_no_analysis(self, service, factory, people, monkeypatch):
        from core import store

        def refuse(*args, **kwargs):
            raise store.StoreError("disk full")

        monkeypatch.setattr(store, "put_series", refuse)
        study = make_study("nostore")
        analysis = service.analyse(study, study.series[0], CARD, user_id=people["rad1"])
        assert counts(factory)["inferences"] == 1
        from services.reading import open_stored_series

        assert open_stored_series(factory, analysis.study_id, study.series[0].series_key) is None


class TestStaging:
    """An upload is staged: its series go to the store, the caller keeps references only."""

    def test_stage_keeps_every_series_and_returns_references_without_pixels(self, isolated_settings):
        import dataclasses

        from core import store
        from core.imaging import ReadResult
        from services.reading import SeriesRef, load_series, stage

        study = make_study("stage", sizes=(3, 2))
        for i, sl in enumerate(study.series[1].slices):
            sl.sop_instance_uid = f"1.2.826.0.1.3680043.8.498.{i + 1}"
        staged = stage(ReadResult(studies=[study], problems=[]))
        (ref_study,) = staged.studies
        assert ref_study.content_hash == study.content_hash
        refs = ref_study.series
        assert [r.n_slices for r in refs] == [3, 2]
        for ref in refs:
            assert isinstance(ref, SeriesRef)
            assert not any(isinstance(getattr(ref, f.name), np.ndarray) for f in dataclasses.fields(ref))
            assert store.has_series(ref.store_key)  # on disk, not only in memory
        store.memory_cache().clear()
        again = load_series(refs[1])  # from disk
        for a, b in zip(again.slices, study.series[1].slices, strict=True):
            np.testing.assert_array_equal(a.hu, b.hu)
            assert a.sop_instance_uid == b.sop_instance_uid is not None  # given back from the reference

    def test_a_series_gone_from_memory_and_disk_raises_case_gone(self, isolated_settings):
        from core import store
        from core.imaging import ReadResult
        from services.reading import CaseGoneError, load_series, stage

        study = make_study("gone")
        (ref,) = stage(ReadResult(studies=[study], problems=[])).studies[0].series
        store.SeriesStore.from_settings().delete(ref.store_key)
        store.memory_cache().clear()
        with pytest.raises(CaseGoneError, match="upload its files again"):
            load_series(ref)

    def test_open_case_opens_a_recorded_series_without_its_files(self, service, people):
        from core import store

        study = make_study("case", sizes=(3, 2))
        analysis = service.analyse(study, study.series[1], CARD, user_id=people["rad1"])
        store.memory_cache().clear()
        study_ref, ref = service.open_case(analysis.series_id)
        assert study_ref.content_hash == study.content_hash and ref.series_key == study.series[1].series_key
        assert ref.n_slices == 2
        store.SeriesStore.from_settings().delete(ref.store_key)
        store.memory_cache().clear()
        assert service.open_case(analysis.series_id) is None
        with pytest.raises(repo.NotFoundError):
            service.open_case(999_999)
