"""``fqdnpolicy map``, ``diff`` and ``replay``: whole-cluster questions.

* ``map``: every connection allowed between pods and with the outside, minimised.
* ``diff OLD NEW``: what going from policies OLD to NEW opens and closes, each change with the
  rule responsible; exit 0 when both allow the same, 1 when not (``--contains``: 0 when NEW
  allows at least what OLD did). A CI check on a pull request.
* ``replay FLOWS``: recorded flows judged in bulk; counts by verdict and deciding rule, and
  with ``--against``, the flows another policy set judges differently.

See :mod:`fqdnpolicy.connectivity`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from typing import TextIO

from fqdnpolicy.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    CommandError,
    check_paths,
    load_policies,
    read_stdin,
)
from fqdnpolicy.cli.state import add_state_options, load_state
from fqdnpolicy.progress import Status

__all__ = ["add_diff", "add_map", "add_replay", "cmd_diff", "cmd_map", "cmd_replay"]

_FORMATS = ("txt", "csv", "md", "json", "dot")
_GROUPS = ("pod", "workload", "namespace")


def _write(args: argparse.Namespace, text: str, out: TextIO) -> None:
    """Print ``text``, or write it to ``--output`` (rendered by Graphviz for an image)."""
    path = getattr(args, "output", None)
    if not path:
        out.write(text)
        return
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if args.format == "dot" and suffix in ("svg", "png", "pdf"):
        dot = shutil.which("dot")
        if dot is None:
            raise CommandError(
                f"--output {path}: Graphviz's dot is not installed; write a .dot file instead "
                "(or install graphviz)"
            )
        done = subprocess.run(
            [dot, f"-T{suffix}", "-o", path], input=text.encode(), capture_output=True, check=False
        )
        if done.returncode != 0:
            raise CommandError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
        return
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _add_output(parser: argparse.ArgumentParser, formats: tuple[str, ...] = _FORMATS) -> None:
    parser.add_argument("--format", choices=formats, default="txt")
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write there instead of standard output; with --format dot and a .svg, .png or "
        ".pdf name, rendered by Graphviz",
    )


def cmd_map(args: argparse.Namespace, out: TextIO) -> int:
    """Print the connectivity map."""
    from fqdnpolicy.connectivity import connectivity
    from fqdnpolicy.connectivity.render import render_map
    from fqdnpolicy.engine import PolicyEngine

    state = load_state(args)
    status = Status()
    with status.step("building the engine"):
        engine = PolicyEngine(state.resources, state.cluster, state.cache)
    with status.step("computing the map"):
        cmap = connectivity(engine, namespace=args.namespace, selector=args.selector)
    _write(args, render_map(cmap, args.format, args.group_by), out)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    """Print what NEW opens and closes; exit 0 when equal (``--contains``: NEW >= OLD)."""
    from fqdnpolicy.connectivity.diff import diff
    from fqdnpolicy.connectivity.render import render_diff

    if args.policies:
        raise CommandError("diff takes the two policy sets as OLD and NEW, not --policies")
    state = load_state(args)
    status = Status()
    with status.step("loading the new policies"):
        new = load_policies([args.new], option="NEW", skip_unknown=args.skip_unknown)
    with status.step("loading the old policies"):
        old = load_policies(args.old, option="OLD", skip_unknown=args.skip_unknown)
    with status.step("comparing"):
        result = diff(old, new, state.cluster, state.cache)
    if args.contains:
        from fqdnpolicy.connectivity.diff import MapDiff

        result = MapDiff(
            tuple(r for r in result.rows if r.change == "removed"), result.peers, result.families
        )
    _write(args, render_diff(result, args.format, args.group_by), out)
    return EXIT_OK if result.equal else EXIT_INVALID


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    """Judge recorded flows; print counts (and differences with ``--against``)."""
    from fqdnpolicy.connectivity.render import render_replay
    from fqdnpolicy.connectivity.replay import read_flows, replay
    from fqdnpolicy.engine import PolicyEngine

    state = load_state(args)
    status = Status()
    with status.step("reading flows"):
        if args.flows == "-":
            text = read_stdin("FLOWS")
        else:
            check_paths([args.flows])
            with open(args.flows, encoding="utf-8") as handle:
                text = handle.read()
        form = args.flows_format
        if form is None and args.flows.endswith((".jsonl", ".json", ".ndjson")):
            form = "jsonl"
        flows = read_flows(text, form)
    with status.step("building the engine"):
        engine = PolicyEngine(state.resources, state.cluster, state.cache)
    against = None
    if args.against:
        with status.step("building the engine of --against"):
            other = load_policies(args.against, option="--against", skip_unknown=args.skip_unknown)
            against = PolicyEngine(other, state.cluster, state.cache)
    with status.step("judging"):
        result = replay(engine, flows, against)
    _write(args, render_replay(result, args.format, None if args.all else 50), out)
    return EXIT_OK


def add_map(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``map`` command."""
    parser = sub.add_parser(
        "map",
        help="every connection allowed between pods and with the outside (exact, minimised)",
        description="The exact connectivity map: for every pair of pods, and between pods and "
        "the outside (each set of addresses the policies tell apart), the allowed protocols, "
        "ports and ICMP types, pairs with equal connections grouped.",
    )
    add_state_options(parser)
    _add_output(parser)
    parser.add_argument("--group-by", choices=_GROUPS, default="pod")
    parser.add_argument("--namespace", metavar="NS", help="only pairs with a pod of NS")
    parser.add_argument(
        "--selector", metavar="SEL", help="only pairs with a pod these labels select (Calico)"
    )
    parser.set_defaults(func=cmd_map)


def add_diff(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``diff`` command."""
    parser = sub.add_parser(
        "diff",
        help="what NEW policies open and close against OLD (exit 0 equal, 1 different)",
        description="Compare two policy sets over the same cluster and DNS source: every "
        "connection NEW allows that OLD does not (+) and the reverse (-), grouped, each with "
        "the rule that now decides it. Exit 0 when they allow the same, 1 when not.",
    )
    parser.add_argument("old", nargs="+", metavar="OLD", help="old policy file or directory")
    parser.add_argument("new", metavar="NEW", help="new policy file or directory")
    add_state_options(parser)
    _add_output(parser)
    parser.add_argument("--group-by", choices=_GROUPS, default="pod")
    parser.add_argument(
        "--contains",
        action="store_true",
        help="only ask whether NEW allows at least what OLD did: list what it closes; exit 0 "
        "when nothing",
    )
    parser.set_defaults(func=cmd_diff)


def add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``replay`` command."""
    parser = sub.add_parser(
        "replay",
        help="judge recorded flows (CSV or JSON lines): counts by verdict and deciding rule",
        description="Judge recorded flows in bulk. FLOWS is CSV with a header "
        "(src,dst,protocol,port[,time]) or JSON lines with those keys; '-' reads standard "
        "input. With --against, list the flows the other policy set judges differently.",
    )
    parser.add_argument("flows", metavar="FLOWS")
    add_state_options(parser)
    _add_output(parser, ("txt", "csv", "md", "json"))
    parser.add_argument("--flows-format", choices=("csv", "jsonl"), help="default: guessed")
    parser.add_argument(
        "--against", action="append", default=[], metavar="PATH", help="other policies"
    )
    parser.add_argument("--all", action="store_true", help="list every differing flow in text")
    parser.set_defaults(func=cmd_replay)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run as: fqdnpolicy map|diff|replay")
