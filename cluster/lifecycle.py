"""A node's life cycle in the ring: joining, normal, leaving, left (issue 5).

Theory of operation. ``ClusterNode`` calls ``step()`` after every gossip round and after
every change of the view; ``step`` moves this node along:

- JOINING, membership complete, no other owner anywhere: this is one of the first nodes of
  a new cluster; nothing exists to stream, so it becomes NORMAL at once.
- JOINING, other owners exist: it streams every range it will replicate once it owns its
  tokens (its replica ranges in the future ring) from the range's current replicas
  (``range_streamer.RangeStreamer``), while writes already reach it as a pending replica
  (coordinator Rule 7); when every range is in, it becomes NORMAL. Progress is saved after
  each range, so a node that dies mid-stream resumes where it was.
- LEAVING (after ``decommission()``): it pushes every range it replicates to the nodes that
  replicate it once it is gone (``range_pusher.RangePusher``), while writes reach them as
  pending replicas; then it publishes LEFT, gossips a few more rounds so the others learn
  it, and calls ``on_left`` (the server stops).

Invariants:
1. A node is an owner (serves and is placed) only after every range it will own was
   streamed into it, or when no other owner exists.
2. A leaving node publishes LEFT only after every range it held was acknowledged by each of
   its new replicas; until then it still serves as an owner, so nothing is lost if the push
   is interrupted (a restart finds it LEAVING and pushes again).
3. Streams merge by vector clock (``ReplicaService.merge``), so a range streamed twice, or a
   write that arrives during the stream, is never lost or duplicated.
4. Data moves only after the JOINING or LEAVING status had time to reach every node
   (``_ring_delay_s``, as Cassandra's ring delay): until coordinators know, they do not
   send writes to the pending replicas, and a range streamed before such a write would miss
   it. A join streams each range from the replica that gives it up (stream_plan.pull_tasks),
   so no write ends up on fewer replicas than it was acknowledged on.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from cluster.endpoint_state import AppField, Status
from cluster.errors import ClusterError
from cluster.messages import Count, CountReply, Message
from cluster.range_pusher import RangePusher
from cluster.range_streamer import RangeStreamer
from cluster.ring import TokenRange
from cluster.stream_plan import pull_tasks, push_tasks
from cluster.stream_progress import (
    KIND_PULL,
    KIND_PUSH,
    PROGRESS_NAME_JOIN,
    PROGRESS_NAME_LEAVE,
    load_progress,
    save_progress,
)
from cluster.stream_runner import StreamOptions
from engine.fs import join

if TYPE_CHECKING:
    from cluster.cluster_node import ClusterNode

log = logging.getLogger(__name__)

LEFT_ROUNDS = 3  # gossip rounds a LEFT node keeps gossiping so every node learns it left
PROGRESS_SAVE_S = 1.0  # how often a stream's progress record is rewritten


class Lifecycle:
    def __init__(self, owner: ClusterNode) -> None:
        self.owner = owner
        self.on_left: Callable[[], None] | None = None
        self.stream: object | None = None  # the running streamer or pusher
        self.left_rounds = 0
        self.stopped = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._saved_at = float("-inf")
        self._since = owner.clock.monotonic()  # when the current status was published

    def describe(self) -> str:
        status = self.owner.gossiper.me.status
        info = self.info()
        done = info.get("stream_ranges_done", info.get("decommission_ranges_done", 0))
        total = info.get("stream_ranges_total", info.get("decommission_ranges_total", 0))
        if status is Status.JOINING:
            return (f"joining the cluster: streaming its ranges ({done} of {total} done)"
                    if total else "joining the cluster")
        if status is Status.LEAVING:
            return f"leaving the cluster: streaming its ranges away ({done} of {total} done)"
        if status is Status.LEFT:
            return "decommissioned: it left the cluster"
        return str(status.name.lower() if status is not None else "unknown")

    def stop(self) -> None:
        self.stopped = True
        for task in self._tasks:
            task.cancel()
        stream = self.stream
        if isinstance(stream, (RangeStreamer, RangePusher)):
            stream.stop()

    def step(self) -> None:
        if self.stopped:
            return
        owner = self.owner
        status = owner.gossiper.me.status
        settling = owner.clock.monotonic() - self._since < self._ring_delay_s()
        if status is Status.JOINING and owner.membership.complete and self.stream is None:
            others = [m for m in owner.gossiper.view().owners if m.node_id != owner.node_id]
            if not others:
                self._become(Status.NORMAL, "no other node owns any range: nothing to stream")
            elif not settling:  # invariant 4: every coordinator knows we are joining
                self._start_stream(self._join)
        elif status is Status.LEAVING and self.stream is None and not settling:
            self._start_stream(self._leave)
        elif status is Status.LEFT:
            self.left_rounds += 1
            if self.left_rounds == LEFT_ROUNDS and self.on_left is not None:
                self.on_left()

    def _ring_delay_s(self) -> float:
        """How long a new JOINING or LEAVING status is gossiped before data moves: the
        measured spread bound of gossip (ceil(log3 n) + 3 rounds, tests/sim/gossip_sim.py)
        for the cluster's size, so coordinators already write to the pending replicas."""
        nodes = max(2, len(self.owner.membership.members))
        rounds = math.ceil(math.log(nodes, 3)) + 3
        return rounds * self.owner.cluster_options.exchange_interval_s

    def rejoin(self) -> None:
        """Become JOINING again (CLUSTER MEET from an empty node that formed a cluster of
        its own): the ranges it gains in the merged ring are streamed before it serves."""
        self._since = self.owner.clock.monotonic()
        self._become(Status.JOINING, "meeting another cluster")

    def decommission(self) -> None:
        """Start leaving (CLUSTER DECOMMISSION). REQUIRES: this node is NORMAL."""
        self._since = self.owner.clock.monotonic()
        self._become(Status.LEAVING, "decommission requested")
        self.step()

    def _become(self, status: Status, why: str) -> None:
        log.warning("node %s is now %s (%s)", self.owner.node_id, status.name, why)
        self.owner.publish({AppField.STATUS: status})

    def _start_stream(self, plan: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Plan and start the join's or the decommission's stream (``plan``: _join or
        _leave) once the view shows the ring as it will be."""
        if self.owner.coordinator.future_placement is None:
            return  # the view does not show us joining or leaving yet
        self.stream = _Pending()
        task = asyncio.ensure_future(plan())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Join ------------------------------------------------------------------------------

    async def _join(self) -> None:
        owner = self.owner
        try:
            dbs = await self._dbs_with_data()
            old = owner.coordinator.placement
            new = owner.coordinator.future_placement
            if self.stopped or new is None:
                self.stream = None
                return
            tasks = pull_tasks(old, new, owner.node_id, dbs, owner.up_nodes()) if dbs else []
            saved = load_progress(owner.fs, owner.node.directory, PROGRESS_NAME_JOIN,
                                  KIND_PULL)
            done = saved.done if saved is not None else frozenset()
            log.warning("node %s joining: streaming %d ranges of %d dbs (%d done before)",
                        owner.node_id, len(tasks), len(dbs), len(done))
            streamer = RangeStreamer(
                tasks, owner.transport, owner.service, owner.clock,
                self._stream_options(done, PROGRESS_NAME_JOIN, self._joined),
                commit=owner.node.commit)
            self.stream = streamer
            streamer.start()
        except Exception as exc:  # retried at the next step
            log.warning("node %s: cannot start streaming yet: %r", owner.node_id, exc)
            self.stream = None

    def _joined(self) -> None:
        owner = self.owner
        stats = self.info()
        self._forget_progress(PROGRESS_NAME_JOIN)
        self.stream = None
        self._become(Status.NORMAL, f"joined: streamed {stats.get('stream_keys', 0)} keys "
                     f"in {stats.get('stream_ranges_done', 0)} ranges")
        owner.node.commit()

    # Leave -----------------------------------------------------------------------------

    async def _leave(self) -> None:
        owner = self.owner
        try:
            old = owner.coordinator.placement
            new = owner.coordinator.future_placement
            if self.stopped or new is None:
                self.stream = None
                return
            dbs = self._local_dbs()
            tasks = push_tasks(old, new, owner.node_id, dbs) if dbs else []
            saved = load_progress(owner.fs, owner.node.directory, PROGRESS_NAME_LEAVE,
                                  KIND_PUSH)
            done = saved.done if saved is not None else frozenset()
            log.warning("node %s leaving: streaming %d ranges of %d dbs away (%d done before)",
                        owner.node_id, len(tasks), len(dbs), len(done))
            pusher = RangePusher(
                tasks, owner.transport, owner.node.replica, owner.clock,
                self._stream_options(done, PROGRESS_NAME_LEAVE, self._pushed))
            self.stream = pusher
            pusher.start()
        except Exception as exc:
            log.warning("node %s: cannot start streaming away yet: %r", owner.node_id, exc)
            self.stream = None

    def _pushed(self) -> None:
        self._forget_progress(PROGRESS_NAME_LEAVE)
        self._become(Status.LEFT, "every range it held is on its new owners")

    # Plumbing --------------------------------------------------------------------------

    async def _dbs_with_data(self) -> tuple[int, ...]:
        """The dbs any owner stores something in (others cost a request per range)."""
        owner = self.owner
        timeout_s = owner.cluster_options.request_timeout_ms / 1000
        owners = [m.node_id for m in owner.gossiper.view().owners
                  if m.node_id != owner.node_id]
        databases = range(owner.node.options.databases)
        replies = await asyncio.gather(
            *(owner.transport.request(node_id, Count(db), timeout_s)
              for db in databases for node_id in owners), return_exceptions=True)
        dbs: list[int] = []
        for db in databases:
            answers = replies[db * len(owners):(db + 1) * len(owners)]
            if not any(isinstance(r, CountReply) for r in answers):
                raise ClusterError(f"no owner answered how much db {db} holds")
            # A db with tombstones only counts 0 keys and is not streamed (anti-entropy
            # carries those); tombstones of a db that has live keys move with them.
            if any(isinstance(r, CountReply) and r.keys for r in answers):
                dbs.append(db)
        return tuple(dbs)

    def _stream_options(self, done: frozenset[TokenRange], progress_name: str,
                        on_done: Callable[[], None]) -> StreamOptions:
        """A join's or a decommission's stream: the configured pace, the ranges an earlier
        run finished, progress saved to ``progress_name``."""
        options = self.owner.cluster_options
        return StreamOptions(
            rate_bytes_per_s=options.stream_rate_bytes_per_s,
            timeout_s=options.request_timeout_ms / 1000, done=done,
            on_range_done=lambda _range: self._save(progress_name), on_done=on_done,
            report=lambda message: log.warning("%s", message))

    def _local_dbs(self) -> tuple[int, ...]:
        """The dbs this node stores anything in (tombstones included)."""
        replica = self.owner.node.replica
        return tuple(db for db in range(replica.databases) if replica.holds_data(db))

    def _save(self, name: str) -> None:
        """Save the stream's progress, at most once per ``PROGRESS_SAVE_S``: each save is two
        fsyncs on the loop thread, and a join finishes thousands of small ranges. A crash
        loses at most that much progress, which only costs ranges streamed again."""
        stream = self.stream
        now = self.owner.clock.monotonic()
        if (isinstance(stream, (RangeStreamer, RangePusher))
                and now - self._saved_at >= PROGRESS_SAVE_S):
            self._saved_at = now
            save_progress(self.owner.fs, self.owner.node.directory, name,
                          stream.progress_state())

    def _forget_progress(self, name: str) -> None:
        try:
            self.owner.fs.remove(join(self.owner.node.directory, name))
        except FileNotFoundError:
            pass

    def info(self) -> dict[str, int | float | str]:
        """INFO fields of the stream running or last run (joining or leaving)."""
        stream = self.stream
        if isinstance(stream, RangeStreamer):
            return stream.info("stream_")
        if isinstance(stream, RangePusher):
            return stream.info("decommission_")
        return {}

    def in_flight(self) -> list[asyncio.Future[Message]]:
        stream = self.stream
        if isinstance(stream, (RangeStreamer, RangePusher)):
            return stream.in_flight()
        return []


class _Pending:
    """A stream being planned (counts are being asked): step() must not start another."""
