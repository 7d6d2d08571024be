"""The one preprocessing function: HU slices to model input, shared by training, evaluation,
the CLI and the dashboard.

Steps, in order (all parameters live in :class:`PreprocessSpec`, which a model card stores):

1. window the HU values with the spec's window into [0, 1] (:func:`core.windowing.apply_window`);
2. crop to the body: the bounding box of the largest connected region brighter than the body
   threshold, plus a margin. This removes the canvas around the patient, so image size, aspect
   ratio and the scanner table (which differ by class in IQ-OTH/NCCD, see its README) do not
   reach the model;
3. pad to square, centred, with 0 (the window floor), never stretching;
4. resize to ``size x size`` (bilinear, PIL);
5. scale: ``"unit"`` keeps [0, 1]; ``"resnet50"`` applies ``keras.applications.resnet50``'s
   ``preprocess_input`` convention (caffe: 0-255 values, BGR channel means subtracted), computed
   here in NumPy so this module does not import TensorFlow;
6. repeat to the spec's channel count (1 or 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from core.config import WINDOW_PRESETS, Window, WindowPreset
from core.windowing import apply_window

#: ImageNet BGR channel means on the 0-255 scale used by keras.applications.resnet50
#: ``preprocess_input`` ("caffe" mode; He et al. 2016 / Keras source).
_CAFFE_BGR_MEANS = np.array([103.939, 116.779, 123.68], dtype=np.float32)
SCALINGS = ("unit", "resnet50")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its input; stored in the model card as a dict (``to_dict``).

    Attributes:
        size: output height and width in pixels.
        channels: 1 (grey) or 3 (grey repeated, for ImageNet-style backbones).
        window_center: window centre in HU applied before anything else.
        window_width: window width in HU.
        scaling: ``"unit"`` ([0, 1]) or ``"resnet50"`` (caffe-style, see module docstring).
        crop_to_body: crop to the largest bright region before padding (see module docstring).
        body_threshold: windowed value in [0, 1] above which a pixel counts as body.
        margin: fraction of the body box added on each side before padding.
    """

    size: int = 224
    channels: int = 1
    window_center: float = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD].center
    window_width: float = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD].width
    scaling: str = "unit"
    crop_to_body: bool = True
    body_threshold: float = 0.05
    margin: float = 0.02

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.window_width < 1:
            raise ValueError(f"window width must be at least 1 HU, got {self.window_width}")

    @property
    def window(self) -> Window:
        """The spec's window as a :class:`core.config.Window`."""
        return Window(center=self.window_center, width=self.window_width)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Model input shape ``(size, size, channels)``."""
        return (self.size, self.size, self.channels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict for the model card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        """Build a spec from a model card's dict; unknown keys are refused.

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys in model card: {sorted(unknown)}")
        return cls(**dict(data))


def body_box(unit: np.ndarray, threshold: float = 0.05) -> tuple[int, int, int, int] | None:
    """Bounding box of the largest connected region above ``threshold``.

    Args:
        unit: float32 (y, x) windowed slice in [0, 1].
        threshold: value above which a pixel counts as foreground.

    Returns:
        ``(y0, y1, x0, x1)`` (half-open, pixels) or None when nothing is above the threshold.
    """
    # CT exports are speckled inside soft tissue: smooth first, then fill the lungs and other
    # holes, so the body is one solid region and thin structures (table, lines) are small.
    smooth = ndimage.uniform_filter(np.asarray(unit, dtype=np.float32), size=9)
    mask = smooth > threshold
    if not mask.any():
        return None
    mask = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = int(sizes.argmax())
    sl = ndimage.find_objects((labels == largest).astype(np.int32))[0]
    return sl[0].start, sl[0].stop, sl[1].start, sl[1].stop


def _square(unit: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Crop to the body (if asked) and pad to a centred square of zeros; float32 (s, s)."""
    img = unit
    if spec.crop_to_body:
        box = body_box(unit, spec.body_threshold)
        if box is not None:
            y0, y1, x0, x1 = box
            m = int(round(spec.margin * max(y1 - y0, x1 - x0)))
            y0, x0 = max(0, y0 - m), max(0, x0 - m)
            y1, x1 = min(unit.shape[0], y1 + m), min(unit.shape[1], x1 + m)
            img = unit[y0:y1, x0:x1]
    h, w = img.shape
    s = max(h, w)
    out = np.zeros((s, s), dtype=np.float32)
    top, left = (s - h) // 2, (s - w) // 2
    out[top : top + h, left : left + w] = img
    return out


def preprocess(hu: np.ndarray, spec: PreprocessSpec, window: Window | None = None) -> np.ndarray:
    """Turn slices in HU into model input.

    Args:
        hu: float (y, x) or (n, y, x) array in Hounsfield units (any size, any aspect ratio).
        spec: the model's preprocessing spec (from its model card).
        window: override of the spec's window (e.g. the radiologist's choice for DICOM);
            None uses the spec's window, which is what the model was trained on.

    Returns:
        float32 array (n, size, size, channels): [0, 1] for ``scaling="unit"``, caffe-scaled
        (about -124 to 152) for ``scaling="resnet50"``.

    Raises:
        ValueError: ``hu`` is not 2-D or 3-D, is empty, or holds non-finite values.
    """
    arr = np.asarray(hu)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"expected slices shaped (y, x) or (n, y, x), got {np.shape(hu)}")
    win = window or spec.window
    out = np.empty((arr.shape[0], spec.size, spec.size, spec.channels), dtype=np.float32)
    for i, sl in enumerate(arr):
        unit = apply_window(sl, win)
        if not np.isfinite(unit).all():
            raise ValueError("slice holds non-finite values (NaN or infinity); check the pixel data")
        sq = _square(unit, spec)
        img = Image.fromarray(sq, mode="F").resize((spec.size, spec.size), Image.Resampling.BILINEAR)
        res = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        if spec.scaling == "resnet50":
            # caffe mode: RGB->BGR is a no-op for grey; subtract the per-channel means.
            grey = res * np.float32(255.0)
            out[i] = grey[..., None] - _CAFFE_BGR_MEANS[None, None, : spec.channels]
        else:
            out[i] = res[..., None]
    return out
