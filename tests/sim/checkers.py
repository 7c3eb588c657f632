"""History checkers for a Dynamo store (/work/shared/TESTING.md, "Checking histories").

A checker takes what happened (the versions clients wrote, which of them were acknowledged)
and what the replicas hold at the end (read directly from each replica, after heal and
quiescence), and returns ``Violation``s: an empty list means the history is good. Checkers
observe; they never drive the system. ``AckObserver`` watches the network through
``SimNetwork.on_message`` and records which versions replicas acknowledged storing, and
which of them a stand-in acknowledged keeping as a hint for another node.

Checks:
1. ``convergence``: every replica of a key holds the same sibling set (values and clocks).
2. ``no_lost_acked_write``: every acknowledged version is, on every replica of its key, a
   final sibling or dominated by one. A sibling with the *same* counters but other contents
   does not count: that is a reused counter silently replacing the write (Riak's kv679).
3. ``siblings_concurrent``: the siblings of every stored set are pairwise concurrent.
4. ``no_value_from_nowhere``: every stored version is one some client wrote (same counters,
   timestamp, writer and value): no invented values, no sibling from nowhere.
5. ``hints_delivered``: every version kept or acknowledged as a hint for an owner is, on that
   owner, a final sibling or dominated by one (hinted handoff delivered it; run it before
   any repair, or repair may have delivered it instead).
6. ``deleted_stay_deleted``: no replica of a key ends with a live value that a given
   tombstone of the key supersedes (its clock dominates the value's): a delete that was
   acknowledged, or read back as absent, is never undone by an older value coming back.

Versions compare by ``same_version``: clock counters (not the bump timestamps, which pruning
and merging may legitimately change) and every other field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cluster import vclock
from cluster.messages import CondWrite, CondWriteReply, Write, WriteAck
from cluster.sibling_codec import decode
from cluster.version import CLOCK, VALUE, Siblings, Version, merge
from tests.sim.sim_network import TraceEvent

Key = tuple[int, bytes]  # (db, key)
State = Mapping[str, Mapping[Key, Siblings]]  # node -> key -> stored sibling set


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    key: Key
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: db {self.key[0]} key {self.key[1]!r}: {self.detail}"


def counters(clock: vclock.ClockLike) -> tuple[tuple[bytes, int], ...]:
    return tuple(sorted((actor, entry[0]) for actor, entry in clock.items()))


def same_version(a: Version, b: Version) -> bool:
    return counters(a[CLOCK]) == counters(b[CLOCK]) and a[1:] == b[1:]


def show(v: Version) -> str:
    clock = ",".join(f"{actor.decode(errors='replace')}:{n}" for actor, n in counters(v[CLOCK]))
    return f"<{v[4]!r} @{v[1]} by {v[3]!r} [{clock}]>"


@dataclass
class History:
    """The versions clients wrote, in issue order, and which were acknowledged to them."""

    written: list[tuple[Key, Version]] = field(default_factory=list)
    acked: list[tuple[Key, Version]] = field(default_factory=list)

    def write(self, key: Key, version: Version) -> None:
        self.written.append((key, version))

    def ack(self, key: Key, version: Version) -> None:
        self.acked.append((key, version))


def _keys(state: State) -> list[Key]:
    return sorted({key for held in state.values() for key in held})


def _replicas(state: State, replicas_of: Callable[[Key], Sequence[str]] | None,
              key: Key) -> Sequence[str]:
    return replicas_of(key) if replicas_of is not None else sorted(state)


def check_convergence(state: State,
                      replicas_of: Callable[[Key], Sequence[str]] | None = None
                      ) -> list[Violation]:
    """Check 1. ``replicas_of(key)`` names the key's replicas (default: every node)."""
    out = []
    for key in _keys(state):
        sets = {node: merge(state[node].get(key, ()), ())
                for node in _replicas(state, replicas_of, key)}
        first = next(iter(sets.values()), ())
        if any(s != first for s in sets.values()):
            detail = "; ".join(f"{node}={[show(v) for v in s]}" for node, s in sets.items())
            out.append(Violation("convergence", key, f"replicas differ: {detail}"))
    return out


def check_no_lost_acked_write(acked: Iterable[tuple[Key, Version]], state: State,
                              replicas_of: Callable[[Key], Sequence[str]] | None = None
                              ) -> list[Violation]:
    """Check 2."""
    out = []
    for key, v in acked:
        for node in _replicas(state, replicas_of, key):
            final = state[node].get(key, ())
            if not any(_covers(s, v) for s in final):
                out.append(Violation("no_lost_acked_write", key,
                                     f"acked {show(v)} is gone from {node}, which holds "
                                     f"{[show(s) for s in final]}"))
    return out


