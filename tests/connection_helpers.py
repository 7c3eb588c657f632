"""A real Server and RespConnections without sockets: recording transports, request bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from respkv.config import Config
from respkv.protocol import RespConnection
from respkv.server import Server, open_node


class RecordingTransport:
    """The parts of asyncio.Transport a RespConnection uses. Writes go to ``log`` as (name,
    bytes), shared by several transports when the test needs the order across them."""

    def __init__(self, log: list[tuple[str, bytes]] | None = None, name: str = "") -> None:
        self.log = log if log is not None else []
        self.name = name
        self.closed = False

    @property
    def written(self) -> bytes:
        return b"".join(data for name, data in self.log if name == self.name)

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


async def open_server(tmp_path: Path, *options: str) -> Server:
    """A Server over a real node in tmp_path, not listening (port 0)."""
    config = Config.load(["--port", "0", "--dir", str(tmp_path), *options])
    loop = asyncio.get_running_loop()
    return Server(config, await open_node(config, loop), loop)


def connect(server: Server, transport: RecordingTransport) -> RespConnection:
    connection = RespConnection(server)
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)
