"""Server commands (respkv/commands/server_cmds.py) and the INFO text (respkv/info.py).

Layers:
- in-process: INFO's formatting helpers;
- differential against redis-server 7.0, byte for byte where the replies must match (CONFIG
  errors and formatting, CONFIG HELP, MEMORY USAGE errors, empty INFO sections, SHUTDOWN
  and BGSAVE errors);
- INFO's sections and fields on a live server, rates included; redis-py and redis-cli
  parsing INFO; SAVE/LASTSAVE; SHUTDOWN of a server of the test's own, which must keep
  every acknowledged write.
"""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

import respkv
from cluster.clock import ManualClock
from cluster.due_index import SLOT_SHIFT
from cluster.node import Node, NodeOptions
from respkv import info
from respkv.config import Config
from respkv.info import bytes_to_human, wanted_sections
from respkv.server import GC_YOUNG_THRESHOLD
from respkv.server_state import ServerState
from tests.conftest import Differential
from tests.inprocess import finish as _drive
from tests.servers import RawConnection, respkv_server
from tests.test_cmd_introspection import parse_typed, plain

# In-process ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0B"), (1023, "1023B"), (1024, "1.00K"), (1536, "1.50K"),
        (1024 * 1024 - 1, "1024.00K"), (1024 * 1024, "1.00M"), (5 * 1024**3, "5.00G"),
        (3 * 1024**4, "3.00T"), (2 * 1024**5, "2.00P"), (1024**6, f"{1024**6}B"),
    ],
)
def test_bytes_to_human(n: int, text: str) -> None:
    assert bytes_to_human(n) == text


def test_section_selection() -> None:
    default = wanted_sections([])
    assert "server" in default and "keyspace" in default and "commandstats" not in default
    assert wanted_sections([b"ALL"]) >= default | {"commandstats"}
    assert wanted_sections([b"everything"]) == wanted_sections([b"all"])
    assert wanted_sections([b"Server", b"keyspace"]) == {"server", "keyspace"}
    assert wanted_sections([b"default", b"commandstats"]) == default | {"commandstats"}
    assert wanted_sections([b"module_list"]) == {"modules"}




@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[ServerState, ManualClock]]:
    """A ServerState over a real node driven by a manual clock (no sockets)."""
    clock = ManualClock()
    node = Node.open(str(tmp_path / "node"), NodeOptions(), clock)
    yield ServerState(Config(), node), clock
    _drive(node.close())


def test_instantaneous_rate_is_a_sliding_average(local: tuple[ServerState, ManualClock]) -> None:
    state, clock = local
    figures = info.metrics(state)
    assert figures.rate("ops") == 0
    for _ in range(30):  # 1000 commands a second for 3 s
        state.stats.total_commands_processed += 100
        clock.advance(0.1)
    assert round(figures.rate("ops")) == 1000
    for _ in range(8):  # idle for half the window
        clock.advance(0.1)
    assert round(figures.rate("ops")) == 500
    clock.advance(2.0)
    assert figures.rate("ops") == 0
    text = info.generate(state, [b"stats"]).decode()
    assert "instantaneous_ops_per_sec:0\r\n" in text


def test_resetstat_zeroes_node_counters(local: tuple[ServerState, ManualClock]) -> None:
    state, clock = local
    node = state.node
    for i in range(5):
        _drive(node.put(0, b"k%d" % i, b"v", expire_at_ms=node.clock.wall_ms() + 100))
    clock.advance(1.0 + (1 << SLOT_SHIFT) / 1000)  # the expiry index's slot has passed
    node.run_expire_cycle()
    stats = parse_sections(info.generate(state, [b"stats"]).decode())["Stats"]
    assert stats["expired_keys"] == "5"
    state.stats.total_commands_processed = 42
    info.metrics(state).reset(state)
    stats = parse_sections(info.generate(state, [b"stats"]).decode())["Stats"]
    assert stats["expired_keys"] == "0"
    assert stats["total_commands_processed"] == "0"
    assert "expired_keys" in parse_sections(info.generate(state, [b"respkv"]).decode())["Respkv"]


