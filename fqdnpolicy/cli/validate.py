"""``fqdnpolicy validate``: load policies strictly and lint them."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from fqdnpolicy.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    STDIN,
    load_policies,
    print_problems,
    read_stdin,
    stdin_alone,
)
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.progress import Status

__all__ = ["add_validate", "cmd_validate"]


def _empty_paths(paths: Sequence[str], resources: Any) -> tuple[Problem, ...]:
    """A problem for each path that gave no resource: validating nothing is not a success."""
    files = {resource.source.file for resource in resources}
    problems = []
    for raw in paths:
        name = "<stdin>" if raw == STDIN else str(Path(raw))
        inside = name.rstrip(os.sep) + os.sep
        if not any(f == name or f.startswith(inside) for f in files):
            what = "directory" if os.path.isdir(raw) else "file" if raw != STDIN else "input"
            problems.append(
                Problem(
                    f"no policy resources in this {what}",
                    file=name,
                    hint="give files holding projectcalico.org/v3 or networking.k8s.io/v1 "
                    "policy resources (*.yaml, *.yml, *.json)",
                    code="no-resources",
                )
            )
    return tuple(problems)


def _texts(warnings: Sequence[Problem], stdin: str | None) -> dict[str, str]:
    """The text of each file a warning names, to find its fields in (unreadable: left out)."""
    texts = {} if stdin is None else {"<stdin>": stdin}
    for name in sorted({w.file for w in warnings if w.file and w.file not in texts}):
        try:
            texts[name] = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):  # changed since it was loaded: keep the lines
            continue
    return texts


def _warning_text(warning: Problem) -> str:
    """A warning as ``file:line:column: resource: path: warning[code]: message; hint``."""
    where = [str(x) for x in (warning.file, warning.line, warning.column) if x is not None]
    parts = [":".join(where)] if where else []
    parts += [x for x in (warning.resource, warning.path) if x]
    label = f"warning[{warning.code}]" if warning.code else "warning"
    hint = f"; {warning.hint}" if warning.hint else ""
    return ": ".join([*parts, f"{label}: {warning.message}{hint}"])


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    """Load ``args.paths``, print every error and warning, return the exit code."""
    from fqdnpolicy.cli.locate import at_fields
    from fqdnpolicy.lint import lint
    from fqdnpolicy.loader import loads

    errors: tuple[Problem, ...] = ()
    warnings: list[Problem] = []
    count = 0
    ignored = {code.strip() for codes in args.ignore for code in codes.split(",")}
    stdin = read_stdin("validate") if stdin_alone("validate", args.paths) else None
    status = Status()
    try:
        with status.step("loading policies"):
            if stdin is not None:
                resources = loads(stdin, filename="<stdin>", skip_unknown=args.skip_unknown)
            else:
                resources = load_policies(
                    args.paths, option="validate", skip_unknown=args.skip_unknown
                )
    except InvalidPolicy as exc:
        errors = exc.problems
    else:
        count = len(resources)
        errors = _empty_paths(args.paths, resources)
        with status.step("linting"):
            found = [w for w in lint(resources) if w.code not in ignored] if not errors else []
            warnings = at_fields(found, _texts(found, stdin))
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
        for warning in warnings:
            print(_warning_text(warning), file=out)
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
    validate.add_argument(
        "paths", nargs="+", metavar="PATH", help="files or directories; '-' reads standard input"
    )
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors (exit 1)")
    validate.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="CODE",
        help="drop warnings with this code, also under --strict (repeatable, or comma-separated)",
    )
    validate.add_argument(
        "--skip-unknown",
        action="store_true",
        help="ignore documents that are not policy resources (Deployments, Services...)",
    )
    validate.set_defaults(func=cmd_validate)
