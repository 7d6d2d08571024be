"""LungReview's database: SQLAlchemy 2 ORM, Alembic migrations, repository and analytics.

* ``db.schema``: tables (User, Study, Series, Inference, Review, Feedback, AuditEvent), CHECK
  constraints, append-only reviews and audit events.
* ``db.session``: ``make_engine(url=None)`` (``get_settings().db_url``; SQLite WAL, foreign keys,
  busy timeout, BEGIN IMMEDIATE; migrated to head on start), ``make_session_factory(engine)``.
* ``db.repository`` (a package: users, studies, reviews, feedback, reports): functions that take
  a Session and never commit; typed errors (ValidationError, NotFoundError, PermissionDenied);
  writing functions record their own audit events.
* ``db.reading``: the reading service (upload limits, analyse-or-reuse, record an analysis, save
  a read, a reader's work); owns its transactions, returns plain dataclasses.
* ``db.services``: the one-transaction services of the other pages (accounts and sign-in,
  feedback, worklist, reader agreement).
* ``db.analytics``: Cohen's and Fleiss' kappa, reader-vs-AI confusion, SUS summary, CSV exports.

Streamlit is never imported here.
"""
