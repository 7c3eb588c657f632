"""A connection's view of a ``ClusterNode``: the same API with the connection's own
consistency levels (CONSISTENCY), everything else passed through to the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cluster.consistency import Consistency
from cluster.node import Entry
from cluster.version import Siblings

if TYPE_CHECKING:
    from cluster.cluster_node import ClusterNode


class Session:
    """A connection's view of a ``ClusterNode`` with its own consistency levels."""

    local_only = False

    def __init__(self, core: ClusterNode, read: Consistency, write: Consistency) -> None:
        self.core = core
        self.read_level = read
        self.write_level = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    def with_consistency(self, read: Consistency | None, write: Consistency | None
                         ) -> Session:
        return Session(self.core, read or self.core.read_level, write or self.core.write_level)

    async def get(self, db: int, key: bytes) -> Entry | None:
        return await self.core.get(db, key, self.read_level)

    async def get_siblings(self, db: int, key: bytes) -> Siblings:
        return await self.core.get_siblings(db, key, self.read_level)

    async def put(self, db: int, key: bytes, value: bytes | None, expire_at_ms: int = 0, *,
                  context: object | None = None) -> None:
        await self.core.put(db, key, value, expire_at_ms, context=context,
                            level=self.write_level)

    async def delete(self, db: int, key: bytes) -> bool:
        return await self.core.delete(db, key, self.write_level)

    async def write_many(self, db: int, ops: Sequence[tuple[bytes, bytes | None, int]]) -> None:
        await self.core.write_many(db, ops, self.write_level)

    async def get_many(self, db: int, keys: Sequence[bytes]) -> list[Entry | None]:
        return await self.core.get_many(db, keys, self.read_level)

    async def delete_many(self, db: int, keys: Sequence[bytes]) -> int:
        return await self.core.delete_many(db, keys, self.write_level)
