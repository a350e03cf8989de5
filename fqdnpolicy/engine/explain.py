"""Explanations in words: the prose of a trace, made only when one is asked for."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from fqdnpolicy.datapath import Direction
from fqdnpolicy.engine.compiler import CompiledPolicy
from fqdnpolicy.engine.evaluate import Reason
from fqdnpolicy.engine.results import IPSetInfo, TraceStep
from fqdnpolicy.engine.selectorsets import WITH_DOMAINS

__all__ = ["describe_reason", "not_applying"]

_FIXED = {
    "protocol": "protocol differs",
    "other-family": "ICMP of the other address family",
    "not-protocol": "protocol excluded by notProtocol",
    "icmp": "ICMP type/code differs",
    "not-icmp": "ICMP type/code excluded by notICMP",
    "dst-port": "destination port not in ports",
    "dst-port-unknown": "destination port unknown: notPorts cannot hold",
    "dst-not-port": "destination port in notPorts",
    "src-port": "source port not in ports",
    "src-port-unknown": "source port unknown: notPorts cannot hold",
    "src-not-port": "source port in notPorts",
}


def describe_reason(reason: Reason, set_info: Callable[[int], IPSetInfo]) -> str:
    """Put why a rule did not match into words (``set_info`` tells what an IP set holds)."""
    code = reason[0]
    fixed = _FIXED.get(str(code))
    if fixed is not None:
        return fixed
    if code == "ip-version":
        return f"ipVersion {reason[1]}"
    if code == "own-nets":
        return f"{reason[1]} nets do not hold the endpoint's IPv{reason[2]} address"
    num = reason[2]
    assert isinstance(num, int)
    side = str(reason[1])
    if code == "peer-not-in":
        return f"{side} address not in {_set_in_words(set_info(num), side, False)}"
    return f"{side} address in excluded {_set_in_words(set_info(num), side, True)}"


_FIELDS = {
    ("nets", False): "nets",
    ("nets", True): "notNets",
    ("domains", False): "domains",
    ("domains", True): "domains",
    ("selector", False): "selector",
    ("selector", True): "notSelector",
}


def _set_in_words(info: IPSetInfo, side: str, excluded: bool) -> str:
    """An IP set as its kind, what it holds and the rule field it comes from; no set id."""
    field = _FIELDS[(info.kind, excluded)]
    definition = info.definition
    if info.kind == "selector" and definition.endswith(WITH_DOMAINS):
        # The set's own marker: say in words what it adds.
        definition = definition.removesuffix(WITH_DOMAINS) + (
            ", with the allowedEgressDomains of the network sets it selects"
        )
    return f"{info.kind} set {definition} (the rule's {side}.{field})"


def not_applying(
    in_scope: Iterable[CompiledPolicy],
    applying: frozenset[str],
    direction: Direction,
    tier_key: Callable[[str], tuple[float, str]],
) -> Iterator[TraceStep]:
    """Trace steps for the policies of an endpoint's scope that do not apply to it.

    In evaluation order: tiers by ``tier_key``, then policies by order and name.
    """
    ordered = sorted(in_scope, key=lambda c: (tier_key(c.policy.spec.tier), c.sort_key))
    for compiled in ordered:
        if compiled.key in applying:
            continue
        spec = compiled.policy.spec
        if direction.capitalize() not in spec.types:
            types = " and ".join(spec.types) or "none"
            why = f"its types ({types}) leave out {direction.capitalize()}"
        else:
            why = f"its selector {compiled.selector} does not match the endpoint"
        yield TraceStep(direction, spec.tier, compiled.display, None, "does not apply", why)
