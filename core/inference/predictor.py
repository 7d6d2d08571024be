"""Inference: a registry model on slices and series, with the card's preprocessing and decision rule.

Flow for a series (:meth:`Predictor.analyse_series`):

1. preprocess every slice with :func:`core.preprocessing.preprocess_with_geometry`, the function
   training used, with the window in the model card (the caller may override it for DICOM);
2. predict in batches of :data:`BATCH` (:data:`BATCH_OPENVINO` with OpenVINO). The model is
   first copied with its batch-norm layers folded into the preceding convolutions
   (:func:`fold_batch_norm`; same outputs within 1e-4, checked); the cached Keras model itself
   is not changed. The copy runs in OpenVINO when it is installed and agrees with the Keras
   model within 1e-4 (:mod:`core.inference.runtime`; faster on CPUs, docs/benchmarks.md), else as a
   ``tf.function`` (fixed input signature, called directly: no ``model.predict`` overhead per
   call). Grad-CAM runs on the Keras copy; with OpenVINO its backbone (input to the Grad-CAM
   layer, no gradients needed there) runs in OpenVINO too when it agrees with Keras
   (:meth:`Predictor.gradcam`). The series goes through in chunks of :data:`CHUNK`
   slices: two threads prepare a chunk (preprocessing and the OOD rules; NumPy, SciPy and Pillow
   release the GIL), then the model runs on it with all cores to itself, so no thread competes
   with the runtime's and memory stays bounded by one chunk (measurements: docs/benchmarks.md);
3. label each slice with :func:`core.inference.decision.decide` and the card's thresholds;
4. flag out-of-distribution slices with :func:`core.inference.ood.check_series` (MR, X-ray, photo, blank...;
   run with step 1 in the chunk's threads);
5. aggregate to a series result (below).

Series aggregation: :mod:`core.inference.series`; temperature scaling:
:mod:`core.inference.calibration`; Grad-CAM: :mod:`core.inference.explain` (the one entry point is
:meth:`Predictor.explain` / :meth:`Predictor.explain_hu`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from core.domain import Finding, Window, series_is_ood, suspicious_index
from core.inference.calibration import calibrate
from core.inference.decision import decide
from core.inference.errors import InferenceError
from core.inference.explain import Explanation, GradCam, normalize_cam
from core.inference.graph import fold_batch_norm
from core.inference.ood import check_series
from core.inference.series import SeriesResult, top_k
from core.preprocessing import Geometry, preprocess_with_geometry

log = logging.getLogger("lungreview.inference")

#: Slices per model call with TensorFlow: 16 keeps a 224-px ResNet-50 batch's activations at a
#: fraction of a GB, where TensorFlow's time per slice has mostly stopped falling (docs/benchmarks.md).
BATCH = 16
#: Slices per model call with OpenVINO: 4, the smallest batch at which ResNet-50's time per slice
#: stops falling (docs/benchmarks.md); smaller batches keep memory and progress steps small.
BATCH_OPENVINO = 4
#: Slices prepared (preprocessing + OOD rules, in two threads) before the model runs on them.
CHUNK = 32





class Predictor:
    """A loaded registry model ready for slices, series and Grad-CAM. Build once, cache, reuse.

    Args:
        loaded: :class:`core.registry.LoadedModel` (sha256 already verified by ``load_model``).
        runtime: ``"auto"``, ``"openvino"`` or ``"tensorflow"`` for the probability path
            (:mod:`core.inference.runtime`); None = ``get_settings().runtime`` (``LUNGREVIEW_RUNTIME``).
            Grad-CAM's gradients always come from the Keras model (its backbone may run in OpenVINO).

    Attributes:
        runtime: the runtime in use, ``"openvino"`` or ``"tensorflow"``.
        runtime_note: one line saying which runtime and how it was checked (or why not used).
        batch: slices per model call (:data:`BATCH` or :data:`BATCH_OPENVINO`).

    Raises:
        InferenceError: the card's class names do not match the model's output width; an unknown
            runtime; ``runtime="openvino"`` and OpenVINO cannot run the model within 1e-4 of Keras.
    """

    def __init__(self, loaded: Any, runtime: str | None = None) -> None:
        import tensorflow as tf

        from core.settings import RUNTIMES, get_settings

        self.loaded = loaded
        self.card = loaded.card
        self.spec = loaded.card.preprocessing
        self.model = loaded.model
        self.class_names: tuple[str, ...] = tuple(self.card.class_names)
        k = int(self.model.outputs[0].shape[-1])
        if k != len(self.class_names):
            raise InferenceError(
                f"model {self.card.id!r} outputs {k} classes but its card names {len(self.class_names)} "
                f"({list(self.class_names)}); re-register the model"
            )
        self._suspicious = suspicious_index(self.class_names)
        self.suspicious_class = self.class_names[self._suspicious]
        try:
            model, self.folded_layers = fold_batch_norm(self.model)
        except Exception:  # any graph the folding does not handle: run the model as it is
            model, self.folded_layers = self.model, 0
        self.fast_model = model
        tf_fn = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, *self.spec.input_shape), tf.float32)],
            reduce_retracing=True,
        )
        self._run: Callable[[np.ndarray], np.ndarray] = lambda x: tf_fn(x).numpy()
        self.runtime = "tensorflow"
        self.runtime_note = "TensorFlow (Keras model, batch norm folded)"
        self.batch = BATCH
        wanted = (runtime or get_settings().runtime).lower()
        if wanted not in RUNTIMES:
            raise InferenceError(f"unknown runtime {wanted!r}; choose one of {', '.join(RUNTIMES)}")
        if wanted != "tensorflow":
            self._try_openvino(required=wanted == "openvino")
        self._gradcam: GradCam | None = None

    def _try_openvino(self, required: bool) -> None:
        """Switch the probability path to OpenVINO if it agrees with Keras (``core/runtime.py``)."""
        from core.inference.runtime import RuntimeUnavailable, openvino_runner
        from core.settings import get_settings

        sha = self.card.sha256
        try:
            runner = openvino_runner(
                self.fast_model,
                lambda x: np.asarray(self.model(x, training=False)),
                self.probe_batch(),
                cache_dir=(get_settings().var_dir / "openvino") if sha else None,
                key=f"{self.card.id}-{sha[:16]}-bn{self.folded_layers}",
                stale=f"{self.card.id}-*-openvino-*",
            )
        except RuntimeUnavailable as exc:
            if required:
                raise InferenceError(f"{exc}; set LUNGREVIEW_RUNTIME=tensorflow to use TensorFlow") from exc
            log.warning("model %s: %s; using TensorFlow", self.card.id, exc)
            self.runtime_note = f"TensorFlow ({exc})"
            return
        self._run = runner
        self.batch = BATCH_OPENVINO
        self.runtime = "openvino"
        self.runtime_note = (
            f"OpenVINO {runner.version} float32 (max |dp| vs Keras {runner.max_abs_diff:.1e} on the probe batch)"
        )
        log.info("model %s: %s", self.card.id, self.runtime_note)

    def probe_batch(self, n: int = 4) -> np.ndarray:
        """A fixed batch in the model's input range, for checking a runtime against Keras.

        Returns:
            float32 (n, H, W, C): uniform [0, 1] images, caffe-scaled for ``scaling="resnet50"``
            (``core.preprocessing``), from a seeded generator.
        """
        rng = np.random.default_rng(20261122)
        unit = rng.uniform(0.0, 1.0, (n, *self.spec.input_shape)).astype(np.float32)
        if self.spec.scaling == "resnet50":
            from core.preprocessing import _CAFFE_BGR_MEANS

            return unit * np.float32(255.0) - _CAFFE_BGR_MEANS[: self.spec.channels]
        if self.spec.scaling == "mobilenet_v2":
            return unit * np.float32(2.0) - np.float32(1.0)
        return unit

    # ------------------------------------------------------------------------------ batches
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of preprocessed slices.

        Args:
            x: float32 (n, H, W, C) made by ``core.preprocessing`` with ``self.spec``.

        Returns:
            float32 (n, k) probabilities in the card's class order.

        Raises:
            InferenceError: wrong input shape.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.spec.input_shape):
            raise InferenceError(
                f"model {self.card.id!r} expects input shaped (n, {', '.join(map(str, self.spec.input_shape))}), "
                f"got {x.shape}; preprocess with the model card's spec"
            )
        if len(x) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        b = self.batch
        outs = [self._run(x[i : i + b]) for i in range(0, len(x), b)]
        return calibrate(np.concatenate(outs).astype(np.float32), self.temperature)

    @property
    def temperature(self) -> float:
        """The card's temperature (``training["calibration"]["temperature"]``); 1.0 when absent."""
        return float((self.card.training or {}).get("calibration", {}).get("temperature", 1.0))

    def decide(self, probabilities: np.ndarray) -> list[str]:
        """Labels of probability rows with the card's thresholds (:func:`core.inference.decision.decide`)."""
        idx = decide(probabilities, self.class_names, self.card.thresholds)
        return [self.class_names[i] for i in idx]

    @property
    def gradcam(self) -> GradCam:
        """The Grad-CAM runner at the card's layer (built on first use, then reused)."""
        if self._gradcam is None:
            gc = GradCam(self.fast_model, self.card.gradcam_layer)
            if self.runtime == "openvino" and gc.body_model is not None:
                self._gradcam_body_on_openvino(gc)
            self._gradcam = gc
        return self._gradcam

    def _gradcam_body_on_openvino(self, gc: GradCam) -> None:
        """Run Grad-CAM's backbone (input -> target layer) in OpenVINO when it agrees with Keras.

        The tape records only the head (:mod:`core.inference.explain`), so the backbone's forward pass, most
        of Grad-CAM's time, can come from the runtime that computes the probabilities. The
        OpenVINO copy is accepted when its activations on the probe batch agree with the Keras
        body within ``AGREEMENT_ATOL`` times the largest activation (float32 rounding is relative),
        else Grad-CAM stays in TensorFlow. Cached like the probability model (key ``<id>-gradcam-...``).
        """
        from core.inference.runtime import AGREEMENT_ATOL, RuntimeUnavailable, openvino_runner
        from core.settings import get_settings

        body = gc.body_model
        probe = self.probe_batch()
        scale = max(1.0, float(np.max(np.abs(np.asarray(body([probe], training=False))))))
        sha = self.card.sha256
        try:
            runner = openvino_runner(
                body,
                lambda x: np.asarray(body([x], training=False)),
                probe,
                cache_dir=(get_settings().var_dir / "openvino") if sha else None,
                key=f"{self.card.id}-gradcam-{gc.layer_name}-{sha[:16]}-bn{self.folded_layers}",
                atol=AGREEMENT_ATOL * scale,
                stale=f"{self.card.id}-gradcam-{gc.layer_name}-*-openvino-*",
            )
        except RuntimeUnavailable as exc:
            log.warning("model %s: Grad-CAM backbone stays in TensorFlow (%s)", self.card.id, exc)
            return
        gc.use_body_runner(runner)

    # ------------------------------------------------------------------------------- series
    def preprocess(self, hu: list[np.ndarray] | np.ndarray, window: Window | None = None):
        """``core.preprocessing.preprocess_with_geometry`` with this model's spec: ``(x, geometries)``."""
        return preprocess_with_geometry(hu, self.spec, window)

    def analyse_series(
        self,
        series: Any,
        window: Window | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> SeriesResult:
        """Per-slice probabilities, OOD flags and the series-level result (module docstring).

        Args:
            series: a :class:`core.imaging.Series` (slices with ``hu`` float32 (y, x) in HU).
            window: override of the card's window (for DICOM); None = the card's.
            progress: called as ``progress(done, total)`` after each batch.

        Returns:
            :class:`SeriesResult`.

        Raises:
            InferenceError: the series has no slices, or a slice cannot be preprocessed.
        """
        start = time.perf_counter()
        slices = list(series.slices)
        n = len(slices)
        if n == 0:
            raise InferenceError("the series has no slices; upload at least one image")
        win = window or self.spec.window

        def prep(idx: range) -> tuple[np.ndarray, list[Geometry], Any]:
            try:
                x, geos = self.preprocess([slices[i].hu for i in idx], win)
            except ValueError as exc:
                raise InferenceError(f"a slice could not be prepared for the model: {exc}") from exc
            return x, geos, check_series(series, idx)

        b = self.batch
        probs: list[np.ndarray] = []
        geometries: list[Geometry] = []
        ood: list[np.ndarray] = []
        reasons: list[list[str]] = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            for c0 in range(0, n, CHUNK):
                c1 = min(n, c0 + CHUNK)
                mid = (c0 + c1 + 1) // 2
                parts = [r for r in (range(c0, mid), range(mid, c1)) if len(r)]
                done = list(pool.map(prep, parts))  # both threads prepare; the model waits
                x = np.concatenate([d[0] for d in done])
                for d in done:
                    geometries.extend(d[1])
                    ood.append(d[2].ood)
                    reasons.extend(d[2].reasons)
                for i in range(0, len(x), b):  # then the model runs alone on both cores
                    probs.append(np.asarray(self._run(x[i : i + b]), dtype=np.float32))
                    if progress is not None:
                        progress(c0 + min(i + b, len(x)), n)
        p = calibrate(np.concatenate(probs), self.temperature)
        return self._aggregate(p, np.concatenate(ood), reasons, geometries, win, start)

    def _aggregate(
        self,
        p: np.ndarray,
        ood: np.ndarray,
        reasons: list[list[str]],
        geometries: list[Geometry],
        window: Window,
        start: float,
    ) -> SeriesResult:
        n = len(p)
        labels = self.decide(p)
        series_ood = series_is_ood(ood)
        pool = np.flatnonzero(~ood) if (~ood).any() else np.arange(n)
        ranked = pool[np.argsort(-p[pool, self._suspicious], kind="stable")]
        top = ranked[: top_k(len(pool))]
        score = float(p[top, self._suspicious].mean())
        label = self.decide(p[top].mean(axis=0, keepdims=True))[0]
        return SeriesResult(
            model_id=self.card.id,
            model_sha256=self.card.sha256,
            class_names=self.class_names,
            probabilities=p,
            labels=labels,
            most_suspicious_index=int(ranked[0]),
            series_score=score,
            finding=Finding(label),
            is_ood=series_ood,
            ood=ood.astype(bool),
            ood_reasons=["; ".join(r) for r in reasons],
            latency_ms=(time.perf_counter() - start) * 1000.0,
            top_indices=[int(i) for i in top],
            suspicious_class=self.suspicious_class,
            window=(float(window.center), float(window.width)),
            runtime=self.runtime,
            geometries=geometries,
        )

    # ------------------------------------------------------------------------------ Grad-CAM
    def explain(
        self,
        series: Any,
        slice_index: int,
        class_name: str | None = None,
        window: Window | None = None,
    ) -> Explanation:
        """Grad-CAM of one slice, with its probabilities from the same forward pass.

        Args:
            series: a :class:`core.imaging.Series`.
            slice_index: 0-based index into ``series.slices``.
            class_name: class to explain; None = the slice's decided label.
            window: override of the card's window; None = the card's.

        Returns:
            :class:`Explanation` with ``heatmap`` float32 (y, x) in [0, 1] at the slice's size.

        Raises:
            InferenceError: index out of range or unknown class name.
        """
        slices = series.slices
        if not 0 <= slice_index < len(slices):
            raise InferenceError(f"slice {slice_index} does not exist; the series has {len(slices)} slices")
        if class_name is not None and class_name not in self.class_names:
            raise InferenceError(f"unknown class {class_name!r}; this model knows {list(self.class_names)}")
        return self.explain_hu(slices[slice_index].hu, class_name, window, slice_index)

    def explain_hu(
        self,
        hu: np.ndarray,
        class_name: str | None = None,
        window: Window | None = None,
        slice_index: int = 0,
    ) -> Explanation:
        """Grad-CAM of one slice given as HU, float (y, x); see :meth:`explain`."""
        x, geos = self.preprocess(np.asarray(hu), window)
        return self.explain_prepared(x, geos[0], class_name, slice_index)

    def explain_prepared(
        self, x: np.ndarray, geometry: Geometry, class_name: str | None = None, slice_index: int = 0
    ) -> Explanation:
        """Grad-CAM of one slice already preprocessed (the body of :meth:`explain_hu`).

        Args:
            x: float32 (1, size, size, channels), ``core.preprocessing.preprocess_with_geometry``
                of the slice with the card's spec. geometry: its :class:`~core.preprocessing.Geometry`.
            class_name, slice_index: as in :meth:`explain`.

        Returns:
            :class:`Explanation` (heatmap at the slice's size, via ``geometry``).

        Raises:
            InferenceError: unknown class name.
        """
        if class_name is not None and class_name not in self.class_names:
            raise InferenceError(f"unknown class {class_name!r}; this model knows {list(self.class_names)}")
        probs, cams = self.gradcam(x)
        probs = calibrate(np.asarray(probs, dtype=np.float32), self.temperature)
        label = self.decide(probs)[0]
        cls = class_name or label
        grid = normalize_cam(cams[0, :, :, self.class_names.index(cls)])
        heat = np.clip(geometry.to_slice(grid), 0.0, 1.0).astype(np.float32)
        return Explanation(
            probabilities=probs[0],
            class_name=cls,
            heatmap=heat,
            label=label,
            slice_index=slice_index,
            grid=grid,
        )
