"""Recovering the files of a ZIP whose table of contents is damaged or missing, from their own headers.

A ZIP stores every file twice over: a local file header right before the file's data (APPNOTE.TXT
4.3.7) and an entry in the central directory at the end (4.3.12), found through the end of central
directory record (4.3.16). Python's :mod:`zipfile` reads only the central directory, so a ZIP cut short
in transfer (no directory left), or one whose directory or end record is damaged, yields nothing, even
though the files before the damage are intact. :func:`recover_zip` walks the local file headers from
the start, keeps every file whose data lies wholly inside the bytes, and writes a new central
directory for them, so that :mod:`zipfile` (its decompressors, CRC-32 checks and encryption checks)
reads them as from any ZIP; the caller's size limits then apply unchanged. Files whose sizes follow
their data in a data descriptor (flag bit 3, APPNOTE 4.3.9) are delimited by the descriptor. This is
the approach of Info-ZIP's ``zip -FF``; no maintained Python library does it.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field

__all__ = ["RecoveredZip", "recover_zip"]

_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
_DESCRIPTOR = b"PK\x07\x08"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # APPNOTE 4.3.7: 30 bytes
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")  # APPNOTE 4.3.12: 46 bytes
_END_RECORD = struct.Struct("<4s4H2LH")  # APPNOTE 4.3.16: 22 bytes
_USES_DESCRIPTOR = 0x08
_ZIP64_MARK = 0xFFFFFFFF
#: Most entries an end of central directory record can count without ZIP64 (APPNOTE 4.4.21).
MAX_ENTRIES = 0xFFFF


@dataclass
class _Entry:
    offset: int
    name: bytes
    version: int
    flags: int
    method: int
    time: int
    date: int
    crc: int
    csize: int
    usize: int
    end: int  # just past the file's data (and its data descriptor)


@dataclass
class RecoveredZip:
    """What :func:`recover_zip` found.

    Attributes:
        zf: a :class:`zipfile.ZipFile` over the intact files (their bytes plus a new directory).
        cut: the name of the file the bytes end inside (its data is incomplete), else None.
        names: the names of the files recovered, in the order they are stored.
    """

    zf: zipfile.ZipFile
    cut: str | None = None
    names: list[str] = field(default_factory=list)


def _decode(name: bytes, flags: int) -> str:
    """A stored name as :mod:`zipfile` decodes it (UTF-8 when flag bit 11 is set, else cp437)."""
    return name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")


def _descriptor_end(data: bytes, start: int) -> tuple[int, int, int, int] | None:
    """(crc, compressed size, size, end) of a file whose sizes follow its data (APPNOTE 4.3.9): the
    first descriptor after ``start``, with or without its optional signature, whose compressed size
    equals the bytes between ``start`` and it; None when there is none."""
    pos = start
    # next occurrence of each signature at or after pos; each is searched again only once passed,
    # so the walk stays linear in len(data) however many signature-like bytes the data holds
    nxt = {sig: data.find(sig, pos) for sig in (_DESCRIPTOR, _LOCAL, _CENTRAL)}
    while True:
        for sig, at in nxt.items():
            if 0 <= at < pos:
                nxt[sig] = data.find(sig, pos)
        candidates = []
        d = nxt[_DESCRIPTOR]
        if d >= 0 and d + 16 <= len(data):
            candidates.append((d, d + 4, d + 16))
        for header in (nxt[_LOCAL], nxt[_CENTRAL]):
            if header >= start + 12:
                candidates.append((header - 12, header - 12, header))
        for at, fields, end in sorted(candidates):
            crc, csize, usize = struct.unpack_from("<3L", data, fields)
            if csize == at - start:
                return crc, csize, usize, end
        found = [i for i in nxt.values() if i >= 0]
        if not found:
            return None
        pos = min(found) + 4


def _walk(data: bytes, max_entries: int) -> tuple[list[_Entry], str | None]:
    """The intact files of ``data`` by their local headers, and the name of a file cut short."""
    entries: list[_Entry] = []
    pos = data.find(_LOCAL)
    while pos >= 0 and len(entries) < max_entries:
        if pos + _LOCAL_HEADER.size > len(data):
            return entries, None
        (_, version, flags, method, time, date, crc, csize, usize, name_len, extra_len) = _LOCAL_HEADER.unpack_from(
            data, pos
        )
        start = pos + _LOCAL_HEADER.size + name_len + extra_len
        name = data[pos + _LOCAL_HEADER.size : pos + _LOCAL_HEADER.size + name_len]
        if start > len(data):
            return entries, _decode(name, flags) if len(name) == name_len else None
        if csize == _ZIP64_MARK or usize == _ZIP64_MARK:
            return entries, _decode(name, flags)  # over 4 GiB: beyond any upload limit, and ZIP64
        end = start + csize
        if flags & _USES_DESCRIPTOR:
            found = _descriptor_end(data, start)
            if found is None:
                return entries, _decode(name, flags)
            crc, csize, usize, end = found
        elif end > len(data):
            return entries, _decode(name, flags)
        entries.append(_Entry(pos, name, version, flags, method, time, date, crc, csize, usize, end))
        pos = data.find(_LOCAL, end)
    return entries, None


def recover_zip(data: bytes, max_entries: int = MAX_ENTRIES) -> RecoveredZip | None:
    """The intact files of a ZIP, found by their local file headers (see the module docstring).

    Args:
        data: the ZIP's bytes (any damage after, or inside, the files).
        max_entries: the most files to recover (capped at :data:`MAX_ENTRIES`); the walk stops there.

    Returns:
        RecoveredZip, or None when no file is wholly inside ``data`` (and nothing was cut short).
        The files' data is not read here: a file whose data is damaged still fails when read
        (CRC-32 or decompression error), as it would from an undamaged directory.
    """
    entries, cut = _walk(data, min(max_entries, MAX_ENTRIES))
    if not entries:
        return None
    body = data[: max(e.end for e in entries)]
    directory = io.BytesIO()
    for e in entries:
        directory.write(
            _CENTRAL_HEADER.pack(
                _CENTRAL, 20, 0, e.version & 0xFF, 0, e.flags, e.method, e.time, e.date, e.crc, e.csize, e.usize,
                len(e.name), 0, 0, 0, 0, 0, e.offset,
            )
        )
        directory.write(e.name)
    cd = directory.getvalue()
    end = _END_RECORD.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(cd), len(body), 0)
    try:
        zf = zipfile.ZipFile(io.BytesIO(body + cd + end))
    except Exception:  # cannot happen for a directory written as above; refuse rather than guess
        return None
    return RecoveredZip(zf, cut, [_decode(e.name, e.flags) for e in entries])
