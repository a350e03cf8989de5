"""The datapath projection: the engine's state as plain data for backends.

Built from the sets' own sources (DNS members with expiries, CIDRs, selected endpoints and
network sets), never by scanning addresses, and from the programs: endpoints alike share
programs, so they share tier states too, which renderers can render once (by identity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fqdnpolicy.cluster import Endpoint
from fqdnpolicy.datapath import (
    DatapathState,
    Direction,
    PortSpec,
    RuleState,
    SetState,
    TierState,
)
from fqdnpolicy.datapath import EndpointState as DatapathEndpoint
from fqdnpolicy.engine.compiler import Binding, Side
from fqdnpolicy.engine.ipsets import IPSet, IPSetRegistry
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.selectorsets import SelectorSets
from fqdnpolicy.protocols import PROTOCOL_FAMILY, PROTOCOL_NUMBERS

__all__ = ["project", "set_state"]

_ANY_PORT = PortSpec()


def set_state(
    ipset: IPSet,
    children: list[IPSet],
    selectors: SelectorSets,
    dns_members: Callable[[IPSet], dict[str, float]],
) -> SetState:
    """A set's members with their expiries, from the set's own sources.

    Domain sets hold what DNS taught them (with expiries); nets sets their CIDRs; selector
    sets their endpoints' addresses and their network sets' CIDRs (never expiring) and the
    DNS-learned members of those network sets' domains (``children``), expiring at the
    latest of them.
    """
    members: dict[str, float | None]
    if ipset.kind == "domains":
        members = dict(dns_members(ipset))
    elif ipset.kind == "nets":
        members = dict.fromkeys(map(str, ipset.nets))
    else:
        members = {}
        for child in children:
            for ip, expiry in dns_members(child).items():
                known = members.get(ip)
                members[ip] = expiry if known is None else max(known, expiry)
        # Endpoint addresses and CIDRs never expire, even where DNS also leads.
        for member in selectors.subjects(ipset):
            members.update(dict.fromkeys(member.ips))
            members.update(dict.fromkeys(map(str, member.nets)))
    return SetState(ipset.set_id, ipset.kind, ipset.definition, members)


def children_of(registry: IPSetRegistry) -> dict[int, list[IPSet]]:
    """Domain sets by the selector sets that inherit their members (network sets)."""
    children: dict[int, list[IPSet]] = {}
    for child in registry:
        for parent in child.parents:
            children.setdefault(parent, []).append(child)
    return children


def project(
    registry: IPSetRegistry,
    selectors: SelectorSets,
    dns_members: Callable[[IPSet], dict[str, float]],
    endpoints: Iterable[tuple[Endpoint, Program, Program]],
) -> DatapathState:
    """Everything a datapath must enforce: sets with members, and every endpoint's tiers."""
    children = children_of(registry)
    sets = tuple(
        set_state(ipset, children.get(ipset.num, []), selectors, dns_members)
        for ipset in sorted(registry, key=lambda s: s.set_id)
    )
    rendered: dict[int, tuple[TierState, ...]] = {}
    peer_names: set[str] = set()
    states: list[DatapathEndpoint] = []
    all_endpoints: list[Endpoint] = []
    for endpoint, egress, ingress in sorted(endpoints, key=lambda e: e[0].key):
        all_endpoints.append(endpoint)
        tiers: list[tuple[TierState, ...]] = []
        for program in (egress, ingress):
            found = rendered.get(id(program))
            if found is None:
                found = rendered[id(program)] = _tier_states(program, registry, peer_names)
            tiers.append(found)
        states.append(
            DatapathEndpoint(endpoint.key, endpoint.interface, endpoint.ips, tiers[0], tiers[1])
        )
    found_named: dict[str, list[tuple[str, int, int]]] = {n: [] for n in peer_names}
    for endpoint in all_endpoints:
        for port in endpoint.named_ports:
            entries = found_named.get(port.name)
            if entries is not None:
                number = PROTOCOL_NUMBERS[port.protocol.upper()]
                entries.extend((ip, number, port.port) for ip in endpoint.ips)
    named = {name: tuple(sorted(found_named[name])) for name in sorted(found_named)}
    return DatapathState(sets, tuple(states), named)


def _tier_states(
    program: Program, registry: IPSetRegistry, peer_names: set[str]
) -> tuple[TierState, ...]:
    tiers: list[TierState] = []
    for block in program.blocks:
        rules = []
        for bound in block.rules:
            rendered = bound.rendered
            if rendered is None:
                rendered = bound.rendered = _rule_state(bound, program.direction, registry)
            state, names = rendered
            if state is not None:
                rules.append(state)
                if names:
                    peer_names.update(names)
        tiers.append(
            TierState(block.tier, tuple(rules), "Deny" if block.end is not None else "Pass")
        )
    return tuple(tiers)


def _rule_state(
    bound: Binding, direction: Direction, registry: IPSetRegistry
) -> tuple[RuleState | None, tuple[str, ...]]:
    """A bound rule for datapaths (None: it matches no family), and its peer port names."""
    rule = bound.rule
    other = {proto: 10 - family for proto, family in PROTOCOL_FAMILY.items()}
    families = tuple(
        f
        for f, ok in ((4, bound.ok4), (6, bound.ok6))
        if ok and rule.ip_version in (None, f) and other.get(rule.protocol or 0) != f
    )
    if not families:
        return None, ()
    peer, own = rule.peer, rule.own
    by_num = registry.by_num
    state = RuleState(
        policy=rule.policy,
        tier=rule.tier,
        index=rule.index,
        action=rule.action,
        families=families,
        protocol=rule.protocol,
        not_protocol=rule.not_protocol,
        icmp=rule.icmp,
        not_icmp=rule.not_icmp,
        peer_in=tuple(by_num[n].set_id for n in peer.required),
        peer_not_in=tuple(by_num[n].set_id for n in peer.forbidden),
        dst_ports=_port_spec(rule.destination, own, bound.own_named, False),
        not_dst_ports=_port_spec(rule.destination, own, bound.own_not_named, True),
        src_ports=_port_spec(rule.source, own, bound.own_named, False),
        not_src_ports=_port_spec(rule.source, own, bound.own_not_named, True),
    )
    return state, (*peer.named_ports, *peer.not_named_ports)


def _port_spec(
    side: Side, own: Side, resolved: tuple[tuple[int, int], ...], negated: bool
) -> PortSpec:
    """A side's ports for datapaths: own-side named ports come resolved, peer-side by name."""
    ports = side.not_ports if negated else side.ports
    if side is own:
        if not ports and not resolved:
            return _ANY_PORT  # most sides: one shared object
        return PortSpec(ranges=tuple((r.first, r.last) for r in ports), named=resolved)
    names = side.not_named_ports if negated else side.named_ports
    if not ports and not names:
        return _ANY_PORT
    return PortSpec(ranges=tuple((r.first, r.last) for r in ports), peer_named=names)
