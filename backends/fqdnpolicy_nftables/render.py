"""Pure rendering of a :class:`~fqdnpolicy.datapath.DatapathState` into nftables.

Layout of the table (family ``inet``, one table we own)::

    fwd_egress   base chain, hook forward, priority P:
                 ct state established,related accept; ct state invalid drop;
                 iifname vmap { "<endpoint interface>" : jump eg_<hash(endpoint)> }
    fwd_ingress  base chain, hook forward, priority P + 1: the same with oifname / in_<...>
    eg_<h>/in_<h>  one per endpoint and direction: ``jump`` to each applying tier's first
                 policy chain, in tier order
    p_<hash>     one per (policy's rules in a tier, what follows): the policy's rules, then
                 ``goto`` the tier's next policy chain, or the end-of-tier drop
    fp_reject    only with ``reject=True`` (tests): TCP reset / ICMP admin-prohibited

Why two base chains: a flow between two endpoints must pass the sender's egress AND the
receiver's ingress. ``accept`` ends only the base chain it is issued in, so an Allow in
``fwd_egress`` hands the packet on to ``fwd_ingress``; a drop is final.

Calico semantics map onto verdicts: Allow = ``accept``, Deny = ``drop``, Log = ``log``
(continue), Pass = ``return`` (policy chains of a tier are chained by ``goto``, which does not
push the return stack, so ``return`` lands in the endpoint chain, at its next tier), end of
tier = ``drop`` after the tier's last policy, no policy = no vmap entry (the base chain's
``accept`` policy), every tier passed = fall off the endpoint chain (Calico's profile allow).

Chains are named by a hash of their content, so endpoints with identical rules (replicas)
share them and rendering work is done once per distinct tier.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import math
import operator
import re
from collections.abc import Sequence
from typing import Any, Literal

import attrs

from fqdnpolicy.backend_tools import disjoint_cases, endpoint_interfaces, gc_paused, merge_ranges
from fqdnpolicy.datapath import (
    DatapathState,
    Direction,
    EndpointState,
    PortSpec,
    RuleState,
    SetState,
    TierState,
)
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.protocols import ICMP, ICMPV6, PORTED_PROTOCOLS, PROTOCOL_FAMILY
from fqdnpolicy_nftables.names import (
    COMMENT_MAX,
    LOG_PREFIX_MAX,
    check_table,
    digest,
    named_port_set_name,
    safe_text,
    set_name,
    set_names,
)

__all__ = [
    "ElementOp",
    "RenderOptions",
    "SetMirror",
    "canonical_elements",
    "dumps",
    "duration",
    "mirrors_of",
    "render_delta_ops",
    "render_elements",
    "render_full",
]

Json = dict[str, Any]
Part = tuple[str, Json]  # one match or statement: nft text and its libnftables JSON form

_MEMBER = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")
_REJECT_CHAIN = "fp_reject"


@attrs.frozen
class RenderOptions:
    """How the table is rendered.

    Attributes:
        table: Name of the table we own (family ``inet``).
        priority: Priority of the egress base chain on the forward hook (ingress is one more).
        reject: Deny with a TCP reset / ICMP admin-prohibited instead of a silent drop, so
            blocked probes fail at once. For tests; off by default.
    """

    table: str = attrs.field(default="fqdnpolicy")
    priority: int = 0
    reject: bool = False

    @table.validator
    def _check(self, _: object, value: str) -> None:
        check_table(value)


# --------------------------------------------------------------------------------- matches


def _match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _nfproto(family: int) -> Part:
    name = "ipv4" if family == 4 else "ipv6"
    return f"meta nfproto {name}", _match(_meta("nfproto"), name)


def _l4proto(number: int, negate: bool = False) -> Part:
    op = "!=" if negate else "=="
    return f"meta l4proto {'!= ' if negate else ''}{number}", _match(_meta("l4proto"), number, op)


def _addr(family: int, field: str, name: str, negate: bool) -> Part:
    proto = "ip" if family == 4 else "ip6"
    op = "!=" if negate else "=="
    return (
        f"{proto} {field} {'!= ' if negate else ''}@{name}",
        _match(_payload(proto, field), f"@{name}", op),
    )


def _icmp(protocol: int, spec: tuple[int | None, int | None], negate: bool) -> Part | None:
    kind = "icmpv6" if protocol == ICMPV6 else "icmp"
    icmp_type, code = spec
    op = "!=" if negate else "=="
    neg = "!= " if negate else ""
    if icmp_type is None:
        return None  # matches every packet of the protocol (the loader forbids a lone code)
    if code is None:
        return f"{kind} type {neg}{icmp_type}", _match(_payload(kind, "type"), icmp_type, op)
    left = {"concat": [_payload(kind, "type"), _payload(kind, "code")]}
    return (
        f"{kind} type . {kind} code {neg}{{ {icmp_type} . {code} }}",
        _match(left, {"set": [{"concat": [icmp_type, code]}]}, op),
    )


def _range_text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _range_json(first: int, last: int) -> Any:
    return first if first == last else {"range": [first, last]}


def _own_ports(spec: PortSpec, protocol: int | None, field: str, negate: bool) -> Part | None:
    """Ranges and the endpoint's resolved named ports as one anonymous-set match.

    Returns None when the spec names ranges or own named ports but none can match under the
    rule's protocol (the caller treats a positive spec of that kind as never matching).
    """
    op = "!=" if negate else "=="
    neg = "!= " if negate else ""
    if protocol is not None:
        wanted = list(spec.ranges) + [(p, p) for proto, p in spec.named if proto == protocol]
        merged = merge_ranges(wanted)
        if not merged:
            return None
        left = _payload("th", field)
        if len(merged) == 1:
            first, last = merged[0]
            return (
                f"th {field} {neg}{_range_text(first, last)}",
                _match(left, _range_json(first, last), op),
            )
        text = ", ".join(_range_text(a, b) for a, b in merged)
        return f"th {field} {neg}{{ {text} }}", _match(
            left, {"set": [_range_json(a, b) for a, b in merged]}, op
        )
    # No protocol: pair each port with the protocols that carry one (exactly the engine's
    # rule that only a packet with a port can match a port).
    pairs: dict[int, list[tuple[int, int]]] = {p: list(spec.ranges) for p in PORTED_PROTOCOLS}
    for proto, port in spec.named:
        pairs.setdefault(proto, []).append((port, port))
    elements = [(proto, r) for proto in sorted(pairs) for r in merge_ranges(pairs[proto])]
    if not elements:
        return None
    text = ", ".join(f"{proto} . {_range_text(*r)}" for proto, r in elements)
    left = {"concat": [_meta("l4proto"), _payload("th", field)]}
    right = {"set": [{"concat": [proto, _range_json(*r)]} for proto, r in elements]}
    return f"meta l4proto . th {field} {neg}{{ {text} }}", _match(left, right, op)


def _peer_named(family: int, addr_field: str, port_field: str, name: str, negate: bool) -> Part:
    proto = "ip" if family == 4 else "ip6"
    setname = named_port_set_name(name, family)
    op = "!=" if negate else "=="
    neg = "!= " if negate else ""
    left = {"concat": [_payload(proto, addr_field), _meta("l4proto"), _payload("th", port_field)]}
    return (
        f"{proto} {addr_field} . meta l4proto . th {port_field} {neg}@{setname}",
        _match(left, f"@{setname}", op),
    )


# ---------------------------------------------------------------------------- rule layout


def _needs_family(rule: RuleState) -> bool:
    """Whether the rule tests something family-specific (sets, ICMP, peer named ports)."""
    return bool(
        rule.peer_in
        or rule.peer_not_in
        or rule.icmp
        or rule.not_icmp
        or any(
            s.peer_named
            for s in (rule.dst_ports, rule.not_dst_ports, rule.src_ports, rule.not_src_ports)
        )
    )


def _families(rule: RuleState) -> Sequence[int | None]:
    """Families to render the rule for; None means once for both without a family test."""
    families = set(rule.families)
    if rule.protocol is not None and rule.protocol in PROTOCOL_FAMILY:
        families &= {PROTOCOL_FAMILY[rule.protocol]}
    if not families:
        return []
    if families == {4, 6} and not _needs_family(rule):
        return [None]
    return sorted(families)


def _side_alternatives(
    spec: PortSpec,
    protocol: int | None,
    family: int | None,
    addr_field: str,
    port_field: str,
) -> list[tuple[Part, Part]]:
    """The tests of a port spec as (match, negated match) pairs; the spec is their OR.

    An empty list for a non-empty spec means it can never match.
    """
    pairs: list[tuple[Part, Part]] = []
    if spec.ranges or spec.named:
        own = _own_ports(spec, protocol, port_field, False)
        own_not = _own_ports(spec, protocol, port_field, True)
        if own is not None and own_not is not None:
            pairs.append((own, own_not))
    for name in spec.peer_named:
        assert family is not None  # _needs_family forces per-family rendering
        pairs.append(
            (
                _peer_named(family, addr_field, port_field, name, False),
                _peer_named(family, addr_field, port_field, name, True),
            )
        )
    return pairs


# One rendered rule: nft text, its libnftables expressions, and its comment (None: none; the
# comment is a field of the JSON rule, not an expression). Plain tuples, not attrs classes:
# a full render makes a few hundred thousand of them.
_Line = tuple[str, tuple[Json, ...], str | None]

_NFPROTO: dict[int, Part] = {4: _nfproto(4), 6: _nfproto(6)}

# One line of a rule shape: family, texts and JSON before and after the peer set matches.
_Template = tuple[int | None, tuple[str, ...], tuple[str, ...], tuple[Json, ...], tuple[Json, ...]]


def _shape(rule: RuleState, direction: Direction) -> tuple[Any, ...]:
    """What a rule's lines depend on besides its policy, index, action and set ids.

    Port specs enter by their fields (plain tuples hash and compare in C; the attrs classes'
    methods are Python calls).
    """
    dst, not_dst, src, not_src = (
        rule.dst_ports,
        rule.not_dst_ports,
        rule.src_ports,
        rule.not_src_ports,
    )
    return (
        direction,
        rule.families,
        rule.protocol,
        rule.not_protocol,
        rule.icmp,
        rule.not_icmp,
        len(rule.peer_in),
        len(rule.peer_not_in),
        dst.ranges,
        dst.named,
        dst.peer_named,
        not_dst.ranges,
        not_dst.named,
        not_dst.peer_named,
        src.ranges,
        src.named,
        src.peer_named,
        not_src.ranges,
        not_src.named,
        not_src.peer_named,
    )


def _comment_part(text: str) -> tuple[str, str]:
    safe = safe_text(text, COMMENT_MAX)
    return f' comment "{safe}"', safe


class _Renderer:
    """Per-render caches; the output is a pure function of the state and options.

    Everything is cached twice over: by object identity first (the engine shares TierState
    objects between alike endpoints, so most lookups end there without hashing a rule), then
    by content. Small parts (set matches, port tests) are cached too, so a distinct rule costs
    little more than joining prebuilt pieces; their JSON objects are shared between rules.
    """

    def __init__(self, options: RenderOptions, with_json: bool = True) -> None:
        self.options = options
        self.with_json = with_json
        self.chains: dict[str, tuple[str, list[_Line]]] = {}  # name -> (comment, lines)
        self._rule_ids: dict[tuple[Direction, int], tuple[RuleState, list[_Line]]] = {}
        self._templates: dict[tuple[Any, ...], list[_Template]] = {}
        self._rule_cache: dict[tuple[Any, ...], list[_Line]] = {}
        self._policy_safe: dict[str, bool] = {}
        self._set_names: dict[str, tuple[str, str]] = {}
        self._tier_ids: dict[tuple[Direction, int], tuple[TierState, str | None]] = {}
        self._addr_cache: dict[tuple[int, str, str, bool], Part] = {}
        self._l4_cache: dict[tuple[int, bool], Part] = {}
        self._side_cache: dict[
            tuple[PortSpec, int | None, int | None, str, str], list[tuple[Part, Part]]
        ] = {}
        self._entry_cache: dict[tuple[str | None, str, str], _Line | None] = {}
        deny: Part = (
            (f"goto {_REJECT_CHAIN}", {"goto": {"target": _REJECT_CHAIN}})
            if options.reject
            else ("drop", {"drop": None})
        )
        self.deny = deny

    def statement(self, rule: RuleState, direction: Direction) -> Part:
        if rule.action == "Allow":
            return "accept", {"accept": None}
        if rule.action == "Deny":
            return self.deny
        if rule.action == "Pass":
            return "return", {"return": None}
        prefix = safe_text(f"fp {rule.policy} {direction}[{rule.index}]", LOG_PREFIX_MAX - 1) + " "
        return f'log prefix "{prefix}"', {"log": {"prefix": prefix}}

    def _l4(self, number: int, negate: bool) -> Part:
        key = (number, negate)
        part = self._l4_cache.get(key)
        if part is None:
            part = self._l4_cache[key] = _l4proto(number, negate)
        return part

    def _safe_policy(self, policy: str) -> bool:
        safe = self._policy_safe.get(policy)
        if safe is None:
            safe = self._policy_safe[policy] = safe_text(policy, COMMENT_MAX) == policy
        return safe

    def _addr(self, family: int, field: str, set_id: str, negate: bool) -> Part:
        key = (family, field, set_id, negate)
        part = self._addr_cache.get(key)
        if part is None:
            names = self._set_names.get(set_id)
            if names is None:
                names = self._set_names[set_id] = set_names(set_id)
            name = names[0] if family == 4 else names[1]
            if self.with_json:
                part = _addr(family, field, name, negate)
            else:  # the same text, no JSON (most rules have sets of their own: rarely reused)
                part = (
                    f"{'ip' if family == 4 else 'ip6'} {field} {'!= ' if negate else ''}@{name}",
                    {},
                )
            self._addr_cache[key] = part
        return part

    def _side(
        self, spec: PortSpec, protocol: int | None, family: int | None, addr: str, port: str
    ) -> list[tuple[Part, Part]]:
        # The family only shapes peer named ports (address-and-port sets).
        key = (spec, protocol, family if spec.peer_named else None, addr, port)
        alts = self._side_cache.get(key)
        if alts is None:
            alts = self._side_cache[key] = _side_alternatives(spec, protocol, family, addr, port)
        return alts

    def rule_lines(self, rule: RuleState, direction: Direction) -> list[_Line]:
        # By identity first (states that share RuleState objects), then by content as a
        # plain tuple: hashing a RuleState calls attrs methods on it and its four PortSpecs,
        # which costs about as much as rendering it from its template.
        by_id = self._rule_ids.get((direction, id(rule)))
        if by_id is not None and by_id[0] is rule:
            return by_id[1]
        shape = _shape(rule, direction)
        # Everything the lines depend on (the tier name does not enter them).
        key = (shape, rule.policy, rule.index, rule.action, rule.peer_in, rule.peer_not_in)
        found = self._rule_cache.get(key)
        if found is None:
            found = self._rule_cache[key] = self._render_rule(rule, direction, shape)
        self._rule_ids[(direction, id(rule))] = (rule, found)
        return found

    def _template(
        self, rule: RuleState, direction: Direction, shape: tuple[Any, ...]
    ) -> list[_Template]:
        """The lines of every rule of this rule's shape, their set matches left out.

        A shape is everything but the policy, index, action and which sets the peer must
        (not) be in: a workload of a hundred thousand rules has a handful of shapes.
        """
        found = self._templates.get(shape)
        if found is not None:
            return found
        template: list[_Template] = []
        protocol = rule.protocol
        sides = [
            side
            for side in (
                (rule.dst_ports, "daddr", "dport", False),
                (rule.src_ports, "saddr", "sport", False),
                (rule.not_dst_ports, "daddr", "dport", True),
                (rule.not_src_ports, "saddr", "sport", True),
            )
            if not side[0].empty
        ]
        for family in _families(rule):
            before: list[Part] = []
            if family is not None:
                before.append(_NFPROTO[family])
            if protocol is not None:
                before.append(self._l4(protocol, False))
            if rule.not_protocol is not None:
                before.append(self._l4(rule.not_protocol, True))
            if protocol in (ICMP, ICMPV6):
                if rule.not_icmp is not None and rule.not_icmp[0] is None:
                    continue  # notICMP without a type excludes every ICMP packet: never matches
                for icmp_spec, negate in ((rule.icmp, False), (rule.not_icmp, True)):
                    part = None if icmp_spec is None else _icmp(protocol, icmp_spec, negate)
                    if part is not None:
                        before.append(part)
            # Here come the peer set matches (peer_in, then peer_not_in).
            after: list[Part] = []
            positive: list[list[tuple[Part, Part]]] = []
            never = False
            for spec, addr_field, port_field, negate in sides:
                alts = self._side(spec, protocol, family, addr_field, port_field)
                if negate:
                    after.extend(neg for _, neg in alts)
                elif not alts:
                    never = True
                else:
                    positive.append(alts)
            if never:
                continue
            for case in disjoint_cases(positive):
                matches = after + case
                template.append(
                    (
                        family,
                        tuple(t for t, _ in before),
                        tuple(t for t, _ in matches),
                        tuple(j for _, j in before),
                        tuple(j for _, j in matches),
                    )
                )
        self._templates[shape] = template
        return template

    def _render_rule(
        self, rule: RuleState, direction: Direction, shape: tuple[Any, ...]
    ) -> list[_Line]:
        statement_text, statement_json = self.statement(rule, direction)
        comment = f"{rule.policy} {direction}[{rule.index}] {rule.action}"
        # Only the policy name can hold unsafe characters: check it once per policy.
        if len(comment) > COMMENT_MAX or not self._safe_policy(rule.policy):
            comment = safe_text(comment, COMMENT_MAX)
        comment_text = f' comment "{comment}"'
        tail = f"{statement_text}{comment_text}"
        peer_field = "daddr" if direction == "egress" else "saddr"
        with_json = self.with_json
        lines: list[_Line] = []
        for family, before, after, before_json, after_json in self._template(
            rule, direction, shape
        ):
            if rule.peer_in or rule.peer_not_in:
                assert family is not None  # _needs_family: per-family lines
                sets = [self._addr(family, peer_field, s, False) for s in rule.peer_in]
                sets += [self._addr(family, peer_field, s, True) for s in rule.peer_not_in]
                text = " ".join([*before, *[t for t, _ in sets], *after, tail])
                exprs = (
                    (*before_json, *[j for _, j in sets], *after_json, statement_json)
                    if with_json
                    else ()
                )
            else:
                text = " ".join([*before, *after, tail])
                exprs = (*before_json, *after_json, statement_json) if with_json else ()
            lines.append((text, exprs, comment))
        return lines

    def add_chain(self, prefix: str, comment: str, lines: list[_Line]) -> str:
        name = prefix + digest("\n".join([line[0] for line in lines]))
        if name not in self.chains:
            self.chains[name] = (comment, lines)
        return name

    def tier_entry(self, tier: TierState, direction: Direction) -> str | None:
        """Name of the first policy chain of a tier (None when it has no rules)."""
        # By identity: a state whose endpoints share TierState objects (replicas; the
        # engine's datapath() shares them between alike endpoints) costs one lookup per
        # tier. Not by content: hashing a tier hashes every rule in it, which costs more
        # than rendering the rare equal tier again (its chains come out with the same
        # content-hashed names and are kept once).
        by_id = self._tier_ids.get((direction, id(tier)))
        if by_id is not None and by_id[0] is tier:
            return by_id[1]
        groups: list[list[RuleState]] = []
        for rule in tier.rules:
            if groups and groups[-1][0].policy == rule.policy:
                groups[-1].append(rule)
            else:
                groups.append([rule])
        following: str | None = None
        for group in reversed(groups):
            rule_lines = self.rule_lines
            lines = [line for rule in group for line in rule_lines(rule, direction)]
            if following is not None:
                lines.append((f"goto {following}", ({"goto": {"target": following}},), None))
            elif tier.default_action == "Deny":
                comment_text, comment = _comment_part(f"end of tier {tier.name}")
                lines.append((self.deny[0] + comment_text, (self.deny[1],), comment))
            policy = group[0].policy
            following = self.add_chain("p_", f"{policy} {direction} (tier {tier.name})", lines)
        self._tier_ids[(direction, id(tier))] = (tier, following)
        return following

    def _entry_line(self, entry: str | None, tier: TierState) -> _Line | None:
        """The endpoint chain's line for one tier: jump to its first policy chain."""
        key = (entry, tier.name, tier.default_action)
        if key in self._entry_cache:
            return self._entry_cache[key]
        line: _Line | None = None
        if entry is not None:
            comment_text, comment = _comment_part(f"tier {tier.name}")
            line = (f"jump {entry}{comment_text}", ({"jump": {"target": entry}},), comment)
        elif tier.default_action == "Deny":
            comment_text, comment = _comment_part(f"end of tier {tier.name}")
            line = (self.deny[0] + comment_text, (self.deny[1],), comment)
        self._entry_cache[key] = line
        return line

    def endpoint_chain(self, endpoint: EndpointState, direction: Direction) -> str | None:
        tiers = endpoint.tiers(direction)
        if not tiers:
            return None  # no policy applies: no dispatch entry, the base chain accepts
        lines: list[_Line] = []
        for tier in tiers:
            line = self._entry_line(self.tier_entry(tier, direction), tier)
            if line is not None:
                lines.append(line)
        name = ("eg_" if direction == "egress" else "in_") + digest(endpoint.key)
        self.chains[name] = (f"{direction} of {endpoint.key}", lines)
        return name


