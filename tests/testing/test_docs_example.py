"""docs/backends.md shows the example backend's files exactly as the repository tests them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "tests" / "data" / "example_backend"
DOC = ROOT / "docs" / "backends.md"

# A file shown in the docs: a line "`path`:", a blank line, then the fenced block.
SHOWN_FILE = re.compile(r"`([\w./]+)`:\n\n```\w+\n(.*?)```\n", re.DOTALL)


def shown_files() -> dict[str, str]:
    section = DOC.read_text().split("## Write your own backend", 1)[1].split("\n## ", 1)[0]
    return dict(SHOWN_FILE.findall(section))


def test_every_file_of_the_example_is_shown_as_it_is() -> None:
    files = {
        str(path.relative_to(EXAMPLE)): path.read_text()
        for path in EXAMPLE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shown_files() == files
