"""The shadowed-rule check: same answers as trying every earlier rule, in near-linear work.

The reference model below is the check as it first was: every rule against every earlier rule
through ``_covers``, in order. The fast check files earlier rules under anchors and looks up
only those that could cover a rule; it must give the same warnings in the same order.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fqdnpolicy.lint as lint_module
from fqdnpolicy.domains import DomainPattern
from fqdnpolicy.errors import Problem
from fqdnpolicy.lint import _covers, _families, _shadow_warning, _shadowed_rules, lint
from fqdnpolicy.model import (
    EntityRule,
    ICMPFields,
    IPNetwork,
    NamedPort,
    ObjectMeta,
    Policy,
    PolicySpec,
    Port,
    PortRange,
    ResourceSet,
    Rule,
    ServiceAccountMatch,
)
from fqdnpolicy.selector import parse_selector


def reference_shadowing(rules: Sequence[Rule]) -> Iterator[tuple[int, dict[int, int], set[int]]]:
    """Every rule against every earlier non-Log rule: the first coverer per family."""
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
        if shadowed_by:
            yield j, shadowed_by, remaining


def reference_warnings(policy: Policy) -> list[Problem]:
    return [
        _shadow_warning(policy, direction, rules, j, shadowed_by, remaining)
        for direction, rules in (("ingress", policy.spec.ingress), ("egress", policy.spec.egress))
        for j, shadowed_by, remaining in reference_shadowing(rules)
    ]


def make_policy(egress: Sequence[Rule], ingress: Sequence[Rule] = ()) -> Policy:
    return Policy(
        kind="GlobalNetworkPolicy",
        metadata=ObjectMeta(name="p"),
        spec=PolicySpec(types=("Ingress", "Egress"), ingress=tuple(ingress), egress=tuple(egress)),
    )


# Small pools of values, nested and overlapping, so that generated rules often cover each other.
DOMAINS = [
    DomainPattern(t)
    for t in (
        "example.com",
        "api.example.com",
        "a.b.example.com",
        "*.example.com",
        "*.b.example.com",
        "*.api.example.com",
        "api.*.com",
        "*.com",
        "other.org",
        "*.org",
    )
]
NETS: list[IPNetwork] = [
    ipaddress.ip_network(t)
    for t in (
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3/32",
        "10.2.0.0/16",
        "192.168.0.0/16",
        "::/0",
        "fd00::/8",
        "fd00:1::/32",
        "fd00:1::1/128",
    )
]
PORTS: list[Port] = [
    PortRange(53, 53),
    PortRange(80, 80),
    PortRange(443, 443),
    PortRange(1, 1024),
    PortRange(400, 500),
    PortRange(1000, 3000),
    PortRange(0, 65535),
    NamedPort("http"),
    NamedPort("dns"),
]
SELECTORS = [parse_selector(t) for t in ('app == "web"', 'app == "db"', "all()")]
ACCOUNTS = [ServiceAccountMatch(names=("api",)), ServiceAccountMatch(names=("web",))]


ICMPS = [ICMPFields(type=8), ICMPFields(type=8, code=0), ICMPFields(type=0)]

# Each field's values; a generated rule sets only a few fields, as real rules do, so that
# rules often cover one another.
ENTITY_FIELDS: dict[str, st.SearchStrategy[object]] = {
    "nets": st.lists(st.sampled_from(NETS), min_size=1, max_size=3, unique=True).map(tuple),
    "not_nets": st.sampled_from(NETS[1:4]).map(lambda n: (n,)),
    "selector": st.sampled_from(SELECTORS),
    "not_selector": st.just(SELECTORS[0]),
    "namespace_selector": st.sampled_from(SELECTORS[:2]),
    "ports": st.lists(st.sampled_from(PORTS), min_size=1, max_size=3, unique=True).map(tuple),
    "not_ports": st.sampled_from(PORTS[:2]).map(lambda p: (p,)),
    "service_accounts": st.sampled_from(ACCOUNTS),
}
DOMAIN_FIELD = st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=3, unique=True).map(tuple)
RULE_FIELDS: dict[str, st.SearchStrategy[object]] = {
    "protocol": st.sampled_from(["TCP", "UDP", "ICMP", "ICMPv6", 6, "SCTP"]),
    "not_protocol": st.sampled_from(["TCP", "UDP"]),
    "ip_version": st.sampled_from([4, 6]),
    "icmp": st.sampled_from(ICMPS),
    "not_icmp": st.just(ICMPS[0]),
}


@st.composite
def entities(draw: st.DrawFn, *, domains: bool) -> EntityRule:
    fields = {**ENTITY_FIELDS, "domains": DOMAIN_FIELD} if domains else ENTITY_FIELDS
    chosen = draw(st.sets(st.sampled_from(sorted(fields)), max_size=3))
    return EntityRule(**{name: draw(fields[name]) for name in sorted(chosen)})  # type: ignore[arg-type]


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    chosen = draw(st.sets(st.sampled_from(sorted(RULE_FIELDS)), max_size=2))
    return Rule(
        action=draw(st.sampled_from(["Allow", "Deny", "Pass", "Log"])),
        source=draw(entities(domains=False)),
        destination=draw(entities(domains=True)),
        **{name: draw(RULE_FIELDS[name]) for name in sorted(chosen)},  # type: ignore[arg-type]
    )


@settings(max_examples=200)
@given(
    egress=st.lists(rules(), max_size=30),
    ingress=st.lists(rules(), max_size=8),
)
def test_shadowed_rules_match_the_every_earlier_rule_reference(
    egress: list[Rule], ingress: list[Rule]
) -> None:
    policy = make_policy(egress, ingress)
    assert list(_shadowed_rules(policy)) == reference_warnings(policy)


@settings(max_examples=200)
@given(st.lists(rules(), min_size=1, max_size=12), st.integers(2, 8))
def test_repeated_rules_shadow_like_the_reference(block: list[Rule], times: int) -> None:
    # Repeats make every later copy covered by an earlier one, the case where the search stops
    # early; it must still name the first coverer of each family.
    policy = make_policy(block * times)
    assert list(_shadowed_rules(policy)) == reference_warnings(policy)


def large_policy(n: int) -> Policy:
    """A policy of ``n`` egress rules of the shapes real policies use, some shadowing others."""
    shapes: list[Callable[[int], Rule]] = [
        lambda k: Rule(
            action="Allow",
            protocol="TCP",
            destination=EntityRule(domains=(DomainPattern(f"svc{k}.example.com"),)),
        ),
        lambda k: Rule(
            action="Allow",
            destination=EntityRule(domains=(DomainPattern(f"*.team{k % 50}.example.com"),)),
        ),
        lambda k: Rule(
            action="Allow",
            destination=EntityRule(domains=(DomainPattern(f"a{k}.team{k % 50}.example.com"),)),
        ),
        lambda k: Rule(
            action="Deny",
            destination=EntityRule(nets=(ipaddress.ip_network(f"10.{k % 256}.{k // 256}.0/24"),)),
        ),
        lambda k: Rule(
            action="Allow",
            protocol="TCP",
            destination=EntityRule(ports=(PortRange(1024 + k, 1024 + k),)),
        ),
        lambda k: Rule(
            action="Allow",
            protocol="UDP",
            destination=EntityRule(ports=(PortRange(k, k + 100),)),
        ),
        lambda k: Rule(
            action="Allow",
            destination=EntityRule(selector=parse_selector(f'app == "a{k}"')),
        ),
        lambda k: Rule(action="Log"),
        lambda k: Rule(
            action="Allow",
            destination=EntityRule(nets=(ipaddress.ip_network(f"fd00:{k:x}::/32"),)),
        ),
        lambda k: Rule(action="Allow", protocol="TCP", icmp=None, not_protocol=None),
    ]
    return make_policy([shapes[k % len(shapes)](k) for k in range(n)])


def test_a_large_policy_costs_a_bounded_number_of_cover_checks_per_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0

    def counting(wide: Rule, narrow: Rule, family: int) -> bool:
        nonlocal calls
        calls += 1
        return _covers(wide, narrow, family)

    monkeypatch.setattr(lint_module, "_covers", counting)
    n = 4000
    warnings = lint(ResourceSet(policies=(large_policy(n),)))
    assert any(w.code == "shadowed-rule" for w in warnings)
    # Trying every earlier rule would take about n * n / 2 checks.
    assert calls <= 4 * n


def test_the_large_policy_warns_like_the_reference_at_a_smaller_size() -> None:
    policy = large_policy(300)
    found = list(_shadowed_rules(policy))
    assert found
    assert found == reference_warnings(policy)
