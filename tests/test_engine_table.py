"""block, table_builder, table_reader, block_cache: round trips, huge values, corruption."""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import block, table_format
from engine.block_cache import BlockCache
from engine.errors import CorruptionError, StorageError
from engine.fs import OSFileSystem
from engine.table_builder import TableBuilder
from engine.table_format import TOMBSTONE
from engine.table_reader import TableReader
from tests.engine_helpers import BlockBuilder, FaultyFS, patch_file, read_bytes, temp_dir

FS = OSFileSystem()
Entries = list[tuple[bytes, bytes | None]]


def write_table(path: str, entries: Iterable[tuple[bytes, bytes | None]], **kw: int) -> int:
    builder = TableBuilder(FS, os.path.dirname(path), os.path.basename(path), **kw)
    for key, value in entries:
        builder.add(key, value)
    return builder.finish().file_size


def sample_entries(n: int = 2000) -> Entries:
    return [(b"key:%06d" % i, None if i % 5 == 0 else b"value-%d" % i * (1 + i % 7))
            for i in range(n)]


sorted_entries = st.dictionaries(st.binary(max_size=12), st.none() | st.binary(max_size=40),
                                 min_size=1, max_size=60).map(lambda d: sorted(d.items()))


@given(sorted_entries, st.integers(1, 4))
def test_block_round_trip(entries: Entries, restart_interval: int) -> None:
    builder = BlockBuilder(restart_interval)
    for key, value in entries:
        builder.add(key, value)
    keys, values = block.decode(bytes(builder.finish()), "b", 0)
    assert list(zip(keys, values, strict=True)) == entries


@given(sorted_entries)
def test_encode_entries_is_block_builder_with_a_restart_at_every_entry(entries: Entries
                                                                       ) -> None:
    builder = BlockBuilder(1)
    for key, value in entries:
        builder.add(key, value)
    keys = [k for k, _ in entries]
    values = [v for _, v in entries]
    encoded = block.encode_entries(keys, values)
    assert encoded == bytes(builder.finish())
    # decode() takes its bulk path for bytes and its entry-by-entry path for a memoryview.
    assert block.decode(encoded, "b", 0) == (keys, values)
    assert block.decode(memoryview(encoded), "b", 0) == (keys, values)
    assert block.decode(encoded + b"trailer", "b", 0, len(encoded)) == (keys, values)


def test_bulk_decode_damage_is_corruption_or_the_general_path_never_a_crash() -> None:
    entries = [(e[0], e[1] or b"") for e in sample_entries(40)]  # no tombstones: bulk path
    data = block.encode_entries([k for k, _ in entries], [v for _, v in entries])
    rng = random.Random(5)
    for _ in range(500):
        damaged = bytearray(data)
        for _ in range(rng.randrange(1, 3)):
            damaged[rng.randrange(len(data))] = rng.randrange(256)
        try:
            keys, values = block.decode(bytes(damaged), "b", 0)
        except CorruptionError:
            continue
        assert keys == sorted(set(keys)) and len(keys) == len(values)
        # Whatever the bulk path accepts, the general path decodes the same way.
        assert block.decode(memoryview(bytes(damaged)), "b", 0) == (keys, values)


def test_block_structural_damage_is_corruption_not_crash() -> None:
    builder = BlockBuilder(2)
    for key, value in sample_entries(20):
        builder.add(key, value)
    data = bytes(builder.finish())
    rng = random.Random(7)
    for _ in range(300):
        damaged = bytearray(data)
        damaged[rng.randrange(len(data))] = rng.randrange(256)
        try:
            keys, _ = block.decode(bytes(damaged), "b", 0)
        except CorruptionError:
            continue
        assert keys == sorted(set(keys))  # whatever decodes is still a valid block


