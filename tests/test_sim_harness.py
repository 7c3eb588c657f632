"""The simulation harness itself (tests/sim): virtual time, the in-memory network's faults and
determinism, and the history checkers against hand-made good and bad histories."""

from __future__ import annotations

import asyncio
import random

from cluster.clock import Clock
from cluster.messages import ErrorCode, Message, Ping, Pong, Read, ReadReply, Write, WriteAck
from cluster.sibling_codec import encode
from cluster.transport import PeerTimeout, RemoteError, Transport
from cluster.version import Version, merge
from tests.sim.checkers import (
    AckObserver,
    History,
    check_all,
    check_convergence,
    check_deleted_stay_deleted,
    check_hints_delivered,
    check_no_lost_acked_write,
    check_no_value_from_nowhere,
    check_siblings_concurrent,
)
from tests.sim.sim_clock import SimClock
from tests.sim.sim_network import NetworkOptions, SimNetwork, SimTransport, TraceEvent

# SimClock -------------------------------------------------------------------------------


def test_sim_clock_is_a_clock_and_fires_in_order() -> None:
    sim = SimClock(tick_ms=1)
    clock: Clock = sim
    fired: list[tuple[str, int]] = []
    clock.call_later(0.002, lambda: fired.append(("b", sim.now)))
    clock.call_later(0.001, lambda: fired.append(("a", sim.now)))
    clock.call_later(0.002, lambda: fired.append(("c", sim.now)))  # same tick: FIFO
    clock.call_later(0.0015, lambda: fired.append(("rounded_up", sim.now)))
    clock.call_later(0.001, lambda: fired.append(("x", sim.now))).cancel()
    assert sim.run_until_idle(ticks_max=100)
    assert fired == [("a", 1), ("b", 2), ("c", 2), ("rounded_up", 2)]
    assert clock.monotonic() == 0.002
    assert clock.wall_ms() == sim.wall_ms() == 1_700_000_000_002


def test_sim_clock_run_bounds_stop_a_livelock() -> None:
    sim = SimClock()

    def again() -> None:
        sim.call_in(1, again)

    again()
    assert not sim.run_until_idle(ticks_max=50)
    assert sim.now <= 50
    assert not sim.run_while(lambda: True, ticks_max=10)
    sim.run_until(sim.now + 5)
    assert sim.pending() == 1


def test_sim_clock_ticks_of_ten_ms() -> None:
    sim = SimClock(tick_ms=10)
    seen: list[int] = []
    sim.call_later(0.3, lambda: seen.append(sim.now))  # 300 ms = 30 ticks, not 31
    sim.call_later(0.301, lambda: seen.append(sim.now))  # rounds up to 31 ticks
    sim.run_until_idle(100)
    assert seen == [30, 31]


# SimNetwork -----------------------------------------------------------------------------

NODES = ["n1", "n2", "n3", "n4"]


def echo(sender: str, message: Message) -> Message:
    return Pong() if isinstance(message, Ping) else ReadReply(None)


Outcome = Message | str  # the reply, or the name of the exception the request failed with


def ask(transport: SimTransport, peer: str, message: Message, timeout_s: float,
        into: list[tuple[str, Outcome]], tag: str) -> None:
    """Send a request; append (tag, outcome) to ``into`` when its future completes."""
    def done(future: asyncio.Future[Message]) -> None:
        error = future.exception()
        into.append((tag, future.result() if error is None else type(error).__name__))

    transport.request(peer, message, timeout_s).add_done_callback(done)


def world(seed: int, options: NetworkOptions) -> tuple[SimClock, SimNetwork,
                                                        dict[str, SimTransport]]:
    clock = SimClock()
    network = SimNetwork(clock, random.Random(seed), options)
    transports = {node: network.attach(node, echo) for node in NODES}
    return clock, network, transports


