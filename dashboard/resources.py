"""Cached heavy resources of the dashboard: the ONLY place that uses ``st.cache_resource``.

* :func:`get_engine` / :func:`get_session_factory`: one SQLAlchemy engine per database URL
  (``get_settings().db_url``), migrated to head on first use (``db.session.make_engine``).
* :func:`get_predictor`: one ``core.inference.Predictor`` per registry folder, model id and model
  sha256, loaded with ``core.registry.load_model`` (sha256 checked before deserialising).
  TensorFlow is imported only here, lazily, on the first analysis.
* :func:`get_reading_service`: the ``db.reading.ReadingService`` over these (not cached: it
  holds nothing but the cached factories and :func:`get_predictor`).

Keys include the database URL and the registry folder, so tests that point the settings at a
temporary database or registry get their own resources; :func:`clear_all` empties the caches
(``st.cache_resource`` persists across AppTest runs in one process).
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from core.config import get_settings

log = logging.getLogger("lungreview.dashboard")


@st.cache_resource(show_spinner=False)
def _engine(url: str):
    from db.session import make_engine

    log.info("opening database %s", url.split("@")[-1])
    return make_engine(url)


@st.cache_resource(show_spinner=False)
def _factory(url: str, read_only: bool):
    from db.session import make_session_factory

    return make_session_factory(_engine(url), read_only=read_only)


def get_engine():
    """The SQLAlchemy ``Engine`` for ``get_settings().db_url`` (cached per URL; migrated to head).

    Raises:
        db.session.DatabaseError: the database cannot be opened or migrated.
    """
    return _engine(get_settings().db_url)


def get_session_factory(read_only: bool = False):
    """A ``sessionmaker`` bound to :func:`get_engine`; use ``with factory.begin() as s:``.

    Args:
        read_only: True for pages that only read (deferred BEGIN on SQLite; never write with it).
    """
    return _factory(get_settings().db_url, bool(read_only))


@st.cache_resource(show_spinner=False, max_entries=4)
def _predictor(registry_dir: str, model_id: str, sha256: str) -> Any:
    from core.inference import Predictor  # deferred: imports TensorFlow (~4 s)
    from core.registry import load_model

    log.info("loading model %s (sha256 %s...) from %s", model_id, sha256[:12], registry_dir)
    return Predictor(load_model(model_id, registry_dir=registry_dir))


def get_predictor(model_id: str) -> Any:
    """The ``core.inference.Predictor`` of a registered model, loaded once per process.

    The cache key holds the card's sha256, so a replaced model file is loaded (and checked) again.

    Args:
        model_id: registry id (see ``core.registry.list_cards``).

    Raises:
        core.registry.ModelNotFoundError: no such model or its file is missing.
        core.registry.ModelIntegrityError: the file's sha256 differs from its card.
        core.registry.RegistryError: Keras cannot read the file.
    """
    from core.registry import get_card

    registry_dir = get_settings().registry_dir
    card = get_card(model_id, registry_dir=registry_dir)
    return _predictor(str(registry_dir), card.id, card.sha256)


def get_reading_service():
    """The reading service (``db.reading.ReadingService``) on the cached database and models.

    Writes go through :func:`get_session_factory`, reads through its read-only twin; models are
    loaded by :func:`get_predictor` only when a series must really be analysed.

    Raises:
        db.session.DatabaseError: the database cannot be opened or migrated.
    """
    from db.reading import ReadingService

    return ReadingService(get_session_factory(), get_predictor, read_factory=get_session_factory(read_only=True))


def clear_all() -> None:
    """Drop every cached engine, session factory and model (tests; after replacing a model)."""
    st.cache_resource.clear()
