"""The Keras 1 -> Keras 3 port of the LUNA16 nodule network: checks that fail on a wrong port."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy import ndimage

from core.nodules.volume import LUNA16_SPEC, cube_batch, network_input
from core.registry import file_sha256, get_card, load_model, verify
from core.settings import get_settings
from models import port_nodule3d as port

SOURCE = get_settings().weights_dir / port.SOURCE_FILE
needs_source = pytest.mark.skipif(not SOURCE.is_file(), reason="shared LUNA16 weights not present")


def _conv_layers(kernel: np.ndarray, bias: np.ndarray) -> tuple[list[port.Keras1Layer], list[str], list[str]]:
    """A Keras 1 graph with one Theano 'same' Convolution3D (as read_keras1 returns it)."""
    out_ch, in_ch = kernel.shape[:2]
    inp = port.Keras1Layer("InputLayer", "in", {"batch_input_shape": [None, in_ch, 8, 8, 8]}, (), ())
    conv = port.Keras1Layer(
        "Convolution3D", "c",
        {"nb_filter": out_ch, "kernel_dim1": 3, "kernel_dim2": 3, "kernel_dim3": 3, "border_mode": "same",
         "subsample": [1, 1, 1], "activation": "linear", "bias": True, "dim_ordering": "th"},
        ("in",), (kernel, bias),
    )
    return [inp, conv], ["in"], ["c"]


class TestKernelFlip:
    """Theano convolves, TensorFlow cross-correlates: the port must reverse the spatial axes."""

    def test_ported_layer_equals_a_direct_convolution_and_the_unflipped_one_does_not(self):
        rng = np.random.default_rng(5)
        kernel = rng.normal(size=(2, 2, 3, 3, 3)).astype(np.float32)  # asymmetric in every axis
        bias = np.array([0.5, -0.25], dtype=np.float32)
        x = rng.random((1, 8, 8, 8, 2)).astype(np.float32)  # channels last
        # what Theano computed: a true 3-D convolution with zero padding, summed over input channels
        ref = np.stack(
            [sum(ndimage.convolve(x[0, ..., i], kernel[o, i], mode="constant", cval=0.0) for i in range(2)) + bias[o]
             for o in range(2)],
            axis=-1,
        )
        ok = port.build_keras3(*_conv_layers(kernel, bias), flip=True).predict(x, verbose=0)[0]
        bad = port.build_keras3(*_conv_layers(kernel, bias), flip=False).predict(x, verbose=0)[0]
        np.testing.assert_allclose(ok, ref, atol=1e-5)
        assert np.abs(bad - ref).max() > 0.1

    def test_kernel_layout(self):
        k = np.arange(2 * 3 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3, 3)
        out = port.theano_kernel_to_keras(k)
        assert out.shape == (3, 3, 3, 3, 2)
        assert out[0, 1, 2, 1, 0] == k[0, 1, 2, 1, 0]  # (out, in, d, h, w) -> (2-d, 2-h, 2-w, in, out)
        np.testing.assert_array_equal(port.theano_kernel_to_keras(k, flip=False)[0, 1, 2, 1, 0], k[0, 1, 0, 1, 2])
        with pytest.raises(ValueError, match="5-D"):
            port.theano_kernel_to_keras(k[0])


class TestReadKeras1:
    def test_refuses_what_is_not_a_keras1_model(self, tmp_path):
        junk = tmp_path / "junk.h5"
        junk.write_bytes(b"not hdf5")
        with pytest.raises(port.PortError, match="HDF5"):
            port.read_keras1(junk)
        weights_only = tmp_path / "w.h5"
        with h5py.File(weights_only, "w") as h5:
            h5.attrs["keras_version"] = b"1.2.0"
        with pytest.raises(port.PortError, match="model_config"):
            port.read_keras1(weights_only)
        keras2 = tmp_path / "k2.h5"
        with h5py.File(keras2, "w") as h5:
            h5.attrs["keras_version"] = b"2.4.0"
            h5.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {}})
        with pytest.raises(port.PortError, match="Keras 2.4.0"):
            port.read_keras1(keras2)


@pytest.fixture(scope="module")
def ported():
    return port.port(SOURCE)


@pytest.fixture(scope="module")
def registered():
    return load_model(port.MODEL_ID)


@needs_source
class TestPortedNetwork:
    def test_weight_count_and_the_registry_entry_is_this_port(self, ported, registered):
        assert ported.count_params() == port.N_WEIGHTS == 331_559
        assert registered.model.count_params() == port.N_WEIGHTS
        for a, b in zip(ported.get_weights(), registered.model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)

    def test_named_layers(self, registered):
        names = {la.name for la in registered.model.layers}
        assert {"conv1", "conv5_act", "pool4_concat", "global_max", *port.OUTPUTS} <= names
        assert registered.model.output_names == list(port.OUTPUTS)

    def test_all_air_gives_no_diameter_and_the_tissue_class(self, registered):
        air = network_input(np.full((1, 64, 64, 64), -1000.0))
        d, _lob, _spic, _mal, fp = registered.model.predict(air, verbose=0)
        assert abs(float(d[0, 0])) < 0.5
        assert int(np.argmax(fp[0])) == port.FP_CLASSES.index("tissue") and fp[0, 2] > 0.9

    def test_lidc_0001_nodule_scores_high_and_40_mm_away_low(self, registered, datasets_dir):
        from core.imaging import read_series
        from core.nodules.volume import geometry_of, resample
        from models.evaluation.froc import lidc_reference

        xml = next(datasets_dir.glob("lidc-idri/LIDC-IDRI-0001/*/*/*.xml"))
        series = read_series(xml.parent)
        g = geometry_of(series)
        lesion = lidc_reference(series, xml, "0001")[0]
        iso, _ = resample([s.hu for s in series.slices], g)
        z, y, x = lesion.centre_voxel
        c = np.rint([g.z_mm(z), y * g.pixel_mm[0], x * g.pixel_mm[1]]).astype(int)
        offsets = [np.array(v) * 40 for v in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))]
        cubes = cube_batch(iso, [c] + [c + o for o in offsets], LUNA16_SPEC)
        p = registered.model.predict(cubes, verbose=0)[4][:, 0]
        assert p[0] > 0.95
        # the network says "a nodule somewhere in the cube": 40 mm away the ~30 mm nodule still
        # touches some cubes, so most (not all) of the six neighbours are low
        assert np.sort(p[1:])[3] < 0.2, p


@needs_source
def test_card_states_kind_spec_provenance_and_training_data():
    card = get_card(port.MODEL_ID)
    verify(card)  # the model file matches the card's sha256
    assert card.kind == "nodule_detector" and card.preprocessing is None
    assert card.volume_preprocessing == LUNA16_SPEC.to_dict()
    t = card.training
    assert t["source_sha256"] == port.SOURCE_SHA256 == file_sha256(SOURCE)
    assert "LIDC-IDRI-0001" in t["shared_studies_in_training"] and "CC BY 3.0" in t["dataset"]
    assert "MIT" in t["licence"] and not t["source_file"].startswith("/")
    assert t["parameters"] == port.N_WEIGHTS


def test_main_refuses_a_missing_source(tmp_path, capsys):
    assert port.main(["--source", str(tmp_path / "none.h5"), "--registry", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
