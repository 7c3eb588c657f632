"""Anti-entropy scheduling: which ranges to repair, against whom, one session at a time.

Theory of operation (issue 6). ``Repairer`` keeps a queue of the token ranges this node
replicates. A full pass is queued every ``interval_s`` (``anti-entropy-interval``; 0 = only
on demand) and on ``CLUSTER REPAIR``. Ranges are repaired one at a time, each by one
``anti_entropy.RepairSession`` against another replica of the range that is up (round robin
over the range's other primaries, so every pair meets in turn): the session's requests go
to that peer, its pushes are sent as plain WRITEs (merged there), and what it fetched is
merged here. A range whose trees are still being built on either side goes back to the end
of the queue (at most ``NOT_READY_RETRIES`` times per pass). Trees are built lazily by the
serving side and advanced by ``build_some``, which the owner calls from its timer with a
time budget, so building never holds the loop for long.

Invariants:
1. At most one session runs at a time, and each waits for a request's reply before sending
   the next: anti-entropy's network and disk use stay bounded whatever the divergence.
2. Repair only merges (anti_entropy.py invariant 1); the local merges are committed before
   the session counts as done.
3. Progress (ranges queued and done, keys compared and repaired, bytes) is in ``info()``
   for INFO and logged at the end of every pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from cluster.anti_entropy import AntiEntropyServer, Outcome, RepairSession, RepairStats
from cluster.anti_entropy_messages import AntiEntropyError
from cluster.messages import Message, Write
from cluster.ring import TokenRange

if TYPE_CHECKING:
    from cluster.peer_transport import PeerTransport

log = logging.getLogger(__name__)

NOT_READY_RETRIES = 20  # a range waiting for trees to be built is retried this often a pass
NOT_READY_WAIT_S = 0.2  # pause before retrying a range whose trees were not ready
PUSHES_IN_FLIGHT = 64  # WRITEs of a session's pushes on the wire at once


class Repairer:
    def __init__(self, server: AntiEntropyServer, transport: PeerTransport, node_id: str,
                 ranges: Callable[[], list[TokenRange]],
                 replicas: Callable[[TokenRange], tuple[str, ...]],
                 up: Callable[[], Collection[str]], commit: Callable[[], None],
                 timeout_s: float) -> None:
        self.server = server
        self.transport = transport
        self.node_id = node_id
        self.ranges = ranges
        self.replicas = replicas
        self.up = up
        self.commit = commit
        self.timeout_s = timeout_s
        self.stats = RepairStats()
        self.queue: deque[tuple[TokenRange, int]] = deque()  # (range, not-ready retries)
        self.turn: dict[TokenRange, int] = {}  # round robin over a range's peers
        self.pass_total = 0
        self.pass_done = 0
        self.passes = 0
        self.running: asyncio.Task[None] | None = None
        self.stopped = False

    # Requests ---------------------------------------------------------------------------

    def request(self, only: Collection[TokenRange] | None = None) -> int:
        """Queue ranges for repair (all this node replicates, or those of ``only``) and
        start working if idle; returns how many were queued."""
        queued = {rng for rng, _ in self.queue}
        mine = self.ranges()
        chosen = [r for r in mine if (only is None or r in only) and r not in queued]
        self.queue.extend((rng, 0) for rng in chosen)
        for rng in chosen:  # start building our side now, not when its turn comes
            self.server.trees.require(rng)
        if chosen:
            if not self.running:
                self.pass_total, self.pass_done = 0, 0
            self.pass_total += len(chosen)
        if chosen and self.running is None and not self.stopped:
            self.running = asyncio.ensure_future(self._run())
        return len(chosen)

    def range_of(self, token: int) -> TokenRange | None:
        for rng in self.ranges():
            if rng.contains(token):
                return rng
        return None

    def stop(self) -> None:
        self.stopped = True
        self.queue.clear()
        if self.running is not None:
            self.running.cancel()

    def info(self) -> dict[str, int | str]:
        out: dict[str, int | str] = {
            "repair_state": "running" if self.running is not None else "idle",
            "repair_passes": self.passes, "repair_ranges_total": self.pass_total,
            "repair_ranges_done": self.pass_done, "repair_ranges_queued": len(self.queue)}
        out.update(self.stats.as_info())
        out.update(self.server.stats)
        return out

    # Work -------------------------------------------------------------------------------

    async def _run(self) -> None:
        waiting = 0  # ranges in a row that were not ready: all of them, and we pause
        try:
            while self.queue and not self.stopped:
                rng, retries = self.queue.popleft()
                outcome = await self._repair(rng)
                if outcome in (Outcome.LOCAL_NOT_READY, Outcome.PEER_NOT_READY,
                               Outcome.PARTIAL) and retries < NOT_READY_RETRIES:
                    self.queue.append((rng, retries + 1))
                    waiting += 1
                    if waiting >= len(self.queue):  # every range left waits for a build
                        waiting = 0
                        await asyncio.sleep(NOT_READY_WAIT_S)
                    continue
                waiting = 0
                self.pass_done += 1
            if not self.stopped:
                self.passes += 1
                stats = self.stats
                log.warning("anti-entropy pass done: %d ranges, %d keys compared, %d repaired "
                            "(%d pulled, %d pushed), %d failed", self.pass_done,
                            stats.keys_compared, stats.keys_repaired, stats.keys_pulled,
                            stats.keys_pushed, stats.ranges_failed)
        finally:
            self.running = None

    def _peer_for(self, rng: TokenRange) -> str | None:
        up = self.up()
        peers = [n for n in self.replicas(rng) if n != self.node_id and n in up]
        if not peers:
            return None
        turn = self.turn.get(rng, 0)
        self.turn[rng] = turn + 1
        return peers[turn % len(peers)]

    async def _repair(self, rng: TokenRange) -> Outcome:
        """One session of ``rng`` against one up peer (invariant 1)."""
        peer = self._peer_for(rng)
        if peer is None:
            return Outcome.DONE  # no other replica is up: nothing to compare with now
        session = RepairSession(self.server, rng)
        try:
            while (request := session.next_request()) is not None:
                try:
                    reply = await self.transport.request(peer, request, self.timeout_s)
                except Exception as exc:  # peer down, timeout, ERROR reply
                    log.info("repair of %s with %s stopped: %r", rng, peer, exc)
                    session.abort()
                    break
                session.feed(reply)  # type: ignore[arg-type]
                await self._push(peer, session)
            await self._push(peer, session)
        except AntiEntropyError as exc:
            log.warning("repair of %s with %s: bad reply: %s", rng, peer, exc)
        finally:
            self.commit()  # invariant 2: what the session merged here is durable
            self.stats.add(session.stats)
        return session.outcome

    async def _push(self, peer: str, session: RepairSession) -> None:
        pushes = session.take_pushes()
        for start in range(0, len(pushes), PUSHES_IN_FLIGHT):
            futures: list[asyncio.Future[Message]] = [
                self.transport.request(peer, Write(p.db, p.key, p.siblings), self.timeout_s)
                for p in pushes[start:start + PUSHES_IN_FLIGHT]]
            await asyncio.gather(*futures, return_exceptions=True)
