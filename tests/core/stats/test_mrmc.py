"""Tests of core.stats.mrmc: published figures, hand-computed cases, invariances, bad input."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from core.stats import mrmc
from tests.core.stats.mrmc_data import assert_published, simulated_froc, simulated_roc, vandyke, zanca

# ------------------------------------------------------------------------------ published figures
VANDYKE_AUCS = {
    "1": ["0.9196457", "0.8587762", "0.9038647", "0.9731079", "0.8297907"],
    "2": ["0.9478261", "0.9053140", "0.9217391", "0.9993559", "0.9299517"],
}
ZANCA_WAFROC = {  # README: rows treatments 1-5, columns readers 1, 3, 4, 5
    "1": ["0.7792667", "0.7248917", "0.7036250", "0.8050917"],
    "2": ["0.7870000", "0.7269000", "0.7226167", "0.8037833"],
    "3": ["0.7296917", "0.7157583", "0.6723083", "0.7726583"],
    "4": ["0.8101333", "0.7431167", "0.6943583", "0.8294083"],
    "5": ["0.7488000", "0.6822750", "0.6551750", "0.7712500"],
}


@pytest.fixture(scope="module")
def vd() -> mrmc.MrmcResult:
    return mrmc.analyse_roc(vandyke())


class TestVanDyke:
    """RJafroc dataset02: the README's published figures, to their printed digits (1e-6 or finer)."""

    def test_reader_aucs(self, vd):
        assert vd.treatments == ("1", "2") and vd.readers == ("1", "2", "3", "4", "5")
        for i, t in enumerate(vd.treatments):
            for j, published in enumerate(VANDYKE_AUCS[t]):
                assert_published(vd.foms[i, j], published)

    def test_mean_squares_and_covariances(self, vd):
        c = vd.components
        assert_published(c.ms_t, "0.004796171")
        assert_published(c.ms_tr, "0.0005510306")
        assert_published(c.cov1, "0.0003466137")
        assert_published(c.cov2, "0.0003440748")
        assert_published(c.cov3, "0.0002390284")
        # RJafroc's documented SsPowerGivenJK example (Var(T:R) and Var of dataset02)
        assert_published(c.var_tr, "0.00020040252")
        assert_published(c.var, "0.00080228827")

    def test_random_reader_test(self, vd):
        assert vd.random.ndf == 1
        assert_published(vd.random.f, "4.456319")
        assert_published(vd.random.ddf, "15.25967")  # published to 5 decimals
        assert_published(vd.random.p, "0.05166569")

    def test_difference_and_interval(self, vd):
        (d,) = vd.differences
        assert d.treatments == ("1", "2")
        assert_published(d.estimate, "-0.04380032")
        assert_published(d.ci95[0], "-0.0879594986")
        assert_published(d.ci95[1], "0.0003588544")
        # with two treatments the t test of the difference is the F test
        assert d.p == pytest.approx(vd.random.p, rel=1e-12)
        assert d.statistic ** 2 == pytest.approx(vd.random.f, rel=1e-12)

    def test_auc_is_the_reader_metrics_definition(self):
        """Same empirical AUC as core.reader_metrics (sklearn.metrics.roc_auc_score, ties 1/2)."""
        reads = vandyke()
        data = mrmc.roc_data(reads)
        fom, _ = mrmc.figures_of_merit(data)
        for i, t in enumerate(data.treatments):
            for j, r in enumerate(data.readers):
                g = reads[(reads["treatment"] == t) & (reads["reader"] == r)]
                expected = roc_auc_score(g["truth"].astype(int), g["rating"].astype(float))
                assert fom[i, j] == pytest.approx(expected, abs=1e-15)


