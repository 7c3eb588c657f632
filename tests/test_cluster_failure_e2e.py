"""Failure handling with real processes (issue 6): hinted handoff after kill -9, a wiped node
rebuilt by CLUSTER REPAIR with its progress in INFO, a node down longer than gc-grace-seconds
refused until rebuilt, strict quorums (sloppy-quorum no), and deletes that stay deleted.

Every check of what a node holds is made on that node alone, before anything could have
repaired it by a read: INFO keyspace counts the keys its own replica stores (per node in a
cluster), and reads go through it with ``CONSISTENCY R ONE``. With 3 nodes and N=3 every
node replicates every key, so a node that holds every key holds exactly ``KEYS`` of them.

Failure detection (kill -9): the kernel closes the killed process's sockets, so its peers'
links fail at once and the peers treat it as down within a gossip round; tests wait for
``respkv_cluster_nodes_up`` to say so (bounded by ``DOWN_BOUND_S``) before writing, so every
write of the test is one the coordinator knows the dead node missed (and keeps a hint for).

Three clusters: the module's (3 nodes, anti-entropy only on demand, faster handoff), one
with gc-grace-seconds 2 and one of 4 nodes with sloppy-quorum no (each changes an immutable
directive). Nodes use 127.0.0.30.., .40.., .50.. so other modules' clusters never collide.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.cluster_servers import LocalCluster
from tests.servers import RawConnection

KEYS = 10_000
BATCH = 500
DOWN_BOUND_S = 5.0  # kill -9 -> the others treat it as down (link loss + a gossip round)
HANDOFF_BOUND_S = 60.0  # 10,000 hints at 5,000/s per target, on a loaded machine
REPAIR_BOUND_S = 60.0
OPTIONS = ["--anti-entropy-interval", "0", "--hinted-handoff-throttle", "5000",
           "--request-timeout", "1000"]


def value(k: int) -> bytes:
    return b"v%d" % k


def load(cluster: LocalCluster, via: Sequence[int], keys: Sequence[int]) -> None:
    """MSET ``keys`` (default W=2) in batches, through the nodes of ``via`` in turn."""
    clients = [cluster.client(i) for i in via]
    for n, start in enumerate(range(0, len(keys), BATCH)):
        chunk = keys[start:start + BATCH]
        assert clients[n % len(clients)].mset({f"k{k}": value(k) for k in chunk})
    for client in clients:
        client.close()


def delete(cluster: LocalCluster, via: Sequence[int], keys: Sequence[int]) -> None:
    clients = [cluster.client(i) for i in via]
    for n, start in enumerate(range(0, len(keys), BATCH)):
        chunk = keys[start:start + BATCH]
        assert clients[n % len(clients)].delete(*(f"k{k}" for k in chunk)) == len(chunk)
    for client in clients:
        client.close()


def read_one(cluster: LocalCluster, i: int, keys: Sequence[int]) -> list[bytes | None]:
    """Each key read through node ``i`` with R=ONE (MGET of batches)."""
    client = cluster.client(i)
    try:
        assert client.execute_command("CONSISTENCY", "R", "ONE") == b"OK"
        values: list[bytes | None] = []
        for start in range(0, len(keys), BATCH):
            values.extend(client.mget([f"k{k}" for k in keys[start:start + BATCH]]))
        return values
    finally:
        client.close()


def wrong_through(cluster: LocalCluster, i: int, live: Sequence[int],
                  deleted: Sequence[int] = ()) -> list[str]:
    """Keys that do not read back as they should through node ``i`` at R=ONE."""
    wrong = [f"k{k}" for k, v in zip(live, read_one(cluster, i, live), strict=True)
             if v != value(k)]
    wrong += [f"k{k} (deleted)" for k, v in
              zip(deleted, read_one(cluster, i, deleted), strict=True) if v is not None]
    return wrong


def local_keys(cluster: LocalCluster, i: int) -> int:
    field = cluster.info(i, "keyspace").get("db0", "keys=0")
    return int(field.split(",")[0].removeprefix("keys="))


def respkv_int(cluster: LocalCluster, i: int, name: str) -> int:
    return int(cluster.info(i, "respkv")[name])


def hints_for(cluster: LocalCluster, i: int, node_id: str) -> int:
    """Node ``i``'s INFO cluster line for ``node_id``: count=<n>,bytes=<b>; the count."""
    text = cluster.info_cluster(i)[f"respkv_hints_for_{node_id}"]
    fields = dict(part.split("=") for part in text.split(","))
    assert set(fields) == {"count", "bytes"}, text
    assert (int(fields["count"]) == 0) == (int(fields["bytes"]) == 0), text
    return int(fields["count"])


