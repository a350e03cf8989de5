"""What the DNS cache hands out and takes in: changes, links, counters, answer shapes.

Every other module of :mod:`fqdnpolicy.dns` builds on these; this one imports none of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import attrs

__all__ = [
    "RTYPE_A",
    "RTYPE_AAAA",
    "RTYPE_CNAME",
    "Answer",
    "CacheSnapshot",
    "Counters",
    "DNSChange",
    "DNSLink",
    "DNSStats",
    "Outbox",
    "PatternLike",
    "RecordTuple",
    "Subscriber",
    "new_change",
]

RTYPE_A = 1
RTYPE_CNAME = 5
RTYPE_AAAA = 28


RecordTuple = tuple[str, int, int, str]
"""``(owner, rtype, ttl, value)``: the shape of :class:`fqdnpolicy.dns.wire.Record`."""

Answer = tuple[str | None, bool, int, int, bool, Sequence[RecordTuple]]
"""``(qname, is_response, opcode, rcode, truncated, records)``: the shape of
:class:`fqdnpolicy.dns.wire.Extracted` (names canonical, addresses in canonical text, records
of class IN)."""


class PatternLike(Protocol):
    """What :meth:`DNSCache.names_matching` needs of a :class:`fqdnpolicy.DomainPattern`."""

    @property
    def fixed_suffix(self) -> str:
        """Labels after the last ``*`` (the whole name for an exact pattern)."""

    def matches(self, name: str) -> bool:
        """Whether ``name`` matches the pattern."""


class DNSChange(NamedTuple):
    """One change of the effective mapping: ``name`` now leads, or no longer leads, to ``ip``.

    Immutable and equal by value, like the tuple it is.

    Attributes:
        name: The canonical domain name (any name on a chain, not only the question).
        ip: The IP address in canonical text form.
        added: True when the name now leads to the IP (or, with ``report_refresh``, its
            deadline moved); False when it no longer does.
        expiry: Monotonic deadline (the cache's clock) of the pair: the new one when added,
            the last one it had when removed.
    """

    name: str
    ip: str
    added: bool
    expiry: float


# DNSChange is an event, made by the million and read once, not a model: a NamedTuple rather
# than a frozen attrs class. The hot paths build it with tuple.__new__, which skips the
# constructor's frame (the cost of each is in docs/dns-cache.md).
new_change = tuple.__new__
"""``new_change(DNSChange, (name, ip, added, expiry))``: a :class:`DNSChange`, quickly."""

Subscriber = Callable[[list[DNSChange]], None]
"""A callback handed each batch of changes."""

Outbox = deque[tuple[list[DNSChange], tuple[Subscriber, ...]]]
"""Batches waiting for delivery, each with the subscribers it goes to."""


@attrs.frozen
class DNSLink:
    """One stored link, as :meth:`DNSCache.links` lists it and the cache file saves it.

    Attributes:
        name: The owner name.
        target: An IP address (``is_cname`` false) or the CNAME target name.
        is_cname: Whether this is a CNAME link.
        expiry: Monotonic deadline on the cache's clock.
    """

    name: str
    target: str
    is_cname: bool
    expiry: float


@attrs.frozen
class CacheSnapshot:
    """One consistent cut of a cache: its links and both its clocks, read together.

    What :func:`fqdnpolicy.dns.persist.save` writes, taken by :meth:`DNSCache.snapshot`.

    Attributes:
        links: Every stored link, deadlines on the cache's monotonic clock.
        now: The cache's monotonic clock at the cut.
        wall: The cache's wall clock at the same moment.
        epoch: The cache's cache-file epoch.
    """

    links: tuple[DNSLink, ...]
    now: float
    wall: float
    epoch: int


@attrs.frozen
class DNSStats:
    """Counters explaining what the cache learned and why something is missing.

    Attributes:
        answers: Answers accepted for learning (after the checks below).
        untrusted: Responses from servers not in ``trusted_servers`` (nothing learned).
        malformed: Wire messages that could not be parsed.
        not_response: Messages with the QR bit clear (queries).
        wrong_opcode: Messages whose opcode is not QUERY.
        wrong_rcode: Responses whose rcode is not NOERROR (NXDOMAIN, SERVFAIL, ...).
        no_question: Responses without a question (no chain can be anchored).
        truncated: Truncated (TC) responses; their complete records are still learned.
        out_of_chain: Records not reachable from the question (anti-poisoning rule).
        chain_too_deep: CNAME records past ``max_chain_depth`` links from the question.
        zero_address: ``0.0.0.0`` / ``::`` answers ignored.
        unsupported_record: Records of another type than A, AAAA or CNAME.
        zero_lifetime: Records whose lifetime (after clamping) is zero, not stored.
        over_name_cap: Links dropped because a name had ``max_ips_per_name`` already.
        evicted_names: Names evicted because the cache held ``max_names``.
        expired_links: Links removed by :meth:`DNSCache.expire`.
        kept_alive: Pairs kept past expiry because their IP still had connections.
        keep_alive_refused: Keep-alive requests refused because ``max_kept`` was reached.
        unsupported_address: Addresses the datapath cannot hold (scoped, loopback, IPv6
            link-local, multicast, broadcast, IPv4-mapped; see
            :func:`fqdnpolicy.dns.addresses.address_problem`), from answers and restored links.
    """

    answers: int = 0
    untrusted: int = 0
    malformed: int = 0
    not_response: int = 0
    wrong_opcode: int = 0
    wrong_rcode: int = 0
    no_question: int = 0
    truncated: int = 0
    out_of_chain: int = 0
    chain_too_deep: int = 0
    zero_address: int = 0
    unsupported_record: int = 0
    zero_lifetime: int = 0
    over_name_cap: int = 0
    evicted_names: int = 0
    expired_links: int = 0
    kept_alive: int = 0
    keep_alive_refused: int = 0
    unsupported_address: int = 0


_COUNTER_NAMES = tuple(f.name for f in attrs.fields(DNSStats))


class Counters:
    """Mutable twin of :class:`DNSStats` (attribute increments are the cheapest counters)."""

    __slots__ = _COUNTER_NAMES
    answers: int
    untrusted: int
    malformed: int
    not_response: int
    wrong_opcode: int
    wrong_rcode: int
    no_question: int
    truncated: int
    out_of_chain: int
    chain_too_deep: int
    zero_address: int
    unsupported_record: int
    zero_lifetime: int
    over_name_cap: int
    evicted_names: int
    expired_links: int
    kept_alive: int
    keep_alive_refused: int
    unsupported_address: int

    def __init__(self) -> None:
        for name in _COUNTER_NAMES:
            setattr(self, name, 0)

    def snapshot(self) -> DNSStats:
        """The counters now, frozen."""
        return DNSStats(**{name: getattr(self, name) for name in _COUNTER_NAMES})
