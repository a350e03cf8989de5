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
import contextlib
import gc
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import attrs

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
from fqdnpolicy_nftables.names import (
    COMMENT_MAX,
    LOG_PREFIX_MAX,
    check_interface,
    check_table,
    digest,
    named_port_set_name,
    safe_text,
    set_name,
)

__all__ = [
    "ElementOp",
    "RenderOptions",
    "SetMirror",
    "canonical_elements",
    "dumps",
    "mirrors_of",
    "render_delta_ops",
    "render_elements",
    "render_full",
]

Json = dict[str, Any]
Part = tuple[str, Json]  # one match or statement: nft text and its libnftables JSON form

# Transport protocols that carry ports (TCP, UDP, SCTP, UDPLite): a port rule without a
# protocol is matched on these only, as the engine matches a port only when there is one.
_PORT_PROTOCOLS = (6, 17, 132, 136)
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
    kind = "icmpv6" if protocol == 58 else "icmp"
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


def _merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, non-adjacent ranges (nft refuses overlapping intervals)."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


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
        merged = _merge_ranges(wanted)
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
    pairs: dict[int, list[tuple[int, int]]] = {p: list(spec.ranges) for p in _PORT_PROTOCOLS}
    for proto, port in spec.named:
        pairs.setdefault(proto, []).append((port, port))
    elements = [(proto, r) for proto in sorted(pairs) for r in _merge_ranges(pairs[proto])]
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
    if rule.protocol == 1:
        families &= {4}  # ICMP exists in IPv4 only (IPv6 carries ICMPv6, 58)
    elif rule.protocol == 58:
        families &= {6}
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


def _combinations(alternatives: Sequence[list[tuple[Part, Part]]]) -> list[list[Part]]:
    """Disjoint cases covering 'every spec matches one of its alternatives'.

    Case for choices (i, j, ...): spec 1 matches alternative i and none before it, spec 2
    matches j and none before it, ... Exactly one case matches a packet, so a Log rule logs
    once even when its ports are an OR of several tests.
    """
    cases: list[list[Part]] = [[]]
    for alts in alternatives:
        cases = [
            case + [neg for _, neg in alts[:i]] + [pos]
            for case in cases
            for i, (pos, _) in enumerate(alts)
        ]
    return cases


@attrs.frozen
class _Line:
    text: str
    expr: tuple[Json, ...]


def _comment_part(text: str) -> tuple[str, str]:
    safe = safe_text(text, COMMENT_MAX)
    return f' comment "{safe}"', safe


