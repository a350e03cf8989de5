"""The kit's seeded cases: reproducible, valid, and covering what the kit promises every run."""

from __future__ import annotations

import ipaddress

import pytest

from fqdnpolicy.cluster import Cluster
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import NamedPort, PortRange, ResourceSet, Rule
from fqdnpolicy.testing import SEEDS, cases, generate_case
from fqdnpolicy.testing.cases import RECORDS, Case
from fqdnpolicy.testing.conformance import engine_arguments
from fqdnpolicy.testing.lab import Lab, iter_flows
from fqdnpolicy.testing.report import verdict_kind
from tests.engine.strategies import answer

MANY_SEEDS = range(40)


def features(resources: ResourceSet) -> set[str]:
    """What the case's rules exercise, by the names the kit's documentation uses."""
    found: set[str] = set()
    for tier in resources.tiers:
        found.add(f"tier {tier.metadata.name} ends with {tier.spec.default_action}")
    for policy in resources.policies:
        if policy.spec.order is not None:
            found.add("order")
        sides: list[tuple[str, Rule]] = [("egress", r) for r in policy.spec.egress]
        sides += [("ingress", r) for r in policy.spec.ingress]
        for direction, rule in sides:
            found.add(rule.action)
            found.add(direction)
            peer = rule.destination if direction == "egress" else rule.source
            own_ports = rule.destination.ports + rule.destination.not_ports
            for port in own_ports:
                if isinstance(port, NamedPort):
                    found.add("named port")
                elif isinstance(port, PortRange):
                    found.add("port range" if port.first != port.last else "port")
            if rule.destination.not_ports:
                found.add("notPorts")
            if rule.protocol in ("ICMP", "ICMPv6"):
                found.add(str(rule.protocol))
            if rule.ip_version == 6 or any(n.version == 6 for n in peer.nets):
                found.add("IPv6 rule")
            if peer.domains:
                found.add("domains")
            if peer.selector is not None:
                found.add("peer selector")
            found.update(f"nets {n}" for n in peer.nets)
    return found


PROMISED = {
    "Allow",
    "Deny",
    "Log",
    "Pass",
    "order",
    "egress",
    "ingress",
    "port",
    "port range",
    "named port",
    "notPorts",
    "domains",
    "peer selector",
    "IPv6 rule",
    "nets 203.0.113.0/24",
    "nets 203.0.113.12/32",
    "tier platform ends with Pass",
}


def learned_engine(case: Case) -> PolicyEngine:
    """The case's engine with every DNS record of the lab learned, as a run learns them."""
    cache = DNSCache()
    engine = PolicyEngine(case.resources, Cluster(endpoints=case.endpoints), cache)
    for record in RECORDS:
        answer(cache, record.name, *record.addresses, ttl=60)
    for alias, target, _ in cases.CNAMES:
        answer(cache, alias, target, ttl=60)
    return engine


def lab_of(case: Case) -> Lab:
    """The lab a run builds (constructing it builds nothing)."""
    workloads = [(e.key, e.interface) for e in case.endpoints]
    return Lab(
        workloads, cases.SERVICE_ADDRESSES, cases.TCP_PORTS, cases.UDP_PORTS, RECORDS, cases.CNAMES
    )


def test_a_seed_gives_the_same_case_again() -> None:
    assert generate_case(7) == generate_case(7)
    assert generate_case(7).yaml == generate_case(7).yaml


def test_different_seeds_give_different_policies() -> None:
    assert len({generate_case(seed).yaml for seed in MANY_SEEDS}) == len(MANY_SEEDS)


@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_every_case_holds_every_promised_feature(seed: int) -> None:
    found = features(generate_case(seed).resources)
    assert not PROMISED - found
    assert {"ICMP", "ICMPv6"} & found
    assert {"tier security ends with Deny", "tier security ends with Pass"} & found


@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_the_idle_endpoint_has_no_policy_and_the_others_do(seed: int) -> None:
    engine = learned_engine(generate_case(seed))
    for endpoint in engine.endpoints():
        applying = engine.policies_for(endpoint, "egress") + engine.policies_for(
            endpoint, "ingress"
        )
        assert bool(applying) == bool(endpoint.labels), endpoint.key


@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_the_change_replaces_one_of_the_case_s_policies(seed: int) -> None:
    case = generate_case(seed)
    identities = {(p.kind, p.metadata.namespace, p.metadata.name) for p in case.resources.policies}
    change = case.change
    assert (change.kind, change.metadata.namespace, change.metadata.name) in identities
    assert change not in case.resources.policies


@pytest.mark.parametrize("seed", SEEDS)
def test_the_ci_seeds_reach_every_kind_of_verdict(seed: int) -> None:
    case = generate_case(seed)
    engine = learned_engine(case)
    kinds = set()
    for flow in iter_flows(lab_of(case), icmp=True):
        verdict = engine.verdict(flow.src, flow.dst, **engine_arguments(flow))
        kinds.add(verdict_kind(verdict.action, verdict.default))
    assert kinds == {
        "Allow by rule",
        "Allow no policy",
        "Allow all tiers passed",
        "Deny by rule",
        "Deny at end of tier",
    }


def test_a_phase_probes_over_300_flows_of_every_protocol_and_family() -> None:
    flows = list(iter_flows(lab_of(generate_case(0)), icmp=True))
    assert len(flows) >= 300
    assert {f.protocol for f in flows} == {"tcp", "udp", "icmp"}
    assert {ipaddress.ip_address(f.dst).version for f in flows} == {4, 6}


def test_the_short_lived_and_the_refreshed_name_outlive_their_probes() -> None:
    records = {r.name: r for r in RECORDS}
    # Learned at the same time; the refresh lives past the short one so that "expired"
    # sees the short one gone and the refreshed one still there.
    assert records[cases.SHORT_NAME].ttl <= records[cases.REFRESH_NAME].ttl
    assert "203.0.113.12" in records[cases.SHORT_NAME].addresses  # also the narrow CIDR
