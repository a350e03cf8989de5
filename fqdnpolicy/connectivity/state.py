"""One engine state, read once: endpoints, their programs and identities, and the outside.

A :class:`State` is built from :meth:`PolicyEngine.published_state
<fqdnpolicy.engine.PolicyEngine.published_state>` (a copy taken under the engine's writer
lock, so no change is half applied): the published endpoint records (each endpoint's egress
and ingress :class:`Program <fqdnpolicy.engine.programs.Program>`), the host identities, the
prefix table, and what each IP set stands for. It stays the state of its moment after the
engine changes (programs and identities never change once published, only replaced).

The outside world is cut into :class:`Piece` s (:mod:`fqdnpolicy.connectivity.outside`), one
per identity an outside address can have: the addresses held by the same IP sets (network
sets, domain sets, CIDRs the policies name) are alike for every policy, and the addresses in
no set at all are one piece per family, "everything else".
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress
from operator import is_not
from typing import Any

import attrs

from fqdnpolicy.connectivity.outside import cut, moved_hosts
from fqdnpolicy.connectivity.spaces import FAMILY_NAMES
from fqdnpolicy.engine.identities import EMPTY, Identity, PrefixTable
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.published import EndpointRecord, PublishedState
from fqdnpolicy.engine.results import IPSetInfo

__all__ = ["EndpointUnit", "Piece", "State", "read_state"]


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
        sender: What a diff groups sources by: the ids of its egress program and of its
            source identities (IPv4, IPv6; ``id(None)`` for a family it lacks).
        receivers: Its addresses judged apart as destinations, ``(family, identity, peer
            id)``: its first address of each family (peer id its key), and each other
            address with another identity (``key@address``).
    """

    key: str
    record: EndpointRecord
    source: dict[int, Identity]
    addresses: dict[int, list[tuple[str, Identity]]]
    sender: tuple[int, int, int]
    receivers: list[tuple[int, Identity, str]]

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


def piece_id(family: int, ident: Identity, info: Mapping[int, IPSetInfo]) -> str:
    """The stable id of the piece of ``ident``."""
    ids = sorted(info[n].set_id for n in ident)
    return f"outside:v{family}:" + ("+".join(ids) if ids else "*")


class State:
    """An engine's state of one moment (see the module docstring).

    Args:
        published: The engine's published state.
        base: An earlier state of the same engine: the endpoints whose record and address
            identities did not change keep its :class:`EndpointUnit` objects (so a diff
            sees at once that they are the same).
    """

    def __init__(
        self, published: PublishedState, base: State | None = None, caveats: tuple[str, ...] = ()
    ) -> None:
        #: What answers about this state must say (see :func:`source_port_caveats
        #: <fqdnpolicy.connectivity.symbolic.source_port_caveats>`).
        self.caveats = caveats
        self.records: Mapping[str, EndpointRecord] = published.records
        self.hosts: Mapping[str, Identity] = published.hosts
        self.prefixes: PrefixTable = published.prefixes
        self.info: Mapping[int, IPSetInfo] = published.sets
        self.base = base
        self._owners: dict[str, str] | None = None
        self._endpoint_ips: frozenset[str] | None = None
        self._pieces: dict[Identity, Piece] | None = None
        records, hosts = self.records, self.hosts
        if base is None:
            self.moved: frozenset[str] = frozenset()
            self.endpoints = {key: _unit(records[key], hosts) for key in sorted(records)}
            return
        #: The host addresses whose identity object differs from ``base``'s.
        self.moved = moved_hosts(base.hosts, hosts)
        old_records = base.records
        rebuild = set(
            compress(records, map(is_not, map(old_records.get, records), records.values()))
        )
        same_keys = records.keys() == old_records.keys()
        if same_keys and not rebuild:
            self._owners = base.owners  # the same endpoints with the same addresses
        owners = base.owners
        rebuild.update(owners[a] for a in self.moved if a in owners)
        if same_keys:
            self.endpoints = dict(base.endpoints)  # (keeps the sorted order)
            for key in rebuild:
                self.endpoints[key] = _unit(records[key], hosts)
        else:
            self.endpoints = {
                key: base.endpoints[key] if key not in rebuild else _unit(records[key], hosts)
                for key in sorted(records)
            }

    @property
    def owners(self) -> dict[str, str]:
        """Each endpoint address and the key of the endpoint owning it."""
        if self._owners is None:
            self._owners = {
                ip: unit.key for unit in self.endpoints.values() for ip in unit.record.endpoint.ips
            }
        return self._owners

    @property
    def endpoint_ips(self) -> frozenset[str]:
        """Every address an endpoint owns."""
        if self._endpoint_ips is None:
            base = self.base
            if base is not None and base.owners is self.owners:
                self._endpoint_ips = base.endpoint_ips
            else:
                self._endpoint_ips = frozenset(self.owners)
        return self._endpoint_ips

    def moved_from(self, other: State) -> frozenset[str] | None:
        """The host addresses whose identity differs from ``other``'s, when known at once."""
        return self.moved if other is self.base else None

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


def _unit(record: EndpointRecord, hosts: Mapping[str, Identity]) -> EndpointUnit:
    addresses: dict[int, list[tuple[str, Identity]]] = {}
    get = hosts.get
    for ip in record.endpoint.ips:
        family = 6 if ":" in ip else 4
        ident = get(ip)
        if ident is None:  # (an endpoint's address is always a host; be safe)
            ident = Identity(family, EMPTY, record.endpoint.named_ports)
        found = addresses.get(family)
        if found is None:
            addresses[family] = [(ip, ident)]
        else:
            found.append((ip, ident))
    # (the record's first address of a family is the first of the endpoint's addresses)
    source = {family: pairs[0][1] for family, pairs in addresses.items()}
    key = record.key
    receivers: list[tuple[int, Identity, str]] = []
    for family, pairs in addresses.items():
        first = pairs[0][1]
        receivers.append((family, first, key))
        for address, ident in pairs[1:]:
            if ident is not first:
                receivers.append((family, ident, f"{key}@{address}"))
    sender = (id(record.egress), id(source.get(4)), id(source.get(6)))
    return EndpointUnit(key, record, source, addresses, sender, receivers)


def read_state(engine: Any, base: State | None = None) -> State:
    """Read ``engine``'s state of now (see the module docstring).

    ``base``, an earlier state of the same engine, lends the new one what did not change.
    """
    from fqdnpolicy.connectivity.symbolic import source_port_caveats

    caveats = source_port_caveats(engine.resources().policies)
    return State(engine.published_state(), base, caveats)