class TestZanca:
    """RJafroc dataset04: the 20 published wAFROC FOMs; ROC reduction's published variance components."""

    def test_wafroc_foms(self):
        truth, marks = zanca()
        result = mrmc.analyse_froc(truth, marks)
        assert result.fom_name == mrmc.WAFROC
        assert result.readers == ("1", "3", "4", "5") and result.treatments == ("1", "2", "3", "4", "5")
        assert (result.n_normal, result.n_abnormal) == (100, 100)
        for i, t in enumerate(result.treatments):
            for j, published in enumerate(ZANCA_WAFROC[t]):
                assert_published(result.foms[i, j], published)

    def test_roc_reduction_variance_components(self):
        truth, marks = zanca()
        result = mrmc.analyse_froc(truth, marks, fom=mrmc.ROC_AUC)
        c = result.components
        for value, published in ((c.ms_t, "0.001897"), (c.ms_tr, "0.000462"), (c.var, "0.000789"),
                                 (c.cov1, "0.000295"), (c.cov2, "0.000233"), (c.cov3, "0.000212")):
            assert_published(value, published)
        assert_published(result.random.p, "0.03054456")  # RJafrocBook, OR applications, dataset04 as ROC

    def test_wafroc_or_analysis_as_rjafroc_prints_it(self):
        """StSignificanceTesting(dataset04, FOM = "wAFROC", method = "OR") as printed in Chakraborty's
        RJafrocBook (github dpc10ster/RJafrocBook, docs/10C-or-analysis-applications.md, "dataset04, FROC")."""
        truth, marks = zanca()
        r = mrmc.analyse_froc(truth, marks)
        c = r.components
        for value, published in ((c.ms_t, "0.00231654149"), (c.ms_tr, "0.00016960349"), (c.cov1, "0.00042203598"),
                                 (c.cov2, "0.00033615564"), (c.cov3, "0.00030431124"), (c.var, "0.00092808365"),
                                 (c.var_tr, "-0.00030459978"), (r.random.f, "7.8002997"),
                                 (r.random.ddf, "36.793343"), (r.random.p, "0.000117105"),
                                 (r.random.ms_den, "0.00029698109"), (r.fixed.chisq, "15.403026"),
                                 (r.fixed.p, "0.0039343238"), (r.fixed.ms_den, "0.00060158087")):
            assert_published(value, published)
        assert r.random.ndf == 4 and r.fixed.df == 4
        d12, d45 = r.difference("1", "2"), r.difference("4", "5")
        assert_published(d12.estimate, "-0.0068562500")
        assert_published(d12.ci95[0], "-0.0315514439")
        assert_published(d12.ci95[1], "0.0178389439")
        assert_published(d45.ci95[0], "0.0301839727")
        assert_published(d45.ci95[1], "0.0795743606")
        f12 = r.difference("1", "2", fixed_readers=True)
        assert_published(f12.ci95[0], "-0.0408485147")
        assert_published(f12.ci95[1], "0.027136015")


# ----------------------------------------------------------------------------- hand computations
def psi(x: float, y: float) -> Fraction:
    """Kernel: 1 if the diseased-side rating y is higher, 1/2 if equal (also -inf == -inf), else 0."""
    return Fraction(1) if y > x else Fraction(1, 2) if y == x else Fraction(0)


def auc_by_hand(normal: list[float], abnormal: list[float]) -> Fraction:
    return sum((psi(x, y) for x in normal for y in abnormal), Fraction(0)) / (len(normal) * len(abnormal))


def or_by_hand(foms: dict, jk: dict, treatments: list[str], readers: list[str]) -> dict[str, Fraction]:
    """Textbook OR formulas in exact arithmetic: jackknife cov = (K-1)/K sum (x - mean)(y - mean)."""
    k = len(next(iter(jk.values())))

    def cov(u, v):
        mu, mv = sum(u) / k, sum(v) / k
        return Fraction(k - 1, k) * sum((a - mu) * (b - mv) for a, b in zip(u, v, strict=True))

    pairs = [(a, b) for a in foms for b in foms]
    groups = {"var": [], "cov1": [], "cov2": [], "cov3": []}
    for (t1, r1), (t2, r2) in pairs:
        name = {(True, True): "var", (False, True): "cov1", (True, False): "cov2", (False, False): "cov3"}[
            (t1 == t2, r1 == r2)]
        groups[name].append(cov(jk[t1, r1], jk[t2, r2]))
    out = {name: sum(v) / len(v) for name, v in groups.items()}
    n_t, n_r = len(treatments), len(readers)
    mean_t = {t: sum(foms[t, r] for r in readers) / n_r for t in treatments}
    mean_r = {r: sum(foms[t, r] for t in treatments) / n_t for r in readers}
    grand = sum(foms.values()) / (n_t * n_r)
    out["ms_t"] = n_r * sum((mean_t[t] - grand) ** 2 for t in treatments) / (n_t - 1)
    out["ms_tr"] = sum((foms[t, r] - mean_t[t] - mean_r[r] + grand) ** 2 for t in treatments for r in readers) / (
        (n_t - 1) * (n_r - 1))
    out["den"] = out["ms_tr"] + n_r * max(out["cov2"] - out["cov3"], Fraction(0))
    out["f"] = out["ms_t"] / out["den"]
    out["ddf"] = out["den"] ** 2 / (out["ms_tr"] ** 2 / ((n_t - 1) * (n_r - 1)))
    out["diff"] = mean_t[treatments[0]] - mean_t[treatments[1]]
    return out


