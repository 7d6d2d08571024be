"""A small synthetic chest CT series (DICOM files written with pydicom, never stored) and a fake
nodule detector, for the tests of the nodule read (service, pages).

The phantom: ``n`` axial slices of ``size`` x ``size`` pixels of ``pixel_mm``, ``step_mm`` apart,
standard orientation (rows along +y, columns along +x: the image's right is the patient's left,
LPS), air around an elliptical body of 40 HU holding two elliptical lungs of -850 HU, and solid
spheres (nodules) of 30 HU where asked. ``core.lungs.lung_mask`` finds both lungs on every slice,
and ``core.nodules.volume.check_volume`` accepts the series (at least 20 slices, regular steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.uid import generate_uid

from core.nodules.types import Nodule
from tests.factories.dicom import make_dicom

#: (slice, row, column, diameter mm) of the phantom's default nodules: one in each lung.
DEFAULT_SPHERES: tuple[tuple[int, int, int, float], ...] = ((12, 64, 40, 10.0), (8, 60, 90, 6.0))


def phantom_hu(n: int = 24, size: int = 128, pixel_mm: float = 2.5, step_mm: float = 5.0,
               spheres: Sequence[tuple[int, int, int, float]] = DEFAULT_SPHERES) -> np.ndarray:
    """float32 (n, size, size) HU of the phantom; ``spheres`` = (slice, row, column, diameter mm)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2
    body = ((yy - c) / (0.38 * size)) ** 2 + ((xx - c) / (0.45 * size)) ** 2 < 1
    right = ((yy - c) / (0.25 * size)) ** 2 + ((xx - 0.30 * size) / (0.13 * size)) ** 2 < 1  # image left
    left = ((yy - c) / (0.25 * size)) ** 2 + ((xx - 0.70 * size) / (0.13 * size)) ** 2 < 1
    plane = np.full((size, size), -1000.0, dtype=np.float32)
    plane[body] = 40.0
    plane[right | left] = -850.0
    vol = np.repeat(plane[None], n, axis=0)
    zz = np.arange(n, dtype=np.float32)[:, None, None] * step_mm
    for z, r, col, d in spheres:
        inside = ((zz - z * step_mm) ** 2 + ((yy - r) * pixel_mm) ** 2 + ((xx - col) * pixel_mm) ** 2) <= (d / 2) ** 2
        vol[inside] = 30.0
    return vol


def phantom_files(n: int = 24, size: int = 128, pixel_mm: float = 2.5, step_mm: float = 5.0,
                  spheres: Sequence[tuple[int, int, int, float]] = DEFAULT_SPHERES,
                  origin: tuple[float, float, float] = (-160.0, -160.0, -300.0),
                  study_uid: str | None = None) -> list[tuple[str, bytes]]:
    """The phantom as DICOM CT files: [(file name, bytes)], one per slice, slice 0 lowest z."""
    hu = phantom_hu(n, size, pixel_mm, step_mm, spheres)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    out = []
    for i in range(n):
        pos = (origin[0], origin[1], origin[2] + i * step_mm)
        data = make_dicom(pixels=(hu[i] + 1024).astype(np.int16), study_uid=study_uid, series_uid=series_uid,
                          instance_number=i + 1, position=pos, series_description="Phantom chest",
                          extra={"PixelSpacing": [pixel_mm, pixel_mm], "SliceThickness": step_mm,
                                 # the study attributes an SR or SC copies from its source (Type 2)
                                 "PatientSex": "O", "StudyTime": "101500", "StudyID": "1",
                                 "AccessionNumber": "PHANTOM1", "ReferringPhysicianName": ""})
        out.append((f"phantom_{i:03d}.dcm", data))
    return out


@dataclass
class FakeDetector:
    """Stands in for the nodule network: reports the given spheres as nodules, counts its calls.

    ``spheres`` = (slice, row, column, diameter mm); ``p`` their p(nodule), rank by order given.
    ``detect(series, progress)`` is :class:`services.nodules.NoduleDetector`'s contract.
    """

    spheres: Sequence[tuple[int, int, int, float]] = DEFAULT_SPHERES
    p: Sequence[float] = (0.92, 0.71)
    calls: int = 0

    def detect(self, series, progress=None) -> list[Nodule]:
        from services.nodules import patient_mm

        self.calls += 1
        if progress is not None:
            progress("network")
        out = []
        for rank, ((z, r, c, d), p) in enumerate(zip(self.spheres, self.p, strict=False), start=1):
            out.append(Nodule(rank=rank, centre_voxel=(z, r, c), centre_mm=patient_mm(series, z, r, c),
                              diameter_mm=d, p_nodule=p, malignancy=max(1.0, 3.5 - rank * 0.5), lobulation=1.5,
                              spiculation=1.2, slice_index=z, is_mass=d > 30))
        return out

    def as_detector(self, model_id: str = "fake_nodules_v1", sha256: str = "f" * 64):
        """A :class:`services.nodules.NoduleDetector` around :meth:`detect`."""
        from services.nodules import NoduleDetector

        return NoduleDetector(model_id=model_id, model_sha256=sha256, detect=self.detect, operating_point=0.5)
