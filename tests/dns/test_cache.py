"""The DNS cache's rules, one named case each (the state-machine test covers combinations)."""

from __future__ import annotations

import sys
import threading

import pytest

from fqdnpolicy.dns import DNSCache, DNSChange, layouts
from fqdnpolicy.dns.cache import parse_server
from fqdnpolicy.dns.wire import Extracted, extract_wire_fast
from fqdnpolicy.domains import parse_domain_pattern
from fqdnpolicy.errors import InvalidPolicy
from tests.dns.helpers import AAAA, CNAME, A, FakeClock, answer, message
from tests.dns.test_wire_fuzz import Wire, labels_of

SERVER = "10.96.0.10"


def make_cache(clock: FakeClock | None = None, **options: object) -> DNSCache:
    options.setdefault("trusted_servers", [SERVER])
    return DNSCache(clock=clock or FakeClock(), **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# CNAME chains
# ------------------------------------------------------------------------------------------


def test_chain_in_mixed_case_gives_every_name_the_ip_at_its_end() -> None:
    cache = make_cache()
    response = message(
        "CName1.Example.",
        ("CName1.Example.", "CNAME", 60, "cname2.EXAMPLE."),
        ("cname2.EXAMPLE.", "CNAME", 60, "CNAME3.example."),
        ("CNAME3.example.", "CNAME", 60, "A.com."),
        ("A.com.", "A", 60, "10.0.0.10"),
    )
    cache.observe(response.to_wire(), server=SERVER)
    for name in ("cname1.example", "cname2.example", "cname3.example", "a.com"):
        assert cache.ips(name) == {"10.0.0.10"}
    assert cache.ips("CNAME1.EXAMPLE.") == {"10.0.0.10"}  # lookups are canonicalised too


def test_live_pairs_can_be_asked_for_some_names_only() -> None:
    cache = make_cache()
    response = message(
        "www.example.com.",
        ("www.example.com.", "CNAME", 60, "lb.example.net."),
        ("lb.example.net.", "A", 60, "198.51.100.7"),
    )
    cache.observe(response, server=SERVER)
    every = dict(cache.live())
    assert every.keys() == {"www.example.com", "lb.example.net"}
    assert cache.live({"lb.example.net", "absent.example"}) == [
        ("lb.example.net", every["lb.example.net"])
    ]


def test_chain_learned_from_a_message_object_and_from_wire_bytes_alike() -> None:
    response = message(
        "www.example.com.",
        ("www.example.com.", "CNAME", 60, "lb.example.net."),
        ("lb.example.net.", "AAAA", 60, "2001:DB8:0:0::7"),
    )
    from_message, from_wire = make_cache(), make_cache()
    from_message.observe(response, server=SERVER)
    from_wire.observe(response.to_wire(), server=SERVER)
    assert from_message.mapping() == from_wire.mapping()
    assert from_wire.ips("www.example.com") == {"2001:db8::7"}


def test_wire_bytes_the_fast_parser_declines_are_learned_through_dnspython() -> None:
    response = message(
        "www.example.com.",
        ("www.example.com.", "MX", 60, "10 mail.example.com."),  # not read by the fast path
        ("www.example.com.", "A", 60, "10.0.0.7"),
    )
    data = response.to_wire()
    assert extract_wire_fast(data) is None
    cache = make_cache()
    cache.observe(data, server=SERVER)
    assert cache.ips("www.example.com") == {"10.0.0.7"}
    assert cache.stats.unsupported_record == 0  # the extraction keeps only A/AAAA/CNAME


@pytest.mark.parametrize("regrouped", [False, True], ids=["as it comes", "regrouped"])
def test_wire_bytes_read_afresh_and_from_a_remembered_layout_teach_the_same(
    regrouped: bool,
) -> None:
    # observe takes a message parsed afresh and a repeat rebuilt from the layout it remembered
    # (two different ways to the same plain tuples): the cache must learn the same from either.
    question, target = labels_of("fresh-or-remembered.example"), labels_of("edge.example.net")
    # (last octet, TTL): a second TTL in the RRset, or also an address again, is regrouped
    addresses = [(1, 60), (2, 60), (3, 60)] if not regrouped else [(1, 60), (2, 50), (1, 60)]
    w = Wire().header(0x8180, 1, 1 + len(addresses), 0, 0).question(question)
    w.rr_name(question, CNAME, target, 300)
    for last_octet, ttl in addresses:
        w.rr(target, A, bytes([10, 0, 0, last_octet]), ttl)
    data = w.bytes()
    layouts._TEMPLATES.clear()
    seen = []
    for _ in range(3):  # afresh, afresh (its layout remembered), from the layout
        cache = make_cache()
        seen.append((cache.observe(data, server=SERVER), cache.mapping(), cache.links()))
    assert seen[0] == seen[1] == seen[2]
    expected = {"10.0.0.1", "10.0.0.2"} | (set() if regrouped else {"10.0.0.3"})
    assert seen[0][1]["fresh-or-remembered.example"].keys() == expected


def test_chain_stored_in_reverse_order_is_learned_the_same() -> None:
    records = [
        ("cname1.com", CNAME, 60, "cname2.com"),
        ("cname2.com", CNAME, 60, "a.com"),
        ("a.com", A, 60, "10.0.0.10"),
    ]
    forward, backward = make_cache(), make_cache()
    forward.ingest(answer("cname1.com", *records))
    backward.ingest(answer("cname1.com", *reversed(records)))
    assert backward.mapping() == forward.mapping()
    assert backward.ips("cname1.com") == {"10.0.0.10"}


def test_two_chains_to_one_a_record_share_its_ips() -> None:
    cache = make_cache()
    cache.ingest(answer("a1.com", ("a1.com", CNAME, 60, "b.net"), ("b.net", A, 60, "10.0.0.1")))
    cache.ingest(answer("a2.com", ("a2.com", CNAME, 60, "b.net"), ("b.net", A, 60, "10.0.0.1")))
    assert cache.ips("a1.com") == cache.ips("a2.com") == {"10.0.0.1"}


def test_a_change_at_the_tail_reaches_every_name_above_it() -> None:
    cache = make_cache()
    cache.ingest(answer("a1.com", ("a1.com", CNAME, 60, "b.net"), ("b.net", CNAME, 60, "c.org")))
    cache.ingest(answer("a2.com", ("a2.com", CNAME, 60, "b.net")))
    changes = cache.ingest(answer("c.org", ("c.org", A, 60, "10.0.0.9")))
    assert {(c.name, c.ip, c.added) for c in changes} == {
        (name, "10.0.0.9", True) for name in ("a1.com", "a2.com", "b.net", "c.org")
    }


def test_cname_loop_terminates_and_yields_nothing() -> None:
    cache = make_cache()
    cache.ingest(
        answer(
            "a.com",
            ("a.com", CNAME, 60, "b.com"),
            ("b.com", CNAME, 60, "c.com"),
            ("c.com", CNAME, 60, "a.com"),
        )
    )
    assert cache.ips("a.com") == cache.ips("b.com") == cache.ips("c.com") == set()
    assert cache.names() == {"a.com", "b.com", "c.com"}


def test_an_address_inside_a_loop_reaches_every_loop_member() -> None:
    cache = make_cache()
    cache.ingest(
        answer(
            "a.com",
            ("a.com", CNAME, 60, "b.com"),
            ("b.com", CNAME, 60, "a.com"),
            ("b.com", A, 60, "10.0.0.2"),
        )
    )
    assert cache.ips("a.com") == cache.ips("b.com") == {"10.0.0.2"}


def test_chain_lives_while_all_its_links_live() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    cache.ingest(answer("q.com", ("q.com", CNAME, 10, "t.com"), ("t.com", A, 100, "10.0.0.1")))
    assert cache.expiries("q.com") == {"10.0.0.1": clock.now + 10}
    clock.advance(10)
    changes = cache.expire()
    assert changes == [DNSChange("q.com", "10.0.0.1", False, clock.now)]
    assert cache.ips("q.com") == set()
    assert cache.ips("t.com") == {"10.0.0.1"}


def test_effective_expiry_is_the_best_path_through_its_weakest_link() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock)
    cache.ingest(
        answer("q.com", ("q.com", CNAME, 10, "short.com"), ("short.com", A, 90, "10.0.0.1"))
    )
    cache.ingest(answer("q.com", ("q.com", CNAME, 50, "long.com"), ("long.com", A, 30, "10.0.0.1")))
    assert cache.expiries("q.com") == {"10.0.0.1": 30}  # max(min(10, 90), min(50, 30))


