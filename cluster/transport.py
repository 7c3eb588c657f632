"""Requests to peers over TCP: the ``Transport`` interface and its asyncio binding.

Theory of operation. ``PeerTransport`` keeps one outgoing TCP connection (a *link*) per
known peer and multiplexes every request to that peer over it, each frame tagged with a
request id; the reply carries the same id, so replies may come back in any order. Links are
directional: the side that opened the connection sends requests, the other side answers, so
two nodes that both send requests hold two connections, one opened by each (as Cassandra
does). The listener side accepts connections, runs the handshake (``cluster/peer_auth.py``)
and hands each request to the ``Handler`` callback; its return value is the reply.

``request()`` is a plain method that returns a future: it never awaits, so a caller that is
not running inside a Task (the frontend drives node coroutines with ``send(None)``) can use
it, and a coordinator fans out N requests with N calls. Each request has its own deadline,
kept in its link's deadline FIFO (one per timeout value) and watched by one timer per link
(from the injected ``Clock``: ``loop.call_later`` in production), never
``asyncio.timeout``/``wait_for``: a timer per request would cost a timer start and cancel
for every message.

Rules:
1. Every future ``request()`` returns completes exactly once: with the reply message; with
   ``RemoteError`` (the peer answered ERROR); ``PeerTimeout`` (no reply before the deadline);
   ``PeerUnavailable`` (no authenticated link: connect or handshake failed, the link was
   lost, the peer is in reconnect back-off, or the transport closed); ``PeerOverloaded``
   (more than ``queue_max`` requests waiting); or ``FrameTooLarge``.
2. Back-pressure: at most ``inflight_max`` requests per link are on the wire unanswered; more
   wait in the link's queue (bounded). While the socket's write buffer is above
   ``write_buffer_high_bytes`` (asyncio ``pause_writing``) nothing more is written. A timed
   out request frees its slot at once; its late reply is counted and dropped.
3. A link that fails goes to back-off: queued and in-flight requests fail at once, new ones
   fail fast, and the link reconnects by itself after ``backoff_s(attempt)``: exponential,
   capped, with jitter from the injected ``random.Random``. A successful handshake resets it.
4. The listener serves at most ``serve_inflight_max`` requests of one connection at a time
   and stops reading while its replies are not being read (write buffer high).
5. Any protocol error (a malformed frame, a message out of place, a frame over the limit)
   closes that connection; the peer is told why with an ERROR frame of request id 0 when
   possible.
6. Frames a connection sends in one loop turn (requests, replies) are written together, in
   the order they were sent, with one ``transport.write`` when the turn's callbacks are done
   (``loop.call_soon``), or at once past ``_OUT_BATCH_BYTES_MAX``: under load one syscall
   (and one wake-up of the peer) carries many frames. An error frame is written before the
   connection closes; an aborted connection drops what it had queued.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from cluster.clock import Clock, LoopClock, TimerHandle
from cluster.errors import ClusterError
from cluster.messages import (
    ERROR_TEXT_BYTES_MAX,
    HANDSHAKE,
    REPLY_OF,
    REQUESTS,
    TYPE_OF,
    Error,
    ErrorCode,
    Message,
    Ping,
    Pong,
)
from cluster.peer_auth import Handshake, HandshakeError, Role
from cluster.wire import (
    FRAME_BYTES_MAX_DEFAULT,
    HANDSHAKE_FRAME_BYTES_MAX,
    NEED_DATA,
    REQUEST_ID_MAX,
    Frame,
    FrameDecoder,
    WireError,
    encode,
)

log = logging.getLogger(__name__)

# Rule 6: queued frames past this size are written at once instead of at the end of the
# loop turn, so a burst of large frames meets the socket's flow control (pause_writing)
# while the link is still pumping, not after it queued up to inflight_max of them.
_OUT_BATCH_BYTES_MAX = 64 * 1024
# A deadline this close is treated as come: loop timers fire with millisecond rounding.
_DEADLINE_SLACK_S = 0.001

Handler = Callable[[str, Message], "Message | Awaitable[Message]"]
"""Serves one request: (peer node id, request) -> reply, or an awaitable of it. Raising
``RemoteError`` answers ERROR with its code; any other exception answers ERROR INTERNAL."""


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


def backoff_s(attempt: int, rng: random.Random, s_min: float, s_max: float) -> float:
    """Delay before reconnect ``attempt`` (0-based): ``min(s_max, s_min * 2**attempt)`` times
    a jitter factor in [0.5, 1), so peers that lost a node together do not reconnect in step."""
    ceiling = min(s_max, s_min * float(2 ** min(attempt, 32)))
    return ceiling * (0.5 + rng.random() / 2)


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


class _Pending:
    __slots__ = ("due", "future", "message", "request_id", "timeout_s")

    def __init__(self, future: asyncio.Future[Message], message: Message) -> None:
        self.future = future
        self.message = message
        self.request_id = 0
        self.timeout_s = 0.0
        self.due = 0.0


class _Connection(asyncio.Protocol):
    """One TCP connection, either role: the handshake, then frames to its owner."""

    def __init__(self, owner: _Owner, role: Role, config: TransportConfig, rng: random.Random,
                 clock: Clock, expected_peer_id: str | None = None) -> None:
        self.owner = owner
        self.config = config
        self.clock = clock
        self.handshake = Handshake(role, config.node_id, config.cluster_name, config.secret,
                                   rng, expected_peer_id=expected_peer_id)
        self.decoder = FrameDecoder(HANDSHAKE_FRAME_BYTES_MAX)
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.error: BaseException | None = None  # why it closed, if we know
        self.closed = False
        self.writable = True
        self.read_paused = False
        self.serving = 0  # acceptor: requests in the handler
        self._timer: TimerHandle | None = None
        # Rule 6: frames queued in this loop turn, written together by flush().
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False

    @property
    def peer_id(self) -> str:
        assert self.handshake.peer_id is not None
        return self.handshake.peer_id

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if self.closed:  # refused before it started (accept_connections_max)
            transport.abort()
            return
        transport.set_write_buffer_limits(self.config.write_buffer_high_bytes,
                                          self.config.write_buffer_low_bytes)
        self._timer = self.clock.call_later(self.config.connect_timeout_s, self._too_slow)
        for message in self.handshake.start():
            self.send(0, message)

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        self.process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.error is None:
            self.error = exc or ConnectionResetError("connection closed by peer")
        if not self.ready.done():
            self.ready.set_exception(self.error)
            self.ready.exception()  # retrieved: the owner may not be waiting any more
        self.owner.on_lost(self)

    def pause_writing(self) -> None:
        self.writable = False
        self.owner.on_writable(self)

    def resume_writing(self) -> None:
        self.writable = True
        self.owner.on_writable(self)

    # -- frames ---------------------------------------------------------------------------
    def process(self) -> None:
        """Handle buffered frames until NEED_DATA, a pause, or a close."""
        try:
            while not self.closed and not self.read_paused:
                frame = self.decoder.next()
                if frame is NEED_DATA:
                    return
                assert isinstance(frame, Frame)
                if self.handshake.done:
                    self.owner.on_frame(self, frame)
                else:
                    self._handshake_step(frame)
        except WireError as exc:
            self.fail(exc.code, str(exc), exc)
        except HandshakeError as exc:
            if not exc.by_peer:
                self.owner.on_refused(self, exc)
            self.fail(None if exc.by_peer else exc.code, exc.text, exc)

    def _handshake_step(self, frame: Frame) -> None:
        if frame.request_id != 0 or TYPE_OF[type(frame.message)] not in HANDSHAKE | {
                TYPE_OF[Error]}:
            raise WireError(f"{type(frame.message).__name__} (request id {frame.request_id}) "
                            "before the handshake completed")
        for message in self.handshake.receive(frame.message):
            self.send(0, message)
        if self.handshake.done:
            if self._timer is not None:
                self._timer.cancel()
            self.decoder.frame_bytes_max = self.config.frame_bytes_max
            if self.ready.done():  # its connect was given up (link closed, too slow)
                self.abort(ConnectionAbortedError("handshake finished after its connect ended"))
                return
            self.ready.set_result(None)
            self.owner.on_ready(self)

    def send(self, request_id: int, message: Message) -> None:
        if not self.closed and self.transport is not None:
            self.send_frame(encode(request_id, message, self.config.frame_bytes_max))

    def send_frame(self, frame: bytes) -> None:
        """Queue an encoded frame; it is written with the others of this loop turn (Rule 6),
        at once when the queue passes ``_OUT_BATCH_BYTES_MAX`` (so ``writable`` stays true
        to what the socket holds)."""
        if self.closed or self.transport is None:
            return
        self._out.append(frame)
        self._out_bytes += len(frame)
        if self._out_bytes >= _OUT_BATCH_BYTES_MAX:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write the queued frames, in order, with one ``transport.write``."""
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_bytes = 0
        if not self.closed and self.transport is not None:
            self.transport.write(data)  # may call pause_writing at once

    def fail(self, code: ErrorCode | int | None, text: str, error: BaseException) -> None:
        """Close the connection because of ``error``, telling the peer ``code`` if given."""
        if self.closed:
            return
        if self.error is None:
            self.error = error
        if code is not None:
            self.send(0, Error(int(code), _clip(text)))
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()  # flushes the ERROR frame, then connection_lost

    def abort(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.closed = True
        self._out.clear()
        self._out_bytes = 0
        if self.transport is not None:
            self.transport.abort()

    def set_read_paused(self, paused: bool) -> None:
        if paused == self.read_paused or self.transport is None:
            return
        self.read_paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()
            self.process()

    def _too_slow(self) -> None:
        if not self.handshake.done:
            self.abort(TimeoutError(f"handshake not done in {self.config.connect_timeout_s} s"))


class _Owner(Protocol):
    def on_ready(self, conn: _Connection) -> None: ...
    def on_frame(self, conn: _Connection, frame: Frame) -> None: ...
    def on_lost(self, conn: _Connection) -> None: ...
    def on_writable(self, conn: _Connection) -> None: ...
    def on_refused(self, conn: _Connection, error: HandshakeError) -> None: ...


class LinkState(enum.Enum):
    IDLE = "idle"  # not connected, no attempt running (nothing was ever sent)
    CONNECTING = "connecting"
    READY = "ready"
    BACKOFF = "backoff"  # the last attempt failed or the link was lost; a retry is scheduled
    CLOSED = "closed"


def _clip(text: str) -> str:
    while len(text.encode()) > ERROR_TEXT_BYTES_MAX:
        text = text[: len(text) * 3 // 4]
    return text


class _Link:
    """The outgoing side to one peer: its connection, its request ids, its queue."""

    def __init__(self, owner: PeerTransport, peer_id: str, host: str, port: int,
                 verify_id: bool = True) -> None:
        # Shared transport state
        self.owner = owner
        self.config = owner.config
        self.clock = owner.clock
        # Per-link state
        self.peer_id = peer_id
        self.host = host
        self.port = port
        self.verify_id = verify_id  # False: an address whose node id is not known yet
        self.state = LinkState.IDLE
        self.conn: _Connection | None = None
        self.attempt = 0  # consecutive failed connects
        self.last_error: BaseException | None = None
        self.retry_timer: TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        # Per-request state
        self.inflight: dict[int, _Pending] = {}
        self.queue: collections.deque[_Pending] = collections.deque()
        self.next_id = 1
        # Deadlines: every request submitted, answered or not (an answered one is skipped
        # when the sweep reaches it), in one FIFO per timeout: requests with the same
        # timeout fall due in the order they were submitted, so no heap is needed (the
        # monotonic clock never goes back). One timer for the earliest due of all.
        self.deadlines: dict[float, collections.deque[_Pending]] = {}
        self.deadline_timer: TimerHandle | None = None
        self.deadline_timer_due = 0.0

    def submit(self, pending: _Pending, timeout_s: float) -> None:
        stats = self.owner.stats
        if self.state in (LinkState.BACKOFF, LinkState.CLOSED):
            stats.unavailable += 1
            self._settle(pending, PeerUnavailable(
                f"peer {self.peer_id} unavailable ({self.state.value}): {self.last_error!r}"))
            return
        if len(self.queue) >= self.config.queue_max:
            stats.overloaded += 1
            self._settle(pending, PeerOverloaded(
                f"{len(self.queue)} requests already queued for peer {self.peer_id}"))
            return
        pending.timeout_s = timeout_s
        pending.due = due = self.clock.monotonic() + timeout_s
        fifo = self.deadlines.get(timeout_s)
        if fifo is None:
            fifo = self.deadlines[timeout_s] = collections.deque()
        fifo.append(pending)
        if self.deadline_timer is None or due < self.deadline_timer_due:
            self._arm_deadline_timer(due)
        self.queue.append(pending)
        if self.state is LinkState.IDLE:
            self._connect()
        elif self.state is LinkState.READY:
            self._pump()

    def _pump(self) -> None:
        """Write queued requests while a slot is free and the socket takes more (Rule 2)."""
        conn = self.conn
        if conn is None or conn.transport is None:
            return
        inflight = self.inflight
        while (self.queue and conn.writable and not conn.closed
               and len(inflight) < self.config.inflight_max):
            pending = self.queue.popleft()
            if pending.future.done():  # cancelled by its caller while queued
                continue
            request_id = self._new_id()
            try:
                frame = encode(request_id, pending.message, self.config.frame_bytes_max)
            except WireError as exc:
                self._settle(pending, exc)
                continue
            pending.request_id = request_id
            inflight[request_id] = pending
            conn.send_frame(frame)

    def _new_id(self) -> int:
        while True:
            request_id = self.next_id
            self.next_id = request_id % REQUEST_ID_MAX + 1  # 1..REQUEST_ID_MAX; 0 is reserved
            if request_id not in self.inflight:
                return request_id

    def _arm_deadline_timer(self, due: float) -> None:
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
        self.deadline_timer_due = due
        self.deadline_timer = self.clock.call_later(max(0.0, due - self.clock.monotonic()),
                                                    self._on_deadline)

    def _on_deadline(self) -> None:
        """Expire every request whose deadline has come; re-arm for the next one."""
        self.deadline_timer = None
        # A loop timer may fire a hair before its due time (millisecond rounding).
        now = self.clock.monotonic() + _DEADLINE_SLACK_S
        inflight = self.inflight
        expired = False
        earliest: float | None = None
        for timeout_s, fifo in list(self.deadlines.items()):
            while fifo and fifo[0].due <= now:
                expired = self._expire(fifo.popleft()) or expired
            while fifo and fifo[0].future.done() and (
                    inflight.get(fifo[0].request_id) is not fifo[0]):
                fifo.popleft()  # answered early: nothing left to watch
            if not fifo:
                del self.deadlines[timeout_s]
            elif earliest is None or fifo[0].due < earliest:
                earliest = fifo[0].due
        if earliest is not None:
            self._arm_deadline_timer(earliest)
        if expired:
            self._pump()

    def _expire(self, pending: _Pending) -> bool:
        """The deadline of ``pending`` came: fail it unless it was settled; free its slot.
        Returns whether a slot or queue entry was freed."""
        freed = False
        if self.inflight.get(pending.request_id) is pending:
            del self.inflight[pending.request_id]  # also a caller-cancelled one (Rule 2)
            freed = True
        elif pending.future.done():
            return False  # answered, failed or cancelled before its deadline
        else:
            try:
                self.queue.remove(pending)
                freed = True
            except ValueError:
                pass
        if not pending.future.done():
            self.owner.stats.timeouts += 1
            pending.future.set_exception(PeerTimeout(
                f"no reply from peer {self.peer_id} in {pending.timeout_s} s to "
                f"{type(pending.message).__name__}"))
        return freed

    @staticmethod
    def _settle(pending: _Pending, outcome: Message | BaseException) -> None:
        if pending.future.done():
            return
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    def _fail_all(self, error: ClusterError) -> None:
        doomed = [*self.inflight.values(), *self.queue]
        self.inflight.clear()
        self.queue.clear()
        self.deadlines.clear()  # every request it watched is settled below
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        for pending in doomed:
            self._settle(pending, error)

    # -- connection lifecycle (Rule 3) --------------------------------------------------
    def _connect(self) -> None:
        self.state = LinkState.CONNECTING
        self.task = asyncio.get_running_loop().create_task(self._run_connect())

    async def _run_connect(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def too_slow() -> None:
            task.cancel()

        timer = self.clock.call_later(self.config.connect_timeout_s, too_slow)
        conn: _Connection | None = None
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self, Role.INITIATOR, self.config, self.owner.rng,
                                    self.clock, expected_peer_id=(
                                        self.peer_id if self.verify_id else None)),
                self.host, self.port)
            await conn.ready
        except asyncio.CancelledError:
            if self.state is LinkState.CLOSED:
                raise
            self._connect_failed(conn, TimeoutError(
                f"connect and handshake took over {self.config.connect_timeout_s} s"))
        except Exception as exc:  # OSError, HandshakeError, WireError: all mean "not up"
            self._connect_failed(conn, exc)
        finally:
            timer.cancel()

    def _connect_failed(self, conn: _Connection | None, error: BaseException) -> None:
        if conn is not None:
            conn.abort(error)
        self.owner.stats.connect_failures += 1
        log.info("peer %s at %s:%d: connect failed: %r", self.peer_id, self.host, self.port,
                 error)
        self._fail_all(_unavailable(self.peer_id, "connect failed", error))
        self._back_off(error)

    def _back_off(self, error: BaseException) -> None:
        self.last_error = error
        self.state = LinkState.BACKOFF
        delay_s = backoff_s(self.attempt, self.owner.rng, self.config.backoff_s_min,
                            self.config.backoff_s_max)
        self.attempt += 1
        self.retry_timer = self.clock.call_later(delay_s, self._retry)

    def _retry(self) -> None:
        self.retry_timer = None
        if self.state is LinkState.BACKOFF:
            self._connect()

    def close(self) -> None:
        self.state = LinkState.CLOSED
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        if self.task is not None:
            self.task.cancel()
        if self.conn is not None:
            self.conn.abort(ConnectionAbortedError("transport closed"))
        self._fail_all(PeerUnavailable(f"peer {self.peer_id}: transport closed"))

    # -- _Owner callbacks ---------------------------------------------------------------
    def on_ready(self, conn: _Connection) -> None:
        self.conn = conn
        self.state = LinkState.READY
        self.attempt = 0
        self.last_error = None
        self.owner.stats.connects += 1
        self._pump()

    def on_frame(self, conn: _Connection, frame: Frame) -> None:
        request_id, message = frame
        if isinstance(message, Error) and request_id == 0:  # the peer says why it closes
            conn.fail(None, message.text, RemoteError(message.code, message.text))
            return
        tag = TYPE_OF[type(message)]
        if tag in REQUESTS or tag in HANDSHAKE or request_id == 0:
            conn.fail(ErrorCode.PROTOCOL, f"unexpected {tag.name} with request id "
                      f"{request_id} on an outgoing link", WireError(tag.name))
            return
        pending = self.inflight.pop(request_id, None)
        if pending is None:
            self.owner.stats.late_replies += 1  # its request timed out (Rule 2)
            return
        expected = REPLY_OF[TYPE_OF[type(pending.message)]]
        if isinstance(message, Error):
            self.owner.stats.remote_errors += 1
            self._settle(pending, RemoteError(message.code, message.text))
        elif tag is expected:
            self.owner.stats.replies += 1
            self._settle(pending, message)
        else:
            error = WireError(f"peer answered {tag.name} to {expected.name}")
            self._settle(pending, error)
            conn.fail(ErrorCode.PROTOCOL, str(error), error)
            return
        self._pump()

    def on_lost(self, conn: _Connection) -> None:
        if conn is not self.conn:
            return  # lost during its handshake: _run_connect reports it
        self.conn = None
        error = conn.error or ConnectionResetError("connection lost")
        log.info("peer %s: link lost: %r", self.peer_id, error)
        self._fail_all(_unavailable(self.peer_id, "connection lost", error))
        if self.state is LinkState.READY:
            self._back_off(error)

    def on_writable(self, conn: _Connection) -> None:
        if conn.writable:
            self._pump()

    def on_refused(self, conn: _Connection, error: HandshakeError) -> None:
        log.warning("peer %s at %s:%d refused: %s", self.peer_id, self.host, self.port, error)


def _unavailable(peer_id: str, what: str, cause: BaseException) -> PeerUnavailable:
    error = PeerUnavailable(f"peer {peer_id}: {what}: {cause!r}")
    error.__cause__ = cause
    return error


class _Inbound:
    """The listener side: serves the requests of authenticated incoming connections."""

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.handler = owner.handler
        self.serve_max = owner.config.serve_inflight_max
        self.conns: set[_Connection] = set()

    def new_connection(self) -> _Connection:
        owner = self.owner
        conn = _Connection(self, Role.ACCEPTOR, owner.config, owner.rng, owner.clock)
        if len(self.conns) >= owner.config.accept_connections_max:
            conn.closed = True  # connection_made still runs; it writes nothing
        self.conns.add(conn)
        return conn

    def on_ready(self, conn: _Connection) -> None:
        log.info("peer %s connected", conn.peer_id)

    def on_frame(self, conn: _Connection, frame: Frame) -> None:
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
        # A reply message (a dict lookup), or a future (a C type check), before the
        # Awaitable ABC check, which costs more than the rest of serving a READ.
        if type(result) in TYPE_OF or not isinstance(result, (asyncio.Future, Awaitable)):
            self._reply(conn, request_id, message, cast(Message, result))
            return
        conn.serving += 1
        if conn.serving >= self.serve_max:
            conn.set_read_paused(True)  # Rule 4
        future = result if isinstance(result, asyncio.Future) else asyncio.ensure_future(result)
        future.add_done_callback(lambda done: self._finish(conn, request_id, message, done))

    def _finish(self, conn: _Connection, request_id: int, request: Message,
                done: asyncio.Future[Message]) -> None:
        conn.serving -= 1
        if done.cancelled():
            reply: Message = Error(ErrorCode.INTERNAL, "handler cancelled")
        else:
            exc = done.exception()
            reply = done.result() if exc is None else _error_of(exc)
        self._reply(conn, request_id, request, reply)
        self.on_writable(conn)

    @staticmethod
    def _reply(conn: _Connection, request_id: int, request: Message, reply: Message) -> None:
        expected = REPLY_OF[TYPE_OF[type(request)]]
        if not isinstance(reply, Error) and TYPE_OF.get(type(reply)) is not expected:
            reply = Error(ErrorCode.INTERNAL, f"handler answered {type(reply).__name__} to "
                          f"{type(request).__name__}")
        try:
            conn.send(request_id, reply)
        except WireError as exc:  # FrameTooLarge: the reply cannot be sent
            conn.send(request_id, Error(ErrorCode.INTERNAL, _clip(str(exc))))

    def on_lost(self, conn: _Connection) -> None:
        self.conns.discard(conn)

    def on_writable(self, conn: _Connection) -> None:
        conn.set_read_paused(not conn.writable or conn.serving >= self.serve_max)

    def on_refused(self, conn: _Connection, error: HandshakeError) -> None:
        self.owner.stats.handshakes_refused += 1
        log.warning("refused an incoming peer connection: %s", error)

    def close(self) -> None:
        for conn in list(self.conns):
            conn.abort(ConnectionAbortedError("transport closed"))


def _error_of(exc: BaseException) -> Error:
    if isinstance(exc, RemoteError):
        return Error(int(exc.code), _clip(exc.text))
    log.exception("peer request handler failed", exc_info=exc)
    return Error(ErrorCode.INTERNAL, _clip(f"{type(exc).__name__}: {exc}"))


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
        self._links: dict[str, _Link] = {}
        self._inbound = _Inbound(self)
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
        self._links[node_id] = _Link(self, node_id, host, port, verify_id)

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
        pending = _Pending(future, message)
        self.stats.requests += 1
        link = self._links.get(peer)
        if link is None or self._closed:
            self.stats.unavailable += 1
            why = "transport closed" if self._closed else "unknown peer"
            future.set_exception(PeerUnavailable(f"peer {peer}: {why}"))
            return future
        link.submit(pending, timeout_s)
        return future

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
