"""Bloom filter: "may this table hold key?" in one hash call and k bit probes.

Invariants:
1. No false negatives: for every key added, may_contain(key) is True, before and after a
   round trip through encode()/decode().
2. One mmh3.hash64 call per key gives (h1, h2); probe i is (h1 + i * h2) mod num_bits (the
   Kirsch-Mitzenmacher double hashing). h2 is forced odd so the probes never collapse onto
   one bit, whatever num_bits is.
3. The false-positive rate is about (1 - e^(-k/b))^k for b bits per key with k = round(b ln 2):
   ~0.8% at the default 10 bits per key; a test measures it on 100k absent keys.
4. encode()/decode() are inverses; decode() checks length and CRC before anything else and
   raises CorruptionError naming the file, never IndexError or struct.error.
5. The serialized form is self-checking (its own CRC), independent of the block that holds it.
6. The builder sets exactly the bits may_contain_hash() probes (invariant 2, docs/formats/
   sstable.md): it computes them by numpy uint64 arithmetic, which wraps mod 2^64 as the
   format's (h1 + i*h2) does, over the keys' 16-byte mmh3 x64_128 digests read as
   little-endian (h1, h2) pairs, which are mmh3.hash64(key, signed=False). A test checks the
   bytes against a plain per-key reference.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Iterable
from functools import partial

import mmh3
import numpy as np

from engine.errors import CorruptionError

BITS_PER_KEY_DEFAULT = 10
BITS_PER_KEY_MAX = 64  # beyond this the filter costs more than the block reads it saves
PROBES_MAX = 30
FORMAT_VERSION = 1  # On disk: bump when the layout changes.
# version u8, probes u8, 2 reserved, num_bits u64; then bits; then crc32 of all before it.
_HEADER = struct.Struct("<BB2xQ")
_CRC = struct.Struct("<I")
_MASK64 = (1 << 64) - 1

_hash64 = mmh3.hash64
# key -> the 16 bytes whose little-endian u64 halves are _hash64(key, signed=False).
_digest: Callable[[bytes], bytes] = mmh3.mmh3_x64_128_digest
_DIGEST_BYTES = 16
# Keys whose probes finish() computes at a time: ~10 ms of numpy with the GIL held; between
# slices it calls between(), with which an in-process flush lets the loop thread run (one
# slice of 256k keys held the GIL ~100 ms, the longest stall writers saw).
_FINISH_SLICE_KEYS = 1 << 15


# key_hash(key) -> (h1, h2), as every filter probes it (invariant 2). A partial, not a def:
# the read path calls it once per get and a Python frame would cost more than the hash.
key_hash: Callable[[bytes], tuple[int, int]] = partial(mmh3.hash64, signed=False)


def probe_count(bits_per_key: int) -> int:
    return max(1, min(PROBES_MAX, round(bits_per_key * math.log(2))))


class BloomFilter:
    """An immutable filter; build one with BloomFilterBuilder or decode()."""

    __slots__ = ("_bits", "_num_bits", "_probes")

    def __init__(self, bits: bytes, num_bits: int, probes: int) -> None:
        assert num_bits == len(bits) * 8 and num_bits > 0, (num_bits, len(bits))
        assert 1 <= probes <= PROBES_MAX, probes
        self._bits = bits
        self._num_bits = num_bits
        self._probes = probes

    @property
    def num_bits(self) -> int:
        return self._num_bits

    def may_contain(self, key: bytes) -> bool:
        """False: key was certainly never added. True: it may have been."""
        h1, h2 = _hash64(key, signed=False)
        return self.may_contain_hash(h1, h2)

    def may_contain_hash(self, h1: int, h2: int) -> bool:
        """may_contain() of the key whose key_hash() is (h1, h2): hash once, probe many."""
        h2 |= 1
        m = self._num_bits
        bits = self._bits
        for _ in range(self._probes):
            pos = h1 % m
            if not bits[pos >> 3] & (1 << (pos & 7)):
                return False
            h1 = (h1 + h2) & _MASK64
        return True

    def encode(self) -> bytes:
        body = _HEADER.pack(FORMAT_VERSION, self._probes, self._num_bits) + self._bits
        return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes, path: str, offset: int = 0) -> BloomFilter:
    """Inverse of BloomFilter.encode(); raises CorruptionError if data is damaged."""
    if len(data) < _HEADER.size + 1 + _CRC.size:
        raise CorruptionError(path, f"bloom filter of {len(data)} bytes is too short", offset)
    body = memoryview(data)[: -_CRC.size]
    (stored,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(body) != stored:
        raise CorruptionError(path, "bloom filter checksum mismatch", offset)
    version, probes, num_bits = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise CorruptionError(path, f"bloom filter version {version}", offset)
    bits = bytes(body[_HEADER.size :])
    if num_bits != len(bits) * 8 or not 1 <= probes <= PROBES_MAX:
        raise CorruptionError(path, f"bloom filter header: {num_bits} bits, {probes} probes "
                              f"for {len(bits)} bytes", offset)
    return BloomFilter(bits, num_bits, probes)


class BloomFilterBuilder:
    """Collects key digests (16 bytes per key) and sizes the filter once the count is known.

    Keeping digests rather than keys bounds the builder's memory however large keys are, and
    keeps the per-key work of a table build in C: one hash call per key while adding, numpy
    passes over all of them in finish() (a flush builds every filter on the thread that
    shares the GIL with the server loop: db.py invariant 9).
    """

    __slots__ = ("_bits_per_key", "_digests")

    def __init__(self, bits_per_key: int = BITS_PER_KEY_DEFAULT) -> None:
        if not 1 <= bits_per_key <= BITS_PER_KEY_MAX:
            raise ValueError(f"bits_per_key out of range (1..{BITS_PER_KEY_MAX}): "
                             f"{bits_per_key}")
        self._bits_per_key = bits_per_key
        self._digests = bytearray()

    def add(self, key: bytes) -> None:
        self._digests += _digest(key)

    def add_all(self, keys: Iterable[bytes]) -> None:
        """add() of each key, by C-level passes (no Python code per key)."""
        self._digests += b"".join(map(_digest, keys))

    def finish(self, between: Callable[[], object] | None = None) -> BloomFilter:
        count = len(self._digests) // _DIGEST_BYTES
        # At least 64 bits, so a table of one key still has a usefully small FP rate.
        num_bits = max(64, count * self._bits_per_key)
        num_bits = (num_bits + 7) // 8 * 8
        probes = probe_count(self._bits_per_key)
        hashes = np.frombuffer(self._digests, dtype="<u8").reshape(count, 2)
        modulus = np.uint64(num_bits)
        # One byte per bit, packed at the end: a scattered store of True per probe is cheaper
        # than read-modify-write of bit masks (np.bitwise_or.at), measured ~40% faster. It
        # costs bits_per_key bytes per key while finish() runs, less than the digests held.
        is_set = np.zeros(num_bits, dtype=np.bool_)
        # Keys in slices, so the probe arithmetic's temporaries stay small (~8 MiB) however
        # many keys a compaction output holds.
        for start in range(0, count, _FINISH_SLICE_KEYS):
            part = hashes[start : start + _FINISH_SLICE_KEYS]
            position = part[:, 0].astype(np.uint64)  # a copy, advanced in place below
            step = part[:, 1] | np.uint64(1)  # odd, as may_contain_hash()
            for _ in range(probes):
                is_set[position % modulus] = True
                position += step  # uint64: wraps mod 2^64, as the format says
            if between is not None:
                between()
        bits = np.packbits(is_set, bitorder="little").tobytes()
        return BloomFilter(bits, num_bits, probes)
