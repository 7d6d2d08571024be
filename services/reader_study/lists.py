"""Reading lists (coordinators): what a list can hold, making one, listing and finding lists."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import pandas as pd

from db.repository import (
    NotFoundError,
    ValidationError,
    _choice,
    _require_role,
    _user,
    _whole,
    find_series,
    latest_inference,
    log_event,
)
from db.repository import reader_study as rows
from db.schema import AuditAction, Inference, ReadingMode, User
from services.reader_study.common import (
    COORDINATOR_ROLES,
    READER_ROLES,
    STUDY_VIEWER_ROLES,
    ListSummary,
    ReaderStudyBase,
    reader_order,
)


class ReadingLists(ReaderStudyBase):
    """Making and finding reading lists; each public method is one transaction."""

    def models_with_results(self, actor: User | int) -> list[str]:
        """Model ids that have at least one stored result (what a list can show), sorted.

        Raises:
            PermissionDenied: ``actor`` is not an active coordinator or admin.
        """
        with self._factory.begin() as s:
            _require_role(_user(s, actor, "actor"), COORDINATOR_ROLES, "make reading lists")
            return rows.model_ids_with_results(s)

    def reader_candidates(self, actor: User | int) -> list[tuple[int, str]]:
        """Active users who may be assigned as readers: (user id, display name), by name.

        Raises:
            PermissionDenied: ``actor`` is not an active coordinator or admin.
        """
        with self._factory.begin() as s:
            _require_role(_user(s, actor, "actor"), COORDINATOR_ROLES, "make reading lists")
            return rows.active_users_with_roles(s, [r.value for r in READER_ROLES])

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
            return rows.candidate_cases(s, model_id)

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
            if rows.name_taken(s, name):
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
                if not rows.study_exists(s, study_id):
                    raise NotFoundError(f"There is no study with id {study_id}; upload or retrieve it first.")
                if key:
                    series = find_series(s, study_id, key)
                else:
                    found = rows.series_of_study(s, study_id)
                    if len(found) > 1:
                        raise ValidationError(f"Study {study_id} has {len(found)} series; choose the series "
                                              "that is the case.")
                    series = found[0] if found else None
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
            rl, case_rows = rows.add_list(
                s, name=name, model_id=model_id, mode=mode, randomise=bool(randomise), seed=seed, created_by=user.id,
                created_at=self._now(),
                cases=[(sid, key, inf.id) for (sid, key), inf in zip(resolved, inferences, strict=True)])
            ids = [c.id for c in case_rows]
            for ru in reader_rows:
                rows.add_reader(s, rl.id, ru.id, reader_order(ids, seed=seed, reader_id=ru.id, randomise=bool(randomise)))
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
            return [self._summary(s, rl) for rl in rows.all_lists(s)]

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
            rl = rows.list_by_name(s, name)
            if rl is None:
                raise NotFoundError(f"There is no reading list named {name!r}.")
            return self._summary(s, rl)
