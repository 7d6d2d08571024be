"""core.pacs.export: SC and SR of an AI result from the shared TCIA study, checked by pydicom, dciodvfy and Orthanc."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

from core.domain import WINDOW_PRESETS, WindowPreset
from core.imaging import read_paths, view
from core.inference.explain import overlay
from core.pacs.dicomweb import PacsClient
from core.pacs.export import (
    BANNER,
    AIResult,
    ExportError,
    ReaderRead,
    burn_banner,
    secondary_capture,
    source_headers,
    structured_report,
    to_bytes,
    zip_of,
)
from core.settings import get_settings
from tests.core.pacs.orthanc import orthanc  # noqa: F401

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
