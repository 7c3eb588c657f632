"""Recovery: damage a real log, reopen, and check the valid prefix, the repair and the report."""

from __future__ import annotations

import itertools
import os
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import filenames, log_format
from engine.errors import StorageError
from tests.engine_helpers import (
    open_engine,
    patch_file,
    quarantined_files,
    read_bytes,
    record_offsets,
    rewrite_record,
    segment_files,
    temp_dir,
    truncate_file,
)


def key(i: int) -> bytes:
    return b"key-%03d" % i


def value(i: int) -> bytes:
    return b"value-%03d-" % i + bytes([i % 256]) * (i % 50)


def build_log(directory: str, n: int, **options: Any) -> None:
    """n records, one PUT of key(i) per commit, then a clean close."""
    opened = open_engine(directory, **options)
    for i in range(n):
        opened.engine.put(key(i), value(i))
        opened.engine.commit()
    opened.engine.close()
    assert opened.reports == []


def reopen(directory: str, **options: Any) -> tuple[dict[bytes, bytes], list[str]]:
    """Open, read everything, close; returns (contents, reports)."""
    opened = open_engine(directory, **options)
    contents = dict(opened.engine.scan())
    assert len(opened.engine) == len(contents)
    opened.engine.close()
    return contents, opened.reports


def first_n(n: int) -> dict[bytes, bytes]:
    return {key(i): value(i) for i in range(n)}


def assert_stable(directory: str, expected: dict[bytes, bytes]) -> None:
    """A second open serves the same data and finds nothing more to report."""
    contents, reports = reopen(directory)
    assert contents == expected
    assert reports == []


def test_clean_log_replays_everything() -> None:
    with temp_dir() as d:
        build_log(d, 20)
        opened = open_engine(d)
        assert dict(opened.engine.scan()) == first_n(20)
        assert opened.engine.stats()["records_replayed"] == 20
        assert opened.engine.stats()["bytes_truncated_on_recovery"] == 0
        opened.engine.close()


def test_torn_final_record() -> None:
    with temp_dir() as d:
        build_log(d, 5)
        [seg] = segment_files(d)
        offsets = record_offsets(seg)
        truncate_file(seg, offsets[4] + 12)  # inside the last record's payload
        opened = open_engine(d)
        assert dict(opened.engine.scan()) == first_n(4)
        assert opened.engine.stats()["bytes_truncated_on_recovery"] == 12
        [report, kept] = opened.reports
        assert seg in report
        assert f"offset {offsets[4]}" in report
        assert "dropping 12 bytes" in report
        assert "runs past the end of the file" in report
        assert filenames.quarantine_name(1, offsets[4]) in kept
        opened.engine.close()
        assert os.path.getsize(seg) == offsets[4]
        assert_stable(d, first_n(4))


def test_torn_record_header() -> None:
    with temp_dir() as d:
        build_log(d, 5)
        [seg] = segment_files(d)
        offsets = record_offsets(seg)
        truncate_file(seg, offsets[4] + 4)
        contents, reports = reopen(d)
        assert contents == first_n(4)
        assert "incomplete record header (4 of 9 bytes)" in reports[0]
        assert "dropping 4 bytes" in reports[0]


def test_zero_filled_tail() -> None:
    with temp_dir() as d:
        build_log(d, 5)
        [seg] = segment_files(d)
        size = os.path.getsize(seg)
        with open(seg, "ab") as f:
            f.write(bytes(4096))
        contents, reports = reopen(d)
        assert contents == first_n(5)
        [report] = reports  # nothing set aside: zeros carry no data
        assert "zero-filled tail" in report
        assert f"offset {size}" in report
        assert "dropping 4096 bytes" in report
        assert os.path.getsize(seg) == size
        assert quarantined_files(d) == []
        assert_stable(d, first_n(5))


def test_short_zero_tail_inside_a_header() -> None:
    with temp_dir() as d:
        build_log(d, 3)
        [seg] = segment_files(d)
        with open(seg, "ab") as f:
            f.write(bytes(5))
        contents, reports = reopen(d)
        assert contents == first_n(3)
        assert "zero-filled tail" in reports[0]


def test_zeroed_header_followed_by_data_is_corruption() -> None:
    with temp_dir() as d:
        build_log(d, 5)
        [seg] = segment_files(d)
        offsets = record_offsets(seg)
        patch_file(seg, offsets[2], bytes(9))
        contents, reports = reopen(d)
        assert contents == first_n(2)
        assert "zeroed record header followed by data" in reports[0]


