"""LungReview's persistence: SQLAlchemy 2 ORM, Alembic migrations and the repository.

* ``db.schema``: tables (User, Study, Series, Inference, Review, Feedback, AuditEvent, sign-in
  sessions, reader-study tables), CHECK constraints, append-only reviews and audit events.
* ``db.session``: ``make_engine(url=None)`` (``get_settings().db_url``; SQLite WAL, foreign keys,
  busy timeout, BEGIN IMMEDIATE; migrated to head on start), ``make_session_factory(engine)``.
* ``db.repository`` (a package: users, studies, reviews, feedback, reports, ...): functions that
  take a Session and never commit; typed errors (ValidationError, NotFoundError,
  PermissionDenied); writing functions record their own audit events.
* ``db.migrations``: the Alembic revisions.

The use cases that own transactions (reading, accounts, sign-in sessions, the reader study, the
pilot report, exports) are the ``services`` package. Streamlit is never imported here.
"""
