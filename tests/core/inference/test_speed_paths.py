"""The fast paths of the inference path give what the slower general code gives.

- DICOM: native pixel data read with NumPy equals ``ds.pixel_array``; the float32 rescale equals
  ``apply_modality_lut`` cast to float32;
- preprocessing: the in-place windowing equals ``apply_window`` bit for bit;
- OOD: skipping the percentile never changes a verdict;
- Grad-CAM with the backbone in OpenVINO agrees with TensorFlow.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut

from core.domain import WINDOW_PRESETS, Window, WindowPreset
from core.imaging import dicom as D
from core.inference.ood import MIN_HU_SPREAD, _spread_surely_wide, hu_slice_reasons
from core.preprocessing import _window_into
from core.windowing import apply_window


def _dataset(raw: bytes, rows, cols, frames, bits, stored, signed, tsyntax, photometric="MONOCHROME2"):
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = tsyntax
    meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = raw
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=tsyntax == pydicom.uid.ImplicitVRLittleEndian)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize(
    "bits,stored,signed",
    [(16, 16, True), (16, 12, False), (16, 12, True), (16, 16, False), (8, 8, False), (8, 6, True),
     (32, 32, True), (32, 20, False), (32, 24, True)],
)
@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("tsyntax", [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian])
def test_native_pixels_equal_pydicom(bits, stored, signed, frames, tsyntax):
    rng = np.random.default_rng(bits * 100 + stored + frames)
    rows, cols = 6, 10
    # every bit random, the unused high bits too: pydicom clears or sign-fills them
    raw = rng.integers(0, 256, rows * cols * frames * bits // 8, dtype=np.uint8).tobytes()
    ds = _dataset(raw, rows, cols, frames, bits, stored, signed, tsyntax)
    ours = D._native_pixels(ds, D._transfer_syntax(ds), rows, cols, frames)
    theirs = ds.pixel_array
    assert ours is not None and ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def test_native_pixels_leave_other_kinds_to_pydicom():
    raw = bytes(6 * 10 * 2)
    big = _dataset(raw, 6, 10, 1, 16, 16, True, pydicom.uid.ExplicitVRLittleEndian)
    big.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    assert D._native_pixels(big, D._transfer_syntax(big), 6, 10, 1) is None
    rgb = _dataset(raw, 6, 10, 1, 16, 16, True, pydicom.uid.ExplicitVRLittleEndian, photometric="PALETTE COLOR")
    assert D._native_pixels(rgb, D._transfer_syntax(rgb), 6, 10, 1) is None
    short = _dataset(raw[:-2], 6, 10, 1, 16, 16, True, pydicom.uid.ExplicitVRLittleEndian)
    assert D._native_pixels(short, D._transfer_syntax(short), 6, 10, 1) is None


@pytest.mark.parametrize(
    "slope,intercept,fast",
    [(1.0, -1024.0, True), (1.0, 0.0, True), (1.0, -32768.0, True), (1.0, -1024.5, False),
     (2.5, -1024.0, False), (0.001, 0.0, False), (None, None, True)],
)
@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8])
def test_rescale_float32_equals_pydicom(slope, intercept, fast, dtype):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    arr = rng.integers(info.min, info.max, (16, 16), endpoint=True).astype(dtype)
    ds = Dataset()
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    got = D._rescale_float32(arr, ds)
    assert (got is not None) == fast
    expected = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    out = D._modality_lut(arr, ds, None)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)  # bit for bit, fast path or not


def test_real_tcia_file_decodes_as_pydicom_does(tcia_dir):
    from core.imaging.limits import PixelBudget

    path = sorted(tcia_dir.rglob("*.dcm"))[0]
    data = path.read_bytes()
    inst = D.read_dicom(path.name, data, "x", PixelBudget())
    ds = pydicom.dcmread(io.BytesIO(data))
    expected = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
    np.testing.assert_array_equal(inst.slices[0].hu, expected)


def test_header_bound_is_the_first_pixel_tag():
    tags = D._PIXEL_TAGS
    data = b"x" * 50 + tags[3] + b"y" * 20 + tags[0] + b"z" * 10 + tags[1]
    assert D._header_bytes_before_parsing(data) == 50
    assert D._header_bytes_before_parsing(b"abc" * 100) == 300
    assert D._header_bytes_before_parsing(tags[2] + b"...") == 0


@pytest.mark.parametrize(
    "window",
    [WINDOW_PRESETS[WindowPreset.IQ_OTHNCCD], WINDOW_PRESETS[WindowPreset.MEDIASTINUM],
     WINDOW_PRESETS[WindowPreset.LUNG], Window(center=10.0, width=1.0), Window(center=-3.3, width=2.0, floor=0.2)],
)
def test_window_into_is_apply_window_bit_for_bit(window):
    rng = np.random.default_rng(3)
    hu = rng.uniform(-1200, 1500, (64, 80)).astype(np.float32)
    hu[:4] = np.float32(window.center - 0.5 - (window.width - 1) / 2)  # the lower edge itself
    big = np.full((70, 90), 7.0, np.float32)
    _window_into(hu, window, big[3:67, 5:85])  # into a strided view, as preprocessing does
    assert big[3:67, 5:85].tobytes() == apply_window(hu, window).tobytes()
    assert (big[:3] == 7.0).all() and (big[:, :5] == 7.0).all()


def _reference_reasons(hu):
    """hu_slice_reasons as it was, with np.percentile always computed."""
    from core.inference.ood import _BODY_WINDOW, MIN_AIR_FRACTION, MIN_SOFT_FRACTION, _half
    from core.preprocessing import body_box

    a = _half(np.asarray(hu, dtype=np.float32))
    lo, hi = np.percentile(a, [1, 99])
    if hi - lo < MIN_HU_SPREAD:
        return [f"blank or near-constant image (HU spread {hi - lo:.0f} < {MIN_HU_SPREAD:.0f})"]
    reasons = []
    air = float((a < -500).mean())
    if air < MIN_AIR_FRACTION:
        reasons.append(f"no air or lung in the image ({air:.1%} of pixels below -500 HU)")
    soft = float(((a >= -200) & (a <= 300)).mean())
    if soft < MIN_SOFT_FRACTION:
        reasons.append(f"no soft tissue in the image ({soft:.1%} of pixels in -200..300 HU)")
    if body_box(apply_window(a, _BODY_WINDOW)) is None:
        reasons.append("no body found in the image")
    return reasons


def test_percentile_shortcut_never_changes_a_verdict(tcia_dir):
    from core.imaging import read_paths

    rng = np.random.default_rng(11)
    cases = [s.hu for series in read_paths([tcia_dir]).series for s in series.slices[::6]]
    for n in (100, 101, 199, 257, 1000, 4096):
        for frac in (0.0, 0.005, 0.01, 0.011, 0.02, 0.03, 0.5, 0.99, 1.0):
            a = np.full(n, 40.0, np.float32)
            k = int(round(frac * n))
            a[:k] = -1000.0
            cases.append(rng.permutation(a).reshape(1, n))
            b = np.full(n, -1000.0, np.float32)
            b[:k] = 40.0
            cases.append(rng.permutation(b).reshape(1, n))
    cases += [np.full((300, 300), -1000.0, np.float32), rng.normal(0, 30, (300, 300)).astype(np.float32)]
    for hu in cases:
        assert hu_slice_reasons(hu) == _reference_reasons(hu)
        a = hu.ravel()
        if _spread_surely_wide(a.size, int((a < -500).sum()), int((a >= -200).sum())):
            lo, hi = np.percentile(a, [1, 99])
            assert hi - lo >= MIN_HU_SPREAD


def test_gradcam_backbone_in_openvino_agrees_with_tensorflow(tmp_path, tcia_dir, isolated_settings):
    pytest.importorskip("openvino")
    from core.imaging import read_paths
    from core.inference import Predictor
    from core.registry import load_model
    from tests.factories.registry import make_registry

    loaded = load_model("tiny_basic", make_registry(tmp_path))
    ov = Predictor(loaded, runtime="openvino")
    tf_pred = Predictor(loaded, runtime="tensorflow")
    assert ov.gradcam._body_runner is not None and tf_pred.gradcam._body_runner is None
    hu = [s.hu for s in read_paths([tcia_dir]).series[0].slices[:3]]
    x, _ = ov.preprocess(hu)
    p_ov, c_ov = ov.gradcam(x)
    p_tf, c_tf = tf_pred.gradcam(x)
    np.testing.assert_allclose(p_ov, p_tf, atol=1e-4)
    np.testing.assert_allclose(c_ov, c_tf, atol=1e-4 * max(1.0, float(np.abs(c_tf).max())))
    np.testing.assert_allclose(p_ov, tf_pred.predict(x), atol=1e-4)
