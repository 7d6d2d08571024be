"""Tests of core.inference.SeriesResult: typed finding and OOD flag, JSON round trip, old JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.domain import CLASS_NAMES, Finding
from core.inference import OOD_LABEL, SeriesResult


def result(**change) -> SeriesResult:
    kwargs = dict(model_id="m", model_sha256="a" * 64, class_names=CLASS_NAMES,
                  probabilities=np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]], np.float32), labels=["normal", "malignant"],
                  most_suspicious_index=1, series_score=0.7, finding=Finding.MALIGNANT, is_ood=False,
                  ood=np.array([False, False]), ood_reasons=["", ""], latency_ms=3.0, top_indices=[1],
                  runtime="openvino")
    kwargs.update(change)
    return SeriesResult(**kwargs)


class TestToDict:
    def test_round_trip_through_json_keeps_every_field(self):
        r = result(is_ood=True, ood=np.array([True, True]), ood_reasons=["blank", "blank"])
        back = SeriesResult.from_dict(json.loads(json.dumps(r.to_dict())))
        assert (back.finding, back.is_ood, back.labels, back.top_indices) == (Finding.MALIGNANT, True,
                                                                              r.labels, [1])
        np.testing.assert_allclose(back.probabilities, r.probabilities, atol=1e-6)
        assert back.ood.tolist() == [True, True] and back.runtime == "openvino"

    def test_finding_is_kept_when_ood_and_the_display_label_is_the_sentinel(self):
        d = result(is_ood=True).to_dict()
        assert d["finding"] == "malignant" and d["is_ood"] is True and d["series_label"] == OOD_LABEL
        assert result().series_label == "malignant"


class TestFromOldJson:
    def old(self, **change) -> dict:
        d = result().to_dict()
        del d["finding"], d["is_ood"]
        d.update(change)
        return d

    def test_sentinel_label_gives_is_ood_and_the_finding_of_the_top_slices(self):
        back = SeriesResult.from_dict(self.old(series_label=OOD_LABEL))
        assert back.is_ood and back.finding is Finding.MALIGNANT  # top slice 1: argmax malignant

    def test_dashboard_rows_with_a_finding_label_and_the_sentinel_beside_it(self):
        back = SeriesResult.from_dict(self.old(series_label="benign", inference_series_label=OOD_LABEL))
        assert back.is_ood and back.finding is Finding.BENIGN

    def test_plain_old_label_is_the_finding(self):
        back = SeriesResult.from_dict(self.old(series_label="normal"))
        assert not back.is_ood and back.finding is Finding.NORMAL

    def test_missing_keys_are_a_value_error(self):
        with pytest.raises(ValueError, match="not a stored series result"):
            SeriesResult.from_dict({"series_label": "normal"})
