"""Tests for models.tune: a tiny KerasTuner search writes its trials table and best config."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("keras_tuner")

from models.tune import SEARCH_SPACE, tune  # noqa: E402


class TestTune:
    @pytest.mark.parametrize("strategy", ["grid", "random"])
    def test_tiny_search_writes_trials_and_best_config(self, tmp_path, strategy):
        out = tmp_path / strategy
        trials = tune(
            [
                "--strategy",
                strategy,
                "--trials",
                "2",
                "--epochs",
                "1",
                "--size",
                "32",
                "--limit",
                "9",
                "--out",
                str(out),
            ]
        )
        table = pd.read_csv(out / "trials.csv")
        assert len(table) >= 2 and len(trials) == len(table)
        assert {
            "learning_rate",
            "filters",
            "kernel_size",
            "dropout",
            "batch_size",
            "n_conv",
            "val_loss",
        } <= set(table)
        assert table["val_loss"].notna().all()
        for name, values in SEARCH_SPACE.items():
            assert set(table[name]) <= set(values), name
        best = json.loads((out / "best_config.json").read_text())
        assert best["best_val_loss"] == pytest.approx(table["val_loss"].min())
        assert best["hyperparameters"]["filters"] in SEARCH_SPACE["filters"]
        if strategy == "grid":  # a grid walks the space in order: the two trials differ in one value
            first, second = table.sort_values("trial_id").iloc[:2][list(SEARCH_SPACE)].to_dict("records")
            assert sum(first[k] != second[k] for k in SEARCH_SPACE) == 1
