"""String commands: GET/SET and their variants, counters, APPEND and the range commands.

Every value in respkv is a string, so none of these has a WRONGTYPE path. A value carries an
absolute expire_at_ms (0 = no TTL), and the node treats an expired value as missing:
- SET, GETSET, MSET and SETEX-like commands replace the TTL (plain SET clears it, KEEPTTL keeps
  it); APPEND, SETRANGE and INCR* keep it; GETEX rewrites it.
- A read-modify-write passes the context it read back to node.put, so the write supersedes
  exactly the version it was derived from and needs no second read.

Statistics follow redis-server: commands that look the key up "for reading" (GET, MGET,
GETEX, GETDEL, GETSET, SET ... GET, STRLEN, GETRANGE) count keyspace hits and misses; the
writers that read first (SETNX, APPEND, INCR ...) look up "for writing" and count nothing.

GET and plain SET are the hottest paths of the server: they stay branch-light and allocate
nothing beyond the reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from respkv import errors
from respkv.commands.args import INT64_MAX, INT64_MIN, parse_int
from respkv.commands.table import command
from respkv.replies import OK, CommandError

if TYPE_CHECKING:
    from cluster.node import Entry
    from respkv.client import Client

# SET / GETEX option flags, as redis-server's OBJ_SET_* / OBJ_* bits.
_NX = 1
_XX = 2
_GET = 4
_KEEPTTL = 8
_PERSIST = 16
_EX = 32
_PX = 64
_EXAT = 128
_PXAT = 256
_EXPIRES = _EX | _PX | _EXAT | _PXAT
_RELATIVE = _EX | _PX
_SECONDS = _EX | _EXAT
_EXPIRE_TOKENS = {b"EX": _EX, b"PX": _PX, b"EXAT": _EXAT, b"PXAT": _PXAT}
# `SET key value EX|PX n` as clients spell it: a cache's write, parsed without the option loop.
_SET_TTL_SPELLINGS = {b"EX": _EX, b"ex": _EX, b"PX": _PX, b"px": _PX}


def _invalid_expire(name: str) -> CommandError:
    return CommandError(errors.INVALID_EXPIRE.format(name))


def _parse_expire_options(argv: list[bytes], start: int, for_set: bool) -> tuple[int, bytes]:
    """Parse SET's (for_set) or GETEX's options from argv[start:]: (flags, expire argument).

    The same rules as redis-server's parseExtendedStringArgumentsOrReply: an option may be
    repeated (the last EX/PX/... value wins), conflicting ones are a syntax error, and an
    option is matched as a C string, so it ends at the first NUL byte ("NX\\0junk" is NX).
    """
    flags = 0
    expire = b""
    i = start
    argc = len(argv)
    while i < argc:
        opt = argv[i]
        nul = opt.find(b"\0")
        if nul >= 0:
            opt = opt[:nul]
        opt = opt.upper()
        unit = _EXPIRE_TOKENS.get(opt)
        if unit is not None:
            if flags & (_KEEPTTL | _PERSIST | (_EXPIRES & ~unit)) or i + 1 >= argc:
                raise CommandError(errors.SYNTAX)
            flags |= unit
            i += 1
            expire = argv[i]
        elif for_set and opt == b"NX" and not flags & _XX:
            flags |= _NX
        elif for_set and opt == b"XX" and not flags & _NX:
            flags |= _XX
        elif for_set and opt == b"GET":
            flags |= _GET
        elif for_set and opt == b"KEEPTTL" and not flags & (_PERSIST | _EXPIRES):
            flags |= _KEEPTTL
        elif not for_set and opt == b"PERSIST" and not flags & (_EXPIRES | _KEEPTTL):
            flags |= _PERSIST
        else:
            raise CommandError(errors.SYNTAX)
        i += 1
    return flags, expire


def _expire_at_ms(client: Client, arg: bytes, flags: int, name: str) -> int:
    """The absolute expiry (ms) that an EX/PX/EXAT/PXAT argument asks for.

    As redis-server: not positive, or so large that the conversion to milliseconds (or the
    addition of the current time) overflows a signed 64-bit integer, is an invalid expire.
    """
    when = parse_int(arg)
    seconds = flags & _SECONDS
    if when <= 0 or (seconds and when > INT64_MAX // 1000):
        raise _invalid_expire(name)
    if seconds:
        when *= 1000
    if flags & _RELATIVE:
        when += client.node.clock.wall_ms()
        if when > INT64_MAX:
            raise _invalid_expire(name)
    return when


def _count_lookup(client: Client, found: bool) -> None:
    stats = client.server.stats
    if found:
        stats.keyspace_hits += 1
    else:
        stats.keyspace_misses += 1


# Read, decide, write --------------------------------------------------------------------------

# What a read-modify-write command makes of the key it read: (its reply, the write), where the
# write is None (nothing to write) or (value, expire_at_ms), a value of None deleting the key.
_Decision = tuple[object, tuple[bytes | None, int] | None]


def _read_modify_write(client: Client, key: bytes,
                       decide: Callable[[Entry | None], _Decision]) -> object:
    """Read ``key``, ``decide``, write what it says (superseding what was read): at once in a
    cluster of one, as GET (no coroutine to create and drive), else the coroutine that does the
    same through the coordinator. ``decide`` may raise a CommandError: nothing is written."""
    node = client.node
    if not node.local_only:
        return _read_modify_write_async(client, key, decide)
    db = client.db
    entry = node.get_now(db, key)
    reply, write = decide(entry)
    if write is not None:
        value, expire_at = write
        if value is None:
            node.delete_now(db, key)
        else:
            node.put_now(db, key, value, expire_at,
                         context=None if entry is None else entry.context)
    return reply


async def _read_modify_write_async(client: Client, key: bytes,
                                   decide: Callable[[Entry | None], _Decision]) -> object:
    node = client.node
    db = client.db
    entry = await node.get(db, key)
    reply, write = decide(entry)
    if write is not None:
        value, expire_at = write
        if value is None:
            await node.delete(db, key)
        else:
            await node.put(db, key, value, expire_at,
                           context=None if entry is None else entry.context)
    return reply


# GET / SET family ---------------------------------------------------------------------------


@command(
    "get", 2, "readonly fast", (1, 1, 1), group="string", acl="@read @string @fast",
    summary="Get the value of a key", since="1.0.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0}],
)
def get(client: Client, argv: list[bytes]) -> object:
    # A plain function, not a coroutine: in a cluster of one the read completes at once, and
    # GET is the hottest command. Elsewhere it returns the coroutine that does the same.
    node = client.node
    if not node.local_only:
        return _get_async(client, argv)
    value = node.value_now(client.db, argv[1])
    if value is None:
        client.server.stats.keyspace_misses += 1
    else:
        client.server.stats.keyspace_hits += 1
    return value


async def _get_async(client: Client, argv: list[bytes]) -> object:
    entry = await client.node.get(client.db, argv[1])
    if entry is None:
        client.server.stats.keyspace_misses += 1
        return None
    client.server.stats.keyspace_hits += 1
    return entry.value


@command(
    "set", -3, "write denyoom", (1, 1, 1), group="string", acl="@write @string @slow",
    summary="Set the string value of a key", since="1.0.0",
    arguments=[
        {"name": "key", "type": "key", "key_spec_index": 0},
        {"name": "value", "type": "string"},
        {
            "name": "condition", "type": "oneof", "since": "2.6.12", "flags": ["optional"],
            "arguments": [
                {"name": "nx", "type": "pure-token", "token": "NX"},
                {"name": "xx", "type": "pure-token", "token": "XX"},
            ],
        },
        {"name": "get", "type": "pure-token", "token": "GET", "since": "6.2.0",
         "flags": ["optional"]},
        {
            "name": "expiration", "type": "oneof", "flags": ["optional"],
            "arguments": [
                {"name": "seconds", "type": "integer", "token": "EX", "since": "2.6.12"},
                {"name": "milliseconds", "type": "integer", "token": "PX", "since": "2.6.12"},
                {"name": "unix-time-seconds", "type": "unix-time", "token": "EXAT",
                 "since": "6.2.0"},
                {"name": "unix-time-milliseconds", "type": "unix-time", "token": "PXAT",
                 "since": "6.2.0"},
                {"name": "keepttl", "type": "pure-token", "token": "KEEPTTL", "since": "6.0.0"},
            ],
        },
    ],
)
def set_(client: Client, argv: list[bytes]) -> object:
    # A SET whose result does not depend on the current value (no NX, XX, GET or KEEPTTL)
    # completes without a coroutine in a cluster of one (see get()).
    argc = len(argv)
    if argc == 3 and client.node.local_only:  # the hottest case, _blind_set inlined
        client.node.put_now(client.db, argv[1], argv[2])
        return OK
    if argc == 5 and (unit := _SET_TTL_SPELLINGS.get(argv[3])) is not None:
        # What the option loop makes of it: that one flag, and argv[4] its argument.
        return _blind_set(client, argv[1], argv[2], _expire_at_ms(client, argv[4], unit, "set"))
    flags, expire = _parse_expire_options(argv, 3, True)
    expire_at = _expire_at_ms(client, expire, flags, "set") if flags & _EXPIRES else 0
    if not flags & (_NX | _XX | _GET | _KEEPTTL):
        return _blind_set(client, argv[1], argv[2], expire_at)
    return _set_conditional(client, argv, flags, expire_at)


def _blind_set(client: Client, key: bytes, value: bytes, expire_at: int) -> object:
    """Set ``key`` whatever its current value (SET without NX/XX/GET/KEEPTTL, SETEX, PSETEX):
    at once in a cluster of one, else the coroutine that writes through the coordinator."""
    node = client.node
    if node.local_only:
        node.put_now(client.db, key, value, expire_at)
        return OK
    return _put_async(client, key, value, expire_at)


async def _put_async(client: Client, key: bytes, value: bytes, expire_at: int) -> object:
    await client.node.put(client.db, key, value, expire_at)
    return OK


def _set_conditional(client: Client, argv: list[bytes], flags: int, expire_at: int) -> object:
    """SET with NX, XX, GET or KEEPTTL: the outcome depends on the current value."""
    def decide(entry: Entry | None) -> _Decision:
        if flags & _GET:
            _count_lookup(client, entry is not None)
        old = None if entry is None else entry.value
        if (flags & _NX and entry is not None) or (flags & _XX and entry is None):
            return (old if flags & _GET else None), None
        keep = entry.expire_at_ms if flags & _KEEPTTL and entry is not None else expire_at
        return (old if flags & _GET else OK), (argv[2], keep)
    return _read_modify_write(client, argv[1], decide)


@command(
    "setnx", 3, "write denyoom fast", (1, 1, 1), group="string", acl="@write @string @fast",
    summary="Set the value of a key, only if the key does not exist", since="1.0.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "value", "type": "string"}],
)
def setnx(client: Client, argv: list[bytes]) -> object:
    return _read_modify_write(client, argv[1], lambda entry: (
        (0, None) if entry is not None else (1, (argv[2], 0))))


def _set_expiring(client: Client, argv: list[bytes], flags: int, name: str) -> object:
    return _blind_set(client, argv[1], argv[3], _expire_at_ms(client, argv[2], flags, name))


@command(
    "setex", 4, "write denyoom", (1, 1, 1), group="string", acl="@write @string @slow",
    summary="Set the value and expiration of a key", since="2.0.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "seconds", "type": "integer"}, {"name": "value", "type": "string"}],
)
def setex(client: Client, argv: list[bytes]) -> object:
    return _set_expiring(client, argv, _EX, "setex")


@command(
    "psetex", 4, "write denyoom", (1, 1, 1), group="string", acl="@write @string @slow",
    summary="Set the value and expiration in milliseconds of a key", since="2.6.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "milliseconds", "type": "integer"}, {"name": "value", "type": "string"}],
)
def psetex(client: Client, argv: list[bytes]) -> object:
    return _set_expiring(client, argv, _PX, "psetex")


@command(
    "getset", 3, "write denyoom fast", (1, 1, 1), group="string", acl="@write @string @fast",
    summary="Set the string value of a key and return its old value", since="1.0.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "value", "type": "string"}],
)
def getset(client: Client, argv: list[bytes]) -> object:
    def decide(entry: Entry | None) -> _Decision:
        _count_lookup(client, entry is not None)
        return (None if entry is None else entry.value), (argv[2], 0)
    return _read_modify_write(client, argv[1], decide)


@command(
    "getdel", 2, "write fast", (1, 1, 1), group="string", acl="@write @string @fast",
    summary="Get the value of a key and delete the key", since="6.2.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0}],
)
def getdel(client: Client, argv: list[bytes]) -> object:
    def decide(entry: Entry | None) -> _Decision:
        _count_lookup(client, entry is not None)
        return (None, None) if entry is None else (entry.value, (None, 0))
    return _read_modify_write(client, argv[1], decide)


@command(
    "getex", -2, "write fast", (1, 1, 1), group="string", acl="@write @string @fast",
    summary="Get the value of a key and optionally set its expiration", since="6.2.0",
    arguments=[
        {"name": "key", "type": "key", "key_spec_index": 0},
        {
            "name": "expiration", "type": "oneof", "flags": ["optional"],
            "arguments": [
                {"name": "seconds", "type": "integer", "token": "EX"},
                {"name": "milliseconds", "type": "integer", "token": "PX"},
                {"name": "unix-time-seconds", "type": "unix-time", "token": "EXAT"},
                {"name": "unix-time-milliseconds", "type": "unix-time", "token": "PXAT"},
                {"name": "persist", "type": "pure-token", "token": "PERSIST"},
            ],
        },
    ],
)
def getex(client: Client, argv: list[bytes]) -> object:
    flags, expire = _parse_expire_options(argv, 2, False) if len(argv) > 2 else (0, b"")

    def decide(entry: Entry | None) -> _Decision:
        _count_lookup(client, entry is not None)
        if entry is None:
            return None, None  # Redis validates the expire time only once the key is found
        value = entry.value
        if flags & _EXPIRES:
            expire_at = _expire_at_ms(client, expire, flags, "getex")
            if not flags & _RELATIVE and expire_at <= client.node.clock.wall_ms():
                return value, (None, 0)
            return value, (value, expire_at)
        if flags & _PERSIST and entry.expire_at_ms:
            return value, (value, 0)
        return value, None
    return _read_modify_write(client, argv[1], decide)


# Multi-key ------------------------------------------------------------------------------------


@command(
    "mget", -2, "readonly fast", (1, -1, 1), group="string", acl="@read @string @fast",
    summary="Get the values of all the given keys", since="1.0.0",
    complexity="O(N) where N is the number of keys to retrieve.",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0, "flags": ["multiple"]}],
)
async def mget(client: Client, argv: list[bytes]) -> object:
    entries = await client.node.get_many(client.db, argv[1:])
    values: list[bytes | None] = [None if e is None else e.value for e in entries]
    hits = len(values) - values.count(None)
    stats = client.server.stats
    stats.keyspace_hits += hits
    stats.keyspace_misses += len(values) - hits
    return values


_KEY_VALUE_ARGS: list[dict[str, Any]] = [{
    "name": "key_value", "type": "block", "flags": ["multiple"],
    "arguments": [{"name": "key", "type": "key", "key_spec_index": 0},
                  {"name": "value", "type": "string"}],
}]


def _pairs(argv: list[bytes], name: str) -> dict[bytes, bytes]:
    """MSET's key/value pairs; a key given twice takes its last value, as in Redis."""
    if len(argv) % 2 == 0:
        raise errors.wrong_arity(name)
    return dict(zip(argv[1::2], argv[2::2], strict=True))


