"""The verdict engine: may this endpoint send TCP to 1.2.3.4:443, and which rule said so?

Data flows one way. Policies, cluster state and DNS answers go in; the engine keeps

* **IP sets** - every rule peer (``nets``, ``selector``/``notSelector``/``namespaceSelector``/
  ``serviceAccounts``, ``domains``, a selected network set's ``allowedEgressDomains``) becomes a
  set with a stable, deterministic id (``sets()``), shared by every rule that names the same
  thing. :class:`~fqdnpolicy.ipsets.AddressIndex` maps an address to the ids of every set
  holding it.
* **Programs** - per endpoint and direction, the tiers, policies and rules that apply, with
  the endpoint's own side of each rule (its labels, its IP, its named ports) already decided,
  interned so that endpoints alike (replicas) share one.

and gives out verdicts (:meth:`PolicyEngine.verdict`), explanations
(:meth:`PolicyEngine.explain`) and, for datapaths, **deltas** (:meth:`PolicyEngine.subscribe`):
set members added and removed with their expiry, sets created and dropped, endpoint programs
changed. Every change (a policy, an endpoint, a network set, a namespace, a DNS answer)
updates only what it touches.

Evaluation follows Calico (see ``docs/semantics.md``): tiers by order, policies by
(order, name), rules in order; Allow and Deny end, Log records and goes on, Pass leaves the
tier; a tier that has a policy applying to the endpoint and no deciding rule ends with its
default action; traffic no policy applies to is allowed.

Speed: a verdict is one dict lookup when the same flow was judged at the current epoch (a
two-generation table of recent flows; the epoch moves only when some address's sets or some
program changed, so DNS refreshes keep judged flows); else one address lookup (the index
caches every address's answer) plus a lookup of (program, the address's sets that the program
names, the flow) in a memo, and only when both miss a walk over the rules that can match
(indexed by the IP set their peer needs and by protocol). With a million addresses, a random
lookup misses the CPU caches; verdicts over uniformly random destinations are bound by that,
not by evaluation. ``benchmarks/bench_engine.py`` and ``fqdnpolicy bench`` measure it.

Thread safety: policy, endpoint and namespace changes take the engine's lock. DNS changes
arrive on the cache's writer thread holding the cache's lock; they queue and are applied by
whoever next holds the engine's lock (verdicts check the queue first), so the two locks are
never taken in opposite orders. :meth:`PolicyEngine.verdict` takes the lock only to compute:
judged flows, and kept verdicts for outside addresses no rule names, are read without it,
under a sequence lock that sends a reader to the locked path while a change is in progress.
"""

from __future__ import annotations

import base64
import collections
import gc
import hashlib
import ipaddress
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, TypeAlias

import attrs

from fqdnpolicy.cluster import Cluster, Endpoint, Namespace
from fqdnpolicy.datapath import (
    DatapathState,
    Delta,
    EndpointChanged,
    IPSetChanged,
    MemberChanged,
    PortSpec,
    RuleAction,
    RuleState,
    SetState,
    TierState,
)
from fqdnpolicy.datapath import EndpointState as DatapathEndpoint
from fqdnpolicy.domains import DomainPattern, PatternIndex
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.ipsets import CANONICAL_IPV4, EMPTY, AddressIndex, IPNetwork
from fqdnpolicy.model import (
    DEFAULT_TIER,
    EntityRule,
    NamedPort,
    NetworkSet,
    Policy,
    PortRange,
    ResourceSet,
    Rule,
    Tier,
)
from fqdnpolicy.scoping import PeerMatch, Subject, peer_match, policy_selector
from fqdnpolicy.selector import Selector

if TYPE_CHECKING:
    from fqdnpolicy.dns import DNSCache, DNSChange

__all__ = [
    "DEFAULT_TIER_ORDER",
    "Direction",
    "EndpointChanged",
    "IPSetChanged",
    "IPSetInfo",
    "MemberChanged",
    "PolicyEngine",
    "Trace",
    "TraceStep",
    "Verdict",
    "protocol_number",
]

Direction: TypeAlias = Literal["egress", "ingress"]
Action: TypeAlias = Literal["Allow", "Deny"]
_DIRECTIONS: tuple[Direction, Direction] = ("egress", "ingress")

#: Order of the implicit ``default`` tier when no Tier resource of that name is loaded
#: (Calico's built-in value; ``kube-admin`` is 1,000 and ``kube-baseline`` 10,000,000).
DEFAULT_TIER_ORDER = 1_000_000.0

PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPV6": 58, "SCTP": 132, "UDPLITE": 136}
# Spellings verdict() sees most, resolved without a call.
_PROTOCOL_CACHE: dict[str | int, int] = {number: number for number in range(1, 256)}
for _name, _number in PROTOCOL_NUMBERS.items():
    _PROTOCOL_CACHE.update({_name: _number, _name.lower(): _number})
_PROTOCOL_CACHE.update({"ICMPv6": 58, "UDPLite": 136})

_MEMO_LIMIT = 1 << 21
# ICMP exists only in IPv4 and ICMPv6 only in IPv6: a rule naming one never matches a flow of
# the other family (Calico renders each into its own family's tables).
_OTHER_FAMILY: dict[int | None, int] = {1: 6, 58: 4}
# Judged flows per generation of the flow table. Rotating frees the old generation inside
# one verdict call (~30 ns per entry), so this bounds that call's delay as well as memory.
_FLOW_LIMIT = 1 << 18
# Distinct named port lists numbered before they are numbered afresh (_ports_id).
_PORT_LISTS_LIMIT = 1 << 16
# Verdicts kept for peers in none of their program's sets (_Program.clear4/6), all programs.
_CLEAR_LIMIT = 1 << 20
_WITH_DOMAINS = " +allowedEgressDomains"
# (protocol, port, source port, family, ICMP type, ICMP code)
_Flow: TypeAlias = tuple[int, int | None, int | None, int, int | None, int | None]
_SET_REF = re.compile(r"set #(\d+)")  # entries per memo before it is dropped and rebuilt


def protocol_number(protocol: str | int) -> int:
    """Return the IP protocol number of a Calico protocol name or number.

    Raises:
        InvalidPolicy: an unknown name or a number outside 1-255.
    """
    if isinstance(protocol, int):
        if 1 <= protocol <= 255:
            return protocol
    else:
        number = PROTOCOL_NUMBERS.get(protocol.upper())
        if number is not None:
            return number
        if protocol.isdigit():
            return protocol_number(int(protocol))
    raise InvalidPolicy(
        Problem(
            f"unknown protocol {protocol!r}",
            hint="TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255",
        )
    )


# ---------------------------------------------------------------------------------------------
# Results


@attrs.frozen(slots=True)
class Verdict:
    """The answer for one flow.

    Attributes:
        action: ``"Allow"`` or ``"Deny"``.
        policy: Display name of the deciding policy (``NetworkPolicy default/x``,
            ``GlobalNetworkPolicy y``); None when a default decided.
        tier: Tier of the deciding rule, or of the end-of-tier drop.
        rule_index: Index of the deciding rule in ``spec.egress`` / ``spec.ingress``.
        direction: The side whose evaluation gave this verdict.
        default: None when a rule decided; ``"end-of-tier"`` (a tier with applying policies
            and no deciding rule dropped it), ``"no-policy"`` (no policy applies in that
            direction: allowed), ``"profile"`` (every tier with applying policies passed:
            allowed, as the Kubernetes profile does).
        logged: ``(policy, rule_index)`` of every Log rule the packet met on the way.
    """

    action: Action
    policy: str | None = None
    tier: str | None = None
    rule_index: int | None = None
    direction: Direction = "egress"
    default: str | None = None
    logged: tuple[tuple[str, int], ...] = ()

    @property
    def allowed(self) -> bool:
        """True when the action is Allow."""
        return self.action == "Allow"

    def __str__(self) -> str:
        """Render as ``Allow by NetworkPolicy default/x egress[0] (tier default)``."""
        if self.default is None:
            return (
                f"{self.action} by {self.policy} {self.direction}[{self.rule_index}] "
                f"(tier {self.tier})"
            )
        where = f" of tier {self.tier}" if self.tier else ""
        return f"{self.action} ({self.direction} {self.default}{where})"


@attrs.frozen
class TraceStep:
    """One line of an explanation.

    Attributes:
        direction: Which side's evaluation this step belongs to.
        tier: The tier.
        policy: The policy's display name (None for a tier-level step).
        rule_index: The rule (None for a policy- or tier-level step).
        outcome: What happened: ``applies``, ``does not apply``, ``matched``, ``no match``,
            ``logged``, ``passed``, ``end of tier``.
        detail: Why, in words (which criterion failed, which rule decided).
    """

    direction: Direction
    tier: str
    policy: str | None
    rule_index: int | None
    outcome: str
    detail: str = ""


@attrs.frozen
class Trace:
    """The full reasoning behind a verdict: every tier, policy and rule considered."""

    flow: str
    verdict: Verdict
    steps: tuple[TraceStep, ...]

    def render(self) -> str:
        """Return the trace as indented, readable text."""
        lines = [f"flow: {self.flow}"]
        last: tuple[str, str] | None = None
        for step in self.steps:
            if (step.direction, step.tier) != last:
                lines.append(f"  {step.direction} tier {step.tier}:")
                last = (step.direction, step.tier)
            if step.policy is None:
                lines.append(f"    {step.outcome}{': ' + step.detail if step.detail else ''}")
            elif step.rule_index is None:
                detail = f" ({step.detail})" if step.detail else ""
                lines.append(f"    {step.policy}: {step.outcome}{detail}")
            else:
                detail = f": {step.detail}" if step.detail else ""
                lines.append(f"      rule {step.rule_index}: {step.outcome}{detail}")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        """Same as :meth:`render`."""
        return self.render()


@attrs.frozen
class IPSetInfo:
    """What an IP set stands for (for renderers and tests).

    Attributes:
        set_id: Stable id: a kind letter, ``:``, and 22 characters of base64url(SHA-224) of
            the canonical definition (at most 24 characters, a valid name in every backend).
        kind: ``nets``, ``domains`` or ``selector``.
        definition: Canonical text of what the set holds.
    """

    set_id: str
    kind: Literal["nets", "domains", "selector"]
    definition: str


# ---------------------------------------------------------------------------------------------
# Internal structures


