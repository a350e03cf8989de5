"""The nftables backend on a real kernel: facts of its table that flows alone do not show.

That the kernel enforces what the engine decides, flow by flow, is the conformance kit's to
prove (``test_nftables_conformance.py``); here: text and JSON renderings, re-applying, element
timeouts, hostile strings, ``check`` and ``remove``.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from fqdnpolicy_nftables import NftablesBackend

from fqdnpolicy.backends import BackendError, Rendering
from fqdnpolicy.cluster import Cluster
from fqdnpolicy.datapath import Delta
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import ResourceSet
from fqdnpolicy.testing.cases import make_endpoints
from tests.engine.strategies import FakeClock, answer, entity, policy, rule

pytestmark = pytest.mark.kernel


def small_engine(clock: FakeClock) -> tuple[PolicyEngine, DNSCache]:
    cache = DNSCache(clock=clock, report_refresh=True)
    policies = (
        policy(
            "web-out",
            namespace="team-a",
            selector='app == "web"',
            egress=[
                rule("Log", protocol="TCP", destination=entity(ports=[443])),
                rule(
                    "Allow",
                    protocol="TCP",
                    destination=entity(domains=["api.example.test"], ports=[443, "8000:8100"]),
                ),
                rule("Pass", destination=entity(nets=["203.0.113.128/25", "203.0.113.130/32"])),
                rule(
                    "Deny",
                    protocol="UDP",
                    destination=entity(selector='app == "db"', ports=["dnsx"]),
                ),
            ],
            ingress=[
                rule(
                    "Allow",
                    protocol="TCP",
                    source=entity(selector="has(app)"),
                    destination=entity(ports=["http"]),
                )
            ],
        ),
    )
    engine = PolicyEngine(
        ResourceSet(policies=policies), Cluster(endpoints=tuple(make_endpoints())), cache
    )
    answer(cache, "api.example.test", "203.0.113.10", "2001:db8:203::10", ttl=30)
    return engine, cache


def _listing(netns: str, table: str) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "table", "inet", table],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip
    return re.sub(r" expires \S+", "", out)


def test_text_and_json_renderings_build_the_same_table(netns: str) -> None:
    engine, cache = small_engine(FakeClock())
    backend = NftablesBackend()
    rendering = backend.render_structured(engine.datapath(), now=cache.clock())
    assert rendering.data is not None
    backend.apply(rendering, netns=netns)
    from_text = _listing(netns, backend.table)
    backend.remove(netns=netns)
    backend.use_json = True
    backend.apply(rendering, netns=netns)
    from_json = _listing(netns, backend.table)
    # nft 1.0.6's JSON parser drops the comments of sets and some chains (a line of their
    # own); rule comments (inline) it keeps, so everything else must be identical.
    own_line_comment = re.compile(r'\t\tcomment "[^"\n]*"\n')
    assert own_line_comment.sub("", from_json) == own_line_comment.sub("", from_text)
    assert "203.0.113.10 timeout 30s" in from_text


def test_reapplying_a_full_render_replaces_rules_and_keeps_learned_elements(netns: str) -> None:
    clock = FakeClock()
    engine, cache = small_engine(clock)
    backend = NftablesBackend()
    backend.apply(backend.render(engine.datapath(), now=clock()), netns=netns)
    answer(cache, "api.example.test", "203.0.113.20", ttl=30)
    backend.apply(backend.render(engine.datapath(), now=clock()), netns=netns)
    listing = _listing(netns, backend.table)
    assert "203.0.113.10" in listing
    assert "203.0.113.20" in listing
    assert listing.count("chain fwd_egress") == 1


def test_delta_refreshes_an_element_timeout_when_the_cache_extends_it(netns: str) -> None:
    clock = FakeClock()
    engine, cache = small_engine(clock)
    backend = NftablesBackend()
    deltas: list[Delta] = []
    engine.subscribe(deltas.extend)
    backend.apply(backend.render(engine.datapath(), now=clock()), netns=netns)
    clock.advance(10)
    answer(cache, "api.example.test", "203.0.113.10", "2001:db8:203::10", ttl=300)
    assert deltas
    backend.apply(backend.render_delta(deltas, now=clock()), netns=netns)
    listing = _listing(netns, backend.table)
    assert "203.0.113.10 timeout 5m" in listing, listing


def test_hostile_strings_from_policies_inject_nothing(netns: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "add", "table", "inet", "canary"],
        check=True,
        timeout=30,
    )
    hostile = policy(
        'evil" ; flush ruleset',
        egress=[rule("Log", destination=entity(selector="x == 'x\" ; flush ruleset'"))],
    )
    engine = PolicyEngine(
        ResourceSet(policies=(hostile,)), Cluster(endpoints=tuple(make_endpoints())), DNSCache()
    )
    backend = NftablesBackend()
    backend.apply(backend.render(engine.datapath(), now=0.0), netns=netns)
    tables = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "tables"],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip
    assert "table inet canary" in tables
    assert "table inet fqdnpolicy" in tables


def test_check_accepts_a_valid_rendering_and_reports_a_broken_one(kernel: None) -> None:
    engine, cache = small_engine(FakeClock())
    backend = NftablesBackend()
    full = backend.render(engine.datapath(), now=cache.clock())
    backend.check(full)
    backend.check(backend.render_delta([], now=cache.clock()))
    broken = Rendering("nftables", "full", full.text.replace("accept", "acept", 1))
    with pytest.raises(BackendError, match="nft refused"):
        backend.check(broken)


def test_remove_deletes_only_our_table_and_tolerates_absence(netns: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "add", "table", "inet", "other"],
        check=True,
        timeout=30,
    )
    engine, cache = small_engine(FakeClock())
    backend = NftablesBackend()
    backend.apply(backend.render(engine.datapath(), now=cache.clock()), netns=netns)
    backend.remove(netns=netns)
    backend.remove(netns=netns)
    listing = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "tables"],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip
    names = [t["table"]["name"] for t in json.loads(listing)["nftables"] if "table" in t]
    assert names == ["other"]
