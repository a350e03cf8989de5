"""The nftables backend passes the conformance kit: the kernel does what the engine decides.

The kit (:mod:`fqdnpolicy.testing`) runs each seed's case in a lab of namespaces: policies in
three tiers, names learned from dnsmasq's answers, an expiry, a refresh, connections held
across an expiry, a policy change; several hundred TCP, UDP and ICMP flows, IPv4 and IPv6,
each compared with ``engine.verdict()``. The backend drops what it denies (the production
rendering), so a blocked probe is seen by its silence.
"""

from __future__ import annotations

import pytest

from fqdnpolicy.testing import SEEDS
from fqdnpolicy.testing.plugin import ConformanceRunner

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("seed", SEEDS)
def test_nftables_enforces_exactly_the_engine_verdicts(
    backend_conformance: ConformanceRunner, seed: int
) -> None:
    report = backend_conformance("nftables", seed=seed, tools=("nft",))
    assert report.total >= 300
    assert not report.mismatches
