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

    def __post_init__(self) -> None:
        if self.fsync not in ("always", "everysec", "no"):
            raise ValueError(f"fsync must be 'always', 'everysec' or 'no', not {self.fsync!r}")
        if not log_format.SEGMENT_HEADER_SIZE < self.segment_size_bytes <= 1 << 40:
            raise ValueError(f"segment_size_bytes out of range: {self.segment_size_bytes}")
        if not 0 <= self.value_bytes_max <= 512 * MIB:
            raise ValueError(f"value_bytes_max out of range (0..512 MiB): {self.value_bytes_max}")
        if not 1 <= self.key_bytes_max <= 512 * MIB:
            raise ValueError(f"key_bytes_max out of range (1..512 MiB): {self.key_bytes_max}")
        put_payload_bytes_max = (log_format.PUT_OVERHEAD_BYTES + self.key_bytes_max
                                 + self.value_bytes_max)
        assert put_payload_bytes_max <= log_format.RECORD_PAYLOAD_BYTES_MAX
