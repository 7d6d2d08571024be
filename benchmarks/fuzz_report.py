"""Fuzz report: run N seeded malformed uploads through ``core.imaging.read_uploads`` and count outcomes.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.fuzz_report [N] [--seed S] [--heavy] [--no-memory]

Prints, as JSON: cases by outcome kind (read, read-with-problems, refused, escaped), the count of each
finding (``escaped:<exception>``, ``slice-not-2d-finite``, ``unplain-message``, ``good-file-lost``,
``duplicate-counted-twice``, ``bad-file-unnamed``, ``intact-zip-member-lost``, ``truncated-called-report``, ``install-a-decoder-hint``, ``slow>10s``,
``memory>2GiB``), the slowest case and the largest traced memory peak. ``--heavy`` adds the
denial-of-service inputs of ``tests.core.imaging.fuzz_inputs.HEAVY`` (``--heavy-only``: only them), each stopped
after ``--alarm`` seconds (default 120; a reader that catches every exception records it as a slow case).
``--mixed-damaged`` runs only ``tests.core.imaging.fuzz_inputs.gen_mixed_damaged`` (one good JPG or series with
damaged ZIPs and undecodable DICOM, issue 24) and adds the share of cases that lost a good file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
import warnings
from collections import Counter


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--heavy", action="store_true", help="add the denial-of-service inputs")
    parser.add_argument("--heavy-only", action="store_true", help="only the denial-of-service inputs")
    parser.add_argument("--alarm", type=int, default=120, help="seconds after which a case is stopped")
    parser.add_argument("--no-memory", action="store_true", help="do not trace memory (faster)")
    parser.add_argument("--mixed-damaged", action="store_true", help="only good files mixed with damaged ones")
    parser.add_argument("--examples", type=int, default=3, help="example cases to print per finding")
    args = parser.parse_args(argv)
    os.environ.setdefault("LUNGREVIEW_STUDY_KEY", "fuzz")
    warnings.simplefilter("ignore")  # pydicom warns about every invalid value it meets
    logging.disable(logging.CRITICAL)  # and logs every failed decode with a traceback
    from tests.core.imaging.fuzz_inputs import HEAVY, gen_mixed_damaged, generate, heavy_case, run_case

    make_light = gen_mixed_damaged if args.mixed_damaged else generate

    rng = random.Random(args.seed)
    kinds: Counter[str] = Counter()
    findings: Counter[str] = Counter()
    by_generator: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    lost_cases = member_lost_cases = 0
    slowest = (0.0, "")
    biggest = (0, "")
    start = time.perf_counter()
    cases = [(f"light#{i}", lambda i=i: make_light(rng, i)) for i in range(args.n)]
    if args.heavy_only:
        cases = []
    if args.heavy or args.heavy_only:
        cases += [(f"heavy:{h}", lambda h=h: heavy_case(h)) for h in HEAVY]
    signal.signal(signal.SIGALRM, _alarm)
    for label, make in cases:
        case = make()
        by_generator[case.kind.split(":")[0] if not case.heavy else "heavy"] += 1
        signal.alarm(args.alarm)
        try:
            outcome = run_case(case, trace_memory=not args.no_memory)
        except _Timeout:
            kinds[f"timeout>{args.alarm}s"] += 1
            findings["slow>10s"] += 1
            examples.setdefault("slow>10s", []).append(label)
            continue
        finally:
            signal.alarm(0)
        kinds[outcome.kind] += 1
        lost_cases += "good-file-lost" in outcome.findings
        member_lost_cases += "intact-zip-member-lost" in outcome.findings
        for f in outcome.findings:
            findings[f] += 1
            if len(examples.setdefault(f, [])) < args.examples:
                examples[f].append(f"{label} {case.kind}")
        if outcome.seconds > slowest[0]:
            slowest = (outcome.seconds, f"{label} {case.kind}")
        if outcome.peak_bytes > biggest[0]:
            biggest = (outcome.peak_bytes, f"{label} {case.kind}")
        if case.heavy:
            print(f"{label}: {outcome.kind} {outcome.findings} {outcome.seconds:.2f} s "
                  f"{outcome.peak_bytes / 2**20:.0f} MiB", file=sys.stderr)
    report = {
        "cases": len(cases),
        "seed": args.seed,
        "generators": dict(by_generator),
        "outcomes": dict(kinds),
        "findings": dict(findings.most_common()),
        "cases_with_a_good_file_lost_pct": round(100 * lost_cases / max(len(cases), 1), 2),
        "cases_with_an_intact_zip_member_lost_pct": round(100 * member_lost_cases / max(len(cases), 1), 2),
        "examples": examples,
        "slowest_case_s": [round(slowest[0], 2), slowest[1]],
        "largest_peak_MiB": [round(biggest[0] / 2**20, 1), biggest[1]],
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
