"""Merkle-tree anti-entropy against a naive full key comparison: time and bytes to repair.

Two replicas of the same ``--keys`` keys (real engines, Replica, ReplicaService in temporary
directories, in this one process) over the ranges one node of a default 3-node cluster
replicates (3 x ``--tokens`` vnodes, N=3: every range). Cases, each on its own fresh pair:

- ``merkle, no divergence``: one RepairSession per range (cluster/anti_entropy.py);
- ``merkle, 1% divergence``: ``--diverge`` of the keys differ (40% newer on b, 20% newer on
  a, 20% missing on a, 20% missing on b), written after the trees were built, through the
  hooks, as the node will;
- ``naive, ...``: the same pair repaired by listing every key's entry hash of every range
  (the KEYS request at level 0) and comparing it with the local list, then the same
  fetch/merge/push of the differing keys: "send every key's hash".

Time is the wall time of the whole repair in one process (both sides' work and the message
encoding, no network); bytes are the anti-entropy frames both ways (anti_entropy_messages.
wire_bytes) plus the sibling sets pushed as WRITEs. Tree building (one scan of each side) is
timed on its own: it is paid once per node start or ring change, not per repair.

    python -m bench.repair_bench [--keys N] [--diverge FRACTION] [--tokens T] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from bench.doc_section import write_section
from cluster import keys as keyspace
from cluster.anti_entropy import (
    AntiEntropyServer,
    Push,
    RepairSession,
    RepairStats,
)
from cluster.anti_entropy_messages import Reply, Request
from cluster.clock import ManualClock
from cluster.merkle import ZERO
from cluster.preflist import Placement, Replication
from cluster.replica import Replica
from cluster.replica_service import ReplicaService
from cluster.ring import NodeInfo, Ring, TokenRange
from cluster.sibling_codec import decode, encode
from cluster.tree_set import TreeSet, canonical
from cluster.version import Siblings
from engine.db import Engine
from engine.options import EngineOptions

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- repair-bench:begin -->"
END = "<!-- repair-bench:end -->"
NOW = 1_700_000_000_000
DATABASES = 16
VALUE_BYTES = 16


class Side:
    def __init__(self, path: str, ranges: list[TokenRange]) -> None:
        self.engine = Engine.open(path, EngineOptions(fsync="no"))
        self.trees = TreeSet(self.engine.scan, DATABASES)
        self.trees.set_ranges(ranges)
        self.replica = Replica(self.engine, DATABASES, 10**9, lambda message: None)
        self.replica.on_store = self.trees.on_store
        self.service = ReplicaService(self.replica, ManualClock(NOW + 10_000))
        self.server = AntiEntropyServer(self.trees, self.service)

    def build(self) -> None:
        for rng in self.trees.ranges:
            self.trees.require(rng)
        while self.trees.pending_builds():
            self.trees.build_step(50_000)

    def close(self) -> None:
        self.engine.close()


def ring_ranges(tokens: int) -> list[TokenRange]:
    generator = random.Random(1)
    nodes = [NodeInfo(f"node-{i}", tuple(generator.getrandbits(64) for _ in range(tokens)))
             for i in range(3)]
    placement = Placement(Ring.build(nodes), Replication.simple(3))
    return placement.replica_ranges("node-0")


def one_version(actor: bytes, counter: int, value: bytes) -> Siblings:
    return (({actor: (counter, NOW)}, NOW + counter, 0, actor, value),)


def load(side: Side, keys: int) -> None:
    batch: list[tuple[bytes, bytes | None]] = []
    for i in range(keys):
        key = b"key:%010d" % i
        batch.append((keyspace.engine_key(0, key), encode(one_version(b"a", 1, b"%016d" % i))))
        if len(batch) == 20_000:
            side.engine.write_batch(batch)
            batch = []
    side.engine.write_batch(batch)
    side.replica.rebuild()


def diverge(a: Side, b: Side, keys: int, fraction: float) -> int:
    """Make ``fraction`` of the keys differ (module docstring); returns how many."""
    count = int(keys * fraction)
    chosen = random.Random(7).sample(range(keys), count)
    for n, i in enumerate(chosen):
        key = b"key:%010d" % i
        kind = n % 5
        if kind in (0, 1):
            b.service.merge(0, key, one_version(b"a", 2, b"newer-on-b-%06d" % i))
        elif kind == 2:
            a.service.merge(0, key, one_version(b"a", 2, b"newer-on-a-%06d" % i))
        else:
            side = a if kind == 3 else b
            ekey = keyspace.engine_key(0, key)
            old = side.engine.get(ekey)
            side.engine.delete(ekey)
            side.trees.on_write(0, key, old, None)
    return count


class NaiveSession(RepairSession):
    """Every key's hash of every range crosses: level 0 listing, no trees consulted."""

    def _steps(self) -> Generator[Request, Reply, None]:
        different = (0, 1, b"\x01" * len(ZERO))
        for db in range(1):  # the bench writes db 0 only; a real one would do every db
            yield from self._repair_db(db, (0, 1, ZERO), different)


