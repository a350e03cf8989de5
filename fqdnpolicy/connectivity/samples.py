"""Seeded Calico-only clusters as YAML, for the map's figures and the comparison.

The comparison is with network-config-analyzer.

:func:`calico_cluster` writes ``count`` pods in a few namespaces and ``policies`` Calico
``NetworkPolicy`` s of ingress and egress rules mixing selectors, namespace selectors,
CIDRs, port ranges, named ports and ``notPorts``, Allow and Deny, and explicit orders: the
policy features both fqdnpolicy and network-config-analyzer implement (no domains, no tiers,
no Log or Pass). The same arguments always give the same text, which both tools read.
"""

from __future__ import annotations

import random

import attrs

__all__ = ["CalicoSample", "calico_cluster"]

APPS = ("web", "api", "worker", "cache", "db", "auth", "search", "batch")
TIERS = ("frontend", "backend", "data")
TEAMS = ("payments", "search", "platform", "identity")


@attrs.frozen
class CalicoSample:
    """A generated cluster.

    Attributes:
        namespaces: ``kubectl get namespaces -o yaml`` text.
        pods: ``kubectl get pods -A -o yaml`` text.
        policies: Calico ``NetworkPolicy`` documents.
    """

    namespaces: str
    pods: str
    policies: str

    @property
    def cluster(self) -> str:
        """Namespaces and pods in one document list (what ``--cluster`` reads)."""
        return self.namespaces + "---\n" + self.pods


def _selector(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f"app == '{rng.choice(APPS)}'"
    if kind == 1:
        return f"tier == '{rng.choice(TIERS)}'"
    return f"app == '{rng.choice(APPS)}' && tier != '{rng.choice(TIERS)}'"


def _ports(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return "[80, 443]"
    if kind == 1:
        return "['8000:8999']"
    if kind == 2:
        return "[http]"
    return "[5432]"


def _rule(rng: random.Random, direction: str) -> list[str]:
    peer = "destination" if direction == "egress" else "source"
    action = "Deny" if rng.random() < 0.15 else "Allow"
    kind = rng.randrange(6)
    lines = [f"  - action: {action}"]
    if kind == 0:
        lines += ["    protocol: TCP", f"    {peer}:", f"      selector: {_selector(rng)!r}"]
        lines += ["    destination:" if peer == "source" else ""]
        lines = [x for x in lines if x]
        if peer == "source":
            lines += [f"      ports: {_ports(rng)}"]
        else:
            lines += [f"      ports: {_ports(rng)}"]
    elif kind == 1:
        lines += [
            "    protocol: TCP",
            f"    {peer}:",
            f"      selector: {_selector(rng)!r}",
            f"      namespaceSelector: team == '{rng.choice(TEAMS)}'",
        ]
        if peer == "destination":
            lines += ["      ports: ['1000:2000']"]
    elif kind == 2:
        lines += [
            "    protocol: UDP",
            "    destination:",
            "      ports: [53]",
        ]
    elif kind == 3:
        net = f"10.{rng.randrange(4)}.0.0/16" if rng.random() < 0.5 else "192.0.2.0/24"
        lines += ["    protocol: TCP", f"    {peer}:", f"      nets: [{net}]"]
        if peer == "destination":
            lines += ["      notPorts: [22]"]
    elif kind == 4:
        lines += ["    protocol: TCP", "    destination:", "      ports: [22]"]
        lines[0] = "  - action: Deny"
    else:
        lines += ["    protocol: ICMP", "    icmp:", "      type: 8"]
    return lines


def calico_cluster(
    pods: int = 200,
    policies: int = 100,
    *,
    namespaces: int = 8,
    seed: int = 1,
    pod_net: str = "10",
) -> CalicoSample:
    """Generate a cluster (see the module docstring).

    ``pod_net``: the first octet(s) of pod addresses (``10`` puts pods inside CIDRs the
    policies name; ``172.20`` keeps them out).
    """
    rng = random.Random(seed)
    ns_names = [f"ns{i}" for i in range(namespaces)]
    ns_docs = ["apiVersion: v1", "kind: NamespaceList", "items:"]
    for i, name in enumerate(ns_names):
        ns_docs += [
            "- apiVersion: v1",
            "  kind: Namespace",
            "  metadata:",
            f"    name: {name}",
            "    labels:",
            f"      kubernetes.io/metadata.name: {name}",
            f"      team: {TEAMS[i % len(TEAMS)]}",
        ]
    pod_docs = ["apiVersion: v1", "kind: PodList", "items:"]
    for i in range(pods):
        app = APPS[(i // namespaces) % len(APPS)]
        tier = TIERS[(i // (namespaces * len(APPS))) % len(TIERS)]
        namespace = ns_names[i % namespaces]
        name = f"{app}-{i:05d}abcd-x{i:04d}"
        if pod_net.count(".") == 1:
            ip = f"{pod_net}.{i >> 8 & 255}.{i & 255}"
        else:
            ip = f"{pod_net}.{i >> 8 & 255}.{i & 255}.{10 + (i % 200) // 100}"
        pod_docs += [
            "- apiVersion: v1",
            "  kind: Pod",
            "  metadata:",
            f"    name: {name}",
            f"    namespace: {namespace}",
            "    labels:",
            f"      app: {app}",
            f"      tier: {tier}",
            "    ownerReferences:",
            "    - apiVersion: apps/v1",
            "      kind: ReplicaSet",
            f"      name: {app}-{i:05d}abcd",
            f"      uid: 00000000-0000-0000-0000-{i:012d}",
            "  spec:",
            "    containers:",
            f"    - name: {app}",
            "      image: example",
            "      ports:",
            "      - name: http",
            f"        containerPort: {8080 if i % 2 else 8443}",
            "        protocol: TCP",
            "  status:",
            "    phase: Running",
            f"    hostIP: 192.168.0.{1 + i % 3}",
            f"    podIP: {ip}",
            "    podIPs:",
            f"    - ip: {ip}",
        ]
    pol_docs: list[str] = []
    for i in range(policies):
        namespace = ns_names[i % namespaces]
        types = rng.choice((["Ingress"], ["Egress"], ["Ingress", "Egress"]))
        doc = [
            "apiVersion: projectcalico.org/v3",
            "kind: NetworkPolicy",
            "metadata:",
            f"  name: policy-{i}",
            f"  namespace: {namespace}",
            "spec:",
            f"  order: {rng.randrange(1, 1000)}",
            f"  selector: {_selector(rng)!r}",
            f"  types: [{', '.join(types)}]",
        ]
        for direction in ("ingress", "egress"):
            if direction.capitalize() not in types:
                continue
            doc.append(f"  {direction}:")
            for _ in range(rng.randrange(1, 4)):
                doc += _rule(rng, direction)
        pol_docs.append("\n".join(doc))
    return CalicoSample(
        "\n".join(ns_docs) + "\n", "\n".join(pod_docs) + "\n", "\n---\n".join(pol_docs) + "\n"
    )
