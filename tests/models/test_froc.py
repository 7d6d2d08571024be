"""models.evaluation.froc: reference lesions, the hit rule, FROC and CPM."""

from __future__ import annotations

import numpy as np
import pytest

from core.annotations import read_voc_folder
from core.imaging import read_series
from core.nodules.types import Nodule
from core.nodules.volume import Geometry
from models.evaluation import froc


def _nod(rank, zyx, p, d=10.0):
    return Nodule(rank=rank, centre_voxel=zyx, centre_mm=(0.0, 0.0, 0.0), diameter_mm=d, p_nodule=p,
                  malignancy=3.0, lobulation=1.0, spiculation=1.0, slice_index=zyx[0])


GEOM = Geometry(np.arange(50, dtype=float), (1.0, 1.0), None, None, None)  # 1 mm voxels


class TestHits:
    def test_luna16_radius_rule(self):
        les = froc.Lesion("s#1", (20.0, 50.0, 50.0), None, diameter_mm=10.0)
        assert froc.hits(_nod(1, (20, 50, 54), 0.9), les, GEOM)
        assert froc.hits(_nod(1, (23, 54, 50), 0.9), les, GEOM)  # 5.0 mm: on the radius
        assert not froc.hits(_nod(1, (20, 50, 56), 0.9), les, GEOM)

    def test_box_rule_needs_a_boxed_slice_and_the_box(self):
        les = froc.Lesion("s#1", (11.0, 50.0, 50.0), None, 30.0, boxes={10: (40, 40, 60, 60), 11: (38, 38, 62, 62)})
        assert froc.hits(_nod(1, (11, 61, 39), 0.9), les, GEOM)
        assert not froc.hits(_nod(1, (10, 61, 39), 0.9), les, GEOM)  # outside slice 10's box
        assert not froc.hits(_nod(1, (12, 50, 50), 0.9), les, GEOM)  # unboxed slice


class TestFroc:
    def _scans(self):
        a = froc.Lesion("a#1", (10.0, 10.0, 10.0), None, 10.0)
        b = froc.Lesion("b#1", (10.0, 10.0, 10.0), None, 10.0)
        ignored = froc.Lesion("b#2", (30.0, 30.0, 30.0), None, 10.0, readers=1, relevant=False)
        s1 = froc.match("a", [_nod(1, (10, 10, 10), 0.9), _nod(2, (40, 40, 40), 0.8), _nod(3, (11, 10, 10), 0.7)],
                        [a], GEOM)
        s2 = froc.match("b", [_nod(1, (30, 30, 30), 0.95), _nod(2, (0, 0, 40), 0.6), _nod(3, (10, 12, 10), 0.3)],
                        [b, ignored], GEOM)
        return s1, s2

    def test_matching(self):
        s1, s2 = self._scans()
        assert s1.matches == ["a#1", None, "a#1"]
        assert s2.matches == ["irrelevant", None, "b#1"]

    def test_curve_and_cpm(self):
        out = froc.froc(self._scans())
        # by score: 0.95 irrelevant, 0.9 hit a, 0.8 FP, 0.7 repeat of a, 0.6 FP, 0.3 hit b
        assert out["curve"]["fp_per_scan"] == [0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
        assert out["curve"]["sensitivity"] == [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 1.0]
        assert out["sensitivity_at"]["0.125"] == 0.5 and out["sensitivity_at"]["1.0"] == 1.0
        assert out["cpm"] == pytest.approx((0.5 * 3 + 1.0 * 4) / 7)
        table = {r["lesion"]: r for r in froc.lesion_table(self._scans())}
        assert table["a#1"]["first_hit_rank"] == 1 and table["a#1"]["top_ranked_on_lesion"]
        assert table["b#1"]["first_hit_rank"] == 3 and not table["b#1"]["top_ranked_on_lesion"]

    def test_no_lesions_gives_no_sensitivity(self):
        s = froc.match("c", [_nod(1, (1, 1, 1), 0.5)], [], GEOM)
        out = froc.froc([s])
        assert out["cpm"] is None and out["n_lesions"] == 0 and out["curve"]["fp_per_scan"][-1] == 1.0


class TestSharedReferences:
    def test_lidc_readers_and_the_luna16_rule(self, datasets_dir):
        xml1 = next(datasets_dir.glob("lidc-idri/LIDC-IDRI-0001/*/*/*.xml"))
        one = froc.lidc_reference(read_series(xml1.parent), xml1, "0001")
        relevant = [les for les in one if les.relevant]
        assert len(relevant) == 1 and relevant[0].readers == 4 and relevant[0].malignancy == 4.75
        assert 25 < relevant[0].diameter_mm < 40 and 86 <= relevant[0].centre_voxel[0] <= 94
        xml2 = next(datasets_dir.glob("lidc-idri/LIDC-IDRI-0002/*/*/*.xml"))
        s2 = read_series(xml2.parent)
        big = max(froc.lidc_reference(s2, xml2, "0002", min_readers=1), key=lambda les: les.diameter_mm)
        assert big.readers == 2 and big.relevant
        assert not any(les.relevant and les.readers == 2 for les in froc.lidc_reference(s2, xml2, "0002"))

    def test_one_lesion_per_box_stack(self, tcia_dir):
        boxes = read_voc_folder(tcia_dir / "Annotation" / "A0002")
        folder = next(p for p in tcia_dir.glob("Lung_Dx-A0002/*/*") if p.is_dir())
        lesions = froc.voc_reference(read_series(folder), boxes, "A0002")
        assert len(lesions) == 1 and len(lesions[0].boxes) >= 3
        z = sorted(lesions[0].boxes)
        assert z == list(range(z[0], z[-1] + 1))


def test_card_gains_the_headline_figures_not_the_whole_report():
    from core.registry import DETECTION_TASK, ModelCard

    card = ModelCard(id="d", kind="nodule_detector", architecture="nodule3d", task=DETECTION_TASK,
                     class_names=("nodule", "cad_false_positive", "tissue"), preprocessing=None,
                     volume_preprocessing={"cube": 64}, gradcam_layer="conv5_act", training={"source": "x"})
    report = {"series": [{"series": "s1"}], "runtime": "TensorFlow", "load_average": [1.0, 1.0, 1.0],
              "aims": {"top_ranked_on_lesion": {"value": "1 of 1"},
                       "sensitivity_at_4fp": {"N=3": 1.0, "N=1": 0.5},
                       "cpm": {"N=3": 0.9, "N=1": 0.4}, "diameter_error_mm": {"errors": [-1.0]},
                       "warning": "a check"}}
    out = froc.card_with_check(card, report)
    assert out.training["source"] == "x" and out.training["shared_check"]["cpm"] == {"N=3": 0.9, "N=1": 0.4}
    assert out.training["shared_check"]["series"] == ["s1"] and "results" not in out.training["shared_check"]
