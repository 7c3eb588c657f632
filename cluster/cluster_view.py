# mypy: disable-error-code="misc"
# (misc: mypy wants a self-type to be a supertype of the class; a mixin used only by
# ClusterNode takes ``self: ClusterNode`` so that its methods are checked against it.)
"""Keeping a ``ClusterNode``'s view of the cluster current: after every gossip round (who is
down, hinted handoff, the life cycle, Merkle tree builds, repair passes, the alive file and
the LOAD field), and on every change of the view (the placement, the peers' links, the
saved gossip states).

Rules (numbered across ClusterNode's modules; cluster_node.py says where each lives):
5. Membership is gossip (``GossipService``): every ``exchange_interval_s`` a round with a
   random live peer (now and then a seed or a down peer); phi-accrual failure detection on
   the heartbeats decides who is up, and a lost link makes a peer down at once. Every change
   of the view rebuilds the placement (owners), the pending placement (joining, leaving)
   and is saved in ``cluster.state``. A departed node whose tombstone gossip drops
   (gossip-tombstone-seconds, ``cluster.departures``) is forgotten here too: its hints
   (never deliverable), its peer link and its down time; its departure record is saved.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cluster import alive as alive_file
from cluster import members as members_file
from cluster.endpoint_state import AppField, FieldValue
from cluster.gossip import Applied
from cluster.preflist import Placement

if TYPE_CHECKING:
    from cluster.cluster_node import ClusterNode

log = logging.getLogger(__name__)

LOAD_EVERY_S = 10.0  # how often this node's disk use is published in gossip (LOAD)


class ViewUpkeep:
    """Gossip ticks and view changes (Rule 5).

    A mixin of ``ClusterNode`` (its methods take ``self: ClusterNode``): it holds no state
    of its own.
    """

    def _on_tick(self: ClusterNode) -> None:
        """After each gossip round: note who is down, hand hints off, advance the life
        cycle, build Merkle trees for a bounded time, start a repair pass when one is due."""
        self._track_down()
        self._handoff.tick()
        self.lifecycle.step()
        now = self.clock.monotonic()
        if now - self._alive_written_s >= alive_file.WRITE_EVERY_S:
            self._alive_written_s = now
            self._write_alive()
        if now - self._load_published_s >= LOAD_EVERY_S:  # gossip's LOAD field
            self._load_published_s = now
            disk = self.node.stats().get("engine_disk_bytes", 0)
            if disk != self.gossiper.me.get(AppField.LOAD):
                self.gossiper.set_fields({AppField.LOAD: disk})
        trees = self.trees
        deadline = self.clock.monotonic() + self.cluster_options.tree_build_budget_s
        while trees.pending_builds() and self.clock.monotonic() < deadline:
            trees.build_step()
        interval = self.cluster_options.anti_entropy_interval_s
        if interval > 0 and self.ready and self.clock.monotonic() >= self._next_repair_s:
            self._next_repair_s = self.clock.monotonic() + interval
            self.repairer.request()

    def _write_alive(self: ClusterNode) -> None:
        try:
            alive_file.write(self._fs, self.node.directory, self.clock.wall_ms())
        except OSError as exc:
            log.warning("cannot save %s: %s", alive_file.ALIVE_NAME, exc)

    def _commit_quietly(self: ClusterNode) -> None:
        if not self._closed:
            try:
                self.node.commit()
            except OSError as exc:  # retried by the next commit; the repair merges stay
                log.warning("commit after repair failed: %s", exc)

    def _on_gossip(self: ClusterNode, applied: Applied) -> None:
        for node_id in applied.dropped:
            dropped = self.hints.drop_target(node_id)
            self.transport.remove_peer(node_id)
            self._down_since.pop(node_id, None)
            log.warning("departed node %s forgotten (its tombstone expired; %d hints for it "
                        "dropped)", node_id, dropped)
        if applied.new or applied.restarted or applied.ring_changed or applied.forgotten:
            self._view_changed()
        elif applied.self_contested:
            self._persist()
        for node_id in applied.restarted:
            self.transport.retry_now(node_id)  # a restarted peer is usable at once

    def publish(self: ClusterNode, fields: Mapping[AppField, FieldValue]) -> None:
        """Change this node's own gossip state (status, tokens ...) and apply it here."""
        self.gossiper.set_fields(fields)
        self._view_changed()

    def _view_changed(self: ClusterNode) -> None:
        was_ready = self.ready
        membership = self.membership
        membership.update(self.gossiper.states.values(), self.gossiper.view(),
                          self.gossiper.departures.addresses())
        for member in membership.others():
            self.transport.add_peer(member.node_id, member.peer_host, member.peer_port)
        replication = self.cluster_options.replication
        self.coordinator.placement = placement = Placement(membership.ring(), replication)
        self.trees.set_ranges(placement.replica_ranges(self.node.node_id))
        future = membership.future_ring()
        self.coordinator.future_placement = (None if future is None
                                             else Placement(future, replication))
        self._persist()
        if self.ready and not was_ready:
            log.warning("cluster ready: %d nodes, this node %s", len(membership.members),
                        self.status.name)

    def _track_down(self: ClusterNode) -> None:
        """Note when each peer went down (max-hint-window)."""
        up = self.up_nodes()
        now_ms = self.clock.wall_ms()
        for member in self.membership.others():
            if member.node_id in up:
                self._down_since.pop(member.node_id, None)
            else:
                self._down_since.setdefault(member.node_id, now_ms)

    def _should_hint(self: ClusterNode, node_id: str) -> bool:
        """Keep hints for a down node only within max-hint-window (bounded hints)."""
        now_ms = self.clock.wall_ms()
        since = self._down_since.get(node_id, now_ms)  # not noted yet: it just went down
        if now_ms - since < self.cluster_options.max_hint_window_ms:
            return True
        self.stats_counters["hints_not_kept_window"] += 1
        return False

    def _commit_handoff(self: ClusterNode) -> None:
        """Make a handoff batch's hint removals durable (handoff.py injects this)."""
        if not self._closed:
            self.node.commit()

    def is_reachable(self: ClusterNode, node_id: str) -> bool:
        """Up, with a connected link: hints may be handed off to it."""
        return self.transport.is_connected(node_id) and node_id in self.up_nodes()

    def _persist(self: ClusterNode) -> None:
        try:
            members_file.write(self._fs, self.node.directory, self.gossiper.states.values(),
                               self.gossiper.departures.records.values())
        except OSError as exc:
            log.warning("cannot save %s: %s", members_file.STATE_NAME, exc)
