"""The entry points: uploads (name, bytes) or paths on disk -> :class:`ReadResult`.

For every file: ZIPs are expanded (:mod:`core.imaging.archives`); a file whose bytes equal a file
already read (same sha256) is counted once and listed in ``ReadResult.duplicates``; the rest is
tried as DICOM (:mod:`core.imaging.dicom`), then as a JPG/PNG picture (:mod:`core.imaging.pictures`),
else it is "not an image". All files of one call share one :class:`PixelBudget`; a file that fails to
decode gives its share back. Whatever goes wrong with one file becomes a :class:`FileProblem` of that
file, with a plain message; the other files are still read (issue 24: no good file lost to a bad one).
A DICOM file that fails but whose header names a series that was read leaves that series in place
without it: the series' ``metadata["notes"]`` and the file's problem say that the series has a gap
there (rather than refusing the series, or closing the gap silently). :func:`read_uploads` is the one entry for bytes (the dashboard's uploads, files
retrieved from a PACS); :func:`read_paths` reads files, folders and ZIPs from disk.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pydicom

from core.imaging.archives import is_skipped, is_zip, iter_zip
from core.imaging.assembly import Picture, assemble_dicom, assemble_pictures, natural_key
from core.imaging.deid import base_name, study_key_for
from core.imaging.dicom import DicomInstance, read_dicom
from core.imaging.errors import (
    EmptyArchiveError,
    ImageTooLargeError,
    ImagingError,
    MixedSeriesError,
    NotAnImageError,
)
from core.imaging.limits import PixelBudget
from core.imaging.pictures import open_picture, picture_slice
from core.imaging.types import FileProblem, ReadResult, Series, Study

__all__ = ["read_paths", "read_series", "read_uploads"]

log = logging.getLogger("lungreview.imaging")


#: Reads allowed when a DICOM file that failed is parsed again for its Series Instance UID alone (the
#: UIDs sit in group 0020, a few hundred reads into any CT header).
_UID_PEEK_READS = 20_000


class _Bounded(io.BytesIO):
    def __init__(self, data: bytes, reads: int) -> None:
        super().__init__(data)
        self._left = reads

    def read(self, size: int | None = -1) -> bytes:
        self._left -= 1
        if self._left < 0:
            raise EOFError("read limit")
        return super().read(size)


def _series_uid_of(data: bytes) -> str | None:
    """The Series Instance UID of a DICOM file that could not be decoded, from its header alone (pixel
    data not read, at most :data:`_UID_PEEK_READS` reads); None when it cannot be found."""
    if data[128:132] != b"DICM":
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(
                _Bounded(data, _UID_PEEK_READS), stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]
            )
            uid = str(ds.get("SeriesInstanceUID") or "").strip()
    except Exception:
        return None
    return uid or None


def _with_more(error: ImagingError, more: str) -> ImagingError:
    """A copy of ``error`` (same type and attributes) whose message ends with ``more``."""
    new = copy.copy(error)
    new.args = (f"{error} {more}",)
    return new


def _unexpected(name: str) -> NotAnImageError:
    return NotAnImageError(
        f"‘{name}’ could not be read: it is damaged or in a form LungReview does not read; copy or "
        "export it again."
    )


class _Reader:
    """Collects files (loose or from ZIPs) of one call, then assembles studies."""

    def __init__(self) -> None:
        self.instances: list[DicomInstance] = []
        self.pictures: list[Picture] = []
        self.problems: list[FileProblem] = []
        self.skipped: list[str] = []
        self.duplicates: list[str] = []
        self.budget = PixelBudget()
        self._seen: dict[str, str] = {}  # sha256 hex -> first name
        self._failed_slices: dict[str, list[str]] = {}  # series key -> labels of its files that failed

    def _is_duplicate(self, name: str, data: bytes) -> tuple[bool, str]:
        digest = hashlib.sha256(data).hexdigest()
        first = self._seen.get(digest)
        if first is not None:
            self.duplicates.append(f"‘{name}’ is the same file as ‘{first}’; it was counted once.")
            return True, digest
        self._seen[digest] = name
        return False, digest

    def add_bytes(self, name: str, data: bytes) -> None:
        """Add one upload: a ZIP or a single file. Problems go to ``problems``."""
        if is_zip(name, data):
            duplicate, _ = self._is_duplicate(name, data)
            if not duplicate:
                self.add_zip(name, data)
        else:
            self.add_file(name, data)

    def add_file(self, name: str, data: bytes) -> bool:
        """Read one file; True when it gave an image (or repeats one). Errors go to ``problems``."""
        try:
            return self._add_file(name, data)
        except ImagingError as exc:
            self.problems.append(FileProblem(name, exc))
        except MemoryError:
            self.problems.append(
                FileProblem(name, ImageTooLargeError(f"‘{name}’ is too large to read in the memory available."))
            )
        except Exception:  # a decoder bug must not take the whole upload down
            log.warning("unexpected failure reading %s", name, exc_info=True)
            self.problems.append(FileProblem(name, _unexpected(name)))
        return False

    def _add_file(self, name: str, data: bytes) -> bool:
        if not data:
            raise NotAnImageError(f"‘{name}’ is empty (0 bytes); copy or export it again.")
        duplicate, digest = self._is_duplicate(name, data)
        if duplicate:
            return True
        try:
            with self.budget.tentative():  # a file that fails gives its pixels back to the upload
                inst = read_dicom(name, data, digest, self.budget)
        except ImagingError:
            uid = _series_uid_of(data)
            if uid is not None:
                self._failed_slices.setdefault(study_key_for(uid), []).append(name)
            raise
        if inst is not None:
            self.instances.append(inst)
            return True
        with self.budget.tentative():
            opened = open_picture(name, data, self.budget)
        if opened is not None:
            arr, kind, notes = opened
            self.pictures.append(Picture(name, digest, kind, picture_slice(name, arr), notes))
            return True
        raise NotAnImageError(
            f"‘{name}’ is not a DICOM file or a JPG/PNG picture; upload CT images (DICOM files, a ZIP "
            "of them, or JPG/PNG slices)."
        )

    def add_zip(self, name: str, data: bytes) -> None:
        """Read the files of a ZIP (see :func:`core.imaging.archives.iter_zip`); every member's problem,
        and every problem of the ZIP as a whole, goes to ``problems``, and the members read stay read."""
        first_problem = len(self.problems)
        images = 0
        try:
            for member in iter_zip(name, data):
                if member.skipped:
                    self.skipped.append(member.label)
                elif member.problem is not None:
                    self.problems.append(FileProblem(member.label, member.problem))
                else:
                    images += self.add_file(member.label, member.data or b"")
        except ImagingError as exc:  # nothing could be read: the directory is unreadable, or over a limit
            self.problems.append(FileProblem(name, exc))
            return
        own = [p for p in self.problems[first_problem:] if p.name == name]
        if images == 0 and not own:
            detail = (
                f" (first problem: {self.problems[first_problem].message})"
                if len(self.problems) > first_problem
                else ""
            )
            self.problems.insert(
                first_problem,
                FileProblem(
                    name,
                    EmptyArchiveError(
                        f"‘{name}’ holds no DICOM, JPG or PNG file LungReview can read{detail}; "
                        "check that it contains the image series."
                    ),
                ),
            )

    def add_path(self, path: Path) -> None:
        """Add a file, or every file under a folder (natural order), or report a missing path."""
        if path.is_dir():
            for child in sorted(path.rglob("*"), key=lambda p: natural_key(str(p))):
                if not child.is_file():
                    continue
                rel = child.relative_to(path).as_posix()
                if is_skipped(rel):
                    self.skipped.append(rel)
                    continue
                try:  # a bad ZIP inside the folder must not stop the walk
                    self.add_bytes(rel, child.read_bytes())
                except ImagingError as exc:
                    self.problems.append(FileProblem(rel, exc))
                except OSError:
                    self.problems.append(
                        FileProblem(rel, ImagingError(f"‘{rel}’ could not be opened; check that it can be read."))
                    )
        elif path.is_file():
            self.add_bytes(path.name, path.read_bytes())
        else:
            self.problems.append(
                FileProblem(str(path), ImagingError(f"‘{path}’ does not exist; check the path."))
            )

    def finish(self) -> ReadResult:
        """Assemble what was read; a failure of assembly is a problem, never an exception."""
        try:
            studies = assemble_dicom(self.instances, self.problems)
        except Exception:
            log.warning("unexpected failure assembling DICOM series", exc_info=True)
            studies = []
            self.problems.append(FileProblem("(DICOM series)", _unexpected("the DICOM series")))
        try:
            self._note_gaps(studies)
        except Exception:  # the notes are a courtesy: never lose the series over them
            log.warning("unexpected failure noting the files missing from series", exc_info=True)
        try:
            studies += assemble_pictures(self.pictures)
        except Exception:
            log.warning("unexpected failure assembling pictures", exc_info=True)
            self.problems.append(FileProblem("(pictures)", _unexpected("the pictures")))
        return ReadResult(studies=studies, problems=self.problems, skipped=self.skipped, duplicates=self.duplicates)

    def _note_gaps(self, studies: list[Study]) -> None:
        """A series read without some of its files says so: a note in its metadata, and each missing
        file's problem says which series it leaves a gap in (the series is kept with the slices read)."""
        for series in (se for st in studies for se in st.series):
            failed = self._failed_slices.get(series.series_key)
            if not failed:
                continue
            names = ", ".join(f"‘{base_name(n)}’" for n in failed)
            series.metadata["notes"] = sorted(
                {
                    *series.metadata.get("notes", []),
                    f"{len(failed)} file{'s' if len(failed) != 1 else ''} of this series could not be read and "
                    f"{'are' if len(failed) != 1 else 'is'} missing from it (a gap in the slices): {names}",
                }
            )
            number = series.metadata.get("series_number")
            more = (
                f"It belongs to series {f'#{number} ' if number is not None else ''}‘{series.description}’, "
                f"which was read from its other {len(series.slices)} slice{'s' if len(series.slices) != 1 else ''} "
                "without it: that series has a gap where this slice belongs (distances and volumes across the "
                "gap are not reliable)."
            )
            for k, p in enumerate(self.problems):
                if p.name in failed:
                    self.problems[k] = FileProblem(p.name, _with_more(p.error, more))


