"""Tests of core.domain: the out-of-distribution rule and label; SUS scoring (Brooke 1996) against worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from core.domain import (
    NOT_APPLICABLE,
    SUS_STATEMENTS,
    SusError,
    any_flagged,
    series_is_ood,
    shown_label,
    sus_score,
    validate_answers,
)


class TestSusStatements:
    def test_has_the_ten_standard_statements_in_order(self):
        assert len(SUS_STATEMENTS) == 10
        assert SUS_STATEMENTS[0] == "I think that I would like to use this system frequently."
        assert SUS_STATEMENTS[9] == "I needed to learn a lot of things before I could get going with this system."


class TestSusScore:
    def test_all_neutral_answers_score_50(self):
        assert sus_score([3] * 10) == 50.0

    def test_best_answers_score_100(self):
        assert sus_score([5, 1] * 5) == 100.0

    def test_worst_answers_score_0(self):
        assert sus_score([1, 5] * 5) == 0.0

    def test_all_fives_score_50_because_even_items_are_reversed(self):
        # odd items contribute 4 each (20), even items 0 each: 20 x 2.5 = 50
        assert sus_score([5] * 10) == 50.0

    def test_worked_example_matches_hand_computation(self):
        # answers 4,2,4,1,5,1,5,2,4,2:
        # odd items r-1: 3+3+4+4+3 = 17; even items 5-r: 3+4+4+3+3 = 17; (17+17) x 2.5 = 85
        assert sus_score([4, 2, 4, 1, 5, 1, 5, 2, 4, 2]) == 85.0

    def test_equals_the_sum_form_of_the_rule(self):
        # Equivalent published form: X = sum(odd) - 5, Y = 25 - sum(even), SUS = (X + Y) x 2.5
        answers = [2, 4, 3, 3, 4, 2, 5, 1, 1, 5]
        x = sum(answers[0::2]) - 5
        y = 25 - sum(answers[1::2])
        assert sus_score(answers) == (x + y) * 2.5 == 50.0  # X = 15 - 5, Y = 25 - 15

    def test_accepts_whole_floats(self):
        assert sus_score([3.0] * 10) == 50.0

    @pytest.mark.parametrize(
        "answers, fragment",
        [
            ([3] * 9, "got 9 answers"),
            ([3] * 11, "got 11 answers"),
            ([3] * 9 + [6], "statement 10"),
            ([0] + [3] * 9, "statement 1"),
            ([3, None] + [3] * 8, "statement 2 has no answer"),
            ([3, 2.5] + [3] * 8, "whole number"),
            ([True] + [3] * 9, "whole number"),
            ("3333333333", "list of ten"),
        ],
    )
    def test_refuses_incomplete_or_out_of_range_answers(self, answers, fragment):
        with pytest.raises(SusError, match=fragment):
            sus_score(answers)


class TestValidateAnswers:
    def test_returns_plain_ints(self):
        out = validate_answers((1.0, 2, 3, 4, 5, 1, 2, 3, 4, 5))
        assert out == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
        assert all(type(v) is int for v in out)

    def test_error_is_a_value_error(self):
        with pytest.raises(ValueError):
            validate_answers([])


class TestOutOfDistributionRule:
    def test_a_series_is_out_of_distribution_when_more_than_half_of_its_slices_are(self):
        assert not series_is_ood([True, False]) and series_is_ood([True, True, False])
        assert not series_is_ood([]) and not series_is_ood(np.zeros(5, bool))

    def test_one_flagged_slice_makes_the_result_not_applicable(self):
        assert any_flagged([False, True, False]) and not any_flagged([False, False]) and any_flagged(True)
        assert shown_label("malignant", False) == "malignant"
        assert shown_label("malignant", True) == f"{NOT_APPLICABLE} (outside the training data)"
        assert shown_label("benign", True, model_said=True) == (
            "not applicable (outside the training data; model said benign)")
