"""Validate on the site's own archive: score a PACS query's CT series with every chosen model on Ray,
resumably, and compare the models (docs/archive.md).

The flow of a run:

1. **Query and plan** (the driver): a QIDO-RS search (study-date range, ModalitiesInStudy CT, an
   optional description filter) gives the studies, QIDO-RS again their series
   (:func:`plan_series`). Every series is known by its pseudonymous keys
   (``core.imaging.study_key_for``); the PACS's UIDs stay in memory and only travel, with the
   work item, to the worker that retrieves the series. A series whose Modality is not CT is
   recorded as failed (``not_ct``) without being retrieved. Nothing else of the PACS is stored:
   on resume the query runs again (a study added to the PACS in the date range since is added
   to the run).
2. **Score on Ray**: a pool of :class:`ScoringWorker` actors (Ray 2.x; embedded on this machine
   when ``LUNGREVIEW_RAY_ADDRESS`` is unset, else the cluster at that address), one per CPU by
   default, each keeping its loaded models. A worker retrieves its series from the PACS itself
   (``core.pacs.dicomweb.PacsClient.retrieve_series``: WADO-RS, then ``core.imaging.read_uploads``,
   the upload path) and scores it with every model the item names: a slice classifier with
   ``core.inference.Predictor(core.registry.load_model(id)).analyse_series`` (the reading
   service's path, ``services.reading.ReadingService.analyse``), the nodule detector with
   ``core.nodules.detect_nodules``. Only results travel back (a few hundred bytes per model).
3. **Record** (the driver, one transaction per series): one ``archive_results`` row per
   (run, series, model), unique, so nothing is scored twice (``db.repository.archive``).

Honest failures: every failure is an ``ArchiveFailure`` with the typed error's message. Failures
of the series itself (not CT, corrupt, too large, deleted) are final; the others (PACS timeout
after the client's retries, a worker that died, a model that could not be loaded...) are tried
again, up to ``LUNGREVIEW_ARCHIVE_MAX_ATTEMPTS`` attempts in all, also on resume. A run never
stops because one series failed. When a series fails because the PACS did not answer and the
PACS does not answer a search either, the run PAUSES (status ``paused``, a message saying so),
does not count the attempt, checks the PACS every ``poll_s`` seconds and continues when it
answers; stopped meanwhile, ``resume`` continues it.

Progress (:class:`Progress`: done / failed / left series, series per minute, time left) goes to a
callback after every series (the CLI shows it with tqdm; the Compare page shows it too); the
callback returning True stops the run after the series in flight (status ``paused``).

The comparison (:meth:`ArchiveService.compare`) is ``core.stats.archive`` on the run's rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from core.imaging import ImagingError, study_key_for
from core.imaging.deid import deidentified_description
from core.pacs.dicomweb import (
    NotCTError,
    PacsAuthError,
    PacsClient,
    PacsError,
    PacsUnreachableError,
    SeriesTooLargeError,
    StudyNotFoundError,
)
from core.settings import get_settings
from core.stats.archive import ArchiveComparison, ArchiveStatsError, Reference, compare, parse_reference_csv
from db.repository import archive as archive_repo
from db.schema import PERMANENT_ARCHIVE_FAILURES, ArchiveFailure, ArchiveResultStatus, ArchiveRunStatus

log = logging.getLogger("lungreview.archive")

__all__ = [
    "ArchiveError",
    "ArchiveQuery",
    "ArchiveService",
    "ModelRef",
    "PlannedSeries",
    "Progress",
    "RunBusyError",
    "ScoringWorker",
    "SeriesOutcome",
    "WorkItem",
    "check_ray_address",
    "connect_ray",
    "main",
    "plan_series",
]

SLICE_CLASSIFIER = "slice_classifier"
NODULE_DETECTOR = "nodule_detector"
#: Items each worker holds at once (one scoring, one queued behind it), so a worker never waits
#: for the driver between series.
QUEUE_DEPTH = 2
#: Seconds between heartbeats of a running driver; a "running" run with an older heartbeat than
#: :data:`STALE_AFTER_S` was left by a driver that stopped, and may be resumed.
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
#: Studies asked for per QIDO-RS search; a full answer is split into two date ranges.
SEARCH_PAGE = 100
#: Embedded Ray: CPUs it may use at most (the machine is shared with the dashboard).
EMBEDDED_MAX_CPUS = 2
_EARLIEST = date(1900, 1, 1)


class ArchiveError(Exception):
    """An archive run cannot be planned, started or resumed; the message says what to do."""


class RunBusyError(ArchiveError):
    """Another driver is scoring this run right now (its heartbeat is recent)."""


# ------------------------------------------------------------------------------------ the query
@dataclass(frozen=True)
class ArchiveQuery:
    """Which series of the PACS a run scores.

    Attributes:
        date_from, date_to: inclusive StudyDate range (either may be None: open).
        description: case-insensitive text the study's or the series' description must contain
            ("" = any).
        max_series: score at most this many series (the first ones of the plan), None = all.
        modality: ModalitiesInStudy of the search (CT).
    """

    date_from: date | None = None
    date_to: date | None = None
    description: str = ""
    max_series: int | None = None
    modality: str = "CT"

    def __post_init__(self) -> None:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ArchiveError(f"The date range is empty: {self.date_from} is after {self.date_to}.")
        if self.max_series is not None and self.max_series < 1:
            raise ArchiveError(f"max_series must be at least 1, got {self.max_series}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO text); what ``archive_runs.query`` stores."""
        return {"date_from": self.date_from.isoformat() if self.date_from else None,
                "date_to": self.date_to.isoformat() if self.date_to else None,
                "description": self.description, "max_series": self.max_series, "modality": self.modality}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchiveQuery:
        """The inverse of :meth:`to_dict`."""
        def day(v: Any) -> date | None:
            return date.fromisoformat(v) if v else None

        return cls(date_from=day(data.get("date_from")), date_to=day(data.get("date_to")),
                   description=str(data.get("description") or ""), max_series=data.get("max_series"),
                   modality=str(data.get("modality") or "CT"))

    @classmethod
    def parse(cls, items: Iterable[str]) -> ArchiveQuery:
        """A query from ``key=value`` words: ``from=2024-01-01 to=2024-12-31 description=thorax
        max_series=500``.

        Raises:
            ArchiveError: an unknown key, a word without ``=``, a malformed date or number.
        """
        known = {"from": "date_from", "to": "date_to", "description": "description", "max_series": "max_series"}
        values: dict[str, Any] = {}
        for word in items:
            key, sep, value = word.partition("=")
            if not sep or key.strip().lower() not in known:
                raise ArchiveError(f"Query part {word!r} is not one of from=YYYY-MM-DD, to=YYYY-MM-DD, "
                                   "description=TEXT, max_series=N.")
            name = known[key.strip().lower()]
            value = value.strip()
            try:
                if name.startswith("date_"):
                    values[name] = date.fromisoformat(value)
                elif name == "max_series":
                    values[name] = int(value)
                else:
                    values[name] = value
            except ValueError as exc:
                raise ArchiveError(f"Query part {word!r}: {exc}. Dates are YYYY-MM-DD, max_series a number.") from exc
        return cls(**values)


@dataclass(frozen=True)
class PlannedSeries:
    """One series the query found.

    ``study_uid`` and ``series_uid`` are the PACS's UIDs: kept in memory for the worker that
    retrieves the series, never stored or logged (hidden from ``repr``). ``description`` is
    de-identified (``core.imaging.deid.deidentified_description``).
    """

    study_uid: str = field(repr=False)
    series_uid: str = field(repr=False)
    study_key: str
    series_key: str
    modality: str
    description: str
    n_instances: int | None


