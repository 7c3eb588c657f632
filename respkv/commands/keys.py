"""Keyspace commands: DEL, EXISTS, TYPE, RENAME, COPY, MOVE, KEYS, SCAN, the expiry family ...

Semantics, reply shapes and error texts follow redis-server 7.0 (db.c, expire.c, object.c).
Every respkv value is a string, so TYPE answers "string" or "none" and WRONGTYPE never occurs.

Atomicity: in a cluster of one no node call suspends, so a handler's read-then-write sequence
runs with no other command in between. RENAME writes both keys in one node.write_many batch
(one commit-log record); COPY and MOVE across databases are two writes, since a batch covers
one database (a crash between MOVE's two writes leaves the key in both databases).

Statistics follow redis-server: lookups "for reading" (EXISTS, TOUCH, TYPE, TTL and kin, COPY's
source, OBJECT) count keyspace hits and misses; lookups "for writing" count nothing.

Option words are compared the way Redis's strcasecmp() sees its NUL-terminated arguments:
case-insensitively and only up to the first NUL byte ("REPLACE\\0junk" is REPLACE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from respkv import errors
from respkv.commands.args import INT64_MAX, INT64_MIN, parse_int
from respkv.commands.table import Handler, command, container, subcommand
from respkv.glob import compile_pattern
from respkv.replies import OK, CommandError, Status

if TYPE_CHECKING:
    from cluster.node import Entry
    from respkv.client import Client

SAME_OBJECT = "ERR source and destination objects are the same"
INVALID_CURSOR = "ERR invalid cursor"
INT_RANGE = "ERR value is out of range, value must between -2147483648 and 2147483647"
LFU_NOT_SELECTED = (
    "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note "
    "that when switching between policies at runtime LRU and LFU data will take some time to "
    "adjust."
)
EXPIRE_NX_CONFLICT = "ERR NX and XX, GT or LT options at the same time are not compatible"
EXPIRE_GT_LT_CONFLICT = "ERR GT and LT options at the same time are not compatible"

UINT64_MAX = (1 << 64) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
SCAN_COUNT_DEFAULT = 10
KEYS_BATCH = 1024  # entries the node examines per scan call while KEYS walks the database
EMBSTR_SIZE_MAX = 44  # Redis's OBJ_ENCODING_EMBSTR_SIZE_LIMIT
SHARED_INTEGERS = 10000  # Redis's OBJ_SHARED_INTEGERS: 0..9999 are shared objects
SHARED_REFCOUNT = INT32_MAX  # OBJ_SHARED_REFCOUNT

_KEY: dict[str, Any] = {"name": "key", "type": "key", "key_spec_index": 0}
_KEYS: dict[str, Any] = {**_KEY, "flags": ["multiple"]}
_FLUSH_MODE: dict[str, Any] = {
    "name": "async", "type": "oneof", "flags": ["optional"], "arguments": [
        {"name": "async", "type": "pure-token", "token": "ASYNC", "since": "4.0.0"},
        {"name": "sync", "type": "pure-token", "token": "SYNC", "since": "6.2.0"},
    ],
}
_CONDITION: dict[str, Any] = {
    "name": "condition", "type": "oneof", "since": "7.0.0", "flags": ["optional"],
    "arguments": [
        {"name": word.lower(), "type": "pure-token", "token": word}
        for word in ("NX", "XX", "GT", "LT")
    ],
}


def _word(arg: bytes) -> bytes:
    """An option word as strcasecmp() compares it: lower case, cut at the first NUL."""
    return arg.split(b"\0", 1)[0].lower()


def _text(arg: bytes) -> str:
    """An argument as Redis's "%s" prints it (up to the first NUL)."""
    return arg.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_int32(arg: bytes) -> int:
    """getIntFromObjectOrReply: a 64-bit integer first, then the int range."""
    value = parse_int(arg)
    if not INT32_MIN <= value <= INT32_MAX:
        raise CommandError(INT_RANGE)
    return value


def _parse_db(client: Client, arg: bytes) -> int:
    db = _parse_int32(arg)
    if not 0 <= db < client.server.config.databases:
        raise CommandError(errors.DB_INDEX)
    return db


