"""commit(), sync() and rotation under injected faults: short writes, a full disk, failing
fsync and truncate, and sync() racing the loop thread."""

from __future__ import annotations

import os
import threading
import time

import pytest

from engine.errors import StorageError
from tests.engine_helpers import FaultyFS, open_engine, segment_files, temp_dir


def kv(i: int) -> tuple[bytes, bytes]:
    return b"key-%04d" % i, b"value-%04d-" % i + b"x" * (i % 40)


def expected(n: int) -> dict[bytes, bytes]:
    return dict(kv(i) for i in range(n))


def contents_after_reopen(d: str) -> tuple[dict[bytes, bytes], list[str]]:
    opened = open_engine(d)
    contents = dict(opened.engine.scan())
    opened.engine.close()
    return contents, opened.reports


def log_size(d: str) -> int:
    return sum(os.path.getsize(p) for p in segment_files(d))


def test_short_writes_are_retried_until_complete() -> None:
    with temp_dir() as d:
        fs = FaultyFS(short_write_bytes=7)
        opened = open_engine(d, fs=fs)
        calls_before = fs.pwrite_calls
        for i in range(50):
            opened.engine.put(*kv(i))
        opened.engine.commit()
        assert fs.pwrite_calls - calls_before > 100
        assert not opened.engine.has_uncommitted
        opened.engine.close()
        assert contents_after_reopen(d) == (expected(50), [])


def test_full_disk_fails_commit_cleanly_then_succeeds_once_space_is_freed() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        opened = open_engine(d, fs=fs)
        engine = opened.engine
        for i in range(10):
            engine.put(*kv(i))
        engine.commit()
        good_size = log_size(d)
        fs.space_bytes = 30  # the next commit gets a short write of 30 bytes, then ENOSPC
        for i in range(10, 15):
            engine.put(*kv(i))
        with pytest.raises(StorageError, match="No space left on device") as info:
            engine.commit()
        assert "failed after 30 bytes" in str(info.value)
        assert log_size(d) == good_size  # the partial record was cut back
        assert engine.has_uncommitted
        assert engine.get(kv(12)[0]) == kv(12)[1]  # the memtable still holds the writes
        assert engine.stats()["commit_errors"] == 1
        # Still full: fails again, still clean.
        with pytest.raises(StorageError):
            engine.commit()
        assert log_size(d) == good_size
        fs.space_bytes = None  # space freed
        engine.commit()
        assert not engine.has_uncommitted
        engine.close()
        assert contents_after_reopen(d) == (expected(15), [])


def test_crash_after_failed_commit_recovers_the_committed_prefix_silently() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs).engine
        for i in range(10):
            engine.put(*kv(i))
        engine.commit()
        fs.space_bytes = 25
        engine.put(*kv(10))
        with pytest.raises(StorageError):
            engine.commit()
        fs.crash()
        assert contents_after_reopen(d) == (expected(10), [])


def test_failed_cut_back_is_overwritten_by_the_retry() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs).engine
        engine.put(*kv(0))
        engine.commit()
        good_size = log_size(d)
        fs.space_bytes = 20
        fs.fail_truncate = True
        for i in range(1, 6):
            engine.put(*kv(i))
        with pytest.raises(StorageError):
            engine.commit()
        assert log_size(d) == good_size + 20  # remains of the failed write
        fs.space_bytes = None
        fs.fail_truncate = False
        engine.put(*kv(6))
        engine.commit()
        engine.close()
        assert contents_after_reopen(d) == (expected(7), [])


def test_failed_fsync_with_fsync_always_fails_the_commit_and_retries_it() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs, fsync="always").engine
        engine.put(*kv(0))
        engine.commit()
        good_size = log_size(d)
        fs.fail_sync = True
        engine.put(*kv(1))
        with pytest.raises(StorageError, match="fsync failed"):
            engine.commit()
        assert log_size(d) == good_size
        assert engine.has_uncommitted
        fs.fail_sync = False
        syncs = fs.syncs
        engine.commit()
        assert fs.syncs == syncs + 1
        engine.close()
        assert contents_after_reopen(d) == (expected(2), [])


def test_fsync_always_syncs_every_commit_and_everysec_none() -> None:
    for policy, syncs_per_commit in [("always", 1), ("everysec", 0), ("no", 0)]:
        with temp_dir() as d:
            fs = FaultyFS()
            engine = open_engine(d, fs=fs, fsync=policy).engine
            before = fs.syncs
            for i in range(5):
                engine.put(*kv(i))
                engine.commit()
            engine.commit()  # nothing pending: no write, no fsync
            assert fs.syncs - before == 5 * syncs_per_commit, policy
            assert engine.stats()["commits"] == 5
            engine.close()


