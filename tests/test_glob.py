"""respkv.glob against redis-server's stringmatchlen: quirks, a reference model, a live server.

The reference model below is a line-by-line reading of redis-server 7.0's recursive
stringmatchlen_impl (pointer walk, skipLongerMatches cut-off, nesting guard), written naively
on purpose: respkv's compiled matcher must agree with it on every input hypothesis finds, and
both must agree with a live redis-server's KEYS.
"""

from __future__ import annotations

import random
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from respkv.glob import Pattern, compile_pattern, stringmatch
from tests.servers import RawConnection

# --- reference model ------------------------------------------------------------------------


def _c_char(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def _tolower(value: int) -> int:
    return value + 32 if 65 <= value <= 90 else value


def reference_match(pattern: bytes, subject: bytes, nocase: bool = False) -> bool:
    skip = [False]
    pat = pattern + b"\0"  # sds strings are NUL-terminated; the C code reads that byte

    def impl(p: int, plen: int, s: int, slen: int, nesting: int) -> bool:
        if nesting > 1000:
            return False
        while plen and slen:
            c = pat[p]
            if c == ord("*"):
                while plen and pat[p + 1] == ord("*"):
                    p += 1
                    plen -= 1
                if plen == 1:
                    return True
                while slen:
                    if impl(p + 1, plen - 1, s, slen, nesting + 1):
                        return True
                    if skip[0]:
                        return False
                    s += 1
                    slen -= 1
                skip[0] = True
                return False
            elif c == ord("?"):
                s += 1
                slen -= 1
            elif c == ord("["):
                p += 1
                plen -= 1
                negate = pat[p] == ord("^")
                if negate:
                    p += 1
                    plen -= 1
                matched = False
                while True:
                    if pat[p] == ord("\\") and plen >= 2:
                        p += 1
                        plen -= 1
                        if pat[p] == subject[s]:
                            matched = True
                    elif pat[p] == ord("]"):
                        break
                    elif plen == 0:
                        p -= 1
                        plen += 1
                        break
                    elif plen >= 3 and pat[p + 1] == ord("-"):
                        start, end, ch = _c_char(pat[p]), _c_char(pat[p + 2]), _c_char(subject[s])
                        if start > end:
                            start, end = end, start
                        if nocase:
                            start, end, ch = _tolower(start), _tolower(end), _tolower(ch)
                        p += 2
                        plen -= 2
                        if start <= ch <= end:
                            matched = True
                    elif nocase:
                        if _tolower(pat[p]) == _tolower(subject[s]):
                            matched = True
                    elif pat[p] == subject[s]:
                        matched = True
                    p += 1
                    plen -= 1
                if negate:
                    matched = not matched
                if not matched:
                    return False
                s += 1
                slen -= 1
            else:
                if c == ord("\\") and plen >= 2:
                    p += 1
                    plen -= 1
                a, b = pat[p], subject[s]
                if (_tolower(a) != _tolower(b)) if nocase else (a != b):
                    return False
                s += 1
                slen -= 1
            p += 1
            plen -= 1
            if slen == 0:
                while pat[p] == ord("*"):
                    p += 1
                    plen -= 1
                break
        return plen == 0 and slen == 0

    return impl(0, len(pattern), 0, len(subject), 0)


# --- quirks, each checked against redis-server 7.0.15 by hand and by test_live_keys ----------

QUIRKS = [
    (b"*", b"", False),
    (b"**", b"", False),
    (b"", b"", True),
    (b"", b"a", False),
    (b"*", b"anything", True),
    (b"h?llo", b"hello", True),
    (b"h?llo", b"hllo", False),
    (b"h*llo", b"heeeello", True),
    (b"h[ae]llo", b"hallo", True),
    (b"h[ae]llo", b"hillo", False),
    (b"h[^e]llo", b"hallo", True),
    (b"h[^e]llo", b"hello", False),
    (b"h[a-b]llo", b"hbllo", True),
    (b"h[b-a]llo", b"hbllo", True),  # reversed range
    (b"[a-\xff]", b"\x05", True),  # signed chars: the range is -1..97
    (b"[a-\xff]", b"b", False),
    (b"[a-\xff]", b"\x80", False),
    (b"[\x80-\x90]", b"\x80", True),
    (b"[a-]", b"]", True),  # the range ']'..'a'
    (b"[a-]", b"-", False),
    (b"[^", b"x", True),
    (b"[", b"[", False),
    (b"[]", b"]", False),
    (b"[]]", b"]]", False),
    (b"[\\", b"\\", True),
    (b"\\", b"\\", True),
    (b"[\\]", b"]", True),
    (b"[\\a-b]", b"-", True),
    (b"\\*", b"*", True),
    (b"\\*", b"x", False),
    (b"\\?", b"?", True),
    (b"a\\", b"a\\", True),
    (b"*\x00*", b"a\x00b", True),
    (b"a*b*c", b"abbbc", True),
    (b"a*b*c", b"acb", False),
    (b"*a", b"ba", True),
    (b"*a", b"ab", False),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), QUIRKS)
def test_redis_quirks(pattern: bytes, subject: bytes, expected: bool) -> None:
    assert stringmatch(pattern, subject) is expected
    assert reference_match(pattern, subject) is expected


