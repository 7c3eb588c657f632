"""Argument parsing shared by the command handlers: Redis's exact integer rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from respkv.commands.args import INT64_MAX, INT64_MIN, parse_int
from respkv.replies import CommandError

# What redis-server's string2ll accepts, spelled out once: an optional '-', then 0 alone or
# a non-zero digit and more digits, at most 20 characters, in the signed 64-bit range.
_STRING2LL = re.compile(rb"-?[1-9][0-9]*|0")


def reference(arg: bytes) -> int | None:
    if len(arg) > 20 or not _STRING2LL.fullmatch(arg):
        return None
    value = int(arg)
    return value if INT64_MIN <= value <= INT64_MAX else None


integer_like = st.one_of(
    st.binary(max_size=22),
    st.text(alphabet="0123456789-+ ", max_size=22).map(str.encode),
    st.integers(INT64_MIN - 10, INT64_MAX + 10).map(lambda n: b"%d" % n),
)


@given(integer_like)
def test_parse_int_accepts_exactly_what_redis_accepts(arg: bytes) -> None:
    expected = reference(arg)
    if expected is None:
        with pytest.raises(CommandError, match="not an integer"):
            parse_int(arg)
    else:
        assert parse_int(arg) == expected


@pytest.mark.parametrize("arg, value", [
    (b"0", 0), (b"7", 7), (b"3600", 3600), (b"-1", -1), (b"999999999999999999", 10**18 - 1),
    (b"1000000000000000000", 10**18), (b"9223372036854775807", INT64_MAX),
    (b"-9223372036854775808", INT64_MIN),
])
def test_parse_int_values(arg: bytes, value: int) -> None:
    assert parse_int(arg) == value


@pytest.mark.parametrize("arg", [
    b"", b"00", b"01", b"-0", b"+1", b" 1", b"1 ", b"9223372036854775808",
    b"-9223372036854775809", b"\xd9\xa1", b"1.0", b"0x10",
])
def test_parse_int_refusals(arg: bytes) -> None:
    with pytest.raises(CommandError, match="not an integer"):
        parse_int(arg)
