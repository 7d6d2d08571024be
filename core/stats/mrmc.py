"""Multi-reader multi-case (MRMC) analysis: figures of merit, jackknife and Obuchowski-Rockette-Hillis.

Pure functions (no database, no Streamlit): tables in, numbers out. The pilot report, the
``lungreview-mrmc`` command (:mod:`core.stats.mrmc_cli`) and the tests all call
:func:`analyse_roc` or :func:`analyse_froc`; the array functions below them can be used alone.

Input tables (pandas DataFrames; extra columns are ignored; values may be str or numbers):

* ROC reads, one row per read: ``reader, treatment, case, truth, rating``; truth 1 = the case
  has the disease (a malignant nodule), 0 = it does not; rating = any number, higher = more
  suspicious (LungReview's 1-5 malignancy rating, ``reader_metrics.malignancy_rating``). The
  layout of RJafroc's CSV example file and of ``../shared/datasets/mrmc/vandyke_roc.csv``.
* FROC truth, one row per lesion: ``case, lesion, weight``; lesion 0 on the single row of a case
  without lesions; lesions numbered 1..n within a case; weight blank (equal weights) or numbers
  that sum to 1 within the case.
* FROC marks, one row per mark: ``reader, treatment, case, lesion, rating``; lesion 0 = a
  non-lesion localisation (NL, a mark that hit no lesion), lesion n = a lesion localisation (LL)
  of lesion n. A lesion or case without a mark has no row (its rating is minus infinity). Two
  marks on one lesion: the higher rating counts (Chakraborty 2017's convention).

Labels (reader, treatment, case) are compared as text (``1``, ``1.0`` and ``"1"`` are one label)
and sorted numerically when they look like numbers, else alphabetically; every result is
therefore independent of the row order, and a renamed reader or treatment only moves its row.
The "row" of an error is the DataFrame's index label; :mod:`core.stats.mrmc_io` sets it to the
line number of the CSV file (header = row 1).

Definitions and sources:

* Empirical ROC AUC (Wilcoxon-Mann-Whitney, ties count 1/2; Hanley & McNeil 1982): the same
  figure as ``core.reader_metrics`` (``sklearn.metrics.roc_auc_score``), computed here for all
  treatment x reader pairs and all jackknife samples at once.
* wAFROC (Chakraborty DP, Observer Performance Methods for Diagnostic Imaging, CRC Press 2017;
  RJafroc's ``FOM_wAFROC``): for each case without lesions its highest NL rating (minus infinity
  if none) is compared with the rating of each lesion of each case with lesions (minus infinity
  if unmarked), lesion weights within a case summing to 1, ties 1/2; NL marks on cases with
  lesions do not enter. FOM = sum / (K1 K2).
* ROC reduction of FROC data (RJafroc's ``DfFroc2Roc``): each case's rating is its highest mark
  of any kind, minus infinity if it has none.
* Jackknife over cases (Efron 1982): the FOM with case k left out, theta_(k); pseudo-values
  K theta - (K - 1) theta_(k). The Obuchowski-Rockette error covariances (Obuchowski & Rockette
  1995, Commun Stat Simul Comput 24:285-308) are the covariance of the pseudo-values / K, averaged
  over pairs of (treatment, reader) FOMs: Var (same pair), Cov1 (other treatment, same reader),
  Cov2 (same treatment, other reader), Cov3 (other treatment and reader).
* MS(T) = J/(I-1) sum_i (theta_i. - theta..)^2, MS(T:R) = sum_ij (theta_ij - theta_i. - theta_.j
  + theta..)^2 / ((I-1)(J-1)).
* Random readers, random cases (Hillis 2007, Stat Med 26:596-619; Hillis, Berbaum & Metz 2008,
  Acad Radiol 15:647-661): F = MS(T) / [MS(T:R) + J max(Cov2 - Cov3, 0)], ndf = I - 1,
  ddf_H = [MS(T:R) + J max(Cov2 - Cov3, 0)]^2 / {MS(T:R)^2 / [(I-1)(J-1)]}; for each pair of
  treatments the difference of reader-averaged FOMs with SE = sqrt(2/J [MS(T:R) + J max(Cov2 -
  Cov3, 0)]), t on ddf_H (as RJafroc's ``StSignificanceTesting(method = "OR")``).
* Fixed readers, random cases (Hillis 2007; RJafroc's FRRC): chi-square = (I-1) MS(T) / [Var -
  Cov1 + (J-1) max(Cov2 - Cov3, 0)] on I - 1 df; pairwise SE = sqrt(2/J [Var - Cov1 + (J-1)
  max(Cov2 - Cov3, 0)]), normal quantiles.
* Var(T:R) = MS(T:R) - Var + Cov1 + max(Cov2 - Cov3, 0) (Hillis, Obuchowski & Berbaum 2011,
  Acad Radiol 18:129-142, eq. 9), the input of :mod:`core.stats.sample_size`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: Column layouts (see the module docstring).
ROC_COLUMNS: tuple[str, ...] = ("reader", "treatment", "case", "truth", "rating")
TRUTH_COLUMNS: tuple[str, ...] = ("case", "lesion", "weight")
MARK_COLUMNS: tuple[str, ...] = ("reader", "treatment", "case", "lesion", "rating")
#: Names of the figures of merit.
ROC_AUC = "ROC AUC"
WAFROC = "wAFROC"
#: Most missing reads named in a NotFullyCrossedError message.
MAX_NAMED = 20
#: Lesion weights of a case may sum to 1 within this (then they are rescaled to 1, as RJafroc does).
WEIGHT_TOLERANCE = 0.01


# --------------------------------------------------------------------------------------- errors
class MrmcError(ValueError):
    """The data cannot be analysed; the message says what is wrong and what the analysis needs."""


class BadRowsError(MrmcError):
    """Rows with bad values: ``problems`` holds one line per bad row, starting with its row;
    ``table`` names the table ("reads", "truth" or "marks")."""

    def __init__(self, problems: Sequence[str], table: str = ""):
        self.problems = list(problems)
        self.table = table
        super().__init__("\n".join(self.problems))

    @classmethod
    def from_rows(cls, problems: Sequence[tuple[Any, str]], table: str = "") -> BadRowsError:
        """One line per row ("row 5: a; b"), rows sorted (in order of first appearance if they do not sort)."""
        merged: dict[Any, list[str]] = {}
        for row, message in problems:
            merged.setdefault(row, []).append(message)
        try:
            rows = sorted(merged)
        except TypeError:
            rows = list(merged)
        return cls([f"row {row}: {'; '.join(merged[row])}" for row in rows], table)


class MissingColumnsError(MrmcError):
    """A table lacks a column the layout needs."""


class NotFullyCrossedError(MrmcError):
    """Some reader did not read some case in some treatment; ``missing`` lists (reader, treatment, case)."""

    def __init__(self, message: str, missing: Sequence[tuple[str, ...]]):
        self.missing = list(missing)
        super().__init__(message)


class TooFewReadersError(MrmcError):
    """Fewer than 2 readers: random-reader analysis needs at least 2."""


class TooFewTreatmentsError(MrmcError):
    """Fewer than 2 treatments: there is nothing to compare."""


class TooFewCasesError(MrmcError):
    """Fewer than 2 cases with or without disease: the figures of merit and the jackknife need 2 of each."""


# --------------------------------------------------------------------------------------- labels
def label(value: Any) -> str:
    """The text form of a reader, treatment or case label: ``1``, ``1.0`` and ``" 1"`` -> ``"1"``."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def label_key(text: str) -> tuple:
    """Sort key of a label: finite numbers first, numerically; then text, alphabetically."""
    try:
        value = float(text)
    except ValueError:
        return (1, 0.0, text)
    return (0, value, text) if math.isfinite(value) else (1, 0.0, text)


