"""The address index: which IP sets contain an address.

Every rule peer (``nets``, a selector, ``domains``, a network set) is an *IP set*. The engine
asks one question per verdict: "which sets contain this address?". :class:`AddressIndex`
answers it with one frozenset of small integer set ids, interned so that equal answers are the
same object (the engine memoises verdicts keyed on it, and a frozenset caches its hash).

Two kinds of members, stored two ways:

* **Prefixes** (CIDRs from ``nets`` and network sets) live in one pytricia radix tree per
  address family (pytricia mixes families up in a single 128-bit tree). Each tree node holds
  the *merged* ids of every prefix covering it, so one longest-prefix lookup returns all of
  them: an address in 10.0.0.0/8 of set A and 10.1.0.0/16 of set B belongs to both.
* **Hosts** (single addresses learned from DNS, endpoint IPs) live in a dict. A dict lookup
  costs ~0.06 us here against ~1 us for a pytricia lookup, and a million DNS-learned hosts in
  the tree would make every change of a covering prefix rewrite a million nodes. A host's
  merged answer (its own ids plus covering prefixes' ids) is computed on its first lookup and
  cached, stamped with the prefix generation, so neither a membership change nor a prefix
  change costs anything until the host is next looked up. Answers for addresses in no host
  set are cached the same way (bounded), so a verdict costs one dict lookup per address once
  the address has been seen: with a million hosts, each random lookup in a dict that size
  misses the CPU caches and costs ~0.7 us, more than the rest of a memoised verdict.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

import pytricia

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

EMPTY: frozenset[int] = frozenset()
#: IPv4 addresses in canonical text (dotted quad, no leading zeros): what the index and the
#: engine hold, so text that matches needs no parsing.
CANONICAL_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
)
# Answers cached for addresses that are in no host set, beyond one per member host.
_EXTRA_ANSWERS = 1 << 20


def _ids(counts: int | dict[int, int]) -> Iterable[int]:
    return (counts,) if isinstance(counts, int) else counts


class AddressIndex:
    """Maps an address to the frozenset of ids of the IP sets that contain it.

    Members are reference-counted per (set, member): a set may receive the same address
    from several sources (two DNS names leading to one IP, an endpoint IP also inside a
    network set) and keeps it until the last source goes.
    """

    def __init__(self) -> None:
        self._trees = {4: pytricia.PyTricia(32), 6: pytricia.PyTricia(128)}
        # prefix text -> {set id: refcount}; the trees hold merged frozensets per prefix
        self._prefix_sets: dict[str, dict[int, int]] = {}
        # host text -> the set id when it is in one set once (most DNS-learned hosts: a
        # million small dicts cost ~230 MB), else {set id: refcount}
        self._host_sets: dict[str, int | dict[int, int]] = {}
        #: Cached answers, read-only for callers: address text -> (merged ids, the prefix
        #: :attr:`generation` they were computed at), valid while that is still the
        #: generation. For member hosts and canonical non-member addresses looked up before;
        #: an entry proves its key canonical, so a verdict needs this one lookup per address.
        #: The same dict object for the index's life (cleared in place), so callers may
        #: hold it.
        self.answers: dict[str, tuple[frozenset[int], int]] = {}
        #: Moves whenever a prefix member changes (every cached answer may be stale then).
        self.generation = 0
        self._interned: dict[frozenset[int], frozenset[int]] = {EMPTY: EMPTY}
        self._singles: dict[int, frozenset[int]] = {}  # set id -> interned {set id}
        #: Counts changes of any address's answer: verdicts judged at one version hold
        #: until the next.
        self.version = 0

    # -- interning -------------------------------------------------------------------------

    def _intern(self, ids: Iterable[int]) -> frozenset[int]:
        key = frozenset(ids)
        found = self._interned.get(key)
        if found is None:
            # Bound memory under churn: identity is only a speed-up, never relied on.
            if len(self._interned) > 1_000_000:
                self._interned.clear()
                self._interned[EMPTY] = EMPTY
            self._interned[key] = key
            found = key
        return found

    # -- lookups ---------------------------------------------------------------------------

    def lookup(self, address: str) -> frozenset[int]:
        """Return the ids of every set containing ``address`` (canonical text)."""
        entry = self.answers.get(address)
        if entry is not None and entry[1] == self.generation:
            return entry[0]
        return self._compute(address)

    def answer(self, address: str) -> frozenset[int] | None:
        """Like :meth:`lookup` for text known canonical; None when that is not known.

        Known canonical: a host member, or an address :meth:`lookup` answered before. The
        caller canonicalises anything else (parsing costs more than the lookup itself).
        """
        entry = self.answers.get(address)
        if entry is not None:
            return entry[0] if entry[1] == self.generation else self._compute(address)
        if address in self._host_sets:
            return self._compute(address)
        return None

    def _compute(self, address: str) -> frozenset[int]:
        # Computed on first lookup, not on every add: building a host's frozenset after each
        # of its k set memberships would cost O(k^2) while a policy set is being compiled.
        counts = self._host_sets.get(address)
        if counts is None:
            merged = self._prefix_lookup(address)
        elif counts.__class__ is int:
            assert isinstance(counts, int)
            single = self._singles.get(counts)
            if single is None:
                single = self._singles[counts] = self._intern((counts,))
            merged = self._merge(single, self._prefix_lookup(address))
        else:
            merged = self._merge(self._intern(_ids(counts)), self._prefix_lookup(address))
        hosts = self.answers
        if len(hosts) >= len(self._host_sets) + _EXTRA_ANSWERS:
            # Non-member addresses (a scan of random destinations) must not grow this
            # without bound; member answers come back on their next lookup.
            hosts.clear()
        hosts[address] = (merged, self.generation)
        return merged

    def host_outside(self, address: str, ids: frozenset[int]) -> bool:
        """True when ``address`` is canonical text and no set in ``ids`` holds it.

        Reads only (no answer is cached), so a lock-free reader may call it: what it read is
        checked afterwards by the caller's own means. Canonical: a host member, or IPv4
        text in canonical form; False for anything else (IPv6 that is no member is not
        known to be canonical without parsing).
        """
        counts = self._host_sets.get(address)
        if counts is None:
            if CANONICAL_IPV4.fullmatch(address) is None:
                return False
        elif isinstance(counts, int):
            if counts in ids:
                return False
        elif not ids.isdisjoint(counts):
            return False
        return self._prefix_lookup(address).isdisjoint(ids)

    def knows(self, address: str) -> bool:
        """True when ``address`` is a host member of some set (so its text is canonical)."""
        return address in self._host_sets

    def _prefix_lookup(self, address: str) -> frozenset[int]:
        tree = self._trees[6 if ":" in address else 4]
        try:
            found: frozenset[int] | None = tree.get(address)
        except ValueError:
            return EMPTY
        return EMPTY if found is None else found

    def _merge(self, a: frozenset[int], b: frozenset[int]) -> frozenset[int]:
        if not b:
            return a
        if not a:
            return b
        return self._intern(a | b)

    def host_members(self, set_id: int) -> set[str]:
        """Return the host members of a set (slow: scans; for tests and full renders)."""
        return {host for host, ids in self._host_sets.items() if set_id in _ids(ids)}

    def prefix_members(self, set_id: int) -> set[str]:
        """Return the prefix members of a set (slow: scans; for tests and full renders)."""
        return {prefix for prefix, ids in self._prefix_sets.items() if set_id in ids}

    # -- hosts -----------------------------------------------------------------------------

    def add_host(self, set_id: int, address: str) -> bool:
        """Count one more source of ``address`` in set ``set_id``; True when newly a member."""
        counts = self._host_sets.get(address)
        if counts is None:
            self._host_sets[address] = set_id
            if self.answers:  # (empty while a policy set is being compiled)
                self.answers.pop(address, None)  # its answer as a non-member
            self.version += 1
            return True
        if isinstance(counts, int):
            if counts == set_id:
                self._host_sets[address] = {set_id: 2}
                return False
            self._host_sets[address] = {counts: 1, set_id: 1}
            self.answers.pop(address, None)
            self.version += 1
            return True
        count = counts.get(set_id, 0)
        counts[set_id] = count + 1
        if count:
            return False
        self.answers.pop(address, None)
        self.version += 1
        return True

    def remove_host(self, set_id: int, address: str) -> bool:
        """Drop one source of ``address`` from set ``set_id``; True when no longer a member."""
        counts = self._host_sets.get(address)
        if counts is None:
            return False
        if isinstance(counts, int):
            if counts != set_id:
                return False
            del self._host_sets[address]
            self.answers.pop(address, None)
            self.version += 1
            return True
        if set_id not in counts:
            return False
        if counts[set_id] > 1:
            counts[set_id] -= 1
            return False
        del counts[set_id]
        if not counts:
            del self._host_sets[address]
        self.answers.pop(address, None)
        self.version += 1
        return True

    # -- prefixes --------------------------------------------------------------------------

    def add_prefix(self, set_id: int, network: IPNetwork) -> bool:
        """Count one more source of ``network`` in set ``set_id``; True when newly a member."""
        key = str(network)
        counts = self._prefix_sets.setdefault(key, {})
        count = counts.get(set_id, 0)
        counts[set_id] = count + 1
        if count:
            return False
        self._rebuild_prefix(network, key)
        return True

    def remove_prefix(self, set_id: int, network: IPNetwork) -> bool:
        """Drop one source of ``network`` from ``set_id``; True when no longer a member."""
        key = str(network)
        counts = self._prefix_sets.get(key)
        if counts is None or set_id not in counts:
            return False
        if counts[set_id] > 1:
            counts[set_id] -= 1
            return False
        del counts[set_id]
        if not counts:
            del self._prefix_sets[key]
        self._rebuild_prefix(network, key)
        return True

    def _rebuild_prefix(self, network: IPNetwork, key: str) -> None:
        """Recompute the merged ids of ``network`` and of every prefix below it."""
        tree = self._trees[network.version]
        self.generation += 1
        self.version += 1
        # `in` on a pytricia tree is a longest-prefix match; has_key is the exact test.
        present = tree.has_key(key)
        if key in self._prefix_sets:
            if not present:
                tree[key] = EMPTY
            affected = [key, *tree.children(key)]
        else:
            affected = list(tree.children(key)) if present else []
            if present:
                del tree[key]
        # Parents before children: each node merges its own ids with its parent's merged ids.
        affected.sort(key=lambda text: int(text.rsplit("/", 1)[1]))
        for prefix in affected:
            parent = tree.parent(prefix)
            inherited: frozenset[int] = tree[parent] if parent is not None else EMPTY
            own = self._prefix_sets.get(prefix)
            tree[prefix] = self._merge(self._intern(own) if own else EMPTY, inherited)
