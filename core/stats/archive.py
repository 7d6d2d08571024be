"""Comparing models on a site's own archive: pure functions on a table of archive results.

The database side (``services.archive``) gathers one row per (series, model) scored in a run;
this module computes, without SQL or Streamlit, so the tests can check every figure by hand.

Input ``results`` (a DataFrame; extra columns are ignored), one row per DONE (series, model):

* ``study_key``, ``series_key`` (pseudonymous keys), ``model_id``, ``kind``
  ("slice_classifier" / "nodule_detector");
* slice classifiers: ``finding`` (normal / benign / malignant), ``series_score`` in [0, 1] (the
  suspicious-class score of ``core.inference``), ``is_ood`` (bool), ``probabilities`` (the mean
  class-probability row of the top-k slices, the row the finding was decided on),
  ``class_names`` and ``thresholds`` (the model card's, as recorded with the result);
* the nodule detector: ``n_nodules`` (int).

Definitions:

* Flagged: the series finding is the suspicious class (``core.domain.suspicious_class``:
  malignant). Out-of-distribution series (``is_ood``) are counted apart and stay in the figures.
* Agreement between two models: Cohen's kappa (Cohen 1960; ``core.stats.agreement.cohen_kappa``:
  ``sklearn.metrics.cohen_kappa_score`` over the three findings, unweighted) and the percentage
  of equal findings, on the series both scored.
* Against a reference standard (study key -> finding, from reports): one score per STUDY and
  model, that of its most suspicious series (highest series score; a study with a tumour is
  positive when any of its series shows it). ROC AUC (malignant versus rest), sensitivity and
  specificity of the model's own decision (the card's thresholds, ``core.inference.decision.decide``) come
  from ``core.stats.metrics.evaluate_predictions``, with percentile-bootstrap 95 % intervals over
  studies (Efron & Tibshirani 1993).
* Disagreement of a series: the number of distinct findings the slice classifiers gave it, then
  the range (max - min) of their series scores.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.domain import Finding, suspicious_index
from core.stats.agreement import cohen_kappa
from core.stats.metrics import evaluate_predictions

__all__ = [
    "ArchiveComparison",
    "ArchiveStatsError",
    "Reference",
    "accuracy_against_reference",
    "compare",
    "disagreements",
    "kappa_pairs",
    "nodule_counts",
    "parse_reference_csv",
    "score_histogram",
    "score_summary",
]

SLICE_CLASSIFIER = "slice_classifier"
NODULE_DETECTOR = "nodule_detector"
#: Bins of the score histogram: 10 equal bins over [0, 1].
HISTOGRAM_BINS = 10
#: Largest reference CSV accepted (bytes): a year of studies is well under it.
MAX_REFERENCE_BYTES = 20 * 1024 * 1024


class ArchiveStatsError(ValueError):
    """The results or the reference cannot be analysed; the message says which column or row is wrong."""


def _classified(results: pd.DataFrame) -> pd.DataFrame:
    """The slice-classifier rows with a finding and a score."""
    for col in ("study_key", "series_key", "model_id", "kind"):
        if col not in results.columns:
            raise ArchiveStatsError(f"The results table has no column {col!r}.")
    df = results[results["kind"] == SLICE_CLASSIFIER]
    for col in ("finding", "series_score"):
        if col not in df.columns:
            raise ArchiveStatsError(f"The results table has no column {col!r}.")
    return df[df["finding"].notna() & df["series_score"].notna()]


def _suspicious(class_names) -> str:
    names = tuple(class_names) if class_names is not None and len(class_names) else tuple(f.value for f in Finding)
    return names[suspicious_index(names)]


def score_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per slice-classifier model: the distribution of series scores and how many series it flagged.

    Returns:
        DataFrame ``model_id, n_series, mean, min, p25, median, p75, max`` (series score, [0, 1]),
        ``n_flagged`` (finding = the suspicious class), ``percent_flagged`` (0-100) and ``n_ood``
        (series out of distribution), one row per model in name order.
    """
    df = _classified(results)
    rows = []
    for model, g in df.groupby("model_id", sort=True):
        s = g["series_score"].to_numpy(float)
        names = g["class_names"].iloc[0] if "class_names" in g.columns else None
        flagged = int((g["finding"] == _suspicious(names)).sum())
        q = np.percentile(s, [0, 25, 50, 75, 100])
        rows.append({"model_id": model, "n_series": len(g), "mean": float(s.mean()), "min": float(q[0]),
                     "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]), "max": float(q[4]),
                     "n_flagged": flagged, "percent_flagged": 100.0 * flagged / len(g),
                     "n_ood": int(g["is_ood"].fillna(False).astype(bool).sum()) if "is_ood" in g.columns else 0})
    cols = ["model_id", "n_series", "mean", "min", "p25", "median", "p75", "max", "n_flagged", "percent_flagged",
            "n_ood"]
    return pd.DataFrame(rows, columns=cols)


