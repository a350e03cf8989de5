"""What the eBPF backend renders: a plan of map contents, pure data (no kernel).

A :class:`Plan` holds the sets (each IP set gets a number, the id the maps know it by), the
members as parsed prefixes, and per endpoint and direction the rule table the program walks:
rules in tier order, each tier closed by an end-of-tier entry. :func:`table_index` says which
entries a peer's sets select. :func:`build_plan` makes a plan from a
:class:`~fqdnpolicy.datapath.DatapathState`; :mod:`fqdnpolicy_ebpf.text` prints it.
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
    "MAX_RULE_SETS",
    "Entry",
    "Member",
    "Plan",
    "SetSlot",
    "Table",
    "TableIndex",
    "build_plan",
    "parse_member",
    "table_index",
]

#: Port entries one port condition of a rule may hold (``FQE_MAX_PORTS`` in the C source).
MAX_PORTS = 32
#: Sets one side (in, not in) of a rule may name (``FQE_RULE_SETS`` in the C source).
MAX_RULE_SETS = 4
#: ``(lo, hi, protocol or 0, peer name id or -1)``.
PortEntry = tuple[int, int, int, int]
#: ``(family, prefix length, address as an integer)``.
Prefix = tuple[int, int, int]


@attrs.frozen
class SetSlot:
    """An IP set and its number (its id in the maps)."""

    index: int
    set_id: str
    kind: str
    definition: str
    members: int


@attrs.frozen
class Member:
    """A set member: its set's number, its prefix, and its expiry on the DNS cache's clock."""

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
        sets: Set slots, by index.
        members: Every member of every set.
        tables: Rule tables, for every endpoint and both directions.
        names: Peer named ports by id.
        named: ``(name id, family, address, protocol, port)`` of every endpoint's named port.
        now: The DNS cache clock's time of the rendering (expiries are relative to it).
    """

    sets: tuple[SetSlot, ...]
    members: tuple[Member, ...]
    tables: tuple[Table, ...]
    names: tuple[str, ...]
    named: tuple[tuple[int, int, int, int, int], ...]
    now: float


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


def _peer_sets(rule: RuleState, slots: Mapping[str, int]) -> tuple[tuple[int, ...], ...]:
    sides = tuple(tuple(slots[s] for s in ids) for ids in (rule.peer_in, rule.peer_not_in))
    if max(map(len, sides)) > MAX_RULE_SETS:
        raise InvalidPolicy(
            Problem(
                f"rule {rule.index} of {rule.policy} names {max(map(len, sides))} peer sets on"
                f" one side; the eBPF program tests at most {MAX_RULE_SETS}",
                hint="split the rule",
            )
        )
    return sides


def _entry(rule: RuleState, slots: Mapping[str, int], names: dict[str, int]) -> Entry:
    peer_in, peer_not_in = _peer_sets(rule, slots)
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
        peer_in=peer_in,
        peer_not_in=peer_not_in,
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


@attrs.frozen
class TableIndex:
    """Which entries of a table a packet can need, as lists of positions, ascending.

    A rule whose peer must be in sets can only match a peer in each of them, so it is listed
    under one (``by_set``): the smallest (members per set), which the fewest peers are in.
    Every other entry is unindexed: ``by_protocol[p]`` lists those a packet of protocol
    ``p`` can need (the rules of that protocol or of any, and the tier ends), ``unindexed``
    those a packet of another protocol can. The program merges the list of the packet's
    protocol with the lists of the peer's sets, in table order, and tests only those.
    """

    unindexed: tuple[int, ...]
    by_protocol: dict[int, tuple[int, ...]]
    by_set: dict[int, tuple[int, ...]]


def table_index(entries: tuple[Entry, ...], sizes: Mapping[int, int]) -> TableIndex:
    """The index of a table; ``sizes``: members per set."""
    unindexed: list[int] = []
    of_protocol: dict[int, list[int]] = {}
    by_set: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        if entry.kind == "rule" and entry.peer_in:
            key = min(entry.peer_in, key=lambda s: (sizes.get(s, 0), s))
            by_set.setdefault(key, []).append(i)
        elif entry.kind == "rule" and entry.protocol is not None:
            of_protocol.setdefault(entry.protocol, []).append(i)
        else:
            unindexed.append(i)
    return TableIndex(
        tuple(unindexed),
        {p: tuple(sorted(unindexed + v)) for p, v in of_protocol.items()},
        {s: tuple(v) for s, v in by_set.items()},
    )


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
        slots: The number of every set of ``state`` (the backend keeps them stable).
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
    # Endpoints with the same tiers share one entries tuple (the maps then hold one copy).
    made: dict[tuple[TierState, ...], tuple[Entry, ...]] = {}
    tables = []
    for ep in state.endpoints:
        for direction, tiers in ((0, ep.egress), (1, ep.ingress)):
            entries = made.get(tiers)
            if entries is None:
                entries = made[tiers] = tuple(_table(tiers, slots, names))
            tables.append(Table(ep.key, ep.interface, direction, entries))
    named: list[tuple[int, int, int, int, int]] = []
    for name, ident in names.items():
        for address, proto, port in state.named_ports.get(name, ()):
            prefix = parse_member(address)
            if prefix is not None:
                named.append((ident, prefix[0], prefix[2], proto, port))
    return Plan(
        sets=tuple(sorted(sets, key=lambda s: s.index)),
        members=tuple(members),
        tables=tuple(tables),
        names=tuple(names),
        named=tuple(named),
        now=now,
    )
