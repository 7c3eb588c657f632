"""Engine as an LSM: flush, read path through tables, compaction and its filter, obsolete
files, corruption in tables, a full disk, and a 100 MB value through flush and reopen."""

from __future__ import annotations

import os
import time

import pytest

from engine import filenames
from engine.db import Engine
from engine.errors import CorruptionError, StorageError
from engine.options import EngineOptions
from tests.engine_helpers import FaultyFS, open_engine, patch_file, read_bytes, temp_dir

SMALL = {"fsync": "no", "memtable_size_bytes": 4096, "block_size_bytes": 256,
         "background": False}


def table_files(directory: str) -> list[str]:
    return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                  if filenames.parse_table_name(n) is not None)


def test_flush_writes_a_table_drops_covered_log_and_keeps_serving() -> None:
    with temp_dir() as d:
        engine = open_engine(d, **SMALL).engine
        for i in range(500):
            engine.put(b"k%04d" % i, b"v%d" % i)
        engine.delete(b"k0007")
        engine.commit()  # the memtable is over 4 KiB: frozen and (synchronously) flushed
        stats = engine.stats()
        assert stats["flushes"] >= 1 and stats["tables"] >= 1
        assert stats["memtable_entries"] == 0 and stats["frozen_memtables"] == 0
        assert stats["log_segments"] == 1  # covered segments are gone
        engine.put(b"k0001", b"new")
        engine.delete(b"k0002")
        assert engine.get(b"k0001") == b"new"  # memtable shadows the table
        assert engine.get(b"k0002") is None  # memtable tombstone hides the table's value
        assert engine.get(b"k0007") is None  # table tombstone
        assert engine.get(b"k0499") == b"v499"  # from the table
        assert engine.get(b"nope") is None
        expected = {b"k%04d" % i: b"v%d" % i for i in range(500) if i not in (2, 7)}
        expected[b"k0001"] = b"new"
        assert dict(engine.scan()) == expected
        assert list(engine.scan(b"k0005", b"k0009")) == [
            (b"k0005", b"v5"), (b"k0006", b"v6"), (b"k0008", b"v8")]
        assert len(engine) == 498
        engine.close()
        with Engine.open(d, EngineOptions(**SMALL)) as reopened:
            assert dict(reopened.scan()) == expected


def test_background_flush_and_compaction_bound_memory() -> None:
    with temp_dir() as d:
        options = {**SMALL, "background": True, "compaction_min_threshold": 2}
        engine = open_engine(d, **options).engine
        expected = {}
        for i in range(20000):
            key, value = b"k%05d" % (i % 5000), b"%d" % i
            engine.put(key, value)
            expected[key] = value
            if i % 100 == 0:
                engine.commit()
                assert engine.stats()["frozen_memtables"] <= 2  # back-pressure holds
        engine.commit()
        deadline = time.monotonic() + 20
        while engine.stats()["compactions"] == 0:
            assert time.monotonic() < deadline, engine.stats()
            time.sleep(0.01)
        assert dict(engine.scan()) == expected
        stats = engine.stats()
        assert stats["flushes"] > 10 and stats["write_amplification_percent"] > 100
        engine.close()
        with Engine.open(d, EngineOptions(**options)) as reopened:
            assert dict(reopened.scan()) == expected


def test_non_bottommost_compaction_keeps_tombstones_and_turns_filtered_values_into_them() -> None:
    with temp_dir() as d:
        engine = Engine.open(d, EngineOptions(**SMALL), compaction_filter=lambda k, v: v != b"x")
        engine.put(b"a", b"old")
        engine.put(b"b", b"old")
        engine.flush()  # the oldest table: a=old, b=old
        engine.put(b"pad", b"p" * 3000)  # makes the oldest table unlike the newer ones
        engine.flush()
        engine.delete(b"a")
        engine.put(b"b", b"x")  # the filter rejects this value
        engine.flush()
        engine.put(b"c", b"1")
        engine.flush()
        assert engine.stats()["tables"] == 4
        # A compaction of only the two newest tables (the policy: similar sizes) must not
        # resurrect the old values.
        engine._stcs = type(engine._stcs)(min_threshold=2, max_threshold=2,
                                          min_table_bytes=0)
        assert engine.compact() >= 1
        assert engine.get(b"a") is None
        assert engine.get(b"b") is None
        assert dict(engine.scan()) == {b"c": b"1", b"pad": b"p" * 3000}
        engine.compact(full=True)
        assert engine.stats()["tables"] == 1
        assert dict(engine.scan()) == {b"c": b"1", b"pad": b"p" * 3000}
        engine.close()


