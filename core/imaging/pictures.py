"""JPG/PNG slice exports -> estimated HU slices (Pillow).

Grey values become estimated HU with ``core.windowing.hu_from_uint8`` and the IQ-OTH/NCCD export
window (``WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]``), the same function the training pipeline uses.
The picture's size is read from its header and checked against ``max_pixels`` and the upload's
:class:`~core.imaging.limits.PixelBudget` before any pixel is decoded; Pillow's own decompression-bomb
guard (``Image.MAX_IMAGE_PIXELS``) stays on.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from core.domain import WINDOW_PRESETS, WindowPreset
from core.imaging.deid import base_name
from core.imaging.errors import ImageTooLargeError, ImagingError, NotAnImageError
from core.imaging.limits import PixelBudget
from core.imaging.types import Slice
from core.windowing import grey_from_picture, hu_from_uint8

__all__ = ["estimated_hu", "open_picture", "picture_slice", "read_picture"]

log = logging.getLogger("lungreview.imaging")

#: The window the IQ-OTH/NCCD-style JPG/PNG exports are assumed to carry (see core.domain).
_PICTURE_WINDOW = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]
_HU_TABLE = hu_from_uint8(np.arange(256, dtype=np.uint8), _PICTURE_WINDOW).astype(np.float32)
_SAMPLES = {"1": 1, "L": 1, "P": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "LA": 2, "PA": 2}


def open_picture(name: str, data: bytes, budget: PixelBudget | None = None) -> tuple[np.ndarray, str, list[str]] | None:
    """Decode a JPG/PNG to uint8 (y, x) or (y, x, 3|4); None when it is not a picture at all.

    Args:
        name: label for messages. data: the file's bytes.
        budget: the upload's pixel budget (default: a fresh one of ``max_upload_pixels``).

    Returns:
        (pixels uint8 (y, x) or (y, x, 3|4), "jpg" or "png", notes on conversions made).

    Raises:
        ImageTooLargeError: more pixels than ``max_pixels`` or than the budget has left (checked
            from the header, before decoding).
        NotAnImageError: a picture that is truncated/corrupt, of another format or of a mode
            LungReview does not read.
    """
    budget = budget if budget is not None else PixelBudget()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Image.DecompressionBombError:
        raise ImageTooLargeError(
            f"‘{name}’ declares more pixels than can be opened safely; reduce the image size before uploading."
        ) from None
    except Exception:
        return None
    fmt = (im.format or "").upper()
    if fmt not in ("JPEG", "PNG"):
        raise NotAnImageError(
            f"‘{name}’ is a {fmt or 'picture'} file; LungReview reads DICOM, JPG and PNG only. "
            "Convert it to PNG or upload the DICOM series."
        )
    width, height = im.size
    if width <= 0 or height <= 0:
        raise NotAnImageError(f"‘{name}’ is a {fmt} picture of no pixels; export it again.")
    budget.reserve(name, height, width, 1, _SAMPLES.get(im.mode, 3))
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im)
            arr = np.rint(np.clip(arr, 0, 65535).astype(np.float32) / 257.0).astype(np.uint8)
            notes.append("16-bit picture scaled to 8 bits (value / 257)")
        elif mode in ("L", "RGB", "RGBA"):
            arr = np.asarray(im)
        elif mode in ("1", "LA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            target = "L" if mode in ("1", "LA") else "RGB"
            arr = np.asarray(im.convert(target))
            notes.append(f"{mode} picture converted to {target}")
        else:
            raise NotAnImageError(
                f"‘{name}’ uses the picture mode {mode}, which LungReview does not read; save it as "
                "8-bit grey or RGB PNG."
            )
    except ImagingError:
        raise
    except Exception as exc:
        log.debug("picture %s could not be decoded", name, exc_info=True)
        raise NotAnImageError(
            f"‘{name}’ is a {fmt} picture that is truncated or corrupt; copy or export it again."
        ) from exc
    if arr.ndim not in (2, 3) or arr.shape[:2] != (height, width):
        raise NotAnImageError(f"‘{name}’ is a {fmt} picture that is truncated or corrupt; copy or export it again.")
    kind = "jpg" if fmt == "JPEG" else "png"
    return arr, kind, notes


def estimated_hu(grey: np.ndarray) -> np.ndarray:
    """``hu_from_uint8(grey, IQ-OTH/NCCD window)`` for uint8 ``grey`` of any shape, as float32 HU.

    Computed through a 256-entry table of ``hu_from_uint8`` itself, in blocks of 2**20 pixels (equal
    values; one pass over the pixels and no full-size float temporaries besides the result).
    """
    grey = np.asarray(grey, dtype=np.uint8)
    flat = grey.reshape(-1)
    out = np.empty(flat.shape, dtype=np.float32)
    for start in range(0, flat.size, 1 << 20):  # in blocks: the index temporaries stay small
        np.take(_HU_TABLE, flat[start : start + (1 << 20)], out=out[start : start + (1 << 20)])
    return out.reshape(grey.shape)


def picture_slice(name: str, arr: np.ndarray) -> Slice:
    """Slice of a decoded picture: ``hu`` float32 (y, x) = ``hu_from_uint8(grey, IQ-OTH/NCCD window)``,
    grey = BT.601 luma for colour pictures (``core.windowing.grey_from_picture``)."""
    return Slice(hu=np.ascontiguousarray(estimated_hu(grey_from_picture(arr))), source=base_name(name))


def read_picture(path_or_bytes: str | Path | bytes, name: str | None = None) -> Slice:
    """Read one JPG/PNG slice export.

    Grey values become estimated HU with ``core.windowing.hu_from_picture`` semantics: RGB is
    converted to grey (BT.601 luma), then ``hu_from_uint8(grey, WINDOW_PRESETS[IQ_OTHNCCD])``, the
    same function the training pipeline uses, so ``window_to_uint8(slice.hu, IQ window)`` gives
    back the grey values exactly. 16-bit PNGs are first scaled to 8 bits (value / 257).

    Args:
        path_or_bytes: a file path, or the file's bytes.
        name: the name to report (default: the path's base name, or "picture").

    Returns:
        Slice with ``hu`` float32 (y, x), ``windows=()``, no UID or position.

    Raises:
        ImageTooLargeError: more pixels than ``get_settings().max_pixels``.
        NotAnImageError: not a JPG/PNG, or truncated/corrupt.
    """
    if isinstance(path_or_bytes, bytes):
        data, label = path_or_bytes, name or "picture"
    else:
        path = Path(path_or_bytes)
        data, label = path.read_bytes(), name or path.name
    opened = open_picture(label, data)
    if opened is None:
        raise NotAnImageError(f"‘{label}’ is not a JPG or PNG picture; upload a JPG, PNG or DICOM file.")
    arr, _, _ = opened
    return picture_slice(label, arr)
