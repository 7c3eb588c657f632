"""PeerTransport over real sockets on 127.0.0.1 (free ports), each test in its own event loop
(asyncio.run): round trips, multiplexing, timeouts, lost peers and reconnects, refusals,
back-pressure, and a loopback latency/throughput measurement."""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from cluster import messages as m
from cluster import wire
from cluster.peer_auth import Handshake, HandshakeError, Role
from cluster.peer_link import LinkState, backoff_s
from cluster.peer_transport import PeerTransport
from cluster.transport import (
    DeferredReply,
    Handler,
    PeerOverloaded,
    PeerTimeout,
    PeerUnavailable,
    RemoteError,
    Transport,
    TransportConfig,
)

SECRET = b"a shared cluster secret"
V = m.PROTOCOL_VERSION


def run(coro: Coroutine[Any, Any, None], timeout_s: float = 10.0,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> None:
    """A fresh loop per test, with a hard deadline so a hang fails instead of stalling CI."""
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout_s)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(bounded())


def config(node_id: str, **kwargs: Any) -> TransportConfig:
    kwargs.setdefault("secret", SECRET)
    kwargs.setdefault("cluster_name", "test")
    kwargs.setdefault("backoff_s_min", 0.02)
    kwargs.setdefault("backoff_s_max", 0.1)
    return TransportConfig(node_id=node_id, **kwargs)


def echo(_peer: str, message: m.Message) -> m.Message:
    if isinstance(message, m.Read):
        return m.ReadReply(message.key)
    return m.WriteAck()


async def start_server(handler: Handler = echo, port: int = 0,
                       **kwargs: Any) -> tuple[PeerTransport, int]:
    server = PeerTransport(config("server", **kwargs), handler, random.Random(1))
    _, bound = await server.listen("127.0.0.1", port)
    return server, bound


def client_to(port: int, peer: str = "server", **kwargs: Any) -> PeerTransport:
    client = PeerTransport(config("client", **kwargs), echo, random.Random(2))
    client.add_peer(peer, "127.0.0.1", port)
    return client


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def error_of(future: Awaitable[m.Message]) -> BaseException:
    try:
        await future
    except Exception as exc:
        return exc
    raise AssertionError("expected the request to fail")


