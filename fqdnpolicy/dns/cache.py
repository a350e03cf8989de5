"""The DNS cache: which IPs each domain name leads to, learned from DNS answers.

Model
-----
The cache stores *links* learned from answers, each with its own deadline (monotonic seconds):

* an address link ``name -> ip`` (an A or AAAA record), and
* a CNAME link ``name -> target``.

The *effective mapping* of a name is every IP reachable from it through at most
``max_chain_depth`` CNAME links and then one address link. The deadline of ``(name, ip)`` is
the best path's weakest link: the maximum over paths of the minimum deadline along the path.
So every name on a chain gets the IPs at its end, a chain lives while all its links live,
branches share, loops end (a cycle never improves a path) and yield nothing by themselves, and
a change at the tail reaches every name above it.

Anti-poisoning rule
-------------------
From one answer the cache learns only records reachable from the question name through the
CNAME chain *in that same answer*: ``q CNAME a``, ``a CNAME b``, ``b A ip``. Any other record
(an unrelated A record in the answer, anything a server puts in the additional section) is
ignored and counted in ``stats.out_of_chain``, so a trusted but compromised or confused
resolver answering for ``q`` cannot plant addresses for ``bank.example``. Answers are learned
only when they are responses (QR set) to a standard query (opcode QUERY) with rcode NOERROR,
and (for :meth:`DNSCache.observe`) only from trusted servers. ``0.0.0.0`` and ``::`` (sinkhole
answers) are never learned.

Lifetimes
---------
A record's lifetime is ``clamp(ttl + extra_ttl, min_ttl, max_ttl) + grace_period``; a TTL
above ``2**31 - 1`` counts as 0 (RFC 2181, section 8). A refresh only ever extends a link.
:meth:`DNSCache.expire` removes what is due at the clock's now (nothing expires on its own,
so tests drive time with a fake clock). IPs the datapath still sees connections to can be
kept past their expiry (:meth:`DNSCache.keep_alive`), bounded in count and age.

Bounds
------
At most ``max_ips_per_name`` address links and as many CNAME links per name (the
earliest-expiring one goes first; ties drop the smallest value); at most ``max_names`` names
owning links (the name whose next expiry is earliest is evicted, ties by smallest name); at
most ``max_chain_depth`` CNAME links followed. IP strings are interned, so one IP shared by
very many names is stored once.

Changes
-------
Every operation that changes the effective mapping returns, and hands to each subscriber, one
batch of :class:`DNSChange` in order: ``added=True`` when a name starts leading to an IP,
``added=False`` when it stops. With ``report_refresh=True`` a later deadline for a pair
already present is also reported (``added=True`` with the new expiry), for datapaths whose
set elements carry timeouts. Applying the batches in order to a set of ``(name, ip)`` pairs
reproduces the effective mapping of the links the cache holds.

Threads
-------
Every public method runs under one re-entrant lock, readers included: a reader sees the cache
before or after an answer, never in between (an answer touches several names, so per-name
atomic replacement alone would not be enough). Under CPython's global interpreter lock the
reader lock costs about as much as a dict lookup.

Subscribers are never called under that lock, so a subscriber may take its own locks (the
engine's) while another thread holding those calls into the cache, without a lock-order
deadlock. A change made under the lock queues its batch, in the order the changes were made;
after releasing the lock, the call that made it delivers the queue, one thread at a time: each
subscriber gets every batch exactly once, in order, never two at once. Used from one thread, a
call returns once its changes are delivered. When another thread is delivering, the call may
return first and leave its batch to that thread, which delivers until the queue is empty. A
subscriber may read the cache, which may already be past the batch it is handed.

Storage and speed
-----------------
Most names hold one address or one CNAME target, so single entries are stored without a
container: a name with one address keeps ``(deadline, name, ip)``, the same tuple its expiry
heap entry is made of (one object for both), and a CNAME target with one parent keeps the
parent's name; a second entry turns them into a dict or set. The ``names_matching`` index
groups names by parent domain and exists only once a pattern was looked up. Measured for
1,000,000 names with one address each (``benchmarks/bench_dns_cache.py``): about 330 bytes per
name traced, 340 of resident memory, 16 more with the index.

Two common shapes of answer are learned on fast paths that write the links, mappings and
events directly instead of snapshotting, recomputing and diffing; each yields exactly what the
general path would, events in the same order (tested against it):

* an answer that only adds new names (``q CNAME c1 ... -> addresses``, no name of the chain
  known or pointed to, no bound reached), the common case for a busy node learning names;
* a refresh of a chain the cache holds exactly so (each CNAME the only link of its owner, the
  chain's end holding every address of the answer), the common case for popular names
  re-resolved: only deadlines can move, so it extends the links the answer gives more time,
  recomputes the chain's mappings from the link deadlines and those of names pointing into
  the chain as usual, and reports nothing unless ``report_refresh``. Like the general path
  it leaves the expiry heap alone (a key is a lower bound; expiry re-keys).

Everything else takes the general path.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple, Protocol

import attrs
from sortedcontainers import SortedList  # type: ignore[import-untyped]

from fqdnpolicy.domains import canonical_dns_name
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.subscribers import Subscribers

if TYPE_CHECKING:
    import dns.message

    from fqdnpolicy.dns.persist import LoadReport

__all__ = [
    "Answer",
    "DNSCache",
    "DNSChange",
    "DNSLink",
    "DNSStats",
    "PatternLike",
    "RecordTuple",
    "parse_server",
]

RTYPE_A = 1
RTYPE_CNAME = 5
RTYPE_AAAA = 28
_TTL_MAX_VALID = 2**31 - 1  # RFC 2181 section 8: a TTL with the top bit set means 0
_ZERO_ADDRESSES = frozenset({"0.0.0.0", "::"})
_NEG_INF = -math.inf
_EMPTY: Mapping[str, float] = {}

# A name's address links: ``{ip: deadline}``, or for a name with exactly one address the
# tuple ``(deadline, name, ip)``. Most names hold one address, and a one-entry dict costs 184
# bytes against this tuple's 64. The tuple has the shape of a heap entry (deadline, name)
# plus the IP, so a new single-address name shares one object between ``_addrs`` and the
# heap: 1,000,000 such names take about 330 B each instead of 510 (tracemalloc, measured).
_Compact = tuple[float, str, str]
_AddrLinks = dict[str, float] | _Compact
_HeapEntry = tuple[float, str] | _Compact
_TRUST_MEMO_LIMIT = 4096
# observe_many takes responses in chunks of this many: of 16, 64, 256 and 4096, parsing a
# chunk and then learning it was fastest at 64 for new names (a larger chunk's parsed answers
# no longer stay in the CPU caches; measured), and the lock is held for one chunk at a time.
_OBSERVE_CHUNK = 64


RecordTuple = tuple[str, int, int, str]
"""``(owner, rtype, ttl, value)``: the shape of :class:`fqdnpolicy.dns.wire.Record`."""

Answer = tuple[str | None, bool, int, int, bool, Sequence[RecordTuple]]
"""``(qname, is_response, opcode, rcode, truncated, records)``: the shape of
:class:`fqdnpolicy.dns.wire.Extracted` (names canonical, records of class IN)."""


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
# than a frozen attrs class. The hot paths build it with tuple.__new__ (no constructor frame):
# 0.09 us per event against 0.25 us for an attrs instance with its slots set directly (0.35
# through its __init__), measured; a new typical answer makes six.
_new_tuple = tuple.__new__


_Subscriber = Callable[[list[DNSChange]], None]


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


_COUNTER_NAMES = tuple(f.name for f in attrs.fields(DNSStats))


class _Counters:
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

    def __init__(self) -> None:
        for name in _COUNTER_NAMES:
            setattr(self, name, 0)

    def snapshot(self) -> DNSStats:
        return DNSStats(**{name: getattr(self, name) for name in _COUNTER_NAMES})


_WIRE: ModuleType | None = None


def _load_wire() -> ModuleType:
    """Import :mod:`fqdnpolicy.dns.wire` on first use: it imports dnspython, which is slow."""
    global _WIRE
    from fqdnpolicy.dns import wire

    _WIRE = wire
    return wire


def parse_server(text: str) -> tuple[str, int | None] | None:
    """Parse a server address ``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port``.

    Args:
        text: The address as configured or as seen on the wire.

    Returns:
        ``(canonical ip, port or None)``, or None when the text is not such an address.
    """
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
            if not port_text:
                return None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text:
            return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    return str(ip), port


def _reversed_parent(name: str) -> str:
    """The name without its first label, character-reversed (``""`` for a single label).

    Reversed names sort so that everything under a suffix is one contiguous range.
    """
    dot = name.find(".")
    return name[:dot:-1] if dot >= 0 else ""


class DNSCache:
    """Name -> IP cache learned from DNS answers, with CNAME chains, bounds and change events.

    See the module documentation for the rules (anti-poisoning, chains, lifetimes, bounds,
    thread safety).

    Args:
        min_ttl: Shortest lifetime in seconds (Calico uses 2 s: a first SYN dropped before the
            datapath is programmed is retried after 1 s).
        max_ttl: Longest lifetime in seconds (a stale entry cannot outlive it).
        extra_ttl: Seconds added to every record TTL before clamping.
        grace_period: Seconds added to every lifetime after clamping, so a pair stays a while
            after its DNS expiry.
        max_ips_per_name: Most address links (and most CNAME links) one name may hold.
        max_names: Most names holding links; more evicts the earliest-expiring.
        max_chain_depth: Most CNAME links followed from a name (in an answer and in the cache).
        trusted_servers: Servers whose responses :meth:`observe` learns from, as ``ip``,
            ``ip:port`` or ``[v6]:port`` (an ``ip`` without port trusts every port).
        clock: Monotonic seconds; every deadline is on this clock.
        wall_clock: Wall-clock seconds, used only to write and read cache files.
        epoch: Cache-file epoch: a file saved with another epoch is ignored on load.
        report_refresh: Also report deadline extensions as changes.
        keep_alive_period: How long a :meth:`keep_alive` call keeps an IP's expired pairs.
        keep_alive_max_age: Most seconds a pair is kept alive past its expiry.
        max_kept: Most pairs kept alive (and IPs marked) at once.

    Raises:
        InvalidPolicy: A bound is negative or out of order, or a trusted server is not an
            address.
    """

    def __init__(
        self,
        *,
        min_ttl: float = 2.0,
        max_ttl: float = 86400.0,
        extra_ttl: float = 0.0,
        grace_period: float = 0.0,
        max_ips_per_name: int = 1000,
        max_names: int = 100_000,
        max_chain_depth: int = 16,
        trusted_servers: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        epoch: int = 0,
        report_refresh: bool = False,
        keep_alive_period: float = 60.0,
        keep_alive_max_age: float = 3600.0,
        max_kept: int = 10_000,
    ) -> None:
        problems: list[Problem] = []

        def check(ok: bool, field: str, message: str, hint: str) -> None:
            if not ok:
                problems.append(Problem(message, path=field, hint=hint, code="bad-dns-option"))

        def finite(value: float) -> bool:
            return isinstance(value, int | float) and math.isfinite(value)

        check(finite(min_ttl) and min_ttl >= 0, "min_ttl", "must be >= 0", "e.g. 2")
        check(
            finite(max_ttl) and finite(min_ttl) and max_ttl >= min_ttl,
            "max_ttl",
            "must be a number >= min_ttl",
            "e.g. 86400",
        )
        check(finite(extra_ttl) and extra_ttl >= 0, "extra_ttl", "must be >= 0", "e.g. 0")
        check(finite(grace_period) and grace_period >= 0, "grace_period", "must be >= 0", "0")
        for field, value in (
            ("max_ips_per_name", max_ips_per_name),
            ("max_names", max_names),
            ("max_chain_depth", max_chain_depth),
        ):
            check(isinstance(value, int) and value >= 1, field, "must be an integer >= 1", "e.g. 8")
        check(isinstance(max_kept, int) and max_kept >= 0, "max_kept", "must be >= 0", "1000")
        check(
            finite(keep_alive_period) and keep_alive_period >= 0,
            "keep_alive_period",
            "must be >= 0",
            "e.g. 60",
        )
        check(
            finite(keep_alive_max_age) and keep_alive_max_age >= 0,
            "keep_alive_max_age",
            "must be >= 0",
            "e.g. 3600",
        )
        if isinstance(trusted_servers, str):
            trusted_servers = [trusted_servers]
        trusted: set[tuple[str, int | None]] = set()
        for i, server in enumerate(trusted_servers):
            parsed = parse_server(server) if isinstance(server, str) else None
            if parsed is None:
                problems.append(
                    Problem(
                        f"not a server address: {server!r}",
                        path=f"trusted_servers[{i}]",
                        hint="use ip, ip:port or [v6]:port, e.g. 10.96.0.10 or [fd00::a]:53",
                        code="bad-dns-option",
                    )
                )
            else:
                trusted.add(parsed)
        if problems:
            raise InvalidPolicy(problems)

        self.min_ttl = float(min_ttl)
        self.max_ttl = float(max_ttl)
        self.extra_ttl = float(extra_ttl)
        self.grace_period = float(grace_period)
        self.max_ips_per_name = max_ips_per_name
        self.max_names = max_names
        self.max_chain_depth = max_chain_depth
        self.trusted_servers: frozenset[tuple[str, int | None]] = frozenset(trusted)
        self.clock = clock
        self.wall_clock = wall_clock
        self.epoch = epoch
        self.report_refresh = report_refresh
        self.keep_alive_period = float(keep_alive_period)
        self.keep_alive_max_age = float(keep_alive_max_age)
        self.max_kept = max_kept

        self._lock = threading.RLock()
        self._addrs: dict[str, _AddrLinks] = {}
        self._cnames: dict[str, dict[str, float]] = {}
        # CNAME target -> the names with a CNAME link to it: the name itself when there is one
        # (nearly always; a one-element set costs 216 bytes), a set of two or more.
        self._parents: dict[str, str | set[str]] = {}
        # Effective mapping, stored only for names with CNAME links: for the others it is
        # their address links, which saves a dict per plain name (most names).
        self._eff: dict[str, dict[str, float]] = {}
        # owner -> earliest link deadline; the heap holds (deadline, name) with stale entries
        # skipped lazily (an entry is live when it equals _sched[name]).
        self._sched: dict[str, float] = {}
        self._heap: list[_HeapEntry] = []
        # The names_matching index: names grouped by parent domain (the name without its first
        # label) in _buckets, keyed by the character-reversed parent, and those keys sorted in
        # _index. Grouping by parent stores one key per parent instead of a reversed copy of
        # every name: 1,000,000 names under 1,000 parents take 16 B per name instead of 86
        # (RSS growth, benchmarks/bench_dns_cache.py). A bucket is the name itself while it
        # is the only one. Maintained lazily, since patterns are added rarely and names come
        # and go with every answer: new names wait in _pending, removed ones stay until a
        # rebuild (reads check _sched), and nothing is built or kept pending before the
        # first names_matching. A name with a unique parent costs about as much as before
        # (the reversed parent instead of the reversed name).
        self._index: SortedList = SortedList()
        self._buckets: dict[str, str | list[str]] = {}
        self._index_built = False
        self._pending: list[str] = []
        self._index_removed = 0
        self._subscribers: Subscribers[list[DNSChange]] = Subscribers()
        # Batches made under the lock and not yet delivered, each with the subscribers of the
        # moment it was made; _delivering is held by the one thread delivering them.
        self._outbox: deque[tuple[list[DNSChange], tuple[_Subscriber, ...]]] = deque()
        self._delivering = threading.Lock()
        self._c = _Counters()
        self._trust_memo: dict[str, bool] = {}
        self._alive: dict[str, float] = {}  # ip -> last keep_alive time
        self._zombies: dict[tuple[str, str], float] = {}  # kept pair -> first kept time
        # Bumped whenever a link appears or disappears. Membership of the effective mapping
        # depends only on which links exist (deadlines only move expiries), so a batch that
        # leaves it unchanged cannot add or remove a pair and needs no diff.
        self._structure = 0
        self._lifetimes: dict[int, float] = {}  # ttl -> lifetime, memo for the hot path
        # Off only in tests that check the fast path against the general one.
        self._fast_path = True

    # ---------------------------------------------------------------------------------------
    # Learning
    # ---------------------------------------------------------------------------------------

    def is_trusted(self, server: str) -> bool:
        """Tell whether responses from ``server`` (``ip[:port]`` / ``[v6]:port``) are learned."""
        memo = self._trust_memo.get(server)
        if memo is not None:
            return memo
        parsed = parse_server(server) if isinstance(server, str) else None
        ok = parsed is not None and (
            parsed in self.trusted_servers or (parsed[0], None) in self.trusted_servers
        )
        if len(self._trust_memo) >= _TRUST_MEMO_LIMIT:
            self._trust_memo.clear()  # bounded: a flood of distinct sources cannot grow it
        self._trust_memo[server] = ok
        return ok

    def observe(
        self,
        response: dns.message.Message | bytes | bytearray | memoryview,
        server: str,
        client: str | None = None,
    ) -> list[DNSChange]:
        """Learn from a DNS response snooped on the wire.

        Args:
            response: The response as a dnspython message or as wire bytes.
            server: The address it came from, ``ip``, ``ip:port`` or ``[v6]:port``.
            client: The client it went to. The mapping is global (as in Calico: one pod's
                lookup serves every pod), so it does not change what is learned; embedders
                may pass it unconditionally.

        Returns:
            The changes this response caused (also delivered to subscribers); empty when it
            was untrusted, malformed or filtered (see :attr:`stats`).

        Raises:
            TypeError: ``response`` is neither wire bytes nor a dnspython message.
        """
        del client  # global mapping: see the docstring
        # The module, not an import statement: that costs 1 us per call (measured), about a
        # tenth of a whole typical answer.
        wire = _WIRE or _load_wire()
        with self._lock:
            trusted = self._trust_memo.get(server)
            if trusted is None:
                trusted = self.is_trusted(server)
            if not trusted:
                self._c.untrusted += 1
                return []
            try:
                extracted = _extract(wire, response)
            except wire.MalformedDNSMessage:
                self._c.malformed += 1
                return []
            changes = self._ingest(extracted)
        if self._outbox:
            self._deliver()
        return changes

    def observe_many(
        self,
        responses: Iterable[tuple[dns.message.Message | bytes | bytearray | memoryview, str]],
    ) -> int:
        """Learn from many snooped responses: what :meth:`observe` does for each in turn, faster.

        For an embedder that captures responses in batches (a packet ring, a queue, a
        capture file). The cache ends in the same state, with the same counters, and
        subscribers get the same changes in the same calls, as after ``observe(response,
        server)`` for each pair in turn. What differs is when: the responses are taken in
        chunks of 64, each parsed first, outside the lock, and then learned under it, so a
        reader waits at most for one chunk to be learned, and a response's changes reach
        subscribers once its chunk is parsed.

        Parsing a chunk and then learning it keeps each step's code and data in the CPU's
        caches: for new names that is faster than ``observe`` one response at a time
        (``benchmarks/bench_dns_cache.py`` measures both in one run).

        Args:
            responses: ``(response, server)`` pairs: the response as a dnspython message or
                wire bytes, the server as in :meth:`observe`.

        Returns:
            How many changes the responses caused. The changes themselves go only to
            subscribers, so a long stream is not held in memory (a list of them all also
            made learning new names 1.14x slower by keeping every one alive: 24.7 against
            21.7 us, measured).

        Raises:
            TypeError: An item is not a pair, or its response neither wire bytes nor a
                dnspython message. The items before it are learned, those after it not.
        """
        wire = _WIRE or _load_wire()
        malformed_error = wire.MalformedDNSMessage
        trust_memo = self._trust_memo
        changes = 0
        chunk: list[Answer] = []
        append = chunk.append
        untrusted = malformed = 0
        try:
            for index, item in enumerate(responses):
                try:
                    response, server = item
                except (TypeError, ValueError):
                    raise TypeError(
                        f"observe_many: item {index} is not a (response, server) pair: "
                        f"{item!r:.100}"
                    ) from None
                if not (trust_memo.get(server) or self.is_trusted(server)):
                    untrusted += 1
                    continue
                try:
                    append(_extract(wire, response))
                except malformed_error:
                    malformed += 1
                    continue
                except TypeError as exc:  # not a response: say which item
                    raise TypeError(f"observe_many: item {index}: {exc}") from None
                if len(chunk) == _OBSERVE_CHUNK:
                    # Taken out before it is learned: should a subscriber raise, the finally
                    # below must not learn it again.
                    full, counts = chunk, (untrusted, malformed)
                    chunk = []
                    append = chunk.append
                    untrusted = malformed = 0
                    changes += self._learn_chunk(full, *counts)
        finally:
            # Also when an item turns out bad: what came before it is learned, as a loop
            # of observe calls would have learned it.
            if chunk or untrusted or malformed:
                changes += self._learn_chunk(chunk, untrusted, malformed)
        return changes

    def _learn_chunk(self, chunk: list[Answer], untrusted: int, malformed: int) -> int:
        """Learn ``chunk`` as :meth:`observe_many` does; tell how many changes it caused."""
        changes = 0
        lock, outbox, ingest = self._lock, self._outbox, self._ingest
        with lock:
            self._c.untrusted += untrusted
            self._c.malformed += malformed
            for answer in chunk:
                changes += len(ingest(answer))
                if outbox:
                    # Delivered before the next answer is learned, as observe would: a
                    # subscriber that raises stops the chunk at the same answer.
                    lock.release()
                    try:
                        self._deliver()
                    finally:
                        lock.acquire()
        return changes

    def ingest(self, extracted: Answer, server: str | None = None) -> list[DNSChange]:
        """Learn from an already-extracted answer (zone files, resolvers, replays).

        The same filtering as :meth:`observe` applies (response, opcode, rcode, chain
        reachability, zero addresses); only the trust check is skipped when ``server`` is
        None, for local sources.

        Args:
            extracted: The answer: a ``fqdnpolicy.dns.wire.Extracted`` or a tuple of the same
                shape (:data:`Answer`).
            server: Where it came from; when given it must be trusted.

        Returns:
            The changes this answer caused (also delivered to subscribers).
        """
        with self._lock:
            if server is not None and not self.is_trusted(server):
                self._c.untrusted += 1
                return []
            changes = self._ingest(extracted)
        if self._outbox:
            self._deliver()
        return changes

    def _ingest(self, ex: Answer) -> list[DNSChange]:
        # One tuple unpack instead of attribute reads: this is the ingest hot path, where
        # each attribute read costs as much as a dict lookup.
        qname, is_response, opcode, rcode, truncated, records = ex
        c = self._c
        if not is_response:
            c.not_response += 1
            return []
        if opcode != 0:
            c.wrong_opcode += 1
            return []
        if rcode != 0:
            c.wrong_rcode += 1
            return []
        if qname is None:
            c.no_question += 1
            return []
        if truncated:
            c.truncated += 1
        c.answers += 1
        now = self.clock()
        if self._fast_path:
            if qname in self._sched:
                changes = self._ingest_refresh(qname, records, now)
            else:
                changes = self._ingest_new(qname, records, now)
            if changes is not None:
                return changes
        depth_limit = self.max_chain_depth

        # Which owners are reachable from the question, and at how many CNAME links.
        reach = {qname: 0}
        links_in: dict[str, list[str]] | None = None
        for owner, rtype, _, value in records:
            if rtype == RTYPE_CNAME:
                if links_in is None:
                    links_in = {owner: [value]}
                elif owner in links_in:
                    links_in[owner].append(value)
                else:
                    links_in[owner] = [value]
        if links_in is not None:
            frontier = [qname]
            d = 0
            while frontier and d < depth_limit:
                d += 1
                nxt = []
                for owner in frontier:
                    for target in links_in.get(owner, ()):
                        if target not in reach:
                            reach[target] = d
                            nxt.append(target)
                frontier = nxt

        old: dict[str, Mapping[str, float]] = {}
        deadlines: dict[int, float] = {}  # one float per TTL: records of an RRset share it
        addrs_of, eff_of, lifetimes = self._addrs, self._eff, self._lifetimes
        structure = self._structure
        for owner, rtype, ttl, value in records:
            depth = reach.get(owner)
            if depth is None:
                c.out_of_chain += 1
                continue
            if rtype == RTYPE_CNAME:
                if depth >= depth_limit:
                    c.chain_too_deep += 1
                    continue
            elif rtype != RTYPE_A and rtype != RTYPE_AAAA:
                c.unsupported_record += 1
                continue
            elif value in _ZERO_ADDRESSES:
                c.zero_address += 1
                continue
            deadline = deadlines.get(ttl)
            if deadline is None:
                life = lifetimes.get(ttl)
                if life is None:
                    life = self._memo_lifetime(ttl)
                deadline = deadlines[ttl] = now + life
            if deadline <= now:
                c.zero_lifetime += 1
                continue
            if rtype == RTYPE_CNAME:
                self._put_cname(owner, value, deadline, old)
                continue
            # _put_addr inlined for its most common case, extending a known address.
            links = addrs_of.get(owner)
            if links is None:
                self._put_addr(owner, sys.intern(value), deadline, old)
                continue
            if isinstance(links, tuple):
                current = links[0] if links[2] == value else None
            else:
                current = links.get(value)
            if current is None:
                self._put_addr(owner, sys.intern(value), deadline, old)
                continue
            if current >= deadline:
                continue
            if owner not in old:
                eff = eff_of.get(owner)
                old[owner] = eff if eff is not None else _snapshot(links)
            if isinstance(links, tuple):
                # A new tuple: the old one may be the heap entry, a lower bound from now on.
                addrs_of[owner] = (deadline, links[1], links[2])
            else:
                links[value] = deadline
            if self._zombies:
                self._zombies.pop((owner, value), None)
            # sched only needs to be a lower bound; an extension never lowers it.
        return self._commit(old, now, since=structure)

    def _ingest_new(
        self, qname: str, records: Sequence[RecordTuple], now: float
    ) -> list[DNSChange] | None:
        """Learn the most common answer directly, or return None to leave it to the general path.

        The shape: ``q CNAME c1``, ``c1 CNAME c2``, ... (zero or more links, in that order),
        then only A/AAAA records of the chain's last name, where no name of the chain holds
        links or is a CNAME target yet, and no bound is reached. Then the new links touch no
        other name, every effective pair is new, and the mappings and events follow directly
        from the answer: ``_recompute``'s walk, the snapshots of ``_touch`` and the diff of
        ``_publish`` (most of the cost of a new answer) are not needed. The result is
        exactly the general path's, events in the same order (``test_cache_fast_path.py``).
        """
        sched, parents, lifetimes = self._sched, self._parents, self._lifetimes
        if qname in sched or qname in parents:
            return None
        chain = [qname]
        link_deadlines: list[float] = []
        tail = qname
        i = 0  # records before the addresses
        for owner, rtype, ttl, value in records:
            if rtype != RTYPE_CNAME:
                break
            if owner != tail or value in sched or value in parents or value in chain:
                return None
            life = lifetimes.get(ttl)
            if life is None:
                life = self._memo_lifetime(ttl)
            deadline = now + life
            if deadline <= now:
                return None
            link_deadlines.append(deadline)
            chain.append(value)
            tail = value
            i += 1
        if i == len(records) or i > self.max_chain_depth or len(sched) + i + 1 > self.max_names:
            return None
        tail_links: dict[str, float] = {}
        setdefault = tail_links.setdefault
        intern = sys.intern
        last_ttl: int | None = None
        deadline = now
        # The general path schedules each address as it first appears, and a later repeat
        # only extends it (leaving that key as the name's lower bound), so the heap key is
        # the earliest first-appearance deadline, not the earliest final one.
        first = math.inf
        for owner, rtype, ttl, value in records[i:] if i else records:
            if owner != tail or (rtype != RTYPE_A and rtype != RTYPE_AAAA):
                return None
            if value in _ZERO_ADDRESSES:
                return None
            if ttl != last_ttl:
                # The records of an RRset share one float (24 bytes per address saved).
                life = lifetimes.get(ttl)
                if life is None:
                    life = self._memo_lifetime(ttl)
                deadline = now + life
                if deadline <= now:
                    return None
                last_ttl = ttl
            # One lookup: ``deadline`` itself comes back for a new address (or a repeat
            # holding this very float, for which nothing changes either way).
            previous = setdefault(intern(value), deadline)
            if previous is deadline:
                if deadline < first:
                    first = deadline
            elif deadline > previous:
                tail_links[value] = deadline  # a repeated address keeps its first place
        if len(tail_links) > self.max_ips_per_name:
            return None

        # Accepted: from here on every step is the general path's outcome for this shape.
        heap = self._heap
        heappush = heapq.heappush
        entry: _HeapEntry
        if len(tail_links) == 1:
            ((ip, last),) = tail_links.items()
            entry = self._addrs[tail] = (last, tail, ip)
            if first < last:
                entry = (first, tail)  # a repeat extended the address: key the first sight
        else:
            self._addrs[tail] = tail_links
            entry = (first, tail)
        sched[tail] = first
        heappush(heap, entry)
        self._structure += 1
        changes: list[DNSChange] = []
        append = changes.append
        if i:
            cnames_of, eff_of = self._cnames, self._eff
            # A chain name's pairs live while its weakest link to the tail does.
            widths = link_deadlines
            if i > 1:
                widths = link_deadlines[:]
                for j in range(i - 2, -1, -1):
                    if widths[j + 1] < widths[j]:
                        widths[j] = widths[j + 1]
            # Question first, as the general path touches the names (and orders the events).
            for j, width in enumerate(widths):
                name, target, deadline = chain[j], chain[j + 1], link_deadlines[j]
                cnames_of[name] = {target: deadline}
                parents[target] = name
                sched[name] = deadline
                heappush(heap, (deadline, name))
                eff = {}
                for ip, d in tail_links.items():
                    if width < d:
                        d = width
                    eff[ip] = d
                    append(_new_tuple(DNSChange, (name, ip, True, d)))
                eff_of[name] = eff
        for ip, deadline in tail_links.items():
            append(_new_tuple(DNSChange, (tail, ip, True, deadline)))
        if self._index_built:
            # Only a built index has pending names (and every operation ends with this check,
            # so without one it cannot have become due here, where names are only added).
            self._pending.extend(chain)
            if len(self._pending) + self._index_removed > len(sched) + 1024:
                self._rebuild_index()
        callbacks = self._subscribers.callbacks
        if callbacks:
            self._outbox.append((changes, callbacks))
        return changes

    def _ingest_refresh(
        self, qname: str, records: Sequence[RecordTuple], now: float
    ) -> list[DNSChange] | None:
        """Learn a refresh of a known chain directly, or return None for the general path.

        The shape: ``q CNAME c1``, ``c1 CNAME c2``, ... (zero or more links, in that order,
        at most ``max_chain_depth``), then only A/AAAA records of the chain's last name, where
        each CNAME of the answer is already the only link its owner holds, and the last name
        holds no CNAME and already every address of the answer. Then no link appears or
        disappears, so no pair can appear or disappear anywhere: the answer can only extend
        deadlines (the last name may hold addresses the answer leaves out; neither path
        touches those). Each chain name has one path to the addresses, so its mapping follows
        from the link deadlines directly; names outside the chain pointing into it are
        recomputed as the general path does, and only when a chain name's mapping changed.
        The result is exactly the general path's, events in the same order
        (``test_cache_fast_path.py``).
        """
        cnames_of, addrs_of, lifetimes = self._cnames, self._addrs, self._lifetimes
        parents = self._parents
        chain: list[str] = []
        link_deadlines: list[float] = []  # each chain link's deadline once the answer is in
        grown: list[tuple[dict[str, float], str, float]] = []  # CNAME links to extend
        later: list[tuple[str, float]] = []  # tail addresses to extend
        # Whether a name outside the chain points into it: its mapping may then change too.
        shared = qname in parents
        tail = qname
        tail_links: _AddrLinks | None = None
        last_ttl: int | None = None
        deadline = now
        for owner, rtype, ttl, value in records:
            if owner != tail:
                return None
            if ttl != last_ttl:
                life = lifetimes.get(ttl)
                if life is None:
                    life = self._memo_lifetime(ttl)
                deadline = now + life
                if deadline <= now:
                    return None
                last_ttl = ttl
            if rtype == RTYPE_CNAME:
                links = cnames_of.get(owner)
                if tail_links is not None or links is None or len(links) != 1:
                    return None
                current = links.get(value)
                # A loop ends at a name holding a CNAME, which the last name may not.
                if current is None or owner in addrs_of:
                    return None
                if deadline > current:
                    grown.append((links, owner, deadline))
                    link_deadlines.append(deadline)
                else:
                    link_deadlines.append(current)
                if parents.get(value) != owner:
                    shared = True
                chain.append(owner)
                tail = value
                continue
            if rtype != RTYPE_A and rtype != RTYPE_AAAA:
                return None
            if tail_links is None:
                tail_links = addrs_of.get(tail)
                if tail_links is None or tail in cnames_of:
                    return None
            if isinstance(tail_links, tuple):
                if value != tail_links[2]:
                    return None
                current = tail_links[0]
            else:
                current = tail_links.get(value)
                if current is None:
                    return None  # sinkholes are never held, so they end up here too
            if deadline > current:
                later.append((value, deadline))
        if tail_links is None or len(chain) > self.max_chain_depth:
            return None

        # Accepted: every link of the answer is held. Extend those the answer gives more time.
        if not grown and not later:
            return []  # the general path changes nothing either
        touched: list[str] = []
        for links, owner, deadline in grown:
            ((target, _),) = links.items()
            links[target] = deadline
            touched.append(owner)
        refresh = self.report_refresh
        before: Mapping[str, float] = _EMPTY
        if later:
            if isinstance(tail_links, tuple):
                before = {tail_links[2]: tail_links[0]}
                deadline = max([d for _, d in later])  # the answer may repeat the address
                # A new tuple: the old one may be the heap entry, a lower bound from now on.
                tail_links = addrs_of[tail] = (deadline, tail_links[1], tail_links[2])
            else:
                if refresh:
                    before = dict(tail_links)
                for ip, deadline in later:
                    if deadline > tail_links[ip]:
                        tail_links[ip] = deadline
            zombies = self._zombies
            if zombies:
                for ip, _ in later:
                    zombies.pop((tail, ip), None)  # a real answer again: no longer kept
            touched.append(tail)
        # _sched stays a lower bound (an extension never lowers it), as on the general path;
        # _settle_top and expire re-key a name whose bound turned out early.
        if len(self._pending) + self._index_removed > len(self._sched) + 1024:
            self._rebuild_index()

        # Each chain name leads to every address of the tail, no later than the weakest link
        # between them.
        eff_of = self._eff
        if isinstance(tail_links, tuple):
            tail_map: Mapping[str, float] = {tail_links[2]: tail_links[0]}
            latest = tail_links[0]
        else:
            tail_map = tail_links
            latest = max(tail_links.values(), default=math.inf) if chain else math.inf
        keep = refresh or shared
        fresh: dict[str, tuple[Mapping[str, float], Mapping[str, float]]] = {}
        changed = bool(later)
        width = math.inf
        for j in range(len(chain) - 1, -1, -1):
            if link_deadlines[j] < width:
                width = link_deadlines[j]
            name = chain[j]
            held = eff_of[name]
            if width >= latest:
                # The links outlast every address (a CNAME's TTL is usually the longer): a
                # copy, 0.1 us cheaper than the comprehension on a typical answer (measured).
                mapping = dict(tail_map)
            else:
                mapping = {ip: width if width < d else d for ip, d in tail_map.items()}
            if mapping != held:
                eff_of[name] = mapping
                changed = True
            if keep:
                fresh[name] = (held, mapping)
        if not changed or not keep:
            # Without report_refresh only membership changes are events, and no name
            # outside the chain depends on it: done.
            return []
        if later:
            fresh[tail] = (before, tail_map)

        changes: list[DNSChange] = []
        old: Mapping[str, float]
        new: Mapping[str, float]
        for name in self._ancestors(touched):
            pair = fresh.get(name)
            if pair is not None:
                if not refresh:
                    continue
                old, new = pair
            else:
                # A name outside the chain pointing into it: recomputed as the general path
                # does (its own links are unchanged).
                prior = eff_of.get(name)
                old = prior if prior is not None else _snapshot(addrs_of.get(name))
                if name in cnames_of:
                    new = eff_of[name] = self._effective(name)
                else:
                    eff_of.pop(name, None)
                    new = _as_map(addrs_of.get(name, _EMPTY))
                if not refresh:
                    continue
            for ip, expiry in new.items():
                if old.get(ip) != expiry:
                    changes.append(_new_tuple(DNSChange, (name, ip, True, expiry)))
        if changes:
            callbacks = self._subscribers.callbacks
            if callbacks:
                self._outbox.append((changes, callbacks))
        return changes

    def _memo_lifetime(self, ttl: int) -> float:
        life = self._lifetime(ttl)
        if len(self._lifetimes) < 4096:
            self._lifetimes[ttl] = life
        return life

    def _lifetime(self, ttl: int) -> float:
        if not 0 <= ttl <= _TTL_MAX_VALID:
            ttl = 0
        life = ttl + self.extra_ttl
        if life < self.min_ttl:
            life = self.min_ttl
        elif life > self.max_ttl:
            life = self.max_ttl
        return life + self.grace_period

    # ---------------------------------------------------------------------------------------
    # Link mutation (callers hold the lock and pass the transaction's snapshot dict ``old``)
    # ---------------------------------------------------------------------------------------

    def _touch(self, name: str, old: dict[str, Mapping[str, float]]) -> None:
        """Remember ``name``'s effective mapping before its links first change."""
        if name not in old:
            eff = self._eff.get(name)
            # _eff dicts are replaced, never mutated, so keeping the object is a snapshot;
            # address dicts are mutated in place, so they are copied.
            old[name] = eff if eff is not None else _snapshot(self._addrs.get(name))

    def _put_addr(
        self, name: str, ip: str, deadline: float, old: dict[str, Mapping[str, float]]
    ) -> None:
        links = self._addrs.get(name)
        if links is None:
            self._touch(name, old)
            entry = (deadline, name, ip)
            self._addrs[name] = entry
            self._structure += 1
            self._schedule(name, deadline, entry)
            return
        if isinstance(links, tuple):
            if links[2] == ip:
                if links[0] >= deadline:
                    return
                self._touch(name, old)
                self._addrs[name] = (deadline, links[1], ip)
                if self._zombies:
                    self._zombies.pop((name, ip), None)
                return
            # A second address: the name needs a dict from now on.
            self._touch(name, old)
            links = self._addrs[name] = {links[2]: links[0]}
        current = links.get(ip)
        if current is not None and current >= deadline:
            return
        self._touch(name, old)
        links[ip] = deadline
        if self._zombies:
            self._zombies.pop((name, ip), None)  # a real answer again: no longer kept
        if current is not None:
            return
        self._structure += 1
        self._schedule(name, deadline)
        if len(links) > self.max_ips_per_name:
            self._c.over_name_cap += 1
            victim = min(links.items(), key=_by_deadline_then_value)[0]
            del links[victim]
            if self._zombies:
                self._zombies.pop((name, victim), None)

    def _put_cname(
        self, name: str, target: str, deadline: float, old: dict[str, Mapping[str, float]]
    ) -> None:
        links = self._cnames.get(name)
        if links is None:
            self._touch(name, old)
            self._cnames[name] = {target: deadline}
            self._structure += 1
            self._add_parent(target, name)
            self._schedule(name, deadline)
            return
        current = links.get(target)
        if current is not None and current >= deadline:
            return
        self._touch(name, old)
        links[target] = deadline
        if current is not None:
            return
        self._structure += 1
        self._add_parent(target, name)
        self._schedule(name, deadline)
        if len(links) > self.max_ips_per_name:
            self._c.over_name_cap += 1
            victim = min(links.items(), key=_by_deadline_then_value)[0]
            del links[victim]
            self._drop_parent(victim, name)

    def _add_parent(self, target: str, name: str) -> None:
        parents = self._parents.get(target)
        if parents is None:
            self._parents[target] = name
        elif isinstance(parents, str):
            if parents != name:
                self._parents[target] = {parents, name}
        else:
            parents.add(name)

    def _drop_parent(self, target: str, name: str) -> None:
        parents = self._parents.get(target)
        if parents is None:
            return
        if isinstance(parents, str):
            if parents == name:
                del self._parents[target]
            return
        parents.discard(name)
        if len(parents) == 1:
            self._parents[target] = next(iter(parents))
        elif not parents:
            del self._parents[target]

    def _evict(self, name: str, old: dict[str, Mapping[str, float]]) -> None:
        """Remove every link of ``name`` (popped from the heap by ``_pop_due``)."""
        self._touch(name, old)
        self._structure += 1
        addrs = self._addrs.pop(name, None)
        if addrs is not None and self._zombies:
            for ip in _as_map(addrs):
                self._zombies.pop((name, ip), None)
        cnames = self._cnames.pop(name, None)
        if cnames is not None:
            for target in cnames:
                self._drop_parent(target, name)
        del self._sched[name]
        self._index_removed += 1

    def _first_deadline(self, name: str) -> float | None:
        """The earliest deadline among ``name``'s links, or None when it has none."""
        addrs = self._addrs.get(name)
        cnames = self._cnames.get(name)
        if addrs:
            first = addrs[0] if isinstance(addrs, tuple) else min(addrs.values())
            return min(first, min(cnames.values())) if cnames else first
        return min(cnames.values()) if cnames else None

    def _schedule(self, name: str, deadline: float, entry: _HeapEntry | None = None) -> None:
        """Account for a new link of ``name``: index a new name, lower its heap key if needed.

        ``_sched[name]`` is a lower bound of the name's earliest deadline, and the heap holds
        ``(_sched[name], name, ...)``. Extending a link never lowers the bound, so refreshes
        leave the heap alone; ``_settle_top`` re-keys an entry whose bound turned out low.
        ``entry`` is the heap entry to push when it is the name's compact address links.
        """
        previous = self._sched.get(name)
        if previous is None:
            if self._index_built:
                self._pending.append(name)
        elif previous <= deadline:
            return
        self._sched[name] = deadline
        heap = self._heap
        heapq.heappush(heap, entry or (deadline, name))
        if len(heap) > 2 * len(self._sched) + 1024:
            # Lowered keys leave superseded entries behind; rebuilding keeps the heap O(names).
            self._heap = [self._heap_entry(n, d) for n, d in self._sched.items()]
            heapq.heapify(self._heap)

    def _heap_entry(self, name: str, key: float) -> _HeapEntry:
        """The heap entry for ``name`` at ``key``: its compact address links when they fit."""
        links = self._addrs.get(name)
        if isinstance(links, tuple) and links[0] == key:
            return links
        return (key, name)

    def _settle_top(self) -> tuple[float, str] | None:
        """Make the heap top exact: the name with the earliest deadline (ties: smallest name)."""
        heap, sched = self._heap, self._sched
        while heap:
            top = heap[0]
            deadline, name = top[0], top[1]
            if sched.get(name) != deadline:
                heapq.heappop(heap)  # superseded entry, or the name is gone
                continue
            first = self._first_deadline(name)
            if first is not None and first > deadline:
                sched[name] = first
                heapq.heapreplace(heap, self._heap_entry(name, first))
                continue
            return deadline, name
        return None

    def _pop_due(self, upto: float) -> str | None:
        """Pop the name with the earliest deadline if that deadline is <= ``upto``.

        The caller must then remove the name (``_evict``): its heap entry is gone.
        """
        top = self._settle_top()
        if top is None or top[0] > upto:
            return None
        heapq.heappop(self._heap)
        return top[1]

    # ---------------------------------------------------------------------------------------
    # Committing a batch of link changes: bounds, effective mapping, change events
    # ---------------------------------------------------------------------------------------

    def _commit(
        self,
        old: dict[str, Mapping[str, float]],
        now: float,
        zombie_origin: dict[tuple[str, str], float] | None = None,
        *,
        since: int | None = None,
    ) -> list[DNSChange]:
        """Apply bounds, recompute what changed and publish the differences.

        ``since`` is the structure version at the start of the batch, when known: if no link
        appeared or disappeared since, only deadlines moved and there is nothing to report
        (unless ``report_refresh``).
        """
        if not old:
            return []
        while len(self._sched) > self.max_names:
            victim = self._pop_due(math.inf)
            if victim is None:  # pragma: no cover - the heap holds every name
                break
            self._evict(victim, old)
            self._c.evicted_names += 1

        new = self._recompute(old)
        if zombie_origin is not None:
            self._keep_zombies(old, new, now, zombie_origin)
        if len(self._pending) + self._index_removed > len(self._sched) + 1024:
            self._rebuild_index()
        if since == self._structure and not self.report_refresh:
            return []  # only deadlines moved: no pair can have appeared or disappeared
        return self._publish(old, new)

    def _rebuild_index(self) -> None:
        """Drop the index; the next names_matching builds it from the names held then."""
        self._index = SortedList()
        self._buckets = {}
        self._index_built = False
        self._pending = []
        self._index_removed = 0

    def _update_index(self) -> None:
        if not self._index_built:
            self._pending = list(self._sched)
            self._index_built = True
        buckets = self._buckets
        new_keys = []
        for name in self._pending:
            key = _reversed_parent(name)
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = name
                new_keys.append(key)
            elif isinstance(bucket, str):
                buckets[key] = [bucket, name]
            else:
                bucket.append(name)
        self._index.update(new_keys)
        self._pending = []

    def _recompute(self, old: dict[str, Mapping[str, float]]) -> dict[str, Mapping[str, float]]:
        new: dict[str, Mapping[str, float]] = {}
        for name in self._ancestors(list(old)):
            if name not in old:
                self._touch(name, old)
            if name in self._cnames:
                mapping = self._effective(name)
                self._eff[name] = mapping
                new[name] = mapping
            else:
                self._eff.pop(name, None)
                new[name] = _as_map(self._addrs.get(name, _EMPTY))
        return new

    def _ancestors(self, names: list[str]) -> list[str]:
        """``names`` plus every name with a CNAME path of at most the depth limit to one."""
        parents = self._parents
        frontier = [n for n in names if n in parents]
        if not frontier:
            return names
        seen = set(names)
        result = list(names)
        for _ in range(self.max_chain_depth):
            if not frontier:
                break
            nxt = []
            for name in frontier:
                found = parents.get(name)
                if found is None:
                    continue
                for parent in (found,) if isinstance(found, str) else found:
                    if parent not in seen:
                        seen.add(parent)
                        result.append(parent)
                        nxt.append(parent)
            frontier = nxt
        return result

    def _effective(self, name: str) -> dict[str, float]:
        """Effective mapping of ``name`` from the links, computed from scratch.

        Breadth-first by number of CNAME links: a name reached at a later depth with no
        better bottleneck than at an earlier one is dropped, since the earlier visit can go
        at least as far and as long. That also ends loops.
        """
        addrs, cnames = self._addrs, self._cnames
        links = cnames[name]
        if len(links) == 1 and name not in addrs:
            # The common shape, one CNAME to a name holding only addresses, without the
            # general walk: it is most of what a busy cache recomputes.
            ((target, width),) = links.items()
            if target not in cnames:
                tail = addrs.get(target)
                if tail is None:
                    return {}
                if isinstance(tail, tuple):
                    return {tail[2]: width if width < tail[0] else tail[0]}
                return {ip: width if width < d else d for ip, d in tail.items()}
        out = dict(_as_map(addrs.get(name, _EMPTY)))
        best: dict[str, float] = {name: math.inf}
        layer: dict[str, float] = {name: math.inf}
        for _ in range(self.max_chain_depth):
            nxt: dict[str, float] = {}
            for node, value in layer.items():
                node_links = cnames.get(node)
                if node_links is None:
                    continue
                for target, deadline in node_links.items():
                    width = value if value < deadline else deadline
                    if width > best.get(target, _NEG_INF) and width > nxt.get(target, _NEG_INF):
                        nxt[target] = width
            if not nxt:
                break
            for node, width in nxt.items():
                best[node] = width
                node_addrs = addrs.get(node)
                if node_addrs:
                    for ip, deadline in _as_map(node_addrs).items():
                        value = width if width < deadline else deadline
                        if value > out.get(ip, _NEG_INF):
                            out[ip] = value
            layer = nxt
        return out

    def _publish(
        self, old: dict[str, Mapping[str, float]], new: dict[str, Mapping[str, float]]
    ) -> list[DNSChange]:
        changes: list[DNSChange] = []
        refresh = self.report_refresh
        for name, mapping in new.items():
            before = old[name]
            added = 0
            for ip, expiry in mapping.items():
                previous = before.get(ip)
                if previous is None:
                    added += 1
                    changes.append(_new_tuple(DNSChange, (name, ip, True, expiry)))
                elif refresh and previous != expiry:
                    changes.append(_new_tuple(DNSChange, (name, ip, True, expiry)))
            # mapping = kept + added, so before lost something exactly when it is larger
            # than what it kept; this avoids a scan of big names on every refresh.
            if len(before) > len(mapping) - added:
                for ip, expiry in before.items():
                    if ip not in mapping:
                        changes.append(_new_tuple(DNSChange, (name, ip, False, expiry)))
        if changes:
            callbacks = self._subscribers.callbacks
            if callbacks:
                self._outbox.append((changes, callbacks))
        return changes

    def _keep_zombies(
        self,
        old: dict[str, Mapping[str, float]],
        new: dict[str, Mapping[str, float]],
        now: float,
        zombie_origin: dict[tuple[str, str], float],
    ) -> None:
        """Turn pairs about to disappear into direct links while their IP has connections."""
        if not self._alive:
            return
        kept: list[str] = []
        for name, mapping in new.items():
            for ip in old[name]:
                if ip in mapping:
                    continue
                mark = self._alive.get(ip)
                if mark is None:
                    continue
                origin = zombie_origin.get((name, ip), now)
                deadline = min(mark + self.keep_alive_period, origin + self.keep_alive_max_age)
                if deadline <= now:
                    continue
                if len(self._zombies) >= self.max_kept:
                    self._c.keep_alive_refused += 1
                    continue
                links = self._addrs.get(name)
                if links is None:
                    self._addrs[name] = (deadline, name, ip)
                elif isinstance(links, tuple):
                    self._addrs[name] = {links[2]: links[0], ip: deadline}
                else:
                    links[ip] = deadline
                self._structure += 1
                self._schedule(name, deadline)
                self._zombies[name, ip] = origin
                self._c.kept_alive += 1
                kept.append(name)
        if kept:
            new.update(self._recompute(old))

    # ---------------------------------------------------------------------------------------
    # Time
    # ---------------------------------------------------------------------------------------

    def expire(self) -> list[DNSChange]:
        """Remove every link due at the clock's now and return the resulting changes.

        Returns:
            The changes (pairs no longer mapped), also delivered to subscribers.
        """
        with self._lock:
            now = self.clock()
            old: dict[str, Mapping[str, float]] = {}
            origin: dict[tuple[str, str], float] = {}
            self._c.expired_links += self._expire_due(now, old, origin)
            if self._alive:
                cutoff = now - self.keep_alive_period
                for ip in [ip for ip, mark in self._alive.items() if mark <= cutoff]:
                    del self._alive[ip]
            changes = self._commit(old, now, origin)
        if self._outbox:
            self._deliver()
        return changes

    def _take_due(self, now: float) -> Iterator[_HeapEntry]:
        """Pop the heap entries with a key <= ``now`` (callers may push later keys meanwhile)."""
        heap = self._heap
        for _ in range(1024):
            if not heap or heap[0][0] > now:
                return
            yield heapq.heappop(heap)
        if heap and heap[0][0] <= now:
            # Many are due (names learned in a burst expire in a burst): one pass splitting
            # the heap plus a heapify beats a heappop per entry (9 ms against 150 ms for
            # 100,000 entries, measured).
            due = [entry for entry in heap if entry[0] <= now]
            heap[:] = [entry for entry in heap if entry[0] > now]
            heapq.heapify(heap)
            yield from due

    def _expire_due(
        self,
        now: float,
        old: dict[str, Mapping[str, float]],
        origin: dict[tuple[str, str], float],
    ) -> int:
        """Drop every link due at ``now``; return how many.

        Heap entries due are taken in one go and each name handled inline: expiring
        100,000 names must take well under a second, and the calls were most of the cost.
        """
        heap, sched = self._heap, self._sched
        addrs_of, cnames_of, eff_of = self._addrs, self._cnames, self._eff
        zombies = self._zombies
        heappush = heapq.heappush
        removed = 0
        gone = 0
        for entry in self._take_due(now):
            name = entry[1]
            if sched.get(name) != entry[0]:
                continue  # superseded entry, or the name is gone
            first = math.inf
            addrs = addrs_of.get(name)
            cnames = cnames_of.get(name)
            if name not in old:
                eff = eff_of.get(name)
                if eff is not None:
                    old[name] = eff
                elif addrs is not None and cnames is None and _latest(addrs) <= now:
                    # Every address goes: hand over the dict itself instead of a copy.
                    gone_links = old[name] = _as_map(addrs)
                    del addrs_of[name]
                    removed += len(gone_links)
                    if zombies:
                        for ip in gone_links:
                            kept_since = zombies.pop((name, ip), None)
                            if kept_since is not None:
                                origin[name, ip] = kept_since
                    addrs = None
                else:
                    old[name] = _snapshot(addrs)
            if isinstance(addrs, tuple):
                if addrs[0] <= now:
                    del addrs_of[name]
                    removed += 1
                    if zombies:
                        kept_since = zombies.pop((name, addrs[2]), None)
                        if kept_since is not None:
                            origin[name, addrs[2]] = kept_since
                else:
                    first = addrs[0]
            elif addrs is not None:
                due = [ip for ip, d in addrs.items() if d <= now]
                for ip in due:
                    del addrs[ip]
                    if zombies:
                        kept_since = zombies.pop((name, ip), None)
                        if kept_since is not None:
                            origin[name, ip] = kept_since
                removed += len(due)
                if len(addrs) > 1:
                    first = min(addrs.values())
                elif addrs:
                    ((ip, first),) = addrs.items()
                    addrs_of[name] = (first, name, ip)  # compact again: see _Compact
                else:
                    del addrs_of[name]
            if cnames is not None:
                due = [t for t, d in cnames.items() if d <= now]
                for target in due:
                    del cnames[target]
                    self._drop_parent(target, name)
                removed += len(due)
                if cnames:
                    first = min(first, min(cnames.values()))
                else:
                    del cnames_of[name]
            if first == math.inf:
                del sched[name]
                gone += 1
            else:
                # Nothing due means the key was a stale lower bound (a refresh): re-key.
                sched[name] = first
                links = addrs_of.get(name)
                heappush(
                    heap, links if isinstance(links, tuple) and links[0] == first else (first, name)
                )
        if removed:
            self._structure += 1
        self._index_removed += gone
        return removed

    def next_expiry(self) -> float | None:
        """Return the deadline (clock seconds) of the next :meth:`expire` work, or None."""
        with self._lock:
            top = self._settle_top()
            return None if top is None else top[0]

    def keep_alive(self, *ips: str) -> None:
        """Say that the datapath still sees connections to ``ips`` (now).

        Pairs of these IPs that :meth:`expire` would remove within ``keep_alive_period`` of
        this call are kept until ``keep_alive_period`` after it, at most
        ``keep_alive_max_age`` past their expiry and at most ``max_kept`` pairs in all (like
        Cilium's connection-kept "zombie" entries). Call it for live IPs before each
        :meth:`expire`.

        Args:
            ips: Canonical IP texts.
        """
        with self._lock:
            now = self.clock()
            for ip in ips:
                if ip not in self._alive and len(self._alive) >= self.max_kept:
                    self._c.keep_alive_refused += 1
                    continue
                self._alive[sys.intern(ip)] = now

    # ---------------------------------------------------------------------------------------
    # Reading
    # ---------------------------------------------------------------------------------------

    def _mapping(self, name: str) -> Mapping[str, float]:
        name = canonical_dns_name(name)
        mapping = self._eff.get(name)
        if mapping is None:
            return _as_map(self._addrs.get(name, _EMPTY))
        return mapping

    def ips(self, name: str) -> set[str]:
        """Return the IPs ``name`` leads to now (through CNAME chains), as canonical text."""
        with self._lock:
            now = self.clock()
            return {ip for ip, d in self._mapping(name).items() if d > now}

    def expiries(self, name: str) -> dict[str, float]:
        """Return ``{ip: deadline}`` for the IPs ``name`` leads to now (clock seconds)."""
        with self._lock:
            now = self.clock()
            return {ip: d for ip, d in self._mapping(name).items() if d > now}

    def names(self) -> set[str]:
        """Return every name that holds links (question names and chain members)."""
        with self._lock:
            return set(self._sched)

    def __len__(self) -> int:
        """Number of names holding links."""
        return len(self._sched)

    def names_matching(self, pattern: PatternLike) -> set[str]:
        """Return every cached name (chain members included) that ``pattern`` matches.

        Only names ending with the pattern's fixed suffix are looked at: the index groups
        names by parent domain and sorts the character-reversed parents, where those under a
        suffix form one contiguous range. So a pattern added after the data finds it without
        a scan of the whole cache.

        Args:
            pattern: A :class:`fqdnpolicy.DomainPattern` (exact or wildcard).
        """
        suffix = pattern.fixed_suffix
        with self._lock:
            sched = self._sched
            if not suffix:
                return {name for name in sched if pattern.matches(name)}
            if self._pending or not self._index_built:
                self._update_index()
            key = suffix[::-1]
            found = {suffix} if suffix in sched and pattern.matches(suffix) else set()
            buckets = self._buckets
            # Names directly under the suffix, then those under its subdomains.
            parents = [key] if key in buckets else []
            parents.extend(self._index.irange(key + ".", key + "/", inclusive=(True, False)))
            for parent in parents:
                bucket = buckets[parent]
                for name in (bucket,) if isinstance(bucket, str) else bucket:
                    if name in sched and pattern.matches(name):
                        found.add(name)
            return found

    def links(self) -> list[DNSLink]:
        """Return every stored link (address and CNAME) with its deadline."""
        with self._lock:
            out = [
                DNSLink(name, ip, False, d)
                for name, links in self._addrs.items()
                for ip, d in _as_map(links).items()
            ]
            out.extend(
                DNSLink(name, target, True, d)
                for name, links in self._cnames.items()
                for target, d in links.items()
            )
            return out

    def mapping(self) -> dict[str, dict[str, float]]:
        """Return the whole effective mapping ``{name: {ip: deadline}}`` (expired included)."""
        with self._lock:
            out = {name: dict(_as_map(links)) for name, links in self._addrs.items()}
            out.update((name, dict(m)) for name, m in self._eff.items())
            return {name: m for name, m in out.items() if m}

    @property
    def stats(self) -> DNSStats:
        """A snapshot of the counters (see :class:`DNSStats`)."""
        with self._lock:
            return self._c.snapshot()

    # ---------------------------------------------------------------------------------------
    # Subscriptions
    # ---------------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[list[DNSChange]], None]) -> Callable[[], None]:
        """Call ``callback`` with each batch of changes made from now on, in order.

        The callback never runs under the cache lock (see "Threads" in the module docs): it
        may read the cache, which may already be past the batch, and take its own locks.
        Batches are delivered one at a time, by the thread that made them or by the one
        delivering when they were made. A change the callback makes to the cache is queued
        and delivered after the callback returns.

        If the callback raises, the subscribers after it do not get that batch; the
        exception propagates from the call that was delivering (the one that made the batch,
        when only one thread uses the cache), after the batches still queued are delivered.
        Should another callback raise meanwhile, its exception is added as a note to the
        first. Every subscription stays, and later batches are delivered as usual.

        Args:
            callback: Receives a non-empty list of :class:`DNSChange`; it should be quick.

        Returns:
            A function that cancels the subscription (calling it again does nothing). A batch
            made before the cancel may still reach the callback after it, from the thread
            delivering it.
        """
        with self._lock:  # so "from now on" falls between two batches
            return self._subscribers.add(callback)

    def _deliver(self) -> None:
        """Hand the queued batches to their subscribers: outside the lock, in order."""
        outbox, delivering = self._outbox, self._delivering
        error: Exception | None = None
        # A thread that finds the flag taken leaves its batch to the holder. The holder checks
        # the queue again after letting go of the flag: a batch queued after its last check
        # but before the release would otherwise wait for the next change.
        while outbox and delivering.acquire(blocking=False):
            try:
                while outbox:
                    batch, callbacks = outbox.popleft()
                    for callback in callbacks:
                        try:
                            callback(batch)
                        except Exception as exc:
                            if error is None:
                                error = exc
                            else:
                                error.add_note(f"a DNS cache subscriber also raised {exc!r}")
                            break
            finally:
                delivering.release()
        if error is not None:
            raise error

    # ---------------------------------------------------------------------------------------
    # Persistence (format in fqdnpolicy.dns.persist)
    # ---------------------------------------------------------------------------------------

    def save(self, path: str) -> int:
        """Write the cache atomically to ``path`` (see :func:`fqdnpolicy.dns.persist.save`).

        Returns:
            The number of links written.
        """
        from fqdnpolicy.dns import persist

        return persist.save(self, path)

    def load(self, path: str) -> LoadReport:
        """Restore links from a file written by :meth:`save`; never raises.

        Links with more than 1 s left are merged in (a refresh only extends), producing
        change events like answers do.

        Returns:
            What was restored and what was skipped, with reasons.
        """
        from fqdnpolicy.dns import persist

        return persist.load(self, path)

    def restore(self, links: Iterable[DNSLink]) -> list[DNSChange]:
        """Merge links (deadlines on this cache's clock), applying every bound.

        Used by :meth:`load`; links already due are skipped.

        Returns:
            The resulting changes (also delivered to subscribers).
        """
        with self._lock:
            now = self.clock()
            old: dict[str, Mapping[str, float]] = {}
            for link in links:
                if link.expiry <= now:
                    continue
                if link.is_cname:
                    self._put_cname(link.name, link.target, link.expiry, old)
                elif link.target not in _ZERO_ADDRESSES:
                    self._put_addr(link.name, sys.intern(link.target), link.expiry, old)
            changes = self._commit(old, now)
        if self._outbox:
            self._deliver()
        return changes

    def __iter__(self) -> Iterator[str]:
        """Iterate over a snapshot of the names holding links."""
        return iter(self.names())