def _sorted_labels(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values), key=label_key))


def _missing_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingColumnsError(
            f"The {what} table has no column(s) {', '.join(missing)}; it needs {', '.join(columns)} "
            f"(it has {', '.join(map(str, df.columns)) or 'none'}).")


def _labels(series: pd.Series) -> list[str]:
    return [label(v) if not _blank(v) else "" for v in series]


def _show(v: Any) -> str:
    """A cell value for a message: text quoted, numbers as written ('high', 2, 2.5)."""
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (np.integer, np.floating)):
        v = v.item()
    return repr(v)


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _numbers(series: pd.Series) -> np.ndarray:
    """float64 (n,); NaN where a value is not a number (inf and -inf pass)."""
    return pd.to_numeric(series.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce").to_numpy(
        float)


# ------------------------------------------------------------------------------------ data sets
@dataclass(frozen=True)
class RocData:
    """Fully crossed ROC ratings.

    Attributes:
        treatments, readers: sorted labels (I,), (J,).
        normal_cases, abnormal_cases: sorted case labels without (K1,) and with (K2,) disease.
        normal: float64 (I, J, K1) ratings of the cases without disease; abnormal: (I, J, K2).
    """

    treatments: tuple[str, ...]
    readers: tuple[str, ...]
    normal_cases: tuple[str, ...]
    abnormal_cases: tuple[str, ...]
    normal: np.ndarray
    abnormal: np.ndarray


@dataclass(frozen=True)
class FrocData:
    """FROC ratings with the lesions of the truth table.

    Attributes:
        treatments, readers: sorted labels (I,), (J,).
        normal_cases, abnormal_cases: sorted case labels without (K1,) and with (K2,) lesions.
        nl: float64 (I, J, K1 + K2) highest NL rating on each case (cases without lesions first),
            -inf where the case has no NL mark.
        ll: float64 (I, J, L) rating of each lesion, -inf where it is unmarked.
        lesion_case: int64 (L,) index of each lesion's case in ``abnormal_cases`` (non-decreasing).
        lesion_id: int64 (L,) lesion numbers of the truth table.
        weights: float64 (L,) lesion weights, summing to 1 within each case.
    """

    treatments: tuple[str, ...]
    readers: tuple[str, ...]
    normal_cases: tuple[str, ...]
    abnormal_cases: tuple[str, ...]
    nl: np.ndarray
    ll: np.ndarray
    lesion_case: np.ndarray
    lesion_id: np.ndarray
    weights: np.ndarray


def _check_counts(treatments: Sequence[str], readers: Sequence[str], n_normal: int, n_abnormal: int,
                  *, normal_word: str, abnormal_word: str) -> None:
    if len(treatments) < 2:
        raise TooFewTreatmentsError(
            f"Only {len(treatments)} treatment ({', '.join(treatments) or 'none'}): the analysis compares "
            "treatments (for example unaided and aided reading) and needs at least 2.")
    if len(readers) < 2:
        raise TooFewReadersError(
            f"Only {len(readers)} reader ({', '.join(readers) or 'none'}): the random-reader analysis "
            "estimates the spread between readers and needs at least 2 (more give a narrower interval).")
    for n, word in ((n_normal, normal_word), (n_abnormal, abnormal_word)):
        if n < 2:
            raise TooFewCasesError(
                f"{'No' if n == 0 else 'Only 1'} case {word}: the figure of merit compares cases with "
                "and without disease, and the jackknife leaves one case out at a time, so the analysis "
                "needs at least 2 cases of each kind.")


def _order(treatments: tuple[str, ...], order: Sequence[Any] | None) -> tuple[str, ...]:
    if order is None:
        return treatments
    wanted = tuple(label(t) for t in order)
    if sorted(wanted, key=label_key) != list(treatments):
        raise MrmcError(f"treatment_order {list(wanted)} must list each treatment once: {list(treatments)}.")
    return wanted


@dataclass(frozen=True)
class CheckedReads:
    """ROC reads with checked values: labels (n,), ratings float64 (n,), {case: (truth, first row)}."""

    reader: list[str]
    treatment: list[str]
    case: list[str]
    truth: np.ndarray
    rating: np.ndarray
    case_truth: dict[str, tuple[int, Any]]


