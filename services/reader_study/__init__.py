"""Reader-study service: reading lists, reference standard, blinded unaided and aided reads.

A pilot coordinator makes a READING LIST (cases, readers, the model whose result is shown, a
:class:`~db.schema.ReadingMode`, a per-reader randomised order with a recorded seed) and enters
the REFERENCE STANDARD per study (form or CSV keyed by the pseudonymous study key). Each
radiologist works through their list: open the case, record the unaided read (finding +
confidence), have the AI result shown, record the aided read. The design follows sequential
reader studies of computer-aided detection (FDA guidance "Clinical Performance Assessment:
Considerations for Computer-Assisted Detection Devices Applied to Radiology Images and Radiology
Device Data", 2020): unaided first, then aided, both against a reference standard.

This package owns its transactions: :class:`ReaderStudyService` takes a ``sessionmaker`` and every
public method runs in one ``with factory.begin():`` block (nothing is written when it raises).
Pages call it; they never open sessions themselves. It imports no Streamlit. Its parts:
``lists`` (reading lists, coordinators), ``reference`` (reference standard: form, CSV import),
``reads`` (the blinded unaided and aided reads), ``marks`` (lesion marks in each step, AI findings
taken as marks), ``analysis`` (every read and mark, for the pilot report), ``common`` (errors,
returned values, the reading order); the queries are ``db.repository.reader_study``. Reference
lesions (form, CSV, LIDC XML) are in ``reference`` beside the reference standard.

Blinding is enforced HERE, not only in the page, with typed errors (all :class:`BlindingError`,
a :class:`~db.repository.PermissionDenied`):

* :class:`AidedBeforeUnaidedError`: an aided read or showing the AI before the unaided read
  (``ai_after_unaided`` mode).
* :class:`UnaidedLockedError`: an unaided read recorded or changed after the AI was shown (in
  ``ai_at_once`` mode the AI is shown when the case opens, so there is no unaided read).
* :class:`AiNotShownError`: an aided read before the AI result was shown.
* :class:`NoAiModeError`: AI shown or an aided read in a ``no_ai`` list.
* :class:`NotAssignedError`: a reader acting on a list they are not assigned to.
* :class:`NotYourMarkError`: a reader changing another reader's lesion mark.

The same errors guard the lesion marks (``marks``): unaided marks lock when the AI is shown,
exactly as the unaided read; aided marks need the AI shown.
* :class:`BlindingError`: a reader of a list (an admin may be both) asking for that list's
  reference standard, its CSV import or its analysis data (every reader's reads).

What a reader gets back (:class:`ReaderCase`, :class:`ReaderListSummary`) holds only their own
reads and, once shown, the AI result: never the reference standard nor other readers' reads.
``ai_view`` (:class:`AiView`) gives the shared slice viewer the case's AI analysis (per-slice
probabilities, most suspicious slice: ``services.reading.analysis_of_inference``), its series in the
study store and its nodule findings, and raises :class:`AiNotShownError` / :class:`NoAiModeError`
before the AI is shown to that reader.
Reference standard, every read and the analysis data are for coordinators, leads and admins
(:data:`STUDY_VIEWER_ROLES`).

Everything is append-only with timestamps (``reader_reads``, ``reader_case_events``,
``reference_standards``, ``reference_lesions``, ``lesion_marks``; ORM events and database
triggers, see ``db.schema``): a re-recorded read supersedes the earlier row, a corrected reference
standard is a newer row, a changed or deleted mark or reference lesion is a superseding row.

Times come from ``clock`` (default ``db.schema.utc_now``), so tests can fix them.

Series: a case is one row of the ``series`` table, named by ``(study_id, series_key)``; a case
given as a bare study id means that study's only series.
"""

from __future__ import annotations

from db.schema import LesionSource, ReadingMode, ReadPhase, ReferenceSource
from services.reader_study.analysis import AnalysisData
from services.reader_study.common import (
    COORDINATOR_ROLES,
    LESION_COLUMNS,
    MARK_COLUMNS,
    READER_ROLES,
    STUDY_VIEWER_ROLES,
    AidedBeforeUnaidedError,
    AiFinding,
    AiNotShownError,
    AiResult,
    AiView,
    BlindingError,
    CaseNotOpenError,
    CaseStep,
    ImportResult,
    ListSummary,
    NoAiModeError,
    NotAssignedError,
    NotYourMarkError,
    OwnMark,
    OwnRead,
    ReaderCase,
    ReaderListSummary,
    ReaderStudyError,
    StudyData,
    UnaidedLockedError,
    UnmatchedRow,
    reader_order,
)
from services.reader_study.lists import ReadingLists
from services.reader_study.marks import LesionMarks
from services.reader_study.reads import BlindedReads
from services.reader_study.reference import (
    LESION_CSV_COLUMNS,
    MIN_KEY_PREFIX,
    REFERENCE_CSV_COLUMNS,
    LidcImportResult,
    ReferenceLesions,
    ReferenceStandards,
)

__all__ = [
    "COORDINATOR_ROLES", "LESION_COLUMNS", "LESION_CSV_COLUMNS", "MARK_COLUMNS", "MIN_KEY_PREFIX", "READER_ROLES",
    "REFERENCE_CSV_COLUMNS", "STUDY_VIEWER_ROLES",
    "AidedBeforeUnaidedError", "AiFinding", "AiNotShownError", "AiResult", "AiView", "BlindingError", "CaseNotOpenError",
    "CaseStep", "ImportResult", "LesionSource", "LidcImportResult", "ListSummary", "NoAiModeError", "NotAssignedError",
    "NotYourMarkError", "OwnMark", "OwnRead", "ReadPhase", "ReaderCase", "ReaderListSummary", "ReaderStudyError",
    "ReaderStudyService", "ReadingMode", "ReferenceSource", "StudyData", "UnaidedLockedError", "UnmatchedRow",
    "reader_order",
]


class ReaderStudyService(ReadingLists, ReferenceStandards, ReferenceLesions, BlindedReads, LesionMarks, AnalysisData):
    """The reader-study operations; each public method is one transaction.

    Args:
        factory: a ``sessionmaker`` (``db.session.make_session_factory``); not read-only.
        clock: returns the current time, timezone-aware UTC (default ``db.schema.utc_now``).
    """
