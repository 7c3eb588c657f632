"""respkv-server against redis-server, side by side, with redis-benchmark.

All three servers run at once, so they see the same machine state:
- redis-server with `appendonly yes appendfsync everysec` (same durability as respkv's
  default) and again with persistence off;
- respkv-server with its defaults (commit log, appendfsync everysec).
Each round runs every (workload, test) on the three servers back to back: SET and GET,
100-byte values, random keys, `-c 50 -P 1`, `-c 50 -P 16`, and `-c 1` for latency, plus
`SET ... EX 3600` (a cache's write) and INCR at `-c 50 -P 1` (not issue targets). A
ratio is taken within one round (the same moment's load), and the report gives the median
over `--rounds` with the min-max range: on a shared 2-core machine one run is not worth
believing. Reports ops/s, the respkv/redis ratio, p50/p99 latency and each server's CPU
time per request (read from /proc: redis-benchmark itself takes about one of this
machine's two cores, so CPU per request is the truer efficiency figure), and writes the
table into docs/benchmarks.md between markers.

    python -m bench.server_bench [--requests N] [--rounds K] [--no-write]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.doc_section import write_section
from tests.servers import ServerProcess, free_port, redis_server, respkv_server

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- server-bench:begin -->"
END = "<!-- server-bench:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    server: str
    workload: str
    test: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and of its live children (the engine's table workers
    write flush and compaction tables in processes of their own)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / CLK_TCK
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            total += cpu_seconds(int(child))
        except OSError:  # it ended meanwhile
            pass
    return total


# What each test asks redis-benchmark for: one of its own tests, or a command of ours with
# its random key. "SET EX" is the cache's write (a value with a time to live), the same key
# space and value size as SET's.
TESTS: dict[str, list[str]] = {
    "SET": ["-t", "set"],
    "GET": ["-t", "get"],
    "SET EX": ["SET", "key:__rand_int__", "x" * 100, "EX", "3600"],
    "INCR": ["-t", "incr"],
}


def run_benchmark(
    server: ServerProcess, test: str, clients: int, pipeline: int, requests: int
) -> tuple[float, float, float, float]:
    assert server.proc is not None
    binary = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    argv = [
        binary, "-h", "127.0.0.1", "-p", str(server.port), "-n", str(requests),
        "-c", str(clients), "-P", str(pipeline), "-d", "100", "-r", "100000", "--csv",
        *TESTS[test],
    ]
    before = cpu_seconds(server.proc.pid)
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600).stdout
    used = cpu_seconds(server.proc.pid) - before
    rows = list(csv.DictReader(io.StringIO(out)))
    row = rows[-1]
    return (
        float(row["rps"]),
        float(row["p50_latency_ms"]),
        float(row["p99_latency_ms"]),
        used / requests * 1e6,
    )


WORKLOADS = [  # (label, clients, pipeline, share of --requests, tests)
    ("-c 50 -P 1", 50, 1, 1.0, ("SET", "GET", "SET EX", "INCR")),
    ("-c 50 -P 16", 50, 16, 4.0, ("SET", "GET")),
    ("-c 1 -P 1", 1, 1, 0.25, ("SET", "GET")),
]


SERVERS = ("respkv", "redis-aof", "redis-nopersist")


def bench_round(servers: dict[str, ServerProcess], requests: int) -> list[Result]:
    """One round: every (workload, test) on every server, back to back."""
    results = []
    for label, clients, pipeline, scale, tests in WORKLOADS:
        for test in tests:
            count = int(requests * scale)
            for name in SERVERS:
                rps, p50, p99, cpu = run_benchmark(servers[name], test, clients, pipeline, count)
                results.append(Result(name, label, test, rps, p50, p99, cpu))
                print(
                    f"{name:16} {label:12} {test:6} {rps:>10.0f} ops/s"
                    f"  p50 {p50:.3f} ms  p99 {p99:.3f} ms  cpu {cpu:.2f} us/req",
                    flush=True,
                )
    return results


def render(rounds: list[list[Result]], command: str) -> str:
    """Medians over the rounds; each ratio is taken within its round, then its median and
    range are shown."""
    by = [{(r.server, r.workload, r.test): r for r in results} for results in rounds]

    def median(server: str, label: str, test: str, field: str) -> float:
        return statistics.median(getattr(b[(server, label, test)], field) for b in by)

    def ratio(label: str, test: str, reference: str) -> str:
        values = [b[("respkv", label, test)].rps / b[(reference, label, test)].rps for b in by]
        spread = f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
        return f"{statistics.median(values):.2f}{spread}"

    lines = [
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end; "
        f"median of {len(rounds)} round(s), ratio range in brackets",
        "",
        "| workload | test | respkv ops/s | redis (aof everysec) ops/s | ratio "
        "| redis (no persistence) ops/s | ratio | respkv p50/p99 ms | redis p50/p99 ms "
        "| respkv CPU us/req | redis CPU us/req |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for label, _, _, _, tests in WORKLOADS:
        for test in tests:
            ours = {f: median("respkv", label, test, f) for f in
                    ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
            aof = {f: median("redis-aof", label, test, f) for f in
                   ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
            plain_rps = median("redis-nopersist", label, test, "rps")
            lines.append(
                f"| `{label}` | {test} | {ours['rps']:,.0f} | {aof['rps']:,.0f} | "
                f"{ratio(label, test, 'redis-aof')} | {plain_rps:,.0f} | "
                f"{ratio(label, test, 'redis-nopersist')} | "
                f"{ours['p50_ms']:.3f} / {ours['p99_ms']:.3f} | "
                f"{aof['p50_ms']:.3f} / {aof['p99_ms']:.3f} | "
                f"{ours['cpu_us_per_req']:.2f} | {aof['cpu_us_per_req']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    command = "make bench"
    if args.requests != 200_000 or args.rounds != 3:
        command = (f"python -m bench.server_bench --requests {args.requests} "
                   f"--rounds {args.rounds}")
    rounds: list[list[Result]] = []
    with tempfile.TemporaryDirectory(prefix="respkv-bench-") as tmp:
        makers = {
            "respkv": lambda d: respkv_server(d, "--appendfsync", "everysec", port=free_port()),
            "redis-aof": lambda d: redis_server(
                d, "--appendonly", "yes", "--appendfsync", "everysec"),
            "redis-nopersist": lambda d: redis_server(d),
        }
        servers: dict[str, ServerProcess] = {}
        try:
            for name in SERVERS:
                servers[name] = makers[name](Path(tmp) / name)
                servers[name].start()
            for number in range(args.rounds):
                print(f"round {number + 1} of {args.rounds}", flush=True)
                rounds.append(bench_round(servers, args.requests))
        finally:
            for server in servers.values():
                server.stop()
    section = render(rounds, command)
    print(section)
    if not args.no_write:
        write_section(DOC, BEGIN, END, section)


if __name__ == "__main__":
    sys.exit(main())
