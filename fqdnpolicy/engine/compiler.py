"""The rule compiler: policies into rules over IP sets, and rules bound to one endpoint.

Compiling turns each rule's peer side (the destination of an egress rule, the source of an
ingress rule) into the IP sets the peer's address must be in or must not be in; the policed
endpoint's own side becomes sets too, decided once per endpoint when the rule is *bound* to
it, as Calico's datapath does (the endpoint's address must be in its own side's selector
sets). A rule that says nothing about the own side binds alike for every endpoint and is
shared.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol, TypeAlias, cast

import attrs

from fqdnpolicy.cluster import Endpoint
from fqdnpolicy.datapath import Direction, RuleAction, RuleState
from fqdnpolicy.domains import DomainPattern
from fqdnpolicy.engine.results import Verdict
from fqdnpolicy.model import EntityRule, IPNetwork, NamedPort, Policy, Port, PortRange, Rule
from fqdnpolicy.protocols import PROTOCOL_NUMBERS, protocol_number
from fqdnpolicy.scoping import PeerMatch, peer_match, policy_selector
from fqdnpolicy.selector import Selector

__all__ = [
    "DIRECTIONS",
    "AlikePart",
    "Binding",
    "Bound",
    "CompiledPolicy",
    "Rule",
    "SetSource",
    "Side",
    "bind",
    "compile_policy",
    "order_key",
    "peer_facts",
    "policy_key",
]

DIRECTIONS: tuple[Direction, Direction] = ("egress", "ingress")


class SetSource(Protocol):
    """Where compiled rules take their IP sets from (numbers of sets, referenced once more)."""

    def nets(self, nets: Sequence[IPNetwork]) -> int:
        """The set of these CIDRs."""

    def selector(self, selector: Selector, *, with_domains: bool = False) -> int:
        """The set of what ``selector`` picks (with network sets' domains if asked)."""

    def domains(self, patterns: Sequence[DomainPattern]) -> int:
        """The set of what names matching ``patterns`` resolve to."""

    def retain(self, num: int) -> None:
        """One more reference to set ``num``, which is live."""


#: Sides compiled already, by what they depend on, with the sets they took (see compile_policy).
SideMemo = dict[tuple[object, ...], tuple["Side", tuple[int, ...]]]


def policy_key(policy: Policy) -> str:
    """``kind/namespace/name``: what identifies a policy across upserts."""
    return f"{policy.kind}/{policy.namespace or ''}/{policy.name}"


def order_key(order: float | None, name: str) -> tuple[float, str]:
    """Calico's ordering: by order (absent last), then by name.

    An order that is not a number (NaN, which the loader refuses but a policy built in code
    may carry) sorts as absent: NaN compares false with everything, which would make the
    order of a sort depend on the input's order.
    """
    return (math.inf if order is None or order != order else order, name)


@attrs.define(eq=False, slots=True)
class Side:
    """A compiled ``source`` or ``destination``."""

    nets: tuple[IPNetwork, ...]
    not_nets: tuple[IPNetwork, ...]
    peer: PeerMatch
    ports: tuple[PortRange, ...]
    named_ports: tuple[str, ...]
    not_ports: tuple[PortRange, ...]
    not_named_ports: tuple[str, ...]
    # IP sets the address must be in / must not be in
    required: tuple[int, ...]
    forbidden: tuple[int, ...]


@attrs.define(eq=False, slots=True)
class CompiledRule:
    """One rule, its sides compiled."""

    policy: str
    tier: str
    index: int
    direction: Direction
    action: RuleAction
    protocol: int | None
    not_protocol: int | None
    ip_version: int | None
    icmp: tuple[int | None, int | None] | None
    not_icmp: tuple[int | None, int | None] | None
    source: Side
    destination: Side
    #: Every endpoint binds the rule alike (nothing on its own side): it is its own binding.
    alike: bool = False
    # What a datapath projection made of it, when it is its own binding (see Bound).
    rendered: tuple[RuleState | None, tuple[str, ...]] | None = None
    _verdict: Verdict | None = None

    # A rule bound alike everywhere reads as a Bound of itself (see bind): no object per rule.
    ok4: ClassVar[bool] = True
    ok6: ClassVar[bool] = True
    own_named: ClassVar[tuple[tuple[int, int], ...]] = ()
    own_not_named: ClassVar[tuple[tuple[int, int], ...]] = ()

    @property
    def rule(self) -> CompiledRule:
        """The rule itself, read as its own binding."""
        return self

    @property
    def verdict(self) -> Verdict:
        """What an Allow or Deny rule decides when it matches.

        Made when first asked: most rules never decide a flow.
        """
        found = self._verdict
        if found is None:
            assert self.action in ("Allow", "Deny"), "only Allow and Deny rules decide"
            found = self._verdict = Verdict(
                action="Allow" if self.action == "Allow" else "Deny",
                policy=self.policy,
                tier=self.tier,
                rule_index=self.index,
                direction=self.direction,
            )
        return found

    @property
    def peer(self) -> Side:
        """The side the flow's other address is judged on."""
        return self.destination if self.direction == "egress" else self.source

    @property
    def own(self) -> Side:
        """The side of the policed endpoint."""
        return self.source if self.direction == "egress" else self.destination


@attrs.define(eq=False, slots=True)
class Bound:
    """A rule bound to one endpoint: its own side decided, only the flow left to check."""

    rule: CompiledRule
    ok4: bool
    ok6: bool
    # own-side named ports resolved on the endpoint: (protocol number, port)
    own_named: tuple[tuple[int, int], ...]
    own_not_named: tuple[tuple[int, int], ...]
    # What a datapath projection made of it, kept: bound rules never change.
    rendered: tuple[RuleState | None, tuple[str, ...]] | None = None


#: A rule bound to one endpoint: a :class:`Bound`, or the rule itself when it binds alike
#: everywhere (the same attributes; ``rule`` is the rule).
Binding: TypeAlias = "Bound | CompiledRule"


@attrs.frozen
class AlikePart:
    """What the rules of one policy and direction, bound alike everywhere, bring to a program.

    Attributes:
        refs: The sets their peers must be in or must not be in.
        peer_ports: Some peer names ports by name.
        peer_named: Some peer names ports by name and need not be in any set.
    """

    refs: frozenset[int]
    peer_ports: bool
    peer_named: bool


def peer_facts(rule: CompiledRule, refs: set[int]) -> tuple[bool, bool]:
    """Add the sets ``rule``'s peer must be in or out of to ``refs``; its peer port facts.

    Returns ``(peer_ports, peer_named)``: whether the peer names ports by name, and whether
    it does so without having to be in a set (a peer that must be in one fails the rule,
    whatever its ports, when it is in none of a program's sets).
    """
    peer = rule.peer
    if peer.required:
        refs.update(peer.required)
    if peer.forbidden:
        refs.update(peer.forbidden)
    if peer.named_ports or peer.not_named_ports:
        return True, not peer.required
    return False, False


@attrs.define(eq=False, slots=True)
class CompiledPolicy:
    """A policy with its rules compiled, and the IP sets it holds references to."""

    policy: Policy
    key: str
    display: str
    selector: Selector
    egress: tuple[CompiledRule, ...]
    ingress: tuple[CompiledRule, ...]
    set_nums: tuple[int, ...]
    binds_alike: dict[Direction, bool] = attrs.field(factory=dict)
    #: Per direction, what the policy adds to every program it is in when it binds alike
    #: (see :meth:`alike_part`), made when first asked.
    _alike_parts: dict[Direction, AlikePart] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        for direction in DIRECTIONS:
            rules = self.egress if direction == "egress" else self.ingress
            self.binds_alike[direction] = all(rule.alike for rule in rules)

    def rules(self, direction: Direction) -> tuple[CompiledRule, ...]:
        """The rules of one direction (empty when the policy's types exclude it)."""
        return self.egress if direction == "egress" else self.ingress

    def alike_part(self, direction: Direction) -> AlikePart:
        """What the rules of a direction binding alike bring to every program they are in.

        Each rule is its own binding there, so this is the same for every endpoint: the
        sets their peers must be in or out of, and the peer port facts of
        :class:`~fqdnpolicy.engine.programs.Program` (see :func:`peer_facts`).
        """
        found = self._alike_parts.get(direction)
        if found is None:
            assert self.binds_alike[direction], "only rules bound alike everywhere"
            refs: set[int] = set()
            peer_ports = peer_named = False
            for rule in self.rules(direction):
                ports, named = peer_facts(rule, refs)
                peer_ports = peer_ports or ports
                peer_named = peer_named or named
            found = AlikePart(frozenset(refs), peer_ports, peer_named)
            self._alike_parts[direction] = found
        return found

    @property
    def sort_key(self) -> tuple[float, str, str]:
        """Order within a tier: Calico's (order, name), then the kind and namespace.

        Calico leaves a tie between a GlobalNetworkPolicy and a NetworkPolicy of the same
        name and order unordered; the key keeps every ordering total.
        """
        return (*order_key(self.policy.spec.order, self.policy.name), self.key)


def compile_policy(policy: Policy, sets: SetSource, memo: SideMemo | None = None) -> CompiledPolicy:
    """Compile every rule of ``policy``, taking references to the IP sets they name.

    With ``memo`` (while no set can go away: the first build), a side equal to one compiled
    before is shared, its sets referenced once more: most rules repeat a few sides (sides
    naming domains are compiled each time).
    """
    display = policy.display_name
    spec = policy.spec
    nums: list[int] = []
    rules: dict[Direction, tuple[CompiledRule, ...]] = {}
    for direction in DIRECTIONS:
        source = spec.egress if direction == "egress" else spec.ingress
        compiled: list[CompiledRule] = []
        if direction.capitalize() in spec.types:
            for index, rule in enumerate(source):
                compiled.append(
                    _compile_rule(policy, display, direction, index, rule, sets, nums, memo)
                )
        rules[direction] = tuple(compiled)
    return CompiledPolicy(
        policy=policy,
        key=policy_key(policy),
        display=display,
        selector=policy_selector(
            namespace=policy.namespace,
            selector=spec.selector,
            namespace_selector=spec.namespace_selector,
            service_account_selector=spec.service_account_selector,
        ),
        egress=rules["egress"],
        ingress=rules["ingress"],
        set_nums=tuple(nums),
    )


def _compile_rule(
    policy: Policy,
    display: str,
    direction: Direction,
    index: int,
    rule: Rule,
    sets: SetSource,
    nums: list[int],
    memo: SideMemo | None,
) -> CompiledRule:
    tier = policy.spec.tier
    peer_is_dst = direction == "egress"
    compiled = CompiledRule(
        policy=display,
        tier=tier,
        index=index,
        direction=direction,
        action=rule.action,
        protocol=None if rule.protocol is None else protocol_number(rule.protocol),
        not_protocol=None if rule.not_protocol is None else protocol_number(rule.not_protocol),
        ip_version=rule.ip_version,
        icmp=None if rule.icmp is None else (rule.icmp.type, rule.icmp.code),
        not_icmp=None if rule.not_icmp is None else (rule.not_icmp.type, rule.not_icmp.code),
        source=_compile_side(policy, rule.source, not peer_is_dst, sets, nums, False, memo),
        destination=_compile_side(
            policy,
            rule.destination,
            peer_is_dst,
            sets,
            nums,
            peer_is_dst and rule.action == "Allow",
            memo,
        ),
    )
    own = compiled.own
    if not (
        own.required
        or own.forbidden
        or own.nets
        or own.not_nets
        or own.named_ports
        or own.not_named_ports
    ):
        compiled.alike = True
    return compiled


def _compile_side(
    policy: Policy,
    entity: EntityRule,
    is_peer: bool,
    sets: SetSource,
    nums: list[int],
    allows_egress: bool,
    memo: SideMemo | None,
) -> Side:
    """Compile a source/destination; ``allows_egress`` for an egress Allow destination."""
    selector, not_selector = entity.selector, entity.not_selector
    namespace_selector, accounts = entity.namespace_selector, entity.service_accounts
    scoped = (
        selector is not None
        or not_selector is not None
        or namespace_selector is not None
        or accounts is not None
    )
    domains = entity.domains
    if not (
        scoped or entity.nets or entity.not_nets or entity.ports or entity.not_ports or domains
    ):
        return _ANY  # most sources of egress rules: no set to take, nothing to tell apart
    key: tuple[object, ...] | None = None
    # A side naming domains is rarely repeated whole, and its set is found by the patterns'
    # text anyway: hashing the rule into the memo would cost more than it saves.
    if memo is not None and not domains:
        # A side depends on the policy's namespace only through its selectors, and not even
        # then when it names the namespaces itself.
        key = (
            policy.namespace if scoped and namespace_selector is None else None,
            entity,
            is_peer,
            allows_egress,
        )
        found = memo.get(key)
        if found is not None:
            shared, taken = found
            for num in taken:
                sets.retain(num)
            nums.extend(taken)
            return shared
    start = len(nums)
    # Without selectors the peer is unconstrained whatever the namespace.
    match = (
        peer_match(
            policy_namespace=policy.namespace,
            selector=selector,
            not_selector=not_selector,
            namespace_selector=namespace_selector,
            service_account_names=accounts.names if accounts else (),
            service_account_selector=accounts.selector if accounts else None,
        )
        if scoped
        else _UNCONSTRAINED
    )
    required: list[int] = []
    forbidden: list[int] = []
    if not is_peer:
        # The policed endpoint's own side: its selectors become IP sets as well (see bind).
        if match.selector is not None:
            required.append(sets.selector(match.selector))
        if match.not_selector is not None:
            forbidden.append(sets.selector(match.not_selector))
    else:
        if entity.nets:
            required.append(sets.nets(entity.nets))
        if entity.not_nets:
            forbidden.append(sets.nets(entity.not_nets))
        if match.selector is not None:
            # A selected network set's allowedEgressDomains count only where Calico honours
            # them: the destination of egress Allow rules.
            required.append(sets.selector(match.selector, with_domains=allows_egress))
        if match.not_selector is not None:
            forbidden.append(sets.selector(match.not_selector))
        if domains:
            required.append(sets.domains(domains))
    nums += required
    nums += forbidden
    named = _names(entity.ports)
    not_named = _names(entity.not_ports)
    side = Side(
        nets=entity.nets,
        not_nets=entity.not_nets,
        peer=match,
        ports=_ranges(entity.ports, named),
        named_ports=named,
        not_ports=_ranges(entity.not_ports, not_named),
        not_named_ports=not_named,
        required=tuple(required),
        forbidden=tuple(forbidden),
    )
    if memo is not None and key is not None:
        memo[key] = (side, tuple(nums[start:]))
    return side


def _names(ports: tuple[Port, ...]) -> tuple[str, ...]:
    """The names of the named ports among ``ports``."""
    return tuple(p.name for p in ports if isinstance(p, NamedPort)) if ports else ()


def _ranges(ports: tuple[Port, ...], named: tuple[str, ...]) -> tuple[PortRange, ...]:
    """The numeric ranges of ``ports``, of which ``named`` are the named ports' names.

    The tuple itself when it holds no named port: sides share their rule's tuple.
    """
    if not named:
        return cast(tuple[PortRange, ...], ports)
    return tuple(p for p in ports if isinstance(p, PortRange))


#: What a side naming no selector reaches: any peer.
_UNCONSTRAINED = PeerMatch(selector=None)

#: The side of an empty ``source`` or ``destination``: every address, port and peer.
_ANY = Side(
    nets=(),
    not_nets=(),
    peer=_UNCONSTRAINED,
    ports=(),
    named_ports=(),
    not_ports=(),
    not_named_ports=(),
    required=(),
    forbidden=(),
)


def resolve_named(endpoint: Endpoint, names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """The ``(protocol number, port)`` pairs the endpoint declares under ``names``."""
    if not names:
        return ()
    return tuple(
        (PROTOCOL_NUMBERS[p.protocol.upper()], p.port)
        for p in endpoint.named_ports
        if p.name in names
    )


def bind(
    rule: CompiledRule,
    endpoint: Endpoint,
    addresses: tuple[str | None, str | None],
    sets_of: Callable[[str], frozenset[int]],
) -> Binding | None:
    """Decide a rule's own side for one endpoint; None when it can never match there.

    As in Calico's datapath, the own side's selectors are IP sets too: the endpoint's address
    of the flow's family (``addresses`` holds its first IPv4 and IPv6 address) must be in
    them, which it is when its labels match or when a selected network set's ``nets`` hold it.
    """
    if rule.alike:
        return rule
    own = rule.own
    oks = []
    for ip in addresses:
        ok = True
        if own.required or own.forbidden:
            membership = sets_of(ip) if ip is not None else frozenset()
            ok = all(n in membership for n in own.required) and not any(
                n in membership for n in own.forbidden
            )
        if ok and (own.nets or own.not_nets):
            if ip is None:
                ok = False
            else:
                address = ipaddress.ip_address(ip)
                if own.nets and not any(address in net for net in own.nets):
                    ok = False
                if any(address in net for net in own.not_nets):
                    ok = False
        oks.append(ok)
    if not any(oks):
        return None
    own_named = resolve_named(endpoint, own.named_ports)
    if own.named_ports and not own.ports and not own_named:
        return None  # only named ports, none of which this endpoint has: never matches
    return Bound(
        rule=rule,
        ok4=oks[0],
        ok6=oks[1],
        own_named=own_named,
        own_not_named=resolve_named(endpoint, own.not_named_ports),
    )
