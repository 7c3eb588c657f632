"""Writes SSTables in helper processes, so that most of the CPU of a flush or a compaction
(merging, block encoding, bloom filter, checksums, the compaction filter's decoding) is not
paid under the GIL that the loop thread's requests need.

Two workers per engine process, one for flushes and one for compactions, so that a long
compaction never delays a flush (which frees memtable memory). Each is a child interpreter
running this module's main(), spoken to over a socketpair (docs/formats/table-worker.md).

Flush: the flush thread streams the frozen memtable in marshalled batches and the worker
feeds them to compactor.write_table. Either in the dict's order, sent at once (~0.2 us an
entry of the engine's GIL time), the worker sorting them first (~2.2 us an entry in all);
or, when the worker could fall behind (db.py decides), in key order, walked and paced as
an in-process flush is (~0.75-1 us an entry in the engine), the worker writing as they
come (~1.4 us an entry, faster than any writer). docs/benchmarks.md has the measurements.
Compaction: the worker opens the input tables itself and runs the same compaction_entries
and write_table, with its own token bucket at the engine's rate and a copy of the
compaction filter (which must be portable: PortableFilter below).

Also measured and not kept: a flush worker that rebuilds the memtable from the commit-log
segments it covers (zero cost to the engine, but parsing and sorting again cost the worker
~3.2 us an entry, more than a put: a sustained writer ends in write stalls), and a forked
child (copy-on-write faults on the engine's heap; docs/benchmarks.md).

Invariants:
1. A worker writes one table file per request, under the name the engine chose, and
   touches nothing else; a compaction only reads the input tables the engine named.
2. A build that fails in any way (the worker died or reported an error, the table does not
   open) is reported by the engine, whatever the worker left is removed, and the work runs
   in-process under a new table number (db.py invariant 10). Stopped (the engine is
   closing) is not a failure: the engine sends ABORT and the worker removes its temp file.
3. A worker whose engine process died writes nothing more: it abandons the table between
   batches and refuses the final rename once its parent is gone, so a restarted engine that
   reuses the table number (the manifest never named it) cannot see it appear later.
4. Crash points (fs.crash_point) are off in a worker: they simulate the death of the
   engine's process, which a worker's death is not.
5. Workers are shared by every engine of the process; each is started (a fresh interpreter:
   no copy of the engine's heap) by the first request it gets, restarted after it died, and
   exits when the engine's process closes its end (or dies). Requests take turns.
"""

from __future__ import annotations

import marshal
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Protocol, runtime_checkable

from engine import fs as fs_module
from engine.compactor import Batch, Stopped, batched, compaction_entries, write_table
from engine.errors import StorageError
from engine.fs import OSFileSystem
from engine.options import EngineOptions
from engine.rate_limiter import RateLimiter
from engine.table_builder import TableInfo
from engine.table_reader import TableReader
from engine.version_edit import TableMeta

# Version 2: no reference tracking (3 and 4 look every object up in a table, which doubles
# the cost of a batch of distinct bytes objects: 0.25 against 0.45 us an entry).
_MARSHAL_VERSION = 2
END = b""  # no more batches: finish the table
ABORT = b"-"  # give up the table (never a marshal blob: those start with a type code)
_POLL_S = 0.05  # how often a waiting compaction thread looks at should_stop()


@runtime_checkable
class PortableFilter(Protocol):
    """A compaction filter that may run in the compaction worker: portable() gives a copy that
    pickles (its counters zeroed, its clock the system's), or None if this one cannot leave
    the process; absorb(copy) adds what the copy counted there."""

    def __call__(self, key: bytes, value: bytes) -> bool: ...

    def portable(self) -> PortableFilter | None: ...

    def absorb(self, copy: PortableFilter) -> None: ...


@dataclass(frozen=True, slots=True)
class FlushRequest:
    directory: str
    number: int  # table number (and recency) the engine allocated
    options: EngineOptions
    ordered: bool = True  # batches in key order; False: any order (no key twice), the
    # worker sorts them (it then starts to write only once it has them all)
    parent_pid: int = field(default_factory=os.getpid)  # the engine's process