async def _lookup_read(client: Client, key: bytes) -> Entry | None:
    """node.get, counted in keyspace_hits / keyspace_misses as Redis's lookupKeyRead does."""
    entry = await client.node.get(client.db, key)
    stats = client.server.stats
    if entry is None:
        stats.keyspace_misses += 1
    else:
        stats.keyspace_hits += 1
    return entry


# Existence and deletion ------------------------------------------------------------------


def _delete_keys(client: Client, argv: list[bytes]) -> object:
    """DEL and UNLINK: without a coroutine in a cluster of one (as GET; see strings.get)."""
    node = client.node
    if node.local_only:
        return node.delete_many_now(client.db, argv[1:])
    return node.delete_many(client.db, argv[1:])


_DEL_COMPLEXITY = (
    "O(N) where N is the number of keys that will be removed. When a key to remove holds a "
    "value other than a string, the individual complexity for this key is O(M) where M is the "
    "number of elements in the list, set, sorted set or hash. Removing a single key that holds "
    "a string value is O(1)."
)


@command("del", -2, "write", (1, -1, 1), group="generic", summary="Delete a key",
         since="1.0.0", complexity=_DEL_COMPLEXITY, acl="@keyspace @write @slow",
         arguments=[_KEYS])
def del_(client: Client, argv: list[bytes]) -> object:
    return _delete_keys(client, argv)


@command("unlink", -2, "write fast", (1, -1, 1), group="generic",
         summary="Delete a key asynchronously in another thread. Otherwise it is just as DEL, "
                 "but non blocking.",
         since="4.0.0",
         complexity="O(1) for each key removed regardless of its size. Then the command does "
                    "O(N) work in a different thread in order to reclaim memory, where N is the "
                    "number of allocations the deleted objects where composed of.",
         acl="@keyspace @write @fast", arguments=[_KEYS])
def unlink(client: Client, argv: list[bytes]) -> object:
    return _delete_keys(client, argv)


async def _count_existing(client: Client, argv: list[bytes]) -> int:
    # A key named twice counts twice, as in Redis.
    entries = await client.node.get_many(client.db, argv[1:])
    misses = entries.count(None)
    stats = client.server.stats
    stats.keyspace_misses += misses
    stats.keyspace_hits += len(entries) - misses
    return len(entries) - misses


@command("exists", -2, "readonly fast", (1, -1, 1), group="generic",
         summary="Determine if a key exists", since="1.0.0",
         complexity="O(N) where N is the number of keys to check.",
         acl="@keyspace @read @fast", arguments=[_KEYS])
async def exists(client: Client, argv: list[bytes]) -> object:
    return await _count_existing(client, argv)


@command("touch", -2, "readonly fast", (1, -1, 1), group="generic",
         summary="Alters the last access time of a key(s). Returns the number of existing keys "
                 "specified.",
         since="3.2.1", complexity="O(N) where N is the number of keys that will be touched.",
         acl="@keyspace @read @fast", arguments=[_KEYS])
async def touch(client: Client, argv: list[bytes]) -> object:
    return await _count_existing(client, argv)


@command("type", 2, "readonly fast", (1, 1, 1), group="generic",
         summary="Determine the type stored at key", since="1.0.0",
         acl="@keyspace @read @fast", arguments=[_KEY])
async def type_(client: Client, argv: list[bytes]) -> object:
    return Status("none" if await _lookup_read(client, argv[1]) is None else "string")


# Renaming, copying, moving ---------------------------------------------------------------

_NEWKEY: dict[str, Any] = {"name": "newkey", "type": "key", "key_spec_index": 1}


async def _rename(client: Client, argv: list[bytes], nx: bool) -> object:
    node, db = client.node, client.db
    src, dst = argv[1], argv[2]
    entry = await node.get(db, src)
    if entry is None:
        raise CommandError(errors.NO_SUCH_KEY)
    if src == dst:
        return 0 if nx else OK
    if nx and await node.get(db, dst) is not None:
        return 0
    # One batch: the new name (with the TTL carried over) and the old name's tombstone.
    await node.write_many(db, [(dst, entry.value, entry.expire_at_ms), (src, None, 0)])
    return 1 if nx else OK


