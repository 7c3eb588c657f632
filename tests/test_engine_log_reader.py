"""log_reader: classifies damage, stops at the first bad record, never trusts a length."""

from __future__ import annotations

import io

from engine import log_format
from engine.log_format import SegmentHeader
from engine.log_reader import DamageKind, LogReader

HEADER = log_format.encode_segment_header(SegmentHeader(3, 2, 1000))


class BytesFile:
    """A ReadableFile over bytes that records how much was asked for."""

    def __init__(self, data: bytes) -> None:
        self._io = io.BytesIO(data)
        self.largest_read = 0

    def read(self, size: int) -> bytes:
        self.largest_read = max(self.largest_read, size)
        return self._io.read(size)

    def seek(self, offset: int) -> None:
        self._io.seek(offset)

    def close(self) -> None:
        pass


def records(*kvs: tuple[bytes, bytes]) -> bytes:
    buf = bytearray()
    for key, value in kvs:
        log_format.append_put(buf, key, value)
    return bytes(buf)


def read(data: bytes) -> tuple[list[list[log_format.Op]], LogReader, list[str], BytesFile]:
    reports: list[str] = []
    file = BytesFile(data)
    reader = LogReader(file, "seg-3", 3, len(data), reports.append)
    out: list[list[log_format.Op]] = []
    header = reader.read_header()
    if header is not None:
        assert header == SegmentHeader(3, 2, 1000)
        out = list(reader.records())
    return out, reader, reports, file


GOOD = HEADER + records((b"a", b"1"), (b"b", b"2"), (b"c", b"3"))
SECOND = len(HEADER) + len(records((b"a", b"1")))


def test_clean_segment() -> None:
    out, reader, reports, _ = read(GOOD)
    assert out == [[(b"a", b"1")], [(b"b", b"2")], [(b"c", b"3")]]
    assert reader.damage is None
    assert reader.valid_end == len(GOOD)
    assert reports == []


def test_header_only_segment_is_clean() -> None:
    out, reader, reports, _ = read(HEADER)
    assert (out, reader.damage, reader.valid_end, reports) == ([], None, len(HEADER), [])


def test_damage_classification_table() -> None:
    flipped = bytearray(GOOD)
    flipped[SECOND + 10] ^= 1
    cases = [
        (b"", DamageKind.ZEROS, 0, "incomplete segment header"),
        (bytes(100), DamageKind.ZEROS, 0, "bad magic"),
        (HEADER[:7], DamageKind.TORN, 0, "incomplete segment header"),
        (HEADER[:7] + b"Z", DamageKind.CORRUPT, 0, "incomplete segment header"),
        (b"PK\x03\x04" + GOOD[4:], DamageKind.CORRUPT, 0, "bad magic"),
        (GOOD[:-1], DamageKind.TORN, SECOND * 2 - len(HEADER), "runs past the end"),
        (GOOD + bytes(3), DamageKind.ZEROS, len(GOOD), "zero-filled tail"),
        (GOOD + bytes(30), DamageKind.ZEROS, len(GOOD), "zero-filled tail"),
        (GOOD + b"\x07\x00", DamageKind.TORN, len(GOOD), "incomplete record header"),
        (GOOD + bytes(9) + b"data", DamageKind.CORRUPT, len(GOOD), "followed by data"),
        (bytes(flipped), DamageKind.CORRUPT, SECOND, "checksum mismatch"),
    ]
    for data, kind, offset, reason in cases:
        _, reader, reports, _ = read(data)
        assert reader.damage is not None, reason
        assert (reader.damage.kind, reader.damage.offset) == (kind, offset), (data, reason)
        assert reader.valid_end == offset
        [report] = reports
        assert reason in report and "seg-3" in report, report
        assert f"dropping {len(data) - offset} bytes" in report


def test_stops_at_first_bad_record_and_yields_nothing_after_it() -> None:
    flipped = bytearray(GOOD)
    flipped[SECOND + 12] ^= 0x80
    out, _, _, _ = read(bytes(flipped))
    assert out == [[(b"a", b"1")]]


def test_huge_length_is_not_allocated() -> None:
    damaged = bytearray(GOOD)
    damaged[SECOND + 4 : SECOND + 8] = (0xFFFF_FFF0).to_bytes(4, "little")
    _, reader, _, file = read(bytes(damaged))
    assert reader.damage is not None and reader.damage.kind is DamageKind.TORN
    assert file.largest_read <= len(GOOD)
