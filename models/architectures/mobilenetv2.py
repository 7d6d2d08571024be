"""MobileNetV2 (Sandler et al., "MobileNetV2: inverted residuals and linear bottlenecks", CVPR
2018) for transfer learning, built FLAT on the model's input tensor so Grad-CAM reaches
``out_relu``; trained by ``models.transfer``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
from keras import layers, regularizers

from models.architectures.common import ArchitectureError

GRADCAM_LAYER = "out_relu"
DEFAULT_HP: dict[str, Any] = {"dropout": 0.3, "l2": 1e-4}


def build_mobilenetv2(
    spec: Any, num_classes: int = 3, weights: str | Path | None = None, dropout: float = 0.3, l2: float = 1e-4
) -> keras.Model:
    """MobileNetV2 backbone (flat graph) + global average pooling + dropout + softmax.

    Args:
        spec: :class:`core.preprocessing.PreprocessSpec` with ``channels == 3`` and
            ``scaling == "mobilenet_v2"`` (inputs in [-1, 1], as ``mobilenet_v2.preprocess_input``).
        num_classes: softmax width k.
        weights: None (random), ``"imagenet"`` (download) or a path to a no-top weights file.
        dropout, l2: head regularisation.

    Returns:
        uncompiled ``keras.Model`` float32 (b, size, size, 3) -> (b, k) probabilities, with the
        backbone layers reachable by name (``out_relu`` for Grad-CAM).

    Raises:
        ArchitectureError (a ValueError): wrong spec, or a weights path that does not exist.
    """
    if spec.channels != 3 or spec.scaling != "mobilenet_v2":
        raise ArchitectureError(
            f"MobileNetV2 needs channels=3 and scaling='mobilenet_v2', got {spec.channels} / {spec.scaling!r}"
        )
    w: str | None = None
    if weights is not None:
        w = str(weights)
        if w != "imagenet" and not Path(w).is_file():
            raise ArchitectureError(
                f"weights file {w} not found; pass None, 'imagenet' or an existing .weights.h5 file"
            )
    inp = keras.Input(shape=spec.input_shape, name="image")
    base = keras.applications.MobileNetV2(alpha=1.0, include_top=False, weights=w, input_tensor=inp)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    out = layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=regularizers.l2(l2), name="predictions"
    )(x)
    return keras.Model(inp, out, name="mobilenetv2_transfer")
