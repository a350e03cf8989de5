"""The outside world cut into pieces: addresses every policy treats alike, in one state or two.

An outside address (one no endpoint owns) is judged by its identity only, so the outside is cut
by identity: for one state, one piece per identity some outside address has; for two states
(a diff), one piece per pair of identities (old, new) some outside address has. A piece is
named by its address ranges (the prefix-table intervals of its identities, less those made
only of host addresses) and its host addresses (DNS-learned members).

:func:`cut` cuts from scratch, reading every host address of every state: what the map needs.
:class:`JointCut` cuts two states and looks one by one only at the host addresses whose
identity object differs between them: identities are interned and an address keeps its
identity object while its sets do not change, so when both states were read from one engine
(a diff of a change in place) nearly every address has the same identity in both and its pair
is ``(identity, identity)``; which identities some unmoved outside address has is counted in
one pass over the table, and the addresses of a piece are gathered only for the pieces a diff
row names. For states sharing nothing every address differs, and the work is that of
:func:`cut`. Both give the same pieces (a property test holds them to it).
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, islice
from operator import is_, is_not
from typing import Any, Protocol

from fqdnpolicy.connectivity.spaces import network_text
from fqdnpolicy.engine.identities import Identity, PrefixTable

__all__ = ["JointCut", "Members", "Side", "cut", "moved_hosts", "to_int"]

Key = tuple[Identity, ...]
#: A piece's address ranges (CIDRs) and host addresses.
Members = tuple[tuple[str, ...], tuple[str, ...]]

# Addresses of an interval, spread over it, tried for one that is no host before the hosts
# inside it are counted exactly (which needs every host address as a number, sorted).
_PROBE = 4096


class Side(Protocol):
    """What the cut reads of a state."""

    @property
    def hosts(self) -> Mapping[str, Identity]:
        """Canonical host address -> identity."""

    @property
    def prefixes(self) -> PrefixTable:
        """The prefix table."""

    @property
    def endpoint_ips(self) -> frozenset[str]:
        """Every address an endpoint owns."""

    def moved_from(self, other: Any) -> frozenset[str] | None:
        """:func:`moved_hosts` from ``other``'s table to this one, when known at once."""


def to_int(address: str) -> int:
    """Canonical address text as a number."""
    if ":" in address:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
    return int.from_bytes(socket.inet_aton(address), "big")


def _text(value: int, family: int) -> str:
    if family == 4:
        return socket.inet_ntoa(value.to_bytes(4, "big"))
    return str(ipaddress.IPv6Address(value))  # the engine's canonical text, as ipaddress gives


def _intervals(
    tables: Sequence[PrefixTable], family: int
) -> Iterable[tuple[int, int, tuple[Identity, ...]]]:
    """Address intervals between every table's prefix bounds.

    Each comes with each table's prefix-only identity of the interval.
    """
    top = 1 << (32 if family == 4 else 128)
    points = {0}
    for table in tables:
        for net in table.prefixes:
            if net.version == family:
                points.add(int(net.network_address))
                end = int(net.broadcast_address) + 1
                if end < top:
                    points.add(end)
    starts = sorted(points)
    for i, start in enumerate(starts):
        last = (starts[i + 1] if i + 1 < len(starts) else top) - 1
        text = _text(start, family)
        yield start, last, tuple(table.identity(text) for table in tables)


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


def _cidrs(ranges: Iterable[tuple[int, int]], family: int) -> tuple[str, ...]:
    out: list[str] = []
    for first, last in _merged(ranges):
        out.extend(network_text(first, last, family))
    return tuple(out)


def moved_hosts(old: Mapping[str, Identity], new: Mapping[str, Identity]) -> frozenset[str]:
    """The host addresses whose identity object differs between two tables (or that one lacks).

    Tables copied from one engine keep their keys in the order the engine added them (a dict
    keeps the order of the keys it still holds and adds new ones at the end): when the old
    keys are the start of the new ones, values are compared position by position, without
    looking a key up.
    """
    if len(new) >= len(old) and all(map(is_, old, new)):
        moved = set(compress(old, map(is_not, old.values(), new.values())))
        moved.update(islice(new, len(old), None))
        return frozenset(moved)
    moved = set(compress(new, map(is_not, map(old.get, new), new.values())))
    came = sum(1 for address in moved if address not in old)
    if len(old) - len(new) + came:  # (the sizes tell whether any went)
        moved.update(a for a in old if a not in new)
    return frozenset(moved)


def _order(key: Key) -> tuple[int, list[list[int]]]:
    return (key[0].family, [sorted(i) for i in key])


