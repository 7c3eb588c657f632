"""The respkv storage engine against sqlite3, diskcache, lmdb and LevelDB, side by side.

Issue 3's benchmark. Every store gets the same data in one run, each in its own subprocess
(so peak RSS and /proc/self/io are its own):
1. N puts (16-byte random keys, 100-byte random values, random order), in groups of 1000;
2. N random gets, about 90% hits (the misses are keys never put);
3. one full ordered scan.

Stores (names for --stores):
- respkv            engine/db.py, fsync "no", put() x 1000 then commit() (the server's group
                    commit per event-loop batch)
- respkv-everysec   the same with fsync "everysec": a thread calls sync() every second, as
                    the server's timer does
- respkv-compacting the same as respkv with 8 MiB memtables and the server's compaction
                    rate (64 MiB/s): ~25 flushes and several compactions during the puts, for
                    the sustained target "while flushes and compactions run"
- sqlite3           WAL, synchronous=NORMAL, WITHOUT ROWID table, executemany + commit per 1000
- sqlite3-1txn      the same, all puts in one WAL transaction
- diskcache         Cache.set() per put (each its own sqlite transaction: diskcache's
                    normal use); no eviction; scan = iterkeys() (ordered) + a get per key
- lmdb              one write transaction per 1000 puts, sync=False (no fsync per commit)
- leveldb           plyvel (LevelDB bundled in its wheel), defaults, write_batch of 1000

Measured per store: ops/s per phase; bytes on disk after close (allocated blocks); peak RSS
(VmHWM, reset once the data set is generated, so it is the store plus the ~140 MiB data set
and the interpreter; the "store" column subtracts the RSS at open); write amplification =
(write_bytes - cancelled_write_bytes from /proc/self/io, open to close) / (N x 116 bytes);
"sustained": the put rate per window of 100k puts and the longest group of 1000 puts (with its
commit). A second respkv run times every put() and commit() call alone for the longest stall.

Durability is alike for all but the sqlite one-transaction case: every group is handed to the
OS without fsync (respkv "no", LevelDB sync=False, lmdb sync=False, sqlite WAL + NORMAL).

    python -m bench.engine_bench [--keys N] [--no-write] [--stores a,b,...] [--json FILE]
                                 [--engine-rev REV]

The respkv stores run the engine/ of the working tree, or with --engine-rev the engine/ of a
commit (exported with git archive), e.g. HEAD while someone has uncommitted engine work.

Writes its tables into docs/benchmarks.md between the engine-bench markers unless --no-write.
Exits non-zero if a store fails or a selected store's package is not installed (installs
nothing: `make bench-engine` installs the `bench` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.doc_section import write_section

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- engine-bench:begin -->"
END = "<!-- engine-bench:end -->"

KEY = 16
VALUE = 100
BATCH = 1000
WINDOW = 100_000
HIT_RATE = 0.9
DEFAULT_KEYS = 1_000_000
MIB = 1024 * 1024

# name -> (PyPI package it needs or None, one-line configuration for the table)
STORES: dict[str, tuple[str | None, str]] = {
    "respkv": (None, 'fsync "no", commit() every 1000 puts'),
    "respkv-everysec": (None, 'fsync "everysec": commit() every 1000, sync() every 1 s'),
    "respkv-compacting": (None, 'as respkv, 8 MiB memtables, compaction-throughput 64 MiB/s'),
    "sqlite3": (None, "WAL, synchronous=NORMAL, transaction per 1000"),
    "sqlite3-1txn": (None, "WAL, synchronous=NORMAL, one transaction for all puts"),
    "lmdb": ("lmdb", "transaction per 1000, sync=False"),
    "leveldb": ("plyvel", "plyvel defaults, write_batch of 1000"),
    "diskcache": ("diskcache", "Cache.set() per put, eviction off"),
}
ALWAYS_AVAILABLE = [name for name, (package, _) in STORES.items() if package is None]
PRIMARY = "respkv"


# ---------------------------------------------------------------------------------------------
# Data: the same for every store, generated in each child from the seed.


@dataclass
class Data:
    n: int
    keys: bytes  # n keys of KEY bytes, in put order
    values: bytes  # n values of VALUE bytes
    gets: bytes  # n keys of KEY bytes, in get order
    expected_hits: int
    min_key: bytes
    max_key: bytes


def make_data(n: int, seed: int) -> Data:
    """Contiguous buffers, sliced in the timed loops: each store gets fresh bytes objects (as
    from a parser) and the data set costs no per-object memory."""
    rng = random.Random(seed)
    keys = rng.randbytes(KEY * n)
    values = rng.randbytes(VALUE * n)
    gets = bytearray(KEY * n)
    hits = 0
    for j in range(0, KEY * n, KEY):
        if rng.random() < HIT_RATE:
            i = rng.randrange(n) * KEY
            gets[j:j + KEY] = keys[i:i + KEY]
            hits += 1
        else:
            gets[j:j + KEY] = rng.randbytes(KEY)  # never put (2^-128 odds of a collision)
    all_keys = [keys[i:i + KEY] for i in range(0, KEY * n, KEY)]
    return Data(n, keys, values, bytes(gets), hits, min(all_keys), max(all_keys))


# ---------------------------------------------------------------------------------------------
# Stores. put_group(lo, hi) puts keys lo..hi-1 and makes them a committed group; get_group
# returns the number of hits; scan() returns (count, value bytes, first key, last key).


class Store:
    def __init__(self, path: str, data: Data) -> None:
        self.path = path
        self.data = data

    def put_group(self, lo: int, hi: int) -> None:
        raise NotImplementedError

    def finish_puts(self) -> None:
        """After the last group (the one-transaction case commits here)."""

    def get_group(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def _count_hits(self, get: Callable[[bytes], object], lo: int, hi: int) -> int:
        """Look up the get keys of groups lo..hi with `get`; how many were found."""
        gets = self.data.gets
        hits = 0
        for k in range(lo * KEY, hi * KEY, KEY):
            if get(gets[k:k + KEY]) is not None:
                hits += 1
        return hits

    def scan(self) -> tuple[int, int, bytes | None, bytes | None]:
        raise NotImplementedError

    def get_one(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        return {}

    def helper_pids(self) -> list[int]:
        """Processes of the store's own that do part of its work (their I/O and RSS count)."""
        return []


