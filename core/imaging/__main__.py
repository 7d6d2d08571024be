"""CLI: ``lungreview imaging PATH...`` (also ``python -m core.imaging PATH...``) prints one JSON
document: the de-identified summary of every series read, and the problems."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from core.imaging.errors import ImagingError
from core.imaging.reader import read_paths
from core.imaging.summary import summarize


def run(argv: Sequence[str] | None = None) -> int:
    """Read the paths in ``argv`` (default ``sys.argv[1:]``) and print the JSON document to stdout.

    Returns:
        0 when at least one series was read, 2 when nothing was (or no path was given).
    """
    parser = argparse.ArgumentParser(prog="python -m core.imaging", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", metavar="PATH", help="DICOM files, folders, ZIPs, JPG/PNG")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv)).paths
    if not args:
        parser.print_usage(sys.stderr)
        return 2
    try:
        result = read_paths(args)
    except ImagingError as exc:
        problems = [{"name": "(all)", "error": type(exc).__name__, "message": str(exc)}]
        print(json.dumps({"series": [], "problems": problems}, indent=2, ensure_ascii=False))
        return 2
    out = {
        "series": [summarize(s) for s in result.series],
        "problems": [
            {"name": p.name, "error": type(p.error).__name__, "message": p.message} for p in result.problems
        ],
        "skipped": len(result.skipped),
        "duplicates": result.duplicates,
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0 if out["series"] else 2


if __name__ == "__main__":
    raise SystemExit(run())
