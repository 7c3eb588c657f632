"""Demo: the quorum cores over the simulated network, with real replicas, checked by the
history checkers. It proves the pieces fit and shows what put_fsm/get_fsm must do.

Three replicas are ``cluster.replica.Replica`` over a real ``engine.db.Engine`` in a tmp dir;
two coordinators run a toy coordinator (``ToyCoordinator``: a read with GetCore, a new
version descending what it read, a write with PutCore, read repair from final_action) as
coroutines driven by ``SimLoop.spawn``, over a ``SimNetwork`` with loss, duplication,
reordering and a partition. Then the network heals, a read of every key with R = ALL repairs
the replicas, and the checkers examine what each replica holds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from cluster import keys as keyspace
from cluster import vclock
from cluster.consistency import Failed, Requirement
from cluster.get_core import Found, GetCore, ReadRepair
from cluster.messages import Message, Read, ReadReply, Write, WriteAck
from cluster.put_core import ACKED, PutCore, PutOk, PutResult
from cluster.replica import Replica
from cluster.sibling_codec import decode, encode
from cluster.transport import PeerTimeout, RemoteError
from cluster.version import CLOCK, TIMESTAMP_MS, Siblings, Version, limit, merge
from engine.db import Engine
from tests.sim.checkers import AckObserver, History, Key, check_all
from tests.sim.sim_clock import SimClock
from tests.sim.sim_network import NetworkOptions, SimNetwork, SimTransport

REPLICAS = ("r1", "r2", "r3")
TARGETS = {name: "dc1" for name in REPLICAS}
TIMEOUT_S = 0.2
SIBLINGS_MAX = 64


def replica_handler(replica: Replica, clock: SimClock) -> Callable[[str, Message], Message]:
    """The replica side of READ and WRITE: what the node's peer handler will do."""
    def handle(sender: str, message: Message) -> Message:
        if isinstance(message, Read):
            return ReadReply(replica.raw(keyspace.engine_key(message.db, message.key)))
        assert isinstance(message, Write), message
        ekey = keyspace.engine_key(message.db, message.key)
        old = replica.read(ekey)
        new, _ = limit(merge(old, decode(message.siblings)), SIBLINGS_MAX)
        if new != old:
            replica.apply(message.db, ekey, old, new, clock.wall_ms())
        return WriteAck()
    return handle


class ToyCoordinator:
    """A coordinator in 60 lines: the shape put_fsm/get_fsm will have, minus the FSM table."""

    def __init__(self, transport: SimTransport, clock: SimClock, history: History,
                 remember_counters: bool = True) -> None:
        self.transport = transport
        self.clock = clock
        self.actor = transport.node_id.encode()
        self.history = history
        # The highest counter this actor issued per key. Without it, a coordinator whose read
        # missed its own last write reuses the counter (kv679): see the negative control.
        self.issued: dict[Key, int] = {}
        self.remember_counters = remember_counters
        self.outcomes: list[str] = []

    async def get(self, key: Key, requirement: Requirement) -> Found | str:
        core: GetCore[str] = GetCore(TARGETS, requirement)
        enough: asyncio.Future[None] = self.transport.network.loop.create_future()

        def absorb(replica: str, future: asyncio.Future[Message]) -> None:
            error = future.exception()
            if error is not None:
                assert isinstance(error, PeerTimeout | RemoteError), error
                core.add_result(replica, Failed(type(error).__name__))
            else:
                reply = future.result()
                assert isinstance(reply, ReadReply), reply
                core.add_result(replica, decode(reply.siblings) if reply.siblings else ())
            if core.enough() and not enough.done():
                enough.set_result(None)
            if core.done():  # late replies included: now decide the read repair
                action = core.final_action()
                if isinstance(action, ReadRepair):
                    for target in action.targets:
                        self.transport.request(target, Write(key[0], key[1],
                                                             encode(action.merged)), TIMEOUT_S)

        for replica in REPLICAS:
            self.transport.request(replica, Read(*key), TIMEOUT_S).add_done_callback(
                partial(absorb, replica))
        await enough
        response = core.response()
        return response if isinstance(response, Found) else response.message

    async def put(self, key: Key, value: bytes, r: Requirement, w: Requirement) -> None:
        read = await self.get(key, r)
        if isinstance(read, str):
            self.outcomes.append(read)
            return
        version = self.new_version(key, read.siblings, value)
        self.history.write(key, version)
        core: PutCore[str] = PutCore(TARGETS, w)
        enough: asyncio.Future[None] = self.transport.network.loop.create_future()

        def absorb(replica: str, future: asyncio.Future[Message]) -> None:
            result: PutResult = ACKED if future.exception() is None else Failed("no ack")
            core.add_result(replica, result)
            if core.enough() and not enough.done():
                enough.set_result(None)

        for replica in REPLICAS:
            self.transport.request(replica, Write(key[0], key[1], encode((version,))),
                                   TIMEOUT_S).add_done_callback(partial(absorb, replica))
        await enough
        response = core.response()
        if isinstance(response, PutOk):
            self.history.ack(key, version)
            self.outcomes.append("OK")
        else:
            self.outcomes.append(response.message)

    def new_version(self, key: Key, seen: Siblings, value: bytes) -> Version:
        """DESIGN.md: descend every version read, bump this coordinator's own entry, and keep
        this actor's counter above every counter it ever issued for the key."""
        now_ms = self.clock.wall_ms()
        clocks = [v[CLOCK] for v in seen]
        if self.remember_counters and key in self.issued:
            clocks.append({self.actor: (self.issued[key], 0)})
        clock = vclock.increment(vclock.merge(clocks), self.actor, now_ms)
        self.issued[key] = clock[self.actor][0]
        timestamp_ms = max([now_ms, *(v[TIMESTAMP_MS] for v in seen)])
        return (clock, timestamp_ms, 0, self.actor, value)


