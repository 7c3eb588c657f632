"""Model-based test: the engine against a dict, through puts, deletes, batches, scans, commits,
flushes, compactions (with a compaction filter), clean reopens and crashes (kill -9: what was
committed survives, what was buffered is lost). The memtable is tiny, so commit() freezes and
flushes often, and flushes run synchronously (background=False) so every run replays."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine.db import Engine
from engine.options import EngineOptions
from tests.engine_helpers import FaultyFS

keys = st.sampled_from([b"", b"a", b"ab", b"b", b"ba", b"c", b"key", b"\xff", b"\x00"])
values = st.binary(max_size=24) | st.binary(max_size=24).map(lambda v: b"x" + v)
bounds = st.none() | keys


class EngineModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="respkv-engine-model-")
        self.options = EngineOptions(fsync="no", segment_size_bytes=160, memtable_size_bytes=300,
                                     frozen_memtables_max=1, block_size_bytes=64,
                                     compaction_min_threshold=2, compaction_small_table_bytes=0,
                                     background=False)
        self.filtering = False  # the compaction filter drops values starting with b"x"
        self.fs = FaultyFS()
        self.reports: list[str] = []
        self.engine = self._open()
        self.model: dict[bytes, bytes] = {}  # what the engine serves now
        self.committed: dict[bytes, bytes] = {}  # what must survive a crash

    def _open(self) -> Engine:
        return Engine.open(self.directory, self.options, fs=self.fs, reporter=self.reports.append,
                           compaction_filter=self._keep)

    def _keep(self, key: bytes, value: bytes) -> bool:
        return not (self.filtering and value.startswith(b"x"))

    @rule(key=keys, value=values)
    def put(self, key: bytes, value: bytes) -> None:
        self.engine.put(key, value)
        self.model[key] = value

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        self.engine.delete(key)
        self.model.pop(key, None)

    @rule(ops=st.lists(st.tuples(keys, st.none() | values), max_size=5))
    def batch(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        self.engine.write_batch(ops)
        for key, value in ops:
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        assert self.engine.get(key) == self.model.get(key)

    @rule(start=keys, end=bounds)
    def scan(self, start: bytes, end: bytes | None) -> None:
        expected = sorted((k, v) for k, v in self.model.items()
                          if k >= start and (end is None or k < end))
        assert list(self.engine.scan(start, end)) == expected

    @rule()
    def commit(self) -> None:
        self.engine.commit()
        self.committed = dict(self.model)

    @rule()
    def reopen(self) -> None:
        self.engine.close()
        self.committed = dict(self.model)
        self.engine = self._open()

    @rule()
    def flush(self) -> None:
        self.engine.flush()  # commits first (rotate), so everything is committed after it
        self.committed = dict(self.model)

    @rule()
    def compact(self) -> None:
        self.engine.compact()

    @rule()
    def compact_all_with_filter(self) -> None:
        self.engine.flush()
        self.filtering = True
        try:
            self.engine.compact(full=True)
        finally:
            self.filtering = False
        self.model = {k: v for k, v in self.model.items() if not v.startswith(b"x")}
        self.committed = dict(self.model)
        assert self.engine.stats()["tables"] <= 1

    @precondition(lambda self: self.engine.has_uncommitted or self.model != self.committed)
    @rule()
    def crash(self) -> None:
        self.fs.crash()
        self.engine = self._open()
        self.model = dict(self.committed)

    @invariant()
    def agrees_with_model(self) -> None:
        assert len(self.engine) == len(self.model)
        assert dict(self.engine.scan()) == self.model
        assert self.reports == []  # clean shutdowns and kill -9 never look like corruption

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def test_engine_matches_a_dict() -> None:
    # A plain function rather than EngineModel.TestCase: see tests/engine_helpers.py on fixtures.
    run_state_machine_as_test(EngineModel, settings=settings(
        max_examples=150, stateful_step_count=50, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
