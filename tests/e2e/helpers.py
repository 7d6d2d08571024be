"""Helpers shared by the browser tests (tests/e2e/test_*.py): the app server, waits on Streamlit's
state, widgets, sign-in, and a state-based upload.

Every wait is on the app's state, never on time: Streamlit's script-run state
(``data-test-script-state`` of ``stApp``) and status widget, test ids, visible text.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from core.settings import REPO_ROOT

LONG = 240_000  # ms: model load (TensorFlow import) plus a 30-slice series on 2 busy cores
UPLOAD_PATH = "/_stcore/upload_file"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(var: Path, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``streamlit run dashboard/app.py`` on a free port with ``var`` as its var/ folder.

    The database is ``var / "e2e.db"`` (SQLite) unless ``extra_env`` says otherwise; stdout and
    stderr go to ``var / "streamlit.log"``. Yields the base URL once ``/_stcore/health`` answers
    200; stops the server on exit. Raises RuntimeError when it exits at start or does not answer
    within 90 s (with the log's tail).
    """
    port = free_port()
    env = dict(os.environ)
    env.update(
        LUNGREVIEW_VAR_DIR=str(var),
        LUNGREVIEW_DB_URL=f"sqlite:///{var / 'e2e.db'}",
        LUNGREVIEW_STUDY_KEY="e2e-secret",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    log_path = var / "streamlit.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("streamlit exited at start:\n" + log_path.read_text()[-3000:])
                try:
                    with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("streamlit did not answer /_stcore/health within 90 s:\n"
                                       + log_path.read_text()[-3000:])
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)


