"""Rules matching source ports are taken to match no flow, and the answers say so.

A map or diff of policies with such a rule carries a caveat naming the policy, in its text
and its JSON (which reads back with it); without one there is none.
"""

from __future__ import annotations

import json

import attrs

from fqdnpolicy.cluster import Cluster
from fqdnpolicy.connectivity import MapData, connectivity
from fqdnpolicy.connectivity.diff import MapDiff, diff
from fqdnpolicy.connectivity.render import render_diff, render_map
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import ResourceSet
from tests.engine.strategies import entity, pod, policy, rule

CLUSTER = Cluster(
    (pod("shop/web", "10.0.0.10", labels={"app": "web"}), pod("shop/db", "10.0.0.11"))
)
PLAIN = ResourceSet(
    (
        policy(
            "web",
            namespace="shop",
            selector='app == "web"',
            egress=[rule("Allow", protocol="TCP", destination=entity(ports=[443]))],
        ),
    )
)
FROM_PORT = attrs.evolve(
    PLAIN,
    policies=(
        *PLAIN.policies,
        policy(
            "from-port",
            namespace="shop",
            order=1.0,
            selector='app == "web"',
            egress=[rule("Allow", protocol="TCP", source=entity(ports=[8080]))],
        ),
    ),
)


def _map_of(resources: ResourceSet) -> tuple[str, MapData]:
    cmap = connectivity(PolicyEngine(resources, CLUSTER, DNSCache()))
    back = MapData.from_dict(json.loads(render_map(cmap, "json")))
    assert back.caveats == cmap.caveats
    return render_map(cmap), back


def test_a_map_of_source_port_rules_says_they_match_no_flow() -> None:
    text, data = _map_of(FROM_PORT)
    assert len(data.caveats) == 1
    assert "shop/from-port" in data.caveats[0]
    assert "source port" in data.caveats[0]
    assert f"caveat: {data.caveats[0]}\n" in text


def test_a_map_without_them_has_no_caveat() -> None:
    text, data = _map_of(PLAIN)
    assert data.caveats == ()
    assert "caveat" not in text


def test_a_diff_carries_the_caveat_of_either_side() -> None:
    for old, new in ((PLAIN, FROM_PORT), (FROM_PORT, PLAIN)):
        found = diff(old, new, CLUSTER, DNSCache())
        assert len(found.caveats) == 1
        assert "shop/from-port" in found.caveats[0]
        assert f"caveat: {found.caveats[0]}\n" in render_diff(found)
        back = MapDiff.from_dict(json.loads(render_diff(found, "json")))
        assert back.caveats == found.caveats
    same = diff(PLAIN, PLAIN, CLUSTER, DNSCache())
    assert same.caveats == ()
    assert "caveat" not in render_diff(same)