def random_traffic(seed: int, options: NetworkOptions, requests: int = 200
                   ) -> tuple[list[TraceEvent], list[tuple[str, Outcome]]]:
    """A seeded workload of requests between random nodes; (trace, replies seen)."""
    clock, network, transports = world(seed, options)
    workload = random.Random(seed * 7919 + 1)
    replies: list[tuple[str, Outcome]] = []
    for i in range(requests):
        src, dst = workload.sample(NODES, 2)
        clock.call_in(workload.randint(0, 100),
                      lambda src=src, dst=dst, i=i:  # type: ignore[misc]
                      ask(transports[src], dst, Ping(), 0.05, replies, str(i)))
    assert clock.run_until_idle(ticks_max=10_000)
    return network.trace, replies


FAULTY = NetworkOptions(delay_ticks_min=1, delay_ticks_max=30, drop_probability=0.1,
                        duplicate_probability=0.1, reorder=True)


def test_same_seed_same_trace() -> None:
    first = random_traffic(42, FAULTY)
    second = random_traffic(42, FAULTY)
    assert first == second
    assert len(first[0]) > 400


def test_different_seeds_differ() -> None:
    assert random_traffic(1, FAULTY)[0] != random_traffic(2, FAULTY)[0]


def test_every_request_completes_exactly_once() -> None:
    _, replies = random_traffic(3, FAULTY, requests=300)
    ids = [int(tag) for tag, _ in replies]
    assert sorted(ids) == list(range(300))
    outcomes = {outcome for _, outcome in replies}
    assert outcomes == {Pong(), "PeerTimeout"}
    answered = sum(1 for _, outcome in replies if outcome == Pong())
    assert 150 < answered < 300  # loss of 10% each way: some, not all, time out


def test_no_reorder_keeps_each_link_fifo() -> None:
    options = NetworkOptions(delay_ticks_min=0, delay_ticks_max=50, duplicate_probability=0.2,
                             reorder=False)
    clock, network, transports = world(5, options)
    for i in range(200):
        clock.call_in(i // 10, lambda i=i: transports["n1"].send(  # type: ignore[misc]
            "n2", Read(0, str(i).encode())))
    clock.run_until_idle(10_000)
    delivered = [int(e.packet.message.key) for e in network.trace  # type: ignore[union-attr]
                 if e.event == "deliver"]
    assert len(delivered) > 200  # duplicates arrived too
    assert delivered == sorted(delivered)


def test_reorder_on_really_reorders() -> None:
    options = NetworkOptions(delay_ticks_min=0, delay_ticks_max=50, reorder=True)
    clock, network, transports = world(5, options)
    for i in range(200):
        clock.call_in(i // 10, lambda i=i: transports["n1"].send(  # type: ignore[misc]
            "n2", Read(0, str(i).encode())))
    clock.run_until_idle(10_000)
    delivered = [int(e.packet.message.key) for e in network.trace  # type: ignore[union-attr]
                 if e.event == "deliver"]
    assert sorted(delivered) == list(range(200))
    assert delivered != sorted(delivered)


def test_delay_bounds_are_respected() -> None:
    options = NetworkOptions(delay_ticks_min=7, delay_ticks_max=9)
    clock, network, transports = world(9, options)
    for _ in range(50):
        transports["n1"].send("n2", Ping())
    clock.run_until_idle(1000)
    ticks = [e.tick for e in network.trace if e.event == "deliver"]
    assert len(ticks) == 50
    assert min(ticks) >= 7
    assert max(ticks) <= 9


def test_partition_really_cuts_and_heal_restores() -> None:
    clock, network, transports = world(11, NetworkOptions())
    network.partition({"n1", "n2"}, {"n3", "n4"})
    replies: list[tuple[str, Outcome]] = []
    for dst in ("n2", "n3", "n4"):
        ask(transports["n1"], dst, Ping(), 0.1, replies, dst)
    clock.run_until_idle(1000)
    assert sorted(replies) == [("n2", Pong()), ("n3", "PeerTimeout"), ("n4", "PeerTimeout")]
    crossing = [e for e in network.trace if e.event == "deliver"
                and {e.packet.src, e.packet.dst} & {"n3", "n4"}]
    assert crossing == []
    network.heal()
    replies.clear()
    ask(transports["n1"], "n3", Ping(), 0.1, replies, "n3")
    clock.run_until_idle(1000)
    assert replies == [("n3", Pong())]


