"""A model's read of one series, and how per-slice results become it.

Series aggregation. A tumour shows on a few slices of a CT (a 2 cm nodule covers 2-3 slices of
8 mm, about 20 of 1 mm), so the mean over all slices would dilute it to nothing in a 300-slice
study. The series score is the mean of the top-k "suspicious" probabilities (the class of
:func:`core.inference.decision.suspicious_class`: malignant for the 3-class models) over the in-distribution slices, with ``k = max(1, round(n / 100))``: one
slice for studies under 150 slices (the maximum: the most sensitive choice, as a screening aid
should be), and a few for thick 300-slice studies, so that one noisy slice alone does not make
the series malignant. The series label is :func:`core.inference.decision.decide` on the mean probability
row of those top-k slices (the card's thresholds). ``most_suspicious_index`` is the slice with
the highest suspicious probability, where the viewer opens; the top slices are in
``top_indices``. When more than half of the slices are OOD, the series result has
``is_ood = True`` (its display label is :data:`OOD_LABEL`) and the score is computed over all
slices but must not be read as a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.domain import OOD_LABEL, Finding
from core.preprocessing import Geometry


def top_k(n: int) -> int:
    """Number of slices averaged for the series score: ``max(1, round(n / 100))``."""
    return max(1, int(round(n / 100)))


@dataclass
class SeriesResult:
    """A model's read of one series.

    Attributes:
        model_id, model_sha256: the registry entry used.
        class_names: the model's output order.
        probabilities: float32 (n, k) per-slice class probabilities.
        labels: n per-slice labels (``core.inference.decision.decide`` with the card's thresholds).
        most_suspicious_index: slice with the highest suspicious-class probability among the
            in-distribution slices (all slices if none is).
        series_score: mean suspicious probability of the top-k slices (module docstring), in [0, 1].
        finding: the model's series label, a :class:`core.domain.Finding`: ``decide`` on the
            mean probability row of the top-k slices. Set also when ``is_ood``; it must not be
            read as a finding then.
        is_ood: True when more than half of the slices are out of distribution: the series as a
            whole is unlike the training data.
        ood: bool (n,) out-of-distribution flags.
        ood_reasons: n strings, the reasons each slice is OOD joined by "; " ("" when it is not).
        latency_ms: wall time of the whole analysis (preprocess + predict + OOD), milliseconds.
        top_indices: the top-k slice indices, most suspicious first.
        suspicious_class: the class the score is about (e.g. "malignant").
        window: ``(centre, width)`` in HU of the window the model input was made with.
        runtime: what computed the probabilities, ``"openvino"`` or ``"tensorflow"``.
        geometries: per-slice :class:`core.preprocessing.Geometry` (not serialised).
    """

    model_id: str
    model_sha256: str
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    labels: list[str]
    most_suspicious_index: int
    series_score: float
    finding: Finding
    is_ood: bool
    ood: np.ndarray
    ood_reasons: list[str]
    latency_ms: float
    top_indices: list[int] = field(default_factory=list)
    suspicious_class: str = "malignant"
    window: tuple[float, float] = (0.0, 0.0)
    runtime: str = ""
    geometries: list[Geometry] = field(default_factory=list, repr=False)

    @property
    def series_label(self) -> str:
        """Display label for text outputs (CSV, CLI): :data:`OOD_LABEL` when ``is_ood``, else ``finding``."""
        return OOD_LABEL if self.is_ood else self.finding.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (lists and floats only; geometries left out).

        ``finding`` and ``is_ood`` are the typed result; ``series_label`` is the display label
        (:attr:`series_label`), written for readers of text outputs only.
        """
        return {
            "model_id": self.model_id,
            "model_sha256": self.model_sha256,
            "class_names": list(self.class_names),
            "probabilities": np.asarray(self.probabilities, dtype=float).round(6).tolist(),
            "labels": list(self.labels),
            "most_suspicious_index": int(self.most_suspicious_index),
            "series_score": float(self.series_score),
            "finding": self.finding.value,
            "is_ood": bool(self.is_ood),
            "series_label": self.series_label,
            "ood": [bool(v) for v in self.ood],
            "ood_reasons": list(self.ood_reasons),
            "latency_ms": float(self.latency_ms),
            "top_indices": [int(i) for i in self.top_indices],
            "suspicious_class": self.suspicious_class,
            "window": [float(self.window[0]), float(self.window[1])],
            "runtime": self.runtime,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeriesResult:
        """The inverse of :meth:`to_dict`; also reads results stored before ``finding``/``is_ood``.

        Earlier results held only ``series_label``, which was :data:`OOD_LABEL` when the series
        was out of distribution (the dashboard also stored the sentinel as
        ``inference_series_label`` next to a Finding ``series_label``). For those, ``is_ood`` is
        True when either label is the sentinel, and ``finding`` is ``series_label`` when it is a
        Finding value, else the class with the highest mean probability over ``top_indices``
        (all slices when absent), the rule of this module without the card's thresholds.

        Args:
            data: a dict as written by :meth:`to_dict` (``probabilities`` a list of n lists of k
                floats; ``ood`` a list of n booleans).

        Returns:
            SeriesResult with float32 ``probabilities`` (n, k), bool ``ood`` (n,), no geometries.

        Raises:
            ValueError: a required key is missing, or no Finding can be read or derived.
        """
        try:
            names = tuple(str(c) for c in data["class_names"])
            probs = np.asarray(data["probabilities"], dtype=np.float32).reshape(-1, len(names))
            n = len(probs)
            old_labels = {str(data.get("series_label", "")), str(data.get("inference_series_label", ""))}
            is_ood = bool(data["is_ood"]) if "is_ood" in data else OOD_LABEL in old_labels
            label = data.get("finding", data.get("series_label"))
            if label not in {f.value for f in Finding}:
                top = [int(i) for i in data.get("top_indices") or range(n)]
                label = names[int(np.argmax(probs[top].mean(axis=0)))]
            ood = data.get("ood", [is_ood] * n)
            return cls(
                model_id=str(data["model_id"]),
                model_sha256=str(data["model_sha256"]),
                class_names=names,
                probabilities=probs,
                labels=[str(x) for x in data["labels"]],
                most_suspicious_index=int(data["most_suspicious_index"]),
                series_score=float(data["series_score"]),
                finding=Finding(label),
                is_ood=is_ood,
                ood=np.asarray(ood, dtype=bool).reshape(n),
                ood_reasons=[str(x) for x in data.get("ood_reasons", [""] * n)],
                latency_ms=float(data.get("latency_ms", 0.0)),
                top_indices=[int(i) for i in data.get("top_indices", [])],
                suspicious_class=str(data.get("suspicious_class", "malignant")),
                window=(float(data.get("window", (0.0, 0.0))[0]), float(data.get("window", (0.0, 0.0))[1])),
                runtime=str(data.get("runtime", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a stored series result ({type(exc).__name__}: {exc})") from exc
