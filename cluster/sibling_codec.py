"""Sibling set <-> bytes, as specified in docs/formats/sibling-set.md (format version 1).

The layout is one flat msgpack array (no nested arrays or maps), because a flat array is what
msgpack decodes fastest and this runs on every GET::

    [FORMAT_VERSION, version+]   where version =
        timestamp_ms, expire_at_ms, writer, value | nil, n, (actor, counter, stamp) * n

Invariants:
1. ``decode(encode(s)) == s`` for every valid sibling set ``s`` (multi-actor clocks are
   written in actor order, the only order ``decode`` accepts, so equal sets give equal bytes).
2. ``decode`` is a trust boundary: it returns a structurally valid sibling set or raises
   ``CorruptionError`` naming what was wrong. It never returns partial or repaired data.
3. The bytes carry no checksum of their own: the engine checksums every record and block, so
   a flipped bit is caught there; this layer catches bytes that are well formed for the
   engine but are not a sibling set (a bug, a foreign writer, a future format).

Performance: the common case (one version, one clock entry) is decoded by a straight-line
fast path: one msgpack call, one unpacking assignment, exact ``type() is`` checks, and two
tuples and a dict built (``Version`` is a plain tuple for this reason).
"""

from __future__ import annotations

from typing import Any

import msgpack

from cluster.errors import CorruptionError
from cluster.version import Siblings, Version

FORMAT_VERSION = 1  # On disk: bump on any change of layout; decoders reject unknown versions.
SIBLINGS_MAX = 4096  # decode refuses more versions than this (a sanity bound, not the limit)
CLOCK_ENTRIES_MAX = 4096  # decode refuses clocks longer than this
ACTOR_BYTES_MAX = 255
_VERSION_FIELDS = 5  # timestamp_ms, expire_at_ms, writer, value, n
_ENTRY_FIELDS = 3  # actor, counter, stamp

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_unpackb = msgpack.unpackb


def encode(siblings: Siblings) -> bytes:
    """The bytes of a sibling set. REQUIRES: siblings is non-empty and each version valid."""
    if len(siblings) == 1:
        clock, timestamp_ms, expire_at_ms, writer, value = siblings[0]
        if len(clock) == 1:
            ((actor, (counter, stamp)),) = clock.items()
            return _pack((FORMAT_VERSION, timestamp_ms, expire_at_ms, writer, value, 1,
                          actor, counter, stamp))
    assert siblings, "empty sibling set"
    out: list[Any] = [FORMAT_VERSION]
    for clock, timestamp_ms, expire_at_ms, writer, value in siblings:
        out += (timestamp_ms, expire_at_ms, writer, value, len(clock))
        for actor, (counter, stamp) in sorted(clock.items()):
            out += (actor, counter, stamp)
    return _pack(out)


# One version, as decoded: (FORMAT_VERSION, timestamp_ms, expire_at_ms, writer, value, n,
# actor_1, counter_1, stamp_1, ..., actor_n, counter_n, stamp_n). The common shape (every key
# of a cluster of one) has n == 1: SINGLE_FIELDS fields.
Single = tuple[Any, ...]
SINGLE_FIELDS = 9


def decode(data: bytes) -> Siblings:
    """The sibling set stored in ``data``; raises CorruptionError if it is not one."""
    return _build(_unpack(data))


def decode_exact(data: bytes) -> tuple[Siblings, bool]:
    """``decode``, and whether ``data`` is exactly ``encode`` of the result, so that it may be
    stored as it is (the Merkle trees hash stored bytes: tree_set.py invariant 2). The
    layout is one flat array in the order ``decode`` accepts (clocks in actor order), so
    ``encode(decode(data))`` is msgpack's own packing of the fields ``data`` holds."""
    raw = _unpack(data)
    return _build(raw), _pack(raw) == data


def _build(raw: tuple[Any, ...]) -> Siblings:
    if len(raw) == SINGLE_FIELDS and _is_single(raw):
        return siblings_of(raw)
    # Anything else (a longer clock, several versions, garbage) is checked field by field as
    # the set is built: one pass, not a check and then a second build by siblings_of.
    return _decode_general(raw)