@command("rename", 3, "write", (1, 2, 1), group="generic", summary="Rename a key",
         since="1.0.0", acl="@keyspace @write @slow", arguments=[_KEY, _NEWKEY])
async def rename(client: Client, argv: list[bytes]) -> object:
    return await _rename(client, argv, nx=False)


@command("renamenx", 3, "write fast", (1, 2, 1), group="generic",
         summary="Rename a key, only if the new key does not exist", since="1.0.0",
         acl="@keyspace @write @fast", arguments=[_KEY, _NEWKEY])
async def renamenx(client: Client, argv: list[bytes]) -> object:
    return await _rename(client, argv, nx=True)


@command("copy", -3, "write denyoom", (1, 2, 1), group="generic", summary="Copy a key",
         since="6.2.0",
         complexity="O(N) worst case for collections, where N is the number of nested items. "
                    "O(1) for string values.",
         acl="@keyspace @write @slow",
         arguments=[
             {"name": "source", "type": "key", "key_spec_index": 0},
             {"name": "destination", "type": "key", "key_spec_index": 1},
             {"name": "destination-db", "type": "integer", "token": "DB", "flags": ["optional"]},
             {"name": "replace", "type": "pure-token", "token": "REPLACE",
              "flags": ["optional"]},
         ])
async def copy(client: Client, argv: list[bytes]) -> object:
    src_db = dst_db = client.db
    replace = False
    i = 3
    while i < len(argv):
        word = _word(argv[i])
        if word == b"replace":
            replace = True
        elif word == b"db" and i + 1 < len(argv):
            dst_db = _parse_db(client, argv[i + 1])
            i += 1
        else:
            raise CommandError(errors.SYNTAX)
        i += 1
    src, dst = argv[1], argv[2]
    if src_db == dst_db and src == dst:
        raise CommandError(SAME_OBJECT)
    entry = await _lookup_read(client, src)
    if entry is None:
        return 0
    node = client.node
    if not replace and await node.get(dst_db, dst) is not None:
        return 0
    await node.put(dst_db, dst, entry.value, entry.expire_at_ms)
    return 1


@command("move", 3, "write fast", (1, 1, 1), group="generic",
         summary="Move a key to another database", since="1.0.0",
         acl="@keyspace @write @fast",
         arguments=[_KEY, {"name": "db", "type": "integer"}])
async def move(client: Client, argv: list[bytes]) -> object:
    dst_db = _parse_db(client, argv[2])
    src_db = client.db
    if dst_db == src_db:
        raise CommandError(SAME_OBJECT)
    node, key = client.node, argv[1]
    entry = await node.get(src_db, key)
    if entry is None or await node.get(dst_db, key) is not None:
        return 0
    await node.put(dst_db, key, entry.value, entry.expire_at_ms)
    await node.delete(src_db, key)
    return 1


# Iteration -------------------------------------------------------------------------------


@command("keys", 2, "readonly", group="generic",
         summary="Find all keys matching the given pattern", since="1.0.0",
         complexity="O(N) with N being the number of keys in the database, under the "
                    "assumption that the key names in the database and the given pattern have "
                    "limited length.",
         acl="@keyspace @read @slow @dangerous",
         arguments=[{"name": "pattern", "type": "pattern"}])
async def keys(client: Client, argv: list[bytes]) -> object:
    pattern = argv[1]
    # Like Redis, only the exact pattern "*" skips the matcher (so it alone lists the key "").
    match = None if pattern == b"*" else compile_pattern(pattern).match
    node, db = client.node, client.db
    found: list[bytes] = []
    cursor = 0
    while True:
        cursor, batch = await node.scan(db, cursor, KEYS_BATCH)
        found.extend(batch if match is None else filter(match, batch))
        if cursor == 0:
            return found