def test_partition_drops_packets_in_flight() -> None:
    clock, network, transports = world(12, NetworkOptions(delay_ticks_min=10,
                                                          delay_ticks_max=10))
    transports["n1"].send("n2", Ping())
    clock.advance(5)
    network.cut("n1", "n2")  # one direction only
    transports["n2"].send("n1", Ping())
    clock.run_until_idle(100)
    events = [(e.event, e.packet.src, e.reason) for e in network.trace if e.event != "send"]
    assert events == [("drop", "n1", "partition"), ("deliver", "n2", "")]


def test_total_loss_and_total_duplication() -> None:
    clock, network, transports = world(13, NetworkOptions(drop_probability=1.0))
    got: list[tuple[str, Outcome]] = []
    ask(transports["n1"], "n2", Ping(), 0.05, got, "lost")
    clock.run_until_idle(1000)
    assert got == [("lost", "PeerTimeout")]
    assert not [e for e in network.trace if e.event == "deliver"]

    clock, network, transports = world(13, NetworkOptions(duplicate_probability=1.0))
    got = []
    ask(transports["n1"], "n2", Ping(), 0.05, got, "doubled")
    clock.run_until_idle(1000)
    assert got == [("doubled", Pong())]  # two requests, four replies: one wins
    requests_delivered = [e for e in network.trace
                          if e.event == "deliver" and isinstance(e.packet.message, Ping)]
    assert len(requests_delivered) == 2


def test_crash_and_restart() -> None:
    clock, network, transports = world(14, NetworkOptions(delay_ticks_min=5,
                                                          delay_ticks_max=5))
    got: list[tuple[str, Outcome]] = []
    ask(transports["n2"], "n1", Ping(), 0.05, got, "from_n2")
    ask(transports["n1"], "n2", Ping(), 0.05, got, "to_n2")
    clock.advance(1)
    network.crash("n2")
    clock.advance(5)  # n1's ping reaches the crashed n2; n2's ping reaches n1, which answers
    transports["n2"].send("n1", Ping())  # the old incarnation's transport is dead
    restarted = network.restart("n2", echo)  # before n1's answer to the old n2 arrives
    clock.run_until_idle(1000)
    # n2's old request never completes (its process is gone); the request to it times out.
    assert got == [("to_n2", "PeerTimeout")]
    reasons = [e.reason for e in network.trace if e.event == "drop"]
    assert reasons == ["crashed", "no request waits"]
    ask(restarted, "n1", Ping(), 0.05, got, "n2_again")
    ask(transports["n1"], "n2", Ping(), 0.05, got, "to_n2_again")
    clock.run_until_idle(1000)
    assert got[1:] == [("n2_again", Pong()), ("to_n2_again", Pong())]
    sends = [e for e in network.trace if e.event == "send"]
    assert len(sends) == 2 + 1 + 4  # two pings and a pong, then two pings and two pongs


def test_sim_transport_is_a_transport_with_its_errors() -> None:
    clock, network, transports = world(16, NetworkOptions())

    def refuse(sender: str, message: Message) -> Message:
        raise RemoteError(ErrorCode.OVERLOADED, "busy")

    network.attach("busy", refuse)
    transport: Transport = transports["n1"]
    assert transport.node_id == "n1"
    got: list[tuple[str, Outcome]] = []
    ask(transports["n1"], "busy", Ping(), 0.05, got, "busy")
    ask(transports["n1"], "nobody", Ping(), 0.05, got, "nobody")
    ask(transports["n1"], "n2", Ping(), 0.05, got, "n2")
    clock.run_until(0)  # done-callbacks run as events (call_soon), as in asyncio
    assert got == [("nobody", "PeerUnavailable")]  # at once, before any time passes
    clock.run_until_idle(1000)
    assert sorted(got[1:]) == [("busy", "RemoteError"), ("n2", Pong())]


