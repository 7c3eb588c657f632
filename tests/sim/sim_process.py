"""One node process in the simulation: engine, replica, hint store, replica service,
coordinator and hinted handoff, which all die together when the process crashes and come back
from the data directory on restart.

Theory of operation. A real process that crashes takes its timers, its pending callbacks and
its unsent work with it. The shared ``SimClock`` and ``SimNetwork`` know nothing of
processes, so each incarnation gets three gates that drop everything once it is dead:
``ProcessClock`` (the ``cluster.clock.Clock`` its FSMs see: timers of a dead process never
fire), ``ProcessLoop`` (futures of the process: done-callbacks of a dead process never run)
and ``ProcessTransport`` (its ``Transport``: replies reach it only while it lives). So after
``crash()`` no code of that incarnation runs again, and it never touches its (closed) engine.

Durability model (a process crash, ``kill -9``, not a power loss): the engine buffers writes
until ``commit()``; the simulator's driver calls ``commit_if_needed()`` on every live process
after every event, as the server commits before it sleeps, i.e. before any reply it wrote in
that event can leave (a message sent in one event is delivered in a later one). A crash
happens between events, so it loses nothing committed; the OS page cache survives, as it does
a kill -9. ``crash_mode`` "close" closes the engine cleanly, "kill" abandons every open file
and lock (tests/engine_helpers.FaultyFS.crash) so the restart replays the log. For the same
reason fsync is skipped (``PageCacheFS``): with the OS never crashing it buys no durability,
and on a busy disk it was a third of a run's wall time.

Invariants:
1. After ``crash()``, no timer, future callback or reply of this incarnation runs.
2. A restarted process opens the same directory with the same actor (its data survived, so
   its vector-clock epoch is unchanged) and rebuilds the replica's bookkeeping by a scan.
3. Hints are engine records (cluster/hints.py), committed with everything else after every
   event: a crash keeps them, and ``HintStore.open`` recounts them on restart. ``Handoff``
   delivers them when the simulator calls ``handoff.tick()`` (virtual-time rounds).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Collection

from cluster.clock import TimerHandle
from cluster.coordinator import Coordinator, CoordinatorOptions
from cluster.handoff import Handoff
from cluster.hints import HintStore
from cluster.messages import Message
from cluster.preflist import Placement
from cluster.replica import Replica
from cluster.replica_service import ReplicaService
from cluster.transport import Transport
from cluster.version import Siblings
from engine.db import Engine
from engine.fs import BytesLike, OSFileSystem, WritableFile
from engine.options import EngineOptions
from tests.engine_helpers import FaultyFS
from tests.sim.sim_clock import SimClock, SimLoop, SimTimer
from tests.sim.sim_network import SimNetwork, SimTransport, call_through_request

# Called as ``factory(replica, clock, hints=store)`` (ReplicaService's own signature).
ServiceFactory = Callable[..., ReplicaService]
# Told of every hint a node stored: (holder, target, db, key, versions).
HintObserver = Callable[[str, str, int, bytes, Siblings], None]
TOMBSTONE_GRACE_MS = 10**12  # tombstones are never purged in a run (purging is issue 6)
DATABASES = 1


class _PageCacheFile:
    """A written file whose fsync does nothing: the simulated OS never loses its page cache
    (module docstring)."""

    __slots__ = ("_inner",)

    def __init__(self, inner: WritableFile) -> None:
        self._inner = inner

    def pwrite(self, data: BytesLike, offset: int) -> int:
        return self._inner.pwrite(data, offset)

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self._inner.close()


class PageCacheFS(OSFileSystem):
    """The real file system without fsync (files and directories); see the module docstring."""

    def open_write(self, path: str, *, truncate: bool = False) -> WritableFile:
        return _PageCacheFile(super().open_write(path, truncate=truncate))

    def sync_dir(self, path: str) -> None:
        pass


class _Life:
    __slots__ = ("alive",)

    def __init__(self) -> None:
        self.alive = True


class ProcessClock:
    """The process's ``Clock``: the shared clock, its own wall skew, timers that die with it."""

    def __init__(self, clock: SimClock, life: _Life, skew_ms: int) -> None:
        self.clock = clock
        self.life = life
        self.skew_ms = skew_ms

    def wall_ms(self) -> int:
        return self.clock.wall_ms() + self.skew_ms

    def monotonic(self) -> float:
        return self.clock.monotonic()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        life = self.life
        return self.clock.call_later(delay_s, lambda: callback() if life.alive else None)


class ProcessLoop(SimLoop):
    """Futures of one process: their callbacks are dropped once it is dead (invariant 1)."""

    def __init__(self, clock: SimClock, life: _Life) -> None:
        super().__init__(clock)
        self.life = life

    def call_soon(self, callback: Callable[..., object], *args: object,
                  context: contextvars.Context | None = None) -> SimTimer:
        life = self.life

        def gated() -> None:
            if life.alive:
                callback(*args)

        return super().call_soon(gated, context=context)