# ------------------------------------------------------------------------------- elements

SetKind = Literal["nets", "domains", "selector"]


def _flags(kind: str) -> tuple[str, ...]:
    # Deterministic by kind so that a set never changes type between renders: CIDRs come
    # from nets and network sets (interval); DNS members expire (timeout); selector sets
    # hold endpoint IPs plus network sets' nets and learned domains (both).
    if kind == "nets":
        return ("interval",)
    if kind == "domains":
        return ("timeout",)
    return ("interval", "timeout")


#: Where members a set cannot hold go: None raises InvalidPolicy at the first, a list
#: collects one Problem each while the rendering goes on without them.
Skipped = list[Problem] | None


def _bad_member(member: str, set_id: str, skipped: Skipped) -> None:
    """Report a member no set can hold: raise, or add it to ``skipped``."""
    problem = Problem(
        f"set member {safe_text(member, 60)!r} is not an address or CIDR",
        resource=safe_text(set_id, 40),
        hint="canonical IPv4/IPv6 address or CIDR text (no scope such as %eth0)",
        code="bad-member",
    )
    if skipped is None:
        raise InvalidPolicy(problem)
    skipped.append(problem)


def _check_member(member: str, set_id: str, skipped: Skipped = None) -> bool:
    """Tell whether ``member`` can be rendered; a bad one is reported (see _bad_member)."""
    if _MEMBER.fullmatch(member) is None:
        _bad_member(member, set_id, skipped)
        return False
    return True


