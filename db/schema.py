"""The LungReview database schema: SQLAlchemy 2 ORM classes with typed ``Mapped[...]`` columns.

Tables (one class each): ``users`` (:class:`User`), ``studies`` (:class:`Study`), ``series``
(:class:`Series`), ``inferences`` (:class:`Inference`), ``reviews`` (:class:`Review`),
``feedback`` (:class:`Feedback`) and ``audit_events`` (:class:`AuditEvent`). A study has one or
more series; an inference is one model run on one series; a review is one reader's read of what
one inference showed.

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

from core.config import Agreement, Finding, Role


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
