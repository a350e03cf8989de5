"""The ``fqdnpolicy`` command.

Subcommands:

* ``validate PATH...`` - load policies strictly and lint them. Exit 0 when valid (warnings
  allowed unless ``--strict``), 1 when invalid, 2 on a usage error (bad option, missing path).
* ``dns ...`` - inspect and fill DNS cache files (see :mod:`fqdnpolicy.dns.cli`).
* ``demo`` - the main job on the built-in example data (no network, no root).

Exit codes follow the usual convention of linters: 0 good, 1 the input is bad, 2 the command
line is bad.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from fqdnpolicy.errors import InvalidPolicy, Problem

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def _print_problems(problems: Sequence[Problem], out: TextIO) -> None:
    for problem in problems:
        print(problem, file=out)


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    """Load ``args.paths``, print every error and warning, return the exit code."""
    from fqdnpolicy.lint import lint
    from fqdnpolicy.loader import load

    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        for path in missing:
            print(f"fqdnpolicy validate: no such file or directory: {path}", file=sys.stderr)
        return EXIT_USAGE
    errors: tuple[Problem, ...] = ()
    warnings: list[Problem] = []
    count = 0
    try:
        resources = load(*args.paths)
    except InvalidPolicy as exc:
        errors = exc.problems
    else:
        count = len(resources)
        warnings = lint(resources)
    if args.format == "json":
        report = {
            "valid": not errors,
            "resources": count,
            "errors": [p.as_dict() for p in errors],
            "warnings": [p.as_dict() for p in warnings],
        }
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        _print_problems(errors, out)
        _print_problems(warnings, out)
        if errors:
            print(f"invalid: {len(errors)} error(s)", file=out)
        else:
            print(f"valid: {count} resource(s), {len(warnings)} warning(s)", file=out)
    if errors:
        return EXIT_INVALID
    if warnings and args.strict:
        return EXIT_INVALID
    return EXIT_OK


def cmd_dns(args: argparse.Namespace, out: TextIO) -> int:
    """Delegate to :mod:`fqdnpolicy.dns.cli`."""
    from fqdnpolicy.dns import cli as dns_cli

    return dns_cli.run(args)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """Run the built-in example (see :mod:`fqdnpolicy.demo`)."""
    from fqdnpolicy.demo import run_demo

    return run_demo(out)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``fqdnpolicy`` command."""
    parser = argparse.ArgumentParser(
        prog="fqdnpolicy",
        description="Decide and enforce Kubernetes egress policy by domain name.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = sub.add_parser(
        "validate",
        help="load policies strictly and lint them",
        description="Load Calico/Kubernetes policy files strictly and lint them. "
        "Exit 0 valid, 1 invalid (or warnings with --strict), 2 usage error.",
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors (exit 1)")
    validate.set_defaults(func=cmd_validate)

    dns = sub.add_parser(
        "dns",
        help="inspect and fill DNS cache files",
        description="Inspect a saved DNS cache, resolve a policy set's names into one, and "
        "show which policies' patterns each cached name matches.",
    )
    from fqdnpolicy.dns import cli as dns_cli

    dns_cli.add_arguments(dns)
    dns.set_defaults(func=cmd_dns)

    demo = sub.add_parser(
        "demo",
        help="the main job on built-in example data",
        description="Load the seed article's policies, lint them, learn their names from a "
        "bundled zone file and show what each policy's domains resolve to.",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``fqdnpolicy`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    stream = out if out is not None else sys.stdout
    result: int = args.func(args, stream)
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