def test_spawned_coroutines_await_requests_in_virtual_time() -> None:
    clock, network, transports = world(17, NetworkOptions(delay_ticks_min=3,
                                                          delay_ticks_max=3))

    async def ping_all() -> list[str]:
        out = []
        for peer in ("n2", "n3"):
            try:
                reply = await transports["n1"].request(peer, Ping(), 0.05)
                out.append(f"{peer}:{type(reply).__name__}@{clock.now}")
            except PeerTimeout:
                out.append(f"{peer}:timeout@{clock.now}")
        return out

    network.crash("n3")
    result = network.loop.spawn(ping_all())
    clock.run_until_idle(1000)
    assert result.result() == ["n2:Pong@6", "n3:timeout@56"]


def test_observer_sees_every_event() -> None:
    clock, network, transports = world(15, FAULTY)
    seen: list[TraceEvent] = []
    network.on_message(seen.append)
    for _ in range(50):
        transports["n1"].request("n3", Ping(), 0.05)
    clock.run_until_idle(1000)
    assert seen == network.trace
    assert {e.event for e in seen} == {"send", "deliver", "drop"}


def test_swarm_options_are_drawn_from_the_seed() -> None:
    assert NetworkOptions.swarm(random.Random(3)) == NetworkOptions.swarm(random.Random(3))
    drawn = {NetworkOptions.swarm(random.Random(seed)) for seed in range(20)}
    assert len(drawn) > 10


# Checkers -------------------------------------------------------------------------------

K = (0, b"k")


def v(writer: bytes, clock: dict[bytes, int], value: bytes | None, ts: int = 100) -> Version:
    return ({a: (n, ts) for a, n in sorted(clock.items())}, ts, 0, writer, value)


A1 = v(b"a", {b"a": 1}, b"x")
A2 = v(b"a", {b"a": 2}, b"y", 200)  # descends A1
B1 = v(b"b", {b"a": 1, b"b": 1}, b"z", 150)  # descends A1, concurrent with A2
A1_REUSED = v(b"a", {b"a": 1}, b"other", 300)  # the same counter for another write (kv679)


def good_history() -> History:
    history = History()
    for version in (A1, A2, B1):
        history.write(K, version)
        history.ack(K, version)
    return history


def test_checkers_accept_a_good_history() -> None:
    both = merge((A2,), (B1,))
    state = {"n1": {K: both}, "n2": {K: tuple(reversed(both))}, "n3": {K: both}}
    assert check_all(good_history(), state) == []


def test_checkers_flag_divergent_replicas() -> None:
    state = {"n1": {K: (A2,)}, "n2": {K: (A1,)}}
    found = check_convergence(state)
    assert [x.check for x in found] == ["convergence"]
    assert "n2" in str(found[0])


def test_checkers_flag_a_replica_missing_the_key() -> None:
    state = {"n1": {K: (A1,)}, "n2": {}}
    assert [x.check for x in check_convergence(state)] == ["convergence"]
    assert check_convergence(state, replicas_of=lambda key: ["n1"]) == []


def test_checkers_flag_a_lost_acked_write() -> None:
    state = {"n1": {K: (A2,)}}  # B1 was acked but is neither kept nor dominated
    lost = check_no_lost_acked_write(good_history().acked, state)
    assert [x.check for x in lost] == ["no_lost_acked_write"]
    assert "z" in str(lost[0])


