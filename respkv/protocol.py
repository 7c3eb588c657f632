"""asyncio glue for one client connection: bytes in, commands run, replies out in order.

Theory of operation
- data_received feeds the sans-IO RequestParser and runs every complete command at once
  (pipelining). Replies are collected and written with one transport.write per batch.
- Handlers are coroutines that, in a cluster of one, never suspend. They are driven with
  send(None): when that raises StopIteration the reply is ready with no Task, no future and no
  loop round-trip. A handler that really suspends (a cluster request) is driven the same
  way: it is resumed from the done-callback of the future it awaits (`_step`), as a Task
  would, without creating one (a Task per request cost about a tenth of a cluster GET's
  coordinator CPU); handlers must therefore not need `asyncio.current_task()` (no
  `asyncio.timeout`). While it is suspended, the connection's later commands wait in
  `_backlog`, so replies keep request order.
- Group commit: when a batch wrote to the node, its replies are not written until the
  server's commit barrier has pushed the commit log to the OS (and fsynced it with
  appendfsync always), once per loop iteration for all connections. A reply therefore never
  reaches a client before its write can survive a kill -9 of the server.
- Flow control: when the transport's write buffer passes its high-water mark
  (pause_writing) we stop reading from this client until it drains; a suspended command
  with a growing backlog also pauses reading. The `client-output-buffer-limit normal` hard
  limit closes a client whose unread replies pile up anyway.

Rule: this module owns sockets and nothing else; every decision about a command lives in
dispatch.py and the handlers.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import socket
import types
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import respkv.commands  # noqa: F401  (registers every command)
from cluster.errors import ClusterError
from engine.errors import StorageError
from respkv.client import Client
from respkv.dispatch import dispatch, overlappable
from respkv.errors import cluster_error_message, storage_error_message
from respkv.replies import CommandError, Raw, encode, error_bytes
from respkv.resp import ProtocolError, RequestParser

if TYPE_CHECKING:
    from respkv.server import Server

log = logging.getLogger("respkv")

# Commands queued behind a suspended one before we stop reading from the client.
BACKLOG_HIGH_WATER = 1024
# Reads of one connection waiting for the cluster at once (more wait in the backlog).
OVERLAP_MAX = 64
# Replies (bulk bytes) built from one read before they are written out and, if the client
# is not reading and no output limit is set, the rest of the read waits: bounds memory per
# connection.
OUTPUT_BATCH_BYTES_MAX = 1024 * 1024
# A bulk reply up to this size is framed in one formatted copy; larger ones are not copied.
_INLINE_BULK_BYTES_MAX = 16 * 1024
# Bulk reply headers ("$<n>\r\n") of values up to a few KiB, looked up instead of formatted:
# a pipelined read of 16 GETs framed its replies in ~60% of the time formatting took.
_BULK_HEADERS = [b"$%d\r\n" % n for n in range(4096)]
_BULK_HEADERS_MAX = len(_BULK_HEADERS)
# Ends a bulk reply emitted in three pieces (header, value, this object), and only such a
# reply: _reply_count tells replies from pieces by its identity.
_CRLF = bytes(bytearray(b"\r\n"))  # a fresh object: literals b"\\r\\n" may be shared
_Coroutine = types.CoroutineType
_SUSPENDED = object()  # _run_one: the command waits for the cluster; its reply comes later

DENIED = (
    "DENIED respkv is running in protected mode because protected mode is enabled and no "
    "password is set for the default user. In this mode connections are only accepted from "
    "the loopback interface. If you want to connect from external computers to respkv you "
    "may adopt one of the following solutions: 1) Just disable protected mode sending the "
    "command 'CONFIG SET protected-mode no' from the loopback interface by connecting to "
    "respkv from the same host the server is running, however MAKE SURE respkv is not "
    "publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change "
    "permanent. 2) Alternatively you can just disable the protected mode by editing the "
    "respkv configuration file, and setting the protected mode option to 'no', and then "
    "restarting the server. 3) If you started the server manually just for testing, restart "
    "it with the '--protected-mode no' option. 4) Set up an authentication password for the "
    "default user. NOTE: You only need to do one of the above things in order for the server "
    "to start accepting connections from the outside."
)


class RespConnection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        # Shared server state
        self.server = server
        self.state = server.state
        # Per-connection state
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.parser = RequestParser(
            max_bulk_len=server.state.config.proto_max_bulk_len,
            max_query_buffer_bytes=server.state.config.client_query_buffer_limit,
        )
        self._out: list[bytes] = []
        self._backlog: list[list[bytes]] = []
        self._pending_protocol_error: str | None = None
        self._busy = False  # a command is suspended (waiting for the cluster)
        self._suspended = 0  # how many are
        self._overlap = True  # every suspended command is a read: more reads may start
        # Reply slots from the first suspended command on, in request order: a slot is
        # filled when its command finishes, and the filled head moves to _out.
        self._slots: collections.deque[list[bytes | None]] = collections.deque()
        # Output back-pressure: the rest of a batch waits in _backlog until the client reads.
        self._stalled = False
        self._waiting_commit = False
        self._waiting_turn = False
        self._read_paused = False
        self._write_paused = False
        self._closed = False
        self._parser_authenticated = True
        self._soft_limit_since: float | None = None
        # Truthy while the node holds writes not yet committed (group commit).
        self._pending_log = server.state.node.pending_log

    # Connection lifecycle -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        state = self.state
        config = state.config
        state.stats.total_connections_received += 1
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if len(state.clients) >= config.maxclients:
            state.stats.rejected_connections += 1
            transport.write(error_bytes("ERR max number of clients reached"))
            transport.close()
            self._closed = True
            return
        if config.protected_mode and not config.requirepass and not _is_loopback(peer):
            state.stats.rejected_connections += 1
            transport.write(error_bytes(DENIED))
            transport.close()
            self._closed = True
            return
        if sock is not None and config.tcp_keepalive > 0 and sock.family != socket.AF_UNIX:
            _set_keepalive(sock, config.tcp_keepalive)
        local = transport.get_extra_info("sockname")
        client = Client(
            state,
            state.new_client_id(),
            addr=_format_addr(peer),
            laddr=_format_addr(local),
            fd=sock.fileno() if sock is not None else -1,
        )
        client.kill = self.close
        self.client = client
        self.parser.authenticated = self._parser_authenticated = client.authenticated
        state.clients[client.id] = client

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        client = self.client
        if client is not None:
            self.state.clients.pop(client.id, None)
            self.state.unwatch_all(client)

    def close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()

    # Input ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None or self._closed or client.close_after_reply:
            return  # after QUIT or a protocol error nothing more is read
        state = self.state
        client.last_interaction = state.now_s
        state.stats.total_net_input_bytes += len(data)
        parser = self.parser
        if client.authenticated is not self._parser_authenticated:
            # Redis's tighter request limits apply until AUTH succeeds.
            parser.authenticated = self._parser_authenticated = client.authenticated
        if not client.authenticated and not (self._busy or self._stalled):
            self._feed_unauthenticated(data)
            return
        try:
            commands = parser.feed(data)
        except ProtocolError as exc:
            commands = exc.commands
            self._protocol_error(exc)
        if self._stalled or (self._busy and (self._backlog or not self._overlap)):
            self._backlog.extend(commands)
            if len(self._backlog) > BACKLOG_HIGH_WATER:
                self._pause_reading()
        elif len(commands) == 1 and not self._busy:
            self._run_one(commands[0])  # an unpipelined client's read
        elif commands:
            self._run_commands(commands)  # beside suspended reads, reads may start
        if self._pending_protocol_error is not None and not (self._busy or self._stalled):
            self._fail_protocol(self._pending_protocol_error)

    def _protocol_error(self, exc: ProtocolError) -> None:
        # Past client-query-buffer-limit Redis closes without a reply ("" = no reply).
        self._pending_protocol_error = exc.message if exc.send_error_reply else ""
        if not exc.send_error_reply:
            self.state.stats.client_query_buffer_limit_disconnections += 1
            log.warning("closing client %s: query buffer over limit",
                        self.client and self.client.addr)

    def _feed_unauthenticated(self, data: bytes) -> None:
        """Parse and run one command at a time, so an AUTH lifts the unauthenticated limits
        for the next command of the same read, as in Redis (a rare path: speed is moot)."""
        client = self.client
        assert client is not None
        parser = self.parser
        try:
            for argv in parser.feed_stepwise(data):
                if self._busy or self._stalled:
                    self._backlog.append(argv)
                    continue
                self._run_commands([argv])
                if client.close_after_reply:
                    break
                parser.authenticated = self._parser_authenticated = client.authenticated
        except ProtocolError as exc:
            self._protocol_error(exc)
        if self._pending_protocol_error is not None and not (self._busy or self._stalled):
            self._fail_protocol(self._pending_protocol_error)

    def _fail_protocol(self, message: str) -> None:
        self._pending_protocol_error = None
        client = self.client
        assert client is not None
        if client.close_after_reply:
            return  # QUIT came first: Redis never reads the bad bytes behind it
        if message:
            # The parser keeps Redis's bytes one per character (latin-1), binary included.
            self._out.append(b"-ERR Protocol error: " + message.encode("latin-1") + b"\r\n")
        client.close_after_reply = True
        if self._out:
            self._flush()
        else:
            self.close()

    def _run_commands(self, commands: list[list[bytes]]) -> None:
        """Run commands in order. One that suspends (a cluster request) holds the rest back,
        except that reads may start beside suspended reads (``overlappable``); their replies
        wait in ``_slots`` behind the earlier ones, so replies keep request order."""
        client = self.client
        assert client is not None
        out = self._out
        emit = out.append if not self._slots else self._emit_behind
        count = len(commands)
        reply_bytes = 0
        # index: the position of the command after argv (what is left once argv has run).
        for index, argv in enumerate(commands, 1):
            if self._busy and not (self._overlap and self._suspended < OVERLAP_MAX
                                   and not self._backlog and overlappable(client, argv)):
                self._backlog[:0] = commands[index - 1:]
                break
            try:
                result = dispatch(client, argv)
                if type(result) is _Coroutine:
                    try:
                        first = result.send(None)
                    except StopIteration as done:
                        result = done.value
                    else:
                        if self._suspend(result, first, argv):
                            emit = self._emit_behind
                            continue
                        self._backlog[:0] = commands[index:]
                        break
                kind = type(result)
                if kind is Raw:
                    emit(result.data)
                elif kind is bytes:
                    size = len(result)
                    reply_bytes += size
                    if size < _BULK_HEADERS_MAX:
                        # Framed by the write's one join: a header looked up, no copy here.
                        emit(_BULK_HEADERS[size])
                        emit(result)
                        emit(_CRLF)
                    elif size < _INLINE_BULK_BYTES_MAX:
                        emit(b"$%d\r\n%b\r\n" % (size, result))
                    else:  # no copy of a big value here; the write joins once
                        emit(b"$%d\r\n" % size)
                        emit(result)
                        emit(_CRLF)
                else:
                    emit(encode(result, client.resp == 3))
            except Exception as exc:
                emit(self._error_reply(argv, exc))
            if client.close_after_reply:
                self._backlog.clear()
                break
            if reply_bytes >= OUTPUT_BATCH_BYTES_MAX and index < count and not self._busy:
                # One read can hold thousands of commands: write what is ready, and if the
                # client is not reading, keep the rest for resume_writing instead of building
                # all of its replies in memory.
                # With a client-output-buffer-limit set, Redis's rule applies instead: the
                # replies pile up and the limit closes the client (checked in _write_out).
                reply_bytes = 0
                if not self._pending_log and not self._waiting_commit and not self._closed:
                    self._write_out()
                    if self._closed:
                        break
                    if self._write_paused and not self.state.output_limit_set:
                        self._stalled = True
                        self._backlog[:0] = commands[index:]
                        self._pause_reading()
                        break
        if out and not self._closed:
            self._flush()

    def _run_one(self, argv: list[bytes]) -> None:
        """``_run_commands([argv])`` when no command is suspended (so no reply waits in
        ``_slots``): the read of an unpipelined client, without the batch loop's bookkeeping
        (the loop, the backlog and output-batch checks), which cost ~0.15 us a request."""
        client = self.client
        assert client is not None
        out = self._out
        try:
            result = dispatch(client, argv)
            if type(result) is _Coroutine:
                try:
                    first = result.send(None)
                except StopIteration as done:
                    result = done.value
                else:
                    self._suspend(result, first, argv)
                    result = _SUSPENDED
            kind = type(result)
            if kind is Raw:
                out.append(result.data)
            elif kind is bytes:
                size = len(result)
                if size < _BULK_HEADERS_MAX:
                    out += (_BULK_HEADERS[size], result, _CRLF)
                elif size < _INLINE_BULK_BYTES_MAX:
                    out.append(b"$%d\r\n%b\r\n" % (size, result))
                else:
                    out += (b"$%d\r\n" % size, result, _CRLF)
            elif result is not _SUSPENDED:
                out.append(encode(result, client.resp == 3))
        except Exception as exc:
            out.append(self._error_reply(argv, exc))
        if client.close_after_reply:
            self._backlog.clear()
        if out and not self._closed:
            self._flush()

    def _error_reply(self, argv: list[bytes], exc: BaseException) -> bytes:
        """The error reply for a command that raised, counted as Redis counts them."""
        stats = self.state.stats
        stats.total_error_replies += 1
        if isinstance(exc, CommandError):
            return error_bytes(exc.message)
        if isinstance(exc, StorageError):  # e.g. a damaged table block: this key, not the server
            log.warning("command %r failed: %s", argv[:1], exc)
            return error_bytes(storage_error_message(exc))
        if isinstance(exc, ClusterError):  # NOQUORUM, CLUSTERDOWN: this request, not the client
            return error_bytes(cluster_error_message(exc))
        # A bug must cost one reply, not the connection.
        log.error("command %r failed", argv[:1], exc_info=exc)
        stats.unexpected_error_replies += 1
        return error_bytes(f"ERR internal error: {type(exc).__name__}: {exc}")

    def _emit_behind(self, data: bytes) -> None:
        """A reply that must wait for the replies of earlier, still suspended commands."""
        self._slots.append([data])

    def _suspend(self, coro: Coroutine[Any, Any, Any], first: Any, argv: list[bytes]) -> bool:
        """Park a command that is waiting for the cluster; its reply gets the next slot.
        True when later reads may start beside it (it is a read, and so are the others)."""
        slot: list[bytes | None] = [None]
        self._slots.append(slot)
        self._suspended += 1
        self._busy = True
        client = self.client
        assert client is not None
        self._overlap = self._overlap and overlappable(client, argv)
        self._park(coro, first, argv, slot)
        return self._overlap

    def _park(self, coro: Coroutine[Any, Any, Any], awaited: Any, argv: list[bytes],
              slot: list[bytes | None]) -> None:
        """Resume ``coro`` once ``awaited`` (what its last send() yielded) is done, as a Task
        does: a future wakes it from its done-callback, a bare ``yield`` on the next turn."""
        if getattr(awaited, "_asyncio_future_blocking", False):
            awaited._asyncio_future_blocking = False
            awaited.add_done_callback(lambda _done: self._step(coro, argv, None, slot))
        elif awaited is None:  # asyncio.sleep(0)
            asyncio.get_running_loop().call_soon(self._step, coro, argv, None, slot)
        else:
            error = RuntimeError(f"a command handler yielded {awaited!r}, not a future")
            asyncio.get_running_loop().call_soon(self._step, coro, argv, error, slot)

    def _step(self, coro: Coroutine[Any, Any, Any], argv: list[bytes],
              error: BaseException | None, slot: list[bytes | None]) -> None:
        try:
            awaited = coro.send(None) if error is None else coro.throw(error)
        except StopIteration as done:
            self._resumed(argv, done.value, None, slot)
        except asyncio.CancelledError:
            self._resumed(argv, None, CommandError("ERR command cancelled"), slot)
        except Exception as exc:
            self._resumed(argv, None, exc, slot)
        else:
            self._park(coro, awaited, argv, slot)

    def _resumed(self, argv: list[bytes], result: Any, exc: BaseException | None,
                 slot: list[bytes | None]) -> None:
        client = self.client
        assert client is not None
        slot[0] = (encode(result, client.resp == 3) if exc is None
                   else self._error_reply(argv, exc))
        slots = self._slots
        while slots and slots[0][0] is not None:
            self._out.append(slots.popleft()[0])  # type: ignore[arg-type]
        self._suspended -= 1
        if self._suspended:
            if self._out and not self._closed:
                self._flush()
            return
        self._busy = False
        self._overlap = True
        self._drain_backlog()

    def _drain_backlog(self) -> None:
        """Run the commands held back while one was suspended or the output was stalled."""
        client = self.client
        if self._closed or client is None:
            return
        backlog, self._backlog = self._backlog, []
        if client.close_after_reply:
            backlog = []
        self._run_commands(backlog)
        if self._out and not self._closed:
            self._flush()
        if not (self._busy or self._stalled):
            if self._pending_protocol_error is not None:
                self._fail_protocol(self._pending_protocol_error)
            if not self._write_paused:
                self._resume_reading()

    # Output --------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write the replies out at the end of this loop turn (Server.write_soon), after the
        commit barrier when the node holds writes not yet committed."""
        if not self._out or self._closed or self._waiting_commit or self._waiting_turn:
            return
        if self._pending_log:
            # Hold the replies until the commit barrier has made the writes durable enough.
            self._waiting_commit = True
            self.server.commit_soon(self)
            return
        self._waiting_turn = True
        self.server.write_soon(self)

    def write_deferred(self) -> None:
        """Called by the server at the end of the loop turn (see _flush)."""
        self._waiting_turn = False
        if self._out and not self._waiting_commit:
            if self._pending_log:  # written by another command since: commit first
                self._flush()
            else:
                self._write_out()

    def committed(self, error: str | None) -> None:
        """Called by the server's commit barrier once the commit log write finished."""
        self._waiting_commit = False
        if error is not None:
            # The writes of this batch may be lost: tell the clients instead of +OK.
            self._out = [error_bytes(error)] * _reply_count(self._out)
        self._write_out()

    def _write_out(self) -> None:
        transport = self.transport
        if transport is None or self._closed:
            self._out.clear()
            return
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        state = self.state
        state.stats.total_net_output_bytes += len(data)
        transport.write(data)
        client = self.client
        if client is not None and client.close_after_reply:
            self.close()
            return
        if state.output_limit_set:
            self.check_output_limit()

    def check_output_limit(self) -> None:
        """Redis's client-output-buffer-limit: close past the hard limit at once, or past the
        soft limit once it has lasted soft-seconds."""
        if self.transport is None or self._closed:
            return
        pending = self.transport.get_write_buffer_size()
        state = self.state
        hard, soft, soft_seconds = state.output_limit
        over_soft = bool(soft) and pending > soft
        if over_soft and self._soft_limit_since is None:
            self._soft_limit_since = state.now_s
        elif not over_soft:
            self._soft_limit_since = None
        if (hard and pending > hard) or (
            over_soft
            and self._soft_limit_since is not None
            and state.now_s - self._soft_limit_since >= soft_seconds
        ):
            state.stats.client_output_buffer_limit_disconnections += 1
            log.warning("closing client %s: output buffer of %d bytes over its limit",
                        self.client and self.client.addr, pending)
            self.close()

    # Flow control --------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._soft_limit_since = None
        if self._stalled and not self._busy:
            self._stalled = False
            self._drain_backlog()
        if not (self._busy or self._stalled or self._write_paused):
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self._closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self._closed:
            self._read_paused = False
            self.transport.resume_reading()


def _reply_count(out: list[bytes]) -> int:
    """How many replies the pieces in ``out`` make: one piece each, except a bulk reply in
    three pieces that ends with the _CRLF object."""
    return len(out) - 2 * sum(1 for piece in out if piece is _CRLF)


def _is_loopback(peer: Any) -> bool:
    if not peer or isinstance(peer, str):
        return True  # unix socket
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except ValueError:
        return False


def _format_addr(addr: Any) -> str:
    if not addr:
        return ""
    if isinstance(addr, str):
        return addr
    host, port = addr[0], addr[1]
    return f"{host}:{port}"


def _set_keepalive(sock: socket.socket, interval: int) -> None:
    """Mirror Redis's anetKeepAlive: probes start after `interval` seconds of silence."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(interval // 3, 1))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    except OSError:
        pass
