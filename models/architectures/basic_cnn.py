"""A basic CNN: ``n_conv`` blocks of conv-ReLU-maxpool, flatten or global average pooling, dropout,
dense ReLU, dropout, softmax. Grad-CAM target: ``last_conv`` (the last block's ReLU)."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, regularizers

from core.preprocessing import PreprocessSpec
from models.architectures.common import ArchitectureError, head

GRADCAM_LAYER = "last_conv"
DEFAULT_HP: dict[str, Any] = {
    "filters": 32,
    "kernel_size": 3,
    "n_conv": 3,
    "dropout": 0.4,
    "dense_units": 64,
    "l2": 1e-4,
    "head": "flatten",
}


def build(spec: PreprocessSpec, num_classes: int, hp: dict[str, Any]) -> keras.Model:
    """The basic CNN (``hp``: every key of :data:`DEFAULT_HP`); float32 (b, *spec.input_shape) -> (b, k).

    Raises:
        ArchitectureError: ``hp["head"]`` is neither "flatten" nor "avg".
    """
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
    return keras.Model(inputs, head(x, num_classes, hp["dropout"], hp["l2"]), name="basic_cnn")
