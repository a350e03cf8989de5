"""The iptables backend passes the conformance kit, with both iptables variants.

The kit (:mod:`fqdnpolicy.testing`) runs each seed's case in a lab of namespaces: policies in
three tiers, names learned from dnsmasq's answers, an expiry, a refresh, connections held
across an expiry, a policy change; several hundred TCP, UDP and ICMP flows, IPv4 and IPv6,
each compared with ``engine.verdict()``. The seeds are the ones the nftables backend runs.
The backend drops what it denies (the production rendering), so a blocked probe is seen by
its silence.
"""

from __future__ import annotations

import pytest

from fqdnpolicy.testing import SEEDS
from fqdnpolicy.testing.plugin import ConformanceRunner

pytestmark = pytest.mark.kernel

TOOLS = {
    "nft": ("ipset", "iptables-nft-restore", "ip6tables-nft-restore"),
    "legacy": ("ipset", "iptables-legacy-restore", "ip6tables-legacy-restore"),
}


@pytest.mark.parametrize("variant", ["nft", "legacy"])
@pytest.mark.parametrize("seed", SEEDS)
def test_iptables_enforces_exactly_the_engine_verdicts(
    backend_conformance: ConformanceRunner, seed: int, variant: str
) -> None:
    report = backend_conformance(
        "iptables", seed=seed, options={"variant": variant}, tools=TOOLS[variant]
    )
    assert report.total >= 300
    assert not report.mismatches
