"""services.archive on a real local Ray (embedded, 2 worker processes) against a real Orthanc holding the
shared studies (Lung-PET-CT-Dx A0002: 2 CT series; LIDC-IDRI 0001 and 0002: 1 each), a non-CT (MR)
series in the LIDC-0001 study and a corrupt CT series (truncated pixel data) in a study of its own.

Two small models score every series (basic_cnn_v1, advanced_cnn_v1). The database is a SQLite file
of the module (the repository functions run on SQLite and PostgreSQL in tests/db/test_archive.py).
Ray is started once for the module, after the module's environment is set: its workers inherit the
PACS credentials and the study-key secret from it, as the embedded default does in use.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from sqlalchemy import text

ray = pytest.importorskip("ray")

from core.domain import Finding  # noqa: E402
from core.imaging import study_key_for  # noqa: E402
from core.pacs.dicomweb import PacsClient  # noqa: E402
from core.settings import get_settings  # noqa: E402
from db.session import make_engine, make_session_factory  # noqa: E402
from services.archive import (  # noqa: E402
    ArchiveError,
    ArchiveQuery,
    ArchiveService,
    ModelRef,
    RunBusyError,
    ScoringWorker,
    connect_ray,
    plan_series,
)
from tests.core.pacs.orthanc import (  # noqa: E402
    ORTHANC,
    TEST_PASSWORD,
    TEST_USER,
    skip_or_fail_without_orthanc,
    start_orthanc,
)
from tests.factories.dicom import make_dicom  # noqa: E402

DATA = Path(os.environ.get("LUNGREVIEW_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
TCIA_STUDY = DATA / "lung-pet-ct-dx" / "Lung_Dx-A0002"
LIDC = DATA / "lidc-idri"
MODELS = ("basic_cnn_v1", "advanced_cnn_v1")
SECRET = "archive-test-secret"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def _series_dirs() -> list[Path]:
    return sorted({p.parent for p in _files(TCIA_STUDY) + _files(LIDC)})


def _tcia_dirs() -> list[Path]:
    return [d for d in _series_dirs() if TCIA_STUDY in d.parents]


def _uids(folder: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(_files(folder)[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _stow(client: PacsClient, files: list[Path], batch: int = 25) -> None:
    for i in range(0, len(files), batch):
        client.store_bytes(p.read_bytes() for p in files[i:i + batch])


def _mr_in_study(study_uid: str) -> list[pydicom.Dataset]:
    """Two MR instances (a non-CT series) filed in an existing CT study."""
    series = generate_uid()
    out = []
    for i in range(2):
        ds = pydicom.dcmread(io.BytesIO(make_dicom(rows=32, cols=32, modality="MR", study_uid=study_uid,
                                                   series_uid=series, instance_number=i + 1,
                                                   position=(0.0, 0.0, float(i)), series_description="T1 axial")))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        out.append(ds)
    return out


def _corrupt_ct() -> list[pydicom.Dataset]:
    """Three CT instances of a new study whose pixel data is cut short (a damaged copy)."""
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(3):
        ds = pydicom.dcmread(io.BytesIO(make_dicom(rows=64, cols=64, study_uid=study, series_uid=series,
                                                   instance_number=i + 1, position=(0.0, 0.0, float(i)))))
        ds.PatientID = "CORRUPT-CASE"
        ds.PixelData = ds.PixelData[:100]
        out.append(ds)
    return out


def restart(server) -> None:
    """Start the stopped Orthanc again on its own configuration (same storage and ports)."""
    log = open(server.workdir / "orthanc-restart.log", "a")  # noqa: SIM115 - closed when the process ends
    server.proc = subprocess.Popen([ORTHANC, str(server.workdir / "orthanc.json")], cwd=server.workdir, stdout=log,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(server.base_url + "/system", auth=(TEST_USER, TEST_PASSWORD), timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError("Orthanc did not come back within 60 s")


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def archive_env(tmp_path_factory):
    """The module's environment, set before Ray starts (its workers inherit it)."""
    skip_or_fail_without_orthanc()
    if not TCIA_STUDY.is_dir() or not LIDC.is_dir():
        pytest.skip(f"shared datasets missing under {DATA}")
    saved = {k: os.environ.get(k) for k in ("LUNGREVIEW_STUDY_KEY", "LUNGREVIEW_DICOMWEB_USER",
                                            "LUNGREVIEW_DICOMWEB_PASSWORD", "LUNGREVIEW_DB_URL")}
    db = tmp_path_factory.mktemp("archive-db") / "archive.db"
    os.environ.update({"LUNGREVIEW_STUDY_KEY": SECRET, "LUNGREVIEW_DICOMWEB_USER": TEST_USER,
                       "LUNGREVIEW_DICOMWEB_PASSWORD": TEST_PASSWORD, "LUNGREVIEW_DB_URL": f"sqlite:///{db}"})
    get_settings.cache_clear()
    yield db
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def ray_local(archive_env):
    """Embedded Ray with 2 CPUs: 2 worker processes (one ScoringWorker each)."""
    if ray.is_initialized():
        ray.shutdown()
    assert connect_ray(address="", num_cpus=2) == "embedded (2 CPUs)"
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pacs(archive_env, tmp_path_factory):
    """A test Orthanc with the shared studies, an MR series in LIDC-0001's study and a corrupt CT study."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc-archive"))
    try:
        client = PacsClient(server.dicomweb_url, TEST_USER, TEST_PASSWORD, timeout_s=10)
        _stow(client, _files(TCIA_STUDY) + _files(LIDC))
        client.store(_mr_in_study(_uids(LIDC / "LIDC-IDRI-0001")[0]))
        client.store(_corrupt_ct())
        yield server, client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def factory(archive_env):
    engine = make_engine(os.environ["LUNGREVIEW_DB_URL"])
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def service(ray_local, pacs, factory):
    """One service for the module, keeping its 2 workers (and their loaded models) between runs."""
    svc = ArchiveService(factory, pacs[1], keep_workers=True, timeout_s=10)
    yield svc
    svc.close()


def _rows(factory, run_id: int) -> list[dict]:
    with factory.begin() as s:
        return [dict(r._mapping) for r in s.execute(text(
            "SELECT * FROM archive_results WHERE run_id = :r ORDER BY series_key, model_id"), {"r": run_id})]


# --------------------------------------------------------------------------------------- tests
class TestPlan:
    def test_query_parse(self):
        q = ArchiveQuery.parse(["from=2007-01-01", "to=2007-12-31", "description=thorax", "max_series=5"])
        assert (q.date_from.year, q.date_to.month, q.description, q.max_series) == (2007, 12, "thorax", 5)
        assert ArchiveQuery.from_dict(q.to_dict()) == q
        for bad in (["since=2007-01-01"], ["from=2007-13-01"], ["max_series=0"], ["from=2008-01-01", "to=2007-01-01"],
                    ["thorax"]):
            with pytest.raises(ArchiveError):
                ArchiveQuery.parse(bad)

    def test_plan_has_every_series_with_keys_only(self, pacs):
        _, client = pacs
        plan = plan_series(client, ArchiveQuery())
        want = {study_key_for(_uids(d)[1]) for d in _series_dirs()}
        assert want <= {p.series_key for p in plan}
        assert len(plan) == len(want) + 2  # the MR series and the corrupt study
        assert sorted(p.modality for p in plan).count("MR") == 1
        assert "uid" not in repr(plan[0]).lower()  # UIDs are hidden from repr (logs)
        by_date = plan_series(client, ArchiveQuery(date_from=ArchiveQuery.parse(["from=2007-04-25"]).date_from,
                                                   date_to=ArchiveQuery.parse(["to=2007-04-25"]).date_to))
        assert {p.series_key for p in by_date} == {study_key_for(_uids(d)[1]) for d in _tcia_dirs()}
        b40 = plan_series(client, ArchiveQuery(description="b40f"))
        assert len(b40) == 1 and "B40f" in b40[0].description
        assert len(plan_series(client, ArchiveQuery(max_series=2))) == 2


def test_a_ray_address_where_nothing_listens_fails_fast():
    import socket

    from services.archive import check_ray_address

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ArchiveError, match=f"No Ray cluster answers at 127.0.0.1:{port}"):
        check_ray_address(f"127.0.0.1:{port}", timeout_s=2)
    assert time.monotonic() - t0 < 5
    for bad in ("ray-head", "ray-head:port", ":6379"):
        with pytest.raises(ArchiveError, match="host:port"):
            check_ray_address(bad)
    check_ray_address("auto")  # this machine's cluster: left to ray.init


class TestRun:
    def test_every_series_scored_by_two_models(self, service, factory, pacs):
        run_id = service.start(ArchiveQuery(), MODELS)
        seen = []
        p = service.run(run_id, workers=2, progress=lambda pr: seen.append(pr) and None)
        n_ct = len(_series_dirs())
        assert (p.status, p.total, p.done, p.failed, p.left) == ("finished", n_ct + 2, n_ct, 2, 0), p.line()
        assert p.failures == {"not_ct": 2, "corrupt": 2}
        assert seen[-1].status == "finished" and seen[-1].per_minute and seen[-1].per_minute > 0
        assert [x.done + x.failed for x in seen] == sorted(x.done + x.failed for x in seen)  # never goes back

        rows = _rows(factory, run_id)
        assert len(rows) == (n_ct + 2) * len(MODELS)
        assert len({(r["series_key"], r["model_id"]) for r in rows}) == len(rows)
        from core.registry import get_card

        slices = {study_key_for(_uids(d)[1]): len(_files(d)) for d in _series_dirs()}
        done = [r for r in rows if r["status"] == "done"]
        assert {r["series_key"] for r in done} == set(slices) and len(done) == n_ct * len(MODELS)
        for r in done:
            assert r["finding"] in {f.value for f in Finding} and 0.0 <= r["series_score"] <= 1.0
            assert r["n_slices"] == slices[r["series_key"]] and r["attempts"] == 1 and r["failure"] is None
            assert r["retrieve_ms"] > 0 and r["decode_ms"] > 0 and r["score_ms"] > 0
            assert r["model_sha256"] == get_card(r["model_id"]).sha256
            assert ":" in r["worker"]
        failed = [r for r in rows if r["status"] == "failed"]
        assert sorted(r["failure"] for r in failed) == ["corrupt"] * 2 + ["not_ct"] * 2
        assert all("is MR, not CT" in r["message"] for r in failed if r["failure"] == "not_ct")
        assert all("could not be read" in r["message"] and "truncated" in r["message"]
                   for r in failed if r["failure"] == "corrupt")

        # the same path as the reading service: core.inference on the file-read series gives the same score
        from core.imaging import read_paths
        from core.inference import Predictor
        from core.registry import load_model

        folder = _tcia_dirs()[0]
        want = Predictor(load_model("basic_cnn_v1")).analyse_series(read_paths([folder]).series[0])
        got = next(r for r in done if r["model_id"] == "basic_cnn_v1" and r["series_key"] == study_key_for(
            _uids(folder)[1]))
        assert got["series_score"] == pytest.approx(want.series_score, abs=1e-5)
        assert got["finding"] == want.finding.value

        # nothing scored twice: running the finished run again changes no row
        again = service.run(run_id, workers=2)
        assert again.status == "finished" and _rows(factory, run_id) == rows

        # the comparison of the two models on this run
        c = service.compare(run_id, {study_key_for(_uids(_tcia_dirs()[0])[0]): "malignant",
                                     study_key_for(_uids(LIDC / "LIDC-IDRI-0001")[0]): "normal",
                                     study_key_for(_uids(LIDC / "LIDC-IDRI-0002")[0]): "benign"}, n_boot=50)
        assert list(c.scores["model_id"]) == sorted(MODELS) and list(c.scores["n_series"]) == [n_ct, n_ct]
        assert c.kappa.loc[0, "n_series"] == n_ct
        assert list(c.accuracy["n_studies"]) == [3, 3] and list(c.accuracy["n_malignant"]) == [1, 1]
        assert len(c.disagreements) == n_ct

    def test_no_identifier_in_the_archive_tables(self, service, factory, pacs):
        """The runs above stored pseudonymous keys only: no UID, patient name or id of the PACS."""
        needles = {"CORRUPT-CASE", "LIDC-IDRI-0001", "Lung_Dx-A0002", "Zyxwv"}
        for d in _series_dirs():
            needles.update(_uids(d))
        with factory.begin() as s:
            assert s.execute(text("SELECT count(*) FROM archive_results")).scalar() > 0
            for table in ("archive_runs", "archive_results"):
                for row in s.execute(text(f"SELECT * FROM {table}")):
                    blob = " ".join(str(v) for v in row)
                    assert not [n for n in needles if n in blob], table

    def test_worker_killed_mid_run_then_resumed(self, service, factory):
        run_id = service.start(ArchiveQuery(), MODELS)
        killed: list[int] = []

        def kill_one_worker(p) -> bool:
            if p.worker and not killed:
                pid = int(p.worker.rsplit(":", 1)[1])
                assert pid != os.getpid()
                os.kill(pid, signal.SIGKILL)  # the worker that just answered holds its next series
                killed.append(pid)
                return True  # and stop the run after the series in flight
            return False

        first = service.run(run_id, workers=2, progress=kill_one_worker)
        assert killed and first.status == "paused" and first.left > 0, first.line()
        before = {(r["series_key"], r["model_id"]): r for r in _rows(factory, run_id)}
        died = [r for r in before.values() if r["failure"] == "worker_died"]
        assert died and all(r["attempts"] == 1 for r in died)

        second = service.run(run_id, workers=2)
        assert second.status == "finished" and second.left == 0, second.line()
        rows = _rows(factory, run_id)
        n_ct = len(_series_dirs())
        assert len(rows) == (n_ct + 2) * len(MODELS)  # every series exactly once per model
        assert len({(r["series_key"], r["model_id"]) for r in rows}) == len(rows)
        assert sum(r["status"] == "done" for r in rows) == n_ct * len(MODELS)
        for r in rows:
            old = before.get((r["series_key"], r["model_id"]))
            if old is not None and old["status"] == "done":
                assert r == old  # scored in the first part: not scored again
            if old is not None and old["failure"] == "worker_died":
                assert r["status"] == "done" and r["attempts"] == 2
                assert '"worker_died"' in str(r["history"]) or "worker_died" in str(r["history"])

    def test_a_running_run_is_not_driven_twice(self, service, factory):
        run_id = service.start(ArchiveQuery(max_series=1), MODELS[:1])
        from db.repository import archive as archive_repo

        with factory.begin() as s:
            archive_repo.set_run_status(s, run_id, "running", "")
        with pytest.raises(RunBusyError, match="another process"):
            service.run(run_id)

    def test_a_model_file_changed_since_the_start_is_refused(self, service, factory):
        run_id = service.start(ArchiveQuery(max_series=1), MODELS[:1])
        with factory.begin() as s:
            s.execute(text("UPDATE archive_runs SET models = :m WHERE id = :r"),
                      {"m": '[{"id": "basic_cnn_v1", "sha256": "' + "0" * 64 + '", "kind": "slice_classifier"}]',
                       "r": run_id})
        with pytest.raises(ArchiveError, match="changed since run"):
            service.run(run_id)
        assert service.status(run_id)["status"] == "paused"  # not left "running": a later resume is allowed


def test_pacs_stopped_mid_run_pauses_and_continues(service, factory, tmp_path):
    service.close()  # its kept workers hold both CPUs of the embedded Ray
    server = start_orthanc(tmp_path / "orthanc")
    try:
        client = PacsClient(server.dicomweb_url, TEST_USER, TEST_PASSWORD, timeout_s=5)
        _stow(client, _files(TCIA_STUDY) + _files(LIDC / "LIDC-IDRI-0002"))
        svc = ArchiveService(factory, client, timeout_s=5)
        run_id = svc.start(ArchiveQuery(), MODELS[:1])
        events: list = []

        def watch(p) -> bool:
            events.append(p)
            if p.worker and server.proc.poll() is None and not any(e.status == "paused" for e in events):
                # the PACS goes down after the first series; one worker holds two series, so the
                # third is sent to it after this, to a PACS that is down
                server.proc.terminate()
                server.proc.wait(timeout=20)
            elif p.status == "paused" and server.proc.poll() is not None:
                restart(server)  # ... and comes back while the run waits
            return False

        p = svc.run(run_id, workers=1, progress=watch, poll_s=0.5, max_pause_s=120)
        paused = [e for e in events if e.status == "paused"]
        assert paused, [e.line() for e in events]
        assert "does not answer" in paused[-1].message and f"resume {run_id}" in paused[-1].message
        assert p.status == "finished" and p.done == 3 and p.failed == 0, p.line()
        rows = _rows(factory, run_id)
        assert len(rows) == 3 and all(r["status"] == "done" for r in rows)
        assert all(r["attempts"] == 1 for r in rows)  # a PACS that is down costs the series no attempt
    finally:
        server.stop()


def test_command_line(service, pacs, factory, capsys, tmp_path):
    """``lungreview-archive run / status / list / compare`` (``main``), as a lead would type them."""
    import json

    from services.archive import main

    service.close()  # the command starts its own workers
    server, client = pacs
    code = main(["run", "--query", "description=b40f", "--models", "basic_cnn_v1", "--workers", "1",
                 "--pacs", server.dicomweb_url])
    out, err = capsys.readouterr()
    assert code == 0, err
    run_id = int(err.split("Run ", 1)[1].split()[0])
    assert f"run {run_id} finished: 1 done, 0 failed, 0 left of 1" in out
    assert main(["status", str(run_id)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "finished" and status["rows"] == {"basic_cnn_v1": {"done": 1, "failed": 0}}
    assert main(["list"]) == 0 and f"{run_id}\tfinished" in capsys.readouterr().out
    # the TCIA study by its key; the LIDC accession number (both LIDC studies share it) looked up in the PACS
    lidc = str(pydicom.dcmread(_files(LIDC / "LIDC-IDRI-0001")[0], stop_before_pixels=True).AccessionNumber)
    csv = tmp_path / "reference.csv"
    csv.write_text(f"study_key,accession,finding\n{study_key_for(_uids(_tcia_dirs()[0])[0])},,malignant\n"
                   f",{lidc},normal\n")
    assert main(["compare", str(run_id), "--reference", str(csv), "--pacs", server.dicomweb_url, "--n-boot", "0"]) == 0
    out, err = capsys.readouterr()
    assert "Series scores per model" in out and "Against the reference (1 studies of the run)" in out
    assert "matches 2 studies" in err and lidc not in out + err
    csv.write_text("study_key,finding\nabc,cancer\n")
    assert main(["compare", str(run_id), "--reference", str(csv)]) == 2
    assert "unknown finding" in capsys.readouterr().err
    assert main(["resume", "999", "--pacs", server.dicomweb_url]) == 2
    assert "no archive run 999" in capsys.readouterr().err


def test_nodule_detector_unavailable_is_a_typed_failure(monkeypatch):
    """A worker whose LungReview lacks the detector records a typed failure, not a crash."""
    from core.imaging import read_paths

    if not TCIA_STUDY.is_dir():
        pytest.skip(f"shared datasets missing under {DATA}")
    series = read_paths([_tcia_dirs()[0]]).series[0]
    monkeypatch.setitem(sys.modules, "core.nodules", None)  # `from core.nodules import ...` raises ImportError
    worker = ScoringWorker("http://127.0.0.1:9/dicom-web")
    out = worker._score_one(series, ModelRef("nodule3d_luna16_v1", "", "nodule_detector"))
    assert out.failure == "detector_unavailable" and "nodule detector not available" in out.message
    assert out.result is None


def test_nodule_detector_scores_a_series(service, factory):
    """With the detector merged (core.nodules.detect_nodules, registry entry nodule3d_luna16_v1)."""
    from core.registry import RegistryError, get_card

    try:
        get_card("nodule3d_luna16_v1")
    except RegistryError:
        pytest.skip("the registry has no nodule3d_luna16_v1 yet")
    run_id = service.start(ArchiveQuery(description="b40f"), ["nodule3d_luna16_v1"])
    p = service.run(run_id, workers=1)
    rows = _rows(factory, run_id)
    assert p.status == "finished" and len(rows) == 1
    assert rows[0]["status"] == "done" and rows[0]["n_nodules"] is not None and rows[0]["n_nodules"] >= 0
    assert isinstance(np.asarray(rows[0]["n_nodules"]).item(), int)
