"""Durability end to end: what a client was told is written survives crashes and restarts.

Every test owns its server and data directory. A writer counts the writes the server
acknowledged; the server is then killed (SIGKILL), shut down (SHUTDOWN) or stopped (SIGTERM),
started again on the same --dir, and every acknowledged write must be there. The random kill
moments come from one seed, printed so that a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from engine import log_format
from tests.engine_helpers import record_offsets
from tests.servers import RawConnection, ServerProcess, encode_command, redis_server, respkv_server

SEED = int(os.environ.get("RESPKV_TEST_SEED", random.randrange(1 << 32)))


@pytest.fixture
def rng() -> random.Random:
    print(f"durability seed: RESPKV_TEST_SEED={SEED}")
    return random.Random(SEED)


def start(workdir: Path, *options: str) -> ServerProcess:
    server = respkv_server(workdir, *options)
    server.start()
    return server


def key(i: int) -> bytes:
    return b"key:%06d" % i


def value(i: int) -> bytes:
    return b"value:%d:" % i + b"x" * (i % 50)


def missing_keys(server: ServerProcess, indexes: range) -> list[int]:
    """Indexes whose key is not there with its value, read with one pipelined MGET per 500."""
    wrong: list[int] = []
    with server.connect() as conn:
        for first in range(indexes.start, indexes.stop, 500):
            chunk = range(first, min(first + 500, indexes.stop))
            conn.send_raw(encode_command("MGET", *[key(i) for i in chunk]))
            reply = conn.read_reply()
            expected = b"*%d\r\n" % len(chunk) + b"".join(
                b"$%d\r\n%b\r\n" % (len(value(i)), value(i)) for i in chunk
            )
            if reply != expected:
                wrong.extend(i for i in chunk if b"\r\n%b\r\n" % value(i) not in reply)
    return wrong


def absent(server: ServerProcess, indexes: range) -> bool:
    with server.connect() as conn:
        return bool(all(conn.call("EXISTS", key(i)) == b":0\r\n" for i in indexes))


class CountingWriter:
    """Sequential SETs on one connection, counting the ones the server acknowledged."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.acked = 0
        self.error: BaseException | None = None

    def run(self, total: int, batch: int = 1) -> None:
        try:
            with RawConnection(self.server.port) as conn:
                for first in range(0, total, batch):
                    indexes = range(first, min(first + batch, total))
                    conn.send_raw(b"".join(encode_command("SET", key(i), value(i))
                                           for i in indexes))
                    for _ in indexes:
                        reply = conn.read_reply()
                        assert reply == b"+OK\r\n", reply
                        self.acked += 1
        except (ConnectionError, OSError):
            pass  # the kill: replies stop here
        except BaseException as exc:
            self.error = exc


def kill_when(server: ServerProcess, writer: CountingWriter, acked_target: int,
              rng: random.Random) -> threading.Thread:
    """A thread that SIGKILLs the server soon after `acked_target` writes were acknowledged."""

    def killer() -> None:
        deadline = time.monotonic() + 60
        while writer.acked < acked_target and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, 0.003))  # land anywhere inside a write, not just between
        server.kill()

    thread = threading.Thread(target=killer)
    thread.start()
    return thread


