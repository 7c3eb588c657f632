"""Pure-Python RESP request parser: the authority on what redis-server 7.0 accepts.

Invariants:
1. A command comes out only where redis-server 7.0 would run one on the same bytes, and with the
   same argv. Every rejection raises ProtocolError carrying the exact text Redis writes after
   '-ERR Protocol error: ' (Redis's quirks included: a header line ends at its first '\\r' and the
   byte after it is skipped unread; the two bytes after bulk data are skipped unread; a NUL before
   a line's end hides that end for good, because Redis looks for it with strchr).
2. Limits are checked where Redis checks them. Redis reads at most 16 KiB at a time (inside a
   bulk of 32 KiB or more, exactly the rest of that bulk), checks the query buffer limit after
   each read, then parses, and applies the 64 KiB line limit only to a line still unfinished
   after a read. So each fed chunk is cut into those same reads before it is parsed (Redis's
   real read sizes also depend on what the socket holds; a feed is taken as one socket's worth).
3. Work is linear in the input for any chunking: a bulk waiting for its data is kept as a list of
   parts and joined once; a line is searched for its end once per byte.
4. After a ProtocolError the reader is dead; every later call raises the same error again.

The reader mirrors hiredis.Reader: feed() stores bytes, gets() returns the next command or False
when it needs more. Empty commands (a multibulk count <= 0, a blank inline line) are skipped,
as Redis skips them.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar, Final, Literal

from respkv.splitargs import split_args as split_inline

# Redis 7.0 constants (networking.c / server.h), named with units last.
LINE_BYTES_MAX: Final = 64 * 1024  # PROTO_INLINE_MAX_SIZE: inline line or header line
READ_BYTES: Final = 16 * 1024  # PROTO_IOBUF_LEN: one read(2) of the query buffer
BIG_BULK_BYTES_MIN: Final = 32 * 1024  # PROTO_MBULK_BIG_ARG: reads then fetch exactly the bulk
MULTIBULK_COUNT_MAX: Final = 2**31 - 1  # INT_MAX; Redis rejects larger '*' counts
UNAUTH_MULTIBULK_COUNT_MAX: Final = 10  # before AUTH, when a password is required
UNAUTH_BULK_BYTES_MAX: Final = 16 * 1024
BULK_BYTES_MAX_DEFAULT: Final = 512 * 1024 * 1024  # proto-max-bulk-len
QUERY_BUFFER_BYTES_MAX_DEFAULT: Final = 1024 * 1024 * 1024  # client-query-buffer-limit
NUMBER_CHARS_MAX: Final = 20  # string2ll refuses 21 chars or more (LONG_STR_SIZE)

# While at most this many read bytes are unparsed, a new read is concatenated to them: a bounded
# extra copy per read. Beyond it reads are kept as parts, so a long line or a big bulk that
# arrives in many small reads is not copied again on every read.
_JOIN_BYTES_MAX: Final = 4096

_NONE, _INLINE, _MULTIBULK = 0, 1, 2
_STAR, _DOLLAR = 0x2A, 0x24
_SMALL_NUMBERS: Final = {str(n).encode(): n for n in range(10_000)}
_LLONG_MIN, _LLONG_MAX = -(2**63), 2**63 - 1


class ProtocolError(Exception):
    """The client broke the protocol; the connection must close.

    message: Redis's text after '-ERR Protocol error: ' (bytes as latin-1 characters, so
    message.encode('latin-1') gives Redis's exact bytes, e.g. "expected '$', got '\\xe9'").
    commands: the complete commands parsed before the error in the same feed; the server runs
    them and replies, then sends the error and closes.
    """

    send_error_reply: ClassVar[bool] = True

    def __init__(self, message: str, commands: list[list[bytes]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.commands: list[list[bytes]] = commands if commands is not None else []


class QueryBufferLimitError(ProtocolError):
    """More than client-query-buffer-limit bytes are pending. Redis logs 'Closing client that
    reached max query buffer length' and closes without replying: send nothing."""

    send_error_reply: ClassVar[bool] = False


def string2ll(s: bytes) -> int | None:
    """Redis's strict string2ll: optional '-', no '+', no leading zeros, no spaces, no '-0',
    at most 20 chars, within a signed 64-bit integer. None when Redis would refuse it."""
    small = _SMALL_NUMBERS.get(s)
    if small is not None:
        return small
    if not s or len(s) > NUMBER_CHARS_MAX:
        return None
    digits = s[1:] if s[0] == 0x2D else s
    if not digits or not digits.isdigit() or digits[0] == 0x30:
        return None
    value = int(digits)
    if digits is not s:
        value = -value
    if value < _LLONG_MIN or value > _LLONG_MAX:
        return None
    return value




