"""Tests for core.registry: cards, sha256 integrity, float16 storage, and the SHIPPED entries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import registry
from core.preprocessing import PreprocessSpec
from core.registry import (
    ModelCard,
    ModelIntegrityError,
    ModelNotFoundError,
    RegistryError,
    default_model_id,
    get_card,
    list_cards,
    load_model,
)
from tests.factories.registry import register, tiny_card

keras = pytest.importorskip("keras")


SPEC32 = PreprocessSpec(size=32, channels=1)


def _card(model_id: str = "tiny_v1", arch: str = "basic_cnn") -> ModelCard:
    return tiny_card(
        model_id,
        arch,
        SPEC32,
        thresholds={"malignant": 0.4},
        training={"epochs": 0},
        intended_use="tests",
        limitations=["tiny"],
    )


@pytest.fixture()
def tiny_registry(tmp_path):
    from models.architectures import build_model

    model = build_model("basic_cnn", SPEC32, filters=4, n_conv=2, dense_units=8)
    reg = tmp_path / "registry"
    card = register(reg, _card(), model, history={"loss": [1.0]})
    registry.set_default_model(card.id, reg)
    return reg, card, model


class TestModelCard:
    def test_round_trips_through_json(self):
        card = _card()
        back = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
        assert back == card

    def test_missing_field_raises_registry_error(self):
        data = _card().to_dict()
        del data["preprocessing"]
        with pytest.raises(RegistryError, match="incomplete"):
            ModelCard.from_dict(data)

    def test_unknown_task_raises(self):
        data = _card().to_dict() | {"task": "5class"}
        with pytest.raises(RegistryError, match="task"):
            ModelCard.from_dict(data)


class TestWriteEntryAndLoad:
    def test_entry_has_card_with_sha256_and_size(self, tiny_registry):
        reg, card, _ = tiny_registry
        folder = reg / card.id
        assert (folder / "model.keras").is_file() and (folder / "history.json").is_file()
        assert card.sha256 == registry.file_sha256(folder / "model.keras")
        assert card.size_bytes == (folder / "model.keras").stat().st_size
        assert get_card(card.id, reg) == card

    def test_default_and_list(self, tiny_registry):
        reg, card, _ = tiny_registry
        assert default_model_id(reg) == card.id
        assert [c.id for c in list_cards(reg)] == [card.id]
        assert registry.read_history(card.id, reg) == {"loss": [1.0]}
        assert registry.read_evaluation(card.id, reg) is None

    def test_load_predicts_like_the_saved_model(self, tiny_registry):
        reg, card, model = tiny_registry
        loaded = load_model(None, reg)
        assert loaded.card.id == card.id and loaded.spec == card.preprocessing
        x = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 1)).astype("float32")
        np.testing.assert_allclose(loaded.model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)

    def test_tampered_model_file_is_refused(self, tiny_registry):
        reg, card, _ = tiny_registry
        path = reg / card.id / "model.keras"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ModelIntegrityError, match="does not match its card"):
            load_model(card.id, reg)

    def test_update_card_rewrites_what_is_said_but_not_the_model_file(self, tiny_registry):
        import dataclasses

        reg, card, _ = tiny_registry
        before = (reg / card.id / "model.keras").read_bytes()
        new = registry.update_card(dataclasses.replace(card, thresholds={"malignant": 0.25}), reg)
        assert get_card(card.id, reg) == new and new.thresholds == {"malignant": 0.25}
        assert (reg / card.id / "model.keras").read_bytes() == before
        with pytest.raises(RegistryError, match="another model file"):
            registry.update_card(dataclasses.replace(card, sha256="0" * 64), reg)
        with pytest.raises(ModelNotFoundError):
            registry.update_card(dataclasses.replace(card, id="other"), reg)

    def test_write_evaluation_is_read_back_and_refuses_nan(self, tiny_registry):
        reg, card, _ = tiny_registry
        path = registry.write_evaluation(card.id, {"accuracy": 0.5}, reg)
        assert path == reg / card.id / "evaluation.json"
        assert registry.read_evaluation(card.id, reg) == {"accuracy": 0.5}
        with pytest.raises(ValueError):
            registry.write_evaluation(card.id, {"accuracy": float("nan")}, reg)
        with pytest.raises(ModelNotFoundError):
            registry.write_evaluation("other", {}, reg)

    def test_unknown_model_raises_not_found(self, tiny_registry):
        reg, _, _ = tiny_registry
        with pytest.raises(ModelNotFoundError, match="available"):
            load_model("nope", reg)

    def test_no_default_raises_not_found(self, tmp_path):
        with pytest.raises(ModelNotFoundError, match="default"):
            default_model_id(tmp_path)

    def test_path_like_ids_are_refused(self, tmp_path):
        with pytest.raises(RegistryError, match="invalid model id"):
            registry.entry_dir("../x", tmp_path)


class TestFloat16Storage:
    def test_kernels_stored_as_float16_load_back_as_float32_with_close_outputs(self, tmp_path):
        from models.architectures import build_model

        model = build_model("advanced_cnn", PreprocessSpec(size=32, channels=1), filters=8)
        f32, f16 = tmp_path / "a.keras", tmp_path / "b.keras"
        registry.save_model(model, f32)
        info = registry.save_model(model, f16, float16=True)
        assert info["float16_values"] > 0 and info["float32_values"] > 0
        assert f16.stat().st_size < f32.stat().st_size
        back = keras.saving.load_model(f16, safe_mode=True, compile=False)
        assert all(w.dtype == "float32" for w in back.weights)
        x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 1)).astype("float32")
        diff = np.abs(back.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
        assert 0 < diff < 1e-3


class TestSaveModel:
    def test_optimizer_state_is_not_shipped(self, tmp_path):
        from models.architectures import build_model

        model = build_model("basic_cnn", PreprocessSpec(size=32, channels=1), filters=8)
        plain = tmp_path / "plain.keras"
        registry.save_model(model, plain)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        x = np.zeros((2, 32, 32, 1), "float32")
        model.train_on_batch(x, np.eye(3, dtype="float32")[[0, 1]])
        trained = tmp_path / "trained.keras"
        registry.save_model(model, trained)
        assert trained.stat().st_size < 1.2 * plain.stat().st_size  # Adam state would triple it
        back = keras.saving.load_model(trained, compile=False)
        np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


class TestShippedRegistry:
    """The real registry under models/registry: what the dashboard will load."""

    def test_every_shipped_card_names_an_existing_gradcam_layer(self):
        cards = list_cards()
        if not cards:
            pytest.skip("no models registered yet")
        for card in cards:
            loaded = load_model(card.id)  # also checks the sha256
            layer = loaded.model.get_layer(card.gradcam_layer)
            assert len(layer.output.shape) == 4, card.id
            assert loaded.model.input_shape[1:] == card.preprocessing.input_shape

    def test_default_is_a_shipped_model_and_files_fit_the_budget(self):
        cards = list_cards()
        if not cards:
            pytest.skip("no models registered yet")
        assert default_model_id() in {c.id for c in cards}
        for card in cards:
            assert card.size_bytes < 50 * 2**20, card.id
            assert card.thresholds and 0 <= card.thresholds["malignant"] <= 1
            assert card.limitations and card.intended_use
