"""The gossip exchange, sans IO: digests, SYN/ACK/ACK2, target choice, and the view.

Theory of operation (Cassandra's ``Gossiper``). Every ``gossip_interval`` the caller calls
``tick(live)``: the node bumps its own heartbeat and gets the targets to start an exchange
with: one random live peer; with probability ``unreachable / (live + 1)`` one peer believed
down (so a recovered node is noticed even if it does not gossip to us); and, unless the live
target was a seed, with probability ``seeds / (live + unreachable)`` (always, when nothing is
live) a seed address, so partitions of the cluster find each other again through the seeds
and a newcomer finds the cluster at all. For each target the caller sends ``make_syn()``.

The exchange (three messages, push-pull, one round trip and a half):
  SYN  (initiator -> peer): a digest ``(node, generation, max_version)`` per node it knows.
  ACK  (peer -> initiator): for each digest where the peer is newer, the state the initiator
       lacks (the whole state if the generations differ, else ``delta(version)``), plus every
       state the initiator did not list at all; and for each digest where the initiator is
       newer, a request digest carrying the peer's own (generation, max_version).
  ACK2 (initiator -> peer): the states the peer requested, as deltas from its digests.
After one exchange both sides hold the join of what either held (``merge`` is a join), so
information spreads as in push-pull epidemics: ~log3(n) rounds plus a small tail.

Invariants:
1. A node never takes a peer's copy of its own state (the owner rule of
   ``endpoint_state``); if a peer holds a copy of ours that is newer than ours (a forged
   removal while we were cut off, or our own previous incarnation after a clock step back),
   or a removal of our own generation (forged in the second we started: ``departure``
   stamps the wall-clock second), we move our generation past it, so our live state
   supersedes it everywhere (``Applied.self_contested`` says so; the caller should persist
   the generation).
2. Reconciliation is ``endpoint_state.merge``: higher generation wins, then per-field
   (version, value); so two replicas that received the same states in any order hold equal
   maps, and ``view()`` of equal maps is equal.
3. ``view()`` is a pure function of the state map, with every conflict between nodes
   resolved deterministically: of several nodes announcing the same peer address, the
   highest generation (then the smallest node id) keeps it and the others are shadowed (an
   address whose data directory was replaced); of several owners of one token, the smallest
   node id keeps it (``Ring.build``, ring.py invariant 2).
4. Target choice takes its randomness only from the injected ``random.Random`` and iterates
   only sorted collections: one seed replays a run exactly.
5. Tombstones (LEFT, REMOVED) are gossiped like any state, so they reach every node and
   outrank the older incarnation; they are never gossip targets and never in the ring.
   Once expired (``cluster.departures``) a tombstone is dropped, and one that arrives
   expired is not stored; a record of it refuses that node's states no newer than it, and
   answers a peer that still lists one with a reminder (the tombstone), in the ACK of its
   SYN or the ACK2 of its ACK.
6. Message decoders are trust boundaries: a malformed SYN/ACK/ACK2 raises ``ValueError``
   before anything is applied, and each message lists at most ``NODES_MAX`` nodes, each once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cluster.departures import Departures
from cluster.endpoint_state import (
    OWNERS,
    TOMBSTONES,
    Address,
    AppField,
    EndpointState,
    FieldValue,
    Status,
    check_node_id,
    check_version,
    decode_state,
    departure,
    encode_state,
    merge,
    states_by_id,
    with_fields,
)
from cluster.ring import NodeInfo

NODES_MAX = 1024  # nodes one message may list (messages.MEMBERS_MAX)


# -- Messages (plain dataclasses; the caller gives them wire tags) ---------------------


class Digest(NamedTuple):
    node_id: str
    generation: int
    max_version: int


@dataclass(frozen=True, slots=True)
class Syn:
    digests: tuple[Digest, ...]

    def to_wire(self) -> list[Any]:
        return [[list(d) for d in self.digests]]

    @classmethod
    def from_wire(cls, obj: object) -> Syn:
        (raw,) = _fields(obj, 1, "SYN")
        return cls(_digests(raw))


@dataclass(frozen=True, slots=True)
class Ack:
    requests: tuple[Digest, ...]  # states the peer wants, from its (generation, max_version)
    states: tuple[EndpointState, ...]  # states the initiator lacks

    def to_wire(self) -> list[Any]:
        return [[list(d) for d in self.requests], [encode_state(s) for s in self.states]]

    @classmethod
    def from_wire(cls, obj: object) -> Ack:
        raw_requests, raw_states = _fields(obj, 2, "ACK")
        return cls(_digests(raw_requests), _states(raw_states))


@dataclass(frozen=True, slots=True)
class Ack2:
    states: tuple[EndpointState, ...]

    def to_wire(self) -> list[Any]:
        return [[encode_state(s) for s in self.states]]

    @classmethod
    def from_wire(cls, obj: object) -> Ack2:
        (raw,) = _fields(obj, 1, "ACK2")
        return cls(_states(raw))


def _fields(obj: object, count: int, name: str) -> Sequence[Any]:
    if not isinstance(obj, (list, tuple)) or len(obj) != count:
        raise ValueError(f"{name}: expected {count} fields")
    return obj


def _list(raw: object, what: str) -> Sequence[Any]:
    if not isinstance(raw, (list, tuple)) or len(raw) > NODES_MAX:
        raise ValueError(f"{what}: not a list of at most {NODES_MAX}")
    return raw


def _digests(raw: object) -> tuple[Digest, ...]:
    out: list[Digest] = []
    seen: set[str] = set()
    for entry in _list(raw, "digests"):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise ValueError("a digest is [node_id, generation, max_version]")
        digest = Digest(check_node_id(entry[0]), check_version(entry[1], "generation"),
                        check_version(entry[2], "version"))
        if digest.node_id in seen:
            raise ValueError(f"digests: node {digest.node_id} listed twice")
        seen.add(digest.node_id)
        out.append(digest)
    return tuple(out)


def _states(raw: object) -> tuple[EndpointState, ...]:
    states = tuple(decode_state(entry) for entry in _list(raw, "states"))
    states_by_id(states)  # each node once
    return states


# -- The gossiper ------------------------------------------------------------------------


class Target(NamedTuple):
    """Where to send a SYN: a known node (``node_id`` set), or a seed address not yet known
    as a node (``node_id`` None: connect without knowing whom to expect)."""

    node_id: str | None
    address: Address


@dataclass(slots=True)
class Applied:
    """What applying some states changed, for the caller to act on."""

    new: list[str] = field(default_factory=list)  # nodes first learned
    restarted: list[str] = field(default_factory=list)  # a higher generation replaced the old
    # Heartbeat or generation advanced: feed these to the failure detector.
    alive: list[str] = field(default_factory=list)
    # The fields whose value changed (every field of a new or restarted node).
    changed: dict[str, frozenset[AppField]] = field(default_factory=dict)
    self_contested: bool = False  # invariant 1: our generation moved
    # Invariant 5: nodes taken out of the map (an expired tombstone, or a state an expired
    # tombstone superseded on arrival), and whether the departure records changed.
    dropped: list[str] = field(default_factory=list)
    records_changed: bool = False
    stale: list[str] = field(default_factory=list)  # live states a record refused

    @property
    def ring_changed(self) -> bool:
        """Whether the view may differ (statuses, tokens, addresses or nodes changed)."""
        placement = {AppField.STATUS, AppField.TOKENS, AppField.PEER_ADDRESS,
                     AppField.DATACENTER, AppField.RACK}
        return bool(self.new) or any(tags & placement for tags in self.changed.values())

    def absorb(self, other: Applied) -> None:
        self.new += other.new
        self.restarted += other.restarted
        self.alive += other.alive
        for node_id, tags in other.changed.items():
            self.changed[node_id] = self.changed.get(node_id, frozenset()) | tags
        self.self_contested |= other.self_contested
        self.dropped += other.dropped
        self.records_changed |= other.records_changed
        self.stale += other.stale

    @property
    def forgotten(self) -> bool:
        """Whether nodes or departure records went: the view and the saved file change."""
        return bool(self.dropped) or self.records_changed


class Gossiper:
    """One node's gossip state and protocol steps (see the module docstring).

    REQUIRES: ``generation`` exceeds every generation this node id used before (the caller
    derives it from the start time and persists it, as Cassandra does).

    ``wall_ms`` stamps departures and times their expiry (the default, for the exchange
    alone, stamps a departure just past the incarnation it ends); ``departures`` holds the
    expiry policy and the records kept from an earlier run (default: tombstones forever).
    """

    def __init__(self, node_id: str, generation: int, app: Mapping[AppField, FieldValue],
                 rng: random.Random, seeds: Iterable[Address] = (),
                 known: Iterable[EndpointState] = (), *,
                 wall_ms: Callable[[], int] = lambda: 0,
                 departures: Departures | None = None) -> None:
        self.node_id = check_node_id(node_id)
        self.rng = rng
        self.wall_ms = wall_ms
        self.departures = departures if departures is not None else Departures(0)
        self._version = 1
        me = with_fields(EndpointState(node_id, check_version(generation, "generation"), 0),
                         1, app)
        self._states: dict[str, EndpointState] = {node_id: me}
        for state in known:
            if state.node_id != node_id and self.departures.refusing(state) is None:
                merged = merge(self._states.get(state.node_id), state)
                if merged is not None:
                    self._states[state.node_id] = merged
        address = me.peer_address
        self.seeds = tuple(sorted(set(seeds) - ({address} if address else set())))

    # Local state -------------------------------------------------------------------------

    @property
    def me(self) -> EndpointState:
        return self._states[self.node_id]

    @property
    def states(self) -> Mapping[str, EndpointState]:
        return self._states

    def set_fields(self, values: Mapping[AppField, FieldValue]) -> None:
        """Publish new values of our own fields (status, tokens, load ...). Leaving (status
        LEFT, alone) is a departure (endpoint_state invariant 6): our state under a new
        generation stamped now, so every node drops it at the same time."""
        status = values.get(AppField.STATUS)
        if status in TOMBSTONES:
            assert isinstance(status, Status) and len(values) == 1, values
            left = departure(self.me, status, self._now_s())
            self._states[self.node_id] = left
            self._version = left.max_version
            return
        self._version += 1
        self._states[self.node_id] = with_fields(self.me, self._version, values)

    def set_status(self, status: Status) -> None:
        self.set_fields({AppField.STATUS: status})

    def beat(self) -> None:
        self._version += 1
        me = self.me
        self._states[self.node_id] = EndpointState(me.node_id, me.generation, self._version,
                                                   me.fields)

    def forget(self, node_id: str) -> EndpointState:
        """Publish ``node_id`` as REMOVED (endpoint_state invariant 1); REQUIRES a known
        other node. The caller checks it is down: a live node reasserts itself
        (invariant 1)."""
        assert node_id != self.node_id and node_id in self._states, node_id
        removed = departure(self._states[node_id], Status.REMOVED, self._now_s())
        self._states[node_id] = removed
        return removed

    def expire(self) -> Applied:
        """Drop the tombstones gossiped long enough and end the records whose time is over
        (invariant 5); call it every round."""
        applied = Applied()
        if not self.departures.tombstone_s:
            return applied
        now_s = self._now_s()
        for node_id, state in sorted(self._states.items()):
            if node_id != self.node_id and self.departures.expired(state, now_s):
                self._drop(state, now_s, applied)
        applied.records_changed |= bool(self.departures.lapse(now_s))
        return applied

    def _drop(self, tombstone: EndpointState, now_s: int, applied: Applied) -> None:
        held = self._states.pop(tombstone.node_id, None)
        self.departures.remember(tombstone, now_s)
        applied.records_changed = True
        if held is not None:
            applied.dropped.append(tombstone.node_id)
            if not held.is_tombstone:  # we had missed the departure: the ring loses it
                applied.changed[tombstone.node_id] = frozenset({AppField.STATUS})

    def _now_s(self) -> int:
        return self.wall_ms() // 1000

    # One round ---------------------------------------------------------------------------

    def tick(self, live: Collection[str]) -> list[Target]:
        """Beat, then choose this round's targets (invariant 4). ``live``: the peers the
        failure detector holds available."""
        self.beat()
        peers = [s for node_id, s in sorted(self._states.items())
                 if node_id != self.node_id and not s.is_tombstone and s.peer_address]
        up = [s for s in peers if s.node_id in live]
        down = [s for s in peers if s.node_id not in live]
        targets: list[Target] = []
        if up:
            targets.append(self._target(self.rng.choice(up)))
        if down and self.rng.random() < len(down) / (len(up) + 1):
            targets.append(self._target(self.rng.choice(down)))
        # Cassandra's maybeGossipToSeed: skip only when the live target was a seed and
        # enough seeds are live; otherwise a seed with probability seeds / peers.
        wanted = not up or targets[0].address not in self.seeds or len(up) < len(self.seeds)
        if self.seeds and wanted and (
                not up or self.rng.random() < len(self.seeds) / len(peers)):
            address = self.rng.choice(self.seeds)
            if all(t.address != address for t in targets):
                targets.append(Target(self._node_at(address), address))
        return targets

    def _target(self, state: EndpointState) -> Target:
        assert state.peer_address is not None
        return Target(state.node_id, state.peer_address)

    def _node_at(self, address: Address) -> str | None:
        return self.view().addresses.get(address)

    # The exchange --------------------------------------------------------------------------

    def make_syn(self) -> Syn:
        return Syn(tuple(Digest(s.node_id, s.generation, s.max_version)
                         for _, s in sorted(self._states.items())))

    def on_syn(self, syn: Syn) -> Ack:
        """The peer's side: what the initiator lacks, and what we want from it."""
        requests: list[Digest] = []
        states: list[EndpointState] = []
        listed = set()
        records = self.departures.records
        for digest in syn.digests:
            listed.add(digest.node_id)
            ours = self._states.get(digest.node_id)
            if ours is None:
                record = records.get(digest.node_id)
                if record is not None and digest.generation <= record.generation:
                    states.append(record.tombstone)  # a reminder (invariant 5)
                else:  # unknown, or a new incarnation of a departed node (ends the record)
                    requests.append(Digest(digest.node_id, 0, 0))
            elif digest.generation > ours.generation:
                requests.append(Digest(digest.node_id, ours.generation, 0))
            elif digest.generation < ours.generation:
                states.append(ours)
            elif digest.max_version > ours.max_version:
                requests.append(Digest(digest.node_id, ours.generation, ours.max_version))
            elif digest.max_version < ours.max_version:
                states.append(ours.delta(digest.max_version))
        states += [s for node_id, s in sorted(self._states.items()) if node_id not in listed]
        return Ack(tuple(requests), tuple(states))

    def on_ack(self, ack: Ack) -> tuple[Ack2, Applied]:
        """The initiator's side: apply what came, answer what was asked."""
        applied = self.apply(ack.states)
        records = self.departures.records
        reminders = [records[node_id].tombstone for node_id in applied.stale
                     if node_id in records]
        return Ack2((*self._answer(ack.requests), *reminders)), applied

    def on_ack2(self, ack2: Ack2) -> Applied:
        return self.apply(ack2.states)

    def _answer(self, requests: Iterable[Digest]) -> Iterable[EndpointState]:
        for request in requests:
            ours = self._states.get(request.node_id)
            if ours is None or ours.generation < request.generation:
                continue
            if ours.generation > request.generation:
                yield ours  # whole: the requester holds another incarnation
            elif ours.max_version > request.max_version:
                yield ours.delta(request.max_version)

    # Reconciliation ------------------------------------------------------------------------

    def apply(self, states: Iterable[EndpointState]) -> Applied:
        """Merge peer states into ours (invariants 1, 2)."""
        applied = Applied()
        now_s = self._now_s()
        for remote in states:
            if remote.node_id == self.node_id:
                self._contest(remote, applied)
                continue
            if self.departures.refusing(remote) is not None:
                if not remote.is_tombstone:
                    applied.stale.append(remote.node_id)
                continue
            local = self._states.get(remote.node_id)
            merged = merge(local, remote)
            if merged is None:
                continue
            if self.departures.expired(merged, now_s):  # we missed it: never store it
                self._drop(merged, now_s, applied)
                continue
            if self.departures.end(remote.node_id):  # a new incarnation (invariant 5)
                applied.records_changed = True
            self._states[remote.node_id] = merged
            if local is None:
                applied.new.append(remote.node_id)
            elif merged.generation > local.generation:
                applied.restarted.append(remote.node_id)
            if local is None or (merged.generation, merged.heartbeat) > (local.generation,
                                                                        local.heartbeat):
                applied.alive.append(remote.node_id)
            if local is None or merged.generation != local.generation:
                tags = frozenset(merged.fields)
            elif merged.fields is local.fields:
                tags = frozenset()  # a heartbeat alone (merge keeps the mapping)
            else:
                tags = frozenset(tag for tag, held in merged.fields.items()
                                 if local.get(tag) != held.value)
            if tags:
                applied.changed[remote.node_id] = tags
        return applied

    def _contest(self, remote: EndpointState, applied: Applied) -> None:
        me = self.me
        # A removal forged in the second we restarted shares our generation (departure's
        # stamp) and would win on its status version: it must be superseded too.
        ended = (remote.generation == me.generation and remote.is_tombstone
                 and not me.is_tombstone)
        if (remote.generation, remote.max_version) > (me.generation, me.max_version) or ended:
            assert remote.generation < 2**63 - 1
            # Restart our version counter in a generation no one holds (invariant 1).
            fresh = EndpointState(self.node_id, remote.generation + 1, 0)
            self._version = 1
            self._states[self.node_id] = with_fields(
                fresh, 1, {tag: held.value for tag, held in me.fields.items()})
            applied.self_contested = True

    # The view ------------------------------------------------------------------------------

    def view(self) -> View:
        return view(self._states.values())


