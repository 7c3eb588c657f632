"""The get FSM on three simulated nodes with real replicas (harness: test_cluster_coordinator)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.consistency import NoQuorum, Requirement
from cluster.get_core import Found
from cluster.get_fsm import TRANSITIONS, GetFsm, GetRequest, State
from cluster.keys import engine_key
from cluster.messages import Read, Write
from cluster.put_fsm import FsmError, Target
from cluster.version import Version
from tests.sim.sim_network import NetworkOptions, TraceEvent
from tests.test_cluster_coordinator import TIMEOUT_MS, SimCluster

TARGETS = (Target("n1", "dc1"), Target("n2", "dc1"), Target("n3", "dc1"))
V1: Version = ({b"x": (1, 0)}, 10, 0, b"x", b"v1")
V2: Version = ({b"x": (2, 0)}, 20, 0, b"x", b"v2")


@pytest.fixture
def cluster(tmp_path: Path) -> SimCluster:
    c = SimCluster(tmp_path, ["n1", "n2", "n3"],
                   options=NetworkOptions(delay_ticks_min=5, delay_ticks_max=5))
    yield c  # type: ignore[misc]
    c.close()


def fsm_of(c: SimCluster, node: str, r: int = 2, targets: tuple[Target, ...] = TARGETS,
           read_all: bool = True) -> tuple[GetFsm, list[Found | NoQuorum]]:
    replies: list[Found | NoQuorum] = []
    fsm = GetFsm(GetRequest(0, b"k", Requirement(r), targets, read_all=read_all),
                 local_id=node,
                 service=c.services[node], transport=c.coordinators[node].transport,
                 clock=c.clock, timeout_s=TIMEOUT_MS / 1000, on_reply=replies.append)
    return fsm, replies


def test_transition_table_is_closed_and_bad_transitions_raise(cluster: SimCluster) -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.FINISH] == frozenset()
    fsm, _ = fsm_of(cluster, "n1")
    with pytest.raises(FsmError, match="PREPARE -> ABSORBING"):
        fsm._to(State.ABSORBING)
    fsm.start()
    with pytest.raises(FsmError, match="start"):
        fsm.start()


def test_answer_comes_before_read_repair_which_merges_into_stale_replicas(
        cluster: SimCluster) -> None:
    c = cluster
    c.services["n1"].merge(0, b"k", (V1,))  # stale
    c.services["n2"].merge(0, b"k", (V2,))
    events: list[str] = []

    def observe(event: TraceEvent) -> None:
        if event.event == "send" and isinstance(event.packet.message, Write):
            events.append(f"repair {event.packet.dst}")

    c.network.on_message(observe)
    fsm, replies = fsm_of(c, "n1")
    fsm.start()
    c.clock.run_while(lambda: not replies, 1000)
    events.append("answered")
    assert replies == [Found((V2,))]  # merge of n1 (local) and the first remote answer
    c.settle()
    assert events == ["answered", "repair n3"]  # n3 had nothing
    assert sorted(fsm.repaired) == ["n1", "n3"]  # n1 repaired in process
    assert fsm.state is State.FINISH and fsm.repairs_acked == 2
    for node in ("n1", "n2", "n3"):
        assert c.services[node].read(0, b"k") == (V2,), node


def test_all_local_read_completes_inside_start(cluster: SimCluster) -> None:
    cluster.services["n1"].merge(0, b"k", (V1,))
    fsm, replies = fsm_of(cluster, "n1", r=1, targets=(Target("n1", "dc1"),))
    fsm.start()
    assert replies == [Found((V1,))] and fsm.state is State.FINISH


def test_a_corrupt_answer_counts_as_that_replicas_failure(cluster: SimCluster) -> None:
    c = cluster
    c.engines["n2"].put(engine_key(0, b"k"), b"\x92\x09\x09")  # damaged on n2
    c.engines["n3"].put(engine_key(0, b"k"), b"\x92\x09\x09")
    fsm, replies = fsm_of(c, "n1")
    fsm.start()
    c.settle()
    assert replies == [NoQuorum(1, 2)]
    assert sorted(fsm.core.failures) == ["n2", "n3"]


def test_deadline_fires_in_virtual_time_and_late_answers_are_ignored(
        cluster: SimCluster) -> None:
    c = cluster
    c.network.options = NetworkOptions(delay_ticks_min=300, delay_ticks_max=300)
    fsm, replies = fsm_of(c, "n1", r=3)
    start = c.clock.now
    fsm.start()
    c.clock.run_while(lambda: not replies, 10_000)
    assert c.clock.now - start == TIMEOUT_MS
    assert replies == [NoQuorum(1, 3)] and fsm.state is State.FINISH
    c.settle()
    assert fsm.late_replies == 2  # the transport's own PeerTimeouts, after FINISH: ignored
    assert replies == [NoQuorum(1, 3)]


def test_repair_that_is_never_acked_finishes_at_its_deadline(cluster: SimCluster) -> None:
    c = cluster
    c.services["n1"].merge(0, b"k", (V2,))
    fsm, replies = fsm_of(c, "n1", r=1)
    fsm.start()
    assert replies == [Found((V2,))]
    c.clock.run_while(lambda: fsm.state is not State.WAITING_READ_REPAIR, 1000)
    c.network.crash("n2")
    c.network.crash("n3")
    start = c.clock.now
    c.clock.run_while(lambda: fsm.state is not State.FINISH, 10_000)
    assert c.clock.now - start == TIMEOUT_MS
    assert fsm.repairs_acked == 0 and sorted(fsm.repaired) == ["n2", "n3"]


def reads_sent(c: SimCluster) -> list[tuple[int, str]]:
    sent: list[tuple[int, str]] = []
    c.network.on_message(lambda e: sent.append((e.tick, e.packet.dst)) if e.event == "send"
                         and isinstance(e.packet.message, Read) else None)
    return sent


def test_a_read_asks_the_fewest_replicas_and_skips_the_spare(cluster: SimCluster) -> None:
    c = cluster
    c.services["n3"].merge(0, b"k", (V2,))  # only the spare holds it: nobody asks it
    sent = reads_sent(c)
    fsm, replies = fsm_of(c, "n1", read_all=False)
    fsm.start()
    c.settle()
    assert [dst for _, dst in sent] == ["n2"]
    assert replies == [Found(())] and fsm.core.skipped == ["n3"]
    assert fsm.repaired == [] and fsm.state is State.FINISH


def test_a_one_read_of_a_local_replica_asks_nobody(cluster: SimCluster) -> None:
    c = cluster
    c.services["n2"].merge(0, b"k", (V1,))
    sent = reads_sent(c)
    fsm, replies = fsm_of(c, "n2", r=1, read_all=False)
    fsm.start()
    assert replies == [Found((V1,))] and fsm.state is State.FINISH  # inside start()
    assert sent == [] and sorted(fsm.core.skipped) == ["n1", "n3"]


def test_a_failed_replica_makes_the_read_ask_a_spare(cluster: SimCluster) -> None:
    c = cluster
    c.engines["n2"].put(engine_key(0, b"k"), b"\x92\x09\x09")  # damaged on n2
    c.services["n3"].merge(0, b"k", (V1,))
    sent = reads_sent(c)
    fsm, replies = fsm_of(c, "n1", read_all=False)
    fsm.start()
    c.settle()
    assert [dst for _, dst in sent] == ["n2", "n3"]
    assert replies == [Found((V1,))] and list(fsm.core.failures) == ["n2"]
    assert "n1" in fsm.repaired  # the answers that did come are repaired as ever


def test_a_silent_replica_makes_the_read_ask_its_spare_before_the_deadline(
        cluster: SimCluster) -> None:
    c = cluster
    c.services["n3"].merge(0, b"k", (V1,))
    c.network.partition({"n1"}, {"n2"})
    sent = reads_sent(c)
    fsm, replies = fsm_of(c, "n1", read_all=False)
    start = c.clock.now
    fsm.start()
    c.clock.run_while(lambda: not replies, 10_000)
    assert replies == [Found((V1,))]
    speculate_ticks = TIMEOUT_MS // 10
    assert sent == [(start, "n2"), (start + speculate_ticks, "n3")]
    assert c.clock.now - start == speculate_ticks + 2 * 5  # then one round trip to n3
    c.settle()
    assert fsm.state is State.FINISH and fsm.core.failures == {"n2": "timeout"}


def test_a_read_that_cannot_meet_its_level_asks_no_spare(cluster: SimCluster) -> None:
    c = cluster
    for node in ("n2", "n3"):
        c.engines[node].put(engine_key(0, b"k"), b"\x92\x09\x09")
    fsm, replies = fsm_of(c, "n1", r=3, read_all=False)
    fsm.start()
    c.settle()
    assert fsm.asked == ["n2", "n3"]  # R = N: no spare to begin with
    assert replies == [NoQuorum(1, 3)]
