"""The messages nodes exchange over the peer protocol (docs/formats/peer-protocol.md).

Every message type is listed once, in ``MsgType``, with the one-byte tag that goes on the
wire; every message is a frozen dataclass whose fields, in declaration order, are its msgpack
body (a flat array). ``SCHEMA`` states what each field may hold; ``cluster/wire.py`` checks
every decoded body against it, so nothing here validates or raises.

Invariants:
1. Tags are never renumbered or reused: a retired type leaves a gap and a comment.
2. A message's body is the tuple of its fields in declaration order (``fields_of``), and
   ``cls(*fields)`` rebuilds it: the dataclass field order *is* the wire layout.
3. ``HELLO`` is the first frame each side sends, and its layout is the same in every protocol
   version (it is decoded before a version has been negotiated).
4. Each request type has exactly one reply type (``REPLY_OF``); any request may instead be
   answered by ``Error``. Handshake messages (``HANDSHAKE``) are valid only before the
   connection is authenticated, requests and replies only after.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from cluster import anti_entropy_messages as ae

# The only version this code speaks; bump on any change of a layout. 2 added COND_WRITE and
# COND_WRITE_REPLY (34, 35); a node of version 1 would close the link on them, so version 1
# is not spoken (docs/formats/peer-protocol.md, "Versions").
PROTOCOL_VERSION = 2
NONCE_BYTES = 32  # AUTH_CHALLENGE nonce
PROOF_BYTES = 32  # AUTH_RESPONSE proof: an HMAC-SHA256
NODE_ID_BYTES_MAX = 64  # node ids are 32 hex chars today (cluster/node_meta.py)
CLUSTER_NAME_BYTES_MAX = 64
ERROR_TEXT_BYTES_MAX = 1024
DB_MAX = 65_535  # a sanity bound; the node checks its own `databases`
TOKEN_MAX = 2**64 - 1
NAME_BYTES_MAX = 255  # host names, datacenter and rack names
TOKENS_MAX = 4096  # tokens of one member (tokens.NODE_TOKENS_MAX)
SCAN_COUNT_MAX = 100_000  # entries one SCAN may ask for
STREAM_LIMIT_MAX = 100_000  # entries one STREAM may ask for (and one STREAM_REPLY may hold)
STREAM_BYTES_MAX = 64 * 1024 * 1024  # the page size one STREAM may ask for
ENGINE_KEY_BYTES_MIN = 9  # a STREAM cursor is an engine key: db byte, 8-byte token, key


class MsgType(enum.IntEnum):
    """One-byte tags. On wire: never renumber; retire instead."""

    HELLO = 1
    AUTH_CHALLENGE = 2
    AUTH_RESPONSE = 3
    AUTH_OK = 4
    PING = 5
    PONG = 6
    READ = 7
    READ_REPLY = 8
    WRITE = 9
    WRITE_ACK = 10
    ERROR = 11
    # 12, 13: MEMBERS / MEMBERS_REPLY, the static membership exchange of issue 4, retired
    # when gossip (30..33) replaced it.
    SCAN = 14
    SCAN_REPLY = 15
    FLUSH = 16
    FLUSH_ACK = 17
    COUNT = 18
    COUNT_REPLY = 19
    STREAM = 20
    STREAM_REPLY = 21
    # anti-entropy (cluster/anti_entropy_messages.py, docs/formats/anti-entropy.md)
    AE_SUMMARY = 22
    AE_SUMMARY_REPLY = 23
    AE_HASHES = 24
    AE_HASHES_REPLY = 25
    AE_KEYS = 26
    AE_KEYS_REPLY = 27
    AE_FETCH = 28
    AE_FETCH_REPLY = 29
    GOSSIP_SYN = 30
    GOSSIP_ACK = 31
    GOSSIP_ACK2 = 32
    GOSSIP_ACK2_OK = 33
    COND_WRITE = 34  # protocol version 2
    COND_WRITE_REPLY = 35


class ErrorCode(enum.IntEnum):
    """ERROR frame codes. On wire: never renumber; retire instead."""

    PROTOCOL = 1  # malformed frame or message out of place; the sender closes
    VERSION_MISMATCH = 2  # no protocol version both sides speak
    CLUSTER_MISMATCH = 3  # the peer belongs to another cluster
    AUTH_FAILED = 4  # the proof does not verify (wrong or missing cluster-secret)
    WRONG_NODE = 5  # the node at this address is not the node the initiator expected
    UNSUPPORTED = 6  # a request type this node does not serve
    OVERLOADED = 7  # the request was refused for lack of capacity; safe to retry elsewhere
    INTERNAL = 8  # the handler failed; the text says how
    SHUTTING_DOWN = 9  # the node is stopping


# -- Handshake (unauthenticated) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame of each side: the versions it speaks and who it is."""

    version_min: int
    version_max: int
    node_id: str
    cluster_name: str


