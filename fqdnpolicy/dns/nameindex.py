"""The DNS cache's name index: the cached names under a suffix, found without a scan.

Names are grouped by parent domain (the name without its first label) into buckets keyed by
the character-reversed parent, and those keys are kept sorted: everything under a suffix is
then one contiguous range of keys. Grouping by parent stores one key per parent instead of a
reversed copy of every name (memory per name in docs/dns-cache.md). A bucket is the name
itself while it is the only one.

The index is maintained lazily, since patterns are looked up rarely and names come and go with
every answer: nothing is built or kept before the first lookup; after it new names wait in
:attr:`NameIndex.pending` and removed ones stay in their buckets (lookups check the names still
held) until so many have piled up that the index is dropped, to be built afresh by the next
lookup.
"""

from __future__ import annotations

from collections.abc import Collection

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from fqdnpolicy.dns.model import PatternLike

__all__ = ["NameIndex"]

# How many pending or removed names beyond the live count make the index worth dropping.
_SLACK = 1024


def _reversed_parent(name: str) -> str:
    """The name without its first label, character-reversed (``""`` for a single label).

    Reversed names sort so that everything under a suffix is one contiguous range.
    """
    dot = name.find(".")
    return name[:dot:-1] if dot >= 0 else ""


class NameIndex:
    """Names grouped by parent domain, for :meth:`fqdnpolicy.dns.DNSCache.names_matching`.

    Not thread-safe: the cache calls it under its lock.

    Attributes:
        built: Whether the index exists; until it does, nothing is pending.
        pending: Names added since the last lookup (added by the cache while ``built``).
        removed: Names removed since the index was last dropped (they stay in the buckets).
    """

    __slots__ = ("_buckets", "_keys", "built", "pending", "removed")

    def __init__(self) -> None:
        self._keys: SortedList = SortedList()
        self._buckets: dict[str, str | list[str]] = {}
        self.built = False
        self.pending: list[str] = []
        self.removed = 0

    def held(self) -> int:
        """How many names the index holds (removed ones included, pending ones not)."""
        return sum(1 if isinstance(b, str) else len(b) for b in self._buckets.values())

    def trim(self, live: int) -> None:
        """Drop the index when the names pending or removed outnumber the ``live`` ones."""
        if len(self.pending) + self.removed > live + _SLACK:
            self.reset()

    def reset(self) -> None:
        """Drop the index; the next lookup builds it from the names held then."""
        self._keys = SortedList()
        self._buckets = {}
        self.built = False
        self.pending = []
        self.removed = 0

    def _update(self, live: Collection[str]) -> None:
        if not self.built:
            self.pending = list(live)
            self.built = True
        buckets = self._buckets
        new_keys = []
        for name in self.pending:
            key = _reversed_parent(name)
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = name
                new_keys.append(key)
            elif isinstance(bucket, str):
                buckets[key] = [bucket, name]
            else:
                bucket.append(name)
        self._keys.update(new_keys)
        self.pending = []

    def matching(self, pattern: PatternLike, live: Collection[str]) -> set[str]:
        """Return the names of ``live`` that ``pattern`` matches.

        Args:
            pattern: An exact or wildcard pattern.
            live: Every name the cache holds now (what the index was built from, plus
                :attr:`pending`, minus what was removed since).
        """
        suffix = pattern.fixed_suffix
        if not suffix:
            return {name for name in live if pattern.matches(name)}
        if self.pending or not self.built:
            self._update(live)
        key = suffix[::-1]
        found = {suffix} if suffix in live and pattern.matches(suffix) else set()
        buckets = self._buckets
        # Names directly under the suffix, then those under its subdomains.
        parents = [key] if key in buckets else []
        parents.extend(self._keys.irange(key + ".", key + "/", inclusive=(True, False)))
        for parent in parents:
            bucket = buckets[parent]
            for name in (bucket,) if isinstance(bucket, str) else bucket:
                if name in live and pattern.matches(name):
                    found.add(name)
        return found