def _guarded(reader: _Reader, step: Callable[[], None], name: str) -> None:
    try:
        step()
    except ImagingError as exc:
        reader.problems.append(FileProblem(name, exc))
    except Exception:
        log.warning("unexpected failure reading %s", name, exc_info=True)
        reader.problems.append(FileProblem(name, _unexpected(name)))


def _raise_if_unusable(result: ReadResult) -> ReadResult:
    if not result.studies:
        if result.problems:
            raise result.problems[0].error
        raise EmptyArchiveError("nothing readable was given (no DICOM, JPG or PNG file); upload CT images.")
    return result


def read_uploads(items: Iterable[tuple[str, bytes]]) -> ReadResult:
    """Read uploads: DICOM files, ZIPs of a study, JPG/PNG slices, in any mix.

    The one entry point for bytes: the dashboard's upload widget and files retrieved from a PACS.

    Args:
        items: (file name, file bytes) pairs. Names are labels only (never opened as paths).

    Returns:
        ReadResult: studies (DICOM grouped by Study/Series Instance UID; all pictures together as
        one study with one series per kind), per-file problems, files skipped on purpose and files
        counted once because they repeat an earlier one. Every slice's ``hu`` is float32 (y, x),
        finite.

    Raises:
        ImagingError (a subclass): only when nothing at all could be read: the first problem's
        error (e.g. ArchiveTooLargeError, NotAnImageError), or EmptyArchiveError when no file
        was given. No other exception escapes for any content of ``items``.
    """
    reader = _Reader()
    for name, data in items:
        label = str(name)
        _guarded(reader, lambda n=label, d=data: reader.add_bytes(n, bytes(d)), label)
    return _raise_if_unusable(reader.finish())