def test_flipped_byte_in_middle_of_final_segment() -> None:
    with temp_dir() as d:
        build_log(d, 5)
        [seg] = segment_files(d)
        offsets = record_offsets(seg)
        original = read_bytes(seg)
        patch_file(seg, offsets[2] + 12, bytes([original[offsets[2] + 12] ^ 0x40]))
        damaged = read_bytes(seg)
        opened = open_engine(d)
        assert dict(opened.engine.scan()) == first_n(2)
        assert "checksum mismatch" in opened.reports[0]
        assert f"offset {offsets[2]}" in opened.reports[0]
        assert f"dropping {len(original) - offsets[2]} bytes" in opened.reports[0]
        # The damaged bytes are kept for an operator, not served and not lost.
        kept = os.path.join(d, filenames.quarantine_name(1, offsets[2]))
        assert read_bytes(kept) == damaged[offsets[2] :]
        # New writes after the cut survive, and the records after the damage never return.
        opened.engine.put(b"new", b"write")
        opened.engine.close()
        assert_stable(d, {**first_n(2), b"new": b"write"})


def test_length_claims_more_than_the_file_has() -> None:
    with temp_dir() as d:
        build_log(d, 5)
        [seg] = segment_files(d)
        offsets = record_offsets(seg)
        patch_file(seg, offsets[3] + 4, (0xFFFF_FF00).to_bytes(4, "little"))
        contents, reports = reopen(d)
        assert contents == first_n(3)
        assert f"record length {0xFFFF_FF00} runs past the end of the file" in reports[0]


def test_length_pointing_inside_the_file_fails_the_checksum() -> None:
    with temp_dir() as d:
        build_log(d, 5)
        [seg] = segment_files(d)
        offsets = record_offsets(seg)
        patch_file(seg, offsets[1] + 4, (3).to_bytes(4, "little"))
        contents, reports = reopen(d)
        assert contents == first_n(1)
        assert "checksum mismatch" in reports[0]


def test_unknown_record_type_with_valid_checksum() -> None:
    with temp_dir() as d:
        build_log(d, 5)
        [seg] = segment_files(d)
        rewrite_record(seg, record_offsets(seg)[3], rtype=9)
        contents, reports = reopen(d)
        assert contents == first_n(3)
        assert "unknown record type 9" in reports[0]


def test_malformed_payload_with_valid_checksum() -> None:
    with temp_dir() as d:
        build_log(d, 5)
        [seg] = segment_files(d)
        rewrite_record(seg, record_offsets(seg)[1], payload=b"\x01")
        contents, reports = reopen(d)
        assert contents == first_n(1)
        assert "GROUP payload is not a non-empty array" in reports[0]


def test_torn_batch_is_all_or_nothing() -> None:
    with temp_dir() as d:
        opened = open_engine(d)
        opened.engine.put(b"before", b"1")
        opened.engine.commit()
        opened.engine.write_batch([(b"a", b"2"), (b"before", None), (b"c", b"3")])
        opened.engine.close()
        [seg] = segment_files(d)
        offsets = record_offsets(seg)
        for cut in range(offsets[1] + 1, offsets[2]):
            truncate_file(seg, cut)
            contents, _ = reopen(d)
            assert contents == {b"before": b"1"}, cut


def test_empty_final_segment() -> None:
    with temp_dir() as d:
        build_log(d, 3)
        open(os.path.join(d, filenames.segment_name(2)), "wb").close()
        opened = open_engine(d)
        assert dict(opened.engine.scan()) == first_n(3)
        assert "dropping 0 bytes" in opened.reports[0]
        opened.engine.put(b"more", b"x")
        opened.engine.close()
        assert_stable(d, {**first_n(3), b"more": b"x"})
        assert quarantined_files(d) == []


def test_store_with_only_an_empty_segment() -> None:
    with temp_dir() as d:
        open(os.path.join(d, filenames.segment_name(1)), "wb").close()
        contents, _ = reopen(d)
        assert contents == {}
        assert [os.path.basename(p) for p in segment_files(d)] == [filenames.segment_name(2)]