@attrs.define(eq=False, slots=True)
class _IPSet:
    num: int
    info: IPSetInfo
    key: str  # definition key in PolicyEngine._sets
    refs: int = 0
    # selector sets: whether selected network sets' allowedEgressDomains addresses count
    # (only for the destination selector of egress Allow rules, as in Calico)
    with_domains: bool = False
    nets: tuple[IPNetwork, ...] = ()
    patterns: tuple[DomainPattern, ...] = ()
    selector: Selector | None = None
    # domains sets: member -> latest expiry; and the number of cached names leading to it,
    # kept only where above one (most members: one name). Two flat dicts, not a list per
    # member: 72 bytes less each at 1.8 million members, and a full render copies the first.
    dns_members: dict[str, float] = attrs.field(factory=dict)
    dns_sources: dict[str, int] = attrs.field(factory=dict)
    # domains sets: selector sets that inherit this set's members (network sets' domains)
    parents: dict[int, int] = attrs.field(factory=dict)
    # selector sets: subjects currently matched (endpoint keys and network set keys)
    subjects: set[str] = attrs.field(factory=set)


@attrs.define(eq=False, slots=True)
class _Side:
    """A compiled ``source`` or ``destination``."""

    nets: tuple[IPNetwork, ...]
    not_nets: tuple[IPNetwork, ...]
    peer: PeerMatch
    ports: tuple[PortRange, ...]
    named_ports: tuple[str, ...]
    not_ports: tuple[PortRange, ...]
    not_named_ports: tuple[str, ...]
    # IP sets the peer's address must be in / must not be in (when this side is the peer)
    required: tuple[int, ...]
    forbidden: tuple[int, ...]


@attrs.define(eq=False, slots=True)
class _Rule:
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
    source: _Side
    destination: _Side
    verdict: Verdict | None  # for Allow/Deny
    # When the rule says nothing about the policed endpoint's own side, every endpoint binds
    # it the same way: one shared binding (most rules; saves time and memory).
    shared: _Bound | None = None


@attrs.define(eq=False, slots=True)
class _Bound:
    """A rule bound to one endpoint: its own side decided, only the flow left to check."""

    rule: _Rule
    ok4: bool
    ok6: bool
    # own-side named ports resolved on the endpoint: (protocol number, port)
    own_named: tuple[tuple[int, int], ...]
    own_not_named: tuple[tuple[int, int], ...]
    # What datapath() made of it, kept for the next call: (the RuleState or None when it
    # matches no family, peer-side port names). A bound rule never changes; a changed
    # policy compiles new ones.
    rendered: tuple[RuleState | None, tuple[str, ...]] | None = None


@attrs.define(eq=False, slots=True)
class _Block:
    tier: str
    rules: tuple[_Bound, ...]
    end: Verdict | None  # None: the tier's default action is Pass
    policies: tuple[str, ...]  # display names of the applying policies, in order (for traces)
    # Rule positions by the first IP set their peer must be in, and those that need none: a
    # verdict only looks at rules that can match the peer's sets (a handful, not all), and of
    # the rules that need no set only those of the flow's protocol (built on first use).
    always_positions: tuple[int, ...] = ()
    by_set: dict[int, tuple[int, ...]] = attrs.field(factory=dict)
    always_for: dict[int, tuple[frozenset[int], tuple[_Bound, ...]]] = attrs.field(factory=dict)

    def index(self, direction: Direction) -> None:
        """Fill ``always_positions``/``by_set`` from ``rules``."""
        always: list[int] = []
        by_set: dict[int, list[int]] = {}
        for position, bound in enumerate(self.rules):
            rule = bound.rule
            peer = rule.destination if direction == "egress" else rule.source
            if peer.required:
                by_set.setdefault(peer.required[0], []).append(position)
            else:
                always.append(position)
        self.always_positions = tuple(always)
        self.by_set = {k: tuple(v) for k, v in by_set.items()}

    def _always(self, proto: int) -> tuple[frozenset[int], tuple[_Bound, ...]]:
        found = self.always_for.get(proto)
        if found is None:
            positions = [
                i for i in self.always_positions if self.rules[i].rule.protocol in (None, proto)
            ]
            found = (frozenset(positions), tuple(self.rules[i] for i in positions))
            self.always_for[proto] = found
        return found

    def candidates(self, membership: frozenset[int], proto: int) -> Sequence[_Bound]:
        """The rules, in order, that can match a ``proto`` flow to a peer in ``membership``."""
        positions, bounds = self._always(proto)
        by_set = self.by_set
        extra = [by_set[n] for n in membership if n in by_set]
        if not extra:
            return bounds
        rules = self.rules
        return [rules[i] for i in sorted(positions.union(*extra))]


@attrs.define(eq=False, slots=True)
class _Program:
    num: int
    blocks: tuple[_Block, ...]
    peer_named: bool  # some rule resolves named ports on the peer: memo keys need the peer
    fallback: Verdict
    # Every IP set a rule's peer side names: a verdict depends only on which of these hold the
    # peer's address, so memo keys use that intersection (for most destinations: empty).
    refs: frozenset[int] = frozenset()
    # Verdicts for a peer in none of ``refs`` that is no endpoint (most destinations), per
    # address family, by the protocol as verdict() was given it and then the port: what the
    # lock-free path of verdict() reads. Filled under the lock; bounded in total
    # (_CLEAR_LIMIT over all programs).
    clear4: dict[str | int, dict[int | None, Verdict]] = attrs.field(factory=dict)
    clear6: dict[str | int, dict[int | None, Verdict]] = attrs.field(factory=dict)


@attrs.define(eq=False, slots=True)
class _CompiledPolicy:
    policy: Policy
    key: str
    display: str
    selector: Selector
    egress: tuple[_Rule, ...]
    ingress: tuple[_Rule, ...]
    set_nums: tuple[int, ...]
    # per direction: every rule binds the same way for every endpoint (see _Rule.shared)
    binds_alike: dict[Direction, bool] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        for direction in _DIRECTIONS:
            rules = self.egress if direction == "egress" else self.ingress
            self.binds_alike[direction] = all(rule.shared is not None for rule in rules)


@attrs.define(eq=False, slots=True)
class _EndpointState:
    endpoint: Endpoint
    subject: Subject
    policies: dict[Direction, set[str]]
    programs: dict[Direction, _Program]
    ip4: str | None = None  # the endpoint's first address of each family
    ip6: str | None = None
    egress: _Program | None = None  # programs["egress"], one dict lookup less per verdict
    # Its named ports, as a small id equal for equal port lists: all a peer-side named port
    # rule sees of a peer endpoint, so verdict memo keys use it instead of the endpoint.
    ports_id: int = 0

    def __attrs_post_init__(self) -> None:
        self.ip4 = next((ip for ip in self.endpoint.ips if ":" not in ip), None)
        self.ip6 = next((ip for ip in self.endpoint.ips if ":" in ip), None)


def _policy_key(policy: Policy) -> str:
    return f"{policy.kind}/{policy.namespace or ''}/{policy.name}"


def _netset_key(nset: NetworkSet) -> str:
    return f"{nset.kind}/{nset.metadata.namespace or ''}/{nset.metadata.name}"


def _stable_id(kind: str, definition: str) -> str:
    digest = hashlib.sha224(f"{kind}\0{definition}".encode()).digest()
    return f"{kind[0]}:{base64.urlsafe_b64encode(digest).decode()[:22]}"


def _order_key(order: float | None, name: str) -> tuple[float, str]:
    return (math.inf if order is None else order, name)


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def _in_ranges(port: int | None, ranges: tuple[PortRange, ...]) -> bool:
    if port is None:
        return False
    return any(r.first <= port <= r.last for r in ranges)


def _icmp_matches(
    spec: tuple[int | None, int | None], icmp_type: int | None, code: int | None
) -> bool:
    want_type, want_code = spec
    if want_type is not None and want_type != icmp_type:
        return False
    return want_code is None or want_code == code


