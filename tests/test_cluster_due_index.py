"""cluster/due_index.py: the expiry index's timing wheel, against a model and its invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.due_index import HEAP_SLACK, SLOT_SHIFT, DueIndex

SLOT = 1 << SLOT_SHIFT
T0 = 1_700_000_000_000  # slot-aligned


def test_take_returns_only_keys_of_passed_slots_earliest_first() -> None:
    index = DueIndex([(T0 + 5, b"a"), (T0 + SLOT + 1, b"b"), (T0 + 3 * SLOT, b"c")])
    assert len(index) == 3
    assert index.take(T0 + 5, 10) == []  # a is due, but its slot has not ended
    assert index.take(T0 + SLOT - 2, 10) == []
    assert index.take(T0 + SLOT - 1, 10) == [b"a"]
    assert index.take(T0 + 10 * SLOT, 10) == [b"b", b"c"]
    assert len(index) == 0 and not index


def test_take_respects_its_limit_and_resumes_in_the_same_slot() -> None:
    keys = [b"k%d" % i for i in range(10)]
    index = DueIndex((T0 + i, key) for i, key in enumerate(keys))
    first = index.take(T0 + SLOT, 4)
    second = index.take(T0 + SLOT, 4)
    third = index.take(T0 + SLOT, 4)
    assert (len(first), len(second), len(third)) == (4, 4, 2)
    assert sorted(first + second + third) == sorted(keys)
    assert index.take(T0 + SLOT, 4) == [] and len(index) == 0


def test_one_key_slots_hold_the_key_and_grow_into_sets() -> None:
    index = DueIndex()
    index.add(T0, b"a")
    index.add(T0 + 1, b"a")  # same slot, same key: one entry
    assert len(index) == 1 and (T0 + 7, b"a") in index
    index.add(T0 + 2, b"b")
    assert len(index) == 2 and (T0, b"b") in index
    index.discard(T0, b"a")
    index.discard(T0, b"a")  # absent now: no change
    index.discard(T0 + SLOT, b"b")  # another slot: no change
    assert len(index) == 1 and (T0, b"a") not in index and (T0, b"b") in index
    index.discard(T0, b"b")
    assert len(index) == 0 and list(index) == []


def test_a_key_may_be_in_two_slots() -> None:
    index = DueIndex([(T0, b"k"), (T0 + SLOT, b"k")])
    assert len(index) == 2
    assert sorted(index) == [(T0, b"k"), (T0 + SLOT, b"k")]
    assert index.take(T0 + 5 * SLOT, 10) == [b"k", b"k"]


def test_the_heap_stays_bounded_when_slots_empty_and_fill_again() -> None:
    index = DueIndex()
    for i in range(10_000):  # one key moved to a new far slot on every write
        index.discard(T0 + (i - 1) * SLOT, b"k")
        index.add(T0 + i * SLOT, b"k")
        assert len(index._heap) <= 2 * len(index._slots) + HEAP_SLACK + 1
    assert len(index) == 1 and index.take(T0 + 20_000 * SLOT, 10) == [b"k"]


OPS = st.lists(st.tuples(st.sampled_from(["add", "discard", "take"]),
                         st.integers(0, 8 * SLOT), st.sampled_from([b"a", b"b", b"c", b"d"]),
                         st.integers(1, 3)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_matches_a_model_of_slots(ops: list[tuple[str, int, bytes, int]]) -> None:
    index = DueIndex()
    model: dict[int, set[bytes]] = {}
    for op, offset, key, limit in ops:
        due_ms = T0 + offset
        slot = due_ms >> SLOT_SHIFT
        if op == "add":
            index.add(due_ms, key)
            model.setdefault(slot, set()).add(key)
        elif op == "discard":
            index.discard(due_ms, key)
            model.get(slot, set()).discard(key)
        else:
            taken = index.take(due_ms, limit)
            passed = sorted(s for s, keys in model.items() if keys and (s + 1) * SLOT - 1 <= due_ms)
            expected_count = min(limit, sum(len(model[s]) for s in passed))
            assert len(taken) == expected_count
            for key_taken in taken:  # earliest slots first, each key from a passed slot
                slot_of = next(s for s in passed if key_taken in model[s])
                model[slot_of].discard(key_taken)
                assert all(not model[s] for s in passed if s < slot_of)
        assert len(index) == sum(map(len, model.values()))
        assert sorted(index) == sorted((s << SLOT_SHIFT, k) for s, keys in model.items()
                                       for k in keys)
