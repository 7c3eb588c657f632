"""The get FSM: drives one read through ``get_core``, then its read repair (riak_kv
``riak_kv_get_fsm``).

Theory of operation. ``start()`` runs EXECUTE: the local replica (when it is a target) is
read by an in-process call, and remote targets get a ``Read``: every one of them when the
request says ``read_all``, else just enough to meet the requirement with the local answer
(the others are *spares*, Rule 5). In WAITING_R each answer is
decoded (``sibling_codec.decode``, a trust boundary: bytes that do not decode count as a
failure of that replica) and fed to the ``GetCore``; at the first ``enough()`` the caller is
answered (``on_reply``) and the FSM goes on ABSORBING late answers. Once every target
answered, or the deadline fired (a ``Clock`` timer, never ``asyncio.wait_for``), it asks
``final_action()``: on ``ReadRepair`` it merges the merged set into each stale replica (the
local one in-process, remote ones with ``Write``) and waits in WAITING_READ_REPAIR for those
replies or the repair deadline; then FINISH and ``on_finish``. A read whose targets are all
local completes, answer and all, inside ``start()``.

Rules:
1. Every transition is in ``TRANSITIONS``; any other raises ``FsmError``.
2. The caller is answered exactly once, before any read repair is sent; repair never delays
   an answer.
3. Repair is a merge at the replica (``ReplicaService.merge`` / ``Write``), never an
   overwrite, so a replica written since it answered loses nothing.
4. Answers after FINISH are ignored (counted in ``late_replies``).
5. Without ``read_all`` a read asks the local replica and, in preference order, the fewest
   remote targets that can meet the requirement; the rest are spares. A spare is asked
   when an asked replica fails (one per failure, preferring the failed one's datacenter),
   and every spare is asked when no answer came within ``speculate_s`` (a slow replica
   must not hold a read for the whole timeout). Spares never asked are skipped
   (``GetCore.skip``) once the response is fixed and the asked replicas have answered:
   they are neither read nor repaired (Cassandra's read path; a ``read_all`` read, which
   the coordinator sends now and then, is what lets read repair reach every replica).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass

from cluster.clock import Clock, TimerHandle
from cluster.consistency import Failed, NoQuorum, Requirement
from cluster.errors import CorruptionError
from cluster.get_core import Found, GetCore, ReadRepair
from cluster.messages import Message, Read, ReadReply, Write
from cluster.put_fsm import FsmError, Target
from cluster.replica_service import ReplicaService
from cluster.sibling_codec import decode, encode
from cluster.timer_fifo import TimerFifo
from cluster.transport import Transport
from cluster.version import Siblings


class State(enum.Enum):
    PREPARE = "prepare"
    EXECUTE = "execute"
    WAITING_R = "waiting_r"
    ABSORBING = "absorbing"  # answered; late answers still merged for the repair
    WAITING_READ_REPAIR = "waiting_read_repair"
    FINISH = "finish"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.PREPARE: frozenset({State.EXECUTE}),
    State.EXECUTE: frozenset({State.WAITING_R, State.ABSORBING, State.WAITING_READ_REPAIR,
                              State.FINISH}),
    State.WAITING_R: frozenset({State.ABSORBING, State.WAITING_READ_REPAIR, State.FINISH}),
    State.ABSORBING: frozenset({State.WAITING_READ_REPAIR, State.FINISH}),
    State.WAITING_READ_REPAIR: frozenset({State.FINISH}),
    State.FINISH: frozenset(),
}


@dataclass(frozen=True, slots=True)
class GetRequest:
    db: int
    key: bytes
    requirement: Requirement
    targets: tuple[Target, ...]
    down: frozenset[str] = frozenset()  # targets known down: failed at once, not contacted
    read_all: bool = True  # ask every target at once (else Rule 5: the fewest, then spares)


class GetFsm:
    """One read. Build, then ``start()`` once; see the module docstring."""

    def __init__(self, request: GetRequest, *, local_id: str, service: ReplicaService,
                 transport: Transport, clock: Clock, timeout_s: float,
                 on_reply: Callable[[Found | NoQuorum], None],
                 on_finish: Callable[[GetFsm], None] | None = None,
                 speculate_s: float | None = None, timers: TimerFifo | None = None) -> None:
        """``speculate_s``: when spares are asked if no answer came (Rule 5); default a
        tenth of ``timeout_s``. ``timers``: where its timers are armed (the coordinator's
        shared ``TimerFifo``; default the clock)."""
        assert request.targets, "a read needs at least one target"
        assert timeout_s > 0, timeout_s
        self.request = request
        self.local_id = local_id
        self.service = service
        self.transport = transport
        self.clock = clock
        self.timers: TimerFifo | Clock = timers or clock
        self.timeout_s = timeout_s
        self.on_reply = on_reply
        self.on_finish = on_finish
        self.state = State.PREPARE
        self.core: GetCore[str] = GetCore({t.node_id: t.dc for t in request.targets},
                                          request.requirement)
        self.repaired: list[str] = []  # replicas sent a read repair
        self.repairs_acked = 0
        self.late_replies = 0
        self._repairs_pending = 0
        self._timer: TimerHandle | None = None
        self.speculate_s = min(timeout_s, timeout_s / 10 if speculate_s is None
                               else speculate_s)
        self.spares: list[Target] = []  # Rule 5: targets not asked yet, in preference order
        self.asked: list[str] = []  # remote targets sent a Read
        self._waiting = 0  # asked remote targets without a result yet
        self._speculating = False  # the timer is the speculation timer, not the deadline

    def _to(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise FsmError(f"get fsm: {self.state.name} -> {state.name} is not a transition")
        self.state = state

    def start(self) -> None:
        if self.state is not State.PREPARE:
            raise FsmError(f"get fsm: start() in {self.state.name}")
        self._to(State.EXECUTE)
        request = self.request
        for target in request.targets:
            if target.node_id == self.local_id:
                try:
                    found = self.service.read_for(request.db, request.key, target.hint_for)
                    self.core.add_result(self.local_id, found)
                except CorruptionError as exc:
                    self.core.add_result(self.local_id, Failed(f"local: {exc}"))
        for node_id in sorted(request.down):
            self.core.add_result(node_id, Failed("down"))
        remote = [t for t in request.targets
                  if t.node_id != self.local_id and t.node_id not in request.down]
        if request.read_all:
            ask = remote
        else:
            ask, self.spares = self._fewest(remote)
        for target in ask:
            self._ask(target)
        if not self.core.done():
            if self.spares:
                self._speculating = True
                self._timer = self.timers.call_later(self.speculate_s, self._deadline)
            else:
                self._timer = self.timers.call_later(self.timeout_s, self._deadline)
        self._settle()

    def _fewest(self, remote: list[Target]) -> tuple[list[Target], list[Target]]:
        """Rule 5: (remote targets to ask, spares), counting the local answer already in."""
        requirement = self.request.requirement
        need_total = requirement.total - len(self.core.answers)
        need_dc = dict(requirement.per_dc)
        local_answered = self.local_id in self.core.answers
        for target in self.request.targets:
            if local_answered and target.node_id == self.local_id and target.dc in need_dc:
                need_dc[target.dc] -= 1
        ask: list[Target] = []
        spares: list[Target] = []
        for target in remote:
            if need_total > 0 or need_dc.get(target.dc, 0) > 0:
                ask.append(target)
                need_total -= 1
                if target.dc in need_dc:
                    need_dc[target.dc] -= 1
            else:
                spares.append(target)
        return ask, spares

    def _ask(self, target: Target) -> None:
        self.asked.append(target.node_id)
        self._waiting += 1
        request = self.request
        self.transport.call(target.node_id, Read(request.db, request.key), self.timeout_s,
                            self._on_read_reply)

    def _ask_spare(self, failed: str) -> None:
        """Rule 5: an asked replica failed; ask a spare in its datacenter, else the next."""
        dc = next((t.dc for t in self.request.targets if t.node_id == failed), None)
        spares = self.spares
        index = next((i for i, t in enumerate(spares) if t.dc == dc), 0)
        self._ask(spares.pop(index))

    def _on_read_reply(self, node_id: str, reply: Message | BaseException) -> None:
        if self.state in (State.WAITING_READ_REPAIR, State.FINISH):
            self.late_replies += 1
            return
        self._waiting -= 1
        if isinstance(reply, BaseException):
            self.core.add_result(node_id, Failed(f"{type(reply).__name__}: {reply}"))
        else:
            if not isinstance(reply, ReadReply):
                self.core.add_result(node_id, Failed(f"unexpected reply {reply!r}"))
            elif reply.siblings is None:
                self.core.add_result(node_id, ())
            else:
                try:
                    self.core.add_result(node_id, decode(reply.siblings))
                except CorruptionError as exc:
                    self.core.add_result(node_id, Failed(f"bad reply: {exc}"))
        if self.spares and node_id in self.core.failures and not self.core.enough():
            self._ask_spare(node_id)
        self._settle()

    def _deadline(self) -> None:
        self._timer = None
        if self._speculating:
            self._speculating = False
            # Nothing (or not enough) came in time: ask every spare now (Rule 5).
            if not self.core.enough():
                while self.spares:
                    self._ask(self.spares.pop(0))
            rest_s = max(0.0, self.timeout_s - self.speculate_s)
            self._timer = self.timers.call_later(rest_s, self._deadline)
            self._settle()
        elif self.state is State.WAITING_READ_REPAIR:
            self._finish()  # repairs not acked in time: anti-entropy covers them
        elif self.state is not State.FINISH:
            self.core.time_out()
            self._settle()

    def _settle(self) -> None:
        core = self.core
        if self.state in (State.EXECUTE, State.WAITING_R) and core.enough():
            self._to(State.ABSORBING)
            self.on_reply(core.response())  # Rule 2: before any repair
        if self.spares and self._waiting == 0 and core.enough():
            for spare in self.spares:  # Rule 5: the outcome is known without them
                core.skip(spare.node_id)
            self.spares.clear()
        if core.done():
            self._repair()
        elif self.state is State.EXECUTE:
            self._to(State.WAITING_R)

    def _repair(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._speculating = False
        action = self.core.final_action()
        if not isinstance(action, ReadRepair):
            self._finish()
            return
        self._to(State.WAITING_READ_REPAIR)
        self._send_repairs(action.targets, action.merged)
        if self._repairs_pending == 0:
            self._finish()
        else:
            self._timer = self.timers.call_later(self.timeout_s, self._deadline)

    def _send_repairs(self, stale: tuple[str, ...], merged: Siblings) -> None:
        request = self.request
        payload = encode(merged)
        hints = {t.node_id: t.hint_for for t in request.targets}
        for node_id in stale:
            self.repaired.append(node_id)
            if node_id == self.local_id:
                if self.service.store(request.db, request.key, merged, hints[node_id]):
                    self.repairs_acked += 1
                continue
            self._repairs_pending += 1
            future = self.transport.request(
                node_id, Write(request.db, request.key, payload, hints[node_id]), self.timeout_s)
            future.add_done_callback(self._on_repair_reply)

    def _on_repair_reply(self, future: asyncio.Future[Message]) -> None:
        if self.state is State.FINISH:
            self.late_replies += 1
            return
        if future.exception() is None:
            self.repairs_acked += 1
        self._repairs_pending -= 1
        if self._repairs_pending == 0:
            self._finish()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._to(State.FINISH)
        if self.on_finish is not None:
            self.on_finish(self)