LOOPS = [pytest.param(None, id="asyncio"), pytest.param(uvloop.new_event_loop, id="uvloop")]


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_request_reply_round_trip(
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
    async def main() -> None:
        seen: list[tuple[str, m.Message]] = []

        def handler(peer: str, message: m.Message) -> m.Message:
            seen.append((peer, message))
            if isinstance(message, m.Read) and message.key == b"missing":
                raise RemoteError(m.ErrorCode.UNSUPPORTED, "no such thing")
            if isinstance(message, m.Read) and message.key == b"bug":
                raise ValueError("boom")
            if isinstance(message, m.Read) and message.key == b"wrong":
                return m.WriteAck()
            return echo(peer, message)

        server, port = await start_server(handler)
        client: Transport = client_to(port)
        assert await client.request("server", m.Read(3, b"k"), 2) == m.ReadReply(b"k")
        write = m.Write(1, b"k", b"siblings", "owner-node")
        assert await client.request("server", write, 2) == m.WriteAck()
        assert await client.request("server", m.Ping(), 2) == m.Pong()
        assert seen == [("client", m.Read(3, b"k")), ("client", write)]
        remote = await error_of(client.request("server", m.Read(0, b"missing"), 2))
        assert isinstance(remote, RemoteError) and remote.code == m.ErrorCode.UNSUPPORTED
        remote = await error_of(client.request("server", m.Read(0, b"bug"), 2))
        assert isinstance(remote, RemoteError) and remote.code == m.ErrorCode.INTERNAL
        assert "ValueError: boom" in remote.text
        remote = await error_of(client.request("server", m.Read(0, b"wrong"), 2))
        assert isinstance(remote, RemoteError) and "answered WriteAck to Read" in remote.text
        unknown = await error_of(client.request("nobody", m.Ping(), 2))
        assert isinstance(unknown, PeerUnavailable)
        assert isinstance(client, PeerTransport)
        await client.close()
        await server.close()
    run(main(), loop_factory=loop_factory)


def test_concurrent_requests_multiplexed_and_answered_out_of_order() -> None:
    async def main() -> None:
        held: list[tuple[asyncio.Future[m.Message], bytes]] = []
        count = 300

        def handler(_peer: str, message: m.Message) -> Awaitable[m.Message]:
            assert isinstance(message, m.Read)
            future: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
            held.append((future, message.key))
            if len(held) == count:  # all arrived on one connection: answer newest first
                for waiting, key in reversed(held):
                    waiting.set_result(m.ReadReply(key))
            return future

        server, port = await start_server(handler)
        client = client_to(port)
        futures = [client.request("server", m.Read(0, b"%d" % i), 5) for i in range(count)]
        replies = await asyncio.gather(*futures)
        assert replies == [m.ReadReply(b"%d" % i) for i in range(count)]
        assert client.stats.connects == 1 and len(server._inbound.conns) == 1
        await client.close()
        await server.close()
    run(main())


def test_deferred_reply_answers_every_request_sharing_it_and_flushes_on_demand() -> None:
    async def main() -> None:
        shared = DeferredReply()
        failing = DeferredReply()
        arrived: list[bytes] = []

        def handler(_peer: str, message: m.Message) -> m.Message | DeferredReply:
            assert isinstance(message, m.Write)
            arrived.append(message.key)
            return failing if message.key == b"bad" else shared

        server, port = await start_server(handler)
        client = client_to(port)
        futures = [client.request("server", m.Write(0, b"k%d" % i, b"s"), 5) for i in range(3)]
        bad = client.request("server", m.Write(0, b"bad", b"s"), 5)
        await until(lambda: len(arrived) == 4)
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in (*futures, bad))  # nothing answers before settle
        [conn] = server._inbound.conns
        assert conn.serving == 4
        shared.settle(m.WriteAck())
        failing.settle(RemoteError(m.ErrorCode.INTERNAL, "commit failed: disk full"))
        # Settling queues the replies (callbacks run at once: no loop turn) ...
        assert conn.serving == 0 and conn._out
        server.flush_replies()
        assert not conn._out  # ... and flush_replies writes them now, not next turn
        assert await asyncio.gather(*futures) == [m.WriteAck()] * 3
        error = await error_of(bad)
        assert isinstance(error, RemoteError) and error.code == m.ErrorCode.INTERNAL
        assert "disk full" in error.text
        late: list[m.Message | BaseException] = []
        shared.then(late.append)  # registered after settling: runs at once
        assert late == [m.WriteAck()]
        with pytest.raises(AssertionError):
            shared.settle(m.WriteAck())
        await client.close()
        await server.close()
    run(main())


def test_unanswered_request_times_out_and_late_reply_is_dropped() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def handler(_peer: str, message: m.Message) -> m.Message | Awaitable[m.Message]:
            assert isinstance(message, m.Read)
            if message.key == b"fast":
                return m.ReadReply(b"fast")
            future: asyncio.Future[m.Message] = loop.create_future()
            if message.key == b"late":
                loop.call_later(0.3, future.set_result, m.ReadReply(b"late"))
            return future  # b"never": never answered

        server, port = await start_server(handler)
        client = client_to(port)
        started = time.monotonic()
        never = client.request("server", m.Read(0, b"never"), 0.2)
        late = client.request("server", m.Read(0, b"late"), 0.1)
        timeout = await error_of(never)
        assert isinstance(timeout, PeerTimeout) and "no reply from peer server" in str(timeout)
        assert 0.15 < time.monotonic() - started < 5.0  # loose: a loaded machine is slow, not wrong
        assert isinstance(await error_of(late), PeerTimeout)
        assert await client.request("server", m.Read(0, b"fast"), 1) == m.ReadReply(b"fast")
        await until(lambda: client.stats.late_replies == 1)
        assert client.stats.timeouts == 2 and client.is_connected("server")
        await client.close()
        await server.close()
    run(main())


