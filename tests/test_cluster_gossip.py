"""cluster/gossip.py: the SYN/ACK/ACK2 exchange, target choice, the view, message codecs;
and the simulation (tests/sim/gossip_sim.py) of gossip with phi-accrual failure detection.

Bounds the simulation asserts (gossip interval I = 1 s, push-pull with one random live
target per round plus Cassandra's down-peer and seed targets; network delay 1-30 ms,
timer jitter up to 20 ms):
- Spread: a change made at one node of n reaches every node within
  ``SPREAD_ROUNDS(n) = ceil(log3 n) + 3`` rounds (push-pull epidemics take log3 n + O(ln ln n)
  rounds, Karp et al. 2000). Measured (max over 150 seeds, 60 for n=40): n=10 4.0 s (bound
  6 s), n=20 4.4 s (bound 6 s), n=40 5.2 s (bound 7 s); the mean grows by ~0.8 s per
  doubling: 2.0, 2.9, 3.6 s.
- Cold start: 20 nodes that know only 2 seed addresses all hold the same view (every node's
  generation and fields) within ``SPREAD_ROUNDS(20) = 6`` rounds; measured max 4.8 s.
- Conviction: a crashed node is convicted by every observer within
  ``SPREAD_ROUNDS * I + conviction_delay_s(mean) + I + jitter`` of the crash (its last
  heartbeat reaches every observer within the spread bound, then phi crosses the threshold
  after ``threshold * ln(10) * mean`` seconds of silence, and ``check()`` runs every round);
  with the default detector that is at most 6 + 36.8 + 1.02 = 43.9 s whatever the mean.
  Measured: observers' means 0.62-1.40 s, convictions 13.5-28.3 s after the crash.
- No false conviction: 20 nodes with network delay up to 300 ms, 5% message loss and 100 ms
  timer jitter for 300 s: no conviction at all; the largest phi seen was 3.4 (threshold 8).
Set ``RESPKV_GOSSIP_SEEDS=N`` to run N seeds per simulation scenario (default: a few).
"""

from __future__ import annotations

import math
import os
import random
from functools import partial
from typing import Any

import msgpack
import pytest

from cluster.endpoint_state import (
    Address,
    AppField,
    EndpointState,
    FieldValue,
    Status,
    departure,
    with_fields,
)
from cluster.failure_detector import DetectorOptions, Liveness
from cluster.gossip import NODES_MAX, Ack, Ack2, Digest, Gossiper, Syn, Target, view
from cluster.ring import Ring
from tests.sim.gossip_sim import GossipSim, GossipSimOptions


def app(index: int, tokens: tuple[int, ...] = (), status: Status = Status.NORMAL
        ) -> dict[AppField, FieldValue]:
    return {
        AppField.STATUS: status,
        AppField.PEER_ADDRESS: addr(index),
        AppField.CLIENT_ADDRESS: (addr(index)[0], 6379),
        AppField.DATACENTER: "dc1",
        AppField.RACK: "r1",
        AppField.TOKENS: tokens or (index * 100 + 1, index * 100 + 2),
        AppField.LOAD: 0,
    }


def addr(index: int) -> Address:
    return (f"127.0.2.{index}", 17000)


def gossiper(index: int, generation: int = 100, seeds: tuple[Address, ...] = (),
             rng_seed: int = 0, **kwargs: Any) -> Gossiper:
    return Gossiper(f"n{index}", generation, app(index, **kwargs), random.Random(rng_seed),
                    seeds)


def exchange(initiator: Gossiper, peer: Gossiper) -> None:
    """One SYN/ACK/ACK2 through the wire codecs."""
    syn = Syn.from_wire(wire(initiator.make_syn().to_wire()))
    ack = Ack.from_wire(wire(peer.on_syn(syn).to_wire()))
    ack2, _ = initiator.on_ack(ack)
    peer.on_ack2(Ack2.from_wire(wire(ack2.to_wire())))


def wire(obj: object) -> object:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


