"""Read a study from a real Orthanc in the page, analyse, read, and send SC + SR back (AppTest)."""

from __future__ import annotations

import io

import pydicom
import pytest
from sqlalchemy import select

from core.pacs.dicomweb import PacsClient
from core.settings import get_settings
from db.schema import AuditAction, AuditEvent
from tests.core.pacs.orthanc import orthanc  # noqa: F401
from tests.dashboard.conftest import make_app, open_page, texts

SERIES_DIR = next(iter(sorted((get_settings().data_dir / "lung-pet-ct-dx").glob("Lung_Dx-*/*/*B40f*"))), None)
pytestmark = [
    pytest.mark.skipif(SERIES_DIR is None, reason="shared TCIA study missing"),
    pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent"),
]


@pytest.fixture(scope="module")
def stored(orthanc):  # noqa: F811
    """The module's Orthanc holding the TCIA B40f series; returns (server, study uid, series uid)."""
    client = PacsClient(orthanc.dicomweb_url, orthanc.user, orthanc.password)
    files = sorted(SERIES_DIR.glob("*.dcm"))
    client.store_bytes(p.read_bytes() for p in files)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return orthanc, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@pytest.fixture()
def pacs_env(registry_env, stored, monkeypatch):
    from core import settings as config

    server = stored[0]
    monkeypatch.setenv("LUNGREVIEW_DICOMWEB_URL", server.dicomweb_url)
    monkeypatch.setenv("LUNGREVIEW_DICOMWEB_USER", server.user)
    monkeypatch.setenv("LUNGREVIEW_DICOMWEB_PASSWORD", server.password)
    config.get_settings.cache_clear()
    yield stored
    config.get_settings.cache_clear()


def _search(at, patient: str):
    at.radio(key="study_source").set_value("From PACS").run()
    at.text_input(key="pacs_patient").input(patient)
    return at.button(key="pacs_search_button").click().run()


def _exported_series(server, study_uid: str) -> dict[str, list[str]]:
    """Modality -> SOPInstanceUIDs of LungReview's series (numbers 9901/9902) in the study."""
    client = PacsClient(server.dicomweb_url, server.user, server.password)
    out: dict[str, list[str]] = {}
    for s in client.search_series(study_uid):
        if s.series_number in (9901, 9902):
            ids = server.rest("POST", "/tools/lookup", data=s.series_instance_uid).json()
            instances = server.rest("GET", ids[0]["Path"] + "/instances").json()
            out.setdefault(s.modality, []).extend(i["MainDicomTags"]["SOPInstanceUID"] for i in instances)
    return out


def test_no_source_choice_without_a_pacs(registry_env, users, monkeypatch):
    monkeypatch.delenv("LUNGREVIEW_DICOMWEB_URL", raising=False)
    get_settings.cache_clear()
    at = open_page(make_app(users["radiologist"]), "read_study.py")
    assert not at.exception and "study_source" not in [r.key for r in at.radio]


def test_from_pacs_search_retrieve_analyse_read_and_send(pacs_env, users, factory):
    server, study_uid, series_uid = pacs_env
    at = _search(open_page(make_app(users["radiologist"], timeout=120), "read_study.py"), "dx-a0002")
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "patient ID" in d.value.columns)
    assert list(table["patient ID"]) == ["Lung_Dx-A0002"] and list(table["series"]) == [1]
    assert at.selectbox(key="pacs_series").options[0].endswith("30 images")
    at.button(key="pacs_retrieve").click().run()
    assert not at.exception, at.exception
    assert "30 slice(s)" in texts(at)
    at.button(key="analyse").click().run()
    assert not at.exception, at.exception
    assert any(m.label == "AI result" for m in at.metric)
    assert "DICOM export" in texts(at) and "export_send" not in [b.key for b in at.button]
    at.button(key="export_prepare").click().run()
    assert not at.exception, at.exception
    at.button(key="export_send").click().run()
    assert not at.exception, at.exception
    assert "Sent to the PACS: 2 object(s)" in texts(at)
    exported = _exported_series(server, study_uid)
    assert len(exported["OT"]) == 1 and len(exported["SR"]) == 1

    # the read, then a second send: a new SR naming the first, nothing overwritten
    at.radio(key="review_finding").set_value("benign")
    at.radio(key="review_agreement").set_value("disagree")
    at.radio(key="review_confidence").set_value(3)
    at.button(key="review_submit").click().run()
    assert "Read saved" in texts(at)
    assert "prepare it again" in texts(at)
    at.button(key="export_prepare").click().run()
    at.button(key="export_send").click().run()
    assert not at.exception, at.exception
    again = _exported_series(server, study_uid)
    assert len(again["SR"]) == 2 and set(exported["SR"]) < set(again["SR"])
    new_sr = (set(again["SR"]) - set(exported["SR"])).pop()
    ids = server.rest("POST", "/tools/lookup", data=new_sr).json()
    sr = pydicom.dcmread(io.BytesIO(server.rest("GET", ids[0]["Path"] + "/file").content))
    pred = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == exported["SR"][0]
    assert "Rita Radiologist" in str(sr) and "Reader finding" in str(sr)  # the reader as Person observer

    with factory.begin() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == AuditAction.EXPORT)).all()
        assert [e.detail for e in events] == ["pacs: 2 DICOM object(s) (OT, SR) of model tiny_a"] * 2
        assert all(e.user_id == users["radiologist"].id for e in events)
        assert not any(study_uid in (e.detail + e.object_id) for e in events)


