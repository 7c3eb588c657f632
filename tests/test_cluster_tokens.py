"""node.tokens: drawn once from the injected Random, kept across restarts, decoded as a trust
boundary, replaced atomically."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import pytest

from cluster import tokens
from cluster.errors import CorruptionError
from engine.fs import OSFileSystem

NODE = "00112233445566778899aabbccddeeff"


def test_generate_is_seeded_distinct_sorted_and_avoids_taken() -> None:
    first = tokens.generate(random.Random(5), 64)
    assert first == tokens.generate(random.Random(5), 64)
    assert len(set(first)) == 64 and list(first) == sorted(first)
    avoided = tokens.generate(random.Random(5), 64, taken=set(first[:10]))
    assert not set(avoided) & set(first[:10]) and set(first[10:]) <= set(avoided)


def test_round_trip_and_layout() -> None:
    toks = (0, 1, 2**63, 2**64 - 1)
    data = tokens.encode(NODE, toks)
    assert data[:8] == b"RKVTOKN\n" and data[8] == tokens.FORMAT_VERSION
    assert data[9] == len(NODE) and int.from_bytes(data[10:14], "big") == 4
    assert len(data) == 14 + len(NODE) + 4 * 8 + 4
    assert data[14 + len(NODE) + 8 * 3 : -4] == b"\xff" * 8  # big-endian uint64
    assert tokens.decode(data) == (NODE, toks)


def test_every_damage_is_rejected() -> None:
    data = tokens.encode(NODE, (5, 6, 7))
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        with pytest.raises(CorruptionError):
            tokens.decode(bytes(damaged))
    for cut in range(len(data)):
        with pytest.raises(CorruptionError):
            tokens.decode(data[:cut])
    with pytest.raises(CorruptionError):
        tokens.decode(data + b"\x00")


def test_unordered_tokens_with_a_valid_checksum_are_rejected() -> None:
    good = tokens.encode(NODE, (5, 6))
    body = bytearray(good[:-4])
    body[-16:] = (6).to_bytes(8, "big") + (5).to_bytes(8, "big")
    forged = bytes(body) + zlib.crc32(body).to_bytes(4, "big")
    with pytest.raises(CorruptionError, match="ascending"):
        tokens.decode(forged)


def test_start_draws_once_then_keeps(tmp_path: Path) -> None:
    fs, directory = OSFileSystem(), str(tmp_path)
    first, note = tokens.start(fs, directory, node_id=NODE, num_tokens=8, rng=random.Random(1))
    assert note == "new tokens" and len(first) == 8
    again, note = tokens.start(fs, directory, node_id=NODE, num_tokens=8, rng=random.Random(2))
    assert (again, note) == (first, "")
    changed, note = tokens.start(fs, directory, node_id=NODE, num_tokens=16,
                                 rng=random.Random(3))
    assert changed == first and "keeps the 8 tokens" in note
    assert sorted(os.listdir(directory)) == ["node.tokens"]  # no temp file left behind


def test_start_refuses_another_nodes_file(tmp_path: Path) -> None:
    fs, directory = OSFileSystem(), str(tmp_path)
    tokens.start(fs, directory, node_id=NODE, num_tokens=4, rng=random.Random(1))
    with pytest.raises(CorruptionError, match="belongs to node"):
        tokens.start(fs, directory, node_id="ff" * 16, num_tokens=4, rng=random.Random(1))


class FailingRename(OSFileSystem):
    def rename(self, src: str, dst: str) -> None:
        raise OSError("injected: crash before rename")


def test_a_failed_replace_leaves_the_old_file(tmp_path: Path) -> None:
    directory = str(tmp_path)
    tokens.write(OSFileSystem(), directory, NODE, (1, 2, 3))
    with pytest.raises(OSError, match="injected"):
        tokens.write(FailingRename(), directory, NODE, (4, 5, 6))
    assert tokens.read(OSFileSystem(), directory) == (NODE, (1, 2, 3))
    tokens.write(OSFileSystem(), directory, NODE, (7,))  # the stray .tmp is truncated
    assert tokens.read(OSFileSystem(), directory) == (NODE, (7,))
