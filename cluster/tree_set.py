"""The Merkle trees a node keeps for anti-entropy: one per (database, token range it replicates).

Theory of operation. ``TreeSet`` holds, for each ring range this node replicates
(``Placement.replica_ranges``), one ``RangeTree`` per database that has keys in it. A
``RangeTree`` is a ``merkle.MerkleTree`` laid over the range in *offset* coordinates
(``offset = (token - origin) mod 2**64`` with ``origin = left + 1``), so a range that wraps
past ``TOKEN_MAX`` is one contiguous tree like any other. A node at (level, index) covers the
same token span in every tree of the range whatever its depth (``node_spans``), which is what
lets two replicas whose trees have different depths still compare at the shallower depth.

Lifecycle of a range: UNBUILT until something asks for it (``require``: a repair this node
starts, or a peer's request), then BUILDING while ``build_step`` scans it in bounded steps
(one database after the other, in engine key order), then READY. During the build, a write
to the part already scanned is applied to the builder and one to the part not yet scanned is
ignored (the scan will read it); afterwards every write is applied to the tree through the
hooks ``on_store`` / ``on_write`` / ``on_flush``, so a READY tree is current without scans.
The hooks are handed the stored bytes before and after a change, never the sibling sets,
and hash them exactly as the scan does (``stored_hash``): what a hook XORs out is what a
scan or an earlier hook XORed in, whatever msgpack form the bytes are in.

Why one tree per (db, range) rather than the db folded into the entry hash: (a) each tree's
depth fits its own key count (a nearly empty db 5 does not inherit db 0's depth); (b) the keys
of one node of a (db, range) tree are one or two engine ranges (keys.py invariant 3), so
listing a differing leaf is one short scan instead of one per database; (c) FLUSHDB empties a
db's trees in O(ranges) without touching any other db; (d) a db without keys costs nothing.

Memory bound (per (db, range) tree of depth d; CPython 3.11, 64-bit): ``2**(d+1) - 1`` list
slots of 8 bytes, plus one int object (48 bytes) per node whose hash is not zero. Depth is
``merkle.depth_for(keys, KEYS_PER_LEAF)`` when built (about 4 to 8 keys per leaf), capped at
``DEPTH_CAP``: about 14 to 28 bytes per key, at most ``2**(DEPTH_CAP+1) * 56`` bytes (7 MiB)
per (db, range) however many keys it holds. A build in progress also holds a sparse dict of
at most ``min(keys, 2**DEPTH_CAP)`` leaves for the one (db, range) it is scanning.
``memory_bytes`` reports the estimate.

Invariants:
1. A READY tree's root is the XOR of ``stored_hash(key, bytes)`` over every key of its
   (db, range) in the engine, provided every change of the engine's user keys goes through a
   hook (``on_store``/``on_write``/``on_flush``), in the order the engine applied them.
2. ``stored_hash`` depends on the sibling set, not on the order its versions are encoded in:
   a set of several versions is hashed in ``version.rank`` order (``merge`` stores that order,
   but ``expire`` and ``prune_siblings`` may reorder ranks without re-sorting).
3. A range's trees are built from one scan of each database's span(s), and a write applied to
   a (db, range) under construction is counted exactly once: by the builder if its engine key
   is at or before the scan cursor, by the scan otherwise.
4. A tree's depth never changes in place except by ``truncate`` (exact: level hashes do not
   depend on depth); a tree that outgrew its depth is rebuilt by a new scan, and the old one
   serves, kept current, until the new one replaces it.
5. ``set_ranges`` keeps the trees of ranges that are still replicated, identical (left,
   right), and drops the others; a range that changed shape is a new range, built anew.
"""

from __future__ import annotations

import enum
import hashlib
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgpack

from cluster import keys as keyspace
from cluster.errors import CorruptionError
from cluster.keys import TOKEN_MAX
from cluster.merkle import HASH_BYTES, MerkleTree, depth_for
from cluster.ring import TokenRange
from cluster.sibling_codec import decode, encode
from cluster.version import Siblings, rank

