"""LRU cache of parsed data blocks (block.SearchBlock), bounded by a byte budget.

Invariants:
1. charged_bytes == the sum of the charges of the cached blocks, and after every insert
   charged_bytes <= capacity_bytes (least recently used blocks are evicted first).
2. A block whose charge alone exceeds capacity_bytes is not cached (a 20 MB value must not
   flush the whole cache for one read).
3. Keys are ints, ``key_base(table_id) + block index``: table ids are never reused within one
   process, so a deleted table's blocks can only age out, never be served for another table.
   (An int: no per-block key object kept, and cheaper to hash than a tuple.)
4. hits + misses == number of get() calls.
5. Not thread-safe: used from the event-loop thread only. Background work (compaction,
   scans) reads tables without the cache, or with fill=False.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import count

from engine.block import SearchBlock

CacheKey = int
BLOCK_INDEX_BITS = 40  # a table has fewer than 2**40 data blocks (its offsets are u64)
ENTRY_OVERHEAD_BYTES = 64  # per object of a cached block beyond its payload, for the charge

_table_ids = count(1)


def new_table_id() -> int:
    """A process-unique id for a table reader's cache keys (invariant 3)."""
    return next(_table_ids)


def key_base(table_id: int) -> int:
    """The cache key of data block i of table ``table_id`` is ``key_base(table_id) + i``."""
    return table_id << BLOCK_INDEX_BITS


def charge(parsed: SearchBlock) -> int:
    """Approximate memory of a cached block: its bytes object, the restart tuple (8 bytes a
    slot plus an int object each), the SearchBlock and this cache's entry for it. find() keeps
    nothing decoded, so this does not grow while the block is cached."""
    return len(parsed.data) + 40 * len(parsed.restarts) + 2 * ENTRY_OVERHEAD_BYTES + 100


class BlockCache:
    __slots__ = ("_blocks", "capacity_bytes", "charged_bytes", "hits", "misses")

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0: {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self.charged_bytes = 0
        self.hits = 0
        self.misses = 0
        self._blocks: OrderedDict[CacheKey, tuple[SearchBlock, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, key: CacheKey) -> SearchBlock | None:
        entry = self._blocks.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._blocks.move_to_end(key)
        return entry[0]

    def peek(self, key: CacheKey) -> SearchBlock | None:
        """Like get() but neither counts nor refreshes recency (for scans)."""
        entry = self._blocks.get(key)
        return None if entry is None else entry[0]

    def put(self, key: CacheKey, block: SearchBlock, charge_bytes: int) -> None:
        if charge_bytes > self.capacity_bytes:
            return
        old = self._blocks.pop(key, None)
        if old is not None:
            self.charged_bytes -= old[1]
        self._blocks[key] = (block, charge_bytes)
        self.charged_bytes += charge_bytes
        while self.charged_bytes > self.capacity_bytes:
            _, (_, evicted) = self._blocks.popitem(last=False)
            self.charged_bytes -= evicted

    def resize(self, capacity_bytes: int) -> None:
        """Change the budget, evicting least recently used blocks down to it (invariant 1)."""
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0: {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        while self.charged_bytes > capacity_bytes:
            _, (_, evicted) = self._blocks.popitem(last=False)
            self.charged_bytes -= evicted

    def stats(self) -> dict[str, int]:
        return {"block_cache_hits": self.hits, "block_cache_misses": self.misses,
                "block_cache_bytes": self.charged_bytes, "block_cache_blocks": len(self)}
