"""Reader-study rows: reading lists, their cases and readers, case events, reads, reference standards,
reference lesions and lesion marks.

Every function takes a ``Session`` and never commits; the rules (roles, blinding, the order of
the reads) are ``services.reader_study``'s, which owns the transactions. Lookups return the row
or None; the service turns a None into its typed error. The tables are append-only
(``db.schema``): the functions here only add rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from db.schema import (
    AiNodule,
    Feedback,
    Inference,
    LesionMark,
    NoduleDetection,
    ReaderCaseEvent,
    ReaderRead,
    ReadingList,
    ReadingListCase,
    ReadingListReader,
    ReferenceLesion,
    ReferenceStandard,
    Study,
    User,
)
from db.schema import Series as SeriesRow

CANDIDATE_COLUMNS = ["study_id", "study_key", "series_key", "n_slices", "uploaded_at", "inference_id", "ai_label"]
SUS_COLUMNS = ["reader_id", "sus_score", "created_at"]


def current_read_filter():
    """WHERE clause: the ``ReaderRead`` row is not superseded by a later read."""
    newer = aliased(ReaderRead)
    return ~select(newer.id).where(newer.supersedes_id == ReaderRead.id).exists()


# ------------------------------------------------------------------------------ lists
def get_list(s: Session, list_id: int) -> ReadingList | None:
    """The reading list ``list_id``, or None."""
    return s.get(ReadingList, int(list_id))


def list_by_name(s: Session, name: str) -> ReadingList | None:
    """The reading list named ``name`` (case-insensitive, surrounding spaces ignored), or None."""
    return s.scalar(select(ReadingList).where(func.lower(ReadingList.name) == str(name).strip().lower()))


def all_lists(s: Session) -> list[ReadingList]:
    """Every reading list, newest first."""
    return list(s.scalars(select(ReadingList).order_by(ReadingList.id.desc())))


def lists_of_reader(s: Session, reader_id: int) -> list[ReadingList]:
    """The reading lists ``reader_id`` is assigned to, newest first."""
    return list(s.scalars(select(ReadingList).join(ReadingListReader, ReadingListReader.list_id == ReadingList.id)
                          .where(ReadingListReader.reader_id == int(reader_id)).order_by(ReadingList.id.desc())))


def list_cases(s: Session, list_id: int) -> list[ReadingListCase]:
    """The cases of a list in the coordinator's order (``position``)."""
    return list(s.scalars(select(ReadingListCase).where(ReadingListCase.list_id == int(list_id))
                          .order_by(ReadingListCase.position)))


def get_case(s: Session, case_id: int) -> ReadingListCase | None:
    """The case ``case_id``, or None."""
    return s.get(ReadingListCase, int(case_id))


def assignment(s: Session, list_id: int, reader_id: int) -> ReadingListReader | None:
    """The assignment of ``reader_id`` to the list (their case order), or None."""
    return s.scalar(select(ReadingListReader).where(ReadingListReader.list_id == int(list_id),
                                                    ReadingListReader.reader_id == int(reader_id)))


def assignments(s: Session, list_id: int) -> list[ReadingListReader]:
    """Every reader's assignment to the list, by reader id."""
    return list(s.scalars(select(ReadingListReader).where(ReadingListReader.list_id == int(list_id))
                          .order_by(ReadingListReader.reader_id)))


def reader_ids(s: Session, list_id: int) -> tuple[int, ...]:
    """The ids of the list's readers, sorted."""
    return tuple(sorted(s.scalars(select(ReadingListReader.reader_id)
                                  .where(ReadingListReader.list_id == int(list_id)))))


def add_list(s: Session, *, name: str, model_id: str, mode: str, randomise: bool, seed: int, created_by: int,
             created_at: datetime, cases: Sequence[tuple[int, str, int]]) -> tuple[ReadingList, list[ReadingListCase]]:
    """Add a reading list and its cases (values checked by the caller; readers: :func:`add_reader`).

    Args:
        cases: (study id, series key, inference id) in the coordinator's order; positions 1..n.

    Returns:
        (the list row, its case rows), flushed (ids set).
    """
    rl = ReadingList(name=name, model_id=model_id, mode=mode, randomise=bool(randomise), seed=seed,
                     created_by=created_by, created_at=created_at)
    s.add(rl)
    s.flush()
    rows = [ReadingListCase(list_id=rl.id, study_id=sid, series_key=key, inference_id=inf_id, position=i)
            for i, (sid, key, inf_id) in enumerate(cases, start=1)]
    s.add_all(rows)
    s.flush()
    return rl, rows