def _extract(wire: ModuleType, response: object) -> Answer:
    """Extract the answer of ``response`` (wire bytes or a dnspython message).

    Raises:
        MalformedDNSMessage: The bytes are not a message dnspython accepts.
        TypeError: ``response`` is neither.
    """
    if type(response) is bytes:
        # The fast path without extract_wire's frame around it (0.2 us of ~11.5) and, for a
        # message parsed afresh, in plain tuples rather than Record and Extracted (see
        # wire._Raw); what it declines goes the whole way.
        try:
            extracted: Answer = wire._extract_fast(response)
        except wire._Unusual:
            extracted = wire.extract_wire(response)
        return extracted
    if isinstance(response, bytes | bytearray | memoryview):
        return wire.extract_wire(bytes(response))  # type: ignore[no-any-return]
    import dns.message  # loaded with wire already: this only binds the name

    if not isinstance(response, dns.message.Message):
        raise TypeError(
            "a DNS response is wire bytes (bytes, bytearray, memoryview) or a "
            f"dns.message.Message, not {type(response).__name__}"
        )
    return wire.extract_message(response)  # type: ignore[no-any-return]


def _by_deadline_then_value(item: tuple[str, float]) -> tuple[float, str]:
    return item[1], item[0]


def _latest(links: _AddrLinks) -> float:
    """The latest deadline among a name's address links."""
    if isinstance(links, tuple):
        return links[0]
    return max(links.values())


def _as_map(links: _AddrLinks | Mapping[str, float]) -> Mapping[str, float]:
    """The ``{ip: deadline}`` view of a name's address links (compact ones become a dict)."""
    if isinstance(links, tuple):
        return {links[2]: links[0]}
    return links


def _snapshot(links: _AddrLinks | None) -> Mapping[str, float]:
    """A copy of a name's address links that later mutations of the cache leave alone."""
    if links is None:
        return _EMPTY
    if isinstance(links, tuple):
        return {links[2]: links[0]}
    return dict(links)
