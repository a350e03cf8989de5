"""Frozen attrs models of the policy resources, and :class:`ResourceSet`.

The classes mirror Calico's ``projectcalico.org/v3`` shapes (``metadata`` + ``spec``) with
snake_case attribute names; :mod:`fqdnpolicy.loader` structures them from YAML/JSON with a cattrs
converter (camelCase keys) and validates them. Values are parsed once: selectors are
:class:`~fqdnpolicy.selector.Selector`, domains :class:`~fqdnpolicy.domains.DomainPattern`,
CIDRs :mod:`ipaddress` networks, ports :class:`PortRange` / :class:`NamedPort`.

Kubernetes ``networking.k8s.io/v1`` NetworkPolicies are converted by the loader to
:class:`Policy` exactly as Calico converts them, so the rest of the library sees one model.

Each resource remembers where it came from (:class:`SourceLocation`, ``origin``) in fields that
take no part in equality: two resources are equal when they mean the same thing, wherever they
were written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

import attrs

from fqdnpolicy.domains import DomainPattern
from fqdnpolicy.selector import Selector

__all__ = [
    "CALICO_API_VERSION",
    "DEFAULT_TIER",
    "DEFAULT_TIER_ORDER",
    "K8S_API_VERSION",
    "Action",
    "Direction",
    "DomainReference",
    "EntityRule",
    "ICMPFields",
    "IPNetwork",
    "NamedPort",
    "NetworkSet",
    "NetworkSetKind",
    "NetworkSetSpec",
    "ObjectMeta",
    "Policy",
    "PolicyKind",
    "PolicySpec",
    "PolicyType",
    "Port",
    "PortRange",
    "Protocol",
    "Resource",
    "ResourceSet",
    "Rule",
    "RuleMetadata",
    "ServiceAccountMatch",
    "SourceLocation",
    "Tier",
    "TierSpec",
]

CALICO_API_VERSION = "projectcalico.org/v3"
K8S_API_VERSION = "networking.k8s.io/v1"
DEFAULT_TIER = "default"
#: Order of Calico's built-in ``default`` tier when no Tier resource of that name is loaded
#: (``kube-admin`` is 1,000 and ``kube-baseline`` 10,000,000 in Calico).
DEFAULT_TIER_ORDER = 1_000_000.0

Action: TypeAlias = Literal["Allow", "Deny", "Log", "Pass"]
#: The side of an endpoint traffic is judged on: leaving it (egress) or reaching it (ingress).
Direction: TypeAlias = Literal["egress", "ingress"]
PolicyType: TypeAlias = Literal["Ingress", "Egress"]
PolicyKind: TypeAlias = Literal["NetworkPolicy", "GlobalNetworkPolicy"]
NetworkSetKind: TypeAlias = Literal["NetworkSet", "GlobalNetworkSet"]
TierDefaultAction: TypeAlias = Literal["Deny", "Pass"]
#: An IPv4 or IPv6 network (a CIDR), as rules and network sets hold them.
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
#: A protocol: one of Calico's names (``TCP``, ``UDP``, ``ICMP``, ``ICMPv6``, ``SCTP``,
#: ``UDPLite``, in that spelling) or an IP protocol number 1-255.
Protocol: TypeAlias = str | int


def _frozen_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    # A read-only view keeps frozen models frozen all the way down; it compares equal to a
    # dict with the same items.
    return MappingProxyType(dict(value or {}))


def _map_field() -> Mapping[str, str]:
    return attrs.field(factory=dict, converter=_frozen_map, hash=False)


@attrs.frozen
class SourceLocation:
    """Where a resource was read from.

    Attributes:
        file: The file name (``"<string>"`` for :func:`~fqdnpolicy.loader.loads` by default).
        line: 1-based line of the resource's first line, when known.
    """

    file: str
    line: int | None = None

    def __str__(self) -> str:
        """Render as ``file:line``."""
        return self.file if self.line is None else f"{self.file}:{self.line}"


@attrs.frozen
class PortRange:
    """An inclusive range of port numbers (a single port has ``first == last``).

    Attributes:
        first: Lowest port, 0-65535.
        last: Highest port, ``first``-65535.
    """

    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        """Return whether the port number ``port`` lies in the range."""
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        """Render as Calico writes it: ``80`` or ``6040:6050``."""
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


@attrs.frozen
class NamedPort:
    """A rule's reference to a port by name (``ports: [http]``).

    The name is resolved against the ports pods declare, each a
    :class:`fqdnpolicy.cluster.NamedPort` carrying the protocol and number the name stands
    for on that pod.

    Attributes:
        name: The port name (an IANA service name: lowercase letters, digits, ``-``).
    """

    name: str

    def __str__(self) -> str:
        """Return the name."""
        return self.name


Port: TypeAlias = PortRange | NamedPort


@attrs.frozen
class ICMPFields:
    """ICMP match (``icmp`` / ``notICMP`` in a rule).

    Attributes:
        type: ICMP type 0-254, or None for any.
        code: ICMP code 0-255 (needs ``type``), or None for any.
    """

    type: int | None = None
    code: int | None = None


@attrs.frozen
class ServiceAccountMatch:
    """``serviceAccounts`` in a rule's source or destination.

    Attributes:
        names: Service account names (any of them matches).
        selector: Selector over service-account labels.
    """

    names: tuple[str, ...] = ()
    selector: Selector | None = None


@attrs.frozen
class EntityRule:
    """A rule's ``source`` or ``destination``: all given criteria must match (AND).

    Attributes:
        nets: CIDRs the address must be in (any of them).
        not_nets: CIDRs the address must not be in.
        selector: Endpoint selector (None: no endpoint constraint; differs from ``all()``,
            which matches only endpoints and network sets, not arbitrary addresses).
        not_selector: Endpoints that must not match.
        namespace_selector: Namespaces the selected endpoints live in.
        ports: Ports (any of them).
        not_ports: Ports excluded.
        service_accounts: Service-account match.
        domains: Domain names/patterns (destination of egress Allow rules only).
    """

    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    selector: Selector | None = None
    not_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ports: tuple[Port, ...] = ()
    not_ports: tuple[Port, ...] = ()
    service_accounts: ServiceAccountMatch | None = None
    domains: tuple[DomainPattern, ...] = ()


@attrs.frozen
class RuleMetadata:
    """A rule's ``metadata``.

    Attributes:
        annotations: Free-form annotations (not used for matching).
    """

    annotations: Mapping[str, str] = _map_field()


@attrs.frozen
class Rule:
    """One ingress or egress rule; all its match criteria are ANDed.

    Attributes:
        action: ``Allow``, ``Deny``, ``Log`` or ``Pass``.
        protocol: Protocol name or number, None for any.
        not_protocol: Protocol that must not match.
        ip_version: 4 or 6, None for both.
        icmp: ICMP type/code match (protocol ICMP or ICMPv6).
        not_icmp: ICMP type/code that must not match.
        source: Match on the packet's source.
        destination: Match on the packet's destination.
        metadata: Rule annotations.
    """

    action: Action
    protocol: Protocol | None = None
    not_protocol: Protocol | None = None
    ip_version: int | None = None
    icmp: ICMPFields | None = None
    not_icmp: ICMPFields | None = None
    source: EntityRule = attrs.field(factory=EntityRule)
    destination: EntityRule = attrs.field(factory=EntityRule)
    metadata: RuleMetadata | None = None


@attrs.frozen
class ObjectMeta:
    """A resource's ``metadata`` (fields the model keeps).

    Attributes:
        name: The resource name.
        namespace: Namespace of namespaced kinds, None for global ones.
        labels: Labels (network sets are selected by them).
        annotations: Annotations.
    """

    name: str
    namespace: str | None = None
    labels: Mapping[str, str] = _map_field()
    annotations: Mapping[str, str] = _map_field()


@attrs.frozen
class PolicySpec:
    """The ``spec`` of a NetworkPolicy or GlobalNetworkPolicy.

    Attributes:
        order: Precedence inside the tier (lower first); None sorts last.
        tier: The tier's name.
        selector: Endpoints the policy applies to (omitted means ``all()``).
        namespace_selector: Namespaces it applies to (GlobalNetworkPolicy only).
        service_account_selector: Service accounts it applies to.
        types: Directions it applies to; always explicit after loading (inferred as Calico
            does when the input omits it).
        ingress: Ingress rules in order.
        egress: Egress rules in order.
        do_not_track: GlobalNetworkPolicy only: untracked (raw table) policy.
        pre_dnat: GlobalNetworkPolicy only: applied before DNAT.
        apply_on_forward: GlobalNetworkPolicy only: also applies to forwarded traffic.
    """

    order: float | None = None
    tier: str = DEFAULT_TIER
    selector: Selector = attrs.field(factory=Selector.all)
    namespace_selector: Selector | None = None
    service_account_selector: Selector | None = None
    types: tuple[PolicyType, ...] = ()
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False


@attrs.frozen
class Policy:
    """A Calico NetworkPolicy or GlobalNetworkPolicy (Kubernetes ones arrive converted).

    Attributes:
        kind: ``NetworkPolicy`` (namespaced) or ``GlobalNetworkPolicy``.
        metadata: Name, namespace, labels, annotations.
        spec: The policy itself.
        source: Where it was read from (not part of equality).
        origin: The API it was written in: ``projectcalico.org/v3``, or
            ``networking.k8s.io/v1`` for a converted Kubernetes NetworkPolicy (not part of
            equality: a dumped and reloaded conversion is the same policy).
    """

    kind: PolicyKind
    metadata: ObjectMeta
    spec: PolicySpec
    source: SourceLocation | None = attrs.field(default=None, eq=False)
    origin: str = attrs.field(default=CALICO_API_VERSION, eq=False)

    @property
    def name(self) -> str:
        """The policy name."""
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        """The namespace (None for a GlobalNetworkPolicy)."""
        return self.metadata.namespace

    @property
    def is_global(self) -> bool:
        """True for a GlobalNetworkPolicy."""
        return self.kind == "GlobalNetworkPolicy"

    @property
    def display_name(self) -> str:
        """``NetworkPolicy ns/name`` or ``GlobalNetworkPolicy name``."""
        return _display(self.kind, self.metadata)


@attrs.frozen
class NetworkSetSpec:
    """The ``spec`` of a (Global)NetworkSet.

    Attributes:
        nets: CIDRs in the set.
        allowed_egress_domains: Domains whose resolved IPs join the set.
    """

    nets: tuple[IPNetwork, ...] = ()
    allowed_egress_domains: tuple[DomainPattern, ...] = ()


@attrs.frozen
class NetworkSet:
    """A NetworkSet (namespaced) or GlobalNetworkSet, picked by rule selectors via its labels.

    Attributes:
        kind: ``NetworkSet`` or ``GlobalNetworkSet``.
        metadata: Name, namespace, labels, annotations.
        spec: Nets and domains.
        source: Where it was read from (not part of equality).
    """

    kind: NetworkSetKind
    metadata: ObjectMeta
    spec: NetworkSetSpec = attrs.field(factory=NetworkSetSpec)
    source: SourceLocation | None = attrs.field(default=None, eq=False)

    @property
    def name(self) -> str:
        """The set's name."""
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        """The namespace (None for a GlobalNetworkSet)."""
        return self.metadata.namespace

    @property
    def display_name(self) -> str:
        """``NetworkSet ns/name`` or ``GlobalNetworkSet name``."""
        return _display(self.kind, self.metadata)


