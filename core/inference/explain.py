"""Grad-CAM heatmaps (Selvaraju et al. 2017, "Grad-CAM: Visual explanations from deep networks
via gradient-based localization", ICCV) and their overlay on the windowed slice.

Grad-CAM for class c at a convolutional layer with activations A (h, w, K):
``alpha_k = mean_ij d y_c / d A_ij^k`` and ``L_c = ReLU(sum_k alpha_k A^k)``, where ``y_c`` is the
class score BEFORE the softmax (the paper's eq. 1-2). When the model ends in a ``Dense`` layer
with a softmax activation (every LungReview architecture), ``y_c`` is recomputed from that
layer's input and weights inside the tape; otherwise ``log p_c`` is used.

One pass: a sub-model with outputs ``[target activations, input of the last Dense layer,
probabilities]`` is built once per model (the cached model is never changed) and run under
``tf.GradientTape`` in a ``tf.function`` with a fixed input signature. The same forward pass
gives the probabilities and the heatmaps of EVERY class (the gradients only go back through the
head, from the logits to the target layer, so k classes cost almost nothing more than one).

When the model is split at the target layer (the usual case) the backbone's forward pass needs no
tape, so it may be computed by another runtime (:meth:`GradCam.use_body_runner`; the Predictor
uses its OpenVINO copy of the backbone); only the head then runs in TensorFlow, under the tape.

Nested backbones: when the target layer is not a top-level layer but sits inside a nested Keras
model (e.g. ``keras.applications.ResNet50`` used as one layer), the outer graph is re-run with that
nested model replaced by a two-output copy of itself (target activations and its own output),
so the activations are connected to the outer input (no "graph disconnected", no None gradients).

Heatmaps are scaled per slice to [0, 1] by their maximum (an all-zero map stays all zero, never
NaN) and put back on the slice with :meth:`core.preprocessing.Geometry.to_slice`.

How much heatmap mass falls inside annotated tumour boxes is measured by :mod:`models.evaluation.localization`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

# ------------------------------------------------------------------------------------ colours
#: Colour maps as 256-entry uint8 lookup tables (built below, no matplotlib):
#: "jet" is MATLAB's piecewise-linear jet (blue-cyan-yellow-red, each channel a trapezoid:
#: ``clip(1.5 - |4x - k|, 0, 1)`` with k = 3, 2, 1 for R, G, B); "turbo" is Google's Turbo
#: (Mikhailov 2019, "Turbo, an improved rainbow colormap for visualization", Google AI blog)
#: from its published degree-5 polynomial approximation.
_X = np.linspace(0.0, 1.0, 256)


def _jet_lut() -> np.ndarray:
    r = np.clip(1.5 - np.abs(4 * _X - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * _X - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * _X - 1), 0, 1)
    return np.rint(np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def _turbo_lut() -> np.ndarray:
    x = _X
    r = 0.13572138 + x * (
        4.61539260 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943)))
    )
    g = 0.09140261 + x * (
        2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604)))
    )
    b = 0.10667330 + x * (
        12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973)))
    )
    return np.rint(np.clip(np.stack([r, g, b], axis=-1), 0, 1) * 255).astype(np.uint8)


COLORMAPS: dict[str, np.ndarray] = {"jet": _jet_lut(), "turbo": _turbo_lut()}


@dataclass
class Explanation:
    """Grad-CAM of one slice.

    Attributes:
        probabilities: float32 (k,) class probabilities of the slice (same forward pass).
        class_name: the class the heatmap explains.
        heatmap: float32 (y, x) in [0, 1] at the slice's resolution, aligned with the slice.
        label: the slice's decided label (card thresholds).
        slice_index: index of the slice in the series.
        grid: float32 (h, w) in [0, 1], the heatmap on the target layer's grid.
    """

    probabilities: np.ndarray
    class_name: str
    heatmap: np.ndarray
    label: str = ""
    slice_index: int = 0
    grid: np.ndarray | None = field(default=None, repr=False)


class ExplainError(Exception):
    """Grad-CAM cannot be computed for this model or input; the message says what to do."""


def colorize(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Map a heatmap in [0, 1] to colours.

    Args:
        heatmap: float (y, x) in [0, 1] (values outside are clipped, NaN counts as 0).
        colormap: ``"jet"`` or ``"turbo"`` (see :data:`COLORMAPS`).

    Returns:
        uint8 (y, x, 3) RGB.

    Raises:
        ValueError: unknown colormap name.
    """
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {sorted(COLORMAPS)}")
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    idx = np.rint(np.clip(h, 0.0, 1.0) * 255).astype(np.uint8)
    return COLORMAPS[colormap][idx]


