"""Tunables of one engine instance, each with its reason and its limit.

Invariants:
1. An EngineOptions value is valid once constructed: __post_init__ rejects out-of-range values,
   so the rest of the engine never re-checks them.
2. Limits bound what one record can hold: key_bytes_max + value_bytes_max plus framing fits the
   32-bit record length of the commit-log format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine import log_format

FsyncPolicy = Literal["always", "everysec", "no"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineOptions:
    # When the commit log is fsynced, as Redis's appendfsync: "always" on every commit();
    # "everysec" when the server's timer calls sync(); "no" leaves it to the OS.
    fsync: FsyncPolicy = "everysec"
    # The active log segment is closed and a new one started once it passes this size. Segments
    # are the unit that a future SSTable flush drops, so this bounds replay work per segment.
    segment_size_bytes: int = 64 * MIB
    # Largest value put() accepts; 512 MiB is Redis's proto-max-bulk-len.
    value_bytes_max: int = 512 * MIB
    # Largest key put()/delete() accept; Redis allows keys as large as values.
    key_bytes_max: int = 512 * MIB
    # The memtable is frozen and flushed to an SSTable once its estimated size passes this
    # (checked at commit()). Memory for memtables is about (1 + frozen_memtables_max) times it.
    memtable_size_bytes: int = 64 * MIB
    # Frozen memtables waiting for the flush thread; past this commit() blocks until a flush
    # finishes (back-pressure: slow writes, never unbounded memory).
    frozen_memtables_max: int = 2
    # LRU budget of data blocks shared by every table (Redis-side `block-cache-size`, whose
    # default is the same 64 MiB): each is cached as the bytes read plus its restart offsets,
    # ~4.3 KiB charged per 4 KiB block, so 64 MiB holds about half the blocks of 1M 116-byte
    # entries (a cache hit skips the pread, the CRC and the parse: ~7 us of ~15 us per get).
    block_cache_bytes: int = 64 * MIB
    # Target size of an SSTable data block; a block always holds at least one entry.
    block_size_bytes: int = 4096
    # Bloom filter bits per key: 10 gives ~0.8% false positives.
    bloom_bits_per_key: int = 10
    # Size-tiered compaction merges this many similar-sized, age-contiguous tables.
    compaction_min_threshold: int = 4
    # Tables under this size count as "similar" whatever their sizes (STCS's min_sstable_size).
    compaction_small_table_bytes: int = 50 * MIB
    # Compaction writes at most this many bytes per second (token bucket, rate_limiter.py), so
    # a large merge cannot take the disk (or the GIL) from requests; 0 = unlimited.
    # Flushes are never limited (they free memory). Redis-side `compaction-throughput`.
    compaction_throughput_bytes_per_s: int = 0
    # Run flushes and compactions on background threads; False: flushes run inline in the
    # commit() that freezes, compactions only in compact() (deterministic tests).
    background: bool = True
    # Write the tables of background flushes (of at least db.WORKER_FLUSH_MIN_BYTES) and of
    # compactions (when the compaction filter is portable) in helper processes
    # (table_worker.py), so that their CPU does not compete for the GIL with the loop
    # thread. Off: on the engine's threads. Redis-side `table-workers` (on by default).
    table_workers: bool = False

    def __post_init__(self) -> None:
        if self.fsync not in ("always", "everysec", "no"):
            raise ValueError(f"fsync must be 'always', 'everysec' or 'no', not {self.fsync!r}")
        if not log_format.SEGMENT_HEADER_SIZE < self.segment_size_bytes <= 1 << 40:
            raise ValueError(f"segment_size_bytes out of range: {self.segment_size_bytes}")
        if not 0 <= self.value_bytes_max <= 512 * MIB:
            raise ValueError(f"value_bytes_max out of range (0..512 MiB): {self.value_bytes_max}")
        if not 1 <= self.key_bytes_max <= 512 * MIB:
            raise ValueError(f"key_bytes_max out of range (1..512 MiB): {self.key_bytes_max}")
        if not 1 <= self.memtable_size_bytes <= 1 << 40:
            raise ValueError(f"memtable_size_bytes out of range: {self.memtable_size_bytes}")
        if not 1 <= self.frozen_memtables_max <= 64:
            raise ValueError(f"frozen_memtables_max out of range (1..64): "
                             f"{self.frozen_memtables_max}")
        if not 0 <= self.block_cache_bytes <= 1 << 40:
            raise ValueError(f"block_cache_bytes out of range: {self.block_cache_bytes}")
        if not 64 <= self.block_size_bytes <= 1 << 30:
            raise ValueError(f"block_size_bytes out of range: {self.block_size_bytes}")
        if not 1 <= self.bloom_bits_per_key <= 64:
            raise ValueError(f"bloom_bits_per_key out of range: {self.bloom_bits_per_key}")
        if not 2 <= self.compaction_min_threshold <= 32:
            raise ValueError(f"compaction_min_threshold out of range (2..32): "
                             f"{self.compaction_min_threshold}")
        if not 0 <= self.compaction_throughput_bytes_per_s <= 1 << 40:
            raise ValueError(f"compaction_throughput_bytes_per_s out of range: "
                             f"{self.compaction_throughput_bytes_per_s}")
        if self.compaction_small_table_bytes < 0:
            raise ValueError("compaction_small_table_bytes must be >= 0")
        put_payload_bytes_max = (log_format.PUT_OVERHEAD_BYTES + self.key_bytes_max
                                 + self.value_bytes_max)
        assert put_payload_bytes_max <= log_format.RECORD_PAYLOAD_BYTES_MAX
