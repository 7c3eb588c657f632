"""compactor.write_table and batched: batches in, one table out, pause() between batches;
and the flush thread's pacing (db.Engine._flush_pause)."""

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
                              lambda: False, pause=pauses.append)
        assert written is not None
        meta, reader, _ = written
        try:
            assert pauses == [300, 600, 900, 1200, 1500, 1800, 2000]  # entries written
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


@pytest.mark.parametrize(("frozen", "fill", "written", "sleeps"), [
    (1, 0.0, 0, True),  # just frozen: nothing is due yet
    (1, 0.4, 400, True),  # 40% written at 40% fill: on schedule
    (1, 0.4, 399, False),  # behind: no sleep until it catches up
    (1, 0.8, 799, False),
    (1, 0.8, 800, True),
    (1, 1.2, 999, False),  # past the fill it should be done by: flat out
    (0, 0.0, 0, True),
    (2, 0.0, 999, False),  # a writer is about to wait for this flush
])
def test_flush_pause_sleeps_only_ahead_of_schedule_and_while_no_writer_waits(
        frozen: int, fill: float, written: int, sleeps: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert db._FLUSH_DONE_AT_FILL == 1.0
    with temp_dir() as d:
        size = 1 << 20
        engine = Engine.open(d, EngineOptions(fsync="no", background=False,
                                              frozen_memtables_max=2,
                                              memtable_size_bytes=size))
        try:
            waits: list[float] = []
            monkeypatch.setattr(engine, "_stop_event", _RecordingEvent(waits))
            view = engine._view
            monkeypatch.setattr(engine, "_view", type(view)(tuple(
                engine._memtable for _ in range(frozen)), view.tables))
            monkeypatch.setattr(engine._memtable, "approximate_bytes", int(size * fill))
            engine._flush_pause(written, total=1000)
            assert waits == ([db._FLUSH_PAUSE_S] if sleeps else [])
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
