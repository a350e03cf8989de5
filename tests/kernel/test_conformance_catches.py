"""The conformance kit fails a backend that does not enforce what the engine decides.

A kit that always passes proves nothing: here broken backends (nftables with a plausible
renderer bug each) must be reported, flow by flow, with the engine's explanation beside what
the kernel did; and a run too slow for the kit's timing must say so rather than blame the
backend.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from fqdnpolicy_nftables import NftablesBackend

from fqdnpolicy.backends import Rendering
from fqdnpolicy.datapath import DatapathState, Delta, MemberChanged, TierState
from fqdnpolicy.testing import SEEDS, ConformanceError, ConformanceFailure
from fqdnpolicy.testing.cases import RECORDS, REFRESH_NAME
from fqdnpolicy.testing.lab import DNS_SERVER
from fqdnpolicy.testing.plugin import ConformanceRunner

pytestmark = pytest.mark.kernel

DENY_RULE = re.compile(r"^verdict: Deny by .* (egress|ingress)\[\d+\]", re.MULTILINE)
REFRESHED = next(r.addresses for r in RECORDS if r.name == REFRESH_NAME)


def _without_deny_rules(tiers: tuple[TierState, ...]) -> tuple[TierState, ...]:
    return tuple(
        attrs.evolve(t, rules=tuple(r for r in t.rules if r.action != "Deny")) for t in tiers
    )


class ForgetsDenyRulesAndRefreshes(NftablesBackend):
    """nftables with two bugs: tiers rendered without their Deny rules, and a member added
    again (a DNS refresh, a later expiry) left as it was."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.known: set[tuple[str, str]] = set()

    def render(self, state: DatapathState, *, now: float) -> Rendering:
        self.known = {(s.set_id, m) for s in state.sets for m in s.members}
        endpoints = tuple(
            attrs.evolve(
                e, egress=_without_deny_rules(e.egress), ingress=_without_deny_rules(e.ingress)
            )
            for e in state.endpoints
        )
        return super().render(attrs.evolve(state, endpoints=endpoints), now=now)

    def render_delta(self, deltas: Sequence[Delta], *, now: float) -> Rendering:
        fresh = [
            d
            for d in deltas
            if not (isinstance(d, MemberChanged) and d.added and (d.set_id, d.member) in self.known)
        ]
        self.known |= {(d.set_id, d.member) for d in deltas if isinstance(d, MemberChanged)}
        return super().render_delta(fresh, now=now)


class DropsEverything(NftablesBackend):
    """nftables where every endpoint gets one tier that drops all (DNS included)."""

    def render(self, state: DatapathState, *, now: float) -> Rendering:
        closed = (TierState("closed", (), "Deny"),)
        endpoints = tuple(attrs.evolve(e, egress=closed, ingress=closed) for e in state.endpoints)
        return super().render(attrs.evolve(state, endpoints=endpoints), now=now)


class SlowDeltas(NftablesBackend):
    """nftables that takes longer to apply a delta than the short-lived name lives."""

    def apply(self, rendering: Rendering, *, netns: str | None = None) -> None:
        if rendering.kind == "delta":
            time.sleep(5)
        super().apply(rendering, netns=netns)


def test_a_backend_with_bugs_fails_with_every_wrong_flow_explained(
    backend_conformance: ConformanceRunner,
) -> None:
    seed = SEEDS[-1]
    with pytest.raises(ConformanceFailure) as caught:
        backend_conformance(ForgetsDenyRulesAndRefreshes, seed=seed, tools=("nft",))
    failure = caught.value
    let_through = [m for m in failure.mismatches if m.kernel]
    cut_short = [m for m in failure.mismatches if not m.kernel]
    # What got through is exactly what a Deny rule of the engine blocks...
    assert let_through
    for mismatch in let_through:
        assert not mismatch.engine
        assert DENY_RULE.search(mismatch.explanation), mismatch.explanation
    # ... and what was cut short is the refreshed name, in its extended lifetime.
    assert cut_short
    for mismatch in cut_short:
        assert (mismatch.phase, mismatch.engine) == ("expired", True)
        assert mismatch.flow.dst in REFRESHED
    message = str(failure)
    assert f"seed {seed}" in message
    assert f"check_backend({__name__}.ForgetsDenyRulesAndRefreshes, seed={seed})" in message
    first = failure.mismatches[0]
    assert str(first) in message  # the flow, the kernel's outcome and the explanation
    assert "kernel allowed, engine blocked" in str(first)


def test_a_backend_that_blocks_dns_the_engine_allows_fails_at_the_query(
    backend_conformance: ConformanceRunner,
) -> None:
    with pytest.raises(ConformanceFailure) as caught:
        backend_conformance(DropsEverything, seed=SEEDS[0], tools=("nft",))
    (mismatch,) = caught.value.mismatches
    assert mismatch.phase == "dns"
    assert (mismatch.flow.dst, mismatch.flow.protocol, mismatch.flow.port) == (
        DNS_SERVER,
        "udp",
        53,
    )
    assert (mismatch.kernel, mismatch.engine) == (False, True)
    assert "GlobalNetworkPolicy allow-dns egress[0]" in mismatch.explanation


def test_a_run_too_slow_for_the_lifetimes_is_an_error_not_a_failure(
    backend_conformance: ConformanceRunner,
) -> None:
    with pytest.raises(ConformanceError, match="too slow"):
        backend_conformance(SlowDeltas, seed=SEEDS[0], tools=("nft",))
