"""What a datapath must enforce: the engine's state in a form backends render.

:meth:`fqdnpolicy.engine.PolicyEngine.datapath` returns a :class:`DatapathState`: the IP sets
with their members, and for every endpoint and direction the ordered tiers of rules that apply,
each rule reduced to what a packet filter can test (protocol, family, ports, set
memberships). Backends (plugins, see :mod:`fqdnpolicy.backends`) turn it into nftables,
iptables+ipset or eBPF state, and apply :class:`~fqdnpolicy.engine.MemberChanged` deltas as
DNS answers come and go.

Everything here is plain frozen data: a backend needs nothing else from the engine.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import attrs

from fqdnpolicy.model import Direction as Direction  # here too for backends importing it

RuleAction: TypeAlias = Literal["Allow", "Deny", "Log", "Pass"]


@attrs.frozen
class SetState:
    """An IP set and its current members.

    Attributes:
        set_id: Stable id (at most 24 characters: a kind letter, ``:``, base64url).
        kind: ``nets``, ``domains`` or ``selector``.
        definition: Canonical text of what the set stands for (for comments, never parsed).
        members: Addresses and CIDRs (canonical text) mapped to their expiry on the DNS
            cache's clock (None: no expiry, e.g. a CIDR or an endpoint IP).
    """

    set_id: str
    kind: Literal["nets", "domains", "selector"]
    definition: str
    members: dict[str, float | None] = attrs.field(hash=False)

    def family_members(self, family: int) -> dict[str, float | None]:
        """Return the members of one address family (4 or 6)."""
        want_v6 = family == 6
        return {m: e for m, e in self.members.items() if (":" in m) == want_v6}


@attrs.frozen(cache_hash=True)  # renderers key chains on these: hash once
class PortSpec:
    """Ports a rule side matches: ranges, plus named ports.

    Attributes:
        ranges: Inclusive ``(first, last)`` ranges.
        named: Named ports already resolved on the policed endpoint: ``(protocol, port)``.
        peer_named: Named ports to resolve on the *peer* (the other endpoint): their names;
            :attr:`DatapathState.named_ports` lists, per name, every endpoint
            ``(address, protocol, port)`` a datapath can put in an address-and-port set.
    """

    ranges: tuple[tuple[int, int], ...] = ()
    named: tuple[tuple[int, int], ...] = ()
    peer_named: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the rule names no ports at all on this side (any port matches)."""
        return not (self.ranges or self.named or self.peer_named)


@attrs.frozen(cache_hash=True)  # renderers key chains on these: hash once
class RuleState:
    """One rule as a packet filter tests it, for one endpoint and direction.

    All conditions are ANDed. The peer is the remote side: the destination in egress, the
    source in ingress.

    Attributes:
        policy: Deciding policy's display name (for log prefixes and comments).
        tier: Tier name.
        index: Rule index in the policy's ``egress``/``ingress`` list.
        action: ``Allow``, ``Deny``, ``Log`` (record, continue) or ``Pass`` (leave the tier).
        families: Address families (4, 6) in which the rule can match for this endpoint.
        protocol: IP protocol number, or None for any.
        not_protocol: Protocol number that must not match.
        icmp: ``(type, code)`` (either may be None) the packet must have.
        not_icmp: ``(type, code)`` the packet must not have.
        peer_in: Set ids the peer address must be in (all of them).
        peer_not_in: Set ids the peer address must not be in (any of them).
        dst_ports: Destination ports (``PortSpec.empty``: any).
        not_dst_ports: Destination ports excluded.
        src_ports: Source ports.
        not_src_ports: Source ports excluded.
    """

    policy: str
    tier: str
    index: int
    action: RuleAction
    families: tuple[int, ...]
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: tuple[int | None, int | None] | None = None
    not_icmp: tuple[int | None, int | None] | None = None
    peer_in: tuple[str, ...] = ()
    peer_not_in: tuple[str, ...] = ()
    dst_ports: PortSpec = PortSpec()
    not_dst_ports: PortSpec = PortSpec()
    src_ports: PortSpec = PortSpec()
    not_src_ports: PortSpec = PortSpec()


@attrs.frozen(cache_hash=True)  # renderers key chains on these: hash once
class TierState:
    """The rules of one tier that apply to an endpoint, in evaluation order.

    Attributes:
        name: Tier name.
        rules: Rules of the applying policies, policies in (order, name) order.
        default_action: What happens when no rule decided: ``Deny`` (drop) or ``Pass`` (go on
            to the next tier).
    """

    name: str
    rules: tuple[RuleState, ...]
    default_action: Literal["Deny", "Pass"]


@attrs.frozen
class EndpointState:
    """An endpoint and what applies to its traffic.

    Attributes:
        key: ``namespace/name``.
        interface: Host-side interface name (``cali...``); egress is what arrives from it,
            ingress what leaves to it.
        addresses: The endpoint's IPs.
        egress: Tiers with policies applying to its egress, in order. Empty: no policy
            applies, allow.
        ingress: Likewise for ingress.
    """

    key: str
    interface: str
    addresses: tuple[str, ...]
    egress: tuple[TierState, ...]
    ingress: tuple[TierState, ...]

    def tiers(self, direction: Direction) -> tuple[TierState, ...]:
        """Return the tiers of one direction."""
        return self.egress if direction == "egress" else self.ingress


@attrs.frozen
class DatapathState:
    """Everything a datapath enforces.

    Attributes:
        sets: Every IP set rules refer to, by id order.
        endpoints: Every endpoint, by key order.
        named_ports: For each named port used on a rule's peer side, every endpoint's
            ``(address, protocol, port)`` carrying that name.
    """

    sets: tuple[SetState, ...]
    endpoints: tuple[EndpointState, ...]
    named_ports: dict[str, tuple[tuple[str, int, int], ...]] = attrs.field(hash=False)

    def set(self, set_id: str) -> SetState:
        """Return the set with this id (``KeyError`` when unknown)."""
        for state in self.sets:
            if state.set_id == set_id:
                return state
        raise KeyError(set_id)


# Deltas: what changed since the last render, in order (PolicyEngine.subscribe).


@attrs.frozen(slots=True)
class MemberChanged:
    """An IP set gained or lost a member (an address or a CIDR).

    Attributes:
        set_id: The set's stable id.
        member: Address or CIDR text.
        added: True when added (or, for DNS members, its expiry extended).
        expiry: Deadline on the DNS cache's clock for DNS-learned members; None otherwise.
    """

    set_id: str
    member: str
    added: bool
    expiry: float | None = None


@attrs.frozen(slots=True)
class IPSetChanged:
    """An IP set was created (``added``) or dropped."""

    set_id: str
    added: bool


@attrs.frozen(slots=True)
class EndpointChanged:
    """An endpoint's rules changed for a direction (or the endpoint came or went)."""

    endpoint: str
    direction: Direction


Delta: TypeAlias = MemberChanged | IPSetChanged | EndpointChanged
