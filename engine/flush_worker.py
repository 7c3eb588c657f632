"""Builds a frozen memtable's SSTable in another process, so that most of the CPU of a flush
(block encoding, bloom filter, checksums, the writes) is not paid under the GIL that the
loop thread's puts need.

The flush thread walks the frozen memtable in key order, as an in-process flush does, and
streams it to the worker in batches (marshal: lists of bytes and None, C-level at both
ends); the worker feeds them to the same compactor.write_table and answers with the table's
metadata; the engine opens the table and installs it. The engine pays the walk and the
marshalling (~0.75 us an entry against ~1.5 us for a whole in-process flush: measured in
docs/benchmarks.md), and the worker keeps up with the fastest writer, since its ~1.2 us an
entry is less than a put's ~1.5 us.

Also measured and not kept: a worker that rebuilds the memtable from the commit-log segments
it covers (zero cost to the engine, but parsing and sorting again cost the worker ~3.2 us an
entry, more than a put: a sustained writer ends in write stalls), and a forked child (copy-on-
write faults on the engine's heap; docs/benchmarks.md).

Protocol (over a socketpair, multiprocessing's Connection: length-prefixed messages between
our own two processes): the engine sends a pickled FlushRequest, then one marshal blob per
batch of (keys, values), then END (to finish) or ABORT (to give up); the worker answers each
request with one pickled FlushResult or StorageError, after it has read up to END or ABORT.

Invariants:
1. The worker writes one table file, under the name the engine chose, and touches nothing
   else; it reads nothing from the engine's directory.
2. A build that fails in any way (the worker died or reported an error, the table does not
   open) is reported by the engine, whatever the worker left is removed, and the flush runs
   in-process under a new table number (db.py invariant 10). Stopped (the engine is
   closing) is not a failure: the engine sends ABORT and the worker removes its temp file.
3. A worker whose engine process died writes nothing more: it abandons the table between
   batches and refuses the final rename once its parent is gone, so a restarted engine that
   reuses the table number (the manifest never named it) cannot see it appear later.
4. Crash points (fs.crash_point) are off in the worker: they simulate the death of the
   engine's process, which a worker's death is not.
5. One worker process is shared by every engine of the process; it is started (a fresh
   interpreter: no copy of the engine's heap) at the first flush that uses it, restarted
   after it died, and exits when the engine's process closes its end (or dies). Flushes of
   different engines take turns in it.
"""

from __future__ import annotations

import marshal
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from engine import fs as fs_module
from engine.compactor import Batch, Stopped, write_table
from engine.errors import StorageError
from engine.fs import OSFileSystem
from engine.options import EngineOptions
from engine.version_edit import TableMeta

# Version 2: no reference tracking (3 and 4 look every object up in a table, which doubles
# the cost of a batch of distinct bytes objects: 0.25 against 0.45 us an entry).
_MARSHAL_VERSION = 2
END = b""  # no more batches: finish the table
ABORT = b"-"  # no more batches: abandon the table (never a marshal blob: those start with "(")


@dataclass(frozen=True, slots=True)
class FlushRequest:
    directory: str
    number: int  # table number (and recency) the engine allocated
    options: EngineOptions
    parent_pid: int = field(default_factory=os.getpid)  # the engine's process


@dataclass(frozen=True, slots=True)
class FlushResult:
    meta: TableMeta | None  # None: no entries (no table written)
    path: str


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


def build_table(request: FlushRequest, batches: Iterable[Batch]) -> FlushResult:
    """The worker's part: write table request.number from batches (ascending keys)."""
    fs = _ParentBoundFileSystem(request.parent_pid)
    written = write_table(fs, request.directory, request.number, request.number, batches,
                          request.options, None, fs.orphaned)
    if written is None:
        return FlushResult(None, "")
    meta, reader, info = written
    reader.close()
    return FlushResult(meta, info.path)


class FlushWorker:
    """The process-wide worker (invariant 5): build() streams a table's batches to it.

    A child interpreter running this module's main(). Not a multiprocessing pool: its spawn
    start method re-imports the parent's __main__ in the child, and the engine must not re-run
    the program that imported it.
    """

    _lock = threading.Lock()  # one build at a time in the one worker
    _process: subprocess.Popen[bytes] | None = None
    _conn: Connection | None = None

    @classmethod
    def build(cls, request: FlushRequest,
              batches: Iterable[tuple[list[bytes], list[bytes | None]]],
              pause: Callable[[int], None], should_stop: Callable[[], bool]) -> FlushResult:
        """The worker's build_table(request, batches); pause(entries sent so far) is called
        after each batch. Raises Stopped if should_stop() turned true (the worker abandons
        the table), WorkerDied if it died (a new one starts at the next call), StorageError
        for what it reported, OSError if none can start."""
        with cls._lock:
            conn = cls._conn if cls._conn is not None else cls._start()
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
                cls._stop()
                raise WorkerDied(f"flush worker died: {exc!r}") from exc
        if isinstance(reply, BaseException):
            raise reply
        assert isinstance(reply, FlushResult)
        return reply

    @classmethod
    def pid(cls) -> int | None:
        """The worker's pid, if one runs (tests kill it to check invariant 2)."""
        process = cls._process
        return None if process is None else process.pid

    @classmethod
    def _start(cls) -> Connection:
        ours, theirs = socket.socketpair()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            cls._process = subprocess.Popen(
                [sys.executable, "-m", "engine.flush_worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        cls._conn = Connection(ours.detach())
        return cls._conn

    @classmethod
    def _stop(cls) -> None:
        conn, cls._conn = cls._conn, None
        process, cls._process = cls._process, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.kill()
            process.wait()


def _received(conn: Connection) -> Iterator[Batch]:
    """The batches of one request, up to END; Stopped at ABORT."""
    while (blob := conn.recv_bytes()) != END:
        if blob == ABORT:
            raise Stopped("flush abandoned: the engine is closing")
        yield marshal.loads(blob)


def main(argv: list[str]) -> int:
    """The worker: answer requests until the engine's end of the socket closes."""
    fs_module.disable_crash_points()  # invariant 4
    conn = Connection(int(argv[1]))
    try:
        while True:
            request = conn.recv()
            batches = _received(conn)
            reply: FlushResult | StorageError
            try:
                reply = build_table(request, batches)
                for _ in batches:  # a table of no entries: still read up to END
                    pass
            except Exception as exc:  # the reason of a failed attempt, sent back
                reply = exc if isinstance(exc, StorageError) else StorageError(
                    f"flush worker: {exc!r}")
                try:
                    for _ in batches:  # read what the engine still sends, up to its end
                        pass
                except Stopped:
                    pass
            conn.send(reply)
    except (EOFError, OSError):  # the engine closed its end, or died
        return 0


if __name__ == "__main__":
    # Run the module's own copy, so that what it pickles names engine.flush_worker classes.
    from engine import flush_worker

    sys.exit(flush_worker.main(sys.argv))
