"""The ``fqdnpolicy`` command.

Subcommands:

* ``validate PATH...`` - load policies strictly and lint them. Exit 0 when valid (warnings
  allowed unless ``--strict``), 1 when invalid, 2 on a usage error (bad option, missing path).
* ``check FLOW...`` - verdicts for flows (``default/backend -> api.github.com:443/tcp``): exit 0
  when every flow is allowed, 1 when one is denied.
* ``explain FLOW`` - the full trace of every tier, policy and rule considered.
* ``render --backend NAME`` - the datapath rules a backend would install (``--check``,
  ``--apply --netns NS``).
* ``bench`` - verdict throughput, compile time, delta latency and memory on a synthetic cluster.
* ``dns ...`` - inspect and fill DNS cache files (see :mod:`fqdnpolicy.dns.cli`).
* ``demo`` - the main job on the built-in example data (no network, no root).

Commands that need state take ``--policies PATH`` and ``--cluster PATH`` (repeatable, files
or directories) and a DNS source, ``--zone FILE`` or ``--cache FILE``.

Exit codes follow the usual convention of linters: 0 good, 1 the input is bad, 2 the command
line is bad.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

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


def _add_state_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies", action="append", default=[], metavar="PATH", help="policy file or dir"
    )
    parser.add_argument(
        "--cluster", action="append", default=[], metavar="PATH", help="pods/namespaces YAML"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--zone", metavar="FILE", help="DNS data from a zone file")
    source.add_argument("--cache", metavar="FILE", help="DNS data from a saved cache file")


def _load_state(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Build (resources, cluster, dns) from the state options; InvalidPolicy on bad input."""
    from fqdnpolicy.cluster import Cluster, load_cluster
    from fqdnpolicy.dns import DNSCache
    from fqdnpolicy.dns.sources import load_zone
    from fqdnpolicy.loader import load
    from fqdnpolicy.model import ResourceSet

    for path in [*args.policies, *args.cluster, *(p for p in (args.zone, args.cache) if p)]:
        if not os.path.exists(path):
            raise FileNotFoundError(path)
    resources = load(*args.policies) if args.policies else ResourceSet()
    cluster = load_cluster(*args.cluster) if args.cluster else Cluster()
    cache = DNSCache()
    if args.zone:
        load_zone(cache, Path(args.zone))
    elif args.cache:
        report = cache.load(args.cache)
        for skipped in getattr(report, "skipped", ()):
            print(f"warning: {args.cache}: {skipped}", file=sys.stderr)
    return resources, cluster, cache


