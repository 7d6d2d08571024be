"""VOI windowing of Hounsfield units, and its inverse for 8-bit exports (JPG/PNG slices).

The order is fixed as in pydicom (``apply_modality_lut`` then ``apply_voi_lut``): pixel data is
first turned into HU by the modality LUT (``core.imaging``), then windowed here.
"""

from __future__ import annotations

import numpy as np

from core.config import Window


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """Window HU values linearly into [0, 1].

    Follows the LINEAR VOI LUT function of DICOM PS3.3 C.11.2.1.2.1 with output range [0, 1]:
    values at or below ``c - 0.5 - (w - 1) / 2`` become 0, values above ``c - 0.5 + (w - 1) / 2``
    become 1, and in between ``((x - (c - 0.5)) / (w - 1) + 0.5)``.

    Args:
        hu: array of any shape, any real dtype, in Hounsfield units.
        window: centre and width in HU.

    Returns:
        float32 array of the same shape, values in [0, 1].

    Raises:
        ValueError: the window width is below 1 HU (DICOM requires W >= 1).
    """
    c, w = float(window.center), float(window.width)
    if w < 1:
        raise ValueError(f"window width must be at least 1 HU, got {w}")
    x = np.asarray(hu, dtype=np.float32)
    if w == 1:
        return (x > c - 0.5).astype(np.float32)
    out = (x - np.float32(c - 0.5)) / np.float32(w - 1) + np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (e.g. from :func:`apply_window`) to a uint8 view, 0-255, rounded.

    Args:
        unit: array of any shape with values in [0, 1] (values outside are clipped).

    Returns:
        uint8 array of the same shape.
    """
    return np.rint(np.clip(np.asarray(unit, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def window_to_uint8(hu: np.ndarray, window: Window) -> np.ndarray:
    """Window HU values and return the 8-bit display view (``to_uint8(apply_window(hu, window))``).

    Args:
        hu: array of any shape in HU.
        window: centre and width in HU.

    Returns:
        uint8 array of the same shape, 0 (at or below the window floor) to 255.
    """
    return to_uint8(apply_window(hu, window))


def hu_from_uint8(values: np.ndarray, window: Window) -> np.ndarray:
    """Invert :func:`apply_window` for an 8-bit export made with ``window``: estimated HU.

    Used for JPG/PNG slices, which carry windowed grey values, not HU. Values that the export
    clipped (0 and 255) come back as the window's floor and ceiling, so the estimate is exact only
    inside the window. ``window_to_uint8(hu_from_uint8(v, w), w) == v`` for every uint8 ``v``.

    Args:
        values: uint8 (or real) array of any shape with grey values 0-255.
        window: the window the export was made with (centre and width in HU).

    Returns:
        float32 array of the same shape, in HU.
    """
    c, w = float(window.center), float(window.width)
    v = np.asarray(values, dtype=np.float32) / np.float32(255.0)
    return ((v - np.float32(0.5)) * np.float32(max(w - 1.0, 1.0)) + np.float32(c - 0.5)).astype(np.float32)


def grey_from_picture(pixels: np.ndarray) -> np.ndarray:
    """Grey values of an 8-bit picture (JPG/PNG decoded by Pillow): uint8 (y, x).

    Args:
        pixels: uint8 (y, x) grey, (y, x, 3) RGB or (y, x, 4) RGBA array.

    Returns:
        uint8 (y, x). RGB is converted with the ITU-R BT.601 luma weights
        (0.299 R + 0.587 G + 0.114 B, as Pillow's ``convert("L")``); alpha is ignored.

    Raises:
        ValueError: the array is not 2-D grey or 3-D with 3 or 4 channels.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        return arr.astype(np.uint8, copy=False)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3].astype(np.float32)
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    raise ValueError(f"expected a grey (y, x) or colour (y, x, 3|4) picture, got shape {arr.shape}")


def hu_from_picture(pixels: np.ndarray, window: Window) -> np.ndarray:
    """Estimated HU of an 8-bit CT export (JPG/PNG): grey conversion, then :func:`hu_from_uint8`.

    The reader of JPG/PNG slices (``core.imaging``) and the training pipeline both use this, so a
    picture reaches the model the same way whichever path read it.

    Args:
        pixels: uint8 (y, x), (y, x, 3) or (y, x, 4) array.
        window: the window the export was made with (for IQ-OTH/NCCD:
            ``WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]``).

    Returns:
        float32 (y, x) in HU (estimated; exact only inside the window).

    Raises:
        ValueError: see :func:`grey_from_picture`.
    """
    return hu_from_uint8(grey_from_picture(pixels), window)
