"""Every example of docs/cli.md runs as written, from the repository, on the bundled data.

An example is an indented ``$ fqdnpolicy ...`` command (``\\`` continues it), the output it
prints (``...`` stands for text left out) and ``$ echo $?`` with the exit code it gives.
"""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import attrs
import pytest

from fqdnpolicy.cli import main

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / "docs" / "cli.md"


@attrs.frozen
class Example:
    """One command of the doc, what it prints and the exit code the doc says it gives."""

    command: str
    output: tuple[str, ...]
    exit_code: int | None


def examples(text: str) -> list[Example]:
    """The examples of a Markdown text, in order."""
    found: list[Example] = []
    lines = [line[4:] for line in text.splitlines() if line.startswith("    ") or not line]
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ fqdnpolicy "):
            i += 1
            continue
        command = lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + lines[i].strip()
        i += 1
        output: list[str] = []
        while i < len(lines) and lines[i] and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        exit_code = None
        if i + 1 < len(lines) and lines[i] == "$ echo $?":
            exit_code = int(lines[i + 1])
            i += 2
        found.append(Example(command, tuple(output), exit_code))
    return found


def shown_as(line: str) -> re.Pattern[str]:
    """A pattern of an output line as the doc shows it: ``...`` is any text, spaces any run."""
    parts = (r"\s+".join(map(re.escape, part.split())) for part in line.split("..."))
    return re.compile(".*".join(parts))


EXAMPLES = examples(CLI_DOC.read_text(encoding="utf-8"))


def test_the_doc_has_examples_and_each_says_its_exit_code() -> None:
    assert len(EXAMPLES) >= 2
    assert [e.command for e in EXAMPLES if e.exit_code is None] == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.command[:60])
def test_a_doc_example_gives_its_output_and_exit_code(
    example: Example, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    code = main(shlex.split(example.command)[1:], out=out)
    assert code == example.exit_code
    printed = iter(out.getvalue().splitlines())
    for line in example.output:  # in order; the doc may leave lines out
        pattern = shown_as(line)
        assert any(pattern.fullmatch(" ".join(got.split())) for got in printed), line
