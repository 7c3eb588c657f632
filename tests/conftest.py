"""Shared fixtures: a respkv-server and a reference redis-server per test session.

Both run as real processes on free loopback ports and are stopped at the end. Tests that
need a pristine server of their own (restarts, kill -9, special config) start one with
tests.servers.respkv_server() in their own tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import RawConnection, ServerProcess, redis_server, respkv_server


@pytest.fixture(scope="session")
def respkv_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = respkv_server(tmp_path_factory.mktemp("respkv"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = redis_server(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def _flushall(port: int) -> None:
    with RawConnection(port) as conn:
        for db in range(16):
            conn.call("SELECT", db)
            conn.call("FLUSHDB")


@pytest.fixture
def respkv_port(respkv_proc: ServerProcess) -> int:
    """The shared respkv-server, emptied for this test."""
    _flushall(respkv_proc.port)
    return respkv_proc.port


@pytest.fixture
def redis_port(redis_proc: ServerProcess) -> int:
    _flushall(redis_proc.port)
    return redis_proc.port


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def r(request: pytest.FixtureRequest, respkv_port: int) -> Iterator[redis.Redis]:
    """A redis-py client on the shared respkv-server, in RESP2 and RESP3."""
    client = redis.Redis(port=respkv_port, protocol=request.param)
    yield client
    client.close()


class Differential:
    """Sends the same commands to respkv and redis-server and compares the raw replies."""

    def __init__(self, ours: RawConnection, theirs: RawConnection) -> None:
        self.ours = ours
        self.theirs = theirs

    def call(self, *args: bytes | str | int) -> bytes:
        """Send to both; assert byte-identical replies; return the reply."""
        mine = self.ours.call(*args)
        ref = self.theirs.call(*args)
        assert mine == ref, f"{args!r}: respkv {mine!r} != redis {ref!r}"
        return mine

    def both(self, *args: bytes | str | int) -> tuple[bytes, bytes]:
        """Send to both without comparing (for replies that legitimately differ)."""
        return self.ours.call(*args), self.theirs.call(*args)

    def raw(self, data: bytes) -> bytes:
        """Send raw bytes to both; compare everything each sends back until it closes."""
        self.ours.send_raw(data)
        self.theirs.send_raw(data)
        mine = self.ours.read_until_close()
        ref = self.theirs.read_until_close()
        assert mine == ref, f"{data!r}: respkv {mine!r} != redis {ref!r}"
        return mine


@pytest.fixture
def diff(respkv_port: int, redis_port: int) -> Iterator[Differential]:
    ours, theirs = RawConnection(respkv_port), RawConnection(redis_port)
    yield Differential(ours, theirs)
    ours.close()
    theirs.close()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def diff3(request: pytest.FixtureRequest, diff: Differential) -> Differential:
    """`diff` after HELLO 2 or HELLO 3 on both sides."""
    diff.both("HELLO", request.param)
    return diff


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
