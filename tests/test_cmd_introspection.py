"""COMMAND and its subcommands (respkv/commands/introspection.py) and the docs generator.

Layers:
- in-process: the derivations (flag and ACL order, implied categories, key specs) and
  docs_gen on the real registry;
- differential against redis-server 7: byte for byte where respkv must answer exactly as
  Redis (errors, GETKEYS, HELP, entries of commands whose metadata is the same), and field by
  field for every command both servers have (name, arity, flags, keys, ACL categories);
- real clients: redis-py parsing COMMAND / COMMAND DOCS, redis-cli 7 interactive start-up
  (it sends COMMAND to build its hints).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import respkv.commands  # noqa: F401  (registers every command)
from respkv.commands import docs_gen
from respkv.commands.introspection import (
    acl_categories,
    all_specs,
    command_flags,
    find_spec,
    info_entry,
    key_specs,
)
from respkv.commands.table import COMMANDS, CommandSpec
from respkv.replies import Map, SetReply, Status, encode
from tests.conftest import Differential
from tests.servers import RawConnection

# A typed RESP reader: keeps the RESP3 type of every item so set/array/map differences show.


def parse_typed(data: bytes) -> Any:
    """One reply as nested (type_char, value) pairs; maps become lists of (key, value)."""
    value, end = _parse(data, 0)
    assert end == len(data), f"trailing bytes after reply: {data[end:]!r}"
    return value


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    kind = chr(buf[pos])
    line_end = buf.index(b"\r\n", pos)
    head = buf[pos + 1 : line_end]
    pos = line_end + 2
    if kind in "$=!":
        size = int(head)
        if size < 0:
            return (kind, None), pos
        return (kind, buf[pos : pos + size]), pos + size + 2
    if kind in "*~>":
        count = int(head)
        if count < 0:
            return (kind, None), pos
        items = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return (kind, items), pos
    if kind == "%":
        pairs = []
        for _ in range(int(head)):
            key, pos = _parse(buf, pos)
            value, pos = _parse(buf, pos)
            pairs.append((key, value))
        return (kind, pairs), pos
    if kind == ":":
        return (kind, int(head)), pos
    return (kind, head), pos


def plain(typed: Any) -> Any:
    """Typed reply -> plain Python (bytes, int, list, dict); sets become sorted lists."""
    kind, value = typed
    if kind == "%":
        return {plain(key): plain(item) for key, item in value}
    if kind == "~":
        return sorted(plain(item) for item in value)
    if kind in "*>":
        return None if value is None else [plain(item) for item in value]
    return value


def info_fields(typed_entry: Any) -> dict[str, Any]:
    """The fields of one COMMAND INFO entry that respkv promises to match Redis on."""
    kind, items = typed_entry
    assert kind == "*" and len(items) == 10, typed_entry
    return {
        "name": plain(items[0]),
        "arity": plain(items[1]),
        "flags": plain(items[2]),
        "keys": (plain(items[3]), plain(items[4]), plain(items[5])),
        "acl": plain(items[6]),
    }


# In-process ------------------------------------------------------------------------------


def _spec(flags: str = "", acl: str = "", keys: tuple[int, int, int] = (0, 0, 0)) -> CommandSpec:
    return CommandSpec(
        name="x", arity=-2, flags=tuple(flags.split()), first_key=keys[0], last_key=keys[1],
        step=keys[2], handler=None, group="string", summary="s", since="1.0.0",
        complexity="O(1)", acl_categories=tuple(acl.split()),
    )


def test_flags_are_listed_in_redis_order() -> None:
    spec = _spec("allow_busy no_auth fast stale loading noscript")
    assert command_flags(spec) == ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"]
    assert command_flags(_spec("no_multi admin")) == ["admin", "no_multi"]


def test_acl_categories_add_what_redis_implies() -> None:
    assert acl_categories(_spec("write denyoom", "@string")) == ["write", "string", "slow"]
    assert acl_categories(_spec("readonly fast", "@string")) == ["read", "string", "fast"]
    assert acl_categories(_spec("admin")) == ["admin", "slow", "dangerous"]
    assert acl_categories(_spec("", "@connection")) == ["slow", "connection"]
    assert acl_categories(_spec("fast", "@keyspace @read")) == ["keyspace", "read", "fast"]


def test_key_specs_follow_first_last_step() -> None:
    assert key_specs(_spec()) == []
    single = key_specs(_spec("readonly", keys=(1, 1, 1)))[0]
    assert single[b"begin_search"][b"spec"] == {b"index": 1}
    assert single[b"find_keys"][b"spec"] == {b"lastkey": 0, b"keystep": 1, b"limit": 0}
    assert list(single[b"flags"]) == ["RO", "access"]
    pairs = key_specs(_spec("write", keys=(1, -1, 2)))[0]
    assert pairs[b"find_keys"][b"spec"] == {b"lastkey": -1, b"keystep": 2, b"limit": 0}
    assert list(pairs[b"flags"]) == ["RW", "update"]
    fixed = key_specs(_spec("readonly", keys=(2, 4, 1)))[0]
    assert fixed[b"begin_search"][b"spec"] == {b"index": 2}
    assert fixed[b"find_keys"][b"spec"][b"lastkey"] == 2


def test_info_entry_uses_sets_in_resp3_and_arrays_in_resp2() -> None:
    spec = find_spec(b"echo")
    assert spec is not None
    resp3 = parse_typed(encode([info_entry(spec)], True))
    kinds = [item[0] for item in resp3[1][0][1]]
    assert kinds == ["$", ":", "~", ":", ":", ":", "~", "~", "~", "~"]
    resp2 = parse_typed(encode([info_entry(spec)], False))
    assert [item[0] for item in resp2[1][0][1]] == ["$", ":"] + ["*", ":", ":", ":"] + ["*"] * 4


def test_find_spec_resolves_full_names() -> None:
    assert find_spec(b"GET") is COMMANDS[b"get"]
    assert find_spec(b"client|SETNAME") is COMMANDS[b"client"].subcommands[b"setname"]
    assert find_spec(b"client|nosuch") is None
    assert find_spec(b"nosuch") is None
    assert find_spec(b"get|x") is None


def test_every_command_is_documented_in_the_registry() -> None:
    for spec in all_specs():
        assert spec.summary and spec.group and spec.since and spec.complexity, spec.fullname
        assert spec.summary.strip() == spec.summary, spec.fullname


def test_docs_gen_table_lists_every_command() -> None:
    text = docs_gen.table()
    assert text.startswith(docs_gen.BEGIN) and text.endswith(docs_gen.END)
    for spec in all_specs():
        row = f"| `{spec.fullname.upper().replace('|', ' ')}` |"
        assert row in text, spec.fullname
    assert text.count("\n| `") == sum(1 for _ in all_specs())


def test_docs_gen_render_replaces_only_the_marked_section() -> None:
    document = f"# Commands\n\nintro\n\n{docs_gen.BEGIN}\nold table\n{docs_gen.END}\n\noutro\n"
    rendered = docs_gen.render(document)
    assert rendered.startswith("# Commands\n\nintro\n\n")
    assert rendered.endswith("\n\noutro\n")
    assert "old table" not in rendered
    assert docs_gen.render(rendered) == rendered
    with pytest.raises(ValueError):
        docs_gen.render("no markers here")


def test_docs_gen_check_and_write(tmp_path: Path) -> None:
    path = tmp_path / "commands.md"
    path.write_text(f"head\n{docs_gen.BEGIN}\n{docs_gen.END}\ntail\n")
    assert docs_gen.main([str(path), "--check"]) == 1
    assert docs_gen.main([str(path)]) == 0
    assert docs_gen.main([str(path), "--check"]) == 0
    assert "| `CLIENT SETNAME` |" in path.read_text()
    assert docs_gen.main([str(tmp_path / "missing.md")]) == 2


def test_docs_commands_md_is_up_to_date() -> None:
    """docs/commands.md lists every registered command (regenerate with docs_gen)."""
    assert docs_gen.main([str(docs_gen.DEFAULT_PATH), "--check"]) == 0


# Differential ----------------------------------------------------------------------------


def test_command_count_is_the_registry_size(diff: Differential) -> None:
    ours, _theirs = diff.both("COMMAND", "COUNT")
    assert ours == b":%d\r\n" % len(COMMANDS)
    diff.call("COMMAND", "COUNT", "x")


# Commands whose whole COMMAND INFO entry is identical in Redis 7.0 (no tips, same key specs).
IDENTICAL_INFO = [
    "echo", "select", "auth", "hello", "quit", "reset", "client|setname", "client|getname",
    "client|id", "client|help", "config|get", "config|resetstat", "config|rewrite",
    "config|help", "memory|help", "command|count", "command|help", "command|getkeys",
    "save", "shutdown",
]


@pytest.mark.parametrize("name", IDENTICAL_INFO)
def test_command_info_bytes_match_redis(diff3: Differential, name: str) -> None:
    diff3.call("COMMAND", "INFO", name)


def test_command_info_unknown_and_mixed(diff3: Differential) -> None:
    diff3.call("COMMAND", "INFO", "nosuch")
    diff3.call("COMMAND", "INFO", "echo", "nosuch", "ECHO", "client|nosuch")


def test_command_info_matches_redis_for_every_shared_command(diff: Differential) -> None:
    """Name, arity, flags, key positions and ACL categories of every command Redis also has."""
    mismatches = []
    compared = 0
    for spec in all_specs():
        ours, theirs = diff.both("COMMAND", "INFO", spec.fullname)
        their_entry = parse_typed(theirs)[1][0]
        if their_entry[1] is None:
            continue  # Redis 7.0 lacks it (e.g. CLIENT SETINFO, new in 7.2)
        compared += 1
        mine, ref = info_fields(parse_typed(ours)[1][0]), info_fields(their_entry)
        if mine != ref:
            mismatches.append(f"{spec.fullname}: respkv {mine} != redis {ref}")
    assert compared >= 20
    assert not mismatches, "\n".join(mismatches)


def test_command_info_of_a_container_lists_its_subcommands(diff: Differential) -> None:
    reply = plain(parse_typed(diff.ours.call("COMMAND", "INFO", "client")))
    entry = reply[0]
    assert entry[0] == b"client" and entry[1] == -2
    names = {sub[0] for sub in entry[9]}
    assert {b"client|id", b"client|setname", b"client|kill", b"client|list"} <= names
    leaf = plain(parse_typed(diff.ours.call("COMMAND", "INFO", "echo")))[0]
    assert leaf[9] == []


def test_plain_command_lists_every_command(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        reply = plain(parse_typed(conn.call("COMMAND")))
    assert sorted(entry[0] for entry in reply) == sorted(name for name in COMMANDS)


def test_command_docs_unknown_is_an_empty_map(diff3: Differential) -> None:
    diff3.call("COMMAND", "DOCS", "nosuch")
    diff3.call("COMMAND", "DOCS", "nosuch", "client|nosuch")


def test_command_docs_shapes(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("HELLO", "3")
        ours = plain(parse_typed(conn.call("COMMAND", "DOCS", "echo", "nosuch", "client")))
    assert set(ours) == {b"echo", b"client"}
    echo = ours[b"echo"]
    assert echo[b"group"] == b"connection"
    assert echo[b"since"] == b"1.0.0"
    assert echo[b"complexity"] == b"O(1)"
    assert echo[b"arguments"] == [{b"name": b"message", b"type": b"string"}]
    client = ours[b"client"]
    assert b"arguments" not in client
    assert b"client|setname" in client[b"subcommands"]
    kill = client[b"subcommands"][b"client|kill"]
    new_format = kill[b"arguments"][0][b"arguments"][1]
    assert new_format[b"flags"] == [b"multiple"]
    assert new_format[b"arguments"][0][b"token"] == b"ID"


# Commands of this module and its siblings whose docs Redis 7.0 also has.
DOCUMENTED = [
    "ping", "echo", "quit", "reset", "hello", "auth", "select", "client", "client|id",
    "client|setname", "client|getname", "client|info", "client|list", "client|kill",
    "client|no-evict", "client|help", "config", "config|get", "config|set", "config|resetstat",
    "config|rewrite", "config|help", "info", "memory", "memory|usage", "memory|help", "time",
    "shutdown", "lastsave", "save", "bgsave", "command", "command|count", "command|info",
    "command|docs", "command|list", "command|getkeys", "command|getkeysandflags",
    "command|help",
]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_command_docs_match_redis(diff: Differential, name: str) -> None:
    diff.both("HELLO", 3)
    ours, theirs = (
        plain(parse_typed(reply))[name.encode()] for reply in diff.both("COMMAND", "DOCS", name)
    )
    for field_name in (b"summary", b"since", b"group", b"complexity", b"arguments"):
        assert ours.get(field_name) == theirs.get(field_name), field_name


def test_command_docs_full_name_and_typed_flags(diff: Differential) -> None:
    diff.both("HELLO", 3)
    typed = parse_typed(diff.ours.call("COMMAND", "DOCS", "client|list"))
    assert typed[0] == "%"
    (name, doc), = typed[1]
    assert name == ("$", b"client|list")
    fields = dict((plain(key), value) for key, value in doc[1])
    first_arg = dict((plain(k), v) for k, v in fields[b"arguments"][1][0][1])
    assert first_arg[b"flags"] == ("~", [("+", b"optional")])


def test_command_docs_of_everything(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("HELLO", "3")
        ours = plain(parse_typed(conn.call("COMMAND", "DOCS")))
    assert set(ours) == {name for name in COMMANDS}
    for name, doc in ours.items():
        assert {b"summary", b"since", b"group", b"complexity"} <= set(doc), name


def test_command_list(diff3: Differential) -> None:
    ours = plain(parse_typed(diff3.ours.call("COMMAND", "LIST")))
    assert sorted(ours) == sorted(spec.fullname.encode() for spec in all_specs())
    clients = plain(parse_typed(
        diff3.ours.call("COMMAND", "LIST", "FILTERBY", "pattern", "CLIENT*")
    ))
    assert sorted(clients) == sorted(
        [b"client"] + [sub.fullname.encode() for sub in COMMANDS[b"client"].subcommands.values()]
    )
    connection = plain(parse_typed(
        diff3.ours.call("COMMAND", "LIST", "filterby", "aclcat", "CONNECTION")
    ))
    assert b"ping" in connection and b"client|id" in connection and b"client" not in connection
    assert b"get" not in connection
    for args in (
        ("FILTERBY", "MODULE", "x"),
        ("FILTERBY", "ACLCAT", "nosuch"),
        ("FILTERBY", "ACLCAT", "@connection"),
        ("FILTERBY", "PATTERN", "nosuch*"),
        ("FILTERBY",),
        ("FILTERBY", "PATTERN"),
        ("FILTERBY", "PATTERN", "a", "b"),
        ("FILTERBY", "foo", "x"),
        ("foo",),
        ("FILTERBY", "PATTERN", "x", "FILTERBY"),
    ):
        diff3.call("COMMAND", "LIST", *args)


@pytest.mark.parametrize(
    "args",
    [
        ("get", "a"),
        ("GET", "a"),
        ("mset", "a", "1", "b", "2"),
        ("mset", "a", "1", "b"),
        ("set", "k", "v", "EX", "10"),
        ("memory", "usage", "k"),
        ("MEMORY", "USAGE", "k", "SAMPLES", "5"),
        ("config", "get"),
        ("config", "get", "x"),
        ("nosuch", "a"),
        ("get", "a", "b"),
        ("ping", "x"),
        ("echo", "x"),
        ("memory", "foo", "k"),
        ("client|list", "x"),
        ("client", "kill"),
        ("del", "a", "b", "c"),
        ("exists", "a"),
    ],
)
def test_command_getkeys_matches_redis(diff: Differential, args: tuple[str, ...]) -> None:
    diff.call("COMMAND", "GETKEYS", *args)


def test_command_getkeys_arity_and_flags(diff3: Differential) -> None:
    diff3.call("COMMAND", "GETKEYS")
    diff3.call("COMMAND", "GETKEYS", "get")
    diff3.call("COMMAND", "GETKEYSANDFLAGS", "get")
    diff3.call("COMMAND", "GETKEYSANDFLAGS", "get", "a")
    diff3.call("COMMAND", "GETKEYSANDFLAGS", "nosuch", "a")
    diff3.call("COMMAND", "GETKEYSANDFLAGS", "ping", "a")
    ours = plain(parse_typed(
        diff3.ours.call("COMMAND", "GETKEYSANDFLAGS", "mset", "a", "1", "b", "2")
    ))
    assert ours == [[b"a", [b"RW", b"update"]], [b"b", [b"RW", b"update"]]]


def test_command_help_and_errors(diff3: Differential) -> None:
    diff3.call("COMMAND", "HELP")
    diff3.call("COMMAND", "HELP", "x")
    diff3.call("COMMAND", "NOSUCH")
    ours = parse_typed(diff3.ours.call("COMMAND", "INFO"))
    assert len(ours[1]) == len(COMMANDS)


# Real clients ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_parses_command_and_docs(respkv_port: int, redis_port: int, protocol: int) -> None:
    ours = redis.Redis(port=respkv_port, protocol=protocol)
    theirs = redis.Redis(port=redis_port, protocol=protocol)
    try:
        table = ours.command()
        assert set(table) == {name.decode() for name in COMMANDS}
        reference = theirs.command()
        for name in ("get", "echo", "select", "config", "mset"):
            mine, ref = dict(table[name]), dict(reference[name])
            if name in ("config", "mset"):  # Redis has tips and richer key-spec flags there
                for field in ("tips", "key_specifications", "subcommands"):
                    mine.pop(field), ref.pop(field)
            assert mine == ref, name
        assert ours.command_count() == len(COMMANDS)
        assert ours.command_getkeys("MSET", "a", "1", "b", "2") == theirs.command_getkeys(
            "MSET", "a", "1", "b", "2"
        )
        docs = ours.execute_command("COMMAND DOCS", "get")  # type: ignore[no-untyped-call]
        ref_docs = theirs.execute_command("COMMAND DOCS", "get")  # type: ignore[no-untyped-call]
        assert docs and type(docs) is type(ref_docs)
        names = ours.command_list(pattern="client*")
        assert b"client|setname" in names
        assert b"ping" in ours.command_list(category="connection")
    finally:
        ours.close()
        theirs.close()


def _read_until(fd: int, needle: bytes, timeout: float = 10.0, until_eof: bool = False) -> bytes:
    """Read the pty until `needle` shows up (or, with until_eof, until the child exits)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"did not see {needle!r} in {seen[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # Linux reports the end of a pty as EIO
                chunk = b""
            if not chunk:
                if until_eof:
                    return seen
                raise AssertionError(f"redis-cli exited before {needle!r}: {seen[-500:]!r}")
            seen += chunk
    return seen


