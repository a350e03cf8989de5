"""The proof on a real kernel: answers, connections and the nftables datapath kept in step.

The lab (:mod:`fqdnpolicy.testing.lab`): a workload namespace, the node namespace holding
the nftables table, a server namespace with dnsmasq and echo servers. The sync, the hold and
the snooper run in this process and work inside the node namespace. A small client in the
workload resolves names through dnsmasq and connects to the answer at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fqdnpolicy_nftables import NftablesBackend

import fqdnpolicy
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.hold import DnsHold
from fqdnpolicy.dns.snoop import Snooper
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.sync import DatapathSync
from fqdnpolicy.testing.lab import DNS_SERVER, HostRecord, Lab

pytestmark = pytest.mark.kernel
WEB = "default/web"
FIRST = 200  # first connections, each to a name never resolved before
POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-egress, namespace: default}
spec:
  selector: app == "web"
  types: [Egress]
  egress:
  - action: Allow
    protocol: UDP
    destination: {nets: ["198.51.100.53/32"], ports: [53]}
  - action: Allow
    protocol: TCP
    destination: {domains: ["*.allowed.example.test"], ports: [80]}
"""
# In the workload: resolve each name (A, UDP) and connect to its first address at once;
# print 1 (connected) or 0 per name; an address is connected to without resolving. With
# "once", a name is resolved only the first time.
CLIENT = """
import socket, sys, time
import dns.message, dns.query
server, names, timeout = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
resolve = sys.argv[4] == "resolve"
interval = float(sys.argv[5])
address = None
for name in names:
    if name[0].isdigit():
        address = name
    elif resolve or address is None:
        reply = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=2)
        address = [r for rr in reply.answer for r in rr][0].address
    try:
        socket.create_connection((address, 80), timeout=timeout).close()
        print(1, flush=True)
    except OSError:
        print(0, flush=True)
    time.sleep(interval)
"""


def records() -> list[HostRecord]:
    found = [
        HostRecord(f"n{i}.allowed.example.test", (f"203.0.113.{i}",), 30) for i in range(1, 201)
    ]
    found += [
        HostRecord(f"m{i}.allowed.example.test", (f"203.0.113.{i}",), 30) for i in range(1, 201)
    ]
    found.append(HostRecord("denied.example.test", ("203.0.113.250",), 30))
    found.append(HostRecord("short.allowed.example.test", ("203.0.113.251",), 2))
    return found


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    from tests.support import require_root, require_tool

    require_root()
    for tool in ("dnsmasq", "nft", "iptables-nft"):
        require_tool(tool)
    addresses = [f"203.0.113.{i}" for i in (*range(1, 201), 250, 251)]
    with Lab([(WEB, "fqsweb0")], addresses, [80], [], records(), prefix="fqs") as lab:
        yield lab


class Node:
    """The cache, engine and sync of one run, working in the lab's node namespace."""

    def __init__(self, lab: Lab, cache: DNSCache | None = None) -> None:
        self.lab = lab
        self.cache = cache or DNSCache(trusted_servers=[DNS_SERVER])
        workload = lab.workloads[0]
        cluster = fqdnpolicy.Cluster(
            [
                fqdnpolicy.Endpoint(
                    "web",
                    "default",
                    {"app": "web"},
                    ips=[workload.ipv4, workload.ipv6],
                    interface="fqsweb0",
                )
            ],
            [fqdnpolicy.Namespace("default")],
        )
        self.engine = PolicyEngine(fqdnpolicy.loads(POLICY), cluster, self.cache)
        backend = NftablesBackend(table="fqs", reject=True, use_library=False)
        self.sync = DatapathSync(
            engine=self.engine, backend=backend, netns=lab.host, dns=self.cache
        )
        assert self.sync.wait_ready(10)

    def close(self, *, remove: bool = True) -> None:
        self.sync.close(remove=remove)
        self.engine.close()


