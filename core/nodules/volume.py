"""A CT series as the nodule network sees it: checks, geometry, resampling to 1 mm, cubes.

The one preprocessing path of the nodule detector (evaluation, CLI and dashboard alike):

1. :func:`check_volume` refuses what is not a CT volume (:class:`NotAVolumeError`) and says what
   is doubtful (thick slices);
2. :func:`geometry_of` reads the series' grid: slice positions along the normal, pixel spacing,
   Image Position / Orientation (Patient), so that any voxel index maps to patient mm
   (:meth:`Geometry.voxel_to_patient`, DICOM PS3.3 C.7.6.2.1.1);
3. :func:`resample` interpolates HU (or a mask) onto an isotropic grid of ``VolumeSpec.voxel_mm``
   (trilinear, SciPy ``map_coordinates``), z following the real slice positions;
4. :func:`network_input` scales HU as the network was trained, ``clip((HU - hu_low) / (hu_high -
   hu_low), 0, 1)``, and puts the axes in the network's order (x, y, z, channel);
   :func:`cube_batch` cuts cubes around centres with it.

The spec (:class:`VolumeSpec`) lives in the model card (``volume_preprocessing``), so the network
always gets the input it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from core.nodules.types import NotAVolumeError

__all__ = [
    "LUNA16_SPEC",
    "MAX_SLICE_GAP_MM",
    "MIN_SLICES",
    "THIN_SLICE_MM",
    "Geometry",
    "VolumeSpec",
    "check_volume",
    "cube_batch",
    "geometry_of",
    "network_input",
    "resample",
]

#: Fewest slices of a volume the detector scans (the issue's "about 20": fewer is a localiser, a
#: few key images or a partial upload, not a chest CT).
MIN_SLICES = 20
#: Largest slice spacing accepted (mm). LUNA16 trained on <= 2.5 mm slices (Setio et al. 2017);
#: the LIDC-IDRI collection goes to 5 mm. Above 10 mm a 3-10 mm nodule shows on at most one or two
#: slices and a 64 mm cube holds fewer than seven original slices, so the interpolated volume no
#: longer shows nodules as the network learnt them: refused. Between THIN_SLICE_MM and this the
#: detector runs with a warning (the shared Lung-PET-CT-Dx study has 8 mm slices).
MAX_SLICE_GAP_MM = 10.0
#: Slice spacing (mm) up to which the series lies within LUNA16's training range (Setio et al. 2017
#: excluded scans with slices thicker than 2.5 mm).
THIN_SLICE_MM = 2.5
#: A step between neighbouring slices may differ from the median step by this fraction (and at
#: least 0.1 mm) before the spacing counts as irregular (a missing slice doubles a step).
SPACING_TOLERANCE = 0.25
#: Smallest |cos| between the slice normal and the patient z axis for an axial series (25 degrees
#: of gantry tilt or obliquity); localisers and coronal / sagittal reformats fall below it.
AXIAL_MIN_COS = float(np.cos(np.deg2rad(25.0)))


@dataclass(frozen=True)
class VolumeSpec:
    """How the nodule network wants its input; stored in the model card (``volume_preprocessing``).

    Attributes:
        voxel_mm: isotropic voxel size in mm the volume is resampled to.
        cube: edge of the network's input cube in voxels (64 voxels of 1 mm = 64 mm).
        hu_low, hu_high: HU mapped to 0 and 1; values outside are clipped
            (``clip((HU - hu_low) / (hu_high - hu_low), 0, 1)``; Hammack's training generator:
            ``clip((HU + 1000) / 1400, 0, 1)``).
        axes: order of the cube's three spatial axes, ``"xyz"`` (the training cubes were SimpleITK
            (z, y, x) arrays transposed to (x, y, z)).
        interpolation_order: spline order of the resampling (1 = trilinear, as the training cubes'
            ``ndimage.zoom(order=1)``).
    """

    voxel_mm: float = 1.0
    cube: int = 64
    hu_low: float = -1000.0
    hu_high: float = 400.0
    axes: str = "xyz"
    interpolation_order: int = 1

    def __post_init__(self) -> None:
        if not self.voxel_mm > 0:
            raise ValueError(f"voxel_mm must be positive, got {self.voxel_mm}")
        if self.cube < 16 or self.cube % 16:
            raise ValueError(f"cube must be a positive multiple of 16 voxels (4 poolings), got {self.cube}")
        if not self.hu_high > self.hu_low:
            raise ValueError(f"hu_high ({self.hu_high}) must exceed hu_low ({self.hu_low})")
        if sorted(self.axes) != ["x", "y", "z"]:
            raise ValueError(f"axes must order x, y and z, got {self.axes!r}")
        if self.interpolation_order not in (0, 1, 3):
            raise ValueError(f"interpolation_order must be 0, 1 or 3, got {self.interpolation_order}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict for the model card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VolumeSpec:
        """The spec of a card's ``volume_preprocessing`` dict.

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown volume preprocessing keys in model card: {sorted(unknown)}")
        return cls(**dict(data))


