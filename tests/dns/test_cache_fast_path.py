"""The ingest fast paths against the general path: answers that only add new names
(``q CNAME ... -> addresses``), and refreshes of chains the cache already holds.

A cache with the fast path switched off is the reference: fed the same answers and clock
moves, both must return the same events in the same order, hand subscribers the same batches
and end with the same links, mapping, counters and expiry schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fqdnpolicy.dns import DNSCache, DNSChange
from fqdnpolicy.dns.wire import Extracted, Record
from fqdnpolicy.domains import parse_domain_pattern
from tests.dns.helpers import AAAA, CNAME, A, FakeClock, answer

NAMES = [f"n{i}.example" for i in range(8)]
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1"]
TTLS = [1, 3, 30, 30, 30, 30, 0, -1, 2**31]


def watched(cache: DNSCache, path: str = "_ingest_new") -> list[int]:
    """Wrap one of the cache's fast paths; the returned list counts the answers it took."""
    taken = [0]
    inner: Callable[..., list[DNSChange] | None] = getattr(cache, path)

    def counting(*args: object) -> list[DNSChange] | None:
        result = inner(*args)
        if result is not None:
            taken[0] += 1
        return result

    setattr(cache, path, counting)
    return taken


def pair(**options: object) -> tuple[DNSCache, DNSCache, FakeClock]:
    clock = FakeClock(100)
    fast = DNSCache(clock=clock, **options)  # type: ignore[arg-type]
    slow = DNSCache(clock=clock, **options)  # type: ignore[arg-type]
    slow._fast_path = False
    return fast, slow, clock


def assert_same_state(fast: DNSCache, slow: DNSCache) -> None:
    assert sorted(map(repr, fast.links())) == sorted(map(repr, slow.links()))
    assert fast.mapping() == slow.mapping()
    assert fast.next_expiry() == slow.next_expiry()
    assert fast.names() == slow.names()
    assert fast.stats == slow.stats
    # Private, but they decide later expiry order and keep-alive bounds.
    assert fast._sched == slow._sched
    assert fast._zombies == slow._zombies
    for name in NAMES + sorted(fast.names()):
        assert fast.expiries(name) == slow.expiries(name)


def step_both(
    fast: DNSCache, slow: DNSCache, clock: FakeClock, step: Extracted | float | str
) -> None:
    """One step for both caches, which must agree: an answer, the clock moving this many
    seconds (then expiry), or connections to this address still seen (a keep-alive)."""
    if isinstance(step, str):
        fast.keep_alive(step)
        slow.keep_alive(step)
    elif isinstance(step, int | float):
        clock.advance(step)
        assert fast.expire() == slow.expire()
    else:
        assert fast.ingest(step) == slow.ingest(step)
    assert_same_state(fast, slow)


@st.composite
def fresh_chains(draw: st.DrawFn) -> Extracted:
    """The fast path's shape (a CNAME chain then addresses of its end), sometimes flawed."""
    chain = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    records = [
        Record(chain[i], CNAME, draw(st.sampled_from(TTLS)), chain[i + 1])
        for i in range(len(chain) - 1)
    ]
    for _ in range(draw(st.integers(1, 3))):
        records.append(
            Record(
                chain[-1],
                draw(st.sampled_from([A, AAAA])),
                draw(st.sampled_from(TTLS)),
                draw(st.sampled_from(IPS)),
            )
        )
    flaw = draw(st.sampled_from(["none"] * 6 + ["shuffle", "stray", "loop", "sinkhole"]))
    if flaw == "shuffle":
        records = draw(st.permutations(records))
    elif flaw == "stray":
        records.append(Record(draw(st.sampled_from(NAMES)), A, 30, draw(st.sampled_from(IPS))))
    elif flaw == "loop":
        records.append(Record(chain[-1], CNAME, 30, chain[0]))
    elif flaw == "sinkhole":
        records.append(Record(chain[-1], A, 30, "0.0.0.0"))
    return answer(chain[0], *records)