# 2 treatments (A, B) x 2 readers (1, 2) x 6 cases: n1-n3 without disease, a1-a3 with disease.
HAND_ROC = {  # (treatment, reader): (ratings of n1, n2, n3), (ratings of a1, a2, a3)
    ("A", "1"): ([4, 3, 3], [3, 4, 3]),
    ("A", "2"): ([3, 3, 3], [4, 5, 2]),
    ("B", "1"): ([1, 2, 3], [3, 4, 3]),
    ("B", "2"): ([3, 2, 4], [2, 2, 4]),
}


def hand_roc_reads() -> pd.DataFrame:
    rows = []
    for (t, r), (normal, abnormal) in HAND_ROC.items():
        rows += [{"reader": r, "treatment": t, "case": f"n{k + 1}", "truth": 0, "rating": x}
                 for k, x in enumerate(normal)]
        rows += [{"reader": r, "treatment": t, "case": f"a{k + 1}", "truth": 1, "rating": x}
                 for k, x in enumerate(abnormal)]
    return pd.DataFrame(rows)


class TestHandComputedRoc:
    def test_aucs(self):
        # A/1: a1=3 beats none of n=(4,3,3), ties two: 0+1/2+1/2 = 1; a2=4: 1/2+1+1 = 5/2; a3=3: 1
        #      -> (1 + 5/2 + 1) / 9 = 1/2
        # A/2: a1=4: 3; a2=5: 3; a3=2: 0 -> 6/9 = 2/3
        # B/1: a1=3 vs (1,2,3): 1+1+1/2; a2=4: 3; a3=3: 5/2 -> 8/9
        # B/2: a1=2 vs (3,2,4): 0+1/2+0; a2=2: 1/2; a3=4: 1+1+1/2 -> 7/2 / 9 = 7/18
        by_hand = {("A", "1"): Fraction(1, 2), ("A", "2"): Fraction(2, 3), ("B", "1"): Fraction(8, 9),
                   ("B", "2"): Fraction(7, 18)}
        for key, (normal, abnormal) in HAND_ROC.items():
            assert auc_by_hand(normal, abnormal) == by_hand[key]
        result = mrmc.analyse_roc(hand_roc_reads())
        for i, t in enumerate(result.treatments):
            for j, r in enumerate(result.readers):
                assert result.foms[i, j] == pytest.approx(float(by_hand[t, r]), abs=1e-15)

    def test_jackknife(self):
        # A/1 rows (normal n against a1..a3): n1=4: 0+1/2+0 = 1/2; n2=3: 1/2+1+1/2 = 2; n3=3: 2 (total 9/2)
        #     columns (a against n1..n3): a1: 1, a2: 5/2, a3: 1
        # leaving out n1: (9/2 - 1/2) / (2 x 3) = 2/3; n2, n3: (9/2 - 2)/6 = 5/12
        # leaving out a1: (9/2 - 1) / (3 x 2) = 7/12; a2: (9/2 - 5/2)/6 = 1/3; a3: 7/12
        data = mrmc.roc_data(hand_roc_reads())
        # cases are sorted as labels: a1 < a2 < a3 < n1 < ... but truth splits them: normal first
        assert data.normal_cases == ("n1", "n2", "n3") and data.abnormal_cases == ("a1", "a2", "a3")
        _, jk = mrmc.figures_of_merit(data)
        expected_a1 = [Fraction(2, 3), Fraction(5, 12), Fraction(5, 12), Fraction(7, 12), Fraction(1, 3),
                       Fraction(7, 12)]
        np.testing.assert_allclose(jk[0, 0], [float(x) for x in expected_a1], atol=1e-15)
        for i, t in enumerate(data.treatments):
            for j, r in enumerate(data.readers):
                normal, abnormal = HAND_ROC[t, r]
                left_out = [auc_by_hand(normal[:k] + normal[k + 1:], abnormal) for k in range(3)]
                left_out += [auc_by_hand(normal, abnormal[:k] + abnormal[k + 1:]) for k in range(3)]
                np.testing.assert_allclose(jk[i, j], [float(x) for x in left_out], atol=1e-15)

    def test_variance_components_and_f(self):
        foms = {k: auc_by_hand(*v) for k, v in HAND_ROC.items()}
        jk = {k: [auc_by_hand(n[:i] + n[i + 1:], a) for i in range(3)] + [auc_by_hand(n, a[:i] + a[i + 1:])
                                                                          for i in range(3)]
              for k, (n, a) in HAND_ROC.items()}
        h = or_by_hand(foms, jk, ["A", "B"], ["1", "2"])
        # By hand (exact): Var 205/2592, Cov1 -5/108, Cov2 55/2592, Cov3 -5/1728; treatment means A 7/12,
        # B 23/36; MS(T) = 2 (7/12 - 23/36)^2 = 1/324; MS(T:R) = 1/9;
        # den = 1/9 + 2 (55/2592 + 5/1728) = 413/2592; F = (1/324) / (413/2592) = 8/413;
        # ddf = (413/2592)^2 / (1/9)^2 = 170569/82944
        assert (h["var"], h["cov1"], h["cov2"], h["cov3"]) == (
            Fraction(205, 2592), Fraction(-5, 108), Fraction(55, 2592), Fraction(-5, 1728))
        assert (h["ms_t"], h["ms_tr"], h["f"], h["ddf"]) == (
            Fraction(1, 324), Fraction(1, 9), Fraction(8, 413), Fraction(170569, 82944))
        result = mrmc.analyse_roc(hand_roc_reads())
        c = result.components
        for name, value in (("var", c.var), ("cov1", c.cov1), ("cov2", c.cov2), ("cov3", c.cov3),
                            ("ms_t", c.ms_t), ("ms_tr", c.ms_tr)):
            assert value == pytest.approx(float(h[name]), abs=1e-15), name
        assert result.random.f == pytest.approx(float(h["f"]), rel=1e-12)
        assert result.random.ddf == pytest.approx(float(h["ddf"]), rel=1e-12)
        from scipy import stats
        assert result.random.p == pytest.approx(stats.f.sf(float(h["f"]), 1, float(h["ddf"])), rel=1e-12)
        d = result.differences[0]
        assert d.estimate == pytest.approx(float(h["diff"]), abs=1e-15)
        se = math.sqrt(2 * float(h["den"]) / 2)
        q = stats.t.ppf(0.975, float(h["ddf"]))
        assert d.ci95 == pytest.approx((float(h["diff"]) - q * se, float(h["diff"]) + q * se), rel=1e-12)
        # fixed readers: den = Var - Cov1 + (J - 1) max(Cov2 - Cov3, 0) = 205/2592 + 5/108 + 55/2592 + 5/1728
        fixed_den = h["var"] - h["cov1"] + (h["cov2"] - h["cov3"])
        assert result.fixed.ms_den == pytest.approx(float(fixed_den), rel=1e-12)
        assert result.fixed.chisq == pytest.approx(float(h["ms_t"] / fixed_den), rel=1e-12)


