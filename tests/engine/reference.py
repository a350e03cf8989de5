"""A slow, obviously-correct reference evaluator of Calico policy for one flow.

Written independently of :mod:`fqdnpolicy.engine` from Calico's documented semantics, so that a
hypothesis test can require both to give the same verdict and deciding rule. Everything here is
a plain loop over the whole world on every call: no index, no cache, no compiled selector
beyond :meth:`Selector.matches`. Each function states one rule.

The model of a flow. A flow has two *parties*, source and destination, each an address plus
the workload endpoint owning it (if any). The endpoint being policed is matched on its own
side (source in egress, destination in ingress); the other side is its peer. Every rule
criterion over a party is judged the way Calico's IP sets judge it: a ``selector`` matches an
address when some object *reaching* that address (its owner endpoint, a network set whose
``nets`` contain it, and, in the destination of an egress Allow rule, a network set whose
``allowedEgressDomains`` lead to it through the DNS cache) is in the rule's namespace scope
and matches the selector.

Choices where the brief or the docs leave room (a differential failure on one of these is a
question of semantics, not necessarily a bug):

* ``notSelector`` is not namespace-scoped itself (as in Calico's rule conversion): it excludes
  an address when *any* object reaching it matches. The namespace scope instead joins the
  positive part: in a NetworkPolicy, or with a ``namespaceSelector``, a side naming only a
  ``notSelector`` still needs an in-scope object at the address.
* ``allowedEgressDomains`` of network sets count only for the positive ``selector`` of the
  destination of egress Allow rules (Calico Enterprise: "honored in egress allow rules only").
* An endpoint given as a destination (or as the policed side of an ingress flow) stands for
  its first address; the other endpoint uses its first address of the same family.
* An unknown port (``port`` or ``src_port`` None) fails every ``ports`` and ``notPorts``
  criterion on that side.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol

import attrs

from fqdnpolicy.cluster import Cluster, Endpoint
from fqdnpolicy.cluster import NamedPort as EndpointPort
from fqdnpolicy.model import (
    DEFAULT_TIER,
    EntityRule,
    ICMPFields,
    IPNetwork,
    NamedPort,
    NetworkSet,
    ObjectMeta,
    Policy,
    PortRange,
    ResourceSet,
    Rule,
    ServiceAccountMatch,
    Tier,
    TierSpec,
)
from fqdnpolicy.selector import Selector

Direction = Literal["egress", "ingress"]
Default = Literal["end-of-tier", "no-policy", "profile"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Calico's protocol names and their IP protocol numbers.
PROTOCOL_NUMBERS: Mapping[str, int] = {
    "tcp": 6,
    "udp": 17,
    "icmp": 1,
    "icmpv6": 58,
    "sctp": 132,
    "udplite": 136,
}

#: The order Calico gives the ``default`` tier when no Tier resource names it.
DEFAULT_TIER_ORDER = 1_000_000.0

# Labels only Calico sets; an object's own labels under these names are ignored.
NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAME_LABEL = "projectcalico.org/name"
IMPLICIT_LABELS = (NAMESPACE_LABEL, ORCHESTRATOR_LABEL, SERVICE_ACCOUNT_LABEL)
RESERVED_PREFIXES = ("pcns.", "pcsa.")


class DNSView(Protocol):
    """The two questions the reference asks the DNS cache."""

    def names(self) -> Iterable[str]:
        """Every cached name."""
        ...

    def ips(self, name: str) -> Iterable[str]:
        """The IPs ``name`` currently leads to."""
        ...


@attrs.frozen
class RefVerdict:
    """The reference's answer, with the same fields as the engine's ``Verdict``."""

    action: Literal["Allow", "Deny"]
    policy: str | None
    tier: str | None
    rule_index: int | None
    direction: Direction
    default: Default | None


@attrs.frozen
class Party:
    """One end of a flow: its address and the endpoint that owns it (None for outsiders)."""

    address: Address | None
    endpoint: Endpoint | None


@attrs.frozen
class Flow:
    """A resolved flow: both parties and the packet's header fields."""

    source: Party
    destination: Party
    protocol: int
    port: int | None
    src_port: int | None
    icmp_type: int | None
    icmp_code: int | None
    family: int


@attrs.frozen
class World:
    """Everything a verdict depends on."""

    resources: ResourceSet
    cluster: Cluster
    dns: DNSView


