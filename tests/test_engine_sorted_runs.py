"""sorted_runs: disjoint sorted runs, size-bounded merges, chunked range iteration."""

from __future__ import annotations

from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from engine import sorted_runs
from engine.sorted_runs import SortedRuns

keys = st.binary(max_size=3)
batches = st.lists(st.lists(keys, max_size=12), max_size=12)
bounds = st.tuples(keys, st.none() | keys)


def build(batches_of_keys: list[list[bytes]]) -> tuple[SortedRuns, list[bytes]]:
    """Runs built from each batch's keys not seen before (callers add a key once)."""
    runs = SortedRuns()
    seen: set[bytes] = set()
    for batch in batches_of_keys:
        fresh = sorted(set(batch) - seen)
        seen.update(fresh)
        runs.add_run(fresh)
    return runs, sorted(seen)


def check_invariants(runs: SortedRuns, run_keys_max: int) -> None:
    held = [key for run in runs.runs for key in run]
    assert len(held) == len(set(held)), "a key is in two runs"
    for run in runs.runs:
        assert run, "no empty run is kept"
        assert run == sorted(run)
        assert len(run) <= run_keys_max  # inputs here are smaller than the cap


@given(batches, bounds, st.integers(1, 5))
def test_chunks_match_a_sorted_model(batches_of_keys: list[list[bytes]],
                                     bound: tuple[bytes, bytes | None], size: int) -> None:
    with mock.patch.object(sorted_runs, "RUN_KEYS_MAX", 16):
        runs, model = build(batches_of_keys)
    check_invariants(runs, 16)
    start, end = bound
    chunks = list(runs.chunks(start, end, size))
    assert all(chunks), "every chunk holds at least one key"
    assert [key for chunk in chunks for key in chunk] == \
        [key for key in model if key >= start and (end is None or key < end)]
    assert len(runs) == len(model)


def test_merges_similar_runs_and_caps_their_size() -> None:
    runs = SortedRuns()
    with mock.patch.object(sorted_runs, "RUN_KEYS_MAX", 8):
        for n in range(16):
            runs.add_run([bytes([n, 0]), bytes([n, 1])])
    sizes = [len(run) for run in runs.runs]
    assert sum(sizes) == 32
    assert max(sizes) <= 8
    assert len(sizes) <= 32 // 4 + 2, sizes  # merged, not 16 runs of 2
    assert [key for chunk in runs.chunks(b"", None) for key in chunk] == \
        sorted(bytes([n, i]) for n in range(16) for i in range(2))


def test_discard_builds_new_runs_and_leaves_iterated_ones_alone() -> None:
    runs, model = build([[b"a", b"c", b"e"], [b"b", b"d"]])
    before = runs.runs
    snapshot = [list(run) for run in before]
    chunks = runs.chunks(b"", None, 1)
    first = next(chunks)
    runs.discard({b"c", b"d", b"e"})
    assert [run for run in before] == snapshot, "published runs are never modified"
    assert [key for chunk in runs.chunks(b"", None) for key in chunk] == [b"a", b"b"]
    # The iterator started before the discard still sees the runs it started on.
    assert first + [key for chunk in chunks for key in chunk] == model


def test_empty_run_and_empty_set() -> None:
    runs = SortedRuns()
    runs.add_run([])
    assert runs.runs == []
    assert list(runs.chunks(b"", None)) == []
    assert len(runs) == 0
