"""The listener side of the TCP transport: ``PeerAcceptor`` takes the connections peers
open, and once the handshake (``cluster/peer_auth.py``) authenticated one, hands each of its
requests to the ``Handler`` callback; its return value is the reply. Links are directional:
the side that opened a connection sends requests on it, this side answers.

Rules (numbered across the transport's modules; transport.py says where each lives):
4. The listener serves at most ``serve_inflight_max`` requests of one connection at a time
   and stops reading while its replies are not being read (write buffer high).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, cast

from cluster.messages import REPLY_OF, REQUESTS, TYPE_OF, Error, ErrorCode, Message, Ping, Pong
from cluster.peer_auth import HandshakeError, Role
from cluster.peer_connection import PeerConnection, clip_error_text
from cluster.transport import DeferredReply, RemoteError
from cluster.wire import Frame, WireError

if TYPE_CHECKING:
    from cluster.peer_transport import PeerTransport


log = logging.getLogger(__name__)


class PeerAcceptor:
    """The listener side: serves the requests of authenticated incoming connections."""

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.handler = owner.handler
        self.serve_max = owner.config.serve_inflight_max
        self.conns: set[PeerConnection] = set()

    def new_connection(self) -> PeerConnection:
        owner = self.owner
        conn = PeerConnection(self, Role.ACCEPTOR, owner.config, owner.rng, owner.clock)
        if len(self.conns) >= owner.config.accept_connections_max:
            conn.closed = True  # connection_made still runs; it writes nothing
        self.conns.add(conn)
        return conn

    def on_ready(self, conn: PeerConnection) -> None:
        log.info("peer %s connected", conn.peer_id)

    def on_frame(self, conn: PeerConnection, frame: Frame) -> None:
        request_id, message = frame
        tag = TYPE_OF[type(message)]
        if tag not in REQUESTS or request_id == 0:
            conn.fail(ErrorCode.PROTOCOL, f"{tag.name} with request id {request_id} is not a "
                      "request", WireError(tag.name))
            return
        if isinstance(message, Ping):
            conn.send(request_id, Pong())
            return
        self.owner.stats.served += 1
        try:
            result = self.handler(conn.peer_id, message)
        except Exception as exc:
            self._reply(conn, request_id, message, _error_of(exc))
            return
        # A reply message (a dict lookup), a DeferredReply or a future (C type checks),
        # before the Awaitable ABC check, which costs more than the rest of serving a READ.
        if type(result) in TYPE_OF:
            self._reply(conn, request_id, message, cast(Message, result))
            return
        if isinstance(result, DeferredReply):
            self._hold(conn)
            result.then(lambda outcome: self._settled(conn, request_id, message, outcome))
            return
        if not isinstance(result, (asyncio.Future, Awaitable)):
            self._reply(conn, request_id, message, result)
            return
        self._hold(conn)
        future = result if isinstance(result, asyncio.Future) else asyncio.ensure_future(result)
        future.add_done_callback(lambda done: self._finish(conn, request_id, message, done))

    def _hold(self, conn: PeerConnection) -> None:
        """One more request of ``conn`` waits for its reply (Rule 4)."""
        conn.serving += 1
        if conn.serving >= self.serve_max:
            conn.set_read_paused(True)

    def _settled(self, conn: PeerConnection, request_id: int, request: Message,
                 outcome: Message | BaseException) -> None:
        conn.serving -= 1
        reply = _error_of(outcome) if isinstance(outcome, BaseException) else outcome
        self._reply(conn, request_id, request, reply)
        self.on_writable(conn)

    def flush(self) -> None:
        """Write every connection's queued replies now (see ``PeerTransport.flush_replies``)."""
        for conn in self.conns:
            conn.flush()

    def _finish(self, conn: PeerConnection, request_id: int, request: Message,
                done: asyncio.Future[Message]) -> None:
        if done.cancelled():
            outcome: Message | BaseException = Error(ErrorCode.INTERNAL, "handler cancelled")
        else:
            exc = done.exception()
            outcome = done.result() if exc is None else exc
        self._settled(conn, request_id, request, outcome)

    @staticmethod
    def _reply(conn: PeerConnection, request_id: int, request: Message, reply: Message) -> None:
        expected = REPLY_OF[TYPE_OF[type(request)]]
        if not isinstance(reply, Error) and TYPE_OF.get(type(reply)) is not expected:
            reply = Error(ErrorCode.INTERNAL, f"handler answered {type(reply).__name__} to "
                          f"{type(request).__name__}")
        try:
            conn.send(request_id, reply)
        except WireError as exc:  # FrameTooLarge: the reply cannot be sent
            conn.send(request_id, Error(ErrorCode.INTERNAL, clip_error_text(str(exc))))

    def on_lost(self, conn: PeerConnection) -> None:
        self.conns.discard(conn)

    def on_writable(self, conn: PeerConnection) -> None:
        conn.set_read_paused(not conn.writable or conn.serving >= self.serve_max)

    def on_refused(self, conn: PeerConnection, error: HandshakeError) -> None:
        self.owner.stats.handshakes_refused += 1
        log.warning("refused an incoming peer connection: %s", error)

    def close(self) -> None:
        for conn in list(self.conns):
            conn.abort(ConnectionAbortedError("transport closed"))


def _error_of(exc: BaseException) -> Error:
    if isinstance(exc, RemoteError):
        return Error(int(exc.code), clip_error_text(exc.text))
    log.exception("peer request handler failed", exc_info=exc)
    return Error(ErrorCode.INTERNAL, clip_error_text(f"{type(exc).__name__}: {exc}"))
