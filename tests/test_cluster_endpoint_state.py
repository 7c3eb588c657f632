"""cluster/endpoint_state.py: versioned endpoint state, its join, and its wire form."""

from __future__ import annotations

import random
from functools import reduce
from types import MappingProxyType
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.endpoint_state import (
    AppField,
    EndpointState,
    FieldValue,
    Status,
    Versioned,
    decode_state,
    departure,
    encode_state,
    merge,
    with_fields,
)
from cluster.ring import NodeInfo

APP: dict[AppField, FieldValue] = {
    AppField.STATUS: Status.NORMAL,
    AppField.PEER_ADDRESS: ("127.0.0.2", 17001),
    AppField.CLIENT_ADDRESS: ("127.0.0.2", 7001),
    AppField.DATACENTER: "dc1",
    AppField.RACK: "r1",
    AppField.TOKENS: (1, 5, 2**64 - 1),
    AppField.LOAD: 0,
}


def state(node_id: str = "n1", generation: int = 100, version: int = 1,
          app: dict[AppField, FieldValue] | None = None) -> EndpointState:
    return with_fields(EndpointState(node_id, generation, 0), version, app or APP)


# -- Strategies ---------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                max_size=20)
VALUES: dict[AppField, st.SearchStrategy[Any]] = {
    AppField.STATUS: st.sampled_from(list(Status)),
    AppField.PEER_ADDRESS: st.tuples(names, st.integers(1, 65535)),
    AppField.CLIENT_ADDRESS: st.tuples(names, st.integers(1, 65535)),
    AppField.DATACENTER: names,
    AppField.RACK: names,
    AppField.TOKENS: st.sets(st.integers(0, 2**64 - 1), min_size=1, max_size=20).map(
        lambda s: tuple(sorted(s))),
    AppField.LOAD: st.integers(0, 2**63 - 1),
}


@st.composite
def states(draw: st.DrawFn, node_id: str | None = None, small: bool = False
           ) -> EndpointState:
    """Any valid state; ``small`` draws generations and versions from tiny ranges, so that
    copies collide (equal versions, different values) and the tie-break is exercised."""
    nums = st.integers(0, 3) if small else st.integers(0, 2**63 - 1)
    tags = draw(st.sets(st.sampled_from(list(AppField))))
    fields = {tag: Versioned(draw(VALUES[tag]), draw(nums)) for tag in sorted(tags)}
    return EndpointState(node_id or draw(names.filter(lambda s: len(s.encode()) <= 64)),
                         draw(nums), draw(nums), MappingProxyType(fields))


def wire_round_trip(obj: object) -> object:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


# -- Wire form ------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(states())
def test_encode_decode_are_inverses(s: EndpointState) -> None:
    assert decode_state(wire_round_trip(encode_state(s))) == s
    assert decode_state(encode_state(s)) == s


