"""ZIP archives and the files skipped on purpose: members are expanded in memory, within limits.

One bad member never costs the others (issue 24). Before any member is read, the directory's declared
sizes decide what is read:

* a member that compresses better than :data:`MAX_ZIP_RATIO` (allowing :data:`RATIO_SLACK_BYTES` for
  tiny files) is a zip bomb: it is not unpacked and becomes a problem of its own;
* members are read in directory order while their count stays within ``get_settings().max_zip_members``
  and their declared sizes add up to at most ``get_settings().max_zip_mb`` MB and at most
  :data:`MAX_ZIP_RATIO` times the whole ZIP's compressed size; the members past a limit are not read,
  and one problem of the ZIP names them (the ones before stay read);
* the whole ZIP is refused (:class:`ArchiveTooLargeError`) only when nothing would be read: every
  member a bomb, the first member alone over a limit, or a directory of more than
  :data:`MAX_DIRECTORY_FACTOR` times ``max_zip_members`` entries (counted before parsing).

While a member is read, in chunks, it is stopped as soon as it holds more than its declared size, so a
directory that lies cannot make the limits above wrong. A member that cannot be unpacked (damaged data,
wrong CRC-32, encrypted, unknown method) is a problem of its own, with a message by cause. A ZIP whose
directory cannot be read, or disagrees with a member's own header, is read from the members' own
headers (:mod:`core.imaging.zip_repair`). ZIPs inside the ZIP are not opened. Member names are used only
as labels (never as paths on disk), so names such as ``../../etc/passwd`` are harmless.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.config import get_settings
from core.imaging.deid import base_name
from core.imaging.errors import ArchiveTooLargeError, ImagingError, NotAnImageError
from core.imaging.zip_repair import RecoveredZip, recover_zip

__all__ = [
    "MAX_DIRECTORY_FACTOR",
    "MAX_ZIP_RATIO",
    "RATIO_SLACK_BYTES",
    "SKIPPED_SUFFIXES",
    "ZipMember",
    "is_skipped",
    "is_zip",
    "iter_zip",
]

log = logging.getLogger("lungreview.imaging")

#: Largest accepted ratio of uncompressed to compressed size, per ZIP member and for the whole ZIP.
#: DICOM CT slices deflate about 2-5x, a blank slice up to ~100x; classic zip bombs reach 1000x
#: and more (Fifield, "A better zip bomb", 2019), so 200x separates the two with a wide margin.
MAX_ZIP_RATIO = 200.0
#: Bytes a member (or the whole ZIP) may expand to whatever its ratio: tiny files compress absurdly
#: well (an empty DICOM header, a text note) and cannot harm at this size (64 KiB).
RATIO_SLACK_BYTES = 64 << 10
_CHUNK = 1 << 20
_END_RECORD_SPAN = 22 + 0xFFFF
#: A ZIP whose directory counts more than this many times ``max_zip_members`` entries is refused whole,
#: before its directory is parsed (parsing it would itself be the cost the limit is there to bound).
MAX_DIRECTORY_FACTOR = 4

#: File name endings of companion files skipped silently inside folders and ZIPs (TCIA downloads
#: carry XML annotations, ``metadata.csv`` and a ``LICENSE``; exports carry ``.txt`` notes).
SKIPPED_SUFFIXES = frozenset({".xml", ".csv", ".txt", ".md", ".json", ".html", ".htm", ".log", ".ini", ".py"})
_SKIPPED_NAMES = frozenset({"dicomdir", "license", "readme", "thumbs.db", "desktop.ini"})
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def is_skipped(name: str) -> bool:
    """True for files LungReview ignores on purpose inside folders and ZIPs: ``__MACOSX/``,
    dotfiles, DICOMDIR, LICENSE, README and companion files (:data:`SKIPPED_SUFFIXES`)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if any(p == "__MACOSX" or (p.startswith(".") and p not in (".", "..")) for p in parts):
        return True
    base = parts[-1] if parts else name
    stem = base.lower().split(".")[0]
    return stem in _SKIPPED_NAMES or PurePosixPath(base.lower()).suffix in SKIPPED_SUFFIXES


def is_zip(name: str, data: bytes) -> bool:
    """True when ``data`` starts with a ZIP local file header (APPNOTE.TXT 4.3.7), or, for a file named
    ``*.zip``, starts with "PK" (an empty ZIP, 4.3.16, or a damaged first header) or ends with an end of
    central directory record (4.3.16: in the last 65,557 bytes, the record plus its longest comment)."""
    if data[:4] == b"PK\x03\x04":
        return True
    if not name.lower().endswith(".zip"):
        return False
    return data[:2] == b"PK" or data.rfind(b"PK\x05\x06", max(0, len(data) - _END_RECORD_SPAN)) >= 0


