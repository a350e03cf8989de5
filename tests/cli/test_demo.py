"""``fqdnpolicy demo``: every table it prints names each of its columns."""

from __future__ import annotations

import re

from tests.cli.support import run


def tables(text: str) -> list[tuple[str, str]]:
    """Each table's header line and its underline (the line of dash groups under it)."""
    lines = text.splitlines()
    return [
        (lines[i - 1], line)
        for i, line in enumerate(lines)
        if i and line and set(line) <= {"-", " "} and line.startswith("-")
    ]


def test_every_demo_table_has_one_header_per_column_over_its_column() -> None:
    code, out = run("demo")
    assert code == 0
    found = tables(out)
    assert len(found) >= 2
    for header, underline in found:
        columns = [m.start() for m in re.finditer(r"-+", underline)]
        titles = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
        assert titles == columns, header


def test_the_verdict_table_names_the_article_claim_and_the_note() -> None:
    _, out = run("demo")
    header = next(h for h, _ in tables(out) if h.startswith("flow "))
    assert re.split(r"\s{2,}", header) == [
        "flow",
        "address",
        "article says",
        "verdict",
        "decided by",
        "note",
    ]
