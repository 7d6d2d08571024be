"""What the reader-study services share: roles, typed errors, the values they return, the reading
order, and the per-transaction helpers of :class:`ReaderStudyBase` (they take a ``Session``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from core.domain import Role
from db.repository import (
    REVIEWER_ROLES,
    NotFoundError,
    PermissionDenied,
    RepositoryError,
    ValidationError,
    _require_role,
    _user,
    list_nodules,
)
from db.repository import reader_study as rows
from db.schema import (
    AiNodule,
    CaseEventKind,
    LesionMark,
    ReaderRead,
    ReadingList,
    ReadingListCase,
    ReadingListReader,
    ReadingMode,
    ReadPhase,
    ReferenceStandard,
    User,
    utc_now,
)
from services.reading import Analysis

#: Roles that make reading lists and enter the reference standard.
COORDINATOR_ROLES = frozenset({Role.COORDINATOR, Role.ADMIN})
#: Roles that see the reference standard, every read and the pilot report.
STUDY_VIEWER_ROLES = frozenset({Role.COORDINATOR, Role.LEAD, Role.ADMIN})
#: Roles that may be assigned as readers (same as those who add reviews).
READER_ROLES = REVIEWER_ROLES


class ReaderStudyError(RepositoryError):
    """Base of the reader-study errors that are not plain validation / not-found errors."""


class BlindingError(ReaderStudyError, PermissionDenied):
    """A read or display that would break the blinding of the reader study; nothing was written."""


class AidedBeforeUnaidedError(BlindingError):
    """The aided read (or showing the AI) was asked for before the unaided read was recorded."""


class UnaidedLockedError(BlindingError):
    """The unaided read cannot be recorded or changed: the AI result was already shown."""


class AiNotShownError(BlindingError):
    """The aided read was asked for before the AI result was shown to this reader."""


class NoAiModeError(BlindingError):
    """The list is read without AI: the AI result is never shown and there is no aided read."""


class NotAssignedError(ReaderStudyError, PermissionDenied):
    """The reader is not assigned to this reading list."""


class CaseNotOpenError(ReaderStudyError, ValidationError):
    """A read was recorded for a case the reader has not opened (phase times start at opening)."""


class NotYourMarkError(ReaderStudyError, PermissionDenied):
    """A reader asked to change or delete a lesion mark that is not their own."""


class CaseStep(StrEnum):
    """What the reader does next on a case."""

    UNAIDED_READ = "unaided_read"
    SHOW_AI = "show_ai"
    AIDED_READ = "aided_read"
    DONE = "done"


@dataclass(frozen=True)
class OwnRead:
    """One of the reader's own current reads: finding, confidence 1-5, phase seconds, UTC time."""

    finding: str
    confidence: int
    seconds: float
    at: datetime


@dataclass(frozen=True)
class AiFinding:
    """One nodule finding of the AI on a case's series (a ``nodules`` row), as shown to a reader.

    ``rank`` 1 = the most suspicious; ``slice_index`` 0-based; ``x`` column and ``y`` row of the
    centre (voxel indices of the series); ``diameter_mm`` mm; ``p_nodule`` 0-1; ``malignancy``
    1-5 (LIDC scale); ``model_id`` the detector.
    """

    nodule_id: int
    rank: int
    slice_index: int
    x: int
    y: int
    diameter_mm: float
    p_nodule: float
    malignancy: float
    is_mass: bool
    model_id: str


@dataclass(frozen=True)
class AiResult:
    """The AI result of a case as shown to a reader (only after it was shown).

    ``findings``: the nodule detector's findings on the case's series (rank order; empty when the
    detector has not run on it, found nothing or refused the series).
    """

    inference_id: int
    model_id: str
    label: str
    score: float
    ood: bool
    findings: tuple[AiFinding, ...] = ()


@dataclass(frozen=True)
class AiView:
    """What the shared slice viewer needs to show a case's AI result to its reader (only once shown).

    ``analysis``: the ``services.reading.Analysis`` of the case's inference (per-slice
    probabilities float32 (n, k), labels, OOD flags, most suspicious slice; its ``key`` is the read
    page's, so Grad-CAM and pictures are shared); ``study_id`` and ``series_key`` name the series
    in the study store (``services.reading.open_stored_series``); ``findings``: the AI nodule
    findings, as in :attr:`AiResult.findings`.
    """

    analysis: Analysis
    study_id: int
    series_key: str
    findings: tuple[AiFinding, ...] = ()