def test_wrong_password_is_a_message_not_a_traceback(pacs_env, users, monkeypatch):
    from core import settings as config

    monkeypatch.setenv("LUNGREVIEW_DICOMWEB_PASSWORD", "wrong")
    config.get_settings.cache_clear()
    at = _search(open_page(make_app(users["radiologist"]), "read_study.py"), "Lung_Dx-A0002")
    assert not at.exception
    assert "refused the user name or password" in "\n".join(e.value for e in at.error)


def _retrieve_fails(at, factory) -> str:
    """Click "Retrieve series"; return the page's error text after checking nothing recorded changed."""
    from db.repository import count_rows

    with factory.begin() as s:
        before = count_rows(s)
    at.button(key="pacs_retrieve").click().run()
    assert not at.exception, at.exception
    with factory.begin() as s:
        assert count_rows(s) == before
    assert "analyse" not in [b.key for b in at.button]
    return "\n".join(e.value for e in at.error)


def test_study_deleted_between_search_and_retrieval(pacs_env, users, factory):
    from pydicom.uid import generate_uid

    from tests.dashboard.conftest import seed_read

    seed_read(factory, users)  # something already recorded
    server = pacs_env[0]
    client = PacsClient(server.dicomweb_url, server.user, server.password)
    study, series = generate_uid(), generate_uid()
    copies = []
    for p in sorted(SERIES_DIR.glob("*.dcm"))[:3]:
        ds = pydicom.dcmread(p)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, "GONE-SOON"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copies.append(ds)
    client.store(copies)
    at = _search(open_page(make_app(users["radiologist"]), "read_study.py"), "GONE-SOON")
    assert at.selectbox(key="pacs_series").options[0].endswith("3 images")
    server.rest("DELETE", server.rest("POST", "/tools/lookup", data=study).json()[0]["Path"])
    assert "may have been deleted" in _retrieve_fails(at, factory)


def test_pacs_stopped_before_retrieval(registry_env, users, factory, tmp_path, monkeypatch):
    from core import settings as config
    from tests.core.pacs.orthanc import skip_or_fail_without_orthanc, start_orthanc

    skip_or_fail_without_orthanc()
    server = start_orthanc(tmp_path / "orthanc")
    try:
        PacsClient(server.dicomweb_url, server.user, server.password).store_bytes(
            p.read_bytes() for p in sorted(SERIES_DIR.glob("*.dcm"))[:2])
        monkeypatch.setenv("LUNGREVIEW_DICOMWEB_URL", server.dicomweb_url)
        monkeypatch.setenv("LUNGREVIEW_DICOMWEB_USER", server.user)
        monkeypatch.setenv("LUNGREVIEW_DICOMWEB_PASSWORD", server.password)
        monkeypatch.setenv("LUNGREVIEW_DICOMWEB_TIMEOUT_S", "3")
        config.get_settings.cache_clear()
        at = _search(open_page(make_app(users["radiologist"]), "read_study.py"), "Lung_Dx-A0002")
        assert at.selectbox(key="pacs_series").options
        server.stop()
        assert "did not answer" in _retrieve_fails(at, factory)
    finally:
        server.stop()
        config.get_settings.cache_clear()
