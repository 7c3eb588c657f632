"""Smoke test of bench/cluster_bench.py: a tiny run, checked for a well-formed report.

Runs the harness as `make bench-cluster` does (a subprocess that starts a single respkv node
and a 3-node local cluster and drives them with redis-benchmark), with a few hundred
requests and one round, writing into a scratch markdown file. Checks that every setup,
workload and test produced a sample with sane figures and that the section landed between
the markers with its table and verdict; never timings. docs/benchmarks.md must be left alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.cluster_bench import BEGIN, END, SETUPS, TESTS, WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 300


def test_cluster_bench_smoke(tmp_path: Path) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    doc_before = doc.read_bytes() if doc.exists() else None
    scratch = tmp_path / "benchmarks.md"
    scratch.write_text(f"# Benchmarks\n\nbefore\n\n{BEGIN}\nold figures\n{END}\n\nafter\n")
    samples_path = tmp_path / "samples.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cluster_bench", "--requests", str(REQUESTS),
         "--rounds", "1", "--doc", str(scratch), "--json", str(samples_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"harness failed:\n{proc.stdout}\n{proc.stderr}"

    samples = json.loads(samples_path.read_text())
    cells = {(s["setup"], s["workload"], s["test"]): s for s in samples}
    expected = {(setup, label, test) for setup in SETUPS for label, _, _ in WORKLOADS
                for test in TESTS}
    assert set(cells) == expected and len(samples) == len(expected)
    for key, sample in cells.items():
        assert sample["rps"] > 0, key
        assert 0 <= sample["p50_ms"] <= sample["p99_ms"], key
        assert sample["cpu_us_per_req"] >= 0, key

    text = scratch.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "old figures" not in text
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert f"Command: `python -m bench.cluster_bench --requests {REQUESTS} --rounds 1`" in section
    assert "Machine: " in section and "load average" in section
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) == len(expected)
    for setup in SETUPS:
        assert sum(f"| {setup} |" in row for row in rows) == len(WORKLOADS) * len(TESTS)
    # Every cluster row carries a ratio to the single node's ops/s; single rows do not.
    for row in rows:
        ratio = row.split("|")[5].strip()
        if "| single |" in row:
            assert ratio == "—"
        else:
            assert float(ratio) > 0
    verdict = [line for line in section.splitlines() if line.startswith("Targets (")]
    assert len(verdict) == 1
    assert verdict[0].count("met") + verdict[0].count("missed") == 4
    assert section in proc.stdout  # the same report is printed
    assert (doc.read_bytes() if doc.exists() else None) == doc_before
