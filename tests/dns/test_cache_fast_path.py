"""The ingest fast path (new names, ``q CNAME ... -> addresses``) against the general path.

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
from tests.dns.helpers import AAAA, CNAME, A, FakeClock, answer

NAMES = [f"n{i}.example" for i in range(8)]
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1"]
TTLS = [1, 3, 30, 30, 30, 30, 0, -1, 2**31]


def watched(cache: DNSCache) -> list[int]:
    """Wrap the cache's fast path; the returned list counts the answers it took."""
    taken = [0]
    inner = cache._ingest_new

    def counting(*args: object) -> list[DNSChange] | None:
        result = inner(*args)  # type: ignore[arg-type]
        if result is not None:
            taken[0] += 1
        return result

    cache._ingest_new = counting  # type: ignore[method-assign,assignment]
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
    for name in NAMES:
        assert fast.expiries(name) == slow.expiries(name)


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
        if isinstance(step, int):
            clock.advance(step)
            assert fast.expire() == slow.expire()
        else:
            assert fast.ingest(step) == slow.ingest(step)
        assert batches[0] == batches[1]
        assert_same_state(fast, slow)
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


def test_fast_path_events_are_ordinary_frozen_changes() -> None:
    # The fast path fills DNSChange's slots directly; that is only right while these are
    # all its fields (no defaults, validators or converters to run).
    assert [f.name for f in attrs.fields(DNSChange)] == ["name", "ip", "added", "expiry"]
    assert all(f.validator is None and f.converter is None for f in attrs.fields(DNSChange))
    fast, _, _ = pair()
    (change,) = fast.ingest(answer("q.example", ("q.example", A, 60, "10.0.0.1")))
    expected = DNSChange("q.example", "10.0.0.1", True, 160.0)
    assert type(change) is DNSChange
    assert change == expected
    assert hash(change) == hash(expected)
    assert repr(change) == repr(expected)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
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
