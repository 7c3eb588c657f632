"""The respkv-server entry point: configuration, the node, listeners, timers, shutdown.

`respkv-server [FILE] [--directive value ...]` works as redis-server does. The server is a
cluster of one node (cluster.node.Node) over the node's storage engine; the asyncio
listeners run on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from cluster.clock import LoopClock
from cluster.node import Node, NodeOptions
from engine.errors import StorageError
from respkv import __version__
from respkv.config import Config, ConfigError
from respkv.logsetup import setup_logging
from respkv.protocol import RespConnection
from respkv.server_state import ServerState

log = logging.getLogger("respkv")

FSYNC_INTERVAL_S = 1.0  # appendfsync everysec
CRON_INTERVAL_S = 1.0  # idle-client timeouts, retry of a failed commit


class Server:
    def __init__(self, config: Config, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.state = ServerState(config, node)
        self.state.shutdown_requested = self.request_shutdown
        self._listeners: list[asyncio.base_events.Server] = []
        self._commit_waiters: list[RespConnection] = []
        self._commit_scheduled = False
        self._timers: list[asyncio.TimerHandle] = []
        self._sync_running = False
        self.stopped = loop.create_future()
        self._stopping = False

    # Start and stop ------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.state.config
        if config.port:
            await self._listen(config.bind, config.port)
        self._schedule(FSYNC_INTERVAL_S, self._fsync_tick)
        self._schedule(CRON_INTERVAL_S, self._cron)
        log.info("Ready to accept connections tcp")

    async def _listen(self, binds: list[str], port: int) -> None:
        backlog = self.state.config.tcp_backlog
        for raw in binds or ["*"]:
            optional = raw.startswith("-")
            host = raw[1:] if optional else raw
            hosts: Any = None if host in ("*", "::*") else host
            try:
                listener = await self.loop.create_server(
                    lambda: RespConnection(self), hosts, port, backlog=backlog, reuse_address=True
                )
            except OSError as exc:
                if optional:
                    log.info("skipping optional bind address %s: %s", host, exc)
                    continue
                raise OSError(
                    exc.errno,
                    f"Could not create server TCP listening socket {host}:{port}: "
                    f"{exc.strerror}",
                ) from exc
            self._listeners.append(listener)
        if not self._listeners:
            raise OSError(f"Failed listening on port {port} (tcp), aborting.")

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
        try:
            await self.state.node.close()
        except StorageError as exc:
            log.error("error closing the data store: %s", exc)
        pidfile = self.state.config.pidfile
        if pidfile:
            with contextlib.suppress(OSError):
                os.unlink(pidfile)
        log.warning("respkv is now ready to exit, bye bye...")
        if not self.stopped.done():
            self.stopped.set_result(None)

    # Group commit --------------------------------------------------------------------------

    def commit_soon(self, connection: RespConnection) -> None:
        self._commit_waiters.append(connection)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            self.loop.call_soon(self._commit)

    def _commit(self) -> None:
        self._commit_scheduled = False
        error = self._try_commit()
        waiters, self._commit_waiters = self._commit_waiters, []
        for connection in waiters:
            connection.committed(error)

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
        def run() -> None:
            if self._stopping:
                return
            try:
                callback()
            finally:
                if not self._stopping:
                    self._timers.append(self.loop.call_later(delay, run))

        self._timers.append(self.loop.call_later(delay, run))
        if len(self._timers) > 64:
            self._timers = [t for t in self._timers if not t.cancelled()][-16:]

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

    def _cron(self) -> None:
        if self.state.write_error is not None:
            self._try_commit()
        timeout = self.state.config.timeout
        if timeout > 0:
            now = self.state.monotonic()
            for client in list(self.state.clients.values()):
                if now - client.last_interaction > timeout and client.multi is None:
                    log.debug("closing idle client %s", client.addr)
                    if callable(client.kill):
                        client.kill()


def _node_options(config: Config) -> NodeOptions:
    return NodeOptions(databases=config.databases, fsync=config.appendfsync)


async def serve(config: Config) -> Server:
    """Open the node and start listening; returns the running server."""
    loop = asyncio.get_running_loop()
    os.makedirs(config.dir, exist_ok=True)
    node = Node.open(
        config.dir, _node_options(config), LoopClock(loop), reporter=lambda m: log.warning("%s", m)
    )
    node.start()
    server = Server(config, node, loop)
    config.on_change("appendfsync", lambda value: node.set_fsync(value))
    try:
        await server.start()
    except BaseException:
        await node.close()
        raise
    return server


async def _main_async(config: Config) -> int:
    try:
        server = await serve(config)
    except OSError as exc:
        log.warning("%s", exc)
        return 1
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, server, signum)
    if config.pidfile:
        with open(config.pidfile, "w") as handle:
            handle.write(f"{os.getpid()}\n")
    await server.stopped
    return 0


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
