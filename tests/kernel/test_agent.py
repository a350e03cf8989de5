"""``fqdnpolicy agent`` in the lab: a subprocess in the node namespace, stopped by its pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fqdnpolicy.cluster import default_interface
from fqdnpolicy.testing.lab import DNS_SERVER, Lab
from tests.kernel import load
from tests.kernel.test_sync_hold import POLICY, client, records

pytestmark = pytest.mark.kernel
INTERFACE = default_interface("default", "web")
FETCH = """
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen("http://127.0.0.1:9402" + sys.argv[1], timeout=2) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print(0)
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    from tests.support import require_root, require_tool

    require_root()
    for tool in ("dnsmasq", "nft", "iptables-nft"):
        require_tool(tool)
    addresses = [f"203.0.113.{i}" for i in (1, 2, 250)]
    with Lab([("default/web", INTERFACE)], addresses, [80], [], records(), prefix="fqs") as lab:
        yield lab


def cluster_yaml(lab: Lab) -> str:
    w = lab.workloads[0]
    return f"""\
apiVersion: v1
kind: List
items:
- {{apiVersion: v1, kind: Namespace, metadata: {{name: default}}}}
- apiVersion: v1
  kind: Pod
  metadata: {{name: web, namespace: default, labels: {{app: web}}}}
  status: {{podIP: {w.ipv4}, podIPs: [{{ip: {w.ipv4}}}, {{ip: {w.ipv6}}}]}}
"""


