"""When the keys of one database next need attention: a timing wheel of ~1 s slots.

``Replica.due[db]`` holds every stored key that will need work at some time: a key whose
winner expires is due at its expiry, a key whose versions are all dead is due when it may be
purged. The active expiry cycle (cluster/expiry.py) takes the keys of the slots that have
passed; what a key's exact due time is, the cycle learns from the key's stored value, which
it reads anyway.

Why not a sorted list of ``(due_ms, key)`` (what this replaced): every SET ... EX moved the
key in it, a removal and an insertion, each a bisection whose comparisons of tuples, ints and
bytes missed the cache; at 100k keys that was ~5 us of a ~9 us write (in-process). Nothing
needs a total order: expiring a key up to one slot late is invisible, since reads hide an
expired value at once (Node Rule 5), and here an add or discard is two dict operations.

Invariants:
1. A key added with due time ``d`` stays in slot ``d >> SLOT_SHIFT`` until it is discarded
   with a due time of the same slot or taken. A slot holds a key at most once; a key may be
   in several slots (a stale entry: Replica invariant 5).
2. ``take(now_ms, n)`` returns keys only from slots that ended at or before ``now_ms``, earliest
   slot first, and removes what it returns: repeated takes always make progress.
3. A slot's first key is stored as itself; a second one makes it a set (most slots of a
   sparse index hold one key, and a set costs ~200 bytes).
4. The heap holds the number of every non-empty slot, at least once; it may also hold numbers
   of slots emptied since (skipped when reached), but never more than
   ``2 * len(slots) + HEAP_SLACK`` entries: past that it is rebuilt from the slots.
5. ``len()`` is the number of (slot, key) entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from heapq import heapify, heappop, heappush

SLOT_SHIFT = 10  # a slot spans 1024 ms
HEAP_SLACK = 64


class DueIndex:
    __slots__ = ("_count", "_heap", "_slots")

    def __init__(self, entries: Iterable[tuple[int, bytes]] = ()) -> None:
        self._slots: dict[int, bytes | set[bytes]] = {}
        self._heap: list[int] = []
        self._count = 0
        for due_ms, key in entries:
            self.add(due_ms, key)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, entry: tuple[int, bytes]) -> bool:
        """Whether the slot of ``entry``'s due time holds its key."""
        due_ms, key = entry
        held = self._slots.get(due_ms >> SLOT_SHIFT)
        return held == key if isinstance(held, bytes) else held is not None and key in held

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """``(slot start ms, key)`` for every entry, slots in no particular order."""
        for slot, held in self._slots.items():
            start = slot << SLOT_SHIFT
            if isinstance(held, bytes):
                yield start, held
            else:
                for key in held:
                    yield start, key

    def add(self, due_ms: int, key: bytes) -> None:
        slot = due_ms >> SLOT_SHIFT
        slots = self._slots
        held = slots.get(slot)
        if held is None:
            slots[slot] = key
            heap = self._heap
            heappush(heap, slot)
            if len(heap) > 2 * len(slots) + HEAP_SLACK:  # invariant 4
                self._heap = heap = list(slots)
                heapify(heap)
        elif isinstance(held, bytes):
            if held == key:
                return
            slots[slot] = {held, key}
        elif key in held:
            return
        else:
            held.add(key)
        self._count += 1

    def discard(self, due_ms: int, key: bytes) -> None:
        """Remove ``key`` from the slot of ``due_ms`` if it is there."""
        slot = due_ms >> SLOT_SHIFT
        slots = self._slots
        held = slots.get(slot)
        if held is None:
            return
        if isinstance(held, bytes):
            if held != key:
                return
            del slots[slot]  # its heap entry is skipped when reached (invariant 4)
        elif key in held:
            held.remove(key)
            if not held:
                del slots[slot]
        else:
            return
        self._count -= 1

    def take(self, now_ms: int, limit: int) -> list[bytes]:
        """Remove and return up to ``limit`` keys of slots ended by ``now_ms`` (invariant 2)."""
        taken: list[bytes] = []
        horizon = (now_ms + 1) >> SLOT_SHIFT  # slot n has ended when n + 1 <= horizon
        heap, slots = self._heap, self._slots
        while heap and len(taken) < limit:
            slot = heap[0]
            if slot >= horizon:
                break
            held = slots.get(slot)
            if held is None:
                heappop(heap)
                continue
            if isinstance(held, bytes):
                taken.append(held)
            else:
                while held and len(taken) < limit:
                    taken.append(held.pop())
                if held:
                    break
            del slots[slot]
            heappop(heap)
        self._count -= len(taken)
        return taken
