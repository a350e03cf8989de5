"""``diff``: what a policy change opens and closes, with the rule responsible.

On generated worlds A and B (B is A with policies added, replaced and removed, and network sets
replaced) the diff is held to the difference of the two maps, pair by pair (every source
endpoint to every endpoint address and to outside addresses of every piece), in both ways it
can be computed (one engine changed in place, two engines compared); ``diff(A, A)`` is empty;
each row's rule is what ``explain()`` names for a flow of the row in B, and its ``was`` what it
names in A; ``contains`` says whether B allows all A did; the JSON form reads back equal.
"""

from __future__ import annotations

import ipaddress
import json
import os

import attrs
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fqdnpolicy.connectivity import Connections, connectivity
from fqdnpolicy.connectivity.diff import MapDiff, diff_engines, diff_to
from fqdnpolicy.connectivity.spaces import PORTED, icmp_of
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import ResourceSet
from tests.connectivity.support import build, family_of, outside_addresses
from tests.engine.strategies import (
    POLICY_NAMES,
    WorldSpec,
    entity,
    network_sets,
    pod,
    policies,
    policy,
    rule,
    worlds,
)

EXAMPLES = int(os.environ.get("FQDNPOLICY_CONNECTIVITY_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=max(10, EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def changed(draw: st.DrawFn, world: WorldSpec) -> ResourceSet:
    """The world's resources with some policies added/replaced/removed, sets replaced."""
    res = world.resources
    tier_names = ["default", *(t.name for t in res.tiers)]
    kept = [p for p in res.policies if not draw(st.booleans()) or len(res.policies) == 1]
    names = draw(st.lists(st.sampled_from(POLICY_NAMES), max_size=3, unique=True))
    fresh = [draw(policies(n, tier_names)) for n in names]
    by_name = {p.name: p for p in kept}
    for pol in fresh:
        by_name[pol.name] = pol
    sets = list(res.network_sets)
    if draw(st.booleans()):
        sets = [draw(network_sets(i)) for i in range(draw(st.integers(0, 2)))]
    return attrs.evolve(res, policies=tuple(by_name.values()), network_sets=tuple(sets))


def expand_member(
    d: MapDiff, peer: str, address: str, key: str | None, engines: tuple[PolicyEngine, PolicyEngine]
) -> bool:
    """Whether the destination ``address`` (of endpoint ``key``, or outside) is in ``peer``."""
    info = d.peers[peer]
    if info.kind == "endpoint":
        return (
            key is not None
            and peer.split("@")[0] == key
            and ("@" not in peer or peer.split("@")[1] == address)
        )
    if key is not None:
        return False
    if info.kind == "outside":
        if address in info.hosts:
            return True
        hosts: set[str] = set()
        for engine in engines:
            hosts.update(engine.published_state().hosts)
        if address in hosts:
            return False
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(c) for c in info.cidrs)
    # rest: in none of its sets, in either state
    texts = set(info.sets)
    for engine in engines:
        ids = engine.set_ids_of(address)
        defs = {f"{s.kind} {s.definition}" for s in engine.sets() if s.set_id in ids}
        if defs & texts:
            return False
    return info.family == family_of(address)


def check(
    world: WorldSpec, new: ResourceSet, d: MapDiff, old_e: PolicyEngine, new_e: PolicyEngine
) -> None:
    old_map, new_map = connectivity(old_e), connectivity(new_e)
    outside = outside_addresses(world, old_map) + [
        a for a in outside_addresses(world, new_map) if a not in outside_addresses(world, old_map)
    ]
    engines = (old_e, new_e)
    endpoint_ips = {ip: ep.key for ep in world.cluster.endpoints for ip in ep.ips}
    for src in world.cluster.endpoints:
        families = {family_of(ip) for ip in src.ips}
        for address in [*endpoint_ips, *outside]:
            if family_of(address) not in families:
                continue
            key = endpoint_ips.get(address)
            # The main peer of an endpoint stands for the addresses judged like its first.
            before = old_map.connections(src.key, address)
            after = new_map.connections(src.key, address)
            added = removed = Connections()
            for row in d.rows:
                if src.key not in row.sources:
                    continue
                hit = False
                for peer in row.destinations:
                    if expand_member(d, peer, address, key, engines) or (
                        key is not None and peer == key
                    ):
                        hit = True
                if hit:
                    part = Connections.of(
                        {family_of(address): row.connections.space(family_of(address))}
                    )
                    if row.change == "added":
                        added = added | part
                    else:
                        removed = removed | part
            assert added == after - before, (
                f"{src.key} -> {address}: added {added!r} != {after - before!r}"
            )
            assert removed == before - after, f"{src.key} -> {address}: removed"


def a_flow(conns: Connections) -> tuple[int, int, int | None, int | None, int | None]:
    """Some flow of the set: (family, protocol, port, icmp type, icmp code)."""
    family, proto, first, _ = next(conns.iter_ranges())
    if proto is None:
        listed = {p for p, _ in conns.space(family)[1]}
        proto = next(p for p in (47, 2, 103, 99, 98) if p not in listed)
    if proto == icmp_of(family):
        return family, proto, None, first // 256, first % 256
    if proto in PORTED:
        return family, proto, first, None, None
    return family, proto, None, None, None


def check_rules(world: WorldSpec, d: MapDiff, old_e: PolicyEngine, new_e: PolicyEngine) -> None:
    addresses = {ep.key: ep.ips for ep in world.cluster.endpoints}
    for row in d.rows:
        family, proto, port, icmp_type, code = a_flow(row.connections)
        src = next(s for s in row.sources if any(family_of(ip) == family for ip in addresses[s]))
        peer = row.destinations[0]
        info = d.peers[peer]
        if info.kind == "endpoint":
            key, _, at = peer.partition("@")
            dst = at or next(ip for ip in addresses[key] if family_of(ip) == family)
        elif info.kind == "outside":
            dst = info.hosts[0] if info.hosts else info.cidrs[0].split("/")[0]
        else:
            continue  # a rest: no single address named
        for engine, want in ((new_e, row.rule), (old_e, row.was)):
            got = engine.explain(src, dst, proto, port, icmp_type=icmp_type, icmp_code=code).verdict
            got_dict = got.as_dict()
            del got_dict["logged"]
            assert got_dict == want, f"{row}: explain says {got}"


@SETTINGS
@given(st.data(), worlds(max_flows=1))
def test_diff_equals_the_difference_of_the_maps(data: st.DataObject, world: WorldSpec) -> None:
    new = data.draw(changed(world))
    note(f"old: {world.resources!r}\nnew: {new!r}\ncluster: {world.cluster!r}")
    old_e, new_e = build(world), build(world, new)
    two = diff_engines(old_e, new_e)
    check(world, new, two, old_e, new_e)
    check_rules(world, two, old_e, new_e)
    # In place: the same answer.
    moving = build(world)
    one = diff_to(moving, new)
    check(world, new, one, old_e, new_e)
    check_rules(world, one, old_e, new_e)
    assert one.contains == two.contains == all(r.change == "added" for r in one.rows)
    back = MapDiff.from_dict(json.loads(json.dumps(one.as_dict())))
    assert back.rows == one.rows
    assert back.peers == {p: one.peers[p] for p in back.peers}


@SETTINGS
@given(worlds(max_flows=1))
def test_diff_of_a_state_with_itself_is_empty(world: WorldSpec) -> None:
    assert diff_engines(build(world), build(world)).equal
    assert diff_to(build(world), world.resources).equal


def test_a_change_opening_ssh_names_the_rule() -> None:
    eps = (pod("shop/web", "10.0.0.10", labels={"app": "web"}), pod("shop/db", "10.0.0.11"))
    old = ResourceSet(
        (
            policy(
                "web",
                namespace="shop",
                selector='app == "web"',
                egress=[
                    rule("Allow", protocol="TCP", destination=entity(ports=[443])),
                ],
            ),
        )
    )
    new = attrs.evolve(
        old,
        policies=(
            *old.policies,
            policy(
                "ssh",
                namespace="shop",
                order=1.0,
                selector='app == "web"',
                egress=[
                    rule(
                        "Allow", protocol="TCP", destination=entity(nets=["0.0.0.0/0"], ports=[22])
                    ),
                ],
            ),
        ),
    )
    from fqdnpolicy.cluster import Cluster
    from fqdnpolicy.connectivity.diff import diff
    from fqdnpolicy.dns import DNSCache

    d = diff(old, new, Cluster(eps), DNSCache())
    assert not d.equal
    assert d.contains
    texts = {(r.change, r.sources, str(r.connections), r.rule_text) for r in d.rows}
    assert all(change == "added" for change, *_ in texts)
    assert any(
        src == ("shop/web",)
        and conns == "IPv4: TCP 22"
        and "NetworkPolicy shop/ssh egress[0]" in rule_text
        for _, src, conns, rule_text in texts
    ), texts