class PolicyEngine:
    """Judge flows against policies, cluster state and learned DNS; emit datapath deltas.

    Args:
        resources: What :func:`fqdnpolicy.load` returned.
        cluster: Endpoints and namespaces (:func:`fqdnpolicy.load_cluster`).
        dns: The DNS cache whose names give ``domains`` rules their addresses. The engine
            subscribes to it, so every DNS change reaches the IP sets by itself.
    """

    def __init__(self, resources: ResourceSet, cluster: Cluster, dns: DNSCache) -> None:
        self._lock = threading.RLock()
        self._dns = dns
        self._index = AddressIndex()
        self._answers = self._index.answers  # the same dict for life: one attribute less
        self._sets: dict[str, _IPSet] = {}  # by definition key
        self._sets_by_num: dict[int, _IPSet] = {}
        self._next_set = 0
        self._patterns: PatternIndex[int] = PatternIndex()
        self._name_ips: dict[str, set[str]] = {}  # DNS pairs seen, for names some set matches
        self._scoped_sets: dict[str | None, set[int]] = {}  # selector sets by namespace scope
        self._tiers: dict[str, Tier] = {t.name: t for t in resources.tiers}
        self._policies: dict[str, _CompiledPolicy] = {}
        self._policies_by_ns: dict[str | None, set[str]] = {}
        self._globals_by_label: dict[tuple[str, str], set[str]] = {}
        self._globals_unindexed: set[str] = set()
        self._namespaces: dict[str, Namespace] = {ns.name: ns for ns in cluster.namespaces}
        self._service_accounts = {(sa.namespace, sa.name): sa for sa in cluster.service_accounts}
        self._endpoints: dict[str, _EndpointState] = {}
        self._endpoints_by_ns: dict[str, set[str]] = {}
        self._applied: dict[str, set[str]] = {}  # policy key -> endpoints it applies to
        self._owners: dict[str, str] = {}  # endpoint IP -> endpoint key
        self._netsets: dict[str, tuple[NetworkSet, Subject]] = {}
        self._programs: dict[tuple[object, ...], _Program] = {}
        self._next_program = 0
        self._memo: dict[tuple[object, ...], Verdict] = {}
        # Judged flows, in two generations: when the young one is full it becomes the old one,
        # and a flow found only in the old one moves back. Hot flows stay; cold ones age out.
        self._flows: dict[tuple[object, ...], Verdict] = {}
        self._flows_old: dict[tuple[object, ...], Verdict] = {}
        self._epoch = 0  # part of every judged flow's key; moves when verdicts may change
        self._mutations = 0  # counts policy, endpoint, namespace, tier and network set changes
        self._stamp = (-1, -1)
        self._subscribers: list[Callable[[list[Delta]], None]] = []
        self._pending: list[Delta] = []
        # The first build is a full render, not a delta: no member deltas are made for it.
        self._announce = False
        self._building = True
        # DNS changes arrive on the cache's writer thread, holding the cache's lock. They
        # queue here and are applied by whoever holds the engine lock: taking the engine lock
        # there could deadlock with a policy change that holds it and reads the cache. Changes
        # that arrive while building wait for the end (their handlers are idempotent for pairs
        # the build already saw).
        self._inbox: collections.deque[DNSChange] = collections.deque()
        self._unsubscribe = dns.subscribe(self._on_dns)
        # Lock-free reads (verdict's common call) use a sequence lock: a writer, holding the
        # lock, counts itself in _writers and moves _seq at its start and end, so a reader
        # that saw no writer and the same _seq before and after its reads read one state.
        self._seq = 0
        self._writers = 0
        self._egress_of: dict[str, _Program] = {}  # endpoint key -> its egress program
        self._clear_holders: list[_Program] = []  # programs with kept verdicts in clear4/6
        # Named port lists of endpoints -> small ids (_EndpointState.ports_id); pods of one
        # workload share theirs.
        self._port_lists: dict[tuple[object, ...], int] = {(): 0}
        self._clear_count = 0

        # The build allocates millions of small objects and frees none: generational
        # collections would rescan the growing heap again and again for nothing.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for nset in resources.network_sets:
                self._add_netset(nset)
            for ep in cluster.endpoints:
                self._add_endpoint_state(ep)
            for policy in resources.policies:
                self._install_policy(policy)
            self._learn_all(dns)
            for key in self._endpoints:
                self._rebuild_programs(key, announce=False)
        finally:
            if gc_was_enabled:
                gc.enable()
        with self._lock:
            self._building = False
            self._pending.clear()  # the initial state is the full render, not a delta
            self._announce = True
            self._changed()

    # -- public: verdicts ----------------------------------------------------------------

    def verdict(
        self,
        src: Endpoint | str,
        dst: Endpoint | str,
        protocol: str | int = "TCP",
        port: int | None = None,
        direction: Direction = "egress",
        *,
        src_port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> Verdict:
        """Judge one flow.

        Args:
            src: The sending endpoint (an :class:`Endpoint` or ``"namespace/name"``); with
                ``direction="ingress"`` also an IP address.
            dst: An IP address, an :class:`Endpoint` or ``"namespace/name"``.
            protocol: Protocol name or number.
            port: Destination port (None for protocols without ports).
            direction: ``"egress"`` judges the sender's egress policy and, when the
                destination is a known endpoint, the receiver's ingress policy too (the
                reported verdict is the egress side's if it denies, else the ingress side's
                if it denies, else the egress side's). ``"ingress"`` judges only the
                receiver's ingress policy.
            src_port: Source port, for rules that match on it.
            icmp_type: ICMP type, for ICMP rules.
            icmp_code: ICMP code.

        Raises:
            InvalidPolicy: an unknown endpoint, a bad address or protocol.
        """
        # The epoch in the key: a change makes every judged flow unreachable at once (they age
        # out of the table) instead of clearing a big table inside a DNS answer's latency.
        key = (src, dst, protocol, port, direction, src_port, icmp_type, icmp_code, self._epoch)
        found = self._flows.get(key)
        if found is None:
            found = self._flows_old.get(key)
            if found is not None:
                self._remember(key, found)  # hot again: back into the young generation
        if found is not None and not self._inbox:
            return found
        if (
            direction == "egress"
            and isinstance(src, str)
            and isinstance(dst, str)
            and src_port is None
            and icmp_type is None
            and icmp_code is None
        ):
            # The common call, from an endpoint to an address that is no endpoint and in none
            # of the IP sets the sender's egress rules name: its verdict depends only on the
            # sender's program and the flow, and was judged before. Read without the lock
            # (see _mutating); anything else, or a change meanwhile, takes the path below.
            seq = self._seq
            program = self._egress_of.get(src)
            answer = self._answers.get(dst)
            if (
                program is not None
                and (
                    answer[1] == self._index.generation and answer[0].isdisjoint(program.refs)
                    if answer is not None
                    # Not looked up yet: a member host's own sets and covering prefixes are
                    # read in place (a radix lookup), much cheaper than the locked path.
                    else self._index.host_outside(dst, program.refs)
                )
                and not self._writers
                and not self._inbox
                and dst not in self._owners
            ):
                by_port = (program.clear6 if ":" in dst else program.clear4).get(protocol)
                if by_port is not None:
                    found = by_port.get(port)
                    if found is not None and self._seq == seq and not self._writers:
                        self._remember(key, found)
                        return found
        proto = _PROTOCOL_CACHE.get(protocol)
        if proto is None:
            proto = protocol_number(protocol)
        with self._lock:
            if self._inbox:
                self._changed()
                key = (*key[:-1], self._epoch)
            src_state = self._endpoints.get(src) if src.__class__ is str else None
            result: Verdict | None = None
            if (
                src_state is not None
                and direction == "egress"
                and isinstance(dst, str)
                and src_port is None
                and icmp_type is None
                and icmp_code is None
            ):
                # The common call, an endpoint key to an address seen before: one lookup.
                membership = self._index.answer(dst)
                if membership is not None:
                    result = self._egress(src_state, dst, membership, proto, port)
                else:
                    result = self._judge(src, dst, proto, port, direction, None, None, None)
                    membership = self._index.answer(dst)  # known now if dst is canonical
                program = src_state.egress
                if (
                    membership is not None
                    and program is not None
                    and dst not in self._owners
                    and membership.isdisjoint(program.refs)
                ):
                    self._clear_verdict(program, dst, protocol, port, result)
            if result is None:
                result = self._judge(
                    src, dst, proto, port, direction, src_port, icmp_type, icmp_code
                )
            self._remember(key, result)
            return result

    def _clear_verdict(
        self, program: _Program, dst: str, protocol: str | int, port: int | None, verdict: Verdict
    ) -> None:
        """Keep a verdict for the lock-free path: ``dst`` is in none of ``program.refs``."""
        by_port = (program.clear6 if ":" in dst else program.clear4).get(protocol)
        if by_port is not None and port in by_port:
            return  # (mostly kept already: equal flows give equal verdicts)
        if self._clear_count >= _CLEAR_LIMIT:
            # Bounded in total (a port scan from every endpoint must not grow it): start over.
            for holder in self._clear_holders:
                holder.clear4.clear()
                holder.clear6.clear()
            self._clear_holders.clear()
            self._clear_count = 0
        if not program.clear4 and not program.clear6:
            self._clear_holders.append(program)
        by_protocol = program.clear6 if ":" in dst else program.clear4
        by_port = by_protocol.get(protocol)
        if by_port is None:
            by_port = by_protocol[protocol] = {}
        by_port[port] = verdict
        self._clear_count += 1

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        """Hold the lock and mark a change in progress for lock-free readers."""
        with self._lock:
            self._seq += 1
            self._writers += 1
            try:
                yield
            finally:
                self._writers -= 1
                self._seq += 1

    def _remember(self, key: tuple[object, ...], verdict: Verdict) -> None:
        # Not under the lock: a lost entry when two threads rotate at once only costs a miss.
        flows = self._flows
        if len(flows) >= _FLOW_LIMIT:
            self._flows_old = flows
            self._flows = flows = {}
        flows[key] = verdict

    def verdicts(
        self, flows: Iterable[tuple[Endpoint | str, Endpoint | str, str | int, int | None]]
    ) -> list[Verdict]:
        """Judge many ``(src, dst, protocol, port)`` egress flows; same order out."""
        verdict = self.verdict
        return [verdict(src, dst, proto, port) for src, dst, proto, port in flows]

    def explain(
        self,
        src: Endpoint | str,
        dst: Endpoint | str,
        protocol: str | int = "TCP",
        port: int | None = None,
        direction: Direction = "egress",
        *,
        src_port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> Trace:
        """Return every tier, policy and rule considered for a flow, and why.

        Same arguments as :meth:`verdict`, whose answer the trace ends with.
        """
        with self._lock:
            if self._inbox:
                self._changed()
            steps: list[TraceStep] = []
            proto = protocol_number(protocol)
            result = self._judge(
                src, dst, proto, port, direction, src_port, icmp_type, icmp_code, steps
            )
            dst_text = dst.key if isinstance(dst, Endpoint) else dst
            src_text = src.key if isinstance(src, Endpoint) else src
            flow = f"{src_text} -> {dst_text}:{port if port is not None else '*'}/{protocol}"
            return Trace(flow, result, tuple(steps))

    # -- public: state ------------------------------------------------------------------

    def subscribe(self, callback: Callable[[list[Delta]], None]) -> Callable[[], None]:
        """Call ``callback`` with each batch of deltas, in order; returns an unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def cancel() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return cancel

    def close(self) -> None:
        """Stop following the DNS cache."""
        self._unsubscribe()

    def sets(self) -> list[IPSetInfo]:
        """Return every IP set in use, ordered by id."""
        with self._lock:
            if self._inbox:
                self._changed()
            return sorted((s.info for s in self._sets.values()), key=lambda i: i.set_id)

    def members(self, set_id: str) -> dict[str, float | None]:
        """Return a set's members (addresses and CIDRs) with their DNS expiry, if any."""
        with self._lock:
            if self._inbox:
                self._changed()
            for ipset in self._sets.values():
                if ipset.info.set_id == set_id:
                    return self._set_state(ipset, self._children()).members
            raise KeyError(set_id)

    def datapath(self) -> DatapathState:
        """Return everything a datapath must enforce now (see :mod:`fqdnpolicy.datapath`)."""
        with self._lock:
            if self._inbox:
                self._changed()
            children = self._children()
            sets = [
                self._set_state(ipset, children)
                for ipset in sorted(self._sets.values(), key=lambda s: s.info.set_id)
            ]
            endpoints: list[DatapathEndpoint] = []
            peer_names: set[str] = set()
            # Endpoints alike share programs; they share TierStates too, so renderers can
            # render them once (by identity).
            rendered: dict[int, tuple[TierState, ...]] = {}
            for key in sorted(self._endpoints):
                state = self._endpoints[key]
                tiers = {}
                for d in _DIRECTIONS:
                    program = state.programs[d]
                    found = rendered.get(id(program))
                    if found is None:
                        found = rendered[id(program)] = self._tier_states(program, d, peer_names)
                    tiers[d] = found
                endpoints.append(
                    DatapathEndpoint(
                        key,
                        state.endpoint.interface,
                        state.endpoint.ips,
                        tiers["egress"],
                        tiers["ingress"],
                    )
                )
            found_named: dict[str, list[tuple[str, int, int]]] = {n: [] for n in peer_names}
            for st in self._endpoints.values():
                for p in st.endpoint.named_ports:
                    entries = found_named.get(p.name)
                    if entries is not None:
                        number = PROTOCOL_NUMBERS[p.protocol]
                        entries.extend((ip, number, p.port) for ip in st.endpoint.ips)
            named = {name: tuple(sorted(found_named[name])) for name in sorted(found_named)}
            return DatapathState(tuple(sets), tuple(endpoints), named)

    def _tier_states(
        self, program: _Program, direction: Direction, peer_names: set[str]
    ) -> tuple[TierState, ...]:
        tiers: list[TierState] = []
        for block in program.blocks:
            rules = []
            for bound in block.rules:
                rendered = bound.rendered
                if rendered is None:
                    rendered = bound.rendered = self._rule_state(bound, direction)
                state, names = rendered
                if state is not None:
                    rules.append(state)
                    if names:
                        peer_names.update(names)
            tiers.append(
                TierState(block.tier, tuple(rules), "Deny" if block.end is not None else "Pass")
            )
        return tuple(tiers)

    def _rule_state(
        self, bound: _Bound, direction: Direction
    ) -> tuple[RuleState | None, tuple[str, ...]]:
        """A bound rule for datapaths (None: it matches no family), and its peer port names.

        Bound rules are shared by many programs (every rule that binds alike for all
        endpoints): each becomes one RuleState, shared by identity too.
        """
        rule = bound.rule
        families = tuple(
            f
            for f, ok in ((4, bound.ok4), (6, bound.ok6))
            if ok and rule.ip_version in (None, f) and _OTHER_FAMILY.get(rule.protocol) != f
        )
        if not families:
            return None, ()
        egress = direction == "egress"
        peer = rule.destination if egress else rule.source
        own = rule.source if egress else rule.destination
        state = RuleState(
            policy=rule.policy,
            tier=rule.tier,
            index=rule.index,
            action=rule.action,
            families=families,
            protocol=rule.protocol,
            not_protocol=rule.not_protocol,
            icmp=rule.icmp,
            not_icmp=rule.not_icmp,
            peer_in=tuple(self._sets_by_num[n].info.set_id for n in peer.required),
            peer_not_in=tuple(self._sets_by_num[n].info.set_id for n in peer.forbidden),
            dst_ports=_port_spec(rule.destination, own, bound.own_named, False),
            not_dst_ports=_port_spec(rule.destination, own, bound.own_not_named, True),
            src_ports=_port_spec(rule.source, own, bound.own_named, False),
            not_src_ports=_port_spec(rule.source, own, bound.own_not_named, True),
        )
        return state, (*peer.named_ports, *peer.not_named_ports)

    def set_ids_of(self, address: str) -> set[str]:
        """Return the ids of every set holding ``address``."""
        with self._lock:
            if self._inbox:
                self._changed()
            return {self._sets_by_num[n].info.set_id for n in self._index.lookup(address)}

    def endpoints(self) -> list[Endpoint]:
        """Return the endpoints the engine knows."""
        with self._lock:
            return [state.endpoint for state in self._endpoints.values()]

    def policies_for(self, endpoint: Endpoint | str, direction: Direction) -> list[str]:
        """Return the display names of the policies applying to an endpoint, in order."""
        with self._lock:
            if self._inbox:
                self._changed()
            state = self._state(endpoint)
            compiled = [self._policies[key] for key in state.policies[direction]]
            return [c.display for c in sorted(compiled, key=self._policy_sort_key)]

    # -- public: incremental changes ------------------------------------------------------

    def upsert_policy(self, policy: Policy) -> None:
        """Add a policy or replace the one with the same kind, namespace and name."""
        with self._mutating():
            key = _policy_key(policy)
            old = self._policies.get(key)
            if old is not None and old.policy.namespace is None:
                self._index_global(key, add=False)  # filed under its old selector's label
            # Compile the new version before releasing the old one, so IP sets both use stay
            # (no delete-and-recreate churn in the datapath).
            self._install_policy(policy)
            affected = self._candidates_applying(self._policies[key])
            if old is not None:
                affected |= self._endpoints_with(key)
                for num in old.set_nums:
                    self._release_set(self._sets_by_num[num])
            for ep_key in affected:
                self._rebuild_programs(ep_key)
            self._mutations += 1
            self._changed()

    def remove_policy(self, policy: Policy) -> None:
        """Remove a policy (matched by kind, namespace and name)."""
        with self._mutating():
            for ep_key in self._remove_policy_state(_policy_key(policy)):
                self._rebuild_programs(ep_key)
            self._mutations += 1
            self._changed()

    def upsert_tier(self, tier: Tier) -> None:
        """Add or replace a tier (its order and default action)."""
        with self._mutating():
            self._tiers[tier.name] = tier
            self._programs.clear()  # tier order is part of every program
            self._rebuild_all_programs()
            self._mutations += 1
            self._changed()

    def upsert_endpoint(self, endpoint: Endpoint) -> None:
        """Add an endpoint or replace the one with the same namespace and name."""
        with self._mutating():
            self._check_addresses(endpoint)  # before anything changes: refused, nothing done
            if endpoint.key in self._endpoints:
                self._drop_endpoint_state(endpoint.key)
            self._add_endpoint_state(endpoint)
            self._rebuild_programs(endpoint.key)
            self._mutations += 1
            self._changed()

    def remove_endpoint(self, endpoint: Endpoint | str) -> None:
        """Remove an endpoint (by object or ``namespace/name``)."""
        with self._mutating():
            key = endpoint.key if isinstance(endpoint, Endpoint) else endpoint
            if key in self._endpoints:
                self._drop_endpoint_state(key)
                for direction in _DIRECTIONS:
                    self._pending.append(EndpointChanged(key, direction))
            self._mutations += 1
            self._changed()

    def upsert_network_set(self, nset: NetworkSet) -> None:
        """Add or replace a (Global)NetworkSet."""
        with self._mutating():
            key = _netset_key(nset)
            if key in self._netsets:
                self._drop_netset(key)
            self._add_netset(nset)
            self._mutations += 1
            self._changed()

    def remove_network_set(self, nset: NetworkSet) -> None:
        """Remove a (Global)NetworkSet."""
        with self._mutating():
            key = _netset_key(nset)
            if key in self._netsets:
                self._drop_netset(key)
            self._mutations += 1
            self._changed()

    def upsert_namespace(self, namespace: Namespace) -> None:
        """Add or relabel a namespace; its endpoints and network sets are re-evaluated."""
        with self._mutating():
            self._namespaces[namespace.name] = namespace
            for ep_key in sorted(self._endpoints_by_ns.get(namespace.name, ())):
                endpoint = self._endpoints[ep_key].endpoint
                self._drop_endpoint_state(ep_key)
                self._add_endpoint_state(endpoint)
                self._rebuild_programs(ep_key)
            for ns_key, (nset, _) in list(self._netsets.items()):
                if nset.metadata.namespace == namespace.name:
                    self._drop_netset(ns_key)
                    self._add_netset(nset)
            self._mutations += 1
            self._changed()

    # -- evaluation -----------------------------------------------------------------------

    def _state(self, endpoint: Endpoint | str) -> _EndpointState:
        key = endpoint.key if isinstance(endpoint, Endpoint) else endpoint
        state = self._endpoints.get(key)
        if state is None:
            raise InvalidPolicy(
                Problem(f"unknown endpoint {key!r}", hint="a namespace/name the cluster holds")
            )
        return state

    def _endpoint_of(self, value: Endpoint | str) -> _EndpointState | None:
        """Resolve an endpoint given as object, key or one of its IPs (None: not one)."""
        if isinstance(value, Endpoint):
            return self._state(value)
        if "/" in value:
            return self._state(value)
        owner = self._owners.get(value)
        return self._endpoints[owner] if owner is not None else None

    def _address(self, text: str) -> str:
        """Canonical text of an address; addresses the engine holds are canonical already."""
        # ipaddress parsing costs ~2.5 us, half a verdict: skip it for known addresses.
        if text in self._owners or self._index.knows(text):
            return text
        return _canonical_ip(text)

    def _judge(
        self,
        src: Endpoint | str,
        dst: Endpoint | str,
        proto: int,
        port: int | None,
        direction: Direction,
        src_port: int | None,
        icmp_type: int | None,
        icmp_code: int | None,
        trace: list[TraceStep] | None = None,
    ) -> Verdict:
        dst_state: _EndpointState | None
        if isinstance(dst, str) and "/" not in dst:
            dst_ip = self._address(dst)
            owner = self._owners.get(dst_ip)
            dst_state = self._endpoints[owner] if owner is not None else None
        else:
            dst_state = self._endpoint_of(dst)
            if dst_state is None or not dst_state.endpoint.ips:
                raise InvalidPolicy(Problem(f"endpoint {dst!r} has no IP address"))
            dst_ip = dst_state.endpoint.ips[0]
            if direction == "ingress" and isinstance(src, str) and "/" not in src:
                # From an address to an endpoint: the endpoint's address of the same family.
                wanted = _family(self._address(src))
                dst_ip = next(
                    (ip for ip in dst_state.endpoint.ips if _family(ip) == wanted), dst_ip
                )
        family = _family(dst_ip)

        src_state: _EndpointState | None
        if direction == "ingress" and isinstance(src, str) and "/" not in src:
            src_address = self._address(src)
            src_ip: str | None = src_address
            src_state = self._endpoint_of(src_address)
        else:
            src_state = self._state(src)
            src_ip = src_state.ip6 if family == 6 else src_state.ip4

        flow = (proto, port, src_port, family, icmp_type, icmp_code)
        if direction == "egress":
            assert src_state is not None
            return self._both(src_state, src_ip, dst_state, dst_ip, flow, trace)
        if dst_state is None:
            raise InvalidPolicy(
                Problem(
                    f"ingress needs a destination endpoint; {dst!r} is not one",
                    hint="an endpoint, its namespace/name, or one of its IPs",
                )
            )
        return self._run(dst_state, "ingress", src_ip, src_state, flow, trace)

    def _egress(
        self,
        src_state: _EndpointState,
        dst_ip: str,
        membership: frozenset[int],
        proto: int,
        port: int | None,
    ) -> Verdict:
        """Judge an egress flow from an endpoint to a canonical address (the fast path)."""
        if ":" in dst_ip:
            flow: _Flow = (proto, port, None, 6, None, None)
            src_ip = src_state.ip6
        else:
            flow = (proto, port, None, 4, None, None)
            src_ip = src_state.ip4
        owner = self._owners.get(dst_ip)
        if owner is not None:
            return self._both(src_state, src_ip, self._endpoints[owner], dst_ip, flow, None)
        # Most destinations: the sender's egress policy alone decides.
        program = src_state.egress
        assert program is not None
        return self._memoised(program, "egress", membership, None, flow)

    def _both(
        self,
        src_state: _EndpointState,
        src_ip: str | None,
        dst_state: _EndpointState | None,
        dst_ip: str,
        flow: _Flow,
        trace: list[TraceStep] | None,
    ) -> Verdict:
        """The sender's egress, then (if allowed and the receiver is an endpoint) its ingress."""
        egress = self._run(src_state, "egress", dst_ip, dst_state, flow, trace)
        if not egress.allowed or dst_state is None:
            return egress
        ingress = self._run(dst_state, "ingress", src_ip, src_state, flow, trace)
        return ingress if not ingress.allowed else egress

    def _run(
        self,
        state: _EndpointState,
        direction: Direction,
        peer_ip: str | None,
        peer: _EndpointState | None,
        flow: _Flow,
        trace: list[TraceStep] | None,
    ) -> Verdict:
        program = state.programs[direction]
        membership = self._index.lookup(peer_ip) if peer_ip is not None else EMPTY
        if trace is None:
            return self._memoised(program, direction, membership, peer, flow)
        trace.extend(self._not_applying(state, direction))
        return self._evaluate(program, direction, membership, peer, flow, trace)

    def _memoised(
        self,
        program: _Program,
        direction: Direction,
        membership: frozenset[int],
        peer: _EndpointState | None,
        flow: _Flow,
    ) -> Verdict:
        # Programs hash by identity; of the address's sets only those the program names
        # matter; the peer itself only for peer-side named ports.
        relevant = membership & program.refs if membership else EMPTY
        key: tuple[object, ...] = (program, relevant, flow)
        if program.peer_named and peer is not None:
            key = (program, relevant, flow, peer.ports_id)
        found = self._memo.get(key)
        if found is not None:
            return found
        result = self._evaluate(program, direction, membership, peer, flow, None)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = result
        return result

    def _describe_set(self, ref: re.Match[str]) -> str:
        info = self._sets_by_num[int(ref.group(1))].info
        return f"{info.kind} set {info.set_id} ({info.definition})"

    def _not_applying(self, state: _EndpointState, direction: Direction) -> Iterator[TraceStep]:
        """Trace steps for the policies of the endpoint's scope that do not apply to it."""
        keys = self._policies_by_ns.get(None, set()) | self._policies_by_ns.get(
            state.endpoint.namespace, set()
        )
        for compiled in sorted((self._policies[k] for k in keys), key=self._policy_sort_key):
            if compiled.key in state.policies[direction]:
                continue
            spec = compiled.policy.spec
            if direction.capitalize() not in spec.types:
                why = f"types {list(spec.types)} do not include {direction.capitalize()}"
            else:
                why = f"selector {compiled.selector} does not match the endpoint"
            yield TraceStep(direction, spec.tier, compiled.display, None, "does not apply", why)

    def _evaluate(
        self,
        program: _Program,
        direction: Direction,
        membership: frozenset[int],
        peer: _EndpointState | None,
        flow: _Flow,
        trace: list[TraceStep] | None,
    ) -> Verdict:
        logged: list[tuple[str, int]] = []
        for block in program.blocks:
            passed = False
            current: str | None = None
            # A trace shows every rule; a verdict looks only at rules that can match.
            for bound in (
                block.rules if trace is not None else block.candidates(membership, flow[0])
            ):
                rule = bound.rule
                if trace is not None and rule.policy != current:
                    current = rule.policy
                    trace.append(TraceStep(direction, block.tier, current, None, "applies"))
                why = _mismatch(bound, direction, membership, peer, flow)
                if why is not None:
                    if trace is not None:
                        why = _SET_REF.sub(self._describe_set, why)
                        trace.append(
                            TraceStep(
                                direction, block.tier, rule.policy, rule.index, "no match", why
                            )
                        )
                    continue
                if trace is not None:
                    outcome = {"Log": "logged", "Pass": "passed"}.get(rule.action, "matched")
                    trace.append(
                        TraceStep(
                            direction, block.tier, rule.policy, rule.index, outcome, rule.action
                        )
                    )
                if rule.action == "Log":
                    logged.append((rule.policy, rule.index))
                    continue
                if rule.action == "Pass":
                    passed = True
                    break
                assert rule.verdict is not None
                return attrs.evolve(rule.verdict, logged=tuple(logged)) if logged else rule.verdict
            if trace is not None:
                seen = {b.rule.policy for b in block.rules}
                trace.extend(
                    TraceStep(direction, block.tier, name, None, "applies", "no rule matches here")
                    for name in block.policies
                    if name not in seen
                )
            if passed:
                continue
            if block.end is not None:
                if trace is not None:
                    trace.append(
                        TraceStep(direction, block.tier, None, None, "end of tier", "Deny")
                    )
                return attrs.evolve(block.end, logged=tuple(logged)) if logged else block.end
            if trace is not None:
                trace.append(TraceStep(direction, block.tier, None, None, "end of tier", "Pass"))
        verdict = program.fallback
        if trace is not None and not program.blocks:
            trace.append(TraceStep(direction, "-", None, None, "no policy applies", "Allow"))
        return attrs.evolve(verdict, logged=tuple(logged)) if logged else verdict

    # -- policies ---------------------------------------------------------------------------

    def _policy_sort_key(self, compiled: _CompiledPolicy) -> tuple[float, str]:
        return _order_key(compiled.policy.spec.order, compiled.policy.name)

    def _tier_sort_key(self, name: str) -> tuple[float, str]:
        tier = self._tiers.get(name)
        if tier is None:
            return _order_key(DEFAULT_TIER_ORDER if name == DEFAULT_TIER else None, name)
        return _order_key(tier.spec.order, name)

    def _tier_default(self, name: str) -> str:
        tier = self._tiers.get(name)
        return "Deny" if tier is None else tier.spec.default_action

    def _install_policy(self, policy: Policy) -> None:
        key = _policy_key(policy)
        display = policy.display_name
        spec = policy.spec
        nums: list[int] = []
        rules: dict[Direction, tuple[_Rule, ...]] = {}
        for direction in _DIRECTIONS:
            source = spec.egress if direction == "egress" else spec.ingress
            compiled: list[_Rule] = []
            if direction.capitalize() in spec.types:
                for index, rule in enumerate(source):
                    compiled.append(
                        self._compile_rule(policy, display, direction, index, rule, nums)
                    )
            rules[direction] = tuple(compiled)
        self._policies[key] = _CompiledPolicy(
            policy=policy,
            key=key,
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
        self._policies_by_ns.setdefault(policy.namespace, set()).add(key)
        if policy.namespace is None:
            self._index_global(key, add=True)

    def _index_global(self, key: str, *, add: bool) -> None:
        """File a GlobalNetworkPolicy under a label its selector requires, if any.

        A NetworkPolicy is only ever tested against its namespace's endpoints; a global one
        would be tested against every endpoint. Filed under ``key == value`` when its
        selector requires that label, it is only tested against endpoints carrying it.
        """
        label = _required_label(self._policies[key].selector)
        bucket = (
            self._globals_unindexed
            if label is None
            else self._globals_by_label.setdefault(label, set())
        )
        if add:
            bucket.add(key)
        else:
            bucket.discard(key)

    def _endpoints_with(self, key: str) -> set[str]:
        """The endpoints a policy applies to now (in either direction)."""
        return set(self._applied.get(key, ()))

    def _remove_policy_state(self, key: str) -> set[str]:
        compiled = self._policies.get(key)
        if compiled is None:
            return set()
        if compiled.policy.namespace is None:
            self._index_global(key, add=False)
        del self._policies[key]
        self._policies_by_ns[compiled.policy.namespace].discard(key)
        affected = self._endpoints_with(key)
        for num in compiled.set_nums:
            self._release_set(self._sets_by_num[num])
        return affected

    def _candidates_applying(self, compiled: _CompiledPolicy) -> set[str]:
        namespace = compiled.policy.namespace
        keys = self._endpoints_by_ns.get(namespace, set()) if namespace else self._endpoints
        return {k for k in keys if self._endpoints[k].subject.matches(compiled.selector)}

    def _compile_rule(
        self,
        policy: Policy,
        display: str,
        direction: Direction,
        index: int,
        rule: Rule,
        nums: list[int],
    ) -> _Rule:
        tier = policy.spec.tier
        verdict: Verdict | None = None
        if rule.action in ("Allow", "Deny"):
            verdict = Verdict(
                action="Allow" if rule.action == "Allow" else "Deny",
                policy=display,
                tier=tier,
                rule_index=index,
                direction=direction,
            )
        peer_is_dst = direction == "egress"
        compiled = _Rule(
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
            source=self._compile_side(policy, rule.source, is_peer=not peer_is_dst, nums=nums),
            destination=self._compile_side(
                policy,
                rule.destination,
                is_peer=peer_is_dst,
                nums=nums,
                allows_egress=peer_is_dst and rule.action == "Allow",
            ),
            verdict=verdict,
        )
        own = compiled.source if peer_is_dst else compiled.destination
        if not (
            own.required
            or own.forbidden
            or own.nets
            or own.not_nets
            or own.named_ports
            or own.not_named_ports
        ):
            compiled.shared = _Bound(compiled, True, True, (), ())
        return compiled

    def _compile_side(
        self,
        policy: Policy,
        entity: EntityRule,
        *,
        is_peer: bool,
        nums: list[int],
        allows_egress: bool = False,
    ) -> _Side:
        """Compile a source/destination; ``allows_egress`` for an egress Allow destination."""
        sa = entity.service_accounts
        match = peer_match(
            policy_namespace=policy.namespace,
            selector=entity.selector,
            not_selector=entity.not_selector,
            namespace_selector=entity.namespace_selector,
            service_account_names=sa.names if sa else (),
            service_account_selector=sa.selector if sa else None,
        )
        required: list[int] = []
        forbidden: list[int] = []
        if not is_peer:
            # The policed endpoint's own side: its selectors become IP sets as well (see _bind).
            if match.selector is not None:
                required.append(self._acquire_selector(match.selector, nums))
            if match.not_selector is not None:
                forbidden.append(self._acquire_selector(match.not_selector, nums))
        else:
            if entity.nets:
                required.append(self._acquire_nets(entity.nets, nums))
            if entity.not_nets:
                forbidden.append(self._acquire_nets(entity.not_nets, nums))
            if match.selector is not None:
                # A selected network set's allowedEgressDomains count only where Calico honours
                # them: the destination of egress Allow rules.
                required.append(
                    self._acquire_selector(match.selector, nums, with_domains=allows_egress)
                )
            if match.not_selector is not None:
                forbidden.append(self._acquire_selector(match.not_selector, nums))
            if entity.domains:
                required.append(self._acquire_domains(entity.domains, nums))
        return _Side(
            nets=entity.nets,
            not_nets=entity.not_nets,
            peer=match,
            ports=tuple(p for p in entity.ports if isinstance(p, PortRange)),
            named_ports=tuple(p.name for p in entity.ports if isinstance(p, NamedPort)),
            not_ports=tuple(p for p in entity.not_ports if isinstance(p, PortRange)),
            not_named_ports=tuple(p.name for p in entity.not_ports if isinstance(p, NamedPort)),
            required=tuple(required),
            forbidden=tuple(forbidden),
        )

    # -- IP sets ------------------------------------------------------------------------------

    def _new_set(self, key: str, kind: Literal["nets", "domains", "selector"], text: str) -> _IPSet:
        num = self._next_set
        self._next_set += 1
        ipset = _IPSet(num=num, info=IPSetInfo(_stable_id(kind, text), kind, text), key=key)
        self._sets[key] = ipset
        self._sets_by_num[num] = ipset
        self._pending.append(IPSetChanged(ipset.info.set_id, True))
        return ipset

    def _acquire_nets(self, nets: Sequence[IPNetwork], nums: list[int]) -> int:
        text = ",".join(sorted({str(n) for n in nets}))
        key = f"nets:{text}"
        ipset = self._sets.get(key)
        if ipset is None:
            ipset = self._new_set(key, "nets", text)
            ipset.nets = tuple(nets)
            for net in ipset.nets:
                if self._index.add_prefix(ipset.num, net):
                    self._pending.append(MemberChanged(ipset.info.set_id, str(net), True))
        ipset.refs += 1
        nums.append(ipset.num)
        return ipset.num

    def _acquire_domains(self, patterns: Sequence[DomainPattern], nums: list[int]) -> int:
        text = ",".join(sorted({p.text for p in patterns}))
        key = f"domains:{text}"
        ipset = self._sets.get(key)
        if ipset is None:
            ipset = self._new_set(key, "domains", text)
            ipset.patterns = tuple(patterns)
            names: set[str] = set()
            for pattern in ipset.patterns:
                self._patterns.add(pattern, ipset.num)
                if not self._building:  # the first build matches every name once, at the end
                    names |= self._dns.names_matching(pattern)
            for name in sorted(names):  # each name once, even if several patterns match it
                for ip, expiry in self._dns.expiries(name).items():
                    self._dns_pair_added(name, ip, expiry, only={ipset.num})
        ipset.refs += 1
        nums.append(ipset.num)
        return ipset.num

    def _acquire_selector(
        self, selector: Selector, nums: list[int], *, with_domains: bool = False
    ) -> int:
        text = selector.text + (_WITH_DOMAINS if with_domains else "")
        key = f"selector:{text}"
        ipset = self._sets.get(key)
        if ipset is None:
            ipset = self._new_set(key, "selector", text)
            ipset.selector = selector
            ipset.with_domains = with_domains
            scope = _namespace_scope(selector)
            self._scoped_sets.setdefault(scope, set()).add(ipset.num)
            candidates = self._endpoints_by_ns.get(scope, set()) if scope else self._endpoints
            for ep_key in sorted(candidates):
                if self._endpoints[ep_key].subject.matches(selector):
                    self._selector_add_endpoint(ipset, ep_key)
            for ns_key, (_, subject) in sorted(self._netsets.items()):
                if subject.matches(selector):
                    self._selector_add_netset(ipset, ns_key)
        ipset.refs += 1
        nums.append(ipset.num)
        return ipset.num

    def _release_set(self, ipset: _IPSet) -> None:
        ipset.refs -= 1
        if ipset.refs > 0:
            return
        set_id = ipset.info.set_id
        if ipset.info.kind == "nets":
            for net in ipset.nets:
                if self._index.remove_prefix(ipset.num, net):
                    self._pending.append(MemberChanged(set_id, str(net), False))
        elif ipset.info.kind == "domains":
            for pattern in ipset.patterns:
                self._patterns.discard(pattern, ipset.num)
            for member in list(ipset.dns_members):
                del ipset.dns_members[member]
                self._host_removed(ipset, member)
            ipset.dns_sources.clear()
            self._forget_unmatched_names(ipset.patterns)
        else:
            for subject_key in sorted(ipset.subjects):
                if subject_key in self._endpoints:
                    self._selector_drop_endpoint(ipset, subject_key)
                else:
                    self._selector_drop_netset(ipset, subject_key)
            assert ipset.selector is not None
            self._scoped_sets[_namespace_scope(ipset.selector)].discard(ipset.num)
        del self._sets[ipset.key]
        del self._sets_by_num[ipset.num]
        self._pending.append(IPSetChanged(set_id, False))

    def _forget_unmatched_names(self, patterns: Sequence[DomainPattern]) -> None:
        """Drop the DNS pairs kept for names only the given (released) patterns matched.

        Only names those patterns match in the cache are candidates (one index query each,
        not a scan of every name). A kept name the cache has dropped since the last drain
        goes when its removal, queued in the inbox, is applied.
        """
        candidates: set[str] = set()
        for pattern in patterns:
            candidates |= self._dns.names_matching(pattern)
        name_ips, match = self._name_ips, self._patterns.match
        for name in candidates:
            if name in name_ips and not match(name):
                del name_ips[name]

    def _host_added(self, ipset: _IPSet, host: str, expiry: float | None) -> None:
        if self._index.add_host(ipset.num, host) and self._announce:
            self._pending.append(MemberChanged(ipset.info.set_id, host, True, expiry))

    def _host_removed(self, ipset: _IPSet, host: str) -> None:
        if self._index.remove_host(ipset.num, host) and self._announce:
            self._pending.append(MemberChanged(ipset.info.set_id, host, False))

    def _children(self) -> dict[int, list[_IPSet]]:
        """Domain sets by the selector sets that inherit their members (network sets)."""
        children: dict[int, list[_IPSet]] = {}
        for child in self._sets.values():
            for parent in child.parents:
                children.setdefault(parent, []).append(child)
        return children

    def _set_state(self, ipset: _IPSet, children: dict[int, list[_IPSet]]) -> SetState:
        """A set's members with their expiries, from the set's own sources.

        Domain sets hold what DNS taught them (with expiries); nets sets their CIDRs; selector
        sets their endpoints' addresses and their network sets' CIDRs (never expiring) and the
        DNS-learned members of those network sets' domains (``children``), expiring at the
        latest of them. Built from the sources, not by scanning the address index: a full
        render of a million DNS members would otherwise walk every host once per call.
        """
        info = ipset.info
        members: dict[str, float | None]
        if info.kind == "domains":
            members = dict(ipset.dns_members)
        elif info.kind == "nets":
            members = dict.fromkeys(map(str, ipset.nets))
        else:
            members = {}
            for child in children.get(ipset.num, ()):
                for ip, expiry in child.dns_members.items():
                    known = members.get(ip)
                    members[ip] = expiry if known is None else max(known, expiry)
            # Endpoint addresses and CIDRs never expire, even where DNS also leads.
            for subject in ipset.subjects:
                state = self._endpoints.get(subject)
                if state is not None:
                    members.update(dict.fromkeys(state.endpoint.ips))
                else:
                    members.update(dict.fromkeys(map(str, self._netsets[subject][0].spec.nets)))
        return SetState(info.set_id, info.kind, info.definition, members)

    # -- selector sets: endpoints and network sets --------------------------------------------

    def _selector_add_endpoint(self, ipset: _IPSet, ep_key: str) -> None:
        ipset.subjects.add(ep_key)
        for ip in self._endpoints[ep_key].endpoint.ips:
            self._host_added(ipset, ip, None)

    def _selector_drop_endpoint(self, ipset: _IPSet, ep_key: str) -> None:
        ipset.subjects.discard(ep_key)
        for ip in self._endpoints[ep_key].endpoint.ips:
            self._host_removed(ipset, ip)

    def _selector_add_netset(self, ipset: _IPSet, ns_key: str) -> None:
        nset, _ = self._netsets[ns_key]
        ipset.subjects.add(ns_key)
        for net in nset.spec.nets:
            if self._index.add_prefix(ipset.num, net):
                self._pending.append(MemberChanged(ipset.info.set_id, str(net), True))
        if nset.spec.allowed_egress_domains and ipset.with_domains:
            child = self._sets[self._netset_domains_key(nset)]
            child.parents[ipset.num] = child.parents.get(ipset.num, 0) + 1
            for host, expiry in child.dns_members.items():
                self._host_added(ipset, host, expiry)

    def _selector_drop_netset(self, ipset: _IPSet, ns_key: str) -> None:
        nset, _ = self._netsets[ns_key]
        ipset.subjects.discard(ns_key)
        for net in nset.spec.nets:
            if self._index.remove_prefix(ipset.num, net):
                self._pending.append(MemberChanged(ipset.info.set_id, str(net), False))
        if nset.spec.allowed_egress_domains and ipset.with_domains:
            child = self._sets[self._netset_domains_key(nset)]
            child.parents[ipset.num] -= 1
            if not child.parents[ipset.num]:
                del child.parents[ipset.num]
            for host in child.dns_members:
                self._host_removed(ipset, host)

    @staticmethod
    def _netset_domains_key(nset: NetworkSet) -> str:
        return "domains:" + ",".join(sorted({p.text for p in nset.spec.allowed_egress_domains}))

    def _candidate_sets(self, namespace: str | None) -> list[_IPSet]:
        nums = set(self._scoped_sets.get(None, ()))
        if namespace is not None:
            nums |= self._scoped_sets.get(namespace, set())
        return [self._sets_by_num[n] for n in sorted(nums)]

    def _add_netset(self, nset: NetworkSet) -> None:
        key = _netset_key(nset)
        namespace = nset.metadata.namespace
        subject = Subject(
            labels=nset.metadata.labels,
            namespace=namespace,
            namespace_labels=self._namespace_labels(namespace) if namespace else {},
        )
        self._netsets[key] = (nset, subject)
        if nset.spec.allowed_egress_domains:
            # The network set holds its own domains set; selector sets picking the network
            # set inherit its members. It is not tied to a policy, so it counts as one ref.
            self._acquire_domains(nset.spec.allowed_egress_domains, [])
        for ipset in self._candidate_sets(namespace):
            assert ipset.selector is not None
            if subject.matches(ipset.selector):
                self._selector_add_netset(ipset, key)
        self._rebuild_endpoints_in(nset.spec.nets)

    def _drop_netset(self, key: str) -> None:
        nset, _ = self._netsets[key]
        for ipset in list(self._sets.values()):
            if key in ipset.subjects:
                self._selector_drop_netset(ipset, key)
        del self._netsets[key]
        if nset.spec.allowed_egress_domains:
            self._release_set(self._sets[self._netset_domains_key(nset)])
        self._rebuild_endpoints_in(nset.spec.nets)

    def _rebuild_endpoints_in(self, nets: Sequence[IPNetwork]) -> None:
        """Rebuild the programs of endpoints whose addresses lie in ``nets``.

        Their own-side selector matches can change with a network set (see _bind).
        """
        if self._building or not nets:
            return
        for key, state in self._endpoints.items():
            addresses = [ipaddress.ip_address(ip) for ip in state.endpoint.ips]
            if any(a in net for a in addresses for net in nets if a.version == net.version):
                self._rebuild_programs(key)

    # -- endpoints -----------------------------------------------------------------------------

    def _namespace_labels(self, name: str) -> dict[str, str]:
        namespace = self._namespaces.get(name) or Namespace(name)
        return dict(namespace.effective_labels)

    def _subject_of(self, endpoint: Endpoint) -> Subject:
        account = self._service_accounts.get((endpoint.namespace, endpoint.service_account))
        return Subject.pod(
            endpoint.namespace,
            endpoint.labels,
            namespace_labels=self._namespace_labels(endpoint.namespace),
            service_account=endpoint.service_account,
            service_account_labels=account.labels if account is not None else {},
        )

    def _check_addresses(self, endpoint: Endpoint) -> None:
        key = endpoint.key
        for ip in endpoint.ips:
            owner = self._owners.get(ip)
            if owner is not None and owner != key:
                raise InvalidPolicy(
                    Problem(f"IP {ip} belongs to both {owner} and {key}", resource=key)
                )

    def _add_endpoint_state(self, endpoint: Endpoint) -> None:
        key = endpoint.key
        self._check_addresses(endpoint)
        if endpoint.namespace not in self._namespaces:
            self._namespaces[endpoint.namespace] = Namespace(endpoint.namespace)
        subject = self._subject_of(endpoint)
        state = _EndpointState(endpoint, subject, {"egress": set(), "ingress": set()}, {})
        state.ports_id = self._ports_id(endpoint.named_ports)
        self._endpoints[key] = state
        self._endpoints_by_ns.setdefault(endpoint.namespace, set()).add(key)
        for ip in endpoint.ips:
            self._owners[ip] = key
        for ipset in self._candidate_sets(endpoint.namespace):
            assert ipset.selector is not None
            if subject.matches(ipset.selector):
                self._selector_add_endpoint(ipset, key)

    def _ports_id(self, ports: tuple[object, ...]) -> int:
        found = self._port_lists.get(ports)
        if found is not None:
            return found
        if len(self._port_lists) >= _PORT_LISTS_LIMIT:
            # Bounded under churn of distinct lists: number the live ones afresh. Memoised
            # verdicts carry old numbers, so they go too.
            self._port_lists = {(): 0}
            self._memo.clear()
            for state in self._endpoints.values():
                state.ports_id = self._port_lists.setdefault(
                    state.endpoint.named_ports, len(self._port_lists)
                )
            found = self._port_lists.get(ports)
            if found is not None:
                return found
        found = self._port_lists[ports] = len(self._port_lists)
        return found

    def _drop_endpoint_state(self, key: str) -> None:
        state = self._endpoints[key]
        for ipset in self._candidate_sets(state.endpoint.namespace):
            if key in ipset.subjects:
                self._selector_drop_endpoint(ipset, key)
        for ip in state.endpoint.ips:
            if self._owners.get(ip) == key:
                del self._owners[ip]
        self._endpoints_by_ns[state.endpoint.namespace].discard(key)
        for policy_key in state.policies["egress"] | state.policies["ingress"]:
            self._unapply(policy_key, key)
        del self._endpoints[key]
        self._egress_of.pop(key, None)

    # -- programs ------------------------------------------------------------------------------

    def _rebuild_all_programs(self) -> None:
        for key in self._endpoints:
            self._rebuild_programs(key)

    def _rebuild_programs(self, ep_key: str, *, announce: bool = True) -> None:
        state = self._endpoints.get(ep_key)
        if state is None:
            return
        keys = self._globals_unindexed | self._policies_by_ns.get(state.endpoint.namespace, set())
        by_label = self._globals_by_label
        for label in state.subject.effective_labels.items():
            found = by_label.get(label)
            if found:
                keys = keys | found
        applying = [
            self._policies[k] for k in keys if state.subject.matches(self._policies[k].selector)
        ]
        before = state.policies["egress"] | state.policies["ingress"]
        for direction in _DIRECTIONS:
            relevant = [c for c in applying if direction.capitalize() in c.policy.spec.types]
            names = {c.key for c in relevant}
            if all(c.binds_alike[direction] for c in relevant):
                # Nothing endpoint-specific to bind: endpoints with the same policies share a
                # program without binding rule by rule (compiled policies hash by identity,
                # so a changed policy is a new key).
                alike = ("alike", direction, frozenset(relevant))
                program = self._programs.get(alike) or self._program_for(state, direction, relevant)
                self._programs[alike] = program
            else:
                program = self._program_for(state, direction, relevant)
            if announce and state.programs.get(direction) is not program:
                self._pending.append(EndpointChanged(ep_key, direction))
            state.policies[direction] = names
            state.programs[direction] = program
            if direction == "egress":
                state.egress = program
                self._egress_of[ep_key] = program
        after = state.policies["egress"] | state.policies["ingress"]
        for policy_key in before - after:
            self._unapply(policy_key, ep_key)
        for policy_key in after - before:
            self._applied.setdefault(policy_key, set()).add(ep_key)

    def _unapply(self, policy_key: str, ep_key: str) -> None:
        holders = self._applied[policy_key]
        holders.discard(ep_key)
        if not holders:
            del self._applied[policy_key]

    def _program_for(
        self, state: _EndpointState, direction: Direction, policies: list[_CompiledPolicy]
    ) -> _Program:
        by_tier: dict[str, list[_CompiledPolicy]] = {}
        for compiled in policies:
            by_tier.setdefault(compiled.policy.spec.tier, []).append(compiled)
        blocks: list[_Block] = []
        key_parts: list[object] = [direction]
        peer_named = False
        for tier in sorted(by_tier, key=self._tier_sort_key):
            bound_rules: list[_Bound] = []
            for compiled in sorted(by_tier[tier], key=self._policy_sort_key):
                rules = compiled.egress if direction == "egress" else compiled.ingress
                for rule in rules:
                    bound = _bind(rule, state, direction, self._index)
                    if bound is None:
                        continue
                    bound_rules.append(bound)
                    key_parts.append(
                        (id(rule), bound.ok4, bound.ok6, bound.own_named, bound.own_not_named)
                    )
                    peer_side = rule.destination if direction == "egress" else rule.source
                    if peer_side.named_ports or peer_side.not_named_ports:
                        peer_named = True
            end: Verdict | None = None
            if self._tier_default(tier) == "Deny":
                end = Verdict("Deny", tier=tier, direction=direction, default="end-of-tier")
            key_parts.append(("end", tier, end is None))
            policy_names = tuple(
                c.display for c in sorted(by_tier[tier], key=self._policy_sort_key)
            )
            block = _Block(tier, tuple(bound_rules), end, policy_names)
            block.index(direction)
            blocks.append(block)
        program_key = tuple(key_parts)
        program = self._programs.get(program_key)
        if program is None:
            fallback = Verdict(
                "Allow", direction=direction, default="profile" if blocks else "no-policy"
            )
            refs = frozenset(
                n
                for block in blocks
                for bound in block.rules
                for side in (
                    bound.rule.destination if direction == "egress" else bound.rule.source,
                )
                for n in (*side.required, *side.forbidden)
            )
            program = _Program(self._next_program, tuple(blocks), peer_named, fallback, refs)
            self._next_program += 1
            self._programs[program_key] = program
        return program

    # -- DNS -----------------------------------------------------------------------------------

    def _on_dns(self, changes: list[DNSChange]) -> None:
        self._inbox.extend(changes)
        if self._lock.acquire(blocking=False):
            try:
                self._changed()
            finally:
                self._lock.release()
        # else: the holder applies the queued changes before it lets go (see _changed)

    def _drain_inbox(self) -> None:
        inbox = self._inbox
        if not inbox:
            return
        with self._mutating():  # (the lock is held already: this marks the change)
            while inbox:
                change = inbox.popleft()
                if change.added:
                    self._dns_pair_added(change.name, change.ip, change.expiry)
                else:
                    self._dns_pair_removed(change.name, change.ip)

    def _learn_all(self, dns: DNSCache) -> None:
        """Fill the domain sets from every cached name (the first build).

        One pass over the cache instead of one range scan per pattern: each name goes through
        the pattern index once. This is _dns_pair_added specialised for a build (no deltas,
        every pair new), which matters at a million pairs: it took a third of the build.
        """
        match = self._patterns.match
        name_ips = self._name_ips
        sets = self._sets_by_num
        add_host = self._index.add_host
        for name in dns.names():
            nums = match(name)
            if not nums:
                continue
            pairs = dns.expiries(name)
            if not pairs:
                continue
            name_ips[name] = set(pairs)
            for num in nums:
                ipset = sets[num]
                members = ipset.dns_members
                for ip, expiry in pairs.items():
                    known = members.get(ip)
                    if known is None:
                        members[ip] = expiry
                        add_host(num, ip)
                        for parent in ipset.parents:
                            add_host(parent, ip)
                    else:
                        ipset.dns_sources[ip] = ipset.dns_sources.get(ip, 1) + 1
                        if expiry > known:
                            members[ip] = expiry

    def _dns_pair_added(
        self, name: str, ip: str, expiry: float, only: Set[int] | None = None
    ) -> None:
        nums = self._patterns.match(name) if only is None else only
        if not nums:
            return
        ips = self._name_ips.setdefault(name, set())
        fresh = ip not in ips
        ips.add(ip)
        for num in nums:
            ipset = self._sets_by_num[num]
            known = ipset.dns_members.get(ip)
            if known is None:
                ipset.dns_members[ip] = expiry
                self._host_added(ipset, ip, expiry)
                for parent in ipset.parents:
                    self._host_added(self._sets_by_num[parent], ip, expiry)
                continue
            if fresh or only is not None:
                ipset.dns_sources[ip] = ipset.dns_sources.get(ip, 1) + 1
            if expiry > known:  # a refresh: datapaths with element timeouts extend them
                ipset.dns_members[ip] = expiry
                if not self._announce:
                    continue
                self._pending.append(MemberChanged(ipset.info.set_id, ip, True, expiry))
                for parent in ipset.parents:
                    parent_id = self._sets_by_num[parent].info.set_id
                    self._pending.append(MemberChanged(parent_id, ip, True, expiry))

    def _dns_pair_removed(self, name: str, ip: str) -> None:
        ips = self._name_ips.get(name)
        if ips is None or ip not in ips:
            return
        ips.discard(ip)
        if not ips:
            del self._name_ips[name]
        for num in self._patterns.match(name):
            ipset = self._sets_by_num[num]
            if ip not in ipset.dns_members:
                continue
            left = ipset.dns_sources.pop(ip, 1) - 1
            if left > 1:
                ipset.dns_sources[ip] = left
            elif left <= 0:
                del ipset.dns_members[ip]
                self._host_removed(ipset, ip)
                for parent in ipset.parents:
                    self._host_removed(self._sets_by_num[parent], ip)

    # -- change propagation ---------------------------------------------------------------------

    def _changed(self) -> None:
        """Apply queued DNS changes, forget judged flows, hand deltas to subscribers in order."""
        if self._building:
            return
        self._drain_inbox()
        # Judged flows hold while no answer and no program changed: DNS refreshes (later
        # expiries only) keep them.
        stamp = (self._index.version, self._mutations)
        if stamp != self._stamp:
            self._stamp = stamp
            self._epoch += 1
        if len(self._programs) > 4 * max(1, len(self._endpoints)) + 1024:
            live = {id(p) for s in self._endpoints.values() for p in s.programs.values()}
            self._programs = {k: p for k, p in self._programs.items() if id(p) in live}
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        for callback in list(self._subscribers):
            callback(batch)


def _canonical_ip(text: str) -> str:
    if CANONICAL_IPV4.fullmatch(text):  # already canonical IPv4 (no leading zeros): ~10x cheaper
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidPolicy(
            Problem(f"not an IP address: {text!r}", hint="an IPv4 or IPv6 address")
        ) from None


def _required_label(selector: Selector) -> tuple[str, str] | None:
    """A ``(key, value)`` every label set the selector matches must hold, if one is plain."""
    from fqdnpolicy.selector import And, Compare

    root = selector.root
    for part in root.operands if isinstance(root, And) else (root,):
        if isinstance(part, Compare) and part.op == "==":
            return (part.key, part.value)
    return None


def _namespace_scope(selector: Selector) -> str | None:
    """The namespace a selector set is confined to, when its text says so (else None).

    Selector sets of NetworkPolicy rules without ``namespaceSelector`` begin with
    ``projectcalico.org/namespace == "ns"``; only endpoints of that namespace can match, so
    they are indexed under it and an endpoint change tests only its namespace's sets.
    """
    from fqdnpolicy.scoping import NAMESPACE_LABEL
    from fqdnpolicy.selector import And, Compare

    root = selector.root
    parts = root.operands if isinstance(root, And) else (root,)
    for part in parts:
        if isinstance(part, Compare) and part.key == NAMESPACE_LABEL and part.op == "==":
            return part.value
    return None


def _bind(
    rule: _Rule, state: _EndpointState, direction: Direction, index: AddressIndex
) -> _Bound | None:
    """Decide a rule's own side for one endpoint; None when it can never match there.

    As in Calico's datapath, the own side's selectors are IP sets too: the endpoint's address
    of the flow's family must be in them, which it is when its labels match or when a selected
    network set's ``nets`` hold it.
    """
    if rule.shared is not None:
        return rule.shared
    own = rule.source if direction == "egress" else rule.destination
    oks = []
    for family in (4, 6):
        ip = state.ip4 if family == 4 else state.ip6
        ok = True
        if own.required or own.forbidden:
            membership = index.lookup(ip) if ip is not None else EMPTY
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
    own_named = _resolve_named(state.endpoint, own.named_ports)
    if own.named_ports and not own.ports and not own_named:
        return None  # only named ports, none of which this endpoint has: never matches
    return _Bound(
        rule=rule,
        ok4=oks[0],
        ok6=oks[1],
        own_named=own_named,
        own_not_named=_resolve_named(state.endpoint, own.not_named_ports),
    )


_ANY_PORT = PortSpec()


def _port_spec(
    side: _Side, own: _Side, resolved: tuple[tuple[int, int], ...], negated: bool
) -> PortSpec:
    """A side's ports for datapaths: own-side named ports come resolved, peer-side by name."""
    ports = side.not_ports if negated else side.ports
    if side is own:
        if not ports and not resolved:
            return _ANY_PORT  # most sides: one shared object (a full render makes 400,000)
        return PortSpec(ranges=tuple((r.first, r.last) for r in ports), named=resolved)
    names = side.not_named_ports if negated else side.named_ports
    if not ports and not names:
        return _ANY_PORT
    return PortSpec(ranges=tuple((r.first, r.last) for r in ports), peer_named=names)


def _resolve_named(endpoint: Endpoint, names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    if not names:
        return ()
    return tuple(
        (PROTOCOL_NUMBERS[p.protocol], p.port) for p in endpoint.named_ports if p.name in names
    )


def _port_matches(
    port: int | None,
    proto: int,
    ranges: tuple[PortRange, ...],
    named: tuple[str, ...],
    resolved: tuple[tuple[int, int], ...] | None,
    peer: _EndpointState | None,
) -> bool:
    """Whether ``port`` is in the ranges or is one of the named ports.

    Named ports are resolved on the endpoint owning that side's address: ``resolved`` holds
    them when that endpoint is the policed one (decided when binding), else they are looked up
    on ``peer`` now.
    """
    if port is None:
        return False
    if _in_ranges(port, ranges):
        return True
    if not named:
        return False
    if resolved is not None:
        return (proto, port) in resolved
    if peer is None:
        return False
    return any(
        p.name in named and p.port == port and PROTOCOL_NUMBERS[p.protocol] == proto
        for p in peer.endpoint.named_ports
    )


def _mismatch(
    bound: _Bound,
    direction: Direction,
    membership: frozenset[int],
    peer: _EndpointState | None,
    flow: _Flow,
) -> str | None:
    """Return why a bound rule does not match the flow, or None when it matches."""
    proto, port, src_port, family, icmp_type, icmp_code = flow
    rule = bound.rule
    if rule.protocol is not None and rule.protocol != proto:
        return "protocol differs"
    if _OTHER_FAMILY.get(rule.protocol) == family:
        return "ICMP of the other address family"
    if rule.not_protocol is not None and rule.not_protocol == proto:
        return "protocol excluded by notProtocol"
    if rule.ip_version is not None and rule.ip_version != family:
        return f"ipVersion {rule.ip_version}"
    if not (bound.ok4 if family == 4 else bound.ok6):
        side = "source" if direction == "egress" else "destination"
        return f"{side} nets do not hold the endpoint's IPv{family} address"
    if rule.icmp is not None and not _icmp_matches(rule.icmp, icmp_type, icmp_code):
        return "ICMP type/code differs"
    if rule.not_icmp is not None and _icmp_matches(rule.not_icmp, icmp_type, icmp_code):
        return "ICMP type/code excluded by notICMP"
    peer_side = rule.destination if direction == "egress" else rule.source
    peer_name = "destination" if direction == "egress" else "source"
    for num in peer_side.required:
        if num not in membership:
            return f"{peer_name} address not in set #{num}"
    for num in peer_side.forbidden:
        if num in membership:
            return f"{peer_name} address in excluded set #{num}"
    egress = direction == "egress"
    dst = rule.destination
    if dst.ports or dst.named_ports:
        own = None if egress else bound.own_named
        if not _port_matches(port, proto, dst.ports, dst.named_ports, own, peer):
            return "destination port not in ports"
    if dst.not_ports or dst.not_named_ports:
        if port is None:
            return "destination port unknown: notPorts cannot hold"
        own = None if egress else bound.own_not_named
        if _port_matches(port, proto, dst.not_ports, dst.not_named_ports, own, peer):
            return "destination port in notPorts"
    src = rule.source
    if src.ports or src.named_ports:
        own = bound.own_named if egress else None
        if not _port_matches(src_port, proto, src.ports, src.named_ports, own, peer):
            return "source port not in ports"
    if src.not_ports or src.not_named_ports:
        if src_port is None:
            return "source port unknown: notPorts cannot hold"
        own = bound.own_not_named if egress else None
        if _port_matches(src_port, proto, src.not_ports, src.not_named_ports, own, peer):
            return "source port in notPorts"
    return None
