"""An index of many domain patterns that finds those matching a name without looping over them.

:class:`PatternIndex` finds exact names with one dictionary lookup and wildcards by walking a
trie of reversed labels.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Generic, TypeVar

from fqdnpolicy.domain_names import WILDCARD, canonical_dns_name
from fqdnpolicy.domain_patterns import DomainPattern

__all__ = ["PatternIndex"]


K = TypeVar("K", bound=Hashable)

_NO_KEYS: frozenset[object] = frozenset()


class _Node:
    """A trie node; the path from the root spells a pattern's labels from the right.

    ``star`` is the node reached by a ``*`` label. A star node consumes one label on the way in
    and then any number more (it loops on itself). ``leaf_star`` marks a star node with no way
    out: entering it decides a match, whatever labels remain.
    """

    __slots__ = ("children", "is_star", "keys", "leaf_star", "pattern", "star")

    def __init__(self, is_star: bool) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.is_star = is_star
        self.leaf_star = False
        self.keys: frozenset[object] = _NO_KEYS
        self.pattern: DomainPattern | None = None

    def refresh(self) -> None:
        self.leaf_star = self.is_star and not self.children and self.star is None

    def empty(self) -> bool:
        return not self.children and self.star is None and self.pattern is None


class PatternIndex(Generic[K]):
    """Many domain patterns, each with keys (e.g. rule ids); finds those matching a name.

    ``match`` never loops over the patterns: exact patterns are found with one dictionary
    lookup and wildcards by walking a trie of reversed labels, where a ``*`` node consumes one
    or more labels. The work is proportional to the name's labels (times the few trie states
    alive at once when several wildcards overlap), not to the number of patterns.

    Not safe for concurrent mutation; matching from several threads while nothing mutates is.

    Args:
        items: ``(pattern, key)`` pairs to add at once.

    Example:
        >>> index: PatternIndex[str] = PatternIndex()
        >>> index.add(parse_domain_pattern("*.example.com"), "rule-1")
        >>> sorted(index.match("WWW.example.com."))
        ['rule-1']
    """

    __slots__ = ("_exact", "_exact_patterns", "_keys", "_root", "_wildcards")

    def __init__(self, items: Iterable[tuple[DomainPattern, K]] = ()) -> None:
        self._keys: dict[DomainPattern, frozenset[K]] = {}
        self._exact: dict[str, frozenset[K]] = {}
        self._exact_patterns: dict[str, DomainPattern] = {}
        self._root = _Node(is_star=False)
        self._wildcards = 0
        for pattern, key in items:
            self.add(pattern, key)

    # -- mutation ----------------------------------------------------------------------------

    def add(self, pattern: DomainPattern, key: K) -> None:
        """Attach ``key`` to ``pattern`` (adding the pattern if new); adding twice is a no-op."""
        keys = self._keys.get(pattern)
        if keys is not None and key in keys:
            return
        # Keys live in one frozenset per pattern, shared by the lookup structures, so match()
        # can return it without copying; a change rebuilds it (O(keys of that pattern)).
        # Keeping a mutable set beside it made the index much bigger (docs/development.md).
        keys = self._keys[pattern] = frozenset((key,)) if keys is None else keys | {key}
        self._store(pattern, keys)

    def add_all(self, items: Iterable[tuple[DomainPattern, K]]) -> None:
        """:meth:`add` every pair, each pattern's keys gathered first and stored once."""
        gathered: dict[DomainPattern, list[K]] = {}
        for pattern, key in items:
            some = gathered.get(pattern)
            if some is None:
                gathered[pattern] = [key]
            else:
                some.append(key)
        for pattern, new in gathered.items():
            known = self._keys.get(pattern)
            keys = frozenset(new) if known is None else known.union(new)
            if keys != known:
                self._keys[pattern] = keys
                self._store(pattern, keys)

    def discard(self, pattern: DomainPattern, key: K) -> None:
        """Detach ``key`` from ``pattern``; the pattern goes when its last key does.

        Discarding a key or pattern that is not there does nothing.
        """
        keys = self._keys.get(pattern)
        if keys is None or key not in keys:
            return
        keys = keys - {key}
        if keys:
            self._keys[pattern] = keys
            self._store(pattern, keys)
            return
        del self._keys[pattern]
        if not pattern.is_wildcard:
            del self._exact[pattern.text]
            del self._exact_patterns[pattern.text]
            return
        self._wildcards -= 1
        path = self._path(pattern, create=False)
        leaf = path[-1][1]
        leaf.keys = _NO_KEYS
        leaf.pattern = None
        # Prune nodes left without patterns below them, deepest first.
        for i in range(len(path) - 1, 0, -1):
            label, node = path[i]
            parent = path[i - 1][1]
            if node.empty():
                if label == WILDCARD:
                    parent.star = None
                else:
                    del parent.children[label]
            node.refresh()
            parent.refresh()

    def _path(self, pattern: DomainPattern, *, create: bool) -> list[tuple[str, _Node]]:
        node = self._root
        path: list[tuple[str, _Node]] = [("", node)]
        for label in reversed(pattern.labels):
            if label == WILDCARD:
                nxt = node.star
                if nxt is None:
                    assert create, "pattern known to be indexed"
                    nxt = node.star = _Node(is_star=True)
            else:
                nxt = node.children.get(label)
                if nxt is None:
                    assert create, "pattern known to be indexed"
                    nxt = node.children[label] = _Node(is_star=False)
            node.refresh()
            path.append((label, nxt))
            node = nxt
        node.refresh()
        return path

    def _store(self, pattern: DomainPattern, keys: frozenset[K]) -> None:
        if not pattern.is_wildcard:
            self._exact[pattern.text] = keys
            self._exact_patterns[pattern.text] = pattern
            return
        node = self._path(pattern, create=True)[-1][1]
        if node.pattern is None:
            self._wildcards += 1
        node.pattern = pattern
        node.keys = keys

    # -- queries -----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of distinct patterns held."""
        return len(self._keys)

    def __contains__(self, pattern: object) -> bool:
        """Whether ``pattern`` (a :class:`DomainPattern`) is held with at least one key."""
        return isinstance(pattern, DomainPattern) and pattern in self._keys

    def __iter__(self) -> Iterator[DomainPattern]:
        """Iterate over the patterns held."""
        return iter(self._keys)

    def keys_of(self, pattern: DomainPattern) -> frozenset[K]:
        """The keys attached to ``pattern`` (empty when it is not held)."""
        keys = self._keys.get(pattern)
        return frozenset() if keys is None else keys

    def match(self, name: str) -> frozenset[K]:
        """Return the keys of every pattern that matches ``name``.

        Args:
            name: A domain name as seen in DNS traffic; canonicalised leniently
                (:func:`canonical_dns_name`), so this never raises.

        Returns:
            The union of the keys of all matching patterns (an empty set when none match).
        """
        # Inlined fast path of canonical_dns_name: this is the hot loop of the DNS cache.
        if name.isascii() and "\\" not in name:
            name = name.lower().rstrip(".")
        else:
            name = canonical_dns_name(name)
        exact = self._exact.get(name)
        if not self._wildcards:
            return exact if exact is not None else _NO_KEYS  # type: ignore[return-value]
        hits = self._walk(name)
        if not hits:
            return exact if exact is not None else _NO_KEYS  # type: ignore[return-value]
        if exact is None and len(hits) == 1:
            return hits[0].keys  # type: ignore[return-value]
        out: set[object] = set(exact) if exact is not None else set()
        for node in hits:
            out.update(node.keys)
        return frozenset(out)  # type: ignore[arg-type]

    def matching_patterns(self, name: str) -> set[DomainPattern]:
        """Return every pattern that matches ``name`` (canonicalised as in :meth:`match`)."""
        name = canonical_dns_name(name)
        out = {node.pattern for node in self._walk(name) if node.pattern is not None}
        exact = self._exact_patterns.get(name)
        if exact is not None:
            out.add(exact)
        return out

    def _walk(self, name: str) -> list[_Node]:
        """Terminal trie nodes reached by the name's labels, read right to left.

        A node may appear more than once. Most walks keep one live trie state all the way
        (fixed labels, then one ``*`` eating labels), so that case runs without building state
        lists; the general set-of-states walk takes over where paths fork.
        """
        labels = name.split(".")
        i = len(labels) - 1
        node = self._root
        hits: list[_Node] = []
        while i >= 0:
            label = labels[i]
            i -= 1
            child = node.children.get(label)
            star = node.star
            if star is not None:
                if star.leaf_star:
                    # Entering a star with no way out: it eats the rest of the name.
                    hits.append(star)
                elif child is None and not node.is_star:
                    node = star
                    continue
                else:
                    forks = [star] if child is None else [child, star]
                    if node.is_star:
                        forks.append(node)
                    return self._walk_states(forks, labels, i, hits)
            if node.is_star:
                if child is not None:
                    return self._walk_states([child, node], labels, i, hits)
                continue  # the star eats this label too
            if child is None:
                return hits
            node = child
        if node.pattern is not None:
            hits.append(node)
        return hits

    @staticmethod
    def _walk_states(
        states: list[_Node], labels: list[str], i: int, hits: list[_Node]
    ) -> list[_Node]:
        """Go on from several live trie states with ``labels[i]`` and those left of it."""
        while i >= 0:
            label = labels[i]
            i -= 1
            new: list[_Node] = []
            for state in states:
                child = state.children.get(label)
                if child is not None:
                    new.append(child)
                star = state.star
                if star is not None:
                    if star.leaf_star:
                        hits.append(star)
                    else:
                        new.append(star)
                if state.is_star:
                    new.append(state)
            if len(new) > 1:
                new = list(dict.fromkeys(new))  # several "*" may reach one node
            elif not new:
                return hits
            states = new
        hits.extend(state for state in states if state.pattern is not None)
        return hits
