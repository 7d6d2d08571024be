"""Tests for models.evaluation.localization: VOC boxes, heatmap mass in boxes, the TCIA measurement and its CLI."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation import localization
from models.evaluation.localization import box_mass_fractions, mass_in_boxes, read_voc_boxes
from tests.factories.registry import make_registry


class TestReadVocBoxes:
    def test_tcia_annotation_has_a_box_inside_the_slice(self, tcia_dir):
        path = sorted((tcia_dir / "Annotation").glob("*/*.xml"))[0]
        boxes = read_voc_boxes(path)
        assert boxes and all(0 <= y0 < y1 <= 512 and 0 <= x0 < x1 <= 512 for y0, y1, x0, x1 in boxes)

    def test_invalid_xml_is_refused(self, tmp_path):
        bad = tmp_path / "bad.xml"
        bad.write_text("<annotation><object>")
        with pytest.raises(ValueError, match="not valid XML"):
            read_voc_boxes(bad)


class TestMassInBoxes:
    def test_uniform_map_gives_the_area_fraction(self):
        assert mass_in_boxes(np.ones((10, 10)), [(0, 5, 0, 2)]) == pytest.approx(0.1)

    def test_map_inside_the_box_gives_one_and_zero_map_gives_zero(self):
        h = np.zeros((10, 10))
        h[2:4, 2:4] = 1
        assert mass_in_boxes(h, [(1, 5, 1, 5)]) == pytest.approx(1.0)
        assert mass_in_boxes(np.zeros((10, 10)), [(1, 5, 1, 5)]) == 0.0


class TestBoxMassFractions:
    def test_every_annotated_slice_is_measured(self, tmp_path, tcia_dir):
        from core.inference import Predictor
        from core.registry import load_model

        predictor = Predictor(load_model("tiny_adv", make_registry(tmp_path)))
        out = box_mass_fractions(predictor, tcia_dir)
        n_xml = len(list((tcia_dir / "Annotation").glob("*/*.xml")))
        assert 0 < out["annotated_slices"] <= n_xml
        assert 0.0 <= out["mean_mass_in_boxes"] <= 1.0
        assert 0.0 < out["mean_uniform_slice_floor"] < out["mean_uniform_body_floor"] < 1.0


class TestCli:
    def test_without_tcia_prints_help_and_returns_2(self, capsys):
        assert localization.main([]) == 2
        assert "--tcia" in capsys.readouterr().out

    def test_missing_model_is_one_line_without_traceback(self, isolated_settings, capsys):
        assert localization.main(["--tcia", "--model", "no_such_model"]) == 1
        err = capsys.readouterr().err
        assert "no_such_model" in err and "Traceback" not in err
