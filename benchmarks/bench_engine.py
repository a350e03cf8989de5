"""Verdict engine figures (issue: engine core) on the synthetic workload.

The workload is fqdnpolicy.workload.FULL_SIZE (1,000 namespaces, 20,000 endpoints, 10,000
policies of ~10 rules, 50,000 domain patterns, 1,000,000 cached (name, IP) entries) scaled by
FQDNPOLICY_BENCH_SCALE (default 1.0). Figures the issue names, each beside its reference
measured in the same run over the same flows (``fqdnpolicy.bench.floor_runner``: a function
of the flow doing three lookups in tables shaped like the engine's):

* single verdict(), uniform destinations: >= 0.6 x floor;
* single verdict(), Zipf-distributed flows: >= 0.8 x floor;
* verdict_array, a million flows, packed IPv4 destinations: >= 5M/s Zipf flows, >= 2M/s
  uniform (text-to-packed conversion measured apart);
* compile from nothing <= 5 s; add one policy <= 2 ms; a DNS answer with one new address for a
  name matched by K rules: deltas out <= 30 us + O(K);
* resident memory of the workload and engine <= 1 GB.

``verdict()`` is answered by the C shortcut where it was built; the ``_python`` cases time the
same calls answered by the Python method alone.

Throughput benchmarks time batches of 20,000 fresh flows per round (drawn, untimed, before each
round) and report flows/s in extra_info; the floor benchmarks time the same kind of batches.
"""

from __future__ import annotations

import gc
import ipaddress
import itertools
import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from fqdnpolicy.bench import ZipfSampler, floor_runner, rss_mb
from fqdnpolicy.dns.wire import Extracted, Record
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import ObjectMeta, Policy, PolicySpec
from fqdnpolicy.selector import parse_selector
from fqdnpolicy.workload import FULL_SIZE, Workload, generate, random_rule

SCALE = float(os.environ.get("FQDNPOLICY_BENCH_SCALE", "1.0"))
_RSS_AFTER_BUILD: list[float] = []
BATCH = 20_000
BATCH_FLOWS = 1_000_000

Flow = tuple[str, str, str, int]


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate(FULL_SIZE.scaled(SCALE), seed=1)


@pytest.fixture(scope="module")
def engine(workload: Workload) -> PolicyEngine:
    built = PolicyEngine(workload.resources, workload.cluster, workload.dns)
    # What a long-running agent does after start-up (docs/development.md): the built state
    # leaves the cyclic collector's reach, so a full collection does not land in a figure.
    gc.collect()
    gc.freeze()
    _RSS_AFTER_BUILD.append(rss_mb())
    return built


def _batches(
    draw: Callable[[], list[Flow]],
) -> Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (draw(),), {}

    return setup


def _judge(engine: PolicyEngine) -> Callable[[list[Flow]], object]:
    return engine.verdicts


def _judge_in_python(engine: PolicyEngine) -> Callable[[list[Flow]], object]:
    """The same calls answered by the Python method alone, without the C shortcut."""
    verdict = PolicyEngine.verdict

    def judge(flows: list[Flow]) -> object:
        return [verdict(engine, src, dst, proto, port) for src, dst, proto, port in flows]

    return judge


def _floor(engine: PolicyEngine, draw: Callable[[], list[Flow]]) -> Callable[[], Any]:
    """Rounds of the reference path, each over a fresh batch (its tables filled untimed)."""

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (floor_runner(engine, draw()),), {}

    return setup


def _rate(benchmark: Any, count: int = BATCH) -> float:
    median: float = benchmark.stats.stats.median
    return count / median


def _sources(workload: Workload) -> list[str]:
    return [ep.key for ep in workload.cluster.endpoints]


def _addresses(workload: Workload) -> list[str]:
    return list(workload.destinations) + [ip for ep in workload.cluster.endpoints for ip in ep.ips]


def _uniform_draw(workload: Workload, seed: int) -> Callable[[], list[Flow]]:
    rng = random.Random(seed)
    sources, addresses = _sources(workload), _addresses(workload)

    def draw() -> list[Flow]:
        return [(rng.choice(sources), rng.choice(addresses), "TCP", 443) for _ in range(BATCH)]

    return draw


def _zipf_flows_draw(workload: Workload, seed: int) -> Callable[[], list[Flow]]:
    # Whole (source, destination) flows drawn Zipf over a million distinct flows: real
    # traffic repeats flows.
    rng = random.Random(seed)
    sources, addresses = _sources(workload), _addresses(workload)
    population = [(rng.choice(sources), rng.choice(addresses)) for _ in range(10**6)]
    flows = ZipfSampler(rng, population)

    def draw() -> list[Flow]:
        return [(s, d, "TCP", 443) for s, d in flows.draw(BATCH)]

    return draw


def _warm_up(engine: PolicyEngine, draw: Callable[[], list[Flow]], batches: int = 10) -> None:
    """Judge some batches first: the figure is for traffic already flowing."""
    for _ in range(batches):
        engine.verdicts(draw())


