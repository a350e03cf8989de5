"""Host ranges find exactly the held hosts a prefix covers, however arrivals and departures
interleave with the searches (a brute-force scan of the held set is the reference)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.engine import hostranges
from fqdnpolicy.engine.hostranges import HostRanges

# Canonical text, as the address table holds hosts.
ADDRESSES = [f"198.51.100.{k}" for k in range(0, 256, 16)] + [
    str(ipaddress.ip_address(f"2001:db8::{k:x}")) for k in range(0, 256, 32)
]
NETS = [
    ipaddress.ip_network(n)
    for n in (
        *("198.51.100.0/24", "198.51.100.0/26", "198.51.100.128/25", "198.51.100.64/32"),
        *("2001:db8::/120", "2001:db8::80/121", "2001:db8::/32"),
    )
]


def covered(held: set[str], net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    inside = [a for a in held if ipaddress.ip_address(a) in net]
    return sorted(inside, key=lambda a: int(ipaddress.ip_address(a)))


@pytest.mark.parametrize("limit", [1, 3, hostranges.PENDING_LIMIT], ids=["1", "3", "default"])
@settings(max_examples=200, deadline=None)
@given(
    start=st.sets(st.sampled_from(ADDRESSES)),
    steps=st.lists(st.one_of(st.sampled_from(ADDRESSES), st.sampled_from(NETS)), max_size=40),
)
def test_within_gives_the_held_hosts_inside_a_prefix(
    limit: int,
    start: set[str],
    steps: list[str | ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    # An address step toggles it (arrives when not held, departs when held); a prefix step
    # searches. A small limit makes the pending changes catch up between searches too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hostranges, "PENDING_LIMIT", limit)
        ranges = HostRanges(start)
        held = set(start)
        for step in steps:
            if isinstance(step, str):
                if step in held:
                    held.discard(step)
                    ranges.discard(step)
                else:
                    held.add(step)
                    ranges.add(step)
            else:
                assert list(ranges.within(step)) == covered(held, step)
        for net in NETS:
            assert list(ranges.within(net)) == covered(held, net)


def test_arrivals_and_departures_wait_for_a_search_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hostranges, "PENDING_LIMIT", 4)
    ranges = HostRanges([])
    for k in range(3):
        ranges.add(f"198.51.100.{k}")
    assert len(ranges._added) == 3  # pending: a DNS answer pays one set insertion
    ranges.add("198.51.100.3")
    assert not ranges._added  # the bound reached: taken in
    assert list(ranges.within(ipaddress.ip_network("198.51.100.0/30"))) == [
        f"198.51.100.{k}" for k in range(4)
    ]
