# mypy: disable-error-code="misc"
# (misc: mypy wants a self-type to be a supertype of the class; a mixin used only by
# ClusterNode takes ``self: ClusterNode`` so that its methods are checked against it.)
"""The operator's actions on a ``ClusterNode``: CLUSTER MEET, FORGET, DECOMMISSION and
REPAIR.

Rules (numbered across ClusterNode's modules; cluster_node.py says where each lives):
6. Life cycle (issue 5): a new node starts JOINING with fresh tokens; once its membership is
   complete it becomes NORMAL at once when no other node owns anything (the first nodes of a
   cluster), else after streaming the ranges it will own from their current replicas, while
   writes already reach it as a pending replica (coordinator Rule 7). A decommission makes
   it LEAVING, streams its ranges to their new owners, then LEFT.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cluster.endpoint_state import Status
from cluster.errors import ClusterError

if TYPE_CHECKING:
    from cluster.cluster_node import ClusterNode

log = logging.getLogger(__name__)


class OperatorActions:
    """CLUSTER MEET, FORGET, DECOMMISSION, REPAIR (Rule 6).

    A mixin of ``ClusterNode`` (its methods take ``self: ClusterNode``): it holds no state
    of its own.
    """

    def repair(self: ClusterNode, token: int | None = None) -> int:
        """CLUSTER REPAIR: queue every range this node replicates (or the one holding
        ``token``) for anti-entropy now; returns how many ranges were queued."""
        self._check_ready()
        if token is None:
            return self.repairer.request()
        rng = self.repairer.range_of(token)
        if rng is None:
            raise ClusterError(f"this node does not replicate token {token}")
        return self.repairer.request([rng])

    def meet(self: ClusterNode, host: str, port: int) -> None:
        """CLUSTER MEET: gossip with the node at host:port (a peer address) from now on, as
        with a seed: its cluster and ours become one view."""
        address = (host, port)
        gossiper = self.gossiper
        alone = self.membership.ring().node_ids() == [self.node_id]
        if alone and address != self.peer_address:
            # A node that owns the whole ring by itself and meets a cluster must join it
            # (stream the ranges it gains) rather than merge its own ring into theirs: the
            # keys it owns would otherwise have no data on it. One that holds data cannot.
            if self.node.replica.holds_data():
                raise ClusterError("this node holds data of its own cluster: meeting another "
                                   "cluster would hide it; meet from an empty node instead")
            # Until the met node's view arrives this node would see no other owner, take
            # "nothing to stream" for an answer and serve the ranges it gains empty.
            self.membership.expect(address)
            self.lifecycle.rejoin()
        gossiper.seeds = tuple(sorted({*gossiper.seeds, address} - {self.peer_address}))
        self.gossip.contact(address)


    def forget(self: ClusterNode, node_id: str) -> None:
        """CLUSTER FORGET: remove a dead node from the ring (its tokens go to the others; the
        remaining replicas hold its data). Raises ClusterError if it is this node, unknown,
        or still up (a live node would reassert itself)."""
        if node_id == self.node_id:
            raise ClusterError("a node cannot forget itself (use CLUSTER DECOMMISSION)")
        state = self.gossiper.states.get(node_id)
        if state is None or state.is_tombstone:
            raise ClusterError(f"unknown node {node_id}")
        # Up as CLUSTER NODES and INFO show it (phi and the link): a killed node's link
        # fails at once, while phi alone would keep it 'up' for up to half a minute.
        if node_id in self.up_nodes():
            raise ClusterError(f"node {node_id} is up: decommission it instead, or stop it "
                               "before forgetting it")
        self.gossiper.forget(node_id)
        self.detector.remove(node_id)
        dropped = self.hints.drop_target(node_id)
        log.warning("node %s forgotten (removed from the ring; %d hints for it dropped)",
                    node_id, dropped)
        self._view_changed()

    def decommission(self: ClusterNode) -> None:
        """CLUSTER DECOMMISSION: stream this node's ranges to their new owners, then leave
        the ring (``lifecycle.on_left`` is called once the others know)."""
        if self.status is not Status.NORMAL:
            raise ClusterError(f"this node is {self.lifecycle.describe()}, not a normal member")
        if len(self.membership.ring().node_ids()) < 2:
            raise ClusterError("the last node of a cluster cannot leave it")
        self.lifecycle.decommission()
