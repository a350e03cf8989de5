"""The evaluator: one program against one flow, with Calico's semantics.

Tiers in order; within a tier the bound rules in order. Allow and Deny end the evaluation, Log
records and goes on, Pass leaves the tier; a tier whose policies decide nothing ends with its
default action (Deny, or Pass to the next tier); when no tier decides, the program's fallback.

A rule that does not match says why as a :data:`Reason`, a small tuple; prose is made from it
only when :meth:`~fqdnpolicy.engine.PolicyEngine.explain` asks (see
:mod:`fqdnpolicy.engine.explain`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import attrs

from fqdnpolicy.cluster import NamedPort
from fqdnpolicy.engine.compiler import Binding
from fqdnpolicy.engine.identities import Identity
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.results import TraceStep, Verdict
from fqdnpolicy.model import PortRange
from fqdnpolicy.protocols import PROTOCOL_FAMILY, PROTOCOL_NUMBERS

__all__ = ["Flow", "Reason", "evaluate", "mismatch"]

#: (protocol number, port, source port, family, ICMP type, ICMP code)
Flow: TypeAlias = tuple[int, int | None, int | None, int, int | None, int | None]
#: Why a rule does not match: a code and its arguments (see explain.describe).
Reason: TypeAlias = tuple[object, ...]

_OTHER_FAMILY = {proto: 10 - family for proto, family in PROTOCOL_FAMILY.items()}

PROTOCOL: Reason = ("protocol",)
OTHER_FAMILY: Reason = ("other-family",)
NOT_PROTOCOL: Reason = ("not-protocol",)
ICMP: Reason = ("icmp",)
NOT_ICMP: Reason = ("not-icmp",)
DST_PORT: Reason = ("dst-port",)
DST_PORT_UNKNOWN: Reason = ("dst-port-unknown",)
DST_NOT_PORT: Reason = ("dst-not-port",)
SRC_PORT: Reason = ("src-port",)
SRC_PORT_UNKNOWN: Reason = ("src-port-unknown",)
SRC_NOT_PORT: Reason = ("src-not-port",)


def _in_ranges(port: int | None, ranges: tuple[PortRange, ...]) -> bool:
    if port is None:
        return False
    return any(r.first <= port <= r.last for r in ranges)


def _icmp_matches(
    spec: tuple[int | None, int | None], icmp_type: int | None, code: int | None
) -> bool:
    want_type, want_code = spec
    if want_type is not None and want_type != icmp_type:
        return False
    return want_code is None or want_code == code


def _port_matches(
    port: int | None,
    proto: int,
    ranges: tuple[PortRange, ...],
    named: tuple[str, ...],
    resolved: tuple[tuple[int, int], ...] | None,
    peer_ports: tuple[NamedPort, ...] | None,
) -> bool:
    """Whether ``port`` is in the ranges or is one of the named ports.

    Named ports are resolved on the endpoint owning that side's address: ``resolved`` holds
    them when that endpoint is the policed one (decided when binding), else they are the
    peer's (its identity's ports; None when no endpoint owns the peer address).
    """
    if port is None:
        return False
    if _in_ranges(port, ranges):
        return True
    if not named:
        return False
    if resolved is not None:
        return (proto, port) in resolved
    if peer_ports is None:
        return False
    return any(
        p.name in named and p.port == port and PROTOCOL_NUMBERS[p.protocol.upper()] == proto
        for p in peer_ports
    )


def mismatch(bound: Binding, peer: Identity, flow: Flow) -> Reason | None:
    """Return why a bound rule does not match the flow, or None when it matches."""
    proto, port, src_port, family, icmp_type, icmp_code = flow
    rule = bound.rule
    if rule.protocol is not None and rule.protocol != proto:
        return PROTOCOL
    if _OTHER_FAMILY.get(rule.protocol) == family:  # type: ignore[arg-type]
        return OTHER_FAMILY
    if rule.not_protocol is not None and rule.not_protocol == proto:
        return NOT_PROTOCOL
    if rule.ip_version is not None and rule.ip_version != family:
        return ("ip-version", rule.ip_version)
    egress = rule.direction == "egress"
    if not (bound.ok4 if family == 4 else bound.ok6):
        return ("own-nets", "source" if egress else "destination", family)
    if rule.icmp is not None and not _icmp_matches(rule.icmp, icmp_type, icmp_code):
        return ICMP
    if rule.not_icmp is not None and _icmp_matches(rule.not_icmp, icmp_type, icmp_code):
        return NOT_ICMP
    peer_side = rule.destination if egress else rule.source
    membership = peer
    for num in peer_side.required:
        if num not in membership:
            return ("peer-not-in", "destination" if egress else "source", num)
    for num in peer_side.forbidden:
        if num in membership:
            return ("peer-in", "destination" if egress else "source", num)
    ports = peer.ports
    dst = rule.destination
    if dst.ports or dst.named_ports:
        own = None if egress else bound.own_named
        if not _port_matches(port, proto, dst.ports, dst.named_ports, own, ports):
            return DST_PORT
    if dst.not_ports or dst.not_named_ports:
        if port is None:
            return DST_PORT_UNKNOWN
        own = None if egress else bound.own_not_named
        if _port_matches(port, proto, dst.not_ports, dst.not_named_ports, own, ports):
            return DST_NOT_PORT
    src = rule.source
    if src.ports or src.named_ports:
        own = bound.own_named if egress else None
        if not _port_matches(src_port, proto, src.ports, src.named_ports, own, ports):
            return SRC_PORT
    if src.not_ports or src.not_named_ports:
        if src_port is None:
            return SRC_PORT_UNKNOWN
        own = bound.own_not_named if egress else None
        if _port_matches(src_port, proto, src.not_ports, src.not_named_ports, own, ports):
            return SRC_NOT_PORT
    return None


def evaluate(
    program: Program,
    peer: Identity,
    flow: Flow,
    trace: list[TraceStep] | None = None,
    describe: Callable[[Reason], str] | None = None,
) -> Verdict:
    """Judge ``flow`` to or from a peer of identity ``peer`` with ``program``.

    With ``trace``, every rule considered is recorded there, its reason put in words by
    ``describe``.
    """
    direction = program.direction
    logged: list[tuple[str, int]] = []
    for block in program.blocks:
        passed = False
        current: str | None = None
        # A trace shows every rule; a verdict looks only at rules that can match.
        for bound in block.rules if trace is not None else block.candidates(peer, flow[0]):
            rule = bound.rule
            if trace is not None and rule.policy != current:
                current = rule.policy
                trace.append(TraceStep(direction, block.tier, current, None, "applies"))
            why = mismatch(bound, peer, flow)
            if why is not None:
                if trace is not None:
                    detail = describe(why) if describe is not None else str(why)
                    trace.append(
                        TraceStep(
                            direction, block.tier, rule.policy, rule.index, "no match", detail
                        )
                    )
                continue
            if trace is not None:
                outcome = {"Log": "logged", "Pass": "passed"}.get(rule.action, "matched")
                trace.append(
                    TraceStep(direction, block.tier, rule.policy, rule.index, outcome, rule.action)
                )
            if rule.action == "Log":
                logged.append((rule.policy, rule.index))
                continue
            if rule.action == "Pass":
                passed = True
                break
            return attrs.evolve(rule.verdict, logged=tuple(logged)) if logged else rule.verdict
        if trace is not None:
            seen = {b.rule.policy for b in block.rules}
            trace.extend(
                TraceStep(direction, block.tier, name, None, "applies", "no rule matches here")
                for name in block.policies
                if name not in seen
            )
        if passed:
            continue
        if block.end is not None:
            if trace is not None:
                trace.append(TraceStep(direction, block.tier, None, None, "end of tier", "Deny"))
            return attrs.evolve(block.end, logged=tuple(logged)) if logged else block.end
        if trace is not None:
            trace.append(TraceStep(direction, block.tier, None, None, "end of tier", "Pass"))
    verdict = program.fallback
    if trace is not None and not program.blocks:
        trace.append(TraceStep(direction, "-", None, None, "no policy applies", "Allow"))
    return attrs.evolve(verdict, logged=tuple(logged)) if logged else verdict
