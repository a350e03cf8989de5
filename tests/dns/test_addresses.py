"""Which addresses the cache holds: one rule at every entry point, counted when it rejects."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fqdnpolicy.dns import DNSCache, DNSLink
from fqdnpolicy.dns.addresses import address_problem, suspect
from fqdnpolicy.dns.persist import FORMAT, VERSION
from fqdnpolicy.dns.sources import load_zone
from tests.dns.helpers import AAAA, CNAME, A, FakeClock, answer, message

WALL = 1_700_000_000.0

# What a resolver could return that no datapath set should hold, and why.
UNHELD = {
    "fe80::1%eth0": "zone index",
    "2001:db8::1%2": "zone index",
    "fe80::1": "link-local",
    "febf::1": "link-local",
    "::1": "loopback",
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "224.0.0.251": "multicast",
    "239.1.2.3": "multicast",
    "ff02::1": "multicast",
    "ff0e::1:3": "multicast",
    "255.255.255.255": "broadcast",
    "::ffff:102:304": "IPv4-mapped",
}
# Look alike, or are rare, but are real destinations a name can stand for.
HELD = [
    "10.0.0.1",
    "169.254.169.254",  # cloud metadata services
    "169.254.20.10",  # node-local DNS caches
    "192.168.1.1",
    "100.64.0.1",
    "240.0.0.1",
    "255.255.255.254",
    "2001:db8::1",
    "fd00:ec2::254",
    "fec0::1",
    "64:ff9b::102:304",  # NAT64
    "::102:304",
    "::1:0",
]


def family(ip: str) -> int:
    return AAAA if ":" in ip else A


@pytest.mark.parametrize(("ip", "why"), sorted(UNHELD.items()))
def test_the_rule_rejects_addresses_the_datapath_cannot_hold_and_says_why(
    ip: str, why: str
) -> None:
    problem = address_problem(ip)
    assert problem is not None
    assert why in problem
    assert suspect(ip)


@pytest.mark.parametrize("ip", HELD)
def test_the_rule_keeps_every_other_address(ip: str) -> None:
    assert address_problem(ip) is None


@pytest.mark.parametrize(
    "text", ["FE80::1", "not an ip", "010.0.0.1", "2001:DB8::1", "1.2.3.4 ", "", "::ffff:1.2.3.4"]
)
def test_the_rule_rejects_text_that_is_no_canonical_address(text: str) -> None:
    assert address_problem(text) is not None


@given(st.ip_addresses())
def test_the_quick_check_flags_every_canonical_address_the_rule_rejects(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    text = str(ip)
    if address_problem(text) is not None:
        assert suspect(text)


@pytest.mark.parametrize("ip", sorted(UNHELD))
def test_an_answer_never_teaches_such_an_address_and_counts_it(ip: str) -> None:
    cache = DNSCache(clock=FakeClock(0))
    changes = cache.ingest(
        answer(
            "q.example",
            ("q.example", CNAME, 60, "t.example"),
            ("t.example", family(ip), 60, ip),
            ("t.example", A, 60, "10.0.0.1"),
        )
    )
    assert {c.ip for c in changes} == {"10.0.0.1"}
    assert cache.ips("q.example") == {"10.0.0.1"}
    assert cache.stats.unsupported_address == 1
    assert cache.stats.zero_address == 0


@pytest.mark.parametrize("ip", sorted(UNHELD))
def test_a_new_name_with_only_such_an_address_learns_nothing(ip: str) -> None:
    cache = DNSCache(clock=FakeClock(0))
    assert cache.ingest(answer("q.example", ("q.example", family(ip), 60, ip))) == []
    assert cache.names() == set()
    assert cache.stats.unsupported_address == 1


@pytest.mark.parametrize("ip", HELD)
def test_answers_teach_every_held_address(ip: str) -> None:
    cache = DNSCache(clock=FakeClock(0))
    cache.ingest(answer("q.example", ("q.example", family(ip), 60, ip)))
    assert cache.ips("q.example") == {ip}


@pytest.mark.parametrize("ip", ["127.0.0.1", "fe80::1", "ff02::1", "::ffff:102:304"])
def test_wire_responses_are_held_to_the_same_rule(ip: str) -> None:
    cache = DNSCache(clock=FakeClock(0), trusted_servers=["10.96.0.10"])
    response = message("q.example.", ("q.example.", "AAAA" if ":" in ip else "A", 60, ip))
    for data in (response.to_wire(), response):
        cache.observe(data, server="10.96.0.10:53")
    assert cache.names() == set()
    assert cache.stats.unsupported_address == 2


def test_a_zone_file_is_held_to_the_same_rule(tmp_path: Path) -> None:
    zone = tmp_path / "example.zone"
    zone.write_text(
        "$ORIGIN example.\n"
        "$TTL 60\n"
        "@ IN SOA ns hostmaster 1 60 60 60 60\n"
        "local IN A 127.0.0.1\n"
        "link IN AAAA fe80::1\n"
        "group IN AAAA ff02::1\n"
        "real IN A 10.0.0.1\n"
    )
    cache = DNSCache(clock=FakeClock(0))
    load_zone(cache, zone)
    assert cache.names() == {"real.example"}
    assert cache.stats.unsupported_address == 3


@pytest.mark.parametrize("ip", sorted(UNHELD))
def test_a_cache_file_line_with_such_an_address_is_skipped_with_its_reason(
    tmp_path: Path, ip: str
) -> None:
    header = {"format": FORMAT, "version": VERSION, "epoch": 0, "features": ["cname"]}
    lines = [
        json.dumps(header),
        json.dumps({"name": "bad.example", "ip": ip, "expires": WALL + 100}),
        json.dumps({"name": "good.example", "ip": "10.0.0.1", "expires": WALL + 100}),
    ]
    path = tmp_path / "cache"
    path.write_text("\n".join(lines) + "\n")
    clock = FakeClock(0)
    cache = DNSCache(clock=clock, wall_clock=lambda: clock.now + WALL)
    report = cache.load(str(path))
    assert report.restored == 1
    assert [s.line for s in report.skipped] == [2]
    assert UNHELD[ip] in report.skipped[0].reason
    assert cache.names() == {"good.example"}


def test_restore_is_held_to_the_same_rule_and_counts_what_it_skips() -> None:
    cache = DNSCache(clock=FakeClock(0))
    links = [DNSLink("q.example", ip, False, 50.0) for ip in sorted(UNHELD)]
    links += [
        DNSLink("q.example", "FE80::1", False, 50.0),
        DNSLink("q.example", "10.0.0.1", False, 50.0),
    ]
    cache.restore(links)
    assert cache.ips("q.example") == {"10.0.0.1"}
    assert cache.stats.unsupported_address == len(UNHELD) + 1
