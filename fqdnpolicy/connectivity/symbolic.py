"""The evaluator run on sets of flows: one program, one peer view, every connection at once.

:func:`fqdnpolicy.engine.evaluate.evaluate` judges one flow; :class:`Evaluator` judges every
flow of one address family to or from one peer *view* (:meth:`Program.view
<fqdnpolicy.engine.programs.Program.view>`: what of a peer's identity the program's rules can
tell apart) at once, with the same semantics, and answers with the partition of the family's
connections by deciding verdict. Flows carry no source port (as :meth:`PolicyEngine.verdict
<fqdnpolicy.engine.PolicyEngine.verdict>` without ``src_port``): a rule that matches source
ports matches none of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

from fqdnpolicy.cluster import NamedPort
from fqdnpolicy.connectivity.spaces import (
    ALL,
    EMPTY,
    FULL,
    NONE,
    PORTED,
    Ports,
    Space,
    icmp_of,
    intersect,
    make,
    ports_minus,
    ports_of,
    ports_union,
    subtract,
    union,
)
from fqdnpolicy.engine.compiler import Binding
from fqdnpolicy.engine.identities import EMPTY as NO_SETS
from fqdnpolicy.engine.identities import Identity
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.results import Verdict
from fqdnpolicy.model import Policy, PortRange
from fqdnpolicy.protocols import PROTOCOL_FAMILY, PROTOCOL_NUMBERS

__all__ = ["Decisions", "Evaluator", "ViewKey", "source_port_caveats", "view_key"]

#: (family, the program's sets holding the peer, the peer's named ports where they count)
ViewKey: TypeAlias = tuple[int, frozenset[int], tuple[NamedPort, ...] | None]
#: A family's connections partitioned by deciding verdict: ((verdict, space), ...).
Decisions: TypeAlias = tuple[tuple[Verdict, Space], ...]

_OTHER_FAMILY = {proto: 10 - family for proto, family in PROTOCOL_FAMILY.items()}
_UNPORTED = -1  # stands for every protocol neither ported nor the family's ICMP


def source_port_caveats(policies: Iterable[Policy]) -> tuple[str, ...]:
    """What a map or diff of these policies must say of their rules matching source ports.

    Flows are judged without a source port, so such a rule matches none of them: an answer
    about connections from some source port may differ.
    """
    named = [
        p.display_name
        for p in policies
        if any(r.source.ports or r.source.not_ports for r in (*p.spec.egress, *p.spec.ingress))
    ]
    if not named:
        return ()
    shown = ", ".join(sorted(named)[:3]) + (f" and {len(named) - 3} more" if len(named) > 3 else "")
    return (
        f"rules matching source ports (in {shown}) are taken to match no flow: connections "
        "are judged without a source port, as verdict() without src_port judges them",
    )


def view_key(program: Program, ident: Identity) -> ViewKey:
    """What of ``ident`` ``program`` can tell apart (every plain peer of a family alike)."""
    if program.plain(ident):
        return (ident.family, NO_SETS, None)
    return program.view(ident)  # type: ignore[return-value]


def _icmp_set(spec: tuple[int | None, int | None]) -> Ports:
    want_type, want_code = spec
    if want_type is None:
        if want_code is None:
            return FULL
        return ports_of((t * 256 + want_code, t * 256 + want_code) for t in range(256))
    if want_code is None:
        return (want_type * 256, want_type * 256 + 256)
    value = want_type * 256 + want_code
    return (value, value + 1)


def _ranges(ranges: tuple[PortRange, ...]) -> Ports:
    return ports_of((r.first, r.last) for r in ranges)


class Evaluator:
    """Judges programs on sets of flows; keeps what it judged (programs never change)."""

    def __init__(self) -> None:
        self._decisions: dict[tuple[Program, ViewKey], Decisions] = {}
        self._allowed: dict[tuple[Program, ViewKey], Space] = {}
        self._matches: dict[tuple[Binding, int, tuple[NamedPort, ...] | None], Space] = {}

    def allowed(self, program: Program, view: ViewKey) -> Space:
        """The connections ``program`` allows to or from a peer of ``view``."""
        key = (program, view)
        found = self._allowed.get(key)
        if found is None:
            family = view[0]
            found = NONE
            for verdict, space in self.decisions(program, view):
                if verdict.action == "Allow":
                    found = union(family, found, space)
            self._allowed[key] = found
        return found

    def decisions(self, program: Program, view: ViewKey) -> Decisions:
        """The family's connections partitioned by the verdict ``program`` gives them."""
        key = (program, view)
        found = self._decisions.get(key)
        if found is None:
            found = self._decisions[key] = self._decide(program, view)
        return found

    def _decide(self, program: Program, view: ViewKey) -> Decisions:
        family, sets, ports = view
        parts: list[tuple[Verdict, Space]] = []
        undecided = ALL
        for block in program.blocks:
            here = undecided
            passed = NONE
            rules = block.rules
            positions = set(block.always_positions)
            for num in sets:
                found = block.by_set.get(num)
                if found:
                    positions.update(found)
            for position in sorted(positions):
                bound = rules[position]
                rule = bound.rule
                if rule.action == "Log":
                    continue
                peer = rule.peer
                if any(n not in sets for n in peer.required) or any(
                    n in sets for n in peer.forbidden
                ):
                    continue
                space = self._match(bound, family, ports)
                if space == NONE:
                    continue
                space = intersect(family, space, here)
                if space == NONE:
                    continue
                here = subtract(family, here, space)
                if rule.action == "Pass":
                    passed = union(family, passed, space)
                else:
                    assert rule.verdict is not None
                    parts.append((rule.verdict, space))
                if here == NONE:
                    break
            if block.end is not None:
                if here != NONE:
                    parts.append((block.end, here))
                undecided = passed
            else:
                undecided = union(family, passed, here)
            if undecided == NONE:
                break
        if undecided != NONE:
            parts.append((program.fallback, undecided))
        return tuple(parts)

    def _match(self, bound: Binding, family: int, ports: tuple[NamedPort, ...] | None) -> Space:
        """Every connection of ``family`` the rule matches (its peer sets already hold)."""
        key = (bound, family, ports)
        found = self._matches.get(key)
        if found is None:
            found = self._matches[key] = _match(bound, family, ports)
        return found


