"""(d) No patient identifier reaches the database file through the normal upload path.

A DICOM with PatientName, PatientID, PatientBirthDate and a known StudyInstanceUID is written
with pydicom, read with ``core.imaging.read_uploads``, stored with ``add_study`` (pseudonymous key,
counts, content hash) and ``add_inference`` (its series result holding ``core.imaging.summarize``),
reviewed, exported; then the raw bytes of the database file (after a WAL checkpoint, plus any
-wal/-shm bytes) must contain none of the identifiers. On PostgreSQL, whose files belong to the
server, every row of every table (as text, JSON included) must contain none of them.
"""

from __future__ import annotations

import io
import sqlite3
from contextlib import closing

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from sqlalchemy import inspect, text

from db import repository as repo
from services import analytics

NAME = "Zqxwvutsrq^Plkmjnhbgv"
PATIENT_ID = "PID-7391-QX-4826"
BIRTH_DATE = "19370412"
STUDY_UID = "1.2.826.0.1.3680043.8.498.7391482664518273"
SERIES_UID = "1.2.826.0.1.3680043.8.498.7391482664518274"


def dicom_with_identifiers() -> bytes:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def needles() -> dict[str, list[bytes]]:
    """Every identifier as it could be stored: UTF-8 text and UTF-16 (none of them may appear)."""
    out = {}
    for label, value in {"PatientName": NAME, "name part 1": NAME.split("^")[0],
                         "name part 2": NAME.split("^")[1], "PatientID": PATIENT_ID,
                         "PatientBirthDate": BIRTH_DATE, "birth date ISO": "1937-04-12",
                         "StudyInstanceUID": STUDY_UID, "SeriesInstanceUID": SERIES_UID}.items():
        out[label] = [value.encode("utf-8"), value.encode("utf-16-le")]
    return out


class TestNoIdentifiersInTheDatabase:
    def test_identifiers_never_reach_the_database_file(self, engine, factory, people, isolated_settings):
        imaging = pytest.importorskip("core.imaging")
        data = dicom_with_identifiers()
        assert NAME.encode() in data and PATIENT_ID.encode() in data  # the input does carry them
        result = imaging.read_uploads([("patient.dcm", data)])
        assert result.problems == []
        study = result.studies[0]
        series = study.series[0]
        summary = imaging.summarize(series)
        with factory.begin() as s:
            row = repo.add_study(s, study_key=study.study_key, modality=series.modality,
                                 n_series=len(study.series), n_slices=sum(len(se.slices) for se in study.series),
                                 source_kind=study.source_kind, content_hash=study.content_hash,
                                 uploaded_by=people["rad1"])
            series_row = repo.add_series(s, study_id=row.id, series_key=series.series_key, modality=series.modality,
                                         n_slices=len(series.slices), spacing_mm=series.spacing_mm,
                                         description=series.description)
            inf = repo.add_inference(s, series_id=series_row.id, model_id="basic-cnn-v1", model_sha256="0" * 64,
                                     slice_probabilities=[[0.2, 0.3, 0.5]], threshold=0.5, ood=False,
                                     latency_ms=3.0, user=people["rad1"],
                                     series_result={"series_label": "malignant", "series_score": 0.5,
                                                    "summary": summary, "description": series.description})
            repo.add_review(s, study_id=row.id, inference_id=inf.id, reader=people["rad1"], finding="benign",
                            agreement="disagree", confidence=3, comment="nodule", seconds_to_decision=12)
            exported = "".join(analytics.export_csv(s, what, viewer=people["admin"])
                               for what in analytics.EXPORT_KINDS)
        if engine.dialect.name == "sqlite":
            engine.dispose()
            db_file = isolated_settings.var_dir / "test.db"
            with closing(sqlite3.connect(db_file)) as conn:  # outside a transaction, as a checkpoint needs
                assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            raw = b"".join(p.read_bytes() for p in db_file.parent.glob("test.db*"))
            least = 10_000  # bytes of a file with six tables
        else:
            with engine.connect() as conn:
                raw = "\n".join(row[0] for table in inspect(engine).get_table_names()
                                 for row in conn.execute(text(f"SELECT t::text FROM {table} t"))).encode()
            least = 1_000  # bytes of the rows written above
        assert len(raw) > least and study.study_key.encode() in raw  # the pseudonymous key IS there
        leaks = [label for label, forms in needles().items() if any(f in raw for f in forms)]
        assert leaks == []
        leaks = [label for label, forms in needles().items() if forms[0].decode() in exported]
        assert leaks == []
