"""COMMAND and its subcommands: what the command table says about itself.

Everything here is derived from respkv/commands/table.py, so COMMAND INFO, COMMAND DOCS and
docs/commands.md cannot drift from what dispatch actually runs. Reply shapes are redis-server
7.0's (server.c: addReplyCommandInfo, addReplyCommandDocs, getKeysSubcommandImpl), RESP2 and
RESP3 alike:

- COMMAND INFO entry: [name, arity, flags (set), first key, last key, step, ACL categories
  (set), tips (set), key specs (set of maps), subcommands (array of entries, or an empty set
  for a command that has none)].
- COMMAND DOCS entry: map of summary, since, group, complexity, then `arguments` when the
  command documents any and `subcommands` (a map) for a container.

What the table does not hold is derived, never invented: flags and ACL categories are put in
Redis's canonical order, with the categories Redis implies from the flags added (write ->
@write, fast -> @fast, otherwise @slow, ...); key specs are built from (first, last, step)
with access flags from the command's write/readonly flag. Tips are not in the table, so the
tips set is always empty.

Argument docs: `arguments=` of the table decorators takes a list of dicts in the shape of
Redis's command JSON files; `arg()` below builds one. Keys used: name, type ("string",
"integer", "double", "key", "pattern", "unix-time", "pure-token", "oneof", "block"), token,
summary, since, deprecated_since, key_spec_index, flags ("optional", "multiple",
"multiple_token", space separated), arguments (for oneof and block).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from respkv import errors
from respkv.commands.table import COMMANDS, CommandSpec, container, subcommand
from respkv.glob import stringmatch
from respkv.replies import CommandError, Map, SetReply, Status

if TYPE_CHECKING:
    from respkv.client import Client

# Order in which redis-server 7 lists command flags (addReplyFlagsForCommand).
FLAG_ORDER = (
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript", "blocking",
    "loading", "stale", "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth",
    "may_replicate", "sentinel", "only_sentinel", "no_mandatory_keys", "protected",
    "no_async_loading", "no_multi", "movablekeys", "allow_busy",
)
# Order of Redis's ACL category table (ACLCommandCategories in acl.c).
ACL_ORDER = (
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
    "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking",
    "dangerous", "connection", "transaction", "scripting",
)
_FLAG_RANK = {name: rank for rank, name in enumerate(FLAG_ORDER)}
_ACL_RANK = {name: rank for rank, name in enumerate(ACL_ORDER)}
# Categories redis-server adds from a command's flags (setImplicitACLCategories).
_IMPLIED_ACL = {
    "write": ("write",),
    "readonly": ("read",),
    "admin": ("admin", "dangerous"),
    "pubsub": ("pubsub",),
    "fast": ("fast",),
    "blocking": ("blocking",),
}
# Field order of one argument in COMMAND DOCS (addReplyCommandArgList).
_ARG_FIELDS = (
    "name", "type", "display_text", "key_spec_index", "token", "summary", "since",
    "deprecated_since", "flags",
)


def arg(
    name: str,
    type_: str,
    *,
    token: str | None = None,
    flags: str = "",
    since: str | None = None,
    deprecated_since: str | None = None,
    key_spec_index: int | None = None,
    summary: str | None = None,
    args: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One argument's documentation, in the shape COMMAND DOCS reports."""
    doc: dict[str, Any] = {"name": name, "type": type_}
    if key_spec_index is not None:
        doc["key_spec_index"] = key_spec_index
    if token is not None:
        doc["token"] = token
    if summary is not None:
        doc["summary"] = summary
    if since is not None:
        doc["since"] = since
    if deprecated_since is not None:
        doc["deprecated_since"] = deprecated_since
    if flags:
        doc["flags"] = flags
    if args is not None:
        doc["arguments"] = args
    return doc


def token_arg(token: str, *, flags: str = "", since: str | None = None) -> dict[str, Any]:
    """A pure-token argument (a keyword such as NX), named as Redis names them."""
    return arg(token.lower(), "pure-token", token=token, flags=flags, since=since)


# Derived metadata ------------------------------------------------------------------------


def command_flags(spec: CommandSpec) -> list[str]:
    return sorted(spec.flags, key=lambda flag: _FLAG_RANK.get(flag, len(FLAG_ORDER)))


def acl_categories(spec: CommandSpec) -> list[str]:
    """Declared categories plus the ones Redis implies from the flags, in Redis's order."""
    names = {category.lstrip("@").lower() for category in spec.acl_categories}
    for flag in spec.flags:
        names.update(_IMPLIED_ACL.get(flag, ()))
    if "fast" not in names:
        names.add("slow")
    return sorted(names, key=lambda name: (_ACL_RANK.get(name, len(ACL_ORDER)), name))