def test_half_written_segment_header_is_dropped_silently_kept_nowhere() -> None:
    with temp_dir() as d:
        build_log(d, 3)
        header = log_format.encode_segment_header(log_format.SegmentHeader(2, 1, 100))
        with open(os.path.join(d, filenames.segment_name(2)), "wb") as f:
            f.write(header[:10])
        contents, reports = reopen(d)
        assert contents == first_n(3)
        assert "incomplete segment header (10 of 40 bytes)" in reports[0]
        assert quarantined_files(d) == []


def test_bad_header_in_final_segment() -> None:
    with temp_dir() as d:
        build_log(d, 12, segment_size_bytes=200)
        segs = segment_files(d)
        assert len(segs) >= 3
        before_last = reopen(d)[0]  # baseline, then damage the last segment's magic
        last_keys = _keys_in(segs[-1])
        patch_file(segs[-1], 0, b"X")
        contents, reports = reopen(d, segment_size_bytes=200)
        assert contents == {k: v for k, v in before_last.items() if k not in last_keys}
        assert "bad magic" in reports[0]
        assert os.path.basename(segs[-1]) + filenames.QUARANTINE_SUFFIX in quarantined_files(d)
        numbers = [filenames.parse_segment_name(os.path.basename(p)) for p in segment_files(d)]
        assert max(n for n in numbers if n) > len(segs)  # a fresh number, never reused


def test_empty_non_final_segment_stops_replay_there() -> None:
    with temp_dir() as d:
        build_log(d, 12, segment_size_bytes=200)
        segs = segment_files(d)
        survivors = _keys_in(segs[0])
        truncate_file(segs[1], 0)
        contents, reports = reopen(d)
        assert set(contents) == survivors
        assert any("will not be replayed" in r for r in reports)
        assert len(quarantined_files(d)) == len(segs) - 2
        assert_stable(d, contents)


def test_corruption_in_non_final_segment_never_serves_later_data() -> None:
    with temp_dir() as d:
        build_log(d, 30, segment_size_bytes=300)
        segs = segment_files(d)
        assert len(segs) >= 4
        offsets = record_offsets(segs[1])
        patch_file(segs[1], offsets[1] + 10, b"\xff\xfe")
        opened = open_engine(d)
        expected = first_n(len(_keys_in(segs[0])) + 1)
        assert dict(opened.engine.scan()) == expected
        assert any(segs[1] in r and "checksum mismatch" in r for r in opened.reports)
        moved = [r for r in opened.reports if "will not be replayed" in r]
        assert moved and all(os.path.basename(s) in moved[0] for s in segs[2:])
        assert opened.engine.stats()["segments_quarantined"] == len(segs) - 2
        opened.engine.put(b"after", b"repair")
        opened.engine.close()
        assert_stable(d, {**expected, b"after": b"repair"})


def test_bad_header_in_non_final_segment() -> None:
    with temp_dir() as d:
        build_log(d, 12, segment_size_bytes=200)
        segs = segment_files(d)
        patch_file(segs[1], 36, b"\x00\x00\x00\x00")  # the header checksum
        contents, reports = reopen(d)
        assert set(contents) == _keys_in(segs[0])
        assert "segment header checksum mismatch" in reports[0]


def test_unsupported_format_version_refuses_to_open_and_touches_nothing() -> None:
    with temp_dir() as d:
        build_log(d, 3)
        [seg] = segment_files(d)
        header = bytearray(read_bytes(seg)[: log_format.SEGMENT_HEADER_SIZE])
        header[8] = log_format.VERSION + 1
        header[36:40] = zlib.crc32(header[:36]).to_bytes(4, "little")
        patch_file(seg, 0, bytes(header))
        before = read_bytes(seg)
        with pytest.raises(StorageError, match=f"format version {log_format.VERSION + 1}"):
            open_engine(d)
        assert read_bytes(seg) == before
        assert quarantined_files(d) == []


def test_flipped_version_byte_is_corruption_not_a_newer_format() -> None:
    with temp_dir() as d:
        build_log(d, 3)
        [seg] = segment_files(d)
        patch_file(seg, 8, bytes([log_format.VERSION + 1]))
        contents, reports = reopen(d)
        assert contents == {}
        assert "segment header checksum mismatch" in reports[0]


def test_segment_that_lost_whole_records_at_its_end() -> None:
    with temp_dir() as d:
        build_log(d, 30, segment_size_bytes=300)
        segs = segment_files(d)
        offsets = record_offsets(segs[1])
        truncate_file(segs[1], offsets[1])  # a clean record boundary: the segment looks fine
        contents, reports = reopen(d)
        assert contents == first_n(len(_keys_in(segs[0])) + 1)
        assert "follows segment 2 of" in reports[0]
        assert len(quarantined_files(d)) == len(segs) - 2


