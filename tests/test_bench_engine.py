"""Smoke test of bench/engine_bench.py: a tiny run of the stores every machine has.

Runs the harness as `make bench-engine` does (a subprocess, each store in its own child) with
2000 keys and --no-write, and checks that every store produced a row with sane figures and
that docs/benchmarks.md was left alone. The bench extra's stores (diskcache, lmdb, LevelDB)
are not run here, so the test needs nothing beyond the test extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORES = ["respkv", "respkv-everysec", "sqlite3", "sqlite3-1txn"]
KEYS = 2000


def test_engine_bench_smoke(tmp_path: Path) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    doc_before = doc.read_bytes() if doc.exists() else None
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.engine_bench", "--keys", str(KEYS), "--no-write",
         "--stores", ",".join(STORES), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"harness failed:\n{proc.stdout}\n{proc.stderr}"

    report = json.loads(out.read_text())
    rows = {r["store"]: r for r in report["results"]}
    assert sorted(rows) == sorted(STORES)
    for name, row in rows.items():
        assert "error" not in row, row
        assert row["problems"] == [], (name, row["problems"])
        assert row["keys"] == KEYS
        assert 0 < row["expected_hits"] < KEYS and row["hits"] == row["expected_hits"]
        for field in ("put_ops", "get_ops", "scan_ops", "disk_bytes", "peak_rss_kib",
                      "write_bytes"):
            assert row[field] > 0, (name, field, row[field])
        assert len(row["window_put_ops"]) == 1  # 2000 puts: one window of 100k, partial
        # A table row per store, each with its put rate.
        assert f"| {name} | {row['config']} | {row['put_ops']:,.0f} |" in proc.stdout

    timed = report["timed"]
    assert timed is not None and "error" not in timed, timed
    assert timed["put_max_ms"] > 0 and timed["commit_max_ms"] > 0
    assert "| put: ours / sqlite3-1txn | ≥ 1.0 |" in proc.stdout
    assert (doc.read_bytes() if doc.exists() else None) == doc_before


def test_engine_bench_refuses_unknown_store() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.engine_bench", "--keys", "10", "--no-write",
         "--stores", "respkv,rocksdb"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "rocksdb" in proc.stderr
