"""core.lungrads: the ACR Lung-RADS v2022 baseline solid-nodule table at every boundary."""

from __future__ import annotations

import math

import pytest

from core.domain import LungRads
from core.lungrads import (
    CAVEAT,
    LungRadsInputError,
    ReadNodule,
    mean_diameter_for_lungrads,
    suggest_lungrads,
)


class TestSuggestLungRads:
    @pytest.mark.parametrize(
        ("diameter", "category"),
        [(3.0, "2"), (5.9, "2"), (6.0, "3"), (7.9, "3"), (8.0, "4A"), (14.9, "4A"), (15.0, "4B"), (29.0, "4B"),
         (45.0, "4B")],
    )
    def test_every_boundary_of_the_solid_table(self, diameter, category):
        out = suggest_lungrads([ReadNodule("accept", diameter, "solid")])
        assert out.category == LungRads(category)
        assert out.diameter_mm == diameter and out.n_counted == 1
        assert f"{diameter:.1f} mm" in out.explanation and f"category {category}" in out.explanation
        assert out.caveat == CAVEAT and "growth" in out.caveat and "suggestion" in out.caveat.lower()

    def test_no_nodules_is_category_1(self):
        out = suggest_lungrads([])
        assert (out.category, out.diameter_mm, out.n_counted) == (LungRads.CAT_1, None, 0)
        assert "no accepted solid nodule" in out.explanation

    def test_the_largest_counted_nodule_decides(self):
        out = suggest_lungrads([ReadNodule("accept", 5.0, "solid"), ReadNodule("add", 9.5, "solid"),
                                ReadNodule("accept", 7.0, None)])
        assert out.category == LungRads.CAT_4A and out.diameter_mm == 9.5 and out.n_counted == 3
        assert "1 without a type counted as solid" in out.explanation

    @pytest.mark.parametrize("kind", ["part-solid", "ground-glass", "calcified"])
    def test_non_solid_nodules_are_ignored(self, kind):
        out = suggest_lungrads([ReadNodule("accept", 20.0, kind), ReadNodule("accept", 6.5, "solid")])
        assert out.category == LungRads.CAT_3 and out.n_counted == 1
        only = suggest_lungrads([ReadNodule("add", 20.0, kind)])
        assert only.category == LungRads.CAT_1

    @pytest.mark.parametrize("decision", ["reject", "withdraw", None])
    def test_rejected_and_withdrawn_nodules_are_ignored(self, decision):
        out = suggest_lungrads([ReadNodule(decision, 20.0, "solid"), ReadNodule("accept", 4.0, "solid")])
        assert out.category == LungRads.CAT_2 and out.diameter_mm == 4.0

    def test_untyped_nodules_can_be_left_out(self):
        nodules = [ReadNodule("accept", 16.0, None), ReadNodule("accept", 6.0, "solid")]
        assert suggest_lungrads(nodules).category == LungRads.CAT_4B
        assert suggest_lungrads(nodules, untyped_is_solid=False).category == LungRads.CAT_3

    def test_diameters_are_rounded_to_one_decimal_before_the_table(self):
        assert suggest_lungrads([ReadNodule("accept", 5.95, "solid")]).category == LungRads.CAT_3
        assert suggest_lungrads([ReadNodule("accept", 5.949, "solid")]).category == LungRads.CAT_2
        assert suggest_lungrads([ReadNodule("accept", 14.96, "solid")]).category == LungRads.CAT_4B

    @pytest.mark.parametrize(
        "bad",
        [ReadNodule("maybe", 6.0, "solid"), ReadNodule("accept", 6.0, "fluffy"), ReadNodule("accept", 0.0),
         ReadNodule("accept", -2.0), ReadNodule("add", math.nan), ReadNodule("add", "big")],
    )
    def test_bad_input_raises_a_typed_error(self, bad):
        with pytest.raises(LungRadsInputError, match="nodule"):
            suggest_lungrads([bad])

    def test_an_ignored_nodule_is_not_checked_for_its_diameter(self):
        assert suggest_lungrads([ReadNodule("reject", math.nan, "solid")]).category == LungRads.CAT_1


class TestMeanDiameter:
    @pytest.mark.parametrize(("given", "rounded"), [(5.95, 6.0), (5.94, 5.9), (7.85, 7.9), (14.949, 14.9),
                                                    (6, 6.0), (0.04, 0.0)])
    def test_rounds_half_up_to_one_decimal(self, given, rounded):
        assert mean_diameter_for_lungrads(given) == rounded

    @pytest.mark.parametrize("bad", [0, -1.0, math.inf, None, True])
    def test_refuses_what_is_no_diameter(self, bad):
        with pytest.raises(LungRadsInputError):
            mean_diameter_for_lungrads(bad)
