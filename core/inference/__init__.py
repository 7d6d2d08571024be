"""Inference: a registry model on slices and series, in the order of the flow.

* :mod:`~core.inference.predictor`: :class:`Predictor` (preprocess, predict in batches, decide,
  flag out-of-distribution slices, aggregate; Grad-CAM's one entry point, ``Predictor.explain``);
* :mod:`~core.inference.series`: :class:`SeriesResult` and the top-k series aggregation;
* :mod:`~core.inference.calibration`: the one temperature scaling (``calibrate``), its fit;
* :mod:`~core.inference.graph`: batch-norm folding of the inference copy;
* :mod:`~core.inference.runtime`: the OpenVINO runner, checked against Keras;
* :mod:`~core.inference.explain`: Grad-CAM (:class:`GradCam`), heatmap colouring and overlays;
* :mod:`~core.inference.ood`: the out-of-distribution guard's per-slice rules;
* :mod:`~core.inference.decision`: probabilities -> labels with the card's thresholds;
* :mod:`~core.inference.predict`: the command line (per-slice CSV of files).
"""

from __future__ import annotations

from core.domain import OOD_LABEL
from core.inference.calibration import CalibrationError, calibrate, fit_temperature, log_loss
from core.inference.errors import InferenceError
from core.inference.explain import Explanation
from core.inference.graph import fold_batch_norm
from core.inference.predictor import BATCH, BATCH_OPENVINO, CHUNK, Predictor
from core.inference.series import SeriesResult, top_k

__all__ = [
    "BATCH", "BATCH_OPENVINO", "CHUNK", "OOD_LABEL", "CalibrationError", "Explanation", "InferenceError",
    "Predictor", "SeriesResult", "calibrate", "fit_temperature", "fold_batch_norm", "log_loss", "top_k",
]
