"""The coordinator: turns a client's get/put/delete into quorum requests to a key's replicas.

Theory of operation. The coordinator holds the placement (ring + replication), this node's
``ReplicaService`` (the local replica), the ``Transport``, the ``Clock`` and its options. For
each request it finds the key's primaries (``Placement.primaries``), turns the consistency
level into a ``Requirement`` for them (``consistency.required`` over the primaries'
datacenters), and runs a ``GetFsm`` or ``PutFsm``. It answers through an ``asyncio.Future``
made by the injected ``new_future`` (``loop.create_future`` in production,
``SimLoop.create_future`` in simulation) or, for the ``*_now`` methods, synchronously.

Rules:
1. Any node coordinates a read. The local replica, when it is one of the targets, is read in
   process, never over the network.
2. Any node coordinates a write. The version's counter floor (put_fsm Rule 2) is kept where
   the version is built: a replica coordinator holds it in its stored sibling set, any other
   node in ``ReplicaService``'s floor namespace. So no request is forwarded, and no message
   type beyond READ and WRITE is needed. (Forwarding the put to a primary, Riak's way, would
   need FORWARD_PUT messages; the floor gives the same kv679 safety without them.)
3. A write without a context supersedes what it read: with ``read_before_write`` (default)
   the coordinator first reads the key with the *write's* requirement (a quorum write then
   sees every earlier quorum write), and the new version descends that read. Without it, a
   replica coordinator supersedes its local replica's versions only (Riak's vnode-local
   increment; other coordinators' concurrent versions become siblings). A write with a
   context supersedes exactly the context's versions.
4. A primary that ``up_nodes()`` does not list is not contacted. With ``sloppy_quorum``
   the next up node beyond the primaries stands in for it (``Placement.preference_list``):
   the stand-in gets the request with ``hint_for`` naming the primary, keeps a write as a
   hint, and its ack or answer counts toward W or R. A down primary without a stand-in,
   or any down primary under a strict quorum, is failed at once (counted against the
   quorum). Either way the coordinator keeps a hint itself for every down primary that no
   stand-in serves (when ``should_hint`` allows: the owner has not been down too long), so
   a missed write is handed off when the owner is back (issue 6).
5. When every primary of a key is this node (a cluster of one), every request completes
   inside the call: the futures returned are already done, and ``get_now``/``put_now``/
   ``delete_now`` return the outcome directly (they assert that nothing was left pending).
6. Consistency levels that ask more than the key's replicas raise ``ConsistencyError`` at
   once (no request is sent).
7. While the ring changes (a node joining or leaving, issue 5), a write also goes to the
   key's *pending* replicas: those of ``future_placement`` that are not primaries now, each
   raising the acks the write needs by one (Cassandra's rule), so an acknowledged write is
   on a quorum of the old replicas and on the new ones; a pending replica that is down gets
   a hint. Reads use the current primaries only.
8. A key's route depends only on its vnode while every primary is up: the targets and
   their requirement per level are kept per vnode index, and dropped whenever
   ``placement`` is replaced (every ring change replaces it), so a request builds no
   target list of its own on that path.
9. A read (a GET, and the read before a write or a delete) asks the local replica and just
   enough others to meet its level, and its spares only when one of those fails or is
   slower than ``read_speculate_ms`` (get_fsm Rule 5): a QUORUM read of N=3 costs one peer
   request instead of two. One read in ``read_repair_every`` asks every replica, so read
   repair still reaches replicas the other reads skip (as Cassandra's read repair
   chance); hinted handoff and anti-entropy cover the rest. Levels and their guarantees
   are unchanged: a read still waits for R answers, and R + W > N still overlaps.
10. The FSMs' timers (a read's speculation delay and deadline, a write's deadline) are
   armed on the coordinator's ``TimerFifo``: one clock timer for all of them, not a loop
   timer started and cancelled per request. Peer requests go through ``Transport.call``,
   whose callback a reply reaches straight from the peer's frame, with no future.
11. A read that is not one asking every replica, needs two answers in total (QUORUM of 3,
   or TWO), and whose key routes to its vnode's cached route (Rule 8: every primary up)
   with this node among the primaries and at most one version stored here, runs as a
   ``QuickRead`` (quick_read.py): the local read and one peer's, compared. Any other
   outcome (a difference, a failure, no answer within ``read_speculate_ms``) starts a full
   ``GetFsm`` reading every replica in what is left of the timeout, so answers, read repair
   and NOQUORUM are those of Rules 1-9.
12. A write without a context under ``read_before_write`` (Rule 3) is a
   ``ConditionalWrite`` (conditional_write.py) when its key routes to its vnode's cached
   route (Rule 8: every primary up, no stand-in), no ring change is under way (Rule 7),
   this node is one of the primaries, and the requirement is a total without
   per-datacenter groups: the version is built from the local set and sent as a
   ``CondWrite``, whose replies say whether the read would have added anything. Clean
   replies up to the requirement answer the write in one round trip; an unclean one starts
   a second write descending what it held, which answers. Anywhere else (a stand-in, a
   down primary, a coordinator that is not a replica, LOCAL_QUORUM/EACH_QUORUM, a write
   with a context) the read-then-write path of Rule 3 runs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cluster import keys as keyspace
from cluster.clock import Clock
from cluster.conditional_write import ConditionalWrite
from cluster.consistency import Consistency, NoQuorum, Requirement, required
from cluster.errors import CorruptionError
from cluster.get_core import Found
from cluster.get_fsm import GetFsm, GetRequest
from cluster.messages import CondWrite, Read
from cluster.preflist import Placement, Role
from cluster.put_core import PutOk
from cluster.put_fsm import PutFsm, PutRequest, Target, build_version
from cluster.quick_read import QuickRead, Reply
from cluster.replica_service import ReplicaService
from cluster.sibling_codec import encode
from cluster.timer_fifo import TimerFifo
from cluster.transport import Transport
from cluster.version import EXPIRE_AT_MS, VALUE, Siblings, Version, winner

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Deleted:
    """A delete met its requirement; ``existed`` says whether a value was visible."""

    existed: bool


@dataclass(frozen=True, slots=True)
class Route:
    """A request's targets (Rule 4): the primaries that are up, stand-ins for down ones (with
    ``hint_for``), and the down primaries nobody serves, which are also in ``down``;
    ``hint_to`` are the owners the coordinator keeps a hint for."""

    targets: tuple[Target, ...]
    down: frozenset[str]
    hint_to: tuple[str, ...]
    # A vnode's cached route (Rule 8) memoizes its requirement per level here; None: not one.
    requirements: dict[Consistency, Requirement] | None = field(default=None, compare=False)
    # A cached route whose targets include this node: the other targets' ids (Rule 12's
    # peers, kept with the route instead of rebuilt per write); None otherwise.
    peers: tuple[str, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CoordinatorOptions:
    # How long a request waits for replicas before the silent ones count as failed.
    request_timeout_ms: int = 2000
    # Rule 3: read (with the write's requirement) before a write without a context.
    read_before_write: bool = True
    # Rule 4: stand-ins for down primaries (sloppy quorum), or strict quorums.
    sloppy_quorum: bool = False
    # Rule 9: one read in this many asks every replica (read repair reaches them all); the
    # others ask just enough replicas. 1: every read asks every replica.
    read_repair_every: int = 10
    # Rule 9: a read asks its spare replicas when no answer came in this long (0: a tenth
    # of request_timeout_ms).
    read_speculate_ms: int = 0

    def __post_init__(self) -> None:
        if self.request_timeout_ms < 1:
            raise ValueError(f"request_timeout_ms must be >= 1: {self.request_timeout_ms}")
        if self.read_repair_every < 1 or self.read_speculate_ms < 0:
            raise ValueError(f"read_repair_every must be >= 1 and read_speculate_ms >= 0: "
                             f"{self.read_repair_every}, {self.read_speculate_ms}")


class Coordinator:
    def __init__(self, placement: Placement, service: ReplicaService, transport: Transport,
                 clock: Clock, actor: bytes, new_future: Callable[[], asyncio.Future[Any]],
                 options: CoordinatorOptions | None = None,
                 up_nodes: Callable[[], Collection[str]] | None = None,
                 should_hint: Callable[[str], bool] | None = None) -> None:
        self.placement = placement
        self.service = service
        self.transport = transport
        self.clock = clock
        self.actor = actor
        self.new_future = new_future
        self.options = options or CoordinatorOptions()
        self.node_id = transport.node_id
        self.up_nodes = up_nodes
        self.should_hint = should_hint
        # The placement once the nodes now joining or leaving are done (Rule 7); None when
        # the ring is not changing.
        self.future_placement: Placement | None = None
        info = placement.ring.nodes.get(self.node_id)
        self.local_dc = info.datacenter if info is not None else "dc1"
        self.timeout_s = self.options.request_timeout_ms / 1000
        speculate_ms = self.options.read_speculate_ms
        self.speculate_s = (min(speculate_ms, self.options.request_timeout_ms) / 1000
                            if speculate_ms else self.timeout_s / 10)
        # Rule 10: every FSM's timers on one clock timer.
        self.timers = TimerFifo(clock)
        self._reads = 0  # Rule 9: counts reads, for the one in read_repair_every asking all
        # FSMs not finished (late replies, repair), and quick reads not answered (Rule 11)
        self.active: set[GetFsm | PutFsm | QuickRead | ConditionalWrite] = set()
        # Rule 8: what each vnode's keys route to while nothing is down, per placement.
        self._placed: dict[int, Route] = {}
        self._placed_for: Placement | None = None
        self.stats = {"gets": 0, "puts": 0, "noquorum": 0, "read_repairs": 0,
                      "sloppy_requests": 0, "hints_kept": 0, "quick_fallbacks": 0,
                      "cond_writes": 0, "cond_second_writes": 0}

    # Placement ---------------------------------------------------------------------------

    def targets(self, key: bytes) -> tuple[Target, ...]:
        """The key's primaries with their datacenters, in preference order."""
        return self._placed_of(key).targets

    def _placed_of(self, key: bytes) -> Route:
        """The cached routing of ``key``'s vnode under the current placement (Rule 8)."""
        placement = self.placement
        if placement is not self._placed_for:
            self._placed.clear()
            self._placed_for = placement
        ring = placement.ring
        if not ring.tokens:
            return Route((), frozenset(), ())
        index = ring.index(keyspace.token(key))
        placed = self._placed.get(index)
        if placed is None:
            nodes = ring.nodes
            targets = tuple(Target(node_id, nodes[node_id].datacenter)
                            for node_id in placement.primaries_at(index))
            me = self.node_id
            peers = tuple(t.node_id for t in targets if t.node_id != me)
            placed = self._placed[index] = Route(
                targets, frozenset(), (), {}, peers if len(peers) < len(targets) else None)
        return placed

    def requirement(self, targets: tuple[Target, ...], level: Consistency) -> Requirement:
        """Rule 6: ``level`` for the replicas of one key."""
        per_dc: dict[str, int] = {}
        for target in targets:
            per_dc[target.dc] = per_dc.get(target.dc, 0) + 1
        return required(level, per_dc, self.local_dc)

    def _requirement_of(self, route: Route, level: Consistency) -> Requirement:
        """``requirement`` of a route, memoized on a vnode's cached route (Rule 8)."""
        memo = route.requirements
        if memo is None:
            return self.requirement(route.targets, level)
        requirement = memo.get(level)
        if requirement is None:  # a ConsistencyError is raised here each time, not cached
            requirement = memo[level] = self.requirement(route.targets, level)
        return requirement

    @property
    def local_only(self) -> bool:
        """True when every key's only replica is this node (Rule 5 holds for every key)."""
        return set(self.placement.ring.nodes) == {self.node_id}

    def route(self, key: bytes) -> Route:
        """Where a request for ``key`` goes (Rule 4)."""
        placed = self._placed_of(key)
        if self.up_nodes is None:
            return placed
        primaries = placed.targets
        up = self.up_nodes()
        down = [t for t in primaries if t.node_id != self.node_id and t.node_id not in up]
        if not down:
            return placed
        if not self.options.sloppy_quorum:
            return Route(primaries, frozenset(t.node_id for t in down),
                         tuple(t.node_id for t in down))
        self.stats["sloppy_requests"] += 1
        nodes = self.placement.ring.nodes
        live = {*up, self.node_id}
        entries = self.placement.preference_list(keyspace.token(key), live)
        served = {e.primary for e in entries}
        targets = [Target(e.node_id, nodes[e.primary].datacenter,
                          None if e.role is Role.PRIMARY else e.primary) for e in entries]
        unserved = [t for t in primaries if t.node_id not in served]
        return Route(tuple(targets + unserved), frozenset(t.node_id for t in unserved),
                     tuple(t.node_id for t in unserved))

    # Reads -------------------------------------------------------------------------------

    def start_get(self, db: int, key: bytes, level: Consistency,
                  on_reply: Callable[[Found | NoQuorum], None]) -> None:
        """Start a read; ``on_reply`` runs once (maybe before this returns)."""
        route = self.route(key)
        self._reads = reads = self._reads + 1
        requirement = self._requirement_of(route, level)
        read_all = reads % self.options.read_repair_every == 0
        self.stats["gets"] += 1
        if (not read_all and requirement.total == 2 and not requirement.per_dc
                and route.requirements is not None  # the vnode's route: every primary up
                and self._start_quick_read(db, key, requirement, route.targets, on_reply)):
            return
        self._start_get_fsm(GetRequest(db, key, requirement, route.targets, route.down,
                                       read_all), on_reply, self.timeout_s)

    def _start_get_fsm(self, request: GetRequest, on_reply: Callable[[Found | NoQuorum], None],
                       timeout_s: float) -> None:
        fsm = GetFsm(request, local_id=self.node_id, service=self.service,
                     transport=self.transport, clock=self.clock, timeout_s=timeout_s,
                     on_reply=self._counted(on_reply), on_finish=self._finished,
                     speculate_s=self.speculate_s, timers=self.timers)
        self.active.add(fsm)
        fsm.start()

    def _start_quick_read(self, db: int, key: bytes, requirement: Requirement,
                          targets: tuple[Target, ...],
                          on_reply: Callable[[Found | NoQuorum], None]) -> bool:
        """Rule 11: a quorum-of-two read of an all-up key that this node holds, as a
        ``QuickRead``; False (nothing started) when the key's local set does not allow it."""
        me = self.node_id
        peer: str | None = None
        local_target = False
        for target in targets:
            if target.node_id == me:
                local_target = True
            elif peer is None:
                peer = target.node_id
        if not local_target or peer is None:
            return False
        try:
            local = self.service.read(db, key)
        except CorruptionError:
            return False  # the FSM counts the local replica failed
        if len(local) > 1:
            return False  # siblings: merge's normal form is the FSM's business
        read = QuickRead(self, self.clock, db, key, requirement, targets, local, on_reply)
        self.active.add(read)
        self.transport.call(peer, Read(db, key), self.timeout_s, read.on_peer)
        read.timer = self.timers.call_later(self.speculate_s, read.on_slow)
        return True

    def quick_done(self, read: QuickRead) -> None:
        self.active.discard(read)

    def quick_fallback(self, read: QuickRead, on_reply: Reply, elapsed_s: float) -> None:
        """The quick read met a difference, a failure or a slow peer: every replica is read
        by a full FSM, in what is left of the request's timeout (quick_read invariant 1)."""
        self.active.discard(read)
        self.stats["quick_fallbacks"] += 1
        request = GetRequest(read.db, read.key, read.requirement, read.targets, frozenset(),
                             True)
        # Whole milliseconds, rounded down (never past the read's own deadline): the
        # TimerFifo keeps one FIFO per delay, and fallbacks at a few distinct delays share a
        # few FIFOs instead of adding one each.
        left_ms = max(1, math.floor((self.timeout_s - elapsed_s) * 1000))
        self._start_get_fsm(request, on_reply, left_ms / 1000)

    def get(self, db: int, key: bytes, level: Consistency) -> asyncio.Future[Found | NoQuorum]:
        future: asyncio.Future[Found | NoQuorum] = self.new_future()
        self.start_get(db, key, level, future.set_result)
        return future

    def get_now(self, db: int, key: bytes, level: Consistency) -> Found | NoQuorum:
        """``get`` for a key whose replicas are all local (Rule 5)."""
        box: list[Found | NoQuorum] = []
        self.start_get(db, key, level, box.append)
        return _only(box)

    # Writes ------------------------------------------------------------------------------

    def start_put(self, db: int, key: bytes, value: bytes | None, expire_at_ms: int,
                  level: Consistency, context: Siblings | None,
                  on_reply: Callable[[PutOk | NoQuorum], None],
                  on_version: Callable[[Version], None] | None = None) -> None:
        """Start a write (``value`` None: a tombstone); ``on_reply`` runs once (maybe before
        this returns); ``on_version`` sees the version written, if one is."""
        route = self.route(key)
        requirement = self._requirement_of(route, level)  # Rule 6: raise before any read
        if context is not None:
            self._start_put_fsm(db, key, value, expire_at_ms, requirement, route, context,
                                on_reply, on_version)
            return
        if not self.options.read_before_write:
            local = any(t.node_id == self.node_id and t.hint_for is None
                        for t in route.targets)
            seen = self.service.read(db, key) if local else ()
            self._start_put_fsm(db, key, value, expire_at_ms, requirement, route, seen,
                                on_reply, on_version)
            return
        if self._start_conditional(db, key, value, expire_at_ms, requirement, route,
                                   on_reply, on_version):
            return

        def read_done(outcome: Found | NoQuorum) -> None:
            if isinstance(outcome, NoQuorum):
                on_reply(outcome)
                return
            self._start_put_fsm(db, key, value, expire_at_ms, requirement, self.route(key),
                                outcome.siblings, on_reply, on_version)

        self.start_get(db, key, level, read_done)

    def _start_conditional(self, db: int, key: bytes, value: bytes | None, expire_at_ms: int,
                           requirement: Requirement, route: Route,
                           on_reply: Callable[[PutOk | NoQuorum], None],
                           on_version: Callable[[Version], None] | None) -> bool:
        """Rule 12: the write as a ``ConditionalWrite``; False (nothing done) where it does
        not apply."""
        peers = route.peers  # None: not a cached route, or this node is no replica of it
        if peers is None or requirement.per_dc or self.future_placement is not None:
            return False
        try:
            local, raw = self.service.read_stored(db, key)
        except CorruptionError:
            return False  # the read-then-write path counts the local replica failed
        # conditional_write invariant 1: the floor is the local set's own counters
        version = build_version(local, 0, self.actor, self.clock.wall_ms(), value,
                                expire_at_ms)
        self.stats["puts"] += 1
        self.stats["cond_writes"] += 1
        if on_version is not None:
            on_version(version)
        versions = (version,)
        data = encode(versions)  # stored here and sent to the peers: encoded once
        self.service.merge_onto(db, key, local, versions, data, raw)
        write = ConditionalWrite(self, db, key, version, requirement, peers,
                                 self._counted(on_reply), on_reply, self.service.hints,
                                 self.should_hint, on_version)
        self.active.add(write)
        if peers:
            message = CondWrite(db, key, data)
            call = self.transport.call
            for peer in peers:
                call(peer, message, self.timeout_s, write.on_peer)
            write.timer = self.timers.call_later(self.timeout_s, write.on_deadline)
        write.settle()
        return True

    def cond_second_write(self, write: ConditionalWrite, seen: Siblings,
                          on_reply: Callable[[PutOk | NoQuorum], None]) -> None:
        """conditional_write invariant 2: an unclean replica answered; write a version
        descending what it held (``seen``), as the read-then-write path would have."""
        self.stats["cond_second_writes"] += 1
        version = write.version
        self._start_put_fsm(write.db, write.key, version[VALUE], version[EXPIRE_AT_MS],
                            write.requirement, self.route(write.key), seen, on_reply,
                            write.on_version)

    def cond_done(self, write: ConditionalWrite) -> None:
        self.active.discard(write)
        self.stats["hints_kept"] += write.hints_kept

    def _with_pending(self, key: bytes, route: Route, requirement: Requirement
                      ) -> tuple[Route, Requirement]:
        """Rule 7: add the key's pending replicas (joining or taking over from a leaving
        node) to a write, each raising the acks required by one; a pending replica that is
        down gets a hint instead."""
        future = self.future_placement
        if future is None:
            return route, requirement
        tok = keyspace.token(key)
        current = set(self.placement.primaries(tok))
        pending = [n for n in future.primaries(tok) if n not in current]
        if not pending:
            return route, requirement
        present = {t.node_id for t in route.targets}
        up = self.up_nodes() if self.up_nodes is not None else None
        dc_of = future.ring.nodes
        extra: list[Target] = []
        hint_to = list(route.hint_to)
        for node_id in pending:
            if node_id in present:
                continue
            if up is not None and node_id != self.node_id and node_id not in up:
                hint_to.append(node_id)
                continue
            extra.append(Target(node_id, dc_of[node_id].datacenter))
        if not extra:
            return Route(route.targets, route.down, tuple(hint_to)), requirement
        per_dc = dict(requirement.per_dc)
        for target in extra:
            if target.dc in per_dc:
                per_dc[target.dc] += 1
        total = requirement.total + len(extra) if requirement.total else 0
        return (Route(route.targets + tuple(extra), route.down, tuple(hint_to)),
                Requirement(total, tuple(sorted(per_dc.items()))))

    def _start_put_fsm(self, db: int, key: bytes, value: bytes | None, expire_at_ms: int,
                       requirement: Requirement, route: Route, seen: Siblings,
                       on_reply: Callable[[PutOk | NoQuorum], None],
                       on_version: Callable[[Version], None] | None = None) -> None:
        route, requirement = self._with_pending(key, route, requirement)
        request = PutRequest(db, key, value, expire_at_ms, seen, requirement, route.targets,
                             route.down)
        self.stats["puts"] += 1
        keep = [node_id for node_id in route.hint_to
                if self.service.hints is not None
                and (self.should_hint is None or self.should_hint(node_id))]
        if keep:
            on_version = self._keeping_hints(db, key, keep, on_version)
        fsm = PutFsm(request, local_id=self.node_id, actor=self.actor, service=self.service,
                     transport=self.transport, clock=self.clock, timeout_s=self.timeout_s,
                     on_reply=self._counted(on_reply), on_finish=self._finished,
                     on_version=on_version, should_hint=self.should_hint,
                     timers=self.timers)
        self.active.add(fsm)
        fsm.start()

    def put(self, db: int, key: bytes, value: bytes | None, expire_at_ms: int,
            level: Consistency, context: Siblings | None = None
            ) -> asyncio.Future[PutOk | NoQuorum]:
        """Write ``value`` (None: a tombstone); ``context`` (the siblings a VCLOCK GET
        returned) is what it supersedes, None for a plain write (Rule 3)."""
        future: asyncio.Future[PutOk | NoQuorum] = self.new_future()
        self.start_put(db, key, value, expire_at_ms, level, context, future.set_result)
        return future

    def put_now(self, db: int, key: bytes, value: bytes, expire_at_ms: int, level: Consistency,
                context: Siblings | None = None) -> PutOk | NoQuorum:
        """``put`` for a key whose replicas are all local (Rule 5)."""
        box: list[PutOk | NoQuorum] = []
        self.start_put(db, key, value, expire_at_ms, level, context, box.append)
        return _only(box)

    def start_delete(self, db: int, key: bytes, level: Consistency,
                     on_reply: Callable[[Deleted | NoQuorum], None]) -> None:
        """Read with the write's requirement; if any version holds a live value, write a
        tombstone superseding what was read. ``existed``: the winner was visible."""

        def read_done(outcome: Found | NoQuorum) -> None:
            if isinstance(outcome, NoQuorum):
                on_reply(outcome)
                return
            siblings = outcome.siblings
            now_ms = self.clock.wall_ms()
            live = [v for v in siblings
                    if v[VALUE] is not None and not 0 < v[EXPIRE_AT_MS] <= now_ms]
            if not live:
                on_reply(Deleted(False))
                return
            top = winner(siblings)
            existed = top[VALUE] is not None and not 0 < top[EXPIRE_AT_MS] <= now_ms

            def written(result: PutOk | NoQuorum) -> None:
                on_reply(Deleted(existed) if isinstance(result, PutOk) else result)

            route = self.route(key)
            self._start_put_fsm(db, key, None, 0, self._requirement_of(route, level),
                                route, siblings, written)

        self.start_get(db, key, level, read_done)

    def delete(self, db: int, key: bytes,
               level: Consistency) -> asyncio.Future[Deleted | NoQuorum]:
        future: asyncio.Future[Deleted | NoQuorum] = self.new_future()
        self.start_delete(db, key, level, future.set_result)
        return future

    def delete_now(self, db: int, key: bytes, level: Consistency) -> Deleted | NoQuorum:
        box: list[Deleted | NoQuorum] = []
        self.start_delete(db, key, level, box.append)
        return _only(box)

    # Plumbing ----------------------------------------------------------------------------

    def _keeping_hints(self, db: int, key: bytes, owners: list[str],
                       then: Callable[[Version], None] | None) -> Callable[[Version], None]:
        """An ``on_version`` that first keeps the new version as a hint for each owner that
        no replica or stand-in serves (Rule 4)."""
        hints = self.service.hints
        assert hints is not None

        def keep(version: Version) -> None:
            for owner in owners:
                if hints.add(owner, db, key, (version,)):
                    self.stats["hints_kept"] += 1
            if then is not None:
                then(version)
        return keep

    def _counted(self, on_reply: Callable[[T], None]) -> Callable[[T], None]:
        def reply(outcome: T) -> None:
            if isinstance(outcome, NoQuorum):
                self.stats["noquorum"] += 1
            on_reply(outcome)
        return reply

    def _finished(self, fsm: GetFsm | PutFsm) -> None:
        self.active.discard(fsm)
        if isinstance(fsm, GetFsm) and fsm.repaired:
            self.stats["read_repairs"] += len(fsm.repaired)


def _only(box: list[T]) -> T:
    """The outcome a synchronous request delivered; it must have delivered one (Rule 5)."""
    assert len(box) == 1, "a *_now call on a key with remote replicas"
    return box[0]
