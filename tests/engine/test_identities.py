"""The address table gives every address the identity a brute-force scan would: its family,
the sets holding it (own memberships and covering prefixes) and its endpoint's named ports."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.cluster import NamedPort
from fqdnpolicy.engine.identities import (
    INLINE_BITS,
    AddressTable,
    Identity,
    canonical_ip,
    folded,
    identity_of,
    signature_bits,
    signature_mask,
)
from fqdnpolicy.errors import InvalidPolicy


def settled(table: AddressTable) -> AddressTable:
    table.settle()
    return table


def test_overlapping_prefixes_belong_to_both_sets() -> None:
    table = AddressTable()
    table.add_prefix(1, ipaddress.ip_network("203.0.113.0/24"))
    table.add_prefix(2, ipaddress.ip_network("203.0.113.12/32"))
    settled(table)
    assert table.sets_of("203.0.113.12") == {1, 2}
    assert table.sets_of("203.0.113.13") == {1}
    assert table.sets_of("198.51.100.1") == set()


def test_families_are_kept_apart() -> None:
    table = settled(AddressTable())
    table.add_prefix(1, ipaddress.ip_network("::/0"))
    settled(table)
    assert table.sets_of("10.0.0.1") == set()
    assert table.sets_of("2001:db8::1") == {1}
    assert table.identity("2001:db8::1").family == 6


def test_host_members_merge_with_covering_prefixes_added_later() -> None:
    table = AddressTable()
    table.add_host(7, "198.51.100.10")
    assert settled(table).sets_of("198.51.100.10") == {7}
    table.add_prefix(1, ipaddress.ip_network("198.51.100.0/24"))
    assert settled(table).sets_of("198.51.100.10") == {1, 7}
    table.remove_prefix(1, ipaddress.ip_network("198.51.100.0/24"))
    assert settled(table).sets_of("198.51.100.10") == {7}


def test_a_member_stays_until_its_last_source_goes() -> None:
    table = AddressTable()
    assert table.add_host(3, "203.0.113.5") is True
    assert table.add_host(3, "203.0.113.5") is False  # a second endpoint with the address
    assert table.remove_host(3, "203.0.113.5") is False
    assert settled(table).sets_of("203.0.113.5") == {3}
    assert table.remove_host(3, "203.0.113.5") is True
    assert settled(table).sets_of("203.0.113.5") == set()
    assert "203.0.113.5" not in table.hosts


def test_nothing_is_published_before_settle() -> None:
    table = AddressTable()
    table.add_host(1, "10.0.0.1")
    assert "10.0.0.1" not in table.hosts
    settled(table)
    assert table.hosts["10.0.0.1"].sets == {1}


def test_equal_identities_are_one_object_and_endpoints_carry_their_ports() -> None:
    table = AddressTable()
    table.add_host(1, "10.0.0.1")
    table.add_host(1, "10.0.0.2")
    table.set_endpoint("10.0.0.3", (NamedPort("http", 8080),))
    settled(table)
    assert table.hosts["10.0.0.1"] is table.hosts["10.0.0.2"]
    assert table.hosts["10.0.0.1"].ports is None
    assert table.hosts["10.0.0.3"].ports == (NamedPort("http", 8080),)
    table.set_endpoint("10.0.0.3", None)
    assert "10.0.0.3" not in settled(table).hosts


def test_settle_records_what_each_store_replaced_once() -> None:
    table = AddressTable()
    table.add_host(1, "10.0.0.1")
    settled(table)
    first = table.hosts["10.0.0.1"]
    before: dict[str, Identity | None] = {}
    table.add_host(2, "10.0.0.1")
    table.add_host(2, "10.0.0.9")
    table.settle(before)
    table.remove_host(1, "10.0.0.1")
    table.settle(before)
    assert before == {"10.0.0.1": first, "10.0.0.9": None}


def test_a_prefix_change_publishes_a_new_table_and_leaves_the_old_one_whole() -> None:
    table = settled(AddressTable())
    old = table.prefixes
    old_world = old.identity("203.0.113.7")
    table.add_prefix(1, ipaddress.ip_network("203.0.113.0/24"))
    settled(table)
    assert table.prefixes is not old
    assert old.identity("203.0.113.7") is old_world  # readers of the old table see it whole
    assert table.prefixes.identity("203.0.113.7").sets == {1}


def test_readers_resolve_any_text_and_cache_only_canonical_outside_addresses() -> None:
    table = AddressTable()
    table.add_host(1, "2001:db8::1")
    settled(table)
    ident, canonical = identity_of(table.hosts.get, table.prefixes, "2001:DB8::0001")
    assert (set(ident.sets), canonical) == ({1}, "2001:db8::1")
    assert "2001:DB8::0001" not in table.prefixes.outside
    identity_of(table.hosts.get, table.prefixes, "198.51.100.9")
    assert "198.51.100.9" in table.prefixes.outside
    with pytest.raises(InvalidPolicy, match="not an IP address"):
        identity_of(table.hosts.get, table.prefixes, "999.1.1.1")


def test_canonical_text() -> None:
    assert canonical_ip("10.0.0.1") == "10.0.0.1"
    assert canonical_ip("FD00::0001") == "fd00::1"
    with pytest.raises(InvalidPolicy):
        canonical_ip("010.0.0.1")


# -- property: identities equal a brute-force scan after any sequence of changes ----------

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
COUNTED = "192.0.2.200"  # a host with a counted source, known before anything is learned
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

operations = st.lists(
    st.tuples(
        st.sampled_from(["add_prefix", "remove_prefix", "add_host", "remove_host", "settle"]),
        st.integers(0, 4),
        st.integers(0, 9),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_identities_match_brute_force(ops: list[tuple[str, int, int]]) -> None:
    table = AddressTable()
    prefixes: Counter[tuple[int, str]] = Counter()
    hosts: Counter[tuple[int, str]] = Counter()
    for op, set_id, which in ops:
        if op == "settle":
            table.settle()
        elif op.endswith("prefix"):
            prefix = PREFIXES[which % len(PREFIXES)]
            if op == "add_prefix":
                table.add_prefix(set_id, ipaddress.ip_network(prefix))
                prefixes[(set_id, prefix)] += 1
            elif prefixes[(set_id, prefix)]:
                table.remove_prefix(set_id, ipaddress.ip_network(prefix))
                prefixes[(set_id, prefix)] -= 1
        else:
            host = HOSTS[which % len(HOSTS)]
            if op == "add_host":
                table.add_host(set_id, host)
                hosts[(set_id, host)] += 1
            elif hosts[(set_id, host)]:
                table.remove_host(set_id, host)
                hosts[(set_id, host)] -= 1
    table.settle()
    for address in HOSTS:
        ip = ipaddress.ip_address(address)
        expected = {s for (s, p), n in prefixes.items() if n and ip in ipaddress.ip_network(p)}
        member = {s for (s, h), n in hosts.items() if n and h == address}
        assert table.sets_of(address) == expected | member, (address, ops)
        assert (address in table.hosts) == bool(member), (address, ops)


@given(
    st.frozensets(st.integers(0, 200_000), max_size=12),
    st.frozensets(st.integers(0, 200_000), max_size=400),
)
def test_bits_clear_in_a_programs_mask_prove_the_peer_is_in_none_of_its_sets(
    sets: frozenset[int], refs: frozenset[int]
) -> None:
    mask = signature_mask(refs)
    clear = all(not mask[bit >> 3] & (1 << (bit & 7)) for bit in signature_bits(sets))
    if clear:
        assert sets.isdisjoint(refs)
    if not sets.isdisjoint(refs):
        assert not clear


@given(st.frozensets(st.integers(0, 200_000), max_size=8))
def test_an_identity_holds_its_first_bits_itself_and_more_as_a_tuple(sets: frozenset[int]) -> None:
    bits, bit1, bit2 = folded(sets)
    expected = signature_bits(sets)
    if len(expected) > INLINE_BITS:
        assert (bits, bit1, bit2) == (expected, None, None)
    else:
        held = (bits, bit1, bit2)
        assert held == (*expected, *(None,) * (INLINE_BITS - len(expected)))
    ident = Identity(4, sets, None)
    assert (ident.bits, ident.bit1, ident.bit2) == (bits, bit1, bit2)


class _DNS:
    """DNS membership as plain values: address -> set -> expiry."""

    def __init__(self, state: dict[str, dict[int, float]]) -> None:
        self.state = state

    def sets_of(self, address: str) -> frozenset[int]:
        return frozenset(self.state.get(address, ()))

    def expiry_in(self, num: int, address: str) -> float | None:
        return self.state.get(address, {}).get(num)


def test_dns_sets_and_counted_sources_each_keep_a_set_member() -> None:
    table = AddressTable()
    first, second = "198.51.100.7", "198.51.100.8"
    dns = {first: {1: 60.0, 2: 60.0}, second: {1: 60.0, 2: 60.0}}
    table.follow_dns(_DNS(dns))
    assert table.learn([first, second], frozenset({1, 2}))
    table.settle()
    assert table.host_members(1) == table.host_members(2) == {first, second}
    assert table.add_host(1, first)  # its first counted source in set 1, where DNS has it
    assert table.add_host(3, first)
    dns[first] = {2: 60.0}  # DNS no longer puts it in set 1: the count does
    table.dns_moved(first)
    table.settle()
    assert table.host_members(1) == {first, second}
    assert table.identity(first).sets == frozenset({1, 2, 3})
    assert table.remove_host(1, first)  # its last counted source in set 1
    assert table.dns_expiry(2, first) == 60.0
    assert table.dns_expiry(1, first) is None
    del dns[first]
    table.dns_moved(first)
    assert not table.remove_host(3, second)  # never in set 3
    table.settle()
    assert table.host_members(1) == {second}
    assert table.identity(first).sets == frozenset({3})
    assert table.identity(second).sets == frozenset({1, 2})


@settings(max_examples=150, deadline=None)
@given(
    before=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(PREFIXES)), max_size=5),
    groups=st.lists(
        st.tuples(
            st.lists(st.sampled_from([*HOSTS, COUNTED]), max_size=4),
            st.frozensets(st.integers(5, 9), min_size=1, max_size=3),
        ),
        max_size=4,
    ),
    after=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(PREFIXES)), max_size=3),
)
def test_learned_addresses_get_the_identities_settling_them_one_by_one_gives(
    before: list[tuple[int, str]],
    groups: list[tuple[list[str], frozenset[int]]],
    after: list[tuple[int, str]],
) -> None:
    # The first build's bulk path against the general one, before and after later prefixes
    # (which find learned hosts through the table's host ranges). A group may hold addresses
    # the table knows already (an earlier group's, a counted source's): DNS then puts them in
    # every set of their groups, and the table must say that not all were new.
    groups = [(list(dict.fromkeys(addresses)), sets) for addresses, sets in groups]
    dns: dict[str, dict[int, float]] = {}
    for addresses, sets in groups:
        for address in addresses:
            dns.setdefault(address, {}).update(dict.fromkeys(sets, 60.0))
    bulk, one_by_one = AddressTable(), AddressTable()
    for table in (bulk, one_by_one):
        table.follow_dns(_DNS(dns))
        table.add_host(0, COUNTED)
        table.settle()
        # A prefix change once hosts are known: from then on the table keeps host ranges.
        table.add_prefix(0, ipaddress.ip_network(f"{COUNTED}/32"))
        for num, net in before:
            table.add_prefix(num, ipaddress.ip_network(net))
        table.settle()
    for addresses, sets in groups:
        new = not any(a in bulk.hosts for a in addresses)
        assert bulk.learn(addresses, sets) is new
    for address in dns:
        one_by_one.dns_moved(address)
    for step in (None, *after):
        for table in (bulk, one_by_one):
            if step is not None:
                table.add_prefix(step[0], ipaddress.ip_network(step[1]))
            table.settle()
        assert bulk.hosts.keys() == one_by_one.hosts.keys()
        for table in (bulk, one_by_one):  # host ranges, when kept, hold each host once
            if table._ranges is not None:
                held = [
                    *table._ranges.within(ipaddress.ip_network("0.0.0.0/0")),
                    *table._ranges.within(ipaddress.ip_network("::/0")),
                ]
                assert sorted(held) == sorted(table.hosts)
        for address in bulk.hosts:
            got, want = bulk.identity(address), one_by_one.identity(address)
            assert (got.family, got.sets, got.ports) == (want.family, want.sets, want.ports)
