"""The put FSM on three simulated nodes with real replicas (harness: test_cluster_coordinator)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster import vclock
from cluster.consistency import NoQuorum, Requirement
from cluster.hints import HintStore
from cluster.keys import engine_key
from cluster.messages import Write
from cluster.put_core import PutOk
from cluster.put_fsm import (
    TRANSITIONS,
    FsmError,
    PutFsm,
    PutRequest,
    State,
    Target,
    build_version,
)
from cluster.sibling_codec import decode
from cluster.version import CLOCK, Siblings, Version
from tests.sim.sim_network import NetworkOptions, TraceEvent
from tests.test_cluster_coordinator import TIMEOUT_MS, SimCluster
from tests.test_cluster_sibling_codec import actors, stamps, versions

TARGETS = (Target("n1", "dc1"), Target("n2", "dc1"), Target("n3", "dc1"))


@pytest.fixture
def cluster(tmp_path: Path) -> SimCluster:
    c = SimCluster(tmp_path, ["n1", "n2", "n3"],
                   options=NetworkOptions(delay_ticks_min=5, delay_ticks_max=5))
    yield c  # type: ignore[misc]
    c.close()


def fsm_of(c: SimCluster, node: str, value: bytes | None, seen: Siblings = (), w: int = 2,
           targets: tuple[Target, ...] = TARGETS,
           ) -> tuple[PutFsm, list[PutOk | NoQuorum]]:
    replies: list[PutOk | NoQuorum] = []
    coordinator = c.coordinators[node]
    fsm = PutFsm(PutRequest(0, b"k", value, 0, seen, Requirement(w), targets),
                 local_id=node, actor=node.encode(), service=c.services[node],
                 transport=coordinator.transport, clock=c.clock, timeout_s=TIMEOUT_MS / 1000,
                 on_reply=replies.append)
    return fsm, replies


def test_transition_table_is_closed_and_bad_transitions_raise(cluster: SimCluster) -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.FINISH] == frozenset()
    fsm, _ = fsm_of(cluster, "n1", b"v")
    with pytest.raises(FsmError, match="PREPARE -> FINISH"):
        fsm._to(State.FINISH)
    fsm.start()
    with pytest.raises(FsmError, match="start"):
        fsm.start()


def test_answers_at_w_then_absorbs_late_acks_then_finishes(cluster: SimCluster) -> None:
    fsm, replies = fsm_of(cluster, "n1", b"v")
    fsm.start()
    assert fsm.state is State.WAITING_W and replies == []  # the local ack alone is not W=2
    cluster.clock.run_while(lambda: not replies, 1000)
    assert replies == [PutOk(2)] and fsm.state is State.ABSORBING
    cluster.settle()
    assert fsm.state is State.FINISH and fsm.core.acks == 3 and replies == [PutOk(2)]


def test_w1_answers_inside_start_from_the_local_replica(cluster: SimCluster) -> None:
    fsm, replies = fsm_of(cluster, "n1", b"v", w=1)
    fsm.start()
    assert replies == [PutOk(1)] and fsm.state is State.ABSORBING


def test_local_store_precedes_every_request(cluster: SimCluster) -> None:
    held_at_send: list[Siblings] = []

    def observe(event: TraceEvent) -> None:
        if event.event == "send" and isinstance(event.packet.message, Write):
            held_at_send.append(cluster.services["n1"].read(0, b"k"))

    cluster.network.on_message(observe)
    fsm, _ = fsm_of(cluster, "n1", b"v")
    fsm.start()
    assert fsm.version is not None
    assert held_at_send == [(fsm.version,), (fsm.version,)]


def test_version_descends_seen_with_counter_above_the_local_floor(cluster: SimCluster) -> None:
    c = cluster
    own: Version = ({b"n1": (7, 0)}, 1, 0, b"n1", b"old-own")
    c.services["n1"].merge(0, b"k", (own,))
    future_ts = c.clock.wall_ms() + 60_000
    other: Version = ({b"n2": (3, 0)}, future_ts, 0, b"n2", b"other")
    fsm, _ = fsm_of(c, "n1", b"new", seen=(other,))  # seen misses n1's own version
    fsm.start()
    version = fsm.version
    assert version is not None
    assert version[CLOCK][b"n1"][0] == 8  # above the floor 7, never a reused counter
    assert vclock.dominates(version[CLOCK], other[CLOCK])
    assert version[1] == future_ts  # timestamp: max(now, newest seen)
    assert c.services["n1"].read(0, b"k") == (version,)


def test_non_replica_coordinator_raises_its_durable_floor(cluster: SimCluster) -> None:
    c = cluster
    remote = (Target("n2", "dc1"), Target("n3", "dc1"))
    for expected in (1, 2):
        fsm, replies = fsm_of(c, "n1", b"v%d" % expected, targets=remote)
        fsm.start()
        c.settle()
        assert fsm.version is not None and fsm.version[CLOCK][b"n1"][0] == expected
        assert c.services["n1"].floor(0, b"k") == expected
        assert replies == [PutOk(2)]
    assert c.services["n1"].read(0, b"k") == ()


def test_deadline_fires_in_virtual_time_and_late_acks_are_ignored(cluster: SimCluster) -> None:
    c = cluster
    c.network.options = NetworkOptions(delay_ticks_min=300, delay_ticks_max=300)
    fsm, replies = fsm_of(c, "n1", b"v", w=3)
    start = c.clock.now
    fsm.start()
    c.clock.run_while(lambda: not replies, 10_000)
    assert c.clock.now - start == TIMEOUT_MS
    assert replies == [NoQuorum(1, 3)]
    assert replies[0].message == "NOQUORUM 1 of 3 required replicas answered"
    assert fsm.state is State.FINISH
    c.settle()
    assert replies == [NoQuorum(1, 3)]
    # The replicas did store it (a timed-out write may have been applied): merges, not loss.
    assert decode(c.engines["n2"].get(_ekey()) or b"") == (fsm.version,)


def test_known_down_targets_fail_at_once_without_a_request(cluster: SimCluster) -> None:
    c = cluster
    replies: list[PutOk | NoQuorum] = []
    fsm = PutFsm(PutRequest(0, b"k", b"v", 0, (), Requirement(2), TARGETS,
                            down=frozenset({"n2", "n3"})),
                 local_id="n1", actor=b"n1", service=c.services["n1"],
                 transport=c.coordinators["n1"].transport, clock=c.clock, timeout_s=0.2,
                 on_reply=replies.append)
    fsm.start()
    assert replies == [NoQuorum(1, 2)] and fsm.state is State.FINISH
    assert c.network.trace == [] and c.clock.pending() == 0


def _ekey() -> bytes:
    return engine_key(0, b"k")




def test_targets_the_version_did_not_reach_get_a_hint_kept_here(cluster: SimCluster) -> None:
    """Rule 6: a write in flight when a replica dies (or times out) is not left to repair."""
    c = cluster
    hints = HintStore.open(c.engines["n1"], c.clock.wall_ms)
    c.services["n1"].hints = hints
    c.network.options = NetworkOptions(delay_ticks_min=300, delay_ticks_max=300)
    stand_in = Target("n3", "dc1", hint_for="n9")  # n3 stands in for a down n9
    fsm, replies = fsm_of(c, "n1", b"v", w=3, targets=(TARGETS[0], TARGETS[1], stand_in))
    fsm.start()
    c.clock.run_while(lambda: not replies, 10_000)
    assert replies == [NoQuorum(1, 3)]
    assert fsm.hints_kept == 2
    assert hints.targets() == ["n2", "n9"]  # the owners, not the stand-in
    assert hints.get("n2", 0, b"k") == (fsm.version,)
    # With should_hint saying no (the owner has been down too long), nothing is kept.
    fsm2, replies2 = fsm_of(c, "n1", b"w", w=3)
    fsm2.should_hint = lambda owner: False
    fsm2.start()
    c.clock.run_while(lambda: not replies2, 10_000)
    assert fsm2.hints_kept == 0


@given(versions, actors, stamps, st.one_of(st.none(), st.binary(max_size=8)),
       st.integers(0, 2**40))
def test_a_version_over_one_seen_is_the_general_rule_s(seen: Version, actor: bytes,
                                                      now_ms: int, value: bytes | None,
                                                      expire_at_ms: int) -> None:
    """build_version's shortcut for one seen version and no floor (a SET's) builds what its
    general rule builds: the same set seen twice takes the general path."""
    one = build_version((seen,), 0, actor, now_ms, value, expire_at_ms)
    assert one == build_version((seen, seen), 0, actor, now_ms, value, expire_at_ms)
    assert vclock.dominates(one[CLOCK], seen[CLOCK])