steps = st.lists(
    st.one_of(
        fresh_chains(),
        st.integers(0, 40),  # move the clock by this many seconds, then expire
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(
    script=steps,
    max_ips=st.integers(1, 4),
    max_names=st.integers(1, 12),
    depth=st.integers(1, 3),
    min_ttl=st.integers(0, 2),
    report_refresh=st.booleans(),
)
def test_fast_path_gives_the_general_paths_events_and_state(
    script: list[Extracted | int],
    max_ips: int,
    max_names: int,
    depth: int,
    min_ttl: int,
    report_refresh: bool,
) -> None:
    fast, slow, clock = pair(
        max_ips_per_name=max_ips,
        max_names=max_names,
        max_chain_depth=depth,
        min_ttl=min_ttl,
        max_ttl=60,
        report_refresh=report_refresh,
    )
    batches: tuple[list[list[DNSChange]], list[list[DNSChange]]] = ([], [])
    fast.subscribe(batches[0].append)
    slow.subscribe(batches[1].append)
    taken = watched(fast)
    for step in script:
        step_both(fast, slow, clock, step)
        assert batches[0] == batches[1]
    event(f"fast path taken: {min(taken[0], 3)}+")


def typical(i: int, cnames: int = 1, ips: int = 3) -> Extracted:
    chain = [f"q{i}.example"] + [f"c{i}-{k}.cdn.example" for k in range(cnames)]
    records = [(chain[k], CNAME, 300, chain[k + 1]) for k in range(cnames)]
    records += [(chain[-1], A, 60, f"10.0.{i}.{k}") for k in range(ips)]
    return answer(chain[0], *records)


@pytest.mark.parametrize(
    ("cnames", "ips"), [(0, 1), (0, 4), (1, 1), (1, 3), (3, 2)], ids=lambda v: str(v)
)
def test_typical_new_answers_take_the_fast_path(cnames: int, ips: int) -> None:
    fast, slow, clock = pair(report_refresh=True)
    taken = watched(fast)
    for i in range(50):
        clock.advance(0.5)
        assert fast.ingest(typical(i, cnames, ips)) == slow.ingest(typical(i, cnames, ips))
    assert taken[0] == 50
    assert_same_state(fast, slow)
    clock.advance(400)
    assert fast.expire() == slow.expire()
    assert_same_state(fast, slow)
    assert len(fast) == 0


def known_name(cache: DNSCache) -> None:
    cache.ingest(typical(1))


def dangling_target(cache: DNSCache) -> None:
    cache.ingest(answer("other.example", ("other.example", CNAME, 60, "c1-0.cdn.example")))


def full_cache(cache: DNSCache) -> None:
    for i in range(10, 12):
        cache.ingest(typical(i, cnames=0, ips=1))


@pytest.mark.parametrize(
    "prepare",
    [known_name, dangling_target, full_cache],
    ids=["question known", "chain end is a CNAME target", "cache at max_names"],
)
def test_answers_touching_other_names_or_bounds_take_the_general_path(
    prepare: Callable[[DNSCache], None],
) -> None:
    fast, slow, clock = pair(max_names=3)
    for cache in (fast, slow):
        prepare(cache)
    taken = watched(fast)
    clock.advance(1)
    assert fast.ingest(typical(1)) == slow.ingest(typical(1))
    assert taken[0] == 0
    assert_same_state(fast, slow)


@pytest.mark.parametrize(
    "records",
    [
        [("q.example", A, 60, "0.0.0.0")],
        [("q.example", A, 0, "10.0.0.1")],
        [("q.example", CNAME, 60, "q.example"), ("q.example", A, 60, "10.0.0.1")],
        [("q.example", A, 60, "10.0.0.1"), ("q.example", CNAME, 60, "t.example")],
        [("q.example", CNAME, 60, "t.example")],
        [("q.example", A, 60, f"10.0.0.{k}") for k in range(3)],
    ],
    ids=["sinkhole", "zero lifetime", "self loop", "address first", "no address", "over cap"],
)
def test_unusual_answers_take_the_general_path(records: list[tuple[str, int, int, str]]) -> None:
    fast, slow, _ = pair(min_ttl=0, max_ips_per_name=2)
    taken = watched(fast)
    assert fast.ingest(answer("q.example", *records)) == slow.ingest(answer("q.example", *records))
    assert taken[0] == 0
    assert_same_state(fast, slow)


def test_fast_path_events_are_ordinary_immutable_changes() -> None:
    # The fast paths build DNSChange with tuple.__new__; that is only right while these are
    # all its fields (a NamedTuple runs no validation or conversion in its constructor).
    assert DNSChange._fields == ("name", "ip", "added", "expiry")
    fast, _, _ = pair()
    (change,) = fast.ingest(answer("q.example", ("q.example", A, 60, "10.0.0.1")))
    expected = DNSChange("q.example", "10.0.0.1", True, 160.0)
    assert type(change) is DNSChange
    assert change == expected
    assert change != DNSChange("q.example", "10.0.0.1", True, 161.0)
    assert hash(change) == hash(expected)
    assert repr(change) == "DNSChange(name='q.example', ip='10.0.0.1', added=True, expiry=160.0)"
    assert (change.name, change.ip, change.added, change.expiry) == tuple(expected)
    with pytest.raises(AttributeError):
        change.ip = "10.0.0.2"  # type: ignore[misc]


def test_a_repeated_address_is_scheduled_at_its_first_sighting_as_on_the_general_path() -> None:
    # The general path schedules an address when it first appears; a repeat with a later
    # TTL only extends it. The heap key (a lower bound) then orders names due together.
    fast, slow, clock = pair(min_ttl=0, max_ttl=60)
    repeated = answer(
        "n1.example",
        ("n1.example", CNAME, 1, "n2.example"),
        ("n2.example", A, 1, "10.0.0.1"),
        ("n2.example", A, 3, "10.0.0.1"),
    )
    for cache in (fast, slow):
        cache.ingest(answer("n0.example", ("n0.example", A, 3, "10.0.0.1")))
    taken = watched(fast)
    assert fast.ingest(repeated) == slow.ingest(repeated)
    assert taken[0] == 1
    clock.advance(3)
    assert [c.name for c in fast.expire()] == [c.name for c in slow.expire()]
    assert_same_state(fast, slow)


# ------------------------------------------------------------------------------------------
# Refreshes: answers whose links the cache already holds
# ------------------------------------------------------------------------------------------

IP1, IP2, IP3, IP6 = "10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1"

# Answers a resolver gives again and again: (question, CNAME targets in order, addresses).
# They share names on purpose: n3 points into n0's chain beside n1, n4 sits above n0, n7 is
# both the end of n6's chain and a question of its own, n5 holds one address (stored
# compactly), and names n0..n7 are also those of the random new-name answers.
ZONE = [
    ("n0.example", ["n1.example", "n2.example"], [IP1, IP2, IP3]),
    ("n3.example", ["n2.example"], [IP1, IP2, IP3]),
    ("n4.example", ["n0.example", "n1.example", "n2.example"], [IP1, IP2, IP3]),
    ("n5.example", [], [IP1]),
    ("n6.example", ["n7.example"], [IP6]),
    ("n7.example", [], [IP6]),
    ("n2.example", [], [IP1, IP2, IP3]),
]
CNAME_TTL, ADDRESS_TTL = 30, 10


@attrs.frozen
class Send:
    """Send ZONE[entry] again, as a caching resolver would at the clock's now.

    mode: "countdown" (TTL = what the resolver has left; it reloads when that reaches 0),
    "reset" (the resolver just reloaded) or "jitter" (countdown off by one second, as
    resolvers round). ``keep`` picks which addresses the answer lists (at least one), a
    non-zero ``repeat`` lists the first one once more, with that many seconds more TTL, and
    a non-zero ``rotate`` lists pool address 10.0.2.<rotate> too (a resolver rotating
    addresses: new to the chain's end until it expires, which the general path learns).
    """

    entry: int
    mode: str
    keep: tuple[bool, ...]
    repeat: int
    rotate: int = 0


class Resolver:
    """The TTLs a caching resolver hands out for ZONE: counting down from when it loaded."""

    def __init__(self) -> None:
        self.loaded: dict[int, float] = {}

    def answer(self, send: Send, now: float) -> Extracted:
        qname, targets, ips = ZONE[send.entry]
        if send.mode == "reset" or send.entry not in self.loaded:
            self.loaded[send.entry] = now
        age = int(now - self.loaded[send.entry])
        if age >= ADDRESS_TTL:
            self.loaded[send.entry], age = now, 0
        shift = 1 if send.mode == "jitter" else 0
        chain = [qname, *targets]
        records = [
            (chain[k], CNAME, CNAME_TTL - age + shift, chain[k + 1]) for k in range(len(targets))
        ]
        listed = [ip for ip, keep in zip(ips, send.keep, strict=False) if keep] or ips[:1]
        records += [(chain[-1], AAAA if ":" in ip else A, ADDRESS_TTL - age, ip) for ip in listed]
        if send.repeat:
            ip, ttl = listed[0], ADDRESS_TTL - age + send.repeat
            records.append((chain[-1], AAAA if ":" in ip else A, ttl, ip))
        if send.rotate:
            records.append((chain[-1], A, ADDRESS_TTL - age, f"10.0.2.{send.rotate}"))
        return answer(qname, *records)


sends = st.builds(
    Send,
    entry=st.sampled_from([0, 0, 0, 1, 2, 3, 3, 4, 5, 6]),  # repeats are the point
    mode=st.sampled_from(["countdown", "countdown", "reset", "jitter"]),
    keep=st.sampled_from([(True, True, True)] * 4 + [(True, False, True), (False, True, False)]),
    repeat=st.sampled_from([0, 0, 0, 1, -1]),
    rotate=st.sampled_from([0, 0, 0, 1, 2]),
)


@st.composite
def refresh_steps(draw: st.DrawFn) -> list[Send | Extracted | float | str]:
    """Mostly zone answers again, between clock moves, new names and keep-alives."""
    steps: list[Send | Extracted | float | str] = []
    for _ in range(draw(st.integers(8, 40))):
        kind = draw(st.sampled_from(["send"] * 6 + ["new", "tick", "wait", "keep"]))
        if kind == "send":
            steps.append(draw(sends))
        elif kind == "new":  # new names, and links that turn a zone name into a general case
            steps.append(draw(fresh_chains()))
        elif kind == "tick":  # the clock moves a little (TTLs count down), then expire
            steps.append(draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])))
        elif kind == "wait":
            steps.append(draw(st.sampled_from([3.0, 9.5, 40.0])))
        else:  # connections to an address are still seen
            steps.append(draw(st.sampled_from([IP1, IP6])))
    return steps