# -- The exchange -------------------------------------------------------------------------


def test_one_exchange_gives_both_sides_the_join() -> None:
    a, b, c = gossiper(1), gossiper(2), gossiper(3)
    exchange(b, c)  # b knows c
    a.set_fields({AppField.LOAD: 42})
    exchange(a, b)
    assert dict(a.states) == dict(b.states)
    assert sorted(a.states) == ["n1", "n2", "n3"]
    assert b.states["n1"].get(AppField.LOAD) == 42


def test_the_ack_sends_only_what_the_initiator_lacks() -> None:
    peer = gossiper(1)
    for i in range(2, 8):
        peer.apply([gossiper(i).me])
    states = peer.states
    n2, n3, n4, n5, n6, n7 = (states[f"n{i}"] for i in range(2, 8))
    syn = Syn((
        Digest("n1", peer.me.generation, peer.me.max_version),  # equal: nothing
        Digest("n2", n2.generation + 1, 1),  # a newer incarnation: ask for all of it
        Digest("n3", n3.generation - 1, 50),  # an older one: send ours whole
        Digest("n4", n4.generation, n4.max_version + 3),  # newer: ask from our version
        Digest("n5", n5.generation, 0),  # older: send the delta
        Digest("n9", 7, 3),  # unknown to us: ask for everything
        # n6 and n7 not listed: sent whole
    ))
    ack = peer.on_syn(syn)
    assert ack.requests == (Digest("n2", n2.generation, 0),
                            Digest("n4", n4.generation, n4.max_version),
                            Digest("n9", 0, 0))
    assert ack.states == (n3, n5.delta(0), n6, n7)


def test_ack2_answers_requests_with_deltas_or_whole_states() -> None:
    a = gossiper(1)
    a.set_fields({AppField.LOAD: 5})
    me = a.me
    ack = Ack((Digest("n1", me.generation, 1), Digest("n1x", 0, 0)), ())
    ack2, _ = a.on_ack(ack)
    assert ack2.states == (me.delta(1),)
    ack2, _ = a.on_ack(Ack((Digest("n1", me.generation - 5, 9),), ()))
    assert ack2.states == (me,)  # another incarnation: whole
    ack2, _ = a.on_ack(Ack((Digest("n1", me.generation + 1, 0),), ()))
    assert ack2.states == ()  # the requester holds a newer one than ours: nothing to give


def test_applied_reports_new_restarted_alive_and_changed() -> None:
    a, b = gossiper(1), gossiper(2)
    applied = a.apply([b.me])
    assert applied.new == ["n2"] and applied.alive == ["n2"] and applied.ring_changed
    b.beat()
    applied = a.apply([b.me.delta(a.states["n2"].max_version)])
    assert applied.alive == ["n2"] and applied.changed == {} and not applied.ring_changed
    b.set_fields({AppField.LOAD: 9})
    applied = a.apply([b.me])
    assert applied.changed == {"n2": frozenset({AppField.LOAD})} and not applied.ring_changed
    restarted = gossiper(2, generation=200)
    applied = a.apply([restarted.me])
    assert applied.restarted == ["n2"] and applied.alive == ["n2"] and applied.ring_changed
    assert a.apply([b.me]).alive == []  # the old incarnation changes nothing


def test_a_node_reasserts_itself_over_a_newer_copy_of_its_state() -> None:
    """Invariant 1: a forged removal (or an earlier incarnation with a higher generation)
    of a live node is superseded by the node itself, everywhere."""
    a, b = gossiper(1), gossiper(2)
    exchange(a, b)
    removed = b.forget("n1")
    assert removed.status is Status.REMOVED and b.view().tombstones == ("n1",)
    exchange(b, a)  # a hears of its own removal
    assert a.me.generation == removed.generation + 1 and a.me.status is Status.NORMAL
    assert a.states["n1"] == a.me
    exchange(a, b)
    assert b.states["n1"] == a.me and b.view().tombstones == ()
    stale = gossiper(1, generation=10)
    stale.apply([a.me])  # a node restarted with a generation below its last one
    assert stale.me.generation == a.me.generation + 1