@dataclass(frozen=True, slots=True)
class AuthChallenge:
    nonce: bytes  # NONCE_BYTES fresh random bytes


@dataclass(frozen=True, slots=True)
class AuthResponse:
    proof: bytes  # peer_auth.proof(...) over the handshake transcript


@dataclass(frozen=True, slots=True)
class AuthOk:
    """The sender verified the receiver's proof; after both AUTH_OKs the link is up."""


# -- Requests and replies (authenticated) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Read:
    """Read the replica's sibling set of (db, key)."""

    db: int
    key: bytes


@dataclass(frozen=True, slots=True)
class ReadReply:
    siblings: bytes | None  # sibling_codec bytes, or None when the replica has no version


@dataclass(frozen=True, slots=True)
class Write:
    """Merge a sibling set into the replica's (db, key); ``hint_for`` names the intended
    owner when the receiver is a stand-in (sloppy quorum) and must keep a hint."""

    db: int
    key: bytes
    siblings: bytes  # sibling_codec bytes (decoded and validated by the receiver)
    hint_for: str | None = None


@dataclass(frozen=True, slots=True)
class WriteAck:
    pass


@dataclass(frozen=True, slots=True)
class CondWrite:
    """A coordinator's write that also asks for a read's answer (cluster/conditional_write.py):
    merge ``siblings`` into the replica's (db, key) as a WRITE does, and say whether the
    replica held, just before, anything the incoming versions do not descend."""

    db: int
    key: bytes
    siblings: bytes  # sibling_codec bytes (decoded and validated by the receiver)


@dataclass(frozen=True, slots=True)
class CondWriteReply:
    """The versions were merged (an ack, as WRITE_ACK). ``clean``: everything the replica
    held before (its data and any hints it keeps for the key) is descended by an incoming
    version; when not, ``siblings`` is that previous set (sibling_codec bytes), else None."""

    clean: bool
    siblings: bytes | None


@dataclass(frozen=True, slots=True)
class Scan:
    """The receiver's stored entries of ``db`` from ring token ``start`` on, in token order:
    at least ``count`` entries examined (when that many remain), always every entry of the
    last token visited."""

    db: int
    start: int
    count: int


@dataclass(frozen=True, slots=True)
class ScanReply:
    entries: Sequence[Any]  # [key, sibling_codec bytes] pairs, in token order
    stop: int | None  # the last token visited; None: the scan reached the end of the ring


@dataclass(frozen=True, slots=True)
class Flush:
    """Remove every key of ``db`` (None: of every db) from the receiver's storage."""

    db: int | None


@dataclass(frozen=True, slots=True)
class FlushAck:
    pass


@dataclass(frozen=True, slots=True)
class Count:
    """How many keys of ``db`` the receiver stores (its share, not the cluster's)."""

    db: int


@dataclass(frozen=True, slots=True)
class CountReply:
    keys: int


@dataclass(frozen=True, slots=True)
class GossipSyn:
    """A gossip round's first message; ``body`` is ``cluster.gossip.Syn.to_wire()`` (decoded
    and checked by ``Syn.from_wire``, a trust boundary)."""

    body: Sequence[Any]


@dataclass(frozen=True, slots=True)
class GossipAck:
    body: Sequence[Any]  # cluster.gossip.Ack.to_wire()


@dataclass(frozen=True, slots=True)
class GossipAck2:
    body: Sequence[Any]  # cluster.gossip.Ack2.to_wire()


@dataclass(frozen=True, slots=True)
class GossipAck2Ok:
    pass


@dataclass(frozen=True, slots=True)
class Stream:
    """One page of the receiver's stored entries of ``db`` whose token is in
    ``[start_token, end_token]`` (inclusive, ``start_token <= end_token``), tombstones
    included, in engine-key order, strictly after the engine key ``after`` (None: from the
    start): at most ``limit`` entries and ``bytes_max`` bytes of keys and sibling sets, except
    that one entry larger than ``bytes_max`` is sent alone (cluster/stream_source.py)."""

    db: int
    start_token: int
    end_token: int
    after: bytes | None
    limit: int
    bytes_max: int


@dataclass(frozen=True, slots=True)
class StreamReply:
    entries: Sequence[Any]  # [key, sibling_codec bytes] pairs, in engine-key order
    next: bytes | None  # the cursor to send as the next ``after``; None: the range is done


