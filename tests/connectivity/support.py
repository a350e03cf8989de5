"""Shared helpers: engines from generated worlds, the flows a brute force tries, row expansion."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator

from fqdnpolicy.cluster import Cluster
from fqdnpolicy.connectivity import Connections, ConnectivityMap
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import NamedPort, PortRange, ResourceSet
from fqdnpolicy.protocols import ICMP, ICMPV6, SCTP, TCP, UDP, UDPLITE
from tests.engine.strategies import DNS_IPS, OUTSIDE_IPS, FakeClock, WorldSpec

MEMBER_IPS = ("10.0.1.99", "198.51.100.1", "203.0.113.77", "2001:db8::1", "fd00::99", "10.0.0.10")
PORTED = (TCP, UDP, SCTP)
OTHER_PROTOCOLS = (47, 2, 103)
ICMP_TYPES = (0, 1, 2, 3, 8, 255)
ICMP_CODES = (0, 1, 2, 255)


def build(world: WorldSpec, resources: ResourceSet | None = None) -> PolicyEngine:
    """An engine of the world (its DNS answers learned), optionally with other resources."""
    dns = DNSCache(clock=FakeClock())
    for learned in world.answers:
        dns.ingest(learned.extracted())
    return PolicyEngine(resources if resources is not None else world.resources, world.cluster, dns)


def critical_ports(resources: ResourceSet, cluster: Cluster, sample: int = 24) -> list[int]:
    """Every port where a verdict can change (each bound a rule or named port gives, and its
    neighbours), both ends of the range, and a random sample.

    A verdict is constant between consecutive bounds: each port criterion is a union of
    ranges and named ports, so these ports stand for all 65536.
    """
    bounds = {0, 1, 65534, 65535}
    for pol in resources.policies:
        for rule in (*pol.spec.egress, *pol.spec.ingress):
            for side in (rule.source, rule.destination):
                for port in (*side.ports, *side.not_ports):
                    if isinstance(port, PortRange):
                        bounds.update((port.first - 1, port.first, port.last, port.last + 1))
    for ep in cluster.endpoints:
        for named in ep.named_ports:
            bounds.update((named.port - 1, named.port, named.port + 1))
    rng = random.Random(len(bounds))
    bounds.update(rng.randrange(65536) for _ in range(sample))
    return sorted(p for p in bounds if 0 <= p <= 65535)


def outside_addresses(world: WorldSpec, cmap: ConnectivityMap) -> list[str]:
    """Outside addresses to try: the vocabulary's, and some address of every piece."""
    endpoint_ips = {ip for ep in world.cluster.endpoints for ip in ep.ips}
    found = set(DNS_IPS) | set(OUTSIDE_IPS) | set(MEMBER_IPS)
    for piece in cmap.state.pieces().values():
        found.update(piece.hosts)
        for cidr in piece.cidrs:
            net = ipaddress.ip_network(cidr)
            found.add(str(net.network_address))
            found.add(str(net.broadcast_address))
    return sorted(found - endpoint_ips)


def flows(
    family: int, ports: list[int]
) -> Iterator[tuple[int, int | None, int | None, int | None]]:
    """(protocol, port, icmp type, icmp code) of every flow kind the brute force tries."""
    for proto in PORTED:
        for port in ports:
            yield proto, port, None, None
    for port in (0, 80, 443, 65535):
        yield UDPLITE, port, None, None
    icmp = ICMP if family == 4 else ICMPV6
    for icmp_type in ICMP_TYPES:
        for code in ICMP_CODES:
            yield icmp, None, icmp_type, code
    for proto in OTHER_PROTOCOLS:
        yield proto, None, None, None


def allows(
    conns: Connections, family: int, flow: tuple[int, int | None, int | None, int | None]
) -> bool:
    proto, port, icmp_type, code = flow
    return conns.allows(family, proto, port, icmp_type, code)


def family_of(address: str) -> int:
    return ipaddress.ip_address(address).version


__all__ = [
    "NamedPort",
    "allows",
    "build",
    "critical_ports",
    "family_of",
    "flows",
    "outside_addresses",
]