# wAFROC: same 2 x 2 design; n1-n3 without lesions; a1 one lesion, a2 two (weights blank = 1/2 each),
# a3 two with weights 1/4 and 3/4. Marks: (reader, treatment, case, lesion, rating); lesion 0 = NL.
HAND_TRUTH = pd.DataFrame([
    {"case": "n1", "lesion": 0, "weight": ""}, {"case": "n2", "lesion": 0, "weight": ""},
    {"case": "n3", "lesion": 0, "weight": ""}, {"case": "a1", "lesion": 1, "weight": ""},
    {"case": "a2", "lesion": 1, "weight": ""}, {"case": "a2", "lesion": 2, "weight": ""},
    {"case": "a3", "lesion": 1, "weight": "0.25"}, {"case": "a3", "lesion": 2, "weight": "0.75"},
])
HAND_WEIGHTS = {("a1", 1): Fraction(1), ("a2", 1): Fraction(1, 2), ("a2", 2): Fraction(1, 2),
                ("a3", 1): Fraction(1, 4), ("a3", 2): Fraction(3, 4)}
HAND_MARKS = {  # (treatment, reader): [(case, lesion, rating), ...]
    ("A", "1"): [("n1", 0, 2), ("n3", 0, 1), ("n3", 0, 3), ("a2", 0, 5), ("a1", 1, 4), ("a2", 1, 3), ("a3", 2, 2)],
    ("A", "2"): [("n1", 0, 1), ("n2", 0, 2), ("a1", 1, 2), ("a2", 1, 2), ("a2", 2, 4), ("a3", 1, 3)],
    ("B", "1"): [("n2", 0, 1), ("n3", 0, 2), ("a1", 1, 5), ("a2", 1, 4), ("a2", 2, 3), ("a3", 1, 2), ("a3", 2, 4)],
    ("B", "2"): [("n1", 0, 3), ("a1", 0, 2), ("a2", 1, 3), ("a2", 2, 3), ("a3", 1, 4), ("a3", 2, 1),
                 ("a3", 2, 0)],  # two marks on a3 lesion 2: the higher (1) counts
}
NEG = -math.inf


def hand_marks_frame() -> pd.DataFrame:
    return pd.DataFrame([{"reader": r, "treatment": t, "case": c, "lesion": les, "rating": x}
                         for (t, r), marks in HAND_MARKS.items() for c, les, x in marks])