def _match(bound: Binding, family: int, peer_ports: tuple[NamedPort, ...] | None) -> Space:
    rule = bound.rule
    if rule.protocol is not None and _OTHER_FAMILY.get(rule.protocol) == family:
        return NONE
    if rule.ip_version is not None and rule.ip_version != family:
        return NONE
    if not (bound.ok4 if family == 4 else bound.ok6):
        return NONE
    src = rule.source
    if src.ports or src.named_ports or src.not_ports or src.not_named_ports:
        return NONE  # flows carry no source port: never matches (see the module docstring)
    dst = rule.destination
    egress = rule.direction == "egress"
    with_ports = bool(dst.ports or dst.named_ports)
    with_not = bool(dst.not_ports or dst.not_named_ports)
    icmp_proto = icmp_of(family)
    # A flow without ICMP fields matches an ICMP criterion only when it names nothing.
    icmp_none = rule.icmp is None or rule.icmp == (None, None)
    not_icmp_none = rule.not_icmp is not None and rule.not_icmp == (None, None)

    def named(names: tuple[str, ...], own: tuple[tuple[int, int], ...], proto: int) -> Ports:
        if not names:
            return EMPTY
        if not egress:  # an ingress rule's destination is the policed endpoint: resolved
            return ports_of((p, p) for q, p in own if q == proto)
        if peer_ports is None:
            return EMPTY
        return ports_of(
            (p.port, p.port)
            for p in peer_ports
            if p.name in names and PROTOCOL_NUMBERS[p.protocol.upper()] == proto
        )

    def value(proto: int) -> Ports:
        if proto in PORTED:
            if not icmp_none or not_icmp_none:
                return EMPTY
            space = FULL
            if with_ports:
                space = ports_union(
                    _ranges(dst.ports), named(dst.named_ports, bound.own_named, proto)
                )
            if with_not:
                space = ports_minus(
                    space,
                    ports_union(
                        _ranges(dst.not_ports),
                        named(dst.not_named_ports, bound.own_not_named, proto),
                    ),
                )
            return space
        if with_ports or with_not:
            return EMPTY  # no port: a port criterion fails
        if proto == icmp_proto:
            space = FULL if rule.icmp is None else _icmp_set(rule.icmp)
            if rule.not_icmp is not None:
                space = ports_minus(space, _icmp_set(rule.not_icmp))
            return space
        return EMPTY if (not icmp_none or not_icmp_none) else FULL

    if rule.protocol is not None:
        proto = rule.protocol
        if rule.not_protocol == proto:
            return NONE
        if proto in PORTED or proto == icmp_proto:
            return make(family, False, {proto: value(proto)})
        return make(family, False, {proto: value(_UNPORTED)})
    items = {p: value(p) for p in (*PORTED, icmp_proto)}
    if rule.not_protocol is not None:
        items[rule.not_protocol] = EMPTY
    return make(family, value(_UNPORTED) == FULL, items)


def combine(egress: Decisions, ingress: Decisions | None, family: int) -> Decisions:
    """A flow's decisions from its two sides, as :meth:`PolicyEngine.verdict` reports them.

    The egress side's verdict where it denies, else the ingress side's where that denies,
    else the egress side's.
    """
    if ingress is None:
        return egress
    parts: list[tuple[Verdict, Space]] = []
    for verdict, space in egress:
        if verdict.action != "Allow":
            parts.append((verdict, space))
            continue
        for other, within in ingress:
            both = intersect(family, space, within)
            if both != NONE:
                parts.append((other if other.action != "Allow" else verdict, both))
    return tuple(parts)
