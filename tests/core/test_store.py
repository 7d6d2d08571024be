"""Tests of core.store: exact round trip of real series, int16 only when lossless, LRU cap, atomic writes."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from core.domain import Window
from core.imaging import Series, Slice, read_paths
from core.store import (
    SeriesStore,
    StoreError,
    StoreMissError,
    get_series,
    has_series,
    list_keys,
    put_series,
    series_bytes,
    store_key,
)

HASH_A = "a" * 64
HASH_B = "b" * 64


@pytest.fixture(scope="module")
def tcia_study(tcia_dir: Path):
    """The TCIA Lung_Dx-A0002 study as read by core.imaging: two series of 30 slices each."""
    result = read_paths(sorted(tcia_dir.glob("Lung_Dx-A0002/*/*/*.dcm")))
    assert result.problems == [] and len(result.studies) == 1
    study = result.studies[0]
    assert [len(se.slices) for se in study.series] == [30, 30]
    return study


def assert_same_series(got: Series, want: Series) -> None:
    """Every field equal; HU identical float32 arrays; sop_instance_uid dropped."""
    for f in dataclasses.fields(Series):
        if f.name != "slices":
            assert getattr(got, f.name) == getattr(want, f.name), f.name
    assert len(got.slices) == len(want.slices)
    for g, w in zip(got.slices, want.slices, strict=True):
        assert g.hu.dtype == np.float32 and g.hu.shape == w.hu.shape
        np.testing.assert_array_equal(g.hu, w.hu)
        for f in dataclasses.fields(Slice):
            if f.name == "sop_instance_uid":
                assert g.sop_instance_uid is None
            elif f.name != "hu":
                assert getattr(g, f.name) == getattr(w, f.name), f.name


def picture_series(key: str, values: np.ndarray, n: int = 2) -> Series:
    slices = [Slice(hu=values.astype(np.float32) + i, source=f"p{i}.png") for i in range(n)]
    return Series(study_key=key, series_key=key, modality="OT", source_kind="png", slices=slices,
                  spacing_mm=(None, None, None), metadata={"rows": int(values.shape[0]), "note": ("a", 1)},
                  hu_is_estimated=True, description="pictures")


def noise_series(key: str, seed: int, shape=(64, 64)) -> Series:
    """Incompressible integer HU, so file sizes are predictable for the cap tests."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1024, 3000, size=shape).astype(np.float32)
    return Series(study_key=key, series_key=key, modality="CT", source_kind="dicom",
                  slices=[Slice(hu=hu, source="x.dcm")], spacing_mm=(1.0, 0.5, 0.5))


class TestStoreKey:
    def test_key_joins_content_hash_and_series_key(self):
        assert store_key(HASH_A, "0123456789abcdef") == f"{HASH_A}-0123456789abcdef"

    @pytest.mark.parametrize("part", ["", "ABCDEF0123", "../../etc", "a" * 129, None])
    def test_a_bad_part_is_refused(self, part):
        with pytest.raises(StoreError):
            store_key(part, "0123456789abcdef")
        with pytest.raises(StoreError):
            store_key(HASH_A, part)

    def test_a_path_outside_the_store_cannot_be_named(self, tmp_path):
        with pytest.raises(StoreError):
            SeriesStore(tmp_path, 10**6).path("../x")


