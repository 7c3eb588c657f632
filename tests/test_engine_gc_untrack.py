"""The memtable's big containers stay out of the garbage collector (engine/gc_untrack.py),
and an engine that holds them is still freed once closed and dropped."""

from __future__ import annotations

import gc
import random
import weakref
from pathlib import Path

import pytest

from engine.db import Engine
from engine.errors import StorageError
from engine.gc_untrack import untrack
from engine.memtable import Memtable
from engine.options import EngineOptions
from engine.sorted_runs import TAIL_KEYS_MAX, SortedRuns


def _keys(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(12) for _ in range(n)]


def test_untrack_takes_a_container_out_and_is_idempotent() -> None:
    data: dict[bytes, bytes | None] = {b"k": b"v"}
    runs = [b"a", b"b"]
    holder = type("Holder", (dict,), {})()  # a dict subclass: tracked from birth
    assert gc.is_tracked(runs) and gc.is_tracked(holder)
    for obj in (data, runs, holder):
        untrack(obj)  # type: ignore[arg-type]
        untrack(obj)  # type: ignore[arg-type]
        assert not gc.is_tracked(obj)
    holder[b"x"] = b"y"  # bytes going in keep a dict untracked
    assert not gc.is_tracked(holder)
    del holder  # deallocating an untracked subclass instance is fine
    gc.collect()


def test_memtable_dict_and_runs_are_untracked_through_puts_deletes_and_freeze() -> None:
    memtable = Memtable(keep_tombstones=True)
    keys = _keys(5 * TAIL_KEYS_MAX)
    for i, key in enumerate(keys):
        memtable.put(key, b"v%d" % i)
        if i % 7 == 0:
            memtable.delete(key)
    memtable.chain(lambda key: None)
    assert not gc.is_tracked(memtable._data)
    assert memtable._runs.runs and not any(map(gc.is_tracked, memtable._runs.runs))
    frozen = memtable.freeze(3)
    assert len(frozen) == len(keys)
    assert not gc.is_tracked(frozen._data)
    assert not any(map(gc.is_tracked, frozen._runs.runs))
    assert not gc.is_tracked(memtable._data)
    # Still a correct memtable: every key in order, tombstones where deleted.
    expected = sorted((key, None if i % 7 == 0 else b"v%d" % i) for i, key in enumerate(keys))
    assert list(frozen.items()) == expected


def test_sorted_runs_discard_keeps_runs_untracked() -> None:
    runs = SortedRuns()
    keys = sorted(_keys(3 * TAIL_KEYS_MAX, seed=3))
    for at in range(0, len(keys), TAIL_KEYS_MAX):
        runs.add_run(keys[at:at + TAIL_KEYS_MAX])
    runs.discard(set(keys[::2]))
    assert len(runs) == len(keys) - len(keys[::2])
    assert not any(map(gc.is_tracked, runs.runs))


def test_a_closed_engine_is_collected(tmp_path: Path) -> None:
    """The chained fallback (a bound method of the engine) sits in an untracked dict, so the
    GC cannot see that cycle: close() must break it, or every engine would leak."""
    engine = Engine.open(str(tmp_path), EngineOptions(memtable_size_bytes=64 << 10))
    for i in range(2000):
        engine.put(b"key%05d" % i, b"x" * 100)
        engine.commit()
    assert engine.get(b"key00001") == b"x" * 100  # from a table or a frozen memtable too
    ref = weakref.ref(engine)
    get = engine.get
    engine.close()
    with pytest.raises(StorageError, match="closed"):
        get(b"no such key")
    del engine, get
    gc.collect()
    assert ref() is None


def test_dismantle_frees_the_values_first_then_the_keys_a_slice_at_a_time() -> None:
    memtable = Memtable()
    keys = _keys(3 * TAIL_KEYS_MAX, seed=5)
    for key in keys:
        memtable.put(key, key * 3)
    frozen = memtable.freeze(1)
    runs = frozen._runs.runs
    steps = frozen.dismantle(1000)
    next(steps)
    assert len(frozen) == 0 and sum(map(len, runs)) == len(keys)
    left = [sum(map(len, runs)) for _ in steps]
    assert left[-1] == 0 and not runs
    assert all(a - b <= 1000 for a, b in zip([len(keys), *left], left, strict=False))
    assert len(left) >= len(keys) // 1000