def _as_element(member: str) -> str:
    """A member as nft writes it: a full-length prefix as the bare address."""
    return member.removesuffix("/128" if ":" in member else "/32")


def _is_prefix(member: str) -> bool:
    if "/" not in member:
        return False
    length = int(member.rpartition("/")[2])
    return length < (128 if ":" in member else 32)


def canonical_elements(
    members: dict[str, float | None], interval: bool, skipped: Skipped = None
) -> dict[str, float | None]:
    """Members as an nft set can hold them: in an interval set, drop members a CIDR covers.

    nft refuses overlapping intervals; a member inside a CIDR of the same set adds nothing
    (CIDRs come from nets and never expire, so the covered member's expiry cannot matter).
    A member that is no network is reported as ``_bad_member`` does.
    """
    if not interval or not any(_is_prefix(m) for m in members):
        return {_as_element(m): e for m, e in members.items()}
    spans: list[tuple[int, int, str]] = []
    for member in members:
        try:
            net = ipaddress.ip_network(member, strict=False)
        except ValueError:  # address-like characters, but no address ("1.2/3")
            _bad_member(member, "", skipped)
            continue
        spans.append((int(net.network_address) + (net.version << 129), net.num_addresses, member))
    spans.sort(key=lambda s: (s[0], -s[1]))
    kept: dict[str, float | None] = {}
    starts: list[int] = []
    ends: list[int] = []
    for start, size, member in spans:
        i = bisect.bisect_right(starts, start) - 1
        if i >= 0 and start + size <= ends[i]:
            continue  # covered by a kept span (sorted by start, larger first)
        starts.append(start)
        ends.append(start + size)
        kept[_as_element(member)] = members[member]
    return kept


