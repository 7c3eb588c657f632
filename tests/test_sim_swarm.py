"""The swarm simulator (tests/sim/simulator.py) over many seeds, its determinism, and negative
controls that prove its checks can fail.

Every seed is a whole cluster run: 3-5 nodes over real engines, N/R/W, workload, network
faults, partitions, clock skew, node crashes with restarts, and sloppy or strict quorums with
hinted handoff all drawn from the seed; then a safety phase and a liveness phase (the
simulator's docstring lists the checks S1-S2, H1-H2, L1-L6 and D1).

Modes (environment variables):
- ``RESPKV_SIM_SEEDS=1000`` runs seeds 0..999 as ``test_swarm`` cases instead of the default
  ``DEFAULT_SEEDS`` (about 50 ms a seed on the 2-core machine);
- ``RESPKV_SIM_SEED=1234`` runs that one seed (to reproduce a failure: the failure message
  says ``reproduce with seed=…``; ``pytest -s`` shows the ``SEED=… OPTIONS=…`` line);
- ``test_swarm_long`` (``@pytest.mark.slow``; ``pytest -m slow tests/test_sim_swarm.py``)
  runs ``RESPKV_SIM_SLOW_SEEDS`` seeds (default 2000) from seed 100000 on, and lists every
  failing seed at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import keys as keyspace
from cluster.messages import Message, Write, WriteAck
from cluster.replica_service import ReplicaService
from cluster.version import Siblings, merge
from tests.sim.simulator import SimOptions, SimResult, SimulationFailure, run_seed

DEFAULT_SEEDS = 200
ROOT = Path(__file__).resolve().parent.parent


def _seeds() -> list[int]:
    one = os.environ.get("RESPKV_SIM_SEED")
    if one is not None:
        return [int(one)]
    return list(range(int(os.environ.get("RESPKV_SIM_SEEDS", DEFAULT_SEEDS))))


def quiet_run(seed: int, directory: Path, **kwargs: object) -> SimResult:
    with contextlib.redirect_stdout(io.StringIO()):
        return run_seed(seed, directory, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", _seeds())
def test_swarm(seed: int, tmp_path: Path) -> None:
    result = run_seed(seed, tmp_path)
    assert result.trace_hash
    assert result.siblings_dropped == 0, "the sibling limit was hit: L2/L3 are not promised"


def test_default_seeds_exercise_every_check(tmp_path: Path) -> None:
    """The default budget crashes nodes, acks writes, checks reads against them (S1), routes
    around down primaries, keeps, refuses and hands off hints (H1), and checks deletes (D1)."""
    results = [quiet_run(seed, tmp_path / str(seed)) for seed in range(25)]
    assert sum(r.crashes for r in results) >= 10
    assert all(r.acked_writes for r in results)
    assert sum(r.reads_checked for r in results) >= 100
    assert any(r.options.faults.crash_mode == "kill" and r.crashes for r in results)
    assert any(r.options.faults.crash_mode == "close" and r.crashes for r in results)
    assert any(not r.options.read_your_writes for r in results)  # S1 off: still L-checked
    sloppy = [r for r in results if r.options.routes_around]
    assert sloppy and sum(r.sloppy_requests for r in sloppy) >= 5
    assert sum(r.hints_kept_by_coordinators for r in results) >= 5
    assert sum(r.hints_stored - r.hints_kept_by_coordinators for r in results) >= 5  # stand-ins
    assert sum(r.hints_delivered for r in results) >= 5
    assert sum(r.hints_checked for r in results) >= 10
    assert any(r.hints_not_kept for r in results)  # refusals: see the hint-bound test below
    assert sum(r.deletes_checked for r in results) >= 10
    assert all(r.hints_expired == 0 for r in results)  # H1 relies on it


def test_swarm_options_come_from_the_seed_alone() -> None:
    drawn = [SimOptions.swarm(seed) for seed in range(300)]
    assert drawn[7] == SimOptions.swarm(7)
    assert {o.nodes for o in drawn} == {3, 4, 5}
    assert all(1 <= o.n <= min(3, o.nodes) for o in drawn)
    assert {o.n for o in drawn} == {1, 2, 3}
    assert all(1 <= o.r <= o.n and 1 <= o.w <= o.n for o in drawn)
    assert {o.read_your_writes for o in drawn} == {True, False}
    assert {o.faults.failure_detector for o in drawn} == {True, False}
    assert {o.hints.sloppy_quorum for o in drawn} == {True, False}
    assert {o.hints.detector_sees_partitions for o in drawn} == {True, False}
    assert {o.routes_around for o in drawn} == {True, False}
    assert not any(o.read_your_writes and o.routes_around for o in drawn)  # S1: strict only
    assert len({o.faults.network for o in drawn}) > 100
    assert len({o.network_seed for o in drawn}) == 300


def test_the_same_seed_gives_the_same_trace(tmp_path: Path) -> None:
    first = quiet_run(3, tmp_path / "a")
    again = quiet_run(3, tmp_path / "b")
    other = quiet_run(4, tmp_path / "c")
    assert first.trace_hash == again.trace_hash
    assert first.trace_hash != other.trace_hash


def test_the_same_seed_gives_the_same_trace_in_another_process(tmp_path: Path) -> None:
    """No dependence on hash randomization (set or dict order of str keys)."""
    code = ("import sys, pathlib, contextlib, io\n"
            "from tests.sim.simulator import run_seed\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    r = run_seed(5, pathlib.Path(sys.argv[1]))\n"
            "print(r.trace_hash)\n")
    hashes = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / hash_seed)],
                             env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        hashes.add(out.stdout.strip())
    assert hashes == {quiet_run(5, tmp_path / "here").trace_hash}


def test_the_seed_and_options_are_printed(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run_seed(11, tmp_path)
    out = capsys.readouterr().out
    assert out.startswith("SEED=11 OPTIONS=nodes=")
    assert "N=" in out and "NetworkOptions(" in out and "crash_mode=" in out


# -- Negative controls: broken variants the checks must catch --------------------------------


class OverwritingService(ReplicaService):
    """Broken on purpose: a write replaces what the replica holds instead of merging."""

    def merge(self, db: int, key: bytes, incoming: Siblings, data: bytes | None = None
              ) -> Siblings:
        ekey = keyspace.engine_key(db, key)
        old = self.replica.read(ekey)
        new = merge(incoming, ())
        if new != old:
            self.replica.apply(db, ekey, old, new, self.clock.wall_ms())
        return new


class AckWithoutStoringService(ReplicaService):
    """Broken on purpose: a remote WRITE is acknowledged but stored only every other time."""

    writes = 0

    def handle(self, peer: str, message: Message) -> Message:
        if isinstance(message, Write):
            self.writes += 1
            if self.writes % 2 == 0:
                return WriteAck()
        return super().handle(peer, message)


def _failures(service: type[ReplicaService], tmp_path: Path, seeds: range) -> list[str]:
    failures = []
    for seed in seeds:
        try:
            quiet_run(seed, tmp_path / str(seed), service_factory=service)
        except SimulationFailure as failure:
            failures.append(str(failure))
    return failures


def test_negative_control_overwriting_replica_is_caught(tmp_path: Path) -> None:
    failures = _failures(OverwritingService, tmp_path, range(25))
    assert len(failures) >= 5, "the checks missed a replica that overwrites instead of merging"
    assert any("S1 read-your-writes" in f for f in failures)
    assert any("no_lost_acked_write" in f for f in failures)
    assert all("reproduce with seed=" in f for f in failures)


def test_negative_control_replica_that_acks_without_storing_is_caught(tmp_path: Path) -> None:
    failures = _failures(AckWithoutStoringService, tmp_path, range(25))
    assert failures, "the checks missed a replica that acknowledges writes it did not store"


class HintDroppingService(ReplicaService):
    """Broken on purpose: a stand-in acknowledges a hinted write but keeps no hint."""

    def handle(self, peer: str, message: Message) -> Message:
        if isinstance(message, Write) and message.hint_for is not None:
            return WriteAck()
        return super().handle(peer, message)

    def store(self, db: int, key: bytes, incoming: Siblings, hint_for: str | None) -> bool:
        if hint_for is not None:
            return True
        return super().store(db, key, incoming, hint_for)


def _sloppy(seed: int) -> SimOptions:
    """The seed's run with stand-ins: sloppy quorum, the failure detector, crashes."""
    options = SimOptions.swarm(seed)
    faults = dataclasses.replace(options.faults, failure_detector=True,
                                 crashes=max(2, options.faults.crashes))
    hints = dataclasses.replace(options.hints, sloppy_quorum=True)
    return dataclasses.replace(options, faults=faults, hints=hints)