@attrs.frozen
class TierSpec:
    """The ``spec`` of a Tier.

    Attributes:
        order: Tier precedence (lower first); None sorts last.
        default_action: What happens when a tier's policies apply but none decides:
            ``Deny`` (Calico's default) or ``Pass``.
    """

    order: float | None = None
    default_action: TierDefaultAction = "Deny"


@attrs.frozen
class Tier:
    """A Calico Tier.

    Attributes:
        metadata: Name, labels, annotations.
        spec: Order and default action.
        source: Where it was read from (not part of equality).
    """

    metadata: ObjectMeta
    spec: TierSpec = attrs.field(factory=TierSpec)
    source: SourceLocation | None = attrs.field(default=None, eq=False)

    @property
    def kind(self) -> Literal["Tier"]:
        """Always ``Tier`` (so every resource has a ``kind``)."""
        return "Tier"

    @property
    def name(self) -> str:
        """The tier's name."""
        return self.metadata.name

    @property
    def display_name(self) -> str:
        """``Tier name``."""
        return _display("Tier", self.metadata)


Resource: TypeAlias = Policy | NetworkSet | Tier


def _display(kind: str, meta: ObjectMeta) -> str:
    if meta.namespace is None:
        return f"{kind} {meta.name}"
    return f"{kind} {meta.namespace}/{meta.name}"