def test_sync_only_fsyncs_when_there_is_something_new() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs).engine
        engine.put(*kv(0))
        engine.commit()
        before = fs.syncs
        engine.sync()
        engine.sync()
        assert fs.syncs == before + 1
        fs.fail_sync = True
        engine.put(*kv(1))
        engine.commit()
        with pytest.raises(StorageError, match="fsync failed"):
            engine.sync()
        fs.fail_sync = False
        engine.close()


def test_segments_rotate_and_log_bytes_add_up() -> None:
    with temp_dir() as d:
        engine = open_engine(d, segment_size_bytes=1000).engine
        for i in range(200):
            engine.put(*kv(i))
            engine.commit()
        stats = engine.stats()
        assert stats["log_segments"] == len(segment_files(d)) > 10
        assert stats["log_bytes"] == log_size(d)
        assert all(os.path.getsize(p) < 1000 + 200 for p in segment_files(d))
        engine.close()
        assert contents_after_reopen(d) == (expected(200), [])


def test_failed_rotation_keeps_writing_to_the_current_segment() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        opened = open_engine(d, fs=fs, segment_size_bytes=300)
        engine = opened.engine
        fs.fail_create = True
        for i in range(20):
            engine.put(*kv(i))
            engine.commit()  # the commits themselves succeed
        assert any("could not start a new segment" in r for r in opened.reports)
        assert len(segment_files(d)) == 1
        fs.fail_create = False
        engine.put(*kv(20))
        engine.commit()
        assert len(segment_files(d)) == 2
        engine.close()
        assert contents_after_reopen(d) == (expected(21), [])


def test_segment_header_cut_short_by_a_full_disk_leaves_nothing_behind() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        opened = open_engine(d, fs=fs, segment_size_bytes=300)
        engine = opened.engine
        i = 0
        while engine.stats()["log_bytes"] + engine.stats()["log_pending_bytes"] < 300:
            engine.put(*kv(i))
            i += 1
        fs.space_bytes = engine.stats()["log_pending_bytes"] + 10  # records fit, header not
        engine.commit()
        assert any("could not start a new segment" in r for r in opened.reports)
        assert len(segment_files(d)) == 1  # the half-written new segment was removed
        fs.space_bytes = None
        for j in range(i, i + 20):
            engine.put(*kv(j))
            engine.commit()
        engine.close()
        assert contents_after_reopen(d) == (expected(i + 20), [])


def test_drop_segments_before_removes_only_older_segments() -> None:
    with temp_dir() as d:
        engine = open_engine(d, segment_size_bytes=500).engine
        for i in range(30):
            engine.put(*kv(i))
            engine.commit()
        log = engine._log  # the hook a future SSTable flush will use
        number = log.rotate()
        engine.put(*kv(30))
        log.drop_segments_before(number)
        assert len(segment_files(d)) == 1
        assert engine.stats()["log_segments"] == 1
        engine.close()
        # The data of dropped segments would live in a table; the log alone now holds one key,
        # and the first surviving segment is accepted although its predecessor is gone.
        assert contents_after_reopen(d) == ({kv(30)[0]: kv(30)[1]}, [])


def test_sync_from_a_thread_races_puts_commits_and_rotations_safely() -> None:
    with temp_dir() as d:
        fs = FaultyFS(sync_delay_s=0.002)
        engine = open_engine(d, fs=fs, segment_size_bytes=2048).engine
        errors: list[BaseException] = []
        stop = threading.Event()
        syncs = 0

        def syncer() -> None:
            nonlocal syncs
            fs.slow_sync_threads.add(threading.get_ident())
            while not stop.is_set():
                try:
                    engine.sync()
                    syncs += 1
                except BaseException as exc:
                    errors.append(exc)
                    return

        thread = threading.Thread(target=syncer)
        thread.start()
        deadline = time.monotonic() + 0.7
        i = 0
        while time.monotonic() < deadline or i < 1000:
            engine.put(*kv(i))
            engine.commit()
            i += 1
        rotations = engine.stats()["log_segments"]
        engine.close()  # closing while the thread still calls sync() is safe too
        stop.set()
        thread.join()
        assert errors == []
        assert fs.use_after_close == 0
        assert rotations > 20 and syncs > 10
        assert contents_after_reopen(d) == (expected(i), [])


