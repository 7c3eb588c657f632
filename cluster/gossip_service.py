"""Gossip and failure detection bound to the transport and the clock (issue 5).

Theory of operation. ``cluster.gossip.Gossiper`` holds the endpoint states and decides what
to exchange; ``cluster.failure_detector.FailureDetector`` times the heartbeats gossip
brings. This class runs them: every ``interval_s`` it checks the detector (logging who went
down), asks the gossiper for this round's targets and sends each a ``GOSSIP_SYN``; the
``GOSSIP_ACK`` is applied and answered with a ``GOSSIP_ACK2``. As the receiving side,
``serve`` answers SYN with ACK and applies ACK2. Every applied change is reported to the
owner (``on_applied``), which rebuilds placement and persists the states.

Rules:
1. Heartbeats that gossip shows advancing (``Applied.alive``) feed the detector; a peer's
   transition up or down is logged once (the detector reports each once).
2. A seed address whose node is not known yet is reached through an alias link
   (``@host:port``, any node id accepted by the handshake), removed once the address is
   known as some node's.
3. ``live()`` is what the coordinator may send to: this node, and peers the detector holds
   available whose link is not in back-off (a dead link fails fast before phi rises).
4. Messages from peers are decoded by ``gossip``'s trust-boundary decoders; a malformed one
   is answered ``PROTOCOL`` (serve) or dropped and counted (replies), never applied.
5. Every round first drops the tombstones gossiped long enough (``Gossiper.expire``); the
   owner hears of it as of any change (``Applied.dropped``), and the detector forgets them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from cluster.clock import Clock, TimerHandle
from cluster.failure_detector import FailureDetector, Liveness, Transition
from cluster.gossip import Ack, Ack2, Applied, Gossiper, Syn, Target
from cluster.messages import (
    ErrorCode,
    GossipAck,
    GossipAck2,
    GossipAck2Ok,
    GossipSyn,
    Message,
)
from cluster.peer_link import LinkState
from cluster.peer_transport import PeerTransport
from cluster.transport import RemoteError

log = logging.getLogger(__name__)

_DOWN_LINKS = (LinkState.BACKOFF, LinkState.CLOSED)


class GossipService:
    def __init__(self, gossiper: Gossiper, detector: FailureDetector, transport: PeerTransport,
                 clock: Clock, interval_s: float, on_applied: Callable[[Applied], None]) -> None:
        self.gossiper = gossiper
        self.detector = detector
        self.transport = transport
        self.clock = clock
        self.interval_s = interval_s
        self.timeout_s = max(0.2, interval_s)
        self.on_applied = on_applied
        self.on_tick: Callable[[], None] | None = None
        self._timer: TimerHandle | None = None
        self._stopped = False
        self.stats = {"gossip_rounds": 0, "gossip_failures": 0, "gossip_bad_messages": 0}

    # Lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._tick()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # Liveness (Rule 3) ---------------------------------------------------------------

    def live(self) -> set[str]:
        me = self.gossiper.node_id
        state = self.transport.link_state
        states = self.gossiper.states
        reconnecting = self.transport.is_reconnecting
        # A node that left (LEFT, REMOVED) is never live, whatever its last heartbeats said.
        # A link retrying after back-off is still down: counted up while it tries, a dead
        # peer would flap up once per back-off and get requests (unhinted writes) meanwhile.
        return {me} | {peer for peer in self.detector.available()
                       if state(peer) not in _DOWN_LINKS and not reconnecting(peer)
                       and (known := states.get(peer)) is not None and not known.is_tombstone}

    def is_up(self, node_id: str) -> bool:
        return node_id == self.gossiper.node_id or node_id in self.live()

    # Rounds --------------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        if self._stopped:
            return
        self.stats["gossip_rounds"] += 1
        for transition in self.detector.check():
            _log_transition(transition)
        expired = self.gossiper.expire()  # Rule 5
        if expired.forgotten:
            self._applied(expired)
        for target in self.gossiper.tick(self.detector.available()):
            self._send_syn(target)
        if self.on_tick is not None:
            self.on_tick()
        self._timer = self.clock.call_later(self.interval_s, self._tick)

    def _peer_for(self, target: Target) -> str:
        if target.node_id is not None:
            return target.node_id
        host, port = target.address
        alias = f"@{host}:{port}"
        self.transport.add_peer(alias, host, port, verify_id=False)  # Rule 2
        return alias

    def _send_syn(self, target: Target) -> None:
        peer = self._peer_for(target)
        syn = GossipSyn(self.gossiper.make_syn().to_wire())
        future = self.transport.request(peer, syn, self.timeout_s)
        future.add_done_callback(partial(self._on_ack, peer, target))

    def _on_ack(self, peer: str, target: Target, future: asyncio.Future[Message]) -> None:
        if self._stopped:
            return
        if future.cancelled() or future.exception() is not None:
            self.stats["gossip_failures"] += 1
            return
        reply = future.result()
        try:
            assert isinstance(reply, GossipAck)
            ack = Ack.from_wire(reply.body)
        except (ValueError, AssertionError) as exc:
            self.stats["gossip_bad_messages"] += 1
            log.warning("peer %s sent a bad gossip ACK: %s", peer, exc)
            return
        ack2, applied = self.gossiper.on_ack(ack)
        answer = self.transport.request(peer, GossipAck2(ack2.to_wire()), self.timeout_s)
        answer.add_done_callback(_retrieve)
        self._applied(applied)
        if peer.startswith("@") and target.address in self.gossiper.view().addresses:
            self.transport.remove_peer(peer)  # Rule 2: the address is a known node now

    def contact(self, address: tuple[str, int]) -> None:
        """Start an exchange with ``address`` now (CLUSTER MEET), not only at random."""
        node_id = self.gossiper.view().addresses.get(address)
        self._send_syn(Target(node_id, address))

    # Serving -------------------------------------------------------------------------

    def serve(self, peer: str, message: GossipSyn | GossipAck2) -> Message:
        try:
            if isinstance(message, GossipSyn):
                return GossipAck(self.gossiper.on_syn(Syn.from_wire(message.body)).to_wire())
            applied = self.gossiper.on_ack2(Ack2.from_wire(message.body))
        except ValueError as exc:
            self.stats["gossip_bad_messages"] += 1
            raise RemoteError(ErrorCode.PROTOCOL, f"bad gossip message: {exc}") from None
        self._applied(applied)
        return GossipAck2Ok()

    def _applied(self, applied: Applied) -> None:
        for node_id in applied.alive:  # Rule 1
            known = self.gossiper.states.get(node_id)
            if known is not None and known.is_tombstone:
                continue  # a left node's last heartbeats must not make it available again
            transition = self.detector.heartbeat(node_id)
            if transition is not None:
                _log_transition(transition)
        for node_id in applied.changed:
            state = self.gossiper.states.get(node_id)
            if state is not None and state.is_tombstone:
                self.detector.remove(node_id)
        for node_id in applied.dropped:
            self.detector.remove(node_id)
        self.on_applied(applied)


def _log_transition(transition: Transition) -> None:
    word = "up" if transition.to is Liveness.UP else "down"
    log.warning("node %s is %s", transition.peer, word)


def _retrieve(future: asyncio.Future[Message]) -> None:
    if not future.cancelled():
        future.exception()  # an ACK2 that failed is retried by later rounds
