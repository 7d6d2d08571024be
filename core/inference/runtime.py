"""Runtimes for the probability path of a Keras model: TensorFlow itself or OpenVINO.

The probabilities a radiologist sees may come from OpenVINO (Intel's inference runtime, CPU
plugin) instead of TensorFlow, because it runs the same float32 models faster on CPUs (figures:
docs/benchmarks.md; ``lungreview bench``). Grad-CAM's gradients come from the Keras model
(:mod:`core.inference.explain`), which an exported graph cannot give; only the backbone's forward pass up
to the Grad-CAM layer, which needs no gradient, may run here (``Predictor.gradcam``).

How an OpenVINO model is made and trusted (:func:`openvino_runner`):

1. the Keras model is exported as a TensorFlow SavedModel (``model.export``, Keras 3) into a
   temporary folder and read by OpenVINO's TensorFlow front end (``openvino.Core.read_model``).
   The converter ``openvino.convert_model`` is not used: it sends usage telemetry;
2. the result is cached as OpenVINO IR (``.xml`` + ``.bin``, float32) under a key the caller
   gives (the model's sha256), so later loads skip the export;
3. it is compiled for the CPU with ``INFERENCE_PRECISION_HINT=f32``. This is required: on CPUs
   with AVX512-BF16 or AMX, OpenVINO's default is bfloat16, whose 8-bit mantissa (relative
   error 2**-9) moves probabilities by far more than :data:`AGREEMENT_ATOL`;
4. it is accepted only if its outputs on a probe batch agree with the Keras model's within
   ``atol`` (:data:`AGREEMENT_ATOL`); otherwise :class:`RuntimeUnavailable` is raised
   and the caller falls back to TensorFlow. A stale or damaged cache entry fails this check and is
   rebuilt once from the Keras model.

Unless opted out, OpenVINO's Python package writes a client id and an import counter to
``~/intel`` and its converter sends usage events; ``make`` runs ``opt_in_out --opt_out`` after
installing it (after which ``import openvino`` wrote nothing there, checked), and nothing here
calls the converter, the only place we found telemetry being sent (``openvino.tools.ovc``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import RUNTIMES

log = logging.getLogger("lungreview.runtime")

__all__ = ["AGREEMENT_ATOL", "RUNTIMES", "OpenVinoRunner", "RuntimeUnavailable", "openvino_runner"]

#: Largest absolute difference of probabilities from the Keras model that is accepted: 1e-4 is a
#: tenth of the last digit the dashboard shows (probabilities to 3 decimals), so an accepted
#: runtime changes a shown value by at most one in that digit, and a decided label only for a
#: probability within 1e-4 of a card threshold. float32 rounding differences stay far below it
#: (docs/benchmarks.md); bfloat16 goes far above it.
AGREEMENT_ATOL = 1e-4


class RuntimeUnavailable(Exception):
    """OpenVINO cannot run this model here (not installed, conversion failed, or outputs differ)."""


class OpenVinoRunner:
    """A compiled OpenVINO model called like a function; safe to share between threads.

    Attributes:
        max_abs_diff: largest |probability difference| from the Keras model on the probe batch.
        version: OpenVINO version string.
        cached: True when the IR came from the cache rather than a fresh export.
    """

    def __init__(self, compiled: Any, version: str, cached: bool) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        self.version = version
        self.cached = cached
        self.max_abs_diff = float("nan")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Model outputs for a batch.

        Args:
            x: float32 (n, H, W, C) preprocessed slices, n >= 1.

        Returns:
            float32 (n, k) model outputs (probabilities), a copy the caller owns.
        """
        with self._lock:  # one infer request: serialise callers (Streamlit sessions are threads)
            out = self._request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})[0]
            return np.array(out, dtype=np.float32, copy=True)