RING = TOKEN_MAX + 1
KEYS_PER_LEAF = 8  # average keys listed per differing leaf: O(8) keys per differing key
DEPTH_CAP = 16  # 65,536 leaves: bounds one tree at ~7 MiB whatever the range holds
GROWTH_REBUILD = 4  # rebuild a tree once it holds 4x the keys its depth was chosen for
BUILD_STEP_KEYS_DEFAULT = 4096  # keys one build_step scans (bounds one event-loop slice)
NODE_SLOT_BYTES = 8  # a list slot
HASH_INT_BYTES = 48  # a 128-bit int object (sys.getsizeof 44, rounded to the allocator's 16)

ScanFn = Callable[[bytes, bytes], Iterable[tuple[bytes, bytes]]]
_unpackb = msgpack.unpackb
_ENTRY_HASHER = hashlib.blake2b(digest_size=HASH_BYTES, person=b"respkv-merkle")  # as merkle
_FIXARRAYS = frozenset(bytes((0x90 | n,)) for n in range(16))  # msgpack fixarray headers
_PREFIX_BYTES = keyspace.PREFIX_BYTES


def canonical(raw: bytes) -> bytes:
    """The bytes ``stored_hash`` hashes for a stored value (invariant 2).

    One version (the common case) is already canonical: ``sibling_codec.encode`` writes the
    clock in actor order and every stored value was written by it. Several versions are
    re-encoded in ``rank`` order. A value that does not decode is hashed as it is (it is
    then different from every good value, which is what a repair should see).
    """
    if raw[:1] in _FIXARRAYS:
        # A flat array of at most 15 fields: one version (a one-, two- or three-actor clock:
        # 9, 12 or 15 fields), since several versions take at least 17 (the codec's layout:
        # 1 + 5 per version + 3 per clock entry); or not a sibling set at all, which is
        # hashed as it is too. Every SET of a cluster of three stores such a value.
        return raw
    try:
        fields = _unpackb(raw, use_list=False)
        if type(fields) is tuple and len(fields) >= 6 and fields[5] * 3 + 6 == len(fields):
            return raw  # one version with a longer clock (see the codec's layout)
        siblings = decode(raw)
    except (CorruptionError, TypeError, ValueError):
        return raw
    return canonical_encode(siblings)


def canonical_encode(siblings: Siblings) -> bytes:
    """``encode`` of a sibling set with its versions in ``rank`` order."""
    if len(siblings) > 1:
        siblings = tuple(sorted(siblings, key=rank))
    return encode(siblings)


def entry_int(key: bytes, stored: bytes) -> int:
    """``merkle.entry_hash(key, stored)`` as an int."""
    return _entry_of(_head(key), stored)


def _head(key: bytes) -> bytes:
    """What an entry hash hashes before the stored bytes (merkle.entry_hash)."""
    return len(key).to_bytes(4, "big") + key


def _entry_of(head: bytes, stored: bytes) -> int:
    """``entry_int`` of the key whose ``_head`` is ``head``, computed from a pre-personalised
    hasher (copying one is cheaper than building one: this runs twice a write)."""
    digest = _ENTRY_HASHER.copy()
    digest.update(head + stored)
    return int.from_bytes(digest.digest(), "big")


def stored_hash(key: bytes, raw: bytes) -> int:
    """The entry hash (an int) of a key and its stored bytes; what the trees XOR together."""
    return entry_int(key, canonical(raw))


# -- Geometry: nodes of a range in token coordinates -------------------------------------


def origin_of(rng: TokenRange) -> int:
    """The first token of a range (offset 0)."""
    return (rng.left + 1) & TOKEN_MAX


def node_of(rng: TokenRange, level: int, tok: int) -> int:
    """The index of the node at ``level`` whose span holds ``tok``. REQUIRES: tok in rng."""
    return (((tok - origin_of(rng)) & TOKEN_MAX) << level) // rng.size()


def node_spans(rng: TokenRange, level: int, index: int) -> list[tuple[int, int | None]]:
    """The node's token span as ``[start, end)`` pieces in offset order (end None: top of
    the ring); two pieces when it wraps, none when it holds no token."""
    size = rng.size()
    first = -((-index * size) >> level)  # ceil(index * size / 2**level)
    after = -((-(index + 1) * size) >> level)
    if first == after:
        return []
    start = (origin_of(rng) + first) & TOKEN_MAX
    stop = start + (after - first)
    if stop <= RING:
        return [(start, None if stop == RING else stop)]
    return [(start, None), (0, stop - RING)]


