"""Cluster commands: CONSISTENCY, VCLOCK GET|SET|DEL and CLUSTER INFO|MYID|NODES|RING|KEYNODES.

None of these exists in Redis; docs/commands.md ("Cluster commands") gives their syntax and
reply shapes. Each works on a standalone node too, which answers as a cluster of one node:

- CONSISTENCY sets the connection's read and write levels. In a cluster the connection's
  ``client.node`` becomes a ``cluster_node.Session`` with those levels (every later command of
  the connection coordinates with them); on a standalone node it becomes a ``LocalSession``
  that only remembers them, because the one replica satisfies every level. ``CONSISTENCY
  DEFAULT`` and the RESET command put back the server's node (its defaults).
- VCLOCK exposes a key's siblings with one causal context (cluster/vclock_context.py,
  docs/formats/vclock-context.md); VCLOCK SET/DEL with that context supersede exactly the
  versions it names.
- CLUSTER's replies use Redis's CLUSTER INFO / CLUSTER NODES text shapes where a client may
  parse them (redis-py's ``cluster_info()`` and ``cluster_nodes()``), with respkv's fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from cluster import consistency, vclock_context
from cluster import keys as keyspace
from cluster import tokens as tokens_file
from cluster.consistency import Consistency, ConsistencyError
from cluster.errors import ClusterError
from cluster.members import Member
from cluster.peer_link import LinkState
from cluster.preflist import format_replication
from cluster.version import Siblings, Version, rank
from engine.fs import OSFileSystem
from respkv import errors
from respkv.commands.args import INT64_MAX, parse_int
from respkv.commands.introspection import arg, help_reply, token_arg
from respkv.commands.table import command, container, subcommand
from respkv.errors import cluster_error_message
from respkv.replies import OK, CommandError, Map, Verbatim

if TYPE_CHECKING:
    from cluster.cluster_node import ClusterNode
    from cluster.node import Node
    from respkv.client import Client


class LocalSession:
    """A standalone node seen by one connection that ran CONSISTENCY: the levels are only
    remembered (the one replica satisfies every level); everything else is the node's.

    ``None`` for a level means "the server default", read from the config when shown.
    """

    local_only = True  # the hot paths (GET, SET) keep their synchronous fast path

    def __init__(self, core: Node, read: Consistency | None, write: Consistency | None) -> None:
        self.core = core
        self.read_level = read
        self.write_level = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


def _clustered(client: Client) -> ClusterNode | None:
    """The server's ClusterNode, or None on a standalone node."""
    node: Any = client.server.node
    return None if node.local_only else cast("ClusterNode", node)


# CONSISTENCY ------------------------------------------------------------------------------

_KEEP = object()  # "this side is not changed by the command"


def _defaults(client: Client) -> tuple[Consistency, Consistency]:
    core = _clustered(client)
    if core is not None:
        return core.read_level, core.write_level
    config = client.server.config
    return consistency.parse(config.read_consistency), consistency.parse(config.write_consistency)


def _levels(client: Client) -> tuple[Consistency | None, Consistency | None]:
    """The connection's own levels; None where it uses the server default."""
    node: Any = client.node
    if node is client.server.node:
        return None, None
    return node.read_level, node.write_level


def _parse_level(word: bytes) -> Consistency | None:
    if word.upper() == b"DEFAULT":
        return None
    try:
        return consistency.parse(word)
    except ConsistencyError as exc:
        raise CommandError(f"ERR {exc}") from None


def _set_levels(client: Client, read: Consistency | None, write: Consistency | None) -> None:
    server_node: Any = client.server.node
    if read is None and write is None:
        client.node = server_node
        return
    core = _clustered(client)
    if core is not None:
        # Session resolves None to today's default: a level left at the default is frozen at
        # the value it has now (docs/commands.md says so).
        client.node = cast("Node", core.with_consistency(read, write))
    else:
        client.node = cast("Node", LocalSession(server_node, read, write))


