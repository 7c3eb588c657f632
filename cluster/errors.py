"""Errors the cluster layer raises to its callers.

Rule: programmer errors are ``assert``; operating errors (bad bytes on disk, a broken data
directory) are the typed exceptions below, so the frontend can answer ``-ERR`` and keep serving.
"""

from __future__ import annotations


class ClusterError(Exception):
    """Base class of the operating errors of the cluster layer."""


class CorruptionError(ClusterError):
    """Bytes read back from storage do not decode to a valid structure.

    Raised by every decoder at a trust boundary (sibling sets, node metadata). The message
    says what was wrong; the data is never returned partially or "repaired" silently.
    """
