"""The MRMC part of the pilot report: Obuchowski-Rockette-Hillis analysis of the pilot's reads and
lesion marks, the sample size of the next study, and the pilot's data in the MRMC file layouts.

Built from ``services.reader_study.StudyData`` with the pure functions of ``core.stats``:

* **ROC AUC** of the 1-5 malignancy rating (``core.stats.reader_metrics.malignancy_rating``) of each
  reader's current read per step (treatment), against the reference standard (truth 1 =
  malignant); cases without a reference standard are left out.
* **wAFROC** of the readers' current lesion marks against the reference lesions, where the list
  has any: marks are scored by ``core.stats.lesions`` (:data:`core.stats.lesions.RULES`); a case
  without reference lesions is a lesion-free case, so every case with a malignant reference
  standard must have its lesions entered first.
* For each figure of merit, ``core.stats.mrmc``: FOMs per treatment and reader, the random-reader
  random-case OR-Hillis test (F, ndf, ddf, p), the fixed-reader test beside it, aided minus
  unaided with its 95 % CI and p under both, and ``plain_sentence``; ``core.stats.sample_size``:
  power for 3-15 readers x 50-500 cases at the observed effect and at the coordinator's effect,
  the cases needed per number of readers and the smallest design with 80 % power.

Where an analysis cannot run, :attr:`FomAnalysis.missing` says what is missing (too few readers
or cases, no case of one truth state, no reference standard, no reference lesions, reads that
are not there yet: the design is not fully crossed) and there is no table. The typed errors of
``core.stats.mrmc`` (all ``MrmcError``) are caught here and turned into those lines.

Labels in the MRMC tables: reader = the reader's user id, treatment = ``unaided`` / ``aided``,
case = the case id (whole numbers, as RJafroc's Excel layout needs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.stats import lesions as sl
from core.stats import mrmc, mrmc_io, sample_size
from core.stats import reader_metrics as rm
from db.schema import ReadingMode
from services.reader_study import StudyData

#: Treatments in the order of the differences (aided minus unaided).
TREATMENT_ORDER: tuple[str, ...] = ("aided", "unaided")
#: What the plain sentence asks.
QUESTION = "the AI helps"
#: Default effect (difference of figures of merit) offered on the page for the next study.
DEFAULT_EFFECT = 0.05
#: Most missing reads named in a "what is missing" line.
MAX_NAMED = 12
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True)
class PlannedSize:
    """The sample size of the next study at one effect: ``size`` or, when it cannot be computed, ``problem``."""

    label: str
    effect: float
    size: sample_size.SampleSize | None
    problem: str = ""


@dataclass(frozen=True)
class FomAnalysis:
    """The analysis of one figure of merit, or what it is missing.

    Attributes:
        fom: ``mrmc.ROC_AUC`` or ``mrmc.WAFROC``.
        result: the ``MrmcResult`` (None when the analysis cannot run).
        missing: lines saying what is missing (empty when ``result`` is set).
        sentence: the plain sentence (``mrmc.plain_sentence``), "" without a result.
        sizes: the next study at the observed effect and at the coordinator's effect.
        notes: remarks on the data analysed (cases left out, Cov2 < Cov3 ...).
    """

    fom: str
    result: mrmc.MrmcResult | None
    missing: tuple[str, ...] = ()
    sentence: str = ""
    sizes: tuple[PlannedSize, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Download:
    """One file of the pilot's data: name, MIME type, content (str for CSV, bytes for Excel)."""

    label: str
    file_name: str
    mime: str
    content: str | bytes


@dataclass(frozen=True)
class MrmcSection:
    """Everything the report shows about the MRMC analysis.

    Attributes:
        analyses: the ROC AUC analysis, then the wAFROC analysis.
        effect: the coordinator's effect (None: none typed).
        downloads: the pilot's data in the MRMC layouts, by key (``roc_csv``, ``roc_xlsx``,
            ``froc_truth_csv``, ``froc_marks_csv``, ``froc_xlsx``); a layout the data cannot fill is absent.
        download_problems: why a layout is absent (key -> sentence), when there is a reason to tell.
        scored_marks: the current marks scored (``core.stats.lesions.score_marks`` columns plus
            ``mark_id, reader_id, step, case_id, nodule_id``); empty without lesions or marks.
        lesion_counts: per reader and step: marks, LL, NL, dropped, lesions localised, AI findings taken.
        mark_changes: per reader, how the aided marks differ from the copied unaided ones.
    """

    analyses: tuple[FomAnalysis, ...]
    effect: float | None
    downloads: dict[str, Download]
    download_problems: dict[str, str] = field(default_factory=dict)
    scored_marks: pd.DataFrame = field(default_factory=pd.DataFrame)
    lesion_counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    mark_changes: pd.DataFrame = field(default_factory=pd.DataFrame)


