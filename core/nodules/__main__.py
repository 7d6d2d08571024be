"""CLI: ``python -m core.nodules PATH...`` (console script ``lungreview-nodules``).

Reads one CT series (a folder, a ZIP or files; :func:`core.imaging.read_series`), finds its
nodules (:func:`core.nodules.detect_nodules`) and prints a table; ``--json`` prints only the JSON
list (one object per nodule) on stdout; ``--out PNG`` writes a contact sheet
(:func:`core.nodules.sheet.contact_sheet`). Warnings and progress go to stderr. Exit codes: 0
done (also with no nodules), 2 wrong input (unreadable files, several series, not a CT volume, no
detector registered).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

#: Keys of each JSON object, in order (the contract of ``--json``).
JSON_KEYS = (
    "rank", "centre_mm", "centre_voxel", "diameter_mm", "p_nodule", "malignancy", "lobulation",
    "spiculation", "slice_index", "is_mass",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lungreview-nodules",
        description="Find lung nodules in one CT series with the LUNA16-trained 3-D detector (research use only).",
    )
    p.add_argument("paths", nargs="+", type=Path, help="the series: a folder, a ZIP or DICOM files")
    p.add_argument("--json", action="store_true", help="print only the JSON list of nodules on stdout")
    p.add_argument("--out", type=Path, default=None, help="write a PNG contact sheet (one crop per nodule)")
    p.add_argument("--min-score", type=float, default=None,
                   help="report nodules with p_nodule at least this (default: the detector's 0.5)")
    p.add_argument("--model", default=None, help="registry id of the detector (default: the registered one)")
    return p


def _json_row(d: dict) -> dict:
    row = {k: d[k] for k in JSON_KEYS}
    row["centre_mm"] = [None if not math.isfinite(v) else round(v, 2) for v in row["centre_mm"]]
    return row


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), detect, print; see the module docstring.

    Returns:
        0 on success, 2 on wrong input (message on stderr).
    """
    args = _parser().parse_args(argv)
    from core.imaging import read_series
    from core.imaging.errors import ImagingError
    from core.nodules.detector import DetectorConfig, detect_nodules, load_detector
    from core.nodules.types import NotAVolumeError
    from core.nodules.volume import check_volume
    from core.registry import RegistryError

    def err(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
        return err(f"--min-score must lie in [0, 1], got {args.min_score}")
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        return err(f"no such file or folder: {', '.join(missing)}")
    t0 = time.perf_counter()
    try:
        series = read_series(args.paths)
    except ImagingError as exc:
        return err(str(exc))
    cfg = DetectorConfig() if args.min_score is None else replace(DetectorConfig(), min_score=args.min_score)
    stats: dict = {}
    try:
        check_volume(series)  # refuse before loading the network
        detector = load_detector(args.model)
        nodules = detect_nodules(series, detector, cfg, stats)
    except NotAVolumeError as exc:
        return err(str(exc))
    except RegistryError as exc:
        return err(str(exc))
    for w in stats.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    rows = [_json_row(n.to_dict()) for n in nodules]
    if args.json:
        print(json.dumps(rows, allow_nan=False))
    else:
        print(f"{len(nodules)} nodule(s) with p >= {cfg.min_score:g} in {series.description} "
              f"({len(series.slices)} slices); research use only, not a diagnosis")
        if rows:
            print(f"{'rank':>4} {'slice':>5} {'x mm':>8} {'y mm':>8} {'z mm':>8} {'diam mm':>8} {'p':>6} "
                  f"{'malig':>5} kind")
            for r in rows:
                x, y, z = (f"{v:8.1f}" if v is not None else f"{'?':>8}" for v in r["centre_mm"])
                kind = "mass" if r["is_mass"] else "nodule"
                print(f"{r['rank']:>4} {r['slice_index']:>5} {x} {y} {z} {r['diameter_mm']:8.1f} "
                      f"{r['p_nodule']:6.3f} {r['malignancy']:5.1f} {kind}")
    if args.out is not None:
        from core.nodules.sheet import contact_sheet

        try:
            contact_sheet(series, nodules, args.out)
        except OSError as exc:
            return err(f"cannot write {args.out}: {exc}")
        print(f"contact sheet written to {args.out}", file=sys.stderr)
    print(f"{time.perf_counter() - t0:.1f} s ({detector.runtime})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
