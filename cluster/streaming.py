"""Range streaming: moving whole token ranges to the nodes that gain them (join, decommission).

Theory of operation. A joining node pulls: ``RangeStreamer`` takes a list of ``PullTask``s
(a ring range, the nodes that held it before, in preference order, and the dbs to move) and
cuts every task into *segments*, one per (db, contiguous token span). A segment is read page
by page with ``STREAM`` requests (``serve_stream`` answers them on the source from its
engine, in engine-key order, tombstones included), each page naming the cursor of the next
one. Every page is checked whole (invariant 1) and merged into the local replica through
``ReplicaService.merge``. A request that fails (timeout, error reply, a page refused) goes
to the next source with the same cursor; when every source failed, the segment waits
``retry_s`` and starts the round again. A leaving node pushes: ``RangePusher`` reads its own
pages the same way (``read_page``) and sends each entry as a plain ``WRITE`` to every
destination (why plain writes: see ``RangePusher``).

Both run without asyncio tasks, like ``cluster/handoff.py``: requests go out through
``Transport.request`` futures and come back through ``add_done_callback``; waits (the rate
limit, retries) are ``Clock.call_later`` timers. So the same code runs over TCP and in the
simulator's virtual time.

Invariants:
1. A page is all or nothing at the receiver: every entry of a ``STREAM_REPLY`` is checked
   (strictly ascending after the cursor, token inside the requested span, sibling bytes that
   decode) and so is its ``next`` cursor, before any entry is merged. A page that fails is
   refused and counted (``pages_refused``, ``entries_refused``) and asked of another source.
2. Merging is idempotent (replica_service.py invariant 1): a page received twice, a range
   restarted from its start, a write reaching the destination during the stream, all end
   as the merge of everything received; nothing received is overwritten.
3. A range counts as done (``progress_state``, ``on_range_done``) only after every page of
   every db of it was merged and ``commit()`` returned afterwards: a progress record never
   claims data that is still only in a buffer of this process.
4. Rate: the bytes requested or sent up to time ``t`` never exceed
   ``burst + rate * t`` plus one page (a page is paid for before it is requested; one entry
   larger than the page size comes alone and is paid for on arrival).
5. ``serve_stream``/``read_page`` never return an entry of the cluster's own namespaces (db
   bytes >= ``keys.DATABASES_MAX``: hints, counter floors) nor a value they cannot decode
   (skipped, reported); they do return tombstones, which must move too.
6. After ``stop()`` no reply and no timer touches storage or calls back.
7. Every task finishes (``on_done``) once every range is done; a source that never answers
   delays a range forever (counted in ``errors``, retried every ``retry_s``) rather than
   leaving it out.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

from cluster import keys as keyspace
from cluster.clock import Clock, TimerHandle
from cluster.errors import CorruptionError
from cluster.messages import (
    STREAM_BYTES_MAX,
    STREAM_LIMIT_MAX,
    ErrorCode,
    Message,
    Stream,
    StreamReply,
    Write,
    WriteAck,
)
from cluster.node import Node
from cluster.preflist import Placement
from cluster.replica import Replica
from cluster.replica_service import ReplicaService
from cluster.ring import TokenRange
from cluster.sibling_codec import decode
from cluster.transport import RemoteError, Transport
from cluster.version import Siblings
from engine.errors import StorageError
from engine.fs import FileSystem, join, replace_file

PAGE_KEYS_DEFAULT = 1000  # entries per STREAM page
PAGE_BYTES_DEFAULT = 256 * 1024  # bytes per page: large enough to amortise a round trip
CONCURRENCY_DEFAULT = 2  # segments in flight: one page merges while the next is on the wire
RETRY_S_DEFAULT = 1.0  # wait after every source of a segment failed once
RATE_BURST_S = 0.1  # the rate limiter lets a tenth of a second's bytes go at once
# Push: WRITEs one pusher may have in flight (page_keys x concurrency), kept well below the
# transport's per-link queue (TransportConfig.queue_max, 8192): past it the writes would
# fail with PeerOverloaded, and the same page resent would fail the same way for ever.
PUSH_WRITES_IN_FLIGHT_MAX = 4096

Page = list[tuple[bytes, bytes]]  # (user key, sibling-set bytes)


# -- Spans, pages and the server side -------------------------------------------------------


def range_spans(token_range: TokenRange) -> list[tuple[int, int]]:
    """The range as inclusive token spans ``(start, end)``, ``start <= end``, as STREAM
    takes them (a wrapping range is two spans, the whole ring one)."""
    return [(start, keyspace.TOKEN_MAX if end is None else end - 1)
            for start, end in token_range.spans()]


def _span_bounds(db: int, start: int, end: int) -> tuple[bytes, bytes]:
    lo = keyspace.token_start(db, start)
    hi = keyspace.db_end(db) if end == keyspace.TOKEN_MAX else keyspace.token_start(db, end + 1)
    return lo, hi


def _cursor_in_span(cursor: bytes, db: int, start: int, end: int) -> bool:
    return (len(cursor) >= keyspace.PREFIX_BYTES and cursor[0] == db
            and start <= keyspace.token_of(cursor) <= end)


def read_page(replica: Replica, db: int, start: int, end: int, after: bytes | None,
              limit: int, bytes_max: int) -> tuple[Page, bytes | None]:
    """The stored entries of ``db`` with token in ``[start, end]`` after the engine key
    ``after``, in engine-key order: at most ``limit`` examined and ``bytes_max`` bytes (key +
    value) returned, but never fewer than one entry when one remains. Returns the entries
    (user key, sibling-set bytes) and the cursor of the next page (the last engine key
    examined), None when the span is exhausted.

    REQUIRES: ``0 <= db < keys.DATABASES_MAX``, ``start <= end``, ``after`` None or an engine
    key of ``db`` inside the span; ``limit, bytes_max >= 1``. Values that do not decode are
    skipped and reported (invariant 5). Raises the engine's CorruptionError on a damaged
    block.
    """
    assert 0 <= db < keyspace.DATABASES_MAX, db
    assert start <= end and limit >= 1 and bytes_max >= 1, (start, end, limit, bytes_max)
    lo, hi = _span_bounds(db, start, end)
    if after is not None:
        assert _cursor_in_span(after, db, start, end), after
        lo = max(lo, after + b"\x00")  # the smallest engine key after ``after``
    entries: Page = []
    size = 0
    examined = 0
    last: bytes | None = None
    prefix = keyspace.PREFIX_BYTES
    for ekey, raw in replica.engine.scan(lo, hi):
        entry_bytes = len(ekey) - prefix + len(raw)
        if examined >= limit or (entries and size + entry_bytes > bytes_max):
            return entries, last  # this key starts the next page
        assert ekey[0] == db, ekey  # invariant 5: the bounds stay inside the db
        examined += 1
        last = ekey
        try:
            decode(raw)  # never hand a peer bytes this node cannot read
        except CorruptionError as exc:
            replica.stats["corrupt_values"] += 1
            replica.report(f"stream: skipping key {ekey!r}: {exc}")
            continue
        entries.append((ekey[prefix:], raw))
        size += entry_bytes
    return entries, None


def serve_stream(node: Node, message: Stream) -> StreamReply:
    """Answer a peer's STREAM from ``node``'s storage (ClusterNode._serve calls it).

    Raises RemoteError: UNSUPPORTED for a db this node does not have, PROTOCOL for a span
    with ``start_token > end_token`` or a cursor outside the span, INTERNAL when the engine
    meets a damaged block (the requester then asks another source)."""
    db, start, end = message.db, message.start_token, message.end_token
    if db >= node.options.databases:
        raise RemoteError(ErrorCode.UNSUPPORTED,
                          f"db {db} is out of range (this node has {node.options.databases})")
    if start > end:
        raise RemoteError(ErrorCode.PROTOCOL, f"stream span {start}..{end} is empty")
    if message.after is not None and not _cursor_in_span(message.after, db, start, end):
        raise RemoteError(ErrorCode.PROTOCOL, "stream cursor is outside the requested span")
    try:
        entries, cursor = read_page(node.replica, db, start, end, message.after,
                                    message.limit, message.bytes_max)
    except StorageError as exc:
        raise RemoteError(ErrorCode.INTERNAL, f"stream: {exc}") from None
    return StreamReply([[key, raw] for key, raw in entries], cursor)


# -- Planning: which ranges move where -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PullTask:
    """Stream ``token_range`` of every db in ``dbs`` from ``sources`` (preference order)."""

    token_range: TokenRange
    sources: tuple[str, ...]
    dbs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PushTask:
    """Send this node's entries of ``token_range`` in ``dbs`` to every one of ``destinations``."""

    token_range: TokenRange
    dbs: tuple[int, ...]
    destinations: tuple[str, ...]


