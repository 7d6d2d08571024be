"""People for tests: the database tests' cast (an admin, three radiologists, a lead, a
coordinator) and the page tests' one user per role. Passwords go through the real bcrypt path
(``db.repository.create_user``); the test fixtures lower its cost to 4."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from core.domain import Role
from db import repository as repo

#: (username, role) of the database tests' cast after the admin; each password is "<name>-pass-1".
CAST: tuple[tuple[str, str], ...] = (
    ("rad1", "radiologist"), ("rad2", "radiologist"), ("rad3", "radiologist"), ("lead", "lead"),
    ("coord", "coordinator"),
)

#: Display names of the page tests' users, one per role (username = the role value).
ROLE_NAMES: dict[Role, str] = {
    Role.RADIOLOGIST: "Rita Radiologist", Role.LEAD: "Lee Lead", Role.COORDINATOR: "Cora Coordinator",
}


def create_cast(factory: sessionmaker[Session]) -> dict[str, int]:
    """Create the admin ("admin", password "admin-pass-1") and :data:`CAST`; returns {username: id}."""
    with factory.begin() as s:
        admin = repo.create_user(s, "admin", "Ada Admin", "admin", "admin-pass-1")
        ids = {"admin": admin.id}
        for name, role in CAST:
            ids[name] = repo.create_user(s, name, f"Dr {name}", role, f"{name}-pass-1", actor=admin).id
    return ids


def create_one_per_role(factory: sessionmaker[Session], password: str) -> dict[str, object]:
    """One active user per role (the admin "Ada Admin" first); returns {role value: User row}.

    The rows are read after commit (the factory has ``expire_on_commit=False``).
    """
    out: dict[str, object] = {}
    with factory.begin() as s:
        admin = repo.create_user(s, "admin", "Ada Admin", Role.ADMIN, password)
        out[Role.ADMIN.value] = admin
        for role, name in ROLE_NAMES.items():
            out[role.value] = repo.create_user(s, role.value, name, role, password, actor=admin)
    return out