def test_redis_cli_interactive_start_up(respkv_port: int) -> None:
    """redis-cli 7 in a terminal: it loads its command hints from COMMAND, then runs commands."""
    binary = shutil.which("redis-cli")
    assert binary is not None
    pid, fd = pty.fork()
    if pid == 0:  # child: become redis-cli on the pty (a dumb terminal: no escape codes)
        os.execve(binary, [binary, "-p", str(respkv_port)], {**os.environ, "TERM": "dumb"})
    try:
        prompt = f"127.0.0.1:{respkv_port}> ".encode()
        _read_until(fd, prompt)
        os.write(fd, b"set hint:key hello\r")
        assert b"OK" in _read_until(fd, prompt)
        os.write(fd, b"get hint:key\r")
        assert b'"hello"' in _read_until(fd, prompt)
        os.write(fd, b"command count\r")
        assert b"(integer) %d" % len(COMMANDS) in _read_until(fd, prompt)
        os.write(fd, b"quit\r")
        _read_until(fd, b"\x00(never printed)", until_eof=True)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_redis_cli_no_raw_get(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("SET", "cli:key", "value")
    result = subprocess.run(
        ["redis-cli", "-p", str(respkv_port), "--no-raw", "get", "cli:key"],
        capture_output=True, timeout=20, check=True,
    )
    assert result.stdout == b'"value"\n'


def test_reply_types_used_here_encode() -> None:
    # The reply classes introspection builds on must keep their RESP3 types.
    assert encode(SetReply([Status("a")]), True) == b"~1\r\n+a\r\n"
    assert encode(Map({b"k": 1}), False) == b"*2\r\n$1\r\nk\r\n:1\r\n"
