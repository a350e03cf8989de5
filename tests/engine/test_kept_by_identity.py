"""A program keeps the verdicts readers asked for by the peer's identity, within a bound.

The sender's program, the destination's identity, then the program's verdict under
``(identity, protocol as asked, port)``: a flow asked before is answered without reading
anything of the identity (it is kept so the second time it is asked, once judged). These
are verdicts the program also keeps as judged (under the peer's family, or its view), so
they are filled from there, never judged twice; each program keeps at most the published
snapshot's limit of them and starts over when full; flows to an endpoint's address are
never kept by identity, because the receiver's side decides them too and it changes
without the sender's program changing.

Both readers keep them alike: the C shortcut (where built) and the Python method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fqdnpolicy.engine import PolicyEngine, programs, shortcut
from fqdnpolicy.engine.programs import by_identity_limit
from fqdnpolicy.errors import InvalidPolicy
from tests.engine.strategies import pod, policy, rule
from tests.engine.test_bad_input import API, build

OUTSIDE = "198.51.100.2"  # in none of web's sets
DB = "10.0.1.12"  # prod/db's address

Reader = Callable[..., Any]


def readers() -> list[Any]:
    python = pytest.param(lambda engine: PolicyEngine.verdict.__get__(engine), id="python")
    native = pytest.param(
        lambda engine: engine.verdict,
        id="shortcut",
        marks=pytest.mark.skipif(not shortcut.NATIVE, reason="the C shortcut was not built"),
    )
    return [python, native]


@pytest.fixture(params=readers())
def reader_of(request: pytest.FixtureRequest) -> Callable[[PolicyEngine], Reader]:
    return request.param  # type: ignore[no-any-return]


def test_a_flow_asked_before_is_kept_under_the_peers_identity(
    reader_of: Callable[[PolicyEngine], Reader],
) -> None:
    engine = build()[0]
    verdict = reader_of(engine)
    web = engine._snapshot.egress["default/web"]
    for address in (OUTSIDE, API):  # in none of web's sets; in its domain set
        first = verdict("default/web", address, "TCP", 443)  # judged, kept as judged
        assert verdict("default/web", address, "TCP", 443) == first  # and now by identity
        assert web.get((engine.identity(address), "TCP", 443)) == first
        assert verdict("default/web", address, "TCP", 443) == first
    assert not verdict("default/web", OUTSIDE, "TCP", 443).allowed
    assert verdict("default/web", API, "TCP", 443).allowed


def test_invalid_arguments_that_hash_alike_are_never_served(
    reader_of: Callable[[PolicyEngine], Reader],
) -> None:
    engine = build()[0]
    verdict = reader_of(engine)
    verdict("default/web", OUTSIDE, "TCP", 443)
    verdict("default/web", OUTSIDE, 1, 443)
    for protocol, port in (("TCP", 443.0), ("TCP", True), (True, 443)):
        with pytest.raises(InvalidPolicy):
            verdict("default/web", OUTSIDE, protocol, port)


def test_each_program_keeps_at_most_the_published_limit(
    reader_of: Callable[[PolicyEngine], Reader], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "BY_IDENTITY_BUDGET", 1)
    monkeypatch.setattr(programs, "PER_PROGRAM_MIN", 3)
    engine = build()[0]
    assert engine._snapshot.limit == by_identity_limit(10**6) == 3
    verdict = reader_of(engine)
    web = engine._snapshot.egress["default/web"]
    reference = build()[0]  # judged apart, so only the reader under test keeps in ``web``
    for port in range(1000, 1020):
        expected = PolicyEngine.verdict(reference, "default/web", OUTSIDE, "TCP", port)
        for _ in range(2):  # judged, then kept by identity
            assert verdict("default/web", OUTSIDE, "TCP", port) == expected
        assert 0 < len(web) <= 3


def test_the_limit_shrinks_as_programs_grow() -> None:
    assert by_identity_limit(1) == programs.BY_IDENTITY_BUDGET
    assert by_identity_limit(4) == programs.BY_IDENTITY_BUDGET // 4
    assert by_identity_limit(10**9) == programs.PER_PROGRAM_MIN


def test_a_flow_to_an_endpoint_follows_the_receivers_change(
    reader_of: Callable[[PolicyEngine], Reader],
) -> None:
    engine = build()[0]
    engine.upsert_endpoint(pod("default/x", "10.0.0.99", labels={"app": "x"}))
    verdict = reader_of(engine)
    sender = engine._snapshot.egress["default/x"]
    for _ in range(2):
        assert not verdict("default/x", DB, "TCP", 5432).allowed  # db takes only web's
    assert all(key[0] is not engine.identity(DB) for key in sender)
    # The receiver's policy changes; the sender's program does not.
    engine.upsert_policy(
        policy(
            "db-ingress",
            namespace="prod",
            selector='app == "db"',
            ingress=[rule("Allow")],
        )
    )
    assert engine._snapshot.egress["default/x"] is sender
    assert verdict("default/x", DB, "TCP", 5432).allowed