def _is_single(raw: tuple[Any, ...]) -> bool:
    """Straight-line check of the commonest shape: SINGLE_FIELDS fields, one clock entry."""
    head, timestamp_ms, expire_at_ms, writer, value, n, actor, counter, stamp = raw
    return (
        head == FORMAT_VERSION
        and n == 1
        and type(head) is int
        and type(n) is int
        and type(timestamp_ms) is int
        and type(expire_at_ms) is int
        and type(counter) is int
        and type(stamp) is int
        and timestamp_ms >= 0
        and expire_at_ms >= 0
        and counter >= 1
        and stamp >= 0
        and type(writer) is bytes
        and type(actor) is bytes
        and 0 < len(writer) <= ACTOR_BYTES_MAX
        and 0 < len(actor) <= ACTOR_BYTES_MAX
        and (value is None or type(value) is bytes)
    )


def decode_single(data: bytes) -> Single | None:
    """The validated flat fields of ``data`` if it holds exactly one version (see ``Single``),
    None if it holds several (then call ``decode``). Raises CorruptionError on garbage.

    The hot path of GET and SET reads these fields directly and builds no Version.
    """
    raw = _unpack(data)
    size = len(raw)
    if size == SINGLE_FIELDS:
        if _is_single(raw):
            return raw
    elif size > SINGLE_FIELDS and raw[5] == (size - 6) // 3 and (size - 6) % 3 == 0:
        _decode_general(raw)  # one version with a longer clock: validate it fully
        return raw
    _decode_general(raw)  # raises CorruptionError naming the bad field, or
    return None  # several versions


_VALUE_TYPES = frozenset((bytes, type(None)))


def decode_single_trusted(data: bytes) -> Single | None:
    """``decode_single`` for bytes already validated once: the replica's values, which were
    all decoded in full when the node opened (Replica.rebuild) or encoded by this module
    since. It checks only what the hot paths rely on (the shape, and the types of the value,
    expiry, timestamp and counter they serve, compare or bump) and hands anything else to
    ``decode_single``, the trust boundary, which validates every field.
    """
    try:  # _unpack, inlined: this runs on every GET and SET
        raw = _unpackb(data, use_list=False)
    except Exception:
        return decode_single(data)  # raises the CorruptionError that names the problem
    if type(raw) is tuple and len(raw) == SINGLE_FIELDS:
        head, timestamp_ms, expire_at_ms, _writer, value, n, _actor, counter, _stamp = raw
        if (
            head == FORMAT_VERSION
            and n == 1
            and type(value) in _VALUE_TYPES
            and type(expire_at_ms) is int
            and type(timestamp_ms) is int
            and type(counter) is int
        ):
            return raw
    return decode_single(data)


def siblings_of(single: Single) -> Siblings:
    """The sibling set of a ``decode_single`` result."""
    if len(single) == SINGLE_FIELDS:
        _, timestamp_ms, expire_at_ms, writer, value, _, actor, counter, stamp = single
        return (({actor: (counter, stamp)}, timestamp_ms, expire_at_ms, writer, value),)
    clock = {single[i]: (single[i + 1], single[i + 2]) for i in range(6, len(single), 3)}
    return ((clock, single[1], single[2], single[3], single[4]),)


def encode_single(timestamp_ms: int, expire_at_ms: int, actor: bytes, value: bytes | None,
                  counter: int, stamp: int) -> bytes:
    """``encode`` of one version written by ``actor`` whose clock is ``{actor: (counter,
    stamp)}``, without building the version first (the hot path of SET)."""
    return _pack((FORMAT_VERSION, timestamp_ms, expire_at_ms, actor, value, 1, actor, counter,
                  stamp))


# Joining precomputed bytes instead of packing a tuple (the hot path of SET): msgpack's
# shortest forms of small bin lengths and of small counters, looked up instead of packed.
BIN_HEADERS = [b"\xc4" + bytes((n,)) for n in range(256)]  # bin 8 header of length n
UINTS = [_pack(n) for n in range(4096)]  # n as msgpack packs an int in 0..4095
SingleParts = tuple[int, bytes, bytes, bytes]  # (stamp_ms, head, middle, tail)


