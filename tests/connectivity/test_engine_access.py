"""The engine's read-only accessors for whole-state tools: what readers see, copied whole.

``published_state()`` holds every endpoint's record, every host's identity, the prefix table
and what each set stands for, as :meth:`~PolicyEngine.verdict`'s readers see them, and stays
as it was when the engine changes; ``record()`` is one endpoint's record; ``resources()`` is
what the engine holds, so an engine built from it holds the same.
"""

from __future__ import annotations

import attrs
from hypothesis import given

from fqdnpolicy.engine.compiler import policy_key
from fqdnpolicy.engine.graph import netset_key
from fqdnpolicy.model import ResourceSet
from tests.connectivity.support import build
from tests.connectivity.test_diff import SETTINGS
from tests.engine.strategies import WorldSpec, policy, rule, worlds


@SETTINGS
@given(worlds(max_flows=1))
def test_the_published_state_is_what_readers_see(world: WorldSpec) -> None:
    engine = build(world)
    state = engine.published_state()
    assert sorted(state.records) == engine.endpoint_keys()
    for key, record in state.records.items():
        assert engine.record(key) is record
    assert engine.record("nowhere/none") is None
    for address, ident in state.hosts.items():
        assert engine.identity(address) is ident
    assert {info.set_id: info for info in state.sets.values()} == {
        info.set_id: info for info in engine.sets()
    }
    for ident in state.hosts.values():
        assert set(ident) <= set(state.sets)


@SETTINGS
@given(worlds(max_flows=1))
def test_a_published_state_stays_as_it_was(world: WorldSpec) -> None:
    engine = build(world)
    state = engine.published_state()
    records, hosts = dict(state.records), dict(state.hosts)
    first = world.cluster.endpoints[0]
    engine.upsert_policy(
        policy("fence", namespace=first.namespace, selector="all()", egress=[rule("Deny")])
    )
    engine.remove_endpoint(first)
    assert dict(state.records) == records
    assert dict(state.hosts) == hosts
    assert engine.record(first.key) is None
    assert first.key in state.records


@SETTINGS
@given(worlds(max_flows=1))
def test_resources_are_what_the_engine_holds(world: WorldSpec) -> None:
    engine = build(world)
    held = engine.resources()
    res = world.resources
    assert {policy_key(p): p for p in held.policies} == {policy_key(p): p for p in res.policies}
    assert {netset_key(s): s for s in held.network_sets} == {
        netset_key(s): s for s in res.network_sets
    }
    assert {t.name: t for t in held.tiers} == {t.name: t for t in res.tiers}
    # Changes show: a policy added, the network sets dropped.
    extra = policy("extra", namespace="default", egress=[rule("Allow")])
    engine.upsert_policy(extra)
    for nset in res.network_sets:
        engine.remove_network_set(nset)
    now = engine.resources()
    assert policy_key(extra) in {policy_key(p) for p in now.policies}
    assert now.network_sets == ()
    again = build(world, attrs.evolve(res, policies=(*res.policies, extra), network_sets=()))
    assert sorted(map(policy_key, again.resources().policies)) == sorted(
        map(policy_key, now.policies)
    )
    assert isinstance(now, ResourceSet)
