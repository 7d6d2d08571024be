"""core.pacs.dicomweb against a real Orthanc (tests/core/pacs/orthanc.py) holding the shared TCIA and LIDC studies."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from core.imaging import read_paths
from core.pacs.dicomweb import (
    NotCTError,
    PacsAuthError,
    PacsClient,
    PacsUnreachableError,
    SeriesTooLargeError,
    StudyNotFoundError,
    patient_name_pattern,
)
from core.settings import get_settings
from tests.core.pacs.orthanc import orthanc, skip_or_fail_without_orthanc, start_orthanc  # noqa: F401

DATA = get_settings().data_dir
TCIA_STUDY = DATA / "lung-pet-ct-dx" / "Lung_Dx-A0002"
LIDC = DATA / "lidc-idri"


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def _series_dirs() -> list[Path]:
    return sorted({p.parent for p in _dicom_files(TCIA_STUDY) + _dicom_files(LIDC)})


def _stow(client: PacsClient, files: list[Path], batch: int = 25) -> int:
    n = 0
    for i in range(0, len(files), batch):
        n += len(client.store_bytes(p.read_bytes() for p in files[i:i + batch]))
    return n


@pytest.fixture(scope="module")
def pacs(orthanc):  # noqa: F811 - the fixture imported above
    """The module's Orthanc with every shared TCIA and LIDC-IDRI instance stored by STOW-RS."""
    if not TCIA_STUDY.is_dir() or not LIDC.is_dir():
        pytest.skip(f"shared datasets missing under {DATA}")
    client = PacsClient(orthanc.dicomweb_url, orthanc.user, orthanc.password, timeout_s=30)
    files = _dicom_files(TCIA_STUDY) + _dicom_files(LIDC)
    assert _stow(client, files) == len(files)
    return orthanc, client


