"""Memory stays bounded while data grows far past the memtable: a child process loads keys
with 1 KiB values through flushes and compactions and reports its peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.engine_helpers import temp_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20

CHILD = """
import json, os, random, sys, threading
from engine.db import Engine
from engine.options import EngineOptions


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def workers():
    # The table workers are exec'd processes (engine/table_worker.py): their memory is the
    # engine's too. A child is listed under the thread that started it: read every thread's
    # (a thread may end between the listing and the read).
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as children:
                pids += map(int, children.read().split())
        except FileNotFoundError:
            pass
    return pids


# The store's resident memory at a moment is the engine's process plus its workers: sampled
# every 20 ms, since the peaks of separate processes (VmHWM) need not coincide.
peak_total = [0]
done = threading.Event()


def sample():
    while not done.wait(0.02):
        total = 0
        for pid in [os.getpid(), *workers()]:
            try:
                total += status_kib(pid, "VmRSS:")
            except (OSError, StopIteration):
                pass  # a worker that just ended
        peak_total[0] = max(peak_total[0], total)


directory, keys, memtable_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
engine = Engine.open(directory, EngineOptions(fsync="no", memtable_size_bytes=memtable_bytes,
                                              table_workers=sys.argv[4] == "1"))
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
rng = random.Random(7)
value = rng.randbytes(1024)
# A permutation by a stride coprime with keys (1000003 is a prime that divides neither load):
# scattered like a shuffle, without a list of `keys` ints (~110 MiB at 3M) in the figure.
for n in range(keys):
    i = n * 1000003 % keys
    engine.put(b"key-%012d" % i, value[: 1000 + i % 24] + b"%024d" % i)
    if n % 256 == 0:
        engine.commit()
engine.commit()
for i in rng.sample(range(keys), 2000):
    got = engine.get(b"key-%012d" % i)
    assert got == value[: 1000 + i % 24] + b"%024d" % i, i
stats = engine.stats()
done.set()
sampler.join()
helpers = workers()
# VmHWM, not getrusage: ru_maxrss survives execve, so it would report the parent's peak.
print(json.dumps({"peak_rss": status_kib(os.getpid(), "VmHWM:") * 1024,
                  "workers": len(helpers),
                  "workers_peak_rss": sum(status_kib(pid, "VmHWM:") for pid in helpers) * 1024,
                  "peak_total_rss": peak_total[0] * 1024, **stats}))
engine.close()
"""


def load(keys: int, memtable_bytes: int, table_workers: bool = False) -> dict[str, int]:
    with temp_dir() as d:
        env = {**os.environ, "PYTHONPATH": REPO}
        done = subprocess.run([sys.executable, "-c", CHILD, d, str(keys), str(memtable_bytes),
                               str(int(table_workers))],
                              env=env, cwd=REPO, capture_output=True, timeout=3600)
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, int] = json.loads(done.stdout)
        return result


@pytest.mark.parametrize("table_workers", [False, True], ids=["in-process", "table-workers"])
def test_200k_keys_of_1_kib_stay_within_a_bounded_rss(table_workers: bool) -> None:
    # ~210 MiB of data through a 4 MiB memtable: memtables (3 x 4 MiB), the block cache
    # (64 MiB budget, far from full after 2000 gets), indexes and blooms, the interpreter
    # (~30 MiB) and numpy's libraries (~20 MiB resident once imported, for the bloom filter
    # build) stay below it. What grows with the data is checked by the slow test below.
    # With table workers (the server's default) the two worker processes are counted too:
    # each is an interpreter with the engine and numpy imported, plus one table's build
    # (measured ~54 MiB each).
    result = load(200_000, 4 * MIB, table_workers)
    assert result["tables"] >= 1 and result["flushes"] >= 40
    assert result["peak_rss"] < 150 * MIB, json.dumps(result)
    if table_workers:
        assert result["workers"] == 2, json.dumps(result)
        assert result["workers_peak_rss"] < 2 * 80 * MIB, json.dumps(result)
        assert result["peak_total_rss"] < 150 * MIB + 2 * 80 * MIB, json.dumps(result)
    else:
        assert result["workers"] == 0, json.dumps(result)


@pytest.mark.slow
@pytest.mark.parametrize("table_workers", [False, True], ids=["in-process", "table-workers"])
def test_3m_keys_of_1_kib_stay_under_600_mib(table_workers: bool) -> None:
    # Issue 3: ~3 GiB of data with the default 64 MiB memtable; with table workers (as the
    # server runs it) the store's memory is its process and the workers, at the same moment.
    result = load(3_000_000, 64 * MIB, table_workers)
    assert result["workers"] == (2 if table_workers else 0), result
    assert result["peak_total_rss"] < 600 * MIB, result
    assert result["peak_rss"] < 600 * MIB, result