def nodes_line(cluster: LocalCluster, via: int, node_id: str) -> list[str]:
    with cluster.connect(via) as conn:
        raw = conn.call("CLUSTER", "NODES")
    text = raw.split(b"\r\n", 1)[1].decode()
    return next(line.split() for line in text.splitlines() if line.startswith(node_id))


def myid(cluster: LocalCluster, i: int) -> str:
    with cluster.connect(i) as conn:
        reply = conn.call("CLUSTER", "MYID")
    return reply.split(b"\r\n")[1].decode()


def wait_for(what: str, check: Callable[[], bool], timeout: float,
             cluster: LocalCluster) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{cluster.log_text()}")
        time.sleep(0.02)


def kill_and_wait_down(cluster: LocalCluster, dead: int) -> None:
    cluster.kill(dead)
    alive = [i for i in cluster.members if i != dead]
    up = str(len(alive))
    wait_for(f"node{dead} seen down", lambda: all(
        cluster.info_cluster(i)["respkv_cluster_nodes_up"] == up for i in alive),
        DOWN_BOUND_S, cluster)


def wait_no_hints(cluster: LocalCluster, holders: Sequence[int]) -> None:
    wait_for("every hint handed off", lambda: all(
        respkv_int(cluster, i, "hints_pending") == 0 for i in holders),
        HANDOFF_BOUND_S, cluster)


def repair(cluster: LocalCluster, i: int) -> tuple[int, list[tuple[str, int, int]]]:
    """CLUSTER REPAIR on node ``i``, then poll INFO until it is idle: the ranges it queued
    and the (state, ranges done, ranges total) seen on the way."""
    with cluster.connect(i) as conn:
        reply = conn.call("CLUSTER", "REPAIR")
    assert reply.startswith(b":"), reply
    queued = int(reply[1:-2])
    seen: list[tuple[str, int, int]] = []

    def idle() -> bool:
        info = cluster.info(i, "everything")
        seen.append((info["respkv_repair_state"], int(info["repair_ranges_done"]),
                     int(info["repair_ranges_total"])))
        return seen[-1][0] == "idle" and info["repair_ranges_queued"] == "0"
    wait_for(f"the repair on node{i} to finish", idle, REPAIR_BOUND_S, cluster)
    return queued, seen


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("failures"), 3, extra=OPTIONS,
                           first_host=30)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(module_cluster: LocalCluster) -> LocalCluster:
    """The module's cluster with every node running and converged, and no data or hints."""
    c = module_cluster
    for i in c.members:
        if i not in c.running():
            c.restart(i)
    c.wait_converged()
    with c.connect(0) as conn:
        assert conn.call("FLUSHALL") == b"+OK\r\n"  # also drops every node's hints
    return c


