"""One engine state, read once: endpoints, their programs and identities, and the outside.

Everything this package reads of a :class:`~fqdnpolicy.engine.PolicyEngine`'s internals is
read here, under the engine's writer lock (so no change is half applied): the published
endpoint records (each endpoint's egress and ingress :class:`Program
<fqdnpolicy.engine.programs.Program>`), the host identities, the prefix table, and what each
IP set stands for. A :class:`State` copies the dicts it needs, so it stays the state of its
moment after the engine changes (programs and identities never change once published).

The outside world is cut into :class:`Piece` s, one per identity an outside address can have:
the addresses held by the same IP sets (network sets, domain sets, CIDRs the policies name)
are alike for every policy, and the addresses in no set at all are one piece per family,
"everything else".
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from fqdnpolicy.connectivity.spaces import FAMILY_NAMES, network_text
from fqdnpolicy.engine.identities import EMPTY, Identity, PrefixTable
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.published import EndpointRecord
from fqdnpolicy.engine.results import IPSetInfo

__all__ = ["EndpointUnit", "Piece", "State", "read_state"]


def _to_int(address: str) -> int:
    if ":" in address:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
    return int.from_bytes(socket.inet_aton(address), "big")


@attrs.define(eq=False, slots=True)
class EndpointUnit:
    """An endpoint as the map sees it.

    Attributes:
        key: ``namespace/name``.
        record: The published record (programs, endpoint).
        source: Per family, the identity its flows carry to a receiver's ingress policy
            (that of its first address of the family); families it has no address of are
            absent.
        addresses: Per family, ``(address, identity)`` of each of its addresses.
    """

    key: str
    record: EndpointRecord
    source: dict[int, Identity]
    addresses: dict[int, list[tuple[str, Identity]]]

    @property
    def egress(self) -> Program:
        """Its egress program."""
        return self.record.egress

    @property
    def ingress(self) -> Program:
        """Its ingress program."""
        return self.record.ingress


@attrs.frozen
class Piece:
    """Outside addresses all policies treat alike: those held by the same IP sets.

    Attributes:
        id: Stable name: ``outside:v4:`` and the sorted ids of the sets holding the
            addresses (``outside:v4:*`` for the addresses in no set).
        family: 4 or 6.
        sets: What each set holding the addresses stands for, ``kind definition``.
        cidrs: The address ranges of the piece, as CIDRs (endpoint addresses and host
            members of other pieces inside them excluded).
        hosts: Single addresses of the piece (DNS-learned members).
    """

    id: str
    family: int
    sets: tuple[str, ...]
    cidrs: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """In words: ``IPv4 outside: domains api.example.com``."""
        name = FAMILY_NAMES[self.family]
        if not self.sets:
            return f"{name} outside: everything else"
        return f"{name} outside: " + " & ".join(self.sets)


def _set_text(info: IPSetInfo) -> str:
    return f"{info.kind} {info.definition}"


def piece_id(family: int, ident: Identity, info: dict[int, IPSetInfo]) -> str:
    """The stable id of the piece of ``ident``."""
    ids = sorted(info[n].set_id for n in ident)
    return f"outside:v{family}:" + ("+".join(ids) if ids else "*")


class State:
    """An engine's state of one moment (see the module docstring)."""

    def __init__(
        self,
        records: dict[str, EndpointRecord],
        hosts: dict[str, Identity],
        prefixes: PrefixTable,
        info: dict[int, IPSetInfo],
    ) -> None:
        self.records = records
        self.hosts = hosts
        self.prefixes = prefixes
        self.info = info
        self.endpoints: dict[str, EndpointUnit] = {}
        for key in sorted(records):
            record = records[key]
            source: dict[int, Identity] = {}
            addresses: dict[int, list[tuple[str, Identity]]] = {}
            for ip in record.endpoint.ips:
                family = 6 if ":" in ip else 4
                ident = hosts.get(ip)
                if ident is None:  # (an endpoint's address is always a host; be safe)
                    ident = Identity(family, EMPTY, record.endpoint.named_ports)
                addresses.setdefault(family, []).append((ip, ident))
            for family in (4, 6):
                first = record.address(family)
                if first is not None:
                    source[family] = hosts.get(first) or addresses[family][0][1]
            self.endpoints[key] = EndpointUnit(key, record, source, addresses)
        self._pieces: dict[Identity, Piece] | None = None

    @property
    def families(self) -> tuple[int, ...]:
        """The families some endpoint has an address of."""
        return tuple(
            f for f in (4, 6) if any(f in unit.addresses for unit in self.endpoints.values())
        )

    def piece_of(self, ident: Identity) -> Piece:
        """The piece of an outside identity."""
        found = self.pieces().get(ident)
        if found is None:
            family = ident.family
            found = Piece(
                piece_id(family, ident, self.info),
                family,
                tuple(sorted(_set_text(self.info[n]) for n in ident)),
            )
        return found

    def pieces(self) -> dict[Identity, Piece]:
        """Every outside piece with some address, by identity (computed once)."""
        if self._pieces is None:
            self._pieces = self._cut()
        return self._pieces

    def outside_identities(self) -> list[Identity]:
        """The identities of the outside pieces."""
        return list(self.pieces())

    def _cut(self) -> dict[Identity, Piece]:
        pieces: dict[Identity, Piece] = {}
        for (ident,), (cidrs, hosts) in cut([self]).items():
            pieces[ident] = Piece(
                piece_id(ident.family, ident, self.info),
                ident.family,
                tuple(sorted(_set_text(self.info[n]) for n in ident)),
                cidrs,
                hosts,
            )
        return pieces

    def identity(self, address: str) -> Identity:
        """The identity of canonical ``address`` in this state."""
        found = self.hosts.get(address)
        return found if found is not None else self.prefixes.identity(address)


