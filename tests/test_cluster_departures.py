"""cluster/departures.py with cluster/gossip.py: tombstones of departed nodes are gossiped
for ``tombstone_s``, then dropped everywhere; the record kept of them refuses stale copies,
reminds the peers that hold one, and lets a new incarnation or a new node in. Every clock
here is a manual one: time moves only when a test moves it.

Also the simulation (tests/sim/gossip_sim.py): a forgotten node's tombstone leaves every
node, and a peer cut off the whole time does not bring the node back when it returns.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from cluster import members
from cluster.departures import (
    TOMBSTONE_S_DEFAULT,
    Departures,
    decode_record,
    encode_record,
    record_of,
)
from cluster.endpoint_state import (
    Address,
    AppField,
    EndpointState,
    FieldValue,
    Status,
    encode_state,
)
from cluster.errors import CorruptionError
from cluster.gossip import Gossiper, view
from cluster.members import Member, Membership
from engine.fs import OSFileSystem
from tests.sim.gossip_sim import GossipSim, GossipSimOptions
from tests.test_cluster_cluster_node import Cluster, run, wait_for
from tests.test_cluster_gossip import exchange, wire

T = 3600  # tombstone_s of these tests
START_S = 1_000_000  # the wall clock's second when a test begins


@dataclass
class ManualClock:
    ms: int = START_S * 1000

    def wall_ms(self) -> int:
        return self.ms

    def advance_s(self, seconds: int) -> None:
        self.ms += seconds * 1000


def addr(index: int) -> Address:
    return (f"127.0.3.{index}", 17000)


def app(index: int, status: Status = Status.NORMAL) -> dict[AppField, FieldValue]:
    return {AppField.STATUS: status, AppField.PEER_ADDRESS: addr(index),
            AppField.CLIENT_ADDRESS: (addr(index)[0], 6379), AppField.DATACENTER: "dc1",
            AppField.RACK: "r1", AppField.TOKENS: (index * 100 + 1, index * 100 + 2),
            AppField.LOAD: 0}


def node(index: int, clock: ManualClock, tombstone_s: int = T, node_id: str = "",
         generation: int = START_S - 100, known: tuple[EndpointState, ...] = (),
         departures: Departures | None = None) -> Gossiper:
    return Gossiper(node_id or f"n{index}", generation, app(index), random.Random(index),
                    known=known, wall_ms=clock.wall_ms,
                    departures=departures or Departures(tombstone_s))


def mesh(*nodes: Gossiper) -> None:
    """Exchanges until every node holds what any held (two passes of all pairs)."""
    for _ in range(2):
        for a in nodes:
            for b in nodes:
                if a is not b:
                    exchange(a, b)


def owners(g: Gossiper) -> list[str]:
    return [i.node_id for i in g.view().owners]


def removed_everywhere(clock: ManualClock) -> tuple[Gossiper, Gossiper, Gossiper, Gossiper]:
    """n1..n3 live, n4 dead and forgotten by n1 now; every live node holds the tombstone."""
    n1, n2, n3, n4 = (node(i, clock) for i in (1, 2, 3, 4))
    mesh(n1, n2, n3, n4)
    n1.forget("n4")
    mesh(n1, n2, n3)
    assert all(g.states["n4"].status is Status.REMOVED for g in (n1, n2, n3))
    return n1, n2, n3, n4


# -- Expiry ---------------------------------------------------------------------------------


def test_a_tombstone_is_gossiped_for_tombstone_s_then_dropped_by_everyone() -> None:
    clock = ManualClock()
    n1, n2, n3, _ = removed_everywhere(clock)
    assert n1.states["n4"].generation == START_S  # stamped with the forget's second
    clock.advance_s(T - 1)
    assert not any(g.expire().dropped for g in (n1, n2, n3))
    clock.advance_s(1)
    for g in (n1, n2, n3):
        applied = g.expire()
        assert applied.dropped == ["n4"] and applied.records_changed
        assert "n4" not in g.states and "n4" in g.departures.records
        assert g.view().tombstones == () and owners(g) == ["n1", "n2", "n3"]
    assert n1.expire().dropped == []  # once


def test_expiry_reads_the_stamp_that_travels_not_when_a_node_heard_it() -> None:
    """Invariant 1: a node that heard of the departure late drops it at the same second."""
    clock = ManualClock()
    n1, _, _, _ = removed_everywhere(clock)
    late = node(5, clock)
    clock.advance_s(T - 10)
    exchange(late, n1)  # hears of n4 10 s before it expires
    assert late.states["n4"].is_tombstone
    clock.advance_s(10)
    assert late.expire().dropped == ["n4"]


def test_leaving_publishes_left_under_a_generation_stamped_now() -> None:
    clock = ManualClock()
    n1, n2 = node(1, clock), node(2, clock)
    mesh(n1, n2)
    clock.advance_s(500)
    n2.set_status(Status.LEFT)
    assert n2.me.generation == START_S + 500 and n2.me.status is Status.LEFT
    n2.beat()  # a leaving node gossips a few more rounds
    mesh(n1, n2)
    assert n1.states["n2"] == n2.me and owners(n1) == ["n1"]
    clock.advance_s(T)
    assert n1.expire().dropped == ["n2"]
    assert n2.expire().dropped == []  # a node never drops itself


def test_zero_keeps_tombstones_forever() -> None:
    clock = ManualClock()
    n1, n2 = node(1, clock, tombstone_s=0), node(2, clock, tombstone_s=0)
    mesh(n1, n2)
    n1.forget("n2")
    clock.advance_s(10 * 365 * 86_400)
    applied = n1.expire()
    assert not applied.forgotten and n1.states["n2"].is_tombstone


# -- (a) no re-learning from a peer that still gossips the tombstone --------------------------


def test_a_dropped_tombstone_is_not_relearned_from_a_peer_still_holding_it() -> None:
    clock = ManualClock()
    n1, n2, _, _ = removed_everywhere(clock)
    clock.advance_s(T)
    n1.expire()
    # n2 has not run expire() yet (its clock behind, or its round not come): it still
    # gossips the tombstone, both as initiator and as peer.
    assert n2.states["n4"].is_tombstone
    exchange(n2, n1)
    exchange(n1, n2)
    assert "n4" not in n1.states
    n2.expire()
    assert "n4" not in n2.states


def test_a_tombstone_that_arrives_expired_is_recorded_not_stored() -> None:
    clock = ManualClock()
    n1, _, _, _ = removed_everywhere(clock)
    # n6 knew n4 alive and was away the whole time: the tombstone reaches it expired.
    away = node(6, clock, known=(node(4, clock).me,))
    assert owners(away) == ["n4", "n6"]
    clock.advance_s(T + 5)
    applied = away.apply([n1.states["n4"]])
    assert applied.dropped == ["n4"] and applied.ring_changed
    assert "n4" not in away.states and owners(away) == ["n6"]
    assert away.departures.records["n4"].until_s == START_S + T + 5 + T  # full time, locally
    fresh = node(7, clock)
    fresh.apply([n1.states["n4"]])  # never knew n4: only the record is kept
    assert "n4" not in fresh.states and "n4" in fresh.departures.records


# -- (b) a stale live state from a peer cut off the whole time --------------------------------


@pytest.mark.parametrize("stale_initiates", [True, False])
def test_a_stale_live_copy_is_refused_and_its_holder_reminded(stale_initiates: bool) -> None:
    clock = ManualClock()
    n1, n2, n3, n4 = removed_everywhere(clock)
    cut_off = node(5, clock, known=(n4.me, n1.me))  # knew n4 NORMAL; partitioned since
    clock.advance_s(T)
    for g in (n1, n2, n3):
        g.expire()
    assert owners(cut_off) == ["n1", "n4", "n5"]
    if stale_initiates:  # the reminder rides the ACK
        exchange(cut_off, n1)
    else:  # the stale state rides the ACK, the reminder the ACK2
        exchange(n1, cut_off)
    assert "n4" not in n1.states  # not re-learned
    assert "n4" not in cut_off.states and "n4" in cut_off.departures.records
    assert "n4" not in owners(cut_off)
    mesh(n1, n2, n3, cut_off)
    assert all("n4" not in g.states for g in (n1, n2, n3, cut_off))


def test_a_stale_copy_is_refused_even_before_the_tombstone_expired_elsewhere() -> None:
    """The record refuses every generation up to the tombstone's (invariant 2)."""
    clock = ManualClock()
    n1, _, _, n4 = removed_everywhere(clock)
    clock.advance_s(T)
    n1.expire()
    applied = n1.apply([n4.me, n1.departures.records["n4"].tombstone])
    assert "n4" not in n1.states and applied.stale == ["n4"] and not applied.forgotten


