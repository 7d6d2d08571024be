"""Row builders shared by the database tests."""

from __future__ import annotations

import hashlib

from db import repository as repo


def sha(text: str) -> str:
    """sha256 hex of a text (stands in for content hashes and model hashes)."""
    return hashlib.sha256(text.encode()).hexdigest()


def new_study(s, uploader: int, tag: str, *, ai_label: str = "malignant", model_id: str = "basic-cnn-v1"):
    """Add a study with one series and one inference of ``model_id`` whose label is ``ai_label``;
    returns (study, inference)."""
    study = repo.add_study(s, study_key=sha("key" + tag)[:32], modality="CT", n_series=1, n_slices=2,
                           source_kind="dicom", content_hash=sha("content" + tag), uploaded_by=uploader)
    series = repo.add_series(s, study_id=study.id, series_key=sha("series" + tag)[:32], modality="CT",
                             n_slices=2, spacing_mm=(8.0, 0.7, 0.7), description="CT chest")
    inf = new_inference(s, series.id, ai_label=ai_label, model_id=model_id)
    return study, inf


def new_inference(s, series_id: int, *, ai_label: str = "malignant", model_id: str = "basic-cnn-v1"):
    """Add one inference (2 slices) of ``model_id`` on a series, labelled ``ai_label``."""
    probs = {"normal": [0.8, 0.1, 0.1], "benign": [0.1, 0.8, 0.1], "malignant": [0.1, 0.1, 0.8]}[ai_label]
    return repo.add_inference(s, series_id=series_id, model_id=model_id, model_sha256=sha(model_id),
                              slice_probabilities=[probs, probs], threshold=0.5, ood=False, latency_ms=10.0,
                              series_result={"finding": ai_label, "is_ood": False, "series_score": 0.8})