@attrs.frozen
class Reach:
    """An object that reaches an address, as rule selectors see it."""

    labels: Mapping[str, str]
    namespace: str | None
    endpoint: Endpoint | None


# ----------------------------------------------------------------------------- entry point


def reference_verdict(
    resources: ResourceSet,
    cluster: Cluster,
    dns: DNSView,
    src: Endpoint | str,
    dst: Endpoint | str,
    protocol: str | int = "TCP",
    port: int | None = 443,
    direction: Direction = "egress",
    *,
    src_port: int | None = None,
    icmp_type: int | None = None,
    icmp_code: int | None = None,
) -> RefVerdict:
    """Judge one flow the slow way (see the module docstring for the rules).

    Args:
        resources: Policies, network sets and tiers.
        cluster: Endpoints, namespaces, service accounts.
        dns: The DNS cache (only ``names()`` and ``ips(name)`` are used).
        src: Source: an endpoint or ``"namespace/name"``; in ingress also an IP string.
        dst: Destination: an IP string, an endpoint or ``"namespace/name"``.
        protocol: Protocol name or number.
        port: Destination port.
        direction: ``"egress"`` judges the source (and a known destination's ingress too);
            ``"ingress"`` judges only the destination.
        src_port: Source port, when known.
        icmp_type: ICMP type of the packet.
        icmp_code: ICMP code of the packet.

    Returns:
        The verdict and what decided it.
    """
    world = World(resources, cluster, dns)
    flow = resolve_flow(
        cluster, src, dst, protocol, port, direction, src_port, icmp_type, icmp_code
    )
    if direction == "ingress":
        return ingress_verdict(world, flow)
    return egress_verdict(world, flow)


def egress_verdict(world: World, flow: Flow) -> RefVerdict:
    """Egress of the source; a flow to a known endpoint must also pass that endpoint's ingress.

    The egress side is reported when it denies; else the ingress side when it denies; else
    the egress side.
    """
    src = flow.source.endpoint
    if src is None:
        raise ValueError("an egress flow needs a source endpoint")
    out = evaluate_endpoint(world, src, "egress", flow)
    if out.action == "Deny" or flow.destination.endpoint is None:
        return out
    back = evaluate_endpoint(world, flow.destination.endpoint, "ingress", flow)
    return back if back.action == "Deny" else out


def ingress_verdict(world: World, flow: Flow) -> RefVerdict:
    """Ingress judges only the destination endpoint."""
    dst = flow.destination.endpoint
    if dst is None:
        raise ValueError("an ingress flow needs a destination endpoint")
    return evaluate_endpoint(world, dst, "ingress", flow)


# ----------------------------------------------------------------------------- the flow


def protocol_number(protocol: str | int) -> int:
    """A protocol name (any case) or number as its IP protocol number."""
    if isinstance(protocol, int):
        return protocol
    text = protocol.strip()
    if text.isdigit():
        return int(text)
    return PROTOCOL_NUMBERS[text.lower()]


def find_endpoint(cluster: Cluster, ref: Endpoint | str) -> Endpoint | None:
    """The cluster's endpoint for an Endpoint or ``ns/name`` key; None for anything else."""
    key = ref.key if isinstance(ref, Endpoint) else ref
    for ep in cluster.endpoints:
        if ep.key == key:
            return ep
    return ref if isinstance(ref, Endpoint) else None


def owner_of(cluster: Cluster, address: Address | None) -> Endpoint | None:
    """The endpoint holding ``address`` among its IPs, if any."""
    for ep in cluster.endpoints:
        for ip in ep.ips:
            if address is not None and ipaddress.ip_address(ip) == address:
                return ep
    return None


def first_address(ep: Endpoint, family: int | None = None) -> Address | None:
    """The endpoint's first address (of ``family`` when given)."""
    for ip in ep.ips:
        addr = ipaddress.ip_address(ip)
        if family is None or addr.version == family:
            return addr
    return None


def party(cluster: Cluster, ref: Endpoint | str, family: int | None) -> Party:
    """An endpoint (its address of ``family``) or an IP (and its owner) as a party."""
    ep = find_endpoint(cluster, ref)
    if ep is not None:
        return Party(first_address(ep, family), ep)
    assert isinstance(ref, str)
    addr = ipaddress.ip_address(ref)
    return Party(addr, owner_of(cluster, addr))


