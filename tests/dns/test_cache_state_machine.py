"""The cache against a from-scratch reference model, through random sequences of operations.

Steps: answers (typical ones, of the ingest fast path's shape, the same again with new TTLs
and maybe fewer addresses, as the refresh fast path takes them, and ones with chains, loops,
branches, out-of-chain records, zero addresses, odd TTLs, wrong rcodes), clock moves, expiry,
save + load into a fresh cache (a restart) and load into the same cache. After every step the
cache's effective mapping, its ``ips()`` and ``live()``, its next expiry, ``names_matching`` and
the mapping rebuilt from its change events must equal the model's.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fqdnpolicy.dns import DNSCache, DNSChange
from fqdnpolicy.dns.wire import Extracted, Record
from fqdnpolicy.domains import parse_domain_pattern
from tests.dns.helpers import FakeClock
from tests.dns.reference import ReferenceCache

NAMES = ["a.x.test", "b.x.test", "x.test", "c.y.test", "y.test", "d.test"]
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "0.0.0.0", "::"]
TTLS = [0, 1, 2, 5, 9, 30, 2**31 - 1, 2**32 - 1]
PATTERNS = [parse_domain_pattern(p) for p in ("*.test", "*.x.test", "x.test", "*.y.test", "d.test")]
WALL_OFFSET = 1_700_000_000  # wall clock = monotonic clock + this

noise_records = st.one_of(
    st.builds(
        Record, st.sampled_from(NAMES), st.just(5), st.sampled_from(TTLS), st.sampled_from(NAMES)
    ),
    st.builds(
        Record,
        st.sampled_from(NAMES),
        st.sampled_from([1, 28]),
        st.sampled_from(TTLS),
        st.sampled_from(IPS),
    ),
)


@st.composite
def answers(draw: st.DrawFn) -> Extracted:
    """Mostly a CNAME chain from the question with addresses along it, plus random noise."""
    qname = draw(st.sampled_from(NAMES))
    chain = [qname, *draw(st.lists(st.sampled_from(NAMES), max_size=5))]
    recs = [
        Record(chain[i], 5, draw(st.sampled_from(TTLS)), chain[i + 1])
        for i in range(len(chain) - 1)
    ]
    for _ in range(draw(st.integers(0, 3))):
        recs.append(
            Record(
                draw(st.sampled_from(chain)),
                draw(st.sampled_from([1, 28])),
                draw(st.sampled_from(TTLS)),
                draw(st.sampled_from(IPS)),
            )
        )
    recs.extend(draw(st.lists(noise_records, max_size=2)))
    return Extracted(
        qname=qname,
        is_response=draw(st.sampled_from([True, True, True, False])),
        opcode=draw(st.sampled_from([0, 0, 0, 4])),
        rcode=draw(st.sampled_from([0, 0, 0, 0, 3])),
        truncated=draw(st.booleans()),
        records=tuple(draw(st.permutations(recs))),
    )


@st.composite
def typical_answers(draw: st.DrawFn) -> Extracted:
    """The common shape the cache learns on a fast path: a CNAME chain, then addresses."""
    chain = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    recs = [
        Record(chain[i], 5, draw(st.sampled_from(TTLS)), chain[i + 1])
        for i in range(len(chain) - 1)
    ]
    recs += [
        Record(chain[-1], draw(st.sampled_from([1, 28])), draw(st.sampled_from(TTLS)), ip)
        for ip in draw(st.lists(st.sampled_from(IPS[:4]), min_size=1, max_size=3))
    ]
    return Extracted(chain[0], True, 0, 0, False, tuple(recs))


class CacheMatchesReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="dnscache-sm-")
        self.path = os.path.join(self.dir, "cache.jsonl")
        self.sent: list[Extracted] = []  # typical answers, for refreshes

    @initialize(
        min_ttl=st.integers(0, 3),
        spread=st.integers(0, 40),
        extra_ttl=st.integers(0, 2),
        grace_period=st.integers(0, 2),
        max_ips=st.integers(1, 3),
        max_names=st.integers(1, 5),
        depth=st.integers(1, 4),
        report_refresh=st.booleans(),
    )
    def setup(
        self,
        min_ttl: int,
        spread: int,
        extra_ttl: int,
        grace_period: int,
        max_ips: int,
        max_names: int,
        depth: int,
        report_refresh: bool,
    ) -> None:
        self.clock = FakeClock(100)
        self.config: dict[str, Any] = {
            "min_ttl": min_ttl,
            "max_ttl": min_ttl + spread,
            "extra_ttl": extra_ttl,
            "grace_period": grace_period,
            "max_ips_per_name": max_ips,
            "max_names": max_names,
            "max_chain_depth": depth,
        }
        self.report_refresh = report_refresh
        self.model = ReferenceCache(**self.config)
        self.cache = self.fresh_cache()

    def fresh_cache(self) -> DNSCache:
        cache = DNSCache(
            **self.config,
            clock=self.clock,
            wall_clock=lambda: self.clock() + WALL_OFFSET,
            report_refresh=self.report_refresh,
        )
        self.seen: dict[tuple[str, str], float] = {}
        cache.subscribe(self.apply)
        self.refreshes = [0]
        inner = cache._ingest_refresh

        def counting(*args: Any) -> list[DNSChange] | None:
            result = inner(*args)
            self.refreshes[0] += result is not None
            return result

        cache._ingest_refresh = counting  # type: ignore[method-assign,assignment]
        return cache

    def apply(self, batch: list[DNSChange]) -> None:
        assert batch, "subscribers only get non-empty batches"
        for change in batch:
            key = (change.name, change.ip)
            if change.added:
                assert self.report_refresh or key not in self.seen, f"added twice: {change}"
                self.seen[key] = change.expiry
            else:
                assert key in self.seen, f"removed but never added: {change}"
                del self.seen[key]

    @rule(ex=answers())
    def ingest(self, ex: Extracted) -> None:
        self.cache.ingest(ex)
        self.model.ingest(ex, self.clock())

    @rule(ex=typical_answers())
    def ingest_typical(self, ex: Extracted) -> None:
        self.sent.append(ex)
        self.ingest(ex)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def refresh_typical(self, data: st.DataObject) -> None:
        """A typical answer again, as resolvers repeat them: new TTLs, maybe fewer addresses."""
        ex = data.draw(st.sampled_from(self.sent))
        addresses = [r for r in ex.records if r.rtype != 5]
        kept = data.draw(st.lists(st.sampled_from(addresses), min_size=1, unique=True))
        # Mostly TTLs that give a lifetime (a resolver counting down or reloading), some not.
        refresh_ttls = st.sampled_from([30, 9, 5, 2, 1, 0, 2**32 - 1])
        ttls = {key: data.draw(refresh_ttls) for key in {(r.name, r.rtype) for r in ex.records}}
        records = [
            r._replace(ttl=ttls[r.name, r.rtype]) for r in ex.records if r.rtype == 5 or r in kept
        ]
        before = self.refreshes[0]
        self.ingest(ex._replace(records=tuple(records)))
        event(f"refresh fast path taken: {self.refreshes[0] > before}")

    @rule(seconds=st.integers(0, 30))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def expire(self) -> None:
        changes = self.cache.expire()
        assert all(not c.added for c in changes)
        self.model.expire(self.clock())

    @rule()
    def restart(self) -> None:
        self.cache.save(self.path)
        self.cache = self.fresh_cache()
        report = self.cache.load(self.path)
        assert report.ignored is None
        assert not report.skipped
        self.model.restart(self.clock())

    @rule()
    def reload_into_same_cache(self) -> None:
        self.cache.save(self.path)
        report = self.cache.load(self.path)
        assert report.ignored is None
        assert not report.skipped

    @invariant()
    def mapping_matches(self) -> None:
        if not hasattr(self, "model"):
            return
        expected = self.model.mapping()
        assert self.cache.mapping() == expected
        if self.report_refresh:
            rebuilt: dict[str, dict[str, float]] = {}
            for (name, ip), expiry in self.seen.items():
                rebuilt.setdefault(name, {})[ip] = expiry
            assert rebuilt == expected
        else:
            assert set(self.seen) == {(n, ip) for n, m in expected.items() for ip in m}
        now = self.clock()
        for name in NAMES:
            assert self.cache.ips(name) == {
                ip for ip, d in self.model.effective(name).items() if d > now
            }
        assert self.cache.next_expiry() == self.model.next_expiry()
        assert self.cache.names() == self.model.owners()
        # The whole cache read at once: every name leading to IPs now, with their deadlines.
        assert dict(self.cache.live()) == {
            name: live
            for name in self.model.owners()
            if (live := {ip: d for ip, d in self.model.effective(name).items() if d > now})
        }
        for pattern in PATTERNS:
            assert self.cache.names_matching(pattern) == {
                n for n in self.model.owners() if pattern.matches(n)
            }

    def teardown(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.rmdir(self.dir)


CacheMatchesReference.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cache_matches_reference = CacheMatchesReference.TestCase