@settings(max_examples=300, deadline=None)
@given(
    script=refresh_steps(),
    # The simplest values (which hypothesis favours) are those that let the zone fit.
    max_ips=st.sampled_from([4, 3, 1]),
    max_names=st.sampled_from([12, 3]),
    depth=st.sampled_from([4, 3, 2, 1]),
    min_ttl=st.integers(0, 3),
    max_ttl=st.sampled_from([5, 20, 60]),
    extra_ttl=st.integers(0, 1),
    grace_period=st.sampled_from([0, 0.5, 2]),
    report_refresh=st.booleans(),
    max_age=st.sampled_from([8, 2]),
    max_kept=st.sampled_from([10, 1]),
)
def test_refresh_fast_path_gives_the_general_paths_events_and_state(
    script: list[Send | Extracted | float | str],
    max_ips: int,
    max_names: int,
    depth: int,
    min_ttl: int,
    max_ttl: int,
    extra_ttl: int,
    grace_period: float,
    report_refresh: bool,
    max_age: int,
    max_kept: int,
) -> None:
    fast, slow, clock = pair(
        max_ips_per_name=max_ips,
        max_names=max_names,
        max_chain_depth=depth,
        min_ttl=min_ttl,
        max_ttl=max_ttl,
        extra_ttl=extra_ttl,
        grace_period=grace_period,
        report_refresh=report_refresh,
        keep_alive_period=5,
        keep_alive_max_age=max_age,
        max_kept=max_kept,
    )
    batches: tuple[list[list[DNSChange]], list[list[DNSChange]]] = ([], [])
    fast.subscribe(batches[0].append)
    slow.subscribe(batches[1].append)
    taken = watched(fast, "_ingest_refresh")
    resolver = Resolver()
    for step in script:
        step_both(
            fast, slow, clock, resolver.answer(step, clock()) if isinstance(step, Send) else step
        )
        assert batches[0] == batches[1]
    event(f"refresh fast path taken: {min(taken[0], 5)}+")


