"""services.export: an export is one audit event with what went where, and nothing identifying; a
changed read gives a new SR that names the one sent before; the AI result as the export states it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sqlalchemy import select

from core.domain import Finding
from core.settings import get_settings
from db.schema import AuditAction, AuditEvent
from services import export
from services.export import record_export


def test_record_export_writes_one_audit_event(factory, people):
    event_id = record_export(factory, user_id=people["rad1"], study_id=7, destination="pacs", kinds=["OT", "SR"],
                             model_id="basic-cnn-v1")
    with factory.begin() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.action == AuditAction.EXPORT)).all()
        assert [(r.id, r.user_id, r.object_type, r.object_id) for r in rows] == [
            (event_id, people["rad1"], "study", "7")]
        assert rows[0].detail == "pacs: 2 DICOM object(s) (OT, SR) of model basic-cnn-v1"


def test_record_export_refuses_an_unknown_destination(factory, people):
    with pytest.raises(ValueError, match="destination"):
        record_export(factory, user_id=people["rad1"], study_id=None, destination="email", kinds=["SR"], model_id="m")


# ------------------------------------------------------------------------------ DicomExports
DATA = get_settings().data_dir
SERIES_DIR = next(iter(sorted((DATA / "lung-pet-ct-dx").glob("Lung_Dx-*/*/*B40f*"))), None)
needs_tcia = pytest.mark.skipif(SERIES_DIR is None, reason=f"shared TCIA study missing under {DATA}")


@dataclass(frozen=True)
class _Analysis:
    """The fields of ``services.reading.Analysis`` an export reads."""

    key: str
    study_id: int
    model_id: str
    model_sha256: str
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    finding: Finding
    series_score: float
    most_suspicious_index: int
    ood: np.ndarray

    @property
    def any_ood(self) -> bool:
        return bool(np.any(self.ood))


def _analysis(n: int, *, ood: bool = False) -> _Analysis:
    probs = np.tile(np.array([[0.1, 0.2, 0.7]], dtype=np.float32), (n, 1))
    return _Analysis(key="hash:series:m:sha", study_id=3, model_id="m", model_sha256="ab" * 32,
                     class_names=("normal", "benign", "malignant"), probabilities=probs, finding=Finding.MALIGNANT,
                     series_score=0.7, most_suspicious_index=n // 2, ood=np.full(n, ood))


class _Pacs:
    def __init__(self) -> None:
        self.stored: list = []

    def store(self, datasets):
        self.stored.extend(datasets)
        return [str(ds.SOPInstanceUID) for ds in datasets]


@pytest.fixture(scope="module")
def tcia():
    """(series, headers of its instances) of the shared B40f series."""
    from core.imaging import read_paths

    files = sorted(SERIES_DIR.glob("*.dcm"))
    series = read_paths([SERIES_DIR]).series[0]
    return series, export.headers_of_series(export.upload_headers((p.name, p.read_bytes()) for p in files), series)


@needs_tcia
def test_the_ai_result_says_not_applicable_when_the_guard_flagged_a_slice(tcia):
    series, _ = tcia
    n = len(series.slices)
    assert export.ai_result(series, _analysis(n)).finding == "malignant"
    flagged = export.ai_result(series, _analysis(n, ood=True))
    assert flagged.finding == "not applicable" and flagged.positive_class == "malignant"
    assert flagged.most_suspicious_sop_uid == series.slices[n // 2].sop_instance_uid


@needs_tcia
def test_a_changed_read_gives_a_new_sr_naming_the_one_sent_before(tcia, factory, people):
    series, headers = tcia
    analysis = _analysis(len(series.slices))
    exports, pacs = export.DicomExports(), _Pacs()
    flat = lambda i, cls: np.full(series.slices[i].shape, 0.5, dtype=np.float32)  # noqa: E731
    first = exports.prepare(series, analysis, index=0, headers=headers, read=None, heatmap=flat, alpha=0.4)
    assert exports.prepared(analysis, 0, None) is first and not exports.last_sent(analysis)
    assert exports.send(factory, first, analysis, client=pacs, user_id=people["rad1"]).startswith(
        "Sent to the PACS: 2 object(s)")
    read = export.reader_read("benign", "disagree", "Rita Radiologist")
    assert exports.prepared(analysis, 0, read) is None and exports.outdated(analysis)
    second = exports.prepare(series, analysis, index=0, headers=headers, read=read, heatmap=flat, alpha=0.4)
    pred = second.structured_report.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert pred.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.structured_report.SOPInstanceUID
    exports.downloaded(factory, second, analysis, user_id=people["rad1"])
    with factory.begin() as s:
        details = [e.detail for e in s.scalars(select(AuditEvent).where(AuditEvent.action == AuditAction.EXPORT))]
    assert details == ["pacs: 2 DICOM object(s) (OT, SR) of model m", "download: 2 DICOM object(s) (OT, SR) of model m"]
    assert [ds.Modality for ds in pacs.stored] == ["OT", "SR"]


@needs_tcia
def test_a_missing_header_is_an_export_error(tcia):
    from core.pacs.export import ExportError

    series, headers = tcia
    partial = {uid: h for uid, h in headers.items() if uid != series.slices[0].sop_instance_uid}
    with pytest.raises(ExportError, match="no DICOM header"):
        export.DicomExports().prepare(series, _analysis(len(series.slices)), index=0, headers=partial, read=None,
                                      heatmap=lambda i, c: np.zeros(series.slices[i].shape, np.float32), alpha=0.4)


# ------------------------------------------------------------------------------ nodules
def test_the_sr_reports_the_readers_accepted_corrected_and_added_nodules_and_the_sc_circles_them(
        factory, people, isolated_settings):
    """Phantom series, fake detector: rad1 accepts finding 1 (right lung), rejects finding 2, adds one in
    the left lung; the SR gets two Planar ROI groups (laterality from the lung-mask midline), the SC a
    circle on finding 1's slice; a changed nodule read is a new bundle."""
    import highdicom as hd

    from services.reading import ReadingService, read_upload
    from tests.factories.ct import FakeDetector, phantom_files
    from tests.services.test_reading import CARD, CountingPredictor

    files = phantom_files(origin=(-100.0, -160.0, -300.0))  # midline at patient x = +58.75 mm, not 0
    study = read_upload(files, limit_mb=50).studies[0]
    series = study.series[0]
    headers = export.headers_of_series(export.upload_headers(files), series)
    svc = ReadingService(factory, CountingPredictor(), nodule_detector=FakeDetector().as_detector())
    rad1 = people["rad1"]
    analysis = svc.analyse(study, series, CARD, user_id=rad1)
    found = svc.find_nodules(analysis, series, user_id=rad1)
    n1, n2 = (f.nodule_id for f in found.findings)
    svc.decide_nodule(found, n1, reader_id=rad1, decision="accept", nodule_type="solid", opened_at=0.0)
    svc.decide_nodule(found, n2, reader_id=rad1, decision="reject", opened_at=0.0)
    svc.add_nodule(found, series, reader_id=rad1, slice_index=16, row=70, col=85, diameter_mm=7.0, opened_at=0.0)
    nodules = export.NoduleExport(found, svc.reader_nodules(found, rad1))
    assert export.nodule_circles(nodules, 12) == [(64, 40, 10.0)] and export.nodule_circles(nodules, 8) == []

    flat = lambda i, cls: np.zeros(series.slices[i].shape, dtype=np.float32)  # noqa: E731
    exports = export.DicomExports()
    plain = exports.prepare(series, analysis, index=12, headers=headers, read=None, heatmap=flat, alpha=0.4)
    bundle = exports.prepare(series, analysis, index=12, headers=headers, read=None, heatmap=flat, alpha=0.4,
                             nodules=nodules)
    assert exports.prepared(analysis, 12, None, nodules) is bundle and bundle is not plain
    groups = hd.sr.Comprehensive3DSR.from_dataset(bundle.structured_report).content \
        .get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["AI nodule 1", "Reader nodule 1"]
    sides = [g.finding_sites[0].laterality.meaning for g in groups]
    assert sides == ["Right", "Left"]
    assert [g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for g in groups] == [
        series.slices[12].sop_instance_uid, series.slices[16].sop_instance_uid]
    # the circle is drawn on the SC: its pixels differ from the plain SC's on the circle's rim only
    diff = np.any(bundle.secondary_capture.pixel_array != plain.secondary_capture.pixel_array, axis=-1)
    assert diff.any() and not diff[:, :].all()
    # another decision is another read: the prepared bundle no longer fits it
    svc.decide_nodule(found, n2, reader_id=rad1, decision="accept", opened_at=0.0)
    changed = export.NoduleExport(found, svc.reader_nodules(found, rad1))
    assert exports.prepared(analysis, 12, None, changed) is None
    again = exports.prepare(series, analysis, index=12, headers=headers, read=None, heatmap=flat, alpha=0.4,
                            nodules=changed)
    assert len(hd.sr.Comprehensive3DSR.from_dataset(again.structured_report).content
               .get_planar_roi_measurement_groups()) == 3
