"""Users and sign-in: bcrypt password hashing, the first admin, roles and (de)activation.

Passwords are hashed with bcrypt (Provos & Mazieres 1999, "A Future-Adaptable Password Scheme")
at cost :data:`_BCRYPT_ROUNDS`. ``db.repository._BCRYPT_ROUNDS`` reads and writes this same value,
so tests lower it with ``monkeypatch.setattr(repo, "_BCRYPT_ROUNDS", 4)``.
"""

from __future__ import annotations

import re
from functools import lru_cache

import bcrypt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.domain import Role
from db.repository.common import PermissionDenied, ValidationError, _choice, _require_role, _user, log_event
from db.schema import AuditAction, User

_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")


#: bcrypt cost factor (2**12 rounds of its key setup).
_BCRYPT_ROUNDS = 12


def _rounds() -> int:
    """The bcrypt cost factor in use (:data:`_BCRYPT_ROUNDS`)."""
    return int(_BCRYPT_ROUNDS)


@lru_cache(maxsize=4)
def _dummy_hash_at(rounds: int) -> bytes:
    return bcrypt.hashpw(b"lungreview-dummy-password", bcrypt.gensalt(rounds=rounds))


def _dummy_hash() -> bytes:
    """A valid bcrypt hash used to spend the same time on unknown user names (no timing oracle)."""
    return _dummy_hash_at(_rounds())


def has_users(s: Session) -> bool:
    """True when at least one user exists (False: the app shows the first-admin form)."""
    return s.scalar(select(User.id).limit(1)) is not None


def _hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < 8:
        raise ValidationError("The password must have at least 8 characters.")
    raw = password.encode("utf-8")
    if len(raw) > 72:
        raise ValidationError("The password is too long: bcrypt uses at most 72 bytes; choose a shorter one.")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=_rounds())).decode("ascii")


def create_user(s: Session, username: str, display_name: str, role: Role | str, password: str, *,
                actor: User | int | None = None) -> User:
    """Create a user with a bcrypt-hashed password.

    The first user is created without ``actor`` and must be an admin; afterwards only an active
    admin ``actor`` may create users.

    Args:
        username: 3-64 characters of letters, digits, ``_ . @ -``; unique (case-insensitive).
        display_name: 1-128 characters.
        role: a :class:`~core.domain.Role` value.
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
