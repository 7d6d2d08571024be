"""Tests for core.bench: one quick run on a tiny model gives every measurement and the target checks."""

from __future__ import annotations

import json

import pytest

from core import bench
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