def add_reader(s: Session, list_id: int, reader_id: int, case_order: list[int]) -> ReadingListReader:
    """Assign a reader to a list with their reading order (case ids)."""
    row = ReadingListReader(list_id=int(list_id), reader_id=int(reader_id), case_order=list(case_order))
    s.add(row)
    s.flush()
    return row


def name_taken(s: Session, name: str) -> bool:
    """True when a reading list of this name exists (case-insensitive)."""
    return s.scalar(select(ReadingList.id).where(func.lower(ReadingList.name) == name.lower())) is not None


# ------------------------------------------------------------------------------ what a list can hold
def model_ids_with_results(s: Session) -> list[str]:
    """Model ids with at least one stored inference, sorted."""
    return sorted(s.scalars(select(Inference.model_id).distinct()))


def active_users_with_roles(s: Session, roles: Iterable[str]) -> list[tuple[int, str]]:
    """(id, display name) of the active users with one of ``roles``, by display name."""
    rows = s.execute(select(User.id, User.display_name)
                     .where(User.active.is_(True), User.role.in_(list(roles)))
                     .order_by(User.display_name))
    return [(int(i), str(n)) for i, n in rows]


def candidate_cases(s: Session, model_id: str) -> pd.DataFrame:
    """Series with a result of ``model_id``: :data:`CANDIDATE_COLUMNS` (the newest inference per
    series), newest upload first."""
    newest = (select(Inference.series_id, func.max(Inference.id).label("inference_id"))
              .where(Inference.model_id == str(model_id)).group_by(Inference.series_id).subquery())
    q = (select(Study.id.label("study_id"), Study.study_key, SeriesRow.series_key, SeriesRow.n_slices,
                Study.uploaded_at, newest.c.inference_id, Inference.ai_label)
         .join(SeriesRow, SeriesRow.study_id == Study.id)
         .join(newest, newest.c.series_id == SeriesRow.id)
         .join(Inference, Inference.id == newest.c.inference_id)
         .order_by(Study.uploaded_at.desc(), Study.id.desc(), SeriesRow.id))
    return pd.DataFrame(s.execute(q).mappings().all(), columns=CANDIDATE_COLUMNS)


def series_of_study(s: Session, study_id: int) -> list[SeriesRow]:
    """Every series row of a study."""
    return list(s.scalars(select(SeriesRow).where(SeriesRow.study_id == int(study_id))))


# ------------------------------------------------------------------------------ events and reads
def current_read(s: Session, case_id: int, reader_id: int, phase: str) -> ReaderRead | None:
    """The reader's current (not superseded) read of a case in ``phase`` ("unaided" / "aided"), or None."""
    return s.scalar(select(ReaderRead).where(ReaderRead.case_id == case_id, ReaderRead.reader_id == reader_id,
                                             ReaderRead.phase == phase, current_read_filter())
                    .order_by(ReaderRead.id.desc()).limit(1))


def first_event(s: Session, case_id: int, reader_id: int, kind: str) -> ReaderCaseEvent | None:
    """The reader's first event of ``kind`` ("opened" / "ai_shown") on a case, or None."""
    return s.scalar(select(ReaderCaseEvent).where(ReaderCaseEvent.case_id == case_id,
                                                  ReaderCaseEvent.reader_id == reader_id,
                                                  ReaderCaseEvent.kind == kind)
                    .order_by(ReaderCaseEvent.id).limit(1))


def add_event(s: Session, case_id: int, reader_id: int, kind: str, at: datetime) -> ReaderCaseEvent:
    """Append a case event (not flushed)."""
    row = ReaderCaseEvent(case_id=case_id, reader_id=reader_id, kind=kind, at=at)
    s.add(row)
    return row


def add_read(s: Session, *, case_id: int, reader_id: int, phase: str, finding: str, confidence: int,
             seconds: float, supersedes_id: int | None, created_at: datetime) -> ReaderRead:
    """Append a read (values checked by the caller); flushed."""
    row = ReaderRead(case_id=case_id, reader_id=reader_id, phase=phase, finding=finding, confidence=confidence,
                     seconds=seconds, supersedes_id=supersedes_id, created_at=created_at)
    s.add(row)
    s.flush()
    return row