@settings(max_examples=30, deadline=None)
@given(sorted_entries, st.sampled_from([64, 128, 4096]))
def test_table_matches_its_entries(entries: Entries, block_size: int) -> None:
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        write_table(path, entries, block_size_bytes=block_size)
        reader = TableReader.open(FS, path, BlockCache(1 << 20))
        model = dict(entries)
        assert list(reader.scan()) == entries
        for key in [*model, b"\xff" * 13, b"", b"key0"]:
            got = reader.get(key)
            if key not in model:
                assert got is None
            else:
                assert got == (TOMBSTONE if model[key] is None else model[key])
        keys = [k for k, _ in entries]
        lo, hi = keys[0], keys[-1] + b"\x00"
        assert list(reader.scan(lo, hi)) == entries
        mid = keys[len(keys) // 2]
        assert list(reader.scan(mid)) == [e for e in entries if e[0] >= mid]
        assert list(reader.scan(b"", mid)) == [e for e in entries if e[0] < mid]
        reader.close()


@settings(max_examples=30, deadline=None)
@given(sorted_entries, st.sampled_from([64, 128, 4096]), st.integers(1, 9))
def test_add_many_writes_the_same_table_as_add(entries: Entries, block_size: int,
                                               batch: int) -> None:
    with temp_dir() as d:
        one = write_table(os.path.join(d, "one.sst"), entries, block_size_bytes=block_size)
        builder = TableBuilder(FS, d, "many.sst", block_size_bytes=block_size)
        for start in range(0, len(entries), batch):
            chunk = entries[start : start + batch]
            builder.add_many([k for k, _ in chunk], [v for _, v in chunk])
        assert builder.finish().file_size == one
        assert read_bytes(os.path.join(d, "many.sst")) == read_bytes(os.path.join(d, "one.sst"))


def golden_entries() -> Entries:
    return sorted(dict((b"key:%05d" % (i * 37 % 1000),
                        None if i % 11 == 0 else b"v%d" % i * (i % 7))
                       for i in range(600)).items())


def write_golden(d: str) -> bytes:
    entries = golden_entries()
    builder = TableBuilder(FS, d, "g.sst", block_size_bytes=256)
    for start in range(0, len(entries), 50):
        chunk = entries[start : start + 50]
        builder.add_many([k for k, _ in chunk], [v for _, v in chunk])
    return read_bytes(builder.finish().path)


def test_table_bytes_are_pinned() -> None:
    # Data blocks and bloom filter: the bytes the builder of 9474bb7 (one encode per block,
    # a per-probe bloom loop) wrote for these entries, so cutting blocks out of a batch
    # encoded once changed none of them. The index has had a restart at every entry since.
    with temp_dir() as d:
        data = write_golden(d)
    footer = table_format.decode_footer(data[-table_format.FOOTER_SIZE :], "g", len(data))
    assert (footer.bloom.offset, zlib.crc32(data[: footer.bloom.offset])) == (21867,
                                                                             0x35D33123)
    assert (len(data), zlib.crc32(data)) == (25711, 0x8406F80A)


def test_table_with_an_index_of_restart_interval_16_still_reads() -> None:
    # What tables written before 2026-11 hold: the same table with its index re-encoded in
    # the general layout (prefix-compressed, a restart every 16 entries).
    with temp_dir() as d:
        data = write_golden(d)
        footer = table_format.decode_footer(data[-table_format.FOOTER_SIZE :], "g", len(data))
        index = footer.index
        keys, handles = block.decode(data[index.offset : index.offset + index.size], "g", 0)
        old_index = BlockBuilder(16)
        for key, handle in zip(keys, handles, strict=True):
            old_index.add(key, handle)
        old_index_bytes = old_index.finish()
        props = data[footer.properties.offset : footer.properties.offset
                     + footer.properties.size]
        head = data[: index.offset] + table_format.seal(old_index_bytes)
        new_index = table_format.BlockHandle(index.offset, len(old_index_bytes))
        new_props = table_format.BlockHandle(len(head), len(props))
        old = (head + table_format.seal(props)
               + table_format.encode_footer(table_format.Footer(footer.bloom, new_index,
                                                                new_props)))
        assert len(old_index_bytes) < index.size  # the prefix compression did something
        path = os.path.join(d, "old.sst")
        with open(path, "wb") as f:
            f.write(old)
        reader = TableReader.open(FS, path, BlockCache(1 << 20))
        try:
            assert list(reader.scan()) == golden_entries()
            for key, value in golden_entries():
                assert reader.get(key) == (TOMBSTONE if value is None else value)
        finally:
            reader.close()


def test_blocks_are_cut_after_the_entry_that_reaches_the_target() -> None:
    entries = [(b"k%03d" % i, b"v" * 50) for i in range(100)]  # 70 bytes an entry in a block
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        write_table(path, entries, block_size_bytes=256)
        reader = TableReader.open(FS, path)
        try:
            # 4 + 70 * n >= 256 first at n = 4: every block but the last holds 4 entries.
            assert reader.properties.data_block_count == 25
            assert all(reader.handle(i).size == 4 + 70 * 4 for i in range(reader.block_count))
            assert list(reader.scan()) == entries
        finally:
            reader.close()


def test_get_reads_one_block_and_bloom_skips_absent_keys() -> None:
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        write_table(path, sample_entries())
        cache = BlockCache(1 << 20)
        reader = TableReader.open(FS, path, cache)
        assert reader.properties.data_block_count > 10
        assert reader.get(b"key:000001") == b"value-1" * 2
        assert (cache.hits, cache.misses) == (0, 1)
        assert reader.get(b"key:000002") == b"value-2" * 3  # same block: a hit
        assert (cache.hits, cache.misses) == (1, 1)
        assert reader.get(b"key:000000") is TOMBSTONE
        absent = [b"key:%06dx" % i for i in range(1000)]
        assert all(reader.get(key) is None for key in absent)
        assert cache.misses < 1 + 30  # ~1% bloom false positives reach a block
        assert reader.get(b"a") is None and reader.get(b"z") is None  # outside min/max


def test_twenty_megabyte_value_is_one_block() -> None:
    big = os.urandom(20 << 20)
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        write_table(path, [(b"a", b"small"), (b"big", big), (b"c", None)])
        reader = TableReader.open(FS, path, BlockCache(1 << 20))
        assert reader.get(b"big") == big
        assert reader.get(b"a") == b"small" and reader.get(b"c") is TOMBSTONE
        assert [k for k, _ in reader.scan()] == [b"a", b"big", b"c"]
        assert reader.properties.data_block_count == 2  # [a, big] cut after big, then [c]
        reader.close()


def test_keys_must_strictly_increase() -> None:
    with temp_dir() as d:
        builder = TableBuilder(FS, d, "t.sst")
        builder.add(b"b", b"1")
        for bad in (b"b", b"a"):
            with pytest.raises(AssertionError):
                builder.add(bad, b"2")
        builder.abandon()
        assert os.listdir(d) == []


def test_written_under_temp_name_then_renamed_and_synced() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        builder = TableBuilder(fs, d, "t.sst")
        builder.add(b"k", b"v")
        assert os.listdir(d) == ["t.sst.tmp"]
        builder.finish()
        assert os.listdir(d) == ["t.sst"]
        assert fs.syncs >= 1


def test_failed_fsync_leaves_no_table() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        fs.fail_sync = True
        builder = TableBuilder(fs, d, "t.sst")
        builder.add(b"k", b"v")
        with pytest.raises(StorageError, match=r"t\.sst"):
            builder.finish()
        assert os.listdir(d) == []


def test_disk_full_leaves_no_table() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        fs.space_bytes = 10_000
        builder = TableBuilder(fs, d, "t.sst")
        with pytest.raises(StorageError, match=r"t\.sst"):
            for key, value in sample_entries(5000):
                builder.add(key, value)
            builder.finish()
        assert os.listdir(d) == []


def region_offsets(path: str) -> dict[str, int]:
    """One byte offset inside each region of the table, from its footer."""
    data = read_bytes(path)
    footer = table_format.decode_footer(data[-table_format.FOOTER_SIZE :], path, len(data))
    return {
        "data": 10,
        "bloom": footer.bloom.offset + 20,
        "index": footer.index.offset + 3,
        "properties": footer.properties.offset + 1,
        "footer": len(data) - table_format.FOOTER_SIZE + 2,
        "footer crc": len(data) - 10,
        "magic": len(data) - 1,
        "data trailer": footer.bloom.offset - 1,
    }


def test_flipped_byte_in_each_region_raises_corruption_naming_the_file() -> None:
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        write_table(path, sample_entries())
        original = read_bytes(path)
        for region, offset in region_offsets(path).items():
            patch_file(path, offset, bytes([original[offset] ^ 0x01]))
            with pytest.raises(CorruptionError) as info:
                reader = TableReader.open(FS, path)
                list(reader.scan())  # data damage surfaces when the block is read
            assert info.value.path == path and path in str(info.value), region
            patch_file(path, offset, original[offset : offset + 1])
        reader = TableReader.open(FS, path)
        assert len(list(reader.scan())) == 2000


def test_flipped_data_byte_fails_get_of_that_block_only() -> None:
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        write_table(path, sample_entries())
        reader = TableReader.open(FS, path, BlockCache(1 << 20))
        patch_file(path, 10, b"\x00")
        with pytest.raises(CorruptionError, match="data block checksum"):
            reader.get(b"key:000001")
        assert reader.get(b"key:001999") == b"value-1999" * 5  # other blocks still serve


def test_check_sealed_agrees_with_unseal_on_every_flipped_bit() -> None:
    sealed = table_format.seal(bytes(range(256)) * 3)
    table_format.check_sealed(sealed, "t.sst", 0, "data")
    assert bytes(table_format.unseal(sealed, "t.sst", 0, "data")) == sealed[:-4]
    for i in range(len(sealed)):
        for bit in (0x01, 0x80):
            bad = bytearray(sealed)
            bad[i] ^= bit
            with pytest.raises(CorruptionError, match="data block checksum") as info:
                table_format.check_sealed(bytes(bad), "t.sst", 7, "data")
            assert (info.value.path, info.value.offset) == ("t.sst", 7)
            with pytest.raises(CorruptionError):
                table_format.unseal(bytes(bad), "t.sst", 7, "data")
    with pytest.raises(CorruptionError, match="truncated"):
        table_format.check_sealed(b"abc", "t.sst", 0, "data")


@pytest.mark.parametrize("cached", [False, True])
def test_any_flipped_byte_of_a_block_fails_get_naming_the_file(cached: bool) -> None:
    """Every byte of data block 0, its CRC trailer included: get() reads, checks, fails."""
    entries = sample_entries()
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        write_table(path, entries)
        original = read_bytes(path)
        probe = TableReader.open(FS, path)
        handle, last_key = probe.handle(0), probe._index_keys[0]
        probe.close()
        key = next(k for k, v in entries if v is not None and k <= last_key)
        for offset in range(0, handle.size + 4, 7):
            patch_file(path, offset, bytes([original[offset] ^ 0x20]))
            cache = BlockCache(1 << 20) if cached else None
            reader = TableReader.open(FS, path, cache)
            try:
                with pytest.raises(CorruptionError, match="checksum") as info:
                    reader.get(key)
                assert info.value.path == path and path in str(info.value)
                assert cache is None or len(cache) == 0
            finally:
                reader.close()
            patch_file(path, offset, original[offset : offset + 1])


def test_unknown_version_is_not_corruption() -> None:
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        size = write_table(path, [(b"k", b"v")])
        footer = bytearray(read_bytes(path)[-table_format.FOOTER_SIZE :])
        footer[36] = 9
        footer[40:44] = zlib.crc32(bytes(footer[:40])).to_bytes(4, "little")
        patch_file(path, size - table_format.FOOTER_SIZE, bytes(footer))
        with pytest.raises(StorageError, match="version 9") as info:
            TableReader.open(FS, path)
        assert not isinstance(info.value, CorruptionError)


def test_truncated_table_is_corruption() -> None:
    with temp_dir() as d:
        path = os.path.join(d, "t.sst")
        size = write_table(path, sample_entries(100))
        for cut in (0, 10, size - 1):
            os.truncate(path, cut)
            with pytest.raises(CorruptionError):
                TableReader.open(FS, path)


def test_block_cache_lru_within_byte_budget() -> None:
    cache = BlockCache(300)
    blk: block.DecodedBlock = ([b"k"], [b"v"])
    for i in range(5):
        cache.put((1, i), blk, 100)
        assert cache.charged_bytes <= 300
    assert cache.get((1, 0)) is None and cache.get((1, 1)) is None
    assert cache.get((1, 2)) is blk  # now most recent
    cache.put((1, 5), blk, 100)
    assert cache.get((1, 3)) is None and cache.get((1, 2)) is blk
    cache.put((1, 6), blk, 301)  # larger than the whole budget: not cached
    assert cache.get((1, 6)) is None and len(cache) == 3
    assert (cache.hits, cache.misses) == (2, 4)


def test_a_table_that_cannot_be_created_is_a_storage_error() -> None:
    with temp_dir() as directory:
        missing = os.path.join(directory, "no", "such", "dir")
        with pytest.raises(StorageError, match="cannot write table"):
            TableBuilder(OSFileSystem(), missing, "table-000000000001.sst")
