"""dispatch's table of command spellings: any case works, the table stays bounded."""

from __future__ import annotations

import itertools

import pytest

import respkv.commands  # noqa: F401  (registers every command; imports dispatch)
from respkv import dispatch
from respkv.commands.table import COMMANDS


def _spellings(name: bytes) -> list[bytes]:
    return [bytes(letters) for letters in itertools.product(*((c, c ^ 0x20) for c in name))]


def test_every_spelling_of_a_plain_command_finds_its_spec() -> None:
    for spelling in _spellings(b"getrange"):
        assert dispatch._plain_spec(spelling) is COMMANDS[b"getrange"]


def test_containers_and_unknown_names_are_not_plain() -> None:
    assert dispatch._plain_spec(b"CLIENT") is None  # has subcommands: resolve() handles it
    assert dispatch._plain_spec(b"nosuchcommand") is None
    assert b"CLIENT" not in dispatch._SPELLINGS


def test_the_spelling_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "_SPELLINGS", {})
    monkeypatch.setattr(dispatch, "_SPELLINGS_MAX", 100)
    spellings = _spellings(b"persist")  # 128 spellings
    for spelling in spellings:
        assert dispatch._plain_spec(spelling) is COMMANDS[b"persist"]
    assert len(dispatch._SPELLINGS) == 100
    # Past the bound a spelling is still found, only not remembered.
    assert dispatch._plain_spec(spellings[-1]) is COMMANDS[b"persist"]
