"""Reading and writing LungReview rows. Every function takes a ``Session`` and never commits.

The caller owns the transaction (SQLAlchemy 2 "sessions outside the functions")::

    with factory.begin() as s:
        study = add_study(s, study_key=..., ..., uploaded_by=user)
        inf = add_inference(s, study_id=study.id, ...)

Validation happens BEFORE anything is written: a bad value raises :class:`ValidationError`, a
missing row :class:`NotFoundError`, a role that may not do this :class:`PermissionDenied`; the
message says what is wrong and what to do, and the session holds no new rows from the call.

Audit: the writing functions record their own :class:`~db.schema.AuditEvent` (upload, inference,
review, feedback, admin change; :func:`authenticate` records sign-in and failed sign-in), so
callers must NOT log those again. Use :func:`log_event` for everything else (sign-out, export).

Role rules (also enforced here, not only in the dashboard): only radiologists and admins add
reviews; only admins create (after the first user), activate/deactivate or re-role users; leads,
coordinators and admins read feedback results (``db.analytics``). Users are passed as a
:class:`~db.schema.User` or its integer id.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import bcrypt
import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from core.config import Agreement, Finding, Role
from core.sus import SusError, sus_score, validate_answers
from db.schema import AuditAction, AuditEvent, Feedback, Inference, Review, SourceKind, Study, User


class RepositoryError(Exception):
    """Base of the errors raised by ``db.repository`` and ``db.analytics``."""


class ValidationError(RepositoryError):
    """A value is missing, of the wrong kind or out of range; nothing was written."""


class NotFoundError(RepositoryError):
    """A referenced row (user, study, inference) does not exist."""


class PermissionDenied(RepositoryError):
    """The acting user's role (or an inactive account) does not allow this action."""


#: Roles that may add reviews.
REVIEWER_ROLES = frozenset({Role.RADIOLOGIST, Role.ADMIN})
#: Roles that may read feedback (SUS) results and free text.
FEEDBACK_READER_ROLES = frozenset({Role.LEAD, Role.COORDINATOR, Role.ADMIN})

_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_BCRYPT_ROUNDS = 12


@lru_cache(maxsize=1)
def _dummy_hash() -> bytes:
    """A valid bcrypt hash used to spend the same time on unknown user names (no timing oracle)."""
    return bcrypt.hashpw(b"lungreview-dummy-password", bcrypt.gensalt(rounds=_BCRYPT_ROUNDS))


# ---------------------------------------------------------------------------------------------
# helpers


def _choice(value: Any, choices: type, what: str) -> str:
    try:
        return choices(str(value).strip().lower()).value
    except ValueError:
        allowed = ", ".join(c.value for c in choices)
        raise ValidationError(f"Unknown {what} {value!r}: choose one of {allowed}.") from None


def _whole(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or value is None:
        raise ValidationError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}.")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}.") from None
    if not as_float.is_integer() or not lo <= as_float <= hi:
        raise ValidationError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}.")
    return int(as_float)


def _real(value: Any, what: str, lo: float | None = None, hi: float | None = None) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} must be a number, got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(x):
        raise ValidationError(f"{what} must be a finite number, got {value!r}.")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        rng = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise ValidationError(f"{what} must be {rng}, got {x}.")
    return x


def _hexdigest(value: Any, what: str, lengths: Iterable[int]) -> str:
    text = str(value or "").strip().lower()
    lengths = tuple(lengths)
    if len(text) not in lengths or not _HEX.match(text):
        raise ValidationError(
            f"{what} must be a lower-case hex digest of {' or '.join(map(str, lengths))} characters, "
            f"got {value!r}. Pass the value computed by core.imaging / the model registry."
        )
    return text


def _user(s: Session, user: User | int, what: str = "user") -> User:
    if isinstance(user, User):
        return user
    if isinstance(user, bool) or not isinstance(user, int | np.integer):
        raise ValidationError(f"{what} must be a user or a user id, got {user!r}.")
    found = s.get(User, int(user))
    if found is None:
        raise NotFoundError(f"There is no user with id {user}; sign in again or ask an admin.")
    return found


