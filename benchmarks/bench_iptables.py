"""iptables+ipset backend speed, beside the nftables backend's in the same run.

Targets (issue 14): the full render of the benchmark workload in < 5 s; 10,000 set elements
applied in < 200 ms; a delta of 1,000 new addresses rendered and applied in < 50 ms. Each
is measured for ``iptables`` (both variants where the kernel is involved) and ``nftables``
on the same input, so the figures compare within one run.

* full render: ``PolicyEngine.datapath()`` of the engine's benchmark workload
  (fqdnpolicy.workload.FULL_SIZE scaled by FQDNPOLICY_BENCH_SCALE, as in bench_engine.py);
  building it takes about half a minute and a gigabyte, once per module. ``render`` of each
  backend: what ``apply`` takes (for nftables the text, without the JSON form);
* kernel: one set of 10,000 IPv6 addresses (2001:db8::/32), and deltas of 1,000 new ones, in
  a scratch namespace created and deleted here; they need root, ``ipset``, the iptables
  variant's tools and ``nft``, and are skipped without.
"""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from itertools import count

import pytest
from fqdnpolicy_iptables import IptablesBackend
from fqdnpolicy_nftables import NftablesBackend

from fqdnpolicy.backends import Backend
from fqdnpolicy.datapath import (
    DatapathState,
    EndpointState,
    MemberChanged,
    RuleState,
    SetState,
    TierState,
)
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.workload import FULL_SIZE, generate

NOW = 1000.0
SCALE = float(os.environ.get("FQDNPOLICY_BENCH_SCALE", "1.0"))
BACKENDS = ["iptables-nft", "iptables-legacy", "nftables"]


def make(which: str) -> Backend:
    if which == "nftables":
        return NftablesBackend()
    return IptablesBackend(variant=which.removeprefix("iptables-"))  # type: ignore[arg-type]


# ------------------------------------------------------------------ the engine's workload


@pytest.fixture(scope="module")
def engine_state() -> tuple[DatapathState, float]:
    workload = generate(FULL_SIZE.scaled(SCALE), seed=1)
    engine = PolicyEngine(workload.resources, workload.cluster, workload.dns)
    gc.collect()
    gc.freeze()  # as an embedding agent does after building (docs/development.md)
    return engine.datapath(), workload.dns.clock()


@pytest.mark.parametrize("which", ["iptables", "nftables"])
def test_render_full_of_the_engine_workload(  # type: ignore[no-untyped-def]
    benchmark, engine_state: tuple[DatapathState, float], which: str
) -> None:
    state, now = engine_state
    backend = make("iptables-nft" if which == "iptables" else which)
    rendering = benchmark.pedantic(lambda: backend.render(state, now=now), rounds=3, iterations=1)
    benchmark.extra_info["text_mb"] = round(len(rendering.text) / 1e6, 1)
    assert not rendering.skipped
    elements = sum(len(s.members) for s in state.sets)
    if which == "iptables":
        assert rendering.text.count("\nadd ") >= 0.9 * elements


# ----------------------------------------------------------------------------- kernel


def _address(n: int) -> str:
    return f"2001:db8::{n >> 16:x}:{n & 0xFFFF:x}"


def small_state(members: int = 0) -> DatapathState:
    rule = RuleState(
        "GlobalNetworkPolicy p", "default", 0, "Allow", (4, 6), protocol=6, peer_in=("d:A",)
    )
    endpoint = EndpointState(
        "ns/pod", "cali0", ("198.51.100.10",), (TierState("default", (rule,), "Deny"),), ()
    )
    ipset = SetState(
        "d:A", "domains", "*.example.com", {_address(i): NOW + 60 for i in range(members)}
    )
    return DatapathState((ipset,), (endpoint,), {})


@pytest.fixture
def scratch(request: pytest.FixtureRequest) -> Iterator[str]:
    which = request.node.callspec.params["which"]
    tools = ["ip", "nft"] if which == "nftables" else ["ip", "ipset", f"{which}-restore"]
    if os.geteuid() != 0 or not all(shutil.which(t) for t in tools):
        pytest.skip(f"needs root and {', '.join(tools)}")
    name = f"fqi-bench-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


@pytest.mark.parametrize("which", BACKENDS)
def test_apply_10000_set_elements(benchmark, scratch: str, which: str) -> None:  # type: ignore[no-untyped-def]
    backend = make(which)
    rendering = backend.render(small_state(10_000), now=NOW)
    # Every round replaces a live state: the sets exist, so iptables swaps them in.
    benchmark.pedantic(lambda: backend.apply(rendering, netns=scratch), rounds=10, iterations=1)


@pytest.mark.parametrize("which", BACKENDS)
def test_delta_of_1000_new_addresses_render_and_apply(  # type: ignore[no-untyped-def]
    benchmark, scratch: str, which: str
) -> None:
    backend = make(which)
    backend.apply(backend.render(small_state(), now=NOW), netns=scratch)
    batches = count(1)

    def one() -> None:
        base = next(batches) * 1000
        deltas = [MemberChanged("d:A", _address(base + i), True, NOW + 60) for i in range(1000)]
        backend.apply(backend.render_delta(deltas, now=NOW), netns=scratch)

    benchmark.pedantic(one, rounds=20, iterations=1)
