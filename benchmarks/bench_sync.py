"""The sync loop on a real kernel: DNS response on the wire to element in the kernel,
snooped responses per second, the agent under the issue's load run, and its CPU when idle.

Run as root: ``.venv/bin/pytest benchmarks/bench_sync.py --benchmark-only -s``. Figures are
in each result's ``extra_info`` (and printed with ``-s``); docs/development.md keeps the dated
ones. Two namespaces joined by a veth pair (``tests/kernel/load.py``): a sender
(198.51.100.53, the trusted server) and the node (198.51.100.10) where the snooper reads and
the nftables table lives. Each response answers a new name with a new IPv6 address of
2001:db8::/32, so every one is a kernel change.

Same-run references: one no-op transaction through the sync's own apply path, and one empty
transaction of the ``nft`` binary in the node namespace (the floor of every apply through
the binary). The wire-to-kernel latency is measured through libnftables and through the
binary in the same run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fqdnpolicy_nftables import NftablesBackend
from pytest_benchmark.fixture import BenchmarkFixture

import fqdnpolicy
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.snoop import Snooper
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.sync import DatapathSync

# The repository root, for the lab shared with the kernel tests, when run as `pytest benchmarks/`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.kernel import load


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with load.pair() as namespaces:
        yield namespaces


def start(node: str, *, library: bool = True) -> tuple[DNSCache, PolicyEngine, DatapathSync]:
    cache = DNSCache(trusted_servers=["198.51.100.53"])
    cluster = fqdnpolicy.Cluster(
        [fqdnpolicy.Endpoint("web", "default", {"app": "web"}, ips=["198.51.100.20"])],
        [fqdnpolicy.Namespace("default")],
    )
    engine = PolicyEngine(fqdnpolicy.loads(load.POLICY), cluster, cache)
    backend = NftablesBackend(table="fqsbench", use_library=library)
    assert backend.runner.uses_library == library
    sync = DatapathSync(engine, backend, netns=node, dns=cache, reconcile_interval=None)
    assert sync.wait_ready(10)
    return cache, engine, sync


def nft_floor(node: str, rounds: int = 50) -> float:
    """Median seconds of one empty transaction of the ``nft`` binary in the node namespace."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", node, "nft", "-f", "/dev/null"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def apply_floor(sync: DatapathSync, node: str, rounds: int = 200) -> float:
    """Median seconds of one no-op transaction through the sync's own apply path."""
    backend = sync.backend
    assert isinstance(backend, NftablesBackend)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        backend.runner.run(f"add table inet {backend.table}\n", netns=node)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stop(sync: DatapathSync, engine: PolicyEngine) -> None:
    sync.close(remove=True)
    engine.close()
    assert isinstance(sync.backend, NftablesBackend)
    sync.backend.close()


@pytest.mark.parametrize("library", [True, False], ids=["libnftables", "nft-binary"])
def test_wire_to_kernel_latency(
    benchmark: BenchmarkFixture, pair: tuple[str, str], library: bool
) -> None:
    node, other = pair
    samples = 300
    cache, engine, sync = start(node, library=library)
    latencies: list[float] = []

    def run() -> None:
        proc = load.sender(other, samples, 0)
        assert proc.stdin is not None
        with Snooper(cache, [load.NODE_IF], netns=node):
            for i in range(samples):
                name = f"n{i}.bench.example"
                t0 = time.perf_counter()
                proc.stdin.write("\n")
                proc.stdin.flush()
                while not cache.ips(name):
                    time.sleep(0.0001)
                assert sync.sync(10)
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.01)  # one response at a time: latency, not queueing
        proc.wait(timeout=30)

    benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    floor = apply_floor(sync, node)
    stop(sync, engine)
    latencies.sort()
    info = {
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "apply_floor_ms": round(floor * 1000, 3),
        "nft_binary_floor_ms": round(nft_floor(node) * 1000, 2),
    }
    benchmark.extra_info.update(info)
    print(info)


