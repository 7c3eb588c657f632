"""The put FSM: drives one write through ``put_core`` (riak_kv ``riak_kv_put_fsm``).

Theory of operation. ``start()`` runs PREPARE (build the new version) and EXECUTE (store it
in the local replica by an in-process call, send ``Write`` to every remote target), then the
FSM waits in WAITING_W, feeding each reply to the ``PutCore``. The first time the core says
``enough()`` the caller is answered (``on_reply``) and the FSM moves to ABSORBING, where late
replies are still counted; once every target answered, or the deadline fired (a timer from
the injected ``Clock``, never ``asyncio.wait_for``: the caller may not run inside a Task), it
is FINISH and ``on_finish`` runs. When every target is local the whole run is synchronous:
``on_reply`` and ``on_finish`` have run when ``start()`` returns.

Rules:
1. Every transition is listed in ``TRANSITIONS``; any other raises ``FsmError``.
2. The new version descends every version in ``seen`` (what the coordinator read, or the
   client's context) and bumps this node's actor above its *counter floor*: the largest
   counter of this actor stored locally for the key, or, when this node is not a replica,
   the floor ``ReplicaService.raise_floor`` keeps. So the actor never issues the same counter
   twice for a key (Riak's kv679), even when ``seen`` missed its own last write. The price
   (as in cluster/node.py Rule 3): the floor entry makes the new version supersede this
   actor's own earlier versions of the key even if ``seen`` did not include them.
3. ``timestamp_ms = max(now, newest timestamp in seen)``: causal order and winner order agree
   even when the wall clock steps back.
4. The local replica stores the version (or the floor is raised) *before* any request is
   sent, so the floor is durable before the version can be acknowledged anywhere.
5. The caller is answered exactly once; a reply after FINISH is ignored (counted).
6. A target the version did not reach (an error reply, a lost link, a timeout) costs a hint:
   this node keeps one for the owner the target was meant to be (the target itself, or the
   node it stood in for), so a write in flight when a replica dies is handed off later
   rather than left to read repair and anti-entropy. A late ack after the deadline leaves
   a redundant hint, which handoff delivers harmlessly (a write is a merge).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cluster import vclock
from cluster.clock import Clock, TimerHandle
from cluster.consistency import Failed, NoQuorum, Requirement
from cluster.messages import Message, Write, WriteAck
from cluster.put_core import ACKED, PutCore, PutOk
from cluster.replica_service import ReplicaService
from cluster.sibling_codec import encode
from cluster.timer_fifo import TimerFifo
from cluster.transport import Transport
from cluster.vclock import VClock
from cluster.version import CLOCK, TIMESTAMP_MS, Siblings, Version


class FsmError(AssertionError):
    """A transition the FSM's table does not allow: a bug in the driver."""


class State(enum.Enum):
    PREPARE = "prepare"
    EXECUTE = "execute"
    WAITING_W = "waiting_w"
    ABSORBING = "absorbing"  # answered; late replies still counted
    FINISH = "finish"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.PREPARE: frozenset({State.EXECUTE}),
    State.EXECUTE: frozenset({State.WAITING_W, State.ABSORBING, State.FINISH}),
    State.WAITING_W: frozenset({State.ABSORBING, State.FINISH}),
    State.ABSORBING: frozenset({State.FINISH}),
    State.FINISH: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Target:
    """A replica to write to: its node id, datacenter, and the owner it stands in for."""

    node_id: str
    dc: str
    hint_for: str | None = None


@dataclass(frozen=True, slots=True)
class PutRequest:
    db: int
    key: bytes
    value: bytes | None  # None writes a tombstone
    expire_at_ms: int  # 0 = none
    seen: Siblings  # the versions the new one supersedes (Rule 2)
    requirement: Requirement
    targets: tuple[Target, ...]  # the preference list, local node included if a replica
    down: frozenset[str] = frozenset()  # targets known down: failed at once, not contacted


