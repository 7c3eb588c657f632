"""Sans-IO RESP request parser for the server: bytes in, argv lists out (replies are encoded
elsewhere). No I/O here: no asyncio, no sockets.

Invariants:
1. feed() returns exactly the commands redis-server 7.0 would run on the same bytes, and raises
   ProtocolError exactly where it would close the connection, with its message. The pure-Python
   PyRequestReader (resp_pyparser.py) is the authority; hiredis is only a faster way to the same
   answer, used where it provably agrees.
2. hiredis runs only while the stream is synced: at the start of every feed hiredis is between
   commands with an empty buffer (a probe checks it at the end of each feed, see feed()), so the
   bytes fed since the last sync point are exactly the current chunk.
3. hiredis's answer for a chunk is kept only if it is plain RESP: every item a non-empty list of
   bytes, each command starting with '*' and each argument with '$'. Types that hiredis turns into
   a list or into bytes ('~' set, '|' attribute, '+' status, '=' verbatim, '(' big number) can
   only hide in a chunk containing one of the bytes '~|+=('; such chunks are checked command by
   command (_walk). Anything else unusual (hiredis error, a partial command at the end, another
   type) hands the exact unconsumed bytes to the Python reader, which keeps the stream until it
   is back at a command start that begins with '*'.
4. Once a ProtocolError is raised the parser is dead: every later feed raises it again.

Theory of operation. Redis accepts some non-canonical input (a header line ends at its first
'\\r' and the next byte is skipped unchecked; the two bytes after bulk data are skipped
unchecked; inline commands) and checks limits at points set by its 16 KiB reads. hiredis cannot
express those, so it only ever sees streams where they cannot matter (invariant 3), and the walk
that locates the unconsumed bytes is done only on the rare paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from respkv.resp_pyparser import (
    BULK_BYTES_MAX_DEFAULT,
    LINE_BYTES_MAX,
    QUERY_BUFFER_BYTES_MAX_DEFAULT,
    ProtocolError,
    PyRequestReader,
    QueryBufferLimitError,
)

hiredis: Any
try:
    import hiredis
except ImportError:  # the pure-Python reader alone is complete, only slower
    hiredis = None

HAVE_HIREDIS: Final = hiredis is not None

__all__ = [
    "HAVE_HIREDIS",
    "ProtocolError",
    "PyRequestReader",
    "QueryBufferLimitError",
    "RequestParser",
]

_STAR: Final = 0x2A
_SYNC_PROBE: Final = b"*0\r\n"
# hiredis's default "need more data" value, False, is also what it returns for a RESP3 '#f'.
_NEED_DATA: Final = object()
_DOLLAR: Final = 0x24

# Serialized size of '$<n>\r\n<n bytes>\r\n' and of '*<n>\r\n', precomputed for small n.
_SMALL_MAX: Final = 4096
_BULK_FRAME: Final = [n + 5 + len(str(n)) for n in range(_SMALL_MAX)]
_ARRAY_HEADER: Final = [3 + len(str(n)) for n in range(_SMALL_MAX)]


# hiredis allocates an array's slots as soon as it reads the '*' header, so `*2147483647`
# alone would stall the server for seconds and claim gigabytes. Counts of 9+ digits (Redis
# accepts up to INT_MAX and allocates as arguments arrive) go to the Python reader instead.
_HUGE_COUNT_DIGITS: Final = 9
_HUGE_COUNT: Final = re.compile(rb"\*[0-9]{%d}" % _HUGE_COUNT_DIGITS)


def _is_plain_multibulk(data: bytes, items: list[Any]) -> bool:
    """True when items, as hiredis returned them for all of data, are exactly the non-empty
    multibulk commands data spells ('*' arrays of '$' bulk strings).

    hiredis also returns other RESP types that Redis refuses in a request as if they were
    commands or arguments: '+', '(' and '=' as bytes, '~' and '>' as lists. Every one of them
    except a '~' or '>' in place of a '*' serializes to a different length than the bulk
    strings it imitates (nested arrays, maps and attributes too), and a non-bytes argument
    makes len() fail; so the serialized length of the commands, summed in C where possible,
    and the first byte of each command decide. This costs the same for every value, unlike
    searching the data for the tell-tale bytes (base64 values are full of '+' and '=')."""
    pos = 0
    try:
        for item in items:
            # data[pos] raises IndexError past the end; header[argc] past the table too.
            if data[pos] != _STAR or type(item) is not list or not item:
                return False
            try:
                pos += _header(len(item)) + sum(map(_frame, map(len, item)))
            except IndexError:  # an argument (or count) past the precomputed table
                argc = len(item)
                pos += 3 + len(str(argc)) + sum(n + 5 + len(str(n)) for n in map(len, item))
            for arg in item:
                if type(arg) is not bytes:
                    return False
    except (TypeError, IndexError):
        # TypeError: an integer, error, double, boolean or null among the arguments.
        return False
    return pos == len(data)


_frame: Final = _BULK_FRAME.__getitem__
_header: Final = _ARRAY_HEADER.__getitem__

# Reads up to this size are first tried as canonical multibulk by splitting at CRLF: cheaper
# than hiredis plus the checks above for the one-command read of an unpipelined client, and
# no cheaper for long pipelined reads, which go straight to hiredis.
_SPLIT_BYTES_MAX: Final = 512
_ARGC_OF: Final = {b"*%d" % n: n for n in range(1, 1025)}.get
_BULK_HEADERS: Final = [b"$%d" % n for n in range(_SPLIT_BYTES_MAX)]
_BULK_HEADER: Final = _BULK_HEADERS.__getitem__


def _split_canonical(data: bytes) -> list[list[bytes]] | None:
    """The commands of data if it is nothing but complete multibulk commands in canonical form
    ('*<n>' and '$<len>' in shortest decimal, no CRLF inside an argument), else None.

    Such bytes mean the same to every RESP reader, Redis's included, so no check beyond the
    exact header match is needed; anything else (inline, partial, odd spacing, an argument
    holding CRLF, a huge count) returns None and takes the general path.

    REQUIRES: len(data) <= _SPLIT_BYTES_MAX (every argument is then shorter than the header
    table)."""
    lines = data.split(b"\r\n")
    end = len(lines) - 1
    if lines[end]:  # not ending in CRLF: a partial command or inline text
        return None
    # 3, 5 or 7 lines can only be one command of 1, 2 or 3 arguments (a command takes 1 + 2n
    # lines): GET, SET, INCR ... of an unpipelined client, checked straight-line, which costs
    # half of the general loop below.
    header = _BULK_HEADERS
    if end == 5:
        a, b = lines[2], lines[4]
        if lines[0] == b"*2" and lines[1] == header[len(a)] and lines[3] == header[len(b)]:
            return [[a, b]]
        return None
    if end == 7:
        a, b, c = lines[2], lines[4], lines[6]
        if (lines[0] == b"*3" and lines[1] == header[len(a)] and lines[3] == header[len(b)]
                and lines[5] == header[len(c)]):
            return [[a, b, c]]
        return None
    if end == 3:
        a = lines[2]
        if lines[0] == b"*1" and lines[1] == header[len(a)]:
            return [[a]]
        return None
    # 9 or 11 lines are one command of 4 or 5 arguments (SETEX, SET ... EX n) when the first
    # line says so (a SET ... EX n: 0.6 against 1.0 us in the loop); otherwise they may be
    # three short commands, for the loop below.
    if end == 9 and lines[0] == b"*4":
        a, b, c, d = lines[2], lines[4], lines[6], lines[8]
        if (lines[1] == header[len(a)] and lines[3] == header[len(b)]
                and lines[5] == header[len(c)] and lines[7] == header[len(d)]):
            return [[a, b, c, d]]
        return None
    if end == 11 and lines[0] == b"*5":
        a, b, c, d, e = lines[2], lines[4], lines[6], lines[8], lines[10]
        if (lines[1] == header[len(a)] and lines[3] == header[len(b)]
                and lines[5] == header[len(c)] and lines[7] == header[len(d)]
                and lines[9] == header[len(e)]):
            return [[a, b, c, d, e]]
        return None
    commands: list[list[bytes]] = []
    i = 0
    while i < end:
        argc = _ARGC_OF(lines[i])
        if argc is None:
            return None
        stop = i + 1 + 2 * argc
        args = lines[i + 2 : stop : 2]
        if stop > end or lines[i + 1 : stop : 2] != list(map(_BULK_HEADER, map(len, args))):
            return None
        commands.append(args)
        i = stop
    return commands


# A longer read of commands that all have one shape (a pipeline of GETs, of SETs ...) is
# first tried column by column: its cost hardly grows with the number of commands.
_UNIFORM_BYTES_MAX: Final = 16 * 1024
_UNIFORM_HEADERS: Final = [b"$%d" % n for n in range(_UNIFORM_BYTES_MAX)]
_UNIFORM_HEADER: Final = _UNIFORM_HEADERS.__getitem__


def _split_uniform(data: bytes) -> list[list[bytes]] | None:
    """The commands of data if it is nothing but complete multibulk commands in canonical
    form (as ``_split_canonical``) that all have the argument count of the first, else None.

    Each command is 1 + 2 * argc lines, so the lines at one offset in every command form a
    column: the '*<argc>' lines, then per argument its '$<len>' lines and its values. A
    column is checked with one list comparison, and the commands are zipped from the value
    columns, where the general split walks command by command (a pipelined read of 16 GETs:
    about a fifth of the time). The same reasoning makes it exact: lines that match the
    headers of their neighbours, with no CRLF inside an argument, are canonical RESP.

    REQUIRES: len(data) <= _UNIFORM_BYTES_MAX (every argument is then shorter than the
    header table)."""
    # A read of other shapes is mostly declined here, before the split allocates its lines.
    argc = _ARGC_OF(data[: data.find(b"\r\n")])
    if argc is None:
        return None
    step = 1 + 2 * argc
    end = data.count(b"\r\n")
    count, rest = divmod(end, step)
    if rest or not data.endswith(b"\r\n"):
        return None
    lines = data.split(b"\r\n")
    if lines[0:end:step].count(lines[0]) != count:
        return None
    columns: list[list[bytes]] = []
    for offset in range(2, step, 2):
        values = lines[offset:end:step]
        if lines[offset - 1 : end : step] != list(map(_UNIFORM_HEADER, map(len, values))):
            return None
        columns.append(values)
    return list(map(list, zip(*columns, strict=True)))


def _walk(data: bytes, items: list[Any], bulk_bytes_max: int) -> tuple[int, int]:
    """How many leading items of hiredis's answer are plain RESP multibulk commands laid out
    at the start of data (each '*', each argument '$', arguments within the bulk limit), and
    the offset where they end."""
    pos = 0
    count = 0
    end = len(data)
    for item in items:
        if type(item) is not list or pos >= end or data[pos] != _STAR:
            break
        argc = len(item)
        p = pos + (_ARRAY_HEADER[argc] if argc < _SMALL_MAX else 3 + len(str(argc)))
        for arg in item:
            if type(arg) is not bytes or p >= end or data[p] != _DOLLAR:
                return count, pos
            n = len(arg)
            if n > bulk_bytes_max:
                return count, pos
            p += _BULK_FRAME[n] if n < _SMALL_MAX else n + 5 + len(str(n))
        if p > end:
            break
        pos = p
        count += 1
    return count, pos


class RequestParser:
    """Parses a client's request stream as redis-server 7.0 does.

    max_bulk_len (proto-max-bulk-len), max_query_buffer_bytes (client-query-buffer-limit) and
    authenticated may be changed at any time; like Redis, a new value applies to headers parsed
    from then on. While authenticated is False, Redis 7's limits for clients that still owe an
    AUTH apply (at most 10 arguments of at most 16 KiB each).
    use_hiredis=False runs the pure-Python reader alone (the reference in tests).
    """

    __slots__ = ("_fast", "_fast_bytes_max", "_py", "_py_owns", "_reader")

    def __init__(
        self,
        *,
        max_bulk_len: int = BULK_BYTES_MAX_DEFAULT,
        max_inline_bytes: int = LINE_BYTES_MAX,
        max_query_buffer_bytes: int = QUERY_BUFFER_BYTES_MAX_DEFAULT,
        authenticated: bool = True,
        use_hiredis: bool = True,
    ) -> None:
        self._py = PyRequestReader(
            max_bulk_len=max_bulk_len,
            max_inline_bytes=max_inline_bytes,
            max_query_buffer_bytes=max_query_buffer_bytes,
            authenticated=authenticated,
        )
        self._fast = use_hiredis and hiredis is not None
        self._reader: Any = self._new_reader() if self._fast else None
        # True while the Python reader holds bytes of the stream.
        self._py_owns = False
        # The largest chunk hiredis may take, or -1 when it may not run: one comparison on the
        # hot path instead of four. No argument of a chunk this short can break the bulk limit.
        self._fast_bytes_max = -1
        self._update_gate()

    def _update_gate(self) -> None:
        if self._fast and not self._py_owns and self._py.authenticated:
            self._fast_bytes_max = self._chunk_bytes_max()
        else:
            self._fast_bytes_max = -1

    def _chunk_bytes_max(self) -> int:
        # Up to this size a chunk cannot hold an argument over proto-max-bulk-len, nor make one
        # of Redis's reads overflow client-query-buffer-limit.
        return min(self._py.max_query_buffer_bytes, self._py.max_bulk_len)

    def _set_py_owns(self, owns: bool) -> None:
        self._py_owns = owns
        self._update_gate()

    @property
    def max_bulk_len(self) -> int:
        return self._py.max_bulk_len

    @max_bulk_len.setter
    def max_bulk_len(self, value: int) -> None:
        self._py.max_bulk_len = value
        self._update_gate()

    @property
    def max_query_buffer_bytes(self) -> int:
        return self._py.max_query_buffer_bytes

    @max_query_buffer_bytes.setter
    def max_query_buffer_bytes(self, value: int) -> None:
        self._py.max_query_buffer_bytes = value
        self._update_gate()

    @property
    def authenticated(self) -> bool:
        return self._py.authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        self._py.authenticated = value
        self._update_gate()

    def buffered_bytes(self) -> int:
        """Bytes held for an incomplete command (Redis's qbuf in CLIENT LIST)."""
        # hiredis is always synced between feeds (invariant 2), so only Python holds bytes.
        return self._py.buffered_bytes()

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Every command completed by data, in order. Empty commands produce nothing.
        Raises ProtocolError (with .commands = the commands completed before the error in this
        feed) when Redis would reject the stream; the parser is then dead."""
        if len(data) <= self._fast_bytes_max:
            if len(data) <= _SPLIT_BYTES_MAX:
                split = _split_canonical(data)
            elif len(data) <= _UNIFORM_BYTES_MAX:
                split = _split_uniform(data)
            else:
                split = None
            if split is not None:
                return split
        commands: list[list[bytes]] | None = None
        rest: bytes | None = data
        # Each hand-over copies the rest of the chunk. Allowing another only after hiredis
        # consumed at least half of what it was given keeps the copying linear when inline and
        # multibulk commands alternate.
        hand_back = True
        while rest is not None:
            # No first-byte test: hiredis rejects an inline command itself, and a '~' or '|'
            # it would accept as a command is caught by _is_plain_multibulk below.
            if len(rest) <= self._fast_bytes_max and (
                # No huge count (see _HUGE_COUNT). With no second '*' only the chunk's own
                # header can be one: the common read of one command, tested cheaply.
                not rest[1 : 1 + _HUGE_COUNT_DIGITS].isdigit() if rest.find(b"*", 1) < 0
                else _HUGE_COUNT.search(rest) is None
            ):
                reader = self._reader
                reader.feed(rest)
                items: list[Any] = []
                try:
                    item = reader.gets()
                    while item is not _NEED_DATA:
                        items.append(item)
                        item = reader.gets()
                    # hiredis has returned all it could. A probe now comes back as a bare []
                    # only if hiredis stopped between commands; has_data() alone misses a
                    # command cut after its '*' line or after a whole argument (hiredis keeps
                    # those in its task stack).
                    reader.feed(_SYNC_PROBE)
                    probe = reader.gets()
                    synced = type(probe) is list and not probe
                except Exception:
                    # Not only ProtocolError: a '%' map with a list key raises TypeError. Any
                    # failure means this chunk is not plain RESP; the Python reader decides.
                    synced = False
                if synced and _is_plain_multibulk(rest, items):
                    if commands is None:
                        return items
                    commands.extend(items)
                    return commands
                given = len(rest)
                good, rest = self._recover(rest, items, synced=synced)
                hand_back = rest is None or 2 * (given - len(rest)) >= given
                if commands is None:
                    commands = good
                else:
                    commands.extend(good)
                if rest is None:
                    return commands
            elif commands is None:
                commands = []
            # The Python reader takes the stream from here.
            self._set_py_owns(True)
            if rest:
                self._py.feed(bytes(rest))
            rest = self._drain(commands, hand_back)
        assert commands is not None
        return commands

    def feed_stepwise(self, data: bytes) -> Iterator[list[bytes]]:
        """``feed`` one command at a time, for a client that has not authenticated yet.

        Redis parses a command, runs it, then parses the next, so an AUTH changes the limits
        (``authenticated``) for the very next command of the same read. The caller runs each
        yielded command and updates ``authenticated`` before asking for the next. Raises
        ProtocolError from the iteration; every command before it has been yielded.
        """
        py = self._py
        self._set_py_owns(True)
        py.feed(data)
        while True:
            argv = py.gets()
            if argv is False:
                break
            if argv:
                yield argv
        if py.at_command_start() and py.peek_byte() == -1:
            self._set_py_owns(False)

    # ----------------------------------------------------------------- rare paths

    @staticmethod
    def _new_reader() -> Any:
        return hiredis.Reader(notEnoughData=_NEED_DATA)

    def _recover(
        self, data: bytes, items: list[Any], *, synced: bool
    ) -> tuple[list[list[bytes]], bytes | None]:
        """hiredis met something unusual in data: keep the commands it got right and return
        the rest of the chunk for the Python reader (None when nothing is left)."""
        count, consumed = _walk(data, items, self._py.max_bulk_len)
        commands: list[list[bytes]] = [item for item in items[:count] if item]
        if not synced:
            self._reader = self._new_reader()
        elif count == len(items) and consumed == len(data):
            return commands, None
        return commands, data[consumed:]

    def _drain(self, commands: list[list[bytes]], hand_back: bool) -> bytes | None:
        """Let the Python reader parse what it holds, appending to commands. If hand_back, at
        the first command start that begins with '*' it hands the rest back: returns those
        bytes for hiredis, or None when the Python reader keeps the stream (or emptied it)."""
        py = self._py
        try:
            while True:
                argv = py.gets()
                if argv is not False:
                    commands.append(argv)
                if self._fast and py.at_command_start():
                    first = py.peek_byte()
                    if first == -1:
                        self._set_py_owns(False)
                        return None
                    # A rest too big for hiredis stays here: handing it back would only bring it
                    # straight back, copying it once per command.
                    if (
                        hand_back
                        and first == _STAR
                        and py.authenticated
                        and py.buffered_bytes() <= self._chunk_bytes_max()
                    ):
                        self._set_py_owns(False)
                        return py.take_unconsumed()
                if argv is False:
                    return None
        except ProtocolError as err:
            err.commands = commands
            raise
