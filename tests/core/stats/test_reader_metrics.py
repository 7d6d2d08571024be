"""Tests of core.stats.reader_metrics against the hand-worked pilot in tests/core/stats/reader_study_pilot.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.stats import reader_metrics as rm
from tests.core.stats import reader_study_pilot as pilot

READER_IDS = {"r1": 1, "r2": 2, "r3": 3}
NAMES = {v: k for k, v in READER_IDS.items()} | {rm.POOLED: "pooled"}


def frames():
    reads = pd.DataFrame([
        {"reader_id": READER_IDS[r], "case_id": c, "phase": phase, "finding": f, "confidence": conf,
         "seconds": (pilot.unaided_seconds if phase == "unaided" else pilot.aided_seconds)(r, c)}
        for r in pilot.READERS for phase in rm.PHASES for c, (f, conf) in pilot.READS[r][phase].items()
    ])
    cases = pd.DataFrame({"case_id": pilot.CASES, "ai_label": [pilot.AI[c] for c in pilot.CASES],
                          "reference": [pilot.REFERENCE[c] for c in pilot.CASES]})
    sus = pd.DataFrame([{"reader_id": READER_IDS[r], "sus_score": s, "created_at": i}
                        for i, (r, s) in enumerate([("r1", 0.0), ("r2", 100.0), ("r1", 50.0), ("r3", 75.0)])])
    return reads, cases, sus


@pytest.fixture(scope="module")
def results():
    reads, cases, sus = frames()
    return rm.analyse(reads, cases, sus, list(READER_IDS.values()), n_boot=500, seed=7)


def by_key(df, *cols):
    return {(NAMES[r["reader_id"]], *(r[c] for c in cols)): r for _, r in df.iterrows()}


class TestMalignancyRating:
    @pytest.mark.parametrize(("finding", "confidence", "rating"), [
        ("malignant", 5, 5), ("malignant", 4, 5), ("malignant", 3, 4), ("malignant", 1, 4),
        ("benign", 1, 3), ("benign", 5, 3), ("normal", 3, 2), ("normal", 4, 1), ("normal", 5, 1)])
    def test_scale(self, finding, confidence, rating):
        assert rm.malignancy_rating(finding, confidence) == rating

    def test_unknown_finding_is_refused(self):
        with pytest.raises(rm.ReaderMetricsError, match="Unknown finding"):
            rm.malignancy_rating("cancer", 4)


class TestAccuracy:
    def test_counts_and_proportions_equal_the_hand_computation(self, results):
        rows = by_key(results.accuracy, "phase")
        assert set(rows) == set(pilot.CONFUSION)
        for key, (tp, fn, tn, fp) in pilot.CONFUSION.items():
            r = rows[key]
            assert (r["tp"], r["fn"], r["tn"], r["fp"]) == (tp, fn, tn, fp), key
            assert r["sensitivity"] == pytest.approx(tp / (tp + fn))
            assert r["specificity"] == pytest.approx(tn / (tn + fp))
            assert r["accuracy"] == pytest.approx((tp + tn) / (tp + fn + tn + fp))

    def test_auc_equals_the_hand_computation(self, results):
        rows = by_key(results.accuracy, "phase")
        for key, auc in pilot.AUC.items():
            assert rows[key]["auc"] == pytest.approx(auc), key

    def test_intervals_hold_the_estimate_and_are_reproducible(self, results):
        reads, cases, sus = frames()
        again = rm.accuracy_table(reads, cases, n_boot=500, seed=7)
        pd.testing.assert_frame_equal(again, results.accuracy)
        other = rm.accuracy_table(reads, cases, n_boot=500, seed=8)
        assert not np.allclose(other["auc_low"], results.accuracy["auc_low"])
        for m in rm.INTERVAL_METRICS:
            assert (results.accuracy[f"{m}_low"] <= results.accuracy[m] + 1e-12).all(), m
            assert (results.accuracy[m] <= results.accuracy[f"{m}_high"] + 1e-12).all(), m
        r3 = by_key(results.accuracy, "phase")[("r3", "unaided")]
        # r3 never calls a non-malignant case malignant: every replicate has specificity 1.
        assert (r3["specificity_low"], r3["specificity_high"]) == (1.0, 1.0)
        assert r3["sensitivity_low"] < r3["sensitivity"] < r3["sensitivity_high"]

    def test_weighted_bootstrap_auc_equals_sklearn_with_unit_weights(self):
        from sklearn.metrics import roc_auc_score

        rng = np.random.default_rng(3)
        truth = rng.random(40) < 0.4
        rating = rng.integers(1, 6, 40)
        got = rm._weighted_auc(np.ones((1, 40)), truth, rating)[0]
        assert got == pytest.approx(roc_auc_score(truth, rating))

    def test_auc_difference(self, results):
        d = results.auc_difference
        assert d["n_readers"] == 3
        assert d["difference"] == pytest.approx(pilot.AUC_DIFFERENCE)
        assert d["low"] <= d["difference"] <= d["high"]

    def test_cases_without_reference_are_left_out(self):
        reads, cases, _ = frames()
        cases.loc[cases["case_id"] == 1, "reference"] = np.nan
        table = rm.accuracy_table(reads, cases, n_boot=0)
        r1 = by_key(table, "phase")[("r1", "unaided")]
        # case 1 was r1's only unaided false negative
        assert (r1["tp"], r1["fn"], r1["n_reads"]) == (7, 0, 19)
        assert np.isnan(r1["sensitivity_low"])


class TestKappa:
    def test_equals_the_hand_computation(self, results):
        rows = by_key(results.kappa, "phase")
        for key, k in pilot.KAPPA.items():
            assert rows[key]["kappa"] == pytest.approx(k), key
            assert rows[key]["percent_agreement"] == pytest.approx(pilot.AGREEMENT_PERCENT[key]), key


class TestChangesOfMind:
    def test_equal_the_hand_computation(self, results):
        rows = by_key(results.changes, "ai")
        for key, (n, wr, rw, rr, ww) in pilot.CHANGES.items():
            r = rows[key]
            assert (r["n_cases"], r["wrong->right"], r["right->wrong"], r["right->right"], r["wrong->wrong"]) == (
                n, wr, rw, rr, ww), key

    def test_automation_bias_rate(self, results):
        rows = {NAMES[r["reader_id"]]: r for _, r in results.automation_bias.iterrows()}
        for reader, rate in pilot.AUTOMATION_BIAS.items():
            assert rows[reader]["rate"] == pytest.approx(rate), reader
        assert rows["pooled"]["n_ai_wrong"] == 9 and rows["pooled"]["right_to_wrong_ai_wrong"] == 2


class TestTimesAndSus:
    def test_times(self, results):
        rows = by_key(results.times, "phase")
        for key, (mean, median) in pilot.TIMES.items():
            assert rows[key]["mean_s"] == pytest.approx(mean), key
            assert rows[key]["median_s"] == pytest.approx(median), key

    def test_sus_latest_per_reader_and_mean(self, results):
        rows = {NAMES[r["reader_id"]]: r["sus_score"] for _, r in results.sus.iterrows()}
        assert rows == pytest.approx(pilot.SUS)


class TestNoReferenceYet:
    def test_every_table_is_made_and_proportions_are_empty(self):
        reads, cases, sus = frames()
        cases["reference"] = np.nan
        res = rm.analyse(reads, cases, sus, [1, 2, 3], n_boot=50)
        assert res.accuracy.empty and res.roc.empty and res.n_with_reference == 0
        assert (res.changes["n_cases"] == 0).all() and res.automation_bias["rate"].isna().all()
        assert len(res.kappa) == 8 and np.isnan(res.auc_difference["difference"])


class TestBadInput:
    def test_missing_column(self):
        reads, cases, _ = frames()
        with pytest.raises(rm.ReaderMetricsError, match="no column 'confidence'"):
            rm.accuracy_table(reads.drop(columns=["confidence"]), cases)

    def test_read_of_an_unknown_case(self):
        reads, cases, _ = frames()
        with pytest.raises(rm.ReaderMetricsError, match="not in the cases table"):
            rm.kappa_table(reads, cases[cases["case_id"] != 5])