def test_verdict_uniform(benchmark: Any, engine: PolicyEngine, workload: Workload) -> None:
    draw = _uniform_draw(workload, 7)
    _warm_up(engine, draw)
    benchmark.pedantic(_judge(engine), setup=_batches(draw), rounds=10, iterations=1)
    benchmark.extra_info["verdicts_per_s"] = round(_rate(benchmark))


def test_verdict_uniform_python(benchmark: Any, engine: PolicyEngine, workload: Workload) -> None:
    # test_verdict_uniform without the C shortcut (what an install without a compiler gets).
    draw = _uniform_draw(workload, 17)
    _warm_up(engine, draw)
    benchmark.pedantic(_judge_in_python(engine), setup=_batches(draw), rounds=10, iterations=1)
    benchmark.extra_info["verdicts_per_s"] = round(_rate(benchmark))


def test_floor_uniform(benchmark: Any, engine: PolicyEngine, workload: Workload) -> None:
    # The reference for test_verdict_uniform: the same kind of flows, three lookups each.
    draw = _uniform_draw(workload, 7)
    benchmark.pedantic(lambda run: run(), setup=_floor(engine, draw), rounds=10, iterations=1)
    benchmark.extra_info["flows_per_s"] = round(_rate(benchmark))


def test_verdict_zipf_flows(benchmark: Any, engine: PolicyEngine, workload: Workload) -> None:
    draw = _zipf_flows_draw(workload, 11)
    _warm_up(engine, draw, batches=40)
    benchmark.pedantic(_judge(engine), setup=_batches(draw), rounds=20, iterations=1)
    benchmark.extra_info["verdicts_per_s"] = round(_rate(benchmark))


def test_verdict_zipf_flows_python(
    benchmark: Any, engine: PolicyEngine, workload: Workload
) -> None:
    draw = _zipf_flows_draw(workload, 11)
    _warm_up(engine, draw, batches=40)
    benchmark.pedantic(_judge_in_python(engine), setup=_batches(draw), rounds=20, iterations=1)
    benchmark.extra_info["verdicts_per_s"] = round(_rate(benchmark))


def test_floor_zipf_flows(benchmark: Any, engine: PolicyEngine, workload: Workload) -> None:
    draw = _zipf_flows_draw(workload, 11)
    benchmark.pedantic(lambda run: run(), setup=_floor(engine, draw), rounds=20, iterations=1)
    benchmark.extra_info["flows_per_s"] = round(_rate(benchmark))


def test_verdict_zipf_sources_and_destinations(
    benchmark: Any, engine: PolicyEngine, workload: Workload
) -> None:
    # Sources and destinations each Zipf-distributed, independently: many distinct pairs.
    rng = random.Random(8)
    sources = ZipfSampler(rng, _sources(workload))
    addresses = ZipfSampler(rng, list(workload.destinations))

    def draw() -> list[Flow]:
        return [
            (s, d, "TCP", 443)
            for s, d in zip(sources.draw(BATCH), addresses.draw(BATCH), strict=True)
        ]

    _warm_up(engine, draw)
    benchmark.pedantic(_judge(engine), setup=_batches(draw), rounds=20, iterations=1)
    benchmark.extra_info["verdicts_per_s"] = round(_rate(benchmark))


def _packed_batch(
    engine: PolicyEngine, workload: Workload, zipf: bool, seed: int
) -> tuple[Any, Any, list[str]]:
    np = pytest.importorskip("numpy")
    rng = random.Random(seed)
    index = {key: i for i, key in enumerate(engine.endpoint_keys())}
    v4 = [a for a in _addresses(workload) if ":" not in a]
    sources = _sources(workload)
    if zipf:
        population = [(rng.choice(sources), rng.choice(v4)) for _ in range(10**6)]
        pairs = ZipfSampler(rng, population).draw(BATCH_FLOWS)
    else:
        pairs = [(rng.choice(sources), rng.choice(v4)) for _ in range(BATCH_FLOWS)]
    src = np.array([index[s] for s, _ in pairs], dtype=np.int64)
    text = [d for _, d in pairs]
    dst = np.array([int(ipaddress.IPv4Address(d)) for d in text], dtype=np.uint32)
    return src, dst, text


@pytest.mark.parametrize("zipf", [False, True], ids=["uniform", "zipf_flows"])
def test_verdict_array_packed(
    benchmark: Any, engine: PolicyEngine, workload: Workload, zipf: bool
) -> None:
    src, dst, _ = _packed_batch(engine, workload, zipf, 21)
    engine.verdict_array(src[:1000], dst[:1000], "TCP", 443)  # its tables, built once a state
    benchmark.pedantic(engine.verdict_array, args=(src, dst, "TCP", 443), rounds=5, iterations=1)
    benchmark.extra_info["flows_per_s"] = round(_rate(benchmark, BATCH_FLOWS))


