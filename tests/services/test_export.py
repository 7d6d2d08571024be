"""services.export: an export is one audit event with what went where, and nothing identifying."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.schema import AuditAction, AuditEvent
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