def _elementary_ranges(old: Placement, new: Placement) -> list[TokenRange]:
    """The ranges between consecutive tokens of both rings: each lies inside one vnode range
    of each ring, so its primaries are those of its right end in either ring."""
    bounds = sorted(set(old.ring.tokens) | set(new.ring.tokens))
    return [TokenRange(bounds[i - 1], bounds[i]) for i in range(len(bounds))]


def pull_tasks(old: Placement, new: Placement, me: str, dbs: Sequence[int],
               up: Collection[str] | None = None) -> list[PullTask]:
    """What ``me`` must stream when the ring goes from ``old`` to ``new`` (a join): every
    range it replicates in ``new`` but not in ``old``, from the nodes that replicated it in
    ``old``. Ranges nobody held are left out.

    Source order (Cassandra's consistent range movement): first the replica that *gives the
    range up* (in ``old``, not in ``new``), because ``me`` takes its place: copying exactly
    what it holds keeps every write on as many replicas as before, whereas copying from a
    replica that missed a write (W < N) would leave that write on one replica fewer after
    each move. The others follow as fallbacks; those in ``up`` before those down."""
    tasks = []
    for part in _elementary_ranges(old, new):
        before = old.primaries(part.right)
        after = new.primaries(part.right)
        if me in before or me not in after:
            continue
        sources = [n for n in before if n != me]
        # stable sort: preference order otherwise
        sources.sort(key=lambda n: (up is not None and n not in up, n in after))
        if sources:
            tasks.append(PullTask(part, tuple(sources), tuple(dbs)))
    return tasks


