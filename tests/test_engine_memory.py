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
import json, random, sys
from engine.db import Engine
from engine.options import EngineOptions

directory, keys, memtable_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
engine = Engine.open(directory, EngineOptions(fsync="no", memtable_size_bytes=memtable_bytes))
rng = random.Random(7)
value = rng.randbytes(1024)
order = list(range(keys))
rng.shuffle(order)
for n, i in enumerate(order):
    engine.put(b"key-%012d" % i, value[: 1000 + i % 24] + b"%024d" % i)
    if n % 256 == 0:
        engine.commit()
engine.commit()
for i in rng.sample(range(keys), 2000):
    got = engine.get(b"key-%012d" % i)
    assert got == value[: 1000 + i % 24] + b"%024d" % i, i
stats = engine.stats()
engine.close()
# VmHWM, not getrusage: ru_maxrss survives execve, so it would report the parent's peak.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss": peak, **stats}))
"""


def load(keys: int, memtable_bytes: int) -> dict[str, int]:
    with temp_dir() as d:
        env = {**os.environ, "PYTHONPATH": REPO}
        done = subprocess.run([sys.executable, "-c", CHILD, d, str(keys), str(memtable_bytes)],
                              env=env, cwd=REPO, capture_output=True, timeout=3600)
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, int] = json.loads(done.stdout)
        return result


def test_200k_keys_of_1_kib_stay_within_a_bounded_rss() -> None:
    # ~210 MiB of data through a 4 MiB memtable: memtables (3 x 4 MiB), the block cache
    # (64 MiB budget, far from full after 2000 gets), indexes and blooms, the interpreter
    # (~30 MiB) and numpy's libraries (~20 MiB resident once imported, for the bloom filter
    # build) stay below it. What grows with the data is checked by the slow test below.
    result = load(200_000, 4 * MIB)
    assert result["tables"] >= 1 and result["flushes"] >= 40
    assert result["peak_rss"] < 150 * MIB, json.dumps(result)


@pytest.mark.slow
def test_3m_keys_of_1_kib_stay_under_600_mib() -> None:
    # Issue 3: ~3 GiB of data with the default 64 MiB memtable.
    result = load(3_000_000, 64 * MIB)
    assert result["peak_rss"] < 600 * MIB, result