def _intervals(states: list[State], family: int) -> Iterable[tuple[int, int, tuple[Identity, ...]]]:
    """Address intervals between every state's prefix bounds.

    Each comes with each state's prefix-only identity of the interval.
    """
    top = 1 << (32 if family == 4 else 128)
    points = {0}
    for state in states:
        for net in state.prefixes.prefixes:
            if net.version == family:
                points.add(int(net.network_address))
                end = int(net.broadcast_address) + 1
                if end < top:
                    points.add(end)
    starts = sorted(points)
    cls: Any = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    for i, start in enumerate(starts):
        last = (starts[i + 1] if i + 1 < len(starts) else top) - 1
        text = str(cls(start))
        yield start, last, tuple(state.prefixes.identity(text) for state in states)


def cut(
    states: list[State],
) -> dict[tuple[Identity, ...], tuple[tuple[str, ...], tuple[str, ...]]]:
    """The outside cut by the identities its addresses have in each state.

    Returns:
        For each tuple of identities (one per state) some outside address has: the CIDRs of
        the prefix ranges with it (less the ranges made only of hosts) and its host addresses.
        An address is outside when no endpoint owns it in any state.
    """
    endpoint_ips = {
        ip for s in states for u in s.endpoints.values() for ip in u.record.endpoint.ips
    }
    addresses: set[str] = set()
    for state in states:
        addresses.update(state.hosts)
    hosts_of: dict[tuple[Identity, ...], list[str]] = {}
    host_ints: dict[int, list[int]] = {4: [], 6: []}
    v4, v6 = host_ints[4].append, host_ints[6].append
    aton, from_bytes = socket.inet_aton, int.from_bytes
    tables = [(s.hosts.get, s.prefixes.identity) for s in states]
    for address in addresses:
        if ":" in address:
            v6(_to_int(address))
        else:
            v4(from_bytes(aton(address), "big"))
        if address not in endpoint_ips:
            key = tuple(_either(host(address), prefix, address) for host, prefix in tables)
            found = hosts_of.get(key)
            if found is None:
                hosts_of[key] = [address]
            else:
                found.append(address)
    for values in host_ints.values():
        values.sort()
    ranges: dict[tuple[Identity, ...], list[tuple[int, int]]] = {}
    for family in (4, 6):
        values = host_ints[family]
        for first, last, key in _intervals(states, family):
            inside = bisect.bisect_right(values, last) - bisect.bisect_left(values, first)
            if inside > last - first:
                continue  # every address of it is a host: none left to the prefixes
            ranges.setdefault(key, []).append((first, last))
    out: dict[tuple[Identity, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for key in sorted(
        set(hosts_of) | set(ranges),
        key=lambda k: (k[0].family, [sorted(i.sets) for i in k]),
    ):
        family = key[0].family
        cidrs: list[str] = []
        for first, last in _merged(ranges.get(key, ())):
            cidrs.extend(network_text(first, last, family))
        out[key] = (tuple(cidrs), tuple(sorted(hosts_of.get(key, ()), key=_to_int)))
    return out


def _either(found: Identity | None, prefix: Callable[[str], Identity], address: str) -> Identity:
    """``found``, else the prefix-only identity (an empty identity is falsy: test None)."""
    return found if found is not None else prefix(address)


def _merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and out[-1][1] + 1 >= first:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def read_state(engine: object) -> State:
    """Read ``engine``'s state of now (under its writer lock; see the module docstring)."""
    from fqdnpolicy.engine import PolicyEngine

    assert isinstance(engine, PolicyEngine)
    with engine._lock:
        engine.flush()
        snapshot = engine._snapshot
        registry = engine._graph.registry
        info = {num: ipset.info for num, ipset in registry.by_num.items()}
        return State(dict(engine._records), dict(engine._hosts), snapshot.prefixes, info)
