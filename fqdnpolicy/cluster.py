"""Cluster state: workload endpoints, namespaces and service accounts.

The verdict engine judges flows between *endpoints* (pods). This module holds their frozen
models and loads them from what ``kubectl get pods,namespaces,serviceaccounts -A -o yaml``
prints (``Pod``, ``Namespace`` and ``ServiceAccount`` objects, bare or in ``List`` wrappers),
or builds them from Python objects.

Only what policy needs is read from a Pod: name, namespace, labels, IPs
(``status.podIPs`` / ``status.podIP``), ``spec.serviceAccountName`` and named container ports.
Everything else a Pod carries is ignored, since real ``kubectl`` output holds hundreds of
fields. Pods on the host network are skipped: Calico does not police them as workloads; so are
pods that have ended (phase ``Succeeded`` or ``Failed``), whose endpoints Calico removes.
Malformed objects are reported as :class:`~fqdnpolicy.errors.InvalidPolicy` problems with file,
line and field path, however they are malformed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.protocols import KUBERNETES_PROTOCOLS

#: The protocols a container port may name (kept here for importers of this name).
PROTOCOLS = KUBERNETES_PROTOCOLS


def _frozen_labels(value: Mapping[str, str] | None) -> Mapping[str, str]:
    # A dict copy, never shared with the caller, so the frozen model cannot change under us.
    return dict(value or {})


def _canonical_ips(values: Iterable[str]) -> tuple[str, ...]:
    try:
        return tuple(str(ipaddress.ip_address(ip)) for ip in values)
    except ValueError as exc:
        raise InvalidPolicy(Problem(str(exc), hint="an IPv4 or IPv6 address")) from None


@attrs.frozen
class NamedPort:
    """A port a pod declares by name: a container port with a name, number and protocol.

    It is what a rule's :class:`fqdnpolicy.model.NamedPort` (a reference by name only)
    resolves to on this pod.

    Attributes:
        name: The port name (``containerPorts[].name``).
        port: The port number, 1-65535.
        protocol: ``TCP``, ``UDP`` or ``SCTP``.
    """

    name: str
    port: int
    protocol: str = "TCP"


def _ports_tuple(values: Iterable[NamedPort]) -> tuple[NamedPort, ...]:
    return tuple(values)


def default_interface(namespace: str, name: str) -> str:
    """Return the host-side interface name Calico's CNI gives a pod (``cali`` + 11 hex)."""
    digest = hashlib.sha1(f"{namespace}.{name}".encode(), usedforsecurity=False).hexdigest()
    return "cali" + digest[:11]


@attrs.frozen
class Endpoint:
    """A workload endpoint (a pod) as policy sees it.

    Attributes:
        name: Pod name.
        namespace: Pod namespace.
        labels: Pod labels.
        ips: The pod's addresses, canonical text, IPv4 and/or IPv6.
        service_account: The pod's service account name.
        named_ports: Named container ports (resolve rules' named ports).
        interface: Host-side interface (veth) name; backends dispatch on it.
    """

    name: str
    namespace: str
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_labels, hash=False)
    ips: tuple[str, ...] = attrs.field(default=(), converter=_canonical_ips)
    service_account: str = "default"
    named_ports: tuple[NamedPort, ...] = attrs.field(default=(), converter=_ports_tuple)
    interface: str = attrs.field()

    @interface.default
    def _interface_default(self) -> str:
        return default_interface(self.namespace, self.name)

    @property
    def key(self) -> str:
        """``namespace/name``, the string form used by the CLI and ``verdict()``."""
        return f"{self.namespace}/{self.name}"


@attrs.frozen
class Namespace:
    """A namespace and its labels (``namespaceSelector`` matches these)."""

    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_labels, hash=False)

    @property
    def effective_labels(self) -> Mapping[str, str]:
        """Labels plus ``kubernetes.io/metadata.name`` and ``projectcalico.org/name``.

        Kubernetes sets the first on every namespace; Calico adds the second to the namespace
        profile. Selectors may use either to name a namespace.
        """
        labels = dict(self.labels)
        labels.setdefault("kubernetes.io/metadata.name", self.name)
        labels.setdefault("projectcalico.org/name", self.name)
        return labels


