"""Which reader mark found which reference lesion: the scoring rule of the reader study's FROC data.

Pure functions on pandas tables (no database, no Streamlit). The reader-study service stores
marks and reference lesions; the pilot report scores them here and hands the result to
:func:`core.stats.mrmc.analyse_froc` (wAFROC) through :func:`froc_tables`.

The rule (also printed on the pilot report, :data:`RULES`):

1. **Distance.** A mark and a reference lesion of the same case are compared by the distance
   between the mark's centre and the lesion's centre. When the series' spacing is known
   (slice step s_z, row spacing s_y, column spacing s_x, mm) it is the 3-D distance in mm,
   sqrt((dz s_z)^2 + (dy s_y)^2 + (dx s_x)^2), dz in slices, dy in rows, dx in columns.
   Without a slice step (a single picture, or unknown) only marks on the lesion's own slice can
   localise it, by the in-plane distance sqrt((dy s_y)^2 + (dx s_x)^2); without a pixel spacing
   either (pictures such as IQ-OTH/NCCD JPGs) one pixel is taken as 1 mm.
2. **Hit** (LUNA16: Setio et al., Med Image Anal 42:1-13, 2017; the rule ``models.evaluation.froc`` uses for
   the nodule detector): a mark localises a lesion when that distance is at most the lesion's
   radius, diameter_mm / 2. A mark within the radius of several lesions localises the nearest
   (the lower lesion number on a tie).
3. **One mark per lesion** (Chakraborty DP, Observer Performance Methods for Diagnostic Imaging,
   CRC Press 2017): when several marks of one reader in one treatment localise the same lesion,
   the one with the highest rating is the lesion localisation (LL) and the others are dropped
   (neither LL nor NL); on equal ratings the first mark (table order) counts.
4. **Non-lesion localisation** (NL): every other mark, including every mark on a case without
   reference lesions.

Tables (extra columns are kept and ignored):

* lesions: one row per reference lesion: ``case, lesion, slice, x, y, diameter_mm``; ``lesion``
  numbers the lesions of a case 1..n (any distinct positive whole numbers), ``slice`` the
  0-based slice index, ``x`` the pixel column and ``y`` the pixel row of the centre (>= 0),
  ``diameter_mm`` > 0.
* marks: one row per mark: ``reader, treatment, case, slice, x, y, rating`` (rating a finite
  number, higher = more confident).
* spacing: ``{case: (s_z, s_y, s_x)}`` in mm, any of them None (unknown); a case not in the
  mapping has no known spacing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Columns of the lesions and marks tables.
LESION_COLUMNS: tuple[str, ...] = ("case", "lesion", "slice", "x", "y", "diameter_mm")
MARK_COLUMNS: tuple[str, ...] = ("reader", "treatment", "case", "slice", "x", "y", "rating")
#: Outcomes of a scored mark.
LL, NL, DROPPED = "LL", "NL", "dropped"
#: How the distance of a case was measured.
METRIC_3D, METRIC_PLANE, METRIC_PIXELS = "3-D mm", "in-plane mm", "in-plane pixels (1 pixel = 1 mm)"

#: The rule in words, for the pilot report (the module docstring is the reference).
RULES: tuple[str, ...] = (
    "A mark and a reference lesion of the same case are compared by the distance between their centres: "
    "in 3-D in mm with the series' slice step and pixel spacing when they are known; otherwise only a mark on the "
    "lesion's own slice can count, by its in-plane distance in mm (in pixels, 1 pixel taken as 1 mm, when the "
    "pixel spacing is unknown too).",
    "A mark whose centre lies within a lesion's radius (distance at most diameter / 2) localises that lesion "
    "(the LUNA16 hit rule, Setio et al. 2017); a mark within the radius of several lesions localises the nearest.",
    "When several marks of one reader in one step localise the same lesion, the highest rating counts as the "
    "lesion localisation and the others are dropped (Chakraborty's convention).",
    "Every other mark is a non-lesion localisation (NL), including every mark on a case without reference lesions.",
)


class LesionScoringError(ValueError):
    """The lesions or marks table cannot be scored; the message names the rows and the problem."""


def _missing(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LesionScoringError(f"The {what} table needs the columns {', '.join(columns)}; missing: "
                                 f"{', '.join(missing)}.")


def _numbers(df: pd.DataFrame, column: str, what: str, *, low: float | None = None,
             positive: bool = False, whole: bool = False) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if low is not None:
        bad |= values < low
    if positive:
        bad |= values <= 0
    if whole:
        bad |= ~np.isclose(values, np.round(values))
    if bad.any():
        rows = ", ".join(str(r) for r in df.index[bad][:10])
        need = ("a whole number " if whole else "a number ") + (
            "> 0" if positive else f">= {low:g}" if low is not None else "")
        raise LesionScoringError(f"{what}: {column} must be {need.strip()} (rows {rows}).")
    return values


def check_lesions(lesions: pd.DataFrame) -> pd.DataFrame:
    """The lesions table with checked values (float columns, int ``lesion`` and ``slice``).

    Raises:
        LesionScoringError: a missing column, a value out of range (slice, x, y < 0, diameter
            <= 0, lesion not a whole number >= 1), or a lesion number repeated within a case.
    """
    _missing(lesions, LESION_COLUMNS, "lesions")
    out = lesions.copy()
    out["lesion"] = _numbers(lesions, "lesion", "lesions", low=1, whole=True).astype(np.int64)
    out["slice"] = _numbers(lesions, "slice", "lesions", low=0, whole=True).astype(np.int64)
    for c in ("x", "y"):
        out[c] = _numbers(lesions, c, "lesions", low=0)
    out["diameter_mm"] = _numbers(lesions, "diameter_mm", "lesions", positive=True)
    dup = out.duplicated(["case", "lesion"], keep=False)
    if dup.any():
        raise LesionScoringError(f"lesions: a case lists a lesion number twice (rows "
                                 f"{', '.join(map(str, out.index[dup][:10]))}).")
    return out


def check_marks(marks: pd.DataFrame) -> pd.DataFrame:
    """The marks table with checked values (float ``x, y, rating``, int ``slice``).

    Raises:
        LesionScoringError: a missing column or a value out of range (slice, x, y < 0, rating not finite).
    """
    _missing(marks, MARK_COLUMNS, "marks")
    out = marks.copy()
    out["slice"] = _numbers(marks, "slice", "marks", low=0, whole=True).astype(np.int64)
    for c in ("x", "y"):
        out[c] = _numbers(marks, c, "marks", low=0)
    out["rating"] = _numbers(marks, "rating", "marks")
    return out


def _spacing_columns(cases: pd.Series, spacing: Mapping[Any, Sequence[float | None] | None] | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s_z, s_y, s_x) float arrays per row of ``cases``, NaN where unknown."""
    spacing = spacing or {}
    rows = []
    for c in cases:
        sp = spacing.get(c)
        sp = (None, None, None) if sp is None else tuple(sp)
        if len(sp) != 3:
            raise LesionScoringError(f"The spacing of case {c!r} must be (s_z, s_y, s_x) in mm, got {sp!r}.")
        vals = []
        for v in sp:
            f = np.nan if v is None else float(v)
            if np.isfinite(f) and f <= 0:
                raise LesionScoringError(f"The spacing of case {c!r} must be positive, got {sp!r}.")
            vals.append(f if np.isfinite(f) else np.nan)
        rows.append(vals)
    arr = np.asarray(rows, dtype=float).reshape(-1, 3)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def case_metric(spacing: Sequence[float | None] | None) -> str:
    """How distances of a case with this (s_z, s_y, s_x) spacing are measured: :data:`METRIC_3D`,
    :data:`METRIC_PLANE` or :data:`METRIC_PIXELS` (rule 1 of the module docstring)."""
    sz, sy, sx = (None, None, None) if spacing is None else tuple(spacing)
    ok = [v is not None and np.isfinite(float(v)) and float(v) > 0 for v in (sz, sy, sx)]
    if all(ok):
        return METRIC_3D
    return METRIC_PLANE if ok[1] and ok[2] else METRIC_PIXELS