@dataclass(frozen=True)
class OwnMark:
    """One of the reader's own current lesion marks.

    ``step`` unaided / aided; ``slice_index`` 0-based; ``x`` column, ``y`` row of the centre in
    pixels; ``rating`` 1-5 (5 = certainly a nodule needing work-up); ``nodule_id`` the AI finding
    it was taken from (aided step) or None; ``copied_from_id`` the unaided mark it is a copy of
    (aided step) or None; ``at`` UTC time of this row.
    """

    mark_id: int
    step: str
    slice_index: int
    x: float
    y: float
    rating: int
    nodule_id: int | None
    copied_from_id: int | None
    at: datetime


@dataclass(frozen=True)
class ReaderCase:
    """A case as its reader sees it: position in their order, their own reads, the AI once shown.

    ``position`` is 1-based in the reader's order; ``n_done`` of ``total`` cases are finished
    ("12 of 40"). Holds no reference standard and no other reader's read.
    """

    list_id: int
    list_name: str
    mode: str
    case_id: int
    study_id: int
    study_key: str
    series_key: str
    position: int
    total: int
    n_done: int
    step: CaseStep
    unaided: OwnRead | None
    aided: OwnRead | None
    ai: AiResult | None
    marks: tuple[OwnMark, ...] = ()

    def step_marks(self, step: str) -> tuple[OwnMark, ...]:
        """The reader's current marks in ``step`` ("unaided" / "aided"), oldest first."""
        return tuple(m for m in self.marks if m.step == step)


@dataclass(frozen=True)
class ReaderListSummary:
    """A reading list as its reader sees it: name, mode, cases done of total."""

    list_id: int
    name: str
    mode: str
    model_id: str
    n_done: int
    total: int


@dataclass(frozen=True)
class ListSummary:
    """A reading list as a coordinator sees it."""

    list_id: int
    name: str
    mode: str
    model_id: str
    randomise: bool
    seed: int
    n_cases: int
    reader_ids: tuple[int, ...]
    n_with_reference: int
    created_at: datetime


@dataclass(frozen=True)
class UnmatchedRow:
    """A reference-standard CSV row that was not saved: 1-based line number (header = 1), why."""

    line: int
    study_key: str
    reason: str


@dataclass(frozen=True)
class ImportResult:
    """Outcome of a reference-standard CSV import: rows saved, rows not saved (with reasons)."""

    saved: int
    unmatched: tuple[UnmatchedRow, ...]


@dataclass(frozen=True)
class StudyData:
    """Everything the analysis and the pilot report need about one list (coordinators, leads).

    ``cases``: one row per case: ``case_id, position, study_id, study_key, series_key,
    inference_id, ai_label, ai_score, ai_ood, reference, reference_source`` (reference NaN
    when none). ``reads``: EVERY read row (superseded ones too): ``read_id, case_id, study_key,
    reader_id, reader, phase, finding, confidence, seconds, supersedes_id, current, created_at``.
    ``readers``: ``reader_id, reader, username, n_done, total``. ``sus``: the SUS questionnaires
    of the list's readers: ``reader_id, sus_score, created_at``. ``cases`` also holds the
    series' ``n_slices`` and ``spacing_z_mm, spacing_y_mm, spacing_x_mm`` (NaN when unknown).
    ``lesions``: the CURRENT reference lesions (:data:`LESION_COLUMNS`). ``marks``: EVERY
    lesion-mark row (:data:`MARK_COLUMNS`; ``current`` = not superseded and not a deletion,
    ``chain_id`` = the first row of the mark's chain).
    """

    list: ListSummary
    cases: pd.DataFrame
    reads: pd.DataFrame
    readers: pd.DataFrame
    sus: pd.DataFrame
    lesions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(LESION_COLUMNS)))
    marks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(MARK_COLUMNS)))


#: Columns of :attr:`StudyData.lesions` (and of ``ReferenceStandards.reference_lesions``).
LESION_COLUMNS: tuple[str, ...] = (
    "lesion_id", "case_id", "position", "study_key", "series_key", "slice_index", "x", "y", "diameter_mm", "source",
    "note", "entered_by", "entered_at")
