"""Command handlers; importing this package registers every command in the table."""

from respkv.commands import (  # noqa: F401  (imported for their registrations)
    cluster_cmds,
    connection,
    introspection,
    keys,
    server_cmds,
    strings,
    transactions,
)
