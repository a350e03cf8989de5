"""The sync loop on a real kernel: DNS response on the wire to element in the kernel,
snooped responses per second, and the agent's CPU when idle.

Run as root: ``.venv/bin/pytest benchmarks/bench_sync.py --benchmark-only -s``. Figures are
in each result's ``extra_info`` (and printed with ``-s``); docs/development.md keeps the dated
ones. Two namespaces joined by a veth pair: a sender (198.51.100.53, the trusted server) and
the node (198.51.100.10) where the snooper reads and the nftables table lives. Each response
answers a new name with a new IPv6 address of 2001:db8::/32, so every one is a kernel change.

The same-run reference is one empty ``nft`` transaction in the node namespace (the floor of
every apply through the ``nft`` binary).
"""

from __future__ import annotations

import itertools
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

_IDS = itertools.count()
POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-egress, namespace: default}
spec:
  selector: app == "web"
  egress:
  - action: Allow
    protocol: TCP
    destination: {domains: ["*.bench.example"], ports: [443]}
"""
# In the sender namespace: COUNT responses for n{i}.bench.example, AAAA 2001:db8:1::i, sent
# from port 53, RATE per second (0: one per line read on stdin).
SENDER = """
import socket, sys
import dns.message, dns.rrset
import time
count, rate = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.53", 53))
wires = []
for i in range(count):
    name = f"n{i}.bench.example"
    r = dns.message.make_response(dns.message.make_query(name, "AAAA"))
    r.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "AAAA",
                                        f"2001:db8:1::{i // 65536:x}:{i % 65536:x}"))
    wires.append(r.to_wire())
print("ready", flush=True)
start = time.monotonic()
for i, wire in enumerate(wires):
    if not rate:
        sys.stdin.readline()
    elif i % 100 == 0:
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
    s.sendto(wire, ("198.51.100.10", 40000))
print("done", flush=True)
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tag = f"{os.getpid()}x{next(_IDS)}"
    node, sender = f"fqs-bn-{tag}", f"fqs-bs-{tag}"
    try:
        for ns in (node, sender):
            sh("ip", "netns", "add", ns)
        sh("ip", "-n", node, "link", "add", "fqsb0", "type", "veth", "peer", "name", "fqsb1",
           "netns", sender)  # fmt: skip
        sh("ip", "-n", node, "addr", "add", "198.51.100.10/24", "dev", "fqsb0")
        sh("ip", "-n", sender, "addr", "add", "198.51.100.53/24", "dev", "fqsb1")
        for ns, dev in ((node, "fqsb0"), (sender, "fqsb1")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield node, sender
    finally:
        for ns in (node, sender):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)


def start(node: str) -> tuple[DNSCache, PolicyEngine, DatapathSync]:
    cache = DNSCache(trusted_servers=["198.51.100.53"])
    cluster = fqdnpolicy.Cluster(
        [fqdnpolicy.Endpoint("web", "default", {"app": "web"}, ips=["198.51.100.20"])],
        [fqdnpolicy.Namespace("default")],
    )
    engine = PolicyEngine(fqdnpolicy.loads(POLICY), cluster, cache)
    backend = NftablesBackend(table="fqsbench", use_library=False)
    sync = DatapathSync(engine, backend, netns=node, dns=cache, reconcile_interval=None)
    assert sync.wait_ready(10)
    return cache, engine, sync


def sender(ns: str, count: int, rate: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, str(count),
         str(rate)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def nft_floor(node: str, rounds: int = 50) -> float:
    """Median seconds of one empty nft transaction in the node namespace."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", node, "nft", "-f", "/dev/null"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_wire_to_kernel_latency(benchmark: BenchmarkFixture, pair: tuple[str, str]) -> None:
    node, other = pair
    samples = 300
    cache, engine, sync = start(node)
    latencies: list[float] = []

    def run() -> None:
        proc = sender(other, samples, 0)
        assert proc.stdin is not None
        with Snooper(cache, ["fqsb0"], netns=node):
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
    sync.close(remove=True)
    engine.close()
    latencies.sort()
    info = {
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "nft_floor_ms": round(nft_floor(node) * 1000, 2),
    }
    benchmark.extra_info.update(info)
    print(info)


@pytest.mark.parametrize("rate", [5_000, 20_000])
def test_snooped_responses_per_second(
    benchmark: BenchmarkFixture, pair: tuple[str, str], rate: int
) -> None:
    node, other = pair
    count = rate * 4  # the load rate and its target rate, four seconds each
    cache, engine, sync = start(node)
    result: dict[str, float] = {}

    def run() -> None:
        with Snooper(cache, ["fqsb0"], netns=node) as snooper:
            proc = sender(other, count, rate)
            t0 = time.perf_counter()
            assert proc.stdout is not None
            proc.stdout.readline()  # "done": every response is on the wire
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
            result.update(
                received=snooper.stats().responses,
                learned=len(cache),
                per_second=round(snooper.stats().responses / elapsed),
                sender_per_second=round(count / sent),
            )

    benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    installed = sync.backend.installed(netns=node)
    assert installed is not None
    result["in_kernel"] = sum(len(m) for m in installed.members.values())
    result["sent"] = count
    sync.close(remove=True)
    engine.close()
    benchmark.extra_info.update(result)
    print(result)


def test_agent_cpu_when_idle(
    benchmark: BenchmarkFixture, pair: tuple[str, str], tmp_path: Path
) -> None:
    node, _ = pair
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
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
