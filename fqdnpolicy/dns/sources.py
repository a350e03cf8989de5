"""Sources of DNS answers besides passive snooping: a resolver, zone files and pcap replay.

* :class:`ActiveResolver` queries exact names (A and AAAA) against given nameservers with
  dnspython, hands each response to ``cache.observe`` and re-queries every name before its
  answer expires. Timeouts and failures are counted, never raised out of its loop.
* :func:`load_zone` / :func:`zone_answers` read an RFC 1035 master file with ``dns.zone`` and
  feed one answer per owner name (with the in-zone CNAME chain it leads to) to
  ``cache.ingest``: an offline source for examples, demos and tests.
* :func:`replay_pcap` reads a capture (pcap or pcapng) of DNS traffic and hands every response
  (UDP, or TCP reassembled per flow) to ``cache.observe`` with the server it came from.

The pcap reader is our own (standard library only) rather than ``dpkt``: dpkt 1.9.8 (last
release 2022) is untyped, builds an object per protocol layer and leaves TCP reassembly, the
part that takes care, to the caller anyway; ours also measured about twice as fast
(docs/development.md).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, Protocol

import attrs
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.zone

from fqdnpolicy.dns.wire import Extracted, Record, format_ipv6
from fqdnpolicy.dns.wireformat import TYPE_A, TYPE_AAAA, TYPE_CNAME
from fqdnpolicy.domains import canonical_dns_name
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "ActiveResolver",
    "CacheSink",
    "ReplayReport",
    "ResolverStats",
    "ZoneLoad",
    "iter_pcap_responses",
    "load_zone",
    "replay_pcap",
    "zone_answers",
]


class CacheSink(Protocol):
    """The part of :class:`fqdnpolicy.dns.DNSCache` that the sources feed."""

    def observe(
        self, response: dns.message.Message | bytes, server: str, client: str | None = None
    ) -> Sequence[Any]:
        """Learn from a response received from ``server``."""

    def ingest(self, extracted: Extracted, server: str | None = None) -> Sequence[Any]:
        """Learn from an already-extracted answer."""


def _server_text(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


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


# --------------------------------------------------------------------------------------------
# Active resolver
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Zone files
# --------------------------------------------------------------------------------------------


@attrs.frozen
class ZoneLoad:
    """What :func:`load_zone` fed to the cache.

    Attributes:
        answers: Answers ingested (one per owner name with A, AAAA or CNAME records).
        records: Records in those answers, chains included.
        changes: Changes the cache reported.
        skipped_wildcards: Wildcard owners (``*.example.com``) left out: they answer
            queries, and a zone replay has none.
    """

    answers: int
    records: int
    changes: int
    skipped_wildcards: int


_LINE_IN_ERROR = re.compile(r":(\d+): ")
_MAX_CHAIN = 16


def _read_zone(source: str | os.PathLike[str], origin: str | None) -> dns.zone.Zone:
    is_path = isinstance(source, os.PathLike) or "\n" not in source
    where = os.fspath(source) if is_path else None
    try:
        if is_path:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        else:
            text = str(source)
        return dns.zone.from_text(
            text,
            origin=origin,
            relativize=False,
            check_origin=False,
            filename=where or "<zone>",
        )
    except OSError as exc:
        raise InvalidPolicy(
            Problem(f"cannot read zone file: {exc.strerror or exc}", file=where, code="io")
        ) from None
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        detail = str(exc)
        match = _LINE_IN_ERROR.search(detail)
        line = _error_line(text, int(match.group(1)), origin) if match else None
        if match:
            detail = detail[match.end() :]
        if isinstance(exc, dns.zone.UnknownOrigin):
            detail = "relative names but no origin"
        raise InvalidPolicy(
            Problem(
                f"invalid zone file: {detail}",
                file=where,
                line=line,
                hint="RFC 1035 master format; give origin= or a $ORIGIN line for relative names",
                code="bad-zone",
            )
        ) from None


def _error_line(text: str, reported: int, origin: str | None) -> int:
    """Return the line of a zone error that dnspython reports at ``reported``.

    dnspython counts the end of a line as read once a record's data has been parsed, so an
    error in record data is reported one line late. If the lines before the reported one
    already fail to parse on their own, the error is on the line before.
    """
    if reported <= 1:
        return reported
    head = "".join(text.splitlines(keepends=True)[: reported - 1])
    try:
        dns.zone.from_text(head, origin=origin, relativize=False, check_origin=False)
    except Exception:
        return reported - 1
    return reported


def _zone_records(zone: dns.zone.Zone) -> dict[str, list[Record]]:
    """Owner name -> its class IN A, AAAA and CNAME records, canonical."""
    out: dict[str, list[Record]] = {}
    for name, node in zone.nodes.items():
        owner = canonical_dns_name(name.to_text(omit_final_dot=True))
        for rdataset in node:
            rtype = int(rdataset.rdtype)
            if rdataset.rdclass != dns.rdataclass.IN or rtype not in (
                TYPE_A,
                TYPE_AAAA,
                TYPE_CNAME,
            ):
                continue
            for rd in rdataset:
                if rtype == TYPE_CNAME:
                    value = canonical_dns_name(rd.target.to_text(omit_final_dot=True))
                else:
                    value = str(ipaddress.ip_address(rd.address))
                out.setdefault(owner, []).append(Record(owner, rtype, rdataset.ttl, value))
    return out


def zone_answers(
    source: str | os.PathLike[str], *, origin: str | None = None
) -> Iterator[Extracted]:
    """Yield, for each owner name of a zone, the answer an authoritative server would give.

    The answer holds the owner's A, AAAA and CNAME records and, when a CNAME leads to another
    name of the zone, that name's records too (in-zone chains are followed, at most 16 links,
    loops stop). Wildcard owners are left out.

    Args:
        source: A path (``os.PathLike``, or a ``str`` without a newline) or the zone text.
        origin: Origin for relative names, unless the zone has ``$ORIGIN``.

    Yields:
        One response-shaped :class:`Extracted` per owner name, in zone order.

    Raises:
        InvalidPolicy: The file cannot be read or is not a valid zone (with the line).
    """
    yield from _answers(_zone_records(_read_zone(source, origin)))


def _is_wildcard(owner: str) -> bool:
    return owner == "*" or owner.startswith("*.")


def _answers(records: dict[str, list[Record]]) -> Iterator[Extracted]:
    for owner in records:
        if _is_wildcard(owner):
            continue
        answer: list[Record] = []
        seen = {owner}
        name: str | None = owner
        for _ in range(_MAX_CHAIN):
            if name is None:
                break
            own = records.get(name, [])
            answer.extend(own)
            name = next((r.value for r in own if r.rtype == TYPE_CNAME), None)
            if name in seen:
                break
            if name is not None:
                seen.add(name)
        yield Extracted(owner, True, 0, 0, False, tuple(answer))


def load_zone(
    cache: CacheSink, source: str | os.PathLike[str], *, origin: str | None = None
) -> ZoneLoad:
    """Feed a zone's A/AAAA/CNAME records to the cache, one answer per owner name.

    Args:
        cache: Receives ``cache.ingest(extracted, server=None)`` for each answer.
        source: A path (``os.PathLike``, or a ``str`` without a newline) or the zone text.
        origin: Origin for relative names, unless the zone has ``$ORIGIN``.

    Returns:
        Counts of answers, records and cache changes.

    Raises:
        InvalidPolicy: The file cannot be read or is not a valid zone (with the line).
    """
    zone_records = _zone_records(_read_zone(source, origin))
    answers = records = changes = 0
    for extracted in _answers(zone_records):
        answers += 1
        records += len(extracted.records)
        changes += len(cache.ingest(extracted, server=None))
    wildcards = sum(1 for owner in zone_records if _is_wildcard(owner))
    return ZoneLoad(answers, records, changes, wildcards)


# --------------------------------------------------------------------------------------------
# pcap / pcapng replay
# --------------------------------------------------------------------------------------------


@attrs.frozen
class ReplayReport:
    """What :func:`replay_pcap` found in a capture.

    Attributes:
        packets: Packets read.
        responses: DNS responses handed to the cache (UDP datagrams and TCP messages).
        changes: Changes the cache reported.
        skipped: Packets that are not IP/UDP/TCP from a DNS port (queries included).
        fragments: IP fragments (not reassembled; DNS over UDP rarely fragments).
        cut_short: Packets shorter than their IP/UDP/TCP headers say (snap length, damage).
            Lengths come from those headers, not from the capture's original length, so a
            frame whose link trailer (FCS) alone was not captured is still read.
        tcp_gaps: TCP streams where data was missing; their partial message was dropped.
        truncated_file: The file ended in the middle of a record.
    """

    packets: int = 0
    responses: int = 0
    changes: int = 0
    skipped: int = 0
    fragments: int = 0
    cut_short: int = 0
    tcp_gaps: int = 0
    truncated_file: bool = False


# link types (https://www.tcpdump.org/linktypes.html)
_LINK_NULL, _LINK_ETHERNET, _LINK_RAW, _LINK_RAW_OLD, _LINK_LOOP = 0, 1, 101, 12, 108
_LINK_SLL, _LINK_SLL2, _LINK_IPV4, _LINK_IPV6 = 113, 276, 228, 229
_ETH_IPV4, _ETH_IPV6, _ETH_VLANS = 0x0800, 0x86DD, (0x8100, 0x88A8, 0x9100)
_IPV6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options
_PROTO_TCP, _PROTO_UDP = 6, 17
_MAX_TCP_FLOWS = 4096
_inet_ntoa = socket.inet_ntoa


def _network_layer(link: int, frame: bytes) -> tuple[int, int] | None:
    """Return (IP version, offset of the IP header) for a frame, or None if not IP."""
    if link == _LINK_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype, at = struct.unpack_from("!H", frame, 12)[0], 14
        while ethertype in _ETH_VLANS and len(frame) >= at + 4:
            ethertype, at = struct.unpack_from("!H", frame, at + 2)[0], at + 4
    elif link == _LINK_SLL:
        if len(frame) < 16:
            return None
        ethertype, at = struct.unpack_from("!H", frame, 14)[0], 16
    elif link == _LINK_SLL2:
        if len(frame) < 20:
            return None
        ethertype, at = struct.unpack_from("!H", frame, 0)[0], 20
    elif link in (_LINK_NULL, _LINK_LOOP):
        if len(frame) < 4:
            return None
        # NULL stores the address family in the capturing host's byte order, LOOP in network
        # order; AF_INET is 2 everywhere and AF_INET6 is 10, 24, 28 or 30 by system.
        family = struct.unpack_from("<I" if frame[0] else "!I", frame, 0)[0]
        ethertype = _ETH_IPV4 if family == 2 else _ETH_IPV6 if family in (10, 24, 28, 30) else 0
        at = 4
    elif link in (_LINK_RAW, _LINK_RAW_OLD, _LINK_IPV4, _LINK_IPV6):
        if not frame:
            return None
        version = frame[0] >> 4
        return (version, 0) if version in (4, 6) else None
    else:
        return None
    if ethertype == _ETH_IPV4:
        return 4, at
    if ethertype == _ETH_IPV6:
        return 6, at
    return None


class _Replay:
    """Decodes packets into DNS responses; keeps TCP flows to reassemble."""

    def __init__(self, ports: Collection[int]) -> None:
        self.ports = frozenset(ports)
        self.counts = dict.fromkeys(
            ("packets", "responses", "skipped", "fragments", "cut_short", "tcp_gaps"), 0
        )
        self.truncated_file = False
        # (src, sport, dst, dport) -> [next sequence number, buffered stream bytes, in step]
        self.flows: OrderedDict[tuple[str, int, str, int], list[Any]] = OrderedDict()

    def packet(self, link: int, frame: bytes) -> Iterator[tuple[bytes, str, str]]:
        self.counts["packets"] += 1
        layer = _network_layer(link, frame)
        if layer is None:
            self.counts["skipped"] += 1
            return
        version, at = layer
        parsed = self._ip(version, frame, at)
        if parsed is None:
            self.counts["cut_short"] += 1
            return
        if parsed == "fragment":
            self.counts["fragments"] += 1
            return
        if parsed == "other":
            self.counts["skipped"] += 1
            return
        proto, src, dst, payload = parsed
        if proto == _PROTO_UDP:
            if len(payload) < 8:
                self.counts["cut_short"] += 1
                return
            sport, dport, length = struct.unpack_from("!HHH", payload, 0)
            if sport not in self.ports:
                self.counts["skipped"] += 1
                return
            if length < 8 or length > len(payload):
                self.counts["cut_short"] += 1
                return
            yield payload[8:length], _server_text(src, sport), _server_text(dst, dport)
            return
        if len(payload) < 20:
            self.counts["cut_short"] += 1
            return
        sport, dport, seq, _, offset_flags = struct.unpack_from("!HHIIH", payload, 0)
        if sport not in self.ports:
            self.counts["skipped"] += 1
            return
        yield from self._tcp(src, sport, dst, dport, seq, offset_flags, payload)

    def _ip(self, version: int, frame: bytes, at: int) -> Any:
        if version == 4:
            if len(frame) < at + 20:
                return None
            first, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", frame, at)
            header = (first & 0x0F) * 4
            if header < 20 or total < header or len(frame) < at + total:
                return None
            if frag & 0x3FFF:  # more-fragments flag or a fragment offset
                return "fragment"
            src = _inet_ntoa(frame[at + 12 : at + 16])
            dst = _inet_ntoa(frame[at + 16 : at + 20])
            payload = frame[at + header : at + total]  # total length drops Ethernet padding
        else:
            if len(frame) < at + 40:
                return None
            length, proto = struct.unpack_from("!HB", frame, at + 4)
            if len(frame) < at + 40 + length:
                return None
            src = format_ipv6(frame[at + 8 : at + 24])
            dst = format_ipv6(frame[at + 24 : at + 40])
            payload = frame[at + 40 : at + 40 + length]
            while proto in _IPV6_EXTENSIONS or proto == 44:
                if proto == 44:
                    return "fragment"
                if len(payload) < 8:
                    return None
                proto, ext_len = payload[0], (payload[1] + 1) * 8
                payload = payload[ext_len:]
        if proto not in (_PROTO_TCP, _PROTO_UDP):
            return "other"
        return proto, src, dst, payload

    def _tcp(
        self, src: str, sport: int, dst: str, dport: int, seq: int, offset_flags: int, seg: bytes
    ) -> Iterator[tuple[bytes, str, str]]:
        key = (src, sport, dst, dport)
        data = seg[(offset_flags >> 12) * 4 :]
        syn, fin, rst = offset_flags & 0x02, offset_flags & 0x01, offset_flags & 0x04
        flow = self.flows.get(key)
        if syn:
            flow = [(seq + 1) & 0xFFFFFFFF, bytearray(), True]
            self.flows[key] = flow
            if len(self.flows) > _MAX_TCP_FLOWS:
                self.flows.popitem(last=False)
        elif flow is None:
            # A connection whose start was not captured: its byte stream cannot be framed
            # into messages with any certainty, so it is not read.
            self.counts["skipped"] += 1
            return
        self.flows.move_to_end(key)
        ahead = (seq - flow[0]) & 0xFFFFFFFF
        if ahead >= 0x80000000:  # starts before what we have: a retransmission
            data = data[(flow[0] - seq) & 0xFFFFFFFF :]
        elif ahead and data:  # bytes went missing: the stream is out of step for good
            if flow[2]:
                self.counts["tcp_gaps"] += 1
            flow[1], flow[2] = bytearray(), False
            flow[0] = (seq + len(data)) & 0xFFFFFFFF
            data = b""
        flow[0] = (flow[0] + len(data)) & 0xFFFFFFFF
        if data and flow[2]:
            buffer: bytearray = flow[1]
            buffer += data
            while len(buffer) >= 2:
                size = (buffer[0] << 8) | buffer[1]
                if len(buffer) < 2 + size:
                    break
                message = bytes(buffer[2 : 2 + size])
                del buffer[: 2 + size]
                yield message, _server_text(src, sport), _server_text(dst, dport)
        if fin or rst:
            self.flows.pop(key, None)


def _bad_capture(path: str, offset: int, what: str) -> InvalidPolicy:
    return InvalidPolicy(
        Problem(
            f"not a readable capture: {what}",
            file=path,
            path=f"byte {offset}",
            hint="a pcap or pcapng file, e.g. from tcpdump -w",
            code="bad-pcap",
        )
    )


def _pcap_frames(path: str, data: bytes) -> Iterator[tuple[int, bytes] | None]:
    """Yield (link type, frame) for each packet; None when the file is cut short."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        yield from _pcapng_frames(path, data)
        return
    if len(data) < 24:
        raise _bad_capture(path, 0, "pcap header cut short")
    link = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF
    record = struct.Struct(order + "IIII")
    at = 24
    while at < len(data):
        if at + 16 > len(data):
            yield None
            return
        caplen = record.unpack_from(data, at)[2]
        if at + 16 + caplen > len(data):
            yield None
            return
        yield link, data[at + 16 : at + 16 + caplen]
        at += 16 + caplen