class TestRoundTrip:
    def test_tcia_series_come_back_identical(self, tmp_path, tcia_study):
        store = SeriesStore(tmp_path / "store", 10**9)
        for series in tcia_study.series:
            key = store.put(series, tcia_study.content_hash)
            assert key == store_key(tcia_study.content_hash, series.series_key) and store.has(key)
            assert_same_series(store.get(key), series)

    def test_one_slice_can_be_read_alone(self, tmp_path, tcia_study):
        store = SeriesStore(tmp_path / "store", 10**9)
        series = tcia_study.series[0]
        key = store.put(series, tcia_study.content_hash)
        got = store.get_slice(key, 17)
        want = series.slices[17]
        np.testing.assert_array_equal(got.hu, want.hu)
        assert got.hu.dtype == np.float32 and got.source == want.source
        assert got.position_mm == want.position_mm and got.windows == want.windows
        with pytest.raises(StoreError, match="no slice 30"):
            store.get_slice(key, 30)

    def test_ct_hu_are_stored_as_int16(self, tmp_path, tcia_study):
        store = SeriesStore(tmp_path / "store", 10**9)
        series = tcia_study.series[0]
        key = store.put(series, tcia_study.content_hash)
        with h5py.File(store.path(key), "r") as h5:
            assert h5["hu/00000"].dtype == np.int16
        size = store.path(key).stat().st_size
        assert size < series_bytes(series) / 1.9  # float32 in memory; int16 on disk

    def test_non_integral_hu_are_kept_as_float32(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**9)
        series = picture_series("c" * 32, np.linspace(-1000.25, 400.5, 48 * 40).reshape(48, 40))
        key = store.put(series, HASH_A)
        with h5py.File(store.path(key), "r") as h5:
            assert h5["hu/00000"].dtype == np.float32
        assert_same_series(store.get(key), series)

    def test_hu_beyond_int16_are_kept_as_float32(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**9)
        series = picture_series("c" * 32, np.full((8, 8), 40000.0))
        key = store.put(series, HASH_A)
        with h5py.File(store.path(key), "r") as h5:
            assert h5["hu/00000"].dtype == np.float32
        np.testing.assert_array_equal(store.get(key).slices[0].hu, series.slices[0].hu)

    def test_windows_tuples_and_slices_of_different_sizes_round_trip(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**9)
        slices = [Slice(hu=np.zeros((4, 6), np.float32), source="a.png", windows=(Window(-600.0, 1500.0),)),
                  Slice(hu=np.ones((5, 3), np.float32), source="b.png", instance_number=7, position_mm=-2.5)]
        series = Series(study_key="d" * 32, series_key="d" * 32, modality="OT", source_kind="png", slices=slices,
                        spacing_mm=(2.0, None, 0.7), metadata={"k": [1, 2.5, None], "t": (1, (2, 3))})
        got = store.get(store.put(series, HASH_A))
        assert_same_series(got, series)
        assert isinstance(got.slices[0].windows[0], Window) and got.metadata["t"] == (1, (2, 3))

    def test_no_raw_dicom_uid_reaches_the_file(self, tmp_path, tcia_study):
        store = SeriesStore(tmp_path / "store", 10**9)
        series = tcia_study.series[0]
        uid = series.slices[0].sop_instance_uid
        assert uid and uid.startswith("1.")
        key = store.put(series, tcia_study.content_hash)
        assert uid.encode() not in store.path(key).read_bytes()

    def test_an_unstorable_metadata_value_is_refused_and_leaves_nothing(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**9)
        series = picture_series("e" * 32, np.zeros((4, 4)))
        series.metadata["bad"] = object()
        with pytest.raises(StoreError, match="cannot be stored"):
            store.put(series, HASH_A)
        assert list((tmp_path / "store").iterdir()) == []