def key_access_flags(spec: CommandSpec) -> list[str]:
    if "write" in spec.flags:
        return ["RW", "update"]
    if "readonly" in spec.flags:
        return ["RO", "access"]
    return ["RO"]


def has_keys(spec: CommandSpec) -> bool:
    return spec.first_key > 0


def key_specs(spec: CommandSpec) -> list[Map]:
    if not has_keys(spec):
        return []
    last = spec.last_key - spec.first_key if spec.last_key >= 0 else spec.last_key
    return [
        Map({
            b"flags": SetReply(Status(flag) for flag in key_access_flags(spec)),
            b"begin_search": Map({
                b"type": b"index",
                b"spec": Map({b"index": spec.first_key}),
            }),
            b"find_keys": Map({
                b"type": b"range",
                b"spec": Map({b"lastkey": last, b"keystep": spec.step, b"limit": 0}),
            }),
        })
    ]


def info_entry(spec: CommandSpec) -> list[Any]:
    """One command's COMMAND INFO reply."""
    subcommands: Any = (
        [info_entry(sub) for sub in spec.subcommands.values()]
        if spec.subcommands
        else SetReply()
    )
    return [
        spec.fullname.encode(),
        spec.arity,
        SetReply(Status(flag) for flag in command_flags(spec)),
        spec.first_key,
        spec.last_key,
        spec.step,
        SetReply(Status("@" + name) for name in acl_categories(spec)),
        SetReply(),
        SetReply(key_specs(spec)),
        subcommands,
    ]


def _argument_doc(doc: dict[str, Any]) -> Map:
    out = Map()
    for field in _ARG_FIELDS:
        if field not in doc:
            continue
        value = doc[field]
        if field == "flags":
            names = value.split() if isinstance(value, str) else list(value)
            out[b"flags"] = SetReply(Status(name) for name in names)
        elif isinstance(value, int):
            out[field.encode()] = value
        else:
            out[field.encode()] = str(value).encode()
    if "arguments" in doc:
        out[b"arguments"] = [_argument_doc(sub) for sub in doc["arguments"]]
    return out


def docs_entry(spec: CommandSpec) -> Map:
    """One command's COMMAND DOCS reply (the value under its name)."""
    out = Map({
        b"summary": spec.summary.encode(),
        b"since": spec.since.encode(),
        b"group": spec.group.encode(),
        b"complexity": spec.complexity.encode(),
    })
    if spec.arguments:
        out[b"arguments"] = [_argument_doc(doc) for doc in spec.arguments]
    if spec.subcommands:
        out[b"subcommands"] = Map(
            (sub.fullname.encode(), docs_entry(sub)) for sub in spec.subcommands.values()
        )
    return out


def all_specs() -> Iterator[CommandSpec]:
    """Every command, each container followed by its subcommands."""
    for spec in COMMANDS.values():
        yield spec
        yield from spec.subcommands.values()


def find_spec(name: bytes) -> CommandSpec | None:
    """A command by name, or a subcommand by its full name `parent|sub` (any case)."""
    parent, bar, sub = name.lower().partition(b"|")
    spec = COMMANDS.get(parent)
    if spec is None or not bar:
        return spec
    return spec.subcommands.get(sub)


def resolve_argv(argv: list[bytes]) -> CommandSpec | None:
    """The spec a full command line would run, as redis-server's lookupCommand finds it."""
    spec = COMMANDS.get(argv[0].lower())
    if spec is None or not spec.subcommands or len(argv) == 1:
        return spec
    return spec.subcommands.get(argv[1].lower())


# Commands ----------------------------------------------------------------------------------

_COMMAND = container(
    "command",
    -1,
    group="server",
    summary="Get array of Redis command details",
    since="2.8.13",
    complexity="O(N) where N is the total number of Redis commands",
    acl="@slow @connection",
)
_COMMAND.flags = ("loading", "stale")

_COMMAND_HELP = (
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all Redis commands.",
    "COUNT",
    "    Return the total number of commands in this Redis server.",
    "LIST",
    "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "GETKEYS <full-command>",
    "    Return the keys from a full Redis command.",
    "GETKEYSANDFLAGS <full-command>",
    "    Return the keys and the access flags from a full Redis command.",
    "HELP",
    "    Prints this help.",
)


def help_reply(lines: Iterable[str]) -> list[Status]:
    """A HELP reply: one simple string per line, as Redis's addReplyHelp sends it."""
    return [Status(line) for line in lines]


async def command_all(client: Client, argv: list[bytes]) -> object:
    """COMMAND with no subcommand (the container's own handler)."""
    return [info_entry(spec) for spec in COMMANDS.values()]


# COMMAND alone lists everything, so the container has a handler of its own; dispatch runs it
# when no subcommand is given.
_COMMAND.handler = command_all


