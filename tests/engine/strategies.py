"""Builders and hypothesis strategies for small but rich policy worlds.

Builders (``policy``, ``rule``, ``entity``, ``network_set``, ``answer``...) make the frozen models
directly, without YAML, so hand-written tests stay short and generation stays fast.

Strategies draw worlds from a deliberately small vocabulary (three label keys with three values,
three namespaces, a handful of names, addresses and CIDRs that overlap on purpose) so that
selectors, nets, domains and DNS answers collide often: a world where nothing matches tests
nothing. Generated resources are valid as the loader would accept them (ports only with TCP,
UDP or SCTP; ``domains`` only in egress Allow destinations without ``nets``/``selector``;
``nets`` of one family; no catch-all in ``notNets``; ICMP fields only with ICMP protocols).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
from hypothesis import strategies as st

from fqdnpolicy.cluster import Cluster, Endpoint, Namespace, ServiceAccount
from fqdnpolicy.cluster import NamedPort as EndpointPort
from fqdnpolicy.datapath import Delta, IPSetChanged, MemberChanged
from fqdnpolicy.dns import DNSCache, DNSChange
from fqdnpolicy.dns.wire import Extracted, Record
from fqdnpolicy.domains import DomainPattern, parse_domain_pattern
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import (
    Action,
    Direction,
    EntityRule,
    ICMPFields,
    IPNetwork,
    NamedPort,
    NetworkSet,
    NetworkSetSpec,
    ObjectMeta,
    Policy,
    PolicySpec,
    PolicyType,
    Port,
    PortRange,
    Protocol,
    ResourceSet,
    Rule,
    ServiceAccountMatch,
    Tier,
    TierSpec,
)
from fqdnpolicy.selector import Selector, parse_selector
from tests.support import FakeClock as FakeClock  # the engine tests import it from here

# ----------------------------------------------------------------------------- builders


def sel(text: str | None) -> Selector | None:
    """Parse a selector, passing None through."""
    return None if text is None else parse_selector(text)


def port(spec: int | str) -> Port:
    """``80`` -> a one-port range, ``"80:90"`` -> a range, ``"http"`` -> a named port."""
    if isinstance(spec, int):
        return PortRange(spec, spec)
    if ":" in spec:
        first, last = spec.split(":")
        return PortRange(int(first), int(last))
    return NamedPort(spec)


def entity(
    *,
    nets: Iterable[str] = (),
    not_nets: Iterable[str] = (),
    selector: str | None = None,
    not_selector: str | None = None,
    namespace_selector: str | None = None,
    ports: Iterable[int | str] = (),
    not_ports: Iterable[int | str] = (),
    sa_names: Iterable[str] = (),
    sa_selector: str | None = None,
    domains: Iterable[str] = (),
) -> EntityRule:
    """A rule's source or destination from plain values."""
    sa_names = tuple(sa_names)
    accounts = None
    if sa_names or sa_selector is not None:
        accounts = ServiceAccountMatch(sa_names, sel(sa_selector))
    return EntityRule(
        nets=tuple(ipaddress.ip_network(n) for n in nets),
        not_nets=tuple(ipaddress.ip_network(n) for n in not_nets),
        selector=sel(selector),
        not_selector=sel(not_selector),
        namespace_selector=sel(namespace_selector),
        ports=tuple(port(p) for p in ports),
        not_ports=tuple(port(p) for p in not_ports),
        service_accounts=accounts,
        domains=tuple(parse_domain_pattern(d) for d in domains),
    )


def rule(
    action: Action,
    *,
    protocol: Protocol | None = None,
    not_protocol: Protocol | None = None,
    ip_version: int | None = None,
    icmp: tuple[int | None, int | None] | None = None,
    not_icmp: tuple[int | None, int | None] | None = None,
    source: EntityRule | None = None,
    destination: EntityRule | None = None,
) -> Rule:
    """A rule from plain values (``icmp`` as ``(type, code)``)."""
    return Rule(
        action=action,
        protocol=protocol,
        not_protocol=not_protocol,
        ip_version=ip_version,
        icmp=None if icmp is None else ICMPFields(*icmp),
        not_icmp=None if not_icmp is None else ICMPFields(*not_icmp),
        source=source or EntityRule(),
        destination=destination or EntityRule(),
    )


