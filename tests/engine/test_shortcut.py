"""The C shortcut in front of ``PolicyEngine.verdict`` answers exactly as the Python method.

Where the extension was built (a C compiler and Python's headers at install time), each
engine's ``verdict`` is the shortcut: it serves the common question from the same published
objects the Python method reads, and hands every other call to the Python method unchanged.
So for any arguments, positional or by keyword, good or bad, the shortcut gives the same
verdict or raises the same error as ``PolicyEngine.verdict`` called on the class, whichever of
the two judged the flow first. It re-reads when a change is published while it looks up, it
follows every published change, and it steps aside for a subclass that overrides ``verdict``.

CI builds the extension and sets ``FQDNPOLICY_REQUIRE_NATIVE=1``: there, a missing extension
fails instead of skipping.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.cluster import Cluster, Namespace
from fqdnpolicy.engine import PolicyEngine, shortcut
from fqdnpolicy.engine.identities import canonical_ip
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.model import ResourceSet
from tests.engine.strategies import entity, pod, policy, rule
from tests.engine.test_bad_input import API, build
from tests.engine.worlds_threads import Applier

if not shortcut.NATIVE:
    if os.environ.get("FQDNPOLICY_REQUIRE_NATIVE") == "1":
        pytest.fail("the C shortcut was not built (FQDNPOLICY_REQUIRE_NATIVE=1)")
    pytest.skip(
        "the C shortcut was not built (no C compiler or Python headers at install time)",
        allow_module_level=True,
    )

python_verdict = PolicyEngine.verdict

SOURCES = ("default/web", "prod/db", "default/nope", "198.51.100.9", 7, ["default/web"])
DESTINATIONS = (
    API,
    "198.51.100.2",
    "203.0.113.5",
    "10.0.1.12",
    "10.0.0.10",
    "fd00::a",
    "2001:db8::1",
    "prod/db",
    "999.1.1.1",
    "abc",
    "",
    "010.0.1.12",
)
PROTOCOLS = ("TCP", "UDP", "ICMP", "tcp", 6, 17, 1, True, "FOO", 0, 256, 6.0, None)
PORTS = (443, 5432, 53, 5433, None, 0, 65535, 70000, -1, True, False, 443.0, "443")
DIRECTIONS = ("egress", "ingress", "Egress", "out")
OPTIONAL = (None, None, None, 0, 8, 40000, 256, True)


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[str, object]:
    """What a call gave: its verdict, or its error's type and message."""
    try:
        return ("verdict", call(*args, **kwargs))
    except (InvalidPolicy, TypeError) as error:
        return (type(error).__name__, str(error))


@pytest.fixture(scope="module")
def engines() -> tuple[PolicyEngine, PolicyEngine]:
    """Two engines alike: the shortcut of one judges first, the Python method of the other."""
    return build()[0], build()[0]


def test_each_engine_gets_the_shortcut_and_it_follows_every_published_change() -> None:
    engine = build()[0]
    assert isinstance(engine.verdict, shortcut.Shortcut)
    assert engine.verdict.snapshot is engine._snapshot
    deny = policy(
        "web-deny", namespace="default", order=1, selector='app == "web"', egress=[rule("Deny")]
    )
    engine.upsert_policy(deny)
    assert engine.verdict.snapshot is engine._snapshot
    assert not engine.verdict("default/web", API, "TCP", 443).allowed
    engine.remove_policy(deny)
    assert engine.verdict.snapshot is engine._snapshot
    assert engine.verdict("default/web", API, "TCP", 443).allowed


def test_the_shortcut_carries_the_python_method_docs() -> None:
    engine = build()[0]
    assert engine.verdict.__doc__ == python_verdict.__doc__


@settings(max_examples=400, deadline=None)
@given(
    src=st.sampled_from(SOURCES),
    dst=st.sampled_from(DESTINATIONS),
    protocol=st.sampled_from(PROTOCOLS),
    port=st.sampled_from(PORTS),
    direction=st.sampled_from(DIRECTIONS),
    optional=st.lists(st.sampled_from(OPTIONAL), max_size=3),
    positional=st.integers(2, 8),
    shortcut_first=st.booleans(),
)
def test_any_call_gets_what_the_python_method_gives(
    engines: tuple[PolicyEngine, PolicyEngine],
    src: object,
    dst: object,
    protocol: object,
    port: object,
    direction: object,
    optional: list[object],
    positional: int,
    shortcut_first: bool,
) -> None:
    values = [src, dst, protocol, port, direction, *optional, None, None, None][:8]
    names = ("src", "dst", "protocol", "port", "direction", "src_port", "icmp_type", "icmp_code")
    args = values[:positional]
    kwargs = dict(zip(names[positional:], values[positional:], strict=True))
    first, second = engines if shortcut_first else engines[::-1]
    # The engine judging first fills kept verdicts the other then serves, and the reverse.
    got = outcome(first.verdict, *args, **kwargs)
    expected = outcome(python_verdict, second, *args, **kwargs)
    assert got == expected
    assert outcome(second.verdict, *args, **kwargs) == expected
    assert outcome(python_verdict, first, *args, **kwargs) == got


