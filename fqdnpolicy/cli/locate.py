"""Warnings placed at their field: the line and column of the field a linter warning names.

The linter knows a warning's resource and field path, and the line where the resource starts.
The reader's line maps (:func:`fqdnpolicy.loading.reading.read_yaml`) give the line of every
field; the column is where the field's key (or list item) starts on that line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import attrs

from fqdnpolicy.errors import Problem
from fqdnpolicy.loading.documents import Where
from fqdnpolicy.loading.reading import Document, read_yaml

__all__ = ["at_fields"]

_ITEM = re.compile(r"^items\[\d+\]$")
_LAST = re.compile(r"(?:^|\.)([^.\[]+)((?:\[\d+\])*)$")


def at_fields(problems: Iterable[Problem], texts: Mapping[str, str]) -> list[Problem]:
    """Return ``problems`` with each line and column at its own field.

    Args:
        problems: Warnings located at their resource's first line, with a field path.
        texts: The text of each file, by the name the problems carry.

    Returns:
        The problems, each moved to its field when the file's text shows where it is; a
        problem that cannot be placed keeps its location.
    """
    documents: dict[str, list[Document]] = {}
    placed: list[Problem] = []
    for problem in problems:
        text = texts.get(problem.file or "")
        if text is None or problem.line is None:
            placed.append(problem)
            continue
        if problem.file not in documents:
            documents[problem.file or ""] = read_yaml(text, problem.file or "")[0]
        placed.append(_place(problem, documents[problem.file or ""], text.splitlines()))
    return placed


def _place(problem: Problem, docs: Sequence[Document], lines: Sequence[str]) -> Problem:
    for doc in docs:
        prefixes = [""] if doc.line == problem.line else []
        prefixes += [k for k, line in doc.lines.items() if line == problem.line and _ITEM.match(k)]
        for prefix in prefixes:
            line = Where(problem.file or "", doc.lines, prefix, problem.line).line_of(problem.path)
            if line is None or not 0 < line <= len(lines):
                continue
            column = _column(problem.path, lines[line - 1])
            return attrs.evolve(problem, line=line, column=column)
    return problem


def _column(path: str, text: str) -> int | None:
    """Where the path's last field starts on its line: its list item, else its key."""
    match = _LAST.search(path)
    if match is None:
        return None
    key, index = match.groups()
    stripped = text.lstrip()
    if index and stripped.startswith("- "):
        return len(text) - len(stripped) + 3  # the item's value, after "- "
    found = re.search(rf"(?:^|[\s{{,])[\"']?({re.escape(key)})[\"']?\s*:", text)
    return found.start(1) + 1 if found else None