def parse_cursor(arg: bytes) -> int:
    """A SCAN cursor as redis-server 7.0 reads it: strtoul() with its leniencies.

    Accepted: optional '+' or '-' (negative values wrap modulo 2**64, as strtoul does), an
    empty string (cursor 0), anything after a NUL byte. Refused: a leading space, trailing
    bytes, no digits after a sign, values beyond 2**64-1.
    """
    text = arg.split(b"\0", 1)[0]
    if not text:
        return 0
    if text[:1].isspace():
        raise CommandError(INVALID_CURSOR)
    sign = text[:1]
    digits = text[1:] if sign in (b"+", b"-") else text
    if not digits or not digits.isdigit() or not digits.isascii():
        raise CommandError(INVALID_CURSOR)
    value = int(digits)
    if value > UINT64_MAX:
        raise CommandError(INVALID_CURSOR)
    return (-value) & UINT64_MAX if sign == b"-" else value


@command("scan", -2, "readonly", group="generic",
         summary="Incrementally iterate the keys space", since="2.8.0",
         complexity="O(1) for every call. O(N) for a complete iteration, including enough "
                    "command calls for the cursor to return back to 0. N is the number of "
                    "elements inside the collection.",
         acl="@keyspace @read @slow",
         arguments=[
             {"name": "cursor", "type": "integer"},
             {"name": "pattern", "type": "pattern", "token": "MATCH", "flags": ["optional"]},
             {"name": "count", "type": "integer", "token": "COUNT", "flags": ["optional"]},
             {"name": "type", "type": "string", "token": "TYPE", "since": "6.0.0",
              "flags": ["optional"]},
         ])
async def scan(client: Client, argv: list[bytes]) -> object:
    cursor = parse_cursor(argv[1])
    count = SCAN_COUNT_DEFAULT
    pattern: bytes | None = None
    type_name: bytes | None = None
    i = 2
    while i < len(argv):
        word = _word(argv[i])
        if i + 1 >= len(argv):
            raise CommandError(errors.SYNTAX)
        if word == b"count":
            count = parse_int(argv[i + 1])
            if count < 1:
                raise CommandError(errors.SYNTAX)
        elif word == b"match":
            pattern = argv[i + 1]
        elif word == b"type":
            type_name = _word(argv[i + 1])
        else:
            raise CommandError(errors.SYNTAX)
        i += 2
    next_cursor, found = await client.node.scan(client.db, cursor, count)
    if type_name is not None and type_name != b"string":
        found = []  # every respkv value is a string
    elif pattern is not None and pattern != b"*":
        found = list(filter(compile_pattern(pattern).match, found))
    return [b"%d" % next_cursor, found]


@command("randomkey", 1, "readonly", group="generic",
         summary="Return a random key from the keyspace", since="1.0.0",
         acl="@keyspace @read @slow")
async def randomkey(client: Client, argv: list[bytes]) -> object:
    return await client.node.random_key(client.db)


# Whole databases -------------------------------------------------------------------------


@command("dbsize", 1, "readonly fast", group="server",
         summary="Return the number of keys in the selected database", since="1.0.0",
         acl="@keyspace @read @fast")
async def dbsize(client: Client, argv: list[bytes]) -> object:
    return await client.node.dbsize(client.db)


def _check_flush_mode(argv: list[bytes]) -> None:
    # ASYNC and SYNC are both accepted; respkv's flush is the same either way.
    if len(argv) > 2 or (len(argv) == 2 and _word(argv[1]) not in (b"async", b"sync")):
        raise CommandError(errors.SYNTAX)


@command("flushdb", -1, "write", group="server",
         summary="Remove all keys from the current database", since="1.0.0",
         complexity="O(N) where N is the number of keys in the selected database",
         acl="@keyspace @write @slow @dangerous", arguments=[_FLUSH_MODE])
async def flushdb(client: Client, argv: list[bytes]) -> object:
    _check_flush_mode(argv)
    await client.server.touch_watched_before_flush(client.db)
    await client.node.flushdb(client.db)
    return OK


@command("flushall", -1, "write", group="server", summary="Remove all keys from all databases",
         since="1.0.0", complexity="O(N) where N is the total number of keys in all databases",
         acl="@keyspace @write @slow @dangerous", arguments=[_FLUSH_MODE])
async def flushall(client: Client, argv: list[bytes]) -> object:
    _check_flush_mode(argv)
    await client.server.touch_watched_before_flush(None)
    await client.node.flushall()
    return OK


# Expiry ----------------------------------------------------------------------------------

_NX, _XX, _GT, _LT = 1, 2, 4, 8
_EXPIRE_FLAGS = {b"nx": _NX, b"xx": _XX, b"gt": _GT, b"lt": _LT}


