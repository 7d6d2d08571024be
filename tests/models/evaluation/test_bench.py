"""Tests for models.evaluation.bench: one quick run on a tiny model gives every measurement and the target checks."""

from __future__ import annotations

import json

import pytest

from models.evaluation import bench
from tests.factories.registry import make_registry


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from core.registry import load_model

    return load_model("tiny_basic", make_registry(tmp_path_factory.mktemp("bench")))


@pytest.mark.parametrize("runtime", ["tensorflow", "openvino"])
def test_run_reports_latencies_throughput_and_ratios(tiny, tcia_dir, isolated_settings, runtime):
    if runtime == "openvino":
        pytest.importorskip("openvino")
    out = bench.run(tiny, tcia_dir, repeats=3, series_repeats=1, naive_repeats=2, runtime=runtime)
    assert out["runtime"] == runtime and out["model_id"] == "tiny_basic"
    single = out["single_slice"]
    assert set(single) == {"decode", "preprocess", "predict", "predict_gradcam", "naive_predict"}
    for timing in single.values():
        assert 0 < timing["p50_ms"] <= timing["p95_ms"] and timing["n"] >= 2
    series = out["series"]
    assert series["slices"] == 60 and series["slices_per_s_median"] > 0
    assert series["model_only_slices_per_s_median"] > 0
    ratio = single["naive_predict"]["p50_ms"] / single["predict"]["p50_ms"]
    assert out["ratios"]["naive_over_predict"] == pytest.approx(ratio, abs=0.01)
    floors = bench.FLOORS
    assert out["meets_floors"]["predict_p50"] == (single["predict"]["p50_ms"] <= floors["predict_p50_ms_max"])
    assert out["meets_floors"]["series_throughput"] == (series["slices_per_s_median"] >= floors["series_slices_per_s_min"])
    assert out["floors"] == bench.FLOORS and set(out["meets_floors"]) == {
        "predict_p50", "naive_ratio", "gradcam_ratio", "series_throughput"
    }
    json.dumps(out)  # JSON-able


@pytest.mark.slow
def test_untrained_resnet50_is_built_without_the_training_package():
    loaded = bench.untrained_resnet50()
    model, card = loaded.model, loaded.card
    assert model.input_shape[1:] == card.preprocessing.input_shape == (224, 224, 3)
    assert model.output_shape == (None, 3) and model.layers[-1].name == "predictions"
    assert len(model.get_layer(card.gradcam_layer).output.shape) == 4


def _result(decode, preprocess, predict, gradcam, naive, series):
    return {
        "single_slice": {
            "decode": {"p50_ms": decode},
            "preprocess": {"p50_ms": preprocess},
            "predict": {"p50_ms": predict},
        },
        "ratios": {"naive_over_predict": naive / predict, "gradcam_over_predict": gradcam / predict},
        "series": {"slices_per_s_median": series},
    }


def _measured(floors: dict, past: set[str] = frozenset()) -> dict:
    """Measurements exactly at every floor's limit, except those in ``past`` (1 % beyond it)."""
    def at(key: str, default: float) -> float:
        if key not in floors:
            return default
        worse = 1.01 if key.endswith("_max") else 0.99
        return floors[key] * (worse if key in past else 1.0)

    predict = at("predict_p50_ms_max", 4.0)
    return _result(at("decode_p50_ms_max", 1.0), at("preprocess_p50_ms_max", 1.0), predict,
                   at("gradcam_over_predict_max", 2.0) * predict, at("naive_over_predict_min", 5.0) * predict,
                   at("series_slices_per_s_min", 50.0))


@pytest.mark.parametrize("model_id", ["basic_cnn_v1", "resnet50_v1"])
def test_a_floor_is_met_at_its_limit_and_each_is_judged_on_its_own_measurement(model_id):
    floors = bench.floors_for(model_id)
    assert all(bench.meets(floors, _measured(floors)).values())
    for key in floors:
        verdict = bench.meets(floors, _measured(floors, past={key}))
        assert sum(not ok for ok in verdict.values()) == 1, (key, verdict)


def test_the_default_model_has_its_own_floors():
    assert bench.floors_for("basic_cnn_v1") == bench.DEFAULT_MODEL_FLOORS != bench.FLOORS
    assert bench.floors_for("resnet50_v1") == bench.FLOORS == bench.floors_for("tiny_basic")