def _search_range(client: PacsClient, query: ArchiveQuery, lo: date | None, hi: date | None) -> list:
    """Every study hit in [lo, hi]: a full answer (:data:`SEARCH_PAGE` studies) is split in two."""
    hits = client.search_studies(date_from=lo, date_to=hi, modality=query.modality, limit=SEARCH_PAGE)
    if len(hits) < SEARCH_PAGE:
        return hits
    start, end = lo or _EARLIEST, hi or date.today()
    if start >= end:
        raise ArchiveError(f"The PACS holds {SEARCH_PAGE} or more studies on {start} alone; narrow the query "
                           "with description=... or ask for a larger page.")
    mid = start + (end - start) // 2
    found = {h.study_instance_uid: h for h in _search_range(client, query, start, mid)}
    for h in _search_range(client, query, mid + timedelta(days=1), end):
        found.setdefault(h.study_instance_uid, h)
    return list(found.values())


def plan_series(client: PacsClient, query: ArchiveQuery) -> list[PlannedSeries]:
    """The series a query selects, newest study first, then by series number.

    Args:
        client: the driver's PACS client.
        query: :class:`ArchiveQuery`.

    Returns:
        Every series of every matching study (non-CT ones included: the run records them as
        ``not_ct``), at most ``query.max_series``.

    Raises:
        core.pacs.dicomweb.PacsUnreachableError, PacsAuthError, PacsRequestError: the searches failed.
        ArchiveError: one day holds more studies than a search page.
    """
    hits = _search_range(client, query, query.date_from, query.date_to)
    hits.sort(key=lambda h: (h.study_date is None, -(h.study_date or date.min).toordinal(), study_key_for(
        h.study_instance_uid)))
    wanted = query.description.strip().lower()
    out: list[PlannedSeries] = []
    for hit in hits:
        try:
            series = client.search_series(hit.study_instance_uid)
        except StudyNotFoundError:
            continue  # deleted between the two searches
        if wanted and wanted not in hit.description.lower():
            series = [s for s in series if wanted in s.description.lower()]
        study_key = study_key_for(hit.study_instance_uid)
        for s in series:
            desc = deidentified_description(s.description, hit.patient_name, hit.patient_id) or ""
            out.append(PlannedSeries(study_uid=hit.study_instance_uid, series_uid=s.series_instance_uid,
                                     study_key=study_key, series_key=study_key_for(s.series_instance_uid),
                                     modality=(s.modality or "").upper(), description=desc,
                                     n_instances=s.n_instances))
            if query.max_series is not None and len(out) >= query.max_series:
                return out
    return out


# ------------------------------------------------------------------------------------ the worker
@dataclass(frozen=True)
class ModelRef:
    """A model of a run: registry id, sha256 of its file (as recorded at the start), kind."""

    id: str
    sha256: str
    kind: str = SLICE_CLASSIFIER


@dataclass(frozen=True)
class WorkItem:
    """One series for a worker: where to get it, its keys, and the models still to score it with."""

    study_uid: str = field(repr=False)
    series_uid: str = field(repr=False)
    study_key: str
    series_key: str
    description: str
    models: tuple[ModelRef, ...]


@dataclass(frozen=True)
class ModelOutcome:
    """One model's result on a series, or its failure (``failure`` an ArchiveFailure value)."""

    model_id: str
    model_sha256: str = ""
    failure: str | None = None
    message: str = ""
    result: dict[str, Any] | None = None
    finding: str | None = None
    series_score: float | None = None
    is_ood: bool | None = None
    n_nodules: int | None = None
    score_ms: float | None = None


@dataclass(frozen=True)
class SeriesOutcome:
    """What a worker sends back for one :class:`WorkItem` (no pixel data, no UID).

    ``failure``/``message``: the series could not be retrieved or read (then every model failed
    with it). Times in ms: ``retrieve_ms`` (WADO-RS until the last instance arrived), ``decode_ms``
    (``core.imaging`` on those instances).
    """

    series_key: str
    worker: str
    models: tuple[ModelOutcome, ...] = ()
    failure: str | None = None
    message: str = ""
    retrieve_ms: float | None = None
    decode_ms: float | None = None
    n_slices: int | None = None
    description: str = ""


class DetectorUnavailableError(Exception):
    """``core.nodules.detect_nodules`` cannot be imported on this worker."""


#: Nodule detectors loaded in this worker process, by registry id (one load per worker).
_DETECTORS: dict[str, Any] = {}


def detect_nodules_adapter(series: Any, model_id: str) -> list[Any]:
    """``core.nodules.detect_nodules`` with the registry's detector ``model_id`` (loaded once per
    worker process with ``core.nodules.load_detector``), imported when first needed.

    Returns:
        list of ``core.nodules.Nodule``.

    Raises:
        DetectorUnavailableError: the detector is not installed in this LungReview.
        core.nodules.NotAVolumeError: the series is not a CT volume the detector can scan.
    """
    try:
        from core.nodules import detect_nodules, load_detector
    except ImportError as exc:
        raise DetectorUnavailableError(f"nodule detector not available on this worker ({exc}); install a "
                                       "LungReview with core.nodules.detect_nodules on every node") from exc
    if model_id not in _DETECTORS:
        _DETECTORS[model_id] = load_detector(model_id)
    return list(detect_nodules(series, model=_DETECTORS[model_id]))


def _failure_of(exc: BaseException) -> tuple[str, str]:
    """(ArchiveFailure value, message) for an error raised while retrieving or reading a series."""
    for kind, failure in ((NotCTError, ArchiveFailure.NOT_CT), (SeriesTooLargeError, ArchiveFailure.TOO_LARGE),
                          (StudyNotFoundError, ArchiveFailure.NOT_FOUND),
                          (PacsUnreachableError, ArchiveFailure.PACS_UNREACHABLE),
                          (PacsAuthError, ArchiveFailure.PACS_AUTH), (PacsError, ArchiveFailure.PACS_ERROR),
                          (ImagingError, ArchiveFailure.CORRUPT)):
        if isinstance(exc, kind):
            msg = str(exc)
            if failure == ArchiveFailure.CORRUPT:
                msg = f"The series could not be read as a CT image: {msg}"
            return failure.value, msg
    return ArchiveFailure.WORKER_ERROR.value, f"Unexpected error in the worker ({type(exc).__name__}: {exc})."


