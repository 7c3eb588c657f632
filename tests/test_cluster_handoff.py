"""cluster/handoff.py: hint delivery over a Transport, in virtual time (SimClock/SimNetwork)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.handoff import Handoff
from cluster.hints import HintStore
from cluster.messages import ErrorCode, Message, Write, WriteAck
from cluster.sibling_codec import decode
from cluster.transport import RemoteError
from cluster.version import Siblings, Version, merge
from engine.db import Engine
from engine.options import EngineOptions
from tests.sim.sim_clock import SimClock
from tests.sim.sim_network import NetworkOptions, SimNetwork

TIMEOUT_S = 0.05  # 50 ticks; the network delays 1-10 ticks


def version(actor: bytes, counter: int, value: bytes = b"v") -> Version:
    return ({actor: (counter, 0)}, 1000 + counter, 0, actor, value)


class Owner:
    """The hints' owner: a replica that merges every WRITE it gets (or refuses them)."""

    def __init__(self) -> None:
        self.held: dict[bytes, Siblings] = {}
        self.writes = 0
        self.refuse = False

    def handle(self, peer: str, message: Message) -> Message:
        assert isinstance(message, Write) and message.hint_for is None, message
        self.writes += 1
        if self.refuse:
            raise RemoteError(ErrorCode.OVERLOADED, "busy")
        self.held[message.key] = merge(self.held.get(message.key, ()), decode(message.siblings))
        return WriteAck()


class World:
    def __init__(self, engine: Engine, per_tick: int = 3) -> None:
        self.clock = SimClock()
        self.network = SimNetwork(self.clock, random.Random(7), NetworkOptions())
        self.owner = Owner()
        self.network.attach("owner", self.owner.handle)
        transport = self.network.attach("holder", lambda peer, m: WriteAck())
        self.store = HintStore.open(engine, self.clock.wall_ms, ttl_ms=10_000)
        self.reachable = True
        self.commits = 0
        self.delivered: list[tuple[str, int, int]] = []
        self.handoff = Handoff(self.store, transport, per_tick=per_tick, timeout_s=TIMEOUT_S,
                               reachable=lambda target: self.reachable, commit=self._commit,
                               delivered=lambda *a: self.delivered.append(a))

    def _commit(self) -> None:
        self.commits += 1

    def add(self, keys: range, counter: int = 1) -> None:
        for i in keys:
            assert self.store.add("owner", 0, b"k%d" % i, (version(b"a", counter),))

    def settle(self) -> None:
        assert self.clock.run_until_idle(10_000)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = Engine.open(str(tmp_path / "e"), EngineOptions(fsync="no"))
    try:
        yield db
    finally:
        db.close()


def test_batches_are_bounded_one_in_flight_per_target_then_removed(engine: Engine) -> None:
    world = World(engine, per_tick=3)
    world.add(range(7))
    assert world.handoff.tick() == 3
    assert world.handoff.tick() == 0  # Rule 1: the first batch is still in flight
    assert world.handoff.busy and len(world.handoff.in_flight()) == 3
    world.settle()
    assert world.owner.writes == 3 and world.store.pending("owner").count == 4
    assert world.commits == 1 and world.delivered == [("owner", 3, 3)]
    assert not world.handoff.busy
    for _ in range(2):
        world.handoff.tick()
        world.settle()
    assert world.store.pending("owner").count == 0
    assert world.store.stats.delivered == 7
    assert sorted(world.owner.held) == sorted(b"k%d" % i for i in range(7))
    assert world.handoff.stats.removed == 7 and world.commits == 3
    assert world.handoff.tick() == 0  # nothing left


def test_an_unreachable_target_is_not_contacted(engine: Engine) -> None:
    world = World(engine)
    world.add(range(2))
    world.reachable = False
    assert world.handoff.tick() == 0
    world.settle()
    assert world.owner.writes == 0 and world.store.pending("owner").count == 2


def test_a_failed_delivery_keeps_the_hint_for_a_later_tick(engine: Engine) -> None:
    world = World(engine)
    world.add(range(2))
    world.network.cut("holder", "owner")  # the writes are lost: timeouts
    world.handoff.tick()
    world.settle()
    assert world.store.pending("owner").count == 2 and world.commits == 0
    assert world.handoff.stats.failed == 2 and not world.handoff.busy
    world.network.heal()
    world.owner.refuse = True  # an error reply is a failure too
    world.handoff.tick()
    world.settle()
    assert world.store.pending("owner").count == 2 and world.handoff.stats.failed == 4
    world.owner.refuse = False
    world.handoff.tick()
    world.settle()
    assert world.store.pending("owner").count == 0 and len(world.owner.held) == 2


def test_a_hint_merged_during_its_delivery_stays_and_goes_again(engine: Engine) -> None:
    world = World(engine)
    world.add(range(1))
    world.handoff.tick()
    world.add(range(1), counter=2)  # a newer version merged into the hint in flight
    world.settle()
    assert world.store.pending("owner").count == 1  # hints.py invariant 3
    assert world.owner.held[b"k0"] == (version(b"a", 1),)
    world.handoff.tick()
    world.settle()
    assert world.store.pending("owner").count == 0
    assert world.owner.held[b"k0"] == (version(b"a", 2),)


def test_a_batch_completing_after_close_touches_nothing(engine: Engine) -> None:
    world = World(engine)
    world.add(range(2))
    world.handoff.tick()
    world.handoff.close()
    world.settle()
    assert world.owner.writes == 2  # delivered, but the holder was closing
    assert world.store.pending("owner").count == 2 and world.commits == 0
    assert world.handoff.tick() == 0 and not world.handoff.busy


def test_batches_walk_the_hints_round_robin(engine: Engine) -> None:
    """A hint that keeps failing does not stop the others behind it: each tick resumes after
    the last hint sent, and the walk starts over at the end."""
    world = World(engine, per_tick=2)
    world.add(range(5))
    order = [h.key for h in world.store.batch("owner", 10)]  # engine key order
    seen: list[list[bytes]] = []
    for _ in range(3):
        world.network.cut("holder", "owner")
        world.handoff.tick()
        seen.append([h.key for h in world.handoff.batches["owner"].hints])
        world.settle()
    assert seen == [order[0:2], order[2:4], order[4:]]
    world.network.heal()
    world.handoff.tick()
    assert [h.key for h in world.handoff.batches["owner"].hints] == order[0:2]


def test_expired_hints_are_dropped_not_delivered(engine: Engine) -> None:
    world = World(engine)
    world.add(range(2))
    world.clock.advance(10_001)  # past the hints' ttl
    assert world.handoff.tick() == 0
    world.settle()
    assert world.store.stats.expired == 2 and world.store.pending("owner").count == 0
    assert world.owner.writes == 0


def test_per_tick_follows_the_rate_and_interval() -> None:
    assert Handoff.per_tick_of(1000, 1.0) == 1000
    assert Handoff.per_tick_of(1000, 0.05) == 50
    assert Handoff.per_tick_of(1, 0.1) == 1  # never zero: handoff always progresses