def _covers(s: Version, v: Version) -> bool:
    if vclock.dominates(s[CLOCK], v[CLOCK]):
        return True
    return same_version(s, v)


def check_siblings_concurrent(state: State) -> list[Violation]:
    """Check 3."""
    out = []
    for node in sorted(state):
        for key, siblings in sorted(state[node].items()):
            for i, a in enumerate(siblings):
                for b in siblings[i + 1:]:
                    if not vclock.concurrent(a[CLOCK], b[CLOCK]):
                        out.append(Violation("siblings_concurrent", key,
                                             f"{node} keeps {show(a)} and {show(b)}, "
                                             "which are ordered or equal"))
    return out


def check_no_value_from_nowhere(written: Iterable[tuple[Key, Version]],
                                state: State) -> list[Violation]:
    """Check 4."""
    by_key: dict[Key, list[Version]] = {}
    for key, v in written:
        by_key.setdefault(key, []).append(v)
    out = []
    for node in sorted(state):
        for key, siblings in sorted(state[node].items()):
            for s in siblings:
                if not any(same_version(s, w) for w in by_key.get(key, ())):
                    out.append(Violation("no_value_from_nowhere", key,
                                         f"{node} holds {show(s)}, which no client wrote"))
    return out


def check_hints_delivered(hinted: Iterable[tuple[str, Key, Version]],
                          state: State) -> list[Violation]:
    """Check 5: ``hinted`` are (owner, key, version) triples."""
    out = []
    for owner, key, v in hinted:
        final = state[owner].get(key, ())
        if not any(_covers(s, v) for s in final):
            out.append(Violation("hints_delivered", key,
                                 f"hinted {show(v)} never reached its owner {owner}, which "
                                 f"holds {[show(s) for s in final]}"))
    return out


def check_deleted_stay_deleted(deleted: Iterable[tuple[Key, Version]], state: State,
                               replicas_of: Callable[[Key], Sequence[str]] | None = None
                               ) -> list[Violation]:
    """Check 6: ``deleted`` are (key, tombstone) pairs."""
    out = []
    for key, tombstone in deleted:
        assert tombstone[VALUE] is None, show(tombstone)
        for node in _replicas(state, replicas_of, key):
            for s in state[node].get(key, ()):
                if s[VALUE] is not None and vclock.dominates(tombstone[CLOCK], s[CLOCK]):
                    out.append(Violation("deleted_stay_deleted", key,
                                         f"{node} holds {show(s)}, which the tombstone "
                                         f"{show(tombstone)} deleted"))
    return out


def check_all(history: History, state: State,
              replicas_of: Callable[[Key], Sequence[str]] | None = None,
              replica_acked: Iterable[tuple[Key, Version]] = ()) -> list[Violation]:
    """Every check; ``replica_acked`` adds the versions replicas acknowledged (AckObserver)."""
    acked = list(history.acked) + list(replica_acked)
    return (check_convergence(state, replicas_of)
            + check_no_lost_acked_write(acked, state, replicas_of)
            + check_siblings_concurrent(state)
            + check_no_value_from_nowhere(history.written, state))


class AckObserver:
    """Records, from the messages themselves, each version a replica acknowledged storing.

    Attach with ``network.on_message(observer)``. A WRITE (or COND_WRITE) delivered to a
    replica and its WRITE_ACK (COND_WRITE_REPLY) delivered back to the coordinator mean the
    replica stored (merged) those versions: they must never be lost afterwards, whatever
    the coordinator told its client.
    When the WRITE named ``hint_for``, the receiver stood in for that owner and kept the
    versions as a hint: they are also in ``hinted`` as (owner, key, version).
    """

    def __init__(self) -> None:
        self._writes: dict[int, tuple[Key, Siblings, str | None]] = {}
        self.acked: list[tuple[Key, Version]] = []
        self.hinted: list[tuple[str, Key, Version]] = []

    def __call__(self, event: TraceEvent) -> None:
        packet = event.packet
        if event.event != "deliver" or not packet.request_id:
            return
        message = packet.message
        if isinstance(message, Write):
            self._writes[packet.request_id] = ((message.db, message.key),
                                               decode(message.siblings), message.hint_for)
        elif isinstance(message, CondWrite):  # merged as a WRITE; its reply is the ack
            self._writes[packet.request_id] = ((message.db, message.key),
                                               decode(message.siblings), None)
        elif isinstance(message, (WriteAck, CondWriteReply)):
            write = self._writes.pop(packet.request_id, None)
            assert write is not None, f"ack of a write never delivered: {packet}"
            key, siblings, owner = write
            self.acked.extend((key, v) for v in siblings)
            if owner is not None:
                self.hinted.extend((owner, key, v) for v in siblings)
