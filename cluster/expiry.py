"""Active expiry: reclaim keys whose time has come, a little at a time, off the request path.

Redis reclaims expired keys lazily (on access) and actively (a timer samples keys with an
expiry and spends at most ~25% of a 100 ms period doing so). respkv keeps an index instead of
sampling (``Replica.due``: every key's next due time, to the slot of about a second it falls
in), so a cycle simply takes the keys of the slots that have passed from each db's index: a key
is reclaimed within about a second and a period of its expiry.

Rules:
1. A cycle never runs longer than ``budget_ms`` (plus one chunk of CHUNK_KEYS keys): a million
   keys expiring at the same instant never block the loop for more than about that.
2. While a backlog remains, the next cycle comes after ``budget_ms`` instead of
   ``interval_ms`` (about 50% of one core until the backlog is gone); the dbs are visited
   round-robin from where the last cycle stopped, so no db starves.
3. Expired keys are invisible from the instant they expire whether or not a cycle has run
   (Node.get checks); cycles only reclaim space and fix the counters.
4. A key taken from the index leaves it only if its reclaim succeeded: when ``expire_due``
   raises (a full disk), the chunk goes back into the index at the current slot.
"""

from __future__ import annotations

from collections.abc import Callable

from cluster.clock import Clock, TimerHandle
from cluster.replica import Replica

CHUNK_KEYS = 64  # keys reclaimed per engine batch; the budget is checked between chunks


class ActiveExpiry:
    def __init__(
        self,
        replica: Replica,
        clock: Clock,
        interval_ms: int,
        budget_ms: int,
        on_reclaimed: Callable[[int, bytes], None],
    ) -> None:
        assert interval_ms > 0 and budget_ms > 0, (interval_ms, budget_ms)
        self._replica = replica
        self._clock = clock
        self._interval_s = interval_ms / 1000
        self._budget_s = budget_ms / 1000
        self._on_reclaimed = on_reclaimed
        self._handle: TimerHandle | None = None
        self._next_db = 0
        self.stats = {
            "expire_cycles": 0,
            "expired_time_cap_reached_count": 0,
            "expire_cycle_cpu_milliseconds": 0,
        }
        self._cpu_s = 0.0

    def start(self) -> None:
        if self._handle is None:
            self._handle = self._clock.call_later(self._interval_s, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        try:
            capped = self.run_cycle()
        except Exception as exc:  # e.g. StorageError on a full disk: report, retry later
            self._replica.report(f"active expiry cycle failed: {type(exc).__name__}: {exc}")
            capped = False
        self._handle = self._clock.call_later(
            self._budget_s if capped else self._interval_s, self._tick
        )

    def run_cycle(self) -> bool:
        """One cycle: reclaim due keys until done or out of budget; True if out of budget."""
        clock = self._clock
        started = clock.monotonic()
        deadline = started + self._budget_s
        now_ms = clock.wall_ms()
        replica = self._replica
        databases = replica.databases
        capped = False
        for step in range(databases):
            db = (self._next_db + step) % databases
            due = replica.due[db]
            while chunk := due.take(now_ms, CHUNK_KEYS):
                try:
                    replica.expire_due(db, chunk, now_ms)
                except BaseException:
                    for ekey in chunk:  # retried once the current slot has passed (Rule 4)
                        due.add(now_ms, ekey)
                    raise
                for ekey in chunk:
                    self._on_reclaimed(db, ekey)
                if clock.monotonic() >= deadline:
                    capped = True
                    break
            if capped:
                self._next_db = db
                break
        self.stats["expire_cycles"] += 1
        self.stats["expired_time_cap_reached_count"] += capped
        self._cpu_s += clock.monotonic() - started
        self.stats["expire_cycle_cpu_milliseconds"] = int(self._cpu_s * 1000)
        return capped
