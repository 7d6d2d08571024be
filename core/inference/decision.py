"""The decision rule that turns class probabilities into a label, shared by evaluation,
inference, the CLI and the dashboard. Its thresholds come from the model card. Which class is the
suspicious one is ``core.domain.suspicious_index``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from core.domain import SUSPICIOUS, suspicious_class, suspicious_index  # noqa: F401 - the rule lives in core.domain

#: Classes checked first when they carry a threshold: the most severe first, so a slice that
#: reaches the malignant threshold is called malignant even when another class is more probable.
PRIORITY: tuple[str, ...] = ("malignant", "cancer", "benign")


def decide(
    probabilities: np.ndarray, class_names: Sequence[str], thresholds: Mapping[str, float] | None = None
) -> np.ndarray:
    """Label each row of class probabilities.

    Rule: for each class that has a threshold in ``thresholds`` (checked in :data:`PRIORITY`
    order, then the rest in ``class_names`` order), a row whose probability of that class is at
    least the threshold gets that class; every other row gets the argmax. With no thresholds
    this is plain argmax. Thresholds are chosen on the validation split (see the model card).

    Args:
        probabilities: float (n, k) array, rows summing to about 1.
        class_names: the k class names in the model's output order.
        thresholds: ``{class_name: threshold in [0, 1]}``; may be empty or None.

    Returns:
        int64 (n,) array of class indices into ``class_names``.

    Raises:
        ValueError: shape does not match ``class_names``, or a threshold names an unknown class
            or lies outside [0, 1].
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(class_names):
        raise ValueError(f"expected probabilities shaped (n, {len(class_names)}), got {p.shape}")
    labels = p.argmax(axis=1).astype(np.int64)
    if not thresholds:
        return labels
    names = list(class_names)
    for name, t in thresholds.items():
        if name not in names:
            raise ValueError(f"threshold for unknown class {name!r}; classes are {names}")
        if not 0.0 <= float(t) <= 1.0:
            raise ValueError(f"threshold for {name!r} must lie in [0, 1], got {t}")
    order = [c for c in PRIORITY if c in thresholds] + [c for c in names if c in thresholds and c not in PRIORITY]
    decided = np.zeros(len(p), dtype=bool)
    for name in order:
        j = names.index(name)
        hit = (~decided) & (p[:, j] >= float(thresholds[name]))
        labels[hit] = j
        decided |= hit
    return labels