def check_reads(reads: pd.DataFrame) -> CheckedReads:
    """Check the values of ROC reads row by row (not the design): see :func:`roc_data` for the errors.

    Raises:
        MissingColumnsError, BadRowsError.
    """
    _missing_columns(reads, ROC_COLUMNS, "reads")
    rows = list(reads.index)
    reader, treatment, case = (_labels(reads[c]) for c in ("reader", "treatment", "case"))
    rating = _numbers(reads["rating"])
    truth_num = _numbers(reads["truth"])
    problems: list[tuple[Any, str]] = []
    seen: dict[tuple[str, str, str], Any] = {}
    case_truth: dict[str, tuple[int, Any]] = {}
    for n, row in enumerate(rows):
        for name, value in (("reader", reader[n]), ("treatment", treatment[n]), ("case", case[n])):
            if not value:
                problems.append((row, f"{name} is blank"))
        if not np.isfinite(rating[n]):
            problems.append((row, f"rating {_show(reads['rating'].iloc[n])} is not a number"))
        t = truth_num[n]
        if t not in (0.0, 1.0):
            problems.append((row, f"truth {_show(reads['truth'].iloc[n])} must be 0 (no disease) or 1 (disease)"))
        elif case[n]:
            first = case_truth.setdefault(case[n], (int(t), row))
            if first[0] != int(t):
                problems.append((row, f"case {case[n]} has truth {int(t)} here but {first[0]} at row {first[1]}"))
        key = (reader[n], treatment[n], case[n])
        if all(key):
            if key in seen:
                problems.append((row, f"reader {key[0]}, treatment {key[1]}, case {key[2]} is read again "
                                      f"(first at row {seen[key]}); give one read per reader, treatment and case"))
            else:
                seen[key] = row
    if problems:
        raise BadRowsError.from_rows(problems, "reads")
    return CheckedReads(reader, treatment, case, truth_num, rating, case_truth)


def roc_data(reads: pd.DataFrame, *, treatment_order: Sequence[Any] | None = None) -> RocData:
    """Check ROC reads and arrange them as arrays.

    Args:
        reads: the ROC reads table (module docstring): ``reader, treatment, case, truth, rating``.
        treatment_order: optional order of the treatments (all of them); default sorted. It sets
            the direction of each difference (earlier minus later, as RJafroc's "trt1 - trt2").

    Returns:
        :class:`RocData` (readers and cases sorted by :func:`label_key`).

    Raises:
        MissingColumnsError: a column is missing.
        BadRowsError: one line per bad row: a blank label, a rating that is not a finite number, a
            truth other than 0/1, a read given twice, a case with two truths.
        TooFewTreatmentsError, TooFewReadersError, TooFewCasesError: see the classes.
        NotFullyCrossedError: a reader lacks a read of a case in a treatment (each one is named).
    """
    checked = check_reads(reads)
    reader, treatment, case, rating = checked.reader, checked.treatment, checked.case, checked.rating
    case_truth = checked.case_truth
    treatments = _sorted_labels(treatment)
    readers = _sorted_labels(reader)
    normal_cases = _sorted_labels(c for c, (t, _) in case_truth.items() if t == 0)
    abnormal_cases = _sorted_labels(c for c, (t, _) in case_truth.items() if t == 1)
    _check_counts(treatments, readers, len(normal_cases), len(abnormal_cases),
                  normal_word="without disease (truth 0)", abnormal_word="with disease (truth 1)")
    treatments = _order(treatments, treatment_order)
    cases = normal_cases + abnormal_cases
    ti = pd.Index(treatments).get_indexer(treatment)
    rj = pd.Index(readers).get_indexer(reader)
    kc = pd.Index(cases).get_indexer(case)
    grid = np.full((len(treatments), len(readers), len(cases)), np.nan)
    grid[ti, rj, kc] = rating
    holes = np.argwhere(np.isnan(grid))
    if len(holes):
        missing = [(readers[j], treatments[i], cases[k]) for i, j, k in holes]
        raise NotFullyCrossedError(_missing_message(missing, len(grid.ravel())), missing)
    k1 = len(normal_cases)
    return RocData(treatments, readers, normal_cases, abnormal_cases, grid[..., :k1], grid[..., k1:])


def _missing_message(missing: list[tuple[str, str, str]], n_total: int) -> str:
    named = "; ".join(f"reader {r}, treatment {t}, case {c}" for r, t, c in missing[:MAX_NAMED])
    more = f"; and {len(missing) - MAX_NAMED} more" if len(missing) > MAX_NAMED else ""
    return (f"The design is not fully crossed: {len(missing)} of {n_total} reads are missing ({named}{more}). "
            "The Obuchowski-Rockette analysis needs every reader to read every case in every treatment: "
            "add the missing reads or leave out the readers or cases that lack them.")


def check_truth(truth: pd.DataFrame) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, list[tuple[int, float]]]]:
    """Check an FROC truth table (see :func:`froc_data` for the errors).

    Returns:
        (cases without lesions (K1,), cases with lesions (K2,), {case: [(lesion, weight), ...] by lesion}),
        case labels sorted, weights summing to 1 within each case.

    Raises:
        MissingColumnsError, BadRowsError.
    """
    _missing_columns(truth, ("case", "lesion"), "truth")
    rows = list(truth.index)
    case = _labels(truth["case"])
    lesion = _numbers(truth["lesion"])
    has_weight = "weight" in truth.columns
    weight_raw = truth["weight"] if has_weight else pd.Series([None] * len(truth), index=truth.index)
    weight = _numbers(weight_raw)
    problems: list[tuple[Any, str]] = []
    lesions: dict[str, dict[int, tuple[float, Any]]] = {}
    for n, row in enumerate(rows):
        if not case[n]:
            problems.append((row, "case is blank"))
            continue
        les = lesion[n]
        if not (np.isfinite(les) and les >= 0 and float(les).is_integer()):
            problems.append((row, f"lesion {_show(truth['lesion'].iloc[n])} must be 0 (case without lesions) "
                                  "or a lesion number 1, 2, ..."))
            continue
        w_blank = _blank(weight_raw.iloc[n])
        w = weight[n]
        if not w_blank and not (np.isfinite(w) and 0 <= w <= 1):
            problems.append((row, f"weight {_show(weight_raw.iloc[n])} must be blank or a number from 0 to 1"))
            continue
        entry = lesions.setdefault(case[n], {})
        if int(les) in entry:
            problems.append((row, f"case {case[n]} lesion {int(les)} is listed again (first at row "
                                  f"{entry[int(les)][1]})"))
            continue
        entry[int(les)] = (np.nan if w_blank else float(w), row)
    for c, entry in lesions.items():
        if 0 in entry and len(entry) > 1:
            problems.append((entry[0][1], f"case {c} is listed as a case without lesions (lesion 0) and with "
                                          f"lesions {sorted(k for k in entry if k)}"))
    if problems:
        raise BadRowsError.from_rows(problems, "truth")
    normal = _sorted_labels(c for c, e in lesions.items() if 0 in e)
    abnormal = _sorted_labels(c for c, e in lesions.items() if 0 not in e)
    table: dict[str, list[tuple[int, float]]] = {}
    for c in abnormal:
        entry = lesions[c]
        ids = sorted(entry)
        w = np.array([entry[i][0] for i in ids])
        if np.isnan(w).all() or (np.nan_to_num(w) == 0).all():
            w = np.full(len(ids), 1.0 / len(ids))
        elif np.isnan(w).any() or abs(w.sum() - 1) > WEIGHT_TOLERANCE:
            problems.append((entry[ids[0]][1], f"the weights of case {c} must all be blank (equal weights) or "
                                               f"sum to 1; they are {[None if np.isnan(x) else x for x in w]}"))
            continue
        else:
            w = w / w.sum()
        table[c] = list(zip(ids, w.tolist(), strict=True))
    if problems:
        raise BadRowsError.from_rows(problems, "truth")
    return normal, abnormal, table


