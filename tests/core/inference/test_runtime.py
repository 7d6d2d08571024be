"""Tests for core.inference.runtime and the Predictor's choice of runtime (OpenVINO or TensorFlow)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.inference import InferenceError, Predictor
from core.inference.runtime import AGREEMENT_ATOL, RuntimeUnavailable, openvino_runner
from core.preprocessing import preprocess
from tests.factories.registry import make_registry

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return make_registry(tmp_path_factory.mktemp("runtime"))


@pytest.fixture()
def var_dir(isolated_settings):
    return isolated_settings.var_dir


def _load(registry, model_id="tiny_adv"):
    from core.registry import load_model

    return load_model(model_id, registry)


class TestOpenVinoPredictor:
    @pytest.mark.parametrize("model_id", ["tiny_adv", "tiny_basic"])
    def test_probabilities_match_keras_within_tolerance(self, registry, var_dir, tcia_dir, model_id):
        from core.imaging import read_paths

        pred = Predictor(_load(registry, model_id), runtime="openvino")
        assert pred.runtime == "openvino" and "OpenVINO" in pred.runtime_note
        series = read_paths([tcia_dir]).series[0]
        x = preprocess([s.hu for s in series.slices], pred.spec)
        ours = pred.predict(x)
        keras_out = pred.model.predict(x, verbose=0)
        assert ours.shape == keras_out.shape == (30, 3) and ours.dtype == np.float32
        assert np.abs(ours - keras_out).max() <= AGREEMENT_ATOL
        result = pred.analyse_series(series)
        assert np.abs(result.probabilities - keras_out).max() <= AGREEMENT_ATOL

    def test_compiled_in_float32_not_the_bfloat16_default(self, registry, var_dir):
        pred = Predictor(_load(registry), runtime="openvino")
        hint = pred._run._compiled.get_property("INFERENCE_PRECISION_HINT")
        assert "f32" in str(hint).lower() or "float32" in str(hint).lower()

    def test_gradcam_still_runs_on_the_keras_model(self, registry, var_dir, tcia_dir):
        from core.imaging import read_paths

        pred = Predictor(_load(registry), runtime="openvino")
        series = read_paths([tcia_dir]).series[0]
        pred._run = lambda x: np.full((len(x), 3), 1 / 3, np.float32)  # a runtime that is plainly wrong
        ex = pred.explain(series, 3)
        x = preprocess(series.slices[3].hu, pred.spec)
        keras_row = pred.model.predict(x, verbose=0)[0]
        assert np.abs(ex.probabilities - keras_row).max() <= AGREEMENT_ATOL
        assert np.abs(keras_row - 1 / 3).max() > 1e-3  # so the check above could fail

    def test_ir_is_cached_and_a_damaged_cache_is_rebuilt(self, registry, var_dir):
        first = Predictor(_load(registry), runtime="openvino")
        files = sorted((var_dir / "openvino").glob("tiny_adv-*.xml"))
        assert len(files) == 1 and files[0].with_suffix(".bin").stat().st_size > 0
        assert first._run.cached is False
        second = Predictor(_load(registry), runtime="openvino")
        assert second._run.cached is True
        # weights replaced by zeros of the same size: loads, but disagrees with Keras -> rebuilt
        binary = files[0].with_suffix(".bin")
        binary.write_bytes(b"\0" * binary.stat().st_size)
        third = Predictor(_load(registry), runtime="openvino")
        assert third.runtime == "openvino" and third._run.cached is False
        assert third._run.max_abs_diff <= AGREEMENT_ATOL
        assert np.count_nonzero(np.frombuffer(binary.read_bytes(), np.uint8)) > 0

    def test_new_weights_replace_the_cached_ir_of_the_same_model(self, registry, var_dir):
        Predictor(_load(registry), runtime="openvino")
        cache = var_dir / "openvino"
        (cache / "tiny_adv-0000000000000000-bn3-openvino-2026.1.0.xml").write_text("<old/>")
        (cache / "tiny_adv-0000000000000000-bn3-openvino-2026.1.0.bin").write_bytes(b"old")
        (cache / "tiny_basic-1111111111111111-bn0-openvino-2026.1.0.xml").write_text("<other model/>")
        for f in cache.glob("tiny_adv-*"):
            if "0000000000000000" not in f.name:
                f.unlink()  # force a fresh export
        Predictor(_load(registry), runtime="openvino")
        names = sorted(f.name for f in cache.iterdir())
        assert not any("0000000000000000" in n for n in names)
        assert "tiny_basic-1111111111111111-bn0-openvino-2026.1.0.xml" in names
        assert sum(n.startswith("tiny_adv-") for n in names) == 2  # the new .xml and .bin

    def test_concurrent_callers_get_their_own_results(self, registry, var_dir):
        pred = Predictor(_load(registry), runtime="openvino")
        rng = np.random.default_rng(1)
        batches = [rng.uniform(0, 1, (3, 64, 64, 1)).astype(np.float32) for _ in range(8)]
        expected = [pred.model.predict(b, verbose=0) for b in batches]
        got: dict[int, np.ndarray] = {}

        def work(i: int) -> None:
            for _ in range(5):
                got[i] = pred.predict(batches[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(8):
            assert np.abs(got[i] - expected[i]).max() <= AGREEMENT_ATOL


class TestChoiceOfRuntime:
    def test_tensorflow_can_be_forced(self, registry, var_dir):
        pred = Predictor(_load(registry), runtime="tensorflow")
        assert pred.runtime == "tensorflow" and not (var_dir / "openvino").exists()
        x = pred.probe_batch(3)
        np.testing.assert_allclose(pred.predict(x), pred.model.predict(x, verbose=0), atol=1e-5)

    def test_setting_picks_the_runtime(self, registry, isolated_settings, monkeypatch):
        from core import settings as config

        monkeypatch.setenv("LUNGREVIEW_RUNTIME", "tensorflow")
        config.get_settings.cache_clear()
        assert Predictor(_load(registry)).runtime == "tensorflow"
        monkeypatch.setenv("LUNGREVIEW_RUNTIME", "auto")
        config.get_settings.cache_clear()
        assert Predictor(_load(registry)).runtime == "openvino"

    def test_unknown_runtime_is_refused(self, registry, var_dir, monkeypatch):
        with pytest.raises(InferenceError, match="unknown runtime"):
            Predictor(_load(registry), runtime="tensorrt")
        monkeypatch.setenv("LUNGREVIEW_RUNTIME", "onnx")
        from core.settings import load_settings

        with pytest.raises(ValueError, match="LUNGREVIEW_RUNTIME must be one of"):
            load_settings()

    def test_disagreeing_runtime_falls_back_to_tensorflow_on_auto(self, registry, var_dir, monkeypatch):
        import core.inference.runtime

        def refuse(*args, **kwargs):
            raise RuntimeUnavailable("OpenVINO cannot run this model: outputs differ from Keras by 3.00e-02")

        monkeypatch.setattr(core.inference.runtime, "openvino_runner", refuse)
        pred = Predictor(_load(registry), runtime="auto")
        assert pred.runtime == "tensorflow" and "outputs differ" in pred.runtime_note
        with pytest.raises(InferenceError, match="LUNGREVIEW_RUNTIME=tensorflow"):
            Predictor(_load(registry), runtime="openvino")

    def test_runner_refuses_outputs_beyond_the_tolerance(self, registry):
        loaded = _load(registry)
        probe = np.random.default_rng(2).uniform(0, 1, (2, 64, 64, 1)).astype(np.float32)

        def shifted(x):
            return np.asarray(loaded.model(x, training=False)) + 1e-3

        with pytest.raises(RuntimeUnavailable, match="outputs differ from Keras"):
            openvino_runner(loaded.model, shifted, probe, cache_dir=None, key="t")
        runner = openvino_runner(
            loaded.model, lambda x: np.asarray(loaded.model(x, training=False)), probe, cache_dir=None, key="t"
        )
        assert 0.0 <= runner.max_abs_diff <= AGREEMENT_ATOL


def test_a_cache_that_cannot_be_written_does_not_stop_openvino(registry, tmp_path, caplog):
    loaded = _load(registry)
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the cache folder should be")
    probe = np.random.default_rng(3).uniform(0, 1, (2, 64, 64, 1)).astype(np.float32)
    with caplog.at_level("WARNING", logger="lungreview.runtime"):
        runner = openvino_runner(
            loaded.model, lambda x: np.asarray(loaded.model(x, training=False)), probe, cache_dir=blocked, key="k"
        )
    assert runner.max_abs_diff <= AGREEMENT_ATOL and runner.cached is False
    assert "not cached" in caplog.text and blocked.is_file()
