"""Flushed memtables are freed on the loop thread a slice per commit (db.py invariant 11),
and never while a scan still reads one."""

from __future__ import annotations

import pytest

from engine import db
from engine.memtable import Memtable
from tests.engine_helpers import open_engine, temp_dir


def fill(engine: db.Engine, start: int, count: int) -> None:
    for i in range(start, start + count):
        engine.put(b"key%07d" % i, b"v" * 50)
        if i % 100 == 99:
            engine.commit()
    engine.commit()


def test_a_flushed_memtable_is_freed_over_the_next_commits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "_FREE_SLICE_ENTRIES", 100)
    with temp_dir() as directory:
        engine = open_engine(directory, background=False, memtable_size_bytes=64 * 1024).engine
        fill(engine, 0, 600)  # one flush (inline) at ~400 entries of ~160 bytes
        assert engine.stats()["flushes"] == 1
        held = engine._flushed_memtables[0] if engine._flushed_memtables else None
        commits = 0
        while engine._flushed_memtables or engine._dismantling is not None:
            engine.put(b"other", b"x")
            engine.commit()
            commits += 1
            assert commits < 50, "the flushed memtable is never freed"
        assert commits >= 3  # the values, then 100 keys per commit: not all at once
        assert held is None or len(held) == 0
        assert [k for k, _ in engine.scan()][:2] == [b"key0000000", b"key0000001"]
        engine.close()


def test_a_scan_keeps_a_flushed_memtable_whole_until_it_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """White-box: a flushed memtable that an iterator still reads (a scan that began before
    the flush) is left alone by the commits' chores until the iterator is gone."""
    monkeypatch.setattr(db, "_FREE_SLICE_ENTRIES", 10)
    with temp_dir() as directory:
        engine = open_engine(directory, background=False).engine
        memtable = Memtable()
        for i in range(300):
            memtable.put(b"key%07d" % i, b"v" * 50)
        flushed = memtable.freeze(1)
        scan = flushed.scan(b"", None)
        first = [next(scan) for _ in range(5)]
        engine._flushed_memtables.append(flushed)
        del flushed
        for _ in range(40):
            engine.put(b"zz", b"x")
            engine._chores_due = True
            engine.commit()
        assert engine._flushed_memtables and engine._dismantling is None
        keys = [k for k, _ in first + list(scan)]
        assert keys == [b"key%07d" % i for i in range(300)]
        del scan
        for _ in range(40):
            engine.put(b"zz", b"x")
            engine.commit()
        assert not engine._flushed_memtables and engine._dismantling is None
        engine.close()