def n_cases_read(s: Session, list_id: int, reader_id: int, phase: str) -> int:
    """How many distinct cases of the list the reader has a ``phase`` read of (superseded ones count)."""
    return s.scalar(
        select(func.count(func.distinct(ReaderRead.case_id)))
        .join(ReadingListCase, ReadingListCase.id == ReaderRead.case_id)
        .where(ReadingListCase.list_id == int(list_id), ReaderRead.reader_id == reader_id,
               ReaderRead.phase == phase)
    ) or 0


def reads_of_list(s: Session, list_id: int) -> list[tuple[ReaderRead, str, int | None]]:
    """Every read of the list's cases, oldest first: (read, reader's display name, id of the read
    that supersedes it or None)."""
    newer = aliased(ReaderRead)
    q = (select(ReaderRead, User.display_name, newer.id.label("newer_id"))
         .join(User, User.id == ReaderRead.reader_id)
         .join(ReadingListCase, ReadingListCase.id == ReaderRead.case_id)
         .outerjoin(newer, newer.supersedes_id == ReaderRead.id)
         .where(ReadingListCase.list_id == int(list_id)).order_by(ReaderRead.id))
    return [(r, name, newer_id) for r, name, newer_id in s.execute(q).all()]


def sus_scores(s: Session, user_ids: Iterable[int]) -> pd.DataFrame:
    """SUS questionnaires of the given users, oldest first: :data:`SUS_COLUMNS`."""
    return pd.DataFrame(s.execute(select(Feedback.user_id.label("reader_id"), Feedback.sus_score, Feedback.created_at)
                                  .where(Feedback.user_id.in_(list(user_ids))).order_by(Feedback.id))
                        .mappings().all(), columns=SUS_COLUMNS)


# ------------------------------------------------------------------------------ reference standard
def current_references(s: Session, study_ids: Sequence[int]) -> dict[int, ReferenceStandard]:
    """The newest reference-standard row of each study that has one."""
    if not study_ids:
        return {}
    rows = s.scalars(select(ReferenceStandard).where(ReferenceStandard.study_id.in_(set(study_ids)))
                     .order_by(ReferenceStandard.id))
    return {r.study_id: r for r in rows}  # newest wins


def studies_with_reference(s: Session, study_ids: Iterable[int]) -> set[int]:
    """The ids among ``study_ids`` that have a reference standard."""
    ids = set(study_ids)
    if not ids:
        return set()
    return set(s.scalars(select(ReferenceStandard.study_id).where(ReferenceStandard.study_id.in_(ids))))


def add_reference(s: Session, *, study_id: int, finding: str, source: str, note: str, entered_by: int,
                  entered_at: datetime) -> ReferenceStandard:
    """Append a reference-standard row (values checked by the caller); flushed."""
    row = ReferenceStandard(study_id=study_id, finding=finding, source=source, note=note, entered_by=entered_by,
                            entered_at=entered_at)
    s.add(row)
    s.flush()
    return row


def study_exists(s: Session, study_id: int) -> bool:
    """True when the study row exists."""
    return s.get(Study, int(study_id)) is not None


# ------------------------------------------------------------------------------ series of a case
def series_of_case(s: Session, case: ReadingListCase) -> SeriesRow | None:
    """The ``series`` row of a case: its (study, series key), or the study's only series when the key is ""."""
    if case.series_key:
        return s.scalar(select(SeriesRow).where(SeriesRow.study_id == case.study_id,
                                                SeriesRow.series_key == case.series_key))
    found = series_of_study(s, case.study_id)
    return found[0] if len(found) == 1 else None


# ------------------------------------------------------------------------------ reference lesions
def _not_superseded(model):
    newer = aliased(model)
    return ~select(newer.id).where(newer.supersedes_id == model.id).exists()


def current_reference_lesions(s: Session, case_ids: Iterable[int]) -> list[ReferenceLesion]:
    """The current reference lesions (not superseded, not deleted) of the given cases, by case then id."""
    ids = [int(c) for c in case_ids]
    if not ids:
        return []
    return list(s.scalars(select(ReferenceLesion).where(ReferenceLesion.case_id.in_(ids),
                                                        ReferenceLesion.deleted.is_(False),
                                                        _not_superseded(ReferenceLesion))
                          .order_by(ReferenceLesion.case_id, ReferenceLesion.id)))


def get_reference_lesion(s: Session, lesion_id: int) -> ReferenceLesion | None:
    """The reference-lesion row ``lesion_id`` (any state), or None."""
    return s.get(ReferenceLesion, int(lesion_id))


def reference_lesion_is_current(s: Session, lesion_id: int) -> bool:
    """True when the row exists, is not a deletion and no row supersedes it."""
    row = get_reference_lesion(s, lesion_id)
    if row is None or row.deleted:
        return False
    return s.scalar(select(ReferenceLesion.id).where(ReferenceLesion.supersedes_id == row.id)) is None


