"""Dump and load are inverse: valid ResourceSets survive dump -> load; dump is a fixpoint."""

from __future__ import annotations

import ipaddress
import re
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.domains import parse_domain_pattern
from fqdnpolicy.loader import dump, load, loads
from fqdnpolicy.model import (
    EntityRule,
    ICMPFields,
    NamedPort,
    NetworkSet,
    NetworkSetSpec,
    ObjectMeta,
    Policy,
    PolicySpec,
    PortRange,
    ResourceSet,
    Rule,
    RuleMetadata,
    ServiceAccountMatch,
    Tier,
    TierSpec,
)
from fqdnpolicy.selector import parse_selector

SELECTORS = [
    'app == "web"',
    "has(tier)",
    "role in {'db', 'cache'}",
    "!has(x) && b != 'c'",
    "k starts with 'p' || k ends with \"q\"",
    "all()",
]
DOMAINS = ["api.github.com", "*.example.com", "*.s3.*.amazonaws.com", "a-b.c_d.example.org"]

names = st.from_regex(r"[a-z][a-z0-9-]{0,6}[a-z0-9]", fullmatch=True)
label_maps = st.dictionaries(
    st.from_regex(r"(example\.com/)?[a-z][a-z0-9]{0,5}", fullmatch=True),
    st.from_regex(r"([a-z0-9][a-z0-9.-]{0,6}[a-z0-9])?", fullmatch=True),
    max_size=3,
)
selectors = st.sampled_from(SELECTORS).map(parse_selector)
domains = st.lists(st.sampled_from(DOMAINS).map(parse_domain_pattern), min_size=1, max_size=3)
v4_nets = st.builds(
    lambda addr, prefix: ipaddress.ip_network(f"{addr}/{prefix}", strict=False),
    st.ip_addresses(v=4),
    st.integers(1, 32),
)
v6_nets = st.builds(
    lambda addr, prefix: ipaddress.ip_network(f"{addr}/{prefix}", strict=False),
    st.ip_addresses(v=6),
    st.integers(1, 128),
)
ports = st.one_of(
    st.builds(
        lambda a, b: PortRange(min(a, b), max(a, b)), st.integers(1, 65535), st.integers(1, 65535)
    ),
    st.sampled_from(["http", "dns", "metrics-1"]).map(NamedPort),
)
orders = st.one_of(
    st.none(), st.integers(-1000, 10**6).map(float), st.floats(-1e9, 1e9, allow_nan=False)
)


@st.composite
def entity_rules(
    draw: st.DrawFn, *, with_ports: bool, nets: st.SearchStrategy[object]
) -> EntityRule:
    return EntityRule(
        nets=tuple(draw(st.lists(nets, max_size=2))),  # type: ignore[arg-type]
        not_nets=tuple(draw(st.lists(nets, max_size=2))),  # type: ignore[arg-type]
        selector=draw(st.none() | selectors),
        not_selector=draw(st.none() | selectors),
        namespace_selector=draw(st.none() | selectors | st.just(parse_selector("global()"))),
        ports=tuple(draw(st.lists(ports, max_size=3))) if with_ports else (),
        not_ports=tuple(draw(st.lists(ports, max_size=2))) if with_ports else (),
        service_accounts=draw(
            st.none()
            | st.builds(
                ServiceAccountMatch,
                names=st.lists(names, max_size=2).map(tuple),
                selector=st.none() | selectors,
            )
        ),
    )


