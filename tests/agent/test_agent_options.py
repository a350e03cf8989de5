"""The agent's options, defaults and watched files, without a kernel."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import fqdnpolicy
from fqdnpolicy.agent import AgentConfig, ConfigError
from fqdnpolicy.agent.sources import WatchedState, dns_servers_in
from fqdnpolicy.cli import main
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from tests.sync.test_sync import POLICY

CLUSTER = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: default}
- apiVersion: v1
  kind: Namespace
  metadata: {name: kube-system}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: default, labels: {app: web}}
  status: {podIP: 198.51.100.10, podIPs: [{ip: 198.51.100.10}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: node-local-dns-x, namespace: kube-system, labels: {k8s-app: node-local-dns}}
  status: {podIP: 198.51.100.54, podIPs: [{ip: 198.51.100.54}]}
- apiVersion: v1
  kind: Service
  metadata: {name: kube-dns, namespace: kube-system}
  spec: {clusterIP: 198.51.100.53, clusterIPs: [198.51.100.53]}
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    policy, cluster = tmp_path / "policy.yaml", tmp_path / "cluster.yaml"
    policy.write_text(POLICY)
    cluster.write_text(CLUSTER)
    return policy, cluster


@pytest.mark.parametrize(
    "words",
    [
        ["--hold-bound", "0"],
        ["--hold-bound", "31"],
        ["--trusted-dns", "not-an-address"],
        ["--metrics", "localhost"],
        ["--watch-interval", "-1"],
        ["--hold-fail", "maybe"],
    ],
)
def test_a_bad_option_exits_2_and_starts_nothing(
    files: tuple[Path, Path], words: list[str]
) -> None:
    assert main(["agent", "--policies", str(files[0]), *words], io.StringIO()) == 2


def test_a_missing_file_or_no_policies_exit_2(tmp_path: Path) -> None:
    assert main(["agent", "--policies", str(tmp_path / "missing.yaml")], io.StringIO()) == 2
    assert main(["agent"], io.StringIO()) == 2


def test_the_config_file_gives_options_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("policies: [a.yaml]\nhold-dns: true\nhold_bound: 0.5\nlog-format: json\n")
    values = AgentConfig.from_file(str(config))
    values["hold_bound"] = 2.0
    built = AgentConfig.build(values)
    assert (built.policies, built.hold_dns, built.hold_bound, built.log_format) == (
        ("a.yaml",), True, 2.0, "json",
    )  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        "policies: [a.yaml]\nno_such_option: 1\n",
        "policies: [a.yaml]\nhold_dns: 3\n",
        "policies: [a.yaml]\nstate_dir: [a, b]\n",
    ],
)
def test_a_bad_config_file_is_refused_naming_the_problem(tmp_path: Path, text: str) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError):
        AgentConfig.build(AgentConfig.from_file(str(config)))


def test_the_registrations_file_sits_in_the_state_dir_else_beside_the_socket() -> None:
    assert AgentConfig(policies=("p",)).state_file is None
    beside = AgentConfig(policies=("p",), cni_socket="/run/fq/cni.sock")
    assert beside.state_file == "/run/fq/cni-endpoints.json"
    chosen = AgentConfig(policies=("p",), cni_socket="/run/fq/cni.sock", state_dir="/var/lib/fq")
    assert chosen.state_file == "/var/lib/fq/cni-endpoints.json"


def test_default_dns_servers_are_kube_dns_and_node_local_dns(files: tuple[Path, Path]) -> None:
    cluster = fqdnpolicy.load_cluster(files[1])
    assert dns_servers_in(cluster, [str(files[1])]) == ["198.51.100.53", "198.51.100.54"]


def test_an_invalid_edit_keeps_the_last_good_state_and_a_fix_applies(
    files: tuple[Path, Path],
) -> None:
    policy, cluster = files
    watched = WatchedState([str(policy)], [str(cluster)])
    engine = PolicyEngine(watched.resources, watched.cluster, DNSCache())
    before = engine.policies_for("default/web", "egress")
    policy.write_text(POLICY.replace("action: Allow", "action: Maybe"))
    assert not watched.poll(engine)
    assert watched.errors == 1
    assert engine.policies_for("default/web", "egress") == before
    policy.write_text(POLICY.replace("web-egress", "web-egress-2"))
    assert watched.poll(engine)
    assert engine.policies_for("default/web", "egress") == ["NetworkPolicy default/web-egress-2"]
