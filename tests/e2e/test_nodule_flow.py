"""The nodule read end to end in a real browser: a shared CT series with the real nodule detector,
the findings table, jump to the first finding, accept it, reject another, add one by clicking the
image, save the read, send SC + SR to the test Orthanc, which then holds an SR with one
measurement group per accepted or added nodule.

Series: LIDC-IDRI-0001 (133 slices of 2.5 mm; the registry's LUNA16-trained detector finds
candidates on it, while the 8 mm Lung-PET-CT-Dx series gives none with the current detector).
Every wait is on the app's state (tests/e2e/helpers.py); the detector's scan of 133 slices takes
a minute or two on a busy 2-core machine, so the waits here are generous (:data:`SCAN`).

Also checked: the finding chosen in the selector moves the viewer inside the page's fragment
(the rerun request the browser sends names the fragment), and the slice index shown is the
finding's (from the database).
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
from pathlib import Path

import pydicom
import pytest

from core.pacs.dicomweb import PacsClient
from tests.core.pacs.orthanc import orthanc  # noqa: F401
from tests.e2e.helpers import create_admin, mark, nav, radio, upload, wait_for_ai_result, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent")]

PASSWORD_ADMIN = "admin-pass-123"
#: ms: upload, the classifier on 133 slices and the nodule detector's scan, on a loaded machine
SCAN = 900_000


@pytest.fixture(scope="module")
def lidc_files(datasets_dir: Path) -> list[Path]:
    files = sorted((datasets_dir / "lidc-idri" / "LIDC-IDRI-0001").glob("*/*/*.dcm"))
    assert len(files) == 133, "LIDC-IDRI-0001 should hold 133 CT slices"
    return files


@pytest.fixture(scope="module")
def pacs_env(orthanc):  # noqa: F811
    """The test Orthanc's URL and credentials in os.environ for the app server (empty PACS)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LUNGREVIEW_DICOMWEB_URL", orthanc.dicomweb_url)
        mp.setenv("LUNGREVIEW_DICOMWEB_USER", orthanc.user)
        mp.setenv("LUNGREVIEW_DICOMWEB_PASSWORD", orthanc.password)
        yield orthanc, PacsClient(orthanc.dicomweb_url, orthanc.user, orthanc.password)


@pytest.fixture()  # per test, so that a rerun starts afresh
def app_server(pacs_env, app_server):
    """The conftest's app server, started after ``pacs_env`` put the PACS settings in its environment."""
    return app_server


class FragmentReruns:
    """The fragment ids of the rerun requests a page sends (Streamlit's BackMsg ``rerun_script``)."""

    def __init__(self, page) -> None:
        self.ids: list[str] = []
        page.on("websocket", self._watch)

    def _watch(self, ws) -> None:
        ws.on("framesent", self._frame)

    def _frame(self, payload) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        try:
            msg.ParseFromString(payload.encode() if isinstance(payload, str) else bytes(payload))
        except Exception:  # noqa: BLE001 - not a BackMsg
            return
        if msg.WhichOneof("type") == "rerun_script":
            self.ids.append(msg.rerun_script.fragment_id)


def _nodules(var: Path) -> list[tuple[int, int]]:
    """(rank, 0-based slice) of the stored AI findings, rank order."""
    con = sqlite3.connect(var / "e2e.db")
    try:
        return con.execute("SELECT rank, slice_index FROM nodules ORDER BY rank").fetchall()
    finally:
        con.close()


def _choose_finding(page, rank: int) -> None:
    """Choose the finding of ``rank`` in the selector "Finding" (its options start with "<rank> · slice")."""
    box = page.locator('div[data-testid="stSelectbox"]').filter(has_text="Finding").first
    for attempt in range(1, 4):
        wait_idle(page, timeout=60_000)
        box.get_by_role("combobox").click()
        option = page.get_by_role("option", name=re.compile(rf"^{rank} · slice "))
        try:
            option.first.wait_for(state="visible", timeout=5_000)
            option.first.click(timeout=5_000)
            break
        except Exception:
            if attempt == 3:
                raise
            print(f"E2E_RETRY finding {rank} not shown in the opened list (attempt {attempt}); again")
            page.keyboard.press("Escape")
    wait_idle(page)


def _save_decision(page, rank: int, decision: str) -> None:
    radio(page, "Your decision", decision)
    wait_idle(page)
    mark(page, f"save decision {decision} on finding {rank}")
    page.get_by_role("button", name="Save decision").click()
    page.get_by_text(f"Finding {rank}: {decision.lower()}ed").first.wait_for(timeout=120_000)
    wait_idle(page)


def _click_image(page, fx: float, fy: float) -> None:
    """Click the slice at a fraction (fx, fy) of its plot area (Plotly's drag layer covers exactly it)."""
    area = page.locator(".st-key-viewer_image .nsewdrag").first
    area.wait_for(timeout=60_000)
    area.scroll_into_view_if_needed()  # mouse.click takes viewport coordinates: the image must be on screen
    box = area.bounding_box()
    mark(page, f"click image at {fx:.2f}, {fy:.2f}")
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


