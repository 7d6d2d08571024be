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
  previous one in the Predecessor Documents Sequence, never an overwrite. With ``nodules``, one
  more measurement group per nodule the reader accepted, corrected or added (see the section
  "Nodules in the SR" below: :class:`ReportedNodule`, :func:`nodule_groups`).
* :func:`draw_nodule_circles` - circles of nodules' diameters drawn on a slice (for the SC).
* :func:`zip_of` - Part 10 files in a ZIP for "Download DICOM".

Identity of the source. The objects must go back into the same study in the PACS, so they carry
the source study's real Patient and Study modules and reference the real SOP Instance UIDs.
``core.imaging`` de-identifies what it keeps, so this module takes pixel-free pydicom headers of
the source instances instead: :func:`source_headers` reads them from the bytes of an upload, and
``core.dicomweb.PacsClient.retrieve_series`` returns them with the retrieved series. The caller
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
    "REPORTED_STATUSES",
    "ExportError",
    "NoduleReport",
    "ReaderRead",
    "ReportedNodule",
    "banner_text",
    "burn_banner",
    "circle_graphic_data",
    "draw_nodule_circles",
    "nodule_groups",
    "nodule_laterality",
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
            (``core.explain.overlay``). The banner is added above it (:func:`burn_banner`).
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
                      previous: Dataset | None = None, series_uid: str | None = None,
                      nodules: NoduleReport | None = None) -> Dataset:
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
        nodules: the nodule detector's model and the reader's nodules (:class:`NoduleReport`);
            one Planar ROI measurement group per accepted, corrected or added nodule
            (:func:`nodule_groups`), after the AI and reader groups; their slices join the
            evidence. None or no reported nodule: no nodule groups.

    Returns:
        The SR instance: new SOP Instance UID under the UID root; CompletionFlag PARTIAL,
        VerificationFlag UNVERIFIED.

    Raises:
        ExportError: ``source`` lacks the UIDs or is not the most suspicious slice; a probability
            lies outside [0, 1]; the sha256 is not 64 hex characters; a nodule is malformed
            (see :func:`nodule_groups`).
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
    evidence = [source]
    if nodules is not None:
        groups.extend(nodule_groups(nodules, study_uid=str(source.StudyInstanceUID)))
        evidence.extend(_nodule_evidence(nodules, exclude=str(source.SOPInstanceUID)))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=_PROCEDURE,
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
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


# ======================================================================= Nodules in the SR
# One TID 1500 measurement group per nodule the reader accepted, corrected or added.
#
# Why these highdicom classes: a nodule is a finding ON an image region, so each one is a
# ``highdicom.sr.PlanarROIMeasurementsAndQualitativeEvaluations`` (TID 1410 "Planar ROI
# Measurements and Qualitative Evaluations" inside TID 1500), not the image-level
# ``MeasurementsAndQualitativeEvaluations`` (TID 1501) used above for the series result. Its
# region is an ``ImageRegion`` (SCOORD, PS3.3 C.18.6) of graphic type CIRCLE on the CT instance
# through the nodule's centre: DICOM's CIRCLE is exactly a centre and one point on the rim, which
# is what a detector that gives a centre and a diameter knows (a POLYLINE outline would invent a
# shape; an ``ImageRegion3D`` has no CIRCLE and a 3D ELLIPSOID would need three axes). The 2D
# region keeps the SR readable by viewers that draw TID 1500 ROIs on the referenced image.
# Each group has its own TrackingIdentifier (text + UID): the UID is derived from the study and a
# stable key of the nodule, so a changed read's new SR tracks the same nodule under the same UID.
# Finding "Nodule" (SCT 27925004), finding site "Lung" (SCT 39607008) with laterality "Left"
# (SCT 7771000) or "Right" (SCT 24028007), "Long axis" (SCT 103339001) in "mm" (UCUM); the AI's
# malignancy rating and p(nodule) and the reader's decision and type have no standard codes and
# use the private scheme :data:`CODING_SCHEME`.

#: Statuses of :class:`ReportedNodule` that become measurement groups; "rejected" and
#: "undecided" ones are left out of the SR.
REPORTED_STATUSES: tuple[str, ...] = ("accepted", "corrected", "added")
_ALL_STATUSES = (*REPORTED_STATUSES, "rejected", "undecided")
_READER_DECISION = CodedConcept("READER-NODULE", CODING_SCHEME, "Reader decision on nodule")
_NODULE_TYPE = CodedConcept("NODULE-TYPE", CODING_SCHEME, "Nodule attenuation type")
_AI_MALIGNANCY = CodedConcept("AI-MALIGNANCY", CODING_SCHEME, "AI malignancy rating (LIDC scale 1-5)")
_AI_P_NODULE = CodedConcept("AI-P-NODULE", CODING_SCHEME, "AI probability of nodule")
_OUTSIDE_LUNG = CodedConcept("OUTSIDE-LUNG", CODING_SCHEME, "Centre outside lung mask")


