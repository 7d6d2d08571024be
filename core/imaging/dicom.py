"""DICOM decoding: bytes of one Part 10 file -> HU slices and the plain values assembly needs.

1. The bytes are parsed once with ``pydicom.dcmread(..., force=False)``. A file without the DICOM
   preamble is parsed again with ``force=True`` only when its first bytes look like a DICOM data
   element of group 0002 or 0008 (PS3.10 7.1: files without the preamble exist in practice), and it
   is accepted only if it holds SOPClassUID or PixelData. The parse reads at most
   :data:`MAX_ELEMENT_READS` times from the file and the header (everything but the pixel data) may
   be at most :data:`MAX_HEADER_BYTES`, so a file that is a flood of empty elements is refused in
   about a second instead of taking minutes and gigabytes.
2. Before any pixel is decoded, the image size is checked and reserved from the upload's
   :class:`~core.imaging.limits.PixelBudget`, the bits, samples and (for uncompressed data) the length
   of the pixel data are checked against the header.
3. Uncompressed little-endian grey pixel data (almost every CT file) is read with NumPy directly
   (:func:`_native_pixels`, the same array as pydicom's native decoder); everything else is decoded
   by pydicom's decoders (RLE natively; JPEG baseline/extended/lossless, JPEG-LS and JPEG 2000
   through pylibjpeg-libjpeg / pylibjpeg-openjpeg or Pillow). The values are turned into Hounsfield
   units by the modality LUT (``pydicom.pixels.apply_modality_lut``: Rescale Slope/Intercept or the
   Modality LUT Sequence, PS3.3 C.11.1; the common slope 1 / integer intercept case in float32,
   :func:`_rescale_float32`, bit for bit the same). Windowing comes after, in :mod:`core.windowing`
   (the order of PS3.4 N.2.1). Every slice is checked to be 2-D, of the declared size and finite.
   pydicom's value validation (warnings only) is off while a file is read
   (:func:`_without_value_validation`).
4. Every other value assembly needs (UIDs, series number, technical metadata) is read here, each
   element on its own: an element that cannot be read (a damaged value representation, a value of
   the wrong type) makes that value unknown, never an exception later.
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from core.config import Window
from core.imaging.deid import base_name, deidentified_description, year_of
from core.imaging.errors import (
    ImagingError,
    NoPixelDataError,
    NotAnImageError,
    UnsupportedTransferSyntaxError,
)
from core.imaging.limits import PixelBudget
from core.imaging.pictures import estimated_hu
from core.imaging.types import Slice
from core.windowing import grey_from_picture

__all__ = ["MAX_ELEMENT_READS", "MAX_HEADER_BYTES", "DicomInstance", "read_dicom", "slice_position"]

log = logging.getLogger("lungreview.imaging")

#: Most ``read()`` calls one parse may make (pydicom reads 1-3 times per data element). A CT slice
#: needs a few hundred, an enhanced multi-frame object with 1000 frames some tens of thousands;
#: 200,000 (about half a second of parsing on an idle core) stops a file of millions of empty elements early.
MAX_ELEMENT_READS = 200_000
#: Most bytes of a DICOM file outside its pixel data (4 MiB; CT headers are 2-100 KB). Sequences of
#: defined length are parsed when first used, so their size is bounded by this, not by the count above.
MAX_HEADER_BYTES = 4 << 20

#: Plugin that decodes each compressed transfer syntax (pydicom 3 "pixel data decoders" table).
_PLUGIN_FOR_SYNTAX = {
    pydicom.uid.JPEGBaseline8Bit: "pylibjpeg-libjpeg (or Pillow)",
    pydicom.uid.JPEGExtended12Bit: "pylibjpeg-libjpeg (or Pillow)",
    pydicom.uid.JPEGLossless: "pylibjpeg-libjpeg",
    pydicom.uid.JPEGLosslessSV1: "pylibjpeg-libjpeg",
    pydicom.uid.JPEGLSLossless: "pylibjpeg-libjpeg",
    pydicom.uid.JPEGLSNearLossless: "pylibjpeg-libjpeg",
    pydicom.uid.JPEG2000Lossless: "pylibjpeg-openjpeg",
    pydicom.uid.JPEG2000: "pylibjpeg-openjpeg",
    pydicom.uid.HTJ2KLossless: "pylibjpeg-openjpeg",
    pydicom.uid.HTJ2KLosslessRPCL: "pylibjpeg-openjpeg",
    pydicom.uid.HTJ2K: "pylibjpeg-openjpeg",
    pydicom.uid.RLELossless: "pydicom (built in)",
}
_NO_PLUGIN = "none available to LungReview"


_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_TAGS = tuple(
    struct.pack(order, 0x7FE0, element) for order in ("<HH", ">HH") for element in (0x0010, 0x0008, 0x0009)
)
#: Attributes of the Image Pixel module (PS3.3 C.7.6.3): a file that has them is an image.
_IMAGE_KEYWORDS = ("Rows", "Columns", "BitsAllocated")
#: Modalities whose objects are images (PS3.3 C.7.3.1.1.1); SR, PR, KO, RTPLAN ... are not.
_IMAGE_MODALITIES = frozenset({"CT", "MR", "PT", "NM", "CR", "DX", "MG", "US", "XA", "RF", "OT", "SC", "IO", "PX"})
#: Explicit VRs (PS3.5 6.2): the two bytes after a tag in a file without preamble must be one of them.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)


class _TooManyElements(Exception):
    """Raised from inside pydicom's parser when a file asks for too many reads."""


