"""The agent's watched files: policies and cluster state, applied to the engine by difference.

:class:`WatchedState` polls the paths (cheap: a stat of each file) and, when one changed,
loads everything again. An invalid result is reported and the last good state kept; a valid
one is applied to the engine as upserts and removals of what differs, so the datapath sees
deltas rather than a rebuild.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fqdnpolicy.cluster import Cluster, Endpoint, load_cluster
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.loader import load
from fqdnpolicy.model import ResourceSet

if TYPE_CHECKING:
    from fqdnpolicy.engine import PolicyEngine

__all__ = ["WatchedState", "dns_servers_in"]

log = logging.getLogger(__name__)
_SUFFIXES = (".yaml", ".yml", ".json")


def _files(paths: Sequence[str]) -> Iterator[Path]:
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES)
        else:
            yield path


def _fingerprint(paths: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    found = []
    for path in _files(paths):
        try:
            st = os.stat(path)
        except OSError:
            found.append((str(path), -1, -1))
        else:
            found.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(found)


def _key(item: Any) -> tuple[str, str | None, str]:
    return (item.kind, item.metadata.namespace, item.metadata.name)


class WatchedState:
    """Policies and cluster files, loaded, watched and applied.

    Args:
        policies: Policy files or directories.
        cluster: Cluster files or directories.

    Raises:
        InvalidPolicy: the first load is invalid (the agent does not start on it).
    """

    def __init__(self, policies: Sequence[str], cluster: Sequence[str]) -> None:
        self.policies, self.cluster_paths = tuple(policies), tuple(cluster)
        self._seen = self._fingerprints()
        self.resources, self.cluster = self._load()
        self.errors = 0
        # Endpoints the CNI plugin registered (fqdnpolicy.agent.registry): they win over
        # the files' endpoints of the same key.
        self.registered: dict[str, Endpoint] = {}

    def _fingerprints(self) -> tuple[Any, ...]:
        return (_fingerprint(self.policies), _fingerprint(self.cluster_paths))

    def _load(self) -> tuple[ResourceSet, Cluster]:
        resources = load(*self.policies)
        cluster = load_cluster(*self.cluster_paths) if self.cluster_paths else Cluster()
        return resources, cluster

    def poll(self, engine: PolicyEngine, *, force: bool = False) -> bool:
        """Apply what changed on disk since the last poll; True when something was applied.

        An invalid file is logged and counted (:attr:`errors`); the engine keeps the last
        good state and the file is tried again once it changes.
        """
        seen = self._fingerprints()
        if seen == self._seen and not force:
            return False
        self._seen = seen
        try:
            resources, cluster = self._load()
        except (InvalidPolicy, OSError) as exc:
            self.errors += 1
            log.error("invalid input, keeping the last good state: %s", exc)
            return False
        self._apply(engine, resources, cluster)
        self.resources, self.cluster = resources, cluster
        log.info("applied changed policy or cluster files")
        return True

    def _apply(self, engine: PolicyEngine, resources: ResourceSet, cluster: Cluster) -> None:
        old = self.resources
        for tier in resources.tiers:
            if tier not in old.tiers:
                engine.upsert_tier(tier)
        if {_key(t) for t in old.tiers} - {_key(t) for t in resources.tiers}:
            log.warning("a tier was removed: it stays until the agent restarts")
        for namespace in cluster.namespaces:
            if namespace not in self.cluster.namespaces:
                engine.upsert_namespace(namespace)
        for kind in ("network_sets", "policies"):
            before = {_key(i): i for i in getattr(old, kind)}
            after = {_key(i): i for i in getattr(resources, kind)}
            upsert = getattr(
                engine, "upsert_network_set" if kind == "network_sets" else "upsert_policy"
            )
            remove = getattr(
                engine, "remove_network_set" if kind == "network_sets" else "remove_policy"
            )
            for key, item in after.items():
                if before.get(key) != item:
                    upsert(item)
            for key, item in before.items():
                if key not in after:
                    remove(item)
        before_ep = {e.key: e for e in self.cluster.endpoints} | self.registered
        after_ep = {e.key: e for e in cluster.endpoints} | self.registered
        for ep_key, endpoint in after_ep.items():
            if before_ep.get(ep_key) != endpoint:
                engine.upsert_endpoint(endpoint)
        for ep_key in before_ep.keys() - after_ep.keys():
            engine.remove_endpoint(ep_key)


def dns_servers_in(cluster: Cluster, paths: Sequence[str]) -> list[str]:
    """The cluster's DNS servers: kube-dns's Service address, and cluster DNS pods.

    Services are read from the cluster files directly (``kind: Service`` named ``kube-dns``
    in ``kube-system``, its ``clusterIP(s)``); pods are the endpoints in ``kube-system``
    labelled ``k8s-app`` ``kube-dns`` or ``node-local-dns``.
    """
    found: list[str] = []
    for path in _files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError):
            continue  # the cluster loader reports broken files
        for doc in documents:
            items = doc.get("items", [doc]) if isinstance(doc, dict) else []
            for item in items:
                if not isinstance(item, dict) or item.get("kind") != "Service":
                    continue
                meta, spec = item.get("metadata") or {}, item.get("spec") or {}
                if (meta.get("namespace"), meta.get("name")) == ("kube-system", "kube-dns"):
                    ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
                    found += [ip for ip in ips if isinstance(ip, str) and ip != "None"]
    for endpoint in cluster.endpoints:
        app = endpoint.labels.get("k8s-app")
        if endpoint.namespace == "kube-system" and app in ("kube-dns", "node-local-dns"):
            found += list(endpoint.ips)
    return list(dict.fromkeys(found))