#: The spec of the LUNA16 network (weights README: 1 mm, 64 mm cube, clip((HU + 1000) / 1400, 0, 1)).
LUNA16_SPEC = VolumeSpec()


@dataclass(frozen=True)
class Geometry:
    """Where the voxels of a series lie in the patient.

    Attributes:
        positions_mm: float64 (z,) slice positions along the normal in mm, increasing (the
            series' slice order).
        pixel_mm: (row, column) spacing in mm (DICOM PixelSpacing).
        origin_mm: float64 (z, 3) Image Position (Patient) of each slice (x, y, z, LPS mm), or None
            when the files did not give it.
        row_cosines, column_cosines: float64 (3,) Image Orientation (Patient): the direction of
            increasing column index and of increasing row index, or None.
    """

    positions_mm: np.ndarray
    pixel_mm: tuple[float, float]
    origin_mm: np.ndarray | None
    row_cosines: np.ndarray | None
    column_cosines: np.ndarray | None

    @property
    def slice_step_mm(self) -> float:
        """Median distance between neighbouring slices (mm)."""
        return float(np.median(np.diff(self.positions_mm)))

    def z_index(self, z_mm: np.ndarray | float) -> np.ndarray:
        """Fractional slice index of positions along the normal (mm, relative to the first slice)."""
        rel = self.positions_mm - self.positions_mm[0]
        return np.interp(np.asarray(z_mm, dtype=np.float64), rel, np.arange(rel.size, dtype=np.float64))

    def z_mm(self, z_index: np.ndarray | float) -> np.ndarray:
        """Position along the normal (mm, relative to the first slice) of fractional slice indices."""
        rel = self.positions_mm - self.positions_mm[0]
        return np.interp(np.asarray(z_index, dtype=np.float64), np.arange(rel.size, dtype=np.float64), rel)

    def voxel_to_patient(self, zyx: Sequence[float]) -> tuple[float, float, float] | None:
        """Patient coordinates of a (fractional) voxel index.

        ``P = IPP(z) + column * dx * row_cosines + row * dy * column_cosines`` (DICOM PS3.3
        C.7.6.2.1.1, equation for the pixel at (row, column)); IPP(z) interpolated linearly between
        the two neighbouring slices' Image Position (Patient).

        Args:
            zyx: (slice, row, column) index, fractional allowed.

        Returns:
            (x, y, z) in LPS mm, or None when position or orientation are unknown.
        """
        if self.origin_mm is None or self.row_cosines is None or self.column_cosines is None:
            return None
        z, y, x = (float(v) for v in zyx)
        k = np.arange(self.origin_mm.shape[0], dtype=np.float64)
        ipp = np.array([np.interp(z, k, self.origin_mm[:, i]) for i in range(3)])
        p = ipp + x * self.pixel_mm[1] * self.row_cosines + y * self.pixel_mm[0] * self.column_cosines
        return (float(p[0]), float(p[1]), float(p[2]))


def _orientation(series: Any) -> tuple[np.ndarray, np.ndarray] | None:
    iop = (series.metadata or {}).get("image_orientation_patient")
    if iop is None or len(iop) != 6:
        return None
    o = np.asarray([float(v) for v in iop], dtype=np.float64)
    if not np.all(np.isfinite(o)) or not np.any(np.cross(o[:3], o[3:])):
        return None
    return o[:3], o[3:]