@command(
    "consistency", -1, "fast", group="cluster",
    summary="Show or set the read and write consistency levels of the connection",
    since="respkv 0.1", acl="@fast @connection",
    arguments=[
        arg("setting", "oneof", flags="optional", args=[
            arg("level", "string", summary="ONE TWO THREE QUORUM ALL LOCAL_QUORUM EACH_QUORUM "
                "or a count: both levels"),
            token_arg("DEFAULT"),
            token_arg("RESET"),
            arg("read", "string", token="R", flags="optional"),
            arg("write", "string", token="W", flags="optional"),
        ]),
    ],
)
async def consistency_(client: Client, argv: list[bytes]) -> object:
    if len(argv) == 1:
        read, write = _levels(client)
        default_read, default_write = _defaults(client)
        return Map({
            b"read": consistency.to_text(read or default_read).encode(),
            b"write": consistency.to_text(write or default_write).encode(),
            b"read-default": consistency.to_text(default_read).encode(),
            b"write-default": consistency.to_text(default_write).encode(),
        })
    if len(argv) == 2:
        if argv[1].upper() in (b"DEFAULT", b"RESET"):
            _set_levels(client, None, None)
            return OK
        level = _parse_level(argv[1])
        _set_levels(client, level, level)
        return OK
    new_read: object = _KEEP
    new_write: object = _KEEP
    index = 1
    while index < len(argv):
        option = argv[index].upper()
        if index + 1 >= len(argv):
            raise CommandError(errors.SYNTAX)
        if option in (b"R", b"READ") and new_read is _KEEP:
            new_read = _parse_level(argv[index + 1])
        elif option in (b"W", b"WRITE") and new_write is _KEEP:
            new_write = _parse_level(argv[index + 1])
        else:
            raise CommandError(errors.SYNTAX)
        index += 2
    read, write = _levels(client)
    _set_levels(client, cast("Consistency | None", read if new_read is _KEEP else new_read),
                cast("Consistency | None", write if new_write is _KEEP else new_write))
    return OK


# VCLOCK -----------------------------------------------------------------------------------

VCLOCK = container(
    "vclock", group="cluster", summary="A container for vector-clock (sibling) commands",
    since="respkv 0.1", acl="@slow",
)

_VCLOCK_HELP = (
    "VCLOCK <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <key>",
    "    Every version (sibling) of <key> with the causal context that names them all.",
    "SET <key> <value> CONTEXT <context> [EX <seconds>|PX <milliseconds>|EXAT <unix-time-",
    "seconds>|PXAT <unix-time-milliseconds>]",
    "    Write <value> superseding exactly the versions <context> names.",
    "DEL <key> CONTEXT <context>",
    "    Delete (a tombstone) superseding exactly the versions <context> names.",
    "HELP",
    "    Prints this help.",
)


def _sibling(version: Version, now_ms: int) -> Map:
    _, timestamp_ms, expire_at_ms, writer, value = version
    expired = value is not None and 0 < expire_at_ms <= now_ms
    return Map({
        b"value": None if expired else value,
        b"timestamp-ms": timestamp_ms,
        b"expire-at-ms": expire_at_ms,
        b"writer": writer.hex().encode(),
    })


async def _read_siblings(client: Client, key: bytes) -> Siblings:
    node: Any = client.node
    if node.local_only:
        return cast(Siblings, node.replica.read(keyspace.engine_key(client.db, key)))
    return cast(Siblings, await node.get_siblings(client.db, key))


@subcommand(
    VCLOCK, "get", 3, "readonly", (2, 2, 1),
    summary="Every version of a key with an opaque causal context", since="respkv 0.1",
    complexity="O(S) where S is the number of siblings", acl="@read @slow",
    arguments=[arg("key", "key", key_spec_index=0)],
)
async def vclock_get(client: Client, argv: list[bytes]) -> object:
    key = argv[2]
    siblings = await _read_siblings(client, key)
    now_ms = client.node.clock.wall_ms()
    ordered = sorted(siblings, key=rank, reverse=True)  # the winner (what GET sees) first
    return Map({
        b"context": vclock_context.encode(siblings, client.db, key),
        b"siblings": [_sibling(v, now_ms) for v in ordered],
    })


_EXPIRE_UNITS = {b"EX": (1000, True), b"PX": (1, True), b"EXAT": (1000, False),
                 b"PXAT": (1, False)}


def _expire_at_ms(client: Client, option: bytes, value: bytes, name: str) -> int:
    """Redis's checks for SET's EX/PX/EXAT/PXAT: positive, no 64-bit overflow."""
    scale, relative = _EXPIRE_UNITS[option]
    when = parse_int(value)
    if when <= 0 or when > INT64_MAX // scale:
        raise CommandError(errors.INVALID_EXPIRE.format(name))
    when *= scale
    if relative:
        when += client.node.clock.wall_ms()
        if when > INT64_MAX:
            raise CommandError(errors.INVALID_EXPIRE.format(name))
    return when


