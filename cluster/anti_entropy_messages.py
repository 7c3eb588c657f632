"""The anti-entropy messages (docs/formats/anti-entropy.md), not yet on the wire.

Same conventions as ``cluster/messages.py``: each message is a frozen dataclass whose fields,
in declaration order, are its msgpack body (a flat array); ``AE_SCHEMA`` states what each
field may hold, in the form ``messages.SCHEMA`` uses, so wiring them is: add the classes to
``MsgType`` / ``TYPE_OF`` / ``REPLY_OF`` with ``PROPOSED_TAGS`` and merge ``AE_SCHEMA`` into
``SCHEMA``. A range is named by its ring bounds ``(left, right]`` (``ring.TokenRange``).

Invariants:
1. Each request has one reply type (``REPLY_OF``); a reply's ``status`` says whether the
   tree could answer (``Status``); a request the server cannot make sense of is refused with
   ``AntiEntropyError`` (an ``Error`` frame, code PROTOCOL, once wired).
2. Every list is bounded (``*_MAX``), so one message is bounded whatever the range holds
   (values excepted: a ``FETCH_REPLY`` carries up to ``FETCH_KEYS_MAX`` whole sibling sets).
3. ``wire_bytes(m)`` is the size of ``m``'s frame on the wire (header + body): what the
   repair counters report as bytes exchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import msgpack

from cluster.errors import ClusterError
from cluster.merkle import DEPTH_MAX, HASH_BYTES

TOKEN_MAX = 2**64 - 1
DB_MAX = 65_535
LEVEL_MAX = DEPTH_MAX  # no tree is deeper
INDICES_MAX = 4096  # node indices one TREE_HASHES / KEY_HASHES asks for
TREES_MAX = 256  # trees one SUMMARY_REPLY lists (one per db: keys.DATABASES_MAX < 256)
KEYS_PER_REPLY_MAX = 4096  # (key, hash) pairs one KEY_HASHES_REPLY holds
KEY_BYTES_MAX = 512 * 1024 * 1024  # Redis's proto-max-bulk-len
FETCH_KEYS_MAX = 256  # keys one FETCH asks for
FRAME_HEADER_BYTES = 9  # cluster/wire.py: length u32, type u8, request id u32

# Proposed one-byte tags (messages.MsgType reserves 22..29 for anti-entropy).
PROPOSED_TAGS = {"AE_SUMMARY": 22, "AE_SUMMARY_REPLY": 23, "AE_HASHES": 24,
                 "AE_HASHES_REPLY": 25, "AE_KEYS": 26, "AE_KEYS_REPLY": 27, "AE_FETCH": 28,
                 "AE_FETCH_REPLY": 29}


class Status(enum.IntEnum):
    """A reply's ``status``. On wire: never renumber; retire instead."""

    OK = 0
    NOT_READY = 1  # the tree is not built (a build is queued) or changed depth: retry later
    UNKNOWN_RANGE = 2  # the server does not replicate exactly this range (rings differ)


class AntiEntropyError(ClusterError):
    """A malformed request (server side) or reply (session side); the text says what.

    The server's caller answers it with an ERROR frame of code PROTOCOL. (This module does
    not import cluster.messages, so that messages.py may import the classes below.)"""


@dataclass(frozen=True, slots=True)
class Summary:
    """The root of every non-empty tree of the range, one per db."""

    left: int
    right: int


@dataclass(frozen=True, slots=True)
class SummaryReply:
    status: int
    trees: Sequence[Any]  # [db, depth, entries, root (HASH_BYTES)] per db with keys, db order


@dataclass(frozen=True, slots=True)
class Hashes:
    """The hashes of nodes ``indices`` (ascending) at ``level`` of the (db, range) tree."""

    left: int
    right: int
    db: int
    level: int
    indices: Sequence[int]


@dataclass(frozen=True, slots=True)
class HashesReply:
    status: int
    hashes: bytes  # HASH_BYTES per index, in request order; an absent tree hashes zeros


@dataclass(frozen=True, slots=True)
class Keys:
    """(key, entry hash) of the stored keys under nodes ``indices`` (ascending) at ``level``,
    node by node; within ``indices[0]``, only keys after ``after`` (token 8 bytes + key)."""

    left: int
    right: int
    db: int
    level: int
    indices: Sequence[int]
    after: bytes | None


@dataclass(frozen=True, slots=True)
class KeysReply:
    status: int
    entries: Sequence[Any]  # [key, entry hash] pairs, in node order then engine order
    stopped_at: int | None  # the node the reply stopped in (more may follow); None: all done


