"""Row builders shared by the database tests."""

from __future__ import annotations

import hashlib

from db import repository as repo


def sha(text: str) -> str:
    """sha256 hex of a text (stands in for content hashes and model hashes)."""
    return hashlib.sha256(text.encode()).hexdigest()


def new_study(s, uploader: int, tag: str, *, ai_label: str = "malignant", model_id: str = "basic-cnn-v1"):
    """Add a study and one inference of ``model_id`` whose label is ``ai_label``; returns (study, inference)."""
    study = repo.add_study(s, study_key=sha("key" + tag)[:32], modality="CT", n_series=1, n_slices=2,
                           source_kind="dicom", content_hash=sha("content" + tag), uploaded_by=uploader)
    probs = {"normal": [0.8, 0.1, 0.1], "benign": [0.1, 0.8, 0.1], "malignant": [0.1, 0.1, 0.8]}[ai_label]
    inf = repo.add_inference(s, study_id=study.id, model_id=model_id, model_sha256=sha(model_id),
                             slice_probabilities=[probs, probs], threshold=0.5, ood=False, latency_ms=10.0,
                             series_result={"series_label": ai_label, "series_score": 0.8})
    return study, inf
