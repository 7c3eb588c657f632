"""`respkv-cluster`: start, inspect and stop a local cluster of respkv-server processes.

Theory of operation. A cluster directory (``--dir``, default ``./data/cluster``: inside the
git-ignored ``data/`` of ``make run``, and not ``./cluster``, which is the source package in a
checkout) holds everything about one local cluster, so that every later command needs nothing
but the directory:

    cluster.json          the layout: node count, host, ports, replication factor, extra args
    cluster-secret        the shared peer secret (0600), generated when --secret is not given
    node-<port>.conf      each node's respkv-server configuration (0600: it holds the secret)
    node-<port>.pid       the process id of a running node (written at start, removed by down)
    node-<port>.log       the node's output
    node-<port>/          the node's data directory

Node i listens for clients on ``base_port + i`` and for peers on that port + 10000 (the
server's ``cluster-port 0``), all on one host address, so ``redis-cli -p 7001`` reaches the
first node of the default cluster. ``add`` starts node ``base_port + nodes`` with ``seeds``
naming the running nodes, so it joins by itself (issue 5: it streams its ranges, then
serves); ``remove PORT`` decommissions a node (``CLUSTER DECOMMISSION``: it streams its
ranges away, leaves the ring and stops) and records its port in the layout's ``removed``, so
no later command starts it again and no later ``add`` reuses the port.

Rules:
1. ``up`` is idempotent: nodes whose process is alive are left alone, the others are started
   with their data (so ``up`` also restarts killed nodes). It then waits until every node
   answers data commands, i.e. has reached its peers (no CLUSTERDOWN).
2. A pidfile is trusted only while its process is alive *and* runs this node's configuration
   (``/proc/<pid>/cmdline`` names the conf file): a stale pidfile whose pid was reused by an
   unrelated process never makes ``down`` signal that process.
3. The layout of an existing directory is fixed: options that contradict it are refused with
   a message, rather than starting a node that the others do not know. ``add`` and
   ``remove`` are the only ways the node set changes.
4. ``add`` and ``remove`` return only when the change is done: the new node serves data
   commands (its join finished), or the removed node's process has exited.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster import node_meta
from engine.fs import OSFileSystem

DEFAULT_DIR = "data/cluster"
LAYOUT_NAME = "cluster.json"
SECRET_NAME = "cluster-secret"
PEER_PORT_OFFSET = 10000  # as respkv-server's `cluster-port 0` (Redis's cluster bus)
READY_TIMEOUT_S = 30.0  # a node that has not reached its peers by then is reported
JOIN_TIMEOUT_S = 600.0  # a join streams the node's share of the data before it serves
LEAVE_TIMEOUT_S = 600.0  # a decommission streams the node's data away before it stops
STOP_TIMEOUT_S = 15.0  # SIGTERM flushes the commit log; a node still alive after it gets SIGKILL
PROBE_KEY = "__respkv_cluster_probe__"


class LauncherError(Exception):
    """An operating error: printed as ``respkv-cluster: <text>`` with exit status 1."""


@dataclass(frozen=True)
class Layout:
    nodes: int
    host: str
    base_port: int
    replication_factor: str
    extra: list[str] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)  # ports of decommissioned nodes

    @property
    def ports(self) -> list[int]:
        """The client ports of the member nodes (``nodes`` counts removed ones too, so the
        next ``add`` never reuses a port)."""
        return [self.base_port + i for i in range(self.nodes)
                if self.base_port + i not in self.removed]


@dataclass(frozen=True)
class NodeStatus:
    port: int
    address: str
    pid: int | None  # from the pidfile, None when there is none
    alive: bool
    node_id: str
    ready: str  # "yes", or why not (the node's error reply, "not running" ...)


# The cluster directory ------------------------------------------------------------------------


class ClusterDir:
    def __init__(self, path: Path) -> None:
        self.path = path.resolve()

    def conf(self, port: int) -> Path:
        return self.path / f"node-{port}.conf"

    def pidfile(self, port: int) -> Path:
        return self.path / f"node-{port}.pid"

    def logfile(self, port: int) -> Path:
        return self.path / f"node-{port}.log"

    def data(self, port: int) -> Path:
        return self.path / f"node-{port}"

    def read_layout(self) -> Layout | None:
        try:
            raw = json.loads((self.path / LAYOUT_NAME).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LauncherError(f"cannot read {self.path / LAYOUT_NAME}: {exc}") from None
        try:
            return Layout(int(raw["nodes"]), str(raw["host"]), int(raw["base_port"]),
                          str(raw["replication_factor"]), [str(a) for a in raw["extra"]],
                          [int(p) for p in raw.get("removed", [])])
        except (KeyError, TypeError, ValueError) as exc:
            raise LauncherError(f"{self.path / LAYOUT_NAME} is damaged: {exc!r}") from None

    def require_layout(self) -> Layout:
        if not self.path.is_dir():
            raise LauncherError(f"no cluster directory at {self.path} (start one with "
                                f"`respkv-cluster up --dir {self.path}`)")
        layout = self.read_layout()
        if layout is None:
            raise LauncherError(f"{self.path} is not a cluster directory (no {LAYOUT_NAME})")
        return layout

    def write_layout(self, layout: Layout) -> None:
        _write_private(self.path / LAYOUT_NAME, json.dumps(asdict(layout), indent=2) + "\n")

    def secret(self, given: str | None) -> str:
        """The stored secret; ``given`` must match it, or is stored when there is none."""
        path = self.path / SECRET_NAME
        try:
            stored = path.read_text().strip()
        except FileNotFoundError:
            stored = ""
        if stored and given is not None and given != stored:
            raise LauncherError(f"--secret differs from the one in {path}: the running "
                                "nodes would refuse the new ones")
        if stored:
            return stored
        secret = given if given is not None else secrets.token_hex(32)
        if not secret or any(c.isspace() or c in "\"'" for c in secret):
            raise LauncherError("--secret must be a non-empty word without spaces or quotes")
        _write_private(path, secret + "\n")
        return secret

    def live_pid(self, port: int) -> int | None:
        """The pid of this node's running server, or None (Rule 2)."""
        try:
            pid = int(self.pidfile(port).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _runs(pid, str(self.conf(port))) else None

    def node_id(self, port: int) -> str:
        try:
            meta = node_meta.read(OSFileSystem(), str(self.data(port)))
        except Exception:  # damaged or half-written: the status shows it, nothing else needs it
            return "?"
        return meta.node_id if meta is not None else "-"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (it may hold the cluster secret)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _runs(pid: int, conf: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: certainly not ours
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no procfs: trust the pidfile
    if not cmdline:
        return False  # a zombie: it has exited, only its parent has not reaped it yet
    return conf.encode() in cmdline.split(b"\0")


# Talking to a node -------------------------------------------------------------------------


def probe(host: str, port: int, timeout_s: float = 2.0) -> str:
    """"yes" when the node serves data commands, else its error reply or why it cannot."""
    reply = call(host, port, "EXISTS", PROBE_KEY, timeout_s=timeout_s)
    return "yes" if reply.startswith(":") else reply


def call(host: str, port: int, *words: str, timeout_s: float = 10.0) -> str:
    """Send one command; its simple-string or error reply as text (errors without '-')."""
    request = f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    return "connection closed"
                reply += chunk
    except OSError as exc:
        return f"not answering ({exc.strerror or exc})"
    return reply.decode(errors="replace").strip().lstrip("+-")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# Commands --------------------------------------------------------------------------------


def node_conf(cdir: ClusterDir, layout: Layout, secret: str, port: int,
              seeds: Sequence[int] | None = None) -> str:
    """The node's configuration: ``cluster-peers`` naming every other member, or with
    ``seeds`` (``add``), ``seeds`` naming those nodes: the node joins through them."""
    if seeds is None:
        names, others = "cluster-peers", [p for p in layout.ports if p != port]
    else:
        names, others = "seeds", list(seeds)
    peers = " ".join(f"{layout.host}:{p + PEER_PORT_OFFSET}" for p in others)
    return (
        "# Written by respkv-cluster; `respkv-cluster up` rewrites it from cluster.json.\n"
        f"port {port}\n"
        f"bind {layout.host}\n"
        f"dir {cdir.data(port)}\n"
        f"pidfile {cdir.pidfile(port)}\n"
        f"cluster-port {port + PEER_PORT_OFFSET}\n"
        f"{names} {peers}\n"
        f"cluster-secret {secret}\n"
        f"replication-factor {layout.replication_factor}\n"
    )


def up(cdir: ClusterDir, nodes: int | None, host: str | None, base_port: int | None,
       replication_factor: str | None, secret: str | None, extra: list[str],
       timeout_s: float = READY_TIMEOUT_S) -> list[str]:
    """Start every node that is not running and wait until all serve (Rule 1); report lines."""
    layout = cdir.read_layout() if cdir.path.is_dir() else None
    if layout is None:
        layout = Layout(nodes if nodes is not None else 3, host or "127.0.0.1",
                        base_port if base_port is not None else 7001,
                        replication_factor or "3", extra)
        if layout.nodes < 1:
            raise LauncherError("--nodes must be at least 1")
        if not 1 <= layout.base_port <= 65535 - PEER_PORT_OFFSET - layout.nodes + 1:
            raise LauncherError(f"--base-port {layout.base_port}: the ports up to "
                                f"{layout.base_port + layout.nodes - 1} + {PEER_PORT_OFFSET} "
                                "must stay under 65536")
    else:
        layout = _same_layout(cdir, layout, nodes, host, base_port, replication_factor, extra)
    cdir.path.mkdir(parents=True, exist_ok=True)
    secret_text = cdir.secret(secret)
    cdir.write_layout(layout)

    report: list[str] = []
    to_start = [port for port in layout.ports if cdir.live_pid(port) is None]
    for port in to_start:
        for needed in (port, port + PEER_PORT_OFFSET):
            if not _port_free(layout.host, needed):
                raise LauncherError(f"port {layout.host}:{needed} is in use by another process "
                                    f"(node {port} needs it); choose another --base-port")
    for port in layout.ports:
        if port not in to_start:
            report.append(f"node {layout.host}:{port} already running "
                          f"(pid {cdir.live_pid(port)})")
    started: dict[int, subprocess.Popen[bytes]] = {}
    for port in to_start:
        _write_private(cdir.conf(port), node_conf(cdir, layout, secret_text, port))
        cdir.data(port).mkdir(exist_ok=True)
        started[port] = _spawn(cdir, port, layout.extra)
    deadline = time.monotonic() + timeout_s
    for port in layout.ports:
        state = _wait_ready(cdir, layout.host, port, started.get(port), deadline)
        if port in started:
            report.append(f"node {layout.host}:{port} started (pid {started[port].pid}), "
                          f"log {cdir.logfile(port)}")
        if state != "yes":
            raise LauncherError("\n".join([*report, f"node {layout.host}:{port} is not ready: "
                                           f"{state}", *_log_tail(cdir.logfile(port))]))
    report.append(f"cluster of {layout.nodes} node(s) ready: redis-cli -h {layout.host} "
                  f"-p {layout.base_port}")
    return report


def _same_layout(cdir: ClusterDir, layout: Layout, nodes: int | None, host: str | None,
                 base_port: int | None, replication_factor: str | None, extra: list[str]
                 ) -> Layout:
    """The stored layout, with ``extra`` replacing the stored extra args when given (Rule 3)."""
    asked = {"--nodes": (nodes, layout.nodes), "--host": (host, layout.host),
             "--base-port": (base_port, layout.base_port),
             "--replication-factor": (replication_factor, layout.replication_factor)}
    for option, (wanted, stored) in asked.items():
        if wanted is not None and wanted != stored:
            raise LauncherError(f"{cdir.path} holds a cluster with {option} {stored}; "
                                f"use another --dir for a different cluster")
    if extra and extra != layout.extra:
        return Layout(layout.nodes, layout.host, layout.base_port, layout.replication_factor,
                      extra, layout.removed)
    return layout


def add(cdir: ClusterDir, timeout_s: float = JOIN_TIMEOUT_S) -> list[str]:
    """Start one more node that joins the running cluster through its seeds; wait until it
    has streamed its ranges and serves (Rule 4)."""
    layout = cdir.require_layout()
    running = [port for port in layout.ports if cdir.live_pid(port) is not None]
    if not running:
        raise LauncherError(f"no node of {cdir.path} is running: a new node joins through "
                            "running ones (start them with `respkv-cluster up`)")
    port = layout.base_port + layout.nodes
    if port + PEER_PORT_OFFSET > 65535:
        raise LauncherError(f"no port left after {port - 1} (+{PEER_PORT_OFFSET} for peers)")
    for needed in (port, port + PEER_PORT_OFFSET):
        if not _port_free(layout.host, needed):
            raise LauncherError(f"port {layout.host}:{needed} is in use by another process "
                                f"(the new node {port} needs it)")
    if cdir.data(port).exists() and any(cdir.data(port).iterdir()):
        raise LauncherError(f"{cdir.data(port)} is not empty: a joining node starts empty")
    secret_text = cdir.secret(None)
    grown = Layout(layout.nodes + 1, layout.host, layout.base_port,
                   layout.replication_factor, layout.extra, layout.removed)
    cdir.write_layout(grown)  # before the start: `down` and `status` see the new node at once
    _write_private(cdir.conf(port), node_conf(cdir, grown, secret_text, port, seeds=running))
    cdir.data(port).mkdir(exist_ok=True)
    proc = _spawn(cdir, port, layout.extra)
    state = _wait_ready(cdir, layout.host, port, proc, time.monotonic() + timeout_s)
    report = [f"node {layout.host}:{port} started (pid {proc.pid}), joining through "
              f"{', '.join(str(p) for p in running)}; log {cdir.logfile(port)}"]
    if state != "yes":
        raise LauncherError("\n".join([*report, f"node {layout.host}:{port} has not joined: "
                                       f"{state}", *_log_tail(cdir.logfile(port))]))
    report.append(f"node {layout.host}:{port} joined: the cluster has {len(grown.ports)} "
                  "node(s)")
    return report


def remove(cdir: ClusterDir, port: int, timeout_s: float = LEAVE_TIMEOUT_S) -> list[str]:
    """Decommission node ``port`` and wait until its process exits (Rule 4)."""
    layout = cdir.require_layout()
    if port not in layout.ports:
        raise LauncherError(f"{port} is not a node of {cdir.path} (nodes: "
                            f"{', '.join(str(p) for p in layout.ports)})")
    pid = cdir.live_pid(port)
    if pid is None:
        raise LauncherError(f"node {layout.host}:{port} is not running: start it with "
                            "`respkv-cluster up` first (a node leaves by streaming its data "
                            "away)")
    reply = call(layout.host, port, "CLUSTER", "DECOMMISSION")
    if reply != "OK":
        raise LauncherError(f"node {layout.host}:{port} refused to leave: {reply}")
    conf = str(cdir.conf(port))
    deadline = time.monotonic() + timeout_s
    while _runs(pid, conf) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _runs(pid, conf):
        raise LauncherError(f"node {layout.host}:{port} (pid {pid}) is still leaving after "
                            f"{timeout_s:g} s; see {cdir.logfile(port)}")
    cdir.pidfile(port).unlink(missing_ok=True)
    shrunk = Layout(layout.nodes, layout.host, layout.base_port, layout.replication_factor,
                    layout.extra, sorted({*layout.removed, port}))
    cdir.write_layout(shrunk)
    return [f"node {layout.host}:{port} (pid {pid}) left the cluster and stopped; its data "
            f"directory {cdir.data(port)} is kept (it cannot rejoin: a new node starts empty)",
            f"the cluster has {len(shrunk.ports)} node(s)"]


def _spawn(cdir: ClusterDir, port: int, extra: Sequence[str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "respkv.server", str(cdir.conf(port)), *extra]
    env = dict(os.environ)
    # The child imports this very respkv, also when it runs from a checkout.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with open(cdir.logfile(port), "ab") as log:
        proc = subprocess.Popen(argv, cwd=cdir.path, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    # Written here as well as by the server: `down` finds a node that is still starting.
    cdir.pidfile(port).write_text(f"{proc.pid}\n")
    return proc


def _wait_ready(cdir: ClusterDir, host: str, port: int, proc: subprocess.Popen[bytes] | None,
                deadline: float) -> str:
    state = "not started"
    while True:
        if proc is not None and proc.poll() is not None:
            cdir.pidfile(port).unlink(missing_ok=True)
            return f"exited with status {proc.returncode}"
        if proc is None and cdir.live_pid(port) is None:
            return "not running"
        state = probe(host, port)
        if state == "yes" or time.monotonic() >= deadline:
            return state
        time.sleep(0.1)


def _log_tail(path: Path, lines: int = 15) -> list[str]:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []
    return [f"  {path.name}: {line}" for line in text]


def down(cdir: ClusterDir, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """SIGTERM every running node, wait for each to exit (SIGKILL after ``timeout_s``)."""
    layout = cdir.require_layout()
    report: list[str] = []
    stopping: dict[int, int] = {}
    for port in layout.ports:
        pid = cdir.live_pid(port)
        if pid is None:
            cdir.pidfile(port).unlink(missing_ok=True)
            report.append(f"node {layout.host}:{port} was not running")
            continue
        os.kill(pid, signal.SIGTERM)
        stopping[port] = pid
    deadline = time.monotonic() + timeout_s
    for port, pid in stopping.items():
        conf = str(cdir.conf(port))
        while _runs(pid, conf) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _runs(pid, conf):
            os.kill(pid, signal.SIGKILL)
            report.append(f"node {layout.host}:{port} (pid {pid}) did not stop in "
                          f"{timeout_s:g} s: killed")
        else:
            report.append(f"node {layout.host}:{port} (pid {pid}) stopped")
        cdir.pidfile(port).unlink(missing_ok=True)
    return report


def status(cdir: ClusterDir) -> list[NodeStatus]:
    layout = cdir.require_layout()
    out = []
    for port in layout.ports:
        pid = cdir.live_pid(port)
        try:
            recorded: int | None = int(cdir.pidfile(port).read_text().strip())
        except (OSError, ValueError):
            recorded = None
        ready = probe(layout.host, port) if pid is not None else "not running"
        out.append(NodeStatus(port, f"{layout.host}:{port}", pid or recorded, pid is not None,
                              cdir.node_id(port), ready))
    return out


def format_status(rows: Sequence[NodeStatus]) -> list[str]:
    table = [("ADDRESS", "PID", "ALIVE", "NODE ID", "READY")]
    for row in rows:
        table.append((row.address, str(row.pid or "-"), "yes" if row.alive else "no",
                      row.node_id, row.ready))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)),
                       line[4]]).rstrip() for line in table]


