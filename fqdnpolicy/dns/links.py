"""The DNS cache's link store and CNAME graph: links in, effective mapping and changes out.

The cache stores *links* learned from answers, each with its own deadline (monotonic seconds):
an address link ``name -> ip`` (an A or AAAA record) and a CNAME link ``name -> target``. The
*effective mapping* of a name is every IP reachable from it through at most
``max_chain_depth`` CNAME links and then one address link; the deadline of ``(name, ip)`` is
the best path's weakest link (the maximum over paths of the minimum deadline along the path).

A change is a transaction: the mutators below record each touched name's effective mapping
before its links first change in ``old``, and :meth:`LinkStore._commit` then applies the
bounds, recomputes the touched names and every name above them, and turns the differences into
:class:`~fqdnpolicy.dns.model.DNSChange` batches queued for delivery. Callers hold the cache's
lock throughout.

State kept per name, where most names hold one address or one CNAME target:

* ``_addrs``: address links, ``{ip: deadline}`` or the compact tuple (see
  :data:`fqdnpolicy.dns.expiry.Compact`);
* ``_cnames``: CNAME links, ``{target: deadline}``;
* ``_parents``: CNAME target -> the names linking to it: the name itself when there is one
  (nearly always, and a one-element set costs several times a reference), a set of two or
  more;
* ``_eff``: the effective mapping, stored only for names with CNAME links (for the others it
  is their address links, which saves a dict per plain name). ``_eff`` dicts are replaced,
  never mutated, so holding one is a snapshot.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping

from fqdnpolicy.dns.expiry import AddrLinks, ExpiryHeap
from fqdnpolicy.dns.model import Counters, DNSChange, Subscriber, new_change
from fqdnpolicy.subscribers import Subscribers

__all__ = ["EMPTY", "LinkStore", "as_map", "snapshot"]

_TTL_MAX_VALID = 2**31 - 1  # RFC 2181 section 8: a TTL with the top bit set means 0
_NEG_INF = -math.inf
_LIFETIME_MEMO_LIMIT = 4096

EMPTY: Mapping[str, float] = {}
"""An empty mapping, shared: the mapping of a name without links."""


class LinkStore(ExpiryHeap):
    """Links, the CNAME graph and the effective mapping of :class:`~fqdnpolicy.dns.DNSCache`.

    A mixin over the cache's state; the cache's constructor sets every attribute.
    """

    min_ttl: float
    max_ttl: float
    extra_ttl: float
    grace_period: float
    max_ips_per_name: int
    max_names: int
    max_chain_depth: int
    report_refresh: bool
    keep_alive_period: float
    keep_alive_max_age: float
    max_kept: int
    _parents: dict[str, str | set[str]]
    _eff: dict[str, dict[str, float]]
    _structure: int
    _lifetimes: dict[int, float]
    _zombies: dict[tuple[str, str], float]
    _alive: dict[str, float]
    _c: Counters
    _subscribers: Subscribers[list[DNSChange]]
    _outbox: deque[tuple[list[DNSChange], tuple[Subscriber, ...]]]

    def _memo_lifetime(self, ttl: int) -> float:
        life = self._lifetime(ttl)
        if len(self._lifetimes) < _LIFETIME_MEMO_LIMIT:
            self._lifetimes[ttl] = life
        return life

    def _longest_lifetime(self) -> float:
        """The longest lifetime any answer can give a link under the cache's options."""
        return self._lifetime(_TTL_MAX_VALID)

    def _lifetime(self, ttl: int) -> float:
        if not 0 <= ttl <= _TTL_MAX_VALID:
            ttl = 0
        life = ttl + self.extra_ttl
        if life < self.min_ttl:
            life = self.min_ttl
        elif life > self.max_ttl:
            life = self.max_ttl
        return life + self.grace_period

    # ---------------------------------------------------------------------------------------
    # Link mutation (callers hold the lock and pass the transaction's snapshot dict ``old``)
    # ---------------------------------------------------------------------------------------

    def _touch(self, name: str, old: dict[str, Mapping[str, float]]) -> None:
        """Remember ``name``'s effective mapping before its links first change."""
        if name not in old:
            eff = self._eff.get(name)
            # _eff dicts are replaced, never mutated, so keeping the object is a snapshot;
            # address dicts are mutated in place, so they are copied.
            old[name] = eff if eff is not None else snapshot(self._addrs.get(name))

    def _put_addr(
        self, name: str, ip: str, deadline: float, old: dict[str, Mapping[str, float]]
    ) -> None:
        links = self._addrs.get(name)
        if links is None:
            self._touch(name, old)
            entry = (deadline, name, ip)
            self._addrs[name] = entry
            self._structure += 1
            self._schedule(name, deadline, entry)
            return
        if isinstance(links, tuple):
            if links[2] == ip:
                if links[0] >= deadline:
                    return
                self._touch(name, old)
                self._addrs[name] = (deadline, links[1], ip)
                if self._zombies:
                    self._zombies.pop((name, ip), None)
                return
            # A second address: the name needs a dict from now on.
            self._touch(name, old)
            links = self._addrs[name] = {links[2]: links[0]}
        current = links.get(ip)
        if current is not None and current >= deadline:
            return
        self._touch(name, old)
        links[ip] = deadline
        if self._zombies:
            self._zombies.pop((name, ip), None)  # a real answer again: no longer kept
        if current is not None:
            return
        self._structure += 1
        self._schedule(name, deadline)
        if len(links) > self.max_ips_per_name:
            self._c.over_name_cap += 1
            victim = min(links.items(), key=_by_deadline_then_value)[0]
            del links[victim]
            if self._zombies:
                self._zombies.pop((name, victim), None)

    def _put_cname(
        self, name: str, target: str, deadline: float, old: dict[str, Mapping[str, float]]
    ) -> None:
        links = self._cnames.get(name)
        if links is None:
            self._touch(name, old)
            self._cnames[name] = {target: deadline}
            self._structure += 1
            self._add_parent(target, name)
            self._schedule(name, deadline)
            return
        current = links.get(target)
        if current is not None and current >= deadline:
            return
        self._touch(name, old)
        links[target] = deadline
        if current is not None:
            return
        self._structure += 1
        self._add_parent(target, name)
        self._schedule(name, deadline)
        if len(links) > self.max_ips_per_name:
            self._c.over_name_cap += 1
            victim = min(links.items(), key=_by_deadline_then_value)[0]
            del links[victim]
            self._drop_parent(victim, name)

    def _add_parent(self, target: str, name: str) -> None:
        parents = self._parents.get(target)
        if parents is None:
            self._parents[target] = name
        elif isinstance(parents, str):
            if parents != name:
                self._parents[target] = {parents, name}
        else:
            parents.add(name)

    def _drop_parent(self, target: str, name: str) -> None:
        parents = self._parents.get(target)
        if parents is None:
            return
        if isinstance(parents, str):
            if parents == name:
                del self._parents[target]
            return
        parents.discard(name)
        if len(parents) == 1:
            self._parents[target] = next(iter(parents))
        elif not parents:
            del self._parents[target]

    def _evict(self, name: str, old: dict[str, Mapping[str, float]]) -> None:
        """Remove every link of ``name`` (popped from the heap by ``_pop_due``)."""
        self._touch(name, old)
        self._structure += 1
        addrs = self._addrs.pop(name, None)
        if addrs is not None and self._zombies:
            for ip in as_map(addrs):
                self._zombies.pop((name, ip), None)
        cnames = self._cnames.pop(name, None)
        if cnames is not None:
            for target in cnames:
                self._drop_parent(target, name)
        del self._sched[name]
        self._names.removed += 1

    # ---------------------------------------------------------------------------------------
    # Committing a batch of link changes: bounds, effective mapping, change events
    # ---------------------------------------------------------------------------------------

    def _commit(
        self,
        old: dict[str, Mapping[str, float]],
        now: float,
        zombie_origin: dict[tuple[str, str], float] | None = None,
        *,
        since: int | None = None,
    ) -> list[DNSChange]:
        """Apply bounds, recompute what changed and publish the differences.

        ``since`` is the structure version at the start of the batch, when known: if no link
        appeared or disappeared since, only deadlines moved and there is nothing to report
        (unless ``report_refresh``).
        """
        if not old:
            return []
        while len(self._sched) > self.max_names:
            victim = self._pop_due(math.inf)
            if victim is None:  # pragma: no cover - the heap holds every name
                break
            self._evict(victim, old)
            self._c.evicted_names += 1

        new = self._recompute(old)
        if zombie_origin is not None:
            self._keep_zombies(old, new, now, zombie_origin)
        self._names.trim(len(self._sched))
        if since == self._structure and not self.report_refresh:
            return []  # only deadlines moved: no pair can have appeared or disappeared
        return self._publish(old, new)

    def _recompute(self, old: dict[str, Mapping[str, float]]) -> dict[str, Mapping[str, float]]:
        new: dict[str, Mapping[str, float]] = {}
        for name in self._ancestors(list(old)):
            if name not in old:
                self._touch(name, old)
            if name in self._cnames:
                mapping = self._effective(name)
                self._eff[name] = mapping
                new[name] = mapping
            else:
                self._eff.pop(name, None)
                new[name] = as_map(self._addrs.get(name, EMPTY))
        return new

    def _ancestors(self, names: list[str]) -> list[str]:
        """``names`` plus every name with a CNAME path of at most the depth limit to one."""
        parents = self._parents
        frontier = [n for n in names if n in parents]
        if not frontier:
            return names
        seen = set(names)
        result = list(names)
        for _ in range(self.max_chain_depth):
            if not frontier:
                break
            nxt = []
            for name in frontier:
                found = parents.get(name)
                if found is None:
                    continue
                for parent in (found,) if isinstance(found, str) else found:
                    if parent not in seen:
                        seen.add(parent)
                        result.append(parent)
                        nxt.append(parent)
            frontier = nxt
        return result

    def _effective(self, name: str) -> dict[str, float]:
        """Effective mapping of ``name`` from the links, computed from scratch.

        Breadth-first by number of CNAME links: a name reached at a later depth with no
        better bottleneck than at an earlier one is dropped, since the earlier visit can go
        at least as far and as long. That also ends loops.
        """
        addrs, cnames = self._addrs, self._cnames
        links = cnames[name]
        if len(links) == 1 and name not in addrs:
            # The common shape, one CNAME to a name holding only addresses, without the
            # general walk: it is most of what a busy cache recomputes.
            ((target, width),) = links.items()
            if target not in cnames:
                tail = addrs.get(target)
                if tail is None:
                    return {}
                if isinstance(tail, tuple):
                    return {tail[2]: width if width < tail[0] else tail[0]}
                return {ip: width if width < d else d for ip, d in tail.items()}
        out = dict(as_map(addrs.get(name, EMPTY)))
        best: dict[str, float] = {name: math.inf}
        layer: dict[str, float] = {name: math.inf}
        for _ in range(self.max_chain_depth):
            nxt: dict[str, float] = {}
            for node, value in layer.items():
                node_links = cnames.get(node)
                if node_links is None:
                    continue
                for target, deadline in node_links.items():
                    width = value if value < deadline else deadline
                    if width > best.get(target, _NEG_INF) and width > nxt.get(target, _NEG_INF):
                        nxt[target] = width
            if not nxt:
                break
            for node, width in nxt.items():
                best[node] = width
                node_addrs = addrs.get(node)
                if node_addrs:
                    for ip, deadline in as_map(node_addrs).items():
                        value = width if width < deadline else deadline
                        if value > out.get(ip, _NEG_INF):
                            out[ip] = value
            layer = nxt
        return out

    def _publish(
        self, old: dict[str, Mapping[str, float]], new: dict[str, Mapping[str, float]]
    ) -> list[DNSChange]:
        changes: list[DNSChange] = []
        refresh = self.report_refresh
        for name, mapping in new.items():
            before = old[name]
            added = 0
            for ip, expiry in mapping.items():
                previous = before.get(ip)
                if previous is None:
                    added += 1
                    changes.append(new_change(DNSChange, (name, ip, True, expiry)))
                elif refresh and previous != expiry:
                    changes.append(new_change(DNSChange, (name, ip, True, expiry)))
            # mapping = kept + added, so before lost something exactly when it is larger
            # than what it kept; this avoids a scan of big names on every refresh.
            if len(before) > len(mapping) - added:
                for ip, expiry in before.items():
                    if ip not in mapping:
                        changes.append(new_change(DNSChange, (name, ip, False, expiry)))
        if changes:
            callbacks = self._subscribers.callbacks
            if callbacks:
                self._outbox.append((changes, callbacks))
        return changes

    def _keep_zombies(
        self,
        old: dict[str, Mapping[str, float]],
        new: dict[str, Mapping[str, float]],
        now: float,
        zombie_origin: dict[tuple[str, str], float],
    ) -> None:
        """Turn pairs about to disappear into direct links while their IP has connections."""
        if not self._alive:
            return
        kept: list[str] = []
        for name, mapping in new.items():
            for ip in old[name]:
                if ip in mapping:
                    continue
                mark = self._alive.get(ip)
                if mark is None:
                    continue
                origin = zombie_origin.get((name, ip), now)
                deadline = min(mark + self.keep_alive_period, origin + self.keep_alive_max_age)
                if deadline <= now:
                    continue
                if len(self._zombies) >= self.max_kept:
                    self._c.keep_alive_refused += 1
                    continue
                links = self._addrs.get(name)
                if links is None:
                    self._addrs[name] = (deadline, name, ip)
                elif isinstance(links, tuple):
                    self._addrs[name] = {links[2]: links[0], ip: deadline}
                else:
                    links[ip] = deadline
                self._structure += 1
                self._schedule(name, deadline)
                self._zombies[name, ip] = origin
                self._c.kept_alive += 1
                kept.append(name)
        if kept:
            new.update(self._recompute(old))

    def _expire_due(
        self,
        now: float,
        old: dict[str, Mapping[str, float]],
        origin: dict[tuple[str, str], float],
    ) -> int:
        """Drop every link due at ``now``; return how many.

        Heap entries due are taken in one go and each name handled inline: expiring
        100,000 names must take well under a second, and the calls were most of the cost.
        """
        heap, sched = self._heap, self._sched
        addrs_of, cnames_of, eff_of = self._addrs, self._cnames, self._eff
        zombies = self._zombies
        heappush = heapq.heappush
        removed = 0
        gone = 0
        for entry in self._take_due(now):
            name = entry[1]
            if sched.get(name) != entry[0]:
                continue  # superseded entry, or the name is gone
            first = math.inf
            addrs = addrs_of.get(name)
            cnames = cnames_of.get(name)
            if name not in old:
                eff = eff_of.get(name)
                if eff is not None:
                    old[name] = eff
                elif addrs is not None and cnames is None and _latest(addrs) <= now:
                    # Every address goes: hand over the dict itself instead of a copy.
                    gone_links = old[name] = as_map(addrs)
                    del addrs_of[name]
                    removed += len(gone_links)
                    if zombies:
                        for ip in gone_links:
                            kept_since = zombies.pop((name, ip), None)
                            if kept_since is not None:
                                origin[name, ip] = kept_since
                    addrs = None
                else:
                    old[name] = snapshot(addrs)
            if isinstance(addrs, tuple):
                if addrs[0] <= now:
                    del addrs_of[name]
                    removed += 1
                    if zombies:
                        kept_since = zombies.pop((name, addrs[2]), None)
                        if kept_since is not None:
                            origin[name, addrs[2]] = kept_since
                else:
                    first = addrs[0]
            elif addrs is not None:
                due = [ip for ip, d in addrs.items() if d <= now]
                for ip in due:
                    del addrs[ip]
                    if zombies:
                        kept_since = zombies.pop((name, ip), None)
                        if kept_since is not None:
                            origin[name, ip] = kept_since
                removed += len(due)
                if len(addrs) > 1:
                    first = min(addrs.values())
                elif addrs:
                    ((ip, first),) = addrs.items()
                    addrs_of[name] = (first, name, ip)  # compact again: see _Compact
                else:
                    del addrs_of[name]
            if cnames is not None:
                due = [t for t, d in cnames.items() if d <= now]
                for target in due:
                    del cnames[target]
                    self._drop_parent(target, name)
                removed += len(due)
                if cnames:
                    first = min(first, min(cnames.values()))
                else:
                    del cnames_of[name]
            if first == math.inf:
                del sched[name]
                gone += 1
            else:
                # Nothing due means the key was a stale lower bound (a refresh): re-key.
                sched[name] = first
                links = addrs_of.get(name)
                heappush(
                    heap, links if isinstance(links, tuple) and links[0] == first else (first, name)
                )
        if removed:
            self._structure += 1
        self._names.removed += gone
        return removed


def _by_deadline_then_value(item: tuple[str, float]) -> tuple[float, str]:
    return item[1], item[0]


def _latest(links: AddrLinks) -> float:
    """The latest deadline among a name's address links."""
    if isinstance(links, tuple):
        return links[0]
    return max(links.values())


def as_map(links: AddrLinks | Mapping[str, float]) -> Mapping[str, float]:
    """The ``{ip: deadline}`` view of a name's address links (compact ones become a dict)."""
    if isinstance(links, tuple):
        return {links[2]: links[0]}
    return links


def snapshot(links: AddrLinks | None) -> Mapping[str, float]:
    """A copy of a name's address links that later mutations of the cache leave alone."""
    if links is None:
        return EMPTY
    if isinstance(links, tuple):
        return {links[2]: links[0]}
    return dict(links)