#: Longest element timeout rendered, in ms: the longest TTL DNS can give (2**31 - 1 s, RFC
#: 2181). The kernel refuses timeouts far beyond it, and a cache whose ``max_ttl`` is longer
#: still cannot learn a longer lifetime from an answer.
MAX_TIMEOUT_MS = (2**31 - 1) * 1000


def _timeout_ms(expiry: float | None, now: float) -> int | None:
    """Remaining lifetime in ms (ceil, at most MAX_TIMEOUT_MS), 0 when expired, None for none."""
    if expiry is None:
        return None
    left = expiry - now
    if not left < MAX_TIMEOUT_MS / 1000:  # also NaN and infinity
        return MAX_TIMEOUT_MS if left > 0 else 0
    return max(0, math.ceil(left * 1000))


def duration(ms: int) -> str:
    """A time in nft's own units: ``1d3h46m40s5ms``, every part below its unit's limit.

    nft refuses a single figure of 100,000,000 ms or more (``Error: value too large``), so
    a lifetime over a day cannot be written in ms alone.
    """
    seconds, millis = divmod(ms, 1000)
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    parts = [(days, "d"), (hrs, "h"), (mins, "m"), (secs, "s"), (millis, "ms")]
    return "".join(f"{value}{unit}" for value, unit in parts if value) or "0ms"


