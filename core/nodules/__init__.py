"""Nodule detection on CT volumes: ``detect_nodules(series) -> list[Nodule]``.

The contract (:class:`Nodule`, :class:`NotAVolumeError`, size limits) is in ``types``; the volume
path (checks, geometry, 1 mm resampling, the network's input) in ``volume``; the detector
(lung mask, grid of cubes and blobs scored by the LUNA16-trained 3-D CNN, false-positive rule,
one entry per nodule) in ``detector``; the contact sheet in ``sheet``; the CLI in ``__main__``
(``python -m core.nodules PATH...``, console script ``lungreview-nodules``).
"""

from __future__ import annotations

from collections.abc import Sequence

from core.nodules.detector import (
    DetectorConfig,
    LoadedDetector,
    detect_nodules,
    load_detector,
    scan_series,
    select_nodules,
)
from core.nodules.types import NODULE_MAX_MM, NODULE_MIN_MM, Nodule, NotAVolumeError
from core.nodules.volume import LUNA16_SPEC, VolumeSpec, check_volume, geometry_of

__all__ = [
    "LUNA16_SPEC",
    "NODULE_MAX_MM",
    "NODULE_MIN_MM",
    "DetectorConfig",
    "LoadedDetector",
    "Nodule",
    "NotAVolumeError",
    "VolumeSpec",
    "check_volume",
    "detect_nodules",
    "geometry_of",
    "load_detector",
    "main",
    "scan_series",
    "select_nodules",
]


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI (console script ``lungreview-nodules``): see :func:`core.nodules.__main__.run`.

    Returns:
        0 on success, 2 on wrong input.
    """
    from core.nodules.__main__ import run  # imported here: ``python -m core.nodules`` runs that module

    return run(argv)
