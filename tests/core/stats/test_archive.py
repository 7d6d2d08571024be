"""core.stats.archive on a hand-made run: two slice classifiers (A, B) on four series of three studies, and a
nodule detector (D); every expected figure is worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.stats.archive import (
    ArchiveStatsError,
    accuracy_against_reference,
    compare,
    disagreements,
    kappa_pairs,
    nodule_counts,
    parse_reference_csv,
    score_histogram,
    score_summary,
)

NAMES = ["normal", "benign", "malignant"]
THR = {"malignant": 0.5}
#: (model, study, series, finding, score, probabilities) -- each finding is core.decision.decide(row, THR)
ROWS = [
    ("A", "t1", "s1", "malignant", 0.90, [0.05, 0.05, 0.90]),
    ("A", "t1", "s2", "normal", 0.10, [0.80, 0.10, 0.10]),
    ("A", "t2", "s3", "benign", 0.40, [0.10, 0.50, 0.40]),
    ("A", "t3", "s4", "malignant", 0.95, [0.02, 0.03, 0.95]),
    ("B", "t1", "s1", "malignant", 0.80, [0.10, 0.10, 0.80]),
    ("B", "t1", "s2", "benign", 0.30, [0.20, 0.50, 0.30]),
    ("B", "t2", "s3", "benign", 0.35, [0.15, 0.50, 0.35]),
    ("B", "t3", "s4", "normal", 0.20, [0.60, 0.20, 0.20]),
]
REFERENCE = {"t1": "malignant", "t2": "normal", "t3": "benign"}


@pytest.fixture()
def results() -> pd.DataFrame:
    rows = [{"study_key": t, "series_key": s, "model_id": m, "kind": "slice_classifier", "finding": f,
             "series_score": sc, "is_ood": s == "s2" and m == "B", "n_nodules": None, "probabilities": p,
             "class_names": NAMES, "thresholds": THR} for m, t, s, f, sc, p in ROWS]
    rows += [{"study_key": t, "series_key": s, "model_id": "D", "kind": "nodule_detector", "finding": None,
              "series_score": None, "is_ood": None, "n_nodules": n, "probabilities": None, "class_names": None,
              "thresholds": None} for t, s, n in (("t1", "s1", 0), ("t2", "s3", 2), ("t3", "s4", 5))]
    return pd.DataFrame(rows)


def test_score_summary(results):
    got = score_summary(results).set_index("model_id")
    assert list(got.index) == ["A", "B"]  # the detector has no series score
    # A: scores 0.9, 0.1, 0.4, 0.95 -> median (0.4 + 0.9) / 2; flagged s1, s4
    assert got.loc["A", "median"] == pytest.approx(0.65) and got.loc["A", "max"] == pytest.approx(0.95)
    assert (got.loc["A", "n_series"], got.loc["A", "n_flagged"], got.loc["A", "percent_flagged"]) == (4, 2, 50.0)
    assert (got.loc["B", "n_flagged"], got.loc["B", "n_ood"]) == (1, 1)
    assert got.loc["B", "mean"] == pytest.approx((0.8 + 0.3 + 0.35 + 0.2) / 4)


def test_score_histogram(results):
    h = score_histogram(results)
    assert len(h) == 20 and h.groupby("model_id")["count"].sum().to_dict() == {"A": 4, "B": 4}
    a = h[h["model_id"] == "A"].set_index("bin_lo")["count"]
    assert a.loc[0.9] == 2 and a.loc[0.4] == 1 and a.loc[0.1] == 1  # 0.9 and 0.95 share the last bin


def test_kappa_pairs(results):
    k = kappa_pairs(results)
    assert len(k) == 1 and (k.loc[0, "model_a"], k.loc[0, "model_b"], k.loc[0, "n_series"]) == ("A", "B", 4)
    # findings A m n b m, B m b b n: agreement 2/4; chance: A (m .5, n .25, b .25), B (m .25, n .25, b .5)
    pe = 0.5 * 0.25 + 0.25 * 0.25 + 0.25 * 0.5
    assert k.loc[0, "percent_agreement"] == 50.0
    assert k.loc[0, "kappa"] == pytest.approx((0.5 - pe) / (1 - pe))


def test_nodule_counts(results):
    n = nodule_counts(results).iloc[0]
    assert (n["model_id"], n["n_series"], n["max"], n["n_none"], n["n_2"], n["n_4_or_more"]) == ("D", 3, 5, 1, 1, 1)
    assert n["mean"] == pytest.approx(7 / 3)


def test_disagreements(results):
    d = disagreements(results)
    # s4: m vs n, range .75; s2: n vs b, range .2; s1: both m, range .1; s3: both b, range .05
    assert list(d["series_key"]) == ["s4", "s2", "s1", "s3"]
    assert list(d["n_findings"]) == [2, 2, 1, 1] and d.loc[0, "score_range"] == pytest.approx(0.75)
    assert d.loc[0, "findings"] == "A: malignant; B: normal"
    assert len(disagreements(results, top=2)) == 2


def test_accuracy_against_reference(results):
    acc = accuracy_against_reference(results, REFERENCE, n_boot=0).set_index("model_id")
    # one score per study, its most suspicious series: A t1 .9 (s1), t2 .4, t3 .95; B t1 .8, t2 .35, t3 .2
    # positive t1 only. A: AUC = P(.9 > {.4, .95}) = 1/2; flags t1 and t3 -> sens 1, spec 1/2
    assert (acc.loc["A", "n_studies"], acc.loc["A", "n_malignant"]) == (3, 1)
    assert acc.loc["A", "auc"] == pytest.approx(0.5)
    assert (acc.loc["A", "sensitivity"], acc.loc["A", "specificity"]) == (1.0, 0.5)
    # B: .8 above .35 and .2 -> AUC 1; flags t1 only -> sens 1, spec 1
    assert (acc.loc["B", "auc"], acc.loc["B", "sensitivity"], acc.loc["B", "specificity"]) == (1.0, 1.0, 1.0)
    assert math.isnan(acc.loc["A", "auc_lo"])  # no bootstrap asked for
    boot = accuracy_against_reference(results, REFERENCE, n_boot=200, seed=1).set_index("model_id")
    lo, hi = boot.loc["A", "specificity_lo"], boot.loc["A", "specificity_hi"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0 and "studies" in boot.loc["A", "ci_method"]
    # a reference for studies that are not in the run changes nothing
    more = accuracy_against_reference(results, {**REFERENCE, "t9": "normal"}, n_boot=0)
    assert list(more["n_studies"]) == [3, 3]
    with pytest.raises(ArchiveStatsError, match="Unknown reference"):
        accuracy_against_reference(results, {"t1": "cancer"}, n_boot=0)


def test_compare_bundles_every_table(results):
    c = compare(results, REFERENCE, n_boot=0)
    assert c.n_reference_studies == 3 and len(c.accuracy) == 2 and len(c.kappa) == 1 and len(c.nodules) == 1
    assert compare(results).accuracy is None


class TestReferenceCsv:
    def test_study_keys_and_accessions(self):
        ref = parse_reference_csv("\ufeffStudy_Key,Accession,Finding\nABCDEF0123456789,,Malignant\n,A-77,normal\n\n"
                                  .encode())
        assert ref.by_study_key == {"abcdef0123456789": "malignant"} and ref.by_accession == {"A-77": "normal"}

    @pytest.mark.parametrize("text, match", [
        ("study_key\nabc\n", "no 'finding'"),
        ("patient,finding\nx,normal\n", "study_key"),
        ("study_key,finding\nabc,cancer\n", "Line 2: unknown finding"),
        ("accession,finding\n,normal\n", "Line 2: neither"),
        ("accession,finding\nA1,normal\nA1,malignant\n", "Line 3: .*two different findings"),
    ])
    def test_refusals(self, text, match):
        with pytest.raises(ArchiveStatsError, match=match):
            parse_reference_csv(text)

    def test_not_utf8(self):
        with pytest.raises(ArchiveStatsError, match="UTF-8"):
            parse_reference_csv(np.array([0xFF, 0xFE, 0x41], dtype=np.uint8).tobytes() + b"\x80")
