"""A 3-node respkv cluster against a single respkv node, side by side, with redis-benchmark.

Both setups run at once on this machine, so both see the same load from whatever else runs:
- ``single``: one respkv-server (a cluster of one: no peers, the in-process fast path);
- a local cluster of 3 nodes (``tests.cluster_servers.LocalCluster``: N=3, the default
  read/write consistency QUORUM, so R=W=2), each node with its own loopback address.
Every node, single or clustered, runs with ``appendfsync everysec`` (respkv's default, said
explicitly so a changed default cannot skew the comparison).

The same redis-benchmark SET and GET workload (``-d 16 -r 100000``, 50 clients, unpipelined
and with ``-P 16``) is sent to the single node and to the cluster in two ways a client fleet
would spread it:
- ``cluster (one node)``: all 50 clients connect to node 0, which coordinates every request;
- ``cluster (3 benchmarks)``: one redis-benchmark per node, 50 clients split over them, run
  at the same time; their ops/s is the sum of requests over the slowest process's wall time
  (so it never overstates), their p50/p99 the worst of the three processes.

Each ``--rounds`` round runs every (workload, test) on every setup back to back, and the
report gives the median over the rounds with the min-max range: on a shared 2-core machine a
single run is not worth believing. ``CPU us/req`` is the servers' user+system CPU (all three
nodes for the cluster, from /proc) over the requests. The ratio is cluster/single.

    python -m bench.cluster_bench [--requests N] [--rounds K] [--no-write] [--doc PATH]
                                  [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.doc_section import write_section
from bench.server_bench import cpu_seconds
from tests.cluster_servers import LocalCluster
from tests.servers import ServerProcess, free_port, respkv_server

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- cluster-bench:begin -->"
END = "<!-- cluster-bench:end -->"
PERSISTENCE = ("--appendfsync", "everysec")
CLIENTS = 50
VALUE_BYTES = 16
KEYSPACE = 100_000
TESTS = ("SET", "GET")
# (label, pipeline depth, share of --requests): pipelined runs are faster, so they get more.
WORKLOADS = [("-c 50 -P 1", 1, 1.0), ("-c 50 -P 16", 16, 2.0)]
SINGLE = "single"
CLUSTER_ONE = "cluster (one node)"
CLUSTER_SPREAD = "cluster (3 benchmarks)"
SETUPS = (SINGLE, CLUSTER_ONE, CLUSTER_SPREAD)
# Issue 4's targets: cluster ops/s >= 40% of the single node's; p99 < 10 ms at 50 clients.
RATIO_TARGET = 0.4
P99_TARGET_MS = 10.0


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    pid: int


@dataclass(frozen=True)
class Sample:
    """One redis-benchmark run (or a simultaneous group of them) on one setup."""

    setup: str
    workload: str
    test: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float


def _benchmark_argv(endpoint: Endpoint, test: str, clients: int, pipeline: int,
                    requests: int) -> list[str]:
    binary = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    return [
        binary, "-h", endpoint.host, "-p", str(endpoint.port), "-t", test.lower(),
        "-n", str(requests), "-c", str(clients), "-P", str(pipeline),
        "-d", str(VALUE_BYTES), "-r", str(KEYSPACE), "--csv",
    ]


def _parse_csv(out: str) -> tuple[float, float, float]:
    """(rps, p50 ms, p99 ms) of redis-benchmark's --csv output (its last row)."""
    rows = list(csv.DictReader(io.StringIO(out)))
    if not rows:
        raise RuntimeError(f"redis-benchmark printed no result: {out!r}")
    row = rows[-1]
    return float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"])


