"""Speed of selector parsing and of ``Selector.matches`` against the AST-walk reference.

Run: ``.venv/bin/pytest benchmarks/bench_selector.py --benchmark-only``. Compare the
``compiled`` and ``reference`` groups per shape for the speed-up of the closure compiler.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fqdnpolicy.scoping import Subject, peer_match
from fqdnpolicy.selector import _parse_cached, parse_selector

# The reference evaluator lives with the tests (one copy); benchmarks/ is not a package, so
# make the repository root importable when pytest is run as `pytest benchmarks/...`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_selector import reference_matches

TYPICAL = (
    'app in {"web", "api"} && tier == "frontend" && !has(canary) '
    '|| k8s-app starts with "kube-" && projectcalico.org/namespace != "default"'
)

# Ten labels, as on a typical pod after Calico adds its implicit ones.
LABELS = {
    "app": "api",
    "tier": "frontend",
    "version": "v2",
    "pod-template-hash": "5d9c8b7f4",
    "app.kubernetes.io/name": "api",
    "app.kubernetes.io/part-of": "shop",
    "team": "payments",
    "projectcalico.org/namespace": "shop",
    "projectcalico.org/orchestrator": "k8s",
    "projectcalico.org/serviceaccount": "api",
}

SHAPES = {
    "equality": 'app == "api"',
    "conjunction": 'app == "api" && tier in {"frontend", "edge"} && has(team)',
    "negations": '!has(canary) && version != "v1" && team not in {"ops", "infra"}',
    "typical": TYPICAL,
    "strings": 'app.kubernetes.io/name contains "pi" || pod-template-hash ends with "f4"',
}


def test_parse_typical_selector_uncached(benchmark: BenchmarkFixture) -> None:
    parse = _parse_cached.__wrapped__  # the cache would otherwise make this a dict lookup
    result = benchmark(parse, TYPICAL)
    assert result == parse_selector(TYPICAL)


def test_parse_typical_selector_cached(benchmark: BenchmarkFixture) -> None:
    benchmark(parse_selector, TYPICAL)


@pytest.mark.benchmark(group="compiled")
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_compiled(benchmark: BenchmarkFixture, shape: str) -> None:
    selector = parse_selector(SHAPES[shape])
    result = benchmark(selector.matches, LABELS)
    assert result is reference_matches(selector.root, LABELS)


@pytest.mark.benchmark(group="reference")
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference_ast_walk(benchmark: BenchmarkFixture, shape: str) -> None:
    root = parse_selector(SHAPES[shape]).root
    benchmark(reference_matches, root, LABELS)


def test_rule_peer_match_in_a_namespaced_policy(benchmark: BenchmarkFixture) -> None:
    peer = Subject.pod(
        "shop",
        {k: v for k, v in LABELS.items() if not k.startswith("projectcalico.org/")},
        namespace_labels={"team": "payments"},
        service_account="api",
    )
    rule = peer_match(policy_namespace="shop", selector=parse_selector(SHAPES["conjunction"]))
    assert benchmark(rule.matches, peer)
