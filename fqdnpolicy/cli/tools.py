"""``fqdnpolicy bench``, ``dns`` and ``demo``."""

from __future__ import annotations

import argparse
import math
import os
from typing import TextIO

from fqdnpolicy.cli.common import CommandError

__all__ = ["MAX_SCALE", "add_bench", "add_demo", "add_dns"]

#: Largest ``--scale``: ten times the full workload already needs a large machine's memory.
MAX_SCALE = 10.0


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= MAX_SCALE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a workload size: write a number above 0 and at most {MAX_SCALE:g}"
        )
    return value


def _flows(text: str) -> int:
    try:
        value = int(text) if len(text) <= 12 else -1
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 100_000_000:
        raise argparse.ArgumentTypeError(f"{text!r}: write a whole number from 1 to 100,000,000")
    return value


def check_writable(path: str, option: str) -> None:
    """Refuse an output path whose directory does not exist or cannot be written.

    Checked before a long run, so that its results are not lost at the end.

    Raises:
        CommandError: the directory is missing, not a directory, or not writable, or the
            path is a directory.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CommandError(f"{option} {path}: is a directory; name a file")
    if not os.path.isdir(folder):
        raise CommandError(f"{option} {path}: no such directory: {folder}")
    if not os.access(folder, os.W_OK):
        raise CommandError(f"{option} {path}: cannot write in {folder}")


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    """Run the synthetic benchmark (see :mod:`fqdnpolicy.bench`)."""
    from fqdnpolicy.bench import run_bench

    if args.output:
        check_writable(args.output, "--output")
    if args.plot:
        check_writable(args.plot, "--plot")
    if args.backend is not None:
        return _bench_backend(args, out)
    return run_bench(
        scales=args.scale,
        seed=args.seed,
        flows=args.flows,
        output=args.output,
        plot=args.plot,
        out=out,
    )


def _bench_backend(args: argparse.Namespace, out: TextIO) -> int:
    from fqdnpolicy.backends import BackendError
    from fqdnpolicy.bench_backend import run_backend_bench

    try:
        return run_backend_bench(
            args.backend,
            addresses=args.addresses,
            repeat=args.repeat,
            scale=(args.scale or [0.1])[0],
            flows=args.flows,
            out=out,
        )
    except BackendError as exc:
        raise CommandError(str(exc)) from None


def cmd_dns(args: argparse.Namespace, out: TextIO) -> int:
    """Delegate to :mod:`fqdnpolicy.dns.cli`."""
    from fqdnpolicy.dns import cli as dns_cli

    return dns_cli.run(args, out)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """Run the built-in example (see :mod:`fqdnpolicy.demo`)."""
    from fqdnpolicy.demo import run_demo

    return run_demo(out)


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench`` command."""
    bench = sub.add_parser(
        "bench",
        help="verdict throughput, compile time, delta latency and memory on a synthetic cluster",
        description="Generate seeded synthetic clusters (1.0 = 1,000 namespaces, 20,000 pods, "
        "10,000 policies, 50,000 domain patterns, 1,000,000 cached entries) and measure them.",
    )
    bench.add_argument(
        "--scale",
        type=_scale,
        action="append",
        help="workload size as a fraction of the full size, above 0 and at most "
        f"{MAX_SCALE:g} (repeatable; default 0.1)",
    )
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument(
        "--flows", type=_flows, default=200_000, help="verdicts per measurement (at least 1)"
    )
    bench.add_argument("--output", metavar="FILE", help="write the results as JSON")
    bench.add_argument("--plot", metavar="PNG", help="plot throughput and memory (matplotlib)")
    bench.add_argument(
        "--backend",
        metavar="NAME",
        help="measure a backend's own kernel verdicts (ebpf: BPF_PROG_TEST_RUN) beside the engine",
    )
    bench.add_argument(
        "--addresses", type=_flows, default=1_000_000, help="set members (with --backend)"
    )
    bench.add_argument(
        "--repeat", type=_flows, default=1_000_000, help="test runs per packet (with --backend)"
    )
    bench.set_defaults(func=cmd_bench)


def add_dns(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dns`` command family (see :mod:`fqdnpolicy.dns.cli`)."""
    from fqdnpolicy.dns import cli as dns_cli

    dns = sub.add_parser(
        "dns",
        help="inspect and fill DNS cache files",
        description="Inspect a saved DNS cache, resolve a policy set's names into one, and "
        "show which policies' patterns each cached name matches.",
    )
    dns_cli.add_arguments(dns)
    dns.set_defaults(func=cmd_dns)


def add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command."""
    demo = sub.add_parser(
        "demo",
        help="the main job on built-in example data",
        description="Load the seed article's policies, lint them, learn their names from a "
        "bundled zone file, and show what each policy's domains resolve to, the verdicts of "
        "the article's test flows beside its claims, one explained denial, and the rules each "
        "installed backend would program.",
    )
    demo.set_defaults(func=cmd_demo)
