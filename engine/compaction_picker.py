"""Size-tiered compaction policy (after Cassandra's STCS), as a pure function over a Version.

Theory of operation. STCS groups tables of similar size into buckets and merges a bucket once
it holds min_threshold tables, so each byte is rewritten about log_4(data / flush size)
times. Cassandra can bucket tables of any age together because every cell carries a
timestamp; our entries do not (newest wins by table order, version_edit invariant 3), so a
bucket here is a run of tables *contiguous in recency order* whose sizes are similar. That is
the same restriction RocksDB's universal compaction makes, for the same reason.

Invariants:
1. pick() reads only its arguments: same input, same task (so policies can be simulated).
2. A task's inputs are contiguous in the recency order of the version (newest first), number
   between min_threshold and max_threshold, and are similar in size: each lies within
   [bucket_low, bucket_high] x the average of the tables before it in the run, or it and that
   average are both under min_table_bytes (small tables always bucket together).
3. bottommost is True only if no live table is older than the inputs: only then may the
   compaction drop tombstones (it covers every older version of their keys).
4. Among candidate runs, the one with the least total bytes wins (cheapest first, so small
   flushes do not pile up behind a large merge); ties go to the newer run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.version_edit import TableMeta, VersionEdit

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class StcsOptions:
    min_threshold: int = 4  # Cassandra's default: fewer tables is not worth a rewrite
    max_threshold: int = 32  # bounds one compaction's fan-in and duration
    bucket_low: float = 0.5
    bucket_high: float = 1.5
    min_table_bytes: int = 50 * MIB  # below this, sizes are too noisy to tell apart

    def __post_init__(self) -> None:
        if not 2 <= self.min_threshold <= self.max_threshold:
            raise ValueError(f"need 2 <= min_threshold <= max_threshold: {self}")
        if not 0 < self.bucket_low <= 1 <= self.bucket_high:
            raise ValueError(f"need 0 < bucket_low <= 1 <= bucket_high: {self}")


@dataclass(frozen=True, slots=True)
class CompactionTask:
    inputs: tuple[TableMeta, ...]  # newest first, contiguous in recency order
    bottommost: bool  # no live table is older: tombstones may be dropped

    @property
    def output_recency(self) -> int:
        return max(t.recency for t in self.inputs)

    @property
    def input_bytes(self) -> int:
        return sum(t.file_size for t in self.inputs)

    def edit(self, outputs: Sequence[TableMeta]) -> VersionEdit:
        """The version edit that installs outputs in place of the inputs.

        REQUIRES: every output has recency == output_recency and disjoint key ranges.
        """
        assert all(t.recency == self.output_recency for t in outputs), outputs
        return VersionEdit(added=tuple(outputs), removed=tuple(t.number for t in self.inputs))


def _similar(size: int, average: float, options: StcsOptions) -> bool:
    if size < options.min_table_bytes and average < options.min_table_bytes:
        return True
    return options.bucket_low * average <= size <= options.bucket_high * average


def runs(tables: Sequence[TableMeta], options: StcsOptions) -> list[list[TableMeta]]:
    """Split tables (newest first) into maximal runs of similar size (invariant 2)."""
    result: list[list[TableMeta]] = []
    total = 0
    for table in tables:
        if result and _similar(table.file_size, total / len(result[-1]), options):
            result[-1].append(table)
            total += table.file_size
        else:
            result.append([table])
            total = table.file_size
    return result


def pick(tables: Sequence[TableMeta], options: StcsOptions | None = None
         ) -> CompactionTask | None:
    """The next compaction for the live tables (ordered newest first), or None."""
    options = options or StcsOptions()
    best: list[TableMeta] | None = None
    for run in runs(tables, options):
        if len(run) < options.min_threshold:
            continue
        run = run[-options.max_threshold :]  # the oldest ones: nearer to bottommost
        if best is None or sum(t.file_size for t in run) < sum(t.file_size for t in best):
            best = run
    if best is None:
        return None
    return CompactionTask(tuple(best), bottommost=best[-1] is tables[-1])
