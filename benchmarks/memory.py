"""Measure the dashboard server's memory with three readers, each holding a 300-slice study.

Run from the repository root with the venv's python (not a pytest test)::

    python -m benchmarks.memory [--json] [--port N] [--slices 300] [--tabs 3]

Starts the server as benchmarks/warm_path.py does (conftest's ``app_server``: temporary
var/ and SQLite database), creates the first admin, and opens THREE browser contexts (three
Streamlit sessions, each signed in, each left open on its result). Each uploads its own ZIP of
one 300-slice DICOM series (benchmarks/data.py: the TCIA slices repeated; study k has its
own Study/Series/SOP UIDs, so its bytes and content hash differ and it is analysed anew), clicks
"Analyse with AI" and waits for the Grad-CAM image. The server's resident memory (RSS: the
``streamlit run`` process and all its descendants, from psutil when installed, else
``/proc/<pid>/status`` VmRSS) is read when it is stable (polled once a second until three
readings in a row lie within 2 MB, at most 90 s): at the baseline (server started, the first
page loaded and signed in, before any model was loaded), after each tab's heatmap, and at the
end (after the last tab, every tab still open, each page idle). Prints each, and the increase
per tab in MB; tab 1's increase includes loading TensorFlow and the model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.data import make_series_zip
from benchmarks.warm_path import (
    chromium,
    commit,
    create_first_admin,
    dashboard_server,
    open_read_page,
    report_failure,
    sign_in,
    upload_and_analyse,
    wait_idle,
)

MB = 1024 * 1024


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` from /proc/<pid>/task/*/children (Linux)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(v) for v in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size in bytes of ``pid`` and all its descendants (psutil, else /proc VmRSS)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024  # kB
        except OSError:
            continue
    return total


def stable_rss(pid: int, tolerance_mb: float = 2.0, limit_s: float = 90.0) -> tuple[float, float]:
    """RSS in MB once three readings a second apart lie within ``tolerance_mb``; (MB, seconds waited)."""
    t0 = time.monotonic()
    readings = [rss_bytes(pid) / MB]
    while time.monotonic() - t0 < limit_s:
        time.sleep(1.0)  # the sampling interval of the poll, not a wait for the app
        readings.append(rss_bytes(pid) / MB)
        last = readings[-3:]
        if len(last) == 3 and max(last) - min(last) <= tolerance_mb:
            break
    return readings[-1], time.monotonic() - t0


def server_pid(port: int | None, base: str) -> int:
    """The pid of our ``streamlit run`` child serving ``base``."""
    port = port or int(base.rsplit(":", 1)[1])
    for pid in _children(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in cmd and str(port).encode() in cmd:
            return pid
    raise RuntimeError(f"no streamlit child of {os.getpid()} on port {port}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--tabs", type=int, default=3)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lungreview-bench-mem-"))
    try:
        return _measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, work: Path) -> int:
    """Make the inputs under ``work``, start the server and browser, measure, print; 0."""
    started = time.monotonic()
    load_before = os.getloadavg()
    zips = [make_series_zip(work / f"study{k}_{args.slices}.zip", args.slices, study_no=100 + k)
            for k in range(1, args.tabs + 1)]
    rows: list[dict] = []
    log_copy = Path(tempfile.gettempdir()) / "bench_memory_streamlit.log"
    with dashboard_server(args.port, log_copy) as (base, var), chromium() as browser:
        pid = server_pid(args.port, base)
        contexts, pages = [], []
        page = None
        try:
            for _ in range(args.tabs):
                ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
                contexts.append(ctx)
                pages.append(ctx.new_page())
            page = pages[0]
            create_first_admin(page, base)
            open_read_page(page, base)
            mb, waited = stable_rss(pid)
            rows.append({"when": "baseline (server started, page loaded, signed in)", "rss_mb": round(mb, 1),
                         "settle_s": round(waited, 1)})
            for k, (page, zip_path) in enumerate(zip(pages, zips, strict=True), start=1):
                if k > 1:
                    sign_in(page, base)
                t0 = time.monotonic()
                marks = upload_and_analyse(page, base, [zip_path])
                mb, waited = stable_rss(pid)
                rows.append({"when": f"after tab {k} ({zip_path.name}, {zip_path.stat().st_size / 1e6:.0f} MB)",
                             "rss_mb": round(mb, 1), "settle_s": round(waited, 1),
                             "upload_to_heatmap_s": round(marks["heatmap"], 1),
                             "tab_s": round(time.monotonic() - t0, 1)})
            for page in pages:
                wait_idle(page)
            mb, waited = stable_rss(pid)
            rows.append({"when": f"final ({args.tabs} tabs open, idle)", "rss_mb": round(mb, 1),
                         "settle_s": round(waited, 1)})
        except Exception as exc:
            report_failure(page, var, exc)
            raise
        finally:
            for ctx in contexts:
                ctx.close()
    for prev, row in zip(rows, rows[1:], strict=False):
        row["increase_mb"] = round(row["rss_mb"] - prev["rss_mb"], 1)
    load_after = os.getloadavg()
    result = {
        "commit": commit(),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after],
        "cpus": os.cpu_count(),
        "slices_per_study": args.slices,
        "rss_source": "psutil" if _has_psutil() else "/proc VmRSS (server + descendants)",
        "rows": rows,
        "per_tab_increase_mb": [r["increase_mb"] for r in rows[1:1 + args.tabs]],
        "run_s": round(time.monotonic() - started, 1),
    }
    print(f"commit {result['commit']}  cpus {result['cpus']}  load average (1/5/15 min) "
          f"before {result['load_before']} after {result['load_after']}  RSS from {result['rss_source']}")
    print(f"{'RSS MB':>8} {'+MB':>8} {'settle s':>8}  when")
    for r in rows:
        inc = f"{r['increase_mb']:+.1f}" if "increase_mb" in r else ""
        extra = f"  (upload end -> heatmap {r['upload_to_heatmap_s']} s)" if "upload_to_heatmap_s" in r else ""
        print(f"{r['rss_mb']:>8.1f} {inc:>8} {r['settle_s']:>8.1f}  {r['when']}{extra}")
    print(f"per-tab increase MB: {result['per_tab_increase_mb']} (tab 1 includes loading TensorFlow and the model)")
    print(f"run took {result['run_s']} s; server log: {log_copy}")
    if args.json:
        print(json.dumps(result))
    return 0


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