def score_histogram(results: pd.DataFrame, bins: int = HISTOGRAM_BINS) -> pd.DataFrame:
    """Counts of series scores per model in ``bins`` equal bins over [0, 1] (the last bin holds 1.0).

    Returns:
        DataFrame ``model_id, bin_lo, bin_hi, count`` (``bins`` rows per model).
    """
    df = _classified(results)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    rows = []
    for model, g in df.groupby("model_id", sort=True):
        counts, _ = np.histogram(g["series_score"].to_numpy(float), bins=edges)
        rows.extend({"model_id": model, "bin_lo": float(lo), "bin_hi": float(hi), "count": int(c)}
                    for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True))
    return pd.DataFrame(rows, columns=["model_id", "bin_lo", "bin_hi", "count"])


def kappa_pairs(results: pd.DataFrame) -> pd.DataFrame:
    """Agreement of every pair of slice classifiers on the series finding, over series both scored.

    Returns:
        DataFrame ``model_a, model_b, n_series, percent_agreement (0-100), kappa`` (Cohen's
        kappa; NaN for fewer than 2 series or when chance agreement is 1), pairs in name order.
    """
    df = _classified(results)
    wide = df.pivot_table(index="series_key", columns="model_id", values="finding", aggfunc="first")
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        x, y = both[a].tolist(), both[b].tolist()
        rows.append({"model_a": a, "model_b": b, "n_series": len(x),
                     "percent_agreement": 100.0 * float(np.mean(np.array(x) == np.array(y))) if x else math.nan,
                     "kappa": cohen_kappa(x, y)})
    return pd.DataFrame(rows, columns=["model_a", "model_b", "n_series", "percent_agreement", "kappa"])