@command(
    "mset", -3, "write denyoom", (1, -1, 2), group="string", acl="@write @string @slow",
    summary="Set multiple keys to multiple values", since="1.0.1",
    complexity="O(N) where N is the number of keys to set.", arguments=_KEY_VALUE_ARGS,
)
async def mset(client: Client, argv: list[bytes]) -> object:
    pairs = _pairs(argv, "mset")
    await client.node.write_many(client.db, [(k, v, 0) for k, v in pairs.items()])
    return OK


@command(
    "msetnx", -3, "write denyoom", (1, -1, 2), group="string", acl="@write @string @slow",
    summary="Set multiple keys to multiple values, only if none of the keys exist",
    since="1.0.1", complexity="O(N) where N is the number of keys to set.",
    arguments=_KEY_VALUE_ARGS,
)
async def msetnx(client: Client, argv: list[bytes]) -> object:
    pairs = _pairs(argv, "msetnx")
    node = client.node
    db = client.db
    for key in pairs:
        if await node.get(db, key) is not None:
            return 0
    await node.write_many(db, [(k, v, 0) for k, v in pairs.items()])
    return 1


# Byte ranges ----------------------------------------------------------------------------------


def _check_length(client: Client, size: int, added: int) -> None:
    if size + added > client.server.config.proto_max_bulk_len:
        raise CommandError(errors.STRING_TOO_LONG)


