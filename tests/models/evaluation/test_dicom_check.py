"""The DICOM check on a shared LIDC-IDRI study, with a tiny untrained model (weights=None)."""

from __future__ import annotations

import pytest

from core.domain import CLASS_NAMES
from core.preprocessing import PreprocessSpec
from core.settings import REPO_ROOT

LIDC1 = REPO_ROOT.parent / "shared" / "datasets" / "lidc-idri" / "LIDC-IDRI-0001"

ROW_KEYS = {
    "series",
    "n_slices",
    "n_lesion_slices",
    "lesion_slice_range",
    "slice_auc_malignant",
    "mean_p_malignant_lesion_slices",
    "mean_p_malignant_other_slices",
    "series_label",
    "series_score",
    "most_suspicious_slice",
    "most_suspicious_in_lesion",
    "cam_slices",
    "cam_mass_in_lungs",
    "cam_mass_in_lungs_uniform_floor",
    "cam_mass_in_lesion",
    "cam_mass_in_lesion_uniform_floor",
    "pointing_game",
    "pointing_game_uniform_floor",
    "seconds",
}


@pytest.mark.skipif(not LIDC1.is_dir(), reason="shared LIDC-IDRI copy not present")
def test_dicom_check_on_a_shared_lidc_study_writes_every_key(tmp_path):
    import keras

    from core.registry import ModelCard, read_dicom_check, save_model, write_entry
    from models.architectures import GRADCAM_LAYERS, build_model
    from models.evaluation.dicom_check import LESION_RULE, main_for

    keras.utils.set_random_seed(0)
    spec = PreprocessSpec(size=32)
    model = build_model("basic_cnn", spec, num_classes=3, weights=None, filters=4, dense_units=8)
    save_model(model, tmp_path / "model.keras")
    registry = tmp_path / "registry"
    card = ModelCard(
        id="tiny_v1",
        architecture="basic_cnn",
        task="3class",
        class_names=tuple(CLASS_NAMES),
        preprocessing=spec,
        gradcam_layer=GRADCAM_LAYERS["basic_cnn"],
        thresholds={"malignant": 0.5},
    )
    write_entry(card, tmp_path / "model.keras", registry_dir=registry)
    datasets = tmp_path / "datasets"
    (datasets / "lidc-idri").mkdir(parents=True)
    (datasets / "lidc-idri" / "LIDC-IDRI-0001").symlink_to(LIDC1)

    assert main_for(datasets, "tiny_v1", False, registry) == 0
    rep = read_dicom_check("tiny_v1", registry)
    assert rep["lesion_rule"] == LESION_RULE and "not a validation" in rep["warning"]
    (row,) = rep["series"]
    assert set(row) == ROW_KEYS
    assert row["series"] == "LIDC-IDRI-0001" and row["n_slices"] == 133
    assert 7 <= row["n_lesion_slices"] <= 9  # README: the nodule is on 7-9 slices
    assert 0.0 <= row["slice_auc_malignant"] <= 1.0
    assert 0 < row["cam_mass_in_lungs_uniform_floor"] < 0.5
    assert 0 < row["cam_mass_in_lesion_uniform_floor"] < 0.05
    assert 0.0 <= row["cam_mass_in_lungs"] <= 1.0 and 0.0 <= row["pointing_game"] <= 1.0
    assert set(rep["mean"]) == {
        "slice_auc_malignant",
        "cam_mass_in_lungs",
        "cam_mass_in_lesion",
        "pointing_game",
        "most_suspicious_in_lesion",
    }


def test_missing_studies_are_a_clear_error(tmp_path, capsys):
    from models.evaluation.dicom_check import main_for

    assert main_for(tmp_path, "anything", False, tmp_path) == 2
    assert "error" in capsys.readouterr().err