class ProcessTransport:
    """The process's ``Transport``: a ``SimTransport`` whose replies reach only a live process."""

    def __init__(self, inner: SimTransport, loop: ProcessLoop) -> None:
        self.inner = inner
        self.loop = loop

    @property
    def node_id(self) -> str:
        return self.inner.node_id

    def call(self, peer: str, message: Message, timeout_s: float,
             on_done: Callable[[str, Message | BaseException], None]) -> None:
        call_through_request(self.request, peer, message, timeout_s, on_done)

    def request(self, peer: str, message: Message, timeout_s: float) -> asyncio.Future[Message]:
        outer: asyncio.Future[Message] = self.loop.create_future()
        life = self.loop.life

        def relay(inner: asyncio.Future[Message]) -> None:
            if not life.alive or outer.done():
                return
            error = inner.exception()
            if error is not None:
                outer.set_exception(error)
            else:
                outer.set_result(inner.result())

        self.inner.request(peer, message, timeout_s).add_done_callback(relay)
        return outer


class ObservedHintStore(HintStore):
    """A ``HintStore`` that tells the simulator of every hint it accepted (a checker's view:
    it changes nothing the store does)."""

    holder = ""
    observer: HintObserver | None = None

    def add(self, target: str, db: int, key: bytes, siblings: Siblings) -> bool:
        stored = super().add(target, db, key, siblings)
        if stored and self.observer is not None:
            self.observer(self.holder, target, db, key, siblings)
        return stored


class NodeProcess:
    """One incarnation of node ``name``, attached to (or restarted in) ``network``."""

    def __init__(self, name: str, directory: str, network: SimNetwork, placement: Placement,
                 *, skew_ms: int, memtable_bytes: int, timeout_ms: int, read_before_write: bool,
                 up_nodes: Callable[[], Collection[str]] | None,
                 service_factory: ServiceFactory, restart: bool,
                 sloppy_quorum: bool = False, hint_max_count: int = 1_000_000,
                 should_hint: Callable[[str], bool] | None = None,
                 reachable: Callable[[str], bool] | None = None, handoff_per_tick: int = 100,
                 on_hint: HintObserver | None = None) -> None:
        """``reachable(target)``: whether the handoff may send to ``target`` now."""
        self.name = name
        self.life = _Life()
        self.fs = FaultyFS(_os=PageCacheFS())
        engine_options = EngineOptions(fsync="no", background=False,
                                       memtable_size_bytes=memtable_bytes)
        self.engine = Engine.open(directory, engine_options, fs=self.fs,
                                  reporter=self._engine_report)
        self.engine_reports: list[str] = []
        self.replica = Replica(self.engine, DATABASES, TOMBSTONE_GRACE_MS,
                               reporter=self._engine_report)
        self.replica.rebuild()
        clock = ProcessClock(network.clock, self.life, skew_ms)
        self.loop = ProcessLoop(network.clock, self.life)
        self.hints = ObservedHintStore.open(self.engine, clock.wall_ms,
                                            max_count=hint_max_count)
        assert isinstance(self.hints, ObservedHintStore)
        self.hints.holder, self.hints.observer = name, on_hint
        self.service = service_factory(self.replica, clock, hints=self.hints)
        if restart:
            inner = network.restart(name, self.service.handle)
        else:
            inner = network.attach(name, self.service.handle)
        self.transport: Transport = ProcessTransport(inner, self.loop)
        self.coordinator = Coordinator(
            placement, self.service, self.transport, clock, name.encode(),
            self.loop.create_future,
            CoordinatorOptions(request_timeout_ms=timeout_ms,
                               read_before_write=read_before_write,
                               sloppy_quorum=sloppy_quorum),
            up_nodes=up_nodes, should_hint=should_hint)
        self.handoff = Handoff(self.hints, self.transport, per_tick=handoff_per_tick,
                               timeout_s=timeout_ms / 1000,
                               reachable=reachable or (lambda target: True),
                               commit=self.commit_if_needed)

    def _engine_report(self, text: str) -> None:
        self.engine_reports.append(text)

    @property
    def alive(self) -> bool:
        return self.life.alive

    def commit_if_needed(self) -> None:
        if self.engine.has_uncommitted:
            self.engine.commit()

    def crash(self, mode: str) -> None:
        """The process dies (invariant 1); its engine is closed ("close") or abandoned
        ("kill"). REQUIRES: the network already counts the node as crashed."""
        assert self.life.alive, f"{self.name} crashed twice"
        self.life.alive = False
        if mode == "close":
            self.engine.close()
        else:
            assert mode == "kill", mode
            self.fs.crash()  # what was not committed is lost

    def close(self) -> None:
        if self.life.alive:
            self.life.alive = False
            self.engine.close()
