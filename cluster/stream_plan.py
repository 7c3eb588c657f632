"""Planning range streaming: which token ranges move where when the ring changes, a join
(``pull_tasks``: what the newcomer pulls, and from whom) or a decommission (``push_tasks``:
what the leaving node pushes, and to whom). Pure functions over the old and new placement.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cluster.preflist import Placement
from cluster.ring import TokenRange


@dataclass(frozen=True, slots=True)
class PullTask:
    """Stream ``token_range`` of every db in ``dbs`` from ``sources`` (preference order)."""

    token_range: TokenRange
    sources: tuple[str, ...]
    dbs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PushTask:
    """Send this node's entries of ``token_range`` in ``dbs`` to every one of ``destinations``."""

    token_range: TokenRange
    dbs: tuple[int, ...]
    destinations: tuple[str, ...]


def _elementary_ranges(old: Placement, new: Placement) -> list[TokenRange]:
    """The ranges between consecutive tokens of both rings: each lies inside one vnode range
    of each ring, so its primaries are those of its right end in either ring."""
    bounds = sorted(set(old.ring.tokens) | set(new.ring.tokens))
    return [TokenRange(bounds[i - 1], bounds[i]) for i in range(len(bounds))]


def pull_tasks(old: Placement, new: Placement, me: str, dbs: Sequence[int],
               up: Collection[str] | None = None) -> list[PullTask]:
    """What ``me`` must stream when the ring goes from ``old`` to ``new`` (a join): every
    range it replicates in ``new`` but not in ``old``, from the nodes that replicated it in
    ``old``. Ranges nobody held are left out.

    Source order (Cassandra's consistent range movement): first the replica that *gives the
    range up* (in ``old``, not in ``new``), because ``me`` takes its place: copying exactly
    what it holds keeps every write on as many replicas as before, whereas copying from a
    replica that missed a write (W < N) would leave that write on one replica fewer after
    each move. The others follow as fallbacks; those in ``up`` before those down."""
    tasks = []
    for part in _elementary_ranges(old, new):
        before = old.primaries(part.right)
        after = new.primaries(part.right)
        if me in before or me not in after:
            continue
        sources = [n for n in before if n != me]
        # stable sort: preference order otherwise
        sources.sort(key=lambda n: (up is not None and n not in up, n in after))
        if sources:
            tasks.append(PullTask(part, tuple(sources), tuple(dbs)))
    return tasks


def push_tasks(old: Placement, new: Placement, me: str, dbs: Sequence[int]) -> list[PushTask]:
    """What ``me`` must send when the ring goes from ``old`` to ``new`` (a decommission:
    ``new`` is the ring without it): every range it replicates in ``old``, to the nodes that
    replicate it in ``new`` and did not in ``old``."""
    tasks = []
    for part in _elementary_ranges(old, new):
        before = old.primaries(part.right)
        if me not in before:
            continue
        gaining = tuple(n for n in new.primaries(part.right) if n not in before and n != me)
        if gaining:
            tasks.append(PushTask(part, tuple(dbs), gaining))
    return tasks
