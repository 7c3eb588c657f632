# mypy: disable-error-code="misc"
# (misc: mypy wants a self-type to be a supertype of the class; a mixin used only by
# ClusterNode takes ``self: ClusterNode`` so that its methods are checked against it.)
"""Operations of a ``ClusterNode`` over every node: SCAN and RANDOMKEY (merged scans),
DBSIZE (counts), FLUSHDB and FLUSHALL.

Rules (numbered across ClusterNode's modules; cluster_node.py says where each lives):
4. Multi-key operations (write_many, flush, scan, dbsize) are one request per key or per node,
   run in parallel; they are not atomic across keys (docs/commands.md says where this
   differs from Redis). SCAN asks every node from the cursor's token on and merges the
   answers by vector clock, so a key is returned if any reachable replica holds a live
   version that no other reachable replica's version supersedes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from cluster import keys as keyspace
from cluster.consistency import NoQuorum, NoQuorumError, quorum
from cluster.errors import ClusterError
from cluster.messages import Count, CountReply, Flush, FlushAck, Message, Scan, ScanReply
from cluster.sibling_codec import decode
from cluster.version import EXPIRE_AT_MS, VALUE, Siblings, merge, winner

if TYPE_CHECKING:
    from cluster.cluster_node import ClusterNode

log = logging.getLogger(__name__)

_END = keyspace.TOKEN_MAX + 1  # "the scan reached the end of the ring", as a sort key


class FanOutOperations:
    """What asks every node (Rule 4).

    A mixin of ``ClusterNode`` (its methods take ``self: ClusterNode``): it holds no state
    of its own.
    """

    async def scan(self: ClusterNode, db: int, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """Live keys from ring token ``cursor`` on, from every node (Rule 4); (next, keys)."""
        self._check_ready()
        entries, stop = await self._scan_all(db, cursor, count)
        now_ms = self.clock.wall_ms()
        keys = [key for key, siblings in entries if _visible(siblings, now_ms)]
        return (0 if stop >= keyspace.TOKEN_MAX else stop + 1), keys

    async def random_key(self: ClusterNode, db: int) -> bytes | None:
        """A live key found from a random token on (wrapping around once); None if none."""
        self._check_ready()
        start = self._rng.getrandbits(64)
        cursor = start
        wrapped = False
        while True:
            entries, stop = await self._scan_all(db, cursor, 16)
            now_ms = self.clock.wall_ms()
            for key, siblings in entries:
                if wrapped and keyspace.token(key) >= start:
                    return None
                if _visible(siblings, now_ms):
                    return key
            if stop >= keyspace.TOKEN_MAX:
                if wrapped or start == 0:
                    return None
                wrapped, cursor = True, 0
            else:
                cursor = stop + 1
                if wrapped and cursor >= start:
                    return None

    async def dbsize(self: ClusterNode, db: int) -> int:
        """Keys of ``db`` in the cluster: the nodes' stored counts over the replication
        factor (exact while every replica holds every key it should; docs/commands.md)."""
        self._check_ready()
        replies = await self._all_nodes(Count(db), CountReply(self.node.replica.keys[db]))
        counts = [r.keys for r in replies.values() if isinstance(r, CountReply)]
        # As SCAN: an estimate from fewer nodes than a quorum write reaches would be wrong.
        if len(replies) - len(counts) > self._scan_tolerance():
            raise NoQuorum(len(counts), len(replies) - self._scan_tolerance()).error()
        nodes = len(self.membership.members)
        copies = min(self.cluster_options.replication.total, nodes)
        return round(sum(counts) * nodes / max(1, len(counts)) / copies)

    async def flushdb(self: ClusterNode, db: int) -> None:
        await self._flush(db)

    async def flushall(self: ClusterNode) -> None:
        await self._flush(None)

    async def _all_nodes(self: ClusterNode, request: Count | Flush | Scan, local: object
                         ) -> dict[str, Message | BaseException | object]:
        """Send ``request`` to every other member (``local`` is this node's answer)."""
        timeout_s = self.cluster_options.request_timeout_ms / 1000
        others = [m.node_id for m in self.membership.others()]
        futures = [self.transport.request(node_id, request, timeout_s) for node_id in others]
        results = await asyncio.gather(*futures, return_exceptions=True)
        out: dict[str, Message | BaseException | object] = {self.node.node_id: local}
        out.update(zip(others, results, strict=True))
        return out

    def _scan_tolerance(self: ClusterNode) -> int:
        """How many nodes a SCAN may miss and still see every key written with a quorum."""
        total = min(self.cluster_options.replication.total, len(self.membership.members))
        return total - quorum(total)

    async def _scan_all(self: ClusterNode, db: int, cursor: int, count: int
                        ) -> tuple[list[tuple[bytes, Siblings]], int]:
        """Merged entries from every node from ``cursor`` on, and the last token all of them
        covered (``_END`` - 1 or more: the end of the ring)."""
        local_entries, local_stop = self.node.local_scan(db, cursor, count)
        replies = await self._all_nodes(Scan(db, cursor, count), (local_entries, local_stop))
        answered: list[tuple[list[tuple[bytes, Siblings]], int | None]] = []
        failed = 0
        for node_id, reply in replies.items():
            if node_id == self.node.node_id:
                answered.append((local_entries, local_stop))
            elif isinstance(reply, ScanReply):
                try:
                    answered.append(([(k, decode(raw)) for k, raw in reply.entries], reply.stop))
                except ClusterError as exc:
                    log.warning("peer %s sent a damaged scan entry: %s", node_id, exc)
                    failed += 1
            else:
                failed += 1
        if failed > self._scan_tolerance():
            raise NoQuorum(len(answered), len(replies) - self._scan_tolerance()).error()
        stop = min(_END if s is None else s for _, s in answered)
        merged: dict[bytes, Siblings] = {}
        for entries, _ in answered:
            for key, siblings in entries:
                if stop != _END and keyspace.token(key) > stop:
                    continue
                held = merged.get(key)
                merged[key] = siblings if held is None else merge(held, siblings)
        ordered = sorted(merged.items(), key=lambda item: (keyspace.token(item[0]), item[0]))
        return ordered, (keyspace.TOKEN_MAX if stop == _END else stop)

    async def _flush(self: ClusterNode, db: int | None) -> None:
        """Flush on every node. Refused before anything is flushed while a node is known to
        be down: a flush that reaches some nodes only is what the client would least expect."""
        self._check_ready()
        up, members = len(self.up_nodes()), len(self.membership.members)
        if up < members:
            raise NoQuorumError(f"NOQUORUM {up} of {members} nodes are up; a flush needs "
                                "every node")
        self._flush_local(db)
        replies = await self._all_nodes(Flush(db), FlushAck())
        failed = [node_id for node_id, r in replies.items() if not isinstance(r, FlushAck)]
        if failed:
            raise NoQuorumError(
                f"NOQUORUM {len(replies) - len(failed)} of {len(replies)} nodes flushed "
                f"(not reached: {', '.join(sorted(failed))})")

    def _flush_local(self: ClusterNode, db: int | None) -> None:
        node = self.node
        for one in range(node.options.databases) if db is None else (db,):
            node.replica.flush(one)
            node.notify_flushed(one)
        self.hints.flush(db)
        # The flushed versions held this actor's counters; copies of them may survive (a
        # write in flight, a replica that missed the flush): a new actor keeps them from
        # dominating what is written next.
        self.coordinator.actor = node.rotate_actor("flush")


def _visible(siblings: Siblings, now_ms: int) -> bool:
    if not siblings:
        return False
    top = winner(siblings)
    return top[VALUE] is not None and not 0 < top[EXPIRE_AT_MS] <= now_ms