@dataclass(frozen=True, slots=True)
class Error:
    """A request's failure (same request id) or, with request id 0, why the sender closes."""

    code: int  # an ErrorCode; unknown codes from newer peers are kept as ints
    text: str


Message = (
    Hello | AuthChallenge | AuthResponse | AuthOk | Ping | Pong | Read | ReadReply | Write
    | WriteAck | Error | Scan | ScanReply | Flush | FlushAck | Count
    | CountReply | GossipSyn | GossipAck | GossipAck2 | GossipAck2Ok | ae.Summary
    | ae.SummaryReply | ae.Hashes | ae.HashesReply | ae.Keys | ae.KeysReply | ae.Fetch
    | ae.FetchReply | Stream | StreamReply | CondWrite | CondWriteReply
)

TYPE_OF: dict[type[Any], MsgType] = {
    Hello: MsgType.HELLO,
    AuthChallenge: MsgType.AUTH_CHALLENGE,
    AuthResponse: MsgType.AUTH_RESPONSE,
    AuthOk: MsgType.AUTH_OK,
    Ping: MsgType.PING,
    Pong: MsgType.PONG,
    Read: MsgType.READ,
    ReadReply: MsgType.READ_REPLY,
    Write: MsgType.WRITE,
    WriteAck: MsgType.WRITE_ACK,
    Error: MsgType.ERROR,
    Scan: MsgType.SCAN,
    ScanReply: MsgType.SCAN_REPLY,
    Flush: MsgType.FLUSH,
    FlushAck: MsgType.FLUSH_ACK,
    Count: MsgType.COUNT,
    CountReply: MsgType.COUNT_REPLY,
    GossipSyn: MsgType.GOSSIP_SYN,
    GossipAck: MsgType.GOSSIP_ACK,
    GossipAck2: MsgType.GOSSIP_ACK2,
    GossipAck2Ok: MsgType.GOSSIP_ACK2_OK,
    Stream: MsgType.STREAM,
    StreamReply: MsgType.STREAM_REPLY,
    CondWrite: MsgType.COND_WRITE,
    CondWriteReply: MsgType.COND_WRITE_REPLY,
    **{cls: MsgType[name] for name, cls in ae.CLASS_OF_NAME.items()},
}
CLASS_OF: dict[MsgType, type[Any]] = {tag: cls for cls, tag in TYPE_OF.items()}

HANDSHAKE = frozenset({MsgType.HELLO, MsgType.AUTH_CHALLENGE, MsgType.AUTH_RESPONSE,
                       MsgType.AUTH_OK})
REPLY_OF: dict[MsgType, MsgType] = {
    MsgType.PING: MsgType.PONG,
    MsgType.READ: MsgType.READ_REPLY,
    MsgType.WRITE: MsgType.WRITE_ACK,
    MsgType.COND_WRITE: MsgType.COND_WRITE_REPLY,
    MsgType.SCAN: MsgType.SCAN_REPLY,
    MsgType.FLUSH: MsgType.FLUSH_ACK,
    MsgType.COUNT: MsgType.COUNT_REPLY,
    MsgType.GOSSIP_SYN: MsgType.GOSSIP_ACK,
    MsgType.GOSSIP_ACK2: MsgType.GOSSIP_ACK2_OK,
    MsgType.STREAM: MsgType.STREAM_REPLY,
    MsgType.AE_SUMMARY: MsgType.AE_SUMMARY_REPLY,
    MsgType.AE_HASHES: MsgType.AE_HASHES_REPLY,
    MsgType.AE_KEYS: MsgType.AE_KEYS_REPLY,
    MsgType.AE_FETCH: MsgType.AE_FETCH_REPLY,
}
REQUESTS = frozenset(REPLY_OF)
REPLIES = frozenset(REPLY_OF.values()) | {MsgType.ERROR}


# -- Field checks: what each body field may hold -------------------------------------------
# Exact ``type() is`` checks: msgpack decodes true/false to bool, a subclass of int that must
# not pass for a number, and str/bytes must not stand in for each other.

Check = Callable[[Any], bool]


def _uint(bound: int) -> Check:
    return lambda v: type(v) is int and 0 <= v <= bound


def _text(bytes_max: int, *, empty: bool) -> Check:
    def check(v: Any) -> bool:
        return type(v) is str and (empty or v != "") and len(v.encode()) <= bytes_max
    return check


def _exact_bytes(size: int) -> Check:
    return lambda v: type(v) is bytes and len(v) == size


def _is_bytes(v: Any) -> bool:
    return type(v) is bytes


def _is_bool(v: Any) -> bool:
    return type(v) is bool


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


_SEQ = (list, tuple)  # the wire decodes arrays as tuples; senders build lists


