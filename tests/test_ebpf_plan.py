"""The eBPF backend's pure parts: plans, the merged LPM entries, the text, compiling."""

from __future__ import annotations

from pathlib import Path

import pytest
from fqdnpolicy_ebpf import DeltaPlan, EbpfBackend
from fqdnpolicy_ebpf.build import compile_program, source_hash
from fqdnpolicy_ebpf.kernel import pack_tables
from fqdnpolicy_ebpf.layout import MAX_SLOTS, TABLE_VALUE, Memberships, slots_for
from fqdnpolicy_ebpf.plan import MAX_PORTS, MAX_RULE_SETS, Entry, Plan, parse_member, table_index
from hypothesis import given
from hypothesis import strategies as st

from fqdnpolicy.backends import BackendError, Rendering
from fqdnpolicy.datapath import (
    DatapathState,
    EndpointState,
    MemberChanged,
    PortSpec,
    RuleState,
    SetState,
    TierState,
)
from fqdnpolicy.errors import InvalidPolicy
from tests.support import require_tool

NET = (4, 24, 0xCB007100)  # 203.0.113.0/24
HOST = (4, 32, 0xCB00710C)  # 203.0.113.12


def _state(*sets: SetState, rules: tuple[RuleState, ...] = ()) -> DatapathState:
    tiers = (TierState("t", rules, "Deny"),) if rules else ()
    endpoint = EndpointState("ns/web", "caliweb", ("198.51.100.10",), tiers, ())
    return DatapathState(sets, (endpoint,), {})


def test_a_more_specific_entry_carries_the_sets_of_its_covering_prefixes() -> None:
    members = Memberships()
    members.add(0, NET, None)
    members.add(3, HOST, 50.0)
    # Only its own DNS membership has a deadline.
    assert members.merged(HOST) == {3: 50.0, 0: None}
    assert members.merged(NET) == {0: None}
    assert members.affected(NET) == [NET, HOST]
    assert members.affected(HOST) == [HOST]


def test_a_set_holding_the_covering_prefix_too_keeps_the_address_past_its_deadline() -> None:
    members = Memberships()
    members.add(0, NET, None)
    members.add(0, HOST, 50.0)
    assert members.merged(HOST) == {0: None}


def test_a_shorter_prefix_carries_no_deadline() -> None:
    members = Memberships()
    members.add(2, NET, 50.0)
    assert members.merged(NET) == {2: None}


def test_removing_the_last_membership_frees_the_prefix() -> None:
    members = Memberships()
    members.add(1, HOST, None)
    members.add(2, HOST, None)
    assert not members.remove(1, HOST)
    assert members.remove(2, HOST)
    assert HOST not in members.own


def test_parse_member_and_membership_slots() -> None:
    assert parse_member("203.0.113.12") == HOST
    assert parse_member("203.0.113.0/24") == NET
    assert parse_member("2001:db8::/32") == (6, 32, 0x20010DB8 << 96)
    assert parse_member("fe80::1%eth0") is None
    assert [slots_for(n) for n in (0, 4, 5, 9, 17)] == [4, 4, 8, 16, 32]
    assert slots_for(MAX_SLOTS) == MAX_SLOTS
    with pytest.raises(BackendError, match="at most 64"):
        slots_for(MAX_SLOTS + 1)


def test_render_text_names_the_program_sets_and_tables() -> None:
    backend = EbpfBackend()
    names = SetState("d:api", "domains", "api.example.test", {"203.0.113.12": 1030.0})
    rules = (
        RuleState("p", "t", 0, "Pass", (4,), protocol=6),
        RuleState("p", "t", 1, "Allow", (4, 6), peer_in=("d:api",)),
    )
    rendering = backend.render(_state(names, rules=rules), now=1000.0)
    assert isinstance(rendering.data, Plan)
    text = rendering.text
    assert f"sha256 {source_hash()}" in text
    assert "set 0 d:api domains 'api.example.test': 1 members" in text
    assert "203.0.113.12 (expires in 30.0s)" in text
    assert "0 Pass  ip4 proto tcp (pass to entry 3)" in text
    assert "1 Allow ip4/6 peer in sets 0" in text
    assert "2 end of tier t: Deny" in text