@dataclass(frozen=True)
class ReportedNodule:
    """One nodule of the reader's current read, as the SR reports it.

    Attributes:
        source: header of the CT instance through the nodule's centre (its slice), with
            PixelSpacing, Rows and Columns; same study as the report's source.
        centre_rc: (row, column) pixel indices of the centre on that slice
            (``Nodule.centre_voxel`` y, x).
        centre_mm: (x, y, z) DICOM patient coordinates (LPS, mm) of the centre.
        diameter_mm: the diameter that stands (the reader's when corrected or added), > 0.
        status: "accepted", "corrected" (accepted with the reader's diameter), "added" (by the
            reader), or "rejected" / "undecided" (left out of the SR).
        tracking_key: stable text naming this nodule across reports, e.g. "nodule 17" (the
            ``nodules`` row) or "added 42" (the first ``nodule_reads`` row of an added nodule).
        label: the Tracking Identifier text, e.g. "AI nodule 1" or "Reader nodule 1" (<= 64 chars).
        malignancy: the AI's malignancy rating (LIDC 1-5), None for an added nodule.
        p_nodule: the AI's probability of a nodule in [0, 1], None for an added nodule.
        nodule_type: a ``core.config.NoduleType`` value the reader gave, or None.
        outside_lung: the reader placed it outside the lung-field mask.
    """

    source: Dataset
    centre_rc: tuple[int, int]
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    status: str
    tracking_key: str
    label: str
    malignancy: float | None = None
    p_nodule: float | None = None
    nodule_type: str | None = None
    outside_lung: bool = False


@dataclass(frozen=True)
class NoduleReport:
    """The nodules of one detection as a reader's read has them, for :func:`structured_report`.

    Attributes:
        detector_model_id: the nodule detector's registry id (Algorithm Name of the AI's values).
        detector_sha256: sha256 hex of its weights (Algorithm Version), 64 characters.
        nodules: every nodule of the read (rejected and undecided ones are skipped).
        midline_x_mm: patient x (LPS, mm) of the body's midline, for laterality: nodules with x
            above it lie in the patient's left lung. Default 0: the patient coordinate origin,
            which the scanner places near the table's centre line; pass the lung mask's centre
            when it is known.
    """

    detector_model_id: str
    detector_sha256: str
    nodules: Sequence[ReportedNodule]
    midline_x_mm: float = 0.0


def nodule_laterality(x_mm: float, midline_x_mm: float = 0.0) -> str | None:
    """"left", "right" or None (on the midline) from a patient x coordinate.

    DICOM patient coordinates are LPS (PS3.3 C.7.6.2.1.1): +x points to the patient's left, so a
    centre with x above the midline lies in the left lung.

    Args:
        x_mm: the centre's patient x in mm. midline_x_mm: the midline's patient x in mm.

    Returns:
        "left", "right", or None when x equals the midline.

    Raises:
        ExportError: a coordinate is not a finite number.
    """
    x, mid = float(x_mm), float(midline_x_mm)
    if not (np.isfinite(x) and np.isfinite(mid)):
        raise ExportError(f"patient x coordinates must be finite numbers of mm, got {x_mm!r}, {midline_x_mm!r}")
    if x == mid:
        return None
    return "left" if x > mid else "right"


