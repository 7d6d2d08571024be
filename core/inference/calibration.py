"""Calibration: the one temperature scaling of softmax outputs (Guo et al., "On calibration of
modern neural networks", ICML 2017), fitting its temperature, and the log-loss it minimises.

Training fits T on the validation split (``models.transfer``) and stores it in the model card
(``training["calibration"]["temperature"]``); :class:`core.inference.Predictor` and evaluation
apply it with :func:`calibrate`. The expected calibration error is
``core.stats.metrics.expected_calibration_error``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.inference.errors import InferenceError


class CalibrationError(InferenceError, ValueError):
    """A temperature that is not positive and finite; re-register or re-train the model."""


def calibrate(probabilities: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Temperature scaling (Guo et al., ICML 2017) of softmax outputs: ``softmax(log p / T)``.

    Args:
        probabilities: float (n, k) rows summing to 1.
        temperature: T > 0 from the model card; T = 1 returns the input unchanged (old cards).

    Returns:
        float32 (n, k).

    Raises:
        CalibrationError (an InferenceError and a ValueError): T not positive and finite.
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise CalibrationError(f"model card temperature must be positive, got {temperature}; re-register the model")
    if temperature == 1.0:
        return probabilities
    z = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def log_loss(probabilities: np.ndarray, y: Sequence[int] | np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of integer labels ``y`` (n,) under ``probabilities`` (n, k)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64)[np.arange(len(y)), np.asarray(y)], 1e-12, 1.0)
    return float(-np.log(p).mean())


def fit_temperature(
    probabilities: np.ndarray, y: Sequence[int] | np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature minimising :func:`log_loss` of :func:`calibrate` (bounded scalar search,
    ``scipy.optimize.minimize_scalar``).

    Args:
        probabilities: float (n, k) validation probabilities.
        y: int (n,) validation labels.

    Returns:
        T in ``bounds`` (1.0 when n == 0).
    """
    from scipy.optimize import minimize_scalar

    if len(y) == 0:
        return 1.0
    res = minimize_scalar(
        lambda t: log_loss(calibrate(probabilities, float(t)), y), bounds=bounds, method="bounded"
    )
    return float(res.x)
