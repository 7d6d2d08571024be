"""Hyperparameter search with KerasTuner (GridSearch or RandomSearch) on the VALIDATION split.

    python -m models.tune [--arch basic_cnn|advanced_cnn] [--strategy grid|random] [--trials N]
        [--epochs N] [--size PX] [--limit N] [--split MANIFEST] [--data DIR] [--seed N]
        [--out DIR]

Searched (the defaults keep the run under ~30 min on 2 CPU cores): learning rate, filters,
kernel size, dropout, batch size and number of conv blocks. Each trial trains on the training
split and is scored by the best validation loss (``objective="val_loss"``); the test split is
never read. Writes ``<out>/trials.csv`` (one row per trial: hyperparameters, score, status)
and ``<out>/best_config.json`` (best hyperparameters + score), plus KerasTuner's own folder
and TensorBoard logs (``<out>/tensorboard``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.domain import CLASS_NAMES
from core.preprocessing import PreprocessSpec
from core.settings import get_settings
from models.data import DatasetError, default_manifest_path, read_manifest
from models.train import limit_manifest, preprocess_paths

#: The search space (KerasTuner ``Choice`` values).
SEARCH_SPACE: dict[str, list[Any]] = {
    "learning_rate": [1e-3, 3e-4],
    "filters": [16, 32],
    "kernel_size": [3, 5],
    "dropout": [0.3, 0.5],
    "batch_size": [16, 32],
    "n_conv": [2, 3],
}


class TuningError(RuntimeError):
    """The search cannot run; the message says what to fix."""


def _hypermodel(arch: str, spec: PreprocessSpec, space: dict[str, list[Any]]):
    import keras
    import keras_tuner as kt

    from models.architectures import build_model

    class CTHyperModel(kt.HyperModel):
        def build(self, hp):
            model = build_model(
                arch,
                spec,
                num_classes=len(CLASS_NAMES),
                filters=hp.Choice("filters", space["filters"]),
                kernel_size=hp.Choice("kernel_size", space["kernel_size"]),
                dropout=hp.Choice("dropout", space["dropout"]),
                n_conv=hp.Choice("n_conv", space["n_conv"]),
            )
            model.compile(
                optimizer=keras.optimizers.Adam(hp.Choice("learning_rate", space["learning_rate"])),
                loss="categorical_crossentropy",
                metrics=["accuracy"],
            )
            return model

        def fit(self, hp, model, *args, **kwargs):
            return model.fit(*args, batch_size=hp.Choice("batch_size", space["batch_size"]), **kwargs)

    return CTHyperModel()


def tune(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the search described by command-line style arguments (see the module docstring).

    Returns:
        the trials table (also written to ``<out>/trials.csv``), best first.

    Raises:
        TuningError, models.data.DatasetError: with a message saying what to fix.
    """
    args = build_parser().parse_args(argv)
    import keras
    import keras_tuner as kt

    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.data) if args.data else get_settings().iq_othnccd_dir
    manifest = read_manifest(Path(args.split) if args.split else default_manifest_path(42))
    if args.limit:
        manifest = limit_manifest(manifest, args.limit, args.seed)
    spec = PreprocessSpec(size=args.size, channels=1, scaling="unit")
    index = {c: i for i, c in enumerate(CLASS_NAMES)}
    data = {}
    for name in ("train", "val"):
        part = manifest[manifest["split"] == name]
        if part.empty:
            raise TuningError(f"the manifest has no {name} slices; rebuild it with python -m models.data")
        x = preprocess_paths(root, list(part["path"]), spec)
        y = keras.utils.to_categorical(part["label"].map(index).to_numpy(), len(CLASS_NAMES)).astype(
            "float32"
        )
        data[name] = (x, y)
    y_int = data["train"][1].argmax(axis=1)
    counts = np.bincount(y_int, minlength=len(CLASS_NAMES)).astype(float)
    class_weight = {i: float(len(y_int) / (len(counts) * c)) if c else 0.0 for i, c in enumerate(counts)}

    common = {
        "hypermodel": _hypermodel(args.arch, spec, SEARCH_SPACE),
        "objective": "val_loss",
        "max_trials": args.trials,
        "seed": args.seed,
        "directory": str(out),
        "project_name": f"kt_{args.strategy}_{args.arch}",
        "overwrite": True,
    }
    tuner = kt.GridSearch(**common) if args.strategy == "grid" else kt.RandomSearch(**common)
    t0 = time.perf_counter()
    tuner.search(
        *data["train"],
        validation_data=data["val"],
        epochs=args.epochs,
        class_weight=class_weight,
        callbacks=[keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard"), histogram_freq=0)],
        verbose=0,
    )
    seconds = time.perf_counter() - t0
    rows = []
    for trial in tuner.oracle.trials.values():
        rows.append(
            {
                "trial_id": trial.trial_id,
                **trial.hyperparameters.values,
                "val_loss": trial.score,
                "status": str(trial.status),
            }
        )
    trials = pd.DataFrame(rows).sort_values("val_loss", na_position="last").reset_index(drop=True)
    trials.to_csv(out / "trials.csv", index=False)
    best = tuner.get_best_hyperparameters(1)
    best_config = {
        "architecture": args.arch,
        "strategy": args.strategy,
        "objective": "val_loss (validation split only)",
        "best_val_loss": None if trials.empty else float(trials["val_loss"].iloc[0]),
        "hyperparameters": best[0].values if best else {},
        "search_space": SEARCH_SPACE,
        "trials": len(trials),
        "epochs_per_trial": args.epochs,
        "input": spec.to_dict(),
        "limit": args.limit,
        "seconds": round(seconds, 1),
    }
    (out / "best_config.json").write_text(json.dumps(best_config, indent=2) + "\n", encoding="utf-8")
    print(f"[tune] {len(trials)} trials in {seconds:.0f} s; best {best_config['hyperparameters']}")
    print(trials.to_string(index=False))
    return trials


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m models.tune", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("basic_cnn", "advanced_cnn"), default="basic_cnn")
    ap.add_argument("--strategy", choices=("grid", "random"), default="random")
    ap.add_argument("--trials", type=int, default=8, help="max trials (grid: the first N grid points)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--size", type=int, default=96, help="input size in pixels (small for speed)")
    ap.add_argument("--limit", type=int, default=None, help="at most N slices per split")
    ap.add_argument("--split", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=str(get_settings().var_dir / "tune"))
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints errors as one readable line and returns 2."""
    try:
        tune(argv)
    except (TuningError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
