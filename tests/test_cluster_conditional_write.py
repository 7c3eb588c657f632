"""The conditional write (cluster/conditional_write.py, coordinator.py Rule 12): a plain write
in one round trip when the replicas hold nothing it misses, a second write when one does,
NOQUORUM as the read before the write would give it, and the paths where it does not apply.
Over tests/sim's network in virtual time (tests/test_cluster_coordinator.py's SimCluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import vclock
from cluster.consistency import Level, NoQuorum
from cluster.hints import HintStore
from cluster.messages import CondWrite, CondWriteReply, ErrorCode, Message, Read, Write
from cluster.put_core import PutOk
from cluster.replica_service import CLEAN
from cluster.sibling_codec import decode, encode
from cluster.transport import RemoteError
from cluster.version import CLOCK, VALUE, Version
from tests.sim.sim_network import NetworkOptions
from tests.test_cluster_coordinator import TIMEOUT_MS, SimCluster, non_replica

NODES3 = ["n1", "n2", "n3"]
DELAY = 5  # ticks each way


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SimCluster]:
    c = SimCluster(tmp_path, NODES3,
                   options=NetworkOptions(delay_ticks_min=DELAY, delay_ticks_max=DELAY))
    yield c
    c.close()


def sent(c: SimCluster) -> list[Message]:
    """The READ, WRITE and COND_WRITE requests sent from now on (a list that fills)."""
    out: list[Message] = []
    c.network.on_message(lambda e: out.append(e.packet.message) if e.event == "send"
                         and isinstance(e.packet.message, (Read, Write, CondWrite)) else None)
    return out


def held(c: SimCluster, node: str, key: bytes) -> list[Version]:
    return list(c.state()[node].get((0, key), ()))


def test_plain_write_of_a_replica_is_one_round_trip(cluster: SimCluster) -> None:
    c = cluster
    first = c.replicas_of((0, b"k"))[0]
    assert isinstance(c.run(c.put(first, b"k", b"v1")), PutOk)
    c.settle()
    requests = sent(c)
    start = c.clock.now
    outcome = c.run(c.put(first, b"k", b"v2"))
    assert isinstance(outcome, PutOk) and outcome.acks == 2
    assert c.clock.now - start == 2 * DELAY  # one round trip (read then write: two)
    c.settle()
    assert sorted(type(r).__name__ for r in requests) == ["CondWrite", "CondWrite"]
    assert sorted(r.key for r in requests if isinstance(r, CondWrite)) == [b"k", b"k"]
    for node in NODES3:
        assert [v[VALUE] for v in held(c, node, b"k")] == [b"v2"], node
    stats = c.coordinators[first].stats
    assert (stats["cond_writes"], stats["cond_second_writes"]) == (2, 0)
    assert not c.coordinators[first].active
    assert c.violations() == []


def test_a_stale_coordinator_supersedes_what_an_unclean_replica_held(
        cluster: SimCluster) -> None:
    """The coordinator missed an acknowledged write; the peer that holds it says so, and the
    second write descends it: no sibling, as the read-then-write path leaves none."""
    c = cluster
    first, second, third = c.replicas_of((0, b"k"))
    c.network.partition({first}, {second, third})
    acked = c.run(c.put(second, b"k", b"missed by first"))
    assert isinstance(acked, PutOk)
    c.settle()
    c.network.heal()
    assert held(c, first, b"k") == []
    start = c.clock.now
    assert isinstance(c.run(c.put(first, b"k", b"new")), PutOk)
    assert c.clock.now - start == 4 * DELAY  # the conditional write, then the second write
    c.settle()
    missed = next(v for _, v in c.history.acked if v[VALUE] == b"missed by first")
    for node in NODES3:
        final = held(c, node, b"k")
        assert [v[VALUE] for v in final] == [b"new"], node
        assert vclock.dominates(final[0][CLOCK], missed[CLOCK])
    stats = c.coordinators[first].stats
    assert (stats["cond_writes"], stats["cond_second_writes"]) == (1, 1)
    assert stats["puts"] == 2  # the conditional write and the second
    assert c.violations() == []


def test_unclean_reply_names_what_the_replica_held(cluster: SimCluster) -> None:
    c = cluster
    first, second, _ = c.replicas_of((0, b"k"))
    assert isinstance(c.run(c.put(first, b"k", b"a")), PutOk)
    c.settle()
    service = c.services[second]
    before = service.read(0, b"k")
    stale: Version = ({b"other": (1, 0)}, 1, 0, b"other", b"x")  # concurrent with a
    reply = service.handle(first, CondWrite(0, b"k", encode((stale,))))
    assert isinstance(reply, CondWriteReply) and not reply.clean
    assert reply.siblings is not None and decode(reply.siblings) == before
    assert len(service.read(0, b"k")) == 2  # merged all the same: a and x are siblings
    assert service.stats["cond_writes_unclean"] == 1
    newer = ({**before[0][CLOCK], **stale[CLOCK], b"n9": (1, 0)}, 2, 0, b"n9", b"y")
    assert service.handle(first, CondWrite(0, b"k", encode((newer,)))) is CLEAN
    assert [v[VALUE] for v in service.read(0, b"k")] == [b"y"]
    assert service.handle(first, CondWrite(0, b"fresh", encode((newer,)))) is CLEAN
    with pytest.raises(RemoteError) as info:
        service.handle(first, CondWrite(0, b"k", b"not a sibling set"))
    assert info.value.code == ErrorCode.PROTOCOL


def test_silent_peers_give_noquorum_after_the_timeout(cluster: SimCluster) -> None:
    c = cluster
    first, second, third = c.replicas_of((0, b"k"))
    c.network.partition({first}, {second, third})  # cut off, yet not known down
    start = c.clock.now
    outcome = c.run(c.put(first, b"k", b"alone"))
    assert isinstance(outcome, NoQuorum)
    assert outcome.message == "NOQUORUM 1 of 2 required replicas answered"
    assert c.clock.now - start == TIMEOUT_MS
    assert not c.coordinators[first].active


def test_one_failing_peer_and_one_clean_peer_succeed(cluster: SimCluster) -> None:
    c = cluster
    first, second, third = c.replicas_of((0, b"k"))
    c.network.cut(first, second)
    assert isinstance(c.run(c.put(first, b"k", b"v")), PutOk)
    c.settle()
    assert [v[VALUE] for v in held(c, third, b"k")] == [b"v"]
    assert held(c, second, b"k") == []
    assert not c.coordinators[first].active


def test_all_needs_every_peer_clean(cluster: SimCluster) -> None:
    c = cluster
    first, second, third = c.replicas_of((0, b"k"))
    c.network.partition({third}, {first, second})
    assert isinstance(c.run(c.put(third, b"k", b"third's", Level.ONE)), PutOk)
    c.settle()
    c.network.heal()  # only third holds a version: second answers clean, third does not
    assert isinstance(c.run(c.put(first, b"k", b"all", Level.ALL)), PutOk)
    c.settle()
    for node in NODES3:
        assert [v[VALUE] for v in held(c, node, b"k")] == [b"all"], node
    assert c.coordinators[first].stats["cond_second_writes"] == 1
    assert c.violations() == []


def test_level_one_answers_at_once_and_absorbs_the_acks(cluster: SimCluster) -> None:
    c = cluster
    first = c.replicas_of((0, b"k"))[0]
    future = c.put(first, b"k", b"v", Level.ONE)
    assert future.done() and isinstance(future.result(), PutOk)
    assert len(c.coordinators[first].active) == 1
    c.settle()
    assert not c.coordinators[first].active
    assert c.violations() == []


def test_where_it_does_not_apply_the_read_comes_first(tmp_path: Path) -> None:
    c = SimCluster(tmp_path, ["n1", "n2", "n3", "n4", "n5"])
    try:
        key = b"k"
        coord = non_replica(c, key)
        requests = sent(c)
        assert isinstance(c.run(c.put(coord, key, b"v")), PutOk)  # not a replica
        assert {type(r) for r in requests} == {Read, Write}
        c.settle()
        replica = c.replicas_of((0, key))[0]
        context = tuple(c.services[replica].read(0, key))
        requests.clear()
        assert isinstance(c.run(c.put(replica, key, b"w", context=context)), PutOk)
        assert {type(r) for r in requests} == {Write}  # a context write reads nothing
        c.settle()
        c.network.crash(c.replicas_of((0, key))[2])  # a primary known down: no cached route
        requests.clear()
        assert isinstance(c.run(c.put(replica, key, b"x")), PutOk)
        assert {type(r) for r in requests} == {Read, Write}
        assert c.coordinators[replica].stats["cond_writes"] == 0
    finally:
        c.close()


def test_a_peer_the_version_did_not_reach_gets_a_hint(cluster: SimCluster) -> None:
    c = cluster
    first, _, third = c.replicas_of((0, b"k"))
    hints = c.services[first].hints = HintStore.open(c.engines[first], c.clock.wall_ms)
    c.network.cut(first, third)
    assert isinstance(c.run(c.put(first, b"k", b"v")), PutOk)  # second answered clean
    c.settle()  # third's request times out
    version = next(v for _, v in c.history.written if v[VALUE] == b"v")
    assert hints.targets() == [third]
    assert hints.get(third, 0, b"k") == (version,)
    assert c.coordinators[first].stats["hints_kept"] == 1
    assert not c.coordinators[first].active


def test_a_replica_counts_the_hints_it_holds_for_the_key(cluster: SimCluster) -> None:
    """What a READ of this replica would answer includes its hints (replica_service
    invariant 6), so the clean check does too."""
    c = cluster
    first, second, _ = c.replicas_of((0, b"k"))
    service = c.services[second]
    service.hints = HintStore.open(c.engines[second], c.clock.wall_ms)
    hinted: Version = ({b"n9": (1, 0)}, 1, 0, b"n9", b"kept for n9")
    assert service.hints.add("n9", 0, b"k", (hinted,))
    mine: Version = ({b"n1": (1, 0)}, 2, 0, b"n1", b"new")  # does not descend the hint
    reply = service.handle(first, CondWrite(0, b"k", encode((mine,))))
    assert isinstance(reply, CondWriteReply) and not reply.clean
    assert reply.siblings is not None and decode(reply.siblings) == (hinted,)
    assert service.read(0, b"k") == (mine,)  # merged into the data; the hint stays a hint
    over: Version = ({b"n1": (2, 0), b"n9": (1, 0)}, 3, 0, b"n1", b"newer")
    assert service.handle(first, CondWrite(0, b"k", encode((over,)))) is CLEAN