def _require_role(user: User, roles: Iterable[Role], action: str) -> None:
    if not user.active:
        raise PermissionDenied(f"The account {user.username!r} is deactivated and may not {action}.")
    if user.role not in {r.value for r in roles}:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise PermissionDenied(f"{user.username!r} has the role {user.role!r}; only {allowed} may {action}.")


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars/arrays become plain Python (and fail early)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    try:
        return json.loads(json.dumps(value, default=default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"Value cannot be stored as JSON ({exc}); pass plain numbers and strings.") from exc


# ---------------------------------------------------------------------------------------------
# audit


def log_event(s: Session, *, user_id: int | None, action: AuditAction | str, object_type: str = "",
              object_id: str | int | None = "", detail: str = "") -> AuditEvent:
    """Append one audit event (who, action, object type + id, when, detail).

    Args:
        user_id: acting user's id, or None (e.g. failed sign-in with an unknown name).
        action: an :class:`~db.schema.AuditAction` value, e.g. "sign-out", "export".
        object_type, object_id: what was acted on (e.g. "study", 12); strings up to 32/64 chars.
        detail: free text without patient identifiers.

    Returns:
        The new AuditEvent (flushed, so it has an id).

    Raises:
        ValidationError: unknown action or over-long object type/id.
    """
    action = _choice(action, AuditAction, "audit action")
    object_type = str(object_type or "")
    object_id = "" if object_id is None else str(object_id)
    if len(object_type) > 32 or len(object_id) > 64:
        raise ValidationError("Audit object type (max 32) or object id (max 64 characters) is too long.")
    row = AuditEvent(user_id=user_id, action=action, object_type=object_type, object_id=object_id,
                     detail=str(detail or ""))
    s.add(row)
    s.flush()
    return row


# ---------------------------------------------------------------------------------------------
# users


def has_users(s: Session) -> bool:
    """True when at least one user exists (False: the app shows the first-admin form)."""
    return s.scalar(select(User.id).limit(1)) is not None


def _hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < 8:
        raise ValidationError("The password must have at least 8 characters.")
    raw = password.encode("utf-8")
    if len(raw) > 72:
        raise ValidationError("The password is too long: bcrypt uses at most 72 bytes; choose a shorter one.")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=_BCRYPT_ROUNDS)).decode("ascii")


def create_user(s: Session, username: str, display_name: str, role: Role | str, password: str, *,
                actor: User | int | None = None) -> User:
    """Create a user with a bcrypt-hashed password.

    The first user is created without ``actor`` and must be an admin; afterwards only an active
    admin ``actor`` may create users.

    Args:
        username: 3-64 characters of letters, digits, ``_ . @ -``; unique (case-insensitive).
        display_name: 1-128 characters.
        role: a :class:`~core.config.Role` value.
        password: 8 or more characters, at most 72 bytes in UTF-8 (bcrypt's limit).
        actor: the admin creating the user (required once any user exists).

    Returns:
        The new User (flushed).

    Raises:
        ValidationError: bad username/display name/role/password, the username is taken, or the
            first user is not an admin.
        PermissionDenied: users exist and ``actor`` is missing or not an active admin.
    """
    role = _choice(role, Role, "role")
    username = str(username or "").strip()
    display_name = str(display_name or "").strip()
    if not _USERNAME.match(username):
        raise ValidationError(
            "The username must be 3-64 characters: letters, digits, '_', '.', '@' or '-'."
        )
    if not 1 <= len(display_name) <= 128:
        raise ValidationError("The display name must have 1-128 characters.")
    if has_users(s):
        if actor is None:
            raise PermissionDenied("Only an admin may create users; pass the signed-in admin as actor.")
        admin = _user(s, actor, "actor")
        _require_role(admin, {Role.ADMIN}, "create users")
        actor_id: int | None = admin.id
    else:
        if role != Role.ADMIN.value:
            raise ValidationError("The first user must be an admin (role 'admin'), who then adds the others.")
        actor_id = None
    if s.scalar(select(User.id).where(func.lower(User.username) == username.lower())) is not None:
        raise ValidationError(f"The username {username!r} is already taken; choose another.")
    user = User(username=username, display_name=display_name, role=role,
                password_hash=_hash_password(password), active=True)
    s.add(user)
    s.flush()
    log_event(s, user_id=actor_id if actor_id is not None else user.id, action=AuditAction.ADMIN_CHANGE,
              object_type="user", object_id=user.id, detail=f"created user {username!r} with role {role}")
    return user


