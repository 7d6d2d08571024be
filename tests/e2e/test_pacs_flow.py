"""From the PACS to the PACS in a real browser: search, retrieve, analyse, read, send SC + SR back.

A test Orthanc (tests/core/pacs/orthanc.py) holds the shared TCIA study; `streamlit run` is started with
LUNGREVIEW_DICOMWEB_URL and the test user's credentials in its environment. Afterwards Orthanc
holds LungReview's Secondary Capture and Structured Report in that study, and the SR carries the
read saved in the page.
"""

from __future__ import annotations

import io
import os
import sqlite3
import zipfile

import pydicom
import pytest

from core.pacs.dicomweb import PacsClient
from core.registry import default_model_id
from tests.core.pacs.orthanc import orthanc  # noqa: F401
from tests.e2e.helpers import LONG, create_admin, nav, radio, text_input, wait_for_ai_result, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent")]

PASSWORD_ADMIN = "admin-pass-123"


@pytest.fixture(scope="module")
def pacs_env(orthanc, tcia_dir):  # noqa: F811
    """Orthanc holding the TCIA study; its URL and credentials in os.environ for the app server."""
    client = PacsClient(orthanc.dicomweb_url, orthanc.user, orthanc.password)
    files = sorted(tcia_dir.glob("Lung_Dx-A0002/*/*/*.dcm"))
    assert len(client.store_bytes(p.read_bytes() for p in files)) == len(files) == 60
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LUNGREVIEW_DICOMWEB_URL", orthanc.dicomweb_url)
        mp.setenv("LUNGREVIEW_DICOMWEB_USER", orthanc.user)
        mp.setenv("LUNGREVIEW_DICOMWEB_PASSWORD", orthanc.password)
        yield orthanc, client, study_uid
    assert "LUNGREVIEW_DICOMWEB_URL" not in os.environ or os.environ["LUNGREVIEW_DICOMWEB_URL"] != orthanc.dicomweb_url


@pytest.fixture()  # per test, so that a rerun starts afresh
def app_server(pacs_env, app_server):
    """The conftest's app server, started after ``pacs_env`` put the PACS settings in its environment."""
    return app_server


def test_from_pacs_search_analyse_read_and_send(pacs_env, app_server, new_page, shot):
    server, client, study_uid = pacs_env
    base, var = app_server
    page = new_page()
    _flow(page, base, shot)
    page.context.close()

    ours = {s.series_number: s for s in client.search_series(study_uid) if s.series_number in (9901, 9902)}
    assert ours[9901].modality == "OT" and ours[9901].n_instances == 1
    assert ours[9902].modality == "SR" and ours[9902].n_instances == 1
    ids = server.rest("POST", "/tools/lookup", data=ours[9902].series_instance_uid).json()
    instance = server.rest("GET", ids[0]["Path"] + "/instances").json()[0]
    sr = pydicom.dcmread(io.BytesIO(server.rest("GET", f"/instances/{instance['ID']}/file").content))
    assert sr.StudyInstanceUID == study_uid and sr.VerificationFlag == "UNVERIFIED"
    assert "Reader finding" in str(sr) and "Pilot Admin" in str(sr)
    con = sqlite3.connect(var / "e2e.db")
    try:
        events = con.execute("SELECT detail FROM audit_events WHERE action = 'export' ORDER BY id").fetchall()
        n_studies = con.execute("SELECT count(*) FROM studies").fetchone()[0]
    finally:
        con.close()
    assert [d for (d,) in events] == [f"{where}: 2 DICOM object(s) (OT, SR) of model {model}"
                                     for where in ("download", "pacs")
                                     for model in [default_model_id()]]
    assert n_studies == 1


def _flow(page, base, shot) -> None:
    create_admin(page, base, PASSWORD_ADMIN)
    nav(page, "Read a study")

    radio(page, "Source", "From PACS")
    text_input(page, "Patient ID or name").wait_for(timeout=30_000)
    text_input(page, "Patient ID or name").fill("dx-a0002")
    page.get_by_role("button", name="Search PACS").click()
    page.get_by_text("1 CT study").first.wait_for(timeout=60_000)
    shot(page, "p1_pacs_search")
    wait_idle(page)
    page.get_by_role("button", name="Retrieve series").click()
    analyse = page.get_by_role("button", name="Analyse with AI")
    analyse.wait_for(timeout=LONG)
    assert page.get_by_text("30 slice(s)").count() >= 1
    analyse.click()
    wait_for_ai_result(page)
    shot(page, "p2_pacs_analysed")

    radio(page, "Your finding", "Benign")
    radio(page, "Do you agree with the AI?", "Partly")
    radio(page, "Your confidence (1 = very unsure, 5 = certain)", "4")
    page.get_by_role("button", name="Save my read").click()
    page.get_by_text("Read saved").first.wait_for(timeout=60_000)
    wait_idle(page)

    page.get_by_role("button", name="Prepare DICOM export").click()
    page.get_by_role("button", name="Download DICOM").wait_for(timeout=LONG)
    wait_idle(page)
    with page.expect_download(timeout=LONG) as download:
        page.get_by_role("button", name="Download DICOM").click()
    with zipfile.ZipFile(download.value.path()) as zf:
        assert zf.namelist() == ["OT_01.dcm", "SR_02.dcm"]
    wait_idle(page)

    send = page.get_by_role("button", name="Send to PACS")
    send.wait_for(timeout=LONG)
    send.click()
    page.get_by_text("Sent to the PACS: 2 object(s)").first.wait_for(timeout=LONG)
    assert page.get_by_role("button", name="Download DICOM").count() == 1
    shot(page, "p3_pacs_sent")
