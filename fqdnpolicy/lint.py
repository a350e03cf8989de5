"""Warnings about policies that load but do not do what their author expects.

Each check returns :class:`~fqdnpolicy.errors.Problem` objects of severity ``warning`` with a
stable ``code``:

``broad-wildcard``
    A wildcard covering a whole public suffix (``*.com``, ``*.co.uk``): it allows every site
    registered under it.
``shared-suffix-wildcard``
    A wildcard whose fixed part is a shared suffix from the private section of the
    public-suffix list (``*.s3.amazonaws.com``, ``*.github.io``): names under it belong to many
    customers, so the rule allows every bucket or site there, an attacker's included.
``dns-rule-wrong-namespace``
    A DNS-allow rule in a namespaced NetworkPolicy whose destination ``selector`` has no
    ``namespaceSelector``: under Calico it reaches only pods of the policy's own namespace,
    while cluster DNS runs in ``kube-system`` (the seed article's ``k8s-app == "kube-dns"``
    rules).
``no-dns-allowed``
    A policy whose egress names ``domains`` while no loaded policy allows DNS (port 53) for
    its endpoints: names never resolve, so the domain rules never see an address.
``shadowed-rule``
    A rule that can never match because an earlier rule of the same policy, with an action
    that ends evaluation (Allow, Deny, Pass), matches all of its traffic (or all of it in one
    address family: then the warning names the family).
``unknown-tier``
    A policy in a tier that is not among the loaded resources (Calico refuses to create it).
``underscore-in-domain``
    A domain name or pattern with ``_`` (``_srv._tcp.example.com``): fqdnpolicy takes it, as
    DNS does, but Calico's validator refuses the policy.

The checks are conservative: a warning means the problem is certain from the loaded
resources alone (for ``no-dns-allowed``: that no loaded policy could allow the DNS).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterator, Sequence

from fqdnpolicy.domains import DomainPattern, public_suffix_covered
from fqdnpolicy.errors import Problem
from fqdnpolicy.model import (
    DEFAULT_TIER,
    EntityRule,
    IPNetwork,
    NamedPort,
    NetworkSet,
    Policy,
    PortRange,
    ResourceSet,
    Rule,
)
from fqdnpolicy.protocols import PROTOCOL_FAMILY, TCP, UDP, protocol_number_or_none

__all__ = ["DNS_PORT", "lint"]

DNS_PORT = 53
_KUBE_DNS_FIX = 'namespaceSelector: projectcalico.org/name == "kube-system"'


def lint(resources: ResourceSet) -> list[Problem]:
    """Return every warning for the loaded resources, in input order."""
    problems: list[Problem] = []
    dns_allowed_anywhere = _dns_allowing_scopes(resources.policies)
    tiers = {t.name for t in resources.tiers} | {DEFAULT_TIER}
    for policy in resources.policies:
        problems.extend(_wildcards(policy))
        problems.extend(_dns_rules_in_wrong_namespace(policy))
        problems.extend(_domains_without_dns(policy, dns_allowed_anywhere))
        problems.extend(_shadowed_rules(policy))
        if policy.spec.tier not in tiers:
            problems.append(
                _warn(
                    policy,
                    "spec.tier",
                    f"tier {policy.spec.tier!r} is not defined in the loaded resources",
                    "unknown-tier",
                    "define the Tier (Calico refuses policies in a tier that does not exist)",
                )
            )
    for nset in resources.network_sets:
        for i, pattern in enumerate(nset.spec.allowed_egress_domains):
            for message, code, hint in _domain_problems(pattern):
                path = f"spec.allowedEgressDomains[{i}]"
                problems.append(_warn(nset, path, message, code, hint))
    return problems


def _warn(
    resource: Policy | NetworkSet, path: str, message: str, code: str, hint: str = ""
) -> Problem:
    return Problem(
        message,
        path=path,
        resource=resource.display_name,
        file=resource.source.file if resource.source else None,
        line=resource.source.line if resource.source else None,
        hint=hint,
        severity="warning",
        code=code,
    )


def _rules(policy: Policy) -> Iterator[tuple[str, int, Rule]]:
    for direction, rules in (("ingress", policy.spec.ingress), ("egress", policy.spec.egress)):
        for i, rule in enumerate(rules):
            yield direction, i, rule


# -- wildcards ---------------------------------------------------------------------------------


def _wildcard_problem(pattern: DomainPattern) -> tuple[str, str, str] | None:
    covered = public_suffix_covered(pattern)
    if covered is None:
        return None
    suffix, icann = covered
    if icann:
        return (
            f"wildcard {pattern} covers the whole public suffix {suffix!r}: it allows every "
            "site registered under it",
            "broad-wildcard",
            "name the services you need, e.g. 'api.service.com' or '*.api.service.com'",
        )
    return (
        f"wildcard {pattern} covers {suffix!r}, which the public-suffix list marks as shared "
        "(names under it belong to many different customers): it allows names you do not own",
        "shared-suffix-wildcard",
        f"name your own resources under it, e.g. 'mybucket.{suffix}'",
    )


def _domain_problems(pattern: DomainPattern) -> Iterator[tuple[str, str, str]]:
    problem = _wildcard_problem(pattern)
    if problem is not None:
        yield problem
    if "_" in pattern.text:
        yield (
            f"{pattern} holds '_', which Calico does not allow in a domain name: Calico will "
            "refuse this policy",
            "underscore-in-domain",
            "keep it only where fqdnpolicy alone enforces the policy",
        )


def _wildcards(policy: Policy) -> Iterator[Problem]:
    for direction, i, rule in _rules(policy):
        for j, pattern in enumerate(rule.destination.domains):
            for message, code, hint in _domain_problems(pattern):
                path = f"spec.{direction}[{i}].destination.domains[{j}]"
                yield _warn(policy, path, message, code, hint)


# -- DNS -----------------------------------------------------------------------------------------


def _port_listed(port: int, ports: Sequence[PortRange | NamedPort]) -> bool:
    return any(isinstance(p, PortRange) and p.first <= port <= p.last for p in ports)


def _allows_dns(rule: Rule) -> bool:
    """Whether the rule allows some traffic to port 53 over UDP or TCP."""
    if rule.action != "Allow" or rule.destination.domains:
        return False
    if protocol_number_or_none(rule.protocol) not in (None, UDP, TCP):
        return False
    ports = rule.destination.ports
    if ports and not _port_listed(DNS_PORT, ports):
        return False
    return not _port_listed(DNS_PORT, rule.destination.not_ports)


def _names_dns_port(rule: Rule) -> bool:
    return _port_listed(DNS_PORT, rule.destination.ports)


def _dns_rules_in_wrong_namespace(policy: Policy) -> Iterator[Problem]:
    namespace = policy.namespace
    if namespace is None or namespace == "kube-system":
        return
    for i, rule in enumerate(policy.spec.egress):
        dest = rule.destination
        if not (_allows_dns(rule) and _names_dns_port(rule)):
            continue
        if dest.selector is None or dest.namespace_selector is not None:
            continue
        yield _warn(
            policy,
            f"spec.egress[{i}].destination.selector",
            f"this DNS rule's selector ({dest.selector}) reaches only pods in namespace "
            f"{namespace!r}, but cluster DNS runs in 'kube-system': under Calico it allows no "
            "DNS, and every lookup from these pods is dropped",
            "dns-rule-wrong-namespace",
            f"add '{_KUBE_DNS_FIX}' to the destination",
        )


def _dns_reachable(policy: Policy, rule: Rule) -> bool:
    """Whether a DNS-allowing rule could reach cluster DNS at all."""
    dest = rule.destination
    return not (
        policy.namespace not in (None, "kube-system")
        and dest.selector is not None
        and dest.namespace_selector is None
    )


def _dns_allowing_scopes(policies: Sequence[Policy]) -> set[str | None]:
    """Namespaces (None: every namespace) in which some policy allows DNS egress."""
    scopes: set[str | None] = set()
    for policy in policies:
        if "Egress" not in policy.spec.types:
            continue
        if any(_allows_dns(r) and _dns_reachable(policy, r) for r in policy.spec.egress):
            scopes.add(policy.namespace)
    return scopes


def _domains_without_dns(policy: Policy, scopes: set[str | None]) -> Iterator[Problem]:
    if "Egress" not in policy.spec.types:
        return
    if not any(rule.destination.domains for rule in policy.spec.egress):
        return
    if None in scopes or policy.namespace in scopes:
        return
    yield _warn(
        policy,
        "spec.egress",
        "egress names domains but no loaded policy allows DNS (port 53) for these endpoints: "
        "names never resolve, so the domain rules never see an address",
        "no-dns-allowed",
        "allow UDP and TCP port 53 to the cluster DNS (namespaceSelector: "
        'projectcalico.org/name == "kube-system", selector: k8s-app == "kube-dns")',
    )


# -- shadowed rules ------------------------------------------------------------------------------


def _families(rule: Rule) -> set[int]:
    families = {4, 6} if rule.ip_version is None else {rule.ip_version}
    protocol = protocol_number_or_none(rule.protocol)
    if protocol is not None and protocol in PROTOCOL_FAMILY:
        families &= {PROTOCOL_FAMILY[protocol]}
    for side in (rule.source, rule.destination):
        if side.nets:
            families &= {net.version for net in side.nets}
    return families


def _ports_cover(
    wide: Sequence[PortRange | NamedPort], narrow: Sequence[PortRange | NamedPort]
) -> bool:
    if not wide:
        return True
    if not narrow:
        return False
    for port in narrow:
        if isinstance(port, NamedPort):
            if port not in wide:
                return False
        elif not any(
            isinstance(w, PortRange) and w.first <= port.first and port.last <= w.last for w in wide
        ):
            return False
    return True


def _nets_cover(wide: EntityRule, narrow: EntityRule, family: int) -> bool:
    if not wide.nets:
        return True
    nets = [n for n in wide.nets if n.version == family]
    if any(n.prefixlen == 0 for n in nets):
        return True
    mine = [n for n in narrow.nets if n.version == family]
    if not mine:
        return False
    return all(
        any(
            (
                isinstance(n, ipaddress.IPv4Network)
                and isinstance(w, ipaddress.IPv4Network)
                and n.subnet_of(w)
            )
            or (
                isinstance(n, ipaddress.IPv6Network)
                and isinstance(w, ipaddress.IPv6Network)
                and n.subnet_of(w)
            )
            for w in nets
        )
        for n in mine
    )


def _domains_cover(wide: EntityRule, narrow: EntityRule) -> bool:
    if not wide.domains:
        return True
    if not narrow.domains:
        return False
    return all(
        any(w == n or (not n.is_wildcard and w.matches(n.text)) for w in wide.domains)
        for n in narrow.domains
    )


def _side_covers(wide: EntityRule, narrow: EntityRule, family: int) -> bool:
    return (
        _nets_cover(wide, narrow, family)
        and set(wide.not_nets) <= set(narrow.not_nets)
        and wide.selector in (None, narrow.selector)
        and wide.not_selector in (None, narrow.not_selector)
        and wide.namespace_selector in (None, narrow.namespace_selector)
        and wide.service_accounts in (None, narrow.service_accounts)
        and _domains_cover(wide, narrow)
        and _ports_cover(wide.ports, narrow.ports)
        and set(wide.not_ports) <= set(narrow.not_ports)
    )


def _covers(wide: Rule, narrow: Rule, family: int) -> bool:
    """Whether every packet of ``family`` matching ``narrow`` also matches ``wide``."""
    wide_proto, narrow_proto = (
        protocol_number_or_none(wide.protocol),
        protocol_number_or_none(narrow.protocol),
    )
    if wide_proto is not None and wide_proto != narrow_proto:
        return False
    wide_not = protocol_number_or_none(wide.not_protocol)
    if wide_not is not None and not (
        (narrow_proto is not None and narrow_proto != wide_not)
        or protocol_number_or_none(narrow.not_protocol) == wide_not
    ):
        return False
    if wide.icmp is not None and wide.icmp != narrow.icmp:
        return False
    if wide.not_icmp is not None and wide.not_icmp != narrow.not_icmp:
        return False
    return _side_covers(wide.source, narrow.source, family) and _side_covers(
        wide.destination, narrow.destination, family
    )


def _shadow_warning(
    policy: Policy,
    direction: str,
    rules: Sequence[Rule],
    j: int,
    shadowed_by: dict[int, int],
    remaining: set[int],
) -> Problem:
    """The warning for rule ``j``, given the first earlier rule covering it per family."""
    later = rules[j]
    path = f"spec.{direction}[{j}]"
    by = sorted(set(shadowed_by.values()))
    first = rules[by[0]]
    earlier_text = ", ".join(f"{direction}[{i}] ({rules[i].action})" for i in by)
    if set(shadowed_by) == remaining:
        message = f"this rule can never match: {earlier_text} before it matches all of its traffic"
    else:
        families = " and ".join(f"IPv{f}" for f in sorted(shadowed_by))
        message = (
            f"for {families} traffic this rule can never match: {earlier_text} "
            f"before it matches all of it (the rule still applies to the rest)"
        )
    hint = (
        "move it before the broader rule"
        if first.action != later.action
        else "remove it, or narrow the earlier rule"
    )
    return _warn(policy, path, message, "shadowed-rule", hint)


def _shadowed_rules(policy: Policy) -> Iterator[Problem]:
    for direction, rules in (("ingress", policy.spec.ingress), ("egress", policy.spec.egress)):
        for j, shadowed_by, remaining in _shadowing(rules):
            yield _shadow_warning(policy, direction, rules, j, shadowed_by, remaining)


# A rule that covers another must constrain a field at least as much, so each earlier rule is
# filed under the values of one field it constrains (its "anchor"), and a later rule only looks
# up the keys under which a rule covering it can be filed. Keys are tuples starting with a tag.
_SIDES = ("destination", "source")
_SELECTOR_FIELDS = ("selector", "not_selector", "namespace_selector", "service_accounts")
# A port range is filed under the aligned power-of-two blocks that tile it (as in a segment
# tree), so the ranges holding a port are found in one lookup per block size, not by a scan.
_PORT_BITS = 16
_ANY: tuple[str] = ("any",)


def _net_key(side: str, net: IPNetwork, prefixlen: int) -> tuple[object, ...]:
    shift = net.max_prefixlen - prefixlen
    return ("net", side, net.version, prefixlen, int(net.network_address) >> shift)


def _aligned_blocks(first: int, last: int) -> Iterator[tuple[int, int]]:
    """Tile ``first..last`` with aligned blocks, the largest that fits at each step.

    A block (level, number) holds the ports ``number << level`` to ``((number + 1) << level) - 1``.
    """
    while first <= last:
        level = 0
        while level < _PORT_BITS and first % (2 << level) == 0 and first + (2 << level) <= last + 1:
            level += 1
        yield level, first >> level
        first += 1 << level


def _anchor_keys(rule: Rule) -> list[tuple[object, ...]]:
    """The keys to file ``rule`` under: every value of the most selective field it constrains."""
    for side in _SIDES:
        entity: EntityRule = getattr(rule, side)
        if entity.domains:
            return [
                ("wild", side, d.fixed_suffix) if d.is_wildcard else ("name", side, d.text)
                for d in entity.domains
            ]
    for side in _SIDES:
        nets = getattr(rule, side).nets
        if nets:
            return [_net_key(side, n, n.prefixlen) for n in nets]
    for side in _SIDES:
        ports = getattr(rule, side).ports
        if ports:
            keys: list[tuple[object, ...]] = []
            for p in ports:
                if isinstance(p, NamedPort):
                    keys.append(("named", side, p.name))
                else:
                    keys.extend(("port", side, *b) for b in _aligned_blocks(p.first, p.last))
            return keys
    for side in _SIDES:
        for field in _SELECTOR_FIELDS:
            value = getattr(getattr(rule, side), field)
            if value is not None:
                return [("sel", side, field, value)]
    if rule.icmp is not None:
        return [("icmp", rule.icmp)]
    protocol = protocol_number_or_none(rule.protocol)
    if protocol is not None:
        return [("proto", protocol)]
    return [_ANY]


def _lookup_keys(
    rule: Rule, prefixlens: dict[tuple[str, int], set[int]]
) -> Iterator[tuple[object, ...]]:
    """Every key under which a rule covering ``rule`` (in some family) can be filed."""
    for side in _SIDES:
        entity: EntityRule = getattr(rule, side)
        if entity.domains:
            # Every name must be covered, so the first one is enough to find the coverer.
            d = entity.domains[0]
            if d.is_wildcard:
                yield ("wild", side, d.fixed_suffix)
            else:
                yield ("name", side, d.text)
                labels = d.labels
                for i in range(1, len(labels)):
                    yield ("wild", side, ".".join(labels[i:]))
        for version in (4, 6):
            present = prefixlens.get((side, version), set())
            mine = next((n for n in entity.nets if n.version == version), None)
            if mine is None:
                # Only a /0 of the family covers a rule with no nets of that family.
                if 0 in present:
                    yield ("net", side, version, 0, 0)
            else:
                # Every net must be covered, so the supernets of the first one are enough.
                yield from (_net_key(side, mine, p) for p in present if p <= mine.prefixlen)
        if entity.ports:
            port = entity.ports[0]
            if isinstance(port, NamedPort):
                yield ("named", side, port.name)
            else:
                for level in range(_PORT_BITS + 1):
                    yield ("port", side, level, port.first >> level)
        for field in _SELECTOR_FIELDS:
            value = getattr(entity, field)
            if value is not None:
                yield ("sel", side, field, value)
    if rule.icmp is not None:
        yield ("icmp", rule.icmp)
    protocol = protocol_number_or_none(rule.protocol)
    if protocol is not None:
        yield ("proto", protocol)
    yield _ANY


def _in_order(lists: list[list[int]]) -> Iterator[int]:
    """The indices of several ascending lists, merged, each once."""
    last = -1
    for i in heapq.merge(*lists):
        if i != last:
            last = i
            yield i


def _shadowing(rules: Sequence[Rule]) -> Iterator[tuple[int, dict[int, int], set[int]]]:
    """Yield (index, first earlier coverer per family, families) for each shadowed rule.

    The families are those the rule can match at all.

    Earlier rules are found through an index of anchors, in rule order, and the search stops
    once every family has its first coverer: the same answer as trying every earlier rule.
    """
    index: dict[tuple[object, ...], list[int]] = {}
    prefixlens: dict[tuple[str, int], set[int]] = {}
    families = [_families(rule) for rule in rules]
    for j, later in enumerate(rules):
        remaining = families[j]
        if remaining and j:
            shadowed_by: dict[int, int] = {}
            keys = dict.fromkeys(_lookup_keys(later, prefixlens))
            found = [index[k] for k in keys if k in index]
            for i in _in_order(found):
                for family in sorted(remaining & families[i]):
                    if family not in shadowed_by and _covers(rules[i], later, family):
                        shadowed_by[family] = i
                if len(shadowed_by) == len(remaining):
                    break
            if shadowed_by:
                yield j, shadowed_by, remaining
        if later.action == "Log":
            continue
        for key in dict.fromkeys(_anchor_keys(later)):
            index.setdefault(key, []).append(j)
            match key:
                case ("net", str() as side, int() as version, int() as prefixlen, _):
                    prefixlens.setdefault((side, version), set()).add(prefixlen)
