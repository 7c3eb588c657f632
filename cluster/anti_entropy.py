"""Merkle-tree anti-entropy between two replicas of one token range, sans-IO (issue 6).

Theory of operation. Each replica keeps a ``TreeSet`` (cluster/tree_set.py): per (db,
range), an XOR Merkle tree kept current by the write hooks. A ``RepairSession`` repairs one
range between this node and one peer; it is driven like ``merkle.Descent``: while
``next_request()`` returns a request, send it to the peer, ``feed`` the reply, and send the
``take_pushes()`` as plain WRITEs (the peer merges them: a write is a merge). The session
answers its own questions from the local ``AntiEntropyServer`` (the very code that serves
the peer), so the exchange is the same between two in-process replicas and over the wire.

Rounds of one range:
1. SUMMARY: the root (depth, entries) of each of the peer's non-empty (db, range) trees. An
   unchanged pair stops here: one root hash per non-empty (db, range).
2. For each db whose roots differ, descend level by level (HASHES) through the nodes that
   differ, down to ``min(local depth, peer depth)``: level hashes do not depend on depth
   (tree_set module docstring), so trees built at different sizes still compare, only more
   coarsely. A peer with no keys in the (db, range) is not descended into: every local key
   is pushed. A local side with no keys lists the peer's whole range at level 0.
3. KEYS: the (key, entry hash) of both sides under the differing nodes (paged).
4. Keys the peer has and this node lacks or holds differently: FETCH their sibling sets,
   merge each into the local replica (``ReplicaService.merge``: vector clocks decide), and
   push the merged set back when it differs from the peer's. Keys only this node has: push.

Invariants:
1. A repair only ever merges (locally via ``ReplicaService.merge``, remotely via WRITE, which
   merges): it never overwrites, so it cannot resurrect a key whose tombstone dominates the
   value, nor lose a version either side acknowledged (``version.merge`` invariant 1).
2. Every reply is validated whole (type, status, lengths, shapes, that listed keys belong to
   the nodes asked for, that sibling sets decode) before anything of it is used; a bad reply
   raises ``AntiEntropyError``, ends the session (``Outcome.FAILED``) and changes nothing.
3. Work is proportional to the differences: for d differing keys, O(d * depth) hashes, the
   keys of at most d leaves (about ``KEYS_PER_LEAF`` each) and d sibling sets cross, plus one
   SUMMARY per range (measured: tests/test_cluster_anti_entropy.py, bench/repair_bench.py).
4. The serving side is read-only except for ``TreeSet`` bookkeeping: a KEYS listing that
   covers a whole node of a READY tree resets the node to what the scan found, which heals a
   tree that missed a change (compaction purging a tombstone) and is a no-op otherwise.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from cluster import keys as keyspace
from cluster.anti_entropy_messages import (
    FETCH_KEYS_MAX,
    INDICES_MAX,
    KEYS_PER_REPLY_MAX,
    LEVEL_MAX,
    AntiEntropyError,
    Fetch,
    FetchReply,
    Hashes,
    HashesReply,
    Keys,
    KeysReply,
    Reply,
    Request,
    Status,
    Summary,
    SummaryReply,
    wire_bytes,
)
from cluster.errors import CorruptionError
from cluster.merkle import HASH_BYTES, ZERO
from cluster.replica_service import ReplicaService
from cluster.ring import TokenRange
from cluster.sibling_codec import decode, encode
from cluster.tree_set import RangeTree, TreeSet, node_of, node_spans, stored_hash
from cluster.tree_set import Status as TreeStatus
from cluster.version import Siblings

# (depth, entries, root) of one (db, range) tree
TreeInfo = tuple[int, int, bytes]
_EMPTY: TreeInfo = (0, 0, ZERO)


class Push(NamedTuple):
    """A sibling set to send to the peer as a plain WRITE (it merges it)."""

    db: int
    key: bytes
    siblings: bytes  # sibling_codec bytes


# -- The serving side ---------------------------------------------------------------------


class AntiEntropyServer:
    """Answers anti-entropy requests from ``trees`` and the replica behind ``service``."""

    def __init__(self, trees: TreeSet, service: ReplicaService, *,
                 keys_per_reply_max: int = KEYS_PER_REPLY_MAX) -> None:
        assert 1 <= keys_per_reply_max <= KEYS_PER_REPLY_MAX, keys_per_reply_max
        self.keys_per_reply_max = keys_per_reply_max
        self.trees = trees
        self.service = service
        self._engine = service.replica.engine
        self.databases = service.replica.databases
        self.stats = {"ae_requests_served": 0, "ae_not_ready_served": 0}

    def serve(self, request: Request) -> Reply:
        """One request from a peer. Raises AntiEntropyError if it is malformed (inv. 1)."""
        self.stats["ae_requests_served"] += 1
        if isinstance(request, Summary):
            return self.summary(_range(request.left, request.right))
        if isinstance(request, Hashes):
            rng = _range(request.left, request.right)
            self._check(request.db, request.level, request.indices)
            return self.hashes(rng, request.db, request.level, request.indices)
        if isinstance(request, Keys):
            rng = _range(request.left, request.right)
            self._check(request.db, request.level, request.indices)
            if request.after is not None and len(request.after) < keyspace.TOKEN_BYTES:
                raise AntiEntropyError("keys: 'after' is shorter than a token")
            status = self._ready(rng)
            entries, stopped = self.list_keys(rng, request.db, request.level,
                                              request.indices, request.after,
                                              self.keys_per_reply_max)
            if entries is None:
                return KeysReply(status, [], None)
            return KeysReply(Status.OK, [[k, h] for k, h in entries], stopped)
        if isinstance(request, Fetch):
            if type(request.db) is not int or not 0 <= request.db < self.databases:
                raise AntiEntropyError(f"fetch: db {request.db!r} is out of range")
            if len(request.keys) > FETCH_KEYS_MAX:
                raise AntiEntropyError(f"fetch: {len(request.keys)} keys, at most "
                                       f"{FETCH_KEYS_MAX}")
            if not all(type(k) is bytes for k in request.keys):
                raise AntiEntropyError("fetch: a key is not bytes")
            return FetchReply([self.raw(request.db, k) for k in request.keys])
        raise AntiEntropyError(f"{type(request).__name__} is not an anti-entropy request")

    def _check(self, db: int, level: int, indices: Sequence[int]) -> None:
        if type(db) is not int or not 0 <= db < self.databases:
            raise AntiEntropyError(f"db {db!r} is out of range (this node has "
                                   f"{self.databases})")
        if type(level) is not int or not 0 <= level <= LEVEL_MAX:
            raise AntiEntropyError(f"level {level!r} is not 0..{LEVEL_MAX}")
        if len(indices) > INDICES_MAX:
            raise AntiEntropyError(f"{len(indices)} node indices, at most {INDICES_MAX}")
        previous = -1
        for index in indices:
            if type(index) is not int or not previous < index < 1 << level:
                raise AntiEntropyError(f"node index {index!r} is out of order or not in "
                                       f"0..{(1 << level) - 1}")
            previous = index

    def _not_ready(self) -> Status:
        self.stats["ae_not_ready_served"] += 1
        return Status.NOT_READY

    def _ready(self, rng: TokenRange) -> Status:
        if rng not in self.trees.ranges:
            return Status.UNKNOWN_RANGE
        if self.trees.require(rng) is not TreeStatus.READY:
            return self._not_ready()
        return Status.OK

    def summary(self, rng: TokenRange) -> SummaryReply:
        status = self._ready(rng)
        if status is not Status.OK:
            return SummaryReply(status, [])
        return SummaryReply(Status.OK, [[db, tree.depth, tree.entries, tree.root]
                                        for db, tree in sorted(self.trees.ranges[rng]
                                                               .trees.items())])

    def local_summary(self, rng: TokenRange) -> dict[int, TreeInfo] | Status:
        """``summary`` as a dict for the session (or the status if not OK)."""
        reply = self.summary(rng)
        if reply.status != Status.OK:
            return Status(reply.status)
        return {db: (depth, entries, root) for db, depth, entries, root in reply.trees}

    def hashes(self, rng: TokenRange, db: int, level: int, indices: Sequence[int]
               ) -> HashesReply:
        status = self._ready(rng)
        if status is not Status.OK:
            return HashesReply(status, b"")
        tree = self.trees.tree(rng, db)
        if tree is None:
            return HashesReply(Status.OK, ZERO * len(indices))
        if level > tree.depth:
            return HashesReply(self._not_ready(), b"")  # rebuilt shallower meanwhile
        return HashesReply(Status.OK, b"".join(tree.hashes(level, indices)))

    def list_keys(self, rng: TokenRange, db: int, level: int, indices: Sequence[int],
                  after: bytes | None, limit: int = KEYS_PER_REPLY_MAX
                  ) -> tuple[list[tuple[bytes, bytes]] | None, int | None]:
        """(key, entry hash) under the nodes, at most ``limit`` (then also the node it stopped
        in); (None, None) if the range is not replicated or not ready. Resets each node it
        lists whole (invariant 4)."""
        if self._ready(rng) is not Status.OK:
            return None, None
        tree = self.trees.tree(rng, db)
        entries: list[tuple[bytes, bytes]] = []
        prefix = keyspace.PREFIX_BYTES
        for position, index in enumerate(indices):
            resume = after if position == 0 else None
            whole = resume is None and tree is not None and level <= tree.depth
            leaves: dict[int, int] = {}
            count = 0
            for ekey, raw in self._node(rng, db, level, index, resume):
                value = stored_hash(ekey[prefix:], raw)
                entries.append((ekey[prefix:], value.to_bytes(HASH_BYTES, "big")))
                if whole:
                    assert tree is not None
                    leaf = tree.leaf_of(keyspace.token_of(ekey))
                    leaves[leaf] = leaves.get(leaf, 0) ^ value
                    count += 1
                if len(entries) >= limit:
                    return entries, index
            if whole:
                assert tree is not None
                if tree.reset(level, index, leaves, count):
                    self.trees.stats["tree_corrections"] += 1
                    if tree.entries <= 0 and tree.root == ZERO:
                        self.trees.ranges[rng].trees.pop(db, None)
        return entries, None

    def _node(self, rng: TokenRange, db: int, level: int, index: int, after: bytes | None
              ) -> Iterator[tuple[bytes, bytes]]:
        """The engine entries of a node's span(s) of ``db``, after ``after`` if given."""
        spans = node_spans(rng, level, index)
        first = 0
        resume: bytes | None = None
        if after is not None:  # spans are in ring order from the range's origin, not token
            tok = int.from_bytes(after[:keyspace.TOKEN_BYTES], "big")  # order: find its span
            first = next((i for i, (start, end) in enumerate(spans)
                          if start <= tok and (end is None or tok < end)), len(spans))
            resume = keyspace.db_start(db) + after + b"\x00"
        for i in range(first, len(spans)):
            lo, hi = keyspace.token_range(db, *spans[i])
            if i == first and resume is not None:
                lo = max(lo, resume)
            yield from self._engine.scan(lo, hi)

    def local_keys(self, rng: TokenRange, db: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, stored bytes) of every key of (db, range)."""
        prefix = keyspace.PREFIX_BYTES
        for ekey, raw in self._node(rng, db, 0, 0, None):
            yield ekey[prefix:], raw

    def raw(self, db: int, key: bytes) -> bytes | None:
        return self._engine.get(keyspace.engine_key(db, key))


def _range(left: int, right: int) -> TokenRange:
    if type(left) is not int or type(right) is not int or not (
            0 <= left <= keyspace.TOKEN_MAX and 0 <= right <= keyspace.TOKEN_MAX):
        raise AntiEntropyError(f"range ({left!r}, {right!r}] is not two ring tokens")
    return TokenRange(left, right)


# -- The repairing side -------------------------------------------------------------------


class Outcome(enum.Enum):
    RUNNING = "running"
    DONE = "done"  # every db of the range compared and repaired
    PARTIAL = "partial"  # some dbs were skipped (a tree changed depth mid-session): retry
    LOCAL_NOT_READY = "local-not-ready"  # this node's trees are being built: retry later
    PEER_NOT_READY = "peer-not-ready"  # the peer's trees are being built: retry later
    UNKNOWN_RANGE = "unknown-range"  # the peer does not replicate this range (rings differ)
    FAILED = "failed"  # the peer sent a bad reply (AntiEntropyError), or the driver aborted


@dataclass(slots=True)
class RepairStats:
    """What a session (or, summed with ``add``, a node) did; INFO names are ``ae_`` + field."""

    ranges_done: int = 0
    ranges_not_ready: int = 0
    ranges_failed: int = 0
    dbs_skipped: int = 0
    keys_compared: int = 0  # keys the exchange vouched for (max of both sides per db)
    keys_listed: int = 0  # (key, hash) pairs compared one by one, both sides
    keys_pulled: int = 0  # sibling sets fetched from the peer and merged here
    keys_pushed: int = 0  # sibling sets sent to the peer
    keys_repaired: int = 0  # keys that changed on either side
    hashes_received: int = 0  # tree node hashes (roots included) from the peer
    key_hashes_received: int = 0
    requests: int = 0
    bytes_sent: int = 0  # anti-entropy request frames
    bytes_received: int = 0  # anti-entropy reply frames
    push_bytes: int = 0  # sibling-set bytes handed to the driver as pushes

    def add(self, other: RepairStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_info(self) -> dict[str, int]:
        return {f"ae_{f.name}": getattr(self, f.name) for f in fields(self)}


_Run = Generator[Request, Reply, None]


class RepairSession:
    """Repair ``rng`` between ``local`` and one peer; see the module docstring.

    Drive: ``while (req := s.next_request()) is not None: s.feed(send(req))``, sending
    ``s.take_pushes()`` as WRITEs after every feed (and once more at the end). ``outcome`` and
    ``stats`` tell what happened. ``feed`` raises AntiEntropyError on a bad reply (inv. 2).
    """

    def __init__(self, local: AntiEntropyServer, rng: TokenRange, *,
                 fetch_keys_max: int = FETCH_KEYS_MAX, indices_max: int = INDICES_MAX) -> None:
        assert 1 <= fetch_keys_max <= FETCH_KEYS_MAX and 1 <= indices_max <= INDICES_MAX
        self.local = local
        self.range = rng
        self.outcome = Outcome.RUNNING
        self.stats = RepairStats()
        self._fetch_max = fetch_keys_max
        self._indices_max = indices_max
        self._pushes: list[Push] = []
        self._run: _Run = self._steps()
        self._request: Request | None = None
        self._advance(None)

    def next_request(self) -> Request | None:
        """The request to send now; None once the session is over."""
        return self._request

    def feed(self, reply: Reply) -> None:
        """The peer's reply to ``next_request()``."""
        assert self._request is not None, "nothing was asked"
        self.stats.bytes_received += wire_bytes(reply)
        try:
            self._advance(reply)
        except Exception:  # a bad reply, or the local engine failing a merge: either way
            self._end(Outcome.FAILED)  # the session is over, and says so
            raise

    def abort(self) -> None:
        """The request could not be delivered (peer down, timeout, ERROR): end the session."""
        if self.outcome is Outcome.RUNNING:
            self._run.close()
            self._end(Outcome.FAILED)

    def take_pushes(self) -> list[Push]:
        pushes, self._pushes = self._pushes, []
        return pushes

    def _advance(self, reply: Reply | None) -> None:
        try:
            request = self._run.send(reply) if reply is not None else next(self._run)
        except StopIteration:
            self._request = None
            if self.outcome is Outcome.RUNNING:
                self._end(Outcome.DONE)
            return
        except BaseException:
            self._request = None
            raise
        self.stats.requests += 1
        self.stats.bytes_sent += wire_bytes(request)
        self._request = request

    def _end(self, outcome: Outcome) -> None:
        self._request = None
        self.outcome = outcome
        if outcome in (Outcome.DONE, Outcome.PARTIAL):
            self.stats.ranges_done += 1
        elif outcome is Outcome.FAILED:
            self.stats.ranges_failed += 1
        else:
            self.stats.ranges_not_ready += 1

    # The steps (a generator: each ``yield`` is one request, resumed with its reply) ---------

    def _steps(self) -> _Run:
        rng = self.range
        ours = self.local.local_summary(rng)
        if not isinstance(ours, dict):
            self._end(Outcome.LOCAL_NOT_READY)
            return
        reply = yield Summary(rng.left, rng.right)
        theirs = self._check_summary(reply)
        if isinstance(theirs, Outcome):
            self._end(theirs)
            return
        self.stats.hashes_received += len(theirs)
        skipped = 0
        for db in sorted(set(ours) | set(theirs)):
            local, remote = ours.get(db, _EMPTY), theirs.get(db, _EMPTY)
            self.stats.keys_compared += max(local[1], remote[1])
            if local[2] == remote[2]:
                continue
            done = yield from self._repair_db(db, local, remote)
            skipped += not done
        self.stats.dbs_skipped += skipped
        self._end(Outcome.PARTIAL if skipped else Outcome.DONE)

    def _repair_db(self, db: int, local: TreeInfo, remote: TreeInfo
                   ) -> Generator[Request, Reply, bool]:
        rng = self.range
        if remote[1] == 0:  # the peer holds nothing here: push everything, list nothing
            for key, raw in list(self.local.local_keys(rng, db)):
                self._push(db, key, raw)
            return True
        bottom = 0 if local[1] == 0 else min(local[0], remote[0])
        nodes = [0]
        for level in range(1, bottom + 1):
            children = [c for i in nodes for c in (2 * i, 2 * i + 1)]
            hashes: list[bytes] = []
            for at in range(0, len(children), self._indices_max):
                chunk = children[at:at + self._indices_max]
                reply = yield Hashes(rng.left, rng.right, db, level, chunk)
                got = self._check_hashes(reply, len(chunk))
                if got is None:
                    return False
                hashes += got
            tree = self.local.trees.tree(rng, db)
            if tree is None or tree.depth < level:
                return False  # ours changed shape meanwhile: compare again next time
            mine = tree.hashes(level, children)
            nodes = [c for c, a, b in zip(children, mine, hashes, strict=True) if a != b]
            if not nodes:
                return True  # the difference was written away meanwhile
        # List both sides under the differing nodes.
        theirs: dict[bytes, bytes] = {}
        remaining = nodes
        after: bytes | None = None
        while remaining:
            chunk = remaining[:self._indices_max]
            reply = yield Keys(rng.left, rng.right, db, bottom, chunk, after)
            listed = self._check_keys(reply, bottom, chunk)
            if listed is None:
                return False
            entries, stopped = listed
            theirs.update(entries)
            if stopped is None:
                remaining = remaining[len(chunk):]
                after = None
            else:
                remaining = remaining[remaining.index(stopped):]
                last = entries[-1][0]
                after = keyspace.token_bytes(last) + last
        mine_listed, _ = self.local.list_keys(rng, db, bottom, nodes, None,
                                              limit=1 << 62)
        if mine_listed is None:
            return False
        ours = dict(mine_listed)
        self.stats.keys_listed += len(ours) + len(theirs)
        pulls = [k for k, h in theirs.items() if ours.get(k) != h]
        for only_ours in sorted(ours.keys() - theirs.keys()):
            stored = self.local.raw(db, only_ours)
            if stored is not None:
                self._push(db, only_ours, stored)
        for at in range(0, len(pulls), self._fetch_max):
            batch = pulls[at:at + self._fetch_max]
            reply = yield Fetch(db, batch)
            for name, incoming in zip(batch, self._check_fetch(reply, len(batch)), strict=True):
                self._merge(db, name, incoming)
        return True

    def _merge(self, db: int, key: bytes, incoming: Siblings | None) -> None:
        service = self.local.service
        if incoming is None:  # gone on the peer since it listed it: push ours, if any
            raw = self.local.raw(db, key)
            if raw is not None:
                self._push(db, key, raw)
            return
        self.stats.keys_pulled += 1
        old = service.read(db, key)
        new = service.merge(db, key, incoming)
        if new != old:
            self.stats.keys_repaired += 1
        if new != incoming:
            self._push(db, key, encode(new), repaired=new == old)

    def _push(self, db: int, key: bytes, raw: bytes, *, repaired: bool = True) -> None:
        self._pushes.append(Push(db, key, raw))
        self.stats.keys_pushed += 1
        self.stats.push_bytes += len(raw)
        if repaired:  # a key already counted by its pull is not counted twice
            self.stats.keys_repaired += 1

    # Reply checks (invariant 2) ---------------------------------------------------------

    def _expect(self, reply: Reply, cls: type[Any]) -> Any:
        if not isinstance(reply, cls):
            raise AntiEntropyError(f"expected {cls.__name__}, got {type(reply).__name__}")
        status = getattr(reply, "status", Status.OK)
        if status not in (Status.OK, Status.NOT_READY, Status.UNKNOWN_RANGE):
            raise AntiEntropyError(f"{cls.__name__}: unknown status {status!r}")
        return reply

    def _check_summary(self, reply: Reply) -> dict[int, TreeInfo] | Outcome:
        summary: SummaryReply = self._expect(reply, SummaryReply)
        if summary.status == Status.NOT_READY:
            return Outcome.PEER_NOT_READY
        if summary.status == Status.UNKNOWN_RANGE:
            return Outcome.UNKNOWN_RANGE
        out: dict[int, TreeInfo] = {}
        for item in summary.trees:
            if not (isinstance(item, list | tuple) and len(item) == 4):
                raise AntiEntropyError(f"summary: a tree is not [db, depth, entries, root]: "
                                       f"{item!r:.80}")
            db, depth, entries, root = item
            if type(db) is not int or not 0 <= db < self.local.databases or db in out:
                raise AntiEntropyError(f"summary: db {db!r} is out of range or repeated")
            if type(depth) is not int or not 0 <= depth <= LEVEL_MAX:
                raise AntiEntropyError(f"summary: depth {depth!r} is not 0..{LEVEL_MAX}")
            if type(entries) is not int or entries < 0:
                raise AntiEntropyError(f"summary: entries {entries!r} is not a count")
            if type(root) is not bytes or len(root) != HASH_BYTES:
                raise AntiEntropyError(f"summary: root is not {HASH_BYTES} bytes")
            out[db] = (depth, entries, root)
        return out

    def _check_hashes(self, reply: Reply, count: int) -> list[bytes] | None:
        hashes: HashesReply = self._expect(reply, HashesReply)
        if hashes.status != Status.OK:
            return None
        if type(hashes.hashes) is not bytes or len(hashes.hashes) != HASH_BYTES * count:
            raise AntiEntropyError(f"hashes: {len(hashes.hashes)} bytes for {count} nodes of "
                                   f"{HASH_BYTES}")
        self.stats.hashes_received += count
        data = hashes.hashes
        return [data[i:i + HASH_BYTES] for i in range(0, len(data), HASH_BYTES)]

    def _check_keys(self, reply: Reply, level: int, nodes: Sequence[int]
                    ) -> tuple[list[tuple[bytes, bytes]], int | None] | None:
        listing: KeysReply = self._expect(reply, KeysReply)
        if listing.status != Status.OK:
            return None
        if len(listing.entries) > KEYS_PER_REPLY_MAX:
            raise AntiEntropyError(f"keys: {len(listing.entries)} entries, at most "
                                   f"{KEYS_PER_REPLY_MAX}")
        asked = set(nodes)
        out: list[tuple[bytes, bytes]] = []
        for item in listing.entries:
            if not (isinstance(item, list | tuple) and len(item) == 2
                    and type(item[0]) is bytes and type(item[1]) is bytes
                    and len(item[1]) == HASH_BYTES):
                raise AntiEntropyError(f"keys: an entry is not [key, {HASH_BYTES}-byte hash]")
            key = item[0]
            tok = keyspace.token(key)
            if not self.range.contains(tok) or node_of(self.range, level, tok) not in asked:
                raise AntiEntropyError(f"keys: key {key[:40]!r} is not under the nodes asked")
            out.append((key, item[1]))
        stopped = listing.stopped_at
        if stopped is not None and (stopped not in asked or not out):
            raise AntiEntropyError(f"keys: stopped at node {stopped!r}, which was not asked "
                                   "or after no entry")
        self.stats.key_hashes_received += len(out)
        return out, stopped

    def _check_fetch(self, reply: Reply, count: int) -> list[Siblings | None]:
        fetched: FetchReply = self._expect(reply, FetchReply)
        if len(fetched.siblings) != count:
            raise AntiEntropyError(f"fetch: {len(fetched.siblings)} sibling sets for "
                                   f"{count} keys")
        out: list[Siblings | None] = []
        for raw in fetched.siblings:
            if raw is None:
                out.append(None)
                continue
            if type(raw) is not bytes:
                raise AntiEntropyError("fetch: a sibling set is neither bytes nor nil")
            try:
                out.append(decode(raw))
            except CorruptionError as exc:
                raise AntiEntropyError(f"fetch: {exc}") from None
        return out


def repair_locally(session: RepairSession, peer: AntiEntropyServer) -> list[Push]:
    """Run ``session`` against an in-process ``peer`` and apply the pushes to it, as the
    node's driver does over the wire (tests, benchmarks). Returns the pushes applied."""
    applied: list[Push] = []
    while (request := session.next_request()) is not None:
        session.feed(peer.serve(request))
        applied += _deliver(session.take_pushes(), peer)
    applied += _deliver(session.take_pushes(), peer)
    return applied


def _deliver(pushes: list[Push], peer: AntiEntropyServer) -> list[Push]:
    for push in pushes:
        peer.service.merge(push.db, push.key, decode(push.siblings))
    return pushes


def trees_of(trees: TreeSet, rng: TokenRange) -> dict[int, RangeTree]:
    """The READY trees of a range by db (tests, INFO)."""
    return dict(trees.ranges[rng].trees)