def test_text_to_packed_conversion(
    benchmark: Any, engine: PolicyEngine, workload: Workload
) -> None:
    # Apart from verdict_array: what turning flow-log text into packed addresses costs.
    np = pytest.importorskip("numpy")
    _, _, text = _packed_batch(engine, workload, False, 22)

    def convert() -> Any:
        return np.array([int(ipaddress.IPv4Address(d)) for d in text], dtype=np.uint32)

    benchmark.pedantic(convert, rounds=3, iterations=1)
    benchmark.extra_info["addresses_per_s"] = round(_rate(benchmark, BATCH_FLOWS))


def test_compile_from_nothing(benchmark: Any, workload: Workload) -> None:
    def build() -> PolicyEngine:
        engine = PolicyEngine(workload.resources, workload.cluster, workload.dns)
        engine.close()
        return engine

    # Built as in a process that froze nothing (as `fqdnpolicy bench` builds): the engine
    # fixture froze its state, which would keep the build's objects young
    # (fqdnpolicy/collector.py).
    gc.unfreeze()
    gc.collect()
    try:
        benchmark.pedantic(build, rounds=1, iterations=1)
    finally:
        benchmark.extra_info["rss_mb_after"] = round(rss_mb())
        # The second engine is garbage now: collect it here, not inside the next benchmark.
        gc.collect()
        gc.freeze()


def test_add_one_policy(benchmark: Any, engine: PolicyEngine, workload: Workload) -> None:
    rng = random.Random(9)
    patterns = sorted(
        {
            p
            for pol in workload.resources.policies[:500]
            for r in pol.spec.egress
            for p in r.destination.domains
        },
        key=str,
    )
    namespaces = [ns.name for ns in workload.cluster.namespaces]
    counter = itertools.count()
    added: list[Policy] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        if added:
            engine.remove_policy(added.pop())
        policy = Policy(
            kind="NetworkPolicy",
            metadata=ObjectMeta(name=f"bench-{next(counter)}", namespace=rng.choice(namespaces)),
            spec=PolicySpec(
                order=1.0,
                selector=parse_selector('app == "web"'),
                types=("Egress",),
                egress=tuple(random_rule(rng, patterns) for _ in range(10)),
            ),
        )
        added.append(policy)
        return (policy,), {}

    benchmark.pedantic(engine.upsert_policy, setup=setup, rounds=30, iterations=1)


def _answers_to_deltas(
    benchmark: Any, engine: PolicyEngine, workload: Workload, names: list[str], seed: int
) -> None:
    """Time single answers, each a new address for one of ``names``, to the engine's deltas."""
    rng = random.Random(seed)
    received: list[object] = []
    cancel = engine.subscribe(received.extend)
    counter = itertools.count()

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        i = next(counter)
        name = rng.choice(names)
        ip = f"100.{seed * 4 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"  # new in each test
        return (Extracted(name, True, 0, 0, False, (Record(name, 1, 300, ip),)),), {}

    benchmark.pedantic(workload.dns.ingest, setup=setup, rounds=500, iterations=1)
    cancel()
    benchmark.extra_info["deltas_per_answer"] = round(len(received) / 500, 2)


def test_dns_answer_to_delta(benchmark: Any, engine: PolicyEngine, workload: Workload) -> None:
    names = [n for n in sorted(workload.dns.names()) if not n.startswith("unrelated")]
    _answers_to_deltas(benchmark, engine, workload, names, seed=50)


@pytest.mark.parametrize("sets_matched", [1, 2, 4])
def test_dns_answer_to_delta_by_sets_matched(
    benchmark: Any, engine: PolicyEngine, workload: Workload, sets_matched: int
) -> None:
    # The same, for names matching exactly K domain sets (K deltas out): the figures for K =
    # 1, 2, 4 give the cost's fixed part and its part per set.
    match = engine._graph.names._patterns.match  # which sets a name matches (no public accessor)
    names = [n for n in sorted(workload.dns.names()) if len(match(n)) == sets_matched]
    _answers_to_deltas(benchmark, engine, workload, names, seed=50 + sets_matched)


def test_random_lookup_reference(benchmark: Any, engine: PolicyEngine, workload: Workload) -> None:
    # Not an engine figure: one random lookup in a dict as big as the engine's address table,
    # the day's memory speed, for comparing runs on other days.
    rng = random.Random(12)
    addresses = list(workload.destinations)
    table = dict.fromkeys(addresses, 0)

    def draw() -> list[str]:
        return [rng.choice(addresses) for _ in range(BATCH)]

    def look(keys: list[str]) -> None:
        get = table.get
        for key in keys:
            get(key)

    benchmark.pedantic(look, setup=lambda: ((draw(),), {}), rounds=10, iterations=1)
    benchmark.extra_info["lookups_per_s"] = round(_rate(benchmark))


def test_memory_of_the_workload(benchmark: Any, engine: PolicyEngine) -> None:
    # Not a timing: the process's resident memory with the workload and engine built, and now
    # (the verdict benchmarks have filled the programs' kept verdicts since).
    benchmark.pedantic(rss_mb, rounds=1, iterations=1)
    benchmark.extra_info["rss_mb_after_build"] = round(_RSS_AFTER_BUILD[-1])
    benchmark.extra_info["rss_mb"] = round(rss_mb())
    assert engine.sets()