def circle_graphic_data(centre_rc: Sequence[float], diameter_mm: float, pixel_spacing: Sequence[float]) -> np.ndarray:
    """SCOORD Graphic Data of a CIRCLE: its centre and a point on its rim, in image pixel coordinates.

    Image coordinates are (column, row) with (0, 0) the top left corner of the top left pixel, so
    the centre of pixel (r, c) is (c + 0.5, r + 0.5) (PS3.3 C.18.6.1.2; C.10.5.1.2). The rim point
    lies one radius (diameter / 2 / column spacing) to the right of the centre.

    Args:
        centre_rc: (row, column) pixel indices of the centre.
        diameter_mm: diameter in mm, > 0.
        pixel_spacing: DICOM PixelSpacing (row spacing, column spacing) in mm, both > 0.

    Returns:
        float32 (2, 2): [[column, row] of the centre, [column, row] of the rim point].

    Raises:
        ExportError: non-finite or non-positive diameter or spacing, or a negative centre.
    """
    r, c = (float(v) for v in centre_rc)
    spacing = [float(v) for v in pixel_spacing]
    d = float(diameter_mm)
    if len(spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ExportError(f"PixelSpacing must be two positive numbers of mm, got {pixel_spacing!r}")
    if not (np.isfinite(d) and d > 0):
        raise ExportError(f"a nodule diameter must be a positive number of mm, got {diameter_mm!r}")
    if not (np.isfinite(r) and np.isfinite(c) and r >= 0 and c >= 0):
        raise ExportError(f"a nodule centre must be (row, column) pixel indices >= 0, got {centre_rc!r}")
    radius_px = d / 2.0 / spacing[1]
    return np.array([[c + 0.5, r + 0.5], [c + 0.5 + radius_px, r + 0.5]], dtype=np.float32)


def _check_nodule(n: ReportedNodule, study_uid: str) -> None:
    _check_source(n.source)
    if str(n.source.StudyInstanceUID) != study_uid:
        raise ExportError(f"nodule {n.label!r} is on an image of another study; export one study at a time")
    if n.status not in _ALL_STATUSES:
        raise ExportError(f"nodule {n.label!r} has status {n.status!r}; use one of {', '.join(_ALL_STATUSES)}")
    if not n.label or len(n.label) > 64 or not n.tracking_key:
        raise ExportError(f"a nodule needs a label of 1-64 characters and a tracking key, got {n.label!r}")
    if "PixelSpacing" not in n.source:
        raise ExportError(f"the image of nodule {n.label!r} has no PixelSpacing: a circle cannot be sized")
    rows, cols = int(n.source.get("Rows", 0) or 0), int(n.source.get("Columns", 0) or 0)
    r, c = n.centre_rc
    if rows and cols and not (0 <= r < rows and 0 <= c < cols):
        raise ExportError(f"nodule {n.label!r} centre {tuple(n.centre_rc)} lies outside its {rows} x {cols} image")
    if n.malignancy is not None and not 1.0 <= float(n.malignancy) <= 5.0:
        raise ExportError(f"nodule {n.label!r}: malignancy must lie in [1, 5], got {n.malignancy!r}")
    if n.p_nodule is not None and not 0.0 <= float(n.p_nodule) <= 1.0:
        raise ExportError(f"nodule {n.label!r}: p_nodule must lie in [0, 1], got {n.p_nodule!r}")


def nodule_groups(report: NoduleReport, *, study_uid: str
                  ) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """TID 1410 measurement groups (inside TID 1500) of the accepted, corrected and added nodules.

    Per reported nodule, in the order given: Tracking Identifier ``label`` and a Tracking UID made
    from ``study_uid`` and ``tracking_key`` (``generate_uid`` under the UID root, so the same
    nodule keeps its UID in a later SR); the region, a CIRCLE on ``source``
    (:func:`circle_graphic_data`); finding type "Nodule" (SCT); finding site "Lung" with the
    laterality of :func:`nodule_laterality` (none on the midline); "Long axis" = ``diameter_mm``
    in mm (UCUM), attributed to the detector (Algorithm Identification) when "accepted" (the
    AI's estimate) and to nobody when "corrected" or "added" (the reader's); the AI's malignancy
    rating and p(nodule) when given (attributed to the detector); and qualitative evaluations
    "Reader decision on nodule" = Accepted / Corrected / Added, the nodule type when given, and
    "Centre outside lung mask" = Yes when flagged. Nodules with status "rejected" or "undecided"
    get no group (a rejected AI finding is not a finding).

    Args:
        report: detector id and sha256 and the reader's nodules.
        study_uid: StudyInstanceUID of the report (every nodule's image must be of it).

    Returns:
        The groups (empty when nothing is reported).

    Raises:
        ExportError: the detector sha256 is not 64 hex characters; a nodule's image lacks UIDs or
            PixelSpacing or is of another study; an unknown status; a centre outside the image;
            a bad diameter, malignancy (outside 1-5) or p_nodule (outside 0-1); an empty label.
    """
    sha = report.detector_sha256.lower()
    if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
        raise ExportError(f"detector sha256 must be 64 hex characters, got {report.detector_sha256!r}")
    algorithm = hd.sr.AlgorithmIdentification(name=report.detector_model_id[:64], version=sha)
    root = get_settings().uid_root
    groups = []
    for n in report.nodules:
        _check_nodule(n, study_uid)
        if n.status not in REPORTED_STATUSES:
            continue
        spacing = [float(v) for v in n.source.PixelSpacing]
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
            graphic_data=circle_graphic_data(n.centre_rc, n.diameter_mm, spacing),
            source_image=hd.sr.SourceImageForRegion.from_source_image(n.source),
        )
        side = nodule_laterality(n.centre_mm[0], report.midline_x_mm)
        site = hd.sr.FindingSite(anatomic_location=codes.SCT.Lung,
                                 laterality={"left": codes.SCT.Left, "right": codes.SCT.Right}.get(side or ""))
        measurements = [hd.sr.Measurement(name=codes.SCT.LongAxis, value=float(n.diameter_mm),
                                          unit=codes.UCUM.Millimeter,
                                          algorithm_id=algorithm if n.status == "accepted" else None)]
        if n.malignancy is not None:
            measurements.append(hd.sr.Measurement(name=_AI_MALIGNANCY, value=float(n.malignancy),
                                                  unit=codes.UCUM.NoUnits, algorithm_id=algorithm))
        if n.p_nodule is not None:
            measurements.append(hd.sr.Measurement(name=_AI_P_NODULE, value=float(n.p_nodule),
                                                  unit=codes.UCUM.NoUnits, algorithm_id=algorithm))
        evaluations = [hd.sr.QualitativeEvaluation(name=_READER_DECISION, value=_code("N", n.status))]
        if n.nodule_type:
            evaluations.append(hd.sr.QualitativeEvaluation(name=_NODULE_TYPE, value=_code("T", n.nodule_type)))
        if n.outside_lung:
            evaluations.append(hd.sr.QualitativeEvaluation(name=_OUTSIDE_LUNG, value=codes.SCT.Yes))
        uid = generate_uid(prefix=root, entropy_srcs=[study_uid, "nodule", n.tracking_key])
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=n.label),
            referenced_region=region,
            finding_type=codes.SCT.Nodule,
            finding_sites=[site],
            measurements=measurements,
            qualitative_evaluations=evaluations,
        ))
    return groups


