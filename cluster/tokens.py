"""A node's ring tokens: drawn once at first start, then kept in ``node.tokens``.

Format: docs/formats/ring-state.md. Written and read only here.

Invariants:
1. Tokens are drawn only from an injected ``random.Random`` (uniform 64-bit, distinct, none
   in ``taken``), so a simulation replays them from its seed.
2. Once written, a node's tokens never change on restart, whatever ``num-tokens`` says now:
   new tokens would move data that nobody streams (joining and leaving move data explicitly).
3. The file names the node it belongs to; a file naming another node id is refused (a data
   directory mix-up is not silently turned into a new ring position).
4. The file is replaced atomically (``node.tokens.tmp``, fsync, rename, fsync the directory);
   ``decode`` is a trust boundary: magic, version, lengths, CRC-32, order and range are checked
   and anything else raises CorruptionError.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Collection
from itertools import pairwise

from cluster.errors import CorruptionError
from cluster.keys import TOKEN_MAX
from cluster.ring import NODE_TOKENS_MAX
from engine.fs import FileSystem, join, replace_file

# Largest node's share of the ring over the smallest's, for random tokens (tests/
# test_cluster_ring.py::test_default_num_tokens_balance re-measures it), worst of 20 seeds per
# node count (3..12 nodes), plus the tail over 300 seeds at 12 nodes:
#   num_tokens   3     4     5     6     7     8     9     10    11    12  | 12 nodes p99 / max
#       128    1.45  1.52  1.53  1.48  1.49  1.45  1.50  1.49  1.51  1.46 |
#       256    1.23  1.27  1.23  1.26  1.30  1.35  1.38  1.37  1.33  1.33 |
#       512    1.13  1.22  1.19  1.24  1.20  1.23  1.21  1.24  1.25  1.26 | 1.27 / 1.29
#       768    1.15  1.15  1.23  1.20  1.16  1.16  1.17  1.18  1.18  1.18 | 1.20 / 1.22
# 256 breaks the 1.3 bound (issue 4) from 7 nodes on; 512 is the smallest power of two that
# holds it. The ratio shrinks as ~1/sqrt(num_tokens) and grows slowly with the node count
# (more extremes to compare): 24, 48 and 100 nodes at 512 tokens measure 1.17..1.30 over 5
# seeds, so the bound is for 3..12 nodes, as issue 4 states it. Tokens that a
# joining node picks to split the largest ranges (issue 5) would do better than chance.
NUM_TOKENS_DEFAULT = 512

TOKENS_NAME = "node.tokens"
MAGIC = b"RKVTOKN\n"
FORMAT_VERSION = 1  # On disk: bump on any change of layout; decoders reject unknown versions.
NODE_ID_BYTES_MAX = 64
_HEADER = struct.Struct(">8sBBI")  # magic, format version, node id length, token count
_TOKEN = struct.Struct(">Q")
_TRAILER = struct.Struct(">I")  # CRC-32 (zlib) of header and body


def generate(rng: random.Random, num_tokens: int,
             taken: Collection[int] = ()) -> tuple[int, ...]:
    """``num_tokens`` distinct uniform 64-bit tokens, none in ``taken``, ascending."""
    assert 1 <= num_tokens <= NODE_TOKENS_MAX, num_tokens
    chosen: set[int] = set()
    while len(chosen) < num_tokens:
        tok = rng.getrandbits(64)
        if tok not in taken:
            chosen.add(tok)
    return tuple(sorted(chosen))


def encode(node_id: str, tokens: tuple[int, ...]) -> bytes:
    """REQUIRES: tokens strictly ascending, 1..NODE_TOKENS_MAX of them; node id ASCII."""
    ident = node_id.encode("ascii")
    assert 0 < len(ident) <= NODE_ID_BYTES_MAX, node_id
    assert 0 < len(tokens) <= NODE_TOKENS_MAX, len(tokens)
    assert all(a < b for a, b in pairwise(tokens)), "tokens not ascending"
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(ident), len(tokens)) + ident
    head += b"".join(_TOKEN.pack(t) for t in tokens)
    return head + _TRAILER.pack(zlib.crc32(head))


def decode(data: bytes) -> tuple[str, tuple[int, ...]]:
    """(node id, tokens) of a file's bytes; CorruptionError on any mismatch (invariant 4)."""
    if len(data) < _HEADER.size + _TRAILER.size:
        raise CorruptionError(f"{TOKENS_NAME}: {len(data)} bytes is too short")
    magic, version, id_len, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(f"{TOKENS_NAME}: bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise CorruptionError(f"{TOKENS_NAME}: unknown format version {version}")
    if not 0 < id_len <= NODE_ID_BYTES_MAX or not 0 < count <= NODE_TOKENS_MAX:
        raise CorruptionError(f"{TOKENS_NAME}: node id length {id_len} or count {count}")
    end = _HEADER.size + id_len + count * _TOKEN.size
    if len(data) != end + _TRAILER.size:
        raise CorruptionError(f"{TOKENS_NAME}: {len(data)} bytes, the header says {end + 4}")
    (crc,) = _TRAILER.unpack_from(data, end)
    if crc != zlib.crc32(data[:end]):
        raise CorruptionError(f"{TOKENS_NAME}: checksum mismatch")
    try:
        node_id = data[_HEADER.size : _HEADER.size + id_len].decode("ascii")
    except UnicodeDecodeError:
        raise CorruptionError(f"{TOKENS_NAME}: node id is not ASCII") from None
    start = _HEADER.size + id_len
    tokens = tuple(t for (t,) in _TOKEN.iter_unpack(data[start:end]))
    if any(a >= b for a, b in pairwise(tokens)):
        raise CorruptionError(f"{TOKENS_NAME}: tokens are not strictly ascending")
    assert all(0 <= t <= TOKEN_MAX for t in tokens)  # 8 bytes each: holds by construction
    return node_id, tokens


def read(fs: FileSystem, directory: str) -> tuple[str, tuple[int, ...]] | None:
    """(node id, tokens) from the data directory; None if absent, CorruptionError if damaged."""
    path = join(directory, TOKENS_NAME)
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return None
    size_max = _HEADER.size + NODE_ID_BYTES_MAX + NODE_TOKENS_MAX * _TOKEN.size + _TRAILER.size
    if size > size_max:
        raise CorruptionError(f"{TOKENS_NAME}: {size} bytes is too large")
    file = fs.open_read(path)
    try:
        data = file.read(size)
    finally:
        file.close()
    return decode(data)


def write(fs: FileSystem, directory: str, node_id: str, tokens: tuple[int, ...]) -> None:
    """Durably replace the node's tokens (invariant 4). Raises OSError on I/O failure."""
    data = encode(node_id, tokens)
    assert decode(data) == (node_id, tokens)  # pair assertion: what we write reads back
    replace_file(fs, directory, TOKENS_NAME, data)


def start(fs: FileSystem, directory: str, *, node_id: str, num_tokens: int,
          rng: random.Random, taken: Collection[int] = ()) -> tuple[tuple[int, ...], str]:
    """The node's tokens for this run: kept from disk, or drawn and persisted at first start.

    Returns (tokens, note): note is "new tokens" when drawn, a warning when ``num_tokens``
    differs from the count on disk (invariant 2: the disk wins), "" otherwise. ``taken``: the
    tokens of other known members, avoided when drawing. Raises CorruptionError if the file
    is damaged or belongs to another node id (invariant 3), OSError on I/O failure.
    """
    stored = read(fs, directory)
    if stored is None:
        tokens = generate(rng, num_tokens, taken)
        write(fs, directory, node_id, tokens)
        return tokens, "new tokens"
    owner, tokens = stored
    if owner != node_id:
        raise CorruptionError(
            f"{TOKENS_NAME}: belongs to node {owner}, but this node is {node_id}")
    if len(tokens) != num_tokens:
        return tokens, (f"num-tokens is {num_tokens}, but this node keeps the {len(tokens)} "
                        f"tokens it already has")
    return tokens, ""
