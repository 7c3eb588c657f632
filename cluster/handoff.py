"""Hinted handoff: delivers the hints a node holds to their owners once they are reachable.

Theory of operation. ``tick()`` runs periodically (``ClusterNode`` calls it every member
exchange; the simulator from virtual-time events). For every target with hints pending that
``reachable(target)`` says is reachable, and with no earlier batch for it still in flight,
it takes up to ``per_tick`` hints from the ``HintStore`` (``rate * interval_s``: the
``hinted-handoff-throttle`` over the tick interval), resuming after the last key of the
previous batch so a target's hints are walked round-robin, and sends each one as a plain
``Write`` (no ``hint_for``: the owner merges it into its own data). Each reply arrives through
the future ``Transport.request`` returned, by ``add_done_callback``: no coroutine, no
``asyncio.gather``, so the same code runs over TCP and in the simulator's virtual time. When
every reply of the batch is in, each acknowledged hint is removed unless a newer hint was
merged into it meanwhile (hints.py invariant 3), ``commit()`` makes the removals durable,
and the target is free for the next batch.

Rules:
1. At most one batch per target is in flight, and a batch is at most ``per_tick`` hints:
   the owner, just back, sees a bounded rate of handoff writes.
2. A hint is removed only after its owner acknowledged it (``WriteAck``); a timeout, an
   error reply or a closed transport leaves it for a later tick. Delivering a hint twice is
   harmless: a write is a merge (replica_service.py invariant 1).
3. After ``close()`` a batch that completes touches nothing (the storage may be closed); its
   hints stay and are delivered by the next run.
4. The network is reached only through ``Transport`` and time only through whoever calls
   ``tick()`` (the request timeouts are the transport's); ``reachable`` and ``commit`` are
   injected, so the node decides what reachable means (a connected link, a failure
   detector) and how a commit is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from cluster.hints import Hint, HintStore, record_key
from cluster.messages import Message, Write, WriteAck
from cluster.sibling_codec import encode
from cluster.transport import Transport


@dataclass(slots=True)
class HandoffStats:
    batches: int = 0
    sent: int = 0  # hint deliveries sent (a hint sent again after a failure counts again)
    acked: int = 0
    failed: int = 0  # deliveries that timed out or were refused: the hint stays
    removed: int = 0  # acked hints removed (an acked hint merged into meanwhile stays)
    commit_errors: int = 0


class _Batch:
    """One batch in flight to one target."""

    __slots__ = ("acked", "futures", "hints", "waiting")

    def __init__(self, hints: list[Hint]) -> None:
        self.hints = hints
        self.acked = [False] * len(hints)
        self.waiting = len(hints)
        self.futures: list[asyncio.Future[Message]] = []


class Handoff:
    """See the module docstring."""

    def __init__(self, hints: HintStore, transport: Transport, *, per_tick: int,
                 timeout_s: float, reachable: Callable[[str], bool],
                 commit: Callable[[], None],
                 report: Callable[[str], None] | None = None,
                 delivered: Callable[[str, int, int], None] | None = None) -> None:
        """``report`` hears of failures; ``delivered(target, removed, batch size)`` of each
        batch that removed hints."""
        assert per_tick >= 1, per_tick
        assert timeout_s > 0, timeout_s
        self.hints = hints
        self.transport = transport
        self.per_tick = per_tick
        self.timeout_s = timeout_s
        self.reachable = reachable
        self.commit = commit
        self.report = report or (lambda message: None)
        self.delivered = delivered
        self.stats = HandoffStats()
        self.cursor: dict[str, bytes] = {}  # target -> engine key of its last hint sent
        self.batches: dict[str, _Batch] = {}  # target -> its batch in flight (Rule 1)
        self.closed = False

    @staticmethod
    def per_tick_of(rate: int, interval_s: float) -> int:
        """Hints per batch for ``rate`` hints a second per target, one batch per interval."""
        return max(1, int(rate * interval_s))

    @property
    def busy(self) -> bool:
        """A batch is in flight."""
        return bool(self.batches)

    def in_flight(self) -> list[asyncio.Future[Message]]:
        """The delivery requests not answered yet (ClusterNode.close waits for them)."""
        return [f for batch in self.batches.values() for f in batch.futures if not f.done()]

    def tick(self) -> int:
        """Start a batch for every reachable target that has hints and none in flight;
        returns how many hints were sent."""
        if self.closed:
            return 0
        sent = 0
        for target in self.hints.targets():
            if target in self.batches or not self.reachable(target):
                continue
            batch = self.hints.batch(target, self.per_tick, self.cursor.get(target, b""))
            if not batch:  # the walk reached the end of the target's hints: start over
                self.cursor.pop(target, None)
                batch = self.hints.batch(target, self.per_tick)
            if not batch:  # every hint left was expired or damaged (dropped by batch())
                continue
            last = batch[-1]
            self.cursor[target] = record_key(target, last.db, last.key)
            sent += self._send(target, batch)
        return sent

    def close(self) -> None:
        """Rule 3: batches completing from now on leave the store alone."""
        self.closed = True

    def _send(self, target: str, hints: list[Hint]) -> int:
        batch = _Batch(hints)
        self.batches[target] = batch
        self.stats.batches += 1
        self.stats.sent += len(hints)
        for i, hint in enumerate(hints):
            future = self.transport.request(
                target, Write(hint.db, hint.key, encode(hint.siblings)), self.timeout_s)
            batch.futures.append(future)
            future.add_done_callback(partial(self._on_reply, target, batch, i))
        return len(hints)

    def _on_reply(self, target: str, batch: _Batch, i: int,
                  future: asyncio.Future[Message]) -> None:
        ok = (not future.cancelled() and future.exception() is None
              and isinstance(future.result(), WriteAck))
        batch.acked[i] = ok
        if ok:
            self.stats.acked += 1
        else:
            self.stats.failed += 1
        batch.waiting -= 1
        if batch.waiting == 0:
            self._finish(target, batch)

    def _finish(self, target: str, batch: _Batch) -> None:
        if self.batches.get(target) is batch:
            del self.batches[target]
        if self.closed:
            return
        removed = 0
        for hint, acked in zip(batch.hints, batch.acked, strict=True):
            if acked and self.hints.remove_if_unchanged(hint):
                removed += 1
        self.stats.removed += removed
        if not removed:
            return
        try:
            self.commit()
        except Exception as exc:  # a disk error: the removals may not last; redelivery is
            self.stats.commit_errors += 1  # a harmless merge (Rule 2)
            self.report(f"hint handoff to node {target}: commit failed: {exc!r}")
            return
        if self.delivered is not None:
            self.delivered(target, removed, len(batch.hints))
