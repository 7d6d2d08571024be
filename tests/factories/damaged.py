"""Damaged uploads of known shape, for "no good file lost to a bad one" (issue 24).

Each builder returns a :class:`Damaged`: the upload item (name, bytes), the labels of the files in it
that are intact and must still be read (members of a damaged ZIP that the damage does not touch), and
the label the reader must name in a problem. ZIP damages are made on a ZIP written by
:func:`make_zip` (fixed time stamps, so the bytes repeat), at the offsets its directory gives:
APPNOTE.TXT 4.3.7 (local file header: flags at +6, CRC-32 at +14), 4.3.12 (central directory header:
flags at +8, CRC-32 at +16) and 4.3.16 (end of central directory record). DICOM damages are made on
:func:`tests.factories.dicom.make_dicom` files and only touch the pixel data or its transfer syntax.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field

import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, JPEGBaseline8Bit, JPEGLSLossless, RLELossless, generate_uid

from tests.factories.dicom import make_dicom

__all__ = [
    "DICOM_DAMAGES",
    "ZIP_DAMAGES",
    "Damaged",
    "damaged_dicom",
    "damaged_zip",
    "good_series",
    "make_zip",
]

ZIP_DAMAGES = (
    "bad-member-data",  # a member's compressed bytes flipped (inflate fails or the CRC differs)
    "bad-crc",  # a member's CRC-32 changed in both headers
    "encrypted-member",  # a member flagged as encrypted (bit 0 of the general purpose flags)
    "bad-local-header",  # a member's local header signature damaged
    "bomb-member",  # a member of 4 MiB of zeros (deflates about 1000 times)
    "truncated-in-member",  # the ZIP cut inside its last member: no central directory left
    "truncated-directory",  # the ZIP cut inside its central directory
    "bad-directory",  # every central directory signature damaged
    "bad-end-record",  # the end of central directory record damaged
)
DICOM_DAMAGES = (
    "truncated-pixels",  # the file cut inside its (uncompressed) pixel data
    "wrong-syntax-jpeg",  # uncompressed pixel data labelled JPEG Baseline
    "wrong-syntax-native",  # RLE fragments labelled Explicit VR Little Endian
    "bad-rle-stream",  # RLE fragment bytes damaged
    "junk-jpeg2000",  # encapsulated junk labelled JPEG 2000
    "junk-jpeg-ls",  # encapsulated junk labelled JPEG-LS lossless
    "huge-junk-jpeg2000",  # junk declaring 5 frames of 6322 x 6322: all but 161,580 of the default budget
)


@dataclass
class Damaged:
    """One damaged upload item.

    Attributes:
        name: the upload's name. data: its bytes.
        intact: labels (``zip name/member``) of files inside it that must still be read.
        bad: the label a problem must name (the ZIP, or ``zip name/member``).
    """

    name: str
    data: bytes
    intact: list[str] = field(default_factory=list)
    bad: str = ""


def make_zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A ZIP of ``members`` with a fixed time stamp, so the bytes repeat for the same members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


def good_series(n: int = 3, rows: int = 16, cols: int = 16, stem: str = "good") -> tuple[str, str, list[tuple[str, bytes]]]:
    """A small CT series: (study UID, series UID, [(name, bytes)] of ``n`` slices 1 mm apart)."""
    study, series = generate_uid(), generate_uid()
    files = [
        (
            f"{stem}{i}.dcm",
            make_dicom(
                rows=rows, cols=cols, study_uid=study, series_uid=series, instance_number=i + 1,
                position=(0.0, 0.0, float(i)),
            ),
        )
        for i in range(n)
    ]
    return study, series, files


def _central_offsets(data: bytes) -> list[int]:
    """Offsets of the central directory headers, in order."""
    out, i = [], data.find(b"PK\x01\x02")
    while i >= 0:
        out.append(i)
        i = data.find(b"PK\x01\x02", i + 4)
    return out


def damaged_zip(kind: str, stem: str, n_good: int = 2, victim: int | None = None) -> Damaged:
    """A ZIP of ``n_good`` small DICOM files (own series each) and one damage of ``kind``.

    Args:
        kind: one of :data:`ZIP_DAMAGES`.
        stem: makes the ZIP's and members' names unique (``{stem}.zip``, ``{stem}_m{j}.dcm``).
        n_good: members written before the damage (>= 1).
        victim: for member damages, the index of the damaged member (default: the last one).
    """
    name = f"{stem}.zip"
    members = [(f"{stem}_m{j}.dcm", make_dicom(rows=8, cols=8, series_number=10 + j)) for j in range(n_good)]
    if kind == "bomb-member":
        members.append((f"{stem}_bomb.dcm", bytes(4 << 20)))
        data = make_zip(members)
        return Damaged(name, data, [f"{name}/{m}" for m, _ in members[:-1]], f"{name}/{stem}_bomb.dcm")
    data = make_zip(members)
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    v = len(infos) - 1 if victim is None else victim
    info = infos[v]
    intact = [f"{name}/{m}" for j, (m, _) in enumerate(members) if j != v]
    bad_member = f"{name}/{info.filename}"
    buf = bytearray(data)
    cds = _central_offsets(data)
    if kind == "bad-member-data":
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        for k in range(start + 2, min(start + 40, start + info.compress_size)):
            buf[k] ^= 0x5A
        return Damaged(name, bytes(buf), intact, bad_member)
    if kind == "bad-crc":
        for off in (info.header_offset + 14, cds[v] + 16):
            buf[off] ^= 0xFF
        return Damaged(name, bytes(buf), intact, bad_member)
    if kind == "encrypted-member":
        buf[info.header_offset + 6] |= 0x01
        buf[cds[v] + 8] |= 0x01
        return Damaged(name, bytes(buf), intact, bad_member)
    if kind == "bad-local-header":
        buf[info.header_offset + 2] = 0x09
        return Damaged(name, bytes(buf), intact, bad_member)
    if kind == "truncated-in-member":
        cut = info.header_offset + 30 + len(info.filename.encode()) + info.compress_size // 2
        return Damaged(name, data[:cut], intact, name)
    every = [f"{name}/{m}" for m, _ in members]
    if kind == "truncated-directory":
        return Damaged(name, data[: cds[0] + 20], every, name)
    if kind == "bad-directory":
        for off in cds:
            buf[off + 3] = 0x09
        return Damaged(name, bytes(buf), every, name)
    if kind == "bad-end-record":
        end = data.rfind(b"PK\x05\x06")
        buf[end + 16 : end + 20] = struct.pack("<I", len(data) + 12345)  # directory offset past the end
        return Damaged(name, bytes(buf), every, name)
    raise ValueError(f"unknown ZIP damage {kind!r}; one of {ZIP_DAMAGES}")


def _rewrite(data: bytes, syntax: str | None = None, **changes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    for key, value in changes.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    with pydicom.config.disable_value_validation():
        ds.save_as(buf)
    return buf.getvalue()


def _relabel(data: bytes, syntax: str) -> bytes:
    """``data`` with only its file meta Transfer Syntax UID changed (the data set bytes kept as they are,
    which pydicom refuses to write for a compressed syntax with native pixel data)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    start = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength  # preamble, DICM, (0002,0000) element
    meta = pydicom.dataset.FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    buf.write(data[:132])
    pydicom.filewriter.write_file_meta_info(buf, meta, enforce_standard=True)
    buf.write(data[start:])
    return buf.getvalue()


