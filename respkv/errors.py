"""Error replies worded exactly as redis-server 7 words them.

Clients and tools match on these texts (redis-py maps prefixes to exception classes, and
scripts grep for them), so they are part of the compatibility surface: change one only to
follow Redis, and keep a differential test on it.
"""

from __future__ import annotations

from cluster.errors import ClusterError
from engine.errors import CorruptionError, StorageError
from respkv.replies import CommandError

SYNTAX = "ERR syntax error"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
OVERFLOW = "ERR increment or decrement would overflow"
NAN_OR_INF = "ERR increment would produce NaN or Infinity"
NO_SUCH_KEY = "ERR no such key"
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOAUTH = "NOAUTH Authentication required."
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
DB_INDEX = "ERR DB index is out of range"
INVALID_EXPIRE = "ERR invalid expire time in '{}' command"
NESTED_MULTI = "ERR MULTI calls can not be nested"
EXEC_WITHOUT_MULTI = "ERR EXEC without MULTI"
DISCARD_WITHOUT_MULTI = "ERR DISCARD without MULTI"
WATCH_IN_MULTI = "ERR WATCH inside MULTI is not allowed"
NOT_IN_MULTI = "ERR Command not allowed inside a transaction"
EXECABORT = "EXECABORT Transaction discarded because of previous errors."
STRING_TOO_LONG = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
OFFSET_OUT_OF_RANGE = "ERR offset is out of range"


def wrong_arity(fullname: str) -> CommandError:
    return CommandError(f"ERR wrong number of arguments for '{fullname}' command")


def unknown_command(argv: list[bytes]) -> CommandError:
    """Redis quotes the name and then arguments until 128 bytes of them are quoted."""
    name = _cstring(argv[0])[:128]
    args = b""
    for arg in argv[1:]:
        if len(args) >= 128:
            break
        args += b"'" + _cstring(arg)[: 128 - len(args)] + b"' "
    text = b"ERR unknown command '" + name + b"', with args beginning with: " + args
    return CommandError(text.decode("utf-8", "surrogateescape"))


def unknown_subcommand(argv: list[bytes]) -> CommandError:
    sub = _printable(argv[1], 128)
    return CommandError(
        f"ERR unknown subcommand '{sub}'. Try {argv[0].decode('utf-8', 'replace').upper()} HELP."
    )


def _cstring(data: bytes) -> bytes:
    # Redis formats with printf's "%.*s", which stops at the first NUL byte.
    return data.split(b"\0", 1)[0]


def _printable(data: bytes, limit: int) -> str:
    # Redis formats these with printf's "%.*s": the text ends at the first NUL byte and is cut
    # at `limit` bytes. Errors are single-line: replies.error_bytes() turns CR/LF into spaces.
    return data.split(b"\0", 1)[0][:limit].decode("utf-8", "surrogateescape")


def cluster_error_message(exc: ClusterError) -> str:
    """The error reply for a request the cluster could not serve. NOQUORUM and CLUSTERDOWN
    texts carry their own error code (clients match on it); anything else is an ERR."""
    text = str(exc)
    code = text.split(" ", 1)[0]
    return text if code in ("NOQUORUM", "CLUSTERDOWN") else f"ERR {text}"


def storage_error_message(exc: StorageError) -> str:
    """The error reply for a storage failure: names the damaged file, so that an operator
    knows what to inspect (the engine has counted and logged it already)."""
    if isinstance(exc, CorruptionError):
        where = "" if exc.offset is None else f" at offset {exc.offset}"
        return f"ERR storage corruption: {exc.path}{where}: {exc.reason}"
    return f"ERR storage error: {exc}"
