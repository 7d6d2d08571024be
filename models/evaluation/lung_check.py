"""Measure the lung-field masks of :mod:`core.lungs` on the shared data and draw a contact sheet.

    python -m models.evaluation.lung_check [--datasets DIR] [--sheet PNG] [--iq-limit N]

Prints, per DICOM series (LIDC-IDRI nodule outlines, Lung-PET-CT-Dx tumour boxes), the fraction of
lesion pixels inside the series mask (:func:`core.lungs.lung_mask_series`) and inside the
single-slice mask (:func:`core.lungs.lung_mask`); for LIDC only nodules of 3 mm or more
(outlined) count. On IQ-OTH/NCCD, the fraction of slices where two lungs were found
(:func:`core.lungs.count_lungs`). Time per slice for both. The contact sheet (PNG) shows slices
with the mask outline (cyan) and lesion marks (red); it is written under ``var/`` by default.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core.annotations import lesion_masks, read_lidc_xml, read_voc_folder
from core.domain import WINDOW_PRESETS, WindowPreset
from core.imaging import Series, read_series
from core.lungs import count_lungs, lung_mask, lung_mask_series, lung_outline_rgba
from core.settings import REPO_ROOT
from core.windowing import window_to_uint8


def dicom_series(datasets: Path) -> list[tuple[str, Series, np.ndarray]]:
    """Every annotated DICOM series under ``datasets``: (name, series, lesion mask (z, y, x) bool)."""
    out = []
    for xml in sorted((datasets / "lidc-idri").glob("LIDC-IDRI-*/*/*/*.xml")):
        s = read_series(xml.parent)
        uids = [sl.sop_instance_uid or "" for sl in s.slices]
        nods = [n for n in read_lidc_xml(xml) if n.at_least_3mm]
        out.append((xml.parts[-4], s, lesion_masks(uids, s.slices[0].shape, nodules=nods)))
    ann = datasets / "lung-pet-ct-dx" / "Annotation"
    for patient in sorted((datasets / "lung-pet-ct-dx").glob("Lung_Dx-*")):
        boxes = read_voc_folder(ann / patient.name.split("-")[-1])
        for folder in sorted(p for p in patient.glob("*/*") if p.is_dir()):
            s = read_series(folder)
            uids = [sl.sop_instance_uid or "" for sl in s.slices]
            out.append(
                (
                    f"{patient.name}/{folder.name.split('-')[-2].strip()}",
                    s,
                    lesion_masks(uids, s.slices[0].shape, boxes=boxes),
                )
            )
    return out


def _tile(
    hu: np.ndarray, mask: np.ndarray, lesion: np.ndarray | None, window, size: int = 256
) -> Image.Image:
    grey = window_to_uint8(hu, window)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    over = lung_outline_rgba(mask, width=2).astype(np.float32)
    a = over[..., 3:4] / 255.0
    rgb = rgb * (1 - a) + over[..., :3] * a
    if lesion is not None and lesion.any():
        edge = lesion & ~np.pad(lesion, 1)[2:, 1:-1] | lesion & ~np.pad(lesion, 1)[:-2, 1:-1]
        edge |= lesion & ~np.pad(lesion, 1)[1:-1, 2:] | lesion & ~np.pad(lesion, 1)[1:-1, :-2]
        rgb[edge] = (255, 0, 0)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).resize((size, size))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.evaluation.lung_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=str(REPO_ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--sheet", default=str(REPO_ROOT / "var" / "lung_check.png"))
    ap.add_argument("--iq-limit", type=int, default=None, help="at most N IQ-OTH/NCCD slices (every k-th)")
    args = ap.parse_args(argv)
    datasets = Path(args.datasets)
    tiles: list[Image.Image] = []
    lung_win = WINDOW_PRESETS[WindowPreset.LUNG]
    print(
        "lesion pixels inside the lung mask (LIDC: nodules >= 3 mm, all readers' outlines; Lung-PET-CT-Dx: boxes)"
    )
    for name, s, lesion in dicom_series(datasets):
        vol = s.hu
        t = time.perf_counter()
        m3 = lung_mask_series(vol, s.spacing_mm)
        t3 = (time.perf_counter() - t) / len(vol)
        t = time.perf_counter()
        m2 = np.stack([lung_mask(v, s.spacing_mm) for v in vol])
        t2 = (time.perf_counter() - t) / len(vol)
        n = int(lesion.sum())
        zs = np.flatnonzero(lesion.any(axis=(1, 2)))
        centre_in = (
            np.mean([m3[z][tuple(np.round(np.argwhere(lesion[z]).mean(0)).astype(int))] for z in zs])
            if n
            else float("nan")
        )
        print(
            f"  {name:34s} {len(vol):3d} slices, {len(zs):2d} lesion slices: inside series mask "
            f"{(lesion & m3).sum() / max(n, 1):.3f}, slice mask {(lesion & m2).sum() / max(n, 1):.3f}; "
            f"lesion centre inside {centre_in:.2f}; two lungs on {np.mean([count_lungs(m) >= 2 for m in m3]):.2f} "
            f"of slices; {t3 * 1000:.0f} ms/slice (series), {t2 * 1000:.0f} ms/slice (single)",
            flush=True,
        )
        picks = list(zs[:: max(1, len(zs) // 3)][:3]) + [int(len(vol) * f) for f in (0.1, 0.5, 0.9)]
        for z in picks:
            tiles.append(_tile(vol[z], m3[z], lesion[z], lung_win))

    from models.data import catalogue, load_hu

    iq = datasets / "iq-othnccd"
    df = catalogue(iq)
    if args.iq_limit:
        df = df.iloc[:: max(1, len(df) // args.iq_limit)]
    two, empty, times = [], [], []
    by_label: dict[str, list[bool]] = {}
    iq_win = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]
    for i, (path, label) in enumerate(zip(df["path"], df["label"], strict=True)):
        (hu,) = load_hu(iq, [path])
        t = time.perf_counter()
        m = lung_mask(hu)
        times.append(time.perf_counter() - t)
        k = count_lungs(m)
        two.append(k >= 2)
        empty.append(k == 0)
        by_label.setdefault(str(label), []).append(k >= 2)
        if i % max(1, len(df) // 18) == 0:
            tiles.append(_tile(hu, m, None, iq_win))
    print(
        f"IQ-OTH/NCCD: {len(df)} slices, two lungs found on {np.mean(two):.3f} "
        f"({', '.join(f'{k} {np.mean(v):.3f}' for k, v in sorted(by_label.items()))}), empty mask on "
        f"{np.mean(empty):.3f}; {np.mean(times) * 1000:.0f} ms/slice"
    )
    cols = 6
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * 256, rows * 256))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * 256, (i // cols) * 256))
    Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.sheet)
    print(f"contact sheet: {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
