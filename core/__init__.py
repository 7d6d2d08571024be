"""LungReview's pure core: imaging, lung masks, preprocessing, inference, nodules, registry, store,
PACS, statistics; no Streamlit, no SQL (see docs and ``.importlinter``)."""

#: LungReview's version: the one place it is written (pyproject.toml reads it; ``core.domain.APP_VERSION``).
__version__ = "0.1.0"
