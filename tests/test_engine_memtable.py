"""memtable: sorted map with tombstones, live count and size accounting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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
