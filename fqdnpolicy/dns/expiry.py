"""The DNS cache's expiry heap: which name holds the next deadline, found without a scan.

``_sched[name]`` is a lower bound of the earliest deadline among ``name``'s links, and the
heap holds ``(_sched[name], name, ...)`` entries. Extending a link never lowers the bound, so
refreshes leave the heap alone; an entry whose bound turns out early is re-keyed when it comes
to the top (:meth:`ExpiryHeap._settle_top`), and entries superseded by a lower key or left by
a removed name are skipped lazily (an entry is live when its key equals ``_sched[name]``).

A name with exactly one address stores its address links as the tuple ``(deadline, name,
ip)``: a heap entry with the address after it, so one object serves both (see
:data:`Compact`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from fqdnpolicy.dns.nameindex import NameIndex

__all__ = ["AddrLinks", "Compact", "ExpiryHeap", "HeapEntry"]

Compact = tuple[float, str, str]
"""A name's only address link, ``(deadline, name, ip)``: a dict per name for the common
single address would cost several times this tuple, and the tuple doubles as the name's heap
entry (memory per entry in docs/dns-cache.md)."""

AddrLinks = dict[str, float] | Compact
"""A name's address links: ``{ip: deadline}``, or :data:`Compact` for exactly one address."""

HeapEntry = tuple[float, str] | Compact
"""An expiry-heap entry: ``(key, name)``, or the name's compact address links."""

# Below this many due entries, popping them one by one is cheaper than splitting the heap.
_POP_ONE_BY_ONE = 1024


class ExpiryHeap:
    """Which name's links are due next: the heap part of :class:`~fqdnpolicy.dns.DNSCache`.

    A mixin over the cache's state; the cache's constructor sets every attribute.
    """

    _addrs: dict[str, AddrLinks]
    _cnames: dict[str, dict[str, float]]
    _sched: dict[str, float]
    _heap: list[HeapEntry]
    _names: NameIndex

    def _first_deadline(self, name: str) -> float | None:
        """The earliest deadline among ``name``'s links, or None when it has none."""
        addrs = self._addrs.get(name)
        cnames = self._cnames.get(name)
        if addrs:
            first = addrs[0] if isinstance(addrs, tuple) else min(addrs.values())
            return min(first, min(cnames.values())) if cnames else first
        return min(cnames.values()) if cnames else None

    def _schedule(self, name: str, deadline: float, entry: HeapEntry | None = None) -> None:
        """Account for a new link of ``name``: index a new name, lower its heap key if needed.

        ``entry`` is the heap entry to push when it is the name's compact address links.
        """
        previous = self._sched.get(name)
        if previous is None:
            names = self._names
            if names.built:
                names.pending.append(name)
        elif previous <= deadline:
            return
        self._sched[name] = deadline
        heap = self._heap
        heapq.heappush(heap, entry or (deadline, name))
        if len(heap) > 2 * len(self._sched) + 1024:
            # Lowered keys leave superseded entries behind; rebuilding keeps the heap O(names).
            self._heap = [self._heap_entry(n, d) for n, d in self._sched.items()]
            heapq.heapify(self._heap)

    def _heap_entry(self, name: str, key: float) -> HeapEntry:
        """The heap entry for ``name`` at ``key``: its compact address links when they fit."""
        links = self._addrs.get(name)
        if isinstance(links, tuple) and links[0] == key:
            return links
        return (key, name)

    def _settle_top(self) -> tuple[float, str] | None:
        """Make the heap top exact: the name with the earliest deadline (ties: smallest name)."""
        heap, sched = self._heap, self._sched
        while heap:
            top = heap[0]
            deadline, name = top[0], top[1]
            if sched.get(name) != deadline:
                heapq.heappop(heap)  # superseded entry, or the name is gone
                continue
            first = self._first_deadline(name)
            if first is not None and first > deadline:
                sched[name] = first
                heapq.heapreplace(heap, self._heap_entry(name, first))
                continue
            return deadline, name
        return None

    def _pop_due(self, upto: float) -> str | None:
        """Pop the name with the earliest deadline if that deadline is <= ``upto``.

        The caller must then remove the name (``_evict``): its heap entry is gone.
        """
        top = self._settle_top()
        if top is None or top[0] > upto:
            return None
        heapq.heappop(self._heap)
        return top[1]

    def _take_due(self, now: float) -> Iterator[HeapEntry]:
        """Pop the heap entries with a key <= ``now`` (callers may push later keys meanwhile)."""
        heap = self._heap
        for _ in range(_POP_ONE_BY_ONE):
            if not heap or heap[0][0] > now:
                return
            yield heapq.heappop(heap)
        if heap and heap[0][0] <= now:
            # Many are due (names learned in a burst expire in a burst): one pass splitting
            # the heap plus a heapify beats a heappop per entry (bench_dns_cache.py's expiry
            # case).
            due = [entry for entry in heap if entry[0] <= now]
            heap[:] = [entry for entry in heap if entry[0] > now]
            heapq.heapify(heap)
            yield from due
