"""Engine key layout: where a (db, key) pair lives in the node's ordered engine.

Layout (big-endian, so byte order == numeric order)::

    engine_key := db (1 byte) | token (8 bytes, big-endian uint64) | key (the user's bytes)

Invariants:
1. ``token(key)`` is the first 64-bit word of MurmurHash3 x64/128 of the key bytes alone
   (seed 0), read as an unsigned little-endian integer: the key's position on the ring.
   It never depends on the db, so a ring token range is the same range in every db.
2. All keys of one db are the contiguous engine range ``[db_start(db), db_end(db))``, so
   SCAN, FLUSHDB and RANDOMKEY of one db are range operations.
3. Within a db, keys are ordered by token then by key bytes, so the ring range
   ``[t0, t1)`` of one db is the single engine range ``[token_start(db, t0),
   token_start(db, t1))``.
4. ``split(engine_key(db, key)) == (db, token(key), key)``.
5. db bytes ``DATABASES_MAX`` .. 255 are reserved for the cluster's own namespaces (hints,
   ring state) and never hold user keys.

Do not change the hash or the byte order: both are on disk (every engine key) and, once the
ring exists, on the wire.
"""

from __future__ import annotations

import mmh3

TOKEN_BYTES = 8
PREFIX_BYTES = 1 + TOKEN_BYTES
TOKEN_MAX = (1 << 64) - 1
DATABASES_MAX = 240  # db bytes 240..255 are reserved for internal namespaces

hash_bytes = _hash_bytes = mmh3.hash_bytes  # 16-byte MurmurHash3 x64/128 digest, seed 0
_DB_BYTES = tuple(bytes((db,)) for db in range(256))


def token(key: bytes) -> int:
    """The key's ring token: unsigned 64-bit MurmurHash3 (x64, first word) of ``key``."""
    return int.from_bytes(_hash_bytes(key)[:TOKEN_BYTES], "little")


def token_bytes(key: bytes) -> bytes:
    """``token(key)`` as 8 big-endian bytes (the digest's first word, byte-reversed)."""
    return _hash_bytes(key)[7::-1]


def engine_key(db: int, key: bytes) -> bytes:
    """The engine key of ``key`` in ``db``. REQUIRES: 0 <= db < DATABASES_MAX."""
    return _DB_BYTES[db] + _hash_bytes(key)[7::-1] + key


def split(ekey: bytes) -> tuple[int, int, bytes]:
    """Inverse of ``engine_key``: (db, token, key). REQUIRES: len(ekey) >= PREFIX_BYTES."""
    assert len(ekey) >= PREFIX_BYTES, ekey
    return ekey[0], int.from_bytes(ekey[1:PREFIX_BYTES], "big"), ekey[PREFIX_BYTES:]


def user_key(ekey: bytes) -> bytes:
    """The user's key bytes of an engine key."""
    return ekey[PREFIX_BYTES:]


def token_of(ekey: bytes) -> int:
    """The ring token stored in an engine key."""
    return int.from_bytes(ekey[1:PREFIX_BYTES], "big")


def db_start(db: int) -> bytes:
    """Inclusive lower bound of every engine key of ``db``."""
    return _DB_BYTES[db]


def db_end(db: int) -> bytes:
    """Exclusive upper bound of every engine key of ``db``. REQUIRES: db < 255."""
    return _DB_BYTES[db + 1]


def token_start(db: int, tok: int) -> bytes:
    """Inclusive lower bound of the keys of ``db`` whose token is >= ``tok``."""
    assert 0 <= tok <= TOKEN_MAX, tok
    return _DB_BYTES[db] + tok.to_bytes(TOKEN_BYTES, "big")


def token_range(db: int, start: int, end: int | None) -> tuple[bytes, bytes]:
    """Engine bounds ``[lo, hi)`` of the keys of ``db`` with ``start <= token < end``.

    ``end=None`` means up to the top of the ring (the end of the db).
    """
    lo = token_start(db, start)
    hi = db_end(db) if end is None or end > TOKEN_MAX else token_start(db, end)
    return lo, hi
