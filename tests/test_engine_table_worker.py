"""The table workers (engine/table_worker.py): background flushes and compactions written by
helper processes, and every way such an attempt can fail falling back to the in-process
path with nothing lost (db.py invariant 10)."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import pytest

from engine import db, filenames, table_worker
from engine.compactor import Stopped
from engine.db import WORKER_FLUSH_MIN_BYTES, Engine
from engine.errors import StorageError
from engine.options import EngineOptions
from engine.table_format import table_name
from engine.table_worker import FLUSHES, Built, FlushRequest
from tests.engine_helpers import Opened, open_engine, temp_dir

MEMTABLE = 2 * WORKER_FLUSH_MIN_BYTES  # every flush is large enough for the worker


def wait_flushed(engine: Engine, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.stats()["frozen_memtables"]:
        assert time.monotonic() < deadline, "flushes did not finish"
        time.sleep(0.01)


def write_mix(engine: Engine, model: dict[bytes, bytes], rnd: random.Random,
              rounds: int) -> None:
    """Puts, overwrites, deletes (of present and absent keys) and batches, committed in
    groups as the server does; model follows."""
    keys = list(model)
    for i in range(rounds):
        roll = rnd.random()
        if roll < 0.6 or not keys:
            key = rnd.randbytes(rnd.randint(1, 24))
            value = rnd.randbytes(rnd.randint(0, 300))
            engine.put(key, value)
            if key not in model:
                keys.append(key)
            model[key] = value
        elif roll < 0.75:
            key = rnd.choice(keys)
            model[key] = rnd.randbytes(50)
            engine.put(key, model[key])
        elif roll < 0.9:
            key = rnd.choice(keys) if rnd.random() < 0.7 else rnd.randbytes(9)
            engine.delete(key)
            model.pop(key, None)
        else:
            ops: list[tuple[bytes, bytes | None]] = []
            for _ in range(rnd.randint(1, 20)):
                key = rnd.choice(keys)
                value = None if rnd.random() < 0.3 else rnd.randbytes(30)
                ops.append((key, value))
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
            engine.write_batch(ops)
        if i % 200 == 199:
            engine.commit()
    engine.commit()


def written(directory: str, seed: int, rounds: int) -> tuple[Opened, dict[bytes, bytes]]:
    """An engine with table workers and 2 MiB memtables after write_mix, flushes done."""
    opened = open_engine(directory, memtable_size_bytes=MEMTABLE, table_workers=True,
                         fsync="no")
    model: dict[bytes, bytes] = {}
    write_mix(opened.engine, model, random.Random(seed), rounds)
    wait_flushed(opened.engine)
    return opened, model


def assert_holds(engine: Engine, model: dict[bytes, bytes]) -> None:
    assert dict(engine.scan()) == model
    for key, value in model.items():
        assert engine.get(key) == value


def test_worker_builds_large_flushes_and_every_key_reads_back() -> None:
    with temp_dir() as directory:
        opened, model = written(directory, 7, 60_000)
        engine = opened.engine
        stats = engine.stats()
        assert stats["table_worker_failures"] == 0, opened.reports
        assert stats["flushes_by_worker"] >= 3
        assert stats["flushes_by_worker"] == stats["flushes"]
        assert_holds(engine, model)
        engine.close()
        reopened = open_engine(directory, memtable_size_bytes=MEMTABLE).engine
        assert_holds(reopened, model)
        reopened.close()
        assert not [n for n in os.listdir(directory) if filenames.is_table_temp(n)]


def test_worker_writes_the_same_table_as_an_in_process_flush(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, and by the worker from batches in key order (the flush thread sorts) or in
    the dict's order (the worker sorts): the same table, byte for byte."""
    tables: dict[str, bytes] = {}
    sent: list[bool] = []
    honest_flush = FLUSHES.flush

    def noting_flush(request: FlushRequest, *args: Any) -> Built:
        sent.append(request.ordered)
        return honest_flush(request, *args)

    monkeypatch.setattr(FLUSHES, "flush", noting_flush)
    for mode in ("in-process", "worker sorts", "flush thread sorts"):
        monkeypatch.setattr(table_worker.COMPACTIONS, "busy",
                            lambda mode=mode: mode == "flush thread sorts")
        sent.clear()
        with temp_dir() as directory:
            engine = open_engine(directory, memtable_size_bytes=MEMTABLE,
                                 table_workers=mode != "in-process", fsync="no").engine
            write_mix(engine, {}, random.Random(3), 30_000)
            wait_flushed(engine)
            stats = engine.stats()
            assert stats["flushes"] >= 1
            assert stats["flushes_by_worker"] == (0 if mode == "in-process" else stats["flushes"])
            if mode != "in-process":
                assert sent[0] is (mode == "flush thread sorts")
            first = min(n for n in os.listdir(directory) if filenames.parse_table_name(n))
            with open(os.path.join(directory, first), "rb") as f:
                tables[mode] = f.read()
            engine.close()
    assert len(set(tables.values())) == 1


