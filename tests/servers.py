"""Start and stop real servers for tests: respkv-server and the reference redis-server.

Every server listens on a loopback port picked free by the test and is stopped by the
fixture that started it. RawConnection speaks RESP over a plain socket and returns the
exact reply bytes, which differential tests compare with redis-server's byte for byte.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def encode_command(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, int):
            arg = str(arg).encode()
        elif isinstance(arg, str):
            arg = arg.encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


class RawConnection:
    """A RESP connection that hands back the raw bytes of each reply."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, *args: bytes | str | int) -> bytes:
        """Send one command, return the raw bytes of its reply."""
        self.send_raw(encode_command(*args))
        return self.read_reply()

    def pipeline(self, commands: Iterable[tuple[bytes | str | int, ...]]) -> list[bytes]:
        commands = list(commands)
        self.send_raw(b"".join(encode_command(*c) for c in commands))
        return [self.read_reply() for _ in commands]

    def read_reply(self) -> bytes:
        """Read exactly one complete reply (RESP2 or RESP3) and return its bytes."""
        while True:
            size = _reply_size(self._buffer)
            if size is not None:
                reply, self._buffer = self._buffer[:size], self._buffer[size:]
                return reply
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"closed with partial reply {self._buffer[:200]!r}")
            self._buffer += chunk

    def read_until_close(self, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        data = self._buffer
        self._buffer = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data


def _reply_size(buffer: bytes, pos: int = 0) -> int | None:
    """End offset of the complete reply starting at pos, or None when more bytes are needed."""
    end = _scan(buffer, pos)
    return end


def _scan(buf: bytes, pos: int) -> int | None:
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        return None
    kind = buf[pos : pos + 1]
    after = line_end + 2
    if kind in (b"$", b"=", b"!"):
        length = int(buf[pos + 1 : line_end])
        if length < 0:
            return after
        end = after + length + 2
        return end if len(buf) >= end else None
    if kind in (b"*", b"~", b">", b"%", b"|"):
        count = int(buf[pos + 1 : line_end])
        if kind in (b"%", b"|"):
            count *= 2
        cursor: int | None = after
        for _ in range(max(count, 0)):
            assert cursor is not None
            cursor = _scan(buf, cursor)
            if cursor is None:
                return None
        if kind == b"|":  # an attribute precedes the real reply
            assert cursor is not None
            return _scan(buf, cursor)
        return cursor
    return after


class ServerProcess:
    """A server in a child process; `args` are redis-server style options."""

    def __init__(self, argv: list[str], port: int, workdir: Path, name: str,
                 host: str = HOST) -> None:
        self.argv = argv
        self.port = port
        self.host = host
        self.workdir = workdir
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"

    def start(self, timeout: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env_with_root(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_text()}")
            try:
                with RawConnection(self.port, self.host, timeout=1.0) as conn:
                    reply = conn.call("PING")
                if reply.startswith((b"+PONG", b"-NOAUTH", b"-DENIED")):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start on port {self.port}:\n{self.log_text()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def connect(self) -> RawConnection:
        return RawConnection(self.port, self.host)


def respkv_server(workdir: Path, *extra: str, port: int | None = None) -> ServerProcess:
    """A respkv-server with its data in workdir/data (not started)."""
    port = port or free_port()
    argv = [
        sys.executable, "-m", "respkv.server",
        "--port", str(port), "--bind", HOST, "--dir", str(workdir / "data"),
        *extra,
    ]
    return ServerProcess(argv, port, workdir, "respkv")


def redis_server(workdir: Path, *extra: str, port: int | None = None) -> ServerProcess:
    """The reference redis-server from the Debian package (not started)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = port or free_port()
    argv = [
        binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--dir", str(workdir), *extra,
    ]
    return ServerProcess(argv, port, workdir, "redis")


def env_with_root() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
