"""The name manager: DNS pairs in, domain-set members out.

A domain set (a rule's ``domains``, a network set's ``allowedEgressDomains``) holds every
address the DNS cache maps a matching name to. Membership is derived, never counted: the
manager keeps the pairs it was told of per followed name (a name some set matches) and, per
address, the followed names leading to it. The sets DNS puts an address in are then the sets
its names match, with the selector sets inheriting them (a set's ``parents``: those picking a
network set whose domains it is); a member's expiry in a set is the latest among those of
its names that lead there.

Every change (a pair added or removed, a set appearing or going, a link to a parent made or
undone) states the addresses it touches afresh: their sets and expiries are derived before and
after it, and the difference goes out as member deltas and as the DNS part of the addresses'
identities (the address table reads them through :meth:`NameManager.sets_of`).
So what datapaths were told always equals what a fresh build would derive.

A followed name keeps the sets its name matches, so an answer goes to its sets without
walking the pattern index. They are kept exact where patterns change: a new set's patterns
are looked up in the cache's name index (every name they match, followed ones included, is
found there), and a set that goes re-matches the names it held; no other name's match can
have moved. (A followed name the cache dropped, its removal not delivered yet, is not in the
index: it keeps its sets until that removal comes, so it never joins a set only to leave.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from fqdnpolicy.domains import DomainPattern, PatternIndex
from fqdnpolicy.engine.identities import EMPTY
from fqdnpolicy.engine.ipsets import IPSet, IPSetRegistry

if TYPE_CHECKING:
    from fqdnpolicy.dns import DNSCache

__all__ = ["NameManager", "domains_key"]

# An address's DNS state: set number -> the member's expiry there.
_State = dict[int, float]


class _Followed:
    """A followed name: the sets it matches and its pairs."""

    __slots__ = ("ips", "nums")

    def __init__(self, nums: frozenset[int], ips: dict[str, float]) -> None:
        self.nums = nums
        self.ips = ips  # address -> expiry, as the cache's changes told it


def domains_key(patterns: Sequence[DomainPattern]) -> tuple[str, str]:
    """The registry key and canonical text of a domain set."""
    text = ",".join(sorted({p.text for p in patterns}))
    return f"domains:{text}", text


class NameManager:
    """Domain sets' members, derived from the DNS pairs the cache delivered."""

    def __init__(self, registry: IPSetRegistry, dns: DNSCache) -> None:
        self._registry = registry
        self._dns = dns
        self._patterns: PatternIndex[int] = PatternIndex()
        self._followed: dict[str, _Followed] = {}
        # address -> the followed name leading to it, or the set of them when several do.
        self._via: dict[str, str | set[str]] = {}
        # A name's sets -> those and their parents (cleared when a link or a set changes).
        self._closures: dict[frozenset[int], frozenset[int]] = {}
        self._unfiled: list[IPSet] = []  # sets of the first build, patterns not indexed yet

    # -- deriving ----------------------------------------------------------------------------

    def _closure(self, nums: frozenset[int]) -> frozenset[int]:
        """``nums`` and every selector set inheriting from one of them."""
        found = self._closures.get(nums)
        if found is None:
            sets = self._registry.by_num
            heirs = [parent for num in nums for parent in sets[num].parents]
            found = self._closures[nums] = nums.union(heirs) if heirs else nums
        return found

    def _state(self, ip: str) -> _State:
        """The sets DNS puts ``ip`` in, with its expiry in each."""
        via = self._via.get(ip)
        if via is None:
            return {}
        followed = self._followed
        if via.__class__ is str:
            entry = followed[via]
            return dict.fromkeys(self._closure(entry.nums), entry.ips[ip])
        state: _State = {}
        for name in via:
            entry = followed[name]
            expiry = entry.ips[ip]
            for num in self._closure(entry.nums):
                known = state.get(num)
                if known is None or expiry > known:
                    state[num] = expiry
        return state

    def sets_of(self, ip: str) -> frozenset[int]:
        """The sets DNS puts ``ip`` in (what the address table reads)."""
        via = self._via.get(ip)
        if via is None:
            return EMPTY
        if via.__class__ is str:
            return self._closure(self._followed[via].nums)
        return frozenset(self._state(ip))

    def expiry_in(self, num: int, ip: str) -> float | None:
        """When ``ip`` leaves set ``num`` by DNS; None when DNS has it not there."""
        return self._state(ip).get(num)

    def _restate(self, ips: Iterable[str], change: Callable[[], None]) -> None:
        """Apply ``change`` and publish what it did to the DNS state of ``ips``."""
        touched = list(dict.fromkeys(ips))
        before = [self._state(ip) for ip in touched]
        change()
        publish = self._registry.dns_moved
        for ip, old in zip(touched, before, strict=True):
            new = self._state(ip)
            if new != old:
                publish(ip, old, new)

    # -- following names ---------------------------------------------------------------------

    def _follow(self, name: str, nums: frozenset[int]) -> _Followed:
        entry = self._followed[name] = _Followed(nums, {})
        sets = self._registry.by_num
        for num in nums:
            sets[num].dns_names.add(name)
        return entry

    def _rematch(self, name: str, entry: _Followed) -> None:
        """Give ``entry`` the sets its name matches now (unfollowed when none)."""
        nums = self._patterns.match(name)
        if nums == entry.nums:
            return
        sets = self._registry.by_num
        for num in entry.nums - nums:
            if num in sets:
                sets[num].dns_names.discard(name)
        for num in nums - entry.nums:
            sets[num].dns_names.add(name)
        entry.nums = nums
        if not nums:
            self._unfollow(name, entry)

    def _unfollow(self, name: str, entry: _Followed) -> None:
        del self._followed[name]
        for ip in entry.ips:
            self._unlead(ip, name)

    def _lead(self, ip: str, name: str) -> None:
        """``name`` leads to ``ip`` (it did not before)."""
        via = self._via
        known = via.setdefault(ip, name)
        if known is name:
            return
        if known.__class__ is str:
            via[ip] = {known, name}
        else:
            known.add(name)  # type: ignore[union-attr]

    def _unlead(self, ip: str, name: str) -> None:
        """``name`` no longer leads to ``ip``."""
        via = self._via
        known = via[ip]
        if known.__class__ is str:
            del via[ip]
            return
        assert isinstance(known, set)
        known.discard(name)
        if len(known) == 1:
            via[ip] = next(iter(known))

    def _restate_match(self, name: str, entry: _Followed) -> None:
        """Give followed ``name`` the sets it matches now, re-stating its addresses."""
        self._restate(entry.ips, lambda: self._rematch(name, entry))

    # -- sets --------------------------------------------------------------------------------

    def acquire(self, patterns: Sequence[DomainPattern], *, pull: bool) -> IPSet:
        """Take a reference to the domain set of ``patterns``, creating it if needed.

        With ``pull``, a new set is filled from the names already cached that it matches (the
        first build skips this, and files its patterns later: :meth:`learn_all` files every
        set's patterns at once, then fills every set in one pass over the cache): a followed
        name brings the pairs delivered so far, another the pairs the cache holds now (the
        changes that brought them, when delivered, change nothing more).
        """
        key, text = domains_key(patterns)
        ipset = self._registry.get(key)
        if ipset is None:
            ipset = self._registry.create(key, "domains", text)
            ipset.patterns = tuple(patterns)
            if not pull:
                self._unfiled.append(ipset)
            else:
                self._pull(ipset)
        ipset.refs += 1
        return ipset

    def _add_patterns(self, ipset: IPSet) -> None:
        for pattern in ipset.patterns:
            self._patterns.add(pattern, ipset.num)

    def _pull(self, ipset: IPSet) -> None:
        dns, followed, via, match = self._dns, self._followed, self._via, self._patterns.match
        names: set[str] = set()
        for pattern in ipset.patterns:
            names |= dns.names_matching(pattern)
        self._add_patterns(ipset)
        # Most names are followed and now match their sets and this one; or are new and lead
        # where no name does. Their addresses join this new set, which has no heirs yet, and
        # nothing else moves. The others are re-stated.
        num = ipset.num
        joined: dict[str, float] = {}
        # Followed names whose sets also moved otherwise: one that missed an earlier new set
        # while its removal was on its way, and is cached again.
        moved: list[str] = []
        fresh: dict[str, dict[str, float]] = {}  # new names leading where other names do
        for name in sorted(names):
            entry = followed.get(name)
            nums = match(name)
            if entry is not None:
                if nums != entry.nums | {num}:
                    moved.append(name)
                    continue
                entry.nums = nums
                ipset.dns_names.add(name)
                pairs = entry.ips
            else:
                pairs = dns.expiries(name)
                if not pairs:
                    continue
                if nums != {num} or any(ip in via for ip in pairs):
                    fresh[name] = pairs
                    continue
                self._follow(name, nums).ips = pairs
                for ip in pairs:
                    via[ip] = name
            for ip, expiry in pairs.items():
                known = joined.get(ip)
                if known is None or expiry > known:
                    joined[ip] = expiry
        joined_one = self._registry.dns_joined_one
        for ip, expiry in joined.items():
            joined_one(ip, num, expiry)
        for name in moved:
            self._restate_match(name, followed[name])
        if fresh:
            self._restate(
                [ip for pairs in fresh.values() for ip in pairs], lambda: self._take(fresh)
            )

    def _take(self, pulled: dict[str, dict[str, float]]) -> None:
        """Follow names not followed yet, with their pairs from the cache."""
        for name, pairs in pulled.items():
            nums = self._patterns.match(name)
            if nums:
                self._follow(name, nums).ips = pairs
                for ip in pairs:
                    self._lead(ip, name)

    def dropped(self, ipset: IPSet) -> None:
        """Empty a domain set whose last reference went."""
        followed = self._followed
        names = sorted(ipset.dns_names)
        touched = [ip for name in names for ip in followed[name].ips]

        def change() -> None:
            for pattern in ipset.patterns:
                self._patterns.discard(pattern, ipset.num)
            ipset.dns_names.clear()
            self._closures.clear()
            for name in names:
                self._rematch(name, followed[name])

        self._restate(touched, change)

    def link(self, child: IPSet, parent: int) -> None:
        """Selector set ``parent`` picks a network set whose domains are ``child``.

        One link per (parent, child), however many network sets make it: the members count
        once.
        """
        links = child.parents.get(parent, 0)
        if links:
            child.parents[parent] = links + 1
            return

        def change() -> None:
            child.parents[parent] = 1
            self._closures.clear()

        self._restate(self._members_of(child), change)

    def unlink(self, child: IPSet, parent: int) -> None:
        """Undo one :meth:`link`."""
        links = child.parents[parent]
        if links > 1:
            child.parents[parent] = links - 1
            return

        def change() -> None:
            del child.parents[parent]
            self._closures.clear()

        self._restate(self._members_of(child), change)

    def _members_of(self, ipset: IPSet) -> list[str]:
        followed = self._followed
        return [ip for name in ipset.dns_names for ip in followed[name].ips]

    def members(self, ipset: IPSet) -> dict[str, float]:
        """A domain set's members with their expiries (for datapath projections)."""
        members: dict[str, float] = {}
        followed = self._followed
        for name in ipset.dns_names:
            for ip, expiry in followed[name].ips.items():
                known = members.get(ip)
                if known is None or expiry > known:
                    members[ip] = expiry
        return members

    # -- DNS changes -------------------------------------------------------------------------

    def learn_all(self) -> None:
        """Fill every domain set from every cached name (the first build).

        One pass over the cache instead of one range scan per pattern: each name goes through
        the pattern index once, and every pair is new (no deltas). Most names lead where no
        name did before: their addresses go into the tables in bulk, with one identity. An
        address several names lead to is stated afresh once all are known.
        """
        unfiled, self._unfiled = self._unfiled, []
        self._patterns.add_all(
            (pattern, ipset.num) for ipset in unfiled if ipset.refs for pattern in ipset.patterns
        )
        dns, match = self._dns, self._patterns.match
        followed, via = self._followed, self._via
        sets = self._registry.by_num
        table = self._registry.table
        closure = self._closure
        shared: dict[str, set[str]] = {}  # addresses several names lead to, and those names
        # Names no set matches are passed over before the cache copies their pairs (a name
        # cached meanwhile comes with the changes queued since the engine subscribed).
        matched = {name: nums for name in dns.names() if (nums := match(name))}
        for name, pairs in dns.live(matched):
            nums = matched[name]
            followed[name] = _Followed(nums, pairs)
            for num in nums:
                sets[num].dns_names.add(name)
            # The address table tells whether all the name's addresses are new to it: every
            # address a name led to so far is there, so then no other name leads to them.
            if table.learn(pairs, closure(nums)):
                via.update(dict.fromkeys(pairs, name))
                continue
            for ip in pairs:
                known = via.setdefault(ip, name)
                if known is name:
                    continue
                group = shared.get(ip)
                if group is None:
                    shared[ip] = {known, name}  # type: ignore[arg-type]
                else:
                    group.add(name)
        via.update(shared)
        for ip in shared:
            table.dns_moved(ip)

    def pair_added(self, name: str, ip: str, expiry: float) -> None:
        """The cache maps ``name`` to ``ip`` until ``expiry`` (new, or refreshed)."""
        entry = self._followed.get(name)
        if entry is None:
            nums = self._patterns.match(name)
            if not nums:
                return
            entry = self._follow(name, nums)
        ips = entry.ips
        known = ips.get(ip)
        if known is None:
            lead = self._via.setdefault(ip, name)
            if lead is name:  # an address no name led to (most answers): new in every set
                ips[ip] = expiry
                self._registry.dns_joined(ip, self._closure(entry.nums), expiry)
                return
        elif expiry <= known:
            return  # nothing later than what the sets hold
        before = self._state(ip)
        ips[ip] = expiry
        if known is None:
            self._lead(ip, name)
        after = self._state(ip)
        self._registry.dns_moved(ip, before, after)

    def pair_removed(self, name: str, ip: str) -> None:
        """The cache no longer maps ``name`` to ``ip``."""
        entry = self._followed.get(name)
        if entry is None or ip not in entry.ips:
            return
        before = self._state(ip)
        del entry.ips[ip]
        self._unlead(ip, name)
        if not entry.ips:
            del self._followed[name]
            sets = self._registry.by_num
            for num in entry.nums:
                sets[num].dns_names.discard(name)
        after = self._state(ip)
        self._registry.dns_moved(ip, before, after)