@subcommand(
    _COMMAND, "count", 2, "loading stale",
    summary="Get total number of Redis commands", since="2.8.13", acl="@slow @connection",
)
async def command_count(client: Client, argv: list[bytes]) -> object:
    return len(COMMANDS)


_NAMES_ARG = [arg("command-name", "string", flags="optional multiple")]


@subcommand(
    _COMMAND, "info", -2, "loading stale",
    summary="Get array of specific Redis command details, or all when no argument is given.",
    since="2.8.13",
    complexity="O(N) where N is the number of commands to look up",
    acl="@slow @connection", arguments=_NAMES_ARG,
)
async def command_info(client: Client, argv: list[bytes]) -> object:
    if len(argv) == 2:
        return [info_entry(spec) for spec in COMMANDS.values()]
    out: list[Any] = []
    for name in argv[2:]:
        spec = find_spec(name)
        out.append(None if spec is None else info_entry(spec))
    return out


@subcommand(
    _COMMAND, "docs", -2, "loading stale",
    summary="Get array of specific Redis command documentation",
    since="7.0.0", complexity="O(N) where N is the number of commands to look up",
    acl="@slow @connection", arguments=_NAMES_ARG,
)
async def command_docs(client: Client, argv: list[bytes]) -> object:
    if len(argv) == 2:
        return Map((spec.name.encode(), docs_entry(spec)) for spec in COMMANDS.values())
    out = Map()
    for name in argv[2:]:
        spec = find_spec(name)
        if spec is not None:
            out[spec.fullname.encode()] = docs_entry(spec)
    return out


def _matches(spec: CommandSpec, kind: bytes, value: bytes) -> bool:
    if kind == b"pattern":
        return stringmatch(value, spec.fullname.encode(), nocase=True)
    if kind == b"aclcat":
        return value.decode("latin-1").lower() in acl_categories(spec)
    return False  # module: respkv loads no modules


@subcommand(
    _COMMAND, "list", -2, "loading stale",
    summary="Get an array of Redis command names", since="7.0.0",
    complexity="O(N) where N is the total number of Redis commands",
    acl="@slow @connection",
    arguments=[
        arg("filterby", "oneof", token="FILTERBY", flags="optional", args=[
            arg("module-name", "string", token="MODULE"),
            arg("category", "string", token="ACLCAT"),
            arg("pattern", "pattern", token="PATTERN"),
        ]),
    ],
)
async def command_list(client: Client, argv: list[bytes]) -> object:
    kind = b""
    value = b""
    index = 2
    while index < len(argv):
        more = len(argv) - 1 - index
        if argv[index].lower() != b"filterby" or more != 2:
            raise CommandError(errors.SYNTAX)
        kind = argv[index + 1].lower()
        if kind not in (b"module", b"aclcat", b"pattern"):
            raise CommandError(errors.SYNTAX)
        value = argv[index + 2]
        index += 3
    return [
        spec.fullname.encode()
        for spec in all_specs()
        if not kind or _matches(spec, kind, value)
    ]


def _keys_of(argv: list[bytes]) -> tuple[CommandSpec, list[int]]:
    """The spec and key positions of the command line after `COMMAND GETKEYS`."""
    target = argv[2:]
    spec = resolve_argv(target)
    if spec is None:
        raise CommandError("ERR Invalid command specified")
    if not has_keys(spec):
        raise CommandError("ERR The command has no key arguments")
    if not spec.arity_ok(len(target)):
        raise CommandError("ERR Invalid number of arguments specified for command")
    positions = list(spec.key_positions(len(target)))
    if not positions:
        raise CommandError("ERR Invalid arguments specified for command")
    return spec, positions


@subcommand(
    _COMMAND, "getkeys", -4, "loading stale",
    summary="Extract keys given a full Redis command", since="2.8.13",
    complexity="O(N) where N is the number of arguments to the command",
    acl="@slow @connection",
)
async def command_getkeys(client: Client, argv: list[bytes]) -> object:
    _spec, positions = _keys_of(argv)
    return [argv[2 + position] for position in positions]


@subcommand(
    _COMMAND, "getkeysandflags", -4, "loading stale",
    summary="Extract keys and access flags given a full Redis command",
    since="7.0.0", complexity="O(N) where N is the number of arguments to the command",
    acl="@slow @connection",
)
async def command_getkeysandflags(client: Client, argv: list[bytes]) -> object:
    spec, positions = _keys_of(argv)
    flags = key_access_flags(spec)
    return [
        [argv[2 + position], SetReply(Status(flag) for flag in flags)]
        for position in positions
    ]


@subcommand(
    _COMMAND, "help", 2, "loading stale",
    summary="Show helpful text about the different subcommands", since="5.0.0",
    acl="@slow @connection",
)
async def command_help(client: Client, argv: list[bytes]) -> object:
    return help_reply(_COMMAND_HELP)
