"""The verdict engine: verdicts, explanations, incremental changes and datapath deltas.

The differential tests in ``tests/engine`` hold verdicts to an independent reference model;
these tests pin down the engine's own contract: which deltas a change produces, what a trace
says, what the datapath state holds, and how bad input is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs
import dns.message
import dns.rrset
import pytest

import fqdnpolicy
import fqdnpolicy.engine
import fqdnpolicy.engine.kept
from fqdnpolicy.cluster import Cluster, Endpoint, NamedPort, Namespace
from fqdnpolicy.datapath import Delta, EndpointChanged, IPSetChanged, MemberChanged
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine, Verdict, protocol_number
from fqdnpolicy.model import Policy

POLICIES = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: backend-egress, namespace: default}
spec:
  selector: app == "backend"
  egress:
  - action: Allow
    protocol: TCP
    destination: {domains: ["api.github.com", "*.s3.amazonaws.com"], ports: [443]}
  - action: Allow
    protocol: UDP
    destination:
      selector: k8s-app == "kube-dns"
      namespaceSelector: projectcalico.org/name == "kube-system"
      ports: [53]
  - action: Allow
    protocol: TCP
    destination: {selector: tier == "database", ports: [postgres]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: database-ingress, namespace: default}
spec:
  selector: tier == "database"
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == "backend"}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answer(name: str, *records: tuple[str, str, str], ttl: int = 60) -> dns.message.Message:
    """A DNS response to `name` A with records (owner, type, value)."""
    response = dns.message.make_response(dns.message.make_query(name, "A"))
    for owner, rtype, value in records:
        response.answer.append(dns.rrset.from_text(owner, ttl, "IN", rtype, value))
    return response


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> DNSCache:
    return DNSCache(clock=clock, min_ttl=1, trusted_servers=["10.96.0.10"])


def _database(name: str, ip: str, port: int) -> Endpoint:
    """A database pod in ``default`` naming its port ``postgres``."""
    return Endpoint(
        name, "default", {"tier": "database"}, ips=[ip], named_ports=[NamedPort("postgres", port)]
    )


@pytest.fixture
def cluster() -> Cluster:
    return Cluster(
        [
            Endpoint("backend", "default", {"app": "backend"}, ips=["10.0.0.1", "fd00::1"]),
            _database("db", "10.0.0.2", 5432),
            Endpoint("coredns", "kube-system", {"k8s-app": "kube-dns"}, ips=["10.96.0.10"]),
        ],
        [Namespace("default"), Namespace("kube-system")],
    )


@pytest.fixture
def engine(cluster: Cluster, cache: DNSCache) -> PolicyEngine:
    cache.observe(
        answer("api.github.com", ("api.github.com.", "A", "198.51.100.10")), server="10.96.0.10"
    )
    return PolicyEngine(fqdnpolicy.loads(POLICIES), cluster, cache)


def test_domain_rule_allows_the_learned_ip_and_names_its_rule(engine: PolicyEngine) -> None:
    verdict = engine.verdict("default/backend", "198.51.100.10", "TCP", 443)
    assert verdict.action == "Allow"
    assert verdict.policy == "NetworkPolicy default/backend-egress"
    assert (verdict.tier, verdict.rule_index, verdict.direction) == ("default", 0, "egress")
    assert verdict.default is None


def test_unlearned_ip_and_wrong_port_end_of_tier(engine: PolicyEngine) -> None:
    for dst, port in (("198.51.100.11", 443), ("198.51.100.10", 80)):
        verdict = engine.verdict("default/backend", dst, "TCP", port)
        assert (verdict.action, verdict.default, verdict.tier) == ("Deny", "end-of-tier", "default")


def test_endpoint_without_policy_is_allowed_by_default(engine: PolicyEngine) -> None:
    verdict = engine.verdict("kube-system/coredns", "198.51.100.99", "TCP", 443)
    assert (verdict.action, verdict.default) == ("Allow", "no-policy")


def test_flow_between_endpoints_must_pass_egress_and_ingress(engine: PolicyEngine) -> None:
    verdict = engine.verdict("default/backend", "default/db", "TCP", 5432)
    assert verdict.allowed
    assert verdict.direction == "egress"
    # The named port resolves on the destination: another port is not 'postgres'.
    denied = engine.verdict("default/backend", "10.0.0.2", "TCP", 5433)
    assert (denied.action, denied.direction) == ("Deny", "egress")
    # db may not start connections to backend: backend has no ingress policy, db no egress
    # policy, so this flow is allowed; but coredns -> db fails db's ingress.
    ingress_denied = engine.verdict("kube-system/coredns", "10.0.0.2", "TCP", 5432)
    assert (ingress_denied.action, ingress_denied.direction) == ("Deny", "ingress")


def test_new_dns_answer_is_a_member_delta_and_a_new_verdict(
    engine: PolicyEngine, cache: DNSCache
) -> None:
    deltas: list[Delta] = []
    engine.subscribe(deltas.extend)
    assert not engine.verdict("default/backend", "198.51.100.20", "TCP", 443).allowed
    cache.observe(
        answer(
            "logs.s3.amazonaws.com",
            ("logs.s3.amazonaws.com.", "CNAME", "s3-w.amazonaws.com."),
            ("s3-w.amazonaws.com.", "A", "198.51.100.20"),
        ),
        server="10.96.0.10",
    )
    assert engine.verdict("default/backend", "198.51.100.20", "TCP", 443).allowed
    assert len(deltas) == 1
    (delta,) = deltas
    assert isinstance(delta, MemberChanged)
    assert (delta.member, delta.added, delta.expiry) == ("198.51.100.20", True, 60.0)
    assert delta.set_id in engine.set_ids_of("198.51.100.20")


def test_judged_flows_survive_a_dns_refresh_and_not_a_membership_change(
    engine: PolicyEngine, cache: DNSCache, clock: Clock
) -> None:
    first = engine.verdict("default/backend", "198.51.100.10", "TCP", 443)
    assert engine.verdict("default/backend", "198.51.100.10", "TCP", 443) is first
    # The same answer again only extends an expiry: the judged flow is served as it was.
    clock.now = 10
    cache.observe(
        answer("api.github.com", ("api.github.com.", "A", "198.51.100.10")), server="10.96.0.10"
    )
    assert engine.verdict("default/backend", "198.51.100.10", "TCP", 443) is first
    # The address leaves the set: the flow is judged again, and denied.
    clock.now = 200
    cache.expire()
    assert not engine.verdict("default/backend", "198.51.100.10", "TCP", 443).allowed


def test_non_canonical_and_repeated_addresses_get_the_same_verdict(engine: PolicyEngine) -> None:
    verdicts = [
        engine.verdict("default/backend", address, "TCP", 443)
        for address in ("fd00::0001", "FD00::1", "fd00::1", "fd00::1", "198.51.100.10")
    ]
    assert len({v.action for v in verdicts[:4]}) == 1
    assert verdicts[4].allowed


def test_expiry_removes_the_member_and_the_permission(
    engine: PolicyEngine, cache: DNSCache, clock: Clock
) -> None:
    deltas: list[Delta] = []
    engine.subscribe(deltas.extend)
    clock.now = 61
    cache.expire()
    assert [(d.member, d.added) for d in deltas if isinstance(d, MemberChanged)] == [
        ("198.51.100.10", False)
    ]
    assert not engine.verdict("default/backend", "198.51.100.10", "TCP", 443).allowed


def test_policy_added_after_dns_data_finds_the_names_already_cached(
    engine: PolicyEngine, cache: DNSCache
) -> None:
    cache.observe(
        answer("web.example.com", ("web.example.com.", "A", "203.0.113.7")), server="10.96.0.10"
    )
    assert not engine.verdict("default/backend", "203.0.113.7", "TCP", 443).allowed
    deltas: list[Delta] = []
    engine.subscribe(deltas.extend)
    (extra,) = fqdnpolicy.loads(
        """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: default, }
