"""The storage engine seen through a real server: engine directives (CONFIG GET/SET), the
INFO persistence figures, and a damaged table block failing only its own keys with an error
reply that names the file, while the server keeps serving every other key."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cluster.keys import PREFIX_BYTES
from engine import filenames
from engine.fs import OSFileSystem
from engine.table_reader import TableReader
from tests.servers import RawConnection, ServerProcess, respkv_server

KEYS = 3000


def key(i: int) -> bytes:
    return b"key:%05d" % i


def value(i: int) -> bytes:
    return b"value-%05d-" % i + b"x" * 90


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def info_fields(conn: RawConnection, section: str) -> dict[str, str]:
    raw = conn.call("INFO", section)
    text = raw.split(b"\r\n", 1)[1].decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def table_files(data_dir: Path) -> list[Path]:
    engine_dir = data_dir / "engine"
    return sorted(engine_dir / n for n in os.listdir(engine_dir)
                  if filenames.parse_table_name(n) is not None)


def start(workdir: Path) -> ServerProcess:
    server = respkv_server(workdir, "--memtable-size", "64kb", "--block-cache-size", "1mb")
    server.start()
    return server


def test_engine_directives_and_info_persistence(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        with server.connect() as conn:
            assert conn.call("CONFIG", "GET", "memtable-size") == (
                b"*2\r\n" + bulk(b"memtable-size") + bulk(b"65536"))
            assert conn.call("CONFIG", "GET", "compaction-throughput").endswith(
                bulk(b"67108864"))
            replies = conn.pipeline([("SET", key(i), value(i)) for i in range(KEYS)])
            assert set(replies) == {b"+OK\r\n"}
            fields = info_fields(conn, "persistence")
            assert int(fields["engine_flushes"]) >= 1, fields
            assert int(fields["engine_tables"]) >= 1
            assert int(fields["engine_disk_bytes"]) > KEYS * 100
            assert float(fields["engine_write_amplification"]) > 1.0
            assert fields["engine_corruption_errors"] == "0"
            assert fields["engine_compaction_throughput"] == str(64 * 1024 * 1024)
            for name in ("engine_write_stalls", "engine_compactions",
                         "engine_block_cache_hits", "engine_block_cache_misses"):
                assert name in fields
            assert conn.call("CONFIG", "SET", "compaction-throughput", "1mb") == b"+OK\r\n"
            assert conn.call("CONFIG", "SET", "block-cache-size", "0") == b"+OK\r\n"
            assert conn.call("CONFIG", "SET", "memtable-size", "1kb").startswith(
                b"-ERR CONFIG SET failed (possibly related to argument 'memtable-size') - "
                b"argument must be between 4096 and")
            fields = info_fields(conn, "persistence")
            assert fields["engine_compaction_throughput"] == str(1024 * 1024)
            assert fields["engine_block_cache_bytes"] == "0"
            assert conn.call("GET", key(7)) == bulk(value(7))
    finally:
        server.stop()


def test_damaged_table_block_fails_its_keys_with_a_clear_error_and_nothing_else(
        tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        with server.connect() as conn:
            replies = conn.pipeline([("SET", key(i), value(i)) for i in range(KEYS)])
            assert set(replies) == {b"+OK\r\n"}
    finally:
        assert server.stop() == 0
    # Damage one data block in the middle of the biggest table.
    path = max(table_files(tmp_path / "data"), key=lambda p: p.stat().st_size)
    reader = TableReader.open(OSFileSystem(), str(path))
    try:
        index = reader.block_count // 2
        handle = reader.handle(index)
        damaged = {ekey[PREFIX_BYTES:] for ekey in reader._block(index, fill=False)[0]}
        in_table = {ekey[PREFIX_BYTES:] for ekey, _ in reader.scan()}
    finally:
        reader.close()
    assert damaged and len(in_table) > len(damaged)
    with open(path, "r+b") as handle_file:
        handle_file.seek(handle.offset + handle.size // 2)
        byte = handle_file.read(1)
        handle_file.seek(handle.offset + handle.size // 2)
        handle_file.write(bytes([byte[0] ^ 0x40]))

    server = start(tmp_path)  # opens despite the damage (the counters skip that block)
    try:
        with server.connect() as conn:
            target = sorted(damaged)[0]
            reply = conn.call("GET", target)
            assert reply.startswith(b"-ERR storage corruption: " + str(path).encode()), reply
            assert b"checksum" in reply or b"crc" in reply.lower(), reply
            errors = 0
            for i in range(KEYS):
                got = conn.call("GET", key(i))
                if got.startswith(b"-"):
                    assert got.startswith(b"-ERR storage corruption: " + str(path).encode())
                    errors += 1
                else:  # never wrong data: the value, or the error
                    assert got == bulk(value(i)), (key(i), got)
                if key(i) in damaged:
                    assert got.startswith(b"-"), key(i)
            assert len(damaged) <= errors <= len(damaged) + KEYS // 100
            assert conn.call("GET", sorted(in_table - damaged)[0]).startswith(b"$")
            assert conn.call("SET", b"new-key", b"1") == b"+OK\r\n"
            assert conn.call("GET", b"new-key") == bulk(b"1")
            assert conn.call("PING") == b"+PONG\r\n"
            fields = info_fields(conn, "persistence")
            assert int(fields["engine_corruption_errors"]) >= errors + 1, fields
            stats = info_fields(conn, "stats")
            assert stats["unexpected_error_replies"] == "0"
    finally:
        server.stop()
    assert str(path) in server.log_text()


def test_a_server_builds_large_flushes_in_its_table_workers(tmp_path: Path) -> None:
    """`table-workers yes` (the default): a server with 1mb memtables has its flushes built
    by the helper process, reports them in INFO, and serves every key after a restart;
    `CONFIG SET table-workers no` moves the next flushes back into the server."""
    server = respkv_server(tmp_path, "--memtable-size", "1mb")
    server.start()
    keys = 12_000  # ~250 bytes each in the memtable: two or three flushes
    try:
        with server.connect() as conn:
            assert conn.call("CONFIG", "GET", "table-workers") == (
                b"*2\r\n" + bulk(b"table-workers") + bulk(b"yes"))
            for start in range(0, keys, 1000):
                replies = conn.pipeline([("SET", key(i), value(i))
                                         for i in range(start, start + 1000)])
                assert set(replies) == {b"+OK\r\n"}
            fields: dict[str, str] = {}
            for _ in range(500):
                fields = info_fields(conn, "persistence")
                if fields["engine_frozen_memtables"] == "0":
                    break
                time.sleep(0.02)
            assert int(fields["engine_flushes_by_worker"]) >= 1, fields
            assert fields["engine_table_worker_failures"] == "0"
            assert fields["engine_flushes_by_worker"] == fields["engine_flushes"]
            assert conn.call("CONFIG", "SET", "table-workers", "no") == b"+OK\r\n"
            flushed_by_worker = int(fields["engine_flushes_by_worker"])
            flushes = int(fields["engine_flushes"])
            for start in range(0, keys, 1000):
                conn.pipeline([("SET", key(i), value(i + 1))
                               for i in range(start, start + 1000)])
            for _ in range(500):
                fields = info_fields(conn, "persistence")
                if fields["engine_frozen_memtables"] == "0":
                    break
                time.sleep(0.02)
            assert int(fields["engine_flushes"]) > flushes
            assert int(fields["engine_flushes_by_worker"]) == flushed_by_worker
        assert server.stop() == 0
        server.start()
        with server.connect() as conn:
            for i in range(0, keys, 97):
                assert conn.call("GET", key(i)) == bulk(value(i + 1))
    finally:
        server.stop()
