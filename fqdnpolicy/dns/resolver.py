"""An active resolver: exact names kept resolved by asking nameservers with dnspython.

:class:`ActiveResolver` queries A and AAAA for each name, hands each response to
``cache.observe`` and re-queries every name before its answer expires. Timeouts and failures
are counted, never raised out of its loop.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import attrs
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype

from fqdnpolicy.dns.sink import CacheSink, _server_text
from fqdnpolicy.domains import canonical_dns_name
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = ["ActiveResolver", "ResolverStats"]


def _parse_nameserver(text: str, where: str) -> tuple[str, int]:
    """Parse ``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port`` (port 53 by default)."""
    host, port_text = text.strip(), ""
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else "?"
        host = host[1:end]
        if rest:
            if not rest.startswith(":"):
                host = ""
            port_text = rest[1:]
    elif host.count(":") == 1:
        host, port_text = host.split(":")
    try:
        ip = str(ipaddress.ip_address(host))
        port = int(port_text) if port_text else 53
        if not 0 < port < 65536:
            raise ValueError(port)
    except ValueError:
        raise InvalidPolicy(
            Problem(
                f"{text!r} is not a nameserver address",
                path=where,
                hint="ip, ip:port, [ipv6] or [ipv6]:port, e.g. 10.96.0.10 or 127.0.0.1:5353",
                code="bad-nameserver",
            )
        ) from None
    return ip, port


@attrs.frozen
class ResolverStats:
    """What an :class:`ActiveResolver` has done so far.

    Attributes:
        queries: Queries sent (a UDP query retried over TCP counts once).
        answers: Responses handed to the cache.
        timeouts: Queries no nameserver answered in time.
        failures: Queries that failed otherwise (network errors, bad responses).
        tcp_retries: Truncated UDP responses asked again over TCP.
    """

    queries: int = 0
    answers: int = 0
    timeouts: int = 0
    failures: int = 0
    tcp_retries: int = 0


class ActiveResolver:
    """Keeps exact names resolved by asking nameservers, and re-asks before answers expire.

    Each (name, type) has a due time on ``clock``. :meth:`refresh_due` sends the queries that
    are due; an answer is next asked for after ``refresh_fraction`` of its smallest TTL (at
    least ``min_interval`` seconds), so the cache gets the new answer before the old one
    expires. A response without records (NXDOMAIN, NODATA) is asked again after
    ``empty_interval``, a failed query after ``retry_interval``.

    Thread safety: :meth:`set_names` may be called from another thread than :meth:`run`.

    Args:
        cache: Where responses go (``cache.observe(message, server="ip:port")``); the cache
            should trust the nameservers.
        nameservers: ``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port``; tried in order.
        names: Exact names to keep resolved.
        rdtypes: Record types to ask for.
        timeout: Seconds to wait for one nameserver.
        refresh_fraction: Part of the TTL after which a name is asked again (0 < f <= 1).
        min_interval: Shortest time between two queries for one (name, type).
        empty_interval: When to ask again after an answer without records.
        retry_interval: When to ask again after a timeout or failure.
        clock: Monotonic seconds; :meth:`run` waits in real time for what it says.

    Raises:
        InvalidPolicy: A nameserver address or a setting is invalid.
    """

    def __init__(
        self,
        cache: CacheSink,
        nameservers: Sequence[str],
        names: Iterable[str],
        *,
        rdtypes: Sequence[str] = ("A", "AAAA"),
        timeout: float = 2.0,
        refresh_fraction: float = 0.8,
        min_interval: float = 1.0,
        empty_interval: float = 30.0,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(nameservers, str):
            nameservers = [nameservers]
        self._servers = [
            _parse_nameserver(s, f"nameservers[{i}]") for i, s in enumerate(nameservers)
        ]
        problems = []
        if not self._servers:
            problems.append(Problem("no nameserver given", path="nameservers"))
        if not 0 < refresh_fraction <= 1:
            problems.append(Problem("must be in (0, 1]", path="refresh_fraction"))
        for field, value in (
            ("timeout", timeout),
            ("min_interval", min_interval),
            ("empty_interval", empty_interval),
            ("retry_interval", retry_interval),
        ):
            if not value > 0:
                problems.append(Problem("must be a positive number of seconds", path=field))
        try:
            self._rdtypes = [dns.rdatatype.RdataType.make(t) for t in rdtypes]
        except (ValueError, dns.exception.DNSException):
            problems.append(Problem(f"unknown record type in {list(rdtypes)}", path="rdtypes"))
        if problems:
            raise InvalidPolicy(problems)
        self._cache = cache
        self._timeout = timeout
        self._fraction = refresh_fraction
        self._min_interval = min_interval
        self._empty_interval = empty_interval
        self._retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._due: dict[tuple[str, dns.rdatatype.RdataType], float] = {}
        self._counts = {f.name: 0 for f in attrs.fields(ResolverStats)}
        self.set_names(names)

    @property
    def stats(self) -> ResolverStats:
        """Counters of queries, answers, timeouts and failures."""
        with self._lock:
            return ResolverStats(**self._counts)

    @property
    def names(self) -> set[str]:
        """The names kept resolved."""
        with self._lock:
            return {name for name, _ in self._due}

    def set_names(self, names: Iterable[str]) -> None:
        """Replace the names to keep resolved; new names are due at once.

        Args:
            names: Exact names (any case, trailing dot allowed).
        """
        if isinstance(names, str):  # one name, not its characters
            names = [names]
        wanted = {canonical_dns_name(n) for n in names} - {""}
        now = self._clock()
        with self._lock:
            due = {key: at for key, at in self._due.items() if key[0] in wanted}
            for name in wanted:
                for rdtype in self._rdtypes:
                    due.setdefault((name, rdtype), now)
            self._due = due

    def next_refresh(self) -> float | None:
        """Return the clock time when the next query is due (None when there are no names)."""
        with self._lock:
            return min(self._due.values(), default=None)

    def refresh_due(self) -> int:
        """Send every query that is due now and hand the responses to the cache.

        Returns:
            The number of queries sent.
        """
        now = self._clock()
        with self._lock:
            keys = [key for key, at in self._due.items() if at <= now]
        for name, rdtype in keys:
            next_in = self._query(name, rdtype)
            with self._lock:
                if (name, rdtype) in self._due:  # unless set_names dropped it meanwhile
                    self._due[(name, rdtype)] = self._clock() + next_in
        return len(keys)

    def run(self, stop_event: threading.Event, *, idle: float = 1.0) -> None:
        """Refresh names until ``stop_event`` is set (blocking; run it in a thread).

        Args:
            stop_event: Set it to stop the loop; it is also what the loop waits on.
            idle: Longest wait between two checks (names may be added meanwhile).
        """
        while not stop_event.is_set():
            due = self.next_refresh()
            wait = idle if due is None else min(idle, max(0.0, due - self._clock()))
            if wait > 0 and stop_event.wait(wait):
                return
            self.refresh_due()

    def _count(self, field: str) -> None:
        with self._lock:
            self._counts[field] += 1

    def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> float:
        """Ask the nameservers in turn; return seconds until this question is due again."""
        self._count("queries")
        try:
            query = dns.message.make_query(name, rdtype)
        except (ValueError, dns.exception.DNSException):
            self._count("failures")  # a name that cannot be put on the wire
            return self._empty_interval
        timed_out = False
        for ip, port in self._servers:
            try:
                response = dns.query.udp(query, ip, timeout=self._timeout, port=port)
                if response.flags & dns.flags.TC:
                    self._count("tcp_retries")
                    response = dns.query.tcp(query, ip, timeout=self._timeout, port=port)
            except dns.exception.Timeout:
                timed_out = True
                continue
            except Exception:  # network errors, malformed or unexpected responses
                continue
            try:
                self._cache.observe(response, server=_server_text(ip, port))
            except Exception:  # the cache should never raise; a resolver must outlive it
                self._count("failures")
                return self._retry_interval
            self._count("answers")
            ttls = [rrset.ttl for rrset in response.answer]
            if not ttls:
                return self._empty_interval
            return max(self._min_interval, min(ttls) * self._fraction)
        self._count("timeouts" if timed_out else "failures")
        return self._retry_interval
