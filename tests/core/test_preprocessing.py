import numpy as np
import pytest
from PIL import Image

from core.domain import WINDOW_PRESETS, Window, WindowPreset
from core.preprocessing import PreprocessSpec, body_box, preprocess, preprocess_with_geometry
from core.windowing import hu_from_picture


def _jpg_hu(iq_dir, name):
    folder = {"Normal": "Normal cases", "Malignant": "Malignant cases", "Bengin": "Bengin cases"}[
        name.split()[0]
    ]
    grey = np.asarray(Image.open(iq_dir / folder / name).convert("L"))
    return hu_from_picture(grey, WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD])


def _reference_body_box(unit, threshold=0.06):
    """body_box's method as its docstring gives it, written with binary_opening and np.median."""
    from scipy import ndimage

    small = unit[::2, ::2]
    mask = ndimage.binary_opening(
        ndimage.uniform_filter(small, size=7) > threshold, np.ones((7, 1), bool)
    )
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= 0.03 * sizes.max()
    keep[0] = False
    median_row = float(np.median(np.nonzero(keep[labels])[0]))
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if keep[i] and sl[0].start > max(0.55 * small.shape[0], median_row) and h < 0.35 * w:
            keep[i] = False
    ys, xs = np.nonzero(keep[labels])
    return (
        int(ys.min()) * 2,
        min(unit.shape[0], int(ys.max()) * 2 + 2),
        int(xs.min()) * 2,
        min(unit.shape[1], int(xs.max()) * 2 + 2),
    )



def _reference_preprocess(hu, spec, spacing_mm=None):
    """The steps of core.preprocessing's module docstring written plainly (whole-slice windowing,
    the reference body box, a padded square, PIL's bilinear resize): what the optimised
    preprocess_with_geometry must equal bit for bit."""
    from scipy import ndimage

    from core.lungs import lung_mask, pixel_size_mm
    from core.windowing import apply_window

    unit = apply_window(hu, spec.window)
    lungs = lung_mask(hu, spacing_mm) if (spec.crop_to_lungs or spec.mask_outside_lungs) else None
    rows, cols = hu.shape
    y0, y1, x0, x1 = 0, rows, 0, cols
    if spec.crop_to_lungs and lungs is not None and lungs.any():
        ys, xs = np.nonzero(lungs)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        m = int(round(spec.lung_margin * max(y1 - y0, x1 - x0)))
        y0, x0, y1, x1 = y0 - m, x0 - m, y1 + m, x1 + m
    elif spec.crop_to_body or spec.crop_to_lungs:
        box = _reference_body_box(unit, spec.body_threshold)
        if box is not None:
            y0, y1, x0, x1 = box
            m = int(round(spec.margin * max(y1 - y0, x1 - x0)))
            y0, x0, y1, x1 = y0 - m, x0 - m, y1 + m, x1 + m
    h, w = y1 - y0, x1 - x0
    side = max(h, w)
    top, left = y0 - (side - h) // 2, x0 - (side - w) // 2
    canvas = np.zeros((rows + 2 * side, cols + 2 * side), np.float32)  # the slice with room all round
    canvas[side : side + rows, side : side + cols] = unit
    sq = canvas[side + top : side + top + side, side + left : side + left + side].copy()
    if spec.mask_outside_lungs and lungs is not None and lungs.any():
        keep = (ndimage.distance_transform_edt(~lungs, sampling=pixel_size_mm(spacing_mm)) <= spec.lung_dilation_mm)
        room = np.zeros_like(canvas)
        room[side : side + rows, side : side + cols] = keep
        sq *= room[side + top : side + top + side, side + left : side + left + side]
    img = Image.fromarray(sq, mode="F").resize((spec.size, spec.size), Image.Resampling.BILINEAR)
    res = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    if spec.scaling == "resnet50":
        means = np.array([103.939, 116.779, 123.68], dtype=np.float32)[: spec.channels]
        return (res * np.float32(255.0))[..., None] - means
    if spec.scaling == "mobilenet_v2":
        return np.repeat((res * np.float32(2.0) - np.float32(1.0))[..., None], spec.channels, axis=-1)
    return np.repeat(res[..., None], spec.channels, axis=-1)


