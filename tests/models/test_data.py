"""Tests for models.data: catalogue, pseudo-patient grouping and leak-free splits on the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.settings import REPO_ROOT
from models import data as datasets
from models.data import (
    DatasetError,
    catalogue,
    group_patients,
    load_hu,
    near_duplicate_pairs,
    read_manifest,
    split_by_group,
    thumbnails,
    write_manifest,
)

SHIPPED_MANIFEST = REPO_ROOT / "models" / "registry" / "splits" / "iqothnccd_seed42.csv"


@pytest.fixture(scope="module")
def iq_catalogue(iq_dir: Path) -> pd.DataFrame:
    return catalogue(iq_dir)


@pytest.fixture(scope="module")
def iq_thumbs(iq_dir: Path, iq_catalogue: pd.DataFrame) -> datasets.Thumbnails:
    return thumbnails(iq_dir, list(iq_catalogue["path"]))


@pytest.fixture(scope="module")
def iq_grouped(iq_dir, iq_catalogue, iq_thumbs) -> pd.DataFrame:
    return group_patients(iq_catalogue, iq_dir, thumbs=iq_thumbs)


@pytest.fixture(scope="module")
def iq_split(iq_grouped) -> pd.DataFrame:
    return split_by_group(iq_grouped, seed=42)


def _phantom(seed: int, shape=(96, 96)) -> np.ndarray:
    """A grey ellipse 'body' with random blobs: distinct for distinct seeds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    body = ((yy - shape[0] / 2) / (shape[0] * 0.4)) ** 2 + ((xx - shape[1] / 2) / (shape[1] * 0.45)) ** 2 < 1
    img = np.where(body, 120, 0).astype(np.float32)
    for _ in range(6):
        cy, cx = rng.integers(25, shape[0] - 25), rng.integers(25, shape[1] - 25)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(20, 80)] = rng.integers(180, 255)
    return img.astype(np.uint8)


@pytest.fixture()
def plain_folder(tmp_path: Path) -> Path:
    root = tmp_path / "plain"
    for label, seeds in {"normal": [1, 2, 3], "benign": [4, 5, 6], "malignant": [7, 8, 9]}.items():
        (root / label).mkdir(parents=True)
        for k, seed in enumerate(seeds):
            name = f"scan_{k}.png" if label != "benign" else f"img{'abc'[k]}.png"
            Image.fromarray(_phantom(seed)).save(root / label / name)
    # an exact duplicate across classes: benign/imga.png copied into malignant
    (root / "malignant" / "copy.png").write_bytes((root / "benign" / "imga.png").read_bytes())
    (root / "notes").mkdir()
    (root / "notes" / "readme.png").write_bytes((root / "normal" / "scan_0.png").read_bytes())
    return root


class TestCatalogue:
    def test_reads_every_iq_othnccd_slice_with_its_label(self, iq_catalogue):
        assert len(iq_catalogue) == 903
        assert iq_catalogue["label"].value_counts().to_dict() == {
            "malignant": 458,
            "normal": 345,
            "benign": 100,
        }

    def test_parses_file_numbers_and_sizes(self, iq_catalogue):
        row = iq_catalogue[iq_catalogue["path"] == "Bengin cases/Bengin case (17).jpg"].iloc[0]
        assert row["label"] == "benign" and row["number"] == 17
        assert (row["width"], row["height"]) == (512, 512)
        assert iq_catalogue["number"].notna().all()
        assert (iq_catalogue["width"] != 512).sum() > 50  # the odd-sized malignant exports

    def test_finds_the_byte_identical_pair_named_in_the_readme(self, iq_catalogue):
        sha = iq_catalogue.set_index("path")["sha256"]
        assert sha["Normal cases/Normal case (134).jpg"] == sha["Normal cases/Normal case (414).jpg"]

    def test_plain_folder_layout_with_any_file_names(self, plain_folder):
        df = catalogue(plain_folder)
        assert len(df) == 10  # the 'notes' folder is not a class
        assert set(df["label"]) == {"normal", "benign", "malignant"}
        numbers = df.set_index("path")["number"]
        assert numbers["normal/scan_2.png"] == 2
        assert pd.isna(numbers["benign/imga.png"]) and pd.isna(numbers["malignant/copy.png"])

    def test_missing_folder_raises_dataset_error(self, tmp_path):
        with pytest.raises(DatasetError, match="does not exist"):
            catalogue(tmp_path / "nope")

    def test_folder_without_classes_raises_dataset_error(self, tmp_path):
        (tmp_path / "other").mkdir()
        with pytest.raises(DatasetError, match="no class folders"):
            catalogue(tmp_path)


class TestLoadHu:
    def test_returns_float32_hu_in_the_export_window(self, iq_dir):
        (hu,) = load_hu(iq_dir, ["Normal cases/Normal case (1).jpg"])
        assert hu.dtype == np.float32 and hu.shape == (512, 512)
        assert -1400 < hu.min() < hu.max() < 200  # window -600/1500 spans -1350..150 HU

    def test_missing_file_raises_dataset_error(self, iq_dir):
        with pytest.raises(DatasetError, match="missing"):
            load_hu(iq_dir, ["Normal cases/none.jpg"])


