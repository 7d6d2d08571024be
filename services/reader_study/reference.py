"""The reference standard of a list's studies and the reference lesions of its cases (coordinators):
forms, CSV imports, the LIDC XML import, the tables.

Reference lesions are per case of a list (a series): centre (``slice_index`` 0-based, ``x``
column, ``y`` row in pixels) and diameter in mm, from the Reading lists form, a CSV
(:data:`LESION_CSV_COLUMNS`; ``slice`` 1-based as the viewer shows "Slice i of n"), or an LIDC-IDRI
XML (``core.reference_lesions.lidc_consensus``: nodules of 3 mm or more marked by at least 3 of
the 4 readers, the LUNA16 rule) placed on the case's series from the study store. Like the
reference standard, they are hidden from the list's readers (BlindingError).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from core.annotations import AnnotationError, read_lidc_xml
from core.domain import Finding
from core.reference_lesions import LUNA16_MIN_READERS, LesionGeometryError, lidc_consensus
from core.settings import get_settings
from db.repository import (
    NotFoundError,
    ValidationError,
    _choice,
    _real,
    _require_role,
    _user,
    _whole,
    log_event,
)
from db.repository import reader_study as rows
from db.schema import (
    AuditAction,
    LesionSource,
    ReadingList,
    ReadingListCase,
    ReferenceLesion,
    ReferenceSource,
    ReferenceStandard,
    User,
)
from services.reader_study.common import (
    COORDINATOR_ROLES,
    LESION_COLUMNS,
    STUDY_VIEWER_ROLES,
    ImportResult,
    ReaderStudyBase,
    UnmatchedRow,
    _aware,
)

#: Shortest study-key prefix accepted in a reference-standard CSV (the worklist shows 12).
MIN_KEY_PREFIX = 12
#: Columns a reference-standard CSV must have (``note`` is optional).
REFERENCE_CSV_COLUMNS: tuple[str, ...] = ("study_key", "finding", "source")
#: Columns a reference-lesion CSV must have (``series_key`` and ``note`` are optional); ``slice``
#: is 1-based (the first slice is 1), ``x`` the pixel column and ``y`` the pixel row (0-based).
LESION_CSV_COLUMNS: tuple[str, ...] = ("study_key", "slice", "x", "y", "diameter_mm")
#: Largest pixel coordinate and diameter (mm) accepted for a reference lesion.
MAX_PIXEL = 100_000.0
MAX_DIAMETER_MM = 500.0
#: Most LIDC XML files listed from the data folder.
MAX_LIDC_FILES = 500
#: Two lesions of a case are the same when their slices are equal, centres within this many
#: pixels and diameters within 0.01 mm (a CSV or XML imported twice adds nothing).
SAME_LESION_PX = 0.5


@dataclass(frozen=True)
class LidcImportResult:
    """Outcome of an LIDC XML import for one case.

    Attributes:
        saved: reference lesions saved. already_there: lesions equal to a current one (not saved again).
        lesions: (slice_index, x, y, diameter_mm, readers) of every lesion the XML gives (saved or not).
        fewer_readers: nodules marked by fewer than 3 readers (not lesions by the LUNA16 rule).
        marks_outside: readers' marks on no slice of the series. small_marks: marks of nodules under 3 mm.
    """

    saved: int
    already_there: int
    lesions: tuple[tuple[int, float, float, float, int], ...]
    fewer_readers: int
    marks_outside: int
    small_marks: int


class ReferenceStandards(ReaderStudyBase):
    """Entering and reading the reference standard; each public method is one transaction."""

    def _add_reference(self, s: Session, user: User, study_id: int, finding, source, note: str) -> ReferenceStandard:
        finding = _choice(finding, Finding, "reference finding")
        source = _choice(source, ReferenceSource, "reference source")
        note = str(note or "")
        if len(note) > 2000:
            raise ValidationError("The note is too long (at most 2000 characters).")
        row = rows.add_reference(s, study_id=study_id, finding=finding, source=source, note=note, entered_by=user.id,
                                 entered_at=self._now())
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
            if not rows.study_exists(s, study_id):
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
            table = [{"case_id": c.id, "position": c.position, "study_id": c.study_id, "study_key": c.study.study_key,
                     "series_key": c.series_key,
                     "reference": refs[c.study_id].finding if c.study_id in refs else None,
                     "reference_source": refs[c.study_id].source if c.study_id in refs else None,
                     "entered_at": _aware(refs[c.study_id].entered_at) if c.study_id in refs else None}
                    for c in self._cases(s, rl.id)]
        return pd.DataFrame(table, columns=["case_id", "position", "study_id", "study_key", "series_key", "reference",
                                           "reference_source", "entered_at"])


def _text(text: str | bytes) -> str:
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError("The file is not UTF-8 text; save it as CSV (UTF-8).") from None
    return str(text).lstrip("\ufeff")


def _same(row: ReferenceLesion, slice_index: int, x: float, y: float, diameter_mm: float) -> bool:
    return (row.slice_index == slice_index and abs(row.x - x) <= SAME_LESION_PX and abs(row.y - y) <= SAME_LESION_PX
            and abs(row.diameter_mm - diameter_mm) <= 0.01)


class ReferenceLesions(ReaderStudyBase):
    """Entering and reading reference lesions; each public method is one transaction."""

    def _coordinator_case(self, s: Session, actor: User | int, case_id: int
                          ) -> tuple[User, ReadingList, ReadingListCase]:
        user = _user(s, actor, "actor")
        _require_role(user, COORDINATOR_ROLES, "enter reference lesions")
        case = rows.get_case(s, case_id)
        if case is None:
            raise NotFoundError(f"There is no case with id {case_id}; choose a case of the reading list.")
        rl = self._list(s, case.list_id)
        self._refuse_own_list(s, user, rl)
        return user, rl, case

    @staticmethod
    def _lesion_values(s: Session, case: ReadingListCase, slice_index, x, y, diameter_mm
                       ) -> tuple[int, float, float, float]:
        series = rows.series_of_case(s, case)
        n = series.n_slices if series is not None else 100_000_000
        return (_whole(slice_index, f"Slice index (0-based; the series has {n} slices)", 0, n - 1),
                _real(x, "x (pixel column)", 0.0, MAX_PIXEL), _real(y, "y (pixel row)", 0.0, MAX_PIXEL),
                _real(diameter_mm, "Diameter (mm)", 0.0, MAX_DIAMETER_MM))

    def _add_lesion(self, s: Session, user: User, case: ReadingListCase, values: tuple[int, float, float, float],
                    source: str, note: str) -> ReferenceLesion | None:
        """Save a lesion; None (nothing saved) when the same lesion is current already."""
        z, x, y, d = values
        if d <= 0:
            raise ValidationError("Diameter (mm) must be more than 0.")
        note = str(note or "")
        if len(note) > 2000:
            raise ValidationError("The note is too long (at most 2000 characters).")
        if any(_same(r, z, x, y, d) for r in rows.current_reference_lesions(s, [case.id])):
            return None
        row = rows.add_reference_lesion(s, case_id=case.id, slice_index=z, x=x, y=y, diameter_mm=d, source=source,
                                        note=note, entered_by=user.id, entered_at=self._now())
        log_event(s, user_id=user.id, action=AuditAction.ADMIN_CHANGE, object_type="reference_lesion",
                  object_id=row.id, detail=f"case {case.id}: slice {z}, ({x:g}, {y:g}), {d:g} mm ({source})")
        return row

    def add_reference_lesion(self, actor: User | int, case_id: int, *, slice_index: int, x: float, y: float,
                             diameter_mm: float, note: str = "") -> int:
        """Enter a reference lesion of a case by hand (source "form").

        Args:
            actor: an active coordinator or admin who is not a reader of the list.
            case_id: a case of a reading list.
            slice_index: 0-based slice of the case's series. x, y: centre pixel column and row
                (0 .. 100000). diameter_mm: 0 < d <= 500.
            note: free text up to 2000 characters, no patient identifiers.

        Returns:
            the new lesion's id.

        Raises:
            PermissionDenied / BlindingError, NotFoundError; ValidationError: a value out of
            range, or the same lesion (same slice, centre within 0.5 px, same diameter) is
            already entered.
        """
        with self._factory.begin() as s:
            user, _, case = self._coordinator_case(s, actor, case_id)
            row = self._add_lesion(s, user, case, self._lesion_values(s, case, slice_index, x, y, diameter_mm),
                                   LesionSource.FORM.value, note)
            if row is None:
                raise ValidationError("This lesion is already entered for the case.")
            return row.id

    def delete_reference_lesion(self, actor: User | int, lesion_id: int) -> None:
        """Delete a current reference lesion (a deletion row supersedes it; nothing is erased).

        Raises:
            PermissionDenied / BlindingError, NotFoundError; ValidationError: it was deleted already.
        """
        with self._factory.begin() as s:
            old = rows.get_reference_lesion(s, lesion_id)
            if old is None:
                raise NotFoundError(f"There is no reference lesion with id {lesion_id}.")
            user, _, case = self._coordinator_case(s, actor, old.case_id)
            if not rows.reference_lesion_is_current(s, old.id):
                raise ValidationError(f"Reference lesion {old.id} was already deleted.")
            row = rows.add_reference_lesion(s, case_id=case.id, slice_index=old.slice_index, x=old.x, y=old.y,
                                            diameter_mm=old.diameter_mm, source=old.source, note=old.note,
                                            entered_by=user.id, entered_at=self._now(), supersedes_id=old.id,
                                            deleted=True)
            log_event(s, user_id=user.id, action=AuditAction.ADMIN_CHANGE, object_type="reference_lesion",
                      object_id=row.id, detail=f"case {case.id}: reference lesion {old.id} deleted")

    def reference_lesions(self, viewer: User | int, list_id: int) -> pd.DataFrame:
        """The current reference lesions of a list's cases (coordinators, leads, admins).

        Returns:
            DataFrame :data:`~services.reader_study.common.LESION_COLUMNS` (``slice_index``
            0-based), by case position then lesion id.

        Raises:
            PermissionDenied / BlindingError, NotFoundError.
        """
        with self._factory.begin() as s:
            user = _user(s, viewer, "viewer")
            _require_role(user, STUDY_VIEWER_ROLES, "see the reference lesions")
            rl = self._list(s, list_id)
            self._refuse_own_list(s, user, rl)
            return lesion_table(s, rl)

    @staticmethod
    def _match_case(cases: list[ReadingListCase], key: str, series_key: str) -> tuple[ReadingListCase | None, str]:
        hits = [c for c in cases if c.study.study_key == key] or [
            c for c in cases if len(key) >= MIN_KEY_PREFIX and c.study.study_key.startswith(key)]
        if series_key:
            hits = [c for c in hits if c.series_key.startswith(series_key)]
        if len(hits) == 1:
            return hits[0], ""
        if not key:
            return None, "the study key is empty"
        if not hits:
            return None, "no case of this list has this study key" + (" and series key" if series_key else "")
        if len({c.study_id for c in hits}) > 1:
            return None, "the key matches several cases; give more characters"
        return None, "the study has several series in this list; add a series_key column"

    def import_reference_lesions_csv(self, actor: User | int, list_id: int, text: str | bytes) -> ImportResult:
        """Import reference lesions for a list's cases from CSV text.

        The CSV has a header with ``study_key, slice, x, y, diameter_mm`` (names case-insensitive;
        ``series_key`` to choose among a study's series, ``note``; other columns ignored). ``slice``
        is 1-based (the first slice is 1, as the viewer's "Slice i of n"); ``x`` column and ``y``
        row of the centre in pixels; ``diameter_mm`` in mm. ``study_key`` is matched as for the
        reference standard (full key or a prefix of at least :data:`MIN_KEY_PREFIX` characters
        matching one case). Rows that match save (source "csv"); the others are reported.

        Returns:
            :class:`ImportResult`: number saved, and per unsaved row its line (header = 1), key and
            reason (no such case, ambiguous key, a value out of range, the same lesion entered already).

        Raises:
            PermissionDenied / BlindingError, NotFoundError; ValidationError: not UTF-8 text or a
            required column is missing (nothing saved).
        """
        reader = csv.DictReader(io.StringIO(_text(text)))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in LESION_CSV_COLUMNS if c not in header]
        if missing:
            raise ValidationError(f"The CSV needs the columns {', '.join(LESION_CSV_COLUMNS)}; "
                                  f"missing: {', '.join(missing)}.")
        with self._factory.begin() as s:
            user = _user(s, actor, "actor")
            _require_role(user, COORDINATOR_ROLES, "enter reference lesions")
            rl = self._list(s, list_id)
            self._refuse_own_list(s, user, rl)
            cases = self._cases(s, rl.id)
            saved = 0
            unmatched: list[UnmatchedRow] = []
            for line, raw in enumerate(reader, start=2):
                row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
                key = row.get("study_key", "")
                case, reason = self._match_case(cases, key, row.get("series_key", ""))
                if case is None:
                    unmatched.append(UnmatchedRow(line, key, reason))
                    continue
                try:
                    slice_1 = _whole(row.get("slice"), "slice (1-based)", 1, 100_000_000)
                    values = self._lesion_values(s, case, slice_1 - 1, row.get("x"), row.get("y"),
                                                 row.get("diameter_mm"))
                    if self._add_lesion(s, user, case, values, LesionSource.CSV.value, row.get("note", "")) is None:
                        unmatched.append(UnmatchedRow(line, key, "the same lesion is already entered for this case"))
                        continue
                    saved += 1
                except ValidationError as exc:
                    unmatched.append(UnmatchedRow(line, key, str(exc)))
            return ImportResult(saved=saved, unmatched=tuple(unmatched))

    def lidc_xml_files(self, actor: User | int) -> list[str]:
        """LIDC-IDRI XML files under the data folder (``LUNGREVIEW_DATA_DIR``), as paths relative to it.

        A file counts when it ends in ``.xml`` and its first 4 KB name ``LidcReadMessage``; sorted,
        at most :data:`MAX_LIDC_FILES`.

        Raises:
            PermissionDenied: ``actor`` may not enter reference lesions.
        """
        with self._factory.begin() as s:
            _require_role(_user(s, actor, "actor"), COORDINATOR_ROLES, "enter reference lesions")
        root = get_settings().data_dir
        out: list[str] = []
        for path in sorted(_xml_files(root)):
            try:
                with open(path, "rb") as f:
                    head = f.read(4096)
            except OSError:
                continue
            if b"LidcReadMessage" in head:
                out.append(path.relative_to(root).as_posix())
                if len(out) >= MAX_LIDC_FILES:
                    break
        return out

    def import_reference_lesions_lidc(self, actor: User | int, case_id: int, *, path: str | None = None,
                                      xml: bytes | None = None,
                                      open_series: Callable[[int, str], object] | None = None) -> LidcImportResult:
        """Reference lesions of a case from an LIDC-IDRI XML, placed on its series from the study store.

        The LUNA16 rule (``core.reference_lesions``): nodules of 3 mm or more marked by at least 3
        of the 4 readers, readers' marks clustered by centre distance, centre and diameter the
        readers' means; each roi is placed on the slice with its z position (the store keeps no
        SOPInstanceUIDs). Lesions equal to a current one are not saved again. Source "lidc-xml";
        the note says how many readers marked the nodule and their mean malignancy.

        Args:
            actor: an active coordinator or admin who is not a reader of the list.
            case_id: a case whose series is in the study store.
            path: the XML, relative to the data folder (one of :meth:`lidc_xml_files`); or
            xml: the XML file's bytes (an upload). Exactly one of the two.
            open_series: ``(study_id, series_key) -> core.imaging.Series | None``; default
                ``services.reading.open_stored_series`` on this service's database.

        Returns:
            :class:`LidcImportResult`.

        Raises:
            PermissionDenied / BlindingError, NotFoundError; ValidationError: neither or both of
            path and xml, a path outside the data folder or missing, an XML that cannot be read,
            a series not in the study store or without slice positions / pixel spacing.
        """
        if (path is None) == (xml is None):
            raise ValidationError("Give the LIDC XML either as a file of the data folder or as an upload.")
        with self._factory.begin() as s:
            _, _, case = self._coordinator_case(s, actor, case_id)
            study_id, series_key = case.study_id, case.series_key
        marks = _read_lidc(path, xml)
        if open_series is None:
            from services.reading import open_stored_series

            def open_series(sid: int, key: str):
                return open_stored_series(self._factory, sid, key)
        series = open_series(study_id, series_key)
        if series is None or not getattr(series, "slices", None):
            raise ValidationError(f"The series of case {case_id} is not in the study store (evicted, or analysed "
                                  "before the store existed); open it again on Read a study, then import.")
        z = [sl.image_position_mm[2] if sl.image_position_mm is not None else
             (sl.position_mm if sl.position_mm is not None else np.nan) for sl in series.slices]
        spacing = series.spacing_mm
        if spacing is None:
            raise ValidationError("The series has no pixel spacing, so LIDC marks cannot be placed on it.")
        try:
            found = lidc_consensus(marks, slice_z_mm=z, shape=series.slices[0].shape, pixel_mm=tuple(spacing[1:]))
        except LesionGeometryError as exc:
            raise ValidationError(str(exc)) from None
        lesions = tuple((n.slice_index, round(n.x, 2), round(n.y, 2), round(n.diameter_mm, 2), len(n.readers))
                        for n in found.lesions)
        saved = already = 0
        with self._factory.begin() as s:
            user, _, case = self._coordinator_case(s, actor, case_id)
            for n, (z_i, x, y, d, k) in zip(found.lesions, lesions, strict=True):
                mal = f", mean malignancy {n.malignancy:.2f}" if n.malignancy is not None else ""
                note = f"LIDC XML: marked by {k} of the readers (LUNA16 rule: at least {LUNA16_MIN_READERS}){mal}"
                if self._add_lesion(s, user, case, (z_i, x, y, d), LesionSource.LIDC_XML.value, note) is None:
                    already += 1
                else:
                    saved += 1
        return LidcImportResult(saved=saved, already_there=already, lesions=lesions,
                                fewer_readers=len(found.fewer_readers), marks_outside=found.marks_outside,
                                small_marks=found.small_marks)


def lesion_table(s: Session, rl: ReadingList) -> pd.DataFrame:
    """The current reference lesions of a list (:data:`~services.reader_study.common.LESION_COLUMNS`),
    by case position then lesion id. Takes a Session; checks no role (the callers do)."""
    cases = {c.id: c for c in rows.list_cases(s, rl.id)}
    table = [{"lesion_id": r.id, "case_id": r.case_id, "position": cases[r.case_id].position,
              "study_key": cases[r.case_id].study.study_key, "series_key": cases[r.case_id].series_key,
              "slice_index": r.slice_index, "x": r.x, "y": r.y, "diameter_mm": r.diameter_mm, "source": r.source,
              "note": r.note, "entered_by": r.entered_by, "entered_at": _aware(r.entered_at)}
             for r in rows.current_reference_lesions(s, list(cases))]
    out = pd.DataFrame(table, columns=list(LESION_COLUMNS))
    return out.sort_values(["position", "lesion_id"], kind="mergesort").reset_index(drop=True)


def _xml_files(root: Path) -> Iterator[Path]:
    """``*.xml`` files under ``root`` (symbolic links to folders not followed)."""
    for folder, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(".xml"):
                yield Path(folder) / name


def _read_lidc(path: str | None, xml: bytes | None):
    """The readers' marks of an LIDC XML given as a data-folder path or as bytes."""
    if path is not None:
        root = get_settings().data_dir.resolve()
        full = (root / str(path)).resolve()
        if not full.is_relative_to(root):
            raise ValidationError(f"{path!r} is outside the data folder; choose one of the listed XML files.")
        if not full.is_file():
            raise ValidationError(f"{path!r} is not a file of the data folder; choose one of the listed XML files.")
        try:
            return read_lidc_xml(full)
        except AnnotationError as exc:
            raise ValidationError(f"The LIDC XML cannot be read: {exc}") from None
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "upload.xml"
        f.write_bytes(bytes(xml))
        try:
            return read_lidc_xml(f)
        except AnnotationError as exc:
            raise ValidationError(f"The uploaded LIDC XML cannot be read: {str(exc).replace(str(f), 'upload')}") from None