#: True while no script run is going on or asked for: stApp's script-run state (Streamlit's
#: ScriptRunState: notRunning, running, rerunRequested, stopRequested, compilationError) and its
#: status widget ("Running...") gone, and no cookie write pending: the app renders the
#: CookieManager component (dashboard/auth.py) until the browser has stored a sign-in cookie or
#: cleared it, and the component then asks for a run of its own, with the page it was rendered
#: on; a click in between (a page in the sidebar, a form's button) can be overridden by it.
IDLE_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app) return false;
    const state = app.getAttribute('data-test-script-state');
    return !['running', 'rerunRequested', 'stopRequested'].includes(state)
        && !document.querySelector('[data-testid="stStatusWidget"]')
        && !document.querySelector('iframe[title*="cookie_manager"]');
}"""

#: The file names the uploader lists (sorted) and how many are still uploading or failed.
CHIPS_JS = """() => ({
    names: [...document.querySelectorAll('[data-testid="stFileChipName"]')].map(e => e.title).sort(),
    uploading: document.querySelectorAll('[data-testid="stFileChipIconSpinner"]').length,
    errors: document.querySelectorAll('[data-testid="stFileChipIconError"]').length,
})"""

#: True when the uploader lists exactly the given (sorted) file names, none uploading or failed.
UPLOADED_JS = """(names) => {
    if (document.querySelector('[data-testid="stFileChipIconSpinner"], [data-testid="stFileChipIconError"]'))
        return false;
    const shown = [...document.querySelectorAll('[data-testid="stFileChipName"]')].map(e => e.title).sort();
    return JSON.stringify(shown) === JSON.stringify(names);
}"""


def wait_idle(page, timeout: int = LONG) -> None:
    """Wait until Streamlit has finished every script run the page asked for (and none is requested).

    The page's own signs (stApp's ``data-test-script-state``, the status widget) lag behind a
    request: right after a click or an upload they can still say idle while the rerun request
    is on its way. So on a page with a :class:`NetworkLog` (``page.net``) this also waits until
    the last script run that finished came after the last rerun request the page sent (the
    ``rerun_script`` and ``script_finished`` websocket messages).
    """
    net = getattr(page, "net", None)
    page.wait_for_function(IDLE_JS, timeout=timeout)
    if net is None:
        return
    deadline = time.monotonic() + timeout / 1000
    while not (net.runs_done() and page.evaluate(IDLE_JS)):
        if time.monotonic() > deadline:
            raise AssertionError(f"a script run did not finish within {timeout} ms:\n" + "\n".join(net.lines[-30:]))
        page.wait_for_timeout(50)


def wait_for_ai_result(page, timeout: int = LONG) -> None:
    """Wait until the read page shows a finished AI result and the app is idle.

    That is: the "AI result" metric, the Grad-CAM overlay's own caption ("Grad-CAM for
    '<class>' ..."; the "Computing Grad-CAM for slice ..." spinner does not count), the slice's
    probability table, which the page writes after the overlay, and then :func:`wait_idle`.
    """
    page.get_by_text("AI result").first.wait_for(timeout=timeout)
    page.get_by_text(re.compile(r"^Grad-CAM for '")).first.wait_for(timeout=timeout)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=timeout)
    wait_idle(page, timeout)


def text_input(page, label: str):
    """The (first) text or password input labelled ``label``."""
    return page.locator(f'input[aria-label="{label}"]').first


def radio(page, group: str, option: str) -> None:
    """Click ``option`` in the radio group labelled ``group``."""
    page.locator(f'div[role="radiogroup"][aria-label="{group}"]').get_by_text(option, exact=True).click()


def _choose(page, box, option: str, attempts: int) -> None:
    """Open ``box``'s combobox and click ``option``.

    A click that lands while the page is still settling (or while another list is open and takes
    it) can leave the list closed (seen in CI), so the list is opened again, up to ``attempts``
    times; each retry is printed.
    """
    choice = page.get_by_role("option", name=option, exact=True)
    for attempt in range(1, attempts + 1):
        wait_idle(page, timeout=30_000)
        box.get_by_role("combobox").click()
        try:
            choice.wait_for(state="visible", timeout=5_000)
            # the list can close (and its options detach) under the click: seen in CI
            choice.click(timeout=5_000)
        except Exception:
            if attempt == attempts:
                raise
            print(f"E2E_RETRY option {option!r} not shown or detached from the opened list (attempt {attempt}); again")
            page.keyboard.press("Escape")
            continue
        return


def select(page, label: str, option: str, attempts: int = 3) -> None:
    """Choose ``option`` in the selectbox labelled ``label``."""
    box = page.locator('div[data-testid="stSelectbox"]').filter(has_text=label).first
    _choose(page, box, option, attempts)


def multiselect(page, label: str, options: list[str], attempts: int = 3) -> None:
    """Choose ``options`` in the multiselect labelled ``label``, one at a time, closing the list after each."""
    box = page.locator('div[data-testid="stMultiSelect"]').filter(has_text=label).first
    for option in options:
        _choose(page, box, option, attempts)
        page.keyboard.press("Escape")


def mark(page, text: str) -> None:
    """Note a test step in the page's network log (``page.net``, see conftest's ``new_page``), if any."""
    net = getattr(page, "net", None)
    if net is not None:
        net.mark(text)


def nav(page, title: str) -> None:
    """Open the sidebar page ``title`` and wait for its run to finish."""
    wait_idle(page)
    mark(page, f"nav {title}")
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    wait_idle(page)


def create_admin(page, base: str | None, password: str, username: str = "admin",
                 display: str = "Pilot Admin") -> None:
    """On a first run (empty database), create the admin account; returns signed in.

    Loads ``base`` first unless it is None (the first-run page is already shown).
    """
    if base is not None:
        page.goto(base)
    page.get_by_role("button", name="Create admin account").wait_for(timeout=60_000)
    wait_idle(page, timeout=60_000)
    text_input(page, "Username").fill(username)
    text_input(page, "Display name").fill(display)
    text_input(page, "Password").fill(password)
    text_input(page, "Repeat password").fill(password)
    _submit(page, "Create admin account")


#: After a click on a sign-in button: 'in' (signed in), 'error' (the app refused), 'idle' (no run
#: going on and the button still there: the click did nothing), else false.
_SIGN_IN_STATE_JS = """(button) => {
    const main = document.querySelector('[data-testid="stApp"]');
    if (!main) return false;
    if (main.innerText.includes('Signed in as')) return 'in';
    if (document.querySelector('[data-testid="stAlertContentError"], [data-testid="stException"]')) return 'error';
    const state = main.getAttribute('data-test-script-state');
    const idle = !['running', 'rerunRequested', 'stopRequested'].includes(state)
        && !document.querySelector('[data-testid="stStatusWidget"]');
    const still = [...document.querySelectorAll('button')].some(b => b.innerText.trim() === button);
    return idle && still ? 'idle' : false;
}"""


def _submit(page, button: str, attempts: int = 3) -> None:
    """Click the form button ``button`` and wait until signed in ("Signed in as" shown).

    A click whose run ends with the form still there, neither signed in nor an error shown, did
    not reach the app (seen once in CI after a sign-out); it is clicked again, up to
    ``attempts`` times, each retry printed. Raises AssertionError on an error message.
    """
    for attempt in range(1, attempts + 1):
        mark(page, f"click {button!r} attempt {attempt}")
        page.get_by_role("button", name=button).click()
        state = page.wait_for_function(_SIGN_IN_STATE_JS, arg=button, timeout=60_000).json_value()
        if state == "idle":
            # the run may not have started yet: give it the chance to show a change
            try:
                page.get_by_text("Signed in as").first.wait_for(timeout=10_000)
                state = "in"
            except Exception:  # noqa: BLE001 - playwright's TimeoutError
                state = page.wait_for_function(_SIGN_IN_STATE_JS, arg=button, timeout=60_000).json_value()
        if state == "in":
            page.get_by_text("Signed in as").first.wait_for(timeout=30_000)
            wait_idle(page, timeout=60_000)  # and the sign-in cookie written (IDLE_JS)
            return
        if state == "error":
            raise AssertionError(f"{button!r} refused: " + page.locator('[data-testid="stMain"]').inner_text()[:500])
        print(f"E2E_RETRY {button!r}: still not signed in after the click's run finished (attempt {attempt})")
    raise AssertionError(f"{button!r}: not signed in after {attempts} clicks")


def sign_in(page, base: str, username: str, password: str) -> None:
    """Load ``base`` (the sign-in page) and sign in."""
    page.goto(base)
    mark(page, f"sign in {username}")
    page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
    wait_idle(page, timeout=60_000)
    text_input(page, "Username").fill(username)
    text_input(page, "Password").fill(password)
    _submit(page, "Sign in")


def sign_out(page) -> None:
    """Click "Sign out" and wait for the sign-in page and the end of its run."""
    wait_idle(page)
    mark(page, "sign out")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for(timeout=30_000)
    wait_idle(page, timeout=60_000)


def _describe(direction: str, data: bytes) -> tuple[str, str]:
    """The type of a Streamlit websocket message (BackMsg sent, ForwardMsg received) and a
    description: the widget ids of a rerun request, the run's status, how a run finished."""
    try:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg() if direction == "sent" else ForwardMsg()
        msg.ParseFromString(data)
        kind = msg.WhichOneof("type") or "?"
        text = kind
        if kind == "rerun_script":
            ws = msg.rerun_script.widget_states.widgets
            triggers = [w.id.rsplit("-", 1)[-1] for w in ws if w.WhichOneof("value") == "trigger_value"
                        and w.trigger_value]
            text += f"(widgets={len(ws)} triggers={triggers})"
        elif kind == "session_status_changed":
            text += f"(running={msg.session_status_changed.script_is_running})"
        elif kind == "script_finished":
            kind = "script_finished_early" if msg.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN else kind
            text = f"{kind}({msg.script_finished})"
        return kind, text
    except Exception:  # noqa: BLE001 - a frame we cannot read is logged by size only
        return "?", "?"


