"""The node's persistent identity: ``node.meta`` in its data directory (docs/formats/node-meta.md).

Two identities, kept apart on purpose:
- ``node_id``: who the node is (its name in the ring and in gossip). Random at first start,
  then kept for as long as the file exists.
- ``actor``: the name under which this node bumps vector clocks. Counters of an actor must
  never be reused for a different write, or a replica that kept the old write silently drops
  the new one as "already seen" (Riak's kv679). So the actor is new whenever the node may
  have forgotten a counter it handed out: a data directory created from scratch, an engine
  that cut a damaged log on recovery, or any start after an unclean shutdown (writes not yet
  fsynced may be gone). A new actor costs one more clock entry on keys written afterwards;
  a reused one can lose writes, so every doubtful case takes a new one.

Invariants:
1. The file is replaced atomically: written to ``node.meta.tmp``, fsynced, renamed over
   ``node.meta``, directory fsynced. A reader sees the old or the new file, never a mix.
2. ``clean`` is False on disk for as long as the node runs; ``mark_clean`` sets it after the
   engine closed cleanly. It is the only way an actor survives a restart.
3. ``decode`` is a trust boundary: magic, version, length and CRC-32 are checked, then every
   field's type; anything else raises CorruptionError (a node never starts under an identity
   it cannot read back exactly).
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass, replace

import msgpack

from cluster.errors import CorruptionError
from engine.fs import FileSystem, join, replace_file

META_NAME = "node.meta"
MAGIC = b"RKVMETA\n"
FORMAT_VERSION = 1  # On disk: bump on any change of layout; decoders reject unknown versions.
ACTOR_BYTES = 8
NODE_ID_BYTES = 16
BODY_BYTES_MAX = 64 * 1024
_HEADER = struct.Struct(">8sBI")  # magic, format version, body length
_TRAILER = struct.Struct(">I")  # CRC-32 (zlib) of header and body


@dataclass(frozen=True, slots=True)
class NodeMeta:
    node_id: str  # lowercase hex
    actor: bytes  # ACTOR_BYTES random bytes
    clean: bool  # the node shut down cleanly after writing this file
    created_ms: int  # when node_id was first made
    actor_created_ms: int  # when this actor was made


def encode(meta: NodeMeta) -> bytes:
    body = msgpack.packb(
        {
            "node_id": meta.node_id,
            "actor": meta.actor,
            "clean": meta.clean,
            "created_ms": meta.created_ms,
            "actor_created_ms": meta.actor_created_ms,
        },
        use_bin_type=True,
    )
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    return head + _TRAILER.pack(zlib.crc32(head))


def decode(data: bytes) -> NodeMeta:
    """The metadata in ``data``; raises CorruptionError on any mismatch (invariant 3)."""
    if len(data) < _HEADER.size + _TRAILER.size:
        raise CorruptionError(f"{META_NAME}: {len(data)} bytes is too short")
    magic, version, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(f"{META_NAME}: bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise CorruptionError(f"{META_NAME}: unknown format version {version}")
    if length > BODY_BYTES_MAX or len(data) != _HEADER.size + length + _TRAILER.size:
        raise CorruptionError(f"{META_NAME}: body length {length} does not match the file")
    end = _HEADER.size + length
    (crc,) = _TRAILER.unpack_from(data, end)
    if crc != zlib.crc32(data[:end]):
        raise CorruptionError(f"{META_NAME}: checksum mismatch")
    try:
        body = msgpack.unpackb(data[_HEADER.size : end], raw=False)
    except Exception as exc:
        raise CorruptionError(f"{META_NAME}: body is not msgpack ({type(exc).__name__})") from None
    if type(body) is not dict:
        raise CorruptionError(f"{META_NAME}: body is not a map")
    node_id = body.get("node_id")
    actor = body.get("actor")
    clean = body.get("clean")
    created_ms = body.get("created_ms")
    actor_created_ms = body.get("actor_created_ms")
    if type(node_id) is not str or not node_id or len(node_id) > 2 * NODE_ID_BYTES:
        raise CorruptionError(f"{META_NAME}: node_id is not a short string")
    if type(actor) is not bytes or len(actor) != ACTOR_BYTES:
        raise CorruptionError(f"{META_NAME}: actor is not {ACTOR_BYTES} bytes")
    if type(clean) is not bool:
        raise CorruptionError(f"{META_NAME}: clean is not a boolean")
    for name, stamp in (("created_ms", created_ms), ("actor_created_ms", actor_created_ms)):
        if type(stamp) is not int or stamp < 0:
            raise CorruptionError(f"{META_NAME}: {name} is not an unsigned integer")
    assert isinstance(created_ms, int) and isinstance(actor_created_ms, int)
    return NodeMeta(node_id, actor, clean, created_ms, actor_created_ms)


def read(fs: FileSystem, directory: str) -> NodeMeta | None:
    """The node's metadata, or None if the file does not exist. CorruptionError if damaged."""
    path = join(directory, META_NAME)
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return None
    if size > _HEADER.size + BODY_BYTES_MAX + _TRAILER.size:
        raise CorruptionError(f"{META_NAME}: {size} bytes is too large")
    file = fs.open_read(path)
    try:
        data = file.read(size)
    finally:
        file.close()
    return decode(data)