def test_killed_node_gets_every_write_back_by_hinted_handoff(cluster: LocalCluster) -> None:
    c = cluster
    dead = myid(c, 2)
    keys = list(range(KEYS))
    kill_and_wait_down(c, 2)
    assert hints_for(c, 0, dead) == hints_for(c, 1, dead) == 0
    load(c, [0, 1], keys)  # W=2: node0 and node1 ack every write; each keeps a hint

    held = [hints_for(c, i, dead) for i in (0, 1)]
    assert held == [KEYS // 2, KEYS // 2]  # one per key each coordinated
    line = nodes_line(c, 0, dead)
    assert "fail?" in line[2] and line[-1] == f"hints={held[0]}", line
    assert nodes_line(c, 0, myid(c, 0))[-1] == "hints=0"
    # redis-py's INFO parser reads the per-target line as a dict.
    parsed = c.client(1).info("cluster")[f"respkv_hints_for_{dead}"]
    assert parsed["count"] == KEYS // 2 and parsed["bytes"] > 0, parsed
    delivered = [respkv_int(c, i, "hints_delivered") for i in (0, 1)]

    c.restart(2)
    wait_no_hints(c, [0, 1])
    assert [hints_for(c, i, dead) for i in (0, 1)] == [0, 0]
    assert nodes_line(c, 1, dead)[-1] == "hints=0"
    assert sum(respkv_int(c, i, "hints_delivered") for i in (0, 1)) - sum(delivered) == KEYS
    # Node2 holds every key itself (no read has touched it yet: hints put them there) ...
    assert local_keys(c, 2) == KEYS
    # ... and answers each one alone.
    assert wrong_through(c, 2, keys) == []


def test_wiped_node_is_restored_by_cluster_repair(cluster: LocalCluster) -> None:
    c = cluster
    keys = list(range(KEYS))
    load(c, [0, 1, 2], keys)
    wait_for("node2 to hold every key", lambda: local_keys(c, 2) == KEYS, 30, c)
    before = myid(c, 2)

    c.nodes[2].stop()
    directory = c.workdir / "node2"
    shutil.rmtree(directory / "engine")
    kept = {p.name for p in directory.iterdir()}
    assert {"node.meta", "node.tokens", "cluster.state"} <= kept, kept
    c.restart(2)
    c.wait_converged()
    assert myid(c, 2) == before and local_keys(c, 2) == 0
    assert respkv_int(c, 2, "repair_ranges_total") == 0

    queued, seen = repair(c, 2)
    assert queued > 0
    running = [done for state, done, _ in seen if state == "running"]
    # Progress is visible while it runs: ranges done rises, never falls, up to the total.
    assert len(set(running)) >= 2, seen
    assert running == sorted(running), seen
    assert seen[-1] == ("idle", queued, queued), seen[-1]
    assert respkv_int(c, 2, "ae_keys_repaired") >= KEYS
    assert respkv_int(c, 2, "ae_ranges_failed") == 0
    assert local_keys(c, 2) == KEYS  # before any read through it
    assert wrong_through(c, 2, keys) == []


def test_deleted_keys_stay_deleted_after_the_node_that_missed_them_returns(
        cluster: LocalCluster) -> None:
    c = cluster
    keys = list(range(2_000))
    live, deleted = keys[::2], keys[1::2]
    load(c, [0, 1, 2], keys)
    wait_for("node2 to hold every key", lambda: local_keys(c, 2) == len(keys), 30, c)

    kill_and_wait_down(c, 2)
    delete(c, [0, 1], deleted)  # node2 misses every delete: its copies stay alive
    c.restart(2)
    wait_no_hints(c, [0, 1])
    assert local_keys(c, 2) == len(live)  # the tombstones came as hints
    for i in (2, 0):  # the node that missed the deletes, and one that did not
        queued, _ = repair(c, i)
        assert queued > 0
    for i in (0, 1, 2):
        assert local_keys(c, i) == len(live), i
        assert wrong_through(c, i, live, deleted) == [], i
    with c.connect(1) as conn:
        assert conn.call("CONSISTENCY", "R", "ALL") == b"+OK\r\n"
        assert conn.call("EXISTS", *(f"k{k}" for k in deleted)) == b":0\r\n"


def test_node_down_longer_than_gc_grace_refuses_until_rebuilt(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, extra=[*OPTIONS, "--gc-grace-seconds", "2"],
                     first_host=40)
    try:
        c.start()
        keys = list(range(2_000))
        live, deleted = keys[::2], keys[1::2]
        load(c, [0, 1, 2], keys)
        wait_for("node2 to hold every key", lambda: local_keys(c, 2) == len(keys), 30, c)

        c.nodes[2].stop()  # a clean stop records when it was last up (node.alive)
        stopped = time.monotonic()
        delete(c, [0, 1], deleted)
        # The scenario itself: stay down longer than the 2 s grace (not a timing assertion).
        time.sleep(max(0.0, stopped + 3.0 - time.monotonic()))
        with pytest.raises(RuntimeError) as refused:
            c.nodes[2].start()
        message = str(refused.value)
        assert "exited at start" in message
        assert "longer than gc-grace-seconds (2 s)" in message, message
        assert "empty its engine directory" in message, message

        shutil.rmtree(c.workdir / "node2" / "engine")
        c.restart(2)
        c.wait_converged()
        assert local_keys(c, 2) == 0
        queued, _ = repair(c, 2)
        assert queued > 0
        assert local_keys(c, 2) == len(live)
        for i in (0, 1, 2):
            assert wrong_through(c, i, live, deleted) == [], i
    finally:
        c.stop()


def test_strict_quorum_keeps_writes_at_quorum_and_refuses_all(tmp_path: Path) -> None:
    # 4 nodes, N=3: a stand-in exists for a down replica, and sloppy-quorum no forbids it.
    c = LocalCluster(tmp_path, 4, extra=[*OPTIONS, "--sloppy-quorum", "no"], first_host=50)
    try:
        c.start()
        dead = myid(c, 3)
        keys = [f"s{n}" for n in range(60)]
        with c.connect(0) as conn:
            owners = {key: conn.call("CLUSTER", "KEYNODES", key) for key in keys}
        on_dead = [key for key in keys if dead.encode() in owners[key]]
        elsewhere = [key for key in keys if key not in on_dead]
        assert on_dead and elsewhere  # 60 keys on 4 nodes' random tokens: both groups

        kill_and_wait_down(c, 3)
        with c.connect(0) as conn:
            for key in keys:  # QUORUM (2 of 3): met by the two replicas that are up
                assert conn.call("SET", key, "quorum") == b"+OK\r\n", key
            assert conn.call("CONSISTENCY", "W", "ALL") == b"+OK\r\n"
            for key in on_dead:  # ALL: the down replica counts as failed, no stand-in
                # (the count is of the answers in when it gave up: its read may stop at 1)
                reply = conn.call("SET", key, "all")
                assert reply.startswith(b"-NOQUORUM ") and reply.endswith(
                    b" of 3 required replicas answered\r\n"), (key, reply)
            for key in elsewhere:
                assert conn.call("SET", key, "all") == b"+OK\r\n", key
            assert conn.call("CONSISTENCY", "DEFAULT") == b"+OK\r\n"
            for key in on_dead:  # a refused ALL write may have landed where it could
                assert conn.call("GET", key) in (b"$6\r\nquorum\r\n", b"$3\r\nall\r\n"), key

        # Strict quorums still keep hints: the dead node gets its writes back.
        c.restart(3)
        wait_no_hints(c, [0, 1, 2])
        with RawConnection(c.ports[3], c.hosts[3]) as conn:
            for key in on_dead:
                assert conn.call("MEMORY", "USAGE", key).startswith(b":"), key
    finally:
        c.stop()


def test_standalone_info_and_nodes_have_no_hint_fields(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        assert conn.call("INFO", "cluster") == b"$30\r\n# Cluster\r\ncluster_enabled:0\r\n\r\n"
        raw = conn.call("CLUSTER", "NODES")
    (line,) = raw.split(b"\r\n", 1)[1].decode().strip().splitlines()
    assert "hints=" not in line and line.endswith("ownership=100.00%"), line
