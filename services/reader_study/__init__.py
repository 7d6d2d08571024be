"""Reader-study service: reading lists, reference standard, blinded unaided and aided reads.

A pilot coordinator makes a READING LIST (cases, readers, the model whose result is shown, a
:class:`~db.schema.ReadingMode`, a per-reader randomised order with a recorded seed) and enters
the REFERENCE STANDARD per study (form or CSV keyed by the pseudonymous study key). Each
radiologist works through their list: open the case, record the unaided read (finding +
confidence), have the AI result shown, record the aided read. The design follows sequential
reader studies of computer-aided detection (FDA guidance "Clinical Performance Assessment:
Considerations for Computer-Assisted Detection Devices Applied to Radiology Images and Radiology
Device Data", 2020): unaided first, then aided, both against a reference standard.

This module owns its transactions: :class:`ReaderStudyService` takes a ``sessionmaker`` and every
public method runs in one ``with factory.begin():`` block (nothing is written when it raises).
Pages call it; they never open sessions themselves. It imports no Streamlit.

Blinding is enforced HERE, not only in the page, with typed errors (all :class:`BlindingError`,
a :class:`~db.repository.PermissionDenied`):

* :class:`AidedBeforeUnaidedError`: an aided read or showing the AI before the unaided read
  (``ai_after_unaided`` mode).
* :class:`UnaidedLockedError`: an unaided read recorded or changed after the AI was shown (in
  ``ai_at_once`` mode the AI is shown when the case opens, so there is no unaided read).
* :class:`AiNotShownError`: an aided read before the AI result was shown.
* :class:`NoAiModeError`: AI shown or an aided read in a ``no_ai`` list.
* :class:`NotAssignedError`: a reader acting on a list they are not assigned to.
* :class:`BlindingError`: a reader of a list (an admin may be both) asking for that list's
  reference standard, its CSV import or its analysis data (every reader's reads).

What a reader gets back (:class:`ReaderCase`, :class:`ReaderListSummary`) holds only their own
reads and, once shown, the AI result: never the reference standard nor other readers' reads.
Reference standard, every read and the analysis data are for coordinators, leads and admins
(:data:`STUDY_VIEWER_ROLES`).

Everything is append-only with timestamps (``reader_reads``, ``reader_case_events``,
``reference_standards``; ORM events and database triggers, see ``db.schema``): a re-recorded
read supersedes the earlier row, a corrected reference standard is a newer row.

Times come from ``clock`` (default ``db.schema.utc_now``), so tests can fix them.

Series: a case is one row of the ``series`` table, named by ``(study_id, series_key)``; a case
given as a bare study id means that study's only series.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from core.config import Finding, Role
from db.repository import (
    REVIEWER_ROLES,
    NotFoundError,
    PermissionDenied,
    RepositoryError,
    ValidationError,
    _choice,
    _require_role,
    _user,
    _whole,
    find_series,
    latest_inference,
    log_event,
)
from db.schema import (
    AuditAction,
    CaseEventKind,
    Feedback,
    Inference,
    ReaderCaseEvent,
    ReaderRead,
    ReadingList,
    ReadingListCase,
    ReadingListReader,
    ReadingMode,
    ReadPhase,
    ReferenceSource,
    ReferenceStandard,
    Study,
    User,
    utc_now,
)
from db.schema import Series as SeriesRow

#: Roles that make reading lists and enter the reference standard.
COORDINATOR_ROLES = frozenset({Role.COORDINATOR, Role.ADMIN})
#: Roles that see the reference standard, every read and the pilot report.
STUDY_VIEWER_ROLES = frozenset({Role.COORDINATOR, Role.LEAD, Role.ADMIN})
#: Roles that may be assigned as readers (same as those who add reviews).
READER_ROLES = REVIEWER_ROLES
#: Shortest study-key prefix accepted in a reference-standard CSV (the worklist shows 12).
MIN_KEY_PREFIX = 12
#: Columns a reference-standard CSV must have (``note`` is optional).
REFERENCE_CSV_COLUMNS: tuple[str, ...] = ("study_key", "finding", "source")


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
class AiResult:
    """The AI result of a case as shown to a reader (only after it was shown)."""

    inference_id: int
    model_id: str
    label: str
    score: float
    ood: bool


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
    of the list's readers: ``reader_id, sus_score, created_at``.
    """

    list: ListSummary
    cases: pd.DataFrame
    reads: pd.DataFrame
    readers: pd.DataFrame
    sus: pd.DataFrame


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes (stored in UTC): make them timezone-aware UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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


def _current_read_filter():
    newer = aliased(ReaderRead)
    return ~select(newer.id).where(newer.supersedes_id == ReaderRead.id).exists()


