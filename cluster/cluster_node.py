"""A node of a cluster of more than one: the frontend's ``Node`` API over quorum requests.

Theory of operation. ``ClusterNode`` owns this node's storage (``Node``: engine, replica,
expiry), its peer transport (``PeerTransport``: listens for peers, one link per peer), the
membership view (``Membership``) and the ``Coordinator``. The Redis frontend calls the same
methods it calls on a ``Node`` (get, put, delete, write_many, scan, random_key, dbsize,
flushdb, flushall ...); here they coordinate: a read asks R replicas of the key's preference
list, a write waits for W acks, and the rest finishes in the background (coordinator.py).
Peers reach this node's replica through ``_serve``.

This module holds the wiring (open, start, close), the options and the pass-through to the
storage; the rest of ``ClusterNode`` comes from mixins, one job each: single-key reads and
writes (cluster_key_ops.py), operations over every node (cluster_fanout.py), serving peers
(cluster_peer_handler.py), keeping the view of the cluster current (cluster_view.py) and the
operator's CLUSTER commands (cluster_operator.py); a connection's levels are a ``Session``
(cluster_session.py). The rules are numbered across those modules: Rule 1 is here, Rule 2 in
cluster_peer_handler.py, Rule 3 in cluster_key_ops.py, Rule 4 in cluster_fanout.py, Rule 5
in cluster_view.py, Rule 6 in cluster_operator.py.

Rules:
1. No request is coordinated before the membership is complete (every configured peer
   address known as some node's, now or in a previous run: ``members.Membership``) and this
   node is an owner (NORMAL or LEAVING): data placed on a partial ring would be where later
   reads do not look, and a joining node serves nothing before its ranges are streamed.
   Until then requests fail with ``ClusterDown`` (``CLUSTERDOWN ...``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster import alive as alive_file
from cluster import hints as hints_module
from cluster import members as members_file
from cluster import tokens as tokens_file
from cluster.anti_entropy import AntiEntropyServer
from cluster.clock import Clock
from cluster.cluster_fanout import FanOutOperations
from cluster.cluster_key_ops import KeyOperations
from cluster.cluster_operator import OperatorActions
from cluster.cluster_peer_handler import PeerHandler
from cluster.cluster_session import Session
from cluster.cluster_view import ViewUpkeep
from cluster.consistency import Consistency, Level
from cluster.coordinator import Coordinator, CoordinatorOptions
from cluster.departures import TOMBSTONE_S_DEFAULT, Departures
from cluster.endpoint_state import OWNERS, AppField, FieldValue, Status
from cluster.errors import ClusterError
from cluster.failure_detector import DetectorOptions, FailureDetector
from cluster.gossip import Gossiper
from cluster.gossip_service import GossipService
from cluster.handoff import Handoff
from cluster.lifecycle import Lifecycle
from cluster.members import Member, Membership
from cluster.messages import Message
from cluster.node import Node, NodeOptions
from cluster.peer_transport import PeerTransport
from cluster.preflist import Placement, Replication
from cluster.repair import Repairer
from cluster.replica_service import ReplicaService
from cluster.transport import DeferredReply, TransportConfig
from cluster.tree_set import TreeSet
from engine.fs import OSFileSystem

log = logging.getLogger(__name__)


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
    # gossip-tombstone-seconds: how long a departed node's tombstone is gossiped before every
    # node drops it, and its record then kept (cluster.departures); 0 = kept forever.
    tombstone_s: int = TOMBSTONE_S_DEFAULT
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


class ClusterNode(KeyOperations, FanOutOperations, PeerHandler, ViewUpkeep,
                  OperatorActions):
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
        self._next_repair_s: float = clock.monotonic() + options.anti_entropy_interval_s
        self._alive_written_s: float = clock.monotonic()
        self._load_published_s: float = float("-inf")
        self._handoff: Handoff = Handoff(
            self.hints, self.transport,
            per_tick=Handoff.per_tick_of(options.handoff_rate, options.exchange_interval_s),
            timeout_s=options.request_timeout_ms / 1000, reachable=self.is_reachable,
            commit=self._commit_handoff, report=lambda message: log.warning("%s", message),
            delivered=lambda target, done, sent: log.info(
                "handed off %d of %d hints to node %s", done, sent, target))
        # Rule 2: replies waiting for the next commit, one DeferredReply per distinct reply.
        self._commit_waiters: dict[Message, DeferredReply] = {}
        self._commit_scheduled: bool = False
        self._closed: bool = False
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
            stored = members_file.read(fs, directory)
            known = stored.states
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
                                known=others, wall_ms=clock.wall_ms,
                                departures=Departures(options.tombstone_s, stored.departed))
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
    def pending_log(self) -> list[bytes | None]:
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

    def tune_engine(self, **limits: Any) -> None:  # Node.tune_engine's keywords
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
        waiters, self._commit_waiters = self._commit_waiters, {}
        for answer in waiters.values():
            answer.settle(ClusterError("node is stopping"))
        self._write_alive()
        await self.node.close()

    @property
    def fs(self) -> OSFileSystem:
        return self._fs

    def _check_ready(self) -> None:
        if not self.membership.complete:
            missing = self.membership.missing_addresses()
            raise ClusterDown(
                f"CLUSTERDOWN waiting for peers: {len(missing)} configured peer(s) not reached "
                f"yet ({', '.join(f'{h}:{p}' for h, p in missing)})")
        status = self.gossiper.me.status
        if status not in (Status.NORMAL, Status.LEAVING):
            raise ClusterDown(f"CLUSTERDOWN this node is {self.lifecycle.describe()}")
