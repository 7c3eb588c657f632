"""Command dispatch: lookup, arity, authentication, MULTI queueing, then the handler.

`dispatch()` is the one entry point for a client's command. It returns either a reply value
(when the command is refused or queued) or the handler's coroutine, which the caller drives.
The order of checks is redis-server's (processCommand): existence, arity, authentication,
then transaction queueing; a refusal inside MULTI flags the transaction so EXEC aborts.
"""

from __future__ import annotations

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
    argc = len(argv)
    # A container with a handler of its own (COMMAND) also runs without a subcommand.
    if spec.subcommands and (argc >= 2 or spec.handler is None):
        if argc < 2:
            raise errors.wrong_arity(spec.fullname)
        sub = spec.subcommands.get(argv[1].lower())
        if sub is None:
            raise errors.unknown_subcommand(argv)
        spec = sub
    arity = spec.arity
    if (argc != arity) if arity >= 0 else (argc < -arity):
        raise errors.wrong_arity(spec.fullname)
    return spec


# Command names as clients spell them ("GET", "get") -> spec of a command without
# subcommands: one dict lookup instead of lower() and a lookup. Bounded, since a client may
# spell a name in any mix of cases.
_SPELLINGS: dict[bytes, CommandSpec] = {}
_SPELLINGS_MAX = 4096


def _plain_spec(name: bytes) -> CommandSpec | None:
    spec = COMMANDS.get(name.lower())
    if spec is None or spec.subcommands:
        return None
    if len(_SPELLINGS) < _SPELLINGS_MAX:
        _SPELLINGS[bytes(name)] = spec
    return spec


def overlappable(client: Client, argv: list[bytes]) -> bool:
    """True for a plain read-only command outside a transaction: in a cluster it may start
    while earlier reads of the same connection still wait for their replicas (it cannot
    observe or change what they read). Writes and everything else wait their turn."""
    spec = _SPELLINGS.get(argv[0]) or _plain_spec(argv[0])
    return (spec is not None and spec.is_readonly and client.multi is None
            and client.authenticated)


def dispatch(client: Client, argv: list[bytes]) -> Any:
    """Run argv for client: a reply value, or a coroutine whose result is the reply."""
    spec = _SPELLINGS.get(argv[0]) or _plain_spec(argv[0])
    if spec is not None and client.multi is None and client.authenticated:
        # The common case, checked inline: a plain command outside a transaction; the body
        # of run() is inlined too (a Python call per command is measurable here).
        argc = len(argv)
        arity = spec.arity
        if (argc != arity) if arity >= 0 else (argc < -arity):
            if spec.name == "exec":
                raise _exec_refused(client, errors.wrong_arity(spec.fullname).message)
            raise errors.wrong_arity(spec.fullname)
        client.last_command = spec.fullname
        server = client.server
        server.stats.total_commands_processed += 1
        spec.calls += 1
        if spec.is_write and server.write_error is not None:
            raise CommandError(server.write_error)
        return spec.handler(client, argv)  # type: ignore[misc]  # plain specs have one
    try:
        spec = resolve(argv)
        if not client.authenticated and not spec.no_auth:
            raise CommandError(errors.NOAUTH)
        if client.multi is not None:
            if spec.no_multi:
                raise CommandError(errors.NOT_IN_MULTI)
            if spec.name not in _RUN_IN_MULTI or spec.parent is not None:
                client.last_command = spec.fullname
                client.multi.append(argv)
                return QUEUED
    except CommandError as exc:
        if argv[0].lower() == b"exec":
            raise _exec_refused(client, exc.message) from None
        if client.multi is not None:
            # Redis flags the transaction: EXEC will answer EXECABORT.
            client.multi_error = True
        raise
    client.last_command = spec.fullname
    return run(client, spec, argv)


def _exec_refused(client: Client, message: str) -> CommandError:
    """Redis answers a refused EXEC with EXECABORT and drops the transaction."""
    client.multi = None
    client.multi_error = False
    client.server.unwatch_all(client)
    if message.startswith("ERR "):
        message = message[4:]
    return CommandError("EXECABORT Transaction discarded because of: " + message)


def run(client: Client, spec: CommandSpec, argv: list[bytes]) -> Any:
    """Run an already-resolved command (used by dispatch and by EXEC): the reply, or a
    coroutine that produces it."""
    server = client.server
    server.stats.total_commands_processed += 1
    spec.calls += 1
    if spec.is_write and server.write_error is not None:
        raise CommandError(server.write_error)
    assert spec.handler is not None, spec.fullname
    return spec.handler(client, argv)
