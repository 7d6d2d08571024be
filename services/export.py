"""DICOM export of an AI result: build the objects, download them or send them to the PACS, audit each.

What the export does (the objects themselves are built by ``core.pacs.export`` on highdicom):

* :func:`ai_result` maps the shown analysis (``services.reading.Analysis``) to the export's
  ``core.pacs.export.AIResult``: model id and sha256, the series finding ("not applicable" when the
  out-of-distribution guard flagged a slice), the probabilities of the most suspicious slice.
* :func:`upload_headers` / :func:`headers_of_series` find the pixel-free source headers of the
  series' instances (the study's real identity, needed to answer into that study): read from an
  upload's bytes, or returned with a PACS retrieval. They stay in the caller's memory only.
* :class:`DicomExports` keeps one browser session's prepared exports (the last few) and the SR
  predecessor chain: a changed read builds a new SR (new SOP Instance UID) that lists the one last
  downloaded or sent as its predecessor; nothing is overwritten.
* :func:`nodule_report` maps the reader's current nodule read (``services.nodules.ReaderNodules``
  of a detection) to the SR's ``core.pacs.export.NoduleReport``: one Planar ROI group per accepted,
  corrected or added nodule (rejected and undecided ones are left out), laterality against the
  lung mask's midline (``services.nodules.midline_x_mm``); :func:`nodule_circles` gives the
  circles the Secondary Capture draws on its slice.
* :func:`record_export` appends the "export" audit event of a download or a send (owns its
  transaction). The audit detail says what was exported and where to, never a patient
  identifier or a UID of the study (pseudonymous study rows are referenced by id).

``core.pacs.export`` imports highdicom (about 1-2 s), so it is imported inside the functions that
build objects: reading a study costs nothing extra until an export is wanted. No Streamlit here;
the page gathers input, calls :class:`DicomExports`, renders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import LRUCache
from sqlalchemy.orm import sessionmaker

from core.domain import NOT_APPLICABLE, WINDOW_PRESETS, WindowPreset, any_flagged, suspicious_index
from core.imaging import Series, view
from db import repository as repo
from db.schema import AuditAction

if TYPE_CHECKING:  # highdicom: loaded when an export is built
    from pydicom.dataset import Dataset

    from core.pacs.export import AIResult, NoduleReport, ReaderRead

#: Where an export went.
DESTINATIONS = ("download", "pacs")
#: DICOM modalities of the exported objects: the Secondary Capture ("OT") and the SR.
KINDS = ("OT", "SR")
#: Prepared exports kept per browser session.
MAX_BUNDLES = 4
#: Statuses of a nodule state that the SR reports and the SC circles (``core.pacs.export.REPORTED_STATUSES``).
REPORTED = ("accepted", "corrected", "added")


def record_export(factory: sessionmaker, *, user_id: int, study_id: int | None, destination: str,
                  kinds: list[str], model_id: str) -> int:
    """Append one "export" audit event for DICOM objects downloaded or sent to the PACS.

    Args:
        factory: the session factory (writeable).
        user_id: the signed-in user. study_id: the study row the objects belong to (None if unknown).
        destination: "download" or "pacs".
        kinds: the objects' DICOM modalities, e.g. ["OT", "SR"] (Secondary Capture, Structured Report).
        model_id: the model whose result was exported.

    Returns:
        The audit event's id.

    Raises:
        ValueError: unknown destination.
        db.repository.ValidationError: the event does not fit the audit table.
    """
    if destination not in DESTINATIONS:
        raise ValueError(f"destination must be one of {DESTINATIONS}, got {destination!r}")
    detail = f"{destination}: {len(kinds)} DICOM object(s) ({', '.join(kinds)}) of model {model_id}"
    with factory.begin() as s:
        row = repo.log_event(s, user_id=user_id, action=AuditAction.EXPORT, object_type="study",
                             object_id=study_id, detail=detail)
        return int(row.id)


# ------------------------------------------------------------------------------ source headers
def upload_headers(items: Iterable[tuple[str, bytes]]) -> dict[str, Dataset]:
    """Pixel-free headers of the DICOM instances in uploaded files, by SOP Instance UID.

    Args:
        items: (file name, bytes) pairs as the upload widget gives them (DICOM files, ZIPs).

    Returns:
        ``core.pacs.export.source_headers`` of the files (other files are skipped).
    """
    from core.pacs.export import source_headers

    return source_headers(list(items))


def headers_of_series(headers: Mapping[str, Dataset] | None, series: Series) -> dict[str, Dataset] | None:
    """The headers among ``headers`` that belong to the slices of ``series``; None when there are none."""
    if not headers:
        return None
    wanted = {s.sop_instance_uid for s in series.slices}
    return {uid: h for uid, h in headers.items() if uid in wanted} or None


# ------------------------------------------------------------------------------ the AI result
def ai_result(series: Series, analysis: Any) -> AIResult:
    """The export's view of an analysis.

    Args:
        series: the analysed ``core.imaging.Series`` (its slices carry SOP Instance UIDs).
        analysis: ``services.reading.Analysis`` (class names, float32 (n, k) probabilities, the
            most suspicious slice, model id and sha256, series finding and score).

    Returns:
        ``core.pacs.export.AIResult``: finding "not applicable" when any slice was flagged out of
        distribution, else the model's series finding; probabilities of the most suspicious slice.
    """
    from core.pacs.export import AIResult

    names = list(analysis.class_names)
    index = int(analysis.most_suspicious_index)
    finding = NOT_APPLICABLE if any_flagged(analysis.ood) else analysis.finding.value
    probs = np.asarray(analysis.probabilities, dtype=float)[index]
    return AIResult(model_id=analysis.model_id, model_sha256=analysis.model_sha256, finding=str(finding),
                    probabilities={n: float(p) for n, p in zip(names, probs, strict=True)},
                    series_score=float(analysis.series_score),
                    positive_class=names[suspicious_index(analysis.class_names)],
                    most_suspicious_sop_uid=str(series.slices[index].sop_instance_uid))


def reader_read(finding: str | None, agreement: str | None, reader: str) -> ReaderRead | None:
    """The reader's saved read as the SR states it; None when finding or agreement is missing."""
    from core.pacs.export import ReaderRead

    if not finding or not agreement:
        return None
    return ReaderRead(finding=str(finding), agreement=str(agreement), reader=reader)