@dataclass(frozen=True, slots=True)
class View:
    """Membership as the ring and the coordinator see it (invariant 3)."""

    owners: tuple[NodeInfo, ...]  # NORMAL and LEAVING members: ``Ring.build(owners)``
    joining: tuple[NodeInfo, ...]  # JOINING members (pending ranges)
    leaving: tuple[str, ...]
    tombstones: tuple[str, ...]  # LEFT and REMOVED
    shadowed: tuple[str, ...]  # lost their peer address to a newer node (invariant 3)
    addresses: Mapping[Address, str]  # peer address -> the node that holds it


def view(states: Iterable[EndpointState]) -> View:
    """The view of a state map (a pure function: invariants 2, 3)."""
    states = list(states)
    live = sorted((s for s in states if not s.is_tombstone), key=lambda s: s.node_id)
    tombstones = tuple(sorted(s.node_id for s in states if s.is_tombstone))
    addresses: dict[Address, EndpointState] = {}
    for state in live:
        address = state.peer_address
        if address is None:
            continue
        held = addresses.get(address)
        # Higher generation first, then the smaller id (live is sorted by id).
        if held is None or state.generation > held.generation:
            addresses[address] = state
    winners = {s.node_id for s in addresses.values()}
    shadowed = tuple(s.node_id for s in live if s.peer_address and s.node_id not in winners)
    owners: list[NodeInfo] = []
    joining: list[NodeInfo] = []
    for state in live:
        info = state.node_info() if state.node_id in winners else None
        if info is None:
            continue
        if state.status in OWNERS:
            owners.append(info)
        elif state.status is Status.JOINING:
            joining.append(info)
    leaving = tuple(s.node_id for s in live if s.status is Status.LEAVING)
    return View(tuple(owners), tuple(joining), leaving, tombstones, shadowed,
                {address: s.node_id for address, s in sorted(addresses.items())})
