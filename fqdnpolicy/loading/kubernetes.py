"""Kubernetes ``networking.k8s.io/v1`` NetworkPolicy: its schema, checks and conversion.

The wire classes mirror the Kubernetes shapes for the converter; :func:`convert_k8s_policy`
turns a validated one into a Calico NetworkPolicy as Calico's own converter does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeAlias, cast

import attrs

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.loading.calico import check_port_name
from fqdnpolicy.loading.metadata import K8S_NAME_PREFIX, check_label_key, check_label_value
from fqdnpolicy.loading.problems import shown, suggest, wrong_type
from fqdnpolicy.model import (
    DEFAULT_TIER,
    EntityRule,
    IPNetwork,
    NamedPort,
    ObjectMeta,
    PolicySpec,
    PolicyType,
    Port,
    PortRange,
    Rule,
)
from fqdnpolicy.protocols import (
    KUBERNETES_PROTOCOLS,
)
from fqdnpolicy.selector import parse_selector

_K8S_ORCHESTRATOR_TERM: Final = "projectcalico.org/orchestrator == 'k8s'"
_K8S_ORDER: Final = 1000.0

# ------------------------------------------------------------------ Kubernetes wire classes


@attrs.frozen
class K8sRequirement:
    """A ``matchExpressions`` item of a Kubernetes label selector."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@attrs.frozen
class K8sLabelSelector:
    """A Kubernetes label selector."""

    match_labels: Mapping[str, str] = attrs.field(factory=dict)
    match_expressions: tuple[K8sRequirement, ...] = ()


@attrs.frozen
class K8sIPBlock:
    """A Kubernetes ``ipBlock`` peer."""

    cidr: IPNetwork
    except_: tuple[IPNetwork, ...] = ()


@attrs.frozen
class K8sPeer:
    """A Kubernetes NetworkPolicy peer (``from`` / ``to`` item)."""

    pod_selector: K8sLabelSelector | None = None
    namespace_selector: K8sLabelSelector | None = None
    ip_block: K8sIPBlock | None = None


K8sPortValue: TypeAlias = int | str


@attrs.frozen
class K8sPort:
    """A Kubernetes NetworkPolicy port."""

    protocol: str = "TCP"
    port: K8sPortValue | None = None
    end_port: int | None = None


@attrs.frozen
class K8sIngressRule:
    """A Kubernetes NetworkPolicy ingress rule."""

    from_: tuple[K8sPeer, ...] = ()
    ports: tuple[K8sPort, ...] = ()


@attrs.frozen
class K8sEgressRule:
    """A Kubernetes NetworkPolicy egress rule."""

    to: tuple[K8sPeer, ...] = ()
    ports: tuple[K8sPort, ...] = ()


@attrs.frozen
class K8sSpec:
    """The ``spec`` of a Kubernetes NetworkPolicy."""

    pod_selector: K8sLabelSelector = attrs.field(factory=K8sLabelSelector)
    policy_types: tuple[str, ...] | None = None
    ingress: tuple[K8sIngressRule, ...] = ()
    egress: tuple[K8sEgressRule, ...] = ()


def check_k8s_selector(sel: K8sLabelSelector) -> list[Problem]:
    """Check a Kubernetes label selector's keys, values and operators."""
    problems: list[Problem] = []
    for key, value in sel.match_labels.items():
        problems += check_label_key(key, f"matchLabels.{key}")
        problems += check_label_value(value, f"matchLabels.{key}")
    for i, req in enumerate(sel.match_expressions):
        path = f"matchExpressions[{i}]"
        problems += check_label_key(req.key, f"{path}.key")
        if req.operator in ("In", "NotIn"):
            if not req.values:
                problems.append(
                    Problem(
                        f"operator {req.operator} needs values",
                        path=f"{path}.values",
                        hint="list at least one value",
                        code="invalid-selector",
                    )
                )
            for j, value in enumerate(req.values):
                problems += check_label_value(value, f"{path}.values[{j}]")
        elif req.operator in ("Exists", "DoesNotExist"):
            if req.values:
                problems.append(
                    Problem(
                        f"operator {req.operator} takes no values",
                        path=f"{path}.values",
                        hint="remove values",
                        code="invalid-selector",
                    )
                )
        else:
            problems.append(
                Problem(
                    f"invalid operator {shown(req.operator)}",
                    path=f"{path}.operator",
                    hint=suggest(req.operator, ("In", "NotIn", "Exists", "DoesNotExist")),
                    code="invalid-selector",
                )
            )
    return problems