def test_obsolete_tables_are_deleted_only_after_scans_finish() -> None:
    with temp_dir() as d:
        engine = open_engine(d, **SMALL).engine
        for round_no in range(3):
            for i in range(50):
                engine.put(b"k%03d" % i, b"%d" % round_no)
            engine.flush()
        before = table_files(d)
        assert len(before) == 3
        scan = engine.scan()
        assert next(scan) == (b"k000", b"2")
        engine.compact(full=True)
        assert all(os.path.exists(p) for p in before)  # the scan still reads them
        assert len(list(scan)) == 49
        assert [p for p in before if os.path.exists(p)] == []
        assert len(table_files(d)) == 1
        engine.close()


def test_flipped_byte_in_a_table_block_is_reported_and_other_keys_served() -> None:
    with temp_dir() as d:
        opened = open_engine(d, **SMALL)
        engine = opened.engine
        for i in range(300):
            engine.put(b"k%03d" % i, b"value-%03d" % i)
        engine.flush()
        engine.close()
        [path] = table_files(d)
        patch_file(path, 10, bytes([read_bytes(path)[10] ^ 0x01]))  # inside the first block
        opened = open_engine(d, **SMALL)
        engine = opened.engine
        with pytest.raises(CorruptionError) as info:
            engine.get(b"k000")
        assert path in str(info.value)
        assert engine.get(b"k299") == b"value-299"
        with pytest.raises(CorruptionError):
            list(engine.scan())
        assert engine.stats()["corruption_errors"] == 2
        assert any(path in r for r in opened.reports)
        engine.close()


def test_scan_with_on_corruption_skips_only_the_damaged_block_and_a_broken_table() -> None:
    with temp_dir() as d:
        engine = open_engine(d, **SMALL).engine
        for i in range(300):
            engine.put(b"k%03d" % i, b"value-%03d" % i)
        engine.flush()
        engine.put(b"zz", b"other table")
        engine.flush()
        engine.close()
        first, second = table_files(d)
        patch_file(first, 10, bytes([read_bytes(first)[10] ^ 0x01]))  # inside the first block
        opened = open_engine(d, **SMALL)
        errors: list[CorruptionError] = []
        found = dict(opened.engine.scan(on_corruption=errors.append))
        assert [e.path for e in errors] == [first]
        assert b"k000" not in found and found[b"k299"] == b"value-299"
        assert found[b"zz"] == b"other table"
        assert all(v == b"value-" + k[1:] for k, v in found.items() if k != b"zz")
        assert 250 < len(found) < 301  # one 256-byte block of ~20 entries left out
        assert opened.engine.stats()["corruption_errors"] == 1
        assert list(opened.engine.scan(b"k100", b"k110", on_corruption=errors.append)) == [
            (b"k%03d" % i, b"value-%03d" % i) for i in range(100, 110)]
        opened.engine.close()
        size = os.path.getsize(second)
        patch_file(second, size - 5, b"\x00")  # the footer: a BrokenTable
        opened = open_engine(d, **SMALL)
        errors.clear()
        found = dict(opened.engine.scan(on_corruption=errors.append))
        assert sorted(e.path for e in errors) == [first, second] and b"zz" not in found
        with pytest.raises(CorruptionError):
            list(opened.engine.scan())
        opened.engine.close()


def test_throttled_compaction_takes_at_least_its_bytes_over_the_rate() -> None:
    rate = 256 * 1024
    for limit in (0, rate):
        with temp_dir() as d:
            options = {**SMALL, "memtable_size_bytes": 1 << 20,
                       "compaction_throughput_bytes_per_s": limit}
            engine = open_engine(d, **options).engine
            for table in range(4):
                for i in range(800):
                    engine.put(b"k%d-%04d" % (table, i), os.urandom(100))
                engine.flush()
            started = time.monotonic()
            engine.compact(full=True)
            elapsed = time.monotonic() - started
            stats = engine.stats()
            written = stats["compaction_bytes_written"]
            assert written > 300_000, stats
            burst = engine._limiter.burst_bytes
            if limit:
                # A measured lower bound only: the limiter may oversleep, never undersleep.
                assert elapsed >= (written - burst) / rate, (elapsed, written)
                assert stats["compaction_throttled_ms"] >= 1000 * (written - burst) / rate - 1
            else:
                assert stats["compaction_throttled_ms"] == 0
            engine.close()


