"""The calculation graph: every calculator of the engine, wired in this one place.

Events flow one way, down this picture::

    policies        endpoints, namespaces,          DNS changes
       |            network sets                         |
       v                 |                               v
    compiler ----------> | -------------------> name manager (domainsets)
       |  takes sets     v                        ^      |  DNS membership, derived
       |           selector sets  ----------------'      |  (sets and expiries)
       |           ^     |  members    links to network  |
       |  label index    |             sets' domains     |
       v                 v                               v
    IP-set registry (ref-counted, stable ids) ----> address table (identities)
       |                                                 |
       v                                                 |
    policy resolver  <--- label index                    |
       |  programs per endpoint and direction            |
       v                                                 v
    endpoint records --------> published: records, owners, hosts, prefix table
       |                                    |
       v                                    v
    deltas -> subscribers,        readers: verdict(), verdict_array()
    datapath projection -> backends

Every change goes through a :class:`Graph` method under the engine's writer lock. The method
updates the calculators it concerns and marks endpoints whose programs may have changed; then
:meth:`Graph.settle` publishes the identities of addresses whose membership changed and the
records of re-resolved endpoints, recording before-images in the commit in progress (see
:mod:`fqdnpolicy.engine.published`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from fqdnpolicy.cluster import Cluster, Endpoint, Namespace
from fqdnpolicy.datapath import DatapathState, Delta, Direction, EndpointChanged
from fqdnpolicy.domains import DomainPattern
from fqdnpolicy.engine.compiler import (
    DIRECTIONS,
    CompiledPolicy,
    SideMemo,
    compile_policy,
    policy_key,
)
from fqdnpolicy.engine.domainsets import NameManager
from fqdnpolicy.engine.identities import AddressTable
from fqdnpolicy.engine.ipsets import IPSet, IPSetRegistry
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.project import project
from fqdnpolicy.engine.published import Commit, EndpointRecord
from fqdnpolicy.engine.resolver import LabelsMemo, PolicyResolver
from fqdnpolicy.engine.results import IPSetInfo
from fqdnpolicy.engine.selectorsets import Member, SelectorSets
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.model import IPNetwork, NetworkSet, Policy, ResourceSet, Tier
from fqdnpolicy.scoping import Subject
from fqdnpolicy.selector import Selector

if TYPE_CHECKING:
    from fqdnpolicy.dns import DNSCache, DNSChange

__all__ = ["Graph", "netset_key"]


def netset_key(nset: NetworkSet) -> str:
    """``kind/namespace/name``: what identifies a network set across upserts."""
    return f"{nset.kind}/{nset.metadata.namespace or ''}/{nset.metadata.name}"


class _EndpointState:
    __slots__ = ("endpoint", "policies", "programs", "subject")

    def __init__(self, endpoint: Endpoint, subject: Subject) -> None:
        self.endpoint = endpoint
        self.subject = subject
        self.policies: dict[Direction, frozenset[str]] = {d: frozenset() for d in DIRECTIONS}
        self.programs: dict[Direction, Program] = {}

    @property
    def addresses(self) -> tuple[str | None, str | None]:
        ips = self.endpoint.ips
        return (
            next((ip for ip in ips if ":" not in ip), None),
            next((ip for ip in ips if ":" in ip), None),
        )


class Graph:
    """The writer side of the engine: calculators, their wiring, and what they publish."""

    def __init__(self, resources: ResourceSet, cluster: Cluster, dns: DNSCache) -> None:
        self.deltas: list[Delta] = []
        self.table = AddressTable()
        self.registry = IPSetRegistry(self.deltas, self.table)
        self.names = NameManager(self.registry, dns)
        self.selectors = SelectorSets(self.registry, self.names)
        self.table.follow_dns(self.names)
        self.resolver = PolicyResolver(resources.tiers, self.table.sets_of)
        self.namespaces: dict[str, Namespace] = {ns.name: ns for ns in cluster.namespaces}
        self._accounts = {(sa.namespace, sa.name): sa for sa in cluster.service_accounts}
        self.endpoints: dict[str, _EndpointState] = {}
        self._subjects: dict[str, Subject] = {}
        self._owner_keys: dict[str, str] = {}  # endpoint address -> endpoint key
        self._netsets: dict[str, tuple[NetworkSet, IPSet | None]] = {}
        #: Published: endpoint key -> record, endpoint address -> record.
        self.records: dict[str, EndpointRecord] = {}
        self.owners: dict[str, EndpointRecord] = {}
        #: Published, read only outside commits: endpoint key -> its egress program.
        self.egress: dict[str, Program] = {}
        #: The commit in progress (set by the engine around each change).
        self.commit: Commit | None = None
        self._stale: set[str] = set()
        self._building = True
        self._sides: SideMemo = {}
        for nset in resources.network_sets:
            self._add_netset(nset)
        for endpoint in cluster.endpoints:
            self._add_endpoint(endpoint)
        for policy in resources.policies:
            self._install(policy)
        self.names.learn_all()
        self.settle()
        self._building = False
        self._sides = {}
        self.registry.announce = True
        self.deltas.clear()  # the initial state is a full rendering, not a delta

    # -- IP sets, as compiled rules take them (compiler.SetSource) ---------------------------

    def nets(self, nets: Sequence[IPNetwork]) -> int:
        """The set of these CIDRs (one more reference)."""
        text = ",".join(sorted({str(n) for n in nets}))
        key = f"nets:{text}"
        ipset = self.registry.get(key)
        if ipset is None:
            ipset = self.registry.create(key, "nets", text)
            ipset.nets = tuple(nets)
            for net in ipset.nets:
                self.registry.add_prefix(ipset, net)
        ipset.refs += 1
        return ipset.num

    def selector(self, selector: Selector, *, with_domains: bool = False) -> int:
        """The set of what ``selector`` picks (one more reference)."""
        return self.selectors.acquire(selector, with_domains=with_domains).num

    def domains(self, patterns: Sequence[DomainPattern]) -> int:
        """The set of what names matching ``patterns`` resolve to (one more reference)."""
        return self.names.acquire(patterns, pull=not self._building).num

    def _release(self, num: int) -> None:
        ipset = self.registry.by_num[num]
        ipset.refs -= 1
        if ipset.refs > 0:
            return
        kind = ipset.kind
        if kind == "nets":
            for net in ipset.nets:
                self.registry.remove_prefix(ipset, net)
        elif kind == "domains":
            self.names.dropped(ipset)
        else:
            self.selectors.dropped(ipset)
        self.registry.remove(ipset)

    # -- policies and tiers ------------------------------------------------------------------

    def retain(self, num: int) -> None:
        """One more reference to live set ``num``."""
        self.registry.by_num[num].refs += 1

    def _install(self, policy: Policy) -> CompiledPolicy:
        compiled = compile_policy(policy, self, self._sides if self._building else None)
        self.resolver.add(compiled)
        return compiled

    def upsert_policy(self, policy: Policy) -> None:
        """Add a policy or replace the one with the same kind, namespace and name."""
        key = policy_key(policy)
        old = self.resolver.policies.get(key)
        # The new version takes its sets before the old one lets go of its own, so sets both
        # use stay (no delete-and-recreate churn in datapaths).
        compiled = self._install(policy)
        affected = self.resolver.selecting(compiled, self._subjects)
        if old is not None:
            affected |= self.resolver.applied_to(key)
            for num in old.set_nums:
                self._release(num)
        self._stale |= affected

    def remove_policy(self, policy: Policy) -> None:
        """Remove a policy (matched by kind, namespace and name)."""
        key = policy_key(policy)
        compiled = self.resolver.remove(key)
        if compiled is None:
            return
        self._stale |= self.resolver.applied_to(key)
        for num in compiled.set_nums:
            self._release(num)

    def upsert_tier(self, tier: Tier) -> None:
        """Add or replace a tier: its order and default action are part of every program."""
        self.resolver.set_tier(tier)
        self._stale |= self.endpoints.keys()

    # -- endpoints, namespaces, network sets -------------------------------------------------

    def _namespace_labels(self, name: str) -> dict[str, str]:
        namespace = self.namespaces.get(name) or Namespace(name)
        return dict(namespace.effective_labels)

    def _subject_of(self, endpoint: Endpoint) -> Subject:
        account = self._accounts.get((endpoint.namespace, endpoint.service_account))
        return Subject.pod(
            endpoint.namespace,
            endpoint.labels,
            namespace_labels=self._namespace_labels(endpoint.namespace),
            service_account=endpoint.service_account,
            service_account_labels=account.labels if account is not None else {},
        )

    def check_addresses(self, endpoint: Endpoint) -> None:
        """Refuse an endpoint holding another endpoint's address (before anything changes)."""
        key = endpoint.key
        for ip in endpoint.ips:
            if "%" in ip:
                # A scoped (link-local) address names no host outside its link: no datapath
                # set can hold it, and a rule could never match it.
                raise InvalidPolicy(
                    Problem(
                        f"endpoint {key} has the scoped address {ip}",
                        resource=key,
                        hint="global addresses only (no %zone)",
                    )
                )
            owner = self._owner_keys.get(ip)
            if owner is not None and owner != key:
                raise InvalidPolicy(
                    Problem(f"IP {ip} belongs to both {owner} and {key}", resource=key)
                )

    def _add_endpoint(self, endpoint: Endpoint) -> None:
        key = endpoint.key
        self.check_addresses(endpoint)
        if endpoint.namespace not in self.namespaces:
            self.namespaces[endpoint.namespace] = Namespace(endpoint.namespace)
        subject = self._subject_of(endpoint)
        self.endpoints[key] = _EndpointState(endpoint, subject)
        self._subjects[key] = subject
        self.resolver.add_endpoint(key, subject)
        for ip in endpoint.ips:
            self._owner_keys[ip] = key
            self.table.set_endpoint(ip, endpoint.named_ports)
        self.selectors.add_subject(key, Member(subject, ips=endpoint.ips))
        self._stale.add(key)

    def _drop_endpoint(self, key: str) -> None:
        state = self.endpoints.pop(key)
        del self._subjects[key]
        self.selectors.remove_subject(key)
        self.resolver.remove_endpoint(key, state.policies["egress"] | state.policies["ingress"])
        for ip in state.endpoint.ips:
            if self._owner_keys.get(ip) == key:
                del self._owner_keys[ip]
                self.table.set_endpoint(ip, None)
                self._publish_owner(ip, None)
        self._publish_record(key, None)
        self._stale.discard(key)

    def upsert_endpoint(self, endpoint: Endpoint) -> None:
        """Add an endpoint or replace the one with the same namespace and name."""
        self.check_addresses(endpoint)  # before anything changes: refused, nothing done
        if endpoint.key in self.endpoints:
            self._drop_endpoint(endpoint.key)
        self._add_endpoint(endpoint)

    def remove_endpoint(self, key: str) -> None:
        """Remove an endpoint by ``namespace/name`` (nothing when unknown)."""
        if key in self.endpoints:
            self._drop_endpoint(key)
            if self.registry.announce:
                self.deltas.extend(EndpointChanged(key, d) for d in DIRECTIONS)

    def upsert_namespace(self, namespace: Namespace) -> None:
        """Add or relabel a namespace; its endpoints and network sets are matched afresh."""
        self.namespaces[namespace.name] = namespace
        for key in sorted(
            k for k, s in self.endpoints.items() if s.endpoint.namespace == namespace.name
        ):
            endpoint = self.endpoints[key].endpoint
            self._drop_endpoint(key)
            self._add_endpoint(endpoint)
        for key, (nset, _) in list(self._netsets.items()):
            if nset.metadata.namespace == namespace.name:
                self._drop_netset(key)
                self._add_netset(nset)

    def _add_netset(self, nset: NetworkSet) -> None:
        key = netset_key(nset)
        namespace = nset.metadata.namespace
        subject = Subject(
            labels=nset.metadata.labels,
            namespace=namespace,
            namespace_labels=self._namespace_labels(namespace) if namespace else {},
        )
        child: IPSet | None = None
        if nset.spec.allowed_egress_domains:
            # The network set holds its own domain set (one reference); selector sets that
            # pick the network set inherit its members.
            child = self.names.acquire(nset.spec.allowed_egress_domains, pull=not self._building)
        self._netsets[key] = (nset, child)
        self.selectors.add_subject(key, Member(subject, nets=nset.spec.nets, domains=child))
        self._stale_in(nset.spec.nets)

    def _drop_netset(self, key: str) -> None:
        nset, child = self._netsets.pop(key)
        self.selectors.remove_subject(key)
        if child is not None:
            self._release(child.num)
        self._stale_in(nset.spec.nets)

    def upsert_network_set(self, nset: NetworkSet) -> None:
        """Add or replace a (Global)NetworkSet."""
        key = netset_key(nset)
        if key in self._netsets:
            self._drop_netset(key)
        self._add_netset(nset)

    def remove_network_set(self, nset: NetworkSet) -> None:
        """Remove a (Global)NetworkSet (nothing when unknown)."""
        key = netset_key(nset)
        if key in self._netsets:
            self._drop_netset(key)

    def _stale_in(self, nets: Sequence[IPNetwork]) -> None:
        """Endpoints with an address in ``nets`` bind their own-side selectors afresh."""
        if self._building or not nets:
            return
        for key, state in self.endpoints.items():
            addresses = [ipaddress.ip_address(ip) for ip in state.endpoint.ips]
            if any(a in net for a in addresses for net in nets if a.version == net.version):
                self._stale.add(key)

    # -- DNS ---------------------------------------------------------------------------------

    def dns(self, changes: Iterable[DNSChange]) -> None:
        """Apply DNS changes and publish the identities they move (no commit needed)."""
        names = self.names
        for change in changes:
            if change.added:
                names.pair_added(change.name, change.ip, change.expiry)
            else:
                names.pair_removed(change.name, change.ip)
        self.table.settle()

    # -- publishing --------------------------------------------------------------------------

    def _publish_record(self, key: str, record: EndpointRecord | None) -> None:
        if self.commit is not None and key not in self.commit.records:
            self.commit.records[key] = self.records.get(key)
        if record is None:
            self.records.pop(key, None)
            self.egress.pop(key, None)
        else:
            self.records[key] = record
            self.egress[key] = record.egress

    def _publish_owner(self, address: str, record: EndpointRecord | None) -> None:
        if self.commit is not None and address not in self.commit.owners:
            self.commit.owners[address] = self.owners.get(address)
        if record is None:
            self.owners.pop(address, None)
        else:
            self.owners[address] = record

    def settle(self) -> None:
        """Publish moved identities, then re-resolve and publish stale endpoints."""
        self.table.settle(None if self.commit is None else self.commit.hosts)
        stale, self._stale = self._stale, set()
        announce = self.registry.announce
        memo: LabelsMemo = {}
        for key in sorted(stale):
            state = self.endpoints.get(key)
            if state is None:
                continue
            before = state.policies["egress"] | state.policies["ingress"]
            resolved = self.resolver.resolve(
                key, state.endpoint, state.subject, state.addresses, before, memo
            )
            changed = False
            for direction, (policies, program) in resolved.items():
                state.policies[direction] = policies
                if state.programs.get(direction) is not program:
                    changed = True
                    state.programs[direction] = program
                    if announce:
                        self.deltas.append(EndpointChanged(key, direction))
            record = self.records.get(key)
            if changed or record is None or record.endpoint is not state.endpoint:
                record = EndpointRecord(
                    state.endpoint, state.programs["egress"], state.programs["ingress"]
                )
                self._publish_record(key, record)
                for ip in state.endpoint.ips:
                    self._publish_owner(ip, record)
        if stale:
            self.resolver.collect(p for s in self.endpoints.values() for p in s.programs.values())

    # -- reading (under the writer lock) -----------------------------------------------------

    def datapath(self) -> DatapathState:
        """Everything a datapath must enforce now."""
        return project(
            self.registry,
            self.selectors,
            self.names.members,
            (
                (s.endpoint, s.programs["egress"], s.programs["ingress"])
                for s in self.endpoints.values()
            ),
        )

    def in_scope(self, namespace: str) -> list[CompiledPolicy]:
        """Policies that could apply to an endpoint of ``namespace``."""
        return [
            c for c in self.resolver.policies.values() if c.policy.namespace in (None, namespace)
        ]

    def set_info(self, num: int) -> IPSetInfo:
        """What IP set ``num`` stands for (for explanations)."""
        return self.registry.by_num[num].info