def known(cache: DNSCache, *entries: int) -> None:
    """Teach ``cache`` the zone entries (reset TTLs) at the clock's now."""
    resolver = Resolver()
    for entry in entries:
        cache.ingest(resolver.answer(Send(entry, "reset", (True, True, True), 0), cache.clock()))


@pytest.mark.parametrize("report_refresh", [False, True], ids=["quiet", "report_refresh"])
@pytest.mark.parametrize("mode", ["countdown", "reset", "jitter"])
def test_typical_refreshes_take_the_refresh_fast_path(mode: str, report_refresh: bool) -> None:
    fast, slow, clock = pair(report_refresh=report_refresh)
    for cache in (fast, slow):
        known(cache, *range(len(ZONE)))
    taken = watched(fast, "_ingest_refresh")
    resolver = Resolver()
    sent = 0
    for step in range(40):
        clock.advance(0.75)
        ex = resolver.answer(Send(step % len(ZONE), mode, (True, True, True), 0), clock())
        assert fast.ingest(ex) == slow.ingest(ex)
        sent += 1
        assert_same_state(fast, slow)
    assert taken[0] == sent
    assert fast.stats.answers == slow.stats.answers == sent + len(ZONE)


def test_refresh_of_some_of_the_addresses_takes_the_fast_path_and_leaves_the_rest() -> None:
    fast, slow, clock = pair(report_refresh=True)
    for cache in (fast, slow):
        known(cache, 0)
    taken = watched(fast, "_ingest_refresh")
    clock.advance(4)
    partial = Resolver().answer(Send(0, "reset", (False, True, False), 0), clock())
    changes = fast.ingest(partial)
    assert changes == slow.ingest(partial)
    assert taken[0] == 1
    assert {(c.name, c.ip) for c in changes} == {(n, IP2) for n in ZONE[0][1] + ["n0.example"]}
    assert fast.expiries("n0.example") == {IP1: 110.0, IP2: 114.0, IP3: 110.0}
    assert_same_state(fast, slow)


