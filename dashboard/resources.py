"""Cached heavy resources of the dashboard: the ONLY place that uses ``st.cache_resource``.

* :func:`get_engine` / :func:`get_session_factory`: one SQLAlchemy engine per database URL
  (``get_settings().db_url``), migrated to head on first use (``db.session.make_engine``).
* :func:`get_predictor`: one ``core.inference.Predictor`` per registry folder, model id and model
  sha256, loaded with ``core.registry.load_model`` (sha256 checked before deserialising).
  TensorFlow is imported only here, lazily, on the first analysis.
* :func:`get_reading_service`: the ``services.reading.ReadingService`` over these (not cached: it
  holds nothing but the cached factories and :func:`get_predictor`).
* :func:`shared_cache`: bounded least-recently-used caches shared by every browser session
  (Grad-CAM heatmaps, overlay PNGs, lung masks), so tabs on the same case share them and memory
  does not grow with the number of tabs.
* :func:`warm_default_model`: loads and warms the default model in a background thread, started
  by the first page view after the server starts.
* :func:`keep_keras_state`: stops Streamlit from clearing the Keras session after every script
  run (a second or more per run and a new trace of Grad-CAM; docs/benchmarks.md, "The warm path").

Keys include the database URL and the registry folder, so tests that point the settings at a
temporary database or registry get their own resources; :func:`clear_all` empties the caches
(``st.cache_resource`` persists across AppTest runs in one process).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any

import streamlit as st
from cachetools import LRUCache

from core.settings import get_settings

log = logging.getLogger("lungreview.dashboard")


@st.cache_resource(show_spinner=False)
def _engine(url: str):
    from services.database import open_engine

    log.info("opening database %s", url.split("@")[-1])
    return open_engine(url)


@st.cache_resource(show_spinner=False)
def _factory(url: str, read_only: bool):
    from services.database import session_factory

    return session_factory(_engine(url), read_only=read_only)


def get_engine():
    """The SQLAlchemy ``Engine`` for ``get_settings().db_url`` (cached per URL; migrated to head).

    Raises:
        db.session.DatabaseError: the database cannot be opened or migrated.
    """
    return _engine(get_settings().db_url)


def get_session_factory(read_only: bool = False):
    """A ``sessionmaker`` bound to :func:`get_engine`, for the services (pages never open a session).

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


@st.cache_resource(show_spinner=False, max_entries=2)
def _nodule_network(registry_dir: str, model_id: str, sha256: str) -> Any:
    from core.nodules.detector import load_detector  # deferred: imports TensorFlow

    log.info("loading nodule detector %s (sha256 %s...) from %s", model_id, sha256[:12], registry_dir)
    return load_detector(model_id, registry_dir)


def get_nodule_detector() -> Any:
    """The registry's nodule detector (``services.nodules.NoduleDetector``), or None when none is registered.

    Reading the card is cheap; the 3-D network is loaded once per process, registry folder and
    weights sha256 (``st.cache_resource``), and only when a series must really be scanned.

    Raises:
        core.registry.RegistryError: the registry cannot be read.
    """
    from core.registry import get_card
    from services.nodules import registry_detector

    registry_dir = get_settings().registry_dir

    def load(model_id: str) -> Any:
        card = get_card(model_id, registry_dir=registry_dir)
        return _nodule_network(str(registry_dir), card.id, card.sha256)

    return registry_detector(load, registry_dir)


def get_reading_service():
    """The reading service (``services.reading.ReadingService``) on the cached database and models.

    Writes go through :func:`get_session_factory`, reads through its read-only twin; models are
    loaded by :func:`get_predictor` only when a series must really be analysed, the nodule
    detector by :func:`get_nodule_detector` only when a series must really be scanned.

    Raises:
        db.session.DatabaseError: the database cannot be opened or migrated.
    """
    from services.reading import ReadingService

    return ReadingService(get_session_factory(), get_predictor, read_factory=get_session_factory(read_only=True),
                          nodule_detector=get_nodule_detector)


def clear_all() -> None:
    """Drop every cached engine, session factory and model (tests; after replacing a model)."""
    st.cache_resource.clear()


