"""The configuration directive table: one row per redis.conf directive respkv understands.

Each `Directive` row carries everything the rest of the configuration code needs: its name
and alias, default, whether CONFIG SET may change it, how its arguments are parsed and
checked, how CONFIG GET shows its value and how CONFIG REWRITE writes it back. Loading a
file, CONFIG GET, CONFIG SET, CONFIG REWRITE and the reference docs all read this one table,
so adding a directive is adding one row (and one typed attribute on `respkv.config.Config`).

The reference for every parser and every message is redis-server 7.0 (config.c, util.c),
because users copy redis.conf lines and match on error texts:

1. Integers are parsed as `string2ll` does: no sign but `-`, no leading zeros or spaces.
2. Memory sizes are parsed as `memtoull` does: digits then an optional unit, case-insensitive:
   b, k=1000, kb=1024, m, mb, g, gb. `""` and a bare unit mean 0, as in Redis.
3. Range errors quote the bounds as Redis does ("argument must be between 0 and 65535
   inclusive"); unknown enum values list the choices in Redis's table order.
4. Parsers are pure: they take the arguments and the current value and return a new value
   (never mutate the old one), or raise `BadValue(reason)`. `dir` is the exception: like
   Redis's chdir() it must name an existing directory, so it looks at the filesystem.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from cluster import consistency
from cluster.departures import TOMBSTONE_S_DEFAULT
from cluster.preflist import ReplicationFactorError, format_replication, parse_replication

__all__ = [
    "BY_NAME",
    "DIRECTIVES",
    "NAMES",
    "BadValue",
    "BufferLimit",
    "Directive",
    "LoadContext",
    "Mutability",
    "format_memory",
    "lookup",
    "memtoull",
    "reference_markdown",
    "sds_repr",
    "string2ll",
]

T = TypeVar("T")

INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1
LLONG_MAX = 2**63 - 1
ULLONG_MAX = 2**64 - 1
LONG_STR_SIZE = 21  # string2ll refuses strings this long or longer (util.h)
MEMTOULL_DIGITS_MAX = 127  # memtoull copies the digits into a 128-byte buffer
BIND_ADDRESSES_MAX = 16  # CONFIG_BINDADDR_MAX
HZ_MIN, HZ_MAX = 1, 500  # CONFIG_MIN_HZ, CONFIG_MAX_HZ: hz is clamped into this range
REPLICATION_FACTOR_MAX = 16  # more copies multiply write cost for no practical durability gain
ENGINE_BYTES_MAX = 1 << 40  # the engine's own bound on its sizes and rates (engine/options.py)
MEMTABLE_SIZE_MIN = 4096  # smaller flushes a table per handful of keys: only useful in tests

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2,
          "g": 1000**3, "gb": 1024**3}


class BadValue(Exception):
    """A directive's arguments were rejected; `reason` is Redis's wording for why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Mutability(enum.Enum):
    MUTABLE = "mutable"
    # Fixed once the server runs: "can't set immutable config".
    IMMUTABLE = "immutable"
    # Redis 7 refuses CONFIG SET of these unless enable-protected-configs allows it;
    # respkv never allows it, and answers with Redis's default wording.
    PROTECTED = "protected"


@dataclass
class LoadContext:
    """What a parser may need to know about where its arguments come from."""

    # A later line of the same directive in one config-file load (never in CONFIG SET):
    # `save` lines accumulate then.
    appending: bool = False
    # What a relative `dir` is resolved against: Redis chdir()s at each `dir` line, so a
    # relative one is relative to the previous one.
    base_dir: str = "."


class BufferLimit(NamedTuple):
    """One client class of client-output-buffer-limit; 0 means no limit."""

    hard_limit_bytes: int
    soft_limit_bytes: int
    soft_limit_seconds: int


# Parse(args, current value, context) -> new value. Show(value) -> CONFIG GET text.
# Rewrite(value, default) -> [(arguments text, force)] one per config-file line; a line is
# written even where the file lacks the directive when force is true (value not default).
Parse = Callable[[list[str], T, LoadContext], T]
Show = Callable[[T], str]
Rewrite = Callable[[T, T], list[tuple[str, bool]]]


