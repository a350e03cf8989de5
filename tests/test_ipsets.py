"""The address index answers "which sets contain this address" like a brute-force scan."""

from __future__ import annotations

import ipaddress
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.ipsets import AddressIndex


def test_overlapping_prefixes_belong_to_both_sets() -> None:
    index = AddressIndex()
    index.add_prefix(1, ipaddress.ip_network("10.0.0.0/8"))
    index.add_prefix(2, ipaddress.ip_network("10.1.0.0/16"))
    assert index.lookup("10.1.2.3") == {1, 2}
    assert index.lookup("10.2.0.1") == {1}
    assert index.lookup("11.0.0.1") == set()


def test_families_are_kept_apart() -> None:
    index = AddressIndex()
    index.add_prefix(1, ipaddress.ip_network("::/0"))
    assert index.lookup("10.0.0.1") == set()
    assert index.lookup("2001:db8::1") == {1}


def test_host_members_merge_with_covering_prefixes_added_later() -> None:
    index = AddressIndex()
    index.add_host(7, "198.51.100.10")
    assert index.lookup("198.51.100.10") == {7}
    index.add_prefix(1, ipaddress.ip_network("198.51.100.0/24"))
    assert index.lookup("198.51.100.10") == {1, 7}
    index.remove_prefix(1, ipaddress.ip_network("198.51.100.0/24"))
    assert index.lookup("198.51.100.10") == {7}


def test_a_member_stays_until_its_last_source_goes() -> None:
    index = AddressIndex()
    assert index.add_host(3, "203.0.113.5") is True
    assert index.add_host(3, "203.0.113.5") is False  # a second DNS name, same IP
    assert index.remove_host(3, "203.0.113.5") is False
    assert index.lookup("203.0.113.5") == {3}
    assert index.remove_host(3, "203.0.113.5") is True
    assert index.lookup("203.0.113.5") == set()


def test_equal_answers_are_one_object() -> None:
    index = AddressIndex()
    index.add_host(1, "10.0.0.1")
    index.add_host(1, "10.0.0.2")
    assert index.lookup("10.0.0.1") is index.lookup("10.0.0.2")


def test_invalid_address_is_in_no_set() -> None:
    assert AddressIndex().lookup("not-an-ip") == set()


def test_answer_is_known_only_for_members_and_addresses_looked_up_before() -> None:
    index = AddressIndex()
    index.add_prefix(1, ipaddress.ip_network("10.0.0.0/8"))
    index.add_host(2, "10.0.0.5")
    assert index.answer("10.0.0.5") == frozenset({1, 2})  # a member: its text is canonical
    assert index.answer("10.0.0.6") is None  # never seen: the caller canonicalises
    assert index.lookup("10.0.0.6") == {1}
    assert index.answer("10.0.0.6") == frozenset({1})  # looked up before: now known


def test_a_cached_non_member_answer_follows_later_changes() -> None:
    index = AddressIndex()
    assert index.lookup("10.0.0.6") == set()
    index.add_host(3, "10.0.0.6")
    assert index.answer("10.0.0.6") == frozenset({3})
    index.add_prefix(1, ipaddress.ip_network("10.0.0.0/24"))
    assert index.answer("10.0.0.6") == frozenset({1, 3})
    index.remove_host(3, "10.0.0.6")
    assert index.answer("10.0.0.6") in (None, frozenset({1}))  # never a stale answer
    assert index.lookup("10.0.0.6") == {1}


def test_host_outside_reads_sets_and_covering_prefixes_in_place() -> None:
    index = AddressIndex()
    index.add_host(7, "198.51.100.10")
    index.add_prefix(1, ipaddress.ip_network("198.51.100.0/24"))
    assert index.host_outside("198.51.100.10", frozenset({2, 3}))
    assert not index.host_outside("198.51.100.10", frozenset({7}))  # its own set
    assert not index.host_outside("198.51.100.10", frozenset({1}))  # a covering prefix
    # No member: canonical IPv4 text is judged by its covering prefixes alone ...
    assert index.host_outside("198.51.100.11", frozenset({2}))
    assert not index.host_outside("198.51.100.11", frozenset({1}))
    # ... other text is not known to be canonical without parsing: never "outside".
    assert not index.host_outside("198.51.100.011", frozenset({2}))
    assert not index.host_outside("2001:db8::1", frozenset({2}))
    assert not index.answers  # nothing was cached


def test_version_moves_with_every_change_of_an_answer_and_only_then() -> None:
    index = AddressIndex()
    seen = [index.version]

    def moved() -> bool:
        seen.append(index.version)
        return seen[-1] != seen[-2]

    index.add_host(1, "10.0.0.1")
    assert moved()
    index.add_host(1, "10.0.0.1")  # a second source of the same member
    assert not moved()
    index.remove_host(1, "10.0.0.1")
    assert not moved()
    index.remove_host(1, "10.0.0.1")
    assert moved()
    index.add_prefix(2, ipaddress.ip_network("10.0.0.0/8"))
    assert moved()


# -- property: the index equals a brute-force scan after any sequence of changes -----------

PREFIXES = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "192.0.2.0/24",
    "::/0",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:1::5/128",
]
HOSTS = [
    "10.1.2.3",
    "10.1.9.9",
    "10.200.0.1",
    "192.0.2.7",
    "8.8.8.8",
    "2001:db8:1::5",
    "2001:db8:2::1",
    "fd00::1",
]

ID_PICKS = [frozenset(), frozenset({0}), frozenset({1, 2}), frozenset({3, 4}), frozenset(range(5))]

operations = st.lists(
    st.tuples(
        st.sampled_from(["add_prefix", "remove_prefix", "add_host", "remove_host"]),
        st.integers(0, 4),
        st.integers(0, 9),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_index_matches_brute_force(ops: list[tuple[str, int, int]]) -> None:
    index = AddressIndex()
    prefixes: Counter[tuple[int, str]] = Counter()
    hosts: Counter[tuple[int, str]] = Counter()
    for op, set_id, which in ops:
        if op.endswith("prefix"):
            prefix = PREFIXES[which % len(PREFIXES)]
            if op == "add_prefix":
                index.add_prefix(set_id, ipaddress.ip_network(prefix))
                prefixes[(set_id, prefix)] += 1
            elif prefixes[(set_id, prefix)]:
                index.remove_prefix(set_id, ipaddress.ip_network(prefix))
                prefixes[(set_id, prefix)] -= 1
        else:
            host = HOSTS[which % len(HOSTS)]
            if op == "add_host":
                index.add_host(set_id, host)
                hosts[(set_id, host)] += 1
            elif hosts[(set_id, host)]:
                index.remove_host(set_id, host)
                hosts[(set_id, host)] -= 1
        for address in HOSTS:
            ip = ipaddress.ip_address(address)
            expected = {s for (s, p), n in prefixes.items() if n and ip in ipaddress.ip_network(p)}
            expected |= {s for (s, h), n in hosts.items() if n and h == address}
            assert index.lookup(address) == expected, (address, ops)
            assert index.answer(address) == frozenset(expected), (address, ops)
            # What a lock-free reader asks of a member host: in none of these sets?
            member = any(n and h == address for (_, h), n in hosts.items())
            canonical = member or ":" not in address  # (every IPv4 text here is canonical)
            for ids in ID_PICKS:
                outside = canonical and expected.isdisjoint(ids)
                assert index.host_outside(address, ids) == outside, (address, ids, ops)
