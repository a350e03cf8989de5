"""Error and warning types shared by every part of fqdnpolicy.

A :class:`Problem` says *where* something is wrong (file, line, column, the resource and the
field path inside it) and *what would be valid*. :class:`InvalidPolicy` carries one or more
problems; every parser and loader raises it, never a bare ``ValueError`` or ``KeyError``, so
callers can catch one type and show all that is wrong at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

Severity = Literal["error", "warning"]


@attrs.frozen
class Problem:
    """One thing wrong (or risky) in the input, with its location.

    Attributes:
        message: What is wrong, in a sentence.
        path: Field path inside the resource, e.g. ``spec.egress[0].destination.ports[1]``.
        resource: The resource's name as a user knows it, e.g. ``allow-github-api`` or
            ``default/allow-github-api``.
        file: Source file, when the input came from one.
        line: 1-based line in ``file``.
        column: 1-based column (in the line, or in a one-line string such as a selector).
        hint: What would be valid instead.
        severity: ``"error"`` makes the input invalid; ``"warning"`` is advice (linter).
        code: A short stable identifier for tools (``"unknown-field"``, ``"broad-wildcard"``).
    """

    message: str
    path: str = ""
    resource: str = ""
    file: str | None = None
    line: int | None = None
    column: int | None = None
    hint: str = ""
    severity: Severity = "error"
    code: str = ""

    def located(
        self,
        *,
        file: str | None = None,
        line: int | None = None,
        resource: str | None = None,
        path_prefix: str = "",
    ) -> Problem:
        """Return a copy placed in a file/resource, with ``path_prefix`` put before the path."""
        path = self.path
        if path_prefix:
            path = f"{path_prefix}{'' if not path or path.startswith('[') else '.'}{path}"
        return attrs.evolve(
            self,
            file=self.file if file is None else file,
            line=self.line if line is None else line,
            resource=self.resource if resource is None else resource,
            path=path,
        )

    def __str__(self) -> str:
        """Render as ``file:line: resource: path: message (hint)``."""
        parts: list[str] = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line is not None else self.file)
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.resource:
            parts.append(self.resource)
        if self.path:
            parts.append(self.path)
        text = self.message
        if self.column is not None and self.file is None and self.line is None:
            text = f"{text} (column {self.column})"
        if self.hint:
            text = f"{text}; {self.hint}"
        if self.severity == "warning":
            text = f"warning: {text}"
        parts.append(text)
        return ": ".join(parts)

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready dictionary (used by ``--format json``)."""
        return attrs.asdict(self)


class InvalidPolicy(ValueError):
    """Raised for invalid input: a selector, a domain pattern, a policy file.

    ``problems`` holds every problem found (loading collects them all rather than stopping at
    the first). ``str()`` lists them one per line.
    """

    def __init__(self, problems: Problem | str | Iterable[Problem]) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: tuple[Problem, ...] = tuple(problems)
        if not self.problems:
            raise TypeError("InvalidPolicy needs at least one problem")
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def problem(self) -> Problem:
        """The first problem (convenient when only one is expected)."""
        return self.problems[0]


class MissingDependency(ImportError):
    """An optional dependency a feature needs is not installed; the message says what to run."""