@dataclass(frozen=True, slots=True)
class Fetch:
    """The stored sibling sets of ``keys`` of ``db``."""

    db: int
    keys: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class FetchReply:
    siblings: Sequence[bytes | None]  # sibling_codec bytes per key (None: not stored), in order


Request = Summary | Hashes | Keys | Fetch
Reply = SummaryReply | HashesReply | KeysReply | FetchReply
REPLY_OF: dict[type[Any], type[Any]] = {Summary: SummaryReply, Hashes: HashesReply,
                                        Keys: KeysReply, Fetch: FetchReply}

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def wire_bytes(message: Request | Reply) -> int:
    """The frame size of ``message`` (invariant 3)."""
    return FRAME_HEADER_BYTES + len(_pack([getattr(message, f.name) for f in fields(message)]))


# -- Field checks (the form of messages.SCHEMA; exact ``type() is`` checks) ----------------

Check = Callable[[Any], bool]
_SEQ = (list, tuple)


def _uint(bound: int) -> Check:
    return lambda v: type(v) is int and 0 <= v <= bound


def _bin(size_max: int) -> Check:
    return lambda v: type(v) is bytes and len(v) <= size_max


def _list_of(check: Check, items_max: int) -> Check:
    return lambda v: type(v) in _SEQ and len(v) <= items_max and all(check(i) for i in v)


def _tree(v: Any) -> bool:
    return (type(v) in _SEQ and len(v) == 4 and _uint(DB_MAX)(v[0])
            and _uint(LEVEL_MAX)(v[1]) and _uint(TOKEN_MAX)(v[2])
            and type(v[3]) is bytes and len(v[3]) == HASH_BYTES)


def _key_entry(v: Any) -> bool:
    return (type(v) in _SEQ and len(v) == 2 and type(v[0]) is bytes
            and type(v[1]) is bytes and len(v[1]) == HASH_BYTES)


_TOKEN = _uint(TOKEN_MAX)
_STATUS = _uint(0xFF)
_INDICES = _list_of(_uint(2**LEVEL_MAX - 1), INDICES_MAX)

AE_SCHEMA: dict[str, tuple[tuple[str, Check], ...]] = {
    "AE_SUMMARY": (("left", _TOKEN), ("right", _TOKEN)),
    "AE_SUMMARY_REPLY": (("status", _STATUS), ("trees", _list_of(_tree, TREES_MAX))),
    "AE_HASHES": (("left", _TOKEN), ("right", _TOKEN), ("db", _uint(DB_MAX)),
                  ("level", _uint(LEVEL_MAX)), ("indices", _INDICES)),
    "AE_HASHES_REPLY": (("status", _STATUS),
                        ("hashes", _bin(HASH_BYTES * INDICES_MAX))),
    "AE_KEYS": (("left", _TOKEN), ("right", _TOKEN), ("db", _uint(DB_MAX)),
                ("level", _uint(LEVEL_MAX)), ("indices", _INDICES),
                ("after", lambda v: v is None or _bin(KEY_BYTES_MAX + 8)(v))),
    "AE_KEYS_REPLY": (("status", _STATUS),
                      ("entries", _list_of(_key_entry, KEYS_PER_REPLY_MAX)),
                      ("stopped_at", lambda v: v is None or _uint(2**LEVEL_MAX - 1)(v))),
    "AE_FETCH": (("db", _uint(DB_MAX)), ("keys", _list_of(_bin(KEY_BYTES_MAX), FETCH_KEYS_MAX))),
    "AE_FETCH_REPLY": (("siblings", _list_of(lambda v: v is None or type(v) is bytes,
                                             FETCH_KEYS_MAX)),),
}
CLASS_OF_NAME: dict[str, type[Any]] = {
    "AE_SUMMARY": Summary, "AE_SUMMARY_REPLY": SummaryReply, "AE_HASHES": Hashes,
    "AE_HASHES_REPLY": HashesReply, "AE_KEYS": Keys, "AE_KEYS_REPLY": KeysReply,
    "AE_FETCH": Fetch, "AE_FETCH_REPLY": FetchReply,
}


def check_fields(name: str, values: Sequence[Any]) -> bool:
    """Whether ``values`` is a valid body of message ``name`` under ``AE_SCHEMA``."""
    schema = AE_SCHEMA[name]
    return len(values) == len(schema) and all(
        check(value) for (_, check), value in zip(schema, values, strict=True))