class _Renderer:
    """Per-render caches; the output is a pure function of the state and options."""

    def __init__(self, options: RenderOptions) -> None:
        self.options = options
        self.chains: dict[str, tuple[str, list[_Line]]] = {}  # name -> (comment, lines)
        self._rule_cache: dict[tuple[Direction, RuleState], list[_Line]] = {}
        self._tier_cache: dict[tuple[Direction, TierState], str | None] = {}
        self._tier_ids: dict[tuple[Direction, int], tuple[TierState, str | None]] = {}
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

    def rule_lines(self, rule: RuleState, direction: Direction) -> list[_Line]:
        key = (direction, rule)
        found = self._rule_cache.get(key)
        if found is not None:
            return found
        lines: list[_Line] = []
        egress = direction == "egress"
        peer_field = "daddr" if egress else "saddr"
        statement = self.statement(rule, direction)
        comment_text, comment = _comment_part(
            f"{rule.policy} {direction}[{rule.index}] {rule.action}"
        )
        for family in _families(rule):
            parts: list[Part] = []
            if family is not None:
                parts.append(_nfproto(family))
            if rule.protocol is not None:
                parts.append(_l4proto(rule.protocol))
            if rule.not_protocol is not None:
                parts.append(_l4proto(rule.not_protocol, negate=True))
            if rule.protocol in (1, 58):
                if rule.not_icmp is not None and rule.not_icmp[0] is None:
                    continue  # notICMP without a type excludes every ICMP packet: never matches
                for icmp_spec, negate in ((rule.icmp, False), (rule.not_icmp, True)):
                    part = None if icmp_spec is None else _icmp(rule.protocol, icmp_spec, negate)
                    if part is not None:
                        parts.append(part)
            for set_id in rule.peer_in:
                assert family is not None
                parts.append(_addr(family, peer_field, set_name(set_id, family), False))
            for set_id in rule.peer_not_in:
                assert family is not None
                parts.append(_addr(family, peer_field, set_name(set_id, family), True))
            positive: list[list[tuple[Part, Part]]] = []
            never = False
            for spec, addr_field, port_field, negate in (
                (rule.dst_ports, "daddr", "dport", False),
                (rule.src_ports, "saddr", "sport", False),
                (rule.not_dst_ports, "daddr", "dport", True),
                (rule.not_src_ports, "saddr", "sport", True),
            ):
                if spec.empty:
                    continue
                alts = _side_alternatives(spec, rule.protocol, family, addr_field, port_field)
                if negate:
                    parts.extend(neg for _, neg in alts)
                elif not alts:
                    never = True
                else:
                    positive.append(alts)
            if never:
                continue
            for case in _combinations(positive):
                matches = parts + case
                text = " ".join([*(t for t, _ in matches), statement[0]]) + comment_text
                lines.append(_Line(text, (*(j for _, j in matches), statement[1])))
        # Comments ride on each rule's JSON as its own field (see _rule_json).
        lines = [attrs.evolve(line, expr=(*line.expr, {"comment": comment})) for line in lines]
        self._rule_cache[key] = lines
        return lines

    def add_chain(self, prefix: str, comment: str, lines: list[_Line]) -> str:
        name = prefix + digest("\n".join(line.text for line in lines))
        if name not in self.chains:
            self.chains[name] = (comment, lines)
        return name

    def tier_entry(self, tier: TierState, direction: Direction) -> str | None:
        """Name of the first policy chain of a tier (None when it has no rules)."""
        # Identity first: a state whose endpoints share TierState objects (replicas) costs
        # one lookup per tier; content next (hashing every rule) for states built per
        # endpoint.
        by_id = self._tier_ids.get((direction, id(tier)))
        if by_id is not None and by_id[0] is tier:
            return by_id[1]
        key = (direction, tier)
        if key in self._tier_cache:
            found = self._tier_cache[key]
            self._tier_ids[(direction, id(tier))] = (tier, found)
            return found
        groups: list[list[RuleState]] = []
        for rule in tier.rules:
            if groups and groups[-1][0].policy == rule.policy:
                groups[-1].append(rule)
            else:
                groups.append([rule])
        following: str | None = None
        for index, group in enumerate(reversed(groups)):
            lines = [line for rule in group for line in self.rule_lines(rule, direction)]
            if following is not None:
                lines.append(_Line(f"goto {following}", ({"goto": {"target": following}},)))
            elif tier.default_action == "Deny":
                comment_text, comment = _comment_part(f"end of tier {tier.name}")
                lines.append(
                    _Line(self.deny[0] + comment_text, (self.deny[1], {"comment": comment}))
                )
            del index
            policy = group[0].policy
            following = self.add_chain("p_", f"{policy} {direction} (tier {tier.name})", lines)
        self._tier_cache[key] = following
        self._tier_ids[(direction, id(tier))] = (tier, following)
        return following

    def endpoint_chain(self, endpoint: EndpointState, direction: Direction) -> str | None:
        tiers = endpoint.tiers(direction)
        if not tiers:
            return None  # no policy applies: no dispatch entry, the base chain accepts
        lines: list[_Line] = []
        for tier in tiers:
            entry = self.tier_entry(tier, direction)
            comment_text, comment = _comment_part(f"tier {tier.name}")
            if entry is not None:
                lines.append(
                    _Line(
                        f"jump {entry}{comment_text}",
                        ({"jump": {"target": entry}}, {"comment": comment}),
                    )
                )
            elif tier.default_action == "Deny":
                lines.append(
                    _Line(
                        self.deny[0] + _comment_part(f"end of tier {tier.name}")[0],
                        (self.deny[1], {"comment": safe_text(f"end of tier {tier.name}", 120)}),
                    )
                )
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


def _check_member(member: str, set_id: str) -> None:
    if _MEMBER.fullmatch(member) is None:
        raise InvalidPolicy(
            Problem(
                f"set member {safe_text(member, 60)!r} is not an address or CIDR",
                resource=safe_text(set_id, 40),
                hint="canonical IPv4/IPv6 address or CIDR text",
                code="bad-member",
            )
        )


def _is_prefix(member: str) -> bool:
    if "/" not in member:
        return False
    length = int(member.rpartition("/")[2])
    return length < (128 if ":" in member else 32)


def canonical_elements(members: dict[str, float | None], interval: bool) -> dict[str, float | None]:
    """Members as an nft set can hold them: in an interval set, drop members a CIDR covers.

    nft refuses overlapping intervals; a member inside a CIDR of the same set adds nothing
    (CIDRs come from nets and never expire, so the covered member's expiry cannot matter).
    """
    if not interval or not any(_is_prefix(m) for m in members):
        return {m.removesuffix("/32").removesuffix("/128"): e for m, e in members.items()}
    spans: list[tuple[int, int, str]] = []
    for member in members:
        net = ipaddress.ip_network(member, strict=False)
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
        kept[member.removesuffix("/32").removesuffix("/128")] = members[member]
    return kept


