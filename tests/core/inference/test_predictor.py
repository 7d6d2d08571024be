"""Tests for core.inference: Predictor.predict, analyse_series, explain, and the series rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from core.domain import CLASS_NAMES, WINDOW_PRESETS, WindowPreset
from core.imaging import read_paths
from core.inference import OOD_LABEL, InferenceError, Predictor, fold_batch_norm, top_k
from core.inference.decision import decide
from core.preprocessing import preprocess
from tests.factories.registry import TINY_SPEC, make_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    return make_registry(tmp_path_factory.mktemp("inference"))


@pytest.fixture(scope="module")
def predictor(registry) -> Predictor:
    from core.registry import load_model

    return Predictor(load_model("tiny_adv", registry))


@pytest.fixture(scope="module")
def tcia_series(tcia_dir):
    return read_paths([tcia_dir]).series[0]


class TestPredict:
    def test_probabilities_equal_model_predict(self, predictor, tcia_series):
        x = preprocess([s.hu for s in tcia_series.slices], predictor.spec)
        ours = predictor.predict(x)
        keras_out = predictor.model.predict(x, verbose=0)
        assert ours.shape == (len(tcia_series.slices), 3) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, keras_out, atol=1e-5)
        np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-5)

    def test_wrong_input_shape_is_refused(self, predictor):
        with pytest.raises(InferenceError, match="expects input shaped"):
            predictor.predict(np.zeros((2, 32, 32, 1), np.float32))

    def test_empty_batch_gives_empty_probabilities(self, predictor):
        assert predictor.predict(np.zeros((0, 64, 64, 1), np.float32)).shape == (0, 3)

    def test_labels_follow_card_thresholds(self, tmp_path, tcia_series):
        from core.registry import load_model

        reg = make_registry(tmp_path, thresholds={"malignant": 0.0})
        pred = Predictor(load_model("tiny_adv", reg))
        result = pred.analyse_series(tcia_series)
        assert set(result.labels) == {"malignant"}
        assert result.series_label == "malignant"


class TestAnalyseSeries:
    def test_tcia_series_gives_slice_and_series_results(self, predictor, tcia_series):
        result = predictor.analyse_series(tcia_series)
        n = len(tcia_series.slices)
        x = preprocess([s.hu for s in tcia_series.slices], predictor.spec)
        np.testing.assert_allclose(result.probabilities, predictor.model.predict(x, verbose=0), atol=1e-5)
        assert result.labels == [CLASS_NAMES[i] for i in decide(result.probabilities, CLASS_NAMES)]
        assert not result.ood.any() and result.ood_reasons == [""] * n
        malignant = result.probabilities[:, 2]
        assert result.most_suspicious_index == int(np.argmax(malignant))
        assert result.series_score == pytest.approx(float(malignant.max()))  # 30 slices: k = 1
        assert result.model_id == "tiny_adv" and result.model_sha256 == predictor.card.sha256
        assert len(result.geometries) == n and result.latency_ms > 0
        assert json.loads(json.dumps(result.to_dict()))["series_label"] in CLASS_NAMES

    def test_window_override_changes_the_model_input(self, predictor, tcia_series):
        default = predictor.analyse_series(tcia_series)
        lung = predictor.analyse_series(tcia_series, window=WINDOW_PRESETS[WindowPreset.LUNG])
        assert lung.window == (-600.0, 1500.0) and default.window == (0.0, 260.0)
        assert not np.allclose(default.probabilities, lung.probabilities)

    def test_progress_reports_every_batch(self, predictor, tcia_series):
        calls = []
        predictor.analyse_series(tcia_series, progress=lambda done, total: calls.append((done, total)))
        assert calls[-1] == (30, 30) and len(calls) == -(-30 // predictor.batch)
        assert [c[0] for c in calls] == sorted(c[0] for c in calls)

    def test_mr_series_is_labelled_out_of_distribution(self, predictor):
        mr = read_paths([pydicom.data.get_testdata_file("MR_small.dcm")]).series[0]
        result = predictor.analyse_series(mr)
        assert result.series_label == OOD_LABEL and result.is_ood
        assert result.ood.all() and "modality MR is not CT" in result.ood_reasons[0]
        assert result.probabilities.shape == (1, 3)  # still scored, but marked

    def test_ood_slices_are_left_out_of_the_series_score(self, predictor):
        p = np.array([[0.1, 0.1, 0.8], [0.6, 0.3, 0.1], [0.5, 0.2, 0.3]], np.float32)
        ood = np.array([True, False, False])
        res = predictor._aggregate(p, ood, [["blank"], [], []], [], TINY_SPEC.window, 0.0)
        assert res.most_suspicious_index == 2 and res.series_score == pytest.approx(0.3)
        assert res.series_label == "normal" and res.ood_reasons == ["blank", "", ""]

    def test_mostly_ood_series_gets_ood_label(self, predictor):
        p = np.array([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3]], np.float32)
        res = predictor._aggregate(
            p, np.array([True, True, False]), [["x"], ["x"], []], [], TINY_SPEC.window, 0.0
        )
        assert res.series_label == OOD_LABEL

    def test_empty_series_is_refused(self, predictor, tcia_series):
        from dataclasses import replace

        with pytest.raises(InferenceError, match="no slices"):
            predictor.analyse_series(replace(tcia_series, slices=[]))


class TestFoldBatchNorm:
    def test_folded_copy_gives_the_same_outputs_and_leaves_the_model_alone(self):
        import keras

        from models.architectures import build_model

        model = build_model("advanced_cnn", TINY_SPEC, filters=8, n_conv=2)
        rng = np.random.default_rng(0)
        for layer in model.layers:  # non-trivial statistics, as after training
            if isinstance(layer, keras.layers.BatchNormalization):
                g, b, m, v = layer.get_weights()
                layer.set_weights(
                    [
                        rng.uniform(0.5, 1.5, g.shape),
                        rng.normal(0, 0.2, b.shape),
                        rng.normal(0, 0.2, m.shape),
                        rng.uniform(0.5, 2.0, v.shape),
                    ]
                )
        n_bn = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
        folded, n = fold_batch_norm(model)
        assert n == 3  # stem_conv and the two shortcut convolutions; separable convs are kept
        assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers) == n_bn - 3
        assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == n_bn
        x = rng.uniform(0, 1, (4, *TINY_SPEC.input_shape)).astype(np.float32)
        np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
        assert folded.get_layer("last_conv") is not model.get_layer("last_conv")

    def test_model_without_batch_norm_is_returned_as_is(self):
        from models.architectures import build_model

        model = build_model("basic_cnn", TINY_SPEC, filters=4, n_conv=2, dense_units=8)
        assert fold_batch_norm(model) == (model, 0)

    def test_predictor_runs_the_folded_copy(self, predictor):
        assert predictor.folded_layers == 3 and predictor.fast_model is not predictor.model


class TestTopK:
    @pytest.mark.parametrize(("n", "k"), [(1, 1), (30, 1), (149, 1), (151, 2), (300, 3), (1000, 10)])
    def test_one_slice_per_hundred(self, n, k):
        assert top_k(n) == k


class TestExplain:
    def test_heatmap_is_finite_unit_range_at_slice_size(self, predictor, tcia_series):
        ex = predictor.explain(tcia_series, 12)
        assert ex.heatmap.shape == tcia_series.slices[12].shape and ex.heatmap.dtype == np.float32
        assert np.isfinite(ex.heatmap).all() and ex.heatmap.min() >= 0.0 and ex.heatmap.max() <= 1.0
        assert ex.heatmap.max() > 0.5

    def test_probabilities_come_with_the_heatmap(self, predictor, tcia_series):
        ex = predictor.explain(tcia_series, 12)
        x = preprocess(tcia_series.slices[12].hu, predictor.spec)
        np.testing.assert_allclose(ex.probabilities, predictor.predict(x)[0], atol=1e-5)
        assert ex.class_name == ex.label == CLASS_NAMES[int(np.argmax(ex.probabilities))]

    def test_heatmaps_differ_between_classes(self, predictor, tcia_series):
        maps = [predictor.explain(tcia_series, 12, class_name=c).heatmap for c in CLASS_NAMES]
        assert not np.allclose(maps[0], maps[2]) and not np.allclose(maps[1], maps[2])

    def test_basic_cnn_with_flatten_head_is_explained(self, registry, tcia_series):
        from core.registry import load_model

        ex = Predictor(load_model("tiny_basic", registry)).explain(tcia_series, 5, "malignant")
        assert ex.heatmap.shape == (512, 512) and np.isfinite(ex.heatmap).all()

    def test_unknown_class_and_index_are_refused(self, predictor, tcia_series):
        with pytest.raises(InferenceError, match="unknown class"):
            predictor.explain(tcia_series, 0, class_name="cancerous")
        with pytest.raises(InferenceError, match="does not exist"):
            predictor.explain(tcia_series, 30)
