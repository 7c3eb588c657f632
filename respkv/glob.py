"""Redis's glob-style pattern matching (KEYS, SCAN MATCH, CONFIG GET ...), binary safe.

The reference is redis-server 7.0's `stringmatchlen()` (util.c), quirks included, because
clients see its answers:

- `*` any run of bytes, `?` one byte, `[abc]` `[^abc]` `[a-z]` one byte of a class, `\\x` the
  byte x. A range may be written backwards (`[z-a]`); its ends compare as *signed* chars
  (x86 redis-server), so `[a-\\xff]` means -1..97 and does not hold `b` or `\\x80`.
- Inside a class a backslash escapes the next byte, compared case-sensitively even under
  nocase; `[` with no closing `]` runs to the end of the pattern; `[]` and `[` match nothing;
  `[^` (unterminated) matches any byte; `[a-]` is the range `]`..`a`.
- nocase folds only A-Z (the C locale's tolower), after a range's ends are swapped.
- The empty string matches only the empty pattern (even `*` and `**` do not match it: KEYS
  and SCAN special-case the exact pattern `*` themselves).
- A pattern with more than 1000 `*` runs before its last non-`*` token never matches: that is
  where redis-server's recursion guard stops (CVE-2022-36021 era fix).

Theory of operation. A pattern compiles once (cached) into *segments*: the fixed-length
pieces between runs of `*`, each a sequence of byte sets. A subject matches when the first
segment matches at its start, the last at its end, and the middle ones fit in between; placing
each middle segment at its leftmost position is optimal (a later placement only leaves less
room), so the match is one left-to-right pass: O(len(pattern) * len(subject)) at worst, never
exponential (redis-server gets the same bound from its `skipLongerMatches` cut-off). Segments
become small fixed-length `re` patterns (no quantifiers, so no backtracking) or plain
`bytes.find` when they are literal.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["Pattern", "compile_pattern", "stringmatch"]

# redis-server's `if (nesting > 1000) return 0;` in stringmatchlen_impl.
STAR_NESTING_MAX = 1000
PATTERN_CACHE_SIZE = 256

_STAR = -1
_ALL_BYTES = frozenset(range(256))

# A token is _STAR or the frozenset of bytes it accepts at one position.
Token = int | frozenset[int]


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def _lower(value: int) -> int:
    return value + 32 if 65 <= value <= 90 else value


def _literal(byte: int, nocase: bool) -> frozenset[int]:
    if nocase and (65 <= byte <= 90 or 97 <= byte <= 122):
        return frozenset((byte | 32, byte & ~32))
    return frozenset((byte,))


def _class_members(items: list[tuple[str, int, int]], negate: bool, nocase: bool) -> frozenset[int]:
    """The bytes a `[...]` accepts, evaluated the way stringmatchlen tests one subject byte."""
    members = set()
    for byte in range(256):
        matched = False
        for kind, a, b in items:
            if kind == "esc":
                matched = matched or a == byte
            elif kind == "range":
                start, end, c = _signed(a), _signed(b), _signed(byte)
                if start > end:
                    start, end = end, start
                if nocase:
                    start, end, c = _lower(start), _lower(end), _lower(c)
                matched = matched or start <= c <= end
            elif nocase:
                matched = matched or _lower(a) == _lower(byte)
            else:
                matched = matched or a == byte
        if matched != negate:
            members.add(byte)
    return frozenset(members)


def _tokenize(pattern: bytes, nocase: bool) -> list[Token]:
    """Walk the pattern exactly as stringmatchlen's pointer does (past the end reads NUL)."""
    n = len(pattern)

    def at(i: int) -> int:
        return pattern[i] if i < n else 0

    tokens: list[Token] = []
    i = 0
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # '*'
            tokens.append(_STAR)
        elif c == 0x3F:  # '?'
            tokens.append(_ALL_BYTES)
        elif c == 0x5B:  # '['
            i += 1
            negate = at(i) == 0x5E  # '^'
            if negate:
                i += 1
            items: list[tuple[str, int, int]] = []
            while True:
                if at(i) == 0x5C and n - i >= 2:  # '\\' escapes the next byte
                    i += 1
                    items.append(("esc", pattern[i], 0))
                elif at(i) == 0x5D:  # ']'
                    break
                elif i >= n:  # unterminated: the class ends with the pattern
                    i -= 1
                    break
                elif n - i >= 3 and pattern[i + 1] == 0x2D:  # 'a-z'
                    items.append(("range", pattern[i], pattern[i + 2]))
                    i += 2
                else:
                    items.append(("lit", pattern[i], 0))
                i += 1
            tokens.append(_class_members(items, negate, nocase))
        else:
            if c == 0x5C and n - i >= 2:  # '\\' outside a class
                i += 1
                c = pattern[i]
            tokens.append(_literal(c, nocase))
        i += 1
    return tokens


