"""manifest + version_edit + compaction_picker: durable live-table set and the STCS policy."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import manifest, version_edit
from engine.compaction_picker import StcsOptions, pick, runs
from engine.errors import CorruptionError, StorageError
from engine.fs import OSFileSystem
from engine.manifest import Manifest
from engine.version_edit import TableMeta, Version, VersionEdit
from tests.engine_helpers import FaultyFS, patch_file, read_bytes, temp_dir

FS = OSFileSystem()
MIB = 1 << 20


def table(number: int, size: int = 1000, recency: int | None = None) -> TableMeta:
    return TableMeta(number, number if recency is None else recency, size, 10,
                     b"k%d" % number, b"z%d" % number)


def open_manifest(d: str, fs: OSFileSystem | FaultyFS = FS,
                  reports: list[str] | None = None) -> Manifest:
    m, _ = Manifest.open(fs, d, (reports if reports is not None else []).append)
    return m


def current_path(d: str) -> str:
    name = read_bytes(os.path.join(d, "CURRENT")).decode().strip()
    return os.path.join(d, name)


# --- version edits ----------------------------------------------------------------------------

tables = st.builds(TableMeta, st.integers(1, 10**6), st.integers(1, 10**6),
                   st.integers(0, 2**40), st.integers(0, 2**40), st.binary(max_size=5),
                   st.binary(max_size=5)).map(
    lambda t: TableMeta(t.number, t.recency, t.file_size, t.entry_count,
                        min(t.min_key, t.max_key), max(t.min_key, t.max_key)))
edits = st.builds(VersionEdit, st.none() | st.integers(0, 2**63), st.none() | st.integers(
    0, 2**63), st.lists(tables, max_size=3).map(tuple),
    st.lists(st.integers(1, 10**6), max_size=3).map(tuple))


@given(edits)
def test_edit_encoding_round_trips(edit: VersionEdit) -> None:
    assert version_edit.decode_edit(version_edit.encode_edit(edit), "m", 0) == edit


@given(edits)
def test_truncated_edit_is_corruption(edit: VersionEdit) -> None:
    data = version_edit.encode_edit(edit)
    for cut in range(len(data)):
        try:
            version_edit.decode_edit(data[:cut], "m", 0)
        except CorruptionError:
            pass


def test_apply_orders_newest_first_and_checks_edits() -> None:
    v = version_edit.apply(Version(), VersionEdit(log_number=5, added=(table(1), table(2))))
    assert [t.number for t in v.tables] == [2, 1]
    assert (v.log_number, v.next_table_number) == (5, 3)
    v2 = version_edit.apply(v, VersionEdit(added=(table(3, recency=2),), removed=(2,)))
    assert [t.number for t in v2.tables] == [3, 1]
    assert v2.log_number == 5  # never goes back
    with pytest.raises(ValueError):
        version_edit.apply(v, VersionEdit(removed=(9,)))
    with pytest.raises(ValueError):
        version_edit.apply(v, VersionEdit(added=(table(1),)))
    assert [t.number for t in v.tables] == [2, 1]  # apply() is pure


# --- manifest file ----------------------------------------------------------------------------

def test_new_store_then_reopen_sees_every_edit() -> None:
    with temp_dir() as d:
        m = open_manifest(d)
        assert m.version == Version()
        m.log_and_apply(VersionEdit(log_number=3, added=(table(1), table(2))))
        m.log_and_apply(VersionEdit(added=(table(3, recency=2),), removed=(1, 2)))
        expected = m.version
        m.close()
        m2 = open_manifest(d)
        assert m2.version == expected
        assert [t.number for t in m2.version.tables] == [3]
        names = sorted(n for n in os.listdir(d) if n.startswith("MANIFEST"))
        assert names == [manifest.manifest_name(m2.number)]  # old manifest removed


def test_torn_last_record_is_ignored_and_reported() -> None:
    with temp_dir() as d:
        m = open_manifest(d)
        m.log_and_apply(VersionEdit(added=(table(1),)))
        good = m.version
        m.log_and_apply(VersionEdit(added=(table(2),)))
        m.close()
        path = current_path(d)
        size = os.path.getsize(path)
        for cut in (size - 1, size - 20):
            os.truncate(path, cut)
            reports: list[str] = []
            m2, _ = Manifest.open(FS, d, reports.append)
            assert m2.version == good
            assert any("torn" in r for r in reports)
            m2.log_and_apply(VersionEdit(added=(table(2),)))  # new manifest: appends cleanly
            m2.close()
            path = current_path(d)
            size = os.path.getsize(path)


def test_flipped_byte_in_last_record_is_torn_tail_but_earlier_is_corruption() -> None:
    with temp_dir() as d:
        m = open_manifest(d)
        m.log_and_apply(VersionEdit(added=(table(1),)))
        m.log_and_apply(VersionEdit(added=(table(2),)))
        m.close()
        path = current_path(d)
        data = read_bytes(path)
        patch_file(path, len(data) - 2, bytes([data[-2] ^ 1]))
        m2 = open_manifest(d)
        assert [t.number for t in m2.version.tables] == [1]
        m2.log_and_apply(VersionEdit(added=(table(3),)))  # the snapshot is no longer last
        m2.close()
        path = current_path(d)
        at = manifest.HEADER_SIZE + 12
        patch_file(path, at, bytes([read_bytes(path)[at] ^ 1]))
        with pytest.raises(CorruptionError, match="MANIFEST"):
            open_manifest(d)


def test_zero_filled_tail_is_torn() -> None:
    with temp_dir() as d:
        m = open_manifest(d)
        m.log_and_apply(VersionEdit(added=(table(1),)))
        m.close()
        with open(current_path(d), "ab") as f:
            f.write(bytes(100))
        assert [t.number for t in open_manifest(d).version.tables] == [1]


def test_damaged_current_or_header_is_corruption() -> None:
    with temp_dir() as d:
        open_manifest(d).close()
        path = current_path(d)
        patch_file(path, 3, b"X")
        with pytest.raises(CorruptionError):
            open_manifest(d)
    with temp_dir() as d:
        open_manifest(d).close()
        with open(os.path.join(d, "CURRENT"), "wb") as f:
            f.write(b"garbage\n")
        with pytest.raises(CorruptionError, match="CURRENT"):
            open_manifest(d)


def test_failed_fsync_leaves_version_unchanged_and_next_write_rolls_over() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        m = open_manifest(d, fs)
        first = m.number
        fs.fail_sync = True
        with pytest.raises(StorageError):
            m.log_and_apply(VersionEdit(added=(table(1),)))
        assert m.version == Version()
        fs.fail_sync = False
        m.log_and_apply(VersionEdit(added=(table(2),)))
        assert m.number == first + 1
        m.close()
        assert [t.number for t in open_manifest(d).version.tables] == [2]


def test_current_switch_leaves_no_temp_file() -> None:
    with temp_dir() as d:
        open_manifest(d).close()
        open_manifest(d).close()
        assert sorted(os.listdir(d)) == ["CURRENT", manifest.manifest_name(2)]


# --- size-tiered compaction picker -------------------------------------------------------------

def newest_first(sizes: list[int]) -> list[TableMeta]:
    """Tables whose sizes are given newest first, numbered so that order is also recency."""
    n = len(sizes)
    return [table(n - i, size) for i, size in enumerate(sizes)]


PICK_CASES: list[tuple[str, list[int], list[int] | None, bool]] = [
    # (scenario, sizes newest first in MiB, picked input positions, bottommost)
    ("no tables", [], None, False),
    ("three small: below min_threshold", [1, 1, 1], None, False),
    ("four small flushes", [1, 2, 1, 3], [0, 1, 2, 3], True),
    ("small tables bucket together under 50 MiB", [1, 40, 10, 5], [0, 1, 2, 3], True),
    ("four similar large", [100, 120, 90, 110], [0, 1, 2, 3], True),
    ("large not similar: 100 vs 400", [100, 400, 100, 400], None, False),
    ("small run on top of one big table", [4, 4, 4, 4, 1000], [0, 1, 2, 3], False),
    ("cheapest run wins", [4, 4, 4, 4, 400, 400, 400, 400], [0, 1, 2, 3], False),
    ("big run below needs 4 too", [4, 4, 400, 400, 400, 400], [2, 3, 4, 5], True),
    ("a different size breaks contiguity", [100, 100, 1000, 100, 100], None, False),
]


def test_pick_table() -> None:
    for scenario, sizes, picked, bottommost in PICK_CASES:
        tables = newest_first([s * MIB for s in sizes])
        task = pick(tables)
        if picked is None:
            assert task is None, scenario
            continue
        assert task is not None, scenario
        assert list(task.inputs) == [tables[i] for i in picked], scenario
        assert task.bottommost == bottommost, scenario


def test_pick_caps_fan_in_at_max_threshold_keeping_the_oldest() -> None:
    tables = newest_first([1] * 40)
    task = pick(tables, StcsOptions(max_threshold=32))
    assert task is not None
    assert list(task.inputs) == tables[8:]
    assert task.bottommost


def test_compaction_edit_puts_output_where_inputs_were() -> None:
    tables = newest_first([1000 * MIB, 1 * MIB, 1 * MIB, 1 * MIB, 1 * MIB, 3000 * MIB])[::-1]
    tables = tables[::-1]  # newest first again, sizes as written
    v = version_edit.apply(Version(), VersionEdit(added=tuple(tables)))
    task = pick(v.tables)
    assert task is not None and [t.number for t in task.inputs] == [5, 4, 3, 2]
    output = TableMeta(100, task.output_recency, 4 * MIB, 40, b"a", b"z")
    v2 = version_edit.apply(v, task.edit([output]))
    assert [t.number for t in v2.tables] == [6, 100, 1]


@given(st.lists(st.integers(1, 200), max_size=30))
def test_runs_partition_tables_in_order(sizes: list[int]) -> None:
    tables = newest_first([s * MIB for s in sizes])
    options = StcsOptions(min_table_bytes=10 * MIB)
    assert [t for run in runs(tables, options) for t in run] == tables
    task = pick(tables, options)
    if task is not None:
        start = tables.index(task.inputs[0])
        assert list(task.inputs) == tables[start : start + len(task.inputs)]
        assert 4 <= len(task.inputs) <= 32
