"""What every ``fqdnpolicy`` command shares: exit codes, error reporting, the state options.

A command reports a failure by raising :class:`CommandError` (or letting
:class:`~fqdnpolicy.errors.InvalidPolicy` escape from loading input); :func:`report_error`
prints it the same way for every command: as text on stderr, or as JSON on stdout when the
command was asked for ``--format json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "CommandError",
    "print_problems",
    "report_error",
]

#: All is well: valid input, every flow allowed.
EXIT_OK = 0
#: The input is invalid, or a flow is denied.
EXIT_INVALID = 1
#: The command line is wrong: a bad option or flow, a missing file.
EXIT_USAGE = 2
#: The reader closed the output early (``| head``); what a shell reports for SIGPIPE.
EXIT_PIPE = 141


class CommandError(Exception):
    """A command cannot go on; :func:`report_error` prints it and ``main`` exits ``code``.

    Args:
        message: What went wrong, in one line.
        code: The exit code (:data:`EXIT_USAGE` or :data:`EXIT_INVALID`).
        problems: Located problems behind the message, printed one per line.
    """

    def __init__(
        self, message: str, code: int = EXIT_USAGE, problems: Sequence[Problem] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.problems = tuple(problems)


def print_problems(problems: Sequence[Problem], out: TextIO) -> None:
    """Print each problem on its own line."""
    for problem in problems:
        print(problem, file=out)


def wants_json(args: argparse.Namespace) -> bool:
    """Tell whether the command was asked for ``--format json``."""
    return getattr(args, "format", None) == "json"


def report_error(args: argparse.Namespace, error: CommandError, out: TextIO) -> int:
    """Print ``error`` for ``args.command``: JSON on ``out`` or text on stderr; its code."""
    if wants_json(args):
        report: dict[str, Any] = {
            "error": error.message,
            "exit_code": error.code,
            "problems": [p.as_dict() for p in error.problems],
        }
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        print(f"fqdnpolicy {args.command}: {error.message}", file=sys.stderr)
        print_problems(error.problems, sys.stderr)
    return error.code


def invalid_input(exc: InvalidPolicy, what: str = "invalid input") -> CommandError:
    """The :class:`CommandError` for input that failed to load (exit 1)."""
    count = len(exc.problems)
    return CommandError(f"{what}: {count} problem(s)", EXIT_INVALID, exc.problems)