def _nodule_evidence(report: NoduleReport, *, exclude: str) -> list[Dataset]:
    """The images of the reported nodules, each once, without the report's own source ``exclude``."""
    seen = {exclude}
    out = []
    for n in report.nodules:
        uid = str(n.source.SOPInstanceUID)
        if n.status in REPORTED_STATUSES and uid not in seen:
            seen.add(uid)
            out.append(n.source)
    return out


def draw_nodule_circles(rgb: np.ndarray, circles: Iterable[tuple[float, float, float]],
                        pixel_spacing: Sequence[float], *, colour: tuple[int, int, int] = (255, 215, 0),
                        width: int = 2) -> np.ndarray:
    """A copy of a slice picture with a circle of each nodule's diameter drawn at its centre.

    For the Secondary Capture: draw on the overlay picture, then pass it to
    :func:`secondary_capture` (the banner goes above, so coordinates stay those of the slice).
    With unequal row and column spacing the circle is an ellipse in pixels (a circle in mm).

    Args:
        rgb: uint8 (y, x, 3), the slice picture (e.g. ``core.explain.overlay`` output).
        circles: (row, column, diameter_mm) per nodule: pixel indices of the centre on this slice
            and the diameter in mm.
        pixel_spacing: DICOM PixelSpacing (row spacing, column spacing) in mm, both > 0.
        colour: RGB outline colour. width: outline width in pixels, >= 1.

    Returns:
        uint8 (y, x, 3), a new array (``rgb`` is not changed).

    Raises:
        ExportError: ``rgb`` is not uint8 (y, x, 3); a bad spacing or diameter.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ExportError(f"the picture must be uint8 (y, x, 3), got {arr.dtype} {arr.shape}")
    spacing = [float(v) for v in pixel_spacing]
    if len(spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ExportError(f"PixelSpacing must be two positive numbers of mm, got {pixel_spacing!r}")
    image = Image.fromarray(arr.copy())
    draw = ImageDraw.Draw(image)
    for row, col, diameter in circles:
        d = float(diameter)
        if not (np.isfinite(d) and d > 0):
            raise ExportError(f"a nodule diameter must be a positive number of mm, got {diameter!r}")
        ry, rx = d / 2.0 / spacing[0], d / 2.0 / spacing[1]
        cy, cx = float(row) + 0.5, float(col) + 0.5  # pixel centre, as in circle_graphic_data
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), outline=tuple(colour), width=max(1, int(width)))
    return np.asarray(image, dtype=np.uint8)
