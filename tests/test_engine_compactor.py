"""compactor.write_table and batched: batches in, one table out, pause() between batches;
and the flush thread's pause policy (db.Engine._flush_pause)."""

from __future__ import annotations

import pytest

from engine import compactor, db
from engine.compactor import Stopped, batched, write_table
from engine.db import Engine
from engine.fs import OSFileSystem
from engine.options import EngineOptions
from tests.engine_helpers import temp_dir

FS = OSFileSystem()


def entries(n: int) -> list[tuple[bytes, bytes | None]]:
    return [(b"key-%05d" % i, None if i % 9 == 4 else b"v%d" % i) for i in range(n)]


def test_batched_keeps_order_and_splits_at_size() -> None:
    data = entries(1030)
    batches = list(batched(iter(data), 512))
    assert [len(keys) for keys, _ in batches] == [512, 512, 6]
    assert [e for keys, values in batches for e in zip(keys, values, strict=True)] == data
    assert list(batched(iter([]), 512)) == []


def test_write_table_pauses_after_each_batch_and_reads_back() -> None:
    data = entries(2000)
    pauses: list[int] = []
    with temp_dir() as d:
        written = write_table(FS, d, 1, 1, batched(data, 300), EngineOptions(), None,
                              lambda: False, pause=lambda: pauses.append(1))
        assert written is not None
        meta, reader, _ = written
        try:
            assert len(pauses) == 7  # ceil(2000 / 300)
            assert meta.entry_count == 2000
            assert list(reader.scan()) == data
        finally:
            reader.close()


def test_write_table_stops_between_batches_and_leaves_nothing() -> None:
    calls = 0

    def stop_on_second_check() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 2

    with temp_dir() as d:
        with pytest.raises(Stopped):
            write_table(FS, d, 1, 1, batched(entries(5000), 1000), EngineOptions(), None,
                        stop_on_second_check)
        assert FS.listdir(d) == []
        assert write_table(FS, d, 2, 2, iter(()), EngineOptions(), None, lambda: False) is None
        assert FS.listdir(d) == []


@pytest.mark.parametrize("frozen", [0, 1, 2])
def test_flush_pause_sleeps_only_while_no_writer_waits(frozen: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with temp_dir() as d:
        engine = Engine.open(d, EngineOptions(fsync="no", background=False,
                                              frozen_memtables_max=2))
        try:
            waits: list[float] = []
            monkeypatch.setattr(engine, "_stop_event", _RecordingEvent(waits))
            view = engine._view
            monkeypatch.setattr(engine, "_view", type(view)(tuple(
                engine._memtable for _ in range(frozen)), view.tables))
            engine._flush_pause()
            assert waits == ([db._FLUSH_PAUSE_S] if frozen < 2 else [])
        finally:
            monkeypatch.undo()
            engine.close()


class _RecordingEvent:
    def __init__(self, waits: list[float]) -> None:
        self.waits = waits

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return False


def test_batch_size_bounds_the_work_between_pauses() -> None:
    assert 64 <= compactor.BATCH_ENTRIES <= 4096
