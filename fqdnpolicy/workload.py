"""Seeded synthetic clusters for benchmarking (``fqdnpolicy bench``, ``benchmarks/``).

:func:`generate` builds, from counts and a seed, a realistic-looking cluster: namespaces with
team labels, pods with app/tier labels and IPv4+IPv6 addresses, NetworkPolicies (and a few
GlobalNetworkPolicies and a security tier) of about ten rules each mixing domains (a third
wildcards), nets, selectors, ports and Log/Pass/Deny, and a DNS cache holding the requested
number of (name, IP) entries, most of them for names the policies' patterns match. The same
counts and seed always give the same workload.

Models are built directly (no YAML) so generation takes seconds even at full size.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator, Sequence

import attrs

from fqdnpolicy.cluster import Cluster, Endpoint, NamedPort, Namespace
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.wire import Extracted, Record
from fqdnpolicy.domains import DomainPattern, parse_domain_pattern
from fqdnpolicy.model import (
    EntityRule,
    ObjectMeta,
    Policy,
    PolicySpec,
    PortRange,
    ResourceSet,
    Rule,
    Tier,
    TierSpec,
)
from fqdnpolicy.model import NamedPort as RuleNamedPort
from fqdnpolicy.selector import parse_selector

__all__ = ["FULL_SIZE", "Sizes", "Workload", "generate", "random_rule"]

APPS = ("web", "api", "worker", "cache", "db", "batch", "auth", "search")
TIERS = ("frontend", "backend", "data")
TEAMS = ("payments", "search", "platform", "identity", "growth")


@attrs.frozen
class Sizes:
    """How big a workload is.

    Attributes:
        namespaces: Number of namespaces.
        endpoints: Number of pods (spread evenly over namespaces).
        policies: Number of policies (about 1% of them global).
        rules_per_policy: Rules per policy.
        domain_patterns: Distinct domain patterns over all rules (a third wildcards).
        dns_entries: (name, IP) entries in the DNS cache.
    """

    namespaces: int = 1_000
    endpoints: int = 20_000
    policies: int = 10_000
    rules_per_policy: int = 10
    domain_patterns: int = 50_000
    dns_entries: int = 1_000_000

    def scaled(self, factor: float) -> Sizes:
        """Return every count multiplied by ``factor`` (at least 1; rules per policy kept)."""
        return Sizes(
            *(
                max(1, round(getattr(self, f.name) * factor))
                if f.name != "rules_per_policy"
                else self.rules_per_policy
                for f in attrs.fields(Sizes)
            )
        )


#: The workload of the engine issue's performance figures.
FULL_SIZE = Sizes()


@attrs.frozen
class Workload:
    """A generated workload.

    Attributes:
        sizes: The counts it was made from.
        resources: Policies and tiers.
        cluster: Namespaces and endpoints.
        dns: The filled DNS cache (its clock is :attr:`clock`).
        clock: A mutable one-element list holding the cache clock's time (tests move it).
        destinations: DNS-learned IPs, for drawing flow destinations.
    """

    sizes: Sizes
    resources: ResourceSet
    cluster: Cluster
    dns: DNSCache
    clock: list[float] = attrs.field(eq=False)
    destinations: tuple[str, ...] = attrs.field(eq=False, repr=False)


def _patterns(rng: random.Random, count: int) -> list[DomainPattern]:
    out: list[DomainPattern] = []
    for i in range(count):
        kind = i % 3
        if kind == 0:  # wildcard: leading or middle
            text = f"*.svc{i}.example.com" if i % 2 else f"api.*.svc{i}.example.net"
        else:
            text = f"host{i}.svc{i // 7}.example.org"
        out.append(parse_domain_pattern(text))
    rng.shuffle(out)
    return out


def _names_for(pattern: DomainPattern, rng: random.Random) -> str:
    """A concrete name the pattern matches."""
    labels = [f"n{rng.randrange(1000)}" if label == "*" else label for label in pattern.labels]
    return ".".join(labels)


def _dns_answers(
    rng: random.Random, patterns: list[DomainPattern], entries: int, ttl_range: tuple[int, int]
) -> Iterator[tuple[Extracted, list[str]]]:
    """Answers giving ``entries`` (name, IP) pairs: 4 IPs a name, 80% of names matched."""
    per_name = 4
    names = max(1, entries // per_name)
    next_ip = int(ipaddress.IPv4Address("100.64.0.0"))
    for i in range(names):
        if i % 5 != 4 and patterns:
            name = _names_for(patterns[i % len(patterns)], rng)
        else:
            name = f"unrelated{i}.example.io"
        ips = []
        records = []
        ttl = rng.randint(*ttl_range)
        for _ in range(per_name):
            ip = str(ipaddress.IPv4Address(next_ip))
            next_ip += 1
            ips.append(ip)
            records.append(Record(name, 1, ttl, ip))
        yield Extracted(name, True, 0, 0, False, tuple(records)), ips


def random_rule(rng: random.Random, patterns: Sequence[DomainPattern]) -> Rule:
    """One rule of the mix policies are made of (half of them domain rules)."""
    kind = rng.randrange(10)
    ports = (PortRange(443, 443),) if rng.random() < 0.7 else (PortRange(8000, 8999),)
    if kind in (0, 1, 2, 3, 4):  # domains: ~half the rules
        domains = tuple(patterns[rng.randrange(len(patterns))] for _ in range(2))
        return Rule("Allow", protocol="TCP", destination=EntityRule(ports=ports, domains=domains))
    if kind == 5:
        net = ipaddress.ip_network(f"10.{rng.randrange(256)}.0.0/16")
        return Rule("Allow", protocol="TCP", destination=EntityRule(nets=(net,), ports=ports))
    if kind == 6:
        sel = parse_selector(f'app == "{rng.choice(APPS)}"')
        return Rule(
            "Allow",
            protocol="TCP",
            destination=EntityRule(selector=sel, ports=(RuleNamedPort("http"),)),
        )
    if kind == 7:
        return Rule("Log", protocol="UDP", destination=EntityRule(ports=(PortRange(53, 53),)))
    if kind == 8:
        sel = parse_selector(f'tier == "{rng.choice(TIERS)}"')
        return Rule(
            "Allow",
            protocol="UDP",
            destination=EntityRule(
                selector=sel,
                namespace_selector=parse_selector(f'team == "{rng.choice(TEAMS)}"'),
                ports=(PortRange(53, 53),),
            ),
        )
    net = ipaddress.ip_network(f"172.{16 + rng.randrange(16)}.0.0/12", strict=False)
    return Rule("Deny", destination=EntityRule(nets=(net,)))


def generate(sizes: Sizes = FULL_SIZE, *, seed: int = 1) -> Workload:
    """Build a workload of the given sizes (deterministic for a seed)."""
    rng = random.Random(seed)
    namespaces = [
        Namespace(f"ns{i}", {"team": TEAMS[i % len(TEAMS)]}) for i in range(sizes.namespaces)
    ]
    endpoints = []
    for i in range(sizes.endpoints):
        ns = namespaces[i % sizes.namespaces].name
        v4 = ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.128.0.0")) + i)
        v6 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("fd00:10::")) + i)
        endpoints.append(
            Endpoint(
                name=f"pod{i}",
                namespace=ns,
                labels={"app": APPS[i % len(APPS)], "tier": TIERS[(i // 8) % len(TIERS)]},
                ips=(str(v4), str(v6)),
                named_ports=(NamedPort("http", 8080),),
            )
        )
    patterns = _patterns(rng, sizes.domain_patterns)
    policies = []
    for i in range(sizes.policies):
        is_global = i % 100 == 99
        namespace = None if is_global else namespaces[i % sizes.namespaces].name
        rules = tuple(random_rule(rng, patterns) for _ in range(sizes.rules_per_policy))
        selector = parse_selector(f'app == "{APPS[i % len(APPS)]}"')
        tier = "security" if is_global else "default"
        name = f"security.gp{i}" if is_global else f"p{i}"
        policies.append(
            Policy(
                kind="GlobalNetworkPolicy" if is_global else "NetworkPolicy",
                metadata=ObjectMeta(name=name, namespace=namespace),
                spec=PolicySpec(
                    order=float(rng.randrange(1000)),
                    tier=tier,
                    selector=selector,
                    types=("Egress",),
                    egress=rules,
                ),
            )
        )
    # Patterns no rule picked still count toward the requested number: give them to one
    # catch-all policy so that the pattern index really holds `domain_patterns` patterns.
    used = {p for pol in policies for r in pol.spec.egress for p in r.destination.domains}
    unused = tuple(p for p in patterns if p not in used)
    if unused:
        policies.append(
            Policy(
                kind="GlobalNetworkPolicy",
                metadata=ObjectMeta(name="security.remaining-domains"),
                spec=PolicySpec(
                    order=5000.0,
                    tier="security",
                    selector=parse_selector("has(never-set)"),
                    types=("Egress",),
                    egress=tuple(
                        Rule("Allow", destination=EntityRule(domains=unused[i : i + 50]))
                        for i in range(0, len(unused), 50)
                    ),
                ),
            )
        )
    tiers = (Tier(ObjectMeta(name="security"), TierSpec(order=100.0, default_action="Pass")),)
    clock = [0.0]
    cache = DNSCache(clock=lambda: clock[0], max_names=10_000_000, max_ips_per_name=1000)
    destinations: list[str] = []
    for answer, ips in _dns_answers(rng, patterns, sizes.dns_entries, (300, 3600)):
        cache.ingest(answer)
        destinations.extend(ips)
    return Workload(
        sizes=sizes,
        resources=ResourceSet(policies=tuple(policies), tiers=tiers),
        cluster=Cluster(tuple(endpoints), tuple(namespaces)),
        dns=cache,
        clock=clock,
        destinations=tuple(destinations),
    )
