"""Speed of DNS answer extraction (fast path against dnspython) and of cache.observe.

Run: ``.venv/bin/pytest benchmarks/bench_dns_wire.py --benchmark-only -s``. Messages per
second are in each result's ``extra_info`` and printed with ``-s``.

The "typical response" is the one the issue names: a question, one CNAME and three A records,
compressed as servers write it. "Distinct" runs cycle through 20,000 such responses for
different names, so no cache of names (ours or the DNS cache's) can help; "same" runs feed
one response over and over, as a busy node sees for popular names.

The ``cache.observe`` cases of answers the cache already holds compare two caches fed the same
responses in alternating rounds, so both see the same machine load: one with the cache's ingest
fast paths switched off (how these answers were learned before the refresh fast path) and one
with them on (the figure pytest-benchmark records). Each prints both and the ratio, also kept
in ``extra_info``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dns.message
import dns.rrset
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.wire import extract_message, extract_wire, extract_wire_fast

SERVER = "10.96.0.10:53"
DISTINCT = 20_000
BATCH = 2_000


def typical_response(i: int) -> bytes:
    name = f"api{i}.team{i % 97}.example.com."
    query = dns.message.make_query(name, "A", id=i & 0xFFFF)
    response = dns.message.make_response(query)
    target = f"edge{i}.cdn.example.net."
    response.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", target))
    addresses = [f"10.{i >> 8 & 255}.{i & 255}.{k}" for k in (1, 2, 3)]
    response.answer.append(dns.rrset.from_text(target, 60, "IN", "A", *addresses))
    return response.to_wire(want_shuffle=False)


@pytest.fixture(scope="module")
def distinct() -> list[bytes]:
    return [typical_response(i) for i in range(DISTINCT)]


def _report(benchmark: BenchmarkFixture, count: int, what: str) -> None:
    # The best round is the figure least disturbed by other work on a shared machine.
    assert benchmark.stats is not None
    stats = benchmark.stats.stats
    mean_rate, best_rate = count / stats.mean, count / stats.min
    benchmark.extra_info["per_second_mean"] = round(mean_rate)
    benchmark.extra_info["per_second_best"] = round(best_rate)
    print(
        f"\n{what}: {mean_rate:,.0f}/s mean ({stats.mean / count * 1e6:.3f} us each), "
        f"{best_rate:,.0f}/s best round ({stats.min / count * 1e6:.3f} us each)"
    )


def _versus(
    benchmark: BenchmarkFixture,
    make_round: Callable[[bool], Callable[[], None]],
    count: int,
    what: str,
    rounds: int = 20,
    labels: tuple[str, str] = ("fast paths", "general path"),
) -> None:
    """Time ``count`` responses per round on the general path and the fast paths, alternately.

    ``make_round(fast)`` builds a cache (fast paths on or off) and returns one round of
    feeding it. The general round runs in pytest-benchmark's untimed setup, timed here.
    ``labels`` name the two kinds of round (``make_round(True)``'s first).
    """
    general_round, fast_round = make_round(False), make_round(True)
    general: list[float] = []

    def setup() -> None:
        start = time.perf_counter()
        general_round()
        general.append(time.perf_counter() - start)

    benchmark.pedantic(fast_round, setup=setup, rounds=rounds, iterations=1)  # type: ignore[no-untyped-call]
    _report(benchmark, count, f"{what} [{labels[0]}]")
    assert benchmark.stats is not None
    fast_best, general_best = benchmark.stats.stats.min, min(general)
    benchmark.extra_info["per_second_best_general"] = round(count / general_best)
    benchmark.extra_info["speedup_vs_general"] = round(general_best / fast_best, 2)
    print(
        f"{what} [{labels[1]}]: {count / general_best:,.0f}/s best round "
        f"({general_best / count * 1e6:.3f} us each); {labels[0]} "
        f"{general_best / fast_best:.2f}x (best rounds, alternating, same process)"
    )


def test_extract_wire_same_typical_response(benchmark: BenchmarkFixture) -> None:
    data = typical_response(1)
    assert extract_wire_fast(data) is not None  # the benchmark measures the fast path

    def run() -> None:
        for _ in range(BATCH):
            extract_wire(data)

    benchmark(run)
    _report(benchmark, BATCH, "extract_wire, same typical response")


def countdown_variants() -> list[bytes]:
    """One response as a caching resolver repeats it: ID and TTLs change every time."""
    base = typical_response(1)
    variants = []
    for ttl in range(300, 0, -1):
        repeat = bytearray(base)
        repeat[0:2] = ttl.to_bytes(2, "big")
        for at in range(len(repeat) - 4):
            if bytes(repeat[at : at + 4]) in (b"\x00\x00\x01\x2c", b"\x00\x00\x00\x3c"):  # 300, 60
                repeat[at : at + 4] = min(ttl, 60 if repeat[at + 3] == 0x3C else ttl).to_bytes(
                    4, "big"
                )
        variants.append(bytes(repeat))
    assert len({extract_wire(v).records[1].ttl for v in variants}) == 60
    return variants


def test_extract_wire_same_response_ttl_counting_down(benchmark: BenchmarkFixture) -> None:
    # No two consecutive messages are equal, so each is rebuilt from the remembered layout.
    variants = countdown_variants()

    def run() -> None:
        for data in variants:
            extract_wire(data)

    benchmark(run)
    _report(benchmark, len(variants), "extract_wire, same response, TTLs counting down")


def test_extract_wire_distinct_typical_responses(
    benchmark: BenchmarkFixture, distinct: list[bytes]
) -> None:
    def run() -> None:
        for data in distinct:
            extract_wire(data)

    benchmark(run)
    _report(benchmark, len(distinct), "extract_wire, distinct typical responses")


def test_dnspython_from_wire_and_extract_message(
    benchmark: BenchmarkFixture, distinct: list[bytes]
) -> None:
    sample = distinct[:BATCH]

    def run() -> None:
        for data in sample:
            extract_message(dns.message.from_wire(data))

    benchmark.pedantic(run, rounds=3, iterations=1)  # type: ignore[no-untyped-call]
    _report(benchmark, len(sample), "dnspython from_wire + extract_message")


def test_cache_observe_same_typical_response(benchmark: BenchmarkFixture) -> None:
    data = typical_response(1)

    def make_round(fast: bool) -> Callable[[], None]:
        cache = DNSCache(trusted_servers=[SERVER], clock=lambda: 1000.0)
        cache.observe(data, server=SERVER)
        assert cache.ips("api1.team1.example.com")
        cache.subscribe(lambda batch: None)  # the engine always listens
        cache._fast_path = fast

        def run() -> None:
            for _ in range(BATCH):
                cache.observe(data, server=SERVER)

        return run

    _versus(benchmark, make_round, BATCH, "cache.observe, same typical response (refresh)")


@pytest.mark.parametrize("report_refresh", [False, True], ids=["quiet", "report_refresh"])
def test_cache_observe_same_response_ttl_counting_down(
    benchmark: BenchmarkFixture, report_refresh: bool
) -> None:
    # The clock moves 10 ms per response while the TTL drops by a second, so the CNAME's
    # deadline never extends and the addresses' (TTL capped at 60) does for 240 of the 300.
    variants = countdown_variants()

    def make_round(fast: bool) -> Callable[[], None]:
        now = [1000.0]
        cache = DNSCache(
            trusted_servers=[SERVER], clock=lambda: now[0], report_refresh=report_refresh
        )
        cache.observe(variants[0], server=SERVER)
        cache.subscribe(lambda batch: None)
        cache._fast_path = fast

        def run() -> None:
            for data in variants:
                now[0] += 0.01
                cache.observe(data, server=SERVER)
            assert cache.ips("api1.team1.example.com")

        return run

    what = "cache.observe, same response, TTLs counting down"
    _versus(benchmark, make_round, len(variants), what + ", report_refresh" * report_refresh)


def test_cache_observe_many_same_response_ttl_counting_down(benchmark: BenchmarkFixture) -> None:
    # The countdown case above handed over in one batch; the clock moves 10 ms at each read
    # (one per response either way), and the other round observes one response at a time.
    variants = countdown_variants()
    pairs = [(data, SERVER) for data in variants]

    def make_round(batched: bool) -> Callable[[], None]:
        now = [1000.0]

        def clock() -> float:
            now[0] += 0.01
            return now[0]

        cache = DNSCache(trusted_servers=[SERVER], clock=clock)
        cache.observe(variants[0], server=SERVER)
        cache.subscribe(lambda batch: None)

        def run() -> None:
            if batched:
                cache.observe_many(pairs)
            else:
                for data in variants:
                    cache.observe(data, server=SERVER)
            assert cache.ips("api1.team1.example.com")

        return run

    what = "cache.observe_many, same response, TTLs counting down"
    _versus(benchmark, make_round, len(variants), what, labels=("batch", "one at a time"))


def test_cache_observe_distinct_typical_responses(
    benchmark: BenchmarkFixture, distinct: list[bytes]
) -> None:
    def make_round(fast: bool) -> Callable[[], None]:
        now = [1000.0]
        cache = DNSCache(trusted_servers=[SERVER], clock=lambda: now[0], max_names=1_000_000)
        for data in distinct:
            cache.observe(data, server=SERVER)
        cache.subscribe(lambda batch: None)
        cache._fast_path = fast

        def run() -> None:
            now[0] += 1.0  # each round refreshes what the previous one learned
            for data in distinct:
                cache.observe(data, server=SERVER)
            assert len(cache.ips("api7.team7.example.com")) == 3

        return run

    what = "cache.observe, distinct typical responses (refresh)"
    _versus(benchmark, make_round, len(distinct), what, rounds=6)
