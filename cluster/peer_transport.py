"""Requests to peers over TCP: ``PeerTransport``, the asyncio binding of ``Transport``
(transport.py).

Theory of operation. ``PeerTransport`` keeps one outgoing TCP connection (a *link*,
``PeerLink``) per known peer and multiplexes every request to that peer over it. Links are
directional: the side that opened the connection sends requests, the other side answers, so
two nodes that both send requests hold two connections, one opened by each (as Cassandra
does). The listener side (``PeerAcceptor``) accepts connections, runs the handshake
(``cluster/peer_auth.py``) and hands each request to the ``Handler`` callback; its return
value is the reply. transport.py says which module keeps which of the numbered rules.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from cluster.clock import Clock, LoopClock
from cluster.messages import REQUESTS, TYPE_OF, Message
from cluster.peer_acceptor import PeerAcceptor
from cluster.peer_link import LinkState, OnDone, PeerLink, PendingRequest
from cluster.transport import Handler, PeerUnavailable, TransportConfig


@dataclass(slots=True)
class TransportStats:
    requests: int = 0
    replies: int = 0
    remote_errors: int = 0
    timeouts: int = 0
    late_replies: int = 0
    unavailable: int = 0
    overloaded: int = 0
    connects: int = 0
    connect_failures: int = 0
    handshakes_refused: int = 0  # incoming connections refused in the handshake
    served: int = 0


class PeerTransport:
    """``Transport`` over TCP (see the module docstring). Create it inside the running loop.

    ``rng`` draws handshake nonces and back-off jitter: production passes
    ``random.SystemRandom()``, tests a seeded ``random.Random``.
    """

    def __init__(self, config: TransportConfig, handler: Handler, rng: random.Random, *,
                 clock: Clock | None = None) -> None:
        assert config.secret, "cluster-secret must not be empty"
        assert 0 < config.write_buffer_low_bytes <= config.write_buffer_high_bytes
        self.config = config
        self.handler = handler
        self.rng = rng
        self.loop = asyncio.get_running_loop()
        self.clock: Clock = clock or LoopClock(self.loop)
        self.stats = TransportStats()
        self._links: dict[str, PeerLink] = {}
        self._inbound = PeerAcceptor(self)
        self._server: asyncio.Server | None = None
        self._closed = False

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def add_peer(self, node_id: str, host: str, port: int, *, verify_id: bool = True) -> None:
        """Know ``node_id`` at host:port (a new address replaces the old link).

        ``verify_id=False`` makes ``node_id`` a local name for an address whose node is not
        known yet (discovery): the handshake then accepts whichever node answers there."""
        assert node_id != self.node_id
        link = self._links.get(node_id)
        if link is not None and (link.host, link.port) == (host, port):
            return
        if link is not None:
            link.close()
        self._links[node_id] = PeerLink(self, node_id, host, port, verify_id)

    def remove_peer(self, node_id: str) -> None:
        link = self._links.pop(node_id, None)
        if link is not None:
            link.close()

    def retry_now(self, node_id: str) -> None:
        """If the link to ``node_id`` waits in back-off, reconnect now (the peer was just
        heard from, so it is up again)."""
        link = self._links.get(node_id)
        if link is not None and link.state is LinkState.BACKOFF:
            if link.retry_timer is not None:
                link.retry_timer.cancel()
            link._retry()

    def peers(self) -> list[str]:
        return sorted(self._links)

    def link_state(self, node_id: str) -> LinkState | None:
        link = self._links.get(node_id)
        return None if link is None else link.state

    def is_connected(self, node_id: str) -> bool:
        return self.link_state(node_id) is LinkState.READY

    def is_reconnecting(self, node_id: str) -> bool:
        """Connecting again after a failed connect or a lost link: not up until it succeeds
        (a dead peer's link is CONNECTING for a moment after every back-off)."""
        link = self._links.get(node_id)
        return link is not None and link.state is LinkState.CONNECTING and link.attempt > 0

    def request(self, peer: str, message: Message, timeout_s: float) -> asyncio.Future[Message]:
        """See ``Transport.request``. REQUIRES: ``message`` is a request (PING, READ, WRITE)
        and ``timeout_s > 0``."""
        assert TYPE_OF[type(message)] in REQUESTS, message
        assert timeout_s > 0
        future: asyncio.Future[Message] = self.loop.create_future()
        pending = PendingRequest(future, message)
        self.stats.requests += 1
        link = self._links.get(peer)
        if link is None or self._closed:
            self.stats.unavailable += 1
            why = "transport closed" if self._closed else "unknown peer"
            future.set_exception(PeerUnavailable(f"peer {peer}: {why}"))
            return future
        link.submit(pending, timeout_s)
        return future

    def call(self, peer: str, message: Message, timeout_s: float, on_done: OnDone) -> None:
        """See ``Transport.call``: ``request`` without a future."""
        assert TYPE_OF[type(message)] in REQUESTS, message
        assert timeout_s > 0
        pending = PendingRequest(None, message, on_done)
        self.stats.requests += 1
        link = self._links.get(peer)
        if link is None or self._closed:
            self.stats.unavailable += 1
            why = "transport closed" if self._closed else "unknown peer"
            self.loop.call_soon(on_done, peer, PeerUnavailable(f"peer {peer}: {why}"))
            return
        link.submit(pending, timeout_s)

    def flush_replies(self) -> None:
        """Write the replies queued on incoming connections now rather than with the rest of
        the next loop turn: for a caller that settles ``DeferredReply``s at a turn's end."""
        self._inbound.flush()

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Accept peers on host:port (port 0: any free port); returns the bound address."""
        assert self._server is None
        self._server = await self.loop.create_server(self._inbound.new_connection, host, port)
        sockname: tuple[Any, ...] = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        """Stop listening, drop every connection, fail every pending request."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        for link in self._links.values():
            link.close()
        self._inbound.close()
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # one loop turn (not a delay): connection_lost callbacks run