class _BoundedReader(io.BytesIO):
    """A BytesIO that refuses more than ``max_reads`` calls to ``read``."""

    def __init__(self, data: bytes, max_reads: int) -> None:
        super().__init__(data)
        self._reads_left = max_reads

    def read(self, size: int | None = -1) -> bytes:
        self._reads_left -= 1
        if self._reads_left < 0:
            raise _TooManyElements
        return super().read(size)


@dataclass
class DicomInstance:
    """One decoded DICOM file (internal to the package: holds raw UIDs).

    Attributes:
        name: the file's label. digest: sha256 hex of its bytes.
        study_uid, series_uid: StudyInstanceUID / SeriesInstanceUID ("" when missing or unreadable).
        slices: its frames as slices, in frame order.
        estimated: True when the HU are estimated from a colour capture.
        fields: series-level values, keys of ``core.imaging.METADATA_KEYS`` (without rows, columns,
            number_of_slices and notes), each None when unknown.
        notes: remarks on how the file was read (e.g. MONOCHROME1 handling).
    """

    name: str
    digest: str
    study_uid: str
    series_uid: str
    slices: list[Slice]
    estimated: bool
    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------- reading single values
def _get(ds: Dataset | None, keyword: str) -> Any:
    """``ds.get(keyword)`` that never raises: an element that cannot be read is None (unknown)."""
    if ds is None:
        return None
    try:
        return ds.get(keyword)
    except Exception:  # unknown VR, undecodable value: pydicom converts lazily on access
        return None


def _text(ds: Dataset | None, keyword: str) -> str | None:
    try:
        value = _get(ds, keyword)
        if isinstance(value, pydicom.multival.MultiValue):
            value = "\\".join(str(v) for v in value)
        text = str(value).strip() if value not in (None, "") else ""
    except Exception:
        return None
    return text or None


def _float_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            vals = [float(v) for v in value]
        else:
            vals = [float(value)]
    except Exception:
        return None
    return vals if vals and all(np.isfinite(vals)) else None


def _floats(ds: Dataset | None, keyword: str) -> list[float] | None:
    return _float_list(_get(ds, keyword))


def _first_float(ds: Dataset | None, keyword: str) -> float | None:
    vals = _floats(ds, keyword)
    return vals[0] if vals else None


def _int(ds: Dataset | None, keyword: str) -> int | None:
    value = _get(ds, keyword)
    try:
        return int(value) if value not in (None, "") else None
    except Exception:
        return None


def slice_position(position: Sequence[float] | None, orientation: Sequence[float] | None) -> float | None:
    """Position of a slice along its normal, in mm.

    ``dot(ImagePositionPatient, row_cosines x column_cosines)``: the normal is the cross product of
    the row and column direction cosines of ImageOrientationPatient (PS3.3 C.7.6.2.1.1).

    Args:
        position: ImagePositionPatient (x, y, z) in mm, or None.
        orientation: ImageOrientationPatient (6 direction cosines), or None.

    Returns:
        The position in mm, or None when either attribute is missing, malformed or not finite.
        Without an orientation, axial (normal = +z) is NOT assumed: the caller falls back to
        InstanceNumber.
    """
    p_vals, o_vals = _float_list(position), _float_list(orientation)
    if p_vals is None or o_vals is None or len(p_vals) != 3 or len(o_vals) != 6:
        return None
    p, o = np.asarray(p_vals, dtype=np.float64), np.asarray(o_vals, dtype=np.float64)
    normal = np.cross(o[:3], o[3:])
    if not np.any(normal):
        return None
    value = float(p @ normal)
    return value if np.isfinite(value) else None


