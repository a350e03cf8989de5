"""A name answered again goes to the sets its name matches now, after policies change."""

from __future__ import annotations

import fqdnpolicy
from fqdnpolicy.dns import DNSCache, DNSChange
from fqdnpolicy.dns.wire import Extracted, Record
from fqdnpolicy.engine import PolicyEngine
from tests.engine.strategies import FakeClock, ToldSets, rendered_sets

POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  selector: app == "web"
  egress:
  - action: Allow
    protocol: TCP
    destination: {{domains: ["{domain}"], ports: [{port}]}}
"""


def _answer(cache: DNSCache, name: str, ip: str) -> None:
    cache.ingest(Extracted(name, True, 0, 0, False, (Record(name, 1, 300, ip),)))


def _engine(cache: DNSCache) -> PolicyEngine:
    cluster = fqdnpolicy.Cluster(
        [fqdnpolicy.Endpoint("web", "default", {"app": "web"}, ips=["198.51.100.20"])],
        [fqdnpolicy.Namespace("default")],
    )
    wide = POLICY.format(name="wide", domain="*.example.com", port=443)
    return PolicyEngine(fqdnpolicy.loads(wide), cluster, cache)


def test_a_set_added_later_gets_the_next_address_of_a_name_already_followed() -> None:
    cache = DNSCache(trusted_servers=["198.51.100.53"])
    engine = _engine(cache)
    _answer(cache, "api.example.com", "203.0.113.1")  # followed, for the wide set
    exact = POLICY.format(name="exact", domain="api.example.com", port=8443)
    engine.upsert_policy(fqdnpolicy.loads(exact).policies[0])
    _answer(cache, "api.example.com", "203.0.113.2")
    for ip in ("203.0.113.1", "203.0.113.2"):
        assert engine.verdict("default/web", ip, "TCP", 8443).action == "Allow", ip
        assert engine.verdict("default/web", ip, "TCP", 443).action == "Allow", ip
    engine.close()


def test_a_set_removed_no_longer_gets_the_next_address_of_a_name() -> None:
    cache = DNSCache(trusted_servers=["198.51.100.53"])
    engine = _engine(cache)
    exact = fqdnpolicy.loads(POLICY.format(name="exact", domain="api.example.com", port=8443))
    engine.upsert_policy(exact.policies[0])
    _answer(cache, "api.example.com", "203.0.113.1")
    engine.remove_policy(exact.policies[0])
    _answer(cache, "api.example.com", "203.0.113.2")
    members = {s.definition: set(s.members) for s in engine.datapath().sets if s.kind == "domains"}
    assert members == {"*.example.com": {"203.0.113.1", "203.0.113.2"}}
    engine.close()


def test_two_names_reaching_one_new_address_in_one_answer_give_it_both_names_sets() -> None:
    # api.example.com CNAME edge.example.net, which has the address: one batch of changes
    # brings the address through both names, the first as a new address, the second not.
    cache = DNSCache(trusted_servers=["198.51.100.53"])
    engine = _engine(cache)
    edge = POLICY.format(name="edge", domain="edge.example.net", port=8443)
    engine.upsert_policy(fqdnpolicy.loads(edge).policies[0])
    records = (
        Record("api.example.com", 5, 300, "edge.example.net"),
        Record("edge.example.net", 1, 300, "203.0.113.9"),
    )
    cache.ingest(Extracted("api.example.com", True, 0, 0, False, records))
    for port in (443, 8443):
        assert engine.verdict("default/web", "203.0.113.9", "TCP", port).action == "Allow", port
    engine.close()


def test_a_set_filled_before_the_engine_hears_of_changes_already_in_the_cache() -> None:
    # A subscriber ahead of the engine changes policies while a batch is on its way: the
    # cache has dropped api.example.com's address, the engine has not heard of it yet. A set
    # created then misses the name; the name is answered again and a third set finds it, with
    # sets it has not been filed under since. Every delta must make sense in order (a member
    # leaves only a set it joined) and end where a fresh rendering is.
    clock = FakeClock()
    cache = DNSCache(clock=clock)
    engine: PolicyEngine | None = None
    exact = POLICY.format(name="exact", domain="api.example.com", port=8443)
    pair = POLICY.replace('["{domain}"]', '["api.example.com", "other.example.org"]')
    both = pair.format(name="both", port=9443)

    def in_flight(changes: list[DNSChange]) -> None:
        if engine is None or any(c.added for c in changes):
            return
        engine.upsert_policy(fqdnpolicy.loads(exact).policies[0])
        _answer(cache, "api.example.com", "203.0.113.1")  # delivered after this returns
        engine.upsert_policy(fqdnpolicy.loads(both).policies[0])

    cache.subscribe(in_flight)  # before the engine's own subscription
    _answer(cache, "api.example.com", "203.0.113.1")
    engine = _engine(cache)
    told = ToldSets(engine)
    clock.advance(301)
    cache.expire()
    assert told.sets == rendered_sets(engine)
    for port in (443, 8443, 9443):
        assert engine.verdict("default/web", "203.0.113.1", "TCP", port).action == "Allow", port
    engine.close()


def test_an_address_two_names_lead_to_at_the_first_build_is_in_both_names_sets() -> None:
    # Built from a cache where api.example.com and edge.example.net share an address and
    # each has one of its own: the shared one is in both sets, and stays in the wide set
    # when the other name's pairs expire.
    clock = FakeClock()
    cache = DNSCache(trusted_servers=["198.51.100.53"], clock=clock)
    for name, ip, ttl in [
        ("api.example.com", "203.0.113.1", 300),
        ("api.example.com", "203.0.113.9", 300),
        ("edge.example.net", "203.0.113.9", 30),
        ("edge.example.net", "203.0.113.2", 30),
    ]:
        cache.ingest(Extracted(name, True, 0, 0, False, (Record(name, 1, ttl, ip),)))
    cluster = fqdnpolicy.Cluster(
        [fqdnpolicy.Endpoint("web", "default", {"app": "web"}, ips=["198.51.100.20"])],
        [fqdnpolicy.Namespace("default")],
    )
    policies = POLICY.format(name="wide", domain="*.example.com", port=443)
    policies += "---\n" + POLICY.format(name="edge", domain="edge.example.net", port=8443)
    engine = PolicyEngine(fqdnpolicy.loads(policies), cluster, cache)

    def members() -> dict[str, set[str]]:
        sets = engine.datapath().sets
        return {s.definition: set(s.members) for s in sets if s.kind == "domains"}

    def allowed() -> set[tuple[str, int]]:
        return {
            (ip, port)
            for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.9")
            for port in (443, 8443)
            if engine.verdict("default/web", ip, "TCP", port).allowed
        }

    assert members() == {
        "*.example.com": {"203.0.113.1", "203.0.113.9"},
        "edge.example.net": {"203.0.113.9", "203.0.113.2"},
    }
    assert allowed() == {
        ("203.0.113.1", 443),
        ("203.0.113.9", 443),
        ("203.0.113.9", 8443),
        ("203.0.113.2", 8443),
    }
    clock.advance(60)
    cache.expire()
    assert members() == {"*.example.com": {"203.0.113.1", "203.0.113.9"}, "edge.example.net": set()}
    assert allowed() == {("203.0.113.1", 443), ("203.0.113.9", 443)}
    engine.close()