def inferred_types(ingress: Sequence[Rule], egress: Sequence[Rule]) -> tuple[PolicyType, ...]:
    """Calico's default ``types``: Egress only when there are egress rules and no ingress
    rules; both when both; else Ingress."""
    if egress and ingress:
        return ("Ingress", "Egress")
    if egress:
        return ("Egress",)
    return ("Ingress",)


def policy(
    name: str,
    *,
    namespace: str | None = None,
    tier: str = "default",
    order: float | None = None,
    selector: str = "all()",
    namespace_selector: str | None = None,
    sa_selector: str | None = None,
    types: Iterable[PolicyType] | None = None,
    ingress: Iterable[Rule] = (),
    egress: Iterable[Rule] = (),
) -> Policy:
    """A NetworkPolicy (``namespace`` given) or GlobalNetworkPolicy."""
    ingress, egress = tuple(ingress), tuple(egress)
    kind: Literal["NetworkPolicy", "GlobalNetworkPolicy"] = (
        "GlobalNetworkPolicy" if namespace is None else "NetworkPolicy"
    )
    spec = PolicySpec(
        order=order,
        tier=tier,
        selector=parse_selector(selector),
        namespace_selector=sel(namespace_selector),
        service_account_selector=sel(sa_selector),
        types=tuple(types) if types is not None else inferred_types(ingress, egress),
        ingress=ingress,
        egress=egress,
    )
    return Policy(kind=kind, metadata=ObjectMeta(name, namespace), spec=spec)


def tier(name: str, order: float | None = None, default_action: str = "Deny") -> Tier:
    """A Tier."""
    assert default_action in ("Deny", "Pass")
    action: Literal["Deny", "Pass"] = "Deny" if default_action == "Deny" else "Pass"
    return Tier(ObjectMeta(name), TierSpec(order=order, default_action=action))


def network_set(
    name: str,
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    nets: Iterable[str] = (),
    domains: Iterable[str] = (),
) -> NetworkSet:
    """A NetworkSet (``namespace`` given) or GlobalNetworkSet."""
    kind: Literal["NetworkSet", "GlobalNetworkSet"] = (
        "GlobalNetworkSet" if namespace is None else "NetworkSet"
    )
    spec = NetworkSetSpec(
        nets=tuple(ipaddress.ip_network(n) for n in nets),
        allowed_egress_domains=tuple(parse_domain_pattern(d) for d in domains),
    )
    return NetworkSet(kind=kind, metadata=ObjectMeta(name, namespace, labels or {}), spec=spec)


def pod(
    key: str,
    *ips: str,
    labels: Mapping[str, str] | None = None,
    service_account: str = "default",
    ports: Iterable[tuple[str, int, str]] = (),
) -> Endpoint:
    """An endpoint from ``"namespace/name"``, its IPs, labels and named ports."""
    namespace, name = key.split("/")
    return Endpoint(
        name=name,
        namespace=namespace,
        labels=dict(labels or {}),
        ips=ips,
        service_account=service_account,
        named_ports=tuple(EndpointPort(n, p, proto) for n, p, proto in ports),
    )


@attrs.frozen
class Answer:
    """A DNS answer: ``qname`` CNAME ``chain[0]`` CNAME ... and the last name's addresses."""

    qname: str
    chain: tuple[str, ...]
    ips: tuple[str, ...]
    ttl: int = 60

    def extracted(self) -> Extracted:
        """The answer in the shape :meth:`DNSCache.ingest` takes."""
        records: list[Record] = []
        owner = self.qname
        for target in self.chain:
            records.append(Record(owner, 5, self.ttl, target))
            owner = target
        for ip in self.ips:
            rtype = 1 if ipaddress.ip_address(ip).version == 4 else 28
            records.append(Record(owner, rtype, self.ttl, ip))
        return Extracted(self.qname, True, 0, 0, False, tuple(records))