OUTSIDE = "198.51.100.2"  # in no set web's program names: judged by its family's verdict


def test_values_that_hash_like_a_kept_key_are_still_refused_positionally() -> None:
    verdict: Any = build()[0].verdict  # called with what its signature refuses
    for protocol, port in (("TCP", 443), ("TCP", 1), (1, 443), (6, 443)):
        verdict("default/web", OUTSIDE, protocol, port)  # now kept
    refused: list[tuple[object, object]] = [
        ("TCP", 443.0),
        ("TCP", True),
        (True, 443),
        ("TCP", "443"),
    ]
    for bad_protocol, bad_port in refused:
        with pytest.raises(InvalidPolicy):
            verdict("default/web", OUTSIDE, bad_protocol, bad_port)


def test_a_source_port_or_icmp_field_is_never_answered_from_the_common_verdict() -> None:
    engine = build()[0]
    # web may send UDP from ports 1024-65535: a flow without a source port is not allowed.
    assert not engine.verdict("default/web", OUTSIDE, "UDP", 53).allowed  # now kept
    assert engine.verdict("default/web", OUTSIDE, "UDP", 53, "egress", 40000).allowed
    assert not engine.verdict("default/web", OUTSIDE, "ICMP", 0).allowed
    assert engine.verdict("default/web", OUTSIDE, "ICMP", 0, "egress", None, 8).allowed


def test_another_direction_is_never_answered_from_the_egress_verdict() -> None:
    verdict: Any = build()[0].verdict  # called with what its signature refuses
    verdict("default/web", OUTSIDE, "TCP", 443)  # now kept
    assert verdict("default/web", OUTSIDE, "TCP", 443, "egress") is not None
    for direction in ("ingress", "Egress", "out"):
        with pytest.raises(InvalidPolicy):
            verdict("default/web", OUTSIDE, "TCP", 443, direction)


def test_a_peer_in_one_of_the_programs_sets_never_gets_the_others_verdict() -> None:
    engine = build()[0]
    assert not engine.verdict("default/web", OUTSIDE, "TCP", 443).allowed  # kept for all others
    for _ in range(2):
        assert engine.verdict("default/web", API, "TCP", 443).allowed  # in web's domain set


@pytest.mark.parametrize("covering", [1, 2, 3, 4, 5])
def test_a_peer_in_several_sets_is_told_apart_by_each_of_them(covering: int) -> None:
    # The address is in ``covering`` nested CIDR sets and one rule only can match TCP to 443:
    # the one naming the j-th. Whichever set that is (an identity holds its first bits in
    # its own fields, more in a tuple), the shortcut must not serve the verdict kept for
    # peers in none of the slice's sets.
    nets = [f"198.51.100.0/{24 + i}" for i in range(covering)]
    for j in range(covering):
        web = pod("default/web", "10.0.0.10", labels={"app": "web"})
        egress = [
            rule(
                "Allow",
                protocol="TCP",
                destination=entity(nets=[net], ports=[443 if i == j else 80]),
            )
            for i, net in enumerate(nets)
        ]
        world = Applier(
            ResourceSet((policy("web", namespace="default", selector="all()", egress=egress),)),
            Cluster((web,), (Namespace("default"),)),
        )
        engine = world.build_engine()
        assert not engine.verdict("default/web", "203.0.113.5", "TCP", 443).allowed  # kept, plain
        assert len(engine.identity("198.51.100.1")) == covering
        for _ in range(2):  # judged, then kept under its view
            assert engine.verdict("default/web", "198.51.100.1", "TCP", 443).allowed, (covering, j)


def test_a_port_judged_for_one_protocol_is_judged_again_for_another() -> None:
    # API is in web's domain set, which only a TCP rule names: to port 443 by UDP it is like
    # any address (denied), by TCP allowed. The port's slice is first made for UDP.
    engine = build()[0]
    for _ in range(2):  # judged, then kept: each protocol its own
        assert not engine.verdict("default/web", API, "UDP", 443).allowed
        assert engine.verdict("default/web", API, "TCP", 443).allowed
        assert engine.verdict("default/web", API, 6, 443).allowed


def test_a_flow_to_an_endpoint_is_answered_by_both_sides() -> None:
    engine = build()[0]
    # x has no egress policy; db takes only web's traffic: x -> db is denied by db's ingress.
    engine.upsert_endpoint(pod("default/x", "10.0.0.99", labels={"app": "x"}))
    first = engine.verdict("default/x", "10.0.1.12", "TCP", 5432)  # now kept, both sides
    again = engine.verdict("default/x", "10.0.1.12", "TCP", 5432)
    assert first == again == python_verdict(engine, "default/x", "10.0.1.12", "TCP", 5432)
    assert not again.allowed
    assert again.direction == "ingress"
    # db -> x: db has no egress policy and x no ingress policy: allowed by both.
    engine.verdict("prod/db", "10.0.0.99", "TCP", 80)
    assert engine.verdict("prod/db", "10.0.0.99", "TCP", 80).allowed