def _with_state(args: argparse.Namespace, out: TextIO, body: Callable[[Any, Any, Any], int]) -> int:
    try:
        resources, cluster, cache = _load_state(args)
        return body(resources, cluster, cache)
    except FileNotFoundError as exc:
        print(f"fqdnpolicy {args.command}: no such file or directory: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidPolicy as exc:
        _print_problems(exc.problems, sys.stderr)
        return EXIT_USAGE


def _flow_rows(engine: Any, cache: Any, flow: Any) -> list[tuple[str, Any]]:
    """(address, verdict) for each destination address of a flow (a name gives several)."""
    from fqdnpolicy.engine import Verdict

    if flow.dst_kind == "name":
        addresses = sorted(cache.ips(flow.dst))
        if not addresses:
            return [("(unresolved)", Verdict("Deny", default="unresolved"))]
    else:
        addresses = [flow.dst]
    return [
        (address, engine.verdict(flow.src, address, flow.protocol, flow.port))
        for address in addresses
    ]


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """Print the verdict of each flow; exit 0 when all are allowed, 1 otherwise."""
    from fqdnpolicy.demo import format_table
    from fqdnpolicy.engine import PolicyEngine
    from fqdnpolicy.flows import parse_flow

    def body(resources: Any, cluster: Any, cache: Any) -> int:
        flows = [parse_flow(text) for text in args.flows]
        engine = PolicyEngine(resources, cluster, cache)
        rows: list[list[str]] = []
        denied = 0
        for flow in flows:
            for address, verdict in _flow_rows(engine, cache, flow):
                denied += not verdict.allowed
                by = (
                    f"{verdict.policy} {verdict.direction}[{verdict.rule_index}]"
                    if verdict.default is None
                    else f"{verdict.direction} {verdict.default}"
                    + (f" ({verdict.tier})" if verdict.tier else "")
                )
                rows.append([str(flow), address, verdict.action, by])
        print(format_table(["flow", "address", "verdict", "decided by"], rows), file=out)
        return EXIT_INVALID if denied else EXIT_OK

    return _with_state(args, out, body)


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    """Print the trace of one flow (each destination address of a name)."""
    from fqdnpolicy.engine import PolicyEngine
    from fqdnpolicy.flows import parse_flow

    def body(resources: Any, cluster: Any, cache: Any) -> int:
        flow = parse_flow(args.flow)
        engine = PolicyEngine(resources, cluster, cache)
        denied = 0
        addresses = [a for a, _ in _flow_rows(engine, cache, flow)]
        for address in addresses:
            if address == "(unresolved)":
                print(f"{flow}: {flow.dst} is not in the DNS cache: no address to judge", file=out)
                return EXIT_INVALID
            trace = engine.explain(flow.src, address, flow.protocol, flow.port)
            denied += not trace.verdict.allowed
            print(trace.render(), file=out)
        return EXIT_INVALID if denied else EXIT_OK

    return _with_state(args, out, body)


def cmd_render(args: argparse.Namespace, out: TextIO) -> int:
    """Render the state for a backend; optionally check it or apply it in a namespace."""
    from fqdnpolicy import backends
    from fqdnpolicy.engine import PolicyEngine

    def body(resources: Any, cluster: Any, cache: Any) -> int:
        backend = backends.get(args.backend)
        engine = PolicyEngine(resources, cluster, cache)
        render = backend.render_structured if args.format == "json" else backend.render
        rendering = render(engine.datapath(), now=cache.clock())
        if args.format == "json":
            json.dump(rendering.data, out, indent=2)
            out.write("\n")
        else:
            out.write(rendering.text)
        try:
            if args.check:
                backend.check(rendering)
                print(f"{args.backend}: the kernel accepts the ruleset", file=sys.stderr)
            if args.apply:
                backend.apply(rendering, netns=args.netns)
                where = f" in netns {args.netns}" if args.netns else ""
                print(f"{args.backend}: applied{where}", file=sys.stderr)
        except backends.BackendError as exc:
            print(f"{args.backend}: {exc}", file=sys.stderr)
            return EXIT_INVALID
        return EXIT_OK

    return _with_state(args, out, body)


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    """Run the synthetic benchmark (see :mod:`fqdnpolicy.bench`)."""
    from fqdnpolicy.bench import run_bench

    return run_bench(
        scales=args.scale,
        seed=args.seed,
        flows=args.flows,
        output=args.output,
        plot=args.plot,
        out=out,
    )


def cmd_dns(args: argparse.Namespace, out: TextIO) -> int:
    """Delegate to :mod:`fqdnpolicy.dns.cli`."""
    from fqdnpolicy.dns import cli as dns_cli

    return dns_cli.run(args, out)


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

    check = sub.add_parser(
        "check",
        help="verdicts for flows (exit 0 all allowed, 1 some denied)",
        description="Judge flows written as SRC -> DST[:PORT][/PROTOCOL]. DST may be an "
        "address, an endpoint namespace/name or a domain name (one verdict per cached address).",
    )
    check.add_argument("flows", nargs="+", metavar="FLOW")
    _add_state_options(check)
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser(
        "explain",
        help="why a flow is allowed or denied: every tier, policy and rule considered",
    )
    explain.add_argument("flow", metavar="FLOW")
    _add_state_options(explain)
    explain.set_defaults(func=cmd_explain)

    render = sub.add_parser(
        "render",
        help="the datapath rules a backend would install",
        description="Render the state for a datapath backend; --check validates it with the "
        "kernel's tool in a scratch namespace, --apply installs it (in --netns if given).",
    )
    render.add_argument("--backend", required=True, help="backend name (see --list-backends)")
    render.add_argument("--format", choices=("text", "json"), default="text")
    render.add_argument("--check", action="store_true", help="validate without applying")
    render.add_argument("--apply", action="store_true", help="apply to the kernel")
    render.add_argument("--netns", metavar="NAME", help="network namespace to apply in")
    _add_state_options(render)
    render.set_defaults(func=cmd_render)

    bench = sub.add_parser(
        "bench",
        help="verdict throughput, compile time, delta latency and memory on a synthetic cluster",
        description="Generate seeded synthetic clusters (1.0 = 1,000 namespaces, 20,000 pods, "
        "10,000 policies, 50,000 domain patterns, 1,000,000 cached entries) and measure them.",
    )
    bench.add_argument(
        "--scale",
        type=float,
        action="append",
        help="workload size as a fraction of the full size (repeatable; default 0.1)",
    )
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument("--flows", type=int, default=200_000, help="verdicts per measurement")
    bench.add_argument("--output", metavar="FILE", help="write the results as JSON")
    bench.add_argument("--plot", metavar="PNG", help="plot throughput and memory (matplotlib)")
    bench.set_defaults(func=cmd_bench)

    demo = sub.add_parser(
        "demo",
        help="the main job on built-in example data",
        description="Load the seed article's policies, lint them, learn their names from a "
        "bundled zone file, and show what each policy's domains resolve to, the verdicts of "
        "the article's test flows beside its claims, one explained denial, and the rules each "
        "installed backend would program.",
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