def _timeout_ms(expiry: float | None, now: float) -> int | None:
    """Remaining lifetime in ms (ceil), 0 when already expired, None for no expiry."""
    if expiry is None:
        return None
    return max(0, math.ceil((expiry - now) * 1000))


def _element(member: str, timeout: int | None) -> tuple[str, Any]:
    if "/" in member:
        addr, _, length = member.partition("/")
        value: Any = {"prefix": {"addr": addr, "len": int(length)}}
    else:
        value = member
    if timeout is None:
        return member, value
    # JSON timeouts are whole seconds: round up so the kernel never forgets early.
    return f"{member} timeout {timeout}ms", {"elem": {"val": value, "timeout": -(-timeout // 1000)}}


def render_elements(
    members: dict[str, float | None], kind: str, now: float
) -> tuple[list[str], list[Any]]:
    """Text and JSON elements of one family of a set (expired members left out)."""
    timed = "timeout" in _flags(kind)
    texts: list[str] = []
    datas: list[Any] = []
    for member, expiry in canonical_elements(members, "interval" in _flags(kind)).items():
        timeout = _timeout_ms(expiry, now) if timed else None
        if timeout == 0:
            continue
        text, data = _element(member, timeout)
        texts.append(text)
        datas.append(data)
    return texts, datas


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
    comment: str,
    elements: tuple[list[str], list[Any]],
) -> tuple[list[str], Json]:
    lines = [f"\tset {name} {{", f"\t\ttype {type_text}"]
    if flags:
        lines.append(f"\t\tflags {','.join(flags)}")
    safe = safe_text(comment, COMMENT_MAX)
    lines.append(f'\t\tcomment "{safe}"')
    texts, datas = elements
    if texts:
        lines.append("\t\telements = { " + ",\n\t\t\t".join(texts) + " }")
    lines.append("\t}")
    data: Json = {"family": "inet", "table": table, "name": name, "type": type_json}
    if flags:
        data["flags"] = list(flags)
    data["comment"] = safe
    if datas:
        data["elem"] = datas
    return lines, {"add": {"set": data}}


def _chain_block(
    name: str, comment: str, lines: Sequence[_Line], head: Sequence[str] = ()
) -> list[str]:
    out = [f"\tchain {name} {{", f'\t\tcomment "{safe_text(comment, COMMENT_MAX)}"']
    out.extend(f"\t\t{h}" for h in head)
    out.extend(f"\t\t{line.text}" for line in lines)
    out.append("\t}")
    return out


def _rule_json(table: str, chain: str, line: _Line) -> Json:
    expr = [e for e in line.expr if "comment" not in e]
    rule: Json = {"family": "inet", "table": table, "chain": chain, "expr": expr}
    for e in line.expr:
        if "comment" in e:
            rule["comment"] = e["comment"]
    return {"add": {"rule": rule}}


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a burst of allocations.

    Rendering allocates millions of small acyclic dicts and strings; each allocation burst
    would trigger full collections that rescan the growing output. Pausing the collector cut
    the large benchmark's render time by about half (measured in benchmarks/bench_nftables.py).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def render_full(state: DatapathState, now: float, options: RenderOptions) -> tuple[str, Json]:
    """Render the whole table (see :func:`_render_full`), with the cyclic GC paused."""
    with gc_paused():
        return _render_full(state, now, options)


def _render_full(state: DatapathState, now: float, options: RenderOptions) -> tuple[str, Json]:
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
    r = _Renderer(options)
    dispatch: dict[str, list[tuple[str, str]]] = {"egress": [], "ingress": []}
    seen_if: dict[str, str] = {}
    for endpoint in state.endpoints:
        iface = check_interface(endpoint.interface, safe_text(endpoint.key, 80))
        other = seen_if.setdefault(iface, endpoint.key)
        if other != endpoint.key:
            raise InvalidPolicy(
                Problem(
                    f"interface {iface} belongs to two endpoints",
                    resource=safe_text(endpoint.key, 80),
                    hint=f"also used by {safe_text(other, 80)}; interfaces must be unique",
                    code="duplicate-interface",
                )
            )
        directions: tuple[Direction, Direction] = ("egress", "ingress")
        for direction in directions:
            chain = r.endpoint_chain(endpoint, direction)
            if chain is not None:
                dispatch[direction].append((iface, chain))

    text: list[str] = [
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
    ]
    commands: list[Json] = [
        {"metainfo": {"json_schema_version": 1}},
        {"add": {"table": {"family": "inet", "name": table}}},
        {"delete": {"table": {"family": "inet", "name": table}}},
        {"add": {"table": {"family": "inet", "name": table}}},
    ]
    for ipset in state.sets:
        flags = _flags(ipset.kind)
        for member in ipset.members:
            _check_member(member, ipset.set_id)
        for family in (4, 6):
            set_lines, set_data = _set_decl(
                table,
                set_name(ipset.set_id, family),
                "ipv4_addr" if family == 4 else "ipv6_addr",
                "ipv4_addr" if family == 4 else "ipv6_addr",
                flags,
                f"{ipset.kind} {ipset.definition}",
                render_elements(ipset.family_members(family), ipset.kind, now),
            )
            text.extend(set_lines)
            commands.append(set_data)
    for name in sorted(state.named_ports):
        for family in (4, 6):
            np_entries = sorted(
                {
                    (addr, proto, port)
                    for addr, proto, port in state.named_ports[name]
                    if (":" in addr) == (family == 6)
                }
            )
            for addr, _, _ in np_entries:
                _check_member(addr, name)
            addr_type = "ipv4_addr" if family == 4 else "ipv6_addr"
            set_lines, set_data = _set_decl(
                table,
                named_port_set_name(name, family),
                f"{addr_type} . inet_proto . inet_service",
                [addr_type, "inet_proto", "inet_service"],
                (),
                f"named port {name}",
                (
                    [f"{a} . {p} . {n}" for a, p, n in np_entries],
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
        base_lines = [
            _Line(
                "ct state established,related accept",
                (
                    _match({"ct": {"key": "state"}}, ["established", "related"], "in"),
                    {"accept": None},
                ),
            ),
            _Line(
                "ct state invalid drop",
                (_match({"ct": {"key": "state"}}, "invalid", "in"), {"drop": None}),
            ),
        ]
        entries = dispatch[direction]
        if entries:
            vmap_text = ", ".join(f'"{iface}" : jump {chain}' for iface, chain in entries)
            base_lines.append(
                _Line(
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
                )
            )
        priority = prio if direction == "egress" else prio + 1
        head = [f"type filter hook forward priority {priority}; policy accept;"]
        comment = f"fqdnpolicy {direction}: dispatch by {key}"
        text.extend(_chain_block(base, comment, base_lines, head))
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
        rule_json.extend(_rule_json(table, base, line) for line in base_lines)
    if options.reject:
        r.chains[_REJECT_CHAIN] = (
            "deny (test mode): reset TCP, ICMP admin-prohibited otherwise",
            [
                _Line(
                    "meta l4proto tcp reject with tcp reset",
                    (
                        _match(_meta("l4proto"), "tcp"),
                        {"reject": {"type": "tcp reset"}},
                    ),
                ),
                _Line(
                    "reject with icmpx type admin-prohibited",
                    ({"reject": {"type": "icmpx", "expr": "admin-prohibited"}},),
                ),
            ],
        )
    for name, (chain_comment, chain_lines) in r.chains.items():
        text.extend(_chain_block(name, chain_comment, chain_lines))
        safe = safe_text(chain_comment, COMMENT_MAX)
        chain_json.append(
            {"add": {"chain": {"family": "inet", "table": table, "name": name, "comment": safe}}}
        )
        rule_json.extend(_rule_json(table, name, line) for line in chain_lines)
    text.append("}")
    commands.extend(chain_json)
    commands.extend(rule_json)
    return "\n".join(text) + "\n", {"nftables": commands}


# ---------------------------------------------------------------------------- delta render


def render_delta_ops(
    ops: Sequence[ElementOp],
    mirrors: dict[str, SetMirror],
    now: float,
    table: str,
) -> tuple[str, Json]:
    """Render element changes as one transaction, updating ``mirrors`` to the new members.

    Plain sets get ``add element`` / ``delete element`` batches (a delete is preceded by an
    add of the same element, so deleting an element the kernel already timed out is not an
    error). An interval set touched where CIDRs are involved is flushed and declared again
    from its mirror in the same transaction.
    """
    adds: dict[str, list[tuple[str, Any]]] = {}
    deletes: dict[str, list[tuple[str, Any]]] = {}
    rewrite: dict[str, set[int]] = {}
    for op in ops:
        mirror = mirrors[op.set_id]
        _check_member(op.member, op.set_id)
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
            adds.setdefault(name, []).append(_element(op.member, timeout))
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
            texts, datas = render_elements(members, mirror.kind, now)
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