def test_own_state_from_a_peer_is_never_taken() -> None:
    a = gossiper(1)
    older = with_fields(EndpointState("n1", 50, 0), 1, {AppField.LOAD: 1})
    applied = a.apply([older])
    assert not applied.self_contested and a.me.get(AppField.LOAD) == 0


def test_known_states_seed_the_map_but_never_our_own() -> None:
    b = gossiper(2)
    ghost = gossiper(1, generation=999).me
    a = Gossiper("n1", 100, app(1), random.Random(0), (), [b.me, ghost])
    assert sorted(a.states) == ["n1", "n2"] and a.me.generation == 100


# -- Target choice ------------------------------------------------------------------------


def populated(live: int, down: int, seeds: tuple[Address, ...] = (), rng_seed: int = 0
              ) -> Gossiper:
    g = gossiper(0, seeds=seeds, rng_seed=rng_seed)
    g.apply([gossiper(i).me for i in range(1, live + down + 1)])
    return g


def test_a_node_with_no_live_peer_gossips_to_a_seed_every_round() -> None:
    g = gossiper(0, seeds=(addr(0), ("127.0.9.9", 1)))
    assert g.seeds == (("127.0.9.9", 1),)  # our own address is not a seed to us
    for _ in range(5):
        assert g.tick(()) == [Target(None, ("127.0.9.9", 1))]
    g.apply([gossiper(1).me])
    assert g.tick(()) == [Target("n1", addr(1)), Target(None, ("127.0.9.9", 1))]


def test_target_probabilities_follow_cassandra() -> None:
    """One live target every round; a down one with probability down / (live + 1); a seed
    with probability seeds / (live + down), unless the live target was a seed."""
    rounds = 8_000
    unknown_seeds = (("127.0.9.1", 1), ("127.0.9.2", 1))
    g = populated(live=5, down=5, seeds=unknown_seeds)
    live = {f"n{i}" for i in range(1, 6)}
    firsts, downs, seeds = set(), 0, 0
    for _ in range(rounds):
        targets = g.tick(live)
        assert targets[0].node_id in live
        firsts.add(targets[0].node_id)
        downs += any(t.node_id is not None and t.node_id not in live for t in targets)
        seeds += any(t.node_id is None for t in targets)
        assert len({t.address for t in targets}) == len(targets) <= 3
    assert firsts == live
    assert abs(downs / rounds - 5 / 6) < 0.03
    assert abs(seeds / rounds - 2 / 10) < 0.03
    # Seeds that are live nodes: no second seed when the live target already was one.
    g = populated(live=5, down=5, seeds=(addr(1), addr(2)))
    seeded = 0
    for _ in range(rounds):
        targets = g.tick(live)
        if targets[0].address in g.seeds:
            assert all(t.address not in g.seeds for t in targets[1:])
        else:
            seeded += any(t.address in g.seeds for t in targets[1:])
    assert abs(seeded / rounds - 3 / 5 * 2 / 10) < 0.03


def test_tombstones_and_addressless_nodes_are_never_targets() -> None:
    g = populated(live=0, down=2)
    g.forget("n1")
    for _ in range(50):
        assert all(t.node_id == "n2" for t in g.tick(()))


def test_target_choice_replays_from_the_seed() -> None:
    runs = [[populated(3, 3, (addr(1),), rng_seed=9).tick({"n1", "n2"}) for _ in range(20)]
            for _ in range(2)]
    assert runs[0] == runs[1]


# -- The view -------------------------------------------------------------------------------


def test_two_owners_of_one_token_resolve_to_the_smaller_id_everywhere() -> None:
    a = gossiper(1, tokens=(10, 20))
    b = gossiper(2, tokens=(20, 30))
    exchange(a, b)
    for g in (a, b):
        ring = Ring.build(g.view().owners)
        assert ring.owner(20) == "n1" and ring.owner(30) == "n2"


