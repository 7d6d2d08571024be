"""Inputs for the measurement scripts (benchmarks.warm_path, benchmarks.memory): real slices, made bigger.

Not a test module (pytest does not collect it). The JPGs are real IQ-OTH/NCCD slices, picked by
sorted file name; the DICOM ZIPs are the real TCIA Lung-PET-CT-Dx study of patient Lung_Dx-A0002
(two axial series of 30 slices), its 60 slices repeated into ONE series of any length: each copy
gets a new SOPInstanceUID, InstanceNumber 1..n and ImagePositionPatient/SliceLocation stepped by
the first series' SliceThickness along z, so ``core.imaging`` reads one series of n slices. A
``study_no`` gives the study its own StudyInstanceUID/SeriesInstanceUID (derived, not random),
so the files' bytes and with them the content hash differ between studies: the app sees each
as a new study.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

DATASETS = Path("/work/shared/datasets")
IQ_DIR = DATASETS / "iq-othnccd"
TCIA_DIR = DATASETS / "lung-pet-ct-dx"
#: UID root for the made-up UIDs (pydicom's own root, 1.2.826.0.1.3680043.8.498.; PS3.5 9.1).
UID_ROOT = "1.2.826.0.1.3680043.8.498."


def iq_jpgs(n: int, folder: str = "Malignant cases") -> list[Path]:
    """``n`` IQ-OTH/NCCD JPGs of one class folder, the first ``n`` in sorted file-name order.

    Raises:
        FileNotFoundError: when the folder holds fewer than ``n`` JPGs.
    """
    files = sorted((IQ_DIR / folder).glob("*.jpg"))
    if len(files) < n:
        raise FileNotFoundError(f"{IQ_DIR / folder} holds {len(files)} JPG(s), {n} wanted")
    return files[:n]


def tcia_slices() -> list[Path]:
    """The 60 DICOM files of the TCIA study, sorted by path (series 2 then series 3)."""
    files = sorted(TCIA_DIR.glob("Lung_Dx-A0002/*/*/*.dcm"))
    if not files:
        raise FileNotFoundError(f"no DICOM file under {TCIA_DIR / 'Lung_Dx-A0002'}")
    return files


def _uid(*parts: int) -> str:
    return UID_ROOT + ".".join(str(p) for p in parts)


def make_series_zip(path: Path, n_slices: int, study_no: int = 1) -> Path:
    """Write a ZIP of one axial series of ``n_slices`` DICOM files made from the TCIA slices.

    Slice k (0-based) is TCIA file ``k mod 60`` with StudyInstanceUID/SeriesInstanceUID of
    ``study_no``, SOPInstanceUID (and the file meta's MediaStorageSOPInstanceUID) unique,
    InstanceNumber k + 1, ImagePositionPatient z = z0 - k * thickness (thickness: the first
    file's SliceThickness, else 1 mm) and SliceLocation = that z. Pixel data are unchanged.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: when the TCIA study is missing.
    """
    import pydicom

    sources = [pydicom.dcmread(f) for f in tcia_slices()]
    first = sources[0]
    thickness = float(getattr(first, "SliceThickness", 1.0) or 1.0)
    x0, y0, z0 = (float(v) for v in first.ImagePositionPatient)
    study_uid, series_uid = _uid(study_no, 1), _uid(study_no, 2)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for k in range(n_slices):
            ds = sources[k % len(sources)].copy()
            sop = _uid(study_no, 3, k + 1)
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = 900 + study_no
            ds.SeriesDescription = f"bench series {study_no}"
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.InstanceNumber = k + 1
            z = z0 - k * thickness
            ds.ImagePositionPatient = [x0, y0, z]
            ds.SliceLocation = z
            ds.ImageOrientationPatient = list(first.ImageOrientationPatient)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            zf.writestr(f"study{study_no}/slice{k + 1:04d}.dcm", buf.getvalue())
    return path