@command(
    "append", 3, "write denyoom fast", (1, 1, 1), group="string", acl="@write @string @fast",
    summary="Append a value to a key", since="2.0.0",
    complexity=(
        "O(1). The amortized time complexity is O(1) assuming the appended value is small "
        "and the already present value is of any size, since the dynamic string library "
        "used by Redis will double the free space available on every reallocation."
    ),
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "value", "type": "string"}],
)
def append(client: Client, argv: list[bytes]) -> object:
    suffix = argv[2]

    def decide(entry: Entry | None) -> _Decision:
        if entry is None:
            return len(suffix), (suffix, 0)  # even an empty suffix creates the key, as in Redis
        _check_length(client, len(entry.value), len(suffix))
        value = entry.value + suffix
        return len(value), (value, entry.expire_at_ms)
    return _read_modify_write(client, argv[1], decide)


@command(
    "strlen", 2, "readonly fast", (1, 1, 1), group="string", acl="@read @string @fast",
    summary="Get the length of the value stored in a key", since="2.2.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0}],
)
async def strlen(client: Client, argv: list[bytes]) -> object:
    entry = await client.node.get(client.db, argv[1])
    _count_lookup(client, entry is not None)
    return 0 if entry is None else len(entry.value)


_RANGE_ARGS: list[dict[str, Any]] = [{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "start", "type": "integer"}, {"name": "end", "type": "integer"}]
_RANGE_COMPLEXITY = (
    "O(N) where N is the length of the returned string. The complexity is ultimately "
    "determined by the returned length, but because creating a substring from an existing "
    "string is very cheap, it can be considered O(1) for small strings."
)