@st.composite
def rules(draw: st.DrawFn, *, egress: bool) -> Rule:
    protocol = draw(
        st.sampled_from([None, "TCP", "UDP", "SCTP", "ICMP", "ICMPv6", "UDPLite", 6, 47])
    )
    with_ports = protocol in ("TCP", "UDP", "SCTP", 6)
    v6 = protocol == "ICMPv6" or (protocol != "ICMP" and draw(st.booleans()))
    nets = v6_nets if v6 else v4_nets
    ip_version = draw(st.sampled_from([None, 6 if v6 else 4]))
    icmp = None
    if protocol in ("ICMP", "ICMPv6"):
        icmp = draw(
            st.none()
            | st.builds(ICMPFields, st.integers(0, 254), st.none() | st.integers(0, 255))
            | st.builds(ICMPFields)
        )
    destination = draw(entity_rules(with_ports=with_ports, nets=nets))
    action = draw(st.sampled_from(["Allow", "Deny", "Log", "Pass"]))
    if egress and draw(st.booleans()):
        action = "Allow"
        destination = EntityRule(
            not_nets=destination.not_nets,
            ports=destination.ports,
            domains=tuple(draw(domains)),
        )
    return Rule(
        action=action,  # type: ignore[arg-type]
        protocol=protocol,
        not_protocol=draw(st.sampled_from([None, "UDPLite", 99])),
        ip_version=ip_version,
        icmp=icmp,
        source=draw(entity_rules(with_ports=with_ports, nets=nets)),
        destination=destination,
        metadata=draw(st.none() | st.builds(RuleMetadata, annotations=label_maps)),
    )


@st.composite
def policies(draw: st.DrawFn, name: str) -> Policy:
    is_global = draw(st.booleans())
    tier = draw(st.sampled_from(["default", "security"]))
    spec = PolicySpec(
        order=draw(orders),
        tier=tier,
        selector=draw(selectors),
        namespace_selector=draw(st.none() | selectors) if is_global else None,
        service_account_selector=draw(st.none() | selectors),
        types=tuple(
            draw(
                st.sampled_from(
                    [("Ingress",), ("Egress",), ("Ingress", "Egress"), ("Egress", "Ingress")]
                )
            )
        ),
        ingress=tuple(draw(st.lists(rules(egress=False), max_size=2))),
        egress=tuple(draw(st.lists(rules(egress=True), max_size=3))),
    )
    meta = ObjectMeta(
        name=draw(st.sampled_from([name, f"{tier}.{name}"])),
        namespace=None if is_global else draw(st.sampled_from(["default", "prod"])),
        labels=draw(label_maps),
        annotations=draw(label_maps),
    )
    return Policy("GlobalNetworkPolicy" if is_global else "NetworkPolicy", meta, spec)


@st.composite
def network_sets(draw: st.DrawFn, name: str) -> NetworkSet:
    is_global = draw(st.booleans())
    return NetworkSet(
        "GlobalNetworkSet" if is_global else "NetworkSet",
        ObjectMeta(name, None if is_global else "default", labels=draw(label_maps)),
        NetworkSetSpec(
            nets=tuple(draw(st.lists(v4_nets | v6_nets, max_size=3))),
            allowed_egress_domains=tuple(
                draw(
                    st.lists(st.sampled_from(DOMAINS), max_size=3).map(
                        lambda ds: [parse_domain_pattern(d) for d in ds]
                    )
                )
            ),
        ),
    )


@st.composite
def resource_sets(draw: st.DrawFn) -> ResourceSet:
    # Distinct names per kind keep the set free of duplicates (which the loader rejects).
    policy_names = draw(st.lists(names, unique=True, max_size=4))
    set_names = draw(st.lists(names, unique=True, max_size=3))
    tier_names = draw(st.lists(names.filter(lambda n: n != "default"), unique=True, max_size=2))
    return ResourceSet(
        policies=tuple(draw(policies(n)) for n in policy_names),
        network_sets=tuple(draw(network_sets(n)) for n in set_names),
        tiers=tuple(
            Tier(
                ObjectMeta(n),
                TierSpec(
                    order=draw(orders), default_action=draw(st.sampled_from(["Deny", "Pass"]))
                ),
            )
            for n in tier_names
        ),
    )


@settings(max_examples=60, deadline=None)
@given(resource_sets())
def test_dump_then_load_gives_back_an_equal_resource_set(rs: ResourceSet) -> None:
    text = dump(rs)
    assert loads(text) == rs
    assert loads(dump(rs, format="json"), filename="rs.json") == rs