def answer(cache: DNSCache, qname: str, *targets: str, ttl: int = 60) -> list[DNSChange]:
    """Teach the cache one answer; ``targets`` are CNAME targets (names) then addresses."""
    chain = tuple(t for t in targets if not _is_ip(t))
    ips = tuple(t for t in targets if _is_ip(t))
    return cache.ingest(Answer(qname, chain, ips, ttl).extracted())


def rendered_sets(engine: PolicyEngine) -> dict[str, dict[str, float | None]]:
    """Every set's members with their expiries, as the engine renders them now."""
    return {s.set_id: dict(s.members) for s in engine.datapath().sets}


class ToldSets:
    """What a datapath following ``engine`` holds: its rendering now, then every delta.

    Deltas are applied strictly: a member leaving a set it never joined, or a set it never
    had, raises (inside the engine's delivery).
    """

    def __init__(self, engine: PolicyEngine) -> None:
        self.sets = rendered_sets(engine)
        self.cancel = engine.subscribe(self._follow)

    def _follow(self, deltas: list[Delta]) -> None:
        for delta in deltas:
            if isinstance(delta, IPSetChanged) and delta.added:
                self.sets[delta.set_id] = {}
            elif isinstance(delta, IPSetChanged):
                del self.sets[delta.set_id]
            elif isinstance(delta, MemberChanged) and delta.added:
                self.sets[delta.set_id][delta.member] = delta.expiry
            elif isinstance(delta, MemberChanged):
                del self.sets[delta.set_id][delta.member]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- vocabulary

LABEL_KEYS = ("app", "tier", "role")
LABEL_VALUES = ("a", "b", "c")
NAMESPACES = ("default", "prod", "dev")
ACCOUNTS = ("default", "sa1")
POLICY_NAMES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
TIER_NAMES = ("security", "platform")

DNS_NAMES = (
    "api.example.com",
    "www.example.com",
    "a.b.example.com",
    "example.org",
    "cdn.example.net",
    "edge.cdn.example.net",
)
DOMAIN_PATTERNS = (
    "api.example.com",
    "www.example.com",
    "example.org",
    "edge.cdn.example.net",
    "*.example.com",
    "*.example.net",
    "*.b.example.com",
    "www.*.com",
    "*.com",
)
DNS_IPS = (
    "198.51.100.1",
    "198.51.100.2",
    "198.51.100.3",
    "203.0.113.5",
    "2001:db8::1",
    "2001:db8::2",
)
OUTSIDE_IPS = ("192.0.2.7", "198.51.100.200", "10.0.5.5", "2001:db8:ffff::7", "fd00::ff")
V4_NETS = (
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.0.10/32",
    "198.51.100.0/24",
    "198.51.100.0/30",
    "203.0.113.0/24",
)
V6_NETS = ("fd00::/64", "2001:db8::/32", "2001:db8::1/128")
CATCH_ALL = {4: "0.0.0.0/0", 6: "::/0"}
NAMED_PORTS = (
    ("http", 80, "TCP"),
    ("http", 8080, "TCP"),
    ("dns", 53, "UDP"),
    ("metrics", 9090, "TCP"),
)
PORT_SPECS: tuple[int | str, ...] = (
    53,
    80,
    443,
    8080,
    "80:443",
    "1000:9999",
    "http",
    "dns",
    "metrics",
)
FLOW_PORTS = (53, 80, 443, 8080, 9090, 5000)
NAMESPACE_SELECTORS = (
    'team == "a"',
    'env == "prod"',
    'kubernetes.io/metadata.name == "prod"',
    'projectcalico.org/name == "dev"',
    "all()",
    "global()",
    "!has(team)",
    'global() || team == "a"',
)
IMPLICIT_SELECTORS = (
    'projectcalico.org/namespace == "prod"',
    'projectcalico.org/serviceaccount == "sa1"',
    'pcns.team == "a"',
    'pcsa.team == "b"',
    'projectcalico.org/orchestrator == "k8s"',
)


