"""Reading CT studies: DICOM files, folders and ZIPs, and JPG/PNG slice exports, into HU series.

The pipeline for every uploaded file (``read_uploads``) or path (``read_paths``):

1. ZIPs are expanded in memory after a size check (total uncompressed size at most
   ``get_settings().max_zip_mb`` MB, compression ratio at most :data:`MAX_ZIP_RATIO`);
   directories, ``__MACOSX/``, dotfiles, ``DICOMDIR`` and companion files (:data:`SKIPPED_SUFFIXES`,
   ``LICENSE``, ``README``) are skipped.
2. Each file is parsed once with ``pydicom.dcmread(..., force=False)``. A file without the DICOM
   preamble is tried again with ``force=True`` and accepted only if it parses to a dataset with
   SOPClassUID or PixelData (PS3.10 7.1 allows files without the preamble in practice). Otherwise
   it is tried as a JPG/PNG picture (Pillow), else it is "not an image".
3. DICOM pixel data is decoded by pydicom's decoders (RLE natively; JPEG baseline/extended/
   lossless, JPEG-LS and JPEG 2000 through pylibjpeg-libjpeg / pylibjpeg-openjpeg or Pillow) and
   turned into Hounsfield units by the modality LUT (``pydicom.pixels.apply_modality_lut``:
   Rescale Slope/Intercept or the Modality LUT Sequence, PS3.3 C.11.1). Windowing comes after,
   in :mod:`core.windowing` (the order of PS3.4 N.2.1).
4. Instances are grouped into studies and series by StudyInstanceUID/SeriesInstanceUID and the
   slices of a series are ordered along the slice normal (see :func:`slice_position`).

No raw UID, patient name, patient id, birth date, address or free-text comment leaves this module:
studies and series are known by keyed hashes (:func:`study_key_for`), and ``Series.metadata``
holds only the technical fields listed in :data:`METADATA_KEYS`. ``Slice.sop_instance_uid`` is
the one exception (per-instance rows of the CSV export need it). ``Slice.source`` is the file's
base name only, because folder and ZIP member names often hold patient names or ids.

Run ``python -m core.imaging PATH...`` to print the de-identified summary of every series.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from core.config import WINDOW_PRESETS, Window, WindowPreset, get_settings
from core.windowing import grey_from_picture, hu_from_uint8, window_to_uint8

__all__ = [
    "ArchiveTooLargeError",
    "EmptyArchiveError",
    "FileProblem",
    "ImageTooLargeError",
    "ImagingError",
    "MixedSeriesError",
    "NoPixelDataError",
    "NotAnImageError",
    "ReadResult",
    "Series",
    "Slice",
    "Study",
    "UnsupportedTransferSyntaxError",
    "read_paths",
    "read_picture",
    "read_series",
    "read_uploads",
    "slice_position",
    "study_key_for",
    "summarize",
    "view",
]

#: Largest accepted ratio of uncompressed to compressed size, per ZIP member and for the whole ZIP.
#: DICOM CT slices deflate about 2-5x, a blank slice up to ~100x; classic zip bombs reach 1000x
#: and more (Fifield, "A better zip bomb", 2019), so 200x separates the two with a wide margin.
MAX_ZIP_RATIO = 200.0
#: Members smaller than this (bytes) are not ratio-checked: tiny files can compress absurdly well.
_RATIO_MIN_BYTES = 1 << 20

#: File name endings of companion files skipped silently inside folders and ZIPs (TCIA downloads
#: carry XML annotations, ``metadata.csv`` and a ``LICENSE``; exports carry ``.txt`` notes).
SKIPPED_SUFFIXES = frozenset({".xml", ".csv", ".txt", ".md", ".json", ".html", ".htm", ".log", ".ini", ".py"})
_SKIPPED_NAMES = frozenset({"dicomdir", "license", "readme", "thumbs.db", "desktop.ini"})

#: The only keys ``Series.metadata`` may hold (de-identified technical description of a series).
METADATA_KEYS = (
    "modality",
    "body_part_examined",
    "slice_thickness_mm",
    "pixel_spacing_mm",
    "spacing_between_slices_mm",
    "convolution_kernel",
    "manufacturer",
    "model_name",
    "kvp",
    "study_year",
    "series_year",
    "acquisition_year",
    "rows",
    "columns",
    "number_of_slices",
    "series_number",
    "series_description",
    "transfer_syntax",
    "photometric_interpretation",
    "image_orientation_patient",
    "notes",
)

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

#: The window the IQ-OTH/NCCD-style JPG/PNG exports are assumed to carry (see core.config).
_PICTURE_WINDOW = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


# --------------------------------------------------------------------------------------- errors
class ImagingError(Exception):
    """A file or upload could not be read as a CT image; the message says what and what to do."""


class NotAnImageError(ImagingError):
    """The file is neither DICOM nor a JPG/PNG picture, or it is truncated/corrupt."""


class NoPixelDataError(ImagingError):
    """The file is DICOM but holds no image (e.g. a structured report or presentation state)."""


class UnsupportedTransferSyntaxError(ImagingError):
    """The DICOM pixel data is compressed in a way no installed decoder handles.

    Attributes:
        transfer_syntax: the Transfer Syntax name (or UID when unknown).
        plugin: the package that would decode it, or "none available to LungReview".
    """

    def __init__(self, message: str, transfer_syntax: str = "", plugin: str = "") -> None:
        super().__init__(message)
        self.transfer_syntax = transfer_syntax
        self.plugin = plugin


class MixedSeriesError(ImagingError):
    """Files of different series were given where one series was expected, or slice sizes differ."""


class EmptyArchiveError(ImagingError):
    """A ZIP holds no file LungReview can read."""


class ArchiveTooLargeError(ImagingError):
    """A ZIP expands beyond the size limit or compresses suspiciously well (zip bomb)."""


class ImageTooLargeError(ImagingError):
    """An image has more pixels than ``get_settings().max_pixels`` allows."""


# ---------------------------------------------------------------------------------- data model
@dataclass
class Slice:
    """One 2-D image (a DICOM instance, one frame of a multi-frame instance, or a picture).

    Attributes:
        hu: float32 (y, x) in Hounsfield units; for JPG/PNG estimated from the grey values with
            ``core.windowing.hu_from_picture(pixels, WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD])``.
        source: the file's base name (no folder: folders often hold patient names).
        instance_number: DICOM InstanceNumber, or None.
        sop_instance_uid: DICOM SOPInstanceUID (None for pictures).
        position_mm: position along the slice normal in mm (see :func:`slice_position`), or None.
        windows: the file's own VOI windows (WindowCenter/WindowWidth pairs); empty for pictures.
        frame: 0-based frame index within a multi-frame instance, else None.
    """

    hu: np.ndarray = field(repr=False)
    source: str
    instance_number: int | None = None
    sop_instance_uid: str | None = field(default=None, repr=False)
    position_mm: float | None = None
    windows: tuple[Window, ...] = ()
    frame: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of ``hu``."""
        return (int(self.hu.shape[0]), int(self.hu.shape[1]))


