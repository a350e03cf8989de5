"""``fqdnpolicy check`` and ``fqdnpolicy explain``: verdicts for flows, and why."""

from __future__ import annotations

import argparse
import difflib
import json
from typing import Any, TextIO

import attrs

from fqdnpolicy.cli.common import EXIT_INVALID, EXIT_OK, CommandError
from fqdnpolicy.cli.state import State, add_state_options, load_state
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.progress import Status

__all__ = ["Judged", "add_check", "add_explain", "cmd_check", "cmd_explain"]

#: The verdict column of a flow whose destination name the DNS source does not hold.
UNRESOLVED = "unresolved"


@attrs.frozen
class Judged:
    """One judged flow: a source endpoint, a destination address, and the verdict.

    Attributes:
        flow: The flow as written (with the endpoint, for a source chosen by labels).
        source: The source endpoint's key.
        destination: The destination as written (address, endpoint or name).
        address: The address judged; None when the name is unresolved.
        verdict: The engine's verdict; None when the name is unresolved.
        trace: The explanation (``explain`` only).
    """

    flow: str
    source: str
    destination: str
    address: str | None
    verdict: Any = None
    trace: Any = None

    @property
    def allowed(self) -> bool:
        """True when judged and allowed."""
        return self.verdict is not None and self.verdict.allowed

    def decided_by(self) -> str:
        """Which rule or default decided, in words."""
        verdict = self.verdict
        if verdict is None:
            return "the DNS source holds no address for this name"
        if verdict.default is None:
            return f"{verdict.policy} {verdict.direction}[{verdict.rule_index}]"
        tier = f" ({verdict.tier})" if verdict.tier else ""
        return f"{verdict.direction} {verdict.default}{tier}"

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary of the flow and its verdict (and trace)."""
        report: dict[str, Any] = {
            "flow": self.flow,
            "source": self.source,
            "destination": self.destination,
            "address": self.address,
        }
        if self.verdict is None:
            report.update(action=None, unresolved=True)
        else:
            report.update(self.verdict.as_dict(), unresolved=False)
        if self.trace is not None:
            report["steps"] = self.trace.as_dict()["steps"]
        return report


def _suggest(wanted: str, known: list[str]) -> str:
    """A "did you mean" hint: endpoints the text starts, or the closest keys."""
    starts = [k for k in known if k.startswith(wanted)]
    close = starts[:3] or difflib.get_close_matches(wanted, known, n=3, cutoff=0.8)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _endpoint(state: State, key: str, role: str) -> str:
    keys = [ep.key for ep in state.cluster.endpoints]
    if key in keys:
        return key
    if not keys:
        raise CommandError(f"{role} {key} is not a pod: no --cluster was given, or it has no pods")
    raise CommandError(f"{role} {key} is not a pod of the cluster{_suggest(key, keys)}")


def _sources(state: State, flow: Any) -> list[str]:
    if not flow.src_labels:
        return [_endpoint(state, flow.src, "source")]
    chosen = [
        ep.key
        for ep in state.cluster.endpoints
        if ep.namespace == flow.src_namespace
        and all(ep.labels.get(k) == v for k, v in flow.src_labels)
    ]
    if not chosen:
        raise CommandError(
            f"source {flow.src}: no pod of namespace {flow.src_namespace} has these labels"
        )
    return chosen


def _addresses(state: State, flow: Any) -> list[str | None]:
    if flow.dst_kind == "name":
        return sorted(state.cache.ips(flow.dst)) or [None]
    if flow.dst_kind == "endpoint":
        _endpoint(state, flow.dst, "destination")
    return [flow.dst]


def judge(state: State, texts: list[str], *, explain: bool) -> list[Judged]:
    """Parse and judge each flow (every source endpoint x every destination address).

    Raises:
        CommandError: a flow is not valid, or names a pod the cluster does not have.
    """
    from fqdnpolicy.engine import PolicyEngine
    from fqdnpolicy.flows import parse_flow

    flows = []
    for text in texts:
        try:
            flows.append(parse_flow(text))
        except InvalidPolicy as exc:
            raise CommandError(str(exc.problem)) from None
    plans = [(flow, _sources(state, flow), _addresses(state, flow)) for flow in flows]
    with Status().step("building the engine"):
        engine = PolicyEngine(state.resources, state.cluster, state.cache)
    judged: list[Judged] = []
    for flow, sources, addresses in plans:
        for source in sources:
            written = flow.with_source(source)
            for address in addresses:
                if address is None:
                    judged.append(Judged(written, source, flow.dst, None))
                    continue
                args = (source, address, flow.protocol, flow.port)
                if explain:
                    trace = engine.explain(*args)
                    judged.append(Judged(written, source, flow.dst, address, trace.verdict, trace))
                else:
                    verdict = engine.verdict(*args)
                    judged.append(Judged(written, source, flow.dst, address, verdict))
    return judged


def _exit_code(judged: list[Judged]) -> int:
    return EXIT_OK if all(j.allowed for j in judged) else EXIT_INVALID


def _json(judged: list[Judged], state: State, out: TextIO) -> None:
    report = {
        "allowed": all(j.allowed for j in judged),
        "flows": [j.as_dict() for j in judged],
        "notes": list(state.notes),
    }
    json.dump(report, out, indent=2)
    out.write("\n")


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """Print the verdict of each flow; exit 0 when all are allowed, 1 otherwise."""
    from fqdnpolicy.demo import format_table

    state = load_state(args)
    judged = judge(state, args.flows, explain=False)
    if args.format == "json":
        _json(judged, state, out)
        return _exit_code(judged)
    logs = any(j.verdict is not None and j.verdict.logged for j in judged)
    headers = ["flow", "address", "verdict", "decided by"] + (["logged by"] if logs else [])
    rows = []
    for j in judged:
        action = UNRESOLVED if j.verdict is None else j.verdict.action
        row = [j.flow, j.address or "-", action, j.decided_by()]
        if logs:
            row.append(j.verdict.logged_text() if j.verdict is not None else "")
        rows.append(row)
    print(format_table(headers, rows), file=out)
    return _exit_code(judged)


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    """Print the trace of one flow (each destination address of a name)."""
    state = load_state(args)
    judged = judge(state, [args.flow], explain=True)
    if args.format == "json":
        _json(judged, state, out)
        return _exit_code(judged)
    for j in judged:
        if j.trace is None:
            print(
                f"{j.flow}: {j.destination} is unresolved: the DNS source holds no address for it",
                file=out,
            )
        else:
            print(j.trace.render(), file=out)
    return _exit_code(judged)


_FLOW_HELP = (
    "SRC -> DST:PORT/PROTOCOL. SRC is a pod namespace/name, or namespace/key=value for every "
    "pod of the namespace with that label; DST an address ([2001:db8::1] in brackets before a "
    "port), a pod namespace/name or a domain name (one verdict per address the DNS source "
    "holds). PORT is a number, or * for any port (TCP, UDP and SCTP need one of the two); "
    "PROTOCOL defaults to tcp."
)


def add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``check`` command."""
    check = sub.add_parser(
        "check",
        help="verdicts for flows (exit 0 all allowed, 1 some denied or unresolved)",
        description="Judge flows. " + _FLOW_HELP,
    )
    check.add_argument("flows", nargs="+", metavar="FLOW")
    check.add_argument("--format", choices=("text", "json"), default="text")
    add_state_options(check)
    check.set_defaults(func=cmd_check)


def add_explain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``explain`` command."""
    explain = sub.add_parser(
        "explain",
        help="why a flow is allowed or denied: every tier, policy and rule considered",
        description="Explain a flow's verdict. " + _FLOW_HELP,
    )
    explain.add_argument("flow", metavar="FLOW")
    explain.add_argument("--format", choices=("text", "json"), default="text")
    add_state_options(explain)
    explain.set_defaults(func=cmd_explain)