def endpoint_ips(index: int, v6: bool) -> tuple[str, ...]:
    """Distinct addresses for the index-th endpoint (IPv4 first, IPv6 optional)."""
    v4 = f"10.0.{index % 2}.{10 + index}"
    return (v4, f"fd00::{10 + index:x}") if v6 else (v4,)


# ----------------------------------------------------------------------------- strategies


def label_maps() -> st.SearchStrategy[dict[str, str]]:
    """Labels over the small vocabulary."""
    return st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=3)


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws; shrinks to False.

    Hypothesis favours small and boundary integers, so ``integers(0, n) == 0`` is true far
    more often than one time in n+1; a uniform pick among flags is not biased that way.
    """
    return bool(draw(st.sampled_from((False,) * (one_in - 1) + (True,))))


def _leaf_selectors() -> st.SearchStrategy[str]:
    keys, values = st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES)
    return st.one_of(
        st.just("all()"),
        st.builds(lambda k: f"has({k})", keys),
        st.builds(lambda k: f"!has({k})", keys),
        st.builds(lambda k, v: f'{k} == "{v}"', keys, values),
        st.builds(lambda k, v: f'{k} != "{v}"', keys, values),
        st.builds(lambda k: f'{k} in {{"a", "b"}}', keys),
        st.builds(lambda k: f'{k} not in {{"a"}}', keys),
        st.sampled_from(IMPLICIT_SELECTORS),
    )


def selector_texts() -> st.SearchStrategy[str]:
    """Selectors over the label vocabulary: leaves, and pairs joined by ``&&`` / ``||``."""
    leaf = _leaf_selectors()
    return st.one_of(
        leaf,
        st.builds(lambda a, b: f"({a}) && ({b})", leaf, leaf),
        st.builds(lambda a, b: f"({a}) || ({b})", leaf, leaf),
    )


def selectors() -> st.SearchStrategy[Selector]:
    """Parsed :func:`selector_texts`."""
    return selector_texts().map(parse_selector)


def namespaces() -> st.SearchStrategy[tuple[Namespace, ...]]:
    """Every namespace of the vocabulary, with random ``team``/``env`` labels."""
    labels = st.fixed_dictionaries(
        {},
        optional={"team": st.sampled_from(("a", "b")), "env": st.sampled_from(("prod", "dev"))},
    )
    return st.tuples(*(st.builds(Namespace, st.just(n), labels) for n in NAMESPACES))


def service_accounts() -> st.SearchStrategy[tuple[ServiceAccount, ...]]:
    """Labelled ``sa1`` accounts in some namespaces."""
    one = st.builds(
        ServiceAccount,
        st.just("sa1"),
        st.sampled_from(NAMESPACES),
        st.fixed_dictionaries({"team": st.sampled_from(("a", "b"))}),
    )
    return st.lists(one, max_size=3, unique_by=lambda sa: sa.namespace).map(tuple)


@st.composite
def endpoints(draw: st.DrawFn, index: int, name: str | None = None) -> Endpoint:
    """The index-th endpoint: random namespace, labels, account, named ports; IPs by index."""
    named = draw(st.lists(st.sampled_from(NAMED_PORTS), max_size=2, unique_by=lambda p: p[0]))
    return Endpoint(
        name=name or f"pod{index}",
        namespace=draw(st.sampled_from(NAMESPACES)),
        labels=draw(label_maps()),
        ips=endpoint_ips(index, draw(st.booleans())),
        service_account=draw(st.sampled_from(ACCOUNTS)),
        named_ports=tuple(EndpointPort(n, p, proto) for n, p, proto in named),
    )


def domain_patterns() -> st.SearchStrategy[tuple[DomainPattern, ...]]:
    """One to three patterns, exact and wildcard."""
    return st.lists(st.sampled_from(DOMAIN_PATTERNS), min_size=1, max_size=3, unique=True).map(
        lambda ps: tuple(parse_domain_pattern(p) for p in ps)
    )


def _nets(family: int, *, catch_all: bool) -> st.SearchStrategy[tuple[IPNetwork, ...]]:
    pool = list(V4_NETS if family == 4 else V6_NETS)
    if catch_all:
        pool.append(CATCH_ALL[family])
    return st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True).map(
        lambda ns: tuple(ipaddress.ip_network(n) for n in ns)
    )


@st.composite
def network_sets(draw: st.DrawFn, index: int) -> NetworkSet:
    """A NetworkSet or GlobalNetworkSet with labels, nets (both families) and domains."""
    namespace = draw(st.none() | st.sampled_from(NAMESPACES))
    nets: tuple[IPNetwork, ...] = ()
    if draw(st.booleans()):
        nets = draw(_nets(4, catch_all=False)) + draw(st.just(()) | _nets(6, catch_all=False))
    domains = draw(st.just(()) | domain_patterns())
    kind: Literal["NetworkSet", "GlobalNetworkSet"] = (
        "GlobalNetworkSet" if namespace is None else "NetworkSet"
    )
    return NetworkSet(
        kind=kind,
        metadata=ObjectMeta(f"set{index}", namespace, draw(label_maps())),
        spec=NetworkSetSpec(nets=nets, allowed_egress_domains=domains),
    )


PORT_PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP", 6, 17)
OTHER_PROTOCOLS: tuple[Protocol, ...] = ("ICMP", "ICMPv6", 1, 58, 47, "UDPLite")
# None (any protocol) and TCP, the flows' commonest, most often: rules should match flows.
RULE_PROTOCOLS: tuple[Protocol | None, ...] = (
    *(None,) * 6,
    *("TCP", "TCP", "TCP", 6),
    *PORT_PROTOCOLS,
    *OTHER_PROTOCOLS,
)
NOT_PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "ICMP", 17)
FLOW_PROTOCOLS: tuple[Protocol, ...] = ("TCP", "TCP", "UDP", "SCTP", "ICMP", "ICMPv6", 6, 47)


@st.composite
def entity_rules(
    draw: st.DrawFn, *, with_ports: bool, family: int | None, allow_domains: bool, rare: int = 1
) -> EntityRule:
    """A source/destination naming a random subset of criteria (valid combinations only).

    Each criterion is drawn rarely enough (``rare`` makes them rarer still) that a good share
    of rules match some flow: a rule naming everything matches nothing.
    """
    fields: dict[str, Any] = {}
    if allow_domains and sometimes(draw, 3):
        fields["domains"] = draw(domain_patterns())
    elif sometimes(draw, 4 * rare):
        fields["nets"] = draw(_nets(family or draw(st.sampled_from((4, 6))), catch_all=True))
    if sometimes(draw, 5 * rare):
        fields["not_nets"] = draw(_nets(family or draw(st.sampled_from((4, 6))), catch_all=False))
    if "domains" not in fields and sometimes(draw, 4 * rare):
        fields["selector"] = draw(selectors())
    if sometimes(draw, 10 * rare):
        fields["not_selector"] = draw(selectors())
    if sometimes(draw, 8 * rare):
        fields["namespace_selector"] = parse_selector(draw(st.sampled_from(NAMESPACE_SELECTORS)))
    if sometimes(draw, 10 * rare):
        names = tuple(draw(st.lists(st.sampled_from(ACCOUNTS), max_size=2, unique=True)))
        selector = draw(st.none() | st.just(parse_selector('team == "a"')))
        if names or selector is not None:
            fields["service_accounts"] = ServiceAccountMatch(names, selector)
    if with_ports and sometimes(draw, 3 * rare):
        specs = draw(st.lists(st.sampled_from(PORT_SPECS), min_size=1, max_size=2, unique=True))
        fields["ports"] = tuple(port(s) for s in specs)
    if with_ports and sometimes(draw, 7 * rare):
        specs = draw(st.lists(st.sampled_from(PORT_SPECS), min_size=1, max_size=2, unique=True))
        fields["not_ports"] = tuple(port(s) for s in specs)
    return EntityRule(**fields)


@st.composite
def rules(draw: st.DrawFn, direction: Direction) -> Rule:
    """A rule with a random action, protocol fields and entity rules."""
    action: Action = draw(st.sampled_from(("Allow", "Allow", "Deny", "Log", "Pass")))
    protocol: Protocol | None = draw(st.sampled_from(RULE_PROTOCOLS))
    with_ports = protocol in PORT_PROTOCOLS
    not_protocol: Protocol | None = None
    if sometimes(draw, 6):
        not_protocol = draw(st.sampled_from(NOT_PROTOCOLS).filter(lambda p: p != protocol))
    ip_version = draw(st.sampled_from((None, None, None, 4, 6)))
    icmp = not_icmp = None
    if protocol in ("ICMP", "ICMPv6", 1, 58):
        fields = st.builds(ICMPFields, st.integers(0, 3), st.none() | st.integers(0, 1))
        fields = fields | st.builds(ICMPFields, st.integers(0, 3))
        icmp = draw(st.none() | fields)
        not_icmp = draw(st.none() | st.none() | fields)
    domains_ok = direction == "egress" and action == "Allow"
    return Rule(
        action=action,
        protocol=protocol,
        not_protocol=not_protocol,
        ip_version=ip_version,
        icmp=icmp,
        not_icmp=not_icmp,
        source=draw(
            entity_rules(with_ports=with_ports, family=ip_version, allow_domains=False, rare=3)
        ),
        destination=draw(
            entity_rules(with_ports=with_ports, family=ip_version, allow_domains=domains_ok)
        ),
    )


ORDERS = (None, None, 1.0, 5.0, 5.0, 100.0)


@st.composite
def policies(draw: st.DrawFn, name: str, tier_names: Sequence[str]) -> Policy:
    """A NetworkPolicy or GlobalNetworkPolicy named ``name`` in one of ``tier_names``."""
    namespace = draw(st.none() | st.sampled_from(NAMESPACES))
    types: tuple[PolicyType, ...] = draw(
        st.sampled_from((("Egress",), ("Egress",), ("Ingress",), ("Ingress", "Egress")))
    )
    # A policy of the direction with no rules at all is rare but must occur (it denies).
    least = 0 if sometimes(draw, 6) else 1
    egress = (
        draw(st.lists(rules("egress"), min_size=least, max_size=4)) if "Egress" in types else []
    )
    ingress = (
        draw(st.lists(rules("ingress"), min_size=least, max_size=4)) if "Ingress" in types else []
    )
    selector = draw(st.just(Selector.all()) | selectors())
    namespace_selector = None
    if namespace is None and sometimes(draw, 4):
        namespace_selector = parse_selector(draw(st.sampled_from(NAMESPACE_SELECTORS)))
    sa_selector = None
    if sometimes(draw, 7):
        sa_selector = parse_selector(draw(st.sampled_from(('team == "a"', "has(team)", "all()"))))
    kind: Literal["NetworkPolicy", "GlobalNetworkPolicy"] = (
        "GlobalNetworkPolicy" if namespace is None else "NetworkPolicy"
    )
    spec = PolicySpec(
        order=draw(st.sampled_from(ORDERS)),
        tier=draw(st.sampled_from(tier_names)),
        selector=selector,
        namespace_selector=namespace_selector,
        service_account_selector=sa_selector,
        types=types,
        ingress=tuple(ingress),
        egress=tuple(egress),
    )
    return Policy(kind=kind, metadata=ObjectMeta(name, namespace), spec=spec)


@st.composite
def tiers(draw: st.DrawFn) -> tuple[Tier, ...]:
    """Zero to two named tiers, sometimes an explicit ``default`` tier (orders may tie)."""
    chosen = draw(st.lists(st.sampled_from(TIER_NAMES), max_size=2, unique=True))
    out = [
        tier(
            name,
            draw(st.sampled_from((None, 10.0, 100.0, 100.0, 2_000_000.0))),
            draw(st.sampled_from(("Deny", "Deny", "Pass"))),
        )
        for name in chosen
    ]
    if sometimes(draw, 5):
        out.append(tier("default", draw(st.sampled_from((None, 50.0, 1_000_000.0))), "Pass"))
    return tuple(out)


@st.composite
def answers(draw: st.DrawFn, extra_ips: Sequence[str] = ()) -> Answer:
    """A DNS answer: a name, up to two CNAMEs, one or two addresses (shared ones likely)."""
    qname = draw(st.sampled_from(DNS_NAMES))
    chain = draw(st.lists(st.sampled_from(DNS_NAMES), max_size=2, unique=True))
    chain = [n for n in chain if n != qname]
    ips = draw(
        st.lists(st.sampled_from((*DNS_IPS, *extra_ips)), min_size=1, max_size=2, unique=True)
    )
    ttl = draw(st.sampled_from((5, 60, 300)))
    return Answer(qname, tuple(chain), tuple(ips), ttl)


@attrs.frozen
class FlowSpec:
    """The arguments of one ``verdict()`` call."""

    src: str
    dst: str
    protocol: Protocol
    port: int | None
    direction: Direction
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``verdict()`` and ``reference_verdict()``."""
        return attrs.asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.direction} {self.src} -> {self.dst} {self.protocol}/{self.port}"
            f" sport={self.src_port} icmp={self.icmp_type}/{self.icmp_code}"
        )


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