class ScoringWorker:
    """A Ray actor's body: retrieves series from the PACS and scores them, keeping its models loaded.

    Created by :class:`ArchiveService` with ``ray.remote(num_cpus=1)(ScoringWorker)``. The PACS
    credentials come from this process's environment (``LUNGREVIEW_DICOMWEB_USER`` /
    ``LUNGREVIEW_DICOMWEB_PASSWORD``: embedded Ray inherits the driver's; on a cluster, set them
    where ``ray start`` runs), never from the driver, so they are not in Ray's task records.

    Args:
        pacs_url: the DICOMweb root. timeout_s: per request (default the setting).
    """

    def __init__(self, pacs_url: str, timeout_s: float | None = None) -> None:
        self.pacs = PacsClient(pacs_url, os.environ.get("LUNGREVIEW_DICOMWEB_USER") or None,
                               os.environ.get("LUNGREVIEW_DICOMWEB_PASSWORD") or None, timeout_s=timeout_s)
        self.name = f"{socket.gethostname()}:{os.getpid()}"[:64]
        self._models: dict[str, Any] = {}

    def ready(self) -> str:
        """``host:pid`` of this worker (the run records it with each result)."""
        return self.name

    def warm(self, models: Sequence[ModelRef]) -> str:
        """Load the slice classifiers now (errors are left for :meth:`score` to report). Returns ``host:pid``."""
        for ref in models:
            if ref.kind == SLICE_CLASSIFIER:
                try:
                    self._predictor(ref)
                except Exception:  # noqa: BLE001 - reported per series by score()
                    log.warning("worker %s: model %s did not load", self.name, ref.id)
        return self.name

    def _predictor(self, ref: ModelRef) -> Any:
        if ref.id not in self._models:
            from core.inference import Predictor
            from core.registry import load_model

            self._models[ref.id] = Predictor(load_model(ref.id))
        return self._models[ref.id]

    def score(self, item: WorkItem) -> SeriesOutcome:
        """Retrieve, read and score one series with the item's models.

        Returns:
            :class:`SeriesOutcome`; every failure is in it (this method does not raise).
        """
        t0 = time.perf_counter()
        last = [t0]

        def arrived(done: int, total: int | None) -> None:
            last[0] = time.perf_counter()

        try:
            got = self.pacs.retrieve_series(item.study_uid, item.series_uid, progress=arrived)
            series = self._pick(got.result, item)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a typed outcome
            failure, message = _failure_of(exc)
            if isinstance(exc, _KeyMismatch):
                failure, message = ArchiveFailure.KEY_MISMATCH.value, str(exc)
            return SeriesOutcome(series_key=item.series_key, worker=self.name, failure=failure, message=message,
                                 retrieve_ms=(last[0] - t0) * 1000.0)
        t_read = time.perf_counter()
        outcomes = tuple(self._score_one(series, ref) for ref in item.models)
        return SeriesOutcome(series_key=item.series_key, worker=self.name, models=outcomes,
                             retrieve_ms=(last[0] - t0) * 1000.0, decode_ms=(t_read - last[0]) * 1000.0,
                             n_slices=len(series.slices), description=series.description or item.description)

    @staticmethod
    def _pick(result: Any, item: WorkItem) -> Any:
        """The retrieved series with the planned key (core.imaging may split a PACS series)."""
        mine = [s for s in result.series if s.series_key == item.series_key]
        if mine:
            return max(mine, key=lambda s: len(s.slices))
        if result.series and all(s.study_key != item.study_key for s in result.series):
            raise _KeyMismatch("This worker's pseudonymous keys differ from the driver's: its study-key secret "
                               "(LUNGREVIEW_STUDY_KEY) is not the driver's. Set the same LUNGREVIEW_STUDY_KEY on "
                               "every node, then resume the run.")
        raise ImagingError("the retrieved instances did not form the planned series")

    def _score_one(self, series: Any, ref: ModelRef) -> ModelOutcome:
        t0 = time.perf_counter()
        try:
            if ref.kind == NODULE_DETECTOR:
                return self._detect(series, ref, t0)
            predictor = self._predictor(ref)
            if ref.sha256 and predictor.card.sha256 != ref.sha256:
                return ModelOutcome(ref.id, predictor.card.sha256, ArchiveFailure.MODEL_ERROR.value,
                                    f"This worker's registry holds another file of model {ref.id} (sha256 "
                                    f"{predictor.card.sha256[:12]}..., the run's is {ref.sha256[:12]}...): install "
                                    "the same registry on every node.")
            r = predictor.analyse_series(series)
        except Exception as exc:  # noqa: BLE001 - the model's failure, typed
            return ModelOutcome(ref.id, ref.sha256, ArchiveFailure.MODEL_ERROR.value,
                                f"Model {ref.id} could not score the series ({type(exc).__name__}: {exc}).")
        pos = list(r.class_names).index(r.suspicious_class)
        top = r.probabilities[r.top_indices] if r.top_indices else r.probabilities
        mean_row = [round(float(v), 6) for v in top.mean(axis=0)]
        result = {"kind": SLICE_CLASSIFIER, "series_score": float(r.series_score), "finding": r.finding.value,
                  "is_ood": bool(r.is_ood), "most_suspicious_index": int(r.most_suspicious_index),
                  "top_indices": [int(i) for i in r.top_indices], "probabilities": mean_row,
                  "class_names": list(r.class_names), "thresholds": dict(predictor.card.thresholds),
                  "suspicious_class": r.suspicious_class, "suspicious_column": pos, "n_slices": len(series.slices),
                  "n_ood_slices": int(r.ood.sum()), "runtime": r.runtime, "latency_ms": float(r.latency_ms)}
        return ModelOutcome(ref.id, predictor.card.sha256, result=result, finding=r.finding.value,
                            series_score=min(1.0, max(0.0, float(r.series_score))), is_ood=bool(r.is_ood),
                            score_ms=(time.perf_counter() - t0) * 1000.0)

    def _detect(self, series: Any, ref: ModelRef, t0: float) -> ModelOutcome:
        try:
            nodules = detect_nodules_adapter(series, ref.id)
        except DetectorUnavailableError as exc:
            return ModelOutcome(ref.id, ref.sha256, ArchiveFailure.DETECTOR_UNAVAILABLE.value, str(exc))
        except Exception as exc:  # noqa: BLE001
            from core.nodules import NotAVolumeError

            if isinstance(exc, NotAVolumeError):
                return ModelOutcome(ref.id, ref.sha256, ArchiveFailure.NOT_A_VOLUME.value, str(exc))
            return ModelOutcome(ref.id, ref.sha256, ArchiveFailure.MODEL_ERROR.value,
                                f"The nodule detector {ref.id} failed ({type(exc).__name__}: {exc}).")
        result = {"kind": NODULE_DETECTOR, "nodules": [n.to_dict() for n in nodules], "n_slices": len(series.slices)}
        return ModelOutcome(ref.id, ref.sha256, result=result, n_nodules=len(nodules),
                            score_ms=(time.perf_counter() - t0) * 1000.0)


class _KeyMismatch(Exception):
    """The worker's study keys differ from the driver's (another LUNGREVIEW_STUDY_KEY)."""


# ------------------------------------------------------------------------------------------- Ray
def connect_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Connect to Ray once per process: the cluster at ``address`` (default the setting), else an
    embedded Ray on this machine with ``num_cpus`` (default ``min(2, CPUs)``).

    Returns:
        "cluster <address>", "embedded (<n> CPUs)" or "already connected".

    Raises:
        ArchiveError: Ray is not installed, or no cluster answers at the address.
    """
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dependency
        raise ArchiveError("Ray is not installed: pip install -r requirements.txt") from exc
    if ray.is_initialized():
        return "already connected"
    address = address if address is not None else get_settings().ray_address
    if address:
        check_ray_address(address)
    try:
        if address:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            return f"cluster {address}"
        cpus = num_cpus or min(EMBEDDED_MAX_CPUS, os.cpu_count() or 1)
        # address="local": always a new Ray on this machine, never a stale cluster found in /tmp/ray
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
        return f"embedded ({cpus} CPUs)"
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ArchiveError(f"Ray could not start or join {'the cluster at ' + address if address else 'locally'} "
                           f"({type(exc).__name__}: {exc}). Check LUNGREVIEW_RAY_ADDRESS and that `ray start` ran "
                           "there; a cluster started by `ray start` (Ray 2.60) wants token authentication: set "
                           "RAY_AUTH_MODE=token and the cluster's token here too (docs/archive.md).") from exc


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a Ray address (``ray.init`` itself waits minutes).

    Args:
        address: ``host:port`` (the head's GCS port, 6379 by default), ``ray://host:port`` (Ray
            Client), or ``auto`` (this machine's running cluster; not checked here).

    Raises:
        ArchiveError: the address is malformed, or no TCP connection opens within ``timeout_s``.
    """
    text = address.strip()
    if text == "auto":
        return
    hostport = text.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ArchiveError(f"LUNGREVIEW_RAY_ADDRESS must be host:port (e.g. ray-head:6379) or auto, got {address!r}.")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ArchiveError(f"No Ray cluster answers at {hostport} ({exc.strerror or type(exc).__name__}). Start it "
                           "with `ray start --head` there (docs/archive.md), or unset LUNGREVIEW_RAY_ADDRESS to "
                           "run Ray on this machine.") from exc


