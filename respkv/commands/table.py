"""The command table: name -> arity, flags, key positions, docs and handler.

One table drives dispatch, the arity check, MULTI queueing, WATCH bookkeeping, `COMMAND`,
`COMMAND INFO|DOCS|COUNT|LIST` and docs/commands.md, so a command exists in exactly one place.

Conventions follow redis-server's own table:
- `arity` counts the command name: 2 means exactly `GET key`, -3 means at least `SET key value`.
- `first_key`, `last_key`, `step` locate the keys (last_key -1 = the last argument, -2 = the
  one before it); 0, 0, 0 means the command takes no key.
- a container command (CLIENT, CONFIG, COMMAND ...) has `subcommands`; its own handler is
  unused, and each subcommand's full name is `parent|sub` as Redis 7 reports it.

Rule: handlers are `async def handler(client, argv) -> reply`; in a cluster of one they never
suspend (the connection drives them with `send(None)` and only starts a Task if they do).
The hottest ones (GET, SET) are plain functions that return the reply at once when the node
is `local_only` and otherwise return a coroutine; callers accept both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from respkv.client import Client

Handler = Callable[["Client", list[bytes]], Awaitable[Any] | Any]

# Flags that change what the dispatcher does; others are reported by COMMAND only.
WRITE = "write"
READONLY = "readonly"
NO_AUTH = "no_auth"  # allowed before AUTH (Redis 7 flag name)
NO_MULTI = "no_multi"  # refused inside MULTI
ALLOW_BUSY = "allow_busy"


@dataclass(slots=True)
class CommandSpec:
    name: str
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    handler: Handler | None
    group: str
    summary: str
    since: str
    complexity: str
    acl_categories: tuple[str, ...] = ()
    arguments: list[dict[str, Any]] = field(default_factory=list)
    subcommands: dict[bytes, CommandSpec] = field(default_factory=dict)
    parent: CommandSpec | None = None
    is_write: bool = False
    is_readonly: bool = False
    no_auth: bool = False
    no_multi: bool = False
    fullname: str = ""  # "get", or "client|setname" for a subcommand
    calls: int = 0  # INFO commandstats; CONFIG RESETSTAT zeroes it

    def key_positions(self, argc: int) -> range:
        """Indexes of the key arguments in an argv of length argc."""
        if self.first_key <= 0:
            return range(0)
        last = self.last_key if self.last_key >= 0 else argc + self.last_key
        return range(self.first_key, min(last, argc - 1) + 1, max(self.step, 1))

    def keys(self, argv: list[bytes]) -> list[bytes]:
        return [argv[i] for i in self.key_positions(len(argv))]

    def arity_ok(self, argc: int) -> bool:
        return argc == self.arity if self.arity >= 0 else argc >= -self.arity


COMMANDS: dict[bytes, CommandSpec] = {}


def _make_spec(
    name: str,
    arity: int,
    flags: str,
    keys: tuple[int, int, int],
    group: str,
    summary: str,
    since: str,
    complexity: str,
    acl: str,
    arguments: list[dict[str, Any]] | None,
    handler: Handler | None,
) -> CommandSpec:
    flag_tuple = tuple(flags.split())
    return CommandSpec(
        name=name,
        arity=arity,
        flags=flag_tuple,
        first_key=keys[0],
        last_key=keys[1],
        step=keys[2],
        handler=handler,
        group=group,
        summary=summary,
        since=since,
        complexity=complexity,
        acl_categories=tuple(acl.split()),
        arguments=arguments or [],
        is_write=WRITE in flag_tuple,
        is_readonly="readonly" in flag_tuple,
        no_auth=NO_AUTH in flag_tuple,
        no_multi=NO_MULTI in flag_tuple,
        fullname=name.lower(),
    )


def command(
    name: str,
    arity: int,
    flags: str = "",
    keys: tuple[int, int, int] = (0, 0, 0),
    *,
    group: str,
    summary: str,
    since: str = "1.0.0",
    complexity: str = "O(1)",
    acl: str = "",
    arguments: list[dict[str, Any]] | None = None,
) -> Callable[[Handler], Handler]:
    """Register a top-level command handler."""

    def register(handler: Handler) -> Handler:
        key = name.lower().encode()
        if key in COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        COMMANDS[key] = _make_spec(
            name.lower(), arity, flags, keys, group, summary, since, complexity, acl,
            arguments, handler,
        )
        return handler

    return register


def container(
    name: str,
    arity: int = -2,
    *,
    group: str,
    summary: str,
    since: str = "1.0.0",
    complexity: str = "Depends on subcommand.",
    acl: str = "",
) -> CommandSpec:
    """Register a command whose real work is done by subcommands (CLIENT, CONFIG ...)."""
    key = name.lower().encode()
    if key in COMMANDS:
        raise ValueError(f"command {name!r} registered twice")
    spec = _make_spec(
        name.lower(), arity, "", (0, 0, 0), group, summary, since, complexity, acl, None, None
    )
    COMMANDS[key] = spec
    return spec


def subcommand(
    parent: CommandSpec,
    name: str,
    arity: int,
    flags: str = "",
    keys: tuple[int, int, int] = (0, 0, 0),
    *,
    summary: str,
    since: str = "1.0.0",
    complexity: str = "O(1)",
    acl: str = "",
    arguments: list[dict[str, Any]] | None = None,
) -> Callable[[Handler], Handler]:
    """Register `PARENT name`; arity counts both words, as in Redis."""

    def register(handler: Handler) -> Handler:
        key = name.lower().encode()
        if key in parent.subcommands:
            raise ValueError(f"subcommand {parent.name}|{name} registered twice")
        spec = _make_spec(
            name.lower(), arity, flags, keys, parent.group, summary, since, complexity, acl,
            arguments, handler,
        )
        spec.parent = parent
        spec.fullname = f"{parent.name}|{spec.name}"
        parent.subcommands[key] = spec
        return handler

    return register


def all_specs() -> list[CommandSpec]:
    """Every command and subcommand, in name order."""
    specs: list[CommandSpec] = []
    for spec in sorted(COMMANDS.values(), key=lambda s: s.name):
        specs.append(spec)
        specs.extend(sorted(spec.subcommands.values(), key=lambda s: s.name))
    return specs


def lookup(argv: list[bytes]) -> CommandSpec | None:
    """The spec for argv's command (not resolving subcommands)."""
    return COMMANDS.get(argv[0].lower())
