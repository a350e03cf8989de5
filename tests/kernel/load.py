"""The load run of the sync: a generator sends DNS responses at a steady rate to a node where
``fqdnpolicy agent`` snoops them and programs nftables.

Shared by ``tests/kernel/test_sync_load.py`` (a short run, in CI) and
``benchmarks/bench_sync.py`` (the full minute, with figures). Two namespaces joined by a veth
pair: the sender (198.51.100.53, the trusted server) and the node (198.51.100.10), where the
agent runs as a subprocess (stopped by its pid) and its table lives. Response ``i`` answers
``n{i}.bench.example`` (``i`` modulo a pool of names, if one is given) with its own address
of 2001:db8:1::/48, so every response is a kernel change.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

__all__ = ["POLICY", "SENDER", "LoadRun", "address", "agent_load", "pair", "sender"]

_IDS = itertools.count()
NODE_IP, SENDER_IP = "198.51.100.10", "198.51.100.53"
NODE_IF, SENDER_IF = "fqsl0", "fqsl1"
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
CLUSTER = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: default, labels: {app: web}}
  status: {podIP: 198.51.100.20}
"""
# In the sender namespace: COUNT responses, TTL seconds, sent from port 53, RATE per second
# (0: one per line read on stdin). Response i answers name i (modulo POOL names, when POOL is
# not 0) with address i. Prints "ready", then the monotonic time the first one left, then
# "done".
SENDER = """
import socket, sys, time
import dns.message, dns.rrset
count, rate, ttl, pool = (int(a) for a in sys.argv[1:5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.53", 53))
wires = []
for i in range(count):
    name = f"n{i % pool if pool else i}.bench.example"
    r = dns.message.make_response(dns.message.make_query(name, "AAAA"))
    r.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "AAAA",
                                        f"2001:db8:1::{i // 65536:x}:{i % 65536:x}"))
    wires.append(r.to_wire())
print("ready", flush=True)
start = time.monotonic()
print(start, flush=True)
for i, wire in enumerate(wires):
    if not rate:
        sys.stdin.readline()
    elif i % 50 == 0:
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
    s.sendto(wire, ("198.51.100.10", 40000))
print("done", flush=True)
"""


LEARNED = 'fqdnpolicy_dns_responses_total{result="learned"}'
TABLE = "fqdnpolicy"  # the agent's table (the backend's default)
_ADDRESS = re.compile(r"2001:db8:1:[0-9a-f:]*")


def address(i: int) -> str:
    """The address response ``i`` answers, spelled as nft lists it."""
    return str(ipaddress.IPv6Address(f"2001:db8:1::{i // 65536:x}:{i % 65536:x}"))


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def pair() -> Iterator[tuple[str, str]]:
    """Make the node and sender namespaces; delete exactly them afterwards."""
    tag = f"{os.getpid()}x{next(_IDS)}"
    node, other = f"fqs-ln-{tag}", f"fqs-ls-{tag}"
    try:
        for ns in (node, other):
            _sh("ip", "netns", "add", ns)
        _sh("ip", "-n", node, "link", "add", NODE_IF, "type", "veth", "peer", "name", SENDER_IF,
            "netns", other)  # fmt: skip
        _sh("ip", "-n", node, "addr", "add", f"{NODE_IP}/24", "dev", NODE_IF)
        _sh("ip", "-n", other, "addr", "add", f"{SENDER_IP}/24", "dev", SENDER_IF)
        for ns, dev in ((node, NODE_IF), (other, SENDER_IF), (node, "lo")):
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        yield node, other
    finally:
        for ns in (node, other):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)