class NetworkLog:
    """What a page sent and received: upload_file requests and responses, websocket frames.

    Attached with :meth:`attach`; each event is one line ``t=<s since attach> <kind> <detail>``
    in :attr:`lines`. Websocket frames are Streamlit's protobuf messages (BackMsg sent,
    ForwardMsg received), recorded by direction, size, message type and two markers found in
    their bytes: ``urls`` (upload_file URLs, as in a file_urls_response) and ``names`` (a frame
    naming the first of :attr:`watch_names`, e.g. the fileUrlsRequest of an upload). Also
    counts upload_file responses by status and tracks the last rerun request and finished run.
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lines: list[str] = []
        self.watch_names: list[str] = []
        self.upload_ok = 0
        self.upload_bad = 0
        self.urls_responses = 0
        self.ws_closed = 0
        self._seq = 0
        self._last_rerun = 0  # sequence number of the last rerun_script sent
        self._last_finish = 0  # ... of the last script_finished received (not "early for rerun")
        self.files_rerun = 0  # ... of the last rerun_script naming watch_names (an uploader's files)

    def runs_done(self) -> bool:
        """True when the last finished script run came after the last rerun request sent."""
        return self._last_finish > self._last_rerun

    def _log(self, kind: str, detail: str) -> None:
        self.lines.append(f"t={time.monotonic() - self.t0:8.3f} {kind} {detail}")

    def _frame(self, direction: str, payload) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        kind, text = _describe(direction, data)
        self._seq += 1
        if kind == "rerun_script":
            self._last_rerun = self._seq
        elif kind == "script_finished":
            self._last_finish = self._seq
        marks = [text]
        if UPLOAD_PATH.encode() in data:
            marks.append("urls")
            if direction == "recv":
                self.urls_responses += 1
        if any(n.encode() in data for n in self.watch_names):
            marks.append("names")
            if kind == "rerun_script":
                self.files_rerun = self._seq
        self._log(f"ws-{direction}", f"{len(data)} B {' '.join(marks)}")

    def attach(self, page) -> NetworkLog:
        def on_request(req):
            if UPLOAD_PATH in req.url:
                self._log("upload-request", f"{req.method} {req.url.split(UPLOAD_PATH)[1]}")

        def on_response(resp):
            if UPLOAD_PATH in resp.url:
                if 200 <= resp.status < 300:
                    self.upload_ok += 1
                else:
                    self.upload_bad += 1
                self._log("upload-response", f"{resp.status} {resp.url.split(UPLOAD_PATH)[1]}")

        def on_failed(req):
            if UPLOAD_PATH in req.url:
                self.upload_bad += 1
                self._log("upload-failed", f"{req.failure} {req.url.split(UPLOAD_PATH)[1]}")

        def on_websocket(ws):
            self._log("ws-open", ws.url)
            if "/_stcore/stream" in ws.url:  # a (re)connected page asks for a run first
                self._seq += 1
                self._last_rerun = self._seq

            def closed(_ws=None):
                self.ws_closed += 1
                self._log("ws-close", ws.url)

            ws.on("framesent", lambda p: self._frame("sent", p))
            ws.on("framereceived", lambda p: self._frame("recv", p))
            ws.on("close", closed)
            ws.on("socketerror", lambda e: self._log("ws-error", str(e)))

        page.on("request", on_request)
        page.on("response", on_response)
        page.on("requestfailed", on_failed)
        page.on("websocket", on_websocket)
        page.on("framenavigated", lambda f: self._log("navigated", f.url) if f == page.main_frame else None)
        return self

    def mark(self, text: str) -> None:
        """Add a line of the test's own (e.g. "set_input_files")."""
        self._log("test", text)