def _uids(folder: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(_dicom_files(folder)[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def test_stow_stored_every_instance(pacs):
    server, _ = pacs
    stats = server.rest("GET", "/statistics").json()
    assert stats["CountInstances"] == len(_dicom_files(TCIA_STUDY) + _dicom_files(LIDC))
    assert stats["CountStudies"] == 3


def test_search_by_patient_id_name_accession_and_date(pacs):
    _, client = pacs
    by_id = client.search_studies(patient="LIDC-IDRI-0001")
    assert [h.patient_id for h in by_id] == ["LIDC-IDRI-0001"]
    assert by_id[0].n_series == 1 and by_id[0].n_instances == len(_dicom_files(LIDC / "LIDC-IDRI-0001"))
    assert "CT" in by_id[0].modalities
    # a fragment of the name in lower case finds the TCIA patient (name "Lung_Dx-A0002")
    by_name = client.search_studies(patient="dx-a0002")
    assert [h.patient_id for h in by_name] == ["Lung_Dx-A0002"]
    assert by_name[0].study_date == date(2007, 4, 25) and by_name[0].n_series == 2
    accession = pydicom.dcmread(_dicom_files(LIDC / "LIDC-IDRI-0001")[0], stop_before_pixels=True).AccessionNumber
    # the TCIA anonymisation gave both LIDC studies the same accession number
    assert sorted(h.patient_id for h in client.search_studies(accession_number=str(accession))) == [
        "LIDC-IDRI-0001", "LIDC-IDRI-0002"]
    assert client.search_studies(accession_number="0000") == []
    in_2007 = client.search_studies(date_from=date(2007, 1, 1), date_to=date(2007, 12, 31))
    assert [h.patient_id for h in in_2007] == ["Lung_Dx-A0002"]
    assert len(client.search_studies()) == 3
    assert client.search_studies(patient="nobody-of-that-name") == []
    assert client.search_studies(modality="MR") == []


def test_patient_name_pattern():
    assert patient_name_pattern(" smith,  jo ") == "*smith*jo*"
    assert patient_name_pattern("Doe^John") == "*Doe*John*"
    assert patient_name_pattern("   ") == ""


def test_series_of_a_study(pacs):
    _, client = pacs
    study_uid, _ = _uids(TCIA_STUDY)
    series = client.search_series(study_uid)
    assert [s.series_number for s in series] == [2, 3]
    assert all(s.modality == "CT" and s.n_instances == 30 for s in series)
    assert "B40f" in series[1].description


@pytest.mark.parametrize("folder", _series_dirs(), ids=lambda p: p.name[-12:])
def test_retrieved_series_equals_the_file_read_series(pacs, folder):
    _, client = pacs
    study_uid, series_uid = _uids(folder)
    calls: list[tuple[int, int | None]] = []
    got = client.retrieve_series(study_uid, series_uid, progress=lambda done, total: calls.append((done, total)))
    want = read_paths([folder]).series
    assert len(want) == 1 and len(got.result.series) == 1 and not got.result.problems
    a, b = got.result.series[0], want[0]
    assert (a.study_key, a.series_key, a.modality) == (b.study_key, b.series_key, "CT")
    assert [s.sop_instance_uid for s in a.slices] == [s.sop_instance_uid for s in b.slices]
    assert [s.position_mm for s in a.slices] == [s.position_mm for s in b.slices]
    np.testing.assert_array_equal(a.hu, b.hu)
    assert a.spacing_mm == b.spacing_mm and a.metadata == b.metadata
    n = len(b.slices)
    assert calls[0] == (0, n) and calls[-1] == (n, n) and len(calls) == n + 1
    assert set(got.headers) == {s.sop_instance_uid for s in b.slices}
    header = got.headers[b.slices[0].sop_instance_uid]
    assert "PixelData" not in header and header.StudyInstanceUID == study_uid


def test_wrong_password_is_refused(pacs):
    server, _ = pacs
    client = PacsClient(server.dicomweb_url, server.user, "wrong-password", timeout_s=10)
    with pytest.raises(PacsAuthError, match="refused the user name or password"):
        client.search_studies(patient="LIDC-IDRI-0001")
    with pytest.raises(PacsAuthError):
        PacsClient(server.dicomweb_url, timeout_s=10).search_studies()


def test_over_the_size_limit(pacs):
    _, client = pacs
    study_uid, series_uid = _uids(LIDC / "LIDC-IDRI-0002")
    with pytest.raises(SeriesTooLargeError, match="larger than the limit"):
        client.retrieve_series(study_uid, series_uid, max_bytes=2_000_000)


def test_not_ct(pacs):
    _, client = pacs
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    client.store([mr])
    with pytest.raises(NotCTError, match="is MR, not CT"):
        client.retrieve_series(str(mr.StudyInstanceUID), str(mr.SeriesInstanceUID))


def test_unknown_series_and_study(pacs):
    _, client = pacs
    study_uid, _ = _uids(TCIA_STUDY)
    with pytest.raises(StudyNotFoundError):
        client.retrieve_series(study_uid, generate_uid())
    with pytest.raises(StudyNotFoundError):
        client.search_series(generate_uid())


def _copy_series(files: list[Path]) -> list[pydicom.Dataset]:
    """The files as a new study (new Study/Series/SOP Instance UIDs), for tests that delete it."""
    study, series = generate_uid(), generate_uid()
    out = []
    for p in files:
        ds = pydicom.dcmread(p)
        ds = copy.deepcopy(ds)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = "DELETE-ME"
        out.append(ds)
    return out


def test_study_deleted_between_search_and_retrieval(pacs):
    server, client = pacs
    datasets = _copy_series(_dicom_files(TCIA_STUDY)[:3])
    client.store(datasets)
    hits = client.search_studies(patient="DELETE-ME")
    assert len(hits) == 1
    series = client.search_series(hits[0].study_instance_uid)
    orthanc_ids = server.rest("POST", "/tools/lookup", data=hits[0].study_instance_uid).json()
    server.rest("DELETE", orthanc_ids[0]["Path"])
    with pytest.raises(StudyNotFoundError, match="deleted"):
        client.retrieve_series(hits[0].study_instance_uid, series[0].series_instance_uid)


def test_url_must_be_http_and_hold_no_credentials():
    for bad in ("", "ftp://pacs/dicom-web", "https://me:secret@pacs.example.org/dicom-web"):
        with pytest.raises(ValueError, match="DICOMweb URL"):
            PacsClient(bad)
    assert "secret" not in repr(PacsClient("https://pacs.example.org/dicom-web/", "me", "secret"))


def test_unreachable_server():
    client = PacsClient("http://127.0.0.1:9/dicom-web", "u", "p", timeout_s=2)
    with pytest.raises(PacsUnreachableError, match="did not answer"):
        client.search_studies()


def test_pacs_stopped_mid_retrieval(tmp_path):
    skip_or_fail_without_orthanc()
    if not LIDC.is_dir():
        pytest.skip(f"shared datasets missing under {DATA}")
    server = start_orthanc(tmp_path / "orthanc")
    try:
        client = PacsClient(server.dicomweb_url, server.user, server.password, timeout_s=10)
        folder = LIDC / "LIDC-IDRI-0001"
        _stow(client, _dicom_files(folder))
        study_uid, series_uid = _uids(folder)
        seen: list[int] = []

        def stop_after_first(done: int, total: int | None) -> None:
            seen.append(done)
            if done == 1:
                server.proc.kill()
                server.proc.wait(timeout=10)

        with pytest.raises(PacsUnreachableError, match="while retrieving the series"):
            client.retrieve_series(study_uid, series_uid, progress=stop_after_first)
        assert 1 in seen and max(seen) < len(_dicom_files(folder))
    finally:
        server.stop()
