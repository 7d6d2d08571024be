"""services.accounts: the worklist's nodule columns and the per-model nodule summary of the Compare page,
from reads recorded through the reading service (phantom series, fake detector; SQLite and PostgreSQL)."""

from __future__ import annotations

import pandas as pd
import pytest

from services import accounts
from services.reading import ReadingService, read_upload
from tests.factories.ct import FakeDetector, phantom_files
from tests.services.test_reading import CARD, CountingPredictor


@pytest.fixture()
def read_case(factory, people, isolated_settings):
    """The phantom analysed and scanned; rad1 accepts 1, rejects 2, adds one, says Lung-RADS 4A and saves a
    series read; rad2 saves a series read and accepts nothing. Returns the findings."""
    study = read_upload(phantom_files(), limit_mb=50).studies[0]
    series = study.series[0]
    svc = ReadingService(factory, CountingPredictor(), nodule_detector=FakeDetector().as_detector())
    analysis = svc.analyse(study, series, CARD, user_id=people["rad1"])
    found = svc.find_nodules(analysis, series, user_id=people["rad1"])
    n1, n2 = (f.nodule_id for f in found.findings)
    rad1, rad2 = people["rad1"], people["rad2"]
    svc.decide_nodule(found, n1, reader_id=rad1, decision="accept", corrected_diameter_mm=11.0, opened_at=0.0)
    svc.decide_nodule(found, n2, reader_id=rad1, decision="reject", opened_at=0.0)
    svc.add_nodule(found, series, reader_id=rad1, slice_index=16, row=70, col=85, diameter_mm=7.0, opened_at=0.0)
    svc.save_lungrads(found, reader_id=rad1, category="4A", suggested="4A", opened_at=0.0)
    for reader in (rad1, rad2):
        svc.save_read(analysis.inference_id, reader_id=reader, finding="malignant", agreement="agree",
                      confidence=4, heatmap_helpful=None, comment="", opened_at=0.0)
    return found


def test_worklist_rows_carry_each_readers_nodule_read(factory, people, read_case):
    table = accounts.worklist(factory)
    assert set(accounts.NODULE_WORKLIST_COLUMNS) <= set(table.columns)
    by_reader = {int(r["reader_id"]): r for _, r in table.iterrows()}
    r1, r2 = by_reader[people["rad1"]], by_reader[people["rad2"]]
    assert (r1["ai_nodules"], r1["nodules_accepted"], r1["nodules_rejected"], r1["nodules_added"], r1["lungrads"]) \
        == (2, 1, 1, 1, "4A")
    assert (r2["ai_nodules"], r2["nodules_accepted"], r2["nodules_rejected"], r2["nodules_added"]) == (2, 0, 0, 0)
    assert pd.isna(r2["lungrads"]) and r1["nodule_model_id"] == "fake_nodules_v1" and r1["nodule_refusal"] == ""
    only_rad2 = accounts.worklist(factory, reader_id=people["rad2"])
    assert list(only_rad2["nodules_accepted"]) == [0]


def test_a_worklist_without_detections_gets_empty_nodule_columns(factory, people, isolated_settings):
    table = accounts.with_nodules(pd.DataFrame({"inference_id": [1], "reader_id": [2]}), pd.DataFrame())
    assert table[list(accounts.NODULE_WORKLIST_COLUMNS)].isna().all(axis=None)


def test_model_summary_per_reader_and_pooled(factory, people, read_case):
    summary = accounts.nodule_model_summary(factory)
    rows = {r["reader"]: r for _, r in summary.iterrows()}
    assert set(rows) == {"Dr rad1", "all readers"}  # rad2 decided no nodule
    r1 = rows["Dr rad1"]
    assert (r1["model_id"], r1["accepted"], r1["corrected"], r1["rejected"], r1["fraction_accepted"], r1["added"]) \
        == ("fake_nodules_v1", 1, 1, 1, 0.5, 1)
