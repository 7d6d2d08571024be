"""core.stats.lesions: the lesion-localisation rule, every outcome worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.stats import lesions as sl

# Case A: spacing (2.0, 0.5, 0.5) mm -> 3-D distances in mm.
#   lesion 1: slice 10, (x 100, y 100), 10 mm (radius 5); lesion 2: slice 10, (130, 100), 6 mm (radius 3).
# Case B: no spacing (a picture) -> same slice only, pixels as mm.
#   lesion 1: slice 0, (100, 100), 20 "mm" (radius 10 px); lesion 2: slice 0, (110, 100), 20.
# Case C: spacing (None, 0.5, 0.5) -> same slice only, in-plane mm.  lesion 1: slice 5, (50, 50), 4 mm.
# Case D: no lesions.
LESIONS = pd.DataFrame([
    ("A", 1, 10, 100.0, 100.0, 10.0), ("A", 2, 10, 130.0, 100.0, 6.0),
    ("B", 1, 0, 100.0, 100.0, 20.0), ("B", 2, 0, 110.0, 100.0, 20.0),
    ("C", 1, 5, 50.0, 50.0, 4.0),
], columns=["case", "lesion", "slice", "x", "y", "diameter_mm"])
SPACING = {"A": (2.0, 0.5, 0.5), "B": None, "C": (None, 0.5, 0.5), "D": (3.0, 0.7, 0.7)}

# name: (reader, treatment, case, slice, x, y, rating, expected lesion, outcome, distance)
MARKS = {
    # dz 1 slice = 2 mm, dx 4 px = 2 mm -> sqrt(8) = 2.83 <= 5: localises lesion 1, but m_best rates it higher
    "double_low": ("r1", "unaided", "A", 11, 104.0, 100.0, 3, 1, sl.DROPPED, math.sqrt(8)),
    "double_high": ("r1", "unaided", "A", 10, 100.0, 100.0, 5, 1, sl.LL, 0.0),
    # in the plane right on lesion 1 but 3 slices off: dz = 6 mm > 5 -> a miss, NL
    "off_in_z": ("r1", "unaided", "A", 13, 100.0, 100.0, 4, 0, sl.NL, math.nan),
    # dx 5 px = 2.5 mm <= 3: lesion 2 (lesion 1 is 35 px = 17.5 mm away)
    "small_lesion": ("r1", "unaided", "A", 10, 135.0, 100.0, 2, 2, sl.LL, 2.5),
    # the same place in the other treatment: its own LL, though rated lower than double_high
    "other_treatment": ("r1", "aided", "A", 10, 100.0, 100.0, 2, 1, sl.LL, 0.0),
    # exactly on the radius (dx 10 px = 5 mm): inclusive, a hit
    "on_radius": ("r2", "unaided", "A", 10, 110.0, 100.0, 1, 1, sl.LL, 5.0),
    # just outside (dx 10.2 px = 5.1 mm) and 40.2 px = 20.1 mm from lesion 2 (radius 3): NL
    "just_outside": ("r2", "aided", "A", 10, 89.8, 100.0, 5, 0, sl.NL, math.nan),
    # equal ratings on one lesion: the first mark counts, the second is dropped
    "tie_first": ("r3", "aided", "A", 10, 101.0, 100.0, 3, 1, sl.LL, 0.5),
    "tie_second": ("r3", "aided", "A", 10, 99.0, 100.0, 3, 1, sl.DROPPED, 0.5),
    # case B, within both radii: 8 px from lesion 1, 2 px from lesion 2 -> the nearest, 2
    "nearest": ("r1", "unaided", "B", 0, 108.0, 100.0, 4, 2, sl.LL, 2.0),
    # 5 px from each: the lower lesion number
    "equidistant": ("r2", "unaided", "B", 0, 105.0, 100.0, 4, 1, sl.LL, 5.0),
    # one slice away in a picture series: only the lesion's own slice counts -> NL
    "other_slice": ("r3", "unaided", "B", 1, 100.0, 100.0, 5, 0, sl.NL, math.nan),
    # case C: the next slice does not count without a slice step; on the slice 3 px = 1.5 mm <= 2
    "c_next_slice": ("r1", "unaided", "C", 6, 50.0, 50.0, 5, 0, sl.NL, math.nan),
    "c_on_slice": ("r1", "aided", "C", 5, 53.0, 50.0, 4, 1, sl.LL, 1.5),
    # case D has no lesions: NL
    "no_lesions": ("r1", "unaided", "D", 3, 10.0, 10.0, 2, 0, sl.NL, math.nan),
}


def marks_frame(names=None) -> pd.DataFrame:
    names = list(MARKS) if names is None else names
    return pd.DataFrame([MARKS[n][:7] for n in names], index=names,
                        columns=["reader", "treatment", "case", "slice", "x", "y", "rating"])


class TestScoreMarks:
    def test_every_outcome_as_worked_out_by_hand(self):
        scored = sl.score_marks(LESIONS, marks_frame(), SPACING)
        assert list(scored.index) == list(MARKS)  # same rows, same order
        for name, (*_, lesion, outcome, distance) in MARKS.items():
            row = scored.loc[name]
            assert (row["lesion"], row["outcome"]) == (lesion, outcome), name
            if math.isnan(distance):
                assert math.isnan(row["distance_mm"]), name
            else:
                assert row["distance_mm"] == pytest.approx(distance), name

    def test_how_each_case_is_measured(self):
        scored = sl.score_marks(LESIONS, marks_frame(), SPACING).drop_duplicates("case").set_index("case")
        assert scored["metric"].to_dict() == {"A": sl.METRIC_3D, "B": sl.METRIC_PIXELS, "C": sl.METRIC_PLANE,
                                              "D": sl.METRIC_3D}

    def test_row_order_does_not_change_the_outcome_except_which_of_equal_marks_is_first(self):
        names = [n for n in MARKS if not n.startswith("tie")]
        forward = sl.score_marks(LESIONS, marks_frame(names), SPACING)
        backward = sl.score_marks(LESIONS, marks_frame(names[::-1]), SPACING)
        pd.testing.assert_frame_equal(forward, backward.loc[names])

    def test_a_mark_alone_on_a_lesion_is_its_localisation(self):
        scored = sl.score_marks(LESIONS, marks_frame(["double_low"]), SPACING)
        assert (scored["lesion"].iloc[0], scored["outcome"].iloc[0]) == (1, sl.LL)

    def test_no_lesions_or_no_marks(self):
        empty = LESIONS.iloc[:0]
        scored = sl.score_marks(empty, marks_frame(), SPACING)
        assert (scored["outcome"] == sl.NL).all() and (scored["lesion"] == 0).all()
        assert sl.score_marks(LESIONS, marks_frame([]), SPACING).empty

    def test_bad_tables_are_refused_with_the_rows(self):
        with pytest.raises(sl.LesionScoringError, match="missing: diameter_mm"):
            sl.score_marks(LESIONS.drop(columns="diameter_mm"), marks_frame(), SPACING)
        bad = LESIONS.assign(diameter_mm=[10.0, 0.0, 20.0, 20.0, 4.0])
        with pytest.raises(sl.LesionScoringError, match=r"diameter_mm must be a number > 0 \(rows 1\)"):
            sl.score_marks(bad, marks_frame(), SPACING)
        with pytest.raises(sl.LesionScoringError, match="lesion number twice"):
            sl.score_marks(LESIONS.assign(lesion=[1, 1, 1, 2, 1]), marks_frame(), SPACING)
        m = marks_frame(["nearest"]).assign(rating=["high"])
        with pytest.raises(sl.LesionScoringError, match=r"rating must be a number \(rows nearest\)"):
            sl.score_marks(LESIONS, m, SPACING)
        with pytest.raises(sl.LesionScoringError, match="must be positive"):
            sl.score_marks(LESIONS, marks_frame(), {**SPACING, "A": (0.0, 0.5, 0.5)})


class TestFrocTables:
    def test_truth_and_marks_for_the_mrmc_analysis(self):
        scored = sl.score_marks(LESIONS, marks_frame(), SPACING)
        truth, marks = sl.froc_tables(LESIONS, scored, ["A", "B", "C", "D", "E"])
        assert truth.values.tolist() == [["D", 0, None], ["E", 0, None], ["A", 1, None], ["A", 2, None],
                                         ["B", 1, None], ["B", 2, None], ["C", 1, None]]
        kept = [n for n in MARKS if MARKS[n][8] != sl.DROPPED]
        assert len(marks) == len(kept) == len(MARKS) - 2
        assert marks["lesion"].tolist() == [MARKS[n][7] for n in kept]
        assert list(marks.columns) == ["reader", "treatment", "case", "lesion", "rating"]

    def test_a_lesion_of_a_case_outside_the_study_is_refused(self):
        scored = sl.score_marks(LESIONS, marks_frame([]), SPACING)
        with pytest.raises(sl.LesionScoringError, match="not in the study"):
            sl.froc_tables(LESIONS, scored, ["A", "B"])

    def test_the_tables_feed_the_wafroc_analysis(self):
        from core.stats import mrmc

        # 2 readers x 2 treatments; cases N1, N2 without lesions, A1, A2 with one lesion each (10 mm).
        lesions = pd.DataFrame([("A1", 1, 3, 50.0, 50.0, 10.0), ("A2", 1, 3, 50.0, 50.0, 10.0)],
                               columns=list(sl.LESION_COLUMNS))
        rows = []
        for reader in ("r1", "r2"):
            for trt, on_lesion in (("unaided", 2), ("aided", 4)):
                rows += [(reader, trt, "A1", 3, 51.0, 50.0, on_lesion), (reader, trt, "A2", 3, 90.0, 90.0, 3),
                         (reader, trt, "N1", 3, 40.0, 40.0, 3)]
        marks = pd.DataFrame(rows, columns=list(sl.MARK_COLUMNS))
        spacing = {c: (1.0, 1.0, 1.0) for c in ("A1", "A2", "N1", "N2")}
        truth, froc = sl.froc_tables(lesions, sl.score_marks(lesions, marks, spacing), ["A1", "A2", "N1", "N2"])
        foms, _ = mrmc.figures_of_merit(mrmc.froc_data(truth, froc))
        # Per reader: lesion A1 rated 2 (unaided) or 4 (aided), lesion A2 unmarked (-inf; the mark at
        # (90, 90) is an NL on a case with lesions, which wAFROC ignores); highest NL on N1 = 3, on
        # N2 none (-inf). Pairs (normal, lesion), weight 1: unaided: A1 2 vs N1 3 -> 0, vs N2 -> 1;
        # A2 -inf vs N1 3 -> 0, vs N2 -inf -> 1/2: (0 + 1 + 0 + 0.5) / 4 = 0.375.
        # aided: A1 4 -> 1 + 1; A2 -> 0 + 0.5: 2.5 / 4 = 0.625.
        treatments = mrmc.froc_data(truth, froc).treatments
        want = {"unaided": 0.375, "aided": 0.625}
        assert np.allclose(foms, [[want[t]] * 2 for t in treatments])