def test_after_the_record_lapses_a_stale_copy_is_taken_again() -> None:
    """What the record's time means (documented): a peer cut off for longer than twice
    tombstone_s brings the departed node back as a (down) member; forget it again."""
    clock = ManualClock()
    n1, _, _, n4 = removed_everywhere(clock)
    clock.advance_s(T)
    n1.expire()
    clock.advance_s(T - 1)
    assert not n1.expire().records_changed
    clock.advance_s(1)
    assert n1.expire().records_changed and n1.departures.records == {}
    n1.apply([n4.me])
    assert "n4" in owners(n1)
    n1.forget("n4")  # the way out
    assert n1.states["n4"].generation == START_S + 2 * T


# -- (c) a new incarnation, a new node at the same address ------------------------------------


def test_a_new_node_at_the_departed_address_joins_normally() -> None:
    clock = ManualClock()
    n1, _, _, _ = removed_everywhere(clock)
    clock.advance_s(T)
    n1.expire()
    newcomer = node(4, clock, node_id="n4-new", generation=START_S + T)  # same address
    exchange(newcomer, n1)
    assert owners(n1) == ["n1", "n2", "n3", "n4-new"]
    assert n1.view().addresses[addr(4)] == "n4-new" and n1.view().shadowed == ()
    assert "n4" in n1.departures.records  # the record concerns the old id only