# Command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="respkv-cluster", description="Run a local respkv cluster of real processes.",
        epilog="Arguments after `--` go to every respkv-server of `up`, e.g. "
               "`respkv-cluster up -- --appendfsync always`.")
    commands = parser.add_subparsers(dest="command", required=True)
    dir_help = f"cluster directory (default ./{DEFAULT_DIR})"
    start = commands.add_parser("up", help="start the nodes that are not running; wait until "
                                           "all serve")
    start.add_argument("-n", "--nodes", type=int, help="number of nodes (default 3)")
    start.add_argument("--dir", default=DEFAULT_DIR, help=dir_help)
    start.add_argument("--host", help="address every node binds (default 127.0.0.1)")
    start.add_argument("--base-port", type=int,
                       help="client port of the first node (default 7001); node i listens on "
                            f"base+i, peers on base+i+{PEER_PORT_OFFSET}")
    start.add_argument("--replication-factor", help="copies of each key (default 3)")
    start.add_argument("--secret", help="cluster secret (default: generated, kept in DIR)")
    start.add_argument("--timeout", type=float, default=READY_TIMEOUT_S,
                       help="seconds to wait for the nodes to be ready")
    stop = commands.add_parser("down", help="stop the running nodes (SIGTERM)")
    stop.add_argument("--dir", default=DEFAULT_DIR, help=dir_help)
    stop.add_argument("--timeout", type=float, default=STOP_TIMEOUT_S,
                      help="seconds to wait for each node before SIGKILL")
    show = commands.add_parser("status", help="pid, liveness, address, node id, readiness")
    show.add_argument("--dir", default=DEFAULT_DIR, help=dir_help)
    grow = commands.add_parser("add", help="start one more node that joins through the running "
                                           "ones (seeds); wait until it serves")
    grow.add_argument("--dir", default=DEFAULT_DIR, help=dir_help)
    grow.add_argument("--timeout", type=float, default=JOIN_TIMEOUT_S,
                      help="seconds to wait for the join (streaming) to finish")
    shrink = commands.add_parser("remove", help="decommission the node with this client port "
                                                "(CLUSTER DECOMMISSION); wait until it stopped")
    shrink.add_argument("port", type=int, help="the node's client port")
    shrink.add_argument("--dir", default=DEFAULT_DIR, help=dir_help)
    shrink.add_argument("--timeout", type=float, default=LEAVE_TIMEOUT_S,
                        help="seconds to wait for the node to stream its data away and stop")
    return parser


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, extra = args_in[:cut], args_in[cut + 1:]
    args = _parser().parse_args(args_in)
    cdir = ClusterDir(Path(args.dir))
    try:
        if args.command == "up":
            lines = up(cdir, args.nodes, args.host, args.base_port, args.replication_factor,
                       args.secret, extra, args.timeout)
            code = 0
        elif extra:
            raise LauncherError(f"`{args.command}` takes no respkv-server arguments")
        elif args.command == "down":
            lines, code = down(cdir, args.timeout), 0
        elif args.command == "add":
            lines, code = add(cdir, args.timeout), 0
        elif args.command == "remove":
            lines, code = remove(cdir, args.port, args.timeout), 0
        else:
            rows = status(cdir)
            lines = format_status(rows)
            code = 0 if all(row.ready == "yes" for row in rows) else 1
    except LauncherError as exc:
        print(f"respkv-cluster: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return code


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
