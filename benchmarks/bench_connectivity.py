"""Whole-cluster questions (issue: connectivity map, diff, replay): the figures it names.

* map of 200 pods x 100 Calico policies (``fqdnpolicy.connectivity.samples.calico_cluster``)
  <= 1 s, and network-config-analyzer's connectivity map of the same YAML timed in the same
  run when its ``nca`` command is installed (``FQDNPOLICY_NCA`` names it elsewhere);
* map of the full benchmark workload (``fqdnpolicy.workload.FULL_SIZE``: 20,000 endpoints,
  10,000 policies, a million DNS entries) <= 60 s, the process's peak resident memory <= 2 GB;
* diff of two full-workload policy sets differing in one policy <= 2 s (the engine holding the
  old set is changed in place: only pairs whose programs or identities moved are judged);
* replay of 1,000,000 flows <= 1 s (Zipf-distributed over the workload's endpoints and DNS
  addresses, as recorded traffic repeats; the flows given as Python lists).

FQDNPOLICY_BENCH_SCALE scales the full workload (default 1.0).
"""

from __future__ import annotations

import gc
import os
import random
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from fqdnpolicy.cluster import loads_cluster
from fqdnpolicy.connectivity import connectivity
from fqdnpolicy.connectivity.diff import diff_to
from fqdnpolicy.connectivity.replay import Flows, replay
from fqdnpolicy.connectivity.samples import calico_cluster
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.loader import loads
from fqdnpolicy.model import ObjectMeta, Policy, PolicySpec
from fqdnpolicy.selector import parse_selector
from fqdnpolicy.workload import FULL_SIZE, Workload, generate, random_rule

SCALE = float(os.environ.get("FQDNPOLICY_BENCH_SCALE", "1.0"))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _nca() -> str | None:
    return os.environ.get("FQDNPOLICY_NCA") or shutil.which("nca")


@pytest.fixture(scope="module")
def calico_engine() -> PolicyEngine:
    sample = calico_cluster(200, 100)
    return PolicyEngine(loads(sample.policies), loads_cluster(sample.cluster), DNSCache())


def test_map_of_200_pods_and_100_calico_policies(
    benchmark: Any, calico_engine: PolicyEngine
) -> None:
    result = benchmark(connectivity, calico_engine)
    benchmark.extra_info["rows"] = len(result.rows)
    assert benchmark.stats.stats.median <= 1.0


def test_network_config_analyzer_on_the_same_cluster(benchmark: Any) -> None:
    nca = _nca()
    if nca is None:
        pytest.skip("network-config-analyzer's nca command is not installed")
    sample = calico_cluster(200, 100)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in ("namespaces", "pods", "policies"):
            (folder / f"{name}.yaml").write_text(getattr(sample, name))
        command = [
            nca,
            "--connectivity",
            str(folder / "policies.yaml"),
            "--pod_list",
            str(folder / "pods.yaml"),
            "--ns_list",
            str(folder / "namespaces.yaml"),
        ]

        def run() -> None:
            subprocess.run(command, capture_output=True, check=True, timeout=1800)

        benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["tool"] = "network-config-analyzer"


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate(FULL_SIZE.scaled(SCALE), seed=1)


@pytest.fixture(scope="module")
def engine(workload: Workload) -> PolicyEngine:
    built = PolicyEngine(workload.resources, workload.cluster, workload.dns)
    gc.collect()
    gc.freeze()
    return built


def test_map_of_the_full_workload(benchmark: Any, engine: PolicyEngine) -> None:
    before = _peak_mb()
    result = benchmark.pedantic(connectivity, args=(engine,), rounds=1, iterations=1)
    benchmark.extra_info["rows"] = len(result.rows)
    benchmark.extra_info["peak_rss_mb_before"] = before
    benchmark.extra_info["peak_rss_mb"] = _peak_mb()
    del result
    gc.collect()
    assert benchmark.stats.stats.median <= 60.0
    assert _peak_mb() <= 2048 or SCALE != 1.0


def test_diff_of_two_workload_policy_sets_differing_in_one_policy(
    benchmark: Any, workload: Workload
) -> None:
    rng = random.Random(7)
    patterns = [
        p
        for pol in workload.resources.policies
        for r in pol.spec.egress
        for p in r.destination.domains
    ]
    changed = Policy(
        kind="NetworkPolicy",
        metadata=ObjectMeta(name="p-changed", namespace="ns3"),
        spec=PolicySpec(
            order=1.0,
            selector=parse_selector('app == "cache"'),  # the pods of ns3
            types=("Egress",),
            egress=tuple(random_rule(rng, patterns[:1000]) for _ in range(10)),
        ),
    )
    new = attrs.evolve(workload.resources, policies=(*workload.resources.policies, changed))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        built = PolicyEngine(workload.resources, workload.cluster, workload.dns)
        gc.collect()
        return (built, new), {}

    def run(built: PolicyEngine, resources: Any) -> Any:
        started = time.perf_counter()
        found = diff_to(built, resources)
        benchmark.extra_info.setdefault("rows", len(found.rows))
        benchmark.extra_info.setdefault("seconds", time.perf_counter() - started)
        return found

    benchmark.pedantic(run, setup=setup, rounds=2, iterations=1)
    assert benchmark.stats.stats.median <= 2.0


def test_replay_of_a_million_flows(
    benchmark: Any, engine: PolicyEngine, workload: Workload
) -> None:
    rng = random.Random(5)
    keys = engine.endpoint_keys()
    dests = list(workload.destinations[:20000])
    dests += [ip for ep in workload.cluster.endpoints[:2000] for ip in ep.ips if ":" not in ip]
    n = 1_000_000
    flows = Flows(
        [keys[int(rng.paretovariate(1.1)) % len(keys)] for _ in range(n)],
        [dests[int(rng.paretovariate(1.1)) % len(dests)] for _ in range(n)],
        ["TCP"] * n,
        [rng.choice((443, 443, 443, 8080, 53, 22)) for _ in range(n)],
        [None] * n,
    )
    replay(engine, flows)  # the batch tables are built once per engine state
    result = benchmark.pedantic(replay, args=(engine, flows), rounds=3, iterations=1)
    benchmark.extra_info["allowed"] = result.allowed
    assert result.total == n
    assert benchmark.stats.stats.median <= 1.0