def test_nodule_read_from_findings_to_the_sr_in_the_pacs(pacs_env, app_server, new_page, shot, lidc_files):
    server, client = pacs_env
    base, var = app_server
    page = new_page(width=1600, height=1200)
    fragments = FragmentReruns(page)
    create_admin(page, base, PASSWORD_ADMIN)
    nav(page, "Read a study")
    page.get_by_text("Upload DICOM files, a ZIP or JPG/PNG slices").first.wait_for(timeout=60_000)
    upload(page, lidc_files, timeout=SCAN)
    analyse = page.get_by_role("button", name="Analyse with AI")
    analyse.wait_for(timeout=SCAN)
    wait_idle(page)
    mark(page, "analyse")
    analyse.click()
    wait_for_ai_result(page, timeout=SCAN)
    page.get_by_text("Nodule findings").first.wait_for(timeout=SCAN)
    wait_idle(page)
    shot(page, "n1_findings")

    stored = _nodules(var)
    assert stored, "the detector found no candidate on LIDC-IDRI-0001"
    assert page.locator(".st-key-findings_table").count() == 1
    rank1_slice = stored[0][1]

    # jump to the first finding: the viewer shows its slice, inside the fragment
    before = len(fragments.ids)
    _choose_finding(page, 1)
    page.get_by_text(re.compile(rf"^Slice {rank1_slice + 1} of 133 ")).first.wait_for(timeout=60_000)
    assert fragments.ids[before:] and all(fragments.ids[before:]), "choosing a finding reran the whole page"
    shot(page, "n2_first_finding")

    _save_decision(page, 1, "Accept")
    if len(stored) > 1:
        _choose_finding(page, 2)
        page.get_by_text(re.compile(rf"^Slice {stored[1][1] + 1} of 133 ")).first.wait_for(timeout=60_000)
        _save_decision(page, 2, "Reject")
    expected_groups = 1  # the accepted finding; a rejected one is not a finding

    # add a nodule the AI missed: click the image (the right lung is on the image's left), give a diameter
    _click_image(page, 0.3, 0.45)
    page.get_by_text(re.compile(r"^Clicked slice \d+, x \d+, y \d+")).first.wait_for(timeout=60_000)
    wait_idle(page)
    page.locator('input[aria-label="Diameter (mm)"]').fill("6")
    page.locator('input[aria-label="Diameter (mm)"]').press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Add nodule").click()
    page.get_by_text(re.compile(r"^Nodule added on slice \d+")).first.wait_for(timeout=60_000)
    wait_idle(page)
    expected_groups += 1
    shot(page, "n3_decided")

    # the series read, then the export to the PACS
    radio(page, "Your finding", "Malignant")
    radio(page, "Do you agree with the AI?", "Partly")
    radio(page, "Your confidence (1 = very unsure, 5 = certain)", "4")
    wait_idle(page)
    page.get_by_role("button", name="Save my read").click()
    page.get_by_text("Read saved").first.wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_role("button", name="Prepare DICOM export").click()
    page.get_by_text(f"with {expected_groups} nodule measurement group(s)").first.wait_for(timeout=SCAN)
    send = page.get_by_role("button", name="Send to PACS")
    send.wait_for(timeout=SCAN)
    wait_idle(page)
    send.click()
    page.get_by_text("Sent to the PACS: 2 object(s)").first.wait_for(timeout=SCAN)
    shot(page, "n4_sent")
    page.context.close()

    study_uid = str(pydicom.dcmread(lidc_files[0], stop_before_pixels=True).StudyInstanceUID)
    ours = {s.series_number: s for s in client.search_series(study_uid) if s.series_number in (9901, 9902)}
    assert ours[9901].modality == "OT" and ours[9902].modality == "SR"
    ids = server.rest("POST", "/tools/lookup", data=ours[9902].series_instance_uid).json()
    instance = server.rest("GET", ids[0]["Path"] + "/instances").json()[0]
    sr = pydicom.dcmread(io.BytesIO(server.rest("GET", f"/instances/{instance['ID']}/file").content))
    import highdicom as hd

    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_planar_roi_measurement_groups()
    assert sorted(g.tracking_identifier for g in groups) == ["AI nodule 1", "Reader nodule 1"]
    assert len(groups) == expected_groups
    con = sqlite3.connect(var / "e2e.db")
    try:
        reads = con.execute("SELECT decision FROM nodule_reads ORDER BY id").fetchall()
    finally:
        con.close()
    assert [d for (d,) in reads] == ["accept", *(["reject"] if len(stored) > 1 else []), "add"]
    print("E2E_NODULES " + os.environ.get("PYTEST_XDIST_WORKER", "") + f" findings={len(stored)}")