def authenticate(s: Session, username: str, password: str) -> User | None:
    """Check a username and password; record a sign-in or failed sign-in audit event.

    Returns:
        The active User whose bcrypt hash matches, else None (unknown name, wrong password or
        deactivated account: the caller shows one message for all three). Unknown names cost
        the same bcrypt time as known ones.
    """
    username = str(username or "").strip()
    user = s.scalar(select(User).where(func.lower(User.username) == username.lower())) if username else None
    raw = str(password or "").encode("utf-8")[:72]
    ok = bcrypt.checkpw(raw, user.password_hash.encode("ascii") if user else _dummy_hash())
    if user is not None and ok and user.active:
        log_event(s, user_id=user.id, action=AuditAction.SIGN_IN, object_type="user", object_id=user.id)
        return user
    log_event(s, user_id=user.id if user else None, action=AuditAction.SIGN_IN_FAILED,
              object_type="user", object_id=user.id if user else "",
              detail="deactivated account" if (user is not None and ok) else "wrong user name or password")
    return None


def list_users(s: Session) -> list[User]:
    """All users, ordered by username."""
    return list(s.scalars(select(User).order_by(User.username)))


def _active_admins(s: Session) -> int:
    return s.scalar(select(func.count(User.id)).where(User.role == Role.ADMIN.value, User.active.is_(True))) or 0


def set_user_active(s: Session, actor: User | int, user_id: int, active: bool) -> User:
    """Activate or deactivate a user (admins only; the last active admin cannot be deactivated).

    Raises:
        PermissionDenied: ``actor`` is not an active admin.
        NotFoundError: no user ``user_id``.
        ValidationError: this would leave no active admin.
    """
    admin = _user(s, actor, "actor")
    _require_role(admin, {Role.ADMIN}, "change users")
    user = _user(s, user_id)
    active = bool(active)
    if not active and user.role == Role.ADMIN.value and user.active and _active_admins(s) <= 1:
        raise ValidationError("This is the last active admin; make another user admin first.")
    if user.active != active:
        user.active = active
        s.flush()
        log_event(s, user_id=admin.id, action=AuditAction.ADMIN_CHANGE, object_type="user",
                  object_id=user.id, detail=f"{'activated' if active else 'deactivated'} {user.username!r}")
    return user


def set_user_role(s: Session, actor: User | int, user_id: int, role: Role | str) -> User:
    """Change a user's role (admins only; the last active admin keeps the admin role).

    Raises:
        PermissionDenied: ``actor`` is not an active admin.
        NotFoundError: no user ``user_id``.
        ValidationError: unknown role, or this would leave no active admin.
    """
    admin = _user(s, actor, "actor")
    _require_role(admin, {Role.ADMIN}, "change users")
    role = _choice(role, Role, "role")
    user = _user(s, user_id)
    if user.role == Role.ADMIN.value and role != Role.ADMIN.value and user.active and _active_admins(s) <= 1:
        raise ValidationError("This is the last active admin; make another user admin first.")
    if user.role != role:
        old = user.role
        user.role = role
        s.flush()
        log_event(s, user_id=admin.id, action=AuditAction.ADMIN_CHANGE, object_type="user",
                  object_id=user.id, detail=f"role of {user.username!r}: {old} -> {role}")
    return user


# ---------------------------------------------------------------------------------------------
# studies and inferences


def find_study_by_hash(s: Session, content_hash: str) -> Study | None:
    """The study uploaded with these bytes before (``core.imaging.Study.content_hash``), or None."""
    return s.scalar(select(Study).where(Study.content_hash == str(content_hash).strip().lower()))


