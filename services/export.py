"""Recording DICOM exports of AI results (download or send to a PACS) in the audit log.

The service owns its transaction (``with factory.begin() as s:``); pages call it and never touch
SQLAlchemy. The audit detail says what was exported and where to, never a patient identifier or
a UID of the study (pseudonymous study rows are referenced by id).
"""

from __future__ import annotations

from sqlalchemy.orm import sessionmaker

from db import repository as repo
from db.schema import AuditAction

#: Where an export went.
DESTINATIONS = ("download", "pacs")


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