def test_negative_control_stand_in_that_acks_without_keeping_the_hint(tmp_path: Path) -> None:
    failures = []
    for seed in range(12):
        try:
            quiet_run(seed, tmp_path / str(seed), service_factory=HintDroppingService,
                      options=_sloppy)
        except SimulationFailure as failure:
            failures.append(str(failure))
    assert len(failures) >= 3, "the checks missed a stand-in that drops the hints it acks"
    assert sum("H1 handoff" in f for f in failures) >= 3
    assert all("reproduce with seed=" in f for f in failures)
    for seed in range(5):  # the same runs with real stand-ins pass
        result = quiet_run(seed, tmp_path / f"ok{seed}", options=_sloppy)
        assert result.options.routes_around


def test_hints_refused_by_their_bound_lose_no_acknowledged_write(tmp_path: Path) -> None:
    """One hint per target and holder: stand-ins refuse the rest (the write fails there) and
    coordinators keep no more; every check still holds (read repair covers the owner)."""
    def bounded(seed: int) -> SimOptions:
        options = _sloppy(seed)
        return dataclasses.replace(options, hints=dataclasses.replace(options.hints,
                                                                      max_count=1))

    results = [quiet_run(seed, tmp_path / str(seed), options=bounded) for seed in range(10)]
    assert sum(r.hints_refused for r in results) >= 3


