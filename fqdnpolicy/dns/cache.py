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
answers) are never learned, nor is any address the datapath cannot hold (scoped, loopback,
IPv6 link-local, multicast, broadcast, IPv4-mapped: :mod:`fqdnpolicy.dns.addresses`), from
any entry point.

Lifetimes
---------
A record's lifetime is ``clamp(ttl + extra_ttl, min_ttl, max_ttl) + grace_period``; a TTL
above ``2**31 - 1`` counts as 0 (RFC 2181, section 8). A refresh only ever extends a link.
:meth:`DNSCache.expire` removes what is due at the clock's now (nothing expires on its own,
so tests drive time with a fake clock). Restored links (:meth:`DNSCache.restore`, cache files)
are cut to the longest lifetime the options give now. IPs the datapath still sees connections
to can be
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

Layout
------
This module is the facade: the options, time, reading, subscriptions and persistence. The
parts it is built from, each a module of its own: :mod:`~fqdnpolicy.dns.learning` (learning
answers: trust, parsing, the general path), :mod:`~fqdnpolicy.dns.links` (links, the CNAME
graph, the effective mapping and the change transaction), :mod:`~fqdnpolicy.dns.expiry` (the
expiry heap), :mod:`~fqdnpolicy.dns.nameindex` (the index behind
:meth:`DNSCache.names_matching`), :mod:`~fqdnpolicy.dns.fastpath` (the two commonest answer
shapes learned directly) and :mod:`~fqdnpolicy.dns.persist` (cache files, written from
:meth:`DNSCache.snapshot`). Memory and speed figures are in ``docs/dns-cache.md``.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Mapping

from fqdnpolicy.dns import persist
from fqdnpolicy.dns.addresses import ZERO_ADDRESSES, address_problem, parse_server
from fqdnpolicy.dns.expiry import AddrLinks, HeapEntry
from fqdnpolicy.dns.learning import Learning
from fqdnpolicy.dns.links import EMPTY, as_map
from fqdnpolicy.dns.model import (
    Answer,
    CacheSnapshot,
    Counters,
    DNSChange,
    DNSLink,
    DNSStats,
    PatternLike,
    RecordTuple,
    Subscriber,
)
from fqdnpolicy.dns.nameindex import NameIndex
from fqdnpolicy.domains import canonical_dns_name
from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.subscribers import Subscribers

__all__ = [
    "Answer",
    "CacheSnapshot",
    "DNSCache",
    "DNSChange",
    "DNSLink",
    "DNSStats",
    "PatternLike",
    "RecordTuple",
    "parse_server",
]


class DNSCache(Learning):
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
        # The state of the parts (links.py, expiry.py, nameindex.py say what each holds).
        self._addrs: dict[str, AddrLinks] = {}
        self._cnames: dict[str, dict[str, float]] = {}
        self._parents: dict[str, str | set[str]] = {}
        self._eff: dict[str, dict[str, float]] = {}
        self._sched: dict[str, float] = {}
        self._heap: list[HeapEntry] = []
        self._names = NameIndex()
        self._subscribers: Subscribers[list[DNSChange]] = Subscribers()
        # Batches made under the lock and not yet delivered, each with the subscribers of the
        # moment it was made; _delivering is held by the one thread delivering them.
        self._outbox: deque[tuple[list[DNSChange], tuple[Subscriber, ...]]] = deque()
        self._delivering = threading.Lock()
        self._c = Counters()
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
            return as_map(self._addrs.get(name, EMPTY))
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

    def live(self, only: Container[str] | None = None) -> list[tuple[str, dict[str, float]]]:
        """Return ``(name, {ip: deadline})`` for every name leading to IPs now, read at once.

        What :meth:`names` and :meth:`expiries` of each name give, taken under one hold of
        the lock (so one consistent cut), for a reader filling itself from the whole cache.
        With ``only``, names not in it are passed over without copying their pairs.
        """
        with self._lock:
            now = self.clock()
            eff, addrs = self._eff, self._addrs
            found: list[tuple[str, dict[str, float]]] = []
            for name in self._sched:
                if only is not None and name not in only:
                    continue
                chained = eff.get(name)
                mapping = as_map(addrs.get(name, EMPTY)) if chained is None else chained
                if not mapping:
                    continue
                if min(mapping.values()) > now:  # most names: nothing expired, a plain copy
                    found.append((name, dict(mapping)))
                    continue
                pairs = {ip: d for ip, d in mapping.items() if d > now}
                if pairs:
                    found.append((name, pairs))
        return found

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
        with self._lock:
            return self._names.matching(pattern, self._sched)

    def links(self) -> list[DNSLink]:
        """Return every stored link (address and CNAME) with its deadline."""
        with self._lock:
            out = [
                DNSLink(name, ip, False, d)
                for name, links in self._addrs.items()
                for ip, d in as_map(links).items()
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
            out = {name: dict(as_map(links)) for name, links in self._addrs.items()}
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

    def snapshot(self) -> CacheSnapshot:
        """Return one consistent cut of the cache: every link and both clocks, read together.

        What :meth:`save` writes; an embedder may write it elsewhere the same way.
        """
        with self._lock:
            return CacheSnapshot(tuple(self.links()), self.clock(), self.wall_clock(), self.epoch)

    def save(self, path: str) -> int:
        """Write the cache atomically to ``path`` (see :func:`fqdnpolicy.dns.persist.save`).

        Returns:
            The number of links written.

        Raises:
            OSError: The file could not be written (the old file is then left as it was).
        """
        return persist.save(self, path)

    def load(self, path: str) -> persist.LoadReport:
        """Restore links from a file written by :meth:`save`; never raises.

        Links with more than 1 s left are merged in (a refresh only extends), producing
        change events like answers do.

        Returns:
            What was restored and what was skipped, with reasons.
        """
        return persist.load(self, path)

    def restore(self, links: Iterable[DNSLink]) -> list[DNSChange]:
        """Merge links (deadlines on this cache's clock), applying every bound.

        Used by :meth:`load`. Links already due are skipped, and so are addresses the
        datapath cannot hold (counted in ``stats.unsupported_address``; see
        :mod:`fqdnpolicy.dns.addresses`). A deadline is cut to the longest lifetime the
        cache's options give an answer now, so stored state never outlives what a fresh
        answer could.

        Returns:
            The resulting changes (also delivered to subscribers).
        """
        with self._lock:
            now = self.clock()
            latest = now + self._longest_lifetime()
            old: dict[str, Mapping[str, float]] = {}
            for link in links:
                expiry = link.expiry
                if not expiry > now:  # NaN too
                    continue
                if expiry > latest:
                    expiry = latest
                if link.is_cname:
                    self._put_cname(link.name, link.target, expiry, old)
                elif link.target in ZERO_ADDRESSES:
                    continue
                elif address_problem(link.target) is not None:
                    self._c.unsupported_address += 1
                else:
                    self._put_addr(link.name, sys.intern(link.target), expiry, old)
            changes = self._commit(old, now)
        if self._outbox:
            self._deliver()
        return changes

    def __iter__(self) -> Iterator[str]:
        """Iterate over a snapshot of the names holding links."""
        return iter(self.names())
