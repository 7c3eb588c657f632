"""The server side of a cluster node: start-up checks, INFO cluster, CONFIG SET of levels.

Real respkv-server processes (tests/cluster_servers.py); the command-level behaviour of a
cluster is tested in test_cluster_e2e.py and test_cmd_cluster.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_servers import LocalCluster
from tests.servers import ROOT, env_with_root, free_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), 3)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def info_cluster(cluster: LocalCluster, i: int) -> dict[str, str]:
    with cluster.connect(i) as conn:
        raw = conn.call("INFO", "cluster")
    lines = raw.split(b"\r\n")[1:]
    return dict(line.decode().split(":", 1) for line in lines if b":" in line)


def test_info_cluster_describes_the_cluster(cluster: LocalCluster) -> None:
    fields = info_cluster(cluster, 0)
    others = [cluster.info(i, "respkv")["node_id"] for i in (1, 2)]
    assert fields == {
        "respkv_repair_state": "idle",
        # One line per other member: the hints this node holds for it.
        **{f"respkv_hints_for_{node_id}": "count=0,bytes=0" for node_id in others},
        "cluster_enabled": "0",  # Redis Cluster's protocol is not spoken
        "respkv_cluster_nodes": "3", "respkv_cluster_owners": "3",
        "respkv_cluster_nodes_up": "3", "respkv_cluster_ready": "1",
        "respkv_node_status": "normal", "respkv_cluster_peers_missing": "0",
        "respkv_replication_factor": "3", "respkv_read_consistency": "quorum",
        "respkv_write_consistency": "quorum",
    }


def test_config_set_consistency_changes_the_node_default(cluster: LocalCluster) -> None:
    with cluster.connect(0) as conn:
        assert conn.call("SET", "k", "v") == b"+OK\r\n"
        assert conn.call("CONFIG", "SET", "read-consistency", "all") == b"+OK\r\n"
        assert conn.call("CONFIG", "GET", "read-consistency") == (
            b"*2\r\n$16\r\nread-consistency\r\n$3\r\nall\r\n")
        assert conn.call("CONFIG", "SET", "write-consistency", "2") == b"+OK\r\n"
        assert conn.call("CONFIG", "SET", "read-consistency", "most").startswith(
            b"-ERR CONFIG SET failed (possibly related to argument 'read-consistency') - "
            b"invalid consistency level")
        try:
            cluster.kill(2)
            # ALL now needs the dead node: a clear error, never a partial answer.
            reply = conn.call("GET", "k")
            assert reply.startswith(b"-NOQUORUM "), reply
            assert conn.call("SET", "k", "v2") == b"+OK\r\n"  # W=2 still holds
            assert conn.call("CONFIG", "SET", "read-consistency", "quorum") == b"+OK\r\n"
            assert conn.call("GET", "k") == b"$2\r\nv2\r\n"
        finally:
            conn.call("CONFIG", "SET", "read-consistency", "quorum")
            conn.call("CONFIG", "SET", "write-consistency", "quorum")
            cluster.restart(2)
    assert info_cluster(cluster, 0)["respkv_cluster_nodes_up"] in ("2", "3")


def test_replication_factor_is_immutable(cluster: LocalCluster) -> None:
    with cluster.connect(1) as conn:
        assert conn.call("CONFIG", "SET", "replication-factor", "2") == (
            b"-ERR CONFIG SET failed (possibly related to argument 'replication-factor') - "
            b"can't set immutable config\r\n")


def start_fails(tmp_path: Path, *args: str) -> str:
    argv = [sys.executable, "-m", "respkv.server", "--port", str(free_port()),
            "--bind", "127.0.0.1", "--dir", str(tmp_path / "data"), *args]
    done = subprocess.run(argv, cwd=ROOT, env=env_with_root(), capture_output=True,
                          timeout=60)
    assert done.returncode != 0
    return (done.stdout + done.stderr).decode()


def test_cluster_peers_without_secret_refuse_to_start(tmp_path: Path) -> None:
    out = start_fails(tmp_path, "--cluster-peers", "127.0.0.1:17999")
    assert "Can't start: cluster-peers or seeds is set but cluster-secret is empty" in out
    assert "Traceback" not in out


def test_bad_cluster_directives_stop_start_up(tmp_path: Path) -> None:
    out = start_fails(tmp_path, "--cluster-peers", "nowhere")
    assert "'nowhere' is not host:port" in out
    out = start_fails(tmp_path, "--replication-factor", "dc1:0")
    assert "the factor must be an integer 1..16" in out


def test_damaged_state_file_stops_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cluster.state").write_bytes(b"RKVGSTA\n\x01garbage")
    out = start_fails(tmp_path, "--cluster-peers", "127.0.0.1:17999",
                      "--cluster-secret", "s")
    assert "Can't start: cluster.state: 16 bytes is too short" in out
    assert "Traceback" not in out


def test_cluster_directives_reach_the_cluster_options(tmp_path: Path) -> None:
    """read-repair-every, read-speculate-ms and stream-throughput go from the config to the
    cluster options."""
    from respkv.config import Config
    from respkv.server import cluster_options

    config = Config.load(["--cluster-peers", "127.0.0.1:17001", "--cluster-secret", "s",
                          "--read-repair-every", "3", "--read-speculate-ms", "40",
                          "--dir", str(tmp_path)])
    options = cluster_options(config)
    assert (options.read_repair_every, options.read_speculate_ms) == (3, 40)
    streamed = cluster_options(Config.load([
        "--cluster-peers", "127.0.0.1:17001", "--cluster-secret", "s",
        "--stream-throughput", "4mb", "--dir", str(tmp_path)]))
    assert streamed.stream_rate_bytes_per_s == 4 * 1024 * 1024
    defaults = cluster_options(Config.load(["--cluster-peers", "127.0.0.1:17001",
                                            "--cluster-secret", "s", "--dir", str(tmp_path)]))
    assert (defaults.read_repair_every, defaults.read_speculate_ms) == (10, 0)
