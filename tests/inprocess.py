"""Helpers for tests that run handlers and node methods in-process, without a server."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import pytest

import respkv.commands  # noqa: F401  (registers every command; must precede dispatch)
from respkv.dispatch import resolve
from respkv.replies import CommandError


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


class HandlerRunner:
    """Runs commands through the real command table against `self.client`, in-process.

    Subclasses set `client` (a Client or a stand-in with the attributes handlers read)."""

    client: Any

    def __call__(self, *args: bytes | str | int) -> Any:
        argv = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in args]
        spec = resolve(argv)
        assert spec.handler is not None
        return finish(spec.handler(self.client, argv))

    def error(self, *args: bytes | str | int) -> str:
        """The error text a command must fail with."""
        with pytest.raises(CommandError) as raised:
            self(*args)
        return raised.value.message
