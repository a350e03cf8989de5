"""``PolicyEngine.verdict_array`` judges a batch of egress flows at once, as ``verdict`` would.

The contract: element ``i`` of the returned NumPy bool array is
``engine.verdict(src[i], dst[i], protocol_i, port_i).allowed``. Sources are endpoint keys
(a sequence or an array of ``str``) or an integer array of indices into
``engine.endpoint_keys()`` (the keys, sorted); destinations are address text (IPv4 or IPv6) or
an integer array of packed IPv4 addresses (``int(IPv4Address(text))``, any integer dtype).
``protocol`` and ``port`` are each one value for every flow or one per flow; a scalar
``port=None`` means "no port". Different lengths and bad elements are refused with
``InvalidPolicy``; no input gives an empty array. NumPy is an optional dependency: without it
the method raises ``MissingDependency`` saying what to install.

Hypothesis holds the batch to ``verdict()`` flow by flow, in every input form, on generated
worlds and after incremental changes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import fqdnpolicy.errors as errors
from fqdnpolicy.cluster import Cluster, Namespace
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.model import Protocol, ResourceSet
from tests.engine.strategies import (
    Answer,
    LearnAnswer,
    WorldSpec,
    changes,
    entity,
    pod,
    policy,
    rule,
    worlds,
)
from tests.engine.worlds_threads import Applier

_EXAMPLES = int(os.environ.get("FQDNPOLICY_DIFFERENTIAL_EXAMPLES", "150"))
GENERATED = settings(
    max_examples=max(1, _EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
INCREMENTAL = settings(GENERATED, max_examples=max(1, _EXAMPLES // 4))

# ----------------------------------------------------------------------------- an example

API = "198.51.100.1"  # api.example.com, learned from DNS
DB = "10.0.1.12"  # prod/db's address
OUTSIDE = "203.0.113.9"


def packed(address: str) -> int:
    """An IPv4 address as the integer ``verdict_array`` takes."""
    return int(ipaddress.IPv4Address(address))


@pytest.fixture
def engine() -> PolicyEngine:
    """web may reach api.example.com on 443 and the db on 5432; db may reach anything."""
    web = pod("default/web", "10.0.0.10", "fd00::a", labels={"app": "web"})
    db = pod("prod/db", DB, labels={"app": "db"})
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
            rule("Allow", protocol="UDP", destination=entity(ports=[53])),
        ],
    )
    world = Applier(
        ResourceSet((web_egress,)),
        Cluster((web, db), (Namespace("default"), Namespace("prod"))),
    )
    world.apply(LearnAnswer(Answer("api.example.com", (), (API, "2001:db8::1"))))
    return world.build_engine()


def test_each_element_is_whether_verdict_allows_that_flow(engine: PolicyEngine) -> None:
    allowed = engine.verdict_array(
        ["default/web", "default/web", "default/web", "default/web", "prod/db"],
        [API, DB, DB, OUTSIDE, OUTSIDE],
        "TCP",
        [443, 5432, 80, 443, 443],
    )
    assert isinstance(allowed, np.ndarray)
    assert allowed.dtype == np.bool_
    assert allowed.shape == (5,)
    assert allowed.tolist() == [True, True, False, False, True]


def test_a_large_batch_of_repeating_flows_judges_each_distinct_flow_once_and_right(
    engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real traffic repeats flows: a big batch is judged per distinct flow, and must give each
    # flow the verdict it would get alone.
    keys = engine.endpoint_keys()
    pairs = [(k, d) for k in range(len(keys)) for d in (API, DB, OUTSIDE, "10.0.0.10")]
    flows = [pairs[(i * 7) % len(pairs)] for i in range(20_000)]
    src = np.array([s for s, _ in flows], dtype=np.int64)
    dst = np.array([packed(d) for _, d in flows], dtype=np.uint32)
    judged: list[int] = []
    from fqdnpolicy.engine import batch

    original = batch._vectorised

    def counting(np_: Any, eng: Any, s: Any, *rest: Any) -> Any:
        judged.append(len(s))
        return original(np_, eng, s, *rest)

    monkeypatch.setattr(batch, "_vectorised", counting)
    got = engine.verdict_array(src, dst, "TCP", 5432)
    want = [engine.verdict(keys[s], d, "TCP", 5432).allowed for s, d in flows]
    assert got.tolist() == want
    assert judged == [len(pairs)]


def test_endpoint_keys_are_the_endpoints_keys_sorted(engine: PolicyEngine) -> None:
    assert engine.endpoint_keys() == ["default/web", "prod/db"]


def test_sources_by_index_and_destinations_packed(engine: PolicyEngine) -> None:
    keys = engine.endpoint_keys()
    src = np.array([keys.index("default/web")] * 3 + [keys.index("prod/db")])
    dst = np.array([packed(a) for a in (API, DB, OUTSIDE, OUTSIDE)], dtype=np.uint32)
    assert engine.verdict_array(src, dst, "TCP", 443).tolist() == [True, False, False, True]


def test_ipv6_destinations_as_text(engine: PolicyEngine) -> None:
    allowed = engine.verdict_array(["default/web"] * 2, ["2001:db8::1", "2001:db8::2"], 6, 443)
    assert allowed.tolist() == [True, False]


def test_protocol_and_port_per_flow(engine: PolicyEngine) -> None:
    allowed = engine.verdict_array(
        np.array(["default/web"] * 4),
        (OUTSIDE, OUTSIDE, DB, DB),
        ["UDP", "TCP", 6, 17],
        np.array([53, 53, 5432, 5432], dtype=np.uint16),
    )
    assert allowed.tolist() == [True, False, True, False]


def test_a_scalar_port_none_means_no_port(engine: PolicyEngine) -> None:
    # The db rule names a port, the domain rule does not: only the latter matches portless.
    allowed = engine.verdict_array(["default/web", "default/web"], [API, DB], "TCP", None)
    assert allowed.tolist() == [True, False]
    assert allowed.tolist() == [
        engine.verdict("default/web", dst, "TCP", None).allowed for dst in (API, DB)
    ]


@pytest.mark.parametrize(
    "dtype", [np.uint32, np.int32, np.int64, np.uint64, np.intp], ids=lambda t: t.__name__
)
def test_packed_destinations_of_any_integer_dtype(
    engine: PolicyEngine, dtype: type[np.integer[Any]]
) -> None:
    # 10.0.1.12 and 9.9.9.9 fit even an int32.
    dst = np.array([packed(DB), packed("9.9.9.9")], dtype=dtype)
    assert engine.verdict_array(["default/web"] * 2, dst, "TCP", 5432).tolist() == [True, False]


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64], ids=lambda t: t.__name__
)
def test_source_indices_of_any_integer_dtype(
    engine: PolicyEngine, dtype: type[np.integer[Any]]
) -> None:
    src = np.array([0, 1], dtype=dtype)  # default/web, prod/db
    assert engine.verdict_array(src, [OUTSIDE, OUTSIDE], "TCP", 443).tolist() == [False, True]


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ([], []),
        ((), ()),
        (np.array([], dtype=np.int64), np.array([], dtype=np.uint32)),
        (np.array([], dtype=str), []),
    ],
    ids=["lists", "tuples", "indices-and-packed", "str-array"],
)
def test_no_flows_give_an_empty_bool_array(engine: PolicyEngine, src: Any, dst: Any) -> None:
    allowed = engine.verdict_array(src, dst, "TCP", 443)
    assert allowed.dtype == np.bool_
    assert allowed.shape == (0,)


@pytest.mark.parametrize(
    ("src", "dst", "protocol", "port"),
    [
        (["default/web"] * 2, [API], "TCP", 443),
        (["default/web"], [API, API], "TCP", 443),
        (np.array([0, 0, 0]), np.array([packed(API)] * 2), "TCP", 443),
        (["default/web"] * 2, [API] * 2, ["TCP"], 443),
        (["default/web"] * 2, [API] * 2, "TCP", [443, 443, 443]),
        (["default/web"] * 2, [API] * 2, "TCP", np.array([443])),
        ([], [], ["TCP"], 443),
    ],
    ids=["src-longer", "dst-longer", "arrays", "protocols", "ports", "port-array", "empty"],
)
def test_lengths_that_differ_are_refused(
    engine: PolicyEngine, src: Any, dst: Any, protocol: Any, port: Any
) -> None:
    with pytest.raises(InvalidPolicy):
        engine.verdict_array(src, dst, protocol, port)


WEB2 = ["default/web", "default/web"]


@pytest.mark.parametrize(
    ("src", "dst", "protocol", "port"),
    [
        (["default/web", "default/nope"], [API, API], "TCP", 443),
        (np.array(["default/web", "nope/nope"]), [API, API], "TCP", 443),
        (np.array([0, 2]), [API, API], "TCP", 443),  # two endpoints: indices 0 and 1
        (np.array([0, -1]), [API, API], "TCP", 443),
        (WEB2, [API, "999.1.1.1"], "TCP", 443),
        (WEB2, [API, "1.2.3"], "TCP", 443),
        (WEB2, [API, "abc"], "TCP", 443),
        (WEB2, [API, ""], "TCP", 443),
        (WEB2, [API, "10.0.0.1/24"], "TCP", 443),
        (WEB2, [API, "default/web"], "TCP", 443),  # an endpoint key is no address
        (WEB2, np.array([packed(API), 2**32], dtype=np.int64), "TCP", 443),
        (WEB2, np.array([packed(API), -1], dtype=np.int64), "TCP", 443),
        (WEB2, [API, API], "TCP", 70000),
        (WEB2, [API, API], "TCP", -1),
        (WEB2, [API, API], "TCP", [443, 65536]),
        (WEB2, [API, API], "TCP", np.array([443, -1])),
        (WEB2, [API, API], "TCP", np.array([443, 70000], dtype=np.int64)),
        (WEB2, [API, API], "FOO", 443),
        (WEB2, [API, API], 256, 443),
        (WEB2, [API, API], ["TCP", "FOO"], 443),
        (WEB2, [API, API], [6, 0], 443),
        (WEB2, [API, API], np.array([6, -6]), 443),
    ],
    ids=[
        "unknown-key",
        "unknown-key-array",
        "index-past-end",
        "negative-index",
        "octet-out-of-range",
        "three-octets",
        "not-an-address",
        "empty-address",
        "cidr",
        "endpoint-key-as-destination",
        "packed-too-big",
        "packed-negative",
        "port-too-big",
        "port-negative",
        "port-element-too-big",
        "port-element-negative",
        "port-element-too-big-int64",
        "protocol-name",
        "protocol-number",
        "protocol-element-name",
        "protocol-element-zero",
        "protocol-element-negative",
    ],
)
def test_a_bad_element_is_refused(
    engine: PolicyEngine, src: Any, dst: Any, protocol: Any, port: Any
) -> None:
    with pytest.raises(InvalidPolicy):
        engine.verdict_array(src, dst, protocol, port)


def test_without_numpy_it_says_what_to_install(
    engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert issubclass(errors.MissingDependency, ImportError)
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now fails
    with pytest.raises(errors.MissingDependency, match=re.escape("pip install 'fqdnpolicy[fast]'")):
        engine.verdict_array(["default/web"], [API], "TCP", 443)
    # Only the batch needs NumPy.
    assert engine.verdict("default/web", API, "TCP", 443).allowed


# ----------------------------------------------------------------------------- generated

BATCH_PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP", "ICMP", 6, 17)
FIXED_PORTS = (0, 53, 80, 443, 8080, 9090, 65535)
DOC_V6 = int(ipaddress.IPv6Address("2001:db8::"))


def documentation_addresses() -> st.SearchStrategy[str]:
    """Addresses in 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32."""
    octet = st.integers(0, 255)
    return st.one_of(
        octet.map(lambda i: f"198.51.100.{i}"),
        octet.map(lambda i: f"203.0.113.{i}"),
        st.integers(0, 2**96 - 1).map(lambda i: str(ipaddress.IPv6Address(DOC_V6 + i))),
    )


def ports() -> st.SearchStrategy[int]:
    return st.sampled_from(FIXED_PORTS) | st.integers(0, 65535)


@attrs.frozen
class Batch:
    """Egress flows as parallel lists."""

    src: list[str]
    dst: list[str]
    protocols: list[Protocol]
    ports: list[int]

    def __len__(self) -> int:
        return len(self.src)


@st.composite
def batches(draw: st.DrawFn, keys: Sequence[str], addresses: Sequence[str]) -> Batch:
    """Up to 20 egress flows from ``keys`` to ``addresses`` or documentation addresses."""
    n = draw(st.integers(0, 20))
    pool = documentation_addresses()
    if addresses:
        pool = st.sampled_from(sorted(addresses)) | pool
    return Batch(
        draw(st.lists(st.sampled_from(keys), min_size=n, max_size=n)),
        draw(st.lists(pool, min_size=n, max_size=n)),
        draw(st.lists(st.sampled_from(BATCH_PROTOCOLS), min_size=n, max_size=n)),
        draw(st.lists(ports(), min_size=n, max_size=n)),
    )


def expected(
    engine: PolicyEngine, batch: Batch, protocols: Sequence[Protocol], ports: Sequence[int | None]
) -> list[bool] | None:
    """``verdict(...).allowed`` flow by flow; None when ``verdict`` refuses any of them."""
    try:
        return [
            engine.verdict(s, d, p, q).allowed
            for s, d, p, q in zip(batch.src, batch.dst, protocols, ports, strict=True)
        ]
    except InvalidPolicy:
        return None


def check(want: list[bool] | None, call: Any, *args: Any) -> None:
    """``call(*args)`` gives ``want`` as a bool array (or refuses, when ``want`` is None)."""
    if want is None:
        with pytest.raises(InvalidPolicy):
            call(*args)
        return
    got: npt.NDArray[np.bool_] = call(*args)
    assert got.dtype == np.bool_
    assert got.shape == (len(want),)
    assert got.tolist() == want


def check_every_form(engine: PolicyEngine, batch: Batch, data: st.DataObject) -> None:
    """verdict_array agrees with verdict in each way a batch can be given."""
    note(f"batch: {batch!r}")
    n = len(batch)
    per_flow = expected(engine, batch, batch.protocols, batch.ports)
    # Keys and text, protocol and port per flow.
    check(per_flow, engine.verdict_array, batch.src, batch.dst, batch.protocols, batch.ports)
    port_dtype = data.draw(st.sampled_from((np.uint16, np.int32, np.int64)))
    check(
        per_flow,
        engine.verdict_array,
        np.array(batch.src, dtype=str),
        tuple(batch.dst),
        tuple(batch.protocols),
        np.array(batch.ports, dtype=port_dtype),
    )
    # Indices and packed IPv4.
    if all(":" not in d for d in batch.dst):
        keys = engine.endpoint_keys()
        index_dtype = data.draw(st.sampled_from((np.int16, np.int32, np.int64, np.uint32)))
        packed_dtype = data.draw(st.sampled_from((np.uint32, np.int64, np.uint64)))
        src = np.array([keys.index(s) for s in batch.src], dtype=index_dtype)
        dst = np.array([packed(d) for d in batch.dst], dtype=packed_dtype)
        protocols: Any = batch.protocols
        if all(isinstance(p, int) for p in protocols):
            protocols = np.array(protocols, dtype=np.uint8)
        check(per_flow, engine.verdict_array, src, dst, protocols, np.array(batch.ports))
    # One protocol and one port for every flow (None: no port).
    protocol = data.draw(st.sampled_from(BATCH_PROTOCOLS))
    port = data.draw(st.none() | ports())
    scalar = expected(engine, batch, [protocol] * n, [port] * n)
    check(scalar, engine.verdict_array, batch.src, batch.dst, protocol, port)


def addresses_of(world: Applier) -> set[str]:
    """Endpoint addresses and every address the DNS cache leads to."""
    found = {ip for ep in world.cluster.endpoints for ip in ep.ips}
    return found | {ip for name in world.dns.names() for ip in world.dns.ips(name)}


def applier_for(spec: WorldSpec) -> tuple[Applier, PolicyEngine]:
    """The world with an engine; half the answers arrive before it exists, half after."""
    world = Applier(spec.resources, spec.cluster)
    half = len(spec.answers) // 2
    for learned in spec.answers[:half]:
        world.apply(LearnAnswer(learned))
    engine = world.build_engine()
    for learned in spec.answers[half:]:
        world.apply(LearnAnswer(learned))
    engine.flush()
    return world, engine


@GENERATED
@given(worlds(max_flows=1), st.data())
def test_verdict_array_agrees_with_verdict_on_generated_worlds(
    spec: WorldSpec, data: st.DataObject
) -> None:
    world, engine = applier_for(spec)
    assert engine.endpoint_keys() == world.endpoint_keys()
    batch = data.draw(batches(world.endpoint_keys(), sorted(addresses_of(world))))
    check_every_form(engine, batch, data)


@INCREMENTAL
@given(worlds(max_flows=1), st.data())
def test_verdict_array_agrees_with_verdict_after_incremental_changes(
    spec: WorldSpec, data: st.DataObject
) -> None:
    world, engine = applier_for(spec)
    for change in data.draw(changes(spec, data.draw(st.integers(1, 6)))):
        note(f"change: {change!r}")
        world.apply(change)
        engine.flush()
        keys = world.endpoint_keys()
        assert engine.endpoint_keys() == keys
        if keys:
            batch = data.draw(batches(keys, sorted(addresses_of(world))))
            check_every_form(engine, batch, data)
