"""DatapathSync: full at start, deltas in order and coalesced, lifetimes, retries, drift, close."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dns.message
import dns.rrset
import pytest

import fqdnpolicy
from fqdnpolicy.backends import Backend
from fqdnpolicy.cluster import Cluster, Endpoint, Namespace
from fqdnpolicy.datapath import EndpointChanged, IPSetChanged, MemberChanged
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.sync import DatapathSync
from tests.support import FakeClock
from tests.sync.memory import MemoryBackend

POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-egress, namespace: default}
spec:
  selector: app == "web"
  egress:
  - action: Allow
    protocol: TCP
    destination: {domains: ["allowed.example"], ports: [443]}
"""
DNS = "198.51.100.53"
WAIT = 10.0  # generous: a bound on hanging, not a speed claim


def answer(name: str, ip: str, ttl: int = 30) -> dns.message.Message:
    response = dns.message.make_response(dns.message.make_query(name, "A"))
    response.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "A", ip))
    return response


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> DNSCache:
    return DNSCache(clock=clock, trusted_servers=[DNS])  # the README's defaults otherwise


@pytest.fixture
def engine(cache: DNSCache) -> Iterator[PolicyEngine]:
    cluster = Cluster(
        [Endpoint("web", "default", {"app": "web"}, ips=["203.0.113.2"], interface="fqs0")],
        [Namespace("default")],
    )
    engine = PolicyEngine(fqdnpolicy.loads(POLICY), cluster, cache)
    yield engine
    engine.close()


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def sync(engine: PolicyEngine, backend: MemoryBackend, cache: DNSCache) -> Iterator[DatapathSync]:
    with DatapathSync(engine, backend, dns=cache, reconcile_interval=None) as sync:
        assert sync.wait_ready(WAIT)
        yield sync


def domain_set(backend: MemoryBackend) -> dict[str, float | None]:
    (members,) = (m for k, m in backend.sets.items() if k.startswith("d:"))
    return members


def test_it_applies_a_full_rendering_at_start(sync: DatapathSync, backend: MemoryBackend) -> None:
    assert [r.kind for r in backend.applied] == ["full"]
    assert domain_set(backend) == {}
    assert sync.stats().ready
    assert sync.stats().full_applies == 1


def test_a_dns_answer_reaches_the_backend_as_a_delta(
    sync: DatapathSync, backend: MemoryBackend, cache: DNSCache, clock: FakeClock
) -> None:
    cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
    assert sync.sync(WAIT)
    assert domain_set(backend) == {"198.51.100.7": clock.now + 30}
    assert [r.kind for r in backend.applied] == ["full", "delta"]
    stats = sync.stats()
    assert (stats.applies, stats.deltas, stats.failures) == (2, 1, 0)
    assert stats.lag_last >= 0
    assert sync.lags()


def test_a_burst_of_answers_is_coalesced_and_applied_in_order(
    sync: DatapathSync, backend: MemoryBackend, cache: DNSCache
) -> None:
    backend.gate.clear()  # the next apply blocks: everything after it queues
    cache.observe(answer("allowed.example", "198.51.100.1"), DNS)
    for i in range(2, 12):
        cache.observe(answer("allowed.example", f"198.51.100.{i}"), DNS)
    cache.expire()
    backend.gate.set()
    assert sync.sync(WAIT)
    assert len(backend.applied) <= 3  # full, then one or two transactions for eleven batches
    assert set(domain_set(backend)) == {f"198.51.100.{i}" for i in range(1, 12)}


def test_an_answer_that_finds_the_sync_idle_is_applied_without_waiting_out_the_window(
    engine: PolicyEngine, backend: MemoryBackend, cache: DNSCache
) -> None:
    # The window (here far longer than the wait below) is for bursts only.
    with DatapathSync(engine, backend, dns=cache, batch_window=60.0) as sync:
        assert sync.wait_ready(WAIT)
        cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
        assert sync.sync(WAIT / 2)
        assert "198.51.100.7" in domain_set(backend)


def test_a_refresh_with_the_default_cache_extends_the_element(
    sync: DatapathSync, backend: MemoryBackend, cache: DNSCache, clock: FakeClock
) -> None:
    # DNSCache() reports no refreshes by default: the sync must see them anyway.
    cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
    clock.advance(20)
    cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
    assert sync.sync(WAIT)
    assert domain_set(backend)["198.51.100.7"] == clock.now + 30


def test_the_abc_default_needs_full_for_anything_but_member_changes() -> None:
    backend: Backend = MemoryBackend()
    assert not backend.needs_full([MemberChanged("d:x", "198.51.100.1", True, 5.0)])
    assert backend.needs_full([IPSetChanged("d:x", True)])
    assert backend.needs_full([EndpointChanged("default/web", "egress")])


def test_the_abc_default_close_lets_go_of_nothing_and_leaves_the_rules(
    sync: DatapathSync, backend: MemoryBackend
) -> None:
    before = (dict(backend.sets), set(backend.chains))
    Backend.close(backend)
    assert (backend.sets, backend.chains) == before


