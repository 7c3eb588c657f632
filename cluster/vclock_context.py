"""The causal context of ``VCLOCK GET``/``VCLOCK SET``: opaque text naming versions of a key.

A client reads a key's siblings with ``VCLOCK GET`` and gets one context for all of them; a
``VCLOCK SET ... CONTEXT ctx`` then writes a version that supersedes exactly the versions the
context names (Dynamo's "context" of get/put, DeCandia et al., SOSP 2007, section 4.1).
Format, byte by byte: docs/formats/vclock-context.md (format version 1).

What a context carries, and why only that: the write paths (cluster/put_fsm.py
``_new_version``, cluster/node.py ``Node._version``) read two fields of each superseded version,
its clock and its timestamp_ms; the new version's clock is the merge of those clocks with the
coordinator's entry bumped, and its timestamp is at least theirs. Values, writers and expiries
are never read, so the context leaves them out, and ``decode`` returns versions whose other
fields are placeholders (``expire_at_ms`` 0, writer ``b""``, value None): they name versions
for a write to supersede and must never be stored.

Invariants:
1. ``decode(encode(s, db, key), db, key)`` gives back the clocks and timestamps of ``s``
   (versions sorted by (timestamp, clock), clock entries by actor), so equal sets give equal
   text.
2. ``decode`` is a trust boundary: it returns a structurally valid tuple of versions or raises
   ``ContextError`` naming what is wrong; it never returns part of a context. Counters and
   timestamps are bounded (``COUNTER_MAX``, ``TIMESTAMP_MS_MAX``) so that the write built on a
   context can always be encoded (a counter + 1 still fits msgpack's uint64).
3. A context names its key: ``decode`` with another (db, key) raises ``ContextError``, so a
   context cannot supersede the versions of a key it was not read from.
4. A context is not authenticated. Forging one gives no more power than a plain SET, which
   supersedes every version its coordinator read: a forged context can only make the new
   version supersede versions it names (and raise the new version's timestamp).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import zlib
from collections.abc import Iterable
from typing import Any, Final

import msgpack

from cluster.errors import ClusterError
from cluster.vclock import VClock
from cluster.version import Siblings, Version

FORMAT_VERSION: Final = 1  # bump on any change of layout; decoders reject unknown versions
KEY_TAG_BYTES: Final = 8
VERSIONS_MAX: Final = 4096  # as sibling_codec.SIBLINGS_MAX: more than any stored set
CLOCK_ENTRIES_MAX: Final = 4096  # as sibling_codec.CLOCK_ENTRIES_MAX
ACTOR_BYTES_MAX: Final = 255
COUNTER_MAX: Final = (1 << 63) - 1  # invariant 2: counter + 1 still fits a uint64
TIMESTAMP_MS_MAX: Final = (1 << 63) - 1  # Redis's signed 64-bit range
CONTEXT_CHARS_MAX: Final = 4 * 1024 * 1024  # longer text is refused before decoding
_HEADER: Final = struct.Struct(">B8s")  # format version, key tag
_TRAILER: Final = struct.Struct(">I")  # CRC-32 (zlib) of header and body
_TAG_PERSON: Final = b"respkv-vctx"  # blake2b personalization: tags are for this use only

# Placeholders of the fields a context does not carry (module docstring).
_NO_EXPIRY: Final = 0
_NO_WRITER: Final = b""


class ContextError(ClusterError):
    """A context that is not one, or not this key's; the text is the client's error."""


def key_tag(db: int, key: bytes) -> bytes:
    """The 8 bytes that bind a context to (db, key) (invariant 3)."""
    digest = hashlib.blake2b(bytes((db,)) + key, digest_size=KEY_TAG_BYTES,
                             person=_TAG_PERSON)
    return digest.digest()


def encode(siblings: Iterable[Version], db: int, key: bytes) -> bytes:
    """The context naming ``siblings`` of (db, key), as ASCII (urlsafe base64, no padding).

    REQUIRES: 0 <= db < 256 and every version valid (as stored: counters >= 1).
    """
    flat: list[Any] = []
    ordered = sorted((v[1], tuple(sorted(v[0].items()))) for v in siblings)
    assert len(ordered) <= VERSIONS_MAX, len(ordered)
    for timestamp_ms, entries in ordered:
        flat += (timestamp_ms, len(entries))
        for actor, (counter, stamp) in entries:
            flat += (actor, counter, stamp)
    body = msgpack.packb(flat, use_bin_type=True)
    head = _HEADER.pack(FORMAT_VERSION, key_tag(db, key)) + body
    raw = head + _TRAILER.pack(zlib.crc32(head))
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def decode(text: bytes, db: int, key: bytes) -> Siblings:
    """The versions a context of (db, key) names; ContextError if it is not one (inv. 2, 3)."""
    if len(text) > CONTEXT_CHARS_MAX:
        raise ContextError(f"invalid context: longer than {CONTEXT_CHARS_MAX} characters")
    if not text or not all(c in _ALPHABET for c in text):
        raise ContextError("invalid context: not urlsafe base64 text (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ContextError("invalid context: not urlsafe base64 text") from None
    if len(raw) < _HEADER.size + 1 + _TRAILER.size:
        raise ContextError("invalid context: truncated")
    version, tag = _HEADER.unpack_from(raw)
    if version != FORMAT_VERSION:
        raise ContextError(f"invalid context: unknown format version {version}")
    (crc,) = _TRAILER.unpack_from(raw, len(raw) - _TRAILER.size)
    if zlib.crc32(raw[:-_TRAILER.size]) != crc:
        raise ContextError("invalid context: checksum mismatch (damaged or truncated)")
    if tag != key_tag(db, key):
        raise ContextError("invalid context: it was read from another key (or database)")
    try:
        flat = msgpack.unpackb(raw[_HEADER.size:-_TRAILER.size], use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ContextError(f"invalid context: bad body ({type(exc).__name__})") from None
    if type(flat) is not tuple:
        raise ContextError("invalid context: body is not an array")
    return _versions(flat)


_ALPHABET: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _versions(flat: tuple[Any, ...]) -> Siblings:
    out: list[Version] = []
    i, end = 0, len(flat)
    while i < end:
        if len(out) == VERSIONS_MAX:
            raise ContextError(f"invalid context: more than {VERSIONS_MAX} versions")
        if end - i < 2:
            raise ContextError("invalid context: truncated version")
        timestamp_ms, n = flat[i], flat[i + 1]
        i += 2
        if not _uint(timestamp_ms, TIMESTAMP_MS_MAX):
            raise ContextError("invalid context: timestamp is not an integer 0..2^63-1")
        if type(n) is not int or not 1 <= n <= CLOCK_ENTRIES_MAX:
            raise ContextError(f"invalid context: clock length not in 1..{CLOCK_ENTRIES_MAX}")
        if end - i < 3 * n:
            raise ContextError("invalid context: truncated clock")
        clock: VClock = {}
        previous = b""
        for j in range(i, i + 3 * n, 3):
            actor, counter, stamp = flat[j], flat[j + 1], flat[j + 2]
            if type(actor) is not bytes or not 0 < len(actor) <= ACTOR_BYTES_MAX:
                raise ContextError(f"invalid context: actor is not 1..{ACTOR_BYTES_MAX} bytes")
            if actor <= previous:
                raise ContextError("invalid context: clock actors are not strictly ascending")
            if not _uint(counter, COUNTER_MAX) or counter < 1:
                raise ContextError("invalid context: counter is not an integer 1..2^63-1")
            if not _uint(stamp, TIMESTAMP_MS_MAX):
                raise ContextError("invalid context: stamp is not an integer 0..2^63-1")
            clock[actor] = (counter, stamp)
            previous = actor
        i += 3 * n
        out.append((clock, timestamp_ms, _NO_EXPIRY, _NO_WRITER, None))
    return tuple(out)


def _uint(value: object, largest: int) -> bool:
    return type(value) is int and 0 <= value <= largest