# -- One tree ----------------------------------------------------------------------------


class RangeTree(MerkleTree):
    """A ``MerkleTree`` over one token range in offset coordinates (module docstring).

    Only the leaf level is kept current by ``apply``; the levels above it are recomputed
    from the leaves when next read (``root``, ``hashes``, ``reset``, ``truncate``). A write
    then costs one XOR whatever the depth, and a tree is read (by a repair, hourly) far
    less often than it is written. Do not make the inner levels eager again for the sake of
    reads: refreshing costs about a quarter of a scan of the range's keys per read, and
    every write a node serves would pay depth XORs instead.
    """

    def __init__(self, rng: TokenRange, depth: int) -> None:
        super().__init__(0, rng.size(), depth)
        self.range = rng
        self.origin = origin_of(rng)
        self._stale = False  # the levels above the leaves lag behind them

    def leaf_of(self, tok: int) -> int:
        """The leaf of a ring token. REQUIRES: ``self.range.contains(tok)``."""
        return (((tok - self.origin) & TOKEN_MAX) << self.depth) // self.end

    def apply(self, tok: int, delta: int, count: int) -> None:
        """XOR ``delta`` into the leaf of ``tok`` (its ancestors follow when next read);
        ``count`` is the change in entries (-1, 0 or +1)."""
        depth = self.depth
        self._levels[depth][(((tok - self.origin) & TOKEN_MAX) << depth) // self.end] ^= delta
        self._stale = True
        self.entries += count

    @property
    def root(self) -> bytes:
        self._refresh()
        return super().root

    def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
        self._refresh()
        return super().hashes(level, indices)

    def _refresh(self) -> None:
        """Recompute the levels above the leaves if a write changed the leaves since."""
        if self._stale:
            self._fill_above(self.depth)
            self._stale = False

    def _fill_above(self, depth: int) -> None:
        """Set every node above level ``depth`` to the XOR of its two children."""
        levels = self._levels
        for level in range(depth - 1, -1, -1):
            below = levels[level + 1]
            row = levels[level]
            for i in range(len(row)):
                row[i] = below[2 * i] ^ below[2 * i + 1]

    @classmethod
    def from_leaves(cls, rng: TokenRange, depth: int, leaves: dict[int, int], from_depth: int,
                    entries: int) -> RangeTree:
        """A tree of ``depth`` from leaf hashes computed at ``from_depth >= depth``."""
        assert from_depth >= depth, (from_depth, depth)
        tree = cls(rng, depth)
        bottom = tree._levels[depth]
        shift = from_depth - depth
        for leaf, value in leaves.items():
            bottom[leaf >> shift] ^= value
        tree._fill_above(depth)
        tree.entries = entries
        return tree

    def truncate(self, depth: int) -> None:
        """Drop the levels below ``depth`` (exact: invariant 4)."""
        assert 0 <= depth <= self.depth, depth
        self._refresh()
        del self._levels[depth + 1:]
        self.depth = depth

    def reset(self, level: int, index: int, leaves: dict[int, int], entries: int) -> bool:
        """Make the subtree of node (level, index) hold exactly ``leaves`` (leaf -> hash,
        absent = 0), as a scan of its span found them (``entries`` keys); ancestors are fixed
        to match. ``entries`` (the sizing count) is corrected only for the root. Returns
        whether anything was wrong (a change that bypassed the hooks: compaction purging a
        tombstone, a damaged block). REQUIRES: level <= depth."""
        self._refresh()
        levels = self._levels
        width = self.depth - level
        first = index << width
        actual = 0
        for value in leaves.values():
            actual ^= value
        if levels[level][index] == actual:
            return False
        bottom = levels[self.depth]
        for leaf in range(first, first + (1 << width)):
            bottom[leaf] = 0
        for leaf, value in leaves.items():
            assert first <= leaf < first + (1 << width), (leaf, first, width)
            bottom[leaf] ^= value
        lo, hi = first, first + (1 << width)
        for lv in range(self.depth - 1, -1, -1):
            lo >>= 1
            hi = max(lo + 1, hi >> 1)
            row, below = levels[lv], levels[lv + 1]
            for i in range(lo, hi):
                row[i] = below[2 * i] ^ below[2 * i + 1]
        if level == 0:
            self.entries = entries  # below the root, per-subtree counts are not kept
        return True

    def memory_bytes(self) -> int:
        self._refresh()
        slots = (1 << (self.depth + 1)) - 1
        nonzero = sum(1 for row in self._levels for value in row if value)
        return slots * NODE_SLOT_BYTES + nonzero * HASH_INT_BYTES


# -- The set of trees ----------------------------------------------------------------------


class Status(enum.Enum):
    UNBUILT = "unbuilt"
    BUILDING = "building"
    READY = "ready"


@dataclass(slots=True)
class _Build:
    """A scan of some databases of one range, in progress (invariant 3)."""

    dbs: list[int]  # databases still to scan; dbs[0] is being scanned
    span: int = 0  # which of the range's spans of dbs[0] is being scanned
    cursor: bytes | None = None  # the last engine key scanned in dbs[0] (None: none yet)
    leaves: dict[int, int] = field(default_factory=dict)  # DEPTH_CAP leaf -> hash
    entries: int = 0


@dataclass(slots=True)
class RangeTrees:
    """The trees of one range: ``trees[db]`` for each db with keys (READY dbs only)."""

    range: TokenRange
    status: Status = Status.UNBUILT
    trees: dict[int, RangeTree] = field(default_factory=dict)
    build: _Build | None = None
    builds: int = 0  # completed builds of any of its dbs (INFO)


class TreeSet:
    """See the module docstring. ``scan(lo, hi)`` yields the engine's (key, raw value) pairs
    with ``lo <= key < hi`` (``Engine.scan``); ``databases`` is the node's db count."""

    def __init__(self, scan: ScanFn, databases: int, *, keys_per_leaf: int = KEYS_PER_LEAF,
                 depth_cap: int = DEPTH_CAP) -> None:
        assert 1 <= databases <= keyspace.DATABASES_MAX, databases
        assert keys_per_leaf >= 1 and 0 <= depth_cap <= DEPTH_CAP, (keys_per_leaf, depth_cap)
        self._scan = scan
        self.databases = databases
        self.keys_per_leaf = keys_per_leaf
        self.depth_cap = depth_cap
        self.ranges: dict[TokenRange, RangeTrees] = {}
        self._starts: list[int] = []  # sorted span starts, for token -> range lookup
        self._span_of: list[tuple[int, RangeTrees]] = []  # (span end, range) per start
        self._queue: deque[TokenRange] = deque()  # ranges with a build pending or running
        # Whether any range has left UNBUILT: until one has, the write hooks have nothing to
        # update (every range ignores writes) and return before looking the range up.
        self._tracking = False
        self.stats = {"builds_done": 0, "keys_scanned": 0, "tree_corrections": 0,
                      "rebuilds_growth": 0, "truncations": 0}

    # Ranges ------------------------------------------------------------------------------

    def set_ranges(self, ranges: Sequence[TokenRange]) -> None:
        """The ranges this node replicates now (invariant 5)."""
        old = self.ranges
        self.ranges = {rng: old.get(rng) or RangeTrees(rng) for rng in ranges}
        self._queue = deque(r for r in self._queue if r in self.ranges)
        spans: list[tuple[int, int, RangeTrees]] = []
        for trees in self.ranges.values():
            for start, end in trees.range.spans():
                spans.append((start, RING if end is None else end, trees))
        spans.sort(key=lambda s: s[0])
        self._starts = [s[0] for s in spans]
        self._span_of = [(s[1], s[2]) for s in spans]
        self._tracking = any(t.status is not Status.UNBUILT for t in self.ranges.values())

    def range_of(self, tok: int) -> RangeTrees | None:
        """The replicated range holding ``tok``, None if this node does not replicate it."""
        i = bisect_right(self._starts, tok) - 1
        if i < 0:
            return None
        end, trees = self._span_of[i]
        return trees if tok < end else None

    def require(self, rng: TokenRange) -> Status:
        """The status of ``rng``'s trees, queueing a build if they are not built (first in
        line: someone is waiting). KeyError if ``rng`` is not replicated here."""
        trees = self.ranges[rng]
        if trees.status is Status.UNBUILT:
            trees.status = Status.BUILDING
            self._tracking = True
            trees.build = _Build(list(range(self.databases)))
            self._queue.appendleft(rng)
        return trees.status

    def tree(self, rng: TokenRange, db: int) -> RangeTree | None:
        """The READY tree of (db, range), None if it has no keys. REQUIRES: range READY."""
        return self.ranges[rng].trees.get(db)

    # Building ----------------------------------------------------------------------------

    def pending_builds(self) -> int:
        return len(self._queue)

    def build_step(self, budget_keys: int = BUILD_STEP_KEYS_DEFAULT) -> int:
        """Scan up to about ``budget_keys`` keys of the builds queued; returns keys scanned.

        Call from a timer while ``pending_builds()``; each call is one bounded slice of work.
        """
        scanned = 0
        while self._queue and scanned < budget_keys:
            trees = self.ranges[self._queue[0]]
            build = trees.build
            assert build is not None and build.dbs, trees.range
            scanned += self._scan_some(trees, build, budget_keys - scanned)
            if not build.dbs:
                trees.build = None
                trees.status = Status.READY
                self._queue.popleft()
        self.stats["keys_scanned"] += scanned
        return scanned

    def _scan_some(self, trees: RangeTrees, build: _Build, budget: int) -> int:
        db = build.dbs[0]
        spans = trees.range.spans()
        start, end = spans[build.span]
        lo, hi = keyspace.token_range(db, start, end)
        if build.cursor is not None:
            lo = build.cursor + b"\x00"  # the smallest key after the cursor
        scanned = 0
        origin = origin_of(trees.range)
        shift = 64 - self.depth_cap  # offset -> DEPTH_CAP leaf, for a range of size 2**64
        size = trees.range.size()
        leaves = build.leaves
        prefix = keyspace.PREFIX_BYTES
        last: bytes | None = None
        for ekey, raw in self._scan(lo, hi):
            tok = int.from_bytes(ekey[1:prefix], "big")
            if size == RING:
                leaf = ((tok - origin) & TOKEN_MAX) >> shift
            else:
                leaf = (((tok - origin) & TOKEN_MAX) << self.depth_cap) // size
            leaves[leaf] = leaves.get(leaf, 0) ^ stored_hash(ekey[prefix:], raw)
            build.entries += 1
            scanned += 1
            last = ekey
            if scanned >= budget:
                break
        else:
            last = None  # this span is done
            build.span += 1
        if last is not None:
            build.cursor = last
            return scanned
        build.cursor = None
        if build.span == len(spans):
            self._finish_db(trees, build)
        return scanned

    def _finish_db(self, trees: RangeTrees, build: _Build) -> None:
        db = build.dbs.pop(0)
        if build.entries:
            depth = min(depth_for(build.entries, self.keys_per_leaf), self.depth_cap)
            trees.trees[db] = RangeTree.from_leaves(trees.range, depth, build.leaves,
                                                    self.depth_cap, build.entries)
        else:
            trees.trees.pop(db, None)
        trees.builds += 1
        self.stats["builds_done"] += 1
        build.span = 0
        build.cursor = None
        build.leaves = {}
        build.entries = 0

    # Hooks -------------------------------------------------------------------------------

    def on_write(self, db: int, key: bytes, old: bytes | None, new: bytes | None) -> None:
        """The engine value of (db, key) went from ``old`` to ``new`` (None: absent)."""
        if db < self.databases:
            self.on_store(keyspace.engine_key(db, key), old, new)

    def on_store(self, ekey: bytes, old: bytes | None, new: bytes | None) -> None:
        """``on_write`` for the Replica's hook (replica.py invariant 6), which names the
        engine key. Runs on every write a node serves once its trees are built: the common
        case (a READY range, a key overwritten) takes one range lookup, two entry hashes of
        the stored bytes as they are (what a scan hashes: invariant 1; re-encoding the sets
        instead would cost two encodes) and one leaf XOR."""
        db = ekey[0]
        if not self._tracking or old == new or db >= self.databases:
            return
        tok = int.from_bytes(ekey[1:_PREFIX_BYTES], "big")
        trees = self.range_of(tok)
        if trees is None or trees.status is Status.UNBUILT:
            return
        key = ekey[_PREFIX_BYTES:]
        head = _head(key)
        delta = 0
        count = 0
        if old is not None:
            delta = _entry_of(head, canonical(old))
            count = -1
        if new is not None:
            delta ^= _entry_of(head, canonical(new))
            count += 1
        if count == 0 and trees.build is None:
            tree = trees.trees.get(db)
            if tree is not None:  # an overwrite in a READY range: nothing else changes
                tree.apply(tok, delta, 0)
                return
        self._apply(trees, db, tok, key, delta, count)

    def on_flush(self, db: int | None) -> None:
        """Every key of ``db`` (None: of every db) was removed."""
        for trees in self.ranges.values():
            for d in ([db] if db is not None else list(trees.trees)):
                trees.trees.pop(d, None)
            build = trees.build
            if build is not None and build.dbs and (db is None or build.dbs[0] == db):
                # The scanned part of the db being built is gone too; what remains of the
                # scan will see the db as it is now.
                build.leaves = {}
                build.entries = 0

    def _apply(self, trees: RangeTrees, db: int, tok: int, key: bytes, delta: int,
               count: int) -> None:
        build = trees.build
        if build is not None and db in build.dbs:
            if db == build.dbs[0] and self._scanned(trees, build, db, tok, key):
                leaf = (((tok - origin_of(trees.range)) & TOKEN_MAX) << self.depth_cap
                        ) // trees.range.size()
                build.leaves[leaf] = build.leaves.get(leaf, 0) ^ delta
                build.entries += count
            if trees.status is Status.BUILDING:
                return  # first build: no tree of this db yet, the scan or builder has it
        tree = trees.trees.get(db)
        if tree is None:
            if count <= 0:
                return  # nothing to remove from an empty tree (a missed hook: see reset)
            tree = trees.trees[db] = RangeTree(trees.range, 0)
        tree.apply(tok, delta, count)
        if tree.entries <= 0:
            del trees.trees[db]
        elif count > 0:
            self._maybe_rebuild(trees, db, tree)
        elif count < 0 and tree.depth:
            wanted = min(depth_for(tree.entries, self.keys_per_leaf), self.depth_cap)
            if wanted + 2 < tree.depth:  # far too deep for what remains: shrink in place
                tree.truncate(wanted)
                self.stats["truncations"] += 1

    def _scanned(self, trees: RangeTrees, build: _Build, db: int, tok: int, key: bytes
                 ) -> bool:
        """Whether the build's scan of ``db`` has already passed (tok, key)."""
        spans = trees.range.spans()
        for i, (start, end) in enumerate(spans):
            if start <= tok and (end is None or tok < end):
                if i != build.span:
                    return i < build.span
                if build.cursor is None:
                    return False
                return keyspace.token_start(db, tok) + key <= build.cursor
        return False  # not reached: tok is in the range

    def _maybe_rebuild(self, trees: RangeTrees, db: int, tree: RangeTree) -> None:
        if tree.depth >= self.depth_cap or trees.build is not None:
            return
        if tree.entries > (self.keys_per_leaf << tree.depth) * GROWTH_REBUILD:
            trees.build = _Build([db])
            self._queue.append(trees.range)
            self.stats["rebuilds_growth"] += 1

    # Reporting ---------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """An estimate of the trees' memory (module docstring), builds in progress included."""
        total = 0
        for trees in self.ranges.values():
            total += sum(tree.memory_bytes() for tree in trees.trees.values())
            if trees.build is not None:
                total += len(trees.build.leaves) * (HASH_INT_BYTES + 100)
        return total

    def info(self) -> dict[str, int]:
        """Counters for INFO: ranges by status, trees, entries, memory estimate."""
        statuses = [t.status for t in self.ranges.values()]
        return {
            "ae_ranges": len(statuses),
            "ae_ranges_ready": statuses.count(Status.READY),
            "ae_ranges_building": statuses.count(Status.BUILDING),
            "ae_trees": sum(len(t.trees) for t in self.ranges.values()),
            "ae_tree_entries": sum(tree.entries for t in self.ranges.values()
                                   for tree in t.trees.values()),
            "ae_tree_memory_bytes": self.memory_bytes(),
            "ae_builds_pending": len(self._queue),
            **{f"ae_{name}": value for name, value in self.stats.items()},
        }
