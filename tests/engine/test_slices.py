"""Slices: a program's verdicts for one protocol and port depend only on the rules it can meet.

A slice leaves out the rules a simple flow of its protocol and port cannot match, whatever the
peer, and with them their sets: a peer in a set that only those rules name is judged like any
address. That is sound only if every rule left out really fails every such flow, which the
first test holds against the evaluator's own ``mismatch`` over generated worlds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from fqdnpolicy.cluster import Cluster
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.engine.evaluate import mismatch
from fqdnpolicy.engine.identities import Identity
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.slices import Slice, can_match
from fqdnpolicy.model import ResourceSet
from tests.engine.strategies import (
    FLOW_PORTS,
    FakeClock,
    WorldSpec,
    entity,
    pod,
    policy,
    rule,
    worlds,
)

# Protocol numbers and ports simple flows ask about: the generated flows' ports with each
# protocol that has ports, and no port at all.
SIMPLE = [
    *((proto, number) for proto in (6, 17, 132) for number in (*FLOW_PORTS, 1, 65535, None)),
    (1, None),
    (58, None),
]


def _engine(spec: WorldSpec) -> PolicyEngine:
    dns = DNSCache(clock=FakeClock())
    for learned in spec.answers:
        dns.ingest(learned.extracted())
    return PolicyEngine(spec.resources, spec.cluster, dns)


def _programs(engine: PolicyEngine) -> list[Program]:
    found = {id(p): p for r in engine._records.values() for p in (r.egress, r.ingress)}
    return list(found.values())


def _peers(engine: PolicyEngine, spec: WorldSpec) -> list[Identity]:
    addresses = {ip for ep in spec.cluster.endpoints for ip in ep.ips}
    addresses |= {ip for answer in spec.answers for ip in answer.ips}
    addresses |= {"10.0.1.99", "198.51.100.1", "203.0.113.77", "2001:db8::1", "fd00::99"}
    return [engine.identity(address) for address in sorted(addresses)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(max_flows=1))
def test_a_rule_left_out_of_a_slice_fails_every_simple_flow_of_it(spec: WorldSpec) -> None:
    engine = _engine(spec)
    peers = _peers(engine, spec)
    for program in _programs(engine):
        for block in program.blocks:
            for bound in block.rules:
                for proto, number in SIMPLE:
                    if can_match(bound.rule, proto, number):
                        continue
                    for peer in peers:
                        flow = (proto, number, None, peer.family, None, None)
                        assert mismatch(bound, peer, flow) is not None, (bound.rule, flow)


def _world(named: bool = False) -> PolicyEngine:
    # web may resolve names on UDP 53 at the DNS pods, and reach db on 5432; both are
    # endpoints in sets web's rules name, but each only for its own protocol and port.
    # With ``named``, also any peer's port named https.
    rules = [
        rule("Allow", protocol="UDP", destination=entity(selector='app == "dns"', ports=[53])),
        rule("Allow", protocol="TCP", destination=entity(selector='app == "db"', ports=[5432])),
    ]
    if named:
        rules.append(rule("Allow", protocol="TCP", destination=entity(ports=["https"])))
    web = policy("web", namespace="default", selector='app == "web"', egress=rules)
    cluster = Cluster(
        (
            pod("default/web", "10.0.0.1", labels={"app": "web"}),
            pod("default/dns", "10.0.0.53", labels={"app": "dns"}),
            pod("default/db", "10.0.0.54", labels={"app": "db"}, ports=[("https", 8443, "TCP")]),
        ),
        (),
        (),
    )
    return PolicyEngine(ResourceSet((web,)), cluster, DNSCache(clock=FakeClock()))


def _slice(engine: PolicyEngine, protocol: str | int, number: int) -> Slice:
    program = engine.record("default/web").egress  # type: ignore[union-attr]
    found = program.get(number)
    if isinstance(found, Slice) and found.asked != protocol:
        found = program.get((protocol, number))
    assert isinstance(found, Slice)
    return found


def test_a_peer_in_a_set_only_other_ports_rules_name_is_judged_like_any_address() -> None:
    engine = _world()
    assert not engine.verdict("default/web", "10.0.0.53", "TCP", 443).allowed
    assert not engine.verdict("default/web", "203.0.113.9", "TCP", 443).allowed
    for_443 = _slice(engine, "TCP", 443)
    dns_pod = engine.identity("10.0.0.53")
    assert for_443.plain(dns_pod)
    assert for_443.size() == 1  # one verdict, for every IPv4 peer in none of its sets
    assert engine.verdict("default/web", "10.0.0.53", "UDP", 53).allowed
    assert not _slice(engine, "UDP", 53).plain(dns_pod)


def test_named_ports_keep_their_rule_in_every_slice_of_the_protocol() -> None:
    # "https" resolves on the peer: any TCP port may be it, so the rule stays in, and the
    # endpoint whose https is 8443 is told apart from addresses no endpoint owns.
    engine = _world(named=True)
    assert engine.verdict("default/web", "10.0.0.54", "TCP", 8443).allowed
    assert not engine.verdict("default/web", "203.0.113.9", "TCP", 8443).allowed
    assert not engine.verdict("default/web", "10.0.0.53", "TCP", 8443).allowed
    for_8443 = _slice(engine, "TCP", 8443)
    assert for_8443.peer_named
    assert not for_8443.plain(engine.identity("10.0.0.54"))


def test_each_protocol_asked_with_one_port_gets_its_own_slice() -> None:
    # The first protocol asked with port 53 files its slice under the port; the others
    # under (protocol, port). Each is served its own verdict, every time it asks.
    engine = _world()
    for _ in range(3):
        assert engine.verdict("default/web", "10.0.0.53", "UDP", 53).allowed
        assert not engine.verdict("default/web", "10.0.0.53", "TCP", 53).allowed
        assert engine.verdict("default/web", "10.0.0.53", 17, 53).allowed
        assert not engine.verdict("default/web", "10.0.0.53", 6, 53).allowed
    assert _slice(engine, "UDP", 53).asked == "UDP"
    assert _slice(engine, "TCP", 53).asked == "TCP"
    assert _slice(engine, 6, 53).asked == 6


def test_slices_of_one_program_naming_the_same_sets_share_them() -> None:
    # A port scan makes a slice per port: they must not each hold their own copy.
    engine = _world()
    for number in range(1000, 1020):
        engine.verdict("default/web", "203.0.113.9", "TCP", number)
    slices = [_slice(engine, "TCP", number) for number in range(1000, 1020)]
    assert len({id(s.refs) for s in slices}) == 1
    assert len({id(s.mask) for s in slices}) == 1