# ------------------------------------------------------------------------------ inputs
def steps_of(mode: str) -> tuple[str, ...]:
    """The treatments (steps) a list of this mode has, in analysis order."""
    return {ReadingMode.AI_AFTER_UNAIDED.value: TREATMENT_ORDER, ReadingMode.AI_AT_ONCE.value: ("aided",),
            ReadingMode.NO_AI.value: ("unaided",)}.get(mode, TREATMENT_ORDER)


def roc_reads(data: StudyData) -> pd.DataFrame:
    """The pilot's current reads of cases with a reference standard as ROC reads
    (``reader, treatment, case, truth, rating``; truth 1 = malignant; rating = malignancy rating 1-5)."""
    reads = data.reads[data.reads["current"].astype(bool)] if len(data.reads) else data.reads
    ref = data.cases.set_index("case_id")["reference"]
    truth = reads["case_id"].map(ref)
    reads = reads[truth.notna()]
    truth = truth[truth.notna()]
    return pd.DataFrame({
        "reader": reads["reader_id"].astype(int).to_numpy(), "treatment": reads["phase"].to_numpy(),
        "case": reads["case_id"].astype(int).to_numpy(),
        "truth": (truth == "malignant").astype(int).to_numpy(),
        "rating": [rm.malignancy_rating(f, c) for f, c in zip(reads["finding"], reads["confidence"], strict=True)],
    }, columns=list(mrmc.ROC_COLUMNS))


def _spacing(data: StudyData) -> dict[int, tuple[float | None, float | None, float | None]]:
    out = {}
    for r in data.cases.itertuples():
        vals = [getattr(r, f"spacing_{a}_mm", np.nan) for a in "zyx"]
        out[int(r.case_id)] = tuple(None if pd.isna(v) else float(v) for v in vals)
    return out


def lesion_table(data: StudyData) -> pd.DataFrame:
    """The reference lesions in ``core.stats.lesions`` layout, lesions numbered 1..n within a case by id."""
    les = data.lesions.sort_values(["case_id", "lesion_id"], kind="mergesort")
    return pd.DataFrame({
        "case": les["case_id"].astype(int).to_numpy(),
        "lesion": (les.groupby("case_id").cumcount() + 1).to_numpy(),
        "slice": les["slice_index"].astype(int).to_numpy(), "x": les["x"].to_numpy(dtype=float),
        "y": les["y"].to_numpy(dtype=float), "diameter_mm": les["diameter_mm"].to_numpy(dtype=float),
        "lesion_id": les["lesion_id"].to_numpy(),
    }, columns=[*sl.LESION_COLUMNS, "lesion_id"])


def scored_marks(data: StudyData) -> pd.DataFrame:
    """The current lesion marks scored against the reference lesions (``core.stats.lesions.score_marks``).

    Returns:
        one row per current mark: ``reader, treatment, case, slice, x, y, rating, lesion, outcome,
        distance_mm, metric, mark_id, reader_id, step, case_id, nodule_id``; empty when there are no marks.
    """
    marks = data.marks[data.marks["current"].astype(bool)] if len(data.marks) else data.marks
    frame = pd.DataFrame({
        "reader": marks["reader_id"].astype(int).to_numpy(), "treatment": marks["step"].to_numpy(),
        "case": marks["case_id"].astype(int).to_numpy(), "slice": marks["slice_index"].astype(int).to_numpy(),
        "x": marks["x"].to_numpy(dtype=float), "y": marks["y"].to_numpy(dtype=float),
        "rating": marks["rating"].to_numpy(dtype=float), "mark_id": marks["mark_id"].to_numpy(),
        "reader_id": marks["reader_id"].to_numpy(), "step": marks["step"].to_numpy(),
        "case_id": marks["case_id"].to_numpy(), "nodule_id": marks["nodule_id"].to_numpy(),
    })
    return sl.score_marks(lesion_table(data), frame, _spacing(data))