class TestMissesAndCorruption:
    def test_an_unknown_key_is_a_miss(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**6)
        key = store_key(HASH_A, "f" * 32)
        assert not store.has(key)
        with pytest.raises(StoreMissError):
            store.get(key)
        with pytest.raises(KeyError):  # a miss is also a KeyError
            store.get(key)

    def test_a_truncated_file_is_a_miss_and_is_removed(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**9)
        key = store.put(noise_series("1" * 32, 0), HASH_A)
        data = store.path(key).read_bytes()
        store.path(key).write_bytes(data[: len(data) // 2])
        with pytest.raises(StoreMissError, match="could not be read"):
            store.get(key)
        assert not store.has(key)


class TestEviction:
    def test_least_recently_used_series_go_first_down_to_the_cap(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**9)
        keys = [store.put(noise_series(f"{i}" * 32, i), HASH_A) for i in range(1, 5)]
        size = store.path(keys[0]).stat().st_size
        for age, key in enumerate(keys):  # key 0 oldest ... key 3 newest
            t = time.time() - 1000 + 10 * age
            os.utime(store.path(key), (t, t))
        store.get(keys[0])  # key 0 is now the most recently used
        store.max_bytes = int(2.5 * size)
        evicted = store.evict()
        assert evicted == [keys[1], keys[2]]
        assert store.keys() == [keys[0], keys[3]]
        assert store.total_bytes() <= store.max_bytes

    def test_a_put_evicts_others_but_never_itself(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 1)  # smaller than any series
        first = store.put(noise_series("1" * 32, 1), HASH_A)
        assert store.keys() == [first]
        second = store.put(noise_series("2" * 32, 2), HASH_A)
        assert store.keys() == [second]

    def test_putting_the_same_series_again_does_not_rewrite_it(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**9)
        series = noise_series("1" * 32, 1)
        key = store.put(series, HASH_A)
        inode = store.path(key).stat().st_ino
        assert store.put(series, HASH_A) == key and store.path(key).stat().st_ino == inode

    def test_keys_of_one_upload(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**9)
        a1 = store.put(noise_series("1" * 32, 1), HASH_A)
        a2 = store.put(noise_series("2" * 32, 2), HASH_A)
        b1 = store.put(noise_series("1" * 32, 1), HASH_B)
        assert set(store.keys(HASH_A)) == {a1, a2} and store.keys(HASH_B) == [b1]
        assert set(store.keys()) == {a1, a2, b1}

    def test_stale_temporary_files_are_removed_and_fresh_ones_kept(self, tmp_path):
        store = SeriesStore(tmp_path / "store", 10**9)
        stale, fresh = store.root / ".old-x.tmp", store.root / ".new-x.tmp"
        stale.write_bytes(b"x")
        fresh.write_bytes(b"x")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        store.evict()
        assert not stale.exists() and fresh.exists()

    def test_a_cap_that_is_not_positive_is_refused(self, tmp_path):
        with pytest.raises(StoreError):
            SeriesStore(tmp_path, 0)


class TestConcurrency:
    def test_readers_never_see_a_partial_file_while_a_writer_replaces_it(self, tmp_path):
        """A writer keeps replacing the file of one key (put after delete); readers get all or a miss."""
        store = SeriesStore(tmp_path / "store", 10**9)
        series = noise_series("1" * 32, 7, shape=(256, 256))
        key = store.put(series, HASH_A)
        want = series.slices[0].hu
        errors: list[BaseException] = []
        reads = {"hit": 0, "miss": 0}
        done = threading.Event()

        def writer() -> None:
            try:
                for _ in range(15):
                    store.delete(key)
                    store.put(series, HASH_A)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                done.set()

        def reader() -> None:
            other = SeriesStore(store.root, 10**9)
            while not done.is_set():
                try:
                    got = other.get(key)
                except StoreMissError as exc:
                    if "could not be read" in str(exc):
                        errors.append(exc)  # a partial file: the atomic rename failed
                        return
                    reads["miss"] += 1
                    continue
                if not np.array_equal(got.slices[0].hu, want):
                    errors.append(AssertionError("a reader got different HU"))
                    return
                reads["hit"] += 1

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == [] and reads["hit"] > 0
        assert [p.name for p in store.root.iterdir()] == [f"{key}.h5"]  # no temporary file left


class TestModuleFunctions:
    def test_the_app_store_lives_under_the_var_folder(self, isolated_settings, tcia_study):
        series = tcia_study.series[1]
        key = put_series(series, tcia_study.content_hash)
        assert (isolated_settings.var_dir / "store" / f"{key}.h5").is_file()
        assert has_series(key) and list_keys(tcia_study.content_hash) == [key]
        assert_same_series(get_series(key), series)

    def test_the_cap_comes_from_the_setting(self, isolated_settings, monkeypatch):
        from core import settings as config

        monkeypatch.setenv("LUNGREVIEW_STORE_MAX_MB", "3")
        config.get_settings.cache_clear()
        assert SeriesStore.from_settings().max_bytes == 3 * 1024 * 1024


class TestMemoryCache:
    """The process-wide cache of decoded series in front of the disk store."""

    def test_the_least_recently_used_series_goes_first_and_the_cap_holds(self):
        from core.store import MemoryCache, series_bytes

        a, b, c = (noise_series(k, seed) for k, seed in (("aa" * 8, 1), ("bb" * 8, 2), ("cc" * 8, 3)))
        size = series_bytes(a)
        cache = MemoryCache(2 * size)
        cache.put("a", a)
        cache.put("b", b)
        assert cache.get("a") is a  # now b is the least recently used
        cache.put("c", c)
        assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
        assert cache.total_bytes == 2 * size and len(cache) == 2

    def test_one_series_over_the_cap_is_kept_until_the_next(self):
        from core.store import MemoryCache

        big = noise_series("dd" * 8, 4)
        cache = MemoryCache(16)
        cache.put("big", big)
        assert cache.get("big") is big
        cache.put("next", noise_series("ee" * 8, 5))
        assert cache.get("big") is None

    def test_a_non_positive_cap_is_refused(self):
        from core.store import MemoryCache, StoreError

        with pytest.raises(StoreError, match="positive"):
            MemoryCache(0)

    def test_get_series_serves_memory_first_then_disk_then_raises(self, isolated_settings, tcia_study):
        from core.store import StoreMissError, hold_series, memory_cache

        series = tcia_study.series[0]
        key = put_series(series, tcia_study.content_hash)
        memory_cache().clear()
        from_disk = get_series(key)  # read back from the file, now held in memory
        assert_same_series(from_disk, series)
        assert get_series(key) is from_disk
        SeriesStore.from_settings().delete(key)
        assert get_series(key) is from_disk  # evicted from disk, still served from memory
        memory_cache().clear()
        with pytest.raises(StoreMissError):
            get_series(key)
        hold_series(key, series)  # held in memory only (e.g. the disk refused it)
        assert get_series(key) is series

    def test_a_new_store_folder_gets_a_new_cache(self, isolated_settings, tmp_path, monkeypatch):
        from core import settings as config
        from core.store import hold_series, memory_cache

        hold_series("k", noise_series("ff" * 8, 6))
        first = memory_cache()
        monkeypatch.setenv("LUNGREVIEW_VAR_DIR", str(tmp_path / "other"))
        config.get_settings.cache_clear()
        assert memory_cache() is not first and len(memory_cache()) == 0