spec:
  order: 10
  selector: app == "backend"
  egress:
  - action: Allow
    destination: {domains: ["*.example.com"]}
"""
    ).policies
    engine.upsert_policy(extra)
    verdict = engine.verdict("default/backend", "203.0.113.7", "TCP", 443)
    assert (verdict.allowed, verdict.policy) == (True, "NetworkPolicy default/web")
    created = [d for d in deltas if isinstance(d, IPSetChanged)]
    assert [d.added for d in created] == [True]
    assert MemberChanged(created[0].set_id, "203.0.113.7", True, 60.0) in deltas
    assert EndpointChanged("default/backend", "egress") in deltas
    # Only the endpoint the policy selects changed.
    changed = {d.endpoint for d in deltas if isinstance(d, EndpointChanged)}
    assert changed == {"default/backend"}

    engine.remove_policy(extra)
    assert not engine.verdict("default/backend", "203.0.113.7", "TCP", 443).allowed
    assert IPSetChanged(created[0].set_id, False) in deltas


def test_replacing_a_policy_keeps_sets_both_versions_use(engine: PolicyEngine) -> None:
    deltas: list[Delta] = []
    engine.subscribe(deltas.extend)
    policy = fqdnpolicy.loads(POLICIES).policies[0]
    engine.upsert_policy(policy)  # same content: no set churn
    assert not [d for d in deltas if isinstance(d, IPSetChanged | MemberChanged)]


OTHER_GITHUB_POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: github-only, namespace: default}
spec:
  selector: app == "backend"
  egress:
  - action: Allow
    destination: {domains: ["api.github.com"]}
"""