@pytest.mark.parametrize("entry", [0, 3], ids=["addresses in a dict", "one address"])
@pytest.mark.parametrize("repeat", [1, -1], ids=["repeat later", "repeat earlier"])
def test_refresh_repeating_an_address_keeps_its_latest_deadline(entry: int, repeat: int) -> None:
    fast, slow, clock = pair(report_refresh=True)
    for cache in (fast, slow):
        known(cache, entry)
    taken = watched(fast, "_ingest_refresh")
    clock.advance(2)
    again = Resolver().answer(Send(entry, "reset", (True, True, True), repeat), clock())
    assert fast.ingest(again) == slow.ingest(again)
    assert taken[0] == 1
    assert fast.expiries(ZONE[entry][0])[IP1] == clock() + ADDRESS_TTL + max(repeat, 0)
    assert_same_state(fast, slow)


def test_refreshing_a_kept_alive_address_makes_it_an_ordinary_link_again() -> None:
    fast, slow, clock = pair(keep_alive_period=3, max_kept=1)
    for cache in (fast, slow):
        known(cache, 3)
        clock.advance(ADDRESS_TTL)
        cache.keep_alive(IP1)
        clock.advance(-ADDRESS_TTL)
    clock.advance(ADDRESS_TTL)
    assert fast.expire() == slow.expire() == []
    assert fast._zombies == slow._zombies != {}
    taken = watched(fast, "_ingest_refresh")
    clock.advance(1)
    again = Resolver().answer(Send(3, "reset", (True, True, True), 0), clock())
    assert fast.ingest(again) == slow.ingest(again)
    assert taken[0] == 1
    assert fast._zombies == slow._zombies == {}
    assert_same_state(fast, slow)


