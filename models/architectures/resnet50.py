"""ResNet-50 (He et al. 2016, "Deep residual learning for image recognition", CVPR), built FLAT:
the input tensor is passed to ``keras.applications.ResNet50(input_tensor=...)`` so its layers sit
in the top-level graph and Grad-CAM (Selvaraju et al. 2017) reaches ``conv5_block3_out``."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from core.preprocessing import PreprocessSpec
from models.architectures.common import BN_MOMENTUM, ArchitectureError, head

GRADCAM_LAYER = "conv5_block3_out"
DEFAULT_HP: dict[str, Any] = {"dropout": 0.3, "l2": 1e-4}


def build(spec: PreprocessSpec, num_classes: int, hp: dict[str, Any], weights: str | None) -> keras.Model:
    """ResNet-50 backbone + global average pooling + the softmax head.

    Args:
        spec: channels 3 and scaling "resnet50" (ImageNet-style caffe input), size >= 32.
        weights: None, "imagenet" or a path to Keras' no-top ResNet-50 weights.

    Raises:
        ArchitectureError: the spec does not fit ResNet-50.
    """
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
    return keras.Model(inputs, head(x, num_classes, hp["dropout"], hp["l2"]), name="resnet50")