class TestPreprocessSpec:
    def test_round_trips_through_card_dict(self):
        spec = PreprocessSpec(size=128, channels=3, scaling="resnet50")
        assert PreprocessSpec.from_dict(spec.to_dict()) == spec

    def test_unknown_key_refused(self):
        with pytest.raises(ValueError, match="unknown preprocessing keys"):
            PreprocessSpec.from_dict({"size": 64, "mystery": 1})

    @pytest.mark.parametrize("kw", [{"channels": 2}, {"scaling": "zscore"}, {"size": 4}])
    def test_invalid_values_refused(self, kw):
        with pytest.raises(ValueError):
            PreprocessSpec(**kw)


class TestPreprocess:
    def test_shape_dtype_and_range(self, iq_dir):
        x = preprocess(_jpg_hu(iq_dir, "Normal case (1).jpg"), PreprocessSpec(size=96))
        assert x.shape == (1, 96, 96, 1) and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9

    def test_jpg_reaches_model_with_its_own_grey_levels(self, iq_dir):
        # Round trip: the IQ-OTH window applied to the picture's estimated HU gives its grey back.
        hu = _jpg_hu(iq_dir, "Bengin case (10).jpg")
        spec = PreprocessSpec(size=512, crop_to_body=False)
        grey = np.asarray(Image.open(iq_dir / "Bengin cases" / "Bengin case (10).jpg").convert("L"))
        x = preprocess(hu, spec)[0, ..., 0]
        visible = grey >= 128
        np.testing.assert_allclose(x[visible], grey[visible] / 255.0, atol=1e-3)

    def test_canvas_size_does_not_leak(self, iq_dir):
        # The same slice on a wider canvas (as the 801x512 malignant exports) gives the same input.
        hu = _jpg_hu(iq_dir, "Normal case (1).jpg")
        floor = hu.min()
        wide = np.full((512, 801), floor, dtype=np.float32)
        wide[:, 144:656] = hu
        spec = PreprocessSpec(size=128)
        a, b = preprocess(hu, spec), preprocess(wide, spec)
        assert np.abs(a - b).mean() < 0.01

    def test_resnet50_scaling_is_caffe(self):
        hu = np.full((64, 64), 1000.0, dtype=np.float32)  # above every window: white
        x = preprocess(hu, PreprocessSpec(size=32, channels=3, scaling="resnet50", crop_to_body=False))
        np.testing.assert_allclose(x[0, 0, 0], [255 - 103.939, 255 - 116.779, 255 - 123.68], atol=1e-3)

    def test_window_override_changes_input(self, iq_dir):
        hu = _jpg_hu(iq_dir, "Normal case (1).jpg")
        spec = PreprocessSpec(size=64)
        assert not np.allclose(preprocess(hu, spec), preprocess(hu, spec, Window(-600, 1500)))

    def test_list_of_different_sizes(self):
        x = preprocess(
            [np.zeros((30, 40), np.float32), np.zeros((50, 20), np.float32)], PreprocessSpec(size=16)
        )
        assert x.shape == (2, 16, 16, 1)

    @pytest.mark.parametrize("bad", [np.zeros((3, 3, 3, 3)), np.array([[np.nan, 0.0], [0.0, 0.0]])])
    def test_bad_input_refused(self, bad):
        with pytest.raises(ValueError):
            preprocess(bad, PreprocessSpec(size=16))


class TestGeometry:
    def test_heatmap_maps_back_onto_the_crop(self, iq_dir):
        hu = _jpg_hu(iq_dir, "Malignant case (214).jpg")
        spec = PreprocessSpec(size=64)
        _, (geo,) = preprocess_with_geometry(hu, spec)
        full = geo.to_slice(np.ones((64, 64), np.float32))
        assert full.shape == hu.shape
        y0, y1 = max(0, geo.top), min(hu.shape[0], geo.top + geo.side)
        x0, x1 = max(0, geo.left), min(hu.shape[1], geo.left + geo.side)
        assert full[y0:y1, x0:x1].min() > 0.99
        assert full.sum() == pytest.approx((y1 - y0) * (x1 - x0), rel=0.01)
        assert geo.side < hu.shape[1]  # the empty canvas at the sides was cropped


