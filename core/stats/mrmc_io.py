"""MRMC data in and out: the CSV layouts of ``lungreview-mrmc`` and RJafroc's Excel layout.

Pure functions: readers return DataFrames, writers return the file's content (``str`` for CSV,
``bytes`` for Excel) so that a page can offer it as a download and the command line can write it.

Layouts (those of ``../shared/datasets/mrmc/README.md`` and of :mod:`core.stats.mrmc`):

* ROC reads CSV: ``reader,treatment,case,truth,rating`` (RJafroc's CSV example layout).
* FROC truth CSV: ``case,lesion,weight``; FROC marks CSV: ``reader,treatment,case,lesion,rating``.
* RJafroc's Excel workbook (``DfReadDataFile(file, newExcelFileFormat = TRUE)``; RJafroc's data
  format chapters, Chakraborty's RJafrocQuickStart book): three sheets, ``Truth`` (``CaseID,
  LesionID, Weight, ReaderID, ModalityID, Paradigm``; ReaderID and ModalityID hold every reader /
  treatment as one comma-separated text on every row; Paradigm holds the paradigm (FROC or ROC)
  in its first row and the design FCTRL in its second), ``NL`` (``ReaderID, ModalityID, CaseID,
  FP_Rating``) and ``LL`` (``ReaderID, ModalityID, CaseID, LesionID, TP_Rating``). For ROC data
  the NL sheet holds the ratings of the cases without disease and the LL sheet those of the cases
  with disease (lesion 1). RJafroc needs whole-number case ids and labels without commas or spaces.

Mapping the pilot's own reads (the report does this; ``core.reader_metrics`` defines the rating):
reader = ``reader_id``, treatment = ``phase`` (unaided / aided), case = ``case_id``, truth = 1
when the reference standard is malignant, rating = ``malignancy_rating(finding, confidence)``;
FROC marks: lesion = the reference lesion the mark hit (0: none), rating = the mark's 1-5 rating.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd

from core.stats.mrmc import (
    MARK_COLUMNS,
    ROC_COLUMNS,
    TRUTH_COLUMNS,
    MissingColumnsError,
    MrmcError,
    check_marks,
    check_reads,
    check_truth,
    label_key,
)


class CsvReadError(MrmcError):
    """A CSV file cannot be opened or has no header row."""


def read_csv_table(source: str | Path | IO[str], columns: Sequence[str], what: str) -> pd.DataFrame:
    """Read a CSV file as text values, indexed by line number (header = line 1).

    Args:
        source: path or open text file. columns: the layout's columns (checked present).
        what: name of the table for messages ("reads", "truth", "marks").

    Returns:
        DataFrame of str (blank cells ""), index = the line number of each row in the file, so
        that the errors of :mod:`core.stats.mrmc` ("row 7: ...") point at the file's lines.
        Column names are stripped of spaces; extra columns are kept.

    Raises:
        CsvReadError: the file cannot be read, is not UTF-8 text or is empty.
        MissingColumnsError: a column of ``columns`` is missing.
    """
    try:
        if isinstance(source, (str, Path)):
            with open(source, newline="", encoding="utf-8-sig") as f:
                rows, header = _rows(f)
        else:
            rows, header = _rows(source)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CsvReadError(f"Cannot read the {what} file {source}: {e}") from e
    if header is None:
        raise CsvReadError(f"The {what} file {source} is empty; it needs a header row {','.join(columns)}.")
    frame = pd.DataFrame([values for _, values in rows], columns=header, index=[n for n, _ in rows], dtype=object)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumnsError(f"The {what} file {source} has no column(s) {', '.join(missing)}; its header must "
                                  f"name {','.join(columns)} (it has {','.join(header) or 'none'}).")
    return frame


def _rows(f: IO[str]) -> tuple[list[tuple[int, list[str]]], list[str] | None]:
    reader = csv.reader(f)
    header = None
    rows: list[tuple[int, list[str]]] = []
    for values in reader:
        if header is None:
            if not any(v.strip() for v in values):
                continue
            header = [v.strip() for v in values]
            continue
        if not any(v.strip() for v in values):
            continue  # blank line
        cells = (values + [""] * len(header))[:len(header)]
        rows.append((reader.line_num, cells))
    return rows, header


def read_reads(source: str | Path | IO[str]) -> pd.DataFrame:
    """ROC reads CSV -> DataFrame (see :func:`read_csv_table`)."""
    return read_csv_table(source, ROC_COLUMNS, "reads")


def read_truth(source: str | Path | IO[str]) -> pd.DataFrame:
    """FROC truth CSV (``case,lesion,weight``; weight may be left out) -> DataFrame."""
    return read_csv_table(source, ("case", "lesion"), "truth")


def read_marks(source: str | Path | IO[str]) -> pd.DataFrame:
    """FROC marks CSV -> DataFrame (see :func:`read_csv_table`)."""
    return read_csv_table(source, MARK_COLUMNS, "marks")


# ---------------------------------------------------------------------------------------- write
def _num(x: float) -> Any:
    """A rating or weight as written: whole numbers without ".0"."""
    x = float(x)
    return int(x) if x.is_integer() else x


def _csv(frame: pd.DataFrame) -> str:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def _sorted(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    order = sorted(range(len(frame)), key=lambda n: tuple(label_key(str(frame[k].iloc[n])) for k in keys))
    return frame.iloc[order].reset_index(drop=True)


def roc_csv(reads: pd.DataFrame) -> str:
    """The ROC reads CSV (``reader,treatment,case,truth,rating``), rows sorted by reader, treatment, case.

    Args:
        reads: ROC reads (``core.stats.mrmc`` layout; any row order, extra columns dropped).

    Returns:
        CSV text with a header line, "\\n" line ends.

    Raises:
        MissingColumnsError, BadRowsError: see :func:`core.stats.mrmc.check_reads` (the design
        is not checked: an incomplete pilot can still be downloaded).
    """
    c = check_reads(reads)
    frame = pd.DataFrame({"reader": c.reader, "treatment": c.treatment, "case": c.case,
                          "truth": c.truth.astype(int), "rating": [_num(x) for x in c.rating]})
    return _csv(_sorted(frame, ("reader", "treatment", "case")))


def _truth_frame(truth: pd.DataFrame) -> tuple[pd.DataFrame, tuple]:
    checked = check_truth(truth)
    normal, abnormal, table = checked
    rows = [{"case": c, "lesion": 0, "weight": None} for c in normal]
    rows += [{"case": c, "lesion": i, "weight": w} for c in abnormal for i, w in table[c]]
    frame = _sorted(pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)), ("case", "lesion"))
    return frame, checked


def froc_truth_csv(truth: pd.DataFrame) -> str:
    """The FROC truth CSV (``case,lesion,weight``), weights made explicit (equal where blank).

    Raises:
        MissingColumnsError, BadRowsError: see :func:`core.stats.mrmc.check_truth`.
    """
    frame, _ = _truth_frame(truth)
    frame["weight"] = [None if w is None or (isinstance(w, float) and math.isnan(w)) else repr(float(w))
                       for w in frame["weight"]]
    return _csv(frame)


def froc_marks_csv(marks: pd.DataFrame, truth: pd.DataFrame) -> str:
    """The FROC marks CSV (``reader,treatment,case,lesion,rating``), checked against ``truth``, rows sorted.

    Raises:
        MissingColumnsError, BadRowsError: see :func:`core.stats.mrmc.froc_data` (values only).
    """
    m = check_marks(marks, check_truth(truth))
    frame = pd.DataFrame({"reader": m.reader, "treatment": m.treatment, "case": m.case,
                          "lesion": m.lesion, "rating": [_num(x) for x in m.rating]})
    return _csv(_sorted(frame, ("reader", "treatment", "case", "lesion", "rating")))


def _excel_label(text: str, what: str) -> Any:
    if any(ch == "," or ch.isspace() for ch in text):
        raise MrmcError(f"RJafroc cannot read the {what} label {text!r}: its Excel layout separates labels by "
                        "commas and spaces; rename it without them.")
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v.is_integer() else text


def _case_id(text: str) -> int:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v.is_integer()):
        raise MrmcError(f"RJafroc needs whole-number case ids; case {text!r} is not one. Number the cases "
                        "1, 2, ... and keep the mapping beside the file.")
    return int(v)


def _workbook(truth_rows: list[list[Any]], nl_rows: list[list[Any]], ll_rows: list[list[Any]],
              readers: Sequence[str], treatments: Sequence[str], paradigm: str) -> bytes:
    from openpyxl import Workbook  # imported here: only the Excel download needs it

    wb = Workbook()
    truth_ws = wb.active
    truth_ws.title = "Truth"
    truth_ws.append(["CaseID", "LesionID", "Weight", "ReaderID", "ModalityID", "Paradigm"])
    reader_text = ", ".join(readers)
    modality_text = ", ".join(treatments)
    for n, row in enumerate(truth_rows):
        truth_ws.append([*row, reader_text, modality_text, (paradigm, "FCTRL")[n] if n < 2 else None])
    for name, header, rows in (("NL", ["ReaderID", "ModalityID", "CaseID", "FP_Rating"], nl_rows),
                               ("LL", ["ReaderID", "ModalityID", "CaseID", "LesionID", "TP_Rating"], ll_rows)):
        ws = wb.create_sheet(name)
        ws.append(header)
        for row in rows:
            ws.append(row)
    for col in ("D", "E"):  # the comma-separated label lists must stay text
        for cell in truth_ws[col]:
            cell.number_format = "@"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def rjafroc_excel_roc(reads: pd.DataFrame) -> bytes:
    """RJafroc's Excel workbook (paradigm ROC, design FCTRL) of ROC reads.

    Args:
        reads: ROC reads (``core.stats.mrmc`` layout).

    Returns:
        The .xlsx file's bytes: sheets Truth, NL (cases without disease), LL (cases with disease,
        LesionID 1), rows sorted by case, treatment, reader.

    Raises:
        MissingColumnsError, BadRowsError: see :func:`core.stats.mrmc.check_reads`.
        MrmcError: a case id that is not a whole number, a label with a comma or space.
    """
    c = check_reads(reads)
    readers = sorted(set(c.reader), key=label_key)
    treatments = sorted(set(c.treatment), key=label_key)
    for r in readers:
        _excel_label(r, "reader")
    for t in treatments:
        _excel_label(t, "treatment")
    cases = sorted(c.case_truth, key=label_key)
    truth_rows = [[_case_id(k), c.case_truth[k][0], 0] for k in cases]
    order = sorted(range(len(c.case)), key=lambda n: (label_key(c.case[n]), label_key(c.treatment[n]),
                                                      label_key(c.reader[n])))
    nl_rows, ll_rows = [], []
    for n in order:
        base = [_excel_label(c.reader[n], "reader"), _excel_label(c.treatment[n], "treatment"), _case_id(c.case[n])]
        if c.truth[n] == 1:
            ll_rows.append([*base, 1, _num(c.rating[n])])
        else:
            nl_rows.append([*base, _num(c.rating[n])])
    return _workbook(truth_rows, nl_rows, ll_rows, readers, treatments, "ROC")


def rjafroc_excel_froc(truth: pd.DataFrame, marks: pd.DataFrame, *, readers: Sequence[Any] | None = None,
                       treatments: Sequence[Any] | None = None) -> bytes:
    """RJafroc's Excel workbook (paradigm FROC, design FCTRL) of FROC truth and marks.

    Args:
        truth, marks: ``core.stats.mrmc`` layouts. readers, treatments: the study's labels when
            a reader may have marked nothing in a treatment (default: those in ``marks``).

    Returns:
        The .xlsx file's bytes: Truth (one row per case without lesions, LesionID 0, Weight 0; one
        row per lesion with its weight), NL (marks that hit no lesion), LL (lesion localisations;
        two marks on one lesion: the higher rating, the other is dropped, as RJafroc allows one).

    Raises:
        MissingColumnsError, BadRowsError: see :func:`core.stats.mrmc.froc_data` (values only).
        MrmcError: a case id that is not a whole number, a label with a comma or space.
    """
    checked_truth = check_truth(truth)
    normal, abnormal, table = checked_truth
    m = check_marks(marks, checked_truth, readers=readers, treatments=treatments)
    all_readers = list(m.readers or sorted(set(m.reader), key=label_key))
    all_treatments = list(m.treatments or sorted(set(m.treatment), key=label_key))
    for r in all_readers:
        _excel_label(r, "reader")
    for t in all_treatments:
        _excel_label(t, "treatment")
    truth_rows = [[_case_id(k), 0, 0] for k in normal]
    truth_rows += [[_case_id(k), i, w] for k in abnormal for i, w in table[k]]
    truth_rows.sort(key=lambda row: (row[0], row[1]))
    best: dict[tuple[str, str, str, int], float] = {}
    nl_rows = []
    for n in range(len(m.case)):
        key = (m.reader[n], m.treatment[n], m.case[n], int(m.lesion[n]))
        if key[3] == 0:
            nl_rows.append((key, float(m.rating[n])))
        elif key not in best or m.rating[n] > best[key]:
            best[key] = float(m.rating[n])

    def row(key: tuple[str, str, str, int], rating: float, with_lesion: bool) -> list[Any]:
        out = [_excel_label(key[0], "reader"), _excel_label(key[1], "treatment"), _case_id(key[2])]
        return [*out, key[3], _num(rating)] if with_lesion else [*out, _num(rating)]

    def sort_key(item: tuple[tuple[str, str, str, int], float]) -> tuple:
        (r, t, c, les), rating = item
        return (label_key(c), label_key(t), label_key(r), les, rating)

    nl = [row(k, v, False) for k, v in sorted(nl_rows, key=sort_key)]
    ll = [row(k, v, True) for k, v in sorted(best.items(), key=sort_key)]
    return _workbook(truth_rows, nl, ll, all_readers, all_treatments, "FROC")


def read_rjafroc_excel(data: bytes) -> dict[str, pd.DataFrame]:
    """The three sheets of an RJafroc workbook as DataFrames (for checks and round trips).

    Returns:
        {"Truth": ..., "NL": ..., "LL": ...} with the sheets' header rows as columns.

    Raises:
        MrmcError: not an .xlsx workbook with sheets Truth, NL (or FP) and LL (or TP).
    """
    from openpyxl import load_workbook

    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises several types for a file that is not a workbook
        raise MrmcError(f"Not an Excel .xlsx workbook: {e}") from e
    names = {ws.title.upper(): ws for ws in wb.worksheets}
    out = {}
    for want, alias in (("TRUTH", "TRUTH"), ("NL", "FP"), ("LL", "TP")):
        ws = names.get(want) or names.get(alias)
        if ws is None:
            raise MrmcError(f"The workbook has no sheet {want.title()}; RJafroc needs Truth, NL and LL.")
        values = list(ws.values)
        header = [str(v) for v in values[0]] if values else []
        out[{"TRUTH": "Truth"}.get(want, want)] = pd.DataFrame(values[1:], columns=header)
    wb.close()
    return out


__all__ = [
    "CsvReadError", "read_csv_table", "read_reads", "read_truth", "read_marks", "roc_csv", "froc_truth_csv",
    "froc_marks_csv", "rjafroc_excel_roc", "rjafroc_excel_froc", "read_rjafroc_excel",
]
