"""The analysis data of a reading list (coordinators, leads, admins): cases with reference, AI
result and series spacing, every read, the reference lesions, every lesion mark, the readers and
their SUS scores; what the pilot report is built from."""

from __future__ import annotations

import numpy as np
import pandas as pd

from db.repository import log_event
from db.repository import reader_study as rows
from db.schema import AuditAction, User
from services.reader_study.common import MARK_COLUMNS, ReaderStudyBase, StudyData, _aware
from services.reader_study.reference import lesion_table


class AnalysisData(ReaderStudyBase):
    """Reading a list's results for the analysis; one transaction per call."""

    def study_data(self, viewer: User | int | None, list_id: int, *, audit: bool = False) -> StudyData:
        """Cases, reference standard, AI results, every read, reference lesions, every mark, readers, SUS.

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
            series = {c.id: rows.series_of_case(s, c) for c in cases}

            def spacing(c, axis: int) -> float:
                sp = series[c.id].spacing_mm if series[c.id] is not None else (None, None, None)
                return float(sp[axis]) if sp[axis] is not None else np.nan

            case_df = pd.DataFrame([{
                "case_id": c.id, "position": c.position, "study_id": c.study_id, "study_key": c.study.study_key,
                "series_key": c.series_key, "inference_id": c.inference_id, "ai_label": c.inference.ai_label,
                "ai_score": c.inference.series_score, "ai_ood": c.inference.ood,
                "reference": refs[c.study_id].finding if c.study_id in refs else np.nan,
                "reference_source": refs[c.study_id].source if c.study_id in refs else np.nan,
                "n_slices": series[c.id].n_slices if series[c.id] is not None else np.nan,
                "spacing_z_mm": spacing(c, 0), "spacing_y_mm": spacing(c, 1), "spacing_x_mm": spacing(c, 2),
            } for c in cases], columns=["case_id", "position", "study_id", "study_key", "series_key", "inference_id",
                                        "ai_label", "ai_score", "ai_ood", "reference", "reference_source", "n_slices",
                                        "spacing_z_mm", "spacing_y_mm", "spacing_x_mm"])
            keys = {c.id: c.study.study_key for c in cases}
            reads = pd.DataFrame([{
                "read_id": r.id, "case_id": r.case_id, "study_key": keys[r.case_id], "reader_id": r.reader_id,
                "reader": name, "phase": r.phase, "finding": r.finding, "confidence": r.confidence,
                "seconds": r.seconds, "supersedes_id": r.supersedes_id, "current": newer_id is None,
                "created_at": _aware(r.created_at),
            } for r, name, newer_id in rows.reads_of_list(s, rl.id)],
                columns=["read_id", "case_id", "study_key", "reader_id", "reader", "phase", "finding", "confidence",
                         "seconds", "supersedes_id", "current", "created_at"])
            assignments = rows.assignments(s, rl.id)
            readers = pd.DataFrame([{
                "reader_id": a.reader_id, "reader": a.reader.display_name, "username": a.reader.username,
                "n_done": self._n_done(s, rl, a.reader_id), "total": len(a.case_order),
            } for a in assignments], columns=["reader_id", "reader", "username", "n_done", "total"])
            ids = [a.reader_id for a in assignments]
            sus = rows.sus_scores(s, ids)
            lesions = lesion_table(s, rl)
            marks = _marks_frame(rows.marks_of_list(s, rl.id))
            if audit:
                log_event(s, user_id=user.id if user else None, action=AuditAction.EXPORT, object_type="reading_list",
                          object_id=rl.id, detail=f"pilot report: {len(reads)} reads, {len(marks)} lesion-mark rows")
            return StudyData(list=summary, cases=case_df, reads=reads, readers=readers, sus=sus, lesions=lesions,
                             marks=marks)


def _marks_frame(found) -> pd.DataFrame:
    """Every lesion-mark row with ``current`` and ``chain_id`` (the first row of its chain)."""
    parent = {m.id: m.supersedes_id for m, _ in found}

    def root(mark_id: int) -> int:
        while parent.get(mark_id) is not None:
            mark_id = parent[mark_id]
        return mark_id

    return pd.DataFrame([{
        "mark_id": m.id, "case_id": m.case_id, "reader_id": m.reader_id, "step": m.step, "slice_index": m.slice_index,
        "x": m.x, "y": m.y, "rating": m.rating, "nodule_id": m.nodule_id, "copied_from_id": m.copied_from_id,
        "supersedes_id": m.supersedes_id, "deleted": bool(m.deleted), "current": newer_id is None and not m.deleted,
        "chain_id": root(m.id), "created_at": _aware(m.created_at),
    } for m, newer_id in found], columns=list(MARK_COLUMNS))