@command(
    "getrange", 4, "readonly", (1, 1, 1), group="string", acl="@read @string @slow",
    summary="Get a substring of the string stored at a key", since="2.4.0",
    complexity=_RANGE_COMPLEXITY, arguments=_RANGE_ARGS,
)
async def getrange(client: Client, argv: list[bytes]) -> object:
    start = parse_int(argv[2])
    end = parse_int(argv[3])
    entry = await client.node.get(client.db, argv[1])
    _count_lookup(client, entry is not None)
    if entry is None:
        return b""
    value = entry.value
    size = len(value)
    # redis-server's index arithmetic: both negative and inverted is empty, negative
    # indexes count from the end and are clamped at 0, the end is clamped at the last byte.
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start = max(size + start, 0)
    if end < 0:
        end = max(size + end, 0)
    end = min(end, size - 1)
    if start > end or size == 0:
        return b""
    return value[start : end + 1]


@command(
    "substr", 4, "readonly", (1, 1, 1), group="string", acl="@read @string @slow",
    summary="Get a substring of the string stored at a key", since="1.0.0",
    complexity=_RANGE_COMPLEXITY, arguments=_RANGE_ARGS,
)
async def substr(client: Client, argv: list[bytes]) -> object:
    return await getrange(client, argv)


@command(
    "setrange", 4, "write denyoom", (1, 1, 1), group="string", acl="@write @string @slow",
    summary="Overwrite part of a string at key starting at the specified offset",
    since="2.2.0",
    complexity=(
        "O(1), not counting the time taken to copy the new string in place. Usually, this "
        "string is very small so the amortized complexity is O(1). Otherwise, complexity is "
        "O(M) with M being the length of the value argument."
    ),
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "offset", "type": "integer"}, {"name": "value", "type": "string"}],
)
def setrange(client: Client, argv: list[bytes]) -> object:
    offset = parse_int(argv[2])
    if offset < 0:
        raise CommandError(errors.OFFSET_OUT_OF_RANGE)
    patch = argv[3]

    def decide(entry: Entry | None) -> _Decision:
        if not patch:
            # Writing nothing neither creates the key nor touches it.
            return (0 if entry is None else len(entry.value)), None
        _check_length(client, offset, len(patch))
        old = b"" if entry is None else entry.value
        if offset > len(old):
            value = old + bytes(offset - len(old)) + patch
        else:
            value = old[:offset] + patch + old[offset + len(patch):]
        return len(value), (value, 0 if entry is None else entry.expire_at_ms)
    return _read_modify_write(client, argv[1], decide)