class _Segment:
    """A fixed-length run of byte sets between two `*` runs."""

    __slots__ = ("length", "literal", "regex")

    def __init__(self, sets: list[frozenset[int]]) -> None:
        self.length = len(sets)
        self.literal: bytes | None = None
        self.regex: re.Pattern[bytes] | None = None
        if all(len(s) == 1 for s in sets):
            self.literal = bytes(next(iter(s)) for s in sets)
        else:
            self.regex = re.compile(b"".join(_set_regex(s) for s in sets), re.DOTALL)

    def match_at(self, subject: bytes, pos: int) -> bool:
        """REQUIRES: pos + length <= len(subject)."""
        if self.literal is not None:
            return subject.startswith(self.literal, pos)
        assert self.regex is not None
        return self.regex.match(subject, pos) is not None

    def find(self, subject: bytes, pos: int, endpos: int) -> int:
        """Leftmost start >= pos of a match lying within subject[:endpos], or -1."""
        if self.literal is not None:
            return subject.find(self.literal, pos, endpos)
        assert self.regex is not None
        found = self.regex.search(subject, pos, endpos)
        return -1 if found is None else found.start()


def _set_regex(members: frozenset[int]) -> bytes:
    if len(members) == 256:
        return b"."
    if not members:
        return b"(?!)"
    if len(members) == 1:
        return re.escape(bytes(members))
    return b"[" + b"".join(b"\\x%02x" % byte for byte in sorted(members)) + b"]"


class Pattern:
    """A compiled glob; `match(subject)` is stringmatchlen(pattern, subject, nocase)."""

    __slots__ = ("_empty", "_first", "_last", "_middle", "_never", "_starred", "pattern")

    def __init__(self, pattern: bytes, nocase: bool = False) -> None:
        self.pattern = pattern
        self._empty = not pattern
        tokens = _tokenize(pattern, nocase)
        segments: list[list[frozenset[int]]] = [[]]
        for token in tokens:
            if isinstance(token, int):  # _STAR
                if segments[-1] or len(segments) == 1:
                    segments.append([])
                continue
            segments[-1].append(token)
        # `**` collapses: a star run makes one boundary. A leading run leaves segments[0]
        # empty, a trailing one leaves the last segment empty.
        compiled = [_Segment(s) for s in segments]
        self._starred = len(compiled) > 1
        self._first = compiled[0]
        self._last = compiled[-1]
        self._middle = compiled[1:-1]
        star_runs = len(compiled) - 1
        trailing = 1 if self._starred and not segments[-1] else 0
        self._never = star_runs - trailing > STAR_NESTING_MAX

    def match(self, subject: bytes) -> bool:
        if not subject:
            return self._empty
        if self._never:
            return False
        size = len(subject)
        first = self._first
        if not self._starred:
            return size == first.length and first.match_at(subject, 0)
        last = self._last
        tail = size - last.length
        if tail < first.length:
            return False
        if not first.match_at(subject, 0) or not last.match_at(subject, tail):
            return False
        pos = first.length
        for segment in self._middle:
            found = segment.find(subject, pos, tail)
            if found < 0:
                return False
            pos = found + segment.length
        return True

    __call__ = match

    def __repr__(self) -> str:
        return f"Pattern({self.pattern!r})"


@lru_cache(maxsize=PATTERN_CACHE_SIZE)
def compile_pattern(pattern: bytes, nocase: bool = False) -> Pattern:
    """The compiled form of pattern; recent patterns are cached (SCAN reuses one per call)."""
    return Pattern(pattern, nocase)


def stringmatch(pattern: bytes, subject: bytes, nocase: bool = False) -> bool:
    """Whether subject matches the glob pattern, exactly as redis-server decides."""
    return compile_pattern(pattern, nocase).match(subject)