@attrs.frozen
class ServiceAccount:
    """A service account and its labels (``serviceAccountSelector`` matches these)."""

    name: str
    namespace: str
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_labels, hash=False)


def _endpoints_tuple(values: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    return tuple(values)


def _namespaces_tuple(values: Iterable[Namespace]) -> tuple[Namespace, ...]:
    return tuple(values)


def _accounts_tuple(values: Iterable[ServiceAccount]) -> tuple[ServiceAccount, ...]:
    return tuple(values)


@attrs.frozen
class Cluster:
    """Endpoints, namespaces and service accounts, indexed for lookups.

    Namespaces that endpoints use but that were not given are created with no labels, so a
    cluster built from a list of pods alone is still complete.
    """

    endpoints: tuple[Endpoint, ...] = attrs.field(default=(), converter=_endpoints_tuple)
    namespaces: tuple[Namespace, ...] = attrs.field(default=(), converter=_namespaces_tuple)
    service_accounts: tuple[ServiceAccount, ...] = attrs.field(
        default=(), converter=_accounts_tuple
    )

    def __attrs_post_init__(self) -> None:
        problems: list[Problem] = []
        seen: set[str] = set()
        for ep in self.endpoints:
            if ep.key in seen:
                problems.append(Problem(f"duplicate endpoint {ep.key}", resource=ep.key))
            seen.add(ep.key)
        owners: dict[str, str] = {}
        for ep in self.endpoints:
            for ip in ep.ips:
                if ip in owners and owners[ip] != ep.key:
                    problems.append(
                        Problem(
                            f"IP {ip} belongs to both {owners[ip]} and {ep.key}",
                            resource=ep.key,
                            hint="every pod IP must be unique in the cluster",
                        )
                    )
                owners[ip] = ep.key
        if problems:
            raise InvalidPolicy(problems)
        known = {ns.name for ns in self.namespaces}
        implied = sorted({ep.namespace for ep in self.endpoints} - known)
        if implied:
            object.__setattr__(
                self, "namespaces", self.namespaces + tuple(Namespace(n) for n in implied)
            )

    def endpoint(self, key: str) -> Endpoint:
        """Return the endpoint named ``namespace/name``; ``KeyError`` when unknown."""
        for ep in self.endpoints:
            if ep.key == key:
                return ep
        raise KeyError(key)

    def namespace(self, name: str) -> Namespace:
        """Return the namespace ``name`` (one with no labels when it was never declared)."""
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        return Namespace(name)

    def service_account(self, namespace: str, name: str) -> ServiceAccount:
        """Return the service account (one with no labels when it was never declared)."""
        for sa in self.service_accounts:
            if sa.namespace == namespace and sa.name == name:
                return sa
        return ServiceAccount(name, namespace)


# ---------------------------------------------------------------------------------------------
# Loading from kubectl YAML


class _Loader(yaml.SafeLoader):
    """A safe loader that keeps timestamps as text.

    Policy reads no timestamp, and building one fails on dates that do not exist
    (``2024-02-30``), which kubectl output of a broken object may hold.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

#: Deepest nesting read from a cluster file; kubectl output nests a dozen levels.
MAX_DEPTH = 100


def _too_deep(node: yaml.Node) -> bool:
    """Tell whether ``node`` nests deeper than :data:`MAX_DEPTH` (without recursing)."""
    stack: list[tuple[yaml.Node, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(current, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in current.value)
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
    return False


def _documents(text: str, filename: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, object) for every object in the text, unwrapping ``List`` wrappers."""
    try:
        loader = _Loader(text)
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                line = node.start_mark.line + 1
                if _too_deep(node):
                    raise InvalidPolicy(
                        Problem(
                            f"nested deeper than {MAX_DEPTH} levels",
                            file=filename,
                            line=line,
                            hint="kubectl output nests far less: is this the right file?",
                        )
                    )
                data = loader.construct_document(node)
                if isinstance(data, dict) and isinstance(data.get("items"), list):
                    items_node = next(
                        (v for k, v in node.value if getattr(k, "value", None) == "items"), None
                    )
                    item_nodes = list(getattr(items_node, "value", []))
                    for i, item in enumerate(data["items"]):
                        item_line = (
                            item_nodes[i].start_mark.line + 1 if i < len(item_nodes) else line
                        )
                        yield item_line, item
                elif data is not None:
                    yield line, data
        finally:
            loader.dispose()
    except RecursionError:  # the composer recurses too, before any node can be measured
        raise InvalidPolicy(
            Problem(f"nested deeper than {MAX_DEPTH} levels", file=filename)
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InvalidPolicy(
            Problem(
                f"YAML syntax error: {getattr(exc, 'problem', None) or exc}",
                file=filename,
                line=mark.line + 1 if mark is not None else None,
            )
        ) from None


def _str_map(value: Any, where: str, problems: list[Problem], **loc: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        problems.append(Problem("must be a map of strings to strings", path=where, **loc))
        return {}
    return dict(value)


def _map(obj: dict[str, Any], key: str, where: str, problems: list[Problem], **loc: Any) -> Any:
    """``obj[key]`` when it is a map (or absent: an empty map); else a problem and None."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(Problem(f"must be a map, not {_kind(value)}", path=where, **loc))
        return None
    return value


def _list(obj: dict[str, Any], key: str, where: str, problems: list[Problem], **loc: Any) -> Any:
    """``obj[key]`` when it is a list (or absent: an empty list); else a problem and None."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(Problem(f"must be a list, not {_kind(value)}", path=where, **loc))
        return None
    return value


def _kind(value: Any) -> str:
    return {dict: "a map", list: "a list", str: "text", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


#: Pod phases of pods that have ended: Calico removes their workload endpoints.
ENDED_PHASES = frozenset({"Succeeded", "Failed"})


def _pod(obj: dict[str, Any], problems: list[Problem], **loc: Any) -> Endpoint | None:
    meta = _map(obj, "metadata", "metadata", problems, **loc)
    spec = _map(obj, "spec", "spec", problems, **loc)
    status = _map(obj, "status", "status", problems, **loc)
    if meta is None or spec is None or status is None:
        return None
    name, namespace = meta.get("name"), meta.get("namespace", "default")
    if not isinstance(name, str) or not isinstance(namespace, str):
        problems.append(Problem("a Pod needs metadata.name and metadata.namespace", **loc))
        return None
    loc = {**loc, "resource": f"Pod {namespace}/{name}"}
    if spec.get("hostNetwork") is True or status.get("phase") in ENDED_PHASES:
        return None
    labels = _str_map(meta.get("labels"), "metadata.labels", problems, **loc)
    pod_ips = _list(status, "podIPs", "status.podIPs", problems, **loc)
    containers = _list(spec, "containers", "spec.containers", problems, **loc)
    if pod_ips is None or containers is None:
        return None
    raw_ips: list[tuple[str, Any]] = []
    for i, entry in enumerate(pod_ips):
        if not isinstance(entry, dict):
            problems.append(
                Problem(
                    f"must be a map with 'ip', not {_kind(entry)}",
                    path=f"status.podIPs[{i}]",
                    **loc,
                )
            )
        else:
            raw_ips.append((f"status.podIPs[{i}].ip", entry.get("ip")))
    if not pod_ips and status.get("podIP") is not None:
        raw_ips = [("status.podIP", status["podIP"])]
    ips: list[str] = []
    for path, raw in raw_ips:
        try:
            if not isinstance(raw, str):
                raise ValueError
            ips.append(str(ipaddress.ip_address(raw)))
        except ValueError:
            shown = raw if isinstance(raw, str) and len(raw) <= 60 else _kind(raw)
            problems.append(Problem(f"not an IP address: {shown!r}", path=path, **loc))
    ports: list[NamedPort] = []
    for ci, container in enumerate(containers):
        if not isinstance(container, dict):
            problems.append(
                Problem(
                    f"must be a map, not {_kind(container)}", path=f"spec.containers[{ci}]", **loc
                )
            )
            continue
        container_ports = _list(container, "ports", f"spec.containers[{ci}].ports", problems, **loc)
        for pi, port in enumerate(container_ports or []):
            if not isinstance(port, dict) or "name" not in port:
                continue
            path = f"spec.containers[{ci}].ports[{pi}]"
            number, proto = port.get("containerPort"), port.get("protocol", "TCP")
            if (
                not isinstance(number, int)
                or isinstance(number, bool)
                or not 1 <= number <= 65535
                or proto not in PROTOCOLS
                or not isinstance(port["name"], str)
            ):
                problems.append(
                    Problem(
                        "a named port needs a name, containerPort 1-65535 and protocol TCP, "
                        "UDP or SCTP",
                        path=path,
                        **loc,
                    )
                )
                continue
            ports.append(NamedPort(port["name"], number, proto))
    account = spec.get("serviceAccountName") or "default"
    if not isinstance(account, str):
        problems.append(Problem("must be text", path="spec.serviceAccountName", **loc))
        return None
    return Endpoint(
        name=name,
        namespace=namespace,
        labels=labels,
        ips=tuple(ips),
        service_account=account,
        named_ports=tuple(ports),
    )


def loads_cluster(text: str, *, filename: str = "<string>") -> Cluster:
    """Parse kubectl YAML/JSON text holding Pods, Namespaces and ServiceAccounts."""
    return _build([(filename, text)])


def load_cluster(*paths: str | os.PathLike[str]) -> Cluster:
    """Load cluster state from files or directories (``*.yaml``, ``*.yml``, ``*.json``)."""
    sources: list[tuple[str, str]] = []
    for path in _expand(paths):
        try:
            sources.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidPolicy(Problem(f"cannot read: {exc}", file=str(path))) from None
    return _build(sources)


def _expand(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.suffix in {".yaml", ".yml", ".json"} and p.is_file()
            )
        else:
            yield path


def _build(sources: Iterable[tuple[str, str]]) -> Cluster:
    problems: list[Problem] = []
    endpoints: list[Endpoint] = []
    namespaces: list[Namespace] = []
    accounts: list[ServiceAccount] = []
    for filename, text in sources:
        try:
            documents = list(_documents(text, filename))
        except InvalidPolicy as exc:
            problems.extend(exc.problems)
            continue
        for line, obj in documents:
            loc: dict[str, Any] = {"file": filename, "line": line}
            if not isinstance(obj, dict):
                problems.append(Problem("expected a Kubernetes object (a map)", **loc))
                continue
            kind = obj.get("kind")
            if kind not in ("Pod", "Namespace", "ServiceAccount"):
                continue  # Services, Deployments...: not cluster state for policy
            meta = obj.get("metadata")
            if meta is not None and not isinstance(meta, dict):
                problems.append(
                    Problem(f"must be a map, not {_kind(meta)}", path="metadata", **loc)
                )
                continue
            meta = meta or {}
            if kind == "Pod":
                ep = _pod(obj, problems, **loc)
                if ep is not None:
                    endpoints.append(ep)
            elif kind == "Namespace" and isinstance(meta.get("name"), str):
                labels = _str_map(meta.get("labels"), "metadata.labels", problems, **loc)
                namespaces.append(Namespace(meta["name"], labels))
            elif kind == "ServiceAccount" and isinstance(meta.get("name"), str):
                labels = _str_map(meta.get("labels"), "metadata.labels", problems, **loc)
                accounts.append(
                    ServiceAccount(meta["name"], str(meta.get("namespace", "default")), labels)
                )
    if problems:
        raise InvalidPolicy(problems)
    return Cluster(tuple(endpoints), tuple(namespaces), tuple(accounts))