def test_chain_longer_than_the_depth_limit_is_cut_and_counted() -> None:
    cache = make_cache(max_chain_depth=2)
    cache.ingest(
        answer(
            "n0.com",
            ("n0.com", CNAME, 60, "n1.com"),
            ("n1.com", CNAME, 60, "n2.com"),
            ("n2.com", CNAME, 60, "n3.com"),
            ("n3.com", A, 60, "10.0.0.3"),
            ("n2.com", A, 60, "10.0.0.2"),
        )
    )
    assert cache.ips("n0.com") == {"10.0.0.2"}
    assert cache.stats.chain_too_deep == 1  # n2 -> n3 is the third link
    assert cache.stats.out_of_chain == 1  # so n3's address is not reachable


def test_chains_joined_across_answers_respect_the_depth_limit() -> None:
    cache = make_cache(max_chain_depth=2)
    cache.ingest(answer("n0.com", ("n0.com", CNAME, 60, "n1.com"), ("n1.com", CNAME, 60, "n2.com")))
    cache.ingest(answer("n2.com", ("n2.com", CNAME, 60, "n3.com"), ("n3.com", A, 60, "10.0.0.3")))
    assert cache.ips("n1.com") == {"10.0.0.3"}  # two links
    assert cache.ips("n0.com") == set()  # three links


