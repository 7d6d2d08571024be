"""Measure the reader's warm path in a real browser: upload -> Grad-CAM on screen, and slice moves.

Run from the repository root with the venv's python (not a pytest test; pytest does not collect
it)::

    python -m benchmarks.warm_path [--json] [--port N] [--jpgs 4] [--moves 6]

It starts ``streamlit run dashboard/app.py`` itself as the browser tests do
(``tests.e2e.helpers.streamlit_server``: a temporary var/ folder and SQLite database, nothing
else shared), drives Debian's Chromium (Playwright, ``/usr/bin/chromium``,
--no-sandbox --disable-gpu --disable-background-networking), creates the first admin (admins
may read studies) and opens "Read a study" (``/read``) afresh for each upload, as a reader
opening the next study would. Measured, each against its aim:

a. ``first_jpg_s``: the first analysis after the server started (the model is loaded then), one
   IQ-OTH/NCCD JPG ("Malignant case (1).jpg", the first in sorted order). From the upload's end
   (``set_input_files`` returned: the files are set on the input) until the Grad-CAM overlay
   image is loaded on screen, INCLUDING waiting for and clicking "Analyse with AI" (part of the
   workflow; the click happens as soon as the button is there and no script run is going on).
   Aim <= 6 s.
b. ``warm_jpg_s``: the same for further JPGs (the next ones in sorted order), each a new upload
   from a fresh page load in the same server. Aim <= 1.0 s for the median; each is printed.
c. ``series_128_s``: the same for a ZIP of one 128-slice DICOM series (benchmarks/data.py:
   the 60 TCIA slices repeated with new UIDs and positions). Aim <= 4 s.
d. ``slice_move_s``: on that series, pressing ArrowRight (or ArrowLeft at the end) on the focused
   "Slice" slider until the caption "Slice K of N" of the slice image shows the new K AND the
   Grad-CAM image's src has changed and is loaded. Aim <= 0.3 s for the median; each is printed.
   Each move goes to a slice not shown before (its Grad-CAM is not cached yet).

Every wait is on the page's state (test ids, text, image ``complete``, Streamlit's script-run
state of ``stApp`` and its ``stStatusWidget`` gone), never a fixed sleep. Prints a table; with
--json also one JSON object (figures, aims, met, load average before/after, commit, timings of
the run). Exit status 0 when the measurements were made, whether or not the aims were met; 1 on
a failure (the page's screenshot and the server log's tail are printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.data import iq_jpgs, make_series_zip
from core.settings import REPO_ROOT
from tests.e2e import conftest

ADMIN = ("bench-admin", "Bench Admin", "bench-pass-1234")
LONG = 300_000  # ms: the first run imports TensorFlow and loads the model on 2 busy cores
READ_URL = "read"  # url_path of "Read a study" (dashboard/app.py PAGES)
UPLOAD_LABEL = "Upload DICOM files, a ZIP or JPG/PNG slices"

#: True while no script run is going on or asked for: stApp's data-test-script-state (Streamlit's
#: ScriptRunState) not running/rerunRequested/stopRequested, and the status widget gone.
IDLE_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app) return false;
    const state = app.getAttribute('data-test-script-state');
    return !['running', 'rerunRequested', 'stopRequested'].includes(state)
        && !document.querySelector('[data-testid="stStatusWidget"]');
}"""

#: The images on screen (not stale): {slice: "Slice K of N ..." caption or null, cam_src, cam_ready}.
IMAGES_JS = """() => {
    const out = {slice: null, cam_src: null, cam_ready: false};
    for (const fig of document.querySelectorAll('[data-testid="stImage"]')) {
        const box = fig.closest('[data-testid="stElementContainer"]');
        if (box && box.getAttribute('data-stale') === 'true') continue;
        const cap = fig.querySelector('[data-testid="stImageCaption"]');
        const img = fig.querySelector('img');
        if (!cap || !img) continue;
        const text = cap.textContent || '';
        if (text.startsWith('Slice ')) out.slice = text;
        if (text.startsWith('Grad-CAM for')) {
            out.cam_src = img.getAttribute('src');
            out.cam_ready = img.complete && img.naturalWidth > 0;
        }
    }
    return out;
}"""

#: True when a (non-stale) Grad-CAM image is loaded whose src differs from ``old`` (null: any).
CAM_SHOWN_JS = "([old, slicePrefix]) => {\n    const s = (" + IMAGES_JS + """)();
    if (!s.cam_ready || s.cam_src === old) return false;
    return slicePrefix === null || (s.slice !== null && s.slice.startsWith(slicePrefix));
}"""


def wait_idle(page, timeout: int = LONG) -> None:
    """Wait until Streamlit has finished the current script run (and none is requested)."""
    page.wait_for_function(IDLE_JS, timeout=timeout)