octet = st.one_of(
    st.integers(0, 255).map(str),
    st.integers(0, 999).map(str),
    st.integers(0, 99).map(lambda n: f"0{n}"),
    st.sampled_from(["", "x", "-1", "+1", " 1", "\u0661"]),
)


@settings(max_examples=300, deadline=None)
@given(
    octets=st.lists(octet, min_size=3, max_size=5),
    separator=st.sampled_from([".", ".", ".", ":", ".."]),
)
def test_an_address_met_first_by_the_shortcut_is_resolved_as_python_does(
    engines: tuple[PolicyEngine, PolicyEngine], octets: list[str], separator: str
) -> None:
    address = separator.join(octets)
    engine, reference = engines
    assert outcome(engine.verdict, "default/web", address, "TCP", 443) == outcome(
        python_verdict, reference, "default/web", address, "TCP", 443
    )
    # Only canonical text is ever cached: other spellings are parsed again each time.
    cached = engine._snapshot.prefixes.outside
    assert address not in cached or canonical_ip(address) == address


def test_the_outside_cache_starts_over_at_its_limit() -> None:
    engine = build()[0]
    small = shortcut.Shortcut(
        engine._snapshot,
        engine._hosts,
        engine._records,
        engine._owners,
        python_verdict.__get__(engine),
        3,
    )
    outside = engine._snapshot.prefixes.outside
    for last in range(10, 20):
        address = f"203.0.113.{last}"
        assert small("default/web", address, "TCP", 443) == python_verdict(
            engine, "default/web", address, "TCP", 443
        )
        assert 0 < len(outside) <= 3


def counting(
    engine: PolicyEngine, hosts: dict[str, Any] | None = None
) -> tuple[shortcut.Shortcut, list[object]]:
    """A shortcut over ``engine``'s published state (or other ``hosts``), and the calls it
    hands to the Python method."""
    asked: list[object] = []

    def general(*args: Any) -> object:
        asked.append(args)
        return python_verdict(engine, *args)

    published = engine._hosts if hosts is None else hosts
    counted = shortcut.Shortcut(
        engine._snapshot, published, engine._records, engine._owners, general, 1 << 20
    )
    return counted, asked


def test_peers_in_the_programs_sets_are_answered_without_the_python_method() -> None:
    engine = build()[0]
    counted, asked = counting(engine)
    # web's domain set holds API; its selector set holds db's address (an endpoint's).
    flows: list[tuple[str, str, str, int]] = [
        ("default/web", API, "TCP", 443),
        ("default/web", "10.0.1.12", "TCP", 5432),
    ]
    for flow in flows:
        python_verdict(engine, *flow)  # judged, as the first asker would
    for _ in range(2):  # each kept under the peer's view by the first asker
        assert [counted(*flow) for flow in flows] == [python_verdict(engine, *f) for f in flows]
    assert asked == []


def test_a_receiver_no_policy_applies_to_is_served_without_the_senders_identity() -> None:
    # db has no egress policy and web no ingress policy: once judged, a flow from db to web
    # is the sender's kept verdict alone, whatever the sender's identity (here not even
    # published): its lookup is skipped.
    engine = build()[0]
    flow = ("prod/db", "10.0.0.10", "TCP", 80)
    expected = python_verdict(engine, *flow)  # judged, as the first asker would
    counted, asked = counting(engine, {k: v for k, v in engine._hosts.items() if k != "10.0.1.12"})
    assert counted(*flow) == expected
    assert asked == []


class Hook(str):
    """A protocol name whose hash or comparison publishes a change, once: a writer running
    mid-lookup."""

    __slots__ = ()
    change: Any = None

    @staticmethod
    def _run() -> None:
        change, Hook.change = Hook.change, None
        if change is not None:
            change()

    def __hash__(self) -> int:
        Hook._run()
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        Hook._run()
        return str.__eq__(self, other)


def test_a_change_published_during_the_lookup_is_not_missed() -> None:
    engine = build()[0]
    assert not engine.verdict("default/web", OUTSIDE, "TCP", 443).allowed  # now kept
    allow = policy(
        "web-allow", namespace="default", order=1, selector='app == "web"', egress=[rule("Allow")]
    )
    held = engine._shortcut
    assert held is not None
    before = held.snapshot
    Hook.change = lambda: engine.upsert_policy(allow)
    found = engine.verdict("default/web", OUTSIDE, Hook("TCP"), 443)
    assert held.snapshot is not before  # the change did run inside the call
    assert found.allowed
    assert found == python_verdict(engine, "default/web", OUTSIDE, "TCP", 443)


def test_a_subclass_overriding_verdict_gets_no_shortcut() -> None:
    class Audited(PolicyEngine):
        def verdict(self, *args: Any, **kwargs: Any) -> Any:
            return super().verdict(*args, **kwargs)

    world = Applier(ResourceSet(()), Cluster((pod("default/web", "10.0.0.10"),), ()))
    audited = Audited(world.resources, world.cluster, world.dns)
    assert "verdict" not in vars(audited)
    assert audited.verdict("default/web", API, "TCP", 443).allowed
