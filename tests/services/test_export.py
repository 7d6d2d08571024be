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
