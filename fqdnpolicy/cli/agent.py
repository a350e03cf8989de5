"""``fqdnpolicy agent``: run the node agent until SIGTERM or SIGINT (SIGHUP reloads)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any, TextIO

from fqdnpolicy.cli.common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, CommandError, check_paths

__all__ = ["add_agent", "cmd_agent"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def _logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("fqdnpolicy")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def add_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``agent`` subcommand."""
    p = sub.add_parser("agent", help="enforce continuously: watch files, read DNS, keep rules")
    p.add_argument("--config", metavar="FILE", help="YAML file of these options (same names)")
    p.add_argument("--policies", action="append", metavar="PATH", help="policy file or directory")
    p.add_argument("--cluster", action="append", metavar="PATH", help="cluster file or directory")
    p.add_argument("--backend", metavar="NAME", help="installed backend (default nftables)")
    p.add_argument("--netns", metavar="NAME", help="work inside this network namespace")
    p.add_argument("--snoop", nargs="+", metavar="IFACE", help="interfaces to read DNS on")
    p.add_argument(
        "--snoop-endpoints",
        action="store_true",
        default=None,
        help="also read DNS on every endpoint's host-side interface",
    )
    p.add_argument(
        "--hold-dns",
        action="store_true",
        default=None,
        help="hold DNS responses until their addresses are programmed",
    )
    p.add_argument("--hold-fail", choices=["open", "closed"], help="at the bound (default open)")
    p.add_argument("--hold-bound", type=float, metavar="SECONDS", help="default 1")
    p.add_argument(
        "--trusted-dns",
        action="append",
        metavar="ADDR[:PORT]",
        help="DNS server to learn from (default: kube-dns, NodeLocal DNSCache)",
    )
    p.add_argument("--cache", metavar="FILE", help="DNS cache file, loaded and saved")
    p.add_argument("--cache-save-interval", type=float, metavar="SECONDS")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve /metrics /healthz /readyz")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--watch-interval", type=float, metavar="SECONDS")
    p.add_argument("--reconcile-interval", type=float, metavar="SECONDS")
    p.add_argument("--cni-socket", metavar="PATH", help="unix socket for fqdnpolicy-cni")
    p.add_argument(
        "--state-dir", metavar="DIR", help="keeps CNI registrations (default: the socket's dir)"
    )
    p.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace, out: TextIO) -> int:
    """Run the agent; exit 0 after SIGTERM/SIGINT, 2 on bad options."""
    from fqdnpolicy.agent import Agent, AgentConfig, ConfigError
    from fqdnpolicy.dns.hold import HoldError

    names = [
        "policies", "cluster", "backend", "netns", "snoop", "snoop_endpoints", "hold_dns",
        "hold_fail", "hold_bound", "trusted_dns", "cache", "cache_save_interval", "metrics",
        "log_format", "watch_interval", "reconcile_interval", "cni_socket", "state_dir",
    ]  # fmt: skip
    try:
        values: dict[str, Any] = AgentConfig.from_file(args.config) if args.config else {}
        values.update({n: getattr(args, n) for n in names if getattr(args, n) is not None})
        config = AgentConfig.build(values)
    except ConfigError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    check_paths([*config.policies, *config.cluster])
    _logging(config.log_format)
    try:
        agent = Agent(config)
    except (HoldError, OSError) as exc:
        raise CommandError(f"the agent cannot start: {exc}", EXIT_INVALID) from None
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    signal.signal(signal.SIGHUP, lambda *_: agent.reload())
    logging.getLogger("fqdnpolicy").info("agent running")
    agent.run()
    logging.getLogger("fqdnpolicy").info("agent stopped")
    return EXIT_OK
