"""Hold mode with the iptables backend: the backend renders the NFQUEUE rule (to the
workloads' interfaces only), the hold module installs none of its own, and no first
connection fails; stopping the hold takes the rule out again."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from fqdnpolicy_iptables import IptablesBackend

import fqdnpolicy
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.hold import DnsHold
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.sync import DatapathSync
from fqdnpolicy.testing.lab import DNS_SERVER, Lab
from tests.kernel.test_sync_hold import POLICY, WEB, client, records

pytestmark = pytest.mark.kernel
FIRST = 50
INTERFACE = "fqhweb0"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    from tests.support import require_root, require_tool

    require_root()
    for tool in ("dnsmasq", "ipset", "iptables-nft", "iptables-legacy"):
        require_tool(tool)
    addresses = [f"203.0.113.{i}" for i in (*range(1, FIRST + 1), 250)]
    with Lab([(WEB, INTERFACE)], addresses, [80], [], records(), prefix="fqh") as lab:
        yield lab


def saved(lab: Lab, tool: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", lab.host, tool, "-t", "filter"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip


@pytest.mark.parametrize("variant", ["nft", "legacy"])
def test_the_backend_renders_the_hold_rule_and_every_first_connection_succeeds(
    lab: Lab, variant: str
) -> None:
    cache = DNSCache(trusted_servers=[DNS_SERVER])
    workload = lab.workloads[0]
    endpoint = fqdnpolicy.Endpoint(
        "web", "default", {"app": "web"}, ips=[workload.ipv4, workload.ipv6], interface=INTERFACE
    )
    cluster = fqdnpolicy.Cluster([endpoint], [fqdnpolicy.Namespace("default")])
    engine = PolicyEngine(fqdnpolicy.loads(POLICY), cluster, cache)
    backend = IptablesBackend(variant, reject=True)  # type: ignore[arg-type]
    sync = DatapathSync(engine, backend, netns=lab.host, dns=cache)
    rule = f"-A fqp-hold -o {INTERFACE} -j NFQUEUE --queue-num 5353 --queue-bypass"
    try:
        assert sync.wait_ready(10)
        with DnsHold(cache, sync, netns=lab.host) as hold:
            for tool in (f"iptables-{variant}-save", f"ip6tables-{variant}-save"):
                rules = saved(lab, tool)
                assert rule in rules
                assert "-A fqp-FORWARD -p udp -m udp --sport 53 -j fqp-hold" in rules
                assert "fqdnpolicy-hold" not in rules  # the module's own rule
            assert "fqdnpolicy-hold" not in saved(lab, "iptables-nft-save")
            results = client(lab, [f"n{i}.allowed.example.test" for i in range(1, FIRST + 1)])
            assert results.count(True) == FIRST
            assert hold.stats().released >= FIRST
            assert hold.stats().timed_out == 0
            assert client(lab, ["denied.example.test"]) == [False]
        assert "fqp-hold" not in saved(lab, f"iptables-{variant}-save")
    finally:
        sync.close(remove=True)
        engine.close()