# ------------------------------------------------------------------------------------------
# What is learned (anti-poisoning and filters)
# ------------------------------------------------------------------------------------------


def test_answer_with_an_out_of_chain_record_learns_only_the_chain() -> None:
    cache = make_cache()
    cache.ingest(
        answer(
            "www.shop.com",
            ("www.shop.com", A, 60, "10.0.0.1"),
            ("bank.example", A, 60, "6.6.6.6"),
            ("cdn.evil", CNAME, 60, "www.shop.com"),
        )
    )
    assert cache.names() == {"www.shop.com"}
    assert cache.ips("bank.example") == set()
    assert cache.stats.out_of_chain == 2


def test_additional_section_records_are_never_learned() -> None:
    cache = make_cache()
    response = message(
        "www.shop.com.",
        ("www.shop.com.", "A", 60, "10.0.0.1"),
        additional=(("bank.example.", "A", 60, "6.6.6.6"),),
    )
    cache.observe(response.to_wire(), server=SERVER)
    assert cache.names() == {"www.shop.com"}


@pytest.mark.parametrize("zero", ["0.0.0.0", "::"])
def test_zero_addresses_are_ignored_and_counted(zero: str) -> None:
    cache = make_cache()
    cache.ingest(answer("blocked.com", ("blocked.com", AAAA if ":" in zero else A, 60, zero)))
    assert cache.ips("blocked.com") == set()
    assert cache.stats.zero_address == 1


def test_untrusted_server_changes_nothing_and_is_counted() -> None:
    cache = make_cache(trusted_servers=["10.96.0.10:53"])
    response = message("a.com.", ("a.com.", "A", 60, "10.0.0.1"))
    assert cache.observe(response, server="10.96.0.11:53") == []
    assert cache.observe(response, server="10.96.0.10:5353") == []  # right IP, wrong port
    assert cache.observe(response, server="not an address") == []
    assert cache.ingest(answer("a.com", ("a.com", A, 60, "10.0.0.1")), server="1.1.1.1") == []
    assert cache.names() == set()
    assert cache.stats.untrusted == 4
    cache.observe(response, server="10.96.0.10:53")
    assert cache.ips("a.com") == {"10.0.0.1"}


