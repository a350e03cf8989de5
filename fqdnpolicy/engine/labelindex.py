"""One label index for both questions selectors raise, from either side.

Which selectors may match a subject, and which subjects may match a selector.
Most selectors require one plain label (``app == "web"``; every NetworkPolicy and every
namespaced rule selector requires ``projectcalico.org/namespace == "<ns>"``). Filing each
selector under such a label, and each subject under all of its effective labels, narrows a
match to the subjects or selectors that share that label; the caller still evaluates the
selector on each candidate, so the index only ever saves work, never changes an answer.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from collections.abc import Set as AbstractSet
from typing import Generic, TypeVar

from fqdnpolicy.engine.grouping import Groups
from fqdnpolicy.scoping import NAMESPACE_LABEL
from fqdnpolicy.selector import And, Compare, Selector

__all__ = ["LabelIndex", "required_label"]

S = TypeVar("S", bound=Hashable)  # selector owners (policy keys, IP set numbers)
T = TypeVar("T", bound=Hashable)  # subjects (endpoint keys, network set keys)

Label = tuple[str, str]


def required_label(selector: Selector) -> Label | None:
    """A ``(key, value)`` every label set the selector matches must hold, if one is plain.

    The namespace label is preferred: in a cluster it splits subjects into small groups,
    while a label such as ``app`` recurs in every namespace.
    """
    root = selector.root
    found: Label | None = None
    for part in root.operands if isinstance(root, And) else (root,):
        if isinstance(part, Compare) and part.op == "==":
            if part.key == NAMESPACE_LABEL:
                return (part.key, part.value)
            if found is None:
                found = (part.key, part.value)
    return found


class LabelIndex(Generic[S, T]):
    """Selectors (by owner) and subjects (by key), each filed by label."""

    def __init__(self) -> None:
        self._selectors: dict[Label, set[S]] = {}
        self._unfiled: set[S] = set()
        self._filed_as: dict[S, Label | None] = {}
        # Subjects filed by their whole label set (replicas share one).
        self._groups: Groups[Label, T] = Groups()
        self._group_of: dict[T, frozenset[Label]] = {}  # subject -> the kept copy of its labels

    # -- selectors ---------------------------------------------------------------------------

    def add_selector(self, owner: S, selector: Selector) -> None:
        """File ``owner``'s selector (replacing what it was filed as before)."""
        self.discard_selector(owner)
        label = required_label(selector)
        self._filed_as[owner] = label
        if label is None:
            self._unfiled.add(owner)
        else:
            self._selectors.setdefault(label, set()).add(owner)

    def discard_selector(self, owner: S) -> None:
        """Forget ``owner``'s selector, if filed."""
        if owner not in self._filed_as:
            return
        label = self._filed_as.pop(owner)
        if label is None:
            self._unfiled.discard(owner)
            return
        bucket = self._selectors[label]
        bucket.discard(owner)
        if not bucket:
            del self._selectors[label]

    def selectors_for(self, labels: Mapping[str, str]) -> set[S]:
        """Owners whose selector may match a subject with these effective labels."""
        found = set(self._unfiled)
        buckets = self._selectors
        for item in labels.items():
            bucket = buckets.get(item)
            if bucket:
                found |= bucket
        return found

    # -- subjects ----------------------------------------------------------------------------

    def add_subject(self, key: T, labels: Mapping[str, str]) -> None:
        """File a subject under each of its effective labels (replacing an earlier filing)."""
        if key in self._group_of:
            self.discard_subject(key)
        self._group_of[key] = self._groups.join(key, frozenset(labels.items()))

    def discard_subject(self, key: T) -> None:
        """Forget a subject, if filed."""
        group = self._group_of.pop(key, None)
        if group is not None:
            self._groups.leave(key, group)

    def groups_for(self, selector: Selector) -> list[AbstractSet[T]]:
        """Subjects the selector may match (all of them when it requires no plain label).

        They come in groups of subjects with equal labels (not to be changed, never empty):
        a selector reads only labels, so one evaluation answers for a whole group.
        """
        label = required_label(selector)
        return self._groups.every() if label is None else self._groups.holding(label)
