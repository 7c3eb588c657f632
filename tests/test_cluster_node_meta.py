"""node.meta: the node's identity, written atomically, decoded as a trust boundary."""

from __future__ import annotations

import os
import random
import tempfile

import pytest

from cluster import node_meta
from cluster.errors import CorruptionError
from cluster.node_meta import NodeMeta
from engine.fs import OSFileSystem

META = NodeMeta("00112233445566778899aabbccddeeff", b"\x01" * 8, True, 10, 20)


def test_round_trip_and_layout() -> None:
    data = node_meta.encode(META)
    assert data[:8] == b"RKVMETA\n" and data[8] == node_meta.FORMAT_VERSION
    assert int.from_bytes(data[9:13], "big") == len(data) - 17
    assert node_meta.decode(data) == META


def test_every_damage_is_rejected() -> None:
    data = node_meta.encode(META)
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        with pytest.raises(CorruptionError):
            node_meta.decode(bytes(damaged))
    for cut in range(len(data)):
        with pytest.raises(CorruptionError):
            node_meta.decode(data[:cut])
    with pytest.raises(CorruptionError):
        node_meta.decode(data + b"\x00")


def test_start_keeps_or_renews_identity() -> None:
    fs = OSFileSystem()
    with tempfile.TemporaryDirectory() as directory:
        rng = random.Random(1)
        first, reason = node_meta.start(fs, directory, data_intact=False, rng=rng, now_ms=5)
        assert reason == "new node" and not first.clean
        assert node_meta.read(fs, directory) == first
        # Running (clean=False on disk): a restart without mark_clean gets a new actor.
        second, reason = node_meta.start(fs, directory, data_intact=True, rng=rng, now_ms=6)
        assert reason == "previous shutdown was not clean"
        assert second.node_id == first.node_id and second.actor != first.actor
        clean = node_meta.mark_clean(fs, directory, second)
        assert node_meta.read(fs, directory) == clean and clean.clean
        third, reason = node_meta.start(fs, directory, data_intact=True, rng=rng, now_ms=7)
        assert reason == "" and third.actor == second.actor and not third.clean
        node_meta.mark_clean(fs, directory, third)
        fourth, reason = node_meta.start(fs, directory, data_intact=False, rng=rng, now_ms=8)
        assert reason == "data directory new or damaged"
        assert fourth.node_id == first.node_id and fourth.actor != third.actor
        assert fourth.actor_created_ms == 8 and fourth.created_ms == 5
        assert sorted(os.listdir(directory)) == ["node.meta"]  # no temp file left behind


def test_damaged_file_refuses_to_start() -> None:
    fs = OSFileSystem()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, node_meta.META_NAME)
        with open(path, "wb") as file:
            file.write(b"RKVMETA\n\x01garbage")
        with pytest.raises(CorruptionError):
            node_meta.start(fs, directory, data_intact=True, rng=random.Random(1), now_ms=1)