class ReaderStudyService:
    """The reader-study operations; each public method is one transaction.

    Args:
        factory: a ``sessionmaker`` (``db.session.make_session_factory``); not read-only.
        clock: returns the current time, timezone-aware UTC (default ``db.schema.utc_now``).
    """

    def __init__(self, factory: sessionmaker[Session], clock: Callable[[], datetime] = utc_now) -> None:
        self._factory = factory
        self._clock = clock

    # -----------------------------------------------------------------------------------------
    # helpers (take a Session; never commit)

    def _now(self) -> datetime:
        return _aware(self._clock())

    @staticmethod
    def _list(s: Session, list_id: int) -> ReadingList:
        row = s.get(ReadingList, int(list_id))
        if row is None:
            raise NotFoundError(f"There is no reading list with id {list_id}; choose one from the list.")
        return row

    @staticmethod
    def _cases(s: Session, list_id: int) -> list[ReadingListCase]:
        return list(s.scalars(select(ReadingListCase).where(ReadingListCase.list_id == int(list_id))
                              .order_by(ReadingListCase.position)))

    @staticmethod
    def _assignment(s: Session, reading_list: ReadingList, reader: User) -> ReadingListReader:
        row = s.scalar(select(ReadingListReader).where(ReadingListReader.list_id == reading_list.id,
                                                       ReadingListReader.reader_id == reader.id))
        if row is None:
            raise NotAssignedError(
                f"{reader.username!r} is not a reader of the reading list {reading_list.name!r}; "
                "ask the pilot coordinator to assign you."
            )
        return row

    @staticmethod
    def _current_read(s: Session, case_id: int, reader_id: int, phase: ReadPhase) -> ReaderRead | None:
        return s.scalar(select(ReaderRead).where(ReaderRead.case_id == case_id, ReaderRead.reader_id == reader_id,
                                                 ReaderRead.phase == phase.value, _current_read_filter())
                        .order_by(ReaderRead.id.desc()).limit(1))

    @staticmethod
    def _first_event(s: Session, case_id: int, reader_id: int, kind: CaseEventKind) -> ReaderCaseEvent | None:
        return s.scalar(select(ReaderCaseEvent).where(ReaderCaseEvent.case_id == case_id,
                                                      ReaderCaseEvent.reader_id == reader_id,
                                                      ReaderCaseEvent.kind == kind.value)
                        .order_by(ReaderCaseEvent.id).limit(1))

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
        return s.scalar(
            select(func.count(func.distinct(ReaderRead.case_id)))
            .join(ReadingListCase, ReadingListCase.id == ReaderRead.case_id)
            .where(ReadingListCase.list_id == rl.id, ReaderRead.reader_id == reader_id,
                   ReaderRead.phase == phase.value)
        ) or 0

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
                      ood=inf.ood) if shown else None
        return ReaderCase(list_id=rl.id, list_name=rl.name, mode=rl.mode, case_id=case.id, study_id=case.study_id,
                          study_key=case.study.study_key, series_key=case.series_key,
                          position=order.index(case.id) + 1, total=len(order), n_done=self._n_done(s, rl, reader_id),
                          step=self._step(s, rl, case, reader_id), unaided=own(ReadPhase.UNAIDED),
                          aided=own(ReadPhase.AIDED), ai=ai)

    def _case_for_reader(self, s: Session, reader: User | int, case_id: int
                         ) -> tuple[User, ReadingList, ReadingListReader, ReadingListCase]:
        user = _user(s, reader, "reader")
        _require_role(user, READER_ROLES, "read cases of a reading list")
        case = s.get(ReadingListCase, int(case_id))
        if case is None:
            raise NotFoundError(f"There is no case with id {case_id}; open your reading list again.")
        rl = self._list(s, case.list_id)
        return user, rl, self._assignment(s, rl, user), case

    @staticmethod
    def _summary(s: Session, rl: ReadingList) -> ListSummary:
        cases = list(s.scalars(select(ReadingListCase).where(ReadingListCase.list_id == rl.id)))
        readers = tuple(sorted(s.scalars(select(ReadingListReader.reader_id)
                                         .where(ReadingListReader.list_id == rl.id))))
        study_ids = {c.study_id for c in cases}
        with_ref = set(s.scalars(select(ReferenceStandard.study_id)
                                 .where(ReferenceStandard.study_id.in_(study_ids)))) if study_ids else set()
        return ListSummary(list_id=rl.id, name=rl.name, mode=rl.mode, model_id=rl.model_id, randomise=rl.randomise,
                           seed=rl.seed, n_cases=len(cases), reader_ids=readers,
                           n_with_reference=sum(1 for c in cases if c.study_id in with_ref),
                           created_at=_aware(rl.created_at))

    # -----------------------------------------------------------------------------------------
    # coordinator

    def models_with_results(self, actor: User | int) -> list[str]:
        """Model ids that have at least one stored result (what a list can show), sorted.

        Raises:
            PermissionDenied: ``actor`` is not an active coordinator or admin.
        """
        with self._factory.begin() as s:
            _require_role(_user(s, actor, "actor"), COORDINATOR_ROLES, "make reading lists")
            return sorted(s.scalars(select(Inference.model_id).distinct()))

    def reader_candidates(self, actor: User | int) -> list[tuple[int, str]]:
        """Active users who may be assigned as readers: (user id, display name), by name.

        Raises:
            PermissionDenied: ``actor`` is not an active coordinator or admin.
        """
        with self._factory.begin() as s:
            _require_role(_user(s, actor, "actor"), COORDINATOR_ROLES, "make reading lists")
            rows = s.execute(select(User.id, User.display_name)
                             .where(User.active.is_(True), User.role.in_([r.value for r in READER_ROLES]))
                             .order_by(User.display_name))
            return [(int(i), str(n)) for i, n in rows]

    def candidate_cases(self, actor: User | int, model_id: str) -> pd.DataFrame:
        """Studies that can become cases of a list for ``model_id`` (they have a result of it).

        Returns:
            DataFrame ``study_id, study_key, series_key, n_slices, uploaded_at, inference_id,
            ai_label`` (the newest inference of the model per study), newest upload first.

        Raises:
            PermissionDenied: ``actor`` is not an active coordinator or admin.
        """
        with self._factory.begin() as s:
            _require_role(_user(s, actor, "actor"), COORDINATOR_ROLES, "make reading lists")
            newest = (select(Inference.series_id, func.max(Inference.id).label("inference_id"))
                      .where(Inference.model_id == str(model_id)).group_by(Inference.series_id).subquery())
            q = (select(Study.id.label("study_id"), Study.study_key, SeriesRow.series_key, SeriesRow.n_slices,
                        Study.uploaded_at, newest.c.inference_id, Inference.ai_label)
                 .join(SeriesRow, SeriesRow.study_id == Study.id)
                 .join(newest, newest.c.series_id == SeriesRow.id)
                 .join(Inference, Inference.id == newest.c.inference_id)
                 .order_by(Study.uploaded_at.desc(), Study.id.desc(), SeriesRow.id))
            return pd.DataFrame(s.execute(q).mappings().all(),
                                columns=["study_id", "study_key", "series_key", "n_slices", "uploaded_at",
                                         "inference_id", "ai_label"])

    def create_list(self, actor: User | int, *, name: str, cases: Iterable[int | tuple[int, str]],
                    readers: Iterable[User | int], model_id: str, mode: ReadingMode | str,
                    randomise: bool = True, seed: int | None = None) -> ListSummary:
        """Make a reading list.

        Args:
            actor: an active coordinator or admin.
            name: 1-128 characters, unique among reading lists.
            cases: study ids (the study's only series) or ``(study_id, series_key)`` pairs, in
                the coordinator's order; at least one, no repeats. Each study must have a result
                of ``model_id``; its newest one is the AI result every reader of the list sees.
            readers: active radiologists or admins, at least one, no repeats.
            model_id: registry model id whose result is shown.
            mode: a :class:`~db.schema.ReadingMode` value.
            randomise: give each reader their own random order (:func:`reader_order`).
            seed: whole number 0 .. 2**31 - 1; None draws one (``secrets.randbelow``). Recorded.

        Returns:
            The new list's :class:`ListSummary`. An "admin-change" audit event is recorded.

        Raises:
            PermissionDenied: ``actor`` may not make lists.
            ValidationError: bad name (empty, too long, taken), mode, seed, no cases/readers,
                repeated case or reader, a reader who may not read, a study without a result of
                the model.
            NotFoundError: a study or reader does not exist.
        """
        mode = _choice(mode, ReadingMode, "reading mode")
        name = str(name or "").strip()
        if not 1 <= len(name) <= 128:
            raise ValidationError("The reading list needs a name of 1-128 characters.")
        model_id = str(model_id or "").strip()
        if not 1 <= len(model_id) <= 128:
            raise ValidationError("Choose the model whose result the readers see.")
        seed = secrets.randbelow(2**31 - 1) if seed is None else _whole(seed, "Seed", 0, 2**31 - 1)
        refs: list[tuple[int, str]] = []
        for c in cases:
            study_id, series_key = (c, "") if not isinstance(c, tuple) else c
            refs.append((int(study_id), str(series_key or "").strip()))
        if not refs:
            raise ValidationError("A reading list needs at least one case.")
        if len(set(refs)) != len(refs):
            raise ValidationError("A case appears twice in the reading list; keep each case once.")
        with self._factory.begin() as s:
            user = _user(s, actor, "actor")
            _require_role(user, COORDINATOR_ROLES, "make reading lists")
            if s.scalar(select(ReadingList.id).where(func.lower(ReadingList.name) == name.lower())) is not None:
                raise ValidationError(f"A reading list named {name!r} exists already; choose another name.")
            reader_rows: list[User] = []
            for r in readers:
                ru = _user(s, r, "reader")
                if ru.role not in {x.value for x in READER_ROLES} or not ru.active:
                    raise ValidationError(f"{ru.username!r} cannot be a reader: only active radiologists or "
                                          "admins read cases.")
                reader_rows.append(ru)
            if not reader_rows:
                raise ValidationError("A reading list needs at least one reader.")
            if len({u.id for u in reader_rows}) != len(reader_rows):
                raise ValidationError("A reader is listed twice; assign each reader once.")
            inferences: list[Inference] = []
            resolved: list[tuple[int, str]] = []
            for study_id, key in refs:
                if s.get(Study, study_id) is None:
                    raise NotFoundError(f"There is no study with id {study_id}; upload or retrieve it first.")
                if key:
                    series = find_series(s, study_id, key)
                else:
                    rows = s.scalars(select(SeriesRow).where(SeriesRow.study_id == study_id)).all()
                    if len(rows) > 1:
                        raise ValidationError(f"Study {study_id} has {len(rows)} series; choose the series "
                                              "that is the case.")
                    series = rows[0] if rows else None
                if series is None:
                    raise ValidationError(f"Study {study_id} has no series {key[:12]!r}; choose one of its "
                                          "recorded series.")
                inf = latest_inference(s, series.id, model_id)
                if inf is None:
                    raise ValidationError(f"Study {study_id} has no result of the model {model_id!r}; "
                                          "analyse it with that model first.")
                inferences.append(inf)
                resolved.append((study_id, series.series_key))
            if len(set(resolved)) != len(resolved):
                raise ValidationError("A case appears twice in the reading list; keep each case once.")
            rl = ReadingList(name=name, model_id=model_id, mode=mode, randomise=bool(randomise), seed=seed,
                             created_by=user.id, created_at=self._now())
            s.add(rl)
            s.flush()
            case_rows = [ReadingListCase(list_id=rl.id, study_id=sid, series_key=key, inference_id=inf.id,
                                         position=i)
                         for i, ((sid, key), inf) in enumerate(zip(resolved, inferences, strict=True), start=1)]
            s.add_all(case_rows)
            s.flush()
            ids = [c.id for c in case_rows]
            for ru in reader_rows:
                s.add(ReadingListReader(list_id=rl.id, reader_id=ru.id,
                                        case_order=reader_order(ids, seed=seed, reader_id=ru.id,
                                                                randomise=bool(randomise))))
            s.flush()
            log_event(s, user_id=user.id, action=AuditAction.ADMIN_CHANGE, object_type="reading_list",
                      object_id=rl.id, detail=f"created reading list {name!r}: {len(ids)} cases, "
                      f"{len(reader_rows)} readers, model {model_id}, mode {mode}, randomise {bool(randomise)}, "
                      f"seed {seed}")
            return self._summary(s, rl)

    def lists(self, viewer: User | int) -> list[ListSummary]:
        """Every reading list, newest first (coordinators, leads, admins).

        Raises:
            PermissionDenied: ``viewer`` is not an active coordinator, lead or admin.
        """
        with self._factory.begin() as s:
            _require_role(_user(s, viewer, "viewer"), STUDY_VIEWER_ROLES, "see reading lists")
            return [self._summary(s, rl) for rl in s.scalars(select(ReadingList).order_by(ReadingList.id.desc()))]

    def find_list(self, viewer: User | int | None, name: str) -> ListSummary:
        """The reading list named ``name`` (case-insensitive).

        Args:
            viewer: a coordinator, lead or admin; None only for callers with direct database
                access (the ``services.pilot_report`` CLI).

        Raises:
            PermissionDenied: as :meth:`lists`. NotFoundError: no list of that name.
        """
        with self._factory.begin() as s:
            self._check_viewer(s, viewer, "see reading lists")
            rl = s.scalar(select(ReadingList).where(func.lower(ReadingList.name) == str(name).strip().lower()))
            if rl is None:
                raise NotFoundError(f"There is no reading list named {name!r}.")
            return self._summary(s, rl)

    def _add_reference(self, s: Session, user: User, study_id: int, finding, source, note: str) -> ReferenceStandard:
        finding = _choice(finding, Finding, "reference finding")
        source = _choice(source, ReferenceSource, "reference source")
        note = str(note or "")
        if len(note) > 2000:
            raise ValidationError("The note is too long (at most 2000 characters).")
        row = ReferenceStandard(study_id=study_id, finding=finding, source=source, note=note, entered_by=user.id,
                                entered_at=self._now())
        s.add(row)
        s.flush()
        log_event(s, user_id=user.id, action=AuditAction.ADMIN_CHANGE, object_type="reference_standard",
                  object_id=row.id, detail=f"study {study_id}: {finding} ({source})")
        return row

    def set_reference(self, actor: User | int, *, study_id: int, finding: Finding | str,
                      source: ReferenceSource | str, note: str = "") -> None:
        """Record the reference standard of a study (a newer row replaces an earlier one).

        Args:
            actor: an active coordinator or admin.
            study_id: an existing study.
            finding: normal / benign / malignant. source: pathology / follow-up / consensus.
            note: free text up to 2000 characters, no patient identifiers.

        Raises:
            PermissionDenied, NotFoundError (no study), ValidationError (finding, source, note).
        """
        with self._factory.begin() as s:
            user = _user(s, actor, "actor")
            _require_role(user, COORDINATOR_ROLES, "enter the reference standard")
            if s.get(Study, int(study_id)) is None:
                raise NotFoundError(f"There is no study with id {study_id}.")
            self._add_reference(s, user, int(study_id), finding, source, note)

    def import_reference_csv(self, actor: User | int, list_id: int, text: str) -> ImportResult:
        """Import reference standards for a list's cases from CSV text.

        The CSV has a header with ``study_key``, ``finding``, ``source`` (``note`` optional; other
        columns ignored; names case-insensitive). ``study_key`` is the pseudonymous key in full,
        or a prefix of at least :data:`MIN_KEY_PREFIX` characters that matches exactly one
        study of the list. Rows that match save; the others are reported, not saved.

        Returns:
            :class:`ImportResult`: number saved, and per unsaved row its line (header = line 1),
            key and reason (no such study in the list, ambiguous prefix, bad finding/source).

        Raises:
            PermissionDenied: ``actor`` may not enter the reference standard.
            NotFoundError: no such list.
            ValidationError: not CSV text, or a required column is missing (nothing saved).
        """
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ValidationError("The file is not UTF-8 text; save it as CSV (UTF-8).") from None
        reader = csv.DictReader(io.StringIO(str(text).lstrip("\ufeff")))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in REFERENCE_CSV_COLUMNS if c not in header]
        if missing:
            raise ValidationError(f"The CSV needs the columns {', '.join(REFERENCE_CSV_COLUMNS)}; "
                                  f"missing: {', '.join(missing)}.")
        with self._factory.begin() as s:
            user = _user(s, actor, "actor")
            _require_role(user, COORDINATOR_ROLES, "enter the reference standard")
            rl = self._list(s, list_id)
            self._refuse_own_list(s, user, rl)
            keys = {c.study.study_key: c.study_id for c in self._cases(s, rl.id)}
            saved = 0
            unmatched: list[UnmatchedRow] = []
            for line, raw in enumerate(reader, start=2):
                row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
                key = row.get("study_key", "")
                if key in keys:
                    study_id = keys[key]
                else:
                    hits = [sid for k, sid in keys.items() if len(key) >= MIN_KEY_PREFIX and k.startswith(key)]
                    if len(hits) != 1:
                        reason = ("the key matches several cases; give more characters" if hits else
                                  "no case of this list has this study key" if key else "the study key is empty")
                        unmatched.append(UnmatchedRow(line, key, reason))
                        continue
                    study_id = hits[0]
                try:  # _add_reference validates before it writes anything
                    self._add_reference(s, user, study_id, row.get("finding"), row.get("source"),
                                        row.get("note", ""))
                    saved += 1
                except ValidationError as exc:
                    unmatched.append(UnmatchedRow(line, key, str(exc)))
            return ImportResult(saved=saved, unmatched=tuple(unmatched))

    def reference_table(self, viewer: User | int, list_id: int) -> pd.DataFrame:
        """The list's cases with their current reference standard (coordinators, leads, admins).

        Returns:
            DataFrame ``case_id, position, study_id, study_key, series_key, reference,
            reference_source, entered_at`` (reference None where none was entered).

        Raises:
            PermissionDenied, NotFoundError.
        """
        with self._factory.begin() as s:
            user = _user(s, viewer, "viewer")
            _require_role(user, STUDY_VIEWER_ROLES, "see the reference standard")
            rl = self._list(s, list_id)
            self._refuse_own_list(s, user, rl)
            refs = self._current_references(s, [c.study_id for c in self._cases(s, rl.id)])
            rows = [{"case_id": c.id, "position": c.position, "study_id": c.study_id, "study_key": c.study.study_key,
                     "series_key": c.series_key,
                     "reference": refs[c.study_id].finding if c.study_id in refs else None,
                     "reference_source": refs[c.study_id].source if c.study_id in refs else None,
                     "entered_at": _aware(refs[c.study_id].entered_at) if c.study_id in refs else None}
                    for c in self._cases(s, rl.id)]
        return pd.DataFrame(rows, columns=["case_id", "position", "study_id", "study_key", "series_key", "reference",
                                           "reference_source", "entered_at"])

    @staticmethod
    def _current_references(s: Session, study_ids: Sequence[int]) -> dict[int, ReferenceStandard]:
        if not study_ids:
            return {}
        rows = s.scalars(select(ReferenceStandard).where(ReferenceStandard.study_id.in_(set(study_ids)))
                         .order_by(ReferenceStandard.id))
        return {r.study_id: r for r in rows}  # newest wins

    # -----------------------------------------------------------------------------------------
    # reader

    def my_lists(self, reader: User | int) -> list[ReaderListSummary]:
        """The reading lists ``reader`` is assigned to, with their progress, newest first.

        Raises:
            PermissionDenied: not an active radiologist or admin.
        """
        with self._factory.begin() as s:
            user = _user(s, reader, "reader")
            _require_role(user, READER_ROLES, "read cases of a reading list")
            rows = s.scalars(select(ReadingList).join(ReadingListReader, ReadingListReader.list_id == ReadingList.id)
                             .where(ReadingListReader.reader_id == user.id).order_by(ReadingList.id.desc()))
            out = []
            for rl in rows:
                total = len(self._assignment(s, rl, user).case_order)
                out.append(ReaderListSummary(list_id=rl.id, name=rl.name, mode=rl.mode, model_id=rl.model_id,
                                             n_done=self._n_done(s, rl, user.id), total=total))
            return out

    def next_case(self, reader: User | int, list_id: int) -> ReaderCase | None:
        """The reader's next unfinished case in their order (resumes where they left off).

        A case is finished with the aided read (``ai_at_once``, ``ai_after_unaided``) or the
        unaided read (``no_ai``). Reading records nothing: use :meth:`open_case`.

        Returns:
            :class:`ReaderCase` (its ``step`` says what comes next), or None when all are done.

        Raises:
            PermissionDenied / NotAssignedError, NotFoundError.
        """
        with self._factory.begin() as s:
            user = _user(s, reader, "reader")
            _require_role(user, READER_ROLES, "read cases of a reading list")
            rl = self._list(s, list_id)
            assignment = self._assignment(s, rl, user)
            for case_id in assignment.case_order:
                case = s.get(ReadingListCase, int(case_id))
                if self._step(s, rl, case, user.id) != CaseStep.DONE:
                    return self._reader_case(s, rl, assignment, case)
            return None

    def open_case(self, reader: User | int, case_id: int) -> ReaderCase:
        """Record that the reader opened the case (the unaided phase time starts at the first).

        In ``ai_at_once`` mode the AI result is shown at once: an "ai_shown" event is recorded
        with the first opening.

        Returns:
            :class:`ReaderCase` after the opening.

        Raises:
            PermissionDenied / NotAssignedError, NotFoundError.
        """
        with self._factory.begin() as s:
            user, rl, assignment, case = self._case_for_reader(s, reader, case_id)
            now = self._now()
            first = self._first_event(s, case.id, user.id, CaseEventKind.OPENED) is None
            s.add(ReaderCaseEvent(case_id=case.id, reader_id=user.id, kind=CaseEventKind.OPENED.value, at=now))
            if first and rl.mode == ReadingMode.AI_AT_ONCE.value:
                s.add(ReaderCaseEvent(case_id=case.id, reader_id=user.id, kind=CaseEventKind.AI_SHOWN.value, at=now))
            s.flush()
            return self._reader_case(s, rl, assignment, case)

    def _record(self, s: Session, user: User, case: ReadingListCase, phase: ReadPhase, finding, confidence,
                start: ReaderCaseEvent) -> ReaderRead:
        finding = _choice(finding, Finding, "finding")
        confidence = _whole(confidence, "Confidence", 1, 5)
        now = self._now()
        seconds = max(0.0, (now - _aware(start.at)).total_seconds())
        previous = self._current_read(s, case.id, user.id, phase)
        row = ReaderRead(case_id=case.id, reader_id=user.id, phase=phase.value, finding=finding,
                         confidence=confidence, seconds=seconds, supersedes_id=previous.id if previous else None,
                         created_at=now)
        s.add(row)
        s.flush()
        log_event(s, user_id=user.id, action=AuditAction.REVIEW, object_type="reader_read", object_id=row.id,
                  detail=f"reading list {case.list_id}, case {case.id}, {phase.value} read {finding}"
                  + (f", supersedes read {previous.id}" if previous else ""))
        return row

    def record_unaided(self, reader: User | int, case_id: int, *, finding: Finding | str,
                       confidence: int) -> ReaderCase:
        """Record (or, before the AI is shown, re-record) the reader's unaided read of a case.

        Args:
            finding: normal / benign / malignant. confidence: whole number 1-5.

        Returns:
            :class:`ReaderCase`; ``unaided.seconds`` = time from the first opening to this read.

        Raises:
            UnaidedLockedError: the AI result was already shown to this reader (always so in
                ``ai_at_once`` mode once the case was opened).
            CaseNotOpenError: the case was never opened by this reader.
            ValidationError: bad finding / confidence. PermissionDenied / NotAssignedError,
            NotFoundError.
        """
        with self._factory.begin() as s:
            user, rl, assignment, case = self._case_for_reader(s, reader, case_id)
            if rl.mode == ReadingMode.AI_AT_ONCE.value:
                raise UnaidedLockedError(
                    f"The list {rl.name!r} shows the AI result when a case opens, so it has no unaided read; "
                    "record your read as the aided read."
                )
            if self._first_event(s, case.id, user.id, CaseEventKind.AI_SHOWN) is not None:
                raise UnaidedLockedError(
                    "Your unaided read is locked: the AI result was already shown to you on this case. "
                    "Record your final read as the aided read."
                )
            opened = self._first_event(s, case.id, user.id, CaseEventKind.OPENED)
            if opened is None:
                raise CaseNotOpenError("Open the case before recording a read (the reading time starts there).")
            self._record(s, user, case, ReadPhase.UNAIDED, finding, confidence, opened)
            return self._reader_case(s, rl, assignment, case)

    def show_ai(self, reader: User | int, case_id: int) -> ReaderCase:
        """Show the reader the AI result of the case (records an "ai_shown" event, once).

        Returns:
            :class:`ReaderCase` with ``ai`` set; the unaided read is locked from now on.

        Raises:
            AidedBeforeUnaidedError: ``ai_after_unaided`` and no unaided read yet.
            NoAiModeError: a ``no_ai`` list.
            CaseNotOpenError: the case was never opened. PermissionDenied / NotAssignedError,
            NotFoundError.
        """
        with self._factory.begin() as s:
            user, rl, assignment, case = self._case_for_reader(s, reader, case_id)
            if rl.mode == ReadingMode.NO_AI.value:
                raise NoAiModeError(f"The list {rl.name!r} is read without AI; the AI result is not shown.")
            if self._first_event(s, case.id, user.id, CaseEventKind.OPENED) is None:
                raise CaseNotOpenError("Open the case before showing the AI result.")
            if (rl.mode == ReadingMode.AI_AFTER_UNAIDED.value
                    and self._current_read(s, case.id, user.id, ReadPhase.UNAIDED) is None):
                raise AidedBeforeUnaidedError(
                    "Record your unaided read first: in this list the AI result is shown only after it."
                )
            if self._first_event(s, case.id, user.id, CaseEventKind.AI_SHOWN) is None:
                s.add(ReaderCaseEvent(case_id=case.id, reader_id=user.id, kind=CaseEventKind.AI_SHOWN.value,
                                      at=self._now()))
                s.flush()
            return self._reader_case(s, rl, assignment, case)

    def record_aided(self, reader: User | int, case_id: int, *, finding: Finding | str,
                     confidence: int) -> ReaderCase:
        """Record the reader's aided read (with the AI result shown); a later one supersedes it.

        Returns:
            :class:`ReaderCase`; ``aided.seconds`` = time from the AI being shown to this read.

        Raises:
            AidedBeforeUnaidedError: ``ai_after_unaided`` and no unaided read yet.
            AiNotShownError: the AI result was not shown to this reader yet.
            NoAiModeError: a ``no_ai`` list.
            ValidationError, PermissionDenied / NotAssignedError, NotFoundError.
        """
        with self._factory.begin() as s:
            user, rl, assignment, case = self._case_for_reader(s, reader, case_id)
            if rl.mode == ReadingMode.NO_AI.value:
                raise NoAiModeError(f"The list {rl.name!r} is read without AI; there is no aided read.")
            if (rl.mode == ReadingMode.AI_AFTER_UNAIDED.value
                    and self._current_read(s, case.id, user.id, ReadPhase.UNAIDED) is None):
                raise AidedBeforeUnaidedError(
                    "Record your unaided read first: the aided read comes after it in this list."
                )
            shown = self._first_event(s, case.id, user.id, CaseEventKind.AI_SHOWN)
            if shown is None:
                raise AiNotShownError("The AI result has not been shown to you on this case; show it first.")
            self._record(s, user, case, ReadPhase.AIDED, finding, confidence, shown)
            return self._reader_case(s, rl, assignment, case)

    # -----------------------------------------------------------------------------------------
    # analysis data (coordinators, leads, admins)

    @staticmethod
    def _refuse_own_list(s: Session, user: User | None, rl: ReadingList) -> None:
        """A reader of the list (e.g. an admin assigned as reader) sees no reference nor others' reads."""
        if user is not None and s.scalar(select(ReadingListReader.id).where(
                ReadingListReader.list_id == rl.id, ReadingListReader.reader_id == user.id)) is not None:
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

    def study_data(self, viewer: User | int | None, list_id: int, *, audit: bool = False) -> StudyData:
        """Cases, reference standard, AI results, every read, readers and their SUS scores.

        Args:
            viewer: an active coordinator, lead or admin; None only for callers with direct
                database access (the ``services.pilot_report`` CLI).
            audit: record an "export" audit event (when the data leave as a report or CSV).

        Returns:
            :class:`StudyData` (see there for the columns).

        Raises:
            PermissionDenied, NotFoundError.
        """
        with self._factory.begin() as s:
            user = self._check_viewer(s, viewer, "see the reads and results of a reading list")
            rl = self._list(s, list_id)
            self._refuse_own_list(s, user, rl)
            summary = self._summary(s, rl)
            cases = self._cases(s, rl.id)
            refs = self._current_references(s, [c.study_id for c in cases])
            case_df = pd.DataFrame([{
                "case_id": c.id, "position": c.position, "study_id": c.study_id, "study_key": c.study.study_key,
                "series_key": c.series_key, "inference_id": c.inference_id, "ai_label": c.inference.ai_label,
                "ai_score": c.inference.series_score, "ai_ood": c.inference.ood,
                "reference": refs[c.study_id].finding if c.study_id in refs else np.nan,
                "reference_source": refs[c.study_id].source if c.study_id in refs else np.nan,
            } for c in cases], columns=["case_id", "position", "study_id", "study_key", "series_key", "inference_id",
                                        "ai_label", "ai_score", "ai_ood", "reference", "reference_source"])
            keys = {c.id: c.study.study_key for c in cases}
            newer = aliased(ReaderRead)
            q = (select(ReaderRead, User.display_name, newer.id.label("newer_id"))
                 .join(User, User.id == ReaderRead.reader_id)
                 .join(ReadingListCase, ReadingListCase.id == ReaderRead.case_id)
                 .outerjoin(newer, newer.supersedes_id == ReaderRead.id)
                 .where(ReadingListCase.list_id == rl.id).order_by(ReaderRead.id))
            reads = pd.DataFrame([{
                "read_id": r.id, "case_id": r.case_id, "study_key": keys[r.case_id], "reader_id": r.reader_id,
                "reader": name, "phase": r.phase, "finding": r.finding, "confidence": r.confidence,
                "seconds": r.seconds, "supersedes_id": r.supersedes_id, "current": newer_id is None,
                "created_at": _aware(r.created_at),
            } for r, name, newer_id in s.execute(q).all()],
                columns=["read_id", "case_id", "study_key", "reader_id", "reader", "phase", "finding", "confidence",
                         "seconds", "supersedes_id", "current", "created_at"])
            assignments = list(s.scalars(select(ReadingListReader).where(ReadingListReader.list_id == rl.id)
                                         .order_by(ReadingListReader.reader_id)))
            readers = pd.DataFrame([{
                "reader_id": a.reader_id, "reader": a.reader.display_name, "username": a.reader.username,
                "n_done": self._n_done(s, rl, a.reader_id), "total": len(a.case_order),
            } for a in assignments], columns=["reader_id", "reader", "username", "n_done", "total"])
            ids = [a.reader_id for a in assignments]
            sus = pd.DataFrame(s.execute(select(Feedback.user_id.label("reader_id"), Feedback.sus_score,
                                                Feedback.created_at).where(Feedback.user_id.in_(ids))
                                         .order_by(Feedback.id)).mappings().all(),
                               columns=["reader_id", "sus_score", "created_at"])
            if audit:
                log_event(s, user_id=user.id if user else None, action=AuditAction.EXPORT, object_type="reading_list",
                          object_id=rl.id, detail=f"pilot report: {len(reads)} reads")
            return StudyData(list=summary, cases=case_df, reads=reads, readers=readers, sus=sus)
