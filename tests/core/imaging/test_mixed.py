"""No good file lost to a bad one (issue 24): uploads that mix good files with damaged ZIPs and DICOM files
whose pixel data cannot be decoded. Every good file and every intact member of a damaged ZIP is read;
every damaged file is named by a problem of its own. The damages are built by
``tests/factories/damaged.py``; the same mixes, seeded, are counted by
``python -m benchmarks.fuzz_report N --mixed-damaged`` (figures in docs/ingest.md).
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.imaging import ArchiveTooLargeError, MixedSeriesError, NotAnImageError, read_uploads
from core.imaging.archives import is_zip, iter_zip
from core.imaging.limits import PixelBudget
from core.imaging.zip_repair import recover_zip
from tests.conftest import SHARED_DATASETS
from tests.core.imaging.fuzz_inputs import UNPLAIN
from tests.factories.damaged import (
    DICOM_DAMAGES,
    ZIP_DAMAGES,
    damaged_dicom,
    damaged_zip,
    good_series,
    make_zip,
)
from tests.factories.dicom import make_dicom

_JPG = SHARED_DATASETS / "iq-othnccd" / "Normal cases" / "Normal case (1).jpg"


@pytest.fixture(autouse=True)
def _quiet(isolated_settings):
    """Fixed settings; pydicom's warnings and the decoders' logged failures are expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


@pytest.fixture()
def limits(monkeypatch):
    """Set LUNGREVIEW_* limits for one test: ``limits(MAX_ZIP_MB=1)``."""
    from core import config

    def apply(**env):
        for key, value in env.items():
            monkeypatch.setenv(f"LUNGREVIEW_{key}", str(value))
        config.get_settings.cache_clear()

    yield apply
    config.get_settings.cache_clear()


def _sources(result) -> set[str]:
    return {s.source for se in result.series for s in se.slices}


def _base(label: str) -> str:
    return label.rsplit("/", 1)[-1]


_damage = st.one_of(
    st.tuples(st.just("zip"), st.sampled_from(ZIP_DAMAGES), st.integers(1, 3)),
    st.tuples(st.just("dicom"), st.sampled_from(DICOM_DAMAGES), st.booleans()),
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    good_jpg=st.booleans(),
    damages=st.lists(_damage, min_size=1, max_size=4),
    order=st.randoms(use_true_random=False),
)
def test_every_good_file_is_read_and_every_bad_one_is_named(good_jpg, damages, order):
    good_jpg = good_jpg and _JPG.is_file()  # without the shared data, the good upload is a series
    if good_jpg:
        items, study, series = [("good.jpg", _JPG.read_bytes())], None, None
    else:
        study, series, items = good_series(stem="good")
    good = [n for n, _ in items]
    bad: list[str] = []
    in_series: list[str] = []
    for j, (what, kind, extra) in enumerate(damages):
        if what == "zip":
            d = damaged_zip(kind, f"z{j}", n_good=extra)
        else:
            same = extra and series is not None
            d = damaged_dicom(kind, f"bad{j}.dcm", study if same else None, series if same else None, 0.5 + j)
            if same:
                in_series.append(d.name)
        items.append((d.name, d.data))
        good += d.intact
        bad.append(d.bad)
    order.shuffle(items)

    result = read_uploads(items)

    read = _sources(result)
    assert [g for g in good if _base(g) not in read] == [], [(p.name, p.message) for p in result.problems]
    by_name = {p.name: p.message for p in result.problems}
    for label in bad:
        assert label in by_name, f"{label} not named: {sorted(by_name)}"
        assert f"‘{label}’" in by_name[label]
        assert not UNPLAIN.search(by_name[label].replace(label, "")), by_name[label]
    for name in in_series:  # a damaged slice of the good series says where it leaves a gap
        assert "gap" in by_name[name], by_name[name]
    if in_series:
        (se,) = [se for se in result.series if any(s.source == "good0.dcm" for s in se.slices)]
        assert any("gap" in n and all(f"‘{b}’" in n for b in in_series) for n in se.metadata["notes"])


class TestSeriesWithABadSlice:
    def test_the_good_slices_are_kept_in_order_and_the_gap_is_said(self):
        study, series, files = good_series(n=4)
        bad = damaged_dicom("junk-jpeg2000", "slice_x.dcm", study, series, position=1.5)
        result = read_uploads([*files[:2], (bad.name, bad.data), *files[2:]])
        (se,) = result.series
        assert [s.source for s in se.slices] == [n for n, _ in files]
        assert se.spacing_mm[0] == 1.0  # the median step: one gap does not change it
        assert any("‘slice_x.dcm’" in n and "gap" in n for n in se.metadata["notes"])
        (problem,) = result.problems
        assert problem.name == "slice_x.dcm"
        assert "damaged compressed pixel data" in problem.message and "#2 ‘Chest 1.0 B70f’" in problem.message
        assert "other 4 slices" in problem.message

    def test_a_bad_slice_of_another_series_does_not_mark_this_one(self):
        study, series, files = good_series(n=2)
        bad = damaged_dicom("truncated-pixels", "other.dcm")
        result = read_uploads([*files, (bad.name, bad.data)])
        assert result.series[0].metadata["notes"] == []
        assert "gap" not in result.problems[0].message

    def test_a_slice_of_another_size_is_left_out_not_the_series(self):
        study, series, files = good_series(n=3, rows=16, cols=16)
        odd = make_dicom(rows=8, cols=8, study_uid=study, series_uid=series, position=(0, 0, 9))
        result = read_uploads([*files, ("scout.dcm", odd)])
        assert [s.source for s in result.series[0].slices] == [n for n, _ in files]
        (problem,) = result.problems
        assert problem.name == "scout.dcm" and isinstance(problem.error, MixedSeriesError)
        assert "8 x 8 pixels while 3 slices" in problem.message

    def test_a_series_split_evenly_between_two_sizes_is_still_refused(self):
        study, series, files = good_series(n=1)
        odd = make_dicom(rows=8, cols=8, study_uid=study, series_uid=series, position=(0, 0, 9))
        with pytest.raises(MixedSeriesError, match="no size shared by most slices"):
            read_uploads([*files, ("b.dcm", odd)])


