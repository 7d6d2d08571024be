"""The nodule detector's output contract, shared by detection, the reading service, the database
mapping and the DICOM SR export."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["NODULE_MAX_MM", "NODULE_MIN_MM", "Nodule", "NotAVolumeError"]

#: Size limits of a pulmonary nodule (Fleischner Society glossary, Hansell et al., Radiology
#: 2008;246:697-722: a nodule is a rounded opacity up to 3 cm; larger is a mass). Findings under
#: NODULE_MIN_MM are not reported (LUNA16 reference nodules are 3 mm or more, Setio et al. 2017).
NODULE_MIN_MM: float = 3.0
NODULE_MAX_MM: float = 30.0


class NotAVolumeError(ValueError):
    """The series is not a CT volume the nodule detector can scan (JPG/PNG slices, too few slices,
    slices too far apart or irregularly spaced, no spacing, a localiser). The message says why in
    one plain sentence; the slice classifiers still run on such a series."""


@dataclass(frozen=True)
class Nodule:
    """One detected nodule (or mass) of a CT series.

    Attributes:
        rank: 1 for the highest-scoring finding of the series, then 2, 3, ...
        centre_voxel: (z, y, x) integer indices into the series' HU volume ``Series.hu``
            (z in the series' slice order, y row, x column).
        centre_mm: (x, y, z) in DICOM patient coordinates (LPS, mm; PS3.3 C.7.6.2.1.1, from
            Image Position (Patient) and Image Orientation (Patient)).
        diameter_mm: estimated diameter in mm (the network's regression output).
        p_nodule: probability in [0, 1] that a nodule lies at the centre.
        malignancy: suspicion on the LIDC readers' scale 1-5 (1 highly unlikely ... 5 highly
            suspicious); the readers' rating, not pathology.
        lobulation: LIDC rating 1-5 (1 none ... 5 marked).
        spiculation: LIDC rating 1-5 (1 none ... 5 marked).
        slice_index: index of the slice to show (the slice through the centre, == centre_voxel[0]).
        is_mass: True when diameter_mm exceeds NODULE_MAX_MM (reported as a mass).
    """

    rank: int
    centre_voxel: tuple[int, int, int]
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    p_nodule: float
    malignancy: float
    lobulation: float
    spiculation: float
    slice_index: int
    is_mass: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists for the coordinate tuples)."""
        d = asdict(self)
        d["centre_voxel"] = list(self.centre_voxel)
        d["centre_mm"] = list(self.centre_mm)
        return d
