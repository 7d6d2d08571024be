"""Model builders: a basic CNN, an advanced CNN and ResNet-50, all with NAMED Grad-CAM layers.

Every builder takes the model's :class:`core.preprocessing.PreprocessSpec` (input shape
``spec.input_shape``) so the registry, the training loop and inference agree on the input.
Augmentation is NOT part of the models: :func:`augmentation` returns the Keras preprocessing
layers the training input pipeline applies to training batches only, so shipped models are
deterministic at inference.

ResNet-50 (He et al. 2016, "Deep residual learning for image recognition", CVPR) is built FLAT:
the input tensor is passed to ``keras.applications.ResNet50(input_tensor=...)`` so its layers sit
in the top-level graph and Grad-CAM (Selvaraju et al. 2017) can reach ``conv5_block3_out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
from keras import layers, regularizers

from core.preprocessing import PreprocessSpec

ARCHITECTURES = ("basic_cnn", "advanced_cnn", "resnet50", "mobilenetv2")

#: Layer whose activations Grad-CAM uses, per architecture (the last spatial feature map).
GRADCAM_LAYERS: dict[str, str] = {
    "basic_cnn": "last_conv",
    "advanced_cnn": "last_conv",
    "resnet50": "conv5_block3_out",
    "mobilenetv2": "out_relu",
}

#: Default hyperparameters per architecture (overridden by ``**hp`` of :func:`build_model`).
DEFAULT_HP: dict[str, dict[str, Any]] = {
    "basic_cnn": {
        "filters": 32,
        "kernel_size": 3,
        "n_conv": 3,
        "dropout": 0.4,
        "dense_units": 64,
        "l2": 1e-4,
        "head": "flatten",
    },
    "advanced_cnn": {"filters": 32, "kernel_size": 3, "n_conv": 3, "dropout": 0.4, "l2": 1e-4},
    "resnet50": {"dropout": 0.3, "l2": 1e-4},
    "mobilenetv2": {"dropout": 0.3, "l2": 1e-4},
}


#: Batch-norm moving-average momentum. Keras' default (0.99) needs many hundreds of steps to
#: forget its initial statistics; with ~40 training steps per epoch here the validation outputs
#: (inference mode, moving statistics) stayed degenerate for the first epochs, so 0.9 is used
#: for every BN layer, ResNet-50's included.
BN_MOMENTUM = 0.9


class ArchitectureError(ValueError):
    """An architecture name, spec or weights argument that cannot be built; see the message."""


def augmentation(seed: int = 0) -> keras.Sequential:
    """Training-only augmentation as Keras preprocessing layers (no-ops unless ``training=True``).

    Small rotations (+-5 % of a turn, i.e. +-18 degrees), horizontal flips (left-right is a
    mirror of anatomy, kept plausible for axial CT), zoom +-10 % and translation +-5 %,
    with ``fill_mode="nearest"`` so the fill matches the border whatever the input scaling.

    Args:
        seed: seed of the random layers (reproducible training).

    Returns:
        ``keras.Sequential`` mapping float32 (b, h, w, c) to the same shape.
    """
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.05, fill_mode="nearest", seed=seed + 1),
            layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 2),
            layers.RandomTranslation(0.05, 0.05, fill_mode="nearest", seed=seed + 3),
        ],
        name="augmentation",
    )


def _head(x, num_classes: int, dropout: float, l2: float):
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=regularizers.l2(l2), name="predictions"
    )(x)


def _basic_cnn(spec: PreprocessSpec, num_classes: int, hp: dict[str, Any]) -> keras.Model:
    inputs = keras.Input(shape=spec.input_shape, name="image")
    x = inputs
    n = int(hp["n_conv"])
    for i in range(1, n + 1):
        f = int(hp["filters"]) * 2 ** (i - 1)
        x = layers.Conv2D(
            f,
            int(hp["kernel_size"]),
            padding="same",
            kernel_regularizer=regularizers.l2(hp["l2"]),
            name=f"block{i}_conv",
        )(x)
        x = layers.Activation("relu", name="last_conv" if i == n else f"block{i}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    if hp["head"] == "flatten":
        x = layers.Flatten(name="flatten")(x)
    elif hp["head"] == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        raise ArchitectureError(f"basic_cnn head must be 'flatten' or 'avg', got {hp['head']!r}")
    x = layers.Dropout(hp["dropout"], name="dropout")(x)
    x = layers.Dense(
        int(hp["dense_units"]), activation="relu", kernel_regularizer=regularizers.l2(hp["l2"]), name="dense"
    )(x)
    return keras.Model(inputs, _head(x, num_classes, hp["dropout"], hp["l2"]), name="basic_cnn")


def _advanced_cnn(spec: PreprocessSpec, num_classes: int, hp: dict[str, Any]) -> keras.Model:
    reg = regularizers.l2(hp["l2"])
    k = int(hp["kernel_size"])
    inputs = keras.Input(shape=spec.input_shape, name="image")
    x = layers.Conv2D(
        int(hp["filters"]),
        k,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_regularizer=reg,
        name="stem_conv",
    )(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    n = int(hp["n_conv"])
    for i in range(1, n + 1):
        f = int(hp["filters"]) * 2 ** (i - 1)
        shortcut = layers.Conv2D(
            f, 1, strides=2, padding="same", use_bias=False, kernel_regularizer=reg, name=f"res{i}_shortcut"
        )(x)
        shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"res{i}_shortcut_bn")(shortcut)
        y = layers.SeparableConv2D(
            f,
            k,
            padding="same",
            use_bias=False,
            depthwise_regularizer=reg,
            pointwise_regularizer=reg,
            name=f"res{i}_sep1",
        )(x)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"res{i}_bn1")(y)
        y = layers.Activation("relu", name=f"res{i}_relu1")(y)
        y = layers.SeparableConv2D(
            f,
            k,
            padding="same",
            use_bias=False,
            depthwise_regularizer=reg,
            pointwise_regularizer=reg,
            name=f"res{i}_sep2",
        )(y)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"res{i}_bn2")(y)
        y = layers.MaxPooling2D(3, strides=2, padding="same", name=f"res{i}_pool")(y)
        x = layers.Add(name=f"res{i}_add")([y, shortcut])
        x = layers.Activation("relu", name="last_conv" if i == n else f"res{i}_out")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, _head(x, num_classes, hp["dropout"], hp["l2"]), name="advanced_cnn")


def _resnet50(spec: PreprocessSpec, num_classes: int, hp: dict[str, Any], weights: str | None) -> keras.Model:
    if spec.channels != 3 or spec.scaling != "resnet50":
        raise ArchitectureError(
            "resnet50 needs a spec with channels=3 and scaling='resnet50' (ImageNet-style input); "
            f"got channels={spec.channels}, scaling={spec.scaling!r}"
        )
    if spec.size < 32:
        raise ArchitectureError(f"resnet50 needs inputs of at least 32x32 pixels, got {spec.size}")
    inputs = keras.Input(shape=spec.input_shape, name="image")
    backbone = keras.applications.ResNet50(include_top=False, weights=weights, input_tensor=inputs)
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    x = layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    return keras.Model(inputs, _head(x, num_classes, hp["dropout"], hp["l2"]), name="resnet50")


def build_model(
    arch: str,
    spec: PreprocessSpec,
    num_classes: int = 3,
    weights: str | Path | None = None,
    **hp: Any,
) -> keras.Model:
    """Build an (untrained or pre-initialised) classifier.

    Args:
        arch: ``"basic_cnn"`` (``n_conv`` blocks of conv-ReLU-maxpool, flatten (``head="flatten"``)
            or global average pooling (``head="avg"``), dropout, dense ReLU, dropout, softmax), ``"advanced_cnn"`` (strided stem, then
            ``n_conv`` residual blocks of two separable convolutions with batch norm and a
            1x1 strided shortcut, global pooling, dropout, softmax; L2 on every kernel) or
            ``"resnet50"`` (Keras ResNet-50 backbone, flat graph, + pooling, dropout, softmax) or
            ``"mobilenetv2"`` (:func:`models.transfer.build_mobilenetv2`; spec channels 3, scaling
            ``"mobilenet_v2"``; weights a no-top file, ``"imagenet"`` or None).
        spec: preprocessing spec; the input is float32 ``(None, *spec.input_shape)``.
        num_classes: k, the softmax width (3 for normal/benign/malignant, 2 for binary).
        weights: None (random initialisation); ``"imagenet"`` (resnet50 only; Keras downloads the
            ImageNet no-top weights, needs network access); or a path to a local weights file
            (``.h5`` / ``.weights.h5``): for resnet50 the backbone's no-top weights (as Keras'
            ``ResNet50(weights=path)``), for the CNNs the whole model's weights.
        **hp: hyperparameters overriding :data:`DEFAULT_HP` (``filters``, ``kernel_size``,
            ``n_conv``, ``dropout``, ``dense_units``, ``l2``, basic_cnn ``head``).

    Returns:
        an uncompiled ``keras.Model`` mapping float32 (b, size, size, channels) to float32
        (b, num_classes) softmax probabilities, with the layer ``GRADCAM_LAYERS[arch]``.

    Raises:
        ArchitectureError: unknown architecture or hyperparameter, wrong spec for resnet50,
            ``"imagenet"`` for a CNN, or a weights file that does not exist.
    """
    if arch not in ARCHITECTURES:
        raise ArchitectureError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    unknown = set(hp) - set(DEFAULT_HP[arch])
    if unknown:
        raise ArchitectureError(
            f"unknown hyperparameters for {arch}: {sorted(unknown)}; known: {sorted(DEFAULT_HP[arch])}"
        )
    if num_classes < 2:
        raise ArchitectureError(f"num_classes must be at least 2, got {num_classes}")
    params = {**DEFAULT_HP[arch], **hp}
    local: Path | None = None
    if weights is not None and str(weights) != "imagenet":
        local = Path(weights)
        if not local.is_file():
            raise ArchitectureError(
                f"weights file {local} not found; pass None, 'imagenet' or an existing .h5 file"
            )
    if str(weights) == "imagenet" and arch not in ("resnet50", "mobilenetv2"):
        raise ArchitectureError(f"{arch} has no ImageNet weights; use weights=None or a local weights file")
    if arch == "basic_cnn":
        model = _basic_cnn(spec, num_classes, params)
    elif arch == "advanced_cnn":
        model = _advanced_cnn(spec, num_classes, params)
    elif arch == "mobilenetv2":
        from models.transfer import build_mobilenetv2

        try:
            return build_mobilenetv2(spec, num_classes, weights, **params)
        except ValueError as exc:
            raise ArchitectureError(str(exc)) from exc
    else:
        return _resnet50(spec, num_classes, params, None if weights is None else str(weights))
    if local is not None:
        model.load_weights(str(local))
    return model


def count_params(model: keras.Model) -> int:
    """Number of weights (trainable and not) of a built model."""
    return int(sum(int(w.numpy().size) for w in model.weights))
