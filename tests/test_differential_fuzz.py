"""Randomized, stateful differential tests: generated command sequences on respkv and on
redis-server, replies compared byte for byte (tests/fuzz_gen.py builds the sequences,
tests/fuzz_compare.py sends and compares them).

Every sequence starts on emptied servers (the shared session servers, every database
flushed) with a new connection to each, in RESP2 or after HELLO 3, and runs over the string
and keyspace commands, MULTI/EXEC and WATCH, with valid and invalid input mixed.

Default: the seeds in DEFAULT_SEEDS, DEFAULT_LENGTH commands each, both protocols (a few
seconds). Environment variables for longer runs:
- RESPKV_FUZZ_SEEDS=N     run seeds 1..N instead (e.g. 500 for a soak);
- RESPKV_FUZZ_SEED=S      run seed S only (replaying a failure: the message names the seed);
- RESPKV_FUZZ_LENGTH=L    commands per sequence.
A failure prints the seed, the protocol, every command sent and both replies.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import pytest

from respkv.splitargs import split_args
from tests.cluster_servers import LocalCluster, local_cluster
from tests.fuzz_compare import FuzzRun, Mismatch
from tests.fuzz_gen import INLINE_MAX, Check, Generator, Step, inline_request
from tests.servers import RawConnection, ServerProcess, respkv_server

DEFAULT_SEEDS = range(1, 17)
DEFAULT_LENGTH = 500
FLUSHING_SEEDS = 3  # of those seeds, the ones also run on a respkv that flushes constantly
FLUSH_EVERY = 20
CLUSTER_SEEDS = 4  # of those seeds, the ones also run through a node of a 3-node cluster


def fuzz_seeds() -> list[int]:
    if "RESPKV_FUZZ_SEED" in os.environ:
        return [int(os.environ["RESPKV_FUZZ_SEED"])]
    if "RESPKV_FUZZ_SEEDS" in os.environ:
        return list(range(1, int(os.environ["RESPKV_FUZZ_SEEDS"]) + 1))
    return list(DEFAULT_SEEDS)


def fuzz_default() -> bool:
    return not {"RESPKV_FUZZ_SEED", "RESPKV_FUZZ_SEEDS"} & set(os.environ)


def fuzz_length() -> int:
    return int(os.environ.get("RESPKV_FUZZ_LENGTH", DEFAULT_LENGTH))


@pytest.mark.parametrize("pipelined", [False, True], ids=["one_by_one", "pipelined"])
@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
@pytest.mark.parametrize("seed", fuzz_seeds())
def test_random_sequences_match_redis(
    respkv_port: int, redis_port: int, seed: int, protocol: int, pipelined: bool
) -> None:
    with RawConnection(respkv_port) as ours, RawConnection(redis_port) as theirs:
        if protocol == 3:  # HELLO's own reply names the server: not compared
            ours.call("HELLO", 3)
            theirs.call("HELLO", 3)
        label = f"seed {seed}, RESP{protocol}, {'pipelined' if pipelined else 'one by one'}"
        run = FuzzRun(ours, theirs, f"{label} (RESPKV_FUZZ_SEED={seed})")
        steps = Generator(seed, int(time.time())).steps(fuzz_length())
        sent = run.run(steps, random.Random(seed) if pipelined else None)
    assert sent >= fuzz_length()


@pytest.mark.parametrize("seed", fuzz_seeds())
def test_random_sequences_of_three_clients_match_redis(
    respkv_port: int, redis_port: int, seed: int
) -> None:
    """Three clients, each with its own MULTI and WATCH state: one's writes land between
    another's WATCH and EXEC, inside its MULTI, under its SELECTed database."""
    pairs = [(RawConnection(respkv_port), RawConnection(redis_port)) for _ in range(3)]
    label = f"seed {seed}, RESP2, three clients (RESPKV_FUZZ_SEED={seed})"
    assert run_clients(pairs, label, Generator(seed, int(time.time()), clients=3)) >= (
        fuzz_length()
    )


def run_clients(pairs: list[tuple[RawConnection, RawConnection]], label: str,
                generator: Generator) -> int:
    """Run the generator's steps over several clients (a connection to each server per
    client), one by one; close the connections; the number of steps sent."""
    try:
        return FuzzRun(*pairs[0], label, more=pairs[1:]).run(generator.steps(fuzz_length()))
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


