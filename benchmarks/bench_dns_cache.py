"""Speed and memory of the DNS cache itself (answers already extracted).

Run: ``.venv/bin/pytest benchmarks/bench_dns_cache.py --benchmark-only -s``. Per-answer times,
bytes per entry and so on are in each result's ``extra_info`` and printed with ``-s``.

The "typical answer" is the issue's: a question, one CNAME and three A records. The issue asks
for 100,000 such responses per second from wire bytes; ``test_observe_new_typical_responses``
measures exactly that in the honest case, every response teaching new names (``cache.observe``
from bytes, a fresh cache each round), and ``test_observe_many_new_typical_responses`` the same
responses handed over in one batch (``cache.observe_many``), against one at a time in
alternating rounds. Both also report how many times as long dnspython's ``from_wire`` takes for
the same messages in the same run: the issue states its goal against that yardstick (~150 us,
so about 15 times), and the machine's speed changes from day to day. ``bench_dns_wire.py``
measures the repeated and TTL-countdown cases and extraction alone.

Memory is measured by building a cache of 1,000,000 (name, IP) address entries in two shapes
(one IP per name, the worst case; four IPs per name, a typical answer) and reading both the
traced Python allocations (tracemalloc) and the growth of the process's resident set. The
index behind ``names_matching`` is built on the first pattern lookup; its cost is reported
separately (``bytes_per_entry_index_rss``), as a cache that no pattern ever asks does not pay it.
"""

from __future__ import annotations

import gc
import math
import resource
import time
import tracemalloc
from collections.abc import Callable

import dns.message
import dns.rrset
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.wire import Extracted, Record
from fqdnpolicy.domains import parse_domain_pattern

BATCH = 20_000
SERVER = "10.96.0.10:53"
ENTRIES = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def typical(i: int) -> Extracted:
    name = f"api{i}.team{i % 97}.example.com"
    target = f"edge{i}.cdn.example.net"
    records = [Record(name, 5, 300, target)]
    records += [Record(target, 1, 60, f"10.{i >> 8 & 255}.{i & 255}.{k}") for k in (1, 2, 3)]
    return Extracted(name, True, 0, 0, False, tuple(records))


def _report(benchmark: BenchmarkFixture, count: int, what: str) -> None:
    assert benchmark.stats is not None
    stats = benchmark.stats.stats
    benchmark.extra_info["us_each_mean"] = round(stats.mean / count * 1e6, 3)
    benchmark.extra_info["us_each_best"] = round(stats.min / count * 1e6, 3)
    print(
        f"\n{what}: {stats.mean / count * 1e6:.3f} us each mean, "
        f"{stats.min / count * 1e6:.3f} us best round ({count / stats.min:,.0f}/s)"
    )


def typical_wire(i: int) -> bytes:
    """``typical(i)`` as a server writes it (compressed names), in wire format."""
    name = f"api{i}.team{i % 97}.example.com."
    response = dns.message.make_response(dns.message.make_query(name, "A", id=i & 0xFFFF))
    target = f"edge{i}.cdn.example.net."
    response.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", target))
    addresses = [f"10.{i >> 8 & 255}.{i & 255}.{k}" for k in (1, 2, 3)]
    response.answer.append(dns.rrset.from_text(target, 60, "IN", "A", *addresses))
    return response.to_wire(want_shuffle=False)


@pytest.fixture(scope="module")
def answers() -> list[Extracted]:
    return [typical(i) for i in range(BATCH)]


def test_ingest_new_typical_answers(benchmark: BenchmarkFixture, answers: list[Extracted]) -> None:
    """Every answer teaches new names (4 links, 6 effective pairs, 6 change events)."""
    caches: list[DNSCache] = []

    def setup() -> tuple[tuple[DNSCache], dict[str, object]]:
        cache = DNSCache(clock=Clock(), max_names=1_000_000)
        cache.subscribe(lambda batch: None)  # the engine always listens
        caches.append(cache)
        return (cache,), {}

    def run(cache: DNSCache) -> None:
        ingest = cache.ingest
        for answer in answers:
            ingest(answer)

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)  # type: ignore[no-untyped-call]
    assert caches[-1].ips(answers[7].qname or "") == {"10.0.7.1", "10.0.7.2", "10.0.7.3"}
    _report(benchmark, len(answers), "ingest, new typical answers")


