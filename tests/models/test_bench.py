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
    assert out["meets_floors"]["predict_p50"] == (single["predict"]["p50_ms"] <= 30.0)
    assert out["meets_floors"]["series_throughput"] == (series["slices_per_s_median"] >= 35.0)
    assert out["floors"] == bench.FLOORS and set(out["meets_floors"]) == {
        "predict_p50", "naive_ratio", "gradcam_ratio", "series_throughput"
    }
    json.dumps(out)  # JSON-able


def test_cli_reports_a_missing_model_without_traceback(isolated_settings, capsys):
    assert bench.main(["--model", "no_such_model", "--json"]) == 2
    err = capsys.readouterr().err
    assert "no_such_model" in err and "Traceback" not in err


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


def test_default_model_has_its_own_floors_and_each_is_checked():
    floors = bench.floors_for("basic_cnn_v1")
    assert floors == {
        "decode_p50_ms_max": 2.0,
        "preprocess_p50_ms_max": 2.0,
        "gradcam_over_predict_max": 3.0,
        "series_slices_per_s_min": 100.0,
    }
    assert bench.floors_for("resnet50_v1") == bench.FLOORS == bench.floors_for("tiny_basic")
    ok = bench.meets(floors, _result(1.5, 1.9, 4.0, 11.9, 100.0, 120.0))
    assert ok == {"decode_p50": True, "preprocess_p50": True, "gradcam_ratio": True, "series_throughput": True}
    bad = bench.meets(floors, _result(2.1, 2.0, 4.0, 12.4, 100.0, 99.9))
    # a limit itself is met (<= max, >= min); each floor is judged on its own measurement
    assert bad == {"decode_p50": False, "preprocess_p50": True, "gradcam_ratio": False, "series_throughput": False}


def test_resnet_floors_are_checked_on_their_measurements():
    ok = bench.meets(bench.FLOORS, _result(9.0, 9.0, 30.0, 90.0, 120.0, 35.0))
    assert ok == {"predict_p50": True, "naive_ratio": True, "gradcam_ratio": True, "series_throughput": True}
    bad = bench.meets(bench.FLOORS, _result(1.0, 1.0, 30.5, 92.0, 120.0, 34.9))
    assert bad == {"predict_p50": False, "naive_ratio": False, "gradcam_ratio": False, "series_throughput": False}
