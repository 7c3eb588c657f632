"""Replies leave at the end of the loop turn (Server.write_soon), after the group commit.

A real Server and Node (no listening socket: port 0) with RespConnections on recording
transports, driven on a real event loop, so the order of callbacks is asyncio's own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from respkv.config import Config
from respkv.protocol import RespConnection
from respkv.server import Server, open_node


class RecordingTransport:
    """The parts of asyncio.Transport a RespConnection uses; writes are recorded."""

    def __init__(self, log: list[tuple[str, bytes]], name: str) -> None:
        self.log = log
        self.name = name
        self.closed = False

    def write(self, data: bytes) -> None:
        self.log.append((self.name, bytes(data)))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 6379)}.get(name)

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _server(tmp_path: Path) -> Server:
    config = Config.load(["--port", "0", "--dir", str(tmp_path), "--appendfsync", "always"])
    loop = asyncio.get_running_loop()
    node = await open_node(config, loop)
    return Server(config, node, loop)


def _connect(server: Server, log: list[tuple[str, bytes]], name: str) -> RespConnection:
    connection = RespConnection(server)
    connection.connection_made(RecordingTransport(log, name))  # type: ignore[arg-type]
    return connection


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def test_replies_of_a_turn_are_written_once_per_connection_at_its_end(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        server = await _server(tmp_path)
        log: list[tuple[str, bytes]] = []
        a = _connect(server, log, "a")
        b = _connect(server, log, "b")
        a.data_received(_command(b"GET", b"k"))
        b.data_received(_command(b"PING"))
        a.data_received(_command(b"ECHO", b"x"))
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
        server = await _server(tmp_path)
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
        a.data_received(_command(b"GET", b"k"))
        b.data_received(_command(b"SET", b"k", b"v"))
        a.data_received(_command(b"GET", b"k"))
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
        server = await _server(tmp_path)
        log: list[tuple[str, bytes]] = []
        connections = {str(n): _connect(server, log, str(n)) for n in range(20)}
        for name, connection in connections.items():
            batch = b"".join(_command(b"SET", name.encode(), b"%d" % i) for i in range(pipelined))
            connection.data_received(batch + _command(b"GET", name.encode()))
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
        server = await _server(tmp_path)
        log: list[tuple[str, bytes]] = []
        broken = RespConnection(server)
        broken_transport = BrokenTransport(log, "broken")
        broken.connection_made(broken_transport)  # type: ignore[arg-type]
        healthy = _connect(server, log, "healthy")
        broken.data_received(_command(b"SET", b"a", b"1"))
        healthy.data_received(_command(b"SET", b"b", b"2"))
        broken.data_received(_command(b"PING"))
        healthy.data_received(_command(b"PING"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await server.state.node.close()
        return log, broken_transport.closed

    log, broken_closed = asyncio.run(scenario())
    assert log == [("healthy", b"+OK\r\n+PONG\r\n")]
    assert broken_closed
