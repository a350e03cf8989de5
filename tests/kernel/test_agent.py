"""``fqdnpolicy agent`` in the lab: a subprocess in the node namespace, stopped by its pid."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fqdnpolicy.cluster import default_interface
from fqdnpolicy.testing.lab import DNS_SERVER, Lab
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
