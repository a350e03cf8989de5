"""The rules and chains of a render: policy rules as nft lines, endpoint and tier chains.

:class:`_Renderer` turns the tiers of each endpoint into chains (see the table layout in
:mod:`fqdnpolicy_nftables.render`), caching by identity and by content so alike endpoints
and alike rules are rendered once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from fqdnpolicy.backend_tools import disjoint_cases
from fqdnpolicy.datapath import Direction, EndpointState, PortSpec, RuleState, TierState
from fqdnpolicy.protocols import ICMP, ICMPV6, PROTOCOL_FAMILY
from fqdnpolicy_nftables.exprs import (
    Json,
    Part,
    _addr,
    _icmp,
    _l4proto,
    _nfproto,
    _own_ports,
    _peer_named,
)
from fqdnpolicy_nftables.names import (
    COMMENT_MAX,
    LOG_PREFIX_MAX,
    check_table,
    digest,
    safe_text,
    set_names,
)

__all__ = ["RenderOptions"]


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
