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
    assert (problem.file, problem.line, problem.path) == ("pods.yaml", 1, "status.podIPs[0]")
    assert problem.resource == "Pod n/p"


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(InvalidPolicy) as info:
        loads_cluster("kind: Pod\nmetadata: {name: [\n", filename="bad.yaml")
    assert info.value.problem.file == "bad.yaml"
    assert info.value.problem.line is not None