def wafroc_by_hand(marks, normal_cases, lesions) -> Fraction:
    """Chakraborty's definition with loops: highest NL per case without lesions vs each weighted lesion."""
    fp = [max([x for c, les, x in marks if c == n and les == 0], default=NEG) for n in normal_cases]
    ll = {(c, i): max([x for cc, les, x in marks if cc == c and les == i], default=NEG) for c, i in lesions}
    abnormal = sorted({c for c, _ in lesions})
    total = sum((HAND_WEIGHTS[key] * psi(f, ll[key]) for f in fp for key in lesions), Fraction(0))
    return total / (len(fp) * len(abnormal))


class TestHandComputedWafroc:
    normal = ["n1", "n2", "n3"]
    lesions = list(HAND_WEIGHTS)

    def test_fom(self):
        # A/1: highest NL on n1, n2, n3 = 2, -inf, 3 (the NL 5 on a2 does not enter).
        # a1/1 (w 1) = 4 beats all three: 3 x 1 = 3; a2/1 (w 1/2) = 3: 1 + 1 + 1/2 -> 5/4;
        # a2/2 (w 1/2) unmarked: ties n2's -inf: 1/2 x 1/2 = 1/4; a3/1 (w 1/4) unmarked: 1/2 x 1/4 = 1/8;
        # a3/2 (w 3/4) = 2: 1/2 + 1 + 0 -> 9/8. Sum 3 + 5/4 + 1/4 + 1/8 + 9/8 = 23/4; / (3 x 3) = 23/36
        assert wafroc_by_hand(HAND_MARKS["A", "1"], self.normal, self.lesions) == Fraction(23, 36)
        result = mrmc.analyse_froc(HAND_TRUTH, hand_marks_frame())
        for i, t in enumerate(result.treatments):
            for j, r in enumerate(result.readers):
                expected = wafroc_by_hand(HAND_MARKS[t, r], self.normal, self.lesions)
                assert result.foms[i, j] == pytest.approx(float(expected), abs=1e-15)

    def test_jackknife_and_f(self):
        keys = list(HAND_MARKS)
        cases = self.normal + ["a1", "a2", "a3"]
        foms, jk = {}, {}
        for key in keys:
            marks = HAND_MARKS[key]
            foms[key] = wafroc_by_hand(marks, self.normal, self.lesions)
            jk[key] = [wafroc_by_hand(marks, [n for n in self.normal if n != out],
                                      [les for les in self.lesions if les[0] != out]) for out in cases]
        h = or_by_hand(foms, jk, ["A", "B"], ["1", "2"])
        result = mrmc.analyse_froc(HAND_TRUTH, hand_marks_frame())
        data = mrmc.froc_data(HAND_TRUTH, hand_marks_frame())
        _, jk_module = mrmc.figures_of_merit(data)
        for i, t in enumerate(data.treatments):
            for j, r in enumerate(data.readers):
                np.testing.assert_allclose(jk_module[i, j], [float(x) for x in jk[t, r]], atol=1e-15)
        assert result.random.f == pytest.approx(float(h["f"]), rel=1e-12)
        assert result.random.ddf == pytest.approx(float(h["ddf"]), rel=1e-12)
        assert result.components.cov2 == pytest.approx(float(h["cov2"]), abs=1e-15)

    def test_roc_reduction(self):
        # A/1 case ratings: n1 2, n2 -inf, n3 3; a1 4, a2 max(NL 5, 3) = 5, a3 max(-inf, 2) = 2
        # AUC: a1 beats 3, a2 beats 3, a3 = 2: 1/2 + 1 + 0 -> 15/2 / 9 = 5/6
        data = mrmc.froc_to_roc(mrmc.froc_data(HAND_TRUTH, hand_marks_frame()))
        np.testing.assert_array_equal(data.normal[0, 0], [2, NEG, 3])
        np.testing.assert_array_equal(data.abnormal[0, 0], [4, 5, 2])
        fom, _ = mrmc.figures_of_merit(data)
        assert fom[0, 0] == pytest.approx(5 / 6, abs=1e-15)


# --------------------------------------------------------------------------------- invariances
def _assert_same(a: mrmc.MrmcResult, b: mrmc.MrmcResult, reader_map: dict, treatment_map: dict) -> None:
    """b is a's analysis after relabelling readers and treatments (maps: a's label -> b's label)."""
    for i, t in enumerate(a.treatments):
        for j, r in enumerate(a.readers):
            bi, bj = b.treatments.index(treatment_map[t]), b.readers.index(reader_map[r])
            assert b.foms[bi, bj] == pytest.approx(a.foms[i, j], abs=1e-12)
    for name in ("var", "cov1", "cov2", "cov3", "ms_t", "ms_tr"):
        assert getattr(b.components, name) == pytest.approx(getattr(a.components, name), rel=1e-9, abs=1e-15)
    assert (b.random.f, b.random.ddf, b.random.p) == pytest.approx((a.random.f, a.random.ddf, a.random.p), rel=1e-9)
    assert b.fixed.chisq == pytest.approx(a.fixed.chisq, rel=1e-9)
    for d in a.differences:
        e = b.difference(treatment_map[d.treatments[0]], treatment_map[d.treatments[1]])
        assert (e.estimate, e.p, *e.ci95) == pytest.approx((d.estimate, d.p, *d.ci95), rel=1e-9, abs=1e-15)


