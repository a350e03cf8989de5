"""Speed of domain parsing and of PatternIndex.match against the naive loop over patterns.

Run: ``.venv/bin/pytest benchmarks/bench_domains.py --benchmark-only``. Names per second are
in each result's ``extra_info`` (``--benchmark-json`` keeps them) and printed with ``-s``.

The index holds 100,000 patterns of realistic shapes, a third of them wildcards; the names
looked up are a fixed-seed mix of exact hits, wildcard hits and misses (unrelated names and
near misses that share a suffix with many patterns), all distinct so no cache can help.
"""

from __future__ import annotations

import random

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fqdnpolicy.domains import (
    DomainPattern,
    PatternIndex,
    canonical_dns_name,
    normalize_name,
    parse_domain_pattern,
)

PATTERNS = 100_000
NAMES = 20_000
NAIVE_NAMES = 20


def _pattern_texts(count: int) -> list[str]:
    """Realistic shapes: two thirds exact names, one third wildcards of several kinds."""
    texts: list[str] = []
    for i in range(count):
        shape = i % 6
        if shape == 0:
            texts.append(f"host{i}.example.org")
        elif shape == 1:
            texts.append(f"api{i}.team{i % 97}.corp.example.net")
        elif shape == 2:
            texts.append(f"svc{i}.prod.eu-west-{i % 3}.internal")
        elif shape == 3:
            texts.append(f"www.shop{i}.com")
        elif shape == 4:
            texts.append(f"*.svc{i}.example.com")
        elif i % 4 == 1:
            texts.append(f"api.*.example{i}.net")
        elif i % 4 == 3:
            texts.append(f"*.s3.*.bucket{i}.amazonaws.com")
        else:
            texts.append(f"*.cdn{i}.example.io")
    return texts


def _names(count: int, seed: int = 20240601) -> list[str]:
    """A fixed mix: 30% exact hits, 30% wildcard hits, 40% misses (a quarter near misses)."""
    rng = random.Random(seed)
    names: list[str] = []
    for n in range(count):
        i = rng.randrange(PATTERNS)
        roll = rng.random()
        if roll < 0.3:  # exact hit, as a resolver would write it
            i -= i % 6
            names.append(f"host{i}.example.org.")
        elif roll < 0.6:  # wildcard hit
            j = i - i % 6 + 4
            k = i - i % 6 + 5
            which = n % 3
            if which == 0:
                names.append(f"pod-{n}.ns.svc{j}.example.com")
            elif which == 1 and k % 4 == 1:
                names.append(f"api.eu.{n}.example{k}.net")
            else:
                names.append(
                    f"img{n}.cdn{k}.example.io"
                    if k % 4 != 3
                    else f"b{n}.s3.us.bucket{k}.amazonaws.com"
                )
        elif roll < 0.7:  # near miss: shares a long suffix with many patterns
            names.append(f"svc{i}.example.com")
        else:
            names.append(f"www.site{n}.example{n % 50}.de")
    return names


@pytest.fixture(scope="module")
def loaded() -> tuple[list[DomainPattern], PatternIndex[int]]:
    patterns = [parse_domain_pattern(t) for t in _pattern_texts(PATTERNS)]
    index: PatternIndex[int] = PatternIndex()
    for rule, pattern in enumerate(patterns):
        index.add(pattern, rule)
    return patterns, index


def _report(benchmark: BenchmarkFixture, count: int, what: str) -> None:
    # The best round is the figure least disturbed by other work on a shared machine.
    assert benchmark.stats is not None
    stats = benchmark.stats.stats
    mean_rate, best_rate = count / stats.mean, count / stats.min
    benchmark.extra_info["per_second_mean"] = round(mean_rate)
    benchmark.extra_info["per_second_best"] = round(best_rate)
    print(
        f"\n{what}: {mean_rate:,.0f}/s mean ({stats.mean / count * 1e6:.3f} us each), "
        f"{best_rate:,.0f}/s best round"
    )


def test_index_match_100k_patterns(
    benchmark: BenchmarkFixture, loaded: tuple[list[DomainPattern], PatternIndex[int]]
) -> None:
    _, index = loaded
    names = _names(NAMES)
    match = index.match

    def run() -> int:
        hits = 0
        for name in names:
            if match(name):
                hits += 1
        return hits

    hits: int = benchmark(run)
    assert 0.4 * NAMES < hits < 0.8 * NAMES  # the mix really has hits and misses
    _report(benchmark, NAMES, "PatternIndex.match, 100k patterns")


def test_naive_loop_over_patterns(
    benchmark: BenchmarkFixture, loaded: tuple[list[DomainPattern], PatternIndex[int]]
) -> None:
    patterns, index = loaded
    names = _names(NAIVE_NAMES, seed=7)

    def run() -> list[set[int]]:
        return [
            {rule for rule, pattern in enumerate(patterns) if pattern.matches(name)}
            for name in names
        ]

    results: list[set[int]] = benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    assert results == [set(index.match(name)) for name in names]
    _report(benchmark, NAIVE_NAMES, "naive loop over 100k patterns")


def test_canonical_dns_name(benchmark: BenchmarkFixture) -> None:
    names = _names(NAMES)

    def run() -> None:
        for name in names:
            canonical_dns_name(name)

    benchmark(run)
    _report(benchmark, NAMES, "canonical_dns_name")


def test_parse_domain_pattern(benchmark: BenchmarkFixture) -> None:
    texts = _pattern_texts(5_000)

    def run() -> None:
        for text in texts:
            parse_domain_pattern(text)

    benchmark(run)
    _report(benchmark, len(texts), "parse_domain_pattern")


def test_normalize_name(benchmark: BenchmarkFixture) -> None:
    texts = [t for t in _pattern_texts(6_000) if "*" not in t]

    def run() -> None:
        for text in texts:
            normalize_name(text)

    benchmark(run)
    _report(benchmark, len(texts), "normalize_name")


def test_normalize_internationalised_name(benchmark: BenchmarkFixture) -> None:
    texts = [f"bücher{i}.beispiel.de" for i in range(1_000)]

    def run() -> None:
        for text in texts:
            normalize_name(text)

    benchmark(run)
    _report(benchmark, len(texts), "normalize_name (IDNA)")
