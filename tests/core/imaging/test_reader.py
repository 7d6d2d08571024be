"""Tests of core.imaging on real inputs: pydicom's bundled files, the shared TCIA study and
IQ-OTH/NCCD JPGs, and synthetic DICOMs/pictures written by the tests (tests/factories/dicom.py).
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import MPEG2MPML

from core import imaging
from core.domain import WINDOW_PRESETS, Window, WindowPreset
from core.imaging import (
    ArchiveTooLargeError,
    EmptyArchiveError,
    ImageTooLargeError,
    ImagingError,
    MixedSeriesError,
    NoPixelDataError,
    NotAnImageError,
    UnsupportedTransferSyntaxError,
    read_paths,
    read_picture,
    read_series,
    read_uploads,
    slice_position,
    study_key_for,
    summarize,
    view,
)
from core.imaging.assembly import natural_key
from core.settings import REPO_ROOT
from core.windowing import grey_from_picture, window_to_uint8
from tests.factories.dicom import ADDRESS, BIRTH_DATE, COMMENT, PATIENT_ID, PATIENT_NAME, make_dicom

IQ_WINDOW = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]


def as_export(grey):
    """What the IQ-OTH/NCCD export model keeps of grey values: black below half the floor level,
    the floor level up to it, every value from the floor (128) up unchanged (core.windowing)."""
    floor = int(np.ceil(255 * IQ_WINDOW.floor))
    grey = np.asarray(grey)
    return np.where(grey < floor / 2, 0, np.maximum(grey, floor)).astype(np.uint8)


def bundled(name: str) -> Path:
    """A file shipped in pydicom's wheel (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with pydicom"
    return Path(path)


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory):
    """Fixed study-key secret and temporary var/ for module-scoped fixtures (built before tests)."""
    from core import settings as config

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LUNGREVIEW_VAR_DIR", str(tmp_path_factory.mktemp("var")))
        mp.setenv("LUNGREVIEW_STUDY_KEY", "test-secret")
        config.get_settings.cache_clear()
        yield
    config.get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _settings(module_settings, isolated_settings):
    """Every test runs with the same fixed study-key secret and a temporary var/ folder."""
    return isolated_settings


@pytest.fixture()
def limits(monkeypatch):
    """Set LUNGREVIEW_* limits for one test: ``limits(MAX_PIXELS=100)``."""
    from core import settings as config

    def apply(**env):
        for key, value in env.items():
            monkeypatch.setenv(f"LUNGREVIEW_{key}", str(value))
        config.get_settings.cache_clear()

    yield apply
    config.get_settings.cache_clear()


@pytest.fixture(scope="module")
def tcia_files(tcia_dir) -> list[Path]:
    files = sorted(tcia_dir.rglob("*.dcm"))
    assert len(files) == 60
    return files