def test_rotation_parks_the_old_segment_and_sync_fsyncs_it_before_the_active_one() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs, fsync="no", background=False).engine
        for i in range(30):
            engine.put(*kv(i))
            engine.commit()
        log = engine._log
        old = log._writer
        assert old is not None and old.synced_offset < old.offset
        before = fs.syncs
        log.rotate()
        assert fs.syncs == before  # neither the old segment nor the new one's header
        assert log._unsynced == [old]
        engine.put(*kv(30))
        engine.commit()
        engine.sync()  # the everysec timer's call: the parked segment first, then the active
        assert log._unsynced == []
        assert old.synced_offset == old.offset
        assert log._writer is not None and log._writer.synced_offset == log._writer.offset
        engine.close()
        assert contents_after_reopen(d) == (expected(31), [])


@pytest.mark.parametrize("policy", ["no", "everysec"])
def test_rotation_fsyncs_nothing_and_the_next_sync_makes_the_new_segment_durable(
        policy: str) -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs, fsync=policy, background=False).engine
        log = engine._log
        syncs, dir_syncs = fs.syncs, fs.dir_syncs
        for i in range(3):
            engine.put(*kv(i))
            engine.commit()
            log.rotate()
        assert (fs.syncs, fs.dir_syncs) == (syncs, dir_syncs)  # no fsync on the loop thread
        assert log._created_unsynced == 3 and len(log._unsynced) == 3
        engine.sync()  # the everysec timer's call
        assert log._created_unsynced == 0 and log._unsynced == []
        assert fs.dir_syncs == dir_syncs + 1
        new = log._writer
        assert new is not None and new.synced_offset == new.offset > 0  # the header too
        engine.close()
        assert contents_after_reopen(d) == (expected(3), [])


def test_a_lost_new_segment_is_no_damage_even_when_the_manifest_starts_there() -> None:
    """What a power loss can leave before sync() made a new segment durable (invariant 6):
    the manifest's log_number names a segment that is not there, or that holds only a cut
    header. The store opens with everything the tables hold; a cut header is reported as
    such (recovery's half-written header), nothing else."""
    for cut in (None, 0, 17):
        with temp_dir() as d:
            opened = open_engine(d, fsync="everysec")
            engine = opened.engine
            for i in range(20):
                engine.put(*kv(i))
            engine.commit()
            engine.flush()  # a table; the manifest's log_number is the new active segment
            engine.close()
            newest = segment_files(d)[-1]
            if cut is None:
                os.remove(newest)
            else:
                with open(newest, "r+b") as f:
                    f.truncate(cut)
            contents, reports = contents_after_reopen(d)
            assert contents == expected(20)
            assert all("incomplete segment header" in r for r in reports)
            assert len(reports) == (0 if cut is None else 1)


def test_with_fsync_always_rotation_fsyncs_the_new_segment_and_the_directory() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        engine = open_engine(d, fs=fs, fsync="always", background=False).engine
        engine.put(*kv(0))
        engine.commit()
        syncs, dir_syncs = fs.syncs, fs.dir_syncs
        engine._log.rotate()
        assert (fs.syncs, fs.dir_syncs) == (syncs + 1, dir_syncs + 1)
        assert engine._log._created_unsynced == 0
        engine.close()


def test_with_fsync_always_a_retired_segment_is_already_synced_and_closed_at_once() -> None:
    with temp_dir() as d:
        engine = open_engine(d, fsync="always", background=False).engine
        for i in range(10):
            engine.put(*kv(i))
            engine.commit()
        engine._log.rotate()
        assert engine._log._unsynced == []
        engine.close()
        assert contents_after_reopen(d) == (expected(10), [])


def test_parked_segments_stay_bounded_without_flushes_or_syncs() -> None:
    with temp_dir() as d:
        engine = open_engine(d, fsync="no", background=False, segment_size_bytes=300).engine
        for i in range(300):
            engine.put(*kv(i))
            engine.commit()
            assert len(engine._log._unsynced) <= 4
        assert len(segment_files(d)) > 10
        engine.close()
        assert contents_after_reopen(d) == (expected(300), [])


def test_flush_thread_fsyncs_the_segment_a_freeze_parked() -> None:
    with temp_dir() as d:
        engine = open_engine(d, fsync="no", memtable_size_bytes=4000).engine
        i = 0
        while engine.stats()["flushes"] == 0:
            engine.put(*kv(i % 500))
            engine.commit()
            i += 1
            assert i < 100_000
        deadline = time.monotonic() + 10
        while engine._log._unsynced:  # no sync() call here: only the flush thread fsyncs
            assert time.monotonic() < deadline
            time.sleep(0.01)
        engine.close()
