"""Pulling token ranges into the local replica (join): ``RangeStreamer`` asks the ranges'
former replicas for them page by page with ``STREAM`` and merges what comes back; the
theory of operation is stream_runner.py's.

Invariants:
1. A page is all or nothing at the receiver: every entry of a ``STREAM_REPLY`` is checked
   (strictly ascending after the cursor, token inside the requested span, sibling bytes that
   decode) and so is its ``next`` cursor, before any entry is merged. A page that fails is
   refused and counted (``pages_refused``, ``entries_refused``) and asked of another source.
2. Merging is idempotent (replica_service.py invariant 1): a page received twice, a range
   restarted from its start, a write reaching the destination during the stream, all end
   as the merge of everything received; nothing received is overwritten.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from functools import partial

from cluster import keys as keyspace
from cluster.clock import Clock
from cluster.errors import CorruptionError
from cluster.messages import Message, Stream, StreamReply
from cluster.replica_service import ReplicaService
from cluster.sibling_codec import decode
from cluster.stream_plan import PullTask
from cluster.stream_progress import KIND_PULL
from cluster.stream_runner import (
    Runner,
    Segment,
    StreamOptions,
    future_outcome,
)
from cluster.stream_source import cursor_in_span
from cluster.transport import Transport
from cluster.version import Siblings


class _BadPage(Exception):
    pass


class RangeStreamer(Runner):
    """Pulls ``tasks`` into the local replica; see stream_runner.py's docstring.

    ``commit()`` must make what ``service.merge`` wrote at least as durable as the progress
    record the caller saves from ``on_range_done`` (``Node.commit``: the commit log reached
    the OS; with ``appendfsync always`` it is fsynced). ``done``: ranges finished by an
    earlier run (``load_progress(...).done``), skipped.
    """

    kind = KIND_PULL

    def __init__(self, tasks: Sequence[PullTask], transport: Transport,
                 service: ReplicaService, clock: Clock, options: StreamOptions, *,
                 commit: Callable[[], None]) -> None:
        assert all(task.sources for task in tasks), "a task without sources"
        assert len({t.token_range for t in tasks}) == len(tasks), "a range listed twice"
        super().__init__([t.token_range for t in tasks], [t.dbs for t in tasks], clock, options)
        self.tasks = list(tasks)
        self.transport = transport
        self.service = service
        self.commit = commit
        self._preferred = [0] * len(tasks)  # per task: the source that answered last
        self.pages_by_source: collections.Counter[str] = collections.Counter()

    def _first_source(self, task: int) -> int:
        return self._preferred[task]

    def _peer_of(self, segment: Segment) -> str:
        return f" from {self.tasks[segment.task].sources[segment.source]}"

    def _start(self, segment: Segment) -> None:
        source = self.tasks[segment.task].sources[segment.source]
        request = Stream(segment.db, segment.start, segment.end, segment.cursor,
                         self.page_keys, self.page_bytes)
        # stream_runner.py invariant 2: paid before it is asked for
        self.limiter.charge(self.page_bytes)
        self._busy.add(segment)
        future = self.transport.request(source, request, self.timeout_s)
        self._futures.add(future)
        future.add_done_callback(partial(self._on_reply, segment, source))

    def _on_reply(self, segment: Segment, source: str,
                  future: asyncio.Future[Message]) -> None:
        self._futures.discard(future)
        if self.stopped:
            return  # stream_runner.py invariant 3
        self._busy.discard(segment)
        outcome = future_outcome(future)
        if not isinstance(outcome, StreamReply):
            self.limiter.refund(self.page_bytes)
            self._source_failed(segment, source, f"{type(outcome).__name__}: {outcome}")
        else:
            self._page(segment, source, outcome)
        self._pump()

    def _page(self, segment: Segment, source: str, reply: StreamReply) -> None:
        try:
            entries, size = self._check_page(segment, reply)
        except _BadPage as exc:
            self.limiter.refund(self.page_bytes)
            self.stats.pages_refused += 1
            self.stats.entries_refused += len(reply.entries)
            self._source_failed(segment, source, f"page refused: {exc}")
            return
        self.limiter.refund(self.page_bytes - size)
        try:
            for key, siblings in entries:
                try:
                    self.service.merge(segment.db, key, siblings)
                except CorruptionError as exc:  # our stored value is damaged: the merge
                    self._error(f"stream: key {key!r} of db {segment.db} not merged: {exc}")
            self.commit()
        except Exception as exc:  # the engine cannot write: ask for the page again later
            self._error(f"stream: merging a page of db {segment.db} failed: {exc!r}")
            self._retry(segment)
            return
        self.stats.pages += 1
        self.stats.keys += len(entries)
        self.stats.bytes += size
        self.pages_by_source[source] += 1
        self._preferred[segment.task] = segment.source
        segment.tried = 0
        segment.cursor = reply.next
        if reply.next is None:
            self._segment_done(segment)
        else:
            self._requeue(segment)

    def _check_page(self, segment: Segment, reply: StreamReply
                    ) -> tuple[list[tuple[bytes, Siblings]], int]:
        """Invariant 1: the decoded entries and their byte size, or _BadPage."""
        db, start, end = segment.db, segment.start, segment.end
        if len(reply.entries) > self.page_keys:
            raise _BadPage(f"{len(reply.entries)} entries, {self.page_keys} asked for")
        previous = segment.cursor
        entries: list[tuple[bytes, Siblings]] = []
        size = 0
        for key, raw in reply.entries:
            ekey = keyspace.engine_key(db, key)
            if previous is not None and ekey <= previous:
                raise _BadPage(f"key {key!r} is not after the cursor or the previous key")
            if not start <= keyspace.token_of(ekey) <= end:
                raise _BadPage(f"key {key!r} is outside the span {start}..{end}")
            try:
                siblings = decode(raw)
            except CorruptionError as exc:
                raise _BadPage(f"key {key!r}: {exc}") from None
            if not siblings:
                raise _BadPage(f"key {key!r}: an empty sibling set")
            entries.append((key, siblings))
            size += len(key) + len(raw)
            previous = ekey
        cursor = reply.next
        if cursor is not None:
            if not cursor_in_span(cursor, db, start, end):
                raise _BadPage("the next cursor is outside the span")
            if (previous is not None and cursor < previous) or (
                    not entries and segment.cursor is not None and cursor <= segment.cursor):
                raise _BadPage("the next cursor does not move forward")
        return entries, size

    def _source_failed(self, segment: Segment, source: str, why: str) -> None:
        """Try the next source with the same cursor; after a whole round, wait and retry."""
        sources = self.tasks[segment.task].sources
        self._error(f"stream: db {segment.db} span {segment.start}..{segment.end} from "
                    f"{source}: {why}")
        segment.tried += 1
        segment.source = (segment.source + 1) % len(sources)
        if segment.tried < len(sources):
            self._requeue(segment)
        else:
            segment.tried = 0
            self._retry(segment)
