"""Replies leave at the end of the loop turn (Server.write_soon), after the group commit.

A real Server and Node (no listening socket: port 0) with RespConnections on recording
transports, driven on a real event loop, so the order of callbacks is asyncio's own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.errors import StorageError
from respkv.protocol import RespConnection
from respkv.server import Server
from tests.connection_helpers import RecordingTransport, command, connect, open_server


def _connect(server: Server, log: list[tuple[str, bytes]], name: str) -> RespConnection:
    return connect(server, RecordingTransport(log, name))


def test_replies_of_a_turn_are_written_once_per_connection_at_its_end(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        server = await open_server(tmp_path, "--appendfsync", "always")
        log: list[tuple[str, bytes]] = []
        a = _connect(server, log, "a")
        b = _connect(server, log, "b")
        a.data_received(command(b"GET", b"k"))
        b.data_received(command(b"PING"))
        a.data_received(command(b"ECHO", b"x"))
        written_during_turn = list(log)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await server.state.node.close()
        assert written_during_turn == []
        return log

    log = asyncio.run(scenario())
    assert log == [("a", b"$-1\r\n$1\r\nx\r\n"), ("b", b"+PONG\r\n")]


def test_a_read_reply_queued_behind_a_write_waits_for_the_commit(tmp_path: Path) -> None:
    """GET then SET then GET on one connection in one turn: nothing is written before the
    commit log holds the SET, and the replies keep their order."""
    async def scenario() -> tuple[list[tuple[str, bytes]], list[str]]:
        server = await open_server(tmp_path, "--appendfsync", "always")
        node = server.state.node
        events: list[str] = []
        commit = node.commit

        def recording_commit() -> None:
            events.append("commit")
            commit()

        node.commit = recording_commit  # type: ignore[method-assign]
        log: list[tuple[str, bytes]] = []
        a = _connect(server, log, "a")
        b = _connect(server, log, "b")
        a.data_received(command(b"GET", b"k"))
        b.data_received(command(b"SET", b"k", b"v"))
        a.data_received(command(b"GET", b"k"))
        await asyncio.sleep(0)
        events.extend(name for name, _ in log)
        await asyncio.sleep(0)
        await node.close()
        return log, events

    log, events = asyncio.run(scenario())
    # a's second GET read the uncommitted SET: a waits for the commit as b does.
    assert events[0] == "commit"
    assert sorted(log) == [("a", b"$-1\r\n$1\r\nv\r\n"), ("b", b"+OK\r\n")]


@pytest.mark.parametrize("pipelined", [1, 50])
def test_many_connections_each_get_their_own_replies(tmp_path: Path, pipelined: int) -> None:
    async def scenario() -> dict[str, bytes]:
        server = await open_server(tmp_path, "--appendfsync", "always")
        log: list[tuple[str, bytes]] = []
        connections = {str(n): _connect(server, log, str(n)) for n in range(20)}
        for name, connection in connections.items():
            batch = b"".join(command(b"SET", name.encode(), b"%d" % i) for i in range(pipelined))
            connection.data_received(batch + command(b"GET", name.encode()))
        for _ in range(3):
            await asyncio.sleep(0)
        await server.state.node.close()
        replies: dict[str, bytes] = {}
        for name, data in log:
            replies[name] = replies.get(name, b"") + data
        return replies

    replies = asyncio.run(scenario())
    assert replies == {
        str(n): b"+OK\r\n" * pipelined + b"$%d\r\n%d\r\n" % (len(str(pipelined - 1)), pipelined - 1)
        for n in range(20)
    }


def test_a_connection_whose_write_fails_does_not_stop_the_others(tmp_path: Path) -> None:
    class BrokenTransport(RecordingTransport):
        def write(self, data: bytes) -> None:
            raise RuntimeError("the handler is closed")

    async def scenario() -> tuple[list[tuple[str, bytes]], bool]:
        server = await open_server(tmp_path, "--appendfsync", "always")
        log: list[tuple[str, bytes]] = []
        broken_transport = BrokenTransport(log, "broken")
        broken = connect(server, broken_transport)
        healthy = _connect(server, log, "healthy")
        broken.data_received(command(b"SET", b"a", b"1"))
        healthy.data_received(command(b"SET", b"b", b"2"))
        broken.data_received(command(b"PING"))
        healthy.data_received(command(b"PING"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await server.state.node.close()
        return log, broken_transport.closed

    log, broken_closed = asyncio.run(scenario())
    assert log == [("healthy", b"+OK\r\n+PONG\r\n")]
    assert broken_closed


def test_a_failed_commit_answers_each_reply_of_the_batch_with_one_error(tmp_path: Path) -> None:
    """Bulk replies go out in pieces (header, value, CRLF); when the commit log write fails,
    every reply of the batch, whatever its pieces, becomes exactly one MISCONF error."""
    async def scenario() -> bytes:
        server = await open_server(tmp_path, "--appendfsync", "always")
        node = server.state.node
        log: list[tuple[str, bytes]] = []
        a = _connect(server, log, "a")
        a.data_received(command(b"SET", b"small", b"v") + command(b"SET", b"big", b"b" * 20000))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        log.clear()

        def failing_commit() -> None:
            raise StorageError("disk full")

        node.commit = failing_commit  # type: ignore[method-assign]
        a.data_received(command(b"GET", b"small") + command(b"SET", b"k", b"1")
                        + command(b"GET", b"big") + command(b"GET", b"missing")
                        + command(b"GET", b"small"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del node.commit
        await node.close()
        return b"".join(data for _, data in log)

    written = asyncio.run(scenario())
    error = b"-MISCONF Errors writing to the AOF file: disk full\r\n"
    assert written == error * 5
