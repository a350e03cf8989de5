"""Host addresses in address order: which of them a changed prefix covers.

When a rule's CIDR or a network set's nets come or go, every host address inside the prefix
may change identity. The address table finds them here: a sorted list of the host
addresses as integers per family, searched by range.

Hosts come and go with DNS answers far more often than prefixes change, and a DNS answer's
latency is what a connection waits for, so the sorted lists are brought up to date only
when asked (or when the changes pending reach :data:`PENDING_LIMIT`, which bounds their
memory); a host's arrival or departure is then one set operation.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from fqdnpolicy.model import IPNetwork

__all__ = ["PENDING_LIMIT", "HostRanges"]

#: Arrivals and departures held before the sorted lists take them in.
PENDING_LIMIT = 1 << 16


def _to_int(address: str) -> tuple[int, int]:
    if ":" in address:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
    return 4, int.from_bytes(socket.inet_aton(address), "big")


def _from_int(family: int, value: int) -> str:
    if family == 4:
        return socket.inet_ntoa(value.to_bytes(4, "big"))
    return str(ipaddress.IPv6Address(value))


class HostRanges:
    """Host addresses (canonical text) in address order, to find those a prefix covers.

    :meth:`add` takes an address not held, :meth:`discard` one held (the address table's
    hosts as they come and go).
    """

    def __init__(self, hosts: Iterable[str]) -> None:
        by_family: dict[int, list[int]] = {4: [], 6: []}
        for host in hosts:
            family, value = _to_int(host)
            by_family[family].append(value)
        self._sorted = {f: SortedList(values) for f, values in by_family.items()}
        self._added: set[str] = set()  # held, not in the sorted lists yet
        self._gone: set[str] = set()  # in the sorted lists, no longer held

    def add(self, host: str) -> None:
        """``host`` is held from now on."""
        if host in self._gone:
            self._gone.discard(host)  # still in the sorted lists
        else:
            self._added.add(host)
            if len(self._added) >= PENDING_LIMIT:
                self._catch_up()

    def discard(self, host: str) -> None:
        """``host`` is no longer held."""
        if host in self._added:
            self._added.discard(host)
        else:
            self._gone.add(host)
            if len(self._gone) >= PENDING_LIMIT:
                self._catch_up()

    def within(self, net: IPNetwork) -> Iterator[str]:
        """The hosts held inside ``net``, in address order."""
        self._catch_up()
        first = int(net.network_address)
        last = int(net.broadcast_address)
        for value in self._sorted[net.version].irange(first, last):
            yield _from_int(net.version, value)

    def _catch_up(self) -> None:
        added, self._added = self._added, set()
        gone, self._gone = self._gone, set()
        by_family: dict[int, list[int]] = {4: [], 6: []}
        for host in added:
            family, value = _to_int(host)
            by_family[family].append(value)
        for family, values in by_family.items():
            if values:
                self._sorted[family].update(values)
        for host in gone:
            family, value = _to_int(host)
            self._sorted[family].discard(value)