def get_study(s: Session, study_id: int) -> Study:
    """The study with this id. Raises NotFoundError."""
    study = s.get(Study, int(study_id))
    if study is None:
        raise NotFoundError(f"There is no study with id {study_id}; upload it first.")
    return study


def add_study(s: Session, *, study_key: str, modality: str, n_series: int, n_slices: int, source_kind: str,
              content_hash: str, uploaded_by: User | int) -> Study:
    """Record an uploaded study by its pseudonymous key (never names, patient IDs or raw UIDs).

    Args:
        study_key: ``core.imaging.Study.study_key`` (hex HMAC-SHA256, 16-128 hex characters);
            anything else (e.g. a raw StudyInstanceUID "1.2.840...") is refused.
        modality: DICOM Modality (e.g. "CT"; "OT" for pictures), 1-16 characters.
        n_series, n_slices: counts, at least 1.
        source_kind: "dicom", "jpg" or "png".
        content_hash: sha256 hex (64 characters) of the uploaded bytes; unique.
        uploaded_by: the uploading user (active, any role).

    Returns:
        The new Study (flushed). An "upload" audit event is recorded.

    Raises:
        ValidationError: a value is malformed, or a study with this content hash exists already
            (use :func:`find_study_by_hash` first to reuse it).
        NotFoundError / PermissionDenied: unknown or deactivated uploader.
    """
    key = str(study_key or "").strip().lower()
    if not (16 <= len(key) <= 128 and _HEX.match(key)):
        raise ValidationError(
            "The study key must be the pseudonymous hex key from core.imaging (16-128 hex characters); "
            "raw UIDs and patient identifiers are never stored."
        )
    modality = str(modality or "").strip().upper()
    if not 1 <= len(modality) <= 16:
        raise ValidationError(f"Modality must have 1-16 characters, got {modality!r}.")
    n_series = _whole(n_series, "Number of series", 1, 1_000_000)
    n_slices = _whole(n_slices, "Number of slices", 1, 100_000_000)
    source_kind = _choice(source_kind, SourceKind, "source kind")
    content_hash = _hexdigest(content_hash, "Content hash", (64,))
    user = _user(s, uploaded_by, "uploaded_by")
    _require_role(user, set(Role), "upload studies")
    existing = find_study_by_hash(s, content_hash)
    if existing is not None:
        raise ValidationError(
            f"These files were uploaded before (study {existing.id}); open that study instead."
        )
    study = Study(study_key=key, modality=modality, n_series=n_series, n_slices=n_slices,
                  source_kind=source_kind, content_hash=content_hash, uploaded_by=user.id)
    s.add(study)
    s.flush()
    log_event(s, user_id=user.id, action=AuditAction.UPLOAD, object_type="study", object_id=study.id,
              detail=f"{source_kind}, {n_series} series, {n_slices} slices")
    return study