def check_k8s_ip_block(block: K8sIPBlock) -> list[Problem]:
    """Check that each ``except`` CIDR lies strictly inside ``cidr``."""
    problems = []
    for i, net in enumerate(block.except_):
        if net.version != block.cidr.version or not (
            net.subnet_of(block.cidr) and net != block.cidr  # type: ignore[arg-type]
        ):
            problems.append(
                Problem(
                    f"except {net} is not a strict subset of cidr {block.cidr}",
                    path=f"except[{i}]",
                    hint="each except CIDR must lie strictly inside cidr",
                    code="invalid-cidr",
                )
            )
    return problems


def check_k8s_peer(peer: K8sPeer) -> list[Problem]:
    """Check that a peer gives a selector or an ``ipBlock``, not both."""
    if peer.ip_block is not None and (
        peer.pod_selector is not None or peer.namespace_selector is not None
    ):
        return [
            Problem(
                "ipBlock cannot be combined with podSelector or namespaceSelector",
                path="ipBlock",
                hint="put the ipBlock in a peer of its own",
                code="invalid-peer",
            )
        ]
    if peer == K8sPeer():
        return [
            Problem(
                "a peer must give podSelector, namespaceSelector or ipBlock",
                hint="add one, or remove the empty peer",
                code="invalid-peer",
            )
        ]
    return []


def check_k8s_port(port: K8sPort) -> list[Problem]:
    """Check a Kubernetes port: protocol, port number or name, ``endPort``."""
    problems = []
    if port.protocol not in KUBERNETES_PROTOCOLS:
        problems.append(
            Problem(
                f"invalid protocol {shown(port.protocol)}",
                path="protocol",
                hint=suggest(port.protocol, KUBERNETES_PROTOCOLS),
                code="invalid-protocol",
            )
        )
    if isinstance(port.port, int) and not 1 <= port.port <= 65535:
        problems.append(
            Problem(
                f"port {port.port} out of range",
                path="port",
                hint="Kubernetes ports are 1-65535",
                code="invalid-port",
            )
        )
    elif isinstance(port.port, str):
        try:
            check_port_name(port.port)
        except InvalidPolicy as exc:
            problems += [p.located(path_prefix="port") for p in exc.problems]
    if port.end_port is not None:
        if not isinstance(port.port, int):
            problems.append(
                Problem(
                    "endPort needs a numeric port",
                    path="endPort",
                    hint="give port as a number, or remove endPort",
                    code="invalid-port",
                )
            )
        elif not port.port <= port.end_port <= 65535:
            problems.append(
                Problem(
                    f"endPort {port.end_port} must be between port {port.port} and 65535",
                    path="endPort",
                    hint="endPort is the last port of the range",
                    code="invalid-port",
                )
            )
    return problems


def check_k8s_spec(spec: K8sSpec) -> list[Problem]:
    """Check a Kubernetes NetworkPolicy spec's ``policyTypes``."""
    problems = []
    for i, kind in enumerate(spec.policy_types or ()):
        if kind not in ("Ingress", "Egress"):
            problems.append(
                Problem(
                    f"invalid policy type {shown(kind)}",
                    path=f"policyTypes[{i}]",
                    hint=suggest(kind, ("Ingress", "Egress")),
                    code="invalid",
                )
            )
    return problems