def _image_position(position: Any) -> tuple[float, float, float] | None:
    """ImagePositionPatient (x, y, z) in mm (PS3.3 C.7.6.2.1.1: the centre of the first
    transmitted pixel) as a tuple of three finite floats, or None when missing or malformed."""
    vals = _float_list(position)
    if vals is None or len(vals) != 3:
        return None
    return (vals[0], vals[1], vals[2])


def _shift_along_normal(
    corner: tuple[float, float, float] | None, orientation: Any, distance: float
) -> tuple[float, float, float] | None:
    """``corner`` moved ``distance`` mm along the slice normal of ``orientation`` (None if unknown)."""
    o_vals = _float_list(orientation)
    if corner is None or o_vals is None or len(o_vals) != 6:
        return None
    normal = np.cross(np.asarray(o_vals[:3]), np.asarray(o_vals[3:]))
    norm = float(np.linalg.norm(normal))
    if norm == 0.0:
        return None
    p = np.asarray(corner, dtype=np.float64) + normal / norm * distance
    return (float(p[0]), float(p[1]), float(p[2]))


def _windows_of(ds: Dataset | None) -> list[Window]:
    """WindowCenter/WindowWidth pairs of a dataset (multi-valued too), invalid widths dropped."""
    centres, widths = _floats(ds, "WindowCenter"), _floats(ds, "WindowWidth")
    if not centres or not widths:
        return []
    return [Window(center=c, width=w) for c, w in zip(centres, widths, strict=False) if w >= 1]