def _context(client: Client, key: bytes, text: bytes) -> Siblings:
    try:
        return vclock_context.decode(text, client.db, key)
    except vclock_context.ContextError as exc:
        raise CommandError(f"ERR {exc}") from None


async def _write(client: Client, key: bytes, value: bytes | None, expire_at_ms: int,
                 seen: Siblings) -> None:
    """Write a version superseding exactly ``seen`` (None: a tombstone), at the
    connection's write level."""
    node: Any = client.node
    db = client.db
    if node.local_only:
        await node.put_siblings_context(db, key, value, expire_at_ms, seen)
        return
    await node.put(db, key, value, expire_at_ms, context=seen)


@subcommand(
    VCLOCK, "set", -6, "write denyoom", (2, 2, 1),
    summary="Write a value superseding the versions a causal context names",
    since="respkv 0.1", acl="@write @slow",
    arguments=[
        arg("key", "key", key_spec_index=0),
        arg("value", "string"),
        arg("context", "string", token="CONTEXT"),
        arg("expiration", "oneof", flags="optional", args=[
            arg("seconds", "integer", token="EX"),
            arg("milliseconds", "integer", token="PX"),
            arg("unix-time-seconds", "unix-time", token="EXAT"),
            arg("unix-time-milliseconds", "unix-time", token="PXAT"),
        ]),
    ],
)
async def vclock_set(client: Client, argv: list[bytes]) -> object:
    key, value = argv[2], argv[3]
    context: bytes | None = None
    expire: tuple[bytes, bytes] | None = None
    index = 4
    while index < len(argv):
        option = argv[index].upper()
        if index + 1 >= len(argv):
            raise CommandError(errors.SYNTAX)
        if option == b"CONTEXT" and context is None:
            context = argv[index + 1]
        elif option in _EXPIRE_UNITS and expire is None:
            expire = (option, argv[index + 1])
        else:
            raise CommandError(errors.SYNTAX)
        index += 2
    if context is None:
        raise CommandError("ERR VCLOCK SET needs CONTEXT <context> (from VCLOCK GET)")
    expire_at_ms = _expire_at_ms(client, *expire, "vclock|set") if expire else 0
    seen = _context(client, key, context)
    await _write(client, key, value, expire_at_ms, seen)
    return OK


@subcommand(
    VCLOCK, "del", 5, "write", (2, 2, 1),
    summary="Delete a key (a tombstone) superseding the versions a causal context names",
    since="respkv 0.1", acl="@write @slow",
    arguments=[arg("key", "key", key_spec_index=0), arg("context", "string", token="CONTEXT")],
)
async def vclock_del(client: Client, argv: list[bytes]) -> object:
    key = argv[2]
    if argv[3].upper() != b"CONTEXT":
        raise CommandError(errors.SYNTAX)
    seen = _context(client, key, argv[4])
    await _write(client, key, None, 0, seen)
    return OK


@subcommand(
    VCLOCK, "help", 2, "loading stale",
    summary="Show helpful text about the different subcommands", since="respkv 0.1",
    acl="@slow",
)
async def vclock_help(client: Client, argv: list[bytes]) -> object:
    return help_reply(_VCLOCK_HELP)


# CLUSTER ----------------------------------------------------------------------------------

CLUSTER = container(
    "cluster", group="cluster", summary="A container for cluster commands", since="3.0.0",
    acl="@slow",
)

_CLUSTER_HELP = (
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    Return information about the cluster (field:value lines).",
    "MYID",
    "    Return the node id of this node.",
    "NODES",
    "    Return one line per member: id, address@peer-port, flags, link state, datacenter,",
    "    rack, tokens, ownership and the hints this node holds for it.",
    "RING [TOKENS [FROM <token>] [COUNT <count>]]",
    "    Per node: token count and share of the ring; with TOKENS, the vnodes in ring order.",
    "KEYNODES <key>",
    "    Return the key's ring token and its replicas in preference order.",
    "MEET <ip> <port>",
    "    Gossip with the node whose peer port is <ip>:<port>: its cluster and this one merge.",
    "FORGET <node-id>",
    "    Remove a dead node from the ring; the remaining replicas hold its data.",
    "DECOMMISSION",
    "    Stream this node's ranges to their new owners, leave the ring, then stop.",
    "REPAIR [ALL | TOKEN <token> | KEY <key>]",
    "    Compare this node's ranges (or the one holding the token or key) with their other",
    "    replicas by Merkle trees and exchange what differs; progress in INFO respkv.",
    "HELP",
    "    Prints this help.",
)