def resolve_flow(
    cluster: Cluster,
    src: Endpoint | str,
    dst: Endpoint | str,
    protocol: str | int,
    port: int | None,
    direction: Direction,
    src_port: int | None,
    icmp_type: int | None,
    icmp_code: int | None,
) -> Flow:
    """Turn the caller's arguments into two parties and header fields.

    The family is the destination's in egress and the source's in ingress (an IP source
    fixes it); the other side uses its first address of that family.
    """
    if direction == "ingress" and find_endpoint(cluster, src) is None:
        source = party(cluster, src, None)
        destination = party(cluster, dst, source.address.version if source.address else None)
    else:
        destination = party(cluster, dst, None)
        family = destination.address.version if destination.address else None
        source = party(cluster, src, family)
    addr = destination.address if destination.address is not None else source.address
    return Flow(
        source=source,
        destination=destination,
        protocol=protocol_number(protocol),
        port=port,
        src_port=src_port,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        family=addr.version if addr is not None else 4,
    )


# ----------------------------------------------------------------------------- labels


def namespace_labels(cluster: Cluster, namespace: str) -> Mapping[str, str]:
    """A namespace's labels, with the name labels Kubernetes and Calico add."""
    return cluster.namespace(namespace).effective_labels


def service_account_labels(cluster: Cluster, ep: Endpoint) -> dict[str, str]:
    """The labels of the endpoint's service account, with Calico's name label."""
    labels = dict(cluster.service_account(ep.namespace, ep.service_account).labels)
    labels[NAME_LABEL] = ep.service_account
    return labels


def own_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """An object's own labels, without the names only Calico may set."""
    return {
        k: v
        for k, v in labels.items()
        if k not in IMPLICIT_LABELS and not k.startswith(RESERVED_PREFIXES)
    }


def endpoint_labels(cluster: Cluster, ep: Endpoint) -> dict[str, str]:
    """What selectors see on a pod: namespace labels as ``pcns.*``, service-account labels
    as ``pcsa.*``, its own labels, then the implicit namespace/orchestrator/account labels."""
    labels = {f"pcns.{k}": v for k, v in namespace_labels(cluster, ep.namespace).items()}
    labels[f"pcns.{NAME_LABEL}"] = ep.namespace
    labels.update({f"pcsa.{k}": v for k, v in service_account_labels(cluster, ep).items()})
    labels.update(own_labels(ep.labels))
    labels[NAMESPACE_LABEL] = ep.namespace
    labels[ORCHESTRATOR_LABEL] = "k8s"
    labels[SERVICE_ACCOUNT_LABEL] = ep.service_account
    return labels


def network_set_labels(cluster: Cluster, nset: NetworkSet) -> dict[str, str]:
    """What selectors see on a network set: a namespaced one inherits its namespace's."""
    labels: dict[str, str] = {}
    if nset.namespace is not None:
        ns_labels = namespace_labels(cluster, nset.namespace)
        labels.update({f"pcns.{k}": v for k, v in ns_labels.items()})
        labels[f"pcns.{NAME_LABEL}"] = nset.namespace
    labels.update(own_labels(nset.metadata.labels))
    if nset.namespace is not None:
        labels[NAMESPACE_LABEL] = nset.namespace
    return labels


# ----------------------------------------------------------------------------- tiers


def known_tiers(resources: ResourceSet) -> list[Tier]:
    """Loaded tiers, the implicit ``default`` tier, and tiers only policies name.

    A tier named by a policy but never loaded has no order and denies at its end.
    """
    tiers = list(resources.tiers)
    names = {t.name for t in tiers}
    if DEFAULT_TIER not in names:
        tiers.append(Tier(ObjectMeta(DEFAULT_TIER), TierSpec(order=DEFAULT_TIER_ORDER)))
        names.add(DEFAULT_TIER)
    for policy in resources.policies:
        if policy.spec.tier not in names:
            tiers.append(Tier(ObjectMeta(policy.spec.tier), TierSpec()))
            names.add(policy.spec.tier)
    return tiers


def tier_key(tier: Tier) -> tuple[bool, float, str]:
    """Tiers run by order (missing order last), ties by name."""
    order = tier.spec.order
    return (order is None, 0.0 if order is None else order, tier.name)