def client(
    lab: Lab, names: list[str], *, resolve: bool = True, interval: float = 0.0, timeout: float = 1.0
) -> list[bool]:
    out = subprocess.run(
        [
            "ip", "netns", "exec", lab.namespace_of(WEB), sys.executable, "-c", CLIENT,
            DNS_SERVER, ",".join(names), str(timeout), "resolve" if resolve else "once",
            str(interval),
        ],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    return [line == "1" for line in out.split()]


def test_in_hold_mode_every_first_connection_succeeds(lab: Lab) -> None:
    node = Node(lab)
    try:
        with DnsHold(node.cache, node.sync, netns=lab.host) as hold:
            results = client(lab, [f"n{i}.allowed.example.test" for i in range(1, FIRST + 1)])
            assert results.count(True) == FIRST
            assert hold.stats().released >= FIRST
            assert hold.stats().timed_out == 0
            assert client(lab, ["denied.example.test"]) == [False]
    finally:
        node.close()


def test_without_hold_first_connections_race_the_datapath(
    lab: Lab, record_property: Callable[[str, object], None]
) -> None:
    node = Node(lab)
    try:
        with Snooper(node.cache, ["fpsrv"], netns=lab.host):
            results = client(lab, [f"m{i}.allowed.example.test" for i in range(1, FIRST + 1)])
    finally:
        node.close()
    # Not asserted: how many lose the race depends on the machine. Reported.
    record_property("first_connections_failed_without_hold", results.count(False))
    print(f"without hold: {results.count(False)} of {FIRST} first connections failed")


def test_after_the_ttl_without_a_query_refused_and_requery_never_refused(lab: Lab) -> None:
    node = Node(lab)
    try:
        with DnsHold(node.cache, node.sync, netns=lab.host):
            # Resolved again before each connection, within its short TTL: every one succeeds.
            assert all(client(lab, ["short.allowed.example.test"] * 6, interval=1.0))
            # Resolved once, then left past its TTL: the kernel element times out.
            assert client(lab, ["short.allowed.example.test"]) == [True]
            time.sleep(3.0)
            assert client(lab, ["203.0.113.251"]) == [False]
    finally:
        node.close()


def test_a_restart_with_the_saved_cache_refuses_no_allowed_connection(
    lab: Lab, tmp_path: Path
) -> None:
    node = Node(lab)
    saved = tmp_path / "cache.jsonl"
    results: list[bool] = []
    with DnsHold(node.cache, node.sync, netns=lab.host):
        assert client(lab, ["n1.allowed.example.test"]) == [True]
    stream = threading.Thread(
        target=lambda: results.extend(client(lab, ["203.0.113.1"] * 40, interval=0.05))
    )
    stream.start()
    time.sleep(0.5)
    node.close(remove=False)  # stopping: rules stay enforced
    node.cache.save(str(saved))
    cache = DNSCache(trusted_servers=[DNS_SERVER])
    cache.load(str(saved))
    node = Node(lab, cache)  # starting again: a full apply from the loaded cache
    stream.join()
    node.close()
    assert len(results) == 40
    assert all(results)


def test_a_policy_edit_takes_effect_within_a_second(lab: Lab) -> None:
    node = Node(lab)
    try:
        with DnsHold(node.cache, node.sync, netns=lab.host):
            assert client(lab, ["denied.example.test"]) == [False]
            edited = POLICY.replace(
                '"*.allowed.example.test"', '"*.allowed.example.test", "denied.example.test"'
            )
            start = time.monotonic()
            node.engine.upsert_policy(fqdnpolicy.loads(edited).policies[0])
            assert node.sync.sync(1.0)
            assert time.monotonic() - start < 1.0
            assert client(lab, ["203.0.113.250"]) == [True]
    finally:
        node.close()


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_an_answer_unprogrammed_at_the_bound_is_released_or_dropped(lab: Lab, fail: str) -> None:
    cache = DNSCache(trusted_servers=[DNS_SERVER])
    engine = PolicyEngine(fqdnpolicy.loads(POLICY), fqdnpolicy.Cluster([], []), cache)
    # A sync that never gets its rules in: its namespace does not exist.
    backend = NftablesBackend(table="fqs", use_library=False)
    stuck = DatapathSync(engine, backend, netns=f"fqs-missing-{os.getpid()}", dns=cache)
    try:
        with DnsHold(cache, stuck, netns=lab.host, bound=0.2, fail=fail) as hold:  # type: ignore[arg-type]
            try:
                answered = bool(lab.resolve(WEB, ["n7.allowed.example.test"], timeout=1.0))
            except RuntimeError:
                answered = False
            assert answered is (fail == "open")
            assert hold.stats().timed_out >= 1
            assert (hold.stats().dropped >= 1) is (fail == "closed")
    finally:
        stuck.close()
        engine.close()