def test_removing_one_of_two_policies_naming_a_domain_keeps_the_other_set_exact(
    engine: PolicyEngine, cache: DNSCache, clock: Clock
) -> None:
    engine.upsert_policy(fqdnpolicy.loads(OTHER_GITHUB_POLICY).policies[0])
    engine.remove_policy(fqdnpolicy.loads(POLICIES).policies[0])
    (github,) = [s for s in engine.sets() if s.definition == "api.github.com"]
    assert engine.members(github.set_id) == {"198.51.100.10": 60.0}
    assert engine.policies_for("default/backend", "egress") == ["NetworkPolicy default/github-only"]
    # The name is still followed: a new address joins, expiry takes both away.
    clock.now = 30
    cache.observe(
        answer("api.github.com", ("api.github.com.", "A", "198.51.100.11")), server="10.96.0.10"
    )
    assert set(engine.members(github.set_id)) == {"198.51.100.10", "198.51.100.11"}
    clock.now = 100
    cache.expire()
    assert engine.members(github.set_id) == {}
    assert not engine.verdict("default/backend", "198.51.100.11", "TCP", 443).allowed


def test_a_removed_policy_is_forgotten_by_the_endpoints_it_applied_to(
    engine: PolicyEngine,
) -> None:
    policy = fqdnpolicy.loads(POLICIES).policies[1]  # database-ingress
    assert engine.policies_for("default/db", "ingress") == [
        "NetworkPolicy default/database-ingress"
    ]
    engine.remove_policy(policy)
    assert engine.policies_for("default/db", "ingress") == []
    assert engine.verdict("kube-system/coredns", "10.0.0.2", "TCP", 5432).allowed
    engine.upsert_policy(policy)
    assert not engine.verdict("kube-system/coredns", "10.0.0.2", "TCP", 5432).allowed


DATABASE_NETSET = """\
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: managed-db, namespace: default, labels: {tier: database}}
spec:
  nets: [203.0.113.0/28]
  allowedEgressDomains: [db.example.com]
"""


def test_selector_set_members_expire_only_where_dns_alone_leads(
    engine: PolicyEngine, cache: DNSCache
) -> None:
    # backend-egress allows tier == "database": the db pod and this network set, whose
    # domain leads both to a new address and to the db pod's own address.
    engine.upsert_network_set(fqdnpolicy.loads(DATABASE_NETSET).network_sets[0])
    cache.observe(
        answer(
            "db.example.com",
            ("db.example.com.", "A", "198.51.100.40"),
            ("db.example.com.", "A", "10.0.0.2"),
        ),
        server="10.96.0.10",
    )
    (selector_set,) = [s for s in engine.sets() if 'tier == "database"' in s.definition]
    assert engine.members(selector_set.set_id) == {
        "10.0.0.2": None,  # the pod's address never expires, whatever DNS says
        "203.0.113.0/28": None,
        "198.51.100.40": 60.0,
    }
    (state,) = [s for s in engine.datapath().sets if s.set_id == selector_set.set_id]
    assert state.members == engine.members(selector_set.set_id)


def test_an_endpoint_update_taking_another_endpoints_address_is_refused_and_changes_nothing(
    engine: PolicyEngine,
) -> None:
    before = engine.verdict("default/backend", "default/db", "TCP", 5432)
    moved = Endpoint("backend", "default", {"app": "backend"}, ips=["10.0.0.2"])  # db's IP
    with pytest.raises(fqdnpolicy.InvalidPolicy, match="belongs to both"):
        engine.upsert_endpoint(moved)
    assert "default/backend" in {ep.key for ep in engine.endpoints()}
    assert engine.verdict("default/backend", "default/db", "TCP", 5432) == before