#: Columns of :attr:`StudyData.marks`.
MARK_COLUMNS: tuple[str, ...] = (
    "mark_id", "case_id", "reader_id", "step", "slice_index", "x", "y", "rating", "nodule_id", "copied_from_id",
    "supersedes_id", "deleted", "current", "chain_id", "created_at")


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes (stored in UTC): make them timezone-aware UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def own_mark(row: LesionMark) -> OwnMark:
    """The :class:`OwnMark` of a ``lesion_marks`` row."""
    return OwnMark(mark_id=row.id, step=row.step, slice_index=row.slice_index, x=row.x, y=row.y, rating=row.rating,
                   nodule_id=row.nodule_id, copied_from_id=row.copied_from_id, at=_aware(row.created_at))


def _finding(n: AiNodule) -> AiFinding:
    return AiFinding(nodule_id=n.id, rank=n.rank, slice_index=n.slice_index, x=n.voxel_x, y=n.voxel_y,
                     diameter_mm=n.diameter_mm, p_nodule=n.p_nodule, malignancy=n.malignancy, is_mass=n.is_mass,
                     model_id=n.model_id)


def reader_order(case_ids: Sequence[int], *, seed: int, reader_id: int, randomise: bool) -> list[int]:
    """A reader's reading order of a list's cases.

    Args:
        case_ids: the list's case ids in the coordinator's order.
        seed: the list's recorded seed (whole number >= 0).
        reader_id: the reader's user id (mixed into the seed so each reader has their own order).
        randomise: False keeps ``case_ids``' order.

    Returns:
        list of the same ids; with ``randomise`` the permutation
        ``numpy.random.default_rng([seed, reader_id]).permutation(len(case_ids))`` applied
        (NumPy ``SeedSequence`` entropy from both numbers: reproducible from the recorded seed).
    """
    ids = [int(c) for c in case_ids]
    if not randomise:
        return ids
    perm = np.random.default_rng([int(seed), int(reader_id)]).permutation(len(ids))
    return [ids[i] for i in perm]