def policy_key(policy: Policy) -> tuple[float, str, str]:
    """Policies in a tier run by order (missing = +infinity), ties by name (then namespace)."""
    order = math.inf if policy.spec.order is None else policy.spec.order
    return (order, policy.name, policy.namespace or "")


def policies_of_tier(resources: ResourceSet, tier: Tier) -> list[Policy]:
    """The tier's policies in evaluation order."""
    return sorted((p for p in resources.policies if p.spec.tier == tier.name), key=policy_key)


# ----------------------------------------------------------------------------- applying


def policy_type(direction: Direction) -> str:
    """``egress`` -> ``Egress``, the spelling of ``spec.types``."""
    return direction.capitalize()


def applies_to(cluster: Cluster, policy: Policy, ep: Endpoint, direction: Direction) -> bool:
    """A policy counts for an endpoint in a direction when its types name the direction and
    it selects the endpoint."""
    if policy_type(direction) not in policy.spec.types:
        return False
    return selects_endpoint(cluster, policy, ep)


def selects_endpoint(cluster: Cluster, policy: Policy, ep: Endpoint) -> bool:
    """NetworkPolicy: same namespace and selector; GlobalNetworkPolicy: selector and the
    namespace selector on the endpoint's namespace labels; both: the service account
    selector on the account's labels."""
    spec = policy.spec
    if not policy.is_global and ep.namespace != policy.namespace:
        return False
    if not spec.selector.matches(endpoint_labels(cluster, ep)):
        return False
    ns_selector = spec.namespace_selector if policy.is_global else None
    if ns_selector is not None and not ns_selector.matches(namespace_labels(cluster, ep.namespace)):
        return False
    sa_selector = spec.service_account_selector
    return sa_selector is None or sa_selector.matches(service_account_labels(cluster, ep))


# ----------------------------------------------------------------------------- evaluation


def evaluate_endpoint(world: World, ep: Endpoint, direction: Direction, flow: Flow) -> RefVerdict:
    """Walk the tiers for one endpoint and direction.

    A tier with no applying policy is skipped. In a tier, the first matching Allow or Deny
    rule decides, Log continues, Pass leaves the tier. A tier whose applying policies decided
    nothing ends with its default action (Deny drops, Pass goes on). After the last tier:
    allow by profile if some tier had applying policies, else allow because none applied.
    """
    any_applied = False
    for tier in sorted(known_tiers(world.resources), key=tier_key):
        applying = [
            p
            for p in policies_of_tier(world.resources, tier)
            if applies_to(world.cluster, p, ep, direction)
        ]
        if not applying:
            continue
        any_applied = True
        decided = evaluate_tier(world, applying, tier, direction, flow)
        if decided == "pass":
            continue
        if decided is not None:
            return decided
        if tier.spec.default_action == "Deny":
            return RefVerdict("Deny", None, tier.name, None, direction, "end-of-tier")
    default: Literal["profile", "no-policy"] = "profile" if any_applied else "no-policy"
    return RefVerdict("Allow", None, None, None, direction, default)


def evaluate_tier(
    world: World, applying: Sequence[Policy], tier: Tier, direction: Direction, flow: Flow
) -> RefVerdict | Literal["pass"] | None:
    """The first Allow/Deny rule that matches decides; Pass leaves the tier; None: nothing."""
    for policy in applying:
        rules = policy.spec.egress if direction == "egress" else policy.spec.ingress
        for index, rule in enumerate(rules):
            if not rule_matches(world, policy, rule, direction, flow):
                continue
            if rule.action == "Pass":
                return "pass"
            if rule.action in ("Allow", "Deny"):
                action: Literal["Allow", "Deny"] = "Allow" if rule.action == "Allow" else "Deny"
                return RefVerdict(action, policy.display_name, tier.name, index, direction, None)
            # Log: recorded by the datapath, and evaluation continues.
    return None


# ----------------------------------------------------------------------------- rules


def rule_matches(
    world: World, policy: Policy, rule: Rule, direction: Direction, flow: Flow
) -> bool:
    """All of a rule's criteria must match."""
    return (
        protocol_matches(rule, flow)
        and ip_version_matches(rule, flow)
        and icmp_criteria_match(rule, flow)
        and entity_matches(world, policy, rule, direction, "source", flow)
        and entity_matches(world, policy, rule, direction, "destination", flow)
    )


