"""A check of a model on annotated DICOM studies: does P(malignant) rise on the lesion slices, and
does Grad-CAM look inside the lungs and at the lesion?

    python -m models.evaluation.evaluate --model ID --dicom DIR      (DIR: the shared ``datasets`` folder)

Per series (LIDC-IDRI with its XML; Lung-PET-CT-Dx with its box folder):

- lesion slices: LIDC, a slice outlined for a nodule of 3 mm or more rated malignancy >= 3 by the
  reader who outlined it (any reader, :func:`core.annotations.lidc_suspicious`); Lung-PET-CT-Dx,
  a slice with a tumour box (biopsy-proven tumour);
- slice-level ROC AUC of P(malignant) (calibrated, as the dashboard shows it) for lesion slices
  against the rest (scikit-learn ``roc_auc_score``);
- the series label and score (:meth:`core.inference.Predictor.analyse_series`), and whether the
  most suspicious slice is a lesion slice;
- on up to ``max_cam_slices`` lesion slices (evenly spaced): the Grad-CAM (malignant class) mass
  inside the lung mask (:func:`core.lungs.lung_mask_series`) and inside the lesion, and the
  pointing game (heatmap maximum inside the lesion; Zhang et al., ECCV 2016), each beside the
  floor of a uniform map (the area fraction of the mask or lesion).

Three studies are a check of behaviour, not a validation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from core.annotations import lesion_masks, lidc_suspicious, read_lidc_xml, read_voc_folder
from core.imaging import Series, read_series
from core.lungs import lung_mask_series

LESION_RULE = (
    "LIDC-IDRI: a slice outlined for a nodule >= 3 mm rated malignancy >= 3 by the reader who outlined it "
    "(any reader); Lung-PET-CT-Dx: a slice with a tumour bounding box"
)
WARNING = "three annotated studies are a check of behaviour, not a validation"


def annotated_series(datasets: str | Path) -> list[tuple[str, Series, np.ndarray]]:
    """Annotated series under ``datasets`` (``lidc-idri/``, ``lung-pet-ct-dx/``).

    Returns:
        list of ``(name, series, lesion)`` with ``lesion`` bool (z, y, x) under :data:`LESION_RULE`.

    Raises:
        FileNotFoundError: no annotated series found.
    """
    root = Path(datasets)
    out = []
    for xml in sorted(root.glob("lidc-idri/LIDC-IDRI-*/*/*/*.xml")):
        s = read_series(xml.parent)
        uids = [sl.sop_instance_uid or "" for sl in s.slices]
        out.append(
            (
                xml.parts[-4],
                s,
                lesion_masks(uids, s.slices[0].shape, nodules=lidc_suspicious(read_lidc_xml(xml))),
            )
        )
    for patient in sorted(root.glob("lung-pet-ct-dx/Lung_Dx-*")):
        ann = root / "lung-pet-ct-dx" / "Annotation" / patient.name.split("-")[-1]
        if not ann.is_dir():
            continue
        boxes = read_voc_folder(ann)
        for folder in sorted(p for p in patient.glob("*/*") if p.is_dir()):
            s = read_series(folder)
            uids = [sl.sop_instance_uid or "" for sl in s.slices]
            kernel = folder.name.split("-")[-2].split()[-1] if "-" in folder.name else folder.name
            out.append((f"{patient.name} {kernel}", s, lesion_masks(uids, s.slices[0].shape, boxes=boxes)))
    if not out:
        raise FileNotFoundError(f"no annotated LIDC-IDRI or Lung-PET-CT-Dx series under {root}")
    return out


def _r(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def check_series(
    predictor: Any, name: str, series: Series, lesion: np.ndarray, max_cam_slices: int = 8
) -> dict[str, Any]:
    """The figures of the module docstring for one series: a JSON-ready dict."""
    from sklearn.metrics import roc_auc_score

    t0 = time.perf_counter()
    res = predictor.analyse_series(series)
    k = predictor.class_names.index("malignant") if "malignant" in predictor.class_names else -1
    p = np.asarray(res.probabilities)[:, k]
    is_lesion = lesion.any(axis=(1, 2))
    auc = float(roc_auc_score(is_lesion, p)) if 0 < is_lesion.sum() < len(is_lesion) else None
    vol = series.hu
    lungs = lung_mask_series(vol, series.spacing_mm)
    zs = np.flatnonzero(is_lesion)
    picks = (
        zs[np.linspace(0, len(zs) - 1, min(max_cam_slices, len(zs))).round().astype(int)] if len(zs) else zs
    )
    in_lung, lung_floor, in_les, les_floor, hits = [], [], [], [], []
    for z in picks:
        heat = predictor.explain_hu(vol[z], class_name="malignant").heatmap.astype(np.float64)
        total = heat.sum()
        if total <= 0:
            continue
        in_lung.append(heat[lungs[z]].sum() / total)
        lung_floor.append(lungs[z].mean())
        in_les.append(heat[lesion[z]].sum() / total)
        les_floor.append(lesion[z].mean())
        hits.append(bool(lesion[z].ravel()[int(np.argmax(heat))]))
    top = int(res.most_suspicious_index)
    return {
        "series": name,
        "n_slices": int(len(p)),
        "n_lesion_slices": int(is_lesion.sum()),
        "lesion_slice_range": [int(zs[0]), int(zs[-1])] if len(zs) else None,
        "slice_auc_malignant": _r(auc),
        "mean_p_malignant_lesion_slices": _r(float(p[is_lesion].mean()) if is_lesion.any() else None),
        "mean_p_malignant_other_slices": _r(float(p[~is_lesion].mean()) if (~is_lesion).any() else None),
        "series_label": res.series_label,
        "series_score": _r(res.series_score),
        "most_suspicious_slice": top,
        "most_suspicious_in_lesion": bool(is_lesion[top]),
        "cam_slices": [int(z) for z in picks],
        "cam_mass_in_lungs": _r(float(np.mean(in_lung)) if in_lung else None),
        "cam_mass_in_lungs_uniform_floor": _r(float(np.mean(lung_floor)) if lung_floor else None),
        "cam_mass_in_lesion": _r(float(np.mean(in_les)) if in_les else None),
        "cam_mass_in_lesion_uniform_floor": _r(float(np.mean(les_floor)) if les_floor else None),
        "pointing_game": _r(float(np.mean(hits)) if hits else None),
        "pointing_game_uniform_floor": _r(float(np.mean(les_floor)) if les_floor else None),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run(predictor: Any, datasets: str | Path, max_cam_slices: int = 8) -> dict[str, Any]:
    """The whole check for one model: ``{"model_id", "lesion_rule", "warning", "series": [...], "mean": {...}}``.

    Raises:
        FileNotFoundError: see :func:`annotated_series`.
    """
    rows = [check_series(predictor, n, s, les, max_cam_slices) for n, s, les in annotated_series(datasets)]
    keys = ("slice_auc_malignant", "cam_mass_in_lungs", "cam_mass_in_lesion", "pointing_game")
    mean = {}
    for key in (*keys, "most_suspicious_in_lesion"):
        vals = [float(r[key]) for r in rows if r[key] is not None]
        mean[key] = _r(float(np.mean(vals))) if vals else None
    return {
        "model_id": predictor.card.id,
        "model_sha256": predictor.card.sha256,
        "lesion_rule": LESION_RULE,
        "probabilities": "temperature-scaled (card), card's own window",
        "warning": WARNING,
        "max_cam_slices_per_series": max_cam_slices,
        "series": rows,
        "mean": mean,
    }


def format_report(rep: dict[str, Any]) -> str:
    """Human-readable lines of :func:`run`'s report."""
    lines = [f"DICOM check of {rep['model_id']} ({rep['warning']})", f"lesion slices: {rep['lesion_rule']}"]
    for r in rep["series"]:
        lines.append(
            f"  {r['series']:24s} AUC {r['slice_auc_malignant']}  series {r['series_label']} ({r['series_score']})  "
            f"top slice {r['most_suspicious_slice']} in lesion {r['most_suspicious_in_lesion']}  "
            f"CAM in lungs {r['cam_mass_in_lungs']} (uniform {r['cam_mass_in_lungs_uniform_floor']})  "
            f"in lesion {r['cam_mass_in_lesion']} (uniform {r['cam_mass_in_lesion_uniform_floor']})  "
            f"pointing {r['pointing_game']} (uniform {r['pointing_game_uniform_floor']})"
        )
    lines.append(f"  mean: {rep['mean']}")
    return "\n".join(lines)


def main_for(datasets: Path, model_id: str | None, every: bool, registry_dir: Path | None) -> int:
    """``models.evaluation.evaluate --dicom``: run the check for one model (None: the default) or every model,
    print it, write each ``dicom_check.json`` through :func:`core.registry.write_dicom_check`.

    Returns:
        0 on success, 2 on a user-facing error (printed).
    """
    import json
    import sys

    from core.inference import Predictor
    from core.registry import RegistryError, default_model_id, list_cards, load_model, write_dicom_check

    try:
        ids = (
            [c.id for c in list_cards(registry_dir)]
            if every
            else [model_id or default_model_id(registry_dir)]
        )
        for mid in ids:
            predictor = Predictor(load_model(mid, registry_dir), runtime="tensorflow")
            rep = run(predictor, datasets)
            path = write_dicom_check(mid, rep, registry_dir)
            print(format_report(rep), file=sys.stderr)
            print(json.dumps({"model_id": mid, "written": str(path), "mean": rep["mean"]}))
    except (RegistryError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
