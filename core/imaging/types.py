"""The data model of :mod:`core.imaging`: slices, series, studies and the outcome of reading an upload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config import Window
from core.imaging.errors import ImagingError

__all__ = ["METADATA_KEYS", "FileProblem", "ReadResult", "Series", "Slice", "Study"]

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


@dataclass
class Slice:
    """One 2-D image (a DICOM instance, one frame of a multi-frame instance, or a picture).

    Attributes:
        hu: float32 (y, x) in Hounsfield units, always 2-D and finite; for JPG/PNG estimated from the
            grey values with ``core.windowing.hu_from_picture(pixels, WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD])``.
        source: the file's base name (no folder: folders often hold patient names).
        instance_number: DICOM InstanceNumber, or None.
        sop_instance_uid: DICOM SOPInstanceUID (None for pictures).
        position_mm: position along the slice normal in mm (see ``core.imaging.slice_position``), or None.
        image_position_mm: DICOM Image Position (Patient) (x, y, z) in mm, the patient (LPS)
            coordinates of the centre of the first pixel (PS3.3 C.7.6.2.1.1; per frame for
            enhanced multi-frame images), or None (pictures, missing attribute). With the series'
            ``metadata["image_orientation_patient"]`` and ``spacing_mm`` it maps voxel indices to
            patient coordinates (``core.nodules.volume.voxel_to_patient``).
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
    image_position_mm: tuple[float, float, float] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of ``hu``."""
        return (int(self.hu.shape[0]), int(self.hu.shape[1]))


@dataclass
class Series:
    """One ordered series of slices of one study.

    Attributes:
        study_key, series_key: pseudonymous keys (``core.imaging.study_key_for`` of the Study/Series
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
        duplicates: one sentence per file left out because its bytes equal a file read before it
            (same sha256), e.g. "‘b.dcm’ is the same file as ‘a.dcm’; it was counted once."
    """

    studies: list[Study]
    problems: list[FileProblem]
    skipped: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def series(self) -> list[Series]:
        """All series of all studies, in order."""
        return [se for st in self.studies for se in st.series]
