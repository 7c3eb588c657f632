"""The swarm simulator (STYLE rule 8; TigerBeetle's VOPR): one seed draws a whole cluster run,
a safety phase under faults, then a liveness phase that must converge.

Theory of operation. ``SimOptions.swarm(seed)`` draws everything from ``random.Random(seed)``:
the node count (3-5), N (1..min(3, nodes)), the read and write consistency levels, the
workload (size, key space of 1-4 keys so writes conflict, mix of put / get / tombstone put /
put with the context of an earlier read), every network fault probability
(``NetworkOptions.swarm``), partitions (isolate a node, split the cluster, cut one directed
link), per-node wall-clock skew, the request timeout, whether coordinators get a perfect
failure detector (and whether it also counts nodes a partition cuts off as down), the
engines' memtable size, a crash/restart schedule, and the hint settings (``HintOptions``:
sloppy or strict quorum, the per-target hint bound, the hint window, the handoff round
interval and batch size). Sub-seeds for the ring, the network, the workload and the faults
come from the same generator, so the seed alone replays the run. Every node is a real
``Engine`` in its own directory under a ``Replica``, a ``HintStore``, a ``ReplicaService``
(with ``hints=``), a ``Coordinator`` and a ``Handoff`` (tests/sim/sim_process.py); a crashed
node's engine is closed (or its files abandoned) and reopened from that directory, which runs
the engine's recovery; its hints are engine records and survive with it.

Sloppy quorum and hinted handoff (issue 6). Coordinators get ``up_nodes`` only with the
failure detector on; then a primary they see down is routed around (coordinator.py Rule 4):
under ``sloppy_quorum`` to a stand-in beyond the preference list that keeps a hint, else
failed at once; either way the coordinator keeps a hint for a down primary no stand-in
serves, unless ``should_hint`` says the owner is down longer than the hint window. Every
``handoff_interval_ticks`` while faults may still be active, each live node runs
``Handoff.tick()``; a target is reachable when it is up and no cut separates it from the
holder.

Phase 1 (safety): the workload runs under faults, then the run goes idle. Checked as it runs:
- S1, read-your-writes, asserted exactly when ``r + w > n`` (the counts the drawn levels
  require of the key's N primaries) and the quorum is strict (``read_your_writes``): a read
  that met its requirement and started after a write to the same key was acknowledged to its
  client (PutOk) returns that version or one whose clock dominates it. Why: with a strict
  quorum the W acks and the R answers come from the same N primaries (a stand-in never
  counts) and two such sets intersect; a replica never loses what it merged, because a node
  crash here is a process crash (the engine commits after every event, before any reply can
  leave; sim_process.py "Durability model"), so crashes of the read's replicas in between
  do not void it. It would not hold, and is not asserted, with r + w <= n; nor with a
  sloppy quorum while coordinators route around down primaries: the W acks may come from
  stand-ins that a later read, sent to the primaries once they are back (or to other
  stand-ins), does not ask, until handoff delivered the hints. (Without the failure detector
  nothing is routed around, so a sloppy run is then strict and S1 is asserted.) It would not
  hold either with a data-losing crash (power loss with fsync "no", a wiped directory) or a
  preference list that changes, neither of which the simulator produces.
- S2, no value from nowhere: every version a successful read returns is one a client wrote.
Phase 2 (liveness): heal every link, restart every crashed node, clear every fault, let the
run go idle; then run handoff rounds on every node until no node holds a hint (at most
``HANDOFF_ROUNDS_MAX``) and check, before any repair read:
- H1, handoff delivers: every version a node stored as a hint (the coordinator's own, a local
  or a remote stand-in's) and every version a stand-in acknowledged as a hint
  (``AckObserver.hinted``) is on its intended owner, or dominated there. Hints never expire
  in a run (no ttl); a hint refused by its bound (``max_count``) or not kept (hint window) is
  neither stored nor acknowledged, and is counted (``SimResult``).
- H2, hints drained: no hint is pending on any node (checked again at the very end).
Then read every key with ALL from every node (read repair: there is no anti-entropy in the
simulation), let it go idle again, and check with tests/sim/checkers.py, over what each
node's engine holds:
- L1, every ALL read succeeds; L2, the key's N primaries hold the same sibling set; L3, no
  acknowledged write is lost: every version a client was told OK for, and every version a
  replica or a stand-in acknowledged (``AckObserver``), is on every primary or dominated
  there (so a write acknowledged only by stand-ins reached its primaries); L4, siblings are
  pairwise concurrent; L5, no value from nowhere; L6, nothing is left running (no FSM, no
  handoff batch, nothing in flight).
- D1, deleted stays deleted: no primary ends with a live version that an acknowledged
  tombstone supersedes, nor one that a tombstone supersedes which a successful read returned
  while saying the key was absent (no live sibling) after a tombstone for it was
  acknowledged. (A write concurrent with the delete may still make the key visible again:
  it was not deleted.)

Determinism: the same seed gives the same trace (``SimResult.trace_hash`` hashes every
network event and the client history).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cluster import keys as keyspace
from cluster import tokens as node_tokens
from cluster import vclock
from cluster.consistency import Consistency, Level, NoQuorum, required, to_text
from cluster.get_core import Found
from cluster.preflist import Placement, Replication
from cluster.put_core import PutOk
from cluster.replica_service import ReplicaService
from cluster.ring import NodeInfo, Ring
from cluster.version import CLOCK, VALUE, Siblings, Version
from tests.sim.checkers import (
    AckObserver,
    History,
    Key,
    check_all,
    check_deleted_stay_deleted,
    check_hints_delivered,
    same_version,
    show,
)
from tests.sim.sim_clock import SimClock
from tests.sim.sim_network import NetworkOptions, SimNetwork
from tests.sim.sim_process import NodeProcess, ServiceFactory

DB = 0
TOKENS_PER_NODE = 8
IDLE_TICKS_MAX = 10_000_000  # a run that is not idle this long after its last event livelocked
HANDOFF_ROUNDS_MAX = 200  # phase 2: rounds to drain every hint (a few are enough)
KINDS = ("put", "get", "tombstone", "context_put")


class SimulationFailure(AssertionError):
    """A run broke a check; the message names the seed that reproduces it."""


@dataclass(frozen=True, slots=True)
class WorkloadOptions:
    ops: int
    keys: int
    weights: tuple[int, int, int, int]  # for KINDS
    span_ticks: int  # operations are issued at ticks uniform in [0, span_ticks]


@dataclass(frozen=True, slots=True)
class FaultOptions:
    network: NetworkOptions
    crashes: int
    crash_mode: str  # "close" or "kill" (sim_process.NodeProcess.crash)
    down_ticks_max: int
    partitions: int
    partition_ticks_max: int
    skew_ms_max: int
    failure_detector: bool  # coordinators see exactly which nodes are up (else: timeouts)
    timeout_ms: int
    memtable_bytes: int
    read_before_write: bool  # CoordinatorOptions Rule 3 (else: supersede the local replica's)


@dataclass(frozen=True, slots=True)
class HintOptions:
    sloppy_quorum: bool  # CoordinatorOptions.sloppy_quorum (coordinator.py Rule 4)
    detector_sees_partitions: bool  # the failure detector also counts cut-off nodes down
    max_count: int  # hints per target per holder (HintStore bound; beyond: refused, counted)
    window_ticks: int  # no new hints for a node crashed longer (0: no window)
    handoff_interval_ticks: int  # a Handoff.tick() on every live node this often
    handoff_per_tick: int  # hints per batch

    @classmethod
    def swarm(cls, rng: random.Random) -> HintOptions:
        return cls(sloppy_quorum=rng.random() < 0.5,
                   detector_sees_partitions=rng.random() < 0.5,
                   max_count=rng.choice((1_000_000, 1_000_000, 1)),
                   window_ticks=rng.choice((0, 0, 300)),
                   handoff_interval_ticks=rng.choice((20, 100, 500)),
                   handoff_per_tick=rng.choice((1, 2, 100)))


@dataclass(frozen=True, slots=True)
class SimOptions:
    seed: int
    nodes: int
    n: int
    read: Consistency
    write: Consistency
    workload: WorkloadOptions
    faults: FaultOptions
    ring_seed: int
    network_seed: int
    workload_seed: int
    fault_seed: int
    hints: HintOptions

    @property
    def r(self) -> int:
        return required(self.read, {"dc1": self.n}, "dc1").total

    @property
    def w(self) -> int:
        return required(self.write, {"dc1": self.n}, "dc1").total

    @property
    def routes_around(self) -> bool:
        """Coordinators send to stand-ins for the primaries they see down."""
        return self.hints.sloppy_quorum and self.faults.failure_detector

    @property
    def read_your_writes(self) -> bool:
        """S1 is asserted exactly in these runs (module docstring)."""
        return self.r + self.w > self.n and not self.routes_around

    def describe(self) -> str:
        return (f"nodes={self.nodes} N={self.n} R={to_text(self.read)}({self.r}) "
                f"W={to_text(self.write)}({self.w}) {self.workload} {self.faults} {self.hints}")

    @classmethod
    def swarm(cls, seed: int) -> SimOptions:
        rng = random.Random(seed)
        nodes = rng.randint(3, 5)
        n = rng.randint(1, min(3, nodes))
        read, write = _level(rng, n), _level(rng, n)
        workload = WorkloadOptions(
            ops=rng.randint(20, 200), keys=rng.randint(1, 4),
            weights=(rng.randint(1, 5), rng.randint(1, 5), rng.randint(0, 2), rng.randint(0, 2)),
            span_ticks=rng.choice((500, 2000, 10_000)))
        faults = FaultOptions(
            network=NetworkOptions.swarm(rng), crashes=rng.choice((0, 0, 1, 2, 5)),
            crash_mode=rng.choice(("close", "kill")), down_ticks_max=rng.choice((50, 500, 3000)),
            partitions=rng.choice((0, 1, 3, 8)), partition_ticks_max=rng.choice((100, 1000)),
            skew_ms_max=rng.choice((0, 0, 50, 5000)), failure_detector=rng.random() < 0.5,
            timeout_ms=rng.choice((50, 200, 1000)), memtable_bytes=rng.choice((4096, 1 << 20)),
            read_before_write=rng.random() < 0.75)
        ring_seed, network_seed = rng.getrandbits(64), rng.getrandbits(64)
        workload_seed, fault_seed = rng.getrandbits(64), rng.getrandbits(64)
        return cls(seed, nodes, n, read, write, workload, faults, ring_seed, network_seed,
                   workload_seed, fault_seed, HintOptions.swarm(rng))


def _level(rng: random.Random, n: int) -> Consistency:
    return rng.choice((Level.ONE, Level.QUORUM, Level.QUORUM, Level.ALL, rng.randint(1, n)))


@dataclass(frozen=True, slots=True)
class Op:
    tick: int
    kind: str
    node: str
    key: bytes
    value: bytes


@dataclass
class SimResult:
    seed: int
    options: SimOptions
    trace_hash: str = ""
    acked_writes: int = 0
    reads_found: int = 0
    reads_checked: int = 0  # successful reads S1 checked against at least one acked write
    refused_ops: int = 0  # issued to a node that was down
    crashes: int = 0
    siblings_dropped: int = 0  # by the sibling limit: L2/L3 are then not promised
    engine_reports: list[str] = field(default_factory=list)
    # Hinted handoff, summed over every node and incarnation.
    sloppy_requests: int = 0  # requests routed around a down primary
    hints_stored: int = 0  # HintStore.add accepted (a merge into a pending hint counts too)
    hints_kept_by_coordinators: int = 0
    hints_refused: int = 0  # by the per-target bound (HintStore stats "dropped")
    hints_not_kept: int = 0  # the owner was down longer than the hint window
    hints_delivered: int = 0  # removed after their owner acknowledged them
    hints_expired: int = 0  # always 0: hints have no ttl in a run (H1 relies on it)
    hints_checked: int = 0  # (owner, version) pairs H1 checked
    handoff_rounds: int = 0  # phase 2 rounds until no hint was pending
    deletes_checked: int = 0  # reads that found a key absent after an acked tombstone (D1)


class Simulator:
    """One run of ``options`` in ``directory`` (one sub-directory per node)."""

    def __init__(self, options: SimOptions, directory: Path,
                 service_factory: ServiceFactory = ReplicaService,
                 commit_every_event: bool = True) -> None:
        """``commit_every_event=False`` is a broken durability model (negative control):
        engines commit only when closed, so a "kill" crash loses acknowledged merges."""
        self.options = options
        self.commit_every_event = commit_every_event
        self.directory = directory
        self.service_factory = service_factory
        self.clock = SimClock()
        faults = options.faults
        self.network = SimNetwork(self.clock, random.Random(options.network_seed),
                                  faults.network)
        self.acks = AckObserver()
        self.network.on_message(self.acks)
        self.history = History()
        self.names = [f"n{i}" for i in range(1, options.nodes + 1)]
        ring_rng = random.Random(options.ring_seed)
        infos = [NodeInfo(name, node_tokens.generate(ring_rng, TOKENS_PER_NODE))
                 for name in self.names]
        self.placement = Placement(Ring.build(infos), Replication.simple(options.n))
        self.fault_rng = random.Random(options.fault_seed)
        self.skew_ms = {name: self.fault_rng.randint(-faults.skew_ms_max, faults.skew_ms_max)
                        for name in self.names}
        self.keys = [b"key%d" % i for i in range(options.workload.keys)]
        self.result = SimResult(options.seed, options)
        self.failures: list[str] = []
        self.order = 0  # a counter over acks and read starts: "after" means a larger order
        self.acked: list[tuple[int, bytes, Version]] = []
        self.last_found: dict[bytes, Siblings] = {}
        self.hinted: list[tuple[str, Key, Version]] = []  # (owner, key, version) stored as hints
        self.deleted: list[tuple[Key, Version]] = []  # tombstones D1 holds the end state to
        self.tombstones_acked: list[tuple[int, bytes, Version]] = []
        self.down_since: dict[str, int] = {}  # crashed node -> tick (the hint window)
        self.handoff_until = (options.workload.span_ticks
                              + max(options.faults.down_ticks_max,
                                    options.faults.partition_ticks_max)
                              + options.hints.handoff_interval_ticks)
        self.processes = {name: self._start(name, restart=False) for name in self.names}

    # Nodes -------------------------------------------------------------------------------

    def _start(self, name: str, restart: bool) -> NodeProcess:
        faults, hints = self.options.faults, self.options.hints
        up_nodes = partial(self._up_seen_by, name) if faults.failure_detector else None
        return NodeProcess(name, str(self.directory / name), self.network, self.placement,
                           skew_ms=self.skew_ms[name], memtable_bytes=faults.memtable_bytes,
                           timeout_ms=faults.timeout_ms,
                           read_before_write=faults.read_before_write, up_nodes=up_nodes,
                           service_factory=self.service_factory, restart=restart,
                           sloppy_quorum=hints.sloppy_quorum, hint_max_count=hints.max_count,
                           should_hint=self._should_hint,
                           reachable=partial(self._reachable, name),
                           handoff_per_tick=hints.handoff_per_tick, on_hint=self._hint_stored)

    def _reachable(self, holder: str, target: str) -> bool:
        """No cut between the two nodes, and the target is up (what the holder's link to
        it would say)."""
        cut = self.network.cut_links
        return (self.network.is_up(target) and (holder, target) not in cut
                and (target, holder) not in cut)

    def _up_seen_by(self, name: str) -> list[str]:
        """The perfect failure detector of ``name``: crashed nodes are down, and with
        ``detector_sees_partitions`` so are nodes a cut separates from it."""
        if self.options.hints.detector_sees_partitions:
            return [n for n in self.names if n == name or self._reachable(name, n)]
        return [n for n in self.names if self.network.is_up(n)]

    def _should_hint(self, node: str) -> bool:
        window = self.options.hints.window_ticks
        since = self.down_since.get(node)
        if not window or since is None or self.clock.now - since < window:
            return True
        self.result.hints_not_kept += 1
        return False

    def _hint_stored(self, holder: str, target: str, db: int, key: bytes,
                     siblings: Siblings) -> None:
        self.hinted.extend((target, (db, key), v) for v in siblings)

    def _count(self, process: NodeProcess) -> None:
        """Add one incarnation's counters to the result (at its crash, or at the end)."""
        result, stats = self.result, process.hints.stats
        result.siblings_dropped += process.service.stats["siblings_dropped"]
        result.sloppy_requests += process.coordinator.stats["sloppy_requests"]
        result.hints_kept_by_coordinators += process.coordinator.stats["hints_kept"]
        result.hints_stored += stats.stored
        result.hints_refused += stats.dropped
        result.hints_delivered += stats.delivered
        result.hints_expired += stats.expired

    def _crash(self, name: str, down_ticks: int | None) -> None:
        """Crash ``name``; restart it ``down_ticks`` later (None: only in phase 2)."""
        if not self.network.is_up(name):
            return
        self.network.crash(name)
        self.processes[name].crash(self.options.faults.crash_mode)
        self._count(self.processes[name])
        self.down_since[name] = self.clock.now
        self.result.crashes += 1
        if down_ticks is not None:
            self.clock.call_in(down_ticks, lambda: self._restart(name))

    def _restart(self, name: str) -> None:
        if not self.network.is_up(name):
            self.down_since.pop(name, None)
            self.processes[name] = self._start(name, restart=True)

    def _handoff_round(self) -> None:
        """Every live node delivers a batch of hints per reachable target."""
        for name in self.names:
            process = self.processes[name]
            if process.alive:
                process.handoff.tick()

    def _schedule_handoff(self) -> None:
        """Phase 1: a round every interval while faults may still be active (a periodic
        timer that ran forever would never let the run go idle)."""
        self._handoff_round()
        interval = self.options.hints.handoff_interval_ticks
        if self.clock.now + interval <= self.handoff_until:
            self.clock.call_in(interval, self._schedule_handoff)

    def pending_hints(self) -> dict[str, int]:
        """Hints pending per live holder (only holders with some)."""
        out = {}
        for name, process in self.processes.items():
            count = sum(process.hints.pending(t).count for t in process.hints.targets())
            if process.alive and count:
                out[name] = count
        return out

    def replicas_of(self, key: Key) -> list[str]:
        return list(self.placement.primaries(keyspace.token(key[1])))

    # Running -----------------------------------------------------------------------------

    def _settle(self) -> None:
        """Run until nothing is pending, committing every live engine after every event."""
        clock = self.clock
        end = clock.now + IDLE_TICKS_MAX
        while (due := clock.next_due()) is not None:
            if due > end:
                self._fail("liveness", f"not idle {IDLE_TICKS_MAX} ticks after the start")
                return
            clock.run_next()
            if not self.commit_every_event:
                continue
            for process in self.processes.values():
                if process.alive:
                    process.commit_if_needed()

    def _fail(self, check: str, detail: str) -> None:
        self.failures.append(f"{check}: {detail}")

    def run(self) -> SimResult:
        """Both phases; raises SimulationFailure naming the seed."""
        print(f"SEED={self.options.seed} OPTIONS={self.options.describe()}")
        try:
            self._schedule_workload()
            self._schedule_faults()
            self.clock.call_in(0, self._schedule_handoff)
            self._settle()
            self._raise_if_failed("phase 1 (safety)")
            self._liveness()
            self._raise_if_failed("phase 2 (liveness)")
        except SimulationFailure:
            raise
        except Exception as exc:  # an assert or error inside the cluster code
            raise SimulationFailure(f"the run raised {exc!r}\n{self._reproduce()}") from exc
        finally:
            for process in self.processes.values():
                if process.alive:
                    self._count(process)
            self.result.engine_reports = [r for p in self.processes.values()
                                          for r in p.engine_reports]
            for process in self.processes.values():
                process.close()
        self.result.trace_hash = self.trace_hash()
        return self.result

    def _reproduce(self) -> str:
        return (f"SEED={self.options.seed} OPTIONS={self.options.describe()}\n"
                f"reproduce with seed={self.options.seed}")

    def _raise_if_failed(self, phase: str) -> None:
        if self.failures:
            shown = "\n".join(self.failures[:20])
            raise SimulationFailure(f"{phase}: {len(self.failures)} violations:\n{shown}\n"
                                    f"{self._reproduce()}")

    # Phase 1: workload and faults -----------------------------------------------------------

    def _schedule_workload(self) -> None:
        workload = self.options.workload
        rng = random.Random(self.options.workload_seed)
        for i in range(workload.ops):
            kind = rng.choices(KINDS, weights=workload.weights)[0]
            op = Op(rng.randint(0, workload.span_ticks), kind, rng.choice(self.names),
                    rng.choice(self.keys), b"s%d-v%d" % (self.options.seed, i))
            self.clock.call_in(op.tick, partial(self._issue, op))

    def _schedule_faults(self) -> None:
        faults, rng, span = self.options.faults, self.fault_rng, self.options.workload.span_ticks
        for _ in range(faults.crashes):
            name, tick = rng.choice(self.names), rng.randint(0, span)
            down = rng.randint(1, faults.down_ticks_max) if rng.random() < 0.8 else None
            self.clock.call_in(tick, partial(self._crash, name, down))
        for _ in range(faults.partitions):
            tick, ticks = rng.randint(0, span), rng.randint(1, faults.partition_ticks_max)
            cut = self._draw_partition(rng)
            self.clock.call_in(tick, partial(self._partition, cut, ticks))

    def _draw_partition(self, rng: random.Random) -> list[tuple[str, str]]:
        """Directed links to cut: one node isolated, a random split, or a single link."""
        names = self.names
        kind = rng.choice(("isolate", "split", "link"))
        if kind == "link":
            src, dst = rng.sample(names, 2)
            return [(src, dst)]
        side = {rng.choice(names)} if kind == "isolate" else set(rng.sample(names, 2))
        return [(a, b) for a in names for b in names
                if (a in side) != (b in side)]

    def _partition(self, cut: list[tuple[str, str]], ticks: int) -> None:
        for src, dst in cut:
            self.network.cut(src, dst)
        self.clock.call_in(ticks, self.network.heal)  # heals every cut (episodes may overlap)

    def _issue(self, op: Op) -> None:
        if not self.network.is_up(op.node):
            self.result.refused_ops += 1  # the client cannot connect
            return
        coordinator = self.processes[op.node].coordinator
        if op.kind == "get":
            self.order += 1
            started = self.order
            coordinator.start_get(DB, op.key, self.options.read,
                                  lambda outcome: self._read_done(started, op.key, outcome))
            return
        value = None if op.kind == "tombstone" else op.value
        context = self.last_found.get(op.key) if op.kind == "context_put" else None
        built: list[Version] = []

        def on_version(version: Version) -> None:
            built.append(version)
            self.history.write((DB, op.key), version)

        def on_reply(outcome: PutOk | NoQuorum) -> None:
            if isinstance(outcome, PutOk):
                self.order += 1
                self.history.ack((DB, op.key), built[0])
                self.acked.append((self.order, op.key, built[0]))
                self.result.acked_writes += 1
                if value is None:
                    self.tombstones_acked.append((self.order, op.key, built[0]))
                    self.deleted.append(((DB, op.key), built[0]))

        coordinator.start_put(DB, op.key, value, 0, self.options.write, context, on_reply,
                              on_version)

    def _read_done(self, started: int, key: bytes, outcome: Found | NoQuorum) -> None:
        if not isinstance(outcome, Found):
            return
        self.result.reads_found += 1
        self.last_found[key] = outcome.siblings
        written = [v for k, v in self.history.written if k == (DB, key)]
        for s in outcome.siblings:  # S2
            if not any(same_version(s, w) for w in written):
                self._fail("S2 value from nowhere", f"key {key!r}: a read returned {show(s)}")
        if all(s[VALUE] is None for s in outcome.siblings) and any(
                k == key and order < started for order, k, _ in self.tombstones_acked):
            self.result.deletes_checked += 1  # D1: what this read saw deleted stays so
            self.deleted.extend(((DB, key), s) for s in outcome.siblings)
        if not self.options.read_your_writes:
            return
        before = [v for order, k, v in self.acked if k == key and order < started]
        if before:
            self.result.reads_checked += 1
        for v in before:  # S1
            if not any(same_version(s, v) or vclock.dominates(s[CLOCK], v[CLOCK])
                       for s in outcome.siblings):
                self._fail("S1 read-your-writes",
                           f"key {key!r}: a read started after {show(v)} was acked returned "
                           f"{[show(s) for s in outcome.siblings]}")

    # Phase 2: liveness ----------------------------------------------------------------------

    def _liveness(self) -> None:
        network = self.network
        network.heal()
        network.options = NetworkOptions()
        for name in self.names:
            self._restart(name)
        self._settle()
        self._drain_hints()
        self._check_handoff()
        outcomes: list[tuple[str, bytes, list[Found | NoQuorum]]] = []
        for key in self.keys:
            for name in self.names:
                box: list[Found | NoQuorum] = []
                self.processes[name].coordinator.start_get(DB, key, Level.ALL, box.append)
                outcomes.append((name, key, box))
        self._settle()
        for name, key, box in outcomes:  # L1
            if len(box) != 1 or not isinstance(box[0], Found):
                self._fail("L1 repair read", f"ALL read of {key!r} through {name}: {box}")
        state = self.state()
        for violation in check_all(self.history, state, self.replicas_of,
                                   replica_acked=self.acks.acked):  # L2-L5
            self._fail(f"L {violation.check}", str(violation))
        for violation in check_deleted_stay_deleted(self.deleted, state, self.replicas_of):
            self._fail("D1 deleted stays deleted", str(violation))
        for name, process in self.processes.items():  # L6
            if process.coordinator.active:
                self._fail("L6 quiescence", f"{name} has {len(process.coordinator.active)} "
                                            "unfinished requests")
            if process.handoff.busy:
                self._fail("L6 quiescence", f"{name} has a handoff batch in flight")
        if network.in_flight():
            self._fail("L6 quiescence", f"{network.in_flight()} packets in flight")
        if self.pending_hints():
            self._fail("H2 hints drained", f"hints pending at the end: {self.pending_hints()}")

    def _drain_hints(self) -> None:
        """Handoff rounds until no node holds a hint (every node is up, nothing is cut)."""
        for _ in range(HANDOFF_ROUNDS_MAX):
            if not self.pending_hints():
                return
            self.result.handoff_rounds += 1
            self._handoff_round()
            self._settle()
        self._fail("H2 hints drained", f"hints still pending after {HANDOFF_ROUNDS_MAX} "
                                       f"handoff rounds: {self.pending_hints()}")

    def _check_handoff(self) -> None:
        """H1, before any repair read: every hint stored or acknowledged reached its owner."""
        state = self.state()
        expected = self.hinted + self.acks.hinted
        self.result.hints_checked += len(expected)
        for violation in check_hints_delivered(expected, state):
            self._fail("H1 handoff", str(violation))

    def state(self) -> dict[str, dict[Key, Siblings]]:
        """What every node's engine holds, read directly (not through the cluster)."""
        out: dict[str, dict[Key, Siblings]] = {}
        for name, process in self.processes.items():
            held: dict[Key, Siblings] = {}
            for ekey, siblings in process.replica.scan(b"", keyspace.db_end(DB)):
                assert siblings is not None, f"{name}: damaged value at {ekey!r}"
                held[(ekey[0], keyspace.user_key(ekey))] = siblings
            out[name] = held
        return out

    def trace_hash(self) -> str:
        digest = hashlib.sha256()
        for e in self.network.trace:
            p = e.packet
            digest.update(f"{e.tick} {e.event} {p.src}>{p.dst} {p.request_id} {p.is_reply} "
                          f"{p.src_incarnation} {e.reason} {p.message!r}\n".encode())
        for key, version in self.history.written + self.history.acked:
            digest.update(f"{key!r} {show(version)}\n".encode())
        return digest.hexdigest()


def run_seed(seed: int, directory: Path,
             service_factory: ServiceFactory = ReplicaService,
             options: Callable[[int], SimOptions] = SimOptions.swarm,
             commit_every_event: bool = True) -> SimResult:
    """Run the swarm options of ``seed`` in ``directory``; SimulationFailure on a violation."""
    return Simulator(options(seed), directory, service_factory, commit_every_event).run()
