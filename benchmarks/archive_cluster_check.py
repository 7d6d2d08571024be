"""Manual check of the cluster path (not collected by pytest): ``ray start --head --block`` as a Ray cluster
of one machine, then ``python -m services.archive run`` joining it with ``LUNGREVIEW_RAY_ADDRESS``.

It starts a test Orthanc with the Lung-PET-CT-Dx study, a Ray head in its own process group (its
workers inherit the PACS credentials and study-key secret from the head's environment, as on a
cluster node), runs the command with ``RAY_AUTH_MODE=token`` (``ray start`` turns token
authentication on; the token is the machine's ``~/.ray/auth_token``), and ends the head by its
process group. Prints the command's exit code and output::

    PYTHONPATH=$PWD python -m benchmarks.archive_cluster_check
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    from core.pacs.dicomweb import PacsClient
    from core.settings import get_settings
    from tests.core.pacs.orthanc import TEST_PASSWORD, TEST_USER, start_orthanc

    tmp = Path(tempfile.mkdtemp(prefix="archive-cluster-"))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, LUNGREVIEW_DICOMWEB_USER=TEST_USER, LUNGREVIEW_DICOMWEB_PASSWORD=TEST_PASSWORD,
               LUNGREVIEW_STUDY_KEY="cluster-check", LUNGREVIEW_VAR_DIR=str(tmp / "var"),
               LUNGREVIEW_DB_URL=f"sqlite:///{tmp / 'cluster.db'}", PYTHONPATH=os.getcwd())
    server = start_orthanc(tmp / "orthanc")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "head.log", "w")  # noqa: SIM115 - closed with the process
    head = subprocess.Popen([str(bin_dir / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"], env=env,
                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = PacsClient(server.dicomweb_url, TEST_USER, TEST_PASSWORD)
        files = sorted((get_settings().data_dir / "lung-pet-ct-dx" / "Lung_Dx-A0002").rglob("*.dcm"))
        for i in range(0, len(files), 25):
            client.store_bytes(p.read_bytes() for p in files[i:i + 25])
        time.sleep(8)  # the head's start-up
        t0 = time.time()
        run = subprocess.run([sys.executable, "-m", "services.archive", "run", "--models", "basic_cnn_v1", "--pacs",
                              server.dicomweb_url],
                             env=dict(env, LUNGREVIEW_RAY_ADDRESS=f"127.0.0.1:{port}", RAY_AUTH_MODE="token"),
                             capture_output=True, text=True, timeout=400)
        print(f"exit {run.returncode} after {time.time() - t0:.1f} s\n{run.stdout}\n{run.stderr[-2000:]}")
        return run.returncode
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and the Ray processes it started, nothing else
        head.wait(timeout=60)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
