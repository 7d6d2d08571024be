"""Shared inputs of the MRMC tests: the published data sets and small simulated studies."""

from __future__ import annotations

from decimal import Decimal
from functools import cache

import numpy as np
import pandas as pd

from core.config import get_settings
from core.stats import mrmc_io

MRMC_DIR = get_settings().data_dir / "mrmc"


@cache
def vandyke() -> pd.DataFrame:
    """Van Dyke ROC reads (RJafroc dataset02), index = CSV line numbers."""
    return mrmc_io.read_reads(MRMC_DIR / "vandyke_roc.csv")


@cache
def zanca() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Zanca FROC truth and marks (RJafroc dataset04)."""
    return mrmc_io.read_truth(MRMC_DIR / "zanca_froc_truth.csv"), mrmc_io.read_marks(MRMC_DIR / "zanca_froc_marks.csv")


def assert_published(value: float, published: str) -> None:
    """``value`` rounds to the published figure: |value - published| <= half a unit of its last digit."""
    exponent = Decimal(published).as_tuple().exponent
    assert isinstance(exponent, int)
    half_unit = 0.5 * 10.0 ** exponent
    assert abs(value - float(published)) <= half_unit * (1 + 1e-9), (value, published)


def simulated_roc(n_readers: int = 3, n_normal: int = 8, n_abnormal: int = 7, seed: int = 0,
                  treatments: tuple[str, ...] = ("aided", "unaided")) -> pd.DataFrame:
    """A fully crossed ROC study with 1-5 ratings (ties on purpose), one row per read."""
    rng = np.random.default_rng(seed)
    rows = []
    for t_i, t in enumerate(treatments):
        for r in range(1, n_readers + 1):
            for c in range(1, n_normal + n_abnormal + 1):
                truth = int(c > n_normal)
                mean = 2 + 1.2 * truth + 0.3 * truth * (t_i == 0) + 0.2 * r
                rows.append({"reader": r, "treatment": t, "case": c, "truth": truth,
                             "rating": int(np.clip(np.rint(rng.normal(mean, 1.0)), 1, 5))})
    return pd.DataFrame(rows)


def simulated_froc(n_readers: int, n_normal: int, n_abnormal: int, seed: int = 0,
                   treatments: tuple[str, ...] = ("aided", "unaided"),
                   max_lesions: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An FROC study: cases with 1-``max_lesions`` lesions, NL and LL marks rated 1-5, some unmarked."""
    rng = np.random.default_rng(seed)
    truth = [{"case": c, "lesion": 0, "weight": None} for c in range(1, n_normal + 1)]
    lesions = {}
    for c in range(n_normal + 1, n_normal + n_abnormal + 1):
        n = int(rng.integers(1, max_lesions + 1))
        lesions[c] = n
        truth += [{"case": c, "lesion": i, "weight": None} for i in range(1, n + 1)]
    marks = []
    for t_i, t in enumerate(treatments):
        for r in range(1, n_readers + 1):
            for c in range(1, n_normal + n_abnormal + 1):
                for _ in range(int(rng.poisson(0.7))):
                    marks.append({"reader": r, "treatment": t, "case": c, "lesion": 0,
                                  "rating": int(rng.integers(1, 4))})
                for i in range(1, lesions.get(c, 0) + 1):
                    if rng.random() < 0.65 + 0.1 * (t_i == 0):
                        marks.append({"reader": r, "treatment": t, "case": c, "lesion": i,
                                      "rating": int(rng.integers(2, 6))})
    return pd.DataFrame(truth), pd.DataFrame(marks)
