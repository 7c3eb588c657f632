"""cluster/members.py: the membership view derived from gossip, and the cluster.state file."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from cluster import members
from cluster.endpoint_state import AppField, EndpointState, FieldValue, Status, with_fields
from cluster.errors import CorruptionError
from cluster.gossip import view
from cluster.members import Member, Membership
from engine.fs import OSFileSystem


def state(node_id: str, port: int, status: Status = Status.NORMAL, generation: int = 1,
          tokens: tuple[int, ...] = ()) -> EndpointState:
    rng = random.Random(node_id)
    toks = tokens or tuple(sorted({rng.getrandbits(64) for _ in range(8)}))
    app: dict[AppField, FieldValue] = {
        AppField.STATUS: status, AppField.PEER_ADDRESS: ("127.0.0.1", port),
        AppField.CLIENT_ADDRESS: ("127.0.0.1", port - 10000), AppField.DATACENTER: "dc1",
        AppField.RACK: "rack1", AppField.TOKENS: toks}
    return with_fields(EndpointState(node_id, generation, 0), 1, app)


def me_member(node_id: str = "me", port: int = 17001) -> Member:
    return Member(node_id, "127.0.0.1", port, "127.0.0.1", port - 10000, "dc1", "rack1",
                  (1, 2, 3), 1)


def test_view_update_places_owners_and_joining() -> None:
    membership = Membership(me_member(), [("127.0.0.1", 17002), ("127.0.0.1", 17003)])
    assert not membership.complete
    assert membership.missing_addresses() == [("127.0.0.1", 17002), ("127.0.0.1", 17003)]
    states = [state("me", 17001), state("b", 17002), state("c", 17003, Status.JOINING)]
    membership.update(states, view(states))
    assert membership.complete
    assert set(membership.members) == {"me", "b", "c"}
    assert membership.status_of("c") is Status.JOINING
    assert membership.ring().node_ids() == ["b", "me"]  # joining nodes own nothing yet
    future = membership.future_ring()
    assert future is not None and future.node_ids() == ["b", "c", "me"]
    assert [m.node_id for m in membership.others()] == ["b", "c"]
    assert membership.by_peer_address(("127.0.0.1", 17003)).node_id == "c"  # type: ignore[union-attr]


def test_leaving_nodes_own_until_they_left() -> None:
    membership = Membership(me_member(), [])
    states = [state("me", 17001), state("b", 17002, Status.LEAVING),
              state("gone", 17004, Status.LEFT)]
    membership.update(states, view(states))
    assert membership.ring().node_ids() == ["b", "me"]
    future = membership.future_ring()
    assert future is not None and future.node_ids() == ["me"]
    assert "gone" not in membership.members
    membership.update(states[:1], view(states[:1]))
    assert membership.future_ring() is None


def test_own_address_in_peers_is_ignored() -> None:
    membership = Membership(me_member(), [("127.0.0.1", 17001), ("127.0.0.1", 17002)])
    assert membership.peer_addresses == (("127.0.0.1", 17002),)


def test_an_expected_address_keeps_the_view_incomplete_until_known() -> None:
    membership = Membership(me_member(), [])
    assert membership.complete  # a node alone
    membership.expect(("127.0.0.1", 17001))  # its own address: nothing to wait for
    assert membership.complete
    membership.expect(("127.0.0.1", 17002))
    assert not membership.complete
    assert membership.missing_addresses() == [("127.0.0.1", 17002)]
    states = [state("me", 17001), state("b", 17002)]
    membership.update(states, view(states))
    assert membership.complete


def test_file_round_trip(tmp_path: Path) -> None:
    fs = OSFileSystem()
    assert members.read(fs, str(tmp_path)) == ([], [])
    states = [state("b", 17002), state("a", 17001, Status.JOINING, 3)]
    members.write(fs, str(tmp_path), states)
    assert members.read(fs, str(tmp_path)) == (sorted(states, key=lambda s: s.node_id), [])


def test_file_damage_is_detected(tmp_path: Path) -> None:
    fs = OSFileSystem()
    members.write(fs, str(tmp_path), [state("a", 17001)])
    path = tmp_path / members.STATE_NAME
    data = bytearray(path.read_bytes())
    for offset in (0, 8, 10, len(data) // 2, len(data) - 1):
        damaged = bytearray(data)
        damaged[offset] ^= 0x40
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptionError, match=members.STATE_NAME):
            members.read(fs, str(tmp_path))
    path.write_bytes(bytes(data[:-3]))
    with pytest.raises(CorruptionError):
        members.read(fs, str(tmp_path))
    path.write_bytes(b"")
    with pytest.raises(CorruptionError):
        members.read(fs, str(tmp_path))


def test_file_with_valid_checksum_but_bad_states_is_refused() -> None:
    body = msgpack.packb([["x"]], use_bin_type=True)
    head = struct.pack(">8sBI", members.MAGIC, members.FORMAT_VERSION, len(body))
    data = head + body + struct.pack(">I", zlib.crc32(head + body))
    with pytest.raises(CorruptionError, match=members.STATE_NAME):
        members.decode_file(data)
    head = struct.pack(">8sBI", members.MAGIC, 9, len(body))
    data = head + body + struct.pack(">I", zlib.crc32(head + body))
    with pytest.raises(CorruptionError, match="version"):
        members.decode_file(data)
