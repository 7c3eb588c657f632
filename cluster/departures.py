"""When gossip forgets a node that left: the expiry of tombstones and the memory of dropped
ones (Cassandra's expire time of LEFT states, and its quarantine of just-removed nodes).

Theory of operation. A node that left (LEFT) or was removed by an operator (REMOVED) stays
in gossip as a tombstone, so that every node hears of its departure and no stale copy of it
brings it back. Kept forever, a cluster whose nodes are replaced over the years would carry
every node it ever had, in memory, on disk and in every exchange. So a tombstone is gossiped
for ``tombstone_s`` after it was made (its generation is that second, endpoint_state
invariant 6), then every node drops it. A small record of it (``Departed``) is kept, and
persisted, for another ``tombstone_s``; while it lasts:

- a state of that node no newer than the dropped tombstone (a generation at or below its
  own: the tombstone still gossiped by a peer whose clock is behind, or the old live
  incarnation held by a peer that was cut off the whole time) is refused, never re-learned;
- a peer found holding the node's old live state is sent a *reminder*, the tombstone rebuilt
  from the record, which supersedes the stale copy there and is dropped there in turn;
- a new incarnation (a higher generation: a removed node restarted with its data, as
  before) is taken as gossip always takes one, and ends the record.

A new node at the departed node's address has a new node id: no record concerns it.

Invariants:
1. Expiry reads only the tombstone's own generation and the caller's clock: nodes whose
   clocks agree drop a tombstone in the same second, whenever each heard of it.
2. A record refuses exactly the states its tombstone outranked or shared a generation with
   (generation <= the tombstone's); a higher generation is a new incarnation.
3. ``tombstone_s == 0`` keeps tombstones forever: nothing expires, nothing is recorded.
4. Each record ends ``tombstone_s`` after it was made, by the local clock (one made late,
   for a tombstone that arrived already expired, still guards for the full time), so the
   records held are those of the departures of about the last ``2 * tombstone_s``.
5. ``decode_record`` is a trust boundary: anything malformed raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cluster.endpoint_state import (
    TOMBSTONES,
    Address,
    AppField,
    EndpointState,
    Versioned,
    check_node_id,
    check_version,
    decode_state,
    encode_state,
)

TOMBSTONE_S_DEFAULT = 5 * 86_400  # gossip-tombstone-seconds: 2x this covers gc-grace-seconds


@dataclass(frozen=True, slots=True)
class Departed:
    """What is kept of a dropped tombstone (invariant 4)."""

    tombstone: EndpointState  # its status and address only: the fields a reminder carries
    until_s: int  # wall-clock second the record ends

    @property
    def node_id(self) -> str:
        return self.tombstone.node_id

    @property
    def generation(self) -> int:
        return self.tombstone.generation


def record_of(tombstone: EndpointState, until_s: int) -> Departed:
    """The record of ``tombstone`` (REQUIRES a tombstone), which doubles as the reminder."""
    assert tombstone.is_tombstone, tombstone.node_id
    kept: dict[AppField, Versioned] = {tag: held for tag, held in tombstone.fields.items()
            if tag in (AppField.STATUS, AppField.PEER_ADDRESS)}
    status = kept[AppField.STATUS]
    return Departed(EndpointState(tombstone.node_id, tombstone.generation, status.version,
                                  MappingProxyType(kept)), until_s)


class Departures:
    """The expiry policy and the records of dropped tombstones (see the module docstring)."""

    def __init__(self, tombstone_s: int, records: Iterable[Departed] = ()) -> None:
        assert tombstone_s >= 0
        self.tombstone_s = tombstone_s
        self.records: dict[str, Departed] = {r.node_id: r for r in records}

    def expired(self, state: EndpointState, now_s: int) -> bool:
        """Whether ``state`` is a tombstone gossiped long enough to be dropped (inv. 1, 3)."""
        return (self.tombstone_s > 0 and state.is_tombstone
                and now_s >= state.generation + self.tombstone_s)

    def remember(self, tombstone: EndpointState, now_s: int) -> None:
        self.records[tombstone.node_id] = record_of(tombstone, now_s + self.tombstone_s)

    def refusing(self, state: EndpointState) -> Departed | None:
        """The record that refuses ``state`` (invariant 2), None if it may be taken."""
        record = self.records.get(state.node_id)
        if record is not None and state.generation <= record.generation:
            return record
        return None

    def end(self, node_id: str) -> bool:
        """Drop the record of ``node_id`` (a new incarnation was taken); whether one was."""
        return self.records.pop(node_id, None) is not None

    def lapse(self, now_s: int) -> list[str]:
        """End the records whose time is over (invariant 4); their node ids, sorted."""
        over = sorted(node_id for node_id, r in self.records.items() if now_s >= r.until_s)
        for node_id in over:
            del self.records[node_id]
        return over

    def addresses(self) -> set[Address]:
        """The peer addresses the recorded nodes answered at (members invariant 1)."""
        return {address for r in self.records.values()
                if (address := r.tombstone.peer_address) is not None}


# -- Stored form (cluster.state, docs/formats/cluster-state.md) --------------------------


def encode_record(record: Departed) -> list[Any]:
    """``[endpoint state, until_s]``: the reminder as gossip encodes it, and the end."""
    return [encode_state(record.tombstone), record.until_s]


def decode_record(obj: object) -> Departed:
    """The record of ``encode_record``; ValueError if ``obj`` is not one (invariant 5)."""
    if not isinstance(obj, (list, tuple)) or len(obj) != 2:
        raise ValueError("a departed record has 2 fields")
    tombstone = decode_state(obj[0])
    if tombstone.status not in TOMBSTONES:
        raise ValueError(f"departed node {check_node_id(tombstone.node_id)}: not a tombstone")
    if tombstone.fields.keys() - {AppField.STATUS, AppField.PEER_ADDRESS}:
        raise ValueError(f"departed node {tombstone.node_id}: fields beyond status, address")
    return Departed(tombstone, check_version(obj[1], "until_s"))

