"""The in-memory sorted map that holds the newest writes.

Invariants:
1. _data and _keys hold exactly the same keys; _keys is sorted (bytewise).
2. A value of None is a tombstone. Tombstones are kept only when keep_tombstones is set, i.e.
   when an older layer (a future SSTable) might still hold the key; without one, delete()
   removes the key outright, so an engine with no tables never accumulates tombstones.
3. live_count == the number of keys whose value is not None.
4. approximate_bytes == sum(len(key) + len(value) + ENTRY_OVERHEAD_BYTES) over all entries
   (a tombstone counts as a zero-length value); it is what a flush threshold will compare.
5. get() is one dict lookup: it returns the value, None for a tombstone or an absent key.
6. lookup(key) is the bound __getitem__ of the dict, the same object for the memtable's
   lifetime (callers bind it once). While the memtable stands alone it answers like get(),
   through a C-level __missing__ (no Python frame); once chain(fallback) is called, a key the
   memtable does not hold is answered by fallback(key) (older layers), while a tombstone held
   here still answers None. freeze() moves the entries out and leaves this object empty, so
   that binding survives memtable switches.

7. Every key of the dict is in exactly one of _tail (unsorted, appended on insert) and
   _runs (sorted_runs.py); a key deleted outright (invariant 2) may linger there, and is then
   in _gone, until it is put again (it is not appended twice) or _gone is purged (when it
   holds as many keys as the dict). Iteration skips keys in _gone.
8. A frozen memtable is never modified: freeze() sorts the tail into the runs, so the flush
   thread and the loop thread may iterate it at the same time.
9. The dict is not tracked by the garbage collector (gc_untrack.py), nor are the runs
   (sorted_runs invariant 5): it holds only bytes and None, and its one other reference,
   the chained fallback, is a bound method of the engine, which the engine's threads keep
   alive anyway until close() replaces it (so no cycle through it is left to collect).

Representation: the dict answers point reads; the order lives beside it in sorted runs, not in
a SortedList: a put of a new key is a dict store plus a list append (invariant 7), and the
sorting is done by C-level sorts and merges of a few thousand keys at a time. SortedList.add
cost grew with the memtable (cache misses in its bisect over scattered keys: ~0.6x the
empty-memtable put rate at 300k entries). Scans merge the runs in chunks (sorted_runs inv. 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import filterfalse
from typing import Any, cast

from engine.gc_untrack import untrack
from engine.sorted_runs import CHUNK_KEYS, TAIL_KEYS_MAX, SortedRuns

# Rough CPython cost of one entry beyond the key and value bytes: dict slot, list slot and two
# bytes-object headers. Only used for the size estimate.
ENTRY_OVERHEAD_BYTES = 100

# Typed Any so that `data.get(key, _MISSING)` keeps the value type for the branches below.
_MISSING: Any = object()


class _StandaloneDict(dict[bytes, bytes | None]):
    """d[key] of an absent key is None, answered by a C function: no Python frame on a miss."""

    __slots__ = ("fallback",)
    fallback: Callable[[bytes], bytes | None]
    # A builtin bound method is no descriptor, so dict_subscript calls it as __missing__(key).
    __missing__ = cast(Callable[[bytes], "bytes | None"], {}.get)


class _ChainedDict(_StandaloneDict):
    """d[key] of an absent key asks the older layers. Same layout: __class__ may switch."""

    __slots__ = ()

    def __missing__(self, key: bytes) -> bytes | None:  # type: ignore[override]
        return self.fallback(key)


class Memtable:
    __slots__ = ("_data", "_gone", "_runs", "_tail", "approximate_bytes", "find", "get",
                 "keep_tombstones", "live_count", "log_number", "lookup")

    def __init__(self, *, keep_tombstones: bool = False) -> None:
        self._data: _StandaloneDict = _StandaloneDict()
        untrack(self._data)  # invariant 9
        self._tail: list[bytes] = []
        self._runs = SortedRuns()
        self._gone: set[bytes] = set()
        self.keep_tombstones = keep_tombstones
        self.live_count = 0
        self.approximate_bytes = 0
        # Of a frozen memtable: commit-log segments below this number hold nothing newer.
        self.log_number = 0
        # The bound dict.get itself: callers on the hot path call it with no Python frame.
        self.get: Callable[[bytes], bytes | None] = self._data.get
        # find(key, default): the entry (None for a tombstone) or default if absent.
        self.find: Callable[[bytes, Any], Any] = self._data.get
        # Invariant 6.
        self.lookup: Callable[[bytes], bytes | None] = self._data.__getitem__

    def chain(self, fallback: Callable[[bytes], bytes | None] | None) -> None:
        """lookup() of an absent key returns fallback(key) (None: back to plain None), and
        tombstones are kept from now on when fallback is set (older layers exist)."""
        if fallback is None:
            self._data.__class__ = _StandaloneDict
            return
        self._data.fallback = fallback
        self._data.__class__ = _ChainedDict
        self.keep_tombstones = True

    def freeze(self, log_number: int) -> Memtable:
        """Move every entry into a new memtable, returned, and leave this one empty.

        The dict is copied (C speed, ~40 ns per entry) rather than handed over, because
        lookup is bound to this memtable's dict (invariant 6); the key order is handed over,
        its tail sorted first (invariant 8: at most TAIL_KEYS_MAX keys, well under 1 ms).
        """
        self._seal_tail()
        frozen = Memtable(keep_tombstones=self.keep_tombstones)
        frozen._data.update(self._data)  # from an untracked dict: stays untracked
        frozen._runs = self._runs
        frozen._gone = self._gone
        frozen.live_count = self.live_count
        frozen.approximate_bytes = self.approximate_bytes
        frozen.log_number = log_number
        self._data.clear()
        self._runs = SortedRuns()
        self._gone = set()
        self.live_count = 0
        self.approximate_bytes = 0
        return frozen

    def __len__(self) -> int:
        """Number of entries, tombstones included (see live_count for live keys)."""
        return len(self._data)

    def put(self, key: bytes, value: bytes) -> None:
        data = self._data
        old = data.get(key, _MISSING)
        data[key] = value
        if old is _MISSING:
            self._add_key(key)
            self.live_count += 1
            self.approximate_bytes += len(key) + len(value) + ENTRY_OVERHEAD_BYTES
        elif old is None:
            self.live_count += 1
            self.approximate_bytes += len(value)
        else:
            self.approximate_bytes += len(value) - len(old)

    def _add_key(self, key: bytes) -> None:
        """Record a key new to the dict in the order (invariant 7)."""
        if self._gone and key in self._gone:
            self._gone.discard(key)  # still in the tail or a run
            return
        tail = self._tail
        tail.append(key)
        if len(tail) >= TAIL_KEYS_MAX:
            self._seal_tail()

    def _seal_tail(self) -> None:
        tail = self._tail
        if tail:
            self._tail = []
            tail.sort()
            self._runs.add_run(tail)

    def delete(self, key: bytes) -> None:
        data = self._data
        old = data.get(key, _MISSING)
        if old is _MISSING:
            if self.keep_tombstones:
                data[key] = None
                self._add_key(key)
                self.approximate_bytes += len(key) + ENTRY_OVERHEAD_BYTES
            return
        if old is None:  # already a tombstone
            return
        self.live_count -= 1
        if self.keep_tombstones:
            data[key] = None
            self.approximate_bytes -= len(old)
        else:
            del data[key]
            self.approximate_bytes -= len(key) + len(old) + ENTRY_OVERHEAD_BYTES
            gone = self._gone
            gone.add(key)
            if len(gone) >= max(TAIL_KEYS_MAX, len(data)):
                self._purge_gone()

    def _purge_gone(self) -> None:
        """Drop deleted keys from the order: O(keys held), paid for by as many deletes."""
        gone = self._gone
        self._tail = [key for key in self._tail if key not in gone]
        self._runs.discard(gone)
        self._gone = set()

    def apply(self, ops: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Apply ops in order (value None = delete): one log record's worth."""
        for key, value in ops:
            if value is None:
                self.delete(key)
            else:
                self.put(key, value)

    def _key_chunks(self, start: bytes, end: bytes | None,
                    size: int) -> Iterator[list[bytes]]:
        """The keys held in [start, end), ascending, in lists (deleted ones filtered out)."""
        self._seal_tail()  # a no-op on a frozen memtable (invariant 8)
        chunks = self._runs.chunks(start, end, size)
        gone = self._gone
        if not gone:
            return chunks
        return (kept for chunk in chunks
                if (kept := list(filterfalse(gone.__contains__, chunk))))

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Live entries with start <= key < end (end None = no bound), ascending.

        REQUIRES: the memtable is not modified until the iterator is exhausted or dropped.
        """
        value_of = self._data.__getitem__
        for keys in self._key_chunks(start, end, CHUNK_KEYS):
            for key, value in zip(keys, map(value_of, keys), strict=True):
                if value is not None:
                    yield key, value

    def entries(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes | None]]:
        """Entries with start <= key < end, tombstones (None) included, ascending.

        REQUIRES: as scan()."""
        value_of = self._data.__getitem__
        for keys in self._key_chunks(start, end, CHUNK_KEYS):
            yield from zip(keys, map(value_of, keys), strict=True)

    def batches(self, size: int) -> Iterator[tuple[list[bytes], list[bytes | None]]]:
        """Every entry, tombstones included, ascending, as (keys, values) lists of 1 to size
        entries: what a flush writes (no Python code per entry). REQUIRES: as scan()."""
        value_of = self._data.__getitem__
        for keys in self._key_chunks(b"", None, size):
            for at in range(0, len(keys), size):
                chunk = keys[at:at + size] if len(keys) > size else keys
                yield chunk, list(map(value_of, chunk))

    def unordered_batches(self, size: int) -> Iterator[tuple[list[bytes], list[bytes | None]]]:
        """Every entry, tombstones included, in the dict's order (about the order of
        allocation: no cache miss per entry, unlike the key order of batches()), as
        (keys, values) lists of 1 to size entries. REQUIRES: as scan()."""
        keys = list(self._data)
        values = list(self._data.values())
        untrack(keys)  # ~600k references each: not for the GC to walk (invariant 9)
        untrack(values)
        for at in range(0, len(keys), size):
            yield keys[at:at + size], values[at:at + size]

    def dismantle(self, step: int) -> Iterator[None]:
        """Empty this memtable a little per next(): first the dict, at once (the values are
        freed; the keys live on in the runs), then about step keys at a time, dropped from
        the runs' ends. Freeing a flushed memtable's ~600k objects at once holds the GIL for
        tens of ms, a stall for the loop thread; and the dict is not emptied a slice at a
        time, as popping entries costs ~300 ns each (a probe of the hash index per entry)
        against ~30-70 ns for clear() (which frees in table order, with no lookup).
        REQUIRES: no one else uses this memtable any more."""
        runs = self._runs.runs
        self._runs = SortedRuns()
        self._gone = set()  # it holds keys too: the runs now hold every key left
        self._tail = []
        self._data.clear()
        yield
        while runs:
            run = runs[-1]
            if len(run) > step:
                del run[-step:]  # freed in C; no reader is left (sorted_runs inv. 4)
            else:
                runs.pop()
            yield

    def items(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Every entry, tombstones included, ascending: what a flush writes to a table."""
        return self.entries(b"", None)