def score_marks(lesions: pd.DataFrame, marks: pd.DataFrame,
                spacing: Mapping[Any, Sequence[float | None] | None] | None = None) -> pd.DataFrame:
    """Score every mark as a lesion localisation, a non-lesion localisation or dropped (module docstring).

    Args:
        lesions: ``case, lesion, slice, x, y, diameter_mm``.
        marks: ``reader, treatment, case, slice, x, y, rating``.
        spacing: ``{case: (s_z, s_y, s_x)}`` in mm (None entries: unknown).

    Returns:
        ``marks`` (same index and row order, every column kept) with the columns ``lesion``
        (int64: the lesion number localised by an LL or a dropped mark, 0 for an NL), ``outcome``
        (:data:`LL`, :data:`NL` or :data:`DROPPED`), ``distance_mm`` (float64: the distance to the
        localised lesion in mm, or pixels under :data:`METRIC_PIXELS`; NaN for an NL) and
        ``metric`` (how the case's distances were measured).

    Raises:
        LesionScoringError: see :func:`check_lesions`, :func:`check_marks`; a bad spacing.
    """
    les = check_lesions(lesions)
    mk = check_marks(marks)
    n = len(mk)
    out = marks.copy()
    out["lesion"] = np.zeros(n, dtype=np.int64)
    out["outcome"] = NL
    out["distance_mm"] = np.full(n, np.nan)
    out["metric"] = [case_metric((spacing or {}).get(c)) for c in mk["case"]]
    if n == 0 or les.empty:
        return out
    left = mk[["case", "slice", "x", "y"]].assign(_row=np.arange(n))
    right = les[["case", "lesion", "slice", "x", "y", "diameter_mm"]]
    pairs = left.merge(right, on="case", suffixes=("_m", "_l"))
    if pairs.empty:
        return out
    sz, sy, sx = _spacing_columns(pairs["case"], spacing)
    no_pixel = np.isnan(sy) | np.isnan(sx)
    sy = np.where(no_pixel, 1.0, sy)
    sx = np.where(no_pixel, 1.0, sx)
    dz = (pairs["slice_m"] - pairs["slice_l"]).to_numpy(dtype=float)
    dy = (pairs["y_m"] - pairs["y_l"]).to_numpy(dtype=float) * sy
    dx = (pairs["x_m"] - pairs["x_l"]).to_numpy(dtype=float) * sx
    three_d = np.isfinite(sz) & ~no_pixel
    dist = np.where(three_d, np.sqrt(np.nan_to_num(dz * sz) ** 2 + dy ** 2 + dx ** 2),
                    np.where(dz == 0, np.hypot(dy, dx), np.inf))
    pairs = pairs.assign(_dist=dist)
    hits = pairs[pairs["_dist"] <= pairs["diameter_mm"] / 2]
    if hits.empty:
        return out
    # rule 2: each mark localises its nearest lesion (lower lesion number on a tie)
    nearest = hits.sort_values(["_row", "_dist", "lesion"], kind="mergesort").drop_duplicates("_row")
    rows = nearest["_row"].to_numpy()
    lesion_col = out.columns.get_loc("lesion")
    out.iloc[rows, lesion_col] = nearest["lesion"].to_numpy()
    out.iloc[rows, out.columns.get_loc("distance_mm")] = nearest["_dist"].to_numpy()
    # rule 3: one LL per (reader, treatment, case, lesion): the highest rating, the first on a tie
    keyed = pd.DataFrame({"reader": mk["reader"].to_numpy()[rows], "treatment": mk["treatment"].to_numpy()[rows],
                          "case": mk["case"].to_numpy()[rows], "lesion": nearest["lesion"].to_numpy(),
                          "rating": mk["rating"].to_numpy()[rows], "_row": rows})
    keyed = keyed.sort_values(["rating", "_row"], ascending=[False, True], kind="mergesort")
    first = ~keyed.duplicated(["reader", "treatment", "case", "lesion"], keep="first")
    outcome = out["outcome"].to_numpy(dtype=object)
    outcome[keyed["_row"].to_numpy()[first.to_numpy()]] = LL
    outcome[keyed["_row"].to_numpy()[~first.to_numpy()]] = DROPPED
    out["outcome"] = outcome
    return out