# Counters -------------------------------------------------------------------------------------


def _incr_by(client: Client, key: bytes, delta: int) -> object:
    """INCR and its family; the TTL stays, as in Redis."""
    def decide(entry: Entry | None) -> _Decision:
        result = (0 if entry is None else parse_int(entry.value)) + delta
        if result > INT64_MAX or result < INT64_MIN:
            raise CommandError(errors.OVERFLOW)
        return result, (b"%d" % result, 0 if entry is None else entry.expire_at_ms)
    return _read_modify_write(client, key, decide)


_KEY_ARG: list[dict[str, Any]] = [{"name": "key", "type": "key", "key_spec_index": 0}]


@command(
    "incr", 2, "write denyoom fast", (1, 1, 1), group="string", acl="@write @string @fast",
    summary="Increment the integer value of a key by one", since="1.0.0", arguments=_KEY_ARG,
)
def incr(client: Client, argv: list[bytes]) -> object:
    return _incr_by(client, argv[1], 1)


@command(
    "decr", 2, "write denyoom fast", (1, 1, 1), group="string", acl="@write @string @fast",
    summary="Decrement the integer value of a key by one", since="1.0.0", arguments=_KEY_ARG,
)
def decr(client: Client, argv: list[bytes]) -> object:
    return _incr_by(client, argv[1], -1)


