"""cluster/cluster_node.py: three ClusterNodes in one event loop over real loopback TCP.

The frontend's view of a cluster (get/put/delete/write_many/scan/random_key/dbsize/flush),
readiness (Rule 1), acks after commit (Rule 2), NOQUORUM (Rule 3), fan-out (Rule 4) and the
member exchange (Rule 5). The real-process tests (kill -9, restarts) are test_cluster_e2e.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cluster import members as members_file
from cluster.clock import LoopClock
from cluster.cluster_node import ClusterDown, ClusterNode, ClusterOptions
from cluster.consistency import Level, NoQuorumError
from cluster.endpoint_state import Status
from cluster.errors import ClusterError
from cluster.messages import GossipAck2, GossipSyn, Write, WriteAck
from cluster.node import NodeOptions
from cluster.preflist import Replication
from cluster.sibling_codec import encode_single
from cluster.transport import DeferredReply, RemoteError
from engine.fs import OSFileSystem
from tests.servers import free_port

HOST = "127.0.0.1"
SECRET = b"unit-test-secret"


def options(peer_port: int, peers: list[int], **extra: object) -> ClusterOptions:
    return ClusterOptions(
        peer_host=HOST, peer_port=peer_port, client_host=HOST, client_port=peer_port,
        peers=tuple((HOST, p) for p in peers), secret=SECRET, num_tokens=16,
        replication=Replication.simple(3), request_timeout_ms=500,
        exchange_interval_s=0.05, **extra)  # type: ignore[arg-type]


async def open_cluster(tmp_path: Path, size: int = 3, **extra: object) -> list[ClusterNode]:
    ports = [free_port() for _ in range(size)]
    clock = LoopClock(asyncio.get_running_loop())
    nodes = []
    for i, port in enumerate(ports):
        node = await ClusterNode.open(
            str(tmp_path / f"n{i}"), NodeOptions(fsync="no", tombstone_grace_ms=60_000),
            options(port, [p for p in ports if p != port], **extra), clock)
        node.start()
        nodes.append(node)
    await wait_for(lambda: settled(nodes))
    return nodes


def settled(nodes: list[ClusterNode]) -> bool:
    """Every node is ready and every node's ring holds every node (gossip has converged)."""
    ids = sorted(n.node_id for n in nodes)
    return all(n.ready and n.membership.ring().node_ids() == ids
               and sorted(n.up_nodes()) == ids for n in nodes)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def close_all(nodes: list[ClusterNode]) -> None:
    for node in nodes:
        await node.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_write_anywhere_read_anywhere(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = await open_cluster(tmp_path)
        try:
            a, b, c = nodes
            await a.put(0, b"k", b"v1")
            entry = await b.get(0, b"k")
            assert entry is not None and entry.value == b"v1"
            await c.put(0, b"k", b"v2", context=entry.context)
            entry = await a.get(0, b"k", Level.ALL)
            assert entry is not None and entry.value == b"v2"
            assert len(entry.context) == 1  # the context write superseded the first version
            assert await b.delete(0, b"k")
            assert await c.get(0, b"k") is None
            assert not await a.delete(0, b"k")
            # A value expiring in the past is invisible everywhere at once.
            await a.put(0, b"gone", b"x", expire_at_ms=a.clock.wall_ms() - 1)
            assert await b.get(0, b"gone") is None
            # Every replica holds the key (N=3 on 3 nodes) once W=ALL returned.
            await b.put(0, b"all", b"1", level=Level.ALL)
            for node in nodes:
                assert node.node.replica.read(node_key(0, b"all"))
        finally:
            await close_all(nodes)
    run(body)


def node_key(db: int, key: bytes) -> bytes:
    from cluster.keys import engine_key
    return engine_key(db, key)


def test_peer_writes_are_acknowledged_after_commit(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = await open_cluster(tmp_path)
        try:
            # Nothing commits the replicas' logs but the ack barrier (there is no server
            # here): once W=ALL returns, no replica may hold uncommitted writes (Rule 2).
            await nodes[0].put(0, b"durable", b"v", level=Level.ALL)
            for node in nodes[1:]:
                assert not node.has_uncommitted
        finally:
            await close_all(nodes)
    run(body)


def test_a_commit_round_settles_its_peer_acks_in_its_own_turn(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = await open_cluster(tmp_path)
        try:
            replica = nodes[1]
            siblings = encode_single(1000, 0, nodes[0].actor, b"v", 1, 1000)
            first = replica._serve("peer", Write(0, b"a", siblings))
            second = replica._serve("peer", Write(0, b"b", siblings))
            # Rule 2: not acknowledged before the commit; one wait for the round's WriteAcks.
            assert isinstance(first, DeferredReply) and first is second
            assert first.outcome is None and replica.has_uncommitted
            flushed: list[bool] = []
            flush = replica.transport.flush_replies
            replica.transport.flush_replies = lambda: flushed.append(True)  # type: ignore[method-assign]
            replica._commit()
            replica.transport.flush_replies = flush  # type: ignore[method-assign]
            # Settled and written in the commit's turn, not a loop turn or two later.
            assert first.outcome == WriteAck() and not replica.has_uncommitted
            assert flushed == [True]
        finally:
            await close_all(nodes)
    run(body)


def test_multi_key_fan_out(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = await open_cluster(tmp_path)
        try:
            a, b, c = nodes
            keys = [b"key:%d" % i for i in range(200)]
            await a.write_many(0, [(k, b"v" + k, 0) for k in keys] + [(keys[0], None, 0)])
            assert await b.get(0, keys[0]) is None  # the last op of a key wins
            assert await c.dbsize(0) == 199
            seen: list[bytes] = []
            cursor = 0
            while True:
                cursor, page = await b.scan(0, cursor, 7)
                seen.extend(page)
                if cursor == 0:
                    break
            assert sorted(seen) == sorted(keys[1:])  # every key exactly once
            assert await c.random_key(0) in set(keys[1:])
            assert await a.random_key(1) is None
            many = [keys[1], b"missing", keys[1], keys[2]]
            found = await a.get_many(0, many)
            assert [e and e.value for e in found] == [b"v" + keys[1], None, b"v" + keys[1],
                                                      b"v" + keys[2]]
            # A key named twice is deleted once, as Redis's DEL counts it.
            assert await b.delete_many(0, [keys[1], keys[1], b"missing", keys[2]]) == 2
            assert await c.get_many(0, [keys[1], keys[2]]) == [None, None]
            await c.flushdb(0)
            assert await a.dbsize(0) == 0
            assert await b.scan(0, 0, 1000) == (0, [])
            assert await a.random_key(0) is None
        finally:
            await close_all(nodes)
    run(body)


def test_scan_merges_replicas_by_clock(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = await open_cluster(tmp_path)
        try:
            a, b, _ = nodes
            await a.put(0, b"k", b"v", level=Level.ALL)
            # The delete reaches one replica only (ONE): the others still hold the value,
            # but its tombstone supersedes it, so a merged SCAN does not return the key.
            await b.delete(0, b"k", Level.ONE)
            await asyncio.sleep(0.2)  # let the background replicas finish or not
            assert await a.scan(0, 0, 100) == (0, [])
        finally:
            await close_all(nodes)
    run(body)


def test_noquorum_when_peers_are_gone(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = await open_cluster(tmp_path)
        a, b, c = nodes
        try:
            await a.put(0, b"k", b"v", level=Level.ALL)
            await c.close()
            await wait_for(lambda: c.node_id not in a.up_nodes())
            await a.put(0, b"k2", b"v2")  # QUORUM: 2 of 3 still answer
            assert (await b.get(0, b"k2")).value == b"v2"  # type: ignore[union-attr]
            with pytest.raises(NoQuorumError, match=r"NOQUORUM [12] of 3 required"):
                await a.put(0, b"k3", b"v3", level=Level.ALL)
            await b.close()
            with pytest.raises(NoQuorumError, match="NOQUORUM 1 of 2 required"):
                await a.get(0, b"k")
            with pytest.raises(NoQuorumError, match="NOQUORUM"):
                await a.scan(0, 0, 10)
            await wait_for(lambda: b.node_id not in a.up_nodes())
            with pytest.raises(NoQuorumError, match="1 of 3 nodes are up"):
                await a.flushall()
            # Refused before anything was flushed.
            assert (await a.get(0, b"k", Level.ONE)).value == b"v"  # type: ignore[union-attr]
        finally:
            await close_all(nodes)
    run(body)


def test_cluster_down_until_every_configured_peer_answered(tmp_path: Path) -> None:
    async def body() -> None:
        port, silent = free_port(), free_port()
        clock = LoopClock(asyncio.get_running_loop())
        node = await ClusterNode.open(str(tmp_path / "n"), NodeOptions(fsync="no"),
                                      options(port, [silent]), clock)
        node.start()
        try:
            await asyncio.sleep(0.2)
            assert not node.ready
            for call in (node.get(0, b"k"), node.put(0, b"k", b"v"), node.scan(0, 0, 10),
                         node.dbsize(0), node.flushall()):
                with pytest.raises(ClusterDown, match=f"CLUSTERDOWN .*{HOST}:{silent}"):
                    await call
        finally:
            await node.close()
    run(body)


def test_restart_remembers_members_and_tokens(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = await open_cluster(tmp_path)
        a = nodes[0]
        before = {m.node_id: m.tokens for m in a.membership.members.values()}
        await a.put(0, b"k", b"v", level=Level.ALL)
        await close_all(nodes)
        # Restart one node alone: its peers are down, but it knows the ring from its file.
        stored = members_file.read(OSFileSystem(), str(tmp_path / "n0")).states
        assert {m.node_id: m.tokens for m in stored} == before
        clock = LoopClock(asyncio.get_running_loop())
        me = a.membership.me
        peers = [m.peer_address[1] for m in stored  # type: ignore[index]
                 if m.node_id != me.node_id]
        again = await ClusterNode.open(str(tmp_path / "n0"), NodeOptions(fsync="no"),
                                       options(me.peer_port, peers), clock)
        try:
            assert again.ready and again.node_id == a.node_id
            assert again.membership.me.tokens == me.tokens
            assert again.membership.me.generation >= me.generation
            with pytest.raises(NoQuorumError):
                await again.get(0, b"k")  # ready, but the others are down
            assert (await again.get(0, b"k", Level.ONE)).value == b"v"  # type: ignore[union-attr]
        finally:
            await again.close()
    run(body)


def test_peer_refuses_malformed_gossip(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = await open_cluster(tmp_path)
        try:
            a, b, _ = nodes
            before = dict(b.gossiper.states)
            for body_ in ([], [[["x", -1, 0]]], [[["n", 1, 1]] * 2], [[[1, 2, 3]]]):
                with pytest.raises(RemoteError, match="bad gossip message"):
                    await a.transport.request(b.node_id, GossipSyn(body_), 1.0)
            with pytest.raises(RemoteError, match="bad gossip message"):
                await a.transport.request(b.node_id, GossipAck2([[["x"]]]), 1.0)
            assert b.gossip.stats["gossip_bad_messages"] == 5
            assert set(b.gossiper.states) == set(before)  # nothing was applied
        finally:
            await close_all(nodes)
    run(body)


def test_wrong_secret_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        good, bad = free_port(), free_port()
        clock = LoopClock(asyncio.get_running_loop())
        first = await ClusterNode.open(str(tmp_path / "good"), NodeOptions(fsync="no"),
                                       options(good, [bad]), clock)
        wrong = options(bad, [good])
        wrong = ClusterOptions(**{**{f: getattr(wrong, f) for f in wrong.__dataclass_fields__},
                                  "secret": b"another secret"})
        second = await ClusterNode.open(str(tmp_path / "bad"), NodeOptions(fsync="no"), wrong,
                                        clock)
        first.start()
        second.start()
        try:
            await asyncio.sleep(0.5)
            assert not first.ready and not second.ready
            assert second.node_id not in first.membership.members
        finally:
            await first.close()
            await second.close()
    run(body)


# Hinted handoff (issue 6) -------------------------------------------------------------------


class Cluster:
    """ClusterNodes that can be stopped and reopened on the same directory and port."""

    def __init__(self, tmp_path: Path, size: int, **extra: object) -> None:
        self.tmp_path = tmp_path
        self.ports = [free_port() for _ in range(size)]
        self.extra = extra
        self.nodes: list[ClusterNode | None] = [None] * size

    async def open(self, i: int) -> ClusterNode:
        port = self.ports[i]
        node = await ClusterNode.open(
            str(self.tmp_path / f"n{i}"), NodeOptions(fsync="no", tombstone_grace_ms=60_000),
            options(port, [p for p in self.ports if p != port], **self.extra),
            LoopClock(asyncio.get_running_loop()))
        node.start()
        self.nodes[i] = node
        return node

    async def open_all(self) -> list[ClusterNode]:
        nodes = [await self.open(i) for i in range(len(self.ports))]
        await wait_for(lambda: settled(nodes))
        return nodes

    async def stop(self, i: int) -> None:
        node = self.nodes[i]
        assert node is not None
        self.nodes[i] = None
        await node.close()

    async def close(self) -> None:
        for i, node in enumerate(self.nodes):
            if node is not None:
                await self.stop(i)


def stored(node: ClusterNode, key: bytes) -> bytes | None:
    """The value the node's own replica holds for key (no coordination)."""
    siblings = node.node.replica.read(node_key(0, key))
    return siblings[0][4] if siblings else None


def test_hints_kept_by_the_coordinator_are_handed_off(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 3)
        a, _b, c = await cluster.open_all()
        try:
            await cluster.stop(2)
            await wait_for(lambda: c.node_id not in a.up_nodes())
            keys = [b"h%d" % i for i in range(40)]
            await a.write_many(0, [(k, b"v" + k, 0) for k in keys])  # W=2 of 3: OK
            # No node outside the preference list exists: the coordinator keeps the hints.
            assert a.hints.pending(c.node_id).count == len(keys)
            # The hints survive a restart of the node that holds them.
            await cluster.stop(0)
            a = await cluster.open(0)
            assert a.hints.pending(c.node_id).count == len(keys)
            c = await cluster.open(2)
            await wait_for(lambda: a.hints.pending(c.node_id).count == 0)
            assert all(stored(c, k) == b"v" + k for k in keys)
            assert a.stats()["hints_delivered"] == len(keys)
        finally:
            await cluster.close()
    run(body)


def test_stand_in_keeps_and_serves_hints_then_hands_them_off(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 4)
        nodes = await cluster.open_all()
        try:
            down = nodes[3]
            await cluster.stop(3)
            coordinator = nodes[0]
            await wait_for(lambda: down.node_id not in coordinator.up_nodes())
            placement = coordinator.coordinator.placement
            from cluster.keys import token
            key = next(b"k%d" % i for i in range(1000)
                       if down.node_id in placement.primaries(token(b"k%d" % i)))
            await coordinator.put(0, key, b"v", level=Level.ALL)  # a stand-in completes ALL
            holders = [n for n in nodes[:3] if n.hints.pending(down.node_id).count]
            assert len(holders) == 1
            stand_in = holders[0]
            assert stand_in.node_id not in placement.primaries(token(key))
            assert stored(stand_in, key) is None  # kept as a hint, not as its own data
            entry = await coordinator.get(0, key, Level.ALL)  # read from the stand-in too
            assert entry is not None and entry.value == b"v"
            down = await cluster.open(3)
            await wait_for(lambda: stand_in.hints.pending(down.node_id).count == 0)
            assert stored(down, key) == b"v"
        finally:
            await cluster.close()
    run(body)


def test_strict_quorum_fails_where_sloppy_succeeds(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 4, sloppy_quorum=False)
        nodes = await cluster.open_all()
        try:
            down = nodes[3]
            await cluster.stop(3)
            await wait_for(lambda: down.node_id not in nodes[0].up_nodes())
            from cluster.keys import token
            placement = nodes[0].coordinator.placement
            key = next(b"k%d" % i for i in range(1000)
                       if down.node_id in placement.primaries(token(b"k%d" % i)))
            with pytest.raises(NoQuorumError, match=r"NOQUORUM \d of 3"):
                await nodes[0].put(0, key, b"v", level=Level.ALL)
            await nodes[0].put(0, key, b"v")  # QUORUM holds; the coordinator keeps a hint
            assert nodes[0].hints.pending(down.node_id).count == 1
        finally:
            await cluster.close()
    run(body)


def test_flush_drops_hints_and_takes_a_new_actor(tmp_path: Path) -> None:
    """A flushed value must not come back: not from a hint delivered later, and not by
    dominating a new write whose counter restarted (regression: SET after FLUSHALL lost to
    the flushed version)."""
    async def body() -> None:
        cluster = Cluster(tmp_path, 3)
        a, b, c = await cluster.open_all()
        try:
            for i in range(5):
                await a.put(0, b"k", b"old%d" % i)
            old = await a.get_siblings(0, b"k")
            a.hints.add(c.node_id, 0, b"k", old)  # as if c had missed the writes
            actors = {n.node_id: n.actor for n in (a, b, c)}
            await b.flushall()
            assert a.hints.targets() == []
            assert all(n.actor != actors[n.node_id] for n in (a, b, c))
            await a.put(0, b"k", b"fresh")
            # The old version, were it to arrive now, is concurrent, never dominating.
            for node in (a, b, c):
                node.service.merge(0, b"k", old)
            for node in (a, b, c):
                entry = await node.get(0, b"k", Level.ALL)
                assert entry is not None and entry.value == b"fresh"
        finally:
            await cluster.close()
    run(body)


def test_no_hints_beyond_the_window_and_none_when_it_is_zero(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 3, max_hint_window_ms=0)
        a, _b, _c = await cluster.open_all()
        try:
            await cluster.stop(2)
            await a.put(0, b"k", b"v")  # W=2: OK, but no hint kept for c
            assert a.hints.targets() == []
            assert a.stats()["hints_not_kept_window"] >= 1
        finally:
            await cluster.close()
    run(body)


def test_a_fresh_node_counts_its_peers_up(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 3)
        nodes = await cluster.open_all()
        try:
            for node in nodes:
                assert node.up_nodes() == {n.node_id for n in nodes}
                await node.put(0, b"k" + node.node_id.encode(), b"v")
                assert node.coordinator.stats["sloppy_requests"] == 0
                assert node.hints.targets() == []
        finally:
            await cluster.close()
    run(body)


# Anti-entropy (issue 6) ---------------------------------------------------------------------


def test_repair_brings_back_writes_a_replica_missed_without_hints(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 3, max_hint_window_ms=0, anti_entropy_interval_s=0.0)
        a, b, c = await cluster.open_all()
        try:
            await cluster.stop(2)
            keys = [b"ae%d" % i for i in range(300)]
            await a.write_many(0, [(k, b"v" + k, 0) for k in keys])  # W=2, no hints kept
            await a.delete(0, keys[0])
            assert a.hints.targets() == []
            c = await cluster.open(2)
            await wait_for(lambda: settled([a, b, c]))
            assert sum(stored(c, k) is not None for k in keys) == 0  # c missed them all
            queued = c.repair()
            assert queued == len(c.trees.ranges)
            await wait_for(lambda: c.repairer.running is None and not c.repairer.queue,
                           timeout_s=60)
            assert all(stored(c, k) == b"v" + k for k in keys[1:])
            tombstone = c.node.replica.read(node_key(0, keys[0]))
            assert tombstone and tombstone[0][4] is None  # the delete came too, as a tombstone
            info = c.repairer.info()
            assert info["ae_keys_pulled"] >= len(keys)
            assert info["repair_ranges_done"] == queued
            # A second pass over converged replicas repairs nothing.
            before = c.repairer.stats.keys_repaired
            c.repair()
            await wait_for(lambda: c.repairer.running is None and not c.repairer.queue,
                           timeout_s=60)
            assert c.repairer.stats.keys_repaired == before
        finally:
            await cluster.close()
    run(body)


def test_a_node_down_longer_than_the_grace_is_refused_until_rebuilt(tmp_path: Path) -> None:
    async def body() -> None:
        from cluster import alive
        from cluster.errors import ClusterError
        cluster = Cluster(tmp_path, 3, anti_entropy_interval_s=0.0)
        a, b, c = await cluster.open_all()
        try:
            await a.put(0, b"k", b"v", level=Level.ALL)
            await cluster.stop(2)
            # As if c had been down for longer than the grace (60 s in these tests).
            alive.write(OSFileSystem(), str(tmp_path / "n2"), c.clock.wall_ms() - 61_000)
            with pytest.raises(ClusterError, match="longer than gc-grace-seconds"):
                await cluster.open(2)
            # Rebuild: empty its engine directory; it keeps its id and tokens, takes a new
            # vector-clock actor, and gets its data back by repair.
            import shutil
            shutil.rmtree(tmp_path / "n2" / "engine")
            c2 = await cluster.open(2)
            assert c2.node_id == c.node_id and c2.actor != c.actor
            assert c2.membership.me.tokens == c.membership.me.tokens
            await wait_for(lambda: settled([a, b, c2]))
            assert stored(c2, b"k") is None
            c2.repair()
            await wait_for(lambda: c2.repairer.running is None and not c2.repairer.queue,
                           timeout_s=60)
            assert stored(c2, b"k") == b"v"
            # kv679: a write it coordinates now is never dominated by its pre-wipe versions.
            await c2.put(0, b"k", b"after", level=Level.ONE)
            entry = await a.get(0, b"k", Level.ALL)
            assert entry is not None and entry.value == b"after"
        finally:
            await cluster.close()
    run(body)


def test_write_read_local_supersedes_the_coordinators_replica(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 3, read_before_write=False, max_hint_window_ms=0)
        a, b, c = await cluster.open_all()
        try:
            await a.put(0, b"k", b"one", level=Level.ALL)
            await b.put(0, b"k", b"two")  # b's replica holds "one": superseded, no sibling
            siblings = await c.get_siblings(0, b"k", Level.ALL)
            assert [v[4] for v in siblings] == [b"two"]
            # A version b's replica never saw stays as a sibling; the newest wins a GET.
            await cluster.stop(1)
            await a.put(0, b"k", b"three", level=Level.TWO)
            b = await cluster.open(1)
            await wait_for(lambda: settled([a, b, c]))
            await b.put(0, b"k", b"four", level=Level.TWO)
            # Any two replicas together hold "three" (a and c) and "four" (b and one more).
            siblings = await b.get_siblings(0, b"k", Level.TWO)
            assert sorted(v[4] for v in siblings) == [b"four", b"three"]
            entry = await b.get(0, b"k", Level.TWO)
            assert entry is not None and entry.value == b"four"
        finally:
            await cluster.close()
    run(body)


def test_meet_makes_an_empty_node_join_the_cluster(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 3)
        a, b, c = await cluster.open_all()
        # Another node starts on its own (no peers: a cluster of one), then meets the others.
        port = free_port()
        x = await ClusterNode.open(
            str(tmp_path / "x"), NodeOptions(fsync="no", tombstone_grace_ms=60_000),
            options(port, []), LoopClock(asyncio.get_running_loop()))
        x.start()
        try:
            await wait_for(lambda: x.ready and settled([a, b, c]))
            keys = [b"m%d" % i for i in range(200)]
            await a.write_many(0, [(k, b"v" + k, 0) for k in keys])
            # A node alone that holds data may not meet a cluster (its keys would be hidden).
            await x.put(0, b"own", b"data")
            with pytest.raises(ClusterError, match="holds data"):
                x.meet(HOST, cluster.ports[0])
            await x.flushall()
            x.meet(HOST, cluster.ports[0])
            # Before the met node's view arrives x sees no other owner: it must wait for it,
            # not decide at once that it has nothing to stream (it became NORMAL and empty).
            x.lifecycle.step()
            assert x.gossiper.me.status is Status.JOINING and not x.membership.complete
            await wait_for(lambda: settled([a, b, c, x]), timeout_s=30)
            assert len(x.membership.ring().node_ids()) == 4
            # Every key is readable through x at ONE: x streamed what it owns before serving.
            for key in keys:
                entry = await x.get(0, key, Level.ONE)
                assert entry is not None and entry.value == b"v" + key
            assert 0 < sum(stored(x, k) is not None for k in keys) < len(keys)
        finally:
            await x.close()
            await cluster.close()
    run(body)


def test_read_options_reach_the_coordinator(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, 1, read_repair_every=4, read_speculate_ms=30)
        (node,) = await cluster.open_all()
        try:
            options = node.coordinator.options
            assert (options.read_repair_every, options.read_speculate_ms) == (4, 30)
        finally:
            await cluster.close()
    run(body)