NOCASE = [
    (b"HELLO", b"hello", True),
    (b"h[A-Z]llo", b"hello", True),
    (b"[Z-a]", b"z", False),  # ends folded after the swap: 'z'..'a' is empty
    (b"[Z-a]", b"_", False),
    (b"[\\A]", b"a", False),  # an escape inside a class stays case-sensitive
    (b"[\\A]", b"A", True),
    (b"[a]", b"A", True),
    (b"\\A", b"a", True),
    (b"\xc3", b"\xe3", False),  # only A-Z fold
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), NOCASE)
def test_nocase(pattern: bytes, subject: bytes, expected: bool) -> None:
    assert stringmatch(pattern, subject, nocase=True) is expected
    assert reference_match(pattern, subject, nocase=True) is expected


def test_case_sensitive_by_default() -> None:
    assert not stringmatch(b"HELLO", b"hello")
    assert stringmatch(b"HELLO", b"hello", nocase=True)


# --- the model ------------------------------------------------------------------------------

PATTERN_BYTES = st.sampled_from(list(b"ab*?[]^-\\A\x80\xff\x00"))
SUBJECT_BYTES = st.sampled_from(list(b"abAB-]^\\*?[\x80\xff\x00"))


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(PATTERN_BYTES, max_size=12).map(bytes),
    st.lists(SUBJECT_BYTES, max_size=10).map(bytes),
    st.booleans(),
)
def test_agrees_with_reference(pattern: bytes, subject: bytes, nocase: bool) -> None:
    assert Pattern(pattern, nocase).match(subject) == reference_match(pattern, subject, nocase)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"b", b"*", b"?", b"[ab]"]), max_size=14), st.data())
def test_agrees_with_reference_on_star_runs(parts: list[bytes], data: st.DataObject) -> None:
    pattern = b"".join(parts)
    subject = data.draw(st.text(alphabet="ab", max_size=16)).encode()
    assert stringmatch(pattern, subject) == reference_match(pattern, subject)


# --- cost and limits ------------------------------------------------------------------------


def test_pathological_pattern_is_fast() -> None:
    subject = b"a" * 20_000
    started = time.monotonic()
    for pattern in (b"a*a*a*a*a*a*a*b", b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", b"*?*?*?*?*?*?*b"):
        assert not stringmatch(pattern, subject)
    assert stringmatch(b"*?" * 500 + b"a", subject)
    assert time.monotonic() - started < 2.0


def test_star_nesting_limit() -> None:
    subject = b"a" * 1100
    assert stringmatch(b"*a" * 1000, subject)
    assert not stringmatch(b"*a" * 1001, subject)
    # A trailing run of stars never recurses, so it does not count against the limit.
    assert stringmatch(b"?*" * 1001, subject)
    assert not stringmatch(b"*" + b"a*" * 1001, subject)
    assert stringmatch(b"*" + b"a*" * 1000, subject)


def test_star_nesting_limit_agrees_with_reference() -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        for pattern in (b"*a" * 1000, b"*a" * 1001, b"?*" * 1001, b"*" + b"a*" * 1001):
            assert stringmatch(pattern, b"a" * 1050) == reference_match(pattern, b"a" * 1050)
    finally:
        sys.setrecursionlimit(limit)


def test_compiled_patterns_are_cached() -> None:
    assert compile_pattern(b"user:*") is compile_pattern(b"user:*")
    assert compile_pattern(b"user:*") is not compile_pattern(b"user:*", True)


def test_binary_subjects() -> None:
    assert stringmatch(b"\x00*\xff", b"\x00\r\n\xff")
    assert stringmatch(b"?", b"\n")
    assert not stringmatch(b"?", b"\r\n")


# --- a live redis-server --------------------------------------------------------------------

LIVE_KEYS = [
    b"a", b"b", b"A", b"ab", b"ba", b"aab", b"abab", b"-", b"]", b"^", b"\\", b"*", b"?",
    b"[", b"\x80", b"\xff", b"\x00", b"a\x00b", b"user:1", b"user:10", b"User:2", b"a-b",
    b"a]b", b"zz", b"aaaa", b"abba", b"\x05", b"_",
]


def _random_pattern(rng: random.Random) -> bytes:
    atoms = [b"a", b"b", b"A", b"*", b"?", b"[", b"]", b"^", b"-", b"\\", b"\x80", b"\xff",
             b"[ab]", b"[^a]", b"[a-b]", b"[b-a]", b"\\*", b"user:", b"\x00"]
    return b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 6)))


def test_live_keys(redis_port: int) -> None:
    """Our matcher selects exactly the keys redis-server's KEYS selects, for many patterns."""
    rng = random.Random(7)
    patterns = [pattern for pattern, _s, _e in QUIRKS + NOCASE]
    patterns += [_random_pattern(rng) for _ in range(600)]
    with RawConnection(redis_port) as conn:
        conn.pipeline([("SET", key, b"1") for key in LIVE_KEYS])
        replies = conn.pipeline([("KEYS", pattern) for pattern in patterns])
    for pattern, reply in zip(patterns, replies, strict=True):
        theirs = _parse_keys(reply)
        if pattern == b"*":
            continue  # KEYS special-cases the lone star; the glob is not consulted
        ours = {key for key in LIVE_KEYS if stringmatch(pattern, key)}
        assert ours == theirs, pattern


def _parse_keys(reply: bytes) -> set[bytes]:
    assert reply.startswith(b"*"), reply
    header, _, rest = reply.partition(b"\r\n")
    keys = set()
    for _ in range(int(header[1:])):
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line[1:])
        keys.add(rest[:size])
        rest = rest[size + 2 :]
    return keys
