"""The verdict engine gives the same verdict, and the same deciding rule, as the reference.

Hypothesis generates small worlds (policies in tiers, endpoints, namespaces, network sets, DNS
answers) and flows, and requires ``PolicyEngine.verdict`` and
:func:`tests.engine.reference.reference_verdict` to agree on action, deciding policy, tier,
rule index, direction and default. Then it applies random incremental changes through the
engine's upsert/remove methods and the DNS cache (new answers, expiry) and compares again, so
the engine's incremental bookkeeping is held to the same slow truth.

Example counts are moderate for CI; set ``FQDNPOLICY_DIFFERENTIAL_EXAMPLES`` to run deeper.
"""

from __future__ import annotations

import os

import attrs
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fqdnpolicy.cluster import Cluster, Endpoint
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine, Verdict
from fqdnpolicy.model import Policy, ResourceSet
from tests.engine.reference import RefVerdict, reference_verdict
from tests.engine.strategies import (
    AdvanceClock,
    Answer,
    Change,
    FakeClock,
    FlowSpec,
    LearnAnswer,
    RelabelEndpoint,
    RemoveEndpoint,
    RemoveNetworkSet,
    RemovePolicy,
    ToldSets,
    UpsertEndpoint,
    UpsertNamespace,
    UpsertNetworkSet,
    UpsertPolicy,
    WorldSpec,
    changes,
    entity,
    flows,
    pod,
    policy,
    rendered_sets,
    rule,
    worlds,
)

_EXAMPLES = int(os.environ.get("FQDNPOLICY_DIFFERENTIAL_EXAMPLES", "150"))

