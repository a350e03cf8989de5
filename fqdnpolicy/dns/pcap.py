"""DNS answers replayed from a capture (pcap or pcapng).

:func:`replay_pcap` hands every DNS response in a capture (UDP, or TCP reassembled per flow)
to ``cache.observe`` with the server it came from; :func:`iter_pcap_responses` yields them.

The pcap reader is our own (standard library only) rather than ``dpkt``: dpkt 1.9.8 (last
release 2022) is untyped, builds an object per protocol layer and leaves TCP reassembly, the
part that takes care, to the caller anyway; ours also measured faster
(docs/development.md has the figures).
"""

from __future__ import annotations

import os
import socket
import struct
from collections import OrderedDict
from collections.abc import Collection, Iterator
from typing import Any

import attrs

from fqdnpolicy.dns.sink import CacheSink, _server_text
from fqdnpolicy.dns.wire import format_ipv6
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = ["ReplayReport", "iter_pcap_responses", "replay_pcap"]


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