def test_refresh_rebuilds_the_name_index_when_the_general_path_would() -> None:
    fast, slow, clock = pair()
    for cache in (fast, slow):
        known(cache, 0)
        assert cache.names_matching(parse_domain_pattern("*.example")) == {
            "n0.example",
            "n1.example",
            "n2.example",
        }
        cache._names.removed = 2000  # as after many names expired since the index was built
    taken = watched(fast, "_ingest_refresh")
    clock.advance(1)
    again = Resolver().answer(Send(0, "reset", (True, True, True), 0), clock())
    assert fast.ingest(again) == slow.ingest(again)
    assert taken[0] == 1
    assert fast._names.built is slow._names.built is False
    assert_same_state(fast, slow)


TAIL = ("n2.example", A, 10)
REFRESH_FALLBACKS = {
    "a new address": [
        ("n0.example", CNAME, 30, "n1.example"),
        ("n1.example", CNAME, 30, "n2.example"),
        (*TAIL, IP1),
        (*TAIL, "10.0.0.9"),
    ],
    "another CNAME target": [("n0.example", CNAME, 30, "n2.example"), (*TAIL, IP1)],
    "a chain member left out": [("n0.example", CNAME, 30, "n1.example"), (*TAIL, IP1)],
    "addresses of a chain member": [
        ("n0.example", CNAME, 30, "n1.example"),
        ("n1.example", A, 10, IP1),
    ],
    "no address": [
        ("n0.example", CNAME, 30, "n1.example"),
        ("n1.example", CNAME, 30, "n2.example"),
    ],
    "address before CNAME": [
        (*TAIL, IP1),
        ("n0.example", CNAME, 30, "n1.example"),
        ("n1.example", CNAME, 30, "n2.example"),
    ],
    "a sinkhole address": [
        ("n0.example", CNAME, 30, "n1.example"),
        ("n1.example", CNAME, 30, "n2.example"),
        (*TAIL, "0.0.0.0"),
    ],
    "an out-of-chain record": [
        ("n0.example", CNAME, 30, "n1.example"),
        ("n1.example", CNAME, 30, "n2.example"),
        (*TAIL, IP1),
        ("n5.example", A, 10, IP1),
    ],
    "an unsupported record": [
        ("n0.example", CNAME, 30, "n1.example"),
        ("n1.example", CNAME, 30, "n2.example"),
        ("n2.example", 16, 10, "text"),
    ],
    "a zero lifetime": [
        ("n0.example", CNAME, 0, "n1.example"),
        ("n1.example", CNAME, 30, "n2.example"),
        (*TAIL, IP1),
    ],
}


@pytest.mark.parametrize("records", REFRESH_FALLBACKS.values(), ids=REFRESH_FALLBACKS.keys())
def test_answers_that_differ_from_the_held_links_take_the_general_path(
    records: list[tuple[str, int, int, str]],
) -> None:
    fast, slow, clock = pair(min_ttl=0, report_refresh=True)
    for cache in (fast, slow):
        known(cache, 0)
    taken = watched(fast, "_ingest_refresh")
    clock.advance(1)
    assert fast.ingest(answer("n0.example", *records)) == slow.ingest(
        answer("n0.example", *records)
    )
    assert taken[0] == 0
    assert_same_state(fast, slow)