def test_call_hands_each_outcome_to_its_callback_once_and_never_inside_call() -> None:
    """``call``: a reply, a remote error, a timeout and an unknown peer each reach the
    callback exactly once, after ``call`` returned; a callback that raises does not cost
    the link."""
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def handler(_peer: str, message: m.Message) -> m.Message | Awaitable[m.Message]:
            assert isinstance(message, m.Read)
            if message.key == b"bad":
                raise RemoteError(m.ErrorCode.UNSUPPORTED, "no")
            if message.key == b"never":
                return loop.create_future()
            return m.ReadReply(message.key)

        server, port = await start_server(handler)
        client = client_to(port)
        outcomes: list[tuple[str, str, object]] = []
        in_call = False

        def on_done(name: str) -> Callable[[str, m.Message | BaseException], None]:
            def done(peer: str, outcome: m.Message | BaseException) -> None:
                assert not in_call, "a callback ran inside call()"
                outcomes.append((name, peer, outcome))
                if name == "boom":
                    raise RuntimeError("a caller's bug")
            return done

        for name, peer, key, timeout_s in [("ok", "server", b"ok", 1.0),
                                           ("bad", "server", b"bad", 1.0),
                                           ("never", "server", b"never", 0.1),
                                           ("unknown", "nobody", b"x", 1.0),
                                           ("boom", "server", b"boom", 1.0)]:
            in_call = True
            client.call(peer, m.Read(0, key), timeout_s, on_done(name))
            in_call = False
        await until(lambda: len(outcomes) == 5)
        await asyncio.sleep(0.2)  # nothing completes twice
        by_name = {name: (peer, outcome) for name, peer, outcome in outcomes}
        assert len(outcomes) == 5 and len(by_name) == 5
        assert by_name["ok"] == ("server", m.ReadReply(b"ok"))
        assert by_name["boom"] == ("server", m.ReadReply(b"boom"))
        assert isinstance(by_name["bad"][1], RemoteError)
        assert by_name["bad"][1].code == m.ErrorCode.UNSUPPORTED
        assert isinstance(by_name["never"][1], PeerTimeout)
        assert by_name["unknown"][0] == "nobody"
        assert isinstance(by_name["unknown"][1], PeerUnavailable)
        assert client.is_connected("server")
        assert await client.request("server", m.Read(0, b"after"), 1) == m.ReadReply(b"after")
        await client.close()
        await server.close()
    run(main())


def test_answered_requests_leave_the_deadline_fifo_at_once() -> None:
    """A settled request (its message, its future or callback, so its caller) is not kept
    until the next deadline sweep, a whole timeout later: it would outlive the young GC
    generation under load."""
    async def main() -> None:
        server, port = await start_server()
        client = client_to(port)
        replies: list[m.Message | BaseException] = []
        futures = [client.request("server", m.Read(0, b"f%d" % i), 30.0) for i in range(20)]
        for i in range(20):
            client.call("server", m.Read(0, b"c%d" % i), 30.0,
                        lambda _peer, outcome: replies.append(outcome))
        await asyncio.gather(*futures)
        await until(lambda: len(replies) == 20)
        link = client._links["server"]
        assert sum(len(fifo) for fifo in link.deadlines.values()) == 0
        assert not link.inflight
        await client.close()
        await server.close()
    run(main())


def test_timeout_works_for_a_caller_outside_a_task() -> None:
    # The frontend drives node coroutines with send(None), outside any Task: request() must
    # neither need a current task nor await anything itself.
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def never(_peer: str, _message: m.Message) -> Awaitable[m.Message]:
            return loop.create_future()

        server, port = await start_server(never)
        client = client_to(port)
        outcome: list[BaseException] = []

        async def coordinator() -> None:
            try:
                await client.request("server", m.Read(0, b"k"), 0.1)
            except PeerTimeout as exc:
                outcome.append(exc)

        coro = coordinator()
        waiting = coro.send(None)  # runs up to the await of the request's future
        assert isinstance(waiting, asyncio.Future)
        await asyncio.wait([waiting])
        with pytest.raises(StopIteration):
            coro.send(None)
        assert len(outcome) == 1
        await client.close()
        await server.close()
    run(main())