@dataclass(frozen=True)
class CheckedMarks:
    """FROC marks with checked values: labels (n,), lesion int64 (n,), rating float64 (n,), declared labels."""

    reader: list[str]
    treatment: list[str]
    case: list[str]
    lesion: np.ndarray
    rating: np.ndarray
    readers: tuple[str, ...] | None
    treatments: tuple[str, ...] | None


def check_marks(marks: pd.DataFrame, truth: tuple, *, readers: Sequence[Any] | None = None,
                treatments: Sequence[Any] | None = None) -> CheckedMarks:
    """Check the values of FROC marks row by row against a checked truth (:func:`check_truth`).

    Raises:
        MissingColumnsError, BadRowsError: see :func:`froc_data`.
    """
    normal, abnormal, table = truth
    _missing_columns(marks, MARK_COLUMNS, "marks")
    rows = list(marks.index)
    reader, treatment, case = (_labels(marks[c]) for c in ("reader", "treatment", "case"))
    lesion = _numbers(marks["lesion"])
    rating = _numbers(marks["rating"])
    known_readers = None if readers is None else {label(r) for r in readers}
    known_treatments = None if treatments is None else {label(t) for t in treatments}
    lesion_sets = {c: {i for i, _ in table[c]} for c in abnormal}
    normal_set = set(normal)
    problems: list[tuple[Any, str]] = []
    for n, row in enumerate(rows):
        for name, value, known in (("reader", reader[n], known_readers), ("treatment", treatment[n], known_treatments)):
            if not value:
                problems.append((row, f"{name} is blank"))
            elif known is not None and value not in known:
                problems.append((row, f"{name} {value} is not one of the study's {name}s {sorted(known, key=label_key)}"))
        if not np.isfinite(rating[n]):
            problems.append((row, f"rating {_show(marks['rating'].iloc[n])} is not a number"))
        les = lesion[n]
        c = case[n]
        if not c:
            problems.append((row, "case is blank"))
        elif c not in normal_set and c not in lesion_sets:
            problems.append((row, f"case {c} is not in the truth table"))
        elif not (np.isfinite(les) and les >= 0 and float(les).is_integer()):
            problems.append((row, f"lesion {_show(marks['lesion'].iloc[n])} must be 0 (a mark that hit no lesion) "
                                  "or the number of the lesion it hit"))
        elif les > 0 and int(les) not in lesion_sets.get(c, set()):
            have = sorted(lesion_sets.get(c, set()))
            problems.append((row, f"case {c} has no lesion {int(les)} in the truth table "
                                  f"({'its lesions: ' + ', '.join(map(str, have)) if have else 'it has no lesions'})"))
    if problems:
        raise BadRowsError.from_rows(problems, "marks")
    return CheckedMarks(reader, treatment, case, lesion.astype(np.int64), rating,
                        tuple(sorted(known_readers, key=label_key)) if known_readers is not None else None,
                        tuple(sorted(known_treatments, key=label_key)) if known_treatments is not None else None)


def froc_data(truth: pd.DataFrame, marks: pd.DataFrame, *, readers: Sequence[Any] | None = None,
              treatments: Sequence[Any] | None = None,
              treatment_order: Sequence[Any] | None = None) -> FrocData:
    """Check FROC truth and marks and arrange them as arrays.

    Args:
        truth: ``case, lesion, weight`` (module docstring); ``weight`` may be left out.
        marks: ``reader, treatment, case, lesion, rating``.
        readers, treatments: the study's readers and treatments when some reader may have marked
            nothing in some treatment (that is then a read without marks); default: those in
            ``marks``, and a reader x treatment without any mark is taken as missing.
        treatment_order: see :func:`roc_data`.

    Returns:
        :class:`FrocData`.

    Raises:
        MissingColumnsError: a column is missing.
        BadRowsError: one line per bad row: truth rows (blank case, bad lesion number, bad or
            inconsistent weights, a case both with and without lesions, a lesion listed twice);
            mark rows (blank label, rating not a finite number, a case the truth table lacks, a
            lesion number the truth table lacks for that case, a reader or treatment outside
            ``readers`` / ``treatments``).
        TooFewTreatmentsError, TooFewReadersError, TooFewCasesError: see the classes.
        NotFullyCrossedError: a reader has no mark at all in a treatment (and ``readers`` /
            ``treatments`` were not given).
    """
    normal, abnormal, table = check_truth(truth)
    checked = check_marks(marks, (normal, abnormal, table), readers=readers, treatments=treatments)
    reader, treatment, case = checked.reader, checked.treatment, checked.case
    lesion, rating = checked.lesion, checked.rating
    all_treatments = checked.treatments or _sorted_labels(treatment)
    all_readers = checked.readers or _sorted_labels(reader)
    _check_counts(all_treatments, all_readers, len(normal), len(abnormal),
                  normal_word="without lesions (lesion 0 in the truth table)",
                  abnormal_word="with lesions in the truth table")
    if checked.readers is None or checked.treatments is None:
        marked = set(zip(reader, treatment, strict=True))
        missing = [(r, t) for t in all_treatments for r in all_readers if (r, t) not in marked]
        if missing:
            named = "; ".join(f"reader {r} in treatment {t}" for r, t in missing)
            raise NotFullyCrossedError(
                f"No mark at all from {named}: the design must be fully crossed (every reader reads every case "
                "in every treatment). If these readers did read the cases and marked nothing, pass the "
                "study's readers and treatments explicitly; otherwise add their reads or leave them out.",
                [(r, t, "*") for r, t in missing])
    all_treatments = _order(all_treatments, treatment_order)
    cases = normal + abnormal
    lesion_case: list[int] = []
    lesion_id: list[int] = []
    weights: list[float] = []
    lesion_index: dict[tuple[str, int], int] = {}
    for k, c in enumerate(abnormal):
        for i, w in table[c]:
            lesion_index[(c, i)] = len(lesion_id)
            lesion_case.append(k)
            lesion_id.append(i)
            weights.append(w)
    n_t, n_r = len(all_treatments), len(all_readers)
    ti = pd.Index(all_treatments).get_indexer(treatment)
    rj = pd.Index(all_readers).get_indexer(reader)
    is_nl = lesion == 0
    nl = np.full((n_t, n_r, len(cases)), -np.inf)
    kc = pd.Index(cases).get_indexer([c for c, m in zip(case, is_nl, strict=True) if m])
    np.maximum.at(nl, (ti[is_nl], rj[is_nl], kc), rating[is_nl])
    ll = np.full((n_t, n_r, len(lesion_id)), -np.inf)
    li = np.array([lesion_index[(c, int(x))] for c, x, m in zip(case, lesion, is_nl, strict=True) if not m],
                  dtype=np.int64)
    np.maximum.at(ll, (ti[~is_nl], rj[~is_nl], li), rating[~is_nl])
    return FrocData(all_treatments, all_readers, normal, abnormal, nl, ll, np.array(lesion_case, dtype=np.int64),
                    np.array(lesion_id, dtype=np.int64), np.array(weights, dtype=float))


