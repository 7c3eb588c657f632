"""The source side of range streaming: a token range as STREAM spans, one page of a span
read from the engine (``read_page``: it answers a peer's ``STREAM`` in ``serve_stream`` and
feeds ``RangePusher``), in engine-key order, tombstones included.

Invariants:
1. ``serve_stream``/``read_page`` never return an entry of the cluster's own namespaces (db
   bytes >= ``keys.DATABASES_MAX``: hints, counter floors) nor a value they cannot decode
   (skipped, reported); they do return tombstones, which must move too.
"""

from __future__ import annotations

from cluster import keys as keyspace
from cluster.errors import CorruptionError
from cluster.messages import ErrorCode, Stream, StreamReply
from cluster.node import Node
from cluster.replica import Replica
from cluster.ring import TokenRange
from cluster.sibling_codec import decode
from cluster.transport import RemoteError
from engine.errors import StorageError

Page = list[tuple[bytes, bytes]]  # (user key, sibling-set bytes)


def range_spans(token_range: TokenRange) -> list[tuple[int, int]]:
    """The range as inclusive token spans ``(start, end)``, ``start <= end``, as STREAM
    takes them (a wrapping range is two spans, the whole ring one)."""
    return [(start, keyspace.TOKEN_MAX if end is None else end - 1)
            for start, end in token_range.spans()]


def _span_bounds(db: int, start: int, end: int) -> tuple[bytes, bytes]:
    lo = keyspace.token_start(db, start)
    hi = keyspace.db_end(db) if end == keyspace.TOKEN_MAX else keyspace.token_start(db, end + 1)
    return lo, hi


def cursor_in_span(cursor: bytes, db: int, start: int, end: int) -> bool:
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
    skipped and reported (invariant 1). Raises the engine's CorruptionError on a damaged
    block.
    """
    assert 0 <= db < keyspace.DATABASES_MAX, db
    assert start <= end and limit >= 1 and bytes_max >= 1, (start, end, limit, bytes_max)
    lo, hi = _span_bounds(db, start, end)
    if after is not None:
        assert cursor_in_span(after, db, start, end), after
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
        assert ekey[0] == db, ekey  # invariant 1: the bounds stay inside the db
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
    if message.after is not None and not cursor_in_span(message.after, db, start, end):
        raise RemoteError(ErrorCode.PROTOCOL, "stream cursor is outside the requested span")
    try:
        entries, cursor = read_page(node.replica, db, start, end, message.after,
                                    message.limit, message.bytes_max)
    except StorageError as exc:
        raise RemoteError(ErrorCode.INTERNAL, f"stream: {exc}") from None
    return StreamReply([[key, raw] for key, raw in entries], cursor)