def _group_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """First item of a functional-group ``sequence`` for ``frame`` (per-frame, else shared); None when
    absent or unreadable (PS3.3 C.7.6.16)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        try:
            seq = ds.get(groups)
            if seq is not None and len(seq) > index:
                inner = seq[index].get(sequence)
                if inner:
                    return inner[0]
        except Exception:
            continue
    return None


def _transfer_syntax(ds: Dataset) -> pydicom.uid.UID | None:
    try:
        tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        return pydicom.uid.UID(str(tsyntax)) if tsyntax else None
    except Exception:
        return None


# --------------------------------------------------------------------------------- parsing
def _looks_like_dicom_without_preamble(data: bytes) -> bool:
    """True when ``data`` starts like a little-endian DICOM data set of group 0002 or 0008.

    A file without the 128-byte preamble and "DICM" (PS3.10 7.1) almost always starts with the file
    meta group (0002) or the identifying group (0008), explicit VR (two letters after the tag) or
    implicit VR (a 4-byte length that fits in the file). Anything else, e.g. zeros, is not DICOM, and
    is not given to the slow forced parse.
    """
    if len(data) < 8:
        return False
    group = int.from_bytes(data[0:2], "little")
    if group not in (0x0002, 0x0008):
        return False
    if data[4:6] in _VRS:
        return True
    return int.from_bytes(data[4:8], "little") <= len(data) - 8


def _dcmread(data: bytes, force: bool) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(_BoundedReader(data, MAX_ELEMENT_READS), force=force)


def _too_many_elements(name: str) -> NotAnImageError:
    return NotAnImageError(
        f"‘{name}’ is not a usable DICOM file: its header holds far more data elements than any image "
        "does (it is damaged or not an image); export the series again."
    )


def _header_bytes_before_parsing(data: bytes) -> int:
    """Bytes before the first pixel data tag (7FE0,0010/0008/0009, either byte order), else all: an
    upper bound of the header's size found without parsing (a tag-like pattern earlier in the header
    only makes it smaller)."""
    first = len(data)
    for tag in _PIXEL_TAGS:  # each search stops at the earliest tag found so far
        i = data.find(tag, 0, first + len(tag) - 1)
        if 0 <= i < first:
            first = i
    return first


def _parse_dicom(name: str, data: bytes) -> Dataset | None:
    """Parse bytes as DICOM (pixel data not yet decoded); None when it is not DICOM.

    Raises:
        NotAnImageError: the file has the DICOM preamble but is truncated or corrupt, or its header
            is implausibly large (over :data:`MAX_HEADER_BYTES`, checked before parsing, or over
            :data:`MAX_ELEMENT_READS` reads).
    """
    has_preamble = data[128:132] == b"DICM"
    if has_preamble and _header_bytes_before_parsing(data) > MAX_HEADER_BYTES:
        raise _too_many_elements(name)
    try:
        return _dcmread(data, force=False)
    except _TooManyElements:
        raise _too_many_elements(name) from None
    except InvalidDicomError:
        if has_preamble:
            raise NotAnImageError(
                f"‘{name}’ looks like DICOM but its header is damaged; export the series again."
            ) from None
    except Exception as exc:
        if has_preamble:
            log.debug("DICOM parse of %s failed", name, exc_info=True)
            raise NotAnImageError(
                f"‘{name}’ is a DICOM file that is truncated or corrupt; copy or export it again."
            ) from exc
        return None
    if not _looks_like_dicom_without_preamble(data):
        return None
    if _header_bytes_before_parsing(data) > MAX_HEADER_BYTES:
        raise _too_many_elements(name)
    try:
        ds = _dcmread(data, force=True)
        ok = "SOPClassUID" in ds or "PixelData" in ds
    except Exception:
        return None
    return ds if ok else None


# ------------------------------------------------------------------------------ checks
def _check_decoder(name: str, tsyntax: pydicom.uid.UID | None) -> None:
    """Raise UnsupportedTransferSyntaxError when no installed plugin decodes the pixel data."""
    if tsyntax is None:
        return
    if not tsyntax.is_transfer_syntax:  # private or newer than pydicom (e.g. JPEG XL)
        raise UnsupportedTransferSyntaxError(
            f"‘{name}’ uses the transfer syntax {tsyntax}, which LungReview does not know; export the "
            "series uncompressed (Explicit VR Little Endian) and upload it again.",
            transfer_syntax=str(tsyntax),
            plugin=_NO_PLUGIN,
        )
    if not tsyntax.is_compressed:
        return
    plugin = _PLUGIN_FOR_SYNTAX.get(tsyntax, _NO_PLUGIN)
    try:
        available = pydicom.pixels.get_decoder(tsyntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        what = (
            f"install {plugin}"
            if plugin != _NO_PLUGIN
            else "convert it to an uncompressed, JPEG or JPEG 2000 transfer syntax (e.g. dcmtk dcmconv +te)"
        )
        raise UnsupportedTransferSyntaxError(
            f"‘{name}’ is compressed as ‘{tsyntax.name}’, which LungReview cannot decode; {what}, "
            "or export the series uncompressed.",
            transfer_syntax=tsyntax.name,
            plugin=plugin,
        )


def _damaged(name: str, what: str) -> NotAnImageError:
    return NotAnImageError(f"‘{name}’ is a damaged DICOM image: {what}. Copy or export the series again.")


def _image_geometry(name: str, ds: Dataset, tsyntax: pydicom.uid.UID | None) -> tuple[int, int, int, int]:
    """(rows, columns, frames, samples per pixel) from the header, checked before decoding.

    Raises:
        NotAnImageError: a size is missing, not positive, or disagrees with the pixel data's length
            (uncompressed data, PS3.5 8.1.1); 1-bit data (a segmentation, not CT).
    """
    rows, cols, samples = _int(ds, "Rows"), _int(ds, "Columns"), _int(ds, "SamplesPerPixel") or 1
    frames_raw = _get(ds, "NumberOfFrames")
    frames = _int(ds, "NumberOfFrames") if frames_raw not in (None, "") else 1
    if not rows or not cols or rows < 0 or cols < 0 or not frames or frames < 0:
        raise NotAnImageError(
            f"‘{name}’ is DICOM but its image size (Rows, Columns, Number of Frames) is missing or "
            "invalid; export the series again."
        )
    if samples not in (1, 3):
        raise _damaged(name, f"it declares {samples} samples per pixel (1 for grey, 3 for colour)")
    if "PixelData" not in ds:
        return rows, cols, frames, samples
    bits = _int(ds, "BitsAllocated")
    if bits == 1:
        raise NotAnImageError(
            f"‘{name}’ holds 1-bit pixel data (a segmentation or overlay), not a CT image; upload the "
            "image series instead."
        )
    if bits not in (8, 16, 32, 64):
        raise _damaged(name, f"its Bits Allocated is {'missing' if bits is None else bits} (8, 16 or 32 expected)")
    if tsyntax is not None and tsyntax.is_compressed:
        return rows, cols, frames, samples
    try:
        length = len(ds.PixelData)
    except Exception:
        raise _damaged(name, "its pixel data cannot be read") from None
    frame_bytes = rows * cols * samples * bits // 8
    if length < frame_bytes * frames:
        raise _damaged(
            name,
            f"its pixel data is shorter ({length:,} bytes) than its {cols} x {rows} image size needs "
            f"({frame_bytes * frames:,} bytes); it is truncated",
        )
    if length >= frame_bytes * (frames + 1):
        raise _damaged(
            name,
            f"it holds {length:,} bytes of pixel data, more than {frames} image(s) of {cols} x {rows} "
            "(its Number of Frames or image size is wrong)",
        )
    return rows, cols, frames, samples


def _is_image_object(ds: Dataset) -> bool:
    """True when the header says "image": Image Pixel attributes (PS3.3 C.7.6.3), an image or dose
    storage SOP class (PS3.4 B.5), or an imaging modality; a file cut short keeps these."""
    if any(k in ds for k in _IMAGE_KEYWORDS):
        return True
    for sop in (_text(ds, "SOPClassUID"), _text(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID")):
        name = pydicom.uid.UID(sop).name if sop else ""
        if "Image" in name or "Dose" in name:
            return True
    return (_text(ds, "Modality") or "").upper() in _IMAGE_MODALITIES


def _no_pixel_data(name: str, ds: Dataset) -> ImagingError:
    """The error for a DICOM file without pixel data: a truncated image, or a non-image object."""
    kind = _text(ds, "Modality")
    if _is_image_object(ds) or (kind is None and _text(ds, "SOPClassUID") is None):
        return NotAnImageError(
            f"‘{name}’ is a DICOM image whose pixel data is missing: the file is truncated or damaged. "
            "Copy or export the series again."
        )
    return NoPixelDataError(
        f"‘{name}’ is DICOM but holds no pixel data (modality {kind}; it may be a structured report or "
        "presentation state); upload the image series instead."
        if kind
        else f"‘{name}’ is DICOM but holds no pixel data (it may be a structured report or presentation "
        "state); upload the image series instead."
    )


#: Uncompressed little-endian transfer syntaxes (PS3.5 A.1, A.2, A.5: the deflated one is inflated
#: by the parser), whose native grey pixel data :func:`_native_pixels` reads directly.
_NATIVE_LITTLE_ENDIAN = frozenset(
    {pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.DeflatedExplicitVRLittleEndian}
)


def _native_pixels(ds: Dataset, tsyntax: pydicom.uid.UID | None, rows: int, cols: int, frames: int) -> np.ndarray | None:
    """Uncompressed little-endian grey pixel data as ``ds.pixel_array`` gives it, without pydicom's
    decoder machinery (about 1 ms per 512 x 512 slice); None when the data is not of that simple kind.

    Handles one sample per pixel, MONOCHROME1/2, Bits Allocated 8/16/32, Pixel Representation 0/1,
    ``PixelData`` stored as bytes (not float pixel data, no palette, no big-endian). Like pydicom 3's
    native decoder (option ``correct_unused_bits``), when Bits Stored < Bits Allocated the unused high
    bits are cleared (unsigned) or filled with the sign bit (signed): PS3.5 8.1.1. The result is the
    same array as pydicom's (tested): (rows, cols) for one frame, else (frames, rows, cols); it may be
    a read-only view of the file's bytes.
    """
    if tsyntax not in _NATIVE_LITTLE_ENDIAN or "PixelData" not in ds:
        return None
    if (_int(ds, "SamplesPerPixel") or 1) != 1:
        return None
    if (_text(ds, "PhotometricInterpretation") or "").upper() not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    bits, stored, rep = _int(ds, "BitsAllocated"), _int(ds, "BitsStored"), _int(ds, "PixelRepresentation")
    if bits not in (8, 16, 32) or rep not in (0, 1) or stored is None or not 1 <= stored <= bits:
        return None
    try:
        raw = ds.PixelData
    except Exception:
        return None
    count = rows * cols * frames
    if not isinstance(raw, bytes) or len(raw) < count * (bits // 8):
        return None
    dtype = np.dtype(f"<{'i' if rep else 'u'}{bits // 8}")
    arr = np.frombuffer(raw, dtype=dtype, count=count)
    if stored < bits and rep == 0:  # (x << s) >> s on unsigned values keeps the low bits
        arr = np.bitwise_and(arr, dtype.type((1 << stored) - 1))
    elif stored < bits:
        shift = bits - stored
        arr = np.right_shift(np.left_shift(arr, shift), shift)
    return arr.reshape((rows, cols) if frames == 1 else (frames, rows, cols))


def _decode(name: str, ds: Dataset, tsyntax: pydicom.uid.UID | None) -> np.ndarray:
    """``ds.pixel_array``, with every failure turned into a plain ImagingError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except MemoryError:
        raise _damaged(name, "its pixel data would not fit in memory") from None
    except Exception as exc:
        log.debug("pixel data of %s could not be decoded", name, exc_info=True)
        if tsyntax is not None and tsyntax.is_compressed:
            # _check_decoder found a decoder for this syntax: it was there and it failed
            raise NotAnImageError(
                f"‘{name}’ has damaged compressed pixel data (‘{tsyntax.name}’): LungReview's decoder "
                "for it could not read it. Copy or export the series again; if the file opens in "
                "your PACS viewer, export it uncompressed (Explicit VR Little Endian)."
            ) from exc
        raise _damaged(name, "its pixel data could not be decoded") from exc


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = _int(ds, "BitsStored") or _int(ds, "BitsAllocated") or 16
    bits = min(max(bits, 1), 32)
    if _int(ds, "PixelRepresentation") == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _modality_lut(arr: np.ndarray, ds: Dataset, frame_item: Dataset | None) -> np.ndarray:
    """Stored values -> modality values (HU for CT), float32; ``arr`` is one frame (y, x).

    Uses ``pydicom.pixels.apply_modality_lut`` (PS3.3 C.11.1); for enhanced multi-frame objects
    the Pixel Value Transformation Sequence of the frame's functional groups (C.7.6.16.2.9).
    """
    source = frame_item if frame_item is not None else ds
    fast = _rescale_float32(arr, source)
    if fast is not None:
        return fast
    return np.asarray(apply_modality_lut(arr, source), dtype=np.float32)


