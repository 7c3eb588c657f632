"""The conditional write: a plain write's read and its write in one round trip.

Theory of operation. A write without a context supersedes what its coordinator read with
the write's own requirement (coordinator.py Rule 3): a quorum read, then the write, two
round trips in sequence. When the coordinator is itself a replica of the key it can build
the new version from its local sibling set alone, store it, and send it to the other
replicas as a ``CondWrite``: each merges it, exactly as a WRITE (so the reply is an ack),
and says whether it held, just before, anything the version does not descend. A "clean"
replica held nothing that a read of it would have added to what the version descends. So
once the local replica and clean replicas make up the read's requirement, the version is
one the read-then-write path could have written (the check runs at the write's arrival,
later than a read would: it sees more, never less), and the same replies are the write's
acks: one round trip instead of two.

When the replies that make up the requirement include an unclean one, the version is
concurrent with something the read would have returned. The coordinator then writes a
second version (a ``PutFsm``, owner's ``cond_second_write``) descending the first and every
unclean replica's previous set: what the read-then-write path writes after reading those
replicas (their answers would have been those sets; the local one is descended already).
Until that lands, an unclean replica holds the first version beside what it had (transient
siblings, concurrent writes' ordinary state); the second write answers the client.

The owner (the coordinator) decides when this applies (coordinator.py Rule 12).

Invariants:
1. The version is built as put_fsm builds one (``build_version``, put_fsm Rules 2 and 3)
   from the local set, and stored locally before any ``CondWrite`` is sent (put_fsm Rule 4).
2. The outcome is decided the first time the answers (the local replica and every peer
   that replied, clean or not) reach the requirement's total R. All clean: ``PutOk``, since
   each answer was also an ack of the version and the read and the write share one
   requirement (W = R). Any unclean: the second write, which answers the client itself.
3. When the answers can no longer reach R (peers failed, or the deadline passed) the client
   gets NOQUORUM, as the read before the write would have given it; the version stays where
   it was stored, as a write that missed its W does.
4. A peer the version did not reach (an error, a lost link, the deadline) costs a hint kept
   here for it (put_fsm Rule 6), whatever was decided.
5. The caller is answered exactly once; a reply after the decision changes nothing it saw.
   The write is finished (``cond_done``) once every peer replied or the deadline passed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cluster.consistency import NoQuorum, Requirement
from cluster.errors import CorruptionError
from cluster.hints import HintStore
from cluster.messages import CondWriteReply, Message
from cluster.put_core import PutOk
from cluster.sibling_codec import decode
from cluster.timer_fifo import FifoTimer
from cluster.version import Siblings, Version, merge

Reply = Callable[[PutOk | NoQuorum], None]


class CondWriteOwner(Protocol):
    """The coordinator, as a conditional write sees it."""

    def cond_second_write(self, write: ConditionalWrite, seen: Siblings, on_reply: Reply
                          ) -> None:
        """Write a version descending ``seen`` (invariant 2), answering ``on_reply``."""
        ...

    def cond_done(self, write: ConditionalWrite) -> None:
        """Every peer replied or the deadline passed (invariant 5)."""
        ...


class ConditionalWrite:
    """One conditional write (see the module docstring). The owner stores ``version``
    locally, builds this, sends each peer its ``CondWrite`` with ``on_peer`` as the callback
    (``Transport.call``), arms ``timer`` with ``on_deadline``, then calls ``settle()``."""

    __slots__ = ("answers", "clean", "db", "hints", "hints_kept", "key", "need", "on_reply",
                 "on_version", "owner", "raw_reply", "requirement", "should_hint", "timer",
                 "unclean", "version", "waiting")

    def __init__(self, owner: CondWriteOwner, db: int, key: bytes, version: Version,
                 requirement: Requirement, peers: tuple[str, ...], on_reply: Reply,
                 raw_reply: Reply, hints: HintStore | None,
                 should_hint: Callable[[str], bool] | None = None,
                 on_version: Callable[[Version], None] | None = None) -> None:
        """``requirement``: the write's, with a total R and no per-datacenter group;
        ``on_reply`` answers this object's own outcomes, ``raw_reply`` is handed to the
        second write (the owner wraps each); ``on_version`` is kept for the second write."""
        assert requirement.total >= 1 and not requirement.per_dc, requirement
        self.owner = owner
        self.db = db
        self.key = key
        self.version = version
        self.requirement = requirement
        self.on_version = on_version
        self.need = requirement.total
        self.waiting = set(peers)
        self.answers = 1  # the local replica: it stored the version it was built from
        self.clean = 1
        self.unclean: list[Siblings] = []
        self.on_reply: Reply | None = on_reply  # None once decided (invariant 5)
        self.raw_reply = raw_reply
        self.hints = hints
        self.should_hint = should_hint
        self.hints_kept = 0
        self.timer: FifoTimer | None = None

    def on_peer(self, node_id: str, reply: Message | BaseException) -> None:
        if node_id not in self.waiting:
            return  # after the deadline, or a duplicate
        self.waiting.discard(node_id)
        if type(reply) is CondWriteReply:
            if reply.clean:
                self.clean += 1
                self.answers += 1
                self.settle()
                return
            if reply.siblings is not None:
                try:
                    held = decode(reply.siblings)  # a trust boundary
                except CorruptionError:
                    pass
                else:
                    self.unclean.append(held)
                    self.answers += 1
                    self.settle()
                    return
        self._keep_hint(node_id)
        self.settle()

    def on_deadline(self) -> None:
        self.timer = None
        silent = sorted(self.waiting)
        self.waiting.clear()
        for node_id in silent:
            self._keep_hint(node_id)
        self.settle()

    def settle(self) -> None:
        """After any event: decide once (invariants 2, 3), finish once nothing is awaited."""
        on_reply = self.on_reply
        if on_reply is not None:
            if self.answers >= self.need:
                self.on_reply = None
                if self.clean >= self.need:
                    on_reply(PutOk(self.answers))
                else:
                    seen: Siblings = (self.version,)
                    for held in self.unclean:
                        seen = merge(seen, held)
                    self.owner.cond_second_write(self, seen, self.raw_reply)
            elif self.answers + len(self.waiting) < self.need:
                self.on_reply = None
                on_reply(NoQuorum(self.answers, self.need))
        if not self.waiting:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.owner.cond_done(self)

    def _keep_hint(self, node_id: str) -> None:
        """Invariant 4 (every peer here is a primary: the hint is for the peer itself)."""
        hints = self.hints
        if hints is None or (self.should_hint is not None and not self.should_hint(node_id)):
            return
        if hints.add(node_id, self.db, self.key, (self.version,)):
            self.hints_kept += 1