@command(
    "incrby", 3, "write denyoom fast", (1, 1, 1), group="string", acl="@write @string @fast",
    summary="Increment the integer value of a key by the given amount", since="1.0.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "increment", "type": "integer"}],
)
def incrby(client: Client, argv: list[bytes]) -> object:
    return _incr_by(client, argv[1], parse_int(argv[2]))


@command(
    "decrby", 3, "write denyoom fast", (1, 1, 1), group="string", acl="@write @string @fast",
    summary="Decrement the integer value of a key by the given number", since="1.0.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "decrement", "type": "integer"}],
)
def decrby(client: Client, argv: list[bytes]) -> object:
    decrement = parse_int(argv[2])
    if decrement == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _incr_by(client, argv[1], -decrement)


@command(
    "incrbyfloat", 3, "write denyoom fast", (1, 1, 1), group="string",
    acl="@write @string @fast",
    summary="Increment the float value of a key by the given amount", since="2.6.0",
    arguments=[{"name": "key", "type": "key", "key_spec_index": 0},
               {"name": "increment", "type": "double"}],
)
def incrbyfloat(client: Client, argv: list[bytes]) -> object:
    def decide(entry: Entry | None) -> _Decision:
        current = _LD_ZERO if entry is None else parse_long_double(entry.value)
        increment = parse_long_double(argv[2])
        if current is None or increment is None:
            raise CommandError(errors.NAN_OR_INF)
        result = format_long_double(add_long_double(current, increment))
        return result, (result, 0 if entry is None else entry.expire_at_ms)
    return _read_modify_write(client, argv[1], decide)


# x87 long double arithmetic for INCRBYFLOAT -----------------------------------------------------
#
# redis-server parses INCRBYFLOAT operands with strtold, adds them as 80-bit long doubles
# (x86-64: 64-bit significand, 15-bit exponent) and prints the sum with "%.17Lf" before
# stripping trailing zeros. Python's float is a 64-bit double, which would give different
# digits (10.5 + 0.1 -> 10.59999999999999964 instead of 10.6), so we emulate the format
# exactly with integers: a finite long double is (m, e), the value m * 2**e with |m| < 2**64.
# Parsing, addition and printing each round exactly once, to nearest with ties to even, as
# glibc and the x87 unit do.

