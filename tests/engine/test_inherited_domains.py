"""Addresses a selector set inherits from network sets' allowedEgressDomains.

A selector set in an egress Allow rule's destination takes the DNS members of the domain sets
of the network sets it selects. It holds an address while *any* of those links leads to it:
removing one network set must leave what the others still give, however the address arrived
(learned by the first build, or by an answer afterwards) and whether two network sets share a
domain set or each has its own.
"""

from __future__ import annotations

import attrs

from fqdnpolicy.cluster import Cluster
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import NetworkSet, ResourceSet
from tests.engine.strategies import (
    FakeClock,
    ToldSets,
    answer,
    entity,
    network_set,
    pod,
    policy,
    rendered_sets,
    rule,
)

ADDRESS = "198.51.100.7"


def _world(
    dns: DNSCache, first: tuple[str, ...], second: tuple[str, ...]
) -> tuple[PolicyEngine, NetworkSet]:
    # web may reach what the network sets labelled egress=ok allow, nothing else.
    web = policy(
        "web",
        namespace="default",
        selector='app == "web"',
        egress=[
            rule("Allow", protocol="TCP", destination=entity(selector='egress == "ok"')),
            rule("Deny"),
        ],
    )
    keep = network_set("keep", namespace="default", labels={"egress": "ok"}, domains=first)
    drop = network_set("drop", namespace="default", labels={"egress": "ok"}, domains=second)
    engine = PolicyEngine(
        ResourceSet((web,), (keep, drop)),
        Cluster((pod("default/web", "10.0.0.1", labels={"app": "web"}),)),
        dns,
    )
    return engine, drop


def _members_agree(engine: PolicyEngine) -> None:
    graph = engine._graph  # the structure under test
    projected = {s.set_id: set(s.members) for s in engine.datapath().sets}
    indexed = {
        ipset.info.set_id: graph.table.host_members(ipset.num)
        | graph.table.prefix_members(ipset.num)
        for ipset in graph.registry
    }
    assert projected == indexed


def test_a_name_two_network_sets_allow_stays_when_one_goes() -> None:
    # Learned by the first build: the name matches both network sets' domain sets, and the
    # selector set inherits the address from each.
    dns = DNSCache(clock=FakeClock())
    answer(dns, "api.example.com", ADDRESS)
    engine, drop = _world(dns, ("*.example.com",), ("api.example.com",))
    assert engine.verdict("default/web", ADDRESS, "TCP", 443).allowed
    engine.remove_network_set(drop)
    assert engine.verdict("default/web", ADDRESS, "TCP", 443).allowed
    _members_agree(engine)


def test_an_answer_two_network_sets_share_stays_when_one_goes() -> None:
    # Both network sets allow the same domains, so they share one domain set; the address
    # arrives after the build.
    dns = DNSCache(clock=FakeClock())
    engine, drop = _world(dns, ("api.example.com",), ("api.example.com",))
    answer(dns, "api.example.com", ADDRESS)
    assert engine.verdict("default/web", ADDRESS, "TCP", 443).allowed
    engine.remove_network_set(drop)
    assert engine.verdict("default/web", ADDRESS, "TCP", 443).allowed
    _members_agree(engine)


def test_the_last_network_set_going_takes_the_address_away() -> None:
    dns = DNSCache(clock=FakeClock())
    answer(dns, "api.example.com", ADDRESS)
    engine, drop = _world(dns, ("api.example.com",), ("api.example.com",))
    engine.remove_network_set(drop)
    keep = network_set("keep", namespace="default", labels={"egress": "ok"})
    engine.remove_network_set(keep)
    assert not engine.verdict("default/web", ADDRESS, "TCP", 443).allowed
    _members_agree(engine)


def test_an_endpoint_address_also_learned_by_dns_never_expires_while_the_endpoint_is_picked() -> (
    None
):
    # ADDRESS is DNS-learned through a network set the selector set picks, and becomes an
    # endpoint the same set picks, then stops being one: what deltas told a datapath (with
    # expiries, which datapaths with element timeouts act on) is what a fresh rendering holds.
    dns = DNSCache(clock=FakeClock())
    answer(dns, "api.example.com", ADDRESS)
    engine, _ = _world(dns, ("api.example.com",), ())
    told = ToldSets(engine)
    picked = pod("default/db", ADDRESS, labels={"egress": "ok"})
    for step in (picked, attrs.evolve(picked, labels={})):
        engine.upsert_endpoint(step)
        assert told.sets == rendered_sets(engine), step.labels