@dataclass
class Series:
    """One ordered series of slices of one study.

    Attributes:
        study_key, series_key: pseudonymous keys (:func:`study_key_for` of the Study/Series
            Instance UID; for pictures, of their content hash).
        modality: DICOM Modality ("CT", ...); "OT" (other) for JPG/PNG pictures.
        source_kind: "dicom", "jpg" or "png".
        slices: the slices in order (increasing position along the slice normal, else
            InstanceNumber, else natural order of file names).
        spacing_mm: (z, y, x) in mm; z from slice positions (median step), else
            SpacingBetweenSlices; y, x from PixelSpacing (row, column spacing). None when unknown.
        metadata: de-identified technical metadata (keys in :data:`METADATA_KEYS` only).
        hu_is_estimated: True when HU come from 8-bit grey values (pictures, RGB captures).
        description: a display name for the series (no patient data).
    """

    study_key: str
    series_key: str
    modality: str
    source_kind: str
    slices: list[Slice] = field(repr=False)
    spacing_mm: tuple[float | None, float | None, float | None]
    metadata: dict[str, Any] = field(default_factory=dict)
    hu_is_estimated: bool = False
    description: str = ""

    def __repr__(self) -> str:
        return (
            f"Series(study_key={self.study_key!r}, series_key={self.series_key!r}, modality={self.modality!r}, "
            f"source_kind={self.source_kind!r}, n_slices={len(self.slices)}, spacing_mm={self.spacing_mm!r}, "
            f"hu_is_estimated={self.hu_is_estimated}, description={self.description!r})"
        )

    @property
    def hu(self) -> np.ndarray:
        """The volume: float32 (z, y, x) in HU, z in slice order.

        A new array on every call (stacked from ``slices``); keep it if you need it twice.

        Raises:
            ValueError: the slices differ in size (possible for pictures); use ``slices`` instead.
        """
        shapes = {s.hu.shape for s in self.slices}
        if len(shapes) > 1:
            raise ValueError(
                f"the slices of this series differ in size ({sorted(shapes)}); process them one by one"
            )
        return np.stack([s.hu for s in self.slices]).astype(np.float32, copy=False)

    @property
    def windows(self) -> tuple[Window, ...]:
        """The file's own windows, in order of first appearance over the slices (empty for pictures)."""
        seen: dict[Window, None] = {}
        for s in self.slices:
            for w in s.windows:
                seen.setdefault(w, None)
        return tuple(seen)


@dataclass
class Study:
    """A study: its series and a content hash that identifies the upload.

    Attributes:
        study_key: pseudonymous key of the StudyInstanceUID (pictures: of the content hash).
        series: the series, ordered by SeriesNumber.
        content_hash: sha256 hex over the bytes of the files that make up the study, independent
            of their order and names (sha256 of the sorted per-file sha256 digests), so the same
            study uploaded as loose files or as a ZIP has the same hash.
        source_kind: "dicom", "jpg" or "png".
    """

    study_key: str
    series: list[Series]
    content_hash: str
    source_kind: str


@dataclass
class FileProblem:
    """A file (or ZIP, or series) that could not be read, and why."""

    name: str
    error: ImagingError

    @property
    def message(self) -> str:
        """The error's message, for display."""
        return str(self.error)


@dataclass
class ReadResult:
    """What an upload or a set of paths held.

    Attributes:
        studies: the studies read, in order of first appearance.
        problems: files that could not be read (each with its typed error).
        skipped: names of files skipped on purpose (DICOMDIR, companion files, dotfiles).
    """

    studies: list[Study]
    problems: list[FileProblem]
    skipped: list[str] = field(default_factory=list)

    @property
    def series(self) -> list[Series]:
        """All series of all studies, in order."""
        return [se for st in self.studies for se in st.series]


# ------------------------------------------------------------------------------------- helpers
def study_key_for(uid: str) -> str:
    """Pseudonymous key of a UID (or content hash): HMAC-SHA256 keyed with the study-key secret.

    Args:
        uid: a DICOM UID or any identifying string.

    Returns:
        The first 32 hex characters of HMAC-SHA256(``get_settings().study_key_secret()``, uid)
        (RFC 2104). Stable for one secret; not reversible without it.
    """
    return hmac.new(get_settings().study_key_secret(), uid.encode(), hashlib.sha256).hexdigest()[:32]


def view(hu: np.ndarray, window: Window) -> np.ndarray:
    """8-bit display view of HU values: ``core.windowing.window_to_uint8`` (PS3.3 C.11.2.1.2.1).

    Args:
        hu: float array of any shape, in HU.
        window: centre/width in HU.

    Returns:
        uint8 array of the same shape.
    """
    return window_to_uint8(hu, window)