@dataclass(frozen=True, eq=False)
class Directive(Generic[T]):
    name: str
    default: T
    parse: Parse[T]
    show: Show[T]
    rewrite: Rewrite[T]
    doc: str  # one line: what it does and why respkv has it
    mutability: Mutability = Mutability.MUTABLE
    # Takes any number of arguments (save, bind, client-output-buffer-limit); CONFIG SET
    # splits its value on single spaces, and a file line with one argument is re-split.
    multi_arg: bool = False
    alias: str | None = None
    # Turns the default into the starting value (dir: resolve against the cwd).
    resolve_default: Callable[[T, str], T] | None = None

    @property
    def attr(self) -> str:
        """The typed attribute on Config that holds the value."""
        return self.name.replace("-", "_")


# Value syntax -------------------------------------------------------------------------------


def string2ll(text: str) -> int | None:
    """Redis's strict integer parser (util.c string2ll), or None when it would refuse."""
    if not text or len(text.encode("utf-8", "surrogateescape")) >= LONG_STR_SIZE:
        return None
    if text == "0":
        return 0
    digits = text[1:] if text[0] == "-" else text
    if not digits or not ("1" <= digits[0] <= "9") or not _ascii_digits(digits):
        return None
    value = -int(digits) if text[0] == "-" else int(digits)
    return value if -LLONG_MAX - 1 <= value <= LLONG_MAX else None


def strtoll_whole(text: str) -> int | None:
    """`strtoll(s, &end, 10)` accepted only when `*end == '\\0'`, as save and
    client-output-buffer-limit check their counts: leading blanks and `+` pass, `""` is 0."""
    if text == "":
        return 0
    body = text.lstrip(" \t\n\v\f\r")
    sign = -1 if body[:1] == "-" else 1
    if body[:1] in ("+", "-"):
        body = body[1:]
    if not body or not _ascii_digits(body):
        return None
    return max(-LLONG_MAX - 1, min(LLONG_MAX, sign * int(body)))  # strtoll saturates


def memtoull(text: str) -> int | None:
    """A memory size in bytes (util.c memtoull), or None when it would refuse.

    The digits saturate at 2**64-1 as strtoull does, but the product with the unit is
    exact and may pass 2**64-1: Redis wraps it around (17179869184gb becomes 0), respkv
    leaves it to the caller's range check to refuse.
    """
    if text.startswith("-"):
        return None
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    digits, unit = text[:end], text[end:]
    if not unit.isascii() or unit.lower() not in _UNITS or len(digits) > MEMTOULL_DIGITS_MAX:
        return None
    return min(int(digits or "0"), ULLONG_MAX) * _UNITS[unit.lower()]  # strtoull saturates


def format_memory(value: int) -> str:
    """The shortest exact redis.conf spelling, as CONFIG REWRITE writes sizes."""
    for unit, size in (("gb", 1024**3), ("mb", 1024**2), ("kb", 1024)):
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def sds_repr(raw: bytes) -> bytes:
    """sdscatrepr: a double-quoted form that sdssplitargs reads back to the same bytes."""
    out = bytearray(b'"')
    for byte in raw:
        char = bytes((byte,))
        if char in b'\\"':
            out += b"\\" + char
        elif char in _REPR_ESCAPES:
            out += _REPR_ESCAPES[char]
        elif 0x20 <= byte <= 0x7E:
            out += char
        else:
            out += b"\\x%02x" % byte
    return bytes(out + b'"')


_REPR_ESCAPES = {b"\n": b"\\n", b"\r": b"\\r", b"\t": b"\\t", b"\a": b"\\a", b"\b": b"\\b"}


def _ascii_digits(text: str) -> bool:
    return all("0" <= char <= "9" for char in text)


def _quote(value: str) -> str:
    return sds_repr(value.encode("utf-8", "surrogateescape")).decode("ascii")


def _simple_rewrite(show: Callable[[T], str]) -> Rewrite[T]:
    return lambda value, default: [(show(value), value != default)]


# Directive kinds ----------------------------------------------------------------------------


