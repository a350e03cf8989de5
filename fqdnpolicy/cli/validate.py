"""``fqdnpolicy validate``: load policies strictly and lint them."""

from __future__ import annotations

import argparse
import json
import os
from typing import TextIO

from fqdnpolicy.cli.common import EXIT_INVALID, EXIT_OK, CommandError, print_problems
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = ["add_validate", "cmd_validate"]


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    """Load ``args.paths``, print every error and warning, return the exit code."""
    from fqdnpolicy.lint import lint
    from fqdnpolicy.loader import load

    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        raise CommandError(f"no such file or directory: {', '.join(missing)}")
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
        print_problems(errors, out)
        print_problems(warnings, out)
        if errors:
            print(f"invalid: {len(errors)} error(s)", file=out)
        else:
            print(f"valid: {count} resource(s), {len(warnings)} warning(s)", file=out)
    if errors:
        return EXIT_INVALID
    if warnings and args.strict:
        return EXIT_INVALID
    return EXIT_OK


def add_validate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``validate`` command."""
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