class TestBodyBox:
    def test_blank_slice_has_no_box(self):
        assert body_box(np.zeros((64, 64), np.float32)) is None

    def test_box_covers_a_bright_disc(self):
        yy, xx = np.mgrid[:200, :300]
        disc = (((yy - 100) ** 2 + (xx - 150) ** 2) < 60**2).astype(np.float32)
        y0, y1, x0, x1 = body_box(disc)
        assert abs(y0 - 40) <= 8 and abs(y1 - 160) <= 8 and abs(x0 - 90) <= 8 and abs(x1 - 210) <= 8

    def test_line_opening_equals_scipy_binary_opening(self):
        # body_box opens the mask with shifted ANDs and ORs; it must equal ndimage.binary_opening
        from scipy import ndimage

        from core.preprocessing import _open_vertical_line

        rng = np.random.default_rng(7)
        for _ in range(60):
            shape = (int(rng.integers(1, 90)), int(rng.integers(1, 90)))
            mask = rng.uniform(size=shape) < rng.uniform(0.2, 0.95)
            np.testing.assert_array_equal(
                _open_vertical_line(mask), ndimage.binary_opening(mask, structure=np.ones((7, 1), bool))
            )

    def test_box_matches_the_reference_method_on_real_slices(self, iq_dir, tcia_dir):
        # reference: the method of the docstring written with binary_opening and np.median

        from core.imaging import read_paths
        from core.windowing import apply_window

        paths = [
            p
            for folder in sorted(iq_dir.iterdir())
            if folder.is_dir()
            for p in sorted(folder.glob("*.jpg"))[::20]
        ]
        study = read_paths(paths + [tcia_dir])
        window = PreprocessSpec().window
        units = [apply_window(s.hu, window) for series in study.series for s in series.slices]
        assert len(units) > 100
        for unit in units:
            assert body_box(unit) == _reference_body_box(unit)


class TestLungFields:
    """The lung-field crop and mask; cards written before these fields keep their output."""

    SHIPPED = {
        # sha256 of the float32 output for three real slices, computed before the lung fields existed
        "basic_cnn_v1": "c8e6ba38385f8486a0985b93374f145152221a8a5aa2184f3a1cb21491479788",
        "advanced_cnn_v1": "269b2910ea35d21d7fe00d8325b97aa336f456d1d23e7f0d28caf8c0364ec68d",
        "resnet50_v1": "82bda9494fcab4d05335a180f65d04e64ca2bf45cd5b8e68316a01dd7d74c3cc",
    }
    NAMES = ("Normal case (1).jpg", "Malignant case (1).jpg", "Bengin case (10).jpg")

    @pytest.mark.parametrize("model_id", sorted(SHIPPED))
    def test_shipped_cards_bit_identical(self, iq_dir, model_id):
        import hashlib
        import json

        from core.settings import REPO_ROOT

        card = json.loads((REPO_ROOT / "models" / "registry" / model_id / "card.json").read_text())
        spec = PreprocessSpec.from_dict(card["preprocessing"])
        assert not spec.crop_to_lungs and not spec.mask_outside_lungs
        x, geos = preprocess_with_geometry([_jpg_hu(iq_dir, n) for n in self.NAMES], spec)
        assert hashlib.sha256(x.tobytes()).hexdigest() == self.SHIPPED[model_id]
        assert [(g.top, g.left, g.side) for g in geos] == [(23, -9, 536), (79, 95, 318), (13, -11, 538)]

    def test_lung_crop_is_inside_the_body_crop(self, iq_dir):
        from core.lungs import lung_mask

        hu = _jpg_hu(iq_dir, "Normal case (1).jpg")
        _, (body,) = preprocess_with_geometry(hu, PreprocessSpec(size=64))
        _, (lung,) = preprocess_with_geometry(hu, PreprocessSpec(size=64, crop_to_lungs=True))
        assert lung.side < body.side
        m = lung_mask(hu)
        ys, xs = np.nonzero(m)
        assert lung.top <= ys.min() and ys.max() < lung.top + lung.side
        assert lung.left <= xs.min() and xs.max() < lung.left + lung.side

    def test_mask_outside_lungs_blanks_the_body_wall(self, iq_dir):
        hu = _jpg_hu(iq_dir, "Normal case (1).jpg")
        plain = preprocess(hu, PreprocessSpec(size=128, crop_to_lungs=True))
        masked = preprocess(hu, PreprocessSpec(size=128, crop_to_lungs=True, mask_outside_lungs=True))
        assert masked.shape == plain.shape
        assert (masked <= plain + 1e-6).all()
        assert (masked == 0).mean() > (plain == 0).mean() + 0.05

    def test_no_lungs_falls_back_to_the_body_and_leaves_pixels(self):
        hu = np.full((200, 200), -1000.0, dtype=np.float32)
        hu[50:150, 40:160] = 40.0  # a body without lungs
        spec = PreprocessSpec(size=32, crop_to_lungs=True, mask_outside_lungs=True)
        _, (geo,) = preprocess_with_geometry(hu, spec)
        _, (ref,) = preprocess_with_geometry(hu, PreprocessSpec(size=32))
        assert (geo.top, geo.left, geo.side) == (ref.top, ref.left, ref.side)
        assert preprocess(hu, spec).max() > 0.5

    def test_mobilenet_scaling_spans_minus_one_to_one(self, iq_dir):
        hu = _jpg_hu(iq_dir, "Normal case (1).jpg")
        unit = preprocess(hu, PreprocessSpec(size=64, channels=3))
        mob = preprocess(hu, PreprocessSpec(size=64, channels=3, scaling="mobilenet_v2"))
        np.testing.assert_allclose(mob, unit * 2 - 1, atol=1e-6)
        assert mob.min() >= -1 and mob.max() <= 1

    def test_negative_lung_fields_refused(self):
        with pytest.raises(ValueError, match="lung_margin"):
            PreprocessSpec(lung_margin=-0.1)