class _View:
    """What CLUSTER's replies show, for a cluster or for a standalone node (one member)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.core = _clustered(client)
        node: Any = client.server.node
        self.node_id: str = node.node_id
        self._up: set[str] | None = None

    def members(self) -> list[Member]:
        """Every known member, this node first, then by node id."""
        if self.core is not None:
            membership = self.core.membership
            return [membership.me, *membership.others()]
        return [self._standalone_member()]

    def _standalone_member(self) -> Member:
        config = self.client.server.config
        node: Any = self.client.server.node
        host, _, port = self.client.laddr.rpartition(":")
        if not host:
            binds = [b.lstrip("-") for b in config.bind if b.lstrip("-") not in ("*", "::*")]
            host, port = (binds[0] if binds else "127.0.0.1"), str(config.port)
        stored = tokens_file.read(OSFileSystem(), node.directory)
        tokens = stored[1] if stored is not None and stored[0] == self.node_id else ()
        return Member(self.node_id, host, 0, host, int(port or 0), config.datacenter,
                      config.rack, tokens, 0)

    def ownership(self) -> dict[str, float]:
        """Each node's primary share of the ring, in percent (100 for a standalone node)."""
        if self.core is None:
            return {self.node_id: 100.0}
        return {node_id: share * 100 for node_id, share
                in self.core.membership.ring().ownership().items()}

    def up(self, node_id: str) -> bool:
        """Whether the coordinator sends to ``node_id`` (the cluster node's own view)."""
        if self.core is None or node_id == self.node_id:
            return True
        if self._up is None:
            self._up = self.core.up_nodes()
        return node_id in self._up

    def hints_field(self, node_id: str) -> str:
        """CLUSTER NODES' last field: `` hints=<n>``, the hints this node holds for
        ``node_id`` (writes it missed while down; 0 for this node itself). Empty on a
        standalone node, whose line stays what it was before hints existed."""
        if self.core is None:
            return ""
        return f" hints={self.core.hints.pending(node_id).count}"

    def connected(self, node_id: str) -> bool:
        if self.core is None or node_id == self.node_id:
            return True
        return self.core.transport.link_state(node_id) is LinkState.READY

    def replication(self) -> str:
        """The replication factor without ':' (CLUSTER INFO values must not hold one)."""
        if self.core is None:
            return "1"
        return format_replication(self.core.cluster_options.replication).replace(
            ":", "=").replace(" ", ",")

    def vnodes(self) -> list[tuple[int, str]]:
        """(token, owner) for every vnode, in ring order."""
        if self.core is None:
            me = self._standalone_member()
            return [(t, self.node_id) for t in me.tokens]
        ring = self.core.membership.ring()
        return list(zip(ring.tokens, ring.owners, strict=True))

    def replicas(self, key: bytes) -> tuple[str, ...]:
        if self.core is None:
            return (self.node_id,)
        return self.core.coordinator.placement.primaries(keyspace.token(key))


def _address(member: Member) -> bytes:
    return f"{member.client_host}:{member.client_port}".encode()


@subcommand(
    CLUSTER, "info", 2, "stale",
    summary="Provides info about the cluster node state", since="3.0.0", acl="@slow",
)
async def cluster_info(client: Client, argv: list[bytes]) -> object:
    view = _View(client)
    members = view.members()
    core = view.core
    read, write = _defaults(client)
    shares = view.ownership()
    owning = [share for share in shares.values() if share > 0]
    missing = len(core.membership.missing_addresses()) if core is not None else 0
    fields = [
        ("cluster_state", "ok" if core is None or core.ready else "fail"),
        ("cluster_mode", "standalone" if core is None else "cluster"),
        ("cluster_known_nodes", len(members)),
        ("cluster_size", len(owning)),
        ("cluster_reachable_nodes", sum(view.up(m.node_id) for m in members)),
        ("cluster_missing_peers", missing),
        ("cluster_my_id", view.node_id),
        ("cluster_name", client.server.config.cluster_name if core is not None else "-"),
        ("cluster_datacenter", members[0].datacenter),
        ("cluster_rack", members[0].rack),
        ("cluster_replication_factor", view.replication()),
        ("cluster_read_consistency", consistency.to_text(read)),
        ("cluster_write_consistency", consistency.to_text(write)),
        ("cluster_my_tokens", len(members[0].tokens)),
        ("cluster_ring_tokens", len(view.vnodes())),
        ("cluster_ring_balance",
         f"{max(owning) / min(owning):.3f}" if owning and min(owning) > 0 else "inf"),
    ]
    if core is not None:
        stats = core.transport.stats
        fields += [("cluster_peer_requests_sent", stats.requests),
                   ("cluster_peer_requests_served", stats.served),
                   ("cluster_peer_timeouts", stats.timeouts)]
    text = "".join(f"{name}:{value}\r\n" for name, value in fields)
    return Verbatim(text.encode("utf-8", "surrogateescape"))