def test_checkers_flag_a_reused_counter() -> None:
    history = History()
    history.write(K, A1)
    history.ack(K, A1)
    history.write(K, A1_REUSED)
    history.ack(K, A1_REUSED)
    state = {"n1": {K: (A1_REUSED,)}}  # merge kept one of two versions with equal clocks
    assert [x.check for x in check_all(history, state)] == ["no_lost_acked_write"]


def test_checkers_flag_ordered_siblings() -> None:
    state = {"n1": {K: (A1, A2)}}
    assert [x.check for x in check_siblings_concurrent(state)] == ["siblings_concurrent"]
    state = {"n1": {K: (A1, A1)}}
    assert [x.check for x in check_siblings_concurrent(state)] == ["siblings_concurrent"]


def test_checkers_flag_a_value_nobody_wrote() -> None:
    history = good_history()
    invented = v(b"a", {b"a": 2}, b"invented", 200)
    state = {"n1": {K: (invented,)}}
    assert [x.check for x in check_no_value_from_nowhere(history.written, state)] == [
        "no_value_from_nowhere"]
    other_key = {"n1": {(0, b"other"): (A1,)}}  # written, but to another key
    assert len(check_no_value_from_nowhere(history.written, other_key)) == 1


def test_ack_observer_records_what_replicas_acknowledged() -> None:
    clock = SimClock()
    network = SimNetwork(clock, random.Random(1), NetworkOptions())
    stored: dict[str, list[bytes]] = {"r1": [], "r2": []}

    def replica(name: str) -> object:
        def handle(sender: str, message: Message) -> Message:
            if isinstance(message, Write):
                stored[name].append(message.siblings)
                return WriteAck()
            return ReadReply(None)
        return handle

    coordinator = network.attach("c", echo)
    network.attach("r1", replica("r1"))  # type: ignore[arg-type]
    network.attach("r2", replica("r2"))  # type: ignore[arg-type]
    observer = AckObserver()
    network.on_message(observer)
    network.cut("r2", "c")  # r2 stores the write but its ack never arrives
    for name in ("r1", "r2"):
        coordinator.request(name, Write(0, b"k", encode((A1,))), 0.05)
    clock.run_until_idle(1000)
    assert len(stored["r2"]) == 1
    assert observer.acked == [(K, A1)]
    assert observer.hinted == []
    coordinator.request("r1", Write(0, b"k", encode((A2,)), hint_for="r9"), 0.05)
    clock.run_until_idle(1000)
    assert observer.acked[-1] == (K, A2)  # a stand-in's ack counts as an ack (L3) ...
    assert observer.hinted == [("r9", K, A2)]  # ... and as a hint for r9 (H1)


def test_checkers_flag_a_hint_that_never_reached_its_owner() -> None:
    state = {"n1": {K: (A2,)}, "n2": {}}
    assert check_hints_delivered([("n1", K, A1), ("n1", K, A2)], state) == []  # A2 covers A1
    found = check_hints_delivered([("n2", K, A1)], state)
    assert [x.check for x in found] == ["hints_delivered"] and "n2" in str(found[0])


def test_checkers_flag_a_deleted_value_that_came_back() -> None:
    tombstone = v(b"b", {b"a": 2, b"b": 1}, None, 300)  # deletes A2 (and A1)
    later = v(b"c", {b"a": 2, b"b": 1, b"c": 1}, b"new", 400)  # written after the delete
    concurrent = v(b"c", {b"a": 1, b"c": 1}, b"other", 250)  # not seen by the delete
    good = {"n1": {K: (tombstone,)}, "n2": {K: (later,)}, "n3": {K: (tombstone, concurrent)}}
    assert check_deleted_stay_deleted([(K, tombstone)], good) == []
    back = {"n1": {K: (tombstone,)}, "n2": {K: (A2,)}}
    found = check_deleted_stay_deleted([(K, tombstone)], back)
    assert [x.check for x in found] == ["deleted_stay_deleted"] and "n2" in str(found[0])
    assert check_deleted_stay_deleted([(K, tombstone)], back, replicas_of=lambda k: ["n1"]) == []
