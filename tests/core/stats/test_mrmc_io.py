"""Tests of core.stats.mrmc_io: CSV reading with line numbers, CSV and RJafroc Excel writers (round trips)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from core.stats import mrmc, mrmc_io
from tests.core.stats.mrmc_data import MRMC_DIR, simulated_froc, vandyke, zanca


class TestReadCsv:
    def test_index_is_the_line_number(self):
        text = "reader,treatment,case,truth,rating\n1,a,1,0,3\n\n1,a,2,1,4\n"
        df = mrmc_io.read_reads(io.StringIO(text))
        assert df.index.tolist() == [2, 4]  # the blank line 3 is skipped, numbering kept
        assert df.loc[4, "rating"] == "4"

    def test_bad_rating_points_at_the_file_line(self):
        text = "reader,treatment,case,truth,rating\n" + "\n".join(
            f"{r},{t},{c},{int(c > 2)},{'x' if (r, t, c) == (2, 'b', 3) else 3}"
            for t in "ab" for r in (1, 2) for c in (1, 2, 3, 4)) + "\n"
        with pytest.raises(mrmc.BadRowsError) as info:
            mrmc.analyse_roc(mrmc_io.read_reads(io.StringIO(text)))
        line = text.splitlines().index("2,b,3,1,x") + 1
        assert info.value.problems == [f"row {line}: rating 'x' is not a number"]

    def test_missing_column_and_empty_file(self, tmp_path):
        with pytest.raises(mrmc.MissingColumnsError, match="no column\\(s\\) truth"):
            mrmc_io.read_reads(io.StringIO("reader,treatment,case,rating\n1,a,1,3\n"))
        empty = tmp_path / "empty.csv"
        empty.write_text("")
        with pytest.raises(mrmc_io.CsvReadError, match="empty"):
            mrmc_io.read_reads(empty)
        with pytest.raises(mrmc_io.CsvReadError, match="Cannot read"):
            mrmc_io.read_reads(tmp_path / "absent.csv")
        binary = tmp_path / "bin.csv"
        binary.write_bytes(b"\xff\xfe\x00bad")
        with pytest.raises(mrmc_io.CsvReadError):
            mrmc_io.read_reads(binary)

    def test_shared_files(self):
        assert len(vandyke()) == 1140 and vandyke().index[0] == 2
        truth, marks = zanca()
        assert len(truth) == 242 and len(marks) == 3273


class TestCsvWriters:
    def test_roc_round_trip(self):
        reads = vandyke().sample(frac=1, random_state=1)
        text = mrmc_io.roc_csv(reads)
        assert text.splitlines()[0] == ",".join(mrmc.ROC_COLUMNS)
        assert text == (MRMC_DIR / "vandyke_roc.csv").read_text()  # same rows, same order as the shared file
        again = mrmc.analyse_roc(mrmc_io.read_reads(io.StringIO(text)))
        np.testing.assert_array_equal(again.foms, mrmc.analyse_roc(vandyke()).foms)

    def test_froc_round_trip(self):
        truth, marks = simulated_froc(3, 5, 6, seed=2)
        truth_text = mrmc_io.froc_truth_csv(truth)
        marks_text = mrmc_io.froc_marks_csv(marks, truth)
        assert marks_text.splitlines()[0] == ",".join(mrmc.MARK_COLUMNS)
        written = pd.read_csv(io.StringIO(truth_text))
        sums = written[written["lesion"] > 0].groupby("case")["weight"].sum()
        np.testing.assert_allclose(sums, 1.0)  # blank weights made explicit and equal
        again = mrmc.analyse_froc(mrmc_io.read_truth(io.StringIO(truth_text)),
                                  mrmc_io.read_marks(io.StringIO(marks_text)))
        np.testing.assert_allclose(again.foms, mrmc.analyse_froc(truth, marks).foms, atol=1e-15)

    def test_writers_check_values(self):
        truth, marks = simulated_froc(2, 3, 3, seed=1)
        marks.loc[0, "case"] = 999
        with pytest.raises(mrmc.BadRowsError, match="case 999 is not in the truth table"):
            mrmc_io.froc_marks_csv(marks, truth)


def frames_from_excel(sheets: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RJafroc's sheets back to this project's FROC truth and marks layouts."""
    t = sheets["Truth"]
    truth = pd.DataFrame({"case": t["CaseID"], "lesion": t["LesionID"],
                          "weight": [None if les == 0 else w for les, w in zip(t["LesionID"], t["Weight"], strict=True)]})
    nl, ll = sheets["NL"], sheets["LL"]
    marks = pd.concat([
        pd.DataFrame({"reader": nl["ReaderID"], "treatment": nl["ModalityID"], "case": nl["CaseID"], "lesion": 0,
                      "rating": nl["FP_Rating"]}),
        pd.DataFrame({"reader": ll["ReaderID"], "treatment": ll["ModalityID"], "case": ll["CaseID"],
                      "lesion": ll["LesionID"], "rating": ll["TP_Rating"]})], ignore_index=True)
    return truth, marks