@dataclass(frozen=True, slots=True)
class CompactionRequest:
    directory: str
    inputs: tuple[str, ...]  # table paths, newest first
    bottommost: bool
    number: int
    recency: int
    options: EngineOptions  # its compaction_throughput_bytes_per_s paces the writes
    keep: PortableFilter | None
    parent_pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True, slots=True)
class Built:
    meta: TableMeta | None  # None: no entries (no table written)
    path: str
    throttled_s: float = 0.0  # compaction: time its writes waited for the token bucket
    keep: PortableFilter | None = None  # compaction: the filter copy, with its counts


class WorkerDied(StorageError):
    """The worker process exited (killed, out of memory) before it answered."""


class _ParentBoundFileSystem(OSFileSystem):
    """OSFileSystem whose rename fails once the engine's process is gone (invariant 3)."""

    def __init__(self, parent_pid: int) -> None:
        self._parent_pid = parent_pid

    def orphaned(self) -> bool:
        return os.getppid() != self._parent_pid

    def rename(self, src: str, dst: str) -> None:
        if self.orphaned():
            raise OSError(f"engine process {self._parent_pid} is gone: {dst} not installed")
        super().rename(src, dst)


def _built(written: tuple[TableMeta, TableReader, TableInfo] | None,
           throttled_s: float = 0.0, keep: PortableFilter | None = None) -> Built:
    if written is None:
        return Built(None, "", throttled_s, keep)
    meta, reader, info = written
    reader.close()
    return Built(meta, info.path, throttled_s, keep)


def build_flush(request: FlushRequest, batches: Iterable[Batch]) -> Built:
    """The worker's part of a flush: write table request.number from batches."""
    fs = _ParentBoundFileSystem(request.parent_pid)
    if not request.ordered:
        batches = _in_key_order(batches)
    return _built(write_table(fs, request.directory, request.number, request.number, batches,
                              request.options, None, fs.orphaned))


def _in_key_order(batches: Iterable[Batch]) -> Iterator[Batch]:
    """All of batches (distinct keys, any order) in key order, 4096 entries a batch; ~0.8 us
    an entry (dict, sort, lookups), measured cheaper than sorting (key, value) pairs."""
    entries: dict[bytes, bytes | None] = {}
    for keys, values in batches:
        entries.update(zip(keys, values, strict=True))
    ordered = sorted(entries)
    value_of = entries.__getitem__
    for at in range(0, len(ordered), 4096):
        chunk = ordered[at:at + 4096]
        yield chunk, list(map(value_of, chunk))


def build_compaction(request: CompactionRequest, aborted: Callable[[], bool],
                     sleep: Callable[[float], bool] | None = None) -> Built:
    """The worker's part of a compaction: merge request.inputs into table request.number.
    sleep(seconds) -> cut short? is how its token bucket waits."""
    fs = _ParentBoundFileSystem(request.parent_pid)
    readers: list[TableReader] = []
    try:
        for path in request.inputs:
            readers.append(TableReader.open(fs, path))
        entries = compaction_entries([r.scan() for r in readers], request.bottommost,
                                     request.keep)
        limiter = RateLimiter(request.options.compaction_throughput_bytes_per_s, sleep=sleep)
        written = write_table(fs, request.directory, request.number, request.recency,
                              batched(entries), request.options, None,
                              lambda: aborted() or fs.orphaned(), throttle=limiter.acquire)
        return _built(written, limiter.slept_s, request.keep)
    finally:
        for reader in readers:
            reader.close()


