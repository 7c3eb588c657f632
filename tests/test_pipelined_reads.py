"""In a cluster, a connection's pipelined reads wait for their replicas together; writes and
everything else wait their turn; replies always leave in request order.

A real Server and RespConnection on a recording transport; the client's node is replaced by
one whose reads and writes wait on futures the test resolves, in any order it likes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cluster.errors import ClusterError
from cluster.node import Entry
from respkv.protocol import OVERLAP_MAX, RespConnection
from respkv.server import Server
from tests.connection_helpers import RecordingTransport, command, connect, open_server


class WaitingNode:
    """Reads and writes that wait until the test answers them."""

    local_only = False

    def __init__(self) -> None:
        self.started: list[str] = []
        self.waiting: dict[str, asyncio.Future[Any]] = {}

    async def _wait(self, name: str) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.started.append(name)
        self.waiting[name] = future
        return await future

    async def get(self, db: int, key: bytes) -> Entry | None:
        result = await self._wait("get " + key.decode())
        return None if result is None else Entry(result, 0, None)

    async def put(self, db: int, key: bytes, value: bytes, expire_at_ms: int = 0, *,
                  context: object | None = None) -> None:
        await self._wait("put " + key.decode())

    def answer(self, name: str, result: Any = None, error: BaseException | None = None) -> None:
        future = self.waiting.pop(name)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


async def _connection(
        tmp_path: Path) -> tuple[Server, RespConnection, RecordingTransport, WaitingNode]:
    server = await open_server(tmp_path)
    transport = RecordingTransport()
    connection = connect(server, transport)
    node = WaitingNode()
    assert connection.client is not None
    connection.client.node = node  # type: ignore[assignment]
    return server, connection, transport, node


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_pipelined_reads_wait_together_and_reply_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        server, connection, transport, node = await _connection(tmp_path)
        connection.data_received(command(b"GET", b"a") + command(b"GET", b"b")
                                 + command(b"GET", b"c") + command(b"PING"))
        assert node.started == ["get a", "get b", "get c"]  # all three at once
        node.answer("get c", b"C")
        node.answer("get b", None)
        await _turns()
        assert transport.written == b""  # a is first and still waiting
        node.answer("get a", b"A")
        await _turns()
        # PING is no read: it ran once the reads were done, its reply after theirs.
        assert transport.written == b"$1\r\nA\r\n$-1\r\n$1\r\nC\r\n+PONG\r\n"
        # Reads arriving while others wait start at once too.
        connection.data_received(command(b"GET", b"d"))
        connection.data_received(command(b"GET", b"e"))
        assert node.started[-2:] == ["get d", "get e"]
        node.answer("get e", b"E")
        node.answer("get d", error=ClusterError("NOQUORUM 1 of 2 required replicas answered"))
        await _turns()
        assert transport.written.endswith(b"-NOQUORUM 1 of 2 required replicas answered\r\n"
                                          b"$1\r\nE\r\n")
        await server.state.node.close()

    asyncio.run(scenario())


def test_a_write_waits_for_the_reads_before_it_and_holds_back_the_rest(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        server, connection, transport, node = await _connection(tmp_path)
        connection.data_received(command(b"GET", b"k") + command(b"SET", b"k", b"v")
                                 + command(b"GET", b"k"))
        assert node.started == ["get k"]  # the SET must not start before the read ends
        node.answer("get k", b"old")
        await _turns()
        assert node.started == ["get k", "put k"]  # and the next read waits for the SET
        assert transport.written == b"$3\r\nold\r\n"
        node.answer("put k")
        await _turns()
        assert node.started == ["get k", "put k", "get k"]
        node.answer("get k", b"v")
        await _turns()
        assert transport.written == b"$3\r\nold\r\n+OK\r\n$1\r\nv\r\n"
        await server.state.node.close()

    asyncio.run(scenario())


def test_at_most_overlap_max_reads_wait_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        server, connection, transport, node = await _connection(tmp_path)
        count = OVERLAP_MAX + 5
        connection.data_received(b"".join(command(b"GET", b"%d" % i) for i in range(count)))
        assert len(node.started) == OVERLAP_MAX
        for i in range(count):
            await _turns(1)
            node.answer(f"get {i}", b"%d" % i)
        await _turns()
        assert len(node.started) == count
        expected = b"".join(b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(count))
        assert transport.written == expected
        await server.state.node.close()

    asyncio.run(scenario())


def test_an_unpipelined_read_waits_and_the_next_reads_keep_their_order(
        tmp_path: Path) -> None:
    """One command per read on an idle connection (RespConnection._run_one): a read that
    waits for the cluster holds the replies of the reads after it, which start at once."""
    async def scenario() -> None:
        server, connection, transport, node = await _connection(tmp_path)
        connection.data_received(command(b"GET", b"a"))
        connection.data_received(command(b"GET", b"b"))
        connection.data_received(command(b"PING"))
        assert node.started == ["get a", "get b"]
        node.answer("get b", b"B")
        await _turns()
        assert transport.written == b""
        node.answer("get a", b"A")
        await _turns()
        assert transport.written == b"$1\r\nA\r\n$1\r\nB\r\n+PONG\r\n"
        connection.data_received(command(b"SET", b"k", b"v"))  # idle again: _run_one
        assert node.started[-1] == "put k"
        node.answer("put k")
        await _turns()
        assert transport.written.endswith(b"+PONG\r\n+OK\r\n")
        await server.state.node.close()

    asyncio.run(scenario())