@pytest.fixture(scope="module")
def flushing_respkv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A respkv-server of its own with the smallest memtable (4 KiB)."""
    server = respkv_server(tmp_path_factory.mktemp("flushing"), "--memtable-size", "4kb")
    server.start()
    yield server
    server.stop()


def with_flushes(steps: Iterator[Step], filler: RawConnection) -> Iterator[Step]:
    """The steps, with a 5000-byte write through another connection every FLUSH_EVERY of
    them: it fills the 4 KiB memtable, so the engine flushes it to a table, and the keys the
    steps wrote are read back from tables (and merged by compactions) from then on. It goes
    to database 9, which the generator never selects, so no compared reply sees it."""
    filler.call("SELECT", 9)
    for i, step in enumerate(steps):
        if i % FLUSH_EVERY == 0:
            filler.call("SET", "filler", b"f" * 5000)
        yield step


@pytest.mark.parametrize("seed", fuzz_seeds()[:FLUSHING_SEEDS] if fuzz_default()
                         else fuzz_seeds())
def test_random_sequences_match_redis_through_tables(
    flushing_respkv: ServerProcess, redis_port: int, seed: int
) -> None:
    with (RawConnection(flushing_respkv.port) as ours, RawConnection(redis_port) as theirs,
          RawConnection(flushing_respkv.port) as filler):
        ours.call("FLUSHALL")
        flushes_before = _engine_flushes(filler)
        label = f"seed {seed}, RESP2, 4 KiB memtable (RESPKV_FUZZ_SEED={seed})"
        steps = Generator(seed, int(time.time())).steps(fuzz_length())
        sent = FuzzRun(ours, theirs, label).run(with_flushes(steps, filler))
        assert sent >= fuzz_length()
        assert _engine_flushes(filler) >= flushes_before + fuzz_length() // FLUSH_EVERY // 2


def _engine_flushes(conn: RawConnection) -> int:
    info = conn.call("INFO", "persistence").decode()
    return int(info.split("engine_flushes:")[1].split("\r\n")[0])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three nodes, each key on all three, QUORUM reads and writes (R = W = 2)."""
    with local_cluster(tmp_path_factory.mktemp("fuzz-cluster")) as running:
        yield running


@pytest.mark.parametrize("pipelined", [False, True], ids=["one_by_one", "pipelined"])
@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
@pytest.mark.parametrize("seed", fuzz_seeds()[:CLUSTER_SEEDS] if fuzz_default()
                         else fuzz_seeds())
def test_random_sequences_through_one_cluster_node_match_redis(
    cluster: LocalCluster, redis_port: int, seed: int, protocol: int, pipelined: bool
) -> None:
    """One client through one coordinator of a 3-node cluster: with R + W > N it reads its
    own writes, so every reply is redis-server's, except what docs/commands.md lists for a
    cluster (the generator leaves those out: Generator's `cluster`)."""
    with cluster.connect(0) as ours, RawConnection(redis_port) as theirs:
        assert ours.call("FLUSHALL") == b"+OK\r\n"
        if protocol == 3:
            ours.call("HELLO", 3)
            theirs.call("HELLO", 3)
        mode = "pipelined" if pipelined else "one by one"
        label = f"seed {seed}, RESP{protocol}, {mode}, 3-node cluster (RESPKV_FUZZ_SEED={seed})"
        steps = Generator(seed, int(time.time()), cluster=True).steps(fuzz_length())
        sent = FuzzRun(ours, theirs, label).run(steps, random.Random(seed) if pipelined else None)
    assert sent >= fuzz_length()


@pytest.mark.parametrize("seed", fuzz_seeds()[:CLUSTER_SEEDS] if fuzz_default()
                         else fuzz_seeds())
def test_random_sequences_of_three_clients_through_cluster_nodes_match_redis(
    cluster: LocalCluster, redis_port: int, seed: int
) -> None:
    """Three clients, each through its own node of the 3-node cluster: a client's write is
    acknowledged by a quorum before the next step, and every read asks a quorum, so each
    client reads the others' writes too."""
    with cluster.connect(0) as conn:
        assert conn.call("FLUSHALL") == b"+OK\r\n"
    pairs = [(cluster.connect(i), RawConnection(redis_port)) for i in range(3)]
    label = f"seed {seed}, RESP2, three clients on three nodes (RESPKV_FUZZ_SEED={seed})"
    generator = Generator(seed, int(time.time()), cluster=True, clients=3)
    assert run_clients(pairs, label, generator) >= fuzz_length()


