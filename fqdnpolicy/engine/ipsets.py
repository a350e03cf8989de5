"""The IP-set registry: every rule peer becomes a reference-counted set with a stable id.

A rule's ``nets``, its selectors (``selector``/``notSelector``/``namespaceSelector``/
``serviceAccounts``), its ``domains``, and a selected network set's ``allowedEgressDomains``
each become an IP set, shared by every rule naming the same thing: the definition text is the
key. Sets carry a small number (what identities hold) and a stable id derived from the
definition (what datapaths name them by), and live while some rule or network set refers to
them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping
from typing import Literal, TypeAlias, cast

import attrs

from fqdnpolicy.datapath import Delta, IPSetChanged, MemberChanged
from fqdnpolicy.domains import DomainPattern
from fqdnpolicy.engine.identities import AddressTable
from fqdnpolicy.engine.results import IPSetInfo
from fqdnpolicy.model import IPNetwork
from fqdnpolicy.selector import Selector

__all__ = ["IPSet", "IPSetRegistry", "SetKind", "stable_id"]

SetKind: TypeAlias = Literal["nets", "domains", "selector"]


def stable_id(kind: str, definition: str) -> str:
    """A kind letter, ``:`` and 22 characters of base64url(SHA-224) of the definition."""
    digest = hashlib.sha224(f"{kind}\0{definition}".encode()).digest()
    return f"{kind[0]}:{base64.urlsafe_b64encode(digest).decode()[:22]}"


@attrs.define(eq=False, slots=True)
class IPSet:
    """One set and what fills it (only the fields of its kind are used).

    Attributes:
        num: Small number, unique while the set lives (identities hold these).
        set_id: Stable id (what datapaths name the set by, see :func:`stable_id`).
        kind: ``nets``, ``domains`` or ``selector``.
        definition: Canonical text of what the set holds.
        key: Definition key in the registry.
        refs: Rules (and network sets) referring to it.
        with_domains: Selector sets: whether selected network sets' ``allowedEgressDomains``
            addresses count (only for the destination of egress Allow rules, as in Calico).
        nets: Nets sets: the CIDRs.
        patterns: Domain sets: the patterns.
        selector: Selector sets: the selector.
        dns_names: Domain sets: the followed names matching it (its members are theirs).
        parents: Domain sets: selector sets inheriting the members (network sets' domains),
            with how many selected network sets lead there.
        subjects: Selector sets: endpoint and network set keys currently matched.
    """

    num: int
    set_id: str
    kind: SetKind
    definition: str
    key: str
    refs: int = 0
    with_domains: bool = False
    nets: tuple[IPNetwork, ...] = ()
    patterns: tuple[DomainPattern, ...] = ()
    selector: Selector | None = None
    dns_names: set[str] = attrs.field(factory=set)
    parents: dict[int, int] = attrs.field(factory=dict)
    subjects: set[str] = attrs.field(factory=set)
    _info: IPSetInfo | None = attrs.field(default=None, init=False, repr=False)

    @property
    def info(self) -> IPSetInfo:
        """Stable id, kind and definition, as tools and explanations read them."""
        info = self._info
        if info is None:
            info = self._info = IPSetInfo(self.set_id, self.kind, self.definition)
        return info


# What a set of another kind holds instead of the names or subjects it never has: a frozenset,
# so that filling it by mistake fails at once.
_NEVER = cast(set[str], frozenset())


class IPSetRegistry:
    """Sets by definition key and by number, and their members in the address table.

    Creating and removing a set, and a member joining or leaving one, each add a delta for
    datapaths. New sets and host member deltas are held back while :attr:`announce` is off
    (the first build: a full rendering follows it, not deltas).
    """

    def __init__(self, deltas: list[Delta], table: AddressTable) -> None:
        self._deltas = deltas
        self.table = table
        self.by_key: dict[str, IPSet] = {}
        self.by_num: dict[int, IPSet] = {}
        self._next = 0
        self.announce = False

    def add_host(self, ipset: IPSet, host: str) -> None:
        """Count an endpoint source of ``host`` in ``ipset`` (a member that never expires)."""
        if self.table.add_host(ipset.num, host) and self.announce:
            self._deltas.append(MemberChanged(ipset.set_id, host, True, None))

    def remove_host(self, ipset: IPSet, host: str) -> None:
        """Drop an endpoint source of ``host`` from ``ipset``.

        After the last, a member DNS still puts there stays, expiring as DNS says.
        """
        table = self.table
        if table.remove_host(ipset.num, host) and self.announce:
            expiry = table.dns_expiry(ipset.num, host)
            self._deltas.append(MemberChanged(ipset.set_id, host, expiry is not None, expiry))

    def dns_joined(self, host: str, sets: frozenset[int], expiry: float) -> None:
        """DNS put ``host``, in no set by DNS before, in ``sets`` until ``expiry``."""
        table = self.table
        table.dns_moved(host, sets)
        if not self.announce:
            return
        counted = table.counted(host)
        by_num, deltas = self.by_num, self._deltas
        for num in sets:
            if num not in counted:
                deltas.append(MemberChanged(by_num[num].set_id, host, True, expiry))

    def dns_joined_one(self, host: str, num: int, expiry: float) -> None:
        """DNS put ``host`` in new domain set ``num`` (no endpoint source can hold it there)."""
        self.table.dns_moved(host)
        if self.announce:
            self._deltas.append(MemberChanged(self.by_num[num].set_id, host, True, expiry))

    def dns_moved(
        self,
        host: str,
        before: Mapping[int, float],
        after: Mapping[int, float],
    ) -> None:
        """``host``'s DNS state went from ``before`` to ``after`` (set -> expiry).

        A set that also holds the host through a counted source (an endpoint) sees no change:
        the member is there, never expiring, while that source is.
        """
        table = self.table
        table.dns_moved(host)
        if not self.announce:
            return
        counted = table.counted(host)
        by_num, deltas = self.by_num, self._deltas
        for num, expiry in after.items():
            # A join, or a move of the expiry (datapaths with element timeouts follow it).
            if before.get(num) != expiry and num not in counted:
                deltas.append(MemberChanged(by_num[num].set_id, host, True, expiry))
        for num in before:
            if num not in after and num not in counted:
                deltas.append(MemberChanged(by_num[num].set_id, host, False))

    def add_prefix(self, ipset: IPSet, net: IPNetwork) -> None:
        """Count a source of ``net`` in ``ipset``."""
        if self.table.add_prefix(ipset.num, net):
            self._deltas.append(MemberChanged(ipset.set_id, str(net), True))

    def remove_prefix(self, ipset: IPSet, net: IPNetwork) -> None:
        """Drop a source of ``net`` from ``ipset``."""
        if self.table.remove_prefix(ipset.num, net):
            self._deltas.append(MemberChanged(ipset.set_id, str(net), False))

    def get(self, key: str) -> IPSet | None:
        """The live set with this definition key, if any."""
        return self.by_key.get(key)

    def create(self, key: str, kind: SetKind, text: str) -> IPSet:
        """Register a new set (no references yet)."""
        num = self._next
        self._next += 1
        ipset = IPSet(
            num=num,
            set_id=stable_id(kind, text),
            kind=kind,
            definition=text,
            key=key,
            dns_names=set() if kind == "domains" else _NEVER,
            subjects=set() if kind == "selector" else _NEVER,
        )
        self.by_key[key] = ipset
        self.by_num[num] = ipset
        if self.announce:
            self._deltas.append(IPSetChanged(ipset.set_id, True))
        return ipset

    def remove(self, ipset: IPSet) -> None:
        """Forget a set whose last reference went."""
        del self.by_key[ipset.key]
        del self.by_num[ipset.num]
        self._deltas.append(IPSetChanged(ipset.set_id, False))

    def __iter__(self) -> Iterator[IPSet]:
        return iter(self.by_key.values())

    def __len__(self) -> int:
        return len(self.by_key)

    def by_id(self, set_id: str) -> IPSet | None:
        """The set with this stable id (a scan: for tests and tools)."""
        return next((s for s in self.by_key.values() if s.set_id == set_id), None)
