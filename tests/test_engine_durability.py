"""Real-process durability: a child acknowledges writes after commit() with fsync=always, the
parent kills it with SIGKILL mid-stream, reopens, and finds every acknowledged write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from tests.engine_helpers import open_engine, temp_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Even i: put(k_i); odd i: a batch setting k_i and its twin. One commit per i, then the ack.
CHILD = """
import sys
from engine.db import Engine
from engine.options import EngineOptions

engine = Engine.open(sys.argv[1], EngineOptions(fsync="always",
                                                segment_size_bytes=int(sys.argv[2])))
prefix = sys.argv[3].encode()
i = 0
while True:
    key, value = prefix + b"k%08d" % i, b"v%08d-" % i + b"x" * (i % 300)
    if i % 2:
        engine.write_batch([(key, value), (key + b"-twin", value)])
    else:
        engine.put(key, value)
    engine.commit()
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
    i += 1
"""


def value_of(i: int) -> bytes:
    return b"v%08d-" % i + b"x" * (i % 300)


def run_and_kill(directory: str, segment_size_bytes: int, prefix: bytes,
                 acks_before_kill: int) -> int:
    """Start the writer, SIGKILL it after acks_before_kill acks; returns the highest ack."""
    env = {**os.environ, "PYTHONPATH": REPO}
    argv = [sys.executable, "-c", CHILD, directory, str(segment_size_bytes), prefix.decode()]
    child = subprocess.Popen(argv,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    assert child.stdout is not None
    acked = -1
    deadline = time.monotonic() + 20
    try:
        while acked + 1 < acks_before_kill:
            line = child.stdout.readline()
            assert line, f"writer died: {child.stderr.read() if child.stderr else b''!r}"
            acked = int(line)
            assert time.monotonic() < deadline, "writer too slow"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()  # acks already in the pipe count too
        child.wait()
        child.stdout.close()
        if child.stderr is not None:
            child.stderr.close()
    for line in rest.split():
        acked = int(line)
    assert child.returncode == -signal.SIGKILL
    return acked


def check_after_kill(directory: str, prefix: bytes, acked: int) -> None:
    opened = open_engine(directory)
    engine = opened.engine
    for i in range(acked + 1):
        key = prefix + b"k%08d" % i
        assert engine.get(key) == value_of(i), f"acknowledged write {i} of {acked} lost"
        if i % 2:
            assert engine.get(key + b"-twin") == value_of(i)
    # At most one more (written, killed before its ack); never anything beyond it; and a
    # batch is all or nothing.
    assert engine.get(prefix + b"k%08d" % (acked + 2)) is None
    maybe = prefix + b"k%08d" % (acked + 1)
    assert engine.get(maybe + b"-twin") == (engine.get(maybe) if (acked + 1) % 2 else None)
    assert all("checksum" not in r for r in opened.reports)
    engine.close()


def test_sigkill_never_loses_an_acknowledged_write() -> None:
    rng = random.Random(0x5EED)
    for segment_size_bytes in [64 * 1024 * 1024, 4096]:  # one segment; rotation every ~20 acks
        with temp_dir() as d:
            rounds: list[tuple[bytes, int]] = []
            for prefix in [b"r1-", b"r2-", b"r3-"]:  # kill, recover, write more, kill again
                rounds.append((prefix, run_and_kill(d, segment_size_bytes, prefix,
                                                    rng.randint(150, 400))))
                for done_prefix, acked in rounds:
                    check_after_kill(d, done_prefix, acked)
