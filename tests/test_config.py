"""respkv.config: redis.conf parsing, command-line options, CONFIG GET / SET / REWRITE.

Unit tests pin the exact texts; the differential tests at the end run the reference
redis-server 7.0 and check that the same inputs give the same CONFIG GET formatting, the
same CONFIG SET errors and the same fatal config-file errors (with respkv named instead).
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from respkv import __version__
from respkv.config import Config, ConfigError, split_args
from respkv.config_directives import (
    DIRECTIVES,
    BufferLimit,
    format_memory,
    memtoull,
    reference_markdown,
    sds_repr,
    string2ll,
)
from tests.servers import ROOT, RawConnection, ServerProcess, redis_server

HEAD = f"*** FATAL CONFIG FILE ERROR (respkv {__version__}) ***"
RESPKV_ONLY = {"replication-factor", "memtable-size", "block-cache-size", "compaction-throughput",
               "table-workers", "cluster-peers", "cluster-secret", "cluster-name", "datacenter",
               "rack", "num-tokens", "read-consistency", "write-consistency", "request-timeout",
               "gc-grace-seconds", "sloppy-quorum", "max-hint-window", "hint-max-count",
               "hint-max-bytes", "hinted-handoff-throttle", "seeds", "phi-convict-threshold",
               "anti-entropy-interval", "write-read", "read-repair-every", "read-speculate-ms",
               "stream-throughput", "gossip-interval", "gossip-tombstone-seconds"}


def fatal(line_number: int, line: str, reason: str) -> str:
    return f"{HEAD}\nReading the configuration file, at line {line_number}\n>>> '{line}'\n{reason}"


def write(tmp_path: Path, content: str | bytes, name: str = "respkv.conf") -> str:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def load_text(tmp_path: Path, content: str | bytes, *argv: str) -> Config:
    return Config.load([write(tmp_path, content), *argv])


def load_error(argv: list[str], stdin: bytes | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        Config.load(argv, stdin=io.BytesIO(stdin) if stdin is not None else None)
    return str(info.value)


def set_error(config: Config, *pairs: tuple[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        config.set(list(pairs))
    return str(info.value)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path, which has a ./data directory, as `make run` prepares."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    return tmp_path


# Contract ---------------------------------------------------------------------------------


def test_config_modules_do_no_asyncio() -> None:
    for name in ("config.py", "config_directives.py"):
        tree = ast.parse((ROOT / "respkv" / name).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert not imported & {"asyncio", "socket", "uvloop"}, name


def test_every_directive_has_a_typed_attribute_and_a_doc() -> None:
    annotations = Config.__annotations__
    assert sorted(annotations) == sorted(d.attr for d in DIRECTIVES)
    for directive in DIRECTIVES:
        assert directive.doc and "\n" not in directive.doc
        assert f"`{directive.name}" in reference_markdown()


def test_defaults(in_tmp: Path) -> None:
    config = Config.load([])
    assert config.port == 6379
    assert config.bind == ["127.0.0.1", "-::1"]
    assert config.dir == str(in_tmp.resolve() / "data")
    assert config.requirepass == ""
    assert config.protected_mode is True
    assert config.appendfsync == "everysec"
    assert config.appendonly is True
    assert (config.maxclients, config.timeout, config.tcp_keepalive) == (10000, 0, 300)
    assert (config.databases, config.hz, config.tcp_backlog) == (16, 10, 511)
    assert (config.loglevel, config.logfile, config.pidfile) == ("notice", "", "")
    assert config.daemonize is False
    assert config.proto_max_bulk_len == 512 * 1024 * 1024
    assert config.client_query_buffer_limit == 1024**3
    assert config.client_output_buffer_limit == {
        "normal": BufferLimit(0, 0, 0),
        "replica": BufferLimit(268435456, 67108864, 60),
        "pubsub": BufferLimit(33554432, 8388608, 60),
    }
    assert config.client_output_buffer_limit_normal_hard == 0
    assert (config.save, config.maxmemory, config.maxmemory_policy) == ("", 0, "noeviction")
    assert config.replication_factor == "1"
    assert config.config_file == ""


# sdssplitargs / sdscatrepr ------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    (b"port 6379", [b"port", b"6379"]),
    (b"  port \t 6379  ", [b"port", b"6379"]),
    (b'requirepass "a b"', [b"requirepass", b"a b"]),
    (b"requirepass 'a b'", [b"requirepass", b"a b"]),
    (b'x "\\n\\r\\t\\b\\a\\"\\\\\\q"', [b"x", b"\n\r\t\b\a\"\\q"]),
    (b'x "\\x41\\xff\\x4"', [b"x", b"A\xffx4"]),  # \\x4 is not hex: x
    (b"x 'it\\'s \\n'", [b"x", b"it's \\n"]),
    (b'x ab"c d"e', None),  # a closing quote must end the argument
    (b'x ab"c d"', [b"x", b"abc d"]),  # but may start in the middle of one
    (b'x ""', [b"x", b""]),
    (b"x ''", [b"x", b""]),
    (b'x "unterminated', None),
    (b"x 'unterminated", None),
    (b'x "a\\"', None),
    (b"x\vy", [b"x\vy"]),  # \v separates arguments only between them, as isspace() does
    (b"\vx \vy", [b"x", b"y"]),
    (b"", []),
    (b"   ", []),
])
def test_split_args(line: bytes, expected: list[bytes] | None) -> None:
    assert split_args(line) == expected


def test_sds_repr() -> None:
    assert sds_repr(b'a b"c\\\n\r\t\a\b\x00\xff~') == b'"a b\\"c\\\\\\n\\r\\t\\a\\b\\x00\\xff~"'


@given(st.lists(st.binary(), min_size=1, max_size=5))
def test_sds_repr_round_trips_through_split_args(values: list[bytes]) -> None:
    assert split_args(b" ".join(sds_repr(v) for v in values)) == values


# Value syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("1", 1), ("-1", -1), ("65535", 65535), ("9223372036854775807", 2**63 - 1),
    ("-9223372036854775808", -(2**63)), ("9223372036854775808", None), ("", None),
    ("-", None), ("-0", None), ("007", None), ("+5", None), (" 5", None), ("5 ", None),
    ("1e3", None), ("0x10", None), ("\u0661", None), ("99999999999999999999", None),
])
def test_string2ll(text: str, expected: int | None) -> None:
    assert string2ll(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("100", 100), ("1b", 1), ("1B", 1), ("1k", 1000), ("1K", 1000),
    ("1kb", 1024), ("1KB", 1024), ("1Kb", 1024), ("2m", 2_000_000), ("2mb", 2 * 1024**2),
    ("3g", 3_000_000_000), ("3gb", 3 * 1024**3), ("3GB", 3 * 1024**3), ("007", 7),
    ("", 0), ("kb", 0),  # Redis reads no digits as 0
    ("18446744073709551615", 2**64 - 1), ("99999999999999999999999", 2**64 - 1),
    ("17179869184gb", 2**64),  # Redis wraps this to 0; respkv's range checks refuse it
    ("-1", None), ("1.5mb", None), ("1x", None), (" 1", None), ("1 ", None), ("+1", None),
    ("0x10", None), ("1kib", None), ("1\u212a", None),  # KELVIN SIGN lowers to k: not ASCII
])
def test_memtoull(text: str, expected: int | None) -> None:
    assert memtoull(text) == expected


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (1000, "1000"), (1024, "1kb"), (1536, "1536"), (3 * 1024**2, "3mb"),
    (2 * 1024**3, "2gb"), (1024**3 + 1024, "1048577kb"),
])
def test_format_memory(value: int, text: str) -> None:
    assert format_memory(value) == text
    assert memtoull(text) == value


# Loading a file ------------------------------------------------------------------------------


def test_file_syntax(in_tmp: Path) -> None:
    config = load_text(in_tmp, (
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        "PORT 7000\r\n"
        "\tTimeout   5  \n"
        'requirepass "p w\\x21"\n'
        "loglevel WARNING\n"
        "appendfsync Always\n"
        "protected-mode NO\n"
    ))
    assert config.port == 7000
    assert config.timeout == 5
    assert config.requirepass == "p w!"
    assert config.loglevel == "warning"
    assert config.appendfsync == "always"
    assert config.protected_mode is False
    assert config.config_file == str(in_tmp / "respkv.conf")


def test_later_line_wins(in_tmp: Path) -> None:
    config = load_text(in_tmp, "port 7000\nport 7001\nbind 1.2.3.4\nbind 127.0.0.1 ::1\n")
    assert config.port == 7001
    assert config.bind == ["127.0.0.1", "::1"]


def test_save_lines_add_up(in_tmp: Path) -> None:
    assert load_text(in_tmp, "save 900 1\nsave 300 10\n").save == "900 1 300 10"
    assert load_text(in_tmp, 'save "900 1"\n').save == "900 1"  # one argument is re-split
    assert load_text(in_tmp, "save 900 1 300 10\n").save == "900 1 300 10"
    assert load_text(in_tmp, 'save 900 1\nsave ""\nsave 60 5\n').save == "60 5"
    assert load_text(in_tmp, "save 900 1\nsave\n").save == ""
    assert load_text(in_tmp, "save +900 01\n").save == "900 1"
    # Command-line options continue the file: they add to its save points.
    assert load_text(in_tmp, "save 900 1\n", "--save", "60", "5").save == "900 1 60 5"
    assert load_text(in_tmp, "save 900 1\n", "--save", "").save == ""


def test_bind_forms(in_tmp: Path) -> None:
    assert load_text(in_tmp, 'bind "127.0.0.1 -::1"\n').bind == ["127.0.0.1", "-::1"]
    assert load_text(in_tmp, 'bind ""\n').bind == []
    assert load_text(in_tmp, "bind\n").bind == []
    assert load_text(in_tmp, "bind * -::*\n").bind == ["*", "-::*"]


def test_client_output_buffer_limit_lines_update_their_class(in_tmp: Path) -> None:
    config = load_text(in_tmp, (
        "client-output-buffer-limit normal 1mb 512kb 10\n"
        "client-output-buffer-limit REPLICA 1g 2k 0 pubsub 0 0 0\n"
        'client-output-buffer-limit "slave 3 4 5"\n'
    ))
    assert config.client_output_buffer_limit == {
        "normal": BufferLimit(1024**2, 512 * 1024, 10),
        "replica": BufferLimit(3, 4, 5),
        "pubsub": BufferLimit(0, 0, 0),
    }
    assert config.client_output_buffer_limit_normal_hard == 1024**2


def test_memory_units_in_file(in_tmp: Path) -> None:
    config = load_text(in_tmp, "maxmemory 2GB\nproto-max-bulk-len 2m\n"
                               "client-query-buffer-limit 3mb\n")
    assert config.maxmemory == 2 * 1024**3
    assert config.proto_max_bulk_len == 2_000_000
    assert config.client_query_buffer_limit == 3 * 1024**2


def test_hz_is_clamped_like_redis(in_tmp: Path) -> None:
    assert load_text(in_tmp, "hz 0\n").hz == 1
    assert load_text(in_tmp, "hz 100000\n").hz == 500
    assert load_text(in_tmp, "hz 50\n").hz == 50


def test_dir_is_resolved_like_redis_chdir(in_tmp: Path) -> None:
    (in_tmp / "a" / "b").mkdir(parents=True)
    (in_tmp / "link").symlink_to(in_tmp / "a")
    real = in_tmp.resolve()
    assert load_text(in_tmp, "dir a\n").dir == str(real / "a")
    # Redis has chdir()ed into the first dir, so the second is relative to it.
    assert load_text(in_tmp, "dir a\ndir b\n").dir == str(real / "a" / "b")
    assert load_text(in_tmp, "dir link\n").dir == str(real / "a")  # getcwd() is physical
    assert load_text(in_tmp, f"dir {real / 'a'}\n").dir == str(real / "a")
    assert Config.load(["--dir", "a"]).dir == str(real / "a")
    # Difference from Redis: a missing directory is accepted; the server creates it.
    assert load_text(in_tmp, "dir a\ndir new/sub\n").dir == str(real / "a" / "new" / "sub")


def test_dir_errors(in_tmp: Path) -> None:
    (in_tmp / "file").write_text("")
    assert load_error([write(in_tmp, "dir file\n")]) == fatal(1, "dir file", "Not a directory")
    assert load_error([write(in_tmp, "dir file/x\n")]) == fatal(
        1, "dir file/x", "Not a directory")
    assert load_error([write(in_tmp, 'dir ""\n')]) == fatal(
        1, 'dir ""', "No such file or directory")


def test_logfile_must_open(in_tmp: Path) -> None:
    assert load_error(["--logfile", str(in_tmp / "no" / "x.log")]) == (
        f"{HEAD}\nCan't open the log file: No such file or directory")
    config = Config.load(["--logfile", "respkv.log"])
    assert config.logfile == "respkv.log"
    assert (in_tmp / "respkv.log").exists()


def test_unsupported_values_are_refused(in_tmp: Path) -> None:
    assert load_error(["--appendonly", "no"]) == fatal(2, 'appendonly "no"', (
        "respkv always keeps its commit log: appendonly must be 'yes' "
        "(appendfsync sets how often it is synced)"))
    assert load_error(["--daemonize", "yes"]) == fatal(2, 'daemonize "yes"', (
        "respkv does not fork into the background: daemonize must be 'no' "
        "(run it under a supervisor such as systemd)"))
    assert load_error([write(in_tmp, "include other.conf\n")]) == fatal(
        1, "include other.conf",
        "include is not supported by respkv: put every directive in one file "
        "(or pass it as a --name value option)")
    assert Config.load(["--appendonly", "YES", "--daemonize", "no"]).appendonly is True


# Command-line options ----------------------------------------------------------------------


def test_options_follow_the_file(in_tmp: Path) -> None:
    config = load_text(in_tmp, "port 7000\ntimeout 5\n", "--port", "7001", "--TIMEOUT", "6")
    assert (config.port, config.timeout) == (7001, 6)


def test_option_forms(in_tmp: Path) -> None:
    assert Config.load(["--bind", "127.0.0.1", "::1"]).bind == ["127.0.0.1", "::1"]
    assert Config.load(["--port 7002"]).port == 7002  # name and value in one argument
    assert Config.load(["--requirepass", "--secret"]).requirepass == "--secret"
    assert Config.load(["--requirepass", 'a "b\' \n']).requirepass == 'a "b\' \n'
    # A bare --save means `save ""`, even before another option (Redis 7.0.1+ compatibility).
    assert Config.load(["--save"]).save == ""
    config = Config.load(["--save", "--port", "7003"])
    assert (config.save, config.port) == ("", 7003)
    assert Config.load(["--save", "900", "1", "300", "10"]).save == "900 1 300 10"


def test_stdin(in_tmp: Path) -> None:
    assert Config.load(["-"], stdin=io.BytesIO(b"port 7004\n")).port == 7004
    config = Config.load([write(in_tmp, "port 7000\ntimeout 1\n"), "--timeout", "2", "-"],
                         stdin=io.BytesIO(b"port 7005\ntimeout 3\n"))
    # The order is file, stdin, then options.
    assert (config.port, config.timeout) == (7005, 2)
    assert load_error(["-", "--port", "x"], stdin=b"port 1\n") == fatal(
        3, 'port "x"', "argument couldn't be parsed into an integer")


def test_missing_config_file(in_tmp: Path) -> None:
    assert load_error(["nope.conf"]) == (
        f"Fatal error, can't open config file '{in_tmp / 'nope.conf'}': "
        "No such file or directory")


# Error texts --------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "argv", "expected"), [
    ('# c\n\nport "abc"\n', [],
     fatal(3, 'port "abc"', "argument couldn't be parsed into an integer")),
    ("port 70000\n", [], fatal(1, "port 70000", "argument must be between 0 and 65535 inclusive")),
    ("PORT x\n", [], fatal(1, "PORT x", "argument couldn't be parsed into an integer")),
    ("  \t port  x  \r\n", [], fatal(1, "port  x", "argument couldn't be parsed into an integer")),
    ("port 1 2\n", [], fatal(1, "port 1 2", "wrong number of arguments")),
    ("port\n", [], fatal(1, "port", "wrong number of arguments")),
    ("port 1 # note\n", [], fatal(1, "port 1 # note", "wrong number of arguments")),
    ("foo bar\n", [], fatal(1, "foo bar", "Bad directive or wrong number of arguments")),
    ("port 'abc\n", [], fatal(1, "port 'abc", "Unbalanced quotes in configuration line")),
    ('port "1"x\n', [], fatal(1, 'port "1"x', "Unbalanced quotes in configuration line")),
    ("protected-mode maybe\n", [],
     fatal(1, "protected-mode maybe", "argument must be 'yes' or 'no'")),
    ("appendfsync sometimes\n", [], fatal(1, "appendfsync sometimes",
     "argument(s) must be one of the following: everysec, always, no")),
    ("loglevel loud\n", [], fatal(1, "loglevel loud",
     "argument(s) must be one of the following: debug, verbose, notice, warning, nothing")),
    ("maxmemory 5x\n", [], fatal(1, "maxmemory 5x", "argument must be a memory value")),
    ("proto-max-bulk-len 1\n", [], fatal(1, "proto-max-bulk-len 1",
     "argument must be between 1048576 and 9223372036854775807 inclusive")),
    ("maxclients 0\n", [],
     fatal(1, "maxclients 0", "argument must be between 1 and 4294967295 inclusive")),
    ("timeout -1\n", [],
     fatal(1, "timeout -1", "argument must be between 0 and 2147483647 inclusive")),
    ("replication-factor 0\n", [],
     fatal(1, "replication-factor 0",
           "replication-factor: '0': the factor must be an integer 1..16")),
    ("replication-factor dc1:3 3\n", [],
     fatal(1, "replication-factor dc1:3 3",
           "replication-factor: '3' is not DC:N (a plain N must stand alone)")),
    ("cluster-peers 127.0.0.1\n", [],
     fatal(1, "cluster-peers 127.0.0.1", "'127.0.0.1' is not host:port")),
    ("read-consistency most\n", [],
     fatal(1, "read-consistency most", "invalid consistency level 'most' (expected ONE, TWO, "
           "THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM or a number)")),
    ("save 1\n", [], fatal(1, "save 1", "Invalid save parameters")),
    ("save 0 1\n", [], fatal(1, "save 0 1", "Invalid save parameters")),
    ('save "1 2" 3\n', [], fatal(1, 'save "1 2" 3', "Invalid save parameters")),
    ("client-output-buffer-limit normal 1 2\n", [], fatal(
        1, "client-output-buffer-limit normal 1 2",
        "Wrong number of arguments in buffer limit configuration.")),
    ("client-output-buffer-limit master 1 2 3\n", [], fatal(
        1, "client-output-buffer-limit master 1 2 3",
        "Invalid client class specified in buffer limit configuration.")),
    ("client-output-buffer-limit normal 1 2 -3\n", [], fatal(
        1, "client-output-buffer-limit normal 1 2 -3",
        "Error in hard, soft or soft_seconds setting in buffer limit configuration.")),
    ("bind " + " ".join(["1"] * 17) + "\n", [], fatal(
        1, "bind " + " ".join(["1"] * 17), "Too many bind addresses specified.")),
    # Options come after the file's text and a newline, values quoted by sdscatrepr:
    ("port 1\n", ["--port", 'a b\n"'],
     fatal(3, 'port "a b\\n\\""', "argument couldn't be parsed into an integer")),
    ("port 1", ["--port", "x"],  # no final newline: the options start on the next line
     fatal(2, 'port "x"', "argument couldn't be parsed into an integer")),
    ("port 1\n\n", ["--bind", "1", "--port", "x"],
     fatal(5, 'port "x"', "argument couldn't be parsed into an integer")),
    ("", ["--port", "\xe9"],
     fatal(2, 'port "\\xc3\\xa9"', "argument couldn't be parsed into an integer")),
    ("", ["--port"], fatal(2, "port", "wrong number of arguments")),
    ("", ["--nosuch", "1"],
     fatal(2, 'nosuch "1"', "Bad directive or wrong number of arguments")),
])
def test_fatal_error_texts(in_tmp: Path, content: str, argv: list[str], expected: str) -> None:
    assert load_error([write(in_tmp, content), *argv]) == expected


def test_error_without_a_file_is_on_line_2(in_tmp: Path) -> None:
    assert load_error(["--port", "abc"]) == fatal(
        2, 'port "abc"', "argument couldn't be parsed into an integer")


def test_error_line_shows_raw_bytes(in_tmp: Path) -> None:
    assert load_error([write(in_tmp, b"port \xff\n")]) == fatal(
        1, "port \\xff", "argument couldn't be parsed into an integer")


# CONFIG GET ---------------------------------------------------------------------------------


def test_get_exact_names(in_tmp: Path) -> None:
    config = Config.load(["--port", "7000"])
    assert config.get("port") == [("port", "7000")]
    assert config.get("PORT") == [("PORT", "7000")]  # answered under the name as typed
    assert config.get(b"Port") == [("Port", "7000")]
    assert config.get("nosuch") == []
    assert config.get("po\\rt") == []  # no glob character: an exact (failed) lookup
    assert config.get("n-val") == [("n-val", "1")]


def test_get_glob(in_tmp: Path) -> None:
    config = Config()
    assert config.get("p?rt") == [("port", "6379")]
    assert config.get("P*RT") == [("port", "6379")]
    assert [n for n, _ in config.get("maxmemory*")] == ["maxmemory", "maxmemory-policy"]
    assert [n for n, _ in config.get("[bd]i*")] == ["bind", "dir"]
    assert [n for n, _ in config.get("[^a-z]*")] == []
    assert [n for n, _ in config.get("*")] == [
        n for d in DIRECTIVES for n in (d.name, d.alias) if n]
    assert config.get("*-val") == [("n-val", "1")]


def test_get_many_dedupes_by_name(in_tmp: Path) -> None:
    config = Config()
    assert config.get_many(["port", "PORT", "p?rt"]) == [("port", "6379")]
    assert config.get_many(["PORT", "p*"]) == [("PORT", "6379"), ("protected-mode", "yes"),
                                               ("pidfile", ""), ("proto-max-bulk-len",
                                                                 "536870912"),
                                               ("phi-convict-threshold", "8")]
    assert config.get_many(["replication-factor", "n-val"]) == [
        ("replication-factor", "1"), ("n-val", "1")]
    assert config.get_many([]) == []


def test_get_formats(in_tmp: Path) -> None:
    config = Config.load([
        "--save", "3600 1 300 100", "--maxmemory", "1mb", "--protected-mode", "no",
        "--client-output-buffer-limit", "normal 1kb 2kb 3", "--bind", "127.0.0.1", "-::1"])
    values = dict(config.get("*"))
    assert values["save"] == "3600 1 300 100"
    assert values["maxmemory"] == "1048576"
    assert values["protected-mode"] == "no"
    assert values["bind"] == "127.0.0.1 -::1"
    assert values["client-output-buffer-limit"] == (
        "normal 1024 2048 3 slave 268435456 67108864 60 pubsub 33554432 8388608 60")
    assert values["dir"] == str(in_tmp.resolve() / "data")


# CONFIG SET ---------------------------------------------------------------------------------


def test_set_updates_typed_values(in_tmp: Path) -> None:
    config = Config()
    config.set([("timeout", "30"), (b"MAXMEMORY", b"2gb"), ("save", "900 1 300 10"),
                ("bind", "0.0.0.0 -::"), ("appendfsync", "ALWAYS"), ("requirepass", "s p"),
                ("client-output-buffer-limit", "normal 1mb 0 0"), ("hz", "1000")])
    assert config.timeout == 30
    assert config.maxmemory == 2 * 1024**3
    assert config.save == "900 1 300 10"
    assert config.bind == ["0.0.0.0", "-::"]
    assert config.appendfsync == "always"
    assert config.requirepass == "s p"
    assert config.client_output_buffer_limit_normal_hard == 1024**2
    assert config.hz == 500
    config.set([("save", ""), ("bind", ""), ("client-output-buffer-limit", "")])
    assert (config.save, config.bind) == ("", [])
    assert config.client_output_buffer_limit_normal_hard == 1024**2  # "" changes no class
    config.set([("save", "900 ")])  # strtoll reads "" as 0, as Redis does
    assert config.save == "900 0"


@pytest.mark.parametrize(("pairs", "expected"), [
    ([("foo", "bar")], "ERR Unknown option or number of arguments for CONFIG SET - 'foo'"),
    ([("port", "abc")], "ERR CONFIG SET failed (possibly related to argument 'port') - "
                        "argument couldn't be parsed into an integer"),
    # A parse failure names the directive; the checks before parsing name it as typed.
    ([("PORT", "abc")], "ERR CONFIG SET failed (possibly related to argument 'port') - "
                        "argument couldn't be parsed into an integer"),
    ([("DATABASES", "5")], "ERR CONFIG SET failed (possibly related to argument "
                           "'DATABASES') - can't set immutable config"),
    ([("n-val", "3")], "ERR CONFIG SET failed (possibly related to argument 'n-val') - "
                       "can't set immutable config"),
    ([("dir", "/tmp")], "ERR CONFIG SET failed (possibly related to argument 'dir') - "
                        "can't set protected config"),
    ([("port", "1"), ("PORT", "2")], "ERR CONFIG SET failed (possibly related to argument "
                                     "'PORT') - duplicate parameter"),
    ([("appendonly", "no")], "ERR CONFIG SET failed (possibly related to argument "
                             "'appendonly') - respkv always keeps its commit log: appendonly "
                             "must be 'yes' (appendfsync sets how often it is synced)"),
    ([("loglevel", "loud")], "ERR CONFIG SET failed (possibly related to argument "
                             "'loglevel') - argument(s) must be one of the following: debug, "
                             "verbose, notice, warning, nothing"),
    ([("save", "900  1")], "ERR CONFIG SET failed (possibly related to argument 'save') - "
                           "Invalid save parameters"),
    # Deliberate difference: Redis wraps these past 2**64-1 around and accepts them.
    ([("maxmemory", "17179869184gb")], "ERR CONFIG SET failed (possibly related to argument "
                                       "'maxmemory') - argument must be between 0 and "
                                       "18446744073709551615 inclusive"),
    ([("client-output-buffer-limit", "normal 17179869184gb 0 0")],
     "ERR CONFIG SET failed (possibly related to argument 'client-output-buffer-limit') - "
     "Error in hard, soft or soft_seconds setting in buffer limit configuration."),
    # The first problem found wins.
    ([("port", "abc"), ("databases", "1")], "ERR CONFIG SET failed (possibly related to "
                                            "argument 'databases') - can't set immutable "
                                            "config"),
    ([("foo", "1"), ("databases", "1")],
     "ERR Unknown option or number of arguments for CONFIG SET - 'foo'"),
    ([("databases", "1"), ("foo", "1")], "ERR CONFIG SET failed (possibly related to "
                                         "argument 'databases') - can't set immutable config"),
])
def test_set_errors(in_tmp: Path, pairs: list[tuple[str, str]], expected: str) -> None:
    config = Config()
    assert set_error(config, *pairs) == expected


def test_set_is_all_or_nothing(in_tmp: Path) -> None:
    config = Config()
    set_error(config, ("timeout", "5"), ("maxmemory", "1gb"), ("port", "x"))
    assert (config.timeout, config.maxmemory, config.port) == (0, 0, 6379)


def test_on_change_gets_the_typed_value_after_all_are_stored(in_tmp: Path) -> None:
    config = Config()
    seen: list[tuple[str, Any, int]] = []
    config.on_change("appendfsync", lambda v: seen.append(("appendfsync", v, config.timeout)))
    config.on_change("TIMEOUT", lambda v: seen.append(("timeout", v, config.timeout)))
    config.on_change("n-val", lambda v: seen.append(("n-val", v, 0)))
    config.set([("appendfsync", "no"), ("timeout", "9")])
    assert seen == [("appendfsync", "no", 9), ("timeout", 9, 9)]
    config.set([("appendfsync", "NO"), ("timeout", "9")])  # unchanged: no callbacks
    assert len(seen) == 2
    with pytest.raises(KeyError):
        config.on_change("nosuch", print)


def test_a_refusing_callback_rolls_everything_back(in_tmp: Path) -> None:
    config = Config()
    calls: list[tuple[str, Any]] = []

    def rebind(value: list[str]) -> None:
        calls.append(("bind", value))
        if value == ["10.9.9.9"]:
            raise ConfigError("Failed to bind to specified addresses.")

    config.on_change("timeout", lambda v: calls.append(("timeout", v)))
    config.on_change("bind", rebind)
    assert set_error(config, ("timeout", "5"), ("bind", "10.9.9.9"), ("hz", "20")) == (
        "ERR CONFIG SET failed (possibly related to argument 'bind') - "
        "Failed to bind to specified addresses.")
    assert (config.timeout, config.bind, config.hz) == (0, ["127.0.0.1", "-::1"], 10)
    # The callbacks already run hear the old values again.
    assert calls == [("timeout", 5), ("bind", ["10.9.9.9"]),
                     ("timeout", 0), ("bind", ["127.0.0.1", "-::1"])]


# CONFIG REWRITE -----------------------------------------------------------------------------


def test_rewrite_like_redis(in_tmp: Path) -> None:
    path = write(in_tmp, (
        "# my conf\n"
        "port 7000\n"
        "save 900 1\n"
        "save 300 10\n"
        "maxmemory 1mb\n"
        "maxmemory 2mb\n"
        "# comment\n"
        "bind 127.0.0.1\n"
        "requirepass \"\"\n"
    ))
    config = Config.load([path])
    config.set([("save", "60 5"), ("maxmemory", "3000000"), ("timeout", "5"),
                ("requirepass", 'a b"c'), ("client-output-buffer-limit", "normal 1mb 2 3"),
                ("appendfsync", "always"), ("protected-mode", "no")])
    config.rewrite()
    assert Path(path).read_text() == (
        "# my conf\n"
        "port 7000\n"
        "save 60 5\n"
        "\n"
        "maxmemory 3000000\n"
        "\n"
        "# comment\n"
        "bind 127.0.0.1\n"
        'requirepass "a b\\"c"\n'
        "\n"
        "# Generated by CONFIG REWRITE\n"
        "protected-mode no\n"
        "timeout 5\n"
        "appendfsync always\n"
        "client-output-buffer-limit normal 1mb 2 3\n"
    )
    again = Config.load([path])
    assert dict(again.get("*")) == dict(config.get("*"))
    # A second rewrite of an unchanged config changes nothing.
    config.rewrite()
    assert Path(path).read_text().count("# Generated by CONFIG REWRITE") == 1
    config.set([("save", ""), ("maxmemory", "0")])
    config.rewrite(path)
    text = Path(path).read_text()
    assert 'save ""\n' in text and "maxmemory 0\n" in text


def test_rewrite_multi_line_directives_and_unknown_lines(in_tmp: Path) -> None:
    config = Config()
    config.set([("save", "60 5 30 10"), ("client-output-buffer-limit", "pubsub 1 2 3"),
                ("maxmemory", "2gb")])
    text = config.rewrite_text(b"bogus line\nport 6379\nport 6380\n").decode()
    assert text == (
        "# ??? bogus line\n"
        "port 6379\n"
        "\n"
        "# Generated by CONFIG REWRITE\n"
        "save 60 5\n"
        "save 30 10\n"
        "maxmemory 2gb\n"
        "client-output-buffer-limit pubsub 1 2 3\n"
    )


def test_rewrite_errors(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config().rewrite()
    assert str(info.value) == "ERR The server is running without a config file"
    with pytest.raises(ConfigError) as info:
        Config().rewrite(str(in_tmp / "no" / "such.conf"))
    assert str(info.value) == "ERR Rewriting config file: No such file or directory"


def test_rewrite_keeps_the_file_mode(in_tmp: Path) -> None:
    path = write(in_tmp, "port 7000\n")
    os.chmod(path, 0o640)
    config = Config.load([path])
    config.set([("timeout", "1")])
    config.rewrite()
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert [p.name for p in in_tmp.iterdir() if ".tmp-" in p.name] == []


# conf/respkv.conf ---------------------------------------------------------------------------


def test_default_conf_file(in_tmp: Path) -> None:
    conf = ROOT / "conf" / "respkv.conf"
    config = Config.load([str(conf)])
    assert dict(config.get("*")) == dict(Config().get("*"))  # it spells out the defaults
    text = conf.read_text()
    for directive in DIRECTIVES:
        assert re.search(rf"^#? ?{re.escape(directive.name)} ", text, re.M), directive.name
    # Every directive line has a comment just above it saying why.
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#") and not lines[index - 1].startswith(
                "client-output-buffer-limit"):
            assert lines[index - 1].startswith("#"), line


# Differential: the reference redis-server 7.0 ------------------------------------------------


@pytest.fixture(scope="module")
def redis_ref(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A redis-server of our own: these tests CONFIG SET it, so it is not the shared one."""
    server = redis_server(tmp_path_factory.mktemp("redis-config"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ref(redis_ref: ServerProcess) -> Iterator[RawConnection]:
    conn = redis_ref.connect()
    yield conn
    conn.close()


def _parse(raw: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(raw)
    return reader.gets()


def ref_get(conn: RawConnection, *patterns: str) -> dict[str, str]:
    reply = _parse(conn.call("CONFIG", "GET", *patterns))
    return {reply[i].decode(): reply[i + 1].decode() for i in range(0, len(reply), 2)}


def ref_set(conn: RawConnection, *pairs: tuple[str, str]) -> str:
    """CONFIG SET on redis-server: "OK" or the full error text."""
    raw = conn.call("CONFIG", "SET", *[part for pair in pairs for part in pair])
    assert raw.endswith(b"\r\n")
    return raw[1:-2].decode()


def test_shared_directives_exist_in_redis(ref: RawConnection) -> None:
    for directive in DIRECTIVES:
        if directive.name not in RESPKV_ONLY:
            assert directive.name in ref_get(ref, directive.name), directive.name


@pytest.mark.parametrize(("name", "value"), [
    ("timeout", "17"), ("tcp-keepalive", "60"), ("maxclients", "1000"),
    ("maxmemory", "1gb"), ("maxmemory", "3KB"), ("maxmemory", "1k"), ("maxmemory", ""),
    ("maxmemory", "99999999999999999999999"),
    ("maxmemory-policy", "ALLKEYS-LRU"), ("appendfsync", "Always"),
    ("protected-mode", "No"), ("protected-mode", "YES"), ("loglevel", "WARNING"),
    ("hz", "1000"), ("hz", "0"), ("hz", "25"),
    ("proto-max-bulk-len", "2mb"), ("client-query-buffer-limit", "2gb"),
    ("save", "900 1 300 10"), ("save", "+900 01"), ("save", "900 "), ("save", ""),
    ("client-output-buffer-limit", "normal 1kb 2MB 3 replica 1 2 3"),
    ("client-output-buffer-limit", "NORMAL 0 0 0 SLAVE 256mb 64mb 60"),
    ("client-output-buffer-limit", "pubsub 1 2 +3"), ("client-output-buffer-limit", ""),
    ("bind", "127.0.0.1 -::1"), ("requirepass", "s3 cr\"et"),
])
def test_config_get_formats_like_redis(in_tmp: Path, ref: RawConnection, name: str,
                                       value: str) -> None:
    before = ref_get(ref, name)[name]
    try:
        assert ref_set(ref, (name, value)) == "OK"
        config = Config()
        config.set([(name, value)])
        assert dict(config.get(name)) == ref_get(ref, name)
    finally:
        assert ref_set(ref, (name, before)) == "OK"


def test_config_get_immutable_values_like_redis(in_tmp: Path, ref: RawConnection,
                                                redis_ref: ServerProcess) -> None:
    config = Config.load(["--port", str(redis_ref.port), "--bind", "127.0.0.1",
                          "--dir", str(redis_ref.workdir)])
    names = ["port", "bind", "dir", "databases", "tcp-backlog", "daemonize", "logfile",
             "pidfile", "appendfsync", "maxmemory", "maxmemory-policy", "proto-max-bulk-len",
             "client-query-buffer-limit", "client-output-buffer-limit", "hz", "timeout",
             "tcp-keepalive", "maxclients", "requirepass", "protected-mode", "loglevel",
             "save"]
    assert dict(config.get_many(names)) == ref_get(ref, *names)


def test_config_get_names_like_redis(in_tmp: Path, ref: RawConnection,
                                     redis_ref: ServerProcess) -> None:
    config = Config.load(["--port", str(redis_ref.port)])
    for patterns in (["PORT", "port", "p?rt"], ["Timeout", "TIMEOUT"], ["hz", "h?"],
                     ["p?rt", "PORT"], ["nosuch"], ["databases", "DataBases"]):
        assert dict(config.get_many(patterns)) == ref_get(ref, *patterns), patterns
    # A glob finds the same shared names (redis-server has many more of its own).
    for pattern in ("maxmemory*", "*client*", "[a-d]*", "*e", "TCP-*"):
        ours = {name for name, _ in config.get(pattern)} - RESPKV_ONLY
        assert ours <= set(ref_get(ref, pattern)), pattern
        assert ours, pattern


SET_ERROR_CASES: list[list[tuple[str, str]]] = [
    [("foo", "bar")], [("port", "abc")], [("port", "70000")], [("port", "-1")],
    [("port", "007")], [("port", "+5")], [("port", " 5")], [("PORT", "abc")],
    [("port", "99999999999999999999999")], [("databases", "5")], [("DATABASES", "5")],
    [("tcp-backlog", "5")], [("logfile", "x")], [("pidfile", "x")], [("daemonize", "no")],
    [("dir", "/tmp")], [("port", "1"), ("port", "2")], [("port", "1"), ("PORT", "2")],
    [("appendfsync", "maybe")], [("protected-mode", "maybe")], [("maxmemory", "1x")],
    [("maxmemory", "-1")], [("maxmemory", "1.5mb")], [("maxmemory", " 1")],
    [("maxmemory", "0x10")], [("timeout", "-1")], [("timeout", "abc")],
    [("maxclients", "0")], [("maxclients", "abc")], [("tcp-keepalive", "-1")], [("hz", "x")],
    [("proto-max-bulk-len", "1")], [("proto-max-bulk-len", "abc")],
    [("proto-max-bulk-len", "99999999999999999999gb")], [("client-query-buffer-limit", "1")],
    [("save", "a b")], [("save", "1")], [("save", "0 1")], [("save", "900  1")],
    [("save", " 900 1")], [("maxmemory-policy", "foo")],
    [("client-output-buffer-limit", "normal 1 2")],
    [("client-output-buffer-limit", "master 1 2 3")],
    [("client-output-buffer-limit", "normal 1x 2 3")],
    [("client-output-buffer-limit", "normal 1 2 -3")],
    [("client-output-buffer-limit", "normal 1 2 4294967295")],
    [("bind", " ".join(["127.0.0.1"] * 17))],
    [("port", "1"), ("foo", "2")], [("foo", "1"), ("port", "abc")],
    [("databases", "1"), ("port", "abc")], [("port", "abc"), ("databases", "1")],
    [("foo", "1"), ("databases", "1")], [("timeout", "1"), ("port", "abc")],
    [("timeout", "1"), ("maxmemory", "2"), ("save", "x")],
]


@pytest.mark.parametrize("pairs", SET_ERROR_CASES, ids=repr)
def test_config_set_errors_like_redis(in_tmp: Path, ref: RawConnection,
                                      pairs: list[tuple[str, str]]) -> None:
    before = ref_get(ref, "*")
    theirs = ref_set(ref, *pairs)
    assert theirs != "OK"
    config = Config()
    assert set_error(config, *pairs) == theirs
    assert ref_get(ref, "*") == before  # nothing changed there either


def _redis_fatal(argv: list[str], cwd: Path) -> str:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.run([binary, *argv], cwd=cwd, capture_output=True, timeout=20)
    assert proc.returncode == 1, proc
    return proc.stderr.decode(errors="backslashreplace")


FATAL_CASES: list[tuple[str | None, list[str]]] = [
    ('# c\n\nport "abc"\n', []), ("port 70000\n", []), ("port -1\n", []), ("PORT x\n", []),
    ("  \t port  x  \r\n", []), ("port 1 2\n", []), ("port\n", []), ("port 1 # note\n", []),
    ("foo bar\n", []), ("port 'abc\n", []), ('port "1"x\n', []), ('port "a\\x4"b\n', []),
    ("protected-mode maybe\n", []), ("appendfsync sometimes\n", []),
    ("maxmemory-policy lru\n", []), ("maxmemory 5x\n", []), ("maxmemory -1\n", []),
    ("proto-max-bulk-len 1\n", []), ("client-query-buffer-limit 1k\n", []),
    ("maxclients 0\n", []), ("timeout -1\n", []), ("tcp-keepalive x\n", []),
    ("databases 0\n", []), ("tcp-backlog -1\n", []), ("hz -1\n", []),
    ("save 1\n", []), ("save 0 1\n", []), ('save "1 2" 3\n', []), ("save 900 1\nsave x\n", []),
    ("client-output-buffer-limit normal 1 2\n", []),
    ("client-output-buffer-limit master 1 2 3\n", []),
    ("client-output-buffer-limit normal 1 2 -3\n", []),
    ('client-output-buffer-limit "normal 1 2"\n', []),
    ("bind " + " ".join(["127.0.0.1"] * 17) + "\n", []),
    ("dir afile\n", []), ("dir afile/sub\n", []),
    ("timeout 1\n", ["--logfile", "/nonexistent-respkv-dir/x.log"]),
    ("port 1\n", ["--port", 'a b\n"\t\x01']), ("port 1", ["--port", "x"]),
    ("port 1\n\n", ["--bind", "1", "--port", "x"]), (None, ["--port", "abc"]),
    (None, ["--timeout", "1", "--port"]), (None, ["--nosuch", "1"]),
    (None, ["--save", "--port", "x"]), (None, ["--port 70000"]),
    (None, ["--save", "1", "2", "3"]), ("", ["--maxmemory", "\xe9"]),
]


@pytest.mark.parametrize(("content", "argv"), FATAL_CASES, ids=repr)
def test_fatal_errors_like_redis(in_tmp: Path, content: str | None, argv: list[str]) -> None:
    (in_tmp / "afile").write_text("")
    if content is not None:
        argv = [write(in_tmp, content, "bad.conf"), *argv]
    theirs = _redis_fatal(argv, in_tmp)
    ours = load_error(argv)
    theirs = re.sub(r"\(Redis [^)]*\)", f"(respkv {__version__})", theirs)
    assert "\n" + ours + "\n" == theirs


def test_missing_file_like_redis(in_tmp: Path) -> None:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.run([binary, "nope.conf"], cwd=in_tmp, capture_output=True, timeout=20)
    assert proc.returncode == 1
    logged = (proc.stdout + proc.stderr).decode().strip()
    assert logged.endswith("# " + load_error(["nope.conf"])), logged
