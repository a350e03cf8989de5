"""fqdnpolicy-cni chained after Debian's reference plugins (ptp + host-local), run as a runtime
runs a chain, with the agent in the lab's node namespace enforcing the new pod's policy."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fqdnpolicy.testing.lab import DNS_SERVER, Lab
from tests.kernel.test_sync_hold import CLIENT, POLICY, records

pytestmark = pytest.mark.kernel
REFERENCE_PLUGINS = Path("/usr/lib/cni")
_IDS = itertools.count()
CLUSTER = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- apiVersion: v1
  kind: Pod
  metadata: {name: cnipod, namespace: default, labels: {app: web}}
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    from tests.support import kernel_unavailable, require_root, require_tool

    require_root()
    for tool in ("dnsmasq", "nft", "iptables-nft"):
        require_tool(tool)
    if not (REFERENCE_PLUGINS / "ptp").exists():
        kernel_unavailable(
            "needs the CNI reference plugins (apt-get install containernetworking-plugins)"
        )
    addresses = ["203.0.113.1", "203.0.113.250"]
    with Lab([("default/other", "fqsother0")], addresses, [80], [], records(), prefix="fqs") as lab:
        yield lab


class Runtime:
    """Runs a plugin chain the way a container runtime does (libcni's order and inputs)."""

    def __init__(self, lab: Lab, conflist: dict[str, Any], bindir: Path, netns: str) -> None:
        self.lab, self.conflist, self.netns = lab, conflist, netns
        self.path = f"{REFERENCE_PLUGINS}:{bindir}"

    def _call(self, plugin: dict[str, Any], command: str, prev: Any) -> tuple[int, Any]:
        conf = {"cniVersion": self.conflist["cniVersion"], "name": self.conflist["name"], **plugin}
        if prev is not None:
            conf["prevResult"] = prev
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": f"fqs-container-{os.getpid()}",
            "CNI_NETNS": f"/run/netns/{self.netns}",
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=cnipod",
            "CNI_PATH": self.path,
        }
        binary = next(
            Path(d) / plugin["type"]
            for d in self.path.split(":")
            if (Path(d) / plugin["type"]).exists()
        )
        done = subprocess.run(
            ["ip", "netns", "exec", self.lab.host, str(binary)],
            input=json.dumps(conf), capture_output=True, text=True, env=env, timeout=60,
            check=False,
        )  # fmt: skip
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None

    def add(self) -> Any:
        result = None
        for plugin in self.conflist["plugins"]:
            code, result = self._call(plugin, "ADD", result)
            assert code == 0, result
        return result

    def check(self, result: Any) -> int:
        return max(self._call(p, "CHECK", result)[0] for p in self.conflist["plugins"])

    def delete(self, result: Any) -> None:
        for plugin in reversed(self.conflist["plugins"]):
            code, answer = self._call(plugin, "DEL", result)
            assert code == 0, answer


def in_pod(netns: str, names: list[str]) -> list[bool]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, DNS_SERVER, ",".join(names),
         "1.0", "resolve", "0"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return [line == "1" for line in out.split()]


