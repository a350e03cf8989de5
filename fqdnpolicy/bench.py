"""``fqdnpolicy bench``: measure the engine on seeded synthetic clusters.

For each requested scale of :data:`fqdnpolicy.workload.FULL_SIZE` it generates a workload and
reports:

* ``compile_s`` - building the engine from nothing (policies, endpoints, DNS cache);
* ``verdicts_per_s_uniform`` - single ``verdict()`` calls, sources and destinations drawn
  uniformly (destinations among every cached DNS address and endpoint address), measured on
  a fresh sample after a warm-up sample;
* ``verdicts_per_s_zipf`` - the same with sources and destinations each drawn from a Zipf
  distribution (s = 1.1);
* ``verdicts_per_s_zipf_flows`` - whole flows (source, destination) drawn from a Zipf
  distribution over a million distinct flows: real traffic repeats flows (a pod calls the
  same service again and again), which is what a datapath's flow cache relies on;
* ``native_shortcut`` - whether ``verdict()`` was answered by the C shortcut (see
  :mod:`fqdnpolicy.engine.shortcut`), and ``python_verdicts_per_s_uniform`` /
  ``python_verdicts_per_s_zipf_flows`` the same kinds of flows answered by the Python method
  alone (fresh flows of the same streams);
* ``floor_per_s_uniform`` / ``floor_per_s_zipf_flows`` and ``ratio_*`` - the reference measured
  in the same run over the same flows (:func:`floor_runner`: a function doing three lookups
  per flow), and each verdict figure as a ratio to it, which survives the machine's day to day
  swings;
* ``batch_per_s_uniform`` / ``batch_per_s_zipf_flows`` - :meth:`PolicyEngine.verdict_array`
  over a million flows with packed IPv4 destinations (with NumPy installed), and
  ``batch_text_to_packed_per_s`` the conversion of address text to packed form, apart;
* ``delta_us_mean`` / ``delta_us_p99`` - a DNS answer bringing one new address for a name that
  domain rules match, from ``cache.ingest`` until the engine's subscribers have the deltas;
* ``add_policy_ms`` - ``upsert_policy`` of one new ten-rule NetworkPolicy (median of 21);
  ``add_policy_first_ms`` the first of them, which also builds the DNS cache's name index;
* ``rss_mb`` - resident memory of the process after compiling; :func:`run_bench` measures each
  scale in a fresh process (``pid``), so this is that workload's own.

After compiling, the benchmark calls ``gc.freeze()``, as a long-running agent embedding the
engine should after start-up (see docs/development.md).

Results print as a table, optionally go to a JSON file and, with matplotlib installed (the
``plot`` extra), to a PNG of throughput and memory against workload size.
"""

from __future__ import annotations

import gc
import ipaddress
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TextIO, TypeVar

from fqdnpolicy.datapath import Delta
from fqdnpolicy.dns.wire import Extracted, Record
from fqdnpolicy.engine import PolicyEngine, shortcut
from fqdnpolicy.model import ObjectMeta, Policy, PolicySpec
from fqdnpolicy.selector import parse_selector
from fqdnpolicy.workload import FULL_SIZE, Workload, generate, random_rule

__all__ = ["floor_rate", "floor_runner", "measure", "rss_mb", "run_bench", "zipf_sample"]