#: The uploader's state after files were set: 'failed' (a file shows an error), 'listed'
#: (exactly the given names, none uploading), 'empty' (no file shown and no script run going
#: on or asked for), else false (still changing).
_UPLOAD_STATE_JS = """(names) => {
    const app = document.querySelector('[data-testid="stApp"]');
    const state = app && app.getAttribute('data-test-script-state');
    const idle = app && !['running', 'rerunRequested', 'stopRequested'].includes(state)
        && !document.querySelector('[data-testid="stStatusWidget"]')
        && !document.querySelector('iframe[title*="cookie_manager"]');
    const chips = [...document.querySelectorAll('[data-testid="stFileChipName"]')].map(e => e.title).sort();
    if (document.querySelector('[data-testid="stFileChipIconError"]')) return 'failed';
    const busy = document.querySelector('[data-testid="stFileChipIconSpinner"]');
    if (!busy && JSON.stringify(chips) === JSON.stringify(names)) return 'listed';
    if (idle && chips.length === 0) return 'empty';
    return false;
}"""

_ANY_CHIP_JS = "() => document.querySelectorAll('[data-testid=\"stFileChip\"]').length > 0"

#: ms an idle page may show an empty uploader after the files were set before they count as lost:
#: the uploader lists nothing until the server has answered its request for upload URLs (one
#: websocket round trip, well under a second here); a request whose answer never comes leaves
#: no other trace in the page.
LOST_AFTER_MS = 30_000


