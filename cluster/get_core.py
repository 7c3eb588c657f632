"""The quorum core of a read: merge what the replicas answer, and decide the read repair.

Theory of operation (riak_kv ``riak_kv_get_core``). The get FSM asks every target of the
preference list for its sibling set of the key and hands each answer to ``add_result``: the
decoded sibling set (``()`` when the replica holds nothing: a not-found is an answer, as
Riak's default ``notfound_ok``), or a ``Failed`` on an error or a timeout. The first time
``enough()`` is true the FSM answers the client with ``response()``: the merge of every set
answered so far (``version.merge``), or a NOQUORUM. It keeps absorbing late answers; once
every target answered or the request timed out (``time_out()``), it asks ``final_action()``
and carries it out: ``Nop``, or ``ReadRepair(targets, merged)``: send ``merged`` to exactly
the replicas that answered something other than the merge of all answers.

This object never sends, waits or reads a clock: its tests are tables
(tests/test_cluster_quorum.py).

Invariants:
1. ``enough()`` and ``response()`` follow ``put_core``'s rules (invariants 1-3 there): R
   answers (found or not), or failures >= N - R + 1, or all in; the response is fixed then,
   and later answers only feed ``merged`` and ``final_action()``.
2. The merged set is ``version.merge`` of every answer absorbed, so it does not depend on the
   order the answers arrived in (merge is commutative, associative and idempotent; a
   hypothesis test checks the core end to end).
3. Read repair targets exactly the replicas that answered a set different from the merge;
   a replica that failed or never answered is not repaired here (hinted handoff and
   anti-entropy cover it). Nothing is repaired when every answer was not-found.
4. A repair is a merge at the replica, never an overwrite: ``merged`` descends or equals
   every answer, so a replica that changed since it answered loses nothing by merging it.
5. A target the FSM never asked is closed out with ``skip()`` once the response is fixed:
   it counts for ``done()`` only, so a read asked of R replicas of N decides its repair
   from the answers it had.
6. The core does not apply ``version.limit`` (the sibling limit): that bound is not part of
   the semilattice and would make the result depend on order. Replicas apply it on store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic

from cluster.consistency import Failed, NoQuorum, R, Requirement, Tally
from cluster.version import Siblings, merge

GetResult = Siblings | Failed  # () = the replica holds nothing for the key


@dataclass(frozen=True, slots=True)
class Found:
    """The read met its requirement. ``siblings`` is the merge of the answers so far;
    ``()`` means no replica that answered holds the key (the client sees nil)."""

    siblings: Siblings


@dataclass(frozen=True, slots=True)
class Nop:
    """No replica needs repair."""


@dataclass(frozen=True, slots=True)
class ReadRepair(Generic[R]):
    """Send ``merged`` to each of ``targets`` (in target order) to be merged there."""

    targets: tuple[R, ...]
    merged: Siblings


NOP = Nop()


class GetCore(Generic[R]):
    """One read's quorum state. REQUIRES: ``targets`` is not empty."""

    def __init__(self, targets: Mapping[R, str], requirement: Requirement) -> None:
        """``targets``: each replica the read was sent to, with its datacenter."""
        assert targets, "a read needs at least one target"
        self._tally: Tally[R] = Tally(targets, requirement)
        self.answers: dict[R, Siblings] = {}
        self.failures: dict[R, str] = {}
        self.skipped: list[R] = []  # targets never asked (skip())
        self.merged: Siblings = ()
        self._response: Found | NoQuorum | None = None
        self._settle()

    def add_result(self, replica: R, result: GetResult) -> None:
        """Absorb one replica's answer, early or late; a duplicate is ignored."""
        if isinstance(result, Failed):
            if self._tally.add(replica, False):
                self.failures[replica] = result.reason
        elif self._tally.add(replica, True):
            # Shortcuts that give what merge would (invariant 2 unchanged): one version is
            # already a normal set, and merging a set into an equal one changes nothing
            # (idempotence); replicas that agree, the common case, then cost no merge.
            normal = result if len(result) <= 1 else merge(result, ())
            self.answers[replica] = normal
            merged = self.merged
            if not merged:
                self.merged = normal
            elif normal and normal != merged:
                self.merged = merge(merged, normal)
        self._settle()

    def time_out(self) -> list[R]:
        """Fail every target still silent (reason "timeout"); returns them, in target order."""
        silent = self._tally.missing()
        for replica in silent:
            self.add_result(replica, Failed("timeout"))
        return silent

    def skip(self, replica: R) -> None:
        """Close out a target that was never asked (the FSM asked only some replicas and the
        outcome is known): ``done()`` stops waiting for it; it is neither an answer nor a
        failure, and gets no repair.

        REQUIRES: enough() (a skipped target could not have changed the response).
        """
        assert self._response is not None, "skip() before enough()"
        if self._tally.add(replica, False):
            self.skipped.append(replica)

    def enough(self) -> bool:
        return self._response is not None

    def response(self) -> Found | NoQuorum:
        """What the client is told, as it stood when enough() first held. REQUIRES: enough()."""
        assert self._response is not None, "response() before enough()"
        return self._response

    def _settle(self) -> None:
        if self._response is None and self._tally.decided():
            failure = self._tally.failure()
            self._response = failure if failure is not None else Found(self.merged)

    def done(self) -> bool:
        """True when every target has a result: time for ``final_action()``."""
        return self._tally.done()

    def final_action(self) -> Nop | ReadRepair[R]:
        """The repair owed once the read is over (invariants 3 and 4).

        REQUIRES: done() (every target answered, failed or timed out).
        """
        assert self.done(), "final_action() before every target has a result"
        merged = self.merged
        if not merged:
            return NOP
        answers = self.answers
        stale = tuple(replica for replica in self._tally.targets
                      if replica in answers and answers[replica] != merged)
        if not stale:
            return NOP
        return ReadRepair(stale, merged)