class _Pool:
    """The run's Ray actors: ``n`` :class:`ScoringWorker`, replaced when one dies."""

    def __init__(self, n: int, pacs_url: str, timeout_s: float | None, models: Sequence[ModelRef]) -> None:
        import ray

        self._cls = ray.remote(num_cpus=1, max_restarts=0)(ScoringWorker)
        self._args = (pacs_url, timeout_s)
        self._models = tuple(models)
        self.actors = [self._new() for _ in range(n)]
        self.replaced = 0
        self.key: tuple = ()

    def _new(self) -> Any:
        actor = self._cls.remote(*self._args)
        actor.warm.remote(self._models)  # runs first on the actor; the scores queue behind it
        return actor

    def replace(self, slot: int, dead: Any) -> None:
        """A new actor in ``slot`` unless ``dead`` was already replaced there."""
        if self.actors[slot] is dead:
            self.actors[slot] = self._new()
            self.replaced += 1

    def close(self) -> None:
        import ray

        for actor in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor)


# ------------------------------------------------------------------------------------- progress
@dataclass(frozen=True)
class Progress:
    """Where a run stands, after every series (and at each change of status).

    Attributes:
        run_id: the run. status: "running", "paused" or "finished"; message: why paused ("" else).
        total: series planned. done: series every model scored. failed: series with a final
            failure for some model (permanent, or out of attempts). left: the rest.
        in_flight: series at the workers now. failures: final failures by reason (per series and model).
        per_minute: series finished (done or failed) per minute since this driver started, None
            before the first. eta_s: ``left / per_minute`` in seconds, None when unknown.
        worker: ``host:pid`` of the worker that sent the last result ("" before).
        workers: workers in the pool. replaced: workers replaced after dying.
    """

    run_id: int
    status: str
    message: str
    total: int
    done: int
    failed: int
    left: int
    in_flight: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    per_minute: float | None = None
    eta_s: float | None = None
    worker: str = ""
    workers: int = 0
    replaced: int = 0

    def line(self) -> str:
        """One line for a terminal or a caption."""
        rate = f"{self.per_minute:.1f} series/min" if self.per_minute else "- series/min"
        eta = f", about {self.eta_s / 60:.0f} min left" if self.eta_s is not None and self.left else ""
        text = (f"run {self.run_id} {self.status}: {self.done} done, {self.failed} failed, {self.left} left of "
                f"{self.total} ({rate}{eta})")
        return text + (f". {self.message}" if self.message else "")


ProgressCallback = Callable[[Progress], bool | None]


