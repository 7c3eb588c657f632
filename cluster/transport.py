"""Requests to peers: the ``Transport`` interface the cluster logic uses, its errors, and the
configuration of its TCP binding.

Theory of operation. ``request()`` is a plain method that returns a future: it never awaits,
so a caller that is not running inside a Task (the frontend drives node coroutines with
``send(None)``) can use it, and a coordinator fans out N requests with N calls. The TCP
binding is ``PeerTransport`` (peer_transport.py), over ``PeerLink`` (peer_link.py: the
outgoing side), ``PeerAcceptor`` (peer_acceptor.py: the listener side) and
``PeerConnection`` (peer_connection.py: one socket); the simulator's binding is
``SimTransport`` (tests/sim/sim_network.py).

The binding's rules are numbered across its modules: Rule 1 is here, Rules 2 and 3 in
peer_link.py, Rule 4 in peer_acceptor.py, Rules 5 and 6 in peer_connection.py.

Rules:
1. Every future ``request()`` returns completes exactly once: with the reply message; with
   ``RemoteError`` (the peer answered ERROR); ``PeerTimeout`` (no reply before the deadline);
   ``PeerUnavailable`` (no authenticated link: connect or handshake failed, the link was
   lost, the peer is in reconnect back-off, or the transport closed); ``PeerOverloaded``
   (more than ``queue_max`` requests waiting); or ``FrameTooLarge``.
   The same holds for ``call()``'s callback, which never runs inside ``call()`` itself;
   the TCP binding runs it straight from the reply's frame (no future, no extra loop turn)
   and every error in the next loop turn, as a future's callback would run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cluster.errors import ClusterError
from cluster.messages import ErrorCode, Message
from cluster.wire import FRAME_BYTES_MAX_DEFAULT

Handler = Callable[[str, Message], "Message | DeferredReply | Awaitable[Message]"]
"""Serves one request: (peer node id, request) -> reply, a ``DeferredReply`` of it, or an
awaitable of it. Raising ``RemoteError`` answers ERROR with its code; any other exception
answers ERROR INTERNAL."""


class DeferredReply:
    """A reply a handler gives later: ``settle(outcome)`` runs every callback ``then()``
    registered, at once, in the settler's own loop turn.

    Why not a future: a future's done-callbacks run a loop turn after ``set_result``, and the
    reply frame then waits one more turn for its connection's batched write; before each of
    those turns the loop reads and serves whatever else arrived, so under load each hop
    costs a batch of other requests' work (docs/benchmarks.md, "Cluster": the replicas' acks
    of a commit round). One ``DeferredReply`` may answer many requests (every WRITE of a
    commit round answers the same WriteAck)."""

    __slots__ = ("_callbacks", "outcome")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Message | BaseException], None]] = []
        self.outcome: Message | BaseException | None = None

    def then(self, callback: Callable[[Message | BaseException], None]) -> None:
        """Run ``callback(outcome)`` when settled (at once if it already is)."""
        if self.outcome is None:
            self._callbacks.append(callback)
        else:
            callback(self.outcome)

    def settle(self, outcome: Message | BaseException) -> None:
        """REQUIRES: not settled yet. Runs the callbacks in the order they were registered."""
        assert self.outcome is None, "settled twice"
        self.outcome = outcome
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(outcome)


class PeerUnavailable(ClusterError):
    """No authenticated connection to the peer (see Rule 1); the request was not answered."""


class PeerTimeout(ClusterError):
    """The peer did not answer before the request's deadline; it may still have applied it."""


class PeerOverloaded(ClusterError):
    """Too many requests are already waiting for this peer; this one was not sent."""


class RemoteError(ClusterError):
    """The peer answered ERROR (or, raised by a handler, the ERROR to answer)."""

    def __init__(self, code: ErrorCode | int, text: str) -> None:
        super().__init__(f"peer error {code}: {text}")
        self.code = code
        self.text = text


class Transport(Protocol):
    """What the cluster logic uses to reach peers; bound to TCP here, to an in-memory network
    in simulation. Implementations take a ``Handler`` that serves the requests peers send."""

    @property
    def node_id(self) -> str: ...

    def request(self, peer: str, message: Message, timeout_s: float) -> asyncio.Future[Message]:
        """Send a request (PING, READ, WRITE) to ``peer``; the future completes per Rule 1."""
        ...

    def call(self, peer: str, message: Message, timeout_s: float,
             on_done: Callable[[str, Message | BaseException], None]) -> None:
        """``request`` without a future, for the hot paths: ``on_done(peer, outcome)`` runs
        exactly once, never before ``call`` returns, with the reply or the error the future
        would have held (Rule 1)."""
        ...


@dataclass(frozen=True, slots=True)
class TransportConfig:
    node_id: str
    cluster_name: str
    secret: bytes  # cluster-secret; every node of the cluster has the same
    frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT
    inflight_max: int = 512  # unanswered requests on the wire per link
    queue_max: int = 8192  # requests waiting for a link or a slot; more fail fast
    serve_inflight_max: int = 512  # requests of one incoming connection in the handler
    connect_timeout_s: float = 5.0  # TCP connect and handshake, together
    backoff_s_min: float = 0.05  # first reconnect delay (before jitter)
    backoff_s_max: float = 5.0  # reconnect delay cap: a dead peer costs a connect per 5 s
    write_buffer_high_bytes: int = 256 * 1024  # stop writing (asyncio pause_writing) above
    write_buffer_low_bytes: int = 64 * 1024
    accept_connections_max: int = 1024  # incoming connections, authenticated or not