def structure_k8s_port_value(value: Any, _: Any) -> K8sPortValue | None:
    """Structure a Kubernetes port value: a number or a name, as written."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise wrong_type("a port number or name", value)
    return value


# ============================================================================================
# Kubernetes NetworkPolicy -> Calico NetworkPolicy (as Calico's converter does it)
# ============================================================================================


def _k8s_selector_text(sel: K8sLabelSelector | None, *, pod: bool) -> str:
    # Calico prefixes pod selectors with its orchestrator label, lists matchLabels in key
    # order, then matchExpressions in input order, all ANDed; a present-but-empty namespace
    # selector means all namespaces.
    terms = [_K8S_ORCHESTRATOR_TERM] if pod else []
    if sel is None:
        return " && ".join(terms)
    if not pod and not sel.match_labels and not sel.match_expressions:
        return "all()"
    terms += [f"{k} == '{sel.match_labels[k]}'" for k in sorted(sel.match_labels)]
    for req in sel.match_expressions:
        values = ", ".join(f"'{v}'" for v in req.values)
        terms.append(
            {
                "In": f"{req.key} in {{ {values} }}",
                "NotIn": f"{req.key} not in {{ {values} }}",
                "Exists": f"has({req.key})",
                "DoesNotExist": f"! has({req.key})",
            }[req.operator]
        )
    return " && ".join(terms)


def simplify_ports(ports: list[Port]) -> list[Port]:
    """Merge a rule's numeric ports into the fewest ranges, as Calico's converter does."""
    # Calico merges numeric ports of one protocol into the fewest ranges (named ports first, in
    # input order, then ranges ascending); one port or fewer numeric ports stay as written.
    # Ranges are merged as ranges: a range is never expanded into its ports.
    ranges = sorted((p.first, p.last) for p in ports if isinstance(p, PortRange))
    if len(ports) <= 1 or not ranges or (len(ranges) == 1 and ranges[0][0] == ranges[0][1]):
        return ports
    out: list[Port] = [p for p in ports if isinstance(p, NamedPort)]
    start, end = ranges[0]
    for first, last in ranges[1:]:
        if first > end + 1:
            out.append(PortRange(start, end))
            start = first
        end = max(end, last)
    out.append(PortRange(start, end))
    return out


def _k8s_rules(
    peers: tuple[K8sPeer, ...], ports: tuple[K8sPort, ...], *, ingress: bool
) -> list[Rule]:
    # protocol -> ports; None means "all ports" of that protocol; key None means no protocol.
    by_protocol: dict[str | None, list[Port] | None] = {}
    if not ports:
        by_protocol = {None: None}
    for kport in ports:
        if kport.port is None:
            by_protocol[kport.protocol] = None
            continue
        port: Port
        if isinstance(kport.port, str):
            port = NamedPort(kport.port)
        else:
            port = PortRange(kport.port, kport.end_port or kport.port)
        existing = by_protocol.setdefault(kport.protocol, [])
        if existing is not None:  # "all ports" already given for this protocol wins
            existing.append(port)
    rules: list[Rule] = []
    for protocol in sorted(by_protocol, key=lambda p: p or ""):
        port_list = by_protocol[protocol]
        calico_ports = tuple(simplify_ports(port_list)) if port_list else ()
        for peer in peers or (None,):
            entity = EntityRule()
            if peer is not None and peer.ip_block is not None:
                entity = EntityRule(nets=(peer.ip_block.cidr,), not_nets=peer.ip_block.except_)
            elif peer is not None:
                ns = _k8s_selector_text(peer.namespace_selector, pod=False)
                entity = EntityRule(
                    selector=parse_selector(_k8s_selector_text(peer.pod_selector, pod=True)),
                    namespace_selector=parse_selector(ns) if ns else None,
                )
            if ingress:
                source, destination = entity, EntityRule(ports=calico_ports)
            else:
                source, destination = EntityRule(), attrs.evolve(entity, ports=calico_ports)
            rules.append(
                Rule(action="Allow", protocol=protocol, source=source, destination=destination)
            )
    return rules


def convert_k8s_policy(
    name: str, namespace: str, spec: K8sSpec, meta: ObjectMeta
) -> tuple[ObjectMeta, PolicySpec]:
    """Convert a validated Kubernetes NetworkPolicy to Calico's model, as Calico does.

    Name ``knp.default.<name>``, tier ``default``, order 1000; the pod selector gains
    ``projectcalico.org/orchestrator == 'k8s'``; each rule becomes one Calico rule per
    protocol and peer (ports grouped by protocol, default TCP, ``endPort`` as a range);
    ``ipBlock`` becomes ``nets`` and ``except`` ``notNets``. When ``policyTypes`` is omitted
    we first apply the API server's default (Ingress, plus Egress when there are egress
    rules), since a policy read from a file has not been through the API server.

    Args:
        name: The Kubernetes name.
        namespace: Its namespace.
        spec: The validated Kubernetes spec.
        meta: Its metadata (labels and annotations are kept).

    Returns:
        The Calico metadata and spec.
    """
    types = spec.policy_types
    if types is None:
        types = ("Ingress", "Egress") if spec.egress else ("Ingress",)
    calico_types: tuple[PolicyType, ...] = tuple(
        t for t in cast(tuple[PolicyType, ...], ("Ingress", "Egress")) if t in types
    ) or ("Ingress",)
    ingress = [r for rule in spec.ingress for r in _k8s_rules(rule.from_, rule.ports, ingress=True)]
    egress = [r for rule in spec.egress for r in _k8s_rules(rule.to, rule.ports, ingress=False)]
    calico_meta = attrs.evolve(meta, name=K8S_NAME_PREFIX + name, namespace=namespace)
    calico_spec = PolicySpec(
        order=_K8S_ORDER,
        tier=DEFAULT_TIER,
        selector=parse_selector(_k8s_selector_text(spec.pod_selector, pod=True)),
        types=calico_types,
        ingress=tuple(ingress),
        egress=tuple(egress),
    )
    return calico_meta, calico_spec
