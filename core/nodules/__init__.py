"""Nodule detection on CT volumes: the contract (:class:`Nodule`, :class:`NotAVolumeError`).

The detector itself (resampling to 1 mm, lung-mask restriction, the LUNA16-trained 3D CNN, 3-D
non-maximum suppression) lives in this package; ``detect_nodules(series) -> list[Nodule]``.
"""

from core.nodules.types import NODULE_MAX_MM, NODULE_MIN_MM, Nodule, NotAVolumeError

__all__ = ["NODULE_MAX_MM", "NODULE_MIN_MM", "Nodule", "NotAVolumeError"]