def test_a_killed_worker_costs_one_in_process_flush_and_a_new_worker_takes_over() -> None:
    with temp_dir() as directory:
        opened, model = written(directory, 11, 30_000)
        engine = opened.engine
        assert engine.stats()["flushes_by_worker"] >= 1
        pid = FLUSHES.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        write_mix(engine, model, random.Random(12), 40_000)
        wait_flushed(engine)
        stats = engine.stats()
        assert stats["table_worker_failures"] == 1, opened.reports
        assert any("flush worker failed" in r and "WorkerDied" in r for r in opened.reports)
        assert stats["flushes"] - stats["flushes_by_worker"] == 1  # the fallback
        assert FLUSHES.pid() not in (None, pid)
        assert_holds(engine, model)
        engine.close()
        reopened = open_engine(directory).engine
        assert_holds(reopened, model)
        reopened.close()


def test_a_table_that_does_not_open_is_discarded_and_flushed_in_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    honest_build = FLUSHES.flush

    def damaging_build(*args: Any) -> Built:
        result = honest_build(*args)
        built.append(result.path)
        with open(result.path, "r+b") as table:  # a torn footer
            table.truncate(os.path.getsize(result.path) - 3)
        return result

    monkeypatch.setattr(FLUSHES, "flush", damaging_build)
    with temp_dir() as directory:
        opened, model = written(directory, 5, 30_000)
        engine = opened.engine
        stats = engine.stats()
        assert built and stats["table_worker_failures"] == len(built)
        assert stats["flushes_by_worker"] == 0 and stats["flushes"] == len(built)
        assert any("CorruptionError" in r for r in opened.reports), opened.reports
        for path in built:  # the worker's table was removed, not installed
            assert not os.path.exists(path)
        assert_holds(engine, model)
        engine.close()


