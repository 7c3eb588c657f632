"""Per-connection state: what Redis keeps in its `client` struct.

The asyncio glue (protocol.py) owns the socket; this object is what command handlers see as
their first argument. It holds no I/O of its own, so handlers and tests can build one freely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.node import Node
    from respkv.server_state import ServerState


class Client:
    __slots__ = (
        "addr",
        "authenticated",
        "close_after_reply",
        "created_ms",
        "db",
        "dirty_cas",
        "fd",
        "id",
        "kill",
        "laddr",
        "last_command",
        "last_interaction",
        "lib_name",
        "lib_ver",
        "multi",
        "multi_error",
        "name",
        "node",
        "resp",
        "server",
        "watch_deadlines",
        "watched",
    )

    def __init__(
        self,
        server: ServerState,
        client_id: int,
        addr: str = "",
        laddr: str = "",
        fd: int = -1,
    ) -> None:
        # Shared server state
        self.server = server
        self.node: Node = server.node
        # Per-connection state
        self.id = client_id
        self.addr = addr
        self.laddr = laddr
        self.fd = fd
        self.created_ms = server.node.clock.wall_ms()
        self.last_interaction = server.monotonic()
        self.db = 0
        self.resp = 2
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.authenticated = not server.config.requirepass
        self.last_command = "NULL"
        # Set by QUIT, SHUTDOWN failures or CLIENT KILL: close once the pending replies are out.
        self.close_after_reply = False
        # Called by CLIENT KILL to close this connection from another one.
        self.kill: Callable[[], None] | None = None
        # Transaction state (MULTI queue is None outside a transaction)
        self.multi: list[list[bytes]] | None = None
        self.multi_error = False
        self.watched: set[tuple[int, bytes]] = set()
        # expire_at_ms of watched keys that had a TTL when watched (EXEC aborts once passed)
        self.watch_deadlines: dict[tuple[int, bytes], int] = {}
        self.dirty_cas = False

    @property
    def resp3(self) -> bool:
        return self.resp == 3
