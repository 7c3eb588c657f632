"""Coordinator and replica service: 1 to 5 nodes with real Replicas over real Engines in tmp
dirs, over tests/sim's SimNetwork in virtual time, checked by tests/sim/checkers.py.

``SimCluster`` is the harness the put/get FSM tests share.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cluster import keys as keyspace
from cluster import tokens as node_tokens
from cluster import vclock
from cluster.consistency import ConsistencyError, Level, NoQuorum
from cluster.coordinator import Coordinator, CoordinatorOptions, Deleted
from cluster.get_core import Found
from cluster.messages import (
    CondWrite,
    ErrorCode,
    Ping,
    Read,
    ReadReply,
    Write,
    WriteAck,
)
from cluster.preflist import Placement, Replication
from cluster.put_core import PutOk
from cluster.replica import Replica
from cluster.replica_service import ReplicaService
from cluster.ring import NodeInfo, Ring
from cluster.sibling_codec import decode, encode
from cluster.transport import RemoteError
from cluster.version import CLOCK, VALUE, Siblings, Version, winner
from engine.db import Engine
from tests.sim.checkers import AckObserver, History, Key, check_all, same_version
from tests.sim.sim_clock import SimClock
from tests.sim.sim_network import NetworkOptions, SimNetwork
from tests.test_cluster_sibling_codec import wide_encoding

T = TypeVar("T")
TIMEOUT_MS = 200  # ticks are 1 ms: a request deadline is 200 ticks
QUORUM = Level.QUORUM


class SimCluster:
    """``names`` nodes, each a Replica over an Engine, a ReplicaService and a Coordinator."""

    def __init__(self, tmp_path: Path, names: list[str], seed: int = 1, n: int = 3,
                 options: NetworkOptions | None = None,
                 coordinator_options: CoordinatorOptions | None = None) -> None:
        self.clock = SimClock()
        self.network = SimNetwork(self.clock, random.Random(seed), options)
        self.history = History()
        self.acked_at: list[tuple[int, bytes, Version]] = []  # (tick, key, version) told OK
        self.acks = AckObserver()
        self.network.on_message(self.acks)
        rng = random.Random(seed)
        infos = [NodeInfo(name, node_tokens.generate(rng, 8)) for name in names]
        self.placement = Placement(Ring.build(infos), Replication.simple(n))
        self.engines: dict[str, Engine] = {}
        self.services: dict[str, ReplicaService] = {}
        self.coordinators: dict[str, Coordinator] = {}
        options_c = coordinator_options or CoordinatorOptions(request_timeout_ms=TIMEOUT_MS)
        for name in names:
            engine = self.engines[name] = Engine.open(str(tmp_path / name))
            replica = Replica(engine, databases=16, tombstone_grace_ms=10**9,
                              reporter=lambda text: None)
            service = self.services[name] = ReplicaService(replica, self.clock)
            transport = self.network.attach(name, service.handle)
            self.coordinators[name] = Coordinator(
                self.placement, service, transport, self.clock, name.encode(),
                self.network.loop.create_future, options_c,
                up_nodes=lambda: [n for n in names if self.network.is_up(n)])

    def replicas_of(self, key: Key) -> list[str]:
        return list(self.placement.primaries(keyspace.token(key[1])))

    def run(self, future: asyncio.Future[T], ticks_max: int = 100_000) -> T:
        assert self.clock.run_while(lambda: not future.done(), ticks_max), "never answered"
        return future.result()

    def settle(self) -> None:
        assert self.clock.run_until_idle(1_000_000)

    def put(self, node: str, key: bytes, value: bytes | None, level: Any = QUORUM,
            context: Siblings | None = None, db: int = 0) -> asyncio.Future[PutOk | NoQuorum]:
        """A put recorded in the history (written, and acked when the client is told OK)."""
        future: asyncio.Future[PutOk | NoQuorum] = self.network.loop.create_future()
        built: list[Version] = []

        def on_version(version: Version) -> None:
            built.append(version)
            self.history.write((db, key), version)

        def on_reply(outcome: PutOk | NoQuorum) -> None:
            if isinstance(outcome, PutOk):
                self.history.ack((db, key), built[0])
                self.acked_at.append((self.clock.now, key, built[0]))
            future.set_result(outcome)

        self.coordinators[node].start_put(db, key, value, 0, level, context, on_reply,
                                          on_version)
        return future

    def state(self) -> dict[str, dict[Key, Siblings]]:
        out: dict[str, dict[Key, Siblings]] = {}
        for name, service in self.services.items():
            held = {}
            for ekey, siblings in service.replica.scan(b"", keyspace.db_end(15)):
                assert siblings is not None
                held[(ekey[0], keyspace.user_key(ekey))] = siblings
            out[name] = held
        return out

    def violations(self) -> list[str]:
        live = {n: s for n, s in self.state().items() if self.network.is_up(n)}
        found = check_all(self.history, live,
                          lambda key: [n for n in self.replicas_of(key) if n in live],
                          replica_acked=self.acks.acked)
        return [str(v) for v in found]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()


@pytest.fixture
def make(tmp_path: Path) -> Any:
    made: list[SimCluster] = []

    def build(names: list[str], **kwargs: Any) -> SimCluster:
        cluster = SimCluster(tmp_path / str(len(made)), names, **kwargs)
        made.append(cluster)
        return cluster

    yield build
    for cluster in made:
        cluster.close()


NODES3 = ["n1", "n2", "n3"]


def value_of(outcome: Found | NoQuorum) -> bytes | None:
    assert isinstance(outcome, Found), outcome
    return winner(outcome.siblings)[VALUE] if outcome.siblings else None


# -- Reads and writes through different nodes ------------------------------------------------


def test_write_through_one_node_read_through_another(make: Callable[..., SimCluster]) -> None:
    c = make(NODES3)
    assert isinstance(c.run(c.put("n1", b"k", b"v1")), PutOk)
    assert value_of(c.run(c.coordinators["n2"].get(0, b"k", QUORUM))) == b"v1"
    assert isinstance(c.run(c.put("n3", b"k", b"v2")), PutOk)
    found = c.run(c.coordinators["n1"].get(0, b"k", QUORUM))
    assert isinstance(found, Found) and len(found.siblings) == 1  # v2 superseded v1
    assert value_of(found) == b"v2"
    assert value_of(c.run(c.coordinators["n2"].get(0, b"missing", Level.ONE))) is None
    c.settle()
    assert c.violations() == []


def test_concurrent_writes_become_siblings_and_a_context_write_resolves_them(
        make: Callable[..., SimCluster]) -> None:
    c = make(NODES3, options=NetworkOptions(delay_ticks_min=5, delay_ticks_max=5))
    # Level ONE: each coordinator's own replica is the whole read, so neither write sees the
    # other's (at QUORUM a conditional write may find the other's version at a peer and
    # supersede it, as a read made a little later would: coordinator Rule 12).
    first, second = c.put("n1", b"k", b"a", Level.ONE), c.put("n2", b"k", b"b", Level.ONE)
    assert isinstance(c.run(first), PutOk) and isinstance(c.run(second), PutOk)
    c.settle()
    found = c.run(c.coordinators["n3"].get(0, b"k", Level.ALL))
    assert isinstance(found, Found)
    assert sorted(v[VALUE] or b"" for v in found.siblings) == [b"a", b"b"]
    assert isinstance(c.run(c.put("n3", b"k", b"c", context=found.siblings)), PutOk)
    c.settle()
    for node in NODES3:
        held = c.state()[node][(0, b"k")]
        assert [v[VALUE] for v in held] == [b"c"], node
    assert c.violations() == []


def test_context_write_keeps_versions_the_context_did_not_name(
        make: Callable[..., SimCluster]) -> None:
    c = make(NODES3)
    c.run(c.put("n1", b"k", b"a"))
    old = c.run(c.coordinators["n1"].get(0, b"k", QUORUM))
    assert isinstance(old, Found)
    c.run(c.put("n2", b"k", b"b"))  # supersedes a
    c.run(c.put("n3", b"k", b"stale-context", context=old.siblings))
    c.settle()
    found = c.run(c.coordinators["n1"].get(0, b"k", Level.ALL))
    assert isinstance(found, Found)
    assert sorted(v[VALUE] or b"" for v in found.siblings) == [b"b", b"stale-context"]


def test_read_repair_converges_a_stale_replica(make: Callable[..., SimCluster]) -> None:
    # Every read asks every replica (Rule 9 with read_repair_every 1): a ONE read repairs.
    c = make(NODES3, coordinator_options=CoordinatorOptions(request_timeout_ms=TIMEOUT_MS,
                                                            read_repair_every=1))
    c.network.partition({"n1"}, {"n3"})
    assert isinstance(c.run(c.put("n1", b"k", b"v")), PutOk)
    c.settle()
    assert (0, b"k") not in c.state()["n3"]
    c.network.heal()
    assert value_of(c.run(c.coordinators["n2"].get(0, b"k", Level.ONE))) == b"v"
    c.settle()  # the late answers come in, then the repair
    assert c.state()["n3"][(0, b"k")] == c.state()["n1"][(0, b"k")]
    assert c.coordinators["n2"].stats["read_repairs"] >= 1
    assert not c.coordinators["n2"].active


def test_reads_ask_a_quorum_and_one_in_read_repair_every_asks_all_and_repairs(
        make: Callable[..., SimCluster]) -> None:
    c = make(NODES3, coordinator_options=CoordinatorOptions(request_timeout_ms=TIMEOUT_MS,
                                                            read_repair_every=4))
    key = b"k"
    first, _, last = c.replicas_of((0, key))
    c.network.partition({first}, {last})
    assert isinstance(c.run(c.put(first, key, b"v")), PutOk)
    c.settle()
    assert (0, key) not in c.state()[last]
    c.network.heal()
    reads: list[str] = []
    c.network.on_message(lambda e: reads.append(e.packet.dst) if e.event == "send"
                         and isinstance(e.packet.message, Read) else None)
    coordinator = c.coordinators[first]
    # The write read nothing (a conditional write, Rule 12). QUORUM on N=3 from a replica
    # asks itself and one peer (`last` comes after it in preference order).
    for _ in range(3):
        assert value_of(c.run(coordinator.get(0, key, QUORUM))) == b"v"
        c.settle()
    assert len(reads) == 3 and last not in reads
    assert (0, key) not in c.state()[last]
    assert value_of(c.run(coordinator.get(0, key, QUORUM))) == b"v"  # the 4th asks all
    c.settle()
    assert len(reads) == 5
    assert c.state()[last][(0, key)] == c.state()[first][(0, key)]
    assert coordinator.stats["read_repairs"] == 1 and not coordinator.active


def test_delete_writes_a_tombstone_and_reports_whether_a_value_existed(
        make: Callable[..., SimCluster]) -> None:
    c = make(NODES3)
    c.run(c.put("n1", b"k", b"v"))
    assert c.run(c.coordinators["n2"].delete(0, b"k", QUORUM)) == Deleted(True)
    assert value_of(c.run(c.coordinators["n3"].get(0, b"k", QUORUM))) is None
    assert c.run(c.coordinators["n3"].delete(0, b"k", QUORUM)) == Deleted(False)
    c.settle()
    held = c.state()["n1"][(0, b"k")]
    assert [v[VALUE] for v in held] == [None]


# -- Failures --------------------------------------------------------------------------------


def test_one_node_down_quorum_works_two_down_noquorum_with_exact_text(
        make: Callable[..., SimCluster]) -> None:
    c = make(NODES3)
    c.run(c.put("n1", b"k", b"before"))
    c.settle()
    c.network.crash("n3")
    assert isinstance(c.run(c.put("n1", b"k", b"one-down")), PutOk)
    assert value_of(c.run(c.coordinators["n2"].get(0, b"k", QUORUM))) == b"one-down"
    c.network.crash("n2")
    outcome = c.run(c.put("n1", b"k", b"two-down"))
    assert isinstance(outcome, NoQuorum)
    assert outcome.message == "NOQUORUM 1 of 2 required replicas answered"
    read = c.run(c.coordinators["n1"].get(0, b"k", QUORUM))
    assert isinstance(read, NoQuorum)
    assert read.message == "NOQUORUM 1 of 2 required replicas answered"
    assert value_of(c.run(c.coordinators["n1"].get(0, b"k", Level.ONE))) == b"one-down"
    c.settle()
    assert c.violations() == []


def test_silent_replica_times_out_in_virtual_time(make: Callable[..., SimCluster]) -> None:
    """Without a failure detector (up_nodes says all up) the deadline decides."""
    c = make(NODES3)
    for coordinator in c.coordinators.values():
        coordinator.up_nodes = None
    c.network.crash("n2")
    c.network.crash("n3")
    start = c.clock.now
    outcome = c.run(c.coordinators["n1"].get(0, b"k", QUORUM))
    assert isinstance(outcome, NoQuorum)
    assert outcome.message == "NOQUORUM 1 of 2 required replicas answered"
    assert c.clock.now - start == TIMEOUT_MS


def test_consistency_beyond_the_replicas_raises_at_once(make: Callable[..., SimCluster]) -> None:
    c = make(["n1", "n2"], n=3)
    with pytest.raises(ConsistencyError, match="THREE with 2 replicas"):
        c.coordinators["n1"].get(0, b"k", Level.THREE)
    assert c.network.trace == []


def test_late_replies_are_absorbed_after_the_answer(make: Callable[..., SimCluster]) -> None:
    c = make(NODES3, options=NetworkOptions(delay_ticks_min=20, delay_ticks_max=20))
    coordinator = c.coordinators["n1"]
    future = coordinator.put(0, b"k", b"v", 0, Level.ONE, context=())
    assert future.done() and isinstance(future.result(), PutOk)  # the local ack alone
    assert len(coordinator.active) == 1
    fsm = next(iter(coordinator.active))
    c.settle()
    assert not coordinator.active
    assert fsm.core.acks == 3  # type: ignore[union-attr]


# -- Non-replica coordinators (5 nodes, N = 3) -----------------------------------------------


def non_replica(c: SimCluster, key: bytes) -> str:
    return next(n for n in c.coordinators if n not in c.replicas_of((0, key)))


def test_non_replica_coordinator_never_reuses_a_counter(make: Callable[..., SimCluster]) -> None:
    """kv679 scenario: the coordinator's second read misses its own first write."""
    c = make(["n1", "n2", "n3", "n4", "n5"])
    key = b"k"
    coord = non_replica(c, key)
    r1, r2, r3 = c.replicas_of((0, key))
    c.network.partition({coord}, {r3})
    assert isinstance(c.run(c.put(coord, key, b"first", level=2)), PutOk)
    c.settle()
    c.network.heal()
    c.network.partition({coord}, {r1, r2})
    assert isinstance(c.run(c.put(coord, key, b"second", level=1)), PutOk)
    c.settle()
    c.network.heal()
    assert c.services[coord].floor(0, key) == 2
    c.run(c.coordinators[r1].get(0, key, Level.ALL))
    c.settle()
    assert c.violations() == []
    found = c.run(c.coordinators[coord].get(0, key, Level.ALL))
    assert isinstance(found, Found) and [v[VALUE] for v in found.siblings] == [b"second"]
    assert (0, key) not in c.state()[coord]  # the coordinator stores only its floor


