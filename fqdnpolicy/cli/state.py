"""The state options of ``check``, ``explain`` and ``render``, and loading them.

The state is policies, cluster and a DNS source. The command line runs once, so every command
reads the clock once: timeouts and expiries all come from that reading, and ``--at`` sets it.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from fqdnpolicy.cli.common import (
    STDIN,
    CommandError,
    check_paths,
    load_policies,
    read_stdin,
    stdin_alone,
)
from fqdnpolicy.progress import Status

__all__ = ["State", "add_state_options", "load_state", "parse_time"]


@attrs.frozen
class State:
    """What the state options loaded.

    Attributes:
        resources: The policies (a :class:`~fqdnpolicy.model.ResourceSet`).
        cluster: The :class:`~fqdnpolicy.cluster.Cluster`.
        cache: The :class:`~fqdnpolicy.dns.DNSCache`, its clocks stopped at one reading.
        notes: What the user should know about the DNS source (an ignored or damaged cache
            file, expired entries), one line each.
    """

    resources: Any
    cluster: Any
    cache: Any
    notes: tuple[str, ...] = ()


def parse_time(text: str) -> float:
    """Read ``--at``: seconds since the Unix epoch, or ISO 8601 (``2026-12-04T10:00:00Z``).

    Raises:
        argparse.ArgumentTypeError: neither.
    """
    try:
        value = float(text) if len(text) <= 32 else float("nan")
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a time: {text!r}; write seconds since 1970 or ISO 8601 such as "
                "2026-12-04T10:00:00Z"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not 0 <= value < 253402300800:  # NaN fails too; the bound is the year 9999
        raise argparse.ArgumentTypeError(f"not a time: {text!r}")
    return value


def add_state_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--policies``, ``--cluster``, ``--zone``/``--cache`` and ``--at``."""
    parser.add_argument(
        "--policies",
        action="append",
        default=[],
        metavar="PATH",
        help="policy file or directory (repeatable); '-' reads standard input",
    )
    parser.add_argument(
        "--cluster",
        action="append",
        default=[],
        metavar="PATH",
        help="pods, namespaces and service accounts: the output of "
        "'kubectl get pods,namespaces,serviceaccounts -A -o yaml' (file or directory, "
        "repeatable); '-' reads standard input",
    )
    parser.add_argument(
        "--skip-unknown",
        action="store_true",
        help="ignore documents under --policies that are not policy resources (Deployments...)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--zone", metavar="FILE", help="DNS data from a zone file")
    source.add_argument("--cache", metavar="FILE", help="DNS data from a saved cache file")
    parser.add_argument(
        "--at",
        type=parse_time,
        metavar="TIME",
        help="judge at this wall-clock time (seconds since 1970 or ISO 8601), so that a saved "
        "--cache gives the same answers later (default: now)",
    )


def load_state(args: argparse.Namespace) -> State:
    """Build the state from the options.

    Raises:
        CommandError: a file does not exist (exit 2).
        InvalidPolicy: a file is not valid (exit 1).
    """
    from fqdnpolicy.cluster import Cluster, load_cluster, loads_cluster
    from fqdnpolicy.dns import DNSCache
    from fqdnpolicy.dns.sources import load_zone
    from fqdnpolicy.model import ResourceSet

    if STDIN in args.policies and STDIN in args.cluster:
        raise CommandError("standard input ('-') can be read once: for --policies or --cluster")
    check_paths([*args.cluster, *(p for p in (args.zone, args.cache) if p)])
    skip = args.skip_unknown
    status = Status()
    with status.step("loading policies"):
        resources = (
            load_policies(args.policies, option="--policies", skip_unknown=skip)
            if args.policies
            else ResourceSet()
        )
    with status.step("loading the cluster"):
        if stdin_alone("--cluster", args.cluster):
            cluster = loads_cluster(read_stdin("--cluster"), filename="<stdin>")
        else:
            cluster = load_cluster(*args.cluster) if args.cluster else Cluster()
    wall = args.at if args.at is not None else time.time()
    # Stopped clocks: one reading for the whole command, so expiries, timeouts and verdicts
    # agree with each other and a rendering repeats byte for byte under the same --at.
    cache = DNSCache(clock=lambda: wall, wall_clock=lambda: wall)
    notes: list[str] = []
    with status.step("loading DNS names"):
        if args.zone:
            load_zone(cache, Path(args.zone))
        elif args.cache:
            notes = _load_cache(cache, args.cache)
    return State(resources, cluster, cache, tuple(notes))


def _load_cache(cache: Any, path: str) -> list[str]:
    report = cache.load(path)
    notes: list[str] = []
    if report.ignored is not None:
        notes.append(f"{path}: ignored: {report.ignored}")
    for skipped in report.skipped:
        notes.append(f"{path}:{skipped.line}: skipped: {skipped.reason}")
    if report.expired:
        notes.append(
            f"{path}: {report.expired} entr{'y' if report.expired == 1 else 'ies'} had expired "
            "(use --at to judge at the time the cache was saved)"
        )
    if report.ignored is None and not report.restored:
        notes.append(f"{path}: no entry left: every name is unresolved")
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return notes
