"""Summary of System Usability Scale scores (the questionnaire and the score: ``core.domain``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def sus_interval(scores: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean SUS score.

    ``mean +- t((1 + level) / 2, n - 1) * sd / sqrt(n)`` with the sample sd (ddof=1),
    ``scipy.stats.t``.

    Returns:
        (low, high); (NaN, NaN) for fewer than 2 scores. Not clipped to 0-100.
    """
    x = np.asarray(scores, dtype=float)
    if x.size < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)
