"""Classification metrics for model evaluation: one JSON-ready dict per test set.

Everything a model card, the evaluation CLI (``models.evaluation.evaluate``) and the dashboard's Compare page
report comes from :func:`evaluate_predictions`. The metric maths is scikit-learn's
(``accuracy_score``, ``precision_recall_fscore_support``, ``f1_score``, ``recall_score``,
``roc_auc_score``, ``roc_curve``, ``confusion_matrix``, ``brier_score_loss``); this module adds
the clinical framing (malignant versus rest), calibration (expected calibration error and the
reliability diagram, Guo et al. 2017) and bootstrap confidence intervals that resample *patients*
when patient groups are known (slices of one patient are not independent; CLAIM item 32,
CLEAR item 15).

No TensorFlow here: the module works on arrays of labels and probabilities only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from core.domain import CLASS_NAMES, suspicious_index
from core.inference.decision import decide
from core.stats.bootstrap import group_counts, grouped_rows, independent_replicates, percentile_interval

#: Metrics that get a bootstrap 95 % confidence interval, in report order.
CI_METRICS: tuple[str, ...] = (
    "accuracy",
    "macro_f1",
    "sensitivity_malignant",
    "specificity_malignant",
    "roc_auc_ovr",
    "roc_auc_malignant",
)
#: Most points kept per ROC curve in the report (enough for a smooth plot, small JSON).
MAX_ROC_POINTS = 200
#: Tolerance on ``sum(proba, axis=1) == 1``; float32 softmax outputs are well inside it.
_SUM_TOLERANCE = 1e-3


class MetricsError(ValueError):
    """Labels or probabilities cannot be evaluated; the message says what is wrong and what to do."""


def _check_inputs(
    y_true: Any, proba: Any, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Validate and convert inputs: int64 (n,), float64 (n, k), names tuple. Raises MetricsError."""
    names = tuple(str(c) for c in class_names)
    k = len(names)
    if k < 2:
        raise MetricsError(f"need at least 2 class names, got {names!r}")
    if len(set(names)) != k:
        raise MetricsError(f"class names must be distinct, got {names!r}")
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise MetricsError(f"y_true must be a non-empty 1-D array of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise MetricsError(
                f"y_true must hold integer class indices 0..{k - 1} (in the order {names}), "
                f"got dtype {y.dtype}"
            )
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= k:
        raise MetricsError(
            f"y_true holds class index {int(y.min()) if y.min() < 0 else int(y.max())}, "
            f"outside 0..{k - 1} for classes {names}"
        )
    if p.ndim != 2 or p.shape != (y.size, k):
        raise MetricsError(
            f"proba must have shape (n, {k}) = ({y.size}, {k}) to match y_true and the class names, "
            f"got {p.shape}"
        )
    if not np.all(np.isfinite(p)):
        raise MetricsError("proba holds NaN or infinite values; check the model output")
    if p.min() < 0 or p.max() > 1 + _SUM_TOLERANCE:
        raise MetricsError("proba must hold probabilities in [0, 1]; apply softmax to logits first")
    sums = p.sum(axis=1)
    if np.max(np.abs(sums - 1.0)) > _SUM_TOLERANCE:
        raise MetricsError(
            f"each row of proba must sum to 1 (softmax output); the worst row sums to "
            f"{sums[np.argmax(np.abs(sums - 1.0))]:.4f}"
        )
    # Renormalise the float32 round-off (~1e-7) so scikit-learn's strict sum check stays quiet.
    return y, p / sums[:, None], names


def predict_labels(
    proba: np.ndarray, class_names: Sequence[str], thresholds: Mapping[str, float] | None = None
) -> np.ndarray:
    """Class decisions from probabilities with the model's decision thresholds.

    Delegates to ``core.inference.decision.decide`` (a class with a threshold wins when its probability
    reaches it, malignant first; otherwise argmax).

    Args:
        proba: float (n, k) class probabilities.
        class_names: k class names in column order.
        thresholds: {class name: probability threshold}; None or {} means plain argmax.

    Returns:
        int64 array (n,) of class indices.

    Raises:
        MetricsError: a threshold names an unknown class or lies outside [0, 1].
    """
    p = np.asarray(proba, dtype=np.float64)
    try:
        labels = decide(p, tuple(class_names), dict(thresholds or {}))
    except ValueError as exc:
        raise MetricsError(f"cannot apply the decision thresholds: {exc}") from exc
    return np.asarray(labels, dtype=np.int64)


