"""Sources of DNS answers: zone files, pcap/pcapng replay and the active resolver."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.sources import (
    ActiveResolver,
    ReplayReport,
    iter_pcap_responses,
    load_zone,
    replay_pcap,
    zone_answers,
)
from fqdnpolicy.dns.wire import Extracted, Record, extract_wire
from fqdnpolicy.errors import InvalidPolicy
from tests.support import require_root, require_tool

A, CNAME, AAAA = 1, 5, 28


class Recorder:
    """A cache stand-in that records what the sources hand it."""

    def __init__(self) -> None:
        self.observed: list[tuple[Any, str, str | None]] = []
        self.ingested: list[tuple[Extracted, str | None]] = []

    def observe(
        self, response: dns.message.Message | bytes, server: str, client: str | None = None
    ) -> Sequence[Any]:
        self.observed.append((response, server, client))
        return []

    def ingest(self, extracted: Extracted, server: str | None = None) -> Sequence[Any]:
        self.ingested.append((extracted, server))
        return []


# --------------------------------------------------------------------------------------------
# Zone files
# --------------------------------------------------------------------------------------------

ZONE = """\
$ORIGIN example.test.
$TTL 60
@        IN SOA ns hostmaster 1 3600 600 86400 60
www      IN CNAME api
API  30  IN A     203.0.113.10
api      IN AAAA  2001:db8::10
loop1    IN CNAME loop2
loop2    IN CNAME loop1
*        IN A     198.51.100.1
ext      IN CNAME cdn.example.net.
txt      IN TXT   "not an address"
"""


def test_zone_answers_follow_in_zone_chains_with_each_record_ttl() -> None:
    answers = {a.qname: a for a in zone_answers(ZONE)}
    assert answers["www.example.test"].records == (
        Record("www.example.test", CNAME, 60, "api.example.test"),
        Record("api.example.test", A, 30, "203.0.113.10"),
        Record("api.example.test", AAAA, 60, "2001:db8::10"),
    )
    assert answers["ext.example.test"].records == (
        Record("ext.example.test", CNAME, 60, "cdn.example.net"),
    )
    assert all(a.is_response and a.rcode == 0 and a.opcode == 0 for a in answers.values())


def test_zone_cname_loops_stop_and_wildcards_and_other_types_are_left_out() -> None:
    answers = {a.qname: a for a in zone_answers(ZONE)}
    assert [r.value for r in answers["loop1.example.test"].records] == [
        "loop2.example.test",
        "loop1.example.test",
    ]
    assert "*.example.test" not in answers
    assert "txt.example.test" not in answers
    assert "example.test" not in answers  # only an SOA there


def test_load_zone_ingests_one_answer_per_owner_without_a_server(tmp_path: Path) -> None:
    path = tmp_path / "demo.zone"
    path.write_text(ZONE)
    sink = Recorder()
    report = load_zone(sink, path)
    assert [e.qname for e, _ in sink.ingested] == [
        "www.example.test",
        "api.example.test",
        "loop1.example.test",
        "loop2.example.test",
        "ext.example.test",
    ]
    assert {server for _, server in sink.ingested} == {None}
    assert report.answers == 5
    assert report.skipped_wildcards == 1


def test_load_zone_into_the_real_cache_resolves_chains() -> None:
    cache = DNSCache(clock=lambda: 1000.0)
    report = load_zone(cache, ZONE)
    assert cache.ips("www.example.test") == {"203.0.113.10", "2001:db8::10"}
    assert cache.ips("loop1.example.test") == set()
    assert report.changes > 0


def test_relative_zone_text_needs_an_origin() -> None:
    text = "www 60 IN A 203.0.113.7\n"
    with pytest.raises(InvalidPolicy) as info:
        list(zone_answers(text))
    assert "origin" in str(info.value)
    assert [a.qname for a in zone_answers(text, origin="example.test.")] == ["www.example.test"]


@pytest.mark.parametrize("bad", ["api 60 IN A not-an-ip", "api 60 IN BOGUS x", "api 60 IN"])
def test_zone_syntax_error_is_reported_with_its_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad.zone"
    path.write_text(f"$ORIGIN example.test.\nwww 60 IN A 203.0.113.7\n{bad}\nz 1 IN A 10.0.0.1\n")
    with pytest.raises(InvalidPolicy) as info:
        load_zone(Recorder(), path)
    problem = info.value.problem
    assert problem.file == str(path)
    assert problem.line == 3


def test_missing_zone_file_is_an_invalid_policy_not_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(InvalidPolicy) as info:
        load_zone(Recorder(), tmp_path / "absent.zone")
    assert info.value.problem.code == "io"


# --------------------------------------------------------------------------------------------
# pcap / pcapng
# --------------------------------------------------------------------------------------------


def response_wire(name: str, *ips: str, ident: int = 1) -> bytes:
    query = dns.message.make_query(name, "AAAA" if ":" in ips[0] else "A", id=ident)
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text(name, 60, "IN", "AAAA" if ":" in ips[0] else "A", *ips)
    )
    return response.to_wire()


def ipv4_packet(src: str, dst: str, proto: int, payload: bytes, frag: int = 0) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        frag,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + payload


def ipv6_packet(src: str, dst: str, proto: int, payload: bytes, hop_by_hop: bool = False) -> bytes:
    if hop_by_hop:
        payload = struct.pack("!BB6x", proto, 0) + payload
        proto = 0
    return (
        struct.pack("!IHBB", 0x60000000, len(payload), proto, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, seq: int, payload: bytes = b"", flags: int = 0x18) -> bytes:
    seq &= 0xFFFFFFFF
    return struct.pack("!HHIIHHHH", sport, dport, seq, 0, (5 << 12) | flags, 65535, 0, 0) + payload


def ethernet(ip: bytes, vlan: bool = False) -> bytes:
    ethertype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    tag = struct.pack("!HH", 0x8100, 7) if vlan else b""
    frame = b"\x02" * 6 + b"\x04" * 6 + tag + struct.pack("!H", ethertype) + ip
    return frame + b"\0" * max(0, 60 - len(frame))  # minimum frame size: padding after IP


def linux_cooked(ip: bytes) -> bytes:
    ethertype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, ethertype) + ip


def write_pcap(path: Path, link: int, frames: list[bytes], *, big_endian: bool = False) -> None:
    order = ">" if big_endian else "<"
    out = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, link)
    for i, frame in enumerate(frames):
        out += struct.pack(order + "IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame
    path.write_bytes(out)


def write_pcapng(path: Path, interfaces: list[tuple[int, list[bytes]]]) -> None:
    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    for link, _ in interfaces:
        out += block(1, struct.pack("<HHI", link, 0, 0))
    for iface, (_, frames) in enumerate(interfaces):
        for frame in frames:
            out += block(6, struct.pack("<IIIII", iface, 0, 0, len(frame), len(frame)) + frame)
    path.write_bytes(out)


def test_pcap_udp_responses_over_ethernet_and_vlan_reach_the_cache_with_their_server(
    tmp_path: Path,
) -> None:
    r1 = response_wire("a.example.", "203.0.113.1")
    r2 = response_wire("b.example.", "203.0.113.2")
    query = dns.message.make_query("a.example.", "A", id=9).to_wire()
    frames = [
        ethernet(ipv4_packet("198.51.100.1", "198.51.100.53", 17, udp(40000, 53, query))),
        ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 17, udp(53, 40000, r1))),
        ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 17, udp(53, 40001, r2)), vlan=True),
    ]
    path = tmp_path / "udp.pcap"
    write_pcap(path, 1, frames)
    sink = Recorder()
    report = replay_pcap(sink, path)
    assert sink.observed == [
        (r1, "198.51.100.53:53", "198.51.100.1:40000"),
        (r2, "198.51.100.53:53", "198.51.100.1:40001"),
    ]
    assert (report.packets, report.responses, report.skipped) == (3, 2, 1)


def test_pcap_ipv6_with_extension_header_linux_cooked_and_big_endian_file(tmp_path: Path) -> None:
    r6 = response_wire("v6.example.", "2001:db8::5")
    packet = ipv6_packet("2001:db8::53", "2001:db8::1", 17, udp(53, 5555, r6), hop_by_hop=True)
    path = tmp_path / "v6.pcap"
    write_pcap(path, 113, [linux_cooked(packet)], big_endian=True)
    assert list(iter_pcap_responses(path)) == [(r6, "[2001:db8::53]:53", "[2001:db8::1]:5555")]


def test_pcap_raw_ip_link_and_other_ports(tmp_path: Path) -> None:
    r1 = response_wire("a.example.", "203.0.113.1")
    path = tmp_path / "raw.pcap"
    write_pcap(path, 101, [ipv4_packet("127.0.0.1", "127.0.0.1", 17, udp(5353, 1000, r1))])
    assert list(iter_pcap_responses(path)) == []
    assert [m for m, _, _ in iter_pcap_responses(path, ports={5353})] == [r1]


def test_tcp_responses_are_reassembled_across_segments_and_retransmissions(
    tmp_path: Path,
) -> None:
    r1 = response_wire("a.example.", "203.0.113.1", ident=1)
    r2 = response_wire("b.example.", "203.0.113.2", ident=2)
    stream = struct.pack("!H", len(r1)) + r1 + struct.pack("!H", len(r2)) + r2
    isn = 0xFFFFFFF0  # sequence numbers wrap inside the stream
    cut1, cut2 = 5, len(r1) + 10
    segments = [
        tcp(53, 4000, isn, flags=0x12),  # SYN-ACK from the server
        tcp(53, 4000, isn + 1, stream[:cut1]),
        tcp(53, 4000, isn + 1, stream[:cut1]),  # retransmitted
        tcp(53, 4000, isn + 1 + cut1, stream[cut1:cut2]),
        tcp(53, 4000, isn + 1 + cut1 - 3, stream[cut1 - 3 : cut2 + 4]),  # overlapping resend
        tcp(53, 4000, isn + 1 + cut2 + 4, stream[cut2 + 4 :], flags=0x19),  # with FIN
    ]
    frames = [ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 6, seg)) for seg in segments]
    path = tmp_path / "tcp.pcap"
    write_pcap(path, 1, frames)
    assert [m for m, _, _ in iter_pcap_responses(path)] == [r1, r2]


def test_tcp_stream_with_a_gap_or_unseen_start_yields_nothing_false(tmp_path: Path) -> None:
    r1 = response_wire("a.example.", "203.0.113.1")
    stream = struct.pack("!H", len(r1)) + r1
    frames = [
        ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 6, tcp(53, 4000, 100, flags=0x12))),
        # bytes 0-9 of the stream never captured
        ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 6, tcp(53, 4000, 111, stream[10:]))),
        # a connection whose SYN was not captured
        ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 6, tcp(53, 4001, 5, stream))),
    ]
    path = tmp_path / "gap.pcap"
    write_pcap(path, 1, frames)
    sink = Recorder()
    report = replay_pcap(sink, path)
    assert sink.observed == []
    assert report.tcp_gaps == 1


def test_pcapng_with_two_interfaces_of_different_link_types(tmp_path: Path) -> None:
    r1 = response_wire("a.example.", "203.0.113.1")
    r2 = response_wire("b.example.", "2001:db8::2")
    path = tmp_path / "two.pcapng"
    write_pcapng(
        path,
        [
            (1, [ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 17, udp(53, 1, r1)))]),
            (101, [ipv6_packet("2001:db8::53", "2001:db8::1", 17, udp(53, 2, r2))]),
        ],
    )
    assert [(m, s) for m, s, _ in iter_pcap_responses(path)] == [
        (r1, "198.51.100.53:53"),
        (r2, "[2001:db8::53]:53"),
    ]


def test_fragments_and_snapped_packets_are_counted_not_misread(tmp_path: Path) -> None:
    r1 = response_wire("a.example.", "203.0.113.1")
    frag = ipv4_packet("198.51.100.53", "198.51.100.1", 17, udp(53, 1, r1), frag=0x2000)
    whole = ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 17, udp(53, 1, r1)))
    path = tmp_path / "odd.pcap"
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    out += struct.pack("<IIII", 0, 0, len(ethernet(frag)), len(ethernet(frag))) + ethernet(frag)
    out += struct.pack("<IIII", 0, 0, 40, len(whole)) + whole[:40]  # snap length 40
    path.write_bytes(out + struct.pack("<IIII", 0, 0, 500, 500) + b"cut")  # file cut short
    report = replay_pcap(Recorder(), path)
    assert (report.fragments, report.cut_short, report.responses) == (1, 1, 0)
    assert report.truncated_file


def _sample_capture(tmp_path: Path, pcapng: bool) -> bytes:
    r1 = response_wire("a.example.", "203.0.113.1")
    stream = struct.pack("!H", len(r1)) + r1
    frames = [
        ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 17, udp(53, 1, r1))),
        ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 6, tcp(53, 2, 9, flags=0x12))),
        ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 6, tcp(53, 2, 10, stream))),
        ethernet(ipv6_packet("2001:db8::53", "2001:db8::1", 17, udp(53, 3, r1), hop_by_hop=True)),
    ]
    path = tmp_path / "sample"
    if pcapng:
        write_pcapng(path, [(1, frames)])
    else:
        write_pcap(path, 1, frames)
    return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6))
def test_corrupted_captures_are_read_or_rejected_never_crash(
    tmp_path_factory: pytest.TempPathFactory, pcapng: bool, flips: list[tuple[int, int]]
) -> None:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    data = bytearray(_sample_capture(tmp_path, pcapng))
    for at, value in flips:
        data[at % len(data)] = value
    cut = flips[0][0] % (len(data) + 1) if flips else len(data)
    path = tmp_path / "corrupt"
    path.write_bytes(bytes(data[:cut]))
    outcome: ReplayReport | InvalidPolicy
    try:
        outcome = replay_pcap(Recorder(), path)
    except InvalidPolicy as exc:
        outcome = exc
    if isinstance(outcome, InvalidPolicy):
        assert outcome.problem.code == "bad-pcap"
    else:
        assert outcome.responses <= outcome.packets + 2  # TCP may frame several messages


def test_sample_captures_yield_every_response(tmp_path: Path) -> None:
    for pcapng in (False, True):
        (tmp_path / "sample").unlink(missing_ok=True)
        data = _sample_capture(tmp_path, pcapng)
        (tmp_path / "cap").write_bytes(data)
        report = replay_pcap(Recorder(), tmp_path / "cap")
        assert (report.packets, report.responses) == (4, 3)


def test_a_frame_missing_only_its_link_trailer_is_still_read(tmp_path: Path) -> None:
    r1 = response_wire("a.example.", "203.0.113.1")
    frame = ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 17, udp(53, 1, r1)))
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    out += struct.pack("<IIII", 0, 0, len(frame), len(frame) + 4) + frame  # FCS not captured
    path = tmp_path / "fcs.pcap"
    path.write_bytes(out)
    assert [m for m, _, _ in iter_pcap_responses(path)] == [r1]


def test_not_a_capture_is_an_invalid_policy(tmp_path: Path) -> None:
    path = tmp_path / "junk.pcap"
    path.write_bytes(b"this is not a capture file at all")
    with pytest.raises(InvalidPolicy) as info:
        replay_pcap(Recorder(), path)
    assert info.value.problem.code == "bad-pcap"


def test_pcap_replay_into_the_real_cache_learns_only_from_trusted_servers(tmp_path: Path) -> None:
    r1 = response_wire("a.example.", "203.0.113.1")
    r2 = response_wire("b.example.", "203.0.113.2")
    frames = [
        ethernet(ipv4_packet("198.51.100.53", "198.51.100.1", 17, udp(53, 1, r1))),
        ethernet(ipv4_packet("198.51.100.66", "198.51.100.1", 17, udp(53, 1, r2))),
    ]
    path = tmp_path / "trust.pcap"
    write_pcap(path, 1, frames)
    cache = DNSCache(trusted_servers=["198.51.100.53"], clock=lambda: 10.0)
    report = replay_pcap(cache, path)
    assert report.responses == 2
    assert cache.ips("a.example") == {"203.0.113.1"}
    assert cache.ips("b.example") == set()


@pytest.mark.kernel
def test_tcpdump_capture_of_real_dns_traffic_replays(tmp_path: Path, dnsmasq: DnsServer) -> None:
    require_root()  # capturing on lo
    tcpdump = require_tool("tcpdump")
    path = tmp_path / "real.pcap"
    proc = subprocess.Popen(
        # immediate mode: without it this VM's tcpdump delivered nothing before being stopped;
        # -Z root: the pytest tmp_path is not writable for the user tcpdump switches to
        [
            tcpdump,
            "-i",
            "lo",
            "--immediate-mode",
            "-U",
            "-Z",
            "root",
            "-w",
            str(path),
            "udp",
            "port",
            str(dnsmasq.port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        proc.stderr.readline()  # "listening on lo ..." once capturing
        for _ in range(3):
            query = dns.message.make_query("api.example.test", "A")
            dns.query.udp(query, "127.0.0.1", port=dnsmasq.port, timeout=2)
        time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    responses = list(iter_pcap_responses(path, ports={dnsmasq.port}))
    assert len(responses) == 3
    for message, server, _ in responses:
        assert server == f"127.0.0.1:{dnsmasq.port}"
        assert {r.value for r in extract_wire(message).records} == {"203.0.113.10"}


# --------------------------------------------------------------------------------------------
# Active resolver against a real DNS server (dnsmasq)
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_sock:
        udp_sock.bind(("127.0.0.1", 0))
        port: int = udp_sock.getsockname()[1]
    return port


class DnsServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"


@pytest.fixture
def dnsmasq() -> Iterator[DnsServer]:
    binary = require_tool("dnsmasq")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "-k",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-poll",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={port}",
            "--local=/example.test/",
            "--host-record=api.example.test,203.0.113.10,2001:db8:203::10,5",
            "--cname=www.example.test,api.example.test,4",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 5
        while True:  # ready when it answers
            try:
                query = dns.message.make_query("api.example.test", "A")
                dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"dnsmasq did not start: {err}")
        yield DnsServer(port)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.mark.kernel
def test_resolver_learns_a_cname_chain_and_both_address_families(dnsmasq: DnsServer) -> None:
    cache = DNSCache(trusted_servers=[dnsmasq.address], min_ttl=0)
    resolver = ActiveResolver(cache, [dnsmasq.address], ["WWW.example.test."], timeout=2)
    assert resolver.refresh_due() == 2  # A and AAAA
    assert cache.ips("www.example.test") == {"203.0.113.10", "2001:db8:203::10"}
    assert cache.ips("api.example.test") == {"203.0.113.10", "2001:db8:203::10"}
    assert resolver.stats.answers == 2
    assert resolver.stats.timeouts == resolver.stats.failures == 0


@pytest.mark.kernel
def test_resolver_asks_again_before_the_smallest_ttl_runs_out(dnsmasq: DnsServer) -> None:
    now = [100.0]
    sink = Recorder()
    resolver = ActiveResolver(
        sink, [dnsmasq.address], ["www.example.test"], rdtypes=["A"], clock=lambda: now[0]
    )
    assert resolver.next_refresh() == 100.0
    resolver.refresh_due()
    message, server, _ = sink.observed[0]
    assert server == dnsmasq.address
    assert isinstance(message, dns.message.Message)
    # CNAME TTL 4, A TTL 5: asked again after 0.8 * 4 s, before the chain expires
    assert resolver.next_refresh() == pytest.approx(100.0 + 0.8 * 4)
    now[0] = 103.0
    assert resolver.refresh_due() == 0
    now[0] = 103.3
    assert resolver.refresh_due() == 1
    assert len(sink.observed) == 2


@pytest.mark.kernel
def test_resolver_run_loop_stops_on_the_event(dnsmasq: DnsServer) -> None:
    sink = Recorder()
    resolver = ActiveResolver(sink, [dnsmasq.address], ["api.example.test"], rdtypes=["A"])
    stop = threading.Event()
    thread = threading.Thread(target=resolver.run, args=(stop,), kwargs={"idle": 0.05})
    thread.start()
    deadline = time.monotonic() + 5
    while not sink.observed and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert sink.observed


@pytest.mark.kernel
def test_resolver_falls_back_to_the_next_nameserver(dnsmasq: DnsServer) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: the query times out
    sink = Recorder()
    resolver = ActiveResolver(
        sink, [dead, dnsmasq.address], ["api.example.test"], rdtypes=["A"], timeout=0.3
    )
    resolver.refresh_due()
    assert [server for _, server, _ in sink.observed] == [dnsmasq.address]


def test_resolver_counts_timeouts_and_never_raises() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # receives, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        now = [0.0]
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        resolver = ActiveResolver(
            Recorder(),
            [address],
            ["a.example"],
            rdtypes=["A"],
            timeout=0.05,
            retry_interval=7,
            clock=lambda: now[0],
        )
        assert resolver.refresh_due() == 1
        assert resolver.stats.timeouts == 1
        assert resolver.next_refresh() == 7.0
    finally:
        silent.close()


def test_resolver_counts_garbage_answers_as_failures() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))

    def answer_with_junk() -> None:
        _, client = server.recvfrom(512)
        server.sendto(b"junk", client)

    thread = threading.Thread(target=answer_with_junk)
    thread.start()
    try:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        resolver = ActiveResolver(Recorder(), [address], ["a.example"], rdtypes=["A"], timeout=2)
        assert resolver.refresh_due() == 1
        assert resolver.stats.failures == 1
        assert resolver.stats.answers == 0
    finally:
        thread.join(timeout=5)
        server.close()


def test_set_names_keeps_schedules_of_kept_names_and_adds_new_ones_due_now() -> None:
    now = [0.0]
    resolver = ActiveResolver(
        Recorder(), ["127.0.0.1"], ["a.example"], rdtypes=["A"], clock=lambda: now[0]
    )
    now[0] = 50.0
    resolver.set_names(["A.example.", "b.example"])
    assert resolver.names == {"a.example", "b.example"}
    assert resolver.next_refresh() == 0.0
    resolver.set_names("c.example")
    assert resolver.names == {"c.example"}


@pytest.mark.parametrize(
    ("servers", "field"),
    [(["not-an-ip"], "nameservers[0]"), (["127.0.0.1:0"], "nameservers[0]"), ([], "nameservers")],
)
def test_bad_resolver_settings_are_invalid_policy(servers: list[str], field: str) -> None:
    with pytest.raises(InvalidPolicy) as info:
        ActiveResolver(Recorder(), servers, [])
    assert info.value.problem.path == field


def test_nameserver_forms_are_accepted() -> None:
    for text in ("10.96.0.10", "127.0.0.1:5353", "[2001:db8::1]:53", "[::1]", "::1"):
        ActiveResolver(Recorder(), [text], [])