def write(fs: FileSystem, directory: str, meta: NodeMeta) -> None:
    """Durably replace the node's metadata (invariant 1). Raises OSError on I/O failure."""
    data = encode(meta)
    assert decode(data) == meta  # pair assertion: what we write reads back exactly
    replace_file(fs, directory, META_NAME, data)


def start(
    fs: FileSystem,
    directory: str,
    *,
    data_intact: bool,
    rng: random.Random,
    now_ms: int,
) -> tuple[NodeMeta, str]:
    """Load or create the identity for a run and persist it as running (clean=False).

    ``data_intact``: the engine's data existed before this start and recovery dropped
    nothing. The actor is kept only if that holds and the last shutdown was clean; otherwise
    a new one is drawn from ``rng``. Returns (meta, reason) where reason says why the actor is
    new ("" when kept). Raises CorruptionError if the existing file is damaged, OSError on I/O.
    """
    old = read(fs, directory)
    if old is None:
        node_id = rng.getrandbits(8 * NODE_ID_BYTES).to_bytes(NODE_ID_BYTES, "big").hex()
        meta = NodeMeta(node_id, _new_actor(rng), False, now_ms, now_ms)
        reason = "new node"
    elif not data_intact:
        meta = replace(old, actor=_new_actor(rng), clean=False, actor_created_ms=now_ms)
        reason = "data directory new or damaged"
    elif not old.clean:
        meta = replace(old, actor=_new_actor(rng), clean=False, actor_created_ms=now_ms)
        reason = "previous shutdown was not clean"
    else:
        meta = replace(old, clean=False)
        reason = ""
    write(fs, directory, meta)
    return meta, reason


def new_actor(fs: FileSystem, directory: str, meta: NodeMeta, rng: random.Random,
              now_ms: int) -> NodeMeta:
    """Take and persist a new vector-clock actor while running (e.g. after a flush removed
    the versions that held this actor's counters: new counters must not collide with them)."""
    fresh = replace(meta, actor=_new_actor(rng), actor_created_ms=now_ms)
    write(fs, directory, fresh)
    return fresh


def mark_clean(fs: FileSystem, directory: str, meta: NodeMeta) -> NodeMeta:
    """Record a clean shutdown. REQUIRES: the engine has been closed successfully."""
    clean = replace(meta, clean=True)
    write(fs, directory, clean)
    return clean


def _new_actor(rng: random.Random) -> bytes:
    return rng.getrandbits(8 * ACTOR_BYTES).to_bytes(ACTOR_BYTES, "big")