def protocol_matches(rule: Rule, flow: Flow) -> bool:
    """``protocol`` must equal the flow's; ``notProtocol`` must not.

    ``ICMP`` exists only in IPv4 and ``ICMPv6`` only in IPv6: a rule naming one never matches
    a flow of the other family (Calico renders each into its own family's tables).
    """
    if rule.protocol is not None and protocol_number(rule.protocol) != flow.protocol:
        return False
    if (
        rule.protocol is not None
        and {1: 6, 58: 4}.get(protocol_number(rule.protocol)) == flow.family
    ):
        return False
    return rule.not_protocol is None or protocol_number(rule.not_protocol) != flow.protocol


def ip_version_matches(rule: Rule, flow: Flow) -> bool:
    """``ipVersion`` must be the family of the flow's addresses."""
    return rule.ip_version is None or rule.ip_version == flow.family


def icmp_fields_match(fields: ICMPFields, flow: Flow) -> bool:
    """Type and code, each when given, must equal the packet's."""
    if fields.type is not None and fields.type != flow.icmp_type:
        return False
    return fields.code is None or fields.code == flow.icmp_code


def icmp_criteria_match(rule: Rule, flow: Flow) -> bool:
    """``icmp`` must match the packet's type/code; ``notICMP`` must not."""
    if rule.icmp is not None and not icmp_fields_match(rule.icmp, flow):
        return False
    return rule.not_icmp is None or not icmp_fields_match(rule.not_icmp, flow)


# ----------------------------------------------------------------------------- entity rules


def entity_matches(
    world: World,
    policy: Policy,
    rule: Rule,
    direction: Direction,
    side: Literal["source", "destination"],
    flow: Flow,
) -> bool:
    """A rule's ``source`` or ``destination``: every criterion it names must hold."""
    entity = rule.source if side == "source" else rule.destination
    who = flow.source if side == "source" else flow.destination
    port = flow.src_port if side == "source" else flow.port
    honour_domains = direction == "egress" and side == "destination" and rule.action == "Allow"
    return (
        nets_match(entity, who.address)
        and ports_match(entity, port, flow.protocol, who.endpoint)
        and domains_match(world.dns, entity, who.address)
        and selectors_match(world, policy, entity, who, honour_domains)
    )


def in_nets(address: Address | None, nets: Iterable[IPNetwork]) -> bool:
    """Whether the address lies in any of the CIDRs (never for an unknown address)."""
    return address is not None and any(address in net for net in nets)


def nets_match(entity: EntityRule, address: Address | None) -> bool:
    """``nets``: in at least one; ``notNets``: in none."""
    if entity.nets and not in_nets(address, entity.nets):
        return False
    return not in_nets(address, entity.not_nets)


def port_hits(
    spec: PortRange | NamedPort, port: int, protocol: int, owner: Endpoint | None
) -> bool:
    """A numeric range holds the port; a named port is one of the owning endpoint's ports
    with that name, the flow's protocol and that number (no owner: no match)."""
    if isinstance(spec, PortRange):
        return spec.first <= port <= spec.last
    if owner is None:
        return False
    return any(named_port_is(np, spec.name, protocol, port) for np in owner.named_ports)


def named_port_is(np: EndpointPort, name: str, protocol: int, port: int) -> bool:
    """An endpoint's named port answers to a name, a protocol and a number."""
    return np.name == name and protocol_number(np.protocol) == protocol and np.port == port


def ports_match(
    entity: EntityRule, port: int | None, protocol: int, owner: Endpoint | None
) -> bool:
    """``ports``: any hits; ``notPorts``: none hits; either fails on an unknown port."""
    if entity.ports and (
        port is None or not any(port_hits(p, port, protocol, owner) for p in entity.ports)
    ):
        return False
    return not entity.not_ports or (
        port is not None and not any(port_hits(p, port, protocol, owner) for p in entity.not_ports)
    )


def dns_leads_to(dns: DNSView, name: str, address: Address) -> bool:
    """Whether the cache currently maps ``name`` (through its chain) to ``address``."""
    return any(ipaddress.ip_address(ip) == address for ip in dns.ips(name))


def domains_match(dns: DNSView, entity: EntityRule, address: Address | None) -> bool:
    """``domains``: some cached name matching a pattern leads to the address."""
    if not entity.domains:
        return True
    if address is None:
        return False
    for name in dns.names():
        if any(p.matches(name) for p in entity.domains) and dns_leads_to(dns, name, address):
            return True
    return False


