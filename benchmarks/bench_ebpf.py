"""eBPF backend speed: the kernel program's verdicts, loading members, deltas, the verifier.

Targets (issue 16): verdicts of the program on full-workload state with ``BPF_PROG_TEST_RUN``
>= 5M/s per core; 100,000 set members loaded < 0.5 s; a delta of 1,000 addresses < 20 ms;
the verifier passes with 1,000 rules on one endpoint. Beside them, in the same run, the
Python engine's verdicts per second on the benchmark workload (scaled by
``FQDNPOLICY_BENCH_SCALE``, default 0.05 here so the module stays quick).

The program's state: 1,000,000 IPv4 addresses in 64 domain sets (each with a DNS deadline),
CIDR sets, and one endpoint whose egress tier holds a rule per set; the endpoint sits on the
loopback interface of a scratch namespace, where test runs arrive. A test run repeats one
packet: an allowed one is then an established flow (conntrack), a denied one is judged by
the rules every time. ``test_full_workload`` loads the whole benchmark workload's state
(``FULL_SIZE``, scaled by ``FQDNPOLICY_EBPF_FULL_SCALE``, default 1) and measures the
endpoint with the longest egress table, beside the engine's ``verdict()`` on the same flows.
Needs root and clang; nothing is sent anywhere.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fqdnpolicy_ebpf import EbpfBackend
from fqdnpolicy_ebpf.packets import run_program
from fqdnpolicy_ebpf.workbench import (
    DOMAIN_SETS,
    SHAPES,
    SRC,
    bench_state,
    ip4,
    measure_full_workload,
)

from fqdnpolicy.backends import Rendering
from fqdnpolicy.datapath import (
    DatapathState,
    EndpointState,
    MemberChanged,
    PortSpec,
    RuleState,
    TierState,
)
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.workload import FULL_SIZE, generate

SCALE = float(os.environ.get("FQDNPOLICY_BENCH_SCALE", "0.05"))
FULL_SCALE = float(os.environ.get("FQDNPOLICY_EBPF_FULL_SCALE", "1"))
REPEAT = 2_000_000


def _rule(index: int, action: str, **fields: Any) -> RuleState:
    return RuleState("bench", "t", index, action, (4, 6), **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("clang") is None:
        pytest.skip("needs root and clang")
    name = f"fqe-b-{os.getpid() % 100000}{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def loaded(netns: str) -> Iterator[tuple[EbpfBackend, dict[str, int]]]:
    backend = EbpfBackend()
    now = time.monotonic()
    backend.apply(backend.render(bench_state(1_000_000, now), now=now), netns=netns)
    dp = backend.datapath(netns=netns)
    assert dp is not None
    yield backend, dp.programs
    backend.remove(netns=netns)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_program_verdicts_per_second(
    benchmark: Any, loaded: tuple[EbpfBackend, dict[str, int]], shape: str
) -> None:
    _, programs = loaded
    packet, expected = SHAPES[shape]
    assert run_program(programs, 0, packet)[0] == expected
    durations: list[int] = []

    def run() -> None:
        verdict, ns = run_program(programs, 0, packet, REPEAT)
        assert verdict == expected
        durations.append(ns)

    benchmark.pedantic(run, rounds=5, iterations=1)
    best = min(durations)
    benchmark.extra_info["verdicts_per_s_per_core"] = round(1e9 / max(best, 1))
    benchmark.extra_info["ns_per_verdict"] = best


def test_load_100k_members(benchmark: Any, netns: str) -> None:
    backend = EbpfBackend()
    now = time.monotonic()
    rendering = backend.render(bench_state(100_000, now), now=now)
    backend.apply(backend.render(bench_state(10, now), now=now), netns=netns)  # program loaded
    small = backend.render(bench_state(10, now), now=now)

    def setup() -> tuple[tuple[Rendering], dict[str, Any]]:
        backend.apply(small, netns=netns)  # back to a few members: each round loads 100,000
        return (rendering,), {}

    benchmark.pedantic(lambda r: backend.apply(r, netns=netns), setup=setup, rounds=5)
    backend.remove(netns=netns)


def test_delta_of_1000_addresses(benchmark: Any, netns: str) -> None:
    backend = EbpfBackend()
    now = time.monotonic()
    backend.apply(backend.render(bench_state(100_000, now), now=now), netns=netns)
    rng = random.Random(3)
    rounds = iter(range(1000))

    def setup() -> tuple[tuple[list[MemberChanged]], dict[str, Any]]:
        base = 2_000_000 + next(rounds) * 1000
        changes = [
            MemberChanged(f"d:{rng.randrange(DOMAIN_SETS)}", ip4(base + i), True, now + 60)
            for i in range(1000)
        ]
        return (changes,), {}

    def delta(changes: list[MemberChanged]) -> None:
        backend.apply(backend.render_delta(changes, now=now), netns=netns)

    benchmark.pedantic(delta, setup=setup, rounds=20)
    backend.remove(netns=netns)


def test_verifier_with_1000_rules_on_one_endpoint(benchmark: Any, netns: str) -> None:
    rules = tuple(
        _rule(i, "Allow", protocol=6, dst_ports=PortSpec(((i + 1, i + 1),))) for i in range(1000)
    )
    state = DatapathState(
        (), (EndpointState("bench/web", "lo", (SRC,), (TierState("t", rules, "Deny"),), ()),), {}
    )
    backend = EbpfBackend()
    rendering = backend.render(state, now=0.0)
    benchmark.pedantic(lambda: backend.check(rendering), rounds=1, iterations=1)


def test_reference_python_engine_verdicts(benchmark: Any) -> None:
    """The engine's ``verdict()`` on the benchmark workload, for the same run's comparison."""
    workload = generate(FULL_SIZE.scaled(SCALE), seed=1)
    engine = PolicyEngine(workload.resources, workload.cluster, workload.dns)
    rng = random.Random(1)
    sources = [ep.key for ep in workload.cluster.endpoints]
    targets = list(workload.destinations) + [
        ip for ep in workload.cluster.endpoints for ip in ep.ips
    ]
    flows = [(rng.choice(sources), rng.choice(targets)) for _ in range(20_000)]

    def judge() -> None:
        for src, dst in flows:
            engine.verdict(src, dst, protocol="TCP", port=443)

    benchmark.pedantic(judge, rounds=3, iterations=1)
    benchmark.extra_info["verdicts_per_s"] = round(len(flows) / benchmark.stats.stats.min)


def test_full_workload(benchmark: Any, netns: str) -> None:
    """The whole benchmark workload's state: load time, and verdicts of packet shapes."""
    runs = []
    benchmark.pedantic(
        lambda: runs.append(measure_full_workload(EbpfBackend(), REPEAT, FULL_SCALE)),
        rounds=1,
        iterations=1,
    )
    (run,) = runs
    for shape, (rate, kernel, engine) in run.rates.items():
        assert kernel == engine, shape
        benchmark.extra_info[f"{shape}: verdicts_per_s_per_core"] = round(rate)
    benchmark.extra_info["load_s"] = round(run.load_s, 3)
    benchmark.extra_info["engine_verdicts_per_s"] = round(run.engine_rate)
    benchmark.extra_info["members"] = run.members
    benchmark.extra_info["sets"] = run.sets
    benchmark.extra_info["table_entries_in_maps"] = run.tables
    benchmark.extra_info["measured_table_entries"] = run.entries


def test_reference_dict_get(benchmark: Any) -> None:
    """A reference cost for the Python-bound figures: 100,000 random ``dict.get``.

    On a million-entry dict, as the development guide's reference costs.
    """
    table = {ip4(i): i for i in range(1_000_000)}
    rng = random.Random(5)
    keys = [ip4(rng.randrange(1_000_000)) for _ in range(100_000)]
    get = table.get

    def lookups() -> None:
        for key in keys:
            get(key)

    benchmark.pedantic(lookups, rounds=5, iterations=1)
