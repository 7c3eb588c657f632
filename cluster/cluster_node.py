"""A node of a cluster of more than one: the frontend's ``Node`` API over quorum requests.

Theory of operation. ``ClusterNode`` owns this node's storage (``Node``: engine, replica,
expiry), its peer transport (``PeerTransport``: listens for peers, one link per peer), the
membership view (``Membership``) and the ``Coordinator``. The Redis frontend calls the same
methods it calls on a ``Node`` (get, put, delete, write_many, scan, random_key, dbsize,
flushdb, flushall ...); here they coordinate: a read asks R replicas of the key's preference
list, a write waits for W acks, and the rest finishes in the background (coordinator.py).
Peers reach this node's replica through ``_serve``.

Rules:
1. No request is coordinated before the membership is complete (every configured peer
   address known as some node's, now or in a previous run: ``members.Membership``) and this
   node is an owner (NORMAL or LEAVING): data placed on a partial ring would be where later
   reads do not look, and a joining node serves nothing before its ranges are streamed.
   Until then requests fail with ``ClusterDown`` (``CLUSTERDOWN ...``).
2. A replica acknowledges a peer's WRITE (and FLUSH) only after its commit log reached the
   OS, as a client's write is acknowledged (group commit): an ack is never weaker than the
   appendfsync policy says.
3. Every level comes from the caller (a connection's ``CONSISTENCY``) or the defaults; a
   request that cannot be satisfied raises ``NoQuorumError`` whose text is the client's
   error reply; nothing reports success on fewer acks than required.
4. Multi-key operations (write_many, flush, scan, dbsize) are one request per key or per node,
   run in parallel; they are not atomic across keys (docs/commands.md says where this
   differs from Redis). SCAN asks every node from the cursor's token on and merges the
   answers by vector clock, so a key is returned if any reachable replica holds a live
   version that no other reachable replica's version supersedes.
5. Membership is gossip (``GossipService``): every ``exchange_interval_s`` a round with a
   random live peer (now and then a seed or a down peer); phi-accrual failure detection on
   the heartbeats decides who is up, and a lost link makes a peer down at once. Every change
   of the view rebuilds the placement (owners), the pending placement (joining, leaving)
   and is saved in ``cluster.state``.
6. Life cycle (issue 5): a new node starts JOINING with fresh tokens; once its membership is
   complete it becomes NORMAL at once when no other node owns anything (the first nodes of a
   cluster), else after streaming the ranges it will own from their current replicas, while
   writes already reach it as a pending replica (coordinator Rule 7). A decommission makes
   it LEAVING, streams its ranges to their new owners, then LEFT.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from cluster import alive as alive_file
from cluster import hints as hints_module
from cluster import keys as keyspace
from cluster import members as members_file
from cluster import tokens as tokens_file
from cluster.anti_entropy import AntiEntropyServer
from cluster.anti_entropy_messages import AntiEntropyError, Fetch, Hashes, Keys, Summary
from cluster.clock import Clock
from cluster.consistency import Consistency, Level, NoQuorum, NoQuorumError, quorum
from cluster.coordinator import Coordinator, CoordinatorOptions, Deleted
from cluster.endpoint_state import OWNERS, AppField, FieldValue, Status
from cluster.errors import ClusterError
from cluster.failure_detector import DetectorOptions, FailureDetector
from cluster.get_core import Found
from cluster.gossip import Applied, Gossiper
from cluster.gossip_service import GossipService
from cluster.handoff import Handoff
from cluster.lifecycle import Lifecycle
from cluster.members import Member, Membership
from cluster.messages import (
    Count,
    CountReply,
    ErrorCode,
    Flush,
    FlushAck,
    GossipAck2,
    GossipSyn,
    Message,
    Read,
    Scan,
    ScanReply,
    Stream,
    Write,
)
from cluster.node import Entry, Node, NodeOptions
from cluster.peer_link import LinkState
from cluster.peer_transport import PeerTransport
from cluster.preflist import Placement, Replication
from cluster.put_core import PutOk
from cluster.repair import Repairer
from cluster.replica_service import ReplicaService
from cluster.sibling_codec import decode, encode
from cluster.stream_source import serve_stream
from cluster.transport import RemoteError, TransportConfig
from cluster.tree_set import TreeSet
from cluster.version import EXPIRE_AT_MS, VALUE, Siblings, merge, winner
from engine.fs import OSFileSystem

log = logging.getLogger(__name__)
T = TypeVar("T")

AE_REQUESTS = (Summary, Hashes, Keys, Fetch)
LOAD_EVERY_S = 10.0  # how often this node's disk use is published in gossip (LOAD)
_END = keyspace.TOKEN_MAX + 1  # "the scan reached the end of the ring", as a sort key
_DOWN_STATES = (LinkState.BACKOFF, LinkState.CLOSED)


class ClusterDown(ClusterError):
    """The node cannot coordinate requests yet (Rule 1); the text is the client's error."""


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    peer_host: str  # where peers reach this node (cluster-announce / bind)
    peer_port: int  # cluster-port
    client_host: str  # where clients reach this node (shown in CLUSTER NODES)
    client_port: int
    peers: tuple[tuple[str, int], ...]  # cluster-peers: the other nodes' peer addresses
    secret: bytes  # cluster-secret
    cluster_name: str = "respkv"
    datacenter: str = "dc1"
    rack: str = "rack1"
    num_tokens: int = tokens_file.NUM_TOKENS_DEFAULT
    replication: Replication = field(default_factory=lambda: Replication.simple(3))
    read_level: Consistency = Level.QUORUM
    write_level: Consistency = Level.QUORUM
    request_timeout_ms: int = 2000
    exchange_interval_s: float = 1.0
    listen_host: str = ""  # the address the peer listener binds ("" = peer_host)
    # Hinted handoff (issue 6): stand-ins for down replicas, and the bounds of hints.
    sloppy_quorum: bool = True
    max_hint_window_ms: int = 3 * 3600 * 1000  # no new hints for a node down longer
    hint_max_count: int = hints_module.MAX_COUNT_DEFAULT  # per target
    hint_max_bytes: int = hints_module.MAX_BYTES_DEFAULT  # per target
    hint_ttl_ms: int = 864_000_000  # the tombstone grace: older hints are dropped
    handoff_rate: int = 1000  # hints delivered per second per target
    # Membership (issue 5)
    phi_convict_threshold: float = 8.0
    stream_rate_bytes_per_s: int = 32 * 1024 * 1024  # join and decommission streaming
    # Anti-entropy (issue 6): a full pass of Merkle-tree repair every this many seconds
    # (0: only on CLUSTER REPAIR), and the time per gossip round given to building trees.
    # A plain write (no context) supersedes what a quorum read returns first (True), or, as
    # Riak does, what the coordinator's own replica holds (False: cheaper by a round trip;
    # concurrent versions other coordinators wrote become siblings, resolved by timestamp).
    read_before_write: bool = True
    # Reads (coordinator Rule 9): one in read_repair_every asks every replica; the others
    # ask just enough and the spares only after read_speculate_ms (0: a tenth of the timeout).
    read_repair_every: int = 10
    read_speculate_ms: int = 0
    anti_entropy_interval_s: float = 3600.0
    tree_build_budget_s: float = 0.05


