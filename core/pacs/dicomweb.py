"""Finding, retrieving and storing CT studies in a PACS over DICOMweb (QIDO-RS, WADO-RS, STOW-RS).

Built on ``dicomweb-client`` (the highdicom authors' client; DICOM PS3.18). A series retrieved with
WADO-RS is turned into the same :class:`core.imaging.ReadResult` / ``Study`` / ``Series`` objects an
upload gives: the retrieved instances are encoded as DICOM Part 10 bytes and passed to
:func:`core.imaging.read_uploads`, so decoding, Hounsfield units, slice order, de-identified
metadata, series keys and size limits are the upload path's own.

What the PACS returns from a search (patient name and id, accession number, UIDs) is for the
reader's eyes in the running session only: this module stores nothing and logs no identifier or
credential. The pixel-free headers of the retrieved instances are handed back in memory
(:attr:`RetrievedSeries.headers`) because an export to the same PACS needs the study's real
identity (see :mod:`core.pacs.export`).

Every failure is a :class:`PacsError` subclass whose message says what went wrong and what to do:
:class:`PacsUnreachableError`, :class:`PacsAuthError`, :class:`StudyNotFoundError`,
:class:`NotCTError`, :class:`SeriesTooLargeError`, and :class:`PacsRequestError` for any other
refusal by the server.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from http import HTTPStatus

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from core.imaging import ReadResult, read_uploads
from core.settings import get_settings

__all__ = [
    "NotCTError",
    "PacsAuthError",
    "PacsClient",
    "PacsError",
    "PacsRequestError",
    "PacsUnreachableError",
    "RetrievedSeries",
    "SeriesHit",
    "SeriesTooLargeError",
    "StudyHit",
    "StudyNotFoundError",
    "patient_name_pattern",
]

# dicomweb-client logs request URLs, which hold Study/Series/SOP Instance UIDs, at INFO and DEBUG;
# LungReview keeps identifiers out of its logs, so only its warnings and errors pass.
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

#: Attempts per request (first try included) for connection failures and 408/429/503/504 answers;
#: waits between attempts grow exponentially from :data:`RETRY_WAIT_MS` (dicomweb-client's retrying).
MAX_ATTEMPTS = 3
RETRY_WAIT_MS = 250
#: Most studies one search returns (QIDO-RS ``limit``); the form asks for a narrower search beyond.
MAX_SEARCH_RESULTS = 100

#: Study-level attributes asked for with ``includefield`` (PS3.18 Table 10.6.3-3).
_STUDY_FIELDS = (
    "StudyInstanceUID", "StudyDate", "StudyDescription", "PatientID", "PatientName", "AccessionNumber",
    "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)
_SERIES_FIELDS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
                  "NumberOfSeriesRelatedInstances")


# --------------------------------------------------------------------------------------- errors
class PacsError(Exception):
    """A PACS request failed; the message says what went wrong and what to do."""


class PacsUnreachableError(PacsError):
    """The DICOMweb server did not answer (down, wrong URL, network, timeout, connection dropped)."""


class PacsAuthError(PacsError):
    """The server refused the credentials (HTTP 401) or the user's rights (HTTP 403)."""


class StudyNotFoundError(PacsError):
    """The study or series is not (or no longer) in the PACS (HTTP 404 or an empty answer)."""


class NotCTError(PacsError):
    """The chosen series is not a CT series (Modality other than CT)."""


class SeriesTooLargeError(PacsError):
    """The series is larger than the upload limit (``get_settings().max_upload_mb``)."""


class PacsRequestError(PacsError):
    """The server answered with another error (e.g. HTTP 400 or 500)."""


# ---------------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class StudyHit:
    """One study as a QIDO-RS search gives it (for display in the session; never stored).

    Attributes:
        study_instance_uid: StudyInstanceUID.
        study_date: StudyDate, or None when absent or malformed.
        patient_id, patient_name, accession_number, description: as the PACS gives them ("" when absent).
        modalities: ModalitiesInStudy.
        n_series, n_instances: NumberOfStudyRelatedSeries / -Instances, None when not given.
    """

    study_instance_uid: str
    study_date: date | None
    patient_id: str
    patient_name: str
    accession_number: str
    description: str
    modalities: tuple[str, ...]
    n_series: int | None
    n_instances: int | None