def froc_tables(lesions: pd.DataFrame, scored: pd.DataFrame, cases: Sequence[Any]
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The FROC truth and marks tables of :mod:`core.stats.mrmc` from scored marks.

    Args:
        lesions: the reference lesions (``case, lesion, ...``).
        scored: the output of :func:`score_marks` (``reader, treatment, case, lesion, rating,
            outcome``).
        cases: every case of the study (the cases without lesions are the lesion-free cases).

    Returns:
        (truth ``case, lesion, weight``: one row per lesion with a blank weight (equal weights
        within a case), one row with lesion 0 per case without lesions; marks ``reader,
        treatment, case, lesion, rating``: the LL and NL marks, dropped marks left out).

    Raises:
        LesionScoringError: a lesion of a case that is not in ``cases``.
    """
    les = check_lesions(lesions)
    case_set = list(dict.fromkeys(cases))
    outside = set(les["case"]) - set(case_set)
    if outside:
        raise LesionScoringError(f"Lesions of cases that are not in the study: {sorted(map(str, outside))}.")
    with_lesions = set(les["case"])
    truth = pd.DataFrame(
        [{"case": c, "lesion": 0, "weight": None} for c in case_set if c not in with_lesions]
        + [{"case": r.case, "lesion": int(r.lesion), "weight": None} for r in les.itertuples()],
        columns=["case", "lesion", "weight"])
    kept = scored[scored["outcome"] != DROPPED]
    marks = kept[["reader", "treatment", "case", "lesion", "rating"]].reset_index(drop=True)
    return truth, marks
