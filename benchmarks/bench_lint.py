"""Speed of ``lint`` on large policies, where the shadowed-rule check dominates.

Run: ``.venv/bin/pytest benchmarks/bench_lint.py --benchmark-only``. Compare the ``lint`` group
across sizes for growth (near-linear: doubling the rules about doubles the time), and the
``reference`` group with ``lint`` at 1,000 rules for the gain over trying every earlier rule.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fqdnpolicy.lint import lint
from fqdnpolicy.model import ResourceSet

# The policy shapes and the reference model live with the tests (one copy); benchmarks/ is not
# a package, so make the repository root importable when pytest is run as `pytest benchmarks/`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_lint_scaling import large_policy, reference_warnings


@pytest.mark.benchmark(group="lint")
@pytest.mark.parametrize("rules", [1000, 4000, 8000])
def test_lint_large_policy(benchmark: BenchmarkFixture, rules: int) -> None:
    resources = ResourceSet(policies=(large_policy(rules),))
    warnings = benchmark(lint, resources)
    assert any(w.code == "shadowed-rule" for w in warnings)


@pytest.mark.benchmark(group="reference")
def test_reference_shadowed_rules_1000(benchmark: BenchmarkFixture) -> None:
    policy = large_policy(1000)
    warnings = benchmark.pedantic(  # type: ignore[no-untyped-call]
        reference_warnings, args=(policy,), rounds=3, iterations=1
    )
    assert warnings
