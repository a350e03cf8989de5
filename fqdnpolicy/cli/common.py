"""What every ``fqdnpolicy`` command shares: exit codes, error reporting, the state options.

A command reports a failure by raising :class:`CommandError` (or letting
:class:`~fqdnpolicy.errors.InvalidPolicy` escape from loading input); :func:`report_error`
prints it the same way for every command: as text on stderr, or as JSON on stdout when the
command was asked for ``--format json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "STDIN",
    "CommandError",
    "Parser",
    "UsageError",
    "check_paths",
    "load_policies",
    "print_problems",
    "read_stdin",
    "report_error",
    "stdin_alone",
]

#: The path that means standard input.
STDIN = "-"

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


class UsageError(Exception):
    """The command line does not parse; raised by :class:`Parser` instead of exiting.

    Args:
        parser: The (sub)parser that refused the command line, for its usage line.
        message: What is wrong, as argparse says it.
    """

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` so ``main`` can answer in JSON."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` instead of printing and exiting."""
        raise UsageError(self, message)


def check_paths(paths: Sequence[str]) -> None:
    """Refuse paths that do not exist (exit 2); ``-`` (standard input) always exists.

    Raises:
        CommandError: some path does not exist.
    """
    missing = [p for p in paths if p != STDIN and not os.path.exists(p)]
    if missing:
        raise CommandError(f"no such file or directory: {', '.join(missing)}")


def read_stdin(option: str) -> str:
    """Read all of standard input as UTF-8 text for ``option`` (``-`` given as its path).

    Raises:
        CommandError: standard input is not UTF-8 text (exit 1).
    """
    stream = sys.stdin
    data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"{option}: standard input is not UTF-8 text: {exc.reason} at byte {exc.start}",
            EXIT_INVALID,
        ) from None


def stdin_alone(option: str, paths: Sequence[str]) -> bool:
    """Tell whether ``paths`` is ``-`` alone: standard input is read as one source.

    Raises:
        CommandError: ``-`` is given with other paths or twice (exit 2).
    """
    if STDIN not in paths:
        return False
    if len(paths) != 1:
        raise CommandError(f"{option}: '-' reads standard input; give it alone, and once")
    return True


def load_policies(paths: Sequence[str], *, option: str, skip_unknown: bool = False) -> Any:
    """Load policy files and directories, or standard input for ``-``.

    Returns:
        The :class:`~fqdnpolicy.model.ResourceSet`.

    Raises:
        CommandError: a path does not exist, or ``-`` is not alone (exit 2).
        InvalidPolicy: the policies are not valid (exit 1).
    """
    from fqdnpolicy.loader import load, loads

    if stdin_alone(option, paths):
        return loads(read_stdin(option), filename="<stdin>", skip_unknown=skip_unknown)
    check_paths(paths)
    return load(*paths, skip_unknown=skip_unknown)