class TombstoneIgnoringService(ReplicaService):
    """Broken on purpose: a replica drops the tombstones it is sent (keeps the values)."""

    def merge(self, db: int, key: bytes, incoming: Siblings, data: bytes | None = None
              ) -> Siblings:
        live = tuple(v for v in incoming if v[4] is not None)
        return super().merge(db, key, live) if live else self.read(db, key)


def test_negative_control_replica_that_drops_tombstones_is_caught(tmp_path: Path) -> None:
    # Most runs fail S1 first (phase 1); these seeds include runs that reach D1.
    failures = _failures(TombstoneIgnoringService, tmp_path, range(15, 25))
    assert len(failures) >= 5, "the checks missed a replica that drops tombstones"
    assert any("D1 deleted stays deleted" in f for f in failures)


def _killing(seed: int) -> SimOptions:
    options = SimOptions.swarm(seed)
    faults = dataclasses.replace(options.faults, crashes=5, crash_mode="kill")
    return dataclasses.replace(options, faults=faults)


def test_negative_control_acks_before_commit_lose_writes_on_kill(tmp_path: Path) -> None:
    """The durability model matters: when replicas acknowledge merges the engine never
    committed, a kill -9 loses acknowledged writes, and the checks say so."""
    failures = []
    for seed in range(25):
        try:
            quiet_run(seed, tmp_path / str(seed), options=_killing, commit_every_event=False)
        except SimulationFailure as failure:
            failures.append(str(failure))
    assert len(failures) >= 3, "the checks missed acknowledged writes lost by a kill"
    assert any("no_lost_acked_write" in f or "S1 read-your-writes" in f for f in failures)
    for seed in range(5):  # the same crashes with commits before replies lose nothing
        quiet_run(seed, tmp_path / f"ok{seed}", options=_killing)


def test_an_error_inside_the_cluster_code_names_the_seed(tmp_path: Path) -> None:
    class Exploding(ReplicaService):
        def handle(self, peer: str, message: Message) -> Message:
            raise ValueError("boom")

    with pytest.raises(SimulationFailure, match=r"(?s)ValueError\('boom'\).*reproduce with "
                                                r"seed=1\b"):
        quiet_run(1, tmp_path, service_factory=Exploding)


# -- Long mode -------------------------------------------------------------------------------


@pytest.mark.slow
def test_swarm_long(tmp_path: Path) -> None:
    count = int(os.environ.get("RESPKV_SIM_SLOW_SEEDS", 2000))
    failures = []
    for seed in range(100_000, 100_000 + count):
        try:
            result = quiet_run(seed, tmp_path / str(seed))
            assert result.siblings_dropped == 0, f"seed {seed}: the sibling limit was hit"
        except SimulationFailure as failure:
            failures.append(str(failure))
        shutil.rmtree(tmp_path / str(seed), ignore_errors=True)
    assert not failures, f"{len(failures)} of {count} seeds failed:\n" + "\n\n".join(failures)
