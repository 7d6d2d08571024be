"""Small synthetic DICOM files for tests of core.imaging (written with pydicom, never stored).

Every file is a CT Image (or Enhanced CT Image for ``frames > 1``) with known stored values, so a
test can check the exact HU the reader must produce. Patient attributes carry recognisable fake
values (:data:`PATIENT_NAME`, :data:`PATIENT_ID`, :data:`BIRTH_DATE`) so de-identification can
be checked by searching for them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

PATIENT_NAME = "Zyxwv^Quentin"
PATIENT_ID = "PID-8675309"
BIRTH_DATE = "19411207"
ADDRESS = "42 Wallaby Way, Sydney"
COMMENT = "called Dr Quentin Zyxwv at home"


def stored_values(rows: int = 8, cols: int = 8, offset: int = 0) -> np.ndarray:
    """A deterministic int16 (rows, cols) ramp of stored values 0..rows*cols-1 (+ offset)."""
    return (np.arange(rows * cols, dtype=np.int32).reshape(rows, cols) * 7 + offset).astype(np.int16)


def make_dicom(
    *,
    pixels: np.ndarray | None = None,
    rows: int = 8,
    cols: int = 8,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    instance_number: int | None = 1,
    position: Sequence[float] | None = (0.0, 0.0, 0.0),
    orientation: Sequence[float] | None = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    signed: bool = True,
    window: tuple[Sequence[float], Sequence[float]] | None = ((-600.0, 40.0), (1500.0, 400.0)),
    with_pixels: bool = True,
    transfer_syntax: str = ExplicitVRLittleEndian,
    encapsulated_junk: bool = False,
    preamble: bool = True,
    modality: str = "CT",
    series_description: str = "Chest 1.0 B70f",
    series_number: int = 2,
    frame_positions: Sequence[Sequence[float]] | None = None,
    extra: dict | None = None,
) -> bytes:
    """Bytes of a DICOM Part 10 file.

    Args:
        pixels: int16 (rows, cols) or, with ``frame_positions``, (frames, rows, cols) stored values
            (default :func:`stored_values`).
        frame_positions: ImagePositionPatient per frame: writes an Enhanced CT multi-frame object
            with Per-Frame Functional Groups (PlanePositionSequence) and shared orientation,
            pixel measures and pixel value transformation (slope/intercept).
        encapsulated_junk: write encapsulated (compressed-style) pixel data of junk bytes, for
            transfer syntaxes that no decoder handles.
        preamble: False writes the dataset without the 128-byte preamble and 'DICM' prefix.
        extra: additional keyword -> value attributes.
    """
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    multi = frame_positions is not None
    if pixels is None:
        pixels = stored_values(rows, cols)
        if multi:
            pixels = np.stack(
                [stored_values(rows, cols, offset=100 * i) for i in range(len(frame_positions))]
            )
    rows, cols = pixels.shape[-2:]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage if multi else CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientAddress = ADDRESS
    ds.ImageComments = COMMENT
    ds.StudyDate = "20190304"
    ds.SeriesDate = "20190304"
    ds.Modality = modality
    ds.Manufacturer = "ACME"
    ds.SeriesDescription = series_description
    ds.SeriesNumber = series_number
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = 1.0
    ds.PixelSpacing = [0.7, 0.8]
    ds.ConvolutionKernel = "B70f"
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if not multi:
        if position is not None:
            ds.ImagePositionPatient = list(position)
        if orientation is not None:
            ds.ImageOrientationPatient = list(orientation)
        if slope is not None:
            ds.RescaleSlope = slope
            ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter = list(window[0])
        ds.WindowWidth = list(window[1])
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if multi:
        n = len(frame_positions)
        ds.NumberOfFrames = n
        shared = Dataset()
        ori = Dataset()
        ori.ImageOrientationPatient = list(orientation or (1, 0, 0, 0, 1, 0))
        measures = Dataset()
        measures.PixelSpacing = [0.7, 0.8]
        measures.SliceThickness = 1.0
        pvt = Dataset()
        pvt.RescaleSlope = slope if slope is not None else 1.0
        pvt.RescaleIntercept = intercept if intercept is not None else 0.0
        pvt.RescaleType = "HU"
        shared.PlaneOrientationSequence = DicomSequence([ori])
        shared.PixelMeasuresSequence = DicomSequence([measures])
        shared.PixelValueTransformationSequence = DicomSequence([pvt])
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
        frames = []
        for pos in frame_positions:
            item, plane = Dataset(), Dataset()
            plane.ImagePositionPatient = list(pos)
            item.PlanePositionSequence = DicomSequence([plane])
            frames.append(item)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    if with_pixels:
        if encapsulated_junk:
            ds.PixelData = encapsulate([b"\x00\x11\x22\x33" * 16])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        else:
            ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2" if signed else "<u2").tobytes()
            ds["PixelData"].VR = "OW"
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=preamble)
    return buf.getvalue()
