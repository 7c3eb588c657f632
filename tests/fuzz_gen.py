"""A seeded generator of Redis command sequences for the randomized differential test.

Each step is a command and the way its reply is compared with redis-server's (a Check). The
sequences run over a small key space, so keys collide, with values that stress the string
semantics and a fair share of invalid input (wrong arity, unknown or conflicting options,
bad numbers, bad database indexes, errors at MULTI queue time and at EXEC).

Invariants:
1. The same seed and the same `now_s` give the same sequence (one random.Random, no other
   source of randomness), so a printed seed replays the failure.
2. Every reply is deterministic except where the Check says how it may differ:
   - TTL/PTTL depend on the moment they run: compared within a tolerance;
   - EXPIRETIME/PEXPIRETIME are exact unless a relative expiry (EX, PX, EXPIRE ...) may have
     reached the key ("tainted" keys, tracked by name, conservatively), then within a
     tolerance;
   - KEYS is compared as a multiset, SCAN as the set of keys of a full iteration, RANDOMKEY
     as "a key that exists on both, or nil on both".
3. No step can make a key expire while the sequence runs, and no GT/LT comparison can tie by
   chance: every relative expiry is drawn once from a pool of far-future offsets at least
   500 s apart from every other expiry of the run, absolute ones from the same pool shifted
   by 500 s, or from fixed times in the past (which delete the key at once on both sides;
   a SET in the past is followed by an EXISTS of its key, which deletes what Redis stored).
4. Nothing non-deterministic is generated inside MULTI (SCAN, RANDOMKEY), and the generator
   tracks MULTI state exactly as the servers do (a MULTI with the wrong arity opens none).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


class Check(enum.Enum):
    EXACT = "exact"
    TTL = "ttl"  # an integer TTL in seconds, within a tolerance
    PTTL = "pttl"  # an integer TTL in milliseconds, within a tolerance
    EXPIRETIME = "expiretime"  # seconds; exact unless the key is tainted (see Step.tolerant)
    PEXPIRETIME = "pexpiretime"
    KEYS = "keys"  # an array compared as a multiset
    SCAN = "scan"  # the driver iterates to cursor 0 on both sides
    RANDOMKEY = "randomkey"
    HELLO = "hello"  # exact but for the fields naming the server and the client id


@dataclass(frozen=True)
class Step:
    args: tuple[bytes, ...]
    check: Check = Check.EXACT
    tolerant: bool = False  # for EXPIRETIME/PEXPIRETIME: a relative expiry may be involved
    client: int = 0  # which of the run's connections to each server sends it
    inline: bytes | None = None  # the command as an inline request line, or None: RESP array

    def __str__(self) -> str:
        text = " ".join(_show(a) for a in self.args)
        if self.inline is not None:
            text = f"inline {self.inline!r}"
        return f"[client {self.client}] {text}" if self.client else text


def _show(arg: bytes) -> str:
    """An argument as Python source, long runs of one byte shortened (b'z' * 70000)."""
    if len(arg) > 40 and arg == arg[:1] * len(arg):
        return f"{arg[:1]!r}*{len(arg)}"
    return repr(arg)


KEYS = [b"k0", b"k1", b"k2", b"k3", b"k4", b"a*b", b"\x00\xffk", b""]
KEY_WEIGHTS = [10, 10, 8, 6, 4, 2, 2, 1]

INTEGERS = [
    b"0", b"1", b"-1", b"42", b"-42", b"10", str(INT64_MAX).encode(), str(INT64_MIN).encode(),
    str(INT64_MAX - 1).encode(), str(INT64_MIN + 1).encode(),
]
NOT_INTEGERS = [
    str(INT64_MAX + 1).encode(), str(INT64_MIN - 1).encode(), b"", b" 1", b"1 ", b"+1",
    b"007", b"-0", b"1.0", b"1e3", b"0x10", b"abc", b"inf", b"99999999999999999999999",
]
FLOATS = [
    b"0.1", b"-0.1", b"1.5", b"3.0e3", b"5.0e-1", b"1e308", b"-1e308", b"1.7976931348623157e308",
    b"0", b"-0", b"10.5", b"2.5e-5", b"17", b"0x1p3", b"1e-300", b".5", b"5.",
    # Beyond a double, inside an 80-bit long double (Redis's strtold accepts them).
    b"1e400", b"-1e400", b"1e-4940", b"4.9e-324", b"1.18973149535723176502e+4932",
]
NOT_FLOATS = [b"inf", b"-inf", b"nan", b"", b" 1", b"1 ", b"1,5", b"abc", b"1e", b"infinity",
              b"1e4933", b"-1e5000"]
OFFSETS = [b"0", b"1", b"2", b"5", b"-1", b"-3", b"-100", b"100", b"1000", str(INT64_MAX).encode(),
           str(INT64_MIN).encode(), b"x", b"1.5"]
DBS = [b"0", b"1", b"2", b"15", b"16", b"-1", b"x", b"", b"99999999999999999999"]


def _values(rng: random.Random) -> bytes:
    pick = rng.randrange(10)
    if pick < 3:
        return rng.choice(INTEGERS)
    if pick == 3:
        return rng.choice(NOT_INTEGERS)
    if pick == 4:
        return rng.choice(FLOATS)
    if pick == 5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
    if pick == 6:
        return rng.choice([b"x" * 100, b"y" * 5000, b"z" * 70000, b"\r\n", b"\xc3\xa9t\xc3\xa9"])
    return rng.choice([b"v", b"hello", b"", b"a*b", b"k1", b"00", b"1 2"])


INLINE_MAX = 4096  # inline requests stay far below Redis's 64 KiB inline limit
_PLAIN = frozenset(range(0x21, 0x7F)) - frozenset(b"\"'\\")
_ESCAPES = {b"\n"[0]: b"\\n", b"\r"[0]: b"\\r", b"\t"[0]: b"\\t", 8: b"\\b", 7: b"\\a",
            b'"'[0]: b'\\"', b"\\"[0]: b"\\\\"}


def inline_request(args: tuple[bytes, ...], rng: random.Random) -> bytes:
    """The command as an inline request line (sdssplitargs syntax): each argument bare,
    single-quoted or double-quoted with escapes, whichever its bytes allow."""
    words = []
    for arg in args:
        bare = bool(arg) and all(byte in _PLAIN for byte in arg)
        single = all(0x20 <= byte < 0x7F and byte != 0x5C for byte in arg)  # no backslash
        pick = rng.random()
        if bare and pick < 0.6:
            words.append(arg)
        elif single and pick < 0.8:
            words.append(b"'" + arg.replace(b"'", b"\\'") + b"'")
        else:
            words.append(b'"' + b"".join(_double_quoted(byte, rng) for byte in arg) + b'"')
    separator = rng.choice([b" ", b"  ", b"\t"])
    return separator.join(words) + rng.choice([b"\r\n", b"\n"])


def _double_quoted(byte: int, rng: random.Random) -> bytes:
    if byte in _ESCAPES and (byte in b'"\\' or rng.random() < 0.5):
        return _ESCAPES[byte]
    if 0x20 <= byte < 0x7F and byte not in b'"\\':
        return bytes([byte])
    return rng.choice([b"\\x%02x", b"\\x%02X"]) % byte


class Generator:
    """Builds one sequence of steps from a seed (invariant 1).

    `now_s` is the wall clock at the start of the run (absolute expiries are computed from
    it); `cluster` leaves out what docs/commands.md lists as differing in a cluster of
    several nodes: WATCH (refused), and a SET whose absolute expiry has passed (the replicas
    the read does not reach keep the expired value until their own expiry removes it, and
    DBSIZE counts it until then). With `clients` > 1 the steps are spread over that many
    connections (a quarter of the steps switch to a random one), each with its own MULTI
    state, so one client's writes land between another's WATCH, MULTI and EXEC.
    """

    def __init__(self, seed: int, now_s: int, *, cluster: bool = False,
                 clients: int = 1) -> None:
        self.rng = random.Random(seed)
        self.now_s = now_s
        self.watch = not cluster
        self.past_sets = not cluster
        self.clients = clients
        self.client = 0
        self._in_multi = [False] * clients
        self.tainted: set[bytes] = set()
        # Keys whose value APPEND, SETRANGE, INCRBYFLOAT or COPY may have built: Redis's
        # OBJECT ENCODING/REFCOUNT of those tell how, respkv's only what the value is.
        self.built: set[bytes] = set()
        self._follow: list[Step] = []  # steps a rule wants sent right after its own
        self._offsets_used: set[int] = set()
        self._rules: list[tuple[int, Callable[[], Step]]] = [
            (12, self._set), (6, self._get_like), (3, self._setnx_getset), (3, self._setex),
            (3, self._getex), (3, self._mget), (3, self._mset), (3, self._append),
            (3, self._range), (5, self._counter), (3, self._incrbyfloat), (4, self._delete),
            (3, self._exists), (2, self._type), (3, self._rename), (3, self._copy),
            (2, self._move), (2, self._keys), (2, self._scan), (1, self._randomkey),
            (2, self._dbsize), (1, self._flushdb), (6, self._expire), (5, self._ttl),
            (2, self._persist), (2, self._select), (3, self._multi),
            (1 if clients == 1 else 4, self._watch),
            (2, self._misc), (4, self._bad), (2, self._object), (2, self._connection),
        ]
        self._weights = [w for w, _ in self._rules]

    def steps(self, count: int) -> Iterator[Step]:
        made = 0
        while made < count:
            if self.clients > 1 and self.rng.random() < 0.25:
                self.client = self.rng.randrange(self.clients)
            step = self.rng.choices(self._rules, self._weights)[0][1]()
            if self.in_multi and step.check in (Check.SCAN, Check.RANDOMKEY):
                continue  # invariant 4
            made += 1
            if (step.check not in (Check.SCAN, Check.RANDOMKEY) and self.rng.random() < 0.05
                    and sum(map(len, step.args)) < INLINE_MAX):
                step = replace(step, inline=inline_request(step.args, self.rng))
            yield self._track(step)
            while self._follow:
                yield self._track(self._follow.pop(0))
        for client in range(self.clients):
            self.client = client
            if self.in_multi:
                yield self._track(Step((b"EXEC",)))

    # State the generator must follow --------------------------------------------------------

    @property
    def in_multi(self) -> bool:
        return self._in_multi[self.client]

    def _track(self, step: Step) -> Step:
        """The step, sent by the current client, whose MULTI state it updates."""
        name = step.args[0].upper()
        if name == b"MULTI" and len(step.args) == 1:
            self._in_multi[self.client] = True
        elif name == b"EXEC" or (name in (b"DISCARD", b"RESET") and len(step.args) == 1):
            # EXEC ends the transaction even when refused for its arity (EXECABORT).
            self._in_multi[self.client] = False
        return replace(step, client=self.client)

    # Building blocks ------------------------------------------------------------------------

    def key(self) -> bytes:
        return self.rng.choices(KEYS, KEY_WEIGHTS)[0]

    def _offset_s(self) -> int:
        """A fresh far-future offset in seconds, distinct from every other (invariant 3)."""
        while True:
            slot = self.rng.randrange(1, 1_000_000)
            if slot not in self._offsets_used:
                self._offsets_used.add(slot)
                return 10_000_000 + 1000 * slot

    def relative(self, key: bytes, in_ms: bool, *more: bytes) -> bytes:
        """A relative expiry for key (and any other keys it may reach): taints them."""
        self.tainted.update((key, *more))
        return self._time_arg(self._offset_s(), in_ms, invalid_ok=True)

    def absolute(self, in_ms: bool, past_ok: bool = True) -> bytes:
        pick = self.rng.randrange(10)
        if pick < 6 or not past_ok:
            when = self.now_s + self._offset_s() + 500
            return self._time_arg(when, in_ms, invalid_ok=True)
        # In the past: the key is deleted at once (or SET stores nothing), on both sides.
        past = self.rng.choice([1, self.now_s - 100, self.now_s - 86400])
        return str(past * 1000 if in_ms else past).encode()

    def _time_arg(self, seconds: int, in_ms: bool, invalid_ok: bool) -> bytes:
        if invalid_ok and self.rng.random() < 0.12:
            return self.rng.choice([b"0", b"-1", b"-100", b"x", b"", b"1.5", b" 10",
                                    str(INT64_MAX).encode(), str(INT64_MIN).encode(),
                                    str(INT64_MAX // 1000 + 1).encode()])
        if in_ms:
            return str(seconds * 1000 + self.rng.randrange(1000)).encode()
        return str(seconds).encode()

    def taint_copy(self, src: bytes, dst: bytes) -> None:
        for taint in (self.tainted, self.built):
            if src in taint:
                taint.add(dst)

    # Rules ----------------------------------------------------------------------------------

    def _set(self) -> Step:
        rng = self.rng
        key = self.key()
        args = [b"SET", key, _values(rng)]
        options: list[list[bytes]] = []
        if rng.random() < 0.3:
            options.append([rng.choice([b"NX", b"XX", b"nx", b"xx"])])
        if rng.random() < 0.5:
            kind = rng.choice([b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL", b"ex", b"pxat"])
            upper = kind.upper()
            if upper == b"KEEPTTL":
                options.append([kind])
            elif upper in (b"EX", b"PX"):
                options.append([kind, self.relative(key, upper == b"PX")])
            else:
                options.append([kind, self.absolute(upper == b"PXAT", self.past_sets)])
        if rng.random() < 0.25:
            options.append([b"GET"])
        if rng.random() < 0.1:  # a conflict, a repeat or an unknown option
            past = [b"PXAT", b"1"] if self.past_sets else [b"PXAT", b"x"]
            options.append(rng.choice([[b"NX"], [b"XX"], [b"KEEPTTL"], [b"EX", b"100"], past,
                                       [b"BOGUS"], [b"EX"], [b"GET"], [b"PERSIST"],
                                       [b"NX\x00junk"]]))
            self.tainted.add(key)
        rng.shuffle(options)
        for option in options:
            args.extend(option)
        if any(arg.upper() in (b"EXAT", b"PXAT") for arg in args[3:]):
            # Redis stores a SET whose absolute expiry has passed and its active expiry
            # removes it some milliseconds later: DBSIZE would race it. A read right away
            # removes it on both sides (invariant 3).
            self._follow.append(Step((b"EXISTS", key)))
        return Step(tuple(args))

    def _get_like(self) -> Step:
        name = self.rng.choice([b"GET", b"GET", b"STRLEN", b"GETDEL", b"get"])
        return Step((name, self.key()))

    def _setnx_getset(self) -> Step:
        name = self.rng.choice([b"SETNX", b"GETSET"])
        return Step((name, self.key(), _values(self.rng)))

    def _setex(self) -> Step:
        name = self.rng.choice([b"SETEX", b"PSETEX"])
        key = self.key()
        return Step((name, key, self.relative(key, name == b"PSETEX"), _values(self.rng)))

    def _getex(self) -> Step:
        rng = self.rng
        key = self.key()
        args = [b"GETEX", key]
        pick = rng.randrange(8)
        if pick in (0, 1):
            kind = rng.choice([b"EX", b"PX"])
            args += [kind, self.relative(key, kind == b"PX")]
        elif pick in (2, 3):
            kind = rng.choice([b"EXAT", b"PXAT"])
            args += [kind, self.absolute(kind == b"PXAT")]
        elif pick == 4:
            args.append(b"PERSIST")
        elif pick == 5:  # conflicts and unknown options
            args += rng.choice([[b"PERSIST", b"EX", b"10"], [b"EX", b"10", b"PX", b"10"],
                                [b"KEEPTTL"], [b"NX"], [b"EX"], [b"BOGUS"], [b"GET"]])
            self.tainted.add(key)
        return Step(tuple(args))

    def _mget(self) -> Step:
        return Step((b"MGET", *(self.key() for _ in range(self.rng.randint(1, 5)))))

    def _mset(self) -> Step:
        name = self.rng.choice([b"MSET", b"MSET", b"MSETNX"])
        args = [name]
        for _ in range(self.rng.randint(1, 4)):
            args += [self.key(), _values(self.rng)]
        if self.rng.random() < 0.1:
            args.append(self.key())  # an odd count: wrong number of arguments
        return Step(tuple(args))

    def _append(self) -> Step:
        key = self.key()
        self.built.add(key)
        return Step((b"APPEND", key, _values(self.rng)))

    def _range(self) -> Step:
        rng = self.rng
        key = self.key()
        pick = rng.randrange(3)
        if pick < 2:
            name = rng.choice([b"GETRANGE", b"SUBSTR"])
            return Step((name, key, rng.choice(OFFSETS), rng.choice(OFFSETS)))
        # Past 512 MB only as an error: a valid offset that far would allocate 512 MB.
        offset = rng.choice([b"0", b"1", b"3", b"10", b"100", b"-1", b"536870912",
                             b"536870911", b"x", str(INT64_MAX).encode()])
        value = _values(rng) if offset != b"536870911" else b""
        self.built.add(key)
        return Step((b"SETRANGE", key, offset, value))

    def _counter(self) -> Step:
        rng = self.rng
        name = rng.choice([b"INCR", b"DECR", b"INCRBY", b"DECRBY", b"incrby"])
        if name.upper() in (b"INCR", b"DECR"):
            return Step((name, self.key()))
        amount = rng.choice(INTEGERS) if rng.random() < 0.75 else rng.choice(NOT_INTEGERS)
        return Step((name, self.key(), amount))

    def _incrbyfloat(self) -> Step:
        rng = self.rng
        amount = rng.choice(FLOATS) if rng.random() < 0.75 else rng.choice(NOT_FLOATS)
        key = self.key()
        self.built.add(key)
        return Step((b"INCRBYFLOAT", key, amount))

    def _delete(self) -> Step:
        name = self.rng.choice([b"DEL", b"UNLINK"])
        return Step((name, *(self.key() for _ in range(self.rng.randint(1, 3)))))

    def _exists(self) -> Step:
        name = self.rng.choice([b"EXISTS", b"TOUCH"])
        return Step((name, *(self.key() for _ in range(self.rng.randint(1, 4)))))

    def _type(self) -> Step:
        return Step((b"TYPE", self.key()))

    def _rename(self) -> Step:
        name = self.rng.choice([b"RENAME", b"RENAMENX"])
        src, dst = self.key(), self.key()
        self.taint_copy(src, dst)
        return Step((name, src, dst))

    def _copy(self) -> Step:
        rng = self.rng
        src, dst = self.key(), self.key()
        self.taint_copy(src, dst)
        self.built.add(dst)
        args = [b"COPY", src, dst]
        if rng.random() < 0.3:
            args += [b"DB", rng.choice([*DBS[:6], b"x"])]
        if rng.random() < 0.3:
            args.append(b"REPLACE")
        if rng.random() < 0.05:
            args.append(rng.choice([b"BOGUS", b"DB"]))
        return Step(tuple(args))

    def _move(self) -> Step:
        return Step((b"MOVE", self.key(), self.rng.choice(DBS)))

    def _keys(self) -> Step:
        pattern = self.rng.choice([b"*", b"k*", b"k[0-2]", b"?", b"a\\*b", b"*k", b"[", b"x*",
                                   b"k?", b"*\xff*", b""])
        return Step((b"KEYS", pattern), Check.KEYS)

    def _scan(self) -> Step:
        rng = self.rng
        if rng.random() < 0.15:  # invalid: compared exactly
            # Not "SCAN -1": strtoul makes it a valid cursor, and what a cursor other than 0
            # means differs by design (docs/commands.md: the cursor is a ring token).
            return Step(rng.choice([(b"SCAN", b"x"), (b"SCAN", b"0", b"COUNT", b"0"),
                                    (b"SCAN", b"0", b"COUNT", b"x"), (b"SCAN", b"0", b"MATCH"),
                                    (b"SCAN", b"0", b"BOGUS", b"1"), (b"SCAN", b"1.5")]))
        args = [b"SCAN", b"0"]
        if rng.random() < 0.5:
            args += [b"MATCH", rng.choice([b"k*", b"*", b"?1", b"a*"])]
        if rng.random() < 0.5:
            args += [b"COUNT", rng.choice([b"1", b"2", b"10", b"1000"])]
        if rng.random() < 0.3:
            args += [b"TYPE", rng.choice([b"string", b"list", b"STRING"])]
        return Step(tuple(args), Check.SCAN)

    def _randomkey(self) -> Step:
        return Step((b"RANDOMKEY",), Check.RANDOMKEY)

    def _dbsize(self) -> Step:
        return Step((b"DBSIZE",))

    def _flushdb(self) -> Step:
        args = self.rng.choice([(b"FLUSHDB",), (b"FLUSHDB", b"ASYNC"), (b"FLUSHDB", b"SYNC"),
                                (b"FLUSHDB", b"BOGUS"), (b"FLUSHALL",), (b"FLUSHDB", b"x", b"y")])
        return Step(args)

    def _expire(self) -> Step:
        rng = self.rng
        name = rng.choice([b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT"])
        key = self.key()
        in_ms = name.startswith(b"P")
        when = (self.absolute(in_ms) if name.endswith(b"AT") else self.relative(key, in_ms))
        args = [name, key, when]
        if rng.random() < 0.5:
            args.append(rng.choice([b"NX", b"XX", b"GT", b"LT", b"gt"]))
        if rng.random() < 0.1:
            args.append(rng.choice([b"NX", b"XX", b"GT", b"LT", b"BOGUS"]))
        return Step(tuple(args))

    def _ttl(self) -> Step:
        name = self.rng.choice([b"TTL", b"PTTL", b"EXPIRETIME", b"PEXPIRETIME"])
        key = self.key()
        check = {b"TTL": Check.TTL, b"PTTL": Check.PTTL, b"EXPIRETIME": Check.EXPIRETIME,
                 b"PEXPIRETIME": Check.PEXPIRETIME}[name]
        return Step((name, key), check, tolerant=key in self.tainted)

    def _object(self) -> Step:
        rng = self.rng
        key = self.key()
        sub = rng.choice([b"ENCODING", b"ENCODING", b"REFCOUNT", b"FREQ", b"encoding"])
        if rng.random() < 0.1:
            return Step(rng.choice([(b"OBJECT", sub), (b"OBJECT", b"BOGUS", key),
                                    (b"OBJECT", sub, key, key)]))
        if sub.upper() != b"FREQ" and (key in self.built or self.in_multi):
            # respkv derives OBJECT ENCODING and REFCOUNT from the value; Redis's depend on how
            # the object was made (raw after APPEND/SETRANGE, embstr after INCRBYFLOAT, an
            # unshared copy after COPY, one reference more from a queued MULTI argument): a
            # known difference (docs/commands.md, "Data types and the keyspace").
            return Step((b"OBJECT", b"FREQ", key))
        return Step((b"OBJECT", sub, key))

    def _persist(self) -> Step:
        return Step((b"PERSIST", self.key()))

    def _select(self) -> Step:
        db = self.rng.choice(DBS[:3] * 4 + DBS[3:])
        return Step((b"SELECT", db))

    def _multi(self) -> Step:
        if not self.in_multi:
            return Step((b"MULTI",))
        pick = self.rng.randrange(10)
        if pick < 6:
            return Step((b"EXEC",))
        if pick < 8:
            return Step((b"DISCARD",))
        return Step(self.rng.choice([(b"MULTI",), (b"EXEC", b"x"), (b"DISCARD", b"x"),
                                     (b"WATCH", b"k1") if self.watch else (b"MULTI",)]))

    def _watch(self) -> Step:
        if not self.watch:
            return Step((b"UNWATCH",))
        if self.rng.random() < 0.3:
            return Step((b"UNWATCH",))
        return Step((b"WATCH", *(self.key() for _ in range(self.rng.randint(1, 3)))))

    def _misc(self) -> Step:
        rng = self.rng
        return Step(rng.choice([
            (b"PING",), (b"PING", _values(rng)), (b"ECHO", _values(rng)), (b"ping",),
            (b"RESET",) if rng.random() < 0.2 else (b"PING",),
        ]))

    def _connection(self) -> Step:
        """HELLO switching protocols mid-sequence, client names, AUTH without a password."""
        rng = self.rng
        name = rng.choice([b"fuzz", b"a b", b"", b"x\ny", b"ok-name"])
        pick = rng.randrange(6)
        if pick < 2:
            args = [b"HELLO", rng.choice([b"2", b"3"])]
            if rng.random() < 0.3:
                args += [b"SETNAME", name]
            if rng.random() < 0.2:
                args += rng.choice([[b"AUTH", b"default", b"pw"], [b"AUTH", b"default"],
                                    [b"BOGUS"]])
            return Step(tuple(args), Check.HELLO)
        if pick == 2:
            return Step(rng.choice([(b"HELLO", b"4"), (b"HELLO", b"x"), (b"HELLO", b"0")]))
        if pick == 3:
            return Step((b"CLIENT", b"SETNAME", name))
        if pick == 4:
            return Step((b"CLIENT", b"GETNAME"))
        return Step(rng.choice([(b"AUTH", b"pw"), (b"AUTH", b"default", b"pw"),
                                (b"AUTH", b"someone", b"pw"), (b"AUTH", b"a", b"b", b"c")]))

    def _bad(self) -> Step:
        """Wrong arity or an unknown command (at MULTI queue time these abort the EXEC)."""
        rng = self.rng
        key = self.key()
        return Step(rng.choice([
            (b"GET",), (b"GET", key, key), (b"SET", key), (b"SETNX", key), (b"INCR",),
            (b"INCRBY", key), (b"GETRANGE", key, b"0"), (b"SETRANGE", key, b"0"),
            (b"EXPIRE", key), (b"TTL",), (b"RENAME", key), (b"COPY", key), (b"MGET",),
            (b"MSET", key), (b"DEL",), (b"SELECT",), (b"ECHO",), (b"ECHO", b"a", b"b"),
            (b"PING", b"a", b"b"), (b"DBSIZE", b"x"), (b"RANDOMKEY", b"x"), (b"KEYS",),
            (b"NOSUCHCOMMAND", key), (b"GETT", key), (b"SCAN",), (b"PERSIST",),
            (b"EXPIRETIME",), (b"TYPE", key, key), (b"APPEND", key), (b"GETEX",),
            (b"MOVE", key), (b"STRLEN",), (b"INCRBYFLOAT", key), (b"DECRBY", key),
        ]))
