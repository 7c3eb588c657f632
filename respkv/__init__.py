"""respkv: a Redis-protocol key-value store that runs as a Dynamo-style cluster."""

__version__ = "0.1.0"
# The Redis version we report (INFO redis_version, HELLO version): clients negotiate
# features such as RESP3 from it, so it names the Redis release whose behaviour we follow.
REDIS_COMPAT_VERSION = "7.2.4"
