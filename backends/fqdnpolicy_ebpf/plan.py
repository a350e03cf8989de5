"""What the eBPF backend renders: a plan of map contents, pure data (no kernel).

A :class:`Plan` holds the set slots (each IP set gets a bit in the membership bitmap), the
members as parsed prefixes, and per endpoint and direction the rule table the program walks:
rules in tier order, each tier closed by an end-of-tier entry. :func:`build_plan` makes one
from a :class:`~fqdnpolicy.datapath.DatapathState`; :mod:`fqdnpolicy_ebpf.text` prints it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from typing import Literal

import attrs

from fqdnpolicy.datapath import DatapathState, PortSpec, RuleState, TierState
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "MAX_PORTS",
    "Entry",
    "Member",
    "Plan",
    "SetSlot",
    "Table",
    "build_plan",
    "parse_member",
    "words_for",
]

#: Port entries one port condition of a rule may hold (``FQE_MAX_PORTS`` in the C source).
MAX_PORTS = 32
#: ``(lo, hi, protocol or 0, peer name id or -1)``.
PortEntry = tuple[int, int, int, int]
#: ``(family, prefix length, address as an integer)``.
Prefix = tuple[int, int, int]


@attrs.frozen
class SetSlot:
    """An IP set and its bit in the membership bitmap."""

    index: int
    set_id: str
    kind: str
    definition: str
    members: int


@attrs.frozen
class Member:
    """A set member: its set's bit, its prefix, and its expiry on the DNS cache's clock."""

    set_index: int
    prefix: Prefix
    text: str
    expiry: float | None


@attrs.frozen
class Entry:
    """One entry of a rule table: a rule, or the end of a tier (``kind="tier-end"``).

    ``next_tier`` is the index (in the table) of the next tier's first entry, where a Pass
    continues; ``ports`` are the dst, not-dst, src and not-src conditions.
    """

    kind: Literal["rule", "tier-end"]
    action: str
    tier: str
    policy: str = ""
    index: int = 0
    families: tuple[int, ...] = (4, 6)
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: tuple[int | None, int | None] | None = None
    not_icmp: tuple[int | None, int | None] | None = None
    peer_in: tuple[int, ...] = ()
    peer_not_in: tuple[int, ...] = ()
    ports: tuple[tuple[PortEntry, ...], ...] = ((), (), (), ())
    next_tier: int = 0


@attrs.frozen
class Table:
    """The rule table of one endpoint and direction (0: from the workload, 1: to it)."""

    endpoint: str
    interface: str
    direction: int
    entries: tuple[Entry, ...]


@attrs.frozen
class Plan:
    """Everything the maps hold after a full apply.

    Attributes:
        words: 64-bit words of the set bitmap the program is compiled for.
        sets: Set slots, by index.
        members: Every member of every set.
        tables: Rule tables, for every endpoint and both directions.
        names: Peer named ports by id.
        named: ``(name id, family, address, protocol, port)`` of every endpoint's named port.
        now: The DNS cache clock's time of the rendering (expiries are relative to it).
    """

    words: int
    sets: tuple[SetSlot, ...]
    members: tuple[Member, ...]
    tables: tuple[Table, ...]
    names: tuple[str, ...]
    named: tuple[tuple[int, int, int, int, int], ...]
    now: float


def words_for(slots: int) -> int:
    """Bitmap words for ``slots`` set bits: a power of two, so growth rarely recompiles."""
    words = 1
    while words * 64 < slots:
        words *= 2
    return words


def parse_member(text: str) -> Prefix | None:
    """Parse an address or CIDR into ``(family, prefix length, integer)``; None if unusable."""
    if "/" not in text:
        for family, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            try:
                packed = socket.inet_pton(af, text)
            except OSError:
                continue
            return family, len(packed) * 8, int.from_bytes(packed, "big")
        return None
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return net.version, net.prefixlen, int(net.network_address)


def _port_entries(spec: PortSpec, names: dict[str, int]) -> tuple[PortEntry, ...]:
    out: list[PortEntry] = [(lo, hi, 0, -1) for lo, hi in spec.ranges]
    out += [(port, port, proto, -1) for proto, port in spec.named]
    out += [(0, 0, 0, names.setdefault(name, len(names))) for name in spec.peer_named]
    if len(out) > MAX_PORTS:
        raise InvalidPolicy(
            Problem(
                f"a rule names {len(out)} ports on one side; the eBPF program tests at most"
                f" {MAX_PORTS}",
                hint="split the rule",
            )
        )
    return tuple(out)


def _entry(rule: RuleState, slots: Mapping[str, int], names: dict[str, int]) -> Entry:
    return Entry(
        kind="rule",
        action=rule.action,
        tier=rule.tier,
        policy=rule.policy,
        index=rule.index,
        families=rule.families,
        protocol=rule.protocol,
        not_protocol=rule.not_protocol,
        icmp=rule.icmp,
        not_icmp=rule.not_icmp,
        peer_in=tuple(slots[s] for s in rule.peer_in),
        peer_not_in=tuple(slots[s] for s in rule.peer_not_in),
        ports=tuple(
            _port_entries(spec, names)
            for spec in (rule.dst_ports, rule.not_dst_ports, rule.src_ports, rule.not_src_ports)
        ),
    )


def _table(
    tiers: tuple[TierState, ...], slots: Mapping[str, int], names: dict[str, int]
) -> list[Entry]:
    entries: list[Entry] = []
    for tier in tiers:
        rules = [_entry(rule, slots, names) for rule in tier.rules]
        after = len(entries) + len(rules) + 1
        entries += [attrs.evolve(e, next_tier=after) for e in rules]
        entries.append(Entry(kind="tier-end", action=tier.default_action, tier=tier.name))
    return entries


def build_plan(
    state: DatapathState,
    now: float,
    slots: Mapping[str, int],
    skipped: list[Problem],
) -> Plan:
    """Turn a datapath state into a plan; pure.

    Args:
        state: What the engine wants enforced.
        now: The DNS cache clock's time; members that expired by then are left out.
        slots: The bit of every set of ``state`` (the backend keeps them stable).
        skipped: Receives a problem per member no map can hold.
    """
    sets: list[SetSlot] = []
    members: list[Member] = []
    for s in state.sets:
        index = slots[s.set_id]
        kept = 0
        for text, expiry in s.members.items():
            if expiry is not None and expiry <= now:
                continue
            prefix = parse_member(text)
            if prefix is None:
                skipped.append(Problem(f"set {s.set_id}: {text!r} is no plain address or CIDR"))
                continue
            members.append(Member(index, prefix, text, expiry))
            kept += 1
        sets.append(SetSlot(index, s.set_id, s.kind, s.definition, kept))
    names: dict[str, int] = {}
    tables = [
        Table(ep.key, ep.interface, direction, tuple(_table(tiers, slots, names)))
        for ep in state.endpoints
        for direction, tiers in ((0, ep.egress), (1, ep.ingress))
    ]
    named: list[tuple[int, int, int, int, int]] = []
    for name, ident in names.items():
        for address, proto, port in state.named_ports.get(name, ()):
            prefix = parse_member(address)
            if prefix is not None:
                named.append((ident, prefix[0], prefix[2], proto, port))
    return Plan(
        words=words_for(max(slots.values(), default=-1) + 1),
        sets=tuple(sorted(sets, key=lambda s: s.index)),
        members=tuple(members),
        tables=tuple(tables),
        names=tuple(names),
        named=tuple(named),
        now=now,
    )
