"""Tests of the lungreview-mrmc command line (main() called in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.stats import mrmc, mrmc_cli
from tests.core.stats.mrmc_data import MRMC_DIR, assert_published

VANDYKE = str(MRMC_DIR / "vandyke_roc.csv")
TRUTH = str(MRMC_DIR / "zanca_froc_truth.csv")
MARKS = str(MRMC_DIR / "zanca_froc_marks.csv")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = mrmc_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class TestJson:
    def test_roc_one_object_with_the_published_figures(self, capsys):
        code, out, err = run(capsys, VANDYKE, "--json")
        assert code == 0 and err == ""
        obj = json.loads(out)  # exactly one JSON object: json.loads rejects trailing data
        assert isinstance(obj, dict)
        assert_published(obj["f"], "4.456319")
        assert obj["ndf"] == 1
        assert_published(obj["ddf"], "15.25967")
        assert_published(obj["p"], "0.05166569")
        assert set(obj["foms"]) == {"1", "2"} and set(obj["foms"]["1"]) == {"1", "2", "3", "4", "5"}
        assert_published(obj["foms"]["2"]["4"], "0.9993559")
        (d,) = obj["differences"]
        assert d["treatments"] == ["1", "2"]
        assert_published(d["estimate"], "-0.04380032")
        assert_published(d["ci95"][0], "-0.0879594986")
        assert_published(d["ci95"][1], "0.0003588544")
        assert d["p"] == pytest.approx(obj["p"], rel=1e-12)
        assert obj["fom"] == mrmc.ROC_AUC and obj["n_cases"] == 114
        assert_published(obj["variance_components"]["cov2"], "0.0003440748")
        assert obj["fixed_readers"]["df"] == 1 and 0 < obj["fixed_readers"]["p"] < obj["p"]
        assert obj["sentence"].startswith("With 5 readers and 114 cases")

    def test_froc_wafroc_and_roc_reduction(self, capsys):
        code, out, _ = run(capsys, "--truth", TRUTH, MARKS, "--json")
        obj = json.loads(out)
        assert code == 0 and obj["fom"] == mrmc.WAFROC and obj["ndf"] == 4
        assert_published(obj["foms"]["4"]["5"], "0.8294083")
        assert len(obj["differences"]) == 10
        code, out, _ = run(capsys, "--truth", TRUTH, MARKS, "--json", "--fom", "roc")
        obj = json.loads(out)
        assert code == 0 and obj["fom"] == mrmc.ROC_AUC
        assert_published(obj["variance_components"]["ms_tr"], "0.000462")

    def test_order_and_sample_size(self, capsys):
        code, out, _ = run(capsys, VANDYKE, "--json", "--order", "2,1", "--sample-size")
        obj = json.loads(out)
        assert code == 0
        assert obj["differences"][0]["treatments"] == ["2", "1"]
        assert_published(obj["differences"][0]["estimate"], "0.04380032")
        size = obj["sample_size"]
        assert size["cases_needed"]["6"] == 251 and size["readers"] == list(range(3, 16))
        assert len(size["power"]) == 13 and len(size["power"][0]) == 10


class TestPlain:
    def test_table_and_sentence(self, capsys):
        code, out, err = run(capsys, VANDYKE)
        assert code == 0 and err == ""
        assert "F = 4.4563, ndf = 1, ddf = 15.26, p = 0.0517" in out
        assert "1 minus 2: -0.0438, 95 % CI -0.0880 to 0.0004, p = 0.0517" in out
        assert "0.9196" in out and "reader 5" in out
        assert out.rstrip().splitlines()[-1].startswith("With 5 readers and 114 cases the study cannot tell")

    def test_sample_size_lines(self, capsys):
        code, out, _ = run(capsys, VANDYKE, "--sample-size", "--effect", "0.05")
        assert code == 0 and "effect 0.0500" in out and "Smallest design (fewest reads):" in out


class TestBadInput:
    def test_bad_rows_exit_2_one_line_each_nothing_on_stdout(self, capsys, tmp_path):
        lines = Path(VANDYKE).read_text().splitlines()
        lines[4] = lines[4].rsplit(",", 1)[0] + ",four"          # line 5
        lines[9] = "1,1,9,2,3"                                    # line 10 (case 9): truth 2
        bad = tmp_path / "reads.csv"
        bad.write_text("\n".join(lines) + "\n")
        code, out, err = run(capsys, str(bad), "--json")
        assert code == mrmc_cli.EXIT_BAD_INPUT == 2 and out == ""
        assert err.splitlines() == [f"{bad}: row 5: rating 'four' is not a number",
                                    f"{bad}: row 10: truth '2' must be 0 (no disease) or 1 (disease)"]

    def test_unknown_case_and_lesion_in_marks(self, capsys, tmp_path):
        marks = tmp_path / "marks.csv"
        text = Path(MARKS).read_text().rstrip("\n") + "\n1,1,999,0,3\n1,1,101,3,4\n"
        marks.write_text(text)
        n = len(text.splitlines())
        code, out, err = run(capsys, "--truth", TRUTH, str(marks))
        assert code == 2 and out == ""
        assert err.splitlines() == [f"{marks}: row {n - 1}: case 999 is not in the truth table",
                                    f"{marks}: row {n}: case 101 has no lesion 3 in the truth table (its lesions: 1)"]

    def test_bad_truth_names_the_truth_file(self, capsys, tmp_path):
        truth = tmp_path / "truth.csv"
        truth.write_text("case,lesion,weight\n1,0,\n2,x,\n")
        code, out, err = run(capsys, "--truth", str(truth), MARKS)
        assert code == 2 and out == "" and err.startswith(f"{truth}: row 3: lesion 'x'")

    def test_design_errors_exit_2(self, capsys, tmp_path):
        lines = Path(VANDYKE).read_text().splitlines()
        partial = tmp_path / "partial.csv"
        partial.write_text("\n".join(lines[:-1]) + "\n")  # the last read is missing
        code, out, err = run(capsys, str(partial))
        assert code == 2 and out == "" and "reader 5, treatment 2, case 114" in err
        one = tmp_path / "one.csv"
        one.write_text("\n".join([lines[0], *(x for x in lines[1:] if x.startswith("1,"))]) + "\n")
        code, out, err = run(capsys, str(one))
        assert code == 2 and out == "" and "Only 1 reader" in err

    def test_missing_file_and_column(self, capsys, tmp_path):
        code, out, err = run(capsys, str(tmp_path / "absent.csv"))
        assert code == 2 and out == "" and "Cannot read the reads file" in err
        cols = tmp_path / "cols.csv"
        cols.write_text("reader,case,rating\n1,1,3\n")
        code, out, err = run(capsys, str(cols))
        assert code == 2 and "treatment, truth" in err

    def test_usage_error(self, capsys):
        with pytest.raises(SystemExit) as info:
            mrmc_cli.main([])
        assert info.value.code == 2