@pytest.mark.parametrize(
    ("trusted", "server", "ok"),
    [
        ("10.0.0.53", "10.0.0.53", True),
        ("10.0.0.53", "10.0.0.53:53", True),  # no port configured: every port
        ("10.0.0.53:53", "10.0.0.53", False),
        ("[fd00::53]:53", "[fd00:0::53]:53", True),  # compared in canonical form
        ("fd00::53", "[fd00::53]:5353", True),
        ("[fd00::53]", "fd00::53", True),
        ("[fd00::53]:53", "[fd00::53]:54", False),
    ],
)
def test_trusted_server_forms(trusted: str, server: str, ok: bool) -> None:
    assert make_cache(trusted_servers=[trusted]).is_trusted(server) is ok


@pytest.mark.parametrize(
    "text", ["", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:70000", "[::1", "[::1]x", "x"]
)
def test_parse_server_rejects_what_is_not_an_address(text: str) -> None:
    assert parse_server(text) is None


@pytest.mark.parametrize(
    ("extracted", "counter"),
    [
        (answer("a.com", ("a.com", A, 60, "10.0.0.1"), rcode=3), "wrong_rcode"),
        (answer(None, ("a.com", A, 60, "10.0.0.1")), "no_question"),
        (answer("a.com", ("a.com", A, 60, "10.0.0.1"))._replace(is_response=False), "not_response"),
        (answer("a.com", ("a.com", A, 60, "10.0.0.1"))._replace(opcode=5), "wrong_opcode"),
    ],
)
def test_messages_that_are_not_noerror_answers_teach_nothing(
    extracted: Extracted, counter: str
) -> None:
    cache = make_cache()
    assert cache.ingest(extracted) == []
    assert cache.names() == set()
    assert getattr(cache.stats, counter) == 1


def test_truncated_answer_keeps_its_complete_records_and_is_counted() -> None:
    cache = make_cache()
    cache.ingest(answer("a.com", ("a.com", A, 60, "10.0.0.1"))._replace(truncated=True))
    assert cache.ips("a.com") == {"10.0.0.1"}
    assert cache.stats.truncated == 1


def test_malformed_wire_bytes_are_counted_not_raised() -> None:
    cache = make_cache()
    assert cache.observe(b"\x00\x01garbage", server=SERVER) == []
    assert cache.stats.malformed == 1


# ------------------------------------------------------------------------------------------
# TTL and time
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "lifetime"),
    [
        (0, 5),  # raised to min_ttl
        (3, 5),
        (10, 11),  # ttl + extra_ttl
        (299, 300),
        (5000, 300),  # lowered to max_ttl
        (2**31 - 1, 300),
        (2**31, 5),  # top bit set: treated as 0 (RFC 2181)
    ],
)
def test_lifetime_is_ttl_plus_extra_clamped_both_ways(ttl: int, lifetime: int) -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, min_ttl=5, max_ttl=300, extra_ttl=1)
    cache.ingest(answer("a.com", ("a.com", A, ttl, "10.0.0.1")))
    assert cache.expiries("a.com") == {"10.0.0.1": lifetime}


def test_zero_lifetime_is_not_stored_when_min_ttl_allows_it() -> None:
    cache = make_cache(min_ttl=0)
    assert cache.ingest(answer("a.com", ("a.com", A, 0, "10.0.0.1"))) == []
    assert cache.names() == set()
    assert cache.stats.zero_lifetime == 1


def test_grace_period_is_added_after_clamping() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, max_ttl=60, grace_period=5)
    cache.ingest(answer("a.com", ("a.com", A, 3600, "10.0.0.1")))
    assert cache.expiries("a.com") == {"10.0.0.1": 65}


