"""core.reference_lesions: LIDC readers' marks -> reference lesions (LUNA16 rule), by hand and on the shared XML."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from core.annotations import read_lidc_xml
from core.reference_lesions import LesionGeometryError, lidc_consensus

STEP, PIXEL, SHAPE = 2.5, 0.5, (64, 64)
Z = [-100.0 + STEP * i for i in range(10)]


def square(x0: int, y0: int, size: int = 4) -> list[tuple[int, int]]:
    """Every boundary pixel of the square [x0, x0+size] x [y0, y0+size], in order around it."""
    top = [(x, y0) for x in range(x0, x0 + size)]
    right = [(x0 + size, y) for y in range(y0, y0 + size)]
    bottom = [(x, y0 + size) for x in range(x0 + size, x0, -1)]
    left = [(x0, y) for y in range(y0 + size, y0, -1)]
    return top + right + bottom + left


def roi(z: float, uid: str, points) -> str:
    edges = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in points)
    return (f"<roi><imageZposition>{z}</imageZposition><imageSOP_UID>{uid}</imageSOP_UID>"
            f"<inclusion>TRUE</inclusion>{edges}</roi>")


def nodule(name: str, malignancy: int | None, rois: list[str]) -> str:
    chars = f"<characteristics><malignancy>{malignancy}</malignancy></characteristics>" if malignancy else ""
    return f"<unblindedReadNodule><noduleID>{name}</noduleID>{chars}{''.join(rois)}</unblindedReadNodule>"


def write_xml(path: Path) -> Path:
    """Four readers. Readers 0-2 mark one nodule (5 x 5 pixel squares):
    r0 on slices 4 and 5 at columns 10-14, rows 20-24 -> centre (slice 4.5, row 22, column 12), malignancy 4;
    r1 on slice 4 at columns 12-16, rows 20-24 -> (4, 22, 14), malignancy 2;
    r2 on slice 5 at columns 10-14, rows 22-26 -> (5, 24, 12), malignancy 3; and a mark on a slice
    outside the series (z = +50). Reader 3 marks another nodule alone (columns 40-44, rows 40-44,
    slice 4) and a nodule under 3 mm (one point). Each square's diameter: its diagonal,
    sqrt(4^2 + 4^2) px x 0.5 mm = 2.83 mm. Centres of r0/r1 and r0/r2 lie 1.6 mm apart in 3-D
    (1.25 mm in z, 1 mm in plane), under the sum of the radii (2.83 mm): one nodule."""
    uid = {i: f"1.2.3.{i}" for i in range(10)}
    sessions = [
        [nodule("a", 4, [roi(Z[4], uid[4], square(10, 20)), roi(Z[5], uid[5], square(10, 20))])],
        [nodule("b", 2, [roi(Z[4], uid[4], square(12, 20))])],
        [nodule("c", 3, [roi(Z[5], uid[5], square(10, 22))]), nodule("out", 4, [roi(50.0, "9.9.9", square(5, 5))])],
        [nodule("d", 5, [roi(Z[4], uid[4], square(40, 40))]), nodule("tiny", None, [roi(Z[2], uid[2], [(30, 30)])])],
    ]
    body = "".join(f"<readingSession>{''.join(s)}</readingSession>" for s in sessions)
    path.write_text(f'<?xml version="1.0"?><LidcReadMessage xmlns="http://www.nih.gov">{body}</LidcReadMessage>')
    return path


class TestHandWorked:
    def test_three_readers_make_a_lesion_one_reader_does_not(self, tmp_path):
        marks = read_lidc_xml(write_xml(tmp_path / "001.xml"))
        out = lidc_consensus(marks, slice_z_mm=Z, shape=SHAPE, pixel_mm=(PIXEL, PIXEL))
        assert (out.marks_outside, out.small_marks) == (1, 1)
        (lesion,) = out.lesions
        assert lesion.readers == (0, 1, 2)
        assert (lesion.slice_position, lesion.y, lesion.x) == pytest.approx((4.5, 68 / 3, 38 / 3))
        assert lesion.slice_index == 4  # round half to even
        assert lesion.diameter_mm == pytest.approx(math.sqrt(32) * PIXEL)
        assert lesion.malignancy == pytest.approx(3.0)
        (alone,) = out.fewer_readers
        assert (alone.readers, alone.x, alone.y, alone.slice_position) == ((3,), 42.0, 42.0, 4.0)

    def test_two_readers_suffice_when_asked_and_uids_place_the_same(self, tmp_path):
        marks = read_lidc_xml(write_xml(tmp_path / "001.xml"))
        by_z = lidc_consensus(marks, slice_z_mm=Z, shape=SHAPE, pixel_mm=(PIXEL, PIXEL), min_readers=1)
        by_uid = lidc_consensus(marks, slice_z_mm=Z, shape=SHAPE, pixel_mm=(PIXEL, PIXEL), min_readers=1,
                                slice_uids=[f"1.2.3.{i}" for i in range(10)])
        assert len(by_z.lesions) == 2 and by_z.fewer_readers == ()
        assert by_uid == by_z

    def test_marks_apart_by_more_than_the_radii_stay_apart(self, tmp_path):
        marks = read_lidc_xml(write_xml(tmp_path / "001.xml"))
        # placed by UID on a 40 mm slice grid, r1 and r2 lie 20 mm from r0 in z, beyond the sum of the radii
        far = lidc_consensus(marks, slice_z_mm=[-100.0 + 40 * i for i in range(10)], shape=SHAPE,
                             pixel_mm=(PIXEL, PIXEL), slice_uids=[f"1.2.3.{i}" for i in range(10)])
        assert far.lesions == () and len(far.fewer_readers) == 4

    def test_a_series_without_geometry_is_refused(self, tmp_path):
        marks = read_lidc_xml(write_xml(tmp_path / "001.xml"))
        with pytest.raises(LesionGeometryError, match="no z position"):
            lidc_consensus(marks, slice_z_mm=[np.nan] * 10, shape=SHAPE, pixel_mm=(PIXEL, PIXEL))
        with pytest.raises(LesionGeometryError, match="pixel spacing"):
            lidc_consensus(marks, slice_z_mm=Z, shape=SHAPE, pixel_mm=(0.0, PIXEL))
        with pytest.raises(LesionGeometryError, match="no slices"):
            lidc_consensus(marks, slice_z_mm=[], shape=SHAPE, pixel_mm=(PIXEL, PIXEL))


class TestSharedLidc:
    @pytest.mark.parametrize(("patient", "n_lesions", "readers"), [("LIDC-IDRI-0001", 1, (0, 1, 2, 3)),
                                                                   ("LIDC-IDRI-0002", 0, None)])
    def test_agrees_with_the_detector_scoring_reference(self, datasets_dir, patient, n_lesions, readers):
        from core.imaging import read_series
        from models.evaluation.froc import lidc_reference

        folder = next((datasets_dir / "lidc-idri" / patient).glob("*/*"))
        series = read_series(folder)
        xml = next(folder.glob("*.xml"))
        out = lidc_consensus(read_lidc_xml(xml), slice_z_mm=[s.image_position_mm[2] for s in series.slices],
                             shape=series.slices[0].shape, pixel_mm=series.spacing_mm[1:])
        assert len(out.lesions) == n_lesions
        reference = [les for les in lidc_reference(series, xml, "x") if les.relevant]
        assert len(reference) == n_lesions
        for mine, theirs in zip(out.lesions, reference, strict=True):
            assert mine.readers == readers and mine.malignancy == pytest.approx(theirs.malignancy)
            assert (mine.slice_position, mine.y, mine.x) == pytest.approx(theirs.centre_voxel)
            assert round(mine.diameter_mm, 2) == theirs.diameter_mm
        if patient == "LIDC-IDRI-0002":  # README: one large nodule, marked by 2 readers
            assert [n.readers for n in out.fewer_readers][:1] == [(2, 3)]
