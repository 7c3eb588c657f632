"""Real multi-process respkv clusters on loopback, for tests and benchmarks.

Each node is a respkv-server child process with its own 127.0.0.x address (so fault tests
can cut one node's links by address), a free client port and a free peer port, its data in
``workdir/node<i>``, and ``cluster-peers`` naming every other node. ``LocalCluster`` starts
them, waits until each has reached its peers (data commands stop answering CLUSTERDOWN), and
stops them (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import subprocess
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
        self.replication = replication
        self.extra = list(extra)
        self.first_host = first_host
        self.hosts = [f"127.0.0.{first_host + i}" for i in range(size)]
        self.ports = [free_port(host) for host in self.hosts]
        self.peer_ports = [free_port(host) for host in self.hosts]
        self.nodes: list[ServerProcess] = []
        # Nodes that left the ring for good (decommissioned or forgotten): not counted by
        # wait_converged, never restarted.
        self.gone: set[int] = set()
        for i in range(size):
            peers = [self.peer_address(j) for j in range(size) if j != i]
            # A cluster of one names itself as its seed: clustered, with nothing to wait for.
            membership = (["--cluster-peers", *peers] if peers
                          else ["--seeds", self.peer_address(i)])
            self.nodes.append(self._process(i, membership))

    def _process(self, i: int, membership: list[str]) -> ServerProcess:
        argv = [
            sys.executable, "-m", "respkv.server",
            "--port", str(self.ports[i]), "--bind", self.hosts[i],
            "--dir", str(self.workdir / f"node{i}"),
            "--cluster-port", str(self.peer_ports[i]),
            "--cluster-secret", SECRET,
            "--replication-factor", self.replication,
            # Faster rounds than production's 1 s: ring changes settle (and tests run) sooner.
            "--gossip-interval", "250",
            *membership,
            *self.extra,
        ]
        return ServerProcess(argv, self.ports[i], self.workdir, f"node{i}", self.hosts[i])

    def peer_address(self, i: int) -> str:
        return f"{self.hosts[i]}:{self.peer_ports[i]}"

    @property
    def members(self) -> list[int]:
        """Indices of the nodes that are (still) part of the cluster, running or not."""
        return [i for i in range(len(self.nodes)) if i not in self.gone]

    def running(self) -> list[int]:
        return [i for i in self.members if self.nodes[i].proc is not None
                and self.nodes[i].proc.poll() is None]

    def add_node(self, seeds: Sequence[int] | None = None, *, wait: bool = True,
                 timeout: float = 60.0) -> int:
        """Start one more node on the next 127.0.0.x address with an empty data directory and
        ``--seeds`` naming the peer addresses of ``seeds`` (default: every running member):
        it joins by itself. With ``wait``, return once it is NORMAL and every running node
        sees it; the new node's index either way."""
        i = len(self.nodes)
        host = f"127.0.0.{self.first_host + i}"
        self.hosts.append(host)
        self.ports.append(free_port(host))
        self.peer_ports.append(free_port(host))
        chosen = self.running() if seeds is None else list(seeds)
        process = self._process(i, ["--seeds", ",".join(self.peer_address(j) for j in chosen)])
        self.nodes.append(process)
        process.start()
        if wait:
            self.wait_converged(timeout)
        return i

    def decommission(self, i: int, timeout: float = 60.0) -> None:
        """CLUSTER DECOMMISSION node ``i`` and wait until its process exits by itself."""
        with self.connect(i) as conn:
            reply = conn.call("CLUSTER", "DECOMMISSION")
        if reply != b"+OK\r\n":
            raise RuntimeError(f"CLUSTER DECOMMISSION on node{i}: {reply!r}")
        self.wait_exit(i, timeout)
        self.gone.add(i)

    def wait_exit(self, i: int, timeout: float = 60.0) -> int:
        """Wait until node ``i``'s process has exited by itself; its exit status."""
        proc = self.nodes[i].proc
        assert proc is not None
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"node{i} did not exit in {timeout} s\n"
                               f"{self.nodes[i].log_text()}") from None

    def info(self, i: int, section: str) -> dict[str, str]:
        with self.connect(i) as conn:
            raw = conn.call("INFO", section)
        return dict(line.split(":", 1) for line in raw.decode().split("\r\n") if ":" in line)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        for i in range(len(self.nodes)):
            self.wait_ready(i, timeout)
        self.wait_converged(timeout)

    def info_cluster(self, i: int) -> dict[str, str]:
        return self.info(i, "cluster")

    def wait_converged(self, timeout: float = 30.0, alive: list[int] | None = None) -> None:
        """Wait until every running member (or those of ``alive``) is ready, and sees every
        member as an owner and the running ones up (gossip has converged)."""
        indices = alive if alive is not None else self.running()
        owners = str(len(self.members))
        deadline = time.monotonic() + timeout
        wanted = {"respkv_cluster_ready": "1", "respkv_cluster_owners": owners,
                  "respkv_cluster_nodes": owners, "respkv_cluster_nodes_up": str(len(indices))}
        seen: dict[int, dict[str, str]] = {}
        while time.monotonic() < deadline:
            seen = {i: {k: self.info_cluster(i).get(k, "?") for k in wanted} for i in indices}
            if all(view == wanted for view in seen.values()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"cluster did not converge: wanted {wanted}, saw {seen}\n"
                           f"{self.log_text()}")

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
