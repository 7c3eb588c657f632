"""Peer frames <-> bytes, sans-IO (docs/formats/peer-protocol.md). No sockets, no asyncio.

A frame is ``length:u32 | type:u8 | request_id:u32 | body`` (big-endian), where ``length``
counts the bytes after itself and ``body`` is one msgpack array holding the message's fields
(``cluster/messages.py``). ``encode`` turns a message into a frame; ``FrameDecoder`` turns a
byte stream into frames: ``feed(data)``, then ``next()`` until it returns ``NEED_DATA``.

Invariants:
1. ``decode(encode(m)) == m`` for every valid message, whatever the chunking of the stream.
2. The decoder is a trust boundary: every malformed input raises ``WireError`` (never any
   other exception), naming what was wrong. Once it has raised, the stream is unusable: every
   later ``next()`` raises the same error, and the connection must be closed.
3. A frame longer than ``frame_bytes_max`` (the whole frame, prefix included) is an error as
   soon as its length prefix is read; the decoder never buffers more than one frame's worth
   of a frame it will accept. ``encode`` refuses to build such a frame (``FrameTooLarge``),
   so a sender learns of the limit before the peer closes the connection.
4. Reading is linear: each byte is examined a bounded number of times however it is chunked.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

import msgpack

from cluster.errors import ClusterError
from cluster.messages import CLASS_OF, SCHEMA, TYPE_OF, ErrorCode, Message, fields_of

HEADER: Final = struct.Struct(">IBI")  # length, type, request_id
HEADER_BYTES: Final = HEADER.size  # 9
LENGTH_BYTES: Final = 4
REQUEST_ID_MAX: Final = 0xFFFF_FFFF  # 0 is reserved for frames that answer no request
# Large enough for one value at Redis's proto-max-bulk-len (512 MiB) plus its sibling-set and
# frame overhead. The connection lowers it to HANDSHAKE_FRAME_BYTES_MAX until authenticated.
FRAME_BYTES_MAX_DEFAULT: Final = 512 * 1024 * 1024 + 1024 * 1024
HANDSHAKE_FRAME_BYTES_MAX: Final = 1024  # an unauthenticated peer cannot make us buffer more
_COMPACT_BYTES: Final = 64 * 1024  # drop consumed bytes from the buffer past this offset

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_unpackb = msgpack.unpackb
_header_pack = HEADER.pack
_header_unpack_from = HEADER.unpack_from


class WireError(ClusterError):
    """The byte stream is not a valid peer-protocol stream; the connection must close."""

    code = ErrorCode.PROTOCOL


class FrameTooLarge(WireError):
    """A frame (being encoded or decoded) is over ``frame_bytes_max``."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


class Frame(NamedTuple):
    request_id: int
    message: Message


def encode(request_id: int, message: Message,
           frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> bytes:
    """The frame of ``message``. REQUIRES: 0 <= request_id <= REQUEST_ID_MAX and ``message``
    valid for its SCHEMA. Raises FrameTooLarge when the frame would exceed the limit."""
    assert 0 <= request_id <= REQUEST_ID_MAX, request_id
    body = _pack(fields_of(message))
    frame_bytes = HEADER_BYTES + len(body)
    if frame_bytes > frame_bytes_max:
        raise FrameTooLarge(f"frame of {frame_bytes} bytes is over frame_bytes_max "
                            f"{frame_bytes_max}")
    return _header_pack(frame_bytes - LENGTH_BYTES, TYPE_OF[type(message)], request_id) + body


# Per tag: (type, class, field checks, field names), looked up by the raw tag byte: every
# frame goes through decode_body, and ``MsgType(tag)`` plus a zip over the schema cost more
# than the msgpack decoding of a small READ.
_DECODERS: Final = {
    int(msg_type): (msg_type, CLASS_OF[msg_type], tuple(check for _, check in schema),
                    tuple(name for name, _ in schema))
    for msg_type, schema in SCHEMA.items()
}


def decode_body(tag: int, body: bytes | bytearray) -> Message:
    """The message of type ``tag`` whose msgpack body is ``body``; raises WireError."""
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise WireError(f"unknown message type {tag}")
    msg_type, cls, checks, names = decoder
    try:
        raw = _unpackb(body, use_list=False, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"{msg_type.name}: body is not valid msgpack "
                        f"({type(exc).__name__})") from None
    if type(raw) is not tuple:
        raise WireError(f"{msg_type.name}: body is not a msgpack array")
    if len(raw) != len(checks):
        raise WireError(f"{msg_type.name}: body has {len(raw)} fields, expected {len(checks)}")
    for i, check in enumerate(checks):
        if not check(raw[i]):
            raise WireError(f"{msg_type.name}: invalid field {names[i]}")
    message: Message = cls(*raw)
    return message


class FrameDecoder:
    """Splits a byte stream into frames. Not thread-safe; one per connection direction."""

    __slots__ = ("_buffer", "_error", "_pos", "frame_bytes_max")

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        assert frame_bytes_max >= HEADER_BYTES
        self.frame_bytes_max = frame_bytes_max  # may be changed between frames
        self._buffer = bytearray()
        self._pos = 0  # first unconsumed byte of _buffer
        self._error: WireError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet returned as frames."""
        return len(self._buffer) - self._pos

    def next(self) -> Frame | _NeedData:
        """The next whole frame, NEED_DATA, or WireError (invariant 2)."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except WireError as exc:
            self._error = exc
            raise

    def _next(self) -> Frame | _NeedData:
        buffer = self._buffer
        pos = self._pos
        available = len(buffer) - pos
        if available < HEADER_BYTES:
            if available >= LENGTH_BYTES:
                self._check_length(int.from_bytes(buffer[pos:pos + LENGTH_BYTES], "big"))
            return self._compact()
        length, tag, request_id = _header_unpack_from(buffer, pos)
        self._check_length(length)
        end = pos + LENGTH_BYTES + length
        if end > len(buffer):
            return self._compact()
        # A copy, not a memoryview: a view kept alive by an exception's traceback would pin
        # the buffer and make the next feed() raise BufferError.
        message = decode_body(tag, buffer[pos + HEADER_BYTES:end])
        self._pos = end
        if end == len(buffer):
            buffer.clear()
            self._pos = 0
        return Frame(request_id, message)

    def _check_length(self, length: int) -> None:
        if length < HEADER_BYTES - LENGTH_BYTES:
            raise WireError(f"frame length {length} is shorter than a frame header")
        if length + LENGTH_BYTES > self.frame_bytes_max:
            raise FrameTooLarge(f"frame of {length + LENGTH_BYTES} bytes is over "
                                f"frame_bytes_max {self.frame_bytes_max}")

    def _compact(self) -> _NeedData:
        if self._pos > _COMPACT_BYTES:
            del self._buffer[:self._pos]
            self._pos = 0
        return NEED_DATA


def decode_all(data: bytes, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> list[Frame]:
    """Every frame of ``data``, which must end on a frame boundary; raises WireError."""
    decoder = FrameDecoder(frame_bytes_max)
    decoder.feed(data)
    frames: list[Frame] = []
    while True:
        frame = decoder.next()
        if isinstance(frame, _NeedData):
            break
        frames.append(frame)
    if decoder.buffered_bytes:
        raise WireError(f"{decoder.buffered_bytes} bytes of an incomplete frame at the end")
    return frames
