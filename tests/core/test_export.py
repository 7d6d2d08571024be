"""core.export: SC and SR of an AI result from the shared TCIA study, checked by pydicom, dciodvfy and Orthanc."""

from __future__ import annotations

import copy
import io
import os
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

from core.dicomweb import PacsClient
from core.domain import WINDOW_PRESETS, WindowPreset
from core.explain import overlay
from core.export import (
    BANNER,
    AIResult,
    ExportError,
    NoduleReport,
    ReaderRead,
    ReportedNodule,
    burn_banner,
    circle_graphic_data,
    draw_nodule_circles,
    nodule_groups,
    nodule_laterality,
    secondary_capture,
    source_headers,
    structured_report,
    to_bytes,
    zip_of,
)
from core.imaging import read_paths, view
from core.settings import get_settings
from tests.core.orthanc import orthanc  # noqa: F401

DATA = get_settings().data_dir
SERIES_DIR = next(iter(sorted((DATA / "lung-pet-ct-dx").glob("Lung_Dx-*/*/*B40f*"))), None)
SHA = "0123456789abcdef" * 4
MODEL = "cnn-v1-test"
pytestmark = pytest.mark.skipif(SERIES_DIR is None, reason=f"shared TCIA study missing under {DATA}")
# the shared studies' anonymised patient names have one component; highdicom warns about it
pytestmark = [pytestmark, pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent")]


@pytest.fixture(scope="module")
def case():
    """(files, series, headers, index of a slice, its header, its overlay RGB) of the B40f series."""
    files = sorted(SERIES_DIR.glob("*.dcm"))
    series = read_paths([SERIES_DIR]).series[0]
    headers = source_headers([(p.name, p.read_bytes()) for p in files])
    index = len(series.slices) // 2
    sl = series.slices[index]
    yy, xx = np.mgrid[: sl.shape[0], : sl.shape[1]]
    heatmap = np.exp(-(((yy - 200) / 40.0) ** 2 + ((xx - 300) / 60.0) ** 2)).astype(np.float32)
    rgb = overlay(view(sl.hu, WINDOW_PRESETS[WindowPreset.LUNG]), heatmap, alpha=0.4)
    return files, series, headers, index, headers[sl.sop_instance_uid], rgb


def _ai(source) -> AIResult:
    return AIResult(model_id=MODEL, model_sha256=SHA, finding="malignant",
                    probabilities={"normal": 0.05, "benign": 0.15, "malignant": 0.8}, series_score=0.74,
                    positive_class="malignant", most_suspicious_sop_uid=str(source.SOPInstanceUID))


def _reread(ds) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def _content_texts(ds) -> list[str]:
    """Every code meaning, text, UID and numeric value in an SR content tree, flattened."""
    out: list[str] = []

    def walk(items):
        for it in items:
            for key in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
                for c in it.get(key, []):
                    out.append(str(c.CodeMeaning))
            for key in ("TextValue", "UID", "ReferencedSOPInstanceUID"):
                if key in it:
                    out.append(str(it.get(key)))
            for m in it.get("MeasuredValueSequence", []):
                out.append(f"{float(m.NumericValue):g}")
            for r in it.get("ReferencedSOPSequence", []):
                out.append(str(r.ReferencedSOPInstanceUID))
            walk(it.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return out


def test_source_headers_from_files_and_zip(case):
    files, series, headers, *_ = case
    assert set(headers) == {s.sop_instance_uid for s in series.slices}
    assert all("PixelData" not in h for h in headers.values())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in files[:5]:
            zf.writestr(f"study/{p.name}", p.read_bytes())
        zf.writestr("study/README.txt", b"not dicom")
    from_zip = source_headers([("study.zip", buf.getvalue()), ("notes.txt", b"hello")])
    assert len(from_zip) == 5 and set(from_zip) <= set(headers)


def test_banner_is_added_above_the_picture():
    rgb = np.full((256, 300, 3), 90, dtype=np.uint8)
    out = burn_banner(rgb, f"{BANNER} - {MODEL}")
    strip = out.shape[0] - 256
    assert out.shape == (256 + strip, 300, 3) and strip == 16
    np.testing.assert_array_equal(out[strip:], rgb)
    assert out[:strip].max() == 255 and out[:strip].min() == 0  # white text on black
    with pytest.raises(ExportError, match="uint8"):
        burn_banner(rgb.astype(np.float32), "x")


def test_secondary_capture(case):
    _, _, _, _, source, rgb = case
    sc = _reread(secondary_capture(source, rgb, MODEL))
    assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.PatientID == source.PatientID
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID
    root = get_settings().uid_root
    assert sc.SeriesInstanceUID.startswith(root) and sc.SOPInstanceUID.startswith(root)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.BurnedInAnnotation == "YES" and "not for diagnostic use" in sc.SeriesDescription
    assert (sc.PhotometricInterpretation, sc.SamplesPerPixel, sc.BitsAllocated) == ("RGB", 3, 8)
    pixels = sc.pixel_array
    strip = pixels.shape[0] - rgb.shape[0]
    assert strip > 0
    np.testing.assert_array_equal(pixels[strip:], rgb)
    second = secondary_capture(source, rgb, MODEL, series_uid=sc.SeriesInstanceUID, instance_number=2)
    assert second.SeriesInstanceUID == sc.SeriesInstanceUID and second.SOPInstanceUID != sc.SOPInstanceUID


def test_structured_report_and_a_changed_read(case):
    _, _, _, _, source, _ = case
    sr = _reread(structured_report(source, _ai(source)))
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert (sr.VerificationFlag, sr.CompletionFlag) == ("UNVERIFIED", "PARTIAL")
    texts = _content_texts(sr)
    for want in (MODEL, SHA, "AI series finding", "Malignant", "Unverified AI result - not for diagnostic use",
                 "AI probability of malignant", "0.8", "0.74", "0.05", str(source.SOPInstanceUID)):
        assert want in texts, want
    assert "Reader finding" not in texts
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID

    changed = _reread(structured_report(source, _ai(source), ReaderRead("benign", "disagree", "Test Reader"),
                                        previous=sr))
    assert changed.SOPInstanceUID != sr.SOPInstanceUID and changed.SeriesInstanceUID == sr.SeriesInstanceUID
    assert changed.InstanceNumber == sr.InstanceNumber + 1
    pred = changed.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == sr.SOPInstanceUID
    texts = _content_texts(changed)
    assert {"Reader finding", "Benign", "Reader agreement with AI", "Disagree"} <= set(texts)


def test_export_refuses_bad_input(case):
    _, _, headers, _, source, rgb = case
    other = next(h for uid, h in headers.items() if uid != source.SOPInstanceUID)
    with pytest.raises(ExportError, match="most suspicious"):
        structured_report(other, _ai(source))
    bad = AIResult(**{**_ai(source).__dict__, "model_sha256": "abc"})
    with pytest.raises(ExportError, match="sha256"):
        structured_report(source, bad)
    bad = AIResult(**{**_ai(source).__dict__, "series_score": 1.5})
    with pytest.raises(ExportError, match=r"\[0, 1\]"):
        structured_report(source, bad)
    picture = pydicom.Dataset()
    with pytest.raises(ExportError, match="JPG/PNG"):
        secondary_capture(picture, rgb, MODEL)


def test_zip_of(case):
    _, _, _, _, source, rgb = case
    sc, sr = secondary_capture(source, rgb, MODEL), structured_report(source, _ai(source))
    with zipfile.ZipFile(io.BytesIO(zip_of([sc, sr]))) as zf:
        assert zf.namelist() == ["OT_01.dcm", "SR_02.dcm"]
        back = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in zf.namelist()]
    assert [d.SOPInstanceUID for d in back] == [sc.SOPInstanceUID, sr.SOPInstanceUID]


def _dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


def test_dciodvfy_finds_no_errors(case, tmp_path):
    if shutil.which("dciodvfy") is None:
        if os.environ.get("LUNGREVIEW_REQUIRE_PACS") == "1":
            pytest.fail("dciodvfy not found: apt-get install dicom3tools")
        pytest.skip("dciodvfy not found: apt-get install dicom3tools")
    _, _, _, _, source, rgb = case
    sr = structured_report(source, _ai(source))
    objects = {
        "sc": secondary_capture(source, rgb, MODEL),
        "sr": sr,
        "sr_with_read": structured_report(source, _ai(source), ReaderRead("normal", "partly", "Test Reader"),
                                          previous=sr),
        "sr_with_nodules": structured_report(source, _ai(source), ReaderRead("malignant", "agree", "Test Reader"),
                                             previous=sr, nodules=_nodule_report(case)),
        "sc_with_circles": secondary_capture(source, draw_nodule_circles(rgb, [(200, 150, 9.0)],
                                                                         source.PixelSpacing), MODEL),
    }
    for name, ds in objects.items():
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(to_bytes(ds))
        errors, warns = _dciodvfy(path)
        assert errors == [], (name, errors)
        assert warns  # the shared study's own one-component patient name is always reported
        print(name, *sorted(set(warns)), sep="\n  ")


def test_send_to_orthanc_and_find_the_new_series(case, orthanc):  # noqa: F811
    files, _, _, _, source, rgb = case
    pacs = PacsClient(orthanc.dicomweb_url, orthanc.user, orthanc.password, timeout_s=30)
    pacs.store_bytes(p.read_bytes() for p in files)
    sc, sr = secondary_capture(source, rgb, MODEL), structured_report(source, _ai(source))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = pacs.store([sc, sr])
    assert sorted(stored) == sorted([sc.SOPInstanceUID, sr.SOPInstanceUID])
    series = {s.series_instance_uid: s for s in pacs.search_series(str(source.StudyInstanceUID))}
    assert series[sc.SeriesInstanceUID].modality == "OT" and series[sr.SeriesInstanceUID].modality == "SR"
    assert series[sc.SeriesInstanceUID].n_instances == 1 and series[str(source.SeriesInstanceUID)].n_instances == 30
    raw = DICOMwebClient(orthanc.dicomweb_url,
                         session=create_session_from_user_pass(orthanc.user, orthanc.password))
    back_sc = raw.retrieve_instance(str(source.StudyInstanceUID), sc.SeriesInstanceUID, sc.SOPInstanceUID)
    back_sr = raw.retrieve_instance(str(source.StudyInstanceUID), sr.SeriesInstanceUID, sr.SOPInstanceUID)
    np.testing.assert_array_equal(back_sc.pixel_array, sc.pixel_array)
    assert back_sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert back_sr.VerificationFlag == "UNVERIFIED" and MODEL in _content_texts(back_sr)


def test_uid_root_setting(case, monkeypatch):
    from core import settings as config

    _, _, _, _, source, rgb = case
    monkeypatch.setenv("LUNGREVIEW_UID_ROOT", "1.2.3.4")
    config.get_settings.cache_clear()
    try:
        sc = secondary_capture(source, rgb, MODEL)
        assert sc.SeriesInstanceUID.startswith("1.2.3.4.") and sc.SOPInstanceUID.startswith("1.2.3.4.")
        assert len(sc.SOPInstanceUID) <= 64
        for bad in ("1.2.x", "1..2", ".1.2", "1.02.3", "1" * 50):
            monkeypatch.setenv("LUNGREVIEW_UID_ROOT", bad)
            with pytest.raises(ValueError, match="LUNGREVIEW_UID_ROOT"):
                config.load_settings()
    finally:
        monkeypatch.delenv("LUNGREVIEW_UID_ROOT")
        config.get_settings.cache_clear()


# ------------------------------------------------------------------------------ nodules in the SR
DETECTOR_SHA = "fedcba9876543210" * 4


def _nodules(case) -> list[ReportedNodule]:
    """An accepted AI nodule (slice 10, right lung), a reader-added one (slice 20, left lung, outside the
    lung mask), a rejected and an undecided AI finding (both to be left out)."""
    _, series, headers, *_ = case
    header = {i: headers[series.slices[i].sop_instance_uid] for i in (5, 10, 20, 25)}
    return [
        ReportedNodule(header[10], (200, 150), (-80.0, 10.0, -120.0), 9.0, "accepted", "nodule 1", "AI nodule 1",
                       malignancy=3.5, p_nodule=0.91, nodule_type="solid"),
        ReportedNodule(header[20], (250, 350), (70.0, 20.0, -140.0), 6.0, "added", "added 7", "Reader nodule 1",
                       nodule_type="part-solid", outside_lung=True),
        ReportedNodule(header[5], (100, 100), (-50.0, 0.0, -110.0), 4.0, "rejected", "nodule 2", "AI nodule 2",
                       malignancy=1.5, p_nodule=0.6),
        ReportedNodule(header[25], (300, 300), (30.0, 0.0, -150.0), 5.0, "undecided", "nodule 3", "AI nodule 3",
                       malignancy=2.0, p_nodule=0.55),
    ]


def _nodule_report(case, nodules=None) -> NoduleReport:
    return NoduleReport("nodule-det-test", DETECTOR_SHA, _nodules(case) if nodules is None else nodules)


def _planar_groups(ds) -> list:
    return hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_planar_roi_measurement_groups()


def _group_values(group) -> dict:
    site = group.finding_sites[0]
    return {
        "label": group.tracking_identifier,
        "finding": (group.finding_type.value, group.finding_type.scheme_designator),
        "site": (site.value.value, site.laterality.meaning if site.laterality else None),
        "graphic": (group.roi.graphic_type.value, group.roi.value.tolist()),
        "image": group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
        "measurements": {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()},
        "evaluations": {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()},
    }


def test_structured_report_with_two_nodules(case):
    _, _, _, _, source, _ = case
    nodules = _nodules(case)
    sr = _reread(structured_report(source, _ai(source), nodules=_nodule_report(case)))
    groups = _planar_groups(sr)
    assert len(groups) == 2
    spacing = [float(v) for v in nodules[0].source.PixelSpacing]
    accepted, added = (_group_values(g) for g in groups)
    assert accepted["label"] == "AI nodule 1" and added["label"] == "Reader nodule 1"
    assert accepted["finding"] == added["finding"] == ("27925004", "SCT")
    assert accepted["site"] == ("39607008", "Right") and added["site"] == ("39607008", "Left")
    assert accepted["graphic"][0] == "CIRCLE"
    np.testing.assert_allclose(accepted["graphic"][1], [[150.5, 200.5], [150.5 + 4.5 / spacing[1], 200.5]], rtol=1e-6)
    np.testing.assert_allclose(added["graphic"][1], [[350.5, 250.5], [350.5 + 3.0 / spacing[1], 250.5]], rtol=1e-6)
    assert accepted["image"] == nodules[0].source.SOPInstanceUID and added["image"] == nodules[1].source.SOPInstanceUID
    assert accepted["measurements"] == {"Long axis": (9.0, "mm"), "AI malignancy rating (LIDC scale 1-5)": (3.5, "1"),
                                        "AI probability of nodule": (0.91, "1")}
    assert added["measurements"] == {"Long axis": (6.0, "mm")}
    assert accepted["evaluations"] == {"Reader decision on nodule": "Accepted", "Nodule attenuation type": "Solid"}
    assert added["evaluations"] == {"Reader decision on nodule": "Added", "Nodule attenuation type": "Part-solid",
                                    "Centre outside lung mask": "Yes"}
    # the AI's series group stays, and both nodule slices are evidence; the left-out ones are not
    assert len(hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_image_measurement_groups()) == 1
    evidence = {r.ReferencedSOPInstanceUID for r in
                sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence}
    assert evidence == {str(source.SOPInstanceUID), nodules[0].source.SOPInstanceUID, nodules[1].source.SOPInstanceUID}
    texts = _content_texts(sr)
    assert "AI nodule 2" not in texts and "AI nodule 3" not in texts


def test_a_corrected_nodule_is_the_readers_measurement_and_keeps_its_tracking_uid(case):
    _, _, _, _, source, _ = case
    first = _reread(structured_report(source, _ai(source), nodules=_nodule_report(case)))
    corrected = [ReportedNodule(**{**_nodules(case)[0].__dict__, "diameter_mm": 11.0, "status": "corrected"})]
    changed = _reread(structured_report(source, _ai(source), ReaderRead("malignant", "agree", "Test Reader"),
                                        previous=first, nodules=_nodule_report(case, corrected)))
    pred = changed.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == first.SOPInstanceUID
    (group,) = _planar_groups(changed)
    values = _group_values(group)
    assert values["measurements"]["Long axis"] == (11.0, "mm")
    assert values["evaluations"]["Reader decision on nodule"] == "Corrected"
    assert group.tracking_uid == _planar_groups(first)[0].tracking_uid
    assert _algorithm_of(group, "Long axis") == []  # the reader's diameter, not the detector's
    assert _algorithm_of(_planar_groups(first)[0], "Long axis") == ["nodule-det-test"]
    assert _algorithm_of(group, "AI malignancy rating (LIDC scale 1-5)") == ["nodule-det-test"]


def _algorithm_of(group, measurement: str) -> list[str]:
    """The Algorithm Name items (TID 4019) of one measurement of a group."""
    m = next(m for m in group.get_measurements() if m.name.meaning == measurement)
    return [str(it.TextValue) for it in m[0].get("ContentSequence", [])
            if it.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Name"]


def test_no_reported_nodule_gives_no_nodule_group(case):
    _, _, _, _, source, _ = case
    left_out = [n for n in _nodules(case) if n.status in ("rejected", "undecided")]
    sr = _reread(structured_report(source, _ai(source), nodules=_nodule_report(case, left_out)))
    assert _planar_groups(sr) == []
    assert len(sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence) == 1


@pytest.mark.parametrize(
    ("change", "match"),
    [({"status": "maybe"}, "has status"), ({"centre_rc": (600, 10)}, "outside its 512 x 512 image"),
     ({"malignancy": 6.0}, r"malignancy must lie in \[1, 5\]"), ({"p_nodule": -0.1}, "p_nodule"),
     ({"diameter_mm": 0.0}, "positive number of mm"), ({"label": ""}, "label of 1-64"),
     ({"source": "no spacing"}, "no PixelSpacing"), ({"source": "other study"}, "another study")],
)
def test_nodule_groups_refuse_bad_nodules(case, change, match):
    _, _, _, _, source, _ = case
    nodule = _nodules(case)[0]
    if change.get("source") == "no spacing":
        header = copy.deepcopy(nodule.source)
        del header.PixelSpacing
        change = {"source": header}
    elif change.get("source") == "other study":
        header = copy.deepcopy(nodule.source)
        header.StudyInstanceUID = "1.2.3.4"
        change = {"source": header}
    bad = ReportedNodule(**{**nodule.__dict__, **change})
    with pytest.raises(ExportError, match=match):
        nodule_groups(_nodule_report(case, [bad]), study_uid=str(source.StudyInstanceUID))
    with pytest.raises(ExportError, match="detector sha256"):
        nodule_groups(NoduleReport("d", "abc", [nodule]), study_uid=str(source.StudyInstanceUID))


class TestNoduleGeometry:
    @pytest.mark.parametrize(("x", "mid", "side"), [(12.0, 0.0, "left"), (-0.5, 0.0, "right"), (0.0, 0.0, None),
                                                    (-20.0, -30.0, "left"), (-40.0, -30.0, "right")])
    def test_laterality_from_the_lps_x_coordinate(self, x, mid, side):
        assert nodule_laterality(x, mid) == side

    def test_laterality_refuses_non_finite_coordinates(self):
        with pytest.raises(ExportError, match="finite"):
            nodule_laterality(float("nan"))

    def test_circle_is_centre_and_rim_point_in_pixel_coordinates(self):
        data = circle_graphic_data((10, 20), 6.0, (0.5, 0.75))
        assert data.dtype == np.float32 and data.shape == (2, 2)
        np.testing.assert_allclose(data, [[20.5, 10.5], [24.5, 10.5]])
        for bad in (((10, 20), 0.0, (1, 1)), ((10, 20), 5.0, (0, 1)), ((-1, 20), 5.0, (1, 1))):
            with pytest.raises(ExportError):
                circle_graphic_data(*bad)

    def test_draw_nodule_circles_draws_the_rim_and_leaves_the_input(self):
        rgb = np.zeros((100, 120, 3), dtype=np.uint8)
        out = draw_nodule_circles(rgb, [(50, 60, 20.0)], (0.5, 1.0), colour=(255, 0, 0), width=1)
        assert rgb.max() == 0 and out.shape == rgb.shape and out.dtype == np.uint8
        red = np.argwhere(out[..., 0] == 255)
        # 20 mm across: 40 rows (0.5 mm) by 20 columns (1 mm), around the centre of pixel (50, 60)
        assert red[:, 0].min() in (30, 31) and red[:, 0].max() in (69, 70)
        assert red[:, 1].min() in (50, 51) and red[:, 1].max() in (69, 70)
        assert out[50, 60].tolist() == [0, 0, 0]  # an outline, not a disc
        with pytest.raises(ExportError, match="uint8"):
            draw_nodule_circles(rgb.astype(np.float32), [], (1, 1))
        with pytest.raises(ExportError, match="diameter"):
            draw_nodule_circles(rgb, [(5, 5, -1.0)], (1, 1))


def test_sr_with_nodules_round_trips_through_orthanc(case, orthanc):  # noqa: F811
    _, _, _, _, source, _ = case
    pacs = PacsClient(orthanc.dicomweb_url, orthanc.user, orthanc.password, timeout_s=30)
    sr = structured_report(source, _ai(source), ReaderRead("malignant", "agree", "Test Reader"),
                           nodules=_nodule_report(case))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pacs.store([sr]) == [sr.SOPInstanceUID]
    raw = DICOMwebClient(orthanc.dicomweb_url,
                         session=create_session_from_user_pass(orthanc.user, orthanc.password))
    back = raw.retrieve_instance(str(source.StudyInstanceUID), sr.SeriesInstanceUID, sr.SOPInstanceUID)
    groups = _planar_groups(back)
    assert [_group_values(g)["label"] for g in groups] == ["AI nodule 1", "Reader nodule 1"]
    assert [_group_values(g)["measurements"]["Long axis"] for g in groups] == [(9.0, "mm"), (6.0, "mm")]