def nodule_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Per nodule detector: nodules found per series.

    Returns:
        DataFrame ``model_id, n_series, mean, median, max, n_none, n_1, n_2, n_3, n_4_or_more``
        (series with 0, 1, 2, 3 and 4 or more nodules).
    """
    cols = ["model_id", "n_series", "mean", "median", "max", "n_none", "n_1", "n_2", "n_3", "n_4_or_more"]
    if "kind" not in results.columns or "n_nodules" not in results.columns:
        return pd.DataFrame(columns=cols)
    df = results[(results["kind"] == NODULE_DETECTOR) & results["n_nodules"].notna()]
    rows = []
    for model, g in df.groupby("model_id", sort=True):
        n = g["n_nodules"].to_numpy(int)
        rows.append({"model_id": model, "n_series": len(n), "mean": float(n.mean()), "median": float(np.median(n)),
                     "max": int(n.max()), "n_none": int((n == 0).sum()), "n_1": int((n == 1).sum()),
                     "n_2": int((n == 2).sum()), "n_3": int((n == 3).sum()), "n_4_or_more": int((n >= 4).sum())})
    return pd.DataFrame(rows, columns=cols)


def disagreements(results: pd.DataFrame, top: int = 20) -> pd.DataFrame:
    """The series where the slice classifiers disagree most (scored by at least two of them).

    Returns:
        DataFrame ``study_key, series_key, n_models, n_findings`` (distinct findings),
        ``findings`` ("model: finding; ..."), ``score_min, score_max, score_range``, most
        disagreeing first (more distinct findings, then a wider score range), at most ``top`` rows.
    """
    df = _classified(results)
    rows = []
    for (study, series), g in df.groupby(["study_key", "series_key"], sort=True):
        if g["model_id"].nunique() < 2:
            continue
        s = g["series_score"].to_numpy(float)
        rows.append({"study_key": study, "series_key": series, "n_models": int(g["model_id"].nunique()),
                     "n_findings": int(g["finding"].nunique()),
                     "findings": "; ".join(f"{m}: {f}" for m, f in sorted(zip(g["model_id"], g["finding"],
                                                                             strict=True))),
                     "score_min": float(s.min()), "score_max": float(s.max()), "score_range": float(s.max() - s.min())})
    cols = ["study_key", "series_key", "n_models", "n_findings", "findings", "score_min", "score_max", "score_range"]
    out = pd.DataFrame(rows, columns=cols)
    if out.empty:
        return out
    out = out.sort_values(["n_findings", "score_range", "series_key"], ascending=[False, False, True])
    return out.head(int(top)).reset_index(drop=True)


@dataclass(frozen=True)
class Reference:
    """A reference standard as uploaded: finding per study key and per accession number.

    Accession numbers identify studies at the site: they are resolved to study keys against the
    PACS when the comparison is made (``services.archive``) and never stored.
    """

    by_study_key: dict[str, str] = field(default_factory=dict)
    by_accession: dict[str, str] = field(default_factory=dict)


def parse_reference_csv(data: bytes | str) -> Reference:
    """Read a reference CSV: a header row, then one study per row.

    Columns (case-insensitive): ``finding`` (normal / benign / malignant) and either
    ``study_key`` (the pseudonymous key shown by LungReview) or ``accession`` (also
    ``accession_number``); a row may give both (the study key wins). Blank lines are skipped.

    Returns:
        :class:`Reference`.

    Raises:
        ArchiveStatsError: not UTF-8 text, larger than 20 MiB, no ``finding`` column, neither
            key column, a row without a key, an unknown finding (the message names the line), or
            one study given two different findings.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_REFERENCE_BYTES:
            raise ArchiveStatsError("The reference file is larger than 20 MiB; split it or keep the needed columns.")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ArchiveStatsError("The reference file is not UTF-8 text; save it as CSV (UTF-8).") from exc
    reader = csv.DictReader(io.StringIO(data))
    header = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
    if "finding" not in header:
        raise ArchiveStatsError("The reference CSV has no 'finding' column; give study_key or accession, and finding.")
    key_col = header.get("study_key")
    acc_col = header.get("accession") or header.get("accession_number")
    if key_col is None and acc_col is None:
        raise ArchiveStatsError("The reference CSV needs a 'study_key' or an 'accession' column next to 'finding'.")
    allowed = {f.value for f in Finding}
    out = Reference()
    for line, row in enumerate(reader, start=2):
        values = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if not any(values.values()):
            continue
        finding = values.get(header["finding"], "").lower()
        if finding not in allowed:
            raise ArchiveStatsError(f"Line {line}: unknown finding {finding!r}; use one of {', '.join(sorted(allowed))}.")
        key = values.get(key_col, "").lower() if key_col else ""
        acc = values.get(acc_col, "") if acc_col else ""
        target, name = (out.by_study_key, key) if key else (out.by_accession, acc)
        if not name:
            raise ArchiveStatsError(f"Line {line}: neither a study key nor an accession number.")
        if target.get(name, finding) != finding:
            raise ArchiveStatsError(f"Line {line}: this study was given two different findings; keep one.")
        target[name] = finding
    return out


_ACCURACY_COLUMNS = ["model_id", "n_studies", "n_malignant", "auc", "auc_lo", "auc_hi", "sensitivity", "sensitivity_lo",
                     "sensitivity_hi", "specificity", "specificity_lo", "specificity_hi", "ci_method"]