class SharedLRU:
    """A thread-safe least-recently-used cache of at most ``max_items`` values
    (``cachetools.LRUCache`` behind a lock).

    A value is made once even when several threads (browser sessions) ask for the same key at the
    same time: the first makes it, outside the lock; the others wait for it instead of making
    it again (a "single flight" per key).

    Args:
        max_items: how many values are kept (> 0); the least recently used go first.
    """

    def __init__(self, max_items: int) -> None:
        self.max_items = max(1, int(max_items))
        self._items: LRUCache[Hashable, Any] = LRUCache(self.max_items)
        self._making: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value of ``key``, made by ``make()`` (outside the lock) when it is not held.

        While another thread makes the value of ``key``, this waits for it; when that thread's
        ``make()`` raises, one of the waiters makes it instead (the exception goes to the thread
        whose ``make()`` raised it).

        Raises:
            whatever ``make()`` raises in this thread; nothing is stored then.
        """
        while True:
            with self._lock:
                if key in self._items:
                    return self._items[key]  # LRUCache: a read makes it the most recently used
                pending = self._making.get(key)
                if pending is None:
                    done = self._making[key] = threading.Event()
                    break
            pending.wait()  # made (held now) or failed (made here on the next pass)
        try:
            value = make()
        except BaseException:
            with self._lock:
                del self._making[key]
            done.set()
            raise
        with self._lock:
            self._items[key] = value
            del self._making[key]
        done.set()
        return value

    def values(self) -> list[Any]:
        """The values held, least recently used first (a snapshot)."""
        with self._lock:
            return list(self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@st.cache_resource(show_spinner=False)
def shared_cache(name: str, max_items: int) -> SharedLRU:
    """The process-wide :class:`SharedLRU` called ``name`` (one per name and size)."""
    return SharedLRU(max_items)


_warm_lock = threading.Lock()
_warm_started: set[str] = set()


def warm_default_model() -> None:
    """Load the default model and run it once (probabilities, Grad-CAM) in a background thread.

    Started once per process and registry folder, by the first page view (sign-in included), so
    that TensorFlow's import (about 4 s), the model load and the first traces of its functions
    are done before the first study is analysed. Failures are logged, never raised: the page
    that needs the model reports them. Off when ``get_settings().warm_model`` is False
    (``LUNGREVIEW_WARM_MODEL=0``, the page tests).
    """
    if not get_settings().warm_model:
        return
    registry_dir = str(get_settings().registry_dir)
    with _warm_lock:
        if registry_dir in _warm_started:
            return
        _warm_started.add(registry_dir)

    def warm() -> None:
        import numpy as np

        try:
            from core.registry import default_model_id

            predictor = get_predictor(default_model_id())
            predictor.explain_hu(np.full((512, 512), -1000.0, dtype=np.float32))
            log.info("default model loaded and warmed")
        except Exception:  # noqa: BLE001 - a background warm-up must never take the server down
            log.exception("warming the default model failed; it is loaded on the first analysis instead")

    thread = threading.Thread(target=warm, name="lungreview-warm-model", daemon=True)
    try:
        from streamlit.runtime.scriptrunner import add_script_run_ctx

        add_script_run_ctx(thread)
    except ImportError:  # pragma: no cover - older Streamlit
        pass
    thread.start()


#: Grad-CAM heatmaps kept for all sessions together: float32 512 x 512 = 1 MiB each.
HEATMAP_CACHE_ITEMS = 256


def gradcam_heatmap(analysis: Any, series: Any, index: int, class_name: str) -> Any:
    """The Grad-CAM heatmap of one slice for one class, computed once per analysis, slice and class.

    Shared by every browser session (:func:`shared_cache`, :data:`HEATMAP_CACHE_ITEMS` entries).

    Args:
        analysis: the ``services.reading.Analysis`` shown (its ``key`` and ``model_id``).
        series: the analysed ``core.imaging.Series``. index: 0-based slice. class_name: a class
            of the model.

    Returns:
        float32 (y, x) in [0, 1] at the slice's size (``core.inference.Predictor.explain``).

    Raises:
        core.inference.InferenceError: no such slice or class.
        core.registry.RegistryError: the model cannot be loaded.
    """
    import numpy as np

    def make() -> Any:
        explanation = get_predictor(analysis.model_id).explain(series, index, class_name=class_name)
        return np.asarray(explanation.heatmap, dtype=np.float32)

    return shared_cache("gradcam", HEATMAP_CACHE_ITEMS).get_or_make((analysis.key, int(index), class_name), make)


def _streamlit_clean_up() -> Any:
    """Streamlit's own after-run clean-up function (None when this Streamlit has none)."""
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:  # pragma: no cover
        return None
    return getattr(script_runner, "_clean_problem_modules", None)


#: Streamlit's function as it was before :func:`keep_keras_state` replaced it (tests compare).
STREAMLIT_CLEAN_UP = _streamlit_clean_up()


def _clean_problem_modules_keeping_keras() -> None:
    """Streamlit's after-run clean-up without ``keras.backend.clear_session()``: matplotlib only."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        with contextlib.suppress(Exception):
            plt.close("all")


def keep_keras_state() -> bool:
    """Keep Keras' state between script runs: the loaded models and their traced functions.

    Streamlit's script runner calls ``keras.backend.clear_session()`` after every script run
    when Keras is imported (``streamlit/runtime/scriptrunner/script_runner.py``,
    ``_clean_problem_modules``, Streamlit 1.67), meant for scripts that build a model per run.
    LungReview loads each model once (:func:`get_predictor`), so the clearing only costs time:
    every run pays for it, and the next Grad-CAM is traced again (docs/benchmarks.md, "The warm
    path"). This replaces that private function with
    :func:`_clean_problem_modules_keeping_keras` (matplotlib figures are still closed).

    Returns:
        True when Streamlit's function was found and replaced (or already was); False when this
        Streamlit has no such function (nothing changed; the app works, only slower).
    """
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:  # pragma: no cover - a Streamlit without the module
        return False
    if not hasattr(script_runner, "_clean_problem_modules"):
        return False
    script_runner._clean_problem_modules = _clean_problem_modules_keeping_keras
    return True


@functools.cache
def _libc() -> Any:
    """The C library through ctypes, looked up once per process; None off Linux or when missing.

    Looked up once because ``ctypes.util.find_library`` runs ``ldconfig -p`` in a subprocess on
    every call (CPython ``Lib/ctypes/util.py``): a fork of the whole server process each time.
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def release_memory() -> bool:
    """Give memory freed by Python back to the operating system (glibc ``malloc_trim(0)``).

    Reading a large upload allocates several times the decoded series for a moment (the files'
    bytes, the DICOM datasets, float32 HU, the store's int16 copy); glibc keeps such freed blocks
    in its heaps, so the server's RSS would stay at the peak of every upload. Called after an
    upload has been staged and after an analysis. Source: glibc manual, "Memory allocation
    tunables" / ``malloc_trim(3)``.

    Returns:
        True when ``malloc_trim`` ran (Linux with glibc); False elsewhere (nothing done).
    """
    libc = _libc()
    if libc is None:
        return False
    try:
        libc.malloc_trim(0)
    except AttributeError:  # a C library without malloc_trim (not glibc)
        return False
    return True