@st.composite
def flows(draw: st.DrawFn, eps: Sequence[Endpoint], dns_ips: Sequence[str]) -> FlowSpec:
    """A flow between the world's endpoints and addresses.

    Destinations are drawn from endpoint IPs and keys, DNS answers, members of the CIDR
    pool and outside addresses. A flow's two sides always share an address family.
    """
    member_ips = ("10.0.1.99", "198.51.100.1", "203.0.113.77", "2001:db8::1", "fd00::99")
    ep_ips = tuple(ip for ep in eps for ip in ep.ips)
    # Each kind of address about equally often, whatever the sizes of the pools.
    pool = (
        st.sampled_from(ep_ips)
        | st.sampled_from(dns_ips or DNS_IPS)
        | st.sampled_from((*member_ips, *OUTSIDE_IPS))
    )
    direction: Direction = draw(st.sampled_from(("egress", "egress", "egress", "ingress")))
    if direction == "egress":
        dst = draw(pool | st.sampled_from([ep.key for ep in eps]))
        family = 4 if "/" in dst else _family(dst)
        srcs = [ep for ep in eps if any(_family(ip) == family for ip in ep.ips)]
        if not srcs:
            dst = draw(st.sampled_from([ep.key for ep in eps]))
            srcs = list(eps)
        src = draw(st.sampled_from(srcs)).key
    else:
        target = draw(st.sampled_from(eps))
        dst = target.key
        src = draw(pool | st.sampled_from([ep.key for ep in eps]))
        if "/" not in src and not any(_family(ip) == _family(src) for ip in target.ips):
            src = "192.0.2.7"  # every endpoint has an IPv4 address
    protocol: Protocol = draw(st.sampled_from(FLOW_PROTOCOLS))
    port = src_port = icmp_type = icmp_code = None
    if protocol in ("TCP", "UDP", "SCTP", 6):
        port = draw(st.sampled_from(FLOW_PORTS))
        src_port = draw(st.none() | st.sampled_from((53, 80, 1234)))
    elif protocol in ("ICMP", "ICMPv6"):
        icmp_type = draw(st.integers(0, 3))
        icmp_code = draw(st.integers(0, 1))
    return FlowSpec(src, dst, protocol, port, direction, src_port, icmp_type, icmp_code)


