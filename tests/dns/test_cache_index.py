"""names_matching's index (names grouped by parent domain) against a scan of every name."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.dns import DNSCache
from fqdnpolicy.domains import parse_domain_pattern
from tests.dns.helpers import A, FakeClock, answer

PATTERNS = [
    parse_domain_pattern(p)
    for p in ("*.a.test", "*.b.a.test", "a.test", "*.test", "b.a.test", "*.c.test", "test")
]
NAMES = [
    "a.test",
    "b.a.test",
    "x.b.a.test",
    "y.a.test",
    "c.test",
    "z.c.test",
    "test",
    "localhost",
    "ab.test",
    "xa.test",
]


def scan(cache: DNSCache, pattern: object) -> set[str]:
    return {name for name in cache.names() if pattern.matches(name)}  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.one_of(st.sampled_from(NAMES), st.integers(0, 20), st.just("query")), max_size=40
    )
)
def test_names_matching_equals_a_scan_whatever_the_order_of_learning_expiry_and_lookups(
    steps: list[str | int],
) -> None:
    clock = FakeClock(0)
    cache = DNSCache(clock=clock, max_names=6)
    for step in steps:
        if isinstance(step, int):
            clock.advance(step)
            cache.expire()
        elif step == "query":
            for pattern in PATTERNS:
                assert cache.names_matching(pattern) == scan(cache, pattern)
        else:
            cache.ingest(answer(step, (step, A, 10, "10.0.0.1")))
    for pattern in PATTERNS:
        assert cache.names_matching(pattern) == scan(cache, pattern)


def test_index_follows_heavy_churn_after_the_first_lookup_and_stays_bounded() -> None:
    clock = FakeClock(0)
    cache = DNSCache(clock=clock, max_names=300)
    pattern = parse_domain_pattern("*.svc3.example")
    rng = random.Random(7)
    assert cache.names_matching(pattern) == set()  # built empty, then kept up to date
    for i in range(5000):
        clock.advance(0.01)
        name = f"h{rng.randrange(2000)}.svc{rng.randrange(8)}.example"
        cache.ingest(answer(name, (name, A, rng.choice([1, 5, 60]), "10.0.0.1")))
        if i % 250 == 0:
            cache.expire()
            assert cache.names_matching(pattern) == scan(cache, pattern)
    assert cache.names_matching(pattern) == scan(cache, pattern)
    assert len(cache._names.pending) + cache._names.removed <= len(cache) + 1024
    assert cache._names.held() <= 2 * (len(cache) + 1024)