def test_info_layout_in_process(local: tuple[ServerState, ManualClock]) -> None:
    state, _clock = local
    assert info.generate(state, [b"nosuch"]) == b""
    assert info.generate(state, [b"cluster"]) == b"# Cluster\r\ncluster_enabled:0\r\n"
    both = info.generate(state, [b"keyspace", b"cluster"])
    assert both == b"# Cluster\r\ncluster_enabled:0\r\n\r\n# Keyspace\r\n"
    _drive(state.node.put(2, b"k", b"v"))
    keyspace = info.generate(state, [b"keyspace"])
    assert keyspace == b"# Keyspace\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n"


# Helpers ---------------------------------------------------------------------------------


def info_text(conn: RawConnection, *sections: str) -> str:
    reply = plain(parse_typed(conn.call("INFO", *sections)))
    assert isinstance(reply, bytes)
    text = reply.decode()
    if text.startswith("txt:"):
        text = text[4:]
    return text


def parse_sections(text: str) -> dict[str, dict[str, str]]:
    assert "\n" not in text.replace("\r\n", ""), "INFO lines must end with CRLF"
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.split("\r\n"):
        if line.startswith("# "):
            current = sections[line[2:]] = {}
        elif line:
            assert current is not None, line
            name, _, value = line.partition(":")
            current[name] = value
    return sections


# INFO ------------------------------------------------------------------------------------

DEFAULT_ORDER = [
    "Server", "Clients", "Memory", "Persistence", "Stats", "Replication", "CPU", "Modules",
    "Respkv", "Cluster", "Keyspace",
]


