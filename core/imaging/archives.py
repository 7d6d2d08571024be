"""ZIP archives and the files skipped on purpose: members are expanded in memory, within limits.

Before a member is read, the whole ZIP is refused (:class:`ArchiveTooLargeError`) when it holds more
than ``get_settings().max_zip_members`` files, when the sizes its directory declares add up to more than
``get_settings().max_zip_mb`` MB, or when a member or the whole ZIP compresses better than
:data:`MAX_ZIP_RATIO` (allowing :data:`RATIO_SLACK_BYTES` for tiny files). While members are read, in
chunks, the bytes actually produced are counted against the same limits, so a ZIP whose directory lies
is stopped as soon as it exceeds them. ZIPs inside the ZIP are not opened. Member names are used only
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

__all__ = [
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
    """True when ``data`` starts with a ZIP local file header, or is an empty ZIP named ``*.zip``
    (APPNOTE.TXT 4.3.7 and 4.3.16 signatures)."""
    return data[:4] == b"PK\x03\x04" or (data[:4] == b"PK\x05\x06" and name.lower().endswith(".zip"))


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


def _unpack_problem(label: str, exc: BaseException) -> NotAnImageError:
    text = str(exc).lower()
    if "encrypt" in text or "password" in text:
        why = "it is password-protected; create the ZIP again without a password"
    elif isinstance(exc, NotImplementedError) or "compression method" in text or "version" in text:
        why = "it uses a ZIP feature LungReview cannot unpack; create the ZIP again with ordinary (deflate) compression"
    else:
        why = "the ZIP is damaged; create the ZIP again"
    return NotAnImageError(f"‘{label}’ could not be unpacked: {why}.")


def iter_zip(name: str, data: bytes) -> Iterator[ZipMember]:
    """The files of a ZIP, in directory order, read within the limits (see the module docstring).

    Args:
        name: the ZIP's label. data: its bytes.

    Yields:
        ZipMember per file (directories are left out): skipped companion files, members that could
        not be unpacked or are ZIPs themselves (with ``problem``), else with ``data``.

    Raises:
        ArchiveTooLargeError: too many members, too large once expanded, or a zip bomb; raised before
            the first member when the directory shows it, else as soon as the bytes read show it.
        NotAnImageError: the ZIP's directory is damaged (nothing can be read from it).
    """
    settings = get_settings()
    limit = settings.max_zip_mb * (1 << 20)
    if data.count(b"PK\x01\x02") > settings.max_zip_members:  # central directory headers, counted cheaply
        raise ArchiveTooLargeError(
            f"‘{name}’ holds more than {settings.max_zip_members:,} files (LUNGREVIEW_MAX_ZIP_MEMBERS); "
            "upload the series in smaller ZIPs."
        )
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except Exception:
        log.debug("ZIP %s could not be opened", name, exc_info=True)
        raise NotAnImageError(
            f"‘{name}’ is a damaged ZIP (its table of contents cannot be read); create the ZIP again."
        ) from None
    if len(infos) > settings.max_zip_members:
        raise ArchiveTooLargeError(
            f"‘{name}’ holds {len(infos):,} files, more than the limit of {settings.max_zip_members:,} "
            "(LUNGREVIEW_MAX_ZIP_MEMBERS); upload the series in smaller ZIPs."
        )
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    if total > limit:
        raise ArchiveTooLargeError(
            f"‘{name}’ expands to {total / (1 << 20):,.0f} MB, more than the limit of {settings.max_zip_mb} MB "
            "(LUNGREVIEW_MAX_ZIP_MB); upload the series in smaller ZIPs."
        )
    for info in infos:
        if info.file_size > max(MAX_ZIP_RATIO * info.compress_size, RATIO_SLACK_BYTES):
            raise _bomb(
                name,
                f"‘{base_name(info.filename)}’ expands {info.file_size / max(info.compress_size, 1):,.0f} times "
                f"(limit {MAX_ZIP_RATIO:.0f})",
            )
    if total > max(MAX_ZIP_RATIO * packed, RATIO_SLACK_BYTES):
        raise _bomb(name, f"it expands {total / max(packed, 1):,.0f} times (limit {MAX_ZIP_RATIO:.0f})")

    expanded = 0
    for info in infos:
        label = _label(name, info.filename)
        if is_skipped(info.filename):
            yield ZipMember(label, skipped=True)
            continue
        allowed = max(MAX_ZIP_RATIO * info.compress_size, RATIO_SLACK_BYTES)
        chunks: list[bytes] = []
        size = 0
        try:
            with zf.open(info) as fh:
                while chunk := fh.read(_CHUNK):
                    size += len(chunk)
                    expanded += len(chunk)
                    if size > info.file_size:
                        raise _bomb(name, f"‘{base_name(info.filename)}’ holds more data than its header declares")
                    if size > allowed:
                        raise _bomb(name, f"‘{base_name(info.filename)}’ expands more than {MAX_ZIP_RATIO:.0f} times")
                    if expanded > limit:
                        raise ArchiveTooLargeError(
                            f"‘{name}’ expands to more than the limit of {settings.max_zip_mb} MB "
                            "(LUNGREVIEW_MAX_ZIP_MB); upload the series in smaller ZIPs."
                        )
                    chunks.append(chunk)
        except ImagingError:
            raise
        except Exception as exc:  # zlib.error, LZMAError, BadZipFile, bad CRC, encrypted, "negative seek", ...
            log.debug("ZIP member %s could not be unpacked", label, exc_info=True)
            yield ZipMember(label, problem=_unpack_problem(label, exc))
            continue
        content = b"".join(chunks)
        del chunks
        if is_zip(info.filename, content) or content[:4] == b"PK\x05\x06":
            yield ZipMember(
                label,
                problem=NotAnImageError(
                    f"‘{label}’ is a ZIP inside the ZIP, which LungReview does not open; unpack it first."
                ),
            )
            continue
        yield ZipMember(label, data=content)
