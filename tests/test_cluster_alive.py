"""cluster/alive.py: the last-up record and the gc-grace rule for rejoining nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import alive
from cluster.errors import CorruptionError
from engine.fs import OSFileSystem


def test_round_trip_and_absent(tmp_path: Path) -> None:
    fs = OSFileSystem()
    assert alive.read(fs, str(tmp_path)) is None
    alive.write(fs, str(tmp_path), 1_700_000_000_123)
    assert alive.read(fs, str(tmp_path)) == 1_700_000_000_123


def test_damage_is_detected(tmp_path: Path) -> None:
    fs = OSFileSystem()
    alive.write(fs, str(tmp_path), 5)
    path = tmp_path / alive.ALIVE_NAME
    data = path.read_bytes()
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptionError, match=alive.ALIVE_NAME):
            alive.read(fs, str(tmp_path))
    path.write_bytes(data[:-1])
    with pytest.raises(CorruptionError):
        alive.read(fs, str(tmp_path))


@pytest.mark.parametrize("last_up, now, grace, has_data, refused", [
    (None, 10_000, 1000, True, False),  # never up before: a new node
    (1000, 1500, 1000, True, False),  # down less than the grace
    (1000, 2000, 1000, True, False),  # exactly the grace
    (1000, 2001, 1000, True, True),  # longer: refused
    (1000, 9_999_999, 1000, False, False),  # longer, but its data was wiped: a rebuild
    (1000, 9_999_999, 0, True, False),  # no grace: a cluster of one keeps no tombstones
])
def test_check(last_up: int | None, now: int, grace: int, has_data: bool,
               refused: bool) -> None:
    reason = alive.check(last_up, now, grace, has_data)
    assert (reason is not None) is refused
    if reason is not None:
        assert "gc-grace-seconds" in reason and "empty its engine directory" in reason
