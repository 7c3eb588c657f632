"""Helpers for tests that run handlers and node methods in-process, without a server."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any


def finish(result: Coroutine[Any, Any, Any] | Any) -> Any:
    """The value of a handler or node call that must complete without suspending.

    In a cluster of one nothing suspends: coroutines finish on their first step, and the
    hottest handlers (GET, SET) answer at once without a coroutine at all.
    """
    if not isinstance(result, Coroutine):
        return result
    try:
        result.send(None)
    except StopIteration as stop:
        return stop.value
    result.close()
    raise AssertionError("coroutine suspended")
