"""Smoke test of bench/server_bench.py: a tiny run of two rounds, checked for a well-formed
report (every workload and test, ratios with their range); never timings. Runs with
--no-write, so docs/benchmarks.md is left alone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench.server_bench import WORKLOADS

ROOT = Path(__file__).resolve().parent.parent


def test_server_bench_smoke() -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    before = doc.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.server_bench", "--requests", "400", "--rounds", "2",
         "--no-write"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"harness failed:\n{proc.stdout}\n{proc.stderr}"
    assert doc.read_bytes() == before
    out = proc.stdout
    assert out.count("round ") >= 2
    assert "Command: `python -m bench.server_bench --requests 400 --rounds 2`" in out
    assert "median of 2 round(s)" in out
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert len(rows) == sum(len(tests) for *_, tests in WORKLOADS)
    for row in rows:
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        assert float(cells[2].replace(",", "")) > 0  # respkv ops/s
        for ratio in (cells[4], cells[6]):
            median, low, high = map(float, re.fullmatch(
                r"([\d.]+) \(([\d.]+)-([\d.]+)\)", ratio).groups())  # type: ignore[union-attr]
            assert 0 < low <= median <= high