ROC_BASE = simulated_roc(n_readers=3, n_normal=6, n_abnormal=5, seed=11, treatments=("aided", "unaided", "x"))
ROC_RESULT = mrmc.analyse_roc(ROC_BASE)
FROC_TRUTH, FROC_MARKS = simulated_froc(3, 6, 6, seed=5)
FROC_RESULT = mrmc.analyse_froc(FROC_TRUTH, FROC_MARKS)


class TestInvariance:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.integers(0, 2 ** 32 - 1), names=st.permutations(["zeta", "7", "alpha", "10"]),
           tnames=st.permutations(["unaided", "aided", "AI shown at once", "3"]))
    def test_roc_shuffles_and_renames(self, seed, names, tnames):
        rng = np.random.default_rng(seed)
        df = ROC_BASE.iloc[rng.permutation(len(ROC_BASE))].reset_index(drop=True)
        readers = sorted(ROC_BASE["reader"].unique())
        reader_map = {mrmc.label(r): names[k] for k, r in enumerate(readers)}
        treatment_map = {t: tnames[k] for k, t in enumerate(["aided", "unaided", "x"])}
        cases = sorted(ROC_BASE["case"].unique())
        case_map = dict(zip(cases, rng.permutation(len(cases)) + 100, strict=True))
        df = df.assign(reader=df["reader"].map(lambda r: reader_map[mrmc.label(r)]),
                       treatment=df["treatment"].map(treatment_map), case=df["case"].map(case_map))
        _assert_same(ROC_RESULT, mrmc.analyse_roc(df), reader_map, treatment_map)

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.integers(0, 2 ** 32 - 1), names=st.permutations(["b", "a", "30", "4"]))
    def test_froc_shuffles_and_renames(self, seed, names):
        rng = np.random.default_rng(seed)
        reader_map = {mrmc.label(r): names[k] for k, r in enumerate(sorted(FROC_MARKS["reader"].unique()))}
        treatment_map = {"aided": "with AI", "unaided": "zz without"}
        cases = sorted(FROC_TRUTH["case"].unique())
        case_map = dict(zip(cases, [f"c{v}" for v in rng.permutation(len(cases))], strict=True))
        truth = FROC_TRUTH.iloc[rng.permutation(len(FROC_TRUTH))].assign(
            case=lambda d: d["case"].map(case_map))
        marks = FROC_MARKS.iloc[rng.permutation(len(FROC_MARKS))].assign(
            case=lambda d: d["case"].map(case_map), treatment=lambda d: d["treatment"].map(treatment_map),
            reader=lambda d: d["reader"].map(lambda r: reader_map[mrmc.label(r)]))
        _assert_same(FROC_RESULT, mrmc.analyse_froc(truth, marks), reader_map, treatment_map)

    def test_row_order_gives_identical_arrays(self):
        shuffled = ROC_BASE.sample(frac=1, random_state=3)
        a, b = mrmc.roc_data(ROC_BASE), mrmc.roc_data(shuffled)
        np.testing.assert_array_equal(a.normal, b.normal)
        np.testing.assert_array_equal(a.abnormal, b.abnormal)

    def test_treatment_order_sets_the_direction(self):
        a = mrmc.analyse_roc(ROC_BASE, treatment_order=["unaided", "aided", "x"])
        assert a.differences[0].treatments == ("unaided", "aided")
        assert a.differences[0].estimate == pytest.approx(-ROC_RESULT.differences[0].estimate, abs=1e-15)
        assert a.random.f == pytest.approx(ROC_RESULT.random.f, rel=1e-12)


# ----------------------------------------------------------------------------------- bad input
def roc_rows(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(mrmc.ROC_COLUMNS), index=range(2, 2 + len(rows)))


def crossed(readers=("1", "2"), treatments=("u", "a"), normal=("1", "2"), abnormal=("3", "4")) -> list:
    return [(r, t, c, int(c in abnormal), 3) for t in treatments for r in readers for c in (*normal, *abnormal)]


