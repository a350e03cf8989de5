"""The ``fqdnpolicy dns`` command: inspect and fill DNS cache files.

* ``show CACHE`` - what a saved cache holds: each name, the IPs it leads to (through CNAME
  chains) with the seconds left, and its CNAME targets.
* ``resolve PATH... --nameserver NS --out CACHE`` - ask nameservers for every exact name the
  policies mention (or read a zone file with ``--zone``) and save the answers to a cache file,
  merged with what the file already holds. Wildcards cannot be asked for; they are listed.
* ``match CACHE PATH...`` - for each cached name, the policy patterns that match it (chain
  members included) and where they are written.

Exit codes: 0 good; 1 bad input (invalid policies, a cache file that was ignored or had
damaged lines, no answer at all); 2 usage error (a missing file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from fqdnpolicy.dns.cache import DNSCache
from fqdnpolicy.dns.persist import LoadReport
from fqdnpolicy.errors import InvalidPolicy

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
_NO_BOUND = 10**9  # inspecting a file should show all of it, not apply an agent's caps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``show``, ``resolve`` and ``match`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="dns_command", required=True, metavar="DNS_COMMAND")

    show = sub.add_parser(
        "show",
        help="show what a saved DNS cache holds",
        description="Show each cached name, the IPs it leads to and the seconds left.",
    )
    show.add_argument("cache", metavar="CACHE", help="a cache file written by DNSCache.save")
    _common(show)

    resolve = sub.add_parser(
        "resolve",
        help="resolve the exact names of a policy set into a cache file",
        description="Ask nameservers for every exact domain name the policies mention (or "
        "read a zone file) and save the answers to a cache file, merged with its contents.",
    )
    resolve.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories")
    resolve.add_argument("--out", required=True, metavar="CACHE", help="cache file to write")
    source = resolve.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--nameserver",
        action="append",
        metavar="NS",
        help="nameserver ip, ip:port or [v6]:port (repeatable, tried in order)",
    )
    source.add_argument("--zone", metavar="FILE", help="read answers from a zone file instead")
    resolve.add_argument("--timeout", type=float, default=2.0, help="seconds per query")
    _common(resolve)

    match = sub.add_parser(
        "match",
        help="show which policies' patterns each cached name matches",
        description="For each name in a cache file, list the domain patterns of the policies "
        "that match it and where they are written.",
    )
    match.add_argument("cache", metavar="CACHE", help="a cache file written by DNSCache.save")
    match.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories")
    _common(match)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epoch", type=int, default=0, help="cache-file epoch (default 0)")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the ``fqdnpolicy dns`` subcommand parsed into ``args``; return the exit code."""
    stream = out if out is not None else sys.stdout
    command = {"show": _show, "resolve": _resolve, "match": _match}[args.dns_command]
    return command(args, stream)


# --------------------------------------------------------------------------------------------


def _new_cache(args: argparse.Namespace, trusted: Sequence[str] = ()) -> DNSCache:
    return DNSCache(
        epoch=args.epoch,
        max_names=_NO_BOUND,
        max_ips_per_name=_NO_BOUND,
        trusted_servers=trusted,
    )


def _load(cache: DNSCache, path: str) -> tuple[LoadReport, list[str]]:
    """Load ``path``; return the report and warning lines for damaged or ignored input."""
    report = cache.load(path)
    warnings = [f"{path}:{s.line}: skipped: {s.reason}" for s in report.skipped]
    if report.ignored is not None:
        warnings.append(f"{path}: ignored: {report.ignored}")
    return report, warnings


def _missing(paths: Sequence[str], command: str) -> bool:
    missing = [p for p in paths if not os.path.exists(p)]
    for path in missing:
        print(f"fqdnpolicy dns {command}: no such file or directory: {path}", file=sys.stderr)
    return bool(missing)


def _report_dict(report: LoadReport) -> dict[str, Any]:
    return {
        "restored": report.restored,
        "expired": report.expired,
        "ignored": report.ignored,
        "skipped": [{"line": s.line, "reason": s.reason} for s in report.skipped],
    }


def _name_view(cache: DNSCache, now: float) -> dict[str, dict[str, Any]]:
    cnames: dict[str, list[str]] = {}
    for link in cache.links():
        if link.is_cname and link.expiry > now:
            cnames.setdefault(link.name, []).append(link.target)
    view: dict[str, dict[str, Any]] = {}
    for name in sorted(cache.names()):
        expiries = cache.expiries(name)
        view[name] = {
            "ips": {ip: round(d - now, 1) for ip, d in sorted(expiries.items())},
            "cnames": sorted(cnames.get(name, [])),
        }
    return view


def _print_names(view: dict[str, dict[str, Any]], out: TextIO, indent: str = "") -> None:
    for name, entry in view.items():
        parts = [f"{ip} ({left:g} s)" for ip, left in entry["ips"].items()]
        parts.extend(f"-> {target}" for target in entry["cnames"])
        print(f"{indent}{name}  {', '.join(parts) if parts else '(nothing)'}", file=out)


