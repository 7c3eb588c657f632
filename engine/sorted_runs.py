"""A set of byte-string keys kept as a few sorted runs: the memtable's ordered key index.

Why not one sorted structure: inserting into a sorted list (sortedcontainers' insort) touches
O(log n) keys scattered in memory, and on CPython those cache misses made a put ~2x slower at
300k memtable entries than at 0 (docs/benchmarks.md, "Storage engine"). Here a new key costs
a list append (the memtable's unsorted tail); the tail is sorted in one C call once it holds
TAIL_KEYS_MAX keys and pushed as a run; runs of similar size are merged by list.sort on their
concatenation (timsort finds the two runs and merges them in near-linear C time), so each
key takes part in O(log n) C-level merges and no Python code runs per key.

Invariants:
1. Every run is sorted ascending and the runs are pairwise disjoint: a key is in one run once
   (callers add a key only when it is new).
2. A merge never builds a run over RUN_KEYS_MAX keys, so no single sort holds the GIL for
   long (merging two 64k-key runs takes ~2-4 ms); a memtable of n keys thus holds about
   2n / RUN_KEYS_MAX + log2(RUN_KEYS_MAX / TAIL_KEYS_MAX) runs.
3. chunks(start, end) yields every key k of every run with start <= k < end, ascending, in
   lists of at least one key; each list is built by C-level bisects, slices and one sort of
   the slices' concatenation, so a scan runs no Python code per key either, and it is lazy
   (a scan that stops early pays for the chunks it took).
4. Runs are never modified in place once published: add_run() and discard() build new lists,
   so an iterator over chunks of a frozen memtable may run on another thread.
5. Every run held is a list of bytes untracked by the garbage collector (gc_untrack.py): the
   GC never walks the memtable's ~600k key references.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Container, Iterator
from itertools import chain, filterfalse

from engine.gc_untrack import untrack

# Keys of the memtable's unsorted tail before it is sorted into a run (~0.5 ms of sorting).
TAIL_KEYS_MAX = 4096
# Largest run a merge builds (invariant 2).
RUN_KEYS_MAX = 1 << 16
# Keys per chunk a scan takes from the run with the smallest next keys (invariant 3).
CHUNK_KEYS = 1024


class SortedRuns:
    """REQUIRES: one writer thread; readers of a SortedRuns no one writes may be any thread."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: list[list[bytes]] = []  # oldest (largest) first

    def __len__(self) -> int:
        return sum(map(len, self.runs))

    def add_run(self, run: list[bytes]) -> None:
        """Take ownership of run (sorted, disjoint from every run held) and merge it with the
        newest runs while they are of similar size (at most twice its size)."""
        if not run:
            return
        untrack(run)
        runs = self.runs
        runs.append(run)
        while len(runs) >= 2:
            older, newer = runs[-2], runs[-1]
            if len(older) > 2 * len(newer) or len(older) + len(newer) > RUN_KEYS_MAX:
                break
            merged = older + newer
            merged.sort()
            untrack(merged)
            runs[-2:] = [merged]

    def discard(self, gone: Container[bytes]) -> None:
        """Drop every key in gone from the runs (C-level filtering, new lists: invariant 4)."""
        runs = [kept for run in self.runs
                if (kept := list(filterfalse(gone.__contains__, run)))]
        for run in runs:
            untrack(run)
        self.runs = runs

    def chunks(self, start: bytes, end: bytes | None,
               size: int = CHUNK_KEYS) -> Iterator[list[bytes]]:
        """The keys in [start, end) (end None: no bound), ascending (invariant 3).

        REQUIRES: the runs are not replaced until the iterator is exhausted or dropped."""
        # The runs with keys in range, and for each the next index and the end index.
        runs: list[list[bytes]] = []
        los: list[int] = []
        his: list[int] = []
        for run in self.runs:
            lo = bisect_left(run, start)
            hi = len(run) if end is None else bisect_left(run, end, lo)
            if lo < hi:
                runs.append(run)
                los.append(lo)
                his.append(hi)
        while len(runs) > 1:
            # Every key up to pivot, from every run, can be emitted now: pivot is the last key
            # of some run's next chunk, and no run holds a smaller key it has not given yet.
            pivot = min([run[min(lo + size, hi) - 1]
                         for run, lo, hi in zip(runs, los, his, strict=True)])
            parts: list[list[bytes]] = []
            for i, run in enumerate(runs):
                lo = los[i]
                cut = bisect_right(run, pivot, lo, his[i])
                if cut > lo:
                    parts.append(run[lo:cut])
                    los[i] = cut
            if len(parts) == 1:
                yield parts[0]
            else:
                merged = list(chain.from_iterable(parts))
                merged.sort()
                yield merged
            done = [i for i, lo in enumerate(los) if lo >= his[i]]
            for i in reversed(done):
                del runs[i], los[i], his[i]
        if runs:
            run, lo, hi = runs[0], los[0], his[0]
            for at in range(lo, hi, size):
                yield run[at:min(at + size, hi)]