def test_peer_vanishes_mid_request_then_comes_back() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def never(_peer: str, _message: m.Message) -> Awaitable[m.Message]:
            return loop.create_future()

        server, port = await start_server(never)
        client = client_to(port)
        pending = [client.request("server", m.Read(0, b"%d" % i), 30) for i in range(5)]
        await until(lambda: server.stats.served == 5)
        started = time.monotonic()
        await server.close()  # the peer is gone, sockets and all
        for future in pending:
            error = await error_of(future)
            assert isinstance(error, PeerUnavailable), error
            assert "peer server: connection lost" in str(error)
        assert time.monotonic() - started < 10.0  # at once, not at the 30 s deadline
        assert client.link_state("server") in (LinkState.BACKOFF, LinkState.CONNECTING)
        await until(lambda: client.link_state("server") is LinkState.BACKOFF)
        fast = await error_of(client.request("server", m.Ping(), 30))
        assert isinstance(fast, PeerUnavailable)  # fails fast while the peer is down
        await until(lambda: client.stats.connect_failures >= 2)  # it keeps trying
        server, _ = await start_server(port=port)
        await until(lambda: client.is_connected("server"))
        assert await client.request("server", m.Read(0, b"k"), 2) == m.ReadReply(b"k")
        assert client.stats.connects == 2
        await client.close()
        await server.close()
    run(main())


def test_wrong_secret_refused_by_the_listener() -> None:
    async def main() -> None:
        calls: list[m.Message] = []

        def handler(peer: str, message: m.Message) -> m.Message:
            calls.append(message)
            return echo(peer, message)

        server, port = await start_server(handler)
        client = client_to(port, secret=b"not the cluster secret")
        error = await error_of(client.request("server", m.Read(0, b"k"), 2))
        assert isinstance(error, PeerUnavailable)
        cause = error.__cause__
        assert isinstance(cause, HandshakeError) and cause.code == m.ErrorCode.AUTH_FAILED
        await until(lambda: server.stats.handshakes_refused == 1)
        assert calls == []
        await client.close()
        await server.close()
    run(main())


async def raw_frames(reader: asyncio.StreamReader, limit: int = 4096) -> list[wire.Frame]:
    """Every frame the other side sends until it closes the connection."""
    return wire.decode_all(await reader.read(), frame_bytes_max=limit)


def test_listener_refuses_a_forged_proof_and_early_requests() -> None:
    async def main() -> None:
        server, port = await start_server()
        # A peer without the secret: a forged proof.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire.encode(0, m.Hello(V, V, "intruder", "test"))
                     + wire.encode(0, m.AuthChallenge(b"\x07" * 32))
                     + wire.encode(0, m.AuthResponse(b"\x00" * 32)))
        frames = await raw_frames(reader)
        assert [type(f.message) for f in frames] == [m.Hello, m.AuthChallenge, m.AuthResponse,
                                                     m.Error]
        refusal = frames[-1].message
        assert isinstance(refusal, m.Error) and refusal.code == m.ErrorCode.AUTH_FAILED
        writer.close()
        # A request before the handshake.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire.encode(1, m.Read(0, b"k")))
        frames = await raw_frames(reader)
        last = frames[-1].message
        assert isinstance(last, m.Error) and last.code == m.ErrorCode.PROTOCOL
        writer.close()
        # A frame over the handshake limit closes at once.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire.encode(0, m.Hello(V, V, "x", "test")) + b"\x00\x10\x00\x00")
        frames = await raw_frames(reader)
        assert isinstance(frames[-1].message, m.Error)
        assert "over frame_bytes_max" in frames[-1].message.text
        writer.close()
        assert server.stats.served == 0 and server.stats.handshakes_refused == 1
        await server.close()
    run(main())


async def fake_server(on_connection: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                              Awaitable[None]]) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