def push_tasks(old: Placement, new: Placement, me: str, dbs: Sequence[int]) -> list[PushTask]:
    """What ``me`` must send when the ring goes from ``old`` to ``new`` (a decommission:
    ``new`` is the ring without it): every range it replicates in ``old``, to the nodes that
    replicate it in ``new`` and did not in ``old``."""
    tasks = []
    for part in _elementary_ranges(old, new):
        before = old.primaries(part.right)
        if me not in before:
            continue
        gaining = tuple(n for n in new.primaries(part.right) if n not in before and n != me)
        if gaining:
            tasks.append(PushTask(part, tuple(dbs), gaining))
    return tasks


# -- Progress record (docs/formats/stream-progress.md) --------------------------------------

PROGRESS_MAGIC = b"RKVSTRM\n"
PROGRESS_VERSION = 1  # On disk: bump on any change of layout; decoders reject unknown ones.
KIND_PULL = 1  # On disk: never renumber; retire instead.
KIND_PUSH = 2
PROGRESS_RANGES_MAX = 1 << 22  # far above any ring (1024 members x 4096 tokens)
PROGRESS_NAME_JOIN = "join.progress"
PROGRESS_NAME_LEAVE = "decommission.progress"
_PROGRESS_HEADER = struct.Struct(">8sBBI")  # magic, version, kind, count
_PROGRESS_RANGE = struct.Struct(">QQ")  # left, right
_PROGRESS_TRAILER = struct.Struct(">I")  # CRC-32 (zlib) of header and ranges


@dataclass(frozen=True, slots=True)
class StreamProgress:
    """The ranges a streamer (``KIND_PULL``) or pusher (``KIND_PUSH``) finished."""

    kind: int
    done: frozenset[TokenRange]


def encode_progress(progress: StreamProgress) -> bytes:
    assert progress.kind in (KIND_PULL, KIND_PUSH), progress.kind
    assert len(progress.done) <= PROGRESS_RANGES_MAX, len(progress.done)
    ranges = sorted(progress.done)
    head = _PROGRESS_HEADER.pack(PROGRESS_MAGIC, PROGRESS_VERSION, progress.kind, len(ranges))
    head += b"".join(_PROGRESS_RANGE.pack(r.left, r.right) for r in ranges)
    return head + _PROGRESS_TRAILER.pack(zlib.crc32(head))


