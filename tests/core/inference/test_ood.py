"""Tests for core.inference.ood: the out-of-distribution guard on real CT, non-CT DICOM and synthetic pictures."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pydicom.data
import pytest
from PIL import Image

from core.imaging import read_paths, read_uploads
from core.inference.ood import check_series, hu_slice_reasons, picture_slice_reasons, tilt_degrees


def _png(arr: np.ndarray, name: str = "x.png"):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return read_uploads([(name, buf.getvalue())]).series[0]


@pytest.fixture(scope="module")
def tcia(tcia_dir):
    return read_paths([tcia_dir]).series


class TestCheckSeries:
    def test_mr_small_is_flagged_by_modality_and_pixels(self):
        series = read_paths([pydicom.data.get_testdata_file("MR_small.dcm")]).series[0]
        check = check_series(series)
        assert check.ood.all()
        assert "modality MR is not CT" in check.reasons[0]
        assert any("no air or lung" in r for r in check.reasons[0])

    def test_tcia_ct_slices_are_not_flagged(self, tcia):
        for series in tcia:
            check = check_series(series)
            assert not check.ood.any(), check.series_reasons
            assert check.reasons == [[]] * len(series.slices)

    def test_iq_othnccd_jpgs_are_not_flagged(self, iq_dir):
        paths = []
        for folder in ("Normal cases", "Bengin cases", "Malignant cases"):
            paths += sorted((iq_dir / folder).glob("*.jpg"))[::15]
        series = read_paths(paths).series
        flags = np.concatenate([check_series(s).ood for s in series])
        assert len(flags) == len(paths) >= 50 and not flags.any()

    @pytest.mark.parametrize(
        ("name", "arr"),
        [
            ("blank.png", np.zeros((256, 256), np.uint8)),
            ("white.png", np.full((256, 256), 255, np.uint8)),
            ("noise.png", np.random.default_rng(1).integers(0, 256, (256, 256), dtype=np.uint8)),
            ("rgb_noise.png", np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)),
            ("gradient.png", np.tile(np.arange(256, dtype=np.uint8), (256, 1))),
        ],
    )
    def test_blank_noise_and_gradient_pictures_are_flagged(self, name, arr):
        assert check_series(_png(arr, name)).ood.all()

    def test_colour_capture_dicom_is_flagged(self):
        series = read_paths([pydicom.data.get_testdata_file("SC_rgb_rle.dcm")]).series[0]
        assert check_series(series).ood.all()

    def test_sagittal_orientation_in_metadata_is_flagged(self, tcia):
        sagittal = [0, 1, 0, 0, 0, -1]
        series = replace(tcia[0], metadata={**tcia[0].metadata, "image_orientation_patient": sagittal})
        check = check_series(series)
        assert check.ood.all() and "not an axial slice" in check.reasons[0][0]

    def test_tcia_orientation_reaches_the_guard_from_the_files(self, tcia):
        assert tcia[0].metadata["image_orientation_patient"] == pytest.approx([1, 0, 0, 0, 1, 0])

    def test_sagittal_dicom_file_is_flagged(self, tcia_dir, tmp_path):
        src = sorted(tcia_dir.glob("Lung_Dx-A0002/*/*/*.dcm"))[10]
        ds = pydicom.dcmread(src)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.save_as(tmp_path / "sagittal.dcm")
        check = check_series(read_paths([tmp_path / "sagittal.dcm"]).series[0])
        assert check.ood.all() and "not an axial slice" in check.reasons[0][0]

    def test_ct_modality_with_mr_pixels_is_still_flagged(self):
        mr = read_paths([pydicom.data.get_testdata_file("MR_small.dcm")]).series[0]
        check = check_series(replace(mr, modality="CT", metadata={**mr.metadata, "modality": "CT"}))
        assert check.ood.all() and not any("modality" in r for r in check.reasons[0])


class TestTiltDegrees:
    @pytest.mark.parametrize(
        ("iop", "deg"),
        [
            ([1, 0, 0, 0, 1, 0], 0.0),
            ([0, 1, 0, 0, 0, -1], 90.0),
            ([1, 0, 0, 0, 0, -1], 90.0),
            ([1, 0, 0, 0, np.cos(np.radians(20)), -np.sin(np.radians(20))], 20.0),
        ],
    )
    def test_angle_from_axial(self, iop, deg):
        assert tilt_degrees(iop) == pytest.approx(deg, abs=1e-6)

    def test_parallel_directions_are_refused(self):
        with pytest.raises(ValueError, match="parallel"):
            tilt_degrees([1, 0, 0, 1, 0, 0])


class TestHuSliceReasons:
    def test_real_ct_slice_has_no_reason(self, tcia):
        assert hu_slice_reasons(tcia[0].slices[15].hu) == []

    def test_constant_slice_is_blank(self):
        assert "blank" in hu_slice_reasons(np.full((64, 64), -1000.0, np.float32))[0]

    def test_soft_tissue_without_air_is_flagged(self):
        rng = np.random.default_rng(0)
        assert any("no air" in r for r in hu_slice_reasons(rng.normal(40, 30, (128, 128)).astype(np.float32)))

    def test_nan_is_not_an_image(self):
        assert hu_slice_reasons(np.full((8, 8), np.nan, np.float32)) == ["not a finite 2-D image"]


class TestPictureSliceReasons:
    def test_training_export_has_no_reason(self, iq_dir):
        series = read_paths([next((iq_dir / "Malignant cases").glob("*.jpg"))]).series[0]
        assert picture_slice_reasons(series.slices[0].hu) == []

    def test_uniform_noise_is_unlike_a_ct_export(self):
        series = _png(np.random.default_rng(3).integers(0, 256, (128, 128), dtype=np.uint8))
        assert "grey levels unlike a CT slice export" in picture_slice_reasons(series.slices[0].hu)[0]


class TestCheckSeriesIndices:
    def test_a_chunk_gives_the_same_flags_as_the_whole_series(self, tcia):
        series = replace(tcia[0], slices=list(tcia[0].slices))
        series.slices[4] = replace(series.slices[4], hu=np.zeros_like(series.slices[4].hu))  # blank slice
        whole = check_series(series)
        part = check_series(series, range(3, 9))
        assert part.ood.tolist() == whole.ood[3:9].tolist() and part.ood.tolist()[1] is True
        assert part.reasons == whole.reasons[3:9]
        with pytest.raises(IndexError):
            check_series(series, [len(series.slices)])


class TestCli:
    def test_help_exits_before_measuring(self, capsys):
        from core.inference import ood

        with pytest.raises(SystemExit) as exc:
            ood.main(["--help"])
        assert exc.value.code == 0 and "--data" in capsys.readouterr().out

    def test_missing_data_folder_is_one_line(self, tmp_path, capsys):
        from core.inference import ood

        assert ood.main(["--data", str(tmp_path / "none")]) == 2
        err = capsys.readouterr().err
        assert "not found" in err and "Traceback" not in err
