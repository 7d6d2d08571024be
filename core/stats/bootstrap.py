"""The one bootstrap of LungReview (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993):
percentile intervals from replicates drawn one of two ways.

* Cases independent (e.g. slices of a model evaluation given without patient groups):
  :func:`independent_replicates`, ``scipy.stats.bootstrap`` over the case indices.
* Cases not independent (slices of one patient; the reads of one case by several readers and in
  both phases): :func:`group_counts`, the grouped resampler. Whole groups are drawn with
  replacement, and every row of a group is weighted by how often its group was drawn
  (:func:`grouped_rows` turns the counts into row indices), so all rows of a group, every reader
  and both phases share one draw (a paired design).

:func:`percentile_interval` is the one percentile rule: replicates where a statistic is
undefined (NaN) are left out for that statistic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import bootstrap


def percentile_interval(values: np.ndarray | Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the finite replicates (``numpy.percentile``, linear).

    Args:
        values: float (B,) replicates of one statistic; NaN and infinities are left out.
        level: interval level (0.95 = 95 %).

    Returns:
        (low, high) at ``(1 - level) / 2`` and ``(1 + level) / 2``; (NaN, NaN) when no replicate is finite.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def independent_replicates(statistic: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int,
                           seed: int) -> np.ndarray:
    """Bootstrap replicates of ``statistic`` over n independent cases (``scipy.stats.bootstrap``).

    Args:
        statistic: ``statistic(idx)`` -> float (m,) statistics of the cases ``idx`` (int (n,)
            indices drawn with replacement); NaN where a statistic is undefined for that draw.
        n: number of cases (>= 1). n_boot: replicates (>= 1). seed: seed of the generator.

    Returns:
        float (m, n_boot) replicates, for :func:`percentile_interval` row by row.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about NaN replicates; they are left out later
        res = bootstrap((np.arange(n),), lambda idx: np.atleast_1d(statistic(idx.astype(np.int64))),
                        vectorized=False, n_resamples=int(n_boot), method="percentile",
                        rng=np.random.default_rng(seed))
    return np.atleast_2d(np.asarray(res.bootstrap_distribution, dtype=float))


def group_counts(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each group is drawn in each replicate: float (n_boot, n_groups) multinomial counts.

    Each replicate draws ``n_groups`` groups with replacement (``numpy.random.default_rng(seed)
    .multinomial``); rows of a group are weighted by its count. (0, n_groups) when n_boot is 0
    or there are no groups.
    """
    if not n_groups or not n_boot:
        return np.zeros((0, n_groups))
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=int(n_boot)).astype(float)


def grouped_rows(counts: np.ndarray, members: Sequence[np.ndarray]) -> np.ndarray:
    """Row indices of one grouped replicate: each group's rows repeated by its count.

    Args:
        counts: (n_groups,) counts of one replicate (a row of :func:`group_counts`).
        members: per group, the int indices of its rows.
    """
    parts = [np.tile(m, int(c)) for m, c in zip(members, counts, strict=True) if c]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