def add_inference(s: Session, *, study_id: int, model_id: str, model_sha256: str,
                  slice_probabilities: Sequence[Sequence[float]] | np.ndarray, series_result: dict,
                  threshold: float, ood: bool | Sequence[bool] | np.ndarray, latency_ms: float,
                  user: User | int | None = None) -> Inference:
    """Record one model run on a study.

    Args:
        study_id: an existing study.
        model_id: registry model id (1-128 characters).
        model_sha256: sha256 hex of the model file (64 characters).
        slice_probabilities: float (n, k), each value in [0, 1], n >= 1, k >= 2.
        series_result: ``SeriesResult.to_dict()``; must hold ``series_label`` (a Finding value)
            and ``series_score`` in [0, 1]; stored as JSON.
        threshold: the decision threshold used, in [0, 1].
        ood: out-of-distribution flag; an array of per-slice flags counts as True if any is.
        latency_ms: wall time of the analysis, >= 0.
        user: who ran it (optional; recorded in the audit event).

    Returns:
        The new Inference (flushed). An "inference" audit event is recorded.

    Raises:
        NotFoundError: no such study. ValidationError: any value malformed or out of range.
    """
    study = get_study(s, study_id)
    model_id = str(model_id or "").strip()
    if not 1 <= len(model_id) <= 128:
        raise ValidationError("The model id must have 1-128 characters (see the model registry).")
    sha = _hexdigest(model_sha256, "Model sha256", (64,))
    try:
        probs = np.asarray(slice_probabilities, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError("Slice probabilities must be a table of numbers (slices x classes).") from None
    if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 2:
        raise ValidationError(f"Slice probabilities must have shape (slices, classes), got {probs.shape}.")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValidationError("Slice probabilities must be finite numbers from 0 to 1.")
    if not isinstance(series_result, dict):
        raise ValidationError("The series result must be a dict (SeriesResult.to_dict()).")
    result = _jsonable(series_result)
    label = _choice(result.get("series_label"), Finding, "series label")
    score = _real(result.get("series_score"), "Series score", 0.0, 1.0)
    threshold = _real(threshold, "Decision threshold", 0.0, 1.0)
    latency = _real(latency_ms, "Latency (ms)", 0.0)
    ood_flag = bool(np.any(np.asarray(ood, dtype=bool)))
    actor = _user(s, user, "user") if user is not None else None
    row = Inference(study_id=study.id, model_id=model_id, model_sha256=sha, slice_probabilities=probs.tolist(),
                    series_result=result, ai_label=label, series_score=score, threshold=threshold,
                    ood=ood_flag, latency_ms=latency, created_by=actor.id if actor else None)
    s.add(row)
    s.flush()
    log_event(s, user_id=actor.id if actor else None, action=AuditAction.INFERENCE, object_type="inference",
              object_id=row.id, detail=f"study {study.id}, model {model_id}, label {label}")
    return row


def latest_inference(s: Session, study_id: int, model_id: str | None = None) -> Inference | None:
    """The newest inference on a study (of ``model_id``, or of any model when None), or None."""
    q = select(Inference).where(Inference.study_id == int(study_id))
    if model_id is not None:
        q = q.where(Inference.model_id == model_id)
    return s.scalar(q.order_by(Inference.id.desc()).limit(1))


# ---------------------------------------------------------------------------------------------
# reviews


def _current_filter():
    """SQL condition: the review is not superseded by another row."""
    newer = aliased(Review)
    return ~select(newer.id).where(newer.supersedes_id == Review.id).exists()


def current_review(s: Session, study_id: int, reader_id: int) -> Review | None:
    """The reader's current (non-superseded) review of the study, or None."""
    return s.scalar(
        select(Review)
        .where(Review.study_id == int(study_id), Review.reader_id == int(reader_id), _current_filter())
        .order_by(Review.id.desc())
        .limit(1)
    )


def add_review(s: Session, *, study_id: int, inference_id: int, reader: User | int, finding: Finding | str,
               agreement: Agreement | str, confidence: int, heatmap_helpful: int | None = None,
               comment: str = "", seconds_to_decision: float) -> Review:
    """Record a radiologist's read of a study next to the AI result they were shown.

    If the reader already reviewed this study, the new row supersedes their current review
    (``supersedes_id``); the earlier row stays, unchanged, and no longer counts in analytics.

    Args:
        study_id: an existing study. inference_id: the inference shown (of this study).
        reader: an active radiologist or admin.
        finding: "normal", "benign" or "malignant". agreement: "agree", "disagree" or "partly".
        confidence: whole number 1-5. heatmap_helpful: whole number 1-5 or None (not shown/rated).
        comment: free text, at most 5000 characters; no patient identifiers.
        seconds_to_decision: seconds from opening the case to the decision, >= 0.

    Returns:
        The new Review (flushed). A "review" audit event is recorded.

    Raises:
        ValidationError: a value is unknown or out of range, or the inference belongs to another
            study. NotFoundError: no such study, inference or user. PermissionDenied: the reader
            is not an active radiologist or admin.
    """
    finding = _choice(finding, Finding, "finding")
    agreement = _choice(agreement, Agreement, "agreement")
    confidence = _whole(confidence, "Confidence", 1, 5)
    helpful = None if heatmap_helpful is None else _whole(heatmap_helpful, "Heatmap helpfulness", 1, 5)
    seconds = _real(seconds_to_decision, "Seconds to decision", 0.0)
    comment = str(comment or "")
    if len(comment) > 5000:
        raise ValidationError("The comment is too long (at most 5000 characters).")
    user = _user(s, reader, "reader")
    _require_role(user, REVIEWER_ROLES, "add reviews")
    study = get_study(s, study_id)
    inference = s.get(Inference, int(inference_id))
    if inference is None:
        raise NotFoundError(f"There is no inference with id {inference_id}; run the model first.")
    if inference.study_id != study.id:
        raise ValidationError(f"Inference {inference.id} belongs to study {inference.study_id}, not {study.id}.")
    previous = current_review(s, study.id, user.id)
    row = Review(study_id=study.id, inference_id=inference.id, reader_id=user.id, finding=finding,
                 agreement=agreement, confidence=confidence, heatmap_helpful=helpful, comment=comment,
                 seconds_to_decision=seconds, supersedes_id=previous.id if previous else None)
    s.add(row)
    s.flush()
    log_event(s, user_id=user.id, action=AuditAction.REVIEW, object_type="review", object_id=row.id,
              detail=f"study {study.id}, finding {finding}, {agreement}"
              + (f", supersedes review {previous.id}" if previous else ""))
    return row


def current_reviews(s: Session, *, study_id: int | None = None, reader_id: int | None = None,
                    model_id: str | None = None) -> list[Review]:
    """Current (non-superseded) reviews, oldest first, optionally for one study/reader/model.

    ``model_id`` filters on the model of the inference the reader was shown.
    """
    q = select(Review).where(_current_filter())
    if study_id is not None:
        q = q.where(Review.study_id == int(study_id))
    if reader_id is not None:
        q = q.where(Review.reader_id == int(reader_id))
    if model_id is not None:
        q = q.join(Inference, Inference.id == Review.inference_id).where(Inference.model_id == model_id)
    return list(s.scalars(q.order_by(Review.id)))


def review_history(s: Session, study_id: int, reader_id: int | None = None) -> list[Review]:
    """Every review of a study (superseded ones included), oldest first."""
    q = select(Review).where(Review.study_id == int(study_id))
    if reader_id is not None:
        q = q.where(Review.reader_id == int(reader_id))
    return list(s.scalars(q.order_by(Review.id)))


WORKLIST_COLUMNS: tuple[str, ...] = (
    "study_id", "study_key", "uploaded_at", "source_kind", "n_slices", "model_id", "inference_id",
    "ai_label", "series_score", "ood", "reader_id", "reader", "finding", "agreement", "confidence",
    "review_id", "reviewed_at",
)


def worklist(s: Session, *, reader_id: int | None = None, model_id: str | None = None,
             finding: Finding | str | None = None, agreement: Agreement | str | None = None,
             key_chars: int = 12) -> pd.DataFrame:
    """The worklist: one row per study and model (its newest inference) and current review.

    Studies without an inference appear once with empty AI columns; studies without a (matching)
    review appear with empty review columns. With ``reader_id`` only that reader's reviews are
    joined, so their unread studies show with an empty finding. ``finding``/``agreement``
    keep only reviewed rows with that value.

    Returns:
        DataFrame with columns :data:`WORKLIST_COLUMNS`, newest upload first. ``study_key`` is
        the first ``key_chars`` characters of the pseudonymous key; times are UTC.

    Raises:
        ValidationError: unknown finding or agreement.
    """
    finding = None if finding in (None, "") else _choice(finding, Finding, "finding")
    agreement = None if agreement in (None, "") else _choice(agreement, Agreement, "agreement")
    newest = (
        select(Inference.study_id, Inference.model_id, func.max(Inference.id).label("inference_id"))
        .group_by(Inference.study_id, Inference.model_id)
    )
    if model_id is not None:
        newest = newest.where(Inference.model_id == model_id)
    newest = newest.subquery()
    q = (
        select(Study.id.label("study_id"), Study.study_key, Study.uploaded_at, Study.source_kind, Study.n_slices,
               newest.c.model_id, newest.c.inference_id, Inference.ai_label, Inference.series_score, Inference.ood)
        .outerjoin(newest, newest.c.study_id == Study.id)
        .outerjoin(Inference, Inference.id == newest.c.inference_id)
    )
    if model_id is not None:
        q = q.where(newest.c.inference_id.is_not(None))
    studies = pd.DataFrame(s.execute(q).mappings().all(),
                           columns=["study_id", "study_key", "uploaded_at", "source_kind", "n_slices", "model_id",
                                    "inference_id", "ai_label", "series_score", "ood"])
    rq = (
        select(Review.study_id, Review.reader_id, User.display_name.label("reader"), Review.finding,
               Review.agreement, Review.confidence, Review.id.label("review_id"),
               Review.created_at.label("reviewed_at"), Inference.model_id.label("review_model_id"))
        .join(User, User.id == Review.reader_id)
        .join(Inference, Inference.id == Review.inference_id)
        .where(_current_filter())
    )
    if reader_id is not None:
        rq = rq.where(Review.reader_id == int(reader_id))
    reviews = pd.DataFrame(s.execute(rq).mappings().all(),
                           columns=["study_id", "reader_id", "reader", "finding", "agreement", "confidence",
                                    "review_id", "reviewed_at", "review_model_id"])
    if model_id is not None:
        reviews = reviews[reviews["review_model_id"] == model_id]
    reviews = reviews.drop(columns=["review_model_id"])
    out = studies.merge(reviews, on="study_id", how="left")
    if finding is not None:
        out = out[out["finding"] == finding]
    if agreement is not None:
        out = out[out["agreement"] == agreement]
    out["study_key"] = out["study_key"].str[:key_chars]
    out = out.sort_values(["uploaded_at", "study_id", "model_id", "reader_id"],
                          ascending=[False, False, True, True], na_position="last")
    return out.reset_index(drop=True)[list(WORKLIST_COLUMNS)]


# ---------------------------------------------------------------------------------------------
# feedback


def add_feedback(s: Session, *, user: User | int, answers: Sequence[int], helped: str = "", hindered: str = "",
                 app_version: str) -> Feedback:
    """Record one SUS questionnaire (Brooke 1996) with the two free-text answers.

    Args:
        user: the active user answering (any role; their current role is stored with it).
        answers: the ten SUS answers, whole numbers 1-5, order of ``core.sus.SUS_STATEMENTS``.
        helped, hindered: free text ("what helped", "what got in the way"), at most 5000 each.
        app_version: ``core.config.APP_VERSION`` at the time.

    Returns:
        The new Feedback (flushed), ``sus_score`` from ``core.sus.sus_score``.

    Raises:
        ValidationError: answers missing or out of range, text too long, no app version.
        NotFoundError / PermissionDenied: unknown or deactivated user.
    """
    try:
        a = validate_answers(answers)
    except SusError as exc:
        raise ValidationError(str(exc)) from None
    helped, hindered = str(helped or ""), str(hindered or "")
    if len(helped) > 5000 or len(hindered) > 5000:
        raise ValidationError("Free-text answers may have at most 5000 characters each.")
    app_version = str(app_version or "").strip()
    if not 1 <= len(app_version) <= 32:
        raise ValidationError("The app version (1-32 characters) is required.")
    who = _user(s, user, "user")
    _require_role(who, set(Role), "give feedback")
    row = Feedback(user_id=who.id, role=who.role, sus_score=sus_score(a), helped=helped, hindered=hindered,
                   app_version=app_version, **{f"q{i}": v for i, v in enumerate(a, start=1)})
    s.add(row)
    s.flush()
    log_event(s, user_id=who.id, action=AuditAction.FEEDBACK, object_type="feedback", object_id=row.id)
    return row


def count_rows(s: Session) -> dict[str, int]:
    """Row counts per table (users, studies, inferences, reviews, feedback, audit_events)."""
    return {cls.__tablename__: s.scalar(select(func.count()).select_from(cls)) or 0
            for cls in (User, Study, Inference, Review, Feedback, AuditEvent)}
