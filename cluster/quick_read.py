"""The common read, without a get FSM: ``QuickRead``.

Theory of operation. Most reads (a GET, and the read before a write) are a quorum of two on
a key whose replicas are all up, coordinated by one of them, and find the replicas in
agreement. For such a read the get FSM (get_fsm.py Rule 5) reads the local replica, asks one
peer, skips the spare once the peer answered the same, and repairs nothing: a state machine,
a quorum core, a tally, a request record and their dicts, built and walked through six
states, to compare two sibling sets. ``QuickRead`` does exactly that path with one small
object, and hands every other case to a full ``GetFsm`` started afresh (``fallback``):

- the peer answered something other than the local set (a difference: the FSM reads every
  replica, merges, answers and repairs);
- the peer failed, or did not answer within the speculation delay (the FSM asks the other
  replicas; it gets what is left of the request's timeout, so a NOQUORUM comes no later
  than the FSM alone would give it);
- the local set has siblings (merge's normal form is the FSM's business).

The coordinator decides when it applies (coordinator.py Rule 11): the vnode's cached route
(every primary up, no stand-ins), this node one of the primaries, a requirement of exactly
two answers in total, and not a read that must ask every replica (``read_repair_every``).

Invariants:
1. The caller is answered exactly once: by this object (the local set and the peer's answer
   are equal, so the merge of the two R answers is that set: what the FSM would answer), or
   by the fallback FSM; never both. A peer answer that comes after the fallback started is
   dropped.
2. Nothing is repaired here: both replicas asked hold the answer, and the spare was not asked
   (get_fsm Rule 5: a spare never asked is neither read nor repaired).
3. Reading a replica again is harmless (a read changes nothing), so the fallback may ask the
   peer this object already asked.
"""

from __future__ import annotations

from typing import Protocol

from cluster.clock import Clock
from cluster.consistency import NoQuorum, Requirement
from cluster.errors import CorruptionError
from cluster.get_core import Found
from cluster.messages import Message, ReadReply
from cluster.put_fsm import Target
from cluster.sibling_codec import decode
from cluster.timer_fifo import FifoTimer
from cluster.version import Siblings


class Reply(Protocol):
    def __call__(self, outcome: Found | NoQuorum, /) -> None: ...


class QuickReadOwner(Protocol):
    """The coordinator, as a quick read sees it."""

    def quick_fallback(self, read: QuickRead, on_reply: Reply, elapsed_s: float) -> None:
        """Start the full FSM for ``read``, answering ``on_reply``; ``elapsed_s`` since the
        quick read started."""
        ...

    def quick_done(self, read: QuickRead) -> None:
        """``read`` answered its caller itself."""
        ...


class QuickRead:
    """One read of the common case (see the module docstring). The coordinator reads the
    local replica, builds this, sends the peer's READ with ``on_peer`` as its callback
    (``Transport.call``) and arms ``timer`` for the speculation delay with ``on_slow``."""

    __slots__ = ("clock", "db", "key", "local", "on_reply", "owner", "requirement", "started",
                 "targets", "timer")

    def __init__(self, owner: QuickReadOwner, clock: Clock, db: int, key: bytes,
                 requirement: Requirement, targets: tuple[Target, ...], local: Siblings,
                 on_reply: Reply) -> None:
        self.owner = owner
        self.clock = clock
        self.db = db
        self.key = key
        self.requirement = requirement
        self.targets = targets
        self.local = local
        self.on_reply: Reply | None = on_reply  # None once answered or handed over
        self.timer: FifoTimer | None = None
        self.started = clock.monotonic()

    def on_peer(self, _peer: str, reply: Message | BaseException) -> None:
        on_reply = self.on_reply
        if on_reply is None:
            return  # invariant 1: the fallback answers
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if isinstance(reply, ReadReply):
            if reply.siblings is None:
                same = not self.local
            else:
                try:
                    same = decode(reply.siblings) == self.local
                except CorruptionError:  # a trust boundary: the FSM counts it a failure
                    same = False
            if same:
                self.on_reply = None
                self.owner.quick_done(self)
                on_reply(Found(self.local))
                return
        self._hand_over()

    def on_slow(self) -> None:
        """The speculation delay went by without the peer's answer."""
        self.timer = None
        if self.on_reply is not None:
            self._hand_over()

    def _hand_over(self) -> None:
        on_reply = self.on_reply
        assert on_reply is not None
        self.on_reply = None
        self.owner.quick_fallback(self, on_reply, self.clock.monotonic() - self.started)