class World:
    def __init__(self, tmp_path: Path, seed: int, options: NetworkOptions,
                 remember_counters: bool = True) -> None:
        self.clock = SimClock()
        self.network = SimNetwork(self.clock, random.Random(seed), options)
        self.history = History()
        self.acks = AckObserver()
        self.network.on_message(self.acks)
        self.engines: list[Engine] = []
        self.replicas: dict[str, Replica] = {}
        for name in REPLICAS:
            engine = Engine.open(str(tmp_path / name))
            self.engines.append(engine)
            replica = Replica(engine, databases=1, tombstone_grace_ms=10**9,
                              reporter=lambda text: None)
            self.replicas[name] = replica
            self.network.attach(name, replica_handler(replica, self.clock))
        self.coordinators = {
            name: ToyCoordinator(self.network.attach(name, refuse), self.clock, self.history,
                                 remember_counters)
            for name in ("c1", "c2")}

    def state(self) -> dict[str, dict[Key, Siblings]]:
        out: dict[str, dict[Key, Siblings]] = {}
        for name, replica in self.replicas.items():
            held = {}
            for ekey, siblings in replica.scan(b"", keyspace.db_end(0)):
                assert siblings is not None
                held[(ekey[0], keyspace.user_key(ekey))] = siblings
            out[name] = held
        return out

    def repair_all(self, keys: list[Key]) -> None:
        """Liveness phase: no faults, read every key with R = ALL (read repair converges)."""
        self.network.heal()
        self.network.options = NetworkOptions()
        self.clock.run_until_idle(10_000)
        for key in keys:
            self.network.loop.spawn(self.coordinators["c1"].get(key, Requirement(3)))
        assert self.clock.run_until_idle(10_000)

    def start_put(self, coordinator: ToyCoordinator, key: Key, value: bytes) -> None:
        self.network.loop.spawn(coordinator.put(key, value, QUORUM, QUORUM))

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


def refuse(sender: str, message: Message) -> Message:
    raise RemoteError(6, "a coordinator serves no requests here")


KEYS: list[Key] = [(0, b"apple"), (0, b"pear"), (0, b"plum")]
QUORUM = Requirement(2)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_concurrent_writes_with_loss_then_heal_converge(tmp_path: Path, seed: int) -> None:
    options = NetworkOptions(delay_ticks_min=1, delay_ticks_max=40, drop_probability=0.1,
                             duplicate_probability=0.05, reorder=True)
    world = World(tmp_path, seed, options)
    workload = random.Random(seed)
    try:
        for i in range(60):
            coordinator = world.coordinators[workload.choice(["c1", "c2"])]
            key = workload.choice(KEYS)
            world.clock.call_in(workload.randint(0, 300), partial(
                world.start_put, coordinator, key, b"v%d" % i))
        world.clock.call_in(150, lambda: world.network.partition({"c2"}, {"r1", "r2"}))
        world.clock.call_in(250, world.network.heal)
        assert world.clock.run_until_idle(100_000)
        outcomes = [o for c in world.coordinators.values() for o in c.outcomes]
        assert len(outcomes) == 60
        assert "OK" in outcomes
        assert any(o.startswith("NOQUORUM") for o in outcomes), "the faults never bit"
        world.repair_all(KEYS)
        state = world.state()
        violations = check_all(world.history, state, replica_acked=world.acks.acked)
        assert violations == [], f"seed {seed}:\n" + "\n".join(map(str, violations))
        assert all(state[r].keys() == set(KEYS) for r in REPLICAS)
        siblings = {key: len(s) for key, s in state["r1"].items()}
        print(f"seed {seed}: {outcomes.count('OK')} OK, {len(outcomes) - outcomes.count('OK')} "
              f"NOQUORUM, {len(world.history.written)} versions written, siblings {siblings}, "
              f"{len(world.network.trace)} trace events, {world.clock.now} ticks")
        if seed == 1:  # concurrent writes through two coordinators became siblings
            assert max(len(s) for s in state["r1"].values()) >= 2
    finally:
        world.close()


def test_negative_control_reused_counter_loses_an_acked_write(tmp_path: Path) -> None:
    """Without a per-key counter floor, a coordinator whose read misses its own last write
    reuses its counter; the checker must catch the acknowledged write that vanishes."""
    for remember, expected in ((False, ["no_lost_acked_write"] * 3), (True, [])):
        directory = tmp_path / str(remember)
        world = World(directory, 7, NetworkOptions(delay_ticks_min=1, delay_ticks_max=1),
                      remember_counters=remember)
        c1 = world.coordinators["c1"]
        key = KEYS[0]
        try:
            world.network.partition({"c1"}, {"r3"})
            world.network.loop.spawn(c1.put(key, b"first", Requirement(2), Requirement(2)))
            world.clock.run_until_idle(10_000)
            world.network.heal()
            world.network.partition({"c1"}, {"r1", "r2"})
            world.network.loop.spawn(c1.put(key, b"second", Requirement(1), Requirement(1)))
            world.clock.run_until_idle(10_000)
            assert c1.outcomes == ["OK", "OK"]
            world.repair_all([key])
            violations = check_all(world.history, world.state())
            assert [v.check for v in violations] == expected, violations
        finally:
            world.close()