def froc_to_roc(data: FrocData) -> RocData:
    """The ROC reduction of FROC data: each case's rating is its highest mark of any kind (RJafroc's DfFroc2Roc).

    Args:
        data: :class:`FrocData`.

    Returns:
        :class:`RocData` with the same labels; ratings -inf where a case has no mark.
    """
    k1 = len(data.normal_cases)
    starts = np.searchsorted(data.lesion_case, np.arange(len(data.abnormal_cases)))
    best_ll = np.maximum.reduceat(data.ll, starts, axis=-1)
    return RocData(data.treatments, data.readers, data.normal_cases, data.abnormal_cases,
                   data.nl[..., :k1].copy(), np.maximum(data.nl[..., k1:], best_ll))


# ---------------------------------------------------------------------------- figures of merit
def _wmw_parts(neg: np.ndarray, pos: np.ndarray, pos_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Wilcoxon-Mann-Whitney kernel sums per row, ties 1/2.

    With psi(x, y) = 1 if y > x, 1/2 if y == x, else 0:
    row[r, n] = sum_p w_p psi(neg[r, n], pos[r, p]) and col[r, p] = sum_n psi(neg[r, n], pos[r, p]).
    neg (R, N), pos (R, P) float64 (-inf allowed, no NaN); pos_w (P,). O(R (N + P) log(N + P)):
    ratings become dense ranks per row, and counts below / weights above each rank are cumulative
    sums of per-rank bincounts.
    """
    n_rows, n_neg = neg.shape
    n_pos = pos.shape[1]
    z = np.concatenate([neg, pos], axis=1)
    order = np.argsort(z, axis=1, kind="stable")
    zs = np.take_along_axis(z, order, axis=1)
    new_level = np.ones(zs.shape, dtype=bool)
    new_level[:, 1:] = zs[:, 1:] != zs[:, :-1]
    dense = np.empty(z.shape, dtype=np.int64)
    np.put_along_axis(dense, order, np.cumsum(new_level, axis=1) - 1, axis=1)
    m = n_neg + n_pos
    offset = (np.arange(n_rows, dtype=np.int64) * m)[:, None]
    d_neg, d_pos = dense[:, :n_neg] + offset, dense[:, n_neg:] + offset
    neg_count = np.bincount(d_neg.ravel(), minlength=n_rows * m).reshape(n_rows, m).astype(float)
    pos_weight = np.bincount(d_pos.ravel(), weights=np.broadcast_to(pos_w, (n_rows, n_pos)).ravel(),
                             minlength=n_rows * m).reshape(n_rows, m)
    neg_below = np.cumsum(neg_count, axis=1) - neg_count
    pos_above = pos_weight.sum(axis=1, keepdims=True) - np.cumsum(pos_weight, axis=1)
    col = (neg_below + 0.5 * neg_count).ravel()[d_pos]
    row = (pos_above + 0.5 * pos_weight).ravel()[d_neg]
    return row, col


def _fom_and_jackknife(neg: np.ndarray, pos: np.ndarray, pos_case: np.ndarray, pos_w: np.ndarray,
                       n_pos_cases: int) -> tuple[np.ndarray, np.ndarray]:
    lead = neg.shape[:-1]
    n_neg = neg.shape[-1]
    neg2 = neg.reshape(-1, n_neg)
    pos2 = pos.reshape(-1, pos.shape[-1])
    row, col = _wmw_parts(neg2, pos2, pos_w)
    starts = np.searchsorted(pos_case, np.arange(n_pos_cases))
    col_case = np.add.reduceat(col * pos_w, starts, axis=1)
    total = row.sum(axis=1, keepdims=True)
    fom = total[:, 0] / (n_neg * n_pos_cases)
    with np.errstate(divide="ignore", invalid="ignore"):
        jk_neg = (total - row) / ((n_neg - 1) * n_pos_cases)
        jk_pos = (total - col_case) / (n_neg * (n_pos_cases - 1))
    jk = np.concatenate([jk_neg, jk_pos], axis=1)
    return fom.reshape(lead), jk.reshape(*lead, n_neg + n_pos_cases)


def empirical_auc(normal: np.ndarray, abnormal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical ROC AUC (ties 1/2) and its jackknife samples, for any leading shape.

    Args:
        normal: float64 (..., K1) ratings of the cases without disease; abnormal: (..., K2).
            -inf is a valid rating (an unmarked case); NaN is not.

    Returns:
        (fom (...), jk (..., K1 + K2)): jk[..., k] is the AUC without case k (cases without disease
        first), NaN when K1 or K2 is 1. Hanley & McNeil 1982; equals sklearn's roc_auc_score.
    """
    k2 = abnormal.shape[-1]
    return _fom_and_jackknife(np.asarray(normal, float), np.asarray(abnormal, float), np.arange(k2),
                              np.ones(k2), k2)


def wafroc(nl_normal: np.ndarray, ll: np.ndarray, lesion_case: np.ndarray, weights: np.ndarray,
           n_abnormal: int) -> tuple[np.ndarray, np.ndarray]:
    """wAFROC figure of merit (Chakraborty 2017; RJafroc's FOM_wAFROC) and its jackknife samples.

    Args:
        nl_normal: float64 (..., K1) highest NL rating on each case without lesions (-inf: none).
        ll: float64 (..., L) rating of each lesion (-inf: unmarked).
        lesion_case: int (L,) index of each lesion's case in 0..K2-1, non-decreasing, every case
            with at least one lesion. weights: float64 (L,) summing to 1 within each case.
        n_abnormal: K2.

    Returns:
        (fom (...), jk (..., K1 + K2)): FOM = sum over cases a without lesions, lesions l of
        w_l psi(nl_a, ll_l) / (K1 K2), psi(x, y) = 1 if y > x, 1/2 if equal (-inf == -inf), else 0;
        jk[..., k] = FOM without case k (cases without lesions first).
    """
    return _fom_and_jackknife(np.asarray(nl_normal, float), np.asarray(ll, float), np.asarray(lesion_case),
                              np.asarray(weights, float), int(n_abnormal))


def figures_of_merit(data: RocData | FrocData) -> tuple[np.ndarray, np.ndarray]:
    """Figures of merit and jackknife samples of a data set: ROC AUC for RocData, wAFROC for FrocData.

    Returns:
        (fom float64 (I, J), jk float64 (I, J, K1 + K2)).
    """
    if isinstance(data, RocData):
        return empirical_auc(data.normal, data.abnormal)
    k1 = len(data.normal_cases)
    return wafroc(data.nl[..., :k1], data.ll, data.lesion_case, data.weights, len(data.abnormal_cases))


# ------------------------------------------------------------------------- Obuchowski-Rockette
@dataclass(frozen=True)
class VarianceComponents:
    """Obuchowski-Rockette variance components (module docstring for the formulas).

    Attributes: var, cov1, cov2, cov3 (jackknife error covariances), var_tr (Var(T:R), Hillis 2011
    eq. 9), ms_t, ms_r, ms_tr (mean squares of the treatment x reader FOM table), n_cases (K of the
    data, the K* of the sample-size formulas).
    """

    var: float
    cov1: float
    cov2: float
    cov3: float
    var_tr: float
    ms_t: float
    ms_r: float
    ms_tr: float
    n_cases: int


@dataclass(frozen=True)
class Difference:
    """One pairwise difference of reader-averaged FOMs: ``treatments[0]`` minus ``treatments[1]``.

    Attributes: estimate, se, df (inf for the fixed-reader z interval), statistic (t or z), p
    (two-sided), ci95 (low, high) at the analysis' level.
    """

    treatments: tuple[str, str]
    estimate: float
    se: float
    df: float
    statistic: float
    p: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class RandomReaderTest:
    """Random readers, random cases: F, ndf, Hillis' ddf, p, and the F denominator ``ms_den``."""

    f: float
    ndf: int
    ddf: float
    p: float
    ms_den: float


@dataclass(frozen=True)
class FixedReaderTest:
    """Fixed readers, random cases: chi-square on ``df`` = I - 1, p, and the denominator ``ms_den``."""

    chisq: float
    df: int
    p: float
    ms_den: float


@dataclass(frozen=True)
class MrmcResult:
    """The Obuchowski-Rockette-Hillis analysis of one figure of merit.

    Attributes:
        fom_name: :data:`ROC_AUC` or :data:`WAFROC`.
        treatments, readers: labels in analysis order (I,), (J,).
        n_normal, n_abnormal: K1, K2.
        foms: float64 (I, J); jackknife: float64 (I, J, K1 + K2).
        treatment_means: float64 (I,) reader-averaged FOMs.
        components: :class:`VarianceComponents`.
        random: :class:`RandomReaderTest`; differences: random-reader pairwise differences.
        fixed: :class:`FixedReaderTest`; fixed_differences: fixed-reader pairwise differences.
        alpha: significance level of the tests and intervals (0.05: 95 % intervals).
    """

    fom_name: str
    treatments: tuple[str, ...]
    readers: tuple[str, ...]
    n_normal: int
    n_abnormal: int
    foms: np.ndarray
    jackknife: np.ndarray
    treatment_means: np.ndarray
    components: VarianceComponents
    random: RandomReaderTest
    differences: tuple[Difference, ...]
    fixed: FixedReaderTest
    fixed_differences: tuple[Difference, ...]
    alpha: float = 0.05
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_cases(self) -> int:
        """K = K1 + K2."""
        return self.n_normal + self.n_abnormal

    def difference(self, treatment: Any, reference: Any, *, fixed_readers: bool = False) -> Difference:
        """The difference ``treatment`` minus ``reference`` (from either direction of the stored pair).

        Raises:
            MrmcError: a label is not a treatment of the analysis, or both are the same.
        """
        a, b = label(treatment), label(reference)
        for d in self.fixed_differences if fixed_readers else self.differences:
            if d.treatments == (a, b):
                return d
            if d.treatments == (b, a):
                lo, hi = d.ci95
                return Difference((a, b), -d.estimate, d.se, d.df, -d.statistic, d.p, (-hi, -lo))
        raise MrmcError(f"No difference {a!r} minus {b!r}: the treatments are {list(self.treatments)}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite numbers become None): the ``--json`` object of the command line."""
        c = self.components
        return _finite({
            "fom": self.fom_name,
            "f": self.random.f, "ndf": self.random.ndf, "ddf": self.random.ddf, "p": self.random.p,
            "foms": {t: {r: float(self.foms[i, j]) for j, r in enumerate(self.readers)}
                     for i, t in enumerate(self.treatments)},
            "treatment_means": {t: float(m) for t, m in zip(self.treatments, self.treatment_means, strict=True)},
            "differences": [_diff_dict(d) for d in self.differences],
            "n_readers": len(self.readers), "n_cases": self.n_cases, "n_normal": self.n_normal,
            "n_abnormal": self.n_abnormal, "alpha": self.alpha,
            "variance_components": {"var": c.var, "cov1": c.cov1, "cov2": c.cov2, "cov3": c.cov3,
                                    "var_tr": c.var_tr, "ms_t": c.ms_t, "ms_r": c.ms_r, "ms_tr": c.ms_tr},
            "random_readers": {"f": self.random.f, "ndf": self.random.ndf, "ddf": self.random.ddf,
                               "p": self.random.p, "ms_den": self.random.ms_den},
            "fixed_readers": {"chisq": self.fixed.chisq, "df": self.fixed.df, "p": self.fixed.p,
                              "ms_den": self.fixed.ms_den,
                              "differences": [_diff_dict(d) for d in self.fixed_differences]},
            "notes": list(self.notes),
        })


def _diff_dict(d: Difference) -> dict[str, Any]:
    return {"treatments": list(d.treatments), "estimate": d.estimate, "ci95": list(d.ci95), "p": d.p,
            "se": d.se, "df": d.df, "statistic": d.statistic}


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def variance_components(foms: np.ndarray, jackknife: np.ndarray) -> VarianceComponents:
    """Obuchowski-Rockette variance components from FOMs and jackknife samples.

    Args:
        foms: float64 (I, J) with I >= 2, J >= 2; jackknife: float64 (I, J, K), K >= 2.

    Returns:
        :class:`VarianceComponents` (module docstring: pseudo-value covariances / K, Obuchowski &
        Rockette 1995; mean squares; Var(T:R) of Hillis et al. 2011 eq. 9).
    """
    n_t, n_r, k = jackknife.shape
    pseudo = k * foms[..., None] - (k - 1) * jackknife
    cov = np.atleast_2d(np.cov(pseudo.reshape(n_t * n_r, k))) / k
    ti = np.repeat(np.arange(n_t), n_r)
    rj = np.tile(np.arange(n_r), n_t)
    same_t = ti[:, None] == ti[None, :]
    same_r = rj[:, None] == rj[None, :]
    var = float(cov[same_t & same_r].mean())
    cov1 = float(cov[~same_t & same_r].mean())
    cov2 = float(cov[same_t & ~same_r].mean())
    cov3 = float(cov[~same_t & ~same_r].mean())
    mean_t = foms.mean(axis=1)
    mean_r = foms.mean(axis=0)
    grand = foms.mean()
    ms_t = float(n_r * ((mean_t - grand) ** 2).sum() / (n_t - 1))
    ms_r = float(n_t * ((mean_r - grand) ** 2).sum() / (n_r - 1))
    resid = foms - mean_t[:, None] - mean_r[None, :] + grand
    ms_tr = float((resid ** 2).sum() / ((n_t - 1) * (n_r - 1)))
    var_tr = ms_tr - var + cov1 + max(cov2 - cov3, 0.0)
    return VarianceComponents(var, cov1, cov2, cov3, var_tr, ms_t, ms_r, ms_tr, k)


def _ratio(num: float, den: float) -> float:
    """num / den for den >= 0: x / 0 = +-inf, 0 / 0 = NaN (degenerate data); NaN for den < 0."""
    if den > 0:
        return num / den
    if den == 0 and num != 0 and np.isfinite(num):
        return math.copysign(math.inf, num)
    return math.nan


def or_analysis(foms: np.ndarray, jackknife: np.ndarray, treatments: Sequence[str], readers: Sequence[str], *,
                n_normal: int, fom_name: str, alpha: float = 0.05) -> MrmcResult:
    """Obuchowski-Rockette-Hillis tests from FOMs and their jackknife samples (module docstring).

    Args:
        foms: float64 (I, J); jackknife: float64 (I, J, K); treatments (I,), readers (J,) labels.
        n_normal: K1 (the first K1 jackknife columns are the cases without disease).
        fom_name: name of the figure of merit for the report.
        alpha: level of the tests; intervals are (1 - alpha) two-sided.

    Returns:
        :class:`MrmcResult`. Degenerate data (every FOM equal) give F and t of 0/0 = NaN, reported
        as such; an MS(T:R) of 0 gives ddf = inf (then the F and t tests are the chi-square and z).

    Raises:
        MrmcError: fewer than 2 treatments, readers or cases, or shapes that do not match.
    """
    foms = np.asarray(foms, float)
    jackknife = np.asarray(jackknife, float)
    n_t, n_r = foms.shape
    if jackknife.shape[:2] != foms.shape or n_t < 2 or n_r < 2 or jackknife.shape[2] < 2:
        raise MrmcError(f"or_analysis needs foms (I, J) and jackknife (I, J, K) with I, J, K >= 2; got "
                        f"{foms.shape} and {jackknife.shape}.")
    comp = variance_components(foms, jackknife)
    notes: list[str] = []
    extra = max(comp.cov2 - comp.cov3, 0.0)
    if comp.cov2 - comp.cov3 < 0:
        notes.append("Cov2 < Cov3: max(Cov2 - Cov3, 0) = 0 was used (Hillis 2007).")
    ms_den = comp.ms_tr + n_r * extra
    f_stat = _ratio(comp.ms_t, ms_den)
    ndf = n_t - 1
    ddf = _ratio(ms_den ** 2, comp.ms_tr ** 2 / (ndf * (n_r - 1))) if ms_den > 0 else math.nan
    if math.isinf(ddf):
        p = float(stats.chi2.sf(f_stat * ndf, ndf))
    else:
        p = float(stats.f.sf(f_stat, ndf, ddf)) if np.isfinite(f_stat) else math.nan
    random = RandomReaderTest(float(f_stat), ndf, float(ddf), p, float(ms_den))
    fixed_den = comp.var - comp.cov1 + (n_r - 1) * extra
    chisq = _ratio(ndf * comp.ms_t, fixed_den)
    fixed = FixedReaderTest(float(chisq), ndf, float(stats.chi2.sf(chisq, ndf)) if np.isfinite(chisq) else math.nan,
                            float(fixed_den))
    means = foms.mean(axis=1)
    pairs = list(combinations(range(n_t), 2))
    diffs = tuple(_difference(treatments, a, b, means, ms_den, n_r, ddf, alpha) for a, b in pairs)
    fixed_diffs = tuple(_difference(treatments, a, b, means, fixed_den, n_r, math.inf, alpha) for a, b in pairs)
    return MrmcResult(fom_name, tuple(treatments), tuple(readers), int(n_normal), int(jackknife.shape[2] - n_normal),
                      foms, jackknife, means, comp, random, diffs, fixed, fixed_diffs, alpha, tuple(notes))


def _difference(treatments: Sequence[str], a: int, b: int, means: np.ndarray, den: float, n_r: int, df: float,
                alpha: float) -> Difference:
    est = float(means[a] - means[b])
    se = math.sqrt(2 * den / n_r) if den >= 0 else math.nan
    stat = _ratio(est, se)
    if math.isinf(df):
        q = float(stats.norm.isf(alpha / 2))
        p = float(2 * stats.norm.sf(abs(stat))) if np.isfinite(stat) else (0.0 if math.isinf(stat) else math.nan)
    else:
        q = float(stats.t.isf(alpha / 2, df)) if np.isfinite(df) else math.nan
        p = float(2 * stats.t.sf(abs(stat), df)) if np.isfinite(stat) and np.isfinite(df) else (
            0.0 if math.isinf(stat) else math.nan)
    return Difference((treatments[a], treatments[b]), est, se, float(df), float(stat), p, (est - q * se, est + q * se))


# ------------------------------------------------------------------------------------ top level
def analyse_roc(reads: pd.DataFrame, *, treatment_order: Sequence[Any] | None = None,
                alpha: float = 0.05) -> MrmcResult:
    """Random-reader random-case analysis of the empirical ROC AUC of ROC reads.

    Args:
        reads: ``reader, treatment, case, truth, rating`` (module docstring).
        treatment_order: order of the treatments, setting the direction of the differences
            (default sorted: RJafroc's "trt1 - trt2"). Pass ("aided", "unaided") for aided minus unaided.
        alpha: test level (0.05: 95 % intervals).

    Returns:
        :class:`MrmcResult` with ``fom_name`` :data:`ROC_AUC`.

    Raises:
        MrmcError subclasses: see :func:`roc_data`.
    """
    data = roc_data(reads, treatment_order=treatment_order)
    return analyse_data(data, alpha=alpha)


def analyse_froc(truth: pd.DataFrame, marks: pd.DataFrame, *, fom: str = WAFROC,
                 readers: Sequence[Any] | None = None, treatments: Sequence[Any] | None = None,
                 treatment_order: Sequence[Any] | None = None, alpha: float = 0.05) -> MrmcResult:
    """Random-reader random-case analysis of FROC marks: wAFROC, or the ROC AUC of its ROC reduction.

    Args:
        truth, marks: see :func:`froc_data`.
        fom: :data:`WAFROC` (default) or :data:`ROC_AUC` (highest mark per case, :func:`froc_to_roc`).
        readers, treatments, treatment_order: see :func:`froc_data`.
        alpha: test level.

    Returns:
        :class:`MrmcResult`.

    Raises:
        MrmcError subclasses: see :func:`froc_data`; MrmcError for an unknown ``fom``.
    """
    if fom not in (WAFROC, ROC_AUC):
        raise MrmcError(f"Unknown figure of merit {fom!r}; use {WAFROC!r} or {ROC_AUC!r}.")
    data = froc_data(truth, marks, readers=readers, treatments=treatments, treatment_order=treatment_order)
    return analyse_data(froc_to_roc(data) if fom == ROC_AUC else data, alpha=alpha)


def analyse_data(data: RocData | FrocData, *, alpha: float = 0.05) -> MrmcResult:
    """The analysis of a checked data set (ROC AUC for :class:`RocData`, wAFROC for :class:`FrocData`)."""
    foms, jk = figures_of_merit(data)
    return or_analysis(foms, jk, data.treatments, data.readers, n_normal=len(data.normal_cases),
                       fom_name=ROC_AUC if isinstance(data, RocData) else WAFROC, alpha=alpha)


def _name(treatment: str) -> str:
    return f"treatment {treatment}" if label_key(treatment)[0] == 0 else treatment


def plain_sentence(result: MrmcResult, *, treatment: Any | None = None, reference: Any | None = None,
                   question: str | None = None) -> str:
    """One sentence a project lead can quote: the random-reader result of ``treatment`` minus ``reference``.

    Args:
        result: :class:`MrmcResult`.
        treatment, reference: the pair (default: the first difference, as stored).
        question: what "cannot tell" refers to, e.g. "the AI helps" (default "<treatment> and
            <reference> differ").

    Returns:
        For example "With 2 readers and 5 cases the study cannot tell whether the AI helps: aided
        minus unaided ROC AUC 0.00, 95 % CI -0.21 to 0.21 (p = 1.00; random readers and random
        cases)." or, when the interval excludes 0, "With 5 readers and 114 cases, aided is better
        than unaided: ...". Numbers to 2 decimals, p to 2 significant digits.
    """
    d = result.differences[0] if treatment is None and reference is None else result.difference(
        treatment if treatment is not None else result.treatments[0],
        reference if reference is not None else result.treatments[-1])
    a, b = _name(d.treatments[0]), _name(d.treatments[1])
    lo, hi = d.ci95
    pct = round(100 * (1 - result.alpha))
    interval = (f"{pct} % CI {lo:.2f} to {hi:.2f}" if np.isfinite(lo) and np.isfinite(hi)
                else "no interval (the figures of merit do not vary between cases or readers)")
    numbers = (f"{a} minus {b} {result.fom_name} {d.estimate:.2f}, {interval} "
               f"({_p_text(d.p)}; random readers and random cases)")
    lead = f"With {len(result.readers)} readers and {result.n_cases} cases"
    if np.isfinite(d.p) and d.p < result.alpha and (lo > 0 or hi < 0):
        word = "better" if d.estimate > 0 else "worse"
        return f"{lead}, {a} is {word} than {b}: {numbers}."
    q = question or f"{a} and {b} differ"
    return f"{lead} the study cannot tell whether {q}: {numbers}."


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "p not defined"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"