def _got_byte(byte: int) -> str:
    # Redis's error replies map '\r' and '\n' to spaces so the reply stays one line.
    return " " if byte in (0x0A, 0x0D) else chr(byte)


class PyRequestReader:
    """Sans-IO request reader with Redis 7.0's exact acceptance rules (see module invariants).

    feed(data) queues bytes; gets() returns the next complete argv, False when it needs more,
    or raises ProtocolError. The limits are plain attributes and may change between calls
    (CONFIG SET, AUTH); like Redis, each applies when the header it governs is parsed.
    """

    __slots__ = (
        "_args_left",
        "_argv",
        "_base",
        "_buf",
        "_bulk_len",
        "_error",
        "_parts",
        "_parts_len",
        "_parts_scanned",
        "_pos",
        "_reqtype",
        "_scan",
        "_stuck",
        "_unread",
        "_unread_len",
        "_unread_off",
        "authenticated",
        "max_bulk_len",
        "max_inline_bytes",
        "max_query_buffer_bytes",
    )

    def __init__(
        self,
        *,
        max_bulk_len: int = BULK_BYTES_MAX_DEFAULT,
        max_inline_bytes: int = LINE_BYTES_MAX,
        max_query_buffer_bytes: int = QUERY_BUFFER_BYTES_MAX_DEFAULT,
        authenticated: bool = True,
    ) -> None:
        self.max_bulk_len = max_bulk_len
        self.max_inline_bytes = max_inline_bytes
        self.max_query_buffer_bytes = max_query_buffer_bytes
        self.authenticated = authenticated
        # Bytes fed but not yet "read" (see invariant 2): a queue of chunks, head offset.
        self._unread: deque[bytes] = deque()
        self._unread_off = 0
        self._unread_len = 0
        # Bytes read: self._buf[self._pos:] then the parts. _base is the stream offset of
        # _buf[0], so line-search progress (_scan) survives joins.
        self._buf = b""
        self._pos = 0
        self._base = 0
        self._parts: list[bytes] = []
        self._parts_len = 0
        # Line search memo: no terminator (and no NUL) before stream offset _scan; the first
        # _parts_scanned parts are already searched. _stuck: a NUL came first, the line can
        # never end (Redis's strchr stops at the NUL), only a size limit can end it.
        self._scan = 0
        self._parts_scanned = 0
        self._stuck = False
        # Request state, as Redis's client struct: reqtype, multibulklen, bulklen, argv.
        self._reqtype = _NONE
        self._args_left = 0
        self._bulk_len = -1
        self._argv: list[bytes] = []
        self._error: ProtocolError | None = None

    # ----------------------------------------------------------------- public interface

    def feed(self, data: bytes) -> None:
        """Queue bytes. Never parses and never raises; gets() does the work."""
        if data:
            self._unread.append(bytes(data))
            self._unread_len += len(data)

    def gets(self) -> list[bytes] | Literal[False]:
        """Next complete command, or False when more bytes are needed.
        Raises ProtocolError (with empty .commands) when Redis would reject the stream."""
        if self._error is not None:
            raise type(self._error)(self._error.message)
        try:
            while True:
                argv = self._parse()
                if argv is not None:
                    if argv:
                        return argv
                    continue  # empty multibulk or blank line: Redis resets and goes on
                if not self._read():
                    return False
        except ProtocolError as err:
            self._error = err
            raise

    def buffered_bytes(self) -> int:
        """Bytes received and not yet consumed (Redis's qbuf): what a pending command holds
        beyond the arguments already extracted, plus anything not yet examined."""
        return len(self._buf) - self._pos + self._parts_len + self._unread_len

    def at_command_start(self) -> bool:
        """True between commands: nothing of the next command has been parsed yet."""
        return self._reqtype == _NONE and self._error is None

    def peek_byte(self) -> int:
        """First unconsumed byte, or -1 when nothing is buffered.
        REQUIRES: at_command_start()."""
        if self._pos < len(self._buf):
            return self._buf[self._pos]
        if self._parts:
            return self._parts[0][0]
        if self._unread:
            return self._unread[0][self._unread_off]
        return -1

    def take_unconsumed(self) -> bytes:
        """Remove and return every unconsumed byte, so another parser can continue the stream.
        REQUIRES: at_command_start()."""
        assert self.at_command_start()
        chunks: list[bytes | memoryview] = [memoryview(self._buf)[self._pos :], *self._parts]
        if self._unread:
            chunks.append(memoryview(self._unread[0])[self._unread_off :])
            chunks.extend(list(self._unread)[1:])
        rest = b"".join(chunks)
        self._base += len(self._buf) + self._parts_len + self._unread_len
        self._buf, self._pos, self._parts, self._parts_len = b"", 0, [], 0
        self._unread.clear()
        self._unread_off = self._unread_len = 0
        self._reset_line()
        return rest

    # ----------------------------------------------------------------- emulated reads

    def _visible(self) -> int:
        return len(self._buf) - self._pos + self._parts_len

    def _read(self) -> bool:
        """Move one Redis-sized read from the unread queue into the buffer; False if none."""
        if not self._unread:
            return False
        want = READ_BYTES
        if self._reqtype == _MULTIBULK and self._bulk_len >= BIG_BULK_BYTES_MIN:
            remaining = self._bulk_len + 2 - self._visible()
            if remaining > 0:
                want = remaining
        head = self._unread[0]
        off = self._unread_off
        if len(head) - off <= want:
            chunk = head[off:] if off else head
            self._unread.popleft()
            self._unread_off = 0
        else:
            chunk = head[off : off + want]
            self._unread_off = off + want
        self._unread_len -= len(chunk)
        visible = self._visible()
        if visible + len(chunk) > self.max_query_buffer_bytes:
            raise QueryBufferLimitError("query buffer limit reached (closing without a reply)")
        if visible <= _JOIN_BYTES_MAX:
            self._join(chunk)
        else:
            self._parts.append(chunk)
            self._parts_len += len(chunk)
        return True

    def _join(self, extra: bytes = b"") -> None:
        """Make every read byte contiguous in _buf (dropping consumed bytes)."""
        self._base += self._pos
        self._buf = b"".join([memoryview(self._buf)[self._pos :], *self._parts, extra])
        self._pos = 0
        self._parts = []
        self._parts_len = 0
        self._parts_scanned = 0

    def _reset_line(self) -> None:
        self._scan = self._base + self._pos
        self._parts_scanned = 0
        self._stuck = False

    # ----------------------------------------------------------------- line search

    def _find(self, sep: bytes, after: int) -> int:
        """Index in _buf of the current line's terminator `sep`, once `after` more bytes follow
        it; -1 if the terminator is absent (or hidden by a NUL), -2 if present but the bytes
        after it have not arrived. Each byte is searched once per line (invariant 3)."""
        if self._stuck:
            return -1
        buf = self._buf
        start = self._scan - self._base
        if start < self._pos:
            start = self._pos
        if start < len(buf):
            i = buf.find(sep, start)
            if buf.find(0, start, i if i >= 0 else len(buf)) >= 0:
                self._stuck = True
                return -1
            if i < 0:
                self._scan = self._base + len(buf)
        else:
            i = -1
        if i < 0:
            if not self._found_in_parts(sep):
                return -1
            self._join()
            buf = self._buf
            i = buf.find(sep, self._scan - self._base)
        elif i + after >= len(buf) and self._parts:
            self._join()
            buf = self._buf
            i = buf.find(sep, self._scan - self._base if self._scan > self._base else 0)
        if i + after >= len(buf):
            self._scan = self._base + i  # found it; wait here for the byte after it
            return -2
        return i

    def _found_in_parts(self, sep: bytes) -> bool:
        parts = self._parts
        while self._parts_scanned < len(parts):
            part = parts[self._parts_scanned]
            i = part.find(sep)
            if part.find(0, 0, i if i >= 0 else len(part)) >= 0:
                self._stuck = True
                return False
            if i >= 0:
                return True
            self._scan += len(part)
            self._parts_scanned += 1
        return False

    # ----------------------------------------------------------------- request parsing

    def _parse(self) -> list[bytes] | None:
        """One step of Redis's processInputBuffer: a command, [] for an empty one, or None."""
        if self._reqtype == _NONE:
            if self._visible() == 0:
                return None
            first = self._buf[self._pos] if self._pos < len(self._buf) else self._parts[0][0]
            if first == _STAR and not self._parts:
                argv = self._parse_plain_multibulk()
                if argv is not None:
                    return argv
            self._reqtype = _MULTIBULK if first == _STAR else _INLINE
            self._reset_line()
        if self._reqtype == _INLINE:
            return self._parse_inline()
        return self._parse_multibulk()

    def _parse_plain_multibulk(self) -> list[bytes] | None:
        """Shortcut for a complete, ordinary command lying in _buf. It gives up (None, nothing
        consumed) at anything else, where _parse_multibulk applies the exact rules; so it can
        only return what _parse_multibulk would return from the same bytes."""
        buf = self._buf
        pos = self._pos
        end_buf = len(buf)
        i = buf.find(b"\r", pos)
        if i < 0 or i + 1 >= end_buf:
            return None
        count = _SMALL_NUMBERS.get(buf[pos + 1 : i])
        if not count or (count > UNAUTH_MULTIBULK_COUNT_MAX and not self.authenticated):
            return None
        size_max = self.max_bulk_len
        if not self.authenticated and size_max > UNAUTH_BULK_BYTES_MAX:
            size_max = UNAUTH_BULK_BYTES_MAX
        p = i + 2
        argv: list[bytes] = []
        for _ in range(count):
            if p >= end_buf or buf[p] != _DOLLAR:
                return None
            i = buf.find(b"\r", p)
            if i < 0 or i + 1 >= end_buf:
                return None
            size = _SMALL_NUMBERS.get(buf[p + 1 : i])
            if size is None or size > size_max:
                return None
            p = i + 2
            end = p + size
            if end + 2 > end_buf:
                return None
            argv.append(buf[p:end])
            p = end + 2
        self._pos = p
        self._reset_line()
        return argv

    def _parse_inline(self) -> list[bytes] | None:
        i = self._find(b"\n", 0)
        if i < 0:
            if self._visible() > self.max_inline_bytes:
                raise ProtocolError("too big inline request")
            return None
        buf, pos = self._buf, self._pos
        end = i - 1 if i > pos and buf[i - 1] == 0x0D else i  # one '\r' before '\n' goes
        line = buf[pos:end]
        self._pos = i + 1
        self._reqtype = _NONE
        self._reset_line()
        argv = split_inline(line)
        if argv is None:
            raise ProtocolError("unbalanced quotes in request")
        return argv

    def _header(self, too_big: str) -> int | None:
        """Digits of the '*' or '$' line at _pos; Redis ends it at the first '\\r' and skips
        the next byte whatever it is. None: need more bytes."""
        i = self._find(b"\r", 1)
        if i < 0:
            if i == -1 and self._visible() > self.max_inline_bytes:
                raise ProtocolError(too_big)
            return None
        return i

    def _parse_multibulk(self) -> list[bytes] | None:
        if self._args_left == 0:
            i = self._header("too big mbulk count string")
            if i is None:
                return None
            count = string2ll(self._buf[self._pos + 1 : i])
            if count is None or count > MULTIBULK_COUNT_MAX:
                raise ProtocolError("invalid multibulk length")
            if count > UNAUTH_MULTIBULK_COUNT_MAX and not self.authenticated:
                raise ProtocolError("unauthenticated multibulk length")
            self._pos = i + 2
            self._reset_line()
            if count <= 0:
                self._reqtype = _NONE
                return []
            self._args_left = count
            self._argv = []
        while self._args_left:
            if self._bulk_len < 0:
                i = self._header("too big bulk count string")
                if i is None:
                    return None
                first = self._buf[self._pos]
                if first != _DOLLAR:
                    raise ProtocolError(f"expected '$', got '{_got_byte(first)}'")
                size = string2ll(self._buf[self._pos + 1 : i])
                if size is None or size < 0 or size > self.max_bulk_len:
                    raise ProtocolError("invalid bulk length")
                if size > UNAUTH_BULK_BYTES_MAX and not self.authenticated:
                    raise ProtocolError("unauthenticated bulk length")
                self._pos = i + 2
                self._reset_line()
                self._bulk_len = size
            size = self._bulk_len
            if self._visible() < size + 2:
                return None
            self._argv.append(self._take_bulk(size))
            self._bulk_len = -1
            self._args_left -= 1
        argv = self._argv
        self._argv = []
        self._reqtype = _NONE
        return argv

    def _take_bulk(self, size: int) -> bytes:
        """Consume size bytes plus the two after them (never checked, as in Redis).
        REQUIRES: self._visible() >= size + 2."""
        assert self._visible() >= size + 2
        buf, pos = self._buf, self._pos
        end = pos + size
        if end + 2 <= len(buf):
            self._pos = end + 2
            self._reset_line()
            return buf[pos:end]
        # The bulk spans parts: one copy into the argument, then the short rest is the buffer.
        pieces: list[bytes | memoryview] = [memoryview(buf)[pos:], *self._parts]
        arg_pieces: list[bytes | memoryview] = []
        need = size
        k = 0
        while need:
            piece = pieces[k]
            if len(piece) <= need:
                arg_pieces.append(piece)
                need -= len(piece)
                k += 1
            else:
                arg_pieces.append(memoryview(piece)[:need])
                pieces[k] = memoryview(piece)[need:]
                need = 0
        arg = b"".join(arg_pieces)
        skip = 2
        while skip:
            piece = pieces[k]
            if len(piece) <= skip:
                skip -= len(piece)
                k += 1
            else:
                pieces[k] = memoryview(piece)[skip:]
                skip = 0
        self._base += len(buf) + self._parts_len - sum(len(p) for p in pieces[k:])
        self._buf = b"".join(pieces[k:])
        self._pos = 0
        self._parts = []
        self._parts_len = 0
        self._reset_line()
        return arg
