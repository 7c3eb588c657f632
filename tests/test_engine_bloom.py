"""bloom: no false negatives, measured false-positive rate, checksummed serialization."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import bloom
from engine.errors import CorruptionError


def build(keys: list[bytes], bits_per_key: int = 10) -> bloom.BloomFilter:
    builder = bloom.BloomFilterBuilder(bits_per_key)
    builder.add_all(keys)
    return builder.finish()


def expected_fp_rate(bits_per_key: int) -> float:
    k = bloom.probe_count(bits_per_key)
    return (1 - math.exp(-k / bits_per_key)) ** k


@given(st.lists(st.binary(max_size=20), max_size=200), st.integers(1, 20))
def test_no_false_negatives_after_round_trip(keys: list[bytes], bits_per_key: int) -> None:
    f = bloom.decode(build(keys, bits_per_key).encode(), "f")
    assert all(f.may_contain(key) for key in keys)


def test_false_positive_rate_on_100k_absent_keys() -> None:
    present = [b"key:%d" % i for i in range(20_000)]
    absent = [b"absent:%d" % i for i in range(100_000)]
    for bits_per_key in (5, 10, 16):
        f = build(present, bits_per_key)
        rate = sum(map(f.may_contain, absent)) / len(absent)
        expected = expected_fp_rate(bits_per_key)
        # The theory is ~0.8% at 10 bits; allow sampling noise and hashing imperfection.
        assert expected / 2 <= rate <= expected * 1.5, (bits_per_key, rate, expected)
    assert sum(map(build(present, 10).may_contain, absent)) / len(absent) < 0.012


def test_single_key_filter_is_still_selective() -> None:
    f = build([b"only"])
    assert f.num_bits >= 64
    assert f.may_contain(b"only")
    assert sum(f.may_contain(b"x%d" % i) for i in range(1000)) < 100


def test_checksum_mismatch_on_any_flipped_byte() -> None:
    data = build([b"a", b"b", b"c"]).encode()
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        with pytest.raises(CorruptionError, match=r"file\.sst.*bloom"):
            bloom.decode(bytes(damaged), "file.sst")


def test_truncated_filter_is_corruption() -> None:
    data = build([b"a"]).encode()
    for size in (0, 5, len(data) - 1):
        with pytest.raises(CorruptionError):
            bloom.decode(data[:size], "f")


def test_bits_per_key_out_of_range() -> None:
    for bad in (0, bloom.BITS_PER_KEY_MAX + 1):
        with pytest.raises(ValueError):
            bloom.BloomFilterBuilder(bad)