@dataclass
class ZipMember:
    """One file of a ZIP: its label ``zip name/member name``, and either its bytes, or why it was
    left out (``skipped`` on purpose, or ``problem``)."""

    label: str
    data: bytes | None = None
    skipped: bool = False
    problem: ImagingError | None = None


def _label(name: str, member: str) -> str:
    return f"{name}/{_UNPRINTABLE.sub('?', member)}"


def _bomb(name: str, detail: str) -> ArchiveTooLargeError:
    return ArchiveTooLargeError(
        f"‘{name}’ looks like a zip bomb: {detail}; it was not opened further. Create the ZIP again from "
        "the image files."
    )


def _member_bomb(label: str, detail: str) -> ArchiveTooLargeError:
    return ArchiveTooLargeError(
        f"‘{label}’ looks like a zip bomb: {detail}; it was not unpacked (the other files of the ZIP were). "
        "Create the ZIP again from the image files."
    )


def _unpack_problem(label: str, exc: BaseException) -> NotAnImageError:
    """The plain problem of a member that :mod:`zipfile` could not unpack (message by cause)."""
    text = str(exc).lower()
    if "encrypt" in text or "password" in text:
        why = "it is password-protected; create the ZIP again without a password"
    elif isinstance(exc, NotImplementedError) or "compression method" in text or "version" in text:
        why = "it uses a ZIP feature LungReview cannot unpack; create the ZIP again with ordinary (deflate) compression"
    elif "crc" in text:
        why = (
            "its contents do not match the checksum stored in the ZIP (it was damaged in transfer or "
            "storage); copy the ZIP again, or create it again from the original files"
        )
    elif "magic number" in text or "differ" in text or "truncated file header" in text or "overlap" in text:
        why = "its entry in the ZIP is damaged; create the ZIP again from the original files"
    else:
        why = "its compressed data is damaged; copy the ZIP again, or create it again from the original files"
    return NotAnImageError(f"‘{label}’ could not be unpacked: {why}.")


def _some(labels: list[str], shown: int = 5) -> str:
    """‘a’, ‘b’, ‘c’ and 12 more."""
    text = ", ".join(f"‘{x}’" for x in labels[:shown])
    return text + (f" and {len(labels) - shown:,} more" if len(labels) > shown else "")


def _open(name: str, data: bytes) -> tuple[zipfile.ZipFile, list[ZipMember]]:
    """The ZIP as :mod:`zipfile` reads it; if its directory cannot be read, the files recovered from their
    own headers (:func:`core.imaging.zip_repair.recover_zip`) and the problems that say so.

    Raises:
        NotAnImageError: neither the directory nor any local file header could be read.
    """
    try:
        return zipfile.ZipFile(io.BytesIO(data)), []
    except Exception:
        log.debug("ZIP %s could not be opened; recovering its files from their headers", name, exc_info=True)
    recovered = recover_zip(data, get_settings().max_zip_members + 1)
    if recovered is None:
        raise NotAnImageError(
            f"‘{name}’ is a damaged ZIP: neither its table of contents nor any file in it can be read; "
            "copy the ZIP again, or create it again from the original files."
        ) from None
    n = len(recovered.names)
    last = recovered.cut or recovered.names[-1]
    notes = [
        ZipMember(
            name,
            problem=NotAnImageError(
                f"‘{name}’ is incomplete or its table of contents is damaged: {n:,} file{'s' if n != 1 else ''} "
                f"{'were' if n != 1 else 'was'} recovered from it and read, but any file stored after "
                f"‘{base_name(last)}’ is missing. Copy the ZIP again (or create it again) to be sure "
                "nothing is left out."
            ),
        )
    ]
    if recovered.cut is not None:
        label = _label(name, recovered.cut)
        notes.append(
            ZipMember(
                label,
                problem=NotAnImageError(
                    f"‘{label}’ is cut off: the ZIP ends inside it; copy the ZIP again (it was not "
                    "transferred completely)."
                ),
            )
        )
    return recovered.zf, notes


