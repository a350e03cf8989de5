"""Specification of Calico's evaluation semantics, hand-written.

The differential test trusts the reference evaluator; these cases are why it may. Each case
runs on the reference and, through the ``judge`` fixture, on the engine as well, so a
semantic question both readings got wrong the same way still has to get past a case that
says what Calico does.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import pytest

from fqdnpolicy.cluster import Cluster, Namespace, ServiceAccount
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import NetworkSet, Policy, ResourceSet, Tier
from tests.engine.reference import Default, RefVerdict, reference_verdict
from tests.engine.strategies import (
    FakeClock,
    answer,
    entity,
    network_set,
    pod,
    policy,
    rule,
    tier,
)

BACKEND = pod(
    "default/backend",
    "10.0.0.10",
    "fd00::10",
    labels={"app": "backend"},
    service_account="api",
    ports=[("http", 8080, "TCP")],
)
DATABASE = pod("default/database", "10.0.0.11", labels={"tier": "database"})
COREDNS = pod(
    "kube-system/coredns",
    "10.0.9.2",
    labels={"k8s-app": "kube-dns"},
    ports=[("dns", 53, "UDP")],
)
WEB = pod("staging/web", "10.0.2.5", labels={"app": "web"})
NAMESPACES = (
    Namespace("default", {"team": "core"}),
    Namespace("kube-system", {}),
    Namespace("staging", {"team": "web"}),
)
CLUSTER = Cluster(
    (BACKEND, DATABASE, COREDNS, WEB),
    NAMESPACES,
    (ServiceAccount("api", "default", {"role": "frontend"}),),
)


def world(
    *policies: Policy, tiers: tuple[Tier, ...] = (), sets: tuple[NetworkSet, ...] = ()
) -> ResourceSet:
    return ResourceSet(tuple(policies), sets, tiers)


class Judge(Protocol):
    def __call__(
        self,
        resources: ResourceSet,
        src: str,
        dst: str,
        protocol: str | int = "TCP",
        port: int | None = 443,
        *,
        dns: DNSCache | None = None,
        cluster: Cluster = CLUSTER,
        **kwargs: Any,
    ) -> RefVerdict: ...


def judge_by_reference(
    resources: ResourceSet,
    src: str,
    dst: str,
    protocol: str | int = "TCP",
    port: int | None = 443,
    *,
    dns: DNSCache | None = None,
    cluster: Cluster = CLUSTER,
    **kwargs: Any,
) -> RefVerdict:
    cache = dns if dns is not None else DNSCache(clock=FakeClock())
    return reference_verdict(resources, cluster, cache, src, dst, protocol, port, **kwargs)


def judge_by_engine(
    resources: ResourceSet,
    src: str,
    dst: str,
    protocol: str | int = "TCP",
    port: int | None = 443,
    *,
    dns: DNSCache | None = None,
    cluster: Cluster = CLUSTER,
    **kwargs: Any,
) -> RefVerdict:
    cache = dns if dns is not None else DNSCache(clock=FakeClock())
    v = PolicyEngine(resources, cluster, cache).verdict(src, dst, protocol, port, **kwargs)
    assert v.default in (None, "end-of-tier", "no-policy", "profile")
    default = cast(Default, v.default)
    return RefVerdict(v.action, v.policy, v.tier, v.rule_index, v.direction, default)


@pytest.fixture(params=[judge_by_reference, judge_by_engine], ids=["reference", "engine"])
def judge(request: pytest.FixtureRequest) -> Judge:
    fn: Judge = request.param
    return fn


def decided_by(v: RefVerdict) -> tuple[str, str | None, str | None, int | None]:
    return (v.action, v.policy, v.tier, v.rule_index)


OUTSIDE = "198.51.100.7"

# ----------------------------------------------------------------------------- defaults


def test_no_policy_at_all_allows_with_default_no_policy(judge: Judge) -> None:
    v = judge(world(), "default/backend", OUTSIDE)
    assert (v.action, v.default, v.policy, v.tier, v.direction) == (
        "Allow",
        "no-policy",
        None,
        None,
        "egress",
    )


def test_applying_policy_with_no_matching_rule_drops_at_end_of_its_tier(judge: Judge) -> None:
    p = policy(
        "only-db",
        namespace="default",
        egress=[rule("Allow", destination=entity(selector='tier == "database"'))],
    )
    v = judge(world(p), "default/backend", OUTSIDE)
    assert (v.action, v.default, v.tier, v.policy, v.rule_index) == (
        "Deny",
        "end-of-tier",
        "default",
        None,
        None,
    )


def test_policy_for_other_endpoints_does_not_apply(judge: Judge) -> None:
    p = policy("web-only", namespace="default", selector='app == "web"', egress=[rule("Deny")])
    assert judge(world(p), "default/backend", OUTSIDE).default == "no-policy"


def test_policy_of_another_namespace_does_not_apply(judge: Judge) -> None:
    p = policy("staging", namespace="staging", egress=[rule("Deny")])
    assert judge(world(p), "default/backend", OUTSIDE).default == "no-policy"


def test_policy_whose_types_omit_the_direction_does_not_apply(judge: Judge) -> None:
    p = policy("in-only", namespace="default", types=["Ingress"], egress=[rule("Deny")])
    assert judge(world(p), "default/backend", OUTSIDE).default == "no-policy"


def test_policy_with_egress_type_and_no_rules_denies_everything(judge: Judge) -> None:
    p = policy("lockdown", namespace="default", types=["Egress"])
    assert judge(world(p), "default/backend", OUTSIDE).default == "end-of-tier"


# ----------------------------------------------------------------------------- actions


def test_first_matching_allow_decides_and_is_reported_with_its_index(judge: Judge) -> None:
    p = policy(
        "allow-web",
        namespace="default",
        egress=[rule("Deny", protocol="UDP"), rule("Allow", protocol="TCP"), rule("Deny")],
    )
    v = judge(world(p), "default/backend", OUTSIDE)
    assert decided_by(v) == ("Allow", "NetworkPolicy default/allow-web", "default", 1)
    assert v.default is None


def test_log_rule_is_recorded_and_evaluation_continues(judge: Judge) -> None:
    p = policy("log-then-deny", namespace="default", egress=[rule("Log"), rule("Deny")])
    v = judge(world(p), "default/backend", OUTSIDE)
    assert decided_by(v) == ("Deny", "NetworkPolicy default/log-then-deny", "default", 1)


def test_log_alone_does_not_decide_so_the_tier_drops(judge: Judge) -> None:
    p = policy("log-only", namespace="default", egress=[rule("Log")])
    assert judge(world(p), "default/backend", OUTSIDE).default == "end-of-tier"


def test_pass_skips_the_rest_of_the_tier_to_the_next_tier(judge: Judge) -> None:
    security = tier("security", 10)
    passer = policy("pass-all", tier="security", order=1, egress=[rule("Pass"), rule("Deny")])
    later = policy("deny-later", tier="security", order=500, egress=[rule("Deny")])
    allow = policy("allow", namespace="default", egress=[rule("Allow")])
    v = judge(world(passer, later, allow, tiers=(security,)), "default/backend", OUTSIDE)
    assert decided_by(v) == ("Allow", "NetworkPolicy default/allow", "default", 0)


def test_pass_out_of_the_last_tier_allows_by_profile(judge: Judge) -> None:
    p = policy("pass", namespace="default", egress=[rule("Pass")])
    v = judge(world(p), "default/backend", OUTSIDE)
    assert (v.action, v.default, v.tier) == ("Allow", "profile", None)


def test_tier_with_pass_default_action_hands_undecided_flows_to_the_next_tier(judge: Judge) -> None:
    platform = tier("platform", 10, "Pass")
    nothing = policy("nothing", tier="platform", egress=[rule("Allow", protocol="UDP")])
    deny = policy("deny", namespace="default", egress=[rule("Deny")])
    v = judge(world(nothing, deny, tiers=(platform,)), "default/backend", OUTSIDE)
    assert decided_by(v) == ("Deny", "NetworkPolicy default/deny", "default", 0)
    alone = judge(world(nothing, tiers=(platform,)), "default/backend", OUTSIDE)
    assert (alone.action, alone.default) == ("Allow", "profile")


def test_tier_without_applying_policy_is_skipped_even_when_it_would_deny(judge: Judge) -> None:
    security = tier("security", 10)
    other = policy("web", tier="security", selector='app == "web"', egress=[rule("Deny")])
    allow = policy("allow", namespace="default", egress=[rule("Allow")])
    v = judge(world(other, allow, tiers=(security,)), "default/backend", OUTSIDE)
    assert v.policy == "NetworkPolicy default/allow"


# ----------------------------------------------------------------------------- ordering


def test_tiers_run_by_order_with_missing_order_last(judge: Judge) -> None:
    first, unordered = tier("first", 5), tier("unordered")
    deny = policy("deny", tier="unordered", egress=[rule("Deny")])
    allow = policy("allow", tier="first", egress=[rule("Allow")])
    v = judge(world(deny, allow, tiers=(unordered, first)), "default/backend", OUTSIDE)
    assert (v.action, v.tier) == ("Allow", "first")


def test_default_tier_sorts_at_order_one_million(judge: Judge) -> None:
    late, early = tier("late", 2_000_000), tier("early", 999_999)
    allow_late = policy("late", tier="late", egress=[rule("Allow")])
    allow_early = policy("early", tier="early", egress=[rule("Allow")])
    deny = policy("deny", namespace="default", egress=[rule("Deny")])
    v = judge(world(allow_late, deny, tiers=(late,)), "default/backend", OUTSIDE)
    assert (v.action, v.tier) == ("Deny", "default")
    v = judge(world(allow_early, deny, tiers=(early,)), "default/backend", OUTSIDE)
    assert (v.action, v.tier) == ("Allow", "early")


def test_tiers_with_equal_order_run_by_name(judge: Judge) -> None:
    b, a = tier("bbb", 10), tier("aaa", 10)
    deny = policy("deny", tier="bbb", egress=[rule("Deny")])
    allow = policy("allow", tier="aaa", egress=[rule("Allow")])
    assert judge(world(deny, allow, tiers=(b, a)), "default/backend", OUTSIDE).tier == "aaa"


def test_tier_named_by_a_policy_but_not_loaded_sorts_last_and_denies_at_its_end(
    judge: Judge,
) -> None:
    ghost = policy("ghost", tier="ghost", egress=[rule("Allow", protocol="UDP")])
    passer = policy("pass", namespace="default", egress=[rule("Pass")])
    v = judge(world(ghost, passer), "default/backend", OUTSIDE)
    assert (v.action, v.default, v.tier) == ("Deny", "end-of-tier", "ghost")


def test_policies_run_by_order_with_missing_order_after_any_number(judge: Judge) -> None:
    unordered = policy("aaa", namespace="default", egress=[rule("Deny")])
    ordered = policy("zzz", namespace="default", order=1e9, egress=[rule("Allow")])
    assert judge(world(unordered, ordered), "default/backend", OUTSIDE).policy == (
        "NetworkPolicy default/zzz"
    )


def test_policies_with_equal_order_run_by_name(judge: Judge) -> None:
    b = policy("bbb", order=5, egress=[rule("Deny")])
    a = policy("aaa", namespace="default", order=5, egress=[rule("Allow")])
    assert judge(world(b, a), "default/backend", OUTSIDE).policy == "NetworkPolicy default/aaa"


# ----------------------------------------------------------------------------- applying


def test_global_policy_namespace_selector_picks_endpoints_by_namespace_labels(judge: Judge) -> None:
    p = policy("core", namespace_selector='team == "core"', egress=[rule("Deny")])
    assert judge(world(p), "default/backend", OUTSIDE).action == "Deny"
    assert judge(world(p), "staging/web", OUTSIDE).default == "no-policy"


def test_policy_selector_sees_the_implicit_namespace_and_account_labels(judge: Judge) -> None:
    p = policy(
        "implicit",
        selector='projectcalico.org/namespace == "default" && pcsa.role == "frontend"',
        egress=[rule("Deny")],
    )
    assert judge(world(p), "default/backend", OUTSIDE).action == "Deny"
    assert judge(world(p), "default/database", OUTSIDE).default == "no-policy"


def test_service_account_selector_matches_the_accounts_labels(judge: Judge) -> None:
    p = policy("sa", namespace="default", sa_selector='role == "frontend"', egress=[rule("Deny")])
    assert judge(world(p), "default/backend", OUTSIDE).action == "Deny"
    assert judge(world(p), "default/database", OUTSIDE).default == "no-policy"


# ----------------------------------------------------------------------------- scoping


def dns_rule(**dest: Any) -> Policy:
    return policy(
        "dns",
        namespace="default",
        egress=[rule("Allow", protocol="UDP", destination=entity(ports=[53], **dest))],
    )


def test_namespaced_selector_reaches_only_the_policys_own_namespace(judge: Judge) -> None:
    p = dns_rule(selector='k8s-app == "kube-dns"')
    v = judge(world(p), "default/backend", "10.0.9.2", "UDP", 53)
    assert (v.action, v.default) == ("Deny", "end-of-tier")


def test_namespace_selector_extends_a_namespaced_selector_to_other_namespaces(judge: Judge) -> None:
    p = dns_rule(
        selector='k8s-app == "kube-dns"',
        namespace_selector='kubernetes.io/metadata.name == "kube-system"',
    )
    v = judge(world(p), "default/backend", "10.0.9.2", "UDP", 53)
    assert decided_by(v) == ("Allow", "NetworkPolicy default/dns", "default", 0)


def test_global_policy_selector_reaches_every_namespace(judge: Judge) -> None:
    p = policy(
        "dns",
        egress=[rule("Allow", destination=entity(selector='k8s-app == "kube-dns"'))],
    )
    assert judge(world(p), "default/backend", "10.0.9.2", "UDP", 53).action == "Allow"


def test_namespace_selector_alone_reaches_every_endpoint_of_matching_namespaces(
    judge: Judge,
) -> None:
    p = dns_rule(namespace_selector='team == "web"')
    assert judge(world(p), "default/backend", "10.0.2.5", "UDP", 53).action == "Allow"
    assert judge(world(p), "default/backend", "10.0.9.2", "UDP", 53).action == "Deny"
    assert judge(world(p), "default/backend", OUTSIDE, "UDP", 53).action == "Deny"


def test_selector_never_matches_an_address_no_endpoint_or_set_holds(judge: Judge) -> None:
    p = policy("all", egress=[rule("Allow", destination=entity(selector="all()"))])
    assert judge(world(p), "default/backend", OUTSIDE).action == "Deny"
    assert judge(world(p), "default/backend", "10.0.0.11").action == "Allow"


def test_global_namespace_selector_reaches_global_network_sets_only(judge: Judge) -> None:
    gset = network_set("ext", labels={"zone": "ext"}, nets=["198.51.100.0/24"])
    nset = network_set(
        "local", namespace="default", labels={"zone": "ext"}, nets=["203.0.113.0/24"]
    )
    p = policy(
        "global",
        namespace="default",
        egress=[
            rule(
                "Allow", destination=entity(selector='zone == "ext"', namespace_selector="global()")
            )
        ],
    )
    rs = world(p, sets=(gset, nset))
    assert judge(rs, "default/backend", OUTSIDE).action == "Allow"
    assert judge(rs, "default/backend", "203.0.113.1").action == "Deny"


def test_namespaced_policy_without_namespace_selector_reaches_its_namespaces_sets_only(
    judge: Judge,
) -> None:
    gset = network_set("ext", labels={"zone": "ext"}, nets=["198.51.100.0/24"])
    nset = network_set(
        "local", namespace="default", labels={"zone": "ext"}, nets=["203.0.113.0/24"]
    )
    p = policy(
        "sets",
        namespace="default",
        egress=[rule("Allow", destination=entity(selector='zone == "ext"'))],
    )
    rs = world(p, sets=(gset, nset))
    assert judge(rs, "default/backend", OUTSIDE).action == "Deny"
    assert judge(rs, "default/backend", "203.0.113.1").action == "Allow"


def test_not_selector_in_a_namespaced_policy_still_needs_a_peer_in_its_namespace(
    judge: Judge,
) -> None:
    p = policy(
        "not-db",
        namespace="default",
        egress=[rule("Allow", destination=entity(not_selector='tier == "database"'))],
    )
    assert judge(world(p), "default/backend", "10.0.0.11").action == "Deny"
    assert judge(world(p), "default/backend", "10.0.0.10").action == "Allow"
    assert judge(world(p), "default/backend", "10.0.2.5").action == "Deny"  # staging
    assert judge(world(p), "default/backend", OUTSIDE).action == "Deny"


def test_not_selector_in_a_global_policy_matches_any_address_not_selected(judge: Judge) -> None:
    p = policy(
        "not-db", egress=[rule("Allow", destination=entity(not_selector='tier == "database"'))]
    )
    assert judge(world(p), "default/backend", "10.0.0.11").action == "Deny"
    assert judge(world(p), "default/backend", OUTSIDE).action == "Allow"


def test_network_set_nets_put_addresses_in_the_selector(judge: Judge) -> None:
    nset = network_set(
        "partners", namespace="default", labels={"kind": "partner"}, nets=["203.0.113.0/24"]
    )
    p = policy(
        "partners",
        namespace="default",
        egress=[rule("Allow", destination=entity(selector='kind == "partner"'))],
    )
    rs = world(p, sets=(nset,))
    assert judge(rs, "default/backend", "203.0.113.9").action == "Allow"
    assert judge(rs, "default/backend", "203.0.114.9").action == "Deny"


def test_own_side_selector_is_judged_on_the_policed_endpoint(judge: Judge) -> None:
    p = policy(
        "from-backend",
        egress=[rule("Allow", source=entity(selector='app == "backend"'))],
    )
    assert judge(world(p), "default/backend", OUTSIDE).action == "Allow"
    assert judge(world(p), "default/database", OUTSIDE).action == "Deny"


# ----------------------------------------------------------------------------- nets


def test_nets_match_addresses_inside_any_cidr(judge: Judge) -> None:
    p = policy(
        "legacy",
        namespace="default",
        egress=[rule("Allow", destination=entity(nets=["10.9.0.0/16", "203.0.113.0/24"]))],
    )
    assert judge(world(p), "default/backend", "203.0.113.4").action == "Allow"
    assert judge(world(p), "default/backend", OUTSIDE).action == "Deny"


def test_not_nets_match_addresses_outside_every_cidr(judge: Judge) -> None:
    p = policy(
        "external",
        namespace="default",
        egress=[rule("Deny", destination=entity(not_nets=["10.0.0.0/8"]))],
    )
    assert judge(world(p), "default/backend", OUTSIDE).action == "Deny"
    v = judge(world(p), "default/backend", "10.0.0.11")
    assert (v.action, v.default) == ("Deny", "end-of-tier")  # rule did not match: tier end


def test_ip_version_picks_the_flows_family(judge: Judge) -> None:
    p = policy("v6", namespace="default", egress=[rule("Allow", ip_version=6)])
    assert judge(world(p), "default/backend", "2001:db8::5").action == "Allow"
    assert judge(world(p), "default/backend", OUTSIDE).action == "Deny"


# ----------------------------------------------------------------------------- ports


def test_port_ranges_are_inclusive(judge: Judge) -> None:
    p = policy(
        "range",
        namespace="default",
        egress=[rule("Allow", protocol="TCP", destination=entity(ports=["6040:6050"]))],
    )
    assert judge(world(p), "default/backend", OUTSIDE, "TCP", 6040).action == "Allow"
    assert judge(world(p), "default/backend", OUTSIDE, "TCP", 6050).action == "Allow"
    assert judge(world(p), "default/backend", OUTSIDE, "TCP", 6051).action == "Deny"


def test_named_port_resolves_on_the_destination_endpoint_with_the_same_protocol(
    judge: Judge,
) -> None:
    p = policy(
        "http",
        namespace="default",
        egress=[rule("Allow", protocol="TCP", destination=entity(ports=["http"]))],
    )
    assert judge(world(p), "default/database", "10.0.0.10", "TCP", 8080).action == "Allow"
    assert judge(world(p), "default/database", "10.0.0.10", "TCP", 80).action == "Deny"
    assert judge(world(p), "default/database", OUTSIDE, "TCP", 8080).action == "Deny"
    udp = policy(
        "udp",
        namespace="default",
        egress=[rule("Allow", protocol="UDP", destination=entity(ports=["http"]))],
    )
    assert judge(world(udp), "default/database", "10.0.0.10", "UDP", 8080).action == "Deny"


def test_not_ports_exclude_listed_ports(judge: Judge) -> None:
    p = policy(
        "not-80",
        namespace="default",
        egress=[rule("Allow", protocol="TCP", destination=entity(not_ports=[80]))],
    )
    assert judge(world(p), "default/backend", OUTSIDE, "TCP", 443).action == "Allow"
    assert judge(world(p), "default/backend", OUTSIDE, "TCP", 80).action == "Deny"


def test_source_ports_never_match_when_the_source_port_is_unknown(judge: Judge) -> None:
    p = policy(
        "sport",
        namespace="default",
        egress=[rule("Allow", protocol="UDP", source=entity(ports=[53]))],
    )
    assert judge(world(p), "default/backend", OUTSIDE, "UDP", 53).action == "Deny"
    assert judge(world(p), "default/backend", OUTSIDE, "UDP", 53, src_port=53).action == "Allow"
    assert judge(world(p), "default/backend", OUTSIDE, "UDP", 53, src_port=54).action == "Deny"


# ----------------------------------------------------------------------------- protocols


@pytest.mark.parametrize(
    ("written", "flow"), [("TCP", 6), (6, "TCP"), ("SCTP", 132), ("UDPLite", 136), (47, 47)]
)
def test_protocols_match_by_name_or_number(
    judge: Judge, written: str | int, flow: str | int
) -> None:
    p = policy("proto", namespace="default", egress=[rule("Allow", protocol=written)])
    assert judge(world(p), "default/backend", OUTSIDE, flow, None).action == "Allow"


def test_not_protocol_excludes_one_protocol(judge: Judge) -> None:
    p = policy("not-udp", namespace="default", egress=[rule("Allow", not_protocol="UDP")])
    assert judge(world(p), "default/backend", OUTSIDE, "TCP").action == "Allow"
    assert judge(world(p), "default/backend", OUTSIDE, 17, 53).action == "Deny"


def test_icmp_type_and_code_must_both_match(judge: Judge) -> None:
    p = policy("ping", namespace="default", egress=[rule("Allow", protocol="ICMP", icmp=(8, 0))])
    rs = world(p)
    assert (
        judge(rs, "default/backend", OUTSIDE, "ICMP", None, icmp_type=8, icmp_code=0).action
        == "Allow"
    )
    assert (
        judge(rs, "default/backend", OUTSIDE, "ICMP", None, icmp_type=8, icmp_code=1).action
        == "Deny"
    )
    assert (
        judge(rs, "default/backend", OUTSIDE, "ICMP", None, icmp_type=0, icmp_code=0).action
        == "Deny"
    )
    assert judge(rs, "default/backend", OUTSIDE, "TCP", 443).action == "Deny"


def test_not_icmp_excludes_a_type_of_any_code(judge: Judge) -> None:
    p = policy(
        "no-redirect", namespace="default", egress=[rule("Allow", protocol=1, not_icmp=(5, None))]
    )
    rs = world(p)
    assert (
        judge(rs, "default/backend", OUTSIDE, "ICMP", None, icmp_type=5, icmp_code=1).action
        == "Deny"
    )
    assert (
        judge(rs, "default/backend", OUTSIDE, "ICMP", None, icmp_type=8, icmp_code=0).action
        == "Allow"
    )


# ----------------------------------------------------------------------------- accounts


def test_service_accounts_by_name_and_selector_match_only_endpoints(judge: Judge) -> None:
    by_name = policy("to-api", egress=[rule("Allow", destination=entity(sa_names=["api"]))])
    by_labels = policy(
        "to-frontend", egress=[rule("Allow", destination=entity(sa_selector='role == "frontend"'))]
    )
    for p in (by_name, by_labels):
        assert judge(world(p), "default/database", "10.0.0.10").action == "Allow"
        assert judge(world(p), "default/backend", "10.0.0.11").action == "Deny"
        assert judge(world(p), "default/backend", OUTSIDE).action == "Deny"


# ----------------------------------------------------------------------------- domains


def test_domains_match_addresses_the_cache_holds_for_matching_names_through_cnames(
    judge: Judge,
) -> None:
    clock = FakeClock()
    cache = DNSCache(clock=clock)
    answer(cache, "www.example.com", "edge.cdn.example.net", "198.51.100.7", ttl=60)
    p = policy(
        "www",
        namespace="default",
        egress=[rule("Allow", destination=entity(domains=["www.example.com"]))],
    )
    wild = policy(
        "cdn",
        namespace="default",
        egress=[rule("Allow", destination=entity(domains=["*.example.net"]))],
    )
    assert judge(world(p), "default/backend", OUTSIDE, dns=cache).action == "Allow"
    assert judge(world(wild), "default/backend", OUTSIDE, dns=cache).action == "Allow"
    assert judge(world(p), "default/backend", "198.51.100.8", dns=cache).action == "Deny"
    clock.advance(61)
    cache.expire()
    assert judge(world(p), "default/backend", OUTSIDE, dns=cache).action == "Deny"


def test_shared_address_allows_every_name_that_leads_to_it(judge: Judge) -> None:
    cache = DNSCache(clock=FakeClock())
    answer(cache, "api.example.com", "198.51.100.7")
    answer(cache, "evil.example.org", "198.51.100.7")
    p = policy(
        "api",
        namespace="default",
        egress=[rule("Allow", destination=entity(domains=["api.example.com"]))],
    )
    assert judge(world(p), "default/backend", OUTSIDE, dns=cache).action == "Allow"


def test_network_set_domains_count_for_egress_allow_rules_only(judge: Judge) -> None:
    cache = DNSCache(clock=FakeClock())
    answer(cache, "api.example.com", "198.51.100.7")
    nset = network_set("saas", labels={"kind": "saas"}, domains=["*.example.com"])
    allow = policy("saas", egress=[rule("Allow", destination=entity(selector='kind == "saas"'))])
    deny = policy(
        "no-saas",
        egress=[rule("Deny", destination=entity(selector='kind == "saas"')), rule("Allow")],
    )
    assert (
        judge(world(allow, sets=(nset,)), "default/backend", OUTSIDE, dns=cache).action == "Allow"
    )
    v = judge(world(deny, sets=(nset,)), "default/backend", OUTSIDE, dns=cache)
    assert decided_by(v) == ("Allow", "GlobalNetworkPolicy no-saas", "default", 1)


# ----------------------------------------------------------------------------- both ends


def test_flow_between_endpoints_must_pass_the_destinations_ingress(judge: Judge) -> None:
    out = policy("out", namespace="default", egress=[rule("Allow")])
    closed = policy(
        "closed",
        namespace="default",
        selector='tier == "database"',
        ingress=[rule("Allow", source=entity(selector='app == "web"'))],
    )
    v = judge(world(out, closed), "default/backend", "10.0.0.11")
    assert (v.action, v.direction, v.default, v.tier) == (
        "Deny",
        "ingress",
        "end-of-tier",
        "default",
    )
    by_key = judge(world(out, closed), "default/backend", "default/database")
    assert by_key == v


def test_egress_denial_is_reported_before_the_destinations_ingress(judge: Judge) -> None:
    out = policy("out", namespace="default", egress=[rule("Deny")])
    closed = policy(
        "closed", namespace="default", selector='tier == "database"', ingress=[rule("Deny")]
    )
    v = judge(world(out, closed), "default/backend", "10.0.0.11")
    assert (v.direction, v.policy) == ("egress", "NetworkPolicy default/out")


def test_allowed_both_ways_reports_the_egress_side(judge: Judge) -> None:
    out = policy("out", namespace="default", egress=[rule("Allow")])
    v = judge(world(out), "default/backend", "10.0.0.11")
    assert (v.action, v.direction, v.policy) == ("Allow", "egress", "NetworkPolicy default/out")


def test_ingress_from_an_outside_address_judges_only_the_destination(judge: Judge) -> None:
    p = policy(
        "in",
        namespace="default",
        selector='tier == "database"',
        ingress=[rule("Allow", source=entity(nets=["198.51.100.0/24"]))],
    )
    assert judge(world(p), OUTSIDE, "default/database", direction="ingress").action == "Allow"
    v = judge(world(p), "192.0.2.1", "default/database", direction="ingress")
    assert (v.action, v.direction, v.default) == ("Deny", "ingress", "end-of-tier")


def test_ingress_named_port_resolves_on_the_policed_destination(judge: Judge) -> None:
    p = policy(
        "in-http",
        namespace="default",
        selector='app == "backend"',
        ingress=[rule("Allow", protocol="TCP", destination=entity(ports=["http"]))],
    )
    assert (
        judge(
            world(p), "default/database", "default/backend", "TCP", 8080, direction="ingress"
        ).action
        == "Allow"
    )
    assert (
        judge(
            world(p), "default/database", "default/backend", "TCP", 80, direction="ingress"
        ).action
        == "Deny"
    )


def test_own_side_selector_also_matches_through_a_network_set_holding_the_endpoints_address(
    judge: Judge,
) -> None:
    # Calico turns a source selector into an IP set: a network set whose nets hold the
    # sender's address puts it in the set as surely as the sender's own labels do.
    nodes = network_set("pods", labels={"zone": "pods"}, nets=["10.0.0.0/24"])
    p = policy("from-pods", egress=[rule("Allow", source=entity(selector='zone == "pods"'))])
    rs = world(p, sets=(nodes,))
    assert judge(rs, "default/backend", OUTSIDE).action == "Allow"
    assert judge(rs, "staging/web", OUTSIDE).action == "Deny"  # 10.0.2.5 is outside


def test_not_ports_fail_when_the_port_is_unknown(judge: Judge) -> None:
    p = policy(
        "not-sport-53",
        namespace="default",
        egress=[rule("Allow", protocol="UDP", source=entity(not_ports=[53]))],
    )
    assert judge(world(p), "default/backend", OUTSIDE, "UDP", 53, src_port=1234).action == "Allow"
    assert judge(world(p), "default/backend", OUTSIDE, "UDP", 53, src_port=53).action == "Deny"
    assert judge(world(p), "default/backend", OUTSIDE, "UDP", 53).action == "Deny"


def test_not_selector_excludes_an_address_any_namespace_object_holds(judge: Judge) -> None:
    # notSelector is not namespace-scoped: a staging NetworkSet labelled bad holding the
    # database's address excludes it from a default-namespace policy's rule.
    bad = network_set("bad", namespace="staging", labels={"bad": "yes"}, nets=["10.0.0.11/32"])
    p = policy(
        "not-bad",
        namespace="default",
        egress=[rule("Allow", destination=entity(not_selector='bad == "yes"'))],
    )
    assert judge(world(p, sets=(bad,)), "default/backend", "10.0.0.11").action == "Deny"
    assert judge(world(p), "default/backend", "10.0.0.11").action == "Allow"