def test_a_refresh_only_extends() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock)
    cache.ingest(answer("a.com", ("a.com", A, 100, "10.0.0.1")))
    clock.advance(10)
    cache.ingest(answer("a.com", ("a.com", A, 20, "10.0.0.1")))  # would end at 30 < 100
    assert cache.expiries("a.com") == {"10.0.0.1": 100}
    cache.ingest(answer("a.com", ("a.com", A, 200, "10.0.0.1")))
    assert cache.expiries("a.com") == {"10.0.0.1": 210}


def test_expire_removes_exactly_what_is_due_and_next_expiry_says_when() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock)
    assert cache.next_expiry() is None
    cache.ingest(answer("a.com", ("a.com", A, 10, "10.0.0.1"), ("a.com", A, 20, "10.0.0.2")))
    assert cache.next_expiry() == 10
    clock.now = 9.5
    assert cache.expire() == []
    clock.now = 10
    assert cache.ips("a.com") == {"10.0.0.2"}  # reads honour the clock before expire() runs
    assert cache.expire() == [DNSChange("a.com", "10.0.0.1", False, 10)]
    assert cache.next_expiry() == 20
    clock.now = 25
    assert cache.expire() == [DNSChange("a.com", "10.0.0.2", False, 20)]
    assert cache.next_expiry() is None
    assert cache.names() == set()
    assert cache.stats.expired_links == 2


def test_expiry_of_a_shared_tail_is_reported_for_every_name_above_it() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock)
    cache.ingest(answer("a1.com", ("a1.com", CNAME, 99, "b.net"), ("b.net", A, 10, "10.0.0.1")))
    cache.ingest(answer("a2.com", ("a2.com", CNAME, 99, "b.net")))
    clock.now = 10
    assert {(c.name, c.added) for c in cache.expire()} == {
        ("a1.com", False),
        ("a2.com", False),
        ("b.net", False),
    }


# ------------------------------------------------------------------------------------------
# Bounds
# ------------------------------------------------------------------------------------------


def test_per_name_cap_drops_the_earliest_expiring_ip_and_counts_it() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, max_ips_per_name=2)
    cache.ingest(answer("s3.com", ("s3.com", A, 30, "10.0.0.1"), ("s3.com", A, 10, "10.0.0.2")))
    cache.ingest(answer("s3.com", ("s3.com", A, 20, "10.0.0.3")))
    assert cache.ips("s3.com") == {"10.0.0.1", "10.0.0.3"}
    assert cache.stats.over_name_cap == 1


def test_per_name_cap_applies_to_cname_targets_too() -> None:
    cache = make_cache(max_ips_per_name=1)
    cache.ingest(answer("q.com", ("q.com", CNAME, 10, "a.com"), ("a.com", A, 60, "10.0.0.1")))
    cache.ingest(answer("q.com", ("q.com", CNAME, 20, "b.com"), ("b.com", A, 60, "10.0.0.2")))
    assert cache.ips("q.com") == {"10.0.0.2"}
    assert cache.stats.over_name_cap == 1


def test_total_cap_evicts_the_earliest_expiring_name_and_counts_it() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, max_names=2)
    cache.ingest(answer("a.com", ("a.com", A, 50, "10.0.0.1")))
    cache.ingest(answer("b.com", ("b.com", A, 10, "10.0.0.2")))
    changes = cache.ingest(answer("c.com", ("c.com", A, 30, "10.0.0.3")))
    assert cache.names() == {"a.com", "c.com"}
    assert DNSChange("b.com", "10.0.0.2", False, 10) in changes
    assert cache.stats.evicted_names == 1