def overlay(view: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """Blend a coloured heatmap over the windowed slice: ``(1 - alpha) * grey + alpha * colour``.

    Args:
        view: uint8 (y, x) windowed slice (``core.imaging.view``) or uint8 (y, x, 3).
        heatmap: float (y, x) in [0, 1], the same (y, x) as ``view`` (e.g. ``Explanation.heatmap``).
        alpha: opacity of the heatmap in [0, 1].
        colormap: ``"jet"`` or ``"turbo"``.

    Returns:
        uint8 (y, x, 3) RGB image.

    Raises:
        ValueError: shapes differ, alpha outside [0, 1], or unknown colormap.
    """
    v = np.asarray(view)
    h = np.asarray(heatmap)
    if v.shape[:2] != h.shape or h.ndim != 2:
        raise ValueError(f"view {v.shape} and heatmap {h.shape} must have the same (y, x) size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    grey = v.astype(np.float32)
    if grey.ndim == 2:
        grey = np.repeat(grey[..., None], 3, axis=-1)
    colour = colorize(h, colormap).astype(np.float32)
    out = (1.0 - alpha) * grey[..., :3] + alpha * colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


#: zlib level of :func:`to_png`: 1, zlib's "best speed" (PNG is lossless at every level; Pillow's
#: default is 6). The dashboard encodes an overlay for every slice a reader moves to; the time
#: and size per level are in docs/load.md.
PNG_COMPRESS_LEVEL = 1


def to_png(rgb: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Encode a uint8 (y, x, 3) RGB (or (y, x) grey) array as PNG bytes (Pillow).

    Args:
        rgb: uint8 (y, x, 3) or (y, x); other dtypes are cast to uint8.
        compress_level: zlib compression level 0 (none) to 9 (smallest, slowest); the pixels
            decode the same at every level (PNG, ISO/IEC 15948 section 10: deflate is lossless).

    Raises:
        ValueError: ``compress_level`` is not an integer from 0 to 9.
    """
    if isinstance(compress_level, bool) or not isinstance(compress_level, int) or not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be an integer from 0 to 9, got {compress_level!r}")
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] by its maximum; an all-zero (or non-finite) map becomes zeros.

    Args:
        cam: float (..., h, w) non-negative maps.

    Returns:
        float32 array of the same shape in [0, 1].
    """
    c = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    c = np.maximum(c, 0.0)
    peak = c.max(axis=(-2, -1), keepdims=True) if c.ndim >= 2 else c.max()
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(peak > 1e-12, c / np.where(peak > 1e-12, peak, 1.0), 0.0)
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------ Grad-CAM
def _find_layer(model: Any, name: str) -> tuple[list[Any], Any]:
    """The layer called ``name`` and the chain of nested models leading to it (outermost first)."""
    import keras

    for layer in model.layers:
        if layer.name == name:
            return [], layer
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                chain, found = _find_layer(layer, name)
            except ExplainError:
                continue
            return [layer, *chain], found
    raise ExplainError(
        f"layer {name!r} not found in model {model.name!r}; check the model card's gradcam_layer"
    )


def _feature_model(model: Any, layer_name: str, head: Any = None) -> Any:
    """A model sharing ``model``'s weights with outputs ``[activations of layer_name, (input of
    the top-level layer ``head``, when given), model output]``."""
    import keras

    chain, layer = _find_layer(model, layer_name)
    if not chain:
        extra = [head.input] if head is not None else []
        return keras.Model(model.inputs, [layer.output, *extra, model.outputs[0]])
    nested = chain[0]
    inner = _feature_model(nested, layer_name)  # [target activations, nested output]
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype) for t in model.inputs]
    captured: dict[str, Any] = {}

    def swap(op: Any) -> Any:
        if op is nested:

            def call_nested(*args: Any, **kwargs: Any) -> Any:
                kwargs.pop("training", None)
                feats, out = inner(*args, **kwargs)
                captured["feats"] = feats
                return out

            return call_nested
        if head is not None and op is head:

            def call_head(x: Any, *args: Any, **kwargs: Any) -> Any:
                captured["head_input"] = x
                return op(x, *args, **kwargs)

            return call_head
        return op

    outputs = model._run_through_graph(inputs, operation_fn=swap)  # Keras 3 Functional graph replay
    if "feats" not in captured or (head is not None and "head_input" not in captured):
        raise ExplainError(f"could not reach layer {layer_name!r} through nested model {nested.name!r}")
    out = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    extra = [captured["head_input"]] if head is not None else []
    return keras.Model(inputs, [captured["feats"], *extra, out])


class GradCam:
    """Grad-CAM for one Keras model at one named layer, built once, reused for every call.

    Args:
        model: Keras model mapping float32 (b, H, W, C) to probabilities (b, k).
        layer_name: the layer whose activations (b, h, w, K) are used (the model card's
            ``gradcam_layer``); found at top level or inside nested models.

    Raises:
        ExplainError: the layer does not exist or its output is not a 4-D feature map.
    """

    def __init__(self, model: Any, layer_name: str) -> None:
        import keras
        import tensorflow as tf

        self.layer_name = layer_name
        last = model.layers[-1]
        dense = None
        if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax:
            dense = last  # class scores before the softmax are recomputed from its input
        sub = _feature_model(model, layer_name, head=dense)
        feats_shape = sub.outputs[0].shape
        if len(feats_shape) != 4:
            raise ExplainError(
                f"layer {layer_name!r} outputs shape {tuple(feats_shape)}, not a (b, h, w, channels) "
                "feature map; choose a convolutional layer for Grad-CAM"
            )
        self._sub = sub
        self._dense = dense
        self.num_classes = int(model.outputs[0].shape[-1])
        shape = tuple(model.inputs[0].shape[1:])
        k = self.num_classes
        # Split at the target layer when the rest of the network depends on it alone (the
        # usual pooling + dense head): the tape then records only the head, not the backbone.
        try:
            body = keras.Model(sub.inputs, sub.outputs[0])
            head = keras.Model(sub.outputs[0], sub.outputs[1:])
        except Exception:  # the head also reads earlier layers: tape the whole sub-model
            body = head = None
        self.split = body is not None
        #: the backbone up to the target layer, float32 (b, H, W, C) -> (b, h, w, K) (None when not split)
        self.body_model = body
        self._body_runner: Any = None

        def scores_of(outs: list[Any]) -> tuple[Any, Any]:
            if dense is not None:
                kernel, bias = tf.convert_to_tensor(dense.kernel), tf.convert_to_tensor(dense.bias)
                return tf.matmul(outs[0], kernel) + bias, outs[1]
            return tf.math.log(tf.maximum(outs[0], 1e-12)), outs[0]

        def taped_head(feats: Any) -> tuple[Any, Any, list[Any]]:
            """The head on ``feats`` under a persistent tape: (tape, probabilities, k class scores)."""
            with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
                tape.watch(feats)
                outs = head(feats, training=False)
                logits, probs = scores_of(list(outs) if isinstance(outs, (list, tuple)) else [outs])
                scores = [tf.reduce_sum(logits[:, c]) for c in range(k)]
            return tape, probs, scores

        def cams_of(tape: Any, scores: list[Any], feats: Any) -> Any:
            """Grad-CAM maps (b, h, w, k): ReLU of the feature maps weighted by the pooled gradients
            of each class score (Selvaraju et al. 2017, eq. 1-2); releases the tape."""
            cams = []
            for c in range(k):
                grads = tape.gradient(scores[c], feats)
                if grads is None:
                    grads = tf.zeros_like(feats)
                weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
                cams.append(tf.nn.relu(tf.reduce_sum(weights * feats, axis=-1)))
            del tape
            return tf.stack(cams, axis=-1)

        @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.float32)], reduce_retracing=True)
        def run(x: Any) -> tuple[Any, Any]:
            if body is not None:
                feats = body(x, training=False)
                tape, probs, scores = taped_head(feats)
            else:
                with tf.GradientTape(persistent=True) as tape:
                    outs = sub(x, training=False)
                    feats = outs[0]
                    tape.watch(feats)
                    logits, probs = scores_of(list(outs[1:]))
                    scores = [tf.reduce_sum(logits[:, c]) for c in range(k)]
            return probs, cams_of(tape, scores, feats)

        self._run = run
        if body is not None:
            fshape = tuple(feats_shape[1:])

            @tf.function(input_signature=[tf.TensorSpec((None, *fshape), tf.float32)], reduce_retracing=True)
            def run_head(feats: Any) -> tuple[Any, Any]:
                tape, probs, scores = taped_head(feats)
                return probs, cams_of(tape, scores, feats)

            self._run_head = run_head

    def use_body_runner(self, runner: Any) -> None:
        """Compute the backbone (``body_model``) with ``runner`` instead of TensorFlow.

        The gradients only go back through the head (from the class scores to the target layer),
        so the backbone's forward pass needs no tape and may come from a faster runtime, e.g. an
        OpenVINO runner of ``body_model`` checked against it (:meth:`core.inference.Predictor.gradcam`).

        Args:
            runner: callable float32 (n, H, W, C) -> float32 (n, h, w, K), the target layer's
                activations; None goes back to TensorFlow.

        Raises:
            ExplainError: the model is not split at the target layer (no ``body_model``).
        """
        if runner is not None and self.body_model is None:
            raise ExplainError("this Grad-CAM model is not split at its target layer; the body cannot be replaced")
        self._body_runner = runner

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and raw Grad-CAM maps for every class, in one forward pass.

        Args:
            x: float32 (n, H, W, C) preprocessed model input.

        Returns:
            ``(probabilities, cams)``: float32 (n, k), and float32 (n, h, w, k) non-negative
            maps on the target layer's grid (not yet scaled; see :func:`normalize_cam`).
        """
        x = np.asarray(x, dtype=np.float32)
        if self._body_runner is not None:
            probs, cams = self._run_head(np.asarray(self._body_runner(x), dtype=np.float32))
        else:
            probs, cams = self._run(x)
        return probs.numpy().astype(np.float32), cams.numpy().astype(np.float32)
