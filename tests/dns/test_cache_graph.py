"""The effective mapping of random link graphs equals the path-enumerating reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.dns import DNSCache, DNSLink
from tests.dns.helpers import FakeClock
from tests.dns.reference import ReferenceCache

NAMES = [f"n{i}.test" for i in range(7)]
IPS = ["10.0.0.1", "10.0.0.2", "2001:db8::3"]

links = st.lists(
    st.one_of(
        st.builds(
            DNSLink,
            st.sampled_from(NAMES),
            st.sampled_from(NAMES),
            st.just(True),
            st.integers(1, 20).map(float),
        ),
        st.builds(
            DNSLink,
            st.sampled_from(NAMES),
            st.sampled_from(IPS),
            st.just(False),
            st.integers(1, 20).map(float),
        ),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(first=links, second=links, depth=st.integers(1, 5), expire_at=st.integers(0, 20))
def test_effective_mapping_of_random_graphs_matches_reference(
    first: list[DNSLink], second: list[DNSLink], depth: int, expire_at: int
) -> None:
    clock = FakeClock(0)
    cache = DNSCache(clock=clock, max_chain_depth=depth, max_ips_per_name=100, max_names=100)
    model = ReferenceCache(
        min_ttl=0,
        max_ttl=100,
        extra_ttl=0,
        grace_period=0,
        max_ips_per_name=100,
        max_names=100,
        max_chain_depth=depth,
    )
    seen: set[tuple[str, str]] = set()
    for batch in (first, second):  # two batches: the second changes an existing graph
        for change in cache.restore(batch):
            if change.added:
                seen.add((change.name, change.ip))
            else:
                seen.discard((change.name, change.ip))
        for link in batch:
            model.put(link.name, link.is_cname, link.target, link.expiry)
        assert cache.mapping() == model.mapping()
    clock.now = expire_at
    for change in cache.expire():
        seen.discard((change.name, change.ip))
    model.expire(expire_at)
    assert cache.mapping() == model.mapping()
    assert seen == {(n, ip) for n, m in model.mapping().items() for ip in m}
