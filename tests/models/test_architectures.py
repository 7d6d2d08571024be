"""Tests for models.architectures: every architecture builds, runs and exposes its Grad-CAM layer."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from core.preprocessing import PreprocessSpec  # noqa: E402
from models.architectures import (  # noqa: E402
    ARCHITECTURES,
    GRADCAM_LAYERS,
    ArchitectureError,
    augmentation,
    build_model,
    count_params,
)

TINY = {
    "basic_cnn": PreprocessSpec(size=32, channels=1),
    "advanced_cnn": PreprocessSpec(size=32, channels=1),
    "resnet50": PreprocessSpec(size=32, channels=3, scaling="resnet50"),
    "mobilenetv2": PreprocessSpec(size=32, channels=3, scaling="mobilenet_v2"),
}


@pytest.fixture(scope="module")
def tiny_models():
    return {arch: build_model(arch, TINY[arch]) for arch in ARCHITECTURES}


class TestBuildModel:
    @pytest.mark.parametrize("arch", ARCHITECTURES)
    def test_builds_and_outputs_probabilities(self, tiny_models, arch):
        model = tiny_models[arch]
        x = np.random.default_rng(0).uniform(0, 1, (2, *TINY[arch].input_shape)).astype("float32")
        p = np.asarray(model(x, training=False))
        assert p.shape == (2, 3)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert model.input_shape == (None, *TINY[arch].input_shape)

    @pytest.mark.parametrize("arch", ARCHITECTURES)
    def test_gradcam_layer_is_a_spatial_map_in_the_top_level_graph(self, tiny_models, arch):
        layer = tiny_models[arch].get_layer(GRADCAM_LAYERS[arch])  # top level: flat graph
        assert len(layer.output.shape) == 4

    def test_resnet50_is_flat(self, tiny_models):
        names = {layer.name for layer in tiny_models["resnet50"].layers}
        assert {"conv1_conv", "conv5_block3_out", "predictions"} <= names
        assert not any(isinstance(layer, keras.Model) for layer in tiny_models["resnet50"].layers)

    def test_binary_head_has_two_outputs(self):
        model = build_model("basic_cnn", TINY["basic_cnn"], num_classes=2)
        assert model.output_shape == (None, 2)

    def test_hyperparameters_change_the_model(self):
        small = build_model("basic_cnn", TINY["basic_cnn"], filters=8, n_conv=2)
        large = build_model("basic_cnn", TINY["basic_cnn"], filters=16, n_conv=3)
        assert count_params(small) < count_params(large)

    def test_local_weights_file_is_loaded_for_resnet50(self, tmp_path):
        spec = TINY["resnet50"]
        backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=spec.input_shape)
        path = tmp_path / "resnet50_notop.weights.h5"
        backbone.save_weights(path)
        model = build_model("resnet50", spec, weights=path)
        np.testing.assert_array_equal(
            model.get_layer("conv1_conv").get_weights()[0], backbone.get_layer("conv1_conv").get_weights()[0]
        )

    def test_local_weights_file_is_loaded_for_a_cnn(self, tmp_path):
        source = build_model("advanced_cnn", TINY["advanced_cnn"])
        path = tmp_path / "adv.weights.h5"
        source.save_weights(path)
        model = build_model("advanced_cnn", TINY["advanced_cnn"], weights=path)
        for a, b in zip(model.get_weights(), source.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)

    def test_unknown_architecture_raises(self):
        with pytest.raises(ArchitectureError, match="unknown architecture"):
            build_model("vgg16", TINY["basic_cnn"])

    def test_resnet50_refuses_grey_unit_input(self):
        with pytest.raises(ArchitectureError, match="channels=3"):
            build_model("resnet50", PreprocessSpec(size=32, channels=1))

    def test_missing_weights_file_raises(self, tmp_path):
        with pytest.raises(ArchitectureError, match="not found"):
            build_model("basic_cnn", TINY["basic_cnn"], weights=tmp_path / "none.h5")

    def test_imagenet_for_a_cnn_raises(self):
        with pytest.raises(ArchitectureError, match="ImageNet"):
            build_model("basic_cnn", TINY["basic_cnn"], weights="imagenet")

    def test_basic_cnn_head_choice(self):
        flat = build_model("basic_cnn", TINY["basic_cnn"], head="flatten")
        avg = build_model("basic_cnn", TINY["basic_cnn"], head="avg")
        assert "flatten" in {layer.name for layer in flat.layers}
        assert "avg_pool" in {layer.name for layer in avg.layers}
        with pytest.raises(ArchitectureError, match="head"):
            build_model("basic_cnn", TINY["basic_cnn"], head="max")

    def test_batch_norm_momentum_is_set_everywhere(self, tiny_models):
        for arch in ("advanced_cnn", "resnet50"):
            bns = [la for la in tiny_models[arch].layers if isinstance(la, keras.layers.BatchNormalization)]
            assert bns and all(la.momentum == 0.9 for la in bns), arch

    def test_unknown_hyperparameter_raises(self):
        with pytest.raises(ArchitectureError, match="unknown hyperparameters"):
            build_model("basic_cnn", TINY["basic_cnn"], filterz=3)


class TestAugmentation:
    def test_is_identity_at_inference_and_changes_training_batches(self):
        x = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 1)).astype("float32")
        aug = augmentation(seed=3)
        np.testing.assert_array_equal(np.asarray(aug(x, training=False)), x)
        out = np.asarray(aug(x, training=True))
        assert out.shape == x.shape and not np.allclose(out, x)
