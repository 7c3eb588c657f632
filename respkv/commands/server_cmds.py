"""Server commands: CONFIG, INFO, MEMORY, TIME, SHUTDOWN and the persistence commands.

Semantics and error texts are redis-server 7.0's (config.c, server.c, object.c, rdb.c).

Persistence differs from Redis by design: every write is in the node's commit log before it
is acknowledged, so there is no snapshot to take. SAVE and BGSAVE force the log to disk
(write it out and fsync) and answer when that is done, whatever appendfsync says; LASTSAVE
is the time of the last such save, or of the server start (when everything on disk was just
recovered). SHUTDOWN closes the node, which flushes the log, whether or not SAVE/NOSAVE is
given. BGREWRITEAOF does not exist: the engine compacts its files by itself.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from engine.errors import StorageError
from respkv import errors, info
from respkv.commands.args import parse_int
from respkv.commands.introspection import arg, help_reply, token_arg
from respkv.commands.table import command, container, subcommand
from respkv.config import ConfigError
from respkv.replies import OK, CommandError, Map, Raw, Status, Verbatim

if TYPE_CHECKING:
    from respkv.client import Client

_ADMIN_ACL = "@admin @slow @dangerous"
NO_REPLY = Raw(b"")  # SHUTDOWN answers nothing: the connection just closes


def _text(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


# CONFIG ------------------------------------------------------------------------------------

CONFIG = container(
    "config", group="server", summary="A container for server configuration commands",
    since="2.0.0", acl="@slow",
)

_CONFIG_HELP = (
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Prints this help.",
)


@subcommand(
    CONFIG, "get", -3, "admin noscript loading stale",
    summary="Get the values of configuration parameters", since="2.0.0",
    complexity="O(N) when N is the number of configuration parameters provided",
    acl=_ADMIN_ACL,
    arguments=[
        arg("parameter", "block", flags="multiple", args=[arg("parameter", "string")]),
    ],
)
async def config_get(client: Client, argv: list[bytes]) -> object:
    pairs = client.server.config.get_many(argv[2:])
    return Map((_text(name), _text(value)) for name, value in pairs)


@subcommand(
    CONFIG, "set", -4, "admin noscript loading stale",
    summary="Set configuration parameters to the given values", since="2.0.0",
    complexity="O(N) when N is the number of configuration parameters provided",
    acl=_ADMIN_ACL,
    arguments=[
        arg("parameter_value", "block", flags="multiple", args=[
            arg("parameter", "string"), arg("value", "string"),
        ]),
    ],
)
async def config_set(client: Client, argv: list[bytes]) -> object:
    if len(argv) % 2:
        raise CommandError(errors.SYNTAX)
    pairs = [(argv[index], argv[index + 1]) for index in range(2, len(argv), 2)]
    try:
        client.server.config.set(pairs)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    return OK


@subcommand(
    CONFIG, "resetstat", 2, "admin noscript loading stale",
    summary="Reset the stats returned by INFO", since="2.0.0", acl=_ADMIN_ACL,
)
async def config_resetstat(client: Client, argv: list[bytes]) -> object:
    info.metrics(client.server).reset(client.server)
    return OK


@subcommand(
    CONFIG, "rewrite", 2, "admin noscript loading stale",
    summary="Rewrite the configuration file with the in memory configuration", since="2.8.0",
    acl=_ADMIN_ACL,
)
async def config_rewrite(client: Client, argv: list[bytes]) -> object:
    try:
        client.server.config.rewrite()
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    return OK


@subcommand(
    CONFIG, "help", 2, "loading stale",
    summary="Show helpful text about the different subcommands", since="5.0.0",
    acl="@slow",
)
async def config_help(client: Client, argv: list[bytes]) -> object:
    return help_reply(_CONFIG_HELP)


# INFO, TIME --------------------------------------------------------------------------------


@command(
    "info", -1, "loading stale", group="server",
    summary="Get information and statistics about the server", since="1.0.0",
    acl="@slow @dangerous",
    arguments=[arg("section", "string", flags="optional multiple")],
)
async def info_(client: Client, argv: list[bytes]) -> object:
    return Verbatim(info.generate(client.server, argv[1:]))


@command(
    "time", 1, "loading stale fast", group="server", summary="Return the current server time",
    since="2.6.0", acl="@fast",
)
async def time_(client: Client, argv: list[bytes]) -> object:
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    return [b"%d" % seconds, b"%d" % micros]


# MEMORY ------------------------------------------------------------------------------------

MEMORY = container(
    "memory", group="server", summary="A container for memory diagnostics commands",
    since="4.0.0", acl="@slow",
)

_MEMORY_HELP = (
    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value. Nested values are",
    "    sampled up to <count> times (default: 5, 0 means sample all).",
    "HELP",
    "    Prints this help.",
)


@subcommand(
    MEMORY, "usage", -3, "readonly", (2, 2, 1),
    summary="Estimate the memory usage of a key", since="4.0.0",
    complexity="O(N) where N is the number of samples.", acl="@read @slow",
    arguments=[
        arg("key", "key", key_spec_index=0),
        arg("count", "integer", token="SAMPLES", flags="optional"),
    ],
)
async def memory_usage(client: Client, argv: list[bytes]) -> object:
    index = 3
    while index < len(argv):
        # Values are plain strings, so SAMPLES is checked but has nothing to sample.
        if argv[index].lower() == b"samples" and index + 1 < len(argv):
            if parse_int(argv[index + 1]) < 0:
                raise CommandError(errors.SYNTAX)
            index += 2
        else:
            raise CommandError(errors.SYNTAX)
    return client.node.memory_usage(client.db, argv[2])


@subcommand(
    MEMORY, "help", 2, "loading stale",
    summary="Show helpful text about the different subcommands", since="4.0.0",
    acl="@slow",
)
async def memory_help(client: Client, argv: list[bytes]) -> object:
    return help_reply(_MEMORY_HELP)


# Persistence and shutdown ------------------------------------------------------------------


def _save(client: Client) -> None:
    """Force the commit log to disk now; record the save for LASTSAVE and INFO."""
    state = client.server
    try:
        state.node.commit()
        state.node.sync()
    except StorageError as exc:
        raise CommandError(f"ERR {exc}") from None
    figures = info.metrics(state)
    figures.lastsave_s = int(time.time())
    figures.saves += 1


@command(
    "save", 1, "admin noscript no_async_loading no_multi", group="server",
    summary="Synchronously save the dataset to disk", since="1.0.0",
    complexity="O(N) where N is the total number of keys in all databases", acl=_ADMIN_ACL,
)
async def save(client: Client, argv: list[bytes]) -> object:
    _save(client)
    return OK


@command(
    "bgsave", -1, "admin noscript no_async_loading", group="server",
    summary="Asynchronously save the dataset to disk", since="1.0.0", acl=_ADMIN_ACL,
    arguments=[token_arg("SCHEDULE", flags="optional", since="3.2.2")],
)
async def bgsave(client: Client, argv: list[bytes]) -> object:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].lower() != b"schedule"):
        raise CommandError(errors.SYNTAX)
    # One fsync of the commit log: done before answering instead of in a child process.
    _save(client)
    return Status("Background saving started")


@command(
    "lastsave", 1, "loading stale fast", group="server",
    summary="Get the UNIX time stamp of the last successful save to disk",
    since="1.0.0", acl="@admin @fast @dangerous",
)
async def lastsave(client: Client, argv: list[bytes]) -> object:
    return info.metrics(client.server).lastsave_s


@command(
    "shutdown", -1, "admin noscript loading stale no_multi allow_busy", group="server",
    summary="Synchronously save the dataset to disk and then shut down the server",
    since="1.0.0",
    complexity=(
        "O(N) when saving, where N is the total number of keys in all databases when "
        "saving data, otherwise O(1)"
    ),
    acl=_ADMIN_ACL,
    arguments=[
        arg("nosave_save", "oneof", flags="optional", args=[
            token_arg("NOSAVE"), token_arg("SAVE"),
        ]),
        token_arg("NOW", flags="optional", since="7.0.0"),
        token_arg("FORCE", flags="optional", since="7.0.0"),
        token_arg("ABORT", flags="optional", since="7.0.0"),
    ],
)
async def shutdown(client: Client, argv: list[bytes]) -> object:
    options = set()
    for option in argv[1:]:
        lowered = option.lower()
        if lowered not in (b"nosave", b"save", b"now", b"force", b"abort"):
            raise CommandError(errors.SYNTAX)
        options.add(lowered)
    aborting = b"abort" in options
    if (aborting and len(options) > 1) or {b"save", b"nosave"} <= options:
        raise CommandError(errors.SYNTAX)
    if aborting:
        # Shutdown never waits for replicas here, so there is never one to abort.
        raise CommandError("ERR No shutdown in progress.")
    request = client.server.shutdown_requested
    if request is None:
        raise CommandError("ERR Errors trying to SHUTDOWN. Check logs.")
    request()
    client.close_after_reply = True
    return NO_REPLY
