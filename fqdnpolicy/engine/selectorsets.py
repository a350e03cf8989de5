"""Selector-set members: which endpoints and network sets each selector set picks.

A selector set (a rule's selectors, combined with its namespace scope) holds the addresses of
the endpoints it matches and the CIDRs of the network sets it matches; when it is the
destination of an egress Allow rule, also the DNS-learned members of those network sets'
``allowedEgressDomains`` (the name manager links their domain set to it). Subjects and selectors are
matched through the label index, so a change tests only the candidates sharing a label.
"""

from __future__ import annotations

import attrs

from fqdnpolicy.engine.domainsets import NameManager
from fqdnpolicy.engine.ipsets import IPSet, IPSetRegistry
from fqdnpolicy.engine.labelindex import LabelIndex
from fqdnpolicy.model import IPNetwork
from fqdnpolicy.scoping import Subject
from fqdnpolicy.selector import Selector

__all__ = ["WITH_DOMAINS", "Member", "SelectorSets"]

#: Suffix of the definition of a selector set that counts network sets' domains.
WITH_DOMAINS = " +allowedEgressDomains"


@attrs.frozen
class Member:
    """What a selector set receives from a subject it matches.

    Attributes:
        subject: Labels as selectors see them.
        ips: An endpoint's addresses.
        nets: A network set's CIDRs.
        domains: A network set's domain set (its ``allowedEgressDomains``), if any.
    """

    subject: Subject
    ips: tuple[str, ...] = ()
    nets: tuple[IPNetwork, ...] = ()
    domains: IPSet | None = None


class SelectorSets:
    """Selector sets and the endpoints and network sets they match."""

    def __init__(self, registry: IPSetRegistry, names: NameManager) -> None:
        self._registry = registry
        self._names = names
        self._index: LabelIndex[int, str] = LabelIndex()
        self._members: dict[str, Member] = {}
        self._member_of: dict[str, set[int]] = {}

    def acquire(self, selector: Selector, *, with_domains: bool = False) -> IPSet:
        """Take a reference to the selector set of ``selector``, creating it if needed."""
        text = selector.text + (WITH_DOMAINS if with_domains else "")
        key = f"selector:{text}"
        ipset = self._registry.get(key)
        if ipset is None:
            ipset = self._registry.create(key, "selector", text)
            ipset.selector = selector
            ipset.with_domains = with_domains
            self._index.add_selector(ipset.num, selector)
            members = self._members
            matched = [
                key
                for group in self._index.groups_for(selector)
                if members[next(iter(group))].subject.matches(selector)
                for key in group
            ]
            for subject_key in sorted(matched):
                self._join(ipset, subject_key)
        ipset.refs += 1
        return ipset

    def dropped(self, ipset: IPSet) -> None:
        """Empty a selector set whose last reference went."""
        for subject_key in sorted(ipset.subjects):
            self._leave(ipset, subject_key)
        self._index.discard_selector(ipset.num)

    def add_subject(self, key: str, member: Member) -> None:
        """An endpoint or network set appears: every selector set matching it takes it."""
        self._members[key] = member
        self._index.add_subject(key, member.subject.effective_labels)
        sets = self._registry.by_num
        for num in sorted(self._index.selectors_for(member.subject.effective_labels)):
            ipset = sets[num]
            assert ipset.selector is not None
            if member.subject.matches(ipset.selector):
                self._join(ipset, key)

    def remove_subject(self, key: str) -> None:
        """An endpoint or network set goes: every selector set holding it lets it go."""
        sets = self._registry.by_num
        for num in sorted(self._member_of.get(key, ())):
            self._leave(sets[num], key)
        self._index.discard_subject(key)
        del self._members[key]

    def subjects(self, ipset: IPSet) -> list[Member]:
        """The members of a selector set's subjects (for datapath projections)."""
        return [self._members[key] for key in ipset.subjects]

    def _join(self, ipset: IPSet, key: str) -> None:
        member = self._members[key]
        registry = self._registry
        ipset.subjects.add(key)
        self._member_of.setdefault(key, set()).add(ipset.num)
        for ip in member.ips:
            registry.add_host(ipset, ip)
        for net in member.nets:
            registry.add_prefix(ipset, net)
        child = member.domains
        if child is not None and ipset.with_domains:
            self._names.link(child, ipset.num)

    def _leave(self, ipset: IPSet, key: str) -> None:
        member = self._members[key]
        registry = self._registry
        ipset.subjects.discard(key)
        holders = self._member_of[key]
        holders.discard(ipset.num)
        if not holders:
            del self._member_of[key]
        for ip in member.ips:
            registry.remove_host(ipset, ip)
        for net in member.nets:
            registry.remove_prefix(ipset, net)
        child = member.domains
        if child is not None and ipset.with_domains:
            self._names.unlink(child, ipset.num)
