"""What every architecture shares: the error type, batch-norm momentum, the softmax head,
training-only augmentation and the weight count."""

from __future__ import annotations

import keras
from keras import layers, regularizers

#: Batch-norm moving-average momentum. Keras' default (0.99) needs many hundreds of steps to
#: forget its initial statistics; with a few dozen training steps per epoch on the shipped data
#: the validation outputs (inference mode, moving statistics) stay degenerate for the first
#: epochs, so 0.9 is used for every BN layer, ResNet-50's included.
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


def head(x, num_classes: int, dropout: float, l2: float):
    """Dropout ``head_dropout`` then the softmax layer ``predictions`` (k = ``num_classes``, L2 on the kernel)."""
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=regularizers.l2(l2), name="predictions"
    )(x)


def count_params(model: keras.Model) -> int:
    """Number of weights (trainable and not) of a built model."""
    return int(sum(int(w.numpy().size) for w in model.weights))