def test_an_error_in_the_worker_is_reported_and_the_next_build_works(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker reads a failed build's batches to the end, so the next request finds the
    stream in step (table_worker's protocol)."""
    requests: list[FlushRequest] = []

    def first_to_nowhere(directory: str, number: int, options: EngineOptions,
                         ordered: bool) -> FlushRequest:
        if not requests:
            directory = os.path.join(directory, "missing", "dir")
        requests.append(FlushRequest(directory, number, options, ordered))
        return requests[-1]

    monkeypatch.setattr(db, "FlushRequest", first_to_nowhere)
    with temp_dir() as directory:
        opened, model = written(directory, 23, 60_000)
        engine = opened.engine
        stats = engine.stats()
        assert stats["table_worker_failures"] == 1, opened.reports
        assert any("missing" in r and "in-process" in r for r in opened.reports), opened.reports
        assert stats["flushes_by_worker"] == stats["flushes"] - 1 >= 2
        assert_holds(engine, model)
        engine.close()


def test_a_worker_whose_engine_is_gone_writes_no_table() -> None:
    with temp_dir() as directory:
        request = FlushRequest(directory, 77, EngineOptions(),
                               parent_pid=os.getpid() + 1_000_000)  # never our parent
        batch = ([b"a", b"b"], [b"1", None])
        with pytest.raises(StorageError, match="abandoned"):
            table_worker.build_flush(request, [batch])
        assert os.listdir(directory) == []


def test_close_abandons_a_flush_in_the_worker_and_loses_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: list[str] = []
    honest_flush = FLUSHES.flush

    def recorded_flush(*args: Any) -> Built:
        try:
            built = honest_flush(*args)
        except Stopped:
            outcomes.append("stopped")
            raise
        outcomes.append("built")
        return built

    monkeypatch.setattr(FLUSHES, "flush", recorded_flush)
    # A flush of many slow batches: sent in key order (the paced way; in the dict's order
    # the whole memtable goes at once) in batches of 64 with a 2 ms pause after each.
    monkeypatch.setattr(table_worker.COMPACTIONS, "busy", lambda: True)
    monkeypatch.setattr(db, "_WORKER_BATCH_ENTRIES", 64)
    monkeypatch.setattr(Engine, "_flush_pause", lambda self, written, total: time.sleep(0.002))
    with temp_dir() as directory:
        opened = open_engine(directory, memtable_size_bytes=MEMTABLE, table_workers=True,
                             fsync="no")
        engine, model = opened.engine, {}
        write_mix(engine, model, random.Random(13), 30_000)
        deadline = time.monotonic() + 10
        while not any(filenames.is_table_temp(n) for n in os.listdir(directory)):
            assert time.monotonic() < deadline, "no flush started"
            time.sleep(0.005)
        engine.close()  # the flush is in the worker: ABORT
        assert outcomes[-1] == "stopped", outcomes
        assert not [n for n in os.listdir(directory) if filenames.is_table_temp(n)]
        reopened = open_engine(directory)
        assert_holds(reopened.engine, model)
        reopened.engine.close()
        assert not reopened.reports


def test_small_flushes_stay_in_process_and_the_option_changes_live() -> None:
    with temp_dir() as directory:
        engine = open_engine(directory, memtable_size_bytes=WORKER_FLUSH_MIN_BYTES // 4,
                             table_workers=True, fsync="no").engine
        write_mix(engine, {}, random.Random(17), 6_000)
        wait_flushed(engine)
        stats = engine.stats()
        assert stats["flushes"] >= 1 and stats["flushes_by_worker"] == 0
        engine.tune(memtable_size_bytes=MEMTABLE)
        assert engine.options.table_workers
        engine.tune(table_workers=False)
        assert not engine.options.table_workers
        engine.close()


class DropPrefix:
    """A portable compaction filter (table_worker.PortableFilter) for these tests."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.dropped = 0

    def __call__(self, key: bytes, value: bytes) -> bool:
        if key.startswith(self.prefix):
            self.dropped += 1
            return False
        return True

    def portable(self) -> DropPrefix:
        return DropPrefix(self.prefix)

    def absorb(self, copy: table_worker.PortableFilter) -> None:
        assert isinstance(copy, DropPrefix)
        self.dropped += copy.dropped


def fill_tables(engine: Engine, model: dict[bytes, bytes], seed: int, tables: int) -> None:
    """Write until `tables` flushes happened (each a memtable of MEMTABLE bytes)."""
    rnd = random.Random(seed)
    while engine.stats()["flushes"] < tables:
        write_mix(engine, model, rnd, 5_000)
        wait_flushed(engine)


def test_compactions_run_in_the_worker_with_a_portable_filter() -> None:
    with temp_dir() as directory:
        keep = DropPrefix(b"\x00")
        reports: list[str] = []
        engine = Engine.open(directory, EngineOptions(
            memtable_size_bytes=MEMTABLE, table_workers=True, fsync="no",
            compaction_min_threshold=2), reporter=reports.append, compaction_filter=keep)
        model: dict[bytes, bytes] = {}
        fill_tables(engine, model, 31, 4)
        deadline = time.monotonic() + 30
        while engine.stats()["compactions"] == 0:
            assert time.monotonic() < deadline, "no compaction ran"
            time.sleep(0.01)
        assert engine.compact(full=True) >= 1
        stats = engine.stats()
        assert stats["table_worker_failures"] == 0, reports
        assert stats["compactions_by_worker"] == stats["compactions"] >= 2
        assert stats["tables"] == 1
        dropped = {k for k in model if k.startswith(b"\x00")}
        assert dropped and keep.dropped >= len(dropped)  # counted in the worker, absorbed
        survivors = {k: v for k, v in model.items() if k not in dropped}
        assert_holds(engine, survivors)
        engine.close()


def test_a_filter_that_cannot_leave_the_process_keeps_compactions_in_process() -> None:
    with temp_dir() as directory:
        engine = Engine.open(directory, EngineOptions(
            memtable_size_bytes=MEMTABLE, table_workers=True, fsync="no",
            compaction_min_threshold=2), compaction_filter=lambda key, value: True)
        model: dict[bytes, bytes] = {}
        fill_tables(engine, model, 37, 3)
        assert engine.compact(full=True) >= 1
        stats = engine.stats()
        assert stats["compactions"] >= 1 and stats["compactions_by_worker"] == 0
        assert stats["flushes_by_worker"] == stats["flushes"]
        assert_holds(engine, model)
        engine.close()


def test_a_killed_compaction_worker_costs_one_in_process_compaction() -> None:
    with temp_dir() as directory:
        opened = open_engine(directory, memtable_size_bytes=MEMTABLE, table_workers=True,
                             fsync="no", compaction_min_threshold=32)
        engine, model = opened.engine, {}
        fill_tables(engine, model, 41, 2)
        assert engine.compact(full=True) == 1
        pid = table_worker.COMPACTIONS.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        fill_tables(engine, model, 43, 4)
        assert engine.compact(full=True) == 1
        stats = engine.stats()
        assert stats["table_worker_failures"] == 1, opened.reports
        assert stats["compactions"] == 2 and stats["compactions_by_worker"] == 1
        assert any("compaction worker failed" in r for r in opened.reports)
        assert_holds(engine, model)
        engine.close()


def test_close_abandons_a_compaction_in_the_worker_at_once() -> None:
    with temp_dir() as directory:
        opened = open_engine(directory, memtable_size_bytes=MEMTABLE, table_workers=True,
                             fsync="no", compaction_min_threshold=2,
                             compaction_throughput_bytes_per_s=64 * 1024)
        engine, model = opened.engine, {}
        fill_tables(engine, model, 47, 2)  # ~4 MiB to merge at 64 KiB/s: a minute
        deadline = time.monotonic() + 10
        compaction_temp = table_name(engine.stats()["flushes"] + 1) + ".tmp"
        while not os.path.exists(os.path.join(directory, compaction_temp)):
            assert time.monotonic() < deadline, (os.listdir(directory), opened.reports)
            time.sleep(0.01)
        started = time.monotonic()
        engine.close()
        assert time.monotonic() - started < 3  # ABORT cuts the token bucket's wait short
        assert not [n for n in os.listdir(directory) if filenames.is_table_temp(n)]
        assert opened.reports == []
        reopened = open_engine(directory)
        assert_holds(reopened.engine, model)
        reopened.engine.close()


def test_the_flush_worker_starts_once_the_first_memtable_is_half_full() -> None:
    """db.py invariant 12: started ahead of the first flush, and not by an engine that never
    fills half a memtable."""
    FLUSHES._died(OSError("test: no worker running"))
    assert FLUSHES.pid() is None
    with temp_dir() as directory:
        engine = open_engine(directory, memtable_size_bytes=MEMTABLE, table_workers=True,
                             fsync="no").engine
        memtable = engine._memtable
        i = 0

        def fill_to(share: float) -> None:
            nonlocal i
            while memtable.approximate_bytes < share * MEMTABLE:
                engine.put(b"key%08d" % i, b"v" * 100)
                i += 1
                if i % 100 == 0:
                    engine.commit()
            engine.commit()

        fill_to(0.4)
        time.sleep(0.3)
        assert FLUSHES.pid() is None
        fill_to(0.55)
        deadline = time.monotonic() + 20
        while FLUSHES.pid() is None:
            assert time.monotonic() < deadline, "the flush worker was not started"
            time.sleep(0.01)
        assert engine.stats()["flushes"] == 0
        fill_to(0.99)
        while engine.stats()["flushes"] + engine.stats()["frozen_memtables"] == 0:
            engine.put(b"key%08d" % i, b"v" * 100)  # the commit past the size freezes it
            i += 1
            engine.commit()
        wait_flushed(engine)
        assert engine.stats()["flushes_by_worker"] == 1
        assert engine.get(b"key00000000") == b"v" * 100
        engine.close()
