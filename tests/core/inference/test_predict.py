"""Tests for core.inference.predict: the batch CLI on DICOM, JPG, folders, ZIPs and bad inputs."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile

import numpy as np
import pydicom.data
import pytest

from core.inference.predict import columns, main, score_inputs
from tests.factories.registry import make_registry

CT_SMALL = pydicom.data.get_testdata_file("CT_small.dcm")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return make_registry(tmp_path_factory.mktemp("predict"))


@pytest.fixture(scope="module")
def predictor(registry):
    from core.inference import Predictor
    from core.registry import load_model

    return Predictor(load_model("tiny_adv", registry))


@pytest.fixture()
def cli_env(registry, isolated_settings, monkeypatch):
    from core import settings as config

    monkeypatch.setenv("LUNGREVIEW_REGISTRY_DIR", str(registry))
    config.get_settings.cache_clear()
    yield
    config.get_settings.cache_clear()


def _run(predictor, inputs, **kwargs):
    out, log = io.StringIO(), io.StringIO()
    n = score_inputs(predictor, inputs, out, log=log, progress=False, **kwargs)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    return n, rows, log.getvalue()


def _tcia_series_dir(tcia_dir):
    return next(p for p in sorted(tcia_dir.rglob("*")) if p.is_dir() and any(p.glob("*.dcm")))


class TestScoreInputs:
    def test_ct_small_gives_one_complete_row(self, predictor):
        n, rows, log = _run(predictor, [CT_SMALL])
        assert n == 1 and len(rows) == 1
        row = rows[0]
        assert list(row) == columns(predictor.class_names)
        assert row["source"] == "CT_small.dcm" and row["sop_instance_uid"].startswith("1.3.6")
        assert row["slice_index"] == "0" and row["model_id"] == "tiny_adv" and row["error"] == ""
        p = [float(row[f"p_{c}"]) for c in ("normal", "benign", "malignant")]
        assert sum(p) == pytest.approx(1.0, abs=1e-4)
        assert row["label"] in ("normal", "benign", "malignant") and row["ood"] in ("True", "False")
        assert "1 slice, series label" in log

    def test_iq_jpg_has_no_uid(self, predictor, iq_dir):
        jpg = sorted((iq_dir / "Malignant cases").glob("*.jpg"))[0]
        n, rows, _ = _run(predictor, [jpg])
        assert n == 1 and rows[0]["sop_instance_uid"] == "" and rows[0]["instance_number"] == ""
        assert rows[0]["source"] == jpg.name and rows[0]["ood"] == "False"

    def test_tcia_folder_and_zip_give_the_same_rows(self, predictor, tcia_dir, tmp_path):
        series_dir = _tcia_series_dir(tcia_dir)
        archive = tmp_path / "series.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for f in sorted(series_dir.glob("*.dcm")):
                zf.write(f, f"study/{f.name}")
        n_dir, rows_dir, _ = _run(predictor, [series_dir])
        n_zip, rows_zip, _ = _run(predictor, [archive])
        assert n_dir == n_zip == 30 and len(rows_dir) == len(rows_zip) == 30
        assert [r["slice_index"] for r in rows_dir] == [str(i) for i in range(30)]
        by_uid = {r["sop_instance_uid"]: r["p_malignant"] for r in rows_dir}
        assert {r["sop_instance_uid"]: r["p_malignant"] for r in rows_zip} == by_uid
        assert all(r["ood"] == "False" for r in rows_dir)

    def test_whole_tcia_study_gives_two_series(self, predictor, tcia_dir):
        n, rows, log = _run(predictor, [tcia_dir])
        assert n == 60 and len({r["series_key"] for r in rows}) == 2 and log.count("30 slices") == 2

    def test_corrupt_file_among_good_ones_is_reported_and_the_rest_scored(self, predictor, tmp_path):
        folder = tmp_path / "upload"
        folder.mkdir()
        shutil.copy(CT_SMALL, folder / "good.dcm")
        (folder / "broken.dcm").write_bytes(b"DICM" + bytes(200))
        n, rows, log = _run(predictor, [folder, tmp_path / "missing.dcm"])
        assert n == 1
        errors = {r["source"]: r["error"] for r in rows if r["error"]}
        assert set(errors) == {"broken.dcm", "missing.dcm"} and "does not exist" in errors["missing.dcm"]
        assert [r["source"] for r in rows if not r["error"]] == ["good.dcm"]
        assert "broken.dcm: not scored" in log

    def test_window_override_applies_to_dicom(self, predictor):
        _, default, _ = _run(predictor, [CT_SMALL])
        _, lung, _ = _run(predictor, [CT_SMALL], window="lung")
        assert default[0]["p_malignant"] != lung[0]["p_malignant"]

    def test_heatmaps_are_written_as_png(self, predictor, tmp_path):
        _, rows, _ = _run(predictor, [CT_SMALL], heatmaps=tmp_path / "maps")
        png = tmp_path / "maps" / rows[0]["heatmap"].split("/")[-1]
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


class TestMain:
    def test_exit_zero_and_csv_file(self, cli_env, tmp_path, capsys):
        out = tmp_path / "o.csv"
        assert main(["--no-progress", "--out", str(out), str(CT_SMALL)]) == 0
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 1 and rows[0]["model_id"] == "tiny_adv"
        assert "1 slice scored with tiny_adv" in capsys.readouterr().err

    def test_exit_one_when_nothing_is_scored(self, cli_env, tmp_path):
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not a picture at all")
        assert main(["--no-progress", "--out", str(tmp_path / "o.csv"), str(bad)]) == 1

    def test_exit_two_for_unknown_model(self, cli_env, capsys):
        assert main(["--model", "nope", str(CT_SMALL)]) == 2
        assert "no model 'nope'" in capsys.readouterr().err

    def test_ood_input_is_marked_in_its_row(self, cli_env, tmp_path):
        out = tmp_path / "o.csv"
        assert main(["--no-progress", "--out", str(out), pydicom.data.get_testdata_file("MR_small.dcm")]) == 0
        row = next(csv.DictReader(out.open()))
        assert row["ood"] == "True" and row["series_label"] == "out-of-distribution"
        assert np.isfinite(float(row["p_malignant"]))