def _bounded(value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise BadValue(f"argument must be between {low} and {high} inclusive")
    return value


def integer(name: str, default: int, low: int, high: int, doc: str, *,
            mutability: Mutability = Mutability.MUTABLE, alias: str | None = None,
            clamp: tuple[int, int] | None = None) -> Directive[int]:
    def parse(args: list[str], current: int, ctx: LoadContext) -> int:
        value = string2ll(args[0])
        if value is None:
            raise BadValue("argument couldn't be parsed into an integer")
        value = _bounded(value, low, high)
        # hz: Redis accepts any int, then quietly keeps it within what its timers support.
        return value if clamp is None else max(clamp[0], min(clamp[1], value))

    return Directive(name, default, parse, str, _simple_rewrite(str), doc, mutability,
                     alias=alias)


def memory(name: str, default: int, low: int, high: int, doc: str) -> Directive[int]:
    def parse(args: list[str], current: int, ctx: LoadContext) -> int:
        value = memtoull(args[0])
        if value is None:
            raise BadValue("argument must be a memory value")
        return _bounded(value, low, high)

    return Directive(name, default, parse, str, _simple_rewrite(format_memory), doc)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def boolean(name: str, default: bool, doc: str, *,
            mutability: Mutability = Mutability.MUTABLE,
            only: tuple[bool, str] | None = None) -> Directive[bool]:
    """`only=(value, reason)`: respkv supports just that value; others fail with reason."""

    def parse(args: list[str], current: bool, ctx: LoadContext) -> bool:
        word = args[0].lower() if args[0].isascii() else ""
        if word not in ("yes", "no"):
            raise BadValue("argument must be 'yes' or 'no'")
        value = word == "yes"
        if only is not None and value != only[0]:
            raise BadValue(only[1])
        return value

    return Directive(name, default, parse, _yes_no, _simple_rewrite(_yes_no), doc, mutability)


def choice(name: str, default: str, choices: tuple[str, ...], doc: str, *,
           mutability: Mutability = Mutability.MUTABLE) -> Directive[str]:
    def parse(args: list[str], current: str, ctx: LoadContext) -> str:
        word = args[0].lower() if args[0].isascii() else ""
        if word not in choices:
            raise BadValue("argument(s) must be one of the following: " + ", ".join(choices))
        return word

    return Directive(name, default, parse, str, _simple_rewrite(str), doc, mutability)


def string(name: str, default: str, doc: str, *,
           mutability: Mutability = Mutability.MUTABLE) -> Directive[str]:
    def parse(args: list[str], current: str, ctx: LoadContext) -> str:
        return args[0]

    return Directive(name, default, parse, str, _simple_rewrite(_quote), doc, mutability)


# The special ones ---------------------------------------------------------------------------


def _parse_save(args: list[str], current: str, ctx: LoadContext) -> str:
    if len(args) == 1 and args[0] == "":  # save "" clears every save point
        args = []
    if len(args) % 2:
        raise BadValue("Invalid save parameters")
    numbers: list[int] = []
    for index, arg in enumerate(args):
        value = strtoll_whole(arg)
        if value is None or value < (1 if index % 2 == 0 else 0):
            raise BadValue("Invalid save parameters")
        numbers.append(value)
    text = " ".join(map(str, numbers))
    # In a config file every `save` line adds a point: the first one replaces the defaults.
    return f"{current} {text}" if ctx.appending and current and text else text


def _rewrite_save(value: str, default: str) -> list[tuple[str, bool]]:
    numbers = value.split()
    if not numbers:
        return [('""', value != default)]
    return [(f"{numbers[i]} {numbers[i + 1]}", value != default)
            for i in range(0, len(numbers), 2)]


def _parse_bind(args: list[str], current: list[str], ctx: LoadContext) -> list[str]:
    if len(args) > BIND_ADDRESSES_MAX:
        raise BadValue("Too many bind addresses specified.")
    if len(args) == 1 and args[0] == "":  # bind "" listens nowhere on TCP
        return []
    return list(args)


def _parse_phi(args: list[str], current: float, ctx: LoadContext) -> float:
    try:
        value = float(args[0])
    except ValueError:
        raise BadValue("argument couldn't be parsed into a number") from None
    if not 1.0 <= value <= 64.0:
        raise BadValue("argument must be between 1 and 64 inclusive")
    return value


def _show_float(value: float) -> str:
    return f"{value:g}"


def _parse_peers(args: list[str], current: list[str], ctx: LoadContext) -> list[str]:
    if len(args) == 1 and args[0] == "":
        return []
    args = [part for arg in args for part in arg.split(",") if part]
    for arg in args:
        host, sep, port = arg.rpartition(":")
        number = string2ll(port) if sep else None
        if not host or number is None or not 0 < number <= 65535:
            raise BadValue(f"'{arg}' is not host:port")
    return list(args)


def _parse_positive_memory(args: list[str], current: int, ctx: LoadContext) -> int:
    value = memtoull(args[0])
    if value is None:
        raise BadValue("argument must be a memory value")
    return _bounded(value, 1, ULLONG_MAX)


def _parse_replication(args: list[str], current: str, ctx: LoadContext) -> str:
    try:
        return format_replication(parse_replication(args))
    except ReplicationFactorError as exc:
        raise BadValue(str(exc)) from None


def _parse_consistency(args: list[str], current: str, ctx: LoadContext) -> str:
    try:
        return consistency.to_text(consistency.parse(" ".join(args))).lower()
    except consistency.ConsistencyError as exc:
        raise BadValue(str(exc)) from None


def _show_bind(value: list[str]) -> str:
    return " ".join(value)


def _rewrite_bind(value: list[str], default: list[str]) -> list[tuple[str, bool]]:
    return [(" ".join(value) if value else '""', value != default)]


# Class names as getClientTypeByName knows them; master has no limit to set.
_BUFFER_CLASSES = {"normal": "normal", "replica": "replica", "slave": "replica",
                   "pubsub": "pubsub"}
# CONFIG GET still says "slave", as Redis 7.0 does; clients parse that reply.
_BUFFER_CLASS_SHOWN = {"normal": "normal", "replica": "slave", "pubsub": "pubsub"}
BufferLimits = dict[str, BufferLimit]


def _parse_buffer_limits(args: list[str], current: BufferLimits,
                         ctx: LoadContext) -> BufferLimits:
    if len(args) % 4:
        raise BadValue("Wrong number of arguments in buffer limit configuration.")
    limits = dict(current)
    for i in range(0, len(args), 4):
        klass = _BUFFER_CLASSES.get(args[i].lower() if args[i].isascii() else "")
        if klass is None:
            raise BadValue("Invalid client class specified in buffer limit configuration.")
        hard, soft = memtoull(args[i + 1]), memtoull(args[i + 2])
        seconds = strtoll_whole(args[i + 3])
        # Redis wraps sizes past 2**64-1 and truncates seconds to a C int; respkv refuses.
        if (hard is None or soft is None or seconds is None or max(hard, soft) > ULLONG_MAX
                or not 0 <= seconds <= INT_MAX):
            raise BadValue("Error in hard, soft or soft_seconds setting in "
                           "buffer limit configuration.")
        limits[klass] = BufferLimit(hard, soft, seconds)
    return limits


def _show_buffer_limits(value: BufferLimits) -> str:
    return " ".join(f"{_BUFFER_CLASS_SHOWN[k]} {v.hard_limit_bytes} {v.soft_limit_bytes} "
                    f"{v.soft_limit_seconds}" for k, v in value.items())


def _rewrite_buffer_limits(value: BufferLimits,
                           default: BufferLimits) -> list[tuple[str, bool]]:
    return [(f"{klass} {format_memory(limit.hard_limit_bytes)} "
             f"{format_memory(limit.soft_limit_bytes)} {limit.soft_limit_seconds}",
             limit != default[klass]) for klass, limit in value.items()]


def _parse_dir(args: list[str], current: str, ctx: LoadContext) -> str:
    # Redis chdir()s here and reports strerror() when that fails; respkv keeps the path
    # instead, checks what chdir() would, and reports the real (symlink-free) path as
    # Redis's getcwd() does. Difference: a directory that does not exist yet is accepted,
    # because the server creates it at startup.
    if args[0] == "":
        raise BadValue(os.strerror(errno.ENOENT))
    path = os.path.join(ctx.base_dir, args[0])
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return os.path.realpath(path)
    except OSError as exc:
        raise BadValue(exc.strerror or str(exc)) from None
    if not stat.S_ISDIR(mode):
        raise BadValue(os.strerror(errno.ENOTDIR))
    if not os.access(path, os.X_OK):
        raise BadValue(os.strerror(errno.EACCES))
    return os.path.realpath(path)


def _resolve_dir(default: str, cwd: str) -> str:
    return os.path.realpath(os.path.join(cwd, default))


def _rewrite_dir(value: str, default: str) -> list[tuple[str, bool]]:
    return [(_quote(value), value != _resolve_dir(default, os.getcwd()))]


# The table ----------------------------------------------------------------------------------

_MUTABLE, _IMMUTABLE, _PROTECTED = Mutability.MUTABLE, Mutability.IMMUTABLE, Mutability.PROTECTED

DIRECTIVES: tuple[Directive[Any], ...] = (
    # Network
    integer("port", 6379, 0, 65535,
            "TCP port for client connections; 0 means no TCP listener."),
    Directive("bind", ["127.0.0.1", "-::1"], _parse_bind, _show_bind, _rewrite_bind,
              "Addresses to listen on; a leading '-' means skip it if it is unavailable.",
              multi_arg=True),
    boolean("protected-mode", True,
            "Without requirepass, accept clients from loopback addresses only."),
    integer("tcp-backlog", 511, 0, INT_MAX,
            "listen() backlog: connections the kernel queues before we accept them.",
            mutability=_IMMUTABLE),
    integer("timeout", 0, 0, INT_MAX,
            "Close a client idle for this many seconds; 0 never closes idle clients."),
    integer("tcp-keepalive", 300, 0, INT_MAX,
            "Seconds between TCP keepalive probes, to detect dead peers; 0 disables them."),
    integer("maxclients", 10000, 1, UINT_MAX,
            "Connected clients allowed at once; further ones get an error and are closed."),
    # Security
    string("requirepass", "",
           "Password of the default user, required by AUTH; empty means no password."),
    # Process
    boolean("daemonize", False,
            "respkv never forks: run it under a supervisor (systemd, docker) instead.",
            mutability=_IMMUTABLE,
            only=(False, "respkv does not fork into the background: daemonize must be "
                         "'no' (run it under a supervisor such as systemd)")),
    string("pidfile", "", "File the server writes its process id to; empty writes none.",
           mutability=_IMMUTABLE),
    choice("loglevel", "notice", ("debug", "verbose", "notice", "warning", "nothing"),
           "How much to log: debug, verbose, notice, warning or nothing."),
    string("logfile", "", "Log file; empty logs to standard output.",
           mutability=_IMMUTABLE),
    integer("databases", 16, 1, INT_MAX,
            "Number of databases SELECT can choose from (0 to databases-1).",
            mutability=_IMMUTABLE),
    # Storage
    Directive("dir", "./data", _parse_dir, str, _rewrite_dir,
              "Data directory (commit log, tables); created at startup if missing.",
              _PROTECTED, resolve_default=_resolve_dir),
    boolean("appendonly", True,
            "respkv always logs every write to its commit log, so this is always yes.",
            only=(True, "respkv always keeps its commit log: appendonly must be 'yes' "
                        "(appendfsync sets how often it is synced)")),
    choice("appendfsync", "everysec", ("everysec", "always", "no"),
           "fsync of the commit log: always (per write), everysec, or no (left to the OS)."),
    Directive("save", "", _parse_save, str, _rewrite_save,
              "RDB snapshot points; respkv has no snapshots, so this is only recorded.",
              multi_arg=True),
    memory("memtable-size", 64 * 1024**2, MEMTABLE_SIZE_MIN, ENGINE_BYTES_MAX,
           "Writes buffered in memory before a flush to a table; up to ~3x this is held."),
    memory("block-cache-size", 64 * 1024**2, 0, ENGINE_BYTES_MAX,
           "Memory for recently read table blocks (LRU), so hot keys skip the disk; 0 = none."),
    memory("compaction-throughput", 64 * 1024**2, 0, ENGINE_BYTES_MAX,
           "Bytes per second compaction may write (Cassandra's default), so merges never "
           "starve requests; 0 = unlimited."),
    boolean("table-workers", True,
            "Write the tables of flushes (1mb and more) and compactions in two helper "
            "processes, so that their CPU is not taken from requests; no: in the server."),
    # Memory and limits
    memory("maxmemory", 0, 0, ULLONG_MAX,
           "Recorded only: respkv keeps data on disk and does not evict."),
    choice("maxmemory-policy", "noeviction",
           ("volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl",
            "allkeys-lru", "allkeys-lfu", "allkeys-random", "noeviction"),
           "Recorded only (tools such as job queues check it); respkv never evicts."),
    memory("proto-max-bulk-len", 512 * 1024**2, 1024**2, LLONG_MAX,
           "Largest bulk string a client may send, in bytes."),
    memory("client-query-buffer-limit", 1024**3, 1024**2, LLONG_MAX,
           "Most unparsed input buffered per client before it is disconnected."),
    Directive("client-output-buffer-limit",
              {"normal": BufferLimit(0, 0, 0),
               "replica": BufferLimit(256 * 1024**2, 64 * 1024**2, 60),
               "pubsub": BufferLimit(32 * 1024**2, 8 * 1024**2, 60)},
              _parse_buffer_limits, _show_buffer_limits, _rewrite_buffer_limits,
              "Per class: hard limit, soft limit, soft seconds of unsent replies "
              "(only normal applies).", multi_arg=True),
    integer("hz", 10, 0, INT_MAX,
            "Background task frequency per second; kept within 1..500 as Redis does.",
            clamp=(HZ_MIN, HZ_MAX)),
    # Cluster
    Directive("replication-factor", "1", _parse_replication, str, _simple_rewrite(str),
              "N: copies of each key on distinct nodes (Riak's n_val), or DC:N per datacenter "
              "(dc1:3 dc2:2).", _IMMUTABLE, multi_arg=True, alias="n-val"),
    Directive("cluster-peers", [], _parse_peers, _show_bind, _rewrite_bind,
              "The other nodes' peer addresses (host:port); none = a standalone server.",
              _IMMUTABLE, multi_arg=True),
    Directive("seeds", [], _parse_peers, _show_bind, _rewrite_bind,
              "Peer addresses (host:port, comma or space separated) of nodes to join through; "
              "a node started with seeds joins their cluster by itself.",
              _IMMUTABLE, multi_arg=True),
    integer("cluster-port", 0, 0, 65535,
            "Port peers connect to; 0 = the client port + 10000 (as Redis's cluster bus).",
            mutability=_IMMUTABLE),
    string("cluster-announce-ip", "",
           "Address peers use to reach this node; empty = the first bind address.",
           mutability=_IMMUTABLE),
    string("cluster-secret", "",
           "Shared secret peers prove they know (HMAC); required with cluster-peers.",
           mutability=_IMMUTABLE),
    string("cluster-name", "respkv", "Nodes only talk to nodes of the same cluster name.",
           mutability=_IMMUTABLE),
    string("datacenter", "dc1", "This node's datacenter (replication-factor DC:N).",
           mutability=_IMMUTABLE),
    string("rack", "rack1", "This node's rack: replicas are spread over racks.",
           mutability=_IMMUTABLE),
    integer("num-tokens", 512, 1, 4096,
            "Virtual nodes drawn at first start (512 keeps ownership within 1.3x).",
            mutability=_IMMUTABLE),
    Directive("read-consistency", "quorum", _parse_consistency, str, _simple_rewrite(str),
              "Replicas that must answer a read: one, two, three, quorum, all, local_quorum, "
              "each_quorum or a number."),
    Directive("write-consistency", "quorum", _parse_consistency, str, _simple_rewrite(str),
              "Replicas that must acknowledge a write (as read-consistency)."),
    integer("request-timeout", 2000, 1, 3_600_000,
            "Milliseconds a request waits for replicas before the silent ones count as "
            "failed.", mutability=_IMMUTABLE),
    integer("gossip-interval", 1000, 10, 60_000,
            "Milliseconds between gossip rounds (heartbeats, membership, hint handoff, "
            "streaming steps); failure detection and ring changes scale with it.",
            mutability=_IMMUTABLE),
    Directive("phi-convict-threshold", 8.0, _parse_phi, _show_float, _simple_rewrite(_show_float),
              "Suspicion (phi-accrual) at which a silent peer is held down; Cassandra's "
              "default 8 convicts after ~18 gossip intervals of silence.", _IMMUTABLE),
    boolean("sloppy-quorum", True,
            "Writes and reads of a down replica go to the next healthy node, which keeps a "
            "hint for it (Dynamo's sloppy quorum); no = strict quorums.",
            mutability=_IMMUTABLE),
    integer("max-hint-window", 10_800, 0, 10 * 365 * 86_400,
            "Seconds after a node goes down during which hints are kept for it (Cassandra's "
            "max_hint_window); after, anti-entropy repairs it.", mutability=_IMMUTABLE),
    integer("hint-max-count", 1_000_000, 1, LLONG_MAX,
            "Most hints kept for one down node; more are dropped (and counted).",
            mutability=_IMMUTABLE),
    Directive("hint-max-bytes", 1024**3, _parse_positive_memory, str,
              _simple_rewrite(format_memory),
              "Most bytes of hints kept for one down node; more are dropped (and counted).",
              _IMMUTABLE),
    Directive("stream-throughput", 32 * 1024**2, _parse_positive_memory, str,
              _simple_rewrite(format_memory),
              "Bytes per second a joining node pulls, or a leaving node pushes, per stream "
              "(Cassandra's stream_throughput_outbound), so streaming leaves room for clients.",
              _IMMUTABLE),
    integer("hinted-handoff-throttle", 1000, 1, INT_MAX,
            "Hints per second handed off to one node that came back, so handoff never "
            "floods it.", mutability=_IMMUTABLE),
    choice("write-read", "quorum", ("quorum", "local"),
           "What a plain SET supersedes: the versions a quorum read returns first "
           "(quorum), or those the coordinator's own replica holds (local: one round trip "
           "less; concurrent writes through other nodes become siblings, newest wins).",
           mutability=_IMMUTABLE),
    integer("read-repair-every", 10, 1, 1_000_000,
            "One read in this many asks every replica of the key, so read repair reaches them "
            "all; the others ask the local replica and just enough more for their level. "
            "1 = every read asks every replica.", mutability=_IMMUTABLE),
    integer("read-speculate-ms", 0, 0, 3_600_000,
            "Milliseconds a read waits for its replicas before it also asks the spare ones "
            "(speculative retry); 0 = a tenth of request-timeout.", mutability=_IMMUTABLE),
    integer("anti-entropy-interval", 3600, 0, 10 * 365 * 86_400,
            "Seconds between background Merkle-tree repair passes over this node's ranges; "
            "0 = only on CLUSTER REPAIR.", mutability=_IMMUTABLE),
    integer("gc-grace-seconds", 864_000, 0, 10 * 365 * 86_400,
            "Seconds a tombstone is kept in a cluster before it may be purged (Cassandra's "
            "gc_grace_seconds), so no replica resurrects a deleted key.",
            mutability=_IMMUTABLE),
    integer("gossip-tombstone-seconds", TOMBSTONE_S_DEFAULT, 0, 10 * 365 * 86_400,
            "Seconds a departed node (decommissioned or CLUSTER FORGET) stays in gossip as a "
            "tombstone before every node drops it, then is remembered as long again so no "
            "stale copy revives it (Cassandra's expire time of LEFT states); 0 = forever.",
            mutability=_IMMUTABLE),
)

# Names and aliases, lower case, in table order (CONFIG GET * lists them in this order).
NAMES: tuple[tuple[str, Directive[Any]], ...] = tuple(
    (name, directive)
    for directive in DIRECTIVES
    for name in (directive.name, directive.alias) if name is not None
)
BY_NAME: dict[str, Directive[Any]] = dict(NAMES)


def lookup(name: str) -> Directive[Any] | None:
    """The directive called name (or aliased so), case-insensitively as Redis compares."""
    return BY_NAME.get(name.encode("utf-8", "surrogateescape").lower().decode(
        "utf-8", "surrogateescape"))


def reference_markdown() -> str:
    """A Markdown table of every directive, for the docs."""
    rows = ["| directive | default | CONFIG SET | description |", "|---|---|---|---|"]
    for d in DIRECTIVES:
        name = d.name if d.alias is None else f"{d.name} (alias {d.alias})"
        default = d.show(d.default) or '""'
        rows.append(f"| `{name}` | `{default}` | {d.mutability.value} | {d.doc} |")
    return "\n".join(rows) + "\n"
