"""DatapathSync on a real kernel with the nftables backend, in a scratch namespace."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from fqdnpolicy_nftables import NftablesBackend

import fqdnpolicy
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.sync import DatapathSync
from tests.sync.test_sync import DNS, POLICY, WAIT, answer

pytestmark = pytest.mark.kernel


def nft(netns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def elements(netns: str, sync: DatapathSync) -> set[str]:
    installed = sync.backend.installed(netns=netns)
    assert installed is not None
    return {m for members in installed.members.values() for m in members}


@pytest.fixture
def cache() -> DNSCache:
    return DNSCache(trusted_servers=[DNS])  # real clock, README defaults


@pytest.fixture(params=[True, False], ids=["libnftables", "nft-binary"])
def sync(netns: str, cache: DNSCache, request: pytest.FixtureRequest) -> Iterator[DatapathSync]:
    cluster = fqdnpolicy.Cluster(
        [fqdnpolicy.Endpoint("web", "default", {"app": "web"}, ips=["203.0.113.2"])],
        [fqdnpolicy.Namespace("default")],
    )
    engine = PolicyEngine(fqdnpolicy.loads(POLICY), cluster, cache)
    backend = NftablesBackend(table="fqs", use_library=request.param)
    assert backend.runner.uses_library == request.param
    with DatapathSync(engine, backend, netns=netns, dns=cache, reconcile_interval=None) as sync:
        assert sync.wait_ready(WAIT)
        yield sync
    engine.close()
    backend.close()


def test_an_answer_reaches_the_kernel(netns: str, sync: DatapathSync, cache: DNSCache) -> None:
    cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
    assert sync.sync(WAIT)
    assert elements(netns, sync) == {"198.51.100.7"}


def test_a_name_answered_again_never_times_out_in_the_kernel(
    netns: str, sync: DatapathSync, cache: DNSCache
) -> None:
    # The cache's shortest TTL, answered again well within it, for three lifetimes.
    start = time.monotonic()
    while time.monotonic() < start + 6:
        cache.observe(answer("allowed.example", "198.51.100.7", ttl=2), DNS)
        assert sync.sync(WAIT)
        assert elements(netns, sync) == {"198.51.100.7"}
        time.sleep(1.0)
    assert elements(netns, sync) == {"198.51.100.7"}


def test_drift_made_by_hand_is_repaired_and_counted(
    netns: str, sync: DatapathSync, cache: DNSCache
) -> None:
    cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
    assert sync.sync(WAIT)
    assert sync.reconcile(WAIT)
    assert sync.stats().repairs == 0
    (set_name,) = (
        line.split()[1] for line in nft(netns, "list", "sets").splitlines() if " d4_" in line
    )
    nft(netns, "delete", "element", "inet", "fqs", set_name, "{ 198.51.100.7 }")
    assert sync.reconcile(WAIT)
    assert elements(netns, sync) == {"198.51.100.7"}
    assert sync.stats().repairs == 1
    chains = nft(netns, "-a", "list", "table", "inet", "fqs")
    base = next(line.split()[1] for line in chains.splitlines() if line.strip().startswith("chain"))
    nft(netns, "flush", "chain", "inet", "fqs", base)
    nft(netns, "delete", "chain", "inet", "fqs", base)
    assert sync.reconcile(WAIT)
    assert base in nft(netns, "list", "table", "inet", "fqs")
    nft(netns, "delete", "table", "inet", "fqs")
    assert sync.reconcile(WAIT)
    assert elements(netns, sync) == {"198.51.100.7"}
    assert sync.stats().repairs == 3


def test_close_can_remove_the_table(netns: str, cache: DNSCache) -> None:
    engine = PolicyEngine(fqdnpolicy.loads(POLICY), fqdnpolicy.Cluster([], []), cache)
    backend = NftablesBackend(table="fqs", use_library=False)
    sync = DatapathSync(engine, backend, netns=netns, remove_on_close=True)
    assert sync.wait_ready(WAIT)
    assert "fqs" in nft(netns, "list", "tables")
    sync.close()
    assert "fqs" not in nft(netns, "list", "tables")
