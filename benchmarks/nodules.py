"""Benchmark: one 300-slice 512 x 512 CT series, files to nodule list, by stage, with peak memory.

``python -m benchmarks.nodules [--slices 300] [--spacing 1.0] [--keep DIR]``

The series is built from the shared LIDC-IDRI-0001 files (``LUNGREVIEW_DATA_DIR``): its 133
slices are used in order, then in reverse, and so on, until there are ``--slices`` of them; each
copy gets a new SOPInstanceUID, InstanceNumber and an Image Position (Patient) ``--spacing`` mm
below the previous one, so the series reads as one regular volume (pydicom writes the files to a
temporary folder). A fresh Python process then reads the files (``core.imaging.read_series``)
and runs :func:`core.nodules.detect_nodules`, timing each stage (decode, resample, mask,
candidates, network, suppression; the detector is loaded and warmed on one cube first, its load
time reported apart), and reports its peak resident memory (``resource.getrusage`` maxrss of
that process). The figures go to docs/nodules.md with the load average printed here; this is
never a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

#: Aims of the issue: files to nodule list within 30 s on 2 cores, memory under 3 GiB.
AIM_SECONDS = 30.0
AIM_PEAK_GIB = 3.0


def build_series(out: Path, n_slices: int = 300, spacing_mm: float = 1.0) -> Path:
    """Write an ``n_slices`` DICOM series into ``out`` from the shared LIDC-IDRI-0001 slices.

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: the shared LIDC-IDRI-0001 series is not under the data directory.
    """
    import pydicom
    from pydicom.uid import generate_uid

    from core.settings import get_settings

    folders = sorted(get_settings().data_dir.glob("lidc-idri/LIDC-IDRI-0001/*/*"))
    if not folders:
        raise FileNotFoundError("LIDC-IDRI-0001 not found under LUNGREVIEW_DATA_DIR/lidc-idri")
    files = []
    for f in sorted(folders[0].glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        files.append((float(ds.ImagePositionPatient[2]), f))
    files = [f for _, f in sorted(files, reverse=True)]  # head first
    order = []
    forward = True
    while len(order) < n_slices:
        order.extend(files if forward else files[::-1])
        forward = not forward
    out.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    first = pydicom.dcmread(files[0])
    x0, y0, z0 = (float(v) for v in first.ImagePositionPatient)
    for i, f in enumerate(order[:n_slices]):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [x0, y0, z0 - i * spacing_mm]
        ds.SliceLocation = z0 - i * spacing_mm
        ds.SliceThickness = spacing_mm
        ds.save_as(out / f"{i + 1:06d}.dcm")
    return out


def child(folder: Path) -> dict:
    """Time files -> nodules in this process (run in a fresh process by :func:`main`)."""
    import resource

    import numpy as np

    from core.imaging import read_series
    from core.nodules.detector import detect_nodules, load_detector, score_cubes

    t = time.perf_counter()
    det = load_detector()
    score_cubes(det, np.full((64, 64, 64), -1000.0, dtype=np.float32), np.array([[32, 32, 32]]))
    load_s = time.perf_counter() - t
    t0 = time.perf_counter()
    series = read_series(folder)
    decode_s = time.perf_counter() - t0
    stats: dict = {}
    nodules = detect_nodules(series, det, stats=stats)
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "slices": len(series.slices),
        "matrix": list(series.slices[0].shape),
        "spacing_mm": list(series.spacing_mm),
        "runtime": det.runtime_note,
        "detector_load_and_warm_s": round(load_s, 2),
        "stages_s": {
            "decode": round(decode_s, 2),
            **{k[:-2]: round(stats[k], 2) for k in ("resample_s", "mask_s", "candidates_s", "network_s",
                                                     "suppression_s")},
        },
        "files_to_nodules_s": round(total, 2),
        "cubes": stats.get("cubes"),
        "nodules_reported": len(nodules),
        "peak_rss_gib": round(peak / 2**30, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; prints the JSON figures and the aims. Returns 0, or 2 when the data is missing."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.nodules", description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--spacing", type=float, default=1.0, help="slice spacing of the built series (mm)")
    ap.add_argument("--keep", type=Path, default=None, help="build the series here and keep it")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    with tempfile.TemporaryDirectory(prefix="lungreview_bench_") as tmp:
        folder = args.keep or Path(tmp) / "series"
        try:
            if not (folder.is_dir() and len(list(folder.glob("*.dcm"))) == args.slices):
                build_series(folder, args.slices, args.spacing)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        load_before = os.getloadavg()
        proc = subprocess.run([sys.executable, "-m", "benchmarks.nodules", "--child", str(folder)],
                              capture_output=True, text=True, check=False)
        load_after = os.getloadavg()
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["load_average_before"] = [round(v, 2) for v in load_before]
    figures["load_average_after"] = [round(v, 2) for v in load_after]
    figures["cpus"] = os.cpu_count()
    print(json.dumps(figures, indent=1))
    ok_t = figures["files_to_nodules_s"] <= AIM_SECONDS
    ok_m = figures["peak_rss_gib"] < AIM_PEAK_GIB
    print(f"files to nodule list: {figures['files_to_nodules_s']} s (aim <= {AIM_SECONDS:g} s: "
          f"{'met' if ok_t else 'NOT met'}); peak memory {figures['peak_rss_gib']} GiB (aim < {AIM_PEAK_GIB:g} GiB: "
          f"{'met' if ok_m else 'NOT met'}); load average {figures['load_average_before']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
