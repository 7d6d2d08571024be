"""Benchmark of the MRMC analysis: ``python -m core.stats.bench_mrmc [--repeat N]``.

A simulated FROC study of 10 readers x 200 cases (100 without, 100 with 1-3 lesions) x 2
treatments: checking the tables (:func:`core.stats.mrmc.froc_data`), wAFROC with the case
jackknife and the Obuchowski-Rockette-Hillis tests (:func:`core.stats.mrmc.analyse_data`), and
the sample-size grid (3-15 readers x 50-500 cases, plus the smallest K for each J up to 2000
cases). Prints the median and minimum wall time of each part over the repeats and the load
average; the figures go to docs/mrmc.md. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.stats import mrmc, sample_size


def simulate(n_readers: int = 10, n_normal: int = 100, n_abnormal: int = 100, seed: int = 0,
             treatments: Sequence[str] = ("unaided", "aided")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Truth (1-3 lesions per case with lesions) and marks (Poisson NL marks, 60-70 % of lesions marked)."""
    rng = np.random.default_rng(seed)
    n_les = rng.integers(1, 4, n_abnormal)
    truth = pd.DataFrame({
        "case": np.concatenate([np.arange(1, n_normal + 1), np.repeat(np.arange(n_normal + 1, n_normal + n_abnormal + 1),
                                                                       n_les)]),
        "lesion": np.concatenate([np.zeros(n_normal, int), np.concatenate([np.arange(1, n + 1) for n in n_les])]),
    })
    lesion_case = truth.loc[truth["lesion"] > 0, "case"].to_numpy()
    lesion_id = truth.loc[truth["lesion"] > 0, "lesion"].to_numpy()
    parts = []
    cases = np.arange(1, n_normal + n_abnormal + 1)
    for t_i, t in enumerate(treatments):
        for r in range(1, n_readers + 1):
            n_nl = rng.poisson(0.8, cases.size)
            nl_case = np.repeat(cases, n_nl)
            parts.append(pd.DataFrame({"reader": r, "treatment": t, "case": nl_case, "lesion": 0,
                                       "rating": rng.integers(1, 4, nl_case.size)}))
            hit = rng.random(lesion_case.size) < 0.6 + 0.1 * t_i
            parts.append(pd.DataFrame({"reader": r, "treatment": t, "case": lesion_case[hit], "lesion": lesion_id[hit],
                                       "rating": rng.integers(2, 6, int(hit.sum()))}))
    return truth, pd.concat(parts, ignore_index=True)


def _time(fn, repeat: int) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(min(times)), out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one line per part; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m core.stats.bench_mrmc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="repeats per part (default 7)")
    args = parser.parse_args(argv)
    truth, marks = simulate()
    prep, prep_min, data = _time(lambda: mrmc.froc_data(truth, marks), args.repeat)
    analysis, analysis_min, result = _time(lambda: mrmc.analyse_data(data), args.repeat)
    grid, grid_min, size = _time(lambda: sample_size.from_result(result), args.repeat)
    print(f"data: {len(data.readers)} readers x {len(data.normal_cases) + len(data.abnormal_cases)} cases x "
          f"{len(data.treatments)} treatments, {data.ll.shape[-1]} lesions, {len(marks)} marks")
    print(f"check tables (froc_data):            median {prep:.3f} s  min {prep_min:.3f} s")
    print(f"wAFROC + jackknife + OR-Hillis tests: median {analysis:.3f} s  min {analysis_min:.3f} s")
    print(f"sample-size grid + smallest designs:  median {grid:.3f} s  min {grid_min:.3f} s")
    print(f"total (medians): {prep + analysis + grid:.3f} s; F = {result.random.f:.3f}, p = {result.random.p:.3g}, "
          f"smallest design {size.smallest}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; CPUs: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