@settings(max_examples=60, deadline=None)
@given(resource_sets())
def test_dump_is_a_fixpoint(rs: ResourceSet) -> None:
    once = dump(rs)
    assert dump(loads(once)) == once
    as_json = dump(rs, format="json")
    assert dump(loads(as_json), format="json") == as_json


def test_dump_canonicalises_what_it_loaded() -> None:
    text = textwrap.dedent("""\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata:
          name: g
        spec:
          selector: "role in {'b','a','b'}"
          order: 10
          tier: default
          egress:
          - action: Allow
            protocol: TCP
            destination:
              nets: [10.1.2.3/8]
              ports: ["80:80", 443]
        """)
    out = dump(loads(text))
    assert out == textwrap.dedent("""\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata:
          name: g
        spec:
          order: 10
          selector: role in {"a", "b"}
          types:
          - Egress
          egress:
          - action: Allow
            protocol: TCP
            destination:
              nets:
              - 10.0.0.0/8
              ports:
              - 80
              - 443
        """)


def test_seed_survives_dump_and_load() -> None:
    import importlib.resources

    data = importlib.resources.files("fqdnpolicy") / "data" / "seed"
    with importlib.resources.as_file(data) as seed:
        rs = load(seed)
    assert loads(dump(rs)) == rs


# Plain YAML scalars that are not strings: numbers in every spelling (1e5, 0x1f, 1_000, 1:30,
# .5), booleans, nulls and dates. Strings built from these characters are written by dump and
# must come back as the same strings.
_AMBIGUOUS = st.text("0123456789eExXoObB.+-_:ynYNtTfFaAlLsSuUrR~", min_size=1, max_size=8)
_LABEL_TEXT = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def _lower_name(text: str) -> str:
    name = "".join(c for c in text.lower() if c.isalnum() or c == "-").strip("-")
    return name or "0"


@st.composite
def ambiguous_resource_sets(draw: st.DrawFn) -> ResourceSet:
    word = _AMBIGUOUS.map(_lower_name)
    name = draw(word)
    namespace = draw(word)
    label_key = draw(_AMBIGUOUS.filter(_LABEL_TEXT.fullmatch))
    label_value = draw(_AMBIGUOUS.filter(_LABEL_TEXT.fullmatch))
    port = draw(word.filter(lambda p: any(c.isalpha() for c in p) and "--" not in p))
    domain = parse_domain_pattern(f"{draw(word)}.{draw(word)}.example")
    note = draw(_AMBIGUOUS | st.text(max_size=8))
    rule = Rule(
        action="Allow",
        protocol="TCP",
        destination=EntityRule(ports=(NamedPort(port[:15].strip("-") or "a"),), domains=(domain,)),
        metadata=RuleMetadata(annotations={label_key: note}),
    )
    meta = ObjectMeta(
        name=name, namespace=namespace, labels={label_key: label_value}, annotations={"a": note}
    )
    policy = Policy("NetworkPolicy", meta, PolicySpec(types=("Egress",), egress=(rule,)))
    nset = NetworkSet("NetworkSet", meta, NetworkSetSpec(allowed_egress_domains=(domain,)))
    return ResourceSet(policies=(policy,), network_sets=(nset,))


@settings(max_examples=300, deadline=None)
@given(ambiguous_resource_sets())
def test_strings_that_look_like_numbers_or_dates_survive_dump_and_load(rs: ResourceSet) -> None:
    assert loads(dump(rs)) == rs
    assert loads(dump(rs, format="json")) == rs


def test_a_string_in_exponent_notation_is_quoted_by_dump() -> None:
    rs = loads(
        textwrap.dedent("""            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkSet
            metadata:
              name: s
              annotations: {a: "0e0", b: "1e5"}
            """)
    )
    assert loads(dump(rs)) == rs
    assert dict(loads(dump(rs)).network_sets[0].metadata.annotations) == {"a": "0e0", "b": "1e5"}
