"""The errors of :mod:`core.imaging`: every one is an :class:`ImagingError` whose message says, in words a
radiologist understands, what is wrong with the file and what to do about it (never an exception class
name or a traceback)."""

from __future__ import annotations

__all__ = [
    "ArchiveTooLargeError",
    "EmptyArchiveError",
    "ImageTooLargeError",
    "ImagingError",
    "MixedSeriesError",
    "NoPixelDataError",
    "NotAnImageError",
    "UnsupportedTransferSyntaxError",
]


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
    """A ZIP expands beyond the size limit, holds too many files or compresses suspiciously well (zip bomb)."""


class ImageTooLargeError(ImagingError):
    """An image has more pixels than ``get_settings().max_pixels`` allows, or an upload more decoded
    pixels in all than ``get_settings().max_upload_pixels``."""