class PutFsm:
    """One write. Build, then ``start()`` once; see the module docstring."""

    def __init__(self, request: PutRequest, *, local_id: str, actor: bytes,
                 service: ReplicaService, transport: Transport, clock: Clock, timeout_s: float,
                 on_reply: Callable[[PutOk | NoQuorum], None],
                 on_finish: Callable[[PutFsm], None] | None = None,
                 on_version: Callable[[Version], None] | None = None,
                 should_hint: Callable[[str], bool] | None = None,
                 timers: TimerFifo | None = None) -> None:
        """``timers``: where the deadline is armed (the coordinator's shared ``TimerFifo``;
        default the clock). ``on_version`` sees the new version once built (checkers record
        history with it); ``should_hint(owner)`` says whether a hint may be kept for it (Rule 6)."""
        assert request.targets, "a write needs at least one target"
        assert timeout_s > 0, timeout_s
        self.request = request
        self.local_id = local_id
        self.actor = actor
        self.service = service
        self.transport = transport
        self.clock = clock
        self.timers: TimerFifo | Clock = timers or clock
        self.timeout_s = timeout_s
        self.on_reply = on_reply
        self.on_finish = on_finish
        self.on_version = on_version
        self.should_hint = should_hint
        self.state = State.PREPARE
        self.core: PutCore[str] = PutCore({t.node_id: t.dc for t in request.targets},
                                          request.requirement)
        self.version: Version | None = None
        self.late_replies = 0
        self.hints_kept = 0  # Rule 6
        self._timer: TimerHandle | None = None

    def _to(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise FsmError(f"put fsm: {self.state.name} -> {state.name} is not a transition")
        self.state = state

    def start(self) -> None:
        """PREPARE and EXECUTE; may answer and finish before returning (all-local writes)."""
        if self.state is not State.PREPARE:
            raise FsmError(f"put fsm: start() in {self.state.name}")
        request = self.request
        local = next((t for t in request.targets if t.node_id == self.local_id), None)
        local_is_replica = local is not None and local.hint_for is None
        version = self.version = self._new_version(local_is_replica)
        if self.on_version is not None:
            self.on_version(version)
        self._to(State.EXECUTE)
        versions = (version,)
        payload = encode(versions)
        # Rule 4: the local store (or the floor) first. If it raises, nothing was sent and
        # the error is the caller's (the FSM stays in EXECUTE and is dropped).
        if local_is_replica:
            self.service.merge(request.db, request.key, versions, payload)
            self.core.add_result(self.local_id, ACKED)
        else:
            self.service.raise_floor(request.db, request.key, version[CLOCK][self.actor][0])
            if local is not None:  # this node stands in for a down replica: a hint
                stored = self.service.store(request.db, request.key, (version,),
                                            local.hint_for)
                self.core.add_result(self.local_id, ACKED if stored else Failed("hint limit"))
        for node_id in sorted(request.down):
            self.core.add_result(node_id, Failed("down"))
        for target in request.targets:
            if target.node_id == self.local_id or target.node_id in request.down:
                continue
            self.transport.call(
                target.node_id, Write(request.db, request.key, payload, target.hint_for),
                self.timeout_s, self._on_write_reply)
        if not self.core.done():
            self._timer = self.timers.call_later(self.timeout_s, self._deadline)
        self._settle(State.WAITING_W)

    def _new_version(self, local_is_replica: bool) -> Version:
        """Rules 2 and 3."""
        request = self.request
        actor = self.actor
        now_ms = self.clock.wall_ms()
        if local_is_replica:
            stored = self.service.read(request.db, request.key)
            floor = max((v[CLOCK].get(actor, (0, 0))[0] for v in stored), default=0)
        else:
            floor = self.service.floor(request.db, request.key)
        return build_version(request.seen, floor, actor, now_ms, request.value,
                             request.expire_at_ms)

    def _on_write_reply(self, node_id: str, reply: Message | BaseException) -> None:
        if self.state is State.FINISH:
            self.late_replies += 1
            return
        if isinstance(reply, BaseException):
            self.core.add_result(node_id, Failed(f"{type(reply).__name__}: {reply}"))
            self._keep_hint(node_id)
        elif isinstance(reply, WriteAck):
            self.core.add_result(node_id, ACKED)
        else:
            self.core.add_result(node_id, Failed(f"unexpected reply {reply!r}"))
            self._keep_hint(node_id)
        self._settle(self.state)

    def _keep_hint(self, node_id: str) -> None:
        """Rule 6: a replica (or stand-in) the version did not reach gets a hint kept here
        for the owner it was meant for, so the write is handed off when that owner is back."""
        hints = self.service.hints
        version = self.version
        if hints is None or version is None:
            return
        request = self.request
        owner = next((t.hint_for or t.node_id for t in request.targets
                      if t.node_id == node_id), node_id)
        if owner != self.local_id and (self.should_hint is None or self.should_hint(owner)):
            hints.add(owner, request.db, request.key, (version,))
            self.hints_kept += 1

    def _deadline(self) -> None:
        self._timer = None
        if self.state is State.FINISH:
            return
        for node_id in self.core.time_out():
            self._keep_hint(node_id)
        self._settle(self.state)

    def _settle(self, waiting: State) -> None:
        """After any event: answer at the first enough(), finish once every target is in."""
        core = self.core
        if self.state in (State.EXECUTE, State.WAITING_W) and core.enough():
            self._to(State.ABSORBING)
            self.on_reply(core.response())
        if core.done():
            self._to(State.FINISH)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.on_finish is not None:
                self.on_finish(self)
        elif self.state is State.EXECUTE:
            self._to(waiting)


def build_version(seen: Siblings, floor: int, actor: bytes, now_ms: int, value: bytes | None,
                  expire_at_ms: int) -> Version:
    """Rules 2 and 3: a version descending ``seen`` with ``actor`` bumped above ``floor`` and
    every counter of ``actor`` in ``seen``, written at ``max(now_ms, newest in seen)``."""
    if len(seen) == 1 and not floor:  # a SET over one version: its clock, bumped
        clock, timestamp_ms = seen[0][CLOCK], seen[0][TIMESTAMP_MS]
        return (vclock.increment(clock, actor, now_ms), max(now_ms, timestamp_ms),
                expire_at_ms, actor, value)
    floor = max([floor, *(v[CLOCK].get(actor, (0, 0))[0] for v in seen)])
    clocks: list[VClock] = [v[CLOCK] for v in seen]
    if floor:
        clocks.append({actor: (floor, 0)})
    clock = vclock.increment(vclock.merge(clocks), actor, now_ms)
    timestamp_ms = max([now_ms, *(v[TIMESTAMP_MS] for v in seen)])
    return (clock, timestamp_ms, expire_at_ms, actor, value)


def targets_of(primaries: Sequence[tuple[str, str]]) -> tuple[Target, ...]:
    """Targets for (node id, datacenter) primaries, none standing in for another."""
    return tuple(Target(node_id, dc) for node_id, dc in primaries)
