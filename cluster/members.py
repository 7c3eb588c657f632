"""Who is in the cluster: member records, the membership view the node works with, and the
file that keeps the gossip states across restarts.

Theory of operation. Gossip (``cluster.gossip``) holds every node's endpoint state; the
``Membership`` here is what the rest of the node reads from it: a ``Member`` record per
placed node (addresses, datacenter, rack, tokens, generation), each node's status, the ring
of the owners and, while nodes join or leave, the ring as it will be. The gossip states are
kept in ``cluster.state`` in the data directory, so a restarted node knows the ring (and its
own status and generation) before any peer answers.

Invariants:
1. ``complete`` is True only when every configured peer address (``cluster-peers`` and
   ``seeds``) is the peer address of some known node: until then the ring may be partial
   and the node must not coordinate requests (a write placed on a partial ring would land
   where later reads do not look). A node that departed counts as known (its tombstone, or
   its departure record once the tombstone is dropped), and an address once known stays
   known while the process runs: the ring without a departed node is whole, so forgetting
   it must not make a running node wait for it.
2. ``ring()`` holds the owners only (NORMAL and LEAVING); joining nodes are in ``members``
   and in ``future_ring()``, never in ``ring()``.
3. ``decode_file`` is a trust boundary: anything malformed raises ``CorruptionError``,
   never a half-built list. It reads format version 1 (states only: no departure records)
   and 2.

Format of ``cluster.state``: docs/formats/cluster-state.md.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import msgpack

from cluster.departures import Departed, decode_record, encode_record
from cluster.endpoint_state import EndpointState, Status, decode_state, encode_state
from cluster.errors import CorruptionError
from cluster.gossip import View
from cluster.ring import NodeInfo, Ring
from engine.fs import FileSystem, join, replace_file

STATE_NAME = "cluster.state"
MAGIC = b"RKVGSTA\n"
FORMAT_VERSION = 2  # On disk: bump on any change of layout; decoders reject unknown versions.
_READABLE_VERSIONS = (1, 2)  # 1: a bare array of states, before departure records
_HEADER = struct.Struct(">8sBI")  # magic, version, body length
_TRAILER = struct.Struct(">I")  # CRC-32 of header and body
FILE_BYTES_MAX = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    peer_host: str
    peer_port: int
    client_host: str
    client_port: int
    datacenter: str
    rack: str
    tokens: tuple[int, ...]
    # The node's start time in seconds (as Cassandra's gossip generation): a restarted node's
    # record supersedes the one it had before (invariant 2).
    generation: int = 0

    def info(self) -> NodeInfo:
        return NodeInfo(self.node_id, self.tokens, self.datacenter, self.rack)

    @property
    def peer_address(self) -> tuple[str, int]:
        return self.peer_host, self.peer_port


class Membership:
    """The members as this node sees them, derived from the gossip states (issue 5).

    ``members`` holds every placed node (owners, joining and leaving: not tombstones, not
    shadowed), ``status`` their gossip status; ``ring()`` is built from the owners only
    (NORMAL and LEAVING), ``future_ring()`` from the ring as it will be once the joining
    nodes joined and the leaving ones left (None when no change is pending).
    """

    def __init__(self, me: Member, peer_addresses: Iterable[tuple[str, int]]) -> None:
        self.me = me
        self.peer_addresses = tuple(sorted(set(peer_addresses) - {me.peer_address}))
        self.members: dict[str, Member] = {me.node_id: me}
        self.status: dict[str, Status] = {}
        self.addresses: set[tuple[str, int]] = {me.peer_address}
        self._owners: list[NodeInfo] = []
        self._future: list[NodeInfo] | None = None
        self._ring: Ring | None = None
        self._future_ring: Ring | None = None
        self._complete: bool | None = None

    def update(self, states: Iterable[EndpointState], view: View,
               departed: Iterable[tuple[str, int]] = ()) -> None:
        """Rebuild from the gossiper's states and view; ``departed``: the peer addresses of
        the departure records (invariant 1)."""
        by_id = {s.node_id: s for s in states}
        members: dict[str, Member] = {}
        status: dict[str, Status] = {}
        for info in (*view.owners, *view.joining):
            state = by_id[info.node_id]
            member = _member_of(state, info)
            if member is None:
                continue
            members[info.node_id] = member
            status[info.node_id] = state.status or Status.JOINING
        me = members.get(self.me.node_id)
        if me is not None:
            self.me = me
        members[self.me.node_id] = self.me
        self.members = members
        self.status = status
        # A configured peer that left the ring (LEFT, REMOVED) is known too: the ring
        # without it is whole, and waiting for its address would block this node forever.
        self.addresses |= set(view.addresses) | set(departed) | {
            s.peer_address for s in by_id.values()
            if s.is_tombstone and s.peer_address is not None}
        self._owners = list(view.owners)
        leaving = set(view.leaving)
        self._future = None
        if view.joining or leaving:
            self._future = [i for i in (*view.owners, *view.joining) if i.node_id not in leaving]
        self._ring = None
        self._future_ring = None
        self._complete = None

    def expect(self, address: tuple[str, int]) -> None:
        """Count ``address`` as a configured peer from now on (invariant 1): CLUSTER MEET
        from a lone node, whose view is not whole until it has heard of the node it met."""
        if address != self.me.peer_address and address not in self.peer_addresses:
            self.peer_addresses = tuple(sorted({*self.peer_addresses, address}))
            self._complete = None

    def missing_addresses(self) -> list[tuple[str, int]]:
        """Configured peer addresses no known node answers at (invariant 1)."""
        return [address for address in self.peer_addresses if address not in self.addresses]

    @property
    def complete(self) -> bool:
        # Asked on every request: cached, since it changes only with ``update``.
        if self._complete is None:
            self._complete = not self.missing_addresses()
        return self._complete

    def status_of(self, node_id: str) -> Status | None:
        return self.status.get(node_id)

    def ring(self) -> Ring:
        if self._ring is None:
            self._ring = Ring.build(self._owners)
        return self._ring

    def future_ring(self) -> Ring | None:
        if self._future is None:
            return None
        if self._future_ring is None:
            self._future_ring = Ring.build(self._future)
        return self._future_ring

    def others(self) -> list[Member]:
        return [m for node_id, m in sorted(self.members.items()) if node_id != self.me.node_id]

    def by_peer_address(self, address: tuple[str, int]) -> Member | None:
        for member in self.members.values():
            if member.peer_address == address:
                return member
        return None


def _member_of(state: EndpointState, info: NodeInfo) -> Member | None:
    peer, client = state.peer_address, state.client_address
    if peer is None or client is None:
        return None
    return Member(state.node_id, peer[0], peer[1], client[0], client[1], info.datacenter,
                  info.rack, info.tokens, state.generation)


# -- The file ------------------------------------------------------------------------------


class Stored(NamedTuple):
    """What ``cluster.state`` holds: the gossip states, and the departure records."""

    states: list[EndpointState]
    departed: list[Departed]


def encode_file(states: Iterable[EndpointState], departed: Iterable[Departed] = ()) -> bytes:
    body = msgpack.packb([[encode_state(s) for s in sorted(states, key=lambda s: s.node_id)],
                          [encode_record(r) for r in sorted(departed,
                                                            key=lambda r: r.node_id)]],
                         use_bin_type=True)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body))
    return head + body + _TRAILER.pack(zlib.crc32(head + body))


def decode_file(data: bytes) -> Stored:
    """The states and records of a ``cluster.state`` file; CorruptionError if it is not
    one (invariant 3)."""
    if len(data) < _HEADER.size + _TRAILER.size:
        raise CorruptionError(f"{STATE_NAME}: {len(data)} bytes is too short")
    magic, version, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(f"{STATE_NAME}: bad magic {magic!r}")
    if version not in _READABLE_VERSIONS:
        raise CorruptionError(f"{STATE_NAME}: unknown format version {version}")
    if _HEADER.size + length + _TRAILER.size != len(data):
        raise CorruptionError(f"{STATE_NAME}: length {length} does not match the file size")
    (crc,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if zlib.crc32(data[:-_TRAILER.size]) != crc:
        raise CorruptionError(f"{STATE_NAME}: checksum mismatch")
    try:
        body = msgpack.unpackb(data[_HEADER.size:-_TRAILER.size], raw=False)
        if version == 1:
            body = [body, []]
        if not isinstance(body, list) or len(body) != 2:
            raise ValueError("not [states, departed]")
        states, departed = body
        if not isinstance(states, list) or not isinstance(departed, list):
            raise ValueError("not lists of endpoint states and departure records")
        return Stored([decode_state(s) for s in states], [decode_record(r) for r in departed])
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptionError(f"{STATE_NAME}: {exc}") from None


def read(fs: FileSystem, directory: str) -> Stored:
    """What is stored in ``directory`` (nothing if no file); CorruptionError if damaged."""
    path = join(directory, STATE_NAME)
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return Stored([], [])
    if size > FILE_BYTES_MAX:
        raise CorruptionError(f"{STATE_NAME}: {size} bytes is too large")
    file = fs.open_read(path)
    try:
        return decode_file(file.read(size))
    finally:
        file.close()


def write(fs: FileSystem, directory: str, states: Iterable[EndpointState],
          departed: Iterable[Departed] = ()) -> None:
    """Durably replace the stored states and records (temporary file, fsync, rename, fsync
    dir)."""
    replace_file(fs, directory, STATE_NAME, encode_file(states, departed))
