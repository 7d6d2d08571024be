"""Tests for core.stats.metrics: hand-computed small cases, calibration, bootstrap CIs, binary models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from core.stats.metrics import (
    CI_METRICS,
    MAX_ROC_POINTS,
    MetricsError,
    _fast_metrics,
    _point_metrics,
    evaluate_predictions,
    expected_calibration_error,
    predict_labels,
    reliability_diagram,
)

NAMES = ("normal", "benign", "malignant")


def one_hot(y, k=3, hi=1.0):
    """Rows with ``hi`` on the true class and the rest spread evenly."""
    p = np.full((len(y), k), (1.0 - hi) / (k - 1))
    p[np.arange(len(y)), y] = hi
    return p


def noisy_model(n=150, seed=0, k=3, signal=1.5):
    """Labels and softmax probabilities of a fair but imperfect classifier."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


class TestEvaluatePredictions:
    def test_perfect_classifier_scores_one_everywhere(self):
        y = np.array([0, 0, 1, 1, 2, 2, 2])
        r = evaluate_predictions(y, one_hot(y, hi=0.9), n_boot=50)
        assert r["n"] == 7
        assert r["accuracy"] == 1.0
        assert r["macro_f1"] == 1.0
        assert r["sensitivity_malignant"] == 1.0
        assert r["specificity_malignant"] == 1.0
        assert r["roc_auc_ovr"] == 1.0
        assert r["roc_auc_malignant"] == 1.0
        assert r["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 3]]
        assert all(r["per_class"][c]["f1"] == 1.0 for c in NAMES)
        # Brier: each row misses 0.1 on the true class and 0.05 on the two others.
        assert r["brier"] == pytest.approx(0.1**2 + 2 * 0.05**2)

    def test_constant_classifier_has_auc_one_half(self):
        y = np.array([0, 1, 2, 0, 1, 2, 2, 2])
        p = np.tile([0.2, 0.3, 0.5], (len(y), 1))
        r = evaluate_predictions(y, p, n_boot=0)
        assert r["roc_auc_ovr"] == pytest.approx(0.5)
        assert r["roc_auc_malignant"] == pytest.approx(0.5)
        assert r["accuracy"] == pytest.approx(4 / 8)  # always "malignant"; 4 of 8 are
        assert r["sensitivity_malignant"] == 1.0
        assert r["specificity_malignant"] == 0.0
        assert r["confusion_matrix"] == [[0, 0, 2], [0, 0, 2], [0, 0, 4]]

    def test_known_confusion_matrix_gives_hand_computed_metrics(self):
        # true:      n n n n b b m m m m
        # predicted: n n n b b m m m m n
        y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
        pred = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
        r = evaluate_predictions(y, one_hot(pred, hi=0.8), n_boot=0)
        assert r["confusion_matrix"] == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
        assert r["accuracy"] == pytest.approx(7 / 10)
        # malignant: TP 3, FN 1, FP 1, TN 5
        assert r["sensitivity_malignant"] == pytest.approx(3 / 4)
        assert r["specificity_malignant"] == pytest.approx(5 / 6)
        pc = r["per_class"]
        assert pc["normal"] == pytest.approx({"precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4, "support": 4})
        assert pc["benign"]["precision"] == pytest.approx(1 / 2)
        assert pc["benign"]["recall"] == pytest.approx(1 / 2)
        f1 = [3 / 4, 1 / 2, 3 / 4]
        assert r["macro_f1"] == pytest.approx(sum(f1) / 3)

    def test_threshold_moves_a_slice_to_malignant(self):
        y = np.array([0, 2, 2])
        p = np.array([[0.8, 0.1, 0.1], [0.6, 0.0, 0.4], [0.1, 0.1, 0.8]])
        plain = evaluate_predictions(y, p, n_boot=0)
        low = evaluate_predictions(y, p, n_boot=0, thresholds={"malignant": 0.35})
        assert plain["sensitivity_malignant"] == pytest.approx(0.5)
        assert low["sensitivity_malignant"] == 1.0
        assert low["decision"]["thresholds"] == {"malignant": 0.35}
        assert plain["decision"]["thresholds"] == {}

    def test_report_is_strict_json_with_every_key(self):
        y, p = noisy_model(n=120)
        r = evaluate_predictions(y, p, groups=[i // 4 for i in range(120)], n_boot=100)
        text = json.dumps(r, allow_nan=False)
        back = json.loads(text)
        for key in (
            "n",
            "accuracy",
            "macro_f1",
            "per_class",
            "sensitivity_malignant",
            "specificity_malignant",
            "roc_auc_ovr",
            "roc_auc_malignant",
            "ece",
            "brier",
            "confusion_matrix",
            "ci95",
            "ci_method",
            "roc_curves",
            "reliability",
            "decision",
        ):
            assert key in back, key
        assert set(back["ci95"]) == set(CI_METRICS)
        assert set(back["roc_curves"]) == set(NAMES)
        assert 0 <= back["brier"] <= 2 and 0 <= back["ece"] <= 1
        assert sum(map(sum, back["confusion_matrix"])) == 120
        assert "patient groups" in back["ci_method"] and back["n_groups"] == 30

    def test_ci_contains_point_estimate(self):
        y, p = noisy_model(n=200, seed=3)
        r = evaluate_predictions(y, p, n_boot=300, seed=1)
        for m in CI_METRICS:
            lo, hi = r["ci95"][m]
            assert lo <= r[m] <= hi, m
            assert lo < hi, m

    def test_group_bootstrap_is_wider_than_slice_bootstrap_on_clustered_data(self):
        # 24 patients of 10 slices; a patient's slices are all right or all wrong (clustered).
        rng = np.random.default_rng(0)
        y, pred, groups = [], [], []
        for g in range(24):
            label = g % 3
            right = rng.random() < 0.6
            y += [label] * 10
            pred += [label if right else (label + 1) % 3] * 10
            groups += [f"p{g}"] * 10
        y = np.array(y)
        p = one_hot(np.array(pred), hi=0.7)
        by_group = evaluate_predictions(y, p, groups=groups, n_boot=500, seed=0)
        by_slice = evaluate_predictions(y, p, n_boot=500, seed=0)
        assert by_group["accuracy"] == by_slice["accuracy"]
        lo_g, hi_g = by_group["ci95"]["accuracy"]
        lo_s, hi_s = by_slice["ci95"]["accuracy"]
        assert lo_g <= by_group["accuracy"] <= hi_g
        assert (hi_g - lo_g) > 1.8 * (hi_s - lo_s)  # sqrt(10) wider in theory
        assert "slices" in by_slice["ci_method"] and by_slice["n_groups"] is None

    def test_bootstrap_skips_and_counts_replicates_without_a_class(self):
        # Only one benign patient among 12: many group resamples draw no benign slice.
        y = np.array([0] * 30 + [1] * 5 + [2] * 25)
        groups = [f"n{i // 5}" for i in range(30)] + ["b0"] * 5 + [f"m{i // 5}" for i in range(25)]
        _, p = noisy_model(n=60, seed=2)
        r = evaluate_predictions(y, p, groups=groups, n_boot=200, seed=0)
        used = r["ci_replicates"]
        assert used["accuracy"] == 200
        assert 0 < used["roc_auc_ovr"] < 200
        assert used["macro_f1"] == used["roc_auc_ovr"]  # both need every class present
        assert used["roc_auc_malignant"] == 200

    def test_same_seed_same_intervals(self):
        y, p = noisy_model(n=80, seed=5)
        a = evaluate_predictions(y, p, n_boot=100, seed=7)
        b = evaluate_predictions(y, p, n_boot=100, seed=7)
        c = evaluate_predictions(y, p, n_boot=100, seed=8)
        assert a["ci95"] == b["ci95"]
        assert a["ci95"] != c["ci95"]

    def test_class_absent_from_test_set_gives_none_auc(self):
        y = np.array([0, 0, 2, 2])
        p = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.1, 0.6]])
        r = evaluate_predictions(y, p, n_boot=20)
        assert r["roc_auc_ovr"] is None
        assert r["roc_curves"]["benign"] is None
        assert r["roc_auc_malignant"] == 1.0
        assert r["ci95"]["roc_auc_ovr"] == [None, None]
        assert r["ci_replicates"]["roc_auc_ovr"] == 0
        json.dumps(r, allow_nan=False)

    def test_binary_model_reports_cancer_as_malignant(self):
        y, p = noisy_model(n=100, k=2, seed=4)
        r = evaluate_predictions(y, p, class_names=("no_cancer", "cancer"), n_boot=50)
        assert r["positive_class"] == "cancer"
        assert r["roc_auc_malignant"] == pytest.approx(roc_auc_score(y == 1, p[:, 1]))
        assert r["roc_auc_ovr"] == pytest.approx(r["roc_auc_malignant"])
        assert np.array(r["confusion_matrix"]).shape == (2, 2)
        tp = r["confusion_matrix"][1][1]
        assert r["sensitivity_malignant"] == pytest.approx(tp / int((y == 1).sum()))

    def test_roc_curves_are_thinned_and_monotone(self):
        y, p = noisy_model(n=1500, seed=6, signal=0.5)
        r = evaluate_predictions(y, p, n_boot=0)
        for name in NAMES:
            c = r["roc_curves"][name]
            assert 2 <= len(c["fpr"]) <= MAX_ROC_POINTS
            assert len(c["fpr"]) == len(c["tpr"]) == len(c["thresholds"])
            assert c["fpr"][0] == 0.0 and c["fpr"][-1] == 1.0 and c["tpr"][-1] == 1.0
            assert np.all(np.diff(c["fpr"]) >= 0) and np.all(np.diff(c["tpr"]) >= 0)
            assert c["thresholds"][0] is None  # scikit-learn's +inf start

    @pytest.mark.parametrize(
        ("y", "p", "kwargs", "message"),
        [
            ([0, 1], [[1.0, 0.0, 0.0]], {}, "shape"),
            ([0, 3], [[1.0, 0, 0], [0, 1.0, 0]], {}, "outside"),
            ([0, 1], [[0.5, 0.6, 0.1], [0, 1.0, 0]], {}, "sum to 1"),
            ([0, 1], [[2.0, -1.0, 0.0], [0, 1.0, 0]], {}, "probabilities"),
            ([0, 1], [[1.0, 0, 0], [0, 1.0, 0]], {"thresholds": {"cancer": 0.3}}, "unknown"),
            ([0, 1], [[1.0, 0, 0], [0, 1.0, 0]], {"thresholds": {"malignant": 1.5}}, "threshold"),
            ([0, 1], [[1.0, 0, 0], [0, 1.0, 0]], {"groups": ["a"]}, "groups"),
            ([0.5, 1], [[1.0, 0, 0], [0, 1.0, 0]], {}, "integer"),
            ([0, 1], [[float("nan"), 0, 1.0], [0, 1.0, 0]], {}, "NaN"),
        ],
    )
    def test_bad_input_raises_metrics_error(self, y, p, kwargs, message):
        with pytest.raises(MetricsError, match=message):
            evaluate_predictions(y, p, n_boot=0, **kwargs)


class TestExpectedCalibrationError:
    def test_perfectly_calibrated_set_is_zero(self):
        # 100 slices, each 80 % confident in "normal"; exactly 80 are normal.
        y = np.array([0] * 80 + [1] * 20)
        p = np.tile([0.8, 0.15, 0.05], (100, 1))
        assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)

    def test_over_confident_set_is_positive_and_hand_computed(self):
        # 99 % confident, right half the time: ECE = |0.5 - 0.99| = 0.49.
        y = np.array([0, 1] * 50)
        p = np.tile([0.99, 0.005, 0.005], (100, 1))
        assert expected_calibration_error(y, p) == pytest.approx(0.49)

    def test_two_bins_weighted_by_count(self):
        # 4 slices at 0.9 confidence all right (gap 0.1), 6 at 0.5 with 3 right (gap 0).
        y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
        p = np.array([[0.9, 0.05, 0.05]] * 4 + [[0.5, 0.3, 0.2]] * 6)
        assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.4 * 0.1)

    def test_matches_sklearn_calibration_curve_on_top_class(self):
        y, p = noisy_model(n=400, seed=9)
        conf, correct = p.max(axis=1), (p.argmax(axis=1) == y)
        prob_true, prob_pred = calibration_curve(correct, conf, n_bins=15, strategy="uniform")
        rel = reliability_diagram(y, p, n_bins=15)
        counts = np.array(rel["count"])
        weights = counts[counts > 0] / counts.sum()
        expected = float(np.sum(weights * np.abs(prob_true - prob_pred)))
        assert expected_calibration_error(y, p) == pytest.approx(expected)

    def test_bad_bins_raise(self):
        with pytest.raises(MetricsError, match="n_bins"):
            expected_calibration_error([0], [[1.0, 0.0, 0.0]], n_bins=0)


