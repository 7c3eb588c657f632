# mypy: disable-error-code="misc"
# (misc: mypy wants a self-type to be a supertype of the class; a mixin used only by
# ClusterNode takes ``self: ClusterNode`` so that its methods are checked against it.)
"""Single-key reads and writes of a ``ClusterNode`` through the coordinator, and the
many-key forms (MGET, MSET, DEL of many) as one request per key, in parallel.

Rules (numbered across ClusterNode's modules; cluster_node.py says where each lives):
3. Every level comes from the caller (a connection's ``CONSISTENCY``) or the defaults; a
   request that cannot be satisfied raises ``NoQuorumError`` whose text is the client's
   error reply; nothing reports success on fewer acks than required.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from cluster.consistency import Consistency, NoQuorum, NoQuorumError
from cluster.coordinator import Deleted
from cluster.get_core import Found
from cluster.node import Entry
from cluster.put_core import PutOk
from cluster.version import Siblings, winner

if TYPE_CHECKING:
    from cluster.cluster_node import ClusterNode

T = TypeVar("T")


class KeyOperations:
    """get, put, delete and their many-key forms (Rule 3; many keys: Rule 4).

    A mixin of ``ClusterNode`` (its methods take ``self: ClusterNode``): it holds no state
    of its own.
    """

    async def get(self: ClusterNode, db: int, key: bytes,
                  level: Consistency | None = None) -> Entry | None:
        siblings = await self.get_siblings(db, key, level)
        if not siblings:
            return None
        _, _, expire_at_ms, _, value = winner(siblings)
        if value is None or (expire_at_ms and expire_at_ms <= self.clock.wall_ms()):
            return None
        return Entry(value, expire_at_ms, siblings)

    async def get_siblings(self: ClusterNode, db: int, key: bytes,
                           level: Consistency | None = None) -> Siblings:
        """Every version of ``key`` the replicas that answered hold (VCLOCK GET)."""
        self._check_ready()
        outcome = await self.coordinator.get(db, key, level or self.read_level)
        if isinstance(outcome, NoQuorum):
            raise outcome.error()
        assert isinstance(outcome, Found)
        return outcome.siblings

    async def get_many(self: ClusterNode, db: int, keys: Sequence[bytes],
                       level: Consistency | None = None) -> list[Entry | None]:
        """``get`` of each key, all in parallel (Rule 4); a key named twice is read once."""
        unique = list(dict.fromkeys(keys))
        found = await self._each(unique, lambda key: self.get(db, key, level))
        by_key = dict(zip(unique, found, strict=True))
        return [by_key[key] for key in keys]

    async def delete_many(self: ClusterNode, db: int, keys: Sequence[bytes],
                          level: Consistency | None = None) -> int:
        """``delete`` of each distinct key, in parallel; how many visible values it deleted."""
        unique = list(dict.fromkeys(keys))
        return sum(await self._each(unique, lambda key: self.delete(db, key, level)))

    async def _each(self: ClusterNode, keys: list[bytes],
                    call: Callable[[bytes], Awaitable[T]]) -> list[T]:
        """``call`` for every key concurrently; the first NOQUORUM (or other error) is raised
        once every call finished, so no request is left running behind the reply."""
        self._check_ready()
        outcomes = await asyncio.gather(*(call(key) for key in keys), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            first = errors[0]
            if isinstance(first, NoQuorumError) and len(keys) > 1:
                raise NoQuorumError(f"{first} ({len(errors)} of {len(keys)} keys failed; "
                                    "the others were done)") from None
            raise first
        return cast(list[T], outcomes)

    async def put(self: ClusterNode, db: int, key: bytes, value: bytes | None,
                  expire_at_ms: int = 0, *, context: object | None = None,
                  level: Consistency | None = None) -> None:
        """Write ``value`` (None: a tombstone, for VCLOCK DEL); ``context`` (an Entry's, or
        siblings from get_siblings) names what the write supersedes; without it the write
        supersedes what a read sees first."""
        self._check_ready()
        outcome = await self.coordinator.put(db, key, value, expire_at_ms,
                                             level or self.write_level,
                                             _as_context(context))
        if isinstance(outcome, NoQuorum):
            raise outcome.error()
        assert isinstance(outcome, PutOk)

    async def delete(self: ClusterNode, db: int, key: bytes,
                     level: Consistency | None = None) -> bool:
        self._check_ready()
        outcome = await self.coordinator.delete(db, key, level or self.write_level)
        if isinstance(outcome, NoQuorum):
            raise outcome.error()
        assert isinstance(outcome, Deleted)
        return outcome.existed

    async def write_many(self: ClusterNode, db: int, ops: Sequence[tuple[bytes, bytes | None, int]],
                         level: Consistency | None = None) -> None:
        """Each op as its own write, all in parallel (Rule 4); the last op of a key wins."""
        self._check_ready()
        last = {key: (value, expire_at_ms) for key, value, expire_at_ms in ops}
        write_level = level or self.write_level
        futures: list[asyncio.Future[Any]] = []
        for key, (value, expire_at_ms) in last.items():
            if value is None:
                futures.append(self.coordinator.delete(db, key, write_level))
            else:
                futures.append(self.coordinator.put(db, key, value, expire_at_ms, write_level))
        failed = [o for o in await asyncio.gather(*futures) if isinstance(o, NoQuorum)]
        if failed:
            raise NoQuorumError(f"{failed[0].message} ({len(failed)} of {len(futures)} "
                                "writes failed; the others were applied)")


def _as_context(context: object | None) -> Siblings | None:
    """The versions a write supersedes: an Entry's context (its sibling set) as given."""
    if context is None:
        return None
    assert isinstance(context, tuple), type(context)
    return context
