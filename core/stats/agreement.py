"""Agreement between raters: Cohen's kappa (two raters, one place for the whole project) and
Fleiss' kappa (several raters per subject).

* Cohen J. "A coefficient of agreement for nominal scales", Educ Psychol Meas 20:37-46, 1960;
  weighted: Cohen J. "Weighted kappa", Psychol Bull 70:213-220, 1968. Computed by
  ``sklearn.metrics.cohen_kappa_score`` with the class order of ``core.domain.CLASS_NAMES``
  (normal < benign < malignant: the order linear weights use).
* Fleiss JL. "Measuring nominal scale agreement among many raters", Psychol Bull 76(5):378-382,
  1971 (no maintained Python package is a dependency here; the formula is a few lines).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import cohen_kappa_score

from core.domain import CLASS_NAMES


class AgreementError(ValueError):
    """A table that Fleiss' kappa cannot be computed from; the message says what is wrong."""


def cohen_kappa(a: Sequence[str], b: Sequence[str], *, weights: str | None = None,
                labels: Sequence[str] = CLASS_NAMES) -> float:
    """Cohen's kappa between two reads of the same cases.

    Args:
        a, b: equal-length sequences of labels (e.g. Finding values: the reader's and the AI's).
        weights: None (unweighted) or "linear" (disagreement weight ``|i - j|`` in ``labels`` order).
        labels: the label order (default normal, benign, malignant).

    Returns:
        float kappa in [-1, 1]; NaN with fewer than 2 cases or when chance agreement is 1 (both
        raters used one and the same class only), where kappa is undefined.
    """
    if len(a) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RuntimeWarning / UndefinedMetricWarning: NaN below
        k = cohen_kappa_score(list(a), list(b), labels=list(labels), weights=weights)
    return float(k) if np.isfinite(k) else float("nan")


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa for N subjects each rated by the same number n of raters into k classes.

    Fleiss 1971, equations as usually written: with n_ij the number of raters who put subject i
    in class j, ``p_j = sum_i n_ij / (N n)``, ``P_i = (sum_j n_ij^2 - n) / (n (n - 1))``,
    ``P_bar = mean_i P_i``, ``P_e = sum_j p_j^2``, ``kappa = (P_bar - P_e) / (1 - P_e)``.

    Args:
        counts: int array (N, k), N >= 1, k >= 2; every row sums to the same n >= 2.

    Returns:
        float kappa (1 = perfect agreement, 0 = chance); NaN if P_e == 1 (one class only).

    Raises:
        AgreementError: not 2-D, negative counts, rows with different sums or n < 2.
    """
    c = np.asarray(counts, dtype=float)
    if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 2 or np.any(c < 0):
        raise AgreementError("Fleiss' kappa needs a table of non-negative counts, subjects x classes.")
    n_per = c.sum(axis=1)
    n = n_per[0]
    if not np.all(n_per == n) or n < 2:
        raise AgreementError("Fleiss' kappa needs the same number (at least 2) of raters for every subject.")
    p_j = c.sum(axis=0) / (c.shape[0] * n)
    p_i = (np.square(c).sum(axis=1) - n) / (n * (n - 1))
    p_bar = p_i.mean()
    p_e = np.square(p_j).sum()
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))