def test_connecting_side_refuses_a_forged_proof_and_version_mismatch() -> None:
    async def main() -> None:
        received: list[m.Message] = []

        async def forger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(wire.encode(0, m.Hello(V, V, "server", "test"))
                         + wire.encode(0, m.AuthChallenge(b"\x05" * 32))
                         + wire.encode(0, m.AuthResponse(b"\x00" * 32)))
            received.extend(f.message for f in await raw_frames(reader))
            writer.close()

        fake, port = await fake_server(forger)
        client = client_to(port)
        error = await error_of(client.request("server", m.Ping(), 2))
        cause = error.__cause__
        assert isinstance(error, PeerUnavailable) and isinstance(cause, HandshakeError)
        assert cause.code == m.ErrorCode.AUTH_FAILED and not cause.by_peer
        await until(lambda: any(isinstance(x, m.Error) for x in received))
        assert received[-1] == m.Error(m.ErrorCode.AUTH_FAILED, cause.text)
        await client.close()
        fake.close()

        async def future_version(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
            writer.write(wire.encode(0, m.Hello(7, 9, "server", "test")))
            received.extend(f.message for f in await raw_frames(reader))
            writer.close()

        fake, port = await fake_server(future_version)
        client = client_to(port)
        error = await error_of(client.request("server", m.Ping(), 2))
        cause = error.__cause__
        assert isinstance(cause, HandshakeError) and cause.code == m.ErrorCode.VERSION_MISMATCH
        await client.close()
        fake.close()
    run(main())


def test_listener_refuses_version_mismatch_other_cluster_and_wrong_node() -> None:
    async def main() -> None:
        server, port = await start_server()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire.encode(0, m.Hello(1, 1, "older", "test")))  # before COND_WRITE
        frames = await raw_frames(reader)
        assert frames[-1].message == m.Error(m.ErrorCode.VERSION_MISMATCH,
                                             f"no common protocol version: we speak {V}..{V}, "
                                             "peer 1..1")
        writer.close()
        for client, code in [(client_to(port, cluster_name="other"),
                              m.ErrorCode.CLUSTER_MISMATCH),
                             (client_to(port, peer="someone-else"), m.ErrorCode.WRONG_NODE)]:
            peer = client.peers()[0]
            error = await error_of(client.request(peer, m.Ping(), 2))
            assert isinstance(error.__cause__, HandshakeError), error
            assert error.__cause__.code == code
            await client.close()
        await server.close()
    run(main())


