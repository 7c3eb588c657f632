"""State shared by every connection of one server: config, node, clients, stats, watches.

Kept apart from the asyncio server (server.py) so command handlers and tests can use it
without sockets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.node import Node
    from respkv.client import Client
    from respkv.config import Config


@dataclass(slots=True)
class Stats:
    """Counters INFO stats reports; CONFIG RESETSTAT zeroes them."""

    total_connections_received: int = 0
    total_commands_processed: int = 0
    rejected_connections: int = 0
    total_net_input_bytes: int = 0
    total_net_output_bytes: int = 0
    keyspace_hits: int = 0
    keyspace_misses: int = 0
    total_error_replies: int = 0
    unexpected_error_replies: int = 0
    client_query_buffer_limit_disconnections: int = 0
    client_output_buffer_limit_disconnections: int = 0

    def reset(self) -> None:
        fresh = Stats()
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(fresh, name))
        from respkv.commands.table import all_specs

        for spec in all_specs():
            spec.calls = 0


class ServerState:
    def __init__(self, config: Config, node: Node) -> None:
        self.config = config
        self.node = node
        self.stats = Stats()
        self.clients: dict[int, Client] = {}
        self._next_client_id = 1
        self.run_id = os.urandom(20).hex()
        self.start_time = time.time()
        self.start_monotonic = time.monotonic()
        self.tcp_port = config.port
        self.executable = ""
        self.config_file = ""
        # WATCH: (db, key) -> clients watching it; a write marks them dirty (EXEC then fails).
        self.watchers: dict[tuple[int, bytes], set[Client]] = {}
        self.shutdown_requested: Callable[[], None] | None = None
        # Wall-clock seconds, refreshed by the server's cron: idle timeouts need no better.
        self.now_s = time.monotonic()
        # client-output-buffer-limit for normal clients, cached off the hot path; any() of
        # them tells the connection whether to look at its buffer at all.
        self.output_limit = config.client_output_buffer_limit["normal"]
        self.output_limit_set = any(self.output_limit[:2])
        config.on_change("client-output-buffer-limit", self._output_limit_changed)
        # Set while the commit log cannot be written: write commands are refused with it.
        self.write_error: str | None = None
        # The node calls _key_written only while some client watches a key: every write
        # would otherwise pay for a call that finds nothing to do.
        self._listening = False

    def monotonic(self) -> float:
        return time.monotonic()

    def _output_limit_changed(self, _value: object) -> None:
        self.output_limit = self.config.client_output_buffer_limit["normal"]
        self.output_limit_set = any(self.output_limit[:2])

    def new_client_id(self) -> int:
        client_id = self._next_client_id
        self._next_client_id += 1
        return client_id

    # WATCH bookkeeping -------------------------------------------------------------------

    def watch(self, client: Client, db: int, key: bytes) -> None:
        entry = (db, key)
        if entry in client.watched:
            return
        client.watched.add(entry)
        self.watchers.setdefault(entry, set()).add(client)
        if not self._listening:
            self._listening = True
            self.node.add_listener(self._key_written)

    def unwatch_all(self, client: Client) -> None:
        for entry in client.watched:
            watching = self.watchers.get(entry)
            if watching is not None:
                watching.discard(client)
                if not watching:
                    del self.watchers[entry]
        client.watched.clear()
        client.watch_deadlines.clear()
        client.dirty_cas = False
        if self._listening and not self.watchers:
            self._listening = False
            self.node.remove_listener(self._key_written)

    def _key_written(self, db: int, key: bytes | None) -> None:
        # A flush (key None) is handled by touch_watched_before_flush, which can still see
        # which watched keys existed.
        if key is not None and self.watchers:
            watching = self.watchers.get((db, key))
            if watching:
                for client in watching:
                    client.dirty_cas = True

    async def touch_watched_before_flush(self, db: int | None) -> None:
        """FLUSHDB/FLUSHALL: as Redis, only watched keys that exist count as modified."""
        for (watched_db, key), watching in list(self.watchers.items()):
            if db is not None and watched_db != db:
                continue
            if await self.node.get(watched_db, key) is not None:
                for client in watching:
                    client.dirty_cas = True
