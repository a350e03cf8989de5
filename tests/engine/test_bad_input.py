"""``PolicyEngine.verdict`` refuses bad input with ``InvalidPolicy``, and refusing is harmless.

Bad input: an endpoint key the engine does not hold (as source or destination), text that is
not an address, a port or source port outside 0-65535 or not an ``int`` (``True``, ``"443"``
and ``443.0`` are not ports, though two of them compare equal to one), a protocol that is no
name Calico knows and no number 1-255, an ICMP type or code outside 0-255, a direction other
than ``"egress"`` and ``"ingress"``. The message names the bad value.

Refusing is harmless: the same bad call is refused again however often it is repeated (no
cache turns it into a verdict, even after a good call that compares equal), and it changes
nothing (good flows get the verdicts they got before). The edges of every range are valid.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fqdnpolicy.cluster import Cluster, Namespace
from fqdnpolicy.engine import PolicyEngine, Verdict
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.model import ResourceSet
from tests.engine.strategies import (
    Answer,
    FlowSpec,
    LearnAnswer,
    entity,
    pod,
    policy,
    rule,
)
from tests.engine.worlds_threads import Applier, Outcome, Snapshot, outcome, reference_outcome

API = "198.51.100.1"  # api.example.com


def build() -> tuple[PolicyEngine, Snapshot]:
    """web may reach api.example.com, the db on 5432 and anything by UDP; db takes web's."""
    web = pod("default/web", "10.0.0.10", "fd00::a", labels={"app": "web"})
    db = pod("prod/db", "10.0.1.12", labels={"app": "db"})
    web_egress = policy(
        "web-egress",
        namespace="default",
        selector='app == "web"',
        egress=[
            rule("Allow", protocol="TCP", destination=entity(domains=["api.example.com"])),
            rule(
                "Allow",
                protocol="TCP",
                destination=entity(
                    selector='app == "db"', namespace_selector="all()", ports=[5432]
                ),
            ),
            rule("Allow", protocol="ICMP", icmp=(8, None)),
            rule("Allow", protocol="UDP", source=entity(ports=["1024:65535"])),
        ],
    )
    db_ingress = policy(
        "db-ingress",
        namespace="prod",
        selector='app == "db"',
        ingress=[rule("Allow", source=entity(selector='app == "web"', namespace_selector="all()"))],
    )
    world = Applier(
        ResourceSet((web_egress, db_ingress)),
        Cluster((web, db), (Namespace("default"), Namespace("prod"))),
    )
    world.apply(LearnAnswer(Answer("api.example.com", (), (API,))))
    return world.build_engine(), world.snapshot()


@pytest.fixture
def engine() -> PolicyEngine:
    return build()[0]


@attrs.frozen
class Bad:
    """A ``verdict()`` call with one bad argument."""

    bad: object  # the bad value, which the message must name
    kwargs: dict[str, Any]


def call(bad: object, **changes: Any) -> Bad:
    """web -> api.example.com:443/TCP egress, with ``changes`` making it bad."""
    kwargs: dict[str, Any] = {"src": "default/web", "dst": API, "protocol": "TCP", "port": 443}
    return Bad(bad, {**kwargs, **changes})


def field(name: str, *values: object, **base: Any) -> list[Any]:
    """One case per bad value of an argument, with its id."""
    return [pytest.param(call(v, **base, **{name: v}), id=f"{name}={v!r}") for v in values]