@attrs.frozen
class WorldSpec:
    """A generated world: resources, cluster, DNS answers to teach, and flows to judge."""

    resources: ResourceSet
    cluster: Cluster
    answers: tuple[Answer, ...]
    flows: tuple[FlowSpec, ...]


@st.composite
def worlds(draw: st.DrawFn, max_flows: int = 12) -> WorldSpec:
    """A small world where selectors, nets, domains and DNS answers collide often."""
    eps = tuple(draw(endpoints(i)) for i in range(draw(st.integers(1, 5))))
    cluster = Cluster(eps, draw(namespaces()), draw(service_accounts()))
    loaded_tiers = draw(tiers())
    tier_names = ["default", "default", *(t.name for t in loaded_tiers), "ghost"]
    names = draw(st.lists(st.sampled_from(POLICY_NAMES), min_size=1, max_size=6, unique=True))
    pols = tuple(draw(policies(n, tier_names)) for n in names)
    sets = tuple(draw(network_sets(i)) for i in range(draw(st.integers(0, 3))))
    ep_ips = [ip for ep in eps for ip in ep.ips]
    learned = tuple(draw(st.lists(answers(ep_ips), min_size=1, max_size=5)))
    dns_ips = sorted({ip for a in learned for ip in a.ips})
    judged = tuple(draw(st.lists(flows(eps, dns_ips), min_size=1, max_size=max_flows)))
    return WorldSpec(ResourceSet(pols, sets, loaded_tiers), cluster, learned, judged)


