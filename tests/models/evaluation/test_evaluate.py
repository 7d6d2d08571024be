"""Tests for models.evaluation.evaluate: end to end on a tiny Keras model over 12 real IQ-OTH/NCCD slices."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.domain import CLASS_NAMES
from core.preprocessing import PreprocessSpec
from models.data import read_manifest, write_manifest
from models.evaluation.evaluate import EvaluationError, label_indices, main, predict_slices, select_slices

SIZE = 32
PER_CLASS = 4


def _number(name: str) -> int:
    return int(re.search(r"\((\d+)\)", name).group(1))


@pytest.fixture(scope="module")
def tiny_data(iq_dir: Path, tmp_path_factory) -> Path:
    """12 real slices (4 per class, spread over the numbering) in the IQ-OTH/NCCD layout."""
    root = tmp_path_factory.mktemp("data") / "iq-othnccd"
    for folder in ("Normal cases", "Bengin cases", "Malignant cases"):
        files = sorted((iq_dir / folder).glob("*.jpg"), key=lambda p: _number(p.name))
        step = len(files) // PER_CLASS
        (root / folder).mkdir(parents=True)
        for f in files[::step][:PER_CLASS]:
            shutil.copy(f, root / folder / f.name)
    return root


def _tiny_model(n_classes: int):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="last_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory, tiny_data: Path) -> Path:
    """A registry with one 3-class model ('tiny3') and its split manifest (8 test, 4 train)."""
    from core.registry import ModelCard, save_model, set_default_model, write_entry

    registry = tmp_path_factory.mktemp("registry")
    work = tmp_path_factory.mktemp("work")
    save_model(_tiny_model(3), work / "model.keras")

    rows = []
    for f in sorted(tiny_data.rglob("*.jpg")):
        label = {"Normal cases": "normal", "Bengin cases": "benign", "Malignant cases": "malignant"}[
            f.parent.name
        ]
        rows.append({"path": f.relative_to(tiny_data).as_posix(), "label": label, "number": _number(f.name)})
    df = pd.DataFrame(rows)
    df["sha256"] = "0" * 64
    df["width"], df["height"] = 512, 512
    df["group"] = [f"g{i // 2:02d}" for i in range(len(df))]  # pairs of slices per patient
    df["split"] = ["train" if i % 3 == 0 else "test" for i in range(len(df))]
    split_sha = write_manifest(df, work / "split.csv")

    card = ModelCard(
        id="tiny3",
        architecture="basic_cnn",
        task="3class",
        class_names=CLASS_NAMES,
        preprocessing=PreprocessSpec(size=SIZE, channels=1),
        gradcam_layer="last_conv",
        training={"dataset": "test fixture", "split_manifest": "split.csv", "split_sha256": split_sha},
        intended_use="tests only",
        limitations=["untrained"],
    )
    write_entry(card, work / "model.keras", registry_dir=registry, split_manifest=work / "split.csv")
    # Same model with a malignant threshold of 0: every slice must be called malignant.
    eager = replace(card, id="tiny3_eager", thresholds={"malignant": 0.0})
    write_entry(eager, work / "model.keras", registry_dir=registry, split_manifest=work / "split.csv")
    set_default_model("tiny3", registry_dir=registry)
    return registry


@pytest.fixture()
def data_settings(tiny_data: Path, monkeypatch):
    """Settings whose data directory holds the tiny dataset as 'iq-othnccd'."""
    from core import settings as config

    monkeypatch.setenv("LUNGREVIEW_DATA_DIR", str(tiny_data.parent))
    config.get_settings.cache_clear()
    yield config.get_settings()
    config.get_settings.cache_clear()


def _check_report(rep: dict, n: int, k: int = 3) -> None:
    for key in (
        "model_id",
        "model_sha256",
        "data",
        "split",
        "n",
        "accuracy",
        "macro_f1",
        "per_class",
        "sensitivity_malignant",
        "specificity_malignant",
        "roc_auc_ovr",
        "roc_auc_malignant",
        "ece",
        "brier",
        "confusion_matrix",
        "ci95",
        "ci_method",
        "roc_curves",
        "reliability",
        "decision",
        "latency_ms_per_slice",
        "model_size_bytes",
    ):
        assert key in rep, key
    assert rep["n"] == n
    cm = np.array(rep["confusion_matrix"])
    assert cm.shape == (k, k) and cm.sum() == n
    for key in ("accuracy", "macro_f1", "sensitivity_malignant", "specificity_malignant", "ece"):
        assert 0.0 <= rep[key] <= 1.0, key
    for key in ("roc_auc_ovr", "roc_auc_malignant"):
        assert rep[key] is None or 0.0 <= rep[key] <= 1.0, key
    assert 0.0 <= rep["brier"] <= 2.0
    assert sum(rep["reliability"]["count"]) == n
    assert rep["latency_ms_per_slice"] > 0
    assert rep["model_size_bytes"] > 0


class TestMain:
    def test_manifest_test_split_end_to_end(self, tiny_registry, data_settings, tmp_path, capsys):
        out = tmp_path / "eval.json"
        code = main(
            ["--model", "tiny3", "--registry", str(tiny_registry), "--n-boot", "50", "--out", str(out)]
        )
        printed = json.loads(capsys.readouterr().out)
        assert code == 0
        assert json.loads(out.read_text()) == printed
        n_test = int((read_manifest(tiny_registry / "tiny3" / "split.csv")["split"] == "test").sum())
        _check_report(printed, n_test)
        assert printed["model_id"] == "tiny3"
        assert printed["split"] == "test" and printed["data"]["kind"] == "manifest"
        assert printed["n_groups"] == 6  # 8 test slices fall in 6 of the 2-slice groups
        assert "patient groups" in printed["ci_method"]

    def test_folder_data_uses_every_slice_and_pseudo_patients(self, tiny_registry, tiny_data, capsys):
        code = main(
            [
                "--model",
                "default",
                "--registry",
                str(tiny_registry),
                "--data",
                str(tiny_data),
                "--n-boot",
                "20",
            ]
        )
        rep = json.loads(capsys.readouterr().out)
        assert code == 0
        _check_report(rep, 3 * PER_CLASS)
        assert rep["data"]["kind"] == "folder" and rep["split"] == "all"
        assert [row["support"] for row in rep["per_class"].values()] == [PER_CLASS] * 3
        assert rep["roc_auc_ovr"] is not None  # every class present

    def test_all_writes_each_evaluation_json(self, tiny_registry, data_settings, capsys):
        code = main(["--all", "--registry", str(tiny_registry), "--n-boot", "10", "--split", "all"])
        printed = json.loads(capsys.readouterr().out)
        assert code == 0
        written = json.loads((tiny_registry / "tiny3" / "evaluation.json").read_text())
        assert set(printed) == {"tiny3", "tiny3_eager"}
        assert written["model_id"] == "tiny3" and written["n"] == 3 * PER_CLASS
        assert (tiny_registry / "tiny3_eager" / "evaluation.json").is_file()

    def test_card_thresholds_decide_unless_argmax(self, tiny_registry, data_settings, capsys):
        args = ["--model", "tiny3_eager", "--registry", str(tiny_registry), "--n-boot", "0"]
        assert main(args) == 0
        eager = json.loads(capsys.readouterr().out)
        assert main([*args, "--argmax"]) == 0
        plain = json.loads(capsys.readouterr().out)
        assert eager["decision"]["thresholds"] == {"malignant": 0.0}
        assert eager["sensitivity_malignant"] == 1.0 and eager["specificity_malignant"] == 0.0
        assert [row[:2] for row in eager["confusion_matrix"]] == [[0, 0]] * 3
        assert plain["decision"]["thresholds"] == {}
        assert plain["roc_auc_ovr"] == eager["roc_auc_ovr"]  # AUC does not depend on the rule

    def test_unknown_model_exits_2_with_readable_error(self, tiny_registry, capsys):
        code = main(["--model", "no-such-model", "--registry", str(tiny_registry)])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("error:") and "Traceback" not in err


class TestLabelIndices:
    def test_three_class_and_binary_mapping(self):
        labels = ["normal", "benign", "malignant"]
        assert label_indices(labels, CLASS_NAMES).tolist() == [0, 1, 2]
        assert label_indices(labels, ("no_cancer", "cancer")).tolist() == [0, 0, 1]
        assert label_indices(labels, ("non-malignant", "malignant")).tolist() == [0, 0, 1]

    def test_unknown_label_raises(self):
        with pytest.raises(EvaluationError, match="no class"):
            label_indices(["nodule"], CLASS_NAMES)


class TestSelectSlices:
    def test_changed_manifest_is_refused(self, tiny_registry, tmp_path):
        from core.registry import get_card

        card = get_card("tiny3", registry_dir=tiny_registry)
        entry = tmp_path / "entry"
        shutil.copytree(tiny_registry / "tiny3", entry)
        with open(entry / "split.csv", "a", encoding="utf-8") as fh:
            fh.write("extra.jpg,normal,1,x,1,1,g99,test\n")
        with pytest.raises(EvaluationError, match="sha256"):
            select_slices(card, entry, None, "test")

    def test_missing_manifest_says_to_pass_data(self, tiny_registry, tmp_path):
        from core.registry import get_card

        card = get_card("tiny3", registry_dir=tiny_registry)
        with pytest.raises(EvaluationError, match="--data"):
            select_slices(card, tmp_path, None, "test")


class TestPredictSlices:
    def test_probabilities_rows_sum_to_one_in_any_batch_size(self, tiny_data):
        model = _tiny_model(3)
        paths = sorted(p.relative_to(tiny_data).as_posix() for p in tiny_data.rglob("*.jpg"))
        spec = PreprocessSpec(size=SIZE, channels=1)
        a, sec = predict_slices(model, tiny_data, paths, spec, 3, batch_size=5)
        b, _ = predict_slices(model, tiny_data, paths, spec, 3, batch_size=12)
        assert a.shape == (12, 3) and a.dtype == np.float32
        assert np.allclose(a.sum(axis=1), 1.0, atol=1e-5)
        assert np.allclose(a, b, atol=1e-5)
        assert sec > 0

    def test_single_sigmoid_output_becomes_two_columns(self, tiny_data):
        import keras

        inputs = keras.Input((SIZE, SIZE, 1))
        x = keras.layers.GlobalAveragePooling2D()(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
        paths = [p.relative_to(tiny_data).as_posix() for p in sorted(tiny_data.rglob("*.jpg"))][:3]
        proba, _ = predict_slices(model, tiny_data, paths, PreprocessSpec(size=SIZE), 2)
        assert proba.shape == (3, 2)
        assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)

    def test_wrong_class_count_is_reported(self, tiny_data):
        paths = [p.relative_to(tiny_data).as_posix() for p in sorted(tiny_data.rglob("*.jpg"))][:2]
        with pytest.raises(EvaluationError, match="classes"):
            predict_slices(_tiny_model(3), tiny_data, paths, PreprocessSpec(size=SIZE), 2)
