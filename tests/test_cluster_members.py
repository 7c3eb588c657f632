"""cluster/members.py: member records, the membership view, the cluster.members file."""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import pytest

from cluster import members
from cluster.errors import CorruptionError
from cluster.members import Member, Membership
from engine.fs import OSFileSystem


def member(node_id: str, port: int, generation: int = 1, tokens: tuple[int, ...] = (),
           host: str = "127.0.0.1") -> Member:
    rng = random.Random(node_id)
    toks = tokens or tuple(sorted({rng.getrandbits(64) for _ in range(8)}))
    return Member(node_id, host, port, host, port - 10000, "dc1", "rack1", toks, generation)


def test_wire_round_trip() -> None:
    m = member("a" * 32, 17001, 5, (0, 7, 2**64 - 1))
    assert Member.from_wire(m.to_wire()) == m
    assert Member.from_wire(tuple(m.to_wire())) == m  # the wire decodes arrays as tuples


@pytest.mark.parametrize("index, bad, reason", [
    (7, b"\x00" * 7, "8-byte"),
    (7, b"", "8-byte"),
    (7, (2).to_bytes(8, "big") + (1).to_bytes(8, "big"), "ascending"),
    (7, (1).to_bytes(8, "big") * 2, "ascending"),
    (2, 0, "port"),
    (2, 70000, "port"),
    (4, True, "port"),
    (1, "", "host"),
    (5, "", "datacenter"),
    (8, -1, "generation"),
])
def test_from_wire_refuses_malformed(index: int, bad: object, reason: str) -> None:
    fields = member("n1", 17001).to_wire()
    fields[index] = bad
    with pytest.raises(ValueError, match=reason):
        Member.from_wire(fields)


def test_from_wire_refuses_wrong_length() -> None:
    with pytest.raises(ValueError):
        Member.from_wire(member("n1", 17001).to_wire()[:-1])


def test_learn_keeps_higher_generation_and_own_record() -> None:
    me = member("me", 17001)
    view = Membership(me, [("127.0.0.1", 17002)])
    assert not view.complete
    assert view.missing_addresses() == [("127.0.0.1", 17002)]
    old = member("b", 17002, generation=1)
    assert view.learn(old)
    assert view.complete
    assert not view.learn(old)  # idempotent
    newer = member("b", 17002, generation=2, tokens=(1, 2, 3))
    assert view.learn(newer)
    assert not view.learn(old)  # an older record never replaces a newer one
    assert view.members["b"] == newer
    # Our own record comes from our own state only (invariant 1).
    assert not view.learn(member("me", 17001, generation=99, tokens=(5,)))
    assert view.members["me"] == me


def test_learning_a_new_node_at_an_address_replaces_the_old_one() -> None:
    view = Membership(member("me", 17001), [("127.0.0.1", 17002)])
    view.learn(member("old", 17002))
    view.learn(member("new", 17002))
    assert set(view.members) == {"me", "new"}


def test_ring_is_rebuilt_when_the_view_changes() -> None:
    view = Membership(member("me", 17001), [("127.0.0.1", 17002)])
    assert view.ring().node_ids() == ["me"]
    view.learn(member("b", 17002))
    assert view.ring().node_ids() == ["b", "me"]


def test_own_address_in_peers_is_ignored() -> None:
    view = Membership(member("me", 17001), [("127.0.0.1", 17001), ("127.0.0.1", 17002)])
    assert view.peer_addresses == (("127.0.0.1", 17002),)


def test_file_round_trip(tmp_path: Path) -> None:
    fs = OSFileSystem()
    assert members.read(fs, str(tmp_path)) == []
    records = [member("b", 17002), member("a", 17001, 3)]
    members.write(fs, str(tmp_path), records)
    assert members.read(fs, str(tmp_path)) == sorted(records, key=lambda m: m.node_id)


def test_file_damage_is_detected(tmp_path: Path) -> None:
    fs = OSFileSystem()
    members.write(fs, str(tmp_path), [member("a", 17001)])
    path = tmp_path / members.MEMBERS_NAME
    data = bytearray(path.read_bytes())
    for offset in (0, 8, 10, len(data) // 2, len(data) - 1):
        damaged = bytearray(data)
        damaged[offset] ^= 0x40
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptionError, match=members.MEMBERS_NAME):
            members.read(fs, str(tmp_path))
    path.write_bytes(bytes(data[:-3]))
    with pytest.raises(CorruptionError):
        members.read(fs, str(tmp_path))
    path.write_bytes(b"")
    with pytest.raises(CorruptionError):
        members.read(fs, str(tmp_path))


def test_file_with_valid_checksum_but_bad_records_is_refused() -> None:
    import struct
    import zlib
    body = msgpack.packb([["x"]], use_bin_type=True)
    head = struct.pack(">8sBI", members.MAGIC, members.FORMAT_VERSION, len(body))
    data = head + body + struct.pack(">I", zlib.crc32(head + body))
    with pytest.raises(CorruptionError, match="9 fields"):
        members.decode_file(data)
    head = struct.pack(">8sBI", members.MAGIC, 9, len(body))
    data = head + body + struct.pack(">I", zlib.crc32(head + body))
    with pytest.raises(CorruptionError, match="version"):
        members.decode_file(data)