def _plan(name: str, infos: list[zipfile.ZipInfo]) -> tuple[dict[int, ZipMember], set[int], list[ZipMember]]:
    """What to read under the limits (see the module docstring), from the directory's declared sizes.

    Returns:
        (zip bomb problems by index into ``infos``; indices of the members to read; problems of the whole
        ZIP, each naming the members a count or size limit leaves out).

    Raises:
        ArchiveTooLargeError: nothing would be read (every member a zip bomb, or the first member
            alone over a limit).
    """
    settings = get_settings()
    limit = settings.max_zip_mb * (1 << 20)
    ratio_total = max(MAX_ZIP_RATIO * sum(i.compress_size for i in infos), RATIO_SLACK_BYTES)
    bombs: dict[int, ZipMember] = {}
    wanted: list[int] = []
    for k, info in enumerate(infos):
        if is_skipped(info.filename):
            continue
        if info.file_size > max(MAX_ZIP_RATIO * info.compress_size, RATIO_SLACK_BYTES):
            label = _label(name, info.filename)
            ratio = info.file_size / max(info.compress_size, 1)
            bombs[k] = ZipMember(
                label, problem=_member_bomb(label, f"it expands {ratio:,.0f} times (limit {MAX_ZIP_RATIO:.0f})")
            )
        else:
            wanted.append(k)
    if bombs and not wanted:
        first = infos[min(bombs)]
        raise _bomb(
            name,
            f"‘{base_name(first.filename)}’ expands {first.file_size / max(first.compress_size, 1):,.0f} times "
            f"(limit {MAX_ZIP_RATIO:.0f})",
        )
    read: list[int] = []
    over_count: list[int] = []
    over_size: list[int] = []
    total = 0
    for k in wanted:
        if len(read) >= settings.max_zip_members:
            over_count.append(k)
        elif over_size or total + infos[k].file_size > min(limit, ratio_total):
            over_size.append(k)
        else:
            read.append(k)
            total += infos[k].file_size
    whole: list[ZipMember] = []
    if over_count:
        labels = [_label(name, infos[k].filename) for k in over_count]
        whole.append(
            ZipMember(
                name,
                problem=ArchiveTooLargeError(
                    f"‘{name}’ holds {len(wanted):,} image files, more than the limit of "
                    f"{settings.max_zip_members:,} (LUNGREVIEW_MAX_ZIP_MEMBERS): the first "
                    f"{settings.max_zip_members:,} were read, the {len(labels):,} after them were not "
                    f"({_some(labels)}). Upload those in another ZIP."
                ),
            )
        )
    if over_size:
        labels = [_label(name, infos[k].filename) for k in over_size]
        if total + infos[over_size[0]].file_size > limit:
            why = f"more than the limit of {settings.max_zip_mb} MB (LUNGREVIEW_MAX_ZIP_MB)"
        else:
            why = f"more than {MAX_ZIP_RATIO:.0f} times its compressed size, as a zip bomb does"
        if not read:
            raise ArchiveTooLargeError(
                f"‘{name}’ expands to {sum(infos[k].file_size for k in over_size) / (1 << 20):,.0f} MB, {why}; "
                "nothing was unpacked. Upload the series in smaller ZIPs."
            )
        whole.append(
            ZipMember(
                name,
                problem=ArchiveTooLargeError(
                    f"‘{name}’ expands to {why}: the {len(read):,} files before "
                    f"‘{base_name(infos[over_size[0]].filename)}’ were read, the {len(labels):,} from it on "
                    f"were not ({_some(labels)}). Upload those in another ZIP."
                ),
            )
        )
    return bombs, set(read), whole


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytes:
    """The bytes of one member, read in chunks and stopped as soon as they exceed its declared size.

    Raises:
        ArchiveTooLargeError: the member holds more than its header declares.
        Exception: whatever :mod:`zipfile` raises (damaged data, bad CRC-32, encrypted, ...).
    """
    chunks: list[bytes] = []
    size = 0
    with zf.open(info) as fh:
        while chunk := fh.read(_CHUNK):
            size += len(chunk)
            if size > info.file_size:
                raise _member_bomb(label, "it holds more data than its header declares")
            chunks.append(chunk)
    return b"".join(chunks)