# -- Faults over many seeds ------------------------------------------------------------------


KEYS = [b"apple", b"pear", b"plum", b"fig"]


@pytest.mark.parametrize("seed", range(40))
def test_loss_delay_duplication_never_give_a_wrong_answer(
        make: Callable[..., SimCluster], seed: int) -> None:
    names = ["n1", "n2", "n3", "n4"] if seed % 2 else NODES3
    options = NetworkOptions.swarm(random.Random(seed))
    c = make(names, seed=seed, options=options)
    workload = random.Random(seed)
    reads: list[tuple[int, bytes, asyncio.Future[Found | NoQuorum]]] = []

    def put(node: str, key: bytes, value: bytes) -> None:
        c.put(node, key, value)

    def get(node: str, key: bytes) -> None:
        reads.append((c.clock.now, key, c.coordinators[node].get(0, key, QUORUM)))

    for i in range(80):
        node, key = workload.choice(names), workload.choice(KEYS)
        if workload.random() < 0.6:
            c.clock.call_in(workload.randint(0, 2000), lambda n=node, k=key, v=b"v%d" % i:
                            put(n, k, v))
        else:
            c.clock.call_in(workload.randint(0, 2000), lambda n=node, k=key: get(n, k))
    c.settle()
    context = f"seed {seed} options {options}"
    assert all(future.done() for _, _, future in reads), context
    for started, key, future in reads:  # R + W > N: a read sees every write acked before it
        outcome = future.result()
        if isinstance(outcome, NoQuorum):
            continue
        for acked, acked_key, version in c.acked_at:
            if acked_key == key and acked < started:
                assert any(same_version(s, version) or vclock.dominates(s[CLOCK], version[CLOCK])
                           for s in outcome.siblings), f"{context}: read missed {version}"
    found = sum(isinstance(f.result(), Found) for _, _, f in reads)
    assert c.acked_at and found, f"{context}: the workload checked nothing"
    c.network.heal()
    c.network.options = NetworkOptions()
    for key in KEYS:
        c.coordinators[names[0]].get(0, key, Level.ALL)
    c.settle()
    violations = c.violations()
    assert violations == [], f"{context}:\n" + "\n".join(violations)