def _rescale_float32(arr: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """The common case of :func:`_modality_lut` in float32, bit for bit what pydicom gives after
    the cast; None when the case is not covered (the caller then uses pydicom).

    Covered: no Modality LUT Sequence, Rescale Slope exactly 1 and an integer Rescale Intercept of
    magnitude below 2**23, on integer data of at most 16 bits. Then every ``x + intercept`` is an
    integer below 2**24 in magnitude, exact in float32, so computing it in float32 gives what
    pydicom's float64 ``x * 1.0 + intercept`` gives after rounding to float32 (one pass, no float64
    temporaries). Without Rescale Slope and Intercept the values are cast unchanged, as in pydicom.
    """
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize > 2:
        return None
    try:
        if "ModalityLUTSequence" in ds:
            return None
        has_slope, has_intercept = "RescaleSlope" in ds, "RescaleIntercept" in ds
        if not has_slope or not has_intercept:
            return arr.astype(np.float32)
        slope, intercept = ds.RescaleSlope, ds.RescaleIntercept
        if isinstance(slope, (list, tuple, pydicom.multival.MultiValue, str, bytes)) or isinstance(
            intercept, (list, tuple, pydicom.multival.MultiValue, str, bytes)
        ):
            return None
        slope, intercept = float(slope), float(intercept)
    except Exception:
        return None
    if slope != 1.0 or not intercept.is_integer() or abs(intercept) >= 2**23:
        return None
    out = arr.astype(np.float32)
    if intercept:
        out += np.float32(intercept)
    return out


def _series_fields(ds: Dataset, tsyntax: pydicom.uid.UID | None) -> dict[str, Any]:
    """The series-level metadata of one file; every value read on its own, None when unreadable."""
    spacing = _floats(ds, "PixelSpacing")
    if spacing is None:
        spacing = _floats(_group_item(ds, 0, "PixelMeasuresSequence"), "PixelSpacing")
    orientation = _floats(ds, "ImageOrientationPatient")
    if orientation is None:
        orientation = _floats(_group_item(ds, 0, "PlaneOrientationSequence"), "ImageOrientationPatient")
    return {
        "modality": _text(ds, "Modality"),
        "body_part_examined": _text(ds, "BodyPartExamined"),
        "slice_thickness_mm": _first_float(ds, "SliceThickness"),
        "pixel_spacing_mm": spacing,
        "spacing_between_slices_mm": _first_float(ds, "SpacingBetweenSlices"),
        "convolution_kernel": _text(ds, "ConvolutionKernel"),
        "manufacturer": _text(ds, "Manufacturer"),
        "model_name": _text(ds, "ManufacturerModelName"),
        "kvp": _first_float(ds, "KVP"),
        "study_year": year_of(_text(ds, "StudyDate")),
        "series_year": year_of(_text(ds, "SeriesDate")),
        "acquisition_year": year_of(_text(ds, "AcquisitionDate")),
        "series_number": _int(ds, "SeriesNumber"),
        "series_description": deidentified_description(
            _text(ds, "SeriesDescription"), _text(ds, "PatientName"), _text(ds, "PatientID")
        ),
        "transfer_syntax": tsyntax.name if tsyntax is not None and tsyntax.is_transfer_syntax else None,
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        # Row and column direction cosines (PS3.3 C.7.6.2.1.1): lets the OOD guard check "axial".
        "image_orientation_patient": orientation if orientation is not None and len(orientation) == 6 else None,
    }


# ------------------------------------------------------------------------------- decoding
_validation_lock = threading.Lock()
_validation_users = 0
_validation_saved: Any = None


@contextlib.contextmanager
def _without_value_validation() -> Iterator[None]:
    """Turn off pydicom's validation of element values while files are read, then restore it.

    pydicom checks every value it converts against its VR (regular expressions, lengths) and, in
    its default ``WARN`` mode, only warns: the values are the same with ``IGNORE``. Those checks
    took about a third of the time of parsing a CT header and reading its values; LungReview's
    own checks (sizes, finite numbers, types) decide what is usable. pydicom's setting is global,
    so it is switched once for all threads reading at the same time (a counter under a lock) and
    restored when the last one finishes; code reading DICOM elsewhere meanwhile only misses
    warnings.
    """
    global _validation_users, _validation_saved
    settings = pydicom.config.settings
    with _validation_lock:
        if _validation_users == 0:
            _validation_saved = settings.reading_validation_mode
            settings.reading_validation_mode = pydicom.config.IGNORE
        _validation_users += 1
    try:
        yield
    finally:
        with _validation_lock:
            _validation_users -= 1
            if _validation_users == 0:
                settings.reading_validation_mode = _validation_saved


def read_dicom(name: str, data: bytes, digest: str, budget: PixelBudget) -> DicomInstance | None:
    """Decode one DICOM file into HU slices; None when the bytes are not DICOM at all.

    Args:
        name: the file's label (for messages; slices keep only its base name).
        data: the file's bytes. digest: their sha256 hex.
        budget: the upload's pixel budget; the file's pixels are reserved before decoding.

    Returns:
        DicomInstance whose slices each hold ``hu`` float32 (rows, columns), finite, in HU (modality
        LUT applied, PS3.3 C.11.1; MONOCHROME1 non-CT reflected so that higher = denser; colour
        captures converted to grey and estimated HU).

    Raises:
        NoPixelDataError: DICOM without an image (structured report, DICOMDIR, ...).
        UnsupportedTransferSyntaxError: compressed with a syntax no installed decoder reads.
        ImageTooLargeError: over ``max_pixels`` per image or over the upload's pixel budget.
        NotAnImageError: truncated or damaged (header, sizes, pixel data, non-finite HU).
    """
    with _without_value_validation():
        return _read_dicom(name, data, digest, budget)


def _read_dicom(name: str, data: bytes, digest: str, budget: PixelBudget) -> DicomInstance | None:
    """:func:`read_dicom` with pydicom's value validation off."""
    ds = _parse_dicom(name, data)
    if ds is None:
        return None
    try:
        header_bytes = len(data) - max((len(ds.get_item(k).value or b"") for k in _PIXEL_KEYWORDS if k in ds), default=0)
    except Exception:
        header_bytes = len(data)
    if header_bytes > MAX_HEADER_BYTES:
        raise _too_many_elements(name)
    sop_class = _text(ds, "SOPClassUID") or _text(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID")
    if sop_class == _DICOMDIR_SOP_CLASS:
        raise NoPixelDataError(
            f"‘{name}’ is a DICOMDIR (an index of files), not an image; upload the image files or the "
            "whole folder as a ZIP instead."
        )
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise _no_pixel_data(name, ds)
    tsyntax = _transfer_syntax(ds)
    _check_decoder(name, tsyntax)
    rows, cols, frames, samples = _image_geometry(name, ds, tsyntax)
    budget.reserve(name, rows, cols, frames, samples)
    pixels = _native_pixels(ds, tsyntax, rows, cols, frames)
    if pixels is None:
        pixels = _decode(name, ds, tsyntax)

    photometric = (_text(ds, "PhotometricInterpretation") or "MONOCHROME2").upper()
    colour = samples > 1 or photometric == "PALETTE COLOR"
    if photometric == "PALETTE COLOR":
        try:
            pixels = pydicom.pixels.apply_color_lut(pixels, ds)
        except Exception:
            raise _damaged(name, "its colour palette cannot be applied") from None
    expected = (frames, rows, cols, 3) if colour else (frames, rows, cols)
    if frames == 1:
        pixels = pixels[np.newaxis]
    if tuple(pixels.shape) != expected:
        raise _damaged(
            name, f"its pixel data decodes to {'x'.join(map(str, pixels.shape))} values, not the {cols} x {rows} "
            f"image(s) its header declares"
        )

    notes: list[str] = []
    windows = _windows_of(ds)
    iop = _get(ds, "ImageOrientationPatient")
    ipp = _get(ds, "ImagePositionPatient")
    offsets = _floats(ds, "GridFrameOffsetVector") if frames > 1 else None
    instance_number = _int(ds, "InstanceNumber")
    sop_uid = _text(ds, "SOPInstanceUID")
    modality = (_text(ds, "Modality") or "").upper()
    # MONOCHROME1 means "minimum value displayed white" (PS3.3 C.7.6.3.1.2). CT values that the
    # modality LUT maps to HU are physical (dense = high) whatever the display intent, so they are
    # kept; other MONOCHROME1 data (CR/DX/...) is reflected so that, as in MONOCHROME2, dense = high.
    values_are_hu = (_text(ds, "RescaleType") or "").upper() == "HU" or (
        modality == "CT" and ("RescaleSlope" in ds or "SharedFunctionalGroupsSequence" in ds)
    )
    inverted = photometric == "MONOCHROME1" and not colour and not values_are_hu
    if photometric == "MONOCHROME1" and values_are_hu and not colour:
        notes.append("MONOCHROME1 CT: HU kept as physical values (only the display intent is inverted)")
    if colour:
        notes.append(f"{photometric} picture converted to grey (BT.601 luma); HU estimated")
        windows = []  # a colour capture's own window does not apply to the estimated HU
    flip = 0.0
    if inverted:
        notes.append("MONOCHROME1: values reflected so that higher = denser, as in MONOCHROME2")
        lo, hi = _stored_range(ds)
        ends = np.asarray(apply_modality_lut(np.array([lo, hi]), ds), dtype=np.float64)
        flip = float(ends.min() + ends.max())
        if not np.isfinite(flip):
            raise _damaged(name, "its Rescale Slope or Intercept is not a finite number")
        windows = [Window(center=flip - w.center, width=w.width) for w in windows]

    enhanced = "PerFrameFunctionalGroupsSequence" in ds
    base = base_name(name)
    slices: list[Slice] = []
    for f in range(frames):
        frame = pixels[f]
        frame_windows = windows
        pvt = None
        if enhanced:
            pos_item = _group_item(ds, f, "PlanePositionSequence")
            ori_item = _group_item(ds, f, "PlaneOrientationSequence")
            frame_ipp = _get(pos_item, "ImagePositionPatient")
            position = slice_position(
                frame_ipp,
                _get(ori_item, "ImageOrientationPatient") if ori_item is not None else iop,
            )
            corner = _image_position(frame_ipp)
            voi = _group_item(ds, f, "FrameVOILUTSequence")
            if voi is not None and not frame_windows:
                frame_windows = _windows_of(voi)
            pvt = _group_item(ds, f, "PixelValueTransformationSequence")
        else:
            position = slice_position(ipp, iop)
            corner = _image_position(ipp)
            if position is not None and offsets and len(offsets) == frames:
                # RT Dose: GridFrameOffsetVector, offsets along the normal, relative when the first
                # is 0, else absolute with the first at ImagePositionPatient (PS3.3 C.8.8.3.2)
                position += offsets[f] - offsets[0]
                corner = _shift_along_normal(corner, iop, offsets[f] - offsets[0])
        if colour:
            rgb = frame
            if rgb.dtype != np.uint8:
                bits = min(max(_int(ds, "BitsStored") or 16, 1), 32)
                rgb = np.rint(rgb.astype(np.float32) * (255.0 / ((1 << bits) - 1))).clip(0, 255).astype(np.uint8)
            hu = estimated_hu(grey_from_picture(rgb))
        else:
            try:
                hu = _modality_lut(frame, ds, pvt)
            except Exception:
                raise _damaged(name, "its Rescale Slope/Intercept or Modality LUT cannot be applied") from None
            if inverted:
                hu = np.float32(flip) - hu
        hu = np.ascontiguousarray(hu, dtype=np.float32)
        if hu.shape != (rows, cols):
            raise _damaged(name, f"a frame decodes to {hu.shape}, not {rows} x {cols} pixels")
        if not np.isfinite(hu).all():
            raise _damaged(
                name, "its Rescale Slope/Intercept or Modality LUT give values that are not finite numbers"
            )
        slices.append(
            Slice(
                hu=hu,
                source=base,
                instance_number=instance_number,
                sop_instance_uid=sop_uid,
                position_mm=position,
                image_position_mm=corner,
                windows=tuple(frame_windows),
                frame=f if frames > 1 else None,
            )
        )
    return DicomInstance(
        name=name,
        digest=digest,
        study_uid=_text(ds, "StudyInstanceUID") or "",
        series_uid=_text(ds, "SeriesInstanceUID") or "",
        slices=slices,
        estimated=colour,
        fields=_series_fields(ds, tsyntax),
        notes=notes,
    )
