"""Consistency levels: how many replicas must answer a read (R) or acknowledge a write (W).

A level is either a named ``Level`` (ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM,
as Cassandra names them) or an explicit count (``R 2 W 2`` in the ``CONSISTENCY`` command).
``required(level, replication, local_dc)`` turns it into a ``Requirement`` for one request,
given the replication factor of every datacenter; the quorum cores (put_core, get_core) take
that ``Requirement`` and nothing else.

Invariants:
1. ``parse(to_text(c)) == c`` for every ``Consistency`` c; ``parse`` is case-insensitive and
   raises ``ConsistencyError`` (never returns a partial result) on anything else.
2. ``quorum(n) == n // 2 + 1``: two quorums of the same n replicas always intersect, so
   R = W = QUORUM gives R + W > N (read-your-writes while the preference list is stable).
3. A ``Requirement`` never asks more of a group than it has replicas: ``required`` raises
   ``ConsistencyError`` instead ("cannot achieve THREE with 2 replicas"), so a core that
   reports NOQUORUM always had a satisfiable goal.
4. Every count in a ``Requirement`` is >= 1, or the requirement group is absent: an empty
   ``Requirement`` (nothing to wait for) cannot be built.
5. Groups are checked independently: ``total`` counts answers from every replica,
   ``per_dc[dc]`` counts answers from the replicas of datacenter ``dc`` only. LOCAL_QUORUM and
   EACH_QUORUM have no ``total``; the others have no ``per_dc``.

``Tally`` counts the results of one request against a ``Requirement`` (with riak_kv's failure
threshold N - Q + 1 per group) and ``NoQuorum`` is the one place the client's NOQUORUM error
text is built; both quorum cores use them, so reads and writes fail the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from cluster.errors import ClusterError

COUNT_MAX: Final = 64  # largest explicit R or W accepted (no replication factor is larger)


class ConsistencyError(ClusterError):
    """A consistency level that does not parse, or that the replication cannot satisfy."""


class Level(enum.Enum):
    ONE = "ONE"
    TWO = "TWO"
    THREE = "THREE"
    QUORUM = "QUORUM"
    ALL = "ALL"
    LOCAL_QUORUM = "LOCAL_QUORUM"  # a quorum of the coordinator's datacenter only
    EACH_QUORUM = "EACH_QUORUM"  # a quorum in every datacenter


Consistency = Level | int  # an int is an explicit count, 1..COUNT_MAX

_FIXED: Final = {Level.ONE: 1, Level.TWO: 2, Level.THREE: 3}


@dataclass(frozen=True, slots=True)
class Requirement:
    """What one request must collect (invariants 3-5).

    total: answers needed from all replicas together (0 = no such requirement).
    per_dc: (datacenter, answers needed from that datacenter's replicas), sorted by name.
    """

    total: int
    per_dc: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        assert self.total >= 0, self
        assert self.total or self.per_dc, "a requirement must ask for something"
        assert all(need >= 1 for _, need in self.per_dc), self
        assert list(self.per_dc) == sorted(self.per_dc), self


def quorum(n: int) -> int:
    """The smallest majority of ``n`` replicas (invariant 2). REQUIRES: n >= 1."""
    assert n >= 1, n
    return n // 2 + 1


def parse(text: str | bytes) -> Consistency:
    """A consistency level from its name or a decimal count (``"quorum"``, ``"2"``)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ConsistencyError(f"invalid consistency level {text!r}") from None
    word = text.strip().upper()
    if word.isdigit() and word.isascii():
        count = int(word)
        if not 1 <= count <= COUNT_MAX:
            raise ConsistencyError(f"consistency count must be 1..{COUNT_MAX}, not {count}")
        return count
    try:
        return Level(word)
    except ValueError:
        names = ", ".join(level.value for level in Level)
        raise ConsistencyError(
            f"invalid consistency level {text!r} (expected {names} or a number)") from None


def to_text(level: Consistency) -> str:
    """The text ``parse`` reads back (invariant 1)."""
    if isinstance(level, Level):
        return level.value
    assert 1 <= level <= COUNT_MAX, level
    return str(level)


def required(level: Consistency, replication: Mapping[str, int], local_dc: str) -> Requirement:
    """The ``Requirement`` of ``level`` for a key replicated ``replication[dc]`` times in
    each datacenter, coordinated from ``local_dc``.

    REQUIRES: every factor >= 1 and at least one datacenter. Raises ConsistencyError when the
    level asks more than exists (invariant 3), or LOCAL_QUORUM names a datacenter that holds
    no replica.
    """
    assert replication, "no datacenter"
    assert all(n >= 1 for n in replication.values()), replication
    n_total = sum(replication.values())
    if level is Level.LOCAL_QUORUM:
        n_local = replication.get(local_dc, 0)
        if n_local == 0:
            raise ConsistencyError(
                f"cannot achieve LOCAL_QUORUM: datacenter {local_dc!r} holds no replica")
        return Requirement(0, ((local_dc, quorum(n_local)),))
    if level is Level.EACH_QUORUM:
        return Requirement(0, tuple(sorted((dc, quorum(n)) for dc, n in replication.items())))
    if level is Level.QUORUM:
        need = quorum(n_total)
    elif level is Level.ALL:
        need = n_total
    elif isinstance(level, Level):
        need = _FIXED[level]
    else:
        need = level
    if need > n_total:
        raise ConsistencyError(
            f"cannot achieve consistency {to_text(level)} with {n_total} replicas")
    return Requirement(need)


# Counting answers against a Requirement (shared by put_core and get_core) ------------------

R = TypeVar("R", bound=Hashable)  # how the caller names a replica (node id, (partition, node))


@dataclass(frozen=True, slots=True)
class Failed:
    """A replica's result that counts against the quorum: an error, or a timeout."""

    reason: str


class NoQuorumError(ClusterError):
    """Too few replicas answered; the message is the client's error reply (NOQUORUM ...)."""


@dataclass(frozen=True, slots=True)
class NoQuorum:
    """The response of a request that can no longer meet its requirement.

    The one place the NOQUORUM text is built: ``NOQUORUM 1 of 2 required replicas answered``,
    with `` in datacenter dc2`` when a per-datacenter group failed.
    """

    answered: int
    required: int
    dc: str | None = None

    @property
    def message(self) -> str:
        where = f" in datacenter {self.dc}" if self.dc is not None else ""
        return f"NOQUORUM {self.answered} of {self.required} required replicas answered{where}"

    def error(self) -> NoQuorumError:
        return NoQuorumError(self.message)


class _Group:
    __slots__ = ("dc", "fail_threshold", "failed", "need", "ok")

    def __init__(self, dc: str | None, size: int, need: int) -> None:
        self.dc = dc
        self.need = need
        # riak_kv's calculate_fail_threshold(N, Q) -> N - Q + 1, with N the replicas actually
        # targeted in this group: that many failures and `need` answers can no longer come.
        # It is <= 0 when the group has fewer targets than it needs: failed from the start.
        self.fail_threshold = size - need + 1
        self.ok = 0
        self.failed = 0


class Tally(Generic[R]):
    """Answers of the targets of one request, counted per requirement group.

    Invariants:
    1. Each target counts once: a second result from the same replica (a duplicated or
       retried message) is ignored, so ``ok + failed <= len(targets)`` in every group.
    2. ``met()`` and ``failure()`` are monotone and exclusive: once one holds it holds forever
       and the other never does (a failed group has at most need - 1 answers left to get).
    3. When every target has a result, ``met()`` or ``failure()`` holds.
    """

    def __init__(self, targets: Mapping[R, str], requirement: Requirement) -> None:
        """``targets``: each replica of the request with its datacenter."""
        self.targets = targets
        self.results: dict[R, bool] = {}
        self._groups: list[_Group] = []
        if requirement.total:
            self._groups.append(_Group(None, len(targets), requirement.total))
        for dc, need in requirement.per_dc:
            size = sum(1 for target_dc in targets.values() if target_dc == dc)
            self._groups.append(_Group(dc, size, need))

    def add(self, replica: R, ok: bool) -> bool:
        """Count one result; False (and nothing counted) if ``replica`` already has one.

        REQUIRES: ``replica`` is one of the targets.
        """
        assert replica in self.targets, replica
        if replica in self.results:
            return False
        self.results[replica] = ok
        dc = self.targets[replica]
        for group in self._groups:
            if group.dc is None or group.dc == dc:
                if ok:
                    group.ok += 1
                else:
                    group.failed += 1
        return True

    def met(self) -> bool:
        # A plain loop: asked after every answer, where a generator costs more than the test.
        for group in self._groups:  # noqa: SIM110
            if group.ok < group.need:
                return False
        return True

    def failure(self) -> NoQuorum | None:
        """The first group that can no longer meet its need, as a NoQuorum; None if none."""
        for group in self._groups:
            if group.failed >= group.fail_threshold:
                return NoQuorum(group.ok, group.need, group.dc)
        return None

    def done(self) -> bool:
        """True when every target has a result."""
        return len(self.results) == len(self.targets)

    def decided(self) -> bool:
        """True once the outcome is known: met, failed, or nothing more to wait for."""
        decided = self.met() or self.failure() is not None
        assert decided or not self.done(), "every target answered yet no outcome (invariant 3)"
        return decided

    def missing(self) -> list[R]:
        """Targets without a result yet, in target order."""
        return [replica for replica in self.targets if replica not in self.results]