def test_tune_changes_limits_live_and_refuses_out_of_range_values() -> None:
    with temp_dir() as d:
        engine = open_engine(d, **{**SMALL, "memtable_size_bytes": 1 << 20}).engine
        for i in range(100):
            engine.put(b"k%03d" % i, b"v" * 100)
        engine.commit()
        assert engine.stats()["tables"] == 0
        engine.tune(memtable_size_bytes=4096)
        engine.commit()  # over the new limit: frozen and flushed
        assert engine.stats()["tables"] == 1
        for i in range(100):
            assert engine.get(b"k%03d" % i) == b"v" * 100  # fills the block cache
        assert engine.stats()["block_cache_bytes"] > 2048
        engine.tune(block_cache_bytes=2048, compaction_throughput_bytes_per_s=1000)
        stats = engine.stats()
        assert stats["block_cache_bytes"] <= 2048
        assert stats["compaction_throughput_bytes_per_s"] == 1000
        with pytest.raises(ValueError):
            engine.tune(memtable_size_bytes=0, block_cache_bytes=1)
        assert engine.stats()["compaction_throughput_bytes_per_s"] == 1000
        assert engine._options.block_cache_bytes == 2048
        engine.close()


def test_damaged_footer_fails_only_that_tables_key_range() -> None:
    with temp_dir() as d:
        engine = open_engine(d, **SMALL).engine
        engine.put(b"m1", b"1")
        engine.put(b"m2", b"2")
        engine.flush()
        engine.put(b"z", b"3")
        engine.flush()
        engine.close()
        first = table_files(d)[0]
        size = os.path.getsize(first)
        patch_file(first, size - 5, b"\x00")  # the magic number
        opened = open_engine(d, **SMALL)
        assert opened.engine.stats()["tables_unreadable_on_open"] == 1
        assert any(first in r for r in opened.reports)
        with pytest.raises(CorruptionError) as info:
            opened.engine.get(b"m1")
        assert first in str(info.value)
        assert opened.engine.get(b"z") == b"3"
        assert opened.engine.get(b"a") is None  # outside the damaged range
        opened.engine.close()


def test_disk_full_keeps_data_readable_and_writes_resume_once_space_is_freed() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs, **{**SMALL, "background": True}).engine
        for i in range(200):
            engine.put(b"k%03d" % i, b"v" * 40)
        engine.commit()
        engine.flush()
        fs.space_bytes = 2000  # a little room, then ENOSPC
        failures = 0
        acked = {}
        for i in range(400):
            key = b"n%03d" % i
            engine.put(key, b"w" * 40)
            try:
                engine.commit()
                acked[key] = b"w" * 40
            except StorageError:
                failures += 1
        assert failures > 0
        for i in range(200):  # nothing already written is damaged
            assert engine.get(b"k%03d" % i) == b"v" * 40
        fs.space_bytes = None  # space freed
        deadline = time.monotonic() + 20
        while True:
            try:
                engine.commit()
                break
            except StorageError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        engine.put(b"after", b"ok")
        engine.commit()
        engine.flush()
        engine.close()
        with Engine.open(d, EngineOptions(**SMALL)) as reopened:
            assert reopened.get(b"after") == b"ok"
            for key, value in acked.items():
                assert reopened.get(key) == value
            assert reopened.get(b"k199") == b"v" * 40


def test_100_mb_value_through_flush_and_reopen() -> None:
    big = os.urandom(1 << 20) * 100
    with temp_dir() as d:
        engine = open_engine(d, fsync="no").engine
        engine.put(b"big", big)
        engine.put(b"small", b"s")
        engine.flush()
        assert engine.stats()["tables"] == 1
        assert engine.get(b"big") == big
        engine.close()
        with Engine.open(d) as reopened:
            assert reopened.stats()["records_replayed"] == 0  # served from the table
            assert reopened.get(b"big") == big
            assert reopened.get(b"small") == b"s"
