"""Element lifetimes on a real kernel: long ones are accepted, refreshes reach the kernel."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from fqdnpolicy_nftables import NftablesBackend

from fqdnpolicy.datapath import DatapathState, MemberChanged, SetState

pytestmark = pytest.mark.kernel

SET_ID = "d:lifetimes0000000000000"
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _state(members: dict[str, float | None]) -> DatapathState:
    return DatapathState((SetState(SET_ID, "domains", "lifetimes.test", members),), (), {})


def _expiries(netns: str) -> dict[str, float]:
    """Each element of the set as the kernel lists it, with its seconds left."""
    listed = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "nft",
            "list",
            "set",
            "inet",
            "fqdnpolicy",
            "d4_lifetimes0000000000000",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    found = {}
    for address, expires in re.findall(r"([\d.]+) timeout \S+ expires ([\dhdms]+)", listed):
        parts = re.findall(r"(\d+)(ms|d|h|m|s)", expires)
        found[address] = sum(int(n) * _UNIT_S[unit] for n, unit in parts)
    return found


@pytest.mark.parametrize("days", [7, 10])
def test_a_full_apply_holds_lifetimes_of_days(netns: str, days: int) -> None:
    now = 1000.0
    backend = NftablesBackend(use_library=False)
    backend.apply(
        backend.render(_state({"198.51.100.1": now + days * 86400}), now=now), netns=netns
    )
    left = _expiries(netns)["198.51.100.1"]
    assert days * 86400 - 60 < left <= days * 86400


def test_a_name_answered_again_with_the_same_ttl_never_expires_in_the_kernel(netns: str) -> None:
    ttl = 3.0
    backend = NftablesBackend(use_library=False)
    start = time.monotonic()
    backend.apply(backend.render(_state({"198.51.100.1": start + ttl}), now=start), netns=netns)
    # Answered again every two seconds with the same TTL, for well past the first expiry.
    while time.monotonic() < start + 3 * ttl:
        time.sleep(ttl - 1)
        now = time.monotonic()
        delta = backend.render_delta(
            [MemberChanged(SET_ID, "198.51.100.1", True, now + ttl)], now=now
        )
        backend.apply(delta, netns=netns)
        assert "198.51.100.1" in _expiries(netns)
    assert _expiries(netns)["198.51.100.1"] > ttl - 1.5
