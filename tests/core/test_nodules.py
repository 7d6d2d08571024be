"""core.nodules: volume checks, geometry, resampling, network input, the detector, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
from scipy import ndimage

from core.imaging import Series, Slice, read_series
from core.nodules import NotAVolumeError, detect_nodules
from core.nodules import detector as det_mod
from core.nodules.types import Nodule
from core.nodules.volume import (
    LUNA16_SPEC,
    Geometry,
    VolumeSpec,
    check_volume,
    cube_batch,
    geometry_of,
    lung_distance_mm,
    network_input,
    resample,
)

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _series(n=24, step=1.0, kind="dicom", modality="CT", spacing=(0.7, 0.7), orientation=AXIAL, positions=None,
            shape=(8, 8), estimated=False):
    pos = list(positions) if positions is not None else [i * step for i in range(n)]
    slices = [
        Slice(hu=np.full(shape, -800.0, np.float32), source=f"{i}.dcm", position_mm=p,
              image_position_mm=(-100.0, -120.0, p))
        for i, p in enumerate(pos)
    ]
    z = float(np.median(np.diff(pos))) if len(pos) > 1 and None not in pos else None
    return Series(
        study_key="ab" * 8, series_key="cd" * 8, modality=modality, source_kind=kind, slices=slices,
        spacing_mm=(z, *spacing), metadata={"image_orientation_patient": orientation}, hu_is_estimated=estimated,
    )


class TestCheckVolume:
    def test_a_thin_slice_ct_volume_passes_without_warning(self):
        assert check_volume(_series(step=1.25)) == []

    def test_thick_slices_up_to_10_mm_pass_with_a_warning(self):
        warnings = check_volume(_series(step=8.0))
        assert len(warnings) == 1 and "8.0 mm apart" in warnings[0]

    @pytest.mark.parametrize(
        ("kwargs", "says"),
        [
            (dict(kind="jpg", modality="OT", estimated=True), "JPG pictures"),
            (dict(modality="MR"), "this series is MR"),
            (dict(n=5), "has 5"),
            (dict(spacing=(None, None)), "pixel spacing"),
            (dict(step=12.0), "12.0 mm apart"),
            (dict(positions=[0, 1, 2, 3, 5, 6] + list(range(7, 25))), "regular slice spacing"),
            (dict(positions=[0, 0] + list(range(1, 23))), "repeats positions"),
            (dict(orientation=[1, 0, 0, 0, 0, -1]), "axial"),  # coronal: a localiser or reformat
            (dict(positions=[None] * 24), "slice positions"),
        ],
    )
    def test_what_is_not_a_ct_volume_is_refused_with_a_reason(self, kwargs, says):
        with pytest.raises(NotAVolumeError, match=says) as info:
            check_volume(_series(**kwargs))
        assert "slice classifiers still run" in str(info.value)

    def test_detect_refuses_before_loading_any_model(self):
        with pytest.raises(NotAVolumeError):
            detect_nodules(_series(n=3), model=None)


class TestGeometry:
    def test_patient_coordinates_follow_position_and_orientation(self):
        # an oblique in-plane orientation: rows along (0.6, 0.8, 0), columns along (-0.8, 0.6, 0)
        s = _series(n=24, step=2.0, spacing=(0.5, 0.25), orientation=[0.6, 0.8, 0.0, -0.8, 0.6, 0.0])
        g = geometry_of(s)
        x, y, z = g.voxel_to_patient((3, 10, 20))
        # P = IPP + col * dx * row_cosines + row * dy * column_cosines (PS3.3 C.7.6.2.1.1)
        expect = np.array([-100.0, -120.0, 6.0]) + 20 * 0.25 * np.array([0.6, 0.8, 0]) + 10 * 0.5 * np.array([-0.8, 0.6, 0])
        np.testing.assert_allclose((x, y, z), expect)
        np.testing.assert_allclose(g.voxel_to_patient((2.5, 0, 0)), (-100.0, -120.0, 5.0))  # between slices

    def test_unknown_position_gives_none(self):
        s = _series()
        for sl in s.slices:
            sl.image_position_mm = None
        assert geometry_of(s).voxel_to_patient((0, 0, 0)) is None

    def test_shared_series_keeps_image_position(self, datasets_dir):
        import pydicom

        folder = next(datasets_dir.glob("lidc-idri/LIDC-IDRI-0001/*/*"))
        s = read_series(folder)
        first = min(folder.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True)
                                                              .ImagePositionPatient[2]))
        ds = pydicom.dcmread(first, stop_before_pixels=True)
        assert s.slices[0].image_position_mm == tuple(float(v) for v in ds.ImagePositionPatient)
        assert geometry_of(s).voxel_to_patient((0, 0, 0)) == s.slices[0].image_position_mm


class TestStoreRoundTrip:
    def test_image_position_survives_the_store_and_old_files_still_read(self, tmp_path):
        from core.store import SeriesStore

        store = SeriesStore(tmp_path, 10 * 2**20)
        s = _series(n=3)
        key = store.put(s, "ef" * 8)
        back = store.get(key)
        assert [sl.image_position_mm for sl in back.slices] == [sl.image_position_mm for sl in s.slices]
        # a file written before the field existed: drop it from the stored metadata
        path = store.path(key)
        with h5py.File(path, "r+") as h5:
            meta = json.loads(h5.attrs["meta"])
            for sl in meta["slices"]:
                sl.pop("image_position_mm")
            h5.attrs["meta"] = json.dumps(meta)
        old = store.get(key)
        assert all(sl.image_position_mm is None for sl in old.slices)


class TestResample:
    def test_trilinear_on_real_positions_equals_map_coordinates(self):
        rng = np.random.default_rng(0)
        vol = rng.random((12, 20, 24)).astype(np.float32)
        pos = np.r_[0.0, np.cumsum(np.full(11, 2.5))]
        g = Geometry(pos, (0.7, 0.8), None, None, None)
        out, origin = resample(vol, g, 1.0)
        nz, ny, nx = out.shape
        assert (nz, ny, nx) == (28, 14, 19) and not origin.any()
        zz, yy, xx = np.meshgrid(g.z_index(np.arange(nz)), np.arange(ny) / 0.7, np.arange(nx) / 0.8, indexing="ij")
        ref = ndimage.map_coordinates(vol, [zz, yy, xx], order=1, mode="nearest")
        np.testing.assert_allclose(out, ref, atol=1e-5)
        nearest, _ = resample(vol > 0.5, g, 1.0, order=0)
        assert nearest.dtype == bool and nearest.shape == out.shape

    def test_mismatched_input_is_refused(self):
        g = Geometry(np.arange(3.0), (1.0, 1.0), None, None, None)
        with pytest.raises(ValueError, match="3 2-D slices"):
            resample(np.zeros((4, 5, 5)), g)


class TestNetworkInput:
    def test_scaling_and_axis_order(self):
        hu = np.zeros((2, 3, 4), np.float32)
        hu[1, 2, 3] = 400.0
        hu[0, 0, 0] = -2000.0
        x = network_input(hu)
        assert x.shape == (4, 3, 2, 1)  # (x, y, z, channel)
        assert x[3, 2, 1, 0] == 1.0 and x[0, 0, 0, 0] == 0.0
        assert x[1, 1, 1, 0] == pytest.approx(1000 / 1400)

    def test_cubes_are_centred_and_padded_with_air(self):
        vol = np.arange(70 * 70 * 70, dtype=np.float32).reshape(70, 70, 70) - 1000
        spec = VolumeSpec(cube=16)
        cube = cube_batch(vol, [(2, 35, 60)], spec)[0, ..., 0]  # (x, y, z)
        assert cube.shape == (16, 16, 16)
        hu = cube * 1400 - 1000
        assert hu[8, 8, 8] == pytest.approx(min(vol[2, 35, 60], 400.0), abs=1e-3)
        assert (cube[:, :, :6] == 0).all()  # z < 0: air

    def test_spec_round_trip_and_validation(self):
        assert VolumeSpec.from_dict(LUNA16_SPEC.to_dict()) == LUNA16_SPEC
        with pytest.raises(ValueError, match="unknown"):
            VolumeSpec.from_dict({"voxel_mm": 1.0, "colour": 1})
        with pytest.raises(ValueError, match="multiple of 16"):
            VolumeSpec(cube=40)


def test_lung_distance_is_euclidean_in_mm():
    m = np.zeros((41, 41, 41), bool)
    m[20, 20, 20] = True
    d = lung_distance_mm(m, 2.0)
    assert d[20, 20, 20] == 0 and d[20, 20, 23] == pytest.approx(6.0) and d[23, 24, 20] == pytest.approx(10.0)
    assert np.isinf(lung_distance_mm(np.zeros((3, 3, 3), bool), 1.0)).all()


class TestGroupingAndSuppression:
    def _det(self, c, p, source="blob", pe=None, d=8.0, away=0.0):
        return det_mod.Detection(centre_iso=c, source=source, sigma_mm=2.0, p_cube=p, p_fp=0.0, p_tissue=0.0,
                                 diameter_mm=d, malignancy=3.0, lobulation=1.0, spiculation=1.0, p_erased=pe,
                                 lung_distance_mm=away)

    def test_groups_link_within_the_distance(self):
        pts = np.array([[0, 0, 0], [20, 0, 0], [40, 0, 0], [100, 0, 0]], dtype=float)
        groups = det_mod._groups(pts, 24.0)
        assert sorted(map(sorted, groups)) == [[0, 1, 2], [3]]

    def test_entry_sits_at_the_blob_carrying_the_evidence_else_at_the_centroid(self):
        cfg = det_mod.DetectorConfig()
        centre = self._det((10, 10, 10), 0.8, source="centroid")
        carrier = self._det((12, 10, 10), 0.9, pe=0.1)
        bystander = self._det((25, 10, 10), 0.99, pe=0.98)
        entry = det_mod._entry([carrier, bystander], centre, cfg, 1.0)
        assert entry.centre_iso == (12, 10, 10) and entry.p_cube == 0.99
        entry = det_mod._entry([bystander], centre, cfg, 1.0)
        assert entry.centre_iso == (10, 10, 10) and entry.source == "centroid"

    def test_suppression_merges_within_the_radius(self):
        a, b, c = self._det((0, 0, 0), 0.4, d=20.0), self._det((8, 0, 0), 0.3), self._det((30, 0, 0), 0.2)
        assert det_mod._suppress([b, c, a], 6.0, 1.0) == [a, c]
        assert det_mod._suppress([b, c], 6.0, 1.0, kept=[a], avoid_mm=24.0) == [c]


class TestFalsePositiveRule:
    def _scan(self, dets):
        row = np.array([[8.0, 0.2, 0.2, 0.6, 0.9, 0.05, 0.05]], dtype=np.float32)  # d, lob, spic, mal, classes
        fake = det_mod.LoadedDetector(card=None, model=None, spec=LUNA16_SPEC, run=lambda x: np.repeat(row, len(x), 0))
        return det_mod.Scan(dets, Geometry(np.arange(120.0), (1.0, 1.0), None, None, None), np.zeros(3),
                            np.full((120, 120, 120), -800, np.float32), fake, {}, np.zeros((60, 60, 60)), 2)

    def _det(self, c, d, away, p_fp=0.0):
        return det_mod.Detection(centre_iso=c, source="blob", sigma_mm=2.0, p_cube=0.9, p_fp=p_fp, p_tissue=0.0,
                                 diameter_mm=d, malignancy=3.0, lobulation=1.0, spiculation=1.0, p_erased=0.1,
                                 lung_distance_mm=away)

    def test_the_rule_keeps_what_touches_the_lungs_and_drops_the_rest(self):
        inside = self._det((10, 10, 10), 8.0, 0.0)
        wall = self._det((10, 10, 60), 4.0, 8.0)  # 8 mm outside, radius 2 mm: chest wall
        mass = self._det((10, 60, 60), 24.0, 8.0)  # 8 mm outside, radius 12 mm: bulges out of the lung
        fp_class = self._det((60, 60, 60), 8.0, 0.0, p_fp=0.95)
        tiny = self._det((100, 100, 100), 2.0, 0.0)
        dets = [inside, wall, mass, fp_class, tiny]
        kept = det_mod.select_nodules(self._scan(dets))
        assert sorted(n.centre_voxel for n in kept) == [(10, 10, 10), (10, 60, 60)]
        off = det_mod.select_nodules(self._scan(dets), det_mod.DetectorConfig(fp_rule=False))
        assert len(off) == 5


@pytest.fixture(scope="module")
def lidc_0001(datasets_dir):
    from models.evaluation.froc import lidc_reference

    xml = next(datasets_dir.glob("lidc-idri/LIDC-IDRI-0001/*/*/*.xml"))
    series = read_series(xml.parent)
    detector = det_mod.load_detector(runtime="tensorflow")
    stats: dict = {}
    nodules = detect_nodules(series, detector, stats=stats)
    return series, nodules, stats, lidc_reference(series, xml, "0001")


class TestDetectOnSharedLidc:
    """One full run on the shared LIDC-IDRI-0001 series (most probably in the network's training data)."""

    def test_the_top_entry_is_the_readers_nodule(self, lidc_0001):
        series, nodules, _, lesions = lidc_0001
        top, nodule = nodules[0], lesions[0]
        assert nodule.readers == 4
        centre = np.array(top.centre_mm)
        assert np.linalg.norm(centre - np.array(nodule.centre_mm)) <= nodule.diameter_mm / 2
        assert top.p_nodule > 0.9 and 20 < top.diameter_mm < 40 and top.malignancy >= 4

    def test_the_list_keeps_the_contract(self, lidc_0001):
        series, nodules, stats, _ = lidc_0001
        assert [n.rank for n in nodules] == list(range(1, len(nodules) + 1))
        assert [n.p_nodule for n in nodules] == sorted((n.p_nodule for n in nodules), reverse=True)
        assert all(n.p_nodule >= det_mod.DetectorConfig().min_score for n in nodules)
        for n in nodules:
            assert isinstance(n, Nodule) and n.slice_index == n.centre_voxel[0] < len(series.slices)
            assert 1 <= n.malignancy <= 5 and n.is_mass == (n.diameter_mm > 30)
            # the centre in patient mm is the centre voxel's position
            assert np.allclose(geometry_of(series).voxel_to_patient(n.centre_voxel), n.centre_mm, atol=1.0)
        assert stats["warnings"] == [] and stats["cubes"] > 0
        assert all(k in stats for k in ("resample_s", "mask_s", "candidates_s", "network_s", "suppression_s"))

    def test_one_nodule_gives_one_entry(self, lidc_0001):
        _, nodules, _, lesions = lidc_0001
        on = [n for n in nodules if np.linalg.norm(np.array(n.centre_mm) - lesions[0].centre_mm) < 30]
        assert len(on) == 1

    def test_without_the_rule_more_entries_come_back(self, lidc_0001):
        _, nodules, stats, _ = lidc_0001
        assert stats["after_rule"] < stats["before_rule"]


class TestCli:
    def _fake(self, monkeypatch, nodules):
        class FakeDetector:
            runtime = "tensorflow"

        monkeypatch.setattr(det_mod, "load_detector", lambda *a, **k: FakeDetector())
        monkeypatch.setattr(det_mod, "detect_nodules",
                            lambda series, det, cfg, stats: stats.update(warnings=["thick"]) or nodules)

    def test_json_prints_only_the_list(self, monkeypatch, capsys, tmp_path, datasets_dir):
        from core.nodules.__main__ import JSON_KEYS, run

        folder = next(datasets_dir.glob("lidc-idri/LIDC-IDRI-0002/*/*"))
        nod = Nodule(rank=1, centre_voxel=(50, 300, 310), centre_mm=(10.0, 20.0, -100.0), diameter_mm=12.0,
                     p_nodule=0.9, malignancy=3.5, lobulation=1.0, spiculation=2.0, slice_index=50)
        self._fake(monkeypatch, [nod, replace(nod, rank=2, diameter_mm=40.0, is_mass=True, p_nodule=0.6)])
        sheet = tmp_path / "sheet.png"
        assert run([str(folder), "--json", "--out", str(sheet)]) == 0
        out, err = capsys.readouterr()
        rows = json.loads(out)
        assert [tuple(r) for r in rows] == [JSON_KEYS, JSON_KEYS]
        assert rows[0]["centre_mm"] == [10.0, 20.0, -100.0] and rows[1]["is_mass"] is True
        assert "warning: thick" in err
        from PIL import Image

        assert Image.open(sheet).size == (2 * 256, 256 + 34)

    def test_wrong_input_exits_2_with_a_message(self, capsys, tmp_path, iq_dir):
        from core.nodules.__main__ import run

        assert run([str(tmp_path / "missing")]) == 2
        assert "no such file" in capsys.readouterr().err
        jpg = next(iq_dir.glob("*/*.jpg"))
        assert run([str(jpg)]) == 2
        assert "CT volume" in capsys.readouterr().err
        assert run([str(jpg), "--min-score", "2"]) == 2