class TestGroupPatients:
    def test_group_count_is_near_the_number_of_patients(self, iq_grouped):
        # the full release has 110 patients; this copy holds 903 of its 1097 slices
        assert 70 <= iq_grouped["group"].nunique() <= 160

    def test_exact_duplicates_share_a_group(self, iq_grouped):
        assert (iq_grouped.groupby("sha256")["group"].nunique() == 1).all()

    def test_near_duplicates_share_a_group(self, iq_grouped, iq_thumbs):
        pairs = near_duplicate_pairs(iq_thumbs.cropped)
        assert len(pairs) > 0
        groups = iq_grouped["group"].to_numpy()
        assert (groups[pairs[:, 0]] == groups[pairs[:, 1]]).all()

    def test_consecutive_similar_slices_of_one_patient_share_a_group(self, iq_grouped):
        g = iq_grouped.set_index("path")["group"]
        # Normal 15-24 are one patient (same body outline and table), 25 is another
        run = [g[f"Normal cases/Normal case ({n}).jpg"] for n in range(15, 25)]
        assert len(set(run)) == 1
        assert g["Normal cases/Normal case (25).jpg"] != run[0]

    def test_duplicates_across_classes_are_merged(self, plain_folder):
        df = group_patients(catalogue(plain_folder))
        g = df.set_index("path")["group"]
        assert g["benign/imga.png"] == g["malignant/copy.png"]
        assert df["group"].nunique() < len(df)

    def test_without_root_raises_dataset_error(self, iq_catalogue):
        bare = iq_catalogue.copy()
        bare.attrs = {}
        with pytest.raises(DatasetError, match="dataset folder"):
            group_patients(bare)


class TestSplitByGroup:
    def test_no_group_crosses_splits(self, iq_split):
        assert (iq_split.groupby("group")["split"].nunique() == 1).all()

    def test_no_exact_duplicate_crosses_splits(self, iq_split):
        assert (iq_split.groupby("sha256")["split"].nunique() == 1).all()

    def test_no_near_duplicate_pair_crosses_splits(self, iq_split, iq_thumbs):
        pairs = near_duplicate_pairs(iq_thumbs.cropped)
        splits = iq_split["split"].to_numpy()
        assert (splits[pairs[:, 0]] == splits[pairs[:, 1]]).all()

    def test_every_split_has_every_class(self, iq_split):
        table = iq_split.groupby("split")["label"].nunique()
        assert table.to_dict() == {"train": 3, "val": 3, "test": 3}
        benign_groups = iq_split[iq_split["group_label"] == "benign"].groupby("split")["group"].nunique()
        assert (benign_groups.reindex(["train", "val", "test"]) >= 1).all()

    def test_fractions_are_roughly_met(self, iq_split):
        share = iq_split["split"].value_counts(normalize=True)
        assert 0.6 < share["train"] < 0.8 and 0.08 < share["val"] < 0.22 and 0.08 < share["test"] < 0.22

    def test_same_seed_same_split_other_seed_other_split(self, iq_grouped, iq_split):
        again = split_by_group(iq_grouped, seed=42)
        assert (again["split"] == iq_split["split"]).all()
        other = split_by_group(iq_grouped, seed=7)
        assert (other["split"] != iq_split["split"]).any()

    def test_needs_groups(self, iq_catalogue):
        with pytest.raises(DatasetError, match="group_patients"):
            split_by_group(iq_catalogue)

    def test_bad_fractions_raise(self, iq_grouped):
        with pytest.raises(DatasetError, match="fractions"):
            split_by_group(iq_grouped, fractions=(0.5, 0.5, 0.5))


class TestManifest:
    def test_round_trip_keeps_rows_and_reports_sha256(self, iq_split, tmp_path):
        path = tmp_path / "split.csv"
        sha = write_manifest(iq_split, path)
        assert sha == datasets.file_sha256(path) and len(sha) == 64
        back = read_manifest(path)
        assert list(back.columns) == list(datasets.MANIFEST_COLUMNS)
        assert (back["path"] == iq_split["path"]).all() and (back["split"] == iq_split["split"]).all()
        assert back["number"].dtype == "Int64"

    def test_shipped_manifest_is_reproduced_from_the_data(self, iq_split):
        shipped = read_manifest(SHIPPED_MANIFEST).set_index("path")
        now = iq_split.set_index("path")
        assert set(shipped.index) == set(now.index)
        assert (shipped.loc[now.index, "split"] == now["split"]).all()

    def test_missing_manifest_raises(self, tmp_path):
        with pytest.raises(DatasetError, match="not found"):
            read_manifest(tmp_path / "none.csv")


class TestMain:
    def test_too_few_groups_exits_with_a_message(self, plain_folder, capsys):
        # three classes with one group each is too few to split: the CLI says so
        assert datasets.main(["--data", str(plain_folder)]) == 2
        assert "only" in capsys.readouterr().err