LongDouble = tuple[int, int]

_LD_ZERO: LongDouble = (0, 0)
_LD_SIGNIFICAND_BITS = 64
_LD_MIN_EXP = -16445  # weight of the least subnormal bit
_LD_MAX_EXP = 16384  # every finite value is below 2**16384
_LD_DECIMAL_MAX = 4933  # any value >= 10**4933 overflows
_LD_DECIMAL_MIN = -4952  # any value < 10**-4951 rounds to zero (least subnormal ~3.6e-4951)
_LD_MAX_CHARS = 5 * 1024  # redis-server's MAX_LONG_DOUBLE_CHARS: longer input is refused
_PRINT_DIGITS = 17  # "%.17Lf"
_EXPONENT_CLAMP = 10**9  # an exponent beyond this saturates: it over/underflows anyway
# Python refuses int <-> str conversions of more than 4300 digits: convert in chunks.
_DIGIT_CHUNK = 3000
_DIGITS_AT_ONCE_BITS = 13000  # below 10**3913

# strtold's grammar (C locale), matched against the whole argument: redis-server refuses
# leading or trailing spaces and unparsed bytes. NaN parses but is then refused, so it is
# left out here.
_FLOAT_RE = re.compile(
    rb"""
    ([+-]?)
    (?:
        (inf(?:inity)?)
      | 0x(?:([0-9a-f]+)(?:\.([0-9a-f]*))?|\.([0-9a-f]+))(?:p([+-]?[0-9]+))?
      | (?:([0-9]+)(?:\.([0-9]*))?|\.([0-9]+))(?:e([+-]?[0-9]+))?
    )
    """,
    re.IGNORECASE | re.VERBOSE,
)


def _round_long_double(num: int, den: int) -> LongDouble | None:
    """num/den (den > 0) rounded to the nearest long double; None when it overflows."""
    if num == 0:
        return _LD_ZERO
    negative = num < 0
    num = -num if negative else num
    top = num.bit_length() - den.bit_length()  # 2**top <= num/den, or one less
    if (num if top >= 0 else num << -top) < (den << top if top >= 0 else den):
        top -= 1
    lsb = max(top - (_LD_SIGNIFICAND_BITS - 1), _LD_MIN_EXP)
    if lsb >= 0:
        quotient, remainder = divmod(num, den << lsb)
        divisor = den << lsb
    else:
        quotient, remainder = divmod(num << -lsb, den)
        divisor = den
    if 2 * remainder > divisor or (2 * remainder == divisor and quotient & 1):
        quotient += 1
    if quotient.bit_length() > _LD_SIGNIFICAND_BITS:  # rounded up to 2**64
        quotient >>= 1
        lsb += 1
    if quotient.bit_length() + lsb > _LD_MAX_EXP:
        return None
    return (-quotient if negative else quotient, lsb)


def _int_from_digits(digits: bytes, base: int = 10) -> int:
    """int(digits), also for more digits than Python converts in one go."""
    if len(digits) <= _DIGIT_CHUNK:
        return int(digits, base) if digits else 0
    value = 0
    for i in range(0, len(digits), _DIGIT_CHUNK):
        chunk = digits[i : i + _DIGIT_CHUNK]
        value = value * base ** len(chunk) + int(chunk, base)
    return value


def _digits_of(value: int) -> bytes:
    """Decimal digits of value >= 0, also beyond Python's int/str conversion limit."""
    if value.bit_length() < _DIGITS_AT_ONCE_BITS:
        return b"%d" % value
    high, low = divmod(value, 10**_DIGIT_CHUNK)
    return _digits_of(high) + _digits_of(low).rjust(_DIGIT_CHUNK, b"0")


def _exponent(text: bytes | None) -> int:
    if not text:
        return 0
    negative = text[:1] == b"-"
    digits = text.lstrip(b"+-").lstrip(b"0")
    value = _EXPONENT_CLAMP if len(digits) > 9 else int(digits or b"0")
    return -value if negative else value


