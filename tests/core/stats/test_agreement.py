"""core.stats.agreement: Cohen's kappa and Fleiss' kappa against hand-computed and published examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.stats.agreement import AgreementError, cohen_kappa, fleiss_kappa

# Reader (rows) against AI (columns), order normal, benign, malignant; 10 cases.
#          AI:N AI:B AI:M   row
# R:N       3    1    0      4
# R:B       1    2    1      4
# R:M       0    0    2      2
# col       4    3    3     10
# p_o = 7/10; p_e = (4*4 + 4*3 + 2*3)/100 = 0.34; kappa = (0.7 - 0.34)/(1 - 0.34) = 6/11.
# Linear weights |i - j|: observed weighted disagreement 1+1+1 = 3; expected
# (E = row x col / 10): 1.2*1 + 1.2*2 + 1.6*1 + 1.2*1 + 0.8*2 + 0.6*1 = 8.6; kappa_w = 1 - 3/8.6 = 28/43.
CASES = [("normal", "normal")] * 3 + [("normal", "benign"), ("benign", "normal")] + [("benign", "benign")] * 2 + [
    ("benign", "malignant")] + [("malignant", "malignant")] * 2
KAPPA = 6 / 11
KAPPA_LINEAR = 28 / 43


class TestCohenKappa:
    def test_hand_computed_unweighted_and_linear(self):
        reader, ai = zip(*CASES, strict=True)
        assert cohen_kappa(reader, ai) == pytest.approx(KAPPA)
        assert cohen_kappa(reader, ai, weights="linear") == pytest.approx(KAPPA_LINEAR)

    def test_undefined_cases_are_nan(self):
        assert math.isnan(cohen_kappa(["benign"], ["benign"]))
        assert math.isnan(cohen_kappa(["benign"] * 3, ["benign"] * 3))


class TestFleissKappa:
    def test_wikipedia_worked_example(self):
        # "Fleiss' kappa", Wikipedia worked example: 10 subjects, 14 raters, 5 categories;
        # P_bar = 0.378, P_e = 0.213, kappa = 0.210.
        counts = np.array([
            [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
        ])
        assert fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)

    def test_perfect_agreement_is_one(self):
        assert fleiss_kappa(np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3]])) == pytest.approx(1.0)

    def test_unequal_rater_numbers_are_refused(self):
        with pytest.raises(AgreementError, match="same number"):
            fleiss_kappa(np.array([[2, 0, 0], [1, 1, 1]]))
