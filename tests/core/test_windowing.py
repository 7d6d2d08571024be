import numpy as np
import pytest

from core.domain import WINDOW_PRESETS, Window, WindowPreset
from core.windowing import (
    apply_window,
    estimate_export_window,
    grey_from_picture,
    hu_from_picture,
    hu_from_uint8,
    to_uint8,
    window_to_uint8,
)


class TestApplyWindow:
    def test_dicom_linear_formula_edges_and_centre(self):
        w = Window(center=40, width=400)
        out = apply_window(np.array([-1000.0, -160.5, 39.5, 239.5, 3000.0]), w)
        # PS3.3 C.11.2.1.2.1: floor at c - 0.5 - (w-1)/2 = -160, centre c - 0.5 maps to 0.5.
        assert out[0] == 0.0 and out[1] == 0.0
        assert out[2] == pytest.approx(0.5)
        assert out[3] == pytest.approx(1.0, abs=1e-3)
        assert out[4] == 1.0
        assert out.dtype == np.float32

    def test_floor_maps_window_to_upper_range_and_below_to_black(self):
        w = Window(center=0, width=260, floor=0.5)
        out = apply_window(np.array([-500.0, -129.0, 0.0, 500.0]), w)
        assert out[0] == 0.0
        assert 0.5 <= out[1] < 0.51
        assert out[2] == pytest.approx(0.75, abs=0.01)
        assert out[3] == 1.0

    def test_width_below_one_refused(self):
        with pytest.raises(ValueError, match="at least 1 HU"):
            Window(center=0, width=0.5)


class TestHuFromUint8:
    @pytest.mark.parametrize("preset", list(WINDOW_PRESETS))
    def test_round_trip_for_every_grey_value_the_export_can_make(self, preset):
        w = WINDOW_PRESETS[preset]
        v = np.arange(256, dtype=np.uint8)
        back = window_to_uint8(hu_from_uint8(v, w), w)
        producible = (v == 0) | (v >= np.ceil(255 * w.floor))
        np.testing.assert_array_equal(back[producible], v[producible])

    def test_below_floor_is_air_like(self):
        w = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]
        assert hu_from_uint8(np.array([0, 5], np.uint8), w).max() <= -1000


class TestPictures:
    def test_rgb_uses_bt601_luma(self):
        rgb = np.zeros((2, 2, 3), np.uint8)
        rgb[..., 0] = 255
        assert grey_from_picture(rgb)[0, 0] == round(0.299 * 255)

    def test_bad_shape_refused(self):
        with pytest.raises(ValueError, match="grey"):
            grey_from_picture(np.zeros((2, 2, 2), np.uint8))

    def test_hu_from_picture_matches_uint8_path(self):
        w = WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD]
        grey = np.array([[0, 128], [200, 255]], np.uint8)
        np.testing.assert_array_equal(hu_from_picture(grey, w), hu_from_uint8(grey, w))

    def test_to_uint8_rounds_and_clips(self):
        assert to_uint8(np.array([-1.0, 0.5, 2.0])).tolist() == [0, 128, 255]


class TestEstimateExportWindow:
    def test_recovers_a_known_export_window(self):
        rng = np.random.default_rng(0)
        hu = np.concatenate([rng.normal(-850, 60, 40000), rng.normal(-100, 20, 20000),
                             rng.normal(40, 15, 30000), rng.normal(700, 200, 5000)])
        true = Window(center=40, width=400, floor=128 / 255)
        grey = window_to_uint8(hu, true)
        est, err = estimate_export_window(hu, grey)
        assert abs(est.center - 40) <= 20 and abs(est.width - 400) <= 40
        assert est.floor == pytest.approx(128 / 255, abs=0.03)
        assert err < 3

    def test_too_few_values_refused(self):
        with pytest.raises(ValueError, match="too few"):
            estimate_export_window(np.zeros(10), np.zeros(10, np.uint8))
