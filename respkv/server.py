"""The respkv-server entry point: configuration, the node, listeners, timers, shutdown.

`respkv-server [FILE] [--directive value ...]` works as redis-server does. The server is a
cluster of one node (cluster.node.Node) over the node's storage engine; the asyncio
listeners run on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from cluster import consistency
from cluster.clock import LoopClock
from cluster.cluster_node import ClusterNode, ClusterOptions
from cluster.errors import ClusterError
from cluster.node import Node, NodeOptions
from cluster.preflist import parse_replication
from engine.errors import StorageError
from respkv import __version__
from respkv.config import Config, ConfigError
from respkv.logsetup import setup_logging
from respkv.protocol import RespConnection
from respkv.server_state import ServerState

log = logging.getLogger("respkv")

FSYNC_INTERVAL_S = 1.0  # appendfsync everysec
GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (_tune_gc: why)
CRON_INTERVAL_S = 1.0  # idle-client timeouts, retry of a failed commit
CLOCK_TICK_S = 0.1  # resolution of the cached clock used for client idle times


class Server:
    def __init__(self, config: Config, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.state = ServerState(config, node)
        self.state.shutdown_requested = self.request_shutdown
        self._listeners: list[asyncio.base_events.Server] = []
        self.connections: set[RespConnection] = set()
        self._commit_waiters: list[RespConnection] = []
        self._write_waiters: list[RespConnection] = []
        self._turn_end_scheduled = False
        self._timers: list[asyncio.TimerHandle] = []
        self._sync_running = False
        self.stopped: asyncio.Future[int] = loop.create_future()  # the exit code
        self._stopping = False

    # Start and stop ------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.state.config
        if config.port:
            await self._serve_on(_bind_sockets(config.bind, config.port, config.tcp_backlog))
        port_refused, bind_refused = (
            "Unable to listen on this port", "Failed to bind to specified addresses."
        )
        config.on_change("port", lambda _value: self._rebind(port_refused))
        config.on_change("bind", lambda _value: self._rebind(bind_refused))
        config.on_change("proto-max-bulk-len", lambda _value: self._update_parser_limits())
        config.on_change("client-query-buffer-limit", lambda _value: self._update_parser_limits())
        self._schedule(FSYNC_INTERVAL_S, self._fsync_tick)
        self._schedule(CRON_INTERVAL_S, self._cron)
        self._schedule(CLOCK_TICK_S, self._clock_tick)
        log.info("Ready to accept connections tcp")

    async def _serve_on(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            listener = await self.loop.create_server(lambda: RespConnection(self), sock=sock)
            self._listeners.append(listener)

    def _rebind(self, refusal: str) -> None:
        """CONFIG SET port/bind: listen on the new addresses, then drop the old listeners.

        The new sockets are bound before anything is closed, so a refused address leaves the
        server as it was and CONFIG SET reports it (Redis's texts)."""
        config = self.state.config
        try:
            sockets = (
                _bind_sockets(config.bind, config.port, config.tcp_backlog) if config.port else []
            )
        except OSError as exc:
            raise ConfigError(refusal) from exc
        old, self._listeners = self._listeners, []
        for listener in old:
            listener.close()
        self.state.tcp_port = config.port
        self.loop.create_task(self._serve_on(sockets))

    def _update_parser_limits(self) -> None:
        config = self.state.config
        for connection in self.connections:
            connection.parser.max_bulk_len = config.proto_max_bulk_len
            connection.parser.max_query_buffer_bytes = config.client_query_buffer_limit

    def request_shutdown(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.loop.call_soon(lambda: asyncio.ensure_future(self.shutdown()))

    async def shutdown(self) -> None:
        """Stop accepting, flush and close the node: nothing acknowledged is lost."""
        self._stopping = True
        log.warning("User requested shutdown...")
        for listener in self._listeners:
            listener.close()
        for timer in self._timers:
            timer.cancel()
        for client in list(self.state.clients.values()):
            if callable(client.kill):
                client.kill()
        exit_code = 0
        try:
            await self.state.node.close()
        except (StorageError, OSError) as exc:
            # E.g. the data directory was removed under us: writes acknowledged so far are
            # in the commit log already; say what failed and exit with an error, but exit.
            log.error("error closing the data store: %s", exc)
            exit_code = 1
        except Exception:
            log.exception("error closing the data store")
            exit_code = 1
        pidfile = self.state.config.pidfile
        if pidfile:
            with contextlib.suppress(OSError):
                os.unlink(pidfile)
        log.warning("respkv is now ready to exit, bye bye...")
        if not self.stopped.done():
            self.stopped.set_result(exit_code)

    # End of the loop turn: group commit and reply writes -------------------------------

    def commit_soon(self, connection: RespConnection) -> None:
        """connection.committed() is called at the end of this loop turn, once the commit log
        holds every write made in the turn."""
        self._commit_waiters.append(connection)
        if not self._turn_end_scheduled:
            self._turn_end_scheduled = True
            self.loop.call_soon(self._end_turn)

    def write_soon(self, connection: RespConnection) -> None:
        """connection.write_deferred() is called at the end of this loop turn.

        Replies of a turn go out together after every ready socket was read, as Redis's
        beforeSleep does: written one by one between reads, each send woke the sleeping
        client again (measured: a quarter of the server's CPU under 50 unpipelined clients
        went to those wake-ups; batched, a twentieth)."""
        self._write_waiters.append(connection)
        if not self._turn_end_scheduled:
            self._turn_end_scheduled = True
            self.loop.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        self._turn_end_scheduled = False
        # Commit first: a deferred write of a connection that also wrote must wait for it.
        if self._commit_waiters:
            error = self._try_commit()
            waiters, self._commit_waiters = self._commit_waiters, []
            for connection in waiters:
                try:
                    connection.committed(error)
                except Exception:  # one broken connection must not leave the others unanswered
                    log.exception("writing replies failed")
                    connection.close()
        if self._write_waiters:
            waiters, self._write_waiters = self._write_waiters, []
            for connection in waiters:
                try:
                    connection.write_deferred()
                except Exception:
                    log.exception("writing replies failed")
                    connection.close()

    def _try_commit(self) -> str | None:
        try:
            self.state.node.commit()
        except StorageError as exc:
            message = f"MISCONF Errors writing to the AOF file: {exc}"
            if self.state.write_error is None:
                log.warning("commit log write failed, refusing writes: %s", exc)
            self.state.write_error = message
            return message
        if self.state.write_error is not None:
            log.warning("commit log writable again, accepting writes")
            self.state.write_error = None
        return None

    # Timers --------------------------------------------------------------------------------

    def _schedule(self, delay: float, callback: Callable[[], None]) -> None:
        """Run callback every `delay` seconds until shutdown."""
        slot = len(self._timers)

        def run() -> None:
            if self._stopping:
                return
            try:
                callback()
            finally:
                if not self._stopping:
                    self._timers[slot] = self.loop.call_later(delay, run)

        self._timers.append(self.loop.call_later(delay, run))

    def _fsync_tick(self) -> None:
        if self.state.config.appendfsync != "everysec" or self._sync_running:
            return
        self._sync_running = True
        future = self.loop.run_in_executor(None, self.state.node.sync)

        def done(fut: asyncio.Future[None]) -> None:
            self._sync_running = False
            exc = fut.exception()
            if exc is not None:
                log.warning("background fsync failed: %s", exc)

        future.add_done_callback(done)

    def _clock_tick(self) -> None:
        self.state.now_s = time.monotonic()

    def _cron(self) -> None:
        if self.state.write_error is not None:
            self._try_commit()
        if self.state.output_limit_set:
            # A client that stopped reading gets no more writes to trigger the check.
            for connection in list(self.connections):
                connection.check_output_limit()
        timeout = self.state.config.timeout
        if timeout > 0:
            now = self.state.now_s
            for client in list(self.state.clients.values()):
                if now - client.last_interaction > timeout:
                    log.debug("closing idle client %s", client.addr)
                    if callable(client.kill):
                        client.kill()


def _bind_sockets(binds: list[str], port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for redis-style bind addresses ("-" prefix: skip if unavailable).

    Synchronous, so CONFIG SET can refuse an address before it changes anything."""
    sockets: list[socket.socket] = []
    try:
        for raw in binds or ["*"]:
            optional = raw.startswith("-")
            host = raw[1:] if optional else raw
            try:
                sockets.append(_listen_socket(host, port, backlog))
            except OSError as exc:
                if optional:
                    log.info("skipping optional bind address %s: %s", host, exc)
                    continue
                raise OSError(
                    exc.errno,
                    f"Could not create server TCP listening socket {host}:{port}: "
                    f"{exc.strerror}",
                ) from exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"Failed listening on port {port} (tcp), aborting.")
    return sockets


def _listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    if host in ("*", "0.0.0.0"):
        family, address = socket.AF_INET, ("0.0.0.0", port)
    elif host == "::*":
        family, address = socket.AF_INET6, ("::", port)
    else:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, address = info[0][0], info[0][4]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _node_options(config: Config) -> NodeOptions:
    clustered = bool(config.cluster_peers or config.seeds)
    return NodeOptions(databases=config.databases, fsync=config.appendfsync,
                       memtable_size_bytes=config.memtable_size,
                       block_cache_bytes=config.block_cache_size,
                       compaction_throughput_bytes_per_s=config.compaction_throughput,
                       table_workers=config.table_workers,
                       # A cluster keeps tombstones for the grace period: a replica that
                       # missed the delete must not bring the key back (DESIGN.md).
                       tombstone_grace_ms=config.gc_grace_seconds * 1000 if clustered else 0)


async def open_node(config: Config, loop: asyncio.AbstractEventLoop) -> Node | ClusterNode:
    """A standalone node, or this node of a cluster when ``cluster-peers`` names others."""
    clock = LoopClock(loop)
    report: Callable[[str], None] = lambda message: log.warning("%s", message)  # noqa: E731
    if not (config.cluster_peers or config.seeds):
        return Node.open(config.dir, _node_options(config), clock, reporter=report)
    options = cluster_options(config)
    node = await ClusterNode.open(config.dir, _node_options(config), options, clock, report)
    log.warning("node %s: peers at %s:%d, replication-factor %s, %d configured peer(s)",
                node.node_id, options.peer_host, options.peer_port, config.replication_factor,
                len(options.peers))
    config.on_change("read-consistency", lambda value: setattr(
        node, "read_level", consistency.parse(value)))
    config.on_change("write-consistency", lambda value: setattr(
        node, "write_level", consistency.parse(value)))
    return node


def cluster_options(config: Config) -> ClusterOptions:
    """The cluster settings of ``config``. REQUIRES: cluster-peers is set."""
    if not config.cluster_secret:
        raise OSError("cluster-peers or seeds is set but cluster-secret is empty: peers "
                      "authenticate each other with it, so every node needs the same secret")
    hosts = [b.lstrip("-") for b in config.bind if b.lstrip("-") not in ("*", "::*")]
    first = hosts[0] if hosts else "127.0.0.1"
    host = config.cluster_announce_ip or first
    peers = []
    for text in dict.fromkeys([*config.cluster_peers, *config.seeds]):
        peer_host, _, port = text.rpartition(":")
        peers.append((peer_host, int(port)))
    return ClusterOptions(
        peer_host=host, peer_port=config.cluster_port or config.port + 10000,
        client_host=host, client_port=config.port, peers=tuple(peers),
        secret=config.cluster_secret.encode(), cluster_name=config.cluster_name,
        datacenter=config.datacenter, rack=config.rack, num_tokens=config.num_tokens,
        replication=parse_replication(config.replication_factor),
        read_level=consistency.parse(config.read_consistency),
        write_level=consistency.parse(config.write_consistency),
        request_timeout_ms=config.request_timeout,
        sloppy_quorum=config.sloppy_quorum, max_hint_window_ms=config.max_hint_window * 1000,
        hint_max_count=config.hint_max_count, hint_max_bytes=config.hint_max_bytes,
        hint_ttl_ms=config.gc_grace_seconds * 1000,
        handoff_rate=config.hinted_handoff_throttle,
        stream_rate_bytes_per_s=config.stream_throughput,
        phi_convict_threshold=config.phi_convict_threshold,
        tombstone_s=config.gossip_tombstone_seconds,
        exchange_interval_s=config.gossip_interval / 1000,
        anti_entropy_interval_s=float(config.anti_entropy_interval),
        read_before_write=config.write_read == "quorum",
        read_repair_every=config.read_repair_every, read_speculate_ms=config.read_speculate_ms,
        listen_host=host if config.cluster_announce_ip == "" else first)


async def serve(config: Config) -> Server:
    """Open the node and start listening; returns the running server."""
    loop = asyncio.get_running_loop()
    os.makedirs(config.dir, exist_ok=True)
    node = await open_node(config, loop)
    node.start()
    server = Server(config, node, loop)
    if isinstance(node, ClusterNode):  # a decommissioned node stops once the others know
        node.lifecycle.on_left = server.request_shutdown
    config.on_change("appendfsync", lambda value: node.set_fsync(value))
    config.on_change("memtable-size", lambda value: node.tune_engine(memtable_size_bytes=value))
    config.on_change("block-cache-size", lambda value: node.tune_engine(block_cache_bytes=value))
    config.on_change("compaction-throughput",
                     lambda value: node.tune_engine(compaction_throughput_bytes_per_s=value))
    config.on_change("table-workers", lambda value: node.tune_engine(table_workers=value))
    try:
        await server.start()
    except BaseException:
        await node.close()
        raise
    return server


async def _main_async(config: Config) -> int:
    try:
        server = await serve(config)
    except (OSError, ClusterError, StorageError) as exc:
        # A busy port, a damaged node.meta or cluster.state, a missing cluster-secret:
        # one clear line naming the cause, and a failed exit, as redis-server does.
        log.warning("Can't start: %s", exc)
        return 1
    _tune_gc()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, server, signum)
    if config.pidfile:
        with open(config.pidfile, "w") as handle:
            handle.write(f"{os.getpid()}\n")
    code: int = await server.stopped
    return code


def _tune_gc() -> None:
    """Set the process's cyclic garbage collector for serving (the server's process only:
    tests that run nodes in-process keep the interpreter's defaults).

    A coordinated cluster request allocates a few dozen container objects (FSMs, futures,
    closures, messages) that live for one round trip. CPython's default runs a young
    collection every 700 allocations, i.e. every few requests, and each traverses objects
    still in flight; with a larger threshold most of them have died by refcount first
    (measured: ~8% less CPU per cluster request, p99 about halved; no change on a standalone
    node, whose requests allocate little). Objects that exist once serving starts (tables,
    caches, ring) are frozen out of the older generations' scans, after a collection so that
    no garbage is frozen with them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _on_signal(server: Server, signum: int) -> None:
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
    log.warning("Received %s scheduling shutdown...", name)
    server.request_shutdown()


USAGE = """Usage: respkv-server [/path/to/respkv.conf] [options] [-]
       respkv-server - (read config from stdin)
       respkv-server -v or --version
       respkv-server -h or --help

Examples:
       respkv-server (run the server with default config)
       respkv-server conf/respkv.conf
       respkv-server --port 7777
       respkv-server conf/respkv.conf --port 7001 --dir ./data7001
"""


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-v", "--version"):
        print(f"respkv server v={__version__} redis_compat=7.2.4 bits=64")
        return
    if args and args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return
    if args and args[0] == "-":
        args = ["/dev/stdin", *args[1:]]
    try:
        config = Config.load(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(1)
    setup_logging(config.loglevel, config.logfile)
    log.warning("respkv version=%s, pid=%d, just started", __version__, os.getpid())
    started = time.monotonic()
    try:
        import uvloop

        code = uvloop.run(_main_async(config))
    except KeyboardInterrupt:
        code = 0
    log.debug("uptime %.1fs", time.monotonic() - started)
    sys.exit(code)


if __name__ == "__main__":
    main()