# -- A cluster of one: everything completes inside the call -----------------------------------


def test_cluster_of_one_completes_synchronously(make: Callable[..., SimCluster]) -> None:
    c = make(["solo"], n=1)
    coordinator = c.coordinators["solo"]
    assert coordinator.local_only
    assert isinstance(coordinator.put_now(0, b"k", b"v", 0, QUORUM), PutOk)
    assert value_of(coordinator.get_now(0, b"k", Level.ALL)) == b"v"
    future = coordinator.put(0, b"k", b"w", 0, Level.ONE)
    assert future.done()  # no event had to run
    assert value_of(coordinator.get_now(0, b"k", Level.ONE)) == b"w"
    assert coordinator.delete_now(0, b"k", QUORUM) == Deleted(True)
    assert value_of(coordinator.get_now(0, b"k", QUORUM)) is None
    assert not coordinator.active and c.network.trace == []
    assert c.clock.pending() == 0


def test_now_methods_refuse_keys_with_remote_replicas(make: Callable[..., SimCluster]) -> None:
    c = make(NODES3)
    with pytest.raises(AssertionError, match="remote replicas"):
        c.coordinators["n1"].get_now(0, b"k", QUORUM)


# -- The replica service ---------------------------------------------------------------------


def test_service_write_merges_and_never_overwrites(make: Callable[..., SimCluster]) -> None:
    c = make(["n1"], n=1)
    service = c.services["n1"]
    a: Version = ({b"x": (1, 0)}, 10, 0, b"x", b"a")
    b: Version = ({b"y": (1, 0)}, 20, 0, b"y", b"b")
    newer_a: Version = ({b"x": (2, 0)}, 30, 0, b"x", b"a2")
    assert service.handle("p", Write(0, b"k", encode((a,)))) == WriteAck()
    assert service.handle("p", Write(0, b"k", encode((b,)))) == WriteAck()
    assert service.read(0, b"k") == (a, b)
    service.handle("p", Write(0, b"k", encode((a,))))  # a stale duplicate changes nothing
    assert service.stats["writes_unchanged"] == 1
    service.handle("p", Write(0, b"k", encode((newer_a,))))
    assert service.read(0, b"k") == (b, newer_a)
    reply = service.handle("p", Read(0, b"k"))
    assert isinstance(reply, ReadReply) and reply.siblings == encode((b, newer_a))
    assert service.handle("p", Read(0, b"none")) == ReadReply(None)