def test_in_flight_bound_and_queue_bound_respected() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        outstanding = 0
        peak = 0

        def handler(_peer: str, message: m.Message) -> Awaitable[m.Message]:
            nonlocal outstanding, peak
            outstanding += 1
            peak = max(peak, outstanding)
            future: asyncio.Future[m.Message] = loop.create_future()

            def answer() -> None:
                nonlocal outstanding
                outstanding -= 1
                future.set_result(echo(_peer, message))
            loop.call_later(0.002, answer)
            return future

        server, port = await start_server(handler)
        client = client_to(port, inflight_max=4, queue_max=60)
        futures = [client.request("server", m.Read(0, b"%d" % i), 5) for i in range(100)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        overloaded = [r for r in results if isinstance(r, PeerOverloaded)]
        assert len(overloaded) == 40  # 60 queued, the rest refused at once
        assert [r for r in results if not isinstance(r, PeerOverloaded)] == [
            m.ReadReply(b"%d" % i) for i in range(60)]
        assert peak == 4
        await client.close()
        await server.close()
    run(main())


def test_writes_pause_while_the_peer_does_not_read() -> None:
    async def main() -> None:
        high = 64 * 1024
        resume = asyncio.Event()
        acked: list[int] = []

        async def slow_reader(reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
            # An honest peer (it knows the secret) that stops reading after the handshake.
            handshake = Handshake(Role.ACCEPTOR, "server", "test", SECRET, random.Random(5))
            writer.write(b"".join(wire.encode(0, x) for x in handshake.start()))
            decoder = wire.FrameDecoder()
            while not handshake.done:
                decoder.feed(await reader.read(4096))
                while (frame := decoder.next()) is not wire.NEED_DATA:
                    assert isinstance(frame, wire.Frame)
                    out = handshake.receive(frame.message)
                    writer.write(b"".join(wire.encode(0, x) for x in out))
            await resume.wait()
            while len(acked) < 200:
                decoder.feed(await reader.read(1 << 20))
                while (frame := decoder.next()) is not wire.NEED_DATA:
                    assert isinstance(frame, wire.Frame)
                    acked.append(frame.request_id)
                    writer.write(wire.encode(frame.request_id, m.WriteAck()))

        fake, port = await fake_server(slow_reader)
        client = client_to(port, inflight_max=1000, write_buffer_high_bytes=high,
                           write_buffer_low_bytes=high // 4)
        value = b"v" * (100 * 1024)
        futures = [client.request("server", m.Write(0, b"k", value, None), 10)
                   for _ in range(200)]  # 20 MiB: more than the kernel's socket buffers
        link = client._links["server"]
        await until(lambda: link.conn is not None and not link.conn.writable)
        await asyncio.sleep(0.1)
        assert link.conn is not None and link.conn.transport is not None
        assert link.conn.transport.get_write_buffer_size() < high + 2 * len(value)
        assert len(link.queue) > 0 and len(link.inflight) < 200
        resume.set()
        assert await asyncio.gather(*futures) == [m.WriteAck()] * 200
        assert sorted(acked) == list(range(1, 201))
        await client.close()
        fake.close()
    run(main(), timeout_s=15)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    delays = [backoff_s(attempt, rng, 0.05, 5.0) for attempt in range(12)]
    for attempt, delay in enumerate(delays):
        ceiling = min(5.0, 0.05 * 2 ** attempt)
        assert ceiling / 2 <= delay < ceiling
    assert len(set(delays)) == len(delays)
    assert backoff_s(10_000, rng, 0.05, 5.0) < 5.0


def test_loopback_latency_and_throughput() -> None:
    """Measured, not a benchmark: small READs over one connection on loopback (printed with
    -s). Bounds are loose so a slow CI machine passes; the numbers go in the report."""
    async def main() -> None:
        server, port = await start_server()
        client = client_to(port)
        await client.request("server", m.Ping(), 2)
        samples_us = []
        for i in range(2000):
            started = time.perf_counter()
            await client.request("server", m.Read(0, b"key:%d" % i), 2)
            samples_us.append((time.perf_counter() - started) * 1e6)
        total = 20_000
        window = 256
        started = time.perf_counter()
        for base in range(0, total, window):
            await asyncio.gather(*[client.request("server", m.Read(0, b"key:%d" % i), 5)
                                   for i in range(base, base + window)])
        rate = total / (time.perf_counter() - started)
        p50 = statistics.median(samples_us)
        p99 = statistics.quantiles(samples_us, n=100)[98]
        print(f"\nloopback READ: sequential p50 {p50:.0f} us, p99 {p99:.0f} us; "
              f"pipelined ({window} in flight) {rate:,.0f} requests/s")
        assert p50 < 5_000 and rate > 2_000
        await client.close()
        await server.close()
    run(main(), timeout_s=20)


def test_a_self_connect_fails_at_once_and_frees_the_port() -> None:
    """A link whose connection ends up connected to itself (a TCP self-connect, which the
    kernel makes when the source port it picks is the destination port and nothing listens
    there) fails it at once, so the port is free for the peer that will listen on it. The
    source port is forced here, which makes the kernel's rare choice certain."""
    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        loop = asyncio.get_running_loop()
        real = loop.create_connection

        def from_the_same_port(factory: Any, host: str, port_: int, **kwargs: Any) -> Any:
            return real(factory, host, port_, local_addr=(host, port_), **kwargs)

        loop.create_connection = from_the_same_port  # type: ignore[method-assign,assignment]
        client = client_to(port, connect_timeout_s=30)
        failed = client.request("server", m.Read(0, b"k"), 30)
        error = await error_of(failed)
        assert isinstance(error, PeerUnavailable) and "itself" in str(error), error
        loop.create_connection = real  # type: ignore[method-assign]
        with socket.socket() as listener:  # the port is free again
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
        await client.close()

    run(main())
