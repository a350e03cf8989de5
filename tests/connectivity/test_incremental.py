"""The incremental diff path is the from-scratch one, done with less reading.

An engine changed in place (policies, network sets, an endpoint's labels, DNS answers) is read
before and after; the after state lends units from the before state, the outside is cut by
:class:`JointCut` looking only at the addresses that moved, and sources alike in both states are
judged only against destinations that moved. Each is held to its from-scratch form: the joint
cut to :func:`cut` of both states, every lent unit to one built afresh, and the diff of the two
states to the diff of two separate engines holding them (nothing shared, every pair judged),
fact by fact: (change, source, destination, rule, previous rule) -> connections.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given, note
from hypothesis import strategies as st

from fqdnpolicy.cluster import Cluster
from fqdnpolicy.connectivity import Connections
from fqdnpolicy.connectivity.diff import MapDiff, apply_resources, diff_engines, diff_states
from fqdnpolicy.connectivity.outside import JointCut, cut, moved_hosts
from fqdnpolicy.connectivity.state import State, read_state
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import ResourceSet
from tests.connectivity.test_diff import SETTINGS, changed
from tests.engine.strategies import (
    FakeClock,
    WorldSpec,
    answers,
    label_maps,
    pod,
    policy,
    rule,
    worlds,
)


def _engine(world: WorldSpec, resources: ResourceSet | None = None) -> tuple[PolicyEngine, Any]:
    dns = DNSCache(clock=FakeClock())
    for learned in world.answers:
        dns.ingest(learned.extracted())
    return PolicyEngine(
        resources if resources is not None else world.resources, world.cluster, dns
    ), dns


def _facts(d: MapDiff) -> dict[tuple[Any, ...], Connections]:
    """Each (change, source, destination, rule, was) with the connections of its rows."""
    out: dict[tuple[Any, ...], Connections] = {}
    for row in d.rows:
        rule = tuple(sorted(row.rule.items()))
        was = tuple(sorted(row.was.items()))
        for src in row.sources:
            for dst in row.destinations:
                key = (row.change, src, dst, rule, was)
                out[key] = out.get(key, Connections()) | row.connections
    return out


@st.composite
def moves(draw: st.DrawFn) -> tuple[WorldSpec, ResourceSet, list[Any], dict[str, str] | None]:
    """A world, the resources it changes to, DNS answers learned after, and new labels."""
    world = draw(worlds(max_flows=1))
    # Often the same resources: every program stays, and only DNS answers or labels move.
    new = draw(st.just(world.resources) | changed(world))
    ep_ips = [ip for ep in world.cluster.endpoints for ip in ep.ips]
    later = draw(st.lists(answers(ep_ips), max_size=3))
    labels = draw(st.none() | label_maps())
    return world, new, later, labels


def _change(engine: PolicyEngine, dns: Any, move: Any) -> None:
    world, new, later, labels = move
    apply_resources(engine, new)
    for learned in later:
        dns.ingest(learned.extracted())
    if labels is not None:
        first = world.cluster.endpoints[0]
        engine.upsert_endpoint(attrs.evolve(first, labels=labels))
    engine.flush()


def _moved(move: Any) -> tuple[PolicyEngine, State, State]:
    """An engine of the move's world, its state before the move, and after (lent units)."""
    world, new, later, labels = move
    note(f"new: {new!r}\nlater: {later!r}\nlabels: {labels!r}")
    engine, dns = _engine(world)
    before = read_state(engine)
    _change(engine, dns, move)
    return engine, before, read_state(engine, before)


@SETTINGS
@given(moves())
def test_the_joint_cut_is_the_cut_of_both_states(move: Any) -> None:
    engine, before, after = _moved(move)
    assert after.moved == {
        a for a in {*before.hosts, *after.hosts} if before.hosts.get(a) is not after.hosts.get(a)
    }
    assert moved_hosts(before.hosts, after.hosts) == after.moved
    scratch = cut([before, after])
    assert JointCut(before, after).all_members() == scratch
    # A state read without a base shares no unit, and finds the same pieces.
    assert JointCut(before, read_state(engine)).all_members() == scratch


@SETTINGS
@given(moves())
def test_a_lent_unit_is_the_unit_built_afresh(move: Any) -> None:
    engine, _, lent = _moved(move)
    fresh = read_state(engine)
    assert list(lent.endpoints) == list(fresh.endpoints)
    for key, unit in lent.endpoints.items():
        other = fresh.endpoints[key]
        assert unit.record is other.record
        assert unit.source == other.source
        assert unit.addresses == other.addresses
        assert unit.sender == other.sender
        assert unit.receivers == other.receivers
    assert lent.endpoint_ips == fresh.endpoint_ips
    assert lent.owners == fresh.owners


@SETTINGS
@given(moves())
def test_the_incremental_diff_is_the_diff_of_two_engines(move: Any) -> None:
    world, new, later, labels = move
    _, before, after = _moved(move)
    incremental = diff_states(before, after)
    # The same two states held by two engines: built afresh, sharing nothing.
    old_engine, _ = _engine(world)
    new_engine, new_dns = _engine(world, new)
    for learned in later:
        new_dns.ingest(learned.extracted())
    if labels is not None:
        first = world.cluster.endpoints[0]
        new_engine.upsert_endpoint(attrs.evolve(first, labels=labels))
    scratch = diff_engines(old_engine, new_engine)
    assert _facts(incremental) == _facts(scratch)
    named = {p for row in incremental.rows for p in (*row.sources, *row.destinations)}
    assert {p: incremental.peers[p] for p in named} == {p: scratch.peers[p] for p in named}


def test_a_state_is_its_moment() -> None:
    """A state read before a change still answers for before."""
    eps = (pod("shop/web", "10.0.0.10", labels={"app": "web"}),)
    engine = PolicyEngine(ResourceSet(), Cluster(eps), DNSCache())
    before = read_state(engine)
    record = before.records["shop/web"]
    engine.upsert_policy(
        policy("deny", namespace="shop", selector='app == "web"', egress=[rule("Deny")])
    )
    after = read_state(engine, before)
    assert before.records["shop/web"] is record
    assert after.records["shop/web"] is not record
    assert after.endpoints["shop/web"] is not before.endpoints["shop/web"]
    assert before.endpoints["shop/web"].record is record
