"""db.repository.archive on SQLite and PostgreSQL: runs, one row per (run, series, model), attempts and history."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc

from db import repository as repo
from db.repository import archive as archive_repo
from db.schema import ArchiveResult

KEY = "a" * 32
SERIES = "b" * 32
SHA = "c" * 64
MODELS = [{"id": "basic_cnn_v1", "sha256": SHA, "kind": "slice_classifier"}]


def _run(factory, created_by=None) -> int:
    with factory.begin() as s:
        return archive_repo.create_run(s, query={"date_from": None}, models=MODELS, max_attempts=3,
                                       created_by=created_by).id


class TestRuns:
    def test_create_and_status(self, factory, people):
        run_id = _run(factory, people["lead"])
        with factory.begin() as s:
            run = archive_repo.get_run(s, run_id)
            assert (run.status, run.max_attempts, run.created_by, run.models) == ("running", 3, people["lead"], MODELS)
            archive_repo.set_run_status(s, run_id, "finished", n_series=4)
            assert run.finished_at is not None and run.n_series == 4
            archive_repo.set_run_status(s, run_id, "paused", "The PACS does not answer")
            assert run.finished_at is None and run.message == "The PACS does not answer"
            assert [r.id for r in archive_repo.list_runs(s)] == [run_id]

    def test_refusals(self, factory, people):
        with factory.begin() as s:
            with pytest.raises(repo.ValidationError, match="at least one model"):
                archive_repo.create_run(s, query={}, models=[], max_attempts=3)
            with pytest.raises(repo.ValidationError, match="twice"):
                archive_repo.create_run(s, query={}, models=MODELS * 2, max_attempts=3)
            with pytest.raises(repo.ValidationError, match="unknown kind"):
                archive_repo.create_run(s, query={}, models=[{"id": "x", "kind": "oracle"}], max_attempts=3)
            with pytest.raises(repo.ValidationError, match="Attempts"):
                archive_repo.create_run(s, query={}, models=MODELS, max_attempts=0)
            with pytest.raises(repo.PermissionDenied, match="lead"):
                archive_repo.create_run(s, query={}, models=MODELS, max_attempts=3, created_by=people["rad1"])
            with pytest.raises(repo.NotFoundError):
                archive_repo.get_run(s, 999)
            with pytest.raises(repo.ValidationError, match="run status"):
                archive_repo.set_run_status(s, archive_repo.create_run(s, query={}, models=MODELS,
                                                                       max_attempts=1).id, "exploded")


class TestResults:
    def test_failures_count_attempts_then_done_keeps_the_history(self, factory):
        run_id = _run(factory)
        common = {"run_id": run_id, "study_key": KEY, "series_key": SERIES, "model_id": "basic_cnn_v1"}
        with factory.begin() as s:
            row, added = archive_repo.record_failure(s, **common, failure="pacs_unreachable", message="no answer")
            assert added and (row.status, row.failure, row.attempts, row.history) == (
                "failed", "pacs_unreachable", 1, [])
            row, _ = archive_repo.record_failure(s, **common, failure="worker_died", message="worker died")
            assert (row.attempts, row.failure) == (2, "worker_died")
            assert row.history == [{"failure": "pacs_unreachable", "message": "no answer"}]
            row, added = archive_repo.record_done(s, **common, model_sha256=SHA, result={"series_score": 0.25},
                                                  finding="benign", series_score=0.25, is_ood=False, n_slices=30,
                                                  retrieve_ms=10.0, decode_ms=5.0, score_ms=20.0, worker="h:1")
            assert added and (row.status, row.failure, row.message, row.attempts) == ("done", None, "", 3)
            assert [h["failure"] for h in row.history] == ["pacs_unreachable", "worker_died"]
            assert (row.finding, row.series_score, row.n_slices, row.worker) == ("benign", 0.25, 30, "h:1")

    def test_a_done_row_is_never_scored_again(self, factory):
        run_id = _run(factory)
        common = {"run_id": run_id, "study_key": KEY, "series_key": SERIES, "model_id": "basic_cnn_v1"}
        with factory.begin() as s:
            first, _ = archive_repo.record_done(s, **common, model_sha256=SHA, result={"a": 1}, finding="normal",
                                                series_score=0.1)
            again, added = archive_repo.record_done(s, **common, model_sha256=SHA, result={"a": 2},
                                                    finding="malignant", series_score=0.9)
            assert not added and again is first and (again.finding, again.result) == ("normal", {"a": 1})
            failed, added = archive_repo.record_failure(s, **common, failure="worker_died", message="x")
            assert not added and failed.status == "done" and failed.attempts == 1
            assert len(archive_repo.results_of(s, run_id)) == 1

    def test_the_database_refuses_a_second_row_for_the_same_item(self, factory):
        run_id = _run(factory)
        with pytest.raises(sa_exc.IntegrityError), factory.begin() as s:
            for _ in range(2):
                s.add(ArchiveResult(run_id=run_id, study_key=KEY, series_key=SERIES, model_id="m", status="done",
                                    attempts=1, history=[]))
            s.flush()

    def test_the_database_refuses_a_failure_without_reason(self, factory):
        run_id = _run(factory)
        with pytest.raises(sa_exc.IntegrityError), factory.begin() as s:
            s.add(ArchiveResult(run_id=run_id, study_key=KEY, series_key=SERIES, model_id="m", status="failed",
                                failure=None, attempts=1, history=[]))
            s.flush()

    def test_values_are_checked(self, factory):
        run_id = _run(factory)
        common = {"run_id": run_id, "study_key": KEY, "model_id": "basic_cnn_v1"}
        with factory.begin() as s:
            with pytest.raises(repo.ValidationError, match="pseudonymous"):
                archive_repo.record_done(s, **common, series_key="1.2.840.113619.2.55.3", model_sha256=SHA, result={})
            with pytest.raises(repo.ValidationError, match="Series score"):
                archive_repo.record_done(s, **common, series_key=SERIES, model_sha256=SHA, result={}, series_score=1.5)
            with pytest.raises(repo.ValidationError, match="finding"):
                archive_repo.record_done(s, **common, series_key=SERIES, model_sha256=SHA, result={}, finding="cancer")
            with pytest.raises(repo.ValidationError, match="failure"):
                archive_repo.record_failure(s, **common, series_key=SERIES, failure="bad luck", message="")
            with pytest.raises(repo.NotFoundError):
                archive_repo.record_failure(s, **{**common, "run_id": 999}, series_key=SERIES, failure="corrupt",
                                            message="")
            assert archive_repo.results_of(s, run_id) == []

    def test_series_ids_by_key(self, factory, people):
        with factory.begin() as s:
            study = repo.add_study(s, study_key=KEY, modality="CT", n_series=1, n_slices=3, source_kind="dicom",
                                   content_hash="d" * 64, uploaded_by=people["rad1"])
            series = repo.add_series(s, study_id=study.id, series_key=SERIES, modality="CT", n_slices=3)
            assert archive_repo.series_ids_by_key(s, [SERIES, "e" * 32]) == {SERIES: series.id}
            assert archive_repo.series_ids_by_key(s, []) == {}