class _Tally:
    """Per series and model: "done", "final" (failed for good) or "pending"; and the rates."""

    def __init__(self, plan: Sequence[PlannedSeries], models: Sequence[ModelRef], rows: Iterable[Any],
                 max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.state: dict[str, dict[str, str]] = {p.series_key: {m.id: "pending" for m in models} for p in plan}
        self.attempts: dict[tuple[str, str], int] = {}
        self.failures: dict[tuple[str, str], str] = {}
        for row in rows:
            if row.series_key not in self.state or row.model_id not in self.state[row.series_key]:
                continue
            self.attempts[(row.series_key, row.model_id)] = int(row.attempts)
            if row.status == ArchiveResultStatus.DONE:
                self.state[row.series_key][row.model_id] = "done"
            else:
                self.failures[(row.series_key, row.model_id)] = row.failure
                if self.final_failure(row.failure, int(row.attempts)):
                    self.state[row.series_key][row.model_id] = "final"
        self.started = time.monotonic()
        self.finished_here = 0

    def final_failure(self, failure: str, attempts: int) -> bool:
        return failure in PERMANENT_ARCHIVE_FAILURES or attempts >= self.max_attempts

    def pending(self, series_key: str) -> list[str]:
        return [m for m, st in self.state[series_key].items() if st == "pending"]

    def series_state(self, series_key: str) -> str:
        states = set(self.state[series_key].values())
        if "pending" in states:
            return "left"
        return "failed" if "final" in states else "done"

    def progress(self, run_id: int, status: str, message: str, in_flight: int, worker: str, workers: int,
                 replaced: int) -> Progress:
        counts = {"done": 0, "failed": 0, "left": 0}
        for key in self.state:
            counts[self.series_state(key)] += 1
        failures: dict[str, int] = {}
        for (key, model), reason in self.failures.items():
            if self.state[key][model] == "final":
                failures[reason] = failures.get(reason, 0) + 1
        minutes = (time.monotonic() - self.started) / 60.0
        rate = self.finished_here / minutes if self.finished_here and minutes > 0 else None
        eta = counts["left"] / rate * 60.0 if rate else None
        return Progress(run_id=run_id, status=status, message=message, total=len(self.state), done=counts["done"],
                        failed=counts["failed"], left=counts["left"], in_flight=in_flight, failures=failures,
                        per_minute=rate, eta_s=eta, worker=worker, workers=workers, replaced=replaced)


# -------------------------------------------------------------------------------------- service
def _card(model_id: str) -> ModelRef:
    from core.registry import RegistryError, get_card

    try:
        card = get_card(model_id)
    except RegistryError as exc:
        raise ArchiveError(str(exc)) from exc
    return ModelRef(id=card.id, sha256=card.sha256, kind=str(getattr(card, "kind", SLICE_CLASSIFIER)))


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class ArchiveService:
    """Archive runs over one database and one PACS.

    Args:
        factory: ``sessionmaker`` of the LungReview database (``db.session``).
        pacs: the driver's PACS client (searches and the "is it back?" check); its URL is
            passed to the workers, which make their own clients. None for reading runs only
            (:meth:`status`, :meth:`results_table`, :meth:`compare`).
        timeout_s: the workers' per-request PACS timeout (default the setting).
        keep_workers: keep the Ray workers (and their loaded models) between runs of this
            service (e.g. a long-lived page process, the tests) until :meth:`close`; default: each
            run starts its own and ends them.
    """

    def __init__(self, factory: sessionmaker[Session], pacs: PacsClient | None = None, *,
                 timeout_s: float | None = None, keep_workers: bool = False) -> None:
        self.factory = factory
        self._pacs = pacs
        self.timeout_s = timeout_s
        self.keep_workers = keep_workers
        self._pool: _Pool | None = None

    @property
    def pacs(self) -> PacsClient:
        """The PACS client. Raises ArchiveError when the service was made without one."""
        if self._pacs is None:
            raise ArchiveError("No PACS: set LUNGREVIEW_DICOMWEB_URL (and LUNGREVIEW_DICOMWEB_USER / _PASSWORD).")
        return self._pacs

    def close(self) -> None:
        """End the kept Ray workers (see ``keep_workers``)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _workers(self, n: int, models: Sequence[ModelRef]) -> _Pool:
        """A pool of ``n`` workers for these models: the kept one when it fits, else a new one."""
        key = (self.pacs.url, self.timeout_s, tuple(models), n)
        if self._pool is not None and self._pool.key == key:
            return self._pool
        self.close()
        pool = _Pool(n, self.pacs.url, self.timeout_s, models)
        pool.key = key
        if self.keep_workers:
            self._pool = pool
        return pool

    def _release(self, pool: _Pool | None) -> None:
        if pool is not None and pool is not self._pool:
            pool.close()

    # -------------------------------------------------------------------------------- start
    def start(self, query: ArchiveQuery, model_ids: Sequence[str], *, user_id: int | None = None,
              max_attempts: int | None = None) -> int:
        """Record a new run (status ``paused``, "not started yet") and return its id; :meth:`run` scores it.

        Raises:
            ArchiveError: a model is not in the registry. db.repository errors: see
            ``create_run`` (no model, a role other than lead/admin...).
        """
        models = [_card(m.strip()) for m in model_ids if m.strip()]
        attempts = int(max_attempts or get_settings().archive_max_attempts)
        with self.factory.begin() as s:
            run = archive_repo.create_run(s, query=query.to_dict(), models=[asdict(m) for m in models],
                                          max_attempts=attempts, created_by=user_id)
            archive_repo.set_run_status(s, run.id, ArchiveRunStatus.PAUSED, "not started yet")
            return int(run.id)

    # ---------------------------------------------------------------------------------- run
    def run(self, run_id: int, *, progress: ProgressCallback | None = None, workers: int | None = None,
            poll_s: float = 10.0, max_pause_s: float | None = None, force: bool = False) -> Progress:
        """Score a run (new or resumed) until every series has a final result, the PACS stays
        down longer than ``max_pause_s``, or ``progress`` asks to stop.

        Series already done for a model are skipped; failed ones are tried again while they have
        attempts left (transient failures only).

        Args:
            run_id: from :meth:`start`.
            progress: called with a :class:`Progress` after each series and at each change of
                status; returning True stops the run after the series in flight.
            workers: Ray workers (default ``LUNGREVIEW_ARCHIVE_WORKERS``, else one per CPU of Ray).
            poll_s: seconds between checks of a PACS that is down.
            max_pause_s: give up waiting for the PACS after this long (the run stays ``paused``);
                None waits until it answers.
            force: resume even when the run looks driven by another process (recent heartbeat).

        Returns:
            The last :class:`Progress` (status ``finished`` or ``paused``).

        Raises:
            RunBusyError: another driver's heartbeat is recent (pass ``force``).
            ArchiveError: a model's file changed since the run started; Ray cannot start.
            db.repository.NotFoundError: no such run.
        """
        with self.factory.begin() as s:
            run = archive_repo.get_run(s, run_id)
            age = (datetime.now(UTC) - _utc(run.heartbeat_at)).total_seconds()
            if run.status == ArchiveRunStatus.RUNNING and age < STALE_AFTER_S and not force:
                raise RunBusyError(f"Run {run_id} is being scored by another process (last sign of life {age:.0f} s "
                                   "ago). Wait for it, or resume with --force if that process is gone.")
            query = ArchiveQuery.from_dict(run.query)
            models = [ModelRef(**m) for m in run.models]
            max_attempts = int(run.max_attempts)
        for m in models:
            now = _card(m.id)
            if m.sha256 and now.sha256 != m.sha256:
                raise ArchiveError(f"The file of model {m.id} changed since run {run_id} started (sha256 "
                                   f"{now.sha256[:12]}... instead of {m.sha256[:12]}...): its results would mix two "
                                   "models. Start a new run.")
        with self.factory.begin() as s:
            archive_repo.set_run_status(s, run_id, ArchiveRunStatus.RUNNING, "planning: searching the PACS")
        driver = _Driver(self, run_id, models, max_attempts, progress, poll_s, max_pause_s)
        try:
            return driver.drive(query, workers)
        except BaseException:
            driver.leave("stopped by an error or an interrupt; resume it to continue")
            raise

    # ------------------------------------------------------------------------------ reading
    def status(self, run_id: int) -> dict[str, Any]:
        """The run as stored: id, query, models, status, message, dates and counts of rows.

        Returns:
            dict with ``run_id, status, message, query, models, n_series, created_at,
            heartbeat_at, finished_at, rows`` ({model: {"done": n, "failed": n}}) and
            ``failures`` ({model: {reason: n}}).

        Raises:
            db.repository.NotFoundError: no such run.
        """
        with self.factory.begin() as s:
            run = archive_repo.get_run(s, run_id)
            rows: dict[str, dict[str, int]] = {m["id"]: {"done": 0, "failed": 0} for m in run.models}
            failures: dict[str, dict[str, int]] = {m["id"]: {} for m in run.models}
            for r in archive_repo.results_of(s, run_id):
                rows.setdefault(r.model_id, {"done": 0, "failed": 0})[r.status] += 1
                if r.failure:
                    f = failures.setdefault(r.model_id, {})
                    f[r.failure] = f.get(r.failure, 0) + 1
            return {"run_id": run.id, "status": run.status, "message": run.message, "query": run.query,
                    "models": run.models, "n_series": run.n_series, "created_at": run.created_at.isoformat(),
                    "heartbeat_at": run.heartbeat_at.isoformat(),
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    "rows": rows, "failures": failures}

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest runs, newest first: ``run_id, status, message, n_series, models`` (ids),
        ``query`` and ``created_at`` (plain values, for pages and the command line)."""
        with self.factory.begin() as s:
            return [{"run_id": r.id, "status": r.status, "message": r.message, "n_series": r.n_series,
                     "models": [m["id"] for m in r.models], "query": dict(r.query), "created_at": r.created_at}
                    for r in archive_repo.list_runs(s, limit)]

    def results_table(self, run_id: int) -> pd.DataFrame:
        """Every row of the run as a DataFrame (the columns ``core.stats.archive`` reads, and the
        status, failure, message, attempts and stage times).

        Raises:
            db.repository.NotFoundError: no such run.
        """
        with self.factory.begin() as s:
            run = archive_repo.get_run(s, run_id)
            kinds = {m["id"]: m.get("kind", SLICE_CLASSIFIER) for m in run.models}
            records = []
            for r in archive_repo.results_of(s, run_id):
                res = r.result or {}
                records.append({
                    "study_key": r.study_key, "series_key": r.series_key, "model_id": r.model_id,
                    "kind": kinds.get(r.model_id, SLICE_CLASSIFIER), "status": r.status, "failure": r.failure,
                    "message": r.message, "attempts": r.attempts, "finding": r.finding,
                    "series_score": r.series_score, "is_ood": r.is_ood, "n_nodules": r.n_nodules,
                    "probabilities": res.get("probabilities"), "class_names": res.get("class_names"),
                    "thresholds": res.get("thresholds"), "most_suspicious_index": res.get("most_suspicious_index"),
                    "description": r.description, "n_slices": r.n_slices, "retrieve_ms": r.retrieve_ms,
                    "decode_ms": r.decode_ms, "score_ms": r.score_ms, "worker": r.worker,
                    "history": list(r.history or []), "updated_at": r.updated_at})
        cols = ["study_key", "series_key", "model_id", "kind", "status", "failure", "message", "attempts", "finding",
                "series_score", "is_ood", "n_nodules", "probabilities", "class_names", "thresholds",
                "most_suspicious_index", "description", "n_slices", "retrieve_ms", "decode_ms", "score_ms", "worker",
                "history", "updated_at"]
        return pd.DataFrame(records, columns=cols)

    def resolve_reference(self, reference: Reference) -> tuple[dict[str, str], list[str]]:
        """Study key -> finding: the study keys as given, and the accession numbers looked up in
        the PACS (QIDO-RS; study keys made from the answers, the numbers never stored).

        Returns:
            (mapping, notes): notes say which accession numbers the PACS did not know or gave
            several studies for (all of those get the finding).

        Raises:
            core.pacs.dicomweb.PacsError: the PACS cannot be searched.
        """
        out = dict(reference.by_study_key)
        notes: list[str] = []
        for acc, finding in reference.by_accession.items():
            hits = self.pacs.search_studies(accession_number=acc, modality="")
            if not hits:
                notes.append(f"accession number on reference line for a {finding} study: not found in the PACS")
            elif len(hits) > 1:
                notes.append(f"one accession number matches {len(hits)} studies; all were given its finding")
            for h in hits:
                out.setdefault(study_key_for(h.study_instance_uid), finding)
        return out, notes

    def compare(self, run_id: int, reference: dict[str, str] | None = None, *, top: int = 20, n_boot: int = 1000,
                seed: int = 0) -> ArchiveComparison:
        """``core.stats.archive.compare`` on the run's done rows (reference: study key -> finding)."""
        table = self.results_table(run_id)
        done = table[table["status"] == ArchiveResultStatus.DONE.value]
        return compare(done, reference, top=top, n_boot=n_boot, seed=seed)

    def case_links(self, series_keys: Iterable[str]) -> dict[str, int]:
        """``?case=<series id>`` of each series key that Read a study can open from the study store.

        A series qualifies when the reading tables know it (it was uploaded or opened from the
        PACS before) and the study store still holds its images; the others must be opened from
        the PACS.
        """
        from core import store

        out: dict[str, int] = {}
        with self.factory.begin() as s:
            ids = archive_repo.series_ids_by_key(s, series_keys)
            from db.repository import get_series, get_study

            for key, sid in ids.items():
                content_hash = get_study(s, get_series(s, sid).study_id).content_hash
                try:
                    if store.has_series(store.store_key(content_hash, key)):
                        out[key] = sid
                except (store.StoreError, OSError):
                    continue
        return out


class _Driver:
    """One driving of a run (the loop of :meth:`ArchiveService.run`)."""

    def __init__(self, service: ArchiveService, run_id: int, models: list[ModelRef], max_attempts: int,
                 progress: ProgressCallback | None, poll_s: float, max_pause_s: float | None) -> None:
        self.svc = service
        self.run_id = run_id
        self.models = {m.id: m for m in models}
        self.max_attempts = max_attempts
        self.callback = progress
        self.poll_s = float(poll_s)
        self.max_pause_s = max_pause_s
        self.tally: _Tally | None = None
        self.pool: _Pool | None = None
        self.status = ArchiveRunStatus.RUNNING.value
        self.message = ""
        self.last_worker = ""
        self.in_flight: dict[Any, tuple[int, Any, WorkItem]] = {}
        self.stop_requested = False
        self._beat = 0.0

    # ------------------------------------------------------------------------------ helpers
    def _set(self, status: ArchiveRunStatus, message: str = "", n_series: int | None = None) -> None:
        self.status, self.message = status.value, message
        with self.svc.factory.begin() as s:
            archive_repo.set_run_status(s, self.run_id, status, message, n_series=n_series)
        self._beat = time.monotonic()

    def _heartbeat(self) -> None:
        if time.monotonic() - self._beat >= HEARTBEAT_S:
            with self.svc.factory.begin() as s:
                archive_repo.touch_run(s, self.run_id)
            self._beat = time.monotonic()

    def _notify(self) -> None:
        if self.tally is None or self.callback is None:
            return
        p = self.tally.progress(self.run_id, self.status, self.message, len(self.in_flight), self.last_worker,
                                len(self.pool.actors) if self.pool else 0, self.pool.replaced if self.pool else 0)
        if self.callback(p):
            self.stop_requested = True

    def _pacs_answers(self) -> bool:
        """True when the PACS answers a one-study search: tells "this series timed out" from "the PACS is down"."""
        try:
            self.svc.pacs.search_studies(modality="", limit=1)
            return True
        except PacsUnreachableError:
            return False
        except PacsError:
            return True  # it answered, if only to refuse

    def leave(self, why: str) -> None:
        """Mark the run paused (after an error or interrupt), if it was not finished."""
        try:
            if self.status == ArchiveRunStatus.RUNNING.value:
                self._set(ArchiveRunStatus.PAUSED, why)
        except Exception:  # noqa: BLE001 - best effort on the way out
            log.exception("archive run %s: could not record the pause", self.run_id)
        self.svc._release(self.pool)
        self.pool = None

    def _wait_for_pacs(self, what: str) -> bool:
        """Pause until the PACS answers; False when ``max_pause_s`` passed or a stop was asked."""
        since = datetime.now(UTC).strftime("%H:%M:%S UTC")
        self._set(ArchiveRunStatus.PAUSED,
                  f"The PACS at {self.svc.pacs.url} does not answer ({what}) since {since}: the run is paused and "
                  f"continues by itself when the PACS answers (checked every {self.poll_s:g} s); stopped meanwhile, "
                  f"continue it with `lungreview-archive resume {self.run_id}`.")
        self._notify()
        t0 = time.monotonic()
        while not self.stop_requested:
            if self.max_pause_s is not None and time.monotonic() - t0 > self.max_pause_s:
                return False
            time.sleep(self.poll_s)
            self._heartbeat()
            if self._pacs_answers():
                self._set(ArchiveRunStatus.RUNNING, "")
                self._notify()
                return True
            self._notify()
        return False

    # --------------------------------------------------------------------------------- plan
    def _plan(self, query: ArchiveQuery) -> list[PlannedSeries] | None:
        while True:
            try:
                return plan_series(self.svc.pacs, query)
            except PacsUnreachableError:
                if not self._wait_for_pacs("searching for the series"):
                    return None

    def _record_not_ct(self, plan: Sequence[PlannedSeries]) -> None:
        with self.svc.factory.begin() as s:
            for p in plan:
                if p.modality and p.modality != "CT":
                    for m in self.models.values():
                        if archive_repo.result_for(s, self.run_id, p.series_key, m.id) is not None:
                            continue  # recorded when the run was planned before
                        archive_repo.record_failure(
                            s, run_id=self.run_id, study_key=p.study_key, series_key=p.series_key, model_id=m.id,
                            failure=ArchiveFailure.NOT_CT, description=p.description, model_sha256=m.sha256,
                            message=f"This series is {p.modality}, not CT: LungReview scores CT series only.")

    # -------------------------------------------------------------------------------- drive
    def drive(self, query: ArchiveQuery, workers: int | None) -> Progress:
        plan = self._plan(query)
        if plan is None:
            return self._stop("paused")
        self._record_not_ct(plan)
        with self.svc.factory.begin() as s:
            rows = archive_repo.results_of(s, self.run_id)
            self.tally = _Tally(plan, list(self.models.values()), rows, self.max_attempts)
        self._set(ArchiveRunStatus.RUNNING, "", n_series=len(plan))
        by_key = {p.series_key: p for p in plan}
        queue: deque[WorkItem] = deque()
        for p in plan:
            pending = self.tally.pending(p.series_key)
            if pending:
                queue.append(WorkItem(study_uid=p.study_uid, series_uid=p.series_uid, study_key=p.study_key,
                                      series_key=p.series_key, description=p.description,
                                      models=tuple(self.models[m] for m in pending)))
        self._notify()
        if queue and not self.stop_requested:
            settings = get_settings()
            connect_ray()
            n = workers or settings.archive_workers or self._cluster_cpus()
            self.pool = self.svc._workers(self._fit(n), list(self.models.values()))
            self._loop(queue, by_key)
        return self._stop("finished" if not any(self.tally.series_state(k) == "left" for k in by_key) else "paused")

    def _stop(self, how: str) -> Progress:
        self.svc._release(self.pool)
        self.pool = None
        if how == "finished":
            self._set(ArchiveRunStatus.FINISHED, "")
        elif self.status != ArchiveRunStatus.PAUSED.value or not self.message:
            self._set(ArchiveRunStatus.PAUSED, "stopped on request; resume it to continue" if self.stop_requested
                      else "stopped with series left; resume it to continue")
        else:
            self._set(ArchiveRunStatus.PAUSED, self.message)
        if self.tally is None:
            return Progress(self.run_id, self.status, self.message, 0, 0, 0, 0)
        p = self.tally.progress(self.run_id, self.status, self.message, 0, self.last_worker, 0, 0)
        if self.callback is not None:
            self.callback(p)
        return p

    @staticmethod
    def _cluster_cpus() -> int:
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _fit(self, n: int) -> int:
        """At most as many workers as Ray has free CPUs (an actor that cannot be placed would hold its
        series forever); the service's kept workers count as free for it.

        Raises:
            ArchiveError: Ray has no free CPU (another run's workers hold them all).
        """
        import ray

        kept = len(self.svc._pool.actors) if self.svc._pool is not None else 0
        free = int(ray.available_resources().get("CPU", 0)) + kept
        if free < 1:
            raise ArchiveError("Ray has no free CPU: another run's workers hold them all. Wait for it to finish, "
                               "or add machines to the cluster (`ray start --address=...`).")
        if n > free:
            log.warning("archive run %s: %d workers asked for, Ray has %d free CPUs; using %d", self.run_id, n, free,
                        free)
        return max(1, min(int(n), free))

    def _loop(self, queue: deque[WorkItem], by_key: dict[str, PlannedSeries]) -> None:
        import ray

        assert self.pool is not None
        pacs_down = False
        while queue or self.in_flight:
            self._heartbeat()
            if not pacs_down and not self.stop_requested:
                self._submit(queue)
            if not self.in_flight:
                if pacs_down:
                    if not self._wait_for_pacs("retrieving series"):
                        return
                    pacs_down = False
                    continue
                if self.stop_requested:
                    return
                continue
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                slot, actor, item = self.in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self.pool.replace(slot, actor)
                    outcome = SeriesOutcome(series_key=item.series_key, worker="", failure=ArchiveFailure.WORKER_DIED,
                                            message=f"The worker died while scoring this series ({type(exc).__name__}"
                                                    "); it was replaced and the series is tried again.")
                except ray.exceptions.RayError as exc:
                    outcome = SeriesOutcome(series_key=item.series_key, worker="", failure=ArchiveFailure.WORKER_ERROR,
                                            message=f"Ray could not run the scoring ({type(exc).__name__}: {exc}).")
                if outcome.failure == ArchiveFailure.PACS_UNREACHABLE and (pacs_down or not self._pacs_answers()):
                    pacs_down = True
                    queue.appendleft(item)  # not the series' fault: not counted as an attempt
                    if self.status != ArchiveRunStatus.PAUSED.value:
                        self._set(ArchiveRunStatus.PAUSED, f"The PACS at {self.svc.pacs.url} stopped answering; "
                                  "waiting for the series in flight, then for the PACS.")
                        self._notify()
                    continue
                retry = self._record(item, outcome)
                if retry:
                    queue.append(retry)
                self._notify()

    def _submit(self, queue: deque[WorkItem]) -> None:
        assert self.pool is not None
        load = {i: 0 for i in range(len(self.pool.actors))}
        for slot, _, _ in self.in_flight.values():
            load[slot] = load.get(slot, 0) + 1
        for slot, actor in enumerate(self.pool.actors):
            while queue and load[slot] < QUEUE_DEPTH:
                item = queue.popleft()
                self.in_flight[actor.score.remote(item)] = (slot, actor, item)
                load[slot] += 1

    def _record(self, item: WorkItem, outcome: SeriesOutcome) -> WorkItem | None:
        """Record one series' outcome; returns the item again (with the models to retry) or None."""
        assert self.tally is not None
        self.last_worker = outcome.worker or self.last_worker
        per_model = {m.model_id: m for m in outcome.models}
        before = self.tally.series_state(item.series_key)
        retry: list[ModelRef] = []
        try:
            with self.svc.factory.begin() as s:
                for ref in item.models:
                    m = per_model.get(ref.id)
                    common = {"run_id": self.run_id, "study_key": item.study_key, "series_key": item.series_key,
                              "model_id": ref.id, "worker": outcome.worker,
                              "description": outcome.description or item.description}
                    if m is not None and m.failure is None:
                        mismatch = bool(ref.sha256 and m.model_sha256 and m.model_sha256 != ref.sha256)
                        if not mismatch:
                            archive_repo.record_done(
                                s, **common, model_sha256=m.model_sha256, result=m.result or {}, finding=m.finding,
                                series_score=m.series_score, is_ood=m.is_ood, n_nodules=m.n_nodules,
                                n_slices=outcome.n_slices, retrieve_ms=outcome.retrieve_ms,
                                decode_ms=outcome.decode_ms, score_ms=m.score_ms)
                            self.tally.state[item.series_key][ref.id] = "done"
                            continue
                        failure, message = ArchiveFailure.MODEL_ERROR.value, "the worker scored with another model file"
                    else:
                        failure = m.failure if m is not None else str(outcome.failure or ArchiveFailure.WORKER_ERROR)
                        message = m.message if m is not None else outcome.message
                    row, _ = archive_repo.record_failure(s, **common, failure=failure, message=message,
                                                         model_sha256=ref.sha256, retrieve_ms=outcome.retrieve_ms,
                                                         decode_ms=outcome.decode_ms)
                    if row.status == ArchiveResultStatus.DONE:
                        self.tally.state[item.series_key][ref.id] = "done"
                        continue
                    key = (item.series_key, ref.id)
                    self.tally.attempts[key] = int(row.attempts)
                    self.tally.failures[key] = str(failure)
                    if self.tally.final_failure(str(failure), int(row.attempts)):
                        self.tally.state[item.series_key][ref.id] = "final"
                    else:
                        retry.append(ref)
        except sa_exc.IntegrityError:
            # another driver recorded the same (run, series, model) meanwhile: its row stands
            log.warning("archive run %s: a result was recorded by another driver; kept that one", self.run_id)
            return None
        if before == "left" and self.tally.series_state(item.series_key) != "left":
            self.tally.finished_here += 1
        return replace(item, models=tuple(retry)) if retry else None


# ------------------------------------------------------------------------------------------- CLI
def _factory() -> sessionmaker[Session]:
    from db.session import make_engine, make_session_factory

    return make_session_factory(make_engine(get_settings().db_url))


def _pacs_client(url: str | None) -> PacsClient:
    url = url or get_settings().dicomweb_url
    if not url:
        raise ArchiveError("No PACS: set LUNGREVIEW_DICOMWEB_URL (and LUNGREVIEW_DICOMWEB_USER / _PASSWORD) or pass "
                           "--pacs URL.")
    return PacsClient(url, os.environ.get("LUNGREVIEW_DICOMWEB_USER") or None,
                      os.environ.get("LUNGREVIEW_DICOMWEB_PASSWORD") or None)


def _tqdm_progress() -> tuple[ProgressCallback, Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="series", dynamic_ncols=True)
    seen = {"message": ""}

    def update(p: Progress) -> None:
        bar.total = p.total
        bar.n = p.done + p.failed
        rate = f"{p.per_minute:.1f}/min" if p.per_minute else "-"
        bar.set_postfix_str(f"done {p.done} failed {p.failed} left {p.left} {rate} {p.status}", refresh=False)
        bar.refresh()
        if p.message and p.message != seen["message"]:
            bar.write(p.message)
        seen["message"] = p.message

    return update, bar.close


def _user_id(factory: sessionmaker[Session], username: str | None) -> int | None:
    if not username:
        return None
    from sqlalchemy import select

    from db.schema import User

    with factory.begin() as s:
        uid = s.scalar(select(User.id).where(User.username == username))
    if uid is None:
        raise ArchiveError(f"There is no user {username!r}; give a lead's or admin's user name.")
    return int(uid)


def _drive(service: ArchiveService, run_id: int, args: argparse.Namespace) -> int:
    update, close = _tqdm_progress()
    try:
        p = service.run(run_id, progress=update, workers=args.workers, poll_s=args.poll_s,
                        max_pause_s=args.max_pause_s, force=getattr(args, "force", False))
    except KeyboardInterrupt:
        close()
        print(f"\nStopped. Run {run_id} is paused; continue with: lungreview-archive resume {run_id}", file=sys.stderr)
        return 130
    close()
    print(p.line())
    if p.failures:
        print("final failures (series x model): " + ", ".join(f"{k} {v}" for k, v in sorted(p.failures.items())))
    return 0 if p.status == ArchiveRunStatus.FINISHED else 3


def _print_table(title: str, df: pd.DataFrame | None) -> None:
    print(f"\n## {title}")
    if df is None or df.empty:
        print("(none)")
        return
    with pd.option_context("display.width", 160, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(df.to_string(index=False))


def bench(pacs: PacsClient, factory: sessionmaker[Session], query: ArchiveQuery, model_ids: Sequence[str],
          workers: int) -> dict[str, Any]:
    """Throughput of ``workers`` warm Ray workers on ``query``, and the cost per series by stage.

    The workers are started and their models loaded by a warm-up run on the first ``workers``
    series (not timed); the timed run then scores every series of the query as a fresh run.

    Returns:
        dict ``workers, run_id, series, failed, wall_s, series_per_min``, the medians over the
        series of ``retrieve_ms``, ``decode_ms``, ``slices`` and, per model, ``score_ms``; the
        sums ``worker_ms_per_series`` (retrieve + decode + every model's score: one worker's busy time
        per series); ``load_avg_before`` / ``load_avg_after`` (1-minute load average).
    """
    service = ArchiveService(factory, pacs, keep_workers=True)
    try:
        warm = service.start(replace(query, max_series=workers), model_ids, max_attempts=1)
        service.run(warm, workers=workers)
        load_before = os.getloadavg()[0]
        run_id = service.start(query, model_ids, max_attempts=1)
        t0 = time.perf_counter()
        p = service.run(run_id, workers=workers)
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
    finally:
        service.close()
    table = service.results_table(run_id)
    done = table[table["status"] == "done"]
    per_series = done.drop_duplicates("series_key")
    busy = done.groupby("series_key").agg(r=("retrieve_ms", "first"), d=("decode_ms", "first"), s=("score_ms", "sum"))

    def median(col: pd.Series) -> float | None:
        return round(float(col.median()), 1) if len(col) else None

    return {"workers": workers, "run_id": run_id, "series": int(p.done), "failed": int(p.failed),
            "wall_s": round(wall, 1), "series_per_min": round(60.0 * p.done / wall, 2) if wall > 0 else None,
            "retrieve_ms": median(per_series["retrieve_ms"]), "decode_ms": median(per_series["decode_ms"]),
            "score_ms": {m: median(g["score_ms"]) for m, g in done.groupby("model_id")},
            "worker_ms_per_series": median(busy["r"] + busy["d"] + busy["s"]),
            "slices": median(per_series["n_slices"]),
            "load_avg_before": round(load_before, 2), "load_avg_after": round(load_after, 2)}


def main(argv: Sequence[str] | None = None) -> int:
    """``lungreview-archive`` / ``python -m services.archive``: run, resume, status, list, compare, bench.

    Returns:
        0 on success (a run finished), 3 when a run stopped paused, 130 when interrupted, 2 on an error.
    """
    parser = argparse.ArgumentParser(prog="lungreview-archive", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def drive_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workers", type=int, default=None, help="Ray workers (default LUNGREVIEW_ARCHIVE_WORKERS, "
                       "else one per CPU Ray offers)")
        p.add_argument("--pacs", default=None, help="DICOMweb root (default LUNGREVIEW_DICOMWEB_URL)")
        p.add_argument("--poll-s", type=float, default=10.0, help="seconds between checks of a PACS that is down")
        p.add_argument("--max-pause-s", type=float, default=None, help="stop waiting for a PACS that is down "
                       "after this long (the run stays paused); default: wait")

    run_p = sub.add_parser("run", help="start a run: query the PACS and score every series with the models")
    run_p.add_argument("--query", nargs="+", default=[], metavar="KEY=VALUE",
                       help="from=YYYY-MM-DD to=YYYY-MM-DD description=TEXT max_series=N")
    run_p.add_argument("--models", required=True, help="registry ids, comma-separated")
    run_p.add_argument("--user", default=None, help="the lead's or admin's user name recorded with the run")
    run_p.add_argument("--max-attempts", type=int, default=None, help="default LUNGREVIEW_ARCHIVE_MAX_ATTEMPTS")
    drive_options(run_p)
    res_p = sub.add_parser("resume", help="continue a paused or interrupted run")
    res_p.add_argument("run_id", type=int)
    res_p.add_argument("--force", action="store_true", help="even if another process seems to drive it")
    drive_options(res_p)
    st_p = sub.add_parser("status", help="a run's status and counts")
    st_p.add_argument("run_id", type=int)
    sub.add_parser("list", help="the newest runs")
    cmp_p = sub.add_parser("compare", help="compare the models on a run")
    cmp_p.add_argument("run_id", type=int)
    cmp_p.add_argument("--reference", type=Path, default=None, help="CSV: study_key or accession, finding")
    cmp_p.add_argument("--pacs", default=None, help="for accession numbers in the reference")
    cmp_p.add_argument("--top", type=int, default=20)
    cmp_p.add_argument("--n-boot", type=int, default=1000)
    bench_p = sub.add_parser("bench", help="throughput with 1, 2, ... workers on a query (fresh runs each)")
    bench_p.add_argument("--query", nargs="*", default=[], metavar="KEY=VALUE")
    bench_p.add_argument("--models", required=True)
    bench_p.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    bench_p.add_argument("--pacs", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from db.repository import RepositoryError

    try:
        factory = _factory()
        if args.command == "list":
            with factory.begin() as s:
                for r in archive_repo.list_runs(s):
                    models = ",".join(m["id"] for m in r.models)
                    print(f"{r.id}\t{r.status}\t{r.n_series} series\t{models}\t{r.created_at:%Y-%m-%d %H:%M}\t{r.message}")
            return 0
        if args.command == "status":
            print(json.dumps(ArchiveService(factory).status(args.run_id), indent=2))
            return 0
        if args.command == "compare":
            ref = None
            if args.reference:
                reference = parse_reference_csv(args.reference.read_bytes())
                service = ArchiveService(factory, _pacs_client(args.pacs) if reference.by_accession else None)
                ref, notes = service.resolve_reference(reference)
                for n in notes:
                    print("note:", n, file=sys.stderr)
            else:
                service = ArchiveService(factory)
            c = service.compare(args.run_id, ref, top=args.top, n_boot=args.n_boot)
            _print_table("Series scores per model", c.scores)
            _print_table("Agreement between models (Cohen's kappa on the series finding)", c.kappa)
            _print_table("Nodules per series", c.nodules)
            if ref is not None:
                _print_table(f"Against the reference ({c.n_reference_studies} studies of the run)", c.accuracy)
            _print_table("Series where the models disagree most", c.disagreements)
            return 0
        pacs = _pacs_client(args.pacs)
        service = ArchiveService(factory, pacs)
        if args.command == "bench":
            models = [m for m in args.models.split(",") if m.strip()]
            query = ArchiveQuery.parse(args.query)
            for n in [int(w) for w in args.workers.split(",") if w.strip()]:
                print(json.dumps(bench(pacs, factory, query, models, n)))
            return 0
        if args.command == "run":
            run_id = service.start(ArchiveQuery.parse(args.query), args.models.split(","),
                                   user_id=_user_id(factory, args.user), max_attempts=args.max_attempts)
            print(f"Run {run_id} started (resume it with: lungreview-archive resume {run_id})", file=sys.stderr)
            return _drive(service, run_id, args)
        return _drive(service, args.run_id, args)
    except (ArchiveError, ArchiveStatsError, RepositoryError, PacsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