def _natural_key(name: str) -> list[Any]:
    """Sort key so that ``case (2)`` < ``case (10)``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _base(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).name


def _is_skipped(name: str) -> bool:
    """True for files LungReview ignores on purpose inside folders and ZIPs."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if any(p == "__MACOSX" or p.startswith(".") for p in parts):
        return True
    base = parts[-1] if parts else name
    stem = base.lower().split(".")[0]
    return stem in _SKIPPED_NAMES or PurePosixPath(base.lower()).suffix in SKIPPED_SUFFIXES


def slice_position(position: Sequence[float] | None, orientation: Sequence[float] | None) -> float | None:
    """Position of a slice along its normal, in mm.

    ``dot(ImagePositionPatient, row_cosines x column_cosines)``: the normal is the cross product of
    the row and column direction cosines of ImageOrientationPatient (PS3.3 C.7.6.2.1.1).

    Args:
        position: ImagePositionPatient (x, y, z) in mm, or None.
        orientation: ImageOrientationPatient (6 direction cosines), or None.

    Returns:
        The position in mm, or None when either attribute is missing or malformed. Without an
        orientation, axial (normal = +z) is NOT assumed: the caller falls back to InstanceNumber.
    """
    if position is None or orientation is None:
        return None
    try:
        p = np.asarray([float(v) for v in position], dtype=np.float64)
        o = np.asarray([float(v) for v in orientation], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if p.shape != (3,) or o.shape != (6,):
        return None
    normal = np.cross(o[:3], o[3:])
    if not np.any(normal):
        return None
    return float(p @ normal)


def _float_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            return [float(v) for v in value]
        return [float(value)]
    except (TypeError, ValueError):
        return None


def _first_float(value: Any) -> float | None:
    vals = _float_list(value)
    return vals[0] if vals else None


def _year(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text[:4]) if len(text) >= 4 and text[:4].isdigit() else None


def _windows_of(ds: Dataset) -> list[Window]:
    """WindowCenter/WindowWidth pairs of a dataset (multi-valued too), invalid widths dropped."""
    centres, widths = _float_list(ds.get("WindowCenter")), _float_list(ds.get("WindowWidth"))
    if not centres or not widths:
        return []
    out = []
    for c, w in zip(centres, widths, strict=False):
        if np.isfinite(c) and np.isfinite(w) and w >= 1:
            out.append(Window(center=c, width=w))
    return out


def _group_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """First item of a functional-group ``sequence`` for ``frame`` (per-frame, else shared)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is not None and len(seq) > index:
            inner = seq[index].get(sequence)
            if inner:
                return inner[0]
    return None


# ----------------------------------------------------------------------------- DICOM decoding
@dataclass
class _Instance:
    """One parsed DICOM file (internal: holds raw UIDs)."""

    name: str
    digest: str
    study_uid: str
    series_uid: str
    slices: list[Slice]
    ds: Dataset
    estimated: bool
    notes: list[str]


def _parse_dicom(name: str, data: bytes) -> Dataset | None:
    """Parse bytes as DICOM (pixel data not yet decoded); None when it is not DICOM.

    Raises:
        NotAnImageError: the file has the DICOM preamble but is truncated or corrupt.
    """
    has_preamble = data[128:132] == b"DICM"
    try:
        return pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError:
        if has_preamble:
            raise NotAnImageError(
                f"‘{name}’ looks like DICOM but its header is damaged; export the series again."
            ) from None
    except Exception as exc:
        if has_preamble:
            raise NotAnImageError(
                f"‘{name}’ is a DICOM file that is truncated or corrupt ({type(exc).__name__}); "
                "copy or export it again."
            ) from exc
        return None
    # no preamble: accept only if it parses to something that is plainly a DICOM image object
    if data[:2] in (b"\x89P", b"\xff\xd8", b"PK", b"%P"):  # PNG, JPEG, ZIP, PDF signatures
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            ok = "SOPClassUID" in ds or "PixelData" in ds
    except Exception:
        return None
    return ds if ok else None


def _check_size(name: str, rows: int, cols: int, frames: int) -> None:
    """Refuse frames over ``max_pixels`` and files whose float32 HU would exceed ``max_zip_mb``."""
    settings = get_settings()
    if rows * cols > settings.max_pixels:
        raise ImageTooLargeError(
            f"‘{name}’ has {cols} x {rows} = {rows * cols:,} pixels per image, more than the limit of "
            f"{settings.max_pixels:,} (LUNGREVIEW_MAX_PIXELS); reduce the image size before uploading."
        )
    total_bytes = rows * cols * frames * 4
    if total_bytes > settings.max_zip_mb * (1 << 20):
        raise ImageTooLargeError(
            f"‘{name}’ holds {frames} frames of {cols} x {rows} pixels, "
            f"{total_bytes / (1 << 20):.0f} MB once decoded, over the limit of {settings.max_zip_mb} MB "
            "(LUNGREVIEW_MAX_ZIP_MB); upload fewer frames."
        )


def _check_decoder(name: str, ds: Dataset) -> None:
    """Raise UnsupportedTransferSyntaxError when no installed plugin decodes the pixel data."""
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
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
        label = tsyntax.name if tsyntax.is_transfer_syntax else str(tsyntax)
        what = (
            f"install {plugin}"
            if plugin != _NO_PLUGIN
            else "convert it to an uncompressed, JPEG or JPEG 2000 transfer syntax (e.g. dcmtk dcmconv +te)"
        )
        raise UnsupportedTransferSyntaxError(
            f"‘{name}’ is compressed as ‘{label}’, which LungReview cannot decode; {what}, "
            "or export the series uncompressed.",
            transfer_syntax=label,
            plugin=plugin,
        )


def _modality_lut(arr: np.ndarray, ds: Dataset, frame_item: Dataset | None) -> np.ndarray:
    """Stored values -> modality values (HU for CT), float32; ``arr`` is one frame (y, x).

    Uses ``pydicom.pixels.apply_modality_lut`` (PS3.3 C.11.1); for enhanced multi-frame objects
    the Pixel Value Transformation Sequence of the frame's functional groups (C.7.6.16.2.9).
    """
    if frame_item is not None:
        return apply_modality_lut(arr, frame_item).astype(np.float32, copy=False)
    return apply_modality_lut(arr, ds).astype(np.float32, copy=False)


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _read_dicom(name: str, data: bytes, digest: str) -> _Instance | None:
    """Decode one DICOM file into slices; None when it is not DICOM at all.

    Raises:
        NoPixelDataError, UnsupportedTransferSyntaxError, ImageTooLargeError, NotAnImageError.
    """
    ds = _parse_dicom(name, data)
    if ds is None:
        return None
    sop_class = str(
        ds.get("SOPClassUID", "") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", "")
    )
    if sop_class == _DICOMDIR_SOP_CLASS:
        raise NoPixelDataError(
            f"‘{name}’ is a DICOMDIR (an index of files), not an image; upload the image files or the "
            "whole folder as a ZIP instead."
        )
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        kind = str(ds.get("Modality", "") or "")
        hint = f" (modality {kind})" if kind else ""
        raise NoPixelDataError(
            f"‘{name}’ is DICOM but holds no pixel data{hint} (it may be a structured report or "
            "presentation state); upload the image series instead."
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise NotAnImageError(
            f"‘{name}’ is DICOM but its image size (Rows/Columns/Number of Frames) is missing or "
            "invalid; export the series again."
        ) from exc
    _check_size(name, rows, cols, frames)
    _check_decoder(name, ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except RuntimeError as exc:
        tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if tsyntax is None or not tsyntax.is_compressed:
            raise NotAnImageError(
                f"‘{name}’ is DICOM but its pixel data could not be decoded ({str(exc)[:160]}); "
                "the file may be corrupt, export it again."
            ) from exc
        # every installed plugin failed: name the ones pydicom knows of but that are not installed
        try:
            missing = pydicom.pixels.get_decoder(tsyntax).missing_dependencies
        except NotImplementedError:
            missing = []
        plugin = ", ".join(m.split(" - ")[0] for m in missing) or _NO_PLUGIN
        plugin = plugin.replace("gdcm", "python-gdcm") if plugin.startswith("gdcm") else plugin
        raise UnsupportedTransferSyntaxError(
            f"‘{name}’ is compressed as ‘{tsyntax.name}’ and the installed decoders could not decode it "
            f"(another decoder, {plugin}, might; or the file is damaged). Export the series uncompressed "
            "and upload it again.",
            transfer_syntax=tsyntax.name,
            plugin=plugin,
        ) from exc
    except Exception as exc:
        raise NotAnImageError(
            f"‘{name}’ is DICOM but its pixel data could not be decoded ({type(exc).__name__}: "
            f"{str(exc)[:160]}); the file may be truncated or corrupt, export it again."
        ) from exc

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    colour = samples > 1 or photometric == "PALETTE COLOR"
    if photometric == "PALETTE COLOR":
        pixels = pydicom.pixels.apply_color_lut(pixels, ds)
    if frames == 1:
        pixels = pixels[np.newaxis]
    if pixels.shape[0] != frames:  # e.g. NumberOfFrames missing but data has frames
        frames = pixels.shape[0]

    notes: list[str] = []
    windows = _windows_of(ds)
    iop = ds.get("ImageOrientationPatient")
    ipp = ds.get("ImagePositionPatient")
    offsets = _float_list(ds.get("GridFrameOffsetVector")) if frames > 1 else None
    instance_number = ds.get("InstanceNumber")
    try:
        instance_number = int(instance_number) if instance_number not in (None, "") else None
    except (TypeError, ValueError):
        instance_number = None
    sop_uid = str(ds.get("SOPInstanceUID", "")) or None
    # MONOCHROME1 means "minimum value displayed white" (PS3.3 C.7.6.3.1.2). CT values that the
    # modality LUT maps to HU are physical (dense = high) whatever the display intent, so they are
    # kept; other MONOCHROME1 data (CR/DX/...) is reflected so that, as in MONOCHROME2, dense = high.
    values_are_hu = str(ds.get("RescaleType", "")).upper() == "HU" or (
        str(ds.get("Modality", "")).upper() == "CT"
        and ("RescaleSlope" in ds or "SharedFunctionalGroupsSequence" in ds)
    )
    inverted = photometric == "MONOCHROME1" and not colour and not values_are_hu
    if photometric == "MONOCHROME1" and values_are_hu and not colour:
        notes.append("MONOCHROME1 CT: HU kept as physical values (only the display intent is inverted)")
    if colour:
        notes.append(f"{photometric} picture converted to grey (BT.601 luma); HU estimated")
        windows = []  # a colour capture's own window does not apply to the estimated HU
    if inverted:
        notes.append("MONOCHROME1: values reflected so that higher = denser, as in MONOCHROME2")
        lo, hi = _stored_range(ds)
        ends = apply_modality_lut(np.array([lo, hi]), ds).astype(np.float64)
        flip = float(ends.min() + ends.max())
        windows = [Window(center=flip - w.center, width=w.width) for w in windows]

    base = _base(name)
    slices: list[Slice] = []
    for f in range(frames):
        frame = pixels[f]
        frame_windows = windows
        position = None
        if "PerFrameFunctionalGroupsSequence" in ds:
            pos_item = _group_item(ds, f, "PlanePositionSequence")
            ori_item = _group_item(ds, f, "PlaneOrientationSequence")
            position = slice_position(
                pos_item.get("ImagePositionPatient") if pos_item is not None else None,
                ori_item.get("ImageOrientationPatient") if ori_item is not None else iop,
            )
            voi = _group_item(ds, f, "FrameVOILUTSequence")
            if voi is not None and not frame_windows:
                frame_windows = _windows_of(voi)
            pvt = _group_item(ds, f, "PixelValueTransformationSequence")
        else:
            pvt = None
            position = slice_position(ipp, iop)
            if position is not None and offsets and len(offsets) == frames:
                # RT Dose: GridFrameOffsetVector, offsets along the normal, relative when the first
                # is 0, else absolute with the first at ImagePositionPatient (PS3.3 C.8.8.3.2)
                position += offsets[f] - offsets[0]
        if colour:
            rgb = frame
            if rgb.dtype != np.uint8:
                bits = int(ds.get("BitsStored") or 16)
                rgb = np.rint(rgb.astype(np.float32) * (255.0 / ((1 << bits) - 1))).astype(np.uint8)
            hu = hu_from_uint8(grey_from_picture(rgb), _PICTURE_WINDOW)
        else:
            hu = _modality_lut(frame, ds, pvt)
            if inverted:
                hu = np.float32(flip) - hu
        slices.append(
            Slice(
                hu=np.ascontiguousarray(hu, dtype=np.float32),
                source=base,
                instance_number=instance_number,
                sop_instance_uid=sop_uid,
                position_mm=position,
                windows=tuple(frame_windows),
                frame=f if frames > 1 else None,
            )
        )
    for keyword in _PIXEL_KEYWORDS:  # the HU copy is all we need; free the encoded bytes
        if keyword in ds:
            del ds[keyword]
    return _Instance(
        name=name,
        digest=digest,
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        slices=slices,
        ds=ds,
        estimated=colour,
        notes=notes,
    )


# --------------------------------------------------------------------------------- pictures
def _open_picture(name: str, data: bytes) -> tuple[np.ndarray, str, list[str]] | None:
    """Decode a JPG/PNG to uint8 (y, x) or (y, x, 3|4); None when it is not a picture.

    Raises:
        ImageTooLargeError: more pixels than ``max_pixels`` (checked before decoding).
        NotAnImageError: a picture that is truncated/corrupt or of another format.
    """
    limit = get_settings().max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"‘{name}’ is too large to open safely ({exc}); reduce the image size before uploading."
        ) from exc
    except Exception:
        return None
    fmt = (im.format or "").upper()
    if fmt not in ("JPEG", "PNG"):
        raise NotAnImageError(
            f"‘{name}’ is a {fmt or 'picture'} file; LungReview reads DICOM, JPG and PNG only. "
            "Convert it to PNG or upload the DICOM series."
        )
    width, height = im.size
    if width * height > limit:
        raise ImageTooLargeError(
            f"‘{name}’ has {width} x {height} = {width * height:,} pixels, more than the limit of "
            f"{limit:,} (LUNGREVIEW_MAX_PIXELS); reduce the image size before uploading."
        )
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            arr = np.rint(np.clip(arr, 0, 65535) / 257.0).astype(np.uint8)
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
        raise NotAnImageError(
            f"‘{name}’ is a {fmt} picture that is truncated or corrupt ({str(exc)[:120]}); copy or export it again."
        ) from exc
    kind = "jpg" if fmt == "JPEG" else "png"
    return arr, kind, notes


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
    opened = _open_picture(label, data)
    if opened is None:
        raise NotAnImageError(f"‘{label}’ is not a JPG or PNG picture; upload a JPG, PNG or DICOM file.")
    arr, _, _ = opened
    return _picture_slice(label, arr)


def _picture_slice(name: str, arr: np.ndarray) -> Slice:
    hu = hu_from_uint8(grey_from_picture(arr), _PICTURE_WINDOW)
    return Slice(hu=hu, source=_base(name))


# ---------------------------------------------------------------------------------- assembly
@dataclass
class _Picture:
    name: str
    digest: str
    kind: str
    slice: Slice
    notes: list[str]


def _deidentified_description(ds: Dataset) -> str | None:
    """SeriesDescription unless it contains any part of PatientName or PatientID."""
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    if not desc:
        return None
    tokens = re.split(r"[\^\s,]+", str(ds.get("PatientName", "") or "")) + [
        str(ds.get("PatientID", "") or "")
    ]
    low = desc.lower()
    if any(len(t) >= 2 and t.lower() in low for t in tokens):
        return None
    return desc


def _series_metadata(ds: Dataset, n_slices: int, rows: int, cols: int, notes: list[str]) -> dict[str, Any]:
    spacing = _float_list(ds.get("PixelSpacing"))
    if spacing is None and "SharedFunctionalGroupsSequence" in ds:
        item = _group_item(ds, 0, "PixelMeasuresSequence")
        spacing = _float_list(item.get("PixelSpacing")) if item is not None else None
    kernel = ds.get("ConvolutionKernel")
    if isinstance(kernel, pydicom.multival.MultiValue):
        kernel = "\\".join(str(k) for k in kernel)
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    orientation = _float_list(ds.get("ImageOrientationPatient"))
    if orientation is None:
        item = _group_item(ds, 0, "PlaneOrientationSequence")
        orientation = _float_list(item.get("ImageOrientationPatient")) if item is not None else None
    meta = {
        "modality": str(ds.get("Modality", "") or "") or None,
        "body_part_examined": str(ds.get("BodyPartExamined", "") or "") or None,
        "slice_thickness_mm": _first_float(ds.get("SliceThickness")),
        "pixel_spacing_mm": spacing,
        "spacing_between_slices_mm": _first_float(ds.get("SpacingBetweenSlices")),
        "convolution_kernel": str(kernel) if kernel else None,
        "manufacturer": str(ds.get("Manufacturer", "") or "") or None,
        "model_name": str(ds.get("ManufacturerModelName", "") or "") or None,
        "kvp": _first_float(ds.get("KVP")),
        "study_year": _year(ds.get("StudyDate")),
        "series_year": _year(ds.get("SeriesDate")),
        "acquisition_year": _year(ds.get("AcquisitionDate")),
        "rows": rows,
        "columns": cols,
        "number_of_slices": n_slices,
        "series_number": _int_or_none(ds.get("SeriesNumber")),
        "series_description": _deidentified_description(ds),
        "transfer_syntax": tsyntax.name if tsyntax is not None and tsyntax.is_transfer_syntax else None,
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "") or "") or None,
        # Row and column direction cosines (PS3.3 C.7.6.2.1.1): lets the OOD guard check "axial".
        "image_orientation_patient": orientation if orientation is not None and len(orientation) == 6 else None,
        "notes": sorted(set(notes)),
    }
    return meta


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _order(slices: list[Slice]) -> list[Slice]:
    """Order by position along the normal, else InstanceNumber, else natural file name order."""

    def tail(s: Slice) -> tuple[Any, ...]:
        return (_natural_key(s.source), s.frame or 0)

    if all(s.position_mm is not None for s in slices):
        return sorted(slices, key=lambda s: (s.position_mm, *tail(s)))
    if all(s.instance_number is not None for s in slices):
        return sorted(slices, key=lambda s: (s.instance_number, *tail(s)))
    return sorted(slices, key=tail)


def _z_spacing(slices: list[Slice], ds: Dataset) -> float | None:
    pos = [s.position_mm for s in slices]
    if len(pos) >= 2 and all(p is not None for p in pos):
        steps = np.abs(np.diff(np.asarray(pos, dtype=np.float64)))
        steps = steps[steps > 1e-6]
        if steps.size:
            return round(float(np.median(steps)), 6)
    return _first_float(ds.get("SpacingBetweenSlices"))


def _content_hash(digests: Iterable[str]) -> str:
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def _assemble_dicom(instances: list[_Instance], problems: list[FileProblem]) -> list[Study]:
    by_study: dict[str, dict[str, list[_Instance]]] = {}
    for inst in instances:
        study_uid = inst.study_uid or f"no-study:{inst.digest}"
        series_uid = inst.series_uid or f"no-series:{inst.digest}"
        by_study.setdefault(study_uid, {}).setdefault(series_uid, []).append(inst)
    studies = []
    for study_uid, series_map in by_study.items():
        study_key = study_key_for(study_uid)
        series_list: list[Series] = []
        digests: list[str] = []
        for series_uid, members in series_map.items():
            slices = [s for m in members for s in m.slices]
            shapes = sorted({s.shape for s in slices})
            first = members[0]
            if len(shapes) > 1:
                problems.append(
                    FileProblem(
                        _series_label(first),
                        MixedSeriesError(
                            f"series {_series_label(first)} mixes slice sizes {shapes}; a series must have "
                            "one size. Upload each size as its own series."
                        ),
                    )
                )
                continue
            ordered = _order(slices)
            ds = first.ds
            rows, cols = shapes[0]
            spacing = _float_list(ds.get("PixelSpacing"))
            if spacing is None:
                item = _group_item(ds, 0, "PixelMeasuresSequence")
                spacing = _float_list(item.get("PixelSpacing")) if item is not None else None
            y_mm, x_mm = (spacing[0], spacing[1]) if spacing and len(spacing) >= 2 else (None, None)
            notes = [n for m in members for n in m.notes]
            meta = _series_metadata(ds, len(ordered), rows, cols, notes)
            modality = meta["modality"] or "OT"
            desc = meta["series_description"] or f"{modality} series {meta['series_number'] or ''}".strip()
            series_list.append(
                Series(
                    study_key=study_key,
                    series_key=study_key_for(series_uid),
                    modality=modality,
                    source_kind="dicom",
                    slices=ordered,
                    spacing_mm=(_z_spacing(ordered, ds), y_mm, x_mm),
                    metadata=meta,
                    hu_is_estimated=any(m.estimated for m in members),
                    description=desc,
                )
            )
            digests.extend(m.digest for m in members)
        if series_list:
            series_list.sort(
                key=lambda s: (s.metadata.get("series_number") is None, s.metadata.get("series_number") or 0)
            )
            studies.append(Study(study_key, series_list, _content_hash(digests), "dicom"))
    return studies


def _series_label(inst: _Instance) -> str:
    number = inst.ds.get("SeriesNumber")
    return f"#{number}" if number not in (None, "") else "(no number)"


def _assemble_pictures(pictures: list[_Picture]) -> list[Study]:
    """All pictures of one upload form one study; one series per kind (jpg, png)."""
    if not pictures:
        return []
    content = _content_hash(p.digest for p in pictures)
    study_key = study_key_for(f"pictures:{content}")
    series_list = []
    for kind in ("jpg", "png"):
        members = sorted((p for p in pictures if p.kind == kind), key=lambda p: _natural_key(_base(p.name)))
        if not members:
            continue
        shapes = sorted({p.slice.shape for p in members})
        notes = sorted({n for p in members for n in p.notes} | {"HU estimated from 8-bit grey values"})
        rows, cols = shapes[0]
        meta = {k: None for k in METADATA_KEYS}
        meta.update(
            modality="OT",
            rows=rows if len(shapes) == 1 else None,
            columns=cols if len(shapes) == 1 else None,
            number_of_slices=len(members),
            notes=notes,
        )
        series_list.append(
            Series(
                study_key=study_key,
                series_key=study_key_for(f"pictures:{kind}:{content}"),
                modality="OT",
                source_kind=kind,
                slices=[p.slice for p in members],
                spacing_mm=(None, None, None),
                metadata=meta,
                hu_is_estimated=True,
                description=f"{len(members)} {kind.upper()} picture{'s' if len(members) != 1 else ''}",
            )
        )
    kind = series_list[0].source_kind if len(series_list) == 1 else "jpg"
    return [Study(study_key, series_list, content, kind)]


class _Reader:
    """Collects files (loose or from ZIPs), then assembles studies."""

    def __init__(self) -> None:
        self.instances: list[_Instance] = []
        self.pictures: list[_Picture] = []
        self.problems: list[FileProblem] = []
        self.skipped: list[str] = []

    def add_bytes(self, name: str, data: bytes) -> None:
        if data[:4] == b"PK\x03\x04" or (data[:4] == b"PK\x05\x06" and name.lower().endswith(".zip")):
            self.add_zip(name, data)
        else:
            self.add_file(name, data)

    def add_file(self, name: str, data: bytes) -> bool:
        """Read one file; True when it gave an image. Errors go to ``problems``."""
        try:
            return self._add_file(name, data)
        except ImagingError as exc:
            self.problems.append(FileProblem(name, exc))
        except Exception as exc:  # a decoder bug must not take the whole upload down
            self.problems.append(
                FileProblem(
                    name,
                    NotAnImageError(
                        f"‘{name}’ could not be read ({type(exc).__name__}: {str(exc)[:160]}); it may be "
                        "corrupt: export it again."
                    ),
                )
            )
        return False

    def _add_file(self, name: str, data: bytes) -> bool:
        if not data:
            raise NotAnImageError(f"‘{name}’ is empty (0 bytes); copy or export it again.")
        digest = hashlib.sha256(data).hexdigest()
        inst = _read_dicom(name, data, digest)
        if inst is not None:
            self.instances.append(inst)
            return True
        opened = _open_picture(name, data)
        if opened is not None:
            arr, kind, notes = opened
            self.pictures.append(_Picture(name, digest, kind, _picture_slice(name, arr), notes))
            return True
        raise NotAnImageError(
            f"‘{name}’ is not a DICOM file or a JPG/PNG picture; upload CT images (DICOM files, a ZIP "
            "of them, or JPG/PNG slices)."
        )

    def add_zip(self, name: str, data: bytes) -> None:
        settings = get_settings()
        limit = settings.max_zip_mb * (1 << 20)
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            infos = [i for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            self.problems.append(
                FileProblem(
                    name, NotAnImageError(f"‘{name}’ is a damaged ZIP ({exc}); create the ZIP again.")
                )
            )
            return
        total = sum(i.file_size for i in infos)
        packed = sum(i.compress_size for i in infos)
        if total > limit:
            raise ArchiveTooLargeError(
                f"‘{name}’ expands to {total / (1 << 20):,.0f} MB, more than the limit of {settings.max_zip_mb} MB "
                "(LUNGREVIEW_MAX_ZIP_MB); upload the series in smaller ZIPs."
            )
        for info in infos:
            if info.file_size >= _RATIO_MIN_BYTES and info.file_size > MAX_ZIP_RATIO * max(
                info.compress_size, 1
            ):
                raise ArchiveTooLargeError(
                    f"‘{name}’ looks like a zip bomb: ‘{_base(info.filename)}’ expands {info.file_size / max(info.compress_size, 1):,.0f}"
                    f" times (limit {MAX_ZIP_RATIO:.0f}); it was not opened. Create the ZIP again from the image files."
                )
        if total >= _RATIO_MIN_BYTES and total > MAX_ZIP_RATIO * max(packed, 1):
            raise ArchiveTooLargeError(
                f"‘{name}’ looks like a zip bomb (expands {total / max(packed, 1):,.0f} times, limit "
                f"{MAX_ZIP_RATIO:.0f}); it was not opened. Create the ZIP again from the image files."
            )
        first_problem = len(self.problems)
        images = 0
        for info in infos:
            member = info.filename
            if _is_skipped(member):
                self.skipped.append(f"{name}/{member}")
                continue
            label = f"{name}/{member}"
            try:
                with zf.open(info) as fh:
                    content = fh.read(info.file_size + 1)
            except (zipfile.BadZipFile, RuntimeError, OSError, NotImplementedError, EOFError) as exc:
                self.problems.append(
                    FileProblem(
                        label,
                        NotAnImageError(f"‘{label}’ could not be unpacked ({exc}); create the ZIP again."),
                    )
                )
                continue
            if len(content) > info.file_size:
                raise ArchiveTooLargeError(
                    f"‘{name}’ is malformed: ‘{_base(member)}’ holds more data than its header declares "
                    "(a zip bomb trick); it was not opened."
                )
            if content[:4] == b"PK\x03\x04":
                self.problems.append(
                    FileProblem(
                        label, NotAnImageError(f"‘{label}’ is a ZIP inside the ZIP; unpack it first.")
                    )
                )
                continue
            images += self.add_file(label, content)
        if images == 0:
            detail = (
                f" (first problem: {self.problems[first_problem].message})"
                if len(self.problems) > first_problem
                else ""
            )
            self.problems.insert(
                first_problem,
                FileProblem(
                    name,
                    EmptyArchiveError(
                        f"‘{name}’ holds no DICOM, JPG or PNG file LungReview can read{detail}; "
                        "check that it contains the image series."
                    ),
                ),
            )

    def add_path(self, path: Path) -> None:
        if path.is_dir():
            for child in sorted(path.rglob("*"), key=lambda p: _natural_key(str(p))):
                if not child.is_file():
                    continue
                rel = child.relative_to(path).as_posix()
                if _is_skipped(rel):
                    self.skipped.append(rel)
                    continue
                try:  # a bad ZIP inside the folder must not stop the walk
                    self.add_bytes(rel, child.read_bytes())
                except ImagingError as exc:
                    self.problems.append(FileProblem(rel, exc))
                except OSError as exc:
                    self.problems.append(
                        FileProblem(rel, ImagingError(f"‘{rel}’ could not be opened ({exc})."))
                    )
        elif path.is_file():
            self.add_bytes(path.name, path.read_bytes())
        else:
            self.problems.append(
                FileProblem(str(path), ImagingError(f"‘{path}’ does not exist; check the path."))
            )

    def finish(self) -> ReadResult:
        studies = _assemble_dicom(self.instances, self.problems) + _assemble_pictures(self.pictures)
        return ReadResult(studies=studies, problems=self.problems, skipped=self.skipped)


def _guarded(reader: _Reader, step: Callable[[], None], name: str) -> None:
    try:
        step()
    except ImagingError as exc:
        reader.problems.append(FileProblem(name, exc))


def _raise_if_unusable(result: ReadResult) -> ReadResult:
    if not result.studies:
        if result.problems:
            raise result.problems[0].error
        raise EmptyArchiveError("nothing readable was given (no DICOM, JPG or PNG file); upload CT images.")
    return result


def read_uploads(items: list[tuple[str, bytes]]) -> ReadResult:
    """Read dashboard uploads: DICOM files, ZIPs of a study, JPG/PNG slices, in any mix.

    Args:
        items: (file name, file bytes) pairs, as the upload widget gives them.

    Returns:
        ReadResult: studies (DICOM grouped by Study/Series Instance UID; all pictures together as
        one study with one series per kind) and the per-file problems.

    Raises:
        ImagingError (a subclass): only when nothing at all could be read: the first problem's
        error (e.g. ArchiveTooLargeError, NotAnImageError), or EmptyArchiveError when no file
        was given.
    """
    reader = _Reader()
    for name, data in items:
        _guarded(reader, lambda n=name, d=data: reader.add_bytes(n, d), name)
    return _raise_if_unusable(reader.finish())


def read_paths(paths: Sequence[str | Path]) -> ReadResult:
    """Read files, folders (recursively) and ZIPs from disk; see :func:`read_uploads`.

    Args:
        paths: files, folders or ZIPs. Inside folders, dotfiles, DICOMDIR and companion files
            (:data:`SKIPPED_SUFFIXES`, LICENSE, README) are skipped and listed in ``skipped``.

    Returns:
        ReadResult.

    Raises:
        ImagingError (a subclass): only when nothing at all could be read (see read_uploads).
    """
    reader = _Reader()
    for p in paths:
        path = Path(p)
        _guarded(reader, lambda path=path: reader.add_path(path), str(path))
    return _raise_if_unusable(reader.finish())


def read_series(paths: Sequence[str | Path] | str | Path) -> Series:
    """Read exactly one series from files/folders/ZIPs.

    Args:
        paths: one path or several.

    Returns:
        Series, slices ordered along the slice normal.

    Raises:
        MixedSeriesError: the paths hold more than one series (or a series mixes slice sizes).
        ImagingError (a subclass): any file could not be read (the first problem's error).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    result = read_paths(paths)
    if result.problems:
        raise result.problems[0].error
    series = result.series
    if len(series) != 1:
        raise MixedSeriesError(
            f"expected one series but found {len(series)} "
            f"({', '.join(s.description for s in series)}); pass the files of one series only."
        )
    return series[0]


def summarize(series: Series) -> dict[str, Any]:
    """De-identified, JSON-able summary of a series (for the CLI, logs and the dashboard).

    HU min/max are exact; the 1st/99th percentiles are computed on every 4th pixel in y and x
    (about 6 % of the voxels) to stay fast on 60 x 512 x 512 volumes.

    Returns:
        dict with study_key, series_key, modality, source_kind, description, number_of_slices,
        rows, columns, spacing_mm (z, y, x), hu (min, max, p1, p99), windows [{center, width}],
        convolution_kernel, manufacturer, hu_is_estimated, metadata.
    """
    mins = [float(s.hu.min()) for s in series.slices]
    maxs = [float(s.hu.max()) for s in series.slices]
    sample = np.concatenate([s.hu[::4, ::4].ravel() for s in series.slices])
    p1, p99 = (float(v) for v in np.percentile(sample, [1, 99]))
    shapes = {s.shape for s in series.slices}
    rows, cols = next(iter(shapes)) if len(shapes) == 1 else (None, None)
    return {
        "study_key": series.study_key,
        "series_key": series.series_key,
        "modality": series.modality,
        "source_kind": series.source_kind,
        "description": series.description,
        "number_of_slices": len(series.slices),
        "rows": rows,
        "columns": cols,
        "spacing_mm": list(series.spacing_mm),
        "hu": {"min": min(mins), "max": max(maxs), "p1": round(p1, 2), "p99": round(p99, 2)},
        "hu_is_estimated": series.hu_is_estimated,
        "windows": [{"center": w.center, "width": w.width} for w in series.windows],
        "convolution_kernel": series.metadata.get("convolution_kernel"),
        "manufacturer": series.metadata.get("manufacturer"),
        "metadata": dict(series.metadata),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m core.imaging PATH...`` prints one JSON document (series and problems).

    Returns:
        0 when at least one series was read, 2 when nothing was.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m core.imaging PATH... (DICOM files, folders, ZIPs, JPG/PNG)", file=sys.stderr)
        return 2
    try:
        result = read_paths(args)
    except ImagingError as exc:
        print(
            json.dumps(
                {
                    "series": [],
                    "problems": [{"name": "(all)", "error": type(exc).__name__, "message": str(exc)}],
                },
                indent=2,
            )
        )
        return 2
    out = {
        "series": [summarize(s) for s in result.series],
        "problems": [
            {"name": p.name, "error": type(p.error).__name__, "message": p.message} for p in result.problems
        ],
        "skipped": len(result.skipped),
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0 if out["series"] else 2


if __name__ == "__main__":
    raise SystemExit(main())
