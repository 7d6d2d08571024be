"""core.registry kinds: slice classifiers and the nodule detector side by side, never mixed up."""

from __future__ import annotations

import json
import shutil

import pytest

from core import registry
from core.nodules.volume import LUNA16_SPEC
from core.preprocessing import PreprocessSpec
from core.registry import DETECTION_TASK, ModelCard, RegistryError, list_cards
from core.settings import REPO_ROOT

SHIPPED = REPO_ROOT / "models" / "registry"


def _detector_card(model_id="det_v1") -> ModelCard:
    return ModelCard(id=model_id, kind="nodule_detector", architecture="nodule3d", task=DETECTION_TASK,
                     class_names=("nodule", "cad_false_positive", "tissue"), preprocessing=None,
                     volume_preprocessing=LUNA16_SPEC.to_dict(), gradcam_layer="conv5_act")


def _classifier_card(model_id="cls_v1") -> ModelCard:
    return ModelCard(id=model_id, architecture="basic_cnn", task="3class", class_names=("normal", "benign", "malignant"),
                     preprocessing=PreprocessSpec(size=32), gradcam_layer="last_conv")


class TestCard:
    def test_detector_card_round_trips(self):
        card = _detector_card()
        assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card

    def test_cards_without_kind_are_slice_classifiers(self):
        data = _classifier_card().to_dict()
        del data["kind"], data["volume_preprocessing"]
        assert ModelCard.from_dict(data).kind == "slice_classifier"

    def test_invalid_kinds_are_refused(self):
        with pytest.raises(RegistryError, match="unknown kind"):
            ModelCard.from_dict(_classifier_card().to_dict() | {"kind": "segmenter"})
        with pytest.raises(RegistryError, match="volume_preprocessing"):
            ModelCard.from_dict(_detector_card().to_dict() | {"volume_preprocessing": {}})
        with pytest.raises(RegistryError, match="incomplete"):
            ModelCard.from_dict(_classifier_card().to_dict() | {"preprocessing": None})


class TestListing:
    @pytest.fixture()
    def mixed(self, tmp_path):
        for card in (_classifier_card(), _detector_card()):
            folder = tmp_path / card.id
            folder.mkdir()
            (folder / "card.json").write_text(json.dumps(card.to_dict()))
        return tmp_path

    def test_list_cards_gives_slice_classifiers_unless_asked(self, mixed):
        assert [c.id for c in list_cards(mixed)] == ["cls_v1"]
        assert [c.id for c in list_cards(mixed, kind="nodule_detector")] == ["det_v1"]
        assert [c.id for c in list_cards(mixed, kind=None)] == ["cls_v1", "det_v1"]
        with pytest.raises(RegistryError, match="unknown model kind"):
            list_cards(mixed, kind="x")

    def test_the_default_must_be_a_slice_classifier(self, mixed):
        with pytest.raises(RegistryError, match="slice classifier"):
            registry.set_default_model("det_v1", mixed)
        registry.set_default_model("cls_v1", mixed)

    def test_spec_of_a_detector_is_refused(self, mixed):
        loaded = registry.LoadedModel(registry.get_card("det_v1", mixed), model=None)
        with pytest.raises(RegistryError, match="not a slice classifier"):
            _ = loaded.spec

    def test_froc_report_round_trips(self, mixed):
        path = registry.write_froc("det_v1", {"cpm": 0.5}, mixed)
        assert path.name == "froc.json" and registry.read_froc("det_v1", mixed) == {"cpm": 0.5}
        assert registry.read_froc("cls_v1", mixed) is None


class TestShipped:
    def test_five_slice_classifiers_one_detector_and_a_classifier_default(self):
        kinds = {c.id: c.kind for c in list_cards(SHIPPED, kind=None)}
        assert sorted(k for k in kinds.values()) == ["nodule_detector"] + ["slice_classifier"] * 5
        assert kinds[registry.default_model_id(SHIPPED)] == "slice_classifier"
        for path in SHIPPED.glob("*/card.json"):  # every card states its kind
            assert "kind" in json.loads(path.read_text())

    def test_a_copied_registry_still_separates_them(self, tmp_path):
        for name in ("basic_cnn_v1", "nodule3d_luna16_v1"):
            shutil.copytree(SHIPPED / name, tmp_path / name, ignore=shutil.ignore_patterns("*.keras"))
        assert [c.id for c in list_cards(tmp_path)] == ["basic_cnn_v1"]
        det = list_cards(tmp_path, kind="nodule_detector")[0]
        assert det.preprocessing is None and det.volume_preprocessing["cube"] == 64