# The generator and the comparator themselves ----------------------------------------------


def test_inline_requests_parse_back_to_the_arguments() -> None:
    """inline_request renders any arguments so that respkv's inline parser (sdssplitargs's
    rules) reads them back exactly: the fuzz run's inline steps send what their args say."""
    rng = random.Random(3)
    for step in Generator(9, 1_700_000_000).steps(2000):
        args = step.args
        if sum(map(len, args)) >= INLINE_MAX:
            continue
        line = inline_request(args, rng)
        assert line.endswith(b"\n")
        assert split_args(line.rstrip(b"\r\n")) == list(args), line


def test_generator_is_deterministic() -> None:
    def names(seed: int) -> list[tuple[bytes, ...]]:
        return [step.args for step in Generator(seed, 1_700_000_000).steps(200)]

    assert names(5) == names(5)
    assert names(5) != names(6)


def test_generator_covers_every_command_and_invalid_input() -> None:
    seen: set[bytes] = set()
    steps = [s for seed in DEFAULT_SEEDS for s in Generator(seed, 1_700_000_000).steps(400)]
    for step in steps:
        seen.add(step.args[0].upper())
    expected = {
        b"GET", b"SET", b"SETNX", b"SETEX", b"PSETEX", b"GETSET", b"GETDEL", b"GETEX", b"MGET",
        b"MSET", b"MSETNX", b"APPEND", b"STRLEN", b"GETRANGE", b"SUBSTR", b"SETRANGE", b"INCR",
        b"DECR", b"INCRBY", b"DECRBY", b"INCRBYFLOAT", b"DEL", b"UNLINK", b"EXISTS", b"TOUCH",
        b"TYPE", b"RENAME", b"RENAMENX", b"COPY", b"MOVE", b"KEYS", b"SCAN", b"RANDOMKEY",
        b"DBSIZE", b"FLUSHDB", b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT", b"TTL",
        b"PTTL", b"EXPIRETIME", b"PEXPIRETIME", b"PERSIST", b"SELECT", b"MULTI", b"EXEC",
        b"DISCARD", b"WATCH", b"UNWATCH", b"ECHO", b"PING", b"NOSUCHCOMMAND", b"HELLO",
        b"CLIENT", b"AUTH", b"OBJECT", b"FLUSHALL", b"RESET",
    }
    assert expected <= seen, expected - seen
    # Conflicting SET options and past expiries are part of every default run.
    sets = [s.args for s in steps if s.args[0] == b"SET"]
    def conflicting(args: tuple[bytes, ...]) -> bool:
        words = {arg.upper() for arg in args[3:]}
        expiries = words & {b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL"}
        return {b"NX", b"XX"} <= words or len(expiries) > 1

    assert sum(map(conflicting, sets)) >= 5
    assert any(b"PXAT" in a and b"1" in a for a in sets)


class _Scripted:
    """A fake connection answering from a list."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies

    def call(self, *args: bytes | str | int) -> bytes:
        return self.replies.pop(0)

    def send_raw(self, data: bytes) -> None:
        pass

    def read_reply(self) -> bytes:
        return self.replies.pop(0)


def _run_one(step: Step, mine: list[bytes], ref: list[bytes]) -> None:
    FuzzRun(_Scripted(mine), _Scripted(ref), "seed 77, RESP2").step(step)


def test_comparator_reports_a_difference_with_the_seed_and_the_commands() -> None:
    run = FuzzRun(_Scripted([b"+OK\r\n", b"$1\r\nx\r\n"]),
                  _Scripted([b"+OK\r\n", b"$1\r\ny\r\n"]), "seed 77, RESP2")
    run.step(Step((b"SET", b"k", b"x")))
    with pytest.raises(Mismatch) as failure:
        run.step(Step((b"GET", b"k")))
    text = str(failure.value)
    assert "seed 77" in text and "b'SET' b'k' b'x'" in text and "b'GET' b'k'" in text
    assert "b'$1\\r\\nx\\r\\n'" in text and "b'$1\\r\\ny\\r\\n'" in text


@pytest.mark.parametrize(
    ("step", "mine", "ref", "ok"),
    [
        (Step((b"PTTL", b"k"), Check.PTTL), b":99000\r\n", b":99500\r\n", True),
        (Step((b"PTTL", b"k"), Check.PTTL), b":90000\r\n", b":99500\r\n", False),
        (Step((b"PTTL", b"k"), Check.PTTL), b":-1\r\n", b":5\r\n", False),
        (Step((b"PEXPIRETIME", b"k"), Check.PEXPIRETIME), b":1001\r\n", b":1000\r\n", False),
        (Step((b"PEXPIRETIME", b"k"), Check.PEXPIRETIME, tolerant=True),
         b":1001\r\n", b":1000\r\n", True),
        (Step((b"KEYS", b"*"), Check.KEYS), b"*2\r\n$1\r\na\r\n$1\r\nb\r\n",
         b"*2\r\n$1\r\nb\r\n$1\r\na\r\n", True),
        (Step((b"KEYS", b"*"), Check.KEYS), b"*1\r\n$1\r\na\r\n", b"*1\r\n$1\r\nb\r\n", False),
        (Step((b"HELLO", b"3"), Check.HELLO),
         b"%3\r\n$6\r\nserver\r\n$6\r\nrespkv\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:7\r\n",
         b"%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:9\r\n", True),
        (Step((b"HELLO", b"3"), Check.HELLO),
         b"%2\r\n$6\r\nserver\r\n$6\r\nrespkv\r\n$5\r\nproto\r\n:2\r\n",
         b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n", False),
        (Step((b"HELLO", b"3"), Check.HELLO),
         b"*4\r\n$6\r\nserver\r\n$6\r\nrespkv\r\n$5\r\nproto\r\n:3\r\n",
         b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n", False),
    ],
)
def test_comparator_checks(step: Step, mine: bytes, ref: bytes, ok: bool) -> None:
    if ok:
        _run_one(step, [mine], [ref])
    else:
        with pytest.raises(Mismatch):
            _run_one(step, [mine], [ref])


def test_comparator_scan_compares_key_sets() -> None:
    def page(cursor: bytes, *keys: bytes) -> bytes:
        body = b"".join(b"$%d\r\n%b\r\n" % (len(k), k) for k in keys)
        return b"*2\r\n$%d\r\n%b\r\n*%d\r\n%b" % (len(cursor), cursor, len(keys), body)

    step = Step((b"SCAN", b"0"), Check.SCAN)
    _run_one(step, [page(b"5", b"a"), page(b"0", b"b")], [page(b"0", b"b", b"a")])
    with pytest.raises(Mismatch, match="only redis"):
        _run_one(step, [page(b"0", b"a")], [page(b"0", b"b", b"a")])


def test_comparator_randomkey_needs_a_key_existing_on_both() -> None:
    step = Step((b"RANDOMKEY",), Check.RANDOMKEY)
    _run_one(step, [b"$1\r\na\r\n", b":1\r\n", b":1\r\n"], [b"$1\r\nb\r\n", b":1\r\n", b":1\r\n"])
    with pytest.raises(Mismatch):
        _run_one(step, [b"$1\r\na\r\n", b":1\r\n"], [b"$1\r\nb\r\n", b":0\r\n"])
    with pytest.raises(Mismatch):
        _run_one(step, [b"_\r\n"], [b"$1\r\nb\r\n"])


def test_comparator_applies_checks_inside_exec() -> None:
    steps = [Step((b"MULTI",)), Step((b"PTTL", b"k"), Check.PTTL), Step((b"GET", b"k"))]
    queued = [b"+OK\r\n", b"+QUEUED\r\n", b"+QUEUED\r\n"]

    def run(mine_exec: bytes) -> None:
        run = FuzzRun(_Scripted([*queued, mine_exec]),
                      _Scripted([*queued, b"*2\r\n:5000\r\n$1\r\nv\r\n"]), "seed 1")
        for step in steps:
            run.step(step)
        run.step(Step((b"EXEC",)))

    run(b"*2\r\n:4990\r\n$1\r\nv\r\n")
    with pytest.raises(Mismatch, match="element 1"):
        run(b"*2\r\n:4990\r\n$1\r\nw\r\n")
