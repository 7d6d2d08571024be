"""Generators of malformed uploads for fuzzing ``core.imaging.read_uploads`` (seeded, deterministic).

Every generator takes a ``random.Random`` and returns a :class:`Case`: the upload items and what a
correct reader must do with them (which good files must still be read, which file repeats another).
Seeds are real files (pydicom's bundled test files, one slice of each shared TCIA series, IQ-OTH/NCCD
JPGs) and synthetic ones (``tests.factories.dicom``); heavy inputs (bombs, floods) are built once
and cached. Only the public API of ``core.imaging`` is used, so the same generator measures any
version of the reader (see ``benchmarks/fuzz_report.py``).
"""

from __future__ import annotations

import io
import math
import os
import random
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom import config as dicom_config
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from tests.factories.dicom import make_dicom

SHARED = Path(
    os.environ.get("LUNGREVIEW_DATA_DIR") or Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
)
BUNDLED = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPEG2000.dcm",
    "rtdose.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "reportsi.dcm",
    "ExplVR_BigEnd.dcm",
    "image_dfl.dcm",
)
_VRS = [v.encode() for v in ["AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"]]


@dataclass
class Case:
    """One generated upload.

    Attributes:
        kind: the generator's name. items: (name, bytes) pairs for ``read_uploads``.
        good: names (labels) of files that must be read (each gives at least one slice).
        duplicate_of: name -> the earlier name whose bytes it repeats.
        heavy: True for denial-of-service inputs (large once expanded or decoded).
        bad: labels of damaged files (or ZIP members) that a problem of their own must name.
    """

    kind: str
    items: list[tuple[str, bytes]]
    good: list[str] = field(default_factory=list)
    duplicate_of: dict[str, str] = field(default_factory=dict)
    heavy: bool = False
    bad: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- seeds
@lru_cache(maxsize=1)
def bundled_seeds() -> tuple[bytes, ...]:
    out = []
    for name in BUNDLED:
        path = get_testdata_file(name, download=False)
        if path:
            out.append(Path(path).read_bytes())
    return tuple(out)


@lru_cache(maxsize=1)
def tcia_seeds() -> tuple[bytes, ...]:
    folder = SHARED / "lung-pet-ct-dx"
    files = sorted(folder.rglob("*.dcm"))
    if not files:
        return ()
    # the first slice of each series
    by_series: dict[Path, Path] = {}
    for f in files:
        by_series.setdefault(f.parent, f)
    return tuple(p.read_bytes() for p in by_series.values())


@lru_cache(maxsize=1)
def jpg_seeds() -> tuple[bytes, ...]:
    folder = SHARED / "iq-othnccd"
    out = []
    for cls in ("Normal cases", "Bengin cases", "Malignant cases"):
        path = folder / cls / f"{cls.split()[0]} case (1).jpg"
        if path.is_file():
            out.append(path.read_bytes())
    return tuple(out)


def _uids(rng: random.Random) -> dict[str, str]:
    """Study, series and SOP instance UIDs drawn from ``rng`` (so cases repeat exactly for a seed)."""
    root = "1.2.826.0.1.3680043.8.498."
    return {k: root + str(rng.randrange(10**15)) for k in ("study_uid", "series_uid", "sop_uid")}


def synthetic_dicom(rng: random.Random) -> bytes:
    """A small valid DICOM of a random kind (UIDs drawn from ``rng``, so never a duplicate)."""
    choice = rng.randrange(6)
    rows, cols = rng.choice([(8, 8), (16, 16), (12, 20)])
    uids = _uids(rng)
    if choice == 0:
        return make_dicom(rows=rows, cols=cols, **uids)
    if choice == 1:
        return make_dicom(rows=rows, cols=cols, photometric="MONOCHROME1", **uids)
    if choice == 2:
        return make_dicom(frame_positions=[(0, 0, float(z)) for z in range(rng.randint(2, 4))], **uids)
    if choice == 3:
        return make_dicom(preamble=False, **uids)
    if choice == 4:
        ds = pydicom.dcmread(io.BytesIO(make_dicom(rows=rows, cols=cols, **uids)))
        ds.compress(RLELossless, generate_instance_uid=False)
        buf = io.BytesIO()
        ds.save_as(buf)
        return buf.getvalue()
    return make_dicom(rows=rows, cols=cols, signed=False, slope=2.0, intercept=-1000.0, **uids)


