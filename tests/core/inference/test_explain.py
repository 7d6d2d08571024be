"""Tests for core.inference.explain: Grad-CAM (flat and nested), colour maps, overlay, PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.inference.explain import COLORMAPS, ExplainError, GradCam, colorize, normalize_cam, overlay, to_png
from tests.factories.registry import TINY_SPEC


@pytest.fixture(scope="module")
def flat_model():
    import keras

    from models.architectures import build_model

    keras.utils.set_random_seed(1)
    return build_model("advanced_cnn", TINY_SPEC, filters=8, n_conv=2)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (3, 64, 64, 1)).astype(np.float32)


class TestGradCam:
    def test_probabilities_match_the_model_and_maps_cover_every_class(self, flat_model, batch):
        probs, cams = GradCam(flat_model, "last_conv")(batch)
        np.testing.assert_allclose(probs, flat_model.predict(batch, verbose=0), atol=1e-6)
        assert cams.shape == (3, 8, 8, 3) and cams.dtype == np.float32
        assert np.isfinite(cams).all() and (cams >= 0).all()

    def test_nested_backbone_gives_the_same_maps_as_the_flat_model(self, flat_model, batch):
        import keras

        backbone = keras.Model(flat_model.inputs, flat_model.get_layer("last_conv").output, name="backbone")
        inp = keras.Input(TINY_SPEC.input_shape)
        x = backbone(inp)
        x = flat_model.get_layer("avg_pool")(x)
        out = flat_model.get_layer("predictions")(x)
        nested = keras.Model(inp, out)
        flat_probs, flat_cams = GradCam(flat_model, "last_conv")(batch)
        probs, cams = GradCam(nested, "last_conv")(batch)
        np.testing.assert_allclose(probs, flat_probs, atol=1e-6)
        np.testing.assert_allclose(cams, flat_cams, rtol=1e-4, atol=1e-6)

    def test_zero_gradient_gives_zero_map_not_nan(self, batch):
        import keras

        inp = keras.Input(TINY_SPEC.input_shape)
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="last_conv")(inp)
        x = keras.layers.GlobalAveragePooling2D()(x)
        out = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros", name="predictions")(x)
        model = keras.Model(inp, out)
        probs, cams = GradCam(model, "last_conv")(batch)
        assert (cams == 0).all()
        heat = normalize_cam(cams[0, :, :, 0])
        assert np.isfinite(heat).all() and (heat == 0).all()
        np.testing.assert_allclose(probs, 1 / 3, atol=1e-6)

    def test_head_is_split_off_so_only_it_is_taped(self, flat_model):
        assert GradCam(flat_model, "last_conv").split

    def test_head_reading_earlier_layers_falls_back_to_taping_everything(self, batch):
        import keras

        inp = keras.Input(TINY_SPEC.input_shape)
        early = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="early")(inp)
        last = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="last_conv")(early)
        pooled = keras.layers.Concatenate()(
            [keras.layers.GlobalAveragePooling2D()(early), keras.layers.GlobalAveragePooling2D()(last)]
        )
        model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="predictions")(pooled))
        cam = GradCam(model, "last_conv")
        probs, cams = cam(batch)
        assert not cam.split
        np.testing.assert_allclose(probs, model.predict(batch, verbose=0), atol=1e-6)
        assert np.isfinite(cams).all() and cams.max() > 0

    def test_missing_layer_is_refused(self, flat_model):
        with pytest.raises(ExplainError, match="not found"):
            GradCam(flat_model, "conv5_block3_out")

    def test_non_spatial_layer_is_refused(self, flat_model):
        with pytest.raises(ExplainError, match="not a"):
            GradCam(flat_model, "avg_pool")


class TestNormalizeCam:
    def test_scales_each_map_to_unit_peak(self):
        cam = np.array([[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.5]]], np.float32)
        out = normalize_cam(cam)
        np.testing.assert_allclose(out[0], [[0, 0.5], [0.25, 1]])
        np.testing.assert_allclose(out[1], [[0, 0], [0, 1]])

    def test_zero_and_nan_maps_become_zeros(self):
        assert (normalize_cam(np.zeros((4, 4))) == 0).all()
        assert (normalize_cam(np.full((4, 4), np.nan)) == 0).all()


class TestColorize:
    def test_jet_runs_from_dark_blue_to_dark_red(self):
        rgb = colorize(np.array([[0.0, 0.5, 1.0]]), "jet")
        assert tuple(rgb[0, 0]) == (0, 0, 128) and tuple(rgb[0, 2]) == (128, 0, 0)
        assert rgb[0, 1, 1] == 255  # green at the middle

    def test_turbo_table_is_256_colours_dark_at_both_ends(self):
        lut = COLORMAPS["turbo"]
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
        assert lut[0].sum() < 200 and lut[-1].sum() < 200 and lut[128].sum() > 400

    def test_unknown_colormap_is_refused(self):
        with pytest.raises(ValueError, match="unknown colormap"):
            colorize(np.zeros((2, 2)), "viridis")


class TestOverlay:
    def test_blend_of_view_and_colour(self):
        view = np.full((4, 5), 100, np.uint8)
        heat = np.ones((4, 5), np.float32)
        out = overlay(view, heat, alpha=0.5)
        assert out.shape == (4, 5, 3) and out.dtype == np.uint8
        assert tuple(out[0, 0]) == (114, 50, 50)  # 0.5 * 100 + 0.5 * (128, 0, 0)
        np.testing.assert_array_equal(overlay(view, heat, alpha=0.0)[..., 0], view)

    def test_shape_mismatch_and_bad_alpha_are_refused(self):
        with pytest.raises(ValueError, match="same"):
            overlay(np.zeros((4, 4), np.uint8), np.zeros((4, 5)))
        with pytest.raises(ValueError, match="alpha"):
            overlay(np.zeros((4, 4), np.uint8), np.zeros((4, 4)), alpha=1.5)


class TestToPng:
    def test_png_round_trip(self):
        rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
        data = to_png(rgb)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)

    def test_every_compression_level_gives_the_same_pixels_and_the_default_is_the_fastest_zlib_level(self):
        from core.inference.explain import PNG_COMPRESS_LEVEL

        y, x = np.mgrid[0:64, 0:64]
        rgb = np.stack([(x * 4) % 256, (y * 4) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
        sizes = {}
        for level in range(10):
            data = to_png(rgb, compress_level=level)
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
            sizes[level] = len(data)
        assert PNG_COMPRESS_LEVEL == 1 and to_png(rgb) == to_png(rgb, compress_level=1)
        assert sizes[0] > sizes[1] >= sizes[9]  # the level reaches zlib: 0 stores, 9 packs tightest

    @pytest.mark.parametrize("level", [-1, 10, 2.5, "6", True])
    def test_a_bad_level_is_refused(self, level):
        with pytest.raises(ValueError, match="compress_level"):
            to_png(np.zeros((2, 2, 3), np.uint8), compress_level=level)


class TestGradCamResNet50:
    @pytest.mark.slow
    def test_resnet50_flat_and_nested_give_the_same_maps_and_folding_keeps_them(self, batch):
        import keras

        from core.inference import fold_batch_norm
        from core.preprocessing import PreprocessSpec
        from models.architectures import build_model

        spec = PreprocessSpec(size=64, channels=3, scaling="resnet50")
        keras.utils.set_random_seed(3)
        flat = build_model("resnet50", spec)
        x = np.repeat(batch[:2] * 255.0 - 110.0, 3, axis=-1)
        probs, cams = GradCam(flat, "conv5_block3_out")(x)
        assert cams.shape == (2, 2, 2, 3) and np.isfinite(cams).all()
        np.testing.assert_allclose(probs, flat.predict(x, verbose=0), atol=1e-5)
        folded, n = fold_batch_norm(flat)
        assert n == 53
        probs_f, cams_f = GradCam(folded, "conv5_block3_out")(x)
        np.testing.assert_allclose(probs_f, probs, atol=1e-5)
        np.testing.assert_allclose(cams_f, cams, rtol=1e-3, atol=1e-5 * float(cams.max()))
        backbone = keras.Model(
            flat.inputs, flat.get_layer("conv5_block3_out").output, name="resnet50_backbone"
        )
        inp = keras.Input(spec.input_shape)
        out = flat.get_layer("predictions")(flat.get_layer("avg_pool")(backbone(inp)))
        probs_n, cams_n = GradCam(keras.Model(inp, out), "conv5_block3_out")(x)
        np.testing.assert_allclose(probs_n, probs, atol=1e-6)
        np.testing.assert_allclose(cams_n, cams, rtol=1e-4, atol=1e-6 * float(cams.max()))
