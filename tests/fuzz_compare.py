"""Runs generated command sequences on respkv and redis-server and compares the replies.

Replies are compared byte for byte, except where the step's Check allows a bounded,
explained difference (tests/fuzz_gen.py invariant 2). A mismatch raises Mismatch with the
seed, the protocol, every command sent so far and both replies, so the run can be replayed.

Invariants:
1. Both servers get the same commands in the same order, one at a time or in pipelined
   batches (the same batches on both); checks that need more commands (a SCAN iteration,
   the EXISTS that follows a RANDOMKEY) are sent alone and recorded in the history.
2. MULTI state is followed from redis-server's replies (the reference): a command whose
   queueing answered +QUEUED gets its check applied to its slot of the EXEC array.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Protocol

from tests.fuzz_gen import Check, Step
from tests.servers import _reply_size, encode_command

QUEUED = b"+QUEUED\r\n"
OK = b"+OK\r\n"
# How far apart two TTL-like replies may be: the time between the moments the same command
# reached each server, which a loaded 2-core machine can stretch to a second or more.
TOLERANCE_MS = 3000
TOLERANCE_S = 3
SCAN_CALLS_MAX = 10_000
PIPELINE_MAX = 24


class Connection(Protocol):
    def call(self, *args: bytes | str | int) -> bytes: ...

    def send_raw(self, data: bytes) -> None: ...

    def read_reply(self) -> bytes: ...


def request(step: Step) -> bytes:
    return step.inline if step.inline is not None else encode_command(*step.args)


def _exchange(conn: Connection, steps: list[Step]) -> list[bytes]:
    """Send the steps' requests in one write, then read one reply for each."""
    conn.send_raw(b"".join(map(request, steps)))
    return [conn.read_reply() for _ in steps]


class Mismatch(AssertionError):
    pass


def integer(reply: bytes) -> int | None:
    if reply.startswith(b":") and reply.endswith(b"\r\n"):
        return int(reply[1:-2])
    return None


def elements(reply: bytes) -> list[bytes] | None:
    """The raw elements of an array, set or map reply (a map's keys and values in turn),
    None for any other reply."""
    if not reply.startswith((b"*", b"~", b"%")):
        return None
    header_end = reply.index(b"\r\n")
    count = int(reply[1:header_end])
    if count < 0:
        return None
    if reply.startswith(b"%"):
        count *= 2
    pos = header_end + 2
    items = []
    for _ in range(count):
        end = _reply_size(reply, pos)
        assert end is not None, reply
        items.append(reply[pos:end])
        pos = end
    return items


def bulk_value(reply: bytes) -> bytes | None:
    """The bytes of a bulk string reply, None for a nil or any other reply."""
    if not reply.startswith(b"$") or reply.startswith(b"$-1"):
        return None
    return reply[reply.index(b"\r\n") + 2 : -2]


def _close(mine: int, ref: int, tolerance: int) -> bool:
    return mine == ref or (mine >= 0 and ref >= 0 and abs(mine - ref) <= tolerance)


def replies_match(step: Step, mine: bytes, ref: bytes) -> bool:
    """Do two replies to `step` agree under its check (SCAN and RANDOMKEY excepted)?"""
    if mine == ref:
        return True
    check = step.check
    if check in (Check.TTL, Check.PTTL) or (
        step.tolerant and check in (Check.EXPIRETIME, Check.PEXPIRETIME)
    ):
        a, b = integer(mine), integer(ref)
        tolerance = TOLERANCE_MS if check in (Check.PTTL, Check.PEXPIRETIME) else TOLERANCE_S
        return a is not None and b is not None and _close(a, b, tolerance)
    if check is Check.HELLO:
        return same_hello(mine, ref)
    if check is Check.KEYS:
        a_items, b_items = elements(mine), elements(ref)
        return (a_items is not None and b_items is not None
                and mine[:1] == ref[:1] and sorted(a_items) == sorted(b_items))
    return False


# HELLO fields whose values differ by design (docs/commands.md: respkv names itself and
# reports 7.2.4) or by chance (the client id).
HELLO_OWN_FIELDS = {b"$6\r\nserver\r\n", b"$7\r\nversion\r\n", b"$2\r\nid\r\n"}


def same_hello(mine: bytes, ref: bytes) -> bool:
    """HELLO replies of the same shape with the same fields, equal but for HELLO_OWN_FIELDS."""
    a_items, b_items = elements(mine), elements(ref)
    if a_items is None or b_items is None or mine[:1] != ref[:1] or len(a_items) != len(b_items):
        return False
    pairs = zip(a_items[::2], a_items[1::2], b_items[::2], b_items[1::2], strict=True)
    return all(a_name == b_name and (a_name in HELLO_OWN_FIELDS or a_value == b_value)
               for a_name, a_value, b_name, b_value in pairs)