class TestRJafrocExcel:
    def test_froc_layout_and_round_trip(self):
        truth, marks = zanca()
        sheets = mrmc_io.read_rjafroc_excel(mrmc_io.rjafroc_excel_froc(truth, marks))
        assert list(sheets) == ["Truth", "NL", "LL"]
        assert list(sheets["Truth"].columns) == ["CaseID", "LesionID", "Weight", "ReaderID", "ModalityID", "Paradigm"]
        assert list(sheets["NL"].columns) == ["ReaderID", "ModalityID", "CaseID", "FP_Rating"]
        assert list(sheets["LL"].columns) == ["ReaderID", "ModalityID", "CaseID", "LesionID", "TP_Rating"]
        t = sheets["Truth"]
        assert t["Paradigm"].tolist()[:2] == ["FROC", "FCTRL"] and t["Paradigm"].iloc[2:].isna().all()
        assert set(t["ReaderID"]) == {"1, 3, 4, 5"} and set(t["ModalityID"]) == {"1, 2, 3, 4, 5"}
        assert (t.loc[t["LesionID"] == 0, "Weight"] == 0).all()
        again = mrmc.analyse_froc(*frames_from_excel(sheets))
        np.testing.assert_allclose(again.foms, mrmc.analyse_froc(truth, marks).foms, atol=1e-12)

    def test_two_marks_on_one_lesion_keep_the_higher(self):
        truth, marks = simulated_froc(2, 3, 3, seed=4)
        hit = marks[marks["lesion"] > 0].iloc[0]
        marks = pd.concat([marks, hit.to_frame().T.assign(rating=hit["rating"] - 1)], ignore_index=True)
        sheets = mrmc_io.read_rjafroc_excel(mrmc_io.rjafroc_excel_froc(truth, marks))
        ll = sheets["LL"]
        assert not ll.duplicated(["ReaderID", "ModalityID", "CaseID", "LesionID"]).any()
        again = mrmc.analyse_froc(*frames_from_excel(sheets))
        np.testing.assert_allclose(again.foms, mrmc.analyse_froc(truth, marks).foms, atol=1e-12)

    def test_roc_layout(self):
        sheets = mrmc_io.read_rjafroc_excel(mrmc_io.rjafroc_excel_roc(vandyke()))
        t, nl, ll = sheets["Truth"], sheets["NL"], sheets["LL"]
        assert t["Paradigm"].tolist()[:2] == ["ROC", "FCTRL"]
        assert (len(t), len(nl), len(ll)) == (114, 2 * 5 * 69, 2 * 5 * 45)
        assert set(ll["LesionID"]) == {1} and set(t.loc[t["LesionID"] == 1, "CaseID"]) == set(ll["CaseID"])
        reads = pd.concat([
            pd.DataFrame({"reader": nl["ReaderID"], "treatment": nl["ModalityID"], "case": nl["CaseID"], "truth": 0,
                          "rating": nl["FP_Rating"]}),
            pd.DataFrame({"reader": ll["ReaderID"], "treatment": ll["ModalityID"], "case": ll["CaseID"], "truth": 1,
                          "rating": ll["TP_Rating"]})])
        np.testing.assert_array_equal(mrmc.analyse_roc(reads).foms, mrmc.analyse_roc(vandyke()).foms)

    def test_labels_rjafroc_cannot_read(self):
        reads = vandyke().copy()
        reads.loc[reads["treatment"] == "2", "treatment"] = "with AI"
        with pytest.raises(mrmc.MrmcError, match="commas and spaces"):
            mrmc_io.rjafroc_excel_roc(reads)
        reads = vandyke().copy()
        reads["case"] = "c" + reads["case"]
        with pytest.raises(mrmc.MrmcError, match="whole-number case ids"):
            mrmc_io.rjafroc_excel_roc(reads)

    def test_not_a_workbook(self):
        with pytest.raises(mrmc.MrmcError, match="Not an Excel"):
            mrmc_io.read_rjafroc_excel(b"not a zip")