def network_set_reaches(
    dns: DNSView, nset: NetworkSet, address: Address | None, honour_domains: bool
) -> bool:
    """A network set holds its ``nets`` and, where honoured, the IPs its domains lead to."""
    if address is None:
        return False
    if in_nets(address, nset.spec.nets):
        return True
    if not honour_domains or not nset.spec.allowed_egress_domains:
        return False
    for name in dns.names():
        patterns = nset.spec.allowed_egress_domains
        if any(p.matches(name) for p in patterns) and dns_leads_to(dns, name, address):
            return True
    return False


def reaching(world: World, who: Party, honour_domains: bool) -> list[Reach]:
    """Every object that puts the party's address into selector IP sets: its endpoint and
    each network set holding the address."""
    found: list[Reach] = []
    if who.endpoint is not None:
        ep = who.endpoint
        found.append(Reach(endpoint_labels(world.cluster, ep), ep.namespace, ep))
    for nset in world.resources.network_sets:
        if network_set_reaches(world.dns, nset, who.address, honour_domains):
            labels = network_set_labels(world.cluster, nset)
            found.append(Reach(labels, nset.namespace, None))
    return found


def namespace_selector_matches(world: World, selector: Selector, obj: Reach) -> bool:
    """A rule's ``namespaceSelector`` on an object's namespace.

    ``global()`` means "not namespaced" and ``all()`` "any namespace": a namespaced object
    is judged on its namespace's labels with ``global()`` false; a global object (a
    GlobalNetworkSet) has no namespace labels, ``global()`` true and ``all()`` false.
    """
    never = Selector.all().negate()
    if obj.namespace is None:
        return selector.substitute(all_=never, global_=Selector.all()).matches({})
    labels = namespace_labels(world.cluster, obj.namespace)
    return selector.substitute(global_=never).matches(labels)


def in_scope(world: World, policy: Policy, entity: EntityRule, obj: Reach) -> bool:
    """Namespace scope of a rule side: its ``namespaceSelector``; else, in a NetworkPolicy,
    the policy's namespace; else (GlobalNetworkPolicy) everything."""
    if entity.namespace_selector is not None:
        return namespace_selector_matches(world, entity.namespace_selector, obj)
    if not policy.is_global:
        return obj.namespace == policy.namespace
    return True


def account_matches(world: World, accounts: ServiceAccountMatch | None, obj: Reach) -> bool:
    """``serviceAccounts``: only endpoints; the name among ``names`` (when given) and the
    account's labels matching ``selector`` (when given)."""
    if accounts is None:
        return True
    ep = obj.endpoint
    if ep is None:
        return False
    if accounts.names and ep.service_account not in accounts.names:
        return False
    selector = accounts.selector
    return selector is None or selector.matches(service_account_labels(world.cluster, ep))


def needs_positive(policy: Policy, entity: EntityRule) -> bool:
    """Whether some in-scope object must reach the address: when the side names a selector,
    a namespace selector or service accounts, or a notSelector under a namespace scope."""
    if entity.selector is not None or entity.namespace_selector is not None:
        return True
    if entity.service_accounts is not None:
        return True
    return entity.not_selector is not None and not policy.is_global


def positive_match(
    world: World, policy: Policy, entity: EntityRule, who: Party, honour_domains: bool
) -> bool:
    """Some object reaching the address is in scope, matches ``selector`` and the accounts."""
    for obj in reaching(world, who, honour_domains):
        if not in_scope(world, policy, entity, obj):
            continue
        if entity.selector is not None and not entity.selector.matches(obj.labels):
            continue
        if account_matches(world, entity.service_accounts, obj):
            return True
    return False


def excluded(world: World, entity: EntityRule, who: Party) -> bool:
    """``notSelector``: some object reaching the address (in any namespace) matches it."""
    selector = entity.not_selector
    if selector is None:
        return False
    return any(selector.matches(obj.labels) for obj in reaching(world, who, False))


def selectors_match(
    world: World, policy: Policy, entity: EntityRule, who: Party, honour_domains: bool
) -> bool:
    """The selector part of a side: positive reach where required, and no exclusion."""
    if needs_positive(policy, entity) and not positive_match(
        world, policy, entity, who, honour_domains
    ):
        return False
    return not excluded(world, entity, who)