def fetch(lab: Lab, path: str) -> tuple[int, str]:
    out = subprocess.run(
        ["ip", "netns", "exec", lab.host, sys.executable, "-c", FETCH, path],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    status, _, body = out.partition("\n")
    return int(status), body


def full_applies(metrics: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith("fqdnpolicy_full_applies_total"))
    return float(line.split()[-1])


def until(check: object, deadline: float) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_the_agent_enforces_follows_edits_serves_metrics_and_stops_cleanly(
    lab: Lab, tmp_path: Path
) -> None:
    policy, cluster, cache = tmp_path / "policy.yaml", tmp_path / "cluster.yaml", tmp_path / "c"
    policy.write_text(POLICY)
    cluster.write_text(cluster_yaml(lab))
    agent = subprocess.Popen(
        [
            "ip", "netns", "exec", lab.host, sys.executable, "-m", "fqdnpolicy.cli", "agent",
            "--policies", str(policy), "--cluster", str(cluster), "--hold-dns",
            "--trusted-dns", DNS_SERVER, "--cache", str(cache),
            "--metrics", "127.0.0.1:9402", "--log-format", "json",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert until(lambda: fetch(lab, "/readyz")[0] == 200, 20)
        assert fetch(lab, "/healthz")[0] == 200
        assert client(lab, ["n1.allowed.example.test", "denied.example.test"]) == [True, False]
        # An invalid edit changes nothing; a valid one takes effect within a second.
        policy.write_text("kind: Nonsense\n")
        time.sleep(0.5)
        assert client(lab, ["203.0.113.1"]) == [True]
        policy.write_text(POLICY.replace('"*.allowed.example.test"', '"*.example.test"'))
        assert until(lambda: client(lab, ["203.0.113.250"], timeout=0.2) == [True], 1.0 + 1.0)
        status, text = fetch(lab, "/metrics")
        assert status == 200
        assert "fqdnpolicy_applies_total" in text
        assert "fqdnpolicy_watch_errors_total 1.0" in text
        assert 'fqdnpolicy_dns_held_total{outcome="released"}' in text
        # SIGHUP: everything read again and applied in full; the agent keeps running.
        fulls = full_applies(text)
        agent.send_signal(signal.SIGHUP)
        assert until(lambda: full_applies(fetch(lab, "/metrics")[1]) > fulls, 10)
        assert agent.poll() is None
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            code = agent.wait(timeout=20)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    assert code == 0, agent.stderr.read().decode() if agent.stderr else ""
    assert cache.exists()


def test_a_bad_snoop_interface_exits_1_before_any_rule_is_applied(
    netns: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    done = subprocess.run(
        [
            "ip", "netns", "exec", netns, sys.executable, "-m", "fqdnpolicy.cli", "agent",
            "--policies", str(policy), "--snoop", "no-such0",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no-such0" in done.stdout + done.stderr
    tables = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "tables"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert tables.strip() == ""


def ask(path: Path, request: dict[str, object]) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer: dict[str, object] = json.loads(sock.makefile().readline())
    return answer


def verdict_counts(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("fqdnpolicy_verdicts_total{"):
            found[line.split('"')[1]] = float(line.split()[-1])
    return found


def test_verdicts_the_agent_answers_are_counted_by_action_in_its_metrics(
    netns: str, tmp_path: Path
) -> None:
    from fqdnpolicy.agent import Agent, AgentConfig
    from fqdnpolicy.agent.metrics import MetricsServer

    policy, cluster, sock = tmp_path / "policy.yaml", tmp_path / "cluster.yaml", tmp_path / "s"
    policy.write_text(POLICY)
    cluster.write_text(
        "apiVersion: v1\nkind: Pod\n"
        "metadata: {name: web, namespace: default, labels: {app: web}}\n"
        "status: {podIP: 203.0.113.9}\n"
    )
    config = AgentConfig(
        policies=(str(policy),), cluster=(str(cluster),), netns=netns, cni_socket=str(sock)
    )
    agent = Agent(config)
    metrics = MetricsServer(agent, "127.0.0.1", 0)
    try:
        assert verdict_counts(metrics.port) == {"Allow": 0, "Deny": 0}
        dns = {"op": "verdict", "src": "default/web", "dst": "198.51.100.53"}
        answer = ask(sock, {**dns, "protocol": "UDP", "port": 53})
        assert (answer["ok"], answer["action"], answer["rule_index"]) == (True, "Allow", 0)
        answer = ask(sock, {"op": "verdict", "src": "default/web", "dst": "203.0.113.250"})
        assert (answer["ok"], answer["action"]) == (True, "Deny")
        assert agent.verdict("default/web", "203.0.113.250", "TCP", 80).action == "Deny"
        # A flow the engine refuses is answered with the error and not counted.
        answer = ask(sock, {"op": "verdict", "src": "default/nobody", "dst": "203.0.113.250"})
        assert answer["ok"] is False
        assert ask(sock, {"op": "verdict", "src": "default/web", "dst": 7})["ok"] is False
        assert verdict_counts(metrics.port) == {"Allow": 1, "Deny": 2}
    finally:
        metrics.close()
        agent.close()


def links(netns: str) -> str:
    return subprocess.run(
        ["ip", "-n", netns, "-o", "link"], capture_output=True, text=True, timeout=30, check=True
    ).stdout


def test_closing_an_in_process_agent_lets_its_namespace_go(netns: str, tmp_path: Path) -> None:
    # A veth pair joins the scratch namespace to the agent's: when the kernel really destroys
    # the agent's namespace, its end goes and takes the peer with it. A libnftables worker
    # still inside it would keep both.
    from fqdnpolicy.agent import Agent, AgentConfig

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    node = f"fqs-ag-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", node], check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(
            ["ip", "-n", netns, "link", "add", "fqsa0", "type", "veth", "peer", "name", "fqsa1",
             "netns", node],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        agent = Agent(AgentConfig(policies=(str(policy),), netns=node))
        try:
            assert agent.sync.wait_ready(10)
        finally:
            agent.close()
        subprocess.run(["ip", "netns", "del", node], check=True, capture_output=True, timeout=30)
        assert until(lambda: "fqsa0" not in links(netns), 10)
    finally:
        subprocess.run(["ip", "netns", "del", node], capture_output=True, timeout=30, check=False)


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return float(next(x for x in text.splitlines() if x.startswith(name + " ")).split()[-1])


def test_snooping_drops_and_lost_interfaces_are_in_the_metrics(tmp_path: Path) -> None:
    # As in the snooper's own test: a blocking subscriber stalls the reading thread and the
    # smallest receive buffer makes the kernel drop most of a burst.
    from fqdnpolicy.agent import Agent, AgentConfig
    from fqdnpolicy.agent.metrics import MetricsServer
    from tests.support import require_root

    require_root()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    release = threading.Event()
    sent = 2000

    def blocking(changes: object) -> None:
        release.wait(10)

    with load.pair() as (node, other):
        config = AgentConfig(
            policies=(str(policy),),
            netns=node,
            snoop_endpoints=True,
            trusted_dns=(load.SENDER_IP,),
        )
        agent = Agent(config)
        metrics = MetricsServer(agent, "127.0.0.1", 0)
        try:
            assert agent.snooper is not None
            snooper = agent.snooper
            assert scrape(metrics.port, "fqdnpolicy_dns_responses_dropped_total") == 0
            snooper.buffer_bytes = 1
            snooper.add_interface(load.NODE_IF)
            agent.cache.subscribe(blocking)
            proc = load.sender(other, sent, 20_000)
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, out
            release.set()
            assert until(lambda: snooper.stats().packets + snooper.stats().dropped == sent, 10)
            dropped = snooper.stats().dropped
            assert dropped > 0
            assert scrape(metrics.port, "fqdnpolicy_dns_responses_dropped_total") == dropped
            lost = "fqdnpolicy_snoop_interfaces_lost_total"
            assert scrape(metrics.port, lost) == 0
            subprocess.run(
                ["ip", "-n", node, "link", "del", load.NODE_IF],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            assert until(lambda: scrape(metrics.port, lost) == 1, 10)
        finally:
            release.set()
            metrics.close()
            agent.close()