def test_service_stores_the_same_bytes_whatever_form_a_write_came_in(
        make: Callable[..., SimCluster]) -> None:
    """Replica invariant 8: a write's bytes are stored as they came only when they are
    ``encode``'s own; a peer's other msgpack form of the same set stores the same bytes,
    and both replicas answer alike (WRITE and COND_WRITE, fast and general merges)."""
    exact, other = make(["n1"], n=1).services["n1"], make(["n2"], n=1).services["n2"]
    rng = random.Random(7)
    for step in range(300):
        key = rng.choice([b"a", b"b", b"c"])
        incoming = tuple(
            ({actor: (rng.randint(1, 6), rng.randint(0, 9))
              for actor in rng.sample([b"x", b"y", b"z"], rng.randint(1, 3))},
             rng.randint(0, 50), 0, rng.choice([b"x", b"y", b"z"]),
             rng.choice([None, b"v%d" % step]))
            for _ in range(rng.choice([1, 1, 1, 2])))
        data = encode(incoming)
        kind = rng.choice([Write, CondWrite])
        assert exact.handle("p", kind(0, key, data)) == other.handle(
            "p", kind(0, key, wide_encoding(data)))
        stored = exact.replica.raw(keyspace.engine_key(0, key))
        assert stored == other.replica.raw(keyspace.engine_key(0, key))
        assert stored is None or stored == encode(decode(stored))
    assert exact.stats == other.stats
    assert exact.stats["writes_served"] == 300 and exact.replica.keys[0] > 0