class TableWorker:
    """One helper process (invariant 5). Not a multiprocessing pool: its spawn start method
    re-imports the parent's __main__ in the child, and the engine must not re-run the
    program that imported it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()  # one request at a time
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    def flush(self, request: FlushRequest,
              batches: Iterable[tuple[list[bytes], list[bytes | None]]],
              pause: Callable[[int], None], should_stop: Callable[[], bool]) -> Built:
        """build_flush(request, batches) in the worker; pause(entries sent so far) is called
        after each batch. Raises Stopped if should_stop() turned true (the worker abandons
        the table), WorkerDied if it died (a new one starts at the next call), StorageError
        for what it reported, OSError if none can start."""
        with self._lock:
            conn = self._connection()
            try:
                conn.send(request)
                sent = 0
                stopped = False
                for keys, values in batches:
                    conn.send_bytes(marshal.dumps((keys, values), _MARSHAL_VERSION))
                    sent += len(keys)
                    if should_stop():
                        stopped = True
                        break
                    pause(sent)
                conn.send_bytes(ABORT if stopped else END)
                reply = conn.recv()
            except (EOFError, OSError) as exc:
                raise self._died(exc) from exc
        return _answer(reply)

    def compact(self, request: CompactionRequest, should_stop: Callable[[], bool]) -> Built:
        """build_compaction(request) in the worker; as flush() for the rest."""
        with self._lock:
            conn = self._connection()
            try:
                conn.send(request)
                aborted = False
                while not conn.poll(_POLL_S):
                    if not aborted and should_stop():
                        conn.send_bytes(ABORT)
                        aborted = True
                reply = conn.recv()
            except (EOFError, OSError) as exc:
                raise self._died(exc) from exc
        return _answer(reply)

    def start(self) -> None:
        """Start the worker process now if none runs (a request would start it anyway).
        Raises OSError if it cannot start."""
        with self._lock:
            self._connection()

    def busy(self) -> bool:
        """Is a request being served? (A hint: it may change at once.)"""
        return self._lock.locked()

    def pid(self) -> int | None:
        """The worker's pid, if one runs (tests kill it to check invariant 2)."""
        process = self._process
        return None if process is None else process.pid

    def _connection(self) -> Connection:
        if self._conn is not None:
            return self._conn
        ours, theirs = socket.socketpair()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "engine.table_worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        return self._conn

    def _died(self, exc: BaseException) -> WorkerDied:
        conn, self._conn = self._conn, None
        process, self._process = self._process, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.kill()
            process.wait()
        return WorkerDied(f"{self.name} worker died: {exc!r}")


def _answer(reply: object) -> Built:
    if isinstance(reply, BaseException):
        raise reply
    assert isinstance(reply, Built)
    return reply


FLUSHES = TableWorker("flush")
COMPACTIONS = TableWorker("compaction")


# The worker's side --------------------------------------------------------------------------


def _received(conn: Connection) -> Iterator[Batch]:
    """The batches of one flush, up to END; Stopped at ABORT."""
    while (blob := conn.recv_bytes()) != END:
        if blob == ABORT:
            raise Stopped("flush abandoned: the engine is closing")
        yield marshal.loads(blob)


class _AbortWatch:
    """Has the engine sent ABORT during a compaction? Looked at between batches (called) and
    while the token bucket makes the compaction wait (sleep: cut short by ABORT, as the
    engine's own limiter is by close())."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.seen = False

    def __call__(self) -> bool:
        return self.sleep(0.0)

    def sleep(self, seconds: float) -> bool:
        if not self.seen and self._conn.poll(seconds):
            self.seen = self._conn.recv_bytes() == ABORT
        return self.seen


def _serve(conn: Connection, request: object) -> Built:
    if isinstance(request, CompactionRequest):
        watch = _AbortWatch(conn)
        return build_compaction(request, watch, watch.sleep)
    assert isinstance(request, FlushRequest)
    batches = _received(conn)
    try:
        built = build_flush(request, batches)
        for _ in batches:  # a table of no entries: still read up to END
            pass
        return built
    except BaseException:
        try:
            for _ in batches:  # read what the engine still sends, up to its end
                pass
        except Stopped:
            pass
        raise


def main(argv: Sequence[str]) -> int:
    """A worker: answer requests until the engine's end of the socket closes."""
    fs_module.disable_crash_points()  # invariant 4
    # Ctrl-C at a terminal reaches the whole process group: the engine decides when its
    # workers stop (they exit when it closes its end), and no traceback is printed here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[1]))
    try:
        while True:
            blob = conn.recv_bytes()
            if blob == ABORT:  # sent for a compaction that had finished meanwhile
                continue
            request = pickle.loads(blob)
            reply: Built | StorageError
            try:
                reply = _serve(conn, request)
            except Exception as exc:  # the reason of a failed attempt, sent back
                reply = exc if isinstance(exc, StorageError) else StorageError(
                    f"table worker: {exc!r}")
            conn.send(reply)
    except (EOFError, OSError):  # the engine closed its end, or died
        return 0


if __name__ == "__main__":
    # Run the module's own copy, so that what it pickles names engine.table_worker classes.
    from engine import table_worker

    sys.exit(table_worker.main(sys.argv))