def seed_dicom(rng: random.Random) -> bytes:
    pools = [bundled_seeds(), tcia_seeds()]
    r = rng.random()
    if r < 0.45:
        return synthetic_dicom(rng)
    if r < 0.85 or not pools[1]:
        return rng.choice(pools[0])
    return rng.choice(pools[1])


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    im.save(buf, format="PNG")
    return buf.getvalue()


def seed_picture(rng: random.Random) -> bytes:
    r = rng.randrange(8)
    grey = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (24, 32), dtype=np.uint8)
    if r == 0 and jpg_seeds():
        return rng.choice(jpg_seeds())
    if r == 1:
        return png_bytes(grey)
    if r == 2:
        return png_bytes(grey.astype(np.uint16) * 257)  # 16-bit grey
    if r == 3:
        return png_bytes(grey, "P")  # palette
    if r == 4:
        return png_bytes(grey, "LA")
    if r == 5:
        return png_bytes(grey, "1")
    if r == 6:
        return png_bytes(np.stack([grey, grey // 2, grey], -1))
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=rng.randint(10, 95))
    return buf.getvalue()


# ----------------------------------------------------------------------------- mutations
def truncate(rng: random.Random, data: bytes) -> bytes:
    if len(data) < 2:
        return data
    if rng.random() < 0.5:
        return data[: rng.randrange(1, min(len(data), 2048))]
    return data[: rng.randrange(1, len(data))]


def flip_bits(rng: random.Random, data: bytes, header_bias: float = 0.7) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        span = min(len(buf), 4096) if rng.random() < header_bias else len(buf)
        i = rng.randrange(span)
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def flip_vr(rng: random.Random, data: bytes) -> bytes:
    """Flip one bit in the VR of a random explicit-VR element of the header."""
    head = data[: min(len(data), 8192)]
    spots = [i for i in range(132, len(head) - 2) if head[i : i + 2] in _VRS]
    if not spots:
        return flip_bits(rng, data)
    i = rng.choice(spots) + rng.randrange(2)
    buf = bytearray(data)
    buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


_FIELD_VALUES: dict[str, list] = {
    "Rows": [0, 1, 2, 7, 17, 255, 4096, 65535],
    "Columns": [0, 1, 3, 17, 255, 4096, 65535],
    "BitsAllocated": [0, 1, 7, 8, 12, 16, 32, 64],
    "BitsStored": [0, 1, 8, 12, 16, 33],
    "NumberOfFrames": ["0", "1", "2", "3", "-1", "1000000", None],
    "PixelRepresentation": [0, 1, 2],
    "SamplesPerPixel": [0, 1, 2, 3, 4],
    "PhotometricInterpretation": ["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "", "XYZ"],
    "RescaleSlope": ["nan", "inf", "-inf", "0", "1e30", "abc"],
    "RescaleIntercept": ["nan", "-inf", "1e38", "x"],
    "PlanarConfiguration": [0, 1, 2],
    "WindowWidth": ["0", "-5", "nan"],
    "SliceThickness": ["abc", "nan", ""],
    "PixelSpacing": ["abc\\1", "0\\0", "nan\\nan"],
    "ImagePositionPatient": ["a\\b\\c", "1\\2", "nan\\0\\0"],
    "ImageOrientationPatient": ["0\\0\\0\\0\\0\\0", "1\\0\\0", "nan\\0\\0\\0\\1\\0"],
    "SeriesNumber": ["x", "99999999999999"],
    "InstanceNumber": ["x", "-1"],
    "StudyDate": ["2019", "abcd", ""],
}
_SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEG2000,
    RLELossless,
    MPEG2MPML,
    "1.2.3.4.5",
]


def mutate_fields(rng: random.Random, data: bytes) -> bytes:
    """Change 1-3 header fields (size, bits, frames, photometric, syntax, rescale, ...) and write again."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:
        return flip_bits(rng, data)
    old = dicom_config.settings.writing_validation_mode
    dicom_config.settings.writing_validation_mode = dicom_config.IGNORE
    try:
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if r < 0.12 and hasattr(ds, "file_meta"):
                ds.file_meta.TransferSyntaxUID = rng.choice(_SYNTAXES)
            elif r < 0.3 and "PixelData" in ds:
                pix = ds.PixelData
                how = rng.randrange(5)
                ds.PixelData = [pix[: len(pix) // 2], pix[:-1], pix + pix, pix + pix[: rng.randrange(1, 64)], b""][how]
            elif r < 0.35:
                for kw in ("Rows", "PixelData", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "Columns"):
                    if kw in ds and rng.random() < 0.3:
                        del ds[kw]
            else:
                key = rng.choice(list(_FIELD_VALUES))
                value = rng.choice(_FIELD_VALUES[key])
                if value is None:
                    if key in ds:
                        del ds[key]
                else:
                    setattr(ds, key, value)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        return buf.getvalue()
    except Exception:
        return flip_bits(rng, data)
    finally:
        dicom_config.settings.writing_validation_mode = old


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR width/height replaced (and the chunk CRC fixed): a decompression bomb header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return data
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return data[:12] + bytes(ihdr) + crc + data[33:]


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        i = data.find(marker)
        if i >= 0:
            return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]
    return data


def add_png_text(data: bytes, text: bytes) -> bytes:
    """The PNG with one more tEXt chunk after IHDR (same pixels, different bytes)."""
    body = b"tEXt" + b"Comment\x00" + text
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    return data[:33] + chunk + data[33:]


def make_zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:  # a fixed time stamp, so the bytes repeat for a seed
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


# ------------------------------------------------------------------------- heavy inputs
@cache
def heavy(name: str) -> bytes:
    """Denial-of-service inputs, built once."""
    if name == "zeros-16MiB":
        return bytes(16 << 20)
    if name == "zeros-32MiB":
        return bytes(32 << 20)
    if name == "element-flood":  # DICM preamble + meta + 2 million empty private elements
        base = make_dicom(with_pixels=False)
        i = base.find(b"\x08\x00\x16\x00")
        flood = struct.pack("<HH2sH", 0x0029, 0x1010, b"LO", 0) * (2 << 20)
        return base[:i] + flood + base[i:]
    if name == "flood-in-sequence":
        base = make_dicom()
        i = base.find(b"\x08\x00\x16\x00")
        flood = struct.pack("<HH2sH", 0x0029, 0x1010, b"LO", 0) * (1 << 20)
        item = struct.pack("<HHL", 0xFFFE, 0xE000, len(flood)) + flood
        seq = struct.pack("<HH2sHL", 0x0028, 0x3000, b"SQ", 0, len(item)) + item  # ModalityLUTSequence
        return base[:i] + seq + base[i:]
    if name == "zip-bomb-64MiB":
        return make_zip([("slice.dcm", bytes(64 << 20))])
    if name == "zip-stored-zeros-48MiB":
        return make_zip([("a.dcm", bytes(48 << 20))], zipfile.ZIP_STORED)
    if name == "zip-of-small-bombs":  # many members just under 1 MiB each: the old per-member skip
        return make_zip([(f"s{i}.dcm", bytes((1 << 20) - 1)) for i in range(40)])
    if name == "png-6000":
        return png_bytes(np.zeros((6000, 6000), np.uint8))
    if name == "zip-12-png-6000":
        png = heavy("png-6000")
        return make_zip([(f"p{i}.png", add_png_text(png, str(i).encode())) for i in range(12)])
    if name == "rle-4000x4000x32":
        return _rle_bomb(4000, 4000, 32)
    if name == "zip-5000-members":
        return make_zip([(f"m{i}.dcm", b"") for i in range(5000)])
    if name == "zip-20000-members":
        return make_zip([(f"m{i}.txt", b"x") for i in range(20000)], zipfile.ZIP_STORED)
    if name == "png-bomb-header":
        return patch_png_size(png_bytes(np.zeros((8, 8), np.uint8)), 60000, 60000)
    if name == "jpg-bomb-header":
        buf = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="JPEG")
        return patch_jpeg_size(buf.getvalue(), 65000, 65000)
    raise KeyError(name)


HEAVY = (
    "zeros-16MiB",
    "zeros-32MiB",
    "element-flood",
    "flood-in-sequence",
    "zip-bomb-64MiB",
    "zip-stored-zeros-48MiB",
    "zip-of-small-bombs",
    "zip-12-png-6000",
    "rle-4000x4000x32",
    "zip-5000-members",
    "zip-20000-members",
    "png-bomb-header",
    "jpg-bomb-header",
)


def _rle_bomb(rows: int, cols: int, frames: int) -> bytes:
    """An RLE Lossless CT of zeros (PS3.5 G.3): two byte segments per 16-bit frame, runs of 128."""
    n = rows * cols
    runs, rest = divmod(n, 128)
    segment = b"\x81\x00" * runs + (bytes([257 - rest, 0]) if rest > 1 else (b"\x00\x00" if rest else b""))
    header = struct.pack("<16L", 2, 64, 64 + len(segment), *([0] * 13))
    frame = header + segment + segment
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.PixelData = encapsulate([frame] * frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------- generators
def _name(rng: random.Random, stem: str, ext: str) -> str:
    r = rng.random()
    if r < 0.1:
        return f"../../etc/{stem}{ext}"
    if r < 0.15:
        return f"C:\\Users\\x\\{stem}{ext}"
    if r < 0.2:
        return f"Ünïcödé {stem}{ext}"
    return f"{stem}{ext}"


def gen_dicom(rng: random.Random, i: int) -> Case:
    data = seed_dicom(rng)
    # a seed without PixelData (7FE0,0010) is a report: cut short, it is still rightly called one
    seed_kind = "dicom" if b"\xe0\x7f\x10\x00" in data else "dicom-report"
    ops = []
    for _ in range(rng.randint(1, 2)):
        op = rng.choice([truncate, flip_bits, flip_vr, mutate_fields, mutate_fields])
        data = op(rng, data)
        ops.append(op.__name__)
    return Case(f"{seed_kind}:" + "+".join(ops), [(_name(rng, f"fuzz{i}", ".dcm"), data)])


def gen_picture(rng: random.Random, i: int) -> Case:
    data = seed_picture(rng)
    r = rng.random()
    if r < 0.35:
        data = truncate(rng, data)
    elif r < 0.7:
        data = flip_bits(rng, data, header_bias=0.3)
    elif r < 0.8:
        data = patch_png_size(data, rng.choice([0, 1, 9000, 70000]), rng.choice([1, 9000, 70000]))
    elif r < 0.9:
        data = patch_jpeg_size(data, rng.choice([0, 9000, 65535]), rng.choice([1, 9000, 65535]))
    ext = ".png" if data[:4] == b"\x89PNG" else ".jpg"
    return Case("picture", [(_name(rng, f"pic{i}", ext), data)])


def gen_zip(rng: random.Random, i: int) -> Case:
    members = []
    for j in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.5:
            members.append((_name(rng, f"d{j}", ".dcm"), synthetic_dicom(rng)))
        elif r < 0.7:
            members.append((_name(rng, f"p{j}", ".png"), seed_picture(rng)))
        elif r < 0.8:
            members.append((f"inner{j}.zip", make_zip([("x.dcm", synthetic_dicom(rng))])))
        elif r < 0.9:
            members.append((f"z{j}.dcm", bytes(rng.choice([0, 10, 5000, 300_000]))))
        else:
            members.append(("é" + f"{j}.dcm", synthetic_dicom(rng)))
    method = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
    data = make_zip(members, method)
    r = rng.random()
    if r < 0.25:
        data = truncate(rng, data)
    elif r < 0.55:
        data = flip_bits(rng, data, header_bias=0.0)
    elif r < 0.7:  # flip bits in the central directory
        cd = data.rfind(b"PK\x01\x02")
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            k = rng.randrange(max(cd, 0), len(buf))
            buf[k] ^= 1 << rng.randrange(8)
        data = bytes(buf)
    elif r < 0.8:  # invalid UTF-8 in a name marked UTF-8
        data = data.replace(b"\xc3\xa9", b"\xc3\x28")
    return Case("zip", [(f"study{i}.zip", data)])


def gen_mixed(rng: random.Random, i: int) -> Case:
    """Good files (unique) and bad ones together; every good one must still be read."""
    items: list[tuple[str, bytes]] = []
    good: list[str] = []
    for j in range(rng.randint(1, 2)):
        name = f"good{i}_{j}.dcm"
        items.append((name, synthetic_dicom(rng) if rng.random() < 0.7 or not tcia_seeds() else rng.choice(tcia_seeds())))
        good.append(name)
    if jpg_seeds() and rng.random() < 0.3:
        items.append((f"good{i}.jpg", rng.choice(jpg_seeds())))
        good.append(f"good{i}.jpg")
    for _ in range(rng.randint(1, 3)):
        bad = rng.choice([gen_dicom, gen_picture, gen_zip])(rng, i)
        items.extend(bad.items)
    rng.shuffle(items)
    # a TCIA seed may appear twice: keep the first only as good
    seen: dict[bytes, str] = {}
    dup: dict[str, str] = {}
    for name, data in items:
        if name in good and data in seen:
            dup[name] = seen[data]
        seen.setdefault(data, name)
    return Case("mixed", items, good=[g for g in good if g not in dup], duplicate_of=dup)


def gen_mixed_damaged(rng: random.Random, i: int) -> Case:
    """One good upload (an IQ-OTH/NCCD JPG or a 3-slice DICOM series) with 1-4 damaged ZIPs and DICOM
    files whose pixel data cannot be decoded (``tests.factories.damaged``), in random order. The good
    files and the intact members of the damaged ZIPs must be read; each damaged file must be named
    by a problem (issue 24)."""
    from tests.factories.damaged import DICOM_DAMAGES, ZIP_DAMAGES, damaged_dicom, damaged_zip, good_series

    items: list[tuple[str, bytes]] = []
    good: list[str] = []
    bad: list[str] = []
    study = series = None
    if jpg_seeds() and rng.random() < 0.5:
        items.append((f"good{i}.jpg", rng.choice(jpg_seeds())))
    else:
        study, series, files = good_series(stem=f"good{i}_")
        items.extend(files)
    good.extend(n for n, _ in items)
    for j in range(rng.randint(1, 4)):
        if rng.random() < 0.5:
            d = damaged_zip(rng.choice(ZIP_DAMAGES), f"z{i}_{j}", n_good=rng.randint(1, 3))
        else:
            in_series = series is not None and rng.random() < 0.5
            d = damaged_dicom(rng.choice(DICOM_DAMAGES), f"bad{i}_{j}.dcm", study if in_series else None,
                              series if in_series else None, position=0.5 + j)
        items.append((d.name, d.data))
        good.extend(d.intact)
        bad.append(d.bad)
    rng.shuffle(items)
    return Case("mixed-damaged", items, good=good, bad=bad)


def gen_duplicate(rng: random.Random, i: int) -> Case:
    data = synthetic_dicom(rng) if rng.random() < 0.7 else seed_picture(rng)
    ext = ".png" if data[:4] == b"\x89PNG" else (".jpg" if data[:2] == b"\xff\xd8" else ".dcm")
    a, b = f"first{i}{ext}", f"again{i}{ext}"
    items = [(a, data), (b, data)]
    if rng.random() < 0.3:
        items.append((f"again{i}.zip", make_zip([(f"inner/third{i}{ext}", data)])))
    return Case("duplicate", items, good=[a], duplicate_of={b: a})


GENERATORS: dict[str, Callable[[random.Random, int], Case]] = {
    "dicom": gen_dicom,
    "picture": gen_picture,
    "zip": gen_zip,
    "mixed": gen_mixed,
    "duplicate": gen_duplicate,
}
WEIGHTS = {"dicom": 0.45, "picture": 0.17, "zip": 0.16, "mixed": 0.17, "duplicate": 0.05}


def generate(rng: random.Random, i: int) -> Case:
    """One light case (everything but :data:`HEAVY`), generator chosen by :data:`WEIGHTS`."""
    kind = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    return GENERATORS[kind](rng, i)


def heavy_case(name: str) -> Case:
    ext = ".zip" if name.startswith("zip") else (".png" if "png" in name else (".jpg" if "jpg" in name else ".dcm"))
    good = make_dicom()
    return Case(f"heavy:{name}", [(f"{name}{ext}", heavy(name)), ("good.dcm", good)], good=["good.dcm"], heavy=True)


def is_finite_2d(hu: np.ndarray) -> bool:
    return hu.ndim == 2 and hu.dtype == np.float32 and bool(np.isfinite(hu).all()) and math.prod(hu.shape) > 0


# ------------------------------------------------------------------------------- judging
#: What a plain message must not hold: exception class names, tracebacks, library internals.
UNPLAIN = re.compile(
    r"[A-Z][a-z]+(Error|Exception|Warning)\b|Traceback|BadZip|zlib|LZMA|codec can't|struct\.|"
    r"negative seek|<class|object at 0x|Errno|\bNone\b"
)


@dataclass
class Outcome:
    """What one case did: ``kind`` (read / read-with-problems / refused), findings (empty = correct),
    wall seconds and peak traced memory in bytes."""

    kind: str
    findings: list[str]
    seconds: float
    peak_bytes: int


def _plain(message: str) -> bool:
    """True when the message, without the quoted file names (‘...’), holds nothing of :data:`UNPLAIN`."""
    return not UNPLAIN.search(re.sub(r"‘[^’]*’", "", message))


def run_case(case: Case, *, trace_memory: bool = True, max_seconds: float = 10.0, max_bytes: int = 2 << 30) -> Outcome:
    """Read ``case`` with ``core.imaging.read_uploads`` and list every way the outcome is wrong."""
    import time
    import tracemalloc

    from core.imaging import ImagingError, read_uploads

    findings: list[str] = []
    if trace_memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
    start = time.perf_counter()
    result = None
    try:
        result = read_uploads(list(case.items))
        kind = "read-with-problems" if result.problems else "read"
    except ImagingError as exc:
        kind = "refused"
        messages = [str(exc)]
    except Exception as exc:  # the finding the fuzzing looks for
        kind = "escaped"
        findings.append(f"escaped:{type(exc).__name__}")
        messages = []
    seconds = time.perf_counter() - start
    peak = 0
    if trace_memory:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if result is not None:
        messages = [p.message for p in result.problems]
        slices = [s for se in result.series for s in se.slices]
        if not all(is_finite_2d(s.hu) for s in slices):
            findings.append("slice-not-2d-finite")
        sources = {s.source for s in slices}
        for good in case.good:
            if base_name(good) not in sources:
                findings.append("intact-zip-member-lost" if "/" in good else "good-file-lost")
        for dup in case.duplicate_of:
            if base_name(dup) in sources:
                findings.append("duplicate-counted-twice")
        if case.kind == "duplicate" and any("third" in s for s in sources):
            findings.append("duplicate-counted-twice")
        named = {p.name for p in result.problems}
        for bad in case.bad:
            if bad not in named:
                findings.append("bad-file-unnamed")
    elif case.good and kind in ("refused", "escaped"):
        findings.append("good-file-lost")
        if any("/" in g for g in case.good):
            findings.append("intact-zip-member-lost")
    if not all(_plain(m) for m in messages):
        findings.append("unplain-message")
    if "truncate" in case.kind and "report" not in case.kind and any("structured report" in m for m in messages):
        findings.append("truncated-called-report")
    if any("install" in m or "another decoder" in m for m in messages):
        findings.append("install-a-decoder-hint")
    if seconds > max_seconds:
        findings.append("slow>10s")
    if peak > max_bytes:
        findings.append("memory>2GiB")
    return Outcome(kind, sorted(set(findings)), seconds, peak)


def base_name(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]