def _export_ir(model: Any, xml_path: Path | None, stale: str | None = None) -> Any:
    """Keras model -> SavedModel (temporary) -> OpenVINO model; saved as float32 IR at ``xml_path``.

    After saving, other files in the folder matching the glob ``stale`` (earlier weights of the
    same model) are deleted. A cache that cannot be written (read-only folder, full disk) is
    logged and skipped.
    """
    import openvino as ov

    tmp = Path(tempfile.mkdtemp(prefix="lungreview_sm_"))
    try:
        model.export(str(tmp / "saved_model"), format="tf_saved_model", verbose=False)
        ov_model = ov.Core().read_model(str(tmp / "saved_model"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if xml_path is None:
        return ov_model
    part = xml_path.with_name(xml_path.stem + f".{os.getpid()}-{threading.get_ident()}.part.xml")
    try:
        xml_path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(ov_model, str(part), compress_to_fp16=False)
        part.with_suffix(".bin").replace(xml_path.with_suffix(".bin"))
        part.replace(xml_path)
        for old in xml_path.parent.glob(stale) if stale else ():
            if old.stem != xml_path.stem and old.suffix in (".xml", ".bin"):
                old.unlink(missing_ok=True)
    except (OSError, RuntimeError) as exc:
        log.warning(
            "OpenVINO model not cached in %s (%s); it is exported again at the next load",
            xml_path.parent,
            exc,
        )
        for leftover in (part, part.with_suffix(".bin")):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
    return ov_model


def openvino_runner(
    model: Any,
    reference: Callable[[np.ndarray], np.ndarray],
    probe: np.ndarray,
    cache_dir: Path | None,
    key: str,
    atol: float = AGREEMENT_ATOL,
    stale: str | None = None,
) -> OpenVinoRunner:
    """An OpenVINO runner for ``model``, checked against ``reference`` (module docstring).

    Args:
        model: the Keras model to run (e.g. the batch-norm-folded copy).
        reference: the Keras model's forward function, float32 (n, H, W, C) -> (n, k).
        probe: float32 (n, H, W, C) batch the two must agree on (inputs in the model's range).
        cache_dir: folder for IR files; None = no cache (export every time).
        key: cache key, unique per model weights (e.g. the card's sha256 plus the folding).
        atol: largest accepted absolute difference of outputs.
        stale: glob of cache files this export replaces (e.g. ``"<model id>-*"``: the same model
            with earlier weights), deleted once the new IR is saved; None keeps everything.

    Returns:
        :class:`OpenVinoRunner` with ``max_abs_diff`` set.

    Raises:
        RuntimeUnavailable: OpenVINO is not installed, cannot convert this model, or its outputs
            differ from the reference by more than ``atol``.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise RuntimeUnavailable("OpenVINO is not installed (pip install openvino)") from exc
    version = ov.get_version().split("-")[0]
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    expected = np.asarray(reference(probe), dtype=np.float32)
    xml = (cache_dir / f"{key}-openvino-{version}.xml") if cache_dir is not None else None
    attempts = [True, False] if xml is not None and xml.exists() else [False]
    last = ""
    for from_cache in attempts:
        try:
            ov_model = core.read_model(str(xml)) if from_cache else _export_ir(model, xml, stale)
            runner = OpenVinoRunner(core.compile_model(ov_model, "CPU", config), version, from_cache)
            diff = float(np.max(np.abs(runner(probe) - expected)))
        except Exception as exc:  # OpenVINO and the TF front end raise many types
            last = f"{type(exc).__name__}: {exc}"
            log.warning("OpenVINO %s for %s failed (%s)", "cache" if from_cache else "export", key, last)
            continue
        if diff <= atol:
            runner.max_abs_diff = diff
            return runner
        last = f"outputs differ from Keras by {diff:.2e} (> {atol:g})"
        log.warning("OpenVINO %s for %s: %s", "cache" if from_cache else "export", key, last)
    raise RuntimeUnavailable(f"OpenVINO cannot run this model: {last}")
