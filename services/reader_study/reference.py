"""The reference standard of a list's studies (coordinators): the form, the CSV import, the table."""

from __future__ import annotations

import csv
import io

import pandas as pd
from sqlalchemy.orm import Session

from core.domain import Finding
from db.repository import NotFoundError, ValidationError, _choice, _require_role, _user, log_event
from db.repository import reader_study as rows
from db.schema import AuditAction, ReferenceSource, ReferenceStandard, User
from services.reader_study.common import (
    COORDINATOR_ROLES,
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