def crash_while_writing(workdir: Path, rng: random.Random, fsync: str, total: int,
                        batch: int) -> None:
    server = start(workdir, "--appendfsync", fsync)
    writer = CountingWriter(server)
    target = rng.randint(total // 10, total * 3 // 4)
    killer = kill_when(server, writer, target, rng)
    writer.run(total, batch)
    killer.join(30)
    assert writer.error is None, writer.error
    assert server.proc is not None and server.proc.returncode == -signal.SIGKILL
    acked = writer.acked
    assert target <= acked < total, (target, acked)

    restarted = start(workdir, "--appendfsync", fsync)
    try:
        lost = missing_keys(restarted, range(acked))
        assert not lost, f"seed {SEED}: {len(lost)} acknowledged writes lost, first {lost[:5]}"
        # Writes never sent cannot be there (a batch in flight may be partly applied).
        assert absent(restarted, range(acked + batch, min(acked + batch + 20, total)))
    finally:
        restarted.stop()


def test_kill_9_at_a_random_moment_with_fsync_always(tmp_path: Path, rng: random.Random) -> None:
    crash_while_writing(tmp_path, rng, "always", total=2000, batch=1)


def test_kill_9_at_a_random_moment_with_fsync_everysec(
    tmp_path: Path, rng: random.Random
) -> None:
    crash_while_writing(tmp_path, rng, "everysec", total=20_000, batch=50)


def test_kill_9_right_after_acknowledged_writes_with_fsync_everysec(tmp_path: Path) -> None:
    server = start(tmp_path, "--appendfsync", "everysec")
    writer = CountingWriter(server)
    writer.run(3000, batch=100)
    assert writer.error is None and writer.acked == 3000
    server.kill()  # well inside the second before the next background fsync
    restarted = start(tmp_path, "--appendfsync", "everysec")
    try:
        assert missing_keys(restarted, range(3000)) == []
    finally:
        restarted.stop()


def test_kill_9_with_fsync_no_keeps_acknowledged_writes(tmp_path: Path) -> None:
    # Even without fsync the records are in the OS before the reply: a process crash
    # (unlike a power loss) loses nothing acknowledged.
    server = start(tmp_path, "--appendfsync", "no")
    writer = CountingWriter(server)
    writer.run(1000, batch=10)
    assert writer.acked == 1000
    server.kill()
    restarted = start(tmp_path, "--appendfsync", "no")
    try:
        assert missing_keys(restarted, range(1000)) == []
    finally:
        restarted.stop()


def test_overwrites_deletes_and_expiry_survive_a_crash(tmp_path: Path) -> None:
    server = start(tmp_path)
    with server.connect() as conn:
        for argv in [
            ("SET", "a", "1"), ("SET", "a", "2"), ("SET", "b", "x"), ("DEL", "b"),
            ("SET", "c", "short", "PX", "1"), ("SET", "d", "long", "EX", "1000"),
            ("MSET", "e", "1", "f", "2"), ("INCR", "e"), ("APPEND", "f", "3"),
            ("SELECT", "5"), ("SET", "a", "db5"),
        ]:
            assert not conn.call(*argv).startswith(b"-"), argv
    server.kill()
    restarted = start(tmp_path)
    try:
        with restarted.connect() as conn:
            assert conn.call("MGET", "a", "b", "c", "d", "e", "f") == (
                b"*6\r\n$1\r\n2\r\n$-1\r\n$-1\r\n$4\r\nlong\r\n$1\r\n2\r\n$2\r\n23\r\n"
            )
            ttl = int(conn.call("TTL", "d")[1:-2])
            assert 990 <= ttl <= 1000
            conn.call("SELECT", "5")
            assert conn.call("GET", "a") == b"$3\r\ndb5\r\n"
    finally:
        restarted.stop()


# --- Graceful shutdown ---------------------------------------------------------------------


def test_shutdown_command_exits_0_and_keeps_data(tmp_path: Path) -> None:
    server = start(tmp_path / "respkv")
    reference = redis_server(tmp_path / "redis")
    reference.start()
    replies = []
    for proc in (server, reference):
        with proc.connect() as conn:
            assert conn.call("SET", "k", "v") == b"+OK\r\n"
            conn.send_raw(encode_command("SHUTDOWN"))
            replies.append(conn.read_until_close())  # no reply: the server just goes away
        assert proc.proc is not None
        assert proc.proc.wait(10) == 0
    assert replies[0] == replies[1] == b""
    restarted = start(tmp_path / "respkv")
    try:
        with restarted.connect() as conn:
            assert conn.call("GET", "k") == b"$1\r\nv\r\n"
    finally:
        restarted.stop()


def test_shutdown_nosave_still_keeps_logged_writes(tmp_path: Path) -> None:
    server = start(tmp_path)
    writer = CountingWriter(server)
    writer.run(500, batch=50)
    with server.connect() as conn:
        conn.send_raw(encode_command("SHUTDOWN", "NOSAVE"))
        conn.read_until_close()
    assert server.proc is not None and server.proc.wait(10) == 0
    restarted = start(tmp_path)
    try:
        assert missing_keys(restarted, range(500)) == []
    finally:
        restarted.stop()


def test_sigterm_exits_0_and_keeps_data(tmp_path: Path) -> None:
    server = start(tmp_path)
    writer = CountingWriter(server)
    writer.run(1000, batch=100)
    assert server.stop() == 0
    assert "ready to exit" in server.log_text()
    restarted = start(tmp_path)
    try:
        assert missing_keys(restarted, range(1000)) == []
    finally:
        restarted.stop()


def test_sigterm_while_a_client_is_writing(tmp_path: Path) -> None:
    server = start(tmp_path)
    writer = CountingWriter(server)
    thread = threading.Thread(target=writer.run, args=(50_000, 20))
    thread.start()
    deadline = time.monotonic() + 10
    while writer.acked < 500 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert server.stop() == 0
    thread.join(10)
    acked = writer.acked
    restarted = start(tmp_path)
    try:
        assert missing_keys(restarted, range(acked)) == []
    finally:
        restarted.stop()


def test_second_server_on_the_same_dir_is_refused(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        intruder = respkv_server(tmp_path)
        with pytest.raises(RuntimeError):
            intruder.start(timeout=10)
        with server.connect() as conn:
            assert conn.call("PING") == b"+PONG\r\n"
    finally:
        server.stop()


# --- Damaged commit log ----------------------------------------------------------------------


def commit_log_segments(workdir: Path) -> list[Path]:
    data_dir = workdir / "data"
    segments = sorted(data_dir.rglob("commitlog-*.log"), key=lambda p: p.name)
    assert segments, f"no commit log under {data_dir}: {list(data_dir.rglob('*'))}"
    return segments


def write_and_stop(workdir: Path, count: int, *, kill: bool) -> None:
    server = start(workdir)
    writer = CountingWriter(server)
    writer.run(count, batch=25)
    assert writer.acked == count
    if kill:
        server.kill()
    else:
        assert server.stop() == 0


def restart_reading_log(workdir: Path) -> tuple[ServerProcess, str]:
    """Start on workdir and return the server with what it logged during this start."""
    log_path = workdir / "respkv.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    server = start(workdir)
    with open(log_path, "rb") as log:
        log.seek(offset)
        return server, log.read().decode(errors="replace")


@pytest.mark.parametrize(
    "tail",
    [
        b"\x5a" * 37,  # garbage
        b"\x00" * 4096,  # zero fill (preallocated space)
        os.urandom(3),  # shorter than a record header
        bytes(range(256)) * 8,
    ],
    ids=["garbage", "zero_fill", "three_bytes", "pattern"],
)
def test_garbage_tail_is_truncated_and_valid_prefix_kept(
    tmp_path: Path, tail: bytes
) -> None:
    write_and_stop(tmp_path, 300, kill=True)
    newest = commit_log_segments(tmp_path)[-1]
    good_size = newest.stat().st_size
    with open(newest, "ab") as segment:
        segment.write(tail)
    server, log = restart_reading_log(tmp_path)
    try:
        assert missing_keys(server, range(300)) == []
        assert newest.name in log, log
        assert "commit log" in log and ("dropping" in log or "truncat" in log), log
        assert newest.stat().st_size == good_size  # cut back to the last good record
        # Writes after the repair go after the valid prefix and survive another crash.
        with server.connect() as conn:
            assert conn.call("SET", "after-repair", "yes") == b"+OK\r\n"
        server.kill()
        again, log_again = restart_reading_log(tmp_path)
        try:
            assert missing_keys(again, range(300)) == []
            with again.connect() as conn:
                assert conn.call("GET", "after-repair") == b"$3\r\nyes\r\n"
            assert "dropping" not in log_again, log_again
        finally:
            again.stop()
    finally:
        server.stop()


def last_record_indexes(segment: Path, count: int) -> list[int]:
    """The indexes of the keys written by the segment's last record: the writes of one
    commit (a GROUP record holds every write of its commit, docs/formats/commit-log.md)."""
    data = segment.read_bytes()
    start = record_offsets(str(segment))[-2]
    _, length, rtype = log_format.RECORD_HEADER.unpack_from(data, start)
    payload = data[start + log_format.RECORD_HEADER_SIZE : start + 9 + length]
    # Engine keys are the database byte, 8 bytes of hash, then the client's key.
    written = {ekey[9:] for ekey, _ in log_format.decode_record(rtype, payload, "", start)}
    indexes = [i for i in range(count) if key(i) in written]
    assert indexes, "the last record holds none of the test's writes"
    return indexes


def test_torn_last_record_loses_only_that_record(tmp_path: Path) -> None:
    write_and_stop(tmp_path, 200, kill=False)
    newest = commit_log_segments(tmp_path)[-1]
    lost = last_record_indexes(newest, 200)
    size = newest.stat().st_size
    with open(newest, "r+b") as segment:
        segment.truncate(size - 3)  # the last record lost its final bytes
    server, log = restart_reading_log(tmp_path)
    try:
        assert missing_keys(server, range(200)) == lost
        assert newest.name in log, log
    finally:
        server.stop()


def test_flipped_byte_in_the_last_record_is_detected(tmp_path: Path) -> None:
    write_and_stop(tmp_path, 100, kill=True)
    newest = commit_log_segments(tmp_path)[-1]
    lost = last_record_indexes(newest, 100)
    data = bytearray(newest.read_bytes())
    data[-2] ^= 0xFF  # inside the last record
    newest.write_bytes(bytes(data))
    server, log = restart_reading_log(tmp_path)
    try:
        # Corrupt bytes are never served: the last record's writes are gone, the rest intact.
        assert missing_keys(server, range(100)) == lost
        assert newest.name in log, log
    finally:
        server.stop()



def test_sigterm_exits_even_when_the_data_directory_is_gone(tmp_path: Path) -> None:
    """A close that fails (here: node.meta cannot be written, its directory was removed) is
    reported and the process still exits, with a failure status, instead of hanging."""
    server = start(tmp_path)
    with server.connect() as conn:
        assert conn.call("SET", "k", "v") == b"+OK\r\n"
    shutil.rmtree(tmp_path / "data")
    code = server.stop(timeout=15.0)
    assert code == 1
    assert "error closing the data store" in server.log_text()
    assert "ready to exit" in server.log_text()
