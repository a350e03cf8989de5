"""Cluster state: endpoints, namespaces and service accounts from kubectl YAML."""

from __future__ import annotations

import pytest

from fqdnpolicy.cluster import Cluster, Endpoint, Namespace, default_interface, loads_cluster
from fqdnpolicy.errors import InvalidPolicy

KUBECTL_OUTPUT = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: default
    labels: {team: web}
- apiVersion: v1
  kind: Pod
  metadata:
    name: backend-1
    namespace: default
    labels: {app: backend}
    uid: 0d1f
  spec:
    serviceAccountName: api
    nodeName: node-1
    containers:
    - name: app
      image: example/backend
      ports:
      - {name: http, containerPort: 8080, protocol: TCP}
      - {containerPort: 9090}
  status:
    phase: Running
    podIP: 10.0.0.5
    podIPs: [{ip: 10.0.0.5}, {ip: "fd00::5"}]
- apiVersion: v1
  kind: Pod
  metadata: {name: node-agent, namespace: kube-system}
  spec: {hostNetwork: true, containers: []}
  status: {podIP: 192.0.2.1}
- apiVersion: v1
  kind: Service
  metadata: {name: ignored, namespace: default}
"""


def test_kubectl_list_yields_pods_and_namespaces_and_skips_other_kinds() -> None:
    cluster = loads_cluster(KUBECTL_OUTPUT)
    assert [ep.key for ep in cluster.endpoints] == ["default/backend-1"]
    backend = cluster.endpoint("default/backend-1")
    assert backend.labels == {"app": "backend"}
    assert backend.ips == ("10.0.0.5", "fd00::5")
    assert backend.service_account == "api"
    assert [(p.name, p.port, p.protocol) for p in backend.named_ports] == [("http", 8080, "TCP")]
    assert cluster.namespace("default").labels == {"team": "web"}


def test_host_network_pods_are_not_workload_endpoints() -> None:
    cluster = loads_cluster(KUBECTL_OUTPUT)
    assert all(ep.name != "node-agent" for ep in cluster.endpoints)


def test_namespaces_used_by_pods_exist_even_when_not_declared() -> None:
    cluster = Cluster([Endpoint("web", "shop", ips=["10.0.0.9"])])
    assert cluster.namespace("shop") == Namespace("shop")
    assert [ns.name for ns in cluster.namespaces] == ["shop"]


def test_namespace_effective_labels_name_the_namespace_both_ways() -> None:
    labels = Namespace("kube-system", {"a": "b"}).effective_labels
    assert labels["kubernetes.io/metadata.name"] == "kube-system"
    assert labels["projectcalico.org/name"] == "kube-system"
    assert labels["a"] == "b"


def test_interface_defaults_to_calico_style_name() -> None:
    ep = Endpoint("backend-1", "default")
    assert ep.interface == default_interface("default", "backend-1")
    assert ep.interface.startswith("cali")
    assert len(ep.interface) == 15  # IFNAMSIZ - 1


def test_ips_are_canonicalised() -> None:
    assert Endpoint("a", "b", ips=["2001:DB8:0::1"]).ips == ("2001:db8::1",)


def test_duplicate_ip_between_pods_is_an_error() -> None:
    with pytest.raises(InvalidPolicy, match="belongs to both"):
        Cluster([Endpoint("a", "n", ips=["10.0.0.1"]), Endpoint("b", "n", ips=["10.0.0.1"])])


def test_bad_pod_ip_is_reported_with_file_and_path() -> None:
    text = "kind: Pod\nmetadata: {name: p, namespace: n}\nstatus:\n  podIPs: [{ip: nope}]\n"
    with pytest.raises(InvalidPolicy) as info:
        loads_cluster(text, filename="pods.yaml")
    problem = info.value.problem
    assert (problem.file, problem.line, problem.path) == ("pods.yaml", 1, "status.podIPs[0].ip")
    assert problem.resource == "Pod n/p"


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(InvalidPolicy) as info:
        loads_cluster("kind: Pod\nmetadata: {name: [\n", filename="bad.yaml")
    assert info.value.problem.file == "bad.yaml"
    assert info.value.problem.line is not None


def _problems(text: str) -> list[str]:
    with pytest.raises(InvalidPolicy) as caught:
        loads_cluster(text, filename="c.yaml")
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Pod\nmetadata: [a, b]\n", "c.yaml:1: metadata: must be a map, not a list"),
        ("kind: Namespace\nmetadata: [a]\n", "c.yaml:1: metadata: must be a map, not a list"),
        (
            "kind: Pod\nmetadata: {name: p}\nstatus: {podIPs: 7}\n",
            "Pod default/p: status.podIPs: must be a list, not a number",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nstatus: {podIPs: [7]}\n",
            "Pod default/p: status.podIPs[0]: must be a map with 'ip', not a number",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nstatus: {podIPs: [{ip: 7}]}\n",
            "Pod default/p: status.podIPs[0].ip: not an IP address: 'a number'",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n",
            "Pod default/p: spec.containers: must be a list, not a number",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nspec: {containers: [3]}\n",
            "Pod default/p: spec.containers[0]: must be a map, not a number",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nspec: 5\n",
            "c.yaml:1: spec: must be a map, not a number",
        ),
    ],
)
def test_malformed_pods_are_located_problems_not_crashes(text: str, expected: str) -> None:
    assert any(expected in problem for problem in _problems(text))


def test_a_timestamp_that_is_no_date_is_just_text() -> None:
    text = "kind: Pod\nmetadata: {name: p, creationTimestamp: 2024-02-30T10:00:00Z}\n"
    assert [ep.key for ep in loads_cluster(text).endpoints] == ["default/p"]


@pytest.mark.parametrize("flow", ["[", "{a: "])
def test_nesting_thousands_deep_is_refused(flow: str) -> None:
    text = "kind: Pod\nmetadata: " + flow * 5000 + "\n"
    (problem,) = _problems(text)
    assert "nested deeper than" in problem


def test_nesting_deep_but_parseable_is_refused_before_building() -> None:
    text = "kind: Pod\nmetadata: {name: p}\nspec: " + "[" * 150 + "]" * 150 + "\n"
    (problem,) = _problems(text)
    assert "nested deeper than 100 levels" in problem


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_pods_that_have_ended_are_not_endpoints(phase: str) -> None:
    text = (
        "kind: Pod\nmetadata: {name: done}\n"
        f"status: {{phase: {phase}, podIP: 198.51.100.9}}\n"
        "---\nkind: Pod\nmetadata: {name: live}\nstatus: {phase: Running, podIP: 198.51.100.9}\n"
    )
    # The ended pod's address is reused by a live one, as the cluster allows.
    assert [ep.key for ep in loads_cluster(text).endpoints] == ["default/live"]
