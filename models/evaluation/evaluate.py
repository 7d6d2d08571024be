"""Evaluate registered models on held-out slices: the numbers behind the Compare page.

For one model (or every registered model with ``--all``):

1. load it from the registry (:func:`core.registry.load_model`, which checks the sha256);
2. take the slices: by default the model's own split manifest (``<entry>/split.csv``, test split)
   over the IQ-OTH/NCCD folder in the settings' data directory; or, with ``--data DIR``, every
   slice of any class-folder dataset (catalogued with :func:`models.data.catalogue` and grouped
   into pseudo-patients with :func:`models.data.group_patients`);
3. read HU with :func:`models.data.load_hu` and preprocess with
   :func:`core.preprocessing.preprocess` and the card's spec (the function training and the
   dashboard use);
4. predict in batches, timing the batched predict calls;
5. report :func:`core.stats.metrics.evaluate_predictions` (bootstrap CIs over patient groups) plus
   latency and model size, as one JSON object.

Command line::

    python -m models.evaluation.evaluate --model ID [--data DIR] [--split test|val|all] [--out FILE]
                              [--batch-size N] [--n-boot N] [--registry DIR] [--argmax]
    python -m models.evaluation.evaluate --all      # writes models/registry/<id>/evaluation.json for each
    python -m models.evaluation.evaluate --nodules DIR   # the nodule detector's FROC (models/evaluation/froc.py)

``--all`` writes ``models/registry/<id>/evaluation.json`` through
:func:`core.registry.write_evaluation`; :func:`core.registry.read_evaluation` and the dashboard
read it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.config import REPO_ROOT, Finding, get_settings
from core.domain import suspicious_index
from core.preprocessing import PreprocessSpec, preprocess
from core.registry import SPLIT_FILE as MANIFEST_FILE
from core.registry import (
    RegistryError,
    entry_dir,
    git_commit,
    list_cards,
    load_model,
    write_evaluation,
)
from core.stats.metrics import MetricsError, evaluate_predictions
from models.data import DatasetError, catalogue, file_sha256, group_patients, load_hu, read_manifest

SPLIT_CHOICES = ("test", "val", "train", "all")


class EvaluationError(RuntimeError):
    """The evaluation cannot run; the message says what is wrong and what to do."""


def label_indices(labels: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Map dataset labels (``Finding`` values) to a model's class indices.

    A 3-class model maps each label to its own class. A binary model whose class names are not
    findings (e.g. ``("no_cancer", "cancer")``) gets malignant -> its suspicious class (malignant, else cancer, else the last;
    see :func:`core.inference.decision.suspicious_index`) and normal/benign -> the other class.

    Args:
        labels: n dataset labels ("normal", "benign", "malignant").
        class_names: the model card's class names in output order.

    Returns:
        int64 array (n,) of class indices.

    Raises:
        EvaluationError: a label has no class in this model.
    """
    names = list(class_names)
    pos = suspicious_index(names)
    out = np.empty(len(labels), dtype=np.int64)
    for i, lab in enumerate(labels):
        if lab in names:
            out[i] = names.index(lab)
        elif len(names) == 2 and lab in {f.value for f in Finding}:
            out[i] = pos if lab == Finding.MALIGNANT.value else 1 - pos
        else:
            raise EvaluationError(
                f"slice label {lab!r} has no class in this model (classes {names}); "
                "evaluate it on data with matching labels"
            )
    return out


def _relative(path: Path) -> str:
    """A path for the report that does not depend on this machine (relative to the repo)."""
    try:
        return os.path.relpath(Path(path).resolve(), REPO_ROOT)
    except ValueError:  # another drive on Windows
        return str(path)


def select_slices(
    card: Any, entry: Path, data: Path | None, split: str
) -> tuple[Path, pd.DataFrame, dict[str, Any]]:
    """The slices to evaluate on and where they came from.

    Args:
        card: the model card (uses ``training`` for a manifest path and sha256, if recorded).
        entry: the model's registry folder (``split.csv`` is looked for there first).
        data: a class-folder dataset to evaluate on in full, or None for the model's manifest.
        split: "test", "val", "train" or "all" (manifest mode only; folder mode is always all).

    Returns:
        ``(root, df, source)``: dataset folder; rows with ``path``, ``label``, ``group``; a
        JSON-able description of the data (kind, root, manifest and its sha256, split).

    Raises:
        EvaluationError: no manifest, a sha256 mismatch, or an empty selection.
        DatasetError: the dataset or manifest cannot be read (from models.data).
    """
    if split not in SPLIT_CHOICES:
        raise EvaluationError(f"split must be one of {SPLIT_CHOICES}, got {split!r}")
    if data is not None:
        root = Path(data)
        df = group_patients(catalogue(root), root)
        source = {
            "kind": "folder",
            "root": _relative(root),
            "split": "all",
            "grouping": "models.data.group_patients",
        }
        return root, df, source

    training = dict(getattr(card, "training", {}) or {})
    manifest = entry / MANIFEST_FILE
    if not manifest.is_file():
        named = training.get("split_manifest") or training.get("manifest")
        if named:
            cand = Path(named)
            for base in (entry, entry.parent, REPO_ROOT):
                if (base / cand).is_file():
                    manifest = base / cand
                    break
    if not manifest.is_file():
        raise EvaluationError(
            f"model {card.id!r} has no split manifest ({entry / MANIFEST_FILE}); "
            "pass --data with a class-folder dataset instead"
        )
    sha = file_sha256(manifest)
    recorded = (
        training.get("split_sha256")
        or training.get("split_manifest_sha256")
        or training.get("manifest_sha256")
    )
    if recorded and recorded != sha:
        raise EvaluationError(
            f"split manifest {manifest} has sha256 {sha[:12]}..., but the model card records "
            f"{str(recorded)[:12]}...; the manifest changed after training, restore it"
        )
    df = read_manifest(manifest)
    if split != "all":
        df = df[df["split"] == split]
    if df.empty:
        raise EvaluationError(f"the manifest {manifest} has no slices in split {split!r}")
    root = get_settings().iq_othnccd_dir
    source = {
        "kind": "manifest",
        "root": _relative(root),
        "manifest": _relative(manifest),
        "manifest_sha256": sha,
        "split": split,
    }
    return root, df.reset_index(drop=True), source