def _scan_loop(iterator: Any) -> tuple[int, int, bytes | None, bytes | None]:
    it = iter(iterator)
    head = next(it, None)
    if head is None:
        return 0, 0, None, None
    first = key = head[0]
    count = 1
    nbytes = len(head[1])
    for key, value in it:  # noqa: B007 - key is the last key after the loop
        count += 1
        nbytes += len(value)
    return count, nbytes, bytes(first), bytes(key)


class RespkvStore(Store):
    def __init__(self, path: str, data: Data, fsync: str, *, timed_calls: bool = False,
                 **tuning: int) -> None:
        super().__init__(path, data)
        from engine.db import Engine
        from engine.options import EngineOptions

        # As the server opens it: tables written by the table workers (`table-workers yes`);
        # an engine from before that option (--engine-rev) writes them in-process.
        extra: dict[str, object] = dict(tuning)
        if "table_workers" in EngineOptions.__dataclass_fields__:
            extra["table_workers"] = True
        self.db = Engine.open(path, EngineOptions(fsync=fsync, **extra))  # type: ignore[arg-type]
        self.timed_calls = timed_calls
        self.put_max_ns = self.commit_max_ns = 0
        self.puts_over_1ms = self.puts_over_100ms = self.commits_over_100ms = 0
        self.syncs = 0
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if fsync == "everysec":
            self._syncer = threading.Thread(target=self._sync_every_second, daemon=True)
            self._syncer.start()

    def _sync_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.db.sync()
            self.syncs += 1

    def put_group(self, lo: int, hi: int) -> None:
        if self.timed_calls:
            self._put_group_timed(lo, hi)
            return
        put = self.db.put
        keys, values = self.data.keys, self.data.values
        for k, v in zip(range(lo * KEY, hi * KEY, KEY), range(lo * VALUE, hi * VALUE, VALUE),
                        strict=True):
            put(keys[k:k + KEY], values[v:v + VALUE])
        self.db.commit()

    def _put_group_timed(self, lo: int, hi: int) -> None:
        put = self.db.put
        clock = time.perf_counter_ns
        keys, values = self.data.keys, self.data.values
        worst = self.put_max_ns
        for k, v in zip(range(lo * KEY, hi * KEY, KEY), range(lo * VALUE, hi * VALUE, VALUE),
                        strict=True):
            key, value = keys[k:k + KEY], values[v:v + VALUE]
            t0 = clock()
            put(key, value)
            took = clock() - t0
            if took > 1_000_000:
                self.puts_over_1ms += 1
                if took > 100_000_000:
                    self.puts_over_100ms += 1
                if took > worst:
                    worst = took
            elif took > worst:
                worst = took
        self.put_max_ns = worst
        t0 = clock()
        self.db.commit()
        took = clock() - t0
        self.commit_max_ns = max(self.commit_max_ns, took)
        if took > 100_000_000:
            self.commits_over_100ms += 1

    def get_group(self, lo: int, hi: int) -> int:
        return self._count_hits(self.db.get, lo, hi)

    def scan(self) -> tuple[int, int, bytes | None, bytes | None]:
        return _scan_loop(self.db.scan())

    def get_one(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        self.extra_stats = {k: v for k, v in self.db.stats().items() if isinstance(v, int)}
        self.db.close()

    def helper_pids(self) -> list[int]:
        try:
            from engine.table_worker import COMPACTIONS, FLUSHES
        except ImportError:  # an engine from before the table workers (--engine-rev)
            return []
        return [pid for pid in (FLUSHES.pid(), COMPACTIONS.pid()) if pid is not None]

    def extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine_stats": self.extra_stats}
        if self._syncer is not None:
            out["background_syncs"] = self.syncs
        if self.timed_calls:
            out.update(put_max_ms=self.put_max_ns / 1e6, commit_max_ms=self.commit_max_ns / 1e6,
                       puts_over_1ms=self.puts_over_1ms, puts_over_100ms=self.puts_over_100ms,
                       commits_over_100ms=self.commits_over_100ms)
        return out


class SqliteStore(Store):
    def __init__(self, path: str, data: Data, *, one_transaction: bool) -> None:
        super().__init__(path, data)
        os.makedirs(path, exist_ok=True)
        self.conn = sqlite3.connect(os.path.join(path, "kv.sqlite3"), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        self.one_transaction = one_transaction
        self.in_transaction = False

    def _rows(self, lo: int, hi: int) -> Any:
        keys, values = self.data.keys, self.data.values
        for k, v in zip(range(lo * KEY, hi * KEY, KEY), range(lo * VALUE, hi * VALUE, VALUE),
                        strict=True):
            yield keys[k:k + KEY], values[v:v + VALUE]

    def put_group(self, lo: int, hi: int) -> None:
        if not self.in_transaction:
            self.conn.execute("BEGIN")
            self.in_transaction = True
        self.conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", self._rows(lo, hi))
        if not self.one_transaction:
            self.conn.execute("COMMIT")
            self.in_transaction = False

    def finish_puts(self) -> None:
        if self.in_transaction:
            self.conn.execute("COMMIT")
            self.in_transaction = False

    def get_group(self, lo: int, hi: int) -> int:
        execute = self.conn.execute
        sql = "SELECT v FROM kv WHERE k = ?"
        gets = self.data.gets
        hits = 0
        for k in range(lo * KEY, hi * KEY, KEY):
            if execute(sql, (gets[k:k + KEY],)).fetchone() is not None:
                hits += 1
        return hits

    def scan(self) -> tuple[int, int, bytes | None, bytes | None]:
        return _scan_loop(self.conn.execute("SELECT k, v FROM kv ORDER BY k"))

    def get_one(self, key: bytes) -> bytes | None:
        row = self.conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self.conn.close()


class DiskcacheStore(Store):
    def __init__(self, path: str, data: Data) -> None:
        super().__init__(path, data)
        import diskcache

        self.cache = diskcache.Cache(path, eviction_policy="none", size_limit=1 << 62)

    def put_group(self, lo: int, hi: int) -> None:
        put = self.cache.set
        keys, values = self.data.keys, self.data.values
        for k, v in zip(range(lo * KEY, hi * KEY, KEY), range(lo * VALUE, hi * VALUE, VALUE),
                        strict=True):
            put(keys[k:k + KEY], values[v:v + VALUE])

    def get_group(self, lo: int, hi: int) -> int:
        return self._count_hits(self.cache.get, lo, hi)

    def scan(self) -> tuple[int, int, bytes | None, bytes | None]:
        cache = self.cache
        return _scan_loop((key, cache[key]) for key in cache.iterkeys())

    def get_one(self, key: bytes) -> bytes | None:
        value = self.cache.get(key)
        return None if value is None else bytes(value)

    def close(self) -> None:
        self.cache.close()


class LmdbStore(Store):
    def __init__(self, path: str, data: Data) -> None:
        super().__init__(path, data)
        import lmdb

        map_size = max(256 * MIB, data.n * (KEY + VALUE) * 8)
        self.env = lmdb.open(path, map_size=map_size, sync=False)
        self.read_txn: Any = None

    def put_group(self, lo: int, hi: int) -> None:
        keys, values = self.data.keys, self.data.values
        with self.env.begin(write=True) as txn:
            put = txn.put
            for k, v in zip(range(lo * KEY, hi * KEY, KEY),
                            range(lo * VALUE, hi * VALUE, VALUE), strict=True):
                put(keys[k:k + KEY], values[v:v + VALUE])

    def _reader(self) -> Any:
        if self.read_txn is None:
            self.read_txn = self.env.begin()
        return self.read_txn

    def get_group(self, lo: int, hi: int) -> int:
        return self._count_hits(self._reader().get, lo, hi)

    def scan(self) -> tuple[int, int, bytes | None, bytes | None]:
        return _scan_loop(self._reader().cursor())

    def get_one(self, key: bytes) -> bytes | None:
        value = self._reader().get(key)
        return None if value is None else bytes(value)

    def close(self) -> None:
        if self.read_txn is not None:
            self.read_txn.abort()
        self.env.sync(True)
        self.env.close()


class LeveldbStore(Store):
    def __init__(self, path: str, data: Data) -> None:
        super().__init__(path, data)
        import plyvel

        self.db = plyvel.DB(path, create_if_missing=True)

    def put_group(self, lo: int, hi: int) -> None:
        keys, values = self.data.keys, self.data.values
        with self.db.write_batch() as batch:
            put = batch.put
            for k, v in zip(range(lo * KEY, hi * KEY, KEY),
                            range(lo * VALUE, hi * VALUE, VALUE), strict=True):
                put(keys[k:k + KEY], values[v:v + VALUE])

    def get_group(self, lo: int, hi: int) -> int:
        return self._count_hits(self.db.get, lo, hi)

    def scan(self) -> tuple[int, int, bytes | None, bytes | None]:
        return _scan_loop(self.db.iterator())

    def get_one(self, key: bytes) -> bytes | None:
        value = self.db.get(key)
        return None if value is None else bytes(value)

    def close(self) -> None:
        self.db.close()


def open_store(name: str, path: str, data: Data, timed_calls: bool) -> Store:
    if name == "respkv":
        return RespkvStore(path, data, "no", timed_calls=timed_calls)
    if name == "respkv-everysec":
        return RespkvStore(path, data, "everysec", timed_calls=timed_calls)
    if name == "respkv-compacting":
        return RespkvStore(path, data, "no", memtable_size_bytes=8 * MIB,
                           compaction_throughput_bytes_per_s=64 * MIB)
    if timed_calls:
        raise SystemExit("--timed-calls is for the respkv stores only")
    if name == "sqlite3":
        return SqliteStore(path, data, one_transaction=False)
    if name == "sqlite3-1txn":
        return SqliteStore(path, data, one_transaction=True)
    if name == "diskcache":
        return DiskcacheStore(path, data)
    if name == "lmdb":
        return LmdbStore(path, data)
    if name == "leveldb":
        return LeveldbStore(path, data)
    raise SystemExit(f"unknown store {name!r}")


# ---------------------------------------------------------------------------------------------
# The child: one store, one process.


def proc_io(pid: int | str = "self") -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = int(value)
    return fields


def proc_status_kib(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def disk_usage(path: str) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of every file under path."""
    allocated = apparent = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_child(name: str, path: str, n: int, seed: int, timed_calls: bool,
              engine_path: str | None) -> dict[str, Any]:
    if engine_path:
        sys.path.insert(0, engine_path)
    import engine

    data = make_data(n, seed)
    gc.collect()
    hwm_reset = reset_peak_rss()
    rss_at_open = proc_status_kib("VmRSS")
    io0 = proc_io()
    clock = time.perf_counter

    t_open = clock()
    store = open_store(name, path, data, timed_calls)
    open_s = clock() - t_open

    # Puts, in groups of BATCH, timing each group (one clock read per group).
    group_ends: list[float] = []
    t_puts = clock()
    for lo in range(0, n, BATCH):
        store.put_group(lo, min(lo + BATCH, n))
        group_ends.append(clock())
    store.finish_puts()
    group_ends[-1] = clock()
    put_s = group_ends[-1] - t_puts
    io_puts = proc_io()

    t0 = clock()
    hits = 0
    for lo in range(0, n, BATCH):
        hits += store.get_group(lo, min(lo + BATCH, n))
    get_s = clock() - t0

    t0 = clock()
    count, value_bytes, first, last = store.scan()
    scan_s = clock() - t0

    # Untimed checks: the store returned what was put.
    problems = []
    if hits != data.expected_hits:
        problems.append(f"gets found {hits} keys, expected {data.expected_hits}")
    if count != n or value_bytes != n * VALUE:
        problems.append(f"scan returned {count} entries / {value_bytes} value bytes, "
                        f"expected {n} / {n * VALUE}")
    if (first, last) != (data.min_key, data.max_key):
        problems.append("scan is not in key order (first/last key differ from min/max)")
    sample = random.Random(seed + 1)
    for _ in range(min(n, 200)):
        i = sample.randrange(n)
        if store.get_one(data.keys[i * KEY:(i + 1) * KEY]) != \
                data.values[i * VALUE:(i + 1) * VALUE]:
            problems.append(f"wrong value for key #{i}")
            break

    t0 = clock()
    store.close()
    close_s = clock() - t0
    io1 = proc_io()
    allocated, apparent = disk_usage(path)

    written = io1["write_bytes"] - io0["write_bytes"]
    cancelled = io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"]
    helper_rss_kib = 0
    for pid in store.helper_pids():  # started after open: all their I/O is this run's
        helper_io = proc_io(pid)
        written += helper_io["write_bytes"]
        cancelled += helper_io["cancelled_write_bytes"]
        helper_rss_kib += proc_status_kib("VmHWM", pid)
    logical = n * (KEY + VALUE)
    windows = []
    start = t_puts
    per_window = max(1, WINDOW // BATCH)
    for w in range(0, len(group_ends), per_window):
        end = group_ends[min(w + per_window, len(group_ends)) - 1]
        puts_in = min(n, (w + per_window) * BATCH) - w * BATCH
        windows.append(puts_in / (end - start))
        start = end
    gaps = [b - a for a, b in zip([t_puts, *group_ends[:-1]], group_ends, strict=True)]
    return {
        "store": name,
        "config": STORES[name][1],
        "engine_file": engine.__file__,
        "keys": n,
        "timed_calls": timed_calls,
        "open_s": open_s,
        "put_s": put_s,
        "get_s": get_s,
        "scan_s": scan_s,
        "close_s": close_s,
        "put_ops": n / put_s,
        "get_ops": n / get_s,
        "scan_ops": count / scan_s if scan_s else 0.0,
        "hits": hits,
        "expected_hits": data.expected_hits,
        "disk_bytes": allocated,
        "disk_apparent_bytes": apparent,
        "logical_bytes": logical,
        "rss_at_open_kib": rss_at_open,
        "peak_rss_kib": proc_status_kib("VmHWM"),
        "helper_peak_rss_kib": helper_rss_kib,
        "peak_rss_reset": hwm_reset,
        "write_bytes": written,
        "cancelled_write_bytes": cancelled,
        "write_bytes_puts": io_puts["write_bytes"] - io0["write_bytes"],
        "write_amp": (written - cancelled) / logical,
        "window_put_ops": windows,
        "max_group_ms": max(gaps) * 1e3,
        "problems": problems,
        **store.extra(),
    }


# ---------------------------------------------------------------------------------------------
# The parent: runs every store in turn, then renders and writes the tables.


def versions() -> str:
    parts = [f"Python {platform.python_version()}", f"SQLite {sqlite3.sqlite_version}"]
    for dist in ("plyvel", "lmdb", "diskcache"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    with contextlib.suppress(Exception):
        import plyvel

        parts.append(f"LevelDB {plyvel.__leveldb_version__}")
    with contextlib.suppress(Exception):
        import lmdb

        parts.append(f"LMDB {'.'.join(map(str, lmdb.version()))}")
    return ", ".join(parts)


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def engine_revision(rev: str | None) -> str:
    if rev is not None:
        return "engine/ as committed in " + git("log", "-1", "--format=%h %s", rev, "--",
                                                 "engine")[:100]
    last = git("log", "-1", "--format=%h %s", "--", "engine")[:100]
    dirty = git("status", "--porcelain", "--", "engine")
    return ("working tree engine/, " + ("with uncommitted changes on top of " if dirty else "")
            + "last commit touching engine/: " + last)


def export_engine(rev: str, into: str) -> str:
    """engine/ at commit rev, extracted under into; returns the directory to put on sys.path."""
    tar = subprocess.run(["git", "archive", "--format=tar", rev, "engine"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def run_store(name: str, n: int, seed: int, tmp: str, timed_calls: bool,
              engine_path: str | None) -> dict[str, Any]:
    path = os.path.join(tmp, name + ("-timed" if timed_calls else ""))
    out = path + ".json"
    argv = [sys.executable, "-m", "bench.engine_bench", "--child", name, "--dir", path,
            "--keys", str(n), "--seed", str(seed), "--out", out]
    if timed_calls:
        argv.append("--timed-calls")
    if engine_path:
        argv += ["--engine-path", engine_path]
    load = os.getloadavg()[0]
    log(f"== {name}{' (every call timed)' if timed_calls else ''}: {n:,} keys "
        f"(load average {load:.2f})")
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, check=False)
    try:
        if proc.returncode != 0:
            return {"store": name, "error": f"child exited with status {proc.returncode}"}
        result: dict[str, Any] = json.loads(Path(out).read_text())
        result["load_before"] = load
        if engine_path and name.startswith("respkv") and \
                not result["engine_file"].startswith(engine_path):
            return {"store": name, "error": f"imported {result['engine_file']}, "
                                            f"not the engine exported to {engine_path}"}
        return result
    finally:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.remove(out)
        os.sync()  # the next store does not pay for this one's dirty pages
        log(f"   done in {time.monotonic() - started:.1f} s")


def fmt_ops(x: float) -> str:
    return f"{x:,.0f}"


def render(results: list[dict[str, Any]], timed: dict[str, Any] | None, command: str,
           n: int, engine_rev: str | None) -> str:
    ok = {r["store"]: r for r in results if "error" not in r}
    lines = [
        f"Command: `{command}` ({n:,} keys of {KEY} bytes, values of {VALUE} bytes, "
        f"groups of {BATCH}, {HIT_RATE:.0%} get hits)  ",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, {time.strftime('%Y-%m-%d %H:%M')}; shared: other engineers "
        f"ran tests at the same time, so the absolute figures are noisy, the same-run ratios "
        f"less so  ",
        f"Versions: {versions()}  ",
        f"Engine: {engine_revision(engine_rev)}",
        "",
        "| store | configuration | put ops/s | get ops/s | scan keys/s | on disk MiB "
        "| space amp | peak RSS MiB | RSS above open MiB | written MiB | write amp |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['store']} | {STORES[r['store']][1]} | FAILED: {r['error']} "
                         "| | | | | | | | |")
            continue
        flag = "" if not r["problems"] else " (WRONG: " + "; ".join(r["problems"]) + ")"
        lines.append(
            f"| {r['store']}{flag} | {r['config']} | {fmt_ops(r['put_ops'])} | "
            f"{fmt_ops(r['get_ops'])} | {fmt_ops(r['scan_ops'])} | "
            f"{r['disk_bytes'] / MIB:,.1f} | {r['disk_bytes'] / r['logical_bytes']:.2f} | "
            f"{r['peak_rss_kib'] / 1024:,.0f} | "
            f"{(r['peak_rss_kib'] - r['rss_at_open_kib']) / 1024:,.0f} | "
            f"{(r['write_bytes'] - r['cancelled_write_bytes']) / MIB:,.1f} | "
            f"{r['write_amp']:.2f} |")
    lines += [
        "",
        "Space amp = allocated bytes on disk after close / logical bytes put "
        f"({n * (KEY + VALUE) / MIB:,.1f} MiB). Peak RSS = VmHWM, reset once the data set "
        "(~140 MiB at 1M keys, sliced into fresh bytes per call) is built; RSS above open "
        "subtracts the RSS when the store was opened. Write amp = (write_bytes - "
        "cancelled_write_bytes) of /proc/self/io from open to close / logical bytes. "
        "diskcache's scan is iterkeys() (ordered by key in SQL) plus one get per key: it has "
        "no ordered key-value iteration.",
        "",
    ]
    helpers = [r for r in results if r.get("helper_peak_rss_kib")]
    if helpers:
        lines += ["respkv's table workers (engine/table_worker.py) are processes of their own: "
                  "their writes are in the written and write amp columns; their peak RSS, "
                  "not in the table, summed over the two: " + ", ".join(
                      f"{r['store']} {r['helper_peak_rss_kib'] / 1024:,.0f} MiB"
                      for r in helpers) + ".", ""]
    # Ratios against the targets.
    targets: list[tuple[str, str, str, float | None]] = [
        ("put", "put_ops", "leveldb", 0.3),
        ("put", "put_ops", "sqlite3-1txn", 1.0),
        ("put", "put_ops", "sqlite3", None),
        ("get", "get_ops", "leveldb", 0.3),
        ("get", "get_ops", "sqlite3", None),
        ("scan", "scan_ops", "leveldb", 0.2),
        ("scan", "scan_ops", "sqlite3", None),
        ("put", "put_ops", "diskcache", None),
        ("get", "get_ops", "diskcache", None),
    ]
    ours = [s for s in ("respkv", "respkv-everysec", "respkv-compacting") if s in ok]
    if ours:
        lines += [
            "| ratio | target | " + " | ".join(ours) + " |",
            "|---|---|" + "---:|" * len(ours),
        ]
        for phase, field, other, target in targets:
            if other not in ok:
                continue
            cells = []
            for s in ours:
                ratio = ok[s][field] / ok[other][field]
                verdict = "" if target is None else (" met" if ratio >= target else " MISSED")
                cells.append(f"{ratio:.2f}{verdict}")
            tgt = f"≥ {target}" if target is not None else "(info)"
            lines.append(f"| {phase}: ours / {other} | {tgt} | " + " | ".join(cells) + " |")
        lines.append("")
    # Sustained put rate.
    lines += [
        f"Sustained puts: rate per window of {WINDOW:,} puts (first window = before any "
        "flush for a store whose memtable holds it), and the longest group of 1000 puts "
        "with its commit.",
        "",
        "| store | first window ops/s | slowest window ops/s | fastest window ops/s "
        "| first / slowest | longest group ms | close s | windows ops/s |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if "error" in r:
            continue
        w = r["window_put_ops"]
        lines.append(
            f"| {r['store']} | {fmt_ops(w[0])} | {fmt_ops(min(w))} | {fmt_ops(max(w))} | "
            f"{w[0] / min(w):.2f} | {r['max_group_ms']:.1f} | {r['close_s']:.2f} | "
            + " ".join(f"{x / 1000:.0f}k" for x in w) + " |")
    if PRIMARY in ok and "respkv-compacting" in ok:
        first = ok[PRIMARY]["window_put_ops"][0]
        compacting = ok["respkv-compacting"]
        stats = compacting.get("engine_stats") or {}
        lines += ["", f"respkv-compacting ({stats.get('flushes', '?')} flushes, "
                  f"{stats.get('compactions', '?')} compactions by its close): slowest "
                  f"window {fmt_ops(min(compacting['window_put_ops']))} against respkv's "
                  f"memtable-only first window {fmt_ops(first)}: "
                  f"{first / min(compacting['window_put_ops']):.2f}x (target ≤ 2), longest "
                  f"group {compacting['max_group_ms']:.1f} ms (target ≤ 100)."]
    if timed is not None:
        lines.append("")
        if "error" in timed:
            lines.append(f"respkv with every put() and commit() timed: FAILED: {timed['error']}")
        else:
            w = timed["window_put_ops"]
            lines.append(
                f"respkv with every put() and commit() timed alone (second run, "
                f"{timed['keys']:,} puts; the clock reads slow it to "
                f"{fmt_ops(timed['put_ops'])} puts/s): longest put() "
                f"{timed['put_max_ms']:.2f} ms, longest commit() {timed['commit_max_ms']:.2f} ms, "
                f"puts over 1 ms: {timed['puts_over_1ms']}, over 100 ms: "
                f"{timed['puts_over_100ms']}, commits over 100 ms: "
                f"{timed['commits_over_100ms']}; slowest window / first window "
                f"{min(w) / w[0]:.2f} (target: ≥ 0.5 with no stall over 100 ms).")
    if PRIMARY in ok and ok[PRIMARY].get("engine_stats"):
        stats = ok[PRIMARY]["engine_stats"]
        lines += ["", "respkv engine stats() at close: "
                  + ", ".join(f"{k}={v:,}" for k, v in sorted(stats.items()))]
    return "\n".join(lines)


def parse_stores(value: str) -> list[str]:
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in names if s not in STORES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown store(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STORES)}")
    return names


def missing_packages(names: list[str]) -> list[str]:
    problems = []
    for name in names:
        package = STORES[name][0]
        if package is not None and importlib.util.find_spec(package) is None:
            problems.append(f"store {name} needs the Python package {package!r}, which is not "
                            f"installed (`make bench-engine` installs the `bench` extra: "
                            f"pip install -e '.[bench]'; or leave it out with --stores)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--keys", type=int, default=DEFAULT_KEYS)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--stores", type=parse_stores, default=list(STORES),
                        help=f"comma-separated, from: {', '.join(STORES)} (default: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--engine-rev", help="benchmark engine/ as committed in this git "
                        "revision (default: the working tree)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--timed-calls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine-path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.keys < 1:
        parser.error("--keys must be at least 1")

    if args.child:
        result = run_child(args.child, args.dir, args.keys, args.seed, args.timed_calls,
                           args.engine_path)
        Path(args.out).write_text(json.dumps(result))
        return 0

    problems = missing_packages(args.stores)
    if problems:
        for problem in problems:
            print(f"engine_bench: {problem}", file=sys.stderr)
        return 2
    command = "make bench-engine"
    if (args.keys != DEFAULT_KEYS or args.stores != list(STORES) or args.seed != 1
            or args.engine_rev):
        command = "python -m bench.engine_bench" + (
            f" --keys {args.keys}" if args.keys != DEFAULT_KEYS else "") + (
            f" --stores {','.join(args.stores)}" if args.stores != list(STORES) else "") + (
            f" --seed {args.seed}" if args.seed != 1 else "") + (
            f" --engine-rev {args.engine_rev}" if args.engine_rev else "")
    results: list[dict[str, Any]] = []
    timed: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="respkv-engine-bench-") as tmp:
        engine_path = None
        if args.engine_rev:
            try:
                engine_path = export_engine(args.engine_rev, os.path.join(tmp, "engine-src"))
            except subprocess.CalledProcessError as exc:
                print(f"engine_bench: cannot export engine/ at {args.engine_rev}: "
                      f"{exc.stderr.decode(errors='replace').strip()}", file=sys.stderr)
                return 2
        for name in args.stores:
            results.append(run_store(name, args.keys, args.seed, tmp, False, engine_path))
            if name == PRIMARY:
                timed = run_store(name, args.keys, args.seed, tmp, True, engine_path)
        section = render(results, timed, command, args.keys, args.engine_rev)
    print(section)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "timed": timed}, indent=1))
    failed = [r["store"] for r in results if "error" in r or r["problems"]]
    if timed is not None and "error" in timed:
        failed.append("respkv (timed calls)")
    if failed:
        print(f"engine_bench: failed or wrong: {', '.join(failed)}; docs not updated",
              file=sys.stderr)
        return 1
    if not args.no_write:
        write_section(DOC, BEGIN, END, section, heading="Storage engine: respkv's engine "
                      "against sqlite3, diskcache, lmdb and LevelDB (`make bench-engine`)")
        print(f"engine_bench: wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