def test_missing_segment_stops_replay() -> None:
    with temp_dir() as d:
        build_log(d, 30, segment_size_bytes=300)
        segs = segment_files(d)
        os.remove(segs[1])
        contents, reports = reopen(d)
        assert set(contents) == _keys_in(segs[0])
        assert "follows segment 2" in reports[0]
        assert_stable(d, contents)


def test_files_that_are_not_segments_are_ignored() -> None:
    with temp_dir() as d:
        build_log(d, 3)
        for name in ["commitlog-1.log", "notes.txt", "commitlog-000000000009.log.corrupt"]:
            with open(os.path.join(d, name), "wb") as f:
                f.write(b"garbage")
        contents, reports = reopen(d)
        assert contents == first_n(3)
        assert reports == []


def _keys_in(path: str) -> set[bytes]:
    data = read_bytes(path)
    out: set[bytes] = set()
    for start in record_offsets(path)[:-1]:
        _, length, rtype = log_format.RECORD_HEADER.unpack_from(data, start)
        payload = data[start + 9 : start + 9 + length]
        out.update(k for k, _ in log_format.decode_record(rtype, payload, path, start))
    return out


# --- Any damage at all: the store opens and serves exactly the records before it -----------

Damage = tuple[str, float, int]  # kind, where (fraction of the log), size/byte


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(["put", "delete", "batch"]), st.integers(0, 15),
                       st.binary(max_size=40)), min_size=1, max_size=25),
    st.tuples(st.sampled_from(["flip", "truncate", "cut_records", "zero", "junk"]),
              st.floats(0, 1),
              st.integers(1, 255)),
)
def test_any_damage_recovers_exactly_the_prefix_before_it(
        script: list[tuple[str, int, bytes]], damage: Damage) -> None:
    with temp_dir() as d:
        states = _write_script(d, script)
        records = _record_ends(d)  # (segment index, end offset) per record, in log order
        assert len(records) == len(states) - 1
        allowed, detectable = _apply_damage(d, damage, records)
        opened = open_engine(d, segment_size_bytes=256)
        assert dict(opened.engine.scan()) == states[allowed]
        if detectable:
            assert opened.reports, "damage must be reported"
        opened.engine.close()
        contents, reports = reopen(d)
        assert contents == states[allowed]
        assert reports == []


def _write_script(d: str, script: list[tuple[str, int, bytes]]) -> list[dict[bytes, bytes]]:
    opened = open_engine(d, segment_size_bytes=256)
    model: dict[bytes, bytes] = {}
    states = [dict(model)]
    for kind, i, data in script:
        k = b"k%d" % i
        if kind == "put":
            opened.engine.put(k, data)
            model[k] = data
        elif kind == "delete":
            opened.engine.delete(k)
            model.pop(k, None)
        else:
            opened.engine.write_batch([(k, data), (k + b"-twin", data), (b"k%d" % (i + 1), None)])
            model.update({k: data, k + b"-twin": data})
            model.pop(b"k%d" % (i + 1), None)
        opened.engine.commit()
        states.append(dict(model))
    opened.engine.close()
    return states


def _record_ends(d: str) -> list[tuple[int, int]]:
    return [(index, end) for index, seg in enumerate(segment_files(d))
            for end in record_offsets(seg)[1:]]


