"""Reader-study statistics: unaided versus aided reads against a reference standard.

Pure functions on pandas tables (no SQL, no Streamlit): the database side
(``services.reader_study.ReaderStudyService.study_data``) gathers the rows, this module computes, and
the report (``services.pilot_report``) lays the numbers out. Keeping the maths here lets the tests
check every figure against a hand computation without a database.

Inputs (column names; extra columns are ignored):

* ``reads``: one row per CURRENT read: ``reader_id`` (int), ``case_id`` (int), ``phase``
  ("unaided" / "aided"), ``finding`` (normal / benign / malignant), ``confidence`` (int 1-5),
  ``seconds`` (float >= 0, phase time).
* ``cases``: one row per case: ``case_id``, ``ai_label`` (the AI result shown), ``reference``
  (normal / benign / malignant, or NaN when there is no reference standard yet).

Definitions (each table below says which cases it uses):

* Malignant versus rest: a read is POSITIVE when its finding is malignant; a case is positive
  when its reference is malignant. Sensitivity = TP / (TP + FN), specificity = TN / (TN + FP),
  accuracy = (TP + TN) / n, over reads of cases that have a reference standard.
* Malignancy rating 1-5 (for ROC AUC), from finding and confidence (high confidence = 4 or 5):
  malignant & high = 5, malignant & low = 4, benign = 3, normal & low = 2, normal & high = 1.
  ROC AUC is the empirical (Mann-Whitney) area, ties counted 1/2 (Hanley & McNeil 1982),
  ``sklearn.metrics.roc_auc_score``.
* Pooled: every read of every reader together for sensitivity, specificity and accuracy (in a
  fully crossed list this equals the mean over readers); for ROC AUC the mean of the readers'
  AUCs (ratings of different readers are not on one scale; the reader-averaged AUC of MRMC
  analyses, Obuchowski & Rockette 1995).
* 95 % intervals: percentile bootstrap over CASES (Efron & Tibshirani 1993): each replicate
  draws the analysed cases with replacement (``core.stats.bootstrap.group_counts``, the grouped
  resampler) and weights every reader's read of a case by its count, so one draw serves all
  readers (reads of one case are correlated). Replicates where a value is undefined (no
  malignant case drawn) are dropped for that value.
* Cohen's kappa (Cohen 1960) of the reads with the AI label, three classes, unweighted,
  ``core.stats.agreement.cohen_kappa``; over every read (a reference is not needed).
* Changes of mind: on cases with both reads and a reference; a read is RIGHT when its finding
  equals the reference finding (three classes). wrong->right, right->wrong, right->right,
  wrong->wrong, split by whether the AI label was right. Automation-bias rate = right->wrong
  with the AI wrong / cases where the AI was wrong (per reader; pooled: summed over readers).
* Time per case: mean and median of the phase seconds per reader and phase.
* SUS: each reader's latest SUS score (Brooke 1996; ``core.domain``); pooled = mean over readers.

MRMC: no maintained Python implementation of the Obuchowski-Rockette or Dorfman-Berbaum-Metz
analysis was found (the maintained ones are R packages: MRMCaov, RJafroc, iMRMC), so the
pooled AUC difference gets the case-bootstrap interval only, which treats readers as fixed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from core.domain import CLASS_NAMES, Finding
from core.stats.agreement import cohen_kappa
from core.stats.bootstrap import group_counts, percentile_interval

#: Label of the pooled row in every table's ``reader_id`` column.
POOLED = "pooled"
#: Phases in report order.
PHASES: tuple[str, ...] = ("unaided", "aided")
#: Confidence from which a read counts as "high confidence" in the malignancy rating.
HIGH_CONFIDENCE = 4
#: Default bootstrap replicates and seed.
N_BOOT = 2000
SEED = 20260
#: Proportion metrics with bootstrap intervals, in report order.
INTERVAL_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "accuracy", "auc")


class ReaderMetricsError(ValueError):
    """The reads or cases cannot be analysed; the message says which column or value is wrong."""


def malignancy_rating(finding: str, confidence: int) -> int:
    """The 1-5 malignancy rating of a read (see the module docstring).

    Args:
        finding: normal / benign / malignant. confidence: whole number 1-5.

    Returns:
        int 1-5: malignant & confidence >= 4 -> 5, malignant & <= 3 -> 4, benign -> 3,
        normal & <= 3 -> 2, normal & >= 4 -> 1.

    Raises:
        ReaderMetricsError: unknown finding or confidence outside 1-5.
    """
    if finding not in CLASS_NAMES:
        raise ReaderMetricsError(f"Unknown finding {finding!r}; expected one of {', '.join(CLASS_NAMES)}.")
    if not 1 <= int(confidence) <= 5:
        raise ReaderMetricsError(f"Confidence must be 1-5, got {confidence!r}.")
    high = int(confidence) >= HIGH_CONFIDENCE
    if finding == Finding.MALIGNANT.value:
        return 5 if high else 4
    if finding == Finding.BENIGN.value:
        return 3
    return 1 if high else 2


def _check(reads: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Reads joined with their case's ai_label and reference; rating, positive/truth columns."""
    for col in ("reader_id", "case_id", "phase", "finding", "confidence", "seconds"):
        if col not in reads.columns:
            raise ReaderMetricsError(f"The reads table has no column {col!r}.")
    for col in ("case_id", "ai_label", "reference"):
        if col not in cases.columns:
            raise ReaderMetricsError(f"The cases table has no column {col!r}.")
    bad = set(reads["phase"]) - set(PHASES)
    if bad:
        raise ReaderMetricsError(f"Unknown read phase(s) {sorted(bad)}; expected unaided or aided.")
    df = reads.merge(cases[["case_id", "ai_label", "reference"]], on="case_id", how="left", validate="many_to_one")
    if df["ai_label"].isna().any():
        raise ReaderMetricsError("A read refers to a case that is not in the cases table.")
    df["rating"] = [malignancy_rating(f, c) for f, c in zip(df["finding"], df["confidence"], strict=True)]
    df["positive"] = df["finding"] == Finding.MALIGNANT.value
    df["truth"] = df["reference"] == Finding.MALIGNANT.value
    df["has_reference"] = df["reference"].notna()
    return df


