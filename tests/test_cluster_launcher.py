"""respkv-cluster (respkv/cluster_launcher.py): up, status and down of real local clusters.

The launcher runs in-process (``main(argv)``) and starts real respkv-server processes on
127.0.0.1 at a base port whose client and peer ports (port + 10000) are all free.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import node_meta
from engine.fs import OSFileSystem
from respkv import cluster_launcher
from respkv.cluster_launcher import PEER_PORT_OFFSET, main
from tests.servers import ROOT, RawConnection, env_with_root

HOST = "127.0.0.1"


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# Every port below the kernel's ephemeral range (32768 and up here): on 127.0.0.1 a peer
# reconnecting to a killed node's port in that range can be given that same port as its own
# source (a TCP self-connect), and the restarted node then cannot bind it (seen once in CI).
EPHEMERAL_FIRST = 32768


def free_base_port(nodes: int) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, EPHEMERAL_FIRST - PEER_PORT_OFFSET - nodes)
        ports = [base + i for i in range(nodes)]
        if all(_free(p) and _free(p + PEER_PORT_OFFSET) for p in ports):
            return base
    raise RuntimeError("no free port range")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A cluster directory; whatever the test left running is stopped afterwards."""
    directory = tmp_path / "cluster"
    yield directory
    if (directory / cluster_launcher.LAYOUT_NAME).exists():
        main(["down", "--dir", str(directory), "--timeout", "5"])