BAD: list[Any] = [
    pytest.param(call("default/nope", src="default/nope"), id="unknown-source"),
    pytest.param(call("prod/nope", dst="prod/nope"), id="unknown-destination"),
    pytest.param(
        call("prod/nope", src="default/web", dst="prod/nope", direction="ingress"),
        id="unknown-ingress-destination",
    ),
    *field("dst", "999.1.1.1", "1.2.3", "abc", "", "10.0.0.1/24", "10.0.0.\u0661"),
    *[
        pytest.param(call(v, src=v, dst="prod/db", direction="ingress"), id=f"ingress-src={v!r}")
        for v in ("999.1.1.1", "abc")
    ],
    *field("port", 70000, -1, 65536, True, "443", 443.0),
    *field("protocol", "FOO", 0, 256, -6),
    *field("src_port", 70000, -1, 65536),
    *field("icmp_type", 256, -1, protocol="ICMP", port=None),
    *field("icmp_code", 256, -1, protocol="ICMP", port=None, icmp_type=8),
    # To an endpoint: a direction taken for another would still find a verdict.
    *field("direction", "out", "Egress", "INGRESS", "", dst="prod/db"),
]

GOOD: tuple[FlowSpec, ...] = (
    FlowSpec("default/web", API, "TCP", 443, "egress"),
    FlowSpec("default/web", "198.51.100.2", "TCP", 443, "egress"),
    FlowSpec("default/web", "prod/db", "TCP", 5432, "egress"),
    FlowSpec("default/web", "10.0.1.12", "TCP", 5433, "egress"),
    FlowSpec("default/web", API, "UDP", 53, "egress", src_port=40000),
    FlowSpec("default/web", API, "ICMP", None, "egress", icmp_type=8, icmp_code=0),
    FlowSpec("default/web", "prod/db", "TCP", 5432, "ingress"),
    FlowSpec("192.0.2.7", "prod/db", "TCP", 5432, "ingress"),
)


def names(value: object, message: str) -> bool:
    """Whether ``message`` names ``value`` (a whole token, not part of a longer one)."""
    text = value if isinstance(value, str) and value else repr(value)
    return re.search(rf"(?<![\w.-]){re.escape(text)}(?![\w.])", message) is not None


def judged(engine: PolicyEngine) -> list[Outcome]:
    return [outcome(engine.verdict(**flow.kwargs())) for flow in GOOD]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_and_the_message_names_it(engine: PolicyEngine, case: Bad) -> None:
    with pytest.raises(InvalidPolicy) as refused:
        engine.verdict(**case.kwargs)
    assert names(case.bad, str(refused.value)), str(refused.value)


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_every_time_it_is_repeated(engine: PolicyEngine, case: Bad) -> None:
    for _ in range(3):
        with pytest.raises(InvalidPolicy):
            engine.verdict(**case.kwargs)


@pytest.mark.parametrize("case", BAD)
def test_bad_input_changes_nothing(engine: PolicyEngine, case: Bad) -> None:
    before = judged(engine)
    with pytest.raises(InvalidPolicy):
        engine.verdict(**case.kwargs)
    assert judged(engine) == before


@pytest.mark.parametrize(
    ("good", "bad"),
    [(1, True), (0, False), (443, 443.0), (53, 53.0)],
    ids=["True==1", "False==0", "443.0==443", "53.0==53"],
)
def test_a_bad_port_equal_to_a_judged_good_one_is_still_refused(
    engine: PolicyEngine, good: int, bad: Any
) -> None:
    assert good == bad  # and hash alike: a cache keyed on the arguments would mix them up
    engine.verdict("default/web", API, "TCP", good)
    with pytest.raises(InvalidPolicy):
        engine.verdict("default/web", API, "TCP", bad)
    with pytest.raises(InvalidPolicy):
        engine.verdict("default/web", API, "TCP", 443, src_port=bad)


def test_a_protocol_that_is_a_bool_is_refused_after_its_number_was_judged(
    engine: PolicyEngine,
) -> None:
    assert hash(True) == hash(1)  # and they compare equal: one dict key
    engine.verdict("default/web", "198.51.100.2", 1, 443)
    engine.verdict("default/web", "198.51.100.2", 1, 443)  # now kept under protocol 1
    with pytest.raises(InvalidPolicy):
        engine.verdict("default/web", "198.51.100.2", True, 443)


