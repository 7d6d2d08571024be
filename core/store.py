"""The study store: decoded, de-identified series on disk, so a session keeps keys, not volumes.

A stored series is one HDF5 file ``<root>/<key>.h5`` (written and read with h5py) holding

* datasets ``hu/00000``, ``hu/00001``, ...: each slice's HU, (y, x), uncompressed
  (:data:`COMPRESSION`; why: docs/operations.md, "Study store"). They are stored as int16
  when every value of the series is a whole number in [-32768, 32767] (true of CT decoded
  through the modality LUT with an integer slope and intercept, DICOM PS3.3 C.11.1), which is
  lossless; else as float32 (e.g. HU estimated from picture grey values). Loaded back as
  float32 either way, so :func:`get_series` gives the identical ``float32`` arrays that went in.
* the attribute ``meta``: UTF-8 JSON of every other field of the ``Series`` and its ``Slice``
  objects (tuples and ``core.config.Window`` values tagged so that they come back as such).

De-identified: ``core.imaging`` already keeps only technical metadata, pseudonymous keys and
file base names; the store drops the one raw DICOM identifier left, ``Slice.sop_instance_uid``
(it comes back as None).

The key is ``"<content_hash>-<series_key>"`` (:func:`store_key`): the sha256 of the upload
(``core.imaging.Study.content_hash``, also kept in the ``studies`` table) and the series'
pseudonymous key, so an earlier case can be found again from the database alone
(:meth:`SeriesStore.keys` with ``content_hash``).

Writes are atomic: a series is written to a temporary file in the same folder, flushed to disk
(``os.fsync``) and renamed over its final name with ``os.replace`` (atomic on POSIX and
Windows), so a reader sees either no file or a whole one; a file never changes after its
rename, and a reader that has opened it keeps reading it even if it is evicted meanwhile
(POSIX keeps an unlinked open file), so files are opened without HDF5's file locking. A file
that cannot be read (truncated by a crash, or of another format version) is deleted and
reported as missing: the store is a cache, the uploaded files and the database are the record.

Memory: :func:`get_series` and :func:`hold_series` go through one process-wide, thread-safe
in-memory cache of decoded series (:class:`MemoryCache`, least recently used first out, capped at
``LUNGREVIEW_SERIES_CACHE_MB``), shared by every browser session of the server: a session keeps
store keys, three tabs on the same study hold it once, and memory does not grow with the number
of tabs. A series only in memory (the disk refused it) is lost when the cache evicts it.

Size cap: after each write the store evicts the least recently used series (by file
modification time; :meth:`SeriesStore.get` touches the file) until the total is at most
``max_bytes`` (``LUNGREVIEW_STORE_MAX_MB``). The series just written is never evicted by its
own write, so one series larger than the cap is kept until the next write.

No Streamlit and no SQL here: callers (the reading service) decide what to store and when.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from cachetools import LRUCache

from core.config import Window, get_settings
from core.imaging import Series, Slice

#: Version of the file layout; a file of another version is treated as missing.
FORMAT_VERSION = 1

#: Slice fields the store never writes (raw DICOM identifiers).
DROPPED_SLICE_FIELDS: frozenset[str] = frozenset({"sop_instance_uid"})

#: HDF5 filter of the HU datasets: None. Staging a series happens while the reader waits for the
#: upload, and compression (gzip with shuffle) halves the size at many times the time to write and
#: read (figures: docs/operations.md, "Study store"); files written with a filter still read.
COMPRESSION: str | None = None

#: File name suffix of a stored series.
SUFFIX = ".h5"

#: Temporary files older than this (seconds) are left-overs of a crashed writer and are removed.
STALE_TEMP_S = 3600.0

_KEY_PART = re.compile(r"^[0-9a-f]{8,128}$")
_KEY = re.compile(r"^([0-9a-f]{8,128})-([0-9a-f]{8,128})$")
_INT16 = np.iinfo(np.int16)


class StoreError(Exception):
    """The store cannot do what was asked; the message says what is wrong."""


class StoreMissError(StoreError, KeyError):
    """No (readable) series is stored under this key: read the files again."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class StoreEntry:
    """One stored series: its key, the two parts of the key, its size on disk and last use (UTC)."""

    key: str
    content_hash: str
    series_key: str
    size_bytes: int
    last_used: datetime


def store_key(content_hash: str, series_key: str) -> str:
    """The store key of a series: ``"<content_hash>-<series_key>"``.

    Args:
        content_hash: sha256 hex of the upload (``core.imaging.Study.content_hash``).
        series_key: pseudonymous key of the series (``core.imaging.Series.series_key``).

    Raises:
        StoreError: either part is not 8-128 lowercase hex characters.
    """
    for what, part in (("content hash", content_hash), ("series key", series_key)):
        if not isinstance(part, str) or not _KEY_PART.match(part):
            raise StoreError(f"The {what} must be 8-128 lowercase hex characters, got {part!r}.")
    return f"{content_hash}-{series_key}"


