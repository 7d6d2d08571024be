"""Grad-CAM localisation on annotated studies: how much heatmap mass falls in the tumour boxes.

``python -m models.evaluation.localization --tcia [--model ID] [--class-name NAME]`` prints
:func:`box_mass_fractions` for the Lung-PET-CT-Dx study (Li et al., TCIA,
doi:10.7937/TCIA.2020.NNC20461) as JSON. Boxes are read from its Pascal VOC annotations
(:func:`read_voc_boxes`); the heatmaps come from :meth:`core.inference.Predictor.explain`
(:mod:`core.inference.explain`).
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def read_voc_boxes(path: str | Path) -> list[tuple[int, int, int, int]]:
    """Bounding boxes of a Pascal VOC XML annotation (Everingham et al. 2010, the VOC format).

    Args:
        path: the XML file (``<object><bndbox><xmin>...`` in pixel coordinates, 1-based inclusive
            in the VOC convention; used here as ``[xmin, xmax)`` x ``[ymin, ymax)``).

    Returns:
        list of ``(ymin, ymax, xmin, xmax)`` int tuples.

    Raises:
        ValueError: the file is not valid VOC XML.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path} is not valid XML ({exc})") from exc
    boxes = []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        if b is None:
            continue
        vals = {k: int(float(b.findtext(k, "0"))) for k in ("xmin", "ymin", "xmax", "ymax")}
        boxes.append((vals["ymin"], vals["ymax"], vals["xmin"], vals["xmax"]))
    return boxes


def mass_in_boxes(heatmap: np.ndarray, boxes: Sequence[tuple[int, int, int, int]]) -> float:
    """Fraction of a heatmap's total mass inside the union of boxes.

    Args:
        heatmap: float (y, x) non-negative map at the slice's resolution.
        boxes: ``(ymin, ymax, xmin, xmax)`` pixel boxes.

    Returns:
        fraction in [0, 1]; 0 for an all-zero map.
    """
    h = np.asarray(heatmap, dtype=np.float64)
    mask = np.zeros(h.shape, dtype=bool)
    for y0, y1, x0, x1 in boxes:
        mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    total = float(h.sum())
    return float(h[mask].sum() / total) if total > 0 else 0.0


def box_mass_fractions(predictor: Any, tcia_dir: str | Path, class_name: str | None = None) -> dict[str, Any]:
    """How much Grad-CAM mass falls in the annotated tumour boxes of the TCIA study.

    For every slice of the Lung-PET-CT-Dx study with an annotation
    (``Annotation/A0002/<SOPInstanceUID>.xml``), the heatmap of ``class_name`` (default: the
    most suspicious class, "malignant") is computed at the slice's resolution and the fraction of
    its mass inside the boxes is taken. The floor is the same fraction for a uniform map over the
    slice (box area / slice area), and, stricter, for a uniform map over the body (box area /
    body-box area, the body found by :func:`core.preprocessing.body_box`).

    Args:
        predictor: a :class:`core.inference.Predictor`.
        tcia_dir: the ``lung-pet-ct-dx`` folder.
        class_name: class whose heatmap is measured; None = ``predictor.suspicious_class``.

    Returns:
        JSON-able dict: model id, class, number of annotated slices, mean/median heatmap mass
        fraction in boxes, the uniform-slice and uniform-body floors, and per-slice rows.

    Raises:
        ValueError: no annotated slice found.
    """
    from core.domain import WINDOW_PRESETS, WindowPreset
    from core.imaging import read_paths
    from core.preprocessing import body_box
    from core.windowing import apply_window

    root = Path(tcia_dir)
    ann = {p.stem: p for p in root.glob("Annotation/*/*.xml")}
    result = read_paths([root])
    cls = class_name or predictor.suspicious_class
    rows = []
    for series in result.series:
        for i, sl in enumerate(series.slices):
            if sl.sop_instance_uid not in ann:
                continue
            boxes = read_voc_boxes(ann[sl.sop_instance_uid])
            if not boxes:
                continue
            ex = predictor.explain(series, i, class_name=cls)
            area = np.zeros(sl.shape, dtype=bool)
            for y0, y1, x0, x1 in boxes:
                area[y0:y1, x0:x1] = True
            bb = body_box(apply_window(sl.hu, WINDOW_PRESETS[WindowPreset.MEDIASTINUM]))
            body = np.zeros(sl.shape, dtype=bool)
            if bb is not None:
                body[bb[0] : bb[1], bb[2] : bb[3]] = True
            else:
                body[:] = True
            rows.append(
                {
                    "series": series.description,
                    "slice_index": i,
                    "instance_number": sl.instance_number,
                    "p_class": float(ex.probabilities[predictor.class_names.index(cls)]),
                    "heatmap_mass_in_boxes": mass_in_boxes(ex.heatmap, boxes),
                    "uniform_slice_floor": float(area.mean()),
                    "uniform_body_floor": float((area & body).sum() / max(body.sum(), 1)),
                }
            )
    if not rows:
        raise ValueError(f"no annotated slice found under {root}; check the Annotation folder")
    frac = np.array([r["heatmap_mass_in_boxes"] for r in rows])
    return {
        "model_id": predictor.card.id,
        "class": cls,
        "annotated_slices": len(rows),
        "mean_mass_in_boxes": float(frac.mean()),
        "median_mass_in_boxes": float(np.median(frac)),
        "mean_uniform_slice_floor": float(np.mean([r["uniform_slice_floor"] for r in rows])),
        "mean_uniform_body_floor": float(np.mean([r["uniform_body_floor"] for r in rows])),
        "ratio_to_body_floor": float(
            frac.mean() / max(np.mean([r["uniform_body_floor"] for r in rows]), 1e-12)
        ),
        "slices": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.evaluation.localization --tcia [--model ID]``: print :func:`box_mass_fractions` as JSON."""
    parser = argparse.ArgumentParser(prog="python -m models.evaluation.localization", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tcia", action="store_true", help="measure heatmap mass in the TCIA tumour boxes")
    parser.add_argument("--model", default=None, help="registry model id (default: the default model)")
    parser.add_argument("--class-name", default=None, help="class whose heatmap is measured")
    args = parser.parse_args(argv)
    if not args.tcia:
        parser.print_help()
        return 2
    from core.inference import Predictor
    from core.registry import RegistryError, load_model
    from core.settings import get_settings

    try:
        predictor = Predictor(load_model(args.model))
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = box_mass_fractions(predictor, get_settings().tcia_dir, args.class_name)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
