"""core.inference.calibration: temperature scaling (Guo et al. 2017) fitted on an over-confident set."""

from __future__ import annotations

import numpy as np
import pytest

from core.inference.calibration import CalibrationError, calibrate, fit_temperature, log_loss
from core.stats.metrics import expected_calibration_error


def _overconfident(n=600, k=3, seed=0):
    """Labels drawn from a softened distribution, reported with a sharpened (over-confident) one."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, k))
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in true_p])
    sharp = np.exp(3 * logits)
    return sharp / sharp.sum(1, keepdims=True), y


def test_temperature_scaling_lowers_log_loss_on_an_overconfident_set():
    p, y = _overconfident()
    t = fit_temperature(p, y)
    assert t > 1.5  # over-confident -> softened
    q = calibrate(p, t)
    assert log_loss(q, y) < log_loss(p, y) - 0.1
    assert expected_calibration_error(y, q) < expected_calibration_error(y, p)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    assert (q.argmax(1) == p.argmax(1)).all()  # scaling keeps the ranking


def test_temperature_one_is_the_identity_and_a_bad_temperature_is_refused():
    p, _ = _overconfident(50)
    p = p.astype(np.float32)
    assert calibrate(p, 1.0) is p
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(CalibrationError, match="positive"):
            calibrate(p, bad)
    assert issubclass(CalibrationError, ValueError)


def test_a_known_temperature_gives_softmax_of_log_p_over_t():
    p = np.array([[0.7, 0.2, 0.1]])
    z = np.log(p) / 2.0
    want = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(calibrate(p, 2.0), want, rtol=1e-6)
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
