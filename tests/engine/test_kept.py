"""Kept verdicts: a flow to an endpoint is served from both sides' kept verdicts.

What the Python shortcut at the top of ``PolicyEngine.verdict`` reads (the C shortcut reads the
same, and ``tests/engine/test_shortcut.py`` holds it to that).
"""

from __future__ import annotations

from fqdnpolicy.engine.kept import kept_to_endpoint
from tests.engine.test_bad_input import build


def test_a_receiver_no_policy_applies_to_needs_no_sender_identity() -> None:
    # db has no egress policy and web no ingress policy: the receiver allows whoever sends,
    # so the sender's identity is not looked up (here it is not even published).
    engine, _ = build()
    flow = ("prod/db", "10.0.0.10", "TCP", 80)
    expected = engine.verdict(*flow)  # judged and kept
    hosts = {k: v for k, v in engine._hosts.items() if k != "10.0.1.12"}
    record = engine.record("prod/db")
    assert record is not None
    found = kept_to_endpoint(
        hosts,
        engine._records,
        engine._owners,
        record.egress,
        engine.identity("10.0.0.10"),
        *flow,
    )
    assert found == expected


def test_a_receiver_with_policies_is_judged_for_the_sender() -> None:
    # db's ingress policy admits web: the sender's identity decides, so without it
    # published nothing is served.
    engine, _ = build()
    flow = ("default/web", "10.0.1.12", "TCP", 5432)
    assert engine.verdict(*flow).allowed
    record = engine.record("default/web")
    assert record is not None
    ident = engine.identity("10.0.1.12")
    served = kept_to_endpoint(
        engine._hosts, engine._records, engine._owners, record.egress, ident, *flow
    )
    assert served == engine.verdict(*flow)
    hosts = {k: v for k, v in engine._hosts.items() if k != "10.0.0.10"}
    assert (
        kept_to_endpoint(hosts, engine._records, engine._owners, record.egress, ident, *flow)
        is None
    )