def parse_long_double(arg: bytes) -> LongDouble | None:
    """arg as redis-server's string2ld reads it: (m, e), or None for an infinity.

    Refuses (with "ERR value is not a valid float") what Redis refuses: empty or overlong
    input, anything strtold does not consume entirely, NaN, and values that overflow or
    underflow to zero (strtold's ERANGE); a nonzero subnormal result is accepted.
    """
    if not arg or len(arg) >= _LD_MAX_CHARS:
        raise CommandError(errors.NOT_FLOAT)
    match = _FLOAT_RE.fullmatch(arg)
    if match is None:
        raise CommandError(errors.NOT_FLOAT)
    sign, infinity, hex_int, hex_frac, hex_frac_only, hex_exp, int_part, frac, frac_only, exp = (
        match.groups()
    )
    if infinity is not None:
        return None
    if int_part is not None or frac_only is not None:
        frac_digits = frac_only if frac_only is not None else (frac or b"")
        mantissa = ((int_part or b"") + frac_digits).lstrip(b"0")
        if not mantissa:
            return _LD_ZERO
        scale = _exponent(exp) - len(frac_digits)
        magnitude = scale + len(mantissa) - 1  # 10**magnitude <= value < 10**(magnitude+1)
        if magnitude >= _LD_DECIMAL_MAX or magnitude < _LD_DECIMAL_MIN:
            raise CommandError(errors.NOT_FLOAT)
        num = _int_from_digits(mantissa)
        if scale >= 0:
            result = _round_long_double(num * 10**scale, 1)
        else:
            result = _round_long_double(num, 10**-scale)
    else:
        frac_digits = hex_frac_only if hex_frac_only is not None else (hex_frac or b"")
        num = _int_from_digits((hex_int or b"") + frac_digits, 16)
        if num == 0:
            return _LD_ZERO
        shift = _exponent(hex_exp) - 4 * len(frac_digits)
        top = num.bit_length() - 1 + shift  # 2**top <= value < 2**(top+1)
        if top >= _LD_MAX_EXP or top < _LD_MIN_EXP - 1:
            raise CommandError(errors.NOT_FLOAT)
        result = _round_long_double(num << shift, 1) if shift >= 0 else (
            _round_long_double(num, 1 << -shift)
        )
    if result is None or result[0] == 0:
        raise CommandError(errors.NOT_FLOAT)
    if sign == b"-":
        return (-result[0], result[1])
    return result


def add_long_double(a: LongDouble, b: LongDouble) -> LongDouble | None:
    """a + b rounded to a long double; None when the sum overflows to infinity."""
    exp = min(a[1], b[1])
    total = (a[0] << (a[1] - exp)) + (b[0] << (b[1] - exp))
    if exp >= 0:
        return _round_long_double(total << exp, 1)
    return _round_long_double(total, 1 << -exp)


def format_long_double(value: LongDouble | None) -> bytes:
    """printf("%.17Lf") of value with trailing zeros (and a bare '.') removed, as Redis does.

    An infinite sum (None) is an error: INCRBYFLOAT refuses to store it.
    """
    if value is None:
        raise CommandError(errors.NAN_OR_INF)
    mantissa, exp = value
    magnitude = -mantissa if mantissa < 0 else mantissa
    if exp >= 0:
        scaled = (magnitude << exp) * 10**_PRINT_DIGITS
    else:
        divisor = 1 << -exp
        scaled, remainder = divmod(magnitude * 10**_PRINT_DIGITS, divisor)
        if 2 * remainder > divisor or (2 * remainder == divisor and scaled & 1):
            scaled += 1
    digits = _digits_of(scaled).rjust(_PRINT_DIGITS + 1, b"0")
    fraction = digits[-_PRINT_DIGITS:].rstrip(b"0")
    text = digits[:-_PRINT_DIGITS] + (b"." + fraction if fraction else b"")
    # "-0.00000000000000000" loses its sign, as in Redis.
    if mantissa < 0 and text != b"0":
        return b"-" + text
    return text
