"""Lung-field masks on real slices of the shared collections (LIDC-IDRI, Lung-PET-CT-Dx, IQ-OTH/NCCD)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from core.annotations import lesion_masks, lidc_suspicious, read_lidc_xml, read_voc_folder
from core.imaging import read_series
from core.lungs import count_lungs, is_clamped_export, lung_mask, lung_mask_series, lung_outline_rgba
from core.settings import REPO_ROOT

DATASETS = REPO_ROOT.parent / "shared" / "datasets"
LIDC2 = next(iter(sorted((DATASETS / "lidc-idri").glob("LIDC-IDRI-0002/*/*/*.xml"))), None)
PETCT = DATASETS / "lung-pet-ct-dx"
IQ = DATASETS / "iq-othnccd"

needs_lidc = pytest.mark.skipif(LIDC2 is None, reason="shared LIDC-IDRI copy not present")
needs_petct = pytest.mark.skipif(not PETCT.is_dir(), reason="shared Lung-PET-CT-Dx copy not present")
needs_iq = pytest.mark.skipif(not IQ.is_dir(), reason="shared IQ-OTH/NCCD copy not present")


def _files_for(folder: Path, uids: set[str]) -> list[Path]:
    out = []
    for f in sorted(folder.glob("*.dcm")):
        if (
            pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
            in uids
        ):
            out.append(f)
    return out


@pytest.fixture(scope="module")
def lidc_nodule_slices():
    """Four LIDC-IDRI-0002 slices through its large nodule, with the readers' outlines."""
    nods = lidc_suspicious(read_lidc_xml(LIDC2))
    uids = sorted({u for n in nods for u in n.slice_uids})
    files = _files_for(LIDC2.parent, set(uids))
    series = read_series(files[:: max(1, len(files) // 4)][:4])
    slice_uids = [s.sop_instance_uid for s in series.slices]
    lesion = lesion_masks(slice_uids, series.slices[0].shape, nodules=nods)
    return series, lesion


@needs_lidc
def test_lidc_mask_shape_dtype_and_nodule_inside(lidc_nodule_slices):
    series, lesion = lidc_nodule_slices
    vol = series.hu
    masks = [lung_mask(v, series.spacing_mm) for v in vol]
    for m, v in zip(masks, vol, strict=True):
        assert m.shape == v.shape and m.dtype == bool
        assert 0.05 < m.mean() < 0.6
    inside = sum(int((m & les).sum()) for m, les in zip(masks, lesion, strict=True)) / lesion.sum()
    assert inside >= 0.9
    assert max(count_lungs(m) for m in masks) == 2
    m3 = lung_mask_series(vol, series.spacing_mm)
    assert m3.shape == vol.shape and m3.dtype == bool
    assert (m3 & lesion).sum() / lesion.sum() >= 0.9


@needs_petct
def test_lung_pet_ct_two_lungs_and_tumour_centre_touches_mask():
    boxes = read_voc_folder(PETCT / "Annotation" / "A0002")
    folder = next(p for p in sorted(PETCT.glob("Lung_Dx-A0002/*/*")) if "B40f" in p.name)
    files = _files_for(folder, set(boxes))[:2]
    series = read_series(files)
    lesion = lesion_masks([s.sop_instance_uid for s in series.slices], series.slices[0].shape, boxes=boxes)
    for s, les in zip(series.slices, lesion, strict=True):
        m = lung_mask(s.hu, series.spacing_mm)
        assert count_lungs(m) == 2
        # the box reaches into the lung on every tumour slice
        assert (m & les).sum() > 0.1 * les.sum()


@needs_iq
def test_iq_othnccd_export_gives_a_lung_mask():
    from models.data import load_hu

    (hu,) = load_hu(IQ, ["Normal cases/Normal case (372).jpg"])
    assert is_clamped_export(hu)
    m = lung_mask(hu)
    assert m.shape == hu.shape and m.dtype == bool
    assert count_lungs(m) >= 1
    assert 0.03 < m.mean() < 0.5


@pytest.mark.parametrize(
    "hu",
    [
        np.full((512, 512), -1000.0, dtype=np.float32),  # all air
        np.zeros((512, 512), dtype=np.float32),  # all water
        np.full((64, 64), 40.0),
        np.linspace(-1000, 1000, 512 * 512).reshape(512, 512),  # a ramp, not a CT
        np.random.default_rng(0).uniform(-1000, 1000, (256, 256)),  # noise, not a CT
        np.zeros((2, 2)),
    ],
)
def test_blank_or_non_ct_gives_an_empty_mask(hu):
    m = lung_mask(hu)
    assert m.shape == hu.shape and m.dtype == bool
    assert not m.any()


def test_nan_counts_as_tissue_and_bad_shapes_are_refused():
    hu = np.full((100, 100), np.nan)
    assert not lung_mask(hu).any()
    with pytest.raises(ValueError, match=r"\(y, x\)"):
        lung_mask(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        lung_mask_series(np.zeros((4, 5)))
    assert not lung_mask_series(np.zeros((3, 64, 64))).any()


def test_synthetic_phantom_two_lungs_with_a_juxta_pleural_nodule():
    yy, xx = np.mgrid[:256, :256]
    hu = np.full((256, 256), -1000.0)
    hu[((yy - 128) / 100) ** 2 + ((xx - 128) / 120) ** 2 < 1] = 40.0  # body
    left = ((yy - 128) / 60) ** 2 + ((xx - 75) / 35) ** 2 < 1
    right = ((yy - 128) / 60) ** 2 + ((xx - 181) / 35) ** 2 < 1
    hu[left | right] = -850.0
    nodule = (yy - 128) ** 2 + (xx - 41) ** 2 < 4**2  # 8 mm, on the left lung's outer wall
    hu[nodule] = 30.0
    m = lung_mask(hu, spacing_mm=(1.0, 1.0))
    assert count_lungs(m) == 2
    assert m[nodule & (xx > 41)].mean() >= 0.95
    assert not m[nodule & (xx < 40)].any()  # the half indenting the lung is put back


def test_outline_rgba():
    m = np.zeros((20, 20), dtype=bool)
    m[5:15, 5:15] = True
    rgba = lung_outline_rgba(m, color=(1, 2, 3), alpha=100)
    assert rgba.shape == (20, 20, 4) and rgba.dtype == np.uint8
    edge = rgba[..., 3] > 0
    assert edge.sum() == 36 and edge[5, 5] and not edge[10, 10] and not edge[0, 0]
    assert tuple(rgba[5, 5]) == (1, 2, 3, 100)
    assert not lung_outline_rgba(np.zeros((4, 4), bool)).any()
    with pytest.raises(ValueError):
        lung_outline_rgba(m, width=0)