def _top_class_bins(
    y_true: np.ndarray, proba: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin counts, accuracy and mean confidence of the top class (bins ((m-1)/M, m/M])."""
    if n_bins < 1:
        raise MetricsError(f"n_bins must be at least 1, got {n_bins}")
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Same binning as sklearn.calibration.calibration_curve(strategy="uniform"): a value on an
    # inner edge falls in the lower bin, so bin m is ((m-1)/M, m/M] as in Guo et al. 2017.
    ids = np.searchsorted(edges[1:-1], conf)
    count = np.bincount(ids, minlength=n_bins).astype(np.int64)
    acc_sum = np.bincount(ids, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(ids, weights=conf, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
    return edges, count, acc, mean_conf


def expected_calibration_error(y_true: Any, proba: Any, n_bins: int = 15) -> float:
    """Expected calibration error (ECE) of the top-class confidence.

    ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` over ``n_bins`` equal-width confidence
    bins ((m-1)/M, m/M] (Naeini et al. 2015, AAAI; Guo et al. 2017, "On Calibration of Modern
    Neural Networks", ICML, eq. 3), where conf is the largest class probability and acc the
    fraction of those top-class predictions that are right (argmax, no thresholds).

    Args:
        y_true: int (n,) true class indices.
        proba: float (n, k) class probabilities, rows summing to 1.
        n_bins: number of equal-width bins on [0, 1] (15 as in Guo et al.).

    Returns:
        float in [0, 1]; 0 for a perfectly calibrated model.

    Raises:
        MetricsError: shapes disagree, labels are out of range, or rows are not probabilities.
    """
    p = np.asarray(proba, dtype=np.float64)
    names = tuple(str(i) for i in range(p.shape[1])) if p.ndim == 2 else ("0", "1")
    y, p, _ = _check_inputs(y_true, p, names)
    _, count, acc, conf = _top_class_bins(y, p, n_bins)
    used = count > 0
    return float(np.sum(count[used] / y.size * np.abs(acc[used] - conf[used])))


def reliability_diagram(y_true: Any, proba: Any, n_bins: int = 15) -> dict[str, list]:
    """Data for a reliability diagram of the top-class confidence (Guo et al. 2017, fig. 1).

    Args:
        y_true: int (n,) true class indices.
        proba: float (n, k) class probabilities, rows summing to 1.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        dict of lists, one entry per bin: ``bin_centers`` (float), ``accuracy`` and
        ``confidence`` (float, None for an empty bin), ``count`` (int).

    Raises:
        MetricsError: as :func:`expected_calibration_error`.
    """
    p = np.asarray(proba, dtype=np.float64)
    names = tuple(str(i) for i in range(p.shape[1])) if p.ndim == 2 else ("0", "1")
    y, p, _ = _check_inputs(y_true, p, names)
    edges, count, acc, conf = _top_class_bins(y, p, n_bins)
    return {
        "bin_centers": [float(c) for c in (edges[:-1] + edges[1:]) / 2],
        "accuracy": [_num(a) for a in acc],
        "confidence": [_num(c) for c in conf],
        "count": [int(c) for c in count],
    }


def _num(x: Any) -> float | None:
    """A JSON-safe float: NaN and infinities become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def _point_metrics(y: np.ndarray, pred: np.ndarray, p: np.ndarray, k: int, pos: int) -> dict[str, float]:
    """The CI metrics on one (re)sample; NaN where undefined (a class absent)."""
    labels = list(range(k))
    out: dict[str, float] = {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
    }
    y_pos, pred_pos = y == pos, pred == pos
    n_pos = int(y_pos.sum())
    out["sensitivity_malignant"] = (
        float(recall_score(y_pos, pred_pos, pos_label=True, zero_division=0)) if n_pos else math.nan
    )
    out["specificity_malignant"] = (
        float(recall_score(y_pos, pred_pos, pos_label=False, zero_division=0)) if n_pos < y.size else math.nan
    )
    present = np.unique(y)
    if present.size == k:
        if k == 2:
            out["roc_auc_ovr"] = float(roc_auc_score(y, p[:, 1]))
        else:
            out["roc_auc_ovr"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels))
    else:
        out["roc_auc_ovr"] = math.nan
    out["roc_auc_malignant"] = float(roc_auc_score(y_pos, p[:, pos])) if 0 < n_pos < y.size else math.nan
    return out


def _thin(fpr: np.ndarray, tpr: np.ndarray, thr: np.ndarray, max_points: int) -> dict[str, list]:
    """Keep at most ``max_points`` ROC points, always the first and last."""
    if fpr.size > max_points:
        idx = np.unique(np.round(np.linspace(0, fpr.size - 1, max_points)).astype(int))
        fpr, tpr, thr = fpr[idx], tpr[idx], thr[idx]
    return {
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        "thresholds": [_num(v) for v in thr],
    }


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic with mid-ranks for ties (NaN if one class only).

    Equals ``sklearn.metrics.roc_auc_score(positive, score)`` (the trapezoidal area under the
    empirical ROC curve is U / (n_pos * n_neg); Hanley & McNeil 1982); tested against it.
    """
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _fast_metrics(y: np.ndarray, pred: np.ndarray, p: np.ndarray, k: int, pos: int) -> dict[str, float]:
    """The CI metrics of :func:`_point_metrics`, in NumPy, for the bootstrap's inner loop.

    scikit-learn's per-call input validation dominates a loop of 1000 small replicates, so
    these are the same formulas on one confusion matrix (accuracy = trace / n; per-class
    F1 = 2 TP / (2 TP + FP + FN), 0 when undefined as with ``zero_division=0``; sensitivity and
    specificity of the positive class) and the Mann-Whitney AUC. The test suite checks that they
    agree with :func:`_point_metrics` (scikit-learn) on random resamples.

    One difference on purpose: macro F1 is NaN (the replicate is skipped) when a class has no
    true slice in the resample, since its F1 would be an artificial 0 that biases the CI down.
    """
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)
    n = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    den = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, den, out=np.zeros(k), where=den > 0)
    n_pos = cm[pos].sum()
    tn_pos = n - n_pos - fp[pos]
    out = {
        "accuracy": float(tp.sum() / n),
        "macro_f1": float(f1.mean()) if (cm.sum(axis=1) > 0).all() else math.nan,
        "sensitivity_malignant": float(tp[pos] / n_pos) if n_pos else math.nan,
        "specificity_malignant": float(tn_pos / (n - n_pos)) if n_pos < n else math.nan,
    }
    if k == 2:
        out["roc_auc_ovr"] = _binary_auc(y == 1, p[:, 1])
    else:
        aucs = [_binary_auc(y == i, p[:, i]) for i in range(k)]
        out["roc_auc_ovr"] = math.nan if any(math.isnan(a) for a in aucs) else float(np.mean(aucs))
    out["roc_auc_malignant"] = _binary_auc(y == pos, p[:, pos])
    return out


def _bootstrap(
    y: np.ndarray,
    pred: np.ndarray,
    p: np.ndarray,
    k: int,
    pos: int,
    groups: np.ndarray | None,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, list[float | None]], dict[str, int]]:
    """Percentile 95 % CIs (``core.stats.bootstrap``): whole groups resampled when ``groups`` is
    given (slices of one patient are not independent), else slices by ``scipy.stats.bootstrap``.

    Replicates where a metric is undefined (e.g. no malignant slice drawn, or a class absent
    for the one-vs-rest AUC) are skipped for that metric; the counts used are returned.
    """

    def metrics(idx: np.ndarray) -> np.ndarray:
        got = _fast_metrics(y[idx], pred[idx], p[idx], k, pos)
        return np.array([got[m] for m in CI_METRICS], dtype=float)

    if groups is None:
        reps = independent_replicates(metrics, y.size, n_boot, seed)
    else:
        uniq, inverse = np.unique(groups, return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(uniq.size)]
        reps = np.stack([metrics(grouped_rows(c, members)) for c in group_counts(uniq.size, n_boot, seed)], axis=1)
    ci: dict[str, list[float | None]] = {}
    used: dict[str, int] = {}
    for row, name in zip(reps, CI_METRICS, strict=True):
        used[name] = int(np.isfinite(row).sum())
        lo, hi = percentile_interval(row, 0.95)
        ci[name] = [lo, hi] if used[name] else [None, None]
    return ci, used


def evaluate_predictions(
    y_true: Any,
    proba: Any,
    class_names: Sequence[str] = CLASS_NAMES,
    groups: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Every metric of the evaluation report, JSON-ready (NaN/undefined values are None).

    Predictions come from ``core.inference.decision.decide(proba, class_names, thresholds or {})``; ROC
    AUC, ROC curves, ECE and Brier use the probabilities. "Malignant" means the class of
    :func:`core.inference.decision.suspicious_index` (``malignant``, else ``cancer``, else the last class)
    versus all others.

    Args:
        y_true: int (n,) true class indices in the order of ``class_names``.
        proba: float (n, k) predicted class probabilities (softmax), rows summing to 1.
        class_names: k >= 2 class names in column order (default normal, benign, malignant).
        groups: optional (n,) patient/group ids; then the bootstrap resamples whole groups.
        n_boot: bootstrap replicates for the 95 % CIs (0 skips the CIs).
        seed: seed of the bootstrap's random generator (results are reproducible).
        thresholds: {class name: probability threshold} for the decision; None = argmax.

    Returns:
        dict with keys ``n``, ``class_names``, ``positive_class``, ``accuracy``, ``macro_f1``,
        ``per_class`` {name: {precision, recall, f1, support}}, ``sensitivity_malignant``,
        ``specificity_malignant``, ``roc_auc_ovr`` (macro one-vs-rest; for k = 2 the binary AUC),
        ``roc_auc_malignant``, ``ece`` (15 bins), ``brier`` (multi-class Brier score, sum over
        classes, range [0, 2]; Brier 1950), ``confusion_matrix`` (k x k ints, rows true,
        columns predicted, order of ``class_names``), ``ci95`` {metric: [lo, hi]} (percentile
        bootstrap, Efron & Tibshirani 1993), ``ci_method``, ``ci_replicates`` {metric: replicates
        used; replicates where a metric is undefined, e.g. a class absent, are skipped},
        ``n_boot``, ``n_groups``, ``roc_curves`` {class: {fpr, tpr, thresholds}} (one-vs-rest,
        at most 200 points; the first threshold, infinity in scikit-learn, is None),
        ``reliability`` {bin_centers, accuracy, confidence, count} and ``decision``
        {thresholds, rule}.

    Raises:
        MetricsError: shapes disagree, labels are outside 0..k-1, probabilities are not
            probabilities, ``groups`` has the wrong length, or ``thresholds`` names an unknown
            class.
    """
    y, p, names = _check_inputs(y_true, proba, class_names)
    k, n = len(names), y.size
    pos = suspicious_index(names)
    thr = {str(c): float(t) for c, t in dict(thresholds or {}).items()}
    unknown = set(thr) - set(names)
    if unknown:
        raise MetricsError(f"thresholds name unknown classes {sorted(unknown)}; the classes are {names}")
    g = None
    if groups is not None:
        g = np.asarray([str(v) for v in groups])
        if g.shape != (n,):
            raise MetricsError(f"groups must have one id per slice ({n}), got {len(g)}")
    if n_boot < 0:
        raise MetricsError(f"n_boot must be 0 or more, got {n_boot}")

    pred = predict_labels(p, names, thr)
    labels = list(range(k))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    point = _point_metrics(y, pred, p, k, pos)

    curves: dict[str, dict[str, list] | None] = {}
    for i, name in enumerate(names):
        yi = y == i
        if 0 < yi.sum() < n:
            fpr, tpr, cut = roc_curve(yi, p[:, i])
            curves[name] = _thin(fpr, tpr, cut, MAX_ROC_POINTS)
        else:
            curves[name] = None

    n_groups = int(len(set(g.tolist()))) if g is not None else None
    if n_boot == 0:
        ci_method = "none (n_boot = 0)"
    elif g is not None:
        ci_method = f"percentile bootstrap over {n_groups} patient groups"
    else:
        ci_method = "percentile bootstrap over slices (no patient groups given)"
    if n_boot > 0:
        ci, used = _bootstrap(y, pred, p, k, pos, g, n_boot, seed)
    else:
        ci, used = {m: [None, None] for m in CI_METRICS}, dict.fromkeys(CI_METRICS, 0)

    return {
        "n": int(n),
        "class_names": list(names),
        "positive_class": names[pos],
        "accuracy": point["accuracy"],
        "macro_f1": point["macro_f1"],
        "per_class": {
            name: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "sensitivity_malignant": _num(point["sensitivity_malignant"]),
        "specificity_malignant": _num(point["specificity_malignant"]),
        "roc_auc_ovr": _num(point["roc_auc_ovr"]),
        "roc_auc_malignant": _num(point["roc_auc_malignant"]),
        "ece": expected_calibration_error(y, p, n_bins=15),
        "brier": float(brier_score_loss(y, p, labels=labels, scale_by_half=False)),
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).astype(int).tolist(),
        "ci95": ci,
        "ci_method": ci_method,
        "ci_replicates": used,
        "n_boot": int(n_boot),
        "n_groups": n_groups,
        "bootstrap_seed": int(seed),
        "roc_curves": curves,
        "reliability": reliability_diagram(y, p, n_bins=15),
        "decision": {
            "thresholds": thr,
            "rule": "a class with a threshold wins when its probability reaches it "
            "(malignant first); otherwise the most probable class (core.inference.decision.decide)",
        },
    }