@pytest.mark.parametrize(
    ("rate", "seconds"), [(5_000, 4), (20_000, 4), (20_000, 10), (20_000, 30), (30_000, 10)]
)
def test_snooped_responses_per_second(
    benchmark: BenchmarkFixture, pair: tuple[str, str], rate: int, seconds: int
) -> None:
    # The load rate and its target rate; ten seconds outlast the socket's buffer, so
    # the rate read is what the process sustains (above it, the kernel's drops are counted).
    node, other = pair
    count = rate * seconds
    cache, engine, sync = start(node)
    result: dict[str, float] = {}

    def run() -> None:
        with Snooper(cache, [load.NODE_IF], netns=node) as snooper:
            proc = load.sender(other, count, rate)
            cpu0 = time.process_time()
            assert proc.stdout is not None
            proc.stdout.readline()  # the first one leaves
            t0 = time.perf_counter()
            while proc.stdout.readline().strip() != "done":  # every response is on the wire
                pass
            sent = time.perf_counter() - t0
            # Read until nothing more arrives for a second.
            last, seen_at = -1, time.perf_counter()
            while time.perf_counter() - seen_at < 1.0:
                now_seen = snooper.stats().responses
                if now_seen != last:
                    last, seen_at = now_seen, time.perf_counter()
                time.sleep(0.01)
            elapsed = seen_at - t0
            proc.wait(timeout=30)
            assert sync.sync(60)
            stats = snooper.stats()
            result.update(
                received=stats.responses,
                dropped_by_kernel=stats.dropped,
                learned=len(cache),
                per_second=round(stats.responses / elapsed),
                sender_per_second=round(count / sent),
                cpu_us_per_response=round(
                    (time.process_time() - cpu0) / max(1, stats.responses) * 1e6, 1
                ),
            )

    benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    installed = sync.backend.installed(netns=node)
    assert installed is not None
    result["in_kernel"] = sum(len(m) for m in installed.members.values())
    result["sent"] = count
    stop(sync, engine)
    benchmark.extra_info.update(result)
    print(result)


def test_agent_cpu_when_idle(
    benchmark: BenchmarkFixture, pair: tuple[str, str], tmp_path: Path
) -> None:
    node, _ = pair
    policy = tmp_path / "policy.yaml"
    policy.write_text(load.POLICY)
    agent = subprocess.Popen(
        ["ip", "netns", "exec", node, sys.executable, "-m", "fqdnpolicy.cli", "agent",
         "--policies", str(policy), "--snoop", "fqsb0", "--trusted-dns", "198.51.100.53"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{agent.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    result: dict[str, float] = {}

    def run() -> None:
        time.sleep(3)  # started and settled
        c0, t0 = cpu(), time.monotonic()
        time.sleep(10)
        result["idle_cpu_percent"] = round(100 * (cpu() - c0) / (time.monotonic() - t0), 2)

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    finally:
        agent.terminate()
        agent.wait(timeout=20)
    benchmark.extra_info.update(result)
    print(result)


@pytest.mark.parametrize(
    ("pool", "recent"), [(50_000, None), (0, 50_000)], ids=["every-address", "bounded-names"]
)
def test_agent_under_load(
    benchmark: BenchmarkFixture,
    pair: tuple[str, str],
    tmp_path: Path,
    pool: int,
    recent: int | None,
) -> None:
    # The load run: 5,000 responses a second for a minute to the agent (a subprocess),
    # TTL an hour. every-address: the names cycle below the cache's bound on names, so all
    # the addresses stay, and every one must be in the kernel at the end. bounded-names:
    # each response a new name, so the bound evicts the earliest-expiring names once reached
    # and memory must level off; the last responses' addresses must be in the kernel.
    node, other = pair
    runs: list[load.LoadRun] = []

    def run() -> None:
        runs.append(
            load.agent_load(
                node, other, tmp_path, rate=5000, seconds=60, ttl=3600, pool=pool, recent=recent
            )
        )

    benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    (done,) = runs
    assert (done.learned, done.missing, done.failures) == (done.sent, 0, 0)
    result = {
        "sent": done.sent,
        "sender_per_second": round(done.sent / done.send_seconds),
        "learned": done.learned,
        "checked_in_kernel": done.checked,
        "missing_in_kernel": done.missing,
        "agent_cpu_percent": round(100 * done.cpu_seconds / done.rss_kib[-1][0], 1),
        **{f"rss_mib_at_{int(f * 100)}pct": round(done.rss_at(f) / 1024, 1)
           for f in (0, 0.25, 0.5, 0.75, 1)},
    }  # fmt: skip
    benchmark.extra_info.update(result)
    print(result)