class FuzzRun:
    """One sequence on one connection to each server per client (invariant 1): `ours` and
    `theirs` are client 0's, `more` holds the pairs of clients 1, 2 ..."""

    def __init__(self, ours: Connection, theirs: Connection, label: str,
                 more: Sequence[tuple[Connection, Connection]] = ()) -> None:
        self.pairs = [(ours, theirs), *more]
        self.label = label
        self.history: list[str] = []
        # Per client, the steps queued since its MULTI (None: not in a transaction).
        self.queued: list[list[Step] | None] = [None] * len(self.pairs)

    def run(self, steps: Iterable[Step], batches: random.Random | None = None) -> int:
        """Send every step, one at a time, or with `batches` in pipelined batches of 1 to
        PIPELINE_MAX commands of one client (a SCAN or RANDOMKEY step always alone: it needs
        its replies before it can go on)."""
        count = 0
        batch: list[Step] = []
        for step in steps:
            count += 1
            if batches is None:
                self.step(step)
                continue
            if batch and batch[0].client != step.client:
                self.pipelined(batch)
                batch = []
            if step.check in (Check.SCAN, Check.RANDOMKEY):
                self.pipelined(batch)
                batch = []
                self.step(step)
                continue
            batch.append(step)
            if len(batch) >= batches.randint(1, PIPELINE_MAX):
                self.pipelined(batch)
                batch = []
        self.pipelined(batch)
        return count

    def pipelined(self, batch: list[Step]) -> None:
        """One client's steps sent to each server in one write, replies judged in order."""
        if not batch:
            return
        ours, theirs = self.pairs[batch[0].client]
        self.history.extend(f"{step}  (pipelined)" for step in batch)
        mine = _exchange(ours, batch)
        ref = _exchange(theirs, batch)
        for step, a, b in zip(batch, mine, ref, strict=True):
            self._judge(step, a, b)

    def _send(self, step: Step) -> tuple[bytes, bytes]:
        self.history.append(str(step))
        ours, theirs = self.pairs[step.client]
        return _exchange(ours, [step])[0], _exchange(theirs, [step])[0]

    def fail(self, why: str, mine: bytes, ref: bytes) -> None:
        lines = "\n".join(f"  {i:4d}  {line}" for i, line in enumerate(self.history))
        raise Mismatch(
            f"{self.label}: {why}\n  respkv: {mine[:600]!r}\n  redis:  {ref[:600]!r}\n"
            f"commands sent ({len(self.history)}, the last one failed):\n{lines}"
        )

    def step(self, step: Step) -> None:
        if self.queued[step.client] is None and step.check is Check.SCAN:
            self._scan(step)
            return
        mine, ref = self._send(step)
        self._judge(step, mine, ref)

    def _judge(self, step: Step, mine: bytes, ref: bytes) -> None:
        name = step.args[0].upper()
        if self.queued[step.client] is not None:
            self._in_multi(step, name, mine, ref)
        elif step.check is Check.RANDOMKEY:
            self._randomkey(step, mine, ref)
        else:
            if not replies_match(step, mine, ref):
                self.fail(f"{step.check.value} mismatch", mine, ref)
            if name == b"MULTI" and ref == OK:
                self.queued[step.client] = []

    def _in_multi(self, step: Step, name: bytes, mine: bytes, ref: bytes) -> None:
        queued = self.queued[step.client]
        assert queued is not None
        if name == b"EXEC":
            self.queued[step.client] = None
            self._exec(queued, mine, ref)
            return
        if mine != ref:
            self.fail("reply at MULTI queue time", mine, ref)
        if name in (b"DISCARD", b"RESET") and len(step.args) == 1:
            self.queued[step.client] = None
        elif ref == QUEUED:
            queued.append(step)

    def _exec(self, queued: list[Step], mine: bytes, ref: bytes) -> None:
        mine_items, ref_items = elements(mine), elements(ref)
        if mine_items is None or ref_items is None or len(mine_items) != len(queued):
            if mine != ref:
                self.fail("EXEC reply", mine, ref)
            return
        if mine[:1] != ref[:1] or len(ref_items) != len(mine_items):
            self.fail("EXEC reply shape", mine, ref)
        for i, (step, a, b) in enumerate(zip(queued, mine_items, ref_items, strict=True)):
            if not replies_match(step, a, b):
                self.fail(f"EXEC reply element {i} ({step})", mine, ref)

    def _randomkey(self, step: Step, mine: bytes, ref: bytes) -> None:
        mine_key, ref_key = bulk_value(mine), bulk_value(ref)
        if mine_key is None or ref_key is None:
            if mine != ref:
                self.fail("RANDOMKEY: nil on one side only", mine, ref)
            return
        for key in (mine_key, ref_key):
            a, b = self._send(Step((b"EXISTS", key), client=step.client))
            if a != b or a != b":1\r\n":
                self.fail(f"RANDOMKEY's key {key!r} does not exist on both", a, b)

    def _scan(self, step: Step) -> None:
        """A full SCAN iteration on each side with the step's options; the key sets match."""
        options = step.args[2:]
        ours, theirs = self.pairs[step.client]
        mine, first_mine = self._iterate(ours, options)
        ref, first_ref = self._iterate(theirs, options)
        self.history.append(f"{step}  (iterated to cursor 0)")
        if mine is None or ref is None:
            if first_mine != first_ref:
                self.fail("SCAN reply", first_mine, first_ref)
            return
        if mine != ref:
            self.fail(f"SCAN key sets differ: only respkv {sorted(mine - ref)}, "
                      f"only redis {sorted(ref - mine)}", first_mine, first_ref)

    def _iterate(self, conn: Connection,
                 options: tuple[bytes, ...]) -> tuple[set[bytes] | None, bytes]:
        """The keys of a full iteration (None if a reply is not a SCAN page), first reply."""
        keys: set[bytes] = set()
        cursor = b"0"
        first = b""
        for _ in range(SCAN_CALLS_MAX):
            reply = conn.call(b"SCAN", cursor, *options)
            first = first or reply
            page = elements(reply)
            if page is None or len(page) != 2:
                return None, reply
            cursor = bulk_value(page[0]) or b""
            names = elements(page[1])
            if names is None:
                return None, reply
            keys.update(bulk_value(name) or b"" for name in names)
            if cursor == b"0":
                return keys, first
        raise Mismatch(f"{self.label}: SCAN did not reach cursor 0 in {SCAN_CALLS_MAX} calls")
