"""Browser-test fixtures: a real `streamlit run` on 127.0.0.1 and Debian's Chromium via Playwright.

Chromium comes from Debian (`apt-get install chromium`), not from Playwright's own download,
which cannot reach its host here. Without it the browser tests skip, unless
``LUNGREVIEW_REQUIRE_BROWSER=1`` (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import REPO_ROOT
from tests.e2e.helpers import NetworkLog, free_port, streamlit_server

CHROMIUM = os.environ.get("LUNGREVIEW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
SCREENSHOTS = REPO_ROOT / "tests" / "e2e" / "screenshots"
_HERE = Path(__file__).resolve().parent

_free_port = free_port  # the name earlier tests and the benchmarks (benchmarks/warm_path.py) import

#: per test: the server logs of the servers it started, and its open browser pages
_LOGS = pytest.StashKey[list]()
_PAGES = pytest.StashKey[list]()


def _is_e2e(item) -> bool:
    return _HERE in Path(str(item.fspath)).resolve().parents


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
def start_server(request, e2e_dir, chromium_path) -> Callable[..., tuple[str, Path]]:
    """A function ``start(seed=None, extra_env=None) -> (base_url, var_dir)`` that runs the dashboard
    (:func:`tests.e2e.helpers.streamlit_server`) on a new var/ folder with its own SQLite database
    ``var_dir / "e2e.db"``; ``seed(var_dir)`` runs before the server starts. Servers stop at the
    end of the test; their logs (``var_dir / "streamlit.log"``) are saved when it fails.
    """
    logs = request.node.stash.setdefault(_LOGS, [])
    with contextlib.ExitStack() as stack:
        def start(seed: Callable[[Path], None] | None = None,
                  extra_env: dict[str, str] | None = None) -> tuple[str, Path]:
            var = Path(tempfile.mkdtemp(prefix="var-", dir=e2e_dir))
            if seed is not None:
                seed(var)
            logs.append(var / "streamlit.log")
            try:
                base = stack.enter_context(streamlit_server(var, extra_env))
            except RuntimeError as exc:
                pytest.fail(str(exc))
            return base, var

        yield start


@pytest.fixture()  # per test, so that a rerun starts afresh
def app_server(start_server):
    """Start the dashboard with its own empty database; yield (base_url, var_dir); stop it.

    The server's stdout and stderr go to ``var_dir / "streamlit.log"``.
    """
    return start_server()


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def new_page(request, browser) -> Callable[..., object]:
    """A function ``new_page(width=1500, height=1100, context=None)`` returning a page in a new
    browser context (or in ``context``), with its console and network (:class:`NetworkLog`,
    as ``page.net``) recorded. Its contexts are closed at the end of the test; when the test
    fails, a screenshot, the console and the network log of every page are saved first; with
    ``LUNGREVIEW_E2E_NETLOG=<folder>`` every page's network log is kept there, failed or not.
    """
    pages = request.node.stash.setdefault(_PAGES, [])
    contexts = []

    def _new(width: int = 1500, height: int = 1100, context=None):
        if context is None:
            context = browser.new_context(viewport={"width": width, "height": height})
            contexts.append(context)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.net = NetworkLog().attach(page)
        page.console = console
        pages.append(page)
        return page

    yield _new
    if os.environ.get("LUNGREVIEW_E2E_NETLOG"):  # keep every page's network log, e.g. to study a flake
        folder = Path(os.environ["LUNGREVIEW_E2E_NETLOG"])
        folder.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(pages):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
            (folder / f"{name}_{int(time.time())}_page{i}_network.log").write_text("\n".join(page.net.lines) + "\n")
    for ctx in contexts:
        with contextlib.suppress(Exception):
            ctx.close()


@pytest.fixture()
def shot():
    """Save a full-page screenshot under tests/e2e/screenshots/NAME.png; returns the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def _shot(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _shot


def _save_failure_artefacts(item, rep, excinfo) -> list[str]:
    """The error, and the screenshot, DOM, console and network log of each open page, and each
    server log, of a failed test.

    Saved under tests/e2e/screenshots/ as ``zz_failure_<test>_*``; returns one line per file, the
    first one the error itself (a rerun hides the traceback from pytest's summary).
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stem = "zz_failure_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)[:80]
    traceback = SCREENSHOTS / f"{stem}_run{getattr(item, 'execution_count', 1)}_traceback.txt"
    traceback.write_text(rep.longreprtext + "\n")
    where = "?"
    if excinfo is not None:
        ours = [e for e in excinfo.traceback if Path(str(e.path)).resolve().is_relative_to(_HERE.parent)]
        if ours:
            where = f"{Path(str(ours[-1].path)).name}:{ours[-1].lineno + 1}"
    message = excinfo.exconly().splitlines()[0][:300] if excinfo is not None else "(see traceback)"
    lines = [f"error: {message} at {where}; traceback: {traceback}"]
    for i, page in enumerate(item.stash.get(_PAGES, [])):
        if page.is_closed():
            continue
        picture = SCREENSHOTS / f"{stem}_page{i}.png"
        try:
            page.screenshot(path=str(picture), full_page=True, timeout=30_000)
            lines.append(f"screenshot: {picture}")
        except Exception as exc:  # noqa: BLE001 - the page may be broken; the logs still matter
            lines.append(f"no screenshot of page {i}: {exc}")
        with contextlib.suppress(Exception):  # the page's DOM: the screenshot shows the viewport only
            (SCREENSHOTS / f"{stem}_page{i}.html").write_text(page.content())
        (SCREENSHOTS / f"{stem}_page{i}_console.log").write_text("\n".join(page.console) + "\n")
        (SCREENSHOTS / f"{stem}_page{i}_network.log").write_text("\n".join(page.net.lines) + "\n")
        lines.append(f"browser console and network: {SCREENSHOTS / f'{stem}_page{i}_*.log'}")
    for i, log in enumerate(item.stash.get(_LOGS, [])):
        if log.exists():
            saved = SCREENSHOTS / f"{stem}_server{i}_streamlit.log"
            shutil.copyfile(log, saved)
            lines.append(f"server log: {saved}")
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed browser test (while its pages and servers still run), save its artefacts and
    name them in the report ("e2e failure artefacts" section, also printed as E2E_FAILURE)."""
    rep = yield
    if rep.failed and rep.when in ("setup", "call") and _is_e2e(item):
        lines = _save_failure_artefacts(item, rep, call.excinfo)
        rep.sections.append(("e2e failure artefacts", "\n".join(lines)))
        print("\nE2E_FAILURE " + "; ".join(lines))
    return rep


def pytest_collection_modifyitems(config, items):
    """Browser tests are run again, at most twice, when they fail (pytest-rerunfailures).

    Every wait in them is on the app's state; see docs/testing.md for why a rerun is kept. pytest
    reports each rerun ("R" and "rerun" in the summary), so a flaky run stays visible. Without
    the plugin (``-p no:rerunfailures``) nothing is added.
    """
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    for item in items:
        if _is_e2e(item):
            item.add_marker(pytest.mark.flaky(reruns=2))
