"""Members filed by the set of elements they share, each element naming its groups.

Replicas share their labels and the policies that apply to them: filed by that whole set,
an element (a label, a policy) names the few groups holding it rather than every member.
"""

from __future__ import annotations

from collections.abc import Hashable
from collections.abc import Set as AbstractSet
from typing import Generic, TypeVar

__all__ = ["Groups"]

E = TypeVar("E", bound=Hashable)  # the elements a group is a set of
T = TypeVar("T", bound=Hashable)  # members


class Groups(Generic[E, T]):
    """Members by group (a frozenset of elements), and groups by element; never an empty group."""

    __slots__ = ("_by_element", "_groups")

    def __init__(self) -> None:
        self._groups: dict[frozenset[E], tuple[frozenset[E], set[T]]] = {}
        self._by_element: dict[E, set[frozenset[E]]] = {}

    def join(self, member: T, group: frozenset[E]) -> frozenset[E]:
        """File ``member`` under ``group``; returns the one copy of ``group`` kept."""
        found = self._groups.get(group)
        if found is not None:
            found[1].add(member)
            return found[0]
        self._groups[group] = (group, {member})
        by_element = self._by_element
        for element in group:
            holders = by_element.get(element)
            if holders is None:
                by_element[element] = {group}
            else:
                holders.add(group)
        return group

    def leave(self, member: T, group: frozenset[E]) -> None:
        """Undo :meth:`join` (nothing when ``member`` is not filed there)."""
        found = self._groups.get(group)
        if found is None:
            return
        members = found[1]
        members.discard(member)
        if members:
            return
        del self._groups[group]
        for element in group:
            holders = self._by_element[element]
            holders.discard(group)
            if not holders:
                del self._by_element[element]

    def holding(self, element: E) -> list[AbstractSet[T]]:
        """The members of each group holding ``element`` (not to be changed)."""
        groups = self._groups
        return [groups[group][1] for group in self._by_element.get(element, ())]

    def every(self) -> list[AbstractSet[T]]:
        """The members of each group (not to be changed)."""
        return [members for _, members in self._groups.values()]