def test_a_new_incarnation_of_the_removed_node_is_taken_and_ends_the_record() -> None:
    clock = ManualClock()
    n1, _, _, _ = removed_everywhere(clock)
    clock.advance_s(T)
    n1.expire()
    restarted = node(4, clock, generation=START_S + T)  # its data kept, started again
    exchange(restarted, n1)
    assert "n4" in owners(n1) and n1.states["n4"].generation == START_S + T
    assert "n4" not in n1.departures.records


def test_a_removal_forged_in_the_second_of_a_restart_is_contested() -> None:
    clock = ManualClock()
    n1, n2 = node(1, clock), node(2, clock)
    mesh(n1, n2)
    restarted = node(2, clock, generation=START_S + 7)
    clock.advance_s(7)  # n1 forges the removal in the very second n2 restarted
    removed = n1.forget("n2")
    assert removed.generation == restarted.me.generation
    applied = restarted.apply([removed])
    assert applied.self_contested and restarted.me.generation == removed.generation + 1
    assert restarted.me.status is Status.NORMAL
    exchange(restarted, n1)
    assert "n2" in owners(n1)


# -- (d) persistence ----------------------------------------------------------------------------


def test_records_are_saved_and_a_restarted_node_does_not_resurrect_the_node(
        tmp_path: Path) -> None:
    clock = ManualClock()
    n1, _, _, n4 = removed_everywhere(clock)
    clock.advance_s(T)
    n1.expire()
    fs = OSFileSystem()
    members.write(fs, str(tmp_path), n1.states.values(), n1.departures.records.values())
    stored = members.read(fs, str(tmp_path))
    assert [s.node_id for s in stored.states] == ["n1", "n2", "n3"]
    assert stored.departed == [n1.departures.records["n4"]]
    clock.advance_s(60)
    again = node(1, clock, generation=START_S + T + 60,
                 known=(*stored.states, n4.me),  # a stale copy in the file too
                 departures=Departures(T, stored.departed))
    assert "n4" not in again.states
    again.apply([n4.me])
    assert "n4" not in again.states and owners(again) == ["n1", "n2", "n3"]


def test_a_version_1_file_is_read_without_records(tmp_path: Path) -> None:
    clock = ManualClock()
    states = [node(1, clock).me, node(2, clock).me]
    body = msgpack.packb([encode_state(s) for s in states], use_bin_type=True)
    head = struct.pack(">8sBI", members.MAGIC, 1, len(body))
    data = head + body + struct.pack(">I", zlib.crc32(head + body))
    assert members.decode_file(data) == (states, [])