# ----------------------------------------------------------------------------------- encoding
def _encode(value: Any, where: str) -> Any:
    """A JSON-able form of ``value``; tuples and Windows are tagged so they round-trip exactly."""
    if isinstance(value, Window):
        return {"__window__": [value.center, value.width, value.floor]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise StoreError(f"{where}: only string keys can be stored, got {list(value)!r}")
        return {k: _encode(v, where) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise StoreError(f"{where}: a value of type {type(value).__name__} cannot be stored")


def _decode(obj: dict[str, Any]) -> Any:
    if set(obj) == {"__window__"}:
        center, width, floor = obj["__window__"]
        return Window(center=center, width=width, floor=floor)
    if set(obj) == {"__tuple__"}:
        return tuple(obj["__tuple__"])
    return obj


def _meta(series: Series) -> dict[str, Any]:
    fields = {f.name: _encode(getattr(series, f.name), f"Series.{f.name}")
              for f in dataclasses.fields(series) if f.name != "slices"}
    slices = [{f.name: _encode(getattr(sl, f.name), f"Slice.{f.name}")
               for f in dataclasses.fields(sl) if f.name != "hu" and f.name not in DROPPED_SLICE_FIELDS}
              for sl in series.slices]
    return {"format": FORMAT_VERSION, "series": fields, "slices": slices}


def _hu_dtype(series: Series) -> np.dtype:
    """int16 when every slice's HU are whole numbers within int16, else float32."""
    for sl in series.slices:
        hu = np.asarray(sl.hu)
        if hu.size == 0 or not np.all(np.isfinite(hu)):
            return np.dtype(np.float32)
        if hu.min() < _INT16.min or hu.max() > _INT16.max or not np.array_equal(hu, np.rint(hu)):
            return np.dtype(np.float32)
    return np.dtype(np.int16)


# -------------------------------------------------------------------------------------- store
class SeriesStore:
    """A folder of compressed series with a size cap and least-recently-used eviction.

    Args:
        root: the folder (created if missing); the app's is ``get_settings().store_dir``.
        max_bytes: size cap in bytes (> 0) for all stored files together.

    Raises:
        StoreError: ``max_bytes`` is not positive, or ``root`` cannot be created.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        if int(max_bytes) <= 0:
            raise StoreError(f"The store's size cap must be positive, got {max_bytes} bytes.")
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the study store folder {self.root}: {exc}") from exc

    @classmethod
    def from_settings(cls) -> SeriesStore:
        """The app's store: ``get_settings().store_dir``, capped at ``store_max_mb`` MiB."""
        settings = get_settings()
        return cls(settings.store_dir, settings.store_max_mb * 1024 * 1024)

    def path(self, key: str) -> Path:
        """The file of ``key`` (which need not exist). Raises StoreError for a malformed key."""
        if not isinstance(key, str) or not _KEY.match(key):
            raise StoreError(f"Not a store key: {key!r} (expected '<content hash>-<series key>').")
        return self.root / f"{key}{SUFFIX}"

    def has(self, key: str) -> bool:
        """True when a series is stored under ``key`` (it may still be evicted before a get)."""
        return self.path(key).is_file()

    def put(self, series: Series, content_hash: str) -> str:
        """Store ``series`` (if not stored already) and return its key; then evict down to the cap.

        Args:
            series: a ``core.imaging.Series`` with at least one slice; each ``Slice.hu`` a 2-D
                float array (y, x) in HU.
            content_hash: sha256 hex of the upload the series came from.

        Returns:
            :func:`store_key` ``(content_hash, series.series_key)``.

        Raises:
            StoreError: a bad key part, an empty series, a slice that is not 2-D, a metadata
                value JSON cannot hold, or the disk refused the write (nothing is left behind).
        """
        key = store_key(content_hash, series.series_key)
        target = self.path(key)
        if target.is_file():
            self._touch(target)
            return key
        if not series.slices:
            raise StoreError("A series without slices cannot be stored.")
        dtype = _hu_dtype(series)
        arrays: dict[str, np.ndarray] = {}
        for i, sl in enumerate(series.slices):
            hu = np.asarray(sl.hu)
            if hu.ndim != 2:
                raise StoreError(f"Slice {i} of the series is {hu.ndim}-D; a slice must be 2-D (y, x).")
            arrays[f"{i:05d}"] = hu.astype(dtype)
        meta = json.dumps(_meta(series), separators=(",", ":"))
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".tmp", dir=self.root)
        os.close(fd)
        try:
            with h5py.File(tmp, "w", locking=False) as h5:
                h5.attrs["meta"] = meta
                group = h5.create_group("hu")
                for name, hu in arrays.items():
                    group.create_dataset(name, data=hu, compression=COMPRESSION)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"Could not write the series to the study store {self.root}: {exc}") from exc
        self.evict(keep={key})
        return key

    def _read(self, key: str, index: int | None) -> tuple[dict[str, Any], list[np.ndarray]]:
        """(metadata, HU arrays) of ``key``: every slice, or only slice ``index``."""
        path = self.path(key)
        if not path.is_file():
            raise StoreMissError(f"No series is stored under {key}; read its files again.")
        try:
            with h5py.File(path, "r", locking=False) as h5:
                meta = json.loads(h5.attrs["meta"], object_hook=_decode)
                if meta.get("format") != FORMAT_VERSION:
                    raise ValueError(f"format version {meta.get('format')!r}")
                n = len(meta["slices"])
                if index is not None and not 0 <= index < n:
                    raise IndexError(f"slice {index} of a {n}-slice series")
                wanted = range(n) if index is None else [index]
                hus = [h5["hu"][f"{i:05d}"][()].astype(np.float32) for i in wanted]
        except IndexError as exc:
            raise StoreError(f"The stored series {key} has no {exc}.") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not path.exists():  # evicted between the check and the open
                raise StoreMissError(f"No series is stored under {key}; read its files again.") from exc
            with contextlib.suppress(OSError):
                path.unlink()
            raise StoreMissError(f"The stored series {key} could not be read ({exc}) and was removed; "
                                 "read its files again.") from exc
        self._touch(path)
        return meta, hus

    def get(self, key: str) -> Series:
        """The series stored under ``key``, as it was put (``Slice.sop_instance_uid`` is None).

        Returns:
            ``core.imaging.Series``; each ``Slice.hu`` float32 (y, x) in HU, equal to what was put.

        Raises:
            StoreMissError: nothing (readable) is stored under ``key``; an unreadable file is deleted.
            StoreError: a malformed key.
        """
        meta, hus = self._read(key, None)
        slices = [Slice(hu=hu, **fields) for hu, fields in zip(hus, meta["slices"], strict=True)]
        return Series(slices=slices, **meta["series"])

    def get_slice(self, key: str, index: int) -> Slice:
        """Slice ``index`` (0-based, series order) of the series under ``key``, reading only that slice.

        For scrolling through a stored series without loading all of it.

        Returns:
            ``core.imaging.Slice``; ``hu`` float32 (y, x) in HU.

        Raises:
            StoreMissError: nothing (readable) is stored under ``key``.
            StoreError: a malformed key, or no slice ``index`` in the series.
        """
        meta, hus = self._read(key, int(index))
        return Slice(hu=hus[0], **meta["slices"][int(index)])

    def delete(self, key: str) -> bool:
        """Remove the series stored under ``key``; True when there was one."""
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def entries(self, content_hash: str | None = None) -> list[StoreEntry]:
        """The stored series, most recently used first; only those of ``content_hash`` if given."""
        out: list[StoreEntry] = []
        for path in self.root.glob(f"*{SUFFIX}"):
            m = _KEY.match(path.stem)
            if m is None or (content_hash is not None and m.group(1) != content_hash):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # evicted meanwhile
                continue
            out.append(StoreEntry(key=path.stem, content_hash=m.group(1), series_key=m.group(2),
                                  size_bytes=st.st_size,
                                  last_used=datetime.fromtimestamp(st.st_mtime, tz=UTC)))
        out.sort(key=lambda e: e.last_used, reverse=True)
        return out

    def keys(self, content_hash: str | None = None) -> list[str]:
        """Keys of :meth:`entries` (most recently used first)."""
        return [e.key for e in self.entries(content_hash)]

    def total_bytes(self) -> int:
        """Bytes on disk of all stored series."""
        return sum(e.size_bytes for e in self.entries())

    def evict(self, keep: Iterable[str] = ()) -> list[str]:
        """Delete least recently used series until the total is at most ``max_bytes``.

        Also removes temporary files older than :data:`STALE_TEMP_S` (left by a crashed writer).

        Args:
            keep: keys never evicted by this call.

        Returns:
            The keys evicted, oldest first.
        """
        now = time.time()
        for tmp in self.root.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > STALE_TEMP_S:
                    tmp.unlink()
        keep = set(keep)
        entries = self.entries()
        total = sum(e.size_bytes for e in entries)
        evicted: list[str] = []
        for entry in reversed(entries):  # least recently used first
            if total <= self.max_bytes:
                break
            if entry.key in keep:
                continue
            if self.delete(entry.key):
                evicted.append(entry.key)
            total -= entry.size_bytes
        return evicted

    @staticmethod
    def _touch(path: Path) -> None:
        with contextlib.suppress(OSError):  # evicted meanwhile: nothing to mark
            os.utime(path)