def create_first_admin(page, base: str) -> None:
    """First run: create the admin account (signs it in)."""
    page.goto(base)
    page.get_by_role("button", name="Create admin account").wait_for(timeout=120_000)
    username, display, password = ADMIN
    page.locator('input[aria-label="Username"]').first.fill(username)
    page.locator('input[aria-label="Display name"]').first.fill(display)
    page.locator('input[aria-label="Password"]').first.fill(password)
    page.locator('input[aria-label="Repeat password"]').first.fill(password)
    page.get_by_role("button", name="Create admin account").click()
    page.get_by_text("Signed in as").first.wait_for(timeout=60_000)
    wait_for_cookie(page)


def sign_in(page, base: str) -> None:
    """Sign in as the admin made by ``create_first_admin`` (a new browser context)."""
    username, _, password = ADMIN
    page.goto(base)
    page.locator('input[aria-label="Username"]').first.fill(username)
    page.locator('input[aria-label="Password"]').first.fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").first.wait_for(timeout=60_000)
    wait_for_cookie(page)


def wait_for_cookie(page) -> None:
    """Wait until the sign-in cookie is in the browser (written by a component after the run),
    so that a fresh page load stays signed in; then until no run is going on."""
    from dashboard.auth import COOKIE_NAME

    page.wait_for_function("(name) => document.cookie.split('; ').some(c => c.startsWith(name + '=') "
                           "&& c.length > name.length + 1)", arg=COOKIE_NAME, timeout=60_000)
    wait_idle(page)


def open_read_page(page, base: str) -> None:
    """Load "Read a study" afresh (a new script session) and wait for its empty uploader, idle."""
    page.goto(f"{base}/{READ_URL}")
    page.get_by_text(UPLOAD_LABEL).first.wait_for(timeout=120_000)
    wait_idle(page)


def upload_and_analyse(page, base: str, paths: list[Path]) -> dict[str, float]:
    """Open the read page afresh, set ``paths`` on its file input, analyse, wait for the heatmap.

    Returns seconds from the files being set on the input (``set_input_files`` returned) to:
    ``listed`` (the uploader lists them), ``button`` ("Analyse with AI" shown, no run going on;
    clicked then), ``result`` ("AI result" shown) and ``heatmap`` (the Grad-CAM image loaded).
    """
    open_read_page(page, base)
    names = sorted(p.name for p in paths)
    page.locator('input[type="file"]').set_input_files([str(p) for p in paths])
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    page.wait_for_function(
        """(names) => {
            if (document.querySelector('[data-testid="stFileChipIconSpinner"]')) return false;
            const shown = [...document.querySelectorAll('[data-testid="stFileChipName"]')]
                .map(e => e.title).sort();
            return JSON.stringify(shown) === JSON.stringify(names);
        }""", arg=names, timeout=LONG)
    marks["listed"] = time.monotonic() - t0
    analyse = page.get_by_role("button", name="Analyse with AI")
    analyse.wait_for(timeout=LONG)
    wait_idle(page)
    marks["button"] = time.monotonic() - t0
    analyse.click()
    page.get_by_text("AI result").first.wait_for(timeout=LONG)
    marks["result"] = time.monotonic() - t0
    page.wait_for_function(CAM_SHOWN_JS, arg=[None, None], timeout=LONG)
    marks["heatmap"] = time.monotonic() - t0
    wait_idle(page)
    return marks


def move_slice(page, slider) -> tuple[float, str]:
    """Press an arrow key on the focused "Slice" slider; seconds until the new slice's Grad-CAM
    is on screen (caption "Slice K+-1 of N" and a changed, loaded Grad-CAM src); the new caption."""
    state = page.evaluate(IMAGES_JS)
    k, n = (int(v) for v in state["slice"].split()[1:4:2])
    key, target = ("ArrowRight", k + 1) if k < n else ("ArrowLeft", k - 1)
    slider.focus()
    t0 = time.monotonic()
    page.keyboard.press(key)
    page.wait_for_function(CAM_SHOWN_JS, arg=[state["cam_src"], f"Slice {target} of {n}"], timeout=LONG)
    dt = time.monotonic() - t0
    wait_idle(page)
    return dt, f"Slice {target} of {n}"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextlib.contextmanager
