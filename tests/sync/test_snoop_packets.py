"""Parsing snooped packets: which IP packets yield a DNS message, and from which server."""

from __future__ import annotations

import ipaddress
import struct

import dns.message
from hypothesis import given
from hypothesis import strategies as st

from fqdnpolicy.dns.snoop import DNS_FILTER, ip_payload

MESSAGE = dns.message.make_response(dns.message.make_query("allowed.example", "A")).to_wire()


def ipv4(payload: bytes, proto: int, src: str, dst: str, *, frag: int = 0) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return header + payload


def ipv6(payload: bytes, proto: int, src: str, dst: str) -> bytes:
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28, len(payload), proto, 64,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    )  # fmt: skip
    return header + payload


def udp(message: bytes, sport: int = 53, dport: int = 40000) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(message), 0) + message


def tcp(data: bytes, sport: int = 53) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, 40000, 1, 1, 5 << 4, 0x18, 1000, 0, 0) + data


def test_an_ipv4_udp_response_names_its_server_and_port() -> None:
    parsed = ip_payload(ipv4(udp(MESSAGE), 17, "198.51.100.53", "198.51.100.10"))
    assert parsed == (MESSAGE, "198.51.100.53:53", "198.51.100.10")


def test_an_ipv6_udp_response_names_its_server_in_brackets() -> None:
    parsed = ip_payload(ipv6(udp(MESSAGE), 17, "2001:db8::53", "2001:db8::10"))
    assert parsed == (MESSAGE, "[2001:db8::53]:53", "2001:db8::10")


def test_a_tcp_segment_holding_one_whole_message_is_read() -> None:
    framed = struct.pack("!H", len(MESSAGE)) + MESSAGE
    assert ip_payload(ipv4(tcp(framed), 6, "198.51.100.53", "198.51.100.10")) is not None
    assert ip_payload(ipv6(tcp(framed), 6, "2001:db8::53", "2001:db8::10")) is not None


def test_a_tcp_message_cut_across_segments_is_skipped() -> None:
    framed = struct.pack("!H", len(MESSAGE) + 10) + MESSAGE
    assert ip_payload(ipv4(tcp(framed), 6, "198.51.100.53", "198.51.100.10")) is None


def test_fragments_and_other_ports_are_skipped() -> None:
    assert ip_payload(ipv4(udp(MESSAGE), 17, "198.51.100.53", "198.51.100.10", frag=0x2000)) is None
    assert ip_payload(ipv4(udp(MESSAGE, sport=54), 17, "198.51.100.53", "198.51.100.10")) is None
    assert ip_payload(ipv4(udp(MESSAGE), 1, "198.51.100.53", "198.51.100.10")) is None


@given(st.binary(max_size=120))
def test_any_bytes_parse_or_are_skipped_without_error(data: bytes) -> None:
    ip_payload(data)
    ip_payload(ipv4(udp(data), 17, "198.51.100.53", "198.51.100.10"))
    ip_payload(ipv6(tcp(data), 6, "2001:db8::53", "2001:db8::10"))


def run_filter(frame: bytes) -> int:
    """The socket filter, interpreted: what the kernel keeps of ``frame`` (0: dropped)."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = DNS_FILTER[pc]
        pc += 1
        if code == 0x28:
            a = struct.unpack_from("!H", frame, k)[0]
        elif code == 0x30:
            a = frame[k]
        elif code == 0xB1:
            x = 4 * (frame[k] & 0x0F)
        elif code == 0x48:
            a = struct.unpack_from("!H", frame, x + k)[0]
        elif code == 0x15:
            pc += jt if a == k else jf
        elif code == 0x45:
            pc += jt if a & k else jf
        else:
            assert code == 0x06
            return k


@given(
    st.sampled_from([4, 6]),
    st.sampled_from([6, 17, 1]),
    st.sampled_from([53, 54, 5353]),
)
def test_the_kernel_filter_keeps_exactly_what_the_parser_reads(
    family: int, proto: int, sport: int
) -> None:
    l4 = (
        udp(MESSAGE, sport) if proto != 6 else tcp(struct.pack("!H", len(MESSAGE)) + MESSAGE, sport)
    )
    if family == 4:
        packet, ethertype = ipv4(l4, proto, "198.51.100.53", "198.51.100.10"), 0x0800
    else:
        packet, ethertype = ipv6(l4, proto, "2001:db8::53", "2001:db8::10"), 0x86DD
    frame = b"\x00" * 12 + struct.pack("!H", ethertype) + packet
    assert bool(run_filter(frame)) == (ip_payload(packet) is not None)
