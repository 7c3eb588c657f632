"""A deterministic simulation of gossip and failure detection: many nodes, one process,
virtual time.

Theory of operation. Every node is a ``cluster.gossip.Gossiper`` plus a
``cluster.failure_detector.FailureDetector`` on one shared ``SimClock`` (1 tick = 1 ms). A
node's gossip timer fires every ``interval_ms`` (from a random phase, each period stretched
by up to ``timer_jitter_ms``, as a loaded event loop would); each round it checks its
detector, ticks its gossiper and sends a SYN to each target. The network delivers each
message after a uniform delay in ``[delay_ms_min, delay_ms_max]``, drops it with
``drop_probability`` and across a cut link, and never delivers to or from a crashed node.
With ``wire`` on, every message goes through ``to_wire`` / msgpack / ``from_wire``, so the
codec is exercised exactly as a real peer would use it. This is the wiring ClusterNode needs,
in miniature: heartbeats the gossiper reports (``Applied.alive``) feed the detector, and the
detector's available set is the gossiper's live set. With ``tombstone_s`` set, each round
first drops the tombstones gossiped that long (``Gossiper.expire``), timed by the sim clock.

Invariants:
1. One seed gives one run: every random choice comes from ``random.Random(seed)`` (network)
   or per-node generators derived from it; nodes and links are iterated in sorted order.
2. Every node's detector transitions are recorded with their virtual time (``transitions``),
   so the tests can check when and whether convictions happened.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import msgpack

from cluster.departures import Departures
from cluster.endpoint_state import Address, AppField, EndpointState, FieldValue, Status
from cluster.failure_detector import DetectorOptions, FailureDetector, Liveness, Transition
from cluster.gossip import Ack, Ack2, Applied, Gossiper, Syn
from tests.sim.sim_clock import SimClock

Message = Syn | Ack | Ack2


@dataclass(frozen=True, slots=True)
class GossipSimOptions:
    nodes: int = 20
    seeds: int = 2  # the first ``seeds`` nodes' addresses are every node's seed list
    interval_ms: int = 1000
    timer_jitter_ms: int = 20
    delay_ms_min: int = 1
    delay_ms_max: int = 30
    drop_probability: float = 0.0
    tokens_per_node: int = 8
    wire: bool = True
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    tombstone_s: int = 0  # gossip-tombstone-seconds (0: tombstones kept forever)


def address_of(index: int) -> Address:
    return (f"127.0.1.{index + 1}", 17000)


def node_name(index: int) -> str:
    return f"node{index:02d}"


class SimNode:
    def __init__(self, sim: GossipSim, index: int, generation: int,
                 tokens: tuple[int, ...]) -> None:
        self.sim = sim
        self.index = index
        self.node_id = node_name(index)
        self.address = address_of(index)
        self.tokens = tokens
        app: dict[AppField, FieldValue] = {
            AppField.STATUS: Status.NORMAL,
            AppField.PEER_ADDRESS: self.address,
            AppField.CLIENT_ADDRESS: (self.address[0], 6379),
            AppField.DATACENTER: "dc1",
            AppField.RACK: f"rack{index % 3}",
            AppField.TOKENS: tokens,
            AppField.LOAD: 0,
        }
        self.gossiper = Gossiper(self.node_id, generation, app,
                                 random.Random(sim.rng.getrandbits(64)), sim.seed_addresses,
                                 wall_ms=sim.clock.wall_ms,
                                 departures=Departures(sim.options.tombstone_s))
        self.detector = FailureDetector(sim.clock, sim.options.detector)
        self.rng = random.Random(sim.rng.getrandbits(64))
        self.alive = True
        self.rounds = 0
        phase = self.rng.randrange(sim.options.interval_ms)
        self.sim.clock.call_in(phase, self.round)

    def round(self) -> None:
        if not self.alive:
            return
        self.rounds += 1
        for transition in self.detector.check():
            self.sim.record(self, transition)
        self.absorb(self.gossiper.expire())
        for target in self.gossiper.tick(self.detector.available()):
            self.sim.send(self, target.address, self.gossiper.make_syn())
        opts = self.sim.options
        self.sim.clock.call_in(opts.interval_ms + self.rng.randint(0, opts.timer_jitter_ms),
                               self.round)

    def receive(self, sender: SimNode, message: Message) -> None:
        if isinstance(message, Syn):
            self.sim.send(self, sender.address, self.gossiper.on_syn(message))
        elif isinstance(message, Ack):
            ack2, applied = self.gossiper.on_ack(message)
            self.absorb(applied)
            self.sim.send(self, sender.address, ack2)
        else:
            self.absorb(self.gossiper.on_ack2(message))

    def absorb(self, applied: Applied) -> None:
        for node_id in applied.alive:
            transition = self.detector.heartbeat(node_id)
            if transition is not None:
                self.sim.record(self, transition)
        if applied.self_contested:
            self.sim.contested.append((self.sim.clock.now, self.node_id))
        for node_id in applied.dropped:
            self.detector.remove(node_id)


class GossipSim:
    def __init__(self, seed: int, options: GossipSimOptions | None = None) -> None:
        self.seed = seed
        self.options = options or GossipSimOptions()
        self.rng = random.Random(seed)
        self.clock = SimClock()
        self.seed_addresses = tuple(address_of(i) for i in range(self.options.seeds))
        self.cut: set[tuple[int, int]] = set()
        self.transitions: list[tuple[int, str, Transition]] = []  # (tick, observer, change)
        self.contested: list[tuple[int, str]] = []
        self.messages = 0
        self.nodes: list[SimNode] = []
        self._by_address: dict[Address, SimNode] = {}
        for index in range(self.options.nodes):
            tokens = tuple(sorted({self.rng.getrandbits(64)
                                   for _ in range(self.options.tokens_per_node)}))
            self._add(SimNode(self, index, self.generation_now(), tokens))

    def _add(self, node: SimNode) -> None:
        if node.index < len(self.nodes):
            self.nodes[node.index] = node
        else:
            self.nodes.append(node)
        self._by_address[node.address] = node

    def generation_now(self, previous: int = 0) -> int:
        """Start time in seconds, past any previous generation (the Gossiper's REQUIRES)."""
        return max(self.clock.wall_ms() // 1000, previous + 1)

    # Network -----------------------------------------------------------------------------

    def send(self, src: SimNode, address: Address, message: Message) -> None:
        dst = self._by_address[address]
        opts = self.options
        self.messages += 1
        if opts.wire:
            message = _round_trip(message)
        if self.rng.random() < opts.drop_probability:
            return
        delay = self.rng.randint(opts.delay_ms_min, opts.delay_ms_max)

        def deliver() -> None:
            target = self._by_address[address]
            if (target is dst and dst.alive and src.alive
                    and (src.index, dst.index) not in self.cut):
                dst.receive(src, message)

        self.clock.call_in(delay, deliver)

    def isolate(self, index: int) -> None:
        for other in range(len(self.nodes)):
            if other != index:
                self.cut |= {(index, other), (other, index)}

    def heal(self) -> None:
        self.cut.clear()

    def crash(self, index: int) -> None:
        self.nodes[index].alive = False

    def restart(self, index: int) -> SimNode:
        """A new process for node ``index``: same id, address and tokens, a new generation."""
        old = self.nodes[index]
        assert not old.alive
        node = SimNode(self, index, self.generation_now(old.gossiper.me.generation),
                       old.tokens)
        self._add(node)
        return node

    # Observation -------------------------------------------------------------------------

    def record(self, observer: SimNode, transition: Transition) -> None:
        self.transitions.append((self.clock.now, observer.node_id, transition))

    def run_for(self, ms: int) -> None:
        self.clock.advance(ms)

    def run_until(self, condition: Callable[[], bool], ms_max: int, step_ms: int = 10) -> int:
        """Run until ``condition()``, checking every ``step_ms``; the ticks it took (-1 if
        it still did not hold after ``ms_max``)."""
        start = self.clock.now
        while not condition():
            if self.clock.now - start >= ms_max:
                return -1
            self.clock.advance(step_ms)
        return self.clock.now - start

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.alive]

    def converged(self, nodes: list[SimNode] | None = None) -> bool:
        """Every node in ``nodes`` (default: live ones) holds the same generation and fields
        of every node, and knows them all (heartbeats are left out: they never stop)."""
        nodes = nodes if nodes is not None else self.live_nodes()
        views = [_app_view(n.gossiper.states) for n in nodes]
        return len(views[0]) >= len(nodes) and all(v == views[0] for v in views[1:])

    def downs(self) -> list[tuple[int, str, Transition]]:
        return [t for t in self.transitions if t[2].to is Liveness.DOWN]


def _app_view(states: Mapping[str, EndpointState]) -> dict[str, object]:
    return {node_id: (s.generation, {tag: v.value for tag, v in s.fields.items()})
            for node_id, s in states.items()}


def _round_trip(message: Message) -> Message:
    data = msgpack.packb(message.to_wire(), use_bin_type=True)
    obj = msgpack.unpackb(data, raw=False)
    if isinstance(message, Syn):
        return Syn.from_wire(obj)
    if isinstance(message, Ack):
        return Ack.from_wire(obj)
    return Ack2.from_wire(obj)