def check_volume(series: Any) -> list[str]:
    """Refuse a series the detector cannot scan; list what is doubtful about one it can.

    Accepted: a DICOM CT series (real HU, not estimated from pictures) of at least
    :data:`MIN_SLICES` slices of one size, with pixel spacing, known slice positions along the
    normal, axial slices (normal within 25 degrees of the patient z axis; localisers and reformats
    are not), steps at most :data:`MAX_SLICE_GAP_MM` apart and regular (each step within
    :data:`SPACING_TOLERANCE` of the median step: no missing or doubled slices).

    Args:
        series: a ``core.imaging.Series``.

    Returns:
        Warnings, one plain sentence each (empty when nothing is doubtful): slices thicker than
        :data:`THIN_SLICE_MM` (outside LUNA16's training range).

    Raises:
        NotAVolumeError: the series is not a CT volume; the message says why and what still works.
    """
    what = "The nodule detector needs a CT volume"
    tail = "the slice classifiers still run on it."
    if series.source_kind != "dicom" or getattr(series, "hu_is_estimated", False):
        raise NotAVolumeError(
            f"{what} from DICOM files; these are {series.source_kind.upper()} pictures whose HU are estimated "
            f"from grey values, so {tail}"
        )
    if (series.modality or "").upper() != "CT":
        raise NotAVolumeError(f"{what}; this series is {series.modality or 'of unknown modality'}, so {tail}")
    n = len(series.slices)
    if n < MIN_SLICES:
        raise NotAVolumeError(
            f"{what} of at least {MIN_SLICES} slices; this series has {n} (a localiser or a few key images?), "
            f"so {tail}"
        )
    if len({s.hu.shape for s in series.slices}) > 1:
        raise NotAVolumeError(f"{what} whose slices share one size; these differ, so {tail}")
    _, dy, dx = series.spacing_mm
    if dy is None or dx is None or not (dy > 0 and dx > 0):
        raise NotAVolumeError(f"{what} with a known pixel spacing; this series has none, so {tail}")
    positions = [s.position_mm for s in series.slices]
    if any(p is None for p in positions):
        raise NotAVolumeError(
            f"{what} with known slice positions (Image Position / Orientation (Patient)); this series lacks "
            f"them, so {tail}"
        )
    orient = _orientation(series)
    if orient is not None:
        normal = np.cross(*orient)
        if abs(normal[2]) / np.linalg.norm(normal) < AXIAL_MIN_COS:
            raise NotAVolumeError(
                f"{what} of axial slices; this series is tilted more than 25 degrees from axial (a localiser "
                f"or a reformat?), so {tail}"
            )
    steps = np.diff(np.asarray(positions, dtype=np.float64))
    if np.any(steps <= 1e-3):
        raise NotAVolumeError(
            f"{what} with one slice per position; this series repeats positions (two series or duplicates "
            f"mixed?), so {tail}"
        )
    median = float(np.median(steps))
    if median > MAX_SLICE_GAP_MM:
        raise NotAVolumeError(
            f"{what} with slices at most {MAX_SLICE_GAP_MM:g} mm apart; these are {median:.1f} mm apart, too "
            f"far for 3-10 mm nodules to be seen in 3-D, so {tail}"
        )
    tolerance = max(SPACING_TOLERANCE * median, 0.1)
    worst = float(np.max(np.abs(steps - median)))
    if worst > tolerance:
        raise NotAVolumeError(
            f"{what} with regular slice spacing; the steps of this series range from {steps.min():.2f} to "
            f"{steps.max():.2f} mm (missing or extra slices?), so {tail}"
        )
    warnings = []
    if median > THIN_SLICE_MM + 1e-6:
        warnings.append(
            f"Slices are {median:.1f} mm apart, thicker than the <= {THIN_SLICE_MM:g} mm scans the detector was "
            "trained on: small nodules may be missed and diameters are less exact."
        )
    return warnings


def geometry_of(series: Any) -> Geometry:
    """The series' voxel grid in the patient (call :func:`check_volume` first).

    Args:
        series: a ``core.imaging.Series`` with slice positions and pixel spacing.

    Returns:
        :class:`Geometry`; ``origin_mm`` / cosines None when Image Position / Orientation
        (Patient) are not known (the store of an older version kept no Image Position).

    Raises:
        NotAVolumeError: slice positions or pixel spacing are missing.
    """
    if any(s.position_mm is None for s in series.slices) or None in series.spacing_mm[1:]:
        raise NotAVolumeError("The series has no slice positions or pixel spacing; check_volume refuses it.")
    positions = np.asarray([s.position_mm for s in series.slices], dtype=np.float64)
    corners = [s.image_position_mm for s in series.slices]
    origin = np.asarray(corners, dtype=np.float64) if all(c is not None for c in corners) else None
    orient = _orientation(series)
    return Geometry(
        positions_mm=positions,
        pixel_mm=(float(series.spacing_mm[1]), float(series.spacing_mm[2])),
        origin_mm=origin,
        row_cosines=orient[0] if orient else None,
        column_cosines=orient[1] if orient else None,
    )


