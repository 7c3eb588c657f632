"""Range streaming: moving whole token ranges to the nodes that gain them (join, decommission).

Theory of operation. A joining node pulls: ``RangeStreamer`` (range_streamer.py) takes a list
of ``PullTask``s (stream_plan.py: a ring range, the nodes that held it before, in preference
order, and the dbs to move) and cuts every task into *segments*, one per (db, contiguous
token span). A segment is read page by page with ``STREAM`` requests (``serve_stream``,
stream_source.py, answers them on the source from its engine, in engine-key order,
tombstones included), each page naming the cursor of the next one. Every page is checked
whole (range_streamer.py invariant 1) and merged into the local replica through
``ReplicaService.merge``. A request that fails (timeout, error reply, a page refused) goes
to the next source with the same cursor; when every source failed, the segment waits
``retry_s`` and starts the round again. A leaving node pushes: ``RangePusher``
(range_pusher.py) reads its own pages the same way (``read_page``) and sends each entry as a
plain ``WRITE`` to every destination (why plain writes: see ``RangePusher``). What both
share, the segments, their queue, the rate limit, retries and done-tracking, is ``Runner``
here; the ranges done are saved as a progress record (stream_progress.py).

Both run without asyncio tasks, like ``cluster/handoff.py``: requests go out through
``Transport.request`` futures and come back through ``add_done_callback``; waits (the rate
limit, retries) are ``Clock.call_later`` timers. So the same code runs over TCP and in the
simulator's virtual time.

Invariants:
1. A range counts as done (``progress_state``, ``on_range_done``) only after every page of
   every db of it was merged and ``commit()`` returned afterwards: a progress record never
   claims data that is still only in a buffer of this process.
2. Rate: the bytes requested or sent up to time ``t`` never exceed
   ``burst + rate * t`` plus one page (a page is paid for before it is requested; one entry
   larger than the page size comes alone and is paid for on arrival).
3. After ``stop()`` no reply and no timer touches storage or calls back.
4. Every task finishes (``on_done``) once every range is done; a source that never answers
   delays a range forever (counted in ``errors``, retried every ``retry_s``) rather than
   leaving it out.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cluster.clock import Clock, TimerHandle
from cluster.messages import STREAM_BYTES_MAX, STREAM_LIMIT_MAX, Message
from cluster.ring import TokenRange
from cluster.stream_progress import KIND_PULL, StreamProgress
from cluster.stream_source import Page, range_spans

PAGE_KEYS_DEFAULT = 1000  # entries per STREAM page
PAGE_BYTES_DEFAULT = 256 * 1024  # bytes per page: large enough to amortise a round trip
CONCURRENCY_DEFAULT = 2  # segments in flight: one page merges while the next is on the wire
RETRY_S_DEFAULT = 1.0  # wait after every source of a segment failed once
RATE_BURST_S = 0.1  # the rate limiter lets a tenth of a second's bytes go at once


class RateLimiter:
    """A token bucket over an injected clock: ``rate`` bytes/s, ``burst`` bytes at most
    saved up. The balance may go negative (a charge larger than what is saved); nothing
    more goes out until it is back to zero. ``rate == 0``: no limit."""

    __slots__ = ("balance", "burst", "clock", "rate", "updated_s")

    def __init__(self, clock: Clock, rate_bytes_per_s: int, burst_bytes: int) -> None:
        assert rate_bytes_per_s >= 0 and burst_bytes >= 0, (rate_bytes_per_s, burst_bytes)
        self.clock = clock
        self.rate = rate_bytes_per_s
        self.burst = burst_bytes
        self.balance = float(burst_bytes)
        self.updated_s = clock.monotonic()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        self.balance = min(float(self.burst),
                           self.balance + (now - self.updated_s) * self.rate)
        self.updated_s = now

    def delay_s(self) -> float:
        """Seconds until something may go out (0: now)."""
        if not self.rate:
            return 0.0
        self._refill()
        return 0.0 if self.balance >= 0 else -self.balance / self.rate

    def charge(self, nbytes: int) -> None:
        if self.rate:
            self._refill()
            self.balance -= nbytes

    def refund(self, nbytes: int) -> None:
        """Give back ``nbytes`` of a charge (negative: charge more)."""
        if self.rate:
            self._refill()
            self.balance = min(float(self.burst), self.balance + nbytes)


@dataclass(slots=True)
class StreamStats:
    ranges_total: int = 0
    ranges_done: int = 0  # skipped ones included
    ranges_skipped: int = 0  # done by an earlier run (the progress record)
    keys: int = 0  # entries merged (pull) or acknowledged by every destination (push)
    bytes: int = 0  # keys and sibling-set bytes of those entries
    pages: int = 0
    errors: int = 0  # failed requests, refused pages, failed merges and commits
    # pull: malformed STREAM_REPLY pages (range_streamer.py invariant 1)
    pages_refused: int = 0
    entries_refused: int = 0  # the entries of those pages
    retries: int = 0  # a segment found no source (pull) or destination (push) answering
    started_s: float = 0.0
    finished_s: float | None = None
    last_error: str = ""


class Segment:
    """One (db, token span) of a task, read page by page from ``cursor`` on."""

    __slots__ = ("cursor", "db", "end", "failed", "next_cursor", "outstanding", "page",
                 "page_bytes", "pending", "source", "start", "task", "tried")

    def __init__(self, task: int, db: int, start: int, end: int, source: int) -> None:
        self.task = task
        self.db = db
        self.start = start
        self.end = end
        self.cursor: bytes | None = None
        self.source = source  # pull: index of the source asked next
        self.tried = 0  # pull: sources tried in this round
        # push: the page being delivered, its next cursor, who still lacks it
        self.page: Page | None = None
        self.next_cursor: bytes | None = None
        self.page_bytes = 0
        self.pending: set[str] = set()
        self.failed: set[str] = set()
        self.outstanding = 0


@dataclass(frozen=True)
class StreamOptions:
    """What a pull or a push is told besides its tasks: its pace and page sizes, the ranges
    an earlier run finished (``done``, skipped) and whom to tell of progress."""

    rate_bytes_per_s: int
    timeout_s: float
    page_keys: int = PAGE_KEYS_DEFAULT
    page_bytes: int = PAGE_BYTES_DEFAULT
    concurrency: int = CONCURRENCY_DEFAULT
    retry_s: float = RETRY_S_DEFAULT
    done: Iterable[TokenRange] = ()
    on_range_done: Callable[[TokenRange], None] | None = None
    on_done: Callable[[], None] | None = None
    report: Callable[[str], None] | None = None


class Runner:
    """What pull and push share: task expansion, the ready queue, concurrency, the rate
    limit, retry timers, done-tracking, progress and INFO. Subclasses implement ``_start``
    (begin work on a ready segment) and call ``_segment_done``/``_requeue``/``_retry``."""

    kind = KIND_PULL

    def __init__(self, ranges: Sequence[TokenRange], dbs: Sequence[tuple[int, ...]],
                 clock: Clock, options: StreamOptions) -> None:
        timeout_s, retry_s = options.timeout_s, options.retry_s
        page_keys, page_bytes = options.page_keys, options.page_bytes
        concurrency, rate_bytes_per_s = options.concurrency, options.rate_bytes_per_s
        assert timeout_s > 0 and retry_s > 0, (timeout_s, retry_s)
        assert 1 <= page_keys <= STREAM_LIMIT_MAX and concurrency >= 1, (page_keys, concurrency)
        assert 1 <= page_bytes <= STREAM_BYTES_MAX, page_bytes
        self.clock = clock
        self.timeout_s = timeout_s
        self.page_keys = page_keys
        self.page_bytes = page_bytes
        self.concurrency = concurrency
        self.retry_s = retry_s
        self.on_range_done = options.on_range_done
        self.on_done = options.on_done
        self.report = options.report or (lambda message: None)
        self.limiter = RateLimiter(clock, rate_bytes_per_s,
                                   max(page_bytes, int(rate_bytes_per_s * RATE_BURST_S)))
        self.stats = StreamStats(ranges_total=len(ranges))
        self._ranges = list(ranges)
        self._dbs = list(dbs)
        self._done: set[TokenRange] = set(options.done) & set(ranges)
        self._left = [0] * len(ranges)  # segments of each task not done yet
        self._next_task = 0
        self._ready: collections.deque[Segment] = collections.deque()
        self._busy: set[Segment] = set()  # segments with requests in flight
        self._timers: set[TimerHandle] = set()
        self._wake: TimerHandle | None = None
        self._futures: set[asyncio.Future[Message]] = set()
        self.started = False
        self.stopped = False

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin (once). ``on_done`` may be called from here when nothing is left to do."""
        assert not self.started, "started twice"
        self.started = True
        self.stats.started_s = self.clock.monotonic()
        self._pump()

    def stop(self) -> None:
        """Invariant 3. Requests in flight are left to complete or time out unheard."""
        self.stopped = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None

    @property
    def finished(self) -> bool:
        return self.stats.finished_s is not None

    def in_flight(self) -> list[asyncio.Future[Message]]:
        return [f for f in self._futures if not f.done()]

    def progress_state(self) -> StreamProgress:
        """The ranges done so far (invariant 1), to persist and pass back as ``done``."""
        return StreamProgress(self.kind, frozenset(self._done))

    # Reporting ---------------------------------------------------------------------------

    def rate_bytes_per_s(self) -> float:
        end = self.stats.finished_s if self.stats.finished_s is not None else self.clock.monotonic()
        elapsed = end - self.stats.started_s
        return self.stats.bytes / elapsed if self.started and elapsed > 0 else 0.0

    def current(self) -> list[str]:
        """What is in flight: ``(left,right] db N`` per busy segment (and its peer)."""
        return sorted(f"({self._ranges[s.task].left},{self._ranges[s.task].right}] db {s.db}"
                      f"{self._peer_of(s)}" for s in self._busy)

    def _peer_of(self, segment: Segment) -> str:
        return ""

    def info(self, prefix: str) -> dict[str, int | float | str]:
        """INFO fields, each name prefixed (``stream_``, ``decommission_``)."""
        s = self.stats
        state = ("stopped" if self.stopped else "done" if self.finished
                 else "running" if self.started else "idle")
        fields: dict[str, int | float | str] = {
            "state": state, "ranges_total": s.ranges_total, "ranges_done": s.ranges_done,
            "ranges_skipped": s.ranges_skipped, "keys": s.keys, "bytes": s.bytes,
            "pages": s.pages, "rate_bytes_per_s": round(self.rate_bytes_per_s(), 1),
            "errors": s.errors, "pages_refused": s.pages_refused,
            "entries_refused": s.entries_refused, "retries": s.retries,
            "current": "; ".join(self.current()) or "-", "last_error": s.last_error or "-"}
        return {prefix + name: value for name, value in fields.items()}

    def describe(self) -> str:
        """One log line of progress."""
        s = self.stats
        return (f"{s.ranges_done}/{s.ranges_total} ranges, {s.keys} keys, "
                f"{s.bytes / 1e6:.1f} MB at {self.rate_bytes_per_s() / 1e6:.2f} MB/s, "
                f"{s.errors} errors")

    def _error(self, text: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = text[:200]
        self.report(text)

    # Scheduling --------------------------------------------------------------------------

    def _take_ready(self) -> Segment | None:
        while not self._ready:
            if self._next_task >= len(self._ranges):
                return None
            self._expand(self._next_task)
            self._next_task += 1
        return self._ready.popleft()

    def _expand(self, task: int) -> None:
        token_range = self._ranges[task]
        if token_range in self._done:  # finished by an earlier run: already recorded
            self.stats.ranges_skipped += 1
            self.stats.ranges_done += 1
            return
        segments = [Segment(task, db, start, end, self._first_source(task))
                    for db in self._dbs[task] for start, end in range_spans(token_range)]
        self._left[task] = len(segments)
        if not segments:
            self._range_done(task)
        self._ready.extend(segments)

    def _first_source(self, task: int) -> int:
        return 0

    def _pump(self) -> None:
        """Start work on ready segments while the concurrency and the rate allow."""
        if self.stopped or self._wake is not None:
            return
        while len(self._busy) < self.concurrency:
            segment = self._take_ready()
            if segment is None:
                break
            delay = self.limiter.delay_s()
            if delay > 0:
                self._ready.appendleft(segment)
                self._wake = self.clock.call_later(delay, self._woken)
                return
            self._start(segment)
        self._check_finished()

    def _woken(self) -> None:
        self._wake = None
        self._pump()

    def _start(self, segment: Segment) -> None:
        raise NotImplementedError

    def _requeue(self, segment: Segment) -> None:
        """The segment goes on at once (ahead of segments not started: locality)."""
        self._ready.appendleft(segment)

    def _retry(self, segment: Segment) -> None:
        """The segment waits ``retry_s``, then goes on."""
        self.stats.retries += 1

        def again() -> None:
            self._timers.discard(timer)
            self._ready.append(segment)
            self._pump()

        timer = self.clock.call_later(self.retry_s, again)
        self._timers.add(timer)

    def _segment_done(self, segment: Segment) -> None:
        self._left[segment.task] -= 1
        if self._left[segment.task] == 0:
            self._range_done(segment.task)

    def _range_done(self, task: int) -> None:
        token_range = self._ranges[task]
        self._done.add(token_range)
        self.stats.ranges_done += 1
        if self.on_range_done is not None:
            try:
                self.on_range_done(token_range)
            except Exception as exc:  # e.g. the record cannot be saved: a restart would
                self._error(f"stream: after range {token_range}: {exc!r}")  # redo it

    def _check_finished(self) -> None:
        if (self.finished or self._busy or self._ready or self._timers
                or self._next_task < len(self._ranges)):
            return
        self.stats.finished_s = self.clock.monotonic()
        if self.on_done is not None:
            self.on_done()  # REQUIRES: does not raise (it runs inside a reply's callback)


def future_outcome(future: asyncio.Future[Message]) -> Message | BaseException:
    if future.cancelled():
        return asyncio.CancelledError()
    error = future.exception()
    return error if error is not None else future.result()

