"""The radiologist's workflow end to end in a real browser, against `streamlit run`.

First run creates the admin, who creates a radiologist; the radiologist reads a real IQ-OTH/NCCD
JPG and the real TCIA study (as a ZIP, then as several files: recognised, not re-analysed), goes
to the most suspicious slice, records two reads and a SUS questionnaire; the admin opens Compare
models and sees every shipped model. Afterwards the SQLite file holds exactly those two reviews
and that one feedback. Screenshots of each page go to tests/e2e/screenshots/; on a failure the
page's screenshot, console and network log and the server log are saved there too (conftest.py).

Every wait is on the app's state, never on time (tests/e2e/helpers.py). Each upload starts from a
fresh page load; after files are set on the uploader, the test waits until the uploader lists
exactly those file names, their upload_file PUTs came back 2xx and the run finished, and sets
them again if they were lost (printed as E2E_UPLOAD_RETRY).

Also measured (printed, not asserted against a time): seconds from the end of an upload to the
Grad-CAM overlay on screen, for a JPG and for the TCIA series.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zipfile
from pathlib import Path

import pytest

from core.registry import list_cards, read_evaluation
from tests.e2e.helpers import (
    LONG,
    create_admin,
    nav,
    radio,
    select,
    sign_in,
    sign_out,
    text_input,
    upload,
    wait_for_ai_result,
    wait_idle,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD_ADMIN = "admin-pass-123"
PASSWORD_RAD = "reader-pass-123"


def _open_read_page(page, base: str) -> None:
    """Load the app afresh (a new script session; the sign-in cookie keeps the user, whose default
    page is "Read a study") and wait until its empty uploader is shown and no run is going on."""
    page.goto(base)
    page.get_by_text("Upload DICOM files, a ZIP or JPG/PNG slices").first.wait_for(timeout=LONG)
    wait_idle(page)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stFileChip\"]').length === 0",
                           timeout=LONG)


def _upload(page, base: str, paths: list[Path]) -> float:
    """Open "Read a study" afresh, as a reader opening the next study would (so no earlier file
    has to be removed from the uploader), and upload ``paths`` (:func:`helpers.upload`).
    Returns the monotonic time at which the uploader listed the files."""
    _open_read_page(page, base)
    return upload(page, paths, page.net)


def _analyse_and_wait_for_heatmap(page, t_upload_end: float) -> float:
    analyse = page.get_by_role("button", name="Analyse with AI")
    analyse.wait_for(timeout=LONG)
    wait_idle(page)
    analyse.click()
    wait_for_ai_result(page)
    return time.monotonic() - t_upload_end


def _save_read(page, finding: str, agreement: str) -> None:
    radio(page, "Your finding", finding)
    radio(page, "Do you agree with the AI?", agreement)
    radio(page, "Your confidence (1 = very unsure, 5 = certain)", "4")
    radio(page, "Was the heatmap helpful? (1 = not at all, 5 = very)", "3")
    page.locator('textarea[aria-label="Comment (no patient identifiers)"]').fill("e2e read")
    wait_idle(page)
    page.get_by_role("button", name="Save my read").click()
    page.get_by_text("Read saved").first.wait_for(timeout=60_000)
    wait_idle(page)


def _test_split_slice(label: str) -> str:
    """A slice of the given class from the shipped split's TEST part (never trained on)."""
    import csv

    from core.settings import get_settings

    manifest = get_settings().registry_dir / "splits" / "iqothnccd_seed42.csv"
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test" and r["label"] == label]
    assert rows, f"no {label} slice in the test split of {manifest}"
    return rows[len(rows) // 2]["path"]


@pytest.fixture(scope="module")
def tcia_files(tcia_dir: Path) -> list[Path]:
    files = sorted(tcia_dir.glob("Lung_Dx-A0002/*/*/*.dcm"))
    assert len(files) == 60, "the TCIA study should hold 60 slices"
    return files


@pytest.fixture(scope="module")
def tcia_zip(e2e_dir, tcia_files: list[Path], tcia_dir: Path) -> Path:
    path = e2e_dir / "Lung_Dx-A0002.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in tcia_files:
            zf.write(f, f.relative_to(tcia_dir).as_posix())
    return path


def test_radiologist_reads_jpg_and_ct_series_then_gives_feedback(
    app_server, new_page, shot, iq_dir, tcia_files, tcia_zip
):
    base, var = app_server
    _workflow(new_page(), base, var, shot, iq_dir, tcia_files, tcia_zip)


def _workflow(page, base, var, shot, iq_dir, tcia_files, tcia_zip) -> None:
    timings: dict[str, float] = {}

    # First run: create the admin, who creates a radiologist.
    page.goto(base)
    page.get_by_role("button", name="Create admin account").wait_for(timeout=60_000)
    shot(page, "01_first_run")
    create_admin(page, None, PASSWORD_ADMIN)
    nav(page, "Users")
    page.get_by_role("button", name="Create user").wait_for()
    text_input(page, "Username").fill("reader1")
    text_input(page, "Display name").fill("Reader One")
    select(page, "Role", "Radiologist")
    text_input(page, "Password").fill(PASSWORD_RAD)
    page.get_by_role("button", name="Create user").click()
    page.get_by_text("Created user").first.wait_for(timeout=30_000)
    shot(page, "02_users")
    sign_out(page)

    # The radiologist reads one IQ-OTH/NCCD JPG.
    sign_in(page, base, "reader1", PASSWORD_RAD)
    page.get_by_text("Upload DICOM files, a ZIP or JPG/PNG slices").wait_for()
    jpg = iq_dir / _test_split_slice("malignant")
    t0 = _upload(page, base, [jpg])
    timings["jpg_upload_to_heatmap_s"] = _analyse_and_wait_for_heatmap(page, t0)
    assert page.get_by_text("Series P(malignant)").count() >= 1
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1  # per-class probabilities
    shot(page, "03_read_jpg")
    _save_read(page, "Malignant", "Agree")
    shot(page, "04_read_jpg_saved")

    # The TCIA study as a ZIP: analysed once.
    t0 = _upload(page, base, [tcia_zip])
    timings["series_upload_to_heatmap_s"] = _analyse_and_wait_for_heatmap(page, t0)
    shot(page, "05_read_tcia_zip")

    # The same study as 60 loose files: recognised by content, not analysed again.
    _upload(page, base, tcia_files)
    wait_idle(page)
    page.get_by_text("AI result").first.wait_for(timeout=LONG)
    assert page.get_by_role("button", name="Analyse with AI").count() == 0
    wait_idle(page)
    page.get_by_role("button", name="Go to most suspicious slice").click()
    wait_idle(page)
    suspicious = page.locator('[data-testid="stMetric"]').filter(has_text="Most suspicious slice")
    slice_no = suspicious.locator('[data-testid="stMetricValue"]').inner_text().split()[0]
    page.get_by_text(f"Slice {int(slice_no)} of 30").first.wait_for(timeout=LONG)
    shot(page, "06_read_tcia_files_suspicious_slice")
    _save_read(page, "Malignant", "Partly")

    # SUS questionnaire.
    nav(page, "Pilot feedback")
    page.get_by_role("button", name="Submit feedback").wait_for(timeout=60_000)
    for i, answer in zip(range(1, 11), [4, 2, 4, 2, 5, 1, 4, 2, 4, 2], strict=True):
        group = page.locator(f'div[role="radiogroup"][aria-label^="{i}. "]')
        group.locator("label").nth(answer - 1).click()
    page.locator('textarea[aria-label="What helped you?"]').fill("The suspicious-slice button.")
    page.get_by_role("button", name="Submit feedback").click()
    page.get_by_text("your SUS score is").wait_for(timeout=30_000)
    shot(page, "07_feedback")
    sign_out(page)

    # The admin compares models: every shipped model is there.
    sign_in(page, base, "admin", PASSWORD_ADMIN)
    nav(page, "Compare models")
    page.get_by_text("Radiologists vs AI").first.wait_for(timeout=60_000)
    wait_idle(page)
    shot(page, "08_compare")
    content = page.locator('[data-testid="stMain"]').inner_text()
    cards = list_cards()
    assert cards, "the registry holds no model"
    for card in cards:
        assert card.id in content, f"model {card.id} missing from Compare models"
    if any(read_evaluation(card.id) for card in cards):
        assert "Test-split metrics" in content

    # The database holds exactly those reads and that feedback.
    con = sqlite3.connect(var / "e2e.db")
    try:
        reviews = con.execute("SELECT finding, agreement FROM reviews ORDER BY id").fetchall()
        feedback = con.execute("SELECT sus_score FROM feedback").fetchall()
        n_inferences = con.execute("SELECT count(*) FROM inferences").fetchone()[0]
    finally:
        con.close()
    assert reviews == [("malignant", "agree"), ("malignant", "partly")]
    assert feedback == [(80.0,)]  # Brooke 1996: (16 + 16) x 2.5
    assert n_inferences == 2  # the JPG and the TCIA series; the re-upload was not analysed again
    print("E2E_TIMINGS " + json.dumps(timings))
    (var.parent / "e2e_timings.json").write_text(json.dumps(timings))
