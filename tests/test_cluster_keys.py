"""Engine key layout: db-first, token-ordered, and the ring hash fixed."""

from __future__ import annotations

import mmh3
from hypothesis import given
from hypothesis import strategies as st

from cluster import keys

user_keys = st.binary(max_size=40)
dbs = st.integers(0, keys.DATABASES_MAX - 1)


def test_token_is_unsigned_mmh3_x64_first_word() -> None:
    for key in (b"", b"a", b"foo", b"\x00" * 33):
        assert keys.token(key) == mmh3.hash64(key, signed=False)[0]
        assert keys.token_bytes(key) == keys.token(key).to_bytes(8, "big")
    assert keys.token(b"foo") == 0xE271865701F54561  # frozen: tokens are on disk and on the ring


@given(dbs, user_keys)
def test_split_inverts_engine_key(db: int, key: bytes) -> None:
    ekey = keys.engine_key(db, key)
    assert keys.split(ekey) == (db, keys.token(key), key)
    assert keys.user_key(ekey) == key
    assert keys.token_of(ekey) == keys.token(key)
    assert keys.db_start(db) <= ekey < keys.db_end(db)


@given(dbs, user_keys, user_keys)
def test_order_is_token_then_key(db: int, a: bytes, b: bytes) -> None:
    ka, kb = keys.engine_key(db, a), keys.engine_key(db, b)
    assert (ka < kb) == ((keys.token(a), a) < (keys.token(b), b))


@given(dbs, user_keys, st.integers(0, keys.TOKEN_MAX), st.integers(0, keys.TOKEN_MAX + 1))
def test_token_range_bounds(db: int, key: bytes, start: int, end: int) -> None:
    lo, hi = keys.token_range(db, start, None if end > keys.TOKEN_MAX else end)
    inside = lo <= keys.engine_key(db, key) < hi
    assert inside == (start <= keys.token(key) < (end if end <= keys.TOKEN_MAX else 1 << 64))


def test_dbs_are_disjoint_ranges() -> None:
    assert keys.db_end(3) == keys.db_start(4)
    assert keys.engine_key(3, b"\xff" * 50) < keys.db_start(4)