def test_flood_of_unique_names_stays_within_max_names() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, max_names=100)
    for i in range(2000):
        clock.advance(0.01)
        cache.ingest(answer(f"x{i}.wild.com", (f"x{i}.wild.com", A, 60, "10.0.0.1")))
    assert len(cache) == 100
    assert cache.names() == {f"x{i}.wild.com" for i in range(1900, 2000)}  # newest survive
    assert cache.stats.evicted_names == 1900
    assert cache.names_matching(parse_domain_pattern("*.wild.com")) == cache.names()
    # no leftovers grow without bound
    assert len(cache._heap) <= 2 * 100 + 1024
    assert cache._names.held() + len(cache._names.pending) <= 2 * 100 + 1024


def test_one_ip_shared_by_many_names_is_stored_once() -> None:
    cache = make_cache()
    for i in range(50):
        ip = "".join(["10.", "1.", "2.", "3"])  # a fresh string object each time
        cache.ingest(answer(f"n{i}.com", (f"n{i}.com", A, 60, ip)))
    stored = {id(next(iter(cache.expiries(f"n{i}.com")))) for i in range(50)}
    assert len(stored) == 1
    assert next(iter(cache.ips("n0.com"))) is sys.intern("10.1.2.3")


# ------------------------------------------------------------------------------------------
# Patterns
# ------------------------------------------------------------------------------------------


def test_names_matching_finds_chain_members_whether_pattern_or_data_came_first() -> None:
    cache = make_cache()
    wildcard = parse_domain_pattern("*.cdn.net")
    exact = parse_domain_pattern("api.github.com")
    assert cache.names_matching(wildcard) == set()  # the pattern before the data
    cache.ingest(
        answer(
            "api.github.com",
            ("api.github.com", CNAME, 60, "edge.eu.cdn.net"),
            ("edge.eu.cdn.net", A, 60, "10.0.0.1"),
        )
    )
    cache.ingest(answer("cdn.net", ("cdn.net", A, 60, "10.0.0.2")))
    cache.ingest(answer("xcdn.net", ("xcdn.net", A, 60, "10.0.0.3")))
    assert cache.names_matching(wildcard) == {"edge.eu.cdn.net"}  # a chain member
    assert cache.names_matching(exact) == {"api.github.com"}
    late = parse_domain_pattern("*.github.com")  # a pattern after the data
    assert cache.names_matching(late) == {"api.github.com"}
    middle = parse_domain_pattern("edge.*.net")
    assert cache.names_matching(middle) == {"edge.eu.cdn.net"}


# ------------------------------------------------------------------------------------------
# Changes, keep-alive, configuration, threads
# ------------------------------------------------------------------------------------------


def test_subscribers_get_each_batch_in_order_until_they_cancel() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock)
    batches: list[list[DNSChange]] = []
    cancel = cache.subscribe(batches.append)
    cache.ingest(answer("a.com", ("a.com", A, 10, "10.0.0.1")))
    cache.ingest(answer("a.com", ("a.com", A, 99, "10.0.0.1")))  # a refresh: no change
    clock.now = 200
    cache.expire()
    cancel()
    cache.ingest(answer("b.com", ("b.com", A, 10, "10.0.0.2")))
    assert batches == [
        [DNSChange("a.com", "10.0.0.1", True, 10)],
        [DNSChange("a.com", "10.0.0.1", False, 99)],
    ]


def test_report_refresh_reports_later_deadlines() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, report_refresh=True)
    cache.ingest(answer("a.com", ("a.com", A, 10, "10.0.0.1")))
    assert cache.ingest(answer("a.com", ("a.com", A, 99, "10.0.0.1"))) == [
        DNSChange("a.com", "10.0.0.1", True, 99)
    ]


def test_keep_alive_keeps_pairs_of_ips_with_connections_past_expiry() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, keep_alive_period=30, keep_alive_max_age=100)
    cache.ingest(answer("q.com", ("q.com", CNAME, 10, "t.com"), ("t.com", A, 10, "10.0.0.1")))
    cache.ingest(answer("other.com", ("other.com", A, 10, "10.0.0.2")))
    clock.now = 5
    cache.keep_alive("10.0.0.1")
    clock.now = 10
    changes = cache.expire()
    assert changes == [DNSChange("other.com", "10.0.0.2", False, 10)]
    assert cache.expiries("q.com") == {"10.0.0.1": 35}  # the last keep_alive + period
    assert cache.stats.kept_alive == 2  # q.com and t.com
    clock.now = 35
    assert {(c.name, c.added) for c in cache.expire()} == {("q.com", False), ("t.com", False)}