def cut(states: Sequence[Side]) -> dict[Key, Members]:
    """The outside cut by the identities its addresses have in each state, from scratch.

    Returns:
        For each tuple of identities (one per state) some outside address has: the CIDRs of
        the prefix ranges with it (less the ranges made only of hosts) and its host addresses.
        An address is outside when no endpoint owns it in any state.
    """
    endpoint_ips: set[str] = set()
    addresses: set[str] = set()
    for state in states:
        endpoint_ips.update(state.endpoint_ips)
        addresses.update(state.hosts)
    hosts_of: dict[Key, list[str]] = {}
    host_ints: dict[int, list[int]] = {4: [], 6: []}
    v4, v6 = host_ints[4].append, host_ints[6].append
    aton, from_bytes = socket.inet_aton, int.from_bytes
    tables = [(s.hosts.get, s.prefixes.identity) for s in states]
    for address in addresses:
        if ":" in address:
            v6(to_int(address))
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
    ranges: dict[Key, list[tuple[int, int]]] = {}
    prefix_tables = [s.prefixes for s in states]
    for family in (4, 6):
        values = host_ints[family]
        for first, last, key in _intervals(prefix_tables, family):
            inside = bisect.bisect_right(values, last) - bisect.bisect_left(values, first)
            if inside > last - first:
                continue  # every address of it is a host: none left to the prefixes
            ranges.setdefault(key, []).append((first, last))
    return {
        key: (
            _cidrs(ranges.get(key, ()), key[0].family),
            tuple(sorted(hosts_of.get(key, ()), key=to_int)),
        )
        for key in sorted(set(hosts_of) | set(ranges), key=_order)
    }


class JointCut:
    """The outside of two states cut by (old identity, new identity).

    The same pieces as ``cut([old, new])``, found by looking one by one only at the host
    addresses whose identity moved (see the module docstring). :attr:`keys` are known at
    once; :meth:`members` gathers the addresses of the pieces asked for.
    """

    def __init__(self, old: Side, new: Side) -> None:
        self._old = old
        self._new = new
        old_hosts, new_hosts = old.hosts, new.hosts
        old_ips, new_ips = old.endpoint_ips, new.endpoint_ips
        self._endpoint_ips = old_ips if old_ips is new_ips else old_ips | new_ips
        known = new.moved_from(old)
        self._moved = moved = known if known is not None else moved_hosts(old_hosts, new_hosts)
        hosts_of: dict[Key, list[str]] = {}
        old_get, new_get = old_hosts.get, new_hosts.get
        old_prefix, new_prefix = old.prefixes.identity, new.prefixes.identity
        for address in moved:
            if address in self._endpoint_ips:
                continue
            key: Key = (
                _either(old_get(address), old_prefix, address),
                _either(new_get(address), new_prefix, address),
            )
            hosts_of.setdefault(key, []).append(address)
        self._hosts_of = hosts_of
        # Identities some unmoved outside host has: those held in both states alike. An
        # endpoint's address has an identity with its named ports, an outside one none.
        counts = Counter(new_hosts.values())
        for address in moved:
            ident = new_get(address)
            if ident is not None:
                counts[ident] -= 1
        self._counts = counts
        self._sorted: dict[int, list[int]] | None = None
        self._ranges: dict[Key, list[tuple[int, int]]] = {}
        tables = [old.prefixes, new.prefixes]
        for family in (4, 6):
            for first, last, key in _intervals(tables, family):
                if self._has_free(first, last, family):
                    self._ranges.setdefault(key, []).append((first, last))
        #: Every (old identity, new identity) some outside address has (in no set order).
        self.keys: list[Key] = [
            (ident, ident) for ident, count in counts.items() if count > 0 and ident.ports is None
        ]
        more = {key: None for key in (*hosts_of, *self._ranges) if not self._same(key)}
        self.keys.extend(more)

    def _same(self, key: Key) -> bool:
        """Whether some unmoved outside host has ``key`` (an identity alike in both states)."""
        ident = key[0]
        return ident is key[1] and ident.ports is None and self._counts.get(ident, 0) > 0

    def _has_free(self, first: int, last: int, family: int) -> bool:
        """Whether some address of ``first..last`` is a host in neither state."""
        old_hosts, new_hosts = self._old.hosts, self._new.hosts
        if last - first >= len(old_hosts) + len(new_hosts):
            return True
        # Addresses spread over the interval first (hosts often fill one end of a range):
        # one in neither table proves it; only if all are hosts are the hosts counted.
        step = max(1, (last - first + 1) // _PROBE)
        for value in range(first, last + 1, step):
            text = _text(value, family)
            if text not in new_hosts and text not in old_hosts:
                return True
        if step == 1:
            return False
        if self._sorted is None:
            by_family: dict[int, set[int]] = {4: set(), 6: set()}
            for hosts in (old_hosts, new_hosts):
                for address in hosts:
                    by_family[6 if ":" in address else 4].add(to_int(address))
            self._sorted = {f: sorted(values) for f, values in by_family.items()}
        values = self._sorted[family]
        return bisect.bisect_right(values, last) - bisect.bisect_left(values, first) <= last - first

    def members(self, keys: Iterable[Key]) -> dict[Key, Members]:
        """The CIDRs and host addresses of each piece of ``keys`` (as :func:`cut` gives them)."""
        wanted = list(dict.fromkeys(keys))
        hosts: dict[Key, list[str]] = {key: list(self._hosts_of.get(key, ())) for key in wanted}
        same: dict[Identity, Key] = {key[0]: key for key in wanted if self._same(key)}
        if same:
            new_hosts = self._new.hosts
            skip = self._moved | self._endpoint_ips
            for address in compress(new_hosts, map(same.__contains__, new_hosts.values())):
                if address not in skip:
                    hosts[same[new_hosts[address]]].append(address)
        out: dict[Key, Members] = {}
        for key in wanted:
            family = key[0].family
            out[key] = (
                _cidrs(self._ranges.get(key, ()), family),
                tuple(sorted(hosts[key], key=to_int)),
            )
        return out

    def all_members(self) -> dict[Key, Members]:
        """Every piece with its addresses: what ``cut([old, new])`` returns."""
        return self.members(self.keys)
