"""block.parse + SearchBlock.find: restart-point search for point lookups, and its checks."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import block
from engine.block_cache import BlockCache
from engine.errors import CorruptionError
from engine.fs import OSFileSystem
from engine.table_builder import TableBuilder
from engine.table_format import TOMBSTONE
from engine.table_reader import TableReader
from tests.engine_helpers import BlockBuilder, patch_file, read_bytes, temp_dir

FS = OSFileSystem()
Entries = list[tuple[bytes, bytes | None]]


def entries_of(n: int) -> Entries:
    # Even numbers only, so b"k%06d" of an odd number falls between two keys.
    return [(b"k%06d" % (2 * i), None if i % 7 == 3 else b"v%d" % i * (1 + i % 3))
            for i in range(n)]


def build(entries: Entries, restart_interval: int = 16
          ) -> bytes:
    builder = BlockBuilder(restart_interval)
    for key, value in entries:
        builder.add(key, value)
    return bytes(builder.finish())


@pytest.mark.parametrize("n", [1, 15, 16, 17, 31, 32, 33, 1000])
def test_restart_search_finds_every_key(n: int) -> None:
    entries = entries_of(n)
    parsed = block.parse(build(entries), "b", 0)
    assert len(parsed.restarts) == (n + 15) // 16
    for key, value in entries:  # includes every restart key (entries[::16])
        assert parsed.find(key) == value
    for i in range(n):  # keys between two entries, and after the last one
        assert parsed.find(b"k%06d" % (2 * i + 1)) is block.ABSENT
    for key in (b"", b"a", b"k", b"k00000", b"j\xff\xff"):  # before the first
        assert parsed.find(key) is block.ABSENT
    for key in (b"k%06d\x00" % (2 * n - 2), b"z", b"\xff" * 20):  # after the last
        assert parsed.find(key) is block.ABSENT
    # Decoded whole, the parsed block gives back exactly the entries.
    keys, values = parsed.decode()
    assert list(zip(keys, values, strict=True)) == entries


def test_restart_keys_found_before_and_after_their_interval_is_decoded() -> None:
    entries = entries_of(40)
    parsed = block.parse(build(entries), "b", 0)
    for key, value in reversed(entries[::16]):
        assert parsed.find(key) == value
    for key, value in entries:
        assert parsed.find(key) == value


sorted_entries = st.dictionaries(st.binary(max_size=10), st.none() | st.binary(max_size=20),
                                 min_size=1, max_size=80).map(lambda d: sorted(d.items()))


@given(sorted_entries, st.integers(1, 20), st.lists(st.binary(max_size=10), max_size=30))
def test_restart_search_matches_model(entries: Entries, restart_interval: int,
                                      probes: list[bytes]) -> None:
    parsed = block.parse(build(entries, restart_interval), "b", 0)
    model = dict(entries)
    for key in [*model, *probes]:
        got = parsed.find(key)
        if key in model:
            assert got == model[key]
        else:
            assert got is block.ABSENT


def test_structural_damage_is_corruption_not_crash() -> None:
    entries = entries_of(60)
    data = build(entries, 4)
    model = dict(entries)
    rng = random.Random(11)
    for _ in range(500):
        damaged = bytearray(data)
        for _ in range(rng.randrange(1, 3)):
            damaged[rng.randrange(len(data))] = rng.randrange(256)
        try:
            parsed = block.parse(bytes(damaged), "b", 0)
            for key in [*model, b"", b"zz"]:
                got = parsed.find(key)
                assert got is block.ABSENT or got is None or isinstance(got, bytes)
        except CorruptionError:
            continue


def test_short_block_and_bad_restarts_are_corruption() -> None:
    good = build(entries_of(20))
    for bad in (b"", b"\x00\x00", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                good[:-4] + b"\x05\x00\x00\x00",      # restart count too large
                good[:-12] + b"\x10\x00\x00\x00" + good[-8:]):  # first restart not 0
        with pytest.raises(CorruptionError):
            block.parse(bad, "b", 0)


def write_table(path: str, entries: Entries) -> None:
    builder = TableBuilder(FS, os.path.dirname(path), os.path.basename(path))
    for key, value in entries:
        builder.add(key, value)
    builder.finish()


@pytest.mark.parametrize("cached", [False, True])
def test_damaged_block_is_detected_by_checksum_before_any_search(
        cached: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = entries_of(3000)
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        write_table(path, entries)
        cache = BlockCache(1 << 20) if cached else None
        reader = TableReader.open(FS, path, cache)
        try:
            assert reader.properties.data_block_count > 3
            handle = reader.handle(1)
            key = reader._index_keys[1]  # last key of block 1
            middle = handle.offset + handle.size // 2
            byte = read_bytes(path)[middle]
            patch_file(path, middle, bytes([byte ^ 0x40]))
            searched: list[bytes] = []
            real_parse = block.parse

            def spy(data: bytes, p: str, offset: int, size: int | None = None
                    ) -> block.SearchBlock:
                searched.append(bytes(data))
                return real_parse(data, p, offset, size)

            monkeypatch.setattr(block, "parse", spy)
            with pytest.raises(CorruptionError, match="checksum"):
                reader.get(key)
            assert searched == []  # the CRC failed before the block was parsed or searched
            assert cache is None or len(cache) == 0  # nothing damaged was cached
            assert reader.get(entries[0][0]) == entries[0][1] or entries[0][1] is None
            assert searched  # undamaged blocks still go through parse
        finally:
            reader.close()


def test_cached_block_is_read_and_checked_once() -> None:
    entries = entries_of(3000)
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        write_table(path, entries)
        cache = BlockCache(1 << 20)
        reader = TableReader.open(FS, path, cache)
        try:
            reads: list[int] = []
            real_pread = reader._file.pread

            def counting_pread(size: int, offset: int) -> bytes:
                reads.append(offset)
                return real_pread(size, offset)

            reader._file.pread = counting_pread  # type: ignore[method-assign]
            block_keys = [(k, v) for k, v in entries[:40]]  # all in the first data block
            assert reader._index_keys[0] >= block_keys[-1][0]
            for key, value in block_keys:
                assert reader.get(key) == (TOMBSTONE if value is None else value)
            assert reads == [0]  # one read of block 0; every later get is served from cache
            assert (cache.hits, cache.misses) == (len(block_keys) - 1, 1)
            # The cached block is its bytes as read (CRC trailer included), not a copy.
            (parsed,) = (entry[0] for entry in cache._blocks.values())
            assert len(parsed.data) == reader.handle(0).size + 4
            keys, _ = parsed.decode()
            assert keys[: len(block_keys)] == [k for k, _ in block_keys]
        finally:
            reader.close()


@pytest.mark.parametrize("restart_interval", [1, 4, 16])
def test_lying_restart_array_is_corruption_or_absent_never_a_crash(restart_interval: int
                                                                   ) -> None:
    """Restart offsets that point past the entries or into the middle of one (a block whose
    CRC matched but whose writer was wrong) fail with CorruptionError or answer ABSENT."""
    entries = entries_of(40)
    data = bytearray(build(entries, restart_interval))
    (count,) = struct.unpack_from("<I", data, len(data) - 4)
    first = len(data) - 4 - 4 * count
    rng = random.Random(restart_interval)
    for _ in range(300):
        damaged = bytearray(data)
        slot = first + 4 * rng.randrange(1, count) if count > 1 else first
        struct.pack_into("<I", damaged, slot, rng.randrange(len(data) + 64))
        try:
            parsed = block.parse(bytes(damaged), "b", 0)
            for key, _ in entries:
                got = parsed.find(key)
                assert got is block.ABSENT or got is None or isinstance(got, bytes)
        except CorruptionError as exc:
            assert "b" in str(exc)
