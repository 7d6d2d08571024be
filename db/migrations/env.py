"""Alembic environment for LungReview (``db/migrations``).

Run through ``db.session.upgrade``/``downgrade`` (a Config built in code, the connection handed
over in ``config.attributes["connection"]``), or from the command line with
``alembic -c db/alembic.ini upgrade head`` (URL from ``LUNGREVIEW_DB_URL`` / core.settings).
"""

from __future__ import annotations

from alembic import context

from db.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade head --sql``)."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over the handed-over connection, or over a new engine from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from db.session import make_engine

    url = config.get_main_option("sqlalchemy.url")
    engine = make_engine(url, migrate=False) if url else make_engine(migrate=False)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