class ClusterNode:
    """See the module docstring. Open with ``ClusterNode.open()`` inside the running loop."""

    local_only = False

    def __init__(self, node: Node, options: ClusterOptions, membership: Membership,
                 gossiper: Gossiper, clock: Clock, rng: random.Random) -> None:
        """Private: use ClusterNode.open()."""
        self.node = node
        self.cluster_options = options
        self.membership = membership
        self.gossiper = gossiper
        self.clock = clock
        self.read_level: Consistency = options.read_level
        self.write_level: Consistency = options.write_level
        self._rng = rng
        self._loop = asyncio.get_running_loop()
        self._fs = OSFileSystem()
        self.hints = hints_module.HintStore.open(
            node.replica.engine, clock.wall_ms, max_count=options.hint_max_count,
            max_bytes=options.hint_max_bytes, ttl_ms=options.hint_ttl_ms,
            report=lambda message: log.warning("%s", message))
        self.service = ReplicaService(node.replica, clock,
                                      sibling_limit=node.options.sibling_limit,
                                      prune=node.options.vclock_prune,
                                      on_change=node.notify_changed, hints=self.hints)
        self.transport = PeerTransport(
            TransportConfig(node.node_id, options.cluster_name, options.secret), self._serve,
            random.SystemRandom(), clock=clock)
        self.coordinator = Coordinator(
            Placement(membership.ring(), options.replication), self.service, self.transport,
            clock, node.actor, self._loop.create_future,
            CoordinatorOptions(request_timeout_ms=options.request_timeout_ms,
                               sloppy_quorum=options.sloppy_quorum,
                               read_before_write=options.read_before_write,
                               read_repair_every=options.read_repair_every,
                               read_speculate_ms=options.read_speculate_ms),
            up_nodes=self._up_nodes_this_turn, should_hint=self._should_hint)
        # The coordinator's view of up_nodes(), kept for the rest of one loop turn.
        self._up_memo: set[str] | None = None
        self._down_since: dict[str, int] = {}  # peer -> wall ms it was first seen down
        interval = options.exchange_interval_s
        # Cassandra's proportions at a 1 s interval; floors keep a fast test interval from
        # convicting peers over a scheduling hiccup of a loaded machine.
        self.detector = FailureDetector(clock, DetectorOptions(
            phi_convict_threshold=options.phi_convict_threshold,
            initial_interval_s=max(2 * interval, 0.5), interval_max_s=max(2 * interval, 0.5),
            mean_interval_min_s=max(interval / 4, 0.25)))
        self.gossip = GossipService(gossiper, self.detector, self.transport, clock, interval,
                                    self._on_gossip)
        self.gossip.on_tick = self._on_tick
        self.lifecycle = Lifecycle(self)
        self.trees = TreeSet(node.replica.engine.scan, node.options.databases)
        node.replica.on_store = self.trees.on_store
        node.replica.on_flush = self.trees.on_flush
        self.ae_server = AntiEntropyServer(self.trees, self.service)
        self.repairer = Repairer(
            self.ae_server, self.transport, node.node_id,
            ranges=lambda: list(self.trees.ranges),
            replicas=lambda rng: self.coordinator.placement.primaries(rng.right),
            up=self.up_nodes, commit=self._commit_quietly,
            timeout_s=options.request_timeout_ms / 1000)
        self._next_repair_s = clock.monotonic() + options.anti_entropy_interval_s
        self._alive_written_s = clock.monotonic()
        self._load_published_s = float("-inf")
        self._handoff = Handoff(
            self.hints, self.transport,
            per_tick=Handoff.per_tick_of(options.handoff_rate, options.exchange_interval_s),
            timeout_s=options.request_timeout_ms / 1000, reachable=self.is_reachable,
            commit=self._commit_handoff, report=lambda message: log.warning("%s", message),
            delivered=lambda target, done, sent: log.info(
                "handed off %d of %d hints to node %s", done, sent, target))
        # Rule 2: replies waiting for the next commit, one shared future per distinct reply.
        self._commit_waiters: dict[Message, asyncio.Future[Message]] = {}
        self._commit_scheduled = False
        self._closed = False
        self.peer_address: tuple[str, int] = (options.peer_host, options.peer_port)
        self.stats_counters = {"hints_not_kept_window": 0}
        self._view_changed()
        # Known members count as alive until their heartbeats say otherwise: a node that just
        # started must not route around peers that are up (a dead one's link fails fast).
        for member in self.membership.others():
            self.detector.heartbeat(member.node_id)

    @classmethod
    async def open(cls, directory: str, node_options: NodeOptions, options: ClusterOptions,
                   clock: Clock, reporter: Callable[[str], None] | None = None) -> ClusterNode:
        """Open the node's storage, tokens and known gossip states; listen for peers.

        Raises ClusterError if this node left the cluster (decommissioned or removed): its
        data directory must be emptied before it can join again."""
        rng = random.Random()
        fs = OSFileSystem()
        node = Node.open(directory, node_options, clock, reporter=reporter)
        try:
            known = members_file.read(fs, directory)
            mine = next((s for s in known if s.node_id == node.node_id), None)
            if mine is not None and mine.is_tombstone:
                raise ClusterError(
                    f"node {node.node_id} left the cluster ({mine.status.name.lower()}"  # type: ignore[union-attr]
                    "): empty its data directory to join again as a new node")
            refusal = alive_file.check(alive_file.read(fs, directory), clock.wall_ms(),
                                       node_options.tombstone_grace_ms,
                                       node.replica.holds_data())
            if refusal is not None:
                raise ClusterError(refusal)
            alive_file.write(fs, directory, clock.wall_ms())
            taken = {t for s in known if s.node_id != node.node_id for t in s.tokens}
            tokens, note = tokens_file.start(fs, directory, node_id=node.node_id,
                                             num_tokens=options.num_tokens,
                                             rng=random.Random(), taken=taken)
            if note and reporter is not None:
                reporter(f"node {node.node_id}: {note}")
            status = mine.status if mine is not None and mine.status in OWNERS else None
            generation = clock.wall_ms() // 1000
            if mine is not None:
                generation = max(generation, mine.generation + 1)
            me = Member(node.node_id, options.peer_host, options.peer_port,
                        options.client_host, options.client_port, options.datacenter,
                        options.rack, tokens, generation)
            app: dict[AppField, FieldValue] = {
                AppField.STATUS: status if status is not None else Status.JOINING,
                AppField.PEER_ADDRESS: (options.peer_host, options.peer_port),
                AppField.CLIENT_ADDRESS: (options.client_host, options.client_port),
                AppField.DATACENTER: options.datacenter, AppField.RACK: options.rack,
                AppField.TOKENS: tokens, AppField.LOAD: 0}
            others = [s for s in known if s.node_id != node.node_id]
            gossiper = Gossiper(node.node_id, generation, app, rng, seeds=options.peers,
                                known=others)
            cluster_node = cls(node, options, Membership(me, options.peers), gossiper, clock,
                               rng)
            try:
                await cluster_node.transport.listen(options.listen_host or options.peer_host,
                                                    options.peer_port)
            except BaseException:
                await cluster_node.transport.close()
                raise
            cluster_node._persist()
            return cluster_node
        except BaseException:
            await node.close()
            raise

    # The frontend API (as Node's) ---------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def actor(self) -> bytes:
        return self.node.actor

    @property
    def options(self) -> NodeOptions:
        return self.node.options

    @property
    def pending_log(self) -> bytearray:
        return self.node.pending_log

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        """Rule 1: the membership is complete and this node owns its tokens."""
        return (self.membership.complete
                and self.gossiper.me.status in (Status.NORMAL, Status.LEAVING))

    @property
    def status(self) -> Status:
        status = self.gossiper.me.status
        assert status is not None
        return status

    def with_consistency(self, read: Consistency | None, write: Consistency | None
                         ) -> Session:
        """A view with its own levels (None: this node's default), for one connection."""
        return Session(self, read or self.read_level, write or self.write_level)

    async def get(self, db: int, key: bytes, level: Consistency | None = None) -> Entry | None:
        siblings = await self.get_siblings(db, key, level)
        if not siblings:
            return None
        _, _, expire_at_ms, _, value = winner(siblings)
        if value is None or (expire_at_ms and expire_at_ms <= self.clock.wall_ms()):
            return None
        return Entry(value, expire_at_ms, siblings)

    async def get_siblings(self, db: int, key: bytes,
                           level: Consistency | None = None) -> Siblings:
        """Every version of ``key`` the replicas that answered hold (VCLOCK GET)."""
        self._check_ready()
        outcome = await self.coordinator.get(db, key, level or self.read_level)
        if isinstance(outcome, NoQuorum):
            raise outcome.error()
        assert isinstance(outcome, Found)
        return outcome.siblings

    async def get_many(self, db: int, keys: Sequence[bytes],
                       level: Consistency | None = None) -> list[Entry | None]:
        """``get`` of each key, all in parallel (Rule 4); a key named twice is read once."""
        unique = list(dict.fromkeys(keys))
        found = await self._each(unique, lambda key: self.get(db, key, level))
        by_key = dict(zip(unique, found, strict=True))
        return [by_key[key] for key in keys]

    async def delete_many(self, db: int, keys: Sequence[bytes],
                          level: Consistency | None = None) -> int:
        """``delete`` of each distinct key, in parallel; how many visible values it deleted."""
        unique = list(dict.fromkeys(keys))
        return sum(await self._each(unique, lambda key: self.delete(db, key, level)))

    async def _each(self, keys: list[bytes], call: Callable[[bytes], Awaitable[T]]) -> list[T]:
        """``call`` for every key concurrently; the first NOQUORUM (or other error) is raised
        once every call finished, so no request is left running behind the reply."""
        self._check_ready()
        outcomes = await asyncio.gather(*(call(key) for key in keys), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            first = errors[0]
            if isinstance(first, NoQuorumError) and len(keys) > 1:
                raise NoQuorumError(f"{first} ({len(errors)} of {len(keys)} keys failed; "
                                    "the others were done)") from None
            raise first
        return cast(list[T], outcomes)

    async def put(self, db: int, key: bytes, value: bytes | None, expire_at_ms: int = 0, *,
                  context: object | None = None, level: Consistency | None = None) -> None:
        """Write ``value`` (None: a tombstone, for VCLOCK DEL); ``context`` (an Entry's, or
        siblings from get_siblings) names what the write supersedes; without it the write
        supersedes what a read sees first."""
        self._check_ready()
        outcome = await self.coordinator.put(db, key, value, expire_at_ms,
                                             level or self.write_level,
                                             _as_context(context))
        if isinstance(outcome, NoQuorum):
            raise outcome.error()
        assert isinstance(outcome, PutOk)

    async def delete(self, db: int, key: bytes, level: Consistency | None = None) -> bool:
        self._check_ready()
        outcome = await self.coordinator.delete(db, key, level or self.write_level)
        if isinstance(outcome, NoQuorum):
            raise outcome.error()
        assert isinstance(outcome, Deleted)
        return outcome.existed

    async def write_many(self, db: int, ops: Sequence[tuple[bytes, bytes | None, int]],
                         level: Consistency | None = None) -> None:
        """Each op as its own write, all in parallel (Rule 4); the last op of a key wins."""
        self._check_ready()
        last = {key: (value, expire_at_ms) for key, value, expire_at_ms in ops}
        write_level = level or self.write_level
        futures: list[asyncio.Future[Any]] = []
        for key, (value, expire_at_ms) in last.items():
            if value is None:
                futures.append(self.coordinator.delete(db, key, write_level))
            else:
                futures.append(self.coordinator.put(db, key, value, expire_at_ms, write_level))
        failed = [o for o in await asyncio.gather(*futures) if isinstance(o, NoQuorum)]
        if failed:
            raise NoQuorumError(f"{failed[0].message} ({len(failed)} of {len(futures)} "
                                "writes failed; the others were applied)")

    async def scan(self, db: int, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """Live keys from ring token ``cursor`` on, from every node (Rule 4); (next, keys)."""
        self._check_ready()
        entries, stop = await self._scan_all(db, cursor, count)
        now_ms = self.clock.wall_ms()
        keys = [key for key, siblings in entries if _visible(siblings, now_ms)]
        return (0 if stop >= keyspace.TOKEN_MAX else stop + 1), keys

    async def random_key(self, db: int) -> bytes | None:
        """A live key found from a random token on (wrapping around once); None if none."""
        self._check_ready()
        start = self._rng.getrandbits(64)
        cursor = start
        wrapped = False
        while True:
            entries, stop = await self._scan_all(db, cursor, 16)
            now_ms = self.clock.wall_ms()
            for key, siblings in entries:
                if wrapped and keyspace.token(key) >= start:
                    return None
                if _visible(siblings, now_ms):
                    return key
            if stop >= keyspace.TOKEN_MAX:
                if wrapped or start == 0:
                    return None
                wrapped, cursor = True, 0
            else:
                cursor = stop + 1
                if wrapped and cursor >= start:
                    return None

    async def dbsize(self, db: int) -> int:
        """Keys of ``db`` in the cluster: the nodes' stored counts over the replication
        factor (exact while every replica holds every key it should; docs/commands.md)."""
        self._check_ready()
        replies = await self._all_nodes(Count(db), CountReply(self.node.replica.keys[db]))
        counts = [r.keys for r in replies.values() if isinstance(r, CountReply)]
        # As SCAN: an estimate from fewer nodes than a quorum write reaches would be wrong.
        if len(replies) - len(counts) > self._scan_tolerance():
            raise NoQuorum(len(counts), len(replies) - self._scan_tolerance()).error()
        nodes = len(self.membership.members)
        copies = min(self.cluster_options.replication.total, nodes)
        return round(sum(counts) * nodes / max(1, len(counts)) / copies)

    async def flushdb(self, db: int) -> None:
        await self._flush(db)

    async def flushall(self) -> None:
        await self._flush(None)

    def keyspace(self) -> list[tuple[int, int, int]]:
        return self.node.keyspace()

    def memory_usage(self, db: int, key: bytes) -> int | None:
        return self.node.memory_usage(db, key)

    def stats(self) -> dict[str, int]:
        out = self.node.stats()
        out.update({f"coordinator_{k}": v for k, v in self.coordinator.stats.items()})
        out.update({f"replica_{k}": v for k, v in self.service.stats.items()})
        transport = self.transport.stats
        for name in ("requests", "served", "timeouts", "unavailable", "connects",
                     "connect_failures"):
            out[f"peer_{name}"] = getattr(transport, name)
        out.update(self.stats_counters)
        hint_stats = self.hints.stats
        out.update({"hints_stored": hint_stats.stored, "hints_dropped": hint_stats.dropped,
                    "hints_delivered": hint_stats.delivered, "hints_expired": hint_stats.expired,
                    "hints_pending": sum(p.count for p in hint_stats.per_target.values())})
        out.update({k: v for k, v in self.lifecycle.info().items() if isinstance(v, int)})
        out.update(self.gossip.stats)
        out.update(self.trees.info())
        out.update({k: v for k, v in self.repairer.info().items() if isinstance(v, int)})
        return out

    def up_nodes(self) -> set[str]:
        """Members the coordinator may send to: this node, and peers the failure detector
        holds available whose link is not in back-off (Rule 5)."""
        return self.gossip.live()

    def _up_nodes_this_turn(self) -> set[str]:
        """``up_nodes()`` for the coordinator, computed once per loop turn: every request of
        a turn sees the same view (as if they had come together), and a turn of many
        requests pays for the phi and link checks once. A new turn sees any change.
        REQUIRES: the caller does not mutate the set."""
        memo = self._up_memo
        if memo is None:
            memo = self._up_memo = self.up_nodes()
            self._loop.call_soon(self._forget_up_memo)
        return memo

    def _forget_up_memo(self) -> None:
        self._up_memo = None

    # Pass-through of the storage's plumbing
    def add_listener(self, callback: Callable[[int, bytes | None], None]) -> None:
        self.node.add_listener(callback)

    def remove_listener(self, callback: Callable[[int, bytes | None], None]) -> None:
        self.node.remove_listener(callback)

    @property
    def has_uncommitted(self) -> bool:
        return self.node.has_uncommitted

    def commit(self) -> None:
        self.node.commit()

    def sync(self) -> None:
        self.node.sync()

    def set_fsync(self, policy: str) -> None:
        self.node.set_fsync(policy)

    def tune_engine(self, **limits: int | None) -> None:
        self.node.tune_engine(**limits)

    def run_expire_cycle(self) -> bool:
        return self.node.run_expire_cycle()

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.node.start()
        self.gossip.start()

    async def close(self) -> None:
        """Stop exchanging, close the peer links and the storage. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.gossip.stop()
        self.lifecycle.stop()
        self.repairer.stop()
        await self.transport.close()  # fails every delivery in flight: hints stay stored
        in_flight = [*self._handoff.in_flight(), *self.lifecycle.in_flight()]
        if in_flight:  # their done-callbacks (handoff.py) run before gather's own
            await asyncio.gather(*in_flight, return_exceptions=True)
        self._handoff.close()
        # Closing the transport failed every request in flight; let the FSMs take those
        # answers (and apply a last local read repair) while the storage is still open.
        for _ in range(8):
            if not self.coordinator.active:
                break
            await asyncio.sleep(0)
        for fsm in list(self.coordinator.active):  # a local-only FSM waiting for nothing
            log.info("stopping with an unfinished request: %r", fsm)
        for future in self._commit_waiters.values():
            if not future.done():
                future.set_exception(ClusterError("node is stopping"))
        self._write_alive()
        await self.node.close()

    # Membership (Rule 5) --------------------------------------------------------------------

    def _on_tick(self) -> None:
        """After each gossip round: note who is down, hand hints off, advance the life
        cycle, build Merkle trees for a bounded time, start a repair pass when one is due."""
        self._track_down()
        self._handoff.tick()
        self.lifecycle.step()
        now = self.clock.monotonic()
        if now - self._alive_written_s >= alive_file.WRITE_EVERY_S:
            self._alive_written_s = now
            self._write_alive()
        if now - self._load_published_s >= LOAD_EVERY_S:  # gossip's LOAD field
            self._load_published_s = now
            disk = self.node.stats().get("engine_disk_bytes", 0)
            if disk != self.gossiper.me.get(AppField.LOAD):
                self.gossiper.set_fields({AppField.LOAD: disk})
        trees = self.trees
        deadline = self.clock.monotonic() + self.cluster_options.tree_build_budget_s
        while trees.pending_builds() and self.clock.monotonic() < deadline:
            trees.build_step()
        interval = self.cluster_options.anti_entropy_interval_s
        if interval > 0 and self.ready and self.clock.monotonic() >= self._next_repair_s:
            self._next_repair_s = self.clock.monotonic() + interval
            self.repairer.request()

    def repair(self, token: int | None = None) -> int:
        """CLUSTER REPAIR: queue every range this node replicates (or the one holding
        ``token``) for anti-entropy now; returns how many ranges were queued."""
        self._check_ready()
        if token is None:
            return self.repairer.request()
        rng = self.repairer.range_of(token)
        if rng is None:
            raise ClusterError(f"this node does not replicate token {token}")
        return self.repairer.request([rng])

    def _write_alive(self) -> None:
        try:
            alive_file.write(self._fs, self.node.directory, self.clock.wall_ms())
        except OSError as exc:
            log.warning("cannot save %s: %s", alive_file.ALIVE_NAME, exc)

    def _commit_quietly(self) -> None:
        if not self._closed:
            try:
                self.node.commit()
            except OSError as exc:  # retried by the next commit; the repair merges stay
                log.warning("commit after repair failed: %s", exc)

    def _on_gossip(self, applied: Applied) -> None:
        if applied.new or applied.restarted or applied.ring_changed:
            self._view_changed()
        elif applied.self_contested:
            self._persist()
        for node_id in applied.restarted:
            self.transport.retry_now(node_id)  # a restarted peer is usable at once

    def meet(self, host: str, port: int) -> None:
        """CLUSTER MEET: gossip with the node at host:port (a peer address) from now on, as
        with a seed: its cluster and ours become one view."""
        address = (host, port)
        gossiper = self.gossiper
        alone = self.membership.ring().node_ids() == [self.node_id]
        if alone and address != self.peer_address:
            # A node that owns the whole ring by itself and meets a cluster must join it
            # (stream the ranges it gains) rather than merge its own ring into theirs: the
            # keys it owns would otherwise have no data on it. One that holds data cannot.
            if self.node.replica.holds_data():
                raise ClusterError("this node holds data of its own cluster: meeting another "
                                   "cluster would hide it; meet from an empty node instead")
            # Until the met node's view arrives this node would see no other owner, take
            # "nothing to stream" for an answer and serve the ranges it gains empty.
            self.membership.expect(address)
            self.lifecycle.rejoin()
        gossiper.seeds = tuple(sorted({*gossiper.seeds, address} - {self.peer_address}))
        self.gossip.contact(address)


    def forget(self, node_id: str) -> None:
        """CLUSTER FORGET: remove a dead node from the ring (its tokens go to the others; the
        remaining replicas hold its data). Raises ClusterError if it is this node, unknown,
        or still up (a live node would reassert itself)."""
        if node_id == self.node_id:
            raise ClusterError("a node cannot forget itself (use CLUSTER DECOMMISSION)")
        state = self.gossiper.states.get(node_id)
        if state is None or state.is_tombstone:
            raise ClusterError(f"unknown node {node_id}")
        # Up as CLUSTER NODES and INFO show it (phi and the link): a killed node's link
        # fails at once, while phi alone would keep it 'up' for up to half a minute.
        if node_id in self.up_nodes():
            raise ClusterError(f"node {node_id} is up: decommission it instead, or stop it "
                               "before forgetting it")
        self.gossiper.forget(node_id)
        self.detector.remove(node_id)
        dropped = self.hints.drop_target(node_id)
        log.warning("node %s forgotten (removed from the ring; %d hints for it dropped)",
                    node_id, dropped)
        self._view_changed()

    def decommission(self) -> None:
        """CLUSTER DECOMMISSION: stream this node's ranges to their new owners, then leave
        the ring (``lifecycle.on_left`` is called once the others know)."""
        if self.status is not Status.NORMAL:
            raise ClusterError(f"this node is {self.lifecycle.describe()}, not a normal member")
        if len(self.membership.ring().node_ids()) < 2:
            raise ClusterError("the last node of a cluster cannot leave it")
        self.lifecycle.decommission()

    def publish(self, fields: Mapping[AppField, FieldValue]) -> None:
        """Change this node's own gossip state (status, tokens ...) and apply it here."""
        self.gossiper.set_fields(fields)
        self._view_changed()

    def _view_changed(self) -> None:
        was_ready = self.ready
        membership = self.membership
        membership.update(self.gossiper.states.values(), self.gossiper.view())
        for member in membership.others():
            self.transport.add_peer(member.node_id, member.peer_host, member.peer_port)
        replication = self.cluster_options.replication
        self.coordinator.placement = placement = Placement(membership.ring(), replication)
        self.trees.set_ranges(placement.replica_ranges(self.node.node_id))
        future = membership.future_ring()
        self.coordinator.future_placement = (None if future is None
                                             else Placement(future, replication))
        self._persist()
        if self.ready and not was_ready:
            log.warning("cluster ready: %d nodes, this node %s", len(membership.members),
                        self.status.name)

    def _track_down(self) -> None:
        """Note when each peer went down (max-hint-window)."""
        up = self.up_nodes()
        now_ms = self.clock.wall_ms()
        for member in self.membership.others():
            if member.node_id in up:
                self._down_since.pop(member.node_id, None)
            else:
                self._down_since.setdefault(member.node_id, now_ms)

    def _should_hint(self, node_id: str) -> bool:
        """Keep hints for a down node only within max-hint-window (bounded hints)."""
        now_ms = self.clock.wall_ms()
        since = self._down_since.get(node_id, now_ms)  # not noted yet: it just went down
        if now_ms - since < self.cluster_options.max_hint_window_ms:
            return True
        self.stats_counters["hints_not_kept_window"] += 1
        return False

    def _commit_handoff(self) -> None:
        """Make a handoff batch's hint removals durable (handoff.py injects this)."""
        if not self._closed:
            self.node.commit()

    def is_reachable(self, node_id: str) -> bool:
        """Up, with a connected link: hints may be handed off to it."""
        return self.transport.is_connected(node_id) and node_id in self.up_nodes()

    @property
    def fs(self) -> OSFileSystem:
        return self._fs

    def _persist(self) -> None:
        try:
            members_file.write(self._fs, self.node.directory, self.gossiper.states.values())
        except OSError as exc:
            log.warning("cannot save %s: %s", members_file.STATE_NAME, exc)

    def _check_ready(self) -> None:
        if not self.membership.complete:
            missing = self.membership.missing_addresses()
            raise ClusterDown(
                f"CLUSTERDOWN waiting for peers: {len(missing)} configured peer(s) not reached "
                f"yet ({', '.join(f'{h}:{p}' for h, p in missing)})")
        status = self.gossiper.me.status
        if status not in (Status.NORMAL, Status.LEAVING):
            raise ClusterDown(f"CLUSTERDOWN this node is {self.lifecycle.describe()}")

    # Serving peers --------------------------------------------------------------------------

    def _serve(self, peer: str, message: Message) -> Message | asyncio.Future[Message]:
        """The transport's handler: answers a peer's request (maybe after commit, Rule 2)."""
        if isinstance(message, (GossipSyn, GossipAck2)):
            self.transport.retry_now(peer)  # it reached us: our link to it may reconnect now
            return self.gossip.serve(peer, message)
        if self._closed:
            raise RemoteError(ErrorCode.SHUTTING_DOWN, "node is stopping")
        if isinstance(message, Read):
            return self.service.handle(peer, message)
        if isinstance(message, Write):
            return self._after_commit(self.service.handle(peer, message))
        if isinstance(message, Scan):
            self._check_db(message.db)
            entries, stop = self.node.local_scan(message.db, message.start, message.count)
            return ScanReply([[key, encode(siblings)] for key, siblings in entries], stop)
        if isinstance(message, Stream):
            return serve_stream(self.node, message)
        if isinstance(message, AE_REQUESTS):
            try:
                return self.ae_server.serve(message)
            except AntiEntropyError as exc:
                raise RemoteError(ErrorCode.PROTOCOL, f"anti-entropy: {exc}") from None
        if isinstance(message, Count):
            self._check_db(message.db)
            return CountReply(self.node.replica.keys[message.db])
        if isinstance(message, Flush):
            if message.db is not None:
                self._check_db(message.db)
            self._flush_local(message.db)
            return self._after_commit(FlushAck())
        return self.service.handle(peer, message)  # answers UNSUPPORTED

    def _check_db(self, db: int) -> None:
        if db >= self.node.options.databases:
            raise RemoteError(ErrorCode.UNSUPPORTED, f"db {db} is out of range")

    def _after_commit(self, reply: Message) -> Message | asyncio.Future[Message]:
        """``reply`` once the pending log is committed (Rule 2). The requests of one commit
        round that answer the same reply (every WRITE answers WriteAck) share one future:
        the transport reads it once per request, and a round of many writes makes one."""
        if not self.node.pending_log:
            return reply
        answers = self._commit_waiters
        answer = answers.get(reply)
        if answer is None:
            answer = answers[reply] = self._loop.create_future()
        if not self._commit_scheduled:
            self._commit_scheduled = True
            self._loop.call_soon(self._commit)
        return answer

    def _commit(self) -> None:
        self._commit_scheduled = False
        waiters, self._commit_waiters = self._commit_waiters, {}
        error: Exception | None = None
        try:
            if not self._closed:
                self.node.commit()
        except Exception as exc:  # OSError (disk full ...): the writes are not acknowledged
            error = exc
        for reply, future in waiters.items():
            if future.done():
                continue
            if error is not None:
                future.set_exception(RemoteError(ErrorCode.INTERNAL, f"commit failed: {error}"))
            else:
                future.set_result(reply)

    # Fan-out helpers ------------------------------------------------------------------------

    async def _all_nodes(self, request: Count | Flush | Scan, local: object
                         ) -> dict[str, Message | BaseException | object]:
        """Send ``request`` to every other member (``local`` is this node's answer)."""
        timeout_s = self.cluster_options.request_timeout_ms / 1000
        others = [m.node_id for m in self.membership.others()]
        futures = [self.transport.request(node_id, request, timeout_s) for node_id in others]
        results = await asyncio.gather(*futures, return_exceptions=True)
        out: dict[str, Message | BaseException | object] = {self.node.node_id: local}
        out.update(zip(others, results, strict=True))
        return out

    def _scan_tolerance(self) -> int:
        """How many nodes a SCAN may miss and still see every key written with a quorum."""
        total = min(self.cluster_options.replication.total, len(self.membership.members))
        return total - quorum(total)

    async def _scan_all(self, db: int, cursor: int, count: int
                        ) -> tuple[list[tuple[bytes, Siblings]], int]:
        """Merged entries from every node from ``cursor`` on, and the last token all of them
        covered (``_END`` - 1 or more: the end of the ring)."""
        local_entries, local_stop = self.node.local_scan(db, cursor, count)
        replies = await self._all_nodes(Scan(db, cursor, count), (local_entries, local_stop))
        answered: list[tuple[list[tuple[bytes, Siblings]], int | None]] = []
        failed = 0
        for node_id, reply in replies.items():
            if node_id == self.node.node_id:
                answered.append((local_entries, local_stop))
            elif isinstance(reply, ScanReply):
                try:
                    answered.append(([(k, decode(raw)) for k, raw in reply.entries], reply.stop))
                except ClusterError as exc:
                    log.warning("peer %s sent a damaged scan entry: %s", node_id, exc)
                    failed += 1
            else:
                failed += 1
        if failed > self._scan_tolerance():
            raise NoQuorum(len(answered), len(replies) - self._scan_tolerance()).error()
        stop = min(_END if s is None else s for _, s in answered)
        merged: dict[bytes, Siblings] = {}
        for entries, _ in answered:
            for key, siblings in entries:
                if stop != _END and keyspace.token(key) > stop:
                    continue
                held = merged.get(key)
                merged[key] = siblings if held is None else merge(held, siblings)
        ordered = sorted(merged.items(), key=lambda item: (keyspace.token(item[0]), item[0]))
        return ordered, (keyspace.TOKEN_MAX if stop == _END else stop)

    async def _flush(self, db: int | None) -> None:
        """Flush on every node. Refused before anything is flushed while a node is known to
        be down: a flush that reaches some nodes only is what the client would least expect."""
        self._check_ready()
        up, members = len(self.up_nodes()), len(self.membership.members)
        if up < members:
            raise NoQuorumError(f"NOQUORUM {up} of {members} nodes are up; a flush needs "
                                "every node")
        self._flush_local(db)
        replies = await self._all_nodes(Flush(db), FlushAck())
        failed = [node_id for node_id, r in replies.items() if not isinstance(r, FlushAck)]
        if failed:
            raise NoQuorumError(
                f"NOQUORUM {len(replies) - len(failed)} of {len(replies)} nodes flushed "
                f"(not reached: {', '.join(sorted(failed))})")

    def _flush_local(self, db: int | None) -> None:
        node = self.node
        for one in range(node.options.databases) if db is None else (db,):
            node.replica.flush(one)
            node.notify_flushed(one)
        self.hints.flush(db)
        # The flushed versions held this actor's counters; copies of them may survive (a
        # write in flight, a replica that missed the flush): a new actor keeps them from
        # dominating what is written next.
        self.coordinator.actor = node.rotate_actor("flush")


class Session:
    """A connection's view of a ``ClusterNode`` with its own consistency levels."""

    local_only = False

    def __init__(self, core: ClusterNode, read: Consistency, write: Consistency) -> None:
        self.core = core
        self.read_level = read
        self.write_level = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    def with_consistency(self, read: Consistency | None, write: Consistency | None
                         ) -> Session:
        return Session(self.core, read or self.core.read_level, write or self.core.write_level)

    async def get(self, db: int, key: bytes) -> Entry | None:
        return await self.core.get(db, key, self.read_level)

    async def get_siblings(self, db: int, key: bytes) -> Siblings:
        return await self.core.get_siblings(db, key, self.read_level)

    async def put(self, db: int, key: bytes, value: bytes | None, expire_at_ms: int = 0, *,
                  context: object | None = None) -> None:
        await self.core.put(db, key, value, expire_at_ms, context=context,
                            level=self.write_level)

    async def delete(self, db: int, key: bytes) -> bool:
        return await self.core.delete(db, key, self.write_level)

    async def write_many(self, db: int, ops: Sequence[tuple[bytes, bytes | None, int]]) -> None:
        await self.core.write_many(db, ops, self.write_level)

    async def get_many(self, db: int, keys: Sequence[bytes]) -> list[Entry | None]:
        return await self.core.get_many(db, keys, self.read_level)

    async def delete_many(self, db: int, keys: Sequence[bytes]) -> int:
        return await self.core.delete_many(db, keys, self.write_level)


def _visible(siblings: Siblings, now_ms: int) -> bool:
    if not siblings:
        return False
    top = winner(siblings)
    return top[VALUE] is not None and not 0 < top[EXPIRE_AT_MS] <= now_ms


def _as_context(context: object | None) -> Siblings | None:
    """The versions a write supersedes: an Entry's context (its sibling set) as given."""
    if context is None:
        return None
    assert isinstance(context, tuple), type(context)
    return context
