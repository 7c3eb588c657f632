"""The quorum core of a write: which replica acks are in, and whether the client can be told.

Theory of operation (riak_kv ``riak_kv_put_core``). The put FSM sends the new version to every
target of the preference list and hands each result to ``add_result``: an ``Acked`` when the
replica stored it, a ``Failed`` on an error or a timeout. After each result it asks
``enough()``; the first time that is true it answers the client with ``response()``. It keeps
feeding late results afterwards (they change nothing the client saw, but they are counted, and
a request is finished only when every target answered or timed out). When the request times
out the FSM calls ``time_out()``, which fails every target still silent, so ``enough()`` is
then true and ``response()`` names how many acks arrived.

This object never sends, waits or reads a clock: its tests are tables
(tests/test_cluster_quorum.py).

Invariants:
1. ``enough()`` is true exactly when the requirement is met, or a group of it can no longer be
   met (failures >= N - W + 1 in that group), or every target has a result.
2. Once ``enough()`` is true, ``response()`` never changes: it is fixed when the outcome is
   decided (``consistency.Tally`` invariant 2 makes the outcome itself final: a late ack
   cannot turn a NOQUORUM into success, nor a late failure a success into NOQUORUM).
3. A replica's result counts once; a duplicate (the network may deliver twice) is ignored.
4. ``PutOk`` is returned only when at least the required acks arrived: never a silent partial
   success.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic

from cluster.consistency import Failed, NoQuorum, R, Requirement, Tally


@dataclass(frozen=True, slots=True)
class Acked:
    """A replica's result: it stored (merged) the version."""


ACKED = Acked()
PutResult = Acked | Failed


@dataclass(frozen=True, slots=True)
class PutOk:
    """The write met its requirement; ``acks`` is how many replicas had acked by then."""

    acks: int


class PutCore(Generic[R]):
    """One write's quorum state. REQUIRES: ``targets`` is not empty."""

    def __init__(self, targets: Mapping[R, str], requirement: Requirement) -> None:
        """``targets``: each replica the write was sent to, with its datacenter."""
        assert targets, "a write needs at least one target"
        self._tally: Tally[R] = Tally(targets, requirement)
        self.failures: dict[R, str] = {}
        self._response: PutOk | NoQuorum | None = None
        self._settle()

    def add_result(self, replica: R, result: PutResult) -> None:
        """Absorb one replica's result, early or late (invariant 3: duplicates ignored)."""
        counted = self._tally.add(replica, isinstance(result, Acked))
        if counted and isinstance(result, Failed):
            self.failures[replica] = result.reason
        self._settle()

    def time_out(self) -> list[R]:
        """Fail every target still silent (reason "timeout"); returns them, in target order."""
        silent = self._tally.missing()
        for replica in silent:
            self.add_result(replica, Failed("timeout"))
        return silent

    def enough(self) -> bool:
        """Invariant 1."""
        return self._response is not None

    def response(self) -> PutOk | NoQuorum:
        """What the client is told, as it stood when enough() first held (invariant 2).

        REQUIRES: enough().
        """
        assert self._response is not None, "response() before enough()"
        return self._response

    def _settle(self) -> None:
        if self._response is None and self._tally.decided():
            failure = self._tally.failure()
            self._response = failure if failure is not None else PutOk(self.acks)

    def done(self) -> bool:
        """True when every target has a result (the FSM may then forget the request)."""
        return self._tally.done()

    @property
    def acks(self) -> int:
        return sum(1 for ok in self._tally.results.values() if ok)
