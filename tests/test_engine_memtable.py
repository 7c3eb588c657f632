"""memtable: sorted map with tombstones, live count and size accounting."""

from __future__ import annotations

import contextlib
import threading
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from engine import memtable, sorted_runs
from engine.memtable import ENTRY_OVERHEAD_BYTES, Memtable

ops = st.lists(st.tuples(st.sampled_from([b"", b"a", b"ab", b"b", b"c", b"zz"]),
                         st.none() | st.binary(max_size=8)), max_size=40)


def expected_bytes(entries: dict[bytes, bytes | None]) -> int:
    return sum(len(k) + len(v or b"") + ENTRY_OVERHEAD_BYTES for k, v in entries.items())


@given(ops, st.booleans())
def test_matches_a_dict(script: list[tuple[bytes, bytes | None]], keep_tombstones: bool) -> None:
    mem = Memtable(keep_tombstones=keep_tombstones)
    model: dict[bytes, bytes] = {}
    entries: dict[bytes, bytes | None] = {}  # what the memtable should hold, tombstones too
    for key, value in script:
        mem.apply([(key, value)])
        if value is None:
            model.pop(key, None)
            if keep_tombstones:
                entries[key] = None
            else:
                entries.pop(key, None)
        else:
            model[key] = value
            entries[key] = value
        assert mem.live_count == len(model)
        assert len(mem) == len(entries)
        assert mem.approximate_bytes == expected_bytes(entries)
    assert list(mem.scan(b"", None)) == sorted(model.items())
    assert list(mem.items()) == sorted(entries.items())
    for size in (1, 2, 7):
        batches = list(mem.batches(size))
        assert all(0 < len(keys) == len(values) <= size for keys, values in batches)
        assert [e for keys, values in batches for e in zip(keys, values, strict=True)] == \
            sorted(entries.items())
    for key in [b"", b"a", b"ab", b"b", b"c", b"zz", b"missing"]:
        assert mem.get(key) == model.get(key)


def test_scan_bounds_are_start_inclusive_end_exclusive() -> None:
    mem = Memtable()
    for key in [b"a", b"b", b"c", b"d"]:
        mem.put(key, key.upper())
    assert [k for k, _ in mem.scan(b"b", b"d")] == [b"b", b"c"]
    assert [k for k, _ in mem.scan(b"bb", None)] == [b"c", b"d"]
    assert [k for k, _ in mem.scan(b"", b"a")] == []
    assert [k for k, _ in mem.scan(b"e", None)] == []


def test_tombstone_hides_key_from_get_and_scan() -> None:
    mem = Memtable(keep_tombstones=True)
    mem.put(b"k", b"v")
    mem.delete(b"k")
    mem.delete(b"never-written")
    assert mem.get(b"k") is None
    assert list(mem.scan(b"", None)) == []
    assert list(mem.items()) == [(b"k", None), (b"never-written", None)]
    assert mem.live_count == 0
    mem.put(b"k", b"again")
    assert mem.live_count == 1
    assert mem.get(b"k") == b"again"


def test_without_older_layers_delete_forgets_the_key() -> None:
    mem = Memtable()
    mem.put(b"k", b"v")
    mem.delete(b"k")
    mem.delete(b"k")
    assert len(mem) == 0
    assert mem.approximate_bytes == 0


def test_empty_value_is_not_a_tombstone() -> None:
    mem = Memtable()
    mem.put(b"k", b"")
    assert mem.get(b"k") == b""
    assert list(mem.scan(b"", None)) == [(b"k", b"")]
    assert mem.live_count == 1


# With tiny run sizes every path of the key order runs: tail sorted into runs, merges, the
# cap, chunked scans over several runs, deleted keys lingering in runs and purged.
many_ops = st.lists(st.tuples(st.binary(min_size=1, max_size=2),
                              st.none() | st.binary(max_size=4)), max_size=200)


def small_runs() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(memtable, "TAIL_KEYS_MAX", 3))
    stack.enter_context(mock.patch.object(memtable, "CHUNK_KEYS", 2))
    stack.enter_context(mock.patch.object(sorted_runs, "RUN_KEYS_MAX", 8))
    return stack


@given(many_ops, st.booleans(), st.integers(0, 200),
       st.tuples(st.binary(max_size=2), st.none() | st.binary(max_size=2)))
def test_many_keys_in_small_runs_match_a_dict(script: list[tuple[bytes, bytes | None]],
                                              keep_tombstones: bool, freeze_at: int,
                                              bound: tuple[bytes, bytes | None]) -> None:
    start, end = bound
    with small_runs():
        mem = Memtable(keep_tombstones=keep_tombstones)
        entries: dict[bytes, bytes | None] = {}
        frozen: Memtable | None = None
        frozen_entries: dict[bytes, bytes | None] = {}
        for i, (key, value) in enumerate(script):
            if i == freeze_at:
                frozen, frozen_entries, entries = mem.freeze(7), entries, {}
            mem.apply([(key, value)])
            if value is not None:
                entries[key] = value
            elif keep_tombstones:
                entries[key] = None
            else:
                entries.pop(key, None)
            if i % 17 == 0:  # a scan in the middle seals the tail early
                assert list(mem.items()) == sorted(entries.items())
        assert list(mem.items()) == sorted(entries.items())
        assert list(mem.entries(start, end)) == [
            (k, v) for k, v in sorted(entries.items()) if k >= start and (end is None or k < end)]
        assert list(mem.scan(b"", None)) == [
            (k, v) for k, v in sorted(entries.items()) if v is not None]
        assert [e for keys, values in mem.batches(2)
                for e in zip(keys, values, strict=True)] == sorted(entries.items())
        assert len(mem) == len(entries)
        assert mem.approximate_bytes == expected_bytes(entries)
        if frozen is not None:
            assert frozen.log_number == 7
            assert list(frozen.items()) == sorted(frozen_entries.items())
            assert [e for keys, values in frozen.batches(3)
                    for e in zip(keys, values, strict=True)] == sorted(frozen_entries.items())


def test_deleted_keys_are_purged_from_the_order_and_can_come_back() -> None:
    with small_runs(), mock.patch.object(memtable, "TAIL_KEYS_MAX", 4):
        mem = Memtable()
        for round_ in range(5):  # a queue-like workload: memory must not grow with it
            for n in range(100):
                mem.put(b"%d-%03d" % (round_, n), b"v")
            for n in range(100):
                mem.delete(b"%d-%03d" % (round_, n))
            assert len(mem._runs) + len(mem._tail) <= 100 + 4
        mem.put(b"4-007", b"back")
        mem.put(b"4-007", b"again")
        assert list(mem.items()) == [(b"4-007", b"again")]


def test_a_frozen_memtable_is_iterated_by_another_thread_while_writes_go_on() -> None:
    with small_runs():
        mem = Memtable(keep_tombstones=True)
        for n in range(2000):
            mem.put(b"%05d" % (n * 7 % 2000), b"v%d" % n)
        frozen = mem.freeze(1)
        seen: list[tuple[bytes, bytes | None]] = []
        reader = threading.Thread(target=lambda: seen.extend(
            e for keys, values in frozen.batches(5) for e in zip(keys, values, strict=True)))
        reader.start()
        for n in range(2000):
            mem.put(b"%05d" % n, b"new")
            if n % 100 == 99:
                mem.delete(b"%05d" % (n - 50))
        reader.join()
        assert seen == sorted((b"%05d" % (n * 7 % 2000), b"v%d" % n) for n in range(2000))
        assert list(frozen.items()) == seen
        assert mem.live_count == 2000 - 20