def run_group(setup: str, workload: str, test: str, targets: Sequence[Endpoint],
              servers: Sequence[int], pipeline: int, requests: int) -> Sample:
    """Run one redis-benchmark per target at the same time (clients and requests split
    evenly); ``servers`` are the pids whose CPU time is charged to the setup."""
    count = len(targets)
    clients = [CLIENTS // count + (1 if i < CLIENTS % count else 0) for i in range(count)]
    shares = [requests // count + (1 if i < requests % count else 0) for i in range(count)]
    # redis-benchmark spins forever against a server that never answers: always bounded.
    timeout_s = max(120.0, requests / 200)
    before = sum(cpu_seconds(pid) for pid in servers)
    procs = [subprocess.Popen(_benchmark_argv(t, test, c, pipeline, n), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for t, c, n in zip(targets, clients, shares, strict=True)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout_s)
            if proc.returncode != 0:
                raise RuntimeError(f"redis-benchmark failed ({proc.returncode}): {err}")
            results.append(_parse_csv(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    used = sum(cpu_seconds(pid) for pid in servers) - before
    # Requests over the slowest process's time: the processes overlap but do not finish
    # together, and summing their rates would count the tail of the fastest as concurrent.
    slowest_s = max(n / rps for n, (rps, _, _) in zip(shares, results, strict=True))
    return Sample(setup, workload, test, sum(shares) / slowest_s,
                  max(p50 for _, p50, _ in results), max(p99 for _, _, p99 in results),
                  used / requests * 1e6)


@dataclass(frozen=True)
class Cell:
    """The samples of one (setup, workload, test) over every round."""

    samples: tuple[Sample, ...]

    def median(self, field: str) -> float:
        return float(statistics.median(getattr(s, field) for s in self.samples))

    def spread(self, field: str) -> tuple[float, float]:
        values = [getattr(s, field) for s in self.samples]
        return min(values), max(values)


def run_rounds(single: ServerProcess, cluster: LocalCluster, requests: int,
               rounds: int) -> list[Sample]:
    assert single.proc is not None
    one = Endpoint(single.host, single.port, single.proc.pid)
    nodes = [Endpoint(host, port, node.proc.pid)
             for host, port, node in zip(cluster.hosts, cluster.ports, cluster.nodes,
                                         strict=True) if node.proc is not None]
    assert len(nodes) == len(cluster.nodes)
    pids = [n.pid for n in nodes]
    samples: list[Sample] = []
    for round_no in range(1, rounds + 1):
        for label, pipeline, scale in WORKLOADS:
            count = max(1, int(requests * scale))
            for test in TESTS:
                plan = [(SINGLE, [one], [one.pid]), (CLUSTER_ONE, nodes[:1], pids),
                        (CLUSTER_SPREAD, nodes, pids)]
                for setup, targets, servers in plan:
                    sample = run_group(setup, label, test, targets, servers, pipeline, count)
                    samples.append(sample)
                    print(f"round {round_no} {setup:22} {label:12} {test:4} "
                          f"{sample.rps:>9.0f} ops/s  p50 {sample.p50_ms:.3f} ms  "
                          f"p99 {sample.p99_ms:.3f} ms  cpu {sample.cpu_us_per_req:.1f} us/req",
                          flush=True)
    return samples


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def render(samples: Sequence[Sample], command: str, rounds: int, load: tuple[str, str]
           ) -> str:
    cells: dict[tuple[str, str, str], list[Sample]] = {}
    for s in samples:
        cells.setdefault((s.setup, s.workload, s.test), []).append(s)
    by = {key: Cell(tuple(value)) for key, value in cells.items()}
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}; load average "
        f"{load[0]} before, {load[1]} after  ",
        f"Workload: redis-benchmark `-d {VALUE_BYTES} -r {KEYSPACE}`, {CLIENTS} clients; "
        f"cluster of 3, N=3, R=W=2; appendfsync everysec everywhere; median of {rounds} "
        "interleaved round(s), [min-max] in brackets",
        "",
        "| workload | test | setup | ops/s [min-max] | ratio to single | p50 ms | p99 ms "
        "| server CPU us/req |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, _, _ in WORKLOADS:
        for test in TESTS:
            base = by[(SINGLE, label, test)].median("rps")
            for setup in SETUPS:
                cell = by[(setup, label, test)]
                rps = cell.median("rps")
                low, high = cell.spread("rps")
                ratio = "—" if setup == SINGLE else f"{rps / base:.2f}"
                lines.append(
                    f"| `{label}` | {test} | {setup} | {rps:,.0f} [{low:,.0f}-{high:,.0f}] "
                    f"| {ratio} | {cell.median('p50_ms'):.3f} | {cell.median('p99_ms'):.3f} "
                    f"| {cell.median('cpu_us_per_req'):.1f} |")
    lines += ["", verdict(by)]
    return "\n".join(lines)


def verdict(by: dict[tuple[str, str, str], Cell]) -> str:
    """The targets, checked on the unpipelined workload (issue 4 states them for it)."""
    label = WORKLOADS[0][0]
    parts = []
    for setup in (CLUSTER_ONE, CLUSTER_SPREAD):
        for test in TESTS:
            ratio = by[(setup, label, test)].median("rps") / by[(SINGLE, label, test)].median(
                "rps")
            p99 = by[(setup, label, test)].median("p99_ms")
            ok = ratio >= RATIO_TARGET and p99 < P99_TARGET_MS
            parts.append(f"{setup} {test}: ratio {ratio:.2f}, p99 {p99:.2f} ms "
                         f"({'met' if ok else 'missed'})")
    return (f"Targets (`{label}`: ratio >= {RATIO_TARGET}, p99 < {P99_TARGET_MS:g} ms): "
            + "; ".join(parts) + ".")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=50_000,
                        help="requests per unpipelined run (pipelined runs get twice as many)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    parser.add_argument("--doc", type=Path, default=DOC, help="the markdown file to update")
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be >= 1")
    command = "make bench-cluster"
    if (args.requests, args.rounds) != (50_000, 3):
        command = (f"python -m bench.cluster_bench --requests {args.requests} "
                   f"--rounds {args.rounds}")
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="respkv-cluster-bench-") as tmp:
        single = respkv_server(Path(tmp) / "single", *PERSISTENCE, port=free_port())
        cluster = LocalCluster(Path(tmp) / "cluster", 3, extra=PERSISTENCE)
        try:
            single.start()
            cluster.start()
            samples = run_rounds(single, cluster, args.requests, args.rounds)
        finally:
            cluster.stop()
            single.stop()
    section = render(samples, command, args.rounds, (load_before, _loadavg()))
    print(section)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    if not args.no_write:
        write_section(args.doc, BEGIN, END, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
