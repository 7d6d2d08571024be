"""core.stats.bootstrap: the percentile rule, the grouped resampler and scipy's independent bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.stats.bootstrap import group_counts, grouped_rows, independent_replicates, percentile_interval


def test_the_percentile_interval_leaves_undefined_replicates_out():
    values = np.array([np.nan, *range(101), np.inf])
    assert percentile_interval(values, 0.9) == pytest.approx((5.0, 95.0))
    assert all(math.isnan(v) for v in percentile_interval([np.nan, np.nan]))


def test_each_grouped_replicate_draws_as_many_groups_as_there_are():
    counts = group_counts(7, 500, seed=3)
    assert counts.shape == (500, 7) and (counts.sum(axis=1) == 7).all()
    assert counts.mean() == pytest.approx(1.0, abs=0.05)  # each group is drawn once per replicate on average
    np.testing.assert_array_equal(counts, group_counts(7, 500, seed=3))
    assert group_counts(7, 0, seed=3).shape == (0, 7) and group_counts(0, 10, seed=3).shape == (0, 0)


def test_grouped_rows_repeat_every_row_of_a_group_by_its_count():
    members = [np.array([0, 1]), np.array([2]), np.array([3, 4, 5])]
    assert grouped_rows(np.array([2, 0, 1]), members).tolist() == [0, 1, 0, 1, 3, 4, 5]
    assert grouped_rows(np.array([0, 0, 0]), members).size == 0


def test_independent_replicates_of_a_mean_spread_like_its_standard_error():
    x = np.random.default_rng(0).normal(10.0, 2.0, 400)
    reps = independent_replicates(lambda idx: np.array([x[idx].mean(), np.nan]), x.size, 2000, seed=1)
    assert reps.shape == (2, 2000) and np.isnan(reps[1]).all()
    assert reps[0].std() == pytest.approx(x.std(ddof=1) / math.sqrt(x.size), rel=0.1)
    lo, hi = percentile_interval(reps[0])
    assert lo < x.mean() < hi
    np.testing.assert_array_equal(reps, independent_replicates(
        lambda idx: np.array([x[idx].mean(), np.nan]), x.size, 2000, seed=1))
