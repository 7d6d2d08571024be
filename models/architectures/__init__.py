"""Model builders, one module per architecture (as ``keras.applications``), all with NAMED Grad-CAM layers.

* :mod:`models.architectures.basic_cnn`, :mod:`~models.architectures.advanced_cnn`,
  :mod:`~models.architectures.resnet50`, :mod:`~models.architectures.mobilenetv2`: each has
  ``GRADCAM_LAYER``, ``DEFAULT_HP`` and its builder;
* :mod:`models.architectures.common`: the error type, the softmax head, batch-norm momentum,
  training-only augmentation, the weight count.

Every builder takes the model's :class:`core.preprocessing.PreprocessSpec` (input shape
``spec.input_shape``) so the registry, the training loop and inference agree on the input.
Augmentation is NOT part of the models: :func:`augmentation` returns the Keras preprocessing
layers the training input pipeline applies to training batches only, so shipped models are
deterministic at inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from core.preprocessing import PreprocessSpec
from models.architectures import advanced_cnn, basic_cnn, mobilenetv2, resnet50
from models.architectures.common import BN_MOMENTUM, ArchitectureError, augmentation, count_params
from models.architectures.mobilenetv2 import build_mobilenetv2

__all__ = [
    "ARCHITECTURES", "BN_MOMENTUM", "DEFAULT_HP", "GRADCAM_LAYERS", "ArchitectureError", "augmentation",
    "build_mobilenetv2", "build_model", "count_params",
]

_MODULES = {"basic_cnn": basic_cnn, "advanced_cnn": advanced_cnn, "resnet50": resnet50, "mobilenetv2": mobilenetv2}
ARCHITECTURES = tuple(_MODULES)

#: Layer whose activations Grad-CAM uses, per architecture (the last spatial feature map).
GRADCAM_LAYERS: dict[str, str] = {name: m.GRADCAM_LAYER for name, m in _MODULES.items()}

#: Default hyperparameters per architecture (overridden by ``**hp`` of :func:`build_model`).
DEFAULT_HP: dict[str, dict[str, Any]] = {name: dict(m.DEFAULT_HP) for name, m in _MODULES.items()}


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
            ``"mobilenetv2"`` (:func:`build_mobilenetv2`; spec channels 3, scaling
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
    if arch == "mobilenetv2":
        return build_mobilenetv2(spec, num_classes, weights, **params)
    if arch == "resnet50":
        return resnet50.build(spec, num_classes, params, None if weights is None else str(weights))
    model = _MODULES[arch].build(spec, num_classes, params)
    if local is not None:
        model.load_weights(str(local))
    return model
