"""Take the memtable's big containers of bytes out of the cyclic garbage collector's lists.

Why: a memtable of 64 MiB is ~600k keys in a dict (a subclass, so always GC-tracked) and in
sorted-run lists (lists are always tracked). Every GC pass that meets such a container visits
each key and value object, a cache miss each: ~30-70 ms per pass with the GIL held, and a
frozen memtable met three passes in a row as it aged (generation 0, 1, then 2), the longest
stall writers saw (docs/benchmarks.md, "Storage engine"). A container whose items are all
bytes or None can never be part of a reference cycle (those objects refer to nothing), so
the collector has nothing to find there: untracking it only removes wasted work.

Invariants:
1. untrack(obj) is called only on a dict or list whose keys and items are bytes or None, and
   nothing else is ever stored in it afterwards (callers' invariants say so). A dict stays
   untracked under such inserts (CPython re-tracks a dict only when a tracked object goes
   in); a list never re-tracks, which is why nothing else may go in.
2. It is O(1) (PyObject_GC_UnTrack unlinks the object from its generation's list) and a no-op
   for an object not tracked, and on an interpreter without that C function (not CPython).
3. Deallocation is unaffected: CPython's dealloc of a list, a dict, or a dict subclass
   untracks (or re-tracks and then untracks) as it would for a tracked object.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable


def _c_untrack() -> Callable[[object], None] | None:
    if sys.implementation.name != "cpython":
        return None
    try:
        function = ctypes.pythonapi.PyObject_GC_UnTrack
    except AttributeError:
        return None
    function.argtypes = [ctypes.py_object]
    function.restype = None
    return function


_UNTRACK = _c_untrack()


def untrack(obj: dict[bytes, bytes | None] | list[bytes] | list[bytes | None]) -> None:
    """Stop the GC from traversing obj (invariant 1 is the caller's to keep)."""
    if _UNTRACK is not None and gc.is_tracked(obj):
        _UNTRACK(obj)