def _is_seq(v: Any) -> bool:
    return type(v) in _SEQ


def _list_of(check: Check, items_max: int | None) -> Check:
    def check_list(v: Any) -> bool:
        return (type(v) in _SEQ and (items_max is None or len(v) <= items_max)
                and all(check(item) for item in v))
    return check_list


_NODE_ID = _text(NODE_ID_BYTES_MAX, empty=False)
def _scan_entry(v: Any) -> bool:
    return type(v) in _SEQ and len(v) == 2 and type(v[0]) is bytes and type(v[1]) is bytes


def _engine_key(v: Any) -> bool:
    return type(v) is bytes and len(v) >= ENGINE_KEY_BYTES_MIN


def _positive(bound: int) -> Check:
    return lambda v: type(v) is int and 1 <= v <= bound


SCHEMA: dict[MsgType, tuple[tuple[str, Check], ...]] = {
    MsgType.HELLO: (("version_min", _uint(0xFFFF)), ("version_max", _uint(0xFFFF)),
                    ("node_id", _NODE_ID),
                    ("cluster_name", _text(CLUSTER_NAME_BYTES_MAX, empty=False))),
    MsgType.AUTH_CHALLENGE: (("nonce", _exact_bytes(NONCE_BYTES)),),
    MsgType.AUTH_RESPONSE: (("proof", _exact_bytes(PROOF_BYTES)),),
    MsgType.AUTH_OK: (),
    MsgType.PING: (),
    MsgType.PONG: (),
    MsgType.READ: (("db", _uint(DB_MAX)), ("key", _is_bytes)),
    MsgType.READ_REPLY: (("siblings", _optional(_is_bytes)),),
    MsgType.WRITE: (("db", _uint(DB_MAX)), ("key", _is_bytes), ("siblings", _is_bytes),
                    ("hint_for", _optional(_NODE_ID))),
    MsgType.WRITE_ACK: (),
    MsgType.COND_WRITE: (("db", _uint(DB_MAX)), ("key", _is_bytes), ("siblings", _is_bytes)),
    MsgType.COND_WRITE_REPLY: (("clean", _is_bool), ("siblings", _optional(_is_bytes))),
    MsgType.SCAN: (("db", _uint(DB_MAX)), ("start", _uint(TOKEN_MAX)),
                   ("count", _uint(SCAN_COUNT_MAX))),
    MsgType.SCAN_REPLY: (("entries", _list_of(_scan_entry, None)),
                         ("stop", _optional(_uint(TOKEN_MAX)))),
    MsgType.FLUSH: (("db", _optional(_uint(DB_MAX))),),
    MsgType.FLUSH_ACK: (),
    MsgType.COUNT: (("db", _uint(DB_MAX)),),
    MsgType.COUNT_REPLY: (("keys", _uint(TOKEN_MAX)),),
    MsgType.STREAM: (("db", _uint(DB_MAX)), ("start_token", _uint(TOKEN_MAX)),
                     ("end_token", _uint(TOKEN_MAX)), ("after", _optional(_engine_key)),
                     ("limit", _positive(STREAM_LIMIT_MAX)),
                     ("bytes_max", _positive(STREAM_BYTES_MAX))),
    MsgType.STREAM_REPLY: (("entries", _list_of(_scan_entry, STREAM_LIMIT_MAX)),
                           ("next", _optional(_engine_key))),
    MsgType.GOSSIP_SYN: (("body", _is_seq),),
    MsgType.GOSSIP_ACK: (("body", _is_seq),),
    MsgType.GOSSIP_ACK2: (("body", _is_seq),),
    MsgType.GOSSIP_ACK2_OK: (),
    **{MsgType[name]: fields for name, fields in ae.AE_SCHEMA.items()},
    MsgType.ERROR: (("code", _uint(0xFFFF)), ("text", _text(ERROR_TEXT_BYTES_MAX, empty=True))),
}


def _getter(cls: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    names = [f.name for f in fields(cls)]
    if not names:
        return lambda _msg: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda msg: (one(msg),)
    return attrgetter(*names)


_GETTERS: dict[type[Any], Callable[[Any], tuple[Any, ...]]] = {cls: _getter(cls) for cls in TYPE_OF}


def fields_of(message: Message) -> tuple[Any, ...]:
    """The body fields of ``message`` in wire order (invariant 2)."""
    return _GETTERS[type(message)](message)


def _check_schema_matches_classes() -> None:
    for tag, cls in CLASS_OF.items():
        names = tuple(f.name for f in fields(cls))
        assert names == tuple(name for name, _ in SCHEMA[tag]), f"SCHEMA of {tag.name} is stale"


_check_schema_matches_classes()
