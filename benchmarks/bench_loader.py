"""Loader throughput: the bundled seed set, and a generated file of 1,000 policies."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fqdnpolicy.loader import dump, load, loads
from fqdnpolicy.model import ResourceSet

POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: policy-{i}
  namespace: ns-{ns}
  labels:
    team: team-{ns}
spec:
  order: {i}
  selector: app == "app-{i}" && tier in {{"web", "api"}}
  types:
  - Egress
  egress:
  - action: Allow
    protocol: TCP
    destination:
      domains:
      - "api-{i}.example.com"
      - "*.svc-{i}.example.net"
      ports:
      - 443
      - "8000:8080"
  - action: Allow
    protocol: TCP
    destination:
      nets:
      - 10.{a}.{b}.0/24
      ports:
      - 5432
  - action: Allow
    protocol: UDP
    destination:
      selector: k8s-app == "kube-dns"
      namespaceSelector: projectcalico.org/name == "kube-system"
      ports:
      - 53
  - action: Deny
"""


def generated(count: int) -> str:
    return "---\n".join(
        POLICY.format(i=i, ns=i % 50, a=i // 256 % 256, b=i % 256) for i in range(count)
    )


@pytest.fixture(scope="module")
def seed_dir() -> Iterator[Path]:
    data = importlib.resources.files("fqdnpolicy") / "data" / "seed"
    with importlib.resources.as_file(data) as path:
        yield path


def test_load_seed_set(benchmark: BenchmarkFixture, seed_dir: Path) -> None:
    rs = benchmark(load, seed_dir)
    assert len(rs) == 9


def test_loads_1000_policies(benchmark: BenchmarkFixture) -> None:
    text = generated(1000)
    benchmark.extra_info["bytes"] = len(text)
    rs: ResourceSet = benchmark.pedantic(  # type: ignore[no-untyped-call]
        loads, args=(text,), rounds=3, iterations=1
    )
    assert len(rs.policies) == 1000
    assert len(rs.domain_references()) == 2000


def test_dump_1000_policies(benchmark: BenchmarkFixture) -> None:
    rs = loads(generated(1000))
    text = benchmark.pedantic(dump, args=(rs,), rounds=3, iterations=1)  # type: ignore[no-untyped-call]
    assert loads(text) == rs