def single_parts(actor: bytes, stamp_ms: int) -> SingleParts:
    """What ``encode_single(stamp_ms, 0, actor, value, counter, stamp_ms)`` shares with every
    other value and counter: with ``(stamp_ms, head, middle, tail)`` it equals
    ``head + BIN_HEADERS[len(value)] + value + middle + UINTS[counter] + tail`` for a value
    shorter than 256 bytes and a counter below 4096 (tests/test_cluster_sibling_codec.py
    checks the identity). A writer caches the parts for the millisecond they serve."""
    actor_bin = _pack(actor)
    array_header = bytes((0x90 | SINGLE_FIELDS,))  # msgpack fixarray of SINGLE_FIELDS items
    head = array_header + _pack(FORMAT_VERSION) + _pack(stamp_ms) + _pack(0) + actor_bin
    return (stamp_ms, head, _pack(1) + actor_bin, _pack(stamp_ms))


def _unpack(data: bytes) -> tuple[Any, ...]:
    try:
        raw = _unpackb(data, use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptionError(f"sibling set: not valid msgpack ({type(exc).__name__})") from None
    if type(raw) is not tuple:
        raise CorruptionError("sibling set: not a msgpack array")
    return raw


def _decode_general(raw: tuple[Any, ...]) -> Siblings:
    if not raw or type(raw[0]) is not int or raw[0] != FORMAT_VERSION:
        head = raw[0] if raw else None
        raise CorruptionError(f"sibling set: unknown format version {head!r}")
    out: list[Version] = []
    i = 1
    end = len(raw)
    if end == 1:
        raise CorruptionError("sibling set: no versions")
    while i < end:
        if len(out) == SIBLINGS_MAX:
            raise CorruptionError(f"sibling set: more than {SIBLINGS_MAX} versions")
        if end - i < _VERSION_FIELDS:
            raise CorruptionError("sibling set: truncated version")
        timestamp_ms = raw[i]
        expire_at_ms = raw[i + 1]
        writer = raw[i + 2]
        value = raw[i + 3]
        n = raw[i + 4]
        i += _VERSION_FIELDS
        if type(timestamp_ms) is not int or timestamp_ms < 0:
            raise CorruptionError("sibling set: timestamp_ms is not an unsigned integer")
        if type(expire_at_ms) is not int or expire_at_ms < 0:
            raise CorruptionError("sibling set: expire_at_ms is not an unsigned integer")
        if type(writer) is not bytes or not 0 < len(writer) <= ACTOR_BYTES_MAX:
            raise CorruptionError("sibling set: writer is not an actor (1..255 bytes)")
        if value is not None and type(value) is not bytes:
            raise CorruptionError("sibling set: value is neither bin nor nil")
        if type(n) is not int or not 1 <= n <= CLOCK_ENTRIES_MAX:
            raise CorruptionError(f"sibling set: clock length {n!r} not in 1..{CLOCK_ENTRIES_MAX}")
        if end - i < n * _ENTRY_FIELDS:
            raise CorruptionError("sibling set: truncated clock")
        clock = {}
        previous = b""
        for j in range(i, i + n * _ENTRY_FIELDS, _ENTRY_FIELDS):
            actor = raw[j]
            counter = raw[j + 1]
            stamp = raw[j + 2]
            if type(actor) is not bytes or not 0 < len(actor) <= ACTOR_BYTES_MAX:
                raise CorruptionError("sibling set: a clock actor is not 1..255 bytes")
            if type(counter) is not int or counter < 1 or type(stamp) is not int or stamp < 0:
                raise CorruptionError("sibling set: a clock entry is not counter >= 1, stamp >= 0")
            if actor <= previous:
                raise CorruptionError("sibling set: clock actors are not in ascending order")
            previous = actor
            clock[actor] = (counter, stamp)
        i += n * _ENTRY_FIELDS
        out.append((clock, timestamp_ms, expire_at_ms, writer, value))
    return tuple(out)