def _encapsulated(data: bytes, syntax: str, fragment: bytes, **changes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = syntax
    for key, value in changes.items():
        setattr(ds, key, value)
    frames = int(changes.get("NumberOfFrames", 1))
    ds.PixelData = encapsulate([fragment] * frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buf = io.BytesIO()
    with pydicom.config.disable_value_validation():
        ds.save_as(buf)
    return buf.getvalue()


def damaged_dicom(kind: str, name: str, study_uid: str | None = None, series_uid: str | None = None,
                  position: float = 0.5) -> Damaged:
    """A DICOM file whose pixel data cannot be decoded, of ``kind`` (one of :data:`DICOM_DAMAGES`).

    Args:
        name: its upload name. study_uid, series_uid: put it in that series (a damaged slice of it),
            else its own. position: its ImagePositionPatient z in mm.
    """
    base = make_dicom(rows=16, cols=16, study_uid=study_uid, series_uid=series_uid, position=(0.0, 0.0, position),
                      instance_number=99)
    if kind == "truncated-pixels":
        return Damaged(name, base[: len(base) - 200], bad=name)
    if kind == "wrong-syntax-jpeg":
        return Damaged(name, _relabel(base, JPEGBaseline8Bit), bad=name)
    if kind in ("wrong-syntax-native", "bad-rle-stream"):
        ds = pydicom.dcmread(io.BytesIO(base))
        ds.compress(RLELossless, generate_instance_uid=False)
        buf = io.BytesIO()
        ds.save_as(buf)
        rle = buf.getvalue()
        if kind == "wrong-syntax-native":
            return Damaged(name, _rewrite(rle, pydicom.uid.ExplicitVRLittleEndian), bad=name)
        cut = bytearray(rle)
        i = rle.rfind(b"\xfe\xff\x00\xe0")  # the last fragment's item tag (PS3.5 A.4)
        for k in range(i + 8 + 64, len(cut) - 12):  # after the 64-byte RLE header: the segments
            cut[k] ^= 0xA5
        struct.pack_into("<L", cut, i + 8 + 4, 60_000)  # and the first segment's offset past the end
        return Damaged(name, bytes(cut), bad=name)
    junk = b"\x00\x11\x22\x33" * 16
    if kind == "junk-jpeg2000":
        return Damaged(name, _encapsulated(base, JPEG2000, junk), bad=name)
    if kind == "junk-jpeg-ls":
        return Damaged(name, _encapsulated(base, JPEGLSLossless, junk), bad=name)
    if kind == "huge-junk-jpeg2000":
        return Damaged(name, _encapsulated(base, JPEG2000, junk, Rows=6322, Columns=6322, NumberOfFrames="5"),
                       bad=name)
    raise ValueError(f"unknown DICOM damage {kind!r}; one of {DICOM_DAMAGES}")