def decode_progress(data: bytes) -> StreamProgress:
    """The record of a file's bytes; CorruptionError on any mismatch (a trust boundary)."""
    name = "stream progress"
    if len(data) < _PROGRESS_HEADER.size + _PROGRESS_TRAILER.size:
        raise CorruptionError(f"{name}: {len(data)} bytes is too short")
    magic, version, kind, count = _PROGRESS_HEADER.unpack_from(data)
    if magic != PROGRESS_MAGIC:
        raise CorruptionError(f"{name}: bad magic {magic!r}")
    if version != PROGRESS_VERSION:
        raise CorruptionError(f"{name}: unknown format version {version}")
    if kind not in (KIND_PULL, KIND_PUSH) or count > PROGRESS_RANGES_MAX:
        raise CorruptionError(f"{name}: kind {kind} or count {count} out of range")
    end = _PROGRESS_HEADER.size + count * _PROGRESS_RANGE.size
    if len(data) != end + _PROGRESS_TRAILER.size:
        raise CorruptionError(f"{name}: {len(data)} bytes, the header says "
                              f"{end + _PROGRESS_TRAILER.size}")
    (crc,) = _PROGRESS_TRAILER.unpack_from(data, end)
    if crc != zlib.crc32(data[:end]):
        raise CorruptionError(f"{name}: checksum mismatch")
    ranges = [TokenRange(left, right) for left, right in
              _PROGRESS_RANGE.iter_unpack(data[_PROGRESS_HEADER.size:end])]
    if any(a >= b for a, b in pairwise(ranges)):
        raise CorruptionError(f"{name}: ranges are not strictly ascending")
    return StreamProgress(kind, frozenset(ranges))


def save_progress(fs: FileSystem, directory: str, name: str, progress: StreamProgress) -> None:
    """Durably replace ``directory/name`` (temporary file, fsync, rename, fsync dir)."""
    replace_file(fs, directory, name, encode_progress(progress))


def load_progress(fs: FileSystem, directory: str, name: str,
                  kind: int) -> StreamProgress | None:
    """The record in ``directory/name``, None if there is none; CorruptionError if damaged
    or of another kind."""
    path = join(directory, name)
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return None
    limit = _PROGRESS_HEADER.size + PROGRESS_RANGES_MAX * 16 + _PROGRESS_TRAILER.size
    if size > limit:
        raise CorruptionError(f"{name}: {size} bytes is too large")
    file = fs.open_read(path)
    try:
        progress = decode_progress(file.read(size))
    finally:
        file.close()
    if progress.kind != kind:
        raise CorruptionError(f"{name}: a record of kind {progress.kind}, expected {kind}")
    return progress


# -- Shared machinery ----------------------------------------------------------------------


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
    pages_refused: int = 0  # pull: malformed STREAM_REPLY pages (invariant 1)
    entries_refused: int = 0  # the entries of those pages
    retries: int = 0  # a segment found no source (pull) or destination (push) answering
    started_s: float = 0.0
    finished_s: float | None = None
    last_error: str = ""


class _Segment:
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