# ------------------------------------------------------------------------------ what is missing
def _names(data: StudyData) -> dict[int, str]:
    return {int(k): str(v) for k, v in zip(data.readers["reader_id"], data.readers["reader"], strict=True)}


def _positions(data: StudyData) -> dict[int, int]:
    return {int(k): int(v) for k, v in zip(data.cases["case_id"], data.cases["position"], strict=True)}


def missing_reads(data: StudyData) -> list[tuple[int, str, int]]:
    """(reader id, step, case id) of every read the fully crossed design needs and the list lacks."""
    reads = data.reads[data.reads["current"].astype(bool)] if len(data.reads) else data.reads
    have = set(zip(reads["reader_id"].astype(int), reads["phase"], reads["case_id"].astype(int), strict=True))
    return [(int(r), step, int(c)) for r in data.readers["reader_id"] for step in steps_of(data.list.mode)
            for c in data.cases.sort_values("position")["case_id"] if (int(r), step, int(c)) not in have]


def _missing_lines(data: StudyData, missing: list[tuple[int, str, int]]) -> str:
    names, pos = _names(data), _positions(data)
    named = "; ".join(f"{names.get(r, r)}, {step} step, case {pos.get(c, c)}" for r, step, c in missing[:MAX_NAMED])
    more = f"; and {len(missing) - MAX_NAMED} more" if len(missing) > MAX_NAMED else ""
    return (f"Not every reader has read every case in every step yet ({len(missing)} reads missing: {named}{more}). "
            "The Obuchowski-Rockette analysis needs a fully crossed design: every reader reads every case "
            "in both steps.")


def _explain(exc: mrmc.MrmcError, data: StudyData) -> str:
    """A "what is missing" line for an MrmcError of the analysis."""
    if isinstance(exc, mrmc.NotFullyCrossedError):
        missing = [(int(float(r)), t, int(float(c))) for r, t, c in exc.missing if c != "*"]
        if missing:
            return _missing_lines(data, missing)
        return str(exc)
    if isinstance(exc, mrmc.TooFewTreatmentsError):
        return (f"This list is read in one step only (mode {data.list.mode}): the analysis compares the unaided and "
                "the aided step, so it needs a list in the mode 'AI after an unaided read'.")
    if isinstance(exc, mrmc.TooFewReadersError):
        return (f"Only {len(data.readers)} reader: the random-reader analysis estimates the spread between readers "
                "and needs at least 2 (more give a narrower interval).")
    return str(exc)


# ------------------------------------------------------------------------------ analyses
def _sizes(result: mrmc.MrmcResult, effect: float | None) -> tuple[PlannedSize, ...]:
    out = []
    observed = result.difference("aided", "unaided").estimate
    for label, value in (("observed effect", observed), ("effect you typed", effect)):
        if value is None:
            continue
        try:
            size = sample_size.from_result(result, effect=float(value))
        except mrmc.MrmcError as exc:
            out.append(PlannedSize(label, float(value), None, str(exc)))
            continue
        if not np.isfinite(size.power).any():
            out.append(PlannedSize(label, float(value), None,
                                   "The pilot's variance components give no positive variance (every figure of merit "
                                   "is the same), so no power can be computed."))
            continue
        out.append(PlannedSize(label, float(value), size))
    return tuple(out)


def _run(fom: str, run, data: StudyData, effect: float | None, notes: list[str]) -> FomAnalysis:
    try:
        result = run()
    except mrmc.MrmcError as exc:
        return FomAnalysis(fom, None, missing=(_explain(exc, data),), notes=tuple(notes))
    sentence = mrmc.plain_sentence(result, treatment="aided", reference="unaided", question=QUESTION)
    return FomAnalysis(fom, result, sentence=sentence, sizes=_sizes(result, effect),
                       notes=tuple(notes) + result.notes)


def roc_analysis(data: StudyData, effect: float | None = None) -> FomAnalysis:
    """The ROC AUC analysis of the malignancy rating, or what it is missing (module docstring)."""
    if data.reads.empty:
        return FomAnalysis(mrmc.ROC_AUC, None, missing=("No reads yet.",))
    if data.cases["reference"].isna().all():
        return FomAnalysis(mrmc.ROC_AUC, None, missing=(
            "No case has a reference standard: enter it on Reading lists (form or CSV).",))
    notes = []
    n_without = int(data.cases["reference"].isna().sum())
    if n_without:
        notes.append(f"{n_without} case(s) without a reference standard are left out.")
    reads = roc_reads(data)
    with_ref = set(data.cases.loc[data.cases["reference"].notna(), "case_id"].astype(int))
    missing = [m for m in missing_reads(data) if m[2] in with_ref]
    if missing:
        return FomAnalysis(mrmc.ROC_AUC, None, missing=(_missing_lines(data, missing),), notes=tuple(notes))
    order = [t for t in TREATMENT_ORDER if t in set(reads["treatment"])]
    return _run(mrmc.ROC_AUC, lambda: mrmc.analyse_roc(reads, treatment_order=order or None), data, effect, notes)