def _pcapng_frames(path: str, data: bytes) -> Iterator[tuple[int, bytes] | None]:
    if data[:4] != b"\x0a\x0d\x0d\x0a" or len(data) < 12:
        raise _bad_capture(path, 0, "neither pcap nor pcapng magic")
    order = "<"
    links: list[tuple[int, int]] = []  # per interface: (link type, snap length)
    at = 0
    while at < len(data):
        if at + 12 > len(data):
            yield None
            return
        if data[at : at + 4] == b"\x0a\x0d\x0d\x0a":  # section header: sets the byte order
            order = "<" if data[at + 8 : at + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
        block_type, length = struct.unpack_from(order + "II", data, at)
        if length < 12 or length % 4 or at + length > len(data):
            if at + length > len(data) and length >= 12:
                yield None
                return
            raise _bad_capture(path, at, "pcapng block of a bad length")
        body = data[at + 8 : at + length - 4]
        if block_type == 1 and len(body) >= 8:  # interface description
            link, _, snap = struct.unpack_from(order + "HHI", body, 0)
            links.append((link, snap))
        elif block_type == 6 and len(body) >= 20:  # enhanced packet
            iface, _, _, caplen = struct.unpack_from(order + "IIII", body, 0)
            if iface < len(links) and 20 + caplen <= len(body):
                yield links[iface][0], body[20 : 20 + caplen]
        elif block_type == 3 and len(body) >= 4 and links:  # simple packet (interface 0)
            origlen = struct.unpack_from(order + "I", body, 0)[0]
            caplen = min(origlen, len(body) - 4, links[0][1] or origlen)
            yield links[0][0], body[4 : 4 + caplen]
        at += length


def iter_pcap_responses(
    path: str | os.PathLike[str], *, ports: Collection[int] = (53,)
) -> Iterator[tuple[bytes, str, str]]:
    """Yield each DNS response in a capture as (wire bytes, server, client).

    Args:
        path: A pcap (microsecond or nanosecond, either byte order) or pcapng file.
        ports: Source ports that mark a packet as coming from a DNS server.

    Yields:
        ``(message, "ip:port" of the server, "ip:port" of the client)``, in capture order.

    Raises:
        InvalidPolicy: The file cannot be read or is neither pcap nor pcapng.
    """
    yield from _replay(path, ports)[1]


def _replay(
    path: str | os.PathLike[str], ports: Collection[int]
) -> tuple[_Replay, Iterator[tuple[bytes, str, str]]]:
    where = os.fspath(path)
    try:
        with open(where, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise InvalidPolicy(
            Problem(f"cannot read capture: {exc.strerror or exc}", file=where, code="io")
        ) from None
    replay = _Replay(ports)
    frames = _pcap_frames(where, data)

    def responses() -> Iterator[tuple[bytes, str, str]]:
        for item in frames:
            if item is None:
                replay.truncated_file = True
                return
            yield from replay.packet(*item)

    return replay, responses()


def replay_pcap(
    cache: CacheSink, path: str | os.PathLike[str], *, ports: Collection[int] = (53,)
) -> ReplayReport:
    """Hand every DNS response in a capture to ``cache.observe(wire, server="ip:port")``.

    UDP datagrams and TCP streams (reassembled per flow, two-byte length framing) from the
    given source ports count as responses; over Ethernet (with VLAN tags), Linux cooked
    (v1/v2), raw IP and BSD loopback link types, IPv4 and IPv6. IP fragments are not
    reassembled. A file cut off mid-record (a capture still being written) is read up to the
    cut and reported, not rejected.

    Args:
        cache: Receives ``cache.observe(message, server=..., client=...)``.
        path: A pcap or pcapng file.
        ports: Source ports of DNS servers (53; add e.g. 5353 for a test server).

    Returns:
        Counts of packets, responses and what was skipped.

    Raises:
        InvalidPolicy: The file cannot be read or is neither pcap nor pcapng.
    """
    replay, responses = _replay(path, ports)
    changes = 0
    for message, server, client in responses:
        replay.counts["responses"] += 1
        changes += len(cache.observe(message, server=server, client=client))
    return ReplayReport(**replay.counts, changes=changes, truncated_file=replay.truncated_file)