def read_paths(paths: Sequence[str | Path]) -> ReadResult:
    """Read files, folders (recursively) and ZIPs from disk; see :func:`read_uploads`.

    Args:
        paths: files, folders or ZIPs. Inside folders, dotfiles, DICOMDIR and companion files
            (``core.imaging.SKIPPED_SUFFIXES``, LICENSE, README) are skipped and listed in ``skipped``.

    Returns:
        ReadResult.

    Raises:
        ImagingError (a subclass): only when nothing at all could be read (see read_uploads).
    """
    reader = _Reader()
    for p in paths:
        path = Path(p)
        _guarded(reader, lambda path=path: reader.add_path(path), str(path))
    return _raise_if_unusable(reader.finish())


def read_series(paths: Sequence[str | Path] | str | Path) -> Series:
    """Read exactly one series from files/folders/ZIPs.

    Args:
        paths: one path or several.

    Returns:
        Series, slices ordered along the slice normal.

    Raises:
        MixedSeriesError: the paths hold more than one series (or a series mixes slice sizes).
        ImagingError (a subclass): any file could not be read (the first problem's error).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    result = read_paths(paths)
    if result.problems:
        raise result.problems[0].error
    series = result.series
    if len(series) != 1:
        raise MixedSeriesError(
            f"expected one series but found {len(series)} "
            f"({', '.join(s.description for s in series)}); pass the files of one series only."
        )
    return series[0]