def test_endpoint_label_change_moves_its_ip_between_selector_sets(
    engine: PolicyEngine,
) -> None:
    assert engine.verdict("default/backend", "default/db", "TCP", 5432).allowed
    engine.upsert_endpoint(
        Endpoint(
            "db",
            "default",
            {"tier": "cache"},
            ips=["10.0.0.2"],
            named_ports=[NamedPort("postgres", 5432)],
        )
    )
    assert not engine.verdict("default/backend", "default/db", "TCP", 5432).allowed
    engine.remove_endpoint("default/db")
    with pytest.raises(fqdnpolicy.InvalidPolicy, match="unknown endpoint"):
        engine.verdict("default/backend", "default/db", "TCP", 5432)


def test_explain_lists_policies_rules_and_the_failing_criterion(engine: PolicyEngine) -> None:
    trace = engine.explain("default/backend", "198.51.100.77", "TCP", 443)
    assert trace.verdict == engine.verdict("default/backend", "198.51.100.77", "TCP", 443)
    text = trace.render()
    assert "NetworkPolicy default/backend-egress: applies" in text
    assert "rule 0: no match: destination address not in domains set" in text
    assert "api.github.com" in text  # the set is described, not just numbered
    assert "end of tier: Deny" in text
    assert text.endswith("verdict: Deny (egress end-of-tier of tier default)")
    not_applying = [s for s in trace.steps if s.outcome == "does not apply"]
    assert [s.policy for s in not_applying] == ["NetworkPolicy default/database-ingress"]


def test_datapath_state_holds_sets_members_and_rules(engine: PolicyEngine) -> None:
    state = engine.datapath()
    backend = next(e for e in state.endpoints if e.key == "default/backend")
    (tier,) = backend.egress
    assert tier.default_action == "Deny"
    domain_rule, dns_rule, db_rule = tier.rules
    assert (domain_rule.protocol, domain_rule.dst_ports.ranges) == (6, ((443, 443),))
    (set_id,) = domain_rule.peer_in
    assert state.set(set_id).members == {"198.51.100.10": 60.0}
    assert dns_rule.protocol == 17
    assert state.set(dns_rule.peer_in[0]).members == {"10.96.0.10": None}
    assert db_rule.dst_ports.peer_named == ("postgres",)
    assert state.named_ports["postgres"] == (("10.0.0.2", 6, 5432),)
    db = next(e for e in state.endpoints if e.key == "default/db")
    assert db.egress == ()
    assert [r.families for r in db.ingress[0].rules] == [(4, 6)]


def test_unknown_endpoint_bad_address_and_bad_protocol_are_refused(
    engine: PolicyEngine,
) -> None:
    with pytest.raises(fqdnpolicy.InvalidPolicy, match="unknown endpoint"):
        engine.verdict("default/nope", "198.51.100.10", "TCP", 443)
    with pytest.raises(fqdnpolicy.InvalidPolicy, match="not an IP address"):
        engine.verdict("default/backend", "198.51.100.300", "TCP", 443)
    with pytest.raises(fqdnpolicy.InvalidPolicy, match="unknown protocol"):
        engine.verdict("default/backend", "198.51.100.10", "GRE!", 443)


def test_protocol_numbers() -> None:
    assert [protocol_number(p) for p in ("TCP", "udp", "ICMPv6", 132, "47")] == [6, 17, 58, 132, 47]
    with pytest.raises(fqdnpolicy.InvalidPolicy):
        protocol_number(0)


def test_ipv6_destination_uses_the_sources_ipv6_address(
    engine: PolicyEngine, cache: DNSCache
) -> None:
    response = dns.message.make_response(dns.message.make_query("api.github.com", "AAAA"))
    response.answer.append(dns.rrset.from_text("api.github.com.", 60, "IN", "AAAA", "2001:db8::10"))
    cache.observe(response, server="10.96.0.10")
    assert engine.verdict("default/backend", "2001:DB8::10", "TCP", 443).allowed