def pid_of(directory: Path, port: int) -> int:
    return int((directory / f"node-{port}.pid").read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    return bool(cmdline)  # an exited child not reaped yet has an empty command line


def test_up_status_down_cycle(capsys: pytest.CaptureFixture[str], cluster_dir: Path) -> None:
    base = free_base_port(3)
    ports = [base, base + 1, base + 2]
    code, out, err = run(capsys, "up", "--dir", str(cluster_dir), "--base-port", str(base),
                         "--", "--databases", "4")
    assert code == 0, err
    assert f"cluster of 3 node(s) ready: redis-cli -h {HOST} -p {base}" in out
    for port in ports:
        assert f"node {HOST}:{port} started" in out
    # The secret and the node configurations (which hold it) are private to the owner.
    for name in ("cluster-secret", *(f"node-{p}.conf" for p in ports)):
        assert stat.S_IMODE((cluster_dir / name).stat().st_mode) == 0o600, name
    secret = (cluster_dir / "cluster-secret").read_text().strip()
    assert len(secret) == 64
    assert f"cluster-secret {secret}" in (cluster_dir / f"node-{base}.conf").read_text()

    # A write through the first node is read through the last; extra args reached the nodes.
    with RawConnection(ports[0]) as conn:
        assert conn.call("SET", "k", "v") == b"+OK\r\n"
        assert conn.call("SELECT", 4) == b"-ERR DB index is out of range\r\n"
    with RawConnection(ports[2]) as conn:
        assert conn.call("GET", "k") == b"$1\r\nv\r\n"

    code, out, _ = run(capsys, "status", "--dir", str(cluster_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ADDRESS", "PID", "ALIVE", "NODE", "ID", "READY"]
    for port, line in zip(ports, lines[1:], strict=True):
        meta = node_meta.read(OSFileSystem(), str(cluster_dir / f"node-{port}"))
        assert meta is not None
        assert line.split() == [f"{HOST}:{port}", str(pid_of(cluster_dir, port)), "yes",
                                meta.node_id, "yes"]

    # Idempotent: nothing is started twice.
    pids = [pid_of(cluster_dir, p) for p in ports]
    code, out, _ = run(capsys, "up", "--dir", str(cluster_dir))
    assert code == 0
    assert out.count("already running") == 3
    assert [pid_of(cluster_dir, p) for p in ports] == pids

    # A killed node shows as down, and `up` restarts only it, with its data.
    os.kill(pids[1], signal.SIGKILL)
    code, out, _ = run(capsys, "status", "--dir", str(cluster_dir))
    assert code == 1
    assert f"{HOST}:{ports[1]}" in out and "not running" in out
    code, out, err = run(capsys, "up", "--dir", str(cluster_dir))
    assert code == 0, f"{out}\n{err}"
    assert f"node {HOST}:{ports[1]} started" in out and out.count("already running") == 2
    assert pid_of(cluster_dir, ports[1]) != pids[1]
    with RawConnection(ports[1]) as conn:
        assert conn.call("GET", "k") == b"$1\r\nv\r\n"
        # The stored extra args were used for the restart too.
        assert conn.call("SELECT", 4) == b"-ERR DB index is out of range\r\n"

    pids = [pid_of(cluster_dir, p) for p in ports]
    code, out, _ = run(capsys, "down", "--dir", str(cluster_dir))
    assert code == 0
    for port, pid in zip(ports, pids, strict=True):
        assert f"node {HOST}:{port} (pid {pid}) stopped" in out
        assert not alive(pid)
        assert not (cluster_dir / f"node-{port}.pid").exists()
    code, out, _ = run(capsys, "down", "--dir", str(cluster_dir))
    assert code == 0 and out.count("was not running") == 3
    code, out, _ = run(capsys, "status", "--dir", str(cluster_dir))
    assert code == 1 and out.count("not running") == 3

    # Started again from the same directory: same nodes, same data, same secret.
    code, _, err = run(capsys, "up", "--dir", str(cluster_dir))
    assert code == 0, err
    with RawConnection(ports[2]) as conn:
        assert conn.call("GET", "k") == b"$1\r\nv\r\n"
    assert (cluster_dir / "cluster-secret").read_text().strip() == secret


def test_missing_directory_is_an_error(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    for command in ("status", "down"):
        code, out, err = run(capsys, command, "--dir", str(tmp_path / "none"))
        assert code == 1 and out == ""
        assert "no cluster directory at" in err
    code, _, err = run(capsys, "status", "--dir", str(tmp_path))
    assert code == 1 and "is not a cluster directory" in err


def test_busy_port_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str],
                                                      cluster_dir: Path) -> None:
    base = free_base_port(3)
    with socket.socket() as squatter:
        squatter.bind((HOST, base + 1 + PEER_PORT_OFFSET))
        squatter.listen()
        code, _, err = run(capsys, "up", "--dir", str(cluster_dir), "--base-port", str(base))
    assert code == 1
    assert f"port {HOST}:{base + 1 + PEER_PORT_OFFSET} is in use" in err
    assert not list(cluster_dir.glob("*.pid"))


def test_options_that_contradict_the_directory_are_refused(
        capsys: pytest.CaptureFixture[str], cluster_dir: Path) -> None:
    base = free_base_port(1)
    code, _, err = run(capsys, "up", "--dir", str(cluster_dir), "--base-port", str(base),
                       "--nodes", "1", "--replication-factor", "1", "--secret", "s3cret")
    assert code == 0, err
    assert (cluster_dir / "cluster-secret").read_text().strip() == "s3cret"
    for option, value, text in (("--nodes", "3", "--nodes 1"),
                                ("--base-port", str(base + 1), f"--base-port {base}"),
                                ("--replication-factor", "3", "--replication-factor 1"),
                                ("--secret", "other", "--secret differs")):
        code, _, err = run(capsys, "up", "--dir", str(cluster_dir), option, value)
        assert code == 1 and text in err, (option, err)
    code, _, err = run(capsys, "status", "--dir", str(cluster_dir), "--", "--port", "1")
    assert code == 1 and "`status` takes no respkv-server arguments" in err


def test_stale_pidfile_of_another_process_is_never_signalled(
        capsys: pytest.CaptureFixture[str], cluster_dir: Path) -> None:
    base = free_base_port(1)
    assert run(capsys, "up", "--dir", str(cluster_dir), "--base-port", str(base),
               "--nodes", "1", "--replication-factor", "1")[0] == 0
    assert run(capsys, "down", "--dir", str(cluster_dir))[0] == 0
    # A pid reused by an unrelated process: it is not the node, so it is left alone.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (cluster_dir / f"node-{base}.pid").write_text(f"{bystander.pid}\n")
        code, out, _ = run(capsys, "status", "--dir", str(cluster_dir))
        assert code == 1 and " no " in out
        code, out, _ = run(capsys, "down", "--dir", str(cluster_dir))
        assert code == 0 and "was not running" in out
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_node_that_cannot_start_is_reported_with_its_log(
        capsys: pytest.CaptureFixture[str], cluster_dir: Path) -> None:
    base = free_base_port(1)
    code, _, err = run(capsys, "up", "--dir", str(cluster_dir), "--base-port", str(base),
                       "--nodes", "1", "--", "--no-such-directive", "1")
    assert code == 1
    assert f"node {HOST}:{base} is not ready: exited with status 1" in err
    assert "no-such-directive" in err  # the tail of the node's log says why


def test_console_script_runs(tmp_path: Path) -> None:
    """`python -m respkv.cluster_launcher` (what the respkv-cluster script calls)."""
    done = subprocess.run([sys.executable, "-m", "respkv.cluster_launcher", "status", "--dir",
                           str(tmp_path / "none")], capture_output=True, text=True,
                          timeout=30, cwd=ROOT, env=env_with_root())
    assert done.returncode == 1
    assert done.stderr.startswith("respkv-cluster: no cluster directory")
    done = subprocess.run([sys.executable, "-m", "respkv.cluster_launcher", "--help"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env=env_with_root())
    assert done.returncode == 0 and "up" in done.stdout and "status" in done.stdout


def test_add_joins_through_seeds_and_remove_decommissions(
        capsys: pytest.CaptureFixture[str], cluster_dir: Path) -> None:
    base = free_base_port(4)
    code, _, err = run(capsys, "up", "--dir", str(cluster_dir), "--base-port", str(base),
                       "--nodes", "3")
    assert code == 0, err
    with RawConnection(base) as conn:
        for k in range(200):
            assert conn.call("SET", f"k{k}", f"v{k}") == b"+OK\r\n"

    new = base + 3
    code, out, err = run(capsys, "add", "--dir", str(cluster_dir))
    assert code == 0, err
    assert f"node {HOST}:{new} started" in out and "the cluster has 4 node(s)" in out
    conf = (cluster_dir / f"node-{new}.conf").read_text()
    assert f"seeds {HOST}:{base + PEER_PORT_OFFSET}" in conf and "cluster-peers" not in conf
    code, out, _ = run(capsys, "status", "--dir", str(cluster_dir))
    assert code == 0
    rows = out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == [f"{HOST}:{base + i}" for i in range(4)]
    assert all(row.split()[-1] == "yes" for row in rows)
    with RawConnection(new) as conn:  # it joined: it serves every key, R=ALL
        assert conn.call("CONSISTENCY", "R", "ALL") == b"+OK\r\n"
        for k in range(200):
            assert conn.call("GET", f"k{k}") == f"${len(f'v{k}')}\r\nv{k}\r\n".encode()

    leaving_pid = pid_of(cluster_dir, base)
    code, out, err = run(capsys, "remove", str(base), "--dir", str(cluster_dir))
    assert code == 0, err
    assert f"node {HOST}:{base} (pid {leaving_pid}) left the cluster and stopped" in out
    assert not alive(leaving_pid)
    code, out, _ = run(capsys, "status", "--dir", str(cluster_dir))
    assert code == 0
    assert [row.split()[0] for row in out.splitlines()[1:]] == [
        f"{HOST}:{base + i}" for i in (1, 2, 3)]
    with RawConnection(base + 1) as conn:
        assert conn.call("CONSISTENCY", "R", "ALL") == b"+OK\r\n"
        for k in range(200):
            assert conn.call("GET", f"k{k}") == f"${len(f'v{k}')}\r\nv{k}\r\n".encode()
    # Gone for good: `up` does not start it again, and an error names the members.
    code, out, err = run(capsys, "up", "--dir", str(cluster_dir))
    assert code == 0, err
    assert out.count("already running") == 3 and f"{HOST}:{base} " not in out
    code, _, err = run(capsys, "remove", str(base), "--dir", str(cluster_dir))
    assert code == 1 and f"{base} is not a node of" in err

    pids = [pid_of(cluster_dir, base + i) for i in (1, 2, 3)]
    code, out, _ = run(capsys, "down", "--dir", str(cluster_dir))
    assert code == 0 and out.count(") stopped") == 3  # the added node too
    assert not any(alive(pid) for pid in pids)


def test_add_needs_a_running_node(capsys: pytest.CaptureFixture[str],
                                  cluster_dir: Path) -> None:
    base = free_base_port(2)
    code, _, err = run(capsys, "up", "--dir", str(cluster_dir), "--base-port", str(base),
                       "--nodes", "1")
    assert code == 0, err
    code, _, _ = run(capsys, "down", "--dir", str(cluster_dir))
    assert code == 0
    code, _, err = run(capsys, "add", "--dir", str(cluster_dir))
    assert code == 1 and "no node of" in err and "is running" in err
