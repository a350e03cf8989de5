"""DatapathSync on a real kernel with the iptables backend: what it installed is read back
(``iptables-save``, ``ipset save``), and drift made by hand is repaired and counted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fqdnpolicy_iptables import IptablesBackend

import fqdnpolicy
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.sync import DatapathSync
from tests.kernel.test_iptables_kernel import ns, run, variant
from tests.sync.test_sync import DNS, POLICY, WAIT, answer

__all__ = ["ns", "variant"]  # fixtures: each test runs in a namespace of its own, per variant

pytestmark = pytest.mark.kernel


@pytest.fixture
def sync(ns: str, variant: str) -> Iterator[DatapathSync]:
    cache = DNSCache(trusted_servers=[DNS])
    cluster = fqdnpolicy.Cluster(
        [fqdnpolicy.Endpoint("web", "default", {"app": "web"}, ips=["203.0.113.2"])],
        [fqdnpolicy.Namespace("default")],
    )
    engine = PolicyEngine(fqdnpolicy.loads(POLICY), cluster, cache)
    backend = IptablesBackend(variant)  # type: ignore[arg-type]
    with DatapathSync(engine, backend, netns=ns, dns=cache, reconcile_interval=None) as sync:
        assert sync.wait_ready(WAIT)
        cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
        assert sync.sync(WAIT)
        yield sync
    engine.close()


def members(ns: str, sync: DatapathSync) -> set[str]:
    installed = sync.backend.installed(netns=ns)
    assert installed is not None
    return {m for found in installed.members.values() for m in found}


def test_what_the_backend_installed_is_read_back(ns: str, sync: DatapathSync) -> None:
    installed = sync.backend.installed(netns=ns)
    assert installed is not None
    assert members(ns, sync) == {"198.51.100.7"}
    assert {c.split(":")[1] for c in installed.chains} >= {"FORWARD", "fqp-FORWARD", "fqp-from-wl"}
    assert {c.split(":")[0] for c in installed.chains} == {"4", "6"}
    assert sync.reconcile(WAIT)
    assert sync.stats().repairs == 0


def test_drift_made_by_hand_is_repaired_and_counted(
    ns: str, sync: DatapathSync, variant: str
) -> None:
    iptables = f"iptables-{variant}"
    domains = next(
        line.split()[1]
        for line in run(ns, "ipset", "save").splitlines()
        if line.startswith("add fqp-d4-")
    )
    # A member deleted: put back by a delta.
    run(ns, "ipset", "del", domains, "198.51.100.7")
    assert sync.reconcile(WAIT)
    assert "198.51.100.7" in members(ns, sync)
    assert sync.stats().repairs == 1
    # Our jump in FORWARD deleted: a full apply puts it back.
    jump = ["FORWARD", "-m", "comment", "--comment", "fqdnpolicy", "-j", "fqp-FORWARD"]
    run(ns, iptables, "-D", *jump)
    assert sync.reconcile(WAIT)
    assert "-j fqp-FORWARD" in run(ns, f"{iptables}-save", "-t", "filter")
    assert sync.stats().repairs == 2
    # A chain of ours emptied by hand, then the jump and the root chain deleted.
    run(ns, iptables, "-F", "fqp-from-wl")
    run(ns, iptables, "-D", *jump)
    run(ns, iptables, "-F", "fqp-FORWARD")
    run(ns, iptables, "-X", "fqp-FORWARD")
    assert sync.reconcile(WAIT)
    saved = run(ns, f"{iptables}-save", "-t", "filter")
    assert ":fqp-FORWARD" in saved
    assert "-A fqp-from-wl" in saved
    assert sync.stats().repairs == 5
    assert members(ns, sync) == {"198.51.100.7"}
    assert sync.reconcile(WAIT)
    assert sync.stats().repairs == 5  # nothing left to repair
