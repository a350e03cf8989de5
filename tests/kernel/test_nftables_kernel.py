"""The nftables backend on a real kernel: what the kernel does is what the engine says.

The differential test builds the lab (workload, host and server namespaces, echo servers,
dnsmasq with CNAME chains and short TTLs), generates seeded policies, learns addresses by real
DNS queries from the workloads, renders and applies the table in the host namespace, and
probes every flow (TCP connect / UDP exchange) from the workloads: the kernel's outcome must
equal ``engine.verdict()`` for each. Then a short TTL runs out (the kernel's element timeouts
and the engine's ``expire()`` must agree), then a policy changes (full re-render, applied as
libnftables JSON this time).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from collections.abc import Sequence

import pytest
from fqdnpolicy_nftables import NftablesBackend

from fqdnpolicy.backends import BackendError, Rendering
from fqdnpolicy.cluster import Cluster, Endpoint, NamedPort
from fqdnpolicy.datapath import Delta
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import Policy, ResourceSet, Rule
from fqdnpolicy.testing.lab import DNS_SERVER, Flow, HostRecord, Lab, iter_flows
from tests.engine.strategies import FakeClock, answer, entity, policy, rule, tier

pytestmark = pytest.mark.kernel

SHORT_TTL = 5
SERVICE_V4 = [f"203.0.113.{n}" for n in (10, 11, 12, 13, 14, 15, 16, 17, 140)]
SERVICE_V6 = [f"2001:db8:203::{n}" for n in (10, 11, 12, 14, 15, 17)]
TCP_PORTS = (80, 443, 8080)
UDP_PORTS = (5353, 9999)
RECORDS = (
    HostRecord("api.example.test", ("203.0.113.10", "2001:db8:203::10"), 60),
    HostRecord("node1.edge.example.test", ("203.0.113.11", "2001:db8:203::11"), 60),
    HostRecord("short.example.test", ("203.0.113.12", "2001:db8:203::12"), SHORT_TTL),
    HostRecord("a.svc.example.test", ("203.0.113.13",), 60),
    HostRecord("b.svc.example.test", ("203.0.113.14", "2001:db8:203::14"), 60),
    HostRecord("x.other.test", ("203.0.113.15", "2001:db8:203::15"), 60),
    HostRecord("blocked.example.test", ("203.0.113.16",), 60),
)
CNAMES = (
    ("www.example.test", "api.example.test", 60),
    ("edge.cdn.example.test", "node1.edge.example.test", 60),
    ("cdn.example.test", "edge.cdn.example.test", 60),
)
# Learned before the first apply; the rest through the enforced table (DNS allowed by policy).
NAMES_FIRST = ("www.example.test", "cdn.example.test", "a.svc.example.test", "blocked.example.test")
NAMES_LATER = ("b.svc.example.test", "x.other.test", "short.example.test")

DOMAINS = (
    "api.example.test",
    "www.example.test",
    "cdn.example.test",
    "*.svc.example.test",
    "*.example.test",
    "short.example.test",
    "x.other.test",
    "*.edge.example.test",
)
NETS4 = (
    "203.0.113.0/28",
    "203.0.113.128/25",
    "203.0.113.16/29",
    "198.51.100.0/26",
    "198.51.100.12/32",
)
NETS6 = ("2001:db8:203::/124", "2001:db8:203::10/126", "2001:db8:100::/64")
SELECTORS = (
    'app == "web"',
    'app == "db"',
    'app in {"api", "db"}',
    "has(app)",
    'app != "web"',
    "all()",
)
PORTS = (80, 443, "8000:8100", "http", 5353, "dnsx")


def make_endpoints() -> list[Endpoint]:
    http_api = (NamedPort("http", 8080, "TCP"),)
    db_ports = (NamedPort("http", 80, "TCP"), NamedPort("dnsx", 5353, "UDP"))
    return [
        Endpoint("web", "team-a", {"app": "web"}, ("198.51.100.10", "2001:db8:100::a")),
        Endpoint(
            "api",
            "team-a",
            {"app": "api"},
            ("198.51.100.11", "2001:db8:100::b"),
            named_ports=http_api,
        ),
        Endpoint("web", "team-b", {"app": "web"}, ("198.51.100.12", "2001:db8:100::c")),
        Endpoint(
            "db",
            "team-b",
            {"app": "db"},
            ("198.51.100.13", "2001:db8:100::d"),
            named_ports=db_ports,
        ),
    ]


def random_rule(rng: random.Random, direction: str) -> Rule:
    action = rng.choice(("Allow", "Allow", "Allow", "Deny", "Deny", "Log", "Pass"))
    protocol = rng.choice((None, "TCP", "TCP", "UDP"))
    ip_version = rng.choice((None, None, None, None, 4, 6))
    peer: dict[str, object] = {}
    own: dict[str, object] = {}
    family = ip_version or rng.choice((4, 6))
    nets = NETS4 if family == 4 else NETS6
    roll = rng.random()
    if direction == "egress" and action == "Allow" and roll < 0.45:
        peer["domains"] = rng.sample(DOMAINS, rng.randint(1, 2))
    elif roll < 0.65:
        peer["nets"] = rng.sample(nets, 1)
    elif roll < 0.8:
        peer["selector"] = rng.choice(SELECTORS)
    if rng.random() < 0.15 and "domains" not in peer:
        peer["not_nets"] = rng.sample(nets, 1)
    target = peer if direction == "egress" else own  # destination ports
    if protocol is not None and rng.random() < 0.6:
        target["ports"] = rng.sample(PORTS, rng.randint(1, 2))
    if protocol is not None and rng.random() < 0.15:
        target["not_ports"] = rng.sample(PORTS, 1)
    source, destination = (own, peer) if direction == "egress" else (peer, own)
    return rule(
        action,  # type: ignore[arg-type]
        protocol=protocol,
        ip_version=ip_version,
        source=entity(**source),  # type: ignore[arg-type]
        destination=entity(**destination),  # type: ignore[arg-type]
    )


def random_policy(rng: random.Random, index: int) -> Policy:
    namespace = rng.choice((None, "team-a", "team-b"))
    egress = [random_rule(rng, "egress") for _ in range(rng.randint(0, 3))]
    ingress = [random_rule(rng, "ingress") for _ in range(rng.randint(0, 2))]
    if not egress and not ingress:
        egress = [random_rule(rng, "egress")]
    return policy(
        f"gen-{index}",
        namespace=namespace,
        tier=rng.choice(("security", "default", "default")),
        order=rng.choice((None, 1.0, 5.0, 10.0)),
        selector=rng.choice(SELECTORS),
        egress=egress,
        ingress=ingress,
    )


def dns_policy() -> Policy:
    """DNS to the lab's server is allowed by a policy like any traffic (no hidden allow)."""
    return policy(
        "allow-dns",
        tier="platform",
        order=1.0,
        egress=[
            rule(
                "Allow", protocol="UDP", destination=entity(nets=[f"{DNS_SERVER}/32"], ports=[53])
            ),
            rule("Pass"),
        ],
    )