def sender(ns: str, count: int, rate: int, ttl: int = 300, pool: int = 0) -> subprocess.Popen[str]:
    """Start the generator in ``ns``; return it once its responses are built."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, str(count), str(rate),
         str(ttl), str(pool)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@attrs.frozen
class LoadRun:
    """What a load run saw.

    Attributes:
        sent: Responses the generator sent.
        send_seconds: How long sending took.
        learned: Responses the agent's cache learned (its ``dns_responses{learned}`` metric).
        missing: Of those looked for, responses whose address was not in the kernel.
        checked: Responses whose address was looked for in the kernel at the end.
        failures: Failed applies (the agent's metric).
        rss_kib: The agent's resident memory, sampled twice a second: ``(seconds, KiB)``.
        cpu_seconds: The agent's CPU time during the run.
    """

    sent: int
    send_seconds: float
    learned: int
    missing: int
    checked: int
    failures: int
    rss_kib: tuple[tuple[float, int], ...]
    cpu_seconds: float

    def rss_at(self, fraction: float) -> int:
        """The sample taken at ``fraction`` of the run (0: start, 1: end)."""
        end = self.rss_kib[-1][0]
        return next(kib for t, kib in self.rss_kib if t >= fraction * end)


def _status(pid: int) -> tuple[int, float]:
    """RSS (KiB) and CPU seconds of process ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metrics(node: str, port: int) -> dict[str, float]:
    fetch = (
        "import sys, urllib.request\n"
        f"print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5)"
        ".read().decode())\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", node, sys.executable, "-c", fetch],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    found: dict[str, float] = {}
    for line in out.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def _nft(node: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", node, "nft", *args],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def _kernel_addresses(node: str) -> set[str]:
    """The addresses of 2001:db8:1::/48 in the agent's table."""
    return set(_ADDRESS.findall(_nft(node, "list", "table", "inet", TABLE)))


def agent_load(
    node: str,
    other: str,
    tmp: Path,
    *,
    rate: int,
    seconds: float,
    ttl: int,
    pool: int = 0,
    recent: int | None = None,
) -> LoadRun:
    """Run the agent in ``node``, send ``rate`` responses a second for ``seconds``, and look.

    Once every response is read, the kernel's domain set is read (with the ``nft`` binary,
    not the agent's own path; reading it while the agent applies would contend with it) and
    every address must be there, or only the ``recent`` last ones: the cache bounds its names
    (``max_names``) and evicts the earliest-expiring, rightly taking their addresses out.
    ``pool`` cycles the names (see :data:`SENDER`), so many addresses fit under that bound.
    """
    (tmp / "policy.yaml").write_text(POLICY)
    (tmp / "cluster.yaml").write_text(CLUSTER)
    port = 9400 + os.getpid() % 500
    log = (tmp / "agent.log").open("wb")  # a pipe nobody reads could fill and stop the agent
    agent = subprocess.Popen(
        ["ip", "netns", "exec", node, sys.executable, "-m", "fqdnpolicy.cli", "agent",
         "--policies", str(tmp / "policy.yaml"), "--cluster", str(tmp / "cluster.yaml"),
         "--snoop", NODE_IF, "--trusted-dns", SENDER_IP, "--metrics", f"127.0.0.1:{port}",
         "--reconcile-interval", "3600"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert agent.poll() is None, (tmp / "agent.log").read_text()
            with contextlib.suppress(subprocess.CalledProcessError):
                if _metrics(node, port).get("fqdnpolicy_full_applies_total", 0) >= 1:
                    break
            time.sleep(0.2)
        count = int(rate * seconds)
        proc = sender(other, count, rate, ttl, pool)
        assert proc.stdout is not None
        start = float(proc.stdout.readline())
        rss: list[tuple[float, int]] = []
        _, cpu0 = _status(agent.pid)
        while proc.poll() is None:
            rss.append((time.monotonic() - start, _status(agent.pid)[0]))
            time.sleep(0.5)
        send_seconds = time.monotonic() - start
        assert proc.returncode == 0
        # Settled: learned stops moving for a second, every response read (their applies
        # follow within the sync's lag; one not done would show as missing below).
        learned, last, settled_at = -1.0, -2.0, time.monotonic()
        while learned != last or time.monotonic() - settled_at < 1.0:
            if learned != last:
                last, settled_at = learned, time.monotonic()
            time.sleep(0.2)
            learned = _metrics(node, port).get(LEARNED, 0)
            if time.monotonic() - start > 10 * seconds + 60:
                break
        rss.append((time.monotonic() - start, _status(agent.pid)[0]))
        _, cpu1 = _status(agent.pid)
        metrics = _metrics(node, port)
        wanted = range(0 if recent is None else max(0, count - recent), count)
        there = _kernel_addresses(node)
        return LoadRun(
            sent=count,
            send_seconds=send_seconds,
            learned=int(learned),
            missing=sum(1 for i in wanted if address(i) not in there),
            checked=len(wanted),
            failures=int(metrics.get("fqdnpolicy_apply_failures_total", 0)),
            rss_kib=tuple(rss),
            cpu_seconds=cpu1 - cpu0,
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        log.close()
