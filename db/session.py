"""Database engine and sessions: one engine per process, migrated to the newest schema on start.

Usage (the caller owns the transaction; repository functions never commit)::

    engine = make_engine()                      # get_settings().db_url, migrated to head
    factory = make_session_factory(engine)
    with factory.begin() as s:                  # commits on success, rolls back on error
        repository.add_review(s, ...)

SQLite (the default, a file under ``var/``): the parent folder is created; every connection gets
``PRAGMA journal_mode=WAL`` (readers do not block the writer), ``foreign_keys=ON``,
``busy_timeout`` (30 s: a writer waits for another instead of failing with "database is locked")
and ``synchronous=FULL`` (a committed transaction survives a crash, also of the machine). Every
transaction starts with ``BEGIN IMMEDIATE``, which takes the write lock up front; with the
default deferred ``BEGIN`` a transaction that reads and then writes can fail at once with
"database is locked" when another process wrote in between (SQLite docs, "Transaction",
section 2.2; the pysqlite recipe in SQLAlchemy's SQLite dialect docs, "Serializable isolation /
Savepoints / Transactional DDL"). Sessions that only read can use
``make_session_factory(engine, read_only=True)`` (deferred BEGIN, never wait).

PostgreSQL (``postgresql+psycopg://user:password@host:5432/name``, psycopg 3): the same contract.
Every transaction that may write first takes one transaction-scoped advisory lock
(``SELECT pg_advisory_xact_lock(...)``; PostgreSQL 15 docs, sections 13.3.5 "Advisory Locks" and
9.27.10 "Advisory Lock Functions"), the counterpart of ``BEGIN IMMEDIATE``: writers run one
after the other, so a read-then-write such as "supersede the reader's current review" cannot
interleave with another writer's under the default READ COMMITTED isolation. The lock is released
at commit or rollback, also when the client dies (the server ends the session). Every connection
sets ``lock_timeout`` to the busy timeout (30 s), so a writer waits for another instead of
failing, and fails with "lock timeout" rather than hanging forever. Read-only sessions take no
lock. The migrations run under the same lock, so processes starting at once migrate one after
the other. Other dialects get nothing dialect-specific.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

MIGRATIONS_DIR: Path = Path(__file__).resolve().parent / "migrations"

#: Seconds a SQLite connection waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT_S = 30.0


_READ_ONLY_OPTION = "lungreview_read_only"


class DatabaseError(RuntimeError):
    """The database could not be opened or migrated; the message says what to check."""


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` built in code (no alembic.ini needed; works from any folder).

    Args:
        url: SQLAlchemy database URL; used only when no connection is handed over in
            ``cfg.attributes["connection"]``.

    Returns:
        Config with ``script_location`` = ``db/migrations`` and ``sqlalchemy.url`` = url.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record) -> None:  # pragma: no cover - trivial
        # Autocommit at the driver level, so that SQLAlchemy's "begin" event below decides
        # how a transaction starts (BEGIN IMMEDIATE) and PRAGMAs run outside transactions.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # Read-only sessions (make_session_factory(read_only=True)) use a deferred BEGIN: in WAL
        # mode they read a snapshot and never wait for the writer.
        read_only = conn.get_execution_options().get(_READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


#: Key of the advisory lock every PostgreSQL write transaction holds (any fixed 64-bit integer;
#: this one is the ASCII bytes of "LungRevi").
POSTGRES_WRITE_LOCK_KEY = 0x4C756E6752657669


def _configure_postgresql(engine: Engine, lock_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record) -> None:  # pragma: no cover - trivial
        # SET outside a transaction, so that it holds for the whole session (not rolled back).
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cur = dbapi_connection.cursor()
        cur.execute(f"SET lock_timeout = {int(lock_timeout_s * 1000)}")
        cur.close()
        dbapi_connection.autocommit = autocommit

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        if not conn.get_execution_options().get(_READ_ONLY_OPTION, False):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({POSTGRES_WRITE_LOCK_KEY})")


def make_engine(url: str | None = None, *, migrate: bool = True, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
                echo: bool = False) -> Engine:
    """Create the engine for ``url`` and migrate the schema to the newest Alembic revision.

    Args:
        url: SQLAlchemy URL; None means ``get_settings().db_url`` (a SQLite file in ``var/``).
        migrate: run ``alembic upgrade head`` (default True; tests of the migrations pass False).
        busy_timeout_s: SQLite and PostgreSQL: seconds to wait for another writer (PostgreSQL:
            ``lock_timeout``, for any lock).
        echo: log SQL (debugging).

    Returns:
        Engine. For SQLite files the parent folder exists afterwards and each connection is set
        up as in the module docstring.

    Raises:
        DatabaseError: the URL is malformed, or the database cannot be reached or migrated
            (message names the URL without its password, and the cause).
    """
    raw = url or get_settings().db_url
    try:
        parsed = make_url(raw)
    except Exception as exc:
        raise DatabaseError(f"The database URL {raw!r} is not a valid SQLAlchemy URL: {exc}. "
                            "Check LUNGREVIEW_DB_URL.") from exc
    kwargs: dict = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            folder = Path(database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"Cannot create the database folder {folder}: {exc}. "
                                    "Check LUNGREVIEW_DB_URL / LUNGREVIEW_VAR_DIR.") from exc
        kwargs["connect_args"] = {"timeout": busy_timeout_s}
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine, busy_timeout_s)
    elif parsed.get_backend_name() == "postgresql":
        _configure_postgresql(engine, busy_timeout_s)
    if migrate:
        try:
            upgrade(engine)
        except Exception as exc:
            engine.dispose()
            raise DatabaseError(
                f"Could not open and migrate the database at {parsed.render_as_string(hide_password=True)}: "
                f"{type(exc).__name__}: {exc}. Check that the URL is right, the server is running and "
                "the folder is writable."
            ) from exc
    return engine


def _migrate(engine: Engine, step, revision: str) -> None:
    """Run ``step(cfg, revision)`` (Alembic's upgrade or downgrade) in one transaction.

    SQLite: foreign-key enforcement is switched off on the migrating connection (outside the
    transaction, where the PRAGMA has effect) so that a migration can rebuild a table other
    tables refer to (batch mode), and ``PRAGMA foreign_key_check`` must come back empty before
    the transaction commits: the procedure of the SQLite documentation, "ALTER TABLE", section 7.
    Enforcement is switched on again afterwards.

    Raises:
        DatabaseError: SQLite: the migrated rows break a foreign key (nothing is committed).
    """
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                step(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise DatabaseError(
                            f"migrating to {revision} would break {len(broken)} foreign key(s) "
                            f"(first: table {broken[0][0]}, row {broken[0][1]}); nothing was changed")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys = ON")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` to ``revision`` with Alembic's API.

    The whole upgrade runs in one transaction on one connection (on SQLite ``BEGIN IMMEDIATE``,
    on PostgreSQL under the write lock), so processes starting at the same time migrate one
    after the other (see :func:`_migrate`).
    """
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database behind ``engine`` down to ``revision`` (default: empty)."""
    _migrate(engine, command.downgrade, revision)


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; use ``with factory.begin() as s:``.

    ``expire_on_commit=False`` so that rows returned by repository functions can still be read
    after the transaction has ended (e.g. by a Streamlit page).

    Args:
        engine: from :func:`make_engine`.
        read_only: start transactions without the write lock (SQLite: a deferred ``BEGIN``
            instead of ``BEGIN IMMEDIATE``; PostgreSQL: no advisory lock) so that pages that
            only read (worklist, analytics) never wait for a writer. Do not write through such a
            session: on SQLite a deferred transaction that writes can fail with "database is
            locked"; on PostgreSQL it would race other writers. No effect on other databases.
    """
    bind = engine.execution_options(**{_READ_ONLY_OPTION: True}) if read_only else engine
    return sessionmaker(bind=bind, expire_on_commit=False)