def drive(a: Side, b: Side, naive: bool) -> tuple[RepairStats, int, float]:
    """Repair every range from a against b; returns (stats, push frames bytes, seconds)."""
    stats = RepairStats()
    pushes: list[Push] = []
    started = time.perf_counter()
    for rng in a.trees.ranges:
        session = (NaiveSession if naive else RepairSession)(a.server, rng)
        while (request := session.next_request()) is not None:
            session.feed(b.server.serve(request))
            pushes = session.take_pushes()
            for push in pushes:
                b.service.merge(push.db, push.key, decode(push.siblings))
        for push in session.take_pushes():
            b.service.merge(push.db, push.key, decode(push.siblings))
        stats.add(session.stats)
    elapsed = time.perf_counter() - started
    # A WRITE frame: 9-byte header + [db, key, siblings, nil] (msgpack overhead ~8 bytes).
    push_frames = stats.push_bytes + stats.keys_pushed * (9 + 8 + 15)
    return stats, push_frames, elapsed


def contents(side: Side) -> dict[bytes, bytes]:
    return {ekey: canonical(raw) for ekey, raw in side.engine.scan(b"", b"\x01")}


@dataclass
class Row:
    case: str
    seconds: float
    bytes_total: int
    requests: int
    keys_listed: int
    sibling_sets: int
    repaired: int


def run_case(work: str, ranges: list[TokenRange], keys: int, fraction: float, naive: bool,
             template: str) -> tuple[Row, float, int]:
    a_dir, b_dir = os.path.join(work, "a"), os.path.join(work, "b")
    for target in (a_dir, b_dir):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(template, target)
    a, b = Side(a_dir, ranges), Side(b_dir, ranges)
    a.replica.rebuild()
    b.replica.rebuild()
    started = time.perf_counter()
    a.build()
    build_s = time.perf_counter() - started
    b.build()
    memory = a.trees.memory_bytes()
    diverged = diverge(a, b, keys, fraction) if fraction else 0
    stats, push_frames, seconds = drive(a, b, naive)
    if diverged:
        assert contents(a) == contents(b), "the replicas did not converge"
    label = ("naive" if naive else "merkle") + (f", {fraction:.0%} divergence" if fraction
                                                  else ", no divergence")
    row = Row(label, seconds, stats.bytes_sent + stats.bytes_received + push_frames,
              stats.requests, stats.keys_listed, stats.keys_pulled + stats.keys_pushed,
              stats.keys_repaired)
    a.close()
    b.close()
    print(f"{label}: {seconds:.2f} s, {row.bytes_total:,} bytes, {row.requests:,} requests, "
          f"{row.keys_listed:,} keys listed, {row.sibling_sets:,} sibling sets, "
          f"{row.repaired:,} repaired (diverged {diverged:,})", flush=True)
    return row, build_s, memory


def human_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def render(rows: list[Row], keys: int, ranges: int, build_s: float, memory: int,
           command: str) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}",
        "",
        f"Setup ({platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores; {keys:,} keys of {VALUE_BYTES}-byte values in db 0, "
        f"{ranges:,} ranges: one node of 3 x {ranges // 3} vnodes, N=3):",
        "",
        "| case | time | bytes | requests | key hashes listed | sibling sets sent | "
        "keys repaired |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row.case} | {row.seconds:.2f} s | {human_bytes(row.bytes_total)} | "
                     f"{row.requests:,} | {row.keys_listed:,} | {row.sibling_sets:,} | "
                     f"{row.repaired:,} |")
    lines += ["", f"Tree build (one scan of one replica, every range): {build_s:.1f} s; "
                  f"trees' memory estimate: {human_bytes(memory)} "
                  f"({memory / max(keys, 1):.0f} bytes per key)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--diverge", type=float, default=0.01)
    parser.add_argument("--tokens", type=int, default=512, help="vnodes per node")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    ranges = ring_ranges(args.tokens)
    work = tempfile.mkdtemp(prefix="repair-bench-")
    try:
        template = os.path.join(work, "template")
        started = time.perf_counter()
        seed = Side(template, ranges)
        load(seed, args.keys)
        seed.engine.sync()
        seed.close()
        print(f"loaded {args.keys:,} keys in {time.perf_counter() - started:.1f} s", flush=True)
        rows: list[Row] = []
        build_s, memory = 0.0, 0
        for naive in (False, True):
            for fraction in (0.0, args.diverge):
                row, build, mem = run_case(work, ranges, args.keys, fraction, naive, template)
                rows.append(row)
                if not naive and not fraction:
                    build_s, memory = build, mem
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python -m bench.repair_bench" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:]
                                                 else "")
    table = render(rows, args.keys, len(ranges), build_s, memory, command)
    print(table)
    if not args.no_write:
        write_section(DOC, BEGIN, END, table, heading="Anti-entropy repair")


if __name__ == "__main__":
    main()
