"""The AI result as DICOM objects for the hospital's PACS: a Secondary Capture and a Structured Report.

Built on ``highdicom``:

* :func:`secondary_capture` - a Secondary Capture Image (SC IOD, PS3.3 A.8.1; ``highdicom.sc.SCImage``)
  of one slice: the windowed slice with its Grad-CAM overlay (RGB, passed in) under a burnt-in banner
  "AI heatmap - not for diagnostic use - <model id>", in a new series of the source study, with a
  Source Image Sequence that references the CT slice it was made from.
* :func:`structured_report` - a Comprehensive 3D SR (PS3.3 A.35.13) holding a TID 1500 Measurement
  Report (PS3.16): the AI's series finding, per-class probabilities, the model id (Algorithm Name)
  and sha256 (Algorithm Version), the most suspicious slice as the group's source image, a
  qualitative evaluation "unverified AI result", and, when the reader has saved a read, the
  reader's finding and agreement. Verification Flag is always UNVERIFIED (nobody signs the SR in
  LungReview). Each call gives a new SOP Instance UID: a changed read is a new SR that names the
  previous one in the Predecessor Documents Sequence, never an overwrite.
* :func:`zip_of` - Part 10 files in a ZIP for "Download DICOM".

Identity of the source. The objects must go back into the same study in the PACS, so they carry
the source study's real Patient and Study modules and reference the real SOP Instance UIDs.
``core.imaging`` de-identifies what it keeps, so this module takes pixel-free pydicom headers of
the source instances instead: :func:`source_headers` reads them from the bytes of an upload, and
``core.pacs.dicomweb.PacsClient.retrieve_series`` returns them with the retrieved series. The caller
holds them in memory for the session; nothing here writes them anywhere but into the exported
objects.

New UIDs are made by ``pydicom.uid.generate_uid`` under ``get_settings().uid_root``
(``LUNGREVIEW_UID_ROOT``, PS3.5 9.1). Codes for concepts DICOM has no code for use the private
coding scheme :data:`CODING_SCHEME` ("99" prefix: PS3.16 8.2, local coding schemes).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
import numpy as np
import pydicom
from highdicom.sr import CodedConcept
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from core.config import APP_VERSION, get_settings

__all__ = [
    "AIResult",
    "BANNER",
    "CODING_SCHEME",
    "ExportError",
    "ReaderRead",
    "banner_text",
    "burn_banner",
    "new_uid",
    "secondary_capture",
    "source_headers",
    "structured_report",
    "to_bytes",
    "zip_of",
]

#: Private coding scheme designator of LungReview's own concepts (PS3.16 8.2: "99" + name).
CODING_SCHEME = "99LUNGREVIEW"
#: The burnt-in banner, before the model id.
BANNER = "AI heatmap - not for diagnostic use"
MANUFACTURER = "LungReview"
#: Series numbers of exported series (high, so they sort after the scanner's own series).
SC_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902

_UNVERIFIED = CodedConcept("UNVERIFIED-AI", CODING_SCHEME, "Unverified AI result - not for diagnostic use")
_VERIFICATION = CodedConcept("VERIFICATION", CODING_SCHEME, "Result verification status")
_AI_FINDING = CodedConcept("AI-FINDING", CODING_SCHEME, "AI series finding")
_READER_FINDING = CodedConcept("READER-FINDING", CODING_SCHEME, "Reader finding")
_READER_AGREEMENT = CodedConcept("READER-AGREEMENT", CODING_SCHEME, "Reader agreement with AI")
#: LOINC 24627-2 "CT Chest" (a CID 100 style procedure code for TID 1500 "Procedure reported").
_PROCEDURE = CodedConcept("24627-2", "LN", "CT Chest")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class ExportError(Exception):
    """An export cannot be made from what was given; the message says what is missing."""


@dataclass(frozen=True)
class AIResult:
    """The AI's result of one series, as the SR reports it.

    Attributes:
        model_id: the model's registry id. model_sha256: sha256 hex of its weights file (64 chars).
        finding: the AI's series finding (a ``core.config.Finding`` value, or e.g.
            "not applicable" when the out-of-distribution guard flagged the series).
        probabilities: class name -> probability in [0, 1] (the dashboard passes the row of the
            most suspicious slice; ``series_score`` is the series' probability of ``positive_class``).
        series_score: the series-level probability of ``positive_class``, in [0, 1].
        positive_class: the class ``series_score`` is about (e.g. "malignant").
        most_suspicious_sop_uid: SOPInstanceUID of the most suspicious slice.
    """

    model_id: str
    model_sha256: str
    finding: str
    probabilities: Mapping[str, float]
    series_score: float
    positive_class: str
    most_suspicious_sop_uid: str


@dataclass(frozen=True)
class ReaderRead:
    """The reader's saved read (once there is one).

    Attributes:
        finding: ``core.config.Finding`` value. agreement: ``core.config.Agreement`` value.
        reader: the name the report gives the reader (PN), e.g. the user's display name.
    """

    finding: str
    agreement: str
    reader: str


# -------------------------------------------------------------------------------------- helpers
def new_uid() -> str:
    """A new UID under ``get_settings().uid_root`` (``pydicom.uid.generate_uid``, PS3.5 9.1)."""
    return generate_uid(prefix=get_settings().uid_root)


def banner_text(model_id: str) -> str:
    """``"AI heatmap - not for diagnostic use - <model id>"``."""
    return f"{BANNER} - {model_id}"


def to_bytes(ds: Dataset) -> bytes:
    """A DICOM Part 10 file of ``ds`` (preamble, file meta, dataset; PS3.10 7.1)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def zip_of(datasets: Iterable[Dataset]) -> bytes:
    """A ZIP of Part 10 files named ``<Modality>_<n>.dcm`` (no patient data in the names).

    Returns:
        bytes of the ZIP (deflated).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, ds in enumerate(datasets, start=1):
            zf.writestr(f"{ds.get('Modality', 'OT')}_{i:02d}.dcm", to_bytes(ds))
    return buf.getvalue()


def source_headers(items: Iterable[tuple[str, bytes]], max_zip_bytes: int | None = None) -> dict[str, Dataset]:
    """Pixel-free headers of the DICOM instances in uploaded files and ZIPs, by SOPInstanceUID.

    For an export of an uploaded study (a PACS retrieval returns these headers itself). Files
    that are not DICOM are skipped; ZIP members are read up to ``max_zip_bytes`` uncompressed in
    all (default ``get_settings().max_zip_mb`` MiB, the limit ``core.imaging`` applies).

    Args:
        items: (file name, bytes) pairs as the upload widget gives them.

    Returns:
        SOPInstanceUID -> pydicom Dataset without pixel data (``stop_before_pixels``).
    """
    limit = max_zip_bytes if max_zip_bytes is not None else get_settings().max_zip_mb * 1024 * 1024
    out: dict[str, Dataset] = {}

    def add(data: bytes) -> None:
        for force in (False, True):
            try:
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=force)
            except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
                continue
            if "SOPInstanceUID" in ds and "StudyInstanceUID" in ds:
                out[str(ds.SOPInstanceUID)] = ds
            return

    for _name, data in items:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                used = 0
                for info in zf.infolist():
                    used += info.file_size
                    if info.is_dir() or used > limit:
                        continue
                    add(zf.read(info))
        else:
            add(data)
    return out


def _orientation_letters(cosines: Sequence[float]) -> str:
    """The PS3.3 C.7.6.1.1.1 patient-orientation letters of a direction (dominant axis first)."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    order = np.argsort(-np.abs(np.asarray(cosines, dtype=float)))
    out = ""
    for axis in order:
        c = float(cosines[axis])
        if abs(c) > 0.25:
            out += letters[axis][0 if c > 0 else 1]
    return out[:2] or "L"


def burn_banner(rgb: np.ndarray, text: str) -> np.ndarray:
    """The picture with a black strip on top holding ``text`` in white (burnt into the pixels).

    The strip is added above the picture (no pixel of the image is covered).

    Args:
        rgb: uint8 (y, x, 3).
        text: the banner text; shrunk to fit the width.

    Returns:
        uint8 (y + h, x, 3), h = strip height (at least 16 pixels, 1/16 of the height).

    Raises:
        ExportError: ``rgb`` is not a uint8 (y, x, 3) array.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ExportError(f"the overlay must be uint8 (y, x, 3), got {arr.dtype} {arr.shape}")
    rows, cols = arr.shape[:2]
    strip = max(16, rows // 16)
    size = strip - 4
    font = ImageFont.load_default(size=size)
    banner = Image.new("RGB", (cols, strip), (0, 0, 0))  # text drawn here cannot spill into the image
    draw = ImageDraw.Draw(banner)
    while size > 6 and draw.textlength(text, font=font) > cols - 4:
        size -= 1
        font = ImageFont.load_default(size=size)
    draw.text((2, strip // 2), text, fill=(255, 255, 255), font=font, anchor="lm")
    return np.concatenate([np.asarray(banner, dtype=np.uint8), arr], axis=0)


def _check_source(source: Dataset) -> None:
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
               if not source.get(k)]
    if missing:
        raise ExportError(f"the source image lacks {', '.join(missing)}: export needs a DICOM source "
                          "(JPG/PNG uploads cannot be sent to a PACS)")


def _person_name(name: str) -> str:
    """A PN value (PS3.5 6.2.1) of a display name: "Jo Smith" -> "Jo Smith^" (one component)."""
    name = (name or "Reader").strip()[:60]
    return name if "^" in name else name + "^"


def _content_time(ds: Dataset) -> None:
    now = datetime.now()
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")


# -------------------------------------------------------------------------------------- exports
def secondary_capture(source: Dataset, overlay_rgb: np.ndarray, model_id: str, *, series_uid: str | None = None,
                      instance_number: int = 1) -> Dataset:
    """A Secondary Capture of one slice with its Grad-CAM overlay, in a new series of the source study.

    Args:
        source: the source CT instance's header (with its Patient/Study modules and UIDs; pixel data
            not needed), e.g. from :func:`source_headers`.
        overlay_rgb: uint8 (y, x, 3): the windowed slice with the Grad-CAM overlay
            (``core.inference.explain.overlay``). The banner is added above it (:func:`burn_banner`).
        model_id: the model's id, written into the banner and the series description.
        series_uid: SeriesInstanceUID to put it in (several slices in one series); default a new one.
        instance_number: InstanceNumber within that series.

    Returns:
        The SC instance (RGB, 8 bits, Explicit VR Little Endian) with StudyInstanceUID and the
        patient of ``source``, new Series/SOP Instance UIDs under the UID root, BurnedInAnnotation
        YES, ConversionType WSD and a Source Image Sequence naming ``source``.

    Raises:
        ExportError: ``source`` lacks the UIDs, or ``overlay_rgb`` is not uint8 (y, x, 3).
    """
    _check_source(source)
    pixels = burn_banner(overlay_rgb, banner_text(model_id))
    iop = [float(v) for v in source.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    orientation = (_orientation_letters(iop[:3]), _orientation_letters(iop[3:]))
    spacing = source.get("PixelSpacing")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid or new_uid(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=new_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
        patient_orientation=orientation,
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
    sc.ConversionType = "WSD"  # workstation (PS3.3 C.8.6.1)
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = f"LungReview AI heatmap - not for diagnostic use - {model_id}"[:64]
    sc.DerivationDescription = banner_text(model_id)[:1024]
    sc.SoftwareVersions = APP_VERSION
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    # General Series Laterality is Type 2C (paired body parts); the SC of a chest CT slice leaves it
    # empty, as the source does when it has none (dciodvfy reports its absence as an error).
    sc.Laterality = source.get("Laterality") or None
    _content_time(sc)
    return sc


def _code(prefix: str, value: str) -> CodedConcept:
    """A private code for a closed-choice value (Code Value is SH: at most 16 characters)."""
    return CodedConcept(f"{prefix}-{value.upper().replace(' ', '-')}"[:16], CODING_SCHEME, value.capitalize())


def structured_report(source: Dataset, ai: AIResult, read: ReaderRead | None = None, *,
                      previous: Dataset | None = None, series_uid: str | None = None) -> Dataset:
    """A Comprehensive 3D SR (TID 1500 Measurement Report) of the AI's result, flagged unverified.

    Args:
        source: header of the most suspicious slice (SOPInstanceUID ``ai.most_suspicious_sop_uid``);
            it is the report's evidence and the measurement group's source image.
        ai: the AI result (model id and sha256, finding, probabilities).
        read: the reader's saved read, or None before there is one. With a read, the observation
            context names the reader (Person observer, TID 1003) beside the device (TID 1004).
        previous: the SR this one replaces (a changed read); listed in the Predecessor Documents
            Sequence (PS3.3 C.17.2.3).
        series_uid: SeriesInstanceUID for the report; default that of ``previous``, else a new one.

    Returns:
        The SR instance: new SOP Instance UID under the UID root; CompletionFlag PARTIAL,
        VerificationFlag UNVERIFIED.

    Raises:
        ExportError: ``source`` lacks the UIDs or is not the most suspicious slice; a probability
            lies outside [0, 1]; the sha256 is not 64 hex characters.
    """
    _check_source(source)
    if str(source.SOPInstanceUID) != ai.most_suspicious_sop_uid:
        raise ExportError("the source header given is not the most suspicious slice's")
    sha = ai.model_sha256.lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ExportError(f"model sha256 must be 64 hex characters, got {ai.model_sha256!r}")
    values = {**ai.probabilities, "series " + ai.positive_class: ai.series_score}
    if any(not 0.0 <= float(p) <= 1.0 for p in values.values()):
        raise ExportError(f"probabilities must lie in [0, 1], got {values}")
    settings = get_settings()
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(prefix=settings.uid_root, entropy_srcs=[MANUFACTURER, ai.model_id, sha]),
            name=MANUFACTURER, manufacturer_name=MANUFACTURER, model_name=ai.model_id[:64]),
    )
    person = None
    if read is not None:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=_person_name(read.reader)),
        )
    context = hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device)
    algorithm = hd.sr.AlgorithmIdentification(name=ai.model_id[:64], version=sha)
    unit = codes.UCUM.NoUnits
    measurements = [
        hd.sr.Measurement(name=CodedConcept(f"P-{i}", CODING_SCHEME, f"AI probability of {name}"[:64]),
                          value=float(p), unit=unit, algorithm_id=algorithm)
        for i, (name, p) in enumerate(values.items())
    ]
    ai_group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(), identifier="LungReview AI series result"),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=_AI_FINDING, value=_code("F", ai.finding)),
            hd.sr.QualitativeEvaluation(name=_VERIFICATION, value=_UNVERIFIED),
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    groups = [ai_group]
    if read is not None:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(), identifier="LungReview reader read"),
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(name=_READER_FINDING, value=_code("F", read.finding)),
                hd.sr.QualitativeEvaluation(name=_READER_AGREEMENT, value=_code("A", read.agreement)),
            ],
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        ))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=_PROCEDURE,
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report[0],
        series_instance_uid=series_uid or (str(previous.SeriesInstanceUID) if previous is not None else new_uid()),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=new_uid(),
        instance_number=int(previous.get("InstanceNumber", 0)) + 1 if previous is not None else 1,
        manufacturer=MANUFACTURER,
        is_complete=False,
        is_final=False,
        is_verified=False,
        previous_versions=[previous] if previous is not None else None,
    )
    sr.SeriesDescription = "LungReview AI result - unverified - not for diagnostic use"
    sr.SoftwareVersions = APP_VERSION
    return sr