def _parse_expire_flags(argv: list[bytes]) -> int:
    flags = 0
    for arg in argv[3:]:
        flag = _EXPIRE_FLAGS.get(_word(arg))
        if flag is None:
            raise CommandError(f"ERR Unsupported option {_text(arg)}")
        flags |= flag
    if flags & _NX and flags & (_XX | _GT | _LT):
        raise CommandError(EXPIRE_NX_CONFLICT)
    if flags & _GT and flags & _LT:
        raise CommandError(EXPIRE_GT_LT_CONFLICT)
    return flags


async def _expire(client: Client, argv: list[bytes], relative: bool, unit_ms: int) -> object:
    """expireGenericCommand: options first, then the time, its overflow checks, the key."""
    flags = _parse_expire_flags(argv)
    when = parse_int(argv[2])
    invalid = errors.INVALID_EXPIRE.format(argv[0].decode("latin-1").lower())
    if unit_ms == 1000:
        # C's LLONG_MAX / 1000 truncates towards zero on both sides.
        if not -(-INT64_MIN // 1000) <= when <= INT64_MAX // 1000:
            raise CommandError(invalid)
        when *= 1000
    now_ms = client.node.clock.wall_ms()
    base_ms = now_ms if relative else 0
    if when > INT64_MAX - base_ms:
        raise CommandError(invalid)
    when += base_ms
    node, db, key = client.node, client.db, argv[1]
    entry = await node.get(db, key)
    if entry is None:
        return 0
    if flags:
        current = entry.expire_at_ms or -1
        if flags & _NX and current != -1:
            return 0
        if flags & _XX and current == -1:
            return 0
        if flags & _GT and (current == -1 or when <= current):
            return 0  # no expiry counts as an infinite one
        if flags & _LT and current != -1 and when >= current:
            return 0
    if when <= now_ms:
        await node.delete(db, key)  # a time in the past deletes the key, and that counts
    else:
        await node.put(db, key, entry.value, when, context=entry.context)
    return 1


def _expire_command(name: str, summary: str, since: str, time_arg: str,
                    time_type: str) -> Callable[[Handler], Handler]:
    return command(
        name, -3, "write fast", (1, 1, 1), group="generic",
        summary=summary, since=since, acl="@keyspace @write @fast",
        arguments=[_KEY, {"name": time_arg, "type": time_type}, _CONDITION],
    )


@_expire_command("expire", "Set a key's time to live in seconds", "1.0.0", "seconds",
                 "integer")
async def expire(client: Client, argv: list[bytes]) -> object:
    return await _expire(client, argv, relative=True, unit_ms=1000)


@_expire_command("pexpire", "Set a key's time to live in milliseconds", "2.6.0",
                 "milliseconds", "integer")
async def pexpire(client: Client, argv: list[bytes]) -> object:
    return await _expire(client, argv, relative=True, unit_ms=1)


@_expire_command("expireat", "Set the expiration for a key as a UNIX timestamp", "1.2.0",
                 "unix-time-seconds", "unix-time")
async def expireat(client: Client, argv: list[bytes]) -> object:
    return await _expire(client, argv, relative=False, unit_ms=1000)


@_expire_command("pexpireat",
                 "Set the expiration for a key as a UNIX timestamp specified in milliseconds",
                 "2.6.0", "unix-time-milliseconds", "unix-time")
async def pexpireat(client: Client, argv: list[bytes]) -> object:
    return await _expire(client, argv, relative=False, unit_ms=1)


async def _ttl(client: Client, key: bytes, in_ms: bool, absolute: bool) -> int:
    entry = await _lookup_read(client, key)
    if entry is None:
        return -2
    expire_at_ms = entry.expire_at_ms
    if not expire_at_ms:
        return -1
    ttl_ms = expire_at_ms if absolute else expire_at_ms - client.node.clock.wall_ms()
    ttl_ms = max(ttl_ms, 0)
    return ttl_ms if in_ms else (ttl_ms + 500) // 1000


def _ttl_command(name: str, summary: str, since: str) -> Callable[[Handler], Handler]:
    return command(name, 2, "readonly fast", (1, 1, 1), group="generic", summary=summary,
                   since=since, acl="@keyspace @read @fast", arguments=[_KEY])


@_ttl_command("ttl", "Get the time to live for a key in seconds", "1.0.0")
async def ttl(client: Client, argv: list[bytes]) -> object:
    return await _ttl(client, argv[1], in_ms=False, absolute=False)


@_ttl_command("pttl", "Get the time to live for a key in milliseconds", "2.6.0")
async def pttl(client: Client, argv: list[bytes]) -> object:
    return await _ttl(client, argv[1], in_ms=True, absolute=False)


@_ttl_command("expiretime", "Get the expiration Unix timestamp for a key", "7.0.0")
async def expiretime(client: Client, argv: list[bytes]) -> object:
    return await _ttl(client, argv[1], in_ms=False, absolute=True)


@_ttl_command("pexpiretime", "Get the expiration Unix timestamp for a key in milliseconds",
              "7.0.0")
async def pexpiretime(client: Client, argv: list[bytes]) -> object:
    return await _ttl(client, argv[1], in_ms=True, absolute=True)


@command("persist", 2, "write fast", (1, 1, 1), group="generic",
         summary="Remove the expiration from a key", since="2.2.0",
         acl="@keyspace @write @fast", arguments=[_KEY])
async def persist(client: Client, argv: list[bytes]) -> object:
    entry = await client.node.get(client.db, argv[1])
    if entry is None or not entry.expire_at_ms:
        return 0
    await client.node.put(client.db, argv[1], entry.value, 0, context=entry.context)
    return 1


# OBJECT ----------------------------------------------------------------------------------

_object = container("object", group="generic",
                    summary="A container for object introspection commands", since="2.2.3",
                    acl="@slow")
_OBJECT_KEY: list[dict[str, Any]] = [_KEY]


def _is_int_encodable(value: bytes) -> bool:
    """What Redis's tryObjectEncoding stores as an integer: string2l on at most 20 bytes."""
    if len(value) > 20:
        return False
    try:
        parse_int(value)
    except CommandError:
        return False
    return True


def encoding_of(value: bytes) -> bytes:
    """The encoding Redis gives a string set by SET (APPEND and SETRANGE would give "raw")."""
    if _is_int_encodable(value):
        return b"int"
    return b"embstr" if len(value) <= EMBSTR_SIZE_MAX else b"raw"


@subcommand(_object, "encoding", 3, "readonly", (2, 2, 1),
            summary="Inspect the internal encoding of a Redis object", since="2.2.3",
            acl="@keyspace @read @slow", arguments=_OBJECT_KEY)
async def object_encoding(client: Client, argv: list[bytes]) -> object:
    entry = await _lookup_read(client, argv[2])
    return None if entry is None else encoding_of(entry.value)


@subcommand(_object, "refcount", 3, "readonly", (2, 2, 1),
            summary="Get the number of references to the value of the key", since="2.2.3",
            acl="@keyspace @read @slow", arguments=_OBJECT_KEY)
async def object_refcount(client: Client, argv: list[bytes]) -> object:
    entry = await _lookup_read(client, argv[2])
    if entry is None:
        return None
    value = entry.value
    # Redis shares one object for each small integer and reports it with INT_MAX references.
    if _is_int_encodable(value) and 0 <= int(value) < SHARED_INTEGERS:
        return SHARED_REFCOUNT
    return 1


@subcommand(_object, "freq", 3, "readonly", (2, 2, 1),
            summary="Get the logarithmic access frequency counter of a Redis object",
            since="4.0.0", acl="@keyspace @read @slow", arguments=_OBJECT_KEY)
async def object_freq(client: Client, argv: list[bytes]) -> object:
    if await _lookup_read(client, argv[2]) is None:
        return None
    raise CommandError(LFU_NOT_SELECTED)  # respkv has no LFU eviction policy


_OBJECT_HELP = [
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
]


@subcommand(_object, "help", 2, "loading stale",
            summary="Show helpful text about the different subcommands", since="6.2.0",
            acl="@keyspace @slow")
async def object_help(client: Client, argv: list[bytes]) -> object:
    return [Status(line) for line in _OBJECT_HELP]