@subcommand(
    CLUSTER, "myid", 2, "stale", summary="Return the node id", since="3.0.0",
    acl="@slow",
)
async def cluster_myid(client: Client, argv: list[bytes]) -> object:
    node: Any = client.server.node
    return str(node.node_id).encode()


@subcommand(
    CLUSTER, "nodes", 2, "stale",
    summary="Get the cluster members: one line each (Redis's shape, respkv's fields)",
    since="3.0.0", complexity="O(N) where N is the total number of Cluster nodes",
    acl="@slow",
)
async def cluster_nodes(client: Client, argv: list[bytes]) -> object:
    view = _View(client)
    shares = view.ownership()
    lines = []
    for member in view.members():
        node_id = member.node_id
        flags = ["myself"] if node_id == view.node_id else []
        if not view.up(node_id):
            flags.append("fail?")
        link = "connected" if view.connected(node_id) else "disconnected"
        lines.append(
            f"{node_id} {member.client_host}:{member.client_port}@{member.peer_port} "
            f"{','.join(flags) or 'noflags'} - 0 0 {member.generation} {link} "
            f"dc={member.datacenter} rack={member.rack} tokens={len(member.tokens)} "
            f"ownership={shares.get(node_id, 0.0):.2f}%{view.hints_field(node_id)}\n")
    return Verbatim("".join(lines).encode("utf-8", "surrogateescape"))


@subcommand(
    CLUSTER, "ring", -2, "stale",
    summary="The ring: per node token count and ownership, or the vnodes in ring order",
    since="respkv 0.1", complexity="O(T) where T is the number of tokens in the ring",
    acl="@slow",
    arguments=[arg("tokens", "block", flags="optional", token="TOKENS", args=[
        arg("token", "string", token="FROM", flags="optional"),
        arg("count", "integer", token="COUNT", flags="optional"),
    ])],
)
async def cluster_ring(client: Client, argv: list[bytes]) -> object:
    view = _View(client)
    if len(argv) == 2:
        shares = view.ownership()
        return [Map({
            b"id": member.node_id.encode(),
            b"address": _address(member),
            b"datacenter": member.datacenter.encode(),
            b"rack": member.rack.encode(),
            b"tokens": len(member.tokens),
            b"ownership": round(shares.get(member.node_id, 0.0), 2),
        }) for member in view.members()]
    if argv[2].upper() != b"TOKENS":
        raise CommandError(errors.SYNTAX)
    start, count = 0, -1
    index = 3
    while index < len(argv):
        option = argv[index].upper()
        if index + 1 >= len(argv):
            raise CommandError(errors.SYNTAX)
        value = argv[index + 1]
        if option == b"FROM":
            if not value.isdigit() or int(value) > keyspace.TOKEN_MAX:
                raise CommandError("ERR token must be an integer 0..18446744073709551615")
            start = int(value)
        elif option == b"COUNT":
            count = parse_int(value)
            if count < 1:
                raise CommandError("ERR COUNT must be positive")
        else:
            raise CommandError(errors.SYNTAX)
        index += 2
    chosen = [(token, owner) for token, owner in view.vnodes() if token >= start]
    if count > 0:
        chosen = chosen[:count]
    return [[str(token).encode(), owner.encode()] for token, owner in chosen]


@subcommand(
    CLUSTER, "keynodes", 3, "stale", (2, 2, 1),
    summary="The ring token of a key and its replicas in preference order",
    since="respkv 0.1", acl="@slow", arguments=[arg("key", "key", key_spec_index=0)],
)
async def cluster_keynodes(client: Client, argv: list[bytes]) -> object:
    view = _View(client)
    key = argv[2]
    by_id = {member.node_id: member for member in view.members()}
    replicas = []
    for node_id in view.replicas(key):
        member = by_id[node_id]
        replicas.append(Map({
            b"id": node_id.encode(),
            b"address": _address(member),
            b"datacenter": member.datacenter.encode(),
            b"rack": member.rack.encode(),
            b"state": b"up" if view.up(node_id) else b"down",
        }))
    return Map({b"token": str(keyspace.token(key)).encode(), b"replicas": replicas})


