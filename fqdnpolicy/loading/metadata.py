"""Calico's rules for resource metadata: names, namespaces, labels and annotations.

Kubernetes' and Calico's name syntaxes per kind, label keys and values, annotation keys and
their size limit, the label reserved for Calico on network sets, and the tier prefix of a
policy name. The rules for specs are in :mod:`fqdnpolicy.loading.calico`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from fqdnpolicy.errors import Problem
from fqdnpolicy.loading.problems import join_path, shown
from fqdnpolicy.model import ObjectMeta, RuleMetadata

__all__ = [
    "K8S_NAME_PREFIX",
    "MAX_ANNOTATIONS_BYTES",
    "RESERVED_NAMESPACE_LABEL",
    "check_annotations",
    "check_label_key",
    "check_label_value",
    "check_meta",
    "check_rule_metadata",
    "check_tier_prefix",
]


#: The label Calico puts on network sets; a NetworkSet or GlobalNetworkSet may not set it.
RESERVED_NAMESPACE_LABEL: Final = "projectcalico.org/namespace"

#: Most bytes a resource's annotations may hold, keys and values together (Kubernetes' limit).
MAX_ANNOTATIONS_BYTES: Final = 256 * 1024


#: Calico's name of a converted Kubernetes NetworkPolicy is this prefix and its own name.
K8S_NAME_PREFIX: Final = "knp.default."

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_NAME_RES: Final = {
    "NetworkPolicy": re.compile(rf"(?:{_LABEL}(\.{_LABEL})?|(knp|ossg)\.default\.{_SUBDOMAIN})\Z"),
    "GlobalNetworkPolicy": re.compile(rf"({_LABEL}\.)?{_LABEL}\Z"),
    "NetworkSet": re.compile(rf"{_SUBDOMAIN}\Z"),
    "GlobalNetworkSet": re.compile(rf"{_SUBDOMAIN}\Z"),
    "Tier": re.compile(rf"{_LABEL}\Z"),
    "k8s": re.compile(rf"{_SUBDOMAIN}\Z"),
}
_NAMESPACE_RE: Final = re.compile(rf"{_LABEL}\Z")
_QUALIFIED_NAME_RE: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_LABEL_VALUE_RE: Final = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")


def check_label_key(key: str, path: str, what: str = "label") -> list[Problem]:
    """Check a label or annotation key (``[prefix/]name``) found at ``path``."""
    prefix, _, name = key.rpartition("/")
    ok = bool(name) and len(name) <= 63 and bool(_QUALIFIED_NAME_RE.match(name))
    if prefix:
        ok = ok and len(prefix) <= 253 and bool(re.fullmatch(_SUBDOMAIN, prefix))
    if ok:
        return []
    return [
        Problem(
            f"invalid {what} key {shown(key)}",
            path=path,
            hint="a key is [prefix/]name: name up to 63 letters, digits, '-', '_', '.', "
            "starting and ending with a letter or digit; prefix a DNS subdomain",
            code="invalid-label",
        )
    ]


def check_label_value(value: str, path: str) -> list[Problem]:
    """Check a label value found at ``path``."""
    if len(value) <= 63 and _LABEL_VALUE_RE.match(value):
        return []
    return [
        Problem(
            f"invalid label value {shown(value)}",
            path=path,
            hint="up to 63 letters, digits, '-', '_', '.', starting and ending with a letter "
            "or digit (or empty)",
            code="invalid-label",
        )
    ]


def check_meta(meta: ObjectMeta, kind: str, namespaced: bool, k8s: bool) -> list[Problem]:
    """Check a resource's metadata: name, namespace, labels and annotations."""
    problems: list[Problem] = []
    regex = _NAME_RES["k8s" if k8s else kind]
    if len(meta.name) > (63 if kind == "Tier" else 253) or not regex.match(meta.name):
        hint = (
            "lowercase letters, digits and '-'"
            + {
                "Tier": " (no dots)",
                "NetworkPolicy": "; at most one '.', after a tier name prefix",
                "GlobalNetworkPolicy": "; at most one '.', after a tier name prefix",
            }.get("k8s" if k8s else kind, " and '.'")
            + ", starting and ending with a letter or digit"
        )
        problems.append(
            Problem(
                f"invalid name {shown(meta.name)}",
                path="metadata.name",
                hint=hint,
                code="invalid-name",
            )
        )
    if namespaced and meta.namespace is None:
        problems.append(
            Problem(
                f"missing namespace: a {kind} is namespaced",
                path="metadata.namespace",
                hint="add metadata.namespace (calicoctl would assume 'default'; we do not guess)",
                code="missing-namespace",
            )
        )
    elif not namespaced and meta.namespace is not None:
        problems.append(
            Problem(
                f"a {kind} is not namespaced",
                path="metadata.namespace",
                hint="remove metadata.namespace",
                code="unexpected-namespace",
            )
        )
    elif meta.namespace is not None and not _NAMESPACE_RE.match(meta.namespace):
        problems.append(
            Problem(
                f"invalid namespace {shown(meta.namespace)}",
                path="metadata.namespace",
                hint="lowercase letters, digits and '-', starting and ending with a letter/digit",
                code="invalid-name",
            )
        )
    for key, value in meta.labels.items():
        problems += check_label_key(key, f"metadata.labels.{key}")
        problems += check_label_value(value, f"metadata.labels.{key}")
    if kind in ("NetworkSet", "GlobalNetworkSet") and RESERVED_NAMESPACE_LABEL in meta.labels:
        problems.append(
            Problem(
                f"the label {RESERVED_NAMESPACE_LABEL} is reserved for Calico",
                path=f"metadata.labels.{RESERVED_NAMESPACE_LABEL}",
                hint="remove it; Calico sets it on network sets itself",
                code="reserved-label",
            )
        )
    problems += check_annotations(meta.annotations, "metadata.annotations")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in meta.annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        problems.append(
            Problem(
                f"annotations hold {size} bytes (the limit is {MAX_ANNOTATIONS_BYTES})",
                path="metadata.annotations",
                hint="keep large data out of annotations",
                code="annotations-too-large",
            )
        )
    return problems


def check_annotations(annotations: Mapping[str, str], path: str) -> list[Problem]:
    """Check annotation keys (Kubernetes qualified names, any case) under ``path``."""
    return [
        p
        for key in annotations
        for p in check_label_key(key.lower(), join_path(path, key), what="annotation")
    ]


def check_rule_metadata(metadata: RuleMetadata) -> list[Problem]:
    """Check a rule's ``metadata``: its annotation keys."""
    return check_annotations(metadata.annotations, "annotations")


def check_tier_prefix(name: str, tier: str, kind: str) -> list[Problem]:
    """Check that a policy name written ``tier.name`` names the policy's own tier."""
    if name.startswith(K8S_NAME_PREFIX) or "." not in name:
        return []
    prefix = name.split(".", 1)[0]
    if prefix == tier:
        return []
    return [
        Problem(
            f"{kind} name {shown(name)} is prefixed with tier {shown(prefix)} but the policy "
            f"is in tier {shown(tier)}",
            path="metadata.name",
            hint=f"set spec.tier: {prefix}, or rename it to {tier}.{name.split('.', 1)[1]} "
            "(or drop the prefix)",
            code="tier-prefix",
        )
    ]