def compare(engine: PolicyEngine, lab: Lab, flows: Sequence[Flow], label: str) -> list[str]:
    """Probe the flows; return a line per flow where kernel and engine disagree."""
    kernel = lab.probe(flows)
    problems = []
    allowed = 0
    for flow in flows:
        verdict = engine.verdict(flow.src, flow.dst, flow.protocol.upper(), flow.port)
        allowed += verdict.allowed
        if verdict.allowed != kernel[flow]:
            trace = engine.explain(flow.src, flow.dst, flow.protocol.upper(), flow.port)
            problems.append(f"{flow}: kernel {'allowed' if kernel[flow] else 'blocked'}\n{trace}")
    print(
        f"[{label}] flows={len(flows)} engine-allowed={allowed}"
        f" engine-denied={len(flows) - allowed} kernel-allowed={sum(kernel.values())}"
        f" agreeing={len(flows) - len(problems)}"
    )
    return problems


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_enforces_exactly_the_engine_verdicts(kernel: None, seed: int) -> None:
    rng = random.Random(seed)
    endpoints = make_endpoints()
    policies = [dns_policy(), *(random_policy(rng, i) for i in range(rng.randint(5, 9)))]
    # At least one rule names the domains learned later and the short-lived one, so the
    # delta path and the expiry are always exercised.
    policies.append(
        policy(
            "later-domains",
            namespace=rng.choice((None, "team-a", "team-b")),
            tier=rng.choice(("security", "default")),
            order=rng.choice((None, 2.0)),
            selector=rng.choice(SELECTORS),
            egress=[
                rule(
                    "Allow",
                    protocol=rng.choice(("TCP", "UDP")),
                    destination=entity(
                        domains=["*.svc.example.test", "short.example.test", "x.other.test"]
                    ),
                )
            ],
        )
    )
    tiers = (
        tier("platform", 10.0, "Pass"),
        tier("security", 100.0, rng.choice(("Deny", "Pass"))),
    )
    cache = DNSCache(trusted_servers=[DNS_SERVER])
    engine = PolicyEngine(
        ResourceSet(policies=tuple(policies), tiers=tiers),
        Cluster(endpoints=tuple(endpoints)),
        cache,
    )
    deltas: list[Delta] = []
    engine.subscribe(deltas.extend)
    backend = NftablesBackend(table=f"fqp{seed}", reject=True)
    keys = [e.key for e in endpoints]
    with Lab(
        [(e.key, e.interface) for e in endpoints],
        SERVICE_V4 + SERVICE_V6,
        TCP_PORTS,
        UDP_PORTS,
        RECORDS,
        CNAMES,
        lifetime=120,
    ) as lab:
        flows = list(iter_flows(lab))
        assert len(flows) >= 300
        for name in NAMES_FIRST:
            for wire in lab.resolve(rng.choice(keys), [name]):
                cache.observe(wire, server=f"{DNS_SERVER}:53")
        backend.apply(backend.render(engine.datapath(), now=cache.clock()), netns=lab.host)
        deltas.clear()

        # Learned through the enforced table: the DNS policy lets the queries out.
        for name in NAMES_LATER:
            for wire in lab.resolve(rng.choice(keys), [name]):
                cache.observe(wire, server=f"{DNS_SERVER}:53")
        assert deltas, "new DNS answers must reach the datapath as deltas"
        assert not backend.needs_full(deltas)
        backend.apply(backend.render_delta(deltas, now=cache.clock()), netns=lab.host)
        deltas.clear()
        problems = compare(engine, lab, flows, f"seed {seed} learned")

        # The short TTL runs out: the kernel's element timeouts and the engine's expire().
        expiry = max(cache.expiries("short.example.test").values())
        time.sleep(max(0.0, expiry - cache.clock()) + 0.5)
        cache.expire()
        assert any(not getattr(d, "added", True) for d in deltas), "expiry must remove members"
        problems += compare(engine, lab, flows, f"seed {seed} expired")
        # Deleting members the kernel already timed out must not fail the transaction.
        backend.apply(backend.render_delta(deltas, now=cache.clock()), netns=lab.host)
        deltas.clear()

        # A policy changes: full re-render, applied as libnftables JSON this time.
        changed = random_policy(rng, 1000)
        engine.upsert_policy(
            policy(
                "gen-0",
                namespace=policies[1].metadata.namespace,
                tier=changed.spec.tier,
                selector="all()",
                egress=changed.spec.egress,
                ingress=changed.spec.ingress,
            )
        )
        backend.use_json = True
        backend.apply(backend.render(engine.datapath(), now=cache.clock()), netns=lab.host)
        problems += compare(engine, lab, flows, f"seed {seed} changed")
    assert not problems, "\n\n".join(problems[:5])


