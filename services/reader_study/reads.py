"""Blinded reads (readers): their lists, the next case, opening it, the unaided read, showing the
AI, the aided read. The order and the blinding are enforced here with typed errors."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.domain import Finding
from db.repository import _choice, _require_role, _user, _whole, log_event
from db.repository import reader_study as rows
from db.schema import (
    AuditAction,
    CaseEventKind,
    ReaderCaseEvent,
    ReaderRead,
    ReadingListCase,
    ReadingMode,
    ReadPhase,
    User,
)
from services.reader_study.common import (
    READER_ROLES,
    AidedBeforeUnaidedError,
    AiNotShownError,
    AiView,
    CaseNotOpenError,
    CaseStep,
    NoAiModeError,
    ReaderCase,
    ReaderListSummary,
    ReaderStudyBase,
    UnaidedLockedError,
    _aware,
    _finding,
)
from services.reader_study.marks import copy_unaided_marks
from services.reading import analysis_of_inference


class BlindedReads(ReaderStudyBase):
    """A reader's work through their lists; each public method is one transaction."""

    def my_lists(self, reader: User | int) -> list[ReaderListSummary]:
        """The reading lists ``reader`` is assigned to, with their progress, newest first.

        Raises:
            PermissionDenied: not an active radiologist or admin.
        """
        with self._factory.begin() as s:
            user = _user(s, reader, "reader")
            _require_role(user, READER_ROLES, "read cases of a reading list")
            out = []
            for rl in rows.lists_of_reader(s, user.id):
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
                case = rows.get_case(s, case_id)
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
            rows.add_event(s, case.id, user.id, CaseEventKind.OPENED.value, now)
            if first and rl.mode == ReadingMode.AI_AT_ONCE.value:
                rows.add_event(s, case.id, user.id, CaseEventKind.AI_SHOWN.value, now)
            s.flush()
            return self._reader_case(s, rl, assignment, case)

    def _record(self, s: Session, user: User, case: ReadingListCase, phase: ReadPhase, finding, confidence,
                start: ReaderCaseEvent) -> ReaderRead:
        finding = _choice(finding, Finding, "finding")
        confidence = _whole(confidence, "Confidence", 1, 5)
        now = self._now()
        seconds = max(0.0, (now - _aware(start.at)).total_seconds())
        previous = self._current_read(s, case.id, user.id, phase)
        row = rows.add_read(s, case_id=case.id, reader_id=user.id, phase=phase.value, finding=finding,
                            confidence=confidence, seconds=seconds, supersedes_id=previous.id if previous else None,
                            created_at=now)
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

        The first time, the reader's current unaided lesion marks are copied into the aided step
        (``services.reader_study.marks.copy_unaided_marks``): the aided step starts from them.

        Returns:
            :class:`ReaderCase` with ``ai`` set; the unaided read and marks are locked from now on.

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
                now = self._now()
                rows.add_event(s, case.id, user.id, CaseEventKind.AI_SHOWN.value, now)
                copy_unaided_marks(s, case, user.id, now)
                s.flush()
            return self._reader_case(s, rl, assignment, case)

    def ai_view(self, reader: User | int, case_id: int) -> AiView:
        """What the viewer shows of the case's AI result: its analysis, its series, its nodule findings.

        Only once the AI was shown to this reader on this case (at the first opening in
        ``ai_at_once`` lists, with :meth:`show_ai` in ``ai_after_unaided`` lists): the blinding is
        enforced here, as for the reads. Records nothing.

        Returns:
            :class:`AiView` (``analysis`` from ``services.reading.analysis_of_inference``).

        Raises:
            NoAiModeError: a ``no_ai`` list. AiNotShownError: the AI result was not shown to this
            reader on this case yet (both :class:`BlindingError`). PermissionDenied /
            NotAssignedError, NotFoundError.
        """
        with self._factory.begin() as s:
            user, rl, _, case = self._case_for_reader(s, reader, case_id)
            if rl.mode == ReadingMode.NO_AI.value:
                raise NoAiModeError(f"The list {rl.name!r} is read without AI; the AI result is not shown.")
            if self._first_event(s, case.id, user.id, CaseEventKind.AI_SHOWN) is None:
                raise AiNotShownError("The AI result has not been shown to you on this case; show it first.")
            analysis = analysis_of_inference(case.inference, case.study.content_hash, case.series_key)
            findings = tuple(_finding(n) for n in self._ai_nodules(s, case))
            return AiView(analysis=analysis, study_id=case.study_id, series_key=case.series_key, findings=findings)

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