def test_dns_writer_thread_and_policy_changes_never_deadlock(
    engine: PolicyEngine, cache: DNSCache
) -> None:
    from fqdnpolicy.dns.wire import Extracted, Record

    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 50000:
            ip = f"198.51.100.{i % 250}"
            cache.ingest(
                Extracted(
                    "api.github.com", True, 0, 0, False, (Record("api.github.com", 1, 60, ip),)
                )
            )
            i += 1

    policy = fqdnpolicy.loads(POLICIES).policies[0]
    variant = fqdnpolicy.loads(POLICIES.replace('"api.github.com", ', '"*.github.com", ')).policies[
        0
    ]

    def changer() -> None:
        for i in range(400):
            # Each switch creates a domain set: the engine scans the cache under its own lock.
            engine.upsert_policy(variant if i % 2 else policy)
            engine.verdict("default/backend", "198.51.100.1", "TCP", 443)
        stop.set()

    # Both run in daemon threads so that a deadlock fails the test instead of hanging it.
    threads = [threading.Thread(target=f, daemon=True) for f in (writer, changer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "lock-order deadlock"
    engine.upsert_policy(policy)
    # Every address the cache holds is in the set once the queue is drained.
    for ip in cache.ips("api.github.com"):
        assert engine.verdict("default/backend", ip, "TCP", 443).allowed


def test_global_policy_whose_selector_changes_applies_to_the_new_endpoints(
    engine: PolicyEngine,
) -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all-egress}
spec:
  order: 1
  selector: app == "%s"
  egress:
  - action: Deny
"""
    (first,) = fqdnpolicy.loads(text % "backend").policies
    engine.upsert_policy(first)
    assert engine.verdict("default/backend", "198.51.100.10", "TCP", 443).policy == (
        "GlobalNetworkPolicy deny-all-egress"
    )
    (second,) = fqdnpolicy.loads(text % "other").policies
    engine.upsert_policy(second)
    assert engine.verdict("default/backend", "198.51.100.10", "TCP", 443).allowed
    engine.remove_policy(second)
    engine.upsert_endpoint(
        Endpoint("backend", "default", {"app": "backend"}, ips=["10.0.0.1", "fd00::1"])
    )
    assert engine.verdict("default/backend", "198.51.100.10", "TCP", 443).allowed


# -- readers never wait ------------------------------------------------------------------
# verdict() takes no lock: it reads what the writer side published. These tests hold the
# writer lock, or stop a change half way, and pin what a reader sees meanwhile.


def _in_thread(call: Callable[[], Verdict]) -> tuple[threading.Thread, list[Verdict]]:
    out: list[Verdict] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


def _holding_the_lock(engine: PolicyEngine) -> tuple[threading.Event, threading.Thread]:
    """Hold the engine's writer lock in another thread (as a long ``datapath()`` does)."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        with engine._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)
    return release, holder


def _asked_while_locked(
    engine: PolicyEngine, src: str, destination: str, port: int
) -> list[Verdict]:
    """src -> destination:port/TCP while another thread holds the lock; [] if it waited."""
    release, holder = _holding_the_lock(engine)
    try:
        reader, out = _in_thread(lambda: engine.verdict(src, destination, "TCP", port))
        reader.join(5)
        return list(out)
    finally:
        release.set()
        holder.join(5)


@pytest.mark.parametrize(
    ("src", "destination", "port", "action"),
    [
        ("default/backend", "203.0.113.7", 443, "Deny"),  # outside, never seen
        ("default/backend", "198.51.100.10", 443, "Allow"),  # DNS-learned member
        ("default/backend", "fd00::0001", 443, "Deny"),  # non-canonical text
        ("default/backend", "10.0.0.2", 5432, "Allow"),  # an endpoint: egress and ingress
        ("kube-system/coredns", "10.0.0.1", 80, "Allow"),  # no policy on either side
    ],
)
def test_every_kind_of_verdict_is_answered_while_the_writer_lock_is_held(
    engine: PolicyEngine, src: str, destination: str, port: int, action: str
) -> None:
    answered = _asked_while_locked(engine, src, destination, port)
    assert [v.action for v in answered] == [action], "the reader waited"


def _paused_change(
    engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch, *, after_settle: bool
) -> tuple[threading.Event, threading.Event]:
    """Make the next change stop before (or after) publishing its values, until released."""
    from fqdnpolicy.engine.graph import Graph

    paused, go_on = threading.Event(), threading.Event()
    real = Graph.settle

    def settle(graph: Graph) -> None:
        if after_settle:
            real(graph)
        paused.set()
        assert go_on.wait(10)
        if not after_settle:
            real(graph)

    monkeypatch.setattr(Graph, "settle", settle)
    return paused, go_on


@pytest.mark.parametrize("after_settle", [False, True])
def test_a_reader_sees_the_state_before_a_change_in_progress_then_the_state_after(
    engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch, after_settle: bool
) -> None:
    # backend may reach the database pod db; a change removes db's ingress policy's
    # permission and relabels nothing else. Stopped before its values are published, or
    # after all of them are assigned but before the change is declared done, a reader must
    # get the verdict of the state before it: never a mix.
    assert engine.verdict("default/backend", "10.0.0.2", "TCP", 5432).allowed
    before_drop = engine.verdict("default/backend", "203.0.113.7", "TCP", 443)
    (deny_db,) = fqdnpolicy.loads(
        """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: database-ingress, namespace: default}
spec:
  selector: tier == "database"
  ingress:
  - action: Deny
    protocol: TCP
    source: {selector: app == "backend"}
"""
    ).policies
    paused, go_on = _paused_change(engine, monkeypatch, after_settle=after_settle)
    writer = threading.Thread(target=lambda: engine.upsert_policy(deny_db), daemon=True)
    writer.start()
    try:
        assert paused.wait(5)
        for destination, port, expected in (
            ("10.0.0.2", 5432, True),
            ("203.0.113.7", 443, before_drop.allowed),
        ):

            def ask(d: str = destination, p: int = port) -> Verdict:
                return engine.verdict("default/backend", d, "TCP", p)

            reader, out = _in_thread(ask)
            reader.join(5)
            assert [v.allowed for v in out] == [expected], "mixed, or the reader waited"
    finally:
        go_on.set()
        writer.join(5)
    denied = engine.verdict("default/backend", "10.0.0.2", "TCP", 5432)
    assert (denied.action, denied.direction) == ("Deny", "ingress")


def test_dns_changes_are_applied_on_the_delivering_thread_and_never_inside_a_verdict(
    engine: PolicyEngine, cache: DNSCache
) -> None:
    delivered_on: list[str] = []
    engine.subscribe(lambda batch: delivered_on.append(threading.current_thread().name))
    assert not engine.verdict("default/backend", "198.51.100.20", "TCP", 443).allowed
    release, holder = _holding_the_lock(engine)
    try:
        # The answer arrives while a long datapath() holds the writer lock: the cache's
        # caller waits to apply it; verdicts meanwhile answer from the state before it.
        observer = threading.Thread(
            target=lambda: cache.observe(
                answer("api.github.com", ("api.github.com.", "A", "198.51.100.20")),
                server="10.96.0.10",
            ),
            name="dns-writer",
            daemon=True,
        )
        observer.start()
        reader, out = _in_thread(
            lambda: engine.verdict("default/backend", "198.51.100.20", "TCP", 443)
        )
        reader.join(5)
        assert [v.allowed for v in out] == [False], "the reader waited"
    finally:
        release.set()
        holder.join(5)
    observer.join(5)
    assert engine.verdict("default/backend", "198.51.100.20", "TCP", 443).allowed
    assert delivered_on == ["dns-writer"]


def test_kept_verdicts_are_bounded_in_total(
    engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fqdnpolicy.engine.kept, "KEPT_LIMIT", 16)

    def kept() -> int:
        programs = {
            id(p): p for r in engine._records.values() for p in (r.egress, r.ingress)
        }.values()
        return sum(p.kept_count() for p in programs)

    for port in range(1, 200):
        # A port scan to one outside address: every verdict judged, at most 16 kept.
        verdict = engine.verdict("default/backend", "203.0.113.7", "TCP", port)
        assert verdict.action == "Deny"
        assert engine.verdict("default/backend", "203.0.113.7", "TCP", port) == verdict
        assert kept() <= 16


def test_kept_verdicts_follow_the_senders_program(engine: PolicyEngine) -> None:
    assert engine.verdict("default/backend", "203.0.113.7", "TCP", 443).action == "Deny"
    (allow_all,) = fqdnpolicy.loads(
        """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-all, namespace: default}
spec:
  order: 1
  selector: app == "backend"
  egress: [{action: Allow}]
"""
    ).policies
    engine.upsert_policy(allow_all)
    assert engine.verdict("default/backend", "203.0.113.7", "TCP", 443).policy == (
        "NetworkPolicy default/allow-all"
    )
    engine.remove_policy(allow_all)
    assert engine.verdict("default/backend", "203.0.113.7", "TCP", 443).action == "Deny"


def test_a_kept_verdict_is_not_served_for_an_address_in_a_set_the_rules_name(
    engine: PolicyEngine,
) -> None:
    assert engine.verdict("default/backend", "203.0.113.7", "TCP", 443).action == "Deny"  # kept
    engine.verdict("kube-system/coredns", "198.51.100.10", "TCP", 443)  # its answer now known
    assert engine.verdict("default/backend", "198.51.100.10", "TCP", 443).allowed


def test_a_kept_verdict_is_not_served_once_a_network_set_cidr_covers_the_address(
    engine: PolicyEngine,
) -> None:
    assert engine.verdict("default/backend", "203.0.113.9", "UDP", 53).action == "Deny"  # kept
    # A network set the DNS rule's selector picks now covers the address by its CIDR: the
    # address's answer moves with the prefix generation, not by being forgotten.
    resources = fqdnpolicy.loads(
        """
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: resolvers, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {nets: [203.0.113.0/24]}
"""
    )
    (resolvers,) = resources.network_sets
    engine.upsert_network_set(resolvers)
    assert engine.verdict("default/backend", "203.0.113.9", "UDP", 53).allowed


def test_an_outside_address_taken_by_an_endpoint_is_judged_as_that_endpoint(
    engine: PolicyEngine,
) -> None:
    # Judged (and kept) as an outside address, then a new database pod gets that address:
    # the flow now needs the pod's named port and ingress.
    assert engine.verdict("default/backend", "203.0.113.7", "TCP", 5432).action == "Deny"
    engine.upsert_endpoint(_database("db2", "203.0.113.7", 5432))
    assert engine.verdict("default/backend", "203.0.113.7", "TCP", 5432).allowed
    engine.remove_endpoint("default/db2")
    assert engine.verdict("default/backend", "203.0.113.7", "TCP", 5432).action == "Deny"


def test_an_outside_address_taken_by_an_endpoint_no_rule_names_gets_its_ingress(
    engine: PolicyEngine,
) -> None:
    # coredns has no egress policy: allowed to any outside address, and kept so. A pod in no
    # set any rule names takes that address; its ingress policy now decides.
    (closed,) = fqdnpolicy.loads(
        """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: closed, namespace: default}
spec:
  selector: app == "closed"
  types: [Ingress]
"""
    ).policies
    engine.upsert_policy(closed)
    assert engine.verdict("kube-system/coredns", "203.0.113.8", "TCP", 80).allowed
    engine.upsert_endpoint(Endpoint("closed", "default", {"app": "closed"}, ips=["203.0.113.8"]))
    denied = engine.verdict("kube-system/coredns", "203.0.113.8", "TCP", 80)
    assert (denied.action, denied.direction) == ("Deny", "ingress")


# -- named ports of destination endpoints ----------------------------------------------------


def test_endpoints_with_different_named_ports_are_judged_apart(engine: PolicyEngine) -> None:
    engine.upsert_endpoint(_database("db-a", "10.0.0.11", 5432))
    engine.upsert_endpoint(_database("db-b", "10.0.0.12", 6432))
    for _ in range(2):  # judged, then answered from what was judged
        assert engine.verdict("default/backend", "10.0.0.11", "TCP", 5432).allowed
        assert not engine.verdict("default/backend", "10.0.0.12", "TCP", 5432).allowed
        assert engine.verdict("default/backend", "10.0.0.12", "TCP", 6432).allowed
    # Moving db-b's port changes its verdicts and nobody else's.
    engine.upsert_endpoint(_database("db-b", "10.0.0.12", 5432))
    assert engine.verdict("default/backend", "10.0.0.12", "TCP", 5432).allowed
    assert not engine.verdict("default/backend", "10.0.0.12", "TCP", 6432).allowed
    assert engine.verdict("default/backend", "10.0.0.11", "TCP", 5432).allowed


def test_endpoints_alike_share_an_identity_and_ports_tell_them_apart(
    engine: PolicyEngine,
) -> None:
    engine.upsert_endpoint(_database("db-a", "10.0.0.11", 5432))
    engine.upsert_endpoint(_database("db-b", "10.0.0.12", 5432))
    engine.upsert_endpoint(_database("db-c", "10.0.0.13", 6432))
    hosts = engine._hosts  # the structure under test
    assert hosts["10.0.0.11"] is hosts["10.0.0.12"]
    assert hosts["10.0.0.11"] is not hosts["10.0.0.13"]
    for i in range(12):
        # Churn through distinct port lists: verdicts follow each.
        engine.upsert_endpoint(_database("db-churn", "10.0.0.20", 7000 + i))
        assert engine.verdict("default/backend", "10.0.0.20", "TCP", 7000 + i).allowed
        assert not engine.verdict("default/backend", "10.0.0.20", "TCP", 6999 + i).allowed
        assert engine.verdict("default/backend", "10.0.0.2", "TCP", 5432).allowed


# -- ordering --------------------------------------------------------------------------------


def _egress_allow(name: str, namespace: str | None, order: float | None) -> Policy:
    meta = f"{{name: {name}" + (f", namespace: {namespace}}}" if namespace else "}")
    kind = "NetworkPolicy" if namespace else "GlobalNetworkPolicy"
    order_line = "" if order is None else f"  order: {order!r}\n"
    (policy,) = fqdnpolicy.loads(
        f"""
apiVersion: projectcalico.org/v3
kind: {kind}
metadata: {meta}
spec:
{order_line}  selector: app == "backend"
  egress: [{{action: Allow}}]
"""
    ).policies
    return policy


def test_a_policy_whose_order_is_not_a_number_sorts_as_one_without_order(
    engine: PolicyEngine,
) -> None:
    nan = attrs.evolve(
        _egress_allow("a-nan", "default", None),
        spec=attrs.evolve(_egress_allow("a-nan", "default", None).spec, order=float("nan")),
    )
    for policy in (nan, _egress_allow("z-none", "default", None), _egress_allow("m", None, 5.0)):
        engine.upsert_policy(policy)
    assert engine.policies_for("default/backend", "egress") == [
        "GlobalNetworkPolicy m",
        "NetworkPolicy default/a-nan",
        "NetworkPolicy default/backend-egress",
        "NetworkPolicy default/z-none",
    ]


def test_policies_alike_in_order_and_name_are_ordered_the_same_whatever_came_first(
    cluster: Cluster, cache: DNSCache
) -> None:
    both = [_egress_allow("same", "default", 1.0), _egress_allow("same", None, 1.0)]
    orders = []
    for policies in (both, both[::-1]):
        engine = PolicyEngine(fqdnpolicy.ResourceSet(tuple(policies)), cluster, cache)
        orders.append(engine.policies_for("default/backend", "egress"))
    assert orders[0] == orders[1] == ["GlobalNetworkPolicy same", "NetworkPolicy default/same"]


def test_a_member_lives_as_long_as_the_latest_name_still_leading_to_it(
    clock: Clock, cluster: Cluster
) -> None:
    # a.example.org (TTL 300) and b.example.org (TTL 100) lead to one address. a drops it
    # early (it may hold one address, and a later answer brings another): the member now
    # expires with b, in this engine as in one built afresh, and datapaths are told.
    cache = DNSCache(clock=clock, min_ttl=1, max_ips_per_name=1, trusted_servers=["10.96.0.10"])
    (two_names,) = fqdnpolicy.loads(
        """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: two-names, namespace: default}
spec:
  selector: app == "backend"
  egress:
  - {action: Allow, destination: {domains: [a.example.org, b.example.org]}}
"""
    ).policies
    resources = fqdnpolicy.ResourceSet((two_names,))
    engine = PolicyEngine(resources, cluster, cache)
    shared = "198.51.100.77"
    cache.observe(
        answer("a.example.org", ("a.example.org.", "A", shared), ttl=300), server="10.96.0.10"
    )
    cache.observe(
        answer("b.example.org", ("b.example.org.", "A", shared), ttl=100), server="10.96.0.10"
    )
    (domains,) = engine.sets()
    assert engine.members(domains.set_id)[shared] == 300
    deltas: list[Delta] = []
    engine.subscribe(deltas.extend)
    clock.now = 10
    cache.observe(
        answer("a.example.org", ("a.example.org.", "A", "198.51.100.78"), ttl=300),
        server="10.96.0.10",
    )
    assert engine.members(domains.set_id)[shared] == 100
    assert PolicyEngine(resources, cluster, cache).members(domains.set_id)[shared] == 100
    assert MemberChanged(domains.set_id, shared, True, 100) in deltas


def test_an_endpoint_with_a_scoped_address_is_refused_and_changes_nothing(
    engine: PolicyEngine,
) -> None:
    before = engine.verdict("default/backend", "198.51.100.10", "TCP", 443)
    scoped = Endpoint("linklocal", "default", {"app": "backend"}, ips=["fe80::1%eth0"])
    with pytest.raises(fqdnpolicy.InvalidPolicy, match="scoped address"):
        engine.upsert_endpoint(scoped)
    assert "default/linklocal" not in engine.endpoint_keys()
    assert engine.verdict("default/backend", "198.51.100.10", "TCP", 443) == before


def test_explain_lists_tiers_in_evaluation_order_even_where_no_policy_applies(
    cluster: Cluster, cache: DNSCache
) -> None:
    resources = fqdnpolicy.loads(
        """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.other}
spec:
  tier: security
  selector: app == "other"
  egress: [{action: Deny}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: default}
spec:
  selector: app == "backend"
  egress: [{action: Allow, protocol: TCP}]
"""
    )
    text = (
        PolicyEngine(resources, cluster, cache)
        .explain("default/backend", "203.0.113.1", "TCP", 443)
        .render()
    )
    assert text.index("egress tier security:") < text.index("egress tier default:")
