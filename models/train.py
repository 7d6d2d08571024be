"""Train a classifier on the IQ-OTH/NCCD split manifest and write a complete registry entry.

    python -m models.train --arch {basic_cnn,advanced_cnn,resnet50} [--data DIR] [--split MANIFEST]
        [--out REGISTRY_ENTRY_OR_ID] [--epochs N] [--weights none|imagenet|PATH] [--seed N]
        [--task 3class|binary] [--batch-size N] [--lr X] [--limit N] [--size PX]
        [--patience N] [--max-minutes M] [--hp KEY=VALUE ...] [--tuning BEST_CONFIG_JSON]

Pipeline (all slices go through the shared preprocessing):

1. read the split manifest (default ``<registry>/splits/iqothnccd_seed42.csv``, created with
   :func:`models.data.build_split` when missing); ``--limit N`` keeps at most N slices per split
   (stratified by label), for tests;
2. :func:`models.data.load_hu` + :func:`core.preprocessing.preprocess` once per slice, cached
   in memory as float32 (n, size, size, channels);
3. ``tf.data`` pipeline; training batches only pass through :func:`models.architectures.augmentation`;
4. Adam, categorical cross-entropy, class weights ``n / (k * n_c)`` (the "balanced" heuristic
   of scikit-learn; benign is ~11 % of slices), dropout + L2 in the model, EarlyStopping on
   ``val_loss`` with ``restore_best_weights``, ModelCheckpoint of the best epoch,
   ReduceLROnPlateau, an optional wall-clock budget, one progress line per epoch;
5. the malignant decision threshold is chosen on the VALIDATION split only: the largest
   threshold whose validation malignant sensitivity is >= 0.95 (never on test);
6. the entry (model.keras, card.json, history.json, split.csv) is written with
   :func:`core.registry.write_entry`; ResNet-50 is stored with float16 kernels, and the
   largest probability difference to the float32 model on the validation slices is recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.domain import CLASS_NAMES, suspicious_index
from core.preprocessing import PreprocessSpec, preprocess
from core.registry import git_commit
from core.settings import REPO_ROOT, get_settings
from models.data import (
    DatasetError,
    build_split,
    default_manifest_path,
    file_sha256,
    load_hu,
    read_manifest,
    write_manifest,
)

#: Default input spec per architecture: small grey inputs for the CNNs (CPU budget), the
#: ImageNet-style 224 x 224 x 3 caffe-scaled input for ResNet-50 (the inference benchmark size).
DEFAULT_SPECS: dict[str, dict[str, Any]] = {
    "basic_cnn": {"size": 128, "channels": 1, "scaling": "unit"},
    "advanced_cnn": {"size": 160, "channels": 1, "scaling": "unit"},
    "resnet50": {"size": 224, "channels": 3, "scaling": "resnet50"},
    # single-phase training; the two-phase schedule with calibration is python -m models.transfer
    "mobilenetv2": {"size": 160, "channels": 3, "scaling": "mobilenet_v2"},
}
BINARY_CLASS_NAMES = ("non-malignant", "malignant")
TARGET_SENSITIVITY = 0.95
INTENDED_USE = (
    "Research and teaching only: ranks CT slices (IQ-OTH/NCCD-like 8-bit axial chest CT exports) as "
    "normal, benign or malignant to support a qualified radiologist reviewing them in LungReview. "
    "Not a medical device; must not be used for diagnosis or treatment decisions."
)
LIMITATIONS = [
    "Trained on IQ-OTH/NCCD only: a single centre (two Baghdad hospitals, Siemens SOMATOM, 2019); "
    "performance on other scanners, protocols or populations is unknown.",
    "Trained on 8-bit JPG exports whose HU are estimated from an assumed export window, not on DICOM HU.",
    "Patients are pseudo-patient groups inferred from file numbers and image similarity, not true "
    "patient ids: some leakage between splits or splitting of one patient may remain.",
    "This copy holds 903 of the 1097 released slices; the withheld part is reserved for independent "
    "evaluation and was not seen here, so the validation numbers in this card are optimistic.",
    "Slice-level labels: a slice labelled malignant may not show the tumour; benign is rare (~11 %).",
    "Not a diagnostic device: every output is a suggestion for a qualified radiologist to check.",
]


class TrainingError(RuntimeError):
    """Training cannot start or finish; the message says what to do."""


@dataclass
class TrainResult:
    """What :func:`train` produced: the written card, the in-memory model and its entry folder."""

    card: Any
    model: Any
    entry: Path
    x_val: np.ndarray
    y_val: np.ndarray
    val_probabilities: np.ndarray


def portable_path(path: str | Path) -> str:
    """A path as a registry card stores it: relative to the repository, never absolute.

    ``path`` inside the repository gives ``models/registry/...``; outside it, the relative path
    from the repository root (``../shared/datasets/iq-othnccd``). A relative ``path`` is taken
    relative to the working directory first. Where no relative path exists (another drive on
    Windows) only the final name is kept.

    Returns:
        a POSIX-style relative path.
    """
    p = Path(path).resolve()
    try:
        return Path(os.path.relpath(p, REPO_ROOT.resolve())).as_posix()
    except ValueError:
        return p.name


def limit_manifest(df: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most ``limit`` slices per split, sampled per label so every class stays present.

    Args:
        df: split manifest.
        limit: slices per split (>= 3).
        seed: sampling seed.

    Returns:
        the selected rows (a copy), original order.
    """
    keep = []
    for _, part in df.groupby("split"):
        labels = sorted(part["label"].unique())
        per = max(1, limit // len(labels))
        for lab in labels:
            rows = part[part["label"] == lab]
            keep.append(rows.sample(n=min(per, len(rows)), random_state=seed))
    return df.loc[sorted(pd.concat(keep).index)].copy()


def preprocess_paths(root: Path, paths: Sequence[str], spec: PreprocessSpec) -> np.ndarray:
    """Load and preprocess slices: float32 (n, size, size, channels) (see core.preprocessing)."""
    out = np.empty((len(paths), *spec.input_shape), dtype=np.float32)
    for i, hu in enumerate(load_hu(root, paths)):
        out[i] = preprocess(hu, spec)[0]
    return out


def choose_threshold(p_pos: np.ndarray, y_pos: np.ndarray, target: float = TARGET_SENSITIVITY) -> float:
    """Largest threshold t with sensitivity P(p >= t | positive) >= ``target`` on the given (validation) data.

    Args:
        p_pos: float (n,) predicted probability of the positive (malignant) class.
        y_pos: bool (n,) true positive labels.
        target: required sensitivity in (0, 1].

    Returns:
        the threshold in [0, 1]: the ``floor((1 - target) * n_pos)``-th smallest positive score
        (so at most that many positives fall below it); 0.5 when there are no positives.
    """
    scores = np.sort(np.asarray(p_pos, dtype=np.float64)[np.asarray(y_pos, dtype=bool)])
    if scores.size == 0:
        return 0.5
    misses = int(np.floor((1.0 - target) * scores.size + 1e-9))
    return float(np.clip(scores[misses], 0.0, 1.0))


def validation_metrics(
    y: np.ndarray, proba: np.ndarray, class_names: Sequence[str], thresholds: dict[str, float]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class sensitivity (argmax and with the thresholds) on validation.

    Args:
        y: int (n,) true class indices.
        proba: float (n, k) probabilities.
        class_names: k names.
        thresholds: card thresholds for :func:`core.inference.decision.decide`.

    Returns:
        JSON-able dict (scikit-learn metrics).
    """
    from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

    from core.inference.decision import decide

    labels = list(range(len(class_names)))
    out: dict[str, Any] = {"n": int(len(y))}
    for name, pred in (
        ("argmax", proba.argmax(axis=1)),
        ("thresholded", decide(proba, class_names, thresholds)),
    ):
        rec = recall_score(y, pred, labels=labels, average=None, zero_division=0)
        out[name] = {
            "accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
            "sensitivity": {c: float(r) for c, r in zip(class_names, rec, strict=True)},
        }
    try:
        if len(class_names) == 2:
            out["roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
        else:
            out["roc_auc_macro_ovr"] = float(roc_auc_score(y, proba, multi_class="ovr", labels=labels))
    except ValueError:
        pass
    return out


def _resolve_out(out: str | None, arch: str) -> tuple[Path, str]:
    """(registry_dir, model_id) from --out: a path (its parent is the registry) or an id."""
    if out is None:
        return get_settings().registry_dir, f"{arch}_v1"
    if "/" in out or "\\" in out:
        p = Path(out)
        return p.parent.resolve(), p.name
    return get_settings().registry_dir, out


def _parse_hp(items: Sequence[str]) -> dict[str, Any]:
    hp: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise TrainingError(f"--hp expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            hp[k] = json.loads(v)
        except json.JSONDecodeError:
            hp[k] = v
    return hp


@dataclass(frozen=True)
class TrainOptions:
    """What :func:`train` does; the command line maps onto it one flag per field (:func:`parse_options`).

    Attributes:
        arch: one of :data:`models.architectures.ARCHITECTURES`.
        data: IQ-OTH/NCCD folder; None = ``get_settings().iq_othnccd_dir``.
        split: split manifest CSV; None = ``<registry>/splits/iqothnccd_seed42.csv`` (built when missing).
        out: registry entry folder (its parent is the registry) or a model id; None = ``<arch>_v1``.
        epochs: most epochs to train.
        weights: starting weights: None (random), ``"imagenet"`` or the path of a local weights file.
        seed: seed of Keras, the shuffling, the augmentation and ``limit``'s sampling.
        task: ``"3class"`` or ``"binary"`` (malignant versus the rest).
        batch_size: slices per training batch.
        lr: Adam learning rate.
        limit: at most this many slices per split (>= 3; tests); None = all.
        size: input size in pixels; None = the architecture's (:data:`DEFAULT_SPECS`).
        patience: EarlyStopping patience in epochs (ReduceLROnPlateau uses half of it, at least 1).
        max_minutes: wall-clock budget in minutes, checked after each epoch; None = no budget.
        float16: store kernels as float16 (always on for ResNet-50, to stay under 50 MiB).
        hp: architecture hyperparameters passed to :func:`models.architectures.build_model`.
        tuning: the ``best_config.json`` of ``models.tune`` these settings came from (provenance).

    Raises:
        TrainingError: an unknown architecture or task, ``limit`` < 3, or a non-positive count.
    """

    arch: str
    data: Path | None = None
    split: Path | None = None
    out: str | None = None
    epochs: int = 30
    weights: str | None = None
    seed: int = 42
    task: str = "3class"
    batch_size: int = 32
    lr: float = 1e-3
    limit: int | None = None
    size: int | None = None
    patience: int = 6
    max_minutes: float | None = None
    float16: bool = False
    hp: Mapping[str, Any] = field(default_factory=dict)
    tuning: Path | None = None

    def __post_init__(self) -> None:
        if self.arch not in DEFAULT_SPECS:
            raise TrainingError(f"unknown architecture {self.arch!r}; choose one of {tuple(DEFAULT_SPECS)}")
        if self.task not in ("3class", "binary"):
            raise TrainingError(f"unknown task {self.task!r}; choose 3class or binary")
        if self.limit is not None and self.limit < 3:
            raise TrainingError("--limit must be at least 3 (one slice of each class per split)")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise TrainingError("--epochs and --batch-size must be at least 1 and --patience at least 0")


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """:class:`TrainOptions` from the parsed command line of :func:`build_parser`.

    Raises:
        TrainingError: ``--arch`` missing, a malformed ``--hp`` item, or an option out of range.
    """
    if not args.arch:
        raise TrainingError("--arch is required (or --recalibrate MODEL_ID, or --select-default)")
    return TrainOptions(
        arch=args.arch,
        data=Path(args.data) if args.data else None,
        split=Path(args.split) if args.split else None,
        out=args.out,
        epochs=args.epochs,
        weights=None if args.weights in (None, "none") else args.weights,
        seed=args.seed,
        task=args.task,
        batch_size=args.batch_size,
        lr=args.lr,
        limit=args.limit or None,
        size=args.size or None,
        patience=args.patience,
        max_minutes=args.max_minutes,
        float16=args.float16,
        hp=_parse_hp(args.hp),
        tuning=Path(args.tuning) if args.tuning else None,
    )


def parse_options(argv: Sequence[str] | None = None) -> TrainOptions:
    """:class:`TrainOptions` from command-line arguments (``python -m models.train --help``).

    Raises:
        TrainingError: see :func:`options_from_args`.
        SystemExit: argparse's own errors (unknown flag, bad number).
    """
    return options_from_args(build_parser().parse_args(argv))


@dataclass
class _Data:
    """The preprocessed training and validation slices of one run."""

    class_names: tuple[str, ...]
    spec: PreprocessSpec
    root: Path
    manifest_path: Path
    manifest_sha256: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    preprocess_seconds: float


def _load_data(opts: TrainOptions) -> _Data:
    """Read (or build) the split manifest and preprocess the train and val slices (steps 1-2)."""
    root = opts.data or get_settings().iq_othnccd_dir
    manifest_path = opts.split or default_manifest_path(42)
    if not manifest_path.is_file():
        if opts.split:
            raise TrainingError(
                f"split manifest {manifest_path} not found; create it with python -m models.data --out"
            )
        write_manifest(build_split(root, seed=42), manifest_path)
    manifest = read_manifest(manifest_path)
    manifest_sha = file_sha256(manifest_path)
    if opts.limit:
        manifest = limit_manifest(manifest, opts.limit, opts.seed)
    if opts.task == "binary":
        class_names: tuple[str, ...] = BINARY_CLASS_NAMES
        y_all = (manifest["label"] == "malignant").astype(int).to_numpy()
    else:
        class_names = CLASS_NAMES
        y_all = manifest["label"].map({c: i for i, c in enumerate(CLASS_NAMES)}).to_numpy()
    spec_kwargs = dict(DEFAULT_SPECS[opts.arch])
    if opts.size:
        spec_kwargs["size"] = opts.size
    spec = PreprocessSpec(**spec_kwargs)
    t0 = time.perf_counter()
    splits = {}
    for name in ("train", "val"):
        mask = (manifest["split"] == name).to_numpy()
        if not mask.any():
            raise TrainingError(f"the manifest has no {name} slices; rebuild it with python -m models.data")
        splits[name] = (preprocess_paths(root, list(manifest.loc[mask, "path"]), spec), y_all[mask])
    return _Data(
        class_names=class_names,
        spec=spec,
        root=root,
        manifest_path=manifest_path,
        manifest_sha256=manifest_sha,
        x_train=splits["train"][0],
        y_train=splits["train"][1],
        x_val=splits["val"][0],
        y_val=splits["val"][1],
        preprocess_seconds=time.perf_counter() - t0,
    )


def _fit(opts: TrainOptions, data: _Data, model: Any, checkpoint: Path, t_start: float) -> dict[str, Any]:
    """Fit ``model`` in place (steps 3-4); returns the history with ``best_epoch`` and ``fit_seconds``."""
    import keras
    import tensorflow as tf

    from models.architectures import augmentation

    k = len(data.class_names)
    x_tr, y_tr = data.x_train, data.y_train
    counts = np.bincount(y_tr, minlength=k).astype(float)
    class_weight = {i: float(len(y_tr) / (k * c)) if c > 0 else 0.0 for i, c in enumerate(counts)}
    aug = augmentation(opts.seed)
    oh_tr = keras.utils.to_categorical(y_tr, k).astype("float32")
    oh_va = keras.utils.to_categorical(data.y_val, k).astype("float32")
    ds_tr = (
        tf.data.Dataset.from_tensor_slices((x_tr, oh_tr))
        .shuffle(len(x_tr), seed=opts.seed, reshuffle_each_iteration=True)
        .batch(opts.batch_size)
        .map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=1)
        .prefetch(1)
    )
    ds_va = tf.data.Dataset.from_tensor_slices((data.x_val, oh_va)).batch(opts.batch_size)

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            print(
                f"[train] epoch {epoch + 1}/{opts.epochs}  loss {logs.get('loss', float('nan')):.4f}  "
                f"acc {logs.get('accuracy', float('nan')):.3f}  val_loss {logs.get('val_loss', float('nan')):.4f}  "
                f"val_acc {logs.get('val_accuracy', float('nan')):.3f}  lr {lr:.2e}  "
                f"({time.perf_counter() - self.t:.0f} s)",
                flush=True,
            )

    class Budget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if opts.max_minutes and (time.perf_counter() - t_start) / 60 > opts.max_minutes:
                print(f"[train] time budget of {opts.max_minutes} min reached; stopping", flush=True)
                self.model.stop_training = True

    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=opts.patience, restore_best_weights=True)
    callbacks = [
        Progress(),
        early,
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, opts.patience // 2)),
        Budget(),
    ]
    t_fit = time.perf_counter()
    hist = model.fit(
        ds_tr, validation_data=ds_va, epochs=opts.epochs, class_weight=class_weight, callbacks=callbacks, verbose=0
    )
    history: dict[str, Any] = {key: [float(v) for v in vals] for key, vals in hist.history.items()}
    epochs_run = len(history.get("loss", []))
    best_epoch = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else epochs_run
    if early.best_weights is not None and early.stopped_epoch == 0 and best_epoch != epochs_run:
        # EarlyStopping restores only when it stops; a budget stop or the last epoch keeps the final
        # weights, so put the best epoch's weights back (the same weights as the checkpoint file).
        model.set_weights(early.best_weights)
    history["best_epoch"] = best_epoch
    return {
        "history": history,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "fit_seconds": time.perf_counter() - t_fit,
        "class_weight": class_weight,
    }


def train(opts: TrainOptions) -> TrainResult:
    """Train one model and write its registry entry (steps 1-6 of the module docstring).

    Args:
        opts: the run's :class:`TrainOptions` (:func:`parse_options` builds them from a command line).

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingError, models.data.DatasetError, models.architectures.ArchitectureError,
        core.registry.RegistryError: with a message saying what to fix.
    """
    import keras
    import tensorflow as tf

    from core.registry import ModelCard, save_model, write_entry
    from models.architectures import GRADCAM_LAYERS, build_model, count_params

    t_start = time.perf_counter()
    keras.utils.set_random_seed(opts.seed)
    registry_dir, model_id = _resolve_out(opts.out, opts.arch)
    data = _load_data(opts)
    class_names, spec = data.class_names, data.spec
    x_va, y_va = data.x_val, data.y_val
    print(
        f"[train] {opts.arch} -> {model_id}: {len(data.x_train)} train / {len(x_va)} val slices, input "
        f"{spec.input_shape}, preprocessed in {data.preprocess_seconds:.0f} s",
        flush=True,
    )
    hp = dict(opts.hp)
    model = build_model(opts.arch, spec, num_classes=len(class_names), weights=opts.weights, **hp)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=opts.lr),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    tmp = Path(tempfile.mkdtemp(prefix=f"train_{model_id}_", dir=_var_dir()))
    fit = _fit(opts, data, model, tmp / "best.keras", t_start)

    p_va = np.asarray(model.predict(x_va, batch_size=opts.batch_size, verbose=0), dtype=np.float32)
    pos = suspicious_index(class_names)
    # floor (not round) to 6 decimals: rounding up could push the threshold above the score it
    # was chosen at and lose that positive, dropping validation sensitivity below the target
    threshold = math.floor(choose_threshold(p_va[:, pos], y_va == pos) * 1e6) / 1e6
    thresholds = {class_names[pos]: threshold}
    val = validation_metrics(y_va, p_va, class_names, thresholds)

    model_file = tmp / "model.keras"
    storage = save_model(model, model_file, float16=opts.arch == "resnet50" or opts.float16)
    reloaded = keras.saving.load_model(model_file, safe_mode=True, compile=False)
    p_re = np.asarray(reloaded.predict(x_va, batch_size=opts.batch_size, verbose=0), dtype=np.float32)
    storage["max_abs_probability_difference_val"] = float(np.abs(p_re - p_va).max())
    storage["label_changes_val"] = int((p_re.argmax(1) != p_va.argmax(1)).sum())
    storage["checked_on"] = f"{len(x_va)} validation slices, reloaded model vs in-memory float32 model"

    start_weights = {
        None: "random initialisation (ImageNet weights not reachable offline)",
        "imagenet": "ImageNet (keras.applications download)",
    }.get(opts.weights, f"local weights file {opts.weights}")
    training = {
        "dataset": "IQ-OTH/NCCD (doi:10.17632/bhmdr45bh2), 903-slice copy, class folders",
        "data_dir": portable_path(data.root),
        "split_manifest": f"{model_id}/split.csv",
        "split_source": portable_path(data.manifest_path),
        "split_sha256": data.manifest_sha256,
        "split_grouping": "models.data.group_patients (pseudo-patients), split_by_group seed 42",
        "n_slices": {"train": int(len(data.x_train)), "val": int(len(x_va))},
        "limit": opts.limit,
        "starting_weights": start_weights,
        "epochs_max": opts.epochs,
        "epochs_run": fit["epochs_run"],
        "best_epoch": fit["best_epoch"],
        "seconds": round(time.perf_counter() - t_start, 1),
        "fit_seconds": round(fit["fit_seconds"], 1),
        "preprocess_seconds": round(data.preprocess_seconds, 1),
        "seed": opts.seed,
        "hyperparameters": {
            **build_model_defaults(opts.arch),
            **hp,
            "learning_rate": opts.lr,
            "batch_size": opts.batch_size,
            "optimizer": "Adam",
            "loss": "categorical_crossentropy",
            "class_weight": {class_names[i]: round(w, 4) for i, w in fit["class_weight"].items()},
            "early_stopping": {"monitor": "val_loss", "patience": opts.patience, "restore_best_weights": True},
            "reduce_lr_on_plateau": {"factor": 0.5, "patience": max(1, opts.patience // 2)},
            "augmentation": "RandomFlip(horizontal), RandomRotation(0.05), RandomZoom(0.1), "
            "RandomTranslation(0.05, 0.05); training batches only",
            "max_minutes": opts.max_minutes,
        },
        "parameters": count_params(model),
        "tuning": _tuning_record(opts.tuning),
        "threshold_rule": f"malignant: largest threshold with validation sensitivity >= {TARGET_SENSITIVITY}",
        "validation": val,
        "weights_storage": storage,
        "git_commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
    }
    card = ModelCard(
        id=model_id,
        architecture=opts.arch,
        task=opts.task,
        class_names=tuple(class_names),
        preprocessing=spec,
        gradcam_layer=GRADCAM_LAYERS[opts.arch],
        thresholds=thresholds,
        training=training,
        intended_use=INTENDED_USE,
        limitations=list(LIMITATIONS),
    )
    card = write_entry(
        card, model_file, registry_dir=registry_dir, history=fit["history"], split_manifest=data.manifest_path
    )
    shutil.rmtree(tmp, ignore_errors=True)  # checkpoint and staging copy; the entry holds the model
    entry = registry_dir / model_id
    print(
        f"[train] wrote {entry}: {fit['epochs_run']} epochs (best {fit['best_epoch']}) in "
        f"{fit['fit_seconds']:.0f} s, val macro-F1 {val['argmax']['macro_f1']:.3f} (argmax) / "
        f"{val['thresholded']['macro_f1']:.3f} (malignant threshold {threshold:.3f}), "
        f"{card.size_bytes / 2**20:.1f} MiB, reload max |dp| {storage['max_abs_probability_difference_val']:.2e}",
        flush=True,
    )
    return TrainResult(card=card, model=model, entry=entry, x_val=x_va, y_val=y_va, val_probabilities=p_va)


def recalibrate(model_id: str, registry_dir: str | Path | None = None, data: str | Path | None = None) -> Any:
    """Re-choose a registered model's malignant threshold on ITS validation split (no training).

    Applies the same rule as :func:`train` (:func:`choose_threshold`, floored to 6 decimals) to the
    model's own predictions on the ``val`` rows of the entry's ``split.csv``, and rewrites
    ``card.json`` through :func:`core.registry.update_card` (``thresholds``,
    ``training.validation``, ``training.recalibrated``). The model file and its sha256 are
    unchanged.

    Returns:
        the updated :class:`core.registry.ModelCard`.

    Raises:
        core.registry.RegistryError: unknown model or integrity failure.
        TrainingError: the entry has no split manifest or no validation rows.
    """
    from core.registry import SPLIT_FILE, ModelCard, entry_dir, load_model, update_card

    loaded = load_model(model_id, registry_dir)
    card = loaded.card
    folder = entry_dir(card.id, registry_dir)
    if not (folder / SPLIT_FILE).is_file():
        raise TrainingError(f"{folder / SPLIT_FILE} missing; retrain {card.id} to recreate its entry")
    manifest = read_manifest(folder / SPLIT_FILE)
    val = manifest[manifest["split"] == "val"]
    if val.empty:
        raise TrainingError(f"{folder / SPLIT_FILE} has no validation rows")
    root = Path(data) if data else get_settings().iq_othnccd_dir
    names = list(card.class_names)
    if card.task == "binary":
        y = (val["label"] == "malignant").astype(int).to_numpy()
    else:
        y = val["label"].map({c: i for i, c in enumerate(names)}).to_numpy()
    x = preprocess_paths(root, list(val["path"]), card.preprocessing)
    p = np.asarray(loaded.model.predict(x, batch_size=32, verbose=0), dtype=np.float32)
    pos = suspicious_index(names)
    threshold = math.floor(choose_threshold(p[:, pos], y == pos) * 1e6) / 1e6
    thresholds = {names[pos]: threshold}
    d = card.to_dict()
    d["thresholds"] = thresholds
    d["training"] = {
        **card.training,
        "validation": validation_metrics(y, p, names, thresholds),
        "recalibrated": {
            "previous_thresholds": dict(card.thresholds),
            "rule": f"malignant: largest threshold with validation sensitivity >= {TARGET_SENSITIVITY}",
            "git_commit": git_commit(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    }
    new = update_card(ModelCard.from_dict(d), registry_dir)
    print(
        f"[train] {card.id}: malignant threshold {card.thresholds.get('malignant')} -> {threshold}",
        flush=True,
    )
    return new


def select_default(registry_dir: str | Path | None = None) -> str:
    """Make the model with the best VALIDATION macro-F1 the registry default, and say so in its card.

    The score is ``training.validation.thresholded.macro_f1`` (the labels the dashboard shows:
    :func:`core.inference.decision.decide` with the card's thresholds); ties go to the smaller model file.
    Writes ``default.json`` (:func:`core.registry.set_default_model`) and
    ``training.default_selection`` in the chosen card (other cards lose that key;
    :func:`core.registry.update_card`). The test split is not used.

    Returns:
        the chosen model id.

    Raises:
        TrainingError: no registered model has validation metrics.
    """
    from core.registry import ModelCard, list_cards, set_default_model, update_card

    scored = []
    for card in list_cards(registry_dir):
        f1 = ((card.training.get("validation") or {}).get("thresholded") or {}).get("macro_f1")
        if f1 is not None and card.task == "3class":
            scored.append((float(f1), -card.size_bytes, card))
    if not scored:
        raise TrainingError("no registered 3-class model has validation metrics; train one first")
    scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
    best = scored[0][2]
    table = {c.id: round(f1, 4) for f1, _, c in scored}
    for _, _, card in scored:
        d = card.to_dict()
        d["training"] = {k: v for k, v in card.training.items() if k != "default_selection"}
        if card.id == best.id:
            d["training"]["default_selection"] = (
                "registry default: highest validation macro-F1 (card thresholds applied) among "
                f"{table}; chosen on the validation split, never on test"
            )
        update_card(ModelCard.from_dict(d), registry_dir)
    set_default_model(best.id, registry_dir)
    print(f"[train] default model: {best.id} (validation macro-F1 {table})", flush=True)
    return best.id


def _tuning_record(path: str | Path | None) -> dict[str, Any] | None:
    """Provenance of tuned settings: the best_config.json path, its sha256 and content."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise TrainingError(f"--tuning file {p} not found; run python -m models.tune first")
    return {
        "best_config": portable_path(p),
        "sha256": file_sha256(p),
        **json.loads(p.read_text(encoding="utf-8")),
    }


def build_model_defaults(arch: str) -> dict[str, Any]:
    """The architecture's default hyperparameters (for the card)."""
    from models.architectures import DEFAULT_HP

    return dict(DEFAULT_HP[arch])


def _var_dir() -> Path:
    var = get_settings().var_dir
    var.mkdir(parents=True, exist_ok=True)
    return var


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("basic_cnn", "advanced_cnn", "resnet50", "mobilenetv2"))
    ap.add_argument(
        "--select-default",
        action="store_true",
        help="set default.json to the registered model with the best validation macro-F1 (no training)",
    )
    ap.add_argument(
        "--recalibrate",
        metavar="MODEL_ID",
        default=None,
        help="re-choose the thresholds of a registered model on its validation split (no training)",
    )
    ap.add_argument("--data", default=None, help="IQ-OTH/NCCD folder (default: settings' data dir)")
    ap.add_argument(
        "--split", default=None, help="split manifest CSV (default: <registry>/splits/iqothnccd_seed42.csv)"
    )
    ap.add_argument("--out", default=None, help="registry entry folder or model id (default: <arch>_v1)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--weights", default="none", help="none | imagenet | path to a local .h5 weights file")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--task", choices=("3class", "binary"), default="3class")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--limit", type=int, default=None, help="at most N slices per split (tests)")
    ap.add_argument("--size", type=int, default=None, help="input size in pixels (default per architecture)")
    ap.add_argument("--patience", type=int, default=6, help="EarlyStopping patience in epochs")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that exceeds this")
    ap.add_argument(
        "--float16", action="store_true", help="store kernels as float16 (always on for resnet50)"
    )
    ap.add_argument(
        "--hp", nargs="*", default=[], help="architecture hyperparameters KEY=VALUE (JSON values)"
    )
    ap.add_argument("--tuning", default=None, help="best_config.json of models.tune these settings came from")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints errors as one readable line and returns 2."""
    from core.registry import RegistryError
    from models.architectures import ArchitectureError

    args = build_parser().parse_args(argv)
    try:
        if args.recalibrate:
            recalibrate(args.recalibrate, data=args.data)
        elif args.select_default:
            select_default()
        else:
            train(options_from_args(args))
    except (TrainingError, DatasetError, ArchitectureError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
