"""Where benchmark scripts write their results: a section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path


def write_section(doc: Path, begin: str, end: str, section: str, *, heading: str = "") -> None:
    """Put ``section`` between the ``begin`` and ``end`` markers of ``doc``, keeping the rest
    of the file. Without the markers, they are appended (under ``heading``, if given)."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin not in text:
        title = f"\n## {heading}\n" if heading else ""
        text = f"{text.rstrip(chr(10))}\n{title}\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{section}\n{end}{tail}")
