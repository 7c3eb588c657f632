"""The flush worker (engine/flush_worker.py): background flushes built by a helper process,
and every way such an attempt can fail falling back to an in-process flush with nothing
lost (db.py invariant 10)."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import pytest

from engine import db, filenames, flush_worker
from engine.db import FLUSH_PROCESS_MIN_BYTES, Engine
from engine.errors import StorageError
from engine.flush_worker import FlushRequest, FlushResult, FlushWorker
from engine.options import EngineOptions
from tests.engine_helpers import open_engine, temp_dir

MEMTABLE = 2 * FLUSH_PROCESS_MIN_BYTES  # every flush is large enough for the worker


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


def assert_holds(engine: Engine, model: dict[bytes, bytes]) -> None:
    assert dict(engine.scan()) == model
    for key, value in model.items():
        assert engine.get(key) == value


def test_worker_builds_large_flushes_and_every_key_reads_back() -> None:
    with temp_dir() as directory:
        opened = open_engine(directory, memtable_size_bytes=MEMTABLE, flush_process=True,
                             fsync="no")
        engine, model, rnd = opened.engine, {}, random.Random(7)
        write_mix(engine, model, rnd, 60_000)
        wait_flushed(engine)
        stats = engine.stats()
        # Replays that did not match the memtable (tombstone handling, batches, deletes of
        # absent keys) would show as failures: invariant 2 of flush_worker.
        assert stats["flush_worker_failures"] == 0, opened.reports
        assert stats["flushes_by_worker"] >= 3
        assert stats["flushes_by_worker"] == stats["flushes"]
        assert_holds(engine, model)
        engine.close()
        reopened = open_engine(directory, memtable_size_bytes=MEMTABLE).engine
        assert_holds(reopened, model)
        reopened.close()
        assert not [n for n in os.listdir(directory) if filenames.is_table_temp(n)]


def test_worker_writes_the_same_table_as_an_in_process_flush() -> None:
    tables: list[bytes] = []
    for flush_process in (True, False):
        with temp_dir() as directory:
            engine = open_engine(directory, memtable_size_bytes=MEMTABLE,
                                 flush_process=flush_process, fsync="no").engine
            write_mix(engine, {}, random.Random(3), 30_000)
            wait_flushed(engine)
            stats = engine.stats()
            assert stats["flushes"] >= 1
            assert stats["flushes_by_worker"] == (stats["flushes"] if flush_process else 0)
            first = min(n for n in os.listdir(directory) if filenames.parse_table_name(n))
            with open(os.path.join(directory, first), "rb") as f:
                tables.append(f.read())
            engine.close()
    assert tables[0] == tables[1]


def test_a_killed_worker_costs_one_in_process_flush_and_a_new_worker_takes_over() -> None:
    with temp_dir() as directory:
        opened = open_engine(directory, memtable_size_bytes=MEMTABLE, flush_process=True,
                             fsync="no")
        engine, model, rnd = opened.engine, {}, random.Random(11)
        write_mix(engine, model, rnd, 30_000)
        wait_flushed(engine)
        assert engine.stats()["flushes_by_worker"] >= 1
        pid = FlushWorker.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        write_mix(engine, model, rnd, 40_000)
        wait_flushed(engine)
        stats = engine.stats()
        assert stats["flush_worker_failures"] == 1, opened.reports
        assert any("flush worker failed" in r and "WorkerDied" in r for r in opened.reports)
        assert stats["flushes"] - stats["flushes_by_worker"] == 1  # the fallback
        assert FlushWorker.pid() not in (None, pid)
        assert_holds(engine, model)
        engine.close()
        reopened = open_engine(directory).engine
        assert_holds(reopened, model)
        reopened.close()


def test_a_table_that_does_not_open_is_discarded_and_flushed_in_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    honest_build = FlushWorker.build

    def damaging_build(*args: Any) -> FlushResult:
        result = honest_build(*args)
        built.append(result.path)
        with open(result.path, "r+b") as table:  # a torn footer
            table.truncate(os.path.getsize(result.path) - 3)
        return result

    monkeypatch.setattr(FlushWorker, "build", staticmethod(damaging_build))
    with temp_dir() as directory:
        opened = open_engine(directory, memtable_size_bytes=MEMTABLE, flush_process=True,
                             fsync="no")
        engine, model = opened.engine, {}
        write_mix(engine, model, random.Random(5), 30_000)
        wait_flushed(engine)
        stats = engine.stats()
        assert built and stats["flush_worker_failures"] == len(built)
        assert stats["flushes_by_worker"] == 0 and stats["flushes"] == len(built)
        assert any("CorruptionError" in r for r in opened.reports), opened.reports
        for path in built:  # the worker's table was removed, not installed
            assert not os.path.exists(path)
        assert_holds(engine, model)
        engine.close()


def test_an_error_in_the_worker_is_reported_and_the_next_build_works(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker reads a failed build's batches to the end, so the next request finds the
    stream in step (flush_worker's protocol)."""
    requests: list[FlushRequest] = []

    def first_to_nowhere(directory: str, number: int, options: EngineOptions) -> FlushRequest:
        if not requests:
            directory = os.path.join(directory, "missing", "dir")
        requests.append(FlushRequest(directory, number, options))
        return requests[-1]

    monkeypatch.setattr(db, "FlushRequest", first_to_nowhere)
    with temp_dir() as directory:
        opened = open_engine(directory, memtable_size_bytes=MEMTABLE, flush_process=True,
                             fsync="no")
        engine, model = opened.engine, {}
        write_mix(engine, model, random.Random(23), 60_000)
        wait_flushed(engine)
        stats = engine.stats()
        assert stats["flush_worker_failures"] == 1, opened.reports
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
            flush_worker.build_table(request, [batch])
        assert os.listdir(directory) == []


def test_close_waits_for_a_build_in_progress_and_keeps_it() -> None:
    with temp_dir() as directory:
        opened = open_engine(directory, memtable_size_bytes=MEMTABLE, flush_process=True,
                             fsync="no")
        engine, model = opened.engine, {}
        write_mix(engine, model, random.Random(13), 30_000)
        engine.close()  # most likely while the worker builds the first table
        assert not [n for n in os.listdir(directory) if filenames.is_table_temp(n)]
        reopened = open_engine(directory)
        assert_holds(reopened.engine, model)
        reopened.engine.close()
        assert not reopened.reports


def test_small_flushes_stay_in_process_and_the_option_changes_live() -> None:
    with temp_dir() as directory:
        engine = open_engine(directory, memtable_size_bytes=FLUSH_PROCESS_MIN_BYTES // 4,
                             flush_process=True, fsync="no").engine
        write_mix(engine, {}, random.Random(17), 6_000)
        wait_flushed(engine)
        stats = engine.stats()
        assert stats["flushes"] >= 1 and stats["flushes_by_worker"] == 0
        engine.tune(memtable_size_bytes=MEMTABLE)
        assert engine.options.flush_process
        engine.tune(flush_process=False)
        assert not engine.options.flush_process
        engine.close()
