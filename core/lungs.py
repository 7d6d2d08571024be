"""Lung-field masks from CT slices in HU (real DICOM HU or HU estimated from 8-bit exports).

Method: the classic threshold-and-connectivity pipeline of Hu, Hoffman and Reinhardt,
"Automatic lung segmentation for accurate quantitation of volumetric X-ray CT images",
IEEE Trans. Med. Imaging 20(6):490-498 (2001), simplified to a fixed threshold:

1. air: pixels below :data:`AIR_HU` (-400 HU; lung parenchyma is about -900 to -500 HU, soft
   tissue above -100 HU, so the threshold sits between the two classes as in Hu et al.);
2. air outside the body is removed by connectivity: every air region that touches the image's
   in-plane border (the canvas, the air around and under the patient) is dropped;
3. what remains are air regions enclosed by tissue: lungs and airways, plus small pockets
   (bowel gas, the table's hollow parts, noise). Regions smaller than :data:`MIN_LUNG_MM2` are
   dropped; the trachea and main bronchi are removed as small regions (under
   :data:`AIRWAY_MAX_MM2`) whose centre lies in the middle band of the body (Hu et al. remove
   them by region growing from the trachea; on single slices size and position stand in);
4. the holes of each region are filled (vessels, nodules inside the lung);
5. the two largest regions are kept (regions under :data:`SECOND_LUNG_FRACTION` of the largest
   are dropped: bowel gas, stomach);
6. a morphological closing with a disc of :data:`CLOSING_MM` (20 mm) diameter, then hole
   filling again, puts juxta-pleural nodules and hilar masses (which indent the air region)
   back inside the mask, as the "rolling ball" step of Armato et al. (Radiology 2001) and Hu et al.

Pixel size: from ``spacing_mm`` (DICOM PixelSpacing); when unknown :data:`DEFAULT_PIXEL_MM`
(0.7 mm, a 512-pixel matrix over a 36 cm field of view, typical of chest CT).

Slices of 256 pixels or more are processed at half resolution (every second row and column) and
the mask is brought back by nearest-neighbour repetition. Everything is SciPy / scikit-image morphology. A slice without air enclosed by tissue (blank,
all air, all tissue, a photograph) gives an empty mask, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import remove_small_holes

#: HU below which a pixel counts as air or lung (Hu et al. 2001 choose their threshold between
#: the lung and body intensity classes; -400 HU lies between parenchyma and soft tissue).
AIR_HU = -400.0
#: Pixel size assumed when the spacing is unknown (mm): 360 mm field of view / 512 pixels.
DEFAULT_PIXEL_MM = 0.7
#: Diameter of the closing disc (mm); chosen on the shared LIDC-IDRI outlines (figures in README)
CLOSING_MM = 20.0
#: Air regions smaller than this (mm^2) are noise or small gas pockets.
MIN_LUNG_MM2 = 150.0
#: Largest cross-section (mm^2) of an air region still treated as trachea or main bronchus when
#: it lies centrally (adult trachea about 2-3 cm^2, Breatnach et al., AJR 1984).
AIRWAY_MAX_MM2 = 600.0
#: The second region is kept only if at least this fraction of the largest.
SECOND_LUNG_FRACTION = 0.05
#: Holes up to this area (mm^2) are filled after the closing (a 4 cm lesion enclosed by lung is
#: about 1300 mm^2; the mediastinum enclosed by joined lungs is several thousand).
MAX_HOLE_MM2 = 2000.0
#: Width (mm) of the opening that removes the black speckle of fat and muscle in narrow-window
#: 8-bit exports (IQ-OTH/NCCD), where everything under the window floor became air-like.
EXPORT_SPECKLE_MM = 4.0
#: Closing (mm) of tissue that joins the body wall into one region enclosing the lungs; larger
#: for exports, whose body wall is broken by the speckle.
BODY_CLOSING_MM = 5.0
EXPORT_BODY_CLOSING_MM = 15.0

_FOUR = ndimage.generate_binary_structure(2, 1)


def pixel_size_mm(spacing_mm: float | Sequence[float | None] | None) -> tuple[float, float]:
    """(row, column) pixel size in mm from a scalar, (y, x) or (z, y, x) spacing (None parts and
    non-positive values: :data:`DEFAULT_PIXEL_MM`); a tuple of two floats."""
    if spacing_mm is None:
        return DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM
    if np.isscalar(spacing_mm):
        v = float(spacing_mm)  # type: ignore[arg-type]
        return (v, v) if v > 0 else (DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM)
    vals = list(spacing_mm)[-2:]  # type: ignore[arg-type]
    out = []
    for v in vals:
        out.append(float(v) if v is not None and float(v) > 0 else DEFAULT_PIXEL_MM)
    if len(out) == 1:
        out = out * 2
    return out[0], out[1]


def _border_touching(labels: np.ndarray) -> np.ndarray:
    """Boolean per label (index 0 = background): does the region touch the in-plane border?"""
    n = int(labels.max())
    touch = np.zeros(n + 1, dtype=bool)
    for edge in (labels[..., 0, :], labels[..., -1, :], labels[..., :, 0], labels[..., :, -1]):
        touch[np.unique(edge)] = True
    touch[0] = True
    return touch


def _disc(pixel_mm: tuple[float, float]) -> np.ndarray:
    """Disc structuring element of diameter :data:`CLOSING_MM` at the mean pixel size."""
    return _round_disc(CLOSING_MM / 2 / (0.5 * (pixel_mm[0] + pixel_mm[1])))


def _round_disc(radius: float) -> np.ndarray:
    """Pixels whose centre lies within ``radius`` + 1/2 (radius float, >= 1) of the centre: bool square.

    Unlike ``skimage.morphology.disk`` at small integer radii (a diamond), a fractional radius
    keeps the element round, so a closing fills notches narrower than 2 x radius.
    """
    r = max(1.0, float(radius)) + 0.5  # pixel centres within r + 1/2: no one-pixel tips
    k = int(np.floor(r))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    return (yy**2 + xx**2) < r**2


def _finish_slice(
    candidates: np.ndarray, pixel_mm: tuple[float, float], body_x: tuple[float, float]
) -> np.ndarray:
    """Steps 3-6 on one slice's enclosed air ``candidates`` (bool (y, x)); returns bool (y, x)."""
    area_px = pixel_mm[0] * pixel_mm[1]
    labels, n = ndimage.label(candidates, structure=_FOUR)
    if n == 0:
        return np.zeros(candidates.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(float) * area_px
    sizes[0] = 0.0
    keep = sizes >= MIN_LUNG_MM2
    if keep.sum() > 1:
        # trachea / main bronchi: small, central regions (only when something larger remains)
        centres = ndimage.center_of_mass(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        x0, x1 = body_x
        mid_lo, mid_hi = x0 + 0.38 * (x1 - x0), x0 + 0.62 * (x1 - x0)
        biggest = sizes.max()
        for i, (_, cx) in enumerate(centres, start=1):
            if keep[i] and sizes[i] < min(AIRWAY_MAX_MM2, 0.5 * biggest) and mid_lo <= cx <= mid_hi:
                keep[i] = False
    if not keep.any():
        return np.zeros(candidates.shape, dtype=bool)
    order = np.argsort(np.where(keep, sizes, 0.0))[::-1]
    chosen = [int(order[0])]
    if len(order) > 1 and keep[order[1]] and sizes[order[1]] >= SECOND_LUNG_FRACTION * sizes[order[0]]:
        chosen.append(int(order[1]))
    # each lung is closed on its own, so that the closing does not join the two lungs
    se = _disc(pixel_mm)
    pad = se.shape[0]
    mask = np.zeros(candidates.shape, dtype=bool)
    closed = np.zeros(candidates.shape, dtype=bool)
    for i in chosen:
        one = ndimage.binary_fill_holes(labels == i)
        mask |= one
        closed |= ndimage.binary_closing(np.pad(one, pad), structure=se)[pad:-pad, pad:-pad] | one
    # fill holes up to MAX_HOLE_MM2 only: a closing that bridges the two lungs in front of the
    # heart leaves the mediastinum as a hole, which must stay outside
    return remove_small_holes(closed, max_size=int(MAX_HOLE_MM2 / area_px))


def is_clamped_export(hu: np.ndarray) -> bool:
    """True when ``hu`` looks like HU estimated from a narrow-window 8-bit export.

    Such slices (:func:`core.windowing.hu_from_uint8`) hold one clamped value for everything
    below the window and almost no values between -990 and -140 HU, where real CT has lung
    parenchyma and fat.

    Args:
        hu: (y, x) or (z, y, x) real array in HU.
    """
    arr = np.asarray(hu)
    low = arr < -990
    return bool(low.mean() > 0.05 and ((arr >= -990) & (arr < -140)).mean() < 0.001)


def _air(arr: np.ndarray, pixel_mm: tuple[float, float], clamped: bool) -> np.ndarray:
    """Air-like pixels of one slice: bool (y, x), speckle of exports removed by an opening."""
    air = np.asarray(arr < AIR_HU)  # NaN compares False: tissue
    if clamped:
        k = max(3, int(round(EXPORT_SPECKLE_MM / min(pixel_mm))) | 1)
        air = ndimage.binary_opening(air, structure=np.ones((k, k), dtype=bool))
    return air


def _body(air: np.ndarray, pixel_mm: tuple[float, float], clamped: bool) -> np.ndarray:
    """The body of one slice: the largest tissue region after a closing, holes filled; bool (y, x)."""
    se = _round_disc((EXPORT_BODY_CLOSING_MM if clamped else BODY_CLOSING_MM) / 2 / min(pixel_mm))
    r = se.shape[0]
    tissue = ndimage.binary_closing(np.pad(~air, r), structure=se)[r:-r, r:-r]
    labels, n = ndimage.label(tissue, structure=_FOUR)
    if n == 0:
        return np.zeros(air.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(sizes.argmax()))


def _body_x(body: np.ndarray) -> tuple[float, float]:
    """Left and right column of the body on a slice, or the whole width when none."""
    cols = np.flatnonzero(body.any(axis=0))
    if cols.size == 0:
        return 0.0, float(body.shape[1])
    return float(cols[0]), float(cols[-1] + 1)


def _check(hu: np.ndarray, ndim: int) -> np.ndarray:
    arr = np.asarray(hu)
    if arr.ndim != ndim:
        shape = "(y, x)" if ndim == 2 else "(z, y, x)"
        raise ValueError(f"expected HU shaped {shape}, got an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"expected a numeric HU array, got dtype {arr.dtype}")
    return arr


def lung_mask(hu: np.ndarray, spacing_mm: float | Sequence[float | None] | None = None) -> np.ndarray:
    """Lung-field mask of one axial slice (method in the module docstring).

    Args:
        hu: (y, x) real array in HU (real or estimated). Non-finite values count as tissue.
        spacing_mm: pixel size in mm: a scalar, ``(row, column)`` or ``(z, row, column)``
            (``Series.spacing_mm``); None or missing parts use :data:`DEFAULT_PIXEL_MM`.

    Returns:
        bool (y, x): True inside the lungs. All False when the slice shows no lungs
        (blank, all air, all tissue, not a CT).

    Raises:
        ValueError: ``hu`` is not a 2-D numeric array.
    """
    arr = _check(hu, 2)
    if arr.size == 0 or min(arr.shape) < 3:
        return np.zeros(arr.shape, dtype=bool)
    pixel_mm = pixel_size_mm(spacing_mm)
    clamped = is_clamped_export(arr)
    small, step = _downsample(arr)
    pixel_mm = (pixel_mm[0] * step, pixel_mm[1] * step)
    air = _air(small, pixel_mm, clamped)
    body = _body(air, pixel_mm, clamped)
    air &= body
    labels, _ = ndimage.label(air, structure=_FOUR)
    enclosed = air & ~_border_touching(labels)[labels]
    return _upsample(_finish_slice(enclosed, pixel_mm, _body_x(body)), step, arr.shape)


def _downsample(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """Every second row and column of slices of 256 pixels or more (for speed), and the step."""
    step = 2 if min(arr.shape[-2:]) >= 256 else 1
    return arr[..., ::step, ::step], step


def _upsample(mask: np.ndarray, step: int, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour inverse of :func:`_downsample`, cut to ``shape``."""
    if step == 1:
        return mask
    big = np.repeat(np.repeat(mask, step, axis=-2), step, axis=-1)
    return np.ascontiguousarray(big[..., : shape[-2], : shape[-1]])


def lung_mask_series(hu: np.ndarray, spacing_mm: float | Sequence[float | None] | None = None) -> np.ndarray:
    """Lung-field mask of a volume, with 3-D connectivity (method in the module docstring).

    Air regions are labelled in 3-D (6-connectivity), so bowel gas and the stomach, which are
    not connected to the lungs through the volume, are dropped as whole regions: only regions
    of at least :data:`SECOND_LUNG_FRACTION` of the largest 3-D region's volume are kept (the two
    lungs, or one when they join through the airways). Border contact is judged in-plane only
    (the lungs touch the first and last slice of a partial stack). Steps 3-6 then run per slice.

    Args:
        hu: (z, y, x) real array in HU, z in slice order.
        spacing_mm: ``(z, row, column)`` in mm (``Series.spacing_mm``), ``(row, column)`` or a
            scalar pixel size; None or missing parts use :data:`DEFAULT_PIXEL_MM` in-plane.

    Returns:
        bool (z, y, x). Slices without lungs are all False.

    Raises:
        ValueError: ``hu`` is not a 3-D numeric array.
    """
    arr = _check(hu, 3)
    out = np.zeros(arr.shape, dtype=bool)
    if arr.size == 0 or min(arr.shape[1:]) < 3:
        return out
    pixel_mm = pixel_size_mm(spacing_mm)
    clamped = is_clamped_export(arr)
    full_shape = arr.shape
    arr, step = _downsample(arr)
    pixel_mm = (pixel_mm[0] * step, pixel_mm[1] * step)
    out = np.zeros(arr.shape, dtype=bool)
    air = np.stack([_air(a, pixel_mm, clamped) for a in arr])
    bodies = np.stack([_body(a, pixel_mm, clamped) for a in air])
    air &= bodies
    labels, n = ndimage.label(air, structure=ndimage.generate_binary_structure(3, 1))
    if n == 0:
        return _upsample(out, step, full_shape)
    touch = _border_touching(labels)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[touch] = 0
    if sizes.max() == 0:
        return _upsample(out, step, full_shape)
    keep = sizes >= SECOND_LUNG_FRACTION * sizes.max()
    keep[0] = False
    enclosed = keep[labels]
    for z in range(arr.shape[0]):
        if enclosed[z].any():
            out[z] = _finish_slice(enclosed[z], pixel_mm, _body_x(bodies[z]))
    return _upsample(out, step, full_shape)


def count_lungs(mask: np.ndarray, min_fraction: float = 0.05) -> int:
    """Number of separate lung regions in a slice mask (4-connected).

    Args:
        mask: bool (y, x) from :func:`lung_mask`.
        min_fraction: regions smaller than this fraction of the largest are not counted.

    Returns:
        0, 1 (lungs joined or one lung), 2 or more.
    """
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=_FOUR)
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= min_fraction * sizes.max()).sum())


def lung_outline_rgba(
    mask: np.ndarray, color: tuple[int, int, int] = (0, 200, 255), alpha: int = 200, width: int = 1
) -> np.ndarray:
    """An RGBA overlay of the lung mask's outline, to draw over the slice in a viewer.

    Args:
        mask: bool (y, x) lung mask (:func:`lung_mask`).
        color: RGB of the outline, 0-255.
        alpha: opacity of the outline pixels, 0-255 (everything else is fully transparent).
        width: outline thickness in pixels (inner boundary of the mask, >= 1).

    Returns:
        uint8 (y, x, 4) image: ``color`` with opacity ``alpha`` on the mask's boundary pixels,
        transparent elsewhere (all transparent for an empty mask).

    Raises:
        ValueError: ``mask`` is not 2-D, or ``width`` < 1, or ``alpha``/``color`` out of 0-255.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"expected a (y, x) mask, got shape {m.shape}")
    if width < 1:
        raise ValueError(f"outline width must be at least 1 pixel, got {width}")
    if not 0 <= alpha <= 255 or any(not 0 <= c <= 255 for c in color):
        raise ValueError("colour and alpha must lie in 0-255")
    inner = ndimage.binary_erosion(m, structure=_FOUR, iterations=width, border_value=0)
    edge = m & ~inner
    out = np.zeros((*m.shape, 4), dtype=np.uint8)
    out[edge, :3] = np.asarray(color, dtype=np.uint8)
    out[edge, 3] = alpha
    return out
