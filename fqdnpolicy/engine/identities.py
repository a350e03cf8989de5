"""Identities: every address maps to the interned set of IP-set numbers that hold it.

This is the idea behind Cilium's ipcache and Calico's IP sets. An :class:`Identity` is what a
verdict needs to know about a peer address: its family, the numbers of every IP set holding it
(its own host memberships merged with those of every CIDR covering it), and, when the address
belongs to an endpoint, that endpoint's named ports. Identities are interned and never change:
a DNS answer that puts an address into a set gives the address another identity, so whatever
was judged for the old identity stays true.

Two kinds of members, two structures:

* **Hosts** (DNS-learned members, endpoint addresses) are in :attr:`AddressTable.hosts`, a
  dict from canonical text to identity: one lookup per verdict.
* **Prefixes** (CIDRs of ``nets`` and network sets) are in a :class:`PrefixTable`, a radix
  tree per family whose nodes hold prefix-only identities. A table is never changed once
  published: a prefix change builds a new one, so a reader always sees one whole table. Each
  table caches the identities of outside addresses readers asked about.

Writers change membership counts (endpoint addresses, prefixes) or say which addresses DNS
moved, marking them dirty; :meth:`AddressTable.settle` computes the new identities and stores
each with one dict assignment, recording what it replaced when a commit needs a before-image
(see :mod:`fqdnpolicy.engine.published`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterable
from typing import Protocol, TypeAlias

import pytricia

from fqdnpolicy.cluster import NamedPort
from fqdnpolicy.engine.hostranges import HostRanges
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.model import IPNetwork

__all__ = [
    "CANONICAL_IPV4",
    "EMPTY",
    "AddressTable",
    "DNSMembership",
    "Identity",
    "PrefixTable",
    "canonical_ip",
    "family_of",
    "identity_of",
    "remember_outside",
]

EMPTY: frozenset[int] = frozenset()
#: IPv4 addresses in canonical text (dotted quad, no leading zeros): what the engine holds,
#: so text that matches needs no parsing. ASCII digits only: ``\d`` alone would also take
#: other scripts' digits, which are no address.
CANONICAL_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
    re.ASCII,
)
# Outside addresses whose identity a prefix table caches before it starts over: a scan of
# random destinations must not grow it without bound.
OUTSIDE_LIMIT = 1 << 20
# Interned identities kept before the table starts over (identity is a speed-up for memo
# hits, never relied on for meaning).
_INTERN_LIMIT = 1 << 20


# Set numbers folded onto this many bits: an identity's sets and a program's as a summary
# that tells most peers in none of a program's sets without reading either set.
SIGNATURE_BITS = 4096
# One int object per bit, made together: the summaries share them, so reading one touches
# memory that stays warm.
_BIT = tuple(range(SIGNATURE_BITS))


def signature_bits(sets: Iterable[int]) -> tuple[int, ...]:
    """The bits ``sets`` fold onto (see :func:`signature_mask`)."""
    return tuple(sorted({_BIT[n % SIGNATURE_BITS] for n in sets}))


#: How many of an identity's bits it holds in its own fields (see :func:`folded`).
INLINE_BITS = 3

_Folded: TypeAlias = tuple[int | tuple[int, ...] | None, int | None, int | None]


def folded(sets: Iterable[int]) -> _Folded:
    """:func:`signature_bits` of ``sets`` as an identity holds them: ``(bits, bit1, bit2)``.

    Up to :data:`INLINE_BITS` bits, each is itself (the shared int of :data:`_BIT`), the
    ones missing None: a reader tests them without reading another object, which for
    addresses met at random is a cache miss. More bits: all of them as a tuple, then None,
    None.
    """
    bits = signature_bits(sets)
    if len(bits) > INLINE_BITS:
        return bits, None, None
    first, second, third, *_ = (*bits, None, None, None)
    return first, second, third


def signature_mask(sets: Iterable[int]) -> bytes:
    """A bitmap of the bits ``sets`` fold onto.

    A set number whose bit is clear in it is none of ``sets``; a bit that is set proves
    nothing (other numbers fold onto it too).
    """
    mask = bytearray(SIGNATURE_BITS // 8)
    for bit in signature_bits(sets):
        mask[bit >> 3] |= 1 << (bit & 7)
    return bytes(mask)


def family_of(address: str) -> int:
    """4 or 6, from canonical text."""
    return 6 if ":" in address else 4


def canonical_ip(text: str) -> str:
    """Canonical text of an address (IPv4 dotted quad, compressed lower-case IPv6).

    Raises:
        InvalidPolicy: ``text`` is not an IP address.
    """
    if text.__class__ is str and CANONICAL_IPV4.fullmatch(text):
        return text
    try:
        return str(ipaddress.ip_address(text))
    except (ValueError, TypeError):
        raise InvalidPolicy(
            Problem(f"not an IP address: {text!r}", hint="an IPv4 or IPv6 address")
        ) from None


class Identity(frozenset[int]):
    """What a verdict needs to know about a peer address; interned, never changed.

    An identity *is* the frozenset of the numbers of every IP set holding the address (set
    operations work on it directly, reading one object), and carries:

    Attributes:
        family: 4 or 6.
        ports: The named ports of the endpoint owning the address; None when no endpoint
            owns it.
        bits: Its sets folded onto :data:`SIGNATURE_BITS` bits (:func:`folded`): the first
            bit, or all of them as a tuple when there are more than :data:`INLINE_BITS`
            (None when in no set). The C shortcut tests them against a slice's
            :attr:`Slice.mask <fqdnpolicy.engine.slices.Slice.mask>` before it reads
            either set.
        bit1: The second bit when it has two or three (else None).
        bit2: The third bit when it has three (else None).

    Identities compare and hash by identity (two with the same sets differ by family or
    ports): :attr:`sets` gives the plain set to compare.
    """

    # Five fields: with the collector's header the object fills its allocator block exactly,
    # which starts it on a cache line and keeps these fields within one (a sixth would not).
    __slots__ = ("bit1", "bit2", "bits", "family", "ports")
    __hash__ = object.__hash__
    __eq__ = object.__eq__
    __ne__ = object.__ne__

    family: int
    ports: tuple[NamedPort, ...] | None
    bits: int | tuple[int, ...] | None
    bit1: int | None
    bit2: int | None

    def __new__(
        cls, family: int, sets: frozenset[int], ports: tuple[NamedPort, ...] | None
    ) -> Identity:
        """Make an identity (the address table interns them: use that)."""
        self = super().__new__(cls, sets)
        self.family = family
        self.ports = ports
        self.bits, self.bit1, self.bit2 = folded(sets)
        return self

    @property
    def sets(self) -> frozenset[int]:
        """The numbers of the sets holding the address, as a plain frozenset."""
        return frozenset(self)

    def __repr__(self) -> str:
        endpoint = "" if self.ports is None else f", endpoint ports {list(self.ports)}"
        return f"Identity(IPv{self.family}, sets {sorted(self)}{endpoint})"


class _Interner:
    def __init__(self) -> None:
        # Identities of addresses no endpoint owns (most) by family, keyed by their sets
        # alone: no key object per identity. Endpoint addresses' identities apart.
        self._plain: dict[int, dict[frozenset[int], Identity]] = {4: {}, 6: {}}
        self._owned: dict[tuple[int, frozenset[int], tuple[NamedPort, ...]], Identity] = {}

    def __call__(
        self, family: int, sets: frozenset[int], ports: tuple[NamedPort, ...] | None
    ) -> Identity:
        if ports is None:
            plain = self._plain[family]
            found = plain.get(sets)
            if found is None:
                if len(plain) >= _INTERN_LIMIT:
                    plain.clear()
                found = plain[sets] = Identity(family, sets, None)
            return found
        key = (family, sets, ports)
        found = self._owned.get(key)
        if found is None:
            if len(self._owned) >= _INTERN_LIMIT:
                self._owned.clear()
            found = self._owned[key] = Identity(family, sets, ports)
        return found


class PrefixTable:
    """CIDR members of one moment, read-only once published.

    Each radix node holds the prefix-only identity of its prefix: its own sets merged with
    those of every shorter prefix covering it, so one longest-prefix lookup answers.
    """

    __slots__ = ("_world", "outside", "prefixes", "trees")

    def __init__(self, prefixes: dict[IPNetwork, frozenset[int]], intern: _Interner) -> None:
        self.trees = {4: pytricia.PyTricia(32), 6: pytricia.PyTricia(128)}
        self._world = {4: intern(4, EMPTY, None), 6: intern(6, EMPTY, None)}
        #: prefix -> its prefix-only identity (merged), for datapath projections and batches.
        self.prefixes: dict[IPNetwork, Identity] = {}
        # Shorter prefixes first: each merges its own sets with its nearest cover's.
        for net in sorted(prefixes, key=lambda n: (n.version, n.prefixlen)):
            tree = self.trees[net.version]
            text = str(net)
            cover: Identity | None = tree.get(text)
            sets = prefixes[net] if cover is None else prefixes[net] | cover
            ident = intern(net.version, sets, None)
            tree[text] = ident
            self.prefixes[net] = ident
        #: Canonical outside address -> identity, filled by readers (see identity_of).
        self.outside: dict[str, Identity] = {}

    def world(self, family: int) -> Identity:
        """The identity of an address no set holds."""
        return self._world[family]

    def identity(self, address: str) -> Identity:
        """The prefix-only identity of canonical ``address``."""
        found: Identity | None = self.trees[6 if ":" in address else 4].get(address)
        return self._world[6 if ":" in address else 4] if found is None else found


class DNSMembership(Protocol):
    """Where the address table reads DNS-learned membership (the name manager)."""

    def sets_of(self, address: str) -> frozenset[int]:
        """The sets DNS puts ``address`` in."""

    def expiry_in(self, num: int, address: str) -> float | None:
        """The expiry of ``address`` in set ``num``; None when DNS has it not there."""


class _NoDNS:
    def sets_of(self, address: str) -> frozenset[int]:
        return EMPTY

    def expiry_in(self, num: int, address: str) -> float | None:
        return None


_NO_DNS = _NoDNS()


def _uncount(counts: dict[int, int], num: int) -> bool:
    """Drop one count of ``num``; True when that was its last (it is gone from ``counts``)."""
    count = counts.get(num)
    if count is None:
        return False
    if count > 1:
        counts[num] = count - 1
        return False
    del counts[num]
    return True


class AddressTable:
    """Addresses to identities: membership in, one published dict out.

    Two kinds of host membership meet here. Endpoint addresses in selector sets are counted
    per (set, member): a set may hold an address through two subjects and keeps it until
    the last goes. DNS-learned membership is not counted but derived: the table reads the
    DNS part of an address's sets from the name manager (:meth:`follow_dns`), which tells it
    which addresses moved (:meth:`dns_moved`). A member held both ways is an endpoint's
    address first: it never expires while counted.
    """

    def __init__(self) -> None:
        self._intern = _Interner()
        #: Canonical host address -> identity. Published: readers look addresses up here
        #: without a lock; only :meth:`settle` stores into it, one assignment per address.
        self.hosts: dict[str, Identity] = {}
        # host -> its own set number when in one set once; else counts per set.
        self._own: dict[str, int | dict[int, int]] = {}
        self._dns: DNSMembership = _NO_DNS
        self._dns_sets = self._dns.sets_of
        self._told: dict[str, frozenset[int]] = {}  # DNS sets handed over until settle
        self._ports: dict[str, tuple[NamedPort, ...]] = {}  # endpoint addresses
        self._prefix_counts: dict[IPNetwork, dict[int, int]] = {}
        #: The published prefix table (replaced, never changed, when prefixes change).
        self.prefixes = PrefixTable({}, self._intern)
        self._dirty: set[str] = set()
        self._changed_prefixes: list[IPNetwork] = []
        self._ranges: HostRanges | None = None  # built on the first prefix change
        # (DNS sets, covering identity, IPv6) -> identity of a host with no other source.
        self._alike: dict[tuple[frozenset[int], Identity | None, bool], Identity] = {}
        #: Moves whenever some address's identity changes (batch tables follow it).
        self.version = 0

    # -- membership (writers) ----------------------------------------------------------------

    def add_host(self, num: int, address: str) -> bool:
        """Count one more source of ``address`` in set ``num``; True when the first."""
        own = self._own
        counts = own.get(address)
        if counts is None:
            own[address] = num
        elif counts.__class__ is int:
            if counts == num:
                own[address] = {num: 2}
                return False
            own[address] = {counts: 1, num: 1}
        else:
            assert isinstance(counts, dict)
            count = counts.get(num, 0)
            counts[num] = count + 1
            if count:
                return False
        self._dirty.add(address)
        return True

    def remove_host(self, num: int, address: str) -> bool:
        """Drop one source of ``address`` from set ``num``; True when that was the last."""
        counts = self._own.get(address)
        if counts is None:
            return False
        if isinstance(counts, int):
            if counts != num:
                return False
            del self._own[address]
        else:
            if not _uncount(counts, num):
                return False
            if not counts:
                del self._own[address]
        self._dirty.add(address)
        return True

    def counted(self, address: str) -> Iterable[int]:
        """The sets holding ``address`` through counted (endpoint) sources."""
        counts = self._own.get(address)
        if counts is None:
            return EMPTY
        return (counts,) if isinstance(counts, int) else counts

    def follow_dns(self, dns: DNSMembership) -> None:
        """Read what DNS puts an address in from ``dns`` (the name manager)."""
        self._dns = dns
        self._dns_sets = dns.sets_of

    def dns_expiry(self, num: int, address: str) -> float | None:
        """The expiry of ``address`` in set ``num`` by DNS; None when DNS has it not there."""
        return self._dns.expiry_in(num, address)

    def dns_moved(self, address: str, sets: frozenset[int] | None = None) -> None:
        """The sets DNS puts ``address`` in changed: publish its identity at settle.

        ``sets``, when given, are those sets (what :meth:`follow_dns` would read).
        """
        self._dirty.add(address)
        if sets is None:
            self._told.pop(address, None)  # what an earlier change of the batch told is stale
        else:
            self._told[address] = sets

    def learn(self, addresses: Collection[str], sets: frozenset[int]) -> bool:
        """Publish a group of addresses that DNS puts in ``sets`` only; True when all were new.

        For the first build only, before any reader: identities are stored at once, with no
        before-image. An address that also has counted sources or ports was marked dirty when
        they came, so :meth:`settle` makes its whole identity. Most groups (a name's
        addresses) share one family and no covering prefix: one identity for all, stored in
        one bulk update. When the table knew some of them already (another name leads there
        too), the whole group is stated afresh at :meth:`settle`, and False tells the caller
        to look at them one by one.
        """
        if not addresses:
            return True
        if self._changed_prefixes:
            self._publish_prefixes()
        hosts, ranges = self.hosts, self._ranges
        known = len(hosts)
        # Host ranges (kept once prefixes changed with hosts known) take only new hosts.
        fresh = () if ranges is None else [a for a in addresses if a not in hosts]
        if ":" in "".join(addresses):  # IPv6 among them: each family apart
            self._learn_family(4, [a for a in addresses if ":" not in a], sets)
            self._learn_family(6, [a for a in addresses if ":" in a], sets)
        else:
            covers = list(map(self.prefixes.trees[4].get, addresses))
            if covers.count(None) == len(covers):
                hosts.update(dict.fromkeys(addresses, self._intern(4, sets, None)))
            else:
                self._learn_family(4, addresses, sets)
        if ranges is not None:
            for address in fresh:
                ranges.add(address)
        self.version += len(addresses)
        if len(hosts) - known == len(addresses):
            return True
        self._dirty.update(addresses)
        return False

    def _learn_family(self, family: int, addresses: Collection[str], sets: frozenset[int]) -> None:
        """:meth:`learn` for addresses of one family, each with its covering prefixes."""
        hosts, intern = self.hosts, self._intern
        covering = self.prefixes.trees[family].get
        made: dict[Identity | None, Identity] = {}
        for address in addresses:
            cover: Identity | None = covering(address)
            ident = made.get(cover)
            if ident is None:
                ident = made[cover] = intern(family, sets if cover is None else sets | cover, None)
            hosts[address] = ident

    def set_endpoint(self, address: str, ports: tuple[NamedPort, ...] | None) -> None:
        """Mark ``address`` as an endpoint's (with its named ports), or as no longer one."""
        if ports is None:
            self._ports.pop(address, None)
        else:
            self._ports[address] = ports
        self._dirty.add(address)

    def add_prefix(self, num: int, net: IPNetwork) -> bool:
        """Count one more source of ``net`` in set ``num``; True when newly a member."""
        counts = self._prefix_counts.setdefault(net, {})
        count = counts.get(num, 0)
        counts[num] = count + 1
        if count:
            return False
        self._changed_prefixes.append(net)
        return True

    def remove_prefix(self, num: int, net: IPNetwork) -> bool:
        """Drop one source of ``net`` from set ``num``; True when no longer a member."""
        counts = self._prefix_counts.get(net)
        if counts is None or not _uncount(counts, num):
            return False
        if not counts:
            del self._prefix_counts[net]
        self._changed_prefixes.append(net)
        return True

    # -- publishing --------------------------------------------------------------------------

    def settle(self, before: dict[str, Identity | None] | None = None) -> None:
        """Publish the identities of every address whose membership changed.

        With ``before``, the identity each store replaces is recorded there first (once per
        address), so a reader of a commit in progress can read the state before it.
        """
        if self._changed_prefixes:
            self._publish_prefixes()
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = set()
        hosts, own, dns_sets, ports = self.hosts, self._own, self._dns_sets, self._ports
        told, self._told = self._told, {}
        intern = self._intern
        trees = self.prefixes.trees
        ranges = self._ranges
        # Most hosts are DNS members only: their identity depends only on their DNS sets (one
        # object per name) and the covering prefixes, so it is made once per such pair (the
        # memo lives until the prefixes change, so a DNS answer's new address finds it made).
        alike = self._alike
        if len(alike) > _INTERN_LIMIT:
            alike.clear()
        moved = 0
        for address in dirty:
            counts = own.get(address)
            learned = told.get(address)
            if learned is None:
                learned = dns_sets(address)
            port_list = ports.get(address)
            old = hosts.get(address)
            if counts is None and not learned and port_list is None:
                if old is None:
                    continue
                if before is not None and address not in before:
                    before[address] = old
                del hosts[address]
                if ranges is not None:
                    ranges.discard(address)
                moved += 1
                continue
            v6 = ":" in address
            covering: Identity | None = trees[6 if v6 else 4].get(address)
            if counts is None and port_list is None:
                key = (learned, covering, v6)
                ident = alike.get(key)
                if ident is None:
                    sets = learned if covering is None else learned | covering
                    ident = alike[key] = intern(6 if v6 else 4, sets, None)
            else:
                sets = learned
                if counts is not None:
                    sets = sets | frozenset((counts,) if isinstance(counts, int) else counts)
                if covering:
                    sets = sets | covering
                ident = intern(6 if v6 else 4, sets, port_list)
            if ident is old:
                continue
            if before is not None and address not in before:
                before[address] = old
            hosts[address] = ident
            if old is None and ranges is not None:
                ranges.add(address)
            moved += 1
        self.version += moved

    def _publish_prefixes(self) -> None:
        changed, self._changed_prefixes = self._changed_prefixes, []
        self._alike.clear()  # its keys hold the old table's covering identities alive
        merged = {net: frozenset(counts) for net, counts in self._prefix_counts.items()}
        self.prefixes = PrefixTable(merged, self._intern)
        self.version += 1
        if not self.hosts:
            return
        if self._ranges is None:
            self._ranges = HostRanges(self.hosts)
        for net in changed:
            self._dirty.update(self._ranges.within(net))

    # -- reading (writers, tools) ------------------------------------------------------------

    def identity(self, address: str) -> Identity:
        """The published identity of canonical ``address`` (host or prefix-only)."""
        found = self.hosts.get(address)
        return found if found is not None else self.prefixes.identity(address)

    def sets_of(self, address: str) -> frozenset[int]:
        """Numbers of the sets holding canonical ``address`` now."""
        return self.identity(address).sets

    def host_members(self, num: int) -> set[str]:
        """Host members of set ``num`` (a scan: for tests and tools)."""
        counted = {
            host
            for host, counts in self._own.items()
            if (counts == num if isinstance(counts, int) else num in counts)
        }
        return counted | {host for host in self.hosts if num in self._dns_sets(host)}

    def prefix_members(self, num: int) -> set[str]:
        """Prefix members of set ``num`` (a scan: for tests and tools)."""
        return {str(net) for net, counts in self._prefix_counts.items() if num in counts}


def identity_of(
    host: Callable[[str], Identity | None], table: PrefixTable, address: str
) -> tuple[Identity, str]:
    """Resolve any address text for a reader: its identity and canonical text.

    Host members are found by canonical text; other canonical addresses are cached in the
    prefix table they were resolved against.

    Raises:
        InvalidPolicy: ``address`` is not an IP address.
    """
    found = host(address)
    if found is not None:
        return found, address
    found = table.outside.get(address)
    if found is not None:
        return found, address
    canonical = canonical_ip(address)
    if canonical != address:
        found = host(canonical)
        return (found if found is not None else table.identity(canonical)), canonical
    return remember_outside(table, address), address


def remember_outside(table: PrefixTable, address: str) -> Identity:
    """The prefix-only identity of canonical ``address``, cached in ``table`` for readers."""
    found = table.identity(address)
    outside = table.outside
    if len(outside) >= OUTSIDE_LIMIT:
        outside.clear()
    outside[address] = found
    return found