@pytest.mark.parametrize("obj, reason", [
    ([], "2 fields"),
    ([["n4", 5, 2, [[1, 2, 5]]], -1], "until_s"),
    ([["n4", 5, 2, [[1, 2, 2]]], 10], "not a tombstone"),
    ([["n4", 5, 2, [[1, 2, 5], [7, 1, 3]]], 10], "beyond"),
    ([["n4", 5, 2, [[9, 2, 5]]], 10], "unknown field"),
])
def test_a_malformed_record_is_refused(obj: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_record(obj)


def test_a_record_round_trips_and_the_file_refuses_a_bad_one() -> None:
    clock = ManualClock()
    n1, _, _, _ = removed_everywhere(clock)
    record = record_of(n1.states["n4"], START_S + 2 * T)
    assert decode_record(wire(encode_record(record))) == record
    assert record.tombstone.peer_address == addr(4) and record.tombstone.tokens == ()
    data = members.encode_file([n1.me], [record])
    assert members.decode_file(data).departed == [record]
    body = msgpack.packb([[encode_state(n1.me)], [["bad"]]], use_bin_type=True)
    head = struct.pack(">8sBI", members.MAGIC, members.FORMAT_VERSION, len(body))
    with pytest.raises(CorruptionError, match=members.STATE_NAME):
        members.decode_file(head + body + struct.pack(">I", zlib.crc32(head + body)))


# -- Membership: a configured address of a departed node ---------------------------------------


def test_a_departed_configured_peer_keeps_the_membership_complete() -> None:
    clock = ManualClock()
    n1, _, _, _ = removed_everywhere(clock)
    me = Member("n1", *addr(1), addr(1)[0], 6379, "dc1", "r1", (101, 102), START_S)
    configured = [addr(2), addr(3), addr(4)]

    def membership(states: list[EndpointState], departed: set[Address]) -> Membership:
        m = Membership(me, configured)
        m.update(states, view(states), departed)
        return m

    assert membership(list(n1.states.values()), set()).complete  # the tombstone's address
    clock.advance_s(T)
    n1.expire()
    states = list(n1.states.values())
    assert membership(states, n1.departures.addresses()).complete  # the record's address
    assert not membership(states, set()).complete  # nothing says addr(4) departed
    running = membership(list(n1.states.values()), n1.departures.addresses())
    clock.advance_s(T)
    n1.expire()  # the record lapses while the node runs: it stays complete
    running.update(states, view(states), n1.departures.addresses())
    assert n1.departures.addresses() == set() and running.complete


# -- Simulation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_sim_a_forgotten_node_leaves_every_node_and_a_cut_off_peer_does_not_revive_it(
        seed: int) -> None:
    tombstone_s = 120
    sim = GossipSim(seed, GossipSimOptions(nodes=12, wire=True, tombstone_s=tombstone_s))
    sim.run_for(10_000)
    dead, cut, operator = sim.nodes[3], sim.nodes[7], sim.nodes[10]
    sim.crash(dead.index)
    sim.isolate(cut.index)  # cut off before the removal, back after the tombstone is gone
    sim.run_for(50_000)
    operator.gossiper.forget(dead.node_id)
    others = [n for n in sim.live_nodes() if n is not cut]
    took = sim.run_until(lambda: all(dead.node_id in n.gossiper.view().tombstones
                                     for n in others), 10_000, step_ms=50)
    assert took >= 0, f"seed={seed}: the removal did not spread"
    sim.run_for(tombstone_s * 1000)
    assert all(dead.node_id not in n.gossiper.states for n in others), f"seed={seed}"
    assert dead.node_id in cut.gossiper.states  # it never heard: still an owner there
    sim.heal()
    took = sim.run_until(lambda: all(dead.node_id not in n.gossiper.states
                                     for n in sim.live_nodes()), 10_000, step_ms=50)
    assert took >= 0, f"seed={seed}: the cut-off node kept the departed node"
    sim.run_for(10_000)
    for n in sim.live_nodes():
        assert dead.node_id not in n.gossiper.states, f"seed={seed}: {n.node_id} revived it"
        assert len(n.gossiper.view().owners) == 11
    sim.run_for(tombstone_s * 1000)  # the records lapse too: nothing of the node is left
    assert all(n.gossiper.departures.records == {} for n in sim.live_nodes())
    assert sim.converged()


# -- ClusterNode: three nodes in one loop over loopback TCP, tombstone_s = 3 s ---------------


def test_a_forgotten_node_goes_with_its_hints_and_stays_gone_after_a_restart(
        tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 3, tombstone_s=3)
        a, b, c = await cluster.open_all()
        dead = c.node_id
        try:
            await cluster.stop(2)
            await wait_for(lambda: dead not in a.up_nodes() and dead not in b.up_nodes())
            await b.write_many(0, [(b"k%d" % i, b"v", 0) for i in range(10)])
            assert b.hints.pending(dead).count == 10  # the coordinator keeps them
            a.forget(dead)
            await wait_for(lambda: all(dead not in n.gossiper.states for n in (a, b)))
            assert dead in b.gossiper.departures.records
            assert b.hints.pending(dead).count == 0 and dead not in b.transport.peers()
            assert b.ready and a.ready  # c's configured address: a departed node's
            saved = members.read(OSFileSystem(), str(tmp_path / "n1"))
            assert dead not in {s.node_id for s in saved.states}
            assert [r.node_id for r in saved.departed] == [dead]
            await cluster.stop(1)
            b = await cluster.open(1)
            assert dead not in b.gossiper.states and b.ready
            assert sorted(b.membership.ring().node_ids()) == sorted([a.node_id, b.node_id])
        finally:
            await cluster.close()
    run(body)


# -- Configuration -------------------------------------------------------------------------------


def test_the_directive_reaches_the_cluster_options(tmp_path: Path) -> None:
    from respkv.config import Config
    from respkv.server import cluster_options

    base = ["--cluster-peers", "127.0.0.1:17001", "--cluster-secret", "s",
            "--dir", str(tmp_path)]
    assert cluster_options(Config.load(base)).tombstone_s == TOMBSTONE_S_DEFAULT == 432_000
    set_ = cluster_options(Config.load([*base, "--gossip-tombstone-seconds", "90"]))
    assert set_.tombstone_s == 90
    with pytest.raises(Exception, match="gossip-tombstone-seconds"):
        Config.load([*base, "--gossip-tombstone-seconds", "-1"])