EDGES: list[Any] = [
    pytest.param({"port": 0}, id="port=0"),
    pytest.param({"port": 65535}, id="port=65535"),
    pytest.param({"port": None}, id="port=None"),
    pytest.param({"protocol": "UDP", "src_port": 0}, id="src_port=0"),
    pytest.param({"protocol": "UDP", "src_port": 65535}, id="src_port=65535"),
    pytest.param({"protocol": 1, "port": None}, id="protocol=1"),
    pytest.param({"protocol": 255, "port": None}, id="protocol=255"),
    pytest.param({"protocol": "tcp"}, id="protocol=tcp"),
    pytest.param({"protocol": "ICMP", "port": None, "icmp_type": 0, "icmp_code": 0}, id="icmp=0/0"),
    pytest.param(
        {"protocol": "ICMP", "port": None, "icmp_type": 255, "icmp_code": 255}, id="icmp=255/255"
    ),
    pytest.param({"direction": "ingress", "dst": "prod/db"}, id="ingress"),
]


@pytest.mark.parametrize("changes", EDGES)
def test_the_edges_of_every_range_are_valid(changes: dict[str, Any]) -> None:
    engine, state = build()
    kwargs: dict[str, Any] = {"src": "default/web", "dst": API, "protocol": "TCP", "port": 443}
    flow = FlowSpec(**{"direction": "egress", **kwargs, **changes})
    got = engine.verdict(**flow.kwargs())
    assert isinstance(got, Verdict)
    assert outcome(got) == reference_outcome(state, flow)


# ----------------------------------------------------------------------------- every number


@pytest.fixture(scope="module")
def shared() -> tuple[PolicyEngine, Snapshot]:
    """One engine for every example: the tests below only read it."""
    return build()


@given(st.integers(max_value=-1) | st.integers(min_value=65536))
def test_every_port_outside_0_to_65535_is_refused(
    shared: tuple[PolicyEngine, Snapshot], port: int
) -> None:
    engine = shared[0]
    with pytest.raises(InvalidPolicy):
        engine.verdict("default/web", API, "TCP", port)
    with pytest.raises(InvalidPolicy):
        engine.verdict("default/web", API, "UDP", 53, src_port=port)


@given(st.integers(0, 65535), st.sampled_from(("TCP", "UDP", "SCTP")))
def test_every_port_in_0_to_65535_is_judged(
    shared: tuple[PolicyEngine, Snapshot], port: int, protocol: str
) -> None:
    engine, state = shared
    flow = FlowSpec("default/web", API, protocol, port, "egress", src_port=port)
    assert outcome(engine.verdict(**flow.kwargs())) == reference_outcome(state, flow)


@given(st.integers(max_value=0) | st.integers(min_value=256))
def test_every_protocol_number_outside_1_to_255_is_refused(
    shared: tuple[PolicyEngine, Snapshot], protocol: int
) -> None:
    engine = shared[0]
    with pytest.raises(InvalidPolicy):
        engine.verdict("default/web", API, protocol, None)


@given(
    st.sampled_from(("icmp_type", "icmp_code")),
    st.integers(max_value=-1) | st.integers(min_value=256),
)
def test_every_icmp_type_and_code_outside_0_to_255_is_refused(
    shared: tuple[PolicyEngine, Snapshot], name: str, value: int
) -> None:
    engine = shared[0]
    icmp_type, icmp_code = (value, 0) if name == "icmp_type" else (8, value)
    with pytest.raises(InvalidPolicy):
        engine.verdict("default/web", API, "ICMP", None, icmp_type=icmp_type, icmp_code=icmp_code)


@given(st.integers(0, 255), st.integers(0, 255))
def test_every_icmp_type_and_code_in_0_to_255_is_judged(
    shared: tuple[PolicyEngine, Snapshot], icmp_type: int, icmp_code: int
) -> None:
    engine, state = shared
    flow = FlowSpec("default/web", API, "ICMP", None, "egress", None, icmp_type, icmp_code)
    assert outcome(engine.verdict(**flow.kwargs())) == reference_outcome(state, flow)