settings.register_profile(
    "engine-differential",
    max_examples=_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DIFFERENTIAL = settings.get_profile("engine-differential")
INCREMENTAL = settings(DIFFERENTIAL, max_examples=max(1, _EXAMPLES // 2))

Outcome = tuple[str, str | None, str | None, int | None, str, str | None]


def outcome(v: Verdict | RefVerdict) -> Outcome:
    """The fields both must agree on."""
    return (v.action, v.policy, v.tier, v.rule_index, v.direction, v.default)


class Mirror:
    """One world held twice: by the engine (changed incrementally) and as plain values."""

    def __init__(self, spec: WorldSpec) -> None:
        self.clock = FakeClock()
        # Extended deadlines are changes too, so deltas can carry every member's expiry.
        self.dns = DNSCache(clock=self.clock, report_refresh=True)
        half = len(spec.answers) // 2
        # Some answers arrive before the engine exists, the rest through its subscription.
        for learned in spec.answers[:half]:
            self.dns.ingest(learned.extracted())
        self.resources = spec.resources
        self.cluster = spec.cluster
        self.engine = PolicyEngine(self.resources, self.cluster, self.dns)
        self.told = ToldSets(self.engine)
        for learned in spec.answers[half:]:
            self.dns.ingest(learned.extracted())

    # -- plain-value state ---------------------------------------------------------------

    def _policies(self, policies: tuple[Policy, ...]) -> None:
        self.resources = attrs.evolve(self.resources, policies=policies)

    def _endpoints(self, endpoints: tuple[Endpoint, ...]) -> None:
        self.cluster = Cluster(endpoints, self.cluster.namespaces, self.cluster.service_accounts)

    def endpoint(self, key: str) -> Endpoint | None:
        return next((ep for ep in self.cluster.endpoints if ep.key == key), None)

    # -- changes -------------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """Apply a change to both copies (changes naming something absent are skipped)."""
        match change:
            case UpsertPolicy(policy):
                self._upsert_policy(policy)
            case RemovePolicy(name):
                self._remove_policy(name)
            case RelabelEndpoint(key, labels):
                old = self.endpoint(key)
                if old is not None:
                    new = attrs.evolve(old, labels=labels)
                    self._endpoints(
                        tuple(new if ep.key == key else ep for ep in self.cluster.endpoints)
                    )
                    self.engine.upsert_endpoint(new)
            case UpsertEndpoint(endpoint):
                if self.endpoint(endpoint.key) is None:
                    self._endpoints((*self.cluster.endpoints, endpoint))
                    self.engine.upsert_endpoint(endpoint)
            case RemoveEndpoint(key):
                if self.endpoint(key) is not None:
                    self._endpoints(tuple(ep for ep in self.cluster.endpoints if ep.key != key))
                    self.engine.remove_endpoint(key)
            case UpsertNetworkSet(nset):
                self._remove_network_set(nset.name)
                sets = (*self.resources.network_sets, nset)
                self.resources = attrs.evolve(self.resources, network_sets=sets)
                self.engine.upsert_network_set(nset)
            case RemoveNetworkSet(name):
                self._remove_network_set(name)
            case UpsertNamespace(namespace):
                others = tuple(ns for ns in self.cluster.namespaces if ns.name != namespace.name)
                self.cluster = Cluster(
                    self.cluster.endpoints, (*others, namespace), self.cluster.service_accounts
                )
                self.engine.upsert_namespace(namespace)
            case LearnAnswer(learned):
                self.dns.ingest(learned.extracted())
            case AdvanceClock(seconds):
                self.clock.advance(seconds)
                self.dns.expire()

    def _upsert_policy(self, policy: Policy) -> None:
        # Names stay unique across kinds and namespaces: a tie in (order, name) between a
        # GlobalNetworkPolicy and a NetworkPolicy is ordered by an unspecified tie-break.
        kept = []
        for old in self.resources.policies:
            if old.name != policy.name:
                kept.append(old)
            elif (old.kind, old.namespace) != (policy.kind, policy.namespace):
                self.engine.remove_policy(old)
        self._policies((*kept, policy))
        self.engine.upsert_policy(policy)

    def _remove_policy(self, name: str) -> None:
        for old in self.resources.policies:
            if old.name == name:
                self.engine.remove_policy(old)
        self._policies(tuple(p for p in self.resources.policies if p.name != name))

    def _remove_network_set(self, name: str) -> None:
        for old in self.resources.network_sets:
            if old.name == name:
                self.engine.remove_network_set(old)
        sets = tuple(s for s in self.resources.network_sets if s.name != name)
        self.resources = attrs.evolve(self.resources, network_sets=sets)

    # -- comparing -----------------------------------------------------------------------

    def judgeable(self, flow: FlowSpec) -> bool:
        """A flow naming an endpoint that has been removed cannot be judged."""
        return all("/" not in ref or self.endpoint(ref) is not None for ref in (flow.src, flow.dst))

    def check(self, engine: PolicyEngine, flow: FlowSpec) -> None:
        expected = reference_verdict(self.resources, self.cluster, self.dns, **flow.kwargs())
        got = engine.verdict(**flow.kwargs())
        assert outcome(got) == outcome(expected), (
            f"{flow}\n engine:    {outcome(got)}\n reference: {outcome(expected)}"
        )
        # Asked again: answered from the verdicts programs kept, which must agree too.
        again = engine.verdict(**flow.kwargs())
        assert outcome(again) == outcome(expected), (
            f"{flow} asked again\n engine:    {outcome(again)}\n reference: {outcome(expected)}"
        )
        # Positionally, as a datapath asks (the C shortcut where built), twice: the second
        # answer is the one the sender's program keeps by the peer's identity.
        positional = tuple(flow.kwargs().values())
        for _ in range(2):
            got = engine.verdict(*positional)
            assert outcome(got) == outcome(expected), (
                f"{flow} positionally\n engine:    {outcome(got)}\n reference: {outcome(expected)}"
            )

    def check_all(self, flow_list: list[FlowSpec] | tuple[FlowSpec, ...]) -> None:
        for flow in flow_list:
            if self.judgeable(flow):
                self.check(self.engine, flow)


def describe(world: WorldSpec) -> None:
    """Print the world when hypothesis reports a failure."""
    note(f"resources: {world.resources!r}")
    note(f"cluster: {world.cluster!r}")
    note(f"answers: {world.answers!r}")


@DIFFERENTIAL
@given(worlds())
def test_engine_and_reference_agree_on_every_flow_of_a_generated_world(world: WorldSpec) -> None:
    describe(world)
    Mirror(world).check_all(world.flows)


@INCREMENTAL
@given(worlds(max_flows=8), st.data())
def test_engine_and_reference_agree_after_incremental_changes(
    world: WorldSpec, data: st.DataObject
) -> None:
    describe(world)
    mirror = Mirror(world)
    mirror.check_all(world.flows)
    steps = data.draw(changes(world, data.draw(st.integers(1, 6))))
    for step in steps:
        note(f"change: {step!r}")
        mirror.apply(step)
        mirror.check_all(world.flows)
    # Flows over what the world holds now (new endpoints, new answers), and a fresh engine
    # built from the final state must agree as well.
    dns_ips = sorted({ip for name in mirror.dns.names() for ip in mirror.dns.ips(name)})
    fresh = PolicyEngine(mirror.resources, mirror.cluster, mirror.dns)
    later: list[FlowSpec] = []
    if mirror.cluster.endpoints:
        later = data.draw(st.lists(flows(mirror.cluster.endpoints, dns_ips), max_size=6))
    for flow in (*world.flows, *later):
        if mirror.judgeable(flow):
            mirror.check(mirror.engine, flow)
            mirror.check(fresh, flow)
    # What a datapath is told to hold: the same after the changes as from scratch, and the
    # same as the address index the verdicts come from.
    assert set_members(mirror.engine) == set_members(fresh)
    assert set_members(mirror.engine) == indexed_members(mirror.engine)
    # And what the deltas told, expiries included, is what a fresh rendering holds.
    assert mirror.told.sets == rendered_sets(fresh)


def set_members(engine: PolicyEngine) -> dict[str, set[str]]:
    return {s.set_id: set(s.members) for s in engine.datapath().sets}


def indexed_members(engine: PolicyEngine) -> dict[str, set[str]]:
    """Every set's members as the address index holds them (a scan, for checking)."""
    graph = engine._graph  # the structure under test
    table = graph.table
    return {
        ipset.info.set_id: table.host_members(ipset.num) | table.prefix_members(ipset.num)
        for ipset in graph.registry
    }


def test_mirror_keeps_engine_and_plain_state_in_step_through_known_changes() -> None:
    # The differential test is only as good as its bookkeeping of the expected state: walk a
    # known sequence and check both sides against verdicts worked out by hand.
    web = pod("default/web", "10.0.0.10", labels={"app": "web"})
    deny_all = policy("alpha", egress=[rule("Deny")])
    world = WorldSpec(
        ResourceSet((deny_all,)),
        Cluster((web,)),
        (Answer("api.example.com", (), ("198.51.100.1",), ttl=60),),
        (),
    )
    mirror = Mirror(world)
    to_api = FlowSpec("default/web", "198.51.100.1", "TCP", 443, "egress")

    def seen() -> Outcome:
        mirror.check(mirror.engine, to_api)  # engine == reference
        return outcome(
            reference_verdict(mirror.resources, mirror.cluster, mirror.dns, **to_api.kwargs())
        )

    assert seen() == ("Deny", "GlobalNetworkPolicy alpha", "default", 0, "egress", None)
    allow_api = policy(
        "alpha",
        namespace="default",
        egress=[rule("Allow", destination=entity(domains=["api.example.com"]))],
    )
    mirror.apply(UpsertPolicy(allow_api))  # same name, other kind: replaces the global one
    assert [p.display_name for p in mirror.resources.policies] == ["NetworkPolicy default/alpha"]
    assert seen() == ("Allow", "NetworkPolicy default/alpha", "default", 0, "egress", None)
    mirror.apply(AdvanceClock(61.0))
    assert seen() == ("Deny", None, "default", None, "egress", "end-of-tier")
    mirror.apply(LearnAnswer(Answer("api.example.com", (), ("198.51.100.1",))))
    assert seen()[0] == "Allow"
    mirror.apply(RelabelEndpoint("default/web", {"app": "other"}))
    assert mirror.cluster.endpoints[0].labels == {"app": "other"}
    mirror.apply(RemovePolicy("alpha"))
    assert seen() == ("Allow", None, None, None, "egress", "no-policy")
    mirror.apply(RemoveEndpoint("default/web"))
    assert not mirror.judgeable(to_api)