@dataclass(frozen=True)
class SeriesHit:
    """One series of a study as QIDO-RS gives it (display only; never stored)."""

    study_instance_uid: str
    series_instance_uid: str
    modality: str
    series_number: int | None
    description: str
    n_instances: int | None


@dataclass
class RetrievedSeries:
    """A series retrieved with WADO-RS.

    Attributes:
        result: what :func:`core.imaging.read_uploads` made of the retrieved instances.
        headers: pixel-free pydicom headers of the instances keyed by SOPInstanceUID, held in memory
            for an export back to the PACS (:mod:`core.pacs.export`); never to be stored.
        n_bytes: total size of the retrieved instances, bytes (Part 10 encoding).
    """

    result: ReadResult
    headers: dict[str, Dataset]
    n_bytes: int


# ------------------------------------------------------------------------------------- helpers
def _value(item: dict, keyword: str) -> list:
    """The Value list of a DICOM JSON attribute (PS3.18 F.2), [] when absent."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    entry = item.get(f"{tag:08X}") or {}
    return entry.get("Value") or []


def _text(item: dict, keyword: str) -> str:
    values = _value(item, keyword)
    if not values:
        return ""
    v = values[0]
    if isinstance(v, dict):  # PN: {"Alphabetic": "..."}
        return str(v.get("Alphabetic", ""))
    return str(v)


def _int(item: dict, keyword: str) -> int | None:
    try:
        return int(_value(item, keyword)[0])
    except (IndexError, TypeError, ValueError):
        return None


def _date(raw: str) -> date | None:
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:8])) if len(raw) >= 8 else None
    except ValueError:
        return None


def patient_name_pattern(typed: str) -> str:
    """A QIDO-RS wildcard pattern for a patient name as the reader types it.

    ``"smith jo"`` -> ``"*smith*jo*"``: words may be in stored order and partial; the caret between
    family and given name (PN, PS3.5 6.2) and commas are matched by ``*`` (PS3.4 C.2.2.2.4
    wildcard matching; Orthanc and dcm4chee match PN case-insensitively by default).

    Args:
        typed: what the reader typed; may already hold ``*`` or ``?``.

    Returns:
        The pattern, or "" for blank input.
    """
    words = [w for w in re.split(r"[\s,^]+", typed.strip()) if w]
    return "*" + "*".join(words) + "*" if words else ""


class _Session(requests.Session):
    """A requests session that sends QIDO-RS wildcards ``*`` and ``?`` unescaped in the query.

    dicomweb-client percent-encodes query values (``quote_plus``), so ``*`` arrives as ``%2A``;
    some servers (Orthanc 1.10 with DICOMweb plugin 1.7, measured) then match it literally. Both
    characters are legal in a URI query as they are (RFC 3986 3.4), and a ``%`` typed by the user
    is sent as ``%25``, so only wildcards are turned back.
    """

    def send(self, request: requests.PreparedRequest, **kwargs):  # type: ignore[override]
        if request.url and "?" in request.url:
            path, _, query = request.url.partition("?")
            request.url = path + "?" + query.replace("%2A", "*").replace("%3F", "?")
        return super().send(request, **kwargs)


class _Client:
    """Maps requests/dicomweb-client failures to typed PACS errors."""

    def __init__(self, url: str) -> None:
        self.url = url

    def wrap(self, exc: Exception, what: str) -> PacsError:
        if isinstance(exc, PacsError):
            return exc
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                return PacsAuthError(
                    f"The PACS refused the user name or password while {what} (HTTP {status}). "
                    "Check LUNGREVIEW_DICOMWEB_USER and LUNGREVIEW_DICOMWEB_PASSWORD (environment or "
                    ".streamlit/secrets.toml) with your PACS administrator."
                )
            if status == HTTPStatus.NOT_FOUND:
                return StudyNotFoundError(
                    f"The PACS no longer has this study or series ({what}: HTTP 404). It may have been "
                    "deleted or moved since the search: search again."
                )
            return PacsRequestError(
                f"The PACS answered HTTP {status} while {what}. Try again; if it persists, give your PACS "
                "administrator the time of the attempt."
            )
        if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
            return PacsUnreachableError(
                f"The PACS at {self.url} did not answer while {what} ({type(exc).__name__}). Check that it is "
                "running and that LUNGREVIEW_DICOMWEB_URL is right, then try again."
            )
        return PacsRequestError(
            f"The PACS answer could not be used while {what} ({type(exc).__name__}: {exc}). Try again or "
            "ask your PACS administrator."
        )


# -------------------------------------------------------------------------------------- client
class PacsClient:
    """A DICOMweb client for one server.

    Args:
        url: the DICOMweb root (e.g. ``https://pacs.example.org/dicom-web``); QIDO, WADO and STOW
            are below it (PS3.18 8.2).
        user, password: HTTP basic credentials, or None for none. Held by the HTTP session only.
        timeout_s: seconds to wait for the server to connect and to send each part of an answer
            (``requests`` connect/read timeout); default ``get_settings().dicomweb_timeout_s``.

    Raises:
        ValueError: url is blank, not http(s), or holds credentials (``user:password@host``).
    """

    def __init__(self, url: str, user: str | None = None, password: str | None = None,
                 timeout_s: float | None = None) -> None:
        url = (url or "").strip().rstrip("/")
        if not re.match(r"^https?://", url):
            raise ValueError(f"the DICOMweb URL must start with http:// or https://, got {url!r}")
        if "@" in url.split("/")[2]:
            raise ValueError("the DICOMweb URL holds a user name or password: give them in "
                             "LUNGREVIEW_DICOMWEB_USER / LUNGREVIEW_DICOMWEB_PASSWORD instead")
        self.url = url
        session = _Session()
        if user:
            session.auth = (user, password or "")
        # Connection failures are retried by dicomweb-client's own retry loop (below); urllib3's
        # adapter only retries a refused connection once more at the socket level.
        adapter = HTTPAdapter(max_retries=Retry(total=1, connect=1, read=0, status=0, backoff_factor=0.2))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        timeout = float(timeout_s if timeout_s is not None else get_settings().dicomweb_timeout_s)
        self._client = DICOMwebClient(url=url, session=session, timeout=timeout)
        self._client.set_http_retry_params(retry=True, max_attempts=MAX_ATTEMPTS,
                                           wait_exponential_multiplier=RETRY_WAIT_MS)
        self._errors = _Client(url)

    def __repr__(self) -> str:  # never shows credentials
        return f"PacsClient(url={self.url!r})"

    # ----------------------------------------------------------------------------------- QIDO
    def search_studies(self, patient: str = "", accession_number: str = "", date_from: date | None = None,
                       date_to: date | None = None, modality: str = "CT",
                       limit: int = MAX_SEARCH_RESULTS) -> list[StudyHit]:
        """QIDO-RS study search (PS3.18 10.6): by patient, accession number and study-date range.

        Args:
            patient: a patient ID (matched exactly) or a name as typed (wildcard match, see
                :func:`patient_name_pattern`); studies matching either are returned.
            accession_number: matched exactly when given.
            date_from, date_to: inclusive StudyDate range; either may be None (open).
            modality: ModalitiesInStudy to match ("" for any).
            limit: most studies returned (per patient query).

        Returns:
            Studies, newest first (undated last), without duplicates.

        Raises:
            PacsUnreachableError, PacsAuthError, PacsRequestError.
        """
        base: dict[str, str] = {}
        if accession_number.strip():
            base["AccessionNumber"] = accession_number.strip()
        if date_from or date_to:
            lo = date_from.strftime("%Y%m%d") if date_from else ""
            hi = date_to.strftime("%Y%m%d") if date_to else ""
            base["StudyDate"] = f"{lo}-{hi}"
        if modality:
            base["ModalitiesInStudy"] = modality
        queries = [base]
        typed = patient.strip()
        if typed:
            queries = [{**base, "PatientID": typed}]
            pattern = patient_name_pattern(typed)
            if pattern:
                queries.append({**base, "PatientName": pattern})
        hits: dict[str, StudyHit] = {}
        try:
            for filters in queries:
                for item in self._client.search_for_studies(search_filters=filters, fields=_STUDY_FIELDS,
                                                            limit=limit):
                    hit = _study_hit(item)
                    if hit.study_instance_uid:
                        hits.setdefault(hit.study_instance_uid, hit)
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error
            raise self._errors.wrap(exc, "searching for studies") from exc
        return sorted(hits.values(), key=lambda h: (h.study_date is None, -(h.study_date or date.min).toordinal()))

    def search_series(self, study_instance_uid: str) -> list[SeriesHit]:
        """QIDO-RS series of one study (PS3.18 10.6), ordered by SeriesNumber.

        Raises:
            StudyNotFoundError: the PACS has no series for this study (it was deleted).
            PacsUnreachableError, PacsAuthError, PacsRequestError.
        """
        try:
            items = self._client.search_for_series(study_instance_uid=study_instance_uid, fields=_SERIES_FIELDS)
        except Exception as exc:  # noqa: BLE001
            raise self._errors.wrap(exc, "listing the series of a study") from exc
        if not items:
            raise StudyNotFoundError("The PACS has no series for this study any more: it may have been deleted. "
                                     "Search again.")
        hits = [
            SeriesHit(study_instance_uid, _text(i, "SeriesInstanceUID"), _text(i, "Modality"), _int(i, "SeriesNumber"),
                      _text(i, "SeriesDescription"), _int(i, "NumberOfSeriesRelatedInstances"))
            for i in items
        ]
        return sorted(hits, key=lambda h: (h.series_number is None, h.series_number or 0, h.series_instance_uid))

    # ----------------------------------------------------------------------------------- WADO
    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str,
                        progress: Callable[[int, int | None], None] | None = None,
                        max_bytes: int | None = None) -> RetrievedSeries:
        """WADO-RS retrieval of one CT series (PS3.18 10.4), read as uploads are read.

        The series is first looked up with QIDO-RS (modality and instance count), then its instances
        are streamed in their stored transfer syntax and passed, as Part 10 bytes, to
        :func:`core.imaging.read_uploads`.

        Args:
            study_instance_uid, series_instance_uid: the series to fetch.
            progress: called as ``progress(done, total)`` after each instance (total: the PACS's
                NumberOfSeriesRelatedInstances, None when not given) and once before the first.
            max_bytes: size limit, bytes; default ``get_settings().max_upload_mb`` MiB (the upload limit).

        Returns:
            RetrievedSeries.

        Raises:
            StudyNotFoundError: the study or series is not in the PACS (any more).
            NotCTError: the series' Modality is not CT.
            SeriesTooLargeError: the instances add up to more than ``max_bytes``.
            PacsUnreachableError: the server did not answer, or the connection dropped mid-retrieval
                (an error from the transport, or fewer instances than QIDO-RS counted).
            PacsAuthError, PacsRequestError.
            core.imaging.ImagingError (a subclass): no retrieved instance could be read as an image.
        """
        limit = max_bytes if max_bytes is not None else get_settings().max_upload_mb * 1024 * 1024
        series = [s for s in self.search_series(study_instance_uid) if s.series_instance_uid == series_instance_uid]
        if not series:
            raise StudyNotFoundError("The PACS no longer has this series: it may have been deleted. Search again.")
        hit = series[0]
        if hit.modality and hit.modality.upper() != "CT":
            raise NotCTError(f"This series is {hit.modality}, not CT: LungReview reads CT series only. "
                             "Choose a CT series of the study.")
        total = hit.n_instances
        items: list[tuple[str, bytes]] = []
        headers: dict[str, Dataset] = {}
        n_bytes = 0
        if progress:
            progress(0, total)
        try:
            stream = self._client.iter_series(study_instance_uid, series_instance_uid,
                                              media_types=(("application/dicom", "*"),))
            for ds in stream:
                data = _encode(ds)
                n_bytes += len(data)
                if n_bytes > limit:
                    raise SeriesTooLargeError(
                        f"This series is larger than the limit of {limit / 2**20:.0f} MiB "
                        "(LUNGREVIEW_MAX_UPLOAD_MB). Choose a smaller series or ask the administrator "
                        "to raise the limit."
                    )
                uid = str(ds.get("SOPInstanceUID", f"instance-{len(items)}"))
                items.append((f"{len(items):05d}.dcm", data))
                headers[uid] = _header(ds)
                if progress:
                    progress(len(items), total)
        except Exception as exc:  # noqa: BLE001
            raise self._errors.wrap(exc, "retrieving the series") from exc
        if not items:
            raise StudyNotFoundError("The PACS sent no instances for this series: it may have been deleted. "
                                     "Search again.")
        if total is not None and len(items) < total:
            # A server that ends its answer by closing the connection (no Content-Length, not
            # chunked; Orthanc does) looks like a complete answer when it stops half-way.
            raise PacsUnreachableError(
                f"The connection to the PACS at {self.url} dropped while retrieving the series: {len(items)} of "
                f"{total} instances arrived. Check that the PACS is running, then try again."
            )
        result = read_uploads(items)
        modalities = {s.modality.upper() for s in result.series}
        if modalities and "CT" not in modalities:
            raise NotCTError(f"The retrieved series is {', '.join(sorted(modalities))}, not CT: LungReview reads "
                             "CT series only. Choose a CT series of the study.")
        return RetrievedSeries(result=result, headers=headers, n_bytes=n_bytes)

    # ----------------------------------------------------------------------------------- STOW
    def store(self, datasets: Sequence[Dataset]) -> list[str]:
        """STOW-RS store of DICOM instances (PS3.18 10.5).

        Args:
            datasets: complete instances (with file meta), e.g. from :mod:`core.pacs.export`.

        Returns:
            The SOPInstanceUIDs the server reports as stored (ReferencedSOPSequence).

        Raises:
            PacsRequestError: the server refused some instances (FailedSOPSequence), or answered
                another error.
            PacsUnreachableError, PacsAuthError.
        """
        if not datasets:
            return []
        try:
            answer = self._client.store_instances(list(datasets))
        except Exception as exc:  # noqa: BLE001
            raise self._errors.wrap(exc, "sending to the PACS") from exc
        failed = answer.get("FailedSOPSequence") or []
        if failed:
            reasons = sorted({str(f.get("FailureReason", "?")) for f in failed})
            raise PacsRequestError(f"The PACS refused {len(failed)} of {len(datasets)} objects (failure reason "
                                   f"{', '.join(reasons)}, PS3.18 Table I.2-1). Nothing else was changed; "
                                   "ask your PACS administrator.")
        stored = answer.get("ReferencedSOPSequence") or []
        return [str(r.ReferencedSOPInstanceUID) for r in stored]

    def store_bytes(self, items: Iterable[bytes]) -> list[str]:
        """STOW-RS store of Part 10 files given as bytes; see :meth:`store`."""
        return self.store([pydicom.dcmread(io.BytesIO(b)) for b in items])


def _study_hit(item: dict) -> StudyHit:
    return StudyHit(
        study_instance_uid=_text(item, "StudyInstanceUID"),
        study_date=_date(_text(item, "StudyDate")),
        patient_id=_text(item, "PatientID"),
        patient_name=_text(item, "PatientName"),
        accession_number=_text(item, "AccessionNumber"),
        description=_text(item, "StudyDescription"),
        modalities=tuple(str(v) for v in _value(item, "ModalitiesInStudy")),
        n_series=_int(item, "NumberOfStudyRelatedSeries"),
        n_instances=_int(item, "NumberOfStudyRelatedInstances"),
    )


def _encode(ds: Dataset) -> bytes:
    """Part 10 bytes of a retrieved instance (its elements written back as received)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds)
    return buf.getvalue()


def _header(ds: Dataset) -> Dataset:
    """A copy of the instance without its pixel data (for export references)."""
    header = Dataset()
    header.file_meta = getattr(ds, "file_meta", Dataset())
    for elem in ds:
        if elem.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            header.add(elem)
    return header
