"""``ConnectivityMap.connections`` for one pair, the destination named by endpoint or address."""

from __future__ import annotations

from fqdnpolicy.cluster import Cluster
from fqdnpolicy.connectivity import connectivity
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import ResourceSet
from tests.engine.strategies import entity, pod, policy, rule


def test_a_pair_named_by_address_reaches_an_endpoint_in_no_set_by_its_named_port() -> None:
    """An endpoint address in no set still carries the endpoint's named ports."""
    cluster = Cluster(
        (
            pod("shop/web", "10.0.0.10", labels={"app": "web"}),
            pod("shop/db", "10.0.0.11", ports=[("sql", 5432, "TCP")]),
        )
    )
    resources = ResourceSet(
        (
            policy(
                "web",
                namespace="shop",
                selector='app == "web"',
                egress=[rule("Allow", protocol="TCP", destination=entity(ports=["sql"]))],
            ),
        )
    )
    cmap = connectivity(PolicyEngine(resources, cluster, DNSCache()))
    for dst in ("shop/db", "10.0.0.11"):
        assert cmap.connections("shop/web", dst).allows(4, 6, 5432, None, None)
        assert not cmap.connections("shop/web", dst).allows(4, 6, 5433, None, None)