def add_reference_lesion(s: Session, *, case_id: int, slice_index: int, x: float, y: float, diameter_mm: float,
                         source: str, note: str, entered_by: int, entered_at: datetime,
                         supersedes_id: int | None = None, deleted: bool = False) -> ReferenceLesion:
    """Append a reference-lesion row (values checked by the caller); flushed."""
    row = ReferenceLesion(case_id=case_id, slice_index=slice_index, x=x, y=y, diameter_mm=diameter_mm, source=source,
                          note=note, entered_by=entered_by, entered_at=entered_at, supersedes_id=supersedes_id,
                          deleted=bool(deleted))
    s.add(row)
    s.flush()
    return row


# ------------------------------------------------------------------------------ lesion marks
def current_marks(s: Session, case_id: int, reader_id: int, step: str | None = None) -> list[LesionMark]:
    """The reader's current marks (not superseded, not deleted) of a case, in ``step`` or both, by id."""
    q = select(LesionMark).where(LesionMark.case_id == int(case_id), LesionMark.reader_id == int(reader_id),
                                 LesionMark.deleted.is_(False), _not_superseded(LesionMark))
    if step is not None:
        q = q.where(LesionMark.step == step)
    return list(s.scalars(q.order_by(LesionMark.id)))


def mark_rows(s: Session, case_id: int, reader_id: int) -> list[LesionMark]:
    """Every lesion-mark row (any state) of a reader on a case, by id."""
    return list(s.scalars(select(LesionMark).where(LesionMark.case_id == int(case_id),
                                                   LesionMark.reader_id == int(reader_id)).order_by(LesionMark.id)))


def get_mark(s: Session, mark_id: int) -> LesionMark | None:
    """The lesion-mark row ``mark_id`` (any state), or None."""
    return s.get(LesionMark, int(mark_id))


def mark_is_current(s: Session, mark_id: int) -> bool:
    """True when the mark row exists, is not a deletion and no row supersedes it."""
    row = get_mark(s, mark_id)
    if row is None or row.deleted:
        return False
    return s.scalar(select(LesionMark.id).where(LesionMark.supersedes_id == row.id)) is None


def add_mark(s: Session, *, case_id: int, reader_id: int, step: str, slice_index: int, x: float, y: float,
             rating: int, nodule_id: int | None, copied_from_id: int | None, supersedes_id: int | None,
             deleted: bool, created_at: datetime) -> LesionMark:
    """Append a lesion-mark row (values checked by the caller); flushed."""
    row = LesionMark(case_id=case_id, reader_id=reader_id, step=step, slice_index=slice_index, x=x, y=y,
                     rating=rating, nodule_id=nodule_id, copied_from_id=copied_from_id, supersedes_id=supersedes_id,
                     deleted=bool(deleted), created_at=created_at)
    s.add(row)
    s.flush()
    return row


def marks_of_list(s: Session, list_id: int) -> list[tuple[LesionMark, int | None]]:
    """Every lesion-mark row of the list's cases, oldest first: (mark, id of the row that supersedes it or None)."""
    newer = aliased(LesionMark)
    q = (select(LesionMark, newer.id.label("newer_id"))
         .join(ReadingListCase, ReadingListCase.id == LesionMark.case_id)
         .outerjoin(newer, newer.supersedes_id == LesionMark.id)
         .where(ReadingListCase.list_id == int(list_id)).order_by(LesionMark.id))
    return [(m, newer_id) for m, newer_id in s.execute(q).all()]


def get_nodule(s: Session, nodule_id: int) -> AiNodule | None:
    """The AI finding (``nodules`` row) ``nodule_id``, or None."""
    return s.get(AiNodule, int(nodule_id))


def detection_of_case(s: Session, case: ReadingListCase) -> NoduleDetection | None:
    """The nodule detection whose findings a case's readers are shown: the newest detection on the
    case's inference (the AI result the list shows), else the newest on the case's series, or None."""
    found = s.scalar(select(NoduleDetection).where(NoduleDetection.inference_id == case.inference_id)
                     .order_by(NoduleDetection.id.desc()).limit(1))
    if found is not None:
        return found
    series = series_of_case(s, case)
    if series is None:
        return None
    return s.scalar(select(NoduleDetection).where(NoduleDetection.series_id == series.id)
                    .order_by(NoduleDetection.id.desc()).limit(1))
