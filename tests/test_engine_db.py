"""Engine: the public API, limits, the directory lock, closing, and large values."""

from __future__ import annotations

import os

import pytest

from engine.db import Engine
from engine.errors import StorageError
from engine.options import EngineOptions
from tests.engine_helpers import FaultyFS, open_engine, segment_files, temp_dir


def test_put_get_delete_scan_len() -> None:
    with temp_dir() as d, Engine.open(d) as engine:
        assert engine.get(b"a") is None
        engine.put(b"b", b"2")
        engine.put(b"a", b"1")
        engine.put(b"c", b"")
        engine.put(b"a", b"1bis")
        engine.delete(b"b")
        engine.delete(b"never")
        assert engine.get(b"a") == b"1bis"
        assert engine.get(b"b") is None
        assert engine.get(b"c") == b""
        assert len(engine) == 2
        assert list(engine.scan()) == [(b"a", b"1bis"), (b"c", b"")]
        assert list(engine.scan(b"b")) == [(b"c", b"")]
        assert list(engine.scan(b"a", b"c")) == [(b"a", b"1bis")]
        assert list(engine.scan(end=b"a")) == []


def test_writes_are_buffered_until_commit() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs).engine
        writes = fs.pwrite_calls
        assert not engine.has_uncommitted
        engine.put(b"k", b"v")
        engine.delete(b"k")
        engine.write_batch([(b"x", b"y")])
        assert engine.has_uncommitted
        assert fs.pwrite_calls == writes  # no syscall on the write path
        engine.commit()
        assert fs.pwrite_calls == writes + 1  # one write for the whole group
        assert not engine.has_uncommitted
        engine.close()


def test_write_batch_applies_in_order() -> None:
    with temp_dir() as d:
        engine = Engine.open(d)
        engine.put(b"gone", b"1")
        engine.write_batch([(b"k", b"1"), (b"k", b"2"), (b"gone", None), (b"new", b"3")])
        engine.write_batch([])
        expected = [(b"k", b"2"), (b"new", b"3")]
        assert list(engine.scan()) == expected
        engine.close()
        with Engine.open(d) as reopened:
            assert list(reopened.scan()) == expected


def test_limits_reject_without_writing_anything() -> None:
    with temp_dir() as d:
        engine = open_engine(d, value_bytes_max=10, key_bytes_max=4).engine
        with pytest.raises(ValueError, match="over the limit"):
            engine.put(b"k", b"x" * 11)
        with pytest.raises(ValueError):
            engine.put(b"kkkkk", b"x")
        with pytest.raises(ValueError):
            engine.delete(b"kkkkk")
        with pytest.raises(ValueError):
            engine.write_batch([(b"ok", b"fine"), (b"k", b"x" * 11)])
        assert not engine.has_uncommitted
        assert len(engine) == 0
        engine.put(b"k", b"x" * 10)  # at the limit is fine
        engine.close()


def test_options_are_checked() -> None:
    for bad in [{"fsync": "sometimes"}, {"segment_size_bytes": 10},
                {"value_bytes_max": 513 * 1024 * 1024}, {"key_bytes_max": 0}]:
        with pytest.raises(ValueError):
            EngineOptions(**bad)  # type: ignore[arg-type]


def test_open_creates_nested_directories() -> None:
    with temp_dir() as d:
        path = os.path.join(d, "a", "b")
        with Engine.open(path) as engine:
            engine.put(b"k", b"v")
        assert len(segment_files(path)) == 1


def test_a_directory_is_opened_by_one_engine_at_a_time() -> None:
    with temp_dir() as d:
        first = Engine.open(d)
        with pytest.raises(StorageError, match="another engine"):
            Engine.open(d)
        first.close()
        Engine.open(d).close()


def test_close_is_idempotent_and_commits() -> None:
    with temp_dir() as d:
        engine = Engine.open(d)
        engine.put(b"k", b"v")
        engine.close()
        engine.close()
        assert engine.closed
        with pytest.raises(StorageError, match="closed"):
            engine.put(b"k", b"v2")
        with pytest.raises(StorageError, match="closed"):
            engine.delete(b"k")
        with Engine.open(d) as reopened:
            assert reopened.get(b"k") == b"v"


def test_close_on_a_full_disk_raises_but_still_closes() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs).engine
        engine.put(b"k", b"v")
        fs.space_bytes = 0
        with pytest.raises(StorageError, match="unwritten"):
            engine.close()
        assert engine.closed
        engine.close()
        Engine.open(d).close()  # the lock was released


def test_stats() -> None:
    with temp_dir() as d:
        engine = Engine.open(d, EngineOptions(fsync="always"))
        engine.put(b"k", b"v" * 100)
        engine.commit()
        stats = engine.stats()
        for name in ["log_bytes", "log_segments", "records_replayed",
                     "bytes_truncated_on_recovery", "commits", "fsyncs", "memtable_bytes",
                     "keys"]:
            assert isinstance(stats[name], int), name
        assert stats["commits"] == 1
        assert stats["fsyncs"] >= 1
        assert stats["keys"] == 1
        assert stats["memtable_bytes"] > 100
        engine.close()


def test_large_value_round_trips_through_log_and_recovery() -> None:
    big = os.urandom(1 << 20) * 64  # 64 MiB
    with temp_dir() as d:
        engine = open_engine(d, segment_size_bytes=1 << 20).engine
        engine.put(b"small", b"1")
        engine.put(b"big", big)
        engine.put(b"after", b"2")
        engine.commit()
        engine.close()
        opened = open_engine(d, segment_size_bytes=1 << 20)
        assert opened.reports == []
        assert opened.engine.get(b"big") == big
        assert opened.engine.get(b"after") == b"2"
        opened.engine.close()


def test_reporter_defaults_to_the_engine_logger() -> None:
    import logging

    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    logging.getLogger("engine").addHandler(handler)
    try:
        with temp_dir() as d:
            Engine.open(d).close()
            [seg] = segment_files(d)
            with open(seg, "ab") as f:
                f.write(b"\x01junk")
            Engine.open(d).close()
    finally:
        logging.getLogger("engine").removeHandler(handler)
    assert any("incomplete record header" in r.getMessage() for r in records)
