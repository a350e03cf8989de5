"""Documents to resources: kinds, lists, metadata, duplicates, each problem located.

Names and tiers (a decision; Calico has changed here): Calico before v3.32 stored a policy of
tier ``t`` under the name ``t.<name>`` and its validator allows policy names with at most one
dot; v3.32 dropped the prefix. We accept both spellings: a name without a dot may live in any
tier, a dotted name ``t.<name>`` must be in tier ``t`` (``default`` when ``spec.tier`` is
omitted), and ``t.x`` and ``x`` in tier ``t`` count as the same policy when looking for
duplicates. Converted Kubernetes policies are named ``knp.default.<name>`` as Calico names them.
"""

from __future__ import annotations

from typing import Any, Final, cast

import attrs

from fqdnpolicy.errors import Problem
from fqdnpolicy.loading.calico import check_builtin_tier
from fqdnpolicy.loading.converter import structure
from fqdnpolicy.loading.kubernetes import K8sSpec, convert_k8s_policy
from fqdnpolicy.loading.metadata import K8S_NAME_PREFIX, check_meta, check_tier_prefix
from fqdnpolicy.loading.problems import cut, describe, join_path, shown, suggest
from fqdnpolicy.model import (
    CALICO_API_VERSION,
    DEFAULT_TIER,
    K8S_API_VERSION,
    NetworkSet,
    NetworkSetSpec,
    ObjectMeta,
    Policy,
    PolicySpec,
    PolicyType,
    Resource,
    SourceLocation,
    Tier,
    TierSpec,
)