@pytest.mark.parametrize(
    "prepare",
    [
        lambda c: c.ingest(answer("n1.example", ("n1.example", CNAME, 30, "n5.example"))),
        lambda c: c.ingest(answer("n1.example", ("n1.example", A, 30, IP1))),
        lambda c: c.ingest(answer("n2.example", ("n2.example", CNAME, 30, "n5.example"))),
    ],
    ids=["a second CNAME held", "addresses held by a chain member", "a CNAME held by the end"],
)
def test_refreshes_of_chains_holding_more_links_take_the_general_path(
    prepare: Callable[[DNSCache], None],
) -> None:
    fast, slow, clock = pair(report_refresh=True)
    for cache in (fast, slow):
        known(cache, 0)
        prepare(cache)
    taken = watched(fast, "_ingest_refresh")
    clock.advance(1)
    again = Resolver().answer(Send(0, "reset", (True, True, True), 0), clock())
    assert fast.ingest(again) == slow.ingest(again)
    assert taken[0] == 0
    assert_same_state(fast, slow)


def test_refresh_of_a_chain_longer_than_the_depth_limit_takes_the_general_path() -> None:
    fast, slow, clock = pair(max_chain_depth=2)
    for cache in (fast, slow):
        known(cache, 0)
    taken = watched(fast, "_ingest_refresh")
    for _ in range(2):  # the first teaches n4 (new name), the second would be a refresh
        clock.advance(1)
        again = Resolver().answer(Send(2, "reset", (True, True, True), 0), clock())
        assert fast.ingest(again) == slow.ingest(again)
    assert taken[0] == 0
    assert fast.stats.chain_too_deep == 2
    assert_same_state(fast, slow)


# ------------------------------------------------------------------------------------------
# Growth: new addresses of a name that holds only addresses
# ------------------------------------------------------------------------------------------

POOL = [*IPS, "10.0.1.1", "10.0.1.2", "10.0.1.3", "2001:db8::2"]


@st.composite
def grown(draw: st.DrawFn) -> Extracted:
    """Addresses of one name, mostly new to it (a resolver rotating a pool), sometimes flawed."""
    name = draw(st.sampled_from(NAMES))
    records = [
        (name, AAAA if ":" in ip else A, draw(st.sampled_from([30, *TTLS])), ip)
        for ip in draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4))
    ]
    flaw = draw(st.sampled_from(["none"] * 9 + ["stray", "cname", "sinkhole"]))
    if flaw == "stray":
        records.append((draw(st.sampled_from(NAMES)), A, 30, IP2))
    elif flaw == "cname":
        records.append((name, CNAME, 30, draw(st.sampled_from(NAMES))))
    elif flaw == "sinkhole":
        records.append((name, A, 30, "0.0.0.0"))
    return answer(name, *records)


@settings(max_examples=300, deadline=None)
@given(
    script=st.lists(
        st.one_of(
            grown(), grown(), grown(), fresh_chains(), st.integers(0, 40), st.sampled_from(IPS)
        ),
        min_size=1,
        max_size=30,
    ),
    # The simplest values (which hypothesis favours) are those that leave room to grow.
    max_ips=st.sampled_from([6, 4, 2, 1]),
    min_ttl=st.integers(0, 2),
    report_refresh=st.booleans(),
    max_kept=st.sampled_from([10, 0]),
)
def test_growth_fast_path_gives_the_general_paths_events_and_state(
    script: list[Extracted | int | str],
    max_ips: int,
    min_ttl: int,
    report_refresh: bool,
    max_kept: int,
) -> None:
    fast, slow, clock = pair(
        max_ips_per_name=max_ips,
        min_ttl=min_ttl,
        max_ttl=60,
        report_refresh=report_refresh,
        keep_alive_period=5,
        max_kept=max_kept,
    )
    batches: tuple[list[list[DNSChange]], list[list[DNSChange]]] = ([], [])
    fast.subscribe(batches[0].append)
    slow.subscribe(batches[1].append)
    for cache in (fast, slow):  # every name holds an address to start with
        for k, name in enumerate(NAMES):
            cache.ingest(answer(name, (name, A, 30, IPS[k % 3])))
    taken = watched(fast, "_ingest_grown")
    for step in script:
        step_both(fast, slow, clock, step)
        assert batches[0] == batches[1]
    event(f"growth fast path taken: {min(taken[0], 3)}+")


