"""The DNS cache's fast paths: the three commonest shapes of answer, learned directly.

The general path (snapshot the touched names, recompute, diff) handles any answer. Three common
shapes are learned here instead, writing links, mappings and events directly; each yields
exactly what the general path would, events in the same order (``test_cache_fast_path.py``
checks them against it), and declines (returns None) whatever it does not handle:

* an answer that only adds new names (``q CNAME c1 ... -> addresses``, no name of the chain
  known or pointed to, no bound reached), the common case for a busy node learning names;
* a refresh of a chain the cache holds exactly so (each CNAME the only link of its owner, the
  chain's end holding every address of the answer), the common case for popular names
  re-resolved: only deadlines can move, so it extends the links the answer gives more time,
  recomputes the chain's mappings from the link deadlines and those of names pointing into
  the chain as usual, and reports nothing unless ``report_refresh``. Like the general path
  it leaves the expiry heap alone (a key is a lower bound; expiry re-keys);
* new addresses of a name holding only addresses, that no name points at (a resolver
  rotating a pool of addresses): only that name's mapping grows.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Mapping, Sequence

from fqdnpolicy.dns.addresses import SUSPECT_HEADS
from fqdnpolicy.dns.expiry import AddrLinks, HeapEntry
from fqdnpolicy.dns.links import EMPTY, LinkStore, as_map, snapshot
from fqdnpolicy.dns.model import (
    RTYPE_A,
    RTYPE_AAAA,
    RTYPE_CNAME,
    DNSChange,
    RecordTuple,
    new_change,
)

__all__ = ["FastPaths"]


class FastPaths(LinkStore):
    """The fast paths of :class:`~fqdnpolicy.dns.DNSCache` (a mixin over its state)."""

    def _ingest_new(
        self, qname: str, records: Sequence[RecordTuple], now: float
    ) -> list[DNSChange] | None:
        """Learn the most common answer directly, or return None to leave it to the general path.

        The shape: ``q CNAME c1``, ``c1 CNAME c2``, ... (zero or more links, in that order),
        then only A/AAAA records of the chain's last name, where no name of the chain holds
        links or is a CNAME target yet, and no bound is reached. Then the new links touch no
        other name, every effective pair is new, and the mappings and events follow directly
        from the answer: ``_recompute``'s walk, the snapshots of ``_touch`` and the diff of
        ``_publish`` (most of the cost of a new answer) are not needed. The result is
        exactly the general path's, events in the same order (``test_cache_fast_path.py``).
        """
        sched, parents, lifetimes = self._sched, self._parents, self._lifetimes
        if qname in sched or qname in parents:
            return None
        chain = [qname]
        link_deadlines: list[float] = []
        tail = qname
        i = 0  # records before the addresses
        for owner, rtype, ttl, value in records:
            if rtype != RTYPE_CNAME:
                break
            if owner != tail or value in sched or value in parents or value in chain:
                return None
            life = lifetimes.get(ttl)
            if life is None:
                life = self._memo_lifetime(ttl)
            deadline = now + life
            if deadline <= now:
                return None
            link_deadlines.append(deadline)
            chain.append(value)
            tail = value
            i += 1
        if i == len(records) or i > self.max_chain_depth or len(sched) + i + 1 > self.max_names:
            return None
        tail_links: dict[str, float] = {}
        setdefault = tail_links.setdefault
        intern = sys.intern
        last_ttl: int | None = None
        deadline = now
        # The general path schedules each address as it first appears, and a later repeat
        # only extends it (leaving that key as the name's lower bound), so the heap key is
        # the earliest first-appearance deadline, not the earliest final one.
        first = math.inf
        for owner, rtype, ttl, value in records[i:] if i else records:
            if owner != tail or (rtype != RTYPE_A and rtype != RTYPE_AAAA):
                return None
            # addresses.suspect() inlined: its call was most of what the rule costs here.
            if value[:4] in SUSPECT_HEADS or "%" in value:
                return None  # the general path counts what it rejects
            if ttl != last_ttl:
                # The records of an RRset share one float, not one per address.
                life = lifetimes.get(ttl)
                if life is None:
                    life = self._memo_lifetime(ttl)
                deadline = now + life
                if deadline <= now:
                    return None
                last_ttl = ttl
            # One lookup: ``deadline`` itself comes back for a new address (or a repeat
            # holding this very float, for which nothing changes either way).
            previous = setdefault(intern(value), deadline)
            if previous is deadline:
                if deadline < first:
                    first = deadline
            elif deadline > previous:
                tail_links[value] = deadline  # a repeated address keeps its first place
        if len(tail_links) > self.max_ips_per_name:
            return None

        # Accepted: from here on every step is the general path's outcome for this shape.
        heap = self._heap
        heappush = heapq.heappush
        entry: HeapEntry
        if len(tail_links) == 1:
            ((ip, last),) = tail_links.items()
            entry = self._addrs[tail] = (last, tail, ip)
            if first < last:
                entry = (first, tail)  # a repeat extended the address: key the first sight
        else:
            self._addrs[tail] = tail_links
            entry = (first, tail)
        sched[tail] = first
        heappush(heap, entry)
        self._structure += 1
        changes: list[DNSChange] = []
        append = changes.append
        if i:
            cnames_of, eff_of = self._cnames, self._eff
            # A chain name's pairs live while its weakest link to the tail does.
            widths = link_deadlines
            if i > 1:
                widths = link_deadlines[:]
                for j in range(i - 2, -1, -1):
                    if widths[j + 1] < widths[j]:
                        widths[j] = widths[j + 1]
            # Question first, as the general path touches the names (and orders the events).
            for j, width in enumerate(widths):
                name, target, deadline = chain[j], chain[j + 1], link_deadlines[j]
                cnames_of[name] = {target: deadline}
                parents[target] = name
                sched[name] = deadline
                heappush(heap, (deadline, name))
                eff = {}
                for ip, d in tail_links.items():
                    if width < d:
                        d = width
                    eff[ip] = d
                    append(new_change(DNSChange, (name, ip, True, d)))
                eff_of[name] = eff
        for ip, deadline in tail_links.items():
            append(new_change(DNSChange, (tail, ip, True, deadline)))
        names = self._names
        if names.built:
            # Only a built index has pending names (and every operation ends with this check,
            # so without one it cannot have become due here, where names are only added).
            names.pending.extend(chain)
            names.trim(len(sched))
        callbacks = self._subscribers.callbacks
        if callbacks:
            self._outbox.append((changes, callbacks))
        return changes

    def _ingest_refresh(
        self, qname: str, records: Sequence[RecordTuple], now: float
    ) -> list[DNSChange] | None:
        """Learn a refresh of a known chain directly, or return None for the general path.

        The shape: ``q CNAME c1``, ``c1 CNAME c2``, ... (zero or more links, in that order,
        at most ``max_chain_depth``), then only A/AAAA records of the chain's last name, where
        each CNAME of the answer is already the only link its owner holds, and the last name
        holds no CNAME and already every address of the answer. Then no link appears or
        disappears, so no pair can appear or disappear anywhere: the answer can only extend
        deadlines (the last name may hold addresses the answer leaves out; neither path
        touches those). Each chain name has one path to the addresses, so its mapping follows
        from the link deadlines directly; names outside the chain pointing into it are
        recomputed as the general path does, and only when a chain name's mapping changed.
        The result is exactly the general path's, events in the same order
        (``test_cache_fast_path.py``).
        """
        cnames_of, addrs_of, lifetimes = self._cnames, self._addrs, self._lifetimes
        parents = self._parents
        chain: list[str] = []
        link_deadlines: list[float] = []  # each chain link's deadline once the answer is in
        grown: list[tuple[dict[str, float], str, float]] = []  # CNAME links to extend
        later: list[tuple[str, float]] = []  # tail addresses to extend
        # Whether a name outside the chain points into it: its mapping may then change too.
        shared = qname in parents
        tail = qname
        tail_links: AddrLinks | None = None
        last_ttl: int | None = None
        deadline = now
        for owner, rtype, ttl, value in records:
            if owner != tail:
                return None
            if ttl != last_ttl:
                life = lifetimes.get(ttl)
                if life is None:
                    life = self._memo_lifetime(ttl)
                deadline = now + life
                if deadline <= now:
                    return None
                last_ttl = ttl
            if rtype == RTYPE_CNAME:
                links = cnames_of.get(owner)
                if tail_links is not None or links is None or len(links) != 1:
                    return None
                current = links.get(value)
                # A loop ends at a name holding a CNAME, which the last name may not.
                if current is None or owner in addrs_of:
                    return None
                if deadline > current:
                    grown.append((links, owner, deadline))
                    link_deadlines.append(deadline)
                else:
                    link_deadlines.append(current)
                if parents.get(value) != owner:
                    shared = True
                chain.append(owner)
                tail = value
                continue
            if rtype != RTYPE_A and rtype != RTYPE_AAAA:
                return None
            if tail_links is None:
                tail_links = addrs_of.get(tail)
                if tail_links is None or tail in cnames_of:
                    return None
            if isinstance(tail_links, tuple):
                if value != tail_links[2]:
                    return None
                current = tail_links[0]
            else:
                current = tail_links.get(value)
                if current is None:
                    return None  # sinkholes are never held, so they end up here too
            if deadline > current:
                later.append((value, deadline))
        if tail_links is None or len(chain) > self.max_chain_depth:
            return None

        # Accepted: every link of the answer is held. Extend those the answer gives more time.
        if not grown and not later:
            return []  # the general path changes nothing either
        touched: list[str] = []
        for links, owner, deadline in grown:
            ((target, _),) = links.items()
            links[target] = deadline
            touched.append(owner)
        refresh = self.report_refresh
        before: Mapping[str, float] = EMPTY
        if later:
            if isinstance(tail_links, tuple):
                before = {tail_links[2]: tail_links[0]}
                deadline = max([d for _, d in later])  # the answer may repeat the address
                # A new tuple: the old one may be the heap entry, a lower bound from now on.
                tail_links = addrs_of[tail] = (deadline, tail_links[1], tail_links[2])
            else:
                if refresh:
                    before = dict(tail_links)
                for ip, deadline in later:
                    if deadline > tail_links[ip]:
                        tail_links[ip] = deadline
            zombies = self._zombies
            if zombies:
                for ip, _ in later:
                    zombies.pop((tail, ip), None)  # a real answer again: no longer kept
            touched.append(tail)
        # _sched stays a lower bound (an extension never lowers it), as on the general path;
        # _settle_top and expire re-key a name whose bound turned out early.
        self._names.trim(len(self._sched))

        # Each chain name leads to every address of the tail, no later than the weakest link
        # between them.
        eff_of = self._eff
        if isinstance(tail_links, tuple):
            tail_map: Mapping[str, float] = {tail_links[2]: tail_links[0]}
            latest = tail_links[0]
        else:
            tail_map = tail_links
            latest = max(tail_links.values(), default=math.inf) if chain else math.inf
        keep = refresh or shared
        fresh: dict[str, tuple[Mapping[str, float], Mapping[str, float]]] = {}
        changed = bool(later)
        width = math.inf
        for j in range(len(chain) - 1, -1, -1):
            if link_deadlines[j] < width:
                width = link_deadlines[j]
            name = chain[j]
            held = eff_of[name]
            if width >= latest:
                # The links outlast every address (a CNAME's TTL is usually the longer): a
                # plain copy is cheaper than the comprehension below.
                mapping = dict(tail_map)
            else:
                mapping = {ip: width if width < d else d for ip, d in tail_map.items()}
            if mapping != held:
                eff_of[name] = mapping
                changed = True
            if keep:
                fresh[name] = (held, mapping)
        if not changed or not keep:
            # Without report_refresh only membership changes are events, and no name
            # outside the chain depends on it: done.
            return []
        if later:
            fresh[tail] = (before, tail_map)

        changes: list[DNSChange] = []
        old: Mapping[str, float]
        new: Mapping[str, float]
        for name in self._ancestors(touched):
            pair = fresh.get(name)
            if pair is not None:
                if not refresh:
                    continue
                old, new = pair
            else:
                # A name outside the chain pointing into it: recomputed as the general path
                # does (its own links are unchanged).
                prior = eff_of.get(name)
                old = prior if prior is not None else snapshot(addrs_of.get(name))
                if name in cnames_of:
                    new = eff_of[name] = self._effective(name)
                else:
                    eff_of.pop(name, None)
                    new = as_map(addrs_of.get(name, EMPTY))
                if not refresh:
                    continue
            for ip, expiry in new.items():
                if old.get(ip) != expiry:
                    changes.append(new_change(DNSChange, (name, ip, True, expiry)))
        if changes:
            callbacks = self._subscribers.callbacks
            if callbacks:
                self._outbox.append((changes, callbacks))
        return changes

    def _ingest_grown(
        self, qname: str, records: Sequence[RecordTuple], now: float
    ) -> list[DNSChange] | None:
        """Learn more addresses of a name holding only addresses, or return None.

        The shape: only A/AAAA records of the question, where the question holds address
        links, no CNAME, and no name points at it, and the new addresses stay within
        ``max_ips_per_name``: a name whose resolver rotates addresses (a CDN, a pool), the
        commonest answer a refresh declines. No other name's mapping can change, so the
        links are written as the general path writes them (``_put_addr``) and the events
        are the new addresses in order (with ``report_refresh``, the diff of the name's
        mapping): no walk, no recompute of other names (``test_cache_fast_path.py``).
        """
        addrs_of, lifetimes = self._addrs, self._lifetimes
        links = addrs_of.get(qname)
        if links is None or qname in self._cnames or qname in self._parents:
            return None
        held: Mapping[str, float] = as_map(links)
        # Checked whole before anything changes: a record of another shape, or a bound
        # reached, leaves the answer to the general path.
        deadlines: list[float] = []
        new: set[str] = set()
        last_ttl: int | None = None
        deadline = now
        for owner, rtype, ttl, value in records:
            if owner != qname or (rtype != RTYPE_A and rtype != RTYPE_AAAA):
                return None
            if value[:4] in SUSPECT_HEADS or "%" in value:
                return None  # the general path counts what it rejects
            if ttl != last_ttl:
                life = lifetimes.get(ttl)
                if life is None:
                    life = self._memo_lifetime(ttl)
                deadline = now + life
                if deadline <= now:
                    return None
                last_ttl = ttl
            deadlines.append(deadline)
            if value not in held:
                new.add(value)
        if len(held) + len(new) > self.max_ips_per_name:
            return None

        # Accepted: each record as _put_addr stores it.
        refresh = self.report_refresh
        before = snapshot(links) if refresh else EMPTY
        zombies = self._zombies
        touched = False
        added: list[str] = []
        intern = sys.intern
        for (_, _, _, value), deadline in zip(records, deadlines, strict=True):
            if isinstance(links, tuple):
                if links[2] == value:
                    if links[0] >= deadline:
                        continue
                    links = addrs_of[qname] = (deadline, links[1], value)
                    touched = True
                    if zombies:
                        zombies.pop((qname, value), None)
                    continue
                links = addrs_of[qname] = {links[2]: links[0]}  # a second address
            current = links.get(value)
            if current is not None and current >= deadline:
                continue
            touched = True
            if current is None:
                value = intern(value)
                added.append(value)
            links[value] = deadline
            if zombies:
                zombies.pop((qname, value), None)  # a real answer again: no longer kept
            if current is None:
                self._structure += 1
                self._schedule(qname, deadline)
        if not touched:
            return []
        self._names.trim(len(self._sched))
        if refresh:
            return self._publish({qname: before}, {qname: as_map(links)})
        if not added:
            return []  # only deadlines moved: without report_refresh, no event
        mapping = as_map(links)
        changes = [new_change(DNSChange, (qname, ip, True, mapping[ip])) for ip in added]
        callbacks = self._subscribers.callbacks
        if callbacks:
            self._outbox.append((changes, callbacks))
        return changes