@pytest.fixture(scope="module")
def new_responses() -> list[bytes]:
    return [typical_wire(i) for i in range(BATCH)]


@pytest.fixture(scope="module")
def dnspython_us(new_responses: list[bytes]) -> float:
    """dnspython's ``from_wire`` on the same responses, best of three rounds: the yardstick.

    The issue sets its figure by it (~150 us "here", so 100,000 responses per second is about
    15 times faster), and these machines change speed from day to day, so the all-new cases
    report their ratio to it, measured in the same run.
    """
    sample = new_responses[:2000]
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for data in sample:
            dns.message.from_wire(data)
        best = min(best, time.perf_counter() - start)
    return best / len(sample) * 1e6


def _observe_new(
    benchmark: BenchmarkFixture,
    responses: list[bytes],
    dnspython_us: float,
    feed: Callable[[DNSCache], None],
    what: str,
    versus: Callable[[DNSCache], None] | None = None,
) -> None:
    """Time ``feed`` into a fresh cache per round; ``versus`` alternately, in the setup."""
    caches: list[DNSCache] = []
    versus_times: list[float] = []

    def fresh() -> DNSCache:
        cache = DNSCache(clock=Clock(), max_names=1_000_000, trusted_servers=[SERVER])
        cache.subscribe(lambda batch: None)  # the engine always listens
        return cache

    def setup() -> tuple[tuple[DNSCache], dict[str, object]]:
        if versus is not None:
            other = fresh()
            start = time.perf_counter()
            versus(other)
            versus_times.append(time.perf_counter() - start)
        caches.append(fresh())
        return (caches[-1],), {}

    benchmark.pedantic(feed, setup=setup, rounds=5, iterations=1)  # type: ignore[no-untyped-call]
    assert len(caches[-1]) == 2 * len(responses)
    assert caches[-1].ips("api7.team7.example.com") == {"10.0.7.1", "10.0.7.2", "10.0.7.3"}
    assert benchmark.stats is not None
    best_us = benchmark.stats.stats.min / len(responses) * 1e6
    benchmark.extra_info["per_second_best"] = round(1e6 / best_us)
    benchmark.extra_info["dnspython_from_wire_us"] = round(dnspython_us, 1)
    benchmark.extra_info["times_faster_than_dnspython"] = round(dnspython_us / best_us, 1)
    _report(benchmark, len(responses), what)
    print(
        f"  dnspython from_wire of the same: {dnspython_us:.0f} us, "
        f"{dnspython_us / best_us:.1f}x as long (the issue's goal: ~15x, 10 us at its 150 us)"
    )
    if versus_times:
        ratio = min(versus_times) / benchmark.stats.stats.min
        benchmark.extra_info["speedup_vs_one_at_a_time"] = round(ratio, 2)
        print(
            f"  observe one at a time, alternating rounds: "
            f"{min(versus_times) / len(responses) * 1e6:.3f} us best round; this {ratio:.2f}x"
        )


def _observe_each(responses: list[bytes]) -> Callable[[DNSCache], None]:
    def feed(cache: DNSCache) -> None:
        observe = cache.observe
        for data in responses:
            observe(data, server=SERVER)

    return feed


def test_observe_new_typical_responses(
    benchmark: BenchmarkFixture, new_responses: list[bytes], dnspython_us: float
) -> None:
    """The issue's figure, end to end from wire bytes: every response teaches new names."""
    feed = _observe_each(new_responses)
    what = "observe from wire bytes, new typical responses"
    _observe_new(benchmark, new_responses, dnspython_us, feed, what)


def test_observe_many_new_typical_responses(
    benchmark: BenchmarkFixture, new_responses: list[bytes], dnspython_us: float
) -> None:
    """The same responses handed over in one batch, as a snooper reading a packet ring does."""
    pairs = [(data, SERVER) for data in new_responses]

    def feed(cache: DNSCache) -> None:
        cache.observe_many(pairs)

    what = "observe_many from wire bytes, new typical responses"
    versus = _observe_each(new_responses)
    _observe_new(benchmark, new_responses, dnspython_us, feed, what, versus=versus)