def upload(page, paths: list[Path], net: NetworkLog | None = None, attempts: int = 3, timeout: int = LONG) -> float:
    """Set ``paths`` on the page's empty file uploader and wait until the app holds them.

    Held means, on the app's state: the uploader lists exactly those file names (none uploading,
    none failed), the script run the upload started has finished, and every upload_file PUT
    since the files were set came back 2xx (``net``, by default ``page.net``, counts them). If the files were lost
    instead (an idle page whose uploader still lists none ``LOST_AFTER_MS`` after they were
    set, or lists none again after the server sent the upload URLs), they are set again, as a
    user would, up to ``attempts`` times; each retry is printed ("E2E_UPLOAD_RETRY") with the
    network events of the lost attempt. Returns the monotonic time at which the uploader first
    listed the files.

    Raises AssertionError when the files are not held after ``attempts``, or when an upload
    failed; playwright's TimeoutError (with the network events added) when the page never
    settles within ``timeout`` ms.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if net is None:
        net = getattr(page, "net", None)
    if net is None:  # a page not from conftest's new_page: record from now on
        net = page.net = NetworkLog().attach(page)
    names = sorted(p.name for p in paths)
    net.watch_names = names[:1]
    for attempt in range(1, attempts + 1):
        start = len(net.lines)
        ok0, bad0, urls0, seq0 = net.upload_ok, net.upload_bad, net.urls_responses, net.files_rerun
        net.mark(f"set_input_files attempt {attempt}: {len(paths)} file(s), first {names[0]}")
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(p) for p in paths])
        try:
            state = page.wait_for_function(_UPLOAD_STATE_JS, arg=names, timeout=timeout).json_value()
            if state == "empty":
                # Nothing listed yet: wait for the uploader to change, or for the loss to be certain.
                try:
                    page.wait_for_function(_ANY_CHIP_JS, timeout=LOST_AFTER_MS, polling=250)
                except PlaywrightTimeout:
                    state = "lost"
                if state != "lost":
                    state = page.wait_for_function(_UPLOAD_STATE_JS, arg=names, timeout=timeout).json_value()
            if state == "listed":
                t_end = time.monotonic()
                # the run the upload asks for: its rerun_script names the files; wait for it to finish
                deadline = time.monotonic() + timeout / 1000
                while net.files_rerun <= seq0 and time.monotonic() < deadline:
                    page.wait_for_timeout(50)
                wait_idle(page, timeout=timeout)
                state = page.wait_for_function(_UPLOAD_STATE_JS, arg=names, timeout=timeout).json_value()
                if state == "listed":
                    for _ in range(50):  # let playwright deliver the last response events
                        if net.upload_ok - ok0 + net.upload_bad - bad0 >= len(paths):
                            break
                        page.wait_for_timeout(100)
                    if net.upload_bad > bad0 or net.upload_ok - ok0 < len(paths):
                        raise AssertionError(f"upload_file: {net.upload_ok - ok0} of {len(paths)} 2xx, "
                                             f"{net.upload_bad - bad0} failed:\n" + "\n".join(net.lines[start:]))
                    net.mark(f"held: {len(paths)} file(s), {net.upload_ok - ok0} upload_file 2xx")
                    return t_end
        except PlaywrightTimeout as exc:
            exc.add_note("network since set_input_files:\n" + "\n".join(net.lines[start:]))
            raise
        if state == "failed":
            raise AssertionError(f"an upload failed in the uploader: {page.evaluate(CHIPS_JS)}\n"
                                 + "\n".join(net.lines[start:]))
        chips = page.evaluate(CHIPS_JS)
        print(f"E2E_UPLOAD_RETRY attempt {attempt} of {attempts}: the uploader shows {len(chips['names'])} of "
              f"{len(names)} file(s) on an idle page ({state}); upload URL responses "
              f"{net.urls_responses - urls0}, upload_file 2xx {net.upload_ok - ok0}; "
              "network since set_input_files:\n  " + "\n  ".join(net.lines[start:]))
    raise AssertionError(f"the uploader did not keep {len(names)} file(s) after {attempts} attempts")
