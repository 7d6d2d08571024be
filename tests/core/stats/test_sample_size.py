"""Tests of core.stats.sample_size against RJafroc's documented values for the Van Dyke pilot."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from core.stats import mrmc
from core.stats import sample_size as ss
from tests.core.stats.mrmc_data import vandyke

#: The observed effect of the Van Dyke pilot as RJafroc's tests type it (treatment 1 minus 2).
EFFECT = -0.043800322


@pytest.fixture(scope="module")
def pilot() -> mrmc.MrmcResult:
    return mrmc.analyse_roc(vandyke())


class TestRJafrocValues:
    """RJafroc's tests of SsPowerGivenJK / SsSampleSizeKGivenJ (method "OR", dataset02, FOM Wilcoxon)."""

    def test_power_random_readers(self, pilot):
        # SsPowerGivenJK(dataset02, J = 6, K = 111): 0.5526116 (tolerance 5e-8), observed effect
        assert ss.power(6, 111, effect=pilot.differences[0].estimate, components=pilot.components) == pytest.approx(
            0.5526116, abs=5e-8)
        # J = 10, K = 165, effect -0.043800322: 0.80541995 (tolerance 1e-8)
        assert ss.power(10, 165, effect=EFFECT, components=pilot.components) == pytest.approx(0.80541995, abs=1e-8)

    def test_power_fixed_readers_and_fixed_cases(self, pilot):
        assert ss.power(10, 131, effect=EFFECT, components=pilot.components, analysis=ss.FRRC) == pytest.approx(
            0.80091813, abs=1e-8)
        assert ss.power(10, 53, effect=EFFECT, components=pilot.components, analysis=ss.RRFC) == pytest.approx(
            0.80496663, abs=1e-8)

    def test_cases_for_80_percent(self, pilot):
        # SsSampleSizeKGivenJ(dataset02, J = 6): K = 251; SsPowerTable row: 6 readers, 251 cases, power 0.801
        k = ss.cases_for_power(6, effect=pilot.differences[0].estimate, components=pilot.components)
        assert k == 251
        assert round(float(ss.power(6, 251, effect=EFFECT, components=pilot.components)), 3) == 0.801
        assert ss.power(6, 250, effect=EFFECT, components=pilot.components) <= 0.8


class TestFormula:
    def test_power_by_hand(self, pilot):
        """Hillis et al. 2011 eq. 10 written out for J = 4, K = 200."""
        c = pilot.components
        j, k = 4, 200
        extra = max(c.cov2 - c.cov3, 0)
        den = max(c.var_tr, 0) + c.n_cases / k * (c.var - c.cov1 + (j - 1) * extra)
        ddf = den ** 2 * (j - 1) / (max(c.var_tr, 0) + c.n_cases / k * (c.var - c.cov1 - extra)) ** 2
        ncp = 0.05 ** 2 * j / 2 / den
        expected = stats.ncf.sf(stats.f.isf(0.05, 1, ddf), 1, ddf, ncp)
        assert ss.power(j, k, effect=0.05, components=c) == pytest.approx(expected, rel=1e-12)

    def test_grid_shape_monotone_and_sign(self, pilot):
        size = ss.from_result(pilot)
        assert size.power.shape == (13, 10)
        assert list(size.readers) == list(range(3, 16)) and list(size.cases) == list(range(50, 501, 50))
        assert (np.diff(size.power, axis=0) > 0).all() and (np.diff(size.power, axis=1) > 0).all()
        assert size.effect == pytest.approx(EFFECT, abs=1e-9)
        flipped = ss.from_result(pilot, effect=-size.effect)
        np.testing.assert_allclose(flipped.power, size.power)
        assert size.table().loc[6, 250] == pytest.approx(size.power[3, 4])

    def test_smallest_design(self, pilot):
        size = ss.from_result(pilot)
        needed = dict(zip(size.readers.tolist(), size.cases_needed.tolist(), strict=True))
        assert needed[6] == 251 and needed[3] == -1  # 3 readers never reach 80 % (Var(T:R) dominates)
        reads = {j: j * k for j, k in needed.items() if k > 0}
        best = min(reads, key=lambda j: (reads[j], j))
        assert size.smallest == (best, needed[best])
        for j, k in needed.items():
            if k > 0:
                assert ss.power(j, k, effect=EFFECT, components=pilot.components) > 0.8
                assert ss.power(j, k - 1, effect=EFFECT, components=pilot.components) <= 0.8
        d = size.to_dict()
        assert d["cases_needed"][3] is None and d["smallest"] == list(size.smallest)

    def test_typed_effect(self, pilot):
        bigger = ss.from_result(pilot, effect=0.08)
        assert (bigger.power > ss.from_result(pilot).power).all()


class TestErrors:
    def test_zero_effect(self, pilot):
        with pytest.raises(mrmc.MrmcError, match="non-zero"):
            ss.sample_size(pilot.components, effect=0.0)

    def test_bad_analysis_alpha_and_readers(self, pilot):
        with pytest.raises(mrmc.MrmcError, match="Unknown analysis"):
            ss.power(5, 100, effect=0.05, components=pilot.components, analysis="DBM")
        with pytest.raises(mrmc.MrmcError, match="alpha"):
            ss.power(5, 100, effect=0.05, components=pilot.components, alpha=1.5)
        with pytest.raises(mrmc.MrmcError, match="2 readers"):
            ss.power(1, 100, effect=0.05, components=pilot.components)
