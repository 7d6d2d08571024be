"""A contact sheet of detected nodules: one axial crop per nodule with a circle of its diameter."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.domain import WINDOW_PRESETS, WindowPreset
from core.nodules.types import Nodule
from core.windowing import apply_window

__all__ = ["CROP_MM", "contact_sheet"]

#: Side of each crop in mm (a 64 mm field, the network's cube).
CROP_MM = 64.0
#: Side of each tile in pixels, and the height of its caption band.
TILE_PX = 256
CAPTION_PX = 34
#: Circle colours: nodules yellow, masses orange.
_NODULE_RGB = (255, 220, 0)
_MASS_RGB = (255, 120, 0)


def contact_sheet(
    series: Any, nodules: Sequence[Nodule], path: str | Path | None = None, columns: int = 4, limit: int = 16
) -> Image.Image:
    """Draw the first ``limit`` nodules as axial crops (lung window, PS3.3 C.11.2.1.2.1 via
    ``core.windowing.apply_window`` with ``WINDOW_PRESETS[WindowPreset.LUNG]``), each
    :data:`CROP_MM` mm wide centred on the nodule on its ``slice_index``, with a circle of its
    ``diameter_mm`` and a caption (rank, p, diameter, malignancy).

    Args:
        series: the ``core.imaging.Series`` the nodules were found in (needs pixel spacing).
        nodules: detections of :func:`core.nodules.detect_nodules`.
        path: write the sheet there as PNG when given.
        columns: tiles per row. limit: most tiles drawn.

    Returns:
        RGB ``PIL.Image`` (a single "no nodules" tile when the list is empty).

    Raises:
        ValueError: ``columns`` or ``limit`` below 1, or a nodule's slice outside the series.
        OSError: the PNG cannot be written.
    """
    if columns < 1 or limit < 1:
        raise ValueError("columns and limit must be at least 1")
    shown = list(nodules)[:limit]
    dy = float(series.spacing_mm[1] or 0.7)
    dx = float(series.spacing_mm[2] or 0.7)
    n = max(1, len(shown))
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    sheet = Image.new("RGB", (cols * TILE_PX, rows * (TILE_PX + CAPTION_PX)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    if not shown:
        draw.text((10, TILE_PX // 2), "no nodules reported", fill=(255, 255, 255))
    window = WINDOW_PRESETS[WindowPreset.LUNG]
    for i, nod in enumerate(shown):
        z, y, x = nod.centre_voxel
        if not 0 <= z < len(series.slices):
            raise ValueError(f"nodule {nod.rank} lies on slice {z}, outside the series' {len(series.slices)} slices")
        hu = series.slices[z].hu
        hy, hx = CROP_MM / 2 / dy, CROP_MM / 2 / dx
        y0, x0 = int(round(y - hy)), int(round(x - hx))
        h, w = int(round(2 * hy)), int(round(2 * hx))
        crop = np.full((h, w), -1000.0, dtype=np.float32)
        sy0, sx0 = max(y0, 0), max(x0, 0)
        sy1, sx1 = min(y0 + h, hu.shape[0]), min(x0 + w, hu.shape[1])
        if sy1 > sy0 and sx1 > sx0:
            crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = hu[sy0:sy1, sx0:sx1]
        grey = (apply_window(crop, window) * 255).astype(np.uint8)
        tile = Image.fromarray(grey).resize((TILE_PX, TILE_PX), Image.BILINEAR).convert("RGB")
        tdraw = ImageDraw.Draw(tile)
        r = nod.diameter_mm / 2 / CROP_MM * TILE_PX
        c = TILE_PX / 2
        tdraw.ellipse((c - r, c - r, c + r, c + r), outline=_MASS_RGB if nod.is_mass else _NODULE_RGB, width=2)
        col, row = i % cols, i // cols
        ox, oy = col * TILE_PX, row * (TILE_PX + CAPTION_PX)
        sheet.paste(tile, (ox, oy))
        kind = "mass" if nod.is_mass else "nodule"
        draw.text((ox + 4, oy + TILE_PX + 2),
                  f"#{nod.rank} {kind} p={nod.p_nodule:.2f} slice {nod.slice_index}", fill=(255, 255, 255))
        draw.text((ox + 4, oy + TILE_PX + 17),
                  f"{nod.diameter_mm:.1f} mm, malignancy {nod.malignancy:.1f}/5", fill=(200, 200, 200))
    if path is not None:
        sheet.save(Path(path), format="PNG")
    return sheet