def _readers(df: pd.DataFrame) -> list:
    return sorted(df["reader_id"].unique().tolist())


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _weighted_auc(w: np.ndarray, truth: np.ndarray, rating: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties 1/2) per row of case weights ``w`` (B, n_reads) -> (B,)."""
    levels = np.arange(1, 6)
    pos = np.stack([(w * (truth & (rating == k))).sum(axis=1) for k in levels], axis=1)  # (B, 5)
    neg = np.stack([(w * (~truth & (rating == k))).sum(axis=1) for k in levels], axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * below).sum(axis=1) + 0.5 * (pos * neg).sum(axis=1)
    return _ratio(num, pos.sum(axis=1) * neg.sum(axis=1))


def _auc(truth: np.ndarray, rating: np.ndarray) -> float:
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, rating))


def accuracy_table(reads: pd.DataFrame, cases: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = SEED,
                   level: float = 0.95) -> pd.DataFrame:
    """Sensitivity, specificity, accuracy and ROC AUC, malignant versus rest, per reader and pooled.

    Uses the reads of cases with a reference standard.

    Args:
        reads, cases: see the module docstring.
        n_boot: bootstrap replicates over cases (0: no intervals, NaN bounds).
        seed: seed of ``numpy.random.default_rng`` for the replicates.
        level: interval level (0.95 = 95 %).

    Returns:
        DataFrame, one row per (reader_id, phase) that has reads, then the pooled rows
        (``reader_id`` = :data:`POOLED`): ``reader_id, phase, n_reads, n_malignant, tp, fn, tn,
        fp, sensitivity, specificity, accuracy, auc`` and ``<metric>_low``, ``<metric>_high``
        for each of :data:`INTERVAL_METRICS`. Undefined values are NaN.

    Raises:
        ReaderMetricsError: missing columns, unknown phases or findings, reads of unknown cases.
    """
    df = _check(reads, cases)
    df = df[df["has_reference"]]
    case_ids = sorted(df["case_id"].unique().tolist())
    index = {c: i for i, c in enumerate(case_ids)}
    weights = group_counts(len(case_ids), n_boot, seed)
    rows: list[dict] = []
    for phase in PHASES:
        ph = df[df["phase"] == phase]
        if ph.empty:
            continue
        boot_auc = []
        pooled_w, pooled_t, pooled_c = [], [], []
        point_aucs = []
        for reader in _readers(ph):
            g = ph[ph["reader_id"] == reader]
            ci = g["case_id"].map(index).to_numpy()
            t = g["truth"].to_numpy(bool)
            c = g["positive"].to_numpy(bool)
            r = g["rating"].to_numpy(int)
            w = weights[:, ci]
            auc_b = _weighted_auc(w, t, r)
            boot_auc.append(auc_b)
            pooled_w.append(w)
            pooled_t.append(t)
            pooled_c.append(c)
            auc = _auc(t, r)
            point_aucs.append(auc)
            rows.append(_row(reader, phase, t, c, w, auc, auc_b, level))
        w = np.concatenate(pooled_w, axis=1)
        t = np.concatenate(pooled_t)
        c = np.concatenate(pooled_c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates: NaN, dropped below
            auc_b = np.nanmean(np.stack(boot_auc), axis=0) if n_boot else np.zeros(0)
            auc = float(np.nanmean(point_aucs)) if np.isfinite(point_aucs).any() else float("nan")
        rows.append(_row(POOLED, phase, t, c, w, auc, auc_b, level))
    cols = ["reader_id", "phase", "n_reads", "n_malignant", "tp", "fn", "tn", "fp"]
    for m in INTERVAL_METRICS:
        cols += [m, f"{m}_low", f"{m}_high"]
    out = pd.DataFrame(rows, columns=cols)
    return _pooled_last(out)


def _pooled_last(out: pd.DataFrame) -> pd.DataFrame:
    if out.empty:
        return out
    key = out["reader_id"].map(lambda r: (1, 0) if r == POOLED else (0, r))
    phase = out["phase"].map(PHASES.index) if "phase" in out else 0
    return out.assign(_k=key, _p=phase).sort_values(["_k", "_p"]).drop(columns=["_k", "_p"]).reset_index(drop=True)


def _row(reader, phase: str, t: np.ndarray, c: np.ndarray, w: np.ndarray, auc: float, auc_b: np.ndarray,
         level: float) -> dict:
    tp, fn = int((t & c).sum()), int((t & ~c).sum())
    tn, fp = int((~t & ~c).sum()), int((~t & c).sum())
    point = {
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "accuracy": (tp + tn) / t.size if t.size else float("nan"),
        "auc": auc,
    }
    boot = {
        "sensitivity": _ratio((w * (t & c)).sum(axis=1), (w * t).sum(axis=1)),
        "specificity": _ratio((w * (~t & ~c)).sum(axis=1), (w * ~t).sum(axis=1)),
        "accuracy": _ratio((w * (t == c)).sum(axis=1), w.sum(axis=1)),
        "auc": auc_b,
    }
    row = {"reader_id": reader, "phase": phase, "n_reads": int(t.size), "n_malignant": int(t.sum()),
           "tp": tp, "fn": fn, "tn": tn, "fp": fp}
    for m in INTERVAL_METRICS:
        lo, hi = percentile_interval(boot[m], level)
        row.update({m: point[m], f"{m}_low": lo, f"{m}_high": hi})
    return row


def auc_difference(reads: pd.DataFrame, cases: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = SEED,
                   level: float = 0.95) -> dict[str, float]:
    """Pooled (reader-averaged) AUC aided minus unaided, with its case-bootstrap interval.

    Uses readers who have both phases on cases with a reference standard; the same case draws
    (``default_rng(seed)``) for both phases, so the interval reflects the paired design.

    Returns:
        dict ``n_readers``, ``auc_unaided``, ``auc_aided``, ``difference``, ``low``, ``high``
        (NaN when there are no such readers or no malignant / no non-malignant case).
    """
    df = _check(reads, cases)
    df = df[df["has_reference"]]
    both = [r for r in _readers(df) if set(df.loc[df["reader_id"] == r, "phase"]) >= set(PHASES)]
    nan = float("nan")
    if not both:
        return {"n_readers": 0, "auc_unaided": nan, "auc_aided": nan, "difference": nan, "low": nan, "high": nan}
    case_ids = sorted(df["case_id"].unique().tolist())
    index = {c: i for i, c in enumerate(case_ids)}
    weights = group_counts(len(case_ids), n_boot, seed)
    point, boot = {}, {}
    for phase in PHASES:
        pts, bs = [], []
        for r in both:
            g = df[(df["reader_id"] == r) & (df["phase"] == phase)]
            t, rt = g["truth"].to_numpy(bool), g["rating"].to_numpy(int)
            pts.append(_auc(t, rt))
            bs.append(_weighted_auc(weights[:, g["case_id"].map(index).to_numpy()], t, rt))
        point[phase] = float(np.mean(pts))
        boot[phase] = np.mean(np.stack(bs), axis=0)
    lo, hi = percentile_interval(boot["aided"] - boot["unaided"], level)
    return {"n_readers": len(both), "auc_unaided": point["unaided"], "auc_aided": point["aided"],
            "difference": point["aided"] - point["unaided"], "low": lo, "high": hi}


def roc_points(reads: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Empirical ROC points of the malignancy rating per reader and phase (for figures).

    Returns:
        DataFrame ``reader_id, phase, fpr, tpr, threshold`` (``sklearn.metrics.roc_curve``);
        readers/phases without both malignant and other cases are left out.
    """
    df = _check(reads, cases)
    df = df[df["has_reference"]]
    parts = []
    for (reader, phase), g in df.groupby(["reader_id", "phase"], sort=True):
        t = g["truth"].to_numpy(bool)
        if t.all() or not t.any():
            continue
        fpr, tpr, thr = roc_curve(t, g["rating"].to_numpy(int))
        parts.append(pd.DataFrame({"reader_id": reader, "phase": phase, "fpr": fpr, "tpr": tpr, "threshold": thr}))
    cols = ["reader_id", "phase", "fpr", "tpr", "threshold"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def kappa_table(reads: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa of each reader's reads with the AI label, per phase, and pooled.

    Uses every read (cases without a reference too). Pooled: all readers' reads of the phase
    against the AI label of their case, as one pair of rating sequences.

    Returns:
        DataFrame ``reader_id, phase, n_reads, percent_agreement (0-100), kappa`` (NaN when
        fewer than 2 reads or chance agreement is 1).
    """
    df = _check(reads, cases)
    rows = []
    for phase in PHASES:
        ph = df[df["phase"] == phase]
        if ph.empty:
            continue
        for reader, g in [*((r, ph[ph["reader_id"] == r]) for r in _readers(ph)), (POOLED, ph)]:
            a, b = g["finding"].tolist(), g["ai_label"].tolist()
            rows.append({"reader_id": reader, "phase": phase, "n_reads": len(a),
                         "percent_agreement": 100.0 * float(np.mean(np.array(a) == np.array(b))),
                         "kappa": cohen_kappa(a, b)})
    return _pooled_last(pd.DataFrame(rows, columns=["reader_id", "phase", "n_reads", "percent_agreement", "kappa"]))


def paired_reads(reads: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """One row per (reader, case) with both reads and a reference: rightness of each and of the AI.

    Returns:
        DataFrame ``reader_id, case_id, reference, ai_label, unaided, aided, unaided_right,
        aided_right, ai_right, change`` where change is one of "wrong->right", "right->wrong",
        "right->right", "wrong->wrong" (three-class rightness against the reference).
    """
    df = _check(reads, cases)
    df = df[df["has_reference"]]
    wide = df.pivot_table(index=["reader_id", "case_id"], columns="phase", values="finding", aggfunc="last")
    cols = ["reader_id", "case_id", "reference", "ai_label", "unaided", "aided", "unaided_right", "aided_right",
            "ai_right", "change"]
    if not set(PHASES) <= set(wide.columns):
        return pd.DataFrame(columns=cols)
    wide = wide.dropna(subset=list(PHASES)).reset_index()
    wide = wide.merge(cases[["case_id", "reference", "ai_label"]], on="case_id")
    wide["unaided_right"] = wide["unaided"] == wide["reference"]
    wide["aided_right"] = wide["aided"] == wide["reference"]
    wide["ai_right"] = wide["ai_label"] == wide["reference"]
    word = {True: "right", False: "wrong"}
    wide["change"] = [f"{word[u]}->{word[a]}" for u, a in zip(wide["unaided_right"], wide["aided_right"], strict=True)]
    return wide[cols].sort_values(["reader_id", "case_id"]).reset_index(drop=True)


#: Kinds of change of mind, in report order.
CHANGES: tuple[str, ...] = ("wrong->right", "right->wrong", "right->right", "wrong->wrong")


def change_table(reads: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Changes of mind from the unaided to the aided read, split by whether the AI was right.

    Returns:
        DataFrame ``reader_id, ai, n_cases`` and one count column per :data:`CHANGES`; ``ai``
        is "AI right", "AI wrong" or "all"; one block per reader, then the pooled block.
    """
    pairs = paired_reads(reads, cases)
    rows = []
    readers = sorted(pairs["reader_id"].unique().tolist())
    for reader, g in [*((r, pairs[pairs["reader_id"] == r]) for r in readers), (POOLED, pairs)]:
        right = g["ai_right"].astype(bool).to_numpy()
        for label, sub in (("AI right", g.loc[right]), ("AI wrong", g.loc[~right]), ("all", g)):
            rows.append({"reader_id": reader, "ai": label, "n_cases": len(sub),
                         **{c: int((sub["change"] == c).sum()) for c in CHANGES}})
    return pd.DataFrame(rows, columns=["reader_id", "ai", "n_cases", *CHANGES])


def automation_bias_table(reads: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Automation-bias rate per reader and pooled.

    rate = (cases read right unaided and wrong aided while the AI was wrong) / (cases where the
    AI was wrong), over the reader's paired reads (:func:`paired_reads`); pooled sums both
    counts over readers.

    Returns:
        DataFrame ``reader_id, n_ai_wrong, right_to_wrong_ai_wrong, rate`` (rate NaN when the AI
        was never wrong).
    """
    pairs = paired_reads(reads, cases)
    rows = []
    readers = sorted(pairs["reader_id"].unique().tolist())
    for reader, g in [*((r, pairs[pairs["reader_id"] == r]) for r in readers), (POOLED, pairs)]:
        wrong = g.loc[~g["ai_right"].astype(bool).to_numpy()]
        k = int((wrong["change"] == "right->wrong").sum())
        rows.append({"reader_id": reader, "n_ai_wrong": len(wrong), "right_to_wrong_ai_wrong": k,
                     "rate": k / len(wrong) if len(wrong) else float("nan")})
    return pd.DataFrame(rows, columns=["reader_id", "n_ai_wrong", "right_to_wrong_ai_wrong", "rate"])


def time_table(reads: pd.DataFrame) -> pd.DataFrame:
    """Time per case in seconds per reader and phase, and pooled.

    Returns:
        DataFrame ``reader_id, phase, n_reads, mean_s, median_s``.
    """
    for col in ("reader_id", "phase", "seconds"):
        if col not in reads.columns:
            raise ReaderMetricsError(f"The reads table has no column {col!r}.")
    rows = []
    for phase in PHASES:
        ph = reads[reads["phase"] == phase]
        if ph.empty:
            continue
        for reader, g in [*((r, ph[ph["reader_id"] == r]) for r in _readers(ph)), (POOLED, ph)]:
            x = g["seconds"].to_numpy(float)
            rows.append({"reader_id": reader, "phase": phase, "n_reads": int(x.size), "mean_s": float(x.mean()),
                         "median_s": float(np.median(x))})
    return _pooled_last(pd.DataFrame(rows, columns=["reader_id", "phase", "n_reads", "mean_s", "median_s"]))


def sus_table(sus: pd.DataFrame, reader_ids) -> pd.DataFrame:
    """Each reader's latest SUS score and the mean over readers who answered.

    Args:
        sus: ``reader_id, sus_score, created_at`` (any order; latest = greatest created_at).
        reader_ids: the list's readers (those without an answer get NaN).

    Returns:
        DataFrame ``reader_id, n_answers, sus_score`` (latest), then the pooled row whose
        ``sus_score`` is the mean of the readers' latest scores and ``n_answers`` the number of
        readers who answered.
    """
    rows = []
    latest = []
    for r in sorted(reader_ids):
        g = sus[sus["reader_id"] == r].sort_values("created_at", kind="stable")
        score = float(g["sus_score"].iloc[-1]) if len(g) else float("nan")
        if len(g):
            latest.append(score)
        rows.append({"reader_id": r, "n_answers": len(g), "sus_score": score})
    rows.append({"reader_id": POOLED, "n_answers": len(latest),
                 "sus_score": float(np.mean(latest)) if latest else float("nan")})
    return pd.DataFrame(rows, columns=["reader_id", "n_answers", "sus_score"])


@dataclass(frozen=True)
class ReaderStudyResults:
    """All tables of a reader-study analysis (see the functions that make each)."""

    n_cases: int
    n_with_reference: int
    n_malignant: int
    accuracy: pd.DataFrame
    auc_difference: dict
    kappa: pd.DataFrame
    changes: pd.DataFrame
    automation_bias: pd.DataFrame
    times: pd.DataFrame
    sus: pd.DataFrame
    roc: pd.DataFrame
    n_boot: int
    seed: int


def analyse(reads: pd.DataFrame, cases: pd.DataFrame, sus: pd.DataFrame, reader_ids, *, n_boot: int = N_BOOT,
            seed: int = SEED) -> ReaderStudyResults:
    """Every table of the pilot report from current reads, cases and SUS answers.

    Args:
        reads: current reads (module docstring); a ``current`` column, when present, selects
            rows where it is True (superseded reads are not analysed).
        cases, sus, reader_ids: see :func:`accuracy_table` and :func:`sus_table`.
        n_boot, seed: bootstrap replicates and seed.

    Returns:
        :class:`ReaderStudyResults`.

    Raises:
        ReaderMetricsError: see :func:`accuracy_table`.
    """
    if "current" in reads.columns:
        reads = reads[reads["current"].astype(bool)]
    ref = cases["reference"].notna()
    return ReaderStudyResults(
        n_cases=len(cases), n_with_reference=int(ref.sum()),
        n_malignant=int((cases["reference"] == Finding.MALIGNANT.value).sum()),
        accuracy=accuracy_table(reads, cases, n_boot=n_boot, seed=seed),
        auc_difference=auc_difference(reads, cases, n_boot=n_boot, seed=seed),
        kappa=kappa_table(reads, cases), changes=change_table(reads, cases),
        automation_bias=automation_bias_table(reads, cases), times=time_table(reads),
        sus=sus_table(sus, reader_ids), roc=roc_points(reads, cases), n_boot=n_boot, seed=seed,
    )