def _show(args: argparse.Namespace, out: TextIO) -> int:
    if _missing([args.cache], "show"):
        return EXIT_USAGE
    cache = _new_cache(args)
    report, warnings = _load(cache, args.cache)
    view = _name_view(cache, cache.clock())
    if args.format == "json":
        json.dump({"file": _report_dict(report), "names": view}, out, indent=2)
        out.write("\n")
    else:
        for line in warnings:
            print(line, file=out)
        _print_names(view, out)
        print(
            f"{len(view)} name(s), {report.restored} link(s) restored, "
            f"{report.expired} expired, {len(report.skipped)} damaged line(s)",
            file=out,
        )
    return EXIT_OK if report.ok else EXIT_INVALID


def _load_policies(paths: Sequence[str], out: TextIO, fmt: str) -> Any:
    """Load policies; print the problems and return None when they are invalid."""
    from fqdnpolicy.loader import load

    try:
        return load(*paths)
    except InvalidPolicy as exc:
        if fmt == "json":
            json.dump({"errors": [p.as_dict() for p in exc.problems]}, out, indent=2)
            out.write("\n")
        else:
            for problem in exc.problems:
                print(problem, file=out)
        return None


def _resolve(args: argparse.Namespace, out: TextIO) -> int:
    if _missing([*args.paths, *([args.zone] if args.zone else [])], "resolve"):
        return EXIT_USAGE
    resources = _load_policies(args.paths, out, args.format)
    if resources is None:
        return EXIT_INVALID
    refs = resources.domain_references()
    exact = sorted({str(r.pattern) for r in refs if not r.pattern.is_wildcard})
    wildcards = sorted({str(r.pattern) for r in refs if r.pattern.is_wildcard})

    from fqdnpolicy.dns import sources

    try:
        cache = _new_cache(args, trusted=args.nameserver or ())
    except InvalidPolicy as exc:
        for problem in exc.problems:
            print(problem.located(path_prefix="--nameserver"), file=out)
        return EXIT_USAGE
    warnings: list[str] = []
    if os.path.exists(args.out):
        _, warnings = _load(cache, args.out)
    failures: dict[str, int] = {}
    try:
        if args.zone:
            sources.load_zone(cache, args.zone)
        else:
            resolver = sources.ActiveResolver(cache, args.nameserver, exact, timeout=args.timeout)
            resolver.refresh_due()
            stats = resolver.stats
            failures = {"timeouts": stats.timeouts, "failures": stats.failures}
    except InvalidPolicy as exc:
        for problem in exc.problems:
            print(problem, file=out)
        return EXIT_INVALID
    try:
        written = cache.save(args.out)
    except OSError as exc:
        print(f"fqdnpolicy dns resolve: cannot write {args.out}: {exc}", file=out)
        return EXIT_INVALID
    resolved = [name for name in exact if cache.ips(name)]
    unresolved = [name for name in exact if not cache.ips(name)]
    if args.format == "json":
        json.dump(
            {
                "out": args.out,
                "links": written,
                "resolved": resolved,
                "unresolved": unresolved,
                "wildcards": wildcards,
                "warnings": warnings,
                **failures,
            },
            out,
            indent=2,
        )
        out.write("\n")
    else:
        for line in warnings:
            print(line, file=out)
        for name in unresolved:
            print(f"no address for {name}", file=out)
        if wildcards:
            print(
                f"not resolvable (wildcards, learned from traffic): {', '.join(wildcards)}",
                file=out,
            )
        print(
            f"{len(resolved)} of {len(exact)} name(s) resolved; {written} link(s) "
            f"saved to {args.out}",
            file=out,
        )
    return EXIT_INVALID if exact and not resolved else EXIT_OK


def _match(args: argparse.Namespace, out: TextIO) -> int:
    if _missing([args.cache, *args.paths], "match"):
        return EXIT_USAGE
    resources = _load_policies(args.paths, out, args.format)
    if resources is None:
        return EXIT_INVALID
    cache = _new_cache(args)
    report, warnings = _load(cache, args.cache)
    now = cache.clock()
    matches: dict[str, list[dict[str, str]]] = {}
    for ref in resources.domain_references():
        for name in cache.names_matching(ref.pattern):
            matches.setdefault(name, []).append(
                {"pattern": str(ref.pattern), "resource": ref.resource, "path": ref.path}
            )
    names = sorted(cache.names())
    unmatched = [name for name in names if name not in matches]
    if args.format == "json":
        json.dump(
            {
                "file": _report_dict(report),
                "names": {
                    name: {
                        "ips": sorted(cache.ips(name)),
                        "matches": matches.get(name, []),
                    }
                    for name in names
                },
                "unmatched": unmatched,
            },
            out,
            indent=2,
        )
        out.write("\n")
    else:
        for line in warnings:
            print(line, file=out)
        for name in names:
            if name not in matches:
                continue
            ips = ", ".join(
                f"{ip} ({d - now:g} s)" for ip, d in sorted(cache.expiries(name).items())
            )
            print(f"{name}  {ips or '(no live address)'}", file=out)
            for m in matches[name]:
                print(f"    {m['pattern']}  {m['resource']}  {m['path']}", file=out)
        print(
            f"{len(matches)} of {len(names)} cached name(s) match a policy pattern",
            file=out,
        )
    return EXIT_OK if report.ok else EXIT_INVALID


__all__ = ["add_arguments", "run"]
