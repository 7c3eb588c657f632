"""Write the command table of docs/commands.md from the command registry.

    python -m respkv.commands.docs_gen            # rewrite the table in docs/commands.md
    python -m respkv.commands.docs_gen --check    # exit 1 if the table is out of date
    python -m respkv.commands.docs_gen --stdout   # print the table only

Only the text between the markers `<!-- commands:begin -->` and `<!-- commands:end -->`
is generated; everything around them is written by hand. One table per command group,
each container followed by its subcommands, so the page lists exactly what the server runs.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import respkv.commands  # noqa: F401  (registers every command)
from respkv.commands.introspection import acl_categories, command_flags
from respkv.commands.table import COMMANDS, CommandSpec

BEGIN = "<!-- commands:begin -->"
END = "<!-- commands:end -->"
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "commands.md"
HEADER = (
    "| Command | Arity | Flags | Keys (first, last, step) | ACL categories | Since "
    "| Complexity | Summary |"
)
RULE = "|---|---|---|---|---|---|---|---|"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def _row(spec: CommandSpec) -> str:
    name = spec.fullname.upper().replace("|", " ")
    keys = f"{spec.first_key}, {spec.last_key}, {spec.step}" if spec.first_key else "none"
    cells = (
        f"`{name}`",
        str(spec.arity),
        " ".join(command_flags(spec)),
        keys,
        " ".join("@" + category for category in acl_categories(spec)),
        spec.since,
        spec.complexity,
        spec.summary,
    )
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def table() -> str:
    """The generated section, markers included."""
    groups: dict[str, list[CommandSpec]] = defaultdict(list)
    for spec in COMMANDS.values():
        groups[spec.group].append(spec)
    lines = [BEGIN, ""]
    for group in sorted(groups):
        lines += [f"### {group}", "", HEADER, RULE]
        for spec in sorted(groups[group], key=lambda s: s.name):
            lines.append(_row(spec))
            lines.extend(_row(sub) for sub in sorted(spec.subcommands.values(),
                                                     key=lambda s: s.name))
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def render(document: str) -> str:
    """`document` with its generated section replaced by the current table."""
    start = document.find(BEGIN)
    end = document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN} and {END} are missing")
    return document[:start] + table() + document[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--stdout", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    if args.stdout:
        print(table())
        return 0
    try:
        current = args.path.read_text(encoding="utf-8")
        updated = render(current)
    except (OSError, ValueError) as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if updated != current:
            print(f"{args.path} is out of date: run python -m respkv.commands.docs_gen",
                  file=sys.stderr)
            return 1
        return 0
    if updated != current:
        args.path.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