@pytest.mark.parametrize("message, code", [
    (Write(0, b"k", b"\xc1garbage"), ErrorCode.PROTOCOL),
    (Write(0, b"k", b"\x91\x07"), ErrorCode.PROTOCOL),  # msgpack, but not a sibling set
    (Read(99, b"k"), ErrorCode.UNSUPPORTED),
    (Ping(), ErrorCode.UNSUPPORTED),
])
def test_service_refusals(make: Callable[..., SimCluster], message: Any,
                          code: ErrorCode) -> None:
    c = make(["n1"], n=1)
    with pytest.raises(RemoteError) as refused:
        c.services["n1"].handle("p", message)
    assert refused.value.code == code
    assert c.services["n1"].read(0, b"k") == ()


def test_service_reports_a_damaged_stored_value(make: Callable[..., SimCluster]) -> None:
    c = make(["n1"], n=1)
    c.engines["n1"].put(keyspace.engine_key(0, b"k"), b"\x92\x09\x09")
    with pytest.raises(RemoteError) as refused:
        c.services["n1"].handle("p", Read(0, b"k"))
    assert refused.value.code == ErrorCode.INTERNAL


# -- Quick reads (Rule 11) ---------------------------------------------------------------------


def _quick_read_cluster(make: Callable[..., SimCluster]) -> SimCluster:
    """Three nodes whose reads ask every replica only once in 1000 (Rule 9 stays out)."""
    return make(NODES3, coordinator_options=CoordinatorOptions(request_timeout_ms=TIMEOUT_MS,
                                                               read_repair_every=1000))


