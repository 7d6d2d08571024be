"""Tests for models.train: a tiny real training run writes a complete, loadable registry entry."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models import train as train_mod
from models.data import file_sha256
from models.train import (
    TrainingError,
    TrainOptions,
    choose_threshold,
    limit_manifest,
    main,
    parse_options,
    portable_path,
    train,
)

pytest.importorskip("keras")

MANIFEST = train_mod.REPO_ROOT / "models" / "registry" / "splits" / "iqothnccd_seed42.csv"
TUNING = train_mod.REPO_ROOT / "models" / "registry" / "tuning" / "basic_cnn_random" / "best_config.json"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import os

    from core import settings as config

    tmp = tmp_path_factory.mktemp("train")
    old = os.environ.get("LUNGREVIEW_VAR_DIR")
    os.environ["LUNGREVIEW_VAR_DIR"] = str(tmp / "var")
    config.get_settings.cache_clear()
    try:
        result = train(
            parse_options(
                [
                "--arch",
                "basic_cnn",
                "--limit",
                "12",
                "--epochs",
                "1",
                "--size",
                "32",
                "--out",
                str(tmp / "reg" / "tiny_v1"),
                "--tuning",
                str(TUNING),
                ]
            )
        )
    finally:
        if old is None:
            os.environ.pop("LUNGREVIEW_VAR_DIR", None)
        else:
            os.environ["LUNGREVIEW_VAR_DIR"] = old
        config.get_settings.cache_clear()
    return tmp / "reg", result


class TestTrain:
    def test_writes_a_complete_entry(self, tiny_run):
        reg, result = tiny_run
        folder = reg / "tiny_v1"
        assert {p.name for p in folder.iterdir()} >= {"model.keras", "card.json", "history.json", "split.csv"}
        card = json.loads((folder / "card.json").read_text())
        for key in (
            "id",
            "architecture",
            "task",
            "class_names",
            "preprocessing",
            "gradcam_layer",
            "thresholds",
            "model_file",
            "sha256",
            "training",
            "intended_use",
            "limitations",
            "size_bytes",
        ):
            assert key in card, key
        t = card["training"]
        for key in (
            "dataset",
            "split_manifest",
            "split_sha256",
            "starting_weights",
            "epochs_run",
            "seconds",
            "seed",
            "hyperparameters",
            "git_commit",
            "date",
            "validation",
        ):
            assert key in t, key
        assert t["split_sha256"] == file_sha256(MANIFEST) == file_sha256(folder / "split.csv")
        assert card["preprocessing"]["size"] == 32 and card["class_names"] == [
            "normal",
            "benign",
            "malignant",
        ]
        assert any("not a diagnostic device" in s.lower() for s in card["limitations"])
        assert len(json.loads((folder / "history.json").read_text())["loss"]) == 1
        assert t["tuning"]["sha256"] == file_sha256(TUNING) and "hyperparameters" in t["tuning"]

    def test_entry_loads_back_and_predicts_like_the_trained_model(self, tiny_run):
        from core.registry import load_model

        reg, result = tiny_run
        loaded = load_model("tiny_v1", reg)
        p = loaded.model.predict(result.x_val, verbose=0)
        np.testing.assert_allclose(p, result.val_probabilities, atol=1e-6)
        assert loaded.card.training["weights_storage"]["max_abs_probability_difference_val"] < 1e-6

    def test_threshold_is_chosen_on_validation(self, tiny_run):
        _, result = tiny_run
        card = result.card
        assert card.training["n_slices"]["val"] == len(result.x_val) == len(result.y_val)
        expected = choose_threshold(result.val_probabilities[:, 2], result.y_val == 2)
        assert card.thresholds["malignant"] == pytest.approx(expected, abs=1e-6)
        assert card.thresholds["malignant"] <= expected  # never rounded up past the chosen score
        positives = result.val_probabilities[result.y_val == 2, 2]
        assert (positives >= card.thresholds["malignant"]).mean() >= 0.95

    def test_card_paths_are_relative_to_the_repository(self, tiny_run):
        t = tiny_run[1].card.training
        assert t["split_source"] == "models/registry/splits/iqothnccd_seed42.csv"
        assert t["tuning"]["best_config"] == "models/registry/tuning/basic_cnn_random/best_config.json"
        assert not t["data_dir"].startswith("/") and (train_mod.REPO_ROOT / t["data_dir"]).is_dir()

    def test_bad_manifest_path_exits_with_a_message(self, tmp_path, capsys):
        code = main(
            ["--arch", "basic_cnn", "--split", str(tmp_path / "none.csv"), "--out", str(tmp_path / "x")]
        )
        assert code == 2 and "not found" in capsys.readouterr().err


class TestOptions:
    def test_command_line_maps_onto_typed_options(self, tmp_path):
        opts = parse_options(
            ["--arch", "resnet50", "--data", str(tmp_path), "--hp", "dropout=0.2", "head=avg", "--weights", "none"]
        )
        assert opts == TrainOptions(arch="resnet50", data=tmp_path, hp={"dropout": 0.2, "head": "avg"})
        assert parse_options(["--arch", "basic_cnn", "--weights", "imagenet"]).weights == "imagenet"

    @pytest.mark.parametrize(
        ("argv", "match"),
        [
            ([], "--arch is required"),
            (["--arch", "basic_cnn", "--limit", "2"], "at least 3"),
            (["--arch", "basic_cnn", "--hp", "filters"], "KEY=VALUE"),
        ],
    )
    def test_bad_options_are_refused_with_a_message(self, argv, match):
        with pytest.raises(TrainingError, match=match):
            parse_options(argv)

    def test_cli_prints_a_missing_arch_as_one_line(self, capsys):
        assert main([]) == 2 and "--arch is required" in capsys.readouterr().err


class TestPortablePath:
    def test_inside_and_outside_the_repository(self, tmp_path):
        root = train_mod.REPO_ROOT
        assert portable_path(root / "models" / "registry") == "models/registry"
        outside = portable_path(tmp_path / "data")
        assert not outside.startswith("/") and outside.startswith("../")
        assert (root / outside).resolve() == (tmp_path / "data").resolve()


class TestChooseThreshold:
    def test_keeps_at_least_the_target_sensitivity(self):
        rng = np.random.default_rng(0)
        p = rng.uniform(0, 1, 200)
        y = rng.uniform(0, 1, 200) < p
        t = choose_threshold(p, y, 0.95)
        assert (p[y] >= t).mean() >= 0.95
        # and it is the largest such: any higher positive score drops below the target
        higher = np.sort(p[y])[np.sort(p[y]) > t]
        if higher.size:
            assert (p[y] >= higher[0]).mean() < 0.95

    def test_without_positives_returns_half(self):
        assert choose_threshold(np.array([0.2, 0.9]), np.array([False, False])) == 0.5


class TestLimitManifest:
    def test_keeps_every_class_in_every_split(self):
        df = pd.read_csv(MANIFEST)
        small = limit_manifest(df, 9, seed=0)
        assert small.groupby("split")["label"].nunique().to_dict() == {"test": 3, "train": 3, "val": 3}
        assert small.groupby("split").size().max() <= 9


class TestRecalibrate:
    def test_rechooses_the_threshold_on_validation_and_keeps_the_model_file(self, tiny_run, tmp_path):
        import shutil

        from core.registry import get_card
        from models.train import recalibrate

        reg, _ = tiny_run
        shutil.copytree(reg / "tiny_v1", tmp_path / "tiny_v1")
        card_path = tmp_path / "tiny_v1" / "card.json"
        data = json.loads(card_path.read_text())
        data["thresholds"] = {"malignant": 0.999}
        card_path.write_text(json.dumps(data))
        new = recalibrate("tiny_v1", tmp_path)
        assert new.sha256 == data["sha256"] and get_card("tiny_v1", tmp_path) == new
        assert new.training["recalibrated"]["previous_thresholds"] == {"malignant": 0.999}
        assert new.thresholds["malignant"] < 0.999
        sens = new.training["validation"]["thresholded"]["sensitivity"]["malignant"]
        assert sens >= 0.95


class TestSelectDefault:
    def test_picks_the_best_validation_macro_f1_and_says_so_in_its_card(self, tiny_run, tmp_path):
        import shutil

        from core.registry import default_model_id, get_card
        from models.train import select_default

        reg, _ = tiny_run
        for model_id, f1 in (("a_v1", 0.4), ("b_v1", 0.7)):
            shutil.copytree(reg / "tiny_v1", tmp_path / model_id)
            path = tmp_path / model_id / "card.json"
            data = json.loads(path.read_text())
            data["id"] = model_id
            data["training"]["validation"]["thresholded"]["macro_f1"] = f1
            path.write_text(json.dumps(data))
        assert select_default(tmp_path) == "b_v1" == default_model_id(tmp_path)
        assert "highest validation macro-F1" in get_card("b_v1", tmp_path).training["default_selection"]
        assert "default_selection" not in get_card("a_v1", tmp_path).training