def test_one_address_two_nodes_the_newer_generation_keeps_it() -> None:
    old = gossiper(1, generation=100).me
    new = Gossiper("n1-new", 200, app(1), random.Random(0)).me
    tie = Gossiper("n0-tie", 100, app(1), random.Random(0)).me
    other = gossiper(2).me
    for states in ([old, new, other], [new, other, old]):
        v = view(states)
        assert [i.node_id for i in v.owners] == ["n1-new", "n2"]
        assert v.shadowed == ("n1",) and v.addresses[addr(1)] == "n1-new"
    assert view([old, tie]).addresses[addr(1)] == "n0-tie"  # same generation: smaller id


def test_view_separates_owners_joining_leaving_and_tombstones() -> None:
    states = [gossiper(1).me, gossiper(2, status=Status.JOINING).me,
              gossiper(3, status=Status.LEAVING).me, gossiper(4, status=Status.LEFT).me,
              departure(gossiper(5).me, Status.REMOVED, 0)]
    v = view(states)
    assert [i.node_id for i in v.owners] == ["n1", "n3"]
    assert [i.node_id for i in v.joining] == ["n2"]
    assert v.leaving == ("n3",) and v.tombstones == ("n4", "n5")
    assert view(reversed(states)) == v


# -- Message codecs ---------------------------------------------------------------------------


def test_messages_round_trip() -> None:
    g = populated(3, 0)
    syn = g.make_syn()
    assert Syn.from_wire(wire(syn.to_wire())) == syn
    ack = Ack(syn.digests, tuple(g.states.values()))
    assert Ack.from_wire(wire(ack.to_wire())) == ack
    ack2 = Ack2(tuple(s.delta(1) for s in g.states.values()))
    assert Ack2.from_wire(wire(ack2.to_wire())) == ack2