_SUFFIXES: Final = (".yaml", ".yml", ".json")
_GLOBAL_ONLY_SPEC: Final = ("namespaceSelector", "doNotTrack", "preDNAT", "applyOnForward")
# Filled in by the API server; harmless in files exported with `kubectl get -o yaml`, so they
# are accepted and dropped rather than reported as unknown fields.
_SERVER_METADATA: Final = frozenset(
    {
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)


_KINDS: Final = {
    CALICO_API_VERSION: (
        "NetworkPolicy",
        "GlobalNetworkPolicy",
        "NetworkSet",
        "GlobalNetworkSet",
        "Tier",
    ),
    K8S_API_VERSION: ("NetworkPolicy",),
}

# ============================================================================================
# Documents -> resources
# ============================================================================================


@attrs.define
class Context:
    """State of one load: resources and problems so far, names seen for duplicates."""

    policies: list[Policy] = attrs.Factory(list)
    network_sets: list[NetworkSet] = attrs.Factory(list)
    tiers: list[Tier] = attrs.Factory(list)
    problems: list[Problem] = attrs.Factory(list)
    seen: dict[tuple[str, ...], str] = attrs.Factory(dict)
    skip_unknown: bool = False


@attrs.frozen
class Where:
    """Locates problems of one resource: its file, its lines, its path prefix in the doc."""

    file: str
    lines: dict[str, int]
    prefix: str
    line: int | None

    def line_of(self, path: str) -> int | None:
        """Return the line of a field path (relative to the resource) or of its nearest parent."""
        full = (
            join_path(self.prefix, path)
            if path and not path.startswith("[")
            else self.prefix + path
        )
        while True:
            if full in self.lines:
                return self.lines[full]
            if not full:
                return self.line
            cut = max(full.rfind("."), full.rfind("["))
            full = full[: max(cut, 0)]

    def locate(self, problems: list[Problem], resource: str) -> list[Problem]:
        """Return ``problems`` placed in this file, at their lines, in ``resource``."""
        return [
            attrs.evolve(
                p,
                file=self.file,
                line=self.line_of(p.path),
                resource=p.resource or resource,
            )
            for p in problems
        ]


def process(value: Any, where: Where, ctx: Context, inherited: tuple[str, str] | None) -> None:
    """Turn one document (a resource, a list of them, or nothing) into resources or problems."""
    if value is None:
        return  # an empty document, as kubectl allows
    if not isinstance(value, dict):
        ctx.problems += where.locate(
            [
                Problem(
                    f"a resource must be a mapping, got {describe(value)}",
                    hint="give apiVersion, kind, metadata and spec",
                    code="wrong-type",
                )
            ],
            "",
        )
        return
    api = value.get("apiVersion", inherited[0] if inherited else None)
    kind = value.get("kind", inherited[1] if inherited else None)
    problems: list[Problem] = []
    if not isinstance(kind, str):
        problems.append(
            Problem(
                "missing kind" if kind is None else f"kind must be a string, got {describe(kind)}",
                path="kind",
                hint="e.g. kind: NetworkPolicy",
                code="unknown-kind",
            )
        )
    if not isinstance(api, str):
        problems.append(
            Problem(
                "missing apiVersion"
                if api is None
                else f"apiVersion must be a string, got {describe(api)}",
                path="apiVersion",
                hint=f"e.g. apiVersion: {CALICO_API_VERSION}",
                code="unknown-api-version",
            )
        )
    if problems:
        ctx.problems += where.locate(problems, "")
        return
    kind, api = str(kind), str(api)  # both checked above; narrows the types
    if kind == "List" or (kind.endswith("List") and "items" in value):
        _process_list(value, api, kind, where, ctx)
        return
    if ctx.skip_unknown and kind not in _KINDS.get(api, ()) and not _ours(kind):
        return  # a Deployment, a Service...: the caller asked to read policy resources only
    if api not in _KINDS:
        ctx.problems += where.locate(
            [
                Problem(
                    f"unknown apiVersion {shown(api)}",
                    path="apiVersion",
                    hint=suggest(api, tuple(_KINDS)),
                    code="unknown-api-version",
                )
            ],
            "",
        )
        return
    if kind not in _KINDS[api]:
        every = sorted({k for kinds in _KINDS.values() for k in kinds})
        ctx.problems += where.locate(
            [
                Problem(
                    f"unknown kind {shown(kind)} for apiVersion {api}",
                    path="kind",
                    hint=suggest(kind, _KINDS[api])
                    if kind not in every
                    else f"{kind} belongs to apiVersion "
                    + next(a for a, ks in _KINDS.items() if kind in ks),
                    code="unknown-kind",
                )
            ],
            "",
        )
        return
    _process_resource(value, api, kind, where, ctx)


def _ours(kind: str) -> bool:
    """Tell whether ``kind`` names a policy resource under some apiVersion we read.

    Such a kind under another apiVersion is more likely a mistake than a foreign resource, so
    skipping unknown kinds still reports it.
    """
    return any(kind in kinds for kinds in _KINDS.values())


def _process_list(value: dict[str, Any], api: str, kind: str, where: Where, ctx: Context) -> None:
    extra = sorted(set(value) - {"apiVersion", "kind", "items", "metadata"})
    problems = [
        Problem(
            f"unknown field {shown(key)}",
            path=key,
            hint=suggest(key, ("apiVersion", "kind", "items", "metadata")),
            code="unknown-field",
        )
        for key in extra
    ]
    items = value.get("items")
    if items is not None and not isinstance(items, list):
        problems.append(
            Problem(f"items must be a list, got {describe(items)}", path="items", code="wrong-type")
        )
        items = None
    ctx.problems += where.locate(problems, "")
    # Items of a typed list (NetworkPolicyList) may leave out their apiVersion and kind.
    inherited = None if kind == "List" else (api, kind[: -len("List")])
    for i, item in enumerate(items or ()):
        item_where = Where(
            where.file,
            where.lines,
            join_path(where.prefix, "items") + f"[{i}]",
            where.line_of(f"items[{i}]"),
        )
        process(item, item_where, ctx, inherited)


def _process_resource(
    value: dict[str, Any], api: str, kind: str, where: Where, ctx: Context
) -> None:
    problems: list[Problem] = []
    for key in sorted(set(value) - {"apiVersion", "kind", "metadata", "spec"}):
        problems.append(
            Problem(
                f"unknown field {shown(key)}",
                path=key,
                hint=suggest(key, ("apiVersion", "kind", "metadata", "spec")),
                code="unknown-field",
            )
        )
    k8s = api == K8S_API_VERSION
    namespaced = kind in ("NetworkPolicy", "NetworkSet")
    raw_meta = value.get("metadata")
    if isinstance(raw_meta, dict):
        raw_meta = {k: v for k, v in raw_meta.items() if k not in _SERVER_METADATA}
    meta: ObjectMeta | None
    if raw_meta is None:
        meta = None
        problems.append(
            Problem(
                "missing metadata", path="metadata", hint="add metadata.name", code="missing-field"
            )
        )
    else:
        meta, meta_problems = structure(raw_meta, ObjectMeta, "metadata")
        problems += meta_problems
    resource = kind
    if meta is not None:
        name = cut(meta.name) if meta.namespace is None else cut(f"{meta.namespace}/{meta.name}")
        resource = f"{kind} {name}"
        problems += check_meta(meta, kind, namespaced, k8s)

    raw_spec = value.get("spec")
    if raw_spec is None:
        raw_spec = {}
    source = SourceLocation(where.file, where.line_of(""))
    result: Resource | None = None
    if k8s:
        spec, spec_problems = structure(raw_spec, K8sSpec, "spec")
        problems += spec_problems
        if meta is not None and spec is not None and not problems:
            assert meta.namespace is not None
            calico_meta, calico_spec = convert_k8s_policy(meta.name, meta.namespace, spec, meta)
            result = Policy("NetworkPolicy", calico_meta, calico_spec, source, K8S_API_VERSION)
    elif kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
        if kind == "NetworkPolicy" and isinstance(raw_spec, dict):
            for key in _GLOBAL_ONLY_SPEC:
                if key in raw_spec:
                    problems.append(
                        Problem(
                            f"{key} is only valid in a GlobalNetworkPolicy",
                            path=f"spec.{key}",
                            hint="remove it, or make this a GlobalNetworkPolicy",
                            code="global-only-field",
                        )
                    )
            raw_spec = {k: v for k, v in raw_spec.items() if k not in _GLOBAL_ONLY_SPEC}
        pspec, spec_problems = structure(raw_spec, PolicySpec, "spec")
        problems += spec_problems
        if pspec is not None:
            if not pspec.types:
                # Calico's inference when types is omitted.
                inferred: tuple[PolicyType, ...] = (
                    ("Ingress", "Egress")
                    if pspec.egress and pspec.ingress
                    else ("Egress",)
                    if pspec.egress
                    else ("Ingress",)
                )
                pspec = attrs.evolve(pspec, types=inferred)
            if meta is not None:
                problems += check_tier_prefix(meta.name, pspec.tier, kind)
                result = Policy(cast(Any, kind), meta, pspec, source)
    elif kind in ("NetworkSet", "GlobalNetworkSet"):
        nspec, spec_problems = structure(raw_spec, NetworkSetSpec, "spec")
        problems += spec_problems
        if meta is not None and nspec is not None:
            result = NetworkSet(cast(Any, kind), meta, nspec, source)
    else:
        tspec, spec_problems = structure(raw_spec, TierSpec, "spec")
        problems += spec_problems
        if meta is not None and tspec is not None:
            tspec, tier_problems = check_builtin_tier(
                meta.name, tspec, raw_spec if isinstance(raw_spec, dict) else {}
            )
            problems += tier_problems
            result = Tier(meta, tspec, source)

    if meta is not None:
        tier = DEFAULT_TIER
        if isinstance(raw_spec, dict) and isinstance(raw_spec.get("tier"), str):
            tier = raw_spec["tier"]
        known_as = attrs.evolve(meta, name=K8S_NAME_PREFIX + meta.name) if k8s else meta
        dup = _duplicate(kind, known_as, tier, source, ctx)
        if dup is not None:
            problems.append(dup)
    ctx.problems += where.locate(problems, resource)
    if problems or result is None:
        return
    if isinstance(result, Policy):
        ctx.policies.append(result)
    elif isinstance(result, NetworkSet):
        ctx.network_sets.append(result)
    else:
        ctx.tiers.append(result)


def _duplicate(
    kind: str, meta: ObjectMeta, tier: str, source: SourceLocation, ctx: Context
) -> Problem | None:
    ns = meta.namespace or ""
    keys = [(kind, ns, "name", meta.name)]
    if kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
        # `t.x` in tier t and `x` in tier t are one policy (legacy and current naming).
        bare = meta.name[len(tier) + 1 :] if meta.name.startswith(tier + ".") else meta.name
        keys.append((kind, ns, "tier-bare", f"{tier}/{bare}"))
    for key in keys:
        if key in ctx.seen:
            scope = f" in namespace {meta.namespace}" if meta.namespace else ""
            return Problem(
                f"duplicate {kind} name {shown(meta.name)}{scope}",
                path="metadata.name",
                hint=f"first defined at {ctx.seen[key]}; rename one of them",
                code="duplicate-name",
            )
    for key in keys:
        ctx.seen[key] = str(source)
    return None