class MemoryCache:
    """A thread-safe in-memory cache of decoded series, least recently used evicted first
    (``cachetools.LRUCache`` sized by :func:`series_bytes`, behind a lock).

    Args:
        max_bytes: cap in bytes on the HU arrays held (:func:`series_bytes`), > 0. The series
            just added is kept even when it alone is over the cap (until the next addition).

    Raises:
        StoreError: ``max_bytes`` is not positive.
    """

    def __init__(self, max_bytes: int) -> None:
        if int(max_bytes) <= 0:
            raise StoreError(f"The series cache's cap must be positive, got {max_bytes} bytes.")
        self.max_bytes = int(max_bytes)
        # an item over the cap counts as exactly the cap: it evicts everything else and stays
        self._items: LRUCache[str, tuple[Series, int]] = LRUCache(
            self.max_bytes, getsizeof=lambda item: min(item[1], self.max_bytes))
        self._lock = threading.Lock()

    def get(self, key: str) -> Series | None:
        """The series held under ``key`` (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            return None if item is None else item[0]

    def put(self, key: str, series: Series) -> None:
        """Hold ``series`` under ``key``, then evict the least recently used down to the cap."""
        size = series_bytes(series)
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (series, size)

    def discard(self, key: str) -> None:
        """Forget ``key`` (no error when it is not held)."""
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        """Forget every series."""
        with self._lock:
            self._items.clear()

    @property
    def total_bytes(self) -> int:
        """Bytes of HU arrays held now."""
        with self._lock:
            return sum(n for _, n in self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_memory: tuple[tuple[str, int], MemoryCache] | None = None
_memory_lock = threading.Lock()


def memory_cache() -> MemoryCache:
    """The process-wide :class:`MemoryCache` of the app's store, capped at ``series_cache_mb`` MiB.

    A new (empty) cache replaces it when the store folder or the cap in the settings changes.
    """
    global _memory
    settings = get_settings()
    ident = (str(settings.store_dir), settings.series_cache_mb * 1024 * 1024)
    with _memory_lock:
        if _memory is None or _memory[0] != ident:
            _memory = (ident, MemoryCache(ident[1]))
        return _memory[1]


# ------------------------------------------------------------------------- module-level helpers
def put_series(series: Series, content_hash: str) -> str:
    """Store a series in the app's store (:meth:`SeriesStore.put`); returns its key."""
    return SeriesStore.from_settings().put(series, content_hash)