class TestBadInput:
    def test_missing_column(self):
        with pytest.raises(mrmc.MissingColumnsError, match="truth"):
            mrmc.analyse_roc(pd.DataFrame({"reader": [1], "treatment": [1], "case": [1], "rating": [1]}))

    def test_bad_rows_one_line_each(self):
        rows = crossed()
        rows[0] = ("1", "u", "1", 0, "high")          # row 2: rating not a number
        rows[1] = ("1", "u", "2", 2, "nan")           # row 3: truth 2 and rating NaN: one line
        rows[2] = ("1", "u", "3", 0, 4)               # row 4: case 3 has truth 1 elsewhere
        rows[3] = ("1", "u", "3", 1, 4)               # row 5: reader 1, u, case 3 again
        with pytest.raises(mrmc.BadRowsError) as info:
            mrmc.analyse_roc(roc_rows(*rows))
        problems = info.value.problems
        assert problems[0] == "row 2: rating 'high' is not a number"
        assert problems[1].startswith("row 3: rating 'nan' is not a number; truth 2 must be 0")
        assert "row 5:" in "\n".join(problems) and "read again (first at row 4)" in "\n".join(problems)
        assert any("case 3 has truth" in p for p in problems)
        assert info.value.table == "reads"
        assert all(p.startswith("row ") for p in problems) and len({p.split(":")[0] for p in problems}) == len(problems)

    def test_not_fully_crossed_names_the_missing_reads(self):
        rows = [r for r in crossed() if not (r[0] == "2" and r[1] == "a" and r[2] in ("1", "4"))]
        with pytest.raises(mrmc.NotFullyCrossedError) as info:
            mrmc.analyse_roc(roc_rows(*rows))
        assert set(info.value.missing) == {("2", "a", "1"), ("2", "a", "4")}
        assert "reader 2, treatment a, case 1" in str(info.value) and "2 of 16 reads are missing" in str(info.value)

    def test_one_reader(self):
        with pytest.raises(mrmc.TooFewReadersError, match="at least 2"):
            mrmc.analyse_roc(roc_rows(*crossed(readers=("1",))))

    def test_one_treatment(self):
        with pytest.raises(mrmc.TooFewTreatmentsError, match="at least 2"):
            mrmc.analyse_roc(roc_rows(*crossed(treatments=("u",))))

    @pytest.mark.parametrize(("normal", "abnormal", "word"), [((), ("3", "4"), "No case without"),
                                                               (("1", "2"), ("3",), "Only 1 case with")])
    def test_too_few_cases_of_a_truth_state(self, normal, abnormal, word):
        with pytest.raises(mrmc.TooFewCasesError, match=word):
            mrmc.analyse_roc(roc_rows(*crossed(normal=normal, abnormal=abnormal)))

    def test_bad_treatment_order(self):
        with pytest.raises(mrmc.MrmcError, match="each treatment once"):
            mrmc.analyse_roc(roc_rows(*crossed()), treatment_order=["u", "x"])

    def test_degenerate_data_give_nan_not_a_crash(self):
        # every rating equal: every AUC is 1/2, every jackknife value 1/2, all mean squares and covariances 0
        result = mrmc.analyse_roc(roc_rows(*crossed()))
        np.testing.assert_array_equal(result.foms, 0.5)
        assert math.isnan(result.random.f) and math.isnan(result.random.p) and math.isnan(result.differences[0].p)
        assert result.to_dict()["f"] is None
        assert "no interval" in mrmc.plain_sentence(result) and "p not defined" in mrmc.plain_sentence(result)
        assert "cannot tell" in mrmc.plain_sentence(result)

    def test_errors_are_value_errors(self):
        for cls in (mrmc.BadRowsError, mrmc.MissingColumnsError, mrmc.NotFullyCrossedError,
                    mrmc.TooFewReadersError, mrmc.TooFewTreatmentsError, mrmc.TooFewCasesError):
            assert issubclass(cls, mrmc.MrmcError) and issubclass(cls, ValueError)


