"""Reading CT studies: DICOM files, folders and ZIPs, and JPG/PNG slice exports, into HU series.

The package, in the order data flows (each module imports only those above it):

=====================  ================================================================
``errors``, ``types``  the typed errors and the data model (Slice, Series, Study, ReadResult)
``limits``             per-image and per-upload pixel limits (:class:`PixelBudget`)
``deid``               pseudonymous study keys, base names, de-identified descriptions
``dicom``              one DICOM file -> HU slices (modality LUT, frames, checks)
``pictures``           one JPG/PNG -> estimated-HU slice
``archives``           ZIP expansion within limits; companion files skipped
``assembly``           instances and pictures -> studies and series, slices in order
``reader``             the entry points :func:`read_uploads`, :func:`read_paths`, :func:`read_series`
``summary``            :func:`view` (8-bit window) and :func:`summarize`
``__main__``           the CLI, ``python -m core.imaging PATH...``
=====================  ================================================================

No raw UID, patient name, patient id, birth date, address or free-text comment leaves this package:
studies and series are known by keyed hashes (:func:`study_key_for`), and ``Series.metadata``
holds only the technical fields listed in :data:`METADATA_KEYS`. ``Slice.sop_instance_uid`` is
the one exception (per-instance rows of the CSV export need it). ``Slice.source`` is the file's
base name only, because folder and ZIP member names often hold patient names or ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.imaging.archives import MAX_ZIP_RATIO, SKIPPED_SUFFIXES
from core.imaging.deid import study_key_for
from core.imaging.dicom import slice_position
from core.imaging.errors import (
    ArchiveTooLargeError,
    EmptyArchiveError,
    ImageTooLargeError,
    ImagingError,
    MixedSeriesError,
    NoPixelDataError,
    NotAnImageError,
    UnsupportedTransferSyntaxError,
)
from core.imaging.limits import PixelBudget
from core.imaging.pictures import read_picture
from core.imaging.reader import read_paths, read_series, read_uploads
from core.imaging.summary import summarize, view
from core.imaging.types import METADATA_KEYS, FileProblem, ReadResult, Series, Slice, Study

__all__ = [
    "MAX_ZIP_RATIO",
    "METADATA_KEYS",
    "SKIPPED_SUFFIXES",
    "ArchiveTooLargeError",
    "EmptyArchiveError",
    "FileProblem",
    "ImageTooLargeError",
    "ImagingError",
    "MixedSeriesError",
    "NoPixelDataError",
    "NotAnImageError",
    "PixelBudget",
    "ReadResult",
    "Series",
    "Slice",
    "Study",
    "UnsupportedTransferSyntaxError",
    "main",
    "read_paths",
    "read_picture",
    "read_series",
    "read_uploads",
    "slice_position",
    "study_key_for",
    "summarize",
    "view",
]


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI (``lungreview imaging``): see :func:`core.imaging.__main__.run`.

    Returns:
        0 when at least one series was read, 2 when nothing was.
    """
    from core.imaging.__main__ import run  # imported here: ``python -m core.imaging`` runs that module

    return run(argv)
