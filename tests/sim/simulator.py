"""The swarm simulator (STYLE rule 8; TigerBeetle's VOPR): one seed draws a whole cluster run,
a safety phase under faults, then a liveness phase that must converge.

Theory of operation. ``SimOptions.swarm(seed)`` draws everything from ``random.Random(seed)``:
the node count (3-5), N (1..min(3, nodes)), the read and write consistency levels, the
workload (size, key space of 1-4 keys so writes conflict, mix of put / get / tombstone put /
put with the context of an earlier read), every network fault probability
(``NetworkOptions.swarm``), partitions (isolate a node, split the cluster, cut one directed
link), per-node wall-clock skew, the request timeout, whether coordinators get a perfect
failure detector, the engines' memtable size, and a crash/restart schedule. Sub-seeds for the
ring, the network, the workload and the faults come from the same generator, so the seed
alone replays the run. Every node is a real ``Engine`` in its own directory under a
``Replica``, a ``ReplicaService`` and a ``Coordinator`` (tests/sim/sim_process.py); a crashed
node's engine is closed (or its files abandoned) and reopened from that directory, which
runs the engine's recovery.

Phase 1 (safety): the workload runs under faults, then the run goes idle. Checked as it runs:
- S1, read-your-writes, asserted exactly when ``r + w > n`` (the counts the drawn levels
  require of the key's N primaries): a read that met its requirement and started after a
  write to the same key was acknowledged to its client (PutOk) returns that version or one
  whose clock dominates it. Why this is what the design promises and no more: membership is
  static and there is no sloppy quorum (issue 6), so the W acks and the R answers come from
  the same N primaries and two such sets intersect; a replica never loses what it merged,
  because a node crash here is a process crash (the engine commits after every event,
  before any reply can leave; sim_process.py "Durability model"), so crashes of the read's
  replicas in between do not void it. It would not hold, and is not asserted, with r + w <=
  n; it would not hold with a data-losing crash (power loss with fsync "no", a wiped
  directory) or a preference list that changes, neither of which the simulator produces.
- S2, no value from nowhere: every version a successful read returns is one a client wrote.
Phase 2 (liveness): heal every link, restart every crashed node, clear every fault, let the
run go idle, then read every key with ALL from every node (read repair is the only repair
there is: anti-entropy and hinted handoff are issue 6), let it go idle again, and check with
tests/sim/checkers.py, over what each node's engine holds:
- L1, every ALL read succeeds; L2, the key's N primaries hold the same sibling set; L3, no
  acknowledged write is lost: every version a client was told OK for, and every version a
  replica acknowledged (``AckObserver``), is on every primary or dominated there; L4,
  siblings are pairwise concurrent; L5, no value from nowhere; L6, nothing is left running
  (no FSM, nothing in flight).

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
from cluster.version import CLOCK, Siblings, Version
from tests.sim.checkers import AckObserver, History, Key, check_all, same_version, show
from tests.sim.sim_clock import SimClock
from tests.sim.sim_network import NetworkOptions, SimNetwork
from tests.sim.sim_process import NodeProcess, ServiceFactory

DB = 0
TOKENS_PER_NODE = 8
IDLE_TICKS_MAX = 10_000_000  # a run that is not idle this long after its last event livelocked
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

    @property
    def r(self) -> int:
        return required(self.read, {"dc1": self.n}, "dc1").total

    @property
    def w(self) -> int:
        return required(self.write, {"dc1": self.n}, "dc1").total

    @property
    def read_your_writes(self) -> bool:
        """S1 is asserted exactly in these runs (module docstring)."""
        return self.r + self.w > self.n

    def describe(self) -> str:
        return (f"nodes={self.nodes} N={self.n} R={to_text(self.read)}({self.r}) "
                f"W={to_text(self.write)}({self.w}) {self.workload} {self.faults}")

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
        return cls(seed, nodes, n, read, write, workload, faults, rng.getrandbits(64),
                   rng.getrandbits(64), rng.getrandbits(64), rng.getrandbits(64))


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
        self.processes = {name: self._start(name, restart=False) for name in self.names}

    # Nodes -------------------------------------------------------------------------------

    def _start(self, name: str, restart: bool) -> NodeProcess:
        faults = self.options.faults
        up_nodes = ((lambda: [n for n in self.names if self.network.is_up(n)])
                    if faults.failure_detector else None)
        return NodeProcess(name, str(self.directory / name), self.network, self.placement,
                           skew_ms=self.skew_ms[name], memtable_bytes=faults.memtable_bytes,
                           timeout_ms=faults.timeout_ms,
                           read_before_write=faults.read_before_write, up_nodes=up_nodes,
                           service_factory=self.service_factory, restart=restart)

    def _crash(self, name: str, down_ticks: int | None) -> None:
        """Crash ``name``; restart it ``down_ticks`` later (None: only in phase 2)."""
        if not self.network.is_up(name):
            return
        self.network.crash(name)
        self.processes[name].crash(self.options.faults.crash_mode)
        self.result.siblings_dropped += self.processes[name].service.stats["siblings_dropped"]
        self.result.crashes += 1
        if down_ticks is not None:
            self.clock.call_in(down_ticks, lambda: self._restart(name))

    def _restart(self, name: str) -> None:
        if not self.network.is_up(name):
            self.processes[name] = self._start(name, restart=True)

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
            self._settle()
            self._raise_if_failed("phase 1 (safety)")
            self._liveness()
            self._raise_if_failed("phase 2 (liveness)")
        except SimulationFailure:
            raise
        except Exception as exc:  # an assert or error inside the cluster code
            raise SimulationFailure(f"the run raised {exc!r}\n{self._reproduce()}") from exc
        finally:
            self.result.siblings_dropped += sum(p.service.stats["siblings_dropped"]
                                                for p in self.processes.values() if p.alive)
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
        for name, process in self.processes.items():  # L6
            if process.coordinator.active:
                self._fail("L6 quiescence", f"{name} has {len(process.coordinator.active)} "
                                            "unfinished requests")
        if network.in_flight():
            self._fail("L6 quiescence", f"{network.in_flight()} packets in flight")

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
