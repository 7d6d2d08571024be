"""An advanced CNN: a strided stem, then ``n_conv`` residual blocks of two separable convolutions
with batch norm and a 1x1 strided shortcut, global average pooling, dropout, softmax; L2 on every
kernel. Grad-CAM target: ``last_conv`` (the last block's output)."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, regularizers

from core.preprocessing import PreprocessSpec
from models.architectures.common import BN_MOMENTUM, head

GRADCAM_LAYER = "last_conv"
DEFAULT_HP: dict[str, Any] = {"filters": 32, "kernel_size": 3, "n_conv": 3, "dropout": 0.4, "l2": 1e-4}


def build(spec: PreprocessSpec, num_classes: int, hp: dict[str, Any]) -> keras.Model:
    """The advanced CNN (``hp``: every key of :data:`DEFAULT_HP`); float32 (b, *spec.input_shape) -> (b, k)."""
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
    return keras.Model(inputs, head(x, num_classes, hp["dropout"], hp["l2"]), name="advanced_cnn")
