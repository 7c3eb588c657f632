"""Real multi-process respkv clusters on loopback, for tests and benchmarks.

Each node is a respkv-server child process with its own 127.0.0.x address (so fault tests
can cut one node's links by address), a free client port and a free peer port, its data in
``workdir/node<i>``, and ``cluster-peers`` naming every other node. ``LocalCluster`` starts
them, waits until each has reached its peers (data commands stop answering CLUSTERDOWN), and
stops them (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.servers import RawConnection, ServerProcess, free_port

SECRET = "test-cluster-secret"


class LocalCluster:
    """``size`` nodes on 127.0.0.2 .. 127.0.0.(size+1) (127.0.0.1 is left to single servers)."""

    def __init__(self, workdir: Path, size: int = 3, *, replication: str = "3",
                 extra: Sequence[str] = (), first_host: int = 2) -> None:
        self.workdir = workdir
        self.hosts = [f"127.0.0.{first_host + i}" for i in range(size)]
        self.ports = [free_port(host) for host in self.hosts]
        self.peer_ports = [free_port(host) for host in self.hosts]
        self.nodes: list[ServerProcess] = []
        for i, host in enumerate(self.hosts):
            peers = [f"{h}:{p}" for j, (h, p) in enumerate(zip(self.hosts, self.peer_ports,
                                                                 strict=True)) if j != i]
            argv = [
                sys.executable, "-m", "respkv.server",
                "--port", str(self.ports[i]), "--bind", host,
                "--dir", str(workdir / f"node{i}"),
                "--cluster-port", str(self.peer_ports[i]),
                "--cluster-secret", SECRET,
                "--replication-factor", replication,
                "--cluster-peers", *peers,
                *extra,
            ]
            self.nodes.append(ServerProcess(argv, self.ports[i], workdir, f"node{i}", host))

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        for i in range(len(self.nodes)):
            self.wait_ready(i, timeout)

    def wait_ready(self, i: int, timeout: float = 30.0) -> None:
        """Wait until node ``i`` coordinates requests (it has reached its peers once)."""
        deadline = time.monotonic() + timeout
        reply = b""
        while time.monotonic() < deadline:
            with self.connect(i) as conn:
                reply = conn.call("EXISTS", "__cluster_ready_probe__")
            if reply == b":0\r\n":
                return
            time.sleep(0.05)
        raise RuntimeError(f"node{i} not ready: {reply!r}\n{self.nodes[i].log_text()}")

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``: no chance to flush or say goodbye."""
        self.nodes[i].kill()

    def restart(self, i: int, timeout: float = 30.0) -> None:
        self.nodes[i].start()
        self.wait_ready(i, timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def connect(self, i: int) -> RawConnection:
        return RawConnection(self.ports[i], self.hosts[i])

    def client(self, i: int, **options: object) -> redis.Redis:
        return redis.Redis(host=self.hosts[i], port=self.ports[i], **options)  # type: ignore[arg-type]

    def log_text(self) -> str:
        return "\n".join(f"--- node{i}\n{node.log_text()}" for i, node in enumerate(self.nodes))


@contextmanager
def local_cluster(workdir: Path, size: int = 3, **options: object) -> Iterator[LocalCluster]:
    cluster = LocalCluster(workdir, size, **options)  # type: ignore[arg-type]
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