def predict_slices(
    model: Any,
    root: Path,
    paths: Sequence[str],
    spec: PreprocessSpec,
    n_classes: int,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, float]:
    """Preprocess and predict slices batch by batch.

    Args:
        model: a Keras model taking float32 (b, size, size, channels).
        root: dataset folder; ``paths`` are relative to it.
        paths: n slice picture paths.
        spec: the card's preprocessing spec.
        n_classes: k, the card's number of classes.
        batch_size: slices per predict call.
        progress: optional callback ``(done, total)``.

    Returns:
        ``(proba, predict_seconds)``: float32 (n, k) softmax probabilities (a single sigmoid
        output of a binary model becomes ``[1 - p, p]``), and the wall time of the batched
        predict calls only (after one untimed warm-up call that builds the graph).

    Raises:
        EvaluationError: the model's output shape does not match the card's classes.
    """
    if batch_size < 1:
        raise EvaluationError(f"batch size must be at least 1, got {batch_size}")
    n = len(paths)
    out = np.empty((n, n_classes), dtype=np.float32)
    seconds = 0.0
    warmed = False
    for start in range(0, n, batch_size):
        chunk = list(paths[start : start + batch_size])
        x = np.concatenate([preprocess(hu, spec) for hu in load_hu(root, chunk)]).astype(np.float32)
        if not warmed:
            model.predict_on_batch(x[:1])
            warmed = True
        t0 = time.perf_counter()
        y = np.asarray(model.predict_on_batch(x), dtype=np.float32)
        seconds += time.perf_counter() - t0
        if y.ndim == 2 and y.shape[1] == 1 and n_classes == 2:
            y = np.concatenate([1.0 - y, y], axis=1)
        if y.shape != (len(chunk), n_classes):
            raise EvaluationError(
                f"the model returned shape {y.shape} for {len(chunk)} slices, but its card lists "
                f"{n_classes} classes; the registry entry is inconsistent"
            )
        out[start : start + len(chunk)] = y
        if progress is not None:
            progress(min(start + len(chunk), n), n)
    return out, seconds


