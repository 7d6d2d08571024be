"""Lesion marks (readers): add, re-rate and delete their own marks in each step, take an AI finding
as a mark; the blinding of the reads applies to the marks.

A mark is a lesion centre on one slice of the case's series (``slice_index`` 0-based, ``x``
column and ``y`` row in pixels) with a rating 1-5 (5 = certainly a nodule needing work-up),
recorded in the unaided or the aided step. The rules, enforced here with the typed errors of the
reads (``services.reader_study.common``):

* Unaided marks: only in lists with an unaided read (not ``ai_at_once``: UnaidedLockedError),
  after the case was opened (CaseNotOpenError), and never once the AI result was shown to the
  reader: they lock exactly when the unaided read locks (UnaidedLockedError).
* Aided marks: not in ``no_ai`` lists (NoAiModeError); in ``ai_after_unaided`` lists only after
  the unaided read (AidedBeforeUnaidedError); only once the AI result was shown (AiNotShownError).
* When the AI result is shown (``show_ai``) the reader's current unaided marks are copied into
  the aided step (``copied_from_id`` names the unaided mark), so the aided step starts from them;
  what the reader then changes is recorded as new rows (a re-rating or a deletion supersedes the
  copy, a new mark has no ``copied_from_id``).
* Taking an AI finding as a mark (aided step) records the finding's ``nodules`` id
  (``nodule_id``) with its centre; each finding once per reader and case.
* A reader changes only their own marks (NotYourMarkError).

Every change is a new ``lesion_marks`` row (append-only, ``db.schema.LesionMark``) and an audit
event; each public method is one transaction and returns the reader's :class:`ReaderCase`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from db.repository import NotFoundError, ValidationError, _choice, _real, _whole, log_event
from db.repository import reader_study as rows
from db.schema import (
    AuditAction,
    CaseEventKind,
    LesionMark,
    ReadingList,
    ReadingListCase,
    ReadingMode,
    ReadPhase,
    User,
)
from services.reader_study.common import (
    AidedBeforeUnaidedError,
    AiNotShownError,
    CaseNotOpenError,
    NoAiModeError,
    NotYourMarkError,
    ReaderCase,
    ReaderStudyBase,
    UnaidedLockedError,
)

#: Largest pixel coordinate accepted (an image is never this wide).
MAX_PIXEL = 100_000.0


def copy_unaided_marks(s: Session, case: ReadingListCase, reader_id: int, now: datetime) -> int:
    """Copy the reader's current unaided marks of a case into the aided step (at the AI reveal).

    Each copy is a new aided ``lesion_marks`` row with the same centre and rating and
    ``copied_from_id`` = the unaided mark's id. Idempotent: an unaided mark copied before (even if
    its copy was deleted since) is not copied again.

    Returns:
        the number of marks copied.
    """
    copied = {m.copied_from_id for m in rows.mark_rows(s, case.id, reader_id) if m.copied_from_id is not None}
    n = 0
    for m in rows.current_marks(s, case.id, reader_id, ReadPhase.UNAIDED.value):
        if m.id in copied:
            continue
        rows.add_mark(s, case_id=case.id, reader_id=reader_id, step=ReadPhase.AIDED.value, slice_index=m.slice_index,
                      x=m.x, y=m.y, rating=m.rating, nodule_id=None, copied_from_id=m.id, supersedes_id=None,
                      deleted=False, created_at=now)
        n += 1
    return n


class LesionMarks(ReaderStudyBase):
    """A reader's lesion marks; each public method is one transaction."""

    def _check_step(self, s: Session, rl: ReadingList, case: ReadingListCase, user: User, step: str) -> None:
        """Raise the typed blinding error when ``user`` may not change marks of ``step`` now."""
        if self._first_event(s, case.id, user.id, CaseEventKind.OPENED) is None:
            raise CaseNotOpenError("Open the case before marking lesions on it.")
        shown = self._first_event(s, case.id, user.id, CaseEventKind.AI_SHOWN) is not None
        if step == ReadPhase.UNAIDED.value:
            if rl.mode == ReadingMode.AI_AT_ONCE.value:
                raise UnaidedLockedError(f"The list {rl.name!r} shows the AI result when a case opens, so it has no "
                                         "unaided step; mark lesions in the aided step.")
            if shown:
                raise UnaidedLockedError("Your unaided marks are locked: the AI result was already shown to you on "
                                         "this case. Change your marks in the aided step.")
            return
        if rl.mode == ReadingMode.NO_AI.value:
            raise NoAiModeError(f"The list {rl.name!r} is read without AI; there is no aided step.")
        if (rl.mode == ReadingMode.AI_AFTER_UNAIDED.value
                and self._current_read(s, case.id, user.id, ReadPhase.UNAIDED) is None):
            raise AidedBeforeUnaidedError("Record your unaided read first: the aided step comes after it.")
        if not shown:
            raise AiNotShownError("The AI result has not been shown to you on this case; show it first.")

    @staticmethod
    def _centre(s: Session, case: ReadingListCase, slice_index, x, y) -> tuple[int, float, float]:
        series = rows.series_of_case(s, case)
        n = series.n_slices if series is not None else 100_000_000
        z = _whole(slice_index, "Slice index (0-based)", 0, n - 1)
        return z, _real(x, "x (pixel column)", 0.0, MAX_PIXEL), _real(y, "y (pixel row)", 0.0, MAX_PIXEL)

    def _own_mark(self, s: Session, reader: User | int, mark_id: int
                  ) -> tuple[User, ReadingList, ReadingListCase, LesionMark]:
        row = rows.get_mark(s, mark_id)
        if row is None:
            raise NotFoundError(f"There is no lesion mark with id {mark_id}; open the case again.")
        user, rl, _, case = self._case_for_reader(s, reader, row.case_id)
        if row.reader_id != user.id:
            raise NotYourMarkError("This lesion mark is another reader's; you can change only your own marks.")
        if not rows.mark_is_current(s, row.id):
            raise ValidationError(f"Lesion mark {row.id} was already changed or deleted; open the case again.")
        return user, rl, case, row

    def _log(self, s: Session, user: User, row: LesionMark, what: str) -> None:
        log_event(s, user_id=user.id, action=AuditAction.REVIEW, object_type="lesion_mark", object_id=row.id,
                  detail=f"case {row.case_id}, {row.step} step: {what}")

    def _result(self, s: Session, user: User, rl: ReadingList, case: ReadingListCase) -> ReaderCase:
        s.flush()
        return self._reader_case(s, rl, self._assignment(s, rl, user), case)

    def reader_case(self, reader: User | int, case_id: int) -> ReaderCase:
        """The case as its reader sees it now (their reads and marks, the AI once shown); records nothing.

        Raises:
            PermissionDenied / NotAssignedError, NotFoundError.
        """
        with self._factory.begin() as s:
            user, rl, assignment, case = self._case_for_reader(s, reader, case_id)
            return self._reader_case(s, rl, assignment, case)

    def add_mark(self, reader: User | int, case_id: int, *, step: ReadPhase | str, slice_index: int, x: float,
                 y: float, rating: int) -> ReaderCase:
        """Add a lesion mark in ``step``.

        Args:
            reader: the reader (an assigned radiologist or admin).
            case_id: a case of their list.
            step: "unaided" or "aided".
            slice_index: 0-based slice of the case's series (less than its number of slices).
            x, y: centre pixel column and row, 0 .. 100000.
            rating: whole number 1-5 (5 = certainly a nodule needing work-up).

        Returns:
            :class:`ReaderCase` with the new mark in ``marks``.

        Raises:
            UnaidedLockedError, AidedBeforeUnaidedError, AiNotShownError, NoAiModeError,
            CaseNotOpenError (see the module docstring); ValidationError (step, slice, x, y,
            rating); PermissionDenied / NotAssignedError, NotFoundError.
        """
        step = _choice(step, ReadPhase, "step")
        rating = _whole(rating, "Rating", 1, 5)
        with self._factory.begin() as s:
            user, rl, _, case = self._case_for_reader(s, reader, case_id)
            self._check_step(s, rl, case, user, step)
            z, cx, cy = self._centre(s, case, slice_index, x, y)
            row = rows.add_mark(s, case_id=case.id, reader_id=user.id, step=step, slice_index=z, x=cx, y=cy,
                                rating=rating, nodule_id=None, copied_from_id=None, supersedes_id=None, deleted=False,
                                created_at=self._now())
            self._log(s, user, row, f"mark added on slice {z} at ({cx:g}, {cy:g}), rating {rating}")
            return self._result(s, user, rl, case)

    def take_ai_finding(self, reader: User | int, case_id: int, nodule_id: int, *, rating: int) -> ReaderCase:
        """Take an AI nodule finding shown on the case as an aided mark (its centre; ``nodule_id`` recorded).

        Args:
            nodule_id: the finding's id (``AiFinding.nodule_id`` of ``ReaderCase.ai.findings``).
            rating: whole number 1-5, the reader's own rating of the finding.

        Returns:
            :class:`ReaderCase` with the new mark.

        Raises:
            ValidationError: the finding is not one shown on this case, or this reader took it
                already (a current mark holds it), or a bad rating; the errors of :meth:`add_mark`
                for the aided step.
        """
        rating = _whole(rating, "Rating", 1, 5)
        step = ReadPhase.AIDED.value
        with self._factory.begin() as s:
            user, rl, _, case = self._case_for_reader(s, reader, case_id)
            self._check_step(s, rl, case, user, step)
            det = rows.detection_of_case(s, case)
            nodule = rows.get_nodule(s, nodule_id)
            if nodule is None or det is None or nodule.detection_id != det.id:
                raise ValidationError(f"AI finding {nodule_id} is not one of the AI findings shown on this case.")
            taken = [m for m in rows.current_marks(s, case.id, user.id, step) if m.nodule_id == nodule.id]
            if taken:
                raise ValidationError(f"You already took AI finding {nodule.rank} as mark {taken[0].id}; change its "
                                      "rating or delete it instead.")
            row = rows.add_mark(s, case_id=case.id, reader_id=user.id, step=step, slice_index=nodule.slice_index,
                                x=float(nodule.voxel_x), y=float(nodule.voxel_y), rating=rating, nodule_id=nodule.id,
                                copied_from_id=None, supersedes_id=None, deleted=False, created_at=self._now())
            self._log(s, user, row, f"AI finding {nodule.rank} (nodule {nodule.id}) taken as a mark, rating {rating}")
            return self._result(s, user, rl, case)

    def rerate_mark(self, reader: User | int, mark_id: int, *, rating: int) -> ReaderCase:
        """Change the rating of one of the reader's current marks (a new row supersedes it).

        Raises:
            NotYourMarkError: another reader's mark. ValidationError: the mark was already changed
            or deleted, a bad rating. The step's blinding errors (see :meth:`add_mark`);
            NotFoundError.
        """
        rating = _whole(rating, "Rating", 1, 5)
        with self._factory.begin() as s:
            user, rl, case, old = self._own_mark(s, reader, mark_id)
            self._check_step(s, rl, case, user, old.step)
            row = rows.add_mark(s, case_id=case.id, reader_id=user.id, step=old.step, slice_index=old.slice_index,
                                x=old.x, y=old.y, rating=rating, nodule_id=old.nodule_id,
                                copied_from_id=old.copied_from_id, supersedes_id=old.id, deleted=False,
                                created_at=self._now())
            self._log(s, user, row, f"rating of mark {old.id} changed from {old.rating} to {rating}")
            return self._result(s, user, rl, case)

    def delete_mark(self, reader: User | int, mark_id: int) -> ReaderCase:
        """Delete one of the reader's current marks (a deletion row supersedes it; nothing is erased).

        Raises:
            NotYourMarkError, ValidationError (already changed or deleted), the step's blinding
            errors (see :meth:`add_mark`), NotFoundError.
        """
        with self._factory.begin() as s:
            user, rl, case, old = self._own_mark(s, reader, mark_id)
            self._check_step(s, rl, case, user, old.step)
            row = rows.add_mark(s, case_id=case.id, reader_id=user.id, step=old.step, slice_index=old.slice_index,
                                x=old.x, y=old.y, rating=old.rating, nodule_id=old.nodule_id,
                                copied_from_id=old.copied_from_id, supersedes_id=old.id, deleted=True,
                                created_at=self._now())
            self._log(s, user, row, f"mark {old.id} deleted")
            return self._result(s, user, rl, case)