@attrs.frozen
class DomainReference:
    """A place where a domain pattern is written.

    Attributes:
        pattern: The parsed pattern.
        resource: Display name of the resource, e.g. ``NetworkPolicy default/allow-github-api``.
        path: Field path inside it, e.g. ``spec.egress[0].destination.domains[0]``.
    """

    pattern: DomainPattern
    resource: str
    path: str


@attrs.frozen
class ResourceSet:
    """Everything loaded: policies, network sets and tiers, each in input order.

    Attributes:
        policies: NetworkPolicies and GlobalNetworkPolicies (converted Kubernetes ones too).
        network_sets: NetworkSets and GlobalNetworkSets.
        tiers: Tiers.
    """

    policies: tuple[Policy, ...] = ()
    network_sets: tuple[NetworkSet, ...] = ()
    tiers: tuple[Tier, ...] = ()

    def __len__(self) -> int:
        """Return the number of resources of all kinds."""
        return len(self.policies) + len(self.network_sets) + len(self.tiers)

    def __iter__(self) -> Iterator[Resource]:
        """Iterate over tiers, then network sets, then policies."""
        yield from self.tiers
        yield from self.network_sets
        yield from self.policies

    def domain_references(self) -> list[DomainReference]:
        """Return every domain pattern written anywhere, with where it is written.

        Covers ``destination.domains`` of policy rules (ingress rules too, although the loader
        rejects those) and ``allowedEgressDomains`` of network sets, in input order.
        """
        refs: list[DomainReference] = []
        for policy in self.policies:
            name = policy.display_name
            for direction, rules in (
                ("ingress", policy.spec.ingress),
                ("egress", policy.spec.egress),
            ):
                for i, rule in enumerate(rules):
                    for side, entity in (
                        ("source", rule.source),
                        ("destination", rule.destination),
                    ):
                        for j, pattern in enumerate(entity.domains):
                            path = f"spec.{direction}[{i}].{side}.domains[{j}]"
                            refs.append(DomainReference(pattern, name, path))
        for nset in self.network_sets:
            for j, pattern in enumerate(nset.spec.allowed_egress_domains):
                path = f"spec.allowedEgressDomains[{j}]"
                refs.append(DomainReference(pattern, nset.display_name, path))
        return refs
