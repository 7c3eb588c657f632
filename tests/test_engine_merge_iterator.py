"""merge_iterator: newest source wins, tombstones hide older values, against a dict model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.merge_iterator import Entry, merge

keys = st.sampled_from([b"", b"a", b"ab", b"b", b"c", b"d", b"zz"])
source = st.dictionaries(keys, st.none() | st.binary(max_size=4)).map(
    lambda d: sorted(d.items()))


def model(sources: list[list[Entry]]) -> dict[bytes, bytes | None]:
    """Apply sources oldest first, so newer ones overwrite: what the merge must equal."""
    state: dict[bytes, bytes | None] = {}
    for src in reversed(sources):
        state.update(src)
    return state


@given(st.lists(source, min_size=1, max_size=6))
def test_matches_a_dict_model(sources: list[list[Entry]]) -> None:
    state = model(sources)
    with_tombstones = list(merge(sources, keep_tombstones=True))
    assert with_tombstones == sorted(state.items())
    live = list(merge(sources))
    assert live == sorted((k, v) for k, v in state.items() if v is not None)


@given(st.lists(source, min_size=1, max_size=6))
def test_accepts_lazy_iterators(sources: list[list[Entry]]) -> None:
    lazy = [iter(s) for s in sources]
    assert list(merge(lazy, keep_tombstones=True)) == sorted(model(sources).items())


def test_newest_wins_and_tombstone_hides_older_value() -> None:
    newest: list[Entry] = [(b"a", None), (b"b", b"new")]
    older: list[Entry] = [(b"a", b"old"), (b"b", b"old"), (b"c", b"old")]
    assert list(merge([newest, older])) == [(b"b", b"new"), (b"c", b"old")]
    assert list(merge([newest, older], keep_tombstones=True)) == [
        (b"a", None), (b"b", b"new"), (b"c", b"old")]
    assert list(merge([older, newest])) == [(b"a", b"old"), (b"b", b"old"), (b"c", b"old")]


def test_no_sources_and_empty_sources() -> None:
    assert list(merge([])) == []
    assert list(merge([[], [], []])) == []
    assert list(merge([[(b"k", None)]])) == []