def accuracy_against_reference(results: pd.DataFrame, reference: Mapping[str, str], *, n_boot: int = 1000,
                               seed: int = 0) -> pd.DataFrame:
    """ROC AUC, sensitivity and specificity (malignant versus rest) per slice classifier, per study.

    Args:
        results: as in the module docstring; needs ``probabilities``, ``class_names`` and
            ``thresholds`` besides the keys, finding and score.
        reference: study key -> finding (normal / benign / malignant); studies of the run without
            a reference are left out, references of studies not in the run are ignored.
        n_boot, seed: bootstrap replicates (0: no intervals) and seed (``core.stats.metrics``).

    Returns:
        DataFrame ``model_id, n_studies, n_malignant, auc, auc_lo, auc_hi, sensitivity,
        sensitivity_lo, sensitivity_hi, specificity, specificity_lo, specificity_hi, ci_method``;
        NaN where undefined (e.g. AUC when every referenced study is malignant).

    Raises:
        ArchiveStatsError: a reference finding is unknown, or a result lacks its probabilities.
    """
    allowed = {f.value for f in Finding}
    ref = {str(k).strip().lower(): str(v).strip().lower() for k, v in reference.items()}
    bad = sorted({v for v in ref.values() if v not in allowed})
    if bad:
        raise ArchiveStatsError(f"Unknown reference finding(s) {bad}; use normal, benign or malignant.")
    df = _classified(results)
    df = df[df["study_key"].isin(ref)]
    rows = []
    for model, g in df.groupby("model_id", sort=True):
        if "probabilities" not in g.columns or g["probabilities"].isna().any():
            raise ArchiveStatsError(f"Results of {model} lack their class probabilities; score the run again.")
        best = g.sort_values(["series_score", "series_key"], ascending=[False, True]).groupby("study_key").head(1)
        best = best.sort_values("study_key")
        names = tuple(best["class_names"].iloc[0])
        pos = suspicious_index(names)
        proba = np.stack([np.asarray(p, dtype=np.float64) for p in best["probabilities"]])
        truth = [ref[k] for k in best["study_key"]]
        if all(t in names for t in truth):
            y = np.array([names.index(t) for t in truth])
        else:  # a binary model: malignant -> its suspicious class, anything else -> the other class
            other = next(i for i in range(len(names)) if i != pos)
            y = np.array([pos if t == Finding.MALIGNANT.value else other for t in truth])
        thresholds = {str(c): float(t) for c, t in dict(best["thresholds"].iloc[0] or {}).items()}
        report = evaluate_predictions(y, proba, names, n_boot=n_boot, seed=seed, thresholds=thresholds)
        ci = report["ci95"]

        def val(x):
            return math.nan if x is None else float(x)

        rows.append({"model_id": model, "n_studies": len(best), "n_malignant": int((y == pos).sum()),
                     "auc": val(report["roc_auc_malignant"]), "auc_lo": val(ci["roc_auc_malignant"][0]),
                     "auc_hi": val(ci["roc_auc_malignant"][1]),
                     "sensitivity": val(report["sensitivity_malignant"]),
                     "sensitivity_lo": val(ci["sensitivity_malignant"][0]),
                     "sensitivity_hi": val(ci["sensitivity_malignant"][1]),
                     "specificity": val(report["specificity_malignant"]),
                     "specificity_lo": val(ci["specificity_malignant"][0]),
                     "specificity_hi": val(ci["specificity_malignant"][1]),
                     "ci_method": report["ci_method"].replace("slices (no patient groups given)", "studies")})
    return pd.DataFrame(rows, columns=_ACCURACY_COLUMNS)


@dataclass(frozen=True)
class ArchiveComparison:
    """Every table of :func:`compare` (each described by the function that makes it)."""

    scores: pd.DataFrame
    histogram: pd.DataFrame
    kappa: pd.DataFrame
    nodules: pd.DataFrame
    disagreements: pd.DataFrame
    accuracy: pd.DataFrame | None = None
    n_reference_studies: int = 0


def compare(results: pd.DataFrame, reference: Mapping[str, str] | None = None, *, top: int = 20,
            n_boot: int = 1000, seed: int = 0) -> ArchiveComparison:
    """All comparison tables of one run: scores, histogram, kappa, nodule counts, disagreements and,
    with a reference (study key -> finding), accuracy.

    Raises:
        ArchiveStatsError: see the functions called.
    """
    acc = None
    n_ref = 0
    if reference:
        acc = accuracy_against_reference(results, reference, n_boot=n_boot, seed=seed)
        keys = set(results["study_key"]) if "study_key" in results.columns else set()
        n_ref = len(keys & {str(k).strip().lower() for k in reference})
    return ArchiveComparison(scores=score_summary(results), histogram=score_histogram(results),
                             kappa=kappa_pairs(results), nodules=nodule_counts(results),
                             disagreements=disagreements(results, top=top), accuracy=acc, n_reference_studies=n_ref)