@pytest.mark.parametrize("mutate, reason", [
    (lambda w: w[:3], "4 fields"),
    (lambda w: ["", *w[1:]], "node id"),
    (lambda w: ["x" * 65, *w[1:]], "node id"),
    (lambda w: [w[0], -1, *w[2:]], "generation"),
    (lambda w: [w[0], 2**63, *w[2:]], "generation"),
    (lambda w: [w[0], w[1], True, w[3]], "heartbeat"),
    (lambda w: [*w[:3], [[99, 1, 0]]], "unknown field tag"),
    (lambda w: [*w[:3], [[1, 1, 2], [1, 2, 2]]], "twice"),
    (lambda w: [*w[:3], [[1, 1, 9]]], "unknown status"),
    (lambda w: [*w[:3], [[2, 1, ["h", 0]]]], "port"),
    (lambda w: [*w[:3], [[2, 1, ["", 1]]]], "name"),
    (lambda w: [*w[:3], [[3, 1, "h:1"]]], "address"),
    (lambda w: [*w[:3], [[4, 1, ""]]], "name"),
    (lambda w: [*w[:3], [[6, 1, b""]]], "tokens"),
    (lambda w: [*w[:3], [[6, 1, b"\x00" * 7]]], "8-byte"),
    (lambda w: [*w[:3], [[6, 1, (2).to_bytes(8, "big") * 2]]], "ascending"),
    (lambda w: [*w[:3], [[7, 1, -5]]], "load"),
    (lambda w: [*w[:3], [[7, 1, 1.5]]], "string or an integer"),
    (lambda w: [*w[:3], [[7, -1, 1]]], "LOAD"),
    (lambda w: [*w[:3], [[7, 1]]], "tag, version, value"),
    (lambda w: [*w[:3], [[1, 1, 2]] * 8], "short list"),
])
def test_decode_refuses_malformed(mutate: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_state(mutate(encode_state(state())))


@settings(max_examples=120, deadline=None)
@given(states(), st.randoms(use_true_random=False))
def test_decode_of_damaged_states_raises_only_value_error(s: EndpointState,
                                                          rng: random.Random) -> None:
    """The trust boundary: a damaged encoding decodes to a valid state or raises
    ValueError, never anything else."""
    junk: list[object] = [None, -1, 2**64, "", "x", b"", b"\x00" * 9, [], [1], 1.5, True,
                          {"a": 1}]
    wire: Any = encode_state(s)
    for _ in range(rng.randint(1, 3)):
        path: list[Any] = [wire]
        node = wire
        while isinstance(node, list) and node and rng.random() < 0.7:
            node = rng.choice(node)
            path.append(node)
        parent = path[-2] if len(path) > 1 else None
        if isinstance(parent, list) and parent:
            parent[rng.randrange(len(parent))] = rng.choice(junk)
        else:
            wire = rng.choice(junk)
    try:
        decoded = decode_state(wire)
    except ValueError:
        return
    assert decode_state(encode_state(decoded)) == decoded


# -- Reconciliation ---------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(st.lists(states(node_id="n1", small=True), min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_merge_is_a_join(copies: list[EndpointState], rng: random.Random) -> None:
    """Commutative, associative, idempotent (invariant 2): copies merged in any order
    converge; and a merge never lowers anything (invariant 3)."""

    def join(a: EndpointState | None, b: EndpointState) -> EndpointState:
        merged = merge(a, b)
        assert merged is not None or a is not None
        return a if merged is None else merged  # type: ignore[return-value]

    first: EndpointState = reduce(join, copies[1:], copies[0])
    shuffled = copies[:]
    rng.shuffle(shuffled)
    second: EndpointState = reduce(join, shuffled[1:], shuffled[0])
    assert first == second
    assert merge(first, first) is None
    for copy in copies:
        assert merge(first, copy) is None  # the join already covers every copy
    for local in copies:
        for remote in copies:
            merged = merge(local, remote)
            if merged is None:
                continue
            assert merged.generation >= local.generation
            if merged.generation == local.generation:
                assert merged.heartbeat >= local.heartbeat
                for tag, held in local.fields.items():
                    assert merged.fields[tag].version >= held.version


def test_higher_generation_replaces_the_whole_state() -> None:
    old = with_fields(state(generation=100), 9, {AppField.LOAD: 9})
    new = state(generation=101, app={AppField.STATUS: Status.JOINING})
    assert merge(old, new) == new
    assert merge(new, old) is None


def test_same_generation_merges_per_field() -> None:
    base = state(version=1)
    load = with_fields(base, 2, {AppField.LOAD: 7})
    rack = with_fields(base, 3, {AppField.RACK: "r9"})
    merged = merge(load, rack.delta(2))
    assert merged is not None
    assert merged.get(AppField.LOAD) == 7 and merged.get(AppField.RACK) == "r9"
    assert merged.max_version == 3


def test_a_newer_heartbeat_alone_is_a_change() -> None:
    s = state()
    beat = EndpointState(s.node_id, s.generation, 5, s.fields)
    assert merge(s, beat.delta(s.max_version)) == beat
    assert merge(beat, s) is None


@settings(max_examples=100, deadline=None)
@given(states(node_id="n1"), st.integers(0, 2**63 - 1))
def test_delta_brings_an_up_to_date_copy_forward(s: EndpointState, since: int) -> None:
    """Invariant 4: a copy holding every field up to ``since`` plus the delta is ``s``."""
    older = EndpointState(s.node_id, s.generation, min(s.heartbeat, since), MappingProxyType(
        {tag: held for tag, held in s.fields.items() if held.version <= since}))
    delta = s.delta(since)
    assert all(held.version > since for held in delta.fields.values())
    merged = merge(older, delta)
    assert (merged or older).fields == s.fields


def test_a_departure_supersedes_the_incarnation_it_ends() -> None:
    dead = with_fields(state(generation=100), 50, {AppField.LOAD: 3})
    removed = departure(dead, Status.REMOVED, now_s=0)  # a clock behind the generation
    assert removed.generation == 101 and removed.status is Status.REMOVED
    assert removed.is_tombstone and removed.tokens == dead.tokens
    assert merge(dead, removed) == removed and merge(removed, dead) is None
    assert departure(dead, Status.REMOVED, 0) == removed  # two operators forging agree


def test_a_departure_carries_the_second_it_was_made() -> None:
    """Invariant 6: the tombstone's generation is its wall-clock stamp, so its age travels."""
    live = with_fields(state(generation=100), 50, {AppField.LOAD: 3})
    left = departure(live, Status.LEFT, now_s=5000)
    assert left.generation == 5000 and left.status is Status.LEFT
    assert merge(live, left) == left and merge(left, live) is None
    with pytest.raises(AssertionError):
        departure(live, Status.NORMAL, 5000)


def test_node_info_needs_every_required_field() -> None:
    assert state().node_info() == NodeInfo("n1", (1, 5, 2**64 - 1), "dc1", "r1")
    partial: dict[AppField, FieldValue] = {tag: value for tag, value in APP.items()
                                           if tag is not AppField.RACK}
    assert state(app=partial).node_info() is None


def test_owner_writes_are_validated() -> None:
    with pytest.raises(ValueError, match="ascending"):
        state(app={AppField.TOKENS: (5, 1)})
    with pytest.raises(ValueError, match="port"):
        state(app={AppField.PEER_ADDRESS: ("h", 70000)})
    with pytest.raises(AssertionError):
        with_fields(state(version=5), 5, {AppField.LOAD: 1})  # versions only grow