# ----------------------------------------------------------------------------- changes


@attrs.frozen
class UpsertPolicy:
    """Add a policy or replace the one with the same kind, namespace and name."""

    policy: Policy


@attrs.frozen
class RemovePolicy:
    """Remove the policy with this name (if still present)."""

    name: str


@attrs.frozen
class RelabelEndpoint:
    """Give an existing endpoint new labels."""

    key: str
    labels: Mapping[str, str]


@attrs.frozen
class UpsertEndpoint:
    """Add a new endpoint."""

    endpoint: Endpoint


@attrs.frozen
class RemoveEndpoint:
    """Remove an endpoint (if still present)."""

    key: str


@attrs.frozen
class UpsertNetworkSet:
    """Add a network set or replace the one with the same kind, namespace and name."""

    network_set: NetworkSet


@attrs.frozen
class RemoveNetworkSet:
    """Remove the network set with this name (if still present)."""

    name: str


@attrs.frozen
class UpsertNamespace:
    """Change a namespace's labels."""

    namespace: Namespace


@attrs.frozen
class LearnAnswer:
    """The cache learns a DNS answer."""

    answer: Answer


@attrs.frozen
class AdvanceClock:
    """Time passes and the cache expires what is due."""

    seconds: float


Change = (
    UpsertPolicy
    | RemovePolicy
    | RelabelEndpoint
    | UpsertEndpoint
    | RemoveEndpoint
    | UpsertNetworkSet
    | RemoveNetworkSet
    | UpsertNamespace
    | LearnAnswer
    | AdvanceClock
)