@pytest.mark.parametrize("cls, obj, reason", [
    (Syn, [], "1 fields"),
    (Syn, [[["n1", 1]]], "digest"),
    (Syn, [[["n1", 1, 2], ["n1", 3, 4]]], "twice"),
    (Syn, [[["", 1, 2]]], "node id"),
    (Syn, [[["n1", -1, 2]]], "generation"),
    (Syn, [[["n1", 1, 2**63]]], "version"),
    (Syn, [[[f"n{i}", 1, 1] for i in range(NODES_MAX + 1)]], "at most"),
    (Syn, ["digests"], "not a list"),
    (Ack, [[]], "2 fields"),
    (Ack, [[], [[]]], "4 fields"),
    (Ack2, [[["n1", 1, 1, []], ["n1", 2, 2, []]]], "twice"),
    (Ack2, None, "1 fields"),
])
def test_message_decoders_refuse_malformed(cls: Any, obj: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        cls.from_wire(obj)


# -- Simulation ---------------------------------------------------------------------------------

INTERVAL_S = 1.0


def spread_rounds(n: int) -> int:
    return math.ceil(math.log(n, 3)) + 3


def sim_seeds(default: int) -> list[int]:
    return list(range(int(os.environ.get("RESPKV_GOSSIP_SEEDS", default))))


def warm(seed: int, **options: Any) -> GossipSim:
    """A converged 20-node cluster, 40 s in (detectors have learned their means)."""
    sim = GossipSim(seed, GossipSimOptions(wire=False, **options))
    sim.run_for(40_000)
    assert sim.converged(), f"seed={seed}"
    return sim


def convicted_by(sim: GossipSim, victim: str) -> dict[str, int]:
    """Observer -> tick of its first conviction of ``victim``."""
    out: dict[str, int] = {}
    for tick, observer, change in sim.transitions:
        if change.peer == victim and change.to is Liveness.DOWN:
            out.setdefault(observer, tick)
    return out


def everyone_holds(sim: GossipSim, node_id: str, load: int) -> bool:
    return all(x.gossiper.states[node_id].get(AppField.LOAD) == load for x in sim.nodes)


def up_everywhere(sim: GossipSim, index: int) -> bool:
    """Every live node holds node ``index`` up, and it holds every live node up."""
    node = sim.nodes[index]
    return all(other.detector.reported(node.node_id) is Liveness.UP
               and node.detector.reported(other.node_id) is Liveness.UP
               for other in sim.live_nodes() if other is not node)


@pytest.mark.parametrize("seed", sim_seeds(8))
def test_sim_cold_start_converges_within_the_bound(seed: int) -> None:
    """20 nodes that know only two seed addresses, every message through the codecs."""
    sim = GossipSim(seed, GossipSimOptions(nodes=20, seeds=2, wire=True))
    took = sim.run_until(sim.converged, 60_000, step_ms=100)
    assert 0 <= took <= spread_rounds(20) * 1000, f"seed={seed} took {took} ms"
    v = sim.nodes[0].gossiper.view()
    assert len(v.owners) == 20 and v.shadowed == () and v.tombstones == ()
    assert all(n.gossiper.view() == v for n in sim.nodes)  # invariant 3: equal views


@pytest.mark.parametrize("n, seeds", [(10, 6), (20, 10), (40, 3)])
def test_sim_a_change_spreads_within_log3_n_plus_3_rounds(n: int, seeds: int) -> None:
    worst = 0
    for seed in sim_seeds(seeds):
        sim = GossipSim(seed, GossipSimOptions(nodes=n, wire=False))
        sim.run_for(8_000 + seed * 37)  # converged, and at an arbitrary phase
        assert sim.converged()
        changed = sim.nodes[seed % n]
        changed.gossiper.set_fields({AppField.LOAD: 12345})
        took = sim.run_until(partial(everyone_holds, sim, changed.node_id, 12345), 60_000,
                             step_ms=10)
        assert 0 <= took <= spread_rounds(n) * 1000, f"seed={seed} n={n} took {took} ms"
        worst = max(worst, took)
    print(f"n={n}: worst spread {worst} ms, bound {spread_rounds(n)} rounds")


@pytest.mark.parametrize("seed", sim_seeds(3))
def test_sim_a_crashed_node_is_convicted_within_the_bound(seed: int) -> None:
    sim = warm(seed)
    victim = sim.nodes[seed % 20]
    crashed_at = sim.clock.now
    sim.crash(victim.index)
    detector = sim.options.detector
    jitter_ms = sim.options.timer_jitter_ms
    bound_ms = (spread_rounds(20) * INTERVAL_S + detector.conviction_delay_max_s
                + INTERVAL_S) * 1000 + jitter_ms
    observers = sim.live_nodes()
    took = sim.run_until(lambda: len(convicted_by(sim, victim.node_id)) == len(observers),
                         int(bound_ms), step_ms=100)
    assert took >= 0, f"seed={seed}: not convicted everywhere within {bound_ms} ms"
    for observer in observers:
        mean_s = observer.detector.mean_interval_s(victim.node_id)
        assert mean_s is not None
        at = convicted_by(sim, victim.node_id)[observer.node_id] - crashed_at
        own_bound = (spread_rounds(20) * INTERVAL_S + detector.conviction_delay_s(mean_s)
                     + INTERVAL_S) * 1000 + jitter_ms
        assert at <= own_bound, (seed, observer.node_id, at, own_bound)
    # Nobody else was convicted meanwhile.
    assert {t.peer for _, _, t in sim.downs()} == {victim.node_id}


@pytest.mark.parametrize("seed", sim_seeds(2))
def test_sim_nodes_answering_within_jitter_are_never_convicted(seed: int) -> None:
    sim = GossipSim(seed, GossipSimOptions(wire=False, delay_ms_max=300,
                                           drop_probability=0.05, timer_jitter_ms=100))
    sim.run_for(200_000)
    assert sim.downs() == [], f"seed={seed}"
    ups = [t for t in sim.transitions if t[2].to is Liveness.UP]
    assert len(ups) == 20 * 19  # each peer reported up exactly once, at first contact
    assert sim.converged()


def test_sim_negative_control_a_low_threshold_convicts_live_nodes() -> None:
    """The no-false-conviction check can fail: at threshold 1.5 the same network convicts."""
    sim = GossipSim(0, GossipSimOptions(
        wire=False, delay_ms_max=300, drop_probability=0.05, timer_jitter_ms=100,
        detector=DetectorOptions(phi_convict_threshold=1.5)))
    sim.run_for(60_000)
    assert len(sim.downs()) > 0


@pytest.mark.parametrize("seed", sim_seeds(2))
def test_sim_a_partitioned_node_rejoins_cleanly(seed: int) -> None:
    sim = warm(seed)
    cut = sim.nodes[5 + seed % 15]
    sim.isolate(cut.index)
    sim.run_for(60_000)
    others = [n for n in sim.nodes if n is not cut]
    assert set(convicted_by(sim, cut.node_id)) == {n.node_id for n in others}
    assert not cut.detector.available()  # it convicted everyone
    cut.gossiper.set_fields({AppField.LOAD: 777})  # a change made while cut off
    others[0].gossiper.set_fields({AppField.LOAD: 888})
    sim.heal()
    took = sim.run_until(lambda: sim.converged() and up_everywhere(sim, cut.index),
                         (spread_rounds(20) + 1) * 1000, step_ms=50)
    assert took >= 0, f"seed={seed}: not converged after the heal"
    assert all(n.gossiper.states[cut.node_id].get(AppField.LOAD) == 777 for n in sim.nodes)
    assert cut.gossiper.states[others[0].node_id].get(AppField.LOAD) == 888
    assert cut.gossiper.me.generation == others[0].gossiper.states[cut.node_id].generation
    assert sim.contested == []


@pytest.mark.parametrize("seed", sim_seeds(2))
def test_sim_a_restarted_node_supersedes_its_old_state_everywhere(seed: int) -> None:
    sim = warm(seed)
    index = seed % 20
    old = sim.nodes[index]
    old_generation = old.gossiper.me.generation
    sim.crash(index)
    sim.run_for(10_000)
    new = sim.restart(index)
    assert new.gossiper.me.generation > old_generation and new.tokens == old.tokens
    took = sim.run_until(lambda: sim.converged() and up_everywhere(sim, index),
                         (spread_rounds(20) + 1) * 1000, step_ms=50)
    assert took >= 0, f"seed={seed}"
    for node in sim.nodes:
        state = node.gossiper.states[new.node_id]
        assert state.generation == new.gossiper.me.generation
        assert state.tokens == old.tokens and state.status is Status.NORMAL
    assert sim.contested == []


@pytest.mark.parametrize("seed", sim_seeds(2))
def test_sim_a_forgotten_dead_node_becomes_a_tombstone_everywhere(seed: int) -> None:
    sim = warm(seed)
    dead = sim.nodes[3]
    sim.crash(dead.index)
    sim.run_for(50_000)  # convicted everywhere by now (the bound is 43.9 s)
    operator = sim.nodes[10]
    assert not operator.detector.is_available(dead.node_id)
    operator.gossiper.forget(dead.node_id)
    took = sim.run_until(lambda: all(n.gossiper.view().tombstones == (dead.node_id,)
                                     for n in sim.live_nodes()),
                         spread_rounds(20) * 1000, step_ms=50)
    assert took >= 0, f"seed={seed}"
    for node in sim.live_nodes():
        assert len(node.gossiper.view().owners) == 19


def test_sim_replays_from_its_seed() -> None:
    runs = []
    for _ in range(2):
        sim = GossipSim(11, GossipSimOptions(nodes=8, wire=False, drop_probability=0.1))
        sim.run_for(5_000)
        sim.crash(2)
        sim.run_for(40_000)
        runs.append((sim.messages, sim.transitions,
                     {n.node_id: dict(n.gossiper.states) for n in sim.nodes}))
    assert runs[0] == runs[1]