class _Runner:
    """What pull and push share: task expansion, the ready queue, concurrency, the rate
    limit, retry timers, done-tracking, progress and INFO. Subclasses implement ``_start``
    (begin work on a ready segment) and call ``_segment_done``/``_requeue``/``_retry``."""

    kind = KIND_PULL

    def __init__(self, ranges: Sequence[TokenRange], dbs: Sequence[tuple[int, ...]],
                 clock: Clock, *, rate_bytes_per_s: int, timeout_s: float, page_keys: int,
                 page_bytes: int, concurrency: int, retry_s: float,
                 done: Iterable[TokenRange], on_range_done: Callable[[TokenRange], None] | None,
                 on_done: Callable[[], None] | None,
                 report: Callable[[str], None] | None) -> None:
        assert timeout_s > 0 and retry_s > 0, (timeout_s, retry_s)
        assert 1 <= page_keys <= STREAM_LIMIT_MAX and concurrency >= 1, (page_keys, concurrency)
        assert 1 <= page_bytes <= STREAM_BYTES_MAX, page_bytes
        self.clock = clock
        self.timeout_s = timeout_s
        self.page_keys = page_keys
        self.page_bytes = page_bytes
        self.concurrency = concurrency
        self.retry_s = retry_s
        self.on_range_done = on_range_done
        self.on_done = on_done
        self.report = report or (lambda message: None)
        self.limiter = RateLimiter(clock, rate_bytes_per_s,
                                   max(page_bytes, int(rate_bytes_per_s * RATE_BURST_S)))
        self.stats = StreamStats(ranges_total=len(ranges))
        self._ranges = list(ranges)
        self._dbs = list(dbs)
        self._done: set[TokenRange] = set(done) & set(ranges)
        self._left = [0] * len(ranges)  # segments of each task not done yet
        self._next_task = 0
        self._ready: collections.deque[_Segment] = collections.deque()
        self._busy: set[_Segment] = set()  # segments with requests in flight
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
        """Invariant 6. Requests in flight are left to complete or time out unheard."""
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
        """The ranges done so far (invariant 3), to persist and pass back as ``done``."""
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

    def _peer_of(self, segment: _Segment) -> str:
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

    def _take_ready(self) -> _Segment | None:
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
        segments = [_Segment(task, db, start, end, self._first_source(task))
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

    def _start(self, segment: _Segment) -> None:
        raise NotImplementedError

    def _requeue(self, segment: _Segment) -> None:
        """The segment goes on at once (ahead of segments not started: locality)."""
        self._ready.appendleft(segment)

    def _retry(self, segment: _Segment) -> None:
        """The segment waits ``retry_s``, then goes on."""
        self.stats.retries += 1

        def again() -> None:
            self._timers.discard(timer)
            self._ready.append(segment)
            self._pump()

        timer = self.clock.call_later(self.retry_s, again)
        self._timers.add(timer)

    def _segment_done(self, segment: _Segment) -> None:
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


def _outcome(future: asyncio.Future[Message]) -> Message | BaseException:
    if future.cancelled():
        return asyncio.CancelledError()
    error = future.exception()
    return error if error is not None else future.result()


# -- Pull (join) -----------------------------------------------------------------------------


class _BadPage(Exception):
    pass


class RangeStreamer(_Runner):
    """Pulls ``tasks`` into the local replica; see the module docstring.

    ``commit()`` must make what ``service.merge`` wrote at least as durable as the progress
    record the caller saves from ``on_range_done`` (``Node.commit``: the commit log reached
    the OS; with ``appendfsync always`` it is fsynced). ``done``: ranges finished by an
    earlier run (``load_progress(...).done``), skipped.
    """

    kind = KIND_PULL

    def __init__(self, tasks: Sequence[PullTask], transport: Transport,
                 service: ReplicaService, clock: Clock, *, commit: Callable[[], None],
                 rate_bytes_per_s: int, timeout_s: float,
                 page_keys: int = PAGE_KEYS_DEFAULT, page_bytes: int = PAGE_BYTES_DEFAULT,
                 concurrency: int = CONCURRENCY_DEFAULT, retry_s: float = RETRY_S_DEFAULT,
                 done: Iterable[TokenRange] = (),
                 on_range_done: Callable[[TokenRange], None] | None = None,
                 on_done: Callable[[], None] | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        assert all(task.sources for task in tasks), "a task without sources"
        assert len({t.token_range for t in tasks}) == len(tasks), "a range listed twice"
        super().__init__([t.token_range for t in tasks], [t.dbs for t in tasks], clock,
                         rate_bytes_per_s=rate_bytes_per_s, timeout_s=timeout_s,
                         page_keys=page_keys, page_bytes=page_bytes, concurrency=concurrency,
                         retry_s=retry_s, done=done, on_range_done=on_range_done,
                         on_done=on_done, report=report)
        self.tasks = list(tasks)
        self.transport = transport
        self.service = service
        self.commit = commit
        self._preferred = [0] * len(tasks)  # per task: the source that answered last
        self.pages_by_source: collections.Counter[str] = collections.Counter()

    def _first_source(self, task: int) -> int:
        return self._preferred[task]

    def _peer_of(self, segment: _Segment) -> str:
        return f" from {self.tasks[segment.task].sources[segment.source]}"

    def _start(self, segment: _Segment) -> None:
        source = self.tasks[segment.task].sources[segment.source]
        request = Stream(segment.db, segment.start, segment.end, segment.cursor,
                         self.page_keys, self.page_bytes)
        self.limiter.charge(self.page_bytes)  # invariant 4: paid before it is asked for
        self._busy.add(segment)
        future = self.transport.request(source, request, self.timeout_s)
        self._futures.add(future)
        future.add_done_callback(partial(self._on_reply, segment, source))

    def _on_reply(self, segment: _Segment, source: str,
                  future: asyncio.Future[Message]) -> None:
        self._futures.discard(future)
        if self.stopped:
            return  # invariant 6
        self._busy.discard(segment)
        outcome = _outcome(future)
        if not isinstance(outcome, StreamReply):
            self.limiter.refund(self.page_bytes)
            self._source_failed(segment, source, f"{type(outcome).__name__}: {outcome}")
        else:
            self._page(segment, source, outcome)
        self._pump()

    def _page(self, segment: _Segment, source: str, reply: StreamReply) -> None:
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

    def _check_page(self, segment: _Segment, reply: StreamReply
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
            if not _cursor_in_span(cursor, db, start, end):
                raise _BadPage("the next cursor is outside the span")
            if (previous is not None and cursor < previous) or (
                    not entries and segment.cursor is not None and cursor <= segment.cursor):
                raise _BadPage("the next cursor does not move forward")
        return entries, size

    def _source_failed(self, segment: _Segment, source: str, why: str) -> None:
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


# -- Push (decommission) ---------------------------------------------------------------------


class RangePusher(_Runner):
    """Sends this node's entries of ``tasks`` to their destinations, as plain WRITEs.

    Why WRITE and not a new bulk message: every node already serves WRITE (decoding the
    sibling set at the trust boundary, merging, acknowledging only after its commit log
    reached the OS: cluster_node.py Rule 2), so an acknowledged entry is durable at its
    destination and nothing new has to be added to the receiving side or the protocol; the
    transport pipelines the writes of a page over one connection (transport.py Rule 6),
    which keeps the per-key cost to a small frame. A page moves on only when every
    destination acknowledged all of it; a destination that failed gets the same page again
    after ``retry_s`` (a write is a merge: repeats are harmless), the others do not.
    """

    kind = KIND_PUSH

    def __init__(self, tasks: Sequence[PushTask], transport: Transport, replica: Replica,
                 clock: Clock, *, rate_bytes_per_s: int, timeout_s: float,
                 page_keys: int = PAGE_KEYS_DEFAULT, page_bytes: int = PAGE_BYTES_DEFAULT,
                 concurrency: int = CONCURRENCY_DEFAULT, retry_s: float = RETRY_S_DEFAULT,
                 done: Iterable[TokenRange] = (),
                 on_range_done: Callable[[TokenRange], None] | None = None,
                 on_done: Callable[[], None] | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        assert all(task.destinations for task in tasks), "a task without destinations"
        assert page_keys * concurrency <= PUSH_WRITES_IN_FLIGHT_MAX, (page_keys, concurrency)
        assert len({t.token_range for t in tasks}) == len(tasks), "a range listed twice"
        super().__init__([t.token_range for t in tasks], [t.dbs for t in tasks], clock,
                         rate_bytes_per_s=rate_bytes_per_s, timeout_s=timeout_s,
                         page_keys=page_keys, page_bytes=page_bytes, concurrency=concurrency,
                         retry_s=retry_s, done=done, on_range_done=on_range_done,
                         on_done=on_done, report=report)
        self.tasks = list(tasks)
        self.transport = transport
        self.replica = replica
        self.writes_failed = 0  # single WRITEs that failed (a page may fail many)

    def _peer_of(self, segment: _Segment) -> str:
        return f" to {','.join(sorted(segment.pending))}"

    def _start(self, segment: _Segment) -> None:
        if segment.page is None and not self._read(segment):
            return
        page = segment.page
        assert page is not None
        targets = sorted(segment.pending)
        self.limiter.charge(segment.page_bytes * len(targets))  # invariant 4
        segment.failed = set()
        segment.outstanding = len(page) * len(targets)
        self._busy.add(segment)
        for target in targets:
            for key, raw in page:
                future = self.transport.request(target, Write(segment.db, key, raw),
                                                self.timeout_s)
                self._futures.add(future)
                future.add_done_callback(partial(self._on_ack, segment, target))

    def _read(self, segment: _Segment) -> bool:
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

    def _on_ack(self, segment: _Segment, target: str, future: asyncio.Future[Message]) -> None:
        self._futures.discard(future)
        if self.stopped:
            return  # invariant 6
        outcome = _outcome(future)
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