def overlay_picture(series: Series, index: int, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    """uint8 (y, x, 3): slice ``index`` in the lung window with ``heatmap`` (float (y, x) in [0, 1]) over it.

    Raises:
        ValueError: the heatmap's size differs from the slice's, or alpha is outside [0, 1].
    """
    from core.inference.explain import overlay

    picture = view(series.slices[index].hu, WINDOW_PRESETS[WindowPreset.LUNG])
    return overlay(picture, np.asarray(heatmap, dtype=np.float32), alpha=float(alpha))


# ------------------------------------------------------------------------------ nodules
@dataclass(frozen=True)
class NoduleExport:
    """The nodules an export reports: a detection and one reader's current read of it.

    Attributes:
        findings: ``services.nodules.NoduleFindings`` (detector id and sha256).
        read: ``services.nodules.ReaderNodules`` of the reader whose read is exported.
    """

    findings: Any
    read: Any

    @property
    def version(self) -> tuple:
        """Equal versions: the same nodules in the export (``ReaderNodules.version``)."""
        return self.read.version


def nodule_report(series: Series, headers: Mapping[str, Dataset], nodules: NoduleExport,
                  midline_x_mm: float | None = None) -> NoduleReport:
    """The SR's nodule groups of a reader's read (``core.pacs.export.NoduleReport``).

    Each ``db.repository.NoduleState`` becomes a ``core.pacs.export.ReportedNodule`` on the header of
    the slice through its centre: centre (row, column) from ``centre_voxel``, patient mm,
    the diameter that stands, status, tracking key (stable across changes of the read), label
    "AI nodule <rank>" or "Reader nodule <i>", the AI's malignancy and p(nodule), type and the
    outside-lung flag. The SR builder leaves rejected and undecided ones out.

    Args:
        series: the analysed DICOM series (slices with SOP Instance UIDs).
        headers: pixel-free source headers by SOP Instance UID (:func:`headers_of_series`).
        nodules: the detection and the reader's read.
        midline_x_mm: patient x of the midline; None: ``services.nodules.midline_x_mm`` on the
            reported nodules' slices (the patient origin when no slice shows two lungs).

    Returns:
        ``core.pacs.export.NoduleReport``.

    Raises:
        core.pacs.export.ExportError: the header of a reported nodule's slice is missing.
    """
    from core.pacs.export import ExportError, NoduleReport, ReportedNodule
    from services.nodules import midline_x_mm as midline_of

    states = [st for st in nodules.read.states if 0 <= st.slice_index < len(series.slices)]
    reported = [st for st in states if st.status in REPORTED]
    if midline_x_mm is None:
        midline_x_mm = midline_of(series, [st.slice_index for st in reported] or None)[0]
    out, added = [], 0
    for st in states:
        uid = str(series.slices[st.slice_index].sop_instance_uid)
        if uid not in headers:
            if st.status not in REPORTED:
                continue
            raise ExportError(f"no DICOM header of instance {uid} (slice {st.slice_index + 1}); load the series again")
        if st.source == "reader":
            added += 1
        out.append(ReportedNodule(
            source=headers[uid], centre_rc=(int(st.centre_voxel[1]), int(st.centre_voxel[2])),
            centre_mm=tuple(float(v) for v in st.centre_mm), diameter_mm=float(st.diameter_mm), status=st.status,
            tracking_key=st.tracking_key, label=f"AI nodule {st.rank}" if st.rank else f"Reader nodule {added}",
            malignancy=st.malignancy, p_nodule=st.p_nodule, nodule_type=st.nodule_type,
            outside_lung=bool(st.outside_lung)))
    return NoduleReport(detector_model_id=nodules.findings.model_id, detector_sha256=nodules.findings.model_sha256,
                        nodules=out, midline_x_mm=float(midline_x_mm))


def nodule_circles(nodules: NoduleExport | None, index: int) -> list[tuple[int, int, float]]:
    """(row, column, diameter mm) of the reported nodules centred on slice ``index`` (0-based), for the SC."""
    if nodules is None:
        return []
    return [(int(st.centre_voxel[1]), int(st.centre_voxel[2]), float(st.diameter_mm))
            for st in nodules.read.states if st.status in REPORTED and st.slice_index == int(index)]


# ------------------------------------------------------------------------------ one session's exports
@dataclass(frozen=True, eq=False)
class ExportBundle:
    """A prepared export: the Secondary Capture, the SR and both as a ZIP of Part 10 files.

    ``key`` is (analysis key, 0-based slice of the SC, the reader's read or None, the nodule
    read's version or None).
    """

    key: tuple
    secondary_capture: Any
    structured_report: Any
    zipped: bytes

    @property
    def slice_index(self) -> int:
        """0-based slice of the Secondary Capture."""
        return int(self.key[1])


class DicomExports:
    """One browser session's DICOM exports: the prepared bundles and the SR predecessor chain.

    Holds no Streamlit state and no database session; the page keeps one instance per browser
    session. Thread-unsafe by design (one session runs one script at a time).

    Args:
        max_bundles: prepared exports kept (least recently used go first).
    """

    def __init__(self, max_bundles: int = MAX_BUNDLES) -> None:
        self.max_bundles = max(1, int(max_bundles))
        self._bundles: LRUCache[tuple, ExportBundle] = LRUCache(self.max_bundles)
        self._last_sr: dict[str, Any] = {}
        self._sent: tuple[str, str] | None = None

    @staticmethod
    def key(analysis: Any, index: int, read: ReaderRead | None, nodules: NoduleExport | None = None) -> tuple:
        """The bundle key of an analysis, a 0-based slice, a read and a nodule read."""
        return (analysis.key, int(index), read, nodules.version if nodules is not None else None)

    def prepared(self, analysis: Any, index: int, read: ReaderRead | None,
                 nodules: NoduleExport | None = None) -> ExportBundle | None:
        """The bundle prepared for exactly this analysis, slice, read and nodule read, or None."""
        return self._bundles.get(self.key(analysis, index, read, nodules))

    def outdated(self, analysis: Any) -> bool:
        """True when a bundle of this analysis was prepared for another slice or read."""
        return any(k[0] == analysis.key for k in self._bundles)

    def prepare(self, series: Series, analysis: Any, *, index: int, headers: Mapping[str, Dataset],
                read: ReaderRead | None, heatmap: Callable[[int, str], np.ndarray], alpha: float,
                nodules: NoduleExport | None = None) -> ExportBundle:
        """Build the Secondary Capture of slice ``index`` and the SR of the analysis (and read).

        The SR names the SR last downloaded or sent for this analysis as its predecessor. With
        ``nodules``, the SR gets one measurement group per accepted, corrected or added nodule
        (:func:`nodule_report`) and the SC a circle of each one's diameter centred on its slice
        (``core.pacs.export.draw_nodule_circles``).

        Args:
            series: the analysed DICOM series. analysis: ``services.reading.Analysis``.
            index: 0-based slice of the Secondary Capture.
            headers: pixel-free source headers by SOP Instance UID (:func:`headers_of_series`).
            read: the reader's saved read (:func:`reader_read`) or None.
            heatmap: ``heatmap(index, class_name)`` -> float32 (y, x) Grad-CAM in [0, 1] (the
                page's shared cache).
            alpha: heatmap opacity in [0, 1].
            nodules: the detection and the reader's nodule read (:class:`NoduleExport`), or None.

        Returns:
            The :class:`ExportBundle`, also kept for :meth:`prepared`.

        Raises:
            core.pacs.export.ExportError: a header is missing, or the objects cannot be built.
        """
        from core.pacs.export import (
            ExportError,
            draw_nodule_circles,
            secondary_capture,
            structured_report,
            zip_of,
        )

        try:
            ai = ai_result(series, analysis)
            cls = list(analysis.class_names)[suspicious_index(analysis.class_names)]
            picture = overlay_picture(series, index, heatmap(index, cls), alpha)
            source = headers[str(series.slices[index].sop_instance_uid)]
            circles = nodule_circles(nodules, index)
            if circles:
                picture = draw_nodule_circles(picture, circles, source.PixelSpacing)
            sc = secondary_capture(source, picture, analysis.model_id)
            report = nodule_report(series, headers, nodules) if nodules is not None else None
            sr = structured_report(headers[ai.most_suspicious_sop_uid], ai, read,
                                   previous=self._last_sr.get(analysis.key), nodules=report)
        except KeyError as exc:
            raise ExportError(f"no DICOM header of instance {exc}; load the series again") from exc
        bundle = ExportBundle(key=self.key(analysis, index, read, nodules), secondary_capture=sc,
                              structured_report=sr, zipped=zip_of([sc, sr]))
        self._bundles[bundle.key] = bundle
        return bundle

    def downloaded(self, factory: sessionmaker, bundle: ExportBundle, analysis: Any, *, user_id: int) -> int:
        """Record a download: the audit event, and its SR becomes the next SR's predecessor.

        Returns:
            The audit event's id.
        """
        self._last_sr[analysis.key] = bundle.structured_report
        return record_export(factory, user_id=user_id, study_id=getattr(analysis, "study_id", None),
                             destination="download", kinds=list(KINDS), model_id=analysis.model_id)

    def send(self, factory: sessionmaker, bundle: ExportBundle, analysis: Any, *, client: Any,
             user_id: int) -> str:
        """Send the bundle to the PACS (STOW-RS), record it, and say what was sent.

        Args:
            client: ``core.pacs.dicomweb.PacsClient`` of the configured PACS.

        Returns:
            The message to show ("Sent to the PACS: ..."); also kept for :meth:`last_sent`.

        Raises:
            core.pacs.dicomweb.PacsError: the PACS refused or could not be reached (nothing recorded).
        """
        sc, sr = bundle.secondary_capture, bundle.structured_report
        stored = client.store([sc, sr])
        self._last_sr[analysis.key] = sr
        record_export(factory, user_id=user_id, study_id=getattr(analysis, "study_id", None), destination="pacs",
                      kinds=list(KINDS), model_id=analysis.model_id)
        message = (f"Sent to the PACS: {len(stored)} object(s), the heatmap image (series {sc.SeriesNumber}) "
                   f"and the report (series {sr.SeriesNumber}).")
        self._sent = (analysis.key, message)
        return message

    def last_sent(self, analysis: Any) -> str | None:
        """The message of the last send of this analysis in this session, or None."""
        return self._sent[1] if self._sent and self._sent[0] == analysis.key else None
