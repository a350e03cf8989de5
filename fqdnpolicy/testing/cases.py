"""Seeded conformance cases: a small cluster, its DNS records, and generated Calico policies.

:func:`generate_case` draws, from a seed, the policies the kit runs: Calico v3 YAML documents
loaded by :func:`fqdnpolicy.loader.loads` (so every case is valid input, and
:attr:`Case.yaml` shows it as a user would write it). The cluster, the services and the DNS
records are fixed; the policies and the mid-run change vary with the seed.

Every case has, by construction (not by luck of the draw):

* three tiers: ``platform`` (end of tier: Pass), ``security`` (Deny or Pass, by seed) and
  ``default`` (Deny), so end-of-tier drops and passes both happen;
* a rule of each action (Allow, Deny, Log, Pass), ports, a port range, a named port,
  ``notPorts``, an ICMP rule, an IPv6-only rule, ingress rules and peer selectors;
* overlapping CIDRs: ``203.0.113.12/32`` (a Deny) before ``203.0.113.0/24`` (an Allow) in one
  policy, each its own set, and ``203.0.113.12`` also a DNS answer;
* domains learned from DNS (CNAME chains, wildcards), one short-lived name that expires
  during the run and one that is answered again before it expires (a refresh);
* an endpoint no policy selects (``free/idle``: allowed both ways by default).
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import yaml

from fqdnpolicy.cluster import Endpoint, NamedPort
from fqdnpolicy.loader import loads
from fqdnpolicy.model import Policy, ResourceSet
from fqdnpolicy.testing.lab import DNS_SERVER, HostRecord, workload_addresses

__all__ = [
    "CNAMES",
    "NAMES_FIRST",
    "NAMES_LATER",
    "RECORDS",
    "REFRESH_NAME",
    "SERVICE_ADDRESSES",
    "SHORT_NAME",
    "TCP_PORTS",
    "UDP_PORTS",
    "Case",
    "generate_case",
    "make_endpoints",
]

#: Lifetime of the name that expires during a run, and of the one refreshed before it expires.
SHORT_TTL = 4
REFRESH_TTL = 6
SHORT_NAME = "short.example.test"
REFRESH_NAME = "refresh.example.test"

SERVICE_V4 = tuple(f"203.0.113.{n}" for n in (10, 11, 12, 13, 14, 15, 16, 17, 140))
SERVICE_V6 = tuple(f"2001:db8:203::{n}" for n in (10, 11, 12, 14, 15, 17))
SERVICE_ADDRESSES = SERVICE_V4 + SERVICE_V6
TCP_PORTS = (80, 443, 8080)
UDP_PORTS = (5353, 9999)
RECORDS = (
    HostRecord("api.example.test", ("203.0.113.10", "2001:db8:203::10"), 60),
    HostRecord("node1.edge.example.test", ("203.0.113.11", "2001:db8:203::11"), 60),
    HostRecord(SHORT_NAME, ("203.0.113.12", "2001:db8:203::12"), SHORT_TTL),
    HostRecord("a.svc.example.test", ("203.0.113.13",), 60),
    HostRecord("b.svc.example.test", ("203.0.113.14", "2001:db8:203::14"), 60),
    HostRecord("x.other.test", ("203.0.113.15", "2001:db8:203::15"), 60),
    HostRecord("blocked.example.test", ("203.0.113.16",), 60),
    HostRecord(REFRESH_NAME, ("203.0.113.17", "2001:db8:203::17"), REFRESH_TTL),
)
CNAMES = (
    ("www.example.test", "api.example.test", 60),
    ("edge.cdn.example.test", "node1.edge.example.test", 60),
    ("cdn.example.test", "edge.cdn.example.test", 60),
)
#: Learned before the first apply; then, through the enforced rules, the others.
NAMES_FIRST = ("www.example.test", "cdn.example.test", "a.svc.example.test", "blocked.example.test")
NAMES_LATER = ("b.svc.example.test", "x.other.test", SHORT_NAME, REFRESH_NAME)

DOMAINS = (
    "api.example.test",
    "www.example.test",
    "cdn.example.test",
    "*.svc.example.test",
    "*.example.test",
    SHORT_NAME,
    REFRESH_NAME,
    "x.other.test",
    "*.edge.example.test",
)
OVERLAP_WIDE, OVERLAP_NARROW = "203.0.113.0/24", "203.0.113.12/32"
NETS = {
    4: (
        OVERLAP_WIDE,
        OVERLAP_NARROW,
        "203.0.113.0/28",
        "203.0.113.128/25",
        "203.0.113.16/29",
        "198.51.100.0/26",
        "198.51.100.12/32",
    ),
    6: (
        "2001:db8:203::/120",
        "2001:db8:203::12/128",
        "2001:db8:203::10/126",
        "2001:db8:100::/64",
    ),
}
# Global policies select only labelled endpoints, so free/idle stays without any policy.
GLOBAL_SELECTORS = (
    'app == "web"',
    'app == "db"',
    'app in {"api", "db"}',
    "has(app)",
    'has(app) && app != "web"',
)
SELECTORS = (*GLOBAL_SELECTORS, 'app != "web"', "all()")
PORTS = {"TCP": (80, 443, "8000:8100", "440:450", "http"), "UDP": (5353, 9999, "9000:9999", "dnsx")}
ICMP = {4: ("ICMP", 8, 13), 6: ("ICMPv6", 128, 135)}  # protocol, echo request, another type

#: What every case holds at least once: each becomes one rule (see :func:`_rule`).
FEATURES = (
    "domains",
    "overlap",
    "deny",
    "log",
    "pass",
    "ports",
    "range",
    "named-port",
    "not-ports",
    "icmp",
    "ipv6",
    "selector",
    "ingress",
)


def make_endpoints() -> tuple[Endpoint, ...]:
    """The cluster: four labelled workloads in two namespaces, and one without any policy."""
    db_ports = (NamedPort("http", 80, "TCP"), NamedPort("dnsx", 5353, "UDP"))
    specs: list[tuple[str, str, dict[str, str], tuple[NamedPort, ...]]] = [
        ("web", "team-a", {"app": "web"}, ()),
        ("api", "team-a", {"app": "api"}, (NamedPort("http", 8080, "TCP"),)),
        ("web", "team-b", {"app": "web"}, ()),
        ("db", "team-b", {"app": "db"}, db_ports),
        ("idle", "free", {}, ()),
    ]  # fmt: skip
    return tuple(
        Endpoint(name, namespace, labels, workload_addresses(i), named_ports=ports)
        for i, (name, namespace, labels, ports) in enumerate(specs)
    )


@attrs.frozen
class Case:
    """One seeded case.

    Attributes:
        seed: The seed it was drawn from (:func:`generate_case` gives the same case again).
        endpoints: The cluster's endpoints (fixed).
        resources: Tiers and policies in force from the start.
        change: The policy upserted mid-run (it replaces one of :attr:`resources`).
        resolver: Endpoint the DNS queries are sent from.
        yaml: :attr:`resources`, then :attr:`change`, as Calico YAML documents.
    """

    seed: int
    endpoints: tuple[Endpoint, ...]
    resources: ResourceSet
    change: Policy
    resolver: str
    yaml: str


def _pick_ports(rng: random.Random, protocol: str, count: int) -> list[int | str]:
    return rng.sample(PORTS[protocol], count)


def _rule(rng: random.Random, direction: str, feature: str | None = None) -> dict[str, Any]:
    """One rule as Calico YAML; ``feature`` forces what it must show (see :data:`FEATURES`)."""
    forced_action = {"deny": "Deny", "log": "Log", "pass": "Pass", "domains": "Allow"}
    action = forced_action.get(feature or "") or rng.choice(
        ("Allow", "Allow", "Allow", "Deny", "Deny", "Log", "Pass")
    )
    family = 6 if feature == "ipv6" else rng.choice((4, 4, 6))
    if feature == "icmp" or (feature is None and rng.random() < 0.12):
        return _icmp_rule(rng, action, family)
    protocol: str | None = rng.choice((None, "TCP", "TCP", "UDP"))
    if feature in ("ports", "range", "named-port", "not-ports") and protocol is None:
        protocol = rng.choice(("TCP", "UDP"))
    out: dict[str, Any] = {"action": action}
    if protocol is not None:
        out["protocol"] = protocol
    if feature == "ipv6" or rng.random() < 0.15:
        out["ipVersion"] = family
    peer: dict[str, Any] = {}
    own: dict[str, Any] = {}
    roll = rng.random()
    may_name = feature not in ("selector", "ipv6")  # those need a peer of their own
    if (
        direction == "egress"
        and action == "Allow"
        and may_name
        and (feature == "domains" or roll < 0.45)
    ):
        peer["domains"] = rng.sample(DOMAINS, rng.randint(1, 2))
    elif feature == "selector" or (feature is None and 0.65 <= roll < 0.8):
        peer["selector"] = rng.choice(SELECTORS)
    elif feature == "ipv6" or roll < 0.65:
        peer["nets"] = rng.sample(NETS[family], 1)
    if "domains" not in peer and rng.random() < 0.15:
        peer["notNets"] = rng.sample(NETS[family], 1)
    if "nets" not in peer and "notNets" not in peer and "ipVersion" in out and feature != "ipv6":
        del out["ipVersion"]  # a version without CIDRs to agree with: keep it simple
    ports_side = peer if direction == "egress" else own  # destination ports
    if protocol is not None:
        if feature == "range":
            ports_side["ports"] = [rng.choice([p for p in PORTS[protocol] if ":" in str(p)])]
        elif feature == "named-port":
            ports_side["ports"] = [rng.choice([p for p in PORTS[protocol] if str(p).isalpha()])]
        elif feature == "ports" or rng.random() < 0.6:
            ports_side["ports"] = _pick_ports(rng, protocol, rng.randint(1, 2))
        if feature == "not-ports" or rng.random() < 0.15:
            ports_side["notPorts"] = _pick_ports(rng, protocol, 1)
    source, destination = (own, peer) if direction == "egress" else (peer, own)
    if source:
        out["source"] = source
    if destination:
        out["destination"] = destination
    return out


def _icmp_rule(rng: random.Random, action: str, family: int) -> dict[str, Any]:
    protocol, echo, other = ICMP[family]
    out: dict[str, Any] = {"action": action, "protocol": protocol}
    roll = rng.random()
    if roll < 0.4:
        out["icmp"] = {"type": echo, "code": 0} if rng.random() < 0.5 else {"type": echo}
    elif roll < 0.6:
        out["icmp"] = {"type": other}
    elif roll < 0.75:
        out["notICMP"] = {"type": rng.choice((echo, other))}
    if rng.random() < 0.5:
        out["destination"] = {"nets": rng.sample(NETS[family], 1)}
    return out


def _policy(
    rng: random.Random, name: str, egress: list[dict[str, Any]], ingress: list[dict[str, Any]]
) -> dict[str, Any]:
    namespace = rng.choice((None, "team-a", "team-b"))
    spec: dict[str, Any] = {
        "tier": rng.choice(("security", "default", "default")),
        "selector": rng.choice(GLOBAL_SELECTORS if namespace is None else SELECTORS),
    }
    order = rng.choice((None, 1.0, 5.0, 10.0))
    if order is not None:
        spec["order"] = order
    if egress:
        spec["egress"] = egress
    if ingress:
        spec["ingress"] = ingress
    # Sometimes both types with no rules on one side: the policy applies there, and drops.
    if rng.random() < 0.15 or (egress and ingress):
        spec["types"] = ["Ingress", "Egress"]
    else:
        spec["types"] = ["Egress"] if egress else ["Ingress"]
    metadata: dict[str, Any] = {"name": name}
    kind = "GlobalNetworkPolicy"
    if namespace is not None:
        metadata["namespace"] = namespace
        kind = "NetworkPolicy"
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": metadata, "spec": spec}


def _random_policy(rng: random.Random, name: str, forced: list[str]) -> dict[str, Any]:
    egress = [_rule(rng, "egress", f) for f in forced if f != "ingress"]
    ingress = [_rule(rng, "ingress") for f in forced if f == "ingress"]
    egress += [_rule(rng, "egress") for _ in range(rng.randint(0, 2))]
    ingress += [_rule(rng, "ingress") for _ in range(rng.randint(0, 1))]
    if not egress and not ingress:
        egress = [_rule(rng, "egress")]
    rng.shuffle(egress)
    return _policy(rng, name, egress, ingress)


def _overlap_policy(rng: random.Random) -> dict[str, Any]:
    """The narrow CIDR's Deny, then the wide one's Allow: an address in both sets."""
    protocol = rng.choice(("TCP", "UDP", None))
    narrow: dict[str, Any] = {"action": "Deny", "destination": {"nets": [OVERLAP_NARROW]}}
    if protocol is not None:
        narrow["protocol"] = protocol
    wide = {"action": "Allow", "destination": {"nets": [OVERLAP_WIDE]}}
    return _policy(rng, "overlap", [narrow, wide], [])


def _fixed_documents() -> list[dict[str, Any]]:
    def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "projectcalico.org/v3",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }

    return [
        doc("Tier", "platform", {"order": 10, "defaultAction": "Pass"}),
        # DNS passes only because a policy allows it, as in a cluster (no hidden allow). No
        # rule passes: that would leave the tier before the next policy's rules.
        doc("GlobalNetworkPolicy", "allow-dns", {
            "tier": "platform", "order": 1, "selector": "has(app)", "types": ["Egress"],
            "egress": [
                {"action": "Allow", "protocol": "UDP",
                 "destination": {"nets": [f"{DNS_SERVER}/32"], "ports": [53]}},
            ],
        }),
        # The short-lived and the refreshed name, for every protocol: the connections held
        # across their expiry are among these.
        doc("GlobalNetworkPolicy", "expiring", {
            "tier": "platform", "order": 2, "selector": 'app == "web"', "types": ["Egress"],
            "egress": [{"action": "Allow", "destination": {"domains": [SHORT_NAME, REFRESH_NAME]}}],
        }),
    ]  # fmt: skip


def _dump(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=None)


def generate_case(seed: int) -> Case:
    """Draw the case of ``seed`` (the same seed gives the same case)."""
    rng = random.Random(seed)
    documents = _fixed_documents()
    security_default = rng.choice(("Deny", "Pass"))
    documents.append(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Tier",
            "metadata": {"name": "security"},
            "spec": {"order": 100, "defaultAction": security_default},
        }
    )
    documents.append(_overlap_policy(rng))
    count = rng.randint(5, 8)
    forced: list[list[str]] = [[] for _ in range(count)]
    for feature in FEATURES:
        forced[rng.randrange(count)].append(feature)
    generated = [_random_policy(rng, f"gen-{i}", forced[i]) for i in range(count)]
    documents += generated
    # The change replaces a generated policy with another, drawn afresh, of the same identity.
    target = rng.choice(generated)
    change = _random_policy(rng, target["metadata"]["name"], [])
    change["metadata"] = target["metadata"]
    change["kind"] = target["kind"]
    if "namespace" not in change["metadata"]:
        change["spec"]["selector"] = rng.choice(GLOBAL_SELECTORS)
    text = _dump(documents)
    change_text = _dump([change])
    endpoints = make_endpoints()
    (changed,) = loads(change_text, filename=f"case-{seed}-change.yaml").policies
    return Case(
        seed=seed,
        endpoints=endpoints,
        resources=loads(text, filename=f"case-{seed}.yaml"),
        change=changed,
        resolver=rng.choice([e.key for e in endpoints if e.labels]),
        yaml=f"{text}---\n# the change, upserted mid-run\n{change_text}",
    )
