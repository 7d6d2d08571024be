"""LungReview's use cases: each owns its transactions and returns plain values; no Streamlit.

Called by the dashboard's pages, the command-line tools and batch jobs; they call ``core`` (the
pure imaging and AI code) and ``db`` (the repository, inside ``with factory.begin() as s:``).

* ``services.reading``: read an upload within limits, stage it in the study store,
  analyse-or-reuse, record an analysis, save a read, a reader's work.
* ``services.export``: DICOM export of an AI result (Secondary Capture + Structured Report),
  download or send to the PACS, each recorded in the audit log.
* ``services.accounts``: accounts and sign-in, pilot feedback, the worklist, reader agreement.
* ``services.sessions``: server-side sign-in sessions behind the dashboard's cookie.
* ``services.analytics``: agreement, SUS and CSV exports over the review database.
* ``services.reader_study``: reading lists, the reference standard, blinded reads.
* ``services.pilot_report``: the reader-study pilot report (HTML from Jinja2 templates, CSV).
* ``services.archive``: a PACS query scored by every chosen model on Ray, resumably (docs/archive.md).
"""
