"""How the DNS cache learns answers: trust, parsing, and the general path.

:class:`Learning` is the part of :class:`~fqdnpolicy.dns.cache.DNSCache` that takes answers
in: from trusted servers only (:meth:`~Learning.is_trusted`), snooped one at a time
(:meth:`~Learning.observe`) or in batches (:meth:`~Learning.observe_many`), or already
extracted (:meth:`~Learning.ingest`). Every answer passes the anti-poisoning rule of
:mod:`fqdnpolicy.dns.cache` in the general path (``_ingest``), unless one of the fast paths
of :mod:`fqdnpolicy.dns.fastpath` learns it with the same result. The wire parser,
:mod:`fqdnpolicy.dns.wire`, is imported on first use.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from fqdnpolicy.dns.addresses import ZERO_ADDRESSES, address_problem, parse_server, suspect
from fqdnpolicy.dns.fastpath import FastPaths
from fqdnpolicy.dns.links import snapshot
from fqdnpolicy.dns.model import RTYPE_A, RTYPE_AAAA, RTYPE_CNAME, Answer, DNSChange, Outbox

if TYPE_CHECKING:
    import dns.message

__all__ = ["Learning"]


_TRUST_MEMO_LIMIT = 4096
# observe_many takes responses in chunks of this many: parsing a chunk and then learning it
# was fastest here for new names (a larger chunk's parsed answers no longer stay in the CPU
# caches; the sizes tried are in docs/dns-cache.md), and the lock is held for one chunk at a
# time.
_OBSERVE_CHUNK = 64

_WIRE: ModuleType | None = None


def _load_wire() -> ModuleType:
    """Import :mod:`fqdnpolicy.dns.wire` on first use: it imports dnspython, which is slow."""
    global _WIRE
    from fqdnpolicy.dns import wire

    _WIRE = wire
    return wire


def _merge_into(outbox: Outbox, own: Outbox) -> None:
    """Queue ``own``'s batches on ``outbox``, each run for the same subscribers as one."""
    while own:
        batch, callbacks = own.popleft()
        if own and own[0][1] is callbacks:
            batch = list(batch)
            while own and own[0][1] is callbacks:
                batch += own.popleft()[0]
        outbox.append((batch, callbacks))


class Learning(FastPaths):
    """Taking answers in: the trust check, parsing, and learning under the anti-poisoning rule.

    A base of :class:`~fqdnpolicy.dns.cache.DNSCache`, which sets the attributes below.
    """

    trusted_servers: frozenset[tuple[str, int | None]]
    max_chain_depth: int
    clock: Callable[[], float]
    _lock: threading.RLock
    _trust_memo: dict[str, bool]
    _fast_path: bool
    _deliver: Callable[[], None]

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
        # The module, not an import statement, which would cost a noticeable share of a
        # whole typical answer on every call.
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
        subscribers get the same changes in the same order, as after ``observe(response,
        server)`` for each pair in turn. What differs is when, and how they are grouped:
        the responses are taken in chunks of 64, each parsed first, outside the lock, then
        learned under it, so a reader waits at most for one chunk to be learned; then the
        chunk's changes go to each subscriber as one batch, so a subscriber's fixed cost per
        batch (the engine's publishing, a sync's wake-up) is paid once per chunk. A batch
        always ends where a response's changes end, and a subscriber reading the cache then
        sees it as after that response.

        Parsing a chunk and then learning it keeps each step's code and data in the CPU's
        caches: for new names that is faster than ``observe`` one response at a time
        (``benchmarks/bench_dns_cache.py`` measures both in one run).

        Args:
            responses: ``(response, server)`` pairs: the response as a dnspython message or
                wire bytes, the server as in :meth:`observe`.

        Returns:
            How many changes the responses caused. The changes themselves go only to
            subscribers, so a long stream is not held in memory (a list of them all also
            made learning new names slower by keeping every one alive; see
            ``docs/dns-cache.md``).

        Raises:
            TypeError: An item is not a pair, or its response neither wire bytes nor a
                dnspython message. The items before it are learned, those after it not.
            Exception: What a subscriber raised: the chunk it was given is learned, the
                chunks after it not.
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
        ingest = self._ingest
        with self._lock:
            self._c.untrusted += untrusted
            self._c.malformed += malformed
            # The chunk's batches go to a private queue, then to subscribers as one batch:
            # a subscriber (the engine, a sync) pays its fixed cost once per chunk. Another
            # thread delivering meanwhile drains the shared queue it already holds.
            outbox, own = self._outbox, Outbox()
            self._outbox = own
            try:
                for answer in chunk:
                    changes += len(ingest(answer))
            finally:
                self._outbox = outbox
                _merge_into(outbox, own)
        if self._outbox:
            self._deliver()
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
                if changes is None:
                    changes = self._ingest_grown(qname, records, now)
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
            elif value in ZERO_ADDRESSES:
                c.zero_address += 1
                continue
            elif suspect(value) and address_problem(value) is not None:
                c.unsupported_address += 1
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
                old[owner] = eff if eff is not None else snapshot(links)
            if isinstance(links, tuple):
                # A new tuple: the old one may be the heap entry, a lower bound from now on.
                addrs_of[owner] = (deadline, links[1], links[2])
            else:
                links[value] = deadline
            if self._zombies:
                self._zombies.pop((owner, value), None)
            # sched only needs to be a lower bound; an extension never lowers it.
        return self._commit(old, now, since=structure)


def _extract(wire: ModuleType, response: object) -> Answer:
    """Extract the answer of ``response`` (wire bytes or a dnspython message).

    Raises:
        MalformedDNSMessage: The bytes are not a message dnspython accepts.
        TypeError: ``response`` is neither.
    """
    if type(response) is bytes:
        # The fast path without extract_wire's frame around it and, for a message parsed
        # afresh, in plain tuples rather than Record and Extracted (see
        # wireformat._Raw); what it declines goes the whole way.
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