def test_bare_info_has_the_default_sections_in_order(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        text = info_text(conn)
    assert re.findall(r"^# (\w+)", text, flags=re.M) == DEFAULT_ORDER
    assert "\r\n\r\n# Clients\r\n" in text
    assert text.endswith("\r\n") and not text.endswith("\r\n\r\n")


def test_info_server_fields(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        server = parse_sections(info_text(conn, "server"))["Server"]
    assert server["redis_version"] == respkv.REDIS_COMPAT_VERSION
    assert server["respkv_version"] == respkv.__version__
    assert server["redis_mode"] == "standalone"
    assert server["arch_bits"] == "64"
    assert server["tcp_port"] == str(respkv_port)
    assert int(server["process_id"]) > 0
    assert re.fullmatch(r"[0-9a-f]{40}", server["run_id"])
    assert int(server["uptime_in_seconds"]) >= 0
    assert server["uptime_in_days"] == "0"
    assert int(server["hz"]) > 0
    assert abs(int(server["server_time_usec"]) / 1e6 - time.time()) < 5
    assert server["os"].startswith("Linux ")
    assert server["executable"]
    assert "config_file" in server


def test_info_clients_stats_and_more(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn, RawConnection(respkv_port) as other:
        other.call("PING")
        sections = parse_sections(info_text(conn, "everything"))
    clients = sections["Clients"]
    assert int(clients["connected_clients"]) >= 2
    assert int(clients["maxclients"]) > 0
    memory = sections["Memory"]
    assert int(memory["used_memory"]) > 1_000_000
    assert memory["used_memory_human"].endswith(("K", "M", "G"))
    assert int(memory["used_memory_peak"]) >= int(memory["used_memory"]) // 2
    persistence = sections["Persistence"]
    assert persistence["loading"] == "0"
    assert persistence["aof_enabled"] == "1"
    assert persistence["aof_last_write_status"] == "ok"
    assert int(persistence["rdb_last_save_time"]) <= time.time() + 1
    stats = sections["Stats"]
    for name in ("total_connections_received", "total_commands_processed",
                 "instantaneous_ops_per_sec", "keyspace_hits", "keyspace_misses",
                 "expired_keys", "evicted_keys", "total_error_replies"):
        assert int(stats[name]) >= 0, name
    assert re.fullmatch(r"\d+\.\d\d", stats["instantaneous_input_kbps"])
    assert sections["Replication"]["role"] == "master"
    assert sections["Replication"]["connected_slaves"] == "0"
    assert float(sections["CPU"]["used_cpu_user"]) > 0
    assert sections["Modules"] == {}
    assert sections["Cluster"] == {"cluster_enabled": "0"}
    assert "node_id" in sections["Respkv"]
    assert "Commandstats" in sections


def test_info_keyspace(diff: Differential) -> None:
    diff.call("INFO", "keyspace")
    for key in ("a", "b", "c"):
        diff.call("SET", key, "1")
    diff.call("SELECT", "3")
    diff.call("SET", "x", "1")
    diff.call("INFO", "keyspace")
    diff.call("INFO", "KEYSPACE")
    diff.call("SET", "volatile", "1", "EX", "1000")
    with RawConnection(diff.ours.sock.getpeername()[1]) as conn:
        keyspace = parse_sections(info_text(conn, "keyspace"))["Keyspace"]
    assert keyspace == {
        "db0": "keys=3,expires=0,avg_ttl=0",
        "db3": "keys=2,expires=1,avg_ttl=0",
    }


def test_info_sections_that_must_match_redis(diff3: Differential) -> None:
    diff3.call("INFO", "nosuch")
    diff3.call("INFO", "cluster")
    diff3.call("INFO", "CLUSTER", "nosuch")
    diff3.call("INFO", "modules")
    diff3.call("INFO", "module_list", "cluster")
    diff3.call("INFO", "keyspace", "cluster")


def test_info_is_verbatim_in_resp3(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        assert conn.call("INFO", "cluster") == b"$30\r\n# Cluster\r\ncluster_enabled:0\r\n\r\n"
        conn.call("HELLO", "3")
        assert conn.call("INFO", "cluster") == b"=34\r\ntxt:# Cluster\r\ncluster_enabled:0\r\n\r\n"


def test_info_sections_in_fixed_order(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        text = info_text(conn, "keyspace", "CPU", "server")
    assert re.findall(r"^# (\w+)", text, flags=re.M) == ["Server", "CPU", "Keyspace"]


def test_instantaneous_ops_per_sec(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        info_text(conn, "stats")  # starts the sampler if nothing has yet
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            conn.pipeline([("PING",)] * 200)
        stats = parse_sections(info_text(conn, "stats"))["Stats"]
    assert int(stats["instantaneous_ops_per_sec"]) > 100
    assert float(stats["instantaneous_input_kbps"]) > 0


def test_keyspace_hits_and_misses(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        before = parse_sections(info_text(conn, "stats"))["Stats"]
        conn.call("SET", "hit", "1")
        conn.call("GET", "hit")
        conn.call("GET", "miss")
        after = parse_sections(info_text(conn, "stats"))["Stats"]
    assert int(after["keyspace_hits"]) == int(before["keyspace_hits"]) + 1
    assert int(after["keyspace_misses"]) == int(before["keyspace_misses"]) + 1
    assert int(after["total_commands_processed"]) >= int(before["total_commands_processed"]) + 4


def test_redis_py_parses_info(respkv_port: int) -> None:
    for protocol in (2, 3):
        client = redis.Redis(port=respkv_port, protocol=protocol)
        try:
            client.set("info:key", "v")
            info = client.info()
            assert info["redis_version"] == respkv.REDIS_COMPAT_VERSION
            assert info["role"] == "master"
            assert info["cluster_enabled"] == 0
            assert info["db0"]["keys"] >= 1
            assert client.info("keyspace")["db0"]["keys"] >= 1
            assert "used_memory" in client.info("memory")
            assert client.info("nosuch") == {}
        finally:
            client.close()


def test_redis_py_asyncio_info(respkv_port: int) -> None:
    async def main() -> None:
        client = redis.asyncio.Redis(port=respkv_port, protocol=3)
        try:
            info = await client.info("server")
            assert info["redis_mode"] == "standalone"
        finally:
            await client.aclose()

    asyncio.run(main())


def test_redis_cli_info(respkv_port: int) -> None:
    result = subprocess.run(["redis-cli", "-p", str(respkv_port), "info", "server"],
                            capture_output=True, timeout=20, check=True)
    assert f"redis_version:{respkv.REDIS_COMPAT_VERSION}" in result.stdout.decode()
    result = subprocess.run(["redis-cli", "-p", str(respkv_port), "info"],
                            capture_output=True, timeout=20, check=True)
    assert "# Keyspace" in result.stdout.decode()


# CONFIG ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["maxclients", "timeout", "databases", "appendfsync", "nosuch", "MAXCLIENTS",
     "proto-max-bulk-len", "requirepass", "tcp-keepalive", "protected-mode"],
)
def test_config_get_formatting(diff3: Differential, name: str) -> None:
    diff3.call("CONFIG", "GET", name)


def test_config_get_patterns(diff: Differential) -> None:
    ours = plain(parse_typed(diff.ours.call("CONFIG", "GET", "max*", "timeout", "timeout")))
    assert len(ours) % 2 == 0
    pairs = dict(zip(ours[::2], ours[1::2], strict=True))
    assert b"maxclients" in pairs and b"timeout" in pairs
    assert len(pairs) == len(ours) // 2  # no name twice
    diff.call("CONFIG", "GET", "nosuch*")


def test_config_set_and_errors(diff3: Differential) -> None:
    diff3.call("CONFIG", "SET", "timeout", "0")
    diff3.call("CONFIG", "GET", "timeout")
    diff3.call("CONFIG", "SET", "maxclients")
    diff3.call("CONFIG", "SET", "maxclients", "1", "timeout")
    diff3.call("CONFIG", "SET", "nosuch", "1")
    diff3.call("CONFIG", "SET", "timeout", "abc")
    diff3.call("CONFIG", "GET")
    diff3.call("CONFIG")
    diff3.call("CONFIG", "NOSUCH")
    diff3.call("CONFIG", "HELP")
    diff3.call("CONFIG", "HELP", "x")
    diff3.call("CONFIG", "RESETSTAT", "x")
    diff3.call("CONFIG", "REWRITE", "x")
    diff3.call("CONFIG", "REWRITE")  # neither server was started with a config file


def test_config_set_applies(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        assert conn.call("CONFIG", "SET", "timeout", "300") == b"+OK\r\n"
        assert conn.call("CONFIG", "GET", "timeout") == b"*2\r\n$7\r\ntimeout\r\n$3\r\n300\r\n"
        assert conn.call("CONFIG", "SET", "timeout", "0") == b"+OK\r\n"


def test_config_resetstat(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        for _ in range(5):
            conn.call("PING")
        conn.call("GET", "nothing")
        assert conn.call("CONFIG", "RESETSTAT") == b"+OK\r\n"
        stats = parse_sections(info_text(conn, "stats"))["Stats"]
    # Only the INFO that read the counters has run since.
    assert int(stats["total_commands_processed"]) <= 1
    assert stats["keyspace_misses"] == "0"
    assert stats["total_error_replies"] == "0"


# MEMORY, TIME ----------------------------------------------------------------------------


def test_memory_usage(diff3: Differential) -> None:
    diff3.call("SET", "k", "v")
    for args in ((), ("nokey",), ("k", "samples"), ("k", "samples", "x"), ("k", "foo", "5"),
                 ("k", "samples", "-1"), ("nokey", "samples", "x"), ("nokey", "SAMPLES", "0"),
                 ("k", "samples", "1", "extra")):
        diff3.call("MEMORY", "USAGE", *args)
    diff3.call("MEMORY")
    diff3.call("MEMORY", "NOSUCH")
    diff3.call("MEMORY", "HELP", "x")
    for args in (("k",), ("k", "SAMPLES", "0"), ("k", "samples", "5")):
        ours, _theirs = diff3.both("MEMORY", "USAGE", *args)
        assert re.fullmatch(rb":\d+\r\n", ours) and int(ours[1:-2]) >= 2


def test_memory_usage_grows_with_the_value(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("SET", "small", "x")
        conn.call("SET", "big", "x" * 10_000)
        small = plain(parse_typed(conn.call("MEMORY", "USAGE", "small")))
        big = plain(parse_typed(conn.call("MEMORY", "USAGE", "big")))
        assert big - small >= 9_000
        lines = plain(parse_typed(conn.call("MEMORY", "HELP")))
        assert lines[0].startswith(b"MEMORY <subcommand>")
        assert lines[-1] == b"    Prints this help."


def test_time(diff3: Differential) -> None:
    diff3.call("TIME", "x")
    ours = plain(parse_typed(diff3.ours.call("TIME")))
    assert len(ours) == 2
    seconds, micros = int(ours[0]), int(ours[1])
    assert abs(seconds + micros / 1e6 - time.time()) < 5
    assert 0 <= micros < 1_000_000
    assert parse_typed(diff3.ours.call("TIME"))[0] == parse_typed(diff3.theirs.call("TIME"))[0]


# Persistence -----------------------------------------------------------------------------


def test_save_family_errors(diff3: Differential) -> None:
    diff3.call("SAVE", "x")
    diff3.call("LASTSAVE", "x")
    diff3.call("BGSAVE", "foo")
    diff3.call("BGSAVE", "SCHEDULE", "x")


def test_save_and_lastsave(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        before = plain(parse_typed(conn.call("LASTSAVE")))
        assert before <= time.time() + 1
        conn.call("SET", "saved", "1")
        assert conn.call("SAVE") == b"+OK\r\n"
        after = plain(parse_typed(conn.call("LASTSAVE")))
        assert before <= after <= time.time() + 1
        assert conn.call("BGSAVE") == b"+Background saving started\r\n"
        assert conn.call("BGSAVE", "schedule") == b"+Background saving started\r\n"
        persistence = parse_sections(info_text(conn, "persistence"))["Persistence"]
        assert persistence["rdb_last_save_time"] == str(plain(parse_typed(conn.call("LASTSAVE"))))
        assert int(persistence["rdb_saves"]) >= 3


# SHUTDOWN --------------------------------------------------------------------------------


def test_shutdown_errors(diff3: Differential) -> None:
    for args in (("ABORT",), ("foo",), ("SAVE", "NOSAVE"), ("ABORT", "NOW"), ("NOW", "abort"),
                 ("nosave", "now", "force", "x")):
        diff3.call("SHUTDOWN", *args)
    diff3.call("PING")


@pytest.mark.parametrize("options", [(), ("NOSAVE",), ("SAVE", "NOW", "FORCE")])
def test_shutdown_keeps_acknowledged_writes(tmp_path: Path, options: tuple[str, ...]) -> None:
    server = respkv_server(tmp_path)
    server.start()
    try:
        with RawConnection(server.port) as conn:
            for i in range(100):
                assert conn.call("SET", f"k{i}", f"v{i}") == b"+OK\r\n"
            conn.send_raw(b"*%d\r\n$8\r\nSHUTDOWN\r\n" % (1 + len(options))
                          + b"".join(b"$%d\r\n%s\r\n" % (len(o), o.encode()) for o in options))
            assert conn.read_until_close() == b""  # no reply: the connection just closes
        assert server.proc is not None
        assert server.proc.wait(15) == 0
        server.start()
        with RawConnection(server.port) as conn:
            assert conn.call("GET", "k99") == b"$3\r\nv99\r\n"
            assert conn.call("DBSIZE") == b":100\r\n"
    finally:
        server.stop()


def test_the_server_process_tunes_the_garbage_collector() -> None:
    """The serving process runs young collections less often and freezes its start-up heap;
    tests that run nodes in-process keep the interpreter's defaults."""
    before = gc.get_threshold()
    script = ("import gc; from respkv.server import _tune_gc; _tune_gc(); "
              "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(GC_YOUNG_THRESHOLD), "True"]
    assert gc.get_threshold() == before
