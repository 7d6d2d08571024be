"""LungReview's database: SQLAlchemy 2 ORM, Alembic migrations, repository and analytics.

* ``db.schema``: tables (User, Study, Inference, Review, Feedback, AuditEvent), CHECK constraints,
  append-only reviews and audit events.
* ``db.session``: ``make_engine(url=None)`` (``get_settings().db_url``; SQLite WAL, foreign keys,
  busy timeout, BEGIN IMMEDIATE; migrated to head on start), ``make_session_factory(engine)``.
* ``db.repository``: functions that take a Session and never commit; typed errors
  (ValidationError, NotFoundError, PermissionDenied); writing functions record their own audit
  events. Use ``with factory.begin() as s:`` also for ``authenticate`` (it records the sign-in).
* ``db.analytics``: Cohen's and Fleiss' kappa, reader-vs-AI confusion, SUS summary, CSV exports.

Streamlit is never imported here.
"""
