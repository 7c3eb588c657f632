"""Merges sorted (key, value-or-tombstone) sources into one sorted stream, newest first.

Sources are given newest first: the active memtable, then frozen memtables, then SSTables by
descending recency. Each yields (key, value) with keys strictly increasing and value None for
a tombstone (as Memtable.items() and TableReader.scan() do).

Invariants:
1. The output's keys strictly increase and are exactly the union of the sources' keys
   (minus those whose winning entry is a tombstone, when tombstones are dropped).
2. For each key the output carries the entry of the newest source (lowest index) holding it;
   older entries for that key are consumed and discarded.
3. With keep_tombstones=False (user-facing scans) a winning tombstone hides the key; with
   keep_tombstones=True (compaction output) it is emitted as (key, None). Dropping a tombstone
   in compaction is allowed only when the compaction covers every older version of the key;
   that decision belongs to the caller, not to this module.
4. Lazy: holds one pending entry per source, so memory is O(number of sources).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

Entry = tuple[bytes, bytes | None]


def merge(sources: Sequence[Iterable[Entry]], *, keep_tombstones: bool = False
          ) -> Iterator[Entry]:
    """Merge sources (newest first) into one ascending stream; see the module invariants."""
    if len(sources) == 1:
        return _single(iter(sources[0]), keep_tombstones)
    return _merge(sources, keep_tombstones)


def _single(source: Iterator[Entry], keep_tombstones: bool) -> Iterator[Entry]:
    if keep_tombstones:
        yield from source
        return
    for entry in source:
        if entry[1] is not None:
            yield entry


def _merge(sources: Sequence[Iterable[Entry]], keep_tombstones: bool) -> Iterator[Entry]:
    # Heap items are [key, source index, value, next]: (key, index) is unique because keys
    # strictly increase within a source, so values and functions are never compared. The
    # lowest index wins a tie on key, which is what makes "newest first" work.
    heap: list[list[Any]] = []
    for index, source in enumerate(sources):
        it = iter(source)
        for key, value in it:
            heap.append([key, index, value, it.__next__])
            break
    heapq.heapify(heap)
    last: Any = None
    heapreplace = heapq.heapreplace
    heappop = heapq.heappop
    while heap:
        item = heap[0]
        key, _, value, advance = item
        try:
            item[0], item[2] = advance()
            heapreplace(heap, item)
        except StopIteration:
            heappop(heap)
        if key == last:
            continue  # an older entry of a key already emitted (invariant 2)
        last = key
        if value is not None or keep_tombstones:
            yield key, value
