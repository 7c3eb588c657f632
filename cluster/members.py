"""Who is in the cluster: member records, the static membership view and its file.

Theory of operation. Membership is static in this version (issue 4): each node's config
names the peer addresses of the others (``cluster-peers``). A node learns who answers at an
address (node id, tokens, datacenter, rack, client address) by exchanging ``MEMBERS`` with
it: the request carries the sender's own record, the reply every record the receiver knows.
So a node configured with a single peer still learns the whole cluster, and every record a
node learns is kept in ``cluster.members`` in its data directory, so a restart finds the ring
even while peers are down. Gossip (issue 5) will replace the exchange schedule and add
liveness; the records and the file stay.

Invariants:
1. A node's own record always comes from its own state (config, ``node.tokens``), never
   from a peer: a peer's stale view of us cannot move our tokens.
2. For another node, the record with the higher ``generation`` wins; equal generations keep
   the record already held (the exchange is idempotent and order-insensitive).
3. ``complete`` is True only when every configured peer address is the peer address of some
   known member: until then the ring is partial and the node must not coordinate requests
   (a write placed on a partial ring would land where later reads do not look).
4. ``decode_file`` and ``Member.from_wire`` are trust boundaries: anything malformed raises
   ``CorruptionError`` (the file) or ``ValueError`` (a peer's record), never a half-built view.

Format of ``cluster.members``: docs/formats/cluster-members.md.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import msgpack

from cluster.errors import CorruptionError
from cluster.ring import NODE_TOKENS_MAX, NodeInfo, Ring
from engine.fs import FileSystem, join, replace_file

MEMBERS_NAME = "cluster.members"
MAGIC = b"RKVMEMB\n"
FORMAT_VERSION = 1  # On disk: bump on any change of layout; decoders reject unknown versions.
_HEADER = struct.Struct(">8sBI")  # magic, version, body length
_TRAILER = struct.Struct(">I")  # CRC-32 of header and body
FILE_BYTES_MAX = 64 * 1024 * 1024
_TOKEN = struct.Struct(">Q")


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

    def to_wire(self) -> list[Any]:
        """The record as ``messages.Members`` carries it."""
        packed = b"".join(_TOKEN.pack(t) for t in self.tokens)
        return [self.node_id, self.peer_host, self.peer_port, self.client_host,
                self.client_port, self.datacenter, self.rack, packed, self.generation]

    @classmethod
    def from_wire(cls, fields: Sequence[Any]) -> Member:
        """The record of ``to_wire``; ValueError if it is not one (invariant 4). The field
        types were checked by the wire schema; this checks what the schema cannot."""
        if not isinstance(fields, (list, tuple)) or len(fields) != 9:
            raise ValueError("a member record has 9 fields")
        node_id, peer_host, peer_port, client_host, client_port, dc, rack, packed, gen = fields
        if not isinstance(packed, bytes) or not packed or len(packed) % 8:
            raise ValueError(f"member {node_id!r}: tokens are not 8-byte words")
        tokens = tuple(t for (t,) in _TOKEN.iter_unpack(packed))
        if len(tokens) > NODE_TOKENS_MAX or any(a >= b for a, b in pairwise(tokens)):
            raise ValueError(f"member {node_id!r}: tokens are not strictly ascending")
        for name, text in (("node id", node_id), ("host", peer_host), ("host", client_host),
                           ("datacenter", dc), ("rack", rack)):
            if not isinstance(text, str) or not text:
                raise ValueError(f"member record: empty or invalid {name}")
        for port in (peer_port, client_port):
            if type(port) is not int or not 0 < port <= 0xFFFF:
                raise ValueError(f"member {node_id!r}: invalid port {port!r}")
        if type(gen) is not int or gen < 0:
            raise ValueError(f"member {node_id!r}: invalid generation {gen!r}")
        return cls(node_id, peer_host, peer_port, client_host, client_port, dc, rack, tokens,
                   gen)


class Membership:
    """The static membership view of one node (see the module docstring)."""

    def __init__(self, me: Member, peer_addresses: Iterable[tuple[str, int]],
                 known: Iterable[Member] = ()) -> None:
        self.me = me
        self.peer_addresses = tuple(sorted(set(peer_addresses) - {me.peer_address}))
        self.members: dict[str, Member] = {me.node_id: me}
        for member in known:
            self.learn(member)
        self._ring: Ring | None = None

    def learn(self, member: Member) -> bool:
        """Take ``member`` (invariants 1, 2); True if the view changed."""
        if member.node_id == self.me.node_id:
            return False
        held = self.members.get(member.node_id)
        if held is not None and (held == member or held.generation >= member.generation):
            return False
        # Another member at the same peer address is an older incarnation of that address
        # (a node whose data directory was replaced): the address now answers as ``member``.
        for other in [m for m in self.members.values()
                      if m.peer_address == member.peer_address and m.node_id != member.node_id
                      and m.node_id != self.me.node_id]:
            del self.members[other.node_id]
        self.members[member.node_id] = member
        self._ring = None
        return True

    def learn_all(self, members: Iterable[Member]) -> bool:
        changed = False
        for member in members:
            changed = self.learn(member) or changed
        return changed

    def missing_addresses(self) -> list[tuple[str, int]]:
        """Configured peer addresses no known member answers at (invariant 3)."""
        known = {m.peer_address for m in self.members.values()}
        return [address for address in self.peer_addresses if address not in known]

    @property
    def complete(self) -> bool:
        return not self.missing_addresses()

    def ring(self) -> Ring:
        if self._ring is None:
            self._ring = Ring.build(m.info() for m in self.members.values())
        return self._ring

    def others(self) -> list[Member]:
        return [m for node_id, m in sorted(self.members.items()) if node_id != self.me.node_id]

    def by_peer_address(self, address: tuple[str, int]) -> Member | None:
        for member in self.members.values():
            if member.peer_address == address:
                return member
        return None


# -- The file ------------------------------------------------------------------------------


def encode_file(members: Iterable[Member]) -> bytes:
    body = msgpack.packb([m.to_wire() for m in sorted(members, key=lambda m: m.node_id)],
                         use_bin_type=True)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body))
    return head + body + _TRAILER.pack(zlib.crc32(head + body))


def decode_file(data: bytes) -> list[Member]:
    """The records of a ``cluster.members`` file; CorruptionError if it is not one."""
    if len(data) < _HEADER.size + _TRAILER.size:
        raise CorruptionError(f"{MEMBERS_NAME}: {len(data)} bytes is too short")
    magic, version, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(f"{MEMBERS_NAME}: bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise CorruptionError(f"{MEMBERS_NAME}: unknown format version {version}")
    if _HEADER.size + length + _TRAILER.size != len(data):
        raise CorruptionError(f"{MEMBERS_NAME}: length {length} does not match the file size")
    (crc,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if zlib.crc32(data[:-_TRAILER.size]) != crc:
        raise CorruptionError(f"{MEMBERS_NAME}: checksum mismatch")
    try:
        records = msgpack.unpackb(data[_HEADER.size:-_TRAILER.size], raw=False)
        if not isinstance(records, list):
            raise ValueError("not a list of member records")
        return [Member.from_wire(record) for record in records]
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptionError(f"{MEMBERS_NAME}: {exc}") from None


def read(fs: FileSystem, directory: str) -> list[Member]:
    """The members stored in ``directory`` ([] if none); CorruptionError if damaged."""
    path = join(directory, MEMBERS_NAME)
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return []
    if size > FILE_BYTES_MAX:
        raise CorruptionError(f"{MEMBERS_NAME}: {size} bytes is too large")
    file = fs.open_read(path)
    try:
        return decode_file(file.read(size))
    finally:
        file.close()


def write(fs: FileSystem, directory: str, members: Iterable[Member]) -> None:
    """Durably replace the stored members (temporary file, fsync, rename, fsync dir)."""
    replace_file(fs, directory, MEMBERS_NAME, encode_file(members))
