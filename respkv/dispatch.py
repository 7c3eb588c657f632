"""Command dispatch: lookup, arity, authentication, MULTI queueing, then the handler.

`dispatch()` is the one entry point for a client's command. It returns either a reply value
(when the command is refused or queued) or the handler's coroutine, which the caller drives.
The order of checks is redis-server's (processCommand): existence, arity, authentication,
then transaction queueing; a refusal inside MULTI flags the transaction so EXEC aborts.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from respkv import errors
from respkv.commands.table import COMMANDS, CommandSpec
from respkv.replies import QUEUED, CommandError

if TYPE_CHECKING:
    from respkv.client import Client

# Commands that run at once inside MULTI instead of being queued (redis-server's list).
_RUN_IN_MULTI = frozenset({"exec", "discard", "multi", "watch", "quit", "reset"})


def resolve(argv: list[bytes]) -> CommandSpec:
    """The spec that will run argv, or CommandError with Redis's refusal text."""
    spec = COMMANDS.get(argv[0].lower())
    if spec is None:
        raise errors.unknown_command(argv)
    if spec.subcommands:
        if len(argv) < 2:
            raise errors.wrong_arity(spec.fullname)
        sub = spec.subcommands.get(argv[1].lower())
        if sub is None:
            raise errors.unknown_subcommand(argv)
        spec = sub
    if not spec.arity_ok(len(argv)):
        raise errors.wrong_arity(spec.fullname)
    return spec


def dispatch(client: Client, argv: list[bytes]) -> Any:
    """Run argv for client: a reply value, or a coroutine whose result is the reply."""
    try:
        spec = resolve(argv)
        if not client.authenticated and not spec.no_auth:
            raise CommandError(errors.NOAUTH)
    except CommandError:
        if client.multi is not None:
            client.multi_error = True
        raise
    client.last_command = spec.fullname
    if client.multi is not None and spec.name not in _RUN_IN_MULTI:
        client.multi.append(argv)
        return QUEUED
    return run(client, spec, argv)


def run(client: Client, spec: CommandSpec, argv: list[bytes]) -> Coroutine[Any, Any, Any]:
    """Run an already-resolved command (used by dispatch and by EXEC)."""
    server = client.server
    server.stats.total_commands_processed += 1
    if spec.is_write and server.write_error is not None:
        raise CommandError(server.write_error)
    assert spec.handler is not None, spec.fullname
    return spec.handler(client, argv)  # type: ignore[return-value]