# ------------------------------------------------------------------- smaller kernel facts


def small_engine(clock: FakeClock) -> tuple[PolicyEngine, DNSCache]:
    cache = DNSCache(clock=clock, report_refresh=True)
    policies = (
        policy(
            "web-out",
            namespace="team-a",
            selector='app == "web"',
            egress=[
                rule("Log", protocol="TCP", destination=entity(ports=[443])),
                rule(
                    "Allow",
                    protocol="TCP",
                    destination=entity(domains=["api.example.test"], ports=[443, "8000:8100"]),
                ),
                rule("Pass", destination=entity(nets=["203.0.113.128/25", "203.0.113.130/32"])),
                rule(
                    "Deny",
                    protocol="UDP",
                    destination=entity(selector='app == "db"', ports=["dnsx"]),
                ),
            ],
            ingress=[
                rule(
                    "Allow",
                    protocol="TCP",
                    source=entity(selector="has(app)"),
                    destination=entity(ports=["http"]),
                )
            ],
        ),
    )
    engine = PolicyEngine(
        ResourceSet(policies=policies), Cluster(endpoints=tuple(make_endpoints())), cache
    )
    answer(cache, "api.example.test", "203.0.113.10", "2001:db8:203::10", ttl=30)
    return engine, cache


def _listing(netns: str, table: str) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "table", "inet", table],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip
    return re.sub(r" expires \S+", "", out)