def hold_series(key: str, series: Series) -> None:
    """Keep a decoded series in the process's memory cache under its store key (see module doc)."""
    memory_cache().put(key, series)


def get_series(key: str) -> Series:
    """A series by store key: from the process's memory cache, else the app's store (then cached).

    Returns:
        ``core.imaging.Series``; each ``Slice.hu`` float32 (y, x) in HU. Series read back from disk
        have ``Slice.sop_instance_uid`` None (the store drops it).

    Raises:
        StoreMissError: neither holds ``key`` (evicted): the files must be read again.
        StoreError: a malformed key.
    """
    cache = memory_cache()
    series = cache.get(key)
    if series is None:
        series = SeriesStore.from_settings().get(key)
        cache.put(key, series)
    return series


def get_slice(key: str, index: int) -> Slice:
    """One slice from the app's store (:meth:`SeriesStore.get_slice`)."""
    return SeriesStore.from_settings().get_slice(key, index)


def has_series(key: str) -> bool:
    """True when the app's store holds ``key`` on disk (:meth:`SeriesStore.has`)."""
    return SeriesStore.from_settings().has(key)


def list_keys(content_hash: str | None = None) -> list[str]:
    """Keys in the app's store, most recently used first; of one upload if ``content_hash`` is given."""
    return SeriesStore.from_settings().keys(content_hash)


def series_bytes(series: Series) -> int:
    """Bytes the series' HU arrays take in memory (what the store saves per session).

    Returns:
        Sum of ``Slice.hu.nbytes`` over the slices.
    """
    return int(sum(np.asarray(sl.hu).nbytes for sl in series.slices))


__all__ = [
    "FORMAT_VERSION", "MemoryCache", "SeriesStore", "StoreEntry", "StoreError", "StoreMissError", "get_series",
    "get_slice", "has_series", "hold_series", "list_keys", "memory_cache", "put_series", "series_bytes",
    "store_key",
]