def test_expired_and_unusable_members_are_left_out_and_reported() -> None:
    backend = EbpfBackend()
    names = SetState(
        "d:api", "domains", "api", {"203.0.113.1": 999.0, "fe80::1%eth0": None, "203.0.113.2": None}
    )
    rendering = backend.render(_state(names), now=1000.0)
    assert isinstance(rendering.data, Plan)
    assert [m.text for m in rendering.data.members] == ["203.0.113.2"]
    assert len(rendering.skipped) == 1
    assert "fe80::1%eth0" in str(rendering.skipped[0])


def test_a_set_keeps_its_bit_across_renders() -> None:
    backend = EbpfBackend()
    a, b, c = (SetState(f"n:{x}", "nets", x, {}) for x in "abc")
    backend.render(_state(a, b, c), now=0.0)
    rendering = backend.render(_state(c, SetState("n:d", "nets", "d", {})), now=0.0)
    assert isinstance(rendering.data, Plan)
    assert {s.set_id: s.index for s in rendering.data.sets} == {"n:c": 2, "n:d": 0}


def test_render_delta_keeps_the_last_change_of_a_member() -> None:
    backend = EbpfBackend()
    backend.render(_state(SetState("d:api", "domains", "api", {})), now=0.0)
    deltas = [
        MemberChanged("d:api", "203.0.113.12", True, 30.0),
        MemberChanged("d:api", "203.0.113.12", False),
        MemberChanged("d:other", "203.0.113.9", True, 30.0),
    ]
    rendering = backend.render_delta(deltas, now=0.0)
    assert isinstance(rendering.data, DeltaPlan)
    assert rendering.data.changes == ((0, HOST, "203.0.113.12", False, None),)
    assert rendering.text.endswith("remove set 0 203.0.113.12\n")
    assert backend.needs_full(deltas)
    assert not backend.needs_full(deltas[:2])


def test_a_rule_with_more_ports_than_the_program_tests_is_refused() -> None:
    ranges = tuple((p, p) for p in range(1, MAX_PORTS + 2))
    rules = (RuleState("p", "t", 0, "Allow", (4,), protocol=6, dst_ports=PortSpec(ranges)),)
    with pytest.raises(InvalidPolicy, match="at most 32"):
        EbpfBackend().render(_state(rules=rules), now=0.0)


def test_a_rendering_of_another_backend_is_refused() -> None:
    with pytest.raises(BackendError, match="'nftables' rendering"):
        EbpfBackend().apply(Rendering("nftables", "full", "table inet x {}"))


def test_without_clang_the_backend_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendError, match="clang, which is not installed"):
        compile_program(1, cache=tmp_path / "cache")


def test_a_compile_error_carries_clangs_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bpf.c"
    bad.write_text("int broken(void) { return undeclared; }\n")
    require_tool("clang")
    with pytest.raises(BackendError, match="undeclared"):
        compile_program(1, source=bad, cache=tmp_path / "cache")


def _rule_entry(peer_in: tuple[int, ...], protocol: int | None = None) -> Entry:
    return Entry(kind="rule", action="Allow", tier="t", peer_in=peer_in, protocol=protocol)


