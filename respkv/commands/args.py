"""Argument parsing shared by command handlers, with Redis's exact rules and errors."""

from __future__ import annotations

import math

from respkv import errors
from respkv.replies import CommandError

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def parse_int(arg: bytes, error: str = errors.NOT_INTEGER) -> int:
    """A signed 64-bit integer written as Redis's string2ll accepts it.

    No leading '+', no leading zeros, no spaces, at most 20 characters; '-0' is refused.
    """
    n = len(arg)
    # The common case first (a TTL, an increment, an offset): up to 18 ASCII digits without
    # a leading zero are a non-negative int64 as they stand; two C calls instead of the walk.
    if 1 < n < 19 and arg[0] != 48 and arg.isdigit():
        return int(arg)
    if n == 0 or n > 20:
        raise CommandError(error)
    if n == 1:
        if 48 <= arg[0] <= 57:
            return arg[0] - 48
        raise CommandError(error)
    start = 1 if arg[0] == 45 else 0  # '-'
    first = arg[start] if start < n else 0
    if not (49 <= first <= 57) or not arg[start:].isdigit():
        raise CommandError(error)
    value = int(arg)
    if value < INT64_MIN or value > INT64_MAX:
        raise CommandError(error)
    return value


def parse_float(arg: bytes, error: str = errors.NOT_FLOAT) -> float:
    """A double as Redis's string2ld/strtold accept it: no spaces, no NaN."""
    if not arg or arg[:1].isspace() or arg[-1:].isspace():
        raise CommandError(error)
    try:
        value = float(arg)
    except ValueError:
        raise CommandError(error) from None
    if math.isnan(value):
        raise CommandError(error)
    return value


def upper(arg: bytes) -> bytes:
    return arg.upper()