class TestBadFrocInput:
    def marks(self, *extra) -> pd.DataFrame:
        df = hand_marks_frame()
        if extra:
            df = pd.concat([df, pd.DataFrame(list(extra), columns=list(mrmc.MARK_COLUMNS))], ignore_index=True)
        return df.set_axis(range(2, 2 + len(df)))

    def test_unknown_case_lesion_and_rating(self):
        n = len(hand_marks_frame())
        marks = self.marks(("1", "A", "x9", 0, 3), ("1", "A", "a1", 2, 3), ("1", "A", "n1", 1, 3),
                           ("1", "A", "a2", 1, "five"))
        with pytest.raises(mrmc.BadRowsError) as info:
            mrmc.analyse_froc(HAND_TRUTH, marks)
        p = info.value.problems
        assert info.value.table == "marks"
        assert p == [f"row {n + 2}: case x9 is not in the truth table",
                     f"row {n + 3}: case a1 has no lesion 2 in the truth table (its lesions: 1)",
                     f"row {n + 4}: case n1 has no lesion 1 in the truth table (it has no lesions)",
                     f"row {n + 5}: rating 'five' is not a number"]

    def test_bad_truth(self):
        truth = pd.DataFrame([{"case": "n1", "lesion": 0, "weight": ""}, {"case": "n1", "lesion": 1, "weight": ""},
                              {"case": "a1", "lesion": 1, "weight": "0.2"}, {"case": "a1", "lesion": 2, "weight": ""},
                              {"case": "a2", "lesion": "x", "weight": ""}, {"case": "a3", "lesion": 1, "weight": ""},
                              {"case": "a3", "lesion": 1, "weight": ""}], index=range(2, 9))
        with pytest.raises(mrmc.BadRowsError) as info:
            mrmc.analyse_froc(truth, hand_marks_frame())
        text = "\n".join(info.value.problems)
        assert info.value.table == "truth"
        assert "row 6: lesion 'x' must be 0" in text
        assert "row 8: case a3 lesion 1 is listed again (first at row 7)" in text
        assert "row 2: case n1 is listed as a case without lesions (lesion 0) and with lesions [1]" in text

    def test_weights_must_sum_to_one(self):
        truth = HAND_TRUTH.copy()
        truth.loc[truth["case"] == "a3", "weight"] = ["0.5", "0.75"]
        with pytest.raises(mrmc.BadRowsError, match="weights of case a3 must all be blank"):
            mrmc.analyse_froc(truth, hand_marks_frame())

    def test_reader_without_marks_in_a_treatment(self):
        marks = hand_marks_frame()
        marks = marks[~((marks["reader"] == "2") & (marks["treatment"] == "B"))]
        with pytest.raises(mrmc.NotFullyCrossedError, match="reader 2 in treatment B"):
            mrmc.analyse_froc(HAND_TRUTH, marks)
        # declared readers and treatments: a read without marks is valid (its ratings are all -inf)
        result = mrmc.analyse_froc(HAND_TRUTH, marks, readers=["1", "2"], treatments=["A", "B"])
        # every lesion unmarked and every case without lesions -inf: each comparison ties, FOM 1/2
        assert result.foms[1, 1] == pytest.approx(0.5)

    def test_mark_from_an_undeclared_reader(self):
        with pytest.raises(mrmc.BadRowsError, match="reader 2 is not one of the study's readers"):
            mrmc.analyse_froc(HAND_TRUTH, hand_marks_frame(), readers=["1"], treatments=["A", "B"])

    def test_unknown_fom(self):
        with pytest.raises(mrmc.MrmcError, match="Unknown figure of merit"):
            mrmc.analyse_froc(HAND_TRUTH, hand_marks_frame(), fom="JAFROC")


# -------------------------------------------------------------------------------- the sentence
class TestPlainSentence:
    def test_not_significant(self, vd):
        s = mrmc.plain_sentence(vd)
        assert s.startswith("With 5 readers and 114 cases the study cannot tell whether treatment 1 and treatment 2 "
                            "differ: treatment 1 minus treatment 2 ROC AUC -0.04, 95 % CI -0.09 to 0.00")
        assert "p = 0.052" in s

    def test_question_and_direction(self):
        result = mrmc.analyse_roc(hand_roc_reads())
        s = mrmc.plain_sentence(result, treatment="B", reference="A", question="the AI helps")
        d = result.difference("B", "A")
        assert s == (f"With 2 readers and 6 cases the study cannot tell whether the AI helps: B minus A ROC AUC "
                     f"{d.estimate:.2f}, 95 % CI {d.ci95[0]:.2f} to {d.ci95[1]:.2f} (p = {d.p:.2f}; random readers "
                     "and random cases).")

    def test_significant(self):
        truth, marks = zanca()
        result = mrmc.analyse_froc(truth, marks)
        d = result.difference("4", "5")
        assert d.p < 0.05 and d.ci95[0] > 0
        assert mrmc.plain_sentence(result, treatment="4", reference="5").startswith(
            "With 4 readers and 200 cases, treatment 4 is better than treatment 5: treatment 4 minus treatment 5 "
            "wAFROC 0.05")
        assert " is worse than treatment 4" in mrmc.plain_sentence(result, treatment="5", reference="4")

    def test_json_ready(self, vd):
        import json
        d = vd.to_dict()
        text = json.dumps(d, allow_nan=False)
        assert json.loads(text)["foms"]["2"]["4"] == pytest.approx(0.9993559, abs=5e-8)
        assert d["differences"][0]["treatments"] == ["1", "2"]