def _element(member: str, timeout: int | None, *, refresh: bool = False) -> tuple[str, Any]:
    """An element's text and JSON; ``refresh`` states its expiry too (see render_delta_ops)."""
    if "/" in member:
        addr, _, length = member.partition("/")
        value: Any = {"prefix": {"addr": addr, "len": int(length)}}
    else:
        value = member
    if timeout is None:
        return member, value
    # JSON timeouts are whole seconds: round up so the kernel never forgets early.
    seconds = -(-timeout // 1000)
    text = duration(timeout)
    if not refresh:
        return f"{member} timeout {text}", {"elem": {"val": value, "timeout": seconds}}
    return (
        f"{member} timeout {text} expires {text}",
        {"elem": {"val": value, "timeout": seconds, "expires": seconds}},
    )


def render_elements(
    members: dict[str, float | None], kind: str, now: float, skipped: Skipped = None
) -> tuple[list[str], list[Any]]:
    """Text and JSON elements of one family of a set (expired members left out)."""
    timed = "timeout" in _flags(kind)
    texts: list[str] = []
    datas: list[Any] = []
    members = {m: e for m, e in members.items() if _check_member(m, "", skipped)}
    for member, expiry in canonical_elements(members, "interval" in _flags(kind), skipped).items():
        timeout = _timeout_ms(expiry, now) if timed else None
        if timeout == 0:
            continue
        text, data = _element(member, timeout)
        texts.append(text)
        datas.append(data)
    return texts, datas


# Separator between the elements of a set declaration (one element per line).
_ELEMENT_SEP = ",\n\t\t\t"
# The characters of a member without a prefix length (``_MEMBER`` without its "/" part).
_ADDRESS_BYTES = b"0123456789abcdefABCDEF:."


def _check_members(
    members: dict[str, float | None], joined: str, set_id: str, skipped: Skipped
) -> dict[str, float | None]:
    """Check every member as :func:`_check_member` does, most of them at C speed.

    ``joined`` is the members concatenated. When it holds only address characters (so no
    "/"), each member matches ``_MEMBER`` exactly when its length is 2 to 45; otherwise each
    member is checked on its own, so the first bad one is reported as before. Returns the
    members that can be rendered.
    """
    if joined.isascii() and not joined.encode("ascii").translate(None, _ADDRESS_BYTES):
        lengths = set(map(len, members))
        if min(lengths) >= 2 and max(lengths) <= 45:
            return members
    good = {m: e for m, e in members.items() if _check_member(m, set_id, skipped)}
    return members if len(good) == len(members) else good


class _Timeouts:
    """Per-expiry element suffixes for one render: ``" timeout 1s234ms"`` and JSON seconds.

    DNS members share few distinct expiries (one per answer and second), so each is
    formatted once and every element is then one string concatenation.
    """

    def __init__(self, now: float) -> None:
        self.now = now
        self.text: dict[float | None, str] = {None: ""}
        self.seconds: dict[float, int] = {}
        self.expired: set[float] = set()

    def learn(self, expiries: set[float | None]) -> bool:
        """Format the expiries not seen yet; tell whether any of ``expiries`` has passed."""
        for expiry in expiries.difference(self.text):
            assert expiry is not None  # None is preset
            timeout = _timeout_ms(expiry, self.now)
            assert timeout is not None
            self.text[expiry] = f" timeout {duration(timeout)}"
            # JSON timeouts are whole seconds: round up so the kernel never forgets early.
            self.seconds[expiry] = -(-timeout // 1000)
            if timeout == 0:
                self.expired.add(expiry)
        return not self.expired.isdisjoint(expiries)


def _plain_elements(
    members: dict[str, float | None], timed: bool, timeouts: _Timeouts, with_json: bool
) -> tuple[str, list[Any]]:
    """Elements of one family of a set whose members are plain addresses (no "/").

    The same text and JSON as :func:`render_elements`, built with C-level joins and maps
    over prebuilt per-expiry suffixes instead of one formatted string per element.
    """
    if not members:
        return "", []
    if not timed:
        return _ELEMENT_SEP.join(members), list(members) if with_json else []
    expiries = set(members.values())
    if timeouts.learn(expiries):
        expired = timeouts.expired
        members = {m: e for m, e in members.items() if e not in expired}
        if not members:
            return "", []
    text = _ELEMENT_SEP.join(
        map(operator.add, members, map(timeouts.text.__getitem__, members.values()))
    )
    if not with_json:
        return text, []
    seconds = timeouts.seconds
    if None in expiries:
        datas: list[Any] = [
            m if e is None else {"elem": {"val": m, "timeout": seconds[e]}}
            for m, e in members.items()
        ]
    else:
        datas = [{"elem": {"val": m, "timeout": seconds[e]}} for m, e in members.items()]  # type: ignore[index]
    return text, datas


def _set_elements(
    ipset: SetState, now: float, timeouts: _Timeouts, with_json: bool, skipped: Skipped
) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
    """Checked elements of a set, IPv4 then IPv6, as (text joined by ``_ELEMENT_SEP``, JSON).

    The JSON lists are empty unless ``with_json``.
    """
    members = ipset.members
    if not members:
        return ("", []), ("", [])
    joined = "".join(members)
    checked = _check_members(members, joined, ipset.set_id, skipped)
    if checked is not members:
        members = checked
        joined = "".join(members)
        if not members:
            return ("", []), ("", [])
    if "/" in joined:  # CIDRs (or /32s) to canonicalise: the general path
        v4, v6 = (
            render_elements(
                {m: e for m, e in members.items() if (":" in m) == (family == 6)},
                ipset.kind,
                now,
                skipped,
            )
            for family in (4, 6)
        )
        return (_ELEMENT_SEP.join(v4[0]), v4[1]), (_ELEMENT_SEP.join(v6[0]), v6[1])
    timed = "timeout" in _flags(ipset.kind)
    if ":" in joined:
        four = {m: e for m, e in members.items() if ":" not in m}
        six = {m: e for m, e in members.items() if ":" in m}
        return (
            _plain_elements(four, timed, timeouts, with_json),
            _plain_elements(six, timed, timeouts, with_json),
        )
    return _plain_elements(members, timed, timeouts, with_json), ("", [])


@attrs.frozen
class ElementOp:
    """Net effect of a delta batch on one member: added (with expiry) or removed."""

    set_id: str
    member: str
    added: bool
    expiry: float | None


@attrs.define
class SetMirror:
    """What the engine last said a set holds (the backend keeps one per rendered set).

    Used by :func:`render_delta_ops` to rewrite an interval set whole when CIDRs are involved
    (nft cannot add a member overlapping another one).
    """

    kind: str
    members: dict[str, float | None]


# ----------------------------------------------------------------------------- full render


def _set_decl(
    table: str,
    name: str,
    type_text: str,
    type_json: Any,
    flags: Sequence[str],
    safe_comment: str,
    elements: tuple[str, list[Any]],
) -> tuple[list[str], Json]:
    """A set's declaration: text pieces (newline-terminated lines) and its JSON command.

    ``elements`` is the element text already joined by ``_ELEMENT_SEP`` and the JSON
    elements; ``safe_comment`` is already sanitised. The element text is a piece of its own,
    so that the (large) text is copied once, into the final output.
    """
    flags_line = f"\n\t\tflags {','.join(flags)}" if flags else ""
    element_text, datas = elements
    head = f'\tset {name} {{\n\t\ttype {type_text}{flags_line}\n\t\tcomment "{safe_comment}"'
    if element_text:
        text = [f"{head}\n\t\telements = {{ ", element_text, " }\n\t}\n"]
    else:
        text = [f"{head}\n\t}}\n"]
    data: Json = {"family": "inet", "table": table, "name": name, "type": type_json}
    if flags:
        data["flags"] = list(flags)
    data["comment"] = safe_comment
    if datas:
        data["elem"] = datas
    return text, {"add": {"set": data}}


def _chain_block(name: str, comment: str, lines: Sequence[_Line], head: Sequence[str] = ()) -> str:
    """A chain's text: newline-terminated lines."""
    body = "".join([f"\t\t{b}\n" for b in (*head, *[line[0] for line in lines])])
    return f'\tchain {name} {{\n\t\tcomment "{safe_text(comment, COMMENT_MAX)}"\n{body}\t}}\n'


def _rule_json(table: str, chain: str, line: _Line) -> Json:
    rule: Json = {"family": "inet", "table": table, "chain": chain, "expr": list(line[1])}
    if line[2] is not None:
        rule["comment"] = line[2]
    return {"add": {"rule": rule}}


def render_full(
    state: DatapathState,
    now: float,
    options: RenderOptions,
    *,
    with_json: bool = True,
    skipped: Skipped = None,
) -> tuple[str, Json | None]:
    """Render the whole table (see :func:`_render_full`), with the cyclic GC paused.

    Members no set can hold raise InvalidPolicy, or with a ``skipped`` list are left out and
    reported there.
    """
    with gc_paused():
        return _render_full(state, now, options, with_json, skipped)


def _render_full(
    state: DatapathState, now: float, options: RenderOptions, with_json: bool, skipped: Skipped
) -> tuple[str, Json | None]:
    """Render the whole table: nft text and libnftables JSON, one atomic transaction.

    The transaction creates the table if missing, deletes it, and declares it anew with every
    set (holding its current members, DNS members with their remaining lifetime) and chain:
    rules are replaced and no learned element is lost, because every element the engine
    holds is declared again.

    Raises:
        InvalidPolicy: an interface or set member that cannot be rendered safely, or two
            endpoints sharing an interface.
    """
    table = options.table
    r = _Renderer(options, with_json)
    dispatch: dict[str, list[tuple[str, str]]] = {"egress": [], "ingress": []}
    for endpoint, iface in endpoint_interfaces(state):
        directions: tuple[Direction, Direction] = ("egress", "ingress")
        for direction in directions:
            chain = r.endpoint_chain(endpoint, direction)
            if chain is not None:
                dispatch[direction].append((iface, chain))

    # Pieces of the text, each ending in a newline (the big element texts are pieces of
    # their own: joined once, copied once).
    text: list[str] = [
        f"table inet {table}\n",
        f"delete table inet {table}\n",
        f"table inet {table} {{\n",
    ]
    commands: list[Json] = [
        {"metainfo": {"json_schema_version": 1}},
        {"add": {"table": {"family": "inet", "name": table}}},
        {"delete": {"table": {"family": "inet", "name": table}}},
        {"add": {"table": {"family": "inet", "name": table}}},
    ]
    timeouts = _Timeouts(now)
    for ipset in state.sets:
        flags = _flags(ipset.kind)
        safe = safe_text(f"{ipset.kind} {ipset.definition}", COMMENT_MAX)
        for name, addr_type, elements in zip(
            set_names(ipset.set_id),
            ("ipv4_addr", "ipv6_addr"),
            _set_elements(ipset, now, timeouts, with_json, skipped),
            strict=True,
        ):
            set_text, set_data = _set_decl(table, name, addr_type, addr_type, flags, safe, elements)
            text.extend(set_text)
            commands.append(set_data)
    for name in sorted(state.named_ports):
        for family in (4, 6):
            np_entries = sorted(
                {
                    (addr, proto, port)
                    for addr, proto, port in state.named_ports[name]
                    if (":" in addr) == (family == 6) and _check_member(addr, name, skipped)
                }
            )
            addr_type = "ipv4_addr" if family == 4 else "ipv6_addr"
            set_lines, set_data = _set_decl(
                table,
                named_port_set_name(name, family),
                f"{addr_type} . inet_proto . inet_service",
                [addr_type, "inet_proto", "inet_service"],
                (),
                safe_text(f"named port {name}", COMMENT_MAX),
                (
                    _ELEMENT_SEP.join([f"{a} . {p} . {n}" for a, p, n in np_entries]),
                    [{"concat": [a, p, n]} for a, p, n in np_entries],
                ),
            )
            text.extend(set_lines)
            commands.append(set_data)

    chain_json: list[Json] = []
    rule_json: list[Json] = []
    prio = options.priority
    bases: tuple[tuple[Direction, str, str], ...] = (
        ("egress", "fwd_egress", "iifname"),
        ("ingress", "fwd_ingress", "oifname"),
    )
    for direction, base, key in bases:
        base_lines: list[_Line] = [
            (
                "ct state established,related accept",
                (
                    _match({"ct": {"key": "state"}}, ["established", "related"], "in"),
                    {"accept": None},
                ),
                None,
            ),
            (
                "ct state invalid drop",
                (_match({"ct": {"key": "state"}}, "invalid", "in"), {"drop": None}),
                None,
            ),
        ]
        entries = dispatch[direction]
        if entries:
            vmap_text = ", ".join(f'"{iface}" : jump {chain}' for iface, chain in entries)
            base_lines.append(
                (
                    f"{key} vmap {{ {vmap_text} }}",
                    (
                        {
                            "vmap": {
                                "key": _meta(key),
                                "data": {
                                    "set": [
                                        [iface, {"jump": {"target": c}}] for iface, c in entries
                                    ]
                                },
                            }
                        },
                    ),
                    None,
                )
            )
        priority = prio if direction == "egress" else prio + 1
        head = [f"type filter hook forward priority {priority}; policy accept;"]
        comment = f"fqdnpolicy {direction}: dispatch by {key}"
        text.append(_chain_block(base, comment, base_lines, head))
        chain_json.append(
            {
                "add": {
                    "chain": {
                        "family": "inet",
                        "table": table,
                        "name": base,
                        "type": "filter",
                        "hook": "forward",
                        "prio": priority,
                        "policy": "accept",
                        "comment": comment,
                    }
                }
            }
        )
        if with_json:
            rule_json.extend(_rule_json(table, base, line) for line in base_lines)
    if options.reject:
        r.chains[_REJECT_CHAIN] = (
            "deny (test mode): reset TCP, ICMP admin-prohibited otherwise",
            [
                (
                    "meta l4proto tcp reject with tcp reset",
                    (
                        _match(_meta("l4proto"), "tcp"),
                        {"reject": {"type": "tcp reset"}},
                    ),
                    None,
                ),
                (
                    "reject with icmpx type admin-prohibited",
                    ({"reject": {"type": "icmpx", "expr": "admin-prohibited"}},),
                    None,
                ),
            ],
        )
    for name, (chain_comment, chain_lines) in r.chains.items():
        text.append(_chain_block(name, chain_comment, chain_lines))
        safe = safe_text(chain_comment, COMMENT_MAX)
        chain_json.append(
            {"add": {"chain": {"family": "inet", "table": table, "name": name, "comment": safe}}}
        )
        if with_json:
            rule_json.extend(_rule_json(table, name, line) for line in chain_lines)
    text.append("}\n")
    if not with_json:
        return "".join(text), None
    commands.extend(chain_json)
    commands.extend(rule_json)
    return "".join(text), {"nftables": commands}


# ---------------------------------------------------------------------------- delta render


def render_delta_ops(
    ops: Sequence[ElementOp],
    mirrors: dict[str, SetMirror],
    now: float,
    table: str,
    skipped: Skipped = None,
) -> tuple[str, Json]:
    """Render element changes as one transaction, updating ``mirrors`` to the new members.

    Plain sets get ``add element`` / ``delete element`` batches (a delete is preceded by an
    add of the same element, so deleting an element the kernel already timed out is not an
    error). An interval set touched where CIDRs are involved is flushed and declared again
    from its mirror in the same transaction.

    An added element states its lifetime twice, as ``timeout`` and ``expires``: the kernel
    keeps an existing element's expiry when it is added again with the same ``timeout``, so
    a name answered again with the same TTL would otherwise expire in the kernel while the
    cache still holds it.
    """
    adds: dict[str, list[tuple[str, Any]]] = {}
    deletes: dict[str, list[tuple[str, Any]]] = {}
    rewrite: dict[str, set[int]] = {}
    for op in ops:
        mirror = mirrors[op.set_id]
        if not _check_member(op.member, op.set_id, skipped):
            continue
        family = 6 if ":" in op.member else 4
        flags = _flags(mirror.kind)
        had_prefix = "interval" in flags and any(_is_prefix(m) for m in mirror.members)
        timeout = _timeout_ms(op.expiry, now) if "timeout" in flags else None
        expired = op.added and timeout == 0
        if op.added and not expired:
            mirror.members[op.member] = op.expiry
        else:
            mirror.members.pop(op.member, None)
        name = set_name(op.set_id, family)
        if had_prefix or ("interval" in flags and _is_prefix(op.member)):
            rewrite.setdefault(op.set_id, set()).add(family)
        elif op.added and not expired:
            adds.setdefault(name, []).append(_element(op.member, timeout, refresh=True))
        else:
            deletes.setdefault(name, []).append(_element(op.member, None))
    text: list[str] = []
    commands: list[Json] = [{"metainfo": {"json_schema_version": 1}}]

    def elements(verb: str, name: str, items: list[tuple[str, Any]]) -> None:
        text.append(f"{verb} element inet {table} {name} {{ {', '.join(t for t, _ in items)} }}")
        commands.append(
            {
                verb: {
                    "element": {
                        "family": "inet",
                        "table": table,
                        "name": name,
                        "elem": [d for _, d in items],
                    }
                }
            }
        )

    for set_id, families in sorted(rewrite.items()):
        mirror = mirrors[set_id]
        for family in sorted(families):
            name = set_name(set_id, family)
            text.append(f"flush set inet {table} {name}")
            commands.append({"flush": {"set": {"family": "inet", "table": table, "name": name}}})
            want_v6 = family == 6
            members = {m: e for m, e in mirror.members.items() if (":" in m) == want_v6}
            texts, datas = render_elements(members, mirror.kind, now, skipped)
            if texts:
                elements("add", name, list(zip(texts, datas, strict=True)))
    for name, items in adds.items():
        elements("add", name, items)
    for name, items in deletes.items():
        elements("add", name, items)
        elements("delete", name, items)
    return ("\n".join(text) + "\n") if text else "", {"nftables": commands}


def mirrors_of(state: DatapathState) -> dict[str, SetMirror]:
    """The mirror of every set of a full state."""
    return {s.set_id: SetMirror(s.kind, dict(s.members)) for s in state.sets}


def dumps(data: Json) -> str:
    """Compact JSON text of a rendering's ``data`` (what ``nft -j -f`` reads)."""
    return json.dumps(data, separators=(",", ":"))


def set_states(state: DatapathState) -> dict[str, SetState]:
    """Sets of a state by id."""
    return {s.set_id: s for s in state.sets}