def dashboard_server(port: int | None = None, log_copy: Path | None = None):
    """Start the dashboard as the browser tests do (``tests.e2e.helpers.streamlit_server``) on a new
    private var/ folder (removed afterwards); yield (base_url, var_dir).

    ``port`` (None: a free one) replaces the helpers' port pick. The server log is copied to
    ``log_copy`` at the end.
    """
    from tests.e2e import helpers

    folder = Path(tempfile.mkdtemp(prefix="lungreview-bench-"))
    var = folder / "var"
    var.mkdir()
    if port is not None:
        helpers.free_port = lambda: port
    try:
        with helpers.streamlit_server(var) as base:
            yield base, var
    finally:
        log = var / "streamlit.log"
        if log_copy is not None and log.is_file():
            shutil.copyfile(log, log_copy)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def chromium():
    """Debian's Chromium through Playwright, headless, with conftest's CHROMIUM_ARGS."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=conftest.CHROMIUM, args=conftest.CHROMIUM_ARGS,
                                    headless=True)
        try:
            yield browser
        finally:
            browser.close()


def report_failure(page, var: Path, exc: BaseException) -> None:
    """Print where the page's screenshot is and the server log's tail."""
    shot = Path(tempfile.gettempdir()) / "bench_failure.png"
    try:
        page.screenshot(path=str(shot), full_page=True)
        print(f"failure screenshot: {shot}", file=sys.stderr)
    except Exception as shot_exc:  # noqa: BLE001 - the page may be gone; the log still matters
        print(f"(no screenshot: {shot_exc})", file=sys.stderr)
    log = var / "streamlit.log"
    if log.exists():
        print("server log tail:\n" + log.read_text()[-3000:], file=sys.stderr)
    print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)


def figure(name: str, values: list[float], aim: float, what: str) -> dict:
    """One measured figure: the median of ``values`` against ``aim`` (seconds)."""
    med = statistics.median(values)
    return {"name": name, "what": what, "seconds": round(med, 3), "each": [round(v, 3) for v in values],
            "aim_s": aim, "met": med <= aim}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    ap.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    ap.add_argument("--jpgs", type=int, default=4, help="warm JPGs after the first (3-5)")
    ap.add_argument("--moves", type=int, default=6, help="slice moves on the 128-slice series")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lungreview-bench-data-"))
    try:
        return _measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, work: Path) -> int:
    """Make the inputs under ``work``, start the server and browser, measure, print; 0."""
    started = time.monotonic()
    load_before = os.getloadavg()
    jpgs = iq_jpgs(1 + args.jpgs)
    zip128 = make_series_zip(work / "series128.zip", 128, study_no=1)
    figures: list[dict] = []
    details: dict[str, object] = {}
    log_copy = Path(tempfile.gettempdir()) / "bench_warm_path_streamlit.log"
    with dashboard_server(args.port, log_copy) as (base, var), chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
        page = ctx.new_page()
        try:
            create_first_admin(page, base)
            marks = upload_and_analyse(page, base, [jpgs[0]])
            details["first_jpg"] = {"file": jpgs[0].name, **{k: round(v, 3) for k, v in marks.items()}}
            figures.append(figure("first_jpg_s", [marks["heatmap"]], 6.0,
                                  "first analysis after server start, 1 JPG, upload end -> heatmap "
                                  "(incl. clicking Analyse with AI)"))
            warm = []
            details["warm_jpg"] = []
            for jpg in jpgs[1:]:
                marks = upload_and_analyse(page, base, [jpg])
                warm.append(marks["heatmap"])
                details["warm_jpg"].append({"file": jpg.name, **{k: round(v, 3) for k, v in marks.items()}})
            figures.append(figure("warm_jpg_s", warm, 1.0,
                                  f"warm JPG, upload end -> heatmap (incl. click), median of {len(warm)}"))
            marks = upload_and_analyse(page, base, [zip128])
            details["series_128"] = {"file": f"{zip128.name} ({zip128.stat().st_size / 1e6:.1f} MB)",
                                     **{k: round(v, 3) for k, v in marks.items()}}
            figures.append(figure("series_128_s", [marks["heatmap"]], 4.0,
                                  "128-slice DICOM ZIP, upload end -> heatmap (incl. click)"))
            slider = page.locator('[data-testid="stSlider"]').filter(
                has=page.get_by_text("Slice", exact=True)).locator('input[type="range"]').first
            moves, captions = [], []
            for _ in range(args.moves):
                dt, caption = move_slice(page, slider)
                moves.append(dt)
                captions.append(caption)
            details["slice_moves"] = captions
            figures.append(figure("slice_move_s", moves, 0.3,
                                  f"Slice slider arrow key -> new slice's Grad-CAM on screen, median of {len(moves)}"))
        except Exception as exc:
            report_failure(page, var, exc)
            raise
        finally:
            ctx.close()
    load_after = os.getloadavg()
    result = {
        "commit": commit(),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after],
        "cpus": os.cpu_count(),
        "figures": figures,
        "details": details,
        "run_s": round(time.monotonic() - started, 1),
    }
    print(f"commit {result['commit']}  cpus {result['cpus']}  load average (1/5/15 min) "
          f"before {result['load_before']} after {result['load_after']}")
    print(f"{'figure':<15} {'seconds':>8} {'aim':>6} {'met':>4}  each / what")
    for f in figures:
        each = ", ".join(f"{v:.2f}" for v in f["each"])
        print(f"{f['name']:<15} {f['seconds']:>8.2f} {f['aim_s']:>6.2f} {'yes' if f['met'] else 'no':>4}  "
              f"[{each}] {f['what']}")
    print(f"run took {result['run_s']} s; server log: {log_copy}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
