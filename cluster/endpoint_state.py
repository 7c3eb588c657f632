"""What gossip says about one node: its endpoint state, with per-field versions, and how two
copies of it reconcile.

Theory of operation (Cassandra's gossiper). Every node publishes one ``EndpointState``:
a ``generation`` (fixed for the life of a process: its start time in seconds, raised past
any earlier one), a ``heartbeat`` version bumped every gossip round, and application fields
(``AppField``: status, peer and client addresses, datacenter, rack, tokens, load), each
tagged with the version at which it was last set. Heartbeat and field versions come from one
counter per node and generation, so ``max_version`` says how new a copy is, and a copy can
be brought up to date by sending only the fields newer than the receiver's ``max_version``
(``delta``). Per-field versions rather than one whole-record version: the heartbeat changes
every second, the tokens (up to 4096 x 8 bytes) almost never, and whole records would resend
every node's tokens in every exchange.

Invariants:
1. Only the owner writes its state, with one exception: ``departure(state, REMOVED, now)``
   (an operator removing a dead node), which publishes the dead node's state under a higher
   generation with status ``REMOVED`` (Cassandra's ``advertiseRemoving``), so it supersedes
   whatever copy of the dead incarnation is still around.
2. Order: a higher generation wins outright (the new incarnation's full state replaces the
   old); within a generation each field is kept at its highest (version, value) and the
   heartbeat at its highest version. Equal versions with different values cannot come from
   one owner; should they meet (a forged removal racing the owner's restart in the same
   second), the larger canonical encoding wins, so ``merge`` is still a join: commutative,
   associative and idempotent, and replicas converge whatever the delivery order.
3. ``merge`` never lowers anything: the result's generation, heartbeat and field versions
   are each >= those of the local copy.
4. ``delta(v)`` holds the heartbeat and exactly the fields with version > ``v``; merging
   ``S.delta(v)`` into a copy of the same generation that had everything up to ``v`` gives
   ``S``'s fields. A copy of a different generation must be sent whole (``Gossiper`` does).
5. ``decode_state`` is a trust boundary: anything malformed raises ``ValueError``; a decoded
   state satisfies every limit below (ids, names, ports, tokens strictly ascending, counts).
6. A tombstone (LEFT, REMOVED) is made by ``departure`` only: its generation is the
   wall-clock second it was made, raised past the incarnation it ends. So it supersedes
   that incarnation everywhere, and its age travels with it: every node agrees (up to clock
   skew) when it has been gossiped long enough to be dropped (``cluster.departures``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType
from typing import Any, TypeAlias, cast

import msgpack

from cluster.keys import TOKEN_MAX
from cluster.ring import NODE_TOKENS_MAX, NodeInfo

NODE_ID_BYTES_MAX = 64  # messages.NODE_ID_BYTES_MAX
NAME_BYTES_MAX = 255  # messages.NAME_BYTES_MAX: hosts, datacenters, racks
VERSION_MAX = 2**63 - 1  # generations and versions fit a signed 64-bit msgpack int
_TOKEN = struct.Struct(">Q")


class Status(enum.IntEnum):
    """A node's place in the ring's life cycle. On wire: never renumber; retire instead."""

    JOINING = 1  # taking tokens, streaming its ranges; not yet an owner
    NORMAL = 2  # owns its tokens
    LEAVING = 3  # still owns its tokens while it streams them away (decommission)
    LEFT = 4  # decommissioned: owns nothing; a tombstone (gossiped, then dropped: departures)
    REMOVED = 5  # removed by an operator while dead (``departure``); a tombstone too


TOMBSTONES = frozenset({Status.LEFT, Status.REMOVED})
OWNERS = frozenset({Status.NORMAL, Status.LEAVING})  # statuses whose tokens are in the ring


class AppField(enum.IntEnum):
    """Application state tags. On wire: never renumber; retire instead."""

    STATUS = 1  # Status
    PEER_ADDRESS = 2  # (host, port) of the peer protocol
    CLIENT_ADDRESS = 3  # (host, port) of the RESP port
    DATACENTER = 4  # str
    RACK = 5  # str
    TOKENS = 6  # tuple[int, ...], strictly ascending
    LOAD = 7  # int: bytes of live data on disk


Address: TypeAlias = tuple[str, int]
FieldValue: TypeAlias = Status | Address | str | tuple[int, ...] | int
REQUIRED = frozenset(AppField) - {AppField.LOAD}  # fields a member must have to be placed


@dataclass(frozen=True, slots=True)
class Versioned:
    value: FieldValue
    version: int


@dataclass(frozen=True, slots=True)
class EndpointState:
    node_id: str
    generation: int
    heartbeat: int  # version of the last heartbeat
    fields: Mapping[AppField, Versioned] = field(default_factory=lambda: MappingProxyType({}))
    # Derived, kept because every digest and every SYN comparison asks for it.
    max_version: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_version",
                           max([self.heartbeat, *(v.version for v in self.fields.values())]))

    def get(self, tag: AppField) -> FieldValue | None:
        held = self.fields.get(tag)
        return None if held is None else held.value

    @property
    def status(self) -> Status | None:
        value = self.get(AppField.STATUS)
        return value if isinstance(value, Status) else None

    @property
    def peer_address(self) -> Address | None:
        return cast("Address | None", self.get(AppField.PEER_ADDRESS))

    @property
    def client_address(self) -> Address | None:
        return cast("Address | None", self.get(AppField.CLIENT_ADDRESS))

    @property
    def tokens(self) -> tuple[int, ...]:
        return cast("tuple[int, ...]", self.get(AppField.TOKENS) or ())

    @property
    def is_tombstone(self) -> bool:
        return self.status in TOMBSTONES

    def delta(self, since_version: int) -> EndpointState:
        """The heartbeat and the fields newer than ``since_version`` (invariant 4)."""
        newer = {tag: held for tag, held in self.fields.items() if held.version > since_version}
        return EndpointState(self.node_id, self.generation, self.heartbeat,
                             MappingProxyType(newer))

    def node_info(self) -> NodeInfo | None:
        """The state as ring placement sees it; None unless every required field is set."""
        if not self.fields.keys() >= REQUIRED or not self.tokens:
            return None
        dc, rack = self.get(AppField.DATACENTER), self.get(AppField.RACK)
        assert isinstance(dc, str) and isinstance(rack, str)
        return NodeInfo(self.node_id, self.tokens, dc, rack)


def with_fields(state: EndpointState, version: int,
                values: Mapping[AppField, FieldValue]) -> EndpointState:
    """``state`` with ``values`` set at ``version`` (the owner's write; REQUIRES version
    greater than ``state.max_version``)."""
    assert version > state.max_version, (version, state.max_version)
    fields = dict(state.fields)
    for tag, value in values.items():
        fields[tag] = Versioned(_check_value(tag, value), version)
    return EndpointState(state.node_id, state.generation, state.heartbeat,
                         MappingProxyType(fields))


def departure(state: EndpointState, status: Status, now_s: int) -> EndpointState:
    """``state`` ended as a tombstone (invariants 1, 6): the leaving node's own LEFT, or an
    operator's REMOVED of a dead node. Deterministic, so two operators forging the same
    removal in the same second agree. REQUIRES ``status`` in TOMBSTONES."""
    assert status in TOMBSTONES, status
    generation = max(state.generation + 1, now_s)
    assert generation <= VERSION_MAX
    fields = {tag: Versioned(held.value, 1) for tag, held in state.fields.items()}
    fields[AppField.STATUS] = Versioned(status, 2)
    return EndpointState(state.node_id, generation, 2, MappingProxyType(fields))


# -- Reconciliation (invariants 2, 3) ----------------------------------------------------


def merge(local: EndpointState | None, remote: EndpointState) -> EndpointState | None:
    """``local`` joined with ``remote``; None when ``remote`` adds nothing (REQUIRES: same
    node; a remote of a higher generation is a whole state, invariant 4)."""
    if local is None or remote.generation > local.generation:
        return remote
    assert local.node_id == remote.node_id, (local.node_id, remote.node_id)
    if remote.generation < local.generation:
        return None
    fields = dict(local.fields)
    changed = False
    for tag, theirs in remote.fields.items():
        ours = fields.get(tag)
        if ours is None or _order(tag, theirs) > _order(tag, ours):
            fields[tag] = theirs
            changed = True
    if not changed and remote.heartbeat <= local.heartbeat:
        return None
    return EndpointState(local.node_id, local.generation, max(local.heartbeat, remote.heartbeat),
                         MappingProxyType(fields) if changed else local.fields)


def _order(tag: AppField, held: Versioned) -> tuple[int, bytes]:
    return held.version, msgpack.packb(_value_to_wire(tag, held.value), use_bin_type=True)


# -- Wire form (invariant 5) -----------------------------------------------------------


def encode_state(state: EndpointState) -> list[Any]:
    """``[node_id, generation, heartbeat, [[tag, version, value], ...]]``, tags ascending."""
    return [state.node_id, state.generation, state.heartbeat,
            [[int(tag), held.version, _value_to_wire(tag, held.value)]
             for tag, held in sorted(state.fields.items())]]


def decode_state(obj: object) -> EndpointState:
    """The state of ``encode_state``; ValueError if ``obj`` is not one (invariant 5)."""
    if not isinstance(obj, (list, tuple)) or len(obj) != 4:
        raise ValueError("an endpoint state has 4 fields")
    node_id, generation, heartbeat, raw_fields = obj
    node_id = check_node_id(node_id)
    generation = check_version(generation, "generation")
    heartbeat = check_version(heartbeat, "heartbeat")
    if not isinstance(raw_fields, (list, tuple)) or len(raw_fields) > len(AppField):
        raise ValueError(f"node {node_id}: application state is not a short list")
    fields: dict[AppField, Versioned] = {}
    for entry in raw_fields:
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise ValueError(f"node {node_id}: a field is [tag, version, value]")
        raw_tag, version, raw_value = entry
        if type(raw_tag) is not int or raw_tag not in AppField._value2member_map_:
            raise ValueError(f"node {node_id}: unknown field tag {raw_tag!r}")
        tag = AppField(raw_tag)
        if tag in fields:
            raise ValueError(f"node {node_id}: field {tag.name} twice")
        fields[tag] = Versioned(_value_from_wire(tag, raw_value),
                                check_version(version, tag.name))
    return EndpointState(node_id, generation, heartbeat, MappingProxyType(fields))


def check_node_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > NODE_ID_BYTES_MAX:
        raise ValueError(f"invalid node id {value!r:.80}")
    return value


def check_version(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= VERSION_MAX:
        raise ValueError(f"invalid {what} {value!r:.40}")
    return value


def _value_to_wire(tag: AppField, value: FieldValue) -> Any:
    if tag is AppField.TOKENS:
        assert isinstance(value, tuple)
        return b"".join(_TOKEN.pack(t) for t in value)
    if tag in (AppField.PEER_ADDRESS, AppField.CLIENT_ADDRESS):
        assert isinstance(value, tuple)
        return list(value)
    return int(value) if isinstance(value, Status) else value


def _value_from_wire(tag: AppField, raw: object) -> FieldValue:
    if tag is AppField.TOKENS:
        if not isinstance(raw, bytes) or len(raw) % _TOKEN.size:
            raise ValueError("TOKENS: not 8-byte words")
        return _check_value(tag, tuple(t for (t,) in _TOKEN.iter_unpack(raw)))
    if tag is AppField.STATUS:
        if type(raw) is not int or raw not in Status._value2member_map_:
            raise ValueError(f"STATUS: unknown status {raw!r:.40}")
        return Status(raw)
    if tag in (AppField.PEER_ADDRESS, AppField.CLIENT_ADDRESS):
        if not isinstance(raw, (list, tuple)) or len(raw) != 2:
            raise ValueError(f"{tag.name}: an address is [host, port]")
        return _check_value(tag, (raw[0], raw[1]))
    if not isinstance(raw, (str, int)):
        raise ValueError(f"{tag.name}: not a string or an integer")
    return _check_value(tag, raw)


def _check_value(tag: AppField, value: FieldValue) -> FieldValue:
    """``value`` if it is valid for ``tag``, else ValueError (shared by writer and reader)."""
    if tag is AppField.STATUS:
        if not isinstance(value, Status):
            raise ValueError(f"{tag.name}: not a Status")
    elif tag in (AppField.PEER_ADDRESS, AppField.CLIENT_ADDRESS):
        if not isinstance(value, tuple) or len(value) != 2:
            raise ValueError(f"{tag.name}: not (host, port)")
        host, port = value
        _check_name(tag, host)
        if type(port) is not int or not 0 < port <= 0xFFFF:
            raise ValueError(f"{tag.name}: invalid port {port!r:.40}")
    elif tag in (AppField.DATACENTER, AppField.RACK):
        _check_name(tag, value)
    elif tag is AppField.TOKENS:
        if not isinstance(value, tuple) or not 0 < len(value) <= NODE_TOKENS_MAX:
            raise ValueError(f"{tag.name}: 1 to {NODE_TOKENS_MAX} tokens")
        if not all(type(t) is int and 0 <= t <= TOKEN_MAX for t in value):
            raise ValueError(f"{tag.name}: not 64-bit tokens")
        if any(a >= b for a, b in pairwise(cast("tuple[int, ...]", value))):
            raise ValueError(f"{tag.name}: not strictly ascending")
    elif tag is AppField.LOAD and (type(value) is not int or not 0 <= value <= VERSION_MAX):
        raise ValueError(f"{tag.name}: invalid load {value!r:.40}")
    return value


def _check_name(tag: AppField, value: object) -> None:
    if not isinstance(value, str) or not value or len(value.encode()) > NAME_BYTES_MAX:
        raise ValueError(f"{tag.name}: empty or invalid name {value!r:.80}")


def states_by_id(states: Sequence[EndpointState]) -> dict[str, EndpointState]:
    """Index ``states`` by node id; ValueError if one node appears twice (a peer's message)."""
    out: dict[str, EndpointState] = {}
    for state in states:
        if state.node_id in out:
            raise ValueError(f"node {state.node_id} listed twice")
        out[state.node_id] = state
    return out
