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

import ipaddress
from collections.abc import Iterator, Sequence

from fqdnpolicy.domains import DomainPattern, public_suffix_covered
from fqdnpolicy.errors import Problem
from fqdnpolicy.model import (
    DEFAULT_TIER,
    EntityRule,
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


def _shadowed_rules(policy: Policy) -> Iterator[Problem]:
    for direction, rules in (("ingress", policy.spec.ingress), ("egress", policy.spec.egress)):
        for j, later in enumerate(rules):
            remaining = _families(later)
            if not remaining:
                continue
            shadowed_by: dict[int, int] = {}
            for i in range(j):
                earlier = rules[i]
                if earlier.action == "Log":
                    continue
                for family in sorted(remaining & _families(earlier)):
                    if family not in shadowed_by and _covers(earlier, later, family):
                        shadowed_by[family] = i
            if not shadowed_by:
                continue
            path = f"spec.{direction}[{j}]"
            by = sorted(set(shadowed_by.values()))
            first = rules[by[0]]
            earlier_text = ", ".join(f"{direction}[{i}] ({rules[i].action})" for i in by)
            if set(shadowed_by) == remaining:
                message = (
                    f"this rule can never match: {earlier_text} before it matches all of its "
                    "traffic"
                )
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
            yield _warn(policy, path, message, "shadowed-rule", hint)
