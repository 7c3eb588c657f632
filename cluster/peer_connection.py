"""One TCP connection of the peer transport, either role: ``PeerConnection`` runs the
handshake (``cluster/peer_auth.py``), then hands decoded frames to its owner (``PeerLink``
on the side that opened it, ``PeerAcceptor`` on the side that accepted it) and batches the
frames it sends.

Rules (numbered across the transport's modules; transport.py says where each lives):
5. Any protocol error (a malformed frame, a message out of place, a frame over the limit)
   closes that connection; the peer is told why with an ERROR frame of request id 0 when
   possible.
6. Frames a connection sends in one loop turn (requests, replies) are written together, in
   the order they were sent, with one ``transport.write`` when the turn's callbacks are done
   (``loop.call_soon``), or at once past ``_OUT_BATCH_BYTES_MAX`` or when the owner flushes
   (``PeerTransport.flush_replies``): under load one syscall (and one wake-up of the peer)
   carries many frames. An error frame is written before the
   connection closes; an aborted connection drops what it had queued.
"""

from __future__ import annotations

import asyncio
import random
from typing import Protocol, cast

from cluster.clock import Clock, TimerHandle
from cluster.messages import ERROR_TEXT_BYTES_MAX, HANDSHAKE, TYPE_OF, Error, ErrorCode, Message
from cluster.peer_auth import Handshake, HandshakeError, Role
from cluster.transport import TransportConfig
from cluster.wire import (
    HANDSHAKE_FRAME_BYTES_MAX,
    NEED_DATA,
    Frame,
    FrameDecoder,
    WireError,
    encode,
)

# Rule 6: queued frames past this size are written at once instead of at the end of the
# loop turn, so a burst of large frames meets the socket's flow control (pause_writing)
# while the link is still pumping, not after it queued up to inflight_max of them.
_OUT_BATCH_BYTES_MAX = 64 * 1024


class PeerConnection(asyncio.Protocol):
    """One TCP connection, either role: the handshake, then frames to its owner."""

    def __init__(self, owner: ConnectionOwner, role: Role, config: TransportConfig,
                 rng: random.Random, clock: Clock, expected_peer_id: str | None = None) -> None:
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
            self.send(0, Error(int(code), clip_error_text(text)))
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


class ConnectionOwner(Protocol):
    def on_ready(self, conn: PeerConnection) -> None: ...
    def on_frame(self, conn: PeerConnection, frame: Frame) -> None: ...
    def on_lost(self, conn: PeerConnection) -> None: ...
    def on_writable(self, conn: PeerConnection) -> None: ...
    def on_refused(self, conn: PeerConnection, error: HandshakeError) -> None: ...


def clip_error_text(text: str) -> str:
    while len(text.encode()) > ERROR_TEXT_BYTES_MAX:
        text = text[: len(text) * 3 // 4]
    return text
