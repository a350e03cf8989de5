"""A build's objects go to the collector's oldest generation, unscanned, unless the process
froze objects of its own or paused the collector itself."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

import fqdnpolicy
from fqdnpolicy.engine import PolicyEngine

POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: default}
spec:
  selector: app == "web"
  egress:
  - action: Allow
    destination: {domains: ["*.example.com"]}
"""


def _build() -> PolicyEngine:
    cluster = fqdnpolicy.Cluster(
        [fqdnpolicy.Endpoint("web", "default", {"app": "web"}, ips=["198.51.100.20"])],
        [fqdnpolicy.Namespace("default")],
    )
    return PolicyEngine(fqdnpolicy.loads(POLICY), cluster, fqdnpolicy.DNSCache())


def _generation_of(obj: object) -> int | None:
    for generation in range(3):
        if any(o is obj for o in gc.get_objects(generation=generation)):
            return generation
    return None


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    frozen = gc.get_freeze_count()
    gc.enable()
    gc.collect()  # generation counts start at zero: no middle pass can promote by chance
    yield
    if gc.get_freeze_count() != frozen:
        gc.unfreeze()
    if not enabled:
        gc.disable()


def test_the_built_state_is_old_at_once() -> None:
    engine = _build()
    assert gc.isenabled()
    assert _generation_of(engine._graph) == 2
    assert _generation_of(engine._graph.table.hosts) == 2
    assert gc.get_freeze_count() == 0


def test_objects_the_process_froze_stay_frozen() -> None:
    kept = [object() for _ in range(3)]
    holder = [kept]
    gc.freeze()
    frozen = gc.get_freeze_count()
    engine = _build()
    assert gc.get_freeze_count() == frozen
    assert _generation_of(holder) is None  # still in the permanent generation
    assert _generation_of(engine._graph) in (0, 1)


def test_a_paused_collector_stays_paused_and_nothing_moves() -> None:
    gc.disable()
    engine = _build()
    assert not gc.isenabled()
    assert _generation_of(engine._graph) == 0