def test_text_and_json_renderings_build_the_same_table(netns: str) -> None:
    engine, cache = small_engine(FakeClock())
    backend = NftablesBackend()
    rendering = backend.render_structured(engine.datapath(), now=cache.clock())
    assert rendering.data is not None
    backend.apply(rendering, netns=netns)
    from_text = _listing(netns, backend.table)
    backend.remove(netns=netns)
    backend.use_json = True
    backend.apply(rendering, netns=netns)
    from_json = _listing(netns, backend.table)
    # nft 1.0.6's JSON parser drops the comments of sets and some chains (a line of their
    # own); rule comments (inline) it keeps, so everything else must be identical.
    own_line_comment = re.compile(r'\t\tcomment "[^"\n]*"\n')
    assert own_line_comment.sub("", from_json) == own_line_comment.sub("", from_text)
    assert "203.0.113.10 timeout 30s" in from_text


def test_reapplying_a_full_render_replaces_rules_and_keeps_learned_elements(netns: str) -> None:
    clock = FakeClock()
    engine, cache = small_engine(clock)
    backend = NftablesBackend()
    backend.apply(backend.render(engine.datapath(), now=clock()), netns=netns)
    answer(cache, "api.example.test", "203.0.113.20", ttl=30)
    backend.apply(backend.render(engine.datapath(), now=clock()), netns=netns)
    listing = _listing(netns, backend.table)
    assert "203.0.113.10" in listing
    assert "203.0.113.20" in listing
    assert listing.count("chain fwd_egress") == 1


def test_delta_refreshes_an_element_timeout_when_the_cache_extends_it(netns: str) -> None:
    clock = FakeClock()
    engine, cache = small_engine(clock)
    backend = NftablesBackend()
    deltas: list[Delta] = []
    engine.subscribe(deltas.extend)
    backend.apply(backend.render(engine.datapath(), now=clock()), netns=netns)
    clock.advance(10)
    answer(cache, "api.example.test", "203.0.113.10", "2001:db8:203::10", ttl=300)
    assert deltas
    backend.apply(backend.render_delta(deltas, now=clock()), netns=netns)
    listing = _listing(netns, backend.table)
    assert "203.0.113.10 timeout 5m" in listing, listing


def test_hostile_strings_from_policies_inject_nothing(netns: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "add", "table", "inet", "canary"],
        check=True,
        timeout=30,
    )
    hostile = policy(
        'evil" ; flush ruleset',
        egress=[rule("Log", destination=entity(selector="x == 'x\" ; flush ruleset'"))],
    )
    engine = PolicyEngine(
        ResourceSet(policies=(hostile,)), Cluster(endpoints=tuple(make_endpoints())), DNSCache()
    )
    backend = NftablesBackend()
    backend.apply(backend.render(engine.datapath(), now=0.0), netns=netns)
    tables = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "tables"],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip
    assert "table inet canary" in tables
    assert "table inet fqdnpolicy" in tables


def test_check_accepts_a_valid_rendering_and_reports_a_broken_one(kernel: None) -> None:
    engine, cache = small_engine(FakeClock())
    backend = NftablesBackend()
    full = backend.render(engine.datapath(), now=cache.clock())
    backend.check(full)
    backend.check(backend.render_delta([], now=cache.clock()))
    broken = Rendering("nftables", "full", full.text.replace("accept", "acept", 1))
    with pytest.raises(BackendError, match="nft refused"):
        backend.check(broken)


def test_remove_deletes_only_our_table_and_tolerates_absence(netns: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "add", "table", "inet", "other"],
        check=True,
        timeout=30,
    )
    engine, cache = small_engine(FakeClock())
    backend = NftablesBackend()
    backend.apply(backend.render(engine.datapath(), now=cache.clock()), netns=netns)
    backend.remove(netns=netns)
    backend.remove(netns=netns)
    listing = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "tables"],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip
    names = [t["table"]["name"] for t in json.loads(listing)["nftables"] if "table" in t]
    assert names == ["other"]
