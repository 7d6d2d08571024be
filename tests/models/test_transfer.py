"""MobileNetV2 transfer backbone and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from core.preprocessing import PreprocessSpec
from core.registry import file_sha256
from models.architectures.mobilenetv2 import build_mobilenetv2
from models.transfer import (
    WEIGHTS_FILE,
    default_weights,
)

SPEC = PreprocessSpec(size=64, channels=3, scaling="mobilenet_v2")


def _backbone_conv(model):
    return model.get_layer("Conv1").get_weights()[0]


def test_backbone_loads_from_a_weights_file_the_test_writes(tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    src = keras.applications.MobileNetV2(alpha=1.0, include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "backbone.weights.h5"
    src.save_weights(str(path))
    model = build_mobilenetv2(SPEC, num_classes=3, weights=path)
    np.testing.assert_array_equal(_backbone_conv(model), src.get_layer("Conv1").get_weights()[0])
    assert model.output_shape == (None, 3)
    assert model.get_layer("out_relu") is not None
    p = model.predict(np.zeros((2, 64, 64, 3), np.float32), verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.skipif(not default_weights().is_file(), reason="shared MobileNetV2 weights not present")
def test_backbone_loads_the_shared_file():
    path = default_weights()
    assert path.name == WEIGHTS_FILE
    assert file_sha256(path) == "b5c304ecf01494f614fd05d36a075cb14f45d054af9af5ef17092bbf870e8e2f"
    model = build_mobilenetv2(PreprocessSpec(size=160, channels=3, scaling="mobilenet_v2"), weights=path)
    random = build_mobilenetv2(PreprocessSpec(size=160, channels=3, scaling="mobilenet_v2"), weights=None)
    assert not np.allclose(_backbone_conv(model), _backbone_conv(random))


def test_wrong_spec_or_missing_file_refused(tmp_path):
    with pytest.raises(ValueError, match="channels=3"):
        build_mobilenetv2(PreprocessSpec(size=64))
    with pytest.raises(ValueError, match="not found"):
        build_mobilenetv2(SPEC, weights=tmp_path / "nope.h5")


def test_everything_under_models_stays_within_150_mib():
    from core.settings import REPO_ROOT

    total = sum(
        f.stat().st_size
        for f in (REPO_ROOT / "models").rglob("*")
        if f.is_file() and "__pycache__" not in f.parts
    )
    assert total <= 150 * 2**20, f"models/ holds {total / 2**20:.1f} MiB"


def test_shipped_transfer_cards_record_weights_and_temperature():
    from core.registry import get_card

    for mid in ("mobilenetv2_lungs_v1", "mobilenetv2_body_v1"):
        card = get_card(mid)
        sw = card.training["starting_weights"]
        assert sw["sha256"] == "b5c304ecf01494f614fd05d36a075cb14f45d054af9af5ef17092bbf870e8e2f"
        assert "Stanford Dogs" in sw["provenance"]
        assert card.training["calibration"]["temperature"] > 0
        assert card.preprocessing.crop_to_lungs == (mid == "mobilenetv2_lungs_v1")