def test_a_policy_change_brings_a_full_apply(
    sync: DatapathSync, backend: MemoryBackend, engine: PolicyEngine
) -> None:
    engine.upsert_policy(
        fqdnpolicy.loads(POLICY.replace("allowed.example", "other.example")).policies[0]
    )
    assert sync.sync(WAIT)
    assert [r.kind for r in backend.applied] == ["full", "full"]


def test_a_resync_asked_during_a_full_apply_brings_another_after_it(
    sync: DatapathSync, backend: MemoryBackend
) -> None:
    backend.gate.clear()
    backend.entered.clear()
    sync.resync()
    assert backend.entered.wait(WAIT)  # the second full apply is under way, blocked
    sync.resync()  # the state it renders may predate what this resync is for
    backend.gate.set()
    deadline = time.monotonic() + WAIT
    while sync.stats().full_applies < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.kind for r in backend.applied] == ["full", "full", "full"]
    assert sync.stats().full_applies == 3


def test_failures_are_retried_with_nothing_torn_down(
    sync: DatapathSync, backend: MemoryBackend, cache: DNSCache
) -> None:
    cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
    assert sync.sync(WAIT)
    backend.refuse = 3
    cache.observe(answer("allowed.example", "198.51.100.8"), DNS)
    assert sync.sync(WAIT)
    assert set(domain_set(backend)) == {"198.51.100.7", "198.51.100.8"}
    stats = sync.stats()
    assert stats.failures == 3
    assert stats.last_error is None
    assert not backend.removed


def test_a_failing_start_is_retried_until_ready(engine: PolicyEngine, cache: DNSCache) -> None:
    backend = MemoryBackend()
    backend.refuse = 2
    with DatapathSync(engine, backend, dns=cache, reconcile_interval=None) as sync:
        assert sync.wait_ready(WAIT)
        assert sync.stats().failures == 2


def test_reconcile_repairs_a_member_removed_by_hand(
    sync: DatapathSync, backend: MemoryBackend, cache: DNSCache
) -> None:
    cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
    assert sync.sync(WAIT)
    assert sync.reconcile(WAIT)
    assert sync.stats().repairs == 0
    domain_set(backend).clear()
    domain_set(backend)["198.51.100.99"] = None  # and one nobody asked for
    assert sync.reconcile(WAIT)
    assert set(domain_set(backend)) == {"198.51.100.7"}
    assert sync.stats().repairs == 2


def test_reconcile_reads_again_before_putting_back_a_member_a_listing_skipped(
    sync: DatapathSync, backend: MemoryBackend, cache: DNSCache
) -> None:
    cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
    assert sync.sync(WAIT)
    applied = len(backend.applied)
    backend.hide_once = {"198.51.100.7"}
    reads = backend.reads
    assert sync.reconcile(WAIT)
    assert backend.reads == reads + 2  # the skipped member made it read once more
    assert sync.stats().repairs == 0
    assert len(backend.applied) == applied


def test_reconcile_reinstalls_a_chain_removed_by_hand(
    sync: DatapathSync, backend: MemoryBackend
) -> None:
    assert sync.reconcile(WAIT)
    backend.chains.clear()
    assert sync.reconcile(WAIT)
    assert backend.chains == {"main"}
    assert sync.stats().repairs == 1


def test_reconcile_runs_periodically(
    engine: PolicyEngine, backend: MemoryBackend, cache: DNSCache
) -> None:
    with DatapathSync(engine, backend, dns=cache, reconcile_interval=0.05) as sync:
        assert sync.wait_ready(WAIT)
        backend.chains.clear()
        deadline = time.monotonic() + WAIT
        while not backend.chains and time.monotonic() < deadline:
            time.sleep(0.01)
        assert backend.chains == {"main"}
        assert sync.stats().repairs == 1


@pytest.mark.parametrize("remove", [True, False])
def test_close_removes_or_leaves_the_rules_as_configured(
    engine: PolicyEngine, cache: DNSCache, remove: bool
) -> None:
    backend = MemoryBackend()
    sync = DatapathSync(engine, backend, dns=cache, remove_on_close=remove)
    assert sync.wait_ready(WAIT)
    sync.close()
    assert backend.removed is remove
    cache.observe(answer("allowed.example", "198.51.100.7"), DNS)
    assert len(backend.applied) == 1  # closed: follows the engine no more


@pytest.mark.parametrize(
    "option", [{"batch_window": 0}, {"retry_max": -1}, {"reconcile_interval": 0}]
)
def test_bad_options_are_refused_naming_the_option(
    engine: PolicyEngine, option: dict[str, float]
) -> None:
    with pytest.raises(InvalidPolicy) as raised:
        DatapathSync(engine, MemoryBackend(), **option)  # type: ignore[arg-type]
    assert next(iter(option)) in str(raised.value)
