"""DNS snooping on a real kernel: the lab's dnsmasq answers, the snooper learns from the wire."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.snoop import Snooper
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.testing.lab import DNS_SERVER, HostRecord, Lab
from tests.kernel import load

pytestmark = pytest.mark.kernel
WAIT = 10.0
WEB = "default/web"
V6_SERVER = "2001:db8:203::53"
ECHO = """
import socket, struct, sys
import dns.message
msg = dns.message.make_response(dns.message.make_query("v6.example.test", "AAAA"))
msg.answer.append(__import__("dns.rrset").rrset.from_text(
    "v6.example.test.", 30, "IN", "AAAA", "2001:db8:203::77"))
wire = msg.to_wire()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(2); u.sendto(wire, (sys.argv[1], 53)); u.recv(2048)
t = socket.create_connection((sys.argv[1], 53), timeout=2)
assert t.recv(2) == b"ok"
t.sendall(struct.pack("!H", len(wire)) + wire); t.recv(2048); t.close()
"""

ECHO_OTHER_PORT = """
import socket
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(2)
for _ in range(5):
    u.sendto(b"x" * 40, ("ADDRESS", 5353)); u.recv(2048)
"""


def until(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    from tests.support import require_root, require_tool

    require_root()
    require_tool("dnsmasq")
    records = [HostRecord("allowed.example.test", ("203.0.113.10",), 30)]
    with Lab([(WEB, "fqsweb0")], [V6_SERVER], [53], [53, 5353], records, prefix="fqs") as lab:
        yield lab


def test_a_resolved_name_is_learned_from_the_wire(lab: Lab) -> None:
    cache = DNSCache(trusted_servers=[DNS_SERVER])
    with Snooper(cache, ["fqsweb0"], netns=lab.host) as snooper:
        lab.resolve(WEB, ["allowed.example.test"])
        assert until(lambda: cache.ips("allowed.example.test") == {"203.0.113.10"})
        assert snooper.stats().responses >= 1


def test_an_untrusted_server_is_read_but_not_learned(lab: Lab) -> None:
    cache = DNSCache(trusted_servers=["198.51.100.99"])
    with Snooper(cache, ["fqsweb0", "fpsrv"], netns=lab.host) as snooper:
        lab.resolve(WEB, ["allowed.example.test"])
        assert until(lambda: cache.stats.untrusted >= 1)
        assert snooper.stats().responses >= 2  # both interfaces saw it
    assert len(cache) == 0


def test_ipv6_over_udp_and_tcp_is_learned_and_other_ports_never_reach_user_space(
    lab: Lab,
) -> None:
    cache = DNSCache(trusted_servers=[V6_SERVER])
    with Snooper(cache, ["fqsweb0"], netns=lab.host) as snooper:
        subprocess.run(
            ["ip", "netns", "exec", lab.namespace_of(WEB), sys.executable, "-c", ECHO, V6_SERVER],
            check=True,
            capture_output=True,
            timeout=30,
        )
        assert until(lambda: cache.ips("v6.example.test") == {"2001:db8:203::77"})
        # UDP and TCP answers, both from port 53; the queries to port 53 never pass the filter.
        assert until(lambda: snooper.stats().responses == 2)


def test_the_kernel_filter_passes_only_port_53(lab: Lab) -> None:
    cache = DNSCache(trusted_servers=[DNS_SERVER])
    with Snooper(cache, ["fqsweb0"], netns=lab.host) as snooper:
        other = ECHO_OTHER_PORT.replace("ADDRESS", V6_SERVER)
        subprocess.run(
            ["ip", "netns", "exec", lab.namespace_of(WEB), sys.executable, "-c", other],
            check=True,
            capture_output=True,
            timeout=30,
        )
        lab.resolve(WEB, ["allowed.example.test"])  # queued behind the echoes, if they passed
        assert until(lambda: snooper.stats().responses == 2)  # A and AAAA
        assert snooper.stats().packets == 2


def test_a_missing_interface_is_refused_by_name(lab: Lab) -> None:
    with pytest.raises(InvalidPolicy, match="no-such0"):
        Snooper(DNSCache(), ["no-such0"], netns=lab.host)


def test_interfaces_can_come_and_go_while_snooping(lab: Lab) -> None:
    cache = DNSCache(trusted_servers=[DNS_SERVER])
    with Snooper(cache, [], netns=lab.host) as snooper:
        snooper.add_interface("fqsweb0")
        lab.resolve(WEB, ["allowed.example.test"])
        assert until(lambda: cache.ips("allowed.example.test") == {"203.0.113.10"})
        snooper.remove_interface("fqsweb0")
        assert snooper.interfaces() == []
        seen = snooper.stats().packets
        lab.resolve(WEB, ["allowed.example.test"])
        time.sleep(0.2)
        assert snooper.stats().packets == seen


def test_responses_the_kernel_drops_when_reading_falls_behind_are_counted() -> None:
    # A subscriber that blocks stops the reading thread inside observe_many; with the
    # smallest receive buffer the kernel drops most of a burst, and says how many.
    from tests.support import require_root

    require_root()
    cache = DNSCache(trusted_servers=[load.SENDER_IP])
    release = threading.Event()

    def blocking(changes: object) -> None:
        release.wait(WAIT)

    cache.subscribe(blocking)
    sent = 2000
    with load.pair() as (node, other):
        snooper = Snooper(cache, [load.NODE_IF], netns=node, buffer_bytes=1)
        try:
            proc = load.sender(other, sent, 20_000)
            assert proc.stdout is not None
            proc.stdout.readline()  # the start time
            assert proc.stdout.readline().strip() == "done"
            assert proc.wait(timeout=30) == 0
            release.set()
            assert until(lambda: snooper.stats().packets + snooper.stats().dropped == sent)
            assert snooper.stats().dropped > 0
        finally:
            release.set()
            snooper.close()
    assert snooper.stats().packets + snooper.stats().dropped == sent


@pytest.mark.parametrize("how", [["del"], ["set", "down"]])
def test_an_interface_gone_while_snooped_is_dropped_and_the_others_read_on(
    how: list[str],
) -> None:
    # A pod deleted while the agent was down: no CNI DEL, its host-side veth just goes (or
    # is taken down first).
    from tests.support import require_root

    require_root()
    cache = DNSCache(trusted_servers=[load.SENDER_IP])
    with load.pair() as (node, other):
        gone = "fqsg0"
        for argv in (
            ["ip", "-n", node, "link", "add", gone, "type", "veth", "peer", "name", "fqsg1"],
            ["ip", "-n", node, "link", "set", gone, "up"],
            ["ip", "-n", node, "link", "set", "fqsg1", "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        with Snooper(cache, [load.NODE_IF, gone], netns=node) as snooper:
            subprocess.run(
                ["ip", "-n", node, "link", *how[:1], gone, *how[1:]],
                check=True,
                capture_output=True,
                timeout=30,
            )
            assert until(lambda: snooper.stats().lost == 1)
            assert snooper.interfaces() == [load.NODE_IF]
            proc = load.sender(other, 3, 100)
            proc.communicate(timeout=30)
            assert proc.returncode == 0
            assert until(lambda: cache.ips("n2.bench.example") == {load.address(2)})
            assert snooper.stats().responses == 3
