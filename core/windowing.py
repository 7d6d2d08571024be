"""VOI windowing of Hounsfield units, and its inverse for 8-bit exports (JPG/PNG slices).

The order is fixed as in pydicom (``apply_modality_lut`` then ``apply_voi_lut``): pixel data is
first turned into HU by the modality LUT (``core.imaging``), then windowed here.
"""

from __future__ import annotations

import numpy as np

from core.domain import Window


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """Window HU values linearly into [0, 1].

    Follows the LINEAR VOI LUT function of DICOM PS3.3 C.11.2.1.2.1 with output range [0, 1]:
    values at or below ``c - 0.5 - (w - 1) / 2`` become 0, values above ``c - 0.5 + (w - 1) / 2``
    become 1, and in between ``((x - (c - 0.5)) / (w - 1) + 0.5)``. When ``window.floor`` is
    above 0 (an export that maps the window to [floor, 1], see :class:`core.domain.Window`),
    in-window values are ``floor + (1 - floor) * linear`` and values at or below the lower edge
    stay 0.

    Args:
        hu: array of any shape, any real dtype, in Hounsfield units.
        window: centre and width in HU, and the floor level.

    Returns:
        float32 array of the same shape, values in [0, 1].

    Raises:
        ValueError: the window width is below 1 HU (DICOM requires W >= 1).
    """
    c, w, f = float(window.center), float(window.width), float(window.floor)
    if w < 1:
        raise ValueError(f"window width must be at least 1 HU, got {w}")
    x = np.asarray(hu, dtype=np.float32)
    if w == 1:
        return (x > c - 0.5).astype(np.float32)
    out = (x - np.float32(c - 0.5)) / np.float32(w - 1) + np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    if f > 0.0:
        below = x <= np.float32(c - 0.5 - (w - 1) / 2)
        out = np.float32(f) + np.float32(1.0 - f) * out
        out[below] = 0.0
    return out.astype(np.float32, copy=False)


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

    Used for JPG/PNG slices, which carry windowed grey values, not HU. The estimate is exact only
    inside the window. Grey values below half the window's floor level are below the window: they
    come back as ``min(lower edge - 1, -1000)`` HU (mostly air and lung, which the export
    blacked out); values between half the floor and the floor (JPEG ringing at the edge) snap to
    the lower edge of the window. For every grey value ``v`` that the export can produce
    (0 and ``ceil(255 * floor)`` to 255), ``window_to_uint8(hu_from_uint8(v, w), w) == v``.

    Args:
        values: uint8 (or real) array of any shape with grey values 0-255.
        window: the window the export was made with (centre and width in HU, floor level).

    Returns:
        float32 array of the same shape, in HU.
    """
    c, w, f = float(window.center), float(window.width), float(window.floor)
    span = max(w - 1.0, 1.0)
    edge = c - 0.5 - span / 2
    u = np.asarray(values, dtype=np.float32) / np.float32(255.0)
    lin = np.clip((u - np.float32(f)) / np.float32(1.0 - f), 0.0, 1.0)
    # Just above the edge, so that the forward window maps it to the floor and not to 0.
    lin = np.maximum(lin, np.float32(1e-4)) if f > 0 else lin
    hu = (lin - np.float32(0.5)) * np.float32(span) + np.float32(c - 0.5)
    if f > 0:
        hu = np.where(u < np.float32(f / 2), np.float32(min(edge - 1.0, -1000.0)), hu)
    return hu.astype(np.float32)


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


def estimate_export_window(
    reference_hu: np.ndarray,
    grey: np.ndarray,
    centers: np.ndarray | None = None,
    widths: np.ndarray | None = None,
) -> tuple[Window, float]:
    """Estimate the window an 8-bit export was made with, by matching grey-value quantiles.

    Method: the export's floor level is the 0.5th percentile of grey values above the gap
    between black and the window (grey >= 60 of 255, scaled to [0, 1]). For every candidate
    centre/width, the reference HU values inside the window are mapped as the export would
    (``floor + (1 - floor) * linear``) and the mean absolute difference between 80 quantiles
    (1st to 99.5th percentile) of those and of the export's in-window grey values is taken; the
    smallest wins. The reference must show similar anatomy (a chest CT in HU). This is how
    ``WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]`` was set (see ``core.domain``).

    Args:
        reference_hu: float array of any shape, HU of reference CT slices.
        grey: uint8 array of any shape, grey values of the exported pictures.
        centers: candidate centres in HU (default -300 to 800 step 20).
        widths: candidate widths in HU (default 100 to 2000 step 20).

    Returns:
        ``(window, error)``: the best window (with its floor) and its mean absolute quantile
        error in grey levels (0-255).

    Raises:
        ValueError: too few in-window grey values (< 1000) to estimate from.
    """
    g = np.asarray(grey, dtype=np.float32).ravel()
    inside = g[g >= 60]
    if inside.size < 1000:
        raise ValueError("too few in-window grey values to estimate an export window (need 1000)")
    floor = float(np.percentile(inside, 0.5)) / 255.0
    q = np.linspace(0.01, 0.995, 80)
    target = np.quantile(inside, q)
    ref = np.asarray(reference_hu, dtype=np.float32).ravel()
    centers = np.arange(-300, 801, 20) if centers is None else centers
    widths = np.arange(100, 2001, 20) if widths is None else widths
    best: tuple[float, float, float] | None = None
    for c in centers:
        for w in widths:
            lo = float(c) - float(w) / 2
            r = ref[ref > lo]
            if r.size < 1000:
                continue
            y = np.clip(255.0 * (floor + (1.0 - floor) * (r - lo) / float(w)), 0, 255)
            err = float(np.mean(np.abs(np.quantile(y, q) - target)))
            if best is None or err < best[0]:
                best = (err, float(c), float(w))
    if best is None:
        raise ValueError("no candidate window leaves enough reference HU values inside it")
    return Window(center=best[1], width=best[2], floor=floor), best[0]
