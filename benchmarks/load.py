"""Load benchmark: N readers at once on one dashboard server, each in its own session.

Run from the repository root with the venv's python (not a pytest test)::

    python -m benchmarks.load --n 1 5 10 20 --input jpg|ct [--distinct] [--moves 10] [--json]
        [--client ws|browser] [--browser auto|shared|own] [--server-env NAME=VALUE]
        [--profile DIR] [--logs DIR] [--netlog DIR] [--timeout S]

For each N it starts a fresh server (``tests.e2e.helpers.streamlit_server``: ``streamlit run
dashboard/app.py`` on a temporary var/ folder and SQLite database) and, before it starts, creates
an admin and N + 1 radiologists through the service layer (``services.accounts.create_first_admin`` /
``create_account``). Reader 0 warms the server up (signs in, uploads an input of the same kind
that no timed session uses, analyses, waits for the heatmap: the model is loaded and traced).
Then N readers run at once, each in its own thread, as one of two clients:

* ``--client ws`` (default): a websocket client (:class:`AppClient`) that speaks Streamlit's own
  protocol as the browser's frontend does (rerun requests with widget states, the uploader's
  file URLs and PUTs, a GET of every image shown) but renders nothing. It measures the server:
  on a 2-core machine N Chromium pages take the cores the server needs (docs/load.md).
* ``--client browser``: a Playwright driver per thread (sync API, so the browser tests' helpers
  are reused as they are) and one browser context per reader in ONE Chromium (Debian's, started
  here with a DevTools port); ``--browser own`` gives every reader its own Chromium. ``auto``
  (the default) is shared for JPGs and own for CT: over a DevTools connection Playwright sends
  the files' bytes through the protocol, which took 16 s for the 30 DICOM files.

Each reader:

1. signs in through the sign-in form and waits for the empty uploader of "Read a study";
2. waits for every other reader to get there (a barrier), so that the timed part starts at once;
3. uploads the input (browser: ``helpers.upload``, which returns the moment the uploader listed
   the files; ws: the moment the last PUT came back), clicks "Analyse with AI" (or finds the
   result stored by another reader who uploaded the same bytes: "recognised upload") and waits
   for the Grad-CAM overlay: a current (not stale) image captioned "Grad-CAM for '...'" that has
   loaded (ws: whose GET has come back). **upload end -> heatmap** is the time between;
4. moves the "Slice" slider ``--moves`` times (browser: the arrow keys; ws: the slider's value),
   each to a slice not shown before, and times each move until the caption "Slice K of N" shows
   the new K and the Grad-CAM image has changed and loaded (CT only: a JPG is one slice);
5. fills in and saves its read ("Save my read" -> "Read saved"), timed from the click.

Every wait is on the app's state (script-run state, test ids, texts, websocket messages: the
helpers' waits; the ws client's script_finished messages), never on time. Errors are counted
per reader: an exception (a wait that timed out included), every ``st.error`` / ``st.exception``
element on the page (the out-of-distribution warning, also an ``st.error``, is counted apart as
a notice), websocket closes, and upload retries; and per server: tracebacks in its log.

Measured per N besides the times: the server's resident memory (VmRSS of the ``streamlit run``
process and its descendants from /proc, sampled every 0.25 s: after the warm-up, peak during
the timed part, at the end; and the kernel's VmHWM, the server process's own peak since it
started), the server's CPU time over the timed part (in cores: CPU seconds / wall seconds), the
load average before and after, and the client side's memory and CPU (this script and every
descendant other than the server; the CPU of browser processes that exit unwaited-for is lost,
so it is a lower bound, None when the count went wrong). p50 / p95 are nearest-rank
percentiles over the readers (p95 of 20 values is the 19th smallest). Inputs: ``--input jpg``:
one IQ-OTH/NCCD JPG (the first of "Malignant cases" in sorted order; the warm-up takes the first
of "Normal cases"); ``--input ct``: the 30-slice series "2.000000-..." of Lung-PET-CT-Dx patient
Lung_Dx-A0002 (the warm-up takes the other 30-slice series of that study). Every reader uploads
the same files unless ``--distinct``: then reader k uploads its own input (the k-th JPG of
"Malignant cases"; a copy of the series with its own Study/Series/SOP Instance UIDs), so every
reader's analysis runs the model.

``--server-env NAME=VALUE`` passes an environment variable to the server (before/after runs of
a Streamlit option in one sitting, e.g. ``STREAMLIT_RUNNER_POST_SCRIPT_GC=true``).
``--profile DIR`` records the server's Python stacks during the timed part with py-spy
(``py-spy record --format raw --threads --idle``; pip install py-spy) into
``DIR/profile_<input>_n<N>.txt`` (collapsed stacks, one line a stack with its sample count).

Prints a table; with --json also one JSON object. Exit status 0 when every N was run (whether
or not its readers had errors), 1 when the server or the browser could not be started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.settings import REPO_ROOT, get_settings
from tests.e2e.helpers import (
    LONG,
    NetworkLog,
    free_port,
    radio,
    sign_in,
    streamlit_server,
    upload,
    wait_for_ai_result,
    wait_idle,
)

CHROMIUM = os.environ.get("LUNGREVIEW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
UPLOAD_LABEL = "Upload DICOM files, a ZIP or JPG/PNG slices"
ADMIN = ("load-admin", "Load Admin", "load-admin-pass-1")
READER_PASSWORD = "load-reader-pass-1"
MB = 1024 * 1024
#: UID root for the copies' made-up UIDs (pydicom's own root, 1.2.826.0.1.3680043.8.498.; PS3.5 9.1).
UID_ROOT = "1.2.826.0.1.3680043.8.498."

#: The images on screen that are not stale: {slice: "Slice K of N ..." caption or null,
#: cam_src: the Grad-CAM image's src or null, cam_ready: that image has loaded}.
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

#: True when a current Grad-CAM image has loaded whose src differs from ``old`` (null: any) and,
#: unless ``slicePrefix`` is null, the slice caption starts with it.
CAM_SHOWN_JS = "([old, slicePrefix]) => {\n    const s = (" + IMAGES_JS + """)();
    if (!s.cam_ready || s.cam_src === old) return false;
    return slicePrefix === null || (s.slice !== null && s.slice.startsWith(slicePrefix));
}"""

#: After an upload's run: 'button' ("Analyse with AI" shown), 'result' (a Grad-CAM image: the
#: upload was recognised and its stored result shown), 'error' (an error or exception shown
#: and neither of the others), else false.
ANALYSE_STATE_JS = """() => {
    if ([...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Analyse with AI'))
        return 'button';
    if ([...document.querySelectorAll('[data-testid="stImageCaption"]')]
            .some(c => (c.textContent || '').startsWith('Grad-CAM for'))) return 'result';
    if (document.querySelector('[data-testid="stException"], [data-testid="stAlertContentError"]'))
        return 'error';
    return false;
}"""

#: Texts of the current (not stale) st.error and st.exception elements.
PAGE_ERRORS_JS = """() => [...document.querySelectorAll(
        '[data-testid="stException"], [data-testid="stAlertContentError"]')]
    .filter(e => { const box = e.closest('[data-testid="stElementContainer"]');
                   return !(box && box.getAttribute('data-stale') === 'true'); })
    .map(e => (e.innerText || '').trim().slice(0, 300))"""

OOD_PREFIX = "Out-of-distribution warning"
#: ms between two evaluations of this script's page-state functions (Playwright's default, every
#: animation frame, costs each of N pages a script run per frame on the shared cores); the
#: browser's own clock still dates the heatmap (``CAM_RECORDER_JS``).
POLL_MS = 100

#: Installed in every page before the app's scripts: records in ``window.__camLoads`` the wall
#: clock (ms, ``Date.now()``) and src of every Grad-CAM overlay image that finished loading, and
#: in ``window.__camDom`` when each src was first in the page (a load event is seen by a
#: capturing listener on the document; the DOM by a MutationObserver), so the browser's own
#: time of "heatmap on screen" can be told apart from when the script's polling noticed it.
CAM_RECORDER_JS = """(() => {
    window.__camLoads = []; window.__camDom = {};
    const isCam = (img) => {
        const fig = img.closest && img.closest('[data-testid="stImage"]');
        const cap = fig && fig.querySelector('[data-testid="stImageCaption"]');
        return !!cap && (cap.textContent || '').startsWith('Grad-CAM for');
    };
    document.addEventListener('load', (e) => {
        const img = e.target;
        if (img && img.tagName === 'IMG' && isCam(img)) window.__camLoads.push([Date.now(), img.getAttribute('src')]);
    }, true);
    new MutationObserver(() => {
        for (const img of document.querySelectorAll('[data-testid="stImage"] img')) {
            const src = img.getAttribute('src');
            if (src && !(src in window.__camDom) && isCam(img)) window.__camDom[src] = Date.now();
        }
    }).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
})();"""


# ------------------------------------------------------------------------------------ inputs
def _iq_jpgs(folder: str, n: int) -> list[Path]:
    """The first ``n`` IQ-OTH/NCCD JPGs of a class folder in sorted order.

    Raises:
        FileNotFoundError: the folder holds fewer than ``n`` JPGs.
    """
    root = get_settings().iq_othnccd_dir / folder
    files = sorted(root.glob("*.jpg"))
    if len(files) < n:
        raise FileNotFoundError(f"{root} holds {len(files)} JPG(s), {n} wanted; check LUNGREVIEW_DATA_DIR")
    return files[:n]


def _tcia_series() -> list[list[Path]]:
    """The DICOM files of each series of Lung_Dx-A0002, series in sorted order, files sorted.

    Raises:
        FileNotFoundError: the study is not under ``get_settings().tcia_dir``.
    """
    root = get_settings().tcia_dir / "Lung_Dx-A0002"
    series = [sorted(d.glob("*.dcm")) for d in sorted(root.glob("*/*")) if d.is_dir()]
    series = [s for s in series if s]
    if len(series) < 2:
        raise FileNotFoundError(f"{root} should hold two DICOM series; check LUNGREVIEW_DATA_DIR")
    return series


def _copy_series(files: list[Path], folder: Path, copy_no: int) -> list[Path]:
    """Write ``files`` (one DICOM series) into ``folder`` with new Study, Series and SOP Instance
    UIDs derived from ``copy_no`` (and the file meta's MediaStorageSOPInstanceUID); pixels and
    every other element unchanged. Returns the new paths (same file names)."""
    import pydicom

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(files, start=1):
        ds = pydicom.dcmread(src)
        ds.StudyInstanceUID = f"{UID_ROOT}{copy_no}.1"
        ds.SeriesInstanceUID = f"{UID_ROOT}{copy_no}.2"
        ds.SOPInstanceUID = f"{UID_ROOT}{copy_no}.3.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / src.name
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def make_inputs(kind: str, n: int, distinct: bool, work: Path) -> tuple[list[Path], list[list[Path]]]:
    """The warm-up's files and each of the ``n`` sessions' files (see the module docstring).

    Raises:
        FileNotFoundError: the shared data are missing.
        ValueError: ``kind`` is neither "jpg" nor "ct".
    """
    if kind == "jpg":
        warm = _iq_jpgs("Normal cases", 1)
        if distinct:
            return warm, [[p] for p in _iq_jpgs("Malignant cases", n)]
        return warm, [_iq_jpgs("Malignant cases", 1)] * n
    if kind == "ct":
        first, second = _tcia_series()[:2]
        if distinct:
            return second, [_copy_series(first, work / f"copy{k:02d}", 1000 + k) for k in range(n)]
        return second, [first] * n
    raise ValueError(f"--input must be jpg or ct, not {kind!r}")


# ------------------------------------------------------------------------------ /proc readings
def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(v) for v in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_mb(pids: list[int]) -> float:
    """Sum of VmRSS (resident memory) of ``pids`` in MiB (/proc/<pid>/status; gone ones count 0)."""
    return sum(_status_kb(p, "VmRSS") for p in pids) / 1024


def cpu_seconds(pids: list[int], children: bool = False) -> float:
    """User + system CPU seconds of ``pids`` (/proc/<pid>/stat fields 14 and 15, in clock ticks);
    with ``children`` also fields 16 and 17: the time of their children that have exited."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            if children:
                total += int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def server_pid(base: str) -> int:
    """The pid of this script's ``streamlit run`` child serving ``base``.

    Raises:
        RuntimeError: no such child.
    """
    port = base.rsplit(":", 1)[1].encode()
    for pid in _children(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in cmd and port in cmd:
            return pid
    raise RuntimeError(f"no streamlit child of {os.getpid()} serves {base}")


class Sampler:
    """Samples the server's RSS (its process tree) and the client's (every other descendant of
    this script) every ``interval`` s in a thread, between :meth:`start` and :meth:`stop`."""

    def __init__(self, server: int, interval: float = 0.25) -> None:
        self.server = server
        self.interval = interval
        self.server_mb: list[float] = []
        self.client_mb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            server = process_tree(self.server)
            self.server_mb.append(rss_mb(server))
            client = [p for p in process_tree(os.getpid()) if p not in set(server)]
            self.client_mb.append(rss_mb(client))
            self._stop.wait(self.interval)  # the sampling period, not a wait for the app

    def start(self) -> Sampler:
        """Start sampling; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=10)


# ----------------------------------------------------------------------------------- set-up
def seed_accounts(db_url: str, n: int) -> list[str]:
    """Create the admin and radiologists reader00 .. reader<n> (password ``READER_PASSWORD``) in
    the database at ``db_url`` (migrated to head); returns their user names, warm-up reader first.

    Raises:
        db.session.DatabaseError: the database cannot be opened.
    """
    from db.session import make_engine, make_session_factory
    from services.accounts import create_account, create_first_admin

    engine = make_engine(db_url)
    try:
        factory = make_session_factory(engine)
        admin = create_first_admin(factory, *ADMIN)
        names = [f"reader{k:02d}" for k in range(n + 1)]
        for name in names:
            create_account(factory, admin.id, name, f"Load Reader {name[-2:]}", "radiologist", READER_PASSWORD)
        return names
    finally:
        engine.dispose()


@contextlib.contextmanager
def shared_chromium(folder: Path):
    """Start ONE headless Chromium with a DevTools port; yields its http endpoint for
    Playwright's ``connect_over_cdp``. Stopped (its process group) on exit.

    Raises:
        RuntimeError: it exits at start or its DevTools port does not answer within 60 s.
    """
    port = free_port()
    log = open(folder / "chromium.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", *CHROMIUM_ARGS, f"--remote-debugging-port={port}",
         f"--user-data-dir={folder / 'profile'}", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("chromium exited at start:\n" + (folder / "chromium.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{endpoint}/json/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromium's DevTools port did not answer within 60 s")
            time.sleep(0.2)  # polling a port that is not open yet
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        log.close()


# ----------------------------------------------------------------------------------- a session
@dataclass
class SessionResult:
    """What one session measured; times in seconds, None when the step was not reached."""

    index: int
    user: str
    sign_in_s: float | None = None
    upload_s: float | None = None  # files set on the input -> uploader lists them
    analysed: bool | None = None  # True: clicked "Analyse with AI"; False: a stored result was shown
    to_heatmap_s: float | None = None  # upload end -> Grad-CAM overlay on screen
    to_button_s: float | None = None  # upload end -> "Analyse with AI" clickable (run finished)
    click_to_heatmap_s: float | None = None  # the click -> Grad-CAM overlay on screen
    heatmap_in_dom_s: float | None = None  # upload end -> the overlay's <img> in the page (browser clock)
    heatmap_loaded_s: float | None = None  # upload end -> the overlay's image loaded (browser clock)
    moves_s: list[float] = field(default_factory=list)
    save_s: float | None = None
    page_errors: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    error: str | None = None
    ws_closed: int = 0
    upload_retries: int = 0
    total_s: float | None = None

    @property
    def errors(self) -> int:
        """Errors of this session: page errors, an exception, websocket closes."""
        return len(self.page_errors) + (self.error is not None) + self.ws_closed


def _page_errors(page, r: SessionResult) -> None:
    for text in page.evaluate(PAGE_ERRORS_JS):
        bucket = r.notices if text.startswith(OOD_PREFIX) else r.page_errors
        if text not in bucket:
            bucket.append(text)


def _move(page, slider, step: int, timeout: int) -> float:
    """Press an arrow key on the "Slice" slider; seconds until the new slice's Grad-CAM is shown."""
    state = page.evaluate(IMAGES_JS)
    k, n = (int(v) for v in state["slice"].split()[1:4:2])
    target = k + step
    slider.focus()
    t0 = time.monotonic()
    page.keyboard.press("ArrowRight" if step > 0 else "ArrowLeft")
    page.wait_for_function(CAM_SHOWN_JS, arg=[state["cam_src"], f"Slice {target} of {n}"], timeout=timeout,
                           polling=POLL_MS)
    dt = time.monotonic() - t0
    wait_idle(page, timeout)
    return dt


def _save_read(page, timeout: int) -> float:
    radio(page, "Your finding", "Malignant")
    radio(page, "Do you agree with the AI?", "Agree")
    radio(page, "Your confidence (1 = very unsure, 5 = certain)", "4")
    radio(page, "Was the heatmap helpful? (1 = not at all, 5 = very)", "3")
    wait_idle(page, timeout)
    t0 = time.monotonic()
    page.get_by_role("button", name="Save my read").click()
    page.get_by_text("Read saved").first.wait_for(timeout=timeout)
    dt = time.monotonic() - t0
    wait_idle(page, timeout)
    return dt


def _sign_in(page, base: str, user: str, timeout: int) -> float:
    t0 = time.monotonic()
    sign_in(page, base, user, READER_PASSWORD)
    page.get_by_text(UPLOAD_LABEL).first.wait_for(timeout=timeout)  # a radiologist lands on "Read a study"
    wait_idle(page, timeout)
    return time.monotonic() - t0


def _read(page, paths: list[Path], moves: int, r: SessionResult, timeout: int) -> None:
    """Upload, analyse, wait for the heatmap, move the slider, save the read (steps 3-5)."""
    t_set = time.monotonic()
    t_end = upload(page, paths, page.net, timeout=timeout)
    wall_end = time.time() - (time.monotonic() - t_end)  # t_end on the wall clock (the page's Date.now())
    r.upload_s = t_end - t_set
    state = page.wait_for_function(ANALYSE_STATE_JS, timeout=timeout, polling=POLL_MS).json_value()
    if state == "error":
        _page_errors(page, r)
        raise AssertionError("the page shows an error after the upload: " + "; ".join(r.page_errors))
    r.analysed = state == "button"
    t_click = None
    if r.analysed:
        wait_idle(page, timeout)
        t_click = time.monotonic()
        r.to_button_s = t_click - t_end
        page.net.mark("click Analyse with AI")
        page.get_by_role("button", name="Analyse with AI").click()
    page.wait_for_function(CAM_SHOWN_JS, arg=[None, None], timeout=timeout, polling=POLL_MS)
    t_heat = time.monotonic()
    page.net.mark("heatmap shown")
    r.to_heatmap_s = t_heat - t_end
    r.click_to_heatmap_s = None if t_click is None else t_heat - t_click
    src = page.evaluate(IMAGES_JS)["cam_src"]
    dom_ms = page.evaluate("(src) => window.__camDom && window.__camDom[src]", src)
    loads = page.evaluate("(src) => (window.__camLoads || []).filter(e => e[1] === src).map(e => e[0])", src)
    r.heatmap_in_dom_s = None if not dom_ms else dom_ms / 1000 - wall_end
    r.heatmap_loaded_s = min(loads) / 1000 - wall_end if loads else None
    wait_for_ai_result(page, timeout)
    _page_errors(page, r)
    shown = page.evaluate(IMAGES_JS)
    if moves and shown["slice"] is not None:
        k, n = (int(v) for v in shown["slice"].split()[1:4:2])
        step = 1 if k + moves <= n else -1
        slider = page.locator('[data-testid="stSlider"]').filter(
            has=page.get_by_text("Slice", exact=True)).get_by_role("slider").first
        for _ in range(min(moves, n - 1)):
            r.moves_s.append(_move(page, slider, step, timeout))
        _page_errors(page, r)
    r.save_s = _save_read(page, timeout)
    _page_errors(page, r)


def run_session(r: SessionResult, base: str, paths: list[Path], moves: int, timeout: int,
                endpoint: str | None, barrier: threading.Barrier | None, netlog: Path | None = None) -> None:
    """One reader in its own thread, Playwright driver and browser context (fills ``r``).

    ``endpoint``: a shared Chromium's DevTools endpoint (None: launch an own Chromium).
    ``barrier``: all sessions wait there after signing in (a failed session still arrives).
    ``netlog``: a folder to write the page's network log to (``helpers.NetworkLog`` lines).
    """
    from playwright.sync_api import sync_playwright

    arrived = False
    t0 = time.monotonic()
    try:
        with sync_playwright() as p:
            if endpoint is not None:
                browser = p.chromium.connect_over_cdp(endpoint)
            else:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
            ctx.add_init_script(CAM_RECORDER_JS)
            page = ctx.new_page()
            page.net = NetworkLog().attach(page)
            try:
                r.sign_in_s = _sign_in(page, base, r.user, timeout)
                if barrier is not None:
                    arrived = True
                    barrier.wait()
                t0 = time.monotonic()
                closed0 = page.net.ws_closed
                _read(page, paths, moves, r, timeout)
                r.ws_closed = page.net.ws_closed - closed0
                r.total_s = time.monotonic() - t0
            except Exception:
                with contextlib.suppress(Exception):
                    _page_errors(page, r)
                raise
            finally:
                if netlog is not None:
                    netlog.mkdir(parents=True, exist_ok=True)
                    (netlog / f"session{r.index:02d}_{r.user}.log").write_text("\n".join(page.net.lines) + "\n")
                r.upload_retries = sum("set_input_files attempt" in line and "attempt 1:" not in line
                                       for line in page.net.lines)
                with contextlib.suppress(Exception):
                    ctx.close()
                with contextlib.suppress(Exception):
                    browser.close()
    except Exception as exc:  # noqa: BLE001 - every failure is a measured error
        r.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        r.total_s = time.monotonic() - t0
        print(f"session {r.index} ({r.user}) failed:\n{traceback.format_exc()[-3000:]}", file=sys.stderr)
    finally:
        if barrier is not None and not arrived:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()


# ------------------------------------------------------------------------------ websocket client
#: The widget key of the sign-in cookie's confirmation (dashboard/auth.py: ``lungreview_cookie_<n>``;
#: the browser's CookieManager component answers True once the cookie is stored).
COOKIE_WIDGET = re.compile(r"^lungreview_cookie_\d+$")


class ClientError(AssertionError):
    """The app did not reach the state a websocket session waited for (the message says which)."""


class AppClient:
    """A minimal Streamlit frontend on the app's websocket (``/_stcore/stream``): no rendering.

    It speaks Streamlit's own protocol (``streamlit.proto``: BackMsg up, ForwardMsg down) as the
    browser does: a ``rerun_script`` with the widget states it set (Streamlit keeps every other
    widget's value from the previous run), a trigger value for a button click, the uploader's
    ``file_urls_request`` then one multipart PUT a file to ``/_stcore/upload_file`` (with the
    XSRF cookie and header) and the uploader's state, and a GET of every image the app shows
    (``/media/...``), as the browser loads them. Messages the server may send by reference are
    cached and their hashes reported, as the browser does. The elements of the page are kept by
    delta path; a full script run (``new_session``) starts them afresh, a fragment run updates
    its part. Widgets are found by their key (a widget id ends with ``-<key>``).

    Raises:
        ClientError: a wait ran out (``timeout`` seconds) or the websocket closed.
    """

    def __init__(self, base: str, timeout: float) -> None:
        import requests
        from websockets.sync.client import connect

        self.base = base
        self.timeout = timeout
        self.http = requests.Session()
        self.http.get(base + "/", timeout=timeout).raise_for_status()
        self.http.get(base + "/_stcore/health", timeout=timeout).raise_for_status()  # sets the XSRF cookie
        self.xsrf = self.http.cookies.get("_streamlit_xsrf", "")
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        self.ws = connect(base.replace("http://", "ws://") + "/_stcore/stream",
                          subprotocols=["streamlit", self.xsrf] if self.xsrf else ["streamlit"],
                          additional_headers={"Cookie": cookie, "Origin": base}, max_size=None,
                          open_timeout=timeout, compression=None)
        self.session_id = ""
        self.page_hash = ""
        self.query = ""
        self.elements: dict[tuple[int, ...], object] = {}
        self.states: dict[str, object] = {}  # widget id -> WidgetState kept for every rerun
        self.cache: dict[str, object] = {}
        self.fetched: dict[str, float] = {}  # image url -> monotonic time its GET completed
        self.running = False
        self.closed = False
        self.t0 = time.monotonic()
        self.lines: list[str] = []
        self._send_rerun()  # a page load asks for a run first

    # -------------------------------------------------------------------- protocol
    def _log(self, text: str) -> None:
        self.lines.append(f"t={time.monotonic() - self.t0:8.3f} {text}")

    def _send_rerun(self, triggers: list[str] = ()) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = self.query
        cs.page_script_hash = self.page_hash
        for state in self.states.values():
            cs.widget_states.widgets.add().CopyFrom(state)
        for wid in triggers:
            w = cs.widget_states.widgets.add()
            w.id = wid
            w.trigger_value = True
        cs.cached_message_hashes.extend(self.cache)
        cs.context_info.timezone = "UTC"
        cs.context_info.locale = "en-US"
        cs.context_info.url = self.base + "/"
        self.running = True  # a run is asked for: idle again at its script_finished
        self._log(f"sent rerun_script triggers={[t.rsplit('-', 1)[-1] for t in triggers]}")
        self.ws.send(msg.SerializeToString())

    def _handle(self, msg) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        kind = msg.WhichOneof("type")
        if kind == "ref_hash":
            cached = self.cache.get(msg.ref_hash)
            if cached is None:
                raise ClientError(f"the server referred to message {msg.ref_hash}, which this client never got")
            full = ForwardMsg()
            full.CopyFrom(cached)
            full.metadata.CopyFrom(msg.metadata)
            msg, kind = full, full.WhichOneof("type")
        elif msg.metadata.cacheable and msg.hash:
            self.cache[msg.hash] = msg
        if kind == "new_session":
            self.elements = {}
            if msg.new_session.initialize.session_id:
                self.session_id = msg.new_session.initialize.session_id
            if msg.new_session.page_script_hash:
                self.page_hash = msg.new_session.page_script_hash
        elif kind == "delta":
            path = tuple(msg.metadata.delta_path)
            delta = msg.delta
            if delta.WhichOneof("type") == "new_element":
                self.elements[path] = delta.new_element
                self._fetch_images(delta.new_element)
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "navigation":
            if msg.navigation.page_script_hash:
                self.page_hash = msg.navigation.page_script_hash
        elif kind == "session_status_changed":
            self.running = msg.session_status_changed.script_is_running or self.running
        elif kind == "script_finished":
            status = msg.script_finished
            self._log(f"script_finished({status})")
            if status != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                self.running = False
        elif kind == "file_urls_response":
            self._urls = msg.file_urls_response

    def _fetch_images(self, element) -> None:
        """GET the images of a new image element, as the browser loads them."""
        if element.WhichOneof("type") != "imgs":
            return
        for img in element.imgs.imgs:
            if img.url and img.url not in self.fetched:
                r = self.http.get(self.base + img.url, timeout=self.timeout)
                r.raise_for_status()
                self.fetched[img.url] = time.monotonic()
                self._log(f"fetched image {img.caption[:40]!r} ({len(r.content)} B)")

    def pump(self, until, what: str) -> None:
        """Read messages until ``until()`` is true; raises ClientError after ``timeout`` s."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        from websockets.exceptions import ConnectionClosed

        deadline = time.monotonic() + self.timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError(f"no {what} within {self.timeout:.0f} s:\n" + "\n".join(self.lines[-20:]))
            try:
                data = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                self.closed = True
                raise ClientError(f"the websocket closed while waiting for {what}: {exc}") from exc
            msg = ForwardMsg()
            msg.ParseFromString(data)
            self._handle(msg)

    def wait_idle(self) -> None:
        """Wait until the run asked for last has finished (not early for a rerun)."""
        self.pump(lambda: not self.running, "end of the script run")

    # -------------------------------------------------------------------- page
    def widget(self, key: str) -> str | None:
        """The id of the widget with user key ``key`` on the page, or None."""
        for el in self.elements.values():
            kind = el.WhichOneof("type")
            wid = getattr(getattr(el, kind), "id", "") if kind else ""
            if isinstance(wid, str) and wid.startswith("$$ID-") and wid.split("-", 2)[-1] == key:
                return wid
        return None

    def widget_matching(self, pattern: re.Pattern) -> str | None:
        """The id of a widget whose key matches ``pattern``, or None."""
        for el in self.elements.values():
            kind = el.WhichOneof("type")
            wid = getattr(getattr(el, kind), "id", "") if kind else ""
            if isinstance(wid, str) and wid.startswith("$$ID-") and pattern.match(wid.split("-", 2)[-1]):
                return wid
        return None

    def images(self) -> list[tuple[str, str]]:
        """(caption, url) of every image on the page."""
        return [(img.caption, img.url) for el in self.elements.values() if el.WhichOneof("type") == "imgs"
                for img in el.imgs.imgs]

    def image(self, prefix: str) -> tuple[str, str] | None:
        """The first image whose caption starts with ``prefix`` (caption, url), or None."""
        return next(((c, u) for c, u in self.images() if c.startswith(prefix)), None)

    def texts(self) -> list[str]:
        """Alert and markdown bodies on the page."""
        out = []
        for el in self.elements.values():
            kind = el.WhichOneof("type")
            if kind == "alert":
                out.append(el.alert.body)
            elif kind == "markdown":
                out.append(el.markdown.body)
        return out

    def errors(self) -> list[str]:
        """Texts of the st.error alerts and st.exception elements on the page."""
        from streamlit.proto.Alert_pb2 import Alert

        out = []
        for el in self.elements.values():
            kind = el.WhichOneof("type")
            if kind == "alert" and el.alert.format == Alert.ERROR:
                out.append(el.alert.body[:300])
            elif kind == "exception":
                out.append(f"{el.exception.type}: {el.exception.message}"[:300])
        return out

    def set_value(self, key: str, kind: str, value) -> None:
        """Keep the value of widget ``key`` for every later rerun (``kind``: a WidgetState field)."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        wid = self.widget(key)
        if wid is None:
            raise ClientError(f"no widget with key {key!r} on the page")
        state = WidgetState(id=wid)
        if kind == "double_array_value":
            state.double_array_value.data.extend(value)
        else:
            setattr(state, kind, value)
        self.states[wid] = state

    def click(self, key: str) -> None:
        """Click the button with key ``key`` (a rerun with its trigger)."""
        wid = self.widget(key)
        if wid is None:
            raise ClientError(f"no button with key {key!r} on the page")
        self._send_rerun([wid])

    def rerun(self) -> None:
        """Ask for a script run with the widget states kept (a widget's value changed)."""
        self._send_rerun()

    def upload(self, key: str, paths: list[Path]) -> float:
        """Upload ``paths`` through the uploader ``key`` as the browser does; returns the monotonic
        time the last PUT came back (the uploader then lists the files) and sends the rerun."""
        from concurrent.futures import ThreadPoolExecutor

        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        wid = self.widget(key)
        if wid is None:
            raise ClientError(f"no file uploader with key {key!r} on the page")
        request = BackMsg()
        request.file_urls_request.request_id = f"load-{id(self)}-{time.monotonic_ns()}"
        request.file_urls_request.file_names.extend(p.name for p in paths)
        request.file_urls_request.session_id = self.session_id
        self._urls = None
        self.ws.send(request.SerializeToString())
        self.pump(lambda: self._urls is not None, "file_urls_response")
        if self._urls.error_msg:
            raise ClientError(f"upload refused: {self._urls.error_msg}")
        urls = list(self._urls.file_urls)

        def put(item):
            path, u = item
            data = path.read_bytes()
            r = self.http.put(self.base + u.upload_url, files={"UploadedFile": (path.name, data)},
                              headers={"X-Xsrftoken": self.xsrf}, timeout=self.timeout)
            r.raise_for_status()
            return len(data)

        with ThreadPoolExecutor(max_workers=6) as pool:  # the browser's connections per host
            sizes = list(pool.map(put, zip(paths, urls, strict=True)))
        t_end = time.monotonic()
        state = WidgetState(id=wid)
        for path, u, size in zip(paths, urls, sizes, strict=True):
            info = state.file_uploader_state_value.uploaded_file_info.add()
            info.name, info.size, info.file_id = path.name, size, u.file_id
            info.file_urls.CopyFrom(u)
        self.states[wid] = state
        self._send_rerun()
        return t_end

    def close(self) -> None:
        """Close the websocket and the HTTP session."""
        with contextlib.suppress(Exception):
            self.ws.close()
        self.http.close()


def _ws_sign_in(c: AppClient, user: str) -> None:
    """Sign in through the sign-in form, confirm the cookie as the browser's component does,
    and wait for the empty uploader of "Read a study" (a radiologist's first page)."""
    c.wait_idle()
    c.pump(lambda: c.widget("signin_submit") is not None or c.widget("upload") is not None, "sign-in form")
    if c.widget("upload") is None:
        c.set_value("signin_username", "string_value", user)
        c.set_value("signin_password", "string_value", READER_PASSWORD)
        c.click("signin_submit")
        c.wait_idle()
        c.states.clear()  # the form's values are not sent again (the page changed)
    for _ in range(3):  # the cookie component asks for a run of its own once it has stored the cookie
        cookie = c.widget_matching(COOKIE_WIDGET)
        if cookie is None:
            break
        c.states[cookie] = _json_state(cookie, "true")
        c.rerun()
        c.wait_idle()
        del c.states[cookie]
    c.pump(lambda: c.widget("upload") is not None and not c.running, "the read page's uploader")


def _json_state(wid: str, value: str):
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    return WidgetState(id=wid, json_value=value)


def _ws_errors(c: AppClient, r: SessionResult) -> None:
    for text in c.errors():
        bucket = r.notices if OOD_PREFIX in text else r.page_errors
        if text not in bucket:
            bucket.append(text)


def _ws_read(c: AppClient, paths: list[Path], moves: int, r: SessionResult) -> None:
    """Steps 3-5 of the module docstring over the websocket."""
    t_set = time.monotonic()
    t_end = c.upload("upload", paths)
    r.upload_s = t_end - t_set
    c.wait_idle()
    if c.widget("analyse") is None and c.image("Grad-CAM for") is None:
        _ws_errors(c, r)
        raise ClientError("neither 'Analyse with AI' nor a result after the upload; errors: "
                          + "; ".join(r.page_errors))
    r.analysed = c.widget("analyse") is not None
    t_click = None
    if r.analysed:
        t_click = time.monotonic()
        r.to_button_s = t_click - t_end
        c.click("analyse")
    c.pump(lambda: (img := c.image("Grad-CAM for")) is not None and img[1] in c.fetched, "Grad-CAM overlay")
    t_heat = c.fetched[c.image("Grad-CAM for")[1]]
    r.to_heatmap_s = t_heat - t_end
    r.click_to_heatmap_s = None if t_click is None else t_heat - t_click
    c.wait_idle()
    _ws_errors(c, r)
    shown = c.image("Slice ")
    if moves and shown is not None and c.widget("slice_no") is not None:
        k, n = (int(v) for v in shown[0].split()[1:4:2])
        step = 1 if k + moves <= n else -1
        for _ in range(min(moves, n - 1)):
            old = c.image("Grad-CAM for")[1]
            k += step
            c.set_value("slice_no", "double_array_value", [float(k)])
            t0 = time.monotonic()
            c.rerun()
            prefix = f"Slice {k} of {n}"

            def moved(old=old, prefix=prefix) -> bool:
                cam, sl = c.image("Grad-CAM for"), c.image("Slice ")
                return (cam is not None and cam[1] != old and cam[1] in c.fetched and sl is not None
                        and sl[0].startswith(prefix))

            c.pump(moved, f"the Grad-CAM of slice {k}")
            r.moves_s.append(c.fetched[c.image("Grad-CAM for")[1]] - t0)
            c.wait_idle()
        _ws_errors(c, r)
    for key, value in (("review_finding", "Malignant"), ("review_agreement", "Agree"),
                       ("review_confidence", "4"), ("review_heatmap", "3")):
        c.set_value(key, "string_value", value)
    t0 = time.monotonic()
    c.click("review_submit")
    c.pump(lambda: any(t.startswith("Read saved") for t in c.texts()), "'Read saved'")
    r.save_s = time.monotonic() - t0
    c.wait_idle()
    _ws_errors(c, r)


def run_ws_session(r: SessionResult, base: str, paths: list[Path], moves: int, timeout: int,
                   barrier: threading.Barrier | None, netlog: Path | None = None) -> None:
    """One reader as a websocket client in its own thread (fills ``r``); see :func:`run_session`."""
    arrived = False
    t0 = time.monotonic()
    c = None
    try:
        c = AppClient(base, timeout / 1000)
        _ws_sign_in(c, r.user)
        r.sign_in_s = time.monotonic() - t0
        if barrier is not None:
            arrived = True
            barrier.wait()
        t0 = time.monotonic()
        _ws_read(c, paths, moves, r)
        r.total_s = time.monotonic() - t0
    except Exception as exc:  # noqa: BLE001 - every failure is a measured error
        if c is not None:
            with contextlib.suppress(Exception):
                _ws_errors(c, r)
            r.ws_closed = int(c.closed)
        r.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        r.total_s = time.monotonic() - t0
        print(f"session {r.index} ({r.user}) failed:\n{traceback.format_exc()[-3000:]}", file=sys.stderr)
    finally:
        if c is not None:
            if netlog is not None:
                netlog.mkdir(parents=True, exist_ok=True)
                (netlog / f"session{r.index:02d}_{r.user}.log").write_text("\n".join(c.lines) + "\n")
            c.close()
        if barrier is not None and not arrived:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()


# ------------------------------------------------------------------------------------ one N
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in (0, 1]) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def server_log_problems(log: Path) -> dict:
    """Tracebacks and ERROR lines in a server log: counts and the first few (with their last line)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = text.splitlines()
    tracebacks = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                j += 1
            tracebacks.append(lines[j][:300] if j < len(lines) else "?")
    errors = [ln[:300] for ln in lines if " ERROR " in ln]
    return {"tracebacks": len(tracebacks), "error_lines": len(errors), "first_tracebacks": tracebacks[:5],
            "first_error_lines": errors[:5]}


def run_n(n: int, args: argparse.Namespace, work: Path) -> dict:
    """Start a server for ``n`` sessions, warm it up, run them at once; the figures of this N."""
    warm_files, inputs = make_inputs(args.input, n, args.distinct, work / f"inputs_n{n}")
    var = Path(tempfile.mkdtemp(prefix=f"var-n{n}-", dir=work))
    users = seed_accounts(f"sqlite:///{var / 'e2e.db'}", n)
    timeout = args.timeout * 1000
    out: dict = {"n": n}
    profile = None
    with contextlib.ExitStack() as stack:
        env = dict(kv.split("=", 1) for kv in args.server_env)
        base = stack.enter_context(streamlit_server(var, env))
        pid = server_pid(base)
        netlog = Path(args.netlog) / f"{args.client}_{args.input}_n{n}" if args.netlog else None
        if args.client == "ws":
            def session(r, paths, moves, barrier):
                run_ws_session(r, base, paths, moves, timeout, barrier, netlog)
        else:
            endpoint = None
            if args.browser == "shared":
                endpoint = stack.enter_context(shared_chromium(Path(tempfile.mkdtemp(prefix="chromium-", dir=work))))

            def session(r, paths, moves, barrier):
                run_session(r, base, paths, moves, timeout, endpoint, barrier, netlog)
        warm = SessionResult(index=0, user=users[0])
        t_warm = time.monotonic()
        session(warm, warm_files, 0, None)
        out["warm_up"] = {"ok": warm.error is None, "to_heatmap_s": _r(warm.to_heatmap_s),
                          "run_s": round(time.monotonic() - t_warm, 1), "error": warm.error}
        rss_warm = rss_mb(process_tree(pid))
        results = [SessionResult(index=k, user=users[k]) for k in range(1, n + 1)]
        barrier = threading.Barrier(n + 1)
        threads = [threading.Thread(target=session, name=f"session-{r.index}",
                                    args=(r, inputs[r.index - 1], args.moves, barrier))
                   for r in results]
        for t in threads:
            t.start()
        barrier.wait()  # every session signed in (or failed): the timed part starts now
        load_before = os.getloadavg()
        cpu0, t0 = cpu_seconds(process_tree(pid), children=True), time.monotonic()
        sampler = Sampler(pid).start()
        if args.profile:
            profile = _start_profile(pid, Path(args.profile) / f"profile_{args.input}_n{n}.txt")
        spy = profile[0].pid if profile else None
        client0 = _client_cpu(pid, spy)
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        cpu = cpu_seconds(process_tree(pid), children=True) - cpu0
        client_cpu = _client_cpu(pid, spy) - client0
        if profile is not None:
            _stop_profile(profile)
        sampler.stop()
        load_after = os.getloadavg()
        rss_end = rss_mb(process_tree(pid))
        hwm = _status_kb(pid, "VmHWM") / 1024
        log = var / "streamlit.log"
        if args.logs:
            Path(args.logs).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, Path(args.logs) / f"streamlit_{args.input}_n{n}.log")
        problems = server_log_problems(log)
    heat = [r.to_heatmap_s for r in results if r.to_heatmap_s is not None]
    moves = [m for r in results for m in r.moves_s]
    saves = [r.save_s for r in results if r.save_s is not None]
    signs = [r.sign_in_s for r in results if r.sign_in_s is not None]
    out.update({
        "sessions_ok": sum(r.error is None and not r.page_errors for r in results),
        "errors": sum(r.errors for r in results) + problems["tracebacks"],
        "session_errors": [r.error for r in results if r.error],
        "page_errors": sorted({e for r in results for e in r.page_errors}),
        "notices": sorted({e for r in results for e in r.notices}),
        "ws_closed": sum(r.ws_closed for r in results),
        "upload_retries": sum(r.upload_retries for r in results),
        "analysed": sum(bool(r.analysed) for r in results),
        "server_log": problems,
        "heatmap_p50_s": _r(percentile(heat, 0.5)), "heatmap_p95_s": _r(percentile(heat, 0.95)),
        "heatmap_max_s": _r(max(heat) if heat else None),
        "move_p50_s": _r(percentile(moves, 0.5)), "move_p95_s": _r(percentile(moves, 0.95)),
        "save_p50_s": _r(percentile(saves, 0.5)), "save_p95_s": _r(percentile(saves, 0.95)),
        "sign_in_p50_s": _r(percentile(signs, 0.5)), "sign_in_max_s": _r(max(signs) if signs else None),
        "to_button_p50_s": _r(percentile([r.to_button_s for r in results if r.to_button_s is not None], 0.5)),
        "click_to_heatmap_p50_s": _r(percentile([r.click_to_heatmap_s for r in results
                                                 if r.click_to_heatmap_s is not None], 0.5)),
        "in_dom_p50_s": _r(percentile([r.heatmap_in_dom_s for r in results if r.heatmap_in_dom_s is not None], 0.5)),
        "loaded_p50_s": _r(percentile([r.heatmap_loaded_s for r in results if r.heatmap_loaded_s is not None], 0.5)),
        "upload_p50_s": _r(percentile([r.upload_s for r in results if r.upload_s is not None], 0.5)),
        "rss_after_warm_up_mb": round(rss_warm), "rss_peak_mb": round(max(sampler.server_mb, default=rss_end)),
        "rss_end_mb": round(rss_end), "vm_hwm_mb": round(hwm),
        "client_rss_peak_mb": round(max(sampler.client_mb, default=0.0)),
        "server_cpu_cores": round(cpu / wall, 2) if wall > 0 else None, "server_cpu_s": round(cpu, 1),
        "client_cpu_cores": round(client_cpu / wall, 2) if wall > 0 and client_cpu >= 0 else None,
        "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after],
        "run_s": round(wall, 1),
        "sessions": [{**asdict(r), "errors": r.errors} for r in results],
    })
    if profile is not None:
        out["profile"] = str(profile[1])
    return out


def _client_cpu(server: int, skip: int | None = None) -> float:
    """CPU seconds of the client side: this script (its threads) and every descendant other than
    the server's tree and ``skip`` (the profiler), including the time of descendants that have
    exited (the browsers' renderers, a session's own Chromium and its Playwright driver)."""
    mine = os.getpid()
    leave = set(process_tree(server)) | {mine} | ({skip} if skip else set())
    t = os.times()
    live = [p for p in process_tree(mine) if p not in leave]
    return cpu_seconds(live, children=True) + t.user + t.system + t.children_user + t.children_system


def _start_profile(pid: int, path: Path):
    """Start ``py-spy record`` on the server; returns (process, path) or None without py-spy."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "20", "--format", "raw", "--threads",
                             "--idle", "--nonblocking", "-o", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, path


def _stop_profile(profile) -> None:
    proc, _ = profile
    proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# ------------------------------------------------------------------------------------ report
def commit() -> str:
    """The short git commit of the working tree, or "unknown"."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def print_table(result: dict) -> None:
    """Print one line per N (times in s, RSS in MiB, server CPU in cores) and each N's notes."""
    client = "websocket clients" if result["client"] == "ws" else f"Chromium pages ({result['browser']} browser)"
    print(f"commit {result['commit']}  input {result['input']} ({'distinct' if result['distinct'] else 'same'} "
          f"files)  {client}  cpus {result['cpus']}  moves {result['moves']}  server env {result['server_env']}")
    head = (f"{'N':>3} {'ok':>5} {'err':>4} {'heat p50':>8} {'p95':>6} {'max':>6} {'move p50':>8} {'p95':>6} "
            f"{'save p50':>8} {'p95':>6} {'signin':>6} {'RSS warm':>8} {'peak':>6} {'HWM':>6} {'cores':>5} "
            f"{'load before -> after':>22} {'run s':>6}")
    print(head)
    for r in result["runs"]:
        load = f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}"
        print(f"{r['n']:>3} {str(r['sessions_ok']) + '/' + str(r['n']):>5} {r['errors']:>4} "
              f"{_f(r['heatmap_p50_s']):>8} {_f(r['heatmap_p95_s']):>6} {_f(r['heatmap_max_s']):>6} "
              f"{_f(r['move_p50_s']):>8} {_f(r['move_p95_s']):>6} {_f(r['save_p50_s']):>8} "
              f"{_f(r['save_p95_s']):>6} {_f(r['sign_in_p50_s']):>6} {r['rss_after_warm_up_mb']:>8} "
              f"{r['rss_peak_mb']:>6} {r['vm_hwm_mb']:>6} {_f(r['server_cpu_cores']):>5} {load:>22} "
              f"{r['run_s']:>6}")
    for r in result["runs"]:
        notes = []
        if r["session_errors"]:
            notes.append(f"session errors: {r['session_errors'][:3]}")
        if r["page_errors"]:
            notes.append(f"page errors: {r['page_errors'][:3]}")
        if r["server_log"]["tracebacks"]:
            notes.append(f"server tracebacks {r['server_log']['tracebacks']}: "
                         f"{r['server_log']['first_tracebacks'][:3]}")
        if r["ws_closed"] or r["upload_retries"]:
            notes.append(f"websocket closes {r['ws_closed']}, upload retries {r['upload_retries']}")
        if r["notices"]:
            notes.append(f"notices: {r['notices'][:1]}")
        notes.append(f"analysed {r['analysed']}/{r['n']}, warm-up {r['warm_up']}, client RSS peak "
                     f"{r['client_rss_peak_mb']} MB, client CPU {r['client_cpu_cores']} cores")
        print(f"N={r['n']}: " + "; ".join(notes))


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1, 5, 10, 20], help="session counts, one server each")
    ap.add_argument("--input", choices=("jpg", "ct"), default="jpg")
    ap.add_argument("--distinct", action="store_true", help="each session uploads its own study")
    ap.add_argument("--moves", type=int, default=10, help="slice moves per session (CT)")
    ap.add_argument("--client", choices=("ws", "browser"), default="ws",
                    help="websocket clients (no rendering; default) or Chromium pages through Playwright")
    ap.add_argument("--browser", choices=("auto", "shared", "own"), default="auto",
                    help="one Chromium for all sessions, or one each; auto: shared for jpg, own for ct")
    ap.add_argument("--timeout", type=int, default=LONG // 1000, help="seconds any one wait may take")
    ap.add_argument("--profile", default=None, help="folder for py-spy profiles of the server")
    ap.add_argument("--logs", default=None, help="folder to keep the server logs in")
    ap.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the server, e.g. STREAMLIT_RUNNER_POST_SCRIPT_GC=true "
                         "(before/after comparisons; repeatable)")
    ap.add_argument("--netlog", default=None, help="folder for each page's network log")
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    args = ap.parse_args(argv)
    if args.browser == "auto":
        args.browser = "shared" if args.input == "jpg" else "own"
    work = Path(tempfile.mkdtemp(prefix="lungreview-load-"))
    result = {"commit": commit(), "server_env": args.server_env, "input": args.input, "distinct": args.distinct, "client": args.client,
              "browser": args.browser if args.client == "browser" else None,
              "moves": args.moves, "cpus": os.cpu_count(),
              "mem_total_mb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB), "runs": []}
    try:
        for n in args.n:
            run = run_n(n, args, work)
            result["runs"].append(run)
            print(f"N={n} done in {run['run_s']} s: heatmap p50 {run['heatmap_p50_s']} p95 {run['heatmap_p95_s']}, "
                  f"errors {run['errors']}, RSS peak {run['rss_peak_mb']} MB", flush=True)
    except RuntimeError as exc:
        print(f"FAILED to start: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(result)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
