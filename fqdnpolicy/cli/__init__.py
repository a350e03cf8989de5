"""The ``fqdnpolicy`` command.

Subcommands, one module each family:

* ``validate PATH...`` (:mod:`fqdnpolicy.cli.validate`) - load policies strictly and lint them.
* ``check FLOW...`` and ``explain FLOW`` (:mod:`fqdnpolicy.cli.judge`) - verdicts for flows
  (``default/backend -> api.github.com:443/tcp``), and the trace of every tier, policy and
  rule considered.
* ``render --backend NAME`` and ``remove --backend NAME`` (:mod:`fqdnpolicy.cli.render`) - the
  datapath rules a backend would install (``--check``, ``--apply --netns NS``), and removing
  them.
* ``map``, ``diff OLD NEW`` and ``replay FLOWS`` (:mod:`fqdnpolicy.cli.whole`) - the exact
  connectivity map, what a policy change opens and closes, recorded flows judged in bulk.
* ``bench``, ``dns ...`` and ``demo`` (:mod:`fqdnpolicy.cli.tools`).

Commands that need state take ``--policies PATH`` and ``--cluster PATH`` (repeatable, files
or directories), a DNS source, ``--zone FILE`` or ``--cache FILE``, and ``--at TIME``
(:mod:`fqdnpolicy.cli.state`).

Exit codes, the same for the same failure in every command: 0 good, 1 the input is invalid or
a flow is denied or unresolved, 2 the command line is wrong (a bad option or flow, a missing
file), 141 the reader closed the output early.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO, cast

from fqdnpolicy.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_USAGE,
    CommandError,
    Parser,
    UsageError,
    invalid_input,
    report_error,
)
from fqdnpolicy.errors import InvalidPolicy

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_PIPE", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``fqdnpolicy`` command."""
    from fqdnpolicy import __version__
    from fqdnpolicy.cli.agent import add_agent
    from fqdnpolicy.cli.judge import add_check, add_explain
    from fqdnpolicy.cli.render import add_remove, add_render
    from fqdnpolicy.cli.tools import add_bench, add_demo, add_dns
    from fqdnpolicy.cli.validate import add_validate
    from fqdnpolicy.cli.whole import add_diff, add_map, add_replay

    parser = Parser(
        prog="fqdnpolicy",
        description="Decide and enforce Kubernetes egress policy by domain name.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # The subparsers are Parsers too (argparse makes them of the parent's class), typed as
    # plain ArgumentParsers for the add_* functions.
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    add_validate(sub)
    add_dns(sub)
    add_check(sub)
    add_explain(sub)
    add_render(sub)
    add_remove(sub)
    add_map(sub)
    add_diff(sub)
    add_replay(sub)
    add_bench(sub)
    add_demo(sub)
    add_agent(sub)
    return parser


def _quiet_stdout(stream: TextIO) -> None:
    """After a closed pipe, point stdout at /dev/null so the exit flush cannot fail again."""
    if stream is not sys.stdout:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor behind stdout (an embedding caller)
        pass


def _asks_for_json(words: Sequence[str]) -> bool:
    """Tell whether a command line that does not parse still asked for ``--format json``."""
    return any(
        w == "--format=json" or (w == "--format" and nxt == "json")
        for w, nxt in zip(words, [*words[1:], ""], strict=True)
    )


def _usage_error(words: Sequence[str], error: UsageError, stream: TextIO) -> int:
    """Report a command line that does not parse: as argparse does, or as JSON if asked."""
    command = next((w for w in words if not w.startswith("-")), "")
    if _asks_for_json(words):
        args = argparse.Namespace(command=command, format="json")
        return report_error(args, CommandError(error.message, EXIT_USAGE), stream)
    error.parser.print_usage(sys.stderr)
    print(f"{error.parser.prog}: error: {error.message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``fqdnpolicy`` command; returns the exit code."""
    stream = out if out is not None else sys.stdout
    try:
        parser = build_parser()
        words = list(sys.argv[1:] if argv is None else argv)
        try:
            args = parser.parse_args(words)
        except SystemExit as exc:  # --help and --version exit 0
            return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
        except UsageError as exc:
            return _usage_error(words, exc, stream)
        try:
            code: int = args.func(args, stream)
        except CommandError as exc:
            code = report_error(args, exc, stream)
        except InvalidPolicy as exc:
            code = report_error(args, invalid_input(exc), stream)
        stream.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout(stream)
        return EXIT_PIPE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