@pytest.mark.parametrize("report_refresh", [False, True], ids=["quiet", "report_refresh"])
@pytest.mark.parametrize("start", [1, 3], ids=["one address held", "addresses in a dict"])
def test_a_name_rotating_addresses_takes_the_growth_fast_path(
    start: int, report_refresh: bool
) -> None:
    fast, slow, clock = pair(report_refresh=report_refresh)
    for cache in (fast, slow):
        cache.ingest(typical(0, cnames=0, ips=start))
    taken = watched(fast, "_ingest_grown")
    for step in range(20):
        clock.advance(1)
        # The pool's next address, and one already held (extended).
        rotated = answer(
            "q0.example",
            ("q0.example", A, 60, f"10.0.9.{step}"),
            ("q0.example", A, 60 + step, "10.0.0.0"),
        )
        changes = fast.ingest(rotated)
        assert changes == slow.ingest(rotated)
        assert ("q0.example", f"10.0.9.{step}", True, clock() + 60) in changes
        assert_same_state(fast, slow)
    assert taken[0] == 20


def pointed_at(cache: DNSCache) -> None:
    cache.ingest(answer("alias.example", ("alias.example", CNAME, 60, "q0.example")))


def holding_a_cname(cache: DNSCache) -> None:
    cache.ingest(answer("q0.example", ("q0.example", CNAME, 60, "t.example")))


@pytest.mark.parametrize(
    ("prepare", "records"),
    [
        (pointed_at, [("q0.example", A, 60, "10.0.9.1")]),
        (holding_a_cname, [("q0.example", A, 60, "10.0.9.1")]),
        (None, [("q0.example", A, 60, f"10.0.9.{k}") for k in range(3)]),
        (None, [("q0.example", A, 60, "10.0.9.1"), ("q0.example", A, 60, "0.0.0.0")]),
        (None, [("q0.example", A, 60, "10.0.9.1"), ("other.example", A, 60, "10.0.9.2")]),
        (None, [("q0.example", A, 60, "10.0.9.1"), ("q0.example", CNAME, 60, "t.example")]),
        (None, [("q0.example", A, 0, "10.0.9.1")]),
    ],
    ids=[
        "a name points at it",
        "it holds a CNAME",
        "over max_ips_per_name",
        "a sinkhole",
        "an out-of-chain record",
        "a CNAME record",
        "zero lifetime",
    ],
)
def test_growth_touching_other_names_or_bounds_takes_the_general_path(
    prepare: Callable[[DNSCache], None] | None, records: list[tuple[str, int, int, str]]
) -> None:
    fast, slow, clock = pair(min_ttl=0, max_ips_per_name=3, report_refresh=True)
    for cache in (fast, slow):
        cache.ingest(typical(0, cnames=0, ips=1))
        if prepare is not None:
            prepare(cache)
    taken = watched(fast, "_ingest_grown")
    clock.advance(1)
    assert fast.ingest(answer("q0.example", *records)) == slow.ingest(
        answer("q0.example", *records)
    )
    assert taken[0] == 0
    assert_same_state(fast, slow)


@pytest.mark.parametrize("order", [(IP1, IP2), (IP2, IP1)], ids=["renewed first", "new first"])
def test_growth_renewing_a_kept_alive_address_makes_it_an_ordinary_link_again(
    order: tuple[str, str],
) -> None:
    fast, slow, clock = pair(keep_alive_period=3, max_kept=1)
    for cache in (fast, slow):
        cache.ingest(answer("q0.example", ("q0.example", A, 10, IP1)))
    clock.advance(10)
    for cache in (fast, slow):
        cache.keep_alive(IP1)
    assert fast.expire() == slow.expire() == []  # IP1 is kept: connections still use it
    assert fast._zombies == slow._zombies != {}
    taken = watched(fast, "_ingest_grown")
    clock.advance(1)
    rotated = answer("q0.example", *[("q0.example", A, 10, ip) for ip in order])
    assert fast.ingest(rotated) == slow.ingest(rotated)
    assert taken[0] == 1
    assert fast._zombies == slow._zombies == {}
    assert_same_state(fast, slow)