def _shipped_specs() -> dict[str, PreprocessSpec]:
    import json

    from core.settings import REPO_ROOT

    cards = {card.parent.name: json.loads(card.read_text())
             for card in sorted((REPO_ROOT / "models" / "registry").glob("*/card.json"))}
    # slice classifiers only: the nodule detector's card has a volume spec and no slice preprocessing
    return {name: PreprocessSpec.from_dict(c["preprocessing"]) for name, c in cards.items()
            if c.get("kind", "slice_classifier") == "slice_classifier"}


@pytest.fixture(scope="module")
def shared_slices():
    """Every slice of the shared TCIA study and every 20th IQ-OTH/NCCD picture, as (hu, spacing_mm);
    the tests using it are skipped when the shared data is absent."""
    from core.imaging import read_paths
    from tests.conftest import SHARED_DATASETS

    tcia, iq = SHARED_DATASETS / "lung-pet-ct-dx", SHARED_DATASETS / "iq-othnccd"
    if not tcia.is_dir() or not iq.is_dir():
        pytest.skip(f"shared datasets not found under {SHARED_DATASETS}")
    paths = [p for folder in sorted(iq.iterdir()) if folder.is_dir() for p in sorted(folder.glob("*.jpg"))[::20]]
    study = read_paths(paths + [tcia])
    return [(s.hu, series.spacing_mm) for series in study.series for s in series.slices]


class TestSharedSliceParity:
    """The optimised preprocessing (issue 24) gives every shipped model the input the plain method of
    the module docstring gives, bit for bit, on every shared slice: so every model's probabilities
    and labels are exactly those of before (no tolerance needed)."""

    @pytest.mark.parametrize("model_id", sorted(_shipped_specs()))
    def test_every_shipped_model_gets_the_plain_method_s_input(self, shared_slices, model_id):
        spec = _shipped_specs()[model_id]
        assert len(shared_slices) > 100
        lungs = spec.crop_to_lungs or spec.mask_outside_lungs  # the lung mask is slow: every 3rd slice
        for hu, spacing in shared_slices[:: 3 if lungs else 1]:
            fast = preprocess(hu, spec, spacing_mm=spacing)[0]
            np.testing.assert_array_equal(fast, _reference_preprocess(hu, spec, spacing))