@pytest.mark.parametrize("report_refresh", [False, True], ids=["quiet", "report_refresh"])
def test_ingest_refreshed_typical_answers(
    benchmark: BenchmarkFixture, answers: list[Extracted], report_refresh: bool
) -> None:
    """The steady state: known names answered again later (every deadline extends).

    Two caches get the same rounds alternately, so both see the same machine load: one with
    the ingest fast paths switched off (how these answers were learned before the refresh
    fast path; timed here in the untimed setup) and one with them on (the recorded figure).
    Without ``report_refresh`` there are no events, with it six per answer.
    """

    def make_round(fast: bool) -> Callable[[], None]:
        clock = Clock()
        cache = DNSCache(clock=clock, max_names=1_000_000, report_refresh=report_refresh)
        cache.subscribe(lambda batch: None)
        for answer in answers:
            cache.ingest(answer)
        cache._fast_path = fast

        def run() -> None:
            clock.now += 1.0
            ingest = cache.ingest
            for answer in answers:
                ingest(answer)

        return run

    what = f"ingest, refreshed typical answers{', report_refresh' * report_refresh}"
    _against_general(benchmark, make_round, len(answers), what)


def test_ingest_new_addresses_of_known_names(benchmark: BenchmarkFixture) -> None:
    """Known names answered with one more address each (a resolver rotating a pool).

    As above, alternating rounds with the fast paths off and on; each round gives each of
    20,000 names (holding addresses, no CNAME) an address it did not hold.
    """
    names = [f"host{i}.pool{i % 100}.example.com" for i in range(20_000)]

    def make_round(fast: bool) -> Callable[[], None]:
        clock = Clock()
        cache = DNSCache(clock=clock, max_names=1_000_000)
        cache.subscribe(lambda batch: None)
        for i, name in enumerate(names):
            cache.ingest(
                Extracted(
                    name, True, 0, 0, False, (Record(name, 1, 300, f"10.0.{i >> 8}.{i & 255}"),)
                )
            )
        cache._fast_path = fast
        rounds = iter(range(1, 1000))

        def run() -> None:
            r = next(rounds)
            clock.now += 1.0
            ingest = cache.ingest
            for i, name in enumerate(names):
                ip = f"10.{r}.{i >> 8}.{i & 255}"
                ingest(Extracted(name, True, 0, 0, False, (Record(name, 1, 300, ip),)))

        return run

    _against_general(benchmark, make_round, len(names), "ingest, new addresses of known names")


def _against_general(
    benchmark: BenchmarkFixture,
    make_round: Callable[[bool], Callable[[], None]],
    count: int,
    what: str,
) -> None:
    """Time ``make_round(True)`` rounds, each after one of ``make_round(False)`` (reported)."""
    general_round, fast_round = make_round(False), make_round(True)
    general: list[float] = []

    def setup() -> None:
        start = time.perf_counter()
        general_round()
        general.append(time.perf_counter() - start)

    benchmark.pedantic(fast_round, setup=setup, rounds=10, iterations=1)  # type: ignore[no-untyped-call]
    _report(benchmark, count, f"{what} [fast paths]")
    assert benchmark.stats is not None
    fast_best, general_best = benchmark.stats.stats.min, min(general)
    benchmark.extra_info["us_each_best_general"] = round(general_best / count * 1e6, 3)
    benchmark.extra_info["speedup_vs_general"] = round(general_best / fast_best, 2)
    print(
        f"{what} [general path]: {general_best / count * 1e6:.3f} us best round "
        f"({count / general_best:,.0f}/s); fast paths {general_best / fast_best:.2f}x "
        "(best rounds, alternating, same process)"
    )