@given(
    tables=st.lists(
        st.one_of(
            st.just(Entry(kind="tier-end", action="Deny", tier="t")),
            st.builds(
                _rule_entry,
                st.lists(st.integers(0, 5), max_size=3, unique=True).map(tuple),
                st.sampled_from([None, 6, 17]),
            ),
        ),
        max_size=30,
    ),
    sizes=st.dictionaries(st.integers(0, 5), st.integers(0, 100)),
    peer=st.sets(st.integers(0, 5)),
    protocol=st.sampled_from([6, 17, 1]),
)
def test_the_index_gives_every_entry_a_packet_can_need_once_and_in_order(
    tables: list[Entry], sizes: dict[int, int], peer: set[int], protocol: int
) -> None:
    entries = tuple(tables)
    index = table_index(entries, sizes)
    first = index.by_protocol.get(protocol, index.unindexed)
    lists = [first, *(index.by_set.get(s, ()) for s in peer)]
    merged = sorted(i for positions in lists for i in positions)
    assert all(list(p) == sorted(p) for p in lists)
    assert len(merged) == len(set(merged))  # no entry twice
    # Every entry that can match this packet is tested, and in table order ...
    needed = [
        i
        for i, e in enumerate(entries)
        if e.kind == "tier-end" or (set(e.peer_in) <= peer and e.protocol in (None, protocol))
    ]
    assert set(needed) <= set(merged)
    # ... and an indexed rule only when the peer is in the set it is listed under, an
    # unindexed one only when it can match the packet's protocol.
    for s, positions in index.by_set.items():
        assert all(s in entries[i].peer_in for i in positions)
    assert all(entries[i].protocol in (None, protocol) for i in first)
    every = index.unindexed + tuple(i for v in index.by_set.values() for i in v)
    every += tuple(i for v in index.by_protocol.values() for i in v if i not in index.unindexed)
    assert sorted(every) == list(range(len(entries)))


def test_a_rule_is_indexed_under_its_smallest_set() -> None:
    entries = (
        _rule_entry((1, 2)),
        _rule_entry(()),
        _rule_entry((), protocol=17),
        Entry(kind="tier-end", action="Deny", tier="t"),
    )
    index = table_index(entries, {1: 500, 2: 3})
    assert index.by_set == {2: (0,)}
    assert index.unindexed == (1, 3)
    assert index.by_protocol == {17: (1, 2, 3)}


def test_a_rule_naming_more_peer_sets_than_the_program_tests_is_refused() -> None:
    sets = tuple(SetState(f"n:{i}", "nets", str(i), {}) for i in range(MAX_RULE_SETS + 1))
    rules = (RuleState("p", "t", 0, "Allow", (4,), peer_in=tuple(s.set_id for s in sets)),)
    with pytest.raises(InvalidPolicy, match="at most 4"):
        EbpfBackend().render(_state(*sets, rules=rules), now=0.0)


def test_endpoints_with_the_same_tiers_share_one_table_in_the_text() -> None:
    tiers = (TierState("t", (RuleState("p", "t", 0, "Allow", (4,), protocol=6),), "Deny"),)
    endpoints = tuple(
        EndpointState(f"ns/web{i}", f"caliweb{i}", (f"198.51.100.{10 + i}",), tiers, ())
        for i in range(2)
    )
    rendering = EbpfBackend().render(DatapathState((), endpoints, {}), now=0.0)
    assert "the table of ns/web0 egress" in rendering.text
    assert rendering.text.count("end of tier t: Deny") == 1


def test_endpoints_sharing_a_table_keep_log_counters_of_their_own() -> None:
    log = RuleState("p", "t", 0, "Log", (4,), protocol=17)
    tiers = (TierState("t", (log, RuleState("p", "t", 1, "Allow", (4,))), "Deny"),)
    endpoints = tuple(
        EndpointState(f"ns/web{i}", f"caliweb{i}", (f"198.51.100.{10 + i}",), tiers, ())
        for i in range(2)
    )
    rendering = EbpfBackend().render(DatapathState((), endpoints, {}), now=0.0)
    assert isinstance(rendering.data, Plan)
    packed = pack_tables(rendering.data, {"caliweb0": 5, "caliweb1": 6})
    assert len(packed.rules) == 3  # one copy: two rules and the tier end
    assert packed.log_bases == {
        ("ns/web0", 0): 0,
        ("ns/web0", 1): 1,
        ("ns/web1", 0): 1,
        ("ns/web1", 1): 2,
    }
    assert packed.log_slots == 2
    # The UDP Log rule is in the UDP list only; TCP and other protocols skip it.
    _, _, count, _, any_cnt, _, tcp_cnt, _, udp_cnt, _ = TABLE_VALUE.unpack(packed.values[0])
    assert (count, any_cnt, tcp_cnt, udp_cnt) == (3, 2, 2, 3)
