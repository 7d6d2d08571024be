"""The LungReview database schema: SQLAlchemy 2 ORM classes with typed ``Mapped[...]`` columns.

Tables (one class each): ``users`` (:class:`User`), ``studies`` (:class:`Study`), ``series``
(:class:`Series`), ``inferences`` (:class:`Inference`), ``reviews`` (:class:`Review`),
``feedback`` (:class:`Feedback`) and ``audit_events`` (:class:`AuditEvent`). A study has one or
more series; an inference is one model run on one series; a review is one reader's read of what
one inference showed. Nodules (end of this module): ``nodule_detections`` (:class:`NoduleDetection`,
one nodule-detector run on an inference's series), ``nodules`` (:class:`AiNodule`, its findings),
``nodule_reads`` (:class:`NoduleRead`, a reader's accept / reject / add per nodule) and
``lungrads_reads`` (:class:`LungRadsRead`, a reader's Lung-RADS category), all append-only.
Lesion marks of the reader study (after the nodules): ``reference_lesions`` (:class:`ReferenceLesion`)
and ``lesion_marks`` (:class:`LesionMark`), append-only chains with supersede.

Privacy: no table has a column for a patient's name, ID, birth date or a raw DICOM UID. A study is
known only by its pseudonymous ``study_key`` (HMAC-SHA256 of StudyInstanceUID, made by
``core.imaging.study_key_for``) and the sha256 of the uploaded bytes (``content_hash``); a series
only by its pseudonymous ``series_key`` (the same keyed hash of SeriesInstanceUID) and a
description made without patient data (``core.imaging.Series.description``).

Integrity rules live in the database as well as in ``db.repository``: CHECK constraints for every
closed choice (``core.config.Finding``, ``Agreement``, ``Role``, :class:`AuditAction`, source kind)
and every range (confidence and SUS answers 1-5, SUS score 0-100, probabilities 0-1), foreign
keys, and append-only tables. ``reviews`` and ``audit_events`` are append-only: the ORM refuses
UPDATE and DELETE of their rows (``before_update``/``before_delete`` mapper events raise
:class:`AppendOnlyError`) and the Alembic migration adds triggers (SQLite, PostgreSQL) that refuse
them in SQL too. A reader who changes their mind adds a new :class:`Review` whose
``supersedes_id`` points at the earlier one; nothing is overwritten.

Times are timezone-aware UTC (``DateTime(timezone=True)``; SQLite gives them back naive, in UTC).
Schema changes go through Alembic (``db/migrations``); ``tests/db/test_migrations.py`` checks that
the migrated schema equals this metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.domain import Agreement, Finding, LungRads, NoduleDecision, NoduleType, Role


class AuditAction(StrEnum):
    """What an :class:`AuditEvent` records."""

    SIGN_IN = "sign-in"
    SIGN_IN_FAILED = "sign-in-failed"
    SIGN_OUT = "sign-out"
    UPLOAD = "upload"
    INFERENCE = "inference"
    REVIEW = "review"
    FEEDBACK = "feedback"
    EXPORT = "export"
    ADMIN_CHANGE = "admin-change"


class SourceKind(StrEnum):
    """What the study was uploaded as (``core.imaging.Study.source_kind``)."""

    DICOM = "dicom"
    JPG = "jpg"
    PNG = "png"


class AppendOnlyError(RuntimeError):
    """An UPDATE or DELETE of an append-only row (review, audit event) was attempted."""


#: Constraint names are fixed so that Alembic migrations are the same on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Tables whose rows may be inserted but never updated or deleted.
APPEND_ONLY_TABLES: tuple[str, ...] = ("reviews", "audit_events")


def _in(column: str, choices: type[StrEnum]) -> str:
    """SQL ``column IN ('a', 'b', ...)`` for the values of a StrEnum (portable SQL)."""
    return f"{column} IN ({', '.join(repr(c.value) for c in choices)})"


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every LungReview table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class User(Base):
    """A person who signs in: radiologist, lead, coordinator or admin.

    ``password_hash`` is a bcrypt hash (``bcrypt.hashpw``, cost 12), never the password.
    """

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_in("role", Role), name="role"),
        CheckConstraint("length(username) >= 3", name="username_length"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r}, role={self.role!r}, active={self.active!r})"


class Study(Base):
    """One uploaded study, known by its pseudonymous key and the sha256 of the uploaded bytes."""

    __tablename__ = "studies"
    __table_args__ = (
        CheckConstraint(_in("source_kind", SourceKind), name="source_kind"),
        CheckConstraint("n_series >= 1", name="n_series_positive"),
        CheckConstraint("n_slices >= 1", name="n_slices_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_key: Mapped[str] = mapped_column(String(128), index=True)
    modality: Mapped[str] = mapped_column(String(16))
    n_series: Mapped[int] = mapped_column(Integer)
    n_slices: Mapped[int] = mapped_column(Integer)
    source_kind: Mapped[str] = mapped_column(String(8))
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    uploaded_at: Mapped[datetime] = mapped_column(default=utc_now)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)

    uploader: Mapped[User] = relationship(lazy="joined")
    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")
    inferences: Mapped[list[Inference]] = relationship(back_populates="study", order_by="Inference.id")


class Series(Base):
    """One series of a study, known by its pseudonymous key; unique per study.

    ``series_key`` is ``core.imaging.Series.series_key`` (hex HMAC-SHA256 of SeriesInstanceUID;
    for pictures, of their content). ``spacing_z_mm``, ``spacing_y_mm``, ``spacing_x_mm`` are
    ``core.imaging.Series.spacing_mm`` (slice step, row spacing, column spacing; mm, > 0), NULL
    when unknown (pictures). ``description`` is the de-identified display name, never PHI.
    """

    __tablename__ = "series"
    __table_args__ = (
        UniqueConstraint("study_id", "series_key"),
        CheckConstraint("n_slices >= 1", name="n_slices_positive"),
        CheckConstraint(
            "(spacing_z_mm IS NULL OR spacing_z_mm > 0) AND (spacing_y_mm IS NULL OR spacing_y_mm > 0) "
            "AND (spacing_x_mm IS NULL OR spacing_x_mm > 0)", name="spacing_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_key: Mapped[str] = mapped_column(String(128))
    modality: Mapped[str] = mapped_column(String(16))
    n_slices: Mapped[int] = mapped_column(Integer)
    spacing_z_mm: Mapped[float | None] = mapped_column(Float)
    spacing_y_mm: Mapped[float | None] = mapped_column(Float)
    spacing_x_mm: Mapped[float | None] = mapped_column(Float)
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    study: Mapped[Study] = relationship(back_populates="series")
    inferences: Mapped[list[Inference]] = relationship(back_populates="series", order_by="Inference.id")

    @property
    def spacing_mm(self) -> tuple[float | None, float | None, float | None]:
        """(z, y, x) spacing in mm, None where unknown."""
        return (self.spacing_z_mm, self.spacing_y_mm, self.spacing_x_mm)


class Inference(Base):
    """One run of a registered model on one series: per-slice probabilities and the series result.

    ``slice_probabilities`` is a JSON list of n lists of k floats in [0, 1] (slice order of the
    series, class order of the model card); ``series_result`` is ``SeriesResult.to_dict()`` from
    ``core.inference``. Typed copies for queries: ``ai_label`` (the model's ``Finding``, also
    when the out-of-distribution guard fired), ``ood`` (``SeriesResult.is_ood``: the series as a
    whole is out of distribution) and ``series_score``. ``study_id`` repeats the series' study.
    """

    __tablename__ = "inferences"
    __table_args__ = (
        CheckConstraint(_in("ai_label", Finding), name="ai_label"),
        CheckConstraint("threshold >= 0 AND threshold <= 1", name="threshold_range"),
        CheckConstraint("series_score >= 0 AND series_score <= 1", name="series_score_range"),
        CheckConstraint("latency_ms >= 0", name="latency_nonnegative"),
        Index("ix_inferences_study_model", "study_id", "model_id"),
        Index("ix_inferences_series_model", "series_id", "model_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    model_id: Mapped[str] = mapped_column(String(128))
    model_sha256: Mapped[str] = mapped_column(String(64))
    slice_probabilities: Mapped[list[Any]] = mapped_column(JSON)
    series_result: Mapped[dict[str, Any]] = mapped_column(JSON)
    ai_label: Mapped[str] = mapped_column(String(16))
    series_score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    ood: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float] = mapped_column(Float)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    study: Mapped[Study] = relationship(back_populates="inferences")
    series: Mapped[Series] = relationship(back_populates="inferences")


class Review(Base):
    """A radiologist's read of one series, next to the AI result (inference) they were shown. Append-only.

    A later change by the same reader on the same inference is a new row with ``supersedes_id``
    set to the row it replaces (unique: a review is superseded at most once). The CURRENT review
    of a reader on an inference is the one no other row supersedes.
    """

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint(_in("finding", Finding), name="finding"),
        CheckConstraint(_in("agreement", Agreement), name="agreement"),
        CheckConstraint("confidence BETWEEN 1 AND 5", name="confidence_range"),
        CheckConstraint("heatmap_helpful IS NULL OR heatmap_helpful BETWEEN 1 AND 5", name="heatmap_range"),
        CheckConstraint("seconds_to_decision >= 0", name="seconds_nonnegative"),
        Index("ix_reviews_study_reader", "study_id", "reader_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    inference_id: Mapped[int] = mapped_column(ForeignKey("inferences.id"), index=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    finding: Mapped[str] = mapped_column(String(16))
    agreement: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[int] = mapped_column(Integer)
    heatmap_helpful: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    seconds_to_decision: Mapped[float] = mapped_column(Float)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    reader: Mapped[User] = relationship(lazy="joined")
    inference: Mapped[Inference] = relationship()


class Feedback(Base):
    """One answer to the System Usability Scale (Brooke 1996) plus two free-text answers.

    ``answers`` is the JSON list of the ten SUS answers (1-5, statement order of
    ``core.domain.SUS_STATEMENTS``); the ten are also kept in columns ``q1``..``q10`` so the
    database can check their range. ``sus_score`` (0-100) comes from ``core.domain.sus_score``.
    ``role`` is the user's role when they answered.
    """

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint(_in("role", Role), name="role"),
        CheckConstraint("sus_score >= 0 AND sus_score <= 100", name="sus_score_range"),
        *(CheckConstraint(f"q{i} BETWEEN 1 AND 5", name=f"q{i}_range") for i in range(1, 11)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    q1: Mapped[int] = mapped_column(Integer)
    q2: Mapped[int] = mapped_column(Integer)
    q3: Mapped[int] = mapped_column(Integer)
    q4: Mapped[int] = mapped_column(Integer)
    q5: Mapped[int] = mapped_column(Integer)
    q6: Mapped[int] = mapped_column(Integer)
    q7: Mapped[int] = mapped_column(Integer)
    q8: Mapped[int] = mapped_column(Integer)
    q9: Mapped[int] = mapped_column(Integer)
    q10: Mapped[int] = mapped_column(Integer)
    sus_score: Mapped[float] = mapped_column(Float)
    helped: Mapped[str] = mapped_column(Text, default="")
    hindered: Mapped[str] = mapped_column(Text, default="")
    app_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    @property
    def answers(self) -> list[int]:
        """The ten SUS answers, statement order."""
        return [getattr(self, f"q{i}") for i in range(1, 11)]


class AuditEvent(Base):
    """Who did what to which object, when. Append-only (ORM events and database triggers).

    ``user_id`` is NULL for failed sign-ins by unknown names. ``detail`` never holds patient
    identifiers (only pseudonymous keys, ids, model ids, counts).
    """

    __tablename__ = "audit_events"
    __table_args__ = (CheckConstraint(_in("action", AuditAction), name="action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    object_type: Mapped[str] = mapped_column(String(32), default="")
    object_id: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    detail: Mapped[str] = mapped_column(Text, default="")


def _refuse_change(kind: str):
    def listener(mapper, connection, target) -> None:
        raise AppendOnlyError(
            f"{type(target).__name__} rows are append-only: {kind} is not allowed. "
            "Add a new row instead (a changed review supersedes the earlier one)."
        )

    return listener


for _cls in (Review, AuditEvent):
    event.listen(_cls, "before_update", _refuse_change("UPDATE"))
    event.listen(_cls, "before_delete", _refuse_change("DELETE"))


class SessionEndReason(StrEnum):
    """Why an :class:`AuthSession` ended (``auth_sessions.ended_reason``)."""

    SIGN_OUT = "sign-out"
    IDLE = "idle"
    EXPIRED = "expired"
    ENDED_BY_ADMIN = "ended-by-admin"
    USER_INACTIVE = "user-inactive"


class AuthSession(Base):
    """A sign-in that outlives the browser tab: one row per issued session token.

    The browser holds the token (``secrets.token_urlsafe(32)``: 256 random bits) in a cookie;
    this table holds only ``token_hash``, its SHA-256 hex digest, so a copy of the database gives
    no usable token. A session is valid while ``revoked_at`` is NULL, ``expires_at`` (absolute
    lifetime) has not passed and ``last_seen_at`` is recent enough (idle timeout; see
    ``services.sessions``). Ending a session sets ``revoked_at`` and ``ended_reason``.
    """

    __tablename__ = "auth_sessions"
    __table_args__ = (
        CheckConstraint(f"ended_reason IS NULL OR {_in('ended_reason', SessionEndReason)}", name="ended_reason"),
        CheckConstraint("(revoked_at IS NULL) = (ended_reason IS NULL)", name="revoked_has_reason"),
        CheckConstraint("length(token_hash) = 64", name="token_hash_length"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    last_seen_at: Mapped[datetime] = mapped_column(default=utc_now)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    ended_reason: Mapped[str | None] = mapped_column(String(16))

    user: Mapped[User] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return (f"AuthSession(id={self.id!r}, user_id={self.user_id!r}, expires_at={self.expires_at!r}, "
                f"ended_reason={self.ended_reason!r})")


# ---------------------------------------------------------------------------------------------
# Reader study: reading lists, reference standard, unaided and aided reads (services.reader_study)
#
# A CASE is one series of a study: (study_id, series_key). ``series_key`` is the key of the
# series inside its study ("" = the study's only series); it maps 1:1 onto a row of the
# ``series`` table (study_id, series_key) once that table exists. The AI result shown for a case
# is a fixed inference (``inference_id``: the list model's newest run on the study when the
# list was made), so every reader of the list sees the same AI output.


class ReadingMode(StrEnum):
    """When a reader of a reading list sees the AI result.

    ``ai_at_once``: AI shown when the case opens; one (aided) read. ``ai_after_unaided``: an
    unaided read first, locked, then the AI result and an aided read (sequential reading design,
    FDA guidance "Clinical Performance Assessment: Considerations for Computer-Assisted Detection
    Devices Applied to Radiology Images and Radiology Device Data", 2020). ``no_ai``: one
    (unaided) read, AI never shown.
    """

    AI_AT_ONCE = "ai_at_once"
    AI_AFTER_UNAIDED = "ai_after_unaided"
    NO_AI = "no_ai"


class ReferenceSource(StrEnum):
    """Where a case's reference standard (truth) comes from."""

    PATHOLOGY = "pathology"
    FOLLOW_UP = "follow-up"
    CONSENSUS = "consensus"


class ReadPhase(StrEnum):
    """A reader's read of a case without (``unaided``) or with (``aided``) the AI result."""

    UNAIDED = "unaided"
    AIDED = "aided"


class CaseEventKind(StrEnum):
    """Timestamps of a reader's work on a case: case opened, AI result shown."""

    OPENED = "opened"
    AI_SHOWN = "ai_shown"


class ReadingList(Base):
    """A set of cases that assigned readers read with one model in one :class:`ReadingMode`.

    ``randomise``: each reader gets their own order, a permutation drawn with
    ``numpy.random.default_rng([seed, reader_id])``; ``seed`` is recorded either way.
    """

    __tablename__ = "reading_lists"
    __table_args__ = (
        CheckConstraint(_in("mode", ReadingMode), name="mode"),
        CheckConstraint("length(name) >= 1", name="name_length"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    model_id: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(24))
    randomise: Mapped[bool] = mapped_column(Boolean)
    seed: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class ReadingListCase(Base):
    """One case (a series of a study) of a reading list, with the AI result its readers see."""

    __tablename__ = "reading_list_cases"
    __table_args__ = (
        UniqueConstraint("list_id", "study_id", "series_key", name="uq_reading_list_cases_case"),
        CheckConstraint("position >= 1", name="position_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("reading_lists.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_key: Mapped[str] = mapped_column(String(128), default="")
    inference_id: Mapped[int] = mapped_column(ForeignKey("inferences.id"))
    position: Mapped[int] = mapped_column(Integer)

    study: Mapped[Study] = relationship(lazy="joined")
    inference: Mapped[Inference] = relationship(lazy="joined")


class ReadingListReader(Base):
    """A reader assigned to a reading list, with their reading order (JSON list of case ids)."""

    __tablename__ = "reading_list_readers"
    __table_args__ = (UniqueConstraint("list_id", "reader_id", name="uq_reading_list_readers_reader"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("reading_lists.id"), index=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    case_order: Mapped[list[Any]] = mapped_column(JSON)

    reader: Mapped[User] = relationship(lazy="joined")


class ReferenceStandard(Base):
    """The truth of a study (normal / benign / malignant) and its source. Append-only.

    A correction is a new row; the CURRENT reference standard of a study is its newest row.
    """

    __tablename__ = "reference_standards"
    __table_args__ = (
        CheckConstraint(_in("finding", Finding), name="finding"),
        CheckConstraint(_in("source", ReferenceSource), name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    finding: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    entered_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    entered_at: Mapped[datetime] = mapped_column(default=utc_now)


class ReaderCaseEvent(Base):
    """When a reader opened a case or was shown its AI result. Append-only."""

    __tablename__ = "reader_case_events"
    __table_args__ = (
        CheckConstraint(_in("kind", CaseEventKind), name="kind"),
        Index("ix_reader_case_events_case_reader", "case_id", "reader_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("reading_list_cases.id"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utc_now)


class ReaderRead(Base):
    """A reader's unaided or aided read of a case. Append-only.

    A re-recorded read is a new row whose ``supersedes_id`` points at the earlier one; the
    CURRENT read of a (case, reader, phase) is the one no row supersedes. ``seconds`` is the
    phase time: unaided from the first opening of the case, aided from the AI being shown (or
    from the opening in ``ai_at_once`` mode), to this read.
    """

    __tablename__ = "reader_reads"
    __table_args__ = (
        CheckConstraint(_in("phase", ReadPhase), name="phase"),
        CheckConstraint(_in("finding", Finding), name="finding"),
        CheckConstraint("confidence BETWEEN 1 AND 5", name="confidence_range"),
        CheckConstraint("seconds >= 0", name="seconds_nonnegative"),
        Index("ix_reader_reads_case_reader", "case_id", "reader_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("reading_list_cases.id"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    finding: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("reader_reads.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


#: The reader-study tables that are append-only (ORM events below; triggers in migration 0004).
READER_STUDY_APPEND_ONLY_TABLES: tuple[str, ...] = ("reference_standards", "reader_case_events", "reader_reads")
APPEND_ONLY_TABLES = APPEND_ONLY_TABLES + READER_STUDY_APPEND_ONLY_TABLES

for _cls in (ReferenceStandard, ReaderCaseEvent, ReaderRead):
    event.listen(_cls, "before_update", _refuse_change("UPDATE"))
    event.listen(_cls, "before_delete", _refuse_change("DELETE"))


# ---------------------------------------------------------------------------------------------
# Nodules: the nodule detector's findings on an analysed series and the radiologist's per-nodule
# read (db.repository.nodules).
#
# A DETECTION is one run of the nodule detector (registry ``model_id``, ``model_sha256``) on the
# series of an inference (the slice classifier's analysis the reader is shown). Its findings are
# the ``nodules`` rows (``core.nodules.Nodule``, one per finding, written once). Why a detection
# row besides the nodules: it records that the detector ran even when it found nothing (Lung-RADS
# 1) or refused the series (``refusal``), so a service need not run it again, and it keeps two
# detector versions run on the same analysis apart.
#
# A reader's per-nodule read is a chain of ``nodule_reads`` rows per AI finding (accept / reject,
# optional type and corrected diameter) and per nodule they added (no AI finding: centre,
# diameter, type, outside-lung flag); a change is a new row that supersedes the current one,
# exactly as ``reviews``. Their Lung-RADS category is a chain of ``lungrads_reads`` rows per
# (detection, reader).


class NoduleDetection(Base):
    """One run of the nodule detector on the series of an inference. Append-only.

    ``n_nodules`` is the number of findings (``nodules`` rows, ranks 1..n); 0 when the detector
    found no candidate above its operating point or refused the series. ``refusal`` is the
    detector's one-line reason (``core.nodules.NotAVolumeError``) or "" when it ran.
    ``operating_point`` is the p(nodule) threshold the findings were cut at (None: unknown).
    Unique per (inference, model id, model sha256): recording the same run again returns it.
    """

    __tablename__ = "nodule_detections"
    __table_args__ = (
        UniqueConstraint("inference_id", "model_id", "model_sha256", name="uq_nodule_detections_run"),
        CheckConstraint("n_nodules >= 0", name="n_nodules_nonnegative"),
        CheckConstraint("refusal = '' OR n_nodules = 0", name="refused_has_no_nodules"),
        CheckConstraint("operating_point IS NULL OR (operating_point >= 0 AND operating_point <= 1)",
                        name="operating_point_range"),
        CheckConstraint("latency_ms >= 0", name="latency_nonnegative"),
        Index("ix_nodule_detections_series_model", "series_id", "model_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    inference_id: Mapped[int] = mapped_column(ForeignKey("inferences.id"))
    model_id: Mapped[str] = mapped_column(String(128))
    model_sha256: Mapped[str] = mapped_column(String(64))
    operating_point: Mapped[float | None] = mapped_column(Float)
    n_nodules: Mapped[int] = mapped_column(Integer)
    refusal: Mapped[str] = mapped_column(Text, default="")
    latency_ms: Mapped[float] = mapped_column(Float)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    inference: Mapped[Inference] = relationship()
    nodules: Mapped[list[AiNodule]] = relationship(back_populates="detection", order_by="AiNodule.rank")


class AiNodule(Base):
    """One finding of the nodule detector (``core.nodules.Nodule``). Written once, never updated.

    ``detection_id`` is the run; ``inference_id``, ``series_id``, ``model_id`` and
    ``model_sha256`` repeat the run's (copied by ``db.repository.record_ai_nodules``) so the
    findings of a series, inference or model are one indexed query. Centre: ``voxel_z/y/x``
    index the series' HU volume (z in slice order, y row, x column); ``x_mm/y_mm/z_mm`` are DICOM
    patient coordinates (LPS, mm). ``slice_index`` = ``voxel_z``. ``malignancy``, ``lobulation``,
    ``spiculation`` are on the LIDC readers' 1-5 scales.
    """

    __tablename__ = "nodules"
    __table_args__ = (
        UniqueConstraint("detection_id", "rank", name="uq_nodules_detection_rank"),
        CheckConstraint("rank >= 1", name="rank_positive"),
        CheckConstraint("voxel_z >= 0 AND voxel_y >= 0 AND voxel_x >= 0", name="voxel_nonnegative"),
        CheckConstraint("slice_index = voxel_z", name="slice_is_centre"),
        CheckConstraint("diameter_mm > 0", name="diameter_positive"),
        CheckConstraint("p_nodule >= 0 AND p_nodule <= 1", name="p_nodule_range"),
        CheckConstraint("malignancy BETWEEN 1 AND 5", name="malignancy_range"),
        CheckConstraint("lobulation BETWEEN 1 AND 5", name="lobulation_range"),
        CheckConstraint("spiculation BETWEEN 1 AND 5", name="spiculation_range"),
        Index("ix_nodules_series_model", "series_id", "model_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    detection_id: Mapped[int] = mapped_column(ForeignKey("nodule_detections.id"))
    inference_id: Mapped[int] = mapped_column(ForeignKey("inferences.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    model_id: Mapped[str] = mapped_column(String(128))
    model_sha256: Mapped[str] = mapped_column(String(64))
    rank: Mapped[int] = mapped_column(Integer)
    voxel_z: Mapped[int] = mapped_column(Integer)
    voxel_y: Mapped[int] = mapped_column(Integer)
    voxel_x: Mapped[int] = mapped_column(Integer)
    x_mm: Mapped[float] = mapped_column(Float)
    y_mm: Mapped[float] = mapped_column(Float)
    z_mm: Mapped[float] = mapped_column(Float)
    diameter_mm: Mapped[float] = mapped_column(Float)
    p_nodule: Mapped[float] = mapped_column(Float)
    malignancy: Mapped[float] = mapped_column(Float)
    lobulation: Mapped[float] = mapped_column(Float)
    spiculation: Mapped[float] = mapped_column(Float)
    slice_index: Mapped[int] = mapped_column(Integer)
    is_mass: Mapped[bool] = mapped_column(Boolean)

    detection: Mapped[NoduleDetection] = relationship(back_populates="nodules")

    @property
    def centre_voxel(self) -> tuple[int, int, int]:
        """(z, y, x) voxel indices, as ``core.nodules.Nodule.centre_voxel``."""
        return (self.voxel_z, self.voxel_y, self.voxel_x)

    @property
    def centre_mm(self) -> tuple[float, float, float]:
        """(x, y, z) patient LPS mm, as ``core.nodules.Nodule.centre_mm``."""
        return (self.x_mm, self.y_mm, self.z_mm)


_ADDED_GEOMETRY = ("slice_index", "voxel_z", "voxel_y", "voxel_x", "x_mm", "y_mm", "z_mm", "outside_lung")


class NoduleRead(Base):
    """One row of a radiologist's per-nodule read. Append-only; a change supersedes.

    Two kinds of chain, each of one reader:

    * on an AI finding (``nodule_id`` set): ``decision`` "accept" (``nodule_type`` optional,
      ``diameter_mm`` the corrected diameter or NULL when the AI's stands) or "reject" (no type,
      no diameter);
    * on a nodule the reader added (``nodule_id`` NULL): ``decision`` "add" with ``diameter_mm``,
      optional ``nodule_type``, the centre (``slice_index`` = ``voxel_z``, ``voxel_z/y/x``,
      ``x_mm/y_mm/z_mm``) and ``outside_lung`` (the centre lies outside the lung-field mask:
      allowed, flagged).

    "withdraw" supersedes a row of either chain and takes it back (the AI finding is undecided
    again; the added nodule is gone). Every later row of a chain names the row it replaces in
    ``supersedes_id`` (unique); the CURRENT row of a chain is the one no row supersedes.
    ``seconds_to_decision`` counts from the opening of the case, as ``reviews`` do.
    """

    __tablename__ = "nodule_reads"
    __table_args__ = (
        CheckConstraint(_in("decision", NoduleDecision), name="decision"),
        CheckConstraint(f"nodule_type IS NULL OR {_in('nodule_type', NoduleType)}", name="nodule_type"),
        CheckConstraint("diameter_mm IS NULL OR diameter_mm > 0", name="diameter_positive"),
        CheckConstraint("seconds_to_decision >= 0", name="seconds_nonnegative"),
        CheckConstraint("decision NOT IN ('accept', 'reject') OR nodule_id IS NOT NULL", name="decision_has_finding"),
        CheckConstraint("decision <> 'add' OR (nodule_id IS NULL AND diameter_mm IS NOT NULL AND "
                        + " AND ".join(f"{c} IS NOT NULL" for c in _ADDED_GEOMETRY) + ")", name="added_has_centre"),
        CheckConstraint("decision = 'add' OR (" + " AND ".join(f"{c} IS NULL" for c in _ADDED_GEOMETRY) + ")",
                        name="centre_only_when_added"),
        CheckConstraint("decision NOT IN ('reject', 'withdraw') OR (nodule_type IS NULL AND diameter_mm IS NULL)",
                        name="no_measure_when_rejected"),
        CheckConstraint("decision <> 'withdraw' OR supersedes_id IS NOT NULL", name="withdraw_supersedes"),
        CheckConstraint("slice_index IS NULL OR slice_index = voxel_z", name="slice_is_centre"),
        CheckConstraint("voxel_z IS NULL OR (voxel_z >= 0 AND voxel_y >= 0 AND voxel_x >= 0)",
                        name="voxel_nonnegative"),
        Index("ix_nodule_reads_series_reader", "series_id", "reader_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    detection_id: Mapped[int] = mapped_column(ForeignKey("nodule_detections.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    nodule_id: Mapped[int | None] = mapped_column(ForeignKey("nodules.id"), index=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    nodule_type: Mapped[str | None] = mapped_column(String(16))
    diameter_mm: Mapped[float | None] = mapped_column(Float)
    slice_index: Mapped[int | None] = mapped_column(Integer)
    voxel_z: Mapped[int | None] = mapped_column(Integer)
    voxel_y: Mapped[int | None] = mapped_column(Integer)
    voxel_x: Mapped[int | None] = mapped_column(Integer)
    x_mm: Mapped[float | None] = mapped_column(Float)
    y_mm: Mapped[float | None] = mapped_column(Float)
    z_mm: Mapped[float | None] = mapped_column(Float)
    outside_lung: Mapped[bool | None] = mapped_column(Boolean)
    seconds_to_decision: Mapped[float] = mapped_column(Float)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("nodule_reads.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    nodule: Mapped[AiNodule | None] = relationship()
    reader: Mapped[User] = relationship(lazy="joined")

    @property
    def is_added(self) -> bool:
        """True for a row of a reader-added nodule's chain (no AI finding)."""
        return self.nodule_id is None

    @property
    def centre_voxel(self) -> tuple[int, int, int] | None:
        """(z, y, x) voxel indices of an added nodule, None on an AI finding's row."""
        return None if self.voxel_z is None else (self.voxel_z, self.voxel_y, self.voxel_x)

    @property
    def centre_mm(self) -> tuple[float, float, float] | None:
        """(x, y, z) patient LPS mm of an added nodule, None on an AI finding's row."""
        return None if self.x_mm is None else (self.x_mm, self.y_mm, self.z_mm)


class LungRadsRead(Base):
    """A radiologist's own Lung-RADS category for the nodules of one detection. Append-only.

    ``category`` is a ``core.config.LungRads`` value; ``suggested`` the category
    ``core.lungrads.suggest_lungrads`` showed them (None: none shown), so agreement with the
    suggestion can be measured. A change is a new row that supersedes (``supersedes_id``, unique);
    the CURRENT category of a (detection, reader) is the row no row supersedes.

    Why a table of its own: the category is one statement per series read, not per nodule, so on
    ``nodule_reads`` it would need a third kind of row with none of the nodule columns; and it is
    not part of the series read in ``reviews`` (the slice classifier's finding and agreement, on
    which Kappa is computed, kept as it is), but the conclusion drawn from one detection's
    nodules, which it references, and it changes on its own.
    """

    __tablename__ = "lungrads_reads"
    __table_args__ = (
        CheckConstraint(_in("category", LungRads), name="category"),
        CheckConstraint(f"suggested IS NULL OR {_in('suggested', LungRads)}", name="suggested"),
        CheckConstraint("seconds_to_decision >= 0", name="seconds_nonnegative"),
        Index("ix_lungrads_reads_series_reader", "series_id", "reader_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    detection_id: Mapped[int] = mapped_column(ForeignKey("nodule_detections.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    category: Mapped[str] = mapped_column(String(4))
    suggested: Mapped[str | None] = mapped_column(String(4))
    seconds_to_decision: Mapped[float] = mapped_column(Float)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("lungrads_reads.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    reader: Mapped[User] = relationship(lazy="joined")


#: The nodule tables, append-only (ORM events below; triggers in migration 0005).
NODULE_APPEND_ONLY_TABLES: tuple[str, ...] = ("nodule_detections", "nodules", "nodule_reads", "lungrads_reads")
APPEND_ONLY_TABLES = APPEND_ONLY_TABLES + NODULE_APPEND_ONLY_TABLES

for _cls in (NoduleDetection, AiNodule, NoduleRead, LungRadsRead):
    event.listen(_cls, "before_update", _refuse_change("UPDATE"))
    event.listen(_cls, "before_delete", _refuse_change("DELETE"))


# ---------------------------------------------------------------------------------------------
# Archive runs (services.archive): a PACS query scored by registered models on Ray, for local
# validation. Their own tables: an archive result is never an inference a reader was shown, and
# never mixes with the reading tables. Only pseudonymous keys, as everywhere: the query is
# run again on resume, so no UID of the PACS is kept.


class ArchiveRunStatus(StrEnum):
    """Where an :class:`ArchiveRun` stands.

    ``running``: a driver is (or was last seen) scoring it; ``paused``: it stopped with work left
    (PACS down, stopped by a person; ``message`` says why) and ``resume`` continues it;
    ``finished``: every planned series has a final result for every model.
    """

    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


class ArchiveResultStatus(StrEnum):
    """An :class:`ArchiveResult`: the model scored the series (``done``) or it failed (``failed``)."""

    DONE = "done"
    FAILED = "failed"


class ArchiveFailure(StrEnum):
    """Why a series was not scored by a model (``archive_results.failure``).

    Permanent (the series itself; not tried again): ``not_ct`` (Modality other than CT),
    ``corrupt`` (no instance could be read as a CT image), ``too_large`` (over the upload
    limit), ``not_found`` (deleted from the PACS since the query), ``not_a_volume`` (the nodule
    detector cannot scan it). Transient (the surroundings; tried again up to
    ``LUNGREVIEW_ARCHIVE_MAX_ATTEMPTS`` times, also on resume): ``pacs_unreachable`` (no answer
    after the client's retries), ``pacs_error`` (another refusal by the PACS), ``pacs_auth``
    (credentials refused on the worker), ``worker_died`` (the worker process ended mid-series),
    ``worker_error`` (an unexpected error in the worker), ``model_error`` (the model could not be
    loaded or applied), ``detector_unavailable`` (the nodule detector is not installed on the
    worker), ``key_mismatch`` (the worker's study-key secret differs from the driver's).
    """

    NOT_CT = "not_ct"
    CORRUPT = "corrupt"
    TOO_LARGE = "too_large"
    NOT_FOUND = "not_found"
    NOT_A_VOLUME = "not_a_volume"
    PACS_UNREACHABLE = "pacs_unreachable"
    PACS_ERROR = "pacs_error"
    PACS_AUTH = "pacs_auth"
    WORKER_DIED = "worker_died"
    WORKER_ERROR = "worker_error"
    MODEL_ERROR = "model_error"
    DETECTOR_UNAVAILABLE = "detector_unavailable"
    KEY_MISMATCH = "key_mismatch"


#: Failures that depend on the series alone: recorded once, never tried again.
PERMANENT_ARCHIVE_FAILURES: frozenset[str] = frozenset({
    ArchiveFailure.NOT_CT, ArchiveFailure.CORRUPT, ArchiveFailure.TOO_LARGE, ArchiveFailure.NOT_FOUND,
    ArchiveFailure.NOT_A_VOLUME,
})


class ArchiveRun(Base):
    """One scoring of a PACS query by a set of models (``services.archive``).

    ``query``: the search as given (dates as ISO text, description filter, series limit); no
    identifier. ``models``: JSON list of ``{"id", "sha256", "kind"}``, the registry entries the
    run scores with (a resume refuses a model whose file changed). ``n_series``: series the
    query found at the last planning. ``heartbeat_at``: the driver's last sign of life (a
    "running" run whose heartbeat is old was left by a driver that died; resume continues it).
    """

    __tablename__ = "archive_runs"
    __table_args__ = (
        CheckConstraint(_in("status", ArchiveRunStatus), name="status"),
        CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
        CheckConstraint("n_series >= 0", name="n_series_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    query: Mapped[dict[str, Any]] = mapped_column(JSON)
    models: Mapped[list[Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    max_attempts: Mapped[int] = mapped_column(Integer)
    n_series: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column()


class ArchiveResult(Base):
    """One model on one series of an archive run: its result, or why it failed. One row per
    (run, series, model) (unique), updated when a failed attempt is tried again; a ``done`` row is
    never changed.

    ``result`` (done rows): slice classifiers ``{"kind": "slice_classifier", "series_score",
    "finding", "is_ood", "most_suspicious_index", "top_indices", "probabilities" (the mean class
    probabilities of the top-k slices, the row the finding was decided on), "class_names",
    "thresholds", "n_slices", "runtime"}``; the nodule detector ``{"kind": "nodule_detector",
    "nodules": [Nodule.to_dict(), ...], "n_slices"}``. Typed copies for queries: ``finding``,
    ``series_score``, ``is_ood``, ``n_nodules``. ``history``: earlier failed attempts, ``[{"failure",
    "message", "counted"}]``. Times in ms: ``retrieve_ms`` (WADO-RS until the last instance
    arrived), ``decode_ms`` (``core.imaging`` reading those instances), ``score_ms`` (this model).
    ``description`` is the de-identified series description (``core.imaging``), never PHI.
    """

    __tablename__ = "archive_results"
    __table_args__ = (
        UniqueConstraint("run_id", "series_key", "model_id", name="uq_archive_results_item"),
        CheckConstraint(_in("status", ArchiveResultStatus), name="status"),
        CheckConstraint(f"failure IS NULL OR {_in('failure', ArchiveFailure)}", name="failure"),
        CheckConstraint("(status = 'done') = (failure IS NULL)", name="failed_has_reason"),
        CheckConstraint(f"finding IS NULL OR {_in('finding', Finding)}", name="finding"),
        CheckConstraint("series_score IS NULL OR (series_score >= 0 AND series_score <= 1)", name="score_range"),
        CheckConstraint("attempts >= 1", name="attempts_positive"),
        CheckConstraint("n_nodules IS NULL OR n_nodules >= 0", name="n_nodules_nonnegative"),
        Index("ix_archive_results_run_model", "run_id", "model_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("archive_runs.id"))
    study_key: Mapped[str] = mapped_column(String(128))
    series_key: Mapped[str] = mapped_column(String(128))
    model_id: Mapped[str] = mapped_column(String(128))
    model_sha256: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16))
    failure: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    finding: Mapped[str | None] = mapped_column(String(16))
    series_score: Mapped[float | None] = mapped_column(Float)
    is_ood: Mapped[bool | None] = mapped_column(Boolean)
    n_nodules: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(256), default="")
    n_slices: Mapped[int | None] = mapped_column(Integer)
    retrieve_ms: Mapped[float | None] = mapped_column(Float)
    decode_ms: Mapped[float | None] = mapped_column(Float)
    score_ms: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


# Lesion marks of the reader study (services.reader_study.marks, .reference; issue 27):
# reference lesions per case of a reading list, and the readers' lesion marks per step.
#
# Both tables are append-only chains, as ``reader_reads``: a change is a new row whose
# ``supersedes_id`` names the row it replaces (unique, so a chain never forks); a deletion is a
# new row with ``deleted`` true that supersedes the row it takes back (it repeats that row's
# values, so every row is complete). The CURRENT rows are those no row supersedes and that are
# not deletions. Coordinates: ``slice_index`` 0-based in the series' slice order (the order of
# ``core.imaging.Series.slices``, as ``nodules.slice_index``), ``x`` the pixel column and ``y``
# the pixel row of the centre (0-based, fractional allowed).


class LesionSource(StrEnum):
    """Where a reference lesion comes from: the Reading lists form, a CSV import, or an LIDC XML
    (nodules of 3 mm or more marked by at least 3 of the 4 LIDC readers, the LUNA16 rule)."""

    FORM = "form"
    CSV = "csv"
    LIDC_XML = "lidc-xml"


class ReferenceLesion(Base):
    """A reference lesion of one case of a reading list: centre (slice, x, y) and diameter in mm.

    ``note`` says where it came from in words (e.g. the LIDC readers who marked it), never PHI.
    Append-only; a correction is a deletion (``deleted``) followed by a new lesion.
    """

    __tablename__ = "reference_lesions"
    __table_args__ = (
        CheckConstraint(_in("source", LesionSource), name="source"),
        CheckConstraint("slice_index >= 0", name="slice_nonnegative"),
        CheckConstraint("x >= 0 AND y >= 0", name="centre_nonnegative"),
        CheckConstraint("diameter_mm > 0", name="diameter_positive"),
        CheckConstraint("NOT deleted OR supersedes_id IS NOT NULL", name="deletion_supersedes"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("reading_list_cases.id"), index=True)
    slice_index: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    diameter_mm: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    entered_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    entered_at: Mapped[datetime] = mapped_column(default=utc_now)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("reference_lesions.id"), unique=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class LesionMark(Base):
    """A reader's lesion mark on a case in one step (unaided / aided): centre and a 1-5 rating.

    ``rating``: 1 = probably not a nodule ... 5 = certainly a nodule needing work-up.
    ``nodule_id``: the AI finding (``nodules`` row) the reader took as this mark, NULL for a mark
    placed by the reader (aided step only). ``copied_from_id``: the unaided mark this aided mark
    was copied from when the AI was shown (the aided step starts from a copy of the unaided
    marks), NULL otherwise (aided step only). A changed rating or a deletion supersedes the row
    (``supersedes_id``; ``deleted``); the chain keeps ``nodule_id`` and ``copied_from_id``.
    """

    __tablename__ = "lesion_marks"
    __table_args__ = (
        CheckConstraint(_in("step", ReadPhase), name="step"),
        CheckConstraint("slice_index >= 0", name="slice_nonnegative"),
        CheckConstraint("x >= 0 AND y >= 0", name="centre_nonnegative"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),
        CheckConstraint("nodule_id IS NULL OR step = 'aided'", name="ai_finding_only_aided"),
        CheckConstraint("copied_from_id IS NULL OR step = 'aided'", name="copy_only_aided"),
        CheckConstraint("NOT deleted OR supersedes_id IS NOT NULL", name="deletion_supersedes"),
        Index("ix_lesion_marks_case_reader", "case_id", "reader_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("reading_list_cases.id"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    step: Mapped[str] = mapped_column(String(16))
    slice_index: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    rating: Mapped[int] = mapped_column(Integer)
    nodule_id: Mapped[int | None] = mapped_column(ForeignKey("nodules.id"))
    copied_from_id: Mapped[int | None] = mapped_column(ForeignKey("lesion_marks.id"))
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("lesion_marks.id"), unique=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


#: The lesion tables, append-only (ORM events below; triggers in migration 0007).
LESION_APPEND_ONLY_TABLES: tuple[str, ...] = ("reference_lesions", "lesion_marks")
APPEND_ONLY_TABLES = APPEND_ONLY_TABLES + LESION_APPEND_ONLY_TABLES

for _cls in (ReferenceLesion, LesionMark):
    event.listen(_cls, "before_update", _refuse_change("UPDATE"))
    event.listen(_cls, "before_delete", _refuse_change("DELETE"))