def _read_from_own_header(recovered: RecoveredZip | None, info: zipfile.ZipInfo, label: str) -> bytes | None:
    """A member that failed as the directory describes it, read as its own local header describes it
    (the second account of every member, APPNOTE.TXT 4.3.7), when the two differ: then the directory,
    not the member, may be what is damaged. None when they agree, the header is not found, its sizes
    break the limits the directory's passed, or it fails too."""
    if recovered is None:
        return None
    own = next((o for o in recovered.zf.infolist() if o.filename == info.filename), None)
    if own is None or (own.header_offset, own.compress_size, own.file_size, own.CRC) == (
        info.header_offset, info.compress_size, info.file_size, info.CRC
    ):
        return None
    if own.file_size > max(MAX_ZIP_RATIO * own.compress_size, RATIO_SLACK_BYTES) or own.file_size > info.file_size:
        return None
    try:
        return _read_member(recovered.zf, own, label)
    except Exception:
        log.debug("ZIP member %s could not be read from its own header either", label, exc_info=True)
        return None


def iter_zip(name: str, data: bytes) -> Iterator[ZipMember]:
    """The files of a ZIP, in directory order, read within the limits (see the module docstring).

    One damaged or oversized member never costs the others: a member that cannot be unpacked (damaged
    data, wrong CRC-32, encrypted, unknown method, a zip bomb, more data than declared) is yielded
    with its ``problem`` and the next one is read. A ZIP whose directory cannot be read gives the
    files recovered from their own headers, after a problem naming the ZIP that says so. When the
    directory disagrees with a member's own header and the member fails, the member is read as its
    header describes it, and a last problem naming the ZIP says which members were read so.

    Args:
        name: the ZIP's label. data: its bytes.

    Yields:
        ZipMember per file (directories are left out): first problems of the whole ZIP (``label`` is
        ``name``: damaged directory, members left out by the limits, named), then per member:
        skipped companion files, members that could not be unpacked or are ZIPs themselves (with
        ``problem``), else with ``data``.

    Raises:
        ArchiveTooLargeError: nothing would be read: the directory counts more than
            :data:`MAX_DIRECTORY_FACTOR` times ``max_zip_members`` entries, every member is a zip
            bomb, or the first member alone is over ``max_zip_mb``.
        NotAnImageError: nothing at all can be read from the ZIP (directory and local headers damaged).
    """
    settings = get_settings()
    if data.count(b"PK\x01\x02") > MAX_DIRECTORY_FACTOR * settings.max_zip_members:  # counted cheaply
        raise ArchiveTooLargeError(
            f"‘{name}’ holds more than {MAX_DIRECTORY_FACTOR * settings.max_zip_members:,} files, far more than the "
            f"limit of {settings.max_zip_members:,} (LUNGREVIEW_MAX_ZIP_MEMBERS); upload the series in smaller ZIPs."
        )
    zf, notes = _open(name, data)
    infos = [i for i in zf.infolist() if not i.is_dir()]
    bombs, to_read, whole = _plan(name, infos)
    yield from notes
    yield from whole
    recovered: RecoveredZip | None = None
    tried_recovery = bool(notes)  # a ZIP already recovered from its headers has no second witness
    from_own_header: list[str] = []
    for k, info in enumerate(infos):
        label = _label(name, info.filename)
        if is_skipped(info.filename):
            yield ZipMember(label, skipped=True)
            continue
        if k in bombs:
            yield bombs[k]
            continue
        if k not in to_read:
            continue  # named by a problem of the whole ZIP
        try:
            content = _read_member(zf, info, label)
        except ImagingError as exc:
            yield ZipMember(label, problem=exc)
            continue
        except Exception as exc:  # zlib.error, LZMAError, BadZipFile, bad CRC, encrypted, "negative seek", ...
            log.debug("ZIP member %s could not be unpacked", label, exc_info=True)
            if not tried_recovery:
                tried_recovery = True
                recovered = recover_zip(data, settings.max_zip_members + 1)
            content = _read_from_own_header(recovered, info, label)
            if content is None:
                yield ZipMember(label, problem=_unpack_problem(label, exc))
                continue
            from_own_header.append(label)
        if is_zip(info.filename, content) or content[:4] == b"PK\x05\x06":
            yield ZipMember(
                label,
                problem=NotAnImageError(
                    f"‘{label}’ is a ZIP inside the ZIP, which LungReview does not open; unpack it first."
                ),
            )
            continue
        yield ZipMember(label, data=content)
    if from_own_header:
        n = len(from_own_header)
        yield ZipMember(
            name,
            problem=NotAnImageError(
                f"‘{name}’ has a damaged table of contents: {n:,} file{'s were' if n != 1 else ' was'} read from "
                f"{'their' if n != 1 else 'its'} own header{'s' if n != 1 else ''} instead ({_some(from_own_header)}). "
                "Copy the ZIP again (or create it again) to be sure nothing is left out."
            ),
        )
