"""The name manager: DNS pairs in, domain-set members out.

A domain set (a rule's ``domains``, a network set's ``allowedEgressDomains``) holds every
address the DNS cache maps a matching name to. When a set appears, the names already cached
are pulled from the cache; afterwards each DNS change (a name gaining or losing an address)
goes through the pattern index to the sets whose patterns match the name. A member's expiry
is the latest among the names that lead to it; selector sets that picked the network set
owning a domain set (its ``parents``) receive the same members.

Each followed name (one some set matches, with addresses) keeps the sets it matched, marked
with the pattern index's generation: a name answered again goes to its sets without walking
the index, until a set's patterns come or go.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import TYPE_CHECKING

from fqdnpolicy.domains import DomainPattern, PatternIndex
from fqdnpolicy.engine.ipsets import IPSet, IPSetRegistry

if TYPE_CHECKING:
    from fqdnpolicy.dns import DNSCache

__all__ = ["NameManager", "domains_key"]


class _Followed:
    """A followed name: the sets it matched (at index generation ``gen``) and its addresses."""

    __slots__ = ("gen", "ips", "nums")

    def __init__(self, gen: int, nums: frozenset[int], ips: set[str]) -> None:
        self.gen = gen
        self.nums = nums
        self.ips = ips


def domains_key(patterns: Sequence[DomainPattern]) -> tuple[str, str]:
    """The registry key and canonical text of a domain set."""
    text = ",".join(sorted({p.text for p in patterns}))
    return f"domains:{text}", text


class NameManager:
    """Domain sets' members, kept in step with the DNS cache."""

    def __init__(self, registry: IPSetRegistry, dns: DNSCache) -> None:
        self._registry = registry
        self._dns = dns
        self._patterns: PatternIndex[int] = PatternIndex()
        self._gen = 0  # moves whenever a pattern comes or goes
        # DNS pairs seen for names some set matches: removals of pairs never added (or
        # learned twice, once by a pull and once as a change) are recognised.
        self._followed: dict[str, _Followed] = {}

    def _sets_of(self, name: str, followed: _Followed | None) -> frozenset[int]:
        """The sets ``name`` matches: its followed entry's, while the index is unchanged."""
        if followed is None:
            return self._patterns.match(name)
        if followed.gen != self._gen:
            followed.nums = self._patterns.match(name)
            followed.gen = self._gen
        return followed.nums

    def acquire(self, patterns: Sequence[DomainPattern], *, pull: bool) -> IPSet:
        """Take a reference to the domain set of ``patterns``, creating it if needed.

        With ``pull``, a new set is filled from the names already cached (the first build
        skips this and fills every set in one pass, :meth:`learn_all`).
        """
        key, text = domains_key(patterns)
        ipset = self._registry.get(key)
        if ipset is None:
            ipset = self._registry.create(key, "domains", text)
            ipset.patterns = tuple(patterns)
            names: set[str] = set()
            self._gen += 1
            for pattern in ipset.patterns:
                self._patterns.add(pattern, ipset.num)
                if pull:
                    names |= self._dns.names_matching(pattern)
            for name in sorted(names):  # each name once, even if several patterns match it
                for ip, expiry in self._dns.expiries(name).items():
                    self.pair_added(name, ip, expiry, only={ipset.num})
        ipset.refs += 1
        return ipset

    def dropped(self, ipset: IPSet) -> None:
        """Empty a domain set whose last reference went."""
        registry = self._registry
        self._gen += 1
        for pattern in ipset.patterns:
            self._patterns.discard(pattern, ipset.num)
        for member in list(ipset.dns_members):
            del ipset.dns_members[member]
            registry.remove_host(ipset, member)
        ipset.dns_sources.clear()
        # Names only these patterns matched are no longer followed. Only names they match
        # in the cache are candidates (one index query each, not a scan of every name).
        candidates: set[str] = set()
        for pattern in ipset.patterns:
            candidates |= self._dns.names_matching(pattern)
        followed = self._followed
        for name in candidates:
            if name in followed and not self._sets_of(name, followed[name]):
                del followed[name]

    def learn_all(self) -> None:
        """Fill every domain set from every cached name (the first build).

        One pass over the cache instead of one range scan per pattern: each name goes through
        the pattern index once, and every pair is new (no deltas).
        """
        dns, match, followed, gen = self._dns, self._patterns.match, self._followed, self._gen
        sets = self._registry.by_num
        table = self._registry.table
        add_hosts, unknown, learn = table.add_hosts, table.unknown, table.learn
        for name in dns.names():
            nums = match(name)
            if not nums:
                continue
            pairs = dns.expiries(name)
            if not pairs:
                continue
            followed[name] = _Followed(gen, nums, set(pairs))
            # Addresses no set holds yet (most: one name each) join every set of the name at
            # once; the others are counted set by set.
            fresh = unknown(pairs)
            targets = set(nums)
            # A selector set inheriting from two of the name's sets counts the address once
            # per set it inherits from, as a later answer or a removal counts it.
            shared: list[int] = []
            for num in nums:
                ipset = sets[num]
                shared.extend(p for p in ipset.parents if p in targets)
                targets.update(ipset.parents)
                members = ipset.dns_members
                new: list[str] = []
                for ip, expiry in pairs.items():
                    known = members.get(ip)
                    if known is None:
                        members[ip] = expiry
                        new.append(ip)
                    else:
                        ipset.dns_sources[ip] = ipset.dns_sources.get(ip, 1) + 1
                        if expiry > known:
                            members[ip] = expiry
                if len(new) > len(fresh):
                    older = [ip for ip in new if ip not in fresh]
                    add_hosts(num, older)
                    for parent in ipset.parents:
                        add_hosts(parent, older)
            if fresh:
                learn(fresh, tuple(sorted(targets)))
                for parent in shared:
                    add_hosts(parent, fresh)

    def pair_added(self, name: str, ip: str, expiry: float, only: Set[int] | None = None) -> None:
        """The cache maps ``name`` to ``ip`` until ``expiry`` (new, or refreshed)."""
        entry = self._followed.get(name)
        nums = self._sets_of(name, entry) if only is None else only
        if not nums:
            return
        if entry is None:
            entry = self._followed[name] = _Followed(self._gen, self._patterns.match(name), set())
        ips = entry.ips
        fresh = ip not in ips
        ips.add(ip)
        registry = self._registry
        sets = registry.by_num
        for num in nums:
            ipset = sets[num]
            known = ipset.dns_members.get(ip)
            if known is None:
                ipset.dns_members[ip] = expiry
                registry.add_host(ipset, ip, expiry)
                for parent in ipset.parents:
                    registry.add_host(sets[parent], ip, expiry)
                continue
            if fresh or only is not None:
                ipset.dns_sources[ip] = ipset.dns_sources.get(ip, 1) + 1
            if expiry > known:  # a refresh: datapaths with element timeouts extend them
                ipset.dns_members[ip] = expiry
                registry.refresh_host(ipset, ip, expiry)
                for parent in ipset.parents:
                    registry.refresh_host(sets[parent], ip, expiry)

    def pair_removed(self, name: str, ip: str) -> None:
        """The cache no longer maps ``name`` to ``ip``."""
        entry = self._followed.get(name)
        if entry is None or ip not in entry.ips:
            return
        entry.ips.discard(ip)
        nums = self._sets_of(name, entry)
        if not entry.ips:
            del self._followed[name]
        registry = self._registry
        sets = registry.by_num
        for num in nums:
            ipset = sets[num]
            if ip not in ipset.dns_members:
                continue
            left = ipset.dns_sources.pop(ip, 1) - 1
            if left > 1:
                ipset.dns_sources[ip] = left
            if left <= 0:
                del ipset.dns_members[ip]
                registry.remove_host(ipset, ip)
                for parent in ipset.parents:
                    registry.remove_host(sets[parent], ip)
                continue
            # Other names still lead here: the member lives as long as the latest of them,
            # which may be earlier than the name that went (as a fresh build would find).
            latest = self._latest(ipset, ip)
            if latest is not None and latest < ipset.dns_members[ip]:
                ipset.dns_members[ip] = latest
                registry.refresh_host(ipset, ip, latest)
                for parent in ipset.parents:
                    registry.refresh_host(sets[parent], ip, latest)

    def _latest(self, ipset: IPSet, ip: str) -> float | None:
        """The latest expiry among the cached names of ``ipset`` that still lead to ``ip``."""
        names: set[str] = set()
        for pattern in ipset.patterns:
            names |= self._dns.names_matching(pattern)
        expiries = [
            self._dns.expiries(name).get(ip)
            for name in names
            if (entry := self._followed.get(name)) is not None and ip in entry.ips
        ]
        known = [e for e in expiries if e is not None]
        return max(known) if known else None
