"""Pushing this node's token ranges to the nodes that gain them (decommission):
``RangePusher`` reads its own pages (``read_page``) and sends every entry to every
destination as a plain ``WRITE``; the theory of operation is stream_runner.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from cluster.clock import Clock
from cluster.messages import Message, Write, WriteAck
from cluster.replica import Replica
from cluster.stream_plan import PushTask
from cluster.stream_progress import KIND_PUSH
from cluster.stream_runner import (
    Runner,
    Segment,
    StreamOptions,
    future_outcome,
)
from cluster.stream_source import read_page
from cluster.transport import Transport
from engine.errors import StorageError

# Push: WRITEs one pusher may have in flight (page_keys x concurrency), kept well below the
# transport's per-link queue (TransportConfig.queue_max, 8192): past it the writes would
# fail with PeerOverloaded, and the same page resent would fail the same way for ever.
PUSH_WRITES_IN_FLIGHT_MAX = 4096


class RangePusher(Runner):
    """Sends this node's entries of ``tasks`` to their destinations, as plain WRITEs.

    Why WRITE and not a new bulk message: every node already serves WRITE (decoding the
    sibling set at the trust boundary, merging, acknowledging only after its commit log
    reached the OS: cluster_peer_handler.py Rule 2), so an acknowledged entry is durable at its
    destination and nothing new has to be added to the receiving side or the protocol; the
    transport pipelines the writes of a page over one connection (peer_connection.py Rule 6),
    which keeps the per-key cost to a small frame. A page moves on only when every
    destination acknowledged all of it; a destination that failed gets the same page again
    after ``retry_s`` (a write is a merge: repeats are harmless), the others do not.
    """

    kind = KIND_PUSH

    def __init__(self, tasks: Sequence[PushTask], transport: Transport, replica: Replica,
                 clock: Clock, options: StreamOptions) -> None:
        assert all(task.destinations for task in tasks), "a task without destinations"
        assert options.page_keys * options.concurrency <= PUSH_WRITES_IN_FLIGHT_MAX, options
        assert len({t.token_range for t in tasks}) == len(tasks), "a range listed twice"
        super().__init__([t.token_range for t in tasks], [t.dbs for t in tasks], clock, options)
        self.tasks = list(tasks)
        self.transport = transport
        self.replica = replica
        self.writes_failed = 0  # single WRITEs that failed (a page may fail many)

    def _peer_of(self, segment: Segment) -> str:
        return f" to {','.join(sorted(segment.pending))}"

    def _start(self, segment: Segment) -> None:
        if segment.page is None and not self._read(segment):
            return
        page = segment.page
        assert page is not None
        targets = sorted(segment.pending)
        self.limiter.charge(segment.page_bytes * len(targets))  # stream_runner.py invariant 2
        segment.failed = set()
        segment.outstanding = len(page) * len(targets)
        self._busy.add(segment)
        for target in targets:
            for key, raw in page:
                future = self.transport.request(target, Write(segment.db, key, raw),
                                                self.timeout_s)
                self._futures.add(future)
                future.add_done_callback(partial(self._on_ack, segment, target))

    def _read(self, segment: Segment) -> bool:
        """Read the segment's next page; False when there is nothing to send (the segment
        is done or went on with the next cursor)."""
        try:
            page, cursor = read_page(self.replica, segment.db, segment.start, segment.end,
                                     segment.cursor, self.page_keys, self.page_bytes)
        except StorageError as exc:
            self._error(f"decommission: reading db {segment.db} failed: {exc}")
            self._retry(segment)
            return False
        if not page:
            segment.cursor = cursor
            if cursor is None:
                self._segment_done(segment)
            else:
                self._requeue(segment)  # only damaged values were examined: read on
            return False
        segment.page = page
        segment.next_cursor = cursor
        segment.page_bytes = sum(len(key) + len(raw) for key, raw in page)
        segment.pending = set(self.tasks[segment.task].destinations)
        return True

    def _on_ack(self, segment: Segment, target: str, future: asyncio.Future[Message]) -> None:
        self._futures.discard(future)
        if self.stopped:
            return  # stream_runner.py invariant 3
        outcome = future_outcome(future)
        if not isinstance(outcome, WriteAck):
            self.writes_failed += 1
            if target not in segment.failed:
                segment.failed.add(target)
                self._error(f"decommission: db {segment.db} span {segment.start}.."
                            f"{segment.end} to {target}: {type(outcome).__name__}: {outcome}")
        segment.outstanding -= 1
        if segment.outstanding:
            return
        self._busy.discard(segment)
        page = segment.page
        assert page is not None
        if segment.failed:
            segment.pending = segment.failed
            self._retry(segment)
        else:
            self.stats.pages += 1
            self.stats.keys += len(page)
            self.stats.bytes += segment.page_bytes
            segment.page = None
            segment.cursor = segment.next_cursor
            if segment.cursor is None:
                self._segment_done(segment)
            else:
                self._requeue(segment)
        self._pump()