def _reads_sent(c: SimCluster) -> list[str]:
    sent: list[str] = []
    c.network.on_message(lambda e: sent.append(e.packet.dst) if e.event == "send"
                         and isinstance(e.packet.message, Read) else None)
    return sent


def test_quick_read_of_agreeing_replicas_asks_one_peer_and_builds_no_fsm(
        make: Callable[..., SimCluster]) -> None:
    c = _quick_read_cluster(make)
    key = b"k"
    first, second, _ = c.replicas_of((0, key))
    assert isinstance(c.run(c.put(first, key, b"v")), PutOk)
    c.settle()
    sent = _reads_sent(c)
    coordinator = c.coordinators[first]
    started: list[object] = []
    coordinator._start_get_fsm = lambda *args: started.append(args)  # type: ignore[method-assign]
    future = coordinator.get(0, key, QUORUM)
    assert len(coordinator.active) == 1  # the quick read, until its peer answers
    assert value_of(c.run(future)) == b"v"
    assert sent == [second] and started == [] and not coordinator.active
    assert coordinator.stats["quick_fallbacks"] == 0
    c.settle()
    assert c.violations() == []


def test_quick_read_hands_a_difference_to_the_fsm_which_merges_and_repairs(
        make: Callable[..., SimCluster]) -> None:
    c = _quick_read_cluster(make)
    key = b"k"
    first, second, third = c.replicas_of((0, key))
    c.network.partition({first}, {second})
    assert isinstance(c.run(c.put(second, key, b"new")), PutOk)  # second and third only
    c.settle()
    c.network.heal()
    assert (0, key) not in c.state()[first]
    sent = _reads_sent(c)
    coordinator = c.coordinators[first]
    assert value_of(c.run(coordinator.get(0, key, QUORUM))) == b"new"
    c.settle()
    assert coordinator.stats["quick_fallbacks"] == 1
    assert sorted(sent) == sorted([second, second, third])  # quick, then the FSM asks all
    assert c.state()[first][(0, key)] == c.state()[second][(0, key)]  # repaired
    assert coordinator.stats["read_repairs"] >= 1 and not coordinator.active
    assert c.violations() == []


def test_quick_read_of_a_silent_peer_falls_back_within_the_request_timeout(
        make: Callable[..., SimCluster]) -> None:
    c = _quick_read_cluster(make)
    key = b"k"
    first, second, third = c.replicas_of((0, key))
    assert isinstance(c.run(c.put(first, key, b"v")), PutOk)
    c.settle()
    coordinator = c.coordinators[first]
    # second stays "up" for the coordinator but hears nothing: the quick read waits for it
    # the speculation delay (a tenth of the timeout), then the FSM asks every replica.
    c.network.cut(first, second)
    start = c.clock.now
    assert value_of(c.run(coordinator.get(0, key, QUORUM))) == b"v"
    assert TIMEOUT_MS // 10 <= c.clock.now - start < TIMEOUT_MS
    assert coordinator.stats["quick_fallbacks"] == 1
    # Both silent: NOQUORUM no later than the request timeout from the read's start.
    c.network.cut(first, third)
    start = c.clock.now
    outcome = c.run(coordinator.get(0, key, QUORUM))
    assert isinstance(outcome, NoQuorum)
    assert c.clock.now - start <= TIMEOUT_MS + 1
    c.settle()
    assert not coordinator.active