class TestReliabilityDiagram:
    def test_counts_sum_to_n_and_empty_bins_are_none(self):
        y = np.array([0] * 8 + [1] * 2)
        p = np.tile([0.8, 0.15, 0.05], (10, 1))
        rel = reliability_diagram(y, p, n_bins=5)
        assert rel["bin_centers"] == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
        assert rel["count"] == [0, 0, 0, 10, 0]  # 0.8 lies in (0.6, 0.8]
        assert rel["accuracy"][3] == pytest.approx(0.8)
        assert rel["confidence"][3] == pytest.approx(0.8)
        assert rel["accuracy"][0] is None and rel["confidence"][4] is None


class TestPredictLabels:
    def test_argmax_without_thresholds_and_threshold_rule_with(self):
        p = np.array([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]])
        assert predict_labels(p, NAMES).tolist() == [0, 1]
        assert predict_labels(p, NAMES, {"malignant": 0.3}).tolist() == [2, 2]


class TestFastMetrics:
    def test_agrees_with_scikit_learn_on_random_resamples(self):
        y, p = noisy_model(n=120, seed=11)
        p = np.round(p, 2)  # create ties, which the rank AUC must handle like sklearn
        p = p / p.sum(axis=1, keepdims=True)
        pred = p.argmax(axis=1)
        rng = np.random.default_rng(0)
        compared = 0
        for size in (8, 15, 40, 120):
            for _ in range(25):
                idx = rng.integers(0, len(y), size)
                fast = _fast_metrics(y[idx], pred[idx], p[idx], 3, 2)
                ref = _point_metrics(y[idx], pred[idx], p[idx], 3, 2)
                all_present = len(np.unique(y[idx])) == 3
                for name in CI_METRICS:
                    if name == "macro_f1" and not all_present:
                        assert math.isnan(fast[name])
                        continue
                    if math.isnan(ref[name]):
                        assert math.isnan(fast[name]), name
                    else:
                        assert fast[name] == pytest.approx(ref[name], abs=1e-12), name
                        compared += 1
        assert compared > 400