def test_keep_alive_is_bounded_in_age() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, keep_alive_period=30, keep_alive_max_age=50)
    cache.ingest(answer("a.com", ("a.com", A, 10, "10.0.0.1")))
    while clock.now < 200:
        clock.advance(5)
        cache.keep_alive("10.0.0.1")
        cache.expire()
        if not cache.ips("a.com"):
            break
    assert clock.now == 60  # kept from its expiry at 10 for at most 50 s


def test_keep_alive_is_bounded_in_count() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, max_kept=1)
    cache.ingest(answer("a.com", ("a.com", A, 10, "10.0.0.1")))
    cache.ingest(answer("b.com", ("b.com", A, 10, "10.0.0.1")))
    cache.keep_alive("10.0.0.1", "10.0.0.2")  # the second mark is over max_kept
    clock.now = 10
    cache.expire()
    assert len([n for n in ("a.com", "b.com") if cache.ips(n)]) == 1
    assert cache.stats.keep_alive_refused == 2


def test_a_real_answer_ends_keep_alive_for_its_pair() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock, keep_alive_period=30)
    cache.ingest(answer("a.com", ("a.com", A, 10, "10.0.0.1")))
    cache.keep_alive("10.0.0.1")
    clock.now = 10
    cache.expire()
    cache.ingest(answer("a.com", ("a.com", A, 100, "10.0.0.1")))
    assert cache.expiries("a.com") == {"10.0.0.1": 110}
    assert cache._zombies == {}


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"min_ttl": -1}, "min_ttl"),
        ({"min_ttl": 10, "max_ttl": 5}, "max_ttl"),
        ({"max_ttl": float("inf")}, "max_ttl"),
        ({"max_names": 0}, "max_names"),
        ({"max_ips_per_name": 1.5}, "max_ips_per_name"),
        ({"max_chain_depth": 0}, "max_chain_depth"),
        ({"trusted_servers": ["10.0.0.1", "dns.local"]}, "trusted_servers[1]"),
    ],
)
def test_bad_options_raise_invalid_policy_naming_the_option(
    options: dict[str, object], path: str
) -> None:
    with pytest.raises(InvalidPolicy) as info:
        DNSCache(**options)  # type: ignore[arg-type]
    assert [p.path for p in info.value.problems] == [path]


def test_readers_never_see_half_of_an_answer() -> None:
    cache = make_cache(max_names=10_000)
    ips = {f"10.0.{i}.{j}" for i in range(2) for j in range(3)}
    done = threading.Event()
    seen_partial: list[tuple[str, set[str]]] = []

    def write() -> None:
        for i in range(1500):
            cache.ingest(
                answer(
                    f"q{i}.com",
                    (f"q{i}.com", CNAME, 60, f"t{i}.com"),
                    *((f"t{i}.com", A, 60, ip) for ip in sorted(ips)),
                )
            )
        done.set()

    def read() -> None:
        while not done.is_set():
            for name in list(cache.names()):
                got = cache.ips(name)
                if got != ips:
                    seen_partial.append((name, got))

    threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen_partial == []
    assert len(cache) == 3000


def test_a_longer_path_with_a_later_weakest_link_wins() -> None:
    clock = FakeClock(0)
    cache = make_cache(clock)
    cache.ingest(answer("q.com", ("q.com", CNAME, 5, "a.com"), ("a.com", A, 100, "10.0.0.1")))
    cache.ingest(answer("q.com", ("q.com", CNAME, 100, "b.com"), ("b.com", CNAME, 100, "a.com")))
    assert cache.expiries("q.com") == {"10.0.0.1": 100}  # q -> b -> a beats q -> a