def _fill(shape_ips: int) -> tuple[DNSCache, Callable[[], None]]:
    clock = Clock()
    cache = DNSCache(clock=clock, max_names=ENTRIES, max_ips_per_name=16)
    names = ENTRIES // shape_ips

    def fill() -> None:
        ingest = cache.ingest
        for i in range(names):
            name = f"host{i}.svc{i % 1000}.example.com"
            records = tuple(
                Record(name, 1, 300, f"10.{i >> 14 & 255}.{i >> 6 & 255}.{(i & 63) * 4 + k}")
                for k in range(shape_ips)
            )
            clock.now += 0.0001
            ingest(Extracted(name, True, 0, 0, False, records))

    return cache, fill


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


@pytest.mark.parametrize("ips_per_name", [1, 4])
def test_memory_of_one_million_entries(benchmark: BenchmarkFixture, ips_per_name: int) -> None:
    """Bytes per (name, IP) entry: growth of the process's resident set, then traced bytes."""
    result: dict[str, float] = {}

    def run() -> None:
        gc.collect()
        before = _rss()
        cache, fill = _fill(ips_per_name)
        fill()
        gc.collect()
        result["rss"] = _rss() - before
        assert len(cache) == ENTRIES // ips_per_name
        sample = list(cache.names())[:1000]
        assert sum(len(cache.expiries(n)) for n in sample) == 1000 * ips_per_name
        # The first pattern lookup builds the suffix index (a reversed copy of every name).
        assert len(cache.names_matching(parse_domain_pattern("*.svc7.example.com"))) > 0
        gc.collect()
        result["index_rss"] = _rss() - before - result["rss"]
        del cache, fill
        gc.collect()
        # Again under tracemalloc, which counts exactly what Python allocates (slower).
        tracemalloc.start()
        kept, fill = _fill(ips_per_name)
        fill()
        gc.collect()
        result["traced"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert len(kept) == ENTRIES // ips_per_name

    benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    benchmark.extra_info["bytes_per_entry_rss"] = round(result["rss"] / ENTRIES, 1)
    benchmark.extra_info["bytes_per_entry_traced"] = round(result["traced"] / ENTRIES, 1)
    benchmark.extra_info["bytes_per_entry_index_rss"] = round(result["index_rss"] / ENTRIES, 1)
    print(
        f"\n1,000,000 entries as {ips_per_name} IP(s) per name: process RSS grew "
        f"{result['rss'] / 1e6:.0f} MB ({result['rss'] / ENTRIES:.0f} B/entry); traced "
        f"{result['traced'] / 1e6:.0f} MB ({result['traced'] / ENTRIES:.0f} B/entry); "
        f"names_matching index {result['index_rss'] / ENTRIES:.0f} B/entry more"
    )


def test_expire_100000_due_entries(benchmark: BenchmarkFixture) -> None:
    """100,000 names with one IP each all fall due at once: one expire() removes them."""
    count = 100_000

    def setup() -> tuple[tuple[DNSCache], dict[str, object]]:
        clock = Clock()
        cache = DNSCache(clock=clock, max_names=count)
        cache.subscribe(lambda batch: None)
        for i in range(count):
            name = f"x{i}.example.com"
            cache.ingest(Extracted(name, True, 0, 0, False, (Record(name, 1, 30, "10.0.0.1"),)))
        clock.now += 31
        return (cache,), {}

    changes: list[int] = []

    def run(cache: DNSCache) -> None:
        changes.append(len(cache.expire()))

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)  # type: ignore[no-untyped-call]
    assert changes == [count] * 3
    _report(benchmark, count, "expire, per due entry")


def test_names_matching_a_late_pattern(benchmark: BenchmarkFixture) -> None:
    """A pattern added after 100,000 names are cached finds its 100 without a full scan."""
    clock = Clock()
    cache = DNSCache(clock=clock, max_names=200_000)
    for i in range(100_000):
        name = f"h{i}.zone{i % 1000}.example.com"
        cache.ingest(Extracted(name, True, 0, 0, False, (Record(name, 1, 300, "10.0.0.1"),)))
    pattern = parse_domain_pattern("*.zone7.example.com")

    def run() -> set[str]:
        return cache.names_matching(pattern)

    found = benchmark(run)
    assert len(found) == 100
    _report(benchmark, 1, "names_matching(*.zone7.example.com) among 100,000 names")
