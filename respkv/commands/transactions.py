"""MULTI, EXEC, DISCARD, WATCH, UNWATCH with redis-server's semantics.

On a single node a transaction is isolated because its queued commands run one after the
other without suspending: no other client's command can run in between. WATCH is optimistic
locking: the node calls ServerState back on every key it writes, which marks the watching
clients dirty, and EXEC then answers a null array instead of running the queue.
"""

from __future__ import annotations

from types import CoroutineType
from typing import TYPE_CHECKING

from cluster.errors import ClusterError
from engine.errors import StorageError
from respkv import errors
from respkv.commands.table import command
from respkv.dispatch import resolve, run
from respkv.errors import cluster_error_message, storage_error_message
from respkv.replies import NULL_ARRAY, OK, CommandError, Raw, encode

if TYPE_CHECKING:
    from respkv.client import Client


# Writes coordinated by other nodes never reach this node's watch bookkeeping, so a WATCH
# here would promise a check it cannot make (issue 4: refuse rather than promise falsely).
WATCH_IN_CLUSTER = (
    "ERR WATCH is not supported in a cluster of more than one node: writes through other "
    "nodes cannot be detected here (use VCLOCK GET and VCLOCK SET ... CONTEXT instead)"
)


def discard_transaction(client: Client) -> None:
    client.multi = None
    client.multi_error = False
    client.server.unwatch_all(client)


@command(
    "multi", 1, "noscript loading stale fast allow_busy",
    group="transactions", summary="Starts a transaction.", since="1.2.0",
    acl="@fast @transaction",
)
async def multi(client: Client, argv: list[bytes]) -> object:
    if client.multi is not None:
        raise CommandError(errors.NESTED_MULTI)
    client.multi = []
    client.multi_error = False
    return OK


@command(
    "exec", 1, "noscript loading stale skip_slowlog",
    group="transactions", summary="Executes all commands in a transaction.", since="1.2.0",
    complexity="Depends on commands in the transaction", acl="@slow @transaction",
)
async def exec_(client: Client, argv: list[bytes]) -> object:
    queued = client.multi
    if queued is None:
        raise CommandError(errors.EXEC_WITHOUT_MULTI)
    if _watched_key_expired(client):
        client.dirty_cas = True
    if client.multi_error:
        discard_transaction(client)
        raise CommandError(errors.EXECABORT)
    if client.dirty_cas:
        discard_transaction(client)
        return NULL_ARRAY
    client.multi = None
    # Watches end when EXEC starts: the queued commands' own writes must not abort it.
    client.server.unwatch_all(client)
    replies: list[object] = []
    resp = client.resp
    for queued_argv in queued:
        try:
            spec = resolve(queued_argv)
            result = run(client, spec, queued_argv)
            if type(result) is CoroutineType:
                result = await result
            replies.append(result)
        except CommandError as exc:
            client.server.stats.total_error_replies += 1
            replies.append(exc)
        except StorageError as exc:
            client.server.stats.total_error_replies += 1
            replies.append(CommandError(storage_error_message(exc)))
        except ClusterError as exc:
            client.server.stats.total_error_replies += 1
            replies.append(CommandError(cluster_error_message(exc)))
        if client.resp != resp:
            _fix_protocol(replies, resp)
            resp = client.resp
    client.multi_error = False
    client.last_command = "exec"
    return replies


@command(
    "discard", 1, "noscript loading stale fast allow_busy",
    group="transactions", summary="Discards a transaction.", since="2.0.0",
    complexity="O(N), when N is the number of queued commands", acl="@fast @transaction",
)
async def discard(client: Client, argv: list[bytes]) -> object:
    if client.multi is None:
        raise CommandError(errors.DISCARD_WITHOUT_MULTI)
    discard_transaction(client)
    return OK


@command(
    "watch", -2, "noscript loading stale fast allow_busy", (1, -1, 1),
    group="transactions",
    summary="Monitors changes to keys to determine the execution of a transaction.",
    since="2.2.0", complexity="O(1) for every key.", acl="@fast @transaction",
)
async def watch(client: Client, argv: list[bytes]) -> object:
    if client.multi is not None:
        raise CommandError(errors.WATCH_IN_MULTI)
    if not client.node.local_only:
        raise CommandError(WATCH_IN_CLUSTER)
    server = client.server
    for key in argv[1:]:
        # Read before watching: reading an expired key reclaims it, and that reclaim of a
        # key already expired at WATCH time must not count as a change (as in Redis).
        entry = await client.node.get(client.db, key)
        server.watch(client, client.db, key)
        if entry is not None and entry.expire_at_ms:
            client.watch_deadlines[(client.db, key)] = entry.expire_at_ms
    return OK


@command(
    "unwatch", 1, "noscript loading stale fast allow_busy",
    group="transactions", summary="Forgets about watched keys of a transaction.",
    since="2.2.0", acl="@fast @transaction",
)
async def unwatch(client: Client, argv: list[bytes]) -> object:
    client.server.unwatch_all(client)
    return OK


def _fix_protocol(replies: list[object], resp: int) -> None:
    """A queued HELLO changed the protocol: encode the replies before it for the protocol
    they ran under. Redis writes each reply as its command runs, so the replies after the
    HELLO (its own included) are in the new protocol and those before it in the old one."""
    for i in range(len(replies) - 1):
        replies[i] = Raw(encode(replies[i], resp == 3))


def _watched_key_expired(client: Client) -> bool:
    """Redis 7 aborts EXEC when a key that was live at WATCH time has expired since."""
    if not client.watch_deadlines:
        return False
    now = client.node.clock.wall_ms()
    return any(deadline <= now for deadline in client.watch_deadlines.values())