@st.composite
def changes(draw: st.DrawFn, world: WorldSpec, count: int) -> list[Change]:
    """Random incremental changes to a world (names refer to what the world holds)."""
    tier_names = ["default", *(t.name for t in world.resources.tiers), "ghost"]
    keys = [ep.key for ep in world.cluster.endpoints]
    ep_ips = [ip for ep in world.cluster.endpoints for ip in ep.ips]
    out: list[Change] = []
    makers: list[Callable[[int], st.SearchStrategy[Change]]] = [
        lambda i: (
            st.sampled_from(POLICY_NAMES)
            .flatmap(lambda n: policies(n, tier_names))
            .map(UpsertPolicy)
        ),
        lambda i: st.sampled_from(POLICY_NAMES).map(RemovePolicy),
        lambda i: st.builds(RelabelEndpoint, st.sampled_from(keys), label_maps()),
        lambda i: endpoints(20 + i, f"new{i}").map(UpsertEndpoint),
        lambda i: st.sampled_from(keys).map(RemoveEndpoint),
        lambda i: network_sets(i % 4).map(UpsertNetworkSet),
        lambda i: st.sampled_from([f"set{j}" for j in range(4)]).map(RemoveNetworkSet),
        lambda i: namespaces().map(lambda nss: UpsertNamespace(nss[i % len(nss)])),
        lambda i: answers(ep_ips).map(LearnAnswer),
        lambda i: st.sampled_from((3.0, 30.0, 100.0, 400.0)).map(AdvanceClock),
    ]
    for i in range(count):
        maker = draw(st.sampled_from(makers))
        out.append(draw(maker(i)))
    return out