ZIPF_S = 1.1
T = TypeVar("T")


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux), 0 where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class _Progress:
    """A one-line progress display on stderr (silent when stderr is not a terminal)."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total, self.done = stream, total, 0
        self.live = stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.live:
            filled = int(30 * self.done / self.total)
            bar = "#" * filled + "." * (30 - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {label:<40}")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")


class ZipfSampler(Generic[T]):
    """Draws items of a population with Zipf weights: the rank-r item has weight 1/r^1.1.

    Ranks are a shuffled order of the population, fixed at construction, so successive draws
    continue one stream of traffic (the same items stay popular).
    """

    def __init__(self, rng: random.Random, population: Sequence[T]) -> None:
        self._rng = rng
        self._ranked = list(population)
        rng.shuffle(self._ranked)
        self._weights = list(
            itertools.accumulate(1 / (rank + 1) ** ZIPF_S for rank in range(len(self._ranked)))
        )

    def draw(self, count: int) -> list[T]:
        """Return the next ``count`` items of the stream."""
        return self._rng.choices(self._ranked, cum_weights=self._weights, k=count)


def zipf_sample(rng: random.Random, population: Sequence[T], count: int) -> list[T]:
    """Draw ``count`` items, the rank-r item (in a shuffled order) with weight 1/r^1.1."""
    return ZipfSampler(rng, population).draw(count)


def _throughput(
    engine: PolicyEngine, flows: list[tuple[str, str, str, int]], *, python: bool = False
) -> float:
    """Flows/s of ``engine.verdict`` over ``flows``; with ``python``, of the Python method."""
    gc.collect()
    if python:
        verdict = PolicyEngine.verdict
        start = time.perf_counter()
        [verdict(engine, src, dst, proto, port) for src, dst, proto, port in flows]
    else:
        start = time.perf_counter()
        engine.verdicts(flows)
    return len(flows) / (time.perf_counter() - start)


def _paired_rates(
    engine: PolicyEngine, flows: list[tuple[str, str, str, int]], parts: int = 5
) -> tuple[float, float]:
    """Flows/s of ``engine.verdict`` and of the floor over ``flows``, in turn.

    Each is the median over ``parts`` consecutive slices, the engine then the floor timed on
    each slice: a moment when the machine slows touches both figures alike.
    """
    size = max(1, len(flows) // parts)
    engine_rates: list[float] = []
    floor_rates: list[float] = []
    for start in range(0, len(flows), size):
        part = flows[start : start + size]
        engine_rates.append(_throughput(engine, part))
        floor_rates.append(floor_rate(engine, part))
    return statistics.median(engine_rates), statistics.median(floor_rates)


def floor_rate(engine: PolicyEngine, flows: list[tuple[str, str, str, int]]) -> float:
    """Flows/s of the reference verdict path (:func:`floor_runner`) over ``flows``."""
    run = floor_runner(engine, flows)
    gc.collect()
    start = time.perf_counter()
    run()
    return len(flows) / (time.perf_counter() - start)


def floor_runner(
    engine: PolicyEngine, flows: list[tuple[str, str, str, int]]
) -> Callable[[], list[bool]]:
    """The reference verdict path over ``flows``, ready to run (the tables filled already).

    A function of the flow doing three lookups and nothing else: the sender's key to its
    program, the address to its identity, and the program's dict keyed by (identity,
    protocol, port), every one filled beforehand from the engine's own tables. It is called
    per flow in the same loop as :meth:`PolicyEngine.verdicts`, so the two differ only in
    what the call does: the floor a verdict cannot beat in Python (the machine's speed moves
    both alike).
    """
    # Tables shaped like the engine's own (same sizes, same insertion order), so a random
    # lookup costs what it costs there: endpoints in the engine's order, every address the
    # engine holds in its order, then the flows' outside addresses.
    records = engine._records
    programs: dict[int, dict[tuple[object, str, int], bool]] = {}
    program_of = {key: programs.setdefault(id(r.egress), {}) for key, r in records.items()}
    identity: dict[str, object] = dict(engine._hosts)
    for src, dst, proto, port in flows:
        found = identity.get(dst)
        if found is None:
            found = identity[dst] = engine.identity(dst)
        program_of[src][(found, proto, port)] = True

    def floor(src: str, dst: str, proto: str, port: int) -> bool:
        return program_of[src][(identity[dst], proto, port)]

    def run() -> list[bool]:
        return [floor(src, dst, proto, port) for src, dst, proto, port in flows]

    return run


def measure(
    scale: float, *, seed: int = 1, flows: int = 200_000, progress: _Progress | None = None
) -> dict[str, Any]:
    """Generate one workload at ``scale`` and measure it; returns the figures."""
    step = progress.step if progress else (lambda label: None)
    sizes = FULL_SIZE.scaled(scale)
    rss_start = rss_mb()
    started = time.perf_counter()
    workload: Workload = generate(sizes, seed=seed)
    generate_s = time.perf_counter() - started
    step("generated")
    gc.collect()
    started = time.perf_counter()
    engine = PolicyEngine(workload.resources, workload.cluster, workload.dns)
    compile_s = time.perf_counter() - started
    rss = rss_mb()
    # What a long-running agent does after start-up: move the built state out of the cyclic
    # collector's reach, so full collections stop rescanning millions of live objects.
    gc.collect()
    gc.freeze()
    step("compiled")

    rng = random.Random(seed)
    sources = [ep.key for ep in workload.cluster.endpoints]
    addresses = list(workload.destinations) + [
        ip for ep in workload.cluster.endpoints for ip in ep.ips
    ]

    def uniform() -> list[tuple[str, str, str, int]]:
        return [(rng.choice(sources), rng.choice(addresses), "TCP", 443) for _ in range(flows)]

    _throughput(engine, uniform())  # warm-up: programs' memos fill
    uniform_rate, uniform_floor = _paired_rates(engine, uniform())
    python_uniform_rate = _throughput(engine, uniform(), python=True)
    step("uniform verdicts")

    zipf_src = zipf_sample(rng, sources, flows * 2)
    zipf_dst = zipf_sample(rng, addresses, flows * 2)
    zipf = [(s, d, "TCP", 443) for s, d in zip(zipf_src, zipf_dst, strict=True)]
    _throughput(engine, zipf[:flows])
    zipf_rate = _throughput(engine, zipf[flows:])
    # Real traffic repeats whole flows (a pod calls the same service again and again):
    # (source, destination) pairs drawn from a Zipf distribution over a million flows.
    population = [(rng.choice(sources), rng.choice(addresses)) for _ in range(1_000_000)]
    # Measured once the stream has run a while (four times as many flows first), as in a
    # long-running agent: the judged-flow table then holds the popular flows.
    zipf_flows = [(s, d, "TCP", 443) for s, d in zipf_sample(rng, population, flows * 6)]
    _throughput(engine, zipf_flows[: flows * 4])
    zipf_flows_rate, zipf_floor = _paired_rates(engine, zipf_flows[flows * 4 : flows * 5])
    python_zipf_rate = _throughput(engine, zipf_flows[flows * 5 :], python=True)
    step("zipf verdicts")
    batch = _batch_rates(engine, sources, addresses, population, rng, min(10**6, 5 * flows))
    step("batch verdicts")

    delta_us, rules_matched = _delta_latency(engine, workload, rng)
    step("DNS delta latency")
    add_ms, first_add_ms = _add_policy_ms(engine, workload, rng)
    step("policy add")
    return {
        "scale": scale,
        "sizes": {
            "namespaces": sizes.namespaces,
            "endpoints": sizes.endpoints,
            "policies": sizes.policies,
            "rules": sizes.policies * sizes.rules_per_policy,
            "domain_patterns": sizes.domain_patterns,
            "dns_entries": sizes.dns_entries,
        },
        "generate_s": round(generate_s, 3),
        "compile_s": round(compile_s, 3),
        "verdicts_per_s_uniform": round(uniform_rate),
        "verdicts_per_s_zipf": round(zipf_rate),
        "verdicts_per_s_zipf_flows": round(zipf_flows_rate),
        "floor_per_s_uniform": round(uniform_floor),
        "floor_per_s_zipf_flows": round(zipf_floor),
        "ratio_uniform": round(uniform_rate / uniform_floor, 3),
        "ratio_zipf_flows": round(zipf_flows_rate / zipf_floor, 3),
        "native_shortcut": shortcut.NATIVE,
        "python_verdicts_per_s_uniform": round(python_uniform_rate),
        "python_verdicts_per_s_zipf_flows": round(python_zipf_rate),
        **batch,
        "delta_us_mean": round(sum(delta_us) / len(delta_us), 1),
        "delta_us_p99": round(sorted(delta_us)[int(len(delta_us) * 0.99) - 1], 1),
        "delta_sets_per_answer": round(rules_matched, 2),
        "add_policy_ms": round(add_ms, 3),
        "add_policy_first_ms": round(first_add_ms, 3),
        "rss_mb": round(rss, 1),
        "pid": os.getpid(),
        "rss_mb_workload": round(rss - rss_start, 1),
    }


def _batch_rates(
    engine: PolicyEngine,
    sources: list[str],
    addresses: list[str],
    population: list[tuple[str, str]],
    rng: random.Random,
    count: int = 1_000_000,
) -> dict[str, Any]:
    """``verdict_array`` over ``count`` flows with packed IPv4 destinations (NumPy)."""
    try:
        import numpy as np
    except ImportError:
        return {}
    keys = engine.endpoint_keys()
    index = {key: i for i, key in enumerate(keys)}
    v4 = [a for a in addresses if ":" not in a]
    uniform_src = np.array([index[rng.choice(sources)] for _ in range(count)], dtype=np.int64)
    uniform_text = [rng.choice(v4) for _ in range(count)]
    v4_population = [(s, d) for s, d in population if ":" not in d]
    drawn = zipf_sample(rng, v4_population, count)
    zipf_src = np.array([index[s] for s, _ in drawn], dtype=np.int64)
    zipf_text = [d for _, d in drawn]
    start = time.perf_counter()
    uniform_dst = np.array([int(ipaddress.IPv4Address(a)) for a in uniform_text], dtype=np.uint32)
    convert_s = time.perf_counter() - start
    zipf_dst = np.array([int(ipaddress.IPv4Address(a)) for a in zipf_text], dtype=np.uint32)
    figures: dict[str, Any] = {"batch_text_to_packed_per_s": round(count / convert_s)}
    engine.verdict_array(zipf_src[:1000], zipf_dst[:1000], "TCP", 443)  # builds its tables
    for name, src, dst in (
        ("uniform", uniform_src, uniform_dst),
        ("zipf_flows", zipf_src, zipf_dst),
    ):
        gc.collect()
        start = time.perf_counter()
        engine.verdict_array(src, dst, "TCP", 443)
        figures[f"batch_per_s_{name}"] = round(count / (time.perf_counter() - start))
    return figures


def _delta_latency(
    engine: PolicyEngine, workload: Workload, rng: random.Random
) -> tuple[list[float], float]:
    """Time 1,000 answers each bringing one new address for a name domain rules match."""
    received: list[Delta] = []
    cancel = engine.subscribe(received.extend)
    names = [n for n in sorted(workload.dns.names()) if not n.startswith("unrelated")]
    timings: list[float] = []
    sets_matched = 0
    for i in range(1000):
        name = rng.choice(names)
        ip = f"100.{192 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"  # outside generated ranges
        answer = Extracted(name, True, 0, 0, False, (Record(name, 1, 300, ip),))
        start = time.perf_counter()
        workload.dns.ingest(answer)
        timings.append((time.perf_counter() - start) * 1e6)
        sets_matched += len(engine.set_ids_of(ip))
    cancel()
    return timings, sets_matched / 1000


def _add_policy_ms(
    engine: PolicyEngine, workload: Workload, rng: random.Random
) -> tuple[float, float]:
    """Median and first time of upserting one new ten-rule NetworkPolicy (then removing it).

    The first policy change after start-up also builds the DNS cache's name index.
    """
    patterns = sorted(
        {
            p
            for pol in workload.resources.policies
            for r in pol.spec.egress
            for p in r.destination.domains
        },
        key=str,
    )
    namespaces = [ns.name for ns in workload.cluster.namespaces]
    timings: list[float] = []
    for i in range(21):
        namespace = rng.choice(namespaces)
        policy = Policy(
            kind="NetworkPolicy",
            metadata=ObjectMeta(name=f"bench-added-{i}", namespace=namespace),
            spec=PolicySpec(
                order=1.0,
                selector=parse_selector('app == "web"'),
                types=("Egress",),
                egress=tuple(random_rule(rng, patterns) for _ in range(10)),
            ),
        )
        start = time.perf_counter()
        engine.upsert_policy(policy)
        timings.append((time.perf_counter() - start) * 1000)
        engine.remove_policy(policy)
    return sorted(timings)[len(timings) // 2], timings[0]


def _plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = [r["sizes"]["endpoints"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(endpoints, [r["verdicts_per_s_uniform"] for r in results], "o-", label="uniform")
    left.plot(endpoints, [r["verdicts_per_s_zipf"] for r in results], "s-", label="Zipf src/dst")
    left.plot(
        endpoints, [r["verdicts_per_s_zipf_flows"] for r in results], "^-", label="Zipf flows"
    )
    left.set(xlabel="endpoints", ylabel="verdicts / s", title="verdict throughput", xscale="log")
    left.legend()
    right.plot(endpoints, [r["rss_mb"] for r in results], "o-", color="tab:red")
    right.set(xlabel="endpoints", ylabel="MiB", title="process memory (RSS)", xscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _measure_apart(scale: float, seed: int, flows: int) -> dict[str, Any] | None:
    """:func:`measure` in a fresh process, so its memory figures are that workload's own.

    The child shows its progress on this process's standard error and prints its figures as
    JSON; None when it failed.
    """
    command = [sys.executable, "-m", "fqdnpolicy.bench", repr(scale), str(seed), str(flows)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        return None
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def _child(argv: Sequence[str]) -> int:
    """Measure one scale and print its figures as JSON (run by :func:`_measure_apart`)."""
    scale, seed, flows = float(argv[0]), int(argv[1]), int(argv[2])
    progress = _Progress(sys.stderr, total=7)
    figures = measure(scale, seed=seed, flows=flows, progress=progress)
    progress.close()
    print(json.dumps(figures))
    return 0


def run_bench(
    *,
    scales: Sequence[float] | None,
    seed: int,
    flows: int,
    output: str | None,
    plot: str | None,
    out: TextIO,
) -> int:
    """Measure every scale, each in a fresh process; print a table, write JSON and a plot.

    Returns the exit code.
    """
    from fqdnpolicy.demo import format_table

    chosen = list(scales or [0.1])
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib: pip install 'fqdnpolicy[plot]'", file=sys.stderr)
            return 2
    results = []
    for scale in chosen:
        found = _measure_apart(scale, seed, flows)
        if found is None:
            print(f"bench: measuring scale {scale} failed (see above)", file=sys.stderr)
            return 1
        results.append(found)
    columns = [
        ("scale", "scale"),
        ("compile s", "compile_s"),
        ("verdicts/s uniform", "verdicts_per_s_uniform"),
        ("verdicts/s zipf dst", "verdicts_per_s_zipf"),
        ("verdicts/s zipf flows", "verdicts_per_s_zipf_flows"),
        ("x floor uniform", "ratio_uniform"),
        ("x floor zipf flows", "ratio_zipf_flows"),
        ("delta us mean", "delta_us_mean"),
        ("delta us p99", "delta_us_p99"),
        ("add policy ms", "add_policy_ms"),
        ("RSS MiB", "rss_mb"),
    ]
    rows = [
        [f"{r[key]:,}" if isinstance(r[key], int) else str(r[key]) for _, key in columns]
        for r in results
    ]
    print(format_table([title for title, _ in columns], rows), file=out)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            json.dump({"seed": seed, "flows": flows, "results": results}, handle, indent=2)
    if plot:
        _plot(results, plot)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