class TestPixelBudget:
    def test_a_file_that_fails_to_decode_gives_its_pixels_back(self):
        hog = damaged_dicom("huge-junk-jpeg2000", "hog.dcm")  # reserves all but 161,580 pixels, then fails
        result = read_uploads([(hog.name, hog.data), ("good.dcm", make_dicom(rows=512, cols=512))])
        assert _sources(result) == {"good.dcm"}
        assert "damaged compressed pixel data" in result.problems[0].message

    def test_tentative_keeps_reservations_of_a_block_that_ends_normally(self):
        budget = PixelBudget(limit=100)
        with budget.tentative():
            budget.reserve("a", 5, 5)
        with pytest.raises(ValueError), budget.tentative():
            budget.reserve("b", 5, 5)
            raise ValueError("decoding failed")
        assert budget.used == 25


class TestZipLimitsKeepWhatWasRead:
    def test_members_past_the_size_limit_are_named_and_those_before_read(self, limits):
        limits(MAX_ZIP_MB=1)
        members = [(f"s{i}.dcm", make_dicom(rows=400, cols=400, position=(0, 0, i))) for i in range(1, 5)]
        data = make_zip(members, zipfile.ZIP_STORED)  # 320 kB each: 3 fit in 1 MB
        result = read_uploads([("b.zip", data)])
        assert _sources(result) == {"s1.dcm", "s2.dcm", "s3.dcm"}
        (problem,) = result.problems
        assert problem.name == "b.zip" and isinstance(problem.error, ArchiveTooLargeError)
        assert "the 3 files before ‘s4.dcm’ were read" in problem.message and "‘b.zip/s4.dcm’" in problem.message

    def test_members_past_the_count_limit_are_named_and_those_before_read(self, limits):
        limits(MAX_ZIP_MEMBERS=3)
        data = make_zip([(f"m{i}.dcm", make_dicom(position=(0, 0, i))) for i in range(5)])
        result = read_uploads([("many.zip", data)])
        assert _sources(result) == {"m0.dcm", "m1.dcm", "m2.dcm"}
        assert "‘many.zip/m3.dcm’, ‘many.zip/m4.dcm’" in result.problems[0].message

    def test_a_bomb_member_costs_only_itself(self):
        data = make_zip([("ok.dcm", make_dicom()), ("bomb.dcm", bytes(4 << 20))])
        result = read_uploads([("mixed.zip", data)])
        assert _sources(result) == {"ok.dcm"}
        assert [p.name for p in result.problems] == ["mixed.zip/bomb.dcm"]
        assert "zip bomb" in result.problems[0].message


class TestRecovery:
    def test_a_zip_cut_inside_a_member_gives_the_members_before_it(self):
        d = damaged_zip("truncated-in-member", "cut", n_good=3)
        members = list(iter_zip(d.name, d.data))
        assert [m.label for m in members if m.data] == d.intact
        assert [m.label for m in members if m.problem] == ["cut.zip", "cut.zip/cut_m2.dcm"]
        assert "any file stored after ‘cut_m2.dcm’ is missing" in str(members[0].problem)

    def test_members_written_with_data_descriptors_are_delimited_by_them(self):
        class Unseekable(io.BytesIO):  # a pipe: zipfile then writes each size after its data
            def seek(self, *args):
                raise OSError("not seekable")

        members = [(f"d{i}.dcm", make_dicom(position=(0, 0, i))) for i in range(3)]
        buf = Unseekable()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:  # unseekable: sizes after the data
            for name, member in members:
                zf.writestr(name, member)
        data = buf.getvalue()
        assert struct.unpack_from("<H", data, 6)[0] & 0x08  # flag bit 3: a data descriptor follows
        recovered = recover_zip(data[: data.index(b"PK\x01\x02") + 10])
        assert recovered.names == ["d0.dcm", "d1.dcm", "d2.dcm"] and recovered.cut is None
        assert [recovered.zf.read(n) for n, _ in members] == [m for _, m in members]

    def test_nothing_recoverable_is_one_plain_problem(self):
        with pytest.raises(NotAnImageError, match="neither its table of contents nor any file"):
            read_uploads([("junk.zip", b"PK" + bytes(100))])

    def test_a_zip_whose_first_header_is_damaged_is_still_a_zip(self):
        data = make_zip([("a.dcm", make_dicom())])
        assert is_zip("study.zip", b"PK\x03\x09" + data[4:])
        assert not is_zip("study.dcm", b"PK\x03\x09" + data[4:])

    def test_a_directory_pointing_past_the_end_is_read_from_the_members_own_headers(self):
        d = damaged_zip("bad-end-record", "eocd", n_good=2)
        result = read_uploads([(d.name, d.data)])
        assert {_base(m) for m in d.intact} == _sources(result)
        assert "read from their own headers" in result.problems[0].message
