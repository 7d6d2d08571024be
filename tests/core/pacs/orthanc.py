"""A real PACS for tests: Debian's Orthanc with its DICOMweb plugin, on 127.0.0.1, on free ports.

Orthanc comes from Debian (``apt-get install orthanc orthanc-dicomweb``). Without it the PACS
tests skip, unless ``LUNGREVIEW_REQUIRE_PACS=1`` (set by .ci/run), where they fail instead.

Each server gets its own configuration (a temporary storage and index folder, the DICOMweb
plugin on, remote access off, HTTP basic authentication on with one test user), so nothing of
the system-wide Orthanc (``/etc/orthanc``) is used or touched. Import the fixtures into a test
module with ``from tests.core.pacs.orthanc import orthanc  # noqa: F401``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ORTHANC = os.environ.get("LUNGREVIEW_ORTHANC", "/usr/sbin/Orthanc")
#: Where Debian's orthanc-dicomweb puts the plugin (``dpkg -L orthanc-dicomweb``).
DICOMWEB_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
TEST_USER = "lungreview-test"
TEST_PASSWORD = "not-a-real-secret-7f3a"


@dataclass
class OrthancServer:
    """A running test Orthanc: its base URL, DICOMweb root, credentials and process."""

    base_url: str
    dicomweb_url: str
    user: str
    password: str
    dicom_port: int
    proc: subprocess.Popen
    workdir: Path

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        """Orthanc's own REST API (not DICOMweb), authenticated, for test set-up and checks."""
        r = requests.request(method, self.base_url + path, auth=(self.user, self.password), timeout=30, **kwargs)
        r.raise_for_status()
        return r

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 20 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plugin_path() -> Path | None:
    for folder in DICOMWEB_PLUGIN_DIRS:
        for p in sorted(Path(folder).glob("libOrthancDicomWeb.so*")):
            return p
    return None


def orthanc_available() -> str | None:
    """None when Orthanc and its DICOMweb plugin are installed, else why not."""
    if not (Path(ORTHANC).exists() or shutil.which(ORTHANC)):
        return f"Orthanc not found at {ORTHANC}: apt-get install orthanc orthanc-dicomweb"
    if _plugin_path() is None:
        return "Orthanc's DICOMweb plugin not found: apt-get install orthanc-dicomweb"
    return None


def skip_or_fail_without_orthanc() -> None:
    """Skip the test when Orthanc is missing, or fail when ``LUNGREVIEW_REQUIRE_PACS=1``."""
    why = orthanc_available()
    if why:
        if os.environ.get("LUNGREVIEW_REQUIRE_PACS") == "1":
            pytest.fail(why)
        pytest.skip(why)


def start_orthanc(workdir: Path, startup_s: float = 60.0) -> OrthancServer:
    """Start Orthanc with a configuration of ours in ``workdir``; return once /system answers.

    Raises:
        RuntimeError: Orthanc exited at start or did not answer within ``startup_s`` seconds.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "LungReviewTest",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "TemporaryDirectory": str(workdir / "tmp"),
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "DicomServerEnabled": True,
        "DicomPort": dicom_port,
        "DicomAet": "LRTEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {TEST_USER: TEST_PASSWORD},
        "Plugins": [str(_plugin_path())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "StudiesMetadata": "Full",
                     "SeriesMetadata": "Full"},
        "StorageCompression": False,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 8,
    }
    (workdir / "tmp").mkdir(exist_ok=True)
    cfg = workdir / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = open(workdir / "orthanc.log", "w")  # noqa: SIM115 - closed when the process ends
    proc = subprocess.Popen([ORTHANC, str(cfg)], cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError("Orthanc exited at start:\n" + (workdir / "orthanc.log").read_text()[-3000:])
        try:
            r = requests.get(base + "/system", auth=(TEST_USER, TEST_PASSWORD), timeout=2)
            if r.status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError(f"Orthanc did not answer /system within {startup_s:.0f} s")
    return OrthancServer(base, base + "/dicom-web", TEST_USER, TEST_PASSWORD, dicom_port, proc, workdir)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A test Orthanc for the module (empty at start); stopped afterwards."""
    skip_or_fail_without_orthanc()
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        server.stop()
