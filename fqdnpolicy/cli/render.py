"""``fqdnpolicy render`` and ``fqdnpolicy remove``: a backend's rules for the state."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any, TextIO

import attrs

from fqdnpolicy.cli.common import EXIT_INVALID, EXIT_OK, CommandError
from fqdnpolicy.cli.state import add_state_options, load_state
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.progress import Status

__all__ = ["add_remove", "add_render", "cmd_remove", "cmd_render", "sorted_members"]


def _backend(name: str) -> Any:
    from fqdnpolicy import backends

    try:
        return backends.get(name)
    except InvalidPolicy as exc:
        raise CommandError(str(exc.problem)) from None


def _member_key(member: str) -> tuple[int, int, int, str]:
    """Sort key of a set member: IPv4 before IPv6, by address then prefix length."""
    try:
        net = ipaddress.ip_network(member, strict=False)
    except ValueError:  # one the backend will skip with a warning; still a fixed place
        return (7, 0, 0, member)
    return (net.version, int(net.network_address), net.prefixlen, member)


def sorted_members(datapath: Any) -> Any:
    """Return ``datapath`` with every set's members in address order.

    The engine keeps members in the order DNS answers and pods arrived; sorting them makes a
    rendering depend on the inputs' content only, not on the order of files, records or pods.
    """
    return attrs.evolve(
        datapath,
        sets=tuple(
            attrs.evolve(
                s, members=dict(sorted(s.members.items(), key=lambda m: _member_key(m[0])))
            )
            for s in datapath.sets
        ),
    )


def cmd_render(args: argparse.Namespace, out: TextIO) -> int:
    """Render the state for a backend; optionally check it or apply it in a namespace."""
    from fqdnpolicy import backends
    from fqdnpolicy.engine import PolicyEngine

    if args.netns is not None and not args.apply:
        raise CommandError("--netns names where --apply installs: give --apply too")
    backend = _backend(args.backend)
    state = load_state(args)
    status = Status()
    with status.step("building the engine"):
        engine = PolicyEngine(state.resources, state.cluster, state.cache)
    with status.step(f"rendering for {args.backend}"):
        datapath = sorted_members(engine.datapath())
        render = backend.render_structured if args.format == "json" else backend.render
        rendering = render(datapath, now=state.cache.clock())
    if args.format == "json":
        json.dump(rendering.data, out, indent=2)
        out.write("\n")
    else:
        out.write(rendering.text)
    for problem in rendering.skipped:
        print(f"warning: {args.backend}: skipped: {problem}", file=sys.stderr)
    try:
        if args.check:
            backend.check(rendering)
            print(f"{args.backend}: the kernel accepts the ruleset", file=sys.stderr)
        if args.apply:
            if not datapath.endpoints and not datapath.sets and not args.allow_empty:
                raise CommandError(
                    "refusing to apply an empty state: it would remove every rule installed; "
                    "give --allow-empty to mean it (or 'fqdnpolicy remove' to uninstall)",
                    EXIT_INVALID,
                )
            backend.apply(rendering, netns=args.netns)
            where = f" in netns {args.netns}" if args.netns else ""
            print(f"{args.backend}: applied{where}", file=sys.stderr)
    except backends.BackendError as exc:
        raise CommandError(str(exc), EXIT_INVALID) from None
    return EXIT_OK


def cmd_remove(args: argparse.Namespace, out: TextIO) -> int:
    """Delete everything a backend installed (in ``--netns`` when given)."""
    from fqdnpolicy import backends

    backend = _backend(args.backend)
    try:
        backend.remove(netns=args.netns)
    except backends.BackendError as exc:
        raise CommandError(str(exc), EXIT_INVALID) from None
    where = f" in netns {args.netns}" if args.netns else ""
    print(f"{args.backend}: removed{where}", file=sys.stderr)
    return EXIT_OK


def add_render(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``render`` command."""
    render = sub.add_parser(
        "render",
        help="the datapath rules a backend would install",
        description="Render the state for a datapath backend. The output is the same byte "
        "for byte for the same inputs and --at. --check validates it with the kernel's tool in "
        "a scratch namespace; --apply installs it once (in --netns if given). Domain members "
        "are installed with their DNS lifetime and expire in the kernel unless an agent keeps "
        "applying refreshes; the command does not.",
    )
    render.add_argument("--backend", required=True, help="backend name")
    render.add_argument("--format", choices=("text", "json"), default="text")
    render.add_argument("--check", action="store_true", help="validate without applying")
    render.add_argument(
        "--apply",
        action="store_true",
        help="install the rendering once (root); domain members expire with their DNS lifetime",
    )
    render.add_argument("--netns", metavar="NAME", help="network namespace --apply installs in")
    render.add_argument(
        "--allow-empty",
        action="store_true",
        help="let --apply install a state with no endpoint and no set over what is installed",
    )
    add_state_options(render)
    render.set_defaults(func=cmd_render)


def add_remove(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``remove`` command."""
    remove = sub.add_parser(
        "remove",
        help="delete what a backend installed",
        description="Delete everything a backend installed (its nftables table, ...).",
    )
    remove.add_argument("--backend", required=True, help="backend name")
    remove.add_argument("--netns", metavar="NAME", help="network namespace to remove it from")
    remove.set_defaults(func=cmd_remove)