def _apply_damage(d: str, damage: Damage, records: list[tuple[int, int]]) -> tuple[int, bool]:
    """Damage the log; returns how many records must survive (those ending before the damage)
    and whether the damage is detectable (cutting the last segment at a record boundary is
    not: it looks like a crash before those records were written)."""
    kind, where, size = damage
    segs = segment_files(d)
    if kind == "junk":  # garbage appended to the last segment: nothing valid is lost
        with open(segs[-1], "ab") as f:
            f.write(bytes([size]) * size)
        return len(records), True
    if kind == "cut_records":  # a segment loses whole records at its end: only the chain of
        # segment headers can tell (in the last segment nothing can: it looks like a crash)
        chosen = min(int(where * len(records)), len(records) - 1)
        index, end = records[chosen]
        if chosen == len(records) - 1 or records[chosen + 1][0] != index:
            return len(records), False  # nothing after it in that segment: no change
        truncate_file(segs[index], end)
        return chosen + 1, index != len(segs) - 1
    total = sum(os.path.getsize(s) for s in segs)
    pos = min(int(where * total), total - 1)
    index = 0
    while pos >= os.path.getsize(segs[index]):
        pos -= os.path.getsize(segs[index])
        index += 1
    seg = segs[index]
    data = read_bytes(seg)
    detectable = True
    if kind == "truncate":
        detectable = not (seg == segs[-1] and pos in record_offsets(seg))
        truncate_file(seg, pos)
        first_bad = pos + 1  # a record ending exactly at pos survives
    elif kind == "flip":
        patch_file(seg, pos, bytes([data[pos] ^ size]))
        first_bad = pos + 1
    else:  # zero a range; only bytes that actually change count as damage
        end = min(pos + size, len(data))
        patch_file(seg, pos, bytes(end - pos))
        changed = [p for p in range(pos, end) if data[p] != 0]
        if not changed:
            return len(records), False
        first_bad = changed[0] + 1
    allowed = sum(1 for s, e in records if s < index or (s == index and e < first_bad))
    return allowed, detectable


def test_log_of_an_earlier_build_is_replayed_and_never_appended_to() -> None:
    # An earlier build wrote version-1 segments of PUT, DELETE and BATCH records; this one
    # replays them, and writes its GROUP records into a new segment, so the earlier build
    # refuses the new segment's version instead of taking a GROUP record for damage.
    with temp_dir() as d:
        records = bytearray()
        log_format.append_put(records, key(1), value(1))
        log_format.append_put(records, key(2), value(2))
        log_format.append_delete(records, key(1))
        log_format.append_batch(records, [(key(3), value(3)), (key(2), None)])
        old = log_format.encode_segment_header(log_format.SegmentHeader(1, 0, 0, version=1))
        path = os.path.join(d, filenames.segment_name(1))
        with open(path, "wb") as f:
            f.write(old + records)
        opened = open_engine(d)
        assert dict(opened.engine.scan()) == {key(3): value(3)}
        assert opened.engine.stats()["records_replayed"] == 4
        opened.engine.put(key(4), value(4))
        opened.engine.close()
        assert read_bytes(path) == old + records
        new = segment_files(d)[-1]
        assert log_format.check_segment_header(read_bytes(new)[:40], new, 2).version == 2
        contents, reports = reopen(d)
        assert contents == {key(3): value(3), key(4): value(4)}
        assert reports == []


def test_writes_of_one_commit_are_one_record_but_batches_and_big_values_their_own() -> None:
    with temp_dir() as d:
        opened = open_engine(d)
        big = b"x" * (log_format.GROUP_FREE_BYTES_MAX + 1)
        opened.engine.put(key(1), value(1))
        opened.engine.delete(key(9))
        opened.engine.put(key(2), big)
        opened.engine.put(key(3), value(3))
        opened.engine.write_batch([(key(4), value(4)), (key(1), None)])
        opened.engine.put(key(5), value(5))
        pending = opened.engine.stats()["log_pending_bytes"]
        log_bytes = opened.engine.stats()["log_bytes"]
        opened.engine.commit()
        assert opened.engine.stats()["log_bytes"] - log_bytes == pending
        opened.engine.close()
        [seg] = segment_files(d)
        data = read_bytes(seg)
        offsets = record_offsets(seg)
        ops = [log_format.decode_record(data[start + 8], data[start + 9:end], seg, start)
               for start, end in itertools.pairwise(offsets)]
        assert ops == [[(key(1), value(1)), (key(9), None)], [(key(2), big)],
                       [(key(3), value(3))], [(key(4), value(4)), (key(1), None)],
                       [(key(5), value(5))]]


def test_torn_group_loses_only_its_own_commit() -> None:
    with temp_dir() as d:
        build_log(d, 2)
        opened = open_engine(d)
        for i in range(2, 6):
            opened.engine.put(key(i), value(i))
        opened.engine.close()  # one commit: one record
        [seg] = segment_files(d)
        offsets = record_offsets(seg)
        assert len(offsets) == 4
        whole = read_bytes(seg)
        for cut in range(offsets[2] + 1, offsets[3], 7):
            with open(seg, "wb") as f:  # recovery truncated it: the torn file afresh each time
                f.write(whole[:cut])
            contents, reports = reopen(d)
            assert contents == first_n(2), cut
            assert reports, cut