def resample(
    volume: np.ndarray,
    geometry: Geometry,
    voxel_mm: float = 1.0,
    order: int = 1,
    box: tuple[slice, slice, slice] | None = None,
    cval: float = -1000.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate a (z, y, x) volume onto an isotropic grid, z following the real slice positions.

    Output voxel (k, j, i) samples the input at slice index ``geometry.z_index(z0 + k * voxel_mm)``,
    row ``(y0 + j * voxel_mm) / dy``, column ``(x0 + i * voxel_mm) / dx`` (SciPy
    ``ndimage.map_coordinates``; z, y and x are separable, so it runs as three 1-D interpolations
    for order 1, which is exactly trilinear).

    Args:
        volume: (z, y, x) array (float32 HU, or bool / uint8 for masks with ``order=0``).
        geometry: from :func:`geometry_of`.
        voxel_mm: output voxel size (mm).
        order: 0 (nearest, masks) or 1 (linear).
        box: optional (z, y, x) slices of the INPUT in voxels: only that part is resampled.
        cval: value outside the input (HU of air by default).

    Returns:
        (resampled volume (Z, Y, X) of ``volume``'s dtype (float32 for order 1), origin) where
        origin is float64 (3,): the fractional input index (z, y, x) of output voxel (0, 0, 0).

    Raises:
        ValueError: ``volume`` is not 3-D or does not match the geometry, or ``order`` not 0 / 1.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3 or vol.shape[0] != geometry.positions_mm.size:
        raise ValueError(f"expected a (z, y, x) volume of {geometry.positions_mm.size} slices, got {vol.shape}")
    if order not in (0, 1):
        raise ValueError(f"order must be 0 or 1, got {order}")
    box = box or (slice(0, vol.shape[0]), slice(0, vol.shape[1]), slice(0, vol.shape[2]))
    z0, z1 = box[0].start or 0, box[0].stop if box[0].stop is not None else vol.shape[0]
    y0, y1 = box[1].start or 0, box[1].stop if box[1].stop is not None else vol.shape[1]
    x0, x1 = box[2].start or 0, box[2].stop if box[2].stop is not None else vol.shape[2]
    zmm0, zmm1 = geometry.z_mm(z0), geometry.z_mm(z1 - 1)
    dy, dx = geometry.pixel_mm
    nz = int(np.floor((zmm1 - zmm0) / voxel_mm)) + 1
    ny = int(np.floor((y1 - 1 - y0) * dy / voxel_mm)) + 1
    nx = int(np.floor((x1 - 1 - x0) * dx / voxel_mm)) + 1
    zi = geometry.z_index(zmm0 + np.arange(nz) * voxel_mm)
    yi = y0 + np.arange(ny) * voxel_mm / dy
    xi = x0 + np.arange(nx) * voxel_mm / dx
    out_dtype = vol.dtype if order == 0 else np.float32
    src = vol[z0:z1, y0:y1, x0:x1]
    if order == 0:
        zr = np.clip(np.rint(zi).astype(int) - z0, 0, src.shape[0] - 1)
        yr = np.clip(np.rint(yi).astype(int) - y0, 0, src.shape[1] - 1)
        xr = np.clip(np.rint(xi).astype(int) - x0, 0, src.shape[2] - 1)
        out = src[zr][:, yr][:, :, xr]
        return np.ascontiguousarray(out, dtype=out_dtype), np.array([zi[0], yi[0], xi[0]])
    # separable linear interpolation: x, then y, then z (each a gather and a weighted sum)
    work = src.astype(np.float32, copy=False)
    for axis, idx, start in ((2, xi, x0), (1, yi, y0), (0, zi, z0)):
        work = _interp_axis(work, idx - start, axis)
    return work, np.array([zi[0], yi[0], xi[0]])


def _interp_axis(arr: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``arr`` along ``axis`` at fractional indices ``idx`` (clamped at the ends)."""
    n = arr.shape[axis]
    idx = np.clip(idx, 0, n - 1)
    lo = np.floor(idx).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    w = (idx - lo).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = -1
    w = w.reshape(shape)
    a = np.take(arr, lo, axis=axis)
    b = np.take(arr, hi, axis=axis)
    a *= 1.0 - w
    b *= w
    a += b
    return a


def network_input(hu: np.ndarray, spec: VolumeSpec = LUNA16_SPEC) -> np.ndarray:
    """HU at ``spec.voxel_mm`` in (z, y, x) order -> the network's input values and axis order.

    ``clip((HU - spec.hu_low) / (spec.hu_high - spec.hu_low), 0, 1)``, then the spatial axes
    reordered to ``spec.axes`` and a channel axis appended.

    Args:
        hu: float (..., z, y, x) in HU (a leading batch axis is allowed).

    Returns:
        float32 (..., a1, a2, a3, 1) in [0, 1], (a1, a2, a3) = ``spec.axes`` (x, y, z for LUNA16).
    """
    arr = np.asarray(hu, dtype=np.float32)
    scaled = np.clip((arr - np.float32(spec.hu_low)) / np.float32(spec.hu_high - spec.hu_low), 0.0, 1.0)
    lead = arr.ndim - 3
    pos = {"z": lead, "y": lead + 1, "x": lead + 2}
    order = list(range(lead)) + [pos[a] for a in spec.axes]
    return np.ascontiguousarray(np.transpose(scaled, order))[..., np.newaxis]


def cube_batch(
    hu_iso: np.ndarray, centres: np.ndarray | Sequence[Sequence[int]], spec: VolumeSpec = LUNA16_SPEC
) -> np.ndarray:
    """Cubes of ``spec.cube`` voxels centred on integer voxels of an isotropic HU volume.

    Voxels outside the volume are air (``spec.hu_low``); a cube of even size ``c`` around centre
    ``p`` spans ``p - c/2 ... p + c/2 - 1`` (as Hammack's ``img[c - 32:c + 32]``).

    Args:
        hu_iso: float (Z, Y, X) HU at ``spec.voxel_mm``.
        centres: int (n, 3) voxel indices (z, y, x).

    Returns:
        float32 (n, a1, a2, a3, 1) network input (:func:`network_input`).
    """
    c = spec.cube
    half = c // 2
    centres = np.asarray(centres, dtype=np.intp).reshape(-1, 3)
    pad = np.pad(np.asarray(hu_iso, dtype=np.float32), half, mode="constant", constant_values=spec.hu_low)
    cubes = np.empty((len(centres), c, c, c), dtype=np.float32)
    for i, (z, y, x) in enumerate(centres):
        cubes[i] = pad[z : z + c, y : y + c, x : x + c]
    return network_input(cubes, spec)


def dilate_mm(mask: np.ndarray, radius_mm: float, voxel_mm: float = 1.0, coarse: int = 2) -> np.ndarray:
    """Dilate an isotropic mask by ``radius_mm`` (Euclidean), on a grid ``coarse`` times coarser.

    The distance transform (SciPy ``distance_transform_edt``) runs on a block-max downsampled
    mask, so a voxel counts as inside when it lies within ``radius_mm`` of the mask, give or take
    ``coarse * voxel_mm`` (the block size).

    Args:
        mask: bool (Z, Y, X) on an isotropic grid of ``voxel_mm``.

    Returns:
        bool (Z, Y, X).
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return m.copy()
    shape = m.shape
    pads = [(0, (-s) % coarse) for s in shape]
    small = np.pad(m, pads).reshape(
        (shape[0] + pads[0][1]) // coarse, coarse, (shape[1] + pads[1][1]) // coarse, coarse,
        (shape[2] + pads[2][1]) // coarse, coarse,
    ).any(axis=(1, 3, 5))
    near = ndimage.distance_transform_edt(~small, sampling=coarse * voxel_mm) <= radius_mm
    big = near.repeat(coarse, 0).repeat(coarse, 1).repeat(coarse, 2)
    return np.ascontiguousarray(big[: shape[0], : shape[1], : shape[2]]) | m
