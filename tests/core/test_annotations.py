"""LIDC-IDRI XML and Lung-PET-CT-Dx box parsing: a small XML written here, then the shared files."""

from __future__ import annotations

import numpy as np
import pytest

from core.annotations import (
    AnnotationError,
    Box,
    lesion_masks,
    lidc_suspicious,
    read_lidc_xml,
    read_voc_box,
    read_voc_folder,
)
from core.settings import REPO_ROOT

DATASETS = REPO_ROOT.parent / "shared" / "datasets"

LIDC_XML = """<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage xmlns="http://www.nih.gov">
<readingSession>
  <unblindedReadNodule>
    <noduleID>N1</noduleID>
    <characteristics><malignancy>4</malignancy></characteristics>
    <roi>
      <imageZposition>-125.0 </imageZposition>
      <imageSOP_UID>1.2.3.1</imageSOP_UID>
      <inclusion>TRUE</inclusion>
      <edgeMap><xCoord>10</xCoord><yCoord>10</yCoord></edgeMap>
      <edgeMap><xCoord>14</xCoord><yCoord>10</yCoord></edgeMap>
      <edgeMap><xCoord>14</xCoord><yCoord>14</yCoord></edgeMap>
      <edgeMap><xCoord>10</xCoord><yCoord>14</yCoord></edgeMap>
    </roi>
  </unblindedReadNodule>
  <unblindedReadNodule>
    <noduleID>small</noduleID>
    <roi>
      <imageZposition>-130.0</imageZposition>
      <imageSOP_UID>1.2.3.2</imageSOP_UID>
      <inclusion>TRUE</inclusion>
      <edgeMap><xCoord>5</xCoord><yCoord>6</yCoord></edgeMap>
    </roi>
  </unblindedReadNodule>
  <nonNodule><nonNoduleID>x</nonNoduleID></nonNodule>
</readingSession>
<readingSession>
  <unblindedReadNodule>
    <noduleID>N1b</noduleID>
    <characteristics><malignancy>2</malignancy></characteristics>
    <roi>
      <imageZposition>-125.0</imageZposition>
      <imageSOP_UID>1.2.3.1</imageSOP_UID>
      <inclusion>TRUE</inclusion>
      <edgeMap><xCoord>11</xCoord><yCoord>11</yCoord></edgeMap>
      <edgeMap><xCoord>13</xCoord><yCoord>11</yCoord></edgeMap>
      <edgeMap><xCoord>13</xCoord><yCoord>13</yCoord></edgeMap>
    </roi>
  </unblindedReadNodule>
</readingSession>
</LidcReadMessage>
"""


def test_lidc_xml_written_here(tmp_path):
    f = tmp_path / "001.xml"
    f.write_text(LIDC_XML)
    nods = read_lidc_xml(f)
    assert [(n.reader, n.nodule_id, n.malignancy, n.at_least_3mm) for n in nods] == [
        (0, "N1", 4, True),
        (0, "small", None, False),
        (1, "N1b", 2, True),
    ]
    roi = nods[0].rois[0]
    assert roi.sop_instance_uid == "1.2.3.1" and roi.z_mm == -125.0 and roi.inclusion
    assert roi.points.tolist() == [[10, 10], [14, 10], [14, 14], [10, 14]]
    m = roi.mask((20, 20))
    assert m.dtype == bool and m[10:15, 10:15].all() and m.sum() == 25  # outline + interior
    assert nods[1].rois[0].mask((20, 20)).sum() == 1
    assert [n.nodule_id for n in lidc_suspicious(nods)] == ["N1"]
    lesion = lesion_masks(["1.2.3.0", "1.2.3.1", "1.2.3.2"], (20, 20), nodules=lidc_suspicious(nods))
    assert (
        lesion.shape == (3, 20, 20) and lesion[1].sum() == 25 and not lesion[0].any() and not lesion[2].any()
    )


def test_bad_files_say_what_is_wrong(tmp_path):
    with pytest.raises(AnnotationError, match="no such"):
        read_lidc_xml(tmp_path / "missing.xml")
    (tmp_path / "broken.xml").write_text("<LidcReadMessage><readingSession>")
    with pytest.raises(AnnotationError, match="not well-formed"):
        read_lidc_xml(tmp_path / "broken.xml")
    (tmp_path / "voc.xml").write_text(
        "<annotation><object><name>A</name><bndbox><xmin>a</xmin></bndbox></object></annotation>"
    )
    with pytest.raises(AnnotationError, match="LidcReadMessage"):
        read_lidc_xml(tmp_path / "voc.xml")
    with pytest.raises(AnnotationError, match="bndbox"):
        read_voc_box(tmp_path / "voc.xml")
    (tmp_path / "bad_uid.xml").write_text(LIDC_XML.replace("<imageSOP_UID>1.2.3.2</imageSOP_UID>", ""))
    with pytest.raises(AnnotationError, match="imageSOP_UID"):
        read_lidc_xml(tmp_path / "bad_uid.xml")


def test_voc_box_written_here(tmp_path):
    f = tmp_path / "1.2.840.99.xml"
    f.write_text(
        "<annotation><size><width>8</width></size><object><name>A</name><bndbox>"
        "<xmin>2</xmin><ymin>3</ymin><xmax>4</xmax><ymax>6</ymax></bndbox></object></annotation>"
    )
    (box,) = read_voc_box(f)
    assert box == Box("1.2.840.99", "A", 2, 3, 4, 6)
    assert box.mask((8, 8)).sum() == 3 * 4
    assert read_voc_folder(tmp_path) == {"1.2.840.99": [box]}


@pytest.mark.skipif(not (DATASETS / "lidc-idri").is_dir(), reason="shared LIDC-IDRI copy not present")
def test_shared_lidc_files():
    (x1,) = sorted((DATASETS / "lidc-idri").glob("LIDC-IDRI-0001/*/*/*.xml"))
    sus = lidc_suspicious(read_lidc_xml(x1))
    # README: one nodule marked by all four readers, malignancy 5, 5, 5, 4, on 7-9 slices
    assert sorted(n.malignancy for n in sus) == [4, 5, 5, 5]
    assert {n.reader for n in sus} == {0, 1, 2, 3}
    assert all(7 <= len(n.slice_uids) <= 9 for n in sus)


@pytest.mark.skipif(
    not (DATASETS / "lung-pet-ct-dx").is_dir(), reason="shared Lung-PET-CT-Dx copy not present"
)
def test_shared_lung_pet_ct_boxes():
    boxes = read_voc_folder(DATASETS / "lung-pet-ct-dx" / "Annotation" / "A0002")
    assert len(boxes) >= 10
    for uid, bs in boxes.items():
        assert uid.startswith("1.3.6.1.4.1.14519")
        for b in bs:
            assert b.label == "A" and 0 <= b.x0 < b.x1 < 512 and 0 <= b.y0 < b.y1 < 512
    assert np.mean([len(bs) for bs in boxes.values()]) >= 1