def _cluster_core(client: Client, what: str) -> ClusterNode:
    node: Any = client.server.node
    if node.local_only:
        raise CommandError(f"ERR {what} needs a node started as part of a cluster "
                           "(cluster-peers or seeds): this is a standalone server")
    return cast("ClusterNode", node)


def _cluster_call(call: Callable[[], None]) -> object:
    try:
        call()
    except ClusterError as exc:
        raise CommandError(f"ERR {exc}") from None
    return OK


@subcommand(
    CLUSTER, "meet", -4, "admin stale no_async_loading",
    summary="Force a node cluster to handshake with another node", since="3.0.0",
    acl="@admin @slow @dangerous",
    arguments=[arg("ip", "string"), arg("port", "integer"),
               arg("cluster-bus-port", "integer", flags="optional", since="4.0.0")],
)
async def cluster_meet(client: Client, argv: list[bytes]) -> object:
    if len(argv) > 5:
        raise CommandError(errors.SYNTAX)
    core = _cluster_core(client, "CLUSTER MEET")
    host = argv[2].decode("utf-8", "replace")
    # As Redis: the second port, when given, is the bus (peer) port; else the one given is.
    port = parse_int(argv[4] if len(argv) == 5 else argv[3])
    if not 0 < port <= 65535:
        shown = argv[3].decode("utf-8", "replace")
        raise CommandError(f"ERR Invalid base port specified: {shown}")
    return _cluster_call(lambda: core.meet(host, port))


@subcommand(
    CLUSTER, "forget", 3, "admin stale no_async_loading",
    summary="Remove a node from the nodes table", since="3.0.0",
    acl="@admin @slow @dangerous", arguments=[arg("node-id", "string")],
)
async def cluster_forget(client: Client, argv: list[bytes]) -> object:
    core = _cluster_core(client, "CLUSTER FORGET")
    node_id = argv[2].decode("utf-8", "replace")
    if node_id == core.node_id:
        raise CommandError("ERR I tried hard but I can't forget myself...")
    return _cluster_call(lambda: core.forget(node_id))


@subcommand(
    CLUSTER, "decommission", 2, "admin stale no_async_loading",
    summary="Stream this node's ranges to their new owners, leave the ring, then stop",
    since="respkv 0.1", acl="@admin @slow @dangerous",
)
async def cluster_decommission(client: Client, argv: list[bytes]) -> object:
    core = _cluster_core(client, "CLUSTER DECOMMISSION")
    return _cluster_call(core.decommission)


@subcommand(
    CLUSTER, "repair", -2, "admin stale no_async_loading",
    summary="Repair this node's ranges against their other replicas (Merkle-tree "
            "anti-entropy)", since="respkv 0.1", acl="@admin @slow",
    arguments=[arg("all", "pure-token", token="ALL", flags="optional"),
               arg("token", "integer", token="TOKEN", flags="optional"),
               arg("key", "key", token="KEY", flags="optional")],
)
async def cluster_repair(client: Client, argv: list[bytes]) -> object:
    core = _cluster_core(client, "CLUSTER REPAIR")
    token: int | None = None
    if len(argv) == 3 and argv[2].lower() == b"all":
        pass
    elif len(argv) == 4 and argv[2].lower() == b"token":
        text = argv[3]
        if not (text.isascii() and text.isdigit()) or int(text) > keyspace.TOKEN_MAX:
            raise CommandError("ERR token must be an integer 0..18446744073709551615")
        token = int(text)
    elif len(argv) == 4 and argv[2].lower() == b"key":
        token = keyspace.token(argv[3])
    elif len(argv) != 2:
        raise CommandError(errors.SYNTAX)
    try:
        return core.repair(token)
    except ClusterError as exc:
        raise CommandError(cluster_error_message(exc)) from None


@subcommand(
    CLUSTER, "help", 2, "loading stale",
    summary="Show helpful text about the different subcommands", since="5.0.0",
    acl="@slow",
)
async def cluster_help(client: Client, argv: list[bytes]) -> object:
    return help_reply(_CLUSTER_HELP)

