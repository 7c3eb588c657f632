"""The outgoing side of the TCP transport to one peer: ``PeerLink`` opens and owns one
connection to it, multiplexes every request to that peer over it, each frame tagged with a
request id (the reply carries the same id, so replies may come back in any order), watches
the requests' deadlines and reconnects with back-off.

Each request has its own deadline, kept in its link's deadline FIFO (one per timeout value)
and watched by one timer per link (from the injected ``Clock``: ``loop.call_later`` in
production), never ``asyncio.timeout``/``wait_for``: a timer per request would cost a timer
start and cancel for every message.

Rules (numbered across the transport's modules; transport.py says where each lives):
2. Back-pressure: at most ``inflight_max`` requests per link are on the wire unanswered; more
   wait in the link's queue (bounded). While the socket's write buffer is above
   ``write_buffer_high_bytes`` (asyncio ``pause_writing``) nothing more is written. A timed
   out request frees its slot at once; its late reply is counted and dropped.
3. A link that fails goes to back-off: queued and in-flight requests fail at once, new ones
   fail fast, and the link reconnects by itself after ``backoff_s(attempt)``: exponential,
   capped, with jitter from the injected ``random.Random``. A successful handshake resets it.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from cluster.clock import TimerHandle
from cluster.errors import ClusterError
from cluster.messages import HANDSHAKE, REPLY_OF, REQUESTS, TYPE_OF, Error, ErrorCode, Message
from cluster.peer_auth import HandshakeError, Role
from cluster.peer_connection import PeerConnection
from cluster.transport import PeerOverloaded, PeerTimeout, PeerUnavailable, RemoteError
from cluster.wire import REQUEST_ID_MAX, Frame, WireError, encode

if TYPE_CHECKING:
    from cluster.peer_transport import PeerTransport


log = logging.getLogger(__name__)

# A deadline this close is treated as come: loop timers fire with millisecond rounding.
_DEADLINE_SLACK_S = 0.001


def backoff_s(attempt: int, rng: random.Random, s_min: float, s_max: float) -> float:
    """Delay before reconnect ``attempt`` (0-based): ``min(s_max, s_min * 2**attempt)`` times
    a jitter factor in [0.5, 1), so peers that lost a node together do not reconnect in step."""
    ceiling = min(s_max, s_min * float(2 ** min(attempt, 32)))
    return ceiling * (0.5 + rng.random() / 2)


OnDone = Callable[[str, "Message | BaseException"], None]


class PendingRequest:
    """One request to the peer, settled once (Rule 1 in transport.py): through ``future``
    (``request()``) or through ``on_done`` (``call()``), never both."""

    __slots__ = ("due", "future", "message", "on_done", "request_id", "settled", "timeout_s")

    def __init__(self, future: asyncio.Future[Message] | None, message: Message,
                 on_done: OnDone | None = None) -> None:
        assert (future is None) != (on_done is None)
        self.future = future
        self.on_done = on_done
        self.message = message
        self.request_id = 0
        self.timeout_s = 0.0
        self.due = 0.0
        self.settled = False

    def done(self) -> bool:
        """Settled, or its future cancelled by the caller."""
        return self.settled or (self.future is not None and self.future.done())


class LinkState(enum.Enum):
    IDLE = "idle"  # not connected, no attempt running (nothing was ever sent)
    CONNECTING = "connecting"
    READY = "ready"
    BACKOFF = "backoff"  # the last attempt failed or the link was lost; a retry is scheduled
    CLOSED = "closed"


class PeerLink:
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
        self.conn: PeerConnection | None = None
        self.attempt = 0  # consecutive failed connects
        self.last_error: BaseException | None = None
        self.retry_timer: TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        # Per-request state
        self.inflight: dict[int, PendingRequest] = {}
        self.queue: collections.deque[PendingRequest] = collections.deque()
        self.next_id = 1
        # Deadlines: every request submitted and not yet answered (an answered one leaves
        # when it reaches the head: on its reply, or at the sweep), in one FIFO per
        # timeout: requests with the same
        # timeout fall due in the order they were submitted, so no heap is needed (the
        # monotonic clock never goes back). One timer for the earliest due of all.
        self.deadlines: dict[float, collections.deque[PendingRequest]] = {}
        self.deadline_timer: TimerHandle | None = None
        self.deadline_timer_due = 0.0

    def submit(self, pending: PendingRequest, timeout_s: float) -> None:
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
            if pending.done():  # cancelled by its caller while queued
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
            while fifo and fifo[0].done() and (
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

    def _expire(self, pending: PendingRequest) -> bool:
        """The deadline of ``pending`` came: fail it unless it was settled; free its slot.
        Returns whether a slot or queue entry was freed."""
        freed = False
        if self.inflight.get(pending.request_id) is pending:
            del self.inflight[pending.request_id]  # also a caller-cancelled one (Rule 2)
            freed = True
        elif pending.done():
            return False  # answered, failed or cancelled before its deadline
        else:
            try:
                self.queue.remove(pending)
                freed = True
            except ValueError:
                pass
        if not pending.done():
            self.owner.stats.timeouts += 1
            self._settle(pending, PeerTimeout(
                f"no reply from peer {self.peer_id} in {pending.timeout_s} s to "
                f"{type(pending.message).__name__}"))
        return freed

    def _settle(self, pending: PendingRequest, outcome: Message | BaseException,
                at_once: bool = False) -> None:
        """Complete ``pending`` once. A ``call()``'s callback runs in the next loop turn, as
        a future's would, except with ``at_once`` (a reply, handled from the peer's data):
        no caller is on the stack then, and the hop through the ready queue is saved."""
        if pending.done():
            return
        pending.settled = True
        on_done = pending.on_done
        if on_done is not None:
            # The deadline FIFO keeps a settled request until its sweep: let its caller (an
            # FSM) go now, or every request would hold one alive for a whole timeout.
            pending.on_done = None
            if at_once:
                try:
                    on_done(self.peer_id, outcome)
                except Exception:  # the caller's bug must not close the link it came on
                    log.exception("callback of a request to peer %s failed", self.peer_id)
            else:
                self.owner.loop.call_soon(on_done, self.peer_id, outcome)
            return
        future = pending.future
        assert future is not None
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

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
        conn: PeerConnection | None = None
        try:
            transport, conn = await loop.create_connection(
                lambda: PeerConnection(self, Role.INITIATOR, self.config, self.owner.rng,
                                    self.clock, expected_peer_id=(
                                        self.peer_id if self.verify_id else None)),
                self.host, self.port)
            if transport.get_extra_info("sockname") == transport.get_extra_info("peername"):
                # A TCP self-connect: with nothing listening on a port of the ephemeral range,
                # the kernel may pick that very port as our source and connect us to
                # ourselves. Left to the handshake's timeout, the socket would hold the port
                # the peer needs to bind when it restarts.
                raise OSError(f"connected to itself on {self.host}:{self.port} "
                              "(TCP self-connect)")
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

    def _connect_failed(self, conn: PeerConnection | None, error: BaseException) -> None:
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

    # -- ConnectionOwner callbacks ---------------------------------------------------------------
    def on_ready(self, conn: PeerConnection) -> None:
        self.conn = conn
        self.state = LinkState.READY
        self.attempt = 0
        self.last_error = None
        self.owner.stats.connects += 1
        self._pump()

    def on_frame(self, conn: PeerConnection, frame: Frame) -> None:
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
            self._settle(pending, RemoteError(message.code, message.text), True)
        elif tag is expected:
            self.owner.stats.replies += 1
            self._settle(pending, message, True)
        else:
            error = WireError(f"peer answered {tag.name} to {expected.name}")
            self._settle(pending, error)
            conn.fail(ErrorCode.PROTOCOL, str(error), error)
            return
        # Answered requests leave the head of their deadline FIFO now, not at the next
        # sweep: replies come back about in order, so the FIFO holds what is in flight, and
        # a request (its message, its caller) dies young instead of living a whole timeout
        # and being promoted through the GC generations (measured: p99 and CPU per GET).
        fifo = self.deadlines.get(pending.timeout_s)
        while fifo and fifo[0].settled:
            fifo.popleft()
        self._pump()

    def on_lost(self, conn: PeerConnection) -> None:
        if conn is not self.conn:
            return  # lost during its handshake: _run_connect reports it
        self.conn = None
        error = conn.error or ConnectionResetError("connection lost")
        log.info("peer %s: link lost: %r", self.peer_id, error)
        self._fail_all(_unavailable(self.peer_id, "connection lost", error))
        if self.state is LinkState.READY:
            self._back_off(error)

    def on_writable(self, conn: PeerConnection) -> None:
        if conn.writable:
            self._pump()

    def on_refused(self, conn: PeerConnection, error: HandshakeError) -> None:
        log.warning("peer %s at %s:%d refused: %s", self.peer_id, self.host, self.port, error)


def _unavailable(peer_id: str, what: str, cause: BaseException) -> PeerUnavailable:
    error = PeerUnavailable(f"peer {peer_id}: {what}: {cause!r}")
    error.__cause__ = cause
    return error
