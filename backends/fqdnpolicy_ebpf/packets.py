"""Packets for ``BPF_PROG_TEST_RUN``: Ethernet frames of one IPv4/IPv6 TCP, UDP or ICMP packet.

Used by ``fqdnpolicy bench --backend ebpf``, the benchmarks and the tests to ask the loaded
program for verdicts without sending anything anywhere.
"""

from __future__ import annotations

import socket
import struct

from fqdnpolicy_ebpf import libbpf
from fqdnpolicy_ebpf.build import PROGRAMS

__all__ = ["TC_ACT_OK", "TC_ACT_SHOT", "frame", "run_program"]

TC_ACT_OK = 0
TC_ACT_SHOT = 2
_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
_MACS = bytes.fromhex("02fd00000002") + bytes.fromhex("02fd00000001")


def frame(
    src: str,
    dst: str,
    protocol: str,
    *,
    sport: int = 40000,
    dport: int = 0,
    icmp_type: int = 8,
    icmp_code: int = 0,
    ident: int = 7,
    tcp_flags: int = 0,
) -> bytes:
    """An Ethernet frame of one packet (``protocol``: tcp, udp, icmp or icmpv6).

    For ICMP the identifier ``ident`` sits where an echo's is; ``tcp_flags`` is the TCP
    header's flags byte (0x02 SYN, 0x10 ACK).
    """
    v6 = ":" in src
    proto = _PROTOCOLS[protocol]
    if protocol == "tcp":
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, tcp_flags, 0, 0, 0)
    elif protocol == "udp":
        l4 = struct.pack("!HH", sport, dport) + bytes(4)
    else:
        l4 = struct.pack("!BBHHH", icmp_type, icmp_code, 0, ident, 1) + bytes(8)
    if v6:
        af = socket.AF_INET6
        header = struct.pack("!IHBB", 6 << 28, len(l4), proto, 64)
        header += socket.inet_pton(af, src) + socket.inet_pton(af, dst)
        return _MACS + b"\x86\xdd" + header + l4
    af = socket.AF_INET
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0)
    header += socket.inet_pton(af, src) + socket.inet_pton(af, dst)
    return _MACS + b"\x08\x00" + header + l4


def run_program(
    programs: dict[str, int], direction: int, packet: bytes, repeat: int = 1
) -> tuple[int, int]:
    """Run the program of a direction (0: from the workload) on a packet, in the kernel.

    The packet arrives on the loopback interface (ifindex 1) of the caller's namespace, so
    the rule table judging it is the one of an endpoint whose interface is ``lo``.

    Returns:
        The verdict (:data:`TC_ACT_OK` or :data:`TC_ACT_SHOT`) and the mean ns per run.
    """
    return libbpf.test_run(programs[PROGRAMS[direction]], packet, repeat)