class ReaderStudyBase:
    """The session factory and clock, and helpers that take a ``Session`` (never commit).

    Args:
        factory: a ``sessionmaker`` (``db.session.make_session_factory``); not read-only.
        clock: returns the current time, timezone-aware UTC (default ``db.schema.utc_now``).
    """

    def __init__(self, factory: sessionmaker[Session], clock: Callable[[], datetime] = utc_now) -> None:
        self._factory = factory
        self._clock = clock

    def _now(self) -> datetime:
        return _aware(self._clock())

    @staticmethod
    def _list(s: Session, list_id: int) -> ReadingList:
        row = rows.get_list(s, list_id)
        if row is None:
            raise NotFoundError(f"There is no reading list with id {list_id}; choose one from the list.")
        return row

    @staticmethod
    def _cases(s: Session, list_id: int) -> list[ReadingListCase]:
        return rows.list_cases(s, list_id)

    @staticmethod
    def _assignment(s: Session, reading_list: ReadingList, reader: User) -> ReadingListReader:
        row = rows.assignment(s, reading_list.id, reader.id)
        if row is None:
            raise NotAssignedError(
                f"{reader.username!r} is not a reader of the reading list {reading_list.name!r}; "
                "ask the pilot coordinator to assign you."
            )
        return row

    @staticmethod
    def _current_read(s: Session, case_id: int, reader_id: int, phase: ReadPhase) -> ReaderRead | None:
        return rows.current_read(s, case_id, reader_id, phase.value)

    @staticmethod
    def _first_event(s: Session, case_id: int, reader_id: int, kind: CaseEventKind):
        return rows.first_event(s, case_id, reader_id, kind.value)

    @staticmethod
    def _done(mode: str, unaided: ReaderRead | None, aided: ReaderRead | None) -> bool:
        return (unaided is not None) if mode == ReadingMode.NO_AI.value else (aided is not None)

    def _step(self, s: Session, rl: ReadingList, case: ReadingListCase, reader_id: int) -> CaseStep:
        unaided = self._current_read(s, case.id, reader_id, ReadPhase.UNAIDED)
        aided = self._current_read(s, case.id, reader_id, ReadPhase.AIDED)
        if self._done(rl.mode, unaided, aided):
            return CaseStep.DONE
        if rl.mode == ReadingMode.NO_AI.value:
            return CaseStep.UNAIDED_READ
        shown = self._first_event(s, case.id, reader_id, CaseEventKind.AI_SHOWN) is not None
        if rl.mode == ReadingMode.AI_AT_ONCE.value:
            return CaseStep.AIDED_READ if shown else CaseStep.SHOW_AI
        if unaided is None:
            return CaseStep.UNAIDED_READ
        return CaseStep.AIDED_READ if shown else CaseStep.SHOW_AI

    def _n_done(self, s: Session, rl: ReadingList, reader_id: int) -> int:
        phase = ReadPhase.UNAIDED if rl.mode == ReadingMode.NO_AI.value else ReadPhase.AIDED
        return rows.n_cases_read(s, rl.id, reader_id, phase.value)

    def _reader_case(self, s: Session, rl: ReadingList, assignment: ReadingListReader,
                     case: ReadingListCase) -> ReaderCase:
        reader_id = assignment.reader_id
        order = [int(c) for c in assignment.case_order]

        def own(phase: ReadPhase) -> OwnRead | None:
            row = self._current_read(s, case.id, reader_id, phase)
            if row is None:
                return None
            return OwnRead(finding=row.finding, confidence=row.confidence, seconds=row.seconds,
                           at=_aware(row.created_at))

        shown = self._first_event(s, case.id, reader_id, CaseEventKind.AI_SHOWN) is not None
        inf = case.inference
        ai = AiResult(inference_id=inf.id, model_id=inf.model_id, label=inf.ai_label, score=inf.series_score,
                      ood=inf.ood, findings=tuple(_finding(n) for n in self._ai_nodules(s, case))) if shown else None
        return ReaderCase(list_id=rl.id, list_name=rl.name, mode=rl.mode, case_id=case.id, study_id=case.study_id,
                          study_key=case.study.study_key, series_key=case.series_key,
                          position=order.index(case.id) + 1, total=len(order), n_done=self._n_done(s, rl, reader_id),
                          step=self._step(s, rl, case, reader_id), unaided=own(ReadPhase.UNAIDED),
                          aided=own(ReadPhase.AIDED), ai=ai,
                          marks=tuple(own_mark(m) for m in rows.current_marks(s, case.id, reader_id)))

    @staticmethod
    def _ai_nodules(s: Session, case: ReadingListCase) -> list[AiNodule]:
        """The AI findings of a case (``db.repository.reader_study.detection_of_case``), rank order."""
        det = rows.detection_of_case(s, case)
        return list_nodules(s, det.inference_id, detection_id=det.id) if det is not None else []

    def _case_for_reader(self, s: Session, reader: User | int, case_id: int
                         ) -> tuple[User, ReadingList, ReadingListReader, ReadingListCase]:
        user = _user(s, reader, "reader")
        _require_role(user, READER_ROLES, "read cases of a reading list")
        case = rows.get_case(s, case_id)
        if case is None:
            raise NotFoundError(f"There is no case with id {case_id}; open your reading list again.")
        rl = self._list(s, case.list_id)
        return user, rl, self._assignment(s, rl, user), case

    @staticmethod
    def _summary(s: Session, rl: ReadingList) -> ListSummary:
        cases = rows.list_cases(s, rl.id)
        with_ref = rows.studies_with_reference(s, {c.study_id for c in cases})
        return ListSummary(list_id=rl.id, name=rl.name, mode=rl.mode, model_id=rl.model_id, randomise=rl.randomise,
                           seed=rl.seed, n_cases=len(cases), reader_ids=rows.reader_ids(s, rl.id),
                           n_with_reference=sum(1 for c in cases if c.study_id in with_ref),
                           created_at=_aware(rl.created_at))

    @staticmethod
    def _refuse_own_list(s: Session, user: User | None, rl: ReadingList) -> None:
        """A reader of the list (e.g. an admin assigned as reader) sees no reference nor others' reads."""
        if user is not None and rows.assignment(s, rl.id, user.id) is not None:
            raise BlindingError(
                f"You are a reader of the reading list {rl.name!r}, so its reference standard and the other "
                "readers' reads stay hidden from you; ask another coordinator or lead."
            )

    @staticmethod
    def _check_viewer(s: Session, viewer: User | int | None, what: str) -> User | None:
        if viewer is None:
            return None
        user = _user(s, viewer, "viewer")
        _require_role(user, STUDY_VIEWER_ROLES, what)
        return user

    @staticmethod
    def _current_references(s: Session, study_ids: Sequence[int]) -> dict[int, ReferenceStandard]:
        return rows.current_references(s, study_ids)