def froc_inputs(data: StudyData, scored: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The FROC truth and marks tables (``core.stats.mrmc`` layouts) of the whole list."""
    cases = data.cases.sort_values("position")["case_id"].astype(int).tolist()
    if scored.empty:
        scored = pd.DataFrame(columns=["reader", "treatment", "case", "lesion", "rating", "outcome"])
    return sl.froc_tables(lesion_table(data), scored, cases)


def wafroc_analysis(data: StudyData, scored: pd.DataFrame, effect: float | None = None) -> FomAnalysis:
    """The wAFROC analysis of the lesion marks, or what it is missing (module docstring)."""
    if data.lesions.empty:
        return FomAnalysis(mrmc.WAFROC, None, missing=(
            "No reference lesions: enter them on Reading lists (form, CSV or LIDC XML) to score the lesion marks "
            "with wAFROC.",))
    with_lesions = set(data.lesions["case_id"].astype(int))
    malignant = data.cases[(data.cases["reference"] == "malignant")]
    lacking = [int(p) for c, p in zip(malignant["case_id"], malignant["position"], strict=True)
               if int(c) not in with_lesions]
    if lacking:
        return FomAnalysis(mrmc.WAFROC, None, missing=(
            f"Case(s) {', '.join(map(str, sorted(lacking)))} have a malignant reference standard but no reference "
            "lesion: enter their lesions (a case without reference lesions counts as lesion-free).",))
    missing = missing_reads(data)
    if missing:
        return FomAnalysis(mrmc.WAFROC, None, missing=(_missing_lines(data, missing),))
    truth, marks = froc_inputs(data, scored)
    steps = steps_of(data.list.mode)
    readers = data.readers["reader_id"].astype(int).tolist()
    n_dropped = int((scored["outcome"] == sl.DROPPED).sum()) if len(scored) else 0
    notes = [f"{n_dropped} mark(s) dropped: another mark of the same reader and step localised the same lesion "
             "with a rating at least as high."] if n_dropped else []
    return _run(mrmc.WAFROC, lambda: mrmc.analyse_froc(truth, marks, readers=readers, treatments=list(steps),
                                                       treatment_order=list(steps)), data, effect, notes)


# ------------------------------------------------------------------------------ counts, changes
def lesion_counts(data: StudyData, scored: pd.DataFrame) -> pd.DataFrame:
    """Per reader and step: ``reader, step, marks, LL, NL, dropped, lesions localised, AI findings taken``."""
    names = _names(data)
    n_lesions = len(data.lesions)
    rows = []
    for reader in data.readers["reader_id"].astype(int):
        for step in steps_of(data.list.mode):
            g = scored[(scored["reader_id"] == reader) & (scored["step"] == step)] if len(scored) else scored
            ll = g[g["outcome"] == sl.LL] if len(g) else g
            rows.append({"reader": names.get(reader, reader), "step": step, "marks": len(g),
                         "LL": int((g["outcome"] == sl.LL).sum()) if len(g) else 0,
                         "NL": int((g["outcome"] == sl.NL).sum()) if len(g) else 0,
                         "dropped": int((g["outcome"] == sl.DROPPED).sum()) if len(g) else 0,
                         "lesions localised": f"{len(ll)} of {n_lesions}",
                         "AI findings taken": int(g["nodule_id"].notna().sum()) if len(g) else 0})
    return pd.DataFrame(rows, columns=["reader", "step", "marks", "LL", "NL", "dropped", "lesions localised",
                                       "AI findings taken"])


def mark_changes(data: StudyData) -> pd.DataFrame:
    """How each reader's aided marks differ from their unaided ones (recorded in the mark chains).

    Returns:
        ``reader, unaided marks, copies kept, copies re-rated, copies deleted, added by hand,
        AI findings taken`` (current state of each aided chain: a copy is kept when its current
        row has the copied rating, re-rated when another, deleted when its chain ends in a deletion).
    """
    names = _names(data)
    m = data.marks
    rows = []
    for reader in data.readers["reader_id"].astype(int):
        mine = m[m["reader_id"] == reader] if len(m) else m
        unaided = int(((mine["step"] == "unaided") & mine["current"]).sum()) if len(mine) else 0
        kept = rerated = deleted = added = taken = 0
        aided = mine[mine["step"] == "aided"] if len(mine) else mine
        for _, chain in (aided.groupby("chain_id") if len(aided) else []):
            first = chain.loc[chain["mark_id"].idxmin()]
            alive = chain[chain["current"]]
            if pd.notna(first["copied_from_id"]):
                if alive.empty:
                    deleted += 1
                elif int(alive["rating"].iloc[0]) == int(first["rating"]):
                    kept += 1
                else:
                    rerated += 1
            elif not alive.empty:
                if pd.notna(first["nodule_id"]):
                    taken += 1
                else:
                    added += 1
        rows.append({"reader": names.get(reader, reader), "unaided marks": unaided, "copies kept": kept,
                     "copies re-rated": rerated, "copies deleted": deleted, "added by hand": added,
                     "AI findings taken": taken})
    return pd.DataFrame(rows, columns=["reader", "unaided marks", "copies kept", "copies re-rated", "copies deleted",
                                       "added by hand", "AI findings taken"])


# ------------------------------------------------------------------------------ downloads
def downloads(data: StudyData, scored: pd.DataFrame) -> tuple[dict[str, Download], dict[str, str]]:
    """The pilot's own data in the MRMC layouts (``core.stats.mrmc_io`` writers) and why a layout is absent.

    The writers check values, not the design, so an unfinished pilot can still be downloaded.
    """
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in data.list.name)
    out: dict[str, Download] = {}
    problems: dict[str, str] = {}
    reads = roc_reads(data)
    if reads.empty:
        problems["roc_csv"] = "No read of a case with a reference standard yet."
    else:
        out["roc_csv"] = Download("ROC reads (CSV)", f"pilot_{name}_roc_reads.csv", "text/csv", mrmc_io.roc_csv(reads))
        try:
            out["roc_xlsx"] = Download("RJafroc workbook, ROC (Excel)", f"pilot_{name}_roc_rjafroc.xlsx", XLSX,
                                       mrmc_io.rjafroc_excel_roc(reads))
        except mrmc.MrmcError as exc:
            problems["roc_xlsx"] = str(exc)
    if data.lesions.empty:
        problems["froc_truth_csv"] = "No reference lesions yet."
        return out, problems
    truth, marks = froc_inputs(data, scored)
    steps = list(steps_of(data.list.mode))
    readers = data.readers["reader_id"].astype(int).tolist()
    out["froc_truth_csv"] = Download("FROC truth (CSV)", f"pilot_{name}_froc_truth.csv", "text/csv",
                                     mrmc_io.froc_truth_csv(truth))
    out["froc_marks_csv"] = Download("FROC marks (CSV)", f"pilot_{name}_froc_marks.csv", "text/csv",
                                     mrmc_io.froc_marks_csv(marks, truth))
    try:
        out["froc_xlsx"] = Download("RJafroc workbook, FROC (Excel)", f"pilot_{name}_froc_rjafroc.xlsx", XLSX,
                                    mrmc_io.rjafroc_excel_froc(truth, marks, readers=readers, treatments=steps))
    except mrmc.MrmcError as exc:
        problems["froc_xlsx"] = str(exc)
    return out, problems


def build_section(data: StudyData, *, effect: float | None = None) -> MrmcSection:
    """The MRMC section of the pilot report.

    Args:
        data: from ``ReaderStudyService.study_data``.
        effect: the difference of figures of merit the coordinator wants the next study to detect
            (a number, e.g. 0.05), or None for the observed effect only.

    Returns:
        :class:`MrmcSection`.

    Raises:
        ValueError: ``effect`` is not a finite number.
    """
    if effect is not None and not math.isfinite(float(effect)):
        raise ValueError(f"The effect must be a finite number, got {effect!r}.")
    scored = scored_marks(data) if len(data.marks) else pd.DataFrame(
        columns=["reader", "treatment", "case", "lesion", "rating", "outcome", "reader_id", "step", "nodule_id"])
    analyses = (roc_analysis(data, effect), wafroc_analysis(data, scored, effect))
    files, problems = downloads(data, scored)
    return MrmcSection(analyses=analyses, effect=None if effect is None else float(effect), downloads=files,
                       download_problems=problems, scored_marks=scored, lesion_counts=lesion_counts(data, scored),
                       mark_changes=mark_changes(data))


# ------------------------------------------------------------------------------ display tables
def _f(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fom_table(a: FomAnalysis, data: StudyData) -> pd.DataFrame:
    """FOMs per reader (rows, reader average last) and treatment (columns), 3 decimals."""
    r = a.result
    names = _names(data)
    rows = [{"reader": names.get(int(float(reader)), reader),
             **{t: _f(r.foms[i, j]) for i, t in enumerate(r.treatments)}} for j, reader in enumerate(r.readers)]
    rows.append({"reader": "reader average", **{t: _f(m) for t, m in zip(r.treatments, r.treatment_means,
                                                                          strict=True)}})
    return pd.DataFrame(rows, columns=["reader", *[t for t in TREATMENT_ORDER[::-1] if t in r.treatments]])


def test_table(a: FomAnalysis) -> pd.DataFrame:
    """The random-reader OR-Hillis test and the fixed-reader test, one row each."""
    r = a.result
    return pd.DataFrame([
        {"analysis": "random readers, random cases (OR, Hillis ddf)", "statistic": f"F = {_f(r.random.f, 3)}",
         "df": f"{r.random.ndf} and {_f(r.random.ddf, 2)}", "p": _p(r.random.p)},
        {"analysis": "fixed readers, random cases", "statistic": f"chi-square = {_f(r.fixed.chisq, 3)}",
         "df": str(r.fixed.df), "p": _p(r.fixed.p)},
    ], columns=["analysis", "statistic", "df", "p"])


def difference_table(a: FomAnalysis) -> pd.DataFrame:
    """Aided minus unaided under random and fixed readers: estimate, 95 % CI, p."""
    r = a.result
    out = []
    for label, fixed in (("random readers, random cases", False), ("fixed readers, random cases", True)):
        d = r.difference("aided", "unaided", fixed_readers=fixed)
        lo, hi = d.ci95
        out.append({"analysis": label, "aided - unaided": _f(d.estimate),
                    "95 % CI": f"{_f(lo)} to {_f(hi)}", "p": _p(d.p)})
    return pd.DataFrame(out, columns=["analysis", "aided - unaided", "95 % CI", "p"])


def components_table(a: FomAnalysis) -> pd.DataFrame:
    """The Obuchowski-Rockette variance components (what the sample size is computed from)."""
    c = a.result.components
    return pd.DataFrame([{"Var": c.var, "Cov1": c.cov1, "Cov2": c.cov2, "Cov3": c.cov3, "Var(T:R)": c.var_tr,
                          "MS(T)": c.ms_t, "MS(T:R)": c.ms_tr}]).map(lambda v: f"{v:.3g}")


def power_table(size: sample_size.SampleSize) -> pd.DataFrame:
    """Power (2 decimals) by readers (rows, first column) and cases (columns)."""
    t = size.table().map(lambda v: "n/a" if not np.isfinite(v) else f"{v:.2f}")
    t.columns = [f"{k} cases" for k in t.columns]
    return t.reset_index()


def cases_needed_table(size: sample_size.SampleSize) -> pd.DataFrame:
    """Cases needed for 80 % power per number of readers ("more than 2000" when none suffice)."""
    return pd.DataFrame({"readers": size.readers.tolist(),
                         "cases for 80 % power": [str(int(k)) if k > 0 else f"more than {sample_size.MAX_CASES}"
                                                  for k in size.cases_needed]})


def smallest_text(size: sample_size.SampleSize) -> str:
    """One sentence: the smallest design with 80 % power (fewest reads per step), or that there is none."""
    if size.smallest is None:
        return (f"No design of 3-15 readers with up to {sample_size.MAX_CASES} cases reaches "
                f"{round(100 * size.target)} % power at an effect of {size.effect:.3f}.")
    j, k = size.smallest
    return (f"Smallest design with {round(100 * size.target)} % power at an effect of {size.effect:.3f}: "
            f"{j} readers x {k} cases ({j * k} reads per step; random readers and random cases, alpha "
            f"{size.alpha:g}).")