@pytest.fixture(scope="module")
def tcia_result(module_settings, tcia_dir):
    return read_paths([tcia_dir / "Lung_Dx-A0002"])


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpg_bytes(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class TestStudyKeyFor:
    def test_is_32_hex_characters_and_stable(self):
        key = study_key_for("1.2.3.4")
        assert len(key) == 32 and set(key) <= set("0123456789abcdef")
        assert study_key_for("1.2.3.4") == key

    def test_depends_on_the_secret(self, monkeypatch):
        from core import settings as config

        before = study_key_for("1.2.3.4")
        monkeypatch.setenv("LUNGREVIEW_STUDY_KEY", "another-secret")
        config.get_settings.cache_clear()
        assert study_key_for("1.2.3.4") != before

    def test_differs_between_uids_and_does_not_contain_them(self):
        assert study_key_for("1.2.3.4") != study_key_for("1.2.3.5")
        assert "1.2.3" not in study_key_for("1.2.3.4")


class TestView:
    def test_matches_windowing_module_as_uint8(self):
        hu = np.linspace(-1500, 300, 64, dtype=np.float32).reshape(8, 8)
        out = view(hu, WINDOW_PRESETS[WindowPreset.LUNG])
        assert out.dtype == np.uint8 and out.shape == hu.shape
        np.testing.assert_array_equal(out, window_to_uint8(hu, WINDOW_PRESETS[WindowPreset.LUNG]))
        assert out[0, 0] == 0 and out[-1, -1] == 255


class TestSlicePosition:
    def test_axial_position_is_z(self):
        assert slice_position((10.0, 20.0, -75.5), (1, 0, 0, 0, 1, 0)) == pytest.approx(-75.5)

    def test_coronal_position_is_along_the_normal(self):
        # rows along x, columns along -z: normal = x cross -z = +y
        assert slice_position((1.0, 42.0, 3.0), (1, 0, 0, 0, 0, -1)) == pytest.approx(42.0)

    def test_missing_or_malformed_attributes_give_none(self):
        assert slice_position(None, (1, 0, 0, 0, 1, 0)) is None
        assert slice_position((0, 0, 1), None) is None
        assert slice_position((0, 0), (1, 0, 0, 0, 1, 0)) is None


class TestReadPathsBundledDicom:
    def test_ct_small_hu_follow_rescale_slope_and_intercept(self):
        path = bundled("CT_small.dcm")
        ds = pydicom.dcmread(path)
        expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        series = read_series(path)
        assert series.modality == "CT" and series.source_kind == "dicom"
        assert series.hu.dtype == np.float32 and series.hu.shape == (1, 128, 128)
        np.testing.assert_array_equal(series.hu[0], expected.astype(np.float32))
        assert -1024 <= series.hu.min() < -800 and 1000 < series.hu.max() < 3000
        assert series.hu_is_estimated is False
        # CT_small.dcm carries no WindowCenter/WindowWidth: no file windows are invented
        assert series.windows == ()

    def test_file_window_of_mr_small_is_read(self):
        series = read_series(bundled("MR_small.dcm"))
        ds = pydicom.dcmread(bundled("MR_small.dcm"), stop_before_pixels=True)
        assert series.windows == (Window(float(ds.WindowCenter), float(ds.WindowWidth)),)

    @pytest.mark.parametrize(
        "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
    )
    def test_lossless_compressed_equals_uncompressed_reference(self, name):
        reference = read_series(bundled("MR_small.dcm")).hu
        np.testing.assert_array_equal(read_series(bundled(name)).hu, reference)

    def test_rgb_jpeg_lossless_equals_rle_reference_as_grey(self):
        reference = read_series(bundled("SC_rgb_rle.dcm"))
        lossless = read_series(bundled("SC_rgb_jpeg_gdcm.dcm"))
        assert reference.hu_is_estimated and lossless.hu_is_estimated
        np.testing.assert_array_equal(lossless.hu, reference.hu)

    @pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cr.dcm"])
    def test_rgb_jpeg_baseline_is_within_lossy_tolerance_of_reference(self, name):
        reference = view(read_series(bundled("SC_rgb_rle.dcm")).hu, IQ_WINDOW).astype(int)
        lossy = view(read_series(bundled(name)).hu, IQ_WINDOW).astype(int)
        assert np.abs(lossy - reference).max() <= 3  # grey levels, JPEG baseline quantisation
        assert np.abs(lossy - reference).mean() < 1.0

    def test_rgb_capture_becomes_bt601_grey(self):
        ds = pydicom.dcmread(bundled("SC_rgb_rle.dcm"))
        grey = grey_from_picture(ds.pixel_array)
        series = read_series(bundled("SC_rgb_rle.dcm"))
        np.testing.assert_array_equal(view(series.hu[0], IQ_WINDOW), as_export(grey))
        assert any("grey" in n for n in series.metadata["notes"])

    def test_jpeg_2000_lossy_decodes_to_a_real_image(self):
        series = read_series(bundled("JPEG2000.dcm"))
        assert series.hu.shape == (1, 1024, 256) and np.isfinite(series.hu).all()
        assert series.hu.std() > 1.0
        assert series.metadata["transfer_syntax"] == "JPEG 2000 Image Compression"

    def test_jpeg_the_installed_decoder_fails_on_is_damaged_not_install_a_decoder(self):
        # JPEG-lossy.dcm is 12-bit JPEG Extended with a marker pylibjpeg rejects (only GDCM reads it):
        # the decoder for the syntax is installed and failed, so no decoder is suggested
        with pytest.raises(NotAnImageError) as info:
            read_series(bundled("JPEG-lossy.dcm"))
        message = str(info.value)
        assert "damaged compressed pixel data" in message and "JPEG Extended" in message
        assert "uncompressed" in message and "install" not in message

    def test_missing_decoder_plugin_is_named(self, monkeypatch):
        class Unavailable:
            is_available = False

        monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
        with pytest.raises(UnsupportedTransferSyntaxError) as info:
            read_series(bundled("MR_small_jp2klossless.dcm"))
        assert info.value.plugin == "pylibjpeg-openjpeg"
        assert "JPEG 2000" in info.value.transfer_syntax and "install pylibjpeg-openjpeg" in str(info.value)

    def test_rt_dose_frames_are_slices_positioned_by_grid_frame_offsets(self):
        path = bundled("rtdose.dcm")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        series = read_series(path)
        assert len(series.slices) == int(ds.NumberOfFrames)
        assert [s.frame for s in series.slices] == list(range(int(ds.NumberOfFrames)))
        positions = np.array([s.position_mm for s in series.slices])
        offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
        np.testing.assert_allclose(np.diff(positions), np.diff(offsets), atol=1e-4)
        assert series.spacing_mm[0] == pytest.approx(abs(offsets[1] - offsets[0]))

    def test_rgb_two_frame_file_gives_two_slices(self):
        series = read_series(bundled("SC_rgb_rle_2frame.dcm"))
        assert len(series.slices) == 2 and series.hu.shape == (2, 100, 100)
        assert not np.array_equal(series.hu[0], series.hu[1])

    def test_truncated_bundled_file_is_not_an_image(self):
        with pytest.raises(NotAnImageError, match="pixel data is shorter .* it is truncated"):
            read_series(bundled("MR_truncated.dcm"))

    def test_structured_report_has_no_pixel_data(self):
        with pytest.raises(NoPixelDataError, match="no pixel data"):
            read_series(bundled("reportsi.dcm"))

    def test_file_without_preamble_is_still_recognised_as_dicom(self):
        # ExplVR_LitEndNoMeta.dcm has neither preamble nor file meta: an RT Plan, so no pixels
        with pytest.raises(NoPixelDataError, match="modality RTPLAN"):
            read_series(bundled("ExplVR_LitEndNoMeta.dcm"))

    def test_image_without_preamble_is_read_with_force(self):
        data = make_dicom(preamble=False)
        assert data[128:132] != b"DICM"
        series = read_uploads([("raw", data)]).series[0]
        np.testing.assert_array_equal(series.hu, read_uploads([("p10", make_dicom())]).series[0].hu)


class TestReadPathsTcia:
    def test_two_series_of_thirty_slices_512(self, tcia_result):
        assert len(tcia_result.studies) == 1 and not tcia_result.problems
        series = tcia_result.series
        assert [len(s.slices) for s in series] == [30, 30]
        assert all(s.hu.shape == (30, 512, 512) for s in series)
        assert len({s.series_key for s in series}) == 2
        assert series[0].metadata["series_number"] < series[1].metadata["series_number"]

    def test_slices_are_ordered_along_the_normal(self, tcia_result):
        for series in tcia_result.series:
            z = np.array([s.position_mm for s in series.slices])
            assert np.all(np.diff(z) > 0)
            assert series.spacing_mm[0] == pytest.approx(8.0)
            assert series.spacing_mm[1] == pytest.approx(series.metadata["pixel_spacing_mm"][0])

    def test_hu_range_is_plausible_for_chest_ct(self, tcia_result):
        for series in tcia_result.series:
            hu = series.hu
            assert hu.min() <= -1000 and hu.max() > 1000
            air = np.median(hu[:, :20, :20])
            assert air < -900  # the corners are air outside the body

    def test_file_windows_as_in_readme(self, tcia_result):
        b70, b40 = tcia_result.series
        assert b70.metadata["convolution_kernel"] == "B70f"
        assert b70.windows == (Window(-600, 1200), Window(50, 350))
        # the B40f series stores its pair in the other order and with centre 40
        assert set(b40.windows) == {Window(40, 350), Window(-600, 1200)}

    def test_same_study_as_zip_gives_same_keys_and_content_hash(self, tcia_files, tcia_result, tmp_path):
        archive = tmp_path / "study.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in tcia_files:
                zf.write(f, f"A0002/{f.parent.name}/{f.name}")
            zf.writestr("__MACOSX/._1-01.dcm", b"junk")
            zf.writestr("A0002/.DS_Store", b"junk")
            zf.writestr("A0002/DICOMDIR", b"junk")
            zf.writestr("A0002/README.txt", b"notes")
            zf.writestr("A0002/empty/", b"")
        result = read_uploads([("study.zip", archive.read_bytes())])
        assert not result.problems
        assert len(result.skipped) == 4
        assert [s.series_key for s in result.series] == [s.series_key for s in tcia_result.series]
        assert result.studies[0].content_hash == tcia_result.studies[0].content_hash
        np.testing.assert_array_equal(result.series[1].hu, tcia_result.series[1].hu)

    def test_loose_files_in_any_order_form_ordered_series(self, tcia_files):
        chosen = [f for f in tcia_files if "B70f" in str(f)][:6]
        shuffled = chosen[:]
        random.Random(3).shuffle(shuffled)
        items = [(f.name, f.read_bytes()) for f in shuffled]
        result = read_uploads(items)
        assert len(result.series) == 1
        z = [s.position_mm for s in result.series[0].slices]
        assert z == sorted(z) and len(z) == 6

    def test_content_hash_ignores_order(self, tcia_files):
        items = [(f.name, f.read_bytes()) for f in tcia_files[:4]]
        assert (
            read_uploads(items).studies[0].content_hash == read_uploads(items[::-1]).studies[0].content_hash
        )

    def test_companion_files_in_folders_are_skipped_not_problems(self, tcia_dir):
        result = read_paths([tcia_dir])
        assert not result.problems
        assert any(name.endswith(".xml") for name in result.skipped)
        assert any(name.endswith("LICENSE") for name in result.skipped)


class TestReadPathsSynthetic:
    def test_enhanced_multiframe_orders_frames_by_plane_position(self):
        data = make_dicom(
            frame_positions=[(0, 0, 5.0), (0, 0, 1.0), (0, 0, 3.0)], slope=2.0, intercept=-1000.0
        )
        series = read_uploads([("enhanced.dcm", data)]).series[0]
        assert [s.position_mm for s in series.slices] == [1.0, 3.0, 5.0]
        assert [s.frame for s in series.slices] == [1, 2, 0]
        stored = pydicom.dcmread(io.BytesIO(data)).pixel_array.astype(np.float32)
        np.testing.assert_array_equal(series.hu[0], stored[1] * 2 - 1000)
        assert series.spacing_mm == (2.0, 0.7, 0.8)

    def test_missing_position_falls_back_to_instance_number(self):
        study, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        items = [
            (
                f"f{n}.dcm",
                make_dicom(study_uid=study, series_uid=series_uid, instance_number=n, position=None),
            )
            for n in (3, 1, 2)
        ]
        series = read_uploads(items).series[0]
        assert [s.instance_number for s in series.slices] == [1, 2, 3]
        assert series.spacing_mm[0] is None

    def test_without_position_or_number_falls_back_to_natural_file_order(self):
        study, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        names = ["img10.dcm", "img2.dcm", "img1.dcm"]
        items = [
            (n, make_dicom(study_uid=study, series_uid=series_uid, instance_number=None, position=None))
            for n in names
        ]
        series = read_uploads(items).series[0]
        assert [s.source for s in series.slices] == ["img1.dcm", "img2.dcm", "img10.dcm"]

    def test_studies_and_series_are_grouped_by_uid(self):
        a, b = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        sa1, sa2, sb = (pydicom.uid.generate_uid() for _ in range(3))
        items = [
            ("1", make_dicom(study_uid=a, series_uid=sa1, position=(0, 0, 1))),
            ("2", make_dicom(study_uid=b, series_uid=sb)),
            ("3", make_dicom(study_uid=a, series_uid=sa2, series_number=5)),
            ("4", make_dicom(study_uid=a, series_uid=sa1, position=(0, 0, 2))),
        ]
        result = read_uploads(items)
        assert [len(st.series) for st in result.studies] == [2, 1]
        assert result.studies[0].study_key == study_key_for(a)
        assert [len(s.slices) for s in result.studies[0].series] == [2, 1]

    def test_modality_lut_sequence_maps_stored_values(self):
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence as DicomSequence

        lut = Dataset()
        lut.add_new("LUTDescriptor", "US", [256, 0, 16])
        lut.ModalityLUTType = "HU"
        lut.add_new("LUTData", "US", [3 * v + 5 for v in range(256)])
        stored = np.arange(64, dtype=np.int16).reshape(8, 8)
        data = make_dicom(pixels=stored, slope=None, extra={"ModalityLUTSequence": DicomSequence([lut])})
        series = read_uploads([("lut.dcm", data)]).series[0]
        np.testing.assert_array_equal(series.hu[0], 3 * stored.astype(np.float32) + 5)

    def test_multi_valued_windows_become_pairs(self):
        series = read_uploads([("w.dcm", make_dicom(window=((-600, 40), (1500, 400))))]).series[0]
        assert series.windows == (Window(-600, 1500), Window(40, 400))

    def test_monochrome1_radiograph_is_reflected_so_dense_is_high(self):
        stored = (np.arange(64).reshape(8, 8) * 60).astype(np.uint16)  # 12-bit values
        kwargs = dict(
            pixels=stored, modality="DX", slope=None, bits_stored=12, signed=False, window=((2048,), (4096,))
        )
        mono1 = read_uploads([("m1.dcm", make_dicom(photometric="MONOCHROME1", **kwargs))]).series[0]
        mono2 = read_uploads([("m2.dcm", make_dicom(photometric="MONOCHROME2", **kwargs))]).series[0]
        np.testing.assert_array_equal(mono1.hu[0], 4095 - mono2.hu[0])
        # what the reader sees with the file's window is the inverted MONOCHROME2 view (+-1 level)
        v1 = view(mono1.hu[0], mono1.windows[0]).astype(int)
        v2 = view(mono2.hu[0], mono2.windows[0]).astype(int)
        assert np.abs(v1 - (255 - v2)).max() <= 1
        assert any("MONOCHROME1" in n for n in mono1.metadata["notes"])

    def test_monochrome1_ct_keeps_physical_hu(self):
        mono1 = read_uploads([("m1.dcm", make_dicom(photometric="MONOCHROME1"))]).series[0]
        mono2 = read_uploads([("m2.dcm", make_dicom())]).series[0]
        np.testing.assert_array_equal(mono1.hu, mono2.hu)

    def test_one_bad_file_among_good_ones_is_reported_and_the_rest_read(self):
        items = [
            ("good.dcm", make_dicom()),
            ("notes.txt", b"hello radiologist"),
            ("sr.dcm", bundled("reportsi.dcm").read_bytes()),
        ]
        result = read_uploads(items)
        assert len(result.series) == 1
        assert [(p.name, type(p.error)) for p in result.problems] == [
            ("notes.txt", NotAnImageError),
            ("sr.dcm", NoPixelDataError),
        ]


class TestReadUploadsErrors:
    def test_text_file_is_not_an_image(self):
        with pytest.raises(NotAnImageError, match="‘report.txt’ is not a DICOM file or a JPG/PNG"):
            read_uploads([("report.txt", b"Findings: 12 mm nodule in the right upper lobe.\n")])

    def test_pdf_is_not_an_image(self):
        with pytest.raises(NotAnImageError, match="not a DICOM file"):
            read_uploads([("report.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")])

    def test_random_bytes_are_not_an_image(self):
        data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
        with pytest.raises(NotAnImageError):
            read_uploads([("blob.bin", data)])

    def test_empty_file_is_not_an_image(self):
        with pytest.raises(NotAnImageError, match="empty"):
            read_uploads([("zero.dcm", b"")])

    def test_dicom_without_pixel_data_explains_itself(self):
        with pytest.raises(NoPixelDataError) as info:
            read_uploads([("x.dcm", bundled("reportsi.dcm").read_bytes())])
        message = str(info.value)
        assert "‘x.dcm’ is DICOM but holds no pixel data" in message and "upload the image series" in message

    def test_image_header_without_pixel_data_is_truncated_not_a_report(self):
        with pytest.raises(NotAnImageError) as info:
            read_uploads([("x.dcm", make_dicom(with_pixels=False))])
        assert "truncated or damaged" in str(info.value) and "structured report" not in str(info.value)

    def test_truncated_dicom_is_not_an_image(self):
        data = make_dicom(rows=64, cols=64)
        with pytest.raises(NotAnImageError, match="truncated"):
            read_uploads([("cut.dcm", data[: len(data) - 500])])

    def test_unsupported_transfer_syntax_names_syntax(self):
        data = make_dicom(transfer_syntax=MPEG2MPML, encapsulated_junk=True)
        with pytest.raises(UnsupportedTransferSyntaxError) as info:
            read_uploads([("video.dcm", data)])
        assert info.value.transfer_syntax == "MPEG2 Main Profile / Main Level"
        assert info.value.plugin == "none available to LungReview"
        assert "MPEG2" in str(info.value) and "uncompressed" in str(info.value)

    def test_unknown_transfer_syntax_is_unsupported(self):
        data = make_dicom(transfer_syntax="1.2.3.4.5.6", encapsulated_junk=True)
        with pytest.raises(UnsupportedTransferSyntaxError, match="does not know") as info:
            read_uploads([("private.dcm", data)])
        assert info.value.transfer_syntax == "1.2.3.4.5.6"

    def test_dicom_over_pixel_limit_is_refused(self, limits):
        limits(MAX_PIXELS=100)
        with pytest.raises(ImageTooLargeError, match="16 x 16 = 256 pixels"):
            read_uploads([("big.dcm", make_dicom(rows=16, cols=16))])

    def test_mixed_slice_sizes_in_one_series(self):
        study, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        items = [
            ("a.dcm", make_dicom(study_uid=study, series_uid=series_uid, rows=8, cols=8)),
            (
                "b.dcm",
                make_dicom(study_uid=study, series_uid=series_uid, rows=16, cols=16, position=(0, 0, 1)),
            ),
        ]
        with pytest.raises(MixedSeriesError, match="mixes slice sizes"):
            read_uploads(items)

    def test_empty_zip(self):
        buf = io.BytesIO()
        zipfile.ZipFile(buf, "w").close()
        with pytest.raises(EmptyArchiveError, match="‘empty.zip’ holds no DICOM"):
            read_uploads([("empty.zip", buf.getvalue())])

    def test_zip_without_readable_file(self):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a/scan.dcm", b"not really dicom")
        with pytest.raises(EmptyArchiveError, match="first problem"):
            read_uploads([("bad.zip", buf.getvalue())])

    def test_zip_bomb_is_refused_before_unpacking(self):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            zf.writestr("slice.dcm", bytes(40 << 20))  # 40 MB of zeros deflates about 1000x
        assert len(buf.getvalue()) < 200_000
        with pytest.raises(ArchiveTooLargeError, match="zip bomb"):
            read_uploads([("bomb.zip", buf.getvalue())])

    def test_zip_over_size_limit_is_refused(self, limits):
        limits(MAX_ZIP_MB=1)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("a.dcm", os.urandom(700_000))
            zf.writestr("b.dcm", os.urandom(700_000))
        with pytest.raises(ArchiveTooLargeError, match="more than the limit of 1 MB"):
            read_uploads([("big.zip", buf.getvalue())])

    def test_zip_bomb_in_a_folder_does_not_stop_the_walk(self, tmp_path):
        with zipfile.ZipFile(tmp_path / "a_bomb.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            zf.writestr("slice.dcm", bytes(40 << 20))
        (tmp_path / "b_slice.dcm").write_bytes(make_dicom())
        result = read_paths([tmp_path])
        assert len(result.series) == 1
        assert [(p.name, type(p.error)) for p in result.problems] == [("a_bomb.zip", ArchiveTooLargeError)]

    def test_nothing_given(self):
        with pytest.raises(EmptyArchiveError):
            read_uploads([])

    def test_missing_path(self, tmp_path):
        with pytest.raises(ImagingError, match="does not exist"):
            read_paths([tmp_path / "nowhere"])


class TestReadSeries:
    def test_two_series_raise_mixed_series(self, tcia_dir):
        with pytest.raises(MixedSeriesError, match="expected one series but found 2"):
            read_series(tcia_dir / "Lung_Dx-A0002")

    def test_one_series_folder(self, tcia_files):
        folder = tcia_files[0].parent
        series = read_series(folder)
        assert len(series.slices) == 30

    def test_mixed_sizes_raise_mixed_series(self, tmp_path):
        study, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        (tmp_path / "a.dcm").write_bytes(make_dicom(study_uid=study, series_uid=series_uid, rows=8, cols=8))
        (tmp_path / "b.dcm").write_bytes(make_dicom(study_uid=study, series_uid=series_uid, rows=4, cols=4))
        with pytest.raises(MixedSeriesError):
            read_series(tmp_path)


class TestPictures:
    def test_iq_othnccd_jpg_round_trips_exactly(self, iq_dir):
        path = iq_dir / "Malignant cases" / "Malignant case (1).jpg"
        grey = np.asarray(Image.open(path).convert("L"))
        series = read_series(path)
        assert series.source_kind == "jpg" and series.hu_is_estimated
        np.testing.assert_array_equal(window_to_uint8(series.slices[0].hu, IQ_WINDOW), as_export(grey))
        assert (as_export(grey) != grey).mean() < 0.1  # only JPEG noise near black and ringing change
        assert series.windows == () and series.slices[0].sop_instance_uid is None

    def test_read_picture_from_path_and_bytes_agree(self, iq_dir):
        path = iq_dir / "Normal cases" / "Normal case (1).jpg"
        a, b = read_picture(path), read_picture(path.read_bytes(), "x.jpg")
        np.testing.assert_array_equal(a.hu, b.hu)
        assert a.source == path.name and b.source == "x.jpg"

    def test_grey_png_is_read_exactly(self):
        arr = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
        series = read_uploads([("slice.png", png_bytes(arr))]).series[0]
        assert series.source_kind == "png" and series.modality == "OT"
        np.testing.assert_array_equal(view(series.hu[0], IQ_WINDOW), as_export(arr))

    def test_rgb_jpg_is_converted_to_grey(self):
        rng = np.random.default_rng(1)
        grey = np.repeat(np.repeat(rng.integers(30, 220, (8, 8), dtype=np.uint8), 8, 0), 8, 1)
        rgb = np.stack([grey, grey, grey], axis=-1)
        data = jpg_bytes(rgb, quality=100)
        decoded = np.asarray(Image.open(io.BytesIO(data)))
        slice_ = read_picture(data, "colour.jpg")
        np.testing.assert_array_equal(view(slice_.hu, IQ_WINDOW), as_export(grey_from_picture(decoded)))
        bright = grey >= 132
        assert np.abs(view(slice_.hu, IQ_WINDOW).astype(int) - grey)[bright].max() <= 3

    def test_sixteen_bit_png_is_scaled_and_says_so(self):
        arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        series = read_uploads([("deep.png", buf.getvalue())]).series[0]
        np.testing.assert_array_equal(view(series.hu[0], IQ_WINDOW), as_export(np.rint(arr / 257).astype(np.uint8)))
        assert any("16-bit" in n for n in series.metadata["notes"])

    def test_pictures_form_one_series_in_natural_order(self, iq_dir):
        folder = iq_dir / "Bengin cases"
        names = ["Bengin case (10).jpg", "Bengin case (2).jpg", "Bengin case (1).jpg"]
        items = [(n, (folder / n).read_bytes()) for n in names]
        result = read_uploads(items)
        assert len(result.studies) == 1 and len(result.series) == 1
        assert [s.source for s in result.series[0].slices] == sorted(names, key=natural_key)
        assert [s.source for s in result.series[0].slices][:2] == [
            "Bengin case (1).jpg",
            "Bengin case (2).jpg",
        ]
        assert result.studies[0].study_key == read_uploads(items[::-1]).studies[0].study_key

    def test_zip_of_pictures_is_one_picture_series(self, iq_dir):
        folder = iq_dir / "Normal cases"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for n in (3, 1, 2):
                zf.write(folder / f"Normal case ({n}).jpg", f"patient/Normal case ({n}).jpg")
        result = read_uploads([("pictures.zip", buf.getvalue())])
        assert [s.source for s in result.series[0].slices] == [f"Normal case ({n}).jpg" for n in (1, 2, 3)]
        assert result.studies[0].source_kind == "jpg"

    def test_picture_over_pixel_limit_is_refused_before_decoding(self, limits, monkeypatch):
        limits(MAX_PIXELS=1000)
        data = png_bytes(np.zeros((64, 64), np.uint8))

        def no_decoding(self, *args, **kwargs):
            raise AssertionError("decoded a picture that is over the limit")

        monkeypatch.setattr(Image.Image, "load", no_decoding)
        from PIL import ImageFile

        monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(ImageTooLargeError, match="64 x 64 = 4,096 pixels"):
            read_uploads([("big.png", data)])

    def test_truncated_jpg_is_not_an_image(self, iq_dir):
        data = (iq_dir / "Normal cases" / "Normal case (1).jpg").read_bytes()
        with pytest.raises(NotAnImageError, match="truncated or corrupt"):
            read_uploads([("cut.jpg", data[: len(data) // 2])])

    def test_other_picture_formats_are_refused_by_name(self):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="GIF")
        with pytest.raises(NotAnImageError, match="GIF"):
            read_uploads([("x.gif", buf.getvalue())])


class TestDeidentification:
    def test_patient_values_appear_nowhere(self):
        data = make_dicom(series_description="Chest for Zyxwv")
        result = read_uploads([("p.dcm", data)])
        series = result.series[0]
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        texts = [
            json.dumps(summarize(series)),
            json.dumps(series.metadata),
            repr(series),
            repr(series.slices),
            repr(result.studies),
        ]
        secrets = [
            "Zyxwv",
            "Quentin",
            PATIENT_ID,
            BIRTH_DATE,
            ADDRESS,
            COMMENT,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
        ]
        for text in texts:
            for secret in secrets:
                assert secret not in text, f"{secret!r} leaked"
        # a series description holding the patient's name is dropped, not shown
        assert series.metadata["series_description"] is None
        assert set(series.metadata) <= set(imaging.METADATA_KEYS)

    def test_dates_are_reduced_to_years(self):
        meta = read_uploads([("p.dcm", make_dicom())]).series[0].metadata
        assert meta["study_year"] == 2019 and "20190304" not in json.dumps(meta)

    def test_sources_are_base_names_without_folders(self, tcia_result):
        assert all("/" not in s.source and "A0002" not in s.source for s in tcia_result.series[0].slices)

    def test_patient_name_constant_is_really_in_the_file(self):
        ds = pydicom.dcmread(io.BytesIO(make_dicom()), stop_before_pixels=True)
        assert str(ds.PatientName) == PATIENT_NAME


class TestSummarize:
    def test_is_json_able_and_matches_the_volume(self, tcia_result):
        series = tcia_result.series[0]
        summary = json.loads(json.dumps(summarize(series)))
        hu = series.hu
        assert summary["number_of_slices"] == 30 and summary["rows"] == summary["columns"] == 512
        assert summary["hu"]["min"] == float(hu.min()) and summary["hu"]["max"] == float(hu.max())
        assert summary["hu"]["p1"] < summary["hu"]["p99"]
        assert summary["spacing_mm"][0] == pytest.approx(8.0)
        assert summary["windows"] == [{"center": -600.0, "width": 1200.0}, {"center": 50.0, "width": 350.0}]
        assert summary["convolution_kernel"] == "B70f" and summary["manufacturer"] == "SIEMENS"


class TestCli:
    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "LUNGREVIEW_STUDY_KEY": "cli-secret", "PYTHONPATH": str(REPO_ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "core.imaging", *args],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            timeout=120,
        )

    def test_tcia_folder_prints_two_series(self, tcia_dir):
        proc = self.run(str(tcia_dir))
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert [s["number_of_slices"] for s in out["series"]] == [30, 30]
        assert all(s["modality"] == "CT" and not s["hu_is_estimated"] for s in out["series"])
        assert out["problems"] == []
        assert "Lung_Dx-A0002" not in proc.stdout and "1.3.6.1.4" not in proc.stdout

    def test_main_is_importable_from_the_package_for_the_console_script(self, tmp_path, capsys):
        from core.imaging import main

        assert main([]) == 2 and "usage" in capsys.readouterr().err
        (tmp_path / "a.dcm").write_bytes(make_dicom())
        assert main([str(tmp_path)]) == 0
        assert json.loads(capsys.readouterr().out)["series"][0]["number_of_slices"] == 1

    def test_nothing_readable_exits_2(self, tmp_path):
        note = tmp_path / "note.bin"
        note.write_bytes(b"just text")
        proc = self.run(str(note))
        assert proc.returncode == 2
        assert json.loads(proc.stdout)["problems"][0]["error"] == "NotAnImageError"