def chain(tmp_path: Path, sock: Path) -> tuple[dict[str, Any], Path]:
    """The network configuration list (ptp, host-local, fqdnpolicy-cni) and the plugin dir."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "fqdnpolicy-cni"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m fqdnpolicy.cni\n")
    wrapper.chmod(0o755)
    conflist = {
        "cniVersion": "1.0.0",
        "name": "fqsnet",
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "198.51.100.128/26"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(tmp_path / "ipam"),
                },
            },
            {"type": "fqdnpolicy-cni", "agentSocket": str(sock)},
        ],
    }
    return conflist, bindir


class Agent:
    """``fqdnpolicy agent`` as a subprocess in the lab's node namespace, stopped by its pid."""

    def __init__(self, lab: Lab, tmp_path: Path, sock: Path, *options: str) -> None:
        policy, cluster = tmp_path / "policy.yaml", tmp_path / "cluster.yaml"
        policy.write_text(POLICY)
        cluster.write_text(CLUSTER)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        self.process = subprocess.Popen(
            [
                "ip", "netns", "exec", lab.host, sys.executable, "-m", "fqdnpolicy.cli", "agent",
                "--policies", str(policy), "--cluster", str(cluster), *options,
                "--trusted-dns", DNS_SERVER, "--cni-socket", str(sock),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> str:
        """SIGTERM, wait; the agent's log."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        return self.process.stderr.read().decode() if self.process.stderr else ""


def nft_table(lab: Lab) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", lab.host, "nft", "list", "table", "inet", "fqdnpolicy"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def packet_sockets(lab: Lab) -> list[int]:
    """The interface index of every packet socket in the node namespace (the kernel's list)."""
    table = subprocess.run(
        ["ip", "netns", "exec", lab.host, "cat", "/proc/net/packet"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return [int(line.split()[4]) for line in table.splitlines()[1:]]


def ifindex(lab: Lab, name: str) -> int:
    shown = subprocess.run(
        ["ip", "-n", lab.host, "-j", "link", "show", "dev", name],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return int(json.loads(shown)[0]["ifindex"])


@pytest.fixture
def pod() -> Iterator[str]:
    """A pod's network namespace, made and deleted here (exactly this one)."""
    name = f"fqs-pod-{os.getpid()}x{next(_IDS)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)


@pytest.mark.parametrize("mode", ["--hold-dns", "--snoop-endpoints"])
def test_a_pod_added_through_the_chain_is_governed_and_del_cleans_up(
    lab: Lab, tmp_path: Path, mode: str, pod: str
) -> None:
    sock = tmp_path / "cni.sock"
    conflist, bindir = chain(tmp_path, sock)
    agent = Agent(lab, tmp_path, sock, mode)
    try:
        before = packet_sockets(lab)
        runtime = Runtime(lab, conflist, bindir, pod)
        result = runtime.add()
        # ADD passed the previous plugin's result through.
        assert result["ips"][0]["address"].startswith("198.51.100.")
        host_side = next(i["name"] for i in result["interfaces"] if not i.get("sandbox"))
        assert runtime.check(result) == 0
        if mode == "--hold-dns":
            assert in_pod(pod, ["n1.allowed.example.test", "denied.example.test"]) == [True, False]
        else:
            # The agent opened a packet socket on the interface ADD made, after it started.
            assert sorted(packet_sockets(lab)) == sorted([*before, ifindex(lab, host_side)])
            # Snooped on the pod's own interface, which the agent read from its registration:
            # once the answer is learned, the address is allowed.
            assert in_pod(pod, ["n1.allowed.example.test", "203.0.113.1"])[1]
            assert in_pod(pod, ["denied.example.test", "203.0.113.250"]) == [False, False]
        runtime.delete(result)
        links = subprocess.run(
            ["ip", "-n", lab.host, "link", "show"], capture_output=True, text=True, check=True
        ).stdout
        assert host_side not in links
        deadline = time.monotonic() + 5
        while host_side in nft_table(lab) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host_side not in nft_table(lab)
        # DEL closed the socket (the kernel lists no packet socket of the agent's beyond those
        # of before).
        assert packet_sockets(lab) == before
    finally:
        agent.stop()


def test_a_restarted_agent_restores_its_pods_and_forgets_the_deleted_ones(
    lab: Lab, tmp_path: Path, pod: str
) -> None:
    sock = tmp_path / "cni.sock"
    conflist, bindir = chain(tmp_path, sock)
    runtime = Runtime(lab, conflist, bindir, pod)
    agent = Agent(lab, tmp_path, sock, "--snoop-endpoints")
    try:
        result = runtime.add()
    finally:
        agent.stop()
    state = tmp_path / "cni-endpoints.json"
    stored = json.loads(state.read_text())
    (registration,) = stored["registrations"]
    assert registration["netns"] == f"/run/netns/{pod}"
    # A pod deleted while the agent was away: its interface and namespace are gone.
    gone = {**registration, "container_id": "gone", "name": "gone", "interface": "fqsgone0"}
    gone |= {"ips": ["198.51.100.190"], "netns": "/run/netns/fqs-gone-none"}
    stored["registrations"].append(gone)
    state.write_text(json.dumps(stored))
    agent = Agent(lab, tmp_path, sock, "--snoop-endpoints")
    try:
        # The pod's rules and its snooping came back with the agent, before any new ADD.
        assert in_pod(pod, ["denied.example.test", "203.0.113.250"]) == [False, False]
        assert in_pod(pod, ["n1.allowed.example.test", "203.0.113.1"])[1]
        assert runtime.check(result) == 0
        names = [r["name"] for r in json.loads(state.read_text())["registrations"]]
        assert names == ["cnipod"]
        runtime.delete(result)
        assert json.loads(state.read_text())["registrations"] == []
    finally:
        log = agent.stop()
    assert "registration of default/gone dropped" in log