def evaluate_model(
    model_id: str | None = None,
    *,
    registry_dir: Path | None = None,
    data: Path | None = None,
    split: str = "test",
    batch_size: int = 32,
    n_boot: int = 1000,
    seed: int = 0,
    use_thresholds: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate one registered model; the dict written to ``evaluation.json``.

    Args:
        model_id: registry id; None = the registry's default model.
        registry_dir: registry folder; None = ``get_settings().registry_dir``.
        data: class-folder dataset evaluated in full; None = the model's split manifest.
        split: manifest split ("test" default, "val", "train", "all").
        batch_size: slices per predict call.
        n_boot: bootstrap replicates for the 95 % CIs (over pseudo-patient groups).
        seed: bootstrap seed.
        use_thresholds: apply the card's decision thresholds (False = argmax).
        progress: optional ``(done, total)`` callback.

    Returns:
        JSON-ready dict: ``model_id``, ``model_sha256``, ``architecture``, ``task``, ``data``
        (where the slices came from), ``split``, every key of
        :func:`core.stats.metrics.evaluate_predictions`, ``latency_ms_per_slice`` (batched predict
        wall time / n, ms), ``batch_size``, ``model_size_bytes``, ``evaluated_at`` (UTC ISO
        8601), ``git_commit``.

    Raises:
        core.registry.RegistryError: the model is missing or its file fails the sha256 check.
        EvaluationError, models.data.DatasetError, core.stats.metrics.MetricsError: see the message.
    """
    loaded = load_model(model_id, registry_dir=registry_dir)
    card = loaded.card
    entry = entry_dir(card.id, registry_dir=registry_dir)
    root, df, source = select_slices(card, entry, data, split)
    names = tuple(card.class_names)
    y = label_indices(list(df["label"]), names)
    proba, seconds = predict_slices(
        loaded.model, root, list(df["path"]), card.preprocessing, len(names), batch_size, progress
    )
    # the card's temperature (models.transfer), as core.inference.Predictor applies it; T=1 is the identity
    from core.inference import calibrate

    proba = calibrate(proba, float((card.training or {}).get("calibration", {}).get("temperature", 1.0)))
    thresholds = dict(card.thresholds) if use_thresholds else {}
    metrics = evaluate_predictions(
        y, proba, class_names=names, groups=list(df["group"]), n_boot=n_boot, seed=seed, thresholds=thresholds
    )
    model_file = entry / card.model_file
    size = model_file.stat().st_size if model_file.is_file() else int(card.size_bytes)
    n = len(df)
    return {
        "model_id": card.id,
        "model_sha256": card.sha256,
        "architecture": card.architecture,
        "task": card.task,
        "data": source,
        "split": source["split"],
        **metrics,
        "latency_ms_per_slice": 1000.0 * seconds / n,
        "batch_size": int(batch_size),
        "model_size_bytes": int(size),
        "evaluated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "git_commit": git_commit(),
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write a report as strict JSON (no NaN), indented, with a trailing newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def headline(report: dict[str, Any]) -> str:
    """One line of the main numbers, for logs and the final report."""
    ci = report["ci95"]

    def f(key: str) -> str:
        v = report.get(key)
        lo, hi = ci.get(key, [None, None]) if key in ci else (None, None)
        s = "n/a" if v is None else f"{v:.3f}"
        return s + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")

    return (
        f"{report['model_id']}: n={report['n']} acc={f('accuracy')} macroF1={f('macro_f1')} "
        f"sens_mal={f('sensitivity_malignant')} spec_mal={f('specificity_malignant')} "
        f"AUC_ovr={f('roc_auc_ovr')} AUC_mal={f('roc_auc_malignant')} ECE={report['ece']:.3f} "
        f"latency={report['latency_ms_per_slice']:.1f} ms/slice"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring. Exit 0 on success, 2 on a user-facing error."""
    ap = argparse.ArgumentParser(prog="python -m models.evaluation.evaluate", description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group(required=False)
    which.add_argument("--model", help="registry model id ('default' for the default model)")
    which.add_argument("--all", action="store_true", help="evaluate every model; write each evaluation.json")
    ap.add_argument("--data", type=Path, default=None, help="class-folder dataset to evaluate on in full")
    ap.add_argument("--split", choices=SPLIT_CHOICES, default="test", help="manifest split (default test)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here (not with --all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--registry", type=Path, default=None, help="registry folder (default: settings)")
    ap.add_argument("--argmax", action="store_true", help="ignore the card's decision thresholds")
    ap.add_argument(
        "--dicom",
        type=Path,
        default=None,
        help="instead of the test split: the DICOM check on annotated studies under DIR "
        "(models/evaluation/dicom_check.py); writes dicom_check.json beside evaluation.json",
    )
    ap.add_argument(
        "--nodules",
        type=Path,
        default=None,
        help="evaluate the nodule detector (FROC, CPM, per-lesion table) on the annotated CT series "
        "under DIR (models/evaluation/froc.py); writes froc.json beside its card; --model picks the detector",
    )
    args = ap.parse_args(argv)
    if args.nodules is not None:
        from models.evaluation.froc import main_for as froc_main

        return froc_main(args.nodules, None if args.model in (None, "default") else args.model, args.registry)
    if not args.model and not args.all:
        ap.error("one of the arguments --model --all is required")
    if args.dicom is not None:
        from models.evaluation.dicom_check import main_for

        return main_for(args.dicom, None if args.all or args.model == "default" else args.model, args.all, args.registry)
    if args.all and args.out:
        ap.error("--out cannot be combined with --all (each model's evaluation.json is written)")

    def progress(done: int, total: int) -> None:
        print(f"\r  {done}/{total} slices", end="" if done < total else "\n", file=sys.stderr, flush=True)

    kwargs = dict(
        registry_dir=args.registry,
        data=args.data,
        split=args.split,
        batch_size=args.batch_size,
        n_boot=args.n_boot,
        seed=args.seed,
        use_thresholds=not args.argmax,
        progress=progress,
    )
    try:
        if args.all:
            ids = [c.id for c in list_cards(args.registry)]
            if not ids:
                raise EvaluationError("the registry holds no models; train one with python -m models.train")
            reports = {}
            for mid in ids:
                print(f"evaluating {mid}", file=sys.stderr)
                rep = evaluate_model(mid, **kwargs)
                write_evaluation(mid, rep, args.registry)
                print(headline(rep), file=sys.stderr)
                reports[mid] = rep
            print(json.dumps(reports, allow_nan=False))
        else:
            mid = None if args.model == "default" else args.model
            rep = evaluate_model(mid, **kwargs)
            if args.out:
                write_json(rep, args.out)
            print(headline(rep), file=sys.stderr)
            print(json.dumps(rep, allow_nan=False))
    except (RegistryError, EvaluationError, DatasetError, MetricsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
