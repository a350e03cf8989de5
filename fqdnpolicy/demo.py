"""``fqdnpolicy demo``: the main job on built-in example data.

It loads the policies of the article this project started from (bundled under
``fqdnpolicy/data/seed``), lints them, learns names from a bundled zone file
(``fqdnpolicy/data/demo/zone.db``, documentation addresses only) into a DNS cache, and builds
the verdict engine over a bundled cluster (``fqdnpolicy/data/demo/cluster.yaml``). It then
prints what each policy's domains resolve to, a verdict table for the article's test flows
(with what the article claims beside Calico's actual verdict), the explanation of one denied
flow, and, where a datapath backend is installed, the rules it would program. No network and
no root needed.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

import attrs

from fqdnpolicy.errors import InvalidPolicy

if TYPE_CHECKING:
    from fqdnpolicy.cluster import Cluster
    from fqdnpolicy.engine import Verdict
    from fqdnpolicy.flows import Flow

# The article's test flows, and what the article says of each ("" where it says nothing).
# Where the article is wrong about Calico (its namespaced kube-dns rules), the table shows it.
ARTICLE_FLOWS: tuple[tuple[str, str], ...] = (
    ("default/backend -> api.github.com:443/tcp", "allowed"),
    ("default/backend -> api.gitlab.com:443/tcp", "blocked"),
    ("default/backend -> blocked-domain.com:443/tcp", "blocked"),
    ("default/backend -> 203.0.113.10:8080/tcp", "allowed"),
    ("default/backend -> default/database:5432/tcp", "allowed"),
    ("default/backend -> kube-system/coredns:53/udp", "allowed"),
    ("backend/payments -> kube-system/coredns:53/udp", "allowed"),
    ("backend/payments -> api.stripe.com:443/tcp", "allowed"),
    ("backend/payments -> api.sendgrid.com:587/tcp", "allowed"),
    ("backend/payments -> myaccount.blob.core.windows.net:443/tcp", "allowed"),
    ("production/application -> reports.s3.amazonaws.com:443/tcp", "allowed"),
    ("production/application -> logs.s3.eu-west-1.amazonaws.com:443/tcp", "allowed"),
    ("production/application -> dynamodb.us-east-1.amazonaws.com:443/tcp", "allowed"),
    ("production/application -> dynamodb.us-east-1.amazonaws.com:80/tcp", "blocked"),
    ("staging/web -> api.staging-service.com:443/tcp", "allowed"),
    ("staging/web -> api.production-service.com:443/tcp", "blocked"),
)
EXPLAINED_FLOW = "backend/payments -> kube-system/coredns:53/udp"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render rows as a plain-text table with aligned columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    return "\n".join(lines)


def run_demo(out: TextIO) -> int:
    """Run the demo, writing to ``out``; return the exit code (0 when everything loaded)."""
    from fqdnpolicy import backends
    from fqdnpolicy.cluster import load_cluster
    from fqdnpolicy.dns import DNSCache
    from fqdnpolicy.dns.sources import load_zone
    from fqdnpolicy.engine import PolicyEngine
    from fqdnpolicy.flows import parse_flow
    from fqdnpolicy.lint import lint
    from fqdnpolicy.loader import load

    data = importlib.resources.files("fqdnpolicy") / "data"
    with importlib.resources.as_file(data / "seed") as seed_dir:
        try:
            resources = load(seed_dir)
        except InvalidPolicy as exc:
            print(exc, file=out)
            return 1
        files = sorted(p.name for p in seed_dir.iterdir() if p.suffix in {".yaml", ".yml"})
    print(f"Loaded {len(resources)} resources from {len(files)} seed files:", file=out)
    for name in files:
        print(f"  {name}", file=out)

    warnings = lint(resources)
    print(f"\nLinter: {len(warnings)} warning(s)", file=out)
    for warning in warnings:
        print(f"  {warning}", file=out)

    # The demo's clock stands still at 0: every record is fresh, the output is reproducible.
    cache = DNSCache(clock=lambda: 0.0)
    zone_text = (data / "demo" / "zone.db").read_text(encoding="utf-8")
    load_zone(cache, zone_text)
    print(f"\nDNS cache: {len(cache.names())} names learned from the bundled zone file", file=out)

    rows: list[list[str]] = []
    for ref in resources.domain_references():
        names = sorted(cache.names_matching(ref.pattern))
        if not names:
            rows.append([ref.resource, ref.path, str(ref.pattern), "-", "-"])
        for name in names:
            ips = ", ".join(sorted(cache.ips(name))) or "-"
            rows.append([ref.resource, ref.path, str(ref.pattern), name, ips])
    print("\nWhat each policy's domains resolve to (the IP sets a datapath would hold):", file=out)
    print(format_table(["policy", "field", "pattern", "cached name", "IPs"], rows), file=out)

    with importlib.resources.as_file(data / "demo" / "cluster.yaml") as cluster_file:
        cluster = load_cluster(cluster_file)
    engine = PolicyEngine(resources, cluster, cache)
    print(f"\nVerdicts for the article's test flows ({len(cluster.endpoints)} pods):", file=out)
    table: list[list[str]] = []
    for text, claim in ARTICLE_FLOWS:
        flow = _resolve_pod_names(parse_flow(text), cluster)
        addresses = sorted(cache.ips(flow.dst)) if flow.dst_kind == "name" else [flow.dst]
        for address in addresses:
            verdict = engine.verdict(flow.src, address, flow.protocol, flow.port)
            actual = "allowed" if verdict.allowed else "blocked"
            note = "" if actual == claim else "article is wrong"
            table.append([text, address, claim, actual, _decided_by(verdict), note])
    headers = ["flow", "address", "article says", "verdict", "decided by", "note"]
    print(format_table(headers, table), file=out)

    flow = _resolve_pod_names(parse_flow(EXPLAINED_FLOW), cluster)
    print(f"\nWhy {EXPLAINED_FLOW} is blocked:", file=out)
    print(engine.explain(flow.src, flow.dst, flow.protocol, flow.port).render(), file=out)

    state = engine.datapath()
    for name in backends.available():
        rendering = backends.get(name).render(state, now=cache.clock())
        print(f"\nRules the {name} backend would program:", file=out)
        print(rendering.text.rstrip(), file=out)
    return 0


def _resolve_pod_names(flow: Flow, cluster: Cluster) -> Flow:
    """Let the demo write ``kube-system/coredns`` for the pod whose name starts so."""
    if flow.dst_kind != "endpoint":
        return flow
    namespace, prefix = flow.dst.split("/")
    for endpoint in cluster.endpoints:
        if endpoint.namespace == namespace and endpoint.name.startswith(prefix):
            return attrs.evolve(flow, dst=endpoint.key)
    return flow


def _decided_by(verdict: Verdict) -> str:
    if verdict.default is None:
        return f"{verdict.policy} {verdict.direction}[{verdict.rule_index}]"
    tier = f" of tier {verdict.tier}" if verdict.tier else ""
    return f"{verdict.direction} {verdict.default}{tier}"
