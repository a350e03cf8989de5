"""One world held as plain values, changed step by step, with snapshots the reference can judge.

:class:`Applier` applies the change classes of :mod:`tests.engine.strategies` to plain values
(resources, cluster), to its own DNS cache on its own :class:`FakeClock`, and, when it is given
one, to a :class:`PolicyEngine` through its public upsert/remove methods (the engine follows
the cache by itself). Two appliers fed the same changes reach the same states, so a test can
precompute every state single-threaded with one and drive an engine from a writer thread with
the other.

:func:`reference_outcome` judges a flow on a :class:`Snapshot` with the slow reference model;
an engine's verdict is compared through :func:`outcome`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from fqdnpolicy.cluster import Cluster, Endpoint, Namespace
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine, Verdict
from fqdnpolicy.model import NetworkSet, Policy, ResourceSet
from tests.engine.reference import RefVerdict, reference_verdict
from tests.engine.strategies import (
    AdvanceClock,
    Change,
    FakeClock,
    FlowSpec,
    LearnAnswer,
    RelabelEndpoint,
    RemoveEndpoint,
    RemoveNetworkSet,
    RemovePolicy,
    UpsertEndpoint,
    UpsertNamespace,
    UpsertNetworkSet,
    UpsertPolicy,
)

#: What engine and reference must agree on (as in test_differential).
Outcome = tuple[str, str | None, str | None, int | None, str, str | None]

#: The outcome of a flow naming an endpoint (``ns/name``) the state does not hold: refused.
UNKNOWN_ENDPOINT: Outcome = ("InvalidPolicy", "unknown endpoint", None, None, "", None)


def outcome(v: Verdict | RefVerdict) -> Outcome:
    """The fields engine and reference must agree on."""
    return (v.action, v.policy, v.tier, v.rule_index, v.direction, v.default)


@attrs.frozen
class DNSSnapshot:
    """What a DNS cache mapped at one moment: name -> the IPs it led to."""

    mapping: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, dns: DNSCache) -> DNSSnapshot:
        """Copy what ``dns`` maps now."""
        return cls({name: frozenset(dns.ips(name)) for name in dns.names()})

    def names(self) -> Iterable[str]:
        """Every name that led somewhere."""
        return self.mapping.keys()

    def ips(self, name: str) -> Iterable[str]:
        """The IPs ``name`` led to."""
        return self.mapping.get(name, frozenset())


@attrs.frozen
class Snapshot:
    """Everything a verdict depends on, as plain values."""

    resources: ResourceSet
    cluster: Cluster
    dns: DNSSnapshot

    def holds(self, key: str) -> bool:
        """Whether the cluster holds the endpoint ``namespace/name``."""
        return any(ep.key == key for ep in self.cluster.endpoints)


def reference_outcome(state: Snapshot, flow: FlowSpec) -> Outcome:
    """The reference's outcome for ``flow`` in ``state`` (refused when it names an endpoint
    the state does not hold)."""
    if any("/" in ref and not state.holds(ref) for ref in (flow.src, flow.dst)):
        return UNKNOWN_ENDPOINT
    return outcome(reference_verdict(state.resources, state.cluster, state.dns, **flow.kwargs()))


class Applier:
    """A world as plain values and a DNS cache, and optionally an engine kept in step.

    Args:
        resources: The starting policies, network sets and tiers.
        cluster: The starting endpoints, namespaces and service accounts.
    """

    def __init__(self, resources: ResourceSet, cluster: Cluster) -> None:
        self.clock = FakeClock()
        self.dns = DNSCache(clock=self.clock)
        self.resources = resources
        self.cluster = cluster
        self.engine: PolicyEngine | None = None

    def build_engine(self) -> PolicyEngine:
        """Build an engine over the current state; later changes reach it too."""
        self.engine = PolicyEngine(self.resources, self.cluster, self.dns)
        return self.engine

    def snapshot(self) -> Snapshot:
        """The current state as plain values."""
        return Snapshot(self.resources, self.cluster, DNSSnapshot.of(self.dns))

    def endpoint(self, key: str) -> Endpoint | None:
        """The endpoint ``namespace/name``, if held."""
        return next((ep for ep in self.cluster.endpoints if ep.key == key), None)

    def endpoint_keys(self) -> list[str]:
        """Keys of every endpoint held, sorted."""
        return sorted(ep.key for ep in self.cluster.endpoints)

    def apply(self, change: Change) -> int:
        """Apply a change (one naming something absent is skipped).

        Returns:
            How many engine calls and cache updates it took: a reader may see the state
            between two of them, so a change that took more than one is not one step.
        """
        match change:
            case UpsertPolicy(policy):
                return self._upsert_policy(policy)
            case RemovePolicy(name):
                return self._remove_policies(name, keep=None)
            case RelabelEndpoint(key, labels):
                old = self.endpoint(key)
                if old is None:
                    return 0
                return self._put_endpoint(attrs.evolve(old, labels=labels))
            case UpsertEndpoint(endpoint):
                if self.endpoint(endpoint.key) is not None:
                    return 0
                return self._put_endpoint(endpoint)
            case RemoveEndpoint(key):
                if self.endpoint(key) is None:
                    return 0
                kept = tuple(ep for ep in self.cluster.endpoints if ep.key != key)
                self._set_cluster(endpoints=kept)
                if self.engine is not None:
                    self.engine.remove_endpoint(key)
                return 1
            case UpsertNetworkSet(nset):
                return self._upsert_network_set(nset)
            case RemoveNetworkSet(name):
                return self._remove_network_sets(name, keep=None)
            case UpsertNamespace(namespace):
                others = tuple(ns for ns in self.cluster.namespaces if ns.name != namespace.name)
                self._set_cluster(namespaces=(*others, namespace))
                if self.engine is not None:
                    self.engine.upsert_namespace(namespace)
                return 1
            case LearnAnswer(learned):
                self.dns.ingest(learned.extracted())
                return 1
            case AdvanceClock(seconds):
                # Moving the clock changes nothing the engine holds; the expiry does.
                self.clock.advance(seconds)
                self.dns.expire()
                return 1

    def _set_cluster(
        self,
        *,
        endpoints: tuple[Endpoint, ...] | None = None,
        namespaces: tuple[Namespace, ...] | None = None,
    ) -> None:
        self.cluster = Cluster(
            self.cluster.endpoints if endpoints is None else endpoints,
            self.cluster.namespaces if namespaces is None else namespaces,
            self.cluster.service_accounts,
        )

    def _put_endpoint(self, endpoint: Endpoint) -> int:
        others = tuple(ep for ep in self.cluster.endpoints if ep.key != endpoint.key)
        self._set_cluster(endpoints=(*others, endpoint))
        if self.engine is not None:
            self.engine.upsert_endpoint(endpoint)
        return 1

    def _upsert_policy(self, policy: Policy) -> int:
        # Names stay unique across kinds and namespaces (as in test_differential): a policy of
        # another kind or namespace with the same name is removed first.
        steps = self._remove_policies(policy.name, keep=policy)
        others = tuple(p for p in self.resources.policies if p.name != policy.name)
        self.resources = attrs.evolve(self.resources, policies=(*others, policy))
        if self.engine is not None:
            self.engine.upsert_policy(policy)
        return steps + 1

    def _remove_policies(self, name: str, keep: Policy | None) -> int:
        """Remove the policies named ``name``, except one ``keep`` replaces in place."""
        steps = 0
        for old in self.resources.policies:
            if old.name != name or (
                keep is not None and (old.kind, old.namespace) == (keep.kind, keep.namespace)
            ):
                continue
            if self.engine is not None:
                self.engine.remove_policy(old)
            steps += 1
        if keep is None:
            kept = tuple(p for p in self.resources.policies if p.name != name)
            self.resources = attrs.evolve(self.resources, policies=kept)
        return steps

    def _upsert_network_set(self, nset: NetworkSet) -> int:
        steps = self._remove_network_sets(nset.name, keep=nset)
        others = tuple(s for s in self.resources.network_sets if s.name != nset.name)
        self.resources = attrs.evolve(self.resources, network_sets=(*others, nset))
        if self.engine is not None:
            self.engine.upsert_network_set(nset)
        return steps + 1

    def _remove_network_sets(self, name: str, keep: NetworkSet | None) -> int:
        """Remove the sets named ``name``, except one ``keep`` replaces in place."""
        steps = 0
        for old in self.resources.network_sets:
            if old.name != name or (
                keep is not None and (old.kind, old.namespace) == (keep.kind, keep.namespace)
            ):
                continue
            if self.engine is not None:
                self.engine.remove_network_set(old)
            steps += 1
        if keep is None:
            kept = tuple(s for s in self.resources.network_sets if s.name != name)
            self.resources = attrs.evolve(self.resources, network_sets=kept)
        return steps
