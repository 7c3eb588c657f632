"""A read holding one command (an unpipelined client) takes RespConnection._run_one instead of
the batch loop: its replies must be byte for byte those the loop gives the same commands.

Two real Servers on recording transports: one gets each command as its own read, the other
gets them all in one read.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.connection_helpers import RecordingTransport, command, connect, open_server

# Every kind of reply the read path frames: status (+ a write's group commit), bulk strings
# under 4 KiB (looked-up header), under 16 KiB (one formatted copy) and larger (not copied),
# nil, integer, array, and an error; QUIT last (the connection closes after its reply).
COMMANDS = [
    (b"SET", b"a", b"1"),
    (b"GET", b"a"),
    (b"GET", b"missing"),
    (b"SET", b"mid", b"m" * 5000),
    (b"GET", b"mid"),
    (b"SET", b"big", b"b" * 20000),
    (b"GET", b"big"),
    (b"INCR", b"n"),
    (b"GET",),
    (b"MGET", b"a", b"missing"),
    (b"PING",),
    (b"QUIT",),
    (b"PING",),  # never answered: the connection closed after QUIT's reply
]


async def _replies(tmp_path: Path, one_read: bool) -> tuple[bytes, bool]:
    server = await open_server(tmp_path)
    transport = RecordingTransport()
    connection = connect(server, transport)
    if one_read:
        connection.data_received(b"".join(command(*argv) for argv in COMMANDS))
        for _ in range(3):
            await asyncio.sleep(0)
    else:
        for argv in COMMANDS:
            connection.data_received(command(*argv))
            for _ in range(3):
                await asyncio.sleep(0)
    await server.state.node.close()
    return transport.written, transport.closed


def test_one_command_reads_reply_as_one_pipelined_read(tmp_path: Path) -> None:
    single = asyncio.run(_replies(tmp_path / "single", one_read=False))
    pipelined = asyncio.run(_replies(tmp_path / "pipelined", one_read=True))
    assert single == pipelined
    written, closed = single
    assert closed
    assert written.startswith(b"+OK\r\n$1\r\n1\r\n$-1\r\n+OK\r\n$5000\r\n")
    assert written.endswith(b"*2\r\n$1\r\n1\r\n$-1\r\n+PONG\r\n+OK\r\n")
    assert b"-ERR wrong number of arguments for 'get' command\r\n" in written
