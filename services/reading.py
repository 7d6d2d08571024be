"""The reading workflow, without Streamlit: read an upload within limits, analyse a series or reuse
the stored result, record the analysis, save a reader's read, list a reader's work.

Why it lives in ``services/``: it needs ``core`` (imaging limits, the registry's model card, the
series result of ``core.inference``, the decision rule) and ``db`` (repository, transactions).
``core`` never imports ``db``, and ``db`` keeps persistence only; the pages import this module.
The arrows stay one way: ``dashboard -> services.reading -> core, db.repository``.

The service owns the transactions (``with factory.begin() as s:``); every function returns plain
frozen dataclasses (:class:`Analysis`, :class:`SavedRead`, :class:`ReadSummary`), never ORM rows,
so nothing escapes a closed session. TensorFlow is never imported here: the predictor is handed
in (a ``core.inference.Predictor``, or a callable that returns one for a model id).

Keys, not volumes: :func:`stage` keeps every series of an upload in the study store
(``core.store``: on disk, and in the process's memory cache shared by all sessions) and returns
a :class:`StagedUpload` of light references (:class:`StudyRef`, :class:`SeriesRef`), which is
all a browser session holds; :func:`load_series` gives the decoded series back by reference,
and :meth:`ReadingService.open_case` opens a recorded series without its files.

Analyse-or-reuse: an upload is known by the sha256 of its bytes (``core.imaging.Study
.content_hash``), a series by its pseudonymous key, a model file by its sha256. When all three
match a stored inference, that inference is returned and the model is not run again.

Nodules (issue 23): :meth:`ReadingService.find_nodules` runs the nodule detector beside an
analysis once per inference and detector file (detect-or-reuse, refusals recorded too);
:meth:`~ReadingService.decide_nodule`, :meth:`~ReadingService.add_nodule`,
:meth:`~ReadingService.withdraw_nodule` and :meth:`~ReadingService.save_lungrads` record the
reader's per-nodule read and Lung-RADS category (append-only, superseding, with the seconds since
the AI result was shown); :meth:`~ReadingService.reader_nodules` gives the current read back. The
dataclasses they return and the geometry (laterality, patient mm, lung mask) are in
``services.nodules``; docs/nodule-findings.md shows the flow.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.domain import (
    OOD_LABEL,
    Finding,
    Window,
    any_flagged,
    shown_label,
    suspicious_class,
    suspicious_index,
)
from core.imaging import FileProblem, ImageTooLargeError, ImagingError, ReadResult, read_uploads
from core.inference.decision import decide
from core.lungrads import ReadNodule, suggest_lungrads
from core.settings import get_settings
from db import repository as repo
from db.schema import Inference
from services.nodules import (
    AddedNodule,
    AiFinding,
    NoduleDetector,
    NoduleFindings,
    ReaderNodules,
    outside_lung,
    patient_mm,
)

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass(frozen=True, eq=False)
class Analysis:
    """The AI result of one series as stored (fresh or reused), ready to show.

    Attributes:
        key: ``content_hash:series_key:model_id:model_sha256`` (same bytes, series and model
            file -> same key).
        study_id, series_id, inference_id: database rows.
        model_id, model_sha256: the registry entry that produced it.
        class_names: the model's output order (k names).
        probabilities: float32 (n, k) per-slice probabilities, slice order of the series.
        labels: n per-slice labels (``core.inference.decision.decide`` with the card's thresholds).
        finding: the model's series label (a Finding, also when the guard fired).
        is_ood: the series as a whole is out of distribution (more than half of its slices).
        ood: bool (n,) per-slice out-of-distribution flags. ood_reasons: n strings ("" = none).
        series_score: suspicious-class score of the series in [0, 1].
        most_suspicious_index: 0-based slice where the viewer opens.
        threshold: the decision threshold recorded with the inference, in [0, 1].
        latency_ms: wall time of the analysis in ms. runtime: what computed the probabilities
            ("openvino", "tensorflow"; "" when not recorded).
        created_at: when the inference was recorded (UTC).
        reused: True when the stored inference was returned and the model was not run.
    """

    key: str
    study_id: int
    series_id: int
    inference_id: int
    model_id: str
    model_sha256: str
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    labels: tuple[str, ...]
    finding: Finding
    is_ood: bool
    ood: np.ndarray
    ood_reasons: tuple[str, ...]
    series_score: float
    most_suspicious_index: int
    threshold: float
    latency_ms: float
    runtime: str
    created_at: datetime | None
    reused: bool

    @property
    def suspicious_index(self) -> int:
        """Column of the suspicious class (``core.inference.decision.suspicious_index``)."""
        return suspicious_index(self.class_names)

    @property
    def any_ood(self) -> bool:
        """True when the guard flagged any slice (``core.domain.any_flagged``): shown "not applicable"."""
        return any_flagged(self.ood)

    @property
    def label_text(self) -> str:
        """The series label as shown (``core.domain.shown_label``): "not applicable ..." when any slice was flagged."""
        return shown_label(self.finding.value, self.any_ood)


@dataclass(frozen=True)
class SavedRead:
    """A stored read: its review id, the review it supersedes (or None), seconds to decision."""

    review_id: int
    supersedes_id: int | None
    seconds_to_decision: float


@dataclass(frozen=True)
class ReadSummary:
    """One current read of a reader, with the AI result they were shown."""

    review_id: int
    study_id: int
    series_id: int
    series_description: str
    inference_id: int
    model_id: str
    ai_finding: str
    ai_ood: bool
    finding: str
    agreement: str
    confidence: int
    reviewed_at: datetime


@dataclass(frozen=True)
class SeriesRef:
    """A series by reference: what a page needs to list and choose it, and its store key.

    Attributes:
        store_key: ``core.store.store_key(content_hash, series_key)``; :func:`load_series` opens it.
        study_key, series_key, modality, source_kind, description, spacing_mm, hu_is_estimated:
            as in ``core.imaging.Series`` (spacing (z, y, x) in mm, None when unknown).
        n_slices: number of slices. windows: the files' own VOI windows (centre/width in HU).
        sop_instance_uids: the slices' SOP Instance UIDs (None for pictures), kept in the
            browser session only (the DICOM export answers into the source study); the store
            drops them.
    """

    store_key: str
    study_key: str
    series_key: str
    modality: str
    source_kind: str
    description: str
    n_slices: int
    spacing_mm: tuple[float | None, float | None, float | None]
    hu_is_estimated: bool
    windows: tuple[Window, ...] = ()
    sop_instance_uids: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class StudyRef:
    """A study by reference: its keys, content hash and series references."""

    study_key: str
    content_hash: str
    source_kind: str
    series: tuple[SeriesRef, ...]


@dataclass(frozen=True)
class StagedUpload:
    """What an upload held, by reference (see :func:`stage`): studies, per-file problems, notes."""

    studies: tuple[StudyRef, ...]
    problems: tuple[FileProblem, ...] = ()
    skipped: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()


class CaseGoneError(ImagingError):
    """The series is neither in the server's memory nor in the study store any more."""


def n_slices_of(series: Any) -> int:
    """Slice count of a ``core.imaging.Series`` or a :class:`SeriesRef`."""
    return int(series.n_slices) if isinstance(series, SeriesRef) else len(series.slices)


def series_ref(series: Any, content_hash: str) -> SeriesRef:
    """The :class:`SeriesRef` of a decoded ``core.imaging.Series`` of the upload ``content_hash``."""
    from core.store import store_key

    return SeriesRef(
        store_key=store_key(content_hash, series.series_key), study_key=series.study_key,
        series_key=series.series_key, modality=series.modality, source_kind=series.source_kind,
        description=series.description, n_slices=len(series.slices), spacing_mm=tuple(series.spacing_mm),
        hu_is_estimated=bool(series.hu_is_estimated), windows=tuple(series.windows),
        sop_instance_uids=tuple(sl.sop_instance_uid for sl in series.slices))


def stage(result: ReadResult) -> StagedUpload:
    """Keep every series of a read upload in the study store and return references to them.

    Each series goes to the process's memory cache (``core.store.hold_series``) and to the store
    on disk (``core.store.put_series``); a disk that refuses the write is logged and the series
    stays in memory only (it is then lost at eviction, and :func:`load_series` says so).

    Args:
        result: ``core.imaging.ReadResult`` of an upload or a PACS retrieval.

    Returns:
        :class:`StagedUpload` (no pixel data: safe to keep per browser session).
    """
    from core import store

    studies = []
    for study in result.studies:
        refs = []
        for series in study.series:
            ref = series_ref(series, study.content_hash)
            store.hold_series(ref.store_key, series)
            keep_series(study, series)
            refs.append(ref)
        studies.append(StudyRef(study_key=study.study_key, content_hash=study.content_hash,
                                source_kind=study.source_kind, series=tuple(refs)))
    return StagedUpload(studies=tuple(studies), problems=tuple(result.problems), skipped=tuple(result.skipped),
                        duplicates=tuple(result.duplicates))


def load_series(ref: SeriesRef) -> Any:
    """The decoded series of a reference (memory cache, else the study store on disk).

    Returns:
        ``core.imaging.Series``, slices with ``hu`` float32 (y, x) in HU; read back from disk,
        the slices get their SOP Instance UIDs from ``ref`` again.

    Raises:
        CaseGoneError: the series was evicted from both (its files must be read again).
    """
    from core import store

    try:
        series = store.get_series(ref.store_key)
    except (store.StoreError, OSError) as exc:
        raise CaseGoneError(
            "This series is no longer kept on the server (the study store evicts the least recently used "
            "series when it is full); upload its files again to open it.") from exc
    uids = ref.sop_instance_uids
    if len(uids) == len(series.slices) and any(sl.sop_instance_uid is None for sl in series.slices) and any(uids):
        series = dataclasses.replace(series, slices=[dataclasses.replace(sl, sop_instance_uid=uid)
                                                     for sl, uid in zip(series.slices, uids, strict=True)])
    return series


def analysis_key(study: Any, series: Any, card: Any) -> str:
    """``content_hash:series_key:model_id:model_sha256`` of a ``core.imaging`` study/series and a card."""
    return f"{study.content_hash}:{series.series_key}:{card.id}:{card.sha256}"


def decision_threshold(card: Any) -> float:
    """Threshold recorded with an inference: the card's threshold of its suspicious class, else 0.5."""
    name = suspicious_class(card.class_names)
    return float(card.thresholds[name]) if name in card.thresholds else 0.5


def read_upload(items: list[tuple[str, bytes]], limit_mb: int | None = None) -> ReadResult:
    """Read uploaded files; files over the per-file size limit become per-file problems.

    Args:
        items: (file name, bytes) pairs as the upload widget gives them.
        limit_mb: per-file limit in MB (default ``get_settings().max_upload_mb``; the page passes
            the smaller of that and Streamlit's ``server.maxUploadSize``). ZIP expansion and
            image size are limited by ``core.imaging`` (``max_zip_mb``, ``max_pixels``).

    Returns:
        ``core.imaging.ReadResult`` (studies + per-file problems; the too-large files first).

    Raises:
        ImageTooLargeError: every file is over the limit (the message names the first one).
        ImagingError (a subclass, e.g. EmptyArchiveError): no file was given, or nothing could
            be read (the message says why).
    """
    limit_mb = int(limit_mb or get_settings().max_upload_mb)
    limit = limit_mb * MB
    too_big = [FileProblem(name, ImageTooLargeError(
        f"{name} is {len(data) / MB:.0f} MB, over the {limit_mb} MB upload limit; split the study into "
        "smaller ZIPs or upload the series' files directly")) for name, data in items if len(data) > limit]
    ok = [(n, d) for n, d in items if len(d) <= limit]
    if not ok:
        if too_big:
            raise too_big[0].error
        raise ImagingError("no file was uploaded; choose DICOM files, a ZIP or JPG/PNG slices")
    result = read_uploads(ok)
    result.problems[:0] = too_big
    return result


def _analysis(key: str, inf: Inference, thresholds: dict[str, float], reused: bool) -> Analysis:
    """An :class:`Analysis` from a stored inference row (read inside its session)."""
    r = dict(inf.series_result or {})
    probs = np.asarray(inf.slice_probabilities, dtype=np.float32)
    n, k = probs.shape
    names = tuple(str(c) for c in r.get("class_names", ()))
    if len(names) != k:
        names = tuple(f.value for f in Finding) if k == len(Finding) else tuple(f"class {i}" for i in range(k))
    labels = tuple(str(x) for x in r.get("labels", ()))
    if len(labels) != n:
        known = {c: t for c, t in thresholds.items() if c in names}
        labels = tuple(names[i] for i in decide(probs, names, known))
    ood = np.asarray(r.get("ood", ()), dtype=bool)
    if ood.shape != (n,):
        ood = np.full(n, bool(inf.ood))
    reasons = tuple(str(x) for x in r.get("ood_reasons", ()))
    if len(reasons) != n:
        reasons = ("",) * n
    if "is_ood" in r:
        is_ood = bool(r["is_ood"])
    else:
        is_ood = OOD_LABEL in (r.get("series_label"), r.get("inference_series_label"))
    pos = suspicious_index(names)
    return Analysis(
        key=key, study_id=inf.study_id, series_id=inf.series_id, inference_id=inf.id, model_id=inf.model_id,
        model_sha256=inf.model_sha256, class_names=names, probabilities=probs, labels=labels,
        finding=Finding(inf.ai_label), is_ood=is_ood, ood=ood, ood_reasons=reasons,
        series_score=float(inf.series_score),
        most_suspicious_index=int(r.get("most_suspicious_index", int(np.argmax(probs[:, pos])))),
        threshold=float(inf.threshold), latency_ms=float(inf.latency_ms), runtime=str(r.get("runtime", "")),
        created_at=inf.created_at, reused=reused,
    )


def analysis_of_inference(inf: Inference, content_hash: str, series_key: str,
                          thresholds: dict[str, float] | None = None) -> Analysis:
    """The :class:`Analysis` of a stored inference row (read inside its session), as the read page has it.

    For pages that reach an inference through another record (a reader-study case) rather than
    through an upload: the same mapping and the same ``key`` as :meth:`ReadingService.stored_analysis`
    (so the viewer's caches are shared with the read page).

    Args:
        inf: the ``inferences`` row. content_hash: its study's content hash. series_key: its
            series' pseudonymous key.
        thresholds: per-class decision thresholds used only when the row holds no per-slice
            labels; default: the threshold recorded with the inference, for its suspicious class.

    Returns:
        :class:`Analysis` with ``reused=True`` (nothing is run).
    """
    if thresholds is None:
        names = [str(c) for c in dict(inf.series_result or {}).get("class_names", ())] or [f.value for f in Finding]
        thresholds = {suspicious_class(names): float(inf.threshold)}
    key = f"{content_hash}:{series_key}:{inf.model_id}:{inf.model_sha256}"  # as analysis_key()
    return _analysis(key, inf, dict(thresholds), reused=True)


class ReadingService:
    """The reading workflow over one database and one source of predictors.

    Args:
        factory: ``sessionmaker`` for writing (``db.session.make_session_factory(engine)``).
        predictor: a ``core.inference.Predictor`` (anything with ``analyse_series``), or a
            callable ``predictor(model_id) -> Predictor`` (e.g. the dashboard's cached loader);
            called only when a series must really be analysed.
        read_factory: ``sessionmaker`` for reads (e.g. ``read_only=True``); default ``factory``.
        nodule_detector: a :class:`services.nodules.NoduleDetector`, or a callable returning one
            (or None when no detector is registered); None: series are not scanned for nodules.
    """

    def __init__(self, factory: sessionmaker[Session], predictor: Any,
                 *, read_factory: sessionmaker[Session] | None = None,
                 nodule_detector: NoduleDetector | Callable[[], NoduleDetector | None] | None = None) -> None:
        self.factory = factory
        self.read_factory = read_factory or factory
        self._predictor = predictor
        self._nodule_detector = nodule_detector

    def predictor_for(self, model_id: str) -> Any:
        """The predictor of ``model_id`` (the one handed in, or the callable's answer).

        Raises:
            core.registry.RegistryError: the callable cannot load the model.
        """
        if hasattr(self._predictor, "analyse_series"):
            return self._predictor
        return self._predictor(model_id)

    # ------------------------------------------------------------------------------ analyse
    def stored_analysis(self, study: Any, series: Any, card: Any) -> Analysis | None:
        """The stored inference of this model file on these bytes and this series, or None.

        Args:
            study, series: ``core.imaging.Study`` and one of its series. card: the model's
                ``core.registry.ModelCard`` (id, sha256, class names, thresholds).

        Returns:
            The stored :class:`Analysis` (``reused=True``) when content hash, series key, model
            id and model sha256 all match and the stored slice count equals the series'; else
            None. Never runs the model.
        """
        with self.read_factory.begin() as s:
            inf = repo.find_inference(s, content_hash=study.content_hash, series_key=series.series_key,
                                      model_id=card.id, model_sha256=card.sha256)
            if inf is None or len(inf.slice_probabilities) != len(series.slices):
                return None
            return _analysis(analysis_key(study, series, card), inf, dict(card.thresholds), reused=True)

    def analyse(self, study: Any, series: Any, card: Any, *, user_id: int,
                progress: Callable[[int, int], None] | None = None) -> Analysis:
        """Analyse-or-reuse: the stored result when there is one, else run the model and record it.

        Args:
            study, series, card: as in :meth:`stored_analysis`.
            user_id: the signed-in user (uploader of a new study; recorded with the inference).
            progress: passed to ``Predictor.analyse_series`` (``progress(done, total)``).

        Returns:
            :class:`Analysis`; ``reused`` says whether the model ran.

        Raises:
            core.registry.RegistryError: the model cannot be loaded or fails its sha256 check.
            core.inference.InferenceError: the model cannot be applied to the series.
            db.repository.RepositoryError: the database refused a row (nothing is recorded).
        """
        stored = self.stored_analysis(study, series, card)
        if stored is not None:
            keep_series(study, series)
            return stored
        result = self.predictor_for(card.id).analyse_series(series, progress=progress)
        analysis = self.record_analysis(study, series, card, result, user_id=user_id)
        keep_series(study, series)
        return analysis

    def record_analysis(self, study: Any, series: Any, card: Any, result: Any, *, user_id: int) -> Analysis:
        """Record a fresh ``SeriesResult``: the study and series rows if new, and the inference.

        One transaction: the study (``upload`` audit event) when its content hash is new, the
        series when its key is new for the study, the inference (``inference`` audit event).
        When the same model file was recorded on this series meanwhile (another session), that
        inference is returned instead (``reused=True``) and nothing is added.

        Args:
            study, series, card: as in :meth:`stored_analysis`.
            result: ``core.inference.SeriesResult`` of ``card``'s model on ``series``.
            user_id: the user who ran the analysis.

        Returns:
            :class:`Analysis` (``reused=False`` when this call added the inference).

        Raises:
            db.repository.RepositoryError: a value was refused; nothing was recorded.
        """
        key = analysis_key(study, series, card)
        with self.factory.begin() as s:
            existing = repo.find_inference(s, content_hash=study.content_hash, series_key=series.series_key,
                                           model_id=card.id, model_sha256=card.sha256)
            if existing is not None and len(existing.slice_probabilities) == len(series.slices):
                return _analysis(key, existing, dict(card.thresholds), reused=True)
            row = repo.find_study_by_hash(s, study.content_hash)
            if row is None:
                row = repo.add_study(s, study_key=study.study_key, modality=series.modality,
                                     n_series=len(study.series), n_slices=sum(n_slices_of(se) for se in study.series),
                                     source_kind=study.source_kind, content_hash=study.content_hash,
                                     uploaded_by=user_id)
            series_row = repo.find_series(s, row.id, series.series_key)
            if series_row is None:
                series_row = repo.add_series(s, study_id=row.id, series_key=series.series_key,
                                             modality=series.modality, n_slices=len(series.slices),
                                             spacing_mm=series.spacing_mm, description=series.description)
            inf = repo.add_inference(
                s, series_id=series_row.id, model_id=card.id, model_sha256=card.sha256,
                slice_probabilities=np.asarray(result.probabilities, dtype=np.float32),
                series_result=result.to_dict(), threshold=decision_threshold(card),
                ood=np.asarray(result.ood, dtype=bool), latency_ms=float(result.latency_ms), user=user_id)
            return _analysis(key, inf, dict(card.thresholds), reused=False)

    def open_case(self, series_id: int) -> tuple[StudyRef, SeriesRef] | None:
        """A recorded series, opened from the study store without its files.

        Args:
            series_id: ``series.id`` in the database (e.g. :attr:`Analysis.series_id`).

        Returns:
            (study reference, series reference), the series now in the memory cache; None when
            the store no longer holds it (evicted, or analysed before the store existed).

        Raises:
            db.repository.NotFoundError: no such series.
        """
        from core import store

        with self.read_factory.begin() as s:
            row = repo.get_series(s, int(series_id))
            study_row = repo.get_study(s, row.study_id)
            content_hash, study_key, kind = study_row.content_hash, study_row.study_key, study_row.source_kind
            series_key = row.series_key
        key = store.store_key(content_hash, series_key)
        try:
            series = store.get_series(key)
        except (store.StoreError, OSError):
            return None
        ref = series_ref(series, content_hash)
        return StudyRef(study_key=study_key, content_hash=content_hash, source_kind=kind, series=(ref,)), ref

    # -------------------------------------------------------------------------------- reads
    def save_read(self, inference_id: int, *, reader_id: int, finding: str, agreement: str, confidence: int,
                  heatmap_helpful: int | None, comment: str, opened_at: float,
                  now: float | None = None) -> SavedRead:
        """Store a reader's read of what an inference showed.

        A read by the same reader of the same inference supersedes their current one (the
        earlier row stays, unchanged). ``seconds_to_decision`` = ``now`` (default
        ``time.time()``) - ``opened_at``, in s, at least 0.

        Args:
            inference_id: :attr:`Analysis.inference_id` of the result the reader saw.
            reader_id: an active radiologist or admin.
            finding, agreement, confidence, heatmap_helpful, comment: see ``db.repository.add_review``.
            opened_at: ``time.time()`` when the AI result was first shown.
            now: ``time.time()`` of the decision (tests pass it).

        Returns:
            :class:`SavedRead`.

        Raises:
            db.repository.ValidationError / PermissionDenied / NotFoundError: see ``add_review``.
        """
        seconds = max(0.0, (now if now is not None else time.time()) - float(opened_at))
        with self.factory.begin() as s:
            row = repo.add_review(s, inference_id=inference_id, reader=reader_id, finding=finding,
                                  agreement=agreement, confidence=confidence, heatmap_helpful=heatmap_helpful,
                                  comment=comment, seconds_to_decision=seconds)
            return SavedRead(review_id=int(row.id), supersedes_id=row.supersedes_id,
                             seconds_to_decision=float(row.seconds_to_decision))

    def reader_work(self, reader_id: int) -> list[ReadSummary]:
        """The reader's current reads, newest first, each with the AI result they were shown."""
        with self.read_factory.begin() as s:
            out = []
            for r in reversed(repo.current_reviews(s, reader_id=int(reader_id))):
                inf = r.inference
                out.append(ReadSummary(
                    review_id=r.id, study_id=r.study_id, series_id=inf.series_id,
                    series_description=inf.series.description, inference_id=inf.id, model_id=inf.model_id,
                    ai_finding=inf.ai_label, ai_ood=bool(inf.ood), finding=r.finding, agreement=r.agreement,
                    confidence=int(r.confidence), reviewed_at=r.created_at))
            return out

    # ------------------------------------------------------------------------------ nodules
    def nodule_detector(self) -> NoduleDetector | None:
        """The nodule detector handed in (or the callable's answer); None when there is none.

        Raises:
            core.registry.RegistryError: the callable cannot read the registry.
        """
        if self._nodule_detector is None or isinstance(self._nodule_detector, NoduleDetector):
            return self._nodule_detector
        return self._nodule_detector()

    def stored_nodules(self, analysis: Analysis, detector: NoduleDetector | None = None,
                       series: Any = None) -> NoduleFindings | None:
        """The stored run of the detector on the series of ``analysis``, or None. Never runs it.

        Args:
            analysis: the shown :class:`Analysis` (its inference).
            detector: default :meth:`nodule_detector`; its id and sha256 name the run.
            series: the analysed ``core.imaging.Series``, to add its warnings (thick slices).

        Returns:
            :class:`NoduleFindings` (``reused=True``), or None when this detector has not run on
            this analysis (or no detector is registered).
        """
        detector = detector or self.nodule_detector()
        if detector is None:
            return None
        with self.read_factory.begin() as s:
            det = repo.find_detection(s, analysis.inference_id, detector.model_id, detector.model_sha256)
            if det is None:
                return None
            found = _findings(s, det, reused=True)
        if series is not None and not found.refused:
            found = dataclasses.replace(found, warnings=tuple(_volume_warnings(series)))
        return found

    def find_nodules(self, analysis: Analysis, series: Any, *, user_id: int,
                     progress: Callable[[str], None] | None = None) -> NoduleFindings | None:
        """Detect-or-reuse: the stored run of the detector on this analysis, else run it and record it.

        Once per analysis (inference) and detector file (model id and sha256): a stored run,
        findings or refusal, is returned and the detector does not run again. A series the
        detector cannot scan (``core.nodules.NotAVolumeError``: pictures, too few slices, thick
        or irregular slices, no lungs) is recorded as a refusal with its one-line reason, and is
        not tried again with the same detector; the slice classifier's analysis stays as it is.

        Args:
            analysis: the :class:`Analysis` shown (the detection belongs to its inference).
            series: the analysed ``core.imaging.Series``: ``hu`` float32 (z, y, x) in HU, slice
                positions, Image Position / Orientation (Patient).
            user_id: who asked (recorded with the detection).
            progress: optional ``progress(stage)`` with the name of each detector stage.

        Returns:
            :class:`NoduleFindings` (``reused`` says whether the detector ran), or None when no
            nodule detector is registered.

        Raises:
            core.registry.RegistryError: the detector's network cannot be loaded (nothing recorded).
            db.repository.RepositoryError: the database refused a row (nothing recorded).
        """
        from core.nodules import NotAVolumeError

        detector = self.nodule_detector()
        if detector is None:
            return None
        stored = self.stored_nodules(analysis, detector, series)
        if stored is not None:
            return stored
        start = time.perf_counter()
        refusal, warnings, found = "", [], []
        try:
            warnings = _volume_warnings(series)  # refuses pictures, localisers ... before the network loads
            found = list(detector.detect(series, progress))
        except NotAVolumeError as exc:
            refusal, warnings, found = str(exc) or "The nodule detector cannot scan this series.", [], []
        latency = (time.perf_counter() - start) * 1000.0
        try:
            with self.factory.begin() as s:
                det = repo.record_ai_nodules(
                    s, inference_id=analysis.inference_id, model_id=detector.model_id,
                    model_sha256=detector.model_sha256, nodules=found, latency_ms=latency,
                    operating_point=detector.operating_point, refusal=refusal, user=user_id)
                out = _findings(s, det, reused=False)
        except IntegrityError:  # another session recorded the same run meanwhile
            out = self.stored_nodules(analysis, detector)
            if out is None:
                raise
        return dataclasses.replace(out, warnings=tuple(warnings))

    def reader_nodules(self, findings: NoduleFindings, reader_id: int) -> ReaderNodules:
        """One reader's current read of a detection: per-nodule states, Lung-RADS and its suggestion.

        Returns:
            :class:`ReaderNodules`; the suggestion is ``core.lungrads.suggest_lungrads`` of the
            states (the largest accepted or added solid nodule; untyped ones count as solid).

        Raises:
            db.repository.NotFoundError: no such detection.
        """
        with self.read_factory.begin() as s:
            states = tuple(repo.nodule_states(s, findings.detection_id, int(reader_id)))
            current = repo.current_lungrads(s, findings.detection_id, int(reader_id))
            category = current.category if current is not None else None
            shown = current.suggested if current is not None else None
        suggestion = suggest_lungrads(ReadNodule(st.decision, st.diameter_mm, st.nodule_type) for st in states)
        return ReaderNodules(detection_id=findings.detection_id, reader_id=int(reader_id), states=states,
                             suggestion=suggestion, lungrads=category, lungrads_suggested=shown)

    def decide_nodule(self, findings: NoduleFindings, nodule_id: int, *, reader_id: int, decision: str,
                      opened_at: float, nodule_type: str | None = None,
                      corrected_diameter_mm: float | None = None, now: float | None = None) -> int:
        """Accept or reject one AI finding (optionally its type and the reader's diameter).

        A later decision of the same reader on the same finding supersedes theirs (the earlier
        row stays); another reader's decision is their own. ``seconds_to_decision`` = ``now``
        (default ``time.time()``) - ``opened_at``, at least 0, as for the series read.

        Args:
            findings: the detection shown. nodule_id: one of its findings (``AiFinding.nodule_id``).
            reader_id: an active radiologist or admin.
            decision: "accept" or "reject".
            opened_at: ``time.time()`` when the AI result was first shown.
            nodule_type: with "accept": "solid", "part-solid", "ground-glass", "calcified" or None.
            corrected_diameter_mm: with "accept": the reader's diameter (mm, > 0) or None.
            now: ``time.time()`` of the decision (tests pass it).

        Returns:
            The new ``nodule_reads`` row id.

        Raises:
            db.repository.ValidationError: not a finding of this detection, unknown decision or
                type, a type or diameter with "reject", a bad number.
            db.repository.PermissionDenied / NotFoundError: see ``record_nodule_decision``.
        """
        try:
            findings.finding(nodule_id)
        except KeyError as exc:
            raise repo.ValidationError(f"Finding {nodule_id} is not one of this detection's; reload the case.") \
                from exc
        with self.factory.begin() as s:
            row = repo.record_nodule_decision(
                s, nodule_id=int(nodule_id), reader=int(reader_id), decision=decision, nodule_type=nodule_type,
                corrected_diameter_mm=corrected_diameter_mm, seconds_to_decision=_seconds(opened_at, now))
            return int(row.id)

    def add_nodule(self, findings: NoduleFindings, series: Any, *, reader_id: int, slice_index: int, row: int,
                   col: int, diameter_mm: float, opened_at: float, nodule_type: str | None = None,
                   supersedes_id: int | None = None, now: float | None = None) -> AddedNodule:
        """Record a nodule the AI did not list, at a pixel of a slice (a click, or typed).

        The centre's patient coordinates come from the series' geometry
        (:func:`services.nodules.patient_mm`); a centre outside the slice's lung mask
        (``core.lungs.lung_mask``) is kept and flagged ``outside_lung``.

        Args:
            findings: the detection shown (not a refusal). series: the analysed series.
            reader_id: an active radiologist or admin.
            slice_index, row, col: 0-based pixel of the centre (row = y, column = x).
            diameter_mm: the reader's diameter (mm, > 0).
            opened_at, now: as in :meth:`decide_nodule`.
            nodule_type: "solid", "part-solid", "ground-glass", "calcified" or None.
            supersedes_id: the reader's current row of an added nodule this one replaces (moved).

        Returns:
            :class:`services.nodules.AddedNodule`.

        Raises:
            db.repository.ValidationError: the detector refused this series, the pixel lies
                outside the series, the series has no patient geometry, or a value is malformed.
            db.repository.PermissionDenied / NotFoundError: see ``record_added_nodule``.
        """
        if findings.refused:
            raise repo.ValidationError("The nodule detector refused this series; nodules cannot be added to it.")
        z, r, c = int(slice_index), int(row), int(col)
        n = len(series.slices)
        if not 0 <= z < n:
            raise repo.ValidationError(f"Slice {z + 1} does not exist; the series has {n} slices.")
        rows, cols = series.slices[z].hu.shape
        if not (0 <= r < rows and 0 <= c < cols):
            raise repo.ValidationError(f"Pixel (x {c}, y {r}) lies outside the {cols} x {rows} slice.")
        mm = patient_mm(series, z, r, c)
        if mm is None or not all(np.isfinite(mm)):
            raise repo.ValidationError("This series has no patient coordinates (Image Position / Orientation); "
                                       "a nodule cannot be placed on it.")
        flagged = outside_lung(series, z, r, c)
        with self.factory.begin() as s:
            read = repo.record_added_nodule(
                s, detection_id=findings.detection_id, reader=int(reader_id), centre_voxel=(z, r, c),
                centre_mm=mm, diameter_mm=diameter_mm, outside_lung=flagged, nodule_type=nodule_type,
                seconds_to_decision=_seconds(opened_at, now), supersedes_id=supersedes_id)
            return AddedNodule(read_id=int(read.id), supersedes_id=read.supersedes_id, centre_voxel=(z, r, c),
                               centre_mm=tuple(float(v) for v in mm), outside_lung=bool(flagged),
                               seconds_to_decision=float(read.seconds_to_decision))

    def withdraw_nodule(self, read_id: int, *, reader_id: int, opened_at: float, now: float | None = None) -> int:
        """Take back the reader's current decision or added nodule (nothing is deleted).

        Returns:
            The new "withdraw" row id.

        Raises:
            db.repository.ValidationError: another reader's row, or not current. NotFoundError.
        """
        with self.factory.begin() as s:
            row = repo.withdraw_nodule_read(s, read_id=int(read_id), reader=int(reader_id),
                                            seconds_to_decision=_seconds(opened_at, now))
            return int(row.id)

    def save_lungrads(self, findings: NoduleFindings, *, reader_id: int, category: str, suggested: str | None,
                      opened_at: float, now: float | None = None) -> int:
        """Save the reader's own Lung-RADS category (supersedes their earlier one), with the suggestion shown.

        Args:
            findings: the detection the category rests on.
            category: "0", "1", "2", "3", "4A", "4B" or "4X" (ACR Lung-RADS v2022).
            suggested: the category ``core.lungrads.suggest_lungrads`` showed, or None.
            opened_at, now: as in :meth:`decide_nodule`.

        Returns:
            The new ``lungrads_reads`` row id.

        Raises:
            db.repository.ValidationError: unknown category. PermissionDenied / NotFoundError.
        """
        with self.factory.begin() as s:
            row = repo.record_lungrads(s, detection_id=findings.detection_id, reader=int(reader_id),
                                       category=category, suggested=suggested,
                                       seconds_to_decision=_seconds(opened_at, now))
            return int(row.id)


def _seconds(opened_at: float, now: float | None) -> float:
    """Seconds from ``opened_at`` to ``now`` (default ``time.time()``), at least 0."""
    return max(0.0, (now if now is not None else time.time()) - float(opened_at))


def _volume_warnings(series: Any) -> list[str]:
    """``core.nodules.volume.check_volume`` (raises ``NotAVolumeError`` for what it refuses)."""
    from core.nodules.volume import check_volume

    return check_volume(series)


def _findings(s: Session, det: Any, *, reused: bool) -> NoduleFindings:
    """A :class:`NoduleFindings` from a detection row (read inside its session)."""
    rows = repo.list_nodules(s, det.inference_id, detection_id=det.id)
    return NoduleFindings(
        detection_id=int(det.id), inference_id=int(det.inference_id), series_id=int(det.series_id),
        study_id=int(det.study_id), model_id=det.model_id, model_sha256=det.model_sha256, refusal=det.refusal or "",
        operating_point=det.operating_point, latency_ms=float(det.latency_ms),
        findings=tuple(AiFinding.of(r) for r in rows), reused=reused, created_at=det.created_at)


# ------------------------------------------------------------------------------ study store
def keep_series(study: Any, series: Any) -> str | None:
    """Keep a series in the study store (``core.store``) so it can be opened again.

    Stores the decoded, de-identified series under ``store_key(study.content_hash,
    series.series_key)`` unless it is there already. A store that cannot be written is logged
    and skipped: the analysis and the reads stay recorded either way.

    Args:
        study, series: ``core.imaging.Study`` and one of its series.

    Returns:
        The store key, or None when the series could not be stored.
    """
    from core import store

    try:
        key = store.store_key(study.content_hash, series.series_key)
        if not store.has_series(key):
            store.put_series(series, study.content_hash)
        return key
    except (store.StoreError, OSError) as exc:
        log.warning("study store: series not kept (%s)", exc)
        return None


def open_stored_series(factory: sessionmaker[Session], study_id: int, series_key: str = "") -> Any | None:
    """A recorded series from the study store, without uploading it again.

    Args:
        factory: sessionmaker of the LungReview database.
        study_id: ``studies.id``. series_key: the series' pseudonymous key; "" = the study's
            only stored series.

    Returns:
        ``core.imaging.Series`` (slices with ``hu`` float32 (y, x) in HU), or None when the
        store no longer holds it (evicted, or analysed before the store existed).

    Raises:
        db.repository.NotFoundError: no such study.
    """
    from core import store

    with factory.begin() as s:
        content_hash = repo.get_study(s, study_id).content_hash
    try:
        if series_key:
            key = store.store_key(content_hash, series_key)
        else:
            keys = store.list_keys(content_hash)
            if len(keys) != 1:
                return None
            key = keys[0]
        return store.get_series(key)
    except store.StoreMissError:
        return None
    except (store.StoreError, OSError) as exc:
        log.warning("study store: series %s of study %s not opened (%s)", series_key[:12], study_id, exc)
        return None
