"""Reply values and their RESP2/RESP3 encoding (sans-IO).

Command handlers return plain Python values; the connection encodes them for the protocol
version the client negotiated with HELLO. The mapping:

    bytes        -> bulk string                    (RESP2 and RESP3)
    int          -> integer                        (bool is not an int here, see below)
    None         -> null bulk "$-1"                 RESP3: null "_"
    NULL_ARRAY   -> null array "*-1"               RESP3: null "_"
    list, tuple  -> array
    Map          -> flat array of key, value       RESP3: map "%"
    SetReply     -> array                          RESP3: set "~"
    bool         -> integer 1 / 0                  RESP3: boolean "#t" / "#f"
    float        -> bulk string                    RESP3: double ","
    Verbatim     -> bulk string                    RESP3: verbatim "=" with "txt:"
    Status       -> simple string "+"
    ErrorReply   -> error "-" (also raised by handlers as CommandError)
    Raw          -> bytes written as they are (pre-encoded constants such as +OK, and
                    replies EXEC encoded for the protocol their command ran under)

Invariants:
1. encode() never mutates its argument and returns bytes for both protocols.
2. Raw constants are valid in RESP2 and RESP3 alike (only protocol-neutral types are
   pre-encoded); the one protocol-bound Raw is an EXEC element from before a queued HELLO.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class Raw:
    """A reply already encoded, identical in RESP2 and RESP3."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Raw({self.data!r})"


class Status(str):
    """A simple string reply (+...)."""

    __slots__ = ()


class Verbatim(bytes):
    """Text that RESP3 sends as a verbatim string (INFO, CLIENT INFO, CLIENT LIST)."""

    __slots__ = ()


class Map(dict[Any, Any]):
    """A map reply; RESP2 flattens it into an array of alternating keys and values."""

    __slots__ = ()


class SetReply(list[Any]):
    """A set reply; RESP2 sends it as an array."""

    __slots__ = ()


class _NullArray:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NULL_ARRAY"


NULL_ARRAY = _NullArray()


class CommandError(Exception):
    """An error reply. `message` is the whole text after '-', e.g. 'ERR syntax error'."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


ErrorReply = CommandError

OK = Raw(b"+OK\r\n")
QUEUED = Raw(b"+QUEUED\r\n")
PONG = Raw(b"+PONG\r\n")
ZERO = Raw(b":0\r\n")
ONE = Raw(b":1\r\n")
EMPTY_ARRAY = Raw(b"*0\r\n")


def error_bytes(message: str) -> bytes:
    """Encode an error reply; newlines would break framing, so Redis replaces them by spaces."""
    text = message.replace("\r", " ").replace("\n", " ")
    return b"-" + text.encode("utf-8", "surrogateescape") + b"\r\n"


def format_double(value: float) -> bytes:
    """Format a double as Redis 7 does for RESP3 doubles and float replies (%.17g)."""
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    if math.isnan(value):
        return b"nan"
    return (b"%.17g" % value)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def encode(reply: object, resp3: bool) -> bytes:
    """Encode one reply for the client's protocol version."""
    kind = type(reply)
    if kind is bytes:
        return b"$%d\r\n%b\r\n" % (len(reply), reply)  # type: ignore[arg-type]
    if kind is Raw:
        return reply.data  # type: ignore[attr-defined,no-any-return]
    encoder = _ENCODERS.get(kind)
    if encoder is None:
        encoder = _encoder_for_subclass(reply)
    return encoder(reply, resp3)


def _int(reply: Any, resp3: bool) -> bytes:
    return b":%d\r\n" % reply


def _none(reply: Any, resp3: bool) -> bytes:
    return b"_\r\n" if resp3 else b"$-1\r\n"


def _null_array(reply: Any, resp3: bool) -> bytes:
    return b"_\r\n" if resp3 else b"*-1\r\n"


def _array(reply: Any, resp3: bool) -> bytes:
    parts = [b"*%d\r\n" % len(reply)]
    parts.extend(encode(item, resp3) for item in reply)
    return b"".join(parts)


def _set(reply: Any, resp3: bool) -> bytes:
    parts = [(b"~%d\r\n" if resp3 else b"*%d\r\n") % len(reply)]
    parts.extend(encode(item, resp3) for item in reply)
    return b"".join(parts)


def _map(reply: Any, resp3: bool) -> bytes:
    if resp3:
        parts = [b"%%%d\r\n" % len(reply)]
    else:
        parts = [b"*%d\r\n" % (2 * len(reply))]
    for key, value in reply.items():
        parts.append(encode(key, resp3))
        parts.append(encode(value, resp3))
    return b"".join(parts)


def _bool(reply: Any, resp3: bool) -> bytes:
    if resp3:
        return b"#t\r\n" if reply else b"#f\r\n"
    return b":1\r\n" if reply else b":0\r\n"


def _float(reply: Any, resp3: bool) -> bytes:
    text = format_double(reply)
    if resp3:
        return b"," + text + b"\r\n"
    return _bulk(text)


def _verbatim(reply: Any, resp3: bool) -> bytes:
    if resp3:
        return b"=%d\r\ntxt:%b\r\n" % (len(reply) + 4, bytes(reply))
    return _bulk(bytes(reply))


def _status(reply: Any, resp3: bool) -> bytes:
    return b"+" + str(reply).encode("utf-8", "surrogateescape") + b"\r\n"


def _str(reply: Any, resp3: bool) -> bytes:
    return _bulk(reply.encode("utf-8", "surrogateescape"))


def _error(reply: Any, resp3: bool) -> bytes:
    return error_bytes(reply.message)


_ENCODERS: dict[type, Callable[[Any, bool], bytes]] = {
    int: _int,
    type(None): _none,
    _NullArray: _null_array,
    list: _array,
    tuple: _array,
    SetReply: _set,
    Map: _map,
    dict: _map,
    bool: _bool,
    float: _float,
    Verbatim: _verbatim,
    Status: _status,
    str: _str,
    CommandError: _error,
    bytearray: lambda r, _resp3: _bulk(bytes(r)),
    memoryview: lambda r, _resp3: _bulk(bytes(r)),
}


def _encoder_for_subclass(reply: object) -> Callable[[Any, bool], bytes]:
    for kind in type(reply).__mro__:
        encoder = _ENCODERS.get(kind)
        if encoder is not None:
            return encoder
    raise TypeError(f"cannot encode reply of type {type(reply).__name__}")
